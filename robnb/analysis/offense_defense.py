"""Offense/defense balance: attack compute for a target ASR against defense compute spent.

Per model size and adversarial-training round: x = cumulative defense FLOPs ÷ pretraining
FLOPs, y = per-example attack FLOPs to reach the target ASR ÷ pretraining FLOPs. On log–log
axes the slope of y against x over rounds says how much extra attack compute each doubling of
defense compute buys: 1 is parity, < 1 favours the attacker.

Joining evaluations to training: an evaluation of an adversarially trained model names the
checkpoint it loaded; the paper's evaluation files name it in ``model_name_or_path`` (the
hub repo, e.g. ``…/robust_llm_clf_pm_pythia-14m_s-0_adv_tr_gcg_t-0``) with the round as the
``adv-training-round-N`` revision, and the training files log the same name as ``model_key``.
So the join key is (checkpoint, round) — not model_idx, which is an index within one file and
differs between files that hold different subsets of sizes. Rows without a checkpoint name
(the suite's own runs, unless they record one) join on (family, task, model_size, seed, round).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from robnb.analysis.bootstrap import percentile_ci, seed_weights
from robnb.analysis.curves import GROUP_KEYS, id_summary
from robnb.analysis.fits import line_from_stats

FALLBACK_KEYS = ["family", "task", "model_size", "seed", "round"]
Censoring = Literal["drop_seeds", "drop_rounds"]


def defense_compute(training: pd.DataFrame) -> pd.DataFrame:
    """Cumulative defense FLOPs per checkpoint (or fallback key) and round, one row each.

    Rows marked ``superseded`` (a later run re-logged the same checkpoint) are dropped; of
    several rows left for one key the latest-created run's is kept.
    """
    t = training.copy()
    if "superseded" in t.columns:
        t = t[~t["superseded"].fillna(False).astype(bool)]
    if "checkpoint" not in t.columns:
        t["checkpoint"] = pd.NA
    order = "run_created_at" if "run_created_at" in t.columns else "run_id"
    t = t.sort_values(order)
    named = t[t["checkpoint"].notna()].drop_duplicates(["checkpoint", "round"], keep="last")
    unnamed = t[t["checkpoint"].isna()]
    dup = unnamed.duplicated(FALLBACK_KEYS, keep=False)
    if dup.any():
        raise ValueError("training rows without a checkpoint name are ambiguous for "
                         f"{unnamed.loc[dup, FALLBACK_KEYS].drop_duplicates().to_dict('records')}"
                         "; record a 'checkpoint' column to join evaluations unambiguously")
    out = pd.concat([named, unnamed], ignore_index=True)
    out = out.rename(columns={"run_id": "training_run_id", "data_issue": "training_issue"})
    keep = ["checkpoint", "training_run_id", "training_issue", "defense_flops_cumulative"]
    return out[[c for c in dict.fromkeys(keep + FALLBACK_KEYS) if c in out.columns]]


def attach_defense_compute(evals: pd.DataFrame, training: pd.DataFrame) -> pd.DataFrame:
    """Add ``defense_flops_cumulative`` and its pretraining share to per-run evaluation rows.

    ``evals`` is any per-run table with the run keys, ``checkpoint`` and ``pretrain_flops``
    (e.g. :func:`robnb.analysis.target_compute.target_compute`). Runs with no matching
    training row get NaN (e.g. fine-tuned models).
    """
    d = defense_compute(training)
    # the training table is the authority: drop any copy an attack record carried along
    evals = evals.drop(columns=[c for c in ("defense_flops_cumulative", "training_run_id",
                                            "training_issue", "defense_flops_fraction_pretrain")
                                if c in evals.columns])
    if "training_issue" not in d.columns:
        d["training_issue"] = ""
    has = evals["checkpoint"].notna() if "checkpoint" in evals else pd.Series(False, evals.index)
    named = evals[has].merge(d[d["checkpoint"].notna()][
        ["checkpoint", "round", "defense_flops_cumulative", "training_run_id", "training_issue"]],
        on=["checkpoint", "round"], how="left", validate="many_to_one")
    unnamed = evals[~has].merge(
        d[d["checkpoint"].isna()][FALLBACK_KEYS + ["defense_flops_cumulative", "training_run_id",
                                                   "training_issue"]],
        on=FALLBACK_KEYS, how="left", validate="many_to_one")
    out = pd.concat([named, unnamed], ignore_index=True)
    out["training_issue"] = out["training_issue"].fillna("")
    out["defense_flops_fraction_pretrain"] = (out["defense_flops_cumulative"].astype(float)
                                              / out["pretrain_flops"].astype(float))
    return out


def _usable(joined: pd.DataFrame, drop_flagged: bool) -> pd.Series:
    ok = ((joined["defense_flops_fraction_pretrain"] > 0)
          & (joined["attack_flops_fraction_pretrain"] > 0))
    if drop_flagged:
        ok &= joined["training_issue"].fillna("") == ""
    return ok


def offense_defense_points(joined: pd.DataFrame, drop_flagged: bool = True) -> pd.DataFrame:
    """Per (group, size, round): mean defense and attack shares over seeds that reached target.

    Means are arithmetic, over the seeds where both values are usable (defense compute > 0,
    target reached, training row not flagged when ``drop_flagged``); ``n_seeds`` counts them
    and ``n_censored`` the seeds whose attack never reached the target; ``run_ids`` and
    ``training_run_ids`` name the evaluation and training runs behind the point.
    """
    keys = GROUP_KEYS + ["model_size", "round"]
    usable = _usable(joined, drop_flagged)
    j = pd.DataFrame({
        "defense_flops_fraction_pretrain": joined["defense_flops_fraction_pretrain"].where(usable),
        "attack_flops_fraction_pretrain": joined["attack_flops_fraction_pretrain"].where(usable),
        "usable_seed": joined["seed"].where(usable),
        "censored": ~joined["reached"].astype(bool), "run_id": joined["run_id"].astype(str),
        "training_run_id": joined.get("training_run_id", pd.Series("", joined.index))
        .fillna("").astype(str)})
    g = j.groupby([joined[k] for k in keys], dropna=False, observed=True)
    out = g.agg(defense_flops_fraction_pretrain=("defense_flops_fraction_pretrain", "mean"),
                attack_flops_fraction_pretrain=("attack_flops_fraction_pretrain", "mean"),
                n_seeds=("usable_seed", "nunique"), n_censored=("censored", "sum"),
                run_ids=("run_id", id_summary),
                training_run_ids=("training_run_id", id_summary))
    return out.reset_index()


def offense_defense_slopes(joined: pd.DataFrame, n_boot: int = 1000, ci: float = 0.95,
                           drop_flagged: bool = True, censoring: Censoring = "drop_seeds",
                           rng_seed: int = 0) -> pd.DataFrame:
    """Log–log slope of attack share on defense share over rounds, per (group, size).

    The point estimate fits the per-round means of :func:`offense_defense_points`; each
    bootstrap replicate resamples seeds (with replacement), recomputes the per-round means and
    refits. With a single seed the interval is undefined (NaN).

    Censoring (target not reached within the evaluated iterations) biases per-round means
    towards the weaker seeds: ``"drop_seeds"`` (the paper's behaviour) averages the seeds that
    reached the target; ``"drop_rounds"`` keeps only rounds where every seed reached it.
    """
    rng = np.random.default_rng(rng_seed)
    keys = GROUP_KEYS + ["model_size"]
    censored = (~joined["reached"].astype(bool)).groupby(
        [joined[k] for k in keys], dropna=False, observed=True).sum()
    usable = _usable(joined, drop_flagged)
    if censoring == "drop_rounds":
        unreached = (~joined["reached"].astype(bool)).groupby(
            [joined[k] for k in keys + ["round"]], dropna=False, observed=True).transform("any")
        usable &= ~unreached
    elif censoring != "drop_seeds":
        raise ValueError(f"censoring must be 'drop_seeds' or 'drop_rounds', not {censoring!r}")
    rows = []
    for gkey, everything in joined.groupby(keys, dropna=False, observed=True):
        g = everything[usable.loc[everything.index]]
        if g.empty:  # every point censored or flagged: the size is reported, without a slope
            rows.append({**dict(zip(keys, gkey)), "slope": np.nan, "intercept": np.nan,
                         "slope_low": np.nan, "slope_high": np.nan, "n_rounds": 0,
                         "n_seeds": int(everything["seed"].nunique()),
                         "n_censored": int(censored.get(gkey, 0))})
            continue
        x = g.pivot_table(index="seed", columns="round", values="defense_flops_fraction_pretrain",
                          aggfunc="mean")
        y = g.pivot_table(index="seed", columns="round", values="attack_flops_fraction_pretrain",
                          aggfunc="mean").reindex_like(x)
        mask = (x.notna() & y.notna()).to_numpy(float)
        xv, yv = np.nan_to_num(x.to_numpy(float)), np.nan_to_num(y.to_numpy(float))
        point = _slope_of_means(np.ones((1, len(x))), xv, yv, mask)
        reps = _slope_of_means(seed_weights(len(x), n_boot, rng), xv, yv, mask)
        lo, hi = percentile_ci(reps[:, 0], ci) if len(x) > 1 else (np.nan, np.nan)
        rows.append({**dict(zip(keys, gkey)), "slope": point[0, 0],
                     "intercept": point[0, 1], "slope_low": lo, "slope_high": hi,
                     "n_rounds": int((mask.sum(axis=0) > 0).sum()), "n_seeds": len(x),
                     "n_censored": int(censored.get(gkey, 0))})
    return pd.DataFrame(rows)


def _slope_of_means(weights: np.ndarray, x: np.ndarray, y: np.ndarray,
                    mask: np.ndarray) -> np.ndarray:
    """``[n_rep, 2]`` slope/intercept of log10(mean y) on log10(mean x) across rounds.

    ``weights`` ``[n_rep, n_seeds]``; ``x``, ``y``, ``mask`` ``[n_seeds, n_rounds]``.
    """
    wm = weights @ mask
    with np.errstate(divide="ignore", invalid="ignore"):
        mx = np.log10((weights @ (x * mask)) / wm)
        my = np.log10((weights @ (y * mask)) / wm)
    ok = (wm > 0) & np.isfinite(mx) & np.isfinite(my)
    mx, my = np.where(ok, mx, 0.0), np.where(ok, my, 0.0)
    stats = np.stack([ok.sum(axis=1), mx.sum(axis=1), my.sum(axis=1), (mx * mx).sum(axis=1),
                      (mx * my).sum(axis=1)], axis=1).astype(float)
    slope, intercept = line_from_stats(stats)
    return np.stack([slope, intercept], axis=1)


def parity_lines(points: pd.DataFrame) -> pd.DataFrame:
    """Slope-1 lines from each size's first usable point to its last defense compute.

    Along such a line attack cost grows exactly as fast as defense cost (parity); the paper
    draws diagonal gridlines for the same purpose.
    """
    keys = GROUP_KEYS + ["model_size"]
    d = points.dropna(subset=["defense_flops_fraction_pretrain", "attack_flops_fraction_pretrain"])
    d = d[(d["defense_flops_fraction_pretrain"] > 0) & (d["attack_flops_fraction_pretrain"] > 0)]
    rows = []
    for key, g in d.sort_values("round").groupby(keys, dropna=False, observed=True):
        x0 = g["defense_flops_fraction_pretrain"].iloc[0]
        y0 = g["attack_flops_fraction_pretrain"].iloc[0]
        x1 = g["defense_flops_fraction_pretrain"].max()
        for x in (x0, x1):
            rows.append({**dict(zip(keys, key)), "defense_flops_fraction_pretrain": x,
                         "attack_flops_fraction_pretrain": y0 * x / x0})
    return pd.DataFrame(rows, columns=keys + ["defense_flops_fraction_pretrain",
                                              "attack_flops_fraction_pretrain"])
