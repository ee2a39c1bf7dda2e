"""Where a model of a family and size comes from, and how it becomes a 2-way classifier.

Hub families keep the real loading code (``from_pretrained`` with a pinned revision); a local
folder made with ``save_pretrained`` goes through the same call, which is how it is tested.
"""

from __future__ import annotations

from pathlib import Path

import torch

PYTHIA_REVISION = "step143000"  # the final checkpoint of every Pythia size
HUB_IDS = {
    "pythia": "EleutherAI/pythia-{size}",
    "qwen2.5": "Qwen/Qwen2.5-{size}",
}
SMOLLM2_ID = "smollm2-135m"


def hub_id(family: str, size: str) -> str:
    if family not in HUB_IDS:
        raise KeyError(f"family '{family}' is not on the hub; hub families: {', '.join(HUB_IDS)}")
    return HUB_IDS[family].format(size=size)


def load_sequence_classifier(source: str | Path, num_labels: int = 2,
                             revision: str | None = None, device: torch.device | str = "cpu"):
    """``AutoModelForSequenceClassification`` with pad = EOS, as the paper's classifiers."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    kwargs = {"revision": revision} if revision and not Path(str(source)).is_dir() else {}
    tokenizer = AutoTokenizer.from_pretrained(str(source), **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model = AutoModelForSequenceClassification.from_pretrained(
        str(source), num_labels=num_labels, dtype=torch.float32, **kwargs)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device), tokenizer


def model_source(family: str, size: str, local_path: Path | None = None,
                 revision: str | None = None) -> tuple[str, str | None]:
    """The folder or hub id to load, and the revision to pin (hub only)."""
    if family == "local-neox":
        if local_path is None:
            raise ValueError("local-neox models come from pretraining: pass the pretrained folder")
        return str(local_path), None
    if family == "smollm2":
        from robnb.models.smollm2 import smollm2_folder

        return str(smollm2_folder()), None
    default_rev = PYTHIA_REVISION if family == "pythia" else None
    return hub_id(family, size), revision or default_rev
