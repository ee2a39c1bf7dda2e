"""Adversarial training for real on the tiny ci profile: the tables it writes, a run SIGKILLed in
the middle of rounds and started again (identical results to an uninterrupted run), and damaged
or mismatched checkpoints refused with a message naming the file or the parameter.

Every run of the stage is its own process with one thread, so the uninterrupted reference and
the killed-and-resumed run compute under the same conditions. The pool takes every attacked
example (``pool_only_successful: false``) so pool sampling runs even though the tiny models
are rarely broken by the ci attack.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from robnb.checkpoints import CorruptCheckpoint, verify
from robnb.defenses.adversarial_training import (
    CheckpointMismatch,
    final_checkpoint,
    round_dir,
    training_dir,
)
from robnb.params import load_params
from robnb.results.store import read_table

REPO = Path(__file__).resolve().parents[1]
SIZE = "neox-xs"
OVERRIDES = {"adversarial_training.rounds": 3, "adversarial_training.n_attack_per_round": 16,
             "adversarial_training.pool_only_successful": False,
             "adversarial_training.max_train": 24,
             "adversarial_training.ramp_start_iterations": 2,
             "adversarial_training.ramp_end_iterations": 3,
             "adversarial_training.evaluate_after_rounds": [0, 2]}
TABLES = ("training", "evaluations", "attacks", "attack_strings", "runs")
# provenance, not results
IGNORE = {"wall_s", "started_at", "git_commit", "packages", "device", "params_hash", "status",
          "error"}
SCRIPT = """
import json, sys
import torch
torch.set_num_threads(1)
from robnb.params import load_params
from robnb.stages.adversarial_training import adversarial_training_stage
params = load_params("ci", json.loads(sys.argv[1]))
adversarial_training_stage(params, sys.argv[2], progress=True)
"""


def _overrides(out: Path, **extra) -> dict:
    return {"output_root": str(out), **OVERRIDES, **extra}


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROBNB_")}
    env.update(ROBNB_CACHE=str(cache), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _cmd(out: Path, **extra) -> list[str]:
    return [sys.executable, "-c", SCRIPT, json.dumps(_overrides(out, **extra)), SIZE]


def _run(out: Path, cache: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(_cmd(out), cwd=REPO, env=_env(cache), capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _copy_base(base: dict, dest: Path) -> Path:
    out = dest / "out"
    shutil.copytree(base["out"] / "ci" / "finetune", out / "ci" / "finetune")
    return out


def _tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    res = {}
    for name in TABLES:
        if name == "attack_strings":
            files = sorted((run_dir / "results" / name).glob("*.parquet"))
            df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        else:
            df = read_table(run_dir, name)
        df = df[df["run_id"].astype(str).str.startswith("advtrain")]
        df = df[sorted(c for c in df.columns if c not in IGNORE)]
        for c in df.columns:
            if df[c].map(lambda v: hasattr(v, "__len__") and not isinstance(v, str)).any():
                df[c] = df[c].map(lambda v: json.dumps([int(x) for x in v]))
        res[name] = df.sort_values(list(df.columns)).reset_index(drop=True)
    return res


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Pretrained and fine-tuned ci models of one size (the adversarial-training inputs)."""
    root = tmp_path_factory.mktemp("base")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROBNB_CACHE", str(root / "cache"))
        from robnb.stages import finetune_stage, pretrain_stage

        params = load_params("ci", {"output_root": str(root / "out")})
        pretrain_stage(params, SIZE, progress=False)
        finetune_stage(params, SIZE, progress=False)
    return {"out": root / "out", "cache": root / "cache"}


@pytest.fixture(scope="module")
def reference(base, tmp_path_factory):
    """One uninterrupted run."""
    out = _copy_base(base, tmp_path_factory.mktemp("reference"))
    t0 = time.time()
    proc = _run(out, base["cache"])
    print(f"\nuninterrupted ci adversarial training of {SIZE}: {time.time() - t0:.1f}s")
    return {"out": out, "tables": _tables(out / "ci"), "stdout": proc.stdout}


