"""The gateway's long-term Ed25519 identity and its enrollment record.

The key is created on first start as a 32-byte seed in a file of mode 0600. A key file that
group or others can read is refused rather than used: a leaked identity key lets anyone sign
protocol messages as this gateway, and silently fixing the mode would hide that it may already
have leaked. The enrollment record (gateway id, participant id, the aggregator's public key)
is plain JSON next to it; the aggregator key in it is pinned and checks every model and round.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

import nacl.signing

from native.errors import ConfigError, IntegrityError

log = logging.getLogger(__name__)

KEY_FILE = "identity.key"
ENROLLMENT_FILE = "enrollment.json"


def load_or_create_identity(path: str | Path) -> nacl.signing.SigningKey:
    """Read the seed at ``path`` (refusing wider modes than 0600), or create it on first start."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        return _create(path)
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"identity key {path} is not a regular file")
    if info.st_mode & 0o077:
        raise ConfigError(
            f"identity key {path} has mode {stat.S_IMODE(info.st_mode):04o}; it must not be "
            f"readable by group or others (chmod 600 it, and rotate it if it may have leaked)")
    seed = path.read_bytes()
    if len(seed) != 32:
        raise IntegrityError(f"identity key {path} must hold a 32-byte seed, has {len(seed)}")
    return nacl.signing.SigningKey(seed)


def _create(path: Path) -> nacl.signing.SigningKey:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = nacl.signing.SigningKey.generate()
    # O_EXCL: two daemons racing on first start must not both write a key.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(bytes(key))
        handle.flush()
        os.fsync(handle.fileno())
    log.info("created gateway identity %s", path)
    return key


@dataclass(frozen=True)
class Enrollment:
    """What the aggregator told this gateway when it enrolled."""

    gateway_id: str
    pid: int
    aggregator_public_key: str  # hex, pinned

    @property
    def server_key(self) -> bytes:
        return bytes.fromhex(self.aggregator_public_key)


def load_enrollment(folder: str | Path) -> Enrollment | None:
    """The stored enrollment record, or None when this gateway has not enrolled yet."""
    path = Path(folder) / ENROLLMENT_FILE
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        rec = Enrollment(str(raw["gateway_id"]), int(raw["pid"]),
                         str(raw["aggregator_public_key"]))
        if len(rec.server_key) != 32:
            raise ValueError("aggregator key must be 32 bytes")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"enrollment record {path} is damaged: {exc}") from None
    return rec


def save_enrollment(folder: str | Path, record: Enrollment) -> None:
    """Write the record atomically (a crash leaves the old record or the new one)."""
    path = Path(folder) / ENROLLMENT_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2), encoding="utf-8")
    os.replace(tmp, path)
