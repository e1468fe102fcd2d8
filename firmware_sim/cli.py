"""The ``fedgate`` command: maps subcommands to the packages that implement them.

The dispatcher imports a subcommand's module only when that subcommand runs, so the gateway never
loads the aggregator's dependencies and vice versa.
"""

from __future__ import annotations

import argparse
import sys


def _sim(args: argparse.Namespace) -> int:
    print(
        "fedgate sim: the end-to-end federated simulation is not implemented yet "
        "(it lands with the end-to-end rounds work). Nothing was run.",
        file=sys.stderr,
    )
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("sim", help="run a federated simulation on one machine")
    sim.add_argument("--out", default="sim-out", help="output folder for report.json and plots")
    sim.set_defaults(func=_sim)
    # Listed for --help only: main() hands "aggregator ..." to aggregator.cli untouched.
    sub.add_parser("aggregator", help="the aggregator service: fedgate aggregator serve")
    sub.add_parser("models", help="models: fedgate models export --model ecg ...")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["aggregator"]:
        from aggregator.cli import main as aggregator_main

        return aggregator_main(argv[1:])
    if argv[:1] == ["models"]:
        from models.cli import main as models_main

        return models_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
