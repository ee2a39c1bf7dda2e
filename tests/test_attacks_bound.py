"""Branch and bound in GCG scoring: candidates that cannot be kept stop early, and what is kept
(each example's best losses, every success) is exactly what scoring every candidate fully gives."""

from __future__ import annotations

import torch
from attack_fixtures import llama_target_prompts, one_thread, tiny_llama  # noqa: F401 (one_thread: autouse)

from robnb.attacks.prompts import AttackPrompt
from robnb.attacks.scoring import (
    IGNORE,
    Scorer,
    bound_split,
    cannot_be_kept,
    compact_reads,
    token_scores,
)


def test_bound_split_is_the_fewest_reads_holding_the_share():
    g = torch.Generator().manual_seed(0)
    loss = torch.rand(6, 7, generator=g) * torch.tensor([4.0, 1, 1, 0.2, 3, 0.1, 0.5])
    valid = torch.ones(6, 7, dtype=torch.bool)
    valid[2, 4:] = False
    valid[5, 1:] = False
    for share in (0.5, 0.9, 1.0):
        split = bound_split(loss, valid, share, min_skip=1)
        for e in range(6):
            cum = (loss[e] * valid[e]).cumsum(0)
            s = int(split[e])
            assert 1 <= s <= int(valid[e].sum())
            assert cum[s - 1] >= share * cum[-1] - 1e-6          # enough reads ...
            assert s == 1 or cum[s - 2] < share * cum[-1]        # ... and no more
        # too few reads left to skip: every read is scored (nothing bounded)
        n = valid.sum(1)
        wide = bound_split(loss, valid, share, min_skip=3)
        assert torch.equal(wide, torch.where(n - split < 3, n, split))


def test_a_candidate_still_able_to_succeed_is_never_dropped():
    partial = torch.tensor([5.0, 5.0, 1.0, 3.0])
    bound = torch.tensor([3.0, 3.0, 3.0, 3.0])
    hit_so_far = torch.tensor([False, True, False, False])
    # over the bound and missed a token: out; on target so far: kept however bad; under or at
    # the bound: kept
    assert cannot_be_kept(partial, bound, hit_so_far).tolist() == [True, False, False, False]


def test_compact_reads_keeps_each_rows_reads_in_range_in_order():
    read = torch.tensor([[3, 4, 5, 6], [2, 3, 0, 0], [7, 8, 9, 10]])
    target = torch.tensor([[11, 12, 13, 14], [21, 22, IGNORE, IGNORE], [31, 32, 33, 34]])
    cols, tgt = compact_reads(read, target, 4, 9)
    assert cols.shape[1] == 3  # row 0 has three reads in [4, 9)
    got = [[(int(c) + 4, int(t)) for c, t in zip(cols[r], tgt[r]) if t != IGNORE] for r in range(3)]
    assert got == [[(4, 12), (5, 13), (6, 14)], [], [(7, 31), (8, 32)]]


def test_token_scores_tie_goes_to_the_lower_index_like_argmax():
    logits = torch.tensor([[[1.0, 3.0, 3.0, 0.0]], [[1.0, 3.0, 3.0, 0.0]], [[0.0, 0.0, 5.0, 1.0]]])
    target = torch.tensor([[2], [1], [2]])
    ce, hit = token_scores(logits, target)
    assert hit[:, 0].tolist() == [False, True, True]
    want = torch.nn.functional.cross_entropy(logits[:, 0], target[:, 0], reduction="none")
    assert torch.allclose(ce[:, 0], want)


def _sharp_llama():
    """The tiny Llama with a sharpened head, so that some tokens are near-certain and others
    unlikely (a random-init model spreads its loss evenly over the target, and nothing can be
    pruned)."""
    model = tiny_llama()
    with torch.no_grad():
        model.lm_head.weight.mul_(60)
    return model


