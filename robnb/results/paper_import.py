"""Import the raw result CSVs published with "Scaling Trends in Language Model Robustness".

The authors' run logs (repository AlignmentResearch/robust-llm-2024, folder ``cache_csvs/``)
become the suite's own tidy tables, so every analysis and notebook runs unchanged on the
paper's data and on the suite's runs:

- ``attacks``: one row per evaluation run × attack iteration (``attack_flops`` = FLOPs of one
  iteration for all ``n_examples`` evaluated, as the suite logs them);
- ``training``: one row per adversarial-training run × round × checkpoint name
  (``defense_flops_cumulative`` = adversarial-example generation + training FLOPs so far);
- ``runs``: provenance of every imported run (CSV file, run name, state, creation time).

Every row carries ``source = "paper"`` (the suite's own rows read as "own"), also after a
round trip through Parquet (``robnb import-paper-data``).

The authors' data has defects (see the data README). The importer reports each one with a
:class:`PaperDataWarning` (FLOP-accounting defects with the subclass
:class:`PaperAccountingWarning`) and marks the affected rows in ``data_issue``; it does not
copy the authors' corrections (the 12B fudge factor, per-seed averaging) and does not silently
repair the data. Only pure export artefacts (byte-identical duplicate rows) are dropped, and
that is reported too.

Constants (and where they come from):

- Pythia pretraining tokens: ``robnb.flops.PYTHIA_PRETRAIN_TOKENS`` (299,892,736,000; the
  Pythia suite's documented token count, also the paper's).
- Qwen2.5 pretraining tokens :data:`QWEN25_PRETRAIN_TOKENS`: the values the paper's code uses
  (its ``wandb_utils/constants.py``: 18T for 0.5B and 10.5T for the others, an approximation
  from Qwen2's relative token counts with 18T as the maximum, since no Qwen2.5 report was out
  when the authors wrote it). Here they are applied by the size *named in the checkpoint*, so
  the authors' 3B/7B swap is not reproduced; the authors' own values stay in
  ``pretrain_flops_authors`` and every disagreement larger than :data:`PRETRAIN_TOLERANCE` is
  warned about, with the token count it implies.
- Pretraining FLOPs = 6·N·D with N = the classifier parameter count the CSV logs (``num_params``,
  the paper's convention).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from robnb.flops import PYTHIA_PRETRAIN_TOKENS, pretrain_flops
from robnb.results.schema import conform

SOURCE = "robust-llm-2024"
SOURCE_COMMIT = "0062a386bf91b96fadbeeeec4c6ed1a794643944"
HUB_PREFIX = "AlignmentResearch/robust_llm_"

QWEN25_PRETRAIN_TOKENS: dict[str, int] = {
    "0.5B": 18_000_000_000_000,
    "1.5B": 10_500_000_000_000,
    "3B": 10_500_000_000_000,
    "7B": 10_500_000_000_000,
    "14B": 10_500_000_000_000,
}
PRETRAIN_TOLERANCE = 0.10  # relative; the 14B's different parameter convention is ~5.5%
UNDERCOUNT_RATIO = 0.8  # per-example attack FLOPs ÷ (N · examples) below this × family median
GENERATIVE_TASKS = ("strongreject",)  # output lengths vary by model: FLOPs/param not comparable
TASK_CODES = {"pm": "password_match", "wl": "word_length", "spam": "enron_spam",
              "imdb": "imdb", "helpful": "helpful", "harmless": "harmless",
              "strongreject": "strongreject"}
ATTACK_CODES = {"gcg": "gcg", "rt": "random_token", "beast": "beast"}


class PaperDataWarning(UserWarning):
    """A defect or irregularity found in the paper's published result CSVs."""


class PaperAccountingWarning(PaperDataWarning):
    """A defect in the authors' compute (FLOP) accounting."""


