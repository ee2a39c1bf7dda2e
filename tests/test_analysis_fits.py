"""Scaling fits: smoothing, OLS, per-size attack scaling, trends, bootstrap, extrapolation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis_fixtures import needs_paper_data, paper_tables  # noqa: F401
from robnb.analysis.bootstrap import percentile_ci, seed_weights
from robnb.analysis.curves import asr_at_iteration
from robnb.analysis.fits import (attack_scaling, fit_lines, laplace_smooth, logit, ols,
                                 scaling_points, size_trend)


def test_laplace_smoothing_and_logit_by_hand():
    assert laplace_smooth(0.0, 10) == pytest.approx(1 / 12)
    assert laplace_smooth(1.0, 10) == pytest.approx(11 / 12)
    assert laplace_smooth(0.5, 10, alpha=2) == pytest.approx(7 / 14)
    assert logit(0.5) == pytest.approx(0.0)
    assert logit(0.75) == pytest.approx(np.log(3))


def test_ols_recovers_an_exact_line_and_refuses_a_vertical_one():
    assert ols(np.array([0, 1, 2, 3]), np.array([1, 3, 5, 7])) == pytest.approx((2.0, 1.0))
    slope, intercept = ols(np.array([2.0, 2.0]), np.array([1.0, 3.0]))
    assert np.isnan(slope) and np.isnan(intercept)


def test_seed_weights_resample_with_replacement():
    w = seed_weights(4, 1000, np.random.default_rng(0))
    assert w.shape == (1000, 4) and (w.sum(axis=1) == 4).all() and (w >= 0).all()
    assert (w == 0).any() and (w >= 2).any()  # some seeds dropped, some repeated
    assert np.isnan(percentile_ci(np.array([1.0, np.nan]))[0])


def _attacks_on_lines(slopes: dict[int, list[float]], intercept: float = -1.0,
                      n: int = 198) -> pd.DataFrame:
    """Attacks whose smoothed logit ASR is exactly intercept + slope·log10(compute share).

    ``slopes`` maps a model size to one slope per seed. Per-iteration FLOPs = size, so the
    compute share at iteration i is i·size/n ÷ pretraining (= size·1e3).
    """
    rows = []
    for size, seed_slopes in slopes.items():
        for seed, b in enumerate(seed_slopes):
            for it in range(1, 9):
                share = it * size / n / (size * 1e3)
                p = 1 / (1 + np.exp(-(intercept + b * np.log10(share))))
                rows.append({"run_id": f"{size}-{seed}", "source": "own", "family": "f",
                             "task": "t", "attack": "gcg", "placement": "suffix",
                             "defense": "unspecified", "model_size": size, "seed": seed,
                             "round": 0, "iteration": it, "asr": (p * (n + 2) - 1) / n,
                             "attack_flops": float(size), "n_examples": n, "n_correct_before": n,
                             "pretrain_flops": size * 1e3, "checkpoint": pd.NA,
                             "data_issue": ""})
    return pd.DataFrame(rows)


def test_attack_scaling_recovers_per_size_slopes_and_their_trend():
    # slope b(N) = 0.5 + 0.25·log10(N / 1e6): sizes 1e6, 1e7, 1e8 -> 0.5, 0.75, 1.0
    sizes = {10**6: [0.5, 0.5], 10**7: [0.75, 0.75], 10**8: [1.0, 1.0]}
    per_size, trend = attack_scaling(_attacks_on_lines(sizes), n_boot=200)
    got = per_size.set_index("model_size")["slope"]
    for size, s in sizes.items():
        assert got[size] == pytest.approx(s[0])
    # identical seeds: every bootstrap replicate is the same line
    assert per_size["slope_low"].to_numpy() == pytest.approx(per_size["slope"].to_numpy())
    assert len(trend) == 1
    assert trend["trend_slope"].iloc[0] == pytest.approx(0.25)
    assert trend["trend_intercept"].iloc[0] == pytest.approx(0.5 - 0.25 * 6)
    pred = trend["fit"].iloc[0].predict(np.array([1e7, 1e10]))
    assert pred["predicted"].to_numpy() == pytest.approx([0.75, 1.5])
    assert pred["extrapolated"].tolist() == [False, True]


def test_bootstrap_interval_reflects_seed_spread_and_is_reproducible():
    sizes = {10**6: [0.4, 0.6, 0.5], 10**7: [0.7, 0.9, 0.8]}
    per_size, trend = attack_scaling(_attacks_on_lines(sizes), n_boot=400, rng_seed=3)
    again, _ = attack_scaling(_attacks_on_lines(sizes), n_boot=400, rng_seed=3)
    pd.testing.assert_frame_equal(per_size, again)
    for _, r in per_size.iterrows():
        lo_seed, hi_seed = min(sizes[r["model_size"]]), max(sizes[r["model_size"]])
        assert lo_seed - 1e-9 <= r["slope_low"] < r["slope"] < r["slope_high"] <= hi_seed + 1e-9
    t = trend.iloc[0]
    assert t["trend_slope_low"] < t["trend_slope"] < t["trend_slope_high"]


def test_single_seed_sizes_have_no_interval():
    per_size, trend = attack_scaling(_attacks_on_lines({10**6: [0.5], 10**7: [0.7]}), n_boot=50)
    assert per_size["slope_low"].isna().all()
    assert np.isnan(trend["trend_slope_low"].iloc[0])


def test_scaling_points_and_fit_lines_lie_on_the_fitted_line():
    attacks = _attacks_on_lines({10**6: [0.5, 0.5], 10**7: [0.75, 0.75]})
    pts = scaling_points(attacks)
    per_size, _ = attack_scaling(attacks, n_boot=10)
    lines = fit_lines(per_size, pts)
    assert len(lines) == 4
    merged = lines.merge(per_size, on=["model_size"])
    np.testing.assert_allclose(
        merged["logit_asr"],
        merged["intercept"] + merged["slope"] * np.log10(merged["attack_flops_fraction_pretrain"]))


def test_size_trend_of_per_seed_values():
    per_seed = pd.DataFrame({"model_size": [1e6, 1e6, 1e8, 1e8], "seed": [0, 1, 0, 1],
                             "v": [1.0, 3.0, 0.0, 2.0]})
    fit = size_trend(per_seed, "v", n_boot=300)
    assert fit.slope == pytest.approx(-0.5)  # means 2 and 1 over two decades
    assert fit.slope_low <= fit.slope <= fit.slope_high


@needs_paper_data
def test_paper_fine_tuned_models_are_more_robust_when_larger_on_imdb_and_spam(paper_tables):
    """The paper: larger undefended models are (modestly) more robust on IMDB and Spam."""
    a = paper_tables["attacks"]
    ft = a[(a["defense"] == "finetuned") & (a["family"] == "pythia") & (a["attack"] == "gcg")]
    for task in ("imdb", "enron_spam"):
        at10 = asr_at_iteration(ft[ft["task"] == task], 10)
        assert at10["model_size"].nunique() == 10 and at10["seed"].nunique() == 5
        n = at10["n_correct_before"].astype(float)
        fit = size_trend(at10.assign(y=logit(laplace_smooth(at10["asr"], n))), "y", n_boot=300)
        assert fit.slope_high < 0, task  # logit ASR at 10 iterations falls with size
