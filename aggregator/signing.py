"""The aggregator's Ed25519 signing key and the model-manifest signature format.

A manifest is a UTF-8 JSON document; the signature covers ``MANIFEST_DOMAIN + manifest`` exactly
as stored and served, so a verifier never re-serialises anything: it checks the signature over
the bytes it received, then parses them, then checks each blob's sha256 against the manifest.
These helpers depend on nothing but PyNaCl and the standard library, so a gateway can use the
same code (or ten lines of libsodium in another language).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing

from native.errors import ConfigError, IntegrityError, WireError

log = logging.getLogger(__name__)

MANIFEST_DOMAIN = b"fedgate/model-manifest/v1\x00"
MANIFEST_FORMAT = "fedgate-model-manifest/1"
MAX_MANIFEST_BYTES = 1 << 20


def load_or_create_signing_key(path: Path) -> nacl.signing.SigningKey:
    """Read the 32-byte seed at ``path``, or create it with mode 0600 on first start."""
    path = Path(path)
    if path.exists():
        if path.stat().st_mode & 0o077:
            log.warning("signing key %s is readable by group/others; chmod 600 it", path)
        seed = path.read_bytes()
        if len(seed) != 32:
            raise ConfigError(f"signing key {path} must hold a 32-byte seed, has {len(seed)}")
        return nacl.signing.SigningKey(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = nacl.signing.SigningKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(bytes(key))
    log.info("created aggregator signing key %s", path)
    return key


def key_id(public_key: bytes) -> str:
    """Short, stable name of a public key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def encode_manifest(fields: dict[str, Any]) -> bytes:
    """Canonical-enough JSON bytes of a manifest (sorted keys, no NaN/Infinity)."""
    try:
        data = json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise WireError(f"manifest is not plain JSON: {exc}") from None
    return data.encode("utf-8")


def sign_manifest(key: nacl.signing.SigningKey, manifest: bytes) -> bytes:
    """The 64-byte Ed25519 signature of a manifest."""
    return bytes(key.sign(MANIFEST_DOMAIN + manifest).signature)


def verify_manifest(manifest: bytes, signature: bytes, public_key: bytes) -> dict[str, Any]:
    """Verify a manifest's signature with the aggregator's public key; return it parsed."""
    if not isinstance(manifest, bytes) or len(manifest) > MAX_MANIFEST_BYTES:
        raise WireError("manifest must be bytes of at most 1 MiB")
    if not isinstance(signature, bytes) or len(signature) != 64:
        raise WireError("signature must be 64 bytes")
    if not isinstance(public_key, bytes) or len(public_key) != 32:
        raise WireError("public key must be 32 bytes")
    try:
        nacl.signing.VerifyKey(public_key).verify(MANIFEST_DOMAIN + manifest, signature)
    except nacl.exceptions.BadSignatureError:
        raise IntegrityError("model manifest signature does not verify") from None
    try:
        parsed = json.loads(manifest.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError(f"signed manifest is not JSON: {exc}") from None
    if not isinstance(parsed, dict) or parsed.get("format") != MANIFEST_FORMAT:
        raise WireError(f"manifest format must be {MANIFEST_FORMAT!r}")
    return parsed


def verify_blob(data: bytes, expected_sha256: str) -> None:
    """Raise ``IntegrityError`` unless ``data`` hashes to the manifest's sha256 (hex)."""
    actual = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(actual, str(expected_sha256)):
        raise IntegrityError(f"blob sha256 {actual} does not match the manifest")
