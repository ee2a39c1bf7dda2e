"""Linear layers through oneDNN with weights packed once, for scoring without autograd on CPU.

PyTorch runs a float32 ``F.linear`` on CPU through MKL, and MKL takes its AVX2 kernels on AMD
CPUs: on the Zen 5 machine the benchmark runs on, 100-110 GFLOP/s per core, where oneDNN's
AVX-512 kernels reach 250 GFLOP/s, in float32 (against float64, its error is MKL's order). A
SmolLM2 GCG in float32 scores 1.9x more candidates per second this way. In bfloat16 both paths are
oneDNN; packing the weight once instead of on every call is ~5% faster in a microbenchmark and
within noise over a whole attack. On Intel CPUs, whose MKL kernels are AVX-512, expect less.

A packed copy is kept per weight (or row block of a weight) for as long as the weight lives, and
rebuilt when the weight changes: in place (its version counter, e.g. an optimizer step between
adversarial-training rounds) or by re-assignment (``.data``, dtype). It costs one more copy of the
model's linear weights in memory while they are used this way.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from functools import partial
from typing import Iterator

import torch
import torch.nn.functional as F

_BATCH_HINT = 1024  # rows oneDNN packs for; any number of rows works
_Key = tuple[int, int | None, int | None]
_CACHE: dict[_Key, tuple[weakref.ref, tuple, torch.Tensor]] = {}


def available(weight: torch.Tensor) -> bool:
    """Whether ``weight`` can run through a packed oneDNN linear (CPU, float32 or bfloat16)."""
    return (weight.device.type == "cpu" and weight.dtype in (torch.float32, torch.bfloat16)
            and weight.dim() == 2 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def _state(weight: torch.Tensor) -> tuple:
    return weight._version, weight.data_ptr(), weight.dtype, tuple(weight.shape)


def _pack(weight: torch.Tensor, start: int | None, stop: int | None) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach()[start:stop].contiguous(),
                                                   _BATCH_HINT)


def packed(weight: torch.Tensor, start: int | None = None, stop: int | None = None) -> torch.Tensor:
    """oneDNN's packed copy of ``weight[start:stop]`` (output rows), made once per state."""
    try:
        state = _state(weight)
    except RuntimeError:  # an inference-mode tensor has no version counter: do not cache
        return _pack(weight, start, stop)
    key = (id(weight), start, stop)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is weight and hit[1] == state:
        return hit[2]
    out = _pack(weight, start, stop)
    _CACHE[key] = (weakref.ref(weight, lambda _, key=key: _CACHE.pop(key, None)), state, out)
    return out


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           start: int | None = None, stop: int | None = None) -> torch.Tensor:
    """``F.linear(x, weight[start:stop], bias[start:stop])``, packed when it can be (no
    autograd, CPU, matching float32 or bfloat16 dtypes); plain ``F.linear`` otherwise."""
    b = None if bias is None else bias[start:stop]
    if (torch.is_grad_enabled() or not available(weight) or x.dtype != weight.dtype
            or (b is not None and b.dtype != weight.dtype)):
        return F.linear(x, weight[start:stop], b)
    return torch.ops.mkldnn._linear_pointwise(x, packed(weight, start, stop), b, "none", [], "")


def _forward(module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return linear(x, module.weight, module.bias)


@contextmanager
def packed_linears(model: torch.nn.Module) -> Iterator[None]:
    """Runs every ``nn.Linear`` of ``model`` through :func:`linear` inside the block, when
    autograd is off; the modules are restored on exit (and left alone with autograd on)."""
    if torch.is_grad_enabled():
        yield
        return
    patched = []
    for module in model.modules():
        if (type(module) is torch.nn.Linear and "forward" not in module.__dict__
                and available(module.weight)):
            module.forward = partial(_forward, module)
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward
