"""The three pieces of an HF decoder an attack needs: embeddings, body, and the head it reads.

Calling the body and applying the head only at the positions that are scored (the last token for
a classifier, the target positions for a causal LM) skips the head everywhere else, and reading
positions explicitly makes padding and inputs_embeds safe (HF's own pooling cannot see pads
when it is given embeddings).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from robnb.attacks import llama_body
from robnb.attacks.attention import packed_attention
from robnb.attacks.onednn import packed_linears
from robnb.attacks.prompts import Mode
from robnb.models.counting import classifier_params

KV = list[tuple[torch.Tensor, torch.Tensor]]


class ModelParts:
    """Embeddings, body and head of a decoder classifier (label mode) or causal LM (target mode)."""

    def __init__(self, model: torch.nn.Module, mode: Mode):
        self.model = model
        self.backbone = model.base_model
        if self.backbone is model:
            raise TypeError(f"{type(model).__name__} has no head: pass a *ForSequenceClassification "
                            "model (label mode) or a *ForCausalLM model (target mode)")
        if mode == "label":
            head = getattr(model, "score", None)
            if not isinstance(head, torch.nn.Module):
                raise TypeError(f"label mode needs a decoder classifier with a last-token `score` "
                                f"head; {type(model).__name__} has none")
        else:
            head = model.get_output_embeddings()
            if head is None:
                raise TypeError(f"target mode needs a causal LM; {type(model).__name__} has no LM head")
        self.head = head
        self.embeddings = model.get_input_embeddings()
        self.vocab_size = self.embeddings.weight.shape[0]
        self.n_params = classifier_params(model)

    def hidden(self, *, input_ids: torch.Tensor | None = None,
               inputs_embeds: torch.Tensor | None = None,
               attention_mask: torch.Tensor | None = None,
               position_ids: torch.Tensor | None = None, past: KV | None = None,
               want_cache: bool = False) -> tuple[torch.Tensor, KV | None]:
        """Last hidden states; with ``want_cache`` also every layer's keys/values after the call.
        Without autograd, a Llama body on CPU runs :func:`llama_hidden`, and the body's linear
        layers run with packed oneDNN weights (:mod:`robnb.attacks.onednn`)."""
        if not torch.is_grad_enabled() and llama_body.supports(self.backbone):
            with packed_linears(self.backbone):
                return llama_body.llama_hidden(self.backbone, input_ids=input_ids,
                                               inputs_embeds=inputs_embeds,
                                               attention_mask=attention_mask,
                                               position_ids=position_ids, past=past,
                                               want_cache=want_cache)
        cache = kv_to_cache(past) if past is not None else (DynamicCache() if want_cache else None)
        with packed_attention(self.model), packed_linears(self.backbone):
            out = self.backbone(input_ids=input_ids, inputs_embeds=inputs_embeds,
                                attention_mask=attention_mask, position_ids=position_ids,
                                past_key_values=cache, use_cache=want_cache)
        return out.last_hidden_state, (cache_to_kv(cache) if want_cache else None)


class _FilledLayer(DynamicLayer):
    """A cache layer that starts from given tensors without copying them (HF's constructor
    concatenates them onto an empty tensor); the forward's own concatenation copies once."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.lazy_initialization(keys, values)
        self.keys, self.values = keys, values


def kv_to_cache(kv: KV) -> DynamicCache:
    """A fresh HF cache over the given tensors (the forward appends to it; ours stay untouched)."""
    cache = DynamicCache()
    cache.layers = [_FilledLayer(k, v) for k, v in kv]
    return cache


def cache_to_kv(cache: DynamicCache) -> KV:
    return [(layer.keys, layer.values) for layer in cache.layers]
