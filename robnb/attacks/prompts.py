"""What an attack optimises for one example: the token layout and the outputs it scores.

Two objectives share one layout. Label mode (sequence classifiers): read the class logits at the
last token, push towards the wrong label, success = the prediction is no longer the true label.
Target mode (causal LMs, see ``generative.py``): the target string's tokens follow the prompt,
the logits before each of them are read, success = every target token is the argmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

from robnb.tasks.base import Example
from robnb.tasks.encoding import encode_slot

Mode = Literal["label", "target"]


@dataclass(frozen=True)
class AttackPrompt:
    """One example laid out for attacking: ``before + attack + after``.

    ``read`` are offsets counted from the first ``after`` token (-1 = the last attack token);
    ``target`` holds the wanted id at each read (a class index or a vocabulary id).
    ``avoid`` is the true label in label mode (success = predicted label differs), else None.
    """

    before: tuple[int, ...]
    after: tuple[int, ...]
    read: tuple[int, ...]
    target: tuple[int, ...]
    avoid: int | None = None

    def length(self, n_attack: int) -> int:
        return len(self.before) + n_attack + len(self.after)


def label_prompts(tokenizer, examples: Sequence[Example], position: float) -> list[AttackPrompt]:
    """Classifier prompts: read the last token, target the wrong label."""
    out = []
    for ex in examples:
        before, after = encode_slot(tokenizer, ex, position)
        if not after:
            raise ValueError("label mode needs text after the attack slot (the answer prompt)")
        out.append(AttackPrompt(tuple(before), tuple(after), (len(after) - 1,),
                                (ex.target_label,), ex.label))
    return out
