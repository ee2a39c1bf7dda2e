"""Attack compute equals the paper's formula (forward 2·N·tokens, backward 4·N·tokens, tokens =
the full input including any cached prefix), and the cached fast path computes what a plain
forward pass computes."""

from __future__ import annotations

import torch
from attack_fixtures import one_thread, tiny  # noqa: F401 (autouse fixture)
from transformers import GPTNeoXForSequenceClassification

from robnb.attacks.gcg import gcg
from robnb.attacks.placement import decode_attack, initial_attack_ids
from robnb.attacks.prompts import label_prompts
from robnb.attacks.run import attack_context, run_attack
from robnb.attacks.scoring import Scorer
from robnb.models.counting import classifier_params
from robnb.models.ladder import neox_config
from robnb.params import AttackSpec
from robnb.tasks import load_task
from robnb.tasks.encoding import encode_slot, encode_text


def neox_classifier_params(vocab: int, d: int, layers: int, labels: int = 2) -> int:
    """GPT-NeoX classifier parameters by hand: embedding, per layer two LayerNorms, fused QKV and
    output projection (with biases), a 4x MLP (with biases), final LayerNorm, bias-free head."""
    per_layer = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)
    return vocab * d + layers * per_layer + 2 * d + d * labels


def test_parameter_count_of_a_known_model():
    cfg = neox_config("neox-s", 300)
    cfg.num_labels = 2
    model = GPTNeoXForSequenceClassification(cfg)
    assert classifier_params(model) == neox_classifier_params(300, 64, 2)


def _examples():
    return load_task("spam", "validation", n=6, seed=2)


def test_gcg_iteration_flops_equal_the_formula():
    t = tiny()
    n = classifier_params(t.classifier)
    spec = AttackSpec(name="gcg", iterations=2, n_attack_tokens=6, n_candidates=16, top_k=16)
    for ex in _examples()[:3]:
        before, after = encode_slot(t.tokenizer, ex, 1.0)
        length = len(before) + spec.n_attack_tokens + len(after)
        ctx = attack_context(t.classifier, t.tokenizer, label_prompts(t.tokenizer, [ex], 1.0),
                             "label", spec)
        for res in gcg(ctx):
            # forward + backward over the full input for the gradient, then one forward per
            # scored candidate; cached prefix tokens count as in the paper
            assert res.n_scored > 0
            assert res.flops == 6 * n * length + 2 * n * length * res.n_scored


def test_prefix_cache_changes_executed_flops_only():
    t = tiny()
    examples = _examples()
    spec = AttackSpec(name="gcg", iterations=2, n_attack_tokens=6, n_candidates=16, top_k=16)
    runs = {}
    for cache in (False, True):
        ctx = attack_context(t.classifier, t.tokenizer, label_prompts(t.tokenizer, examples, 1.0),
                             "label", spec, use_prefix_cache=cache)
        runs[cache] = list(gcg(ctx))
    for slow, fast in zip(runs[False], runs[True]):
        assert fast.attack_ids == slow.attack_ids and fast.n_scored == slow.n_scored
        assert fast.flops == slow.flops
        assert slow.flops_executed == slow.flops
        assert fast.flops_executed < 0.5 * fast.flops


def test_scorer_counts_full_length_and_executed_tokens_per_row():
    t = tiny()
    n = classifier_params(t.classifier)
    prompts = label_prompts(t.tokenizer, _examples(), 0.9)
    scorer = Scorer(t.classifier, prompts, "label")
    attack = torch.tensor([initial_attack_ids(t.tokenizer, 5)] * len(prompts))
    rows = torch.arange(len(prompts))
    _, _, kv = scorer.gradient(attack)
    f0, e0 = scorer.compute.totals()
    full = [p.length(5) for p in prompts]
    prefix = sum(len(p.before) for p in prompts)
    assert f0 == sum(6 * n * L for L in full)
    assert e0 == 2 * n * prefix + sum(6 * n * (5 + len(p.after)) for p in prompts)
    swapped = attack.clone()
    swapped[:, 3] = attack[0, 0]
    scorer.swap_losses(rows, swapped, torch.full((len(prompts),), 3), kv)
    f1, e1 = scorer.compute.totals()
    assert f1 - f0 == sum(2 * n * L for L in full)
    assert e1 - e0 == sum(2 * n * (5 - 3 + len(p.after)) for p in prompts)


def test_random_token_formula_counts_only_unbroken_examples(monkeypatch):
    t = tiny()
    n = classifier_params(t.classifier)
    length = 3
    # fixed-length attacks that survive decode/encode, so every token count is known
    pool = [[a, b, a] for a in range(5, 120) for b in (7, 40, 90)]
    pool = [p for p in pool if encode_text(t.tokenizer, decode_attack(t.tokenizer, p)) == p]
    assert len(pool) > 50

    def fixed_length(tokenizer, allowed_ids, count, length_, generator):
        idx = torch.randint(len(pool), (count,), generator=generator)
        return [pool[i] for i in idx.tolist()]

    monkeypatch.setattr("robnb.attacks.random_token.random_attacks", fixed_length)
    examples = load_task("spam", "validation", n=30, seed=3)
    spec = AttackSpec(name="random_token", iterations=12, n_attack_tokens=length)
    records, strings = run_attack(t.classifier, t.tokenizer, examples, spec, batch_examples=30)
    full = {s["example_index"]: length + sum(map(len, encode_slot(t.tokenizer,
                                                                   examples[s["example_index"]], 1.0)))
            for s in strings}
    broken_at = {s["example_index"]: s["iteration"] for s in strings if s["success"]}
    assert 0 < len(broken_at) < len(full), "want examples that break and examples that do not"
    for r in records:
        alive = [i for i in full if broken_at.get(i, r["iteration"]) >= r["iteration"]]
        assert r["attack_flops"] == sum(2 * n * full[i] for i in alive)
    assert records[-1]["n_flipped"] == len(broken_at)


def test_cached_scores_equal_a_plain_forward_pass():
    t = tiny()
    for position in (1.0, 0.9, 0.0):
        prompts = label_prompts(t.tokenizer, _examples(), position)
        attack = torch.randint(3, len(t.tokenizer), (len(prompts), 7),
                               generator=torch.Generator().manual_seed(0))
        rows = torch.arange(len(prompts))
        fast = Scorer(t.classifier, prompts, "label")
        grad, now, kv = fast.gradient(attack)
        swapped = attack.clone()
        swapped[:, 4] = 11
        shared = fast.swap_losses(rows, swapped, torch.full((len(prompts),), 4), kv)
        for i, p in enumerate(prompts):
            for ids, got in ((attack[i], now.loss[i]), (swapped[i], shared.loss[i])):
                x = torch.tensor([list(p.before) + ids.tolist() + list(p.after)])
                with torch.no_grad():
                    logits = t.classifier(input_ids=x).logits
                want = torch.nn.functional.cross_entropy(logits, torch.tensor([p.target[0]]))
                assert abs(float(got) - float(want)) < 1e-5
