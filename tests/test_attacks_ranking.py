"""GCG with a bfloat16 ranking copy: faster candidate scores that never reach the results."""

from __future__ import annotations

import pytest
import torch
from attack_fixtures import one_thread, tiny  # noqa: F401 (autouse fixture)
from pydantic import ValidationError

import robnb.attacks.gcg as gcg_module
from robnb.attacks.gcg import gcg
from robnb.attacks.placement import initial_attack_ids
from robnb.attacks.prompts import label_prompts
from robnb.attacks.run import attack_context, replay, run_attack
from robnb.attacks.scoring import Scorer, ranking_copy
from robnb.params import AttackSpec
from robnb.tasks import load_task


@pytest.fixture(scope="module")
def spam_val():
    return load_task("spam", "validation", n=24, seed=0)


def _spec(ranking: str, **kw) -> AttackSpec:
    return AttackSpec(**{"name": "gcg", "iterations": 5, "n_candidates": 24, "top_k": 16,
                         "ranking_dtype": ranking, **kw})


def test_ranking_copy_is_bf16_and_its_scores_track_the_exact_ones(spam_val):
    t = tiny()
    assert ranking_copy(t.classifier, "model") is None
    low = ranking_copy(t.classifier, "bfloat16")
    assert low.get_input_embeddings().weight.dtype == torch.bfloat16
    assert t.classifier.get_input_embeddings().weight.dtype == torch.float32  # original untouched
    prompts = label_prompts(t.tokenizer, spam_val[:8], 0.9)
    scorer = Scorer(t.classifier, prompts, "label", ranking_model=low)
    attack = torch.tensor([initial_attack_ids(t.tokenizer, 6)] * len(prompts))
    rows = torch.arange(len(prompts))
    _, now, kv = scorer.gradient(attack)
    swapped = attack.clone()
    swapped[:, 4] = attack[0, 0] + 7
    pos = torch.full((len(prompts),), 4)
    exact = scorer.swap_losses(rows, swapped, pos, kv)
    ranked = scorer.swap_losses(rows, swapped, pos, kv, ranking=True)
    ranked_plain = scorer.losses(rows, swapped, ranking=True)  # no attack cache
    assert exact.loss.dtype == ranked.loss.dtype == torch.float32
    assert not torch.equal(exact.loss, ranked.loss), "the ranking pass did not run in bfloat16"
    assert torch.allclose(ranked.loss, exact.loss, atol=0.05, rtol=0.05)
    assert torch.allclose(ranked.loss, ranked_plain.loss, atol=0.05, rtol=0.05)
    # the exact scores are the model's own, cache or not
    assert torch.allclose(exact.loss, scorer.losses(rows, swapped).loss, atol=1e-5)


def test_ranking_needs_a_ranking_model(spam_val):
    t = tiny()
    scorer = Scorer(t.classifier, label_prompts(t.tokenizer, spam_val[:2], 1.0), "label")
    with pytest.raises(ValueError, match="ranking_dtype"):
        scorer.losses(torch.arange(2), torch.zeros(2, 3, dtype=torch.long), ranking=True)


def test_ranking_dtype_is_refused_for_attacks_other_than_gcg():
    with pytest.raises(ValidationError, match="ranking_dtype bfloat16 is a GCG option"):
        AttackSpec(name="random_token", ranking_dtype="bfloat16")
    with pytest.raises(ValidationError):
        AttackSpec(name="gcg", ranking_dtype="float16")


def test_confirming_every_candidate_reproduces_exact_gcg(spam_val, monkeypatch):
    """With every candidate re-scored exactly, ranked GCG must choose exactly as exact GCG."""
    t = tiny()
    prompts = label_prompts(t.tokenizer, spam_val[:8], 1.0)

    def trajectory(spec: AttackSpec):
        ctx = attack_context(t.classifier, t.tokenizer, prompts, "label", spec)
        return [(r.loss, r.success, r.attack_ids, r.step_loss) for r in gcg(ctx)]

    monkeypatch.setattr(gcg_module, "CONFIRM", 24)
    exact, ranked = trajectory(_spec("model")), trajectory(_spec("bfloat16"))
    for (le, se, ie, ke), (lr, sr, ir, kr) in zip(exact, ranked, strict=True):
        assert ie == ir
        assert torch.equal(se, sr)
        assert torch.allclose(le, lr, atol=1e-6) and torch.allclose(ke, kr, atol=1e-6)


def test_ranked_gcg_logs_exact_scores_that_replay(spam_val):
    t = tiny()
    spec = _spec("bfloat16", iterations=6)
    prompts = label_prompts(t.tokenizer, spam_val[:12], 1.0)
    ctx = attack_context(t.classifier, t.tokenizer, prompts, "label", spec)
    results = list(gcg(ctx))
    history = torch.stack([r.loss for r in results])
    assert bool((history[1:] <= history[:-1]).all()), "best-so-far loss went up"
    last = results[-1]
    exact = Scorer(t.classifier, prompts, "label", use_prefix_cache=False)
    rescored = exact.losses(torch.arange(len(prompts)), torch.tensor(last.attack_ids))
    assert torch.allclose(rescored.loss, last.loss, atol=1e-5), "a bfloat16 score was logged"
    assert torch.equal(rescored.success, last.success)
    # the attack kept each iteration is logged with its exact loss too
    for r in results:
        kept = exact.losses(torch.arange(len(prompts)), torch.tensor(r.step_ids))
        assert torch.allclose(kept.loss, r.step_loss, atol=1e-5)
    # and through the run/replay path: every logged success replays
    _, strings = run_attack(t.classifier, t.tokenizer, spam_val, spec, batch_examples=12)
    replayed = replay(t.classifier, t.tokenizer, spam_val, strings)
    assert replayed and all(r["matches"] for r in replayed)
    assert all(abs(r["loss"] - s["loss"]) < 1e-4 for r, s in zip(replayed, strings))


class _RecordingScorer:
    """Stands in for a Scorer in _confirm: records which candidates get exact scores."""
    device = torch.device("cpu")

    def __init__(self):
        self.asked: list[tuple[int, int]] = []

    def swap_losses(self, rows, candidates, pos, kv):
        from robnb.attacks.scoring import Scores
        self.asked = list(zip(rows.tolist(), candidates[:, 0].tolist()))
        n = len(rows)
        return Scores(torch.zeros(n), torch.zeros(n, dtype=torch.bool))


def test_confirm_rescores_the_best_ranked_and_one_ranked_success_per_example(monkeypatch):
    monkeypatch.setattr(gcg_module, "CONFIRM", 3)
    n_ex, n_c = 2, 10
    candidates = torch.arange(n_c).repeat(n_ex, 1).unsqueeze(-1)  # candidate c is token c
    pos = torch.zeros(n_ex, n_c, dtype=torch.long)
    ex, cand = torch.meshgrid(torch.arange(n_ex), torch.arange(n_c), indexing="ij")
    ex, cand = ex.flatten(), cand.flatten()
    loss = cand.float()                                     # candidate c ranks c-th
    success = torch.zeros(n_ex * n_c, dtype=torch.bool)
    success[[6, 8, 9]] = True                               # example 0: ranked successes 6, 8, 9
    from robnb.attacks.scoring import Scores
    scorer = _RecordingScorer()
    gcg_module._confirm(scorer, candidates, pos, ex, cand, Scores(loss, success), None)
    assert sorted(scorer.asked) == [(0, 0), (0, 1), (0, 2), (0, 6), (1, 0), (1, 1), (1, 2)]
