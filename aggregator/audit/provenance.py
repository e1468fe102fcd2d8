"""Provenance: the signed lineage of a model version, checked link by link back to its root.

For every version on the way the audit fetches the served metadata, verifies the manifest's
Ed25519 signature over ``MANIFEST_DOMAIN + manifest`` with the key it trusts (pinned by the
operator, or the one the aggregator declares), checks that the signed manifest names that version
and the parent the child named, that the served fields agree with the signed ones, and downloads
the inference model and the checkpoint to compare their sha256 and size with the manifest.
A link that fails any check is recorded with its reasons and the walk goes on wherever a parent
can still be named (from the unverified metadata, marked so); a link that cannot be fetched ends
the walk, and that, too, is recorded. Nothing is skipped: a broken link breaks the chain.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from typing import Any

from aggregator.audit.client import AuditClient, HttpRefusal
from aggregator.signing import key_id, verify_manifest
from native.errors import FedgateError

log = logging.getLogger(__name__)

MAX_CHAIN = 100_000
# Served fields that must equal the signed manifest's (served name -> manifest name).
_MIRRORED = {"parent": "parent", "round_id": "round", "participants": "participants",
             "config": "config", "privacy": "privacy"}


def signed_dict(manifest: dict[str, Any] | None, name: str) -> dict[str, Any]:
    """A manifest's object field, or {} when it is absent or not an object (a finding)."""
    value = (manifest or {}).get(name)
    return value if isinstance(value, dict) else {}


def dp_entry(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """The DP ledger entry of a manifest (None: no DP, or not an object, a finding)."""
    entry = signed_dict(manifest, "privacy").get("dp")
    return entry if isinstance(entry, dict) and entry else None


@dataclass
class Link:
    """One version on the chain and what the audit found about it."""

    version: int
    problems: list[str] = field(default_factory=list)
    manifest: dict[str, Any] | None = None  # set only once the signature verified
    parent: int | None = None
    parent_verified: bool = False
    signature: str = "not checked"
    blobs: dict[str, str] = field(default_factory=dict)
    checkpoint: bytes | None = None  # kept for the audited version only

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, Any]:
        """The JSON form of this link in the audit report."""
        m = self.manifest or {}
        config = signed_dict(m, "config")
        return {
            "version": self.version, "ok": self.ok, "problems": list(self.problems),
            "parent": self.parent, "parent_verified": self.parent_verified,
            "signature": self.signature, "round": m.get("round"),
            "created_at": m.get("created_at"), "participants": m.get("participants"),
            "model": config.get("model"), "strategy": config.get("strategy"),
            "selection": config.get("selection"), "secagg": config.get("secagg"),
            "privacy": m.get("privacy"),
            "inference": m.get("inference"), "checkpoint": m.get("checkpoint"),
            "blobs": dict(self.blobs),
        }


@dataclass
class Chain:
    """The walked chain, newest first."""

    links: list[Link]
    problems: list[str]
    served_lineage: list[int]

    @property
    def ok(self) -> bool:
        return not self.problems and all(link.ok for link in self.links)

    def all_problems(self) -> list[str]:
        return [*self.problems,
                *(f"version {link.version}: {p}" for link in self.links for p in link.problems)]


def _decode_meta(meta: Any, link: Link) -> tuple[bytes, bytes] | None:
    if not isinstance(meta, dict):
        link.problems.append("served metadata is not a JSON object")
        return None
    try:
        manifest = base64.b64decode(str(meta["manifest"]), validate=True)
        signature = bytes.fromhex(str(meta["signature"]))
    except (KeyError, ValueError, binascii.Error) as exc:
        link.problems.append(f"served manifest or signature is malformed: {exc}")
        return None
    return manifest, signature


