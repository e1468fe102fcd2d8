"""Shamir secret sharing of 32-byte secrets over GF(2^61 - 1), with the arithmetic in C++.

A secret is cut into five little-endian chunks of 7 bytes (the last one 4 bytes), each a field
element below 2^56, and every chunk gets its own random polynomial of degree ``threshold - 1``.
The share of participant ``x`` is the five values f_c(x), written as five little-endian uint64
(40 bytes). The x-coordinate of a share is the participant id of its holder (1 <= x < 2^32),
never transmitted inside the share itself. Coefficients come from ``os.urandom`` (the OS CSPRNG),
rejection-sampled into the field, so any ``threshold - 1`` shares are independent of the secret.
"""

from __future__ import annotations

import functools
import hmac
import os
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from native import _core
from native.errors import InputError, InputTypeError, IntegrityError

__all__ = [
    "CHUNKS",
    "PRIME",
    "SECRET_BYTES",
    "SHARE_BYTES",
    "combine",
    "combine_many",
    "split",
    "split_many",
]

PRIME = (1 << 61) - 1
SECRET_BYTES = 32
CHUNK_BYTES = 7
CHUNKS = 5
SHARE_BYTES = 8 * CHUNKS
MAX_SHARES = 1 << 16
_MAX_X = 1 << 32
_LIMITS = [1 << 56] * (CHUNKS - 1) + [1 << (8 * (SECRET_BYTES - CHUNK_BYTES * (CHUNKS - 1)))]

U64Array = npt.NDArray[np.uint64]


def _secret_to_chunks(secret: bytes) -> list[int]:
    if not isinstance(secret, bytes | bytearray):
        raise InputTypeError(f"secret must be bytes, got {type(secret).__name__}")
    if len(secret) != SECRET_BYTES:
        raise InputError(f"secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    return [
        int.from_bytes(secret[i : i + CHUNK_BYTES], "little")
        for i in range(0, SECRET_BYTES, CHUNK_BYTES)
    ]


def _chunks_to_secret(values: U64Array) -> bytes:
    out = bytearray()
    for c, value in enumerate(values.tolist()):
        if value >= _LIMITS[c]:
            # A chunk out of range means the shares do not lie on one polynomial of this degree.
            raise IntegrityError("shares do not reconstruct a valid secret (inconsistent shares)")
        width = min(CHUNK_BYTES, SECRET_BYTES - c * CHUNK_BYTES)
        out += value.to_bytes(width, "little")
    return bytes(out)


def _check_xs(xs: Sequence[int]) -> U64Array:
    if len(xs) == 0 or len(xs) > MAX_SHARES:
        raise InputError(f"need 1..{MAX_SHARES} x-coordinates, got {len(xs)}")
    if not all(type(x) is int for x in xs):
        raise InputTypeError("x-coordinates must be ints")
    if min(xs) < 1 or max(xs) >= _MAX_X:
        raise InputError("x-coordinates must lie in 1 .. 2^32 - 1")
    if len(set(xs)) != len(xs):
        raise InputError("x-coordinates must be distinct")
    return np.asarray(xs, dtype=np.uint64)


def _random_field(count: int) -> U64Array:
    """Uniform field elements from the OS CSPRNG by rejection sampling of 61-bit words."""
    words = np.frombuffer(os.urandom(8 * count), dtype=np.uint64) & np.uint64(PRIME)
    bad = np.flatnonzero(words == np.uint64(PRIME))
    while bad.size:
        fresh = np.frombuffer(os.urandom(8 * bad.size), dtype=np.uint64) & np.uint64(PRIME)
        words[bad] = fresh
        bad = bad[fresh == np.uint64(PRIME)]
    return words


