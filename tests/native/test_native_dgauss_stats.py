"""The discrete Gaussian samplers' distributions: single draws and the distributed n-gateway sum
against the exact pmf (chi-square and moments, with negative controls carrying 20% less noise),
the table sampler against the reference sampler, and the reference sampler (Canonne, Kamath,
Steinke) against its own Python rendering from the raw keystream."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from scipy import signal, stats

from native import mask, noise

Arr = np.ndarray[Any, Any]


def _seed(*parts: object) -> bytes:
    return hashlib.blake2b(repr(parts).encode(), digest_size=32).digest()


def _pmf(var: float, half: int) -> Arr:
    """The discrete Gaussian pmf on -half..half (the mass beyond is below float resolution)."""
    x = np.arange(-half, half + 1, dtype=np.float64)
    w: Arr = np.exp(-(x**2) / (2 * var))
    out: Arr = w / w.sum()
    return out


def _half(var: float) -> int:
    return int(15 * math.sqrt(var)) + 30


def _pvalue(samples: Arr, lo: int, pmf: Arr, bins: int = 120) -> float:
    """Chi-square p-value of integer samples against pmf on lo..lo+len-1, equal-mass bins."""
    cuts = np.unique(np.searchsorted(np.cumsum(pmf), np.linspace(0, 1, bins + 1)[1:-1]))
    expected = np.bincount(np.searchsorted(cuts, np.arange(len(pmf)), side="left"), weights=pmf)
    idx = samples.astype(np.int64) - lo
    assert idx.min() >= 0 and idx.max() < len(pmf)
    observed = np.bincount(np.searchsorted(cuts, idx, side="left"), minlength=len(expected))
    keep = expected > 0
    exp = expected[keep] / expected[keep].sum() * len(samples)
    return float(stats.chisquare(observed[keep], exp).pvalue)


def _moments_ok(samples: Arr, lo: int, pmf: Arr) -> bool:
    x = np.arange(lo, lo + len(pmf), dtype=np.float64)
    var = float((pmf * x**2).sum())
    mu4 = float((pmf * x**4).sum())
    n = len(samples)
    s = samples.astype(np.float64)
    return bool(
        abs(s.mean()) < 5 * math.sqrt(var / n)
        and abs(s.var() - var) < 5 * math.sqrt((mu4 - var**2) / n)
    )


TABLE_VARIANCES = [
    Fraction(1, 2),
    Fraction(1),
    Fraction(7, 3),
    Fraction(50),
    Fraction(2**18 - 1),
    Fraction(2**18),
    Fraction(10**6),
    Fraction(10**8),
    Fraction(2**32),
]


@pytest.mark.parametrize("var", TABLE_VARIANCES)
def test_single_draws_follow_the_exact_pmf(var: Fraction) -> None:
    x = noise.sample_dgauss(_seed("single", var), 200_000, var)
    half = _half(float(var))
    pmf = _pmf(float(var), half)
    assert _pvalue(x, -half, pmf) > 1e-4
    assert _moments_ok(x, -half, pmf)


def test_tiny_variance_is_all_zeros() -> None:
    # P(x != 0) = 2 exp(-2048) / Z at sigma^2 = 2^-12: every draw is 0.
    assert not noise.sample_dgauss(_seed("tiny"), 100_000, Fraction(1, 4096)).any()


@pytest.mark.parametrize("var", [Fraction(1), Fraction(10**6), Fraction(2**32)])
def test_chi_square_rejects_twenty_percent_less_noise(var: Fraction) -> None:
    x = noise.sample_dgauss(_seed("less", var), 200_000, var * Fraction(4, 5))
    half = _half(float(var))
    assert _pvalue(x, -half, _pmf(float(var), half)) < 1e-6


def _sum_pmf(var: float, gateways: int) -> tuple[int, Arr]:
    half = _half(var)
    one = _pmf(var, half)
    pmf = one
    for _ in range(gateways - 1):
        pmf = np.clip(signal.fftconvolve(pmf, one), 0.0, None)
    return -half * gateways, pmf / pmf.sum()


def _gateway_sum(gateways: int, share: Fraction, n: int, tag: str) -> Arr:
    bits = 28
    acc = np.zeros(n, np.uint32)
    for g in range(gateways):
        noise.add_dgauss_noise(acc, _seed(tag, g, share), share, bits)
    return noise.centered(acc, 0, bits)


@pytest.mark.parametrize(
    ("gateways", "share"),
    [
        (1, Fraction(3, 2)),
        (8, Fraction(1, 2)),
        (5, Fraction(20)),
        (10, Fraction(10**5)),
        (8, Fraction(2**20)),
    ],
)
def test_sum_over_gateways_matches_the_convolved_pmf(gateways: int, share: Fraction) -> None:
    # The sum of n discrete Gaussians is not a discrete Gaussian: the reference is the n-fold
    # convolution of the exact pmf.
    total = _gateway_sum(gateways, share, 60_000, "sum")
    lo, pmf = _sum_pmf(float(share), gateways)
    assert _pvalue(total, lo, pmf) > 1e-4
    assert _moments_ok(total, lo, pmf)


@pytest.mark.parametrize(("gateways", "share"), [(8, Fraction(1, 2)), (10, Fraction(10**5))])
def test_sum_with_twenty_percent_less_noise_fails(gateways: int, share: Fraction) -> None:
    total = _gateway_sum(gateways, share * Fraction(4, 5), 60_000, "less-sum")
    lo, pmf = _sum_pmf(float(share), gateways)
    assert _pvalue(total, lo, pmf) < 1e-6


@pytest.mark.parametrize("var", [Fraction(7, 3), Fraction(5000), Fraction(2**30)])
def test_table_and_reference_samplers_agree(var: Fraction) -> None:
    a = noise.sample_dgauss(_seed("two", var), 100_000, var)
    b = noise.sample_dgauss_cks(_seed("two", var), 100_000, var)
    cuts = np.quantile(np.concatenate([a, b]), np.linspace(0, 1, 41)[1:-1])
    cuts = np.unique(cuts)
    table = np.vstack(
        [np.bincount(np.searchsorted(cuts, s), minlength=len(cuts) + 1) for s in (a, b)]
    )
    assert stats.chi2_contingency(table).pvalue > 1e-4


@pytest.mark.parametrize("var", [Fraction(2**18 - 1), Fraction(2**18), Fraction(10**6)])
def test_zero_has_its_exact_frequency(var: Fraction) -> None:
    # x = 0 is the one value both signs propose: once counted (w = 1), or with the negative zero
    # rejected (w > 1). Counting it twice would double its frequency (about 50 standard errors).
    n = 4_000_000
    half = _half(float(var))
    p0 = float(_pmf(float(var), half)[half])
    zeros = int((noise.sample_dgauss(_seed("zero", var), n, var) == 0).sum())
    assert abs(zeros - n * p0) < 5 * math.sqrt(n * p0)


def test_within_bucket_shape_is_exact() -> None:
    # The slow path's exact tests shape the density inside each bucket of width w (the fast path
    # alone would make it flat). h(m) = (2 j w r + r^2) / (2 sigma^2), m = j w + r, is the
    # log-density drop from the bucket's start; its mean over 16M draws must match the exact pmf,
    # and the flat alternative is checked to sit far outside the tolerance (the test has power).
    var, w, n = 2.0**32, 256, 16_000_000
    assert noise.dgauss_table(2**32).omega == 8
    half = _half(var)
    m = np.arange(half + 1, dtype=np.float64)
    j, r = np.floor_divide(m, w), np.mod(m, w)
    h = (2 * j * w * r + r * r) / (2 * var)
    true = np.exp(-(m**2) / (2 * var))
    flat = np.exp(-((j * w) ** 2) / (2 * var))
    for p in (true, flat):
        p[1:] *= 2
        p /= p.sum()
    mean_true, mean_flat = float((true * h).sum()), float((flat * h).sum())
    se = math.sqrt(float((true * h * h).sum()) - mean_true**2) / math.sqrt(n)
    total = 0.0
    for chunk in range(4):
        x = np.abs(noise.sample_dgauss(_seed("shape", chunk), n // 4, 2**32))
        total += float(h[x].sum())
    assert abs(total / n - mean_true) < 4 * se
    assert abs(mean_flat - mean_true) > 6 * se


# ---- the reference sampler from the raw keystream (docs/privacy.md) ----------------------------


def _words(seed: bytes) -> Iterator[int]:
    counter = 0
    while True:
        block = mask.chacha20_keystream(seed, b"FedgateNoise", counter, 1024)
        counter += 16
        yield from (int.from_bytes(block[i : i + 8], "little") for i in range(0, 1024, 8))


def _uniform_below(words: Iterator[int], n: int) -> int:
    if n >= 2**64:
        bits = (n - 1).bit_length()
        while True:
            r = ((next(words) << 64) | next(words)) & ((1 << bits) - 1)
            if r < n:
                return r
    m = next(words) * n
    if m % 2**64 < n:
        threshold = (2**64 - n) % n
        while m % 2**64 < threshold:
            m = next(words) * n
    return m >> 64


def _bern(words: Iterator[int], num: int, den: int) -> bool:
    return num != 0 and _uniform_below(words, den) < num


def _bern_exp_unit(words: Iterator[int], num: int, den: int) -> bool:
    k = 1
    while _bern(words, num, den * k):
        k += 1
    return k % 2 == 1


def _bern_exp(words: Iterator[int], num: int, den: int) -> bool:
    # Unreduced num/den on purpose: the denominators decide how many words a trial consumes.
    for _ in range(num // den):
        if not _bern_exp_unit(words, 1, 1):
            return False
    return _bern_exp_unit(words, num % den, den)


def _cks_reference(seed: bytes, n: int, var: Fraction) -> tuple[list[int], int]:
    """(n draws, keystream words consumed)."""
    consumed = 0

    def counting() -> Iterator[int]:
        nonlocal consumed
        for w in _words(seed):
            consumed += 1
            yield w

    words = counting()
    a, b = var.numerator, var.denominator
    t = math.isqrt(a // b) + 1
    out: list[int] = []
    while len(out) < n:
        u = _uniform_below(words, t)
        if not _bern_exp_unit(words, u, t):
            continue
        v = 0
        while _bern_exp_unit(words, 1, 1):
            v += 1
        x = u + t * v
        neg = _uniform_below(words, 2) == 1
        if neg and x == 0:
            continue
        if _bern_exp(words, (x * b * t - a) ** 2, 2 * a * b * t * t):
            out.append(-x if neg else x)
    return out, consumed


@pytest.mark.parametrize("variance", [Fraction(1), Fraction(7, 3), Fraction(5000), Fraction(2**32)])
def test_reference_sampler_matches_its_documented_algorithm(variance: Fraction) -> None:
    seed = _seed("dg-ref", variance)
    got = noise.sample_dgauss_cks(seed, 300, variance).tolist()
    assert got == _cks_reference(seed, 300, variance)[0]
    assert np.array_equal(noise.sample_dgauss_cks(seed, 100, variance), got[:100])
    acc = np.zeros(300, np.uint32)
    noise.add_dgauss_noise_cks(acc, seed, variance, 32)
    assert noise.centered(acc, 0, 32).tolist() == got


def test_reference_cost_does_not_grow_with_the_variance() -> None:
    # Counted in keystream words, not time: draws at sigma^2 = 2^32 use about as many as at 10.
    big = _cks_reference(_seed("cost"), 300, Fraction(2**32))[1]
    small = _cks_reference(_seed("cost"), 300, Fraction(10))[1]
    assert big < 3 * small
