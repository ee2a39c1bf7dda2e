"""Every notebook runs: under nbval (lax) with the ci profile, and under papermill via robnb run."""

import json
import os
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_notebooks_are_stored_clean_with_a_parameters_cell():
    assert NOTEBOOKS
    for nb_path in NOTEBOOKS:
        nb = json.loads(nb_path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), nb_path
        assert any("parameters" in c["metadata"].get("tags", []) for c in code), nb_path


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env.update(ROBNB_PROFILE="ci", ROBNB_OUTPUT_ROOT=str(tmp_path / "out"), ROBNB_SIZE="neox-xs",
               ROBNB_CACHE=str(tmp_path / "cache"), ROBNB_RESULTS=str(tmp_path / "out" / "ci"))
    return env


def test_every_notebook_under_nbval(tmp_path):
    """In file order (stage notebooks first), so later notebooks read earlier ones' results."""
    env = _env(tmp_path)
    env["ROBNB_OUTPUT_ROOT"] = str(tmp_path / "out")
    env["ROBNB_ANALYSIS_OUT"] = str(tmp_path / "analysis")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--nbval-lax", *map(str, NOTEBOOKS)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert (tmp_path / "out" / "ci" / "results" / "evaluations").is_dir()


def test_robnb_run_ci_profile_end_to_end(tmp_path):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "robnb.cli", "run", "--profile", "ci",
           "--set", f"output_root={out}"]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, (f"exit code {proc.returncode}\n" + proc.stdout[-3000:]
                                  + proc.stderr[-3000:])
    for stage in ("pretrain", "finetune"):
        for size in ("neox-xs", "neox-s"):
            executed = out / "ci" / stage / size
            nb = json.loads(next(executed.glob("*.ipynb")).read_text())
            assert any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
    assert "== accuracy" in proc.stdout and "== pretraining" in proc.stdout

    from robnb.results.store import read_table

    ev = read_table(out / "ci", "evaluations")
    assert set(ev["task"]) == {"password_match", "spam"}
    assert set(ev["model"]) == {"neox-xs", "neox-s"}
    runs = read_table(out / "ci", "runs")
    assert {"params_hash", "git_commit", "packages", "device", "wall_s"} <= set(runs.columns)
    assert (runs["status"] == "ok").all()

    # a second run finds every execution finished (content-addressed) and runs nothing
    proc2 = subprocess.run(cmd, cwd=REPO, env=_env(tmp_path), capture_output=True, text=True,
                           timeout=900)
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    assert "nothing to do" in proc2.stdout, proc2.stdout[-2000:]
    runs2 = read_table(out / "ci", "runs")
    assert sorted(runs2["run_id"]) == sorted(runs["run_id"])

    # the stages' own caches: called again directly, pretraining and fine-tuning are reused
    from robnb.params import load_params
    from robnb.stages import finetune_stage

    os.environ["ROBNB_CACHE"] = str(tmp_path / "cache")
    try:
        finetune_stage(load_params("ci", {"output_root": str(out)}), "neox-xs", progress=False)
    finally:
        del os.environ["ROBNB_CACHE"]
    again = read_table(out / "ci", "runs")
    assert set(again[again["stage"] == "finetune"]["status"]) >= {"cached"}
