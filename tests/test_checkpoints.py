
import pytest

from robnb.checkpoints import CorruptCheckpoint, build_atomically, cached, verify
from robnb.results.schema import SchemaError
from robnb.results.store import read_table, write_records


def _build(content: str):
    def build(tmp):
        (tmp / "weights.bin").write_text(content)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "cfg.json").write_text("{}")
        return {"key": "k1"}
    return build


def test_cache_builds_once_then_reuses(tmp_path):
    calls = []

    def build(tmp):
        calls.append(1)
        return _build("abc")(tmp)

    f, meta, reused = cached(tmp_path / "c", build, {"key": "k1"}, log=lambda m: None)
    assert not reused and meta["key"] == "k1" and calls == [1]
    f, meta, reused = cached(tmp_path / "c", build, {"key": "k1"}, log=lambda m: None)
    assert reused and calls == [1]


@pytest.mark.parametrize("damage", ["truncate", "delete", "manifest", "meta"])
def test_damaged_cache_is_detected_and_rebuilt(tmp_path, damage):
    folder = build_atomically(tmp_path / "c", _build("abcdef"))
    if damage == "truncate":
        (folder / "weights.bin").write_text("abc")
    elif damage == "delete":
        (folder / "sub" / "cfg.json").unlink()
    elif damage == "manifest":
        (folder / "MANIFEST.json").write_text("{not json")
    with pytest.raises(CorruptCheckpoint) as err:
        verify(folder, {"key": "other" if damage == "meta" else "k1"})
    assert str(folder) in str(err.value)
    logs = []
    _, _, reused = cached(folder, _build("abcdef"), {"key": "k1"}, log=logs.append)
    if damage == "meta":
        assert reused  # the folder itself is fine for key k1
    else:
        assert not reused and "rebuilding" in logs[0]
        assert (folder / "weights.bin").read_text() == "abcdef"


def test_failed_build_leaves_nothing(tmp_path):
    def bad(tmp):
        (tmp / "partial.bin").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        build_atomically(tmp_path / "c", bad)
    assert not (tmp_path / "c").exists()
    assert list(tmp_path.iterdir()) == []


def test_records_round_trip_and_schema_is_enforced(tmp_path):
    rows = [{"run_id": "r", "family": "f", "model": "m", "model_size": 10, "task": "t",
             "seed": 0, "round": 0, "train_flops": 1.0, "adversarial_generation_flops": 0.0,
             "defense_flops_cumulative": 0.0, "finetune_flops": 1.0, "extra": "kept"}]
    write_records(tmp_path, "training", "part-a", rows)
    write_records(tmp_path, "training", "part-b", rows)
    df = read_table(tmp_path, "training")
    assert len(df) == 2 and df["extra"].tolist() == ["kept", "kept"]
    assert str(df["model_size"].dtype) == "Int64"
    with pytest.raises(SchemaError, match="missing columns"):
        write_records(tmp_path, "training", "bad", [{"run_id": "r"}])
    assert read_table(tmp_path, "attacks").empty
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "results" / "training").iterdir())
