"""Shared test inputs for the analysis tests: where the paper's CSVs are, and small suite results.

The paper's data is test input only (never a run-time dependency): tests that need it skip with
a stated reason when it is absent. In CI it sits at ``../shared/paper-data`` beside the repo.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest

from robnb.results.provenance import run_record
from robnb.results.store import write_records

REPO = Path(__file__).resolve().parents[1]


def paper_data_dir() -> Path | None:
    candidates = [os.environ.get("ROBNB_PAPER_DATA", ""),
                  REPO.parent / "shared" / "paper-data" / "robust-llm-2024",
                  Path("/work/shared/paper-data/robust-llm-2024")]
    for c in candidates:
        if c and (Path(c) / "evaluation").is_dir():
            return Path(c)
    return None


PAPER = paper_data_dir()
needs_paper_data = pytest.mark.skipif(
    PAPER is None, reason="the paper's CSVs are not at ../shared/paper-data/robust-llm-2024 "
                          "(or $ROBNB_PAPER_DATA)")

# Synthetic suite results: two sizes, two seeds, four adversarial-training rounds.
SIZES = (1_000_000, 4_000_000)
SEEDS = (0, 1)
ROUNDS = (0, 1, 2, 3)
ITERATIONS = tuple(range(9))
N_EXAMPLES = 20
TOKENS_D = 1_000_000_000


def synthetic_asr(size: int, seed: int, rnd: int, iteration: int) -> float:
    """ASR rising linearly with iteration, slower for larger, later-round models."""
    rate = 0.2 / (1 + rnd) / np.sqrt(size / 1e6) * (1 + 0.1 * seed)
    return min(1.0, round(iteration * rate * N_EXAMPLES) / N_EXAMPLES)


def attack_flops_per_iteration(size: int) -> float:
    return 6.0 * size * 100 * N_EXAMPLES


def defense_flops(size: int, rnd: int) -> float:
    return rnd * 1e12 * size / 1e6


def write_synthetic_results(root: Path) -> Path:
    """Write attacks, training and runs tables as the suite's stages do; returns the root."""
    for size in SIZES:
        for seed in SEEDS:
            run_id = f"synthetic-{size}-{seed}"
            attacks, training = [], []
            for rnd in ROUNDS:
                for it in ITERATIONS:
                    asr = synthetic_asr(size, seed, rnd, it)
                    attacks.append({
                        "run_id": f"{run_id}-r{rnd}", "family": "local-neox",
                        "model": f"local-neox-{size // 1_000_000}m", "model_size": size,
                        "pretrain_flops": 6.0 * size * TOKENS_D, "task": "password_match",
                        "seed": seed, "attack": "gcg", "placement": "suffix", "round": rnd,
                        "iteration": it, "n_examples": N_EXAMPLES, "n_correct_before": N_EXAMPLES,
                        "n_flipped": int(round(asr * N_EXAMPLES)), "asr": asr,
                        "mean_target_prob": np.nan,
                        "attack_flops": attack_flops_per_iteration(size) if it else 0.0,
                        "attack_flops_executed": np.nan})
                training.append({
                    "run_id": run_id, "family": "local-neox",
                    "model": f"local-neox-{size // 1_000_000}m", "model_size": size,
                    "task": "password_match", "seed": seed, "round": rnd,
                    "train_flops": np.nan, "adversarial_generation_flops": np.nan,
                    "defense_flops_cumulative": defense_flops(size, rnd), "finetune_flops": 0.0})
            write_records(root, "attacks", run_id, attacks)
            write_records(root, "training", run_id, training)
            write_records(root, "runs", run_id, [run_record(
                run_id, "adversarial_training", "synthetic", "cpu", seed,
                "2026-01-01T00:00:00+00:00", 1.0)])
    return root


@functools.lru_cache(maxsize=1)
def _paper_tables() -> dict:
    import warnings

    from robnb.analysis.load import load_results

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_results([PAPER])


@pytest.fixture
def paper_tables() -> dict:
    """All the paper's tables, imported once per test session (read-only: do not mutate)."""
    if PAPER is None:
        pytest.skip("the paper's CSVs are not available")
    return _paper_tables()
