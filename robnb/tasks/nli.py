"""Natural language inference as a 2-way classification task in the suite's example format.

Premise and hypothesis both sit in the attack-modifiable text (an attack appended at the end
lands after the hypothesis). Three-way gold labels (0 entailment, 1 neutral, 2 contradiction, as
MNLI, ANLI and AdvGLUE number them) collapse to entailment (0) vs non-entailment (1), HANS's own
labelling; rows without a gold label (-1) are dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

from robnb.tasks.base import Example

NLI_INSTRUCTIONS = (
    "You will be given a premise and a hypothesis below. Your task is to determine whether the "
    "premise entails the hypothesis. If the premise entails the hypothesis, return ENTAILMENT. "
    "If it does not (the hypothesis is neutral or contradicts the premise), return "
    "NON-ENTAILMENT.\n\n"
)
NLI_LABELS = (" ENTAILMENT", " NON-ENTAILMENT")
MNLI_SOURCE = "nyu-mll/multi_nli"
MNLI_SPLITS = {"train": ("train",), "validation": ("validation_matched",)}


def nli_example(premise: str, hypothesis: str, label: int, **meta) -> Example:
    content = f"Premise: {' '.join(premise.split())}\nHypothesis: {' '.join(hypothesis.split())}\n"
    return Example(instructions=NLI_INSTRUCTIONS, prefix="", modifiable=content, suffix="",
                   label=label, label_texts=NLI_LABELS, meta=meta)


def two_way(label: int, three_way: bool = True) -> int | None:
    """0 entailment stays 0; neutral/contradiction (or HANS's non-entailment) become 1."""
    label = int(label)
    if label < 0 or label > (2 if three_way else 1):
        return None
    return 0 if label == 0 else 1


def nli_examples(rows: Iterable[Mapping], three_way: bool = True) -> list[Example]:
    out = []
    for r in rows:
        y = two_way(r["label"], three_way)
        if y is not None:
            out.append(nli_example(r["premise"], r["hypothesis"], y, source_label=int(r["label"])))
    return out


def load_rows(path: str, splits: Sequence[str], config: str | None = None) -> list[dict]:
    """Rows of several splits of one dataset: a local ``save_to_disk`` copy or data folder (through
    :func:`robnb.tasks.hub.load_hub_split`), else ``datasets.load_dataset(path, config)``."""
    from robnb.tasks.hub import load_hub_split

    rows: list[dict] = []
    for split in splits:
        if Path(path).is_dir() or config is None:
            ds = load_hub_split(path, split)
        else:
            import datasets

            ds = datasets.load_dataset(path, config, split=split)
        rows.extend(dict(r) for r in ds)
    return rows


def mnli_task(split: str, source: str | None = None) -> list[Example]:
    """MNLI (matched validation for ``validation``), entailment vs non-entailment."""
    return nli_examples(load_rows(source or MNLI_SOURCE, MNLI_SPLITS[split]))
