"""The run summary's accuracy table is the fine-tuned models' own validation accuracy."""

from __future__ import annotations

from robnb.results.store import write_records
from robnb.run import summary


def _row(run_id: str, acc: float, **extra) -> dict:
    return {"run_id": run_id, "family": "local-neox", "model": "neox-s", "model_size": 1000,
            "pretrain_flops": 1.0, "task": "spam", "split": "validation", "seed": 0,
            "round": 0, "accuracy": acc, "precision": acc, "recall": acc, "f1": acc,
            "n_examples": 400, "majority_baseline": 0.9, **extra}


def test_adversarially_trained_and_ood_condition_rows_are_left_out(tmp_path):
    write_records(tmp_path, "evaluations", "finetune-neox-s", [_row("finetune-a", 0.97)])
    write_records(tmp_path, "evaluations", "advtrain-neox-s",
                  [_row("advtrain-a", 0.5, defense="adv_gcg", round=r) for r in (0, 3)])
    write_records(tmp_path, "evaluations", "adv-ood-neox-s",
                  [_row("adv-ood-a", 0.1, stage="adv_ood", condition="ood_method")])
    acc = summary(tmp_path)["accuracy"]
    assert acc.loc[acc["model"] == "neox-s", "spam"].item() == 0.97
