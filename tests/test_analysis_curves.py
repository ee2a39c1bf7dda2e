"""ASR curves and loading results from suite roots, Parquet files and paper CSVs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis_fixtures import (PAPER, SIZES, attack_flops_per_iteration, needs_paper_data,
                               synthetic_asr, write_synthetic_results)
from robnb.analysis.curves import (asr_at_iteration, asr_curves, round_stage, round_summary,
                                   with_attack_compute)
from robnb.analysis.load import load_results, select


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    root = write_synthetic_results(tmp_path_factory.mktemp("own"))
    return root, load_results([root])


def test_load_suite_root_marks_source_and_fills_optional_columns(own):
    _, t = own
    a = t["attacks"]
    assert (a["source"] == "own").all() and (a["defense"] == "unspecified").all()
    assert a["checkpoint"].isna().all() and len(t["training"]) == 2 * 2 * 4
    assert len(t["runs"]) == 4


def test_load_explicit_parquet_files_routes_them_by_table_folder(own):
    root, t = own
    files = sorted((root / "results" / "attacks").glob("*.parquet"))[:1]
    part = load_results(files)
    assert len(part["attacks"]) == len(t["attacks"]) // 4 and part["training"].empty
    with pytest.raises(FileNotFoundError):
        load_results([root / "nope"])


def test_attack_compute_per_example_by_hand(own):
    _, t = own
    df = with_attack_compute(t["attacks"])
    row = df[(df["model_size"] == SIZES[1]) & (df["iteration"] == 4)].iloc[0]
    # iteration 0 logs no FLOPs: the mean over iterations >= 1 is the constant per-iteration cost
    assert row["mean_flops_per_iteration"] == attack_flops_per_iteration(SIZES[1])
    assert row["attack_flops_per_example"] == pytest.approx(
        4 * attack_flops_per_iteration(SIZES[1]) / 20)
    assert row["attack_flops_fraction_pretrain"] == pytest.approx(
        4 * attack_flops_per_iteration(SIZES[1]) / 20 / (6.0 * SIZES[1] * 1e9))


def test_curves_mean_and_spread_over_seeds(own):
    _, t = own
    c = asr_curves(t["attacks"])
    r = c[(c["model_size"] == SIZES[0]) & (c["round"] == 1) & (c["iteration"] == 3)].iloc[0]
    seeds = [synthetic_asr(SIZES[0], s, 1, 3) for s in (0, 1)]
    assert r["asr_mean"] == pytest.approx(np.mean(seeds))
    assert r["asr_std"] == pytest.approx(np.std(seeds, ddof=1))
    assert (r["asr_min"], r["asr_max"], r["n_seeds"]) == (min(seeds), max(seeds), 2)


def test_repeated_evaluations_of_one_seed_count_once():
    base = {"source": "own", "family": "f", "task": "t", "attack": "gcg", "placement": "suffix",
            "defense": "d", "model_size": 1, "round": 0, "iteration": 1, "attack_flops": 1.0,
            "n_examples": 1, "pretrain_flops": 1.0}
    df = pd.DataFrame([{**base, "run_id": "a", "seed": 0, "asr": 0.0},
                       {**base, "run_id": "b", "seed": 0, "asr": 0.4},
                       {**base, "run_id": "c", "seed": 1, "asr": 0.8}])
    c = asr_curves(df).iloc[0]
    assert c["asr_mean"] == pytest.approx((0.2 + 0.8) / 2) and c["n_seeds"] == 2


def test_selection_helpers(own):
    _, t = own
    a = t["attacks"]
    last = asr_at_iteration(a, "last")
    assert (last["iteration"] == 8).all() and len(last) == a["run_id"].nunique()
    stage = round_stage(a)
    assert set(a.loc[stage == "first", "round"]) == {0}
    assert set(a.loc[stage == "last", "round"]) == {3}
    s = round_summary(last, ["asr"])
    assert len(s) == 2 * 4 and (s["n_seeds"] == 2).all()
    assert len(select(a, {"seed": "1", "task": None})) == len(a) // 2
    with pytest.raises(KeyError):
        select(a, {"colour": "red"})


@needs_paper_data
def test_mixed_sources_keep_their_labels(own):
    root, _ = own
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = load_results([root, PAPER / "evaluation" / "ian_106_gcg_pythia_imdb.csv"])
    assert set(t["attacks"]["source"]) == {"own", "paper"}
    assert t["attacks"].loc[t["attacks"]["source"] == "paper", "run_id"].nunique() == 50
