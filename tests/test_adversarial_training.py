"""Adversarial training, the pure parts: pool ranks and rank-weighted sampling, the attack-strength
ramp, rounds per size, the round's clean/adversarial split, pool entries, parameter checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from robnb.checkpoints import CorruptCheckpoint
from robnb.defenses.adversarial_training import (
    CheckpointMismatch,
    adversarial_example,
    check_identity,
    defense_name,
    entry_example,
    evaluated_rounds,
    identity,
    loss_ranks,
    pool_probabilities,
    pool_ranks,
    ramp_iterations,
    recency_ranks,
    rounds_for,
    sample_pool,
    split_counts,
    true_label_loss_from_attack_loss,
)
from robnb.params import (
    AdversarialTrainingParams,
    ParamsError,
    load_params,
    params_from_dict,
)
from robnb.results.provenance import stable_hash
from robnb.tasks.base import Example

GOOD = {"name": "t", "family": "local-neox", "sizes": ["neox-xs", "neox-s", "neox-m"],
        "tasks": ["spam", "password_match"]}


def profile(**at) -> dict:
    return {**GOOD, "adversarial_training": at}


# ---------------------------------------------------------------- pool ranks and sampling

def test_ranks_recency_and_loss():
    assert recency_ranks(4).tolist() == [0, 1, 2, 3]          # pool order = age; newest last
    assert loss_ranks([0.3, 0.1, 0.9, 0.5]).tolist() == [1, 0, 3, 2]  # highest loss ranks top
    assert loss_ranks([0.2, 0.2, 0.1]).tolist() == [1, 2, 0]  # a tie: the older ranks lower
    assert pool_ranks([0.3, 0.1, 0.9, 0.5]).tolist() == [0.5, 0.5, 2.5, 2.5]


def test_pool_probabilities_by_hand():
    # ranks [0.5, 0.5, 2.5, 2.5], max 2.5: weights exp(0.005·(-2)), same, 1, 1
    p = pool_probabilities([0.3, 0.1, 0.9, 0.5], 0.005)
    w = np.array([math.exp(-0.01), math.exp(-0.01), 1.0, 1.0])
    np.testing.assert_allclose(p, w / w.sum(), rtol=1e-12)
    # temperature 1, losses increasing with age: ranks [0, 1, 2] -> exp(-2), exp(-1), 1
    p = pool_probabilities([1.0, 2.0, 3.0], 1.0)
    w = np.array([math.exp(-2), math.exp(-1), 1.0])
    np.testing.assert_allclose(p, w / w.sum(), rtol=1e-12)
    # newest but easiest vs oldest but hardest: equal rank, equal chance
    p = pool_probabilities([5.0, 0.0], 1.0)
    np.testing.assert_allclose(p, [0.5, 0.5])
    assert pool_probabilities([], 1.0).size == 0


def test_sampling_without_replacement_follows_the_weights():
    losses = [1.0, 2.0, 3.0, 0.5, 4.0]
    rng = np.random.default_rng(0)
    for k in (1, 3, 5, 9):
        idx = sample_pool(losses, k, 0.005, rng)
        assert len(idx) == min(k, 5) and len(set(idx.tolist())) == len(idx)
    assert sample_pool([], 3, 0.005, rng).size == 0
    assert sample_pool(losses, 0, 0.005, rng).size == 0
    # same generator state -> same draw
    a = sample_pool(losses, 3, 0.5, np.random.default_rng(7))
    b = sample_pool(losses, 3, 0.5, np.random.default_rng(7))
    assert a.tolist() == b.tolist()
    # first draws land with the hand-computed probabilities
    p = pool_probabilities(losses, 1.0)
    rng = np.random.default_rng(1)
    counts = np.bincount([sample_pool(losses, 1, 1.0, rng)[0] for _ in range(20_000)], minlength=5)
    np.testing.assert_allclose(counts / 20_000, p, atol=0.015)
    # a sharp temperature takes the top-ranked examples first
    top = sample_pool(losses, 2, 50.0, np.random.default_rng(3))
    assert set(top.tolist()) == {4, 2}  # ranks: 4 -> 4.0, 2 -> 2.0 (then 1 -> 1.0 …)


def test_true_label_loss_from_the_attack_loss():
    # the attack logs -log p(wrong); p(wrong)=0.25 -> true-label loss -log 0.75
    assert true_label_loss_from_attack_loss(-math.log(0.25)) == pytest.approx(-math.log(0.75))
    assert math.isfinite(true_label_loss_from_attack_loss(0.0))


def test_split_counts_cap_adversarial_share():
    at = AdversarialTrainingParams(max_train=32, max_adversarial_fraction=0.8)
    assert split_counts(at, 0, 1000) == (0, 32)
    assert split_counts(at, 10, 1000) == (10, 22)
    assert split_counts(at, 100, 1000) == (25, 7)      # floor(0.8·32) = 25
    assert split_counts(at, 100, 3) == (25, 3)          # not more clean than there are
    paper = AdversarialTrainingParams()
    assert split_counts(paper, 5000, 20_000) == (800, 200)


# ---------------------------------------------------------------- schedule

def test_ramp_is_linear_from_start_to_end():
    gcg = [ramp_iterations(r, 10, 8, 64) for r in range(1, 11)]
    assert gcg == [8, 14, 20, 27, 33, 39, 45, 52, 58, 64]
    rt = [ramp_iterations(r, 5, 1024, 2048) for r in range(1, 6)]
    assert rt == [1024, 1280, 1536, 1792, 2048]
    assert ramp_iterations(1, 1, 8, 64) == 8
    assert all(b >= a for a, b in zip(gcg, gcg[1:]))


def test_no_ramp_ablation_uses_full_strength_every_round():
    assert [ramp_iterations(r, 4, 8, 64, ramp=False) for r in range(1, 5)] == [64] * 4
    at = AdversarialTrainingParams(ramp=False)
    assert defense_name(at) == "adv_gcg_no_ramp"
    assert defense_name(AdversarialTrainingParams()) == "adv_gcg"
    rt = AdversarialTrainingParams(attack={"name": "random_token", "placement": "infix90"})
    assert defense_name(rt) == "adv_random_token_infix90"
    with pytest.raises(ValueError, match="outside"):
        ramp_iterations(0, 4, 8, 64)


def test_rounds_per_size():
    p = params_from_dict(profile(rounds=3))
    assert [rounds_for(p, s) for s in p.sizes] == [3, 3, 3]
    p = params_from_dict(profile(rounds=[90, 20, 2], min_rounds=5, max_rounds=60))
    assert [rounds_for(p, s) for s in p.sizes] == [60, 20, 5]
    p = params_from_dict(profile(rounds={"neox-xs": 4, "neox-s": 3, "neox-m": 2}))
    assert [rounds_for(p, s) for s in p.sizes] == [4, 3, 2]
    with pytest.raises(ValueError, match="not in profile"):
        rounds_for(p, "neox-xl")


def test_paper_profile_rounds_decrease_within_5_60():
    p = load_params("paper-pythia")
    at = p.adversarial_training
    rounds = [rounds_for(p, s) for s in p.sizes]
    assert all(5 <= r <= 60 for r in rounds) and rounds == sorted(rounds, reverse=True)
    assert rounds[0] == 60 and rounds[-1] == 5
    assert (at.n_attack_per_round, at.max_train, at.max_adversarial_fraction) == (200, 1000, 0.8)
    assert (at.ramp_start_iterations, at.ramp_end_iterations, at.ramp) == (8, 64, True)
    assert (at.optimizer, at.lr, at.schedule, at.epochs_per_round) == ("adafactor", 1e-5,
                                                                       "constant", 1)
    assert at.pool_temperature == 0.005 and at.n_eval_examples == 500
    assert at.attack.name == "gcg" and at.attack.placement == "suffix"
    evals = {(s.name, s.placement): s.iterations for s in at.evaluation_attacks}
    assert evals[("gcg", "suffix")] == 128 and ("gcg", "infix90") in evals


def test_quick_and_ci_profiles_train_password_match_and_spam():
    for name in ("quick", "ci"):
        p = load_params(name)
        at = p.adversarial_training
        tasks = at.tasks or p.tasks
        assert {"password_match", "spam"} <= set(tasks), name
        assert at.attack.name == "gcg"
        assert any(s.placement != at.attack.placement for s in at.evaluation_attacks), name


def test_evaluated_rounds():
    at = AdversarialTrainingParams(evaluate_after_rounds=[0, 2, 10])
    assert evaluated_rounds(at, 4) == [0, 2, 4]
    at = AdversarialTrainingParams(evaluate_after_rounds=[1], evaluate_last_round=False)
    assert evaluated_rounds(at, 4) == [1]


# ---------------------------------------------------------------- parameters

@pytest.mark.parametrize("at, needle", [
    ({"rounds": [3, 2]}, "one entry per size"),
    ({"rounds": {"neox-xs": 3}}, "missing size(s) ['neox-s', 'neox-m']"),
    ({"tasks": ["word_length"]}, "adversarial_training.tasks: 'word_length'"),
    ({"ramp_start_iterations": 70}, "ramp_start_iterations (70) is above"),
    ({"evaluation_attacks": [{"name": "gcg"}, {"name": "gcg", "iterations": 50}]},
     "attack/placement repeated"),
    ({"max_adversarial_fraction": 1.5}, "adversarial_training.max_adversarial_fraction"),
    ({"n_rounds": 3}, "adversarial_training.n_rounds: unknown key"),
])
def test_bad_adversarial_training_params_are_named(tmp_path, at, needle):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(profile(**at)))
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_identity_mismatch_names_the_parameter(tmp_path):
    p = params_from_dict(profile(rounds=3))
    old = identity(p, "neox-xs", "spam", 0, "k1")
    new = identity(params_from_dict(profile(rounds=3, max_train=64, lr=1e-4)), "neox-xs",
                   "spam", 0, "k1")
    meta = {"params": old, "params_hash": stable_hash(old)}
    check_identity(tmp_path, meta, old)  # same parameters pass
    with pytest.raises(CheckpointMismatch) as err:
        check_identity(tmp_path, meta, new)
    msg = str(err.value)
    assert "adversarial_training.max_train: checkpoint has 1000, parameters give 64" in msg
    assert "adversarial_training.lr" in msg and "MANIFEST.json" in msg
    assert isinstance(err.value, CorruptCheckpoint)
    # another base model (fine-tuned checkpoint) is another identity too
    with pytest.raises(CheckpointMismatch, match="finetune_key"):
        check_identity(tmp_path, meta, identity(p, "neox-xs", "spam", 0, "k2"))
    # keep policy and other sizes' rounds do not matter
    same = identity(params_from_dict(profile(rounds=[3, 9, 9], keep_checkpoints="all")),
                    "neox-xs", "spam", 0, "k1")
    check_identity(tmp_path, meta, same)


# ---------------------------------------------------------------- pool entries

@pytest.mark.parametrize("position", [0.0, 0.9, 1.0])
def test_pool_entry_is_the_rendered_adversarial_text(position):
    ex = Example("Instr. ", "Sys: x\n", "User password: hello world\n", "---\n", 1,
                 (" DENIED", " GRANTED"))
    entry = adversarial_example(ex, " @&@&", position, 3)
    back = entry_example(entry)
    assert back.text == ex.render(" @&@&", position)
    assert back.label == 1 and back.label_texts == ex.label_texts and entry["round"] == 3
