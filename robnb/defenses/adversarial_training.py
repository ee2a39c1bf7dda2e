"""Adversarial training, round by round (paper A), with exact resume.

Start from a fine-tuned classifier. Each round:

1. attack a fresh random sample of clean training examples with the training attack at the
   round's strength (linear ramp over the rounds, or full strength every round: the no-ramp
   ablation);
2. add the (successful) adversarial examples, with their true labels, to a pool;
3. train ``epochs_per_round`` epoch(s) on at most ``max_train`` examples, at most
   ``max_adversarial_fraction`` of them drawn from the pool by the rank rule (rank = ½ recency
   rank + ½ loss rank, weight ∝ exp(t·(rank − max rank)), without replacement), the rest clean;
   the optimizer (and its state) persists across rounds;
4. evaluate: clean validation metrics every round, the evaluation attacks after selected rounds;
5. write an atomic, verified checkpoint: model, optimizer and scheduler state, pool, random
   states (python, numpy, torch, the sampler), counters, and every record so far.

A run killed at any moment resumes from its last complete round and gives the numbers an
uninterrupted run gives (CPU, same threads). A checkpoint with damaged files, or made with other
parameters, is refused with a message naming the file or the parameter.

Defense compute per round = adversarial-example generation FLOPs (the training attack's logged
FLOPs) + training FLOPs (+ the forward passes that score the pool for the loss rank); clean
fine-tuning is excluded, as in the paper, and recorded beside it.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robnb.checkpoints import MANIFEST, CorruptCheckpoint, build_atomically, verify
from robnb.params import AdversarialTrainingParams, AttackSpec, FinetuneParams, Params
from robnb.results.provenance import stable_hash
from robnb.tasks.base import Example

ROUND_PREFIX = "round-"
RECORD_TABLES = ("training", "evaluations", "attacks", "attack_strings", "runs")


class CheckpointMismatch(CorruptCheckpoint):
    """A round checkpoint made with other parameters than the ones given now."""


# ---------------------------------------------------------------- pool sampling


def recency_ranks(n: int) -> np.ndarray:
    """The pool is kept in the order examples were added: the newest gets the highest rank."""
    return np.arange(n, dtype=float)


def loss_ranks(losses: Sequence[float]) -> np.ndarray:
    """0 for the lowest loss … n−1 for the highest (ties: the older example ranks lower)."""
    order = np.argsort(np.asarray(losses, dtype=float), kind="stable")
    ranks = np.empty(len(order), dtype=float)
    ranks[order] = np.arange(len(order))
    return ranks


def pool_ranks(losses: Sequence[float]) -> np.ndarray:
    """rank = 0.5·recency rank + 0.5·loss rank (pool in insertion order)."""
    return 0.5 * recency_ranks(len(losses)) + 0.5 * loss_ranks(losses)


def pool_probabilities(losses: Sequence[float], temperature: float) -> np.ndarray:
    """Sampling probabilities ∝ exp(temperature·(rank − max rank)) (newest, hardest favoured)."""
    if len(losses) == 0:
        return np.zeros(0)
    r = pool_ranks(losses)
    w = np.exp(temperature * (r - r.max()))
    return w / w.sum()


def sample_pool(losses: Sequence[float], k: int, temperature: float,
                rng: np.random.Generator) -> np.ndarray:
    """Indices of ``min(k, len(pool))`` pool examples drawn by rank weight without replacement."""
    n = len(losses)
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=int)
    return rng.choice(n, size=k, replace=False, p=pool_probabilities(losses, temperature))


def true_label_loss_from_attack_loss(attack_loss: float) -> float:
    """Binary label mode: the attack logs −log p(wrong label); the true label's loss is
    −log(1 − p(wrong label))."""
    p = math.exp(-attack_loss)
    return -math.log(max(1.0 - p, 1e-12))


def split_counts(at: AdversarialTrainingParams, pool_size: int, n_clean_available: int
                 ) -> tuple[int, int]:
    """(adversarial, clean) examples of one round: adversarial at most ``fraction·max_train``
    and at most the pool, the rest of ``max_train`` clean."""
    n_adv = min(pool_size, math.floor(at.max_adversarial_fraction * at.max_train))
    return n_adv, min(at.max_train - n_adv, n_clean_available)


# ---------------------------------------------------------------- schedule


def ramp_iterations(round_index: int, n_rounds: int, start: int, end: int,
                    ramp: bool = True) -> int:
    """Attack iterations of round ``round_index`` (1-based): ``start`` in round 1 rising
    linearly to ``end`` in the last round (rounded half up); ``ramp=False``: ``end`` always."""
    if not 1 <= round_index <= n_rounds:
        raise ValueError(f"round {round_index} is outside 1..{n_rounds}")
    if not ramp:
        return end
    if n_rounds == 1:
        return start
    x = start + (end - start) * (round_index - 1) / (n_rounds - 1)
    return math.floor(x + 0.5)


def rounds_for(params: Params, size: str) -> int:
    """Rounds of one model size: from the int/list/mapping, clipped to [min_rounds, max_rounds]."""
    at = params.adversarial_training
    if size not in params.models:
        raise ValueError(f"size '{size}' is not in profile '{params.name}'; its models: "
                         f"{', '.join(params.models)}")
    if isinstance(at.rounds, int):
        n = at.rounds
    elif isinstance(at.rounds, dict):
        n = at.rounds[size]
    else:
        i = params.models.index(size)
        n = at.rounds[min(i, len(at.rounds) - 1)]
    if at.min_rounds is not None:
        n = max(n, at.min_rounds)
    if at.max_rounds is not None:
        n = min(n, at.max_rounds)
    return n


def evaluated_rounds(at: AdversarialTrainingParams, n_rounds: int) -> list[int]:
    """Rounds after which the evaluation attacks run (0 = the fine-tuned model)."""
    rounds = {r for r in at.evaluate_after_rounds if r <= n_rounds}
    if at.evaluate_last_round:
        rounds.add(n_rounds)
    return sorted(rounds)


def defense_name(at: AdversarialTrainingParams) -> str:
    """``adv_<attack>`` (+ ``_<placement>`` unless suffix, + ``_no_ramp``): the names the paper
    importer gives the paper's adversarially trained checkpoints."""
    name = f"adv_{at.attack.name}"
    if at.attack.placement != "suffix":
        name += f"_{at.attack.placement}"
    return name + ("" if at.ramp else "_no_ramp")


