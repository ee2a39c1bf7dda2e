from collections import Counter

import pytest

from robnb.tasks import TASK_NAMES, load_task
from robnb.tasks.procedural import PASSWORD_MATCH_INSTRUCTIONS
from robnb.tasks.words import english_words


def test_password_match_format_and_balance():
    ex = load_task("password_match", "train", 1000, seed=0)
    assert Counter(e.label for e in ex) == {0: 500, 1: 500}
    e = ex[0]
    assert e.instructions == PASSWORD_MATCH_INSTRUCTIONS
    assert e.modifiable == "" and e.answer_prompt == "\n\nAnswer:"
    assert e.label_texts == (" DENIED", " GRANTED")
    s, u = e.meta["system"], e.meta["user"]
    assert e.text == (PASSWORD_MATCH_INSTRUCTIONS + f"System password: {s}\nUser password: {u}\n---\n"
                      + "\n\nAnswer:")
    for e in ex:
        assert e.label == int(e.meta["system"] == e.meta["user"])


def test_word_length_ties_go_first_and_first_is_majority():
    ex = load_task("word_length", "train", 4000, seed=0)
    for e in ex:
        a, b = e.meta["first"], e.meta["second"]
        assert e.label == (0 if len(a) >= len(b) else 1)
        assert e.prefix == f"Word 1: {a}\nWord 2: {b}\n---\n"
    share_first = sum(e.label == 0 for e in ex) / len(ex)
    assert 0.52 < share_first < 0.60


def test_procedural_is_deterministic_and_splits_differ():
    a = load_task("password_match", "train", 50, seed=3)
    b = load_task("password_match", "train", 50, seed=3)
    c = load_task("password_match", "validation", 50, seed=3)
    assert [e.text for e in a] == [e.text for e in b]
    assert [e.text for e in a] != [e.text for e in c]


def test_word_list_is_pinned_size():
    words = english_words()
    assert len(words) == 25_000 and len(set(words)) == 25_000
    assert all(w.isalpha() and w.islower() for w in words)


@pytest.mark.parametrize("task", ["spam", "sentiment"])
def test_text_tasks_have_fixed_disjoint_splits(task):
    tr = load_task(task, "train")
    va = load_task(task, "validation")
    assert len(tr) > 1000 and len(va) > 300
    assert not ({e.modifiable for e in tr} & {e.modifiable for e in va})
    labels = Counter(e.label for e in tr)
    assert set(labels) == {0, 1} and min(labels.values()) > 100
    # sampling a subset never changes which examples are validation
    assert {e.modifiable for e in load_task(task, "validation", 50, seed=1)} <= {e.modifiable for e in va}


def test_sentiment_is_deduplicated():
    texts = [e.modifiable.lower() for e in load_task("sentiment", "train")]
    assert len(texts) == len(set(texts))


@pytest.mark.parametrize("task", ["password_match", "word_length", "spam", "sentiment"])
@pytest.mark.parametrize("position", [0.0, 0.9, 1.0])
def test_attack_slot_is_in_the_modifiable_text(task, position):
    e = load_task(task, "validation", 3, seed=0)[0]
    text = e.render("<ATTACK>", position)
    k = round(position * len(e.modifiable))
    assert text == (e.instructions + e.prefix + e.modifiable[:k] + "<ATTACK>" + e.modifiable[k:]
                    + e.suffix + e.answer_prompt)


def test_unknown_task_and_split_are_named():
    with pytest.raises(KeyError, match="unknown task 'pm'.*password_match"):
        load_task("pm", "train")
    with pytest.raises(KeyError, match="unknown split 'dev'"):
        load_task("spam", "dev")
    assert "imdb" in TASK_NAMES
