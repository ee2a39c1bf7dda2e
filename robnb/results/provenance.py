"""Provenance of a run: what code, which packages, which machine, which parameters."""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path

PACKAGES = ("robnb", "torch", "transformers", "tokenizers", "datasets", "numpy", "pandas")


def stable_hash(obj: object, length: int = 12) -> str:
    """Hash of a JSON-able object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


@lru_cache(maxsize=1)
def git_commit() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "robnb"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_record(run_id: str, stage: str, params_hash: str, device: str, seed: int | None,
               started_at: str, wall_s: float, status: str = "ok", error: str = "") -> dict:
    return {
        "run_id": run_id, "stage": stage, "params_hash": params_hash, "git_commit": git_commit(),
        "packages": json.dumps(package_versions(), sort_keys=True), "device": device,
        "seed": seed, "started_at": started_at, "wall_s": wall_s, "status": status,
        "error": error,
    }
