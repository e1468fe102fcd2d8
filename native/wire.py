"""The versioned binary wire format of fedgate's secure-aggregation messages (docs/protocol.md).

Every message is ``header || body || signature``. The 32-byte header holds the magic ``FGSA``, the
uint16 wire version, the uint8 message type, a zero byte, the 16-byte round id, the uint32 sender id
(0 = the aggregator) and the uint32 body length; the trailing 64 bytes are an Ed25519 signature over
SHA-256 of header and body (hash-then-sign keeps the cost of a signature on a large masked vector
at one pass of a hash that x86-64 SHA-NI and ARMv8 SHA2 instructions run at gigabytes per second).
All integers are little-endian and fixed width. ``decode`` checks the total length,
the version and every count against the bytes present before it allocates anything.
"""

from __future__ import annotations

import hashlib
import math
import struct
import sys
from dataclasses import dataclass
from enum import IntEnum
from typing import Union

import nacl.bindings
import nacl.exceptions
import nacl.signing
import numpy as np
import numpy.typing as npt

from native import packing
from native.errors import IntegrityError, WireError
from native.round_noise import (
    RoundNoise,
    check_against_round,
    decode_block,
    encode_block,
    rotation_seed,
)
from native.round_noise import padded_length as _padded_length

__all__ = [
    "HEADER_BYTES",
    "MAX_MESSAGE_BYTES",
    "SEALED_SHARE_BYTES",
    "SIGNATURE_BYTES",
    "WIRE_VERSION",
    "AdvertiseKeys",
    "Envelope",
    "KeyEntry",
    "KeyList",
    "MaskedInput",
    "Message",
    "MsgType",
    "Participant",
    "RoundConfig",
    "RoundNoise",
    "RoundResult",
    "SealedShare",
    "ShareKeys",
    "SharesRelay",
    "UnmaskRequest",
    "UnmaskShares",
    "advertise_signed_bytes",
    "decode",
    "encode",
    "pack_ring",
    "rotation_seed",
    "signing_digest",
    "unpack_ring",
    "verify_key_entry",
]

# Version 2 added the DP block of ROUND_CONFIG (native/round_noise.py) and the base model it
# trains (version and checkpoint sha256).
WIRE_VERSION = 2
MAGIC = b"FGSA"
HEADER = struct.Struct("<4sHBx16sII")
HEADER_BYTES = HEADER.size
SIGNATURE_BYTES = 64
MAX_MESSAGE_BYTES = 1 << 28
MAX_PARTICIPANTS = 1 << 16
MAX_VECTOR_LEN = 1 << 26
SHARE_BYTES = 40
SEALED_SHARE_BYTES = 24 + 2 * SHARE_BYTES + 16
_CONFIG = struct.Struct("<IIIBBHIdI32sI32s")
_U32 = struct.Struct("<I")
_PARTICIPANT = struct.Struct("<I32s")
_KEY_ENTRY = struct.Struct("<I32s32s64s")
_SEALED = struct.Struct(f"<I{SEALED_SHARE_BYTES}s")
_SHARE = struct.Struct(f"<I{SHARE_BYTES}s")
_MASKED = struct.Struct("<BBHI")
_RESULT = struct.Struct("<BxHI")


class MsgType(IntEnum):
    """Message type byte of the header."""

    ROUND_CONFIG = 1
    ADVERTISE_KEYS = 2
    KEY_LIST = 3
    SHARE_KEYS = 4
    SHARES_RELAY = 5
    MASKED_INPUT = 6
    UNMASK_REQUEST = 7
    UNMASK_SHARES = 8
    ROUND_RESULT = 9


@dataclass(frozen=True)
class Participant:
    pid: int
    identity_key: bytes


