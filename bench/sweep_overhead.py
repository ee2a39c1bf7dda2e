"""Benchmark: where a sweep's time goes besides the stages' own work.

Measured here, each on this machine as it is (other load included; medians of --repeat):
  1. imports in a fresh Python process (what every new kernel pays before any work),
  2. starting a Jupyter kernel and stopping it,
  3. one notebook execution whose heavy work is already cached (pretrain, finetune of the ci
     profile), three ways: the stage function called directly in this process (the work left),
     papermill with a fresh kernel (the old runner), papermill in a reused warm kernel (the sweep),
  4. with --sweeps: whole ci sweeps from empty output folders (real work): fresh kernels on one
     worker, warm kernels on one worker, warm kernels on two workers,
  5. with --run-dir DIR: per execution of a finished sweep (e.g. outputs/quick), its wall time
     against the time its stage recorded for its own work; the difference is notebook overhead.

    python bench/sweep_overhead.py                       # 1-3 (about a minute)
    python bench/sweep_overhead.py --sweeps              # + 4 (a few minutes)
    python bench/sweep_overhead.py --run-dir outputs/quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMPORTS = ["pass", "import ipykernel.kernelapp", "import torch", "import torch, transformers",
           "import robnb.stages", "import robnb.viz.training", "import papermill"]


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_imports(repeat: int) -> None:
    print("\n1. fresh-process import time (median s)")
    for stmt in IMPORTS:
        t = median_time(lambda: subprocess.run([sys.executable, "-c", stmt], check=True), repeat)
        print(f"   {stmt:32s} {t:6.2f}")


def bench_kernel(repeat: int) -> None:
    from jupyter_client.manager import KernelManager

    def start_stop() -> None:
        km = KernelManager(kernel_name="python3")
        km.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
        kc.stop_channels()
        km.shutdown_kernel(now=True)

    print(f"\n2. kernel start + ready + stop (median s): {median_time(start_stop, repeat):.2f}")


def bench_execution(repeat: int, root: Path) -> None:
    os.environ["ROBNB_CACHE"] = str(root / "cache")
    from robnb.params import load_params
    from robnb.run import STAGES, Execution, execute, shutdown_kernels
    from robnb.stages import finetune_stage, pretrain_stage

    overrides = {"output_root": str(root), "sizes": ["neox-xs"]}
    params = load_params("ci", overrides)
    funcs = {"pretrain": pretrain_stage, "finetune": finetune_stage}
    for stage in ("pretrain", "finetune"):  # build the caches once; not timed
        funcs[stage](params, "neox-xs", progress=False)
    print("\n3. one cached ci execution (median s): direct call | papermill fresh kernel | "
          "papermill warm kernel")
    for stage in ("pretrain", "finetune"):
        nb = ROOT / "notebooks" / next(s.notebook for s in STAGES if s.name == stage)
        ex = Execution(stage, "neox-xs", nb, root / stage / nb.name,
                       {"profile": "ci", "size": "neox-xs", "overrides": overrides,
                        "progress": False})
        direct = median_time(lambda: funcs[stage](params, "neox-xs", progress=False), repeat)
        fresh = median_time(lambda: _ok(execute(ex, fresh_kernel=True)), repeat)
        _ok(execute(ex))  # warm the kernel up: the first execution in it pays like a fresh one
        warm = median_time(lambda: _ok(execute(ex)), repeat)
        shutdown_kernels()
        print(f"   {stage:9s} {direct:6.2f} | {fresh:6.2f} | {warm:6.2f}   "
              f"(overhead: fresh {fresh - direct:+.2f}, warm {warm - direct:+.2f})")


def _ok(outcome) -> None:
    if outcome.status != "done":
        raise RuntimeError(outcome.error)


def bench_sweeps(root: Path) -> None:
    print("\n4. whole ci sweeps from an empty folder (s)")
    for label, extra in (("fresh kernels, 1 worker", ["--fresh-kernels", "--workers", "1"]),
                         ("warm kernels, 1 worker", ["--workers", "1"]),
                         ("warm kernels, 2 workers", ["--workers", "2"])):
        out = Path(tempfile.mkdtemp(dir=root))
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROBNB_")}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "robnb.cli", "sweep", "ci", *extra,
                        "--set", f"output_root={out}"], check=True, env=env, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
        print(f"   {label:24s} {time.perf_counter() - t0:6.1f}")


def breakdown(run_dir: Path) -> None:
    """Execution wall time against the stage's own recorded work, per execution."""
    from robnb.results.store import read_table

    runs = read_table(run_dir, "runs")
    states = [json.loads(f.read_text()) for f in (run_dir / "sweep" / "state").glob("*.json")]
    print(f"\n5. per execution of {run_dir} (s): wall | stage work | overhead | warm kernel")
    total_wall = total_work = 0.0
    for r in sorted(states, key=lambda r: r["started_at"]):
        prefix = f"{r['stage']}-{r['size']}-" if r["size"] else f"{r['stage']}-"
        work = runs[runs["run_id"].str.startswith(prefix)]["wall_s"].sum()
        total_wall += r["wall_s"]
        total_work += work
        print(f"   {r['stage']:20s} {str(r['size']):8s} {r['wall_s']:8.1f} | {work:8.1f} | "
              f"{r['wall_s'] - work:6.1f} | {r.get('warm_kernel')}")
    print(f"   {'total':29s} {total_wall:8.1f} | {total_work:8.1f} | {total_wall - total_work:6.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sweeps", action="store_true")
    ap.add_argument("--run-dir", type=Path)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    if args.run_dir:
        breakdown(args.run_dir)
        return
    with tempfile.TemporaryDirectory() as tmp:
        bench_imports(args.repeat)
        bench_kernel(args.repeat)
        bench_execution(args.repeat, Path(tmp))
        if args.sweeps:
            bench_sweeps(Path(tmp))


if __name__ == "__main__":
    main()
