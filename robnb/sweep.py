"""Sweeps: a profile's notebook executions as a dependency graph, each identified by its content,
run once, recorded durably, resumed after any failure, on local workers or on Ray.

Identity of an execution = hash of its stage and size, the resolved parameters (less where
outputs go and what hardware it asks for), the notebook file, the robnb sources and package
versions, and the identities it depends on. A finished identity is never run again.

State lives in ``<output_root>/<run>/sweep/``: ``state/<identity>.json`` (done or failed, with
error and traceback), ``lock`` (one sweep per run folder at a time), ``owner.json`` (who holds
it), ``last_sweep.json`` (what the latest sweep did), ``kernels.log`` (kernel processes' stderr).
Every file is written atomically, so a sweep killed at any moment leaves whole records or none.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from queue import SimpleQueue
from typing import Any, Callable, Iterator, TextIO

from robnb.checkpoints import file_sha256
from robnb.params import Params
from robnb.results.provenance import now_iso, package_versions, stable_hash
from robnb.results.store import atomic_write_text
from robnb.run import NOTEBOOKS, REPO, STAGES, Execution, Outcome, Stage, stage_parameters

SWEEP_DIR = "sweep"
# Where outputs go and what hardware an execution asks for do not change what it computes.
NOT_IDENTITY = ("name", "description", "output_root", "run_name", "resources")


# ---------------------------------------------------------------- planning

@dataclass(frozen=True)
class Node:
    """One planned notebook execution with its identity, dependencies and resource request."""
    identity: str
    execution: Execution
    deps: tuple[str, ...]
    num_cpus: int
    num_gpus: float
    memory_gb: float | None

    @property
    def name(self) -> str:
        return self.execution.name


@dataclass
class Plan:
    nodes: list[Node]  # dependencies first
    notes: list[str]  # stages left out, and why
    run_dir: Path

    def by_id(self) -> dict[str, Node]:
        return {n.identity: n for n in self.nodes}


def code_version(package: Path = REPO / "robnb") -> str:
    """What code an execution depends on: the robnb sources and the installed package versions."""
    parts = {str(p.relative_to(package)): file_sha256(p) for p in sorted(package.rglob("*.py"))}
    return stable_hash({"robnb": parts, "packages": package_versions(),
                        "python": sys.version.split()[0]}, 16)


def identity_params(params: Params) -> dict[str, Any]:
    return {k: v for k, v in params.as_dict().items() if k not in NOT_IDENTITY}


def plan(params: Params, profile: str, overrides: dict[str, Any], stages: list[str] | None = None,
         registry: tuple[Stage, ...] = STAGES, notebooks: Path = NOTEBOOKS) -> Plan:
    """Expand a profile into executions with dependencies; stages without a notebook yet, or not
    for this model family, are left out with a note (and so are the stages that need them)."""
    by_name = {s.name: s for s in registry}
    unknown = [s for s in stages or [] if s not in by_name]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; known: {', '.join(by_name)}")
    notes: list[str] = []
    why_not: dict[str, str] = {}
    for s in registry:
        if s.families and params.family not in s.families:
            why_not[s.name] = f"not for family '{params.family}'"
        elif not (notebooks / s.notebook).is_file():
            why_not[s.name] = f"notebooks/{s.notebook} does not exist yet"
    changed = True
    while changed:  # a stage needing a left-out stage is left out too
        changed = False
        for s in registry:
            missing = [n for n in s.needs if n in why_not]
            if s.name not in why_not and missing:
                why_not[s.name] = f"needs stage '{missing[0]}' ({why_not[missing[0]]})"
                changed = True
    for name, why in why_not.items():
        notes.append(f"stage {name} skipped: {why}")

    def resolve(names: tuple[str, ...]) -> list[str]:
        """Dependencies among available stages, looking through the left-out ones."""
        out: list[str] = []
        for n in names:
            for m in ([n] if n not in why_not else resolve(by_name[n].after)):
                if m not in out:
                    out.append(m)
        return out

    code = code_version()
    ident = identity_params(params)
    res = params.resources
    models: list[str] = list(getattr(params, "models", params.sizes))  # sizes + extra models
    family_of = getattr(params, "family_of", lambda m: params.family)
    nodes: dict[tuple[str, str | None], Node] = {}
    for s in registry:
        if s.name in why_not:
            continue
        nb = notebooks / s.notebook
        nb_sha = file_sha256(nb)
        sizes = [m for m in models if not s.families or family_of(m) in s.families]
        for size in (sizes if s.per_size else [None]):
            deps = []
            for d in resolve(s.after):
                if by_name[d].per_size:
                    deps += [nodes[k] for k in ([(d, size)] if size else [(d, z) for z in models])
                             if k in nodes]
                else:
                    deps.append(nodes[(d, None)])
            dep_ids = tuple(n.identity for n in deps)
            identity = stable_hash({"stage": s.name, "size": size, "params": ident,
                                    "extra": s.extra(params) if s.extra else None,
                                    "notebook": nb_sha, "code": code, "deps": dep_ids}, 16)
            folder = params.run_dir / s.name / size if size else params.run_dir / s.name
            cpus = res.cpus_for(size)
            ex = Execution(s.name, size, nb.resolve(), (folder / nb.name).resolve(),
                           stage_parameters(s, params, profile, overrides, size), threads=cpus,
                           kernel_log=(params.run_dir / SWEEP_DIR / "kernels.log").resolve())
            nodes[(s.name, size)] = Node(identity, ex, dep_ids, cpus,
                                         res.gpus_for(size) if s.inputs == "profile" else 0.0,
                                         res.memory_gb)
    chosen = list(nodes.values())
    if stages:
        for name in stages:
            if name in why_not:
                notes.append(f"stage {name} was asked for but cannot run: {why_not[name]}")
        keep = {n.identity for n in chosen if n.execution.stage in stages}
        # identities stay those of the full plan; dependencies outside the selection are assumed
        # to be there already (running a stage alone is the user's call)
        chosen = [Node(n.identity, n.execution, tuple(d for d in n.deps if d in keep),
                       n.num_cpus, n.num_gpus, n.memory_gb) for n in chosen if n.identity in keep]
    return Plan(chosen, notes, params.run_dir)


# ---------------------------------------------------------------- durable state

class State:
    """Done and failed executions, one JSON record per identity, each written atomically."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir) / SWEEP_DIR / "state"

    def load(self) -> dict[str, dict]:
        out = {}
        if self.dir.is_dir():
            for f in self.dir.glob("*.json"):
                try:
                    rec = json.loads(f.read_text())
                except (OSError, json.JSONDecodeError):
                    continue  # never produced by us (writes are atomic); treat as not done
                out[rec.get("identity", f.stem)] = rec
        return out

    def write(self, node: Node, outcome: Outcome, attempt: int, executor: str) -> dict:
        ex = node.execution
        rec = {"identity": node.identity, "stage": ex.stage, "size": ex.size,
               "status": outcome.status, "attempt": attempt, "started_at": outcome.started_at,
               "finished_at": now_iso(), "wall_s": round(outcome.wall_s, 3),
               "error": outcome.error, "traceback": outcome.traceback,
               "notebook": str(ex.notebook), "output": str(ex.output), "log": str(ex.log),
               "executor": executor, "host": outcome.host, "warm_kernel": outcome.kernel_reused,
               "cuda_visible_devices": outcome.cuda_visible_devices,
               "parameters": ex.parameters, "deps": list(node.deps)}
        atomic_write_text(self.dir / f"{node.identity}.json", json.dumps(rec, indent=1, default=str))
        return rec


