"""``fedgate audit``: privacy, provenance and fairness of one model version (docs/privacy.md).

Exit status: 0 when everything verified, 1 when the audit found a problem (a broken chain, a
ledger that does not add up, a budget exceeded, a report that does not verify), 2 when it could
not run (bad flags, an unreachable aggregator, an unknown version, unreadable records).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

from native.errors import ConfigError, FedgateError

TOKEN_ENV = "FEDGATE_ADMIN_TOKEN"
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedgate audit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--aggregator", required=True, help="aggregator base URL, http(s)://host:port")
    p.add_argument("--version", required=True, type=int, help="model version to audit")
    p.add_argument("--out", required=True, help="folder for audit.json, audit.html, audit.png")
    p.add_argument("--signing-key", help="pin the aggregator's Ed25519 public key (64 hex); "
                                         "default: the key the aggregator declares")
    p.add_argument("--members", nargs="+", default=[], metavar="RECORD",
                   help="MIT-BIH records (or folders) of patients whose gateways trained")
    p.add_argument("--nonmembers", nargs="+", default=[], metavar="RECORD",
                   help="MIT-BIH records (or folders) of patients who never took part")
    p.add_argument("--baseline-version", type=int,
                   help="also attack this version (e.g. one trained without DP)")
    p.add_argument("--baseline-aggregator", help="aggregator of the baseline version "
                                                 "(default: --aggregator)")
    p.add_argument("--baseline-signing-key", help="pin the baseline aggregator's key (64 hex)")
    p.add_argument("--admin-token-file", help=f"file holding the admin token (default: "
                                              f"${TOKEN_ENV}); needed for the fairness part")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    p.add_argument("--log-level", default="warning",
                   choices=["debug", "info", "warning", "error"])
    return p


def _key(value: str | None, flag: str) -> bytes | None:
    if value is None:
        return None
    if not _HEX_KEY.fullmatch(value):
        raise ConfigError(f"{flag} must be 64 hex digits (an Ed25519 public key)")
    return bytes.fromhex(value)


def _version(value: int | None, flag: str) -> None:
    if value is not None and not 1 <= value <= 2**31 - 1:
        raise ConfigError(f"{flag} must be 1..2147483647, got {value}")


def _token(path: str | None) -> str | None:
    if path is None:
        return os.environ.get(TOKEN_ENV) or None
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--admin-token-file {path}: cannot read it: {exc}") from None
    if not token:
        raise ConfigError(f"--admin-token-file {path} is empty")
    return token


def options(args: argparse.Namespace) -> Any:
    """Validated ``AuditOptions`` from parsed flags; ``ConfigError`` names the bad flag."""
    from aggregator.audit.client import check_base_url
    from aggregator.audit.runner import AuditOptions

    check_base_url(args.aggregator)
    if args.baseline_aggregator is not None:
        check_base_url(args.baseline_aggregator)
    _version(args.version, "--version")
    _version(args.baseline_version, "--baseline-version")
    if bool(args.members) != bool(args.nonmembers):
        raise ConfigError("--members and --nonmembers go together")
    if args.baseline_version is not None and not args.members:
        raise ConfigError("--baseline-version needs --members and --nonmembers")
    if not (math.isfinite(args.timeout) and 0 < args.timeout <= 3600):
        raise ConfigError("--timeout must be in (0, 3600] seconds")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    return AuditOptions(
        aggregator=args.aggregator, version=args.version, out=out,
        signing_key=_key(args.signing_key, "--signing-key"), members=list(args.members),
        nonmembers=list(args.nonmembers), baseline_version=args.baseline_version,
        baseline_aggregator=args.baseline_aggregator,
        baseline_signing_key=_key(args.baseline_signing_key, "--baseline-signing-key"),
        admin_token=_token(args.admin_token_file), timeout_s=args.timeout)


def _g(value: Any) -> str:
    # Ledger values are printed as found: a tampered entry may hold anything.
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def summary(report: dict[str, Any]) -> list[str]:
    """The lines printed after an audit."""
    prov, priv, fair = report["provenance"], report["privacy"], report["fairness"]
    lines = [f"provenance: {prov['length']} versions back to root {prov['root']}: "
             f"{'intact' if prov['ok'] else 'BROKEN'}"]
    dp = priv.get("dp")
    if not dp:
        lines.append("privacy: no DP")
    else:
        lines.append(f"privacy: epsilon {_g(dp['epsilon'])} at delta {_g(dp['delta'])} after "
                     f"{dp['rounds']} DP rounds (recomputed from the RDP: "
                     f"{_g(dp['epsilon_recomputed'])}), noise multiplier "
                     f"{_g(dp['noise_multiplier'])}, L2 clip {_g(dp['l2_clip'])}, "
                     f"{dp['budget']}")
    mia = priv.get("membership_inference") or {}
    for name in ("audited", "baseline"):
        r = mia.get(name)
        if r:
            lines.append(f"membership inference on version {r['version']} ({name}): AUC "
                         f"{r['auc']:.3f}, TPR at 1% FPR {r['tpr_at_fpr']['0.01']:.3f}")
    if fair.get("available"):
        worst = ", ".join(w["gateway_id"] for w in fair["worst_decile"]) or "none"
        lines.append(f"fairness: {len(fair['gateways'])} gateways reported; worst decile: "
                     f"{worst}")
    else:
        lines.append(f"fairness: not available ({fair.get('reason')})")
    lines += [f"PROBLEM: {p}" for p in report["verdict"]["problems"]]
    return lines


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``fedgate audit``; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed why
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        from aggregator.audit.render import write_outputs
        from aggregator.audit.runner import run_audit

        report = run_audit(options(args))
        paths = write_outputs(Path(args.out), report)
    except FedgateError as exc:
        print(f"fedgate audit: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    for line in summary(report):
        print(line)
    print(f"wrote {paths['json']}, {paths['html']}, {paths['png']}")
    return 0 if report["verdict"]["ok"] else 1
