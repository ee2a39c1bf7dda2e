"""The one example structure every task yields.

An example is ``instructions + prefix + modifiable + suffix + answer_prompt``. Attacks may only
insert text into ``modifiable`` (at a fraction of its characters), so every attack and placement
works the same way for every task.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ANSWER_PROMPT = "\n\nAnswer:"


@dataclass(frozen=True)
class Example:
    instructions: str
    prefix: str
    modifiable: str
    suffix: str
    label: int
    label_texts: tuple[str, ...]
    answer_prompt: str = ANSWER_PROMPT
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def split_at(self, position: float = 1.0) -> tuple[str, str]:
        """Text before and after the attack slot; position is a fraction of the modifiable chars."""
        if not 0.0 <= position <= 1.0:
            raise ValueError(f"attack position must be in [0, 1], got {position}")
        k = round(position * len(self.modifiable))
        before = self.instructions + self.prefix + self.modifiable[:k]
        after = self.modifiable[k:] + self.suffix + self.answer_prompt
        return before, after

    def render(self, attack: str = "", position: float = 1.0) -> str:
        before, after = self.split_at(position)
        return before + attack + after

    @property
    def text(self) -> str:
        return self.render()

    @property
    def target_label(self) -> int:
        """The wrong label an attack pushes towards (binary tasks: the other class)."""
        return (self.label + 1) % len(self.label_texts)
