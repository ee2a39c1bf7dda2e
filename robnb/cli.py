"""The ``robnb`` command: sweep a profile, validate parameters, analyse results."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _parse_set(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"--set expects KEY=VALUE, got '{item}'")
        key, value = item.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def cmd_sweep(args: argparse.Namespace) -> int:
    """``robnb sweep PROFILE`` and ``robnb run --profile PROFILE``: the same engine."""
    from robnb.params import ParamsError, load_params
    from robnb.sweep import SweepBusy, run_sweep

    overrides = _parse_set(args.set)
    try:
        params = load_params(args.profile, overrides)
    except ParamsError as e:
        print(f"robnb: {e}", file=sys.stderr)
        return 2
    # Kernels run with the repository as working directory: make the output root absolute.
    overrides = {**overrides, "output_root": str(Path(params.output_root).resolve())}
    params = load_params(args.profile, overrides)
    try:
        result = run_sweep(params, args.profile, overrides, stages=args.stages,
                           workers=args.workers, ray=args.ray, ray_address=args.ray_address,
                           retry_failed=args.retry_failed, force=args.force,
                           fresh_kernels=args.fresh_kernels, wait_for_lock=not args.no_wait,
                           verbose=args.verbose, dry_run=args.dry_run)
    except SweepBusy as e:
        print(f"robnb: {e}", file=sys.stderr)
        return 3
    except ValueError as e:  # an unknown stage name
        print(f"robnb: {e}", file=sys.stderr)
        return 2
    if result.interrupted:
        return 130
    if args.dry_run:
        return 0
    if not result.nothing_to_do:
        print(f"\n== sweep\n{result.table()}")
    from robnb.run import print_summary

    print_summary(params.run_dir)
    print(f"\nrobnb sweep: {result.counts()} in {result.wall_s:.0f}s; results under "
          f"{params.run_dir / 'results'}; logs beside each executed notebook")
    return 0 if result.ok else 1


def cmd_validate(args: argparse.Namespace) -> int:
    from robnb.params import ParamsError, load_params

    try:
        params = load_params(args.profile, _parse_set(args.set))
    except ParamsError as e:
        print(f"robnb: {e}", file=sys.stderr)
        return 2
    print(json.dumps(params.as_dict(), indent=1))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from robnb.results.compare import compare_runs

    for d in (args.a, args.b):
        if not (Path(d) / "results").is_dir():
            print(f"robnb: {d} is not a run folder (no results/ inside)", file=sys.stderr)
            return 2
    report = compare_runs(Path(args.a), Path(args.b))
    for name, verdict in report.items():
        print(f"{name:24s} {verdict}")
    same = all(v.startswith("same") for v in report.values())
    print("identical results" if same else "results differ")
    return 0 if same else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robnb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sweep = sub.add_parser("sweep", help="run a profile's notebooks as a cached, resumable sweep")
    sweep.add_argument("profile", help="a profile name in params/ or a YAML path")
    run = sub.add_parser("run", help="the same sweep, profile as an option (what `make run` does)")
    run.add_argument("--profile", default="quick")
    for p in (sweep, run):
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a parameter, e.g. --set finetune.n_train=500")
        p.add_argument("--stages", nargs="+", help="only these stages (default: all that exist)")
        p.add_argument("--workers", type=int, help="CPU cores to use (default: all); each "
                       "execution takes resources.cpus of them (1 by default), so --workers 1 "
                       "is sequential; with --ray, the local instance's CPUs")
        p.add_argument("--ray", action="store_true", help="run on a local Ray instance")
        p.add_argument("--ray-address", help="join a Ray cluster (e.g. auto or ray://host:10001)")
        p.add_argument("--retry-failed", action="store_true",
                       help="run failed executions again (and what was skipped because of them)")
        p.add_argument("--force", action="store_true",
                       help="run finished executions again too (content caches still apply)")
        p.add_argument("--fresh-kernels", action="store_true",
                       help="a new kernel per notebook instead of one reused kernel per worker")
        p.add_argument("--no-wait", action="store_true",
                       help="stop at once (exit 3) if another sweep holds the run folder")
        p.add_argument("--dry-run", action="store_true",
                       help="print the plan (dependencies, identities, resources) and what would "
                       "run; execute nothing")
        p.add_argument("--verbose", action="store_true", help="print each execution's start")
        p.set_defaults(func=cmd_sweep)
    val = sub.add_parser("validate", help="validate a profile and print it resolved")
    val.add_argument("profile")
    val.add_argument("--set", action="append", metavar="KEY=VALUE")
    val.set_defaults(func=cmd_validate)
    cmp_ = sub.add_parser("compare", help="do two run folders hold the same results? "
                          "(provenance columns ignored)")
    cmp_.add_argument("a")
    cmp_.add_argument("b")
    cmp_.set_defaults(func=cmd_compare)
    try:
        from robnb.analysis.cli import add_subcommands
    except ImportError:
        add_subcommands = None
    if add_subcommands is not None:
        add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
