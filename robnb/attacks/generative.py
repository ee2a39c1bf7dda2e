"""Generative mode: attack a causal LM towards a target completion (StrongREJECT-style).

The same attack core runs; only the objective changes: the target string's tokens are appended
after the prompt and the loss is their mean cross-entropy under teacher forcing.
"""

from __future__ import annotations

from typing import Sequence

from robnb.attacks.prompts import AttackPrompt
from robnb.tasks.base import Example
from robnb.tasks.encoding import encode_slot, encode_text, leading_special_ids

_SLOT = "\x00ROBNB_REQUEST\x00"


def target_prompts(tokenizer, examples: Sequence[Example], position: float,
                   targets: Sequence[str]) -> list[AttackPrompt]:
    """Prompts whose objective is to make the model continue with ``targets[i]``."""
    if len(targets) != len(examples):
        raise ValueError(f"{len(targets)} targets for {len(examples)} examples")
    out = []
    for ex, target in zip(examples, targets):
        before, after = encode_slot(tokenizer, ex, position)
        target_ids = encode_text(tokenizer, target)
        if not target_ids:
            raise ValueError("a generative target must be a non-empty string")
        first = len(after) - 1  # the output at the last prompt token predicts the first target id
        out.append(AttackPrompt(tuple(before), tuple(after + target_ids[:-1]),
                                tuple(range(first, first + len(target_ids))), tuple(target_ids)))
    return out


def chat_example(tokenizer, request: str, system: str | None = None) -> Example:
    """An Example whose modifiable text is a user request inside the tokenizer's chat template.

    Without a chat template the request stands alone (as for a base model). The attack goes
    into the user turn at the placement's position; everything after it (end of turn and the
    assistant header) is the example's suffix.
    """
    template = getattr(tokenizer, "chat_template", None)
    if template:
        messages = ([{"role": "system", "content": system}] if system else [])
        messages.append({"role": "user", "content": _SLOT})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        bos = getattr(tokenizer, "bos_token", None)
        if bos and text.startswith(bos) and tokenizer.bos_token_id in leading_special_ids(tokenizer):
            text = text[len(bos):]  # the tokenizer adds it again
        head, tail = text.split(_SLOT)
    else:
        head, tail = (system + "\n\n" if system else ""), ""
    return Example(instructions=head, prefix="", modifiable=request, suffix=tail, label=0,
                   label_texts=("", ""), answer_prompt="", meta={"request": request})

