"""Stage 06 end to end on the ci profile (one size): pretrain, fine-tune, then every condition on
clean, OOD and attacked sets; records, predictions audit, analysis, and the notebook itself.

The adversarial condition uses the real adversarial-training stage when it exists; until then a
stand-in ``final_checkpoint`` (the fine-tuned model trained a few more steps on examples carrying
attack-like strings) stands in for it, so the production code path (``final_checkpoint``) is the
one exercised.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import types
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from robnb.params import load_params

SIZE = "neox-xs"
REPO = Path(__file__).resolve().parent.parent


def _real_adversarial_training():
    try:
        stage = importlib.import_module("robnb.stages.adversarial_training")
        importlib.import_module("robnb.defenses.adversarial_training").final_checkpoint
        return stage.adversarial_training_stage
    except (ImportError, AttributeError):
        return None


def _install_stand_in(mp: pytest.MonkeyPatch, root: Path) -> None:
    """A ``robnb.defenses.adversarial_training`` whose ``final_checkpoint`` builds a tiny
    verified checkpoint from the fine-tuned model."""
    from robnb.checkpoints import build_atomically
    from robnb.models.registry import load_sequence_classifier
    from robnb.stages.finetune import finetune_dir
    from robnb.tasks import load_task
    from robnb.train import train_epochs

    def final_checkpoint(params, size, task, seed):
        folder = root / "stand-in-adv" / size / task / f"seed{seed}"
        if folder.exists():
            return folder

        def build(tmp: Path) -> dict:
            torch.manual_seed(seed)
            model, tok = load_sequence_classifier(finetune_dir(params, size, task, seed))
            ex = load_task(task, "train", 32, seed + 7)
            ex = [replace(e, modifiable=e.modifiable + "@&@&") for e in ex]
            train_epochs(model, tok, ex, params.finetune, seed, epochs=1)
            model.save_pretrained(str(tmp), safe_serialization=True)
            tok.save_pretrained(str(tmp))
            return {"stand_in": True, "round": 1}

        return build_atomically(folder, build)

    module = types.ModuleType("robnb.defenses.adversarial_training")
    module.final_checkpoint = final_checkpoint
    mp.setitem(sys.modules, "robnb.defenses.adversarial_training", module)


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("adv-ood")
    mp = pytest.MonkeyPatch()
    mp.setenv("ROBNB_CACHE", str(root / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from robnb.stages.finetune import finetune_stage
        from robnb.stages.pretrain import pretrain_stage

        params = load_params("ci", {"output_root": str(root / "out")})
        pretrain_stage(params, SIZE, progress=False)
        finetune_stage(params, SIZE, progress=False)
        real = _real_adversarial_training()
        if real is not None:
            real(params, SIZE, progress=False)
        else:
            _install_stand_in(mp, root)
        from robnb.stages.adv_ood import adv_ood_stage

        rows = adv_ood_stage(params, SIZE, progress=False)
        yield params, rows, root, real is not None
    finally:
        torch.set_num_threads(threads)
        mp.undo()


def test_stage_writes_every_condition_and_set(ci_run):
    params, rows, _, _ = ci_run
    assert set(rows["condition"]) == {"baseline", "adversarial", "ood_method"}
    assert set(rows["task"]) == {"password_match"}  # ci's spam has no offline OOD set
    for cond, g in rows.groupby("condition"):
        assert sorted(g["split"]) == ["adversarial:gcg-suffix", "ood:password_match_random",
                                      "validation"], cond
    assert (rows["stage"] == "adv_ood").all() and (rows["n_examples"] > 0).all()
    clean = rows[rows["split"] == "validation"]
    assert (clean["pdr"] == 0).all() and (clean["n_examples"] == clean["n_candidates"]).all()
    adv = rows[rows["split"] == "adversarial:gcg-suffix"]
    assert (adv["n_examples"] == params.ood.n_adversarial).all()
    assert adv["asr"].between(0, 1).all() and (adv["n_attacked"] <= params.ood.n_adversarial).all()
    for _, r in rows.iterrows():  # PDR is relative to the clean reference of the same examples
        assert r["pdr"] == pytest.approx(1 - r["accuracy"] / r["clean_accuracy"])
    ood = rows[rows["split"] == "ood:password_match_random"]
    assert ood["shift"].str.contains("random").all()
    assert (ood["clean_accuracy"].to_numpy() == clean.set_index("condition").loc[
        ood["condition"], "accuracy"].to_numpy()).all()


def test_records_predictions_and_provenance_on_disk(ci_run):
    from robnb.analysis.adv_ood import check_predictions, load_results
    from robnb.results.store import read_table

    params, rows, _, _ = ci_run
    ev, preds = load_results([params.run_dir])
    assert len(ev) == len(rows)
    audit = check_predictions(ev, preds)
    assert int(audit["n_examples"].sum()) == len(preds) == int(rows["n_examples"].sum())
    runs = read_table(params.run_dir, "runs")
    mine = runs[runs["stage"] == "adv_ood"]
    assert len(mine) == 3 and (mine["status"] == "ok").all()
    res = Path(params.run_dir) / "results"
    strings = pd.read_parquet(res / "adv_ood_strings" / f"adv-ood-{SIZE}.parquet")
    attacks = pd.read_parquet(res / "adv_ood_attacks" / f"adv-ood-{SIZE}.parquet")
    assert set(attacks["condition"]) == {"baseline", "adversarial", "ood_method"}
    assert set(strings["condition"]) <= set(attacks["condition"])
    # the attack stage's own table is left alone
    assert not (res / "attacks").exists() or "condition" not in read_table(
        params.run_dir, "attacks").columns


def test_ood_method_continues_the_fine_tuned_model_matched_to_adversarial_training(ci_run):
    from robnb.defenses.adversarial_training import rounds_for
    from robnb.defenses.ood_method import ood_method_checkpoint
    from robnb.models.registry import load_sequence_classifier
    from robnb.stages.finetune import finetune_dir

    params, _, _, _ = ci_run
    at = params.adversarial_training
    assert params.ood.method.start == "fine_tuned"
    folder, meta, reused = ood_method_checkpoint(params, SIZE, "password_match", 0)
    assert reused and (folder / "MANIFEST.json").is_file()
    assert meta["n_train"] == rounds_for(params, SIZE) * at.max_train  # matched examples
    assert meta["settings"]["lr"] == at.lr and meta["steps"] >= 1
    assert 0 < meta["n_augmented"] < meta["n_train"]
    # it started from the fine-tuned classifier: the head moved a little, not from scratch
    tuned, _ = load_sequence_classifier(finetune_dir(params, SIZE, "password_match", 0))
    method, _ = load_sequence_classifier(folder)
    a, b = tuned.score.weight.detach(), method.score.weight.detach()
    assert 0 < float((a - b).norm()) < 0.5 * float(a.norm())


def test_ood_method_from_the_base_model_uses_the_baselines_examples(ci_run):
    from robnb.defenses.ood_method import ood_method_checkpoint

    params, _, root, _ = ci_run
    base = load_params("ci", {"output_root": str(root / "out-base"), "ood.method.start": "base"})
    folder, meta, reused = ood_method_checkpoint(base, SIZE, "password_match", 0)
    assert not reused and meta["n_train"] == base.finetune.n_train
    assert 0 < meta["n_augmented"] < meta["n_train"]
    assert meta["settings"]["start"] == "base"


def test_ood_method_refuses_a_missing_fine_tuned_model(ci_run):
    from robnb.defenses.ood_method import ood_method_checkpoint

    params, _, root, _ = ci_run
    other = load_params("ci", {"output_root": str(root / "out-empty")})
    with pytest.raises(FileNotFoundError, match="run finetune first"):
        ood_method_checkpoint(other, SIZE, "password_match", 0)


def test_analysis_of_the_stage_output(ci_run):
    from robnb.analysis.adv_ood import correlation_by_size, metric_table, robustness_points

    _, rows, _, _ = ci_run
    table = metric_table(rows)
    assert len(table) == len(rows) and (table["n_seeds"] == 1).all()
    pts = robustness_points(rows)
    assert len(pts) == 3  # 1 adversarial set × 1 OOD set × 3 conditions
    corr = correlation_by_size(pts, n_boot=100)
    assert list(corr["n_points"]) == [3]


def test_a_second_run_with_the_same_inputs_reuses_the_results(ci_run):
    from robnb.results.store import read_table
    from robnb.stages.adv_ood import adv_ood_stage

    params, rows, _, _ = ci_run
    again = adv_ood_stage(params, SIZE, progress=False)
    pd.testing.assert_frame_equal(again.reset_index(drop=True)[rows.columns],
                                  read_table(params.run_dir, "evaluations").query(
                                      "stage == 'adv_ood'").reset_index(drop=True)[rows.columns],
                                  check_dtype=False)
    assert len(again) == len(rows)
    runs = read_table(params.run_dir, "runs")
    assert (runs.loc[runs["stage"] == "adv_ood", "status"] == "cached").all()


def test_a_missing_adversarial_model_is_skipped_and_recorded(ci_run, monkeypatch):
    from robnb.stages import adv_ood
    from robnb.results.store import read_table

    params, _, root, _ = ci_run
    params = load_params("ci", {"output_root": str(root / "out-skip"), "ood.n_examples": 4,
                                "ood.conditions": ["adversarial", "baseline"]})
    src = Path(load_params("ci", {"output_root": str(root / "out")}).run_dir) / "finetune"
    shutil.copytree(src, Path(params.run_dir) / "finetune")

    def missing(*a, **k):
        raise FileNotFoundError("not trained for this task")

    module = types.ModuleType("robnb.defenses.adversarial_training")
    module.final_checkpoint = missing
    monkeypatch.setitem(sys.modules, "robnb.defenses.adversarial_training", module)
    monkeypatch.setenv("ROBNB_CACHE", str(root / "cache"))
    rows = adv_ood.adv_ood_stage(params, SIZE, progress=False)
    assert set(rows["condition"]) == {"baseline"}
    runs = read_table(params.run_dir, "runs")
    skipped = runs[runs["status"] == "skipped"]
    assert len(skipped) == 1 and "not trained for this task" in skipped["error"].iloc[0]


def test_notebook_runs_under_papermill(ci_run):
    import papermill as pm

    params, _, root, real = ci_run
    overrides = {"output_root": str(Path(params.output_root))}
    if not real:  # the stand-in lives in this process only
        overrides["ood.conditions"] = ["baseline", "ood_method"]
    out = root / "06.ipynb"
    env_cache = str(root / "cache")
    import os

    old = os.environ.get("ROBNB_CACHE")
    os.environ["ROBNB_CACHE"] = env_cache
    try:
        pm.execute_notebook(str(REPO / "notebooks" / "06_adversarial_vs_ood.ipynb"), str(out),
                            parameters={"profile": "ci", "size": SIZE, "overrides": overrides,
                                        "progress": False},
                            kernel_name="python3", progress_bar=False, cwd=str(REPO),
                            execution_timeout=600)
    finally:
        if old is None:
            os.environ.pop("ROBNB_CACHE", None)
        else:
            os.environ["ROBNB_CACHE"] = old
    import json

    nb = json.loads(out.read_text())
    text = json.dumps([c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"])
    assert "all metrics reproduced" in text
    assert text.count("vegaEmbed") >= 3  # metric table, scatter, correlation vs size
