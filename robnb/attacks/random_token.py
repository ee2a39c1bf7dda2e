"""RandomToken: fresh uniform random attack tokens every iteration.

The attack is the text of the random tokens, scored as the model sees that text (decoded and
re-encoded, so a replayed string gives the same ids). An example counts as broken from its first
success on (the paper's cumulative curve) and is not attacked after that. Iterations are
independent, so several are scored in one batched pass; the formula FLOPs count only the rows the
sequential algorithm would have run, the executed FLOPs also rows of examples that broke earlier
in the same batch.
"""

from __future__ import annotations

from typing import Iterator

import torch

from robnb.attacks.base import AttackContext, BestSoFar, IterationResult
from robnb.attacks.placement import reencode


def random_attacks(tokenizer, allowed_ids: torch.Tensor, n: int, length: int,
                   generator: torch.Generator) -> list[list[int]]:
    """``n`` attacks of ``length`` uniform random usable tokens, as their text re-encodes."""
    ids = allowed_ids[torch.randint(len(allowed_ids), (n, length), generator=generator)]
    return reencode(tokenizer, ids.tolist())


def random_token(ctx: AttackContext) -> Iterator[IterationResult]:
    scorer, spec = ctx.scorer, ctx.spec
    n_ex, length = scorer.n_examples, spec.n_attack_tokens
    allowed_ids = ctx.allowed_ids
    best = BestSoFar(n_ex)
    per_row = scorer.prefix_width + length + int(scorer.after.shape[1])
    budget_rows = max(1, scorer.max_batch_tokens // per_row)
    it = 0
    while it < spec.iterations:
        mark = ctx.compute_totals()
        alive = (~best.success).nonzero().squeeze(1)
        if alive.numel() == 0:
            it += 1
            yield best.snapshot(it, 0, 0.0, 0.0)
            continue
        k = max(1, min(budget_rows // alive.numel(), spec.iterations - it))
        attacks = random_attacks(ctx.tokenizer, allowed_ids, k * alive.numel(), length, ctx.generator)
        rows = alive.repeat(k)
        step = torch.arange(k).repeat_interleave(alive.numel())
        s = scorer.ragged_losses(rows, attacks, count=False)
        for t in range(k):
            it += 1
            here = (step == t).nonzero().squeeze(1)
            live = here[~best.success[rows[here]]]  # the sequential run attacks only these
            scorer.compute.forward(int(s.formula_tokens[live].sum()), int(s.executed_tokens[here].sum()))
            best.update(rows[live], s.loss[live], s.success[live], [attacks[i] for i in live.tolist()], it)
            f, e = ctx.compute_totals()
            yield best.snapshot(it, int(live.numel()), f - mark[0], e - mark[1])
            mark = (f, e)