def import_robust_llm(paths: str | Path | Iterable[str | Path]) -> dict[str, pd.DataFrame]:
    """Tables ``attacks``, ``training`` and ``runs`` from the paper's CSV files or folders.

    Files are recognised by their columns (``train_total_flops`` = training log, ``asr`` and
    ``iteration`` = evaluation log), so a folder, a mix of files, or single files all work.
    """
    files = collect_csv_files(paths)
    if not files:
        raise FileNotFoundError(f"no CSV files found under {paths}")
    evals, trains = [], []
    for f in files:
        raw = pd.read_csv(f, low_memory=False)
        raw.columns = [c.replace("/", "_") for c in raw.columns]
        if "train_total_flops" in raw.columns:
            trains.append(_training_rows(raw, f.name))
        elif {"asr", "iteration"} <= set(raw.columns):
            evals.append(_evaluation_rows(raw, f.name))
        else:
            warnings.warn(f"{f.name}: neither an evaluation nor a training log; skipped",
                          PaperDataWarning, stacklevel=2)
    attacks = pd.concat(evals, ignore_index=True) if evals else _empty("attacks")
    training = pd.concat(trains, ignore_index=True) if trains else _empty("training")
    if len(attacks):
        attacks = _flag_attack_flops_undercount(attacks)
    if len(training):
        training = _flag_superseded(training)
        training = _flag_cumulative_resets(training)
        reference = pd.concat([attacks, training]).groupby("model")["pretrain_flops"].first()
        _check_authors_pretrain(training, reference.dropna().to_dict())
    runs = _runs_table(attacks, training)
    return {"attacks": conform("attacks", attacks), "training": conform("training", training),
            "runs": conform("runs", runs)}


