"""Tidy result tables: one row per run × iteration (attacks) or per run × round (training).

Every row carries ``run_id``; the ``runs`` table holds that run's provenance. Columns listed
here are required; extra columns are allowed (and kept) so tables can grow without migrations.
"""

from __future__ import annotations

import pandas as pd

TABLES: dict[str, dict[str, str]] = {
    "runs": {
        "run_id": "string", "stage": "string", "params_hash": "string", "git_commit": "string",
        "packages": "string", "device": "string", "seed": "Int64", "started_at": "string",
        "wall_s": "float64", "status": "string", "error": "string",
    },
    "evaluations": {
        "run_id": "string", "family": "string", "model": "string", "model_size": "Int64",
        "pretrain_flops": "float64", "task": "string", "split": "string", "seed": "Int64",
        "round": "Int64", "accuracy": "float64", "precision": "float64", "recall": "float64",
        "f1": "float64", "n_examples": "Int64",
    },
    "attacks": {
        "run_id": "string", "family": "string", "model": "string", "model_size": "Int64",
        "pretrain_flops": "float64", "task": "string", "seed": "Int64", "attack": "string",
        "placement": "string", "round": "Int64", "iteration": "Int64", "n_examples": "Int64",
        "n_correct_before": "Int64", "n_flipped": "Int64", "asr": "float64",
        "mean_target_prob": "float64", "attack_flops": "float64",
        "attack_flops_executed": "float64",
    },
    "training": {
        "run_id": "string", "family": "string", "model": "string", "model_size": "Int64",
        "task": "string", "seed": "Int64", "round": "Int64", "train_flops": "float64",
        "adversarial_generation_flops": "float64", "defense_flops_cumulative": "float64",
        "finetune_flops": "float64",
    },
    "pretraining": {
        "run_id": "string", "family": "string", "model": "string", "model_size": "Int64",
        "non_embedding_params": "Int64", "step": "Int64", "tokens": "Int64",
        "pretrain_flops": "float64", "train_loss": "float64", "val_loss": "float64",
    },
}


class SchemaError(ValueError):
    pass


def conform(table: str, df: pd.DataFrame) -> pd.DataFrame:
    """Check required columns exist and cast them to the table's dtypes."""
    if table not in TABLES:
        raise SchemaError(f"unknown results table '{table}'; known: {sorted(TABLES)}")
    spec = TABLES[table]
    missing = [c for c in spec if c not in df.columns]
    if missing:
        raise SchemaError(f"table '{table}' is missing columns {missing}")
    out = df.copy()
    for col, dtype in spec.items():
        try:
            out[col] = out[col].astype(dtype)
        except (TypeError, ValueError) as e:
            raise SchemaError(f"table '{table}', column '{col}': cannot cast to {dtype}: {e}") from e
    return out
