"""Execute one notebook of a sweep: the stage registry, papermill in a reused kernel, the
executed copy written atomically with its log beside it, and the tables printed after a run.

Planning, caching and scheduling of many executions live in :mod:`robnb.sweep`; this module is
what a worker (a local thread or a Ray task) does with one execution.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

if TYPE_CHECKING:  # pandas is not needed to plan or to say "nothing to do"
    import pandas as pd

    from robnb.params import Params

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"


# ---------------------------------------------------------------- the stage registry

@dataclass(frozen=True)
class Stage:
    """One notebook of the pipeline. Adding a stage to the sweep is one entry in ``STAGES``.

    ``after``: stages this one runs after (the same size when both are per size, every size when
    this one is global); missing or unselected ones are looked through to their own ``after``.
    ``needs``: stages whose results this one cannot do without; if one of them has no notebook
    yet (or does not apply to the family), this stage is skipped with a note instead of failing.
    ``inputs``: "profile" notebooks get {profile, size, overrides, progress}; "results" notebooks
    (analysis) get {results: [run_dir], out_dir, source: "own"} plus ``extra(params)``.
    """
    name: str
    notebook: str
    per_size: bool = True
    after: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    families: tuple[str, ...] | None = None
    inputs: Literal["profile", "results"] = "profile"
    out_dir: str | None = None  # "results" notebooks write here (run dir relative; default: name)
    extra: Callable[["Params"], dict[str, Any]] | None = None


def _analysis_iteration(params: "Params") -> dict[str, Any]:
    """The ASR-vs-size figure is read at the longest attack the profile ran."""
    its = [a.iterations for a in params.attack.attacks]
    return {"iteration": max(its)} if its else {}


PER_SIZE = ("pretrain", "finetune", "attack", "adversarial_training", "adversarial_vs_ood")
STAGES: tuple[Stage, ...] = (
    Stage("pretrain", "00_pretrain.ipynb", families=("local-neox",)),
    Stage("finetune", "01_finetune.ipynb", after=("pretrain",)),
    Stage("attack", "02_attack.ipynb", after=("finetune",), needs=("finetune",)),
    Stage("adversarial_training", "03_adversarial_training.ipynb", after=("finetune",),
          needs=("finetune",)),
    # without adversarially trained models, 06 records that condition as skipped
    Stage("adversarial_vs_ood", "06_adversarial_vs_ood.ipynb", after=("adversarial_training",),
          needs=("finetune",)),
    Stage("scaling_analysis", "04_scaling_analysis.ipynb", per_size=False, after=PER_SIZE,
          needs=("attack",), inputs="results", extra=_analysis_iteration),
    Stage("explorer", "05_offense_defense_explorer.ipynb", per_size=False, after=PER_SIZE,
          needs=("attack",), inputs="results", out_dir="."),
)


def stage_parameters(stage: Stage, params: "Params", profile: str, overrides: dict[str, Any],
                     size: str | None) -> dict[str, Any]:
    """What papermill injects into the notebook's ``parameters`` cell."""
    if stage.inputs == "results":
        out = {"results": [str(params.run_dir)],
               "out_dir": str(params.run_dir / (stage.out_dir or stage.name)), "source": "own"}
        return {**out, **(stage.extra(params) if stage.extra else {})}
    out = {"profile": str(profile), "overrides": overrides, "progress": False}
    return {**out, "size": size} if size is not None else out


# ---------------------------------------------------------------- one execution

@dataclass(frozen=True)
class Execution:
    """Everything a worker needs to run one notebook; picklable (it travels to Ray workers)."""
    stage: str
    size: str | None
    notebook: Path
    output: Path
    parameters: dict[str, Any]
    threads: int = 1  # CPU threads of the kernel (resources.cpus): same numbers on any executor
    kernel_log: Path | None = None  # the kernel process's own stderr (not cell output)

    @property
    def name(self) -> str:
        return f"{self.stage}/{self.size}" if self.size else self.stage

    @property
    def log(self) -> Path:
        return self.output.with_suffix(".log")

    @property
    def failed_copy(self) -> Path:
        return self.output.with_suffix(".failed.ipynb")


