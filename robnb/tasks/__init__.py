"""Task registry: every task yields :class:`Example` lists through :func:`load_task`."""

from __future__ import annotations

import random

from robnb.tasks.base import ANSWER_PROMPT, Example
from robnb.tasks.procedural import password_match, word_length
from robnb.tasks.text import (SENTIMENT_INSTRUCTIONS, SENTIMENT_LABELS, SPAM_INSTRUCTIONS,
                              SPAM_LABELS, content_example, sentiment_rows, spam_rows, split_of)
from robnb.tasks.words import english_words

OFFLINE_TASKS = ("password_match", "word_length", "spam", "sentiment")
HUB_TASKS = ("imdb", "enron_spam", "helpful", "harmless", "mnli")
TASK_NAMES = OFFLINE_TASKS + HUB_TASKS
# tasks whose attack-modifiable chunk is empty (REFERENCES.md): every placement is the suffix
EMPTY_MODIFIABLE_TASKS = ("password_match", "word_length")
SPLITS = ("train", "validation")
# Procedural splits use disjoint seeds (paper: 25k train / 25k validation from seed 0).
_SPLIT_SEED_OFFSET = {"train": 0, "validation": 1_000_003}


def _sample(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    if n is None or n >= len(examples):
        return list(examples)
    return random.Random(seed).sample(examples, n)


def _text_task(rows, split: str, instructions: str, labels: tuple[str, ...]) -> list[Example]:
    return [content_example(t, y, instructions, labels) for t, y in rows if split_of(t) == split]


def load_task(name: str, split: str, n: int | None = None, seed: int = 0,
              source: str | None = None) -> list[Example]:
    """Examples of one task split; ``n`` samples that many (deterministic in ``seed``)."""
    if name not in TASK_NAMES:
        raise KeyError(f"unknown task '{name}'; known tasks: {', '.join(TASK_NAMES)}")
    if split not in SPLITS:
        raise KeyError(f"unknown split '{split}'; known splits: {', '.join(SPLITS)}")
    if name in ("password_match", "word_length"):
        gen = password_match if name == "password_match" else word_length
        return gen(n if n is not None else 25_000, seed + _SPLIT_SEED_OFFSET[split],
                   english_words())
    if name == "spam":
        return _sample(_text_task(spam_rows(), split, SPAM_INSTRUCTIONS, SPAM_LABELS), n, seed)
    if name == "sentiment":
        return _sample(_text_task(sentiment_rows(), split, SENTIMENT_INSTRUCTIONS,
                                  SENTIMENT_LABELS), n, seed)
    if name == "mnli":  # NLI, 2-way (entailment vs not): robnb.tasks.nli
        from robnb.tasks.nli import mnli_task

        return _sample(mnli_task(split, source), n, seed)
    from robnb.tasks.hub import hub_task

    return _sample(hub_task(name, split, source), n, seed)


__all__ = ["ANSWER_PROMPT", "Example", "HUB_TASKS", "OFFLINE_TASKS", "SPLITS", "TASK_NAMES",
           "load_task"]
