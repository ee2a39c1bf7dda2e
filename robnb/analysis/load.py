"""Read results from wherever they are: the suite's Parquet roots/files or the paper's CSVs.

Analysis code only ever sees the tidy tables (``attacks``, ``training``, ``runs``), whichever
source they came from; a ``source`` column ("own" or "paper") keeps them apart when mixed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

from robnb.results.paper_import import collect_csv_files, import_robust_llm
from robnb.results.schema import TABLES
from robnb.results.store import read_table

ANALYSIS_TABLES = ("attacks", "training", "runs")
DEFAULTS = {"defense": "unspecified", "placement": "suffix", "checkpoint": pd.NA,
            "data_issue": "", "superseded": False}


def load_results(paths: str | Path | Iterable[str | Path]) -> dict[str, pd.DataFrame]:
    """Tables ``attacks``, ``training``, ``runs`` from any mix of result locations.

    A ``.csv`` file, or a folder holding CSVs but no Parquet, is the paper's data (imported
    with :func:`robnb.results.paper_import.import_robust_llm`, whose warnings pass through);
    a ``.parquet`` file belongs to the table named by its folder; any other folder is a result
    root (``<root>/results/<table>/*.parquet``). Rows keep a ``source`` they carry (the
    importer's "paper"); others are the suite's own ("own").
    """
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not items:
        raise ValueError("no results given: pass result roots, Parquet files or paper CSVs")
    csvs: list[Path] = []
    parquet_files: dict[str, list[Path]] = {t: [] for t in ANALYSIS_TABLES}
    roots: list[Path] = []
    for item in items:
        p = Path(item)
        if not p.exists():
            raise FileNotFoundError(f"results path {p} does not exist")
        if p.is_file() and p.suffix == ".parquet":
            table = p.parent.name
            if table not in TABLES:
                raise ValueError(f"{p}: cannot tell its table (folder '{table}' is not one of "
                                 f"{sorted(TABLES)})")
            parquet_files.setdefault(table, []).append(p)
        elif p.is_file() and p.suffix == ".csv":
            csvs.append(p)
        elif p.is_dir() and not any(p.rglob("*.parquet")) and any(p.rglob("*.csv")):
            csvs.extend(collect_csv_files(p))
        elif p.is_dir():
            roots.append(p)
        else:
            raise ValueError(f"{p}: not a result root, Parquet file or CSV")
    parts: dict[str, list[pd.DataFrame]] = {t: [] for t in ANALYSIS_TABLES}
    if csvs:
        for table, df in import_robust_llm(csvs).items():
            parts[table].append(df)
    for table in ANALYSIS_TABLES:
        own = roots + parquet_files.get(table, [])
        if own:
            df = read_table(own, table)
            if len(df):
                src = df["source"] if "source" in df.columns else pd.Series(pd.NA, df.index)
                parts[table].append(df.assign(source=src.fillna("own")))
    return {t: normalize(t, pd.concat(dfs, ignore_index=True) if dfs else
                         pd.DataFrame(columns=list(TABLES[t]) + ["source"]))
            for t, dfs in parts.items()}


def normalize(table: str, df: pd.DataFrame) -> pd.DataFrame:
    """Fill the optional analysis columns the suite's own tables may not carry."""
    out = df.copy()
    for col, default in DEFAULTS.items():
        if col not in out.columns:
            out[col] = default
        elif col in ("defense", "placement", "data_issue"):
            out[col] = out[col].fillna(default)
    if "source" not in out.columns:
        out["source"] = "own"
    return out


def select(df: pd.DataFrame, filters: dict[str, str | None]) -> pd.DataFrame:
    """Rows whose columns equal every given (non-empty) filter value."""
    out = df
    for col, value in filters.items():
        if value is not None and value != "":
            if col not in out.columns:
                raise KeyError(f"cannot filter on '{col}': not a column of the results")
            out = out[out[col].astype(str) == str(value)]
    return out
