"""Stage 06: adversarial vs out-of-distribution robustness of one model size, three conditions.

For every task of the profile that has at least one OOD set (``ood.pairs``, default: the offline
pairs of :mod:`robnb.tasks.ood`), every seed and every condition —

- ``baseline``: the plainly fine-tuned classifier (stage 01),
- ``adversarial``: the adversarially trained classifier after its last round
  (:func:`robnb.defenses.adversarial_training.final_checkpoint`),
- ``ood_method``: the classifier fine-tuned with label-preserving perturbations
  (:mod:`robnb.defenses.ood_method`, trained here if not cached) —

it evaluates the clean validation set (split ``validation``), each OOD set (``ood:<pair>``),
each static adversarial set (``adversarial:<pair>``) and an adversarial set made by attacking
that very model with each attack of ``ood.attacks`` (``adversarial:<attack>-<placement>``). An
attacked set holds the first ``ood.n_adversarial`` clean examples, each attacked one carrying its
best attack string (``Example.render(attack, position)``), the others as they were (they were
already wrong): so its accuracy is about clean accuracy × (1 − ASR) and its PDR about the ASR.
Not exactly: the attack scores token ids (the text before and after the attack slot encoded
apart), while these sets are evaluated as text, encoded whole, as an attacker would submit them;
where the two tokenisations differ, a failed attack string can leave an example right that the
clean text got wrong, and the PDR can come out slightly negative. The attack's own ASR is kept in
the ``asr`` column.

Every prediction counts: each row's ``n_examples`` is the number of predictions its metrics were
computed from, the predictions themselves go to ``results/adv_ood_predictions`` (so the metrics
can be recomputed), and examples are never dropped after prediction. Examples that do not fit
the token budget are dropped *before* prediction (as the paper drops them) and counted in
``n_too_long``. Rows go to the ``evaluations`` table with ``stage = "adv_ood"`` and a
``condition`` column; the attacks' per-iteration records and strings go to
``results/adv_ood_attacks`` and ``results/adv_ood_strings`` (not to the attack stage's tables,
whose analysis assumes fine-tuned or adversarial-training models only). A second run with the
same inputs (parameters, base, fine-tuned and adversarially trained models) reuses the results
and marks its ``runs`` rows ``cached``; a condition whose model does not exist for a task is
recorded there as ``skipped`` with the reason.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from robnb.checkpoints import MANIFEST, verify
from robnb.device import resolve_device
from robnb.evaluation import evaluate_examples, performance_drop_rate
from robnb.params import AttackSpec, Params
from robnb.results.provenance import now_iso, run_record, stable_hash
from robnb.results.store import atomic_write_text, write_records, write_table
from robnb.stages.common import check_model, model_info, params_hash, set_threads
from robnb.stages.finetune import finetune_dir
from robnb.tasks import load_task
from robnb.tasks.base import Example
from robnb.tasks.ood import OOD_PAIRS, default_pairs, load_pair, pairs_for
from robnb.train import fits

CONDITIONS = ("baseline", "adversarial", "ood_method")
EVAL_SEED = 0  # every size and condition sees the same clean, OOD and attacked examples
STAGE = "adv_ood"
STAGE_VERSION = 1  # bump when the stage computes different numbers from the same inputs


class ConditionUnavailable(LookupError):
    """A condition's model does not exist for this (size, task, seed); recorded as skipped."""


# ---------------------------------------------------------------- what to run

def selected_pairs(params: Params) -> list[str]:
    return list(params.ood.pairs) if params.ood.pairs is not None else default_pairs(params.tasks)


def stage_tasks(params: Params) -> list[str]:
    """Tasks with at least one OOD set: only they give (adversarial, OOD) points."""
    names = selected_pairs(params)
    return [t for t in params.tasks
            if any(p.kind == "ood" for p in pairs_for(t, names))]


def attack_specs(params: Params, task: str) -> list[AttackSpec]:
    specs = params.ood.attacks if params.ood.attacks is not None else params.attack.attacks
    return [s for s in specs if s.applies_to(task)]


def attack_set_names(specs: list[AttackSpec]) -> list[str]:
    """``<attack>-<placement>``, with the iteration count added where that pair repeats."""
    base = [f"{s.name}-{s.placement}" for s in specs]
    return [b if base.count(b) == 1 else f"{b}-{s.iterations}it" for b, s in zip(base, specs)]


