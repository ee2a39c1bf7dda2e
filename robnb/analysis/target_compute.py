"""Attack compute needed to reach a target ASR, the paper's way (and a logit-space option).

The paper takes the first iteration whose ASR reaches the target and interpolates linearly, in
iteration space, with the previous iteration; the interpolated iteration times the mean FLOPs
per iteration, divided by the number of evaluated examples, is the per-example attack compute.
Two details made explicit here:

- iterations are used by value, not by position, so curves logged only every 12 iterations
  (the paper's adversarial-training evaluations) interpolate between the logged iterations;
- iteration 0 has ASR 0 by definition (nothing is attacked yet); when a run does not log it,
  the bracket below the first logged iteration is (0, 0), and ``from_origin`` says so.

GCG curves are not monotonic; "first iteration reaching the target" is the rule regardless
(later dips do not undo it). A run that never reaches the target is censored: NaN compute,
``reached = False``.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import pandas as pd

from robnb.analysis.curves import CURVE_KEYS, with_attack_compute
from robnb.analysis.fits import laplace_smooth, logit

Method = Literal["linear", "logit"]


def interpolated_iteration(iterations: Sequence[float], asr: Sequence[float], target: float,
                           method: Method = "linear", n: float | None = None) -> float:
    """Fractional iteration at which ASR first reaches ``target`` (a rate in (0, 1]).

    ``method="logit"`` interpolates logit(ASR) instead of ASR between the bracketing
    iterations; ASRs are Laplace-smoothed with ``n`` trials first (required), so ASR 0 has a
    finite logit. Returns NaN when the target is never reached.
    """
    its = np.asarray(iterations, dtype=float)
    a = np.asarray(asr, dtype=float)
    order = np.argsort(its, kind="stable")
    its, a = its[order], a[order]
    if len(its) == 0:
        return float("nan")
    if its[0] > 0:
        its, a = np.concatenate([[0.0], its]), np.concatenate([[0.0], a])
    hit = np.flatnonzero(a >= target)
    if len(hit) == 0:
        return float("nan")
    i = int(hit[0])
    if i == 0 or a[i] == target:
        return float(its[i])
    x0, x1, y0, y1 = its[i - 1], its[i], a[i - 1], a[i]
    if method == "logit":
        if n is None:
            raise ValueError("logit interpolation needs n (trials) for Laplace smoothing")
        y0, y1 = logit(laplace_smooth(y0, n)), logit(laplace_smooth(y1, n))
        t_val = logit(laplace_smooth(target, n))
        frac = float(np.clip((t_val - y0) / (y1 - y0), 0.0, 1.0)) if y1 != y0 else 1.0
    else:
        frac = (target - y0) / (y1 - y0)
    return float(x0 + frac * (x1 - x0))


def target_compute(attacks: pd.DataFrame, target_asr: float,
                   method: Method = "linear") -> pd.DataFrame:
    """One row per evaluation run: interpolated iteration and attack compute for the target.

    ``target_asr`` is a rate (0.05 for 5%). Columns: the run's keys, ``interpolated_iteration``,
    ``mean_flops_per_iteration``, ``n_examples``, ``attack_flops_per_example``,
    ``attack_flops_fraction_pretrain``, ``reached``, ``from_origin``, ``max_iteration``,
    ``attack_flops_fraction_pretrain_lower_bound`` (censored runs: the compute of all logged
    iterations, which the target needs more than), ``checkpoint``, ``pretrain_flops``,
    ``data_issue``.
    """
    if not 0 < target_asr <= 1:
        raise ValueError(f"target_asr is a rate in (0, 1]; got {target_asr}")
    df = with_attack_compute(attacks).sort_values(CURVE_KEYS + ["iteration"], kind="stable")
    df = df.reset_index(drop=True)
    run = df.groupby(CURVE_KEYS, dropna=False, observed=True, sort=False).ngroup().to_numpy()
    start = np.flatnonzero(np.r_[True, run[1:] != run[:-1]])
    its, asr = df["iteration"].to_numpy(float), df["asr"].to_numpy(float)
    first = df.iloc[start].reset_index(drop=True)
    n_trials = first["n_correct_before"].astype(float).fillna(first["n_examples"].astype(float))
    hit_pos = np.full(len(start), len(df))
    hit = np.flatnonzero(asr >= target_asr)
    np.minimum.at(hit_pos, run[hit], hit)
    reached = hit_pos < len(df)
    i = np.where(reached, hit_pos, start)
    at_start = i == start
    x0 = np.where(at_start, 0.0, its[i - 1 + at_start])
    y0 = np.where(at_start, 0.0, asr[i - 1 + at_start])
    x1, y1 = its[i], asr[i]
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "logit":
            n = n_trials.to_numpy(float)
            l0, l1 = logit(laplace_smooth(y0, n)), logit(laplace_smooth(y1, n))
            lt = logit(laplace_smooth(target_asr, n))
            frac = np.where(l1 != l0, np.clip((lt - l0) / (l1 - l0), 0.0, 1.0), 1.0)
        elif method == "linear":
            frac = (target_asr - y0) / (y1 - y0)
        else:
            raise ValueError(f"method must be 'linear' or 'logit', not {method!r}")
        exact = (y1 == target_asr) | (x1 == x0)
        it = np.where(exact, x1, x0 + frac * (x1 - x0))
    it = np.where(reached, it, np.nan)
    last = np.maximum.reduceat(its, start)
    mean_flops = first["mean_flops_per_iteration"].to_numpy(float)
    n_examples = first["n_examples"].to_numpy(float)
    pretrain = first["pretrain_flops"].to_numpy(float)
    per_example = it * mean_flops / n_examples
    issues = df.groupby(run)["data_issue"].max().to_numpy()
    out = first[CURVE_KEYS].copy()
    out["interpolated_iteration"] = it
    out["mean_flops_per_iteration"] = mean_flops
    out["n_examples"] = n_examples.astype(int)
    out["attack_flops_per_example"] = per_example
    out["attack_flops_fraction_pretrain"] = per_example / pretrain
    out["max_iteration"] = last.astype(int)
    out["attack_flops_fraction_pretrain_lower_bound"] = np.where(
        reached, np.nan, last * mean_flops / n_examples / pretrain)
    out["reached"] = reached
    out["from_origin"] = reached & (its[start] > 0) & (it <= its[start])
    out["checkpoint"] = first["checkpoint"]
    out["pretrain_flops"] = pretrain
    out["data_issue"] = issues
    return out
