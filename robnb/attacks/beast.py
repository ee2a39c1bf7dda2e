"""BEAST: beam search whose candidate tokens are sampled from a (small) causal LM.

Each iteration adds one token: every beam asks the proposal model (the family's smallest model,
same tokenizer) for its next-token distribution after ``before + beam`` and samples ``branching``
distinct tokens (``beam_width`` from the empty beam at the first iteration); the victim scores
all extended beams and the ``beam_width`` lowest-loss ones survive. Beams that change under
decode/encode keep an infinite loss, so they survive only when too few valid beams exist.
"""

from __future__ import annotations

from typing import Iterator

import torch

from robnb.attacks.base import AttackContext, BestSoFar, IterationResult
from robnb.attacks.placement import roundtrip_mask
from robnb.attacks.prompts import AttackPrompt
from robnb.attacks.scoring import IGNORE


def proposal_prompts(prompts: list[AttackPrompt]) -> list[AttackPrompt]:
    """Prompts for the proposal model: its last ``before`` token is run with the beam so the
    logits at the slot are read from the same kind of pass at every iteration."""
    if any(not p.before for p in prompts):
        raise ValueError("BEAST needs some text before the attack slot to condition on")
    return [AttackPrompt(p.before[:-1], (), (-1,), (IGNORE,)) for p in prompts]


def beast(ctx: AttackContext) -> Iterator[IterationResult]:
    if ctx.proposal is None:
        raise ValueError("BEAST needs a proposal model (a causal LM sharing the tokenizer, e.g. "
                         "the family's smallest pretrained model): pass proposal_model=")
    scorer, spec, proposal = ctx.scorer, ctx.spec, ctx.proposal
    n_ex, width, branching = scorer.n_examples, spec.beam_width, spec.branching
    dev = scorer.device
    lead = torch.tensor([p.before[-1] for p in scorer.prompts], device=dev)
    beams = torch.zeros(n_ex, 1, 0, dtype=torch.long, device=dev)
    best = BestSoFar(n_ex)
    for it in range(1, spec.iterations + 1):
        mark = ctx.compute_totals()
        n_beams, length = beams.shape[1], beams.shape[2]
        rows = torch.arange(n_ex, device=dev).repeat_interleave(n_beams)
        flat_beams = beams.reshape(n_ex * n_beams, length)
        logits = proposal.next_token_logits(rows, torch.cat([lead[rows, None], flat_beams], 1))
        vocab = min(logits.shape[1], ctx.allowed.shape[0])
        allowed = ctx.allowed[:vocab].to(dev)
        n_draw = min(width if it == 1 else branching, int(allowed.sum()))
        # a floor keeps every allowed token drawable when fp32 softmax underflows
        probs = torch.softmax(logits[:, :vocab].float(), -1).clamp_min(1e-30) * allowed
        tokens = torch.multinomial(probs.cpu(), n_draw, replacement=False,
                                   generator=ctx.generator).to(dev)
        cand = torch.cat([flat_beams.repeat_interleave(n_draw, 0), tokens.reshape(-1, 1)], 1)
        cand_rows = rows.repeat_interleave(n_draw)
        ok = roundtrip_mask(ctx.tokenizer, cand).to(dev)
        keep = ok.nonzero().squeeze(1)
        s = scorer.losses(cand_rows[keep], cand[keep])
        loss = torch.full((cand.shape[0],), float("inf"), device=dev)
        loss[keep] = s.loss
        per_ex = cand.shape[0] // n_ex
        order = loss.reshape(n_ex, per_ex).argsort(1)[:, :width]
        beams = cand.reshape(n_ex, per_ex, -1).gather(1, order.unsqueeze(-1).expand(-1, -1, cand.shape[1]))
        best.update(cand_rows[keep], s.loss, s.success, cand[keep], it)
        f, e = ctx.compute_totals()
        yield best.snapshot(it, int(keep.numel()), f - mark[0], e - mark[1])