@dataclass(frozen=True)
class RoundConfig:
    """The signed parameters of a round; every gateway checks them before it sends anything."""

    degree: int
    threshold: int
    quant_bits: int
    ring_bits: int
    max_weight: int
    clip: float
    vector_len: int
    graph_seed: bytes
    participants: tuple[Participant, ...]
    noise: RoundNoise | None = None  # distributed DP; None: a round without noise
    # The global model the round trains (0 and zeros: not named; gateways take the latest).
    model_version: int = 0
    model_sha256: bytes = bytes(32)

    @property
    def masked_len(self) -> int:
        """Ring elements of a MASKED_INPUT: the (rotated, for DP) vector plus the weight."""
        dim = self.vector_len if self.noise is None else _padded_length(self.vector_len)
        return dim + 1

    def validate(self) -> None:
        """Structural soundness (no policy): ranges, distinct ids, a ring sum that cannot wrap."""
        n = len(self.participants)
        pids = [p.pid for p in self.participants]
        if not 2 <= n <= MAX_PARTICIPANTS or len(set(pids)) != n or min(pids) < 1:
            raise WireError("participants must be 2..65536 distinct non-zero ids")
        if len({p.identity_key for p in self.participants}) != n:
            raise WireError("two participants share an identity key")
        complete = self.degree == n - 1
        if not complete and (self.degree < 2 or self.degree % 2 or self.degree >= n - 1):
            raise WireError(f"degree {self.degree} invalid for n = {n}")
        if not 1 <= self.threshold <= self.degree + 1:
            raise WireError(f"threshold {self.threshold} outside 1..{self.degree + 1}")
        if not 1 <= self.quant_bits <= 24 or not 1 <= self.ring_bits <= 32:
            raise WireError("bit widths out of range")
        if not 1 <= self.max_weight < 1 << 24:
            raise WireError("max_weight out of range")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise WireError("clip must be finite and positive")
        if not 1 <= self.vector_len <= MAX_VECTOR_LEN:
            raise WireError("vector length out of range")
        if not 0 <= self.model_version < 1 << 32 or len(self.model_sha256) != 32:
            raise WireError("model version or checkpoint hash out of range")
        if (self.model_version == 0) != (self.model_sha256 == bytes(32)):
            raise WireError("a round names its model version and checkpoint hash together")
        peak = n * self.max_weight * ((1 << self.quant_bits) - 1)
        if max(peak, n * self.max_weight) >= 1 << self.ring_bits:
            raise WireError(f"ring of {self.ring_bits} bits can wrap for n = {n}")
        if self.noise is not None:
            self._validate_noise(self.noise, n)

    def _validate_noise(self, noise: RoundNoise, n: int) -> None:
        from native.dp_params import ring_bits_with_noise
        from native.errors import FedgateError

        noise.check()
        params = check_against_round(noise, self.threshold, self.vector_len, n, self.max_weight)
        try:
            need = ring_bits_with_noise(self.quant_bits, n, params)
        except FedgateError as exc:
            raise WireError(f"no ring holds this round's noise: {exc}") from exc
        if self.ring_bits < need:
            raise WireError(f"ring of {self.ring_bits} bits can wrap with this noise "
                            f"(needs {need})")


@dataclass(frozen=True)
class AdvertiseKeys:
    mask_public: bytes
    enc_public: bytes


@dataclass(frozen=True)
class KeyEntry:
    """One gateway's advertised keys and its signature over its own ADVERTISE_KEYS message."""

    pid: int
    mask_public: bytes
    enc_public: bytes
    signature: bytes


@dataclass(frozen=True)
class KeyList:
    entries: tuple[KeyEntry, ...]


@dataclass(frozen=True)
class SealedShare:
    """Encrypted shares; ``peer`` is the recipient in SHARE_KEYS, the sender in SHARES_RELAY."""

    peer: int
    sealed: bytes


@dataclass(frozen=True)
class ShareKeys:
    shares: tuple[SealedShare, ...]


@dataclass(frozen=True)
class SharesRelay:
    recipient: int
    shares: tuple[SealedShare, ...]


@dataclass(frozen=True)
class MaskedInput:
    """Ring elements packed densely at ``ring_bits`` bits each, LSB first (native.packing).

    After ``decode`` the payload is a read-only view into the received bytes (no copy of a large
    vector); use :func:`pack_ring` / :func:`unpack_ring` to convert.
    """

    ring_bits: int
    count: int
    payload: bytes | memoryview

    @classmethod
    def of(cls, values: npt.NDArray[np.unsignedinteger], bits: int) -> MaskedInput:
        """Pack a ring vector (native.mask.ring_dtype(bits)) for the wire."""
        return cls(bits, int(values.size), pack_ring(values, bits))

    def values(self) -> npt.NDArray[np.unsignedinteger]:
        """The ring elements (read-only when no unpacking was needed)."""
        return unpack_ring(self.payload, self.count, self.ring_bits)


# At 16 and 32 bits the dense LSB-first packing is exactly the little-endian array, so on a
# little-endian host the vector goes out and comes in without a packing pass.
_ALIGNED: dict[int, np.dtype[np.unsignedinteger]] = (
    {16: np.dtype("<u2"), 32: np.dtype("<u4")} if sys.byteorder == "little" else {}
)