def with_attack(ex: Example, attack: str, position: float) -> Example:
    """The example whose text is ``ex.render(attack, position)``: the attack inserted at
    ``position`` (a fraction of the modifiable characters)."""
    k = round(position * len(ex.modifiable))
    out = replace(ex, modifiable=ex.modifiable[:k] + attack + ex.modifiable[k:],
                  meta={**ex.meta, "attack": attack, "position": position})
    assert out.text == ex.render(attack, position)
    return out


def adversarial_examples(examples: list[Example], strings: list[dict]) -> list[Example]:
    """Every example, the attacked ones with their best attack string, the others unchanged."""
    best = {int(s["example_index"]): s for s in strings}
    return [with_attack(e, best[i]["attack_string"], float(best[i]["position"])) if i in best
            else e for i, e in enumerate(examples)]


# ---------------------------------------------------------------- models

def condition_folder(params: Params, size: str, task: str, seed: int, condition: str,
                     device: torch.device, info: dict, progress: bool) -> tuple[Path, dict]:
    """The verified model folder of one condition, and its manifest meta."""
    if condition == "baseline":
        folder = finetune_dir(params, size, task, seed)
        if not folder.exists():
            raise FileNotFoundError(f"no fine-tuned model for size '{size}', task '{task}', seed "
                                    f"{seed} (expected {folder}); run the finetune stage first")
        return folder, verify(folder)
    if condition == "adversarial":
        try:
            from robnb.defenses.adversarial_training import final_checkpoint
        except ImportError as e:
            raise ImportError("the 'adversarial' condition needs robnb.defenses."
                              "adversarial_training (stage 03); drop 'adversarial' from "
                              f"ood.conditions to run without it ({e})") from e
        try:
            folder = Path(final_checkpoint(params, size, task, seed))
        except (FileNotFoundError, LookupError, ValueError) as e:
            raise ConditionUnavailable(f"no adversarially trained model for size '{size}', "
                                       f"task '{task}', seed {seed}: {e}") from e
        # final_checkpoint verified it; its manifest may sit one level up (round folder)
        manifest = next((p / MANIFEST for p in (folder, folder.parent)
                         if (p / MANIFEST).is_file()), None)
        if manifest is None:
            raise FileNotFoundError(f"{folder}: no {MANIFEST} beside or above the adversarially "
                                    "trained model")
        meta = verify(folder) if manifest.parent == folder else \
            json.loads(manifest.read_text()).get("meta", {})
        rnd = meta.get("round", meta.get("rounds"))
        return folder, {**meta, "round": int(rnd) if rnd is not None else None}
    if condition == "ood_method":
        from robnb.defenses.ood_method import ood_method_checkpoint

        folder, meta, _ = ood_method_checkpoint(params, size, task, seed, device, info, progress)
        return folder, meta
    raise KeyError(f"unknown condition '{condition}'; known: {', '.join(CONDITIONS)}")


# ---------------------------------------------------------------- evaluation

def evaluate_set(model, tok, examples: list[Example], device) -> tuple[dict, list[dict]]:
    """Metrics from every prediction, and the predictions themselves."""
    scores, probs = evaluate_examples(model, tok, examples, device=device)
    preds = probs.argmax(-1).tolist()
    if len(preds) != len(examples) or scores["n_examples"] != len(examples):
        raise AssertionError("a prediction was lost")
    rows = [{"example_index": i, "label": e.label, "prediction": int(p),
             "prob_label": float(probs[i, e.label])}
            for i, (e, p) in enumerate(zip(examples, preds))]
    return scores, rows


def _with_reference(row: dict, ref: dict) -> dict:
    row.update(clean_accuracy=ref["accuracy"], clean_f1=ref["f1"],
               pdr=performance_drop_rate(ref["accuracy"], row["accuracy"]),
               pdr_f1=performance_drop_rate(ref["f1"], row["f1"]))
    return row


