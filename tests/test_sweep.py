"""Sweep planning, identities, failure handling and the lock, on tiny notebooks (no torch).

The notebooks here are real ones executed by papermill in real kernels; they only append a line
to a file so the tests can count what actually ran.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from robnb.params import load_params
from robnb.run import STAGES, Stage
from robnb.sweep import SweepBusy, State, plan, run_sweep, sweep_lock

REPO = Path(__file__).resolve().parents[1]


def _params(tmp_path: Path, **over):
    overrides = {"output_root": str(tmp_path / "out"), **over}
    return load_params("ci", overrides), overrides


# ---------------------------------------------------------------- plan and identity

def test_plan_today_runs_what_has_a_notebook_and_says_what_it_left_out(tmp_path):
    params, overrides = _params(tmp_path)
    p = plan(params, "ci", overrides)
    have = {s.name for s in STAGES if (REPO / "notebooks" / s.notebook).exists()}
    planned = {n.execution.stage for n in p.nodes}
    assert {"pretrain", "finetune"} <= planned <= have
    for s in STAGES:
        if s.name not in planned:
            assert any(note.startswith(f"stage {s.name} skipped") for note in p.notes), p.notes
    by_name = {n.name: n for n in p.nodes}
    assert by_name["finetune/neox-xs"].deps == (by_name["pretrain/neox-xs"].identity,)
    assert by_name["pretrain/neox-xs"].deps == ()


def test_identity_ignores_where_outputs_go_but_not_what_is_computed(tmp_path):
    params, overrides = _params(tmp_path)
    ids = {n.name: n.identity for n in plan(params, "ci", overrides).nodes}
    assert ids == {n.name: n.identity for n in plan(params, "ci", overrides).nodes}  # stable
    moved, o2 = _params(tmp_path / "elsewhere", **{"resources.num_gpus": {"neox-s": 0.5}})
    assert ids == {n.name: n.identity for n in plan(moved, "ci", o2).nodes}
    changed, o3 = _params(tmp_path, **{"finetune.lr": 5e-4})
    ids3 = {n.name: n.identity for n in plan(changed, "ci", o3).nodes}
    assert all(ids3[k] != ids[k] for k in ids)


def test_identity_follows_the_notebook_file_and_its_upstream(tmp_path):
    params, overrides = _params(tmp_path)
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    for s in STAGES[:2]:
        (nbs / s.notebook).write_bytes((REPO / "notebooks" / s.notebook).read_bytes())
    before = {n.name: n.identity for n in plan(params, "ci", overrides, notebooks=nbs).nodes}
    nb = nbformat.read(nbs / STAGES[0].notebook, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("an edit"))
    nbformat.write(nb, nbs / STAGES[0].notebook)
    after = {n.name: n.identity for n in plan(params, "ci", overrides, notebooks=nbs).nodes}
    assert all(after[k] != before[k] for k in before)  # pretrain edited; finetune is downstream


def test_selected_stages_keep_their_identity_and_drop_outside_dependencies(tmp_path):
    params, overrides = _params(tmp_path)
    full = {n.name: n for n in plan(params, "ci", overrides).nodes}
    only = plan(params, "ci", overrides, stages=["finetune"]).nodes
    assert [n.name for n in only] == ["finetune/neox-xs", "finetune/neox-s"]
    assert all(n.identity == full[n.name].identity and n.deps == () for n in only)
    with pytest.raises(ValueError, match="unknown stage"):
        plan(params, "ci", overrides, stages=["pretrian"])


def test_global_stage_waits_for_every_size_and_missing_needs_are_notes(tmp_path):
    nbs = _tiny_notebooks(tmp_path)
    registry = (Stage("a", "a.ipynb"), Stage("b", "b.ipynb", after=("a", "gone")),
                Stage("gone", "missing.ipynb"),
                Stage("g", "g.ipynb", per_size=False, after=("b",)),
                Stage("h", "g.ipynb", per_size=False, after=("b",), needs=("gone",)))
    params, overrides = _params(tmp_path)
    p = plan(params, "ci", overrides, registry=registry, notebooks=nbs)
    by = {n.name: n for n in p.nodes}
    assert set(by) == {"a/neox-xs", "a/neox-s", "b/neox-xs", "b/neox-s", "g"}
    assert set(by["g"].deps) == {by["b/neox-xs"].identity, by["b/neox-s"].identity}
    assert any("stage h skipped: needs stage 'gone'" in n for n in p.notes)


def test_pretrain_is_not_planned_for_hub_families(tmp_path):
    params = load_params("paper-pythia", {"output_root": str(tmp_path)})
    p = plan(params, "paper-pythia", {})
    assert "pretrain" not in {n.execution.stage for n in p.nodes}
    assert any("pretrain skipped: not for family 'pythia'" in n for n in p.notes)


def test_resources_reach_the_plan(tmp_path):
    params, overrides = _params(tmp_path, **{"resources.num_gpus": {"neox-s": 1},
                                             "resources.default_num_gpus": 0.25,
                                             "resources.cpus": 2, "resources.memory_gb": 3})
    by = {n.name: n for n in plan(params, "ci", overrides).nodes}
    assert by["finetune/neox-s"].num_gpus == 1 and by["finetune/neox-xs"].num_gpus == 0.25
    assert by["pretrain/neox-xs"].num_cpus == 2 and by["pretrain/neox-xs"].execution.threads == 2
    assert by["pretrain/neox-xs"].memory_gb == 3
    more, o2 = _params(tmp_path, **{"resources.cpus_per_size": {"neox-s": 2}})
    by = {n.name: n for n in plan(more, "ci", o2).nodes}
    assert by["finetune/neox-s"].num_cpus == 2 and by["finetune/neox-s"].execution.threads == 2
    assert by["finetune/neox-xs"].num_cpus == 1


# ---------------------------------------------------------------- failures, retry, lock

TINY = """\
import os, pathlib
out = pathlib.Path(overrides["output_root"])
import time
t0 = time.time()
time.sleep(float((out / "SLEEP").read_text()) if (out / "SLEEP").exists() else 0)
with open(out / "ran.txt", "a") as f:
    f.write(f"{STAGE} {size}\\n")
