"""Masks of secure aggregation: the ChaCha20 mask PRG and arithmetic in Z_2^bits.

A mask is ``expand(seed, n, bits)``: the ChaCha20-IETF keystream of ``seed`` (nonce
``b"LibsodiumDRG"``, counter 0 -- libsodium's ``randombytes_buf_deterministic``) read as
little-endian uint16 (bits <= 16) or uint32 words, each reduced mod 2**bits (DESIGN.md fixed choice
1). Privacy rests on the seeds: they must come from the key agreement, never from numpy's RNG.
All heavy work runs in C++ with the GIL released; this module validates every argument first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from native import _core
from native._validate import (
    allocate,
    check_array,
    check_bits,
    check_int,
    check_length,
    check_seed,
    check_seeds,
    core_call,
    ring_dtype,
)
from native.errors import InputError, InputTypeError, ResourceError

__all__ = [
    "add_masks",
    "apply_masks",
    "chacha20_keystream",
    "expand",
    "ring_add",
    "ring_dtype",
    "ring_sub",
    "ring_sum",
    "subtract_masks",
]

logger = logging.getLogger(__name__)

MAX_KEYSTREAM_BYTES = 1 << 33  # raw keystream helper; the masks are capped by element count
MAX_ROWS = 1 << 20


def expand(seed: bytes, n: int, bits: int) -> np.ndarray[Any, Any]:
    """The n ring elements of ``seed``'s mask in Z_2^bits, as ``ring_dtype(bits)``."""
    seed = check_seed(seed)
    n = check_length(n)
    bits = check_bits(bits)
    out = allocate(n, ring_dtype(bits))
    core_call(_core.expand, seed, bits, out)
    return out


def _check_acc(acc: object, bits: int, name: str = "acc") -> np.ndarray[Any, Any]:
    return check_array(acc, name, [ring_dtype(bits)], writable=True)


def apply_masks(
    acc: np.ndarray[Any, Any],
    add_seeds: Sequence[bytes],
    subtract_seeds: Sequence[bytes],
    bits: int,
) -> None:
    """In place: acc += sum(expand(add)) - sum(expand(subtract)) mod 2**bits.

    One streaming pass: each chunk of ``acc`` stays in cache while every seed's keystream for that
    chunk is generated into a small buffer, so no n-sized mask is ever materialized.
    """
    bits = check_bits(bits)
    acc = _check_acc(acc, bits)
    add = check_seeds(add_seeds, "add_seeds")
    sub = check_seeds(subtract_seeds, "subtract_seeds")
    if add or sub:
        core_call(_core.apply_masks, acc, add, sub, bits)


def add_masks(acc: np.ndarray[Any, Any], seeds: Sequence[bytes], bits: int) -> None:
    """In place: acc += sum(expand(s, len(acc), bits) for s in seeds) mod 2**bits."""
    apply_masks(acc, seeds, [], bits)


def subtract_masks(acc: np.ndarray[Any, Any], seeds: Sequence[bytes], bits: int) -> None:
    """In place: acc -= sum(expand(s, len(acc), bits) for s in seeds) mod 2**bits."""
    apply_masks(acc, [], seeds, bits)


def _check_pair(
    acc: object, v: object, bits: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    bits = check_bits(bits)
    acc_arr = _check_acc(acc, bits)
    v_arr = check_array(v, "v", [ring_dtype(bits)])
    if v_arr.shape != acc_arr.shape:
        raise InputError(f"v has length {v_arr.shape[0]}, acc has {acc_arr.shape[0]}")
    return acc_arr, v_arr


def ring_add(acc: np.ndarray[Any, Any], v: np.ndarray[Any, Any], bits: int) -> None:
    """In place: acc = acc + v mod 2**bits."""
    acc, v = _check_pair(acc, v, bits)
    core_call(_core.ring_add, acc, v, bits)


def ring_sub(acc: np.ndarray[Any, Any], v: np.ndarray[Any, Any], bits: int) -> None:
    """In place: acc = acc - v mod 2**bits."""
    acc, v = _check_pair(acc, v, bits)
    core_call(_core.ring_sub, acc, v, bits)


def _rows_of(vectors: object, dtype: np.dtype[Any]) -> tuple[list[np.ndarray[Any, Any]], int]:
    if isinstance(vectors, np.ndarray):
        matrix = check_array(vectors, "vectors", [dtype], ndim=2)
        return list(matrix), matrix.shape[1]
    if isinstance(vectors, bytes | bytearray | str) or not isinstance(vectors, Sequence):
        raise InputTypeError("vectors must be a 2-D array or a sequence of 1-D arrays")
    if not vectors:
        raise InputError("ring_sum of an empty sequence: the vector length is unknown")
    if len(vectors) > MAX_ROWS:
        raise ResourceError(f"{len(vectors)} vectors exceed the limit of {MAX_ROWS}")
    rows = [check_array(v, f"vectors[{i}]", [dtype]) for i, v in enumerate(vectors)]
    n_cols = rows[0].shape[0]
    for i, row in enumerate(rows):
        if row.shape[0] != n_cols:
            raise InputError(f"vectors[{i}] has length {row.shape[0]}, vectors[0] has {n_cols}")
    return rows, n_cols


def ring_sum(
    vectors: np.ndarray[Any, Any] | Sequence[np.ndarray[Any, Any]], bits: int
) -> np.ndarray[Any, Any]:
    """The element-wise sum mod 2**bits of an (m, n) array or of m equal-length vectors.

    Returns a new ``ring_dtype(bits)`` vector of length n. An empty sequence has no length to
    infer and is refused; an array of shape (0, n) sums to zeros.
    """
    bits = check_bits(bits)
    rows, n_cols = _rows_of(vectors, ring_dtype(bits))
    if len(rows) > MAX_ROWS:
        raise ResourceError(f"{len(rows)} vectors exceed the limit of {MAX_ROWS}")
    out = allocate(n_cols, ring_dtype(bits))
    core_call(_core.ring_sum, rows, out, bits)
    return out


def chacha20_keystream(key: bytes, nonce: bytes, counter: int, nbytes: int) -> bytes:
    """Raw ChaCha20-IETF keystream (RFC 8439) from block ``counter``: for known-answer tests.

    The 32-bit block counter must not pass 2**32 - 1 within the requested bytes.
    """
    key = check_seed(key, "key")
    if not isinstance(nonce, bytes):
        raise InputTypeError(f"nonce must be bytes, got {type(nonce).__name__}")
    if len(nonce) != 12:
        raise InputError(f"nonce must be exactly 12 bytes, got {len(nonce)}")
    counter = check_int(counter, "counter")
    nbytes = check_int(nbytes, "nbytes")
    if not 0 <= counter < 2**32:
        raise InputError(f"counter must be in 0..2**32-1, got {counter}")
    if nbytes < 0:
        raise InputError(f"nbytes must be >= 0, got {nbytes}")
    if nbytes > MAX_KEYSTREAM_BYTES:
        raise ResourceError(f"nbytes = {nbytes} exceeds the limit of {MAX_KEYSTREAM_BYTES}")
    if counter + (nbytes + 63) // 64 > 2**32:
        raise InputError("keystream would run past block counter 2**32 - 1 of this nonce")
    return core_call(_core.chacha20_keystream, key, nonce, counter, nbytes)