def split_many(secrets: Sequence[bytes], threshold: int, xs: Sequence[int]) -> list[bytes]:
    """Share several 32-byte secrets at once: entry i is the concatenated shares held by xs[i].

    Each entry is ``len(secrets) * SHARE_BYTES`` bytes, the shares in the order of ``secrets``.
    """
    xs_arr = _check_xs(xs)
    if not isinstance(threshold, int) or not 1 <= threshold <= len(xs):
        raise InputError(f"threshold must be in 1..{len(xs)}, got {threshold!r}")
    if not 1 <= len(secrets) <= 16:
        raise InputError("split_many takes 1..16 secrets")
    flat = np.asarray([c for s in secrets for c in _secret_to_chunks(s)], dtype=np.uint64)
    degree = threshold - 1
    coeffs = _random_field(degree * flat.size).reshape(degree, flat.size)
    try:
        values = _core.shamir_split(flat, coeffs, xs_arr)
        return [row.tobytes() for row in values]
    finally:
        # Best effort: the polynomials determine the secrets, so they do not outlive the call.
        flat.fill(0)
        coeffs.fill(0)


def split(secret: bytes, threshold: int, xs: Sequence[int]) -> list[bytes]:
    """Shares of one 32-byte secret for the holders ``xs``; any ``threshold`` of them recover it."""
    return split_many([secret], threshold, xs)


def _share_matrix(shares: Sequence[bytes], n_secrets: int) -> U64Array:
    width = n_secrets * SHARE_BYTES
    if not all(isinstance(share, bytes | bytearray) for share in shares):
        raise InputTypeError("shares must be bytes")
    if set(map(len, shares)) != {width}:
        raise InputError(f"each share must be {width} bytes")
    ys = np.frombuffer(b"".join(shares), dtype="<u8").astype(np.uint64)
    if np.any(ys >= np.uint64(PRIME)):
        raise IntegrityError("share value outside the field")
    # (holders, secrets, chunks) -> (secrets, holders, chunks) for the kernel.
    return np.ascontiguousarray(ys.reshape(len(shares), n_secrets, CHUNKS).transpose(1, 0, 2))


def combine_many(
    xs: Sequence[int], shares: Sequence[bytes], threshold: int, n_secrets: int = 1
) -> list[bytes]:
    """Recover ``n_secrets`` secrets from shares (as made by :func:`split_many`) held by ``xs``.

    Uses the first ``threshold`` shares; when more are given, a second interpolation from the last
    ``threshold`` shares must agree (checked in constant time), which catches a corrupted share.
    """
    xs_arr = _check_xs(xs)
    if len(shares) != len(xs):
        raise InputError(f"{len(xs)} x-coordinates but {len(shares)} shares")
    if not isinstance(threshold, int) or not 1 <= threshold <= len(xs):
        raise IntegrityError(f"need at least {threshold} shares, got {len(xs)}")
    ys = _share_matrix(shares, n_secrets)
    first = _interpolate(xs_arr[:threshold], ys[:, :threshold])
    if len(xs) > threshold:
        second = _interpolate(xs_arr[-threshold:], ys[:, -threshold:])
        if not hmac.compare_digest(first.tobytes(), second.tobytes()):
            raise IntegrityError("shares are inconsistent: two subsets give different secrets")
    return [_chunks_to_secret(first[s]) for s in range(n_secrets)]


@functools.lru_cache(maxsize=256)
def _lagrange(xs: bytes) -> U64Array:
    # Holder sets repeat across the owners of a round (always, in the complete graph): reuse.
    lam: U64Array = _core.shamir_lagrange(np.frombuffer(xs, dtype=np.uint64).copy())
    lam.setflags(write=False)
    return lam


def _interpolate(xs: U64Array, ys: U64Array) -> U64Array:
    lam = _lagrange(np.ascontiguousarray(xs).tobytes())
    return np.asarray(_core.shamir_combine(lam, np.ascontiguousarray(ys)), dtype=np.uint64)


def combine(xs: Sequence[int], shares: Sequence[bytes], threshold: int) -> bytes:
    """Recover one 32-byte secret from at least ``threshold`` shares held by ``xs``."""
    return combine_many(xs, shares, threshold, 1)[0]
