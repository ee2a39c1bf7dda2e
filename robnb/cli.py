"""The ``robnb`` command: run a profile, validate parameters, analyse results."""

from __future__ import annotations

import argparse
import json
import sys
import time
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


def cmd_run(args: argparse.Namespace) -> int:
    from robnb.params import ParamsError, load_params
    from robnb.run import execute, plan, summary

    overrides = _parse_set(args.set)
    try:
        params = load_params(args.profile, overrides)
    except ParamsError as e:
        print(f"robnb: {e}", file=sys.stderr)
        return 2
    # Notebooks run with the repository as working directory: make the output root absolute.
    overrides = {**overrides, "output_root": str(Path(params.output_root).resolve())}
    params = load_params(args.profile, overrides)
    executions = plan(params, args.profile, overrides, args.stages)
    print(f"robnb run: profile '{params.name}', {len(executions)} notebook executions -> "
          f"{params.run_dir}")
    t0 = time.time()
    for i, ex in enumerate(executions, 1):
        print(f"[{i}/{len(executions)}] {ex.stage} {ex.size} ...", end=" ", flush=True)
        try:
            dt = execute(ex, log_output=args.verbose)
        except Exception as e:  # papermill raises PapermillExecutionError with the cell's error
            print("FAILED")
            print(f"robnb: {ex.stage} {ex.size} failed; executed copy kept beside "
                  f"{ex.output}:\n{e}", file=sys.stderr)
            return 1
        print(f"{dt:.1f}s")
    wall = time.time() - t0
    import pandas as pd

    with pd.option_context("display.width", 160, "display.max_columns", 20,
                           "display.float_format", "{:.4g}".format):
        for name, table in summary(params.run_dir).items():
            print(f"\n== {name}\n{table.to_string(index=False)}")
    print(f"\nrobnb run: done in {wall:.0f}s; results under {params.run_dir / 'results'}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from robnb.params import ParamsError, load_params

    try:
        params = load_params(args.profile, _parse_set(args.set))
    except ParamsError as e:
        print(f"robnb: {e}", file=sys.stderr)
        return 2
    print(json.dumps(params.as_dict(), indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robnb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute a profile's notebooks with papermill")
    run.add_argument("--profile", default="quick")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a parameter, e.g. --set finetune.n_train=500")
    run.add_argument("--stages", nargs="+", help="only these stages (default: all, in order)")
    run.add_argument("--verbose", action="store_true", help="stream notebook output")
    run.set_defaults(func=cmd_run)
    val = sub.add_parser("validate", help="validate a profile and print it resolved")
    val.add_argument("profile")
    val.add_argument("--set", action="append", metavar="KEY=VALUE")
    val.set_defaults(func=cmd_validate)
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
