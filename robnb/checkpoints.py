"""Content-addressed, verified folders: written under a temporary name, renamed when complete,
and carrying a manifest of sha256 sums so a truncated or altered file is detected, not used."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

MANIFEST = "MANIFEST.json"


class CorruptCheckpoint(RuntimeError):
    pass


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: Path, meta: dict) -> None:
    files = {str(p.relative_to(folder)): file_sha256(p)
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps({"meta": meta, "files": files}, indent=1,
                                              sort_keys=True))


def verify(folder: Path, expect_meta: dict | None = None) -> dict:
    """Return the manifest's meta if every file is present and intact; raise otherwise."""
    folder = Path(folder)
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise CorruptCheckpoint(f"{folder}: no {MANIFEST} (incomplete or not a robnb checkpoint)")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise CorruptCheckpoint(f"{mpath}: unreadable manifest ({e})") from e
    for rel, digest in manifest.get("files", {}).items():
        p = folder / rel
        if not p.is_file():
            raise CorruptCheckpoint(f"{folder}: file {rel} is missing")
        if file_sha256(p) != digest:
            raise CorruptCheckpoint(f"{folder}: file {rel} is corrupt (sha256 mismatch)")
    meta = manifest.get("meta", {})
    for key, value in (expect_meta or {}).items():
        if meta.get(key) != value:
            raise CorruptCheckpoint(f"{folder}: was made with {key}={meta.get(key)!r}, "
                                    f"these parameters need {value!r}")
    return meta


def build_atomically(folder: Path, build: Callable[[Path], dict]) -> Path:
    """Run ``build(tmpdir) -> meta`` and move the finished folder into place in one rename."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        meta = build(tmp)
        write_manifest(tmp, meta)
        if folder.exists():
            trash = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.old"
            os.replace(folder, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def cached(folder: Path, build: Callable[[Path], dict], expect_meta: dict | None = None,
           log: Callable[[str], None] = print) -> tuple[Path, dict, bool]:
    """Reuse a verified folder, or (re)build it. Returns (folder, meta, reused).

    A lock per folder makes concurrent processes that need the same folder (parallel sweep
    workers pretraining two sizes need one tokenizer) wait for one build and reuse it, instead
    of building twice and replacing it under each other's feet."""
    from filelock import FileLock

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.parent / f".{folder.name}.lock")):
        if folder.exists():
            try:
                return folder, verify(folder, expect_meta), True
            except CorruptCheckpoint as e:
                log(f"cache rejected, rebuilding: {e}")
        build_atomically(folder, build)
        return folder, verify(folder, expect_meta), False
