"""Batched losses of many attack candidates for several examples at once.

A scored row is ``[before | attack | after]``. ``before`` never changes during an attack, so its
keys/values are computed once (right-padded to a common width, pad keys masked) and every
candidate row continues from them; rows of different examples share one forward pass. GCG
candidates differ from the current attack in one position j only, so they can also continue
from the current attack's cached keys/values for tokens < j (``swap_losses``). Results are
identical to a plain forward over the whole sequence (up to float rounding).

GCG keeps only each example's best candidate, so on multi-token targets candidates can stop early
(``swap_losses(keep=...)``, branch and bound): all run their first target tokens, the most
promising are completed, and a candidate whose loss so far already exceeds the best complete one
(and which has missed a target token, so cannot succeed) goes no further. What is kept is exactly
what full scoring keeps. On SmolLM2 chat targets (8 prompts, 10 iterations) 50-70% of the
candidates stop before their last 3-4 target tokens, 9-14% of the tokens; the first passes'
keys/values are held until the bound is known (``max_held_bytes``).

Given a ``ranking_model`` (:func:`ranking_copy`: the model in bfloat16, whose matrix multiplies
run several times faster on CPUs with AVX512-BF16/AMX and on GPUs), ``ranking=True`` scores run
on it, continuing from the same caches cast once. They are for ordering candidates
only: what an attack keeps or logs is re-scored in the model's precision.

Compute is counted twice: by the paper's formula (2·N per token of the full input, cached
prefix included; 4·N per token backward) and as executed (tokens actually run through the model).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from robnb.attacks.blocked_head import blocked_token_scores
from robnb.attacks.model_io import KV, ModelParts
from robnb.attacks.prompts import AttackPrompt, Mode
from robnb.flops import FlopCounter

IGNORE = -100


@dataclass
class Scores:
    """Per-row loss (mean cross-entropy towards the target) and success."""
    loss: torch.Tensor
    success: torch.Tensor
    formula_tokens: torch.Tensor | None = None
    executed_tokens: torch.Tensor | None = None

    @property
    def prob(self) -> torch.Tensor:
        """exp(-loss): the target label's probability in label mode (geometric mean per token
        in target mode)."""
        return torch.exp(-self.loss)


_CHUNK_ELEMENTS = 1 << 20  # logits reduced per step: fits in cache (a whole-vocab pass is memory-bound)


def _logsumexp_max(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log Σ exp and max over the last axis in fp32, a cache-sized block of rows at a time,
    in place on each block's fp32 copy (without autograd). Asking for the max instead of the
    argmax (the success test only needs to know whether the target is on top) made the vocabulary
    reduction 1.7x faster on 49k-vocabulary bf16 logits."""
    if logits.requires_grad:
        x = logits.float()
        return torch.logsumexp(x, -1), x.detach().amax(-1)
    flat = logits.reshape(-1, logits.shape[-1])
    lse = torch.empty(flat.shape[0], device=logits.device)
    top = torch.empty(flat.shape[0], device=logits.device)
    step = max(1, _CHUNK_ELEMENTS // flat.shape[1])
    for i in range(0, flat.shape[0], step):
        x = flat[i:i + step].to(torch.float32, copy=True)  # reduced in place below
        m = x.amax(-1)
        top[i:i + step] = m
        lse[i:i + step] = x.sub_(m.unsqueeze(1)).exp_().sum(-1).log_().add_(m)
    return lse.view(logits.shape[:-1]), top.view(logits.shape[:-1])


def token_scores(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of each read's target [R, M] and whether the target is that read's argmax
    (first index on ties, like ``argmax``); 0 and True where ``target`` is -100."""
    valid = target != IGNORE
    lse, top = _logsumexp_max(logits)
    tok = logits.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1).float()
    ce = (lse - tok) * valid
    hit = (tok == top) & valid
    if hit.any():  # an equal logit at a lower index would win the argmax
        idx = hit.nonzero(as_tuple=True)
        # max's indices break ties like argmax, and are 5x faster than argmax on bf16 rows
        hit[idx] = logits.detach()[idx].max(-1).indices == target[idx]
    return ce, hit | ~valid


def scores_from_logits(logits: torch.Tensor, target: torch.Tensor, avoid: torch.Tensor,
                       mode: Mode) -> Scores:
    """Loss and success from logits at the read positions [R, M, C]; ``target`` pads are -100."""
    return _assemble(logits, target, avoid, mode, *token_scores(logits, target))


def mean_read_loss(ce_sum: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A row's loss: its summed cross-entropy over the reads that have a target."""
    return ce_sum / (target != IGNORE).sum(1).clamp(min=1)


def _assemble(logits: torch.Tensor, target: torch.Tensor, avoid: torch.Tensor, mode: Mode,
              ce: torch.Tensor, hit: torch.Tensor) -> Scores:
    loss = mean_read_loss(ce.sum(1), target)
    if mode == "label":
        success = logits[:, 0].detach().argmax(-1) != avoid  # a handful of classes
    else:
        success = hit.all(1)
    return Scores(loss, success)


class AttackCompute:
    """Formula FLOPs (what the paper logs) next to executed FLOPs (what really ran)."""

    def __init__(self, n_params: int):
        self.formula = FlopCounter(n_params)
        self.executed = FlopCounter(n_params)

    def forward(self, formula_tokens: int, executed_tokens: int) -> None:
        self.formula.add_forward(int(formula_tokens))
        self.executed.add_forward(int(executed_tokens))

    def backward(self, formula_tokens: int, executed_tokens: int) -> None:
        self.formula.add_backward(int(formula_tokens))
        self.executed.add_backward(int(executed_tokens))

    def totals(self) -> tuple[float, float]:
        return self.formula.total, self.executed.total


def length_buckets(lengths: torch.Tensor, slack: float = 0.1) -> list[torch.Tensor]:
    """Indices grouped by ascending length so that padding each group to its longest row adds at
    most ``slack`` to its real tokens. Rows of different lengths padded to a common one cost up to
    8% of a SmolLM2 GCG iteration (chat targets of 8-11 tokens) in pad tokens run for nothing."""
    order = lengths.argsort(stable=True)
    sorted_lengths = lengths[order].tolist()
    groups, start, total = [], 0, 0
    for i, n in enumerate(sorted_lengths):
        if i > start and (i - start + 1) * n > (1 + slack) * (total + n):
            groups.append(order[start:i])
            start, total = i, 0
        total += n
    groups.append(order[start:])
    return groups


def bound_split(token_loss: torch.Tensor, valid: torch.Tensor, share: float = 0.9,
                min_skip: int = 3) -> torch.Tensor:
    """Per example, how many leading target reads to score before candidates are pruned: the
    fewest that hold ``share`` of the current attack's loss, or all of them when fewer than
    ``min_skip`` reads would remain (then nothing is bounded: skipping one or two tokens does not
    pay for the extra passes; on neox-l, whose loss is spread evenly, bounding 1-2 of 14 reads
    cost 15%). Candidates' per-token losses are spread like the current attack's (measured on
    SmolLM2 chat targets), so after these reads most candidates that cannot win are already
    worse than the best complete one; ending earlier prunes few (the loss of "Sure, here is ..."
    sits in its content words), later saves little."""
    cum = (token_loss * valid).cumsum(1)
    n = valid.sum(1).clamp(min=1)
    split = torch.minimum((cum < share * cum[:, -1:]).sum(1) + 1, n)
    return torch.where(n - split < min_skip, n, split)


def cannot_be_kept(partial: torch.Tensor, bound: torch.Tensor, hit_so_far: torch.Tensor) -> torch.Tensor:
    """Candidates whose summed loss over their first reads already exceeds ``bound`` (the summed
    loss of a complete candidate that is kept) and that missed a target token on the way (so
    cannot succeed; a success outranks any loss)."""
    return (partial > bound) & ~hit_so_far


def compact_reads(read: torch.Tensor, target: torch.Tensor, lo: int,
                  hi: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reads of each row in columns [lo, hi), shifted left and re-based to ``lo`` (pads:
    column 0, target -100), so the head runs only on reads a pass can see."""
    use = (read >= lo) & (read < hi) & (target != IGNORE)
    width = max(int(use.sum(1).max()), 1) if use.numel() else 1
    order = (~use).long().argsort(dim=1, stable=True)[:, :width]
    keep = use.gather(1, order)
    return ((read.gather(1, order) - lo) * keep), torch.where(keep, target.gather(1, order), IGNORE)


def _pad(seqs: Sequence[Sequence[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    out = torch.full((len(seqs), max(int(lengths.max()), 1) if len(seqs) else 1), value,
                     dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
    return out, lengths


def _rows_of(t: torch.Tensor, rows: torch.Tensor, width: int | None) -> torch.Tensor:
    """Cache rows for ``rows`` up to ``width`` positions: a view when all rows are one prompt."""
    t = t if width is None else t[:, :, :width]
    if rows.numel() and bool(rows[0] == rows[-1]) and bool((rows == rows[0]).all()):
        return t[rows[:1]].expand(rows.numel(), *t.shape[1:])
    return t[rows]


_SCORE_FIELDS = ("loss", "success", "formula_tokens", "executed_tokens")


def ranking_copy(model: torch.nn.Module, dtype: str) -> torch.nn.Module | None:
    """A copy of ``model`` in ``dtype`` for ranking candidates; None for "model" or when the
    model already runs in that dtype."""
    if dtype == "model":
        return None
    target = getattr(torch, dtype)
    if target == model.get_input_embeddings().weight.dtype:
        return None
    return copy.deepcopy(model).to(target).eval()


def _cast(kv: KV, dtype: torch.dtype) -> KV:
    return [(k.to(dtype), v.to(dtype)) for k, v in kv]


def _merge(n: int, groups: list[tuple[torch.Tensor, Scores]], device: torch.device) -> Scores:
    """Scores of ``n`` rows assembled from groups of (row indices, their scores)."""
    out = Scores(torch.empty(n, device=device), torch.zeros(n, dtype=torch.bool, device=device),
                 torch.zeros(n, dtype=torch.long, device=device),
                 torch.zeros(n, dtype=torch.long, device=device))
    for sel, s in groups:
        for f in _SCORE_FIELDS:
            getattr(out, f)[sel] = getattr(s, f)
    return out


@dataclass
class _Layout:
    ids: torch.Tensor            # [R, T] tokens to run (attack slots filled)
    slot: torch.Tensor           # [R, n_new_attack] columns of the attack tokens in ids
    read: torch.Tensor           # [R, M] columns whose outputs are scored
    target: torch.Tensor         # [R, M] the wanted id at each read (-100 past a row's reads)
    position_ids: torch.Tensor | None
    mask: torch.Tensor | None
    past: KV | None
    formula: torch.Tensor        # [R] full input length (the paper's token count)
    executed: torch.Tensor       # [R] tokens actually computed


@dataclass
class _Partial:
    """A chunk of candidates run through its first ``width`` columns, kept to continue."""
    sel: torch.Tensor            # the chunk's rows among the scored candidates
    lay: _Layout
    width: int
    kv: KV


class Scorer:
    """Scores attack ids for a fixed batch of prompts (rows refer to prompt indices)."""

    def __init__(self, model: torch.nn.Module, prompts: Sequence[AttackPrompt], mode: Mode, *,
                 use_prefix_cache: bool = True, max_batch_tokens: int = 32_768,
                 n_params: int | None = None, ranking_model: torch.nn.Module | None = None,
                 max_held_bytes: int = 4 << 30):
        if not prompts:
            raise ValueError("a Scorer needs at least one prompt")
        self.parts = ModelParts(model, mode)
        self.ranking_parts = None if ranking_model is None else ModelParts(ranking_model, mode)
        self._ranking_prefix: KV | None = None
        self.mode = mode
        self.prompts = list(prompts)
        self.compute = AttackCompute(n_params or self.parts.n_params)
        self.max_batch_tokens = max_batch_tokens
        self.max_held_bytes = max_held_bytes  # branch and bound: keys/values held at once
        self.before, self.before_len = _pad([p.before for p in prompts], 0)
        self.after, self.after_len = _pad([p.after for p in prompts], 0)
        self.read, self.read_len = _pad([p.read for p in prompts], 0)
        self.target, _ = _pad([p.target for p in prompts], IGNORE)
        self.avoid = torch.tensor([-1 if p.avoid is None else p.avoid for p in prompts])
        self.use_prefix_cache = use_prefix_cache and int(self.before_len.max()) > 0
        self._prefix: KV | None = None
        self._prefix_mask: torch.Tensor | None = None
        self._split: torch.Tensor | None = None  # target mode: reads scored before pruning [E]
        device = self.parts.embeddings.weight.device
        for name in ("before", "before_len", "after", "after_len", "read", "read_len", "target",
                     "avoid"):
            setattr(self, name, getattr(self, name).to(device))

    @property
    def n_examples(self) -> int:
        return len(self.prompts)

    @property
    def device(self) -> torch.device:
        return self.before.device

    @property
    def prefix_width(self) -> int:
        return int(self.before.shape[1])

    def prefill(self) -> None:
        """Keys/values of every prompt's ``before`` tokens, computed once (right-padded)."""
        if not self.use_prefix_cache or self._prefix is not None:
            return
        with torch.no_grad():
            # No mask: pads sit after the real tokens, so causality keeps them out of the real
            # tokens' states; later passes mask the pad keys.
            _, kv = self.parts.hidden(input_ids=self.before, want_cache=True)
        self._prefix = kv
        width = self.prefix_width
        self._prefix_mask = (torch.arange(width, device=self.device)[None]
                             < self.before_len[:, None]).long()
        self.compute.forward(0, int(self.before_len.sum()))

    # ----------------------------------------------------------------------------- layout
    def _can_cache(self, rows: torch.Tensor, n_new: int) -> bool:
        return self._prefix is not None and n_new + int(self.read[rows].min()) >= 0

    def _reads(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Read offsets and targets of ``rows``, as many columns as the longest of them needs
        (the head is not run on other prompts' padding)."""
        width = int(self.read_len[rows].max())
        return self.read[rows, :width], self.target[rows, :width]

    def _prefix_kv(self, ranking: bool) -> KV | None:
        """The prompts' prefix cache in the precision of the pass that continues from it."""
        if not ranking or self._prefix is None:
            return self._prefix
        if self._ranking_prefix is None:
            self._ranking_prefix = _cast(self._prefix, self.ranking_parts.embeddings.weight.dtype)
        return self._ranking_prefix

    def _layout(self, rows: torch.Tensor, attack: torch.Tensor, start: int,
                attack_kv: KV | None, cached: bool, ranking: bool = False) -> _Layout:
        n_rows, n_attack = attack.shape
        b_len, a_len = self.before_len[rows], self.after_len[rows]
        formula = b_len + n_attack + a_len
        read, target = self._reads(rows)
        dev = self.device
        if cached:
            tail = attack[:, start:]
            n_new = n_attack - start
            ids = torch.cat([tail, self.after[rows]], 1)[:, : n_new + int(a_len.max())]
            slot = torch.arange(n_new, device=dev).expand(n_rows, -1)
            read = n_new + read
            position_ids = (b_len + start)[:, None] + torch.arange(ids.shape[1], device=dev)
            mask = torch.cat([self._prefix_mask[rows],
                              torch.ones(n_rows, start + ids.shape[1], dtype=torch.long, device=dev)], 1)
            source, width = ((attack_kv, self.prefix_width + start) if start
                             else (self._prefix_kv(ranking), None))
            past = [(_rows_of(k, rows, width), _rows_of(v, rows, width)) for k, v in source]
            return _Layout(ids, slot, read, target, position_ids, mask, past, formula,
                           n_new + a_len)
        if start:
            raise ValueError("continuing from a cached attack prefix needs the prefix cache")
        width = self.prefix_width + n_attack + int(self.after.shape[1])
        ids = torch.zeros(n_rows, width, dtype=torch.long, device=dev)
        ids[:, : self.prefix_width] = self.before[rows]
        slot = b_len[:, None] + torch.arange(n_attack, device=dev)
        ids.scatter_(1, slot, attack)
        after_cols = (b_len + n_attack)[:, None] + torch.arange(self.after.shape[1], device=dev)
        ids.scatter_(1, after_cols, self.after[rows])
        ids = ids[:, : int(formula.max())]
        read = (b_len + n_attack)[:, None] + read
        return _Layout(ids, slot, read, target, None, None, None, formula, formula)

    def _logits(self, lay: _Layout, attack_embeds: torch.Tensor | None = None,
                want_cache: bool = False, ranking: bool = False) -> tuple[torch.Tensor, KV | None]:
        parts = self._parts(ranking)
        if attack_embeds is None:
            hidden, kv = parts.hidden(input_ids=lay.ids, attention_mask=lay.mask,
                                      position_ids=lay.position_ids, past=lay.past,
                                      want_cache=want_cache)
        else:
            embeds = parts.embeddings(lay.ids).detach()
            d = embeds.shape[-1]
            embeds = embeds.scatter(1, lay.slot.unsqueeze(-1).expand(-1, -1, d), attack_embeds)
            hidden, kv = parts.hidden(inputs_embeds=embeds, attention_mask=lay.mask,
                                      position_ids=lay.position_ids, past=lay.past,
                                      want_cache=want_cache)
        return self._head(parts, hidden, lay.read), kv

    def _parts(self, ranking: bool) -> ModelParts:
        return self.ranking_parts if ranking else self.parts

    @staticmethod
    def _head(parts: ModelParts, hidden: torch.Tensor, read: torch.Tensor) -> torch.Tensor:
        d = hidden.shape[-1]
        return parts.head(hidden.gather(1, read.clamp(min=0).unsqueeze(-1).expand(-1, -1, d)))

    def _columns(self, lay: _Layout, hi: int,
                 ranking: bool) -> tuple[torch.Tensor, torch.Tensor, KV | None]:
        """Per row, the summed loss of the reads in the first ``hi`` columns of ``lay`` and whether
        every one of them hit, running only those columns on top of ``lay.past``; the cache after
        them when they stop short of the end (branch and bound continues from it). All columns
        are a whole target-mode pass (:meth:`losses`)."""
        parts = self._parts(ranking)
        full = lay.ids.shape[1]
        mask = None if lay.mask is None else lay.mask[:, : lay.mask.shape[1] - full + hi]
        positions = None if lay.position_ids is None else lay.position_ids[:, :hi]
        hidden, kv = parts.hidden(input_ids=lay.ids[:, :hi], attention_mask=mask,
                                  position_ids=positions, past=lay.past, want_cache=hi < full)
        read, target = compact_reads(lay.read, lay.target, 0, hi)
        ce, hit = self._read_scores(parts, hidden, read, target)
        return ce.sum(1), hit.all(1), kv

    def _read_scores(self, parts: ModelParts, hidden: torch.Tensor, read: torch.Tensor,
                     target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`token_scores` of the head at ``read`` (target mode, no autograd); a linear head
        is applied a vocabulary block at a time, only at reads with a target."""
        head = parts.head
        if not isinstance(head, torch.nn.Linear) or torch.is_grad_enabled():
            return token_scores(self._head(parts, hidden, read), target)
        ce = torch.zeros(target.shape, device=hidden.device)
        hit = torch.ones(target.shape, dtype=torch.bool, device=hidden.device)
        idx = (target != IGNORE).nonzero(as_tuple=True)
        at = read.clamp(min=0)[idx]
        ce[idx], hit[idx] = blocked_token_scores(hidden[idx[0], at], head.weight, head.bias,
                                                 target[idx])
        return ce, hit

    # ---------------------------------------------------------------------------- scoring
    def _chunks(self, rows: torch.Tensor, attack: torch.Tensor, start: int,
                attack_kv: KV | None, ranking: bool,
                run: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, _Layout]]:
        """Layouts of rows of similar run length (or of similar ``run``), within the token
        budget, with their indices."""
        n_attack = attack.shape[1]
        cached = self._can_cache(rows, n_attack - start)
        per_row = self.prefix_width + n_attack + int(self.after.shape[1])
        chunk = max(1, self.max_batch_tokens // per_row)
        if run is None:
            run = n_attack - start + self.after_len[rows] + (0 if cached else self.before_len[rows])
        for bucket in length_buckets(run):
            for i in range(0, bucket.numel(), chunk):
                sel = bucket[i:i + chunk]
                yield sel, self._layout(rows[sel], attack[sel], start, attack_kv, cached, ranking)

    def _check_ranking(self, ranking: bool) -> None:
        if ranking and self.ranking_parts is None:
            raise ValueError("ranking scores need a Scorer built with a ranking_model (the copy "
                             "an attack spec's ranking_dtype asks for)")

    def losses(self, rows: torch.Tensor, attack: torch.Tensor, *, start: int = 0,
               attack_kv: KV | None = None, count: bool = True, ranking: bool = False) -> Scores:
        """Scores of ``attack`` [R, L] for prompts ``rows`` [R], in chunks of the token budget.

        ``start`` > 0 continues from ``attack_kv`` (keys/values of before + the current attack of
        each prompt, from :meth:`gradient`) for the first ``start`` attack tokens, which must
        equal the current attack's. ``ranking`` runs the low-precision copy (``attack_kv`` must
        already be in its dtype).
        """
        self._check_ranking(ranking)
        self.prefill()
        rows = rows.to(self.device)
        attack = attack.to(self.device)
        n_rows = attack.shape[0]
        if not n_rows:
            empty = torch.zeros(0, device=self.device)
            return Scores(empty, empty.bool(), empty.long(), empty.long())
        groups = []
        for sel, lay in self._chunks(rows, attack, start, attack_kv, ranking):
            with torch.no_grad():
                if self.mode == "target":
                    ce_sum, hit, _ = self._columns(lay, lay.ids.shape[1], ranking)
                    s = Scores(mean_read_loss(ce_sum, lay.target), hit)
                else:
                    logits, _ = self._logits(lay, ranking=ranking)
                    s = scores_from_logits(logits, lay.target, self.avoid[rows[sel]], self.mode)
            s.formula_tokens, s.executed_tokens = lay.formula, lay.executed
            if count:
                self.compute.forward(lay.formula.sum(), lay.executed.sum())
            groups.append((sel, s))
        return _merge(n_rows, groups, self.device)

    def swap_losses(self, rows: torch.Tensor, candidates: torch.Tensor, swap_pos: torch.Tensor,
                    attack_kv: KV | None, *, ranking: bool = False,
                    keep: int | None = None) -> Scores:
        """Scores of single-swap candidates; each continues from the current attack's cache up
        to its swapped position when that cache is available. ``ranking``: on the
        low-precision copy, for ordering only.

        ``keep``: the caller needs only each example's ``keep`` lowest losses and every success
        (GCG keeps the best). In target mode candidates then run their first target tokens
        (:func:`bound_split`, set by :meth:`gradient`); one whose loss there already exceeds the
        ``keep``-th best complete loss, and which has missed a target token (so cannot succeed),
        stops: its loss is reported as inf, its success as False. Every loss reported is exact
        and the ``keep`` best are the same as without ``keep`` (branch and bound).
        """
        if attack_kv is None:
            return self.losses(rows, candidates, ranking=ranking)
        self._check_ranking(ranking)
        if ranking:
            attack_kv = _cast(attack_kv, self.ranking_parts.embeddings.weight.dtype)
        swap_pos = swap_pos.to(self.device)
        if keep is not None and self.mode == "target" and self._split is not None:
            rows, candidates = rows.to(self.device), candidates.to(self.device)
            groups = [(sel, self._bounded(rows[sel], candidates[sel], swap_pos[sel], attack_kv,
                                          ranking, keep))
                      for sel in self._example_groups(rows, candidates.shape[1], attack_kv)]
            return _merge(candidates.shape[0], groups, self.device)
        groups = []
        for j in torch.unique(swap_pos).tolist():
            sel = (swap_pos == j).nonzero().squeeze(1)
            groups.append((sel, self.losses(rows[sel], candidates[sel], start=int(j),
                                            attack_kv=attack_kv, ranking=ranking)))
        return _merge(candidates.shape[0], groups, self.device)

    def _example_groups(self, rows: torch.Tensor, n_attack: int, kv: KV) -> list[torch.Tensor]:
        """Candidates split by example so that the keys/values branch and bound holds until its
        bound is known stay within ``max_held_bytes`` (examples are bounded independently)."""
        per_token = sum(k[0, :, 0].numel() * k.element_size() * 2 for k, _ in kv)
        per_row = (self.prefix_width + n_attack + int(self.after.shape[1])) * per_token
        examples = rows.unique()
        counts = torch.stack([(rows == e).sum() for e in examples]).tolist()
        groups, current, held = [], [], 0
        for e, c in zip(examples.tolist(), counts):
            if current and held + c * per_row > self.max_held_bytes:
                groups.append(current)
                current, held = [], 0
            current.append(e)
            held += c * per_row
        groups.append(current)
        return [torch.isin(rows, torch.tensor(g, device=rows.device)).nonzero().squeeze(1)
                for g in groups]

    def _bounded(self, rows: torch.Tensor, candidates: torch.Tensor, swap_pos: torch.Tensor,
                 attack_kv: KV, ranking: bool, keep: int) -> Scores:
        """Branch and bound over single-swap candidates (see :meth:`swap_losses`)."""
        (n, n_attack), dev = candidates.shape, self.device
        ce_sum = torch.zeros(n, device=dev)
        ok = torch.ones(n, dtype=torch.bool, device=dev)
        done = torch.zeros(n, dtype=torch.bool, device=dev)
        formula = torch.zeros(n, dtype=torch.long, device=dev)
        executed = torch.zeros(n, dtype=torch.long, device=dev)
        pending: list[_Partial] = []
        with torch.no_grad():
            for j in torch.unique(swap_pos).tolist():
                in_j = (swap_pos == j).nonzero().squeeze(1)
                r = rows[in_j]
                # rows are grouped by the columns they run before the bound is checked
                run = n_attack - j + self.read[r, self._split[r] - 1] + 1
                for sel, lay in self._chunks(r, candidates[in_j], int(j), attack_kv, ranking, run):
                    width = min(int(run[sel].max()), lay.ids.shape[1])
                    sel = in_j[sel]
                    ce_sum[sel], ok[sel], kv = self._columns(lay, width, ranking)
                    formula[sel] = lay.formula
                    executed[sel] = lay.executed.clamp(max=width)
                    if width == lay.ids.shape[1]:
                        done[sel] = True
                    else:
                        pending.append(_Partial(sel, lay, width, kv))

            def finish(want: torch.Tensor) -> None:
                for sel, rest, hits, ran in self._continue(pending, want, ranking):
                    ce_sum[sel] += rest
                    ok[sel] &= hits
                    executed[sel] += ran
                    done[sel] = True

            # each example's `keep` most promising candidates are completed first: their losses
            # bound the rest
            score = torch.where(done, float("-inf"), ce_sum)
            first = torch.zeros(n, dtype=torch.bool, device=dev)
            for e in rows.unique().tolist():
                mine = (rows == e).nonzero().squeeze(1)
                first[mine[score[mine].argsort()[:keep]]] = True
            finish(first & ~done)
            bound = torch.full((self.n_examples,), float("inf"), device=dev)
            for e in rows.unique().tolist():
                mine = (rows == e) & done
                if int(mine.sum()) >= keep:
                    bound[e] = ce_sum[mine].sort().values[keep - 1]
            pruned = ~done & cannot_be_kept(ce_sum, bound[rows], ok)
            finish(~done & ~pruned)
        loss = torch.where(pruned, float("inf"), mean_read_loss(ce_sum, self.target[rows]))
        self.compute.forward(formula.sum(), executed.sum())
        return Scores(loss, ok & ~pruned, formula, executed)

    def _continue(self, pending: list[_Partial], want: torch.Tensor, ranking: bool
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The rest of the columns of the ``want`` rows of ``pending`` chunks: (their indices
        among the scored candidates, summed loss and all-hit over those columns, tokens run).

        Chunks that still have the same number of columns to run go in one pass, their held
        keys/values stacked and padded (masked) to the longest: the rows left after pruning are
        few per chunk, and one pass per chunk made a SmolLM2 iteration run ~15 forwards of 1-14
        rows each (GCG: one swap position per chunk)."""
        by_rest: dict[int, list[tuple[_Partial, torch.Tensor]]] = {}
        for part in pending:
            sub = want[part.sel].nonzero().squeeze(1)
            if sub.numel():
                by_rest.setdefault(part.lay.ids.shape[1] - part.width, []).append((part, sub))
        for n_new, pieces in by_rest.items():
            n_past = max(part.kv[0][0].shape[2] for part, _ in pieces)
            budget = max(1, self.max_batch_tokens // (n_past + n_new))  # rows per pass
            group, rows = [], 0
            for part, sub in pieces:
                if group and rows + sub.numel() > budget:
                    yield self._continue_group(group, n_new, ranking)
                    group, rows = [], 0
                group.append((part, sub))
                rows += sub.numel()
            yield self._continue_group(group, n_new, ranking)

    def _continue_group(self, group: list[tuple[_Partial, torch.Tensor]], n_new: int,
                        ranking: bool
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One pass of :meth:`_continue`: held caches shorter than the group's longest are
        padded at their end, pads masked."""
        dev = self.device
        n_past = max(part.kv[0][0].shape[2] for part, _ in group)
        n = sum(sub.numel() for _, sub in group)
        kv0 = group[0][0].kv
        past = [(k.new_zeros((n, *k.shape[1:2], n_past, *k.shape[3:])),
                 v.new_zeros((n, *v.shape[1:2], n_past, *v.shape[3:]))) for k, v in kv0]
        mask = torch.zeros(n, n_past + n_new, dtype=torch.long, device=dev)
        mask[:, n_past:] = 1
        ids = torch.empty(n, n_new, dtype=torch.long, device=dev)
        positions = torch.empty(n, n_new, dtype=torch.long, device=dev)
        reads, targets, sels, ran = [], [], [], []
        at = 0
        for part, sub in group:
            lay, lo, m = part.lay, part.width, sub.numel()
            width = part.kv[0][0].shape[2]
            for (k, v), (pk, pv) in zip(part.kv, past):
                pk[at:at + m, :, :width] = k[sub]
                pv[at:at + m, :, :width] = v[sub]
            mask[at:at + m, :width] = 1 if lay.mask is None else lay.mask[sub, :width]
            ids[at:at + m] = lay.ids[sub, lo:]
            positions[at:at + m] = (torch.arange(lo, lay.ids.shape[1], device=dev)
                                    if lay.position_ids is None else lay.position_ids[sub, lo:])
            read, target = compact_reads(lay.read[sub], lay.target[sub], lo, lay.ids.shape[1])
            reads.append(read)
            targets.append(target)
            sels.append(part.sel[sub])
            ran.append((lay.executed[sub] - lo).clamp(min=0))
            at += m
        width = max(r.shape[1] for r in reads)
        read = torch.cat([torch.nn.functional.pad(r, (0, width - r.shape[1])) for r in reads])
        target = torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1]), value=IGNORE)
                            for t in targets])
        lay = _Layout(ids, ids[:, :0], read, target, positions, mask, past,
                      torch.zeros(n, dtype=torch.long, device=dev), torch.cat(ran))
        rest, hits, _ = self._columns(lay, n_new, ranking)
        return torch.cat(sels), rest, hits, lay.executed

    def ragged_losses(self, rows: torch.Tensor, attacks: Sequence[Sequence[int]], *,
                      count: bool = True) -> Scores:
        """Scores of attacks of different lengths (one batched call per length)."""
        lengths = torch.tensor([len(a) for a in attacks], dtype=torch.long)
        rows = rows.to(self.device)
        groups = []
        for n in torch.unique(lengths).tolist():
            sel = (lengths == n).nonzero().squeeze(1)
            ids = torch.tensor([list(attacks[i]) for i in sel.tolist()], dtype=torch.long).reshape(-1, n)
            sel = sel.to(self.device)
            groups.append((sel, self.losses(rows[sel], ids, count=count)))
        return _merge(len(attacks), groups, self.device)

    def gradient(self, attack: torch.Tensor) -> tuple[torch.Tensor, Scores, KV | None]:
        """Gradient of each prompt's loss w.r.t. the one-hot attack tokens [E, L, V], the current
        attack's scores, and its keys/values (for ``swap_losses``)."""
        self.prefill()
        attack = attack.to(self.device)
        rows = torch.arange(self.n_examples, device=self.device)
        cached = self._can_cache(rows, attack.shape[1])
        lay = self._layout(rows, attack, 0, None, cached)
        weight = self.parts.embeddings.weight
        with torch.enable_grad():
            attack_embeds = weight[attack].detach().requires_grad_(True)
            logits, kv = self._logits(lay, attack_embeds, want_cache=cached)
            ce, hit = token_scores(logits, lay.target)
            s = _assemble(logits, lay.target, self.avoid, self.mode, ce, hit)
            (g,) = torch.autograd.grad(s.loss.sum(), attack_embeds)
        if self.mode == "target":
            self._split = bound_split(ce.detach(), lay.target != IGNORE)
        # d loss / d onehot = (d loss / d embedding) · Eᵀ: the one-hot gradient without the
        # one-hot matmul in the forward pass.
        grad = g @ weight.detach().T
        self.compute.forward(lay.formula.sum(), lay.executed.sum())
        self.compute.backward(lay.formula.sum(), lay.executed.sum())
        # keys/values of before + current attack (+ after), for swap_losses to continue from
        attack_kv = [(k.detach(), v.detach()) for k, v in kv] if cached else None
        return grad, Scores(s.loss.detach(), s.success, lay.formula, lay.executed), attack_kv

    def next_token_logits(self, rows: torch.Tensor, attack: torch.Tensor) -> torch.Tensor:
        """Full next-token logits after ``attack`` (prompts must read at offset -1)."""
        self.prefill()
        rows, attack = rows.to(self.device), attack.to(self.device)
        lay = self._layout(rows, attack, 0, None, self._can_cache(rows, attack.shape[1]))
        with torch.no_grad():
            logits, _ = self._logits(lay)
        self.compute.forward(lay.formula.sum(), lay.executed.sum())
        return logits[:, 0]