class SweepBusy(RuntimeError):
    """Another sweep holds this run folder."""


@contextmanager
def sweep_lock(run_dir: Path, wait_for_it: bool = True,
               say: Callable[[str], None] = print) -> Iterator[None]:
    """One sweep per run folder: a second one waits (or, with ``wait_for_it=False``, stops)
    instead of running the same executions twice. The OS drops the lock if its holder dies."""
    from filelock import FileLock, Timeout

    folder = Path(run_dir) / SWEEP_DIR
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / "lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        owner_file = folder / "owner.json"
        owner = owner_file.read_text().strip() if owner_file.exists() else "unknown"
        if not wait_for_it:
            raise SweepBusy(f"another sweep is running on {run_dir} ({owner})") from None
        say(f"robnb sweep: waiting for another sweep on {run_dir} to finish ({owner})")
        lock.acquire()
    try:
        atomic_write_text(folder / "owner.json", json.dumps(
            {"pid": os.getpid(), "host": os.uname().nodename, "since": now_iso()}))
        yield
    finally:
        lock.release()


# ---------------------------------------------------------------- executors

class LocalExecutor:
    """Worker threads on a budget of ``cpus`` cores, each thread driving its own Jupyter kernel:
    the kernels are the worker processes (threads only wait on them), and a kernel exits by
    itself if the sweep dies. An execution takes its resources.cpus cores from the budget, as
    on Ray, so a large size given two cores does not share them."""
    name = "local"

    def __init__(self, cpus: int, fresh_kernels: bool = False) -> None:
        self.capacity = max(1, cpus)  # cores; also the most executions at once
        self.fresh = fresh_kernels
        self.queue: SimpleQueue = SimpleQueue()
        self.threads = [threading.Thread(target=self._work, daemon=True, name=f"robnb-worker-{i}")
                        for i in range(self.capacity)]
        for t in self.threads:
            t.start()

    def _work(self) -> None:
        from robnb.run import execute, shutdown_kernels

        try:
            while (item := self.queue.get()) is not None:
                node, fut = item
                if not fut.set_running_or_notify_cancel():
                    continue
                try:
                    fut.set_result(execute(node.execution, self.fresh))
                except BaseException as e:  # noqa: BLE001
                    fut.set_exception(e)
        finally:
            shutdown_kernels()

    def submit(self, node: Node) -> Future:
        fut: Future = Future()
        self.queue.put((node, fut))
        return fut

    def close(self, interrupted: bool = False) -> None:
        for _ in self.threads:
            self.queue.put(None)
        if interrupted:  # the running notebooks end with their kernels; threads are daemons
            from robnb.run import kill_kernels

            kill_kernels()
            return
        for t in self.threads:
            t.join()


