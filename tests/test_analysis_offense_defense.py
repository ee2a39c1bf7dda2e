"""Offense/defense: join of evaluations to training, per-round points, log–log slopes."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from analysis_fixtures import PAPER, needs_paper_data, paper_tables  # noqa: F401
from robnb.analysis.offense_defense import (attach_defense_compute, defense_compute,
                                            offense_defense_points, offense_defense_slopes,
                                            parity_lines)
from robnb.analysis.target_compute import target_compute

BASE = {"source": "own", "family": "f", "task": "t", "attack": "gcg", "placement": "suffix",
        "defense": "adv_gcg", "data_issue": ""}


def _joined(exponents: dict[int, float], const: dict[int, float], rounds=(1, 2, 3, 4),
            size: int = 1000) -> pd.DataFrame:
    """Per-seed points with y = const[seed] · x^exponent[seed], x = 10^-round (same per seed)."""
    rows = []
    for seed, b in exponents.items():
        for r in rounds:
            x = 10.0 ** (-6 + r)
            rows.append({**BASE, "model_size": size, "seed": seed, "round": r,
                         "run_id": f"e{seed}{r}", "defense_flops_fraction_pretrain": x,
                         "attack_flops_fraction_pretrain": const[seed] * x ** b, "reached": True,
                         "training_issue": ""})
    return pd.DataFrame(rows)


def test_common_exponent_gives_that_slope_whatever_the_seed_constants():
    j = _joined({0: 0.5, 1: 0.5, 2: 0.5}, {0: 1e-3, 1: 5e-3, 2: 2e-4})
    s = offense_defense_slopes(j, n_boot=200).iloc[0]
    assert s["slope"] == pytest.approx(0.5)
    assert s["slope_low"] == pytest.approx(0.5) and s["slope_high"] == pytest.approx(0.5)
    assert s["n_rounds"] == 4 and s["n_seeds"] == 3 and s["n_censored"] == 0


def test_mixed_exponents_slope_and_interval_lie_between_them():
    j = _joined({0: 0.4, 1: 0.6, 2: 0.5}, {0: 1e-3, 1: 1e-3, 2: 1e-3})
    s = offense_defense_slopes(j, n_boot=300).iloc[0]
    assert 0.4 - 1e-9 <= s["slope_low"] <= s["slope"] <= s["slope_high"] <= 0.6 + 1e-9
    assert s["slope_high"] > s["slope_low"]


def test_points_are_means_over_usable_seeds_and_count_censoring():
    j = _joined({0: 1.0, 1: 1.0}, {0: 1.0, 1: 3.0})
    j.loc[(j["seed"] == 1) & (j["round"] == 4), ["attack_flops_fraction_pretrain", "reached"]] = \
        [np.nan, False]
    p = offense_defense_points(j).set_index("round")
    assert p.loc[1, "attack_flops_fraction_pretrain"] == pytest.approx(2.0 * 1e-5)  # (1 + 3)/2
    assert p.loc[4, "attack_flops_fraction_pretrain"] == pytest.approx(1e-2)  # seed 0 only
    assert p.loc[4, "n_seeds"] == 1 and p.loc[4, "n_censored"] == 1
    # drop_rounds removes round 4 from the fit instead of averaging the surviving seed
    kept = offense_defense_slopes(j, n_boot=10, censoring="drop_rounds").iloc[0]
    assert kept["n_rounds"] == 3 and kept["n_censored"] == 1
    lines = parity_lines(p.reset_index())
    assert len(lines) == 2
    assert (lines["attack_flops_fraction_pretrain"] / lines["defense_flops_fraction_pretrain"]
            ).nunique() == 1  # slope 1 through the first point


def _evals(checkpoints: list[str | None], rounds: list[int]) -> pd.DataFrame:
    return pd.DataFrame([{**BASE, "run_id": f"ev{i}", "model_size": 10, "seed": 0, "round": r,
                          "checkpoint": c, "pretrain_flops": 1000.0, "reached": True,
                          "attack_flops_fraction_pretrain": 0.01}
                         for i, (c, r) in enumerate(zip(checkpoints, rounds))])


def test_join_on_checkpoint_uses_the_latest_run_and_skips_superseded_rows():
    training = pd.DataFrame([
        {"run_id": "old", "checkpoint": "ck", "round": 2, "defense_flops_cumulative": 100.0,
         "superseded": True, "run_created_at": "2024-01-01", "data_issue": "",
         "family": "f", "task": "t", "model_size": 10, "seed": 0},
        {"run_id": "new", "checkpoint": "ck", "round": 2, "defense_flops_cumulative": 300.0,
         "superseded": False, "run_created_at": "2024-02-01", "data_issue": "",
         "family": "f", "task": "t", "model_size": 10, "seed": 0},
        {"run_id": "other", "checkpoint": "ck2", "round": 2, "defense_flops_cumulative": 7.0,
         "superseded": False, "run_created_at": "2024-02-01", "data_issue": "",
         "family": "f", "task": "t", "model_size": 10, "seed": 0}])
    j = attach_defense_compute(_evals(["ck", "ck2", "ck"], [2, 2, 5]), training)
    j = j.set_index("run_id")
    assert j.loc["ev0", "defense_flops_cumulative"] == 300.0
    assert j.loc["ev0", "training_run_id"] == "new"
    assert j.loc["ev0", "defense_flops_fraction_pretrain"] == pytest.approx(0.3)
    assert j.loc["ev1", "defense_flops_cumulative"] == 7.0
    assert np.isnan(j.loc["ev2", "defense_flops_cumulative"])  # no training row for round 5


def test_join_without_checkpoint_falls_back_to_model_seed_round_and_rejects_ambiguity():
    training = pd.DataFrame([{"run_id": "tr", "family": "f", "task": "t", "model_size": 10,
                              "seed": 0, "round": 2, "defense_flops_cumulative": 50.0}])
    j = attach_defense_compute(_evals([None], [2]), training)
    assert j["defense_flops_cumulative"].iloc[0] == 50.0
    assert defense_compute(training)["training_run_id"].tolist() == ["tr"]
    with pytest.raises(ValueError, match="ambiguous"):
        attach_defense_compute(_evals([None], [2]), pd.concat([training, training]))


@needs_paper_data
def test_paper_join_pairs_every_gcg_trained_pm_checkpoint_with_its_training_log(paper_tables):
    a = paper_tables["attacks"]
    pm = a[a["source_file"] == "tom_013_eval_niki_171_gcg.csv"]
    j = attach_defense_compute(target_compute(pm, 0.05), paper_tables["training"])
    assert len(j) == pm["run_id"].nunique()
    assert j["defense_flops_cumulative"].notna().all()
    assert (j.loc[j["round"] == 0, "defense_flops_cumulative"] == 0).all()
    # one pairing checked against the raw training CSV, independently of the importer
    with open(PAPER / "training" / "niki_171_adv_tr_gcg_pm_small.csv") as f:
        raw = [r for r in csv.DictReader(f)
               if r["model_key"] == "clf_pm_pythia-70m_s-2_adv_tr_gcg_t-2"
               and r["adv_training_round"] == "12"]
    assert len(raw) == 1
    row = j[(j["checkpoint"] == "clf_pm_pythia-70m_s-2_adv_tr_gcg_t-2") & (j["round"] == 12)]
    expected = float(raw[0]["train_total_flops"])
    assert row["defense_flops_cumulative"].iloc[0] == pytest.approx(expected)
    slopes = offense_defense_slopes(j, n_boot=100)
    assert slopes["model_size"].nunique() == 8 and slopes["slope"].notna().all()