def round_finetune_params(params: Params) -> FinetuneParams:
    """The training loop's parameters for one round (context budget from fine-tuning)."""
    at = params.adversarial_training
    return params.finetune.model_copy(update={
        "epochs": at.epochs_per_round, "batch_size": at.batch_size, "lr": at.lr,
        "optimizer": at.optimizer, "schedule": at.schedule, "warmup_steps": 0,
        "weight_decay": at.weight_decay, "grad_clip": at.grad_clip})


# ---------------------------------------------------------------- folders and identity


def training_dir(params: Params, size: str, task: str, seed: int) -> Path:
    """Where the round checkpoints of one (size, task, seed) live."""
    at = params.adversarial_training
    return params.run_dir / "adversarial_training" / defense_name(at) / size / task / f"seed{seed}"


def round_dir(base: Path, round_index: int) -> Path:
    return Path(base) / f"{ROUND_PREFIX}{round_index:04d}"


def complete_rounds(base: Path) -> list[int]:
    """Round folders present (each appears by one rename only when complete)."""
    base = Path(base)
    if not base.is_dir():
        return []
    out = []
    for p in base.iterdir():
        if p.is_dir() and p.name.startswith(ROUND_PREFIX):
            try:
                out.append(int(p.name[len(ROUND_PREFIX):]))
            except ValueError:
                continue
    return sorted(out)


def identity(params: Params, size: str, task: str, seed: int, finetune_key: str | None
             ) -> dict[str, Any]:
    """Every parameter a round checkpoint depends on, flattened to dotted keys."""
    at = params.adversarial_training
    fp = params.finetune
    data = {
        "size": size, "task": task, "seed": seed, "rounds": rounds_for(params, size),
        "finetune_key": finetune_key, "task_source": params.task_sources.get(task),
        "finetune.max_tokens": fp.max_tokens, "finetune.n_train": fp.train_size(task),
        "finetune.n_val": fp.n_val,
        "adversarial_training": at.model_dump(
            mode="json", exclude={"tasks", "rounds", "min_rounds", "max_rounds",
                                  "keep_checkpoints"}),
    }
    return _flatten(data)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        out = {f"{prefix}length": len(obj)} if prefix else {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): obj}