def collect_csv_files(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """All ``*.csv`` files named or found (recursively) under the given paths, sorted."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(p.rglob("*.csv")))
        elif p.suffix == ".csv" and p.is_file():
            out.append(p)
        elif not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
    return sorted(set(out))


def model_name(family: str, name_or_path: str, n_params: int) -> str:
    """Short model name (``pythia-1.4b``, ``Qwen2.5-7B``) read from the checkpoint name."""
    m = re.search(r"pythia-(\d+(?:\.\d+)?[mb])", name_or_path)
    if m:
        return f"pythia-{m.group(1)}"
    m = re.search(r"Qwen2\.5-(\d+(?:\.\d+)?B)", name_or_path)
    if m:
        return f"Qwen2.5-{m.group(1)}"
    return f"{family}-{n_params}"


def pretrain_tokens(model: str) -> float:
    """Pretraining tokens D of a named model (Pythia or Qwen2.5), NaN when unknown."""
    if model.startswith("pythia-"):
        return float(PYTHIA_PRETRAIN_TOKENS)
    if model.startswith("Qwen2.5-"):
        return float(QWEN25_PRETRAIN_TOKENS.get(model.removeprefix("Qwen2.5-"), np.nan))
    return float("nan")


def _pretrain_flops(model: pd.Series, n_params: pd.Series) -> pd.Series:
    tokens = model.map(pretrain_tokens).astype(float)
    return pd.Series([pretrain_flops(int(n), t) if np.isfinite(t) else np.nan
                      for n, t in zip(n_params, tokens)], index=model.index, dtype=float)


def _file_tokens(file_name: str) -> list[str]:
    return Path(file_name).stem.lower().split("_")


def _task(name_or_path: str, file_name: str) -> str:
    m = re.search(r"clf_([a-z]+)", name_or_path)
    code = m.group(1) if m else next((t for t in _file_tokens(file_name) if t in TASK_CODES), "")
    return TASK_CODES.get(code, code or "unknown")


def _defense(checkpoint: str) -> str:
    """How the evaluated/trained checkpoint was defended: finetuned or adv_<attack>[_no_ramp]."""
    m = re.search(r"adv_tr_([a-z]+)", checkpoint)
    if not m:
        return "finetuned"
    name = "adv_" + ATTACK_CODES.get(m.group(1), m.group(1))
    return name + ("_no_ramp" if "no_ramp" in checkpoint else "")


def _checkpoint(name_or_path: pd.Series) -> pd.Series:
    return name_or_path.astype(str).str.removeprefix(HUB_PREFIX)


def _drop_exact_duplicates(raw: pd.DataFrame, file_name: str) -> pd.DataFrame:
    dup = raw.duplicated()
    if dup.any():
        warnings.warn(f"{file_name}: {int(dup.sum())} rows are exact duplicates of other rows "
                      "(export artefact); dropped", PaperDataWarning, stacklevel=3)
    return raw.loc[~dup].reset_index(drop=True)


def _evaluation_rows(raw: pd.DataFrame, file_name: str) -> pd.DataFrame:
    raw = _drop_exact_duplicates(raw, file_name)
    tokens = _file_tokens(file_name)
    attack = ATTACK_CODES[next((t for t in tokens if t in ATTACK_CODES), "gcg")]
    placement = ("infix90" if any(t.startswith("infix") for t in tokens)
                 else "prefix" if "prefix" in tokens else "suffix")
    n_params = (raw["num_params"] if "num_params" in raw else raw["model_size"]).astype("int64")
    family = raw["model_family"].astype(str)
    nop = raw["model_name_or_path"].astype(str)
    checkpoint = _checkpoint(nop)
    model = pd.Series([model_name(f, p, n) for f, p, n in zip(family, nop, n_params)],
                      index=raw.index)
    n_correct = raw.get("adversarial_eval_n_correct_pre_attack", pd.Series(np.nan, raw.index))
    asr = raw["asr"].astype(float)
    out = pd.DataFrame({
        "run_id": SOURCE + "/" + raw["run_id"].astype(str),
        "family": family, "model": model, "model_size": n_params,
        "pretrain_flops": _pretrain_flops(model, n_params),
        "task": [_task(p, file_name) for p in nop], "seed": raw["seed_idx"].astype("int64"),
        "attack": attack, "placement": placement,
        "round": raw["adv_training_round"].astype("int64"),
        "iteration": raw["iteration"].astype("int64"),
        "n_examples": raw["dataset_n_val"].astype("int64"),
        "n_correct_before": n_correct,
        "n_flipped": (asr * n_correct).round(),
        "asr": asr, "mean_target_prob": np.nan,
        "attack_flops": raw["flops_per_iteration"].astype(float),
        "attack_flops_executed": np.nan,
        "defense": [_defense(c) for c in checkpoint], "checkpoint": checkpoint,
        "model_revision": raw.get("model_revision", pd.Series("", raw.index)).astype(str),
        "run_name": raw.get("run_name", pd.Series("", raw.index)).astype(str),
        "run_state": raw["run_state"].astype(str),
        "run_created_at": raw["run_created_at"].astype(str),
        "source_file": file_name, "source": "paper", "data_issue": "",
    })
    _warn_sparse_iterations(out, file_name)
    return out


def _warn_sparse_iterations(attacks: pd.DataFrame, file_name: str) -> None:
    """Runs without an iteration-0 row: ASR is only known at the logged iterations."""
    first = attacks.groupby("run_id")["iteration"].min()
    if (first > 0).any():
        its = sorted(int(i) for i in attacks["iteration"].unique())
        warnings.warn(
            f"{file_name}: {int((first > 0).sum())} runs log ASR only at iterations "
            f"{its[:4]}…{its[-1]} (no iteration 0); target-ASR interpolation below the first "
            "logged iteration uses ASR(0) = 0 by definition", PaperDataWarning, stacklevel=3)


def _flag_attack_flops_undercount(attacks: pd.DataFrame) -> pd.DataFrame:
    """Flag sizes whose attack FLOPs per example per parameter fall well below their peers.

    Forward/backward FLOPs are proportional to N·tokens and token counts do not depend on the
    model size within a family and task, so per (file, family) the ratio
    attack_flops ÷ (N · n_examples) should be flat across sizes. The authors' 12B runs (multi-
    GPU) log about 1/1.6–1/1.8 of it; their plots multiply by a fudge factor. Here the rows are
    flagged and warned about, not rescaled.
    """
    out = attacks.copy()
    classification = ~out["task"].isin(GENERATIVE_TASKS)
    ratio = out["attack_flops"] / (out["model_size"].astype(float) * out["n_examples"])
    keys = [out["source_file"], out["family"], out["model_size"]]
    per_size = ratio[classification].groupby([k[classification] for k in keys]).median()
    for (file_name, family), sizes in per_size.groupby(level=[0, 1]):
        if len(sizes) < 3:
            continue
        rel = sizes / sizes.median()
        for (_, _, size), r in rel.items():
            if r < UNDERCOUNT_RATIO:
                mask = ((out["source_file"] == file_name) & (out["family"] == family)
                        & (out["model_size"] == size))
                model = out.loc[mask, "model"].iloc[0]
                warnings.warn(
                    f"{file_name}: {model} attack FLOPs per example per parameter are "
                    f"{r:.2f}× the median of the other sizes (under-counted multi-GPU run; the "
                    f"authors multiply by ~{1 / r:.2f} in their plots); rows flagged "
                    "'attack_flops_undercount', values kept as logged",
                    PaperAccountingWarning, stacklevel=3)
                out.loc[mask, "data_issue"] = _add_issue(out.loc[mask, "data_issue"],
                                                         "attack_flops_undercount")
    return out


def _add_issue(current: pd.Series, issue: str) -> pd.Series:
    return current.where(current == "", current + ";").astype(str) + issue


def _training_rows(raw: pd.DataFrame, file_name: str) -> pd.DataFrame:
    raw = _drop_exact_duplicates(raw, file_name)
    n_params = raw["num_params"].astype("int64")
    nop = raw["model_name_or_path"].astype(str)
    key = raw["model_key"] if "model_key" in raw else raw["training_save_name"]
    checkpoint = key.astype(str)
    family = pd.Series(["qwen2.5" if "Qwen2.5" in p else "pythia" if "pythia" in p else "unknown"
                        for p in nop], index=raw.index)
    model = pd.Series([model_name(f, p, n) for f, p, n in zip(family, nop, n_params)],
                      index=raw.index)
    keys_per_run = checkpoint.groupby(raw["run_id"]).nunique()
    multi = keys_per_run[keys_per_run > 1]
    if len(multi):
        warnings.warn(
            f"{file_name}: {len(multi)} training runs are logged under more than one checkpoint "
            "name (every round repeated per name; evaluations refer to both names); rows kept "
            "per name, de-duplicate on (run_id, round) before summing", PaperDataWarning,
            stacklevel=3)
    authors = pd.to_numeric(raw.get("pretrain_compute", pd.Series(np.nan, raw.index)),
                            errors="coerce").astype(float)
    return pd.DataFrame({
        "run_id": SOURCE + "/" + raw["run_id"].astype(str),
        "family": family, "model": model, "model_size": n_params,
        "task": [_task(c, file_name) for c in checkpoint],
        "seed": raw["seed_idx"].astype("int64"),
        "round": raw["adv_training_round"].astype("int64"),
        "train_flops": np.nan, "adversarial_generation_flops": np.nan,
        "defense_flops_cumulative": raw["train_total_flops"].astype(float),
        "finetune_flops": np.nan,
        "pretrain_flops": _pretrain_flops(model, n_params),
        "pretrain_flops_authors": authors,
        "defense": [_defense(c) for c in checkpoint], "checkpoint": checkpoint,
        "base_model": _checkpoint(nop),
        "run_name": raw["run_name"].astype(str), "run_state": raw["run_state"].astype(str),
        "run_created_at": raw["run_created_at"].astype(str),
        "source_file": file_name, "source": "paper", "superseded": False, "data_issue": "",
    })


def _flag_superseded(training: pd.DataFrame) -> pd.DataFrame:
    """Mark rows of a (checkpoint, round) that a later-created run logged again.

    A re-run saves its checkpoints under the same name, so an evaluation made after it saw the
    re-run's weights; the defense FLOPs to pair with it are the latest run's.
    """
    out = training.copy()
    latest = out.groupby(["checkpoint", "round"])["run_created_at"].transform("max")
    out["superseded"] = out["run_created_at"] < latest
    sup = out[out["superseded"]]
    if len(sup):
        warnings.warn(
            f"{len(sup)} training rows ({sup['checkpoint'].nunique()} checkpoint names, files "
            f"{sorted(sup['source_file'].unique())}) were re-logged by a later run of the same "
            "checkpoint name; marked superseded=True (the later run's values are used for "
            "offense/defense)", PaperDataWarning, stacklevel=3)
    return out


def _flag_cumulative_resets(training: pd.DataFrame) -> pd.DataFrame:
    """Flag rounds whose cumulative defense FLOPs are below an earlier round's."""
    out = training.copy()
    live = out[~out["superseded"]].sort_values(["checkpoint", "round"])
    running = live.groupby("checkpoint")["defense_flops_cumulative"].cummax()
    bad = live.index[live["defense_flops_cumulative"] < running]
    if len(bad):
        out.loc[bad, "data_issue"] = _add_issue(out.loc[bad, "data_issue"],
                                                "cumulative_flops_decrease")
        files = sorted(out.loc[bad, "source_file"].unique())
        warnings.warn(
            f"{len(bad)} training rows ({out.loc[bad, 'checkpoint'].nunique()} checkpoints, "
            f"files {files}) log cumulative defense FLOPs below an earlier round's (counter "
            "reset or overwrite after a resumed run); flagged 'cumulative_flops_decrease', "
            "values kept", PaperAccountingWarning, stacklevel=3)
    return out