class RayExecutor:
    """Each execution is a Ray task asking for its profile's resources (CPUs, GPUs per size,
    memory); Ray places it and sets CUDA_VISIBLE_DEVICES, which the notebook's kernel inherits.
    Workers need robnb installed and the output folder on a shared file system."""
    name = "ray"
    capacity = None  # Ray queues tasks until their resources are free

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 fresh_kernels: bool = False) -> None:
        import ray

        self.ray = ray
        self.owned = not ray.is_initialized()
        if self.owned:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        self.fresh = fresh_kernels
        self.task = ray.remote(max_retries=0)(execute_on_ray)

    def submit(self, node: Node) -> Future:
        opts: dict[str, Any] = {"num_cpus": node.num_cpus, "num_gpus": node.num_gpus}
        if node.memory_gb:
            opts["memory"] = int(node.memory_gb * 2**30)
        return self.task.options(**opts).remote(node.execution, self.fresh).future()

    def close(self, interrupted: bool = False) -> None:
        if self.owned:
            self.ray.shutdown()


def execute_on_ray(ex: Execution, fresh_kernel: bool) -> Outcome:
    """A Ray task: the kernel inherits the GPUs Ray assigned (CUDA_VISIBLE_DEVICES); a task that
    asked for none sees none, rather than every GPU of its node."""
    import ray

    from robnb.run import execute

    env = {} if ray.get_gpu_ids() else {"CUDA_VISIBLE_DEVICES": ""}
    return execute(ex, fresh_kernel, env)


# ---------------------------------------------------------------- progress and report

