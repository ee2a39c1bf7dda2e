"""The importer of the paper's CSVs: mapping into the tidy schema, and defects surfaced."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis_fixtures import PAPER, needs_paper_data, paper_tables  # noqa: F401
from robnb.flops import PYTHIA_PRETRAIN_TOKENS
from robnb.results.paper_import import (PaperAccountingWarning, PaperDataWarning,
                                        import_robust_llm)
from robnb.results.schema import TABLES, conform

EVAL_COLS = ["asr", "iteration", "model_size", "seed_idx", "adv_training_round", "model_idx",
             "flops_per_iteration", "adversarial_eval_n_correct_pre_attack", "dataset_n_val",
             "model_family", "model_name_or_path", "model_revision", "run_name", "run_id",
             "run_state", "run_created_at", "num_params"]
TRAIN_COLS = ["train_total_flops", "adv_training_round", "run_name", "model_name_or_path",
              "training_save_name", "training_seed", "run_id", "run_state", "run_created_at",
              "num_params", "model_idx", "seed_idx", "model_key", "pretrain_compute"]


def _write(path: Path, cols: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        w.writerows(rows)
    return path


def _eval_row(size: int, it: int, asr: float, run: str, flops: float, seed: int = 0,
              rnd: int = 2, key: str = "clf_pm_pythia-14m_s-0_adv_tr_gcg_t-0") -> list:
    return [asr, it, size, seed, rnd, 0, flops, 100, 200, "pythia",
            f"AlignmentResearch/robust_llm_{key}", f"adv-training-round-{rnd}", "ev", run,
            "finished", "2024-09-01T00:00:00Z", size]


def _train_row(key: str, rnd: int, flops: float, run: str, created: str, n: int = 7629056,
               pretrain: float | None = None,
               base: str = "pythia-14m_clf_pm_v-ian-080_s-0") -> list:
    pre = pretrain if pretrain is not None else 6 * n * PYTHIA_PRETRAIN_TOKENS
    return [flops, rnd, "tr", f"AlignmentResearch/robust_llm_{base}", key, 0, run, "finished",
            created, n, 0, 0, key, f"{int(pre)}"]


def test_synthetic_csvs_map_to_the_schema_and_flag_their_defects(tmp_path):
    ev = _write(tmp_path / "tom_999_eval_niki_999_gcg.csv", EVAL_COLS, [
        _eval_row(7629056, 0, 0.0, "r1", 1e9), _eval_row(7629056, 1, 0.25, "r1", 1e9),
        _eval_row(7629056, 1, 0.25, "r1", 1e9),  # an exact duplicate row
    ])
    key = "clf_pm_pythia-14m_s-0_adv_tr_gcg_t-0"
    tr = _write(tmp_path / "niki_999_adv_tr_gcg_pm_small.csv", TRAIN_COLS, [
        _train_row(key, 1, 10.0, "t1", "2024-08-01T00:00:00Z"),
        _train_row(key, 2, 20.0, "t1", "2024-08-01T00:00:00Z"),
        _train_row(key, 3, 5.0, "t2", "2024-08-02T00:00:00Z"),  # counter reset after a resume
        _train_row(key, 2, 25.0, "t2", "2024-08-02T00:00:00Z"),  # re-logged by a later run
    ])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = import_robust_llm([ev, tr])
    msgs = [(w.category, str(w.message)) for w in caught]
    assert any(c is PaperDataWarning and "1 rows are exact duplicates" in m for c, m in msgs)
    assert any(c is PaperAccountingWarning and "cumulative defense FLOPs" in m for c, m in msgs)
    assert any("re-logged by a later run" in m for _, m in msgs)
    a = t["attacks"]
    assert len(a) == 2 and set(a.columns) >= set(TABLES["attacks"])
    row = a[a["iteration"] == 1].iloc[0]
    assert (row["task"], row["attack"], row["placement"], row["defense"]) == (
        "password_match", "gcg", "suffix", "adv_gcg")
    assert row["model"] == "pythia-14m" and row["checkpoint"] == key and row["round"] == 2
    assert row["n_flipped"] == 25 and row["n_examples"] == 200
    assert row["pretrain_flops"] == 6.0 * 7629056 * PYTHIA_PRETRAIN_TOKENS
    assert row["run_id"] == "robust-llm-2024/r1"
    tr_t = t["training"].set_index(["run_id", "round"])
    assert bool(tr_t.loc[("robust-llm-2024/t1", 2), "superseded"])
    assert not bool(tr_t.loc[("robust-llm-2024/t2", 2), "superseded"])
    assert tr_t.loc[("robust-llm-2024/t2", 3), "data_issue"] == "cumulative_flops_decrease"
    assert tr_t.loc[("robust-llm-2024/t1", 1), "data_issue"] == ""
    runs = t["runs"]
    assert set(runs["run_id"]) == set(a["run_id"]) | set(t["training"]["run_id"])
    assert set(runs["source_file"]) == {ev.name, tr.name}


def test_swapped_qwen_pretraining_constants_are_reported(tmp_path):
    # the authors' value for the 3B is 6·N(7B, with unembedding)·10.5T: ~25.9T implied tokens
    n3b = 3085942784
    tr = _write(tmp_path / "oskar_999_adv_tr_qwen25_gcg_spam.csv", TRAIN_COLS, [
        _train_row("oskar_clf_spam_Qwen2.5-3B_s-0_adv_tr_gcg_t-0", 1, 1e17, "q1",
                   "2024-11-01T00:00:00Z", n=n3b, pretrain=6 * 7615616512 * 10.5e12,
                   base="Qwen2.5-3B_clf_spam_v-oskar-022c_s-0")])
    with pytest.warns(PaperAccountingWarning, match=r"Qwen2.5-3B.*2.59e\+13 tokens.*swapped"):
        t = import_robust_llm(tr)
    row = t["training"].iloc[0]
    assert row["family"] == "qwen2.5" and row["model"] == "Qwen2.5-3B"
    assert row["pretrain_flops"] == pytest.approx(6 * n3b * 10.5e12)
    assert row["pretrain_flops_authors"] == pytest.approx(6 * 7615616512 * 10.5e12)


def test_unknown_csv_is_skipped_with_a_warning(tmp_path):
    other = _write(tmp_path / "notes.csv", ["a", "b"], [[1, 2]])
    ev = _write(tmp_path / "ian_999_gcg_pythia_imdb.csv", EVAL_COLS,
                [_eval_row(7629056, 0, 0.0, "r1", 1e9, rnd=0, key="pythia-14m_clf_imdb_v-1_s-0")])
    with pytest.warns(PaperDataWarning, match="notes.csv"):
        t = import_robust_llm([other, ev])
    assert t["attacks"]["defense"].tolist() == ["finetuned"]
    assert t["training"].empty
    with pytest.raises(FileNotFoundError):
        import_robust_llm(tmp_path / "missing")


@needs_paper_data
def test_paper_import_covers_every_file_and_conforms(paper_tables):
    a, tr, runs = paper_tables["attacks"], paper_tables["training"], paper_tables["runs"]
    for name, df in (("attacks", a), ("training", tr), ("runs", runs)):
        conform(name, df)  # raises if a required column is missing or mistyped
        assert df["run_id"].notna().all()
    assert set(a["source_file"]) == {p.name for p in (PAPER / "evaluation").glob("*.csv")}
    assert set(tr["source_file"]) == {p.name for p in (PAPER / "training").glob("*.csv")}
    assert set(runs["run_id"]) == set(a["run_id"]) | set(tr["run_id"])
    assert set(a["task"]) == {"harmless", "helpful", "imdb", "password_match", "word_length",
                              "enron_spam", "strongreject"}
    # ASR times correct-before-attack is a whole number of flipped examples
    k = a["asr"] * a["n_correct_before"].astype(float)
    assert np.allclose(k, k.round(), atol=1e-6)
    pythia = a[a["family"] == "pythia"]
    assert np.allclose(pythia["pretrain_flops"],
                       6.0 * pythia["model_size"].astype(float) * PYTHIA_PRETRAIN_TOKENS)


@needs_paper_data
def test_paper_row_counts_match_raw_csvs_minus_exact_duplicates(paper_tables):
    for name in ("oskar_019a_infix_eval_adv_tr_gcg_imdb_small.csv", "ian_106_gcg_pythia_imdb.csv"):
        with open(PAPER / "evaluation" / name) as f:
            rows = [tuple(r) for r in csv.reader(f)][1:]
        n_unique = len(set(rows))
        got = paper_tables["attacks"]["source_file"].eq(name).sum()
        assert got == n_unique
    assert paper_tables["attacks"]["source_file"].eq(
        "oskar_019a_infix_eval_adv_tr_gcg_imdb_small.csv").sum() < 5135  # duplicates existed


@needs_paper_data
def test_paper_defects_are_warned_about_and_flagged():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = import_robust_llm(PAPER)
    acc = [str(w.message) for w in caught if w.category is PaperAccountingWarning]
    assert any("Qwen2.5-3B" in m and "swapped" in m for m in acc)
    assert any("Qwen2.5-7B" in m and "swapped" in m for m in acc)
    # 12B attack FLOPs: under-counted for IMDB, PM and Spam (the authors' fudge files), not WL
    undercount = {m.split(":")[0] for m in acc if "under-counted" in m}
    assert undercount == {"ian_106_gcg_pythia_imdb.csv", "ian_107_gcg_pythia_pm.csv",
                          "ian_109_gcg_pythia_spam.csv"}
    a = t["attacks"]
    flagged = a[a["data_issue"].str.contains("attack_flops_undercount")]
    assert set(flagged["model"]) == {"pythia-12b"}
    assert set(flagged["source_file"]) == undercount
    # the large RandomToken-trained models carry the 14m/31m pretraining compute in the CSV
    assert any("pythia-6.9b" in m and "pythia-14m" in m for m in acc)
    assert any("PaperDataWarning" == w.category.__name__ and "exact duplicates" in str(w.message)
               for w in caught)
    tr = t["training"]
    assert tr["superseded"].any() and tr["data_issue"].str.contains("cumulative").any()
    qwen = tr[tr["model"] == "Qwen2.5-3B"].iloc[0]
    assert qwen["pretrain_flops"] == pytest.approx(6 * qwen["model_size"] * 10.5e12)
    assert qwen["pretrain_flops_authors"] / (6 * qwen["model_size"]) == pytest.approx(25.9e12,
                                                                                     rel=0.01)
    assert isinstance(t["runs"], pd.DataFrame) and (t["runs"]["source"] == "paper").all()