def test_tiny_run_writes_rounds_flops_and_evaluations(reference, base):
    t = reference["tables"]
    params = load_params("ci", _overrides(reference["out"]))
    tr = t["training"]
    assert set(tr["task"]) == {"password_match", "spam"}
    for task, g in tr.groupby("task"):
        g = g.sort_values("round")
        assert g["round"].tolist() == [0, 1, 2, 3]
        assert g["attack_iterations"].tolist() == [0, 2, 3, 3]  # ramp 2 -> 3 (2.5 rounds up)
        rounds = g[g["round"] > 0]
        assert (rounds["train_flops"] > 0).all() and (rounds["adversarial_generation_flops"] > 0).all()
        per_round = (rounds["train_flops"] + rounds["adversarial_generation_flops"]
                     + rounds["pool_scoring_flops"])
        assert per_round.cumsum().tolist() == pytest.approx(
            rounds["defense_flops_cumulative"].tolist())
        # clean fine-tuning compute is recorded beside, not counted as defense
        ft_meta = verify(params.run_dir / "finetune" / SIZE / task / "seed0")
        assert (g["finetune_flops"] == ft_meta["finetune_flops"]).all()
        assert (rounds["n_adversarial_train"] <= int(0.8 * 24)).all()
        assert (rounds["n_adversarial_train"] + rounds["n_clean_train"] == 24).all()
        assert rounds["n_pool"].is_monotonic_increasing and rounds["n_pool"].iloc[-1] > 0
        assert (rounds["n_adversarial_train"] > 0).any()
        assert (g["defense"] == "adv_gcg").all()
        assert (g["checkpoint"] == f"{SIZE}/{task}/seed0/adv_gcg").all()
    ev = t["evaluations"]
    assert sorted(ev.groupby("task")["round"].apply(sorted).iloc[0]) == [0, 1, 2, 3]
    assert {"accuracy", "precision", "recall", "f1"} <= set(ev.columns)
    # round 0 is the fine-tuned model: the same clean accuracy the finetune stage logged
    ft = read_table(base["out"] / "ci", "evaluations").set_index("task")["accuracy"]
    for task, acc in ev[ev["round"] == 0].set_index("task")["accuracy"].items():
        assert acc == ft[task]
    at = t["attacks"]
    assert set(at["round"]) == {0, 2, 3}  # evaluate_after_rounds [0, 2] and the last
    assert set(zip(at["attack"], at["placement"])) == {("gcg", "suffix"), ("gcg", "infix90"),
                                                        ("random_token", "suffix")}
    assert set(at.loc[at["transfer"], "placement"]) | set(at.loc[at["transfer"], "attack"]) \
        >= {"infix90", "random_token"}
    assert (at["defense"] == "adv_gcg").all() and at["checkpoint"].str.endswith("/adv_gcg").all()
    assert at.groupby("run_id")["round"].nunique().max() == 1  # one run id per round
    s = t["attack_strings"]
    assert {"evaluation", "training"} == set(s["purpose"])
    runs = read_table(params.run_dir, "runs")
    assert set(at["run_id"]) | set(tr["run_id"]) <= set(runs["run_id"])
    # the last round's model is the one another stage loads
    model_dir = final_checkpoint(params, SIZE, "spam", 0)
    assert (model_dir / "model.safetensors").is_file()
    base_dir = training_dir(params, SIZE, "spam", 0)
    # keep policy "evaluated": rounds 0, 2 (evaluated) and 3 (last) stay, round 1 is gone
    assert sorted(p.name for p in base_dir.iterdir()) == ["round-0000", "round-0002",
                                                          "round-0003"]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    end = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"run ended before {path} appeared:\n{out[-2000:]}{err[-2000:]}")
        if time.time() > end:
            proc.kill()
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.01)


