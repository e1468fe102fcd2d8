"""The ``fedgate`` command: maps subcommands to the packages that implement them.

The dispatcher imports a subcommand's module only when that subcommand runs, so the gateway never
loads the aggregator's dependencies and vice versa.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _sim(args: argparse.Namespace) -> int:
    import logging

    from firmware_sim.sim import run_sim
    from native.errors import FedgateError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = _sim_config(args)
        run_sim(cfg, progress=lambda line: print(line, file=sys.stderr, flush=True))
    except FedgateError as exc:
        print(f"fedgate sim: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0


def _sim_config(args: argparse.Namespace) -> Any:
    """Flags given on the command line win over the scenario file, which wins over defaults."""
    from pathlib import Path

    from firmware_sim.sim import SimConfig
    from native.errors import ConfigError

    given: dict[str, Any] = {k: getattr(args, k) for k in
                             ("gateways", "devices", "rounds", "seconds", "seed")
                             if getattr(args, k) is not None}
    given.update(out=Path(args.out), broker=args.broker, data=args.data,
                 data_dir=Path(args.data_dir) if args.data_dir else None,
                 holdout=[r for r in (args.holdout or "").split(",") if r],
                 quant_bits=args.quant_bits, secagg=args.secagg, neighbours=args.neighbours,
                 clip=args.clip, epochs=args.epochs, lr=args.lr, mu=args.mu,
                 strategy=args.strategy, server_lr=args.server_lr,
                 server_lr_decay=args.server_lr_decay,
                 server_lr_decay_from=args.server_lr_decay_from, weighting=args.weighting,
                 dp_noise_multiplier=args.dp_noise_multiplier, dp_l2_clip=args.dp_l2_clip,
                 dp_sampling_rate=args.dp_sampling_rate, dp_delta=args.dp_delta,
                 dp_epsilon_budget=args.dp_epsilon_budget, eval_holdout=args.eval_holdout,
                 model=args.model)
    if args.scenario is None:
        return SimConfig(**given)
    if "gateways" in given or "devices" in given:
        raise ConfigError("--scenario defines the fleet: drop --gateways and --devices")
    return SimConfig.from_scenario(Path(args.scenario), **given)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("sim", help="run a federated simulation on one machine")
    sim.add_argument("--out", default="sim-out", help="output folder for report.json and plots")
    sim.add_argument("--gateways", type=int, help="synthetic gateways (default 4)")
    sim.add_argument("--devices", type=int, help="ECG patches per synthetic gateway (default 1)")
    sim.add_argument("--scenario", help="fleet scenario file (TOML): gateways, devices, faults, "
                                        "dropouts, stragglers")
    sim.add_argument("--rounds", type=int, help="federated rounds (default 10)")
    sim.add_argument("--seconds", type=float,
                     help="signal per device in seconds (default 240; MIT-BIH: whole records)")
    sim.add_argument("--broker", help="external broker mqtt://host:port (default: embedded)")
    sim.add_argument("--data", choices=["synthetic", "mitdb"], default="synthetic")
    sim.add_argument("--data-dir", help="folder of MIT-BIH records for --data mitdb")
    sim.add_argument("--holdout", help="comma-separated held-out records (mitdb)")
    sim.add_argument("--seed", type=int, help="synthetic patients (default 0)")
    sim.add_argument("--quant-bits", type=int, default=8)
    sim.add_argument("--secagg", choices=["full", "plus"], default="full",
                     help="complete graph, or SecAgg+ with --neighbours k")
    sim.add_argument("--neighbours", type=int, help="SecAgg+ neighbours (even; default 10)")
    sim.add_argument("--clip", type=float, default=0.05, help="per-value clip of an update")
    sim.add_argument("--epochs", type=int, default=2, help="local epochs per round")
    sim.add_argument("--lr", type=float, default=3e-3, help="local learning rate (AdamW)")
    sim.add_argument("--mu", type=float, default=0.0, help="FedProx mu (0 = FedAvg)")
    sim.add_argument("--strategy", choices=["fedavg", "fedadam", "fedyogi"], default="fedavg")
    sim.add_argument("--server-lr", type=float, default=1.0, help="server learning rate")
    sim.add_argument("--model", default="ecg",
                     help="zoo model the gateways train: ecg (CNN) or ecg-linear (1e5 params)")
    sim.add_argument("--server-lr-decay", type=float, default=1.0,
                     help="multiply the server lr by this from --server-lr-decay-from on")
    sim.add_argument("--server-lr-decay-from", type=int, default=0,
                     help="first round of the decayed server lr (0 = never)")
    sim.add_argument("--weighting", choices=["equal", "samples"], default="equal",
                     help="gateway weights in the average: equal, or by training samples")
    sim.add_argument("--dp-noise-multiplier", type=float,
                     help="distributed DP: summed noise / L2 sensitivity (default: no DP)")
    sim.add_argument("--dp-l2-clip", type=float, default=1.0, help="DP: L2 clip of an update")
    sim.add_argument("--dp-sampling-rate", type=float, default=1.0,
                     help="DP: Poisson sampling rate of gateways per round")
    sim.add_argument("--dp-delta", type=float, default=1e-5, help="DP: delta")
    sim.add_argument("--dp-epsilon-budget", type=float,
                     help="DP: stop training before epsilon would exceed this")
    sim.add_argument("--eval-holdout", type=float, default=0.1,
                     help="share of each gateway's newest beats kept out of training for "
                          "federated evaluation (0 = off; default 0.1)")
    sim.set_defaults(func=_sim)
    # Listed for --help only: main() hands "aggregator ..." to aggregator.cli untouched.
    sub.add_parser("aggregator", help="the aggregator service: fedgate aggregator serve")
    sub.add_parser("models", help="models: fedgate models export --model ecg ...")
    sub.add_parser("gateway", help="the gateway daemon: fedgate gateway run --config FILE")
    sub.add_parser("audit", help="privacy, provenance and fairness of a model version: "
                                 "fedgate audit --aggregator URL --version V --out DIR")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["aggregator"]:
        from aggregator.cli import main as aggregator_main

        return aggregator_main(argv[1:])
    if argv[:1] == ["gateway"]:
        from edge_client.cli import main as gateway_main

        return gateway_main(argv[1:])
    if argv[:1] == ["audit"]:
        from aggregator.audit.cli import main as audit_main

        return audit_main(argv[1:])
    if argv[:1] == ["models"]:
        from models.cli import main as models_main

        return models_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
