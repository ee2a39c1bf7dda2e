"""Scaling fits: logit ASR against log attack compute per size, and trends across sizes.

The paper's attack-scaling analysis: Laplace-smooth ASR (so 0 and 1 get finite logits), fit
``logit(ASR) = a + b·log10(attack FLOPs ÷ pretraining FLOPs)`` per model size by OLS (seeds
pooled, iterations ≥ 1), then regress the slopes ``b`` on log10(parameters). Here every fit
carries a bootstrap interval over seeds, and the size trend can be extrapolated to larger
models, with extrapolated rows marked as such.

All fits use sufficient statistics per seed (n, Σx, Σy, Σxx, Σxy), so a bootstrap replicate
is a weighted sum over seeds and all replicates are one matrix product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from robnb.analysis.bootstrap import percentile_ci, seed_weights
from robnb.analysis.curves import GROUP_KEYS, with_attack_compute


def laplace_smooth(asr: float | np.ndarray | pd.Series, n: float | np.ndarray | pd.Series,
                   alpha: float = 1.0):
    """(successes + α) ÷ (trials + 2α): Laplace's rule of succession for α = 1."""
    return (asr * n + alpha) / (n + 2.0 * alpha)


def logit(p):
    return np.log(p) - np.log1p(-p)


def ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of the least-squares line; NaNs with fewer than two distinct x."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    stats = np.array([len(x), x.sum(), y.sum(), (x * x).sum(), (x * y).sum()])
    slope, intercept = line_from_stats(stats[None, :])
    return float(slope[0]), float(intercept[0])


def line_from_stats(stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slopes and intercepts from rows of sufficient statistics (n, Σx, Σy, Σxx, Σxy)."""
    n, sx, sy, sxx, sxy = (stats[..., i] for i in range(5))
    with np.errstate(divide="ignore", invalid="ignore"):
        den = n * sxx - sx * sx
        slope = np.where(np.abs(den) > 1e-12 * np.maximum(n * sxx, 1e-300),
                         (n * sxy - sx * sy) / den, np.nan)
        intercept = (sy - slope * sx) / n
    return slope, intercept


def _stats_by(df: pd.DataFrame, x: str, y: str, keys: list[str]) -> pd.DataFrame:
    d = df[keys + [x, y]].copy()
    d["xx"], d["xy"] = d[x] * d[x], d[x] * d[y]
    return d.groupby(keys, dropna=False, observed=True).agg(
        n=(x, "size"), sx=(x, "sum"), sy=(y, "sum"), sxx=("xx", "sum"), sxy=("xy", "sum"))


@dataclass(frozen=True)
class TrendFit:
    """y = intercept + slope·log10(model_size), with bootstrap replicates of both."""
    slope: float
    intercept: float
    slope_low: float
    slope_high: float
    replicates: np.ndarray  # [n_boot, 2]: slope, intercept
    max_size: float

    def predict(self, sizes: np.ndarray, ci: float = 0.95) -> pd.DataFrame:
        """Predicted y with a bootstrap band; sizes above the fitted range are extrapolation."""
        lx = np.log10(np.asarray(sizes, float))
        reps = self.replicates[:, 1][:, None] + self.replicates[:, 0][:, None] * lx[None, :]
        bands = [percentile_ci(reps[:, j], ci) for j in range(len(lx))]
        return pd.DataFrame({"model_size": sizes, "predicted": self.intercept + self.slope * lx,
                             "low": [b[0] for b in bands], "high": [b[1] for b in bands],
                             "extrapolated": np.asarray(sizes, float) > self.max_size})


def attack_scaling(attacks: pd.DataFrame, n_boot: int = 1000, ci: float = 0.95,
                   alpha: float = 1.0, rng_seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-size OLS of logit(smoothed ASR) on log10(attack compute ÷ pretraining), and the trend.

    Returns ``(per_size, trend)``. ``per_size`` has, per (group, round, model_size): slope,
    intercept, bootstrap interval of the slope, points and seeds. ``trend`` has, per (group,
    round): the regression of those slopes on log10(model_size) with its bootstrap interval,
    where each replicate resamples seeds within every size and refits everything.
    """
    df = with_attack_compute(attacks)
    df = df[(df["iteration"] >= 1) & (df["attack_flops_fraction_pretrain"] > 0)].copy()
    n = df["n_correct_before"].astype(float).fillna(df["n_examples"].astype(float))
    df["x"] = np.log10(df["attack_flops_fraction_pretrain"].astype(float))
    df["y"] = logit(laplace_smooth(df["asr"].astype(float), n, alpha))
    rng = np.random.default_rng(rng_seed)
    group = GROUP_KEYS + ["round"]
    size_rows, trend_rows = [], []
    for gkey, g in df.groupby(group, dropna=False, observed=True, sort=True):
        stats = _stats_by(g, "x", "y", ["model_size", "seed"])
        sizes = sorted(stats.index.get_level_values("model_size").unique())
        slopes, size_reps = [], []
        for size in sizes:
            s = stats.xs(size, level="model_size").to_numpy()
            slope, intercept = line_from_stats(s.sum(axis=0)[None, :])
            rep_slope, _ = line_from_stats(seed_weights(len(s), n_boot, rng) @ s)
            if len(s) < 2:  # one seed: resampling it says nothing about seed variation
                rep_slope = np.full(n_boot, np.nan)
            lo, hi = percentile_ci(rep_slope, ci)
            slopes.append(slope[0])
            size_reps.append(rep_slope)
            size_rows.append({**dict(zip(group, gkey)), "model_size": size,
                              "slope": slope[0], "intercept": intercept[0], "slope_low": lo,
                              "slope_high": hi, "n_points": int(s[:, 0].sum()),
                              "n_seeds": len(s)})
        fit = trend_fit(np.array(sizes, float), np.array(slopes), np.stack(size_reps, axis=1),
                        ci)
        if fit is not None:
            trend_rows.append({**dict(zip(group, gkey)), "trend_slope": fit.slope,
                               "trend_intercept": fit.intercept, "trend_slope_low": fit.slope_low,
                               "trend_slope_high": fit.slope_high, "n_sizes": len(sizes),
                               "fit": fit})
    return pd.DataFrame(size_rows), pd.DataFrame(trend_rows)


def trend_fit(sizes: np.ndarray, values: np.ndarray, replicate_values: np.ndarray,
              ci: float = 0.95) -> TrendFit | None:
    """Regress ``values`` on log10(sizes); replicates ``[n_boot, n_sizes]`` give the interval.

    Returns None with fewer than two sizes (no line to fit). A replicate with any non-finite
    value is left out; with none left the interval is NaN.
    """
    ok = np.isfinite(values)
    if ok.sum() < 2:
        return None
    lx = np.log10(sizes[ok])
    slope, intercept = ols(lx, values[ok])
    reps = replicate_values[:, ok]
    finite = np.isfinite(reps).all(axis=1)
    rep_lines = np.full((len(reps), 2), np.nan)
    if finite.any():
        r = reps[finite]
        stats = np.stack([np.full(len(r), len(lx)), np.full(len(r), lx.sum()), r.sum(axis=1),
                          np.full(len(r), (lx * lx).sum()), r @ lx], axis=1)
        s, i = line_from_stats(stats)
        rep_lines[finite] = np.stack([s, i], axis=1)
    lo, hi = percentile_ci(rep_lines[:, 0], ci)
    return TrendFit(slope, intercept, lo, hi, rep_lines, float(sizes[ok].max()))


def size_trend(per_seed: pd.DataFrame, value: str, n_boot: int = 1000, ci: float = 0.95,
               rng_seed: int = 0) -> TrendFit | None:
    """Trend of a per-(model_size, seed) quantity (e.g. logit ASR at 10 iterations) in log size.

    The point estimate regresses per-size means on log10(size); replicates resample seeds
    within each size (sizes with a single seed make the interval undefined: NaN).
    """
    rng = np.random.default_rng(rng_seed)
    d = per_seed.dropna(subset=[value])
    sizes = np.array(sorted(d["model_size"].unique()), float)
    means, reps = [], []
    for size in sizes:
        v = d.loc[d["model_size"] == size, value].to_numpy(float)
        w = seed_weights(len(v), n_boot, rng)
        means.append(v.mean())
        reps.append((w @ v) / len(v) if len(v) > 1 else np.full(n_boot, np.nan))
    if len(sizes) == 0:
        return None
    return trend_fit(sizes, np.array(means), np.stack(reps, axis=1), ci)


def scaling_points(attacks: pd.DataFrame, alpha: float = 1.0) -> pd.DataFrame:
    """Per (group, round, size, iteration ≥ 1): mean over seeds of the fit's x and y.

    Columns ``attack_flops_fraction_pretrain`` (mean, linear), ``logit_asr`` (mean of the
    per-seed logit of the Laplace-smoothed ASR, i.e. the quantity the OLS fits), ``asr_mean``,
    ``n_seeds``: what :func:`attack_scaling` fits, ready to plot.
    """
    df = with_attack_compute(attacks)
    df = df[(df["iteration"] >= 1) & (df["attack_flops_fraction_pretrain"] > 0)].copy()
    n = df["n_correct_before"].astype(float).fillna(df["n_examples"].astype(float))
    df["logit_asr"] = logit(laplace_smooth(df["asr"].astype(float), n, alpha))
    keys = GROUP_KEYS + ["round", "model_size", "iteration"]
    return df.groupby(keys, dropna=False, observed=True).agg(
        attack_flops_fraction_pretrain=("attack_flops_fraction_pretrain", "mean"),
        logit_asr=("logit_asr", "mean"), asr_mean=("asr", "mean"),
        n_seeds=("seed", "nunique")).reset_index()


def fit_lines(per_size: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """Endpoints of each size's fitted line over the compute range it was fitted on."""
    keys = GROUP_KEYS + ["round", "model_size"]
    rng = points.groupby(keys, dropna=False, observed=True)["attack_flops_fraction_pretrain"] \
        .agg(["min", "max"]).reset_index()
    d = rng.merge(per_size, on=keys)
    rows = []
    for _, r in d.iterrows():
        for x in (r["min"], r["max"]):
            rows.append({**{k: r[k] for k in keys}, "attack_flops_fraction_pretrain": x,
                         "logit_asr": r["intercept"] + r["slope"] * np.log10(x)})
    return pd.DataFrame(rows, columns=keys + ["attack_flops_fraction_pretrain", "logit_asr"])
