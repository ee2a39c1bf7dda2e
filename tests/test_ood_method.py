"""The OOD method's perturbations are label-preserving by construction, per task."""

import random

import pytest

from robnb.defenses.ood_method import (NEGATIONS, augment, augment_example, password_style,
                                       perturb_text)
from robnb.params import OODMethodParams
from robnb.tasks import load_task
from robnb.tasks.procedural import password_match_example, word_length_example

STRONG = OODMethodParams(fraction=1.0, char_rate=0.5, case_rate=0.5, word_dropout=0.3)


def test_password_styles_keep_matches_matching_and_non_matches_different():
    ex = load_task("password_match", "train", 600, 0)
    out = augment(ex, "password_match", STRONG, seed=0)
    changed = 0
    for a, b in zip(ex, out):
        assert b.label == a.label == int(b.meta["system"] == b.meta["user"])
        changed += b.meta["system"] != a.meta["system"]
    assert changed > 500  # almost every style changes the word
    rng = random.Random(0)
    for _ in range(200):  # the styles are injective on lowercase words
        f = password_style(rng)
        assert f("planet") != f("planer") and f("ab") != f("abc")


def test_word_length_edits_keep_every_length():
    ex = load_task("word_length", "train", 600, 0)
    out = augment(ex, "word_length", STRONG, seed=0)
    assert sum(a.meta["first"] != b.meta["first"] for a, b in zip(ex, out)) > 400
    for a, b in zip(ex, out):
        assert len(b.meta["first"]) == len(a.meta["first"])
        assert len(b.meta["second"]) == len(a.meta["second"]) and b.label == a.label


def test_text_perturbation_keeps_markers_lines_and_negations():
    s = OODMethodParams(char_rate=1.0, case_rate=1.0, word_dropout=0.9)
    text = "Premise: the cat did not sleep today at all\nHypothesis: nobody can't never sleep\n"
    for seed in range(20):
        out = perturb_text(text, random.Random(seed), s)
        assert out.count("\n") == 2 and out.startswith("Premise: ")
        assert "\nHypothesis: " in out
        for w in ("not", "can't", "never", "nobody"):
            assert w in out.split()
    assert "not" in NEGATIONS


def test_fraction_controls_how_many_are_replaced():
    ex = load_task("spam", "train", 400, 0)
    assert augment(ex, "spam", OODMethodParams(fraction=0.0), 0) == ex
    out = augment(ex, "spam", OODMethodParams(fraction=0.5), 0)
    n = sum(bool(e.meta.get("augmented")) for e in out)
    assert 150 < n < 250 and [e.label for e in out] == [e.label for e in ex]
    assert augment(ex, "spam", OODMethodParams(fraction=0.5), 0) == out  # deterministic


def test_a_label_change_is_caught():
    bad = password_match_example("abc", "abc")
    ok = augment_example(bad, "password_match", random.Random(0), STRONG)
    assert ok.label == 1
    wl = word_length_example("aaaa", "bbb")
    assert augment_example(wl, "word_length", random.Random(1), STRONG).label == 0
    with pytest.raises(KeyError):  # procedural examples need their meta
        augment_example(load_task("spam", "train", 1, 0)[0], "password_match",
                        random.Random(0), STRONG)
