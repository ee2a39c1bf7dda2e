"""Greedy Coordinate Gradient, as the paper runs it, for a batch of examples at once.

Per iteration and example: the gradient of the loss w.r.t. the one-hot attack tokens ranks
replacement tokens per position (top-k); ``n_candidates`` distinct single-token swaps are drawn
from those, candidates that change under decode/encode are dropped, the rest are scored in a few
batched forward passes, and the lowest-loss candidate becomes the current attack (no early stop).
On multi-token targets a candidate stops as soon as it provably cannot be kept (branch and bound
in :meth:`Scorer.swap_losses`; its loss comes back as inf), and what is kept is unchanged.

With a low-precision ranking copy (``ranking_dtype: bfloat16``) all candidates are ranked on it,
then the ``CONFIRM`` best-ranked per example (and the best-ranked one it calls successful) are
re-scored exactly; the exact best of those is kept, and only exact scores reach the results.
"""

from __future__ import annotations

from typing import Iterator

import torch

from robnb.attacks.base import AttackContext, BestSoFar, IterationResult
from robnb.attacks.placement import initial_attack_ids, roundtrip_mask
from robnb.attacks.scoring import Scorer, Scores

# Best-ranked candidates per example re-scored exactly: 4 keeps the search close to exact GCG's.
# Measured on SmolLM2 (4 prompts, 10 iterations): 1, 2, 4 took 98, 103, 112 s against 273 s
# exact; with 4 the final losses equalled exact GCG's on 3 of 4 prompts, with 1 on none (its
# paths diverged: 3 ended lower, 1 higher).
CONFIRM = 4


def sample_swaps(grad: torch.Tensor, current: torch.Tensor, allowed: torch.Tensor, top_k: int,
                 n_candidates: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct single-swap candidates [E, C, L] from the top-k gradient tokens, and the
    swapped position of each [E, C]. The current token and disallowed tokens are never drawn."""
    n_ex, length, vocab = grad.shape
    score = (-grad.float()).masked_fill(~allowed[:vocab].to(grad.device), float("-inf"))
    score.scatter_(2, current.unsqueeze(-1), float("-inf"))
    k = max(1, min(top_k, int(allowed.sum()) - 1))
    top = score.topk(k, dim=-1).indices.reshape(n_ex, length * k)
    n = min(n_candidates, length * k)
    # n distinct (position, rank) pairs per example, uniformly at random
    flat = torch.rand(n_ex, length * k, generator=generator).argsort(1)[:, :n].to(grad.device)
    pos = flat // k
    candidates = current.unsqueeze(1).repeat(1, n, 1)
    candidates.scatter_(2, pos.unsqueeze(-1), top.gather(1, flat).unsqueeze(-1))
    return candidates, pos


def gcg(ctx: AttackContext) -> Iterator[IterationResult]:
    scorer, spec = ctx.scorer, ctx.spec
    n_ex = scorer.n_examples
    init = torch.tensor(initial_attack_ids(ctx.tokenizer, spec.n_attack_tokens), device=scorer.device)
    current = init.expand(n_ex, -1).clone()
    best = BestSoFar(n_ex)
    every = torch.arange(n_ex)
    for it in range(1, spec.iterations + 1):
        mark = ctx.compute_totals()
        grad, now, attack_kv = scorer.gradient(current)
        if it == 1:
            best.update(every, now.loss, now.success, current, 0)
        candidates, pos = sample_swaps(grad, current, ctx.allowed, spec.top_k, spec.n_candidates,
                                       ctx.generator)
        n_c, length = candidates.shape[1], candidates.shape[2]
        valid = roundtrip_mask(ctx.tokenizer, candidates.reshape(-1, length)).reshape(n_ex, n_c)
        ex, cand = valid.nonzero(as_tuple=True)
        kv = attack_kv if ctx.share_attack_prefix else None
        ranking = scorer.ranking_parts is not None
        s = scorer.swap_losses(ex.to(scorer.device), candidates[ex, cand], pos[ex, cand], kv,
                               ranking=ranking, keep=CONFIRM if ranking else 1)
        if scorer.ranking_parts is not None:
            ex, cand, s = _confirm(scorer, candidates, pos, ex, cand, s, kv)
        losses = torch.full((n_ex, n_c), float("inf"), device=scorer.device)
        losses[ex, cand] = s.loss
        pick = losses.argmin(1)
        move = valid.any(1).to(scorer.device)
        current = torch.where(move[:, None], candidates[every, pick], current)
        best.update(ex, s.loss, s.success, candidates[ex, cand], it)
        f, e = ctx.compute_totals()
        kept = losses[every, pick].cpu()
        yield best.snapshot(it, int(valid.sum()), f - mark[0], e - mark[1], kept, current.tolist())


def _confirm(scorer: Scorer, candidates: torch.Tensor, pos: torch.Tensor, ex: torch.Tensor,
             cand: torch.Tensor, ranked: Scores, kv) -> tuple[torch.Tensor, torch.Tensor, Scores]:
    """Exact scores of each example's ``CONFIRM`` best-ranked candidates and of its best-ranked
    candidate among those the ranking pass calls successful (a success must hold at full
    precision to count). One success per example is enough: the attack kept is chosen by loss,
    and once an attack has succeeded many candidates do; re-scoring all of them took 27% of the
    CPU time on 4 SmolLM2 prompts of which 2 succeeded (one per example: 12%)."""
    dev = scorer.device
    rank_loss = torch.full(candidates.shape[:2], float("inf"), device=dev)
    rank_loss[ex, cand] = ranked.loss
    n_top = min(CONFIRM, candidates.shape[1])
    keep = torch.zeros(candidates.shape[:2], dtype=torch.bool, device=dev)
    keep.scatter_(1, rank_loss.topk(n_top, dim=1, largest=False).indices, True)
    keep &= rank_loss.isfinite()
    success_loss = torch.full_like(rank_loss, float("inf"))
    success_loss[ex, cand] = torch.where(ranked.success, ranked.loss, float("inf"))
    best_success = success_loss.argmin(1)
    has_success = success_loss.isfinite().any(1)
    keep[has_success, best_success[has_success]] = True
    ex, cand = keep.nonzero(as_tuple=True)
    exact = scorer.swap_losses(ex, candidates[ex, cand], pos[ex, cand], kv)
    return ex, cand, exact
