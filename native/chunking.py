"""Transport frames: the fixed header, chunking, reassembly and the dedup window.

A frame is a fixed 104-byte little-endian header followed by a slice of one application payload.
The header carries the idempotency key (round, sender, sequence), the chunk position and the
sha256 of the whole payload; the receiver checks every limit before it keeps a byte and the
digest before it hands a payload on. No network code here: ``native.transport`` drives it.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from native import topics
from native.errors import ConfigError, InputError, WireError

MAGIC = b"FGMT"
VERSION = 1
# magic, version, flags, sender_len, reserved, round, sequence, index, count, total, offset,
# sha256(payload), sender (NUL padded)
HEADER = struct.Struct("<4sBBBBQQIIII32s32s")
MAX_SEQUENCE = 2**64 - 1

MessageKey = tuple[int, str, int]


class FrameRejected(WireError):
    """A frame or a reassembled message was refused; ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    """Sizes the receiver enforces before allocating, and the sender's chunk size."""

    chunk_size: int = 256 * 1024
    max_chunks: int = 4096
    max_message: int = 64 * 1024 * 1024
    max_pending_streams: int = 256
    max_pending_bytes: int = 256 * 1024 * 1024
    pending_timeout_s: float = 300.0
    dedup_window: int = 65536

    def __post_init__(self) -> None:
        if not 1 <= self.chunk_size <= 2**31:
            raise ConfigError(f"chunk_size must be in [1, 2**31], got {self.chunk_size}")
        if not 1 <= self.max_chunks <= 2**32 - 1 or not 1 <= self.max_message <= 2**32 - 1:
            raise ConfigError("max_chunks and max_message must be in [1, 2**32 - 1]")
        if self.pending_timeout_s <= 0 or self.dedup_window < 1 or self.max_pending_streams < 1:
            raise ConfigError("pending_timeout_s, dedup_window, max_pending_streams must be > 0")


@dataclass(frozen=True)
class FrameHeader:
    """The decoded fixed header of one frame."""

    round_id: int
    sender: str
    sequence: int
    index: int
    count: int
    total: int
    offset: int
    digest: bytes

    @property
    def key(self) -> MessageKey:
        return (self.round_id, self.sender, self.sequence)


@dataclass(frozen=True)
class Delivery:
    """One complete, verified, first-seen application message."""

    topic: str
    payload: bytes
    round_id: int
    sender: str
    sequence: int
    retained: bool


def encode_frames(
    payload: bytes, *, round_id: int, sender: str, sequence: int, chunk_size: int
) -> list[bytes]:
    """Split ``payload`` into transport frames of at most ``chunk_size`` payload bytes each."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise InputError(f"payload must be bytes, got {type(payload).__name__}")
    data = bytes(payload)
    topics.check_round(round_id)
    sender_raw = topics.check_id(sender, "sender").encode("ascii")
    if isinstance(sequence, bool) or not isinstance(sequence, int):
        raise InputError(f"sequence must be an int, got {type(sequence).__name__}")
    if not 0 <= sequence <= MAX_SEQUENCE:
        raise InputError(f"sequence must be an int in [0, 2**64 - 1], got {sequence!r}")
    if len(data) > 2**32 - 1:
        raise InputError(f"payload of {len(data)} bytes exceeds the 4 GiB frame limit")
    count = max(1, -(-len(data) // chunk_size))
    digest = hashlib.sha256(data).digest()
    out = []
    for index in range(count):
        offset = index * chunk_size
        head = HEADER.pack(
            MAGIC, VERSION, 0, len(sender_raw), 0, round_id, sequence,
            index, count, len(data), offset, digest, sender_raw,
        )
        out.append(head + data[offset : offset + chunk_size])
    return out


def decode_header(frame: bytes, limits: Limits) -> tuple[FrameHeader, bytes]:
    """Decode and check one frame's header against ``limits``; return it with the body."""
    if not isinstance(frame, bytes | bytearray):
        raise FrameRejected("bad_type", f"frame must be bytes, got {type(frame).__name__}")
    if len(frame) < HEADER.size:
        raise FrameRejected("truncated", f"{len(frame)} bytes is shorter than the header")
    (magic, version, flags, sender_len, reserved, round_id, sequence, index, count, total,
     offset, digest, sender_raw) = HEADER.unpack_from(frame)
    if magic != MAGIC:
        raise FrameRejected("bad_magic", f"magic {magic!r}")
    if version != VERSION:
        raise FrameRejected("bad_version", f"frame version {version}, expected {VERSION}")
    if flags or reserved or not 1 <= sender_len <= topics.MAX_ID_LEN:
        raise FrameRejected("bad_header", "nonzero reserved bits or bad sender length")
    if any(sender_raw[sender_len:]) or round_id > topics.MAX_ROUND_ID:
        raise FrameRejected("bad_header", "sender padding or round id out of range")
    try:
        sender = topics.check_id(sender_raw[:sender_len].decode("ascii"), "sender")
    except (UnicodeDecodeError, ValueError):
        raise FrameRejected("bad_header", "sender is not a valid id") from None
    if count < 1 or count > limits.max_chunks:
        raise FrameRejected("too_many_chunks", f"{count} chunks, limit {limits.max_chunks}")
    if total > limits.max_message:
        raise FrameRejected("too_large", f"{total} bytes, limit {limits.max_message}")
    body = bytes(frame[HEADER.size :])
    if index >= count or offset + len(body) > total or (not body and total and count > 1):
        raise FrameRejected("bad_offset", f"chunk {index}/{count} at {offset}+{len(body)}/{total}")
    header = FrameHeader(round_id, sender, sequence, index, count, total, offset, digest)
    return header, body


