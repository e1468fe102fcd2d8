"""The signed federated-evaluation report: what a gateway says about one global model version.

A gateway evaluates a downloaded model version on its local hold-out and reports metrics only:
the confusion matrix counts (rows = true class, columns = predicted class), the sample count and
the summed cross-entropy. Both sides must agree on the bytes bit for bit, so the encoding lives
here, once. All integers are little-endian and fixed width, the loss is an IEEE-754 binary64 (no
decimal text, so no float formatting can differ between implementations):

    magic "FGEV" | u16 format (1) | u8 classes k | u8 id length L | u32 model version
    | u64 samples | f64 loss sum | L bytes gateway id (ASCII) | k*k u64 confusion counts

The gateway signs ``REPORT_DOMAIN + bytes`` with its Ed25519 identity key; the aggregator checks
the signature over the bytes it received and decodes them, it never re-serialises anything.
``decode`` checks the length against the header before it reads a count. Counts are unsigned, so
a negative count cannot be written; one at or above 2**63 (a negative int64 read as unsigned) is
refused as oversized, like any sample count above ``MAX_SAMPLES``.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing
import numpy as np

from native.errors import InputError, IntegrityError, WireError

__all__ = [
    "FORMAT",
    "MAX_CLASSES",
    "MAX_REPORT_BYTES",
    "MAX_SAMPLES",
    "REPORT_DOMAIN",
    "CountError",
    "EvalReport",
    "decode",
    "encode",
    "sign",
    "verify",
]

MAGIC = b"FGEV"
FORMAT = 1
REPORT_DOMAIN = b"fedgate/eval-report/v1\x00"
_HEAD = struct.Struct("<4sHBBIQd")
MAX_CLASSES = 64
MAX_ID_BYTES = 32
# A gateway holds days of beats, not billions: a larger count is a bug or an attack.
MAX_SAMPLES = 10**9
# Mean cross-entropy above this means the logits were garbage (float32 logits cannot reach it).
MAX_MEAN_LOSS = 1e6
MAX_REPORT_BYTES = _HEAD.size + MAX_ID_BYTES + 8 * MAX_CLASSES**2
_GATEWAY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_SIGNATURE_BYTES = 64


class CountError(WireError):
    """A well-formed report whose counts or loss are impossible (sum, range, NaN)."""


@dataclass(frozen=True)
class EvalReport:
    """One gateway's metrics of one model version (validated on construction)."""

    model_version: int
    gateway_id: str
    samples: int
    loss_sum: float
    confusion: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        _check_header(self.model_version, self.gateway_id, self.confusion)
        _check_counts(self.samples, self.loss_sum, self.confusion)

    @property
    def classes(self) -> int:
        return len(self.confusion)

    @classmethod
    def of(cls, model_version: int, gateway_id: str, confusion: Sequence[Sequence[int]],
           loss_sum: float) -> EvalReport:
        """A report whose sample count is the confusion matrix's total."""
        rows = tuple(tuple(_count(v) for v in row) for row in confusion)
        return cls(model_version, gateway_id, sum(map(sum, rows)), float(loss_sum), rows)


def _count(value: object) -> int:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"confusion counts must be integers, got {type(value).__name__}")
    return value


def _check_header(version: object, gateway_id: object,
                  confusion: tuple[tuple[int, ...], ...]) -> None:
    if isinstance(version, bool) or not isinstance(version, int) or not (
            1 <= version <= 2**31 - 1):
        raise InputError(f"model version must be 1..2^31-1, got {version!r}")
    if not isinstance(gateway_id, str) or not _GATEWAY_ID.fullmatch(gateway_id):
        raise InputError("gateway id must be 1-32 characters of [A-Za-z0-9_-]")
    k = len(confusion)
    if not 1 <= k <= MAX_CLASSES or any(len(row) != k for row in confusion):
        raise InputError(f"confusion must be k x k with 1 <= k <= {MAX_CLASSES}")


