"""Adversarial vs OOD robustness: metric tables, robustness points, per-size correlation.

Paper B's design, per model size: Pearson r and a least-squares line between an adversarial-
robustness metric (x) and an OOD-robustness metric (y) over all (adversarial set, OOD set)
pairs × conditions (baseline, adversarial method, OOD method). Here each point is one
(adversarial set, OOD set, condition) of one size, with both metrics measured on the *same*
classifier: pairs are formed within a task by default (each task has its own fine-tuned
classifier); ``pairing="all"`` crosses tasks as Paper B crosses benchmarks.

Robustness metric: ``retained`` (default) is the share of clean performance kept on the set,
1 − PDR (for an attacked set, 1 − PDR = 1 − ASR), which removes the task's clean difficulty
from both axes — otherwise an easy task is "robust" on both axes and the correlation measures
task difficulty; ``raw`` is the metric itself, as Paper B plots it.

Paper B's script defects are avoided by construction: axis titles are made from the same
column definitions the numbers come from (x is always the adversarial metric), and every
prediction counts (:func:`check_predictions` recomputes each row's metrics from the stored
predictions; a 2-way classifier has no "mixed" output to drop).

Intervals are percentile bootstraps over the points of a size (points resampled with
replacement; a replicate whose x or y is constant gives no r and is left out). With few
points the intervals are wide, and points share models and sets, so they are not independent:
read the intervals as a lower bound on the uncertainty.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import pandas as pd

from robnb.analysis.bootstrap import percentile_ci

METRICS = ("accuracy", "precision", "recall", "f1")
CONDITION_ORDER = ("baseline", "adversarial", "ood_method")
CONDITION_LABELS = {"baseline": "baseline (fine-tuned)",
                    "adversarial": "adversarial method (adversarial training)",
                    "ood_method": "OOD method (perturbation augmentation)"}
Robustness = Literal["retained", "raw"]
Pairing = Literal["same_task", "all"]


def stage_rows(evals: pd.DataFrame) -> pd.DataFrame:
    """The evaluation rows of the adversarial-vs-OOD stage (other stages share the table)."""
    if "stage" in evals.columns:
        evals = evals[evals["stage"] == "adv_ood"]
    if "condition" not in evals.columns:
        raise ValueError("no 'condition' column: these are not adversarial-vs-OOD records")
    return evals.copy()


def metric_table(evals: pd.DataFrame,
                 metrics: Sequence[str] = (*METRICS, "pdr", "pdr_f1")) -> pd.DataFrame:
    """Mean over seeds per (size, condition, task, set): accuracy, weighted precision, recall,
    F1, performance drop rates relative to clean, and the number of predictions behind them."""
    ev = stage_rows(evals)
    keys = ["model", "model_size", "condition", "task", "split", "set_kind"]
    cols = [m for m in metrics if m in ev.columns]
    out = ev.groupby(keys, dropna=False).agg(
        **{m: (m, "mean") for m in cols}, n_seeds=("seed", "nunique"),
        n_predictions=("n_examples", "sum")).reset_index()
    order = {c: i for i, c in enumerate(CONDITION_ORDER)}
    kind = {"clean": 0, "adversarial": 1, "ood": 2}
    return (out.assign(_c=out["condition"].map(order), _k=out["set_kind"].map(kind))
            .sort_values(["model_size", "task", "_k", "split", "_c"])
            .drop(columns=["_c", "_k"]).reset_index(drop=True))


def robustness_value(rows: pd.DataFrame, metric: str = "accuracy",
                     robustness: Robustness = "retained") -> pd.Series:
    if metric not in ("accuracy", "f1"):
        raise ValueError(f"metric must be 'accuracy' or 'f1', got {metric!r}")
    if robustness == "raw":
        return rows[metric].astype(float)
    pdr = "pdr" if metric == "accuracy" else "pdr_f1"
    return 1.0 - rows[pdr].astype(float)


def axis_title(kind: Literal["adversarial", "ood"], metric: str = "accuracy",
               robustness: Robustness = "retained") -> str:
    what = "adversarial" if kind == "adversarial" else "OOD"
    name = "accuracy" if metric == "accuracy" else "weighted F1"
    if robustness == "retained":
        return f"{what} robustness: {name} retained (1 − PDR)"
    return f"{what} robustness: {name} on {what} sets"


def robustness_points(evals: pd.DataFrame, metric: str = "accuracy",
                      robustness: Robustness = "retained",
                      pairing: Pairing = "same_task",
                      min_clean: float | None = None) -> pd.DataFrame:
    """One row per (size, condition, adversarial set, OOD set): x = adversarial robustness,
    y = OOD robustness, each the mean over seeds, with the clean metric each is relative to
    (``x_clean``, ``y_clean``). ``min_clean`` leaves out sets whose classifier's clean metric is
    below it (a classifier that never learned its task makes "share of clean performance kept"
    meaningless); the default keeps every point."""
    ev = stage_rows(evals)
    clean_col = "clean_accuracy" if metric == "accuracy" else "clean_f1"
    ev = ev.assign(value=robustness_value(ev, metric, robustness),
                   clean=ev[clean_col].astype(float) if clean_col in ev.columns else np.nan)
    keys = ["model", "model_size", "condition", "task", "split", "set_kind"]
    mean = ev.groupby(keys, dropna=False)[["value", "clean"]].mean().reset_index()
    if min_clean is not None:
        mean = mean[mean["clean"] >= min_clean]
    adv = mean[mean["set_kind"] == "adversarial"].rename(
        columns={"split": "adversarial_set", "value": "x", "task": "adversarial_task",
                 "clean": "x_clean"})
    ood = mean[mean["set_kind"] == "ood"].rename(
        columns={"split": "ood_set", "value": "y", "task": "ood_task", "clean": "y_clean"})
    on = ["model", "model_size", "condition"]
    if pairing == "same_task":
        adv = adv.assign(_t=adv["adversarial_task"])
        ood = ood.assign(_t=ood["ood_task"])
        on = on + ["_t"]
    pts = adv.drop(columns="set_kind").merge(ood.drop(columns="set_kind"), on=on)
    pts = pts.drop(columns=[c for c in ("_t",) if c in pts.columns])
    pts["x_title"] = axis_title("adversarial", metric, robustness)
    pts["y_title"] = axis_title("ood", metric, robustness)
    cols = ["model", "model_size", "condition", "adversarial_task", "adversarial_set",
            "ood_task", "ood_set", "x", "y", "x_clean", "y_clean", "x_title", "y_title"]
    return pts[cols].sort_values(["model_size", "condition", "adversarial_set", "ood_set"]) \
        .reset_index(drop=True)


# ---------------------------------------------------------------- statistics

def pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r along the last axis (vectorised over leading axes); NaN where x or y is
    constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    xc = x - x.mean(-1, keepdims=True)
    yc = y - y.mean(-1, keepdims=True)
    sxx, syy = (xc * xc).sum(-1), (yc * yc).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(-1) / np.sqrt(sxx * syy)
    tiny = 1e-12 * np.maximum(1.0, np.maximum(np.abs(x).max(-1), np.abs(y).max(-1))) ** 2
    return np.where((sxx <= tiny) | (syy <= tiny), np.nan, np.clip(r, -1.0, 1.0))


def linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope and intercept of y on x along the last axis (NaN for constant x)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    xm, ym = x.mean(-1, keepdims=True), y.mean(-1, keepdims=True)
    sxx = ((x - xm) ** 2).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = ((x - xm) * (y - ym)).sum(-1) / sxx
    slope = np.where(sxx <= 1e-24, np.nan, slope)
    return slope, ym[..., 0] - slope * xm[..., 0]


def bootstrap_fit(x: Sequence[float], y: Sequence[float], n_boot: int = 2000, seed: int = 0,
                  ci: float = 0.95) -> dict:
    """r, slope and intercept with percentile bootstrap intervals (points resampled)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    out = {"n_points": n, "r": np.nan, "r_lo": np.nan, "r_hi": np.nan, "slope": np.nan,
           "slope_lo": np.nan, "slope_hi": np.nan, "intercept": np.nan, "p_value": np.nan,
           "n_boot_valid": 0}
    if n < 2:
        return out
    r = float(pearson(x, y))
    slope, intercept = (float(v) for v in linear_fit(x, y))
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    rb = pearson(x[idx], y[idx])
    sb, _ = linear_fit(x[idx], y[idx])
    out.update(r=r, slope=slope, intercept=intercept, n_boot_valid=int(np.isfinite(rb).sum()))
    out["r_lo"], out["r_hi"] = percentile_ci(rb, ci)
    out["slope_lo"], out["slope_hi"] = percentile_ci(sb, ci)
    if n > 2 and np.isfinite(r):
        from scipy import stats

        out["p_value"] = float(stats.pearsonr(x, y).pvalue)
    return out


