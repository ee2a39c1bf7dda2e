"""Shared-prefix forward passes: the instructions every example of a task starts with are run
once per batch and their key/value cache is broadcast to all rows.

Causal attention makes this exact (a prefix token never sees later tokens), and it cuts the
executed compute of fine-tuning and attacks by the share of the prompt that is instructions.
"""

from __future__ import annotations

import torch


def common_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """Leading positions identical (and real) in every row, keeping at least one token per row."""
    if input_ids.shape[0] == 1:
        return 0
    same = (input_ids == input_ids[:1]).all(dim=0) & attention_mask.bool().all(dim=0)
    differs = (~same).nonzero()
    n = int(differs[0]) if len(differs) else input_ids.shape[1]
    shortest = int(attention_mask.sum(dim=1).min())
    return max(0, min(n, shortest - 1))


def classify(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             labels: torch.Tensor | None = None, min_prefix: int = 8):
    """A sequence-classification forward that computes the shared prefix once.

    Returns (model output, executed tokens): the paper's accounting uses the full token count;
    ``executed`` says what was really run.
    """
    p = common_prefix_length(input_ids, attention_mask)
    full_tokens = int(attention_mask.sum())
    if p < min_prefix:
        return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels), full_tokens
    base = getattr(model, model.base_model_prefix)
    prefix_out = base(input_ids=input_ids[:1, :p], attention_mask=attention_mask[:1, :p],
                      use_cache=True)
    cache = prefix_out.past_key_values
    cache.batch_repeat_interleave(input_ids.shape[0])
    out = model(input_ids=input_ids[:, p:], attention_mask=attention_mask,
                past_key_values=cache, labels=labels, use_cache=False)
    return out, full_tokens - p * (input_ids.shape[0] - 1)