@dataclass
class _Stream:
    header: FrameHeader
    started: float
    chunks: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class Reassembler:
    """Collects chunks per idempotency key; returns the payload once complete and verified."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._streams: dict[MessageKey, _Stream] = {}
        self._pending_bytes = 0

    @property
    def pending(self) -> int:
        return len(self._streams)

    def feed(self, header: FrameHeader, body: bytes) -> bytes | None:
        """Add one chunk; raise ``FrameRejected`` for a bad one, return the payload when done."""
        if header.count == 1:
            return _verify(header, [(header.offset, body)])
        stream = self._streams.get(header.key)
        if stream is None:
            stream = self._open(header)
        first = stream.header
        if (first.count, first.total, first.digest) != (header.count, header.total, header.digest):
            self._drop(header.key)
            raise FrameRejected("chunk_mismatch", "chunk disagrees with its stream's header")
        if header.index in stream.chunks:
            same = stream.chunks[header.index] == body
            raise FrameRejected("duplicate_chunk" if same else "chunk_conflict", f"{header.key}")
        if self._pending_bytes + len(body) > self.limits.max_pending_bytes:
            self._drop(header.key)
            raise FrameRejected("pending_limit", "reassembly memory limit reached")
        stream.chunks[header.index] = body
        stream.size += len(body)
        self._pending_bytes += len(body)
        if len(stream.chunks) < first.count:
            return None
        self._drop(header.key)
        parts = [(header_offset, chunk) for header_offset, chunk in _ordered(stream)]
        return _verify(first, parts)

    def expire(self) -> list[MessageKey]:
        """Drop streams older than the pending timeout (a chunk was lost); return their keys."""
        cutoff = self._clock() - self.limits.pending_timeout_s
        stale = [key for key, stream in self._streams.items() if stream.started < cutoff]
        for key in stale:
            self._drop(key)
        return stale

    def _open(self, header: FrameHeader) -> _Stream:
        if len(self._streams) >= self.limits.max_pending_streams:
            raise FrameRejected("pending_limit", "too many messages in reassembly")
        stream = _Stream(header, self._clock())
        self._streams[header.key] = stream
        return stream

    def _drop(self, key: MessageKey) -> None:
        stream = self._streams.pop(key, None)
        if stream is not None:
            self._pending_bytes -= stream.size


def _ordered(stream: _Stream) -> list[tuple[int, bytes]]:
    # Offsets are not stored per chunk: a chunk's offset was checked against its header on
    # arrival, and contiguity is re-derived here from the bodies in index order.
    out, offset = [], 0
    for index in range(stream.header.count):
        body = stream.chunks[index]
        out.append((offset, body))
        offset += len(body)
    return out


def _verify(header: FrameHeader, parts: list[tuple[int, bytes]]) -> bytes:
    if header.count == 1 and (header.offset != 0 or len(parts[0][1]) != header.total):
        raise FrameRejected("bad_offset", "single frame does not carry the whole payload")
    payload = b"".join(body for _, body in parts)
    if len(payload) != header.total:
        raise FrameRejected("bad_offset", f"chunks sum to {len(payload)}, not {header.total}")
    if not hmac.compare_digest(hashlib.sha256(payload).digest(), header.digest):
        raise FrameRejected("digest_mismatch", f"sha256 of message {header.key} does not match")
    return payload


class DedupWindow:
    """Remembers the last ``size`` delivered idempotency keys."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._keys: OrderedDict[MessageKey, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def add(self, key: MessageKey) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self.size:
            self._keys.popitem(last=False)
