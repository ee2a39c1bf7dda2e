"""Stage 01: fine-tune one model size on every (task, seed) of the profile."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from robnb.checkpoints import cached
from robnb.device import resolve_device
from robnb.evaluation import evaluate_examples
from robnb.params import Params
from robnb.results.provenance import now_iso, run_record, stable_hash
from robnb.results.store import write_records
from robnb.stages.common import check_model, model_info, params_hash, set_threads
from robnb.tasks import load_task
from robnb.train import fits, train_epochs


def finetune_dir(params: Params, size: str, task: str, seed: int) -> Path:
    return params.run_dir / "finetune" / size / task / f"seed{seed}"


def require_finetuned(params: Params, size: str, tasks: list[str]) -> None:
    """Fail before heavy work: every fine-tuned checkpoint a stage needs must exist, intact."""
    from robnb.checkpoints import verify

    for task in tasks:
        for seed in params.seeds:
            folder = finetune_dir(params, size, task, seed)
            if not folder.exists():
                raise FileNotFoundError(f"no fine-tuned model for size '{size}', task '{task}', "
                                        f"seed {seed} (expected {folder}); run finetune first")
            verify(folder)


def code_version() -> str:
    """The code a fine-tuned checkpoint depends on: a change there invalidates the cache."""
    import hashlib

    import robnb

    root = Path(robnb.__file__).parent
    files = ["train.py", "tasks/encoding.py", "models/prefix.py", "tasks/base.py"]
    return hashlib.sha256(b"".join((root / f).read_bytes() for f in files)).hexdigest()[:12]


def finetune_key(params: Params, size: str, task: str, seed: int, base_key: str) -> str:
    fp = params.finetune.model_dump(exclude={"n_train", "n_train_per_task"})
    return stable_hash({"base": base_key, "task": task, "seed": seed, "finetune": fp,
                        "code": code_version(),
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
