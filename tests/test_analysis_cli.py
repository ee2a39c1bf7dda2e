"""The command-line contract: robnb analyze asr | target-compute | offense-defense, import."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from analysis_fixtures import (PAPER, SIZES, attack_flops_per_iteration, defense_flops,
                               needs_paper_data, synthetic_asr, write_synthetic_results)
from robnb.cli import main

ASR_CONTRACT = {"family", "model_size", "task", "attack", "round", "iteration", "seed", "asr"}
TARGET_CONTRACT = {"model_size", "seed", "round", "interpolated_iteration",
                   "attack_flops_fraction_pretrain"}
OD_CONTRACT = {"model_size", "round", "defense_flops_fraction_pretrain",
               "attack_flops_fraction_pretrain"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_synthetic_results(tmp_path_factory.mktemp("own"))


def _json(capsys, argv: list[str]):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_asr_records(root, capsys):
    recs = _json(capsys, ["analyze", "asr", "--results", str(root), "--iteration", "3", "--json"])
    assert len(recs) == 2 * 2 * 4 and all(ASR_CONTRACT <= set(r) for r in recs)
    r = next(r for r in recs if r["model_size"] == SIZES[1] and r["seed"] == 1 and r["round"] == 2)
    assert r["asr"] == pytest.approx(synthetic_asr(SIZES[1], 1, 2, 3))


def test_target_compute_by_hand(root, capsys):
    recs = _json(capsys, ["analyze", "target-compute", "--results", str(root), "--target-asr",
                          "5", "--json"])
    assert len(recs) == 16 and all(TARGET_CONTRACT <= set(r) for r in recs)
    r = next(r for r in recs if r["model_size"] == SIZES[0] and r["seed"] == 0 and r["round"] == 0)
    # ASR 0.2 at iteration 1, 0 at iteration 0: 5% is reached at 0.25 iterations
    assert r["interpolated_iteration"] == pytest.approx(0.05 / synthetic_asr(SIZES[0], 0, 0, 1))
    per_example = 0.25 * attack_flops_per_iteration(SIZES[0]) / 20
    pretrain = 6.0 * SIZES[0] * 1e9
    assert r["attack_flops_fraction_pretrain"] == pytest.approx(per_example / pretrain)


def test_offense_defense_records_and_slopes(root, capsys):
    out = _json(capsys, ["analyze", "offense-defense", "--results", str(root), "--target-asr",
                         "5", "--n-boot", "50", "--json"])
    recs, slopes = out["records"], out["slopes"]
    assert all(OD_CONTRACT <= set(r) for r in recs)
    r = next(r for r in recs if r["model_size"] == SIZES[1] and r["round"] == 2)
    assert r["defense_flops_fraction_pretrain"] == pytest.approx(
        defense_flops(SIZES[1], 2) / (6.0 * SIZES[1] * 1e9))
    assert {s["model_size"] for s in slopes} == set(SIZES)
    assert all({"slope", "slope_low", "slope_high"} <= set(s) for s in slopes)


def test_errors_are_clear(root, capsys):
    with pytest.raises(SystemExit, match="no attack records"):
        main(["analyze", "asr", "--results", str(root), "--task", "imdb"])
    with pytest.raises(SystemExit, match="percentage"):
        main(["analyze", "target-compute", "--results", str(root), "--target-asr", "0"])


def test_console_script_runs(root):
    out = subprocess.run([sys.executable, "-m", "robnb.cli", "analyze", "asr", "--results",
                          str(root), "--iteration", "0", "--json"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert {r["asr"] for r in json.loads(out.stdout)} == {0.0}


@needs_paper_data
def test_paper_csvs_directly_and_after_import_agree(tmp_path, capsys):
    src = tmp_path / "paper"
    src.mkdir()
    for sub, name in (("evaluation", "tom_013_eval_niki_171_gcg.csv"),
                      ("training", "niki_171_adv_tr_gcg_pm_small.csv")):
        shutil.copy(PAPER / sub / name, src / name)
    args = ["--target-asr", "5", "--json"]
    direct = _json(capsys, ["analyze", "target-compute", "--results", str(src), *args])
    assert main(["import-paper-data", str(src), "--out", str(tmp_path / "imported")]) == 0
    printed = capsys.readouterr()
    assert "attacks: 7667 rows" in printed.out and "warning (PaperDataWarning)" in printed.err
    imported = _json(capsys, ["analyze", "target-compute", "--results",
                              str(tmp_path / "imported"), *args])
    assert imported == direct and len(direct) == 697
    from robnb.analysis.load import load_results

    assert set(load_results([tmp_path / "imported"])["attacks"]["source"]) == {"paper"}
    od = _json(capsys, ["analyze", "offense-defense", "--results", str(src), "--n-boot", "50",
                        *args])
    assert len({s["model_size"] for s in od["slopes"]}) == 8
    assert all(r["task"] == "password_match" for r in od["records"])
