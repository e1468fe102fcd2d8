"""``fedgate gateway run --config FILE``: the gateway daemon as a foreground process.

Meant to run under systemd (docs/fedgate-gateway.service): logs go to stderr, SIGTERM and
SIGINT stop it gracefully (it says ``offline`` on the broker and leaves any open round, which the
aggregator then counts as a dropout), and the exit status is 0 after a clean stop, 2 for a bad
configuration or identity.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from edge_client.config import load_config
from edge_client.daemon import GatewayDaemon
from native.errors import ConfigError, FedgateError

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedgate gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the gateway daemon in the foreground")
    run.add_argument("--config", required=True, help="TOML config file (see docs/gateway.md)")
    run.add_argument("--log-level", default="INFO",
                     choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``fedgate gateway``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"fedgate gateway: {exc}", file=sys.stderr)
        return 2
    daemon = GatewayDaemon(config)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        daemon.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return daemon.run()
    except ConfigError as exc:
        print(f"fedgate gateway: {exc}", file=sys.stderr)
        return 2
    except FedgateError as exc:
        print(f"fedgate gateway: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