class Progress:
    """One overall bar with counts on a terminal; one line per finished execution otherwise."""

    def __init__(self, total: int, settled: list[str], stream: TextIO = sys.stdout) -> None:
        """``settled``: the statuses of executions decided before any work (cached, ...)."""
        self.counts = {"done": 0, "running": 0, "failed": 0, "cached": 0, "skipped": 0}
        for status in settled:
            self.counts[status] += 1
        self.total, self.stream = total, stream
        self.bar = None
        if stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=len(settled), desc="sweep", unit="nb",
                            file=sys.stderr, dynamic_ncols=True)
            self._postfix()

    def _postfix(self, refresh: bool = True) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(" ".join(f"{k} {v}" for k, v in self.counts.items()),
                                     refresh=refresh)

    def say(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def start(self, node: Node) -> None:
        self.counts["running"] += 1
        self._postfix()

    def finish(self, node: Node, status: str, wall: float | None = None, note: str = "") -> None:
        if status in ("done", "failed") and wall is not None:
            self.counts["running"] -= 1
        self.counts[status if status in self.counts else "failed"] += 1
        finished = sum(v for k, v in self.counts.items() if k != "running")
        time_s = f" {wall:6.1f}s" if wall is not None else ""
        self.say(f"[{finished}/{self.total}] {status:7s} {node.name}{time_s}"
                 f"{'  ' + note if note else ''}")
        self._postfix(refresh=False)
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class Row:
    node: Node
    status: str  # cached | done | failed | skipped
    wall_s: float | None = None
    note: str = ""


@dataclass
class SweepResult:
    plan: Plan
    rows: list[Row] = field(default_factory=list)
    wall_s: float = 0.0
    nothing_to_do: bool = False
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.rows)

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(r.status in ("cached", "done") for r in self.rows)

    def table(self) -> str:
        """The final summary: one line per execution."""
        head = ("stage", "size", "status", "wall_s", "note")
        lines = [(r.node.execution.stage, r.node.execution.size or "-", r.status,
                  f"{r.wall_s:.1f}" if r.wall_s is not None else "-", r.note[:160])
                 for r in self.rows]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
        fmt = "  ".join(f"{{:{w}}}" for w in widths[:-1]) + "  {}"
        return "\n".join(fmt.format(*row) for row in [head, *lines])

    def counts(self) -> str:
        return ", ".join(f"{self.count(s)} {s}" for s in ("done", "cached", "failed", "skipped"))


# ---------------------------------------------------------------- the sweep

@dataclass
class Ledger:
    """Where every execution of a plan stands in this sweep, and why when it did not run."""
    status: dict[str, str] = field(default_factory=dict)  # identity -> cached|done|failed|skipped
    reason: dict[str, str] = field(default_factory=dict)  # identity -> root cause of a failure
    rows: dict[str, Row] = field(default_factory=dict)

    @classmethod
    def from_records(cls, the_plan: Plan, records: dict[str, dict], force: bool,
                     retry_failed: bool) -> "Ledger":
        """Finished executions are cached; earlier failures stay failed unless retried."""
        led = cls()
        for n in the_plan.nodes:
            rec = records.get(n.identity)
            if force or rec is None:
                continue
            if rec["status"] == "done" and n.execution.output.exists():
                led.set(n, "cached", rec.get("wall_s"), "finished earlier")
            elif rec["status"] == "failed" and not retry_failed:
                led.reason[n.identity] = f"{n.name} failed earlier: {rec.get('error', '')}"
                led.set(n, "failed", rec.get("wall_s"),
                        f"earlier: {rec.get('error', '')} (--retry-failed)")
        return led

    def set(self, n: Node, status: str, wall: float | None = None, note: str = "") -> None:
        self.status[n.identity] = status
        self.rows[n.identity] = Row(n, status, wall, note)

    def blocked(self, n: Node) -> str | None:
        """Why ``n`` cannot run: the root cause of a failed or skipped dependency."""
        bad = [d for d in n.deps if self.status.get(d) in ("failed", "skipped")]
        if not bad:
            return None
        self.reason[n.identity] = self.reason.get(bad[0], bad[0])
        return f"because {self.reason[n.identity]}"

    def ready(self, n: Node) -> bool:
        return all(self.status.get(d) in ("cached", "done") for d in n.deps)

    def record(self, n: Node, outcome: Outcome) -> str:
        note = ""
        if outcome.status == "failed":
            self.reason[n.identity] = f"{n.name} failed: {outcome.error}"
            note = f"{outcome.error} (log: {n.execution.log})"
        self.set(n, outcome.status, outcome.wall_s, note)
        return note


def frozen_profile_path(params: Params, profile: str) -> Path | None:
    """Where a sweep keeps the copy of its profile that its notebooks read (None: the profile is
    not a file, e.g. built in code)."""
    from robnb.params import profile_path

    return (params.run_dir / SWEEP_DIR / "profile.yaml").resolve() \
        if profile_path(profile).is_file() else None


