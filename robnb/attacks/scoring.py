"""Batched losses of many attack candidates for several examples at once.

A scored row is ``[before | attack | after]``. ``before`` never changes during an attack, so its
keys/values are computed once (right-padded to a common width, pad keys masked) and every
candidate row continues from them; rows of different examples share one forward pass. GCG
candidates differ from the current attack in one position j only, so they can also continue
from the current attack's cached keys/values for tokens < j (``swap_losses``). Results are
identical to a plain forward over the whole sequence (up to float rounding).

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
from typing import Sequence

import torch

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


def _logsumexp_argmax(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log Σ exp and argmax over the last axis, in fp32, a cache-sized block of rows at a time
    (without autograd: 2.2x faster than log_softmax + argmax on fp32 logits of a 49k vocabulary,
    3.7x on bf16 ones, measured on 128 x 10 rows)."""
    if logits.requires_grad:
        x = logits.float()
        return torch.logsumexp(x, -1), x.detach().argmax(-1)
    flat = logits.reshape(-1, logits.shape[-1])
    lse = torch.empty(flat.shape[0], device=logits.device)
    pred = torch.empty(flat.shape[0], dtype=torch.long, device=logits.device)
    step = max(1, _CHUNK_ELEMENTS // flat.shape[1])
    for i in range(0, flat.shape[0], step):
        x = flat[i:i + step].float()
        lse[i:i + step] = torch.logsumexp(x, -1)
        pred[i:i + step] = x.argmax(-1)
    return lse.view(logits.shape[:-1]), pred.view(logits.shape[:-1])


def scores_from_logits(logits: torch.Tensor, target: torch.Tensor, avoid: torch.Tensor,
                       mode: Mode) -> Scores:
    """Loss and success from logits at the read positions [R, M, C]; ``target`` pads are -100."""
    valid = target != IGNORE
    lse, pred = _logsumexp_argmax(logits)
    tok = logits.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1).float() - lse
    loss = -(tok * valid).sum(1) / valid.sum(1).clamp(min=1)
    if mode == "label":
        success = pred[:, 0] != avoid
    else:
        success = ((pred == target) | ~valid).all(1)
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


class Scorer:
    """Scores attack ids for a fixed batch of prompts (rows refer to prompt indices)."""

    def __init__(self, model: torch.nn.Module, prompts: Sequence[AttackPrompt], mode: Mode, *,
                 use_prefix_cache: bool = True, max_batch_tokens: int = 32_768,
                 n_params: int | None = None, ranking_model: torch.nn.Module | None = None):
        if not prompts:
            raise ValueError("a Scorer needs at least one prompt")
        self.parts = ModelParts(model, mode)
        self.ranking_parts = None if ranking_model is None else ModelParts(ranking_model, mode)
        self._ranking_prefix: KV | None = None
        self.mode = mode
        self.prompts = list(prompts)
        self.compute = AttackCompute(n_params or self.parts.n_params)
        self.max_batch_tokens = max_batch_tokens
        self.before, self.before_len = _pad([p.before for p in prompts], 0)
        self.after, self.after_len = _pad([p.after for p in prompts], 0)
        self.read, self.read_len = _pad([p.read for p in prompts], 0)
        self.target, _ = _pad([p.target for p in prompts], IGNORE)
        self.avoid = torch.tensor([-1 if p.avoid is None else p.avoid for p in prompts])
        self.use_prefix_cache = use_prefix_cache and int(self.before_len.max()) > 0
        self._prefix: KV | None = None
        self._prefix_mask: torch.Tensor | None = None
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
        parts = self.ranking_parts if ranking else self.parts
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
        d = hidden.shape[-1]
        at = hidden.gather(1, lay.read.clamp(min=0).unsqueeze(-1).expand(-1, -1, d))
        return parts.head(at), kv

    # ---------------------------------------------------------------------------- scoring
    def losses(self, rows: torch.Tensor, attack: torch.Tensor, *, start: int = 0,
               attack_kv: KV | None = None, count: bool = True, ranking: bool = False) -> Scores:
        """Scores of ``attack`` [R, L] for prompts ``rows`` [R], in chunks of the token budget.

        ``start`` > 0 continues from ``attack_kv`` (keys/values of before + the current attack of
        each prompt, from :meth:`gradient`) for the first ``start`` attack tokens, which must
        equal the current attack's. ``ranking`` runs the low-precision copy (``attack_kv`` must
        already be in its dtype).
        """
        if ranking and self.ranking_parts is None:
            raise ValueError("ranking scores need a Scorer built with a ranking_model (the copy "
                             "an attack spec's ranking_dtype asks for)")
        self.prefill()
        rows = rows.to(self.device)
        attack = attack.to(self.device)
        n_rows, n_attack = attack.shape
        if not n_rows:
            empty = torch.zeros(0, device=self.device)
            return Scores(empty, empty.bool(), empty.long(), empty.long())
        cached = self._can_cache(rows, n_attack - start)
        per_row = self.prefix_width + n_attack + int(self.after.shape[1])
        chunk = max(1, self.max_batch_tokens // per_row)
        run = n_attack - start + self.after_len[rows] + (0 if cached else self.before_len[rows])
        groups = []
        for bucket in length_buckets(run):
            for i in range(0, bucket.numel(), chunk):
                sel = bucket[i:i + chunk]
                r = rows[sel]
                lay = self._layout(r, attack[sel], start, attack_kv, cached, ranking)
                with torch.no_grad():
                    logits, _ = self._logits(lay, ranking=ranking)
                s = scores_from_logits(logits, lay.target, self.avoid[r], self.mode)
                s.formula_tokens, s.executed_tokens = lay.formula, lay.executed
                if count:
                    self.compute.forward(lay.formula.sum(), lay.executed.sum())
                groups.append((sel, s))
        return _merge(n_rows, groups, self.device)

    def swap_losses(self, rows: torch.Tensor, candidates: torch.Tensor, swap_pos: torch.Tensor,
                    attack_kv: KV | None, *, ranking: bool = False) -> Scores:
        """Scores of single-swap candidates; each continues from the current attack's cache up
        to its swapped position when that cache is available. ``ranking``: on the
        low-precision copy, for ordering only."""
        if attack_kv is None:
            return self.losses(rows, candidates, ranking=ranking)
        if ranking and self.ranking_parts is not None:
            attack_kv = _cast(attack_kv, self.ranking_parts.embeddings.weight.dtype)
        swap_pos = swap_pos.to(self.device)
        groups = []
        for j in torch.unique(swap_pos).tolist():
            sel = (swap_pos == j).nonzero().squeeze(1)
            groups.append((sel, self.losses(rows[sel], candidates[sel], start=int(j),
                                            attack_kv=attack_kv, ranking=ranking)))
        return _merge(candidates.shape[0], groups, self.device)

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
            s = scores_from_logits(logits, lay.target, self.avoid, self.mode)
            (g,) = torch.autograd.grad(s.loss.sum(), attack_embeds)
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
