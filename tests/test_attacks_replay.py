"""Stored attack strings replayed through the model's own forward pass reproduce the logged
result; records fit the results schema; generative mode and BEAST run on a causal model."""

from __future__ import annotations

import math

import pytest
import torch
from attack_fixtures import one_thread, tiny  # noqa: F401 (autouse fixture)

from robnb.attacks.gcg import gcg
from robnb.attacks.generative import chat_example, target_prompts
from robnb.attacks.run import attack_context, replay, run_attack
from robnb.params import AttackSpec
from robnb.results.schema import TABLES
from robnb.results.store import read_table, write_records
from robnb.tasks import load_task


@pytest.mark.parametrize("name,placement", [("gcg", "suffix"), ("gcg", "infix90"),
                                            ("random_token", "prefix")])
def test_replay_reproduces_logged_flips(name, placement):
    t = tiny()
    examples = load_task("spam", "validation", n=24, seed=4)
    spec = AttackSpec(name=name, placement=placement, iterations=4, n_candidates=32, top_k=32)
    records, strings = run_attack(t.classifier, t.tokenizer, examples, spec)
    assert len(strings) == records[-1]["n_correct_before"]
    replayed = replay(t.classifier, t.tokenizer, examples, strings, batch_size=5)
    assert [r["example_index"] for r in replayed] == [s["example_index"] for s in strings]
    assert all(r["matches"] for r in replayed)
    for r, s in zip(replayed, strings):
        assert math.isclose(r["target_prob"], s["target_prob"], rel_tol=1e-4, abs_tol=1e-6)
    assert sum(s["success"] for s in strings) == records[-1]["n_flipped"]
    if name == "gcg":
        outcomes = {s["success"] for s in strings}
        assert outcomes == {True, False}, "want both flipped and unflipped strings to replay"


def test_replay_detects_a_string_that_does_not_flip():
    t = tiny()
    examples = load_task("spam", "validation", n=24, seed=4)
    _, strings = run_attack(t.classifier, t.tokenizer, examples,
                            AttackSpec(name="gcg", iterations=4, n_candidates=32, top_k=32))
    won = [dict(s) for s in strings if s["success"]]
    assert won
    for s in won:
        s["attack_string"] = ""  # the clean input: the model was right, so no flip
    assert not any(r["success"] or r["matches"] for r in replay(t.classifier, t.tokenizer, examples, won))


def test_records_fit_the_attacks_table(tmp_path):
    t = tiny()
    examples = load_task("spam", "validation", n=8, seed=5)
    spec = AttackSpec(name="random_token", iterations=3)
    context = {"run_id": "r1", "family": "local-neox", "model": "tiny", "pretrain_flops": 1.0,
               "task": "spam", "seed": 0}
    records, _ = run_attack(t.classifier, t.tokenizer, examples, spec, context=context, round_index=2)
    write_records(tmp_path, "attacks", "r1", records)
    df = read_table(tmp_path, "attacks")
    assert set(TABLES["attacks"]) <= set(df.columns)
    assert list(df["iteration"]) == [1, 2, 3] and set(df["round"]) == {2}
    assert (df["asr"] == df["n_flipped"] / df["n_correct_before"]).all()
    assert (df["attack_flops_executed"] <= df["attack_flops"]).all()
    assert df["model_size"].iloc[0] == sum(p.numel() for p in t.classifier.parameters())


def test_generative_gcg_lowers_target_loss_and_replays():
    t = tiny()
    requests = ["You will be given a text message below.", "Win a free prize now", "See you at lunch"]
    examples = [chat_example(t.tokenizer, r) for r in requests]
    targets = [" HAM", " SPAM", " POSITIVE"]
    spec = AttackSpec(name="gcg", iterations=6, n_candidates=48, top_k=48)
    ctx = attack_context(t.lm, t.tokenizer, target_prompts(t.tokenizer, examples, 1.0, targets),
                         "target", spec)
    results = list(gcg(ctx))
    first, last = results[0], results[-1]
    assert bool((last.loss <= first.loss).all()) and bool((last.loss < first.loss).any())
    _, strings = run_attack(t.lm, t.tokenizer, examples, spec, targets=targets)
    assert strings and all(s["target"] in targets for s in strings)
    replayed = replay(t.lm, t.tokenizer, examples, strings)
    assert all(r["matches"] for r in replayed)
    for r, s in zip(replayed, strings):
        assert math.isclose(r["loss"], s["loss"], rel_tol=1e-4, abs_tol=1e-5)


def test_beast_grows_one_token_per_iteration_and_replays():
    t = tiny()
    examples = load_task("spam", "validation", n=6, seed=6)
    spec = AttackSpec(name="beast", iterations=4, beam_width=3, branching=3)
    records, strings = run_attack(t.classifier, t.tokenizer, examples, spec, proposal_model=t.lm)
    assert [r["iteration"] for r in records] == [1, 2, 3, 4]
    assert all(len(s["attack_ids"]) == s["iteration"] for s in strings)
    assert all(r["matches"] for r in replay(t.classifier, t.tokenizer, examples, strings))
    with pytest.raises(ValueError, match="proposal model"):
        run_attack(t.classifier, t.tokenizer, examples, spec)


def test_scores_do_not_depend_on_batch_composition():
    t = tiny()
    examples = load_task("spam", "validation", n=10, seed=7)
    spec = AttackSpec(name="random_token", iterations=2, seed=3)
    _, together = run_attack(t.classifier, t.tokenizer, examples, spec, batch_examples=10)
    replayed_one_by_one = replay(t.classifier, t.tokenizer, examples, together, batch_size=1)
    torch.testing.assert_close(torch.tensor([s["loss"] for s in together]),
                               torch.tensor([r["loss"] for r in replayed_one_by_one]),
                               rtol=1e-4, atol=1e-5)