def freeze_profile(params: Params, profile: str, overrides: dict[str, Any],
                   snapshot: Path) -> None:
    """Copy the profile for this sweep's notebooks, so editing ``params/*.yaml`` while a sweep
    runs cannot change what its remaining executions compute (their identities were computed
    from the profile as it was at the start). Written under the sweep lock; checked to load to
    the same parameters."""
    from robnb.params import load_params, profile_path
    from robnb.stages.common import params_hash

    atomic_write_text(snapshot, profile_path(profile).read_text(encoding="utf-8"))
    if params_hash(load_params(snapshot, overrides)) != params_hash(params):
        raise RuntimeError(f"profile {profile_path(profile)} changed while the sweep was "
                           "starting; start it again")


def run_sweep(params: Params, profile: str, overrides: dict[str, Any], *,
              stages: list[str] | None = None, workers: int | None = None, ray: bool = False,
              ray_address: str | None = None, retry_failed: bool = False, force: bool = False,
              fresh_kernels: bool = False, wait_for_lock: bool = True, verbose: bool = False,
              dry_run: bool = False, registry: tuple[Stage, ...] = STAGES,
              notebooks: Path = NOTEBOOKS, stream: TextIO = sys.stdout) -> SweepResult:
    """Plan, skip what is finished, run the rest in dependency order, record every outcome."""
    t0 = time.time()

    def say(line: str) -> None:
        print(line, file=stream, flush=True)

    snapshot = None if dry_run else frozen_profile_path(params, profile)
    the_plan = plan(params, str(snapshot) if snapshot else profile, overrides, stages, registry,
                    notebooks)
    result = SweepResult(the_plan)
    for note in the_plan.notes:
        say(f"robnb sweep: {note}")
    with nullcontext() if dry_run else sweep_lock(params.run_dir, wait_for_lock, say):
        state = State(params.run_dir)
        records = state.load()
        led = Ledger.from_records(the_plan, records, force, retry_failed)
        todo = []
        for n in the_plan.nodes:  # dependants of earlier failures: skipped before any work
            if n.identity not in led.status:
                why = led.blocked(n)
                led.set(n, "skipped", None, why) if why else todo.append(n)
        n_total = len(the_plan.nodes)
        if dry_run:
            for n in todo:
                led.set(n, "to run", None, _describe(n, the_plan))
            result.rows = [led.rows[n.identity] for n in the_plan.nodes]
            result.nothing_to_do = not todo
            say(f"robnb sweep: dry run, nothing executed: {len(todo)} of {n_total} "
                f"executions would run\n{result.table()}")
            return result
        if not todo:
            result.rows = [led.rows[n.identity] for n in the_plan.nodes]
            result.nothing_to_do = True
            result.wall_s = time.time() - t0
            n_failed, n_skipped = result.count("failed"), result.count("skipped")
            say(f"robnb sweep: nothing to do: all {n_total} executions of this plan finished "
                f"earlier ({result.count('cached')} done"
                f"{f', {n_failed} failed' if n_failed else ''}"
                f"{f', {n_skipped} skipped because of them' if n_skipped else ''}"
                f"{'; rerun failures with --retry-failed' if n_failed else ''}"
                f"); checked in {result.wall_s:.1f}s")
            if n_failed:
                say(result.table())
            return result

        if snapshot:
            freeze_profile(params, profile, overrides, snapshot)
        executor = _executor(params, workers, ray, ray_address, fresh_kernels)
        cpus_note = f", {executor.capacity} CPUs" if executor.capacity else ""
        say(f"robnb sweep: profile '{params.name}', {n_total} executions "
            f"({len(todo)} to run, {n_total - len(todo)} finished earlier) -> {params.run_dir} "
            f"[{executor.name} executor{cpus_note}]")
        progress = Progress(n_total, list(led.status.values()), stream)
        attempts = {i: records.get(i, {}).get("attempt", 0) for i in the_plan.by_id()}
        try:
            _schedule(sorted(todo, key=_priority(params, registry)), executor, led, progress,
                      lambda n, outcome: state.write(n, outcome, attempts[n.identity] + 1,
                                                     executor.name), verbose)
        except KeyboardInterrupt:
            result.interrupted = True
            executor.close(interrupted=True)
            progress.close()
            say("robnb sweep: interrupted; finished executions are recorded, run again to resume")
        else:
            executor.close()
            progress.close()
        result.rows = [led.rows[n.identity] for n in the_plan.nodes if n.identity in led.rows]
        result.wall_s = time.time() - t0
        atomic_write_text(params.run_dir / SWEEP_DIR / "last_sweep.json", json.dumps({
            "profile": str(profile), "finished_at": now_iso(), "wall_s": round(result.wall_s, 2),
            "executor": executor.name, "interrupted": result.interrupted,
            "executions": [{"identity": r.node.identity, "name": r.node.name,
                            "status": r.status, "wall_s": r.wall_s, "note": r.note}
                           for r in result.rows]}, indent=1))
    return result


