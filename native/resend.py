"""Resend requests from a gateway to a wearable: the payload of ``{DEVICE_ROOT}/{dev}/resend``.

A request is a plain array of little-endian uint32 frame sequence numbers (the header's ``seq``
field, wrapped as the device sends it), at least one and at most ``MAX_RESEND`` per message. No
header and no version byte: the message rides on its own topic, both ends are fixed by the frame
format's version, and a firmware can apply it with a loop over 4-byte words. Order is the order
the gateway wants the frames; a device ignores numbers it no longer holds in its window.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from native.errors import InputError, InputTypeError, WireError

#: Sequence numbers per request: the firmware's transmit window (64 frames) is all it can resend.
MAX_RESEND = 64
_U32 = struct.Struct("<I")


class ResendError(WireError):
    """A resend payload that does not decode; ``reason`` names the failed check."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"invalid resend request: {reason} ({detail})")
        self.reason = reason


def encode_resend(seqs: Iterable[int]) -> bytes:
    """The payload asking for ``seqs`` (1..MAX_RESEND uint32 values)."""
    values = list(seqs)
    if not 1 <= len(values) <= MAX_RESEND:
        raise InputError(f"a resend request holds 1..{MAX_RESEND} sequence numbers, "
                         f"got {len(values)}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise InputTypeError(f"sequence numbers must be ints, got {type(v).__name__}")
        if not 0 <= v <= 0xFFFF_FFFF:
            raise InputError(f"sequence number {v} is not a uint32")
    return struct.pack(f"<{len(values)}I", *values)


def decode_resend(data: object) -> list[int]:
    """The sequence numbers of a resend payload; ``ResendError`` with a reason otherwise."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ResendError("type", f"payload must be bytes, got {type(data).__name__}")
    n = len(data)
    if n == 0:
        raise ResendError("empty", "no sequence numbers")
    if n > 4 * MAX_RESEND:
        raise ResendError("oversize", f"{n} bytes, at most {4 * MAX_RESEND}")
    if n % 4:
        raise ResendError("length", f"{n} bytes is not a whole number of uint32")
    return [v for (v,) in _U32.iter_unpack(bytes(data))]
