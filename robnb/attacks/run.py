"""Run an attack over a set of examples and turn it into tidy records; replay stored strings.

Only examples the model gets right before the attack are attacked (in target mode: examples
whose target is not already the model's greedy continuation). Per iteration the records give
ASR = flipped ÷ correct-before, the mean target probability of the best attacks so far, and the
iteration's attack FLOPs by the paper's formula (``attack_flops``) and as executed with the
prefix cache (``attack_flops_executed``). The strings are each attacked example's best attack so
that :func:`replay` can re-score them through the model's own forward pass.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import torch

from robnb.attacks.base import AttackContext, AttackFn, IterationResult
from robnb.attacks.beast import beast, proposal_prompts
from robnb.attacks.gcg import gcg
from robnb.attacks.generative import target_prompts
from robnb.attacks.placement import allowed_token_mask, decode_attack
from robnb.attacks.prompts import AttackPrompt, Mode, label_prompts
from robnb.attacks.random_token import random_token
from robnb.attacks.scoring import IGNORE, Scorer, Scores, ranking_copy, scores_from_logits
from robnb.models.counting import classifier_params
from robnb.params import PLACEMENTS, AttackSpec
from robnb.tasks.base import Example
from robnb.tasks.encoding import encode_text

ATTACKS: dict[str, AttackFn] = {"gcg": gcg, "random_token": random_token, "beast": beast}
CONTEXT_KEYS = ("run_id", "family", "model", "model_size", "pretrain_flops", "task", "seed")


def build_prompts(tokenizer, examples: Sequence[Example], position: float,
                  targets: Sequence[str] | None = None) -> tuple[Mode, list[AttackPrompt]]:
    """Label mode for classifiers; target mode when target strings are given."""
    if targets is None:
        return "label", label_prompts(tokenizer, examples, position)
    return "target", target_prompts(tokenizer, examples, position, targets)


def clean_success(model, prompts: Sequence[AttackPrompt], mode: Mode,
                  max_batch_tokens: int = 32_768) -> torch.Tensor:
    """Whether each prompt already 'succeeds' with no attack (i.e. is wrong before attacking)."""
    scorer = Scorer(model, prompts, mode, use_prefix_cache=False, max_batch_tokens=max_batch_tokens)
    rows = torch.arange(len(prompts))
    return scorer.losses(rows, torch.zeros(len(prompts), 0, dtype=torch.long)).success.cpu()


def attack_context(model: torch.nn.Module, tokenizer, prompts: Sequence[AttackPrompt], mode: Mode,
                   spec: AttackSpec, *, proposal_model: torch.nn.Module | None = None,
                   allowed: torch.Tensor | None = None, ascii_only: bool = False,
                   batch_index: int = 0, use_prefix_cache: bool = True,
                   share_attack_prefix: bool = True, max_batch_tokens: int = 32_768,
                   n_params: int | None = None,
                   ranking_model: torch.nn.Module | None = None) -> AttackContext:
    """Everything one attack needs for one batch of prompts; iterate ``ATTACKS[spec.name](ctx)``
    for per-iteration, per-example results. ``ranking_model``: the low-precision copy for
    ``spec.ranking_dtype`` (made here when not given; pass one to share it across batches)."""
    if allowed is None:
        vocab = model.get_input_embeddings().weight.shape[0]
        allowed = allowed_token_mask(tokenizer, vocab, ascii_only)
    if ranking_model is None:
        ranking_model = ranking_copy(model, spec.ranking_dtype)
    scorer = Scorer(model, prompts, mode, use_prefix_cache=use_prefix_cache,
                    max_batch_tokens=max_batch_tokens, n_params=n_params,
                    ranking_model=ranking_model)
    proposal = None
    if spec.name == "beast" and proposal_model is not None:
        proposal_model.eval()
        proposal = Scorer(proposal_model, proposal_prompts(list(prompts)), "target",
                          use_prefix_cache=use_prefix_cache, max_batch_tokens=max_batch_tokens)
    gen = torch.Generator().manual_seed(spec.seed * 1_000_003 + batch_index)
    return AttackContext(scorer, tokenizer, spec, allowed, gen, proposal, share_attack_prefix)


def run_attack(model: torch.nn.Module, tokenizer, examples: Sequence[Example], spec: AttackSpec, *,
               targets: Sequence[str] | None = None,
               proposal_model: torch.nn.Module | None = None,
               batch_examples: int = 8,
               context: Mapping[str, Any] | None = None,
               round_index: int = 0,
               use_prefix_cache: bool = True,
               share_attack_prefix: bool = True,
               max_batch_tokens: int = 32_768,
               ascii_only: bool = False,
               n_params: int | None = None,
               progress: Callable[[int, int], None] | None = None,
               ) -> tuple[list[dict], list[dict]]:
    """Attack ``examples`` with ``spec``; returns (per-iteration records, per-example strings).

    ``targets`` (one string per example) switches to target mode for causal LMs. ``context``
    fills the result-table columns this function cannot know (run_id, family, model, task,
    pretrain_flops, seed). ``batch_examples`` examples are attacked together; ``max_batch_tokens``
    bounds one forward pass. ``progress(done, total)`` is called after every iteration of every
    batch. ``n_params`` overrides N of the FLOP formula (default: all model parameters).
    """
    if spec.name not in ATTACKS:
        raise KeyError(f"unknown attack '{spec.name}'; known: {', '.join(ATTACKS)}")
    was_training = model.training
    model.eval()
    try:
        mode, prompts = build_prompts(tokenizer, examples, spec.position, targets)
        attacked = (~clean_success(model, prompts, mode, max_batch_tokens)).nonzero().squeeze(1).tolist()
        vocab = model.get_input_embeddings().weight.shape[0]
        allowed = allowed_token_mask(tokenizer, vocab, ascii_only)
        n_params = n_params or classifier_params(model)
        curve = _Curve(spec.iterations)
        strings: list[dict] = []
        batches = [attacked[i:i + batch_examples] for i in range(0, len(attacked), batch_examples)]
        ranking_model = ranking_copy(model, spec.ranking_dtype) if batches else None
        for b, idx in enumerate(batches):
            ctx = attack_context(model, tokenizer, [prompts[i] for i in idx], mode, spec,
                                 proposal_model=proposal_model, allowed=allowed, batch_index=b,
                                 use_prefix_cache=use_prefix_cache,
                                 share_attack_prefix=share_attack_prefix,
                                 max_batch_tokens=max_batch_tokens, n_params=n_params,
                                 ranking_model=ranking_model)
            tick, last = time.perf_counter(), None
            for last in ATTACKS[spec.name](ctx):
                now = time.perf_counter()
                curve.add(last, now - tick)
                tick = now
                if progress is not None:
                    progress(b * spec.iterations + last.iteration, len(batches) * spec.iterations)
            strings += _strings(tokenizer, spec, round_index, idx, last, targets)
        base = {**dict.fromkeys(CONTEXT_KEYS), "model_size": n_params, "seed": spec.seed,
                **dict(context or {})}
        for s in strings:
            s.update({k: base[k] for k in ("run_id", "model", "task", "seed")})
        head = {**base, "attack": spec.name, "placement": spec.placement, "round": round_index,
                "n_examples": len(examples), "n_correct_before": len(attacked)}
        return curve.records(head, len(attacked)), strings
    finally:
        model.train(was_training)


class _Curve:
    """Per-iteration sums over the example batches."""

    def __init__(self, n_iterations: int):
        self.sums = [dict(flipped=0, prob=0.0, loss=0.0, flops=0.0, executed=0.0, scored=0, wall=0.0)
                     for _ in range(n_iterations)]

    def add(self, res: IterationResult, wall: float) -> None:
        s = self.sums[res.iteration - 1]
        s["flipped"] += int(res.success.sum())
        s["prob"] += float(res.prob.sum())
        s["loss"] += float(res.loss.sum())
        s["flops"] += res.flops
        s["executed"] += res.flops_executed
        s["scored"] += res.n_scored
        s["wall"] += wall

    def records(self, head: dict, n_attacked: int) -> list[dict]:
        def mean(x: float) -> float:
            return x / n_attacked if n_attacked else float("nan")

        return [{**head, "iteration": t + 1, "n_flipped": s["flipped"], "asr": mean(s["flipped"]),
                 "mean_target_prob": mean(s["prob"]), "mean_loss": mean(s["loss"]),
                 "attack_flops": s["flops"], "attack_flops_executed": s["executed"],
                 "n_candidates_scored": s["scored"], "wall_s": s["wall"]}
                for t, s in enumerate(self.sums)]


def _strings(tokenizer, spec: AttackSpec, round_index: int, idx: list[int],
             last: IterationResult, targets: Sequence[str] | None) -> list[dict]:
    """Each attacked example's best attack, with what replay needs to re-score it."""
    return [{"example_index": i, "attack": spec.name, "placement": spec.placement,
             "position": spec.position, "round": round_index, "iteration": int(last.found_at[j]),
             "attack_string": decode_attack(tokenizer, last.attack_ids[j]),
             "attack_ids": list(last.attack_ids[j]), "success": bool(last.success[j]),
             "loss": float(last.loss[j]), "target_prob": float(last.prob[j]),
             "target": None if targets is None else targets[i]}
            for j, i in enumerate(idx)]


