"""The scoring fast paths compute what HF computes: the Llama body (fused RMSNorm, in-place rotary
and residuals) against HF's own forward, and the vocabulary-blocked head against full logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from attack_fixtures import one_thread, tiny_llama  # noqa: F401 (one_thread: autouse)
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from robnb.attacks import llama_body
from robnb.attacks.blocked_head import blocked_token_scores
from robnb.attacks.model_io import ModelParts, cache_to_kv
from robnb.attacks.scoring import token_scores


def _scaled_llama() -> LlamaForCausalLM:
    """Llama-3-style rotary scaling, attention biases and 3 layers: other code paths of HF."""
    torch.manual_seed(2)
    cfg = LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=40, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=4, attention_bias=True,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0,
                                    "original_max_position_embeddings": 16},
                      max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("build", [tiny_llama, _scaled_llama])
def test_llama_body_equals_hf_with_padding_past_and_positions(build):
    model = build()
    body = model.model
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    past_ids = torch.randint(1, vocab, (3, 7), generator=g)
    past_mask = torch.ones(3, 7, dtype=torch.long)
    past_mask[1, 5:] = 0  # a right-padded prefix, as the scorer caches it
    new_ids = torch.randint(1, vocab, (3, 4), generator=g)
    mask = torch.cat([past_mask, torch.ones(3, 4, dtype=torch.long)], 1)
    positions = past_mask.sum(1, keepdim=True) + torch.arange(4)
    with torch.no_grad():
        cache = DynamicCache()
        body(input_ids=past_ids, past_key_values=cache, use_cache=True)
        past = [(k.clone(), v.clone()) for k, v in cache_to_kv(cache)]
        want = body(input_ids=new_ids, attention_mask=mask, position_ids=positions,
                    past_key_values=cache, use_cache=True)
        got, kv = llama_body.llama_hidden(body, input_ids=new_ids, attention_mask=mask,
                                          position_ids=positions, past=past, want_cache=True)
    real = mask[:, -4:].bool()
    assert torch.allclose(got[real], want.last_hidden_state[real], atol=1e-5)
    for (k, v), (hk, hv) in zip(kv, cache_to_kv(cache)):
        assert torch.allclose(k, hk, atol=1e-5) and torch.allclose(v, hv, atol=1e-5)
    assert torch.equal(past[0][0], cache_to_kv(cache)[0][0][:, :, :7])  # the given past is not changed


def test_llama_body_from_embeddings_without_past_equals_hf():
    model = tiny_llama()
    ids = torch.randint(1, 97, (2, 9), generator=torch.Generator().manual_seed(3))
    embeds = model.model.embed_tokens(ids).detach()
    before = embeds.clone()
    with torch.no_grad():
        want = model.model(inputs_embeds=embeds).last_hidden_state
        got, kv = llama_body.llama_hidden(model.model, inputs_embeds=embeds)
    assert kv is None
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.equal(embeds, before)  # residuals are added in place, but not into the input


def test_model_parts_use_the_fast_body_only_without_autograd(monkeypatch):
    model = tiny_llama()
    parts = ModelParts(model, "target")
    calls = []
    original = llama_body.llama_hidden
    monkeypatch.setattr(llama_body, "llama_hidden", lambda *a, **k: calls.append(1) or original(*a, **k))
    ids = torch.randint(1, 97, (2, 5), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        parts.hidden(input_ids=ids)
    assert calls == [1]
    embeds = model.model.embed_tokens(ids).detach().requires_grad_(True)
    hidden, _ = parts.hidden(inputs_embeds=embeds)
    hidden.sum().backward()
    assert calls == [1] and embeds.grad is not None  # the gradient pass runs HF's forward


def test_fast_body_declines_other_bodies():
    model = tiny_llama()
    assert llama_body.supports(model.model)
    model.config.hidden_act = "gelu"
    assert not llama_body.supports(model.model)
    model.config.hidden_act = "silu"
    model.config._attn_implementation = "flex_attention"
    assert not llama_body.supports(model.model)


def _ties(vocab: int, dim: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weights with duplicated rows, so some rows' maxima tie within a block and across blocks."""
    g = torch.Generator().manual_seed(5)
    weight = torch.randn(vocab, dim, generator=g)
    weight[9] = weight[2]     # in different blocks of 4 and of 8
    weight[3] = weight[1]     # in one block
    weight[30] = weight[29]   # in the last, short block of 4
    hidden = torch.randn(40, dim, generator=g)
    hidden[:10] = 4 * weight[2]   # the max is at 2 and 9 (a tie across blocks)
    hidden[10:20] = 4 * weight[1]  # the max is at 1 and 3 (a tie within a block)
    hidden[20:25] = 4 * weight[29]
    return weight.to(dtype), hidden.to(dtype), g


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [False, True])
def test_blocked_head_equals_full_logits_including_ties(dtype, with_bias):
    vocab, dim = 31, 16
    weight, hidden, g = _ties(vocab, dim, dtype)
    bias = torch.randn(vocab, generator=g).to(dtype) if with_bias else None
    if bias is not None:
        bias[9], bias[3], bias[30] = bias[2], bias[1], bias[29]
    logits = F.linear(hidden, weight, bias)
    target = torch.randint(0, vocab, (40,), generator=g)
    target[:5], target[5:10] = 2, 9          # argmax is 2: hit, then a tie lost across blocks
    target[10:15], target[15:20] = 1, 3      # argmax is 1: hit, then a tie lost within a block
    target[20:25] = 30                       # tie lost within the last (short) block
    target[25:30] = logits[25:30].argmax(-1)  # ordinary hits
    want_ce, want_hit = token_scores(logits.unsqueeze(1), target.unsqueeze(1))
    for block, rows in ((4, 7), (8, 40), (64, 3)):
        ce, hit = blocked_token_scores(hidden, weight, bias, target, block=block, rows=rows)
        assert torch.equal(hit, want_hit.squeeze(1)), (block, rows)
        assert torch.allclose(ce, want_ce.squeeze(1), atol=1e-5 if dtype == torch.float32 else 1e-3)
    assert want_hit[:5].all() and not want_hit[5:10].any() and want_hit[10:15].all()
    assert not want_hit[15:25].any() and want_hit[25:30].all()