def _unverified_parent(meta: Any) -> int | None:
    value = meta.get("parent") if isinstance(meta, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _check_signed(link: Link, meta: dict[str, Any], manifest: dict[str, Any], key: bytes) -> None:
    if manifest.get("version") != link.version:
        link.problems.append(f"signed manifest names version {manifest.get('version')!r}")
    if manifest.get("signer") != key.hex():
        link.problems.append(f"manifest names signer {str(manifest.get('signer'))[:16]}..., "
                             f"not the trusted key {key_id(key)}")
    for name in ("config", "privacy"):
        if not isinstance(manifest.get(name), dict):
            link.problems.append(f"signed manifest's {name} is not an object")
    privacy = signed_dict(manifest, "privacy")
    if "dp" in privacy and privacy["dp"] is not None and not isinstance(privacy["dp"], dict):
        link.problems.append("signed manifest's DP ledger entry is not an object")
    for served, signed in _MIRRORED.items():
        if meta.get(served) != manifest.get(signed):
            link.problems.append(f"served {served} disagrees with the signed manifest")
    parent = manifest.get("parent")
    if parent is not None and (not isinstance(parent, int) or isinstance(parent, bool)
                               or not 1 <= parent < link.version):
        link.problems.append(f"parent {parent!r} is not an older version")
        parent = None
    link.parent, link.parent_verified = parent, True


def _check_blob(client: AuditClient, link: Link, kind: str, keep: bool) -> None:
    entry = (link.manifest or {}).get(kind)
    if entry is None:
        if kind == "inference":
            link.problems.append("signed manifest names no inference model")
        link.blobs[kind] = "none"
        return
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        link.problems.append(f"signed manifest's {kind} entry is malformed")
        link.blobs[kind] = "malformed"
        return
    try:
        data = client.blob(f"/v1/models/{link.version}/{kind}")
    except HttpRefusal as exc:
        link.problems.append(f"{kind} blob not served: {exc.reason}: {exc.detail}")
        link.blobs[kind] = "not served"
        return
    digest = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(digest, entry["sha256"]) or len(data) != entry.get("size"):
        link.problems.append(f"{kind} blob sha256 {digest[:16]}... ({len(data)} bytes) does not "
                             f"match the manifest's {entry['sha256'][:16]}... "
                             f"({entry.get('size')} bytes)")
        link.blobs[kind] = "MISMATCH"
        return
    link.blobs[kind] = "sha256 verified"
    if keep and kind == "checkpoint":
        link.checkpoint = data


def check_version(client: AuditClient, version: int, key: bytes, *, keep: bool = False,
                  expected_by: int | None = None) -> tuple[Link, bool]:
    """One link; the flag says whether the walk can go on to a parent at all."""
    link = Link(version)
    try:
        meta = client.json(f"/v1/models/{version}")
    except HttpRefusal as exc:
        if exc.status == 404:
            named = f" (named as parent by version {expected_by})" if expected_by else ""
            link.problems.append(f"version {version} does not exist{named}: missing parent")
        else:
            link.problems.append(f"the aggregator refuses to serve it: {exc.reason}: "
                                 f"{exc.detail}")
        link.signature = "unavailable"
        return link, False
    raw = _decode_meta(meta, link)
    if raw is None:
        link.parent = _unverified_parent(meta)
        return link, link.parent is not None
    try:
        manifest = verify_manifest(raw[0], raw[1], key)
    except FedgateError as exc:
        link.signature = "FAILED"
        link.problems.append(f"manifest signature: {exc} (trusted key {key_id(key)})")
        link.parent = _unverified_parent(meta)
        return link, True
    link.signature, link.manifest = "verified", manifest
    _check_signed(link, meta, manifest, key)
    for kind in ("inference", "checkpoint"):
        _check_blob(client, link, kind, keep)
    return link, True


def verify_chain(client: AuditClient, version: int, key: bytes) -> Chain:
    """Walk from ``version`` to its root; every link is checked, none is skipped."""
    links: list[Link] = []
    problems: list[str] = []
    seen: set[int] = set()
    current: int | None = version
    child: int | None = None
    while current is not None:
        if current in seen or len(links) >= MAX_CHAIN:
            problems.append(f"the chain loops back to version {current}")
            break
        seen.add(current)
        link, go_on = check_version(client, current, key, keep=current == version,
                                    expected_by=child)
        links.append(link)
        log.info("version %d: %s", current, "ok" if link.ok else "; ".join(link.problems))
        if not go_on:
            if current != version:
                problems.append(f"the chain is broken below version {child}: "
                                f"version {current} cannot be read")
            break
        if not link.parent_verified and link.parent is not None:
            link.problems.append(f"parent {link.parent} taken from unverified metadata")
        child, current = current, link.parent
    served = _served_lineage(client, version)
    walked = [link.version for link in links]
    if served is not None and served != walked:
        problems.append(f"the aggregator's lineage {served} differs from the walked chain "
                        f"{walked}")
    return Chain(links, problems, served or [])


def _served_lineage(client: AuditClient, version: int) -> list[int] | None:
    try:
        meta = client.json(f"/v1/models/{version}")
    except HttpRefusal:
        return None
    lineage = meta.get("lineage") if isinstance(meta, dict) else None
    return [int(v) for v in lineage] if isinstance(lineage, list) else None
