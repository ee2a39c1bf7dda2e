"""Atomic Parquet storage of tidy records.

Layout: ``<root>/results/<table>/<part>.parquet``. Each writer owns its part files (named by
run id), and every file is written to a temporary name and renamed, so a killed process never
leaves a half-written file that a reader could pick up.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from robnb.results.schema import TABLES, conform


# mkstemp creates 0600 files; results are shared artefacts, so they get the usual umask mode
_UMASK = os.umask(0)
os.umask(_UMASK)


def _temp_beside(path: Path) -> Path:
    """A closed temporary file in ``path``'s folder (same file system: the rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)
    return Path(tmp)


def _write_atomically(path: Path, write) -> Path:
    """``write(tmp)`` fills a temporary file that then replaces ``path`` in one rename."""
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    _write_atomically(path, write)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_table(df: pd.DataFrame, path: Path) -> Path:
    """Write one DataFrame as Parquet, atomically."""
    return _write_atomically(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_records(root: Path, table: str, part: str, records: Iterable[Mapping]) -> Path:
    """Validate records against the table schema and write them as one part file."""
    df = conform(table, pd.DataFrame(list(records), columns=None))
    return write_table(df, Path(root) / "results" / table / f"{part}.parquet")


def read_table(root_or_files: Path | str | Iterable[Path | str], table: str) -> pd.DataFrame:
    """Read all part files of a table under one or more result roots (or explicit files)."""
    if table not in TABLES:
        raise KeyError(f"unknown results table '{table}'; known: {sorted(TABLES)}")
    items = [root_or_files] if isinstance(root_or_files, (str, Path)) else list(root_or_files)
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_file() and p.suffix == ".parquet":
            files.append(p)
            continue
        for base in (p / "results" / table, p / table):
            if base.is_dir():
                files.extend(sorted(f for f in base.glob("*.parquet") if not f.name.startswith(".")))
                break
    if not files:
        return conform(table, pd.DataFrame(columns=list(TABLES[table])))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
