"""One audit of a model version: provenance, privacy (with optional membership inference) and
fairness, put together into the report that ``render`` writes.

The trusted key is the operator's pinned key when given, else the key the aggregator declares
(``/v1/signing-key``), which only shows the chain is consistent with that key; a pinned key that
differs from the declared one is a finding. Bad input (an unknown version, an unreachable
aggregator, unreadable records) raises; everything the audit finds is a problem in the report.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aggregator.audit import membership
from aggregator.audit.client import AuditClient, HttpRefusal
from aggregator.audit.federated import fairness_section
from aggregator.audit.ledger import privacy_section
from aggregator.audit.provenance import Link, check_version, dp_entry, signed_dict, verify_chain
from aggregator.signing import key_id
from native.errors import InputError, TransportError

log = logging.getLogger(__name__)

REPORT_FORMAT = "fedgate-audit/1"


@dataclass
class AuditOptions:
    """What ``fedgate audit`` was asked to do (validated by the CLI)."""

    aggregator: str
    version: int
    out: Path
    signing_key: bytes | None = None
    members: list[str] = field(default_factory=list)
    nonmembers: list[str] = field(default_factory=list)
    baseline_version: int | None = None
    baseline_aggregator: str | None = None
    baseline_signing_key: bytes | None = None
    admin_token: str | None = None
    timeout_s: float = 30.0


def trusted_key(client: AuditClient, pinned: bytes | None) -> tuple[bytes, dict[str, Any],
                                                                     list[str]]:
    """The key to verify with, its description, and a finding if pin and declaration differ."""
    declared_hex = str(client.obj("/v1/signing-key").get("public_key", ""))
    try:
        declared = bytes.fromhex(declared_hex)
    except ValueError:
        declared = b""
    problems = []
    if len(declared) != 32:
        problems.append("the aggregator declares no valid signing key")
    key = pinned if pinned is not None else declared
    if len(key) != 32:
        raise TransportError("the aggregator declares no valid signing key; pin one with "
                             "--signing-key HEX")
    if pinned is not None and declared and pinned != declared:
        problems.append(f"the aggregator declares key {key_id(declared)}, not the pinned "
                        f"{key_id(pinned)}")
    return key, {"public_key": key.hex(), "key_id": key_id(key), "pinned": pinned is not None,
                 "declared": declared_hex}, problems


def _require_version(client: AuditClient, version: int) -> None:
    try:
        client.json(f"/v1/models/{version}")
    except HttpRefusal as exc:
        if exc.status in (404, 422):
            raise InputError(f"the aggregator has no model version {version}") from None
        # A stored version the aggregator itself cannot verify: the chain walk reports it.


def _selected_counts(client: AuditClient) -> Any:
    cache: dict[int, int | None] = {}

    def selected(round_no: int) -> int | None:
        if round_no not in cache:
            try:
                cache[round_no] = int(client.json(f"/v1/rounds/{round_no}")["selected"])
            except (HttpRefusal, KeyError, TypeError, ValueError):
                cache[round_no] = None
        return cache[round_no]

    return selected


def _attack_link(link: Link, label: str, beats: dict[str, Any]) -> tuple[dict[str, Any] | None,
                                                                          str | None]:
    from models.artifacts import ensure

    if not link.ok or link.checkpoint is None or link.manifest is None:
        return None, f"{label} version {link.version} did not verify; no attack run on it"
    model = signed_dict(link.manifest, "config").get("model") or "ecg"
    params = np.frombuffer(link.checkpoint, dtype="<f4").astype(np.float32)
    res = membership.audit_version(ensure(str(model)), params, beats["members"],
                                   beats["nonmembers"])
    dp = dp_entry(link.manifest) or {}
    return {"version": link.version, "epsilon": dp.get("epsilon"), "delta": dp.get("delta"),
            **res}, None


def _membership(opts: AuditOptions, target: Link, beats: dict[str, Any] | None
                ) -> tuple[dict[str, Any] | None, list[str]]:
    if beats is None:
        return None, []
    problems: list[str] = []
    out: dict[str, Any] = {"attack": "loss (Yeom et al. 2018) on whole held-in vs held-out "
                                     "patients' beats",
                           "member_records": beats["member_names"],
                           "nonmember_records": beats["nonmember_names"],
                           "audited": None, "baseline": None}
    out["audited"], why = _attack_link(target, "audited", beats)
    problems += [why] if why else []
    if opts.baseline_version is not None:
        client = AuditClient(opts.baseline_aggregator or opts.aggregator, opts.timeout_s)
        key, _, _ = trusted_key(client, opts.baseline_signing_key)
        _require_version(client, opts.baseline_version)
        link, _ = check_version(client, opts.baseline_version, key, keep=True)
        problems += [f"baseline version {link.version}: {p}" for p in link.problems]
        out["baseline"], why = _attack_link(link, "baseline", beats)
        problems += [why] if why else []
    return out, problems


def _load_beats(opts: AuditOptions) -> dict[str, Any] | None:
    """Both groups' beats, read before any network work: bad records fail the audit first."""
    if not opts.members and not opts.nonmembers:
        return None
    named = [membership.record_paths(opts.members), membership.record_paths(opts.nonmembers)]
    overlap = {p.name for p in named[0]} & {p.name for p in named[1]}
    if overlap:
        raise InputError(f"records both members and non-members: {sorted(overlap)}")
    m_in, m_y, m_names = membership.load_beats(named[0])
    n_in, n_y, n_names = membership.load_beats(named[1])
    return {"members": (m_in, m_y), "nonmembers": (n_in, n_y), "member_names": m_names,
            "nonmember_names": n_names}


def run_audit(opts: AuditOptions) -> dict[str, Any]:
    """Audit ``opts.version``; the report dict (``verdict.ok`` says whether all verified)."""
    beats = _load_beats(opts)
    client = AuditClient(opts.aggregator, opts.timeout_s, opts.admin_token)
    key, key_info, key_problems = trusted_key(client, opts.signing_key)
    _require_version(client, opts.version)
    chain = verify_chain(client, opts.version, key)
    privacy = privacy_section(chain, _selected_counts(client))
    mia, mia_problems = _membership(opts, chain.links[0], beats)
    privacy["membership_inference"] = mia
    fairness = fairness_section(client, opts.version)
    problems = [*key_problems, *chain.all_problems(), *privacy["problems"], *mia_problems,
                *fairness["problems"]]
    return {
        "format": REPORT_FORMAT, "aggregator": client.base_url, "version": opts.version,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "signing_key": key_info, "verdict": {"ok": not problems, "problems": problems},
        "provenance": {"ok": chain.ok and not key_problems, "length": len(chain.links),
                       "root": chain.links[-1].version if chain.links[-1].parent is None and
                       chain.links[-1].ok else None,
                       "served_lineage": chain.served_lineage, "problems": chain.problems,
                       "links": [link.summary() for link in chain.links]},
        "privacy": privacy, "fairness": fairness,
    }
