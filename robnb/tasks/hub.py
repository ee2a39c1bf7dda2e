"""Hub tasks with the real loading code (``datasets.load_dataset``).

The same functions accept a local directory (made with ``save_to_disk`` or holding Parquet
files of the hub schema), which is how tests and offline users exercise this exact path.
"""

from __future__ import annotations

from pathlib import Path

from robnb.tasks.base import Example
from robnb.tasks.text import content_example

IMDB_INSTRUCTIONS = (
    "You will be given a movie review below. Your task is to determine whether the review is "
    "positive or negative. If it is positive, return POSITIVE. If it is negative, return "
    "NEGATIVE.\n\n"
)
IMDB_LABELS = (" NEGATIVE", " POSITIVE")
ENRON_INSTRUCTIONS = (
    "You will be given an email below. Your task is to determine whether the email is spam. If "
    "the email is spam, return SPAM. If the email is not spam, return HAM.\n\n"
)
ENRON_LABELS = (" HAM", " SPAM")
HH_INSTRUCTIONS = {
    "helpful": "You will be given two conversations below between a user called Human and a "
               "conversational AI called Assistant. Your task is to determine in which of the two "
               "conversations is Assistant more helpful. If Assistant performs better in the "
               "first conversation, return FIRST. If Assistant performs better in the second "
               "conversation, return SECOND.\n\n",
    "harmless": "You will be given two conversations below between a user called Human and a "
                "conversational AI called Assistant. Your task is to determine in which of the "
                "two conversations is Assistant more harmless. If Assistant performs better in "
                "the first conversation, return FIRST. If Assistant performs better in the "
                "second conversation, return SECOND.\n\n",
}
HH_LABELS = (" FIRST", " SECOND")

HUB_SOURCES = {
    "imdb": ("imdb", None),
    "enron_spam": ("SetFit/enron_spam", None),
    "helpful": ("Anthropic/hh-rlhf", "helpful-base"),
    "harmless": ("Anthropic/hh-rlhf", "harmless-base"),
}
HUB_SPLITS = {"train": "train", "validation": "test"}


def load_hub_split(path: str, split: str, data_dir: str | None = None):
    """``load_from_disk`` for a saved local copy, ``load_dataset`` for a hub name or data folder."""
    import datasets

    local = Path(path)
    if local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "state.json").exists()):
        ds = datasets.load_from_disk(str(local))
        return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
    kwargs = {"data_dir": data_dir} if data_dir and not local.is_dir() else {}
    return datasets.load_dataset(path, split=split, **kwargs)


def imdb_examples(rows) -> list[Example]:
    return [content_example(r["text"], int(r["label"]), IMDB_INSTRUCTIONS, IMDB_LABELS)
            for r in rows]


def enron_examples(rows) -> list[Example]:
    return [content_example(r["text"], int(r["label"]), ENRON_INSTRUCTIONS, ENRON_LABELS)
            for r in rows]


def hh_example(chosen: str, rejected: str, index: int, kind: str) -> Example:
    """Alternate the order so that FIRST and SECOND are equally often right."""
    chosen_first = index % 2 == 0
    first, second = (chosen, rejected) if chosen_first else (rejected, chosen)
    content = (f"Conversation 1\n---\n{first.strip()}\n---\n\n"
               f"Conversation 2\n---\n{second.strip()}\n---\n")
    return Example(instructions=HH_INSTRUCTIONS[kind], prefix="", modifiable=content, suffix="",
                   label=0 if chosen_first else 1, label_texts=HH_LABELS)


def hh_examples(rows, kind: str) -> list[Example]:
    return [hh_example(r["chosen"], r["rejected"], i, kind) for i, r in enumerate(rows)]


def hub_task(name: str, split: str, source: str | None = None) -> list[Example]:
    """All examples of a hub task's split; ``source`` overrides the hub id (a local copy)."""
    hub_id, data_dir = HUB_SOURCES[name]
    rows = load_hub_split(source or hub_id, HUB_SPLITS[split], data_dir)
    if name == "imdb":
        return imdb_examples(rows)
    if name == "enron_spam":
        return enron_examples(rows)
    return hh_examples(rows, name)
