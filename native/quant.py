"""Clipping and stochastic quantization of float32 model updates into Z_2^k (C++ kernels).

``quantize`` maps each value, clipped to [-clip, clip], onto the levels 0 .. 2**bits - 1 with
``step = 2 * clip / (2**bits - 1)`` and rounds down or up at random so that the expected level is
the exact one (unbiased to 2^-48 of a step); the randomness is the ChaCha20 keystream of ``seed``:
one uint16 word per element, compared with the top 16 bits of the fraction, and on a tie (one
element in 2^16) a uint32 word of the same key's keystream from block 2^31 on. A quantization is
reproducible from its seed; docs/native.md states the arithmetic bit for bit. Use a seed for
quantization that is never used as a mask seed.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from native import _core
from native._validate import (
    MAX_BITS,
    allocate,
    check_array,
    check_bits,
    check_int,
    check_positive_float,
    check_seed,
    core_call,
    ring_dtype,
)
from native.errors import InputError

__all__ = ["clip_l2", "dequantize", "l2_norm", "quantize", "ring_bits_for"]

logger = logging.getLogger(__name__)

_F32: list[np.dtype[Any]] = [np.dtype(np.float32)]
_RING: list[np.dtype[Any]] = [np.dtype(np.uint16), np.dtype(np.uint32)]


def l2_norm(x: np.ndarray[Any, Any]) -> float:
    """Euclidean norm of a float32 vector, accumulated in double; NaN/Inf input is an InputError."""
    x = check_array(x, "x", _F32)
    norm = float(core_call(_core.l2_norm, x))
    if not math.isfinite(norm):
        raise InputError("x contains NaN or Inf")
    return norm


def clip_l2(x: np.ndarray[Any, Any], max_norm: float) -> tuple[np.ndarray[Any, Any], float]:
    """(a float32 copy of x scaled so its L2 norm is <= max_norm, the norm of x).

    Vectors already within ``max_norm`` (the zero vector included) are copied unchanged; longer
    ones are scaled by about max_norm / norm, nudged down if float32 rounding would overshoot.
    """
    x = check_array(x, "x", _F32)
    max_norm = check_positive_float(max_norm, "max_norm")
    out = allocate(x.shape[0], np.float32)
    norm = float(core_call(_core.clip_l2, x, out, max_norm))
    if not math.isfinite(norm):
        raise InputError("x contains NaN or Inf")
    return out, norm


def ring_bits_for(bits: int, max_participants: int) -> int:
    """The ring width k = bits + ceil(log2(max_participants)) whose sum of a round never wraps."""
    bits = check_bits(bits)
    participants = check_int(max_participants, "max_participants")
    if participants < 1:
        raise InputError(f"max_participants must be >= 1, got {participants}")
    ring = bits + (participants - 1).bit_length()
    if ring > MAX_BITS:
        raise InputError(
            f"{participants} participants at {bits} bits need a {ring}-bit ring (max {MAX_BITS})"
        )
    return ring


def quantize(
    x: np.ndarray[Any, Any],
    clip: float,
    bits: int,
    seed: bytes,
    *,
    ring_bits: int | None = None,
) -> np.ndarray[Any, Any]:
    """Levels 0 .. 2**bits - 1 of clip(x) by unbiased stochastic rounding, as ring elements.

    The result has dtype ``ring_dtype(ring_bits or bits)`` (ring_bits >= bits leaves room for the
    sum of a round). Deterministic given ``seed``; NaN/Inf in x is an InputError.
    """
    x = check_array(x, "x", _F32)
    clip = check_positive_float(clip, "clip")
    bits = check_bits(bits)
    seed = check_seed(seed)
    ring = bits if ring_bits is None else check_bits(ring_bits, "ring_bits", lo=bits)
    if not (math.isfinite(2.0 * clip) and math.isfinite(((1 << bits) - 1) / (2.0 * clip))):
        # The scale would overflow and the levels be NaN: no meaningful quantization exists.
        raise InputError(f"clip {clip!r} is out of range for {bits}-bit levels")
    out = allocate(x.shape[0], ring_dtype(ring))
    non_finite = core_call(_core.quantize, x, clip, bits, seed, out)
    if non_finite:
        raise InputError(f"x contains {non_finite} NaN or Inf values")
    return out


def dequantize(
    total: np.ndarray[Any, Any], count: int, clip: float, bits: int
) -> np.ndarray[Any, Any]:
    """The float32 estimate of the SUM of ``count`` original vectors from their ring sum.

    ``total`` is the element-wise sum (mod 2**k, which must not have wrapped) of ``count`` outputs
    of ``quantize(..., clip, bits, ...)``. Returns ``total * step - count * clip`` with
    ``step = 2 * clip / (2**bits - 1)``, computed in double and rounded once to float32. Totals
    above ``count * (2**bits - 1)`` cannot come from such a sum and raise InputError.
    """
    total = check_array(total, "total", _RING)
    count = check_int(count, "count")
    clip = check_positive_float(clip, "clip")
    bits = check_bits(bits, hi=8 * total.dtype.itemsize)
    levels = (1 << bits) - 1
    if count < 1:
        raise InputError(f"count must be >= 1, got {count}")
    if count * levels > 2**32 - 1:
        raise InputError(f"{count} vectors of {bits}-bit levels cannot be summed in a 32-bit ring")
    out = allocate(total.shape[0], np.float32)
    impossible = core_call(_core.dequantize, total, count, clip, bits, out)
    if impossible:
        raise InputError(
            f"{impossible} totals exceed {count} * {levels}: the ring sum wrapped or is not a sum "
            f"of {count} quantized vectors"
        )
    return out
