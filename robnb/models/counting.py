"""Parameter counts the paper's way: the classifier's own parameters (input embedding and body,
no unembedding, plus the classification head)."""

from __future__ import annotations

import torch


def classifier_params(model: torch.nn.Module) -> int:
    """All parameters of a sequence-classification model (it has no unembedding)."""
    return sum(p.numel() for p in model.parameters())


def non_embedding_params(model: torch.nn.Module) -> int:
    """Parameters outside the token embedding and the head: the usual scaling-law N."""
    return sum(p.numel() for name, p in model.named_parameters()
               if "embed" not in name and not name.startswith(("score", "classifier")))