def _candidates(attack: torch.Tensor, per_prompt: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    n, length = attack.shape
    rows = torch.arange(n).repeat_interleave(per_prompt)
    pos = torch.randint(0, length, (len(rows),), generator=g)
    cand = attack[rows].clone()
    cand[torch.arange(len(rows)), pos] = torch.randint(1, 97, (len(rows),), generator=g)
    return rows, cand, pos


def _prompts_continuing(model, attacks: list[list[int]], lead: int) -> list[AttackPrompt]:
    """Targets of ``lead`` fixed tokens then the model's greedy continuation after ``attacks``."""
    out = []
    for p, attack in zip(llama_target_prompts(), attacks):
        tail = list(p.after[: p.read[0] + 1])
        start = [17, 29, 41][:lead]
        ids = list(p.before) + attack + tail + start
        with torch.no_grad():
            gen = model.generate(torch.tensor([ids]), max_new_tokens=4, do_sample=False,
                                 pad_token_id=0)
        target = start + gen[0, len(ids):].tolist()
        first = len(tail) - 1
        out.append(AttackPrompt(p.before, tuple(tail + target[:-1]),
                                tuple(range(first, first + len(target))), tuple(target)))
    return out


def _check_bound(scorer: Scorer, attack: torch.Tensor, keep: int, rows, cand, pos,
                 split: torch.Tensor | None = None):
    _, _, kv = scorer.gradient(attack)
    if split is not None:
        scorer._split = split
    full = scorer.swap_losses(rows, cand, pos, kv)
    bounded = scorer.swap_losses(rows, cand, pos, kv, keep=keep)
    pruned = bounded.loss.isinf()
    assert torch.allclose(bounded.loss[~pruned], full.loss[~pruned], atol=1e-5)
    assert torch.equal(bounded.success, full.success)
    for e in range(scorer.n_examples):
        mine = rows == e
        best = full.loss[mine].sort().values[:keep]
        assert torch.allclose(bounded.loss[mine].sort().values[:keep], best, atol=1e-5)
        assert bool((full.loss[mine & pruned] > best[-1]).all())
    assert torch.equal(bounded.formula_tokens, full.formula_tokens)
    if pruned.any():
        assert int(bounded.executed_tokens.sum()) < int(full.executed_tokens.sum())
    return pruned, full


def _setup():
    """The sharpened model, a current attack per prompt and 24 single-swap candidates each."""
    model = _sharp_llama()
    n = len(llama_target_prompts())
    attack = torch.randint(1, 97, (n, 4), generator=torch.Generator().manual_seed(2))
    return model, n, attack, *_candidates(attack, 24, 3)


def test_bounded_swap_losses_keep_the_best_exactly():
    model, n, attack, rows, cand, pos = _setup()
    prompts = _prompts_continuing(model, attack.tolist(), lead=1)
    for keep in (1, 3):
        # the split from the current attack's losses: before the last reads, which hold little
        scorer = Scorer(model, prompts, "target")
        pruned, _ = _check_bound(scorer, attack, keep, rows, cand, pos)
        assert bool((scorer._split < 5).all())
        assert int(pruned.sum()) > len(rows) // 8
    # a later bound is exact too (and prunes no more than all)
    scorer = Scorer(model, prompts, "target")
    _check_bound(scorer, attack, 1, rows, cand, pos, torch.full((n,), 2))


def test_bounded_swap_losses_never_prune_a_success():
    """Each target is one candidate's greedy continuation, so that candidate succeeds (and maybe
    others) though its loss need not be the lowest: it must still be found."""
    model, n, attack, rows, cand, pos = _setup()
    chosen = [cand[(rows == e).nonzero()[5, 0]].tolist() for e in range(n)]
    prompts = _prompts_continuing(model, chosen, lead=0)
    scorer = Scorer(model, prompts, "target")
    pruned, full = _check_bound(scorer, attack, 1, rows, cand, pos, torch.ones(n, dtype=torch.long))
    assert int(full.success.sum()) >= n
    assert int(pruned.sum()) > 0


def test_bounded_swap_losses_in_example_groups_under_a_memory_cap():
    """A cap on held keys/values bounds a few examples at a time, with the same results."""
    model, n, attack, rows, cand, pos = _setup()
    prompts = _prompts_continuing(model, attack.tolist(), lead=1)
    wide = Scorer(model, prompts, "target")
    tight = Scorer(model, prompts, "target", max_held_bytes=1)
    _, _, kv = wide.gradient(attack)
    tight.gradient(attack)
    assert len(tight._example_groups(rows, 4, kv)) == n
    assert len(wide._example_groups(rows, 4, kv)) == 1
    a = wide.swap_losses(rows, cand, pos, kv, keep=1)
    b = tight.swap_losses(rows, cand, pos, kv, keep=1)
    assert torch.equal(a.loss.isinf(), b.loss.isinf())
    assert torch.allclose(a.loss[a.loss.isfinite()], b.loss[b.loss.isfinite()], atol=1e-5)
    assert torch.equal(a.success, b.success)


def test_continuations_of_several_chunks_run_together_padded_and_exact(monkeypatch):
    """The rows left after pruning continue in one pass per number of columns left, however many
    chunks they come from: held caches of different lengths are padded and masked, and the
    results equal scoring every candidate fully. A small token budget splits that pass."""
    model, n, attack, rows, cand, pos = _setup()
    prompts = _prompts_continuing(model, attack.tolist(), lead=1)
    calls: list[tuple[list[int], int, int]] = []  # held widths, rows, new columns
    original = Scorer._continue_group

    def spy(self, group, n_new, ranking):
        calls.append(([part.kv[0][0].shape[2] for part, _ in group],
                      sum(sub.numel() for _, sub in group), n_new))
        return original(self, group, n_new, ranking)

    monkeypatch.setattr(Scorer, "_continue_group", spy)
    passes = {}
    for budget in (32_768, 120):
        calls.clear()
        scorer = Scorer(model, prompts, "target", max_batch_tokens=budget)
        _check_bound(scorer, attack, 1, rows, cand, pos)
        assert any(len(widths) > 1 for widths, _, _ in calls), "no pass joined two chunks"
        assert any(min(widths) < max(widths) for widths, _, _ in calls), "no padded cache"
        for widths, n_rows, n_new in calls:
            assert len(widths) == 1 or n_rows * (max(widths) + n_new) <= budget
        passes[budget] = len(calls)
    assert passes[120] > passes[32_768]
