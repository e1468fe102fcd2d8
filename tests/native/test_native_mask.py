"""Masking and ring arithmetic: the secure-aggregation identities, checked against numpy."""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from native import mask
from native.errors import InputError


def _seed(*parts: object) -> bytes:
    return hashlib.blake2b(repr(parts).encode(), digest_size=32).digest()


def _ref_expand(seed: bytes, n: int, bits: int) -> np.ndarray[Any, Any]:
    return mask.expand(seed, n, bits).astype(np.uint64)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=3000),
    bits=st.integers(min_value=1, max_value=32),
    participants=st.integers(min_value=2, max_value=6),
    tag=st.integers(min_value=0, max_value=2**32),
)
def test_sum_of_masked_minus_masks_is_sum_of_inputs(
    n: int, bits: int, participants: int, tag: int
) -> None:
    modulus = 1 << bits
    rng = np.random.default_rng(tag)
    dtype = mask.ring_dtype(bits)
    inputs = [
        rng.integers(0, modulus, n, dtype=np.uint64).astype(dtype) for _ in range(participants)
    ]
    self_seeds = [_seed(tag, "self", i) for i in range(participants)]
    pair = {
        (i, j): _seed(tag, "pair", i, j)
        for i in range(participants)
        for j in range(i + 1, participants)
    }
    masked = []
    for i, x in enumerate(inputs):
        y = x.copy()
        up = [pair[(i, j)] for j in range(i + 1, participants)]
        down = [pair[(j, i)] for j in range(i)]
        mask.apply_masks(y, [self_seeds[i], *up], down, bits)
        masked.append(y)
    total = mask.ring_sum(masked, bits)  # pairwise masks cancel in the sum
    mask.subtract_masks(total, self_seeds, bits)
    expected = sum(x.astype(np.uint64) for x in inputs) % modulus if n else np.zeros(0)
    np.testing.assert_array_equal(total, np.asarray(expected, dtype=np.uint64).astype(dtype))


@pytest.mark.parametrize("bits", [1, 7, 16, 17, 31, 32])
@pytest.mark.parametrize("n", [0, 1, 2047, 2048, 2049, 5000])
def test_fused_masks_equal_separate_expansions(bits: int, n: int) -> None:
    modulus = 1 << bits
    dtype = mask.ring_dtype(bits)
    start = (np.arange(n, dtype=np.uint64) * 2654435761 % modulus).astype(dtype)
    add = [_seed("a", k) for k in range(3)]
    sub = [_seed("s", k) for k in range(2)]
    acc = start.copy()
    mask.apply_masks(acc, add, sub, bits)
    want = start.astype(np.uint64) + sum(
        (_ref_expand(s, n, bits) for s in add), np.zeros(n, np.uint64)
    )
    want = (
        want
        + 2 * modulus * len(sub)
        - sum((_ref_expand(s, n, bits) for s in sub), np.zeros(n, np.uint64))
    )
    np.testing.assert_array_equal(acc, (want % modulus).astype(dtype))
    again = start.copy()
    mask.add_masks(again, add, bits)
    mask.subtract_masks(again, sub, bits)
    np.testing.assert_array_equal(again, acc)


def test_masks_reduce_an_out_of_range_accumulator() -> None:
    acc = np.full(100, 0xFFFF, dtype=np.uint16)
    mask.apply_masks(acc, [], [], 4)  # no seeds: left untouched
    assert (acc == 0xFFFF).all()
    mask.add_masks(acc, [_seed("x")], 4)
    assert int(acc.max()) < 16
    np.testing.assert_array_equal(acc, (mask.expand(_seed("x"), 100, 4).astype(np.int64) + 15) % 16)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=2000),
    bits=st.integers(min_value=1, max_value=32),
    tag=st.integers(min_value=0, max_value=2**32),
)
def test_ring_add_sub_match_numpy(n: int, bits: int, tag: int) -> None:
    modulus = 1 << bits
    rng = np.random.default_rng(tag)
    dtype = mask.ring_dtype(bits)
    a = rng.integers(0, modulus, n, dtype=np.uint64)
    b = rng.integers(0, modulus, n, dtype=np.uint64)
    acc = a.astype(dtype)
    mask.ring_add(acc, b.astype(dtype), bits)
    np.testing.assert_array_equal(acc, ((a + b) % modulus).astype(dtype))
    mask.ring_sub(acc, b.astype(dtype), bits)
    np.testing.assert_array_equal(acc, a.astype(dtype))
    mask.ring_sub(acc, acc, bits)  # aliasing is fine
    assert not acc.any()


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(min_value=1, max_value=37),
    n=st.integers(min_value=0, max_value=5000),
    bits=st.integers(min_value=1, max_value=32),
    tag=st.integers(min_value=0, max_value=2**32),
)
def test_ring_sum_matches_numpy(m: int, n: int, bits: int, tag: int) -> None:
    modulus = 1 << bits
    dtype = mask.ring_dtype(bits)
    rows = np.random.default_rng(tag).integers(0, modulus, (m, n), dtype=np.uint64)
    want = (rows.sum(axis=0) % modulus).astype(dtype)
    matrix = rows.astype(dtype)
    np.testing.assert_array_equal(mask.ring_sum(matrix, bits), want)
    np.testing.assert_array_equal(mask.ring_sum(list(matrix), bits), want)
    np.testing.assert_array_equal(mask.ring_sum(tuple(r.copy() for r in matrix), bits), want)


def test_ring_sum_edges() -> None:
    assert mask.ring_sum(np.zeros((0, 5), np.uint32), 20).tolist() == [0] * 5
    with pytest.raises(InputError):
        mask.ring_sum([], 8)
    with pytest.raises(InputError):
        mask.ring_sum([np.zeros(3, np.uint16), np.zeros(4, np.uint16)], 8)
    big = np.full((300, 10), 0xFFFFFFFF, dtype=np.uint32)
    assert mask.ring_sum(big, 32).tolist() == [(300 * 0xFFFFFFFF) % 2**32] * 10


def test_expand_is_deterministic_and_seed_sensitive() -> None:
    a = mask.expand(_seed(1), 1000, 32)
    assert (a == mask.expand(_seed(1), 1000, 32)).all()
    assert (a != mask.expand(_seed(2), 1000, 32)).mean() > 0.99
    # a prefix of a longer expansion is the shorter expansion
    assert (mask.expand(_seed(1), 333, 32) == a[:333]).all()


def _spins_while(fn: Callable[[], object]) -> int:
    """How often this thread gets to run Python while another thread runs ``fn``.

    With a long switch interval a thread holding the GIL is never preempted in the middle of a
    C call, so a call that keeps the GIL lets this loop run only after it has returned.
    """
    started = threading.Event()

    def work() -> None:
        started.set()
        fn()

    old = sys.getswitchinterval()
    sys.setswitchinterval(0.5)
    try:
        worker = threading.Thread(target=work)
        worker.start()
        started.wait()
        spins = 0
        while worker.is_alive():
            spins += 1
        worker.join()
    finally:
        sys.setswitchinterval(old)
    return spins


def test_kernels_release_the_gil() -> None:
    acc = np.zeros(1 << 20, np.uint32)
    seeds = [_seed("gil", k) for k in range(64)]  # ~256 MB of keystream in one call
    assert _spins_while(lambda: sum(range(3_000_000))) < 1_000  # control: a call holding the GIL
    assert _spins_while(lambda: mask.add_masks(acc, seeds, 32)) > 1_000
    assert acc.any()