def eval_sets(params: Params, task: str, tok) -> dict[str, tuple[list[Example], dict]]:
    """The clean and shifted example sets of a task, each with its counts before the length
    filter. Keyed by split name."""
    fp, ood = params.finetune, params.ood
    src = params.task_sources.get(task)
    raw = load_task(task, "validation", ood.n_examples, EVAL_SEED, src)
    clean = fits(raw, tok, fp.max_tokens)
    if not clean:
        raise ValueError(f"no validation example of task '{task}' fits finetune.max_tokens="
                         f"{fp.max_tokens}")
    sets = {"validation": (clean, {"n_candidates": len(raw), "set_kind": "clean",
                                   "set_name": task, "shift": ""})}
    budget = ood.max_tokens or fp.max_tokens
    for pair in pairs_for(task, selected_pairs(params)):
        raw = load_pair(pair.name, ood.n_examples, EVAL_SEED, ood.sources.get(pair.name))
        sets[pair.split] = (fits(raw, tok, budget), {"n_candidates": len(raw),
                                                     "set_kind": pair.kind,
                                                     "set_name": pair.name,
                                                     "shift": pair.shift})
    return sets


def adv_ood_stage(params: Params, size: str, progress: bool = True) -> pd.DataFrame:
    """Evaluate one size on clean, OOD and adversarial sets under every condition; returns the
    ``evaluations`` rows it wrote."""
    from robnb.attacks.run import run_attack
    from robnb.models.counting import classifier_params
    from robnb.models.registry import load_sequence_classifier

    check_model(params, size)
    tasks = stage_tasks(params)
    if not tasks:
        raise ValueError(f"profile '{params.name}': no OOD set for any of its tasks "
                         f"{params.tasks} (ood.pairs={params.ood.pairs}); offline pairs exist "
                         f"for {sorted({p.task for p in OOD_PAIRS.values() if p.offline})}")
    set_threads()
    device = resolve_device(params.device)
    info = model_info(params, size)
    phash = params_hash(params)
    # fail before heavy work when a baseline is missing or damaged; the identity of the inputs
    # (parameters, baseline and adversarially trained models) decides whether to reuse results
    identity = [STAGE_VERSION, phash, info["base_key"]]
    for task in tasks:
        for seed in params.seeds:
            for condition in params.ood.conditions:
                if condition == "ood_method":
                    continue  # determined by the parameters and the base model
                try:
                    _, meta = condition_folder(params, size, task, seed, condition, device, info,
                                               progress)
                    identity.append([task, seed, condition, stable_hash(meta)])
                except ConditionUnavailable:
                    identity.append([task, seed, condition, None])
    key = stable_hash(identity)
    cached_rows = _reuse(params, size, key)
    if cached_rows is not None:
        if progress:
            print(f"{size}: adversarial-vs-OOD results for these inputs exist; reused")
        return cached_rows
    family = params.family_of(size)
    pflops = info["pretrain_flops"]
    n_adv = params.ood.n_adversarial or params.attack.n_examples
    beast_lm = None
    rows, predictions, attack_records, strings, runs = [], [], [], [], []
    for task in tasks:
        specs = attack_specs(params, task)
        sets = None
        for seed in params.seeds:
            for condition in params.ood.conditions:
                started, t0 = now_iso(), time.time()
                run_id = f"adv-ood-{size}-{task}-s{seed}-{condition}-{stable_hash([phash], 8)}"
                try:
                    folder, meta = condition_folder(params, size, task, seed, condition, device,
                                                    info, progress)
                except ConditionUnavailable as e:
                    print(f"{size} {task} s{seed} {condition}: skipped ({e})")
                    runs.append(run_record(run_id, STAGE, phash, str(device), seed, started,
                                           time.time() - t0, status="skipped", error=str(e)))
                    continue
                model, tok = load_sequence_classifier(folder, device=device)
                if sets is None:
                    sets = eval_sets(params, task, tok)
                model_size = info["model_size"] or classifier_params(model)
                if pflops is None and info.get("pretrain_tokens"):
                    pflops = info["_pretrain_flops_fn"](model_size, info["pretrain_tokens"])
                head = {"run_id": run_id, "stage": STAGE, "family": family, "model": size,
                        "model_size": model_size, "pretrain_flops": pflops, "task": task,
                        "seed": seed, "round": meta.get("round", 0) if condition ==
                        "adversarial" else 0, "condition": condition,
                        "checkpoint": f"{condition}:{size}/{task}/seed{seed}",
                        "method_train_flops": meta.get("train_flops")}

                def record(split: str, examples: list[Example], extra: dict, ref: dict | None):
                    if not examples:
                        print(f"{size} {task} {condition} {split}: no example fits, not evaluated")
                        return None
                    scores, preds = evaluate_set(model, tok, examples, device)
                    row = {**head, "split": split, **scores, **extra,
                           "n_too_long": extra.get("n_candidates", len(examples)) - len(examples)}
                    row = _with_reference(row, ref or scores)
                    rows.append(row)
                    predictions.extend({"run_id": run_id, "condition": condition, "task": task,
                                        "seed": seed, "model": size, "split": split, **p}
                                       for p in preds)
                    if progress:
                        print(f"{size} {task} s{seed} {condition:>11} {split:<36} acc "
                              f"{row['accuracy']:.3f} f1 {row['f1']:.3f} pdr {row['pdr']:+.3f} "
                              f"(n={row['n_examples']})")
                    return scores

                clean, clean_extra = sets["validation"]
                clean_scores = record("validation", clean, clean_extra, None)
                for split, (examples, extra) in sets.items():
                    if split != "validation":
                        record(split, examples, extra, clean_scores)
                base = clean[:n_adv]
                base_scores, _ = evaluate_examples(model, tok, base, device=device)
                for spec, name in zip(specs, attack_set_names(specs)):
                    if spec.name == "beast" and beast_lm is None:
                        from robnb.stages.attack import proposal_model

                        beast_lm = proposal_model(params, device)
                    ctx = {"run_id": run_id, "family": family, "model": size,
                           "pretrain_flops": pflops, "task": task, "seed": seed}
                    recs, strs = run_attack(model, tok, base, spec, context=ctx,
                                            proposal_model=beast_lm if spec.name == "beast"
                                            else None,
                                            batch_examples=params.attack.batch_examples)
                    last = recs[-1] if recs else {}
                    for r in recs:
                        r.update(condition=condition, set_name=name, model_size=model_size)
                    for s in strs:
                        s.update(condition=condition, set_name=name)
                    attack_records += recs
                    strings += strs
                    record(f"adversarial:{name}", adversarial_examples(base, strs),
                           {"set_kind": "adversarial", "set_name": name,
                            "shift": f"{spec.name} attack, {spec.placement}, {spec.iterations} "
                                     "iterations, against this model",
                            "n_candidates": len(base), "asr": last.get("asr"),
                            "n_attacked": last.get("n_correct_before"),
                            "attack_iterations": spec.iterations}, base_scores)
                runs.append(run_record(run_id, STAGE, phash, str(device), seed, started,
                                       time.time() - t0))
    part = f"adv-ood-{size}"
    root = Path(params.run_dir)
    write_records(root, "evaluations", part, rows)
    write_table(pd.DataFrame(predictions), root / "results" / "adv_ood_predictions"
                / f"{part}.parquet")
    write_table(pd.DataFrame(attack_records), root / "results" / "adv_ood_attacks"
                / f"{part}.parquet")
    write_table(pd.DataFrame(strings), root / "results" / "adv_ood_strings" / f"{part}.parquet")
    write_records(root, "runs", part, runs)
    atomic_write_text(_marker(params, size), json.dumps({"key": key}))
    return pd.DataFrame(rows)


def _marker(params: Params, size: str) -> Path:
    return Path(params.run_dir) / "results" / "adv_ood_done" / f"adv-ood-{size}.json"


def _reuse(params: Params, size: str, key: str) -> pd.DataFrame | None:
    """The rows of a finished run of this stage with the same inputs (its runs rows are marked
    ``cached``), or None. The marker is written last, so a killed run is never reused."""
    from robnb.results.store import read_table

    marker, part = _marker(params, size), f"adv-ood-{size}"
    ev_file = Path(params.run_dir) / "results" / "evaluations" / f"{part}.parquet"
    runs_file = Path(params.run_dir) / "results" / "runs" / f"{part}.parquet"
    try:
        if json.loads(marker.read_text()).get("key") != key:
            return None
    except (OSError, ValueError):
        return None
    if not (ev_file.is_file() and runs_file.is_file()):
        return None
    runs = read_table([runs_file], "runs")
    runs.loc[runs["status"] == "ok", "status"] = "cached"
    write_records(params.run_dir, "runs", part, runs.to_dict("records"))
    return pd.read_parquet(ev_file)