def _check_counts(samples: object, loss: object,
                  confusion: tuple[tuple[int, ...], ...]) -> None:
    if isinstance(samples, bool) or not isinstance(samples, int) or not (
            1 <= samples <= MAX_SAMPLES):
        raise InputError(f"samples must be 1..{MAX_SAMPLES}, got {samples!r}")
    for row in confusion:
        for v in row:
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_SAMPLES:
                raise InputError(f"confusion counts must be integers in 0..{MAX_SAMPLES}")
    if sum(map(sum, confusion)) != samples:
        raise InputError("confusion counts must add up to the sample count")
    if not isinstance(loss, float) or not math.isfinite(loss) or not (
            0.0 <= loss <= MAX_MEAN_LOSS * samples):
        raise InputError(f"loss sum must be finite, >= 0 and <= {MAX_MEAN_LOSS:g} per sample")


def encode(report: EvalReport) -> bytes:
    """The canonical bytes of a report (the signed payload)."""
    if not isinstance(report, EvalReport):
        raise InputError(f"need an EvalReport, got {type(report).__name__}")
    gid = report.gateway_id.encode("ascii")
    head = _HEAD.pack(MAGIC, FORMAT, report.classes, len(gid), report.model_version,
                      report.samples, report.loss_sum)
    flat = [v for row in report.confusion for v in row]
    return head + gid + struct.pack(f"<{len(flat)}Q", *flat)


def decode(data: bytes) -> EvalReport:
    """Parse and validate report bytes; ``WireError`` for anything malformed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError(f"report must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not _HEAD.size <= len(data) <= MAX_REPORT_BYTES:
        raise WireError(f"report of {len(data)} bytes outside {_HEAD.size}..{MAX_REPORT_BYTES}")
    magic, fmt, k, id_len, version, samples, loss = _HEAD.unpack_from(data)
    if magic != MAGIC or fmt != FORMAT:
        raise WireError(f"not an evaluation report of format {FORMAT} (magic {magic!r}, {fmt})")
    if not 1 <= k <= MAX_CLASSES or not 1 <= id_len <= MAX_ID_BYTES:
        raise WireError(f"report header names {k} classes and a {id_len}-byte gateway id")
    want = _HEAD.size + id_len + 8 * k * k
    if len(data) != want:
        raise WireError(f"report of {k} classes must be {want} bytes, got {len(data)}")
    try:
        gateway_id = data[_HEAD.size:_HEAD.size + id_len].decode("ascii")
    except UnicodeDecodeError:
        raise WireError("gateway id is not ASCII") from None
    flat = struct.unpack_from(f"<{k * k}Q", data, _HEAD.size + id_len)
    rows = tuple(tuple(flat[i * k:(i + 1) * k]) for i in range(k))
    try:
        _check_header(version, gateway_id, rows)
    except InputError as exc:
        raise WireError(f"report refused: {exc}") from None
    try:
        _check_counts(samples, loss, rows)
    except InputError as exc:
        raise CountError(f"report refused: {exc}") from None
    return EvalReport(version, gateway_id, samples, loss, rows)


def sign(key: nacl.signing.SigningKey, report: EvalReport) -> tuple[bytes, bytes]:
    """(report bytes, 64-byte Ed25519 signature over REPORT_DOMAIN + bytes)."""
    data = encode(report)
    return data, bytes(key.sign(REPORT_DOMAIN + data).signature)


def verify(data: bytes, signature: bytes, public_key: bytes) -> EvalReport:
    """Check the signature with the gateway's enrolled key, then decode the report.

    The caller bounds the size of ``data``; only signed bytes reach the decoder.
    """
    if not isinstance(signature, bytes) or len(signature) != _SIGNATURE_BYTES:
        raise WireError("signature must be 64 bytes")
    if not isinstance(public_key, bytes) or len(public_key) != 32:
        raise WireError("public key must be 32 bytes")
    if not isinstance(data, bytes):
        raise WireError(f"report must be bytes, got {type(data).__name__}")
    try:
        nacl.signing.VerifyKey(public_key).verify(REPORT_DOMAIN + data, signature)
    except nacl.exceptions.BadSignatureError:
        raise IntegrityError("evaluation report signature does not verify") from None
    return decode(data)