def correlation_by_size(points: pd.DataFrame, n_boot: int = 2000, seed: int = 0,
                        ci: float = 0.95, by: Sequence[str] = ()) -> pd.DataFrame:
    """Per model size (and per ``by`` column, e.g. ``["adversarial_task"]`` for one correlation
    per task): Pearson r and the fit of y (OOD) on x (adversarial), with intervals."""
    keys = ["model", "model_size", *by]
    rows = []
    for key, g in points.groupby(keys, sort=True):
        fit = bootstrap_fit(g["x"].to_numpy(), g["y"].to_numpy(), n_boot, seed, ci)
        rows.append({**dict(zip(keys, key)), **fit,
                     "transfer": verdict(fit["r"], fit["r_lo"], fit["r_hi"])})
    return pd.DataFrame(rows).sort_values(["model_size", *by]).reset_index(drop=True)


def verdict(r: float, lo: float, hi: float) -> str:
    if not np.isfinite(r):
        return "undefined (no spread)"
    if np.isfinite(lo) and lo > 0:
        return "positive (interval above 0)"
    if np.isfinite(hi) and hi < 0:
        return "negative (interval below 0)"
    return "no clear relation (interval contains 0)"


def correlation_trend(points: pd.DataFrame, n_boot: int = 2000, seed: int = 0,
                      ci: float = 0.95) -> dict:
    """How r changes with size: the slope of r against log10(parameters), with an interval
    from resampling points within every size (so each size's uncertainty carries over)."""
    sizes = sorted(points["model_size"].unique())
    if len(sizes) < 2:
        return {"n_sizes": len(sizes), "slope_per_decade": np.nan, "lo": np.nan, "hi": np.nan}
    rng = np.random.default_rng(seed)
    logs = np.log10(np.array(sizes, dtype=float))
    r_point, r_boot = [], []
    for s in sizes:
        g = points[points["model_size"] == s]
        x, y = g["x"].to_numpy(float), g["y"].to_numpy(float)
        r_point.append(float(pearson(x, y)))
        idx = rng.integers(0, len(x), size=(n_boot, len(x)))
        r_boot.append(pearson(x[idx], y[idx]))
    r_point, r_boot = np.array(r_point), np.stack(r_boot, axis=1)  # [n_boot, n_sizes]
    ok = np.isfinite(r_point)
    slope = float(linear_fit(logs[ok], r_point[ok])[0]) if ok.sum() >= 2 else np.nan
    good = np.isfinite(r_boot[:, ok]).all(axis=1)
    sb = linear_fit(np.broadcast_to(logs[ok], (good.sum(), ok.sum())), r_boot[good][:, ok])[0] \
        if ok.sum() >= 2 and good.any() else np.array([])
    lo, hi = percentile_ci(sb, ci)
    return {"n_sizes": int(ok.sum()), "slope_per_decade": slope, "lo": lo, "hi": hi}


