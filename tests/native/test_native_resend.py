"""Resend requests (gateway -> wearable): round trips, the firmware's limit, and garbage."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from native.errors import InputError, InputTypeError, WireError
from native.resend import MAX_RESEND, ResendError, decode_resend, encode_resend


@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=MAX_RESEND))
def test_round_trip(seqs: list[int]) -> None:
    data = encode_resend(seqs)
    assert data == struct.pack(f"<{len(seqs)}I", *seqs)  # plain little-endian u32, no header
    assert decode_resend(data) == seqs
    assert decode_resend(bytearray(data)) == seqs
    assert decode_resend(memoryview(data)) == seqs


def test_known_bytes() -> None:
    assert encode_resend([1, 0x01020304]) == b"\x01\x00\x00\x00\x04\x03\x02\x01"


@pytest.mark.parametrize("bad", [[], list(range(MAX_RESEND + 1)), [-1], [2**32]])
def test_encode_refuses_out_of_range(bad: list[int]) -> None:
    with pytest.raises(InputError):
        encode_resend(bad)


@pytest.mark.parametrize("bad", [[1.0], ["1"], [True], [None]])
def test_encode_refuses_wrong_types(bad: list[object]) -> None:
    with pytest.raises(InputTypeError):
        encode_resend(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("payload, reason", [
    (b"", "empty"), (b"\x01", "length"), (b"\x01\x00\x00", "length"), (b"\x00" * 5, "length"),
    (b"\x00" * (4 * MAX_RESEND + 4), "oversize"), (b"\x00" * (1 << 20), "oversize"),
    ("1234", "type"), (None, "type"), (1234, "type"), ([1, 2, 3, 4], "type"),
])
def test_garbage_is_a_resend_error_with_a_reason(payload: object, reason: str) -> None:
    with pytest.raises(ResendError) as exc:
        decode_resend(payload)
    assert exc.value.reason == reason and isinstance(exc.value, WireError)


@given(st.binary(max_size=4 * MAX_RESEND + 16))
def test_any_bytes_decode_or_raise_a_resend_error(data: bytes) -> None:
    try:
        seqs = decode_resend(data)
    except ResendError:
        return
    assert encode_resend(seqs) == data