def check_identity(folder: Path, meta: dict, expected: dict[str, Any]) -> None:
    """Refuse a checkpoint made with other parameters, naming every differing one."""
    recorded = meta.get("params") or {}
    if meta.get("params_hash") == stable_hash(expected) and recorded == expected:
        return
    keys = sorted(set(recorded) | set(expected))
    diff = [k for k in keys if recorded.get(k, "<absent>") != expected.get(k, "<absent>")]
    shown = "; ".join(f"{k}: checkpoint has {recorded.get(k, '<absent>')!r}, parameters give "
                      f"{expected.get(k, '<absent>')!r}" for k in diff[:8])
    more = f" (+{len(diff) - 8} more)" if len(diff) > 8 else ""
    raise CheckpointMismatch(
        f"{Path(folder) / MANIFEST}: this adversarial-training checkpoint was made with other "
        f"parameters (params_hash {meta.get('params_hash')!r}, these give "
        f"{stable_hash(expected)!r}): {shown or 'recorded parameters missing'}{more}. Refusing "
        f"to resume from it; restore those parameters, or delete {Path(folder).parent} to train "
        f"again")


def open_round(folder: Path, expected: dict[str, Any]) -> dict:
    """Verify a round checkpoint's files and parameters; its manifest meta."""
    try:
        meta = verify(folder)
    except CorruptCheckpoint as e:
        raise CorruptCheckpoint(f"adversarial-training checkpoint refused: {e}. Delete "
                                f"{folder} to redo that round from the one before") from None
    check_identity(folder, meta, expected)
    return meta


def final_checkpoint(params: Params, size: str, task: str, seed: int) -> Path:
    """The verified model folder after the last round (``load_sequence_classifier`` reads it)."""
    from robnb.stages.finetune import finetune_dir

    base = training_dir(params, size, task, seed)
    n = rounds_for(params, size)
    folder = round_dir(base, n)
    if not folder.exists():
        done = [r for r in complete_rounds(base) if r > 0]
        have = f"its last complete round is {max(done)}" if done else "no round is complete"
        raise FileNotFoundError(f"no adversarially trained model for size '{size}', task "
                                f"'{task}', seed {seed} after round {n} (expected {folder}; "
                                f"{have}); run the adversarial_training stage first")
    ft = finetune_dir(params, size, task, seed)
    ft_key = verify(ft).get("key") if ft.exists() else None
    open_round(folder, identity(params, size, task, seed, ft_key))
    return folder / "model"


# ---------------------------------------------------------------- pool entries


def adversarial_example(ex: Example, attack: str, position: float, round_index: int
                        ) -> dict[str, Any]:
    """A pool entry: the example with the attack inserted into its modifiable text."""
    before, after = ex.split_at(position)
    head = len(ex.instructions) + len(ex.prefix)
    tail = len(ex.suffix) + len(ex.answer_prompt)
    modifiable = before[head:] + attack + after[:len(after) - tail]
    return {"instructions": ex.instructions, "prefix": ex.prefix, "modifiable": modifiable,
            "suffix": ex.suffix, "label": ex.label, "label_texts": list(ex.label_texts),
            "answer_prompt": ex.answer_prompt, "round": round_index}


def entry_example(entry: dict[str, Any]) -> Example:
    return Example(entry["instructions"], entry["prefix"], entry["modifiable"], entry["suffix"],
                   int(entry["label"]), tuple(entry["label_texts"]), entry["answer_prompt"],
                   meta={"round": entry["round"], "adversarial": True})


# ---------------------------------------------------------------- run state


@dataclass
class RunState:
    """Everything a round needs and a checkpoint holds (besides model and optimizer)."""
    round: int = 0
    pool: list[dict] = field(default_factory=list)
    defense_flops: float = 0.0
    records: dict[str, list[dict]] = field(
        default_factory=lambda: {t: [] for t in RECORD_TABLES})


