"""The one tokenisation of an example, shared by training, evaluation and attacks.

An example is tokenised in chunks (instructions + prefix | modifiable | suffix + answer prompt),
each on its own, as the paper's chunked datasets are. An attack slot at the start or end of the
modifiable text then falls on a chunk boundary, so the clean input a classifier was trained on is
exactly the attacked input with no attack tokens: attacks never change the tokens around them.
"""

from __future__ import annotations

from typing import Sequence

import torch

from robnb.tasks.base import Example


def encode_text(tokenizer, text: str) -> list[int]:
    """Ids of a text chunk with no special tokens (chunks are joined by the caller)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def leading_special_ids(tokenizer) -> list[int]:
    """Special tokens the tokenizer puts in front of a text by itself (e.g. BOS), else []."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    if plain and with_special[-len(plain):] == plain:
        return list(with_special[: len(with_special) - len(plain)])
    return []


def encode_slot(tokenizer, example: Example, position: float = 1.0) -> tuple[list[int], list[int]]:
    """Ids before and after the attack slot at ``position`` (fraction of the modifiable chars)."""
    if not 0.0 <= position <= 1.0:
        raise ValueError(f"attack position must be in [0, 1], got {position}")
    k = round(position * len(example.modifiable))
    head = leading_special_ids(tokenizer) + encode_text(tokenizer, example.instructions + example.prefix)
    before = head + encode_text(tokenizer, example.modifiable[:k])
    after = (encode_text(tokenizer, example.modifiable[k:])
             + encode_text(tokenizer, example.suffix + example.answer_prompt))
    return before, after


def encode_example(tokenizer, example: Example) -> list[int]:
    """The clean input ids (the attack slot left empty)."""
    before, after = encode_slot(tokenizer, example, 1.0)
    return before + after


def encode_examples(tokenizer, examples: Sequence[Example]) -> list[list[int]]:
    return [encode_example(tokenizer, e) for e in examples]


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask (HF classifiers pool the last non-pad token)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask
