"""Bootstrap over seeds, vectorised.

Seeds are the independent units of the paper's design (each seed is a separately fine-tuned and
adversarially trained model), so confidence intervals resample seeds, never rows. A replicate is
a vector of multiplicities (how often each seed was drawn), which lets every statistic below be
computed for all replicates at once with matrix products instead of re-running pandas code.
"""

from __future__ import annotations

import numpy as np


def seed_weights(n_seeds: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicities ``[n_boot, n_seeds]`` of seeds drawn with replacement, n_seeds per draw."""
    if n_seeds <= 0:
        return np.zeros((n_boot, 0))
    return rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_boot).astype(float)


def percentile_ci(replicates: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    """Percentile interval of finite replicates; NaNs when fewer than two are finite."""
    r = np.asarray(replicates, dtype=float)
    r = r[np.isfinite(r)]
    if len(r) < 2:
        return float("nan"), float("nan")
    lo, hi = np.quantile(r, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return float(lo), float(hi)