def pack_ring(values: npt.NDArray[np.unsignedinteger], bits: int) -> bytes:
    """Dense LSB-first packing of ring elements at ``bits`` bits each."""
    if bits in _ALIGNED and values.dtype == _ALIGNED[bits]:
        return values.tobytes()
    return packing.pack(values, bits)


def unpack_ring(
    payload: bytes | memoryview, count: int, bits: int
) -> npt.NDArray[np.unsignedinteger]:
    """Inverse of :func:`pack_ring`; the payload length must match ``count`` and ``bits``."""
    if bits in _ALIGNED:
        if len(payload) != count * bits // 8:
            raise WireError("ring payload length does not match count and width")
        view: npt.NDArray[np.unsignedinteger] = np.frombuffer(payload, _ALIGNED[bits], count)
        return view
    return packing.unpack(payload, count, bits)


@dataclass(frozen=True)
class UnmaskRequest:
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]


@dataclass(frozen=True)
class UnmaskShares:
    seed_shares: tuple[tuple[int, bytes], ...]
    key_shares: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True)
class RoundResult:
    """Outcome of a round: status 0 = aggregated, 1 = aborted; ``reason`` is UTF-8 text."""

    status: int
    included: tuple[int, ...]
    reason: str


Message = Union[  # noqa: UP007 - a runtime alias, not an annotation
    RoundConfig,
    AdvertiseKeys,
    KeyList,
    ShareKeys,
    SharesRelay,
    MaskedInput,
    UnmaskRequest,
    UnmaskShares,
    RoundResult,
]
_TYPE_OF: dict[type, MsgType] = {
    RoundConfig: MsgType.ROUND_CONFIG,
    AdvertiseKeys: MsgType.ADVERTISE_KEYS,
    KeyList: MsgType.KEY_LIST,
    ShareKeys: MsgType.SHARE_KEYS,
    SharesRelay: MsgType.SHARES_RELAY,
    MaskedInput: MsgType.MASKED_INPUT,
    UnmaskRequest: MsgType.UNMASK_REQUEST,
    UnmaskShares: MsgType.UNMASK_SHARES,
    RoundResult: MsgType.ROUND_RESULT,
}


@dataclass(frozen=True)
class Envelope:
    """A decoded message with its header fields; ``verify`` checks the Ed25519 signature."""

    version: int
    msg_type: MsgType
    round_id: bytes
    sender: int
    message: Message
    digest: bytes
    signature: bytes

    def verify(self, verify_key: bytes) -> None:
        """Raise IntegrityError unless ``verify_key`` signed header and body."""
        _verify(verify_key, self.digest, self.signature)


def signing_digest(signed: bytes | memoryview) -> bytes:
    """What the Ed25519 signature covers: SHA-256 of header and body."""
    return hashlib.sha256(signed).digest()


def _verify(verify_key: bytes, digest: bytes, signature: bytes) -> None:
    if len(verify_key) != 32 or len(signature) != SIGNATURE_BYTES:
        raise IntegrityError("bad signature or key length")
    try:
        # The binding directly: a VerifyKey object per check costs more than the check's tail.
        nacl.bindings.crypto_sign_open(signature + digest, verify_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, TypeError) as exc:
        raise IntegrityError("bad signature") from exc


def _counted(entries: list[bytes]) -> bytes:
    return _U32.pack(len(entries)) + b"".join(entries)


def _body(msg: Message) -> bytes:
    if isinstance(msg, RoundConfig):
        head = _CONFIG.pack(
            len(msg.participants),
            msg.degree,
            msg.threshold,
            msg.quant_bits,
            msg.ring_bits,
            0,
            msg.max_weight,
            msg.clip,
            msg.vector_len,
            msg.graph_seed,
            msg.model_version,
            msg.model_sha256,
        )
        parts = b"".join(_PARTICIPANT.pack(p.pid, p.identity_key) for p in msg.participants)
        return head + parts + encode_block(msg.noise)
    if isinstance(msg, AdvertiseKeys):
        return _check_len(msg.mask_public, 32) + _check_len(msg.enc_public, 32)
    if isinstance(msg, KeyList):
        return _counted(
            [_KEY_ENTRY.pack(e.pid, e.mask_public, e.enc_public, e.signature) for e in msg.entries]
        )
    if isinstance(msg, ShareKeys):
        return _counted([_sealed(s) for s in msg.shares])
    if isinstance(msg, SharesRelay):
        return _U32.pack(msg.recipient) + _counted([_sealed(s) for s in msg.shares])
    if isinstance(msg, MaskedInput):
        return _MASKED.pack(msg.ring_bits, 0, 0, msg.count) + msg.payload
    if isinstance(msg, UnmaskRequest):
        return _ids(msg.survivors) + _ids(msg.dropped)
    if isinstance(msg, UnmaskShares):
        return _shares(msg.seed_shares) + _shares(msg.key_shares)
    if isinstance(msg, RoundResult):
        reason = msg.reason.encode()
        return (
            _RESULT.pack(msg.status, len(reason), len(msg.included))
            + reason
            + b"".join(_U32.pack(p) for p in msg.included)
        )
    raise WireError(f"not a wire message: {type(msg).__name__}")


