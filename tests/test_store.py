"""Atomic result files: complete or absent, readable by the rest of the lab."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from robnb.results.store import atomic_write_text, write_table


def test_written_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "t" / "b.parquet")
    finally:
        os.umask(old)
    for f in (tmp_path / "a.txt", tmp_path / "t" / "b.parquet"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "b.parquet"
    write_table(pd.DataFrame({"a": [1]}), target)

    class Boom(pd.DataFrame):
        def to_parquet(self, *a, **k):
            open(a[0], "wb").write(b"half")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_table(Boom({"a": [2]}), target)
    assert pd.read_parquet(target)["a"].tolist() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["b.parquet"]
