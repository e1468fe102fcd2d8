"""Shamir sharing over GF(2^61 - 1): recovery from any t shares, field arithmetic, garbage in."""

from __future__ import annotations

import itertools
import os
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from native import _core, shamir
from native.errors import InputError, InputTypeError, IntegrityError

P = shamir.PRIME


def test_prime_matches_core() -> None:
    assert int(_core.shamir_prime) == P == 2**61 - 1


def test_split_known_answer_linear_polynomial() -> None:
    # f(x) = s + a x mod p, evaluated by the kernel and by Python integers.
    secret = np.array([5, P - 1, 0, 123456789, 2**56 - 1], dtype=np.uint64)
    coeffs = np.array([[7, P - 2, 1, 2**60, 3]], dtype=np.uint64)
    xs = np.array([1, 2, 2**32 - 1], dtype=np.uint64)
    out = _core.shamir_split(secret, coeffs, xs)
    for i, x in enumerate(xs.tolist()):
        for c in range(5):
            assert int(out[i, c]) == (int(secret[c]) + int(coeffs[0, c]) * x) % P


def test_lagrange_and_combine_match_python_integers() -> None:
    rnd = random.Random(1)
    xs = rnd.sample(range(1, 2**32), 9)
    lam = _core.shamir_lagrange(np.array(xs, dtype=np.uint64))
    for i, xi in enumerate(xs):
        num = den = 1
        for j, xj in enumerate(xs):
            if i != j:
                num, den = num * xj % P, den * (xj - xi) % P
        assert int(lam[i]) == num * pow(den, P - 2, P) % P


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), data=st.data())
def test_any_threshold_subset_recovers(n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    xs = data.draw(st.lists(st.integers(1, 2**32 - 1), min_size=n, max_size=n, unique=True))
    secret = os.urandom(32)
    shares = shamir.split(secret, t, xs)
    assert all(len(s) == shamir.SHARE_BYTES for s in shares)
    pick = data.draw(st.lists(st.sampled_from(range(n)), min_size=t, max_size=n, unique=True))
    assert shamir.combine([xs[i] for i in pick], [shares[i] for i in pick], t) == secret


def test_hundred_holders_two_secrets() -> None:
    a, b = os.urandom(32), os.urandom(32)
    xs = list(range(1, 101))
    shares = shamir.split_many([a, b], 51, xs)
    assert shamir.combine_many(xs[49:], shares[49:], 51, 2) == [a, b]


def test_fewer_than_threshold_shares_do_not_recover() -> None:
    secret = os.urandom(32)
    xs = list(range(1, 8))
    shares = shamir.split(secret, 4, xs)
    for combo in itertools.combinations(range(7), 3):
        try:
            got = shamir.combine([xs[i] for i in combo], [shares[i] for i in combo], 3)
        except IntegrityError:
            continue  # out-of-range chunk: also not the secret
        assert got != secret


def test_t_minus_one_shares_are_uniform_whatever_the_secret() -> None:
    # With t = 2 a single share is s + a x with a uniform: its low byte is uniform for any secret.
    counts = np.zeros(256)
    for _ in range(4096):
        share = shamir.split(bytes(32), 2, [3, 9])[0]
        counts[share[0]] += 1
    expected = 4096 / 256
    assert ((counts - expected) ** 2 / expected).sum() < 361


def test_corrupted_share_detected_with_spare_shares() -> None:
    secret = os.urandom(32)
    xs = list(range(1, 7))
    shares = shamir.split(secret, 3, xs)
    bad = bytearray(shares[5])
    bad[0] ^= 1
    with pytest.raises(IntegrityError):
        shamir.combine(xs, [*shares[:5], bytes(bad)], 3)


@pytest.mark.parametrize(
    ("xs", "shares", "t", "err"),
    [
        ([1, 1], [bytes(40)] * 2, 2, InputError),
        ([0, 1], [bytes(40)] * 2, 2, InputError),
        ([1, 2**32], [bytes(40)] * 2, 2, InputError),
        ([1, 2], [bytes(40)], 1, InputError),
        ([1, 2], [bytes(39), bytes(40)], 2, InputError),
        ([1, 2], ["x" * 40, bytes(40)], 2, InputTypeError),
        ([1, 2], [b"\xff" * 40, bytes(40)], 2, IntegrityError),
        ([1, 2], [bytes(40)] * 2, 3, IntegrityError),
        ([], [], 1, InputError),
        (["1", 2], [bytes(40)] * 2, 2, InputTypeError),
    ],
)
def test_combine_rejects_garbage(xs: list, shares: list, t: int, err: type) -> None:
    with pytest.raises(err):
        shamir.combine(xs, shares, t)


@pytest.mark.parametrize(
    ("secret", "t", "xs", "err"),
    [
        (bytes(31), 1, [1], InputError),
        ("a" * 32, 1, [1], InputTypeError),
        (bytes(32), 0, [1], InputError),
        (bytes(32), 3, [1, 2], InputError),
        (bytes(32), 1, [1, 1], InputError),
        (bytes(32), 1, [True], InputTypeError),
    ],
)
def test_split_rejects_garbage(secret: object, t: int, xs: list, err: type) -> None:
    with pytest.raises(err):
        shamir.split(secret, t, xs)  # type: ignore[arg-type]


def test_core_rejects_duplicate_x() -> None:
    with pytest.raises(ValueError, match="distinct"):
        _core.shamir_lagrange(np.array([4, 4], dtype=np.uint64))
