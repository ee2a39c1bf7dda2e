"""Real sweeps of the tiny ci profile through the ``robnb`` command: two sweeps at once on one
folder, a no-op re-run, SIGKILL at a random moment and resume, and a local Ray instance, each
compared with one uninterrupted sweep's results tables.

Every sweep gets its own output root and so its own content cache: equal tables mean the
numbers were recomputed identically, not copied (CPU runs are deterministic with fixed seeds and
fixed thread counts; resources.cpus fixes the threads on every executor).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from robnb.results.compare import comparable, compare_runs

REPO = Path(__file__).resolve().parents[1]
TABLES = ("pretraining", "evaluations", "training", "attacks", "attack_strings", "runs")
# the per-size chain that writes tables; the global analysis notebooks only draw from them
STAGES = ("pretrain", "finetune", "attack")
N = 6  # 3 stages x 2 sizes


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ROBNB_")}


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "robnb.cli", "sweep", "ci", "--workers", "2",
            "--stages", *STAGES, "--set", f"output_root={out}", *extra]


def _sweep(out: Path, *extra: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.time()
    proc = subprocess.run(_cmd(out, *extra), cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=timeout)
    return proc, time.time() - t0


def _tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    return {name: comparable(run_dir, name) for name in TABLES}


def _assert_same_results(run_dir: Path, reference: dict[str, pd.DataFrame]) -> None:
    got = _tables(run_dir)
    for name in TABLES:
        assert len(reference[name]), name
        pd.testing.assert_frame_equal(got[name], reference[name], check_exact=True, obj=name)


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(f.read_text()) for f in (run_dir / "sweep" / "state").glob("*.json")]


def _n_records(run_dir: Path) -> int:
    state = run_dir / "sweep" / "state"
    return len(list(state.glob("*.json"))) if state.is_dir() else 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Two sweeps started at once on one folder: one runs everything uninterrupted (the
    reference for the other tests), the other waits for the lock and then finds nothing to do."""
    out = tmp_path_factory.mktemp("reference")
    t0 = time.time()
    procs = [subprocess.Popen(_cmd(out), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    wall = time.time() - t0
    assert [p.returncode for p in procs] == [0, 0], outs
    print(f"\nci sweep ({N} executions), local executor, 2 workers, with a second sweep "
          f"waiting on the same folder: {wall:.1f}s")
    return {"out": out, "run_dir": out / "ci", "wall": wall, "tables": _tables(out / "ci"),
            "stdouts": [o[0] for o in outs]}


def test_two_sweeps_at_once_on_one_folder_run_everything_once(reference):
    stdouts = reference["stdouts"]
    assert sum("waiting for another sweep" in s for s in stdouts) == 1, stdouts
    assert sum("nothing to do" in s for s in stdouts) == 1, stdouts
    assert any("== sweep" in s and "== accuracy" in s for s in stdouts)
    recs = _records(reference["run_dir"])
    assert sorted((r["stage"], r["size"]) for r in recs) == sorted(
        (s, z) for s in STAGES for z in ("neox-xs", "neox-s"))
    assert all(r["status"] == "done" and r["attempt"] == 1 for r in recs)
    for r in recs:  # each notebook ran exactly once: one start and one end line in its log
        assert Path(r["output"]).is_file()
        assert Path(r["log"]).read_text().count("===== ") == 2


def test_noop_rerun_says_so_and_executes_nothing(reference):
    run_dir = reference["run_dir"]
    watched = [*(run_dir / "sweep" / "state").glob("*.json"), *run_dir.glob("*/*/*.ipynb"),
               *run_dir.glob("results/*/*.parquet")]
    before = {p: p.stat().st_mtime_ns for p in watched}
    proc, wall = _sweep(reference["out"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"nothing to do: all {N} executions of this plan finished earlier" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in watched} == before
    print(f"\nno-op re-run (whole command): {wall:.2f}s")


def test_sigkill_at_a_random_moment_then_resume_gives_the_same_results(reference, tmp_path):
    """Kill after a random number of finished executions plus a random extra moment (so every
    phase gets hit across runs, not mostly the long pretraining), then start it again."""
    rng = random.Random(os.environ.get("ROBNB_TEST_KILL_SEED"))
    after_done, extra = rng.randrange(N), rng.uniform(0.0, 3.0)
    run_dir = tmp_path / "ci"
    proc = subprocess.Popen(_cmd(tmp_path), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.time()
    while proc.poll() is None and _n_records(run_dir) < after_done:
        time.sleep(0.1)
    time.sleep(extra)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = time.time() - t0
    time.sleep(1.5)  # its kernels notice their parent is gone within a second and exit
    done_at_kill = _n_records(run_dir)
    for f in run_dir.glob("results/*/*.parquet"):  # whatever is visible is whole
        pd.read_parquet(f)

    resumed, wall = _sweep(tmp_path)
    print(f"\nkilled after {killed_at:.1f}s ({after_done} done + {extra:.1f}s) with "
          f"{done_at_kill}/{N} executions recorded done; resume took {wall:.1f}s")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"({N - done_at_kill} to run, {done_at_kill} finished earlier)" in resumed.stdout \
        or done_at_kill == N
    _assert_same_results(run_dir, reference["tables"])
    # the same verdict from the command researchers use, on every table the runs wrote
    assert set(compare_runs(run_dir, reference["run_dir"]).values()) <= {
        f"same ({len(reference['tables'][t])} rows)" for t in TABLES}
    cmd = [sys.executable, "-m", "robnb.cli", "compare", str(run_dir), str(reference["run_dir"])]
    same = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert same.returncode == 0 and "identical results" in same.stdout, same.stdout
    victim = next((run_dir / "results" / "evaluations").glob("*.parquet"))
    df = pd.read_parquet(victim)
    df.loc[0, "accuracy"] += 1e-9  # one number off in the last digits
    df.to_parquet(victim, index=False)
    differ = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert differ.returncode == 1 and "evaluations" in differ.stdout, differ.stdout
    assert "results differ" in differ.stdout


def test_local_ray_instance_gives_the_same_results_and_places_gpus(reference, tmp_path):
    """The same sweep as Ray tasks on a local instance that declares one GPU (there is none
    here: ci computes on the CPU either way): neox-s asks for it and its kernels see it as
    CUDA_VISIBLE_DEVICES=0, neox-xs asks for none and sees none; results are identical."""
    ray = pytest.importorskip("ray")
    from robnb.params import load_params
    from robnb.sweep import run_sweep

    overrides = {"output_root": str(tmp_path), "resources.num_gpus": {"neox-s": 1}}
    params = load_params("ci", overrides)
    t0 = time.time()
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        result = run_sweep(params, "ci", overrides, stages=list(STAGES), ray=True)
    finally:
        ray.shutdown()
    wall = time.time() - t0
    assert result.ok and result.count("done") == N
    recs = _records(tmp_path / "ci")
    assert {r["executor"] for r in recs} == {"ray"}
    assert {(r["size"], r["cuda_visible_devices"]) for r in recs} == {("neox-s", "0"),
                                                                     ("neox-xs", "")}
    _assert_same_results(tmp_path / "ci", reference["tables"])
    print(f"\nci sweep on a local Ray instance (2 CPUs, start-up included): {wall:.1f}s "
          f"vs local executor {reference['wall']:.1f}s")
