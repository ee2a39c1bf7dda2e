"""Runs nanoGCG 0.3.0 on a list of prompts; executed by gcg_vs_nanogcg.py in nanoGCG's own venv.

Usage: python nanogcg_runner.py CONFIG.json OUT.json
CONFIG: model_dir, prompts [[request, target], ...], steps, search_width, topk, optim_str_init,
threads, seed, dtype (the model's torch dtype, default float32). OUT: per prompt the wall and CPU time of ``GCG.run``, candidates scored (after nanoGCG's
own re-tokenisation filter), per-step losses and the best loss.
Also converts a GGUF model to safetensors (``--convert-gguf SRC_DIR GGUF_FILE OUT_DIR``) so both
environments load the same weights.
"""

from __future__ import annotations

import json
import sys
import time


def convert_gguf(src_dir: str, gguf_file: str, out_dir: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=gguf_file)
    tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=gguf_file)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)


def run(config_path: str, out_path: str) -> None:
    import nanogcg
    import nanogcg.gcg as gcg_module
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = json.load(open(config_path))
    torch.set_num_threads(cfg["threads"])
    dtype = getattr(torch, cfg.get("dtype", "float32"))
    model = AutoModelForCausalLM.from_pretrained(cfg["model_dir"], torch_dtype=dtype).eval()
    tok = AutoTokenizer.from_pretrained(cfg["model_dir"])

    scored: list[int] = []
    original_filter = gcg_module.filter_ids

    def counting_filter(ids, tokenizer):  # count what nanoGCG actually scores
        kept = original_filter(ids, tokenizer)
        scored.append(int(kept.shape[0]))
        return kept

    gcg_module.filter_ids = counting_filter
    results = []
    for request, target in cfg["prompts"]:
        torch.manual_seed(cfg["seed"])
        scored.clear()
        config = nanogcg.GCGConfig(num_steps=cfg["steps"], optim_str_init=cfg["optim_str_init"],
                                   search_width=cfg["search_width"], topk=cfg["topk"],
                                   use_prefix_cache=True, verbosity="WARNING")
        t0, c0 = time.perf_counter(), time.process_time()
        res = nanogcg.run(model, tok, request, target, config)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        results.append({"wall_s": wall, "cpu_s": cpu, "candidates": sum(scored), "losses": res.losses,
                        "best_loss": res.best_loss, "best_string": res.best_string})
    json.dump({"results": results, "versions": _versions()}, open(out_path, "w"))


def _versions() -> dict:
    import importlib.metadata as md

    return {p: md.version(p) for p in ("torch", "transformers", "tokenizers", "nanogcg")}


if __name__ == "__main__":
    if sys.argv[1] == "--convert-gguf":
        convert_gguf(*sys.argv[2:5])
    else:
        run(sys.argv[1], sys.argv[2])
