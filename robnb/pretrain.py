"""Pretraining of the offline GPT-NeoX ladder: one tokenizer, one data order, every size.

Each model is cached by content (corpus sha256, tokenizer, shape, settings, this file's code),
so it is trained once and reused; a partial or corrupt cache is detected and rebuilt.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from robnb.checkpoints import cached
from robnb.corpus import load_corpus, split_documents
from robnb.flops import pretrain_flops
from robnb.models.counting import lm_classifier_params, non_embedding_params
from robnb.models.ladder import LADDER, neox_config
from robnb.models.tokenizer import load_tokenizer, train_bpe_tokenizer
from robnb.params import PretrainParams
from robnb.results.provenance import stable_hash

CODE_VERSION = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


@dataclass(frozen=True)
class PretrainedModel:
    size: str
    path: Path
    meta: dict
    reused: bool


def tokenizer_key(p: PretrainParams, corpus_sha: str) -> str:
    return stable_hash({"corpus": corpus_sha, "vocab": p.vocab_size, "kind": "bytebpe-v1"})


def get_tokenizer(p: PretrainParams, cache_root: Path, log: Callable[[str], None] = print):
    corpus = load_corpus(p.corpus)
    key = tokenizer_key(p, corpus.sha256)

    def build(tmp: Path) -> dict:
        train_docs, _ = split_documents(corpus)
        train_bpe_tokenizer(train_docs, p.vocab_size, tmp)
        return {"key": key, "corpus_sha256": corpus.sha256, "vocab_size": p.vocab_size}

    folder, meta, _ = cached(Path(cache_root) / "tokenizers" / key, build, {"key": key}, log)
    return load_tokenizer(folder), folder, meta


def token_blocks(docs: list[str], tokenizer, seq_len: int) -> torch.Tensor:
    """Documents joined with EOS and cut into equal blocks (the remainder is dropped)."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for enc in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(eos)
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def batch_order(n_blocks: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """Block indices per step: identical for every size (same seed), reshuffled each epoch."""
    rng = np.random.default_rng(seed)
    need = steps * batch_size
    order = np.concatenate([rng.permutation(n_blocks) for _ in range(math.ceil(need / n_blocks))])
    return order[:need].reshape(steps, batch_size)


def model_key(size: str, p: PretrainParams, tok_key: str) -> str:
    return stable_hash({"size": size, "shape": LADDER[size].__dict__, "tok": tok_key,
                        "params": p.model_dump(), "code": CODE_VERSION})


@torch.no_grad()
def validation_loss(model, blocks: torch.Tensor, batch_size: int) -> float:
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        x = blocks[i:i + batch_size]
        total += model(input_ids=x, labels=x).loss.item() * len(x)
        n += len(x)
    model.train()
    return total / max(n, 1)


def pretrain_size(size: str, p: PretrainParams, cache_root: Path, device: torch.device,
                  log: Callable[[str], None] = print, progress: bool = True) -> PretrainedModel:
    """Pretrain (or reuse) one ladder size as a causal LM; the classifier is built from it."""
    from tqdm.auto import tqdm
    from transformers import GPTNeoXForCausalLM

    tokenizer, tok_dir, tok_meta = get_tokenizer(p, cache_root, log)
    key = model_key(size, p, tok_meta["key"])

    def build(tmp: Path) -> dict:
        corpus = load_corpus(p.corpus)
        train_docs, val_docs = split_documents(corpus)
        blocks = token_blocks(train_docs, tokenizer, p.seq_len)
        val_blocks = token_blocks(val_docs, tokenizer, p.seq_len)[: p.eval_batches * p.batch_size]
        order = batch_order(len(blocks), p.batch_size, p.steps, p.seed)
        torch.manual_seed(p.seed)
        config = neox_config(size, len(tokenizer), max_positions=max(512, p.seq_len),
                             eos_id=tokenizer.eos_token_id)
        model = GPTNeoXForCausalLM(config).to(device)
        n_clf = lm_classifier_params(model)  # the classifier this LM becomes (paper's N)
        opt = torch.optim.AdamW(model.parameters(), lr=p.lr, betas=(0.9, 0.95), weight_decay=0.01)
        warm = max(p.warmup_steps, 1)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, p.steps) / p.steps)))
        curve, tokens, t0 = [], 0, time.time()
        eval_every = max(p.steps // 5, 1)
        bar = tqdm(range(p.steps), desc=f"pretrain {size}", disable=not progress, mininterval=2)
        for step in bar:
            x = blocks[order[step]].to(device)
            loss = model(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
            tokens += x.numel()
            if (step + 1) % eval_every == 0 or step + 1 == p.steps:
                vl = validation_loss(model, val_blocks.to(device), p.batch_size)
                curve.append({"step": step + 1, "tokens": tokens, "train_loss": loss.item(),
                              "val_loss": vl, "pretrain_flops": pretrain_flops(n_clf, tokens)})
                bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{vl:.3f}")
        model.save_pretrained(str(tmp / "model"), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp / "model"))
        return {"key": key, "size": size, "classifier_params": n_clf,
                "non_embedding_params": non_embedding_params(model),
                "lm_params": sum(v.numel() for v in model.parameters()),
                "tokens": tokens, "pretrain_flops": pretrain_flops(n_clf, tokens),
                "pretrain_flops_lm": pretrain_flops(sum(v.numel() for v in model.parameters()), tokens),
                "final_val_loss": curve[-1]["val_loss"], "curve": curve,
                "corpus_sha256": load_corpus(p.corpus).sha256, "wall_s": time.time() - t0,
                "tokenizer_key": tok_meta["key"]}

    folder, meta, reused = cached(Path(cache_root) / "pretrain" / f"{size}-{key}", build,
                                  {"key": key}, log)
    return PretrainedModel(size=size, path=folder / "model", meta=meta, reused=reused)
