"""``fedgate models ...``: write inference models and prepare training artifacts."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from models.zoo import MODELS
from native.errors import FedgateError


def _export(args: argparse.Namespace) -> int:
    from models.export import export_inference, load_params_file

    out = export_inference(args.model, load_params_file(args.params), args.out)
    print(f"wrote {out}")
    return 0


def _artifacts(args: argparse.Namespace) -> int:
    from models.artifacts import ensure

    art = ensure(args.model, Path(args.cache) if args.cache else None)
    print(json.dumps({"root": str(art.root), "digest": art.manifest.digest()}))
    return 0


def _init_params(args: argparse.Namespace) -> int:
    import numpy as np

    from models import graph
    from models.zoo import get_spec

    spec = get_spec(args.model)
    np.save(args.out, graph.flatten(spec, graph.initial_params(spec)))
    print(f"wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedgate models", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    models = sorted(MODELS)
    ex = sub.add_parser("export", help="write an inference ONNX model for flat parameters")
    ex.add_argument("--model", required=True, choices=models)
    ex.add_argument("--params", required=True, help=".npy file with the flat float32 vector")
    ex.add_argument("--out", required=True, help="output .onnx path")
    ex.set_defaults(func=_export)
    ar = sub.add_parser("artifacts", help="generate or verify cached training artifacts")
    ar.add_argument("--model", required=True, choices=models)
    ar.add_argument("--cache", help="cache folder (default $FEDGATE_CACHE or ~/.cache/fedgate)")
    ar.set_defaults(func=_artifacts)
    ip = sub.add_parser("init-params", help="write the initial flat parameters as .npy")
    ip.add_argument("--model", required=True, choices=models)
    ip.add_argument("--out", required=True)
    ip.set_defaults(func=_init_params)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; a ``FedgateError`` becomes one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except FedgateError as exc:
        print(f"fedgate models: error: {exc}", file=sys.stderr)
        return 2
