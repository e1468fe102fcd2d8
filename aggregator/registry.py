"""Signed model versions with lineage, and their content-addressed blobs.

Every version's manifest names its parent, the round that produced it, the round config, the
number of participants and the privacy parameters, and the sha256 and size of the inference model
and the training checkpoint. The aggregator signs the manifest bytes; the registry stores exactly
those bytes, so the history can be re-verified at any time and survives restarts.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

import nacl.signing
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aggregator.db import Blob, ModelVersion, utcnow
from aggregator.signing import (
    MANIFEST_FORMAT,
    encode_manifest,
    sign_manifest,
    verify_blob,
    verify_manifest,
)
from native.errors import InputError, IntegrityError

log = logging.getLogger(__name__)


class ModelRegistry:
    """Registers and reads signed model versions inside a caller's session."""

    def __init__(self, signing_key: nacl.signing.SigningKey, max_blob_bytes: int) -> None:
        self._key = signing_key
        self.public_key = bytes(signing_key.verify_key)
        self.max_blob_bytes = max_blob_bytes
        # A version never changes once stored, so what was read or verified once is kept: every
        # gateway downloads the latest version at the start of each round, and walking the
        # lineage through the database cost one query per ancestor on each download.
        self._parents: dict[int, int | None] = {}
        self._verified: dict[tuple[int, bytes, bytes], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def register(
        self, session: Session, *, inference: bytes, checkpoint: bytes | None = None,
        parent: int | None = None, round_id: int | None = None, participants: int = 0,
        config: dict[str, Any] | None = None, privacy: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Store the blobs, sign a manifest and add the next version; return its row."""
        if parent is not None and session.get(ModelVersion, parent) is None:
            raise InputError(f"parent model version {parent} does not exist")
        if isinstance(participants, bool) or not isinstance(participants, int) or participants < 0:
            raise InputError(f"participants must be a non-negative int, got {participants!r}")
        inference_sha = self.put_blob(session, inference)
        checkpoint_sha = None if checkpoint is None else self.put_blob(session, checkpoint)
        latest = session.scalar(select(func.max(ModelVersion.version)))
        version = (latest or 0) + 1
        created = utcnow()
        fields = {
            "format": MANIFEST_FORMAT, "version": version, "parent": parent, "round": round_id,
            "created_at": created.isoformat(), "participants": participants,
            "config": config or {}, "privacy": privacy or {},
            "inference": {"sha256": inference_sha, "size": len(inference)},
            "checkpoint": None if checkpoint is None else
            {"sha256": checkpoint_sha, "size": len(checkpoint)},
            "signer": self.public_key.hex(),
        }
        manifest = encode_manifest(fields)
        row = ModelVersion(
            version=version, parent=parent, round_id=round_id, created_at=created,
            participants=participants, config=config or {}, privacy=privacy or {},
            inference_sha256=inference_sha, checkpoint_sha256=checkpoint_sha, manifest=manifest,
            signature=sign_manifest(self._key, manifest), signer=self.public_key.hex(),
        )
        session.add(row)
        session.flush()
        log.info("registered model version %d (parent %s, round %s)", version, parent, round_id)
        return row

    def put_blob(self, session: Session, data: bytes) -> str:
        """Store ``data`` once under its sha256 (hex) and return the digest."""
        if not isinstance(data, bytes):
            raise InputError(f"blob must be bytes, got {type(data).__name__}")
        if not 0 < len(data) <= self.max_blob_bytes:
            raise InputError(f"blob of {len(data)} bytes outside (0, {self.max_blob_bytes}]")
        digest = hashlib.sha256(data).hexdigest()
        if session.get(Blob, digest) is None:
            session.add(Blob(sha256=digest, size=len(data), data=data))
        return digest

    @staticmethod
    def get(session: Session, version: int) -> ModelVersion | None:
        return session.get(ModelVersion, version)

    @staticmethod
    def latest(session: Session) -> ModelVersion | None:
        return session.scalars(
            select(ModelVersion).order_by(ModelVersion.version.desc()).limit(1)
        ).first()

    @staticmethod
    def history(session: Session, limit: int = 100, offset: int = 0) -> list[ModelVersion]:
        query = select(ModelVersion).order_by(ModelVersion.version).limit(limit).offset(offset)
        return list(session.scalars(query))

    def lineage(self, session: Session, version: int) -> list[int]:
        """The chain from ``version`` back to its root: [version, parent, grandparent, ...]."""
        chain: list[int] = []
        current: int | None = version
        while current is not None and len(chain) < 100_000:
            with self._lock:
                known = current in self._parents
                parent = self._parents.get(current)
            if not known:
                row = session.get(ModelVersion, current)
                if row is None:
                    break
                parent = row.parent
                with self._lock:
                    self._parents[current] = parent
            chain.append(current)
            current = parent
        return chain

    def blob(self, session: Session, row: ModelVersion, kind: str) -> bytes | None:
        """The verified bytes of a version's ``inference`` or ``checkpoint`` blob."""
        digest = row.inference_sha256 if kind == "inference" else row.checkpoint_sha256
        if digest is None:
            return None
        stored = session.get(Blob, digest)
        if stored is None:
            raise IntegrityError(f"blob {digest} of model version {row.version} is missing")
        verify_blob(stored.data, digest)
        return stored.data

    def verify(self, row: ModelVersion) -> dict[str, Any]:
        """Re-verify a stored version's signature and its consistency with the row."""
        key = (row.version, bytes(row.manifest), bytes(row.signature))
        with self._lock:
            cached = self._verified.get(key)
        if cached is not None and cached["inference"]["sha256"] == row.inference_sha256:
            return cached
        manifest = verify_manifest(row.manifest, row.signature, bytes.fromhex(row.signer))
        if manifest.get("version") != row.version or manifest["inference"]["sha256"] != (
            row.inference_sha256
        ):
            raise IntegrityError(f"stored model version {row.version} disagrees with its manifest")
        with self._lock:
            if len(self._verified) >= 256:  # bounded: only recent versions are asked for often
                self._verified.clear()
            self._verified[key] = manifest
        return manifest
