"""Decoding the noisy ring sum of a distributed-DP round back into a float vector.

Each gateway of a DP round sends ``q_i + z_i mod 2^k``: ``q_i`` the conditional rounding of its
rotated update onto levels 0..top (``top = 2^b - 1``), ``z_i`` its integer noise share. The ring
sum over the ``n`` survivors is ``sum q_i + sum z_i mod 2^k``; every level vector is centered at
``top / 2``, and the centered sum ``sum (q_i - top/2) + sum z_i`` is what the privacy analysis
covers.
``native.noise.centered`` maps the ring value, less ``n * top / 2``, to its representative around
zero (the papers' modular clipping), and one quantization step per level turns it back into the
rotated float domain, where the inverse rotation gives the estimate of the sum of the clipped
updates (plus the noise, spread evenly by the rotation).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from native import noise, rotation
from native._validate import check_bits, check_int, check_positive_float
from native.errors import InputError

__all__ = ["noisy_sum"]

log = logging.getLogger(__name__)


def noisy_sum(
    total: np.ndarray[Any, Any],
    count: int,
    clip: float,
    quant_bits: int,
    ring_bits: int,
    rotation_seed: bytes,
    vector_len: int,
) -> np.ndarray[Any, Any]:
    """Estimate (float32, ``vector_len`` values) of the sum of ``count`` clipped updates."""
    bits = check_bits(quant_bits)
    count = check_int(count, "count")
    clip = check_positive_float(clip, "clip")
    if count < 1:
        raise InputError(f"count must be >= 1, got {count}")
    top = (1 << bits) - 1
    if total.shape != (rotation.padded_length(vector_len),):
        raise InputError(f"noisy total has shape {total.shape}, the rotation of {vector_len} "
                         f"values has {rotation.padded_length(vector_len)}")
    offset = count * top
    # count * top / 2 may be a half-integer: subtract its integer part in the ring, the half here.
    levels = noise.centered(total, offset // 2, ring_bits).astype(np.float64) - (offset % 2) / 2
    rotated = (levels * (2.0 * clip / top)).astype(np.float32)
    out: np.ndarray[Any, Any] = rotation.unrotate(rotated, rotation_seed, vector_len)
    return out
