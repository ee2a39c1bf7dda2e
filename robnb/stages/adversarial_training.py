"""Stage 03: adversarially train one model size's fine-tuned classifiers, round by round.

For every (task, seed) of ``adversarial_training.tasks`` (default: the profile's tasks) the
rounds run from the fine-tuned checkpoint, or resume from the last complete round checkpoint
(see :mod:`robnb.defenses.adversarial_training`). Writes, keyed by round:

- ``training``: per round the training, adversarial-generation and pool-scoring FLOPs, the
  cumulative defense FLOPs and the clean fine-tuning FLOPs (excluded from defense compute);
- ``evaluations``: clean validation accuracy / precision / recall / F1 after every round;
- ``attacks``: per-iteration records of every evaluation attack after the selected rounds, with
  ``defense``, ``checkpoint``, ``defense_flops_cumulative`` and ``transfer`` columns;
- ``attack_strings``: the evaluation attacks' and the training attack's best strings;
- ``runs``: provenance of the training runs and of every evaluation attack run.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from robnb.checkpoints import verify
from robnb.defenses.adversarial_training import (
    RECORD_TABLES,
    Setup,
    adversarially_train,
    defense_name,
    identity,
)
from robnb.device import resolve_device
from robnb.params import Params
from robnb.results.provenance import now_iso, run_record, stable_hash
from robnb.results.schema import TABLES, conform
from robnb.results.store import write_records, write_table
from robnb.stages.common import check_model, model_info, params_hash, set_threads
from robnb.stages.finetune import finetune_dir, require_finetuned
from robnb.tasks import load_task
from robnb.train import fits

EVAL_SEED = 0  # every size and round is attacked on the same validation examples


def adversarial_training_tasks(params: Params) -> list[str]:
    return list(params.adversarial_training.tasks or params.tasks)


def _setup(params: Params, size: str, task: str, seed: int, info: dict, device, phash: str
           ) -> tuple[Setup, object]:
    from robnb.models.registry import load_sequence_classifier

    folder = finetune_dir(params, size, task, seed)
    meta = verify(folder)
    _, tok = load_sequence_classifier(folder, device="cpu")
    fp, at = params.finetune, params.adversarial_training
    src = params.task_sources.get(task)
    train = fits(load_task(task, "train", fp.train_size(task), seed, src), tok, fp.max_tokens)
    val = fits(load_task(task, "validation", fp.n_val, 0, src), tok, fp.max_tokens)
    evals = fits(load_task(task, "validation", at.n_eval_examples, EVAL_SEED, src), tok,
                 fp.max_tokens)
    model_size = info["model_size"] or meta["classifier_params"]
    pflops = info["pretrain_flops"]
    if pflops is None and info.get("pretrain_tokens"):
        pflops = info["_pretrain_flops_fn"](model_size, info["pretrain_tokens"])
    key = stable_hash(identity(params, size, task, seed, meta.get("key")), 8)
    context = {"run_id": f"advtrain-{size}-{task}-s{seed}-{defense_name(at)}-{key}",
               "family": params.family_of(size), "model": size, "model_size": model_size,
               "pretrain_flops": pflops, "task": task, "seed": seed}
    setup = Setup(params, size, task, seed, train, val, evals, context,
                  float(meta["finetune_flops"]), meta.get("key"), device, phash)
    return setup, folder


def _table(table: str, rows: list[dict]) -> pd.DataFrame:
    if rows:
        return pd.DataFrame(rows)
    return pd.DataFrame(columns=list(TABLES.get(table, {})))


def adversarial_training_stage(params: Params, size: str, progress: bool = True) -> pd.DataFrame:
    """Adversarially train (or resume) every (task, seed) of one size; returns the evaluation
    attacks' per-iteration records with the round's clean accuracy beside them."""
    from robnb.stages.attack import load_finetuned

    check_model(params, size)
    set_threads()
    device = resolve_device(params.device)
    tasks = adversarial_training_tasks(params)
    require_finetuned(params, size, tasks)
    info = model_info(params, size)
    phash = params_hash(params)
    out: dict[str, list[dict]] = {t: [] for t in RECORD_TABLES}
    for task in tasks:
        for seed in params.seeds:
            started, t0 = now_iso(), time.time()
            setup, _ = _setup(params, size, task, seed, info, device, phash)
            state, status = adversarially_train(
                setup, lambda t=task, s=seed: load_finetuned(params, size, t, s, device),
                progress=progress)
            for t in RECORD_TABLES:
                out[t] += state.records[t]
            out["runs"].append(run_record(setup.context["run_id"], "adversarial_training", phash,
                                          str(device), seed, started, time.time() - t0,
                                          status=status))
            if progress and status == "cached":
                print(f"{size} {task} s{seed}: all {setup.n_rounds} rounds already complete")
    part = f"adversarial_training-{defense_name(params.adversarial_training)}-{size}"
    root = Path(params.run_dir)
    for t in ("training", "evaluations", "attacks", "runs"):
        if out[t]:
            write_records(root, t, part, out[t])
        else:
            write_table(conform(t, _table(t, [])), root / "results" / t / f"{part}.parquet")
    write_table(_table("attack_strings", out["attack_strings"]),
                root / "results" / "attack_strings" / f"{part}.parquet")
    return with_clean_metrics(pd.DataFrame(out["attacks"]), pd.DataFrame(out["evaluations"]))


def with_clean_metrics(attacks: pd.DataFrame, evaluations: pd.DataFrame) -> pd.DataFrame:
    """Attack records plus the evaluated round's clean validation accuracy and F1."""
    if attacks.empty:
        return attacks
    keys = ["model", "task", "seed", "defense", "round"]
    clean = evaluations[keys + ["accuracy", "f1"]].rename(
        columns={"accuracy": "clean_accuracy", "f1": "clean_f1"})
    return attacks.merge(clean, on=keys, how="left")


def round_table(records: pd.DataFrame) -> pd.DataFrame:
    """Per (size, task, round, attack, placement): clean accuracy, ASR after the last iteration
    (mean over seeds) and cumulative defense FLOPs; one column per evaluation attack's ASR."""
    if records.empty:
        return records
    last = records[records["iteration"] == records.groupby("run_id")["iteration"].transform("max")]
    last = last.assign(setting=last["attack"] + "/" + last["placement"]
                       + last["transfer"].map({True: " (transfer)", False: ""}))
    base = (last.groupby(["model", "task", "defense", "round"])
            .agg(clean_accuracy=("clean_accuracy", "mean"),
                 defense_flops=("defense_flops_cumulative", "mean")))
    asr = last.pivot_table(index=["model", "task", "defense", "round"], columns="setting",
                           values="asr", aggfunc="mean")
    asr.columns = [f"ASR {c}" for c in asr.columns]
    return base.join(asr).reset_index()
