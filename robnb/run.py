"""Run a profile: execute each stage notebook with papermill, once per model size, in order.

Every execution writes its executed copy to ``<run_dir>/<stage>/<size>/``; heavy work inside
is content-addressed (see robnb.checkpoints), so a second run reuses what the first built.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from robnb.params import Params

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
STAGES: dict[str, str] = {
    "pretrain": "00_pretrain.ipynb",
    "finetune": "01_finetune.ipynb",
}


@dataclass(frozen=True)
class Execution:
    stage: str
    size: str
    notebook: Path
    output: Path
    parameters: dict


def plan(params: Params, profile: str, overrides: dict, stages: list[str] | None = None) -> list[Execution]:
    """One execution per (stage, size); pretraining only exists for the local ladder."""
    chosen = stages or list(STAGES)
    unknown = [s for s in chosen if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; known: {', '.join(STAGES)}")
    out = []
    for stage in chosen:
        if stage == "pretrain" and params.family != "local-neox":
            continue
        for size in params.sizes:
            nb = NOTEBOOKS / STAGES[stage]
            out.append(Execution(stage, size, nb, params.run_dir / stage / size / nb.name,
                                 {"profile": str(profile), "size": size, "overrides": overrides,
                                  "progress": False}))
    return out


def execute(ex: Execution, log_output: bool = False) -> float:
    """Run one notebook with papermill; the executed copy is written atomically."""
    import os
    import tempfile

    import papermill as pm

    ex.output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=ex.output.parent, prefix=".", suffix=".ipynb")
    os.close(fd)
    t0 = time.time()
    try:
        pm.execute_notebook(str(ex.notebook), tmp, parameters=ex.parameters, kernel_name="python3",
                            progress_bar=False, log_output=log_output, cwd=str(REPO))
        os.replace(tmp, ex.output)
    except BaseException:
        failed = ex.output.with_suffix(".failed.ipynb")
        if Path(tmp).exists():
            os.replace(tmp, failed)
        raise
    return time.time() - t0


def summary(run_dir: Path) -> dict[str, pd.DataFrame]:
    """The tables a user wants first: pretraining loss and validation accuracy per size."""
    from robnb.results.store import read_table

    out: dict[str, pd.DataFrame] = {}
    pre = read_table(run_dir, "pretraining")
    if len(pre):
        last = pre.sort_values("step").groupby("model").tail(1)
        out["pretraining"] = last[["model", "model_size", "non_embedding_params", "tokens",
                                   "pretrain_flops", "val_loss"]].sort_values("model_size")
    ev = read_table(run_dir, "evaluations")
    if len(ev):
        ev = ev[ev["split"] == "validation"]
        acc = ev.pivot_table(index=["model", "model_size"], columns="task", values="accuracy",
                             aggfunc="mean").reset_index().sort_values("model_size")
        out["accuracy"] = acc
        out["majority"] = ev.groupby("task")["majority_baseline"].mean().to_frame().T
    runs = read_table(run_dir, "runs")
    if len(runs):
        out["runs"] = runs.groupby(["stage", "status"]).agg(n=("run_id", "size"),
                                                          wall_s=("wall_s", "sum")).reset_index()
    return out