@dataclass
class Outcome:
    status: Literal["done", "failed"]
    wall_s: float
    started_at: str
    error: str = ""
    traceback: str = ""
    host: str = field(default_factory=socket.gethostname)
    kernel_reused: bool = False
    cuda_visible_devices: str | None = None  # what the kernel saw (set by Ray on Ray)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def execute(ex: Execution, fresh_kernel: bool = False,
            env: dict[str, str] | None = None) -> Outcome:
    """Run one notebook with papermill; never raises for a failing notebook.

    The executed copy appears at ``ex.output`` only when complete (a killed worker leaves at
    most a hidden partial file); a failing run keeps its copy as ``*.failed.ipynb`` and returns
    the error and traceback. Cell output streams to ``ex.log`` as it happens. ``env`` adds to
    the kernel's environment (the Ray executor hides GPUs from tasks that asked for none).
    """
    import nbformat
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    from robnb.results.provenance import now_iso
    from robnb.results.store import atomic_write_text

    ex.output.parent.mkdir(parents=True, exist_ok=True)
    partial = ex.output.parent / f".{ex.output.name}.partial.ipynb"
    started, t0 = now_iso(), time.time()
    kernel = _thread_kernel()
    kernel_env = {**_kernel_env(ex.threads), **(env or {})}
    gpus = kernel_env.get("CUDA_VISIBLE_DEVICES")
    with open(ex.log, "a", encoding="utf-8") as log:
        log.write(f"\n===== {ex.name}: {ex.notebook.name} started {started} on "
                  f"{socket.gethostname()} pid {os.getpid()}\n")
        log.flush()
        reused = False
        try:
            km, reused = kernel.ready(kernel_env, ex.kernel_log)
            nb = pm.execute_notebook(str(ex.notebook), str(partial), parameters=ex.parameters,
                                     engine_name=_engine(), km=km, progress_bar=False,
                                     stdout_file=log, stderr_file=log)
            atomic_write_text(ex.output, nbformat.writes(nb))
            partial.unlink(missing_ok=True)
            ex.failed_copy.unlink(missing_ok=True)
            outcome = Outcome("done", time.time() - t0, started, kernel_reused=reused,
                              cuda_visible_devices=gpus)
        except BaseException as e:  # noqa: BLE001 - recorded, the sweep goes on
            if isinstance(e, PapermillExecutionError):
                error = f"{e.ename}: {e.evalue}"
                tb = _ANSI.sub("", "\n".join(e.traceback))
            else:
                error = f"{type(e).__name__}: {e}{kernel.exit_note()}"
                tb = traceback.format_exc()
            if partial.exists():
                os.replace(partial, ex.failed_copy)
            kernel.discard()  # a failed or dead kernel is never handed the next notebook
            outcome = Outcome("failed", time.time() - t0, started, error, tb, kernel_reused=reused,
                              cuda_visible_devices=gpus)
            if not isinstance(e, Exception):
                raise
        finally:
            if fresh_kernel:
                kernel.discard()
        log.write(f"===== {ex.name}: {outcome.status} after {outcome.wall_s:.1f}s"
                  f"{' (warm kernel)' if outcome.kernel_reused else ''}"
                  f"{': ' + outcome.error if outcome.error else ''}\n")
        if outcome.traceback:
            log.write(outcome.traceback + "\n")
    if outcome.status == "done":
        kernel.reset()
    return outcome


# ---------------------------------------------------------------- reused kernels

# Variables that change what a kernel computes or where: a warm kernel is reused only while they
# are unchanged (Ray sets CUDA_VISIBLE_DEVICES per task; the sweep sets the thread counts).
_KERNEL_ENV_KEYS = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
                    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# reset() collects garbage; freezing what survives (modules, mostly) keeps the next collection
# from walking torch and transformers again (about a second each time on a busy 2-core machine)
_RESET = ("get_ipython().reset(new_session=True)\n"
          "import gc as _gc, os as _os; _os.chdir({cwd!r}); _gc.freeze(); del _gc, _os\n")


def _kernel_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = str(threads)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return env


def _fingerprint(env: dict[str, str]) -> tuple:
    return tuple(sorted((k, v) for k, v in env.items()
                        if k in _KERNEL_ENV_KEYS or k.startswith("ROBNB_")))


def _wait(value: Any) -> Any:
    """Run a jupyter_client coroutine on this thread's loop (the one nbclient uses too)."""
    import inspect

    from jupyter_core.utils import ensure_event_loop

    return ensure_event_loop().run_until_complete(value) if inspect.isawaitable(value) else value


