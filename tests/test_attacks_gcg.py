"""GCG's search behaves as specified on a tiny fine-tuned classifier."""

from __future__ import annotations

import pytest
import torch
from attack_fixtures import one_thread, tiny  # noqa: F401 (autouse fixture)

from robnb.attacks.gcg import gcg, sample_swaps
from robnb.attacks.prompts import label_prompts
from robnb.attacks.run import attack_context, run_attack
from robnb.params import AttackSpec
from robnb.tasks import load_task


@pytest.fixture(scope="module")
def spam_val():
    return load_task("spam", "validation", n=40, seed=0)


def test_best_so_far_loss_never_increases(spam_val):
    t = tiny()
    spec = AttackSpec(name="gcg", iterations=8, n_candidates=32, top_k=32)
    ctx = attack_context(t.classifier, t.tokenizer, label_prompts(t.tokenizer, spam_val[:12], 1.0),
                         "label", spec)
    history = torch.stack([r.loss for r in gcg(ctx)])  # [iterations, examples]
    assert history.shape == (8, 12)
    assert bool((history[1:] <= history[:-1]).all()), "best-so-far loss went up"
    assert bool((history[-1] < history[0]).any()), "GCG never improved on any example"


def test_gcg_breaks_an_example_random_token_does_not(spam_val):
    t = tiny()
    budget = dict(iterations=10, n_candidates=64, top_k=64, seed=0)
    _, gcg_strings = run_attack(t.classifier, t.tokenizer, spam_val, AttackSpec(name="gcg", **budget),
                                batch_examples=40)
    _, rt_strings = run_attack(t.classifier, t.tokenizer, spam_val,
                               AttackSpec(name="random_token", **budget), batch_examples=40)
    gcg_won = {s["example_index"] for s in gcg_strings if s["success"]}
    rt_won = {s["example_index"] for s in rt_strings if s["success"]}
    assert {s["example_index"] for s in gcg_strings} == {s["example_index"] for s in rt_strings}
    only_gcg = gcg_won - rt_won
    assert only_gcg, "no example that GCG breaks and RandomToken does not"
    assert len(gcg_won) > len(rt_won)


def test_swaps_change_exactly_one_allowed_token_and_are_distinct():
    g = torch.Generator().manual_seed(0)
    grad = torch.randn(2, 5, 50)
    current = torch.randint(0, 50, (2, 5))
    allowed = torch.ones(50, dtype=torch.bool)
    allowed[:10] = False
    cands, pos = sample_swaps(grad, current, allowed, top_k=8, n_candidates=40, generator=g)
    assert cands.shape == (2, 40, 5)
    changed = cands != current[:, None, :]
    assert bool((changed.sum(-1) == 1).all())
    assert bool((changed.float().argmax(-1) == pos).all())
    new = cands.gather(2, pos[..., None]).squeeze(-1)
    assert bool((new >= 10).all()), "a disallowed token was proposed"
    top = (-grad).masked_fill(~allowed, float("-inf")).topk(9, -1).indices  # 8 + the current one
    for e in range(2):
        assert len({tuple(c.tolist()) for c in cands[e]}) == 40
        for c in range(40):
            assert int(new[e, c]) in top[e, int(pos[e, c])].tolist()
