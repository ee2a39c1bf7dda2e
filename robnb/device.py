"""Device choice: CUDA when present (or as told), CPU otherwise; fp32 on CPU."""

from __future__ import annotations

import torch


def resolve_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{requested}' was requested but CUDA is not available here")
    return torch.device(requested)
