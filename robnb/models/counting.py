"""Parameter counts the paper's way: the classifier's own parameters (input embedding and body,
no unembedding, plus the classification head)."""

from __future__ import annotations

import torch


def classifier_params(model: torch.nn.Module) -> int:
    """All parameters of a sequence-classification model (it has no unembedding)."""
    return sum(p.numel() for p in model.parameters())


def non_embedding_params(model: torch.nn.Module) -> int:
    """Parameters outside the token embedding, the unembedding and the classification head: the
    usual scaling-law N. Embeddings are found by identity (get_input/output_embeddings), not by
    name: transformers renamed GPT-NeoX's ``embed_out`` to ``lm_head``."""
    skip = {id(p) for m in (model.get_input_embeddings(), model.get_output_embeddings())
            if m is not None for p in m.parameters()}
    return sum(p.numel() for name, p in model.named_parameters()
               if id(p) not in skip and not name.startswith(("score", "classifier")))


def lm_classifier_params(lm: torch.nn.Module, num_labels: int = 2) -> int:
    """The paper's N of the classifier a causal LM becomes: the LM without its unembedding (by
    identity, so a tied unembedding is kept as the input embedding), plus a bias-free
    ``num_labels``-way head on the last hidden state."""
    keep = {id(p) for p in lm.get_input_embeddings().parameters()}
    out = lm.get_output_embeddings()
    drop = {id(p) for p in out.parameters()} - keep if out is not None else set()
    body = sum(p.numel() for p in lm.parameters() if id(p) not in drop)
    return body + lm.config.hidden_size * num_labels
