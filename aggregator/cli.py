"""``fedgate aggregator serve``: run the aggregator's REST service under uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from native.errors import ConfigError

if TYPE_CHECKING:
    from aggregator.settings import AggregatorSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedgate aggregator",
                                     description="the fedgate aggregator service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the REST API (settings from FEDGATE_AGG_*)")
    serve.add_argument("--host", help="bind address (default: FEDGATE_AGG_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (default: FEDGATE_AGG_PORT or 8080)")
    serve.add_argument("--database-url", help="SQLAlchemy URL (default: FEDGATE_AGG_DATABASE_URL)")
    serve.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"])
    return parser


def _settings(args: argparse.Namespace) -> AggregatorSettings:
    from pydantic import ValidationError

    from aggregator.settings import AggregatorSettings

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port),
                                   ("database_url", args.database_url)) if v is not None}
    try:
        return AggregatorSettings(**overrides)
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                 for e in exc.errors()]
        raise ConfigError("invalid aggregator settings (FEDGATE_AGG_*):\n" + "\n".join(lines)) \
            from None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``fedgate aggregator``; returns the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"fedgate aggregator: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from aggregator.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
