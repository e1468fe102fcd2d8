"""Dense bit-packing of ring elements for the wire (C++ kernels).

Value i of a vector of ``bits``-wide elements occupies bits ``[i*bits, (i+1)*bits)`` of a
little-endian bit stream, where stream bit j is bit ``j % 8`` (LSB first) of byte ``j // 8``; the
last byte is padded with zero bits. Widths 8, 16 and 32 are therefore plain little-endian
uint8/uint16/uint32 arrays. ``unpack`` refuses anything but the one canonical encoding.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from native import _core
from native._validate import (
    allocate,
    check_array,
    check_bits,
    check_length,
    core_call,
    ring_dtype,
)
from native.errors import InputError, InputTypeError, WireError

__all__ = ["pack", "packed_size", "unpack"]

logger = logging.getLogger(__name__)


def packed_size(n: int, bits: int) -> int:
    """Bytes of n packed ``bits``-wide elements: ceil(n * bits / 8)."""
    n = check_length(n)
    bits = check_bits(bits)
    return (n * bits + 7) // 8


def pack(values: np.ndarray[Any, Any], bits: int) -> bytes:
    """The packed bytes of ``values`` (dtype ``ring_dtype(bits)``, every value < 2**bits)."""
    bits = check_bits(bits)
    values = check_array(values, "values", [ring_dtype(bits)])
    packed = core_call(_core.pack, values, bits)
    if packed is None:
        raise InputError(f"values do not fit in {bits} bits")
    assert isinstance(packed, bytes)
    return packed


def unpack(data: bytes | bytearray | memoryview, n: int, bits: int) -> np.ndarray[Any, Any]:
    """The n ``bits``-wide elements packed in ``data``, as ``ring_dtype(bits)``.

    ``data`` must be exactly ``packed_size(n, bits)`` bytes with zero padding bits; anything else
    is a WireError (it came from the network).
    """
    n = check_length(n)
    bits = check_bits(bits)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InputTypeError(f"data must be bytes, got {type(data).__name__}")
    view = memoryview(data)
    if not view.c_contiguous:
        raise InputTypeError("data must be a contiguous buffer")
    view = view.cast("B")
    expected = packed_size(n, bits)
    if view.nbytes != expected:
        raise WireError(f"{n} elements of {bits} bits take {expected} bytes, got {view.nbytes}")
    out = allocate(n, ring_dtype(bits))
    if not core_call(_core.unpack, view, bits, out):
        raise WireError("non-zero padding bits after the last element: not a canonical encoding")
    return out
