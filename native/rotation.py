"""Randomized Hadamard rotation and conditional rounding for the distributed DP mechanisms.

Kairouz, Liu, Steinke (2021) and Agarwal, Kairouz, Liu (2021) flatten an update before it is
scaled and rounded onto the integer lattice: ``y = H D x / sqrt(d')`` with x zero-padded to the
next power of two d', D a diagonal of random signs and H the Walsh-Hadamard matrix. The rotation
is orthonormal (norms are kept) and spreads a spiky update over all coordinates, so clipping each
coordinate to [-clip, clip] in the quantizer, and the modular wrap of the ring, almost never bite.
The signs come from the ChaCha20 keystream (nonce ``FedgateRotat``) of a seed that all gateways
and the aggregator share for the round (it hides nothing; it only has to be independent of the
data). It must never be a noise seed, which stays secret to its gateway.

Conditional rounding keeps the L2 sensitivity of the *integer* vector bounded: the stochastic
rounding of ``native.quant.quantize`` is repeated with fresh seeds until the centered levels have
norm <= ``rounded_norm_bound(...)`` (Kairouz et al. 2021, Sec. 4.1).
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Any

import numpy as np

from native import _core, quant
from native._validate import (
    allocate,
    check_array,
    check_bits,
    check_int,
    check_length,
    check_positive_float,
    check_seed,
    core_call,
)
from native.errors import InputError, ProtocolError

__all__ = [
    "conditional_quantize",
    "padded_length",
    "rotate",
    "rounded_norm_bound",
    "unrotate",
]

logger = logging.getLogger(__name__)

_F32: list[np.dtype[Any]] = [np.dtype(np.float32)]


def padded_length(n: int) -> int:
    """The power of two >= n (1 for n = 0) that the rotation works on."""
    n = check_length(n)
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def rotate(x: np.ndarray[Any, Any], seed: bytes) -> np.ndarray[Any, Any]:
    """H D pad(x) / sqrt(d'): a new float32 vector of length ``padded_length(len(x))``."""
    x = check_array(x, "x", _F32)
    seed = check_seed(seed)
    if not np.isfinite(x).all():
        raise InputError("x contains NaN or Inf")
    out = allocate(padded_length(x.shape[0]), np.float32)
    out[: x.shape[0]] = x
    out[x.shape[0] :] = 0.0
    core_call(_core.flip_signs, seed, out)
    core_call(_core.fwht, out)
    return out


def unrotate(y: np.ndarray[Any, Any], seed: bytes, n: int) -> np.ndarray[Any, Any]:
    """The inverse of ``rotate``: D H y / sqrt(d'), truncated to the first n coordinates."""
    y = check_array(y, "y", _F32)
    seed = check_seed(seed)
    n = check_length(n)
    if y.shape[0] != padded_length(n):
        raise InputError(f"y has {y.shape[0]} elements, a rotation of {n} has {padded_length(n)}")
    out = y.copy()
    core_call(_core.fwht, out)
    core_call(_core.flip_signs, seed, out)
    return out[:n].copy()


def rounded_norm_bound(norm: float, dim: int, beta: float) -> float:
    """Bound on the L2 norm of the randomized rounding of a vector of L2 norm <= ``norm``.

    Kairouz, Liu, Steinke 2021, Eq. (10): with probability >= 1 - beta the rounding has squared
    norm <= norm^2 + d/4 + sqrt(2 log(1/beta)) (norm + sqrt(d)/2); never more than norm + sqrt(d).
    """
    norm = check_positive_float(norm, "norm")
    dim = check_int(dim, "dim")
    if dim < 1:
        raise InputError(f"dim must be >= 1, got {dim}")
    beta = check_positive_float(beta, "beta")
    if beta >= 1.0:
        raise InputError(f"beta must be in (0, 1), got {beta}")
    sq = norm**2 + dim / 4 + math.sqrt(2 * math.log(1 / beta)) * (norm + math.sqrt(dim) / 2)
    return min(math.sqrt(sq), norm + math.sqrt(dim))


def _retry_seed(seed: bytes, attempt: int) -> bytes:
    if attempt == 0:
        return seed
    tag = b"fedgate/conditional-rounding" + attempt.to_bytes(4, "little")
    return hashlib.blake2b(tag, key=seed, digest_size=32).digest()


def conditional_quantize(
    x: np.ndarray[Any, Any],
    clip: float,
    bits: int,
    seed: bytes,
    bound: float,
    *,
    ring_bits: int | None = None,
    max_tries: int = 100,
) -> np.ndarray[Any, Any]:
    """``quant.quantize`` repeated until the centered levels (q - top/2) have L2 norm <= bound.

    Attempt i uses the seed BLAKE2b(key=seed, "fedgate/conditional-rounding" || i) (attempt 0 uses
    ``seed`` itself), so the result is reproducible. Raises ProtocolError when ``max_tries``
    roundings all exceed the bound, which for ``rounded_norm_bound(.., beta)`` has probability
    beta^max_tries.
    """
    bits = check_bits(bits)
    bound = check_positive_float(bound, "bound")
    max_tries = check_int(max_tries, "max_tries")
    if max_tries < 1:
        raise InputError(f"max_tries must be >= 1, got {max_tries}")
    seed = check_seed(seed)
    half = ((1 << bits) - 1) / 2
    for attempt in range(max_tries):
        q = quant.quantize(x, clip, bits, _retry_seed(seed, attempt), ring_bits=ring_bits)
        if float(np.linalg.norm(q.astype(np.float64) - half)) <= bound:
            return q
    raise ProtocolError(f"no rounding within the norm bound {bound} after {max_tries} tries")