def _rng_snapshot(rng: np.random.Generator) -> tuple[dict, dict[str, torch.Tensor]]:
    py = random.getstate()
    npst = np.random.get_state()
    state = {"python": [py[0], list(py[1]), py[2]],
             "numpy": [npst[0], npst[1].tolist(), int(npst[2]), int(npst[3]), float(npst[4])],
             "sampler": rng.bit_generator.state}
    return state, {"torch": torch.get_rng_state()}


def _rng_restore(state: dict, tensors: dict[str, torch.Tensor]) -> np.random.Generator:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(tensors["torch"])
    rng = np.random.default_rng()
    rng.bit_generator.state = state["sampler"]
    return rng


def _json_dump(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, sort_keys=True, allow_nan=True))


def save_round(folder: Path, state: RunState, rng: np.random.Generator, meta: dict,
               model=None, tokenizer=None, optimizer=None, scheduler=None) -> Path:
    """Write one round's checkpoint atomically (a temporary folder renamed into place)."""

    def build(tmp: Path) -> dict:
        if model is not None:
            model.save_pretrained(str(tmp / "model"), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp / "model"))
        if optimizer is not None:
            torch.save({"optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler is not None else None},
                       tmp / "optimizer.pt")
        rng_state, rng_tensors = _rng_snapshot(rng)
        _json_dump(tmp / "rng.json", rng_state)
        torch.save(rng_tensors, tmp / "rng.pt")
        _json_dump(tmp / "pool.json", state.pool)
        _json_dump(tmp / "state.json", {"round": state.round,
                                        "defense_flops": state.defense_flops})
        _json_dump(tmp / "records.json", state.records)
        return {**meta, "round": state.round, "has_model": model is not None}

    return build_atomically(folder, build)


def load_round(folder: Path) -> tuple[RunState, np.random.Generator]:
    """The state and restored random generators of a verified round checkpoint."""
    st = json.loads((folder / "state.json").read_text())
    state = RunState(round=int(st["round"]), defense_flops=float(st["defense_flops"]),
                     pool=json.loads((folder / "pool.json").read_text()),
                     records=json.loads((folder / "records.json").read_text()))
    rng = _rng_restore(json.loads((folder / "rng.json").read_text()),
                       torch.load(folder / "rng.pt", weights_only=True))
    return state, rng


def clean_stale(base: Path) -> None:
    """Remove what a killed run left half-written or half-deleted (hidden temporary folders)."""
    if Path(base).is_dir():
        for p in Path(base).iterdir():
            if p.name.startswith(f".{ROUND_PREFIX}") and p.name.endswith((".tmp", ".old")):
                shutil.rmtree(p, ignore_errors=True)


def prune(base: Path, latest: int, keep: set[int], policy: str) -> None:
    """Drop older round folders the keep policy does not want (renamed away first, so a kill
    mid-deletion never leaves a half folder under a round name)."""
    if policy == "all":
        return
    for r in complete_rounds(base):
        if r >= latest or (policy == "evaluated" and r in keep):
            continue
        src = round_dir(base, r)
        trash = src.parent / f".{src.name}.{uuid.uuid4().hex[:8]}.old"
        src.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)


# ---------------------------------------------------------------- the procedure


@dataclass
class Setup:
    """The fixed inputs of one (size, task, seed) run; records get ``context`` columns."""
    params: Params
    size: str
    task: str
    seed: int
    train: list[Example]
    val: list[Example]
    eval_examples: list[Example]
    context: dict[str, Any]   # run_id, family, model, model_size, pretrain_flops, task, seed
    finetune_flops: float
    finetune_key: str | None
    device: torch.device
    params_hash: str = ""

    @property
    def at(self) -> AdversarialTrainingParams:
        return self.params.adversarial_training

    @property
    def n_rounds(self) -> int:
        return rounds_for(self.params, self.size)

    @property
    def checkpoint_name(self) -> str:
        return f"{self.size}/{self.task}/seed{self.seed}/{defense_name(self.at)}"

    @property
    def key(self) -> str:
        return stable_hash(identity(self.params, self.size, self.task, self.seed,
                                    self.finetune_key), 8)


def pool_losses(model, tokenizer, pool: Sequence[dict], mode: str, n_params: int
                ) -> tuple[list[float], float]:
    """Each pool example's true-label loss (current model, or as the attack logged it) and the
    forward FLOPs that scoring cost."""
    if not pool:
        return [], 0.0
    if mode == "attack":
        return [true_label_loss_from_attack_loss(e["attack_loss"]) for e in pool], 0.0
    from robnb.evaluation import predict_proba
    from robnb.flops import forward_flops

    from robnb.tasks.encoding import encode_examples

    examples = [entry_example(e) for e in pool]
    probs = predict_proba(model, tokenizer, examples)
    labels = [int(e["label"]) for e in pool]
    losses = [float(-np.log(max(probs[i, y], 1e-12))) for i, y in enumerate(labels)]
    tokens = sum(len(ids) for ids in encode_examples(tokenizer, examples))
    return losses, forward_flops(n_params, tokens)


def evaluation_specs(at: AdversarialTrainingParams, task: str) -> list[AttackSpec]:
    return [s for s in at.evaluation_attacks if s.applies_to(task)]


def evaluate_round(setup: Setup, model, tokenizer, round_index: int, defense_flops: float,
                   attacks: bool) -> dict[str, list[dict]]:
    """Clean validation metrics, and (when ``attacks``) every evaluation attack's records."""
    from robnb.attacks.run import run_attack
    from robnb.evaluation import evaluate_examples
    from robnb.results.provenance import now_iso, run_record

    at, ctx = setup.at, setup.context
    tags = {"defense": defense_name(at), "checkpoint": setup.checkpoint_name}
    scores, _ = evaluate_examples(model, tokenizer, setup.val, device=setup.device)
    majority = max(sum(e.label == k for e in setup.val) for k in range(2)) / max(len(setup.val), 1)
    out: dict[str, list[dict]] = {"evaluations": [{
        **{k: ctx[k] for k in ("run_id", "family", "model", "model_size", "pretrain_flops",
                               "task", "seed")},
        "split": "validation", "round": round_index, "majority_baseline": majority,
        "defense_flops_cumulative": defense_flops, **scores, **tags}],
        "attacks": [], "attack_strings": [], "runs": []}
    if not attacks:
        return out
    for spec in evaluation_specs(at, setup.task):
        started, t0 = now_iso(), time.time()
        run_id = (f"advtrain-{setup.size}-{setup.task}-s{setup.seed}-{tags['defense']}-"
                  f"r{round_index}-{spec.name}-{spec.placement}-"
                  f"{stable_hash([setup.key, spec.model_dump(mode='json')], 8)}")
        recs, strs = run_attack(model, tokenizer, setup.eval_examples, spec,
                                context={**ctx, "run_id": run_id}, round_index=round_index,
                                batch_examples=at.batch_examples)
        transfer = (spec.name, spec.placement) != (at.attack.name, at.attack.placement)
        for r in recs:
            r.update(tags, model_size=ctx["model_size"], defense_flops_cumulative=defense_flops,
                     trained_attack=at.attack.name, trained_placement=at.attack.placement,
                     transfer=transfer, attack_iterations=spec.iterations)
        for s in strs:
            s.update(tags, purpose="evaluation")
        out["attacks"] += recs
        out["attack_strings"] += strs
        out["runs"].append(run_record(run_id, "adversarial_training_eval", setup.params_hash,
                                      str(setup.device), setup.seed, started, time.time() - t0))
    return out


