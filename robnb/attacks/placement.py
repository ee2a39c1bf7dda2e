"""Token-level placement of an attack inside an example, and which attack tokens are usable.

An attacked input is ``ids(before) + attack_ids + ids(after)``: the text before and after the
attack slot is tokenised on its own, so the attack tokens are exactly the ones the model sees.
A stored attack string reproduces those ids only if decoding and re-encoding it gives them back,
hence the round-trip filter every attack applies to its candidates.
"""

from __future__ import annotations

from typing import Sequence

import torch

from robnb.tasks.encoding import encode_text

INIT_PATTERN = "@&"


def decode_attack(tokenizer, ids: Sequence[int]) -> str:
    """The attack text for ids, decoded without any clean-up so it re-encodes exactly."""
    return tokenizer.decode(list(ids), clean_up_tokenization_spaces=False)


def reencode(tokenizer, rows: list[list[int]]) -> list[list[int]]:
    """Each row's ids as the model would see its text: decoded, then encoded again."""
    texts = tokenizer.batch_decode(rows, clean_up_tokenization_spaces=False)
    return [list(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def roundtrip_mask(tokenizer, ids: torch.Tensor) -> torch.Tensor:
    """True for each row of ``ids`` [R, L] whose decoded text re-encodes to the same ids."""
    if ids.numel() == 0:
        return torch.ones(ids.shape[0], dtype=torch.bool)
    rows = ids.tolist()
    return torch.tensor([a == r for a, r in zip(reencode(tokenizer, rows), rows)], dtype=torch.bool)


def initial_attack_ids(tokenizer, n_tokens: int, pattern: str = INIT_PATTERN) -> list[int]:
    """Exactly ``n_tokens`` ids of "@&@&…" that survive decode/encode (the paper's init).

    Characters are appended one at a time, so the token count grows by at most one per step
    and stops exactly at ``n_tokens`` whatever the tokenizer merges.
    """
    text, ids = "", []
    while len(ids) < n_tokens:
        text += pattern[len(text) % len(pattern)]
        ids = encode_text(tokenizer, text)
        if len(text) > 64 * n_tokens:
            raise ValueError(f"cannot build a {n_tokens}-token initial attack from {pattern!r}")
    return ids


def allowed_token_mask(tokenizer, vocab_size: int, ascii_only: bool = False) -> torch.Tensor:
    """Tokens an attack may use: never special tokens or ids the tokenizer does not know.

    ``ascii_only`` also drops tokens whose text is not printable ASCII (an option, off by
    default as in the paper; nanoGCG's default, used for like-for-like benchmarks).
    """
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    known = min(vocab_size, len(tokenizer))
    mask[:known] = True
    special = [i for i in tokenizer.all_special_ids if i is not None and 0 <= i < vocab_size]
    if special:
        mask[special] = False
    if ascii_only:
        texts = tokenizer.batch_decode([[i] for i in range(known)], clean_up_tokenization_spaces=False)
        printable = torch.tensor([bool(t) and t.isascii() and t.isprintable() for t in texts])
        mask[:known] &= printable
    return mask