def _check_authors_pretrain(training: pd.DataFrame, reference: dict[str, float]) -> None:
    """Compare the authors' pretraining compute with 6·N·D from this module's constants.

    ``reference`` maps model names to this module's 6·N·D, so a wrong authors' value can be
    traced to the model it really belongs to.
    """
    per_model = training.groupby("model").agg(n=("model_size", "first"),
                                              ours=("pretrain_flops", "first"),
                                              authors=("pretrain_flops_authors", "median"))
    per_model = per_model.dropna()
    rel = (per_model["authors"] / per_model["ours"] - 1).abs()
    for model, row in per_model[rel > PRETRAIN_TOLERANCE].iterrows():
        implied = row["authors"] / (6.0 * row["n"])
        if model in ("Qwen2.5-3B", "Qwen2.5-7B"):
            why = "the authors' Qwen2.5 3B/7B constants are swapped"
        else:
            same = [m for m, v in reference.items()
                    if m != model and abs(v / row["authors"] - 1) < 0.01]
            why = (f"it is the pretraining compute of {same[0]} (looked up by a file-local "
                   "model index)" if same else "source of the authors' value unknown")
        warnings.warn(
            f"{model}: the authors' pretraining compute {row['authors']:.3e} implies "
            f"{implied:.3g} tokens, but {pretrain_tokens(str(model)):.3g} are documented for it "
            f"(6·N·D = {row['ours']:.3e}); {why}. Using 6·N·D; the authors' value stays in "
            "pretrain_flops_authors", PaperAccountingWarning, stacklevel=3)


