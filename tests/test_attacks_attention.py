"""Packed attention computes what SDPA computes, and the scorer built on it (grouped-query heads,
rows of different lengths bucketed, reads trimmed per bucket) reproduces a plain forward pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from attack_fixtures import llama_target_prompts, one_thread, tiny_llama  # noqa: F401 (one_thread: autouse)

from robnb.attacks.attention import packed_attention, packed_attention_forward
from robnb.attacks.prompts import AttackPrompt
from robnb.attacks.scoring import Scorer, length_buckets


class _Module(torch.nn.Module):
    training = False


@pytest.mark.parametrize("mask_kind", ["bool", "float", "none"])
def test_packed_attention_equals_sdpa_with_grouped_heads(mask_kind):
    g = torch.Generator().manual_seed(0)
    batch, heads, kv_heads, q_len, k_len, dim = 3, 6, 2, 5, 9, 8
    q = torch.randn(batch, heads, q_len, dim, generator=g)
    k = torch.randn(batch, kv_heads, k_len, dim, generator=g)
    v = torch.randn(batch, kv_heads, k_len, dim, generator=g)
    causal = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len)
    allowed = causal.expand(batch, 1, q_len, k_len).clone()
    allowed[1, :, :, 2:4] = False  # padded keys of one row
    mask = {"bool": allowed, "float": torch.zeros(allowed.shape).masked_fill(~allowed, -1e9),
            "none": None}[mask_kind]
    want_mask = causal if mask_kind == "none" else allowed
    want = F.scaled_dot_product_attention(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1),
                                          attn_mask=want_mask, scale=0.3)
    got, _ = packed_attention_forward(_Module(), q, k, v, mask, scaling=0.3)
    assert got.shape == (batch, q_len, heads, dim)
    assert torch.allclose(got.transpose(1, 2), want, atol=1e-5)


def test_length_buckets_partition_rows_and_bound_padding():
    lengths = torch.tensor([12, 30, 13, 12, 15, 31, 14, 12])
    groups = length_buckets(lengths, slack=0.1)
    assert sorted(torch.cat(groups).tolist()) == list(range(len(lengths)))
    for grp in groups:
        n = lengths[grp]
        assert len(grp) * int(n.max()) <= 1.1 * int(n.sum())
    assert len(groups) >= 2  # 12..15 and 30..31 cannot share a padded width
    assert length_buckets(torch.tensor([7, 7, 7]))[0].tolist() == [0, 1, 2]


def _plain_loss(model, p: AttackPrompt, attack: list[int]) -> float:
    ids = torch.tensor([list(p.before) + attack + list(p.after)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    base = len(p.before) + len(attack)
    rows = torch.tensor([base + r for r in p.read])
    return float(F.cross_entropy(logits[rows], torch.tensor(p.target)))


def test_scorer_on_grouped_query_llama_equals_plain_forward():
    model = tiny_llama()
    prompts = llama_target_prompts()
    n = len(prompts)
    attack = torch.randint(1, 97, (n, 4), generator=torch.Generator().manual_seed(2))
    scorer = Scorer(model, prompts, "target")
    _, now, kv = scorer.gradient(attack)
    # several candidates per prompt, swapping different positions, rows in mixed order
    rows = torch.tensor([3, 0, 4, 1, 2, 0, 3, 1, 4, 2])
    pos = torch.tensor([0, 1, 2, 3, 1, 3, 2, 0, 0, 2])
    cand = attack[rows].clone()
    cand[torch.arange(len(rows)), pos] = torch.arange(50, 50 + len(rows))
    swapped = scorer.swap_losses(rows, cand, pos, kv)
    plain = scorer.losses(rows, cand)
    assert model.config._attn_implementation == "sdpa"  # restored after every call
    for i in range(n):
        assert abs(float(now.loss[i]) - _plain_loss(model, prompts[i], attack[i].tolist())) < 1e-5
    for j, r in enumerate(rows.tolist()):
        want = _plain_loss(model, prompts[r], cand[j].tolist())
        assert abs(float(swapped.loss[j]) - want) < 1e-5
        assert abs(float(plain.loss[j]) - want) < 1e-5


def test_packed_attention_leaves_other_implementations_alone():
    model = tiny_llama()
    model.config._attn_implementation = "eager"
    with packed_attention(model):
        assert model.config._attn_implementation == "robnb_packed"
    assert model.config._attn_implementation == "eager"
    model.config._attn_implementation = "flex_attention"
    with packed_attention(model):
        assert model.config._attn_implementation == "flex_attention"