def _check_len(value: bytes, size: int) -> bytes:
    if len(value) != size:
        raise WireError(f"field must be {size} bytes, got {len(value)}")
    return value


def _sealed(share: SealedShare) -> bytes:
    return _SEALED.pack(share.peer, _check_len(share.sealed, SEALED_SHARE_BYTES))


def _ids(ids: tuple[int, ...]) -> bytes:
    return _U32.pack(len(ids)) + struct.pack(f"<{len(ids)}I", *ids)


def _shares(items: tuple[tuple[int, bytes], ...]) -> bytes:
    return _counted([_SHARE.pack(pid, _check_len(s, SHARE_BYTES)) for pid, s in items])


def encode(msg: Message, round_id: bytes, sender: int, key: nacl.signing.SigningKey) -> bytes:
    """Header, body and the sender's Ed25519 signature over both."""
    if len(round_id) != 16:
        raise WireError("round id must be 16 bytes")
    try:
        body = _body(msg)
        signed = HEADER.pack(MAGIC, WIRE_VERSION, _TYPE_OF[type(msg)], round_id, sender, len(body))
    except struct.error as exc:
        raise WireError(f"field out of range: {exc}") from exc
    if len(signed) + len(body) + SIGNATURE_BYTES > MAX_MESSAGE_BYTES:
        raise WireError("message exceeds MAX_MESSAGE_BYTES")
    signed += body
    return signed + key.sign(signing_digest(signed)).signature


def advertise_signed_bytes(
    round_id: bytes, pid: int, mask_public: bytes, enc_public: bytes
) -> bytes:
    """The exact bytes a gateway signed in its ADVERTISE_KEYS, rebuilt from a KEY_LIST entry."""
    body = mask_public + enc_public
    return HEADER.pack(MAGIC, WIRE_VERSION, MsgType.ADVERTISE_KEYS, round_id, pid, len(body)) + body


def verify_key_entry(round_id: bytes, entry: KeyEntry, identity_key: bytes) -> None:
    """Check that the owner's identity key signed this KEY_LIST entry for this round."""
    signed = advertise_signed_bytes(round_id, entry.pid, entry.mask_public, entry.enc_public)
    _verify(identity_key, signing_digest(signed), entry.signature)


