"""Tiny models for the attack tests, built once per test session (a few seconds on CPU).

A byte-level BPE tokenizer trained on task texts, a one-layer GPT-NeoX classifier fine-tuned
briefly on Spam, and a tiny causal LM trained briefly on the same texts (the generative-mode
victim and BEAST's proposal). Spam, not PasswordMatch: a one-layer model learns Spam's word cues
in 150 steps (about 98% validation accuracy, confident), while in that budget it cannot learn to
compare passwords and stays a constant predictor that no attack input can move.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from transformers import (
    GPTNeoXForCausalLM,
    GPTNeoXForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
)

from robnb.attacks.prompts import AttackPrompt
from robnb.models.ladder import neox_config
from robnb.models.tokenizer import train_bpe_tokenizer
from robnb.tasks import OFFLINE_TASKS, load_task

VOCAB = 512


@dataclass
class Tiny:
    tokenizer: object
    classifier: GPTNeoXForSequenceClassification
    lm: GPTNeoXForCausalLM
    root: Path


def _batches(tokenizer, texts: list[str], labels: list[int] | None, batch: int, steps: int,
             seed: int):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(texts), (batch,), generator=g).tolist()
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True)
        y = None if labels is None else torch.tensor([labels[i] for i in idx])
        yield enc, y


def _train(model: torch.nn.Module, batches, lm: bool) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for enc, y in batches:
        if lm:
            labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
            loss = model(**enc, labels=labels).loss
        else:
            loss = model(**enc, labels=y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@lru_cache(maxsize=1)
def tiny() -> Tiny:
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = Path(tempfile.mkdtemp(prefix="robnb-attack-tests-"))
        texts = [e.text + e.label_texts[e.label] for t in OFFLINE_TASKS
                 for e in load_task(t, "train", n=150, seed=0)]
        tok = train_bpe_tokenizer(texts, VOCAB, root / "tokenizer")
        cfg = neox_config("neox-xs", len(tok), eos_id=tok.eos_token_id)
        cfg.num_labels = 2
        clf = GPTNeoXForSequenceClassification(cfg)
        train = load_task("spam", "train", n=3000, seed=1)
        _train(clf, _batches(tok, [e.text for e in train], [e.label for e in train], 32, 150, 0),
               lm=False)
        lm = GPTNeoXForCausalLM(neox_config("neox-xs", len(tok), eos_id=tok.eos_token_id))
        _train(lm, _batches(tok, texts, None, 16, 60, 1), lm=True)
        clf.save_pretrained(root / "classifier")
        lm.save_pretrained(root / "lm")
        return Tiny(tok, clf, lm, root)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads and the machine is shared: run single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def llama_target_prompts() -> list[AttackPrompt]:
    """Causal-LM targets of 2 to 6 tokens after prefixes of different lengths (for tiny_llama)."""
    g = torch.Generator().manual_seed(1)
    out = []
    for n_before, n_tail, n_target in ((5, 2, 6), (3, 1, 2), (8, 3, 4), (4, 2, 6), (6, 1, 3)):
        before = torch.randint(1, 97, (n_before,), generator=g).tolist()
        tail = torch.randint(1, 97, (n_tail,), generator=g).tolist()
        target = torch.randint(1, 97, (n_target,), generator=g).tolist()
        first = n_tail - 1
        out.append(AttackPrompt(tuple(before), tuple(tail + target[:-1]),
                                tuple(range(first, first + n_target)), tuple(target)))
    return out