def _schedule(pending: list[Node], executor: LocalExecutor | RayExecutor, led: Ledger,
              progress: Progress, write: Callable[[Node, Outcome], Any], verbose: bool) -> None:
    """Submit what is ready (in priority order, within the executor's CPUs), record each
    outcome durably as it arrives, skip the dependants of failures with the reason."""
    running: dict[Future, Node] = {}
    while pending or running:
        for n in list(pending):
            why = led.blocked(n)
            if why:
                pending.remove(n)
                led.set(n, "skipped", None, why)
                progress.finish(n, "skipped", None, why)
                continue
            if not led.ready(n):
                continue
            if executor.capacity is not None:
                busy = sum(min(r.num_cpus, executor.capacity) for r in running.values())
                if busy + min(n.num_cpus, executor.capacity) > executor.capacity:
                    continue  # a smaller ready execution may still fit
            pending.remove(n)
            if verbose:
                progress.say(f"        start   {n.name}  (log: {n.execution.log})")
            running[executor.submit(n)] = n
            progress.start(n)
        if not running:
            if pending:  # cannot happen with a registry whose `after` points backwards
                raise RuntimeError(f"no execution can start: {[n.name for n in pending]}")
            continue
        finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
        for fut in finished:
            n = running.pop(fut)
            try:
                outcome = fut.result()
            except Exception as e:  # a Ray worker died (out of memory, node lost)
                outcome = Outcome("failed", 0.0, now_iso(), f"{type(e).__name__}: {e}",
                                  "".join(traceback.format_exception(e)))
            write(n, outcome)
            note = led.record(n, outcome)
            progress.finish(n, outcome.status, outcome.wall_s, note)


def _describe(n: Node, the_plan: Plan) -> str:
    names = the_plan.by_id()
    deps = [names[d].name for d in n.deps if d in names]
    after = (", ".join(deps) or "-") if len(deps) <= 3 else f"{len(deps)} executions (every size)"
    gpus = f", {n.num_gpus:g} GPU" if n.num_gpus else ""
    return f"id {n.identity}, {n.num_cpus} CPU{gpus}, after {after}"


def _priority(params: Params, registry: tuple[Stage, ...]) -> Callable[[Node], tuple]:
    """Executions without dependencies first (pretraining), then the rest; largest size first
    within each, then stage order. The largest size's chain is the longest, so it starts first;
    starting every root early makes the smaller chains ready soon, so they fill the cores while
    the largest chain runs instead of queueing behind it (with largest-first alone, quick's
    smallest size waited for every other chain and ran alone at the end)."""
    order = {s.name: i for i, s in enumerate(registry)}
    sizes = {z: i for i, z in enumerate(getattr(params, "models", params.sizes))}

    def key(n: Node) -> tuple:
        size = n.execution.size
        return (size is None, bool(n.deps), -sizes.get(size, 0) if size else 0,
                order[n.execution.stage])
    return key


def _executor(params: Params, workers: int | None, ray: bool, ray_address: str | None,
              fresh_kernels: bool) -> LocalExecutor | RayExecutor:
    cpus = workers or os.cpu_count() or 1
    if ray or ray_address:
        return RayExecutor(ray_address, None if ray_address else cpus, fresh_kernels)
    return LocalExecutor(cpus, fresh_kernels)