with open(out / "spans.txt", "a") as f:
    f.write(f"{STAGE} {size} {t0} {time.time()}\\n")
if STAGE == "a" and size == "neox-s" and (out / "FAIL").exists():
    raise RuntimeError("boom: told to fail")
if STAGE == "a" and size == "neox-s" and (out / "DIE").exists():
    os.kill(os.getpid(), 9)  # as the out-of-memory killer would
"""


def _tiny_notebooks(tmp_path: Path) -> Path:
    nbs = tmp_path / "nbs"
    nbs.mkdir(exist_ok=True)
    for stage in ("a", "b", "g"):
        nb = nbformat.v4.new_notebook()
        params = nbformat.v4.new_code_cell('profile = "ci"\nsize = None\noverrides = {}\n'
                                           'progress = True')
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, nbformat.v4.new_code_cell(f"STAGE = {stage!r}\n" + TINY)]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nbformat.write(nb, nbs / f"{stage}.ipynb")
    return nbs


TINY_REGISTRY = (Stage("a", "a.ipynb"), Stage("b", "b.ipynb", after=("a",)),
                 Stage("g", "g.ipynb", per_size=False, after=("b",)))


def _ran(params) -> list[str]:
    f = Path(params.output_root) / "ran.txt"
    return sorted(f.read_text().splitlines()) if f.exists() else []


def test_failure_is_recorded_dependants_skipped_and_retry_reruns_only_those(tmp_path):
    nbs = _tiny_notebooks(tmp_path)
    params, overrides = _params(tmp_path)
    out = Path(params.output_root)
    out.mkdir(parents=True)
    (out / "FAIL").touch()
    kw = dict(registry=TINY_REGISTRY, notebooks=nbs, workers=2)

    first = run_sweep(params, "ci", overrides, **kw)
    status = {r.node.name: r.status for r in first.rows}
    assert status == {"a/neox-xs": "done", "a/neox-s": "failed", "b/neox-xs": "done",
                      "b/neox-s": "skipped", "g": "skipped"}
    assert not first.ok
    rows = {r.node.name: r for r in first.rows}
    assert "a/neox-s failed: RuntimeError: boom" in rows["b/neox-s"].note
    assert "a/neox-s failed" in rows["g"].note
    failed = next(r for r in State(params.run_dir).load().values() if r["status"] == "failed")
    assert failed["error"] == "RuntimeError: boom: told to fail"
    assert 'raise RuntimeError("boom: told to fail")' in failed["traceback"]
    assert Path(failed["output"]).with_suffix(".failed.ipynb").exists()
    assert not Path(failed["output"]).exists()  # no executed copy that looks complete
    assert "boom: told to fail" in Path(failed["log"]).read_text()
    assert _ran(params) == ["a neox-s", "a neox-xs", "b neox-xs"]

    # a plain re-run does not retry the failure and runs nothing
    again = run_sweep(params, "ci", overrides, **kw)
    assert again.nothing_to_do and not again.ok
    assert {r.node.name: r.status for r in again.rows} == {
        **status, "a/neox-xs": "cached", "b/neox-xs": "cached"}
    assert _ran(params) == ["a neox-s", "a neox-xs", "b neox-xs"]

    (out / "FAIL").unlink()
    retry = run_sweep(params, "ci", overrides, retry_failed=True, **kw)
    assert retry.ok
    assert {r.node.name: r.status for r in retry.rows} == {
        "a/neox-xs": "cached", "a/neox-s": "done", "b/neox-xs": "cached", "b/neox-s": "done",
        "g": "done"}
    assert _ran(params) == sorted(["a neox-s", "a neox-xs", "b neox-xs",
                                   "a neox-s", "b neox-s", "g None"])
    records = {(r["stage"], r["size"]): r for r in State(params.run_dir).load().values()}
    assert records[("a", "neox-s")]["attempt"] == 2 and records[("a", "neox-xs")]["attempt"] == 1
    assert not Path(failed["output"]).with_suffix(".failed.ipynb").exists()

    noop = run_sweep(params, "ci", overrides, **kw)
    assert noop.nothing_to_do and noop.ok
    assert len(_ran(params)) == 6


def test_a_second_sweep_on_a_locked_folder_stops_or_waits(tmp_path):
    params, overrides = _params(tmp_path)
    with sweep_lock(params.run_dir):
        with pytest.raises(SweepBusy, match="another sweep is running"):
            with sweep_lock(params.run_dir, wait_for_it=False):
                pass
        proc = subprocess.run([sys.executable, "-m", "robnb.cli", "sweep", "ci", "--no-wait",
                               "--set", f"output_root={params.output_root}"],
                              capture_output=True, text=True, cwd=REPO, timeout=120)
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert "another sweep is running" in proc.stderr
        assert json.loads((params.run_dir / "sweep" / "owner.json").read_text())["pid"] > 0


def test_extra_models_get_the_per_size_stages_they_can_run(tmp_path):
    params, overrides = _params(tmp_path, extra_models=["smollm2-135m"])
    if not hasattr(params, "models"):
        pytest.skip("this checkout has no extra models")
    by = {n.name: n for n in plan(params, "ci", overrides).nodes}
    assert "finetune/smollm2-135m" in by and "pretrain/smollm2-135m" not in by
    assert by["finetune/smollm2-135m"].deps == ()



def test_local_executor_shares_cores_as_each_size_asks(tmp_path):
    """On 2 cores, neox-m asks for both and runs alone; neox-xs and neox-s (one each) together."""
    nbs = _tiny_notebooks(tmp_path)
    params, overrides = _params(tmp_path, sizes=["neox-xs", "neox-s", "neox-m"],
                                **{"resources.cpus_per_size": {"neox-m": 2}})
    out = Path(params.output_root)
    out.mkdir(parents=True)
    (out / "SLEEP").write_text("1.5")
    result = run_sweep(params, "ci", overrides, registry=TINY_REGISTRY[:1], notebooks=nbs,
                       workers=2)
    assert result.ok
    spans = {}
    for line in (out / "spans.txt").read_text().splitlines():
        _, size, t0, t1 = line.split()
        spans[size] = (float(t0), float(t1))

    def overlap(a: str, b: str) -> bool:
        return spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]

    assert overlap("neox-xs", "neox-s")
    assert not overlap("neox-m", "neox-xs") and not overlap("neox-m", "neox-s")


def test_a_kernel_killed_mid_notebook_is_a_recorded_failure_not_a_hang(tmp_path):
    nbs = _tiny_notebooks(tmp_path)
    params, overrides = _params(tmp_path)
    out = Path(params.output_root)
    out.mkdir(parents=True)
    (out / "DIE").touch()
    result = run_sweep(params, "ci", overrides, registry=TINY_REGISTRY, notebooks=nbs, workers=1)
    rows = {r.node.name: r for r in result.rows}
    assert rows["a/neox-s"].status == "failed"
    assert "DeadKernelError" in rows["a/neox-s"].note and "exit code -9" in rows["a/neox-s"].note
    assert rows["b/neox-s"].status == "skipped" and rows["b/neox-xs"].status == "done"


def test_editing_the_profile_during_a_sweep_does_not_change_what_it_computes(tmp_path):
    """The notebooks read the sweep's frozen copy of the profile, not params/*.yaml."""
    import shutil
    import threading
    import time

    profile = tmp_path / "mine.yaml"
    shutil.copy(REPO / "params" / "ci.yaml", profile)
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('profile = "ci"\nsize = None\noverrides = {}\n'
                                     'progress = True')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(
        "import pathlib, time\nfrom robnb.params import load_params\n"
        "out = pathlib.Path(overrides['output_root'])\n"
        "(out / f'started-{size}').touch()\n"
        "while size == 'neox-xs' and not (out / 'edited').exists(): time.sleep(0.1)\n"
        "with open(out / 'lr.txt', 'a') as f:\n"
        "    f.write(f'{profile} {load_params(profile, overrides).finetune.lr}\\n')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, nbs / "a.ipynb")
    overrides = {"output_root": str(tmp_path / "out")}
    params = load_params(profile, overrides)
    out = Path(params.output_root)
    out.mkdir(parents=True)
    kw = dict(registry=(Stage("a", "a.ipynb"),), notebooks=nbs, workers=1)
    sweep = threading.Thread(target=run_sweep, args=(params, str(profile), overrides), kwargs=kw)
    sweep.start()
    t0 = time.time()
    while not (out / "started-neox-xs").exists() and time.time() - t0 < 120:
        time.sleep(0.1)
    profile.write_text(profile.read_text().replace("lr: 1.0e-3", "lr: 7.0e-3", 1))
    (out / "edited").touch()
    sweep.join(timeout=300)
    lines = (out / "lr.txt").read_text().split()
    frozen = params.run_dir / "sweep" / "profile.yaml"
    assert lines == [str(frozen.resolve()), "0.001"] * 2  # both sizes, the original value
    assert load_params(profile).finetune.lr == 0.007  # the edit itself is there for next time


def test_roots_run_first_then_largest_first(tmp_path):
    """Sequentially: every pretraining-like root (largest first) before any dependant, so the
    small sizes' chains are ready early and fill idle cores while the largest chain runs."""
    nbs = _tiny_notebooks(tmp_path)
    params, overrides = _params(tmp_path, sizes=["neox-xs", "neox-s", "neox-m"])
    Path(params.output_root).mkdir(parents=True)
    assert run_sweep(params, "ci", overrides, registry=TINY_REGISTRY, notebooks=nbs,
                     workers=1).ok
    order = (Path(params.output_root) / "ran.txt").read_text().splitlines()
    assert order == ["a neox-m", "a neox-s", "a neox-xs", "b neox-m", "b neox-s", "b neox-xs",
                     "g None"]