# ---------------------------------------------------------------- audit

def check_predictions(evals: pd.DataFrame, predictions: pd.DataFrame,
                      atol: float = 1e-9) -> pd.DataFrame:
    """Recompute every row's metrics from its stored predictions; raise if a prediction is
    missing or a metric differs. Returns the recomputed metrics."""
    from robnb.evaluation import metrics

    ev = stage_rows(evals)
    out = []
    for (run_id, split), g in predictions.groupby(["run_id", "split"]):
        row = ev[(ev["run_id"] == run_id) & (ev["split"] == split)]
        if len(row) != 1:
            raise AssertionError(f"{run_id} {split}: {len(row)} evaluation rows for predictions")
        m = metrics(g["label"].tolist(), g["prediction"].tolist(), 2)
        row = row.iloc[0]
        if int(row["n_examples"]) != len(g):
            raise AssertionError(f"{run_id} {split}: {row['n_examples']} counted, {len(g)} "
                                 "predictions stored")
        for k in METRICS:
            if abs(m[k] - float(row[k])) > atol:
                raise AssertionError(f"{run_id} {split}: {k} {row[k]} != recomputed {m[k]}")
        out.append({"run_id": run_id, "split": split, **{k: m[k] for k in (*METRICS,
                                                                          "n_examples")}})
    missing = set(map(tuple, ev[["run_id", "split"]].to_numpy())) - \
        set(map(tuple, predictions[["run_id", "split"]].to_numpy()))
    if missing:
        raise AssertionError(f"evaluation rows without predictions: {sorted(missing)[:5]}")
    return pd.DataFrame(out)


def load_results(run_dirs: Sequence) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(adversarial-vs-OOD evaluation rows, their predictions) of one or more runs."""
    from pathlib import Path

    from robnb.results.store import read_table

    ev = stage_rows(read_table(list(run_dirs), "evaluations"))
    files = [f for d in run_dirs for f in sorted((Path(d) / "results" / "adv_ood_predictions")
                                                 .glob("*.parquet"))]
    preds = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files \
        else pd.DataFrame(columns=["run_id", "split", "label", "prediction"])
    return ev, preds