class _Reader:
    """Bounds-checked cursor: every read is checked against the bytes that are really there."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> memoryview:
        if size < 0 or self.pos + size > len(self.data):
            raise WireError(f"truncated body: need {size} bytes at offset {self.pos}")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple[object, ...]:
        return fmt.unpack(self.take(fmt.size))

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def count(self, entry_size: int, limit: int = MAX_PARTICIPANTS) -> int:
        n = self.u32()
        if n > limit or n * entry_size > len(self.data) - self.pos:
            raise WireError(f"count {n} does not fit the {len(self.data) - self.pos} bytes left")
        return n

    def done(self) -> None:
        if self.pos != len(self.data):
            raise WireError(f"{len(self.data) - self.pos} trailing bytes in body")


def _parse(kind: MsgType, r: _Reader) -> Message:
    if kind is MsgType.ROUND_CONFIG:
        n, degree, t, qb, rb, _, maxw, clip, d, seed, model_version, model_sha = r.unpack(_CONFIG)
        if (
            not isinstance(n, int)
            or n > MAX_PARTICIPANTS
            or n * _PARTICIPANT.size >= len(r.data) - r.pos
        ):
            raise WireError("participant count does not match the body")
        parts = tuple(
            Participant(*_PARTICIPANT.unpack(r.take(_PARTICIPANT.size))) for _ in range(n)
        )
        noise = decode_block(r.take(len(r.data) - r.pos))
        cfg = RoundConfig(degree, t, qb, rb, maxw, clip, d, seed, parts,  # type: ignore[arg-type]
                          noise, model_version, model_sha)  # type: ignore[arg-type]
        cfg.validate()
        return cfg
    if kind is MsgType.ADVERTISE_KEYS:
        return AdvertiseKeys(bytes(r.take(32)), bytes(r.take(32)))
    if kind is MsgType.KEY_LIST:
        n = r.count(_KEY_ENTRY.size)
        return KeyList(
            tuple(KeyEntry(*_KEY_ENTRY.unpack(r.take(_KEY_ENTRY.size))) for _ in range(n))
        )
    if kind is MsgType.SHARE_KEYS:
        return ShareKeys(_read_sealed(r))
    if kind is MsgType.SHARES_RELAY:
        recipient = r.u32()
        return SharesRelay(recipient, _read_sealed(r))
    if kind is MsgType.MASKED_INPUT:
        ring_bits, encoding, _, count = r.unpack(_MASKED)
        assert isinstance(ring_bits, int) and isinstance(count, int)
        if encoding != 0 or not 1 <= ring_bits <= 32 or count > MAX_VECTOR_LEN + 1:
            raise WireError("masked input: bad encoding, width or count")
        if (count * ring_bits + 7) // 8 != len(r.data) - r.pos:
            raise WireError("masked input: payload length does not match count and width")
        return MaskedInput(ring_bits, count, r.take(len(r.data) - r.pos).toreadonly())
    if kind is MsgType.UNMASK_REQUEST:
        return UnmaskRequest(_read_ids(r), _read_ids(r))
    if kind is MsgType.UNMASK_SHARES:
        return UnmaskShares(_read_shares(r), _read_shares(r))
    status, reason_len, n = r.unpack(_RESULT)
    assert isinstance(reason_len, int) and isinstance(n, int) and isinstance(status, int)
    if status not in (0, 1) or n > MAX_PARTICIPANTS or reason_len + 4 * n != len(r.data) - r.pos:
        raise WireError("round result: bad status or lengths")
    try:
        reason = bytes(r.take(reason_len)).decode()
    except UnicodeDecodeError as exc:
        raise WireError("round result: reason is not UTF-8") from exc
    return RoundResult(status, struct.unpack(f"<{n}I", r.take(4 * n)), reason)


def _read_sealed(r: _Reader) -> tuple[SealedShare, ...]:
    n = r.count(_SEALED.size)
    return tuple(SealedShare(*_SEALED.unpack(r.take(_SEALED.size))) for _ in range(n))


def _read_ids(r: _Reader) -> tuple[int, ...]:
    n = r.count(4)
    return struct.unpack(f"<{n}I", r.take(4 * n))


def _read_shares(r: _Reader) -> tuple[tuple[int, bytes], ...]:
    n = r.count(_SHARE.size)
    out = []
    for _ in range(n):
        pid, share = _SHARE.unpack(r.take(_SHARE.size))
        out.append((pid, share))
    return tuple(out)


def decode(data: bytes) -> Envelope:
    """Parse one message; WireError for anything malformed. The signature is checked by verify()."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError(f"expected bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    if len(view) < HEADER_BYTES + SIGNATURE_BYTES or len(view) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(view)} bytes outside the allowed size")
    magic, version, kind, round_id, sender, body_len = HEADER.unpack(view[:HEADER_BYTES])
    if magic != MAGIC:
        raise WireError("bad magic")
    if version != WIRE_VERSION:
        raise WireError(f"wire version {version}, this build speaks {WIRE_VERSION}")
    if body_len != len(view) - HEADER_BYTES - SIGNATURE_BYTES:
        raise WireError("body length field does not match the message size")
    try:
        msg_type = MsgType(kind)
    except ValueError as exc:
        raise WireError(f"unknown message type {kind}") from exc
    reader = _Reader(view[HEADER_BYTES : HEADER_BYTES + body_len])
    try:
        message = _parse(msg_type, reader)
    except struct.error as exc:
        raise WireError(f"malformed {msg_type.name}: {exc}") from exc
    reader.done()
    signed_end = HEADER_BYTES + body_len
    return Envelope(
        version,
        msg_type,
        bytes(round_id),
        sender,
        message,
        signing_digest(view[:signed_end]),
        bytes(view[signed_end:]),
    )
