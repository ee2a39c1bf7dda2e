"""The common shape of every attack.

An attack is a generator ``attack(ctx) -> Iterator[IterationResult]``: it gets a prepared
:class:`AttackContext` (a :class:`Scorer` over a batch of examples, the spec, the usable tokens,
a seeded generator) and yields, after each iteration, every example's best attack so far, its
loss and success, and the FLOPs that iteration cost. Best so far means: a successful attack beats
any unsuccessful one, then lower loss wins, so success never goes away once reached (the paper's
cumulative curve) and, in label mode, the best loss never increases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from robnb.attacks.scoring import Scorer
from robnb.params import AttackSpec


@dataclass
class AttackContext:
    scorer: Scorer
    tokenizer: object
    spec: AttackSpec
    allowed: torch.Tensor                    # [V] bool: tokens the attack may use
    generator: torch.Generator
    proposal: Scorer | None = None           # BEAST: the sampling model's scorer
    share_attack_prefix: bool = True         # GCG: continue candidates from the current attack

    def compute_totals(self) -> tuple[float, float]:
        """(formula, executed) FLOPs so far over the victim and any proposal model."""
        f, e = self.scorer.compute.totals()
        if self.proposal is not None:
            pf, pe = self.proposal.compute.totals()
            f, e = f + pf, e + pe
        return f, e

    @property
    def allowed_ids(self) -> torch.Tensor:
        return self.allowed.nonzero().squeeze(1)


@dataclass
class IterationResult:
    """Every example's best-so-far state after one iteration (tensors are [E])."""
    iteration: int
    loss: torch.Tensor
    success: torch.Tensor
    attack_ids: list[list[int]]
    found_at: torch.Tensor
    n_scored: int
    flops: float
    flops_executed: float
    step_loss: torch.Tensor | None = None   # GCG: loss of the attack kept this iteration
    step_ids: list[list[int]] | None = None  # GCG: that attack (the next iteration starts from it)

    @property
    def prob(self) -> torch.Tensor:
        return torch.exp(-self.loss)


class BestSoFar:
    """Per-example best attack: success first, then lowest loss."""

    def __init__(self, n: int):
        self.loss = torch.full((n,), float("inf"))
        self.success = torch.zeros(n, dtype=torch.bool)
        self.found_at = torch.full((n,), -1, dtype=torch.long)
        self.ids: list[list[int]] = [[] for _ in range(n)]

    def update(self, rows: torch.Tensor, loss: torch.Tensor, success: torch.Tensor,
               ids: torch.Tensor | list[list[int]], iteration: int) -> None:
        """Offer candidates (one per entry of ``rows``; rows may repeat) and keep improvements."""
        rows, loss, success = rows.cpu().long(), loss.detach().float().cpu(), success.cpu()
        if rows.numel() == 0:
            return
        key = _rank_key(loss, success)
        best_key = torch.full_like(self.loss, float("inf")).scatter_reduce(
            0, rows, key, reduce="amin")
        improved = best_key < _rank_key(self.loss, self.success)
        # the first candidate reaching each improved row's best key
        hit = (key == best_key[rows]) & improved[rows]
        done: set[int] = set()
        for i in hit.nonzero().squeeze(1).tolist():
            r = int(rows[i])
            if r in done:
                continue
            done.add(r)
            self.loss[r], self.success[r], self.found_at[r] = loss[i], success[i], iteration
            self.ids[r] = ids[i].tolist() if isinstance(ids, torch.Tensor) else list(ids[i])

    def snapshot(self, iteration: int, n_scored: int, flops: float, flops_executed: float,
                 step_loss: torch.Tensor | None = None,
                 step_ids: list[list[int]] | None = None) -> IterationResult:
        return IterationResult(iteration, self.loss.clone(), self.success.clone(),
                               [list(x) for x in self.ids], self.found_at.clone(), n_scored,
                               flops, flops_executed, step_loss, step_ids)


def _rank_key(loss: torch.Tensor, success: torch.Tensor) -> torch.Tensor:
    """One number per attack ordering 'better' first: any success beats any failure."""
    return torch.where(success, loss - 1e9, loss)


AttackFn = Callable[[AttackContext], Iterator[IterationResult]]
