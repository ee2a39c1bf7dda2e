"""Packed oneDNN linears compute what ``F.linear`` computes, follow every change of the weight,
stay out of autograd, and leave the model as they found it."""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F
from attack_fixtures import one_thread, tiny, tiny_llama  # noqa: F401 (one_thread: autouse)

from robnb.attacks import onednn
from robnb.attacks.model_io import ModelParts


def _error(out: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> float:
    ref = F.linear(x.double(), w.double(), None if b is None else b.double())
    return float((out.double() - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_matches_f_linear_on_2d_3d_strided_inputs_and_row_blocks(dtype):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(96, 40, generator=g).to(dtype)
    b = torch.randn(96, generator=g).to(dtype)
    inputs = [torch.randn(7, 40, generator=g), torch.randn(3, 5, 40, generator=g),
              torch.randn(5, 3, 40, generator=g).transpose(0, 1)]
    # float32 rounding (the summation order differs from MKL's), or bfloat16 output rounding
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    with torch.no_grad():
        for x in (x.to(dtype) for x in inputs):
            for bias, rows in ((None, (None, None)), (b, (None, None)), (b, (32, 64))):
                out = onednn.linear(x, w, bias, *rows)
                ref = F.linear(x, w[rows[0]:rows[1]], None if bias is None else bias[rows[0]:rows[1]])
                assert out.shape == ref.shape and out.dtype == dtype
                assert _error(out, x, w[rows[0]:rows[1]],
                              None if bias is None else bias[rows[0]:rows[1]]) < tol
    assert (id(w), 32, 64) in onednn._CACHE


def test_a_changed_weight_is_packed_again():
    lin = torch.nn.Linear(16, 8)
    x = torch.randn(4, 16)
    with torch.no_grad():
        first = onednn.linear(x, lin.weight, lin.bias)
        lin.weight.add_(1.0)  # in place, as an optimizer step does
        assert torch.allclose(onednn.linear(x, lin.weight, lin.bias), lin(x), atol=1e-5)
        assert not torch.allclose(first, lin(x), atol=1e-3)
        lin.weight.data = torch.randn(8, 16)  # re-assigned storage
        assert torch.allclose(onednn.linear(x, lin.weight, lin.bias), lin(x), atol=1e-5)
        lin.to(torch.bfloat16)  # a new dtype
        xb = x.bfloat16()
        assert torch.equal(onednn.linear(xb, lin.weight, lin.bias), F.linear(xb, lin.weight, lin.bias))


def test_cache_entries_go_with_their_weight():
    w = torch.randn(8, 16)
    with torch.no_grad():
        onednn.linear(torch.randn(2, 16), w)
    key = (id(w), None, None)
    assert key in onednn._CACHE
    del w
    gc.collect()
    assert key not in onednn._CACHE


def test_autograd_uses_f_linear_and_the_context_patches_nothing():
    lin = torch.nn.Linear(16, 8)
    x = torch.randn(4, 16)
    out = onednn.linear(x, lin.weight, lin.bias)
    assert out.grad_fn is not None
    out.sum().backward()
    assert lin.weight.grad is not None
    model = torch.nn.Sequential(lin, torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with onednn.packed_linears(model):
        assert not any("forward" in m.__dict__ for m in model.modules())


def test_packed_linears_runs_every_linear_then_restores_it_even_on_error():
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x = torch.randn(4, 16)
    calls = []
    original = onednn._forward

    def counting(module, inp):
        calls.append(module)
        return original(module, inp)

    with torch.no_grad():
        want = model(x)
        onednn._forward, saved = counting, onednn._forward
        try:
            with pytest.raises(RuntimeError, match="boom"):
                with onednn.packed_linears(model):
                    assert torch.allclose(model(x), want, atol=1e-5)
                    raise RuntimeError("boom")
        finally:
            onednn._forward = saved
    assert len(calls) == 2
    assert not any("forward" in m.__dict__ for m in model.modules())


@pytest.mark.parametrize("which", ["llama", "neox"])
def test_model_hidden_states_are_those_of_the_unpacked_model(which, monkeypatch):
    """The scoring body (Llama fast path, or HF's forward for GPT-NeoX) with packed linears."""
    model = tiny_llama() if which == "llama" else tiny().lm
    parts = ModelParts(model, "target")
    ids = torch.randint(1, 90, (3, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        packed, _ = parts.hidden(input_ids=ids)
        monkeypatch.setattr(onednn, "available", lambda weight: False)
        plain, _ = parts.hidden(input_ids=ids)
    assert any(k[0] == id(model.base_model.layers[0].mlp.down_proj.weight) if which == "llama"
               else k[0] == id(model.base_model.layers[0].mlp.dense_4h_to_h.weight)
               for k in onednn._CACHE)
    assert torch.allclose(packed, plain, atol=1e-4, rtol=1e-4)


def test_an_inference_mode_weight_is_packed_without_caching():
    """Inference tensors have no version counter, so an in-place change could not be seen."""
    with torch.inference_mode():
        w = torch.randn(8, 16)
        x = torch.randn(3, 16)
        out = onednn.linear(x, w)
        assert torch.allclose(out, F.linear(x, w), atol=1e-5)
        w.add_(1.0)
        assert torch.allclose(onednn.linear(x, w), F.linear(x, w), atol=1e-5)
    assert (id(w), None, None) not in onednn._CACHE
