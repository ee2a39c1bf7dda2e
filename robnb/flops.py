"""Compute accounting, the paper's way: forward 2·N·tokens, backward 4·N·tokens.

N is the classifier's parameter count as the paper reports it (input embedding and body,
no unembedding, plus the classification head); tokens is the full input length including any
cached prefix. Pretraining compute is 6·N·D.
"""

from __future__ import annotations

import torch

PYTHIA_PRETRAIN_TOKENS = 299_892_736_000


def forward_flops(n_params: int, tokens: int) -> float:
    return 2.0 * n_params * tokens


def backward_flops(n_params: int, tokens: int) -> float:
    return 4.0 * n_params * tokens


def train_flops(n_params: int, tokens: int) -> float:
    return forward_flops(n_params, tokens) + backward_flops(n_params, tokens)


def pretrain_flops(n_params: int, tokens: int) -> float:
    return 6.0 * n_params * tokens


def count_tokens(attention_mask: torch.Tensor) -> int:
    """Real (non-padding) tokens in a batch: padding is not counted as compute."""
    return int(attention_mask.sum().item())


class FlopCounter:
    """Accumulates formula FLOPs as a loop runs, so training and attacks count the same way."""

    def __init__(self, n_params: int):
        self.n_params = n_params
        self.forward = 0.0
        self.backward = 0.0

    def add_forward(self, tokens: int) -> float:
        f = forward_flops(self.n_params, tokens)
        self.forward += f
        return f

    def add_backward(self, tokens: int) -> float:
        f = backward_flops(self.n_params, tokens)
        self.backward += f
        return f

    @property
    def total(self) -> float:
        return self.forward + self.backward