def test_sigkill_mid_round_then_resume_gives_identical_results(reference, base, tmp_path):
    out = _copy_base(base, tmp_path)
    params = load_params("ci", _overrides(out))
    folder = training_dir(params, SIZE, "password_match", 0)
    proc = subprocess.Popen(_cmd(out), cwd=REPO, env=_env(base["cache"]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(round_dir(folder, 1), proc, timeout=400)
    os.kill(proc.pid, signal.SIGKILL)  # round 1 is complete: this lands in round 2
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    names = sorted(p.name for p in folder.iterdir())
    assert "round-0001" in names and "round-0002" not in names, names
    assert not (params.run_dir / "results").exists()  # nothing written yet
    _run(out, base["cache"])
    got = _tables(out / "ci")
    for name in TABLES:
        assert len(reference["tables"][name]), name
        pd.testing.assert_frame_equal(got[name], reference["tables"][name], check_exact=True,
                                      obj=name)
    runs = read_table(out / "ci", "runs")
    status = {t: r.status for r in runs[runs["stage"] == "adversarial_training"].itertuples()
              for t in ("password_match", "spam") if f"-{t}-" in r.run_id}
    assert status == {"password_match": "resumed", "spam": "ok"}
    # nothing half-written is left behind
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_complete_run_started_again_reuses_every_round(reference, base, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(reference["out"], out)
    shutil.rmtree(out / "ci" / "results")
    monkeypatch.setenv("ROBNB_CACHE", str(base["cache"]))
    _, run = _stage(out)
    run()
    runs = read_table(out / "ci", "runs")
    assert set(runs.loc[runs["stage"] == "adversarial_training", "status"]) == {"cached"}
    got = _tables(out / "ci")
    for name in TABLES:
        pd.testing.assert_frame_equal(got[name], reference["tables"][name], check_exact=True,
                                      obj=name)


@pytest.fixture
def damaged(reference, base, tmp_path, monkeypatch):
    """A copy of the reference run to damage, with the stage run in this process."""
    out = tmp_path / "out"
    shutil.copytree(reference["out"], out)
    monkeypatch.setenv("ROBNB_CACHE", str(base["cache"]))
    return out


def _stage(out: Path, **extra):
    from robnb.stages.adversarial_training import adversarial_training_stage

    params = load_params("ci", _overrides(out, **extra))
    return params, lambda: adversarial_training_stage(params, SIZE, progress=False)


@pytest.mark.parametrize("victim", ["optimizer.pt", "pool.json", "model/model.safetensors"])
def test_truncated_checkpoint_file_is_refused(damaged, victim):
    params, run = _stage(damaged)
    last = round_dir(training_dir(params, SIZE, "password_match", 0), 3)
    f = last / victim
    f.write_bytes(f.read_bytes()[: max(1, f.stat().st_size // 2)])
    with pytest.raises(CorruptCheckpoint) as err:
        run()
    msg = str(err.value)
    assert victim in msg and "corrupt" in msg and str(last) in msg and "refused" in msg
    with pytest.raises(CorruptCheckpoint, match=victim.replace(".", r"\.")):
        final_checkpoint(params, SIZE, "password_match", 0)


@pytest.mark.parametrize("change, named", [
    ({"adversarial_training.max_train": 40}, "adversarial_training.max_train: checkpoint has 24"),
    ({"adversarial_training.lr": 5e-4}, "adversarial_training.lr"),
    ({"adversarial_training.attack.top_k": 4}, "adversarial_training.attack.top_k"),
    ({"adversarial_training.rounds": 4}, "rounds: checkpoint has 3, parameters give 4"),
])
def test_checkpoint_of_other_parameters_is_refused(damaged, change, named):
    params, run = _stage(damaged, **change)
    with pytest.raises(CheckpointMismatch) as err:
        run()
    msg = str(err.value)
    assert named in msg and "MANIFEST.json" in msg and "Refusing" in msg
    # and the model after the last round is not handed out either
    with pytest.raises((CheckpointMismatch, FileNotFoundError)):
        final_checkpoint(params, SIZE, "password_match", 0)


@pytest.mark.parametrize("back_to", [0, 2])
def test_resume_from_an_earlier_round_checkpoint(reference, base, tmp_path, monkeypatch, back_to):
    """Round 0 holds no model (the fine-tuned one is reloaded); round 2 was kept as evaluated.
    Losing the later rounds and starting again recomputes them identically."""
    import torch

    out = tmp_path / "out"
    shutil.copytree(reference["out"], out)
    shutil.rmtree(out / "ci" / "results")
    monkeypatch.setenv("ROBNB_CACHE", str(base["cache"]))
    params, run = _stage(out)
    for task in ("password_match", "spam"):
        folder = training_dir(params, SIZE, task, 0)
        for r in range(back_to + 1, 4):
            if round_dir(folder, r).exists():
                shutil.rmtree(round_dir(folder, r))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the reference's process
    try:
        run()
    finally:
        torch.set_num_threads(threads)
    got = _tables(out / "ci")
    for name in TABLES:
        pd.testing.assert_frame_equal(got[name], reference["tables"][name], check_exact=True,
                                      obj=name)