def replay(model: torch.nn.Module, tokenizer, examples: Sequence[Example],
           strings: Sequence[Mapping[str, Any]], *, targets: Sequence[str] | None = None,
           batch_size: int = 16) -> list[dict]:
    """Re-score stored attack strings with the model's own forward pass (no cache, no shortcuts).

    Each string needs ``example_index``, ``attack_string`` and ``position`` (or ``placement``);
    target mode is used when ``targets`` is given or the string carries a ``target``.
    Returns per string: success, loss, target_prob, the logged success and whether they match.
    """
    was_training = model.training
    model.eval()
    step = batch_size if model.config.pad_token_id is not None else 1  # HF pools via the pad id
    out: list[dict] = []
    try:
        for start in range(0, len(strings), step):
            group = strings[start:start + step]
            sc = _rescore(model, [_replay_input(tokenizer, examples, s, targets) for s in group])
            for r, s in enumerate(group):
                logged = s.get("success")
                out.append({"example_index": int(s["example_index"]),
                            "success": bool(sc.success[r]), "loss": float(sc.loss[r]),
                            "target_prob": float(sc.prob[r]), "logged_success": logged,
                            "matches": logged is None or bool(sc.success[r]) == bool(logged)})
        return out
    finally:
        model.train(was_training)


def _replay_input(tokenizer, examples: Sequence[Example], s: Mapping[str, Any],
                  targets: Sequence[str] | None) -> tuple[Mode, list[int], list[int], AttackPrompt]:
    """(mode, full input ids, absolute read positions, prompt) for one stored string."""
    i = int(s["example_index"])
    position = float(s.get("position", PLACEMENTS.get(s.get("placement"), 1.0)))
    target = targets[i] if targets is not None else s.get("target")
    mode, (prompt,) = build_prompts(tokenizer, [examples[i]], position,
                                    None if target is None else [target])
    attack = encode_text(tokenizer, s["attack_string"])
    ids = list(prompt.before) + attack + list(prompt.after)
    return mode, ids, [len(prompt.before) + len(attack) + r for r in prompt.read], prompt