class Kernel:
    """A Jupyter kernel that runs notebook after notebook in one worker.

    Why: starting a kernel and importing torch, transformers and robnb costs seconds per
    notebook, more than many executions' own work (bench/sweep_overhead.py). Between notebooks
    the user namespace is reset (IPython ``reset``, working directory restored), so every
    notebook starts from an empty namespace with modules already imported. A kernel is replaced
    after any failure and whenever its environment (GPU assignment, thread counts, ROBNB_*
    settings) would differ. The manager is the asynchronous one nbclient itself uses: with a
    blocking client, nbclient would wait forever on a kernel that died mid-cell.
    """

    def __init__(self) -> None:
        self.km = None
        self.fingerprint: tuple = ()
        self.used = False
        self._stderr = None

    def ready(self, env: dict[str, str], kernel_log: Path | None) -> tuple[Any, bool]:
        """A live kernel with this environment; True when it already ran a notebook."""
        if self.km is not None and (self.fingerprint != _fingerprint(env)
                                    or not _wait(self.km.is_alive())):
            self.discard()
        if self.km is None:
            if kernel_log:
                kernel_log.parent.mkdir(parents=True, exist_ok=True)
            self._stderr = open(kernel_log, "a") if kernel_log else None  # noqa: SIM115
            for _ in range(3):
                self._start(env)
                if self._answers():
                    break
                self.discard(keep_log=True)
            else:
                raise RuntimeError(f"no kernel would start (three tries); see {kernel_log}")
            self.fingerprint, self.used = _fingerprint(env), False
        reused, self.used = self.used, True
        return self.km, reused

    def _start(self, env: dict[str, str]) -> None:
        """Kernels talk over Unix sockets, not TCP ports: with several kernels starting at once
        (parallel workers, other users) a free TCP port can be taken before the kernel binds it."""
        import tempfile
        import uuid

        from jupyter_client.manager import AsyncKernelManager

        folder = Path(tempfile.gettempdir()) / "robnb-kernels"  # short: socket paths are limited
        folder.mkdir(exist_ok=True)
        ipc = folder / uuid.uuid4().hex[:12]
        self.km = AsyncKernelManager(kernel_name="python3", transport="ipc", ip=str(ipc))
        _wait(self.km.start_kernel(env=env, cwd=str(REPO), stdout=self._stderr,
                                   stderr=self._stderr))

    def _answers(self) -> bool:
        from jupyter_client.blocking import BlockingKernelClient

        kc = BlockingKernelClient()
        kc.load_connection_info(self.km.get_connection_info())
        try:
            kc.start_channels()
            kc.wait_for_ready(timeout=120)
            return True
        except RuntimeError:  # died before answering
            return False
        finally:
            kc.stop_channels()

    def reset(self) -> None:
        """Empty the namespace for the next notebook; a kernel that cannot do so is dropped."""
        if self.km is None:
            return
        from jupyter_client.blocking import BlockingKernelClient

        kc = BlockingKernelClient()
        kc.load_connection_info(self.km.get_connection_info())
        try:
            kc.start_channels()
            kc.wait_for_ready(timeout=60)
            reply = kc.execute_interactive(_RESET.format(cwd=str(REPO)), store_history=False,
                                           timeout=60, output_hook=lambda msg: None)
            if reply["content"].get("status") != "ok":
                self.discard()
        except Exception:  # noqa: BLE001
            self.discard()
        finally:
            kc.stop_channels()

    def _process(self):
        return getattr(getattr(self.km, "provisioner", None), "process", None)

    def exit_note(self) -> str:
        """Why a kernel died, when it did: SIGKILL is what the out-of-memory killer sends."""
        process = self._process()
        code = process.poll() if process is not None else None
        if code is None:
            return ""
        return f" (kernel exit code {code}{'; killed, out of memory?' if code == -9 else ''})"

    def kill(self) -> None:
        """Kill the kernel process at once, from any thread (an interrupted sweep, exit)."""
        process = self._process()
        if process is not None and process.poll() is None:
            process.kill()

    def discard(self, keep_log: bool = False) -> None:
        """Stop the kernel (from the thread that uses it) and forget it."""
        if self.km is not None:
            try:
                _wait(self.km.shutdown_kernel(now=True))
            except Exception:  # noqa: BLE001 - already dead
                self.kill()
            try:
                _wait(self.km.cleanup_resources())
            except Exception:  # noqa: BLE001
                pass
            self.km = None
        if self._stderr is not None and not keep_log:
            self._stderr.close()
            self._stderr = None


_LOCAL = threading.local()
_ALL_KERNELS: list[Kernel] = []
_ALL_LOCK = threading.Lock()


def _thread_kernel() -> Kernel:
    """Each worker thread (or Ray worker process) keeps its own kernel between executions."""
    kernel = getattr(_LOCAL, "kernel", None)
    if kernel is None:
        kernel = _LOCAL.kernel = Kernel()
        with _ALL_LOCK:
            _ALL_KERNELS.append(kernel)
    return kernel