def run_round(setup: Setup, model, tokenizer, optimizer, scheduler, state: RunState,
              rng: np.random.Generator, progress: bool = False) -> RunState:
    """One round: attack → pool → train → evaluate. Mutates ``state`` and the model."""
    from robnb.attacks.run import run_attack
    from robnb.models.counting import classifier_params
    from robnb.train import fits, train_epochs

    at, ctx = setup.at, setup.context
    r = state.round + 1
    n_params = classifier_params(model)
    iterations = ramp_iterations(r, setup.n_rounds, at.ramp_start_iterations,
                                 at.ramp_end_iterations, at.ramp)
    spec = at.attack.model_copy(update={"iterations": iterations,
                                        "seed": int(rng.integers(0, 2**31 - 1))})
    # 1. attack a fresh random sample of clean training examples
    pick = rng.choice(len(setup.train), size=min(at.n_attack_per_round, len(setup.train)),
                      replace=False)
    targets = [setup.train[i] for i in pick]
    recs, strs = run_attack(model, tokenizer, targets, spec, context=ctx, round_index=r,
                            batch_examples=at.batch_examples, n_params=n_params)
    generation_flops = float(sum(x["attack_flops"] for x in recs))
    # 2. the adversarial examples (true labels) join the pool
    new = []
    for s in strs:
        if at.pool_only_successful and not s["success"]:
            continue
        entry = adversarial_example(targets[s["example_index"]], s["attack_string"],
                                    s["position"], r)
        entry["attack_loss"] = s["loss"]
        new.append(entry)
    if new:
        kept = fits([entry_example(e) for e in new], tokenizer, setup.params.finetune.max_tokens)
        kept_texts = {e.text for e in kept}
        new = [e for e in new if entry_example(e).text in kept_texts]
    state.pool.extend(new)
    # 3. one epoch on pooled adversarial + clean examples
    losses, scoring_flops = pool_losses(model, tokenizer, state.pool, at.pool_loss, n_params)
    n_adv, n_clean = split_counts(at, len(state.pool), len(setup.train))
    chosen = sample_pool(losses, n_adv, at.pool_temperature, rng)
    clean = rng.choice(len(setup.train), size=n_clean, replace=False)
    examples = [entry_example(state.pool[i]) for i in chosen] + [setup.train[i] for i in clean]
    fp = round_finetune_params(setup.params)
    train_seed = int(rng.integers(0, 2**31 - 1))
    ts = train_epochs(model, tokenizer, examples, fp, train_seed, epochs=at.epochs_per_round,
                      optimizer=optimizer, scheduler=scheduler, progress=progress,
                      desc=f"advtrain {setup.size} {setup.task} s{setup.seed} round {r}")
    round_flops = generation_flops + ts.flops + scoring_flops
    state.defense_flops += round_flops
    state.round = r
    # 4. records of this round
    train_asr = recs[-1]["asr"] if recs else float("nan")
    state.records["training"].append({
        **{k: ctx[k] for k in ("run_id", "family", "model", "model_size", "task", "seed")},
        "round": r, "train_flops": ts.flops, "adversarial_generation_flops": generation_flops,
        "pool_scoring_flops": scoring_flops, "defense_flops": round_flops,
        "defense_flops_cumulative": state.defense_flops, "finetune_flops": setup.finetune_flops,
        "defense": defense_name(at), "checkpoint": setup.checkpoint_name,
        "attack": spec.name, "placement": spec.placement, "attack_iterations": iterations,
        "n_attacked": len(targets), "n_correct_before": recs[0]["n_correct_before"] if recs else 0,
        "n_successful": sum(bool(s["success"]) for s in strs), "train_attack_asr": train_asr,
        "n_pool_added": len(new), "n_pool": len(state.pool), "n_adversarial_train": len(chosen),
        "n_clean_train": len(clean), "steps": ts.step, "tokens": ts.tokens,
        "train_loss_mean": float(np.mean(ts.losses)) if ts.losses else float("nan")})
    for s in strs:
        s.update(defense=defense_name(at), checkpoint=setup.checkpoint_name, purpose="training")
    state.records["attack_strings"] += strs
    ev = evaluate_round(setup, model, tokenizer, r, state.defense_flops,
                        r in evaluated_rounds(at, setup.n_rounds))
    for t, rows in ev.items():
        state.records[t] += rows
    return state


