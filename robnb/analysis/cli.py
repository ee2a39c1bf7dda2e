"""``robnb analyze …`` and ``robnb import-paper-data``: the analysis from a shell.

Contract (tests and users rely on it): ``--results PATH...`` takes the suite's result roots or
Parquet files and the paper's CSV files or folders alike; ``--target-asr`` is in percent;
``--json`` prints JSON records on stdout (data warnings go to stderr). Records carry the keys
the contract names plus the grouping keys (family, task, attack, placement, defense) so that
records of different settings are never confused.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import pandas as pd

ASR_KEYS = ["family", "model_size", "task", "attack", "round", "iteration", "seed", "asr",
            "placement", "defense"]
TARGET_KEYS = ["model_size", "seed", "round", "interpolated_iteration",
               "attack_flops_fraction_pretrain", "family", "task", "attack", "placement",
               "defense", "reached", "attack_flops_fraction_pretrain_lower_bound"]
POINT_KEYS = ["model_size", "round", "defense_flops_fraction_pretrain",
              "attack_flops_fraction_pretrain", "family", "task", "attack", "placement",
              "defense", "n_seeds", "n_censored"]
SLOPE_KEYS = ["model_size", "slope", "slope_low", "slope_high", "n_rounds", "n_seeds",
              "n_censored", "family", "task", "attack", "placement", "defense"]
FILTERS = ("source", "family", "task", "attack", "placement", "defense")


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``analyze`` (asr, target-compute, offense-defense) and ``import-paper-data``."""
    analyze = subparsers.add_parser("analyze", help="analyse attack/defense results")
    sub = analyze.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")

    asr = sub.add_parser("asr", help="ASR per run and iteration")
    _common(asr)
    asr.add_argument("--iteration", type=int, help="only this attack iteration")
    asr.set_defaults(func=_run_asr)

    tc = sub.add_parser("target-compute", help="attack compute to reach a target ASR")
    _common(tc)
    _target(tc)
    tc.set_defaults(func=_run_target_compute)

    od = sub.add_parser("offense-defense", help="attack compute for the target vs defense compute")
    _common(od)
    _target(od)
    od.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates over seeds")
    od.add_argument("--ci", type=float, default=0.95, help="confidence level of the intervals")
    od.add_argument("--censoring", choices=["drop_seeds", "drop_rounds"], default="drop_seeds",
                    help="seeds that never reach the target: drop them from a round's mean "
                         "(paper) or drop the round")
    od.add_argument("--keep-flagged", action="store_true",
                    help="keep training rows the importer flagged (e.g. FLOP counter resets)")
    od.set_defaults(func=_run_offense_defense)

    imp = subparsers.add_parser("import-paper-data",
                                help="convert the paper's result CSVs into Parquet tables")
    imp.add_argument("dir", type=Path, help="folder (or CSV file) of the paper's results")
    imp.add_argument("--out", type=Path, default=Path("outputs/robust-llm-2024"),
                     help="result root to write <out>/results/<table>/robust-llm-2024.parquet")
    imp.set_defaults(func=_run_import)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", nargs="+", required=True, metavar="PATH",
                   help="result roots, Parquet files, or the paper's CSV files/folders")
    p.add_argument("--json", action="store_true", help="print JSON records")
    for f in FILTERS:
        p.add_argument(f"--{f}", help=f"only rows with this {f}")


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target-asr", type=float, default=5.0, help="target ASR in percent")
    p.add_argument("--method", choices=["linear", "logit"], default="linear",
                   help="interpolation between the bracketing iterations")


def _load_attacks(args: argparse.Namespace) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    from robnb.analysis.load import load_results, select

    tables = _with_warnings_to_stderr(lambda: load_results(args.results))
    filters = {f: getattr(args, f) for f in FILTERS}
    attacks = select(tables["attacks"], filters)
    if attacks.empty:
        raise SystemExit(f"no attack records match {({k: v for k, v in filters.items() if v})} "
                         f"in {args.results}")
    return attacks, tables


def _target_rate(args: argparse.Namespace) -> float:
    if not 0 < args.target_asr <= 100:
        raise SystemExit(f"--target-asr is a percentage in (0, 100]; got {args.target_asr}")
    return args.target_asr / 100.0


def _run_asr(args: argparse.Namespace) -> int:
    attacks, _ = _load_attacks(args)
    if args.iteration is not None:
        attacks = attacks[attacks["iteration"] == args.iteration]
    out = attacks.sort_values(["task", "attack", "placement", "defense", "model_size", "round",
                               "seed", "iteration"])[ASR_KEYS]
    _emit(args, out)
    return 0


def _run_target_compute(args: argparse.Namespace) -> int:
    from robnb.analysis.target_compute import target_compute

    attacks, _ = _load_attacks(args)
    tc = target_compute(attacks, _target_rate(args), method=args.method)
    _emit(args, tc.sort_values(["task", "defense", "model_size", "round", "seed"])[TARGET_KEYS])
    return 0


def _run_offense_defense(args: argparse.Namespace) -> int:
    from robnb.analysis.offense_defense import (attach_defense_compute, offense_defense_points,
                                                offense_defense_slopes)
    from robnb.analysis.target_compute import target_compute

    attacks, tables = _load_attacks(args)
    tc = target_compute(attacks, _target_rate(args), method=args.method)
    joined = attach_defense_compute(tc, tables["training"])
    joined = joined[joined["defense_flops_cumulative"].notna()]
    if joined.empty:
        raise SystemExit("no evaluation run matches a training run (offense/defense needs "
                         "evaluations of adversarially trained checkpoints and their training "
                         "logs in --results)")
    drop = not args.keep_flagged
    points = offense_defense_points(joined, drop_flagged=drop)
    slopes = offense_defense_slopes(joined, n_boot=args.n_boot, ci=args.ci, drop_flagged=drop,
                                    censoring=args.censoring)
    points = points.sort_values(["task", "defense", "model_size", "round"])[POINT_KEYS]
    slopes = slopes.sort_values(["task", "defense", "model_size"])[SLOPE_KEYS]
    if args.json:
        print(json.dumps({"records": _records(points), "slopes": _records(slopes)}))
    else:
        print(points.to_string(index=False))
        print("\nlog-log slope per size (1 = parity, < 1 favours offense):")
        print(slopes.to_string(index=False))
    return 0


def _run_import(args: argparse.Namespace) -> int:
    from robnb.results.paper_import import SOURCE, import_robust_llm
    from robnb.results.store import write_table

    tables = _with_warnings_to_stderr(lambda: import_robust_llm(args.dir))
    for name, df in tables.items():
        path = write_table(df, args.out / "results" / name / f"{SOURCE}.parquet")
        print(f"{name}: {len(df)} rows -> {path}")
    return 0


def _with_warnings_to_stderr(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; print each data warning once on stderr so stdout stays machine-readable."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    for w in caught:
        print(f"warning ({w.category.__name__}): {w.message}", file=sys.stderr)
    return result


def _records(df: pd.DataFrame) -> list[dict]:
    return json.loads(df.to_json(orient="records", double_precision=15))


def _emit(args: argparse.Namespace, df: pd.DataFrame) -> None:
    if args.json:
        print(json.dumps(_records(df)))
    else:
        print(df.to_string(index=False))
