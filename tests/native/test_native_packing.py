"""Dense bit-packing: round trips at every width, the exact byte layout, canonical decoding."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from native import mask, packing
from native.errors import InputError, WireError


def _reference_pack(values: np.ndarray[Any, Any], bits: int) -> bytes:
    stream = 0
    for i, v in enumerate(values.tolist()):
        stream |= int(v) << (i * bits)
    return stream.to_bytes(packing.packed_size(len(values), bits), "little")


@pytest.mark.parametrize("bits", range(1, 33))
def test_round_trip_every_width(bits: int) -> None:
    rng = np.random.default_rng(bits)
    for n in (0, 1, 2, 3, 7, 8, 9, 31, 32, 33, 1000):
        values = rng.integers(0, 1 << bits, n, dtype=np.uint64).astype(mask.ring_dtype(bits))
        data = packing.pack(values, bits)
        assert len(data) == packing.packed_size(n, bits) == (n * bits + 7) // 8
        assert data == _reference_pack(values, bits)
        back = packing.unpack(data, n, bits)
        assert back.dtype == mask.ring_dtype(bits)
        np.testing.assert_array_equal(back, values)


@settings(max_examples=100, deadline=None)
@given(bits=st.integers(1, 32), n=st.integers(0, 600), tag=st.integers(0, 2**32))
def test_round_trip_property(bits: int, n: int, tag: int) -> None:
    values = (
        np.random.default_rng(tag)
        .integers(0, 1 << bits, n, dtype=np.uint64)
        .astype(mask.ring_dtype(bits))
    )
    data = packing.pack(values, bits)
    assert data == _reference_pack(values, bits)
    np.testing.assert_array_equal(packing.unpack(bytearray(data), n, bits), values)


def test_layout_is_lsb_first_little_endian() -> None:
    assert packing.pack(np.array([1, 2, 3, 4, 5], np.uint16), 3) == bytes([0xD1, 0x58])
    assert packing.pack(np.array([0x1234], np.uint16), 16) == b"\x34\x12"
    assert packing.pack(np.array([0x01020304], np.uint32), 32) == b"\x04\x03\x02\x01"
    assert packing.pack(np.array([0xAB, 0x01], np.uint16), 8) == b"\xab\x01"
    assert packing.pack(np.array([1], np.uint16), 1) == b"\x01"


def test_eight_bit_ring_for_256_participants_costs_two_bytes() -> None:
    ring = 8 + (256 - 1).bit_length()  # ring_bits_for(8, 256)
    assert packing.packed_size(10**6, ring) == 2 * 10**6


@pytest.mark.parametrize("bits", [1, 3, 8, 11, 15, 23, 31])
def test_values_that_do_not_fit_are_refused(bits: int) -> None:
    values = np.zeros(9, mask.ring_dtype(bits))
    values[5] = 1 << bits
    with pytest.raises(InputError):
        packing.pack(values, bits)


def test_non_canonical_or_wrong_length_data_is_a_wire_error() -> None:
    data = packing.pack(np.array([1, 2, 3], np.uint16), 3)  # 9 bits: 7 padding bits
    assert packing.unpack(data, 3, 3).tolist() == [1, 2, 3]
    with pytest.raises(WireError):
        packing.unpack(bytes([data[0], data[1] | 0x80]), 3, 3)
    with pytest.raises(WireError):
        packing.unpack(data + b"\x00", 3, 3)
    with pytest.raises(WireError):
        packing.unpack(data[:1], 3, 3)
    with pytest.raises(WireError):
        packing.unpack(b"", 1, 8)
