"""Do two runs hold the same results? (Executors, resumes and machines must not change numbers.)

Every results table of either run is compared row for row, exactly, after dropping provenance
columns (when, how long, where, with which code, whether a cache was hit) and sorting rows, so
two runs of one profile that computed the same numbers compare equal whatever ran them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

# provenance, not results
PROVENANCE = frozenset({"wall_s", "started_at", "git_commit", "packages", "device",
                        "params_hash", "status", "error"})


def table_names(*run_dirs: Path) -> list[str]:
    names = {p.name for d in run_dirs for p in (Path(d) / "results").glob("*") if p.is_dir()}
    return sorted(names)


def comparable(run_dir: Path, table: str) -> pd.DataFrame:
    """One table of a run: provenance dropped, array cells as tuples, rows sorted."""
    files = sorted((Path(run_dir) / "results" / table).glob("*.parquet"))
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files \
        else pd.DataFrame()
    df = df[sorted(c for c in df.columns if c not in PROVENANCE)]
    for c in df.columns[df.dtypes == object]:  # token id arrays: comparable, sortable
        df[c] = df[c].map(lambda v: tuple(v) if hasattr(v, "__len__") and
                          not isinstance(v, str) else v)
    return df.sort_values(list(df.columns)).reset_index(drop=True) if len(df.columns) else df


def compare_runs(a: Path, b: Path) -> dict[str, str]:
    """Per table: "same (N rows)" or what differs."""
    out = {}
    for name in table_names(a, b):
        x, y = comparable(a, name), comparable(b, name)
        try:
            pd.testing.assert_frame_equal(x, y, check_exact=True, obj=name)
            out[name] = f"same ({len(x)} rows)"
        except AssertionError as e:
            out[name] = "DIFFERENT: " + " ".join(str(e).split())[:300]
    return out
