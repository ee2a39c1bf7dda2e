"""Stage 02: attack one model size's fine-tuned classifiers with every attack of the profile.

Writes per-iteration records (``attacks`` table) and every attacked example's best adversarial
string (``attack_strings``), so any logged success can be replayed through the model.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from robnb.checkpoints import verify
from robnb.device import resolve_device
from robnb.params import AttackSpec, Params
from robnb.results.provenance import now_iso, run_record, stable_hash
from robnb.results.store import write_records, write_table
from robnb.stages.common import check_model, model_info, params_hash, set_threads
from robnb.stages.finetune import finetune_dir, require_finetuned
from robnb.tasks import load_task
from robnb.tasks.base import Example
from robnb.train import fits

EVAL_SEED = 0  # every size is attacked on the same validation examples


def attack_examples(params: Params, task: str, tokenizer) -> list[Example]:
    src = params.task_sources.get(task)
    return fits(load_task(task, "validation", params.attack.n_examples, EVAL_SEED, src),
                tokenizer, params.finetune.max_tokens)


def load_finetuned(params: Params, size: str, task: str, seed: int, device: torch.device):
    """The verified fine-tuned checkpoint; a clear error if it is missing or damaged."""
    from robnb.models.registry import load_sequence_classifier

    folder = finetune_dir(params, size, task, seed)
    if not folder.exists():
        raise FileNotFoundError(f"no fine-tuned model for size '{size}', task '{task}', seed "
                                f"{seed} (expected {folder}); run the finetune stage first")
    verify(folder)
    return load_sequence_classifier(folder, device=device)


def proposal_model(params: Params, device: torch.device):
    """BEAST samples tokens from the family's smallest model (as a causal LM)."""
    from transformers import AutoModelForCausalLM

    info = model_info(params, params.sizes[0])
    kwargs = {"revision": info["revision"]} if info["revision"] else {}
    return AutoModelForCausalLM.from_pretrained(info["source"], **kwargs).to(device)


def specs_for(params: Params, task: str) -> list[AttackSpec]:
    return [s for s in params.attack.attacks if s.applies_to(task)]


def attack_tasks(params: Params) -> list[str]:
    return list(params.attack.tasks or params.tasks)


def attack_stage(params: Params, size: str, progress: bool = True) -> pd.DataFrame:
    """Run every (task, seed, attack) on one size; returns the per-iteration records."""
    from robnb.attacks.run import run_attack

    check_model(params, size)
    if not params.attack.attacks:
        raise ValueError(f"profile '{params.name}' lists no attacks (attack.attacks is empty)")
    set_threads()
    device = resolve_device(params.device)
    info = model_info(params, size)
    require_finetuned(params, size, attack_tasks(params))
    beast_lm = None
    phash = params_hash(params)
    records, strings, runs = [], [], []
    for task in attack_tasks(params):
        for seed in params.seeds:
            model, tok = load_finetuned(params, size, task, seed, device)
            examples = attack_examples(params, task, tok)
            for spec in specs_for(params, task):
                if spec.name == "beast" and beast_lm is None:
                    beast_lm = proposal_model(params, device)  # loaded once, only if needed
                started, t0 = now_iso(), time.time()
                run_id = (f"attack-{size}-{task}-s{seed}-{spec.name}-{spec.placement}-"
                          f"{stable_hash([phash, spec.model_dump()], 8)}")
                pflops = info["pretrain_flops"]
                ctx = {"run_id": run_id, "family": params.family_of(size), "model": size,
                       "pretrain_flops": pflops, "task": task, "seed": seed}
                recs, strs = run_attack(model, tok, examples, spec, context=ctx,
                                        proposal_model=beast_lm if spec.name == "beast" else None,
                                        batch_examples=params.attack.batch_examples)
                if info["model_size"] is not None:
                    for r in recs:
                        r["model_size"] = info["model_size"]
                for r in recs:
                    r["checkpoint"] = f"{size}/{task}/seed{seed}"
                    r["defense"] = "finetuned"
                for s in strs:
                    s["checkpoint"] = f"{size}/{task}/seed{seed}"
                records += recs
                strings += strs
                runs.append(run_record(run_id, "attack", phash, str(device), seed, started,
                                       time.time() - t0))
                if progress:
                    last = recs[-1] if recs else {}
                    print(f"{size} {task} s{seed} {spec.name}/{spec.placement}: ASR "
                          f"{last.get('asr', float('nan')):.3f} after {spec.iterations} iterations "
                          f"({last.get('n_correct_before', 0)} attacked, {time.time() - t0:.1f}s)")
    part = f"attack-{size}"
    write_records(params.run_dir, "attacks", part, records)
    write_table(pd.DataFrame(strings), Path(params.run_dir) / "results" / "attack_strings"
                / f"{part}.parquet")
    write_records(params.run_dir, "runs", part, runs)
    return pd.DataFrame(records)


def final_asr(records: pd.DataFrame) -> pd.DataFrame:
    """ASR after the last iteration per (size, task, attack, placement), mean over seeds."""
    last = records[records["iteration"] == records.groupby("run_id")["iteration"].transform("max")]
    return (last.groupby(["model", "model_size", "task", "attack", "placement"])["asr"].mean()
            .reset_index())
