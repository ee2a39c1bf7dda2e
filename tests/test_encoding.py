"""Training, evaluation and attacks share one tokenisation, and the shared-prefix forward is exact."""

import pytest
import torch

from robnb.models.prefix import classify, common_prefix_length
from robnb.tasks import load_task
from robnb.tasks.encoding import encode_example, encode_slot, pad_batch


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from robnb.models.tokenizer import train_bpe_tokenizer

    texts = [e.text for t in ("password_match", "spam") for e in load_task(t, "train", 200)]
    return train_bpe_tokenizer(texts, 400, tmp_path_factory.mktemp("tok"))


@pytest.mark.parametrize("task", ["password_match", "word_length", "spam", "sentiment"])
@pytest.mark.parametrize("position", [0.0, 1.0])
def test_clean_input_is_attacked_input_without_attack(tok, task, position):
    """At the slot's ends an attack never re-tokenises its neighbours."""
    for e in load_task(task, "validation", 20):
        before, after = encode_slot(tok, e, position)
        assert before + after == encode_example(tok, e)
        assert tok.decode(before + after) == e.text


def test_pad_batch_right_pads():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_shared_prefix_forward_matches_full_forward(tok):
    from transformers import GPTNeoXForSequenceClassification

    from robnb.models.ladder import neox_config

    torch.manual_seed(0)
    model = GPTNeoXForSequenceClassification(neox_config("neox-xs", len(tok), eos_id=tok.eos_token_id))
    model.config.pad_token_id = tok.pad_token_id
    ex = load_task("spam", "train", 8)
    ids, mask = pad_batch([encode_example(tok, e) for e in ex], tok.pad_token_id)
    y = torch.tensor([e.label for e in ex])
    assert common_prefix_length(ids, mask) > 8
    full = model(input_ids=ids, attention_mask=mask, labels=y)
    full.loss.backward()
    g_full = model.gpt_neox.embed_in.weight.grad.clone()
    model.zero_grad()
    shared, executed = classify(model, ids, mask, y)
    shared.loss.backward()
    assert torch.allclose(full.logits, shared.logits, atol=1e-5)
    assert torch.allclose(g_full, model.gpt_neox.embed_in.weight.grad, atol=1e-6)
    assert executed < int(mask.sum())