def shutdown_kernels() -> None:
    """Stop this thread's kernel (call from each worker thread when it stops)."""
    kernel = getattr(_LOCAL, "kernel", None)
    if kernel is not None:
        kernel.discard()


def kill_kernels() -> None:
    """Kill every kernel of this process now; their notebooks fail and their threads end."""
    with _ALL_LOCK:
        for kernel in _ALL_KERNELS:
            kernel.kill()


def _shutdown_all() -> None:
    """At exit: kill what is left (other threads' kernels cannot be shut down politely from
    here) and remove their connection files."""
    with _ALL_LOCK:
        for kernel in _ALL_KERNELS:
            kernel.kill()
            if kernel.km is not None:
                kernel.km.cleanup_connection_file()
                kernel.km.cleanup_ipc_files()


import atexit  # noqa: E402 - kernels of a Ray worker process end with it

atexit.register(_shutdown_all)


def _register_engine() -> str:
    """papermill's nbclient engine, but closing its kernel client when the kernel is not its own
    (papermill leaves the client's channels and heartbeat thread open otherwise)."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.log import logger
    from papermill.utils import merge_kwargs, remove_args

    class Client(PapermillNotebookClient):
        def execute(self, **kwargs):
            try:
                return super().execute(**kwargs)
            finally:
                if not self.owns_km and self.kc is not None:
                    self.kc.stop_channels()
                    self.kc = None

    class Engine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False,
                                     stdout_file=None, stderr_file=None, start_timeout=60,
                                     execution_timeout=None, **kwargs):
            kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
            final = merge_kwargs(kwargs, timeout=execution_timeout, startup_timeout=start_timeout,
                                 kernel_name=kernel_name, log=logger, log_output=log_output,
                                 stdout_file=stdout_file, stderr_file=stderr_file)
            return Client(nb_man, **final).execute()

    papermill_engines.register("robnb", Engine)
    return "robnb"


_ENGINE_LOCK = threading.Lock()
_ENGINE_NAME: str | None = None


def _engine() -> str:
    global _ENGINE_NAME
    with _ENGINE_LOCK:
        if _ENGINE_NAME is None:
            _ENGINE_NAME = _register_engine()
    return _ENGINE_NAME


# ---------------------------------------------------------------- after a run

def summary(run_dir: Path) -> "dict[str, pd.DataFrame]":
    """The tables a user wants first: pretraining loss and validation accuracy per size."""
    import pandas as pd

    from robnb.results.store import read_table

    out: dict[str, pd.DataFrame] = {}
    pre = read_table(run_dir, "pretraining")
    if len(pre):
        last = pre.sort_values("step").groupby("model").tail(1)
        out["pretraining"] = last[["model", "model_size", "non_embedding_params", "tokens",
                                   "pretrain_flops", "val_loss"]].sort_values("model_size")
    ev = read_table(run_dir, "evaluations")
    if len(ev):
        ev = ev[ev["split"] == "validation"]
        if "stage" in ev.columns:  # the fine-tuned models' own scores, not 06's conditions
            ev = ev[ev["stage"].fillna("finetune") == "finetune"]
        if "defense" in ev.columns:  # nor those of adversarially trained checkpoints
            ev = ev[ev["defense"].isna()]
        acc = ev.pivot_table(index=["model", "model_size"], columns="task", values="accuracy",
                             aggfunc="mean").reset_index().sort_values("model_size")
        out["accuracy"] = acc
        if {"n_examples", "model_size"} <= set(ev.columns) and ev["model"].nunique() > 1:
            from robnb.analysis.size_checks import accuracy_steps, falls_with_size

            steps = accuracy_steps(ev.dropna(subset=["n_examples", "model_size"]))
            out["accuracy steps up the ladder"] = steps.round(4)
            out["accuracy vs size"] = pd.DataFrame({"verdict": [falls_with_size(steps)]})
        if "majority_baseline" in ev:
            out["majority"] = ev.groupby("task")["majority_baseline"].mean().to_frame().T
    runs = read_table(run_dir, "runs")
    if len(runs):
        out["runs"] = runs.groupby(["stage", "status"]).agg(n=("run_id", "size"),
                                                          wall_s=("wall_s", "sum")).reset_index()
    return out


def print_summary(run_dir: Path) -> None:
    import pandas as pd

    with pd.option_context("display.width", 160, "display.max_columns", 20,
                           "display.float_format", "{:.4g}".format):
        for name, table in summary(run_dir).items():
            print(f"\n== {name}\n{table.to_string(index=False)}")