def _runs_table(attacks: pd.DataFrame, training: pd.DataFrame) -> pd.DataFrame:
    cols = ["run_id", "seed", "run_created_at", "run_state", "run_name", "source_file",
            "checkpoint", "model", "task", "defense"]
    parts = []
    if len(attacks):
        parts.append(attacks.drop_duplicates("run_id")[cols + ["model_revision"]]
                     .assign(stage="attack"))
    if len(training):
        parts.append(training.drop_duplicates("run_id")[cols]
                     .assign(stage="adversarial_training", model_revision=""))
    if not parts:
        return _empty("runs")
    runs = pd.concat(parts, ignore_index=True)
    return pd.DataFrame({
        "run_id": runs["run_id"], "stage": runs["stage"], "params_hash": "",
        "git_commit": f"{SOURCE}@{SOURCE_COMMIT}", "packages": "", "device": "",
        "seed": runs["seed"], "started_at": runs["run_created_at"], "wall_s": np.nan,
        "status": runs["run_state"], "error": "", "source": "paper",
        "source_file": runs["source_file"], "run_name": runs["run_name"],
        "checkpoint": runs["checkpoint"], "model_revision": runs["model_revision"],
        "model": runs["model"], "task": runs["task"], "defense": runs["defense"],
    })


def _empty(table: str) -> pd.DataFrame:
    from robnb.results.schema import TABLES

    return pd.DataFrame(columns=list(TABLES[table]))