def _rescore(model: torch.nn.Module,
             items: list[tuple[Mode, list[int], list[int], AttackPrompt]]) -> Scores:
    modes = {m for m, *_ in items}
    if len(modes) != 1:
        raise ValueError("replay one mode (label or target) per call")
    mode = modes.pop()
    device = model.get_input_embeddings().weight.device
    pad = model.config.pad_token_id
    width, n_read = max(len(x[1]) for x in items), max(len(x[2]) for x in items)
    ids = torch.full((len(items), width), 0 if pad is None else pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    read = torch.zeros(len(items), n_read, dtype=torch.long)
    target = torch.full((len(items), n_read), IGNORE, dtype=torch.long)
    for r, (_, seq, rd, prompt) in enumerate(items):
        ids[r, :len(seq)], mask[r, :len(seq)] = torch.tensor(seq), 1
        read[r, :len(rd)], target[r, :len(rd)] = torch.tensor(rd), torch.tensor(prompt.target)
    avoid = torch.tensor([-1 if x[3].avoid is None else x[3].avoid for x in items], device=device)
    with torch.no_grad():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    if mode == "label":
        logits = logits.unsqueeze(1)  # HF pooled the last non-pad token itself
    else:
        logits = logits.gather(1, read.to(device).unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
    return scores_from_logits(logits, target.to(device), avoid, mode)
