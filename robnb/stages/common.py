"""What every stage needs: the cache root, the parameters hash, threads, and where a model is."""

from __future__ import annotations

from pathlib import Path

import torch

from robnb.checkpoints import verify
from robnb.params import Params
from robnb.results.provenance import stable_hash


def cache_root(params: Params) -> Path:
    """Pretrained models are shared across runs (content-addressed), so they live beside them."""
    import os

    return Path(os.environ.get("ROBNB_CACHE", Path(params.output_root) / "cache"))


def params_hash(params: Params) -> str:
    """What the computation depends on: not where it is written or how it is scheduled."""
    d = {k: v for k, v in params.as_dict().items()
         if k not in ("output_root", "run_name", "resources", "description")}
    return stable_hash(d)


def set_threads() -> None:
    """Small models on a 2-core CPU: use every core, no oversubscription."""
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, torch.get_num_threads()))


def pretrained_folder(params: Params, size: str) -> tuple[Path, dict]:
    """The verified pretrained model of a size; a clear error if it was never built."""
    from robnb.corpus import load_corpus
    from robnb.pretrain import model_key, tokenizer_key

    p = params.pretrain
    key = model_key(size, p, tokenizer_key(p, load_corpus(p.corpus).sha256))
    folder = cache_root(params) / "pretrain" / f"{size}-{key}"
    if not folder.exists():
        raise FileNotFoundError(f"no pretrained model for size '{size}' with these pretraining "
                                f"parameters (expected {folder}); run the pretrain stage first "
                                f"(robnb run does it in order)")
    meta = verify(folder, {"key": key})
    return folder / "model", meta


# ---------------------------------------------------------------- models

def check_model(params: Params, size: str) -> None:
    if size not in params.models:
        raise ValueError(f"size '{size}' is not in profile '{params.name}'; its models: "
                         f"{', '.join(params.models)}")


def model_info(params: Params, size: str) -> dict:
    """Where a size's base model is and the numbers the records need (size, pretraining FLOPs)."""
    from robnb.flops import PYTHIA_PRETRAIN_TOKENS, pretrain_flops
    from robnb.models.registry import model_source

    if params.family_of(size) == "smollm2":
        from robnb.models.smollm2 import smollm2_folder

        folder = smollm2_folder(cache_root(params) / "smollm2-135m")
        return {"source": str(folder), "revision": None, "model_size": None,
                "pretrain_flops": None, "base_key": "smollm2-135m-q4_1"}
    if params.family == "local-neox":
        folder, meta = pretrained_folder(params, size)
        return {"source": str(folder), "revision": None, "model_size": meta["classifier_params"],
                "pretrain_flops": meta["pretrain_flops"], "base_key": meta["key"]}
    source, revision = model_source(params.family, size, revision=params.hub_revision)
    source = params.model_sources.get(size, source)
    return {"source": source, "revision": revision, "model_size": None,
            "pretrain_flops": None, "base_key": stable_hash([source, revision]),
            "pretrain_tokens": PYTHIA_PRETRAIN_TOKENS if params.family == "pythia" else None,
            "_pretrain_flops_fn": pretrain_flops}


