"""Stage functions: what one notebook execution (stage × model size) does, callable and testable
without a notebook. Each writes its tidy records under ``<run_dir>/results`` and returns them."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from robnb.checkpoints import CorruptCheckpoint, cached, verify
from robnb.device import resolve_device
from robnb.evaluation import evaluate_examples
from robnb.params import Params
from robnb.results.provenance import now_iso, run_record, stable_hash
from robnb.results.store import write_records
from robnb.tasks import load_task
from robnb.train import fits, train_epochs



def cache_root(params: Params) -> Path:
    """Pretrained models are shared across runs (content-addressed), so they live beside them."""
    import os

    return Path(os.environ.get("ROBNB_CACHE", Path(params.output_root) / "cache"))


def params_hash(params: Params) -> str:
    return stable_hash(params.as_dict())


def set_threads() -> None:
    """Small models on a 2-core CPU: use every core, no oversubscription."""
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, torch.get_num_threads()))


# ---------------------------------------------------------------- pretraining

def pretrain_stage(params: Params, size: str, progress: bool = True) -> pd.DataFrame:
    """Pretrain one ladder size (or reuse its cache) and record its loss curve and FLOPs."""
    from robnb.pretrain import pretrain_size

    if params.family != "local-neox":
        raise ValueError(f"pretraining is for the local ladder; family '{params.family}' comes "
                         "pretrained from the hub")
    started, t0 = now_iso(), time.time()
    device = resolve_device(params.device)
    result = pretrain_size(size, params.pretrain, cache_root(params), device, progress=progress)
    meta = result.meta
    run_id = f"pretrain-{size}-{meta['key']}"
    rows = [{"run_id": run_id, "family": "local-neox", "model": size,
             "model_size": meta["classifier_params"],
             "non_embedding_params": meta["non_embedding_params"], **point}
            for point in meta["curve"]]
    write_records(params.run_dir, "pretraining", f"pretrain-{size}", rows)
    write_records(params.run_dir, "runs", f"pretrain-{size}",
                  [run_record(run_id, "pretrain", params_hash(params), str(device),
                              params.pretrain.seed, started, time.time() - t0,
                              status="cached" if result.reused else "ok")])
    return pd.DataFrame(rows)


def pretrained_folder(params: Params, size: str) -> tuple[Path, dict]:
    """The verified pretrained model of a size; a clear error if it was never built."""
    from robnb.pretrain import model_key, tokenizer_key
    from robnb.corpus import load_corpus

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


# ---------------------------------------------------------------- fine-tuning

def finetune_dir(params: Params, size: str, task: str, seed: int) -> Path:
    return params.run_dir / "finetune" / size / task / f"seed{seed}"


def finetune_key(params: Params, size: str, task: str, seed: int, base_key: str) -> str:
    fp = params.finetune.model_dump(exclude={"n_train", "n_train_per_task"})
    return stable_hash({"base": base_key, "task": task, "seed": seed, "finetune": fp,
                        "n_train": params.finetune.train_size(task),
                        "source": params.task_sources.get(task)})


def finetune_one(params: Params, size: str, task: str, seed: int, info: dict,
                 device: torch.device, progress: bool = True) -> tuple[Path, dict, bool]:
    """Fine-tune one (size, task, seed), or reuse its verified checkpoint."""
    from robnb.models.counting import classifier_params
    from robnb.models.registry import load_sequence_classifier

    fp = params.finetune
    key = finetune_key(params, size, task, seed, info["base_key"])

    def build(tmp: Path) -> dict:
        torch.manual_seed(seed)
        model, tok = load_sequence_classifier(info["source"], revision=info["revision"],
                                              device=device)
        src = params.task_sources.get(task)
        train = fits(load_task(task, "train", fp.train_size(task), seed, src), tok, fp.max_tokens)
        val = fits(load_task(task, "validation", fp.n_val, 0, src), tok, fp.max_tokens)
        if len(train) < fp.batch_size or not val:
            raise ValueError(f"finetune.max_tokens={fp.max_tokens} leaves {len(train)} training "
                             f"and {len(val)} validation examples of task '{task}' for this "
                             "tokenizer; raise finetune.max_tokens")
        t0 = time.time()
        state = train_epochs(model, tok, train, fp, seed, progress=progress,
                             desc=f"finetune {size} {task} s{seed}")
        wall = time.time() - t0
        scores, _ = evaluate_examples(model, tok, val, device=device)
        majority = max(sum(e.label == k for e in val) for k in range(2)) / max(len(val), 1)
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        return {"key": key, "size": size, "task": task, "seed": seed,
                "classifier_params": classifier_params(model), "finetune_flops": state.flops,
                "tokens": state.tokens, "steps": state.step, "n_train": len(train),
                "n_val": len(val), "train_loss_last": state.losses[-1] if state.losses else None,
                "metrics": scores, "majority_baseline": majority, "wall_s": wall}

    return cached(finetune_dir(params, size, task, seed), build, {"key": key})


def finetune_stage(params: Params, size: str, progress: bool = True) -> pd.DataFrame:
    """Fine-tune every (task, seed) of a size; completed ones are reused (resumable)."""
    check_model(params, size)
    set_threads()
    device = resolve_device(params.device)
    info = model_info(params, size)
    phash = params_hash(params)
    evals, training, runs = [], [], []
    for task in params.tasks:
        for seed in params.seeds:
            started, t0 = now_iso(), time.time()
            folder, meta, reused = finetune_one(params, size, task, seed, info, device, progress)
            run_id = f"finetune-{size}-{task}-s{seed}-{meta['key']}"
            model_size = info["model_size"] or meta["classifier_params"]
            pflops = info["pretrain_flops"]
            if pflops is None and info.get("pretrain_tokens"):
                pflops = info["_pretrain_flops_fn"](model_size, info["pretrain_tokens"])
            m = meta["metrics"]
            family = params.family_of(size)
            evals.append({"run_id": run_id, "family": family, "model": size,
                          "model_size": model_size, "pretrain_flops": pflops, "task": task,
                          "split": "validation", "seed": seed, "round": 0,
                          "majority_baseline": meta["majority_baseline"], **m})
            training.append({"run_id": run_id, "family": family, "model": size,
                             "model_size": model_size, "task": task, "seed": seed, "round": 0,
                             "train_flops": meta["finetune_flops"],
                             "adversarial_generation_flops": 0.0,
                             "defense_flops_cumulative": 0.0,
                             "finetune_flops": meta["finetune_flops"],
                             "steps": meta["steps"], "tokens": meta["tokens"]})
            runs.append(run_record(run_id, "finetune", phash, str(device), seed, started,
                                   meta["wall_s"] if not reused else time.time() - t0,
                                   status="cached" if reused else "ok"))
    part = f"finetune-{size}"
    write_records(params.run_dir, "evaluations", part, evals)
    write_records(params.run_dir, "training", part, training)
    write_records(params.run_dir, "runs", part, runs)
    return pd.DataFrame(evals)
