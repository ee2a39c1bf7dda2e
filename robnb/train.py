"""The one fine-tuning loop (clean fine-tuning and each adversarial-training round use it).

It counts its own compute by the paper's formula: forward 2·N·tokens plus backward 4·N·tokens
over the real (non-padding) tokens of every batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from robnb.flops import FlopCounter, train_flops
from robnb.models.prefix import classify
from robnb.models.counting import classifier_params
from robnb.params import FinetuneParams
from robnb.tasks.base import Example
from robnb.tasks.encoding import encode_examples, pad_batch


@dataclass
class TrainState:
    step: int = 0
    flops: float = 0.0
    flops_executed: float = 0.0
    tokens: int = 0
    losses: list[float] = field(default_factory=list)


def fits(examples: Sequence[Example], tokenizer, max_tokens: int) -> list[Example]:
    """Drop examples longer than the context budget, as the paper drops them (no truncation)."""
    return [e for e, ids in zip(examples, encode_examples(tokenizer, examples))
            if len(ids) <= max_tokens]


def make_optimizer(model: torch.nn.Module, fp: FinetuneParams, total_steps: int):
    if fp.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        opt = Adafactor(model.parameters(), lr=fp.lr, scale_parameter=False, relative_step=False,
                        warmup_init=False, weight_decay=fp.weight_decay)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=fp.lr, weight_decay=fp.weight_decay)
    warm = max(fp.warmup_steps, 0)

    def factor(step: int) -> float:
        w = min(1.0, (step + 1) / warm) if warm else 1.0
        if fp.schedule == "constant":
            return w
        return w * max(0.0, 1.0 - step / max(total_steps, 1))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def train_epochs(model: torch.nn.Module, tokenizer, examples: Sequence[Example],
                 fp: FinetuneParams, seed: int, epochs: int | None = None,
                 optimizer=None, scheduler=None, state: TrainState | None = None,
                 on_step: Callable[[TrainState], None] | None = None,
                 progress: bool = False, desc: str = "train") -> TrainState:
    """Train for whole epochs over ``examples``; returns counters (steps, FLOPs, losses).

    FLOPs are the paper's (every real token, shared prefix included); ``flops_executed`` is
    what the shared-prefix forward really ran.
    """
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    epochs = fp.epochs if epochs is None else epochs
    rng = np.random.default_rng(seed)
    plan = [b for _ in range(epochs) for b in batches(len(examples), fp.batch_size, rng)]
    if optimizer is None:
        optimizer, scheduler = make_optimizer(model, fp, len(plan))
    state = state or TrainState()
    counter = FlopCounter(classifier_params(model))
    rows = encode_examples(tokenizer, examples)
    labels = torch.tensor([e.label for e in examples])
    model.train()
    for idx in tqdm(plan, desc=desc, disable=not progress, mininterval=2):
        ids, mask = pad_batch([rows[i] for i in idx], tokenizer.pad_token_id)
        ids, mask = ids.to(device), mask.to(device)
        out, executed = classify(model, ids, mask, labels[idx].to(device))
        out.loss.backward()
        if fp.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), fp.grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        n_tok = int(mask.sum())
        counter.add_forward(n_tok)
        counter.add_backward(n_tok)
        state.flops_executed += train_flops(counter.n_params, executed)
        state.step += 1
        state.tokens += n_tok
        state.losses.append(float(out.loss.detach()))
        if on_step:
            on_step(state)
    state.flops += counter.total
    return state
