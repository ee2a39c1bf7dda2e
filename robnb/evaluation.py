"""Classification metrics (scikit-learn's definitions) and batched prediction."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from robnb.tasks.base import Example


def metrics(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int = 2) -> dict[str, float]:
    """Accuracy plus weighted and per-class precision/recall/F1 (zero where undefined)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    labels = list(range(n_classes))
    out: dict[str, float] = {"accuracy": float(accuracy_score(y_true, y_pred)),
                             "n_examples": len(y_true)}
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                 average="weighted", zero_division=0)
    out.update(precision=float(p), recall=float(r), f1=float(f))
    pc, rc, fc, sc = precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                     average=None, zero_division=0)
    for k in labels:
        out[f"precision_{k}"], out[f"recall_{k}"] = float(pc[k]), float(rc[k])
        out[f"f1_{k}"], out[f"support_{k}"] = float(fc[k]), int(sc[k])
    return out


def performance_drop_rate(clean: float, other: float) -> float:
    """PromptBench's PDR: the share of clean performance lost under shift or attack."""
    return 0.0 if clean == 0 else 1.0 - other / clean


@torch.no_grad()
def predict_proba(model, tokenizer, examples: Sequence[Example], batch_size: int = 64,
                  device: torch.device | None = None) -> np.ndarray:
    """Class probabilities, tokenised exactly as in training and attacks (chunked)."""
    from robnb.models.prefix import classify
    from robnb.tasks.encoding import encode_examples, pad_batch

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = encode_examples(tokenizer, examples)
    out = []
    for i in range(0, len(rows), batch_size):
        ids, mask = pad_batch(rows[i:i + batch_size], tokenizer.pad_token_id)
        logits = classify(model, ids.to(device), mask.to(device))[0].logits
        out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 2))


def evaluate_examples(model, tokenizer, examples: Sequence[Example], batch_size: int = 64,
                      device: torch.device | None = None) -> tuple[dict[str, float], np.ndarray]:
    probs = predict_proba(model, tokenizer, examples, batch_size, device)
    y = [e.label for e in examples]
    n_classes = max(len(examples[0].label_texts), probs.shape[1]) if examples else 2
    return metrics(y, probs.argmax(-1).tolist(), n_classes), probs