def adversarially_train(setup: Setup, load_start: Callable[[], tuple[Any, Any]],
                        progress: bool = False,
                        on_round: Callable[[RunState], None] | None = None
                        ) -> tuple[RunState, str]:
    """Run (or resume) every round of one (size, task, seed); returns the final state and
    ``"ok"`` (ran from scratch), ``"resumed"`` (continued) or ``"cached"`` (already complete).

    ``load_start()`` returns the fine-tuned (model, tokenizer) to start from.
    """
    from robnb.models.registry import load_sequence_classifier
    from robnb.train import make_optimizer

    at = setup.at
    base = training_dir(setup.params, setup.size, setup.task, setup.seed)
    clean_stale(base)
    expected = identity(setup.params, setup.size, setup.task, setup.seed, setup.finetune_key)
    meta = {"params": expected, "params_hash": stable_hash(expected),
            "defense": defense_name(at), "n_rounds": setup.n_rounds}
    keep = set(evaluated_rounds(at, setup.n_rounds))
    fp = round_finetune_params(setup.params)
    steps_per_round = math.ceil(at.max_train / at.batch_size) * at.epochs_per_round
    done = complete_rounds(base)
    if done and max(done) > setup.n_rounds:
        raise CheckpointMismatch(f"{round_dir(base, max(done))}: round {max(done)} exists but "
                                 f"these parameters train {setup.n_rounds} rounds for size "
                                 f"'{setup.size}'; delete {base} to train again")
    if done:
        latest = round_dir(base, max(done))
        m = open_round(latest, expected)
        state, rng = load_round(latest)
        if state.round == setup.n_rounds:
            return state, "cached"
        if m.get("has_model"):
            model, tok = load_sequence_classifier(latest / "model", device=setup.device)
        else:
            model, tok = load_start()
        optimizer, scheduler = make_optimizer(model, fp, steps_per_round * setup.n_rounds)
        if (latest / "optimizer.pt").exists():
            saved = torch.load(latest / "optimizer.pt", weights_only=True)
            optimizer.load_state_dict(saved["optimizer"])
            if saved["scheduler"] is not None:
                scheduler.load_state_dict(saved["scheduler"])
        # loading consumed random numbers; continue exactly where the checkpoint was made
        rng = _rng_restore(json.loads((latest / "rng.json").read_text()),
                           torch.load(latest / "rng.pt", weights_only=True))
        status = "resumed"
    else:
        model, tok = load_start()
        optimizer, scheduler = make_optimizer(model, fp, steps_per_round * setup.n_rounds)
        seed = int(stable_hash(["adversarial_training", setup.seed, setup.task, setup.size],
                               8), 16)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        state = RunState()
        ev = evaluate_round(setup, model, tok, 0, 0.0, 0 in keep)
        for t, rows in ev.items():
            state.records[t] += rows
        state.records["training"].append({
            **{k: setup.context[k] for k in ("run_id", "family", "model", "model_size", "task",
                                             "seed")},
            "round": 0, "train_flops": 0.0, "adversarial_generation_flops": 0.0,
            "pool_scoring_flops": 0.0, "defense_flops": 0.0, "defense_flops_cumulative": 0.0,
            "finetune_flops": setup.finetune_flops, "defense": defense_name(at),
            "checkpoint": setup.checkpoint_name, "attack": at.attack.name,
            "placement": at.attack.placement, "attack_iterations": 0, "n_pool": 0})
        save_round(round_dir(base, 0), state, rng, meta)
        if on_round:
            on_round(state)
        status = "ok"
    while state.round < setup.n_rounds:
        t0 = time.time()
        state = run_round(setup, model, tok, optimizer, scheduler, state, rng, progress=False)
        save_round(round_dir(base, state.round), state, rng, meta, model, tok, optimizer,
                   scheduler)
        prune(base, state.round, keep, at.keep_checkpoints)
        if progress:
            tr = state.records["training"][-1]
            ev = state.records["evaluations"][-1]
            print(f"{setup.size} {setup.task} s{setup.seed} round {state.round}/"
                  f"{setup.n_rounds}: {tr['attack_iterations']} it, train-attack ASR "
                  f"{tr['train_attack_asr']:.2f}, pool {tr['n_pool']}, clean acc "
                  f"{ev['accuracy']:.3f}, defense FLOPs {state.defense_flops:.3g} "
                  f"({time.time() - t0:.1f}s)")
        if on_round:
            on_round(state)
    return state, status
