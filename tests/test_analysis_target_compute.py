"""Target-ASR compute: hand-computed interpolations, the compute accounting, the paper's data."""

from __future__ import annotations

import csv
import math

import numpy as np
import pandas as pd
import pytest

from analysis_fixtures import PAPER, needs_paper_data, paper_tables  # noqa: F401
from robnb.analysis.curves import CURVE_KEYS
from robnb.analysis.target_compute import interpolated_iteration, target_compute


def test_linear_interpolation_between_bracketing_iterations():
    # first ASR >= 5% is 8% at iteration 2; previous is 2% at iteration 1: 1 + 3/6
    assert interpolated_iteration([0, 1, 2, 3], [0.0, 0.02, 0.08, 0.2], 0.05) == pytest.approx(1.5)


def test_exact_hit_returns_that_iteration():
    assert interpolated_iteration([0, 1, 2], [0.0, 0.05, 0.1], 0.05) == 1.0


def test_first_crossing_wins_over_later_dips():
    # 6% at iteration 1 already crosses 5%; the dip to 1% later does not matter: 0 + 5/6
    assert interpolated_iteration([0, 1, 2, 3], [0.0, 0.06, 0.01, 0.2], 0.05) == \
        pytest.approx(5 / 6)


def test_sparse_iterations_interpolate_by_value_from_the_origin():
    # logged only at 12 and 24 (no iteration 0): bracket (0, 0%) .. (12, 50%) -> 12 * 0.1
    assert interpolated_iteration([12, 24], [0.5, 0.9], 0.05) == pytest.approx(1.2)
    # between logged iterations: (12, 2%) .. (24, 8%) -> 12 + 12 * 0.5
    assert interpolated_iteration([24, 12], [0.08, 0.02], 0.05) == pytest.approx(18.0)


def test_never_reached_is_nan():
    assert math.isnan(interpolated_iteration([0, 1, 2], [0.0, 0.01, 0.02], 0.05))


def test_logit_interpolation_uses_laplace_smoothed_logits():
    n = 98  # ASR 0 -> 1/100, ASR 0.5 -> 50/100, target 5% -> (4.9 + 1)/100
    lg = lambda p: math.log(p / (1 - p))  # noqa: E731
    expected = 1 + (lg(0.059) - lg(0.01)) / (lg(0.5) - lg(0.01))
    got = interpolated_iteration([0, 1, 2], [0.0, 0.0, 0.5], 0.05, method="logit", n=n)
    assert got == pytest.approx(expected)
    assert 1.1 < got < 1.5  # in logit space 5% lies well above 1% and 50%: later than linear 1.1
    with pytest.raises(ValueError):
        interpolated_iteration([0, 1], [0.0, 0.5], 0.05, method="logit")


def _run(run_id: str, asr: list[float], flops: list[float], n_examples: int = 10,
         pretrain: float = 3000.0, seed: int = 0) -> pd.DataFrame:
    its = list(range(len(asr)))
    return pd.DataFrame({
        "run_id": run_id, "source": "own", "family": "f", "task": "t", "attack": "gcg",
        "placement": "suffix", "defense": "unspecified", "model_size": 100, "seed": seed,
        "round": 0, "iteration": its, "asr": asr, "attack_flops": flops,
        "n_examples": n_examples, "n_correct_before": n_examples, "pretrain_flops": pretrain,
        "checkpoint": pd.NA, "data_issue": ""})


def test_compute_is_iterations_times_mean_flops_per_example_over_pretraining():
    runs = pd.concat([_run("a", [0.0, 0.02, 0.08, 0.2], [0.0, 100.0, 300.0, 200.0]),
                      _run("b", [0.0, 0.0, 0.01, 0.02], [0.0, 50.0, 50.0, 50.0], seed=1)])
    tc = target_compute(runs, 0.05).set_index("run_id")
    # run a: iteration 1.5; mean FLOPs per iteration over iterations >= 1 is 200
    assert tc.loc["a", "interpolated_iteration"] == pytest.approx(1.5)
    assert tc.loc["a", "attack_flops_per_example"] == pytest.approx(1.5 * 200 / 10)
    assert tc.loc["a", "attack_flops_fraction_pretrain"] == pytest.approx(30 / 3000)
    assert bool(tc.loc["a", "reached"]) and not bool(tc.loc["a", "from_origin"])
    # run b never reaches 5%: censored, with the compute of all 3 iterations as lower bound
    assert not bool(tc.loc["b", "reached"])
    assert math.isnan(tc.loc["b", "attack_flops_fraction_pretrain"])
    assert tc.loc["b", "attack_flops_fraction_pretrain_lower_bound"] == pytest.approx(
        3 * 50 / 10 / 3000)
    with pytest.raises(ValueError):
        target_compute(runs, 5.0)  # a percentage passed where a rate is expected


@needs_paper_data
def test_paper_pm_round0_from_raw_csv(paper_tables):
    """14m, seed 0, round 0 of the GCG-trained PasswordMatch runs, checked against the raw CSV."""
    path = PAPER / "evaluation" / "tom_013_eval_niki_171_gcg.csv"
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r["model_size"] == "7629056"
                and r["seed_idx"] == "0" and r["adv_training_round"] == "0"]
    rows.sort(key=lambda r: int(r["iteration"]))
    its = [int(r["iteration"]) for r in rows]
    asr = [float(r["asr"]) for r in rows]
    first = next(i for i, a in enumerate(asr) if a >= 0.05)
    x0, y0 = (its[first - 1], asr[first - 1]) if first else (0, 0.0)
    expected_it = x0 + (0.05 - y0) / (asr[first] - y0) * (its[first] - x0)
    flops = float(rows[0]["flops_per_iteration"])
    expected = expected_it * flops / int(rows[0]["dataset_n_val"]) / (
        6 * 7629056 * 299_892_736_000)
    a = paper_tables["attacks"]
    pm = a[a["source_file"] == path.name]
    tc = target_compute(pm, 0.05)
    row = tc[(tc["model_size"] == 7629056) & (tc["seed"] == 0) & (tc["round"] == 0)].iloc[0]
    assert row["interpolated_iteration"] == pytest.approx(expected_it)
    assert row["attack_flops_fraction_pretrain"] == pytest.approx(expected, rel=1e-9)
    assert bool(row["from_origin"]) == (first == 0)


@needs_paper_data
def test_vectorised_matches_the_scalar_definition_on_paper_data(paper_tables):
    a = paper_tables["attacks"]
    a = a[a["source_file"].isin(["tom_013_eval_niki_171_gcg.csv", "ian_106_gcg_pythia_imdb.csv",
                                 "oskar_019b_suffix_eval_adv_tr_gcg_imdb_small.csv"])]
    for method in ("linear", "logit"):
        tc = target_compute(a, 0.02, method=method)
        ref = []
        for key, run in a.groupby(CURVE_KEYS, dropna=False, observed=True):
            ref.append((*key, interpolated_iteration(run["iteration"], run["asr"], 0.02, method,
                                                     float(run["n_correct_before"].iloc[0]))))
        m = tc.merge(pd.DataFrame(ref, columns=CURVE_KEYS + ["ref"]), on=CURVE_KEYS)
        assert len(m) == len(tc) == a["run_id"].nunique()
        assert np.array_equal(m["ref"].isna(), m["interpolated_iteration"].isna())
        np.testing.assert_allclose(m["ref"].dropna(), m["interpolated_iteration"].dropna())
