"""Exact Skellam noise: the documented algorithm, distribution of the distributed sum, determinism,
SIMD bit-identity, modular decoding, the Hadamard rotation, and garbage on every entry point (the
discrete Gaussian samplers have test_native_dgauss.py and test_native_dgauss_stats.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from scipy import stats

from native import _core, mask, noise, quant, rotation
from native.errors import InputError, InputTypeError, ProtocolError, ResourceError


def _seed(*parts: object) -> bytes:
    return hashlib.blake2b(repr(parts).encode(), digest_size=32).digest()


# ---- an independent Python rendering of docs/privacy.md's sampler -----------------------------


def _words(seed: bytes) -> Iterator[int]:
    counter = 0
    while True:
        block = mask.chacha20_keystream(seed, b"FedgateNoise", counter, 1024)
        counter += 16
        yield from (int.from_bytes(block[i : i + 8], "little") for i in range(0, 1024, 8))


def _uniform_below(words: Iterator[int], n: int) -> int:
    m = next(words) * n
    if m % 2**64 < n:
        threshold = (2**64 - n) % n
        while m % 2**64 < threshold:
            m = next(words) * n
    return m >> 64


def _poisson(words: Iterator[int], lam: Fraction) -> int:
    if lam == 0:
        return 0
    pieces = -(-2 * lam.numerator // lam.denominator)
    a, b = lam.numerator, lam.denominator * pieces
    total = 0
    for _ in range(pieces):
        while True:
            k = 0
            while _uniform_below(words, b) < a:
                k += 1
            if all(_uniform_below(words, j) < 1 for j in range(2, k + 1)):
                break
        total += k
    return total


def _reference(seed: bytes, n: int, variance: Fraction) -> list[int]:
    words = _words(seed)
    out = []
    for _ in range(n):
        p1 = _poisson(words, variance / 2)
        out.append(p1 - _poisson(words, variance / 2))
    return out


@pytest.mark.parametrize("variance", [Fraction(3), Fraction(7, 5), Fraction(1, 1000), Fraction(9)])
def test_sampler_matches_the_documented_algorithm(variance: Fraction) -> None:
    seed = _seed("reference", variance)
    assert noise.sample(seed, 300, variance).tolist() == _reference(seed, 300, variance)


def test_deterministic_by_seed_and_prefix_stable() -> None:
    a = noise.sample(_seed("d"), 5000, 4)
    assert np.array_equal(a, noise.sample(_seed("d"), 5000, 4))
    assert np.array_equal(a[:1234], noise.sample(_seed("d"), 1234, 4))
    assert not np.array_equal(a, noise.sample(_seed("e"), 5000, 4))


def test_zero_variance_adds_nothing() -> None:
    assert not noise.sample(_seed("z"), 100, 0).any()


@pytest.mark.parametrize("bits", [1, 5, 16, 17, 32])
def test_add_noise_is_the_sample_mod_ring(bits: int) -> None:
    dtype = mask.ring_dtype(bits)
    rng = np.random.default_rng(bits)
    acc = rng.integers(0, 2**bits, 4099, dtype=np.uint64).astype(dtype)
    expected = (acc.astype(np.int64) + noise.sample(_seed("add", bits), 4099, 50)) % 2**bits
    noise.add_noise(acc, _seed("add", bits), 50, bits)
    assert np.array_equal(acc.astype(np.int64), expected)


def _skellam_pmf_test(total: np.ndarray[Any, Any], variance: float) -> float:
    """Chi-square p-value of integer samples against Sk(variance) (tails pooled)."""
    dist = stats.skellam(variance / 2, variance / 2)
    lo, hi = int(dist.ppf(1e-4)), int(dist.isf(1e-4))
    edges = np.arange(lo, hi + 2)
    counts = np.array(
        [(total < lo).sum()] + [(total == k).sum() for k in edges[:-1]] + [(total > hi).sum()]
    )
    probs = np.concatenate([[dist.cdf(lo - 1)], dist.pmf(edges[:-1]), [dist.sf(hi)]])
    return float(stats.chisquare(counts, probs * len(total)).pvalue)


@pytest.mark.parametrize(
    ("gateways", "variance"), [(10, Fraction(6)), (7, Fraction(40)), (3, Fraction(1, 2))]
)
def test_sum_over_gateways_is_the_target_skellam(gateways: int, variance: Fraction) -> None:
    n = 60_000
    bits = 20
    acc = np.zeros(n, np.uint32)
    for g in range(gateways):
        noise.add_noise(acc, _seed("gw", g, variance), variance / gateways, bits)
    total = noise.centered(acc, 0, bits)
    var = float(variance)
    # Mean within 5 standard errors, variance within 5 standard errors of the sample variance
    # (fourth moment of Sk(mu) is 3 mu^2 + mu), and the whole pmf by chi-square.
    assert abs(total.mean()) < 5 * np.sqrt(var / n)
    assert abs(total.var() - var) < 5 * np.sqrt((2 * var**2 + var) / n)
    assert _skellam_pmf_test(total, var) > 1e-4


def test_chi_square_rejects_the_wrong_variance() -> None:
    # The statistical test itself has power: a sum carrying 20% less noise fails it.
    total = noise.sample(_seed("power"), 60_000, Fraction(24, 5))
    assert _skellam_pmf_test(total, 6.0) < 1e-6


_LEVEL_SCRIPT = """
import hashlib, numpy as np
from native import _core, noise, rotation
out = noise.sample(bytes(range(32)), 20000, 7)
out = np.concatenate([out, noise.sample_dgauss(bytes(range(32)), 20000, 12345)])
x = np.linspace(-1, 1, 3000, dtype=np.float32)
r = rotation.rotate(x, bytes(32))
print(_core.simd_level(), hashlib.sha256(out.tobytes() + r.tobytes()).hexdigest())
"""


def test_every_simd_level_is_bit_identical() -> None:
    seen = {}
    for level in ("scalar", "avx2", "avx512", "neon"):
        env = dict(os.environ, FEDGATE_SIMD=level)
        proc = subprocess.run(
            [sys.executable, "-c", _LEVEL_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        got_level, digest = proc.stdout.split()
        seen[got_level] = digest
    assert "scalar" in seen and _core.simd_level() in seen
    assert len(set(seen.values())) == 1


def test_centered_wraps_to_the_nearest_representative() -> None:
    total = np.array([0, 1, 65535, 32768, 32767, 100], np.uint16)
    assert noise.centered(total, 100, 16).tolist() == [-100, -99, -101, 32668, 32667, 0]


# ---- discrete Gaussian (the samplers and their statistics: test_native_dgauss*.py) -----------


@pytest.mark.parametrize(
    ("variance", "error"),
    [
        (0, InputError),
        (-1, InputError),
        (float("nan"), InputError),
        (float("inf"), InputError),
        (2**32 + 1, InputError),
        (Fraction(1, 2**13), InputError),
        ("2", InputTypeError),
        (None, InputTypeError),
    ],
)
def test_dgauss_bad_variance(variance: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        noise.sample_dgauss(_seed("g"), 4, variance)
    with pytest.raises(error):
        noise.add_dgauss_noise(np.zeros(4, np.uint32), _seed("g"), variance, 32)


def test_dgauss_bad_buffers_and_core() -> None:
    with pytest.raises(InputTypeError):
        noise.add_dgauss_noise(np.zeros(4, np.uint32), _seed("g"), 2, 16)
    with pytest.raises(InputTypeError):
        noise.sample_dgauss(b"x" * 32, 2.0, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        _core.dgauss_sample(bytes(32), 0, 1, np.empty(2, np.int64))
    with pytest.raises(ValueError):
        _core.dgauss_sample(bytes(32), 1, 2**13, np.empty(2, np.int64))


# ---- rotation --------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 1000, 4096, 70001])
def test_rotation_is_orthonormal_and_invertible(n: int) -> None:
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    y = rotation.rotate(x, _seed("rot"))
    assert y.shape == (rotation.padded_length(n),)
    assert np.isclose(np.linalg.norm(y), np.linalg.norm(x), rtol=1e-5)
    back = rotation.unrotate(y, _seed("rot"), n)
    assert np.allclose(back, x, atol=1e-5 * max(1.0, float(np.abs(x).max())))


def test_rotation_signs_follow_the_documented_stream() -> None:
    # Bit i % 8 of byte i / 8 of the keystream (nonce FedgateRotat) flips coordinate i; 20 001
    # coordinates cross the kernel's 8192-sign chunks.
    seed, n = _seed("signs"), 20_001
    stream = np.frombuffer(
        mask.chacha20_keystream(seed, b"FedgateRotat", 0, (n + 7) // 8), np.uint8
    )
    bits = (stream[np.arange(n) // 8] >> (np.arange(n) % 8)) & 1
    y = np.ones(n, np.float32)
    _core.flip_signs(seed, y)
    assert np.array_equal(y, np.where(bits == 1, -1.0, 1.0).astype(np.float32))
    # and rotate() is exactly the normalized Walsh-Hadamard transform of the signed, padded x
    x = np.random.default_rng(5).standard_normal(8).astype(np.float64)
    signs = np.where(
        (
            np.frombuffer(mask.chacha20_keystream(seed, b"FedgateRotat", 0, 1), np.uint8)[0]
            >> np.arange(8)
        )
        & 1,
        -1.0,
        1.0,
    )
    h = np.array([[1.0]])
    for _ in range(3):
        h = np.block([[h, h], [h, -h]])
    expected = h @ (signs * x) / np.sqrt(8)
    assert np.allclose(rotation.rotate(x.astype(np.float32), seed), expected, atol=1e-5)


def test_rotation_spreads_a_spike() -> None:
    x = np.zeros(4096, np.float32)
    x[17] = 64.0
    y = rotation.rotate(x, _seed("spike"))
    assert np.allclose(np.abs(y), 1.0)
    signs = np.sign(rotation.rotate(np.ones(4096, np.float32), _seed("spike")))
    assert not np.array_equal(
        signs, np.sign(rotation.rotate(np.ones(4096, np.float32), _seed("x")))
    )


def test_conditional_quantize_respects_the_bound() -> None:
    x = rotation.rotate(
        np.random.default_rng(1).standard_normal(5000).astype(np.float32), _seed("c")
    )
    x *= np.float32(0.2 / np.linalg.norm(x))
    clip, bits = 0.05, 8
    scale = (2**bits - 1) / (2 * clip)
    bound = rotation.rounded_norm_bound(0.2 * scale, x.shape[0], 1e-3)
    q = rotation.conditional_quantize(x, clip, bits, _seed("cq"), bound)
    assert np.linalg.norm(q.astype(np.float64) - 127.5) <= bound
    assert np.array_equal(q, quant.quantize(x, clip, bits, _seed("cq")))  # attempt 0 kept
    with pytest.raises(ProtocolError):
        rotation.conditional_quantize(x, clip, bits, _seed("cq"), 1.0, max_tries=3)


# ---- garbage -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variance", "error"),
    [
        (-1, InputError),
        (Fraction(-1, 3), InputError),
        (float("nan"), InputError),
        (float("inf"), InputError),
        (-0.5, InputError),
        (2**22, InputError),
        (1e300, InputError),
        (0.1, InputError),  # not an exact rational with a small denominator
        (Fraction(1, 2**30), InputError),
        ("3", InputTypeError),
        (True, InputTypeError),
        (None, InputTypeError),
        (np.array([1.0]), InputTypeError),
        (3 + 0j, InputTypeError),
    ],
)
def test_bad_variance(variance: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        noise.sample(_seed("g"), 4, variance)
    with pytest.raises(error):
        noise.add_noise(np.zeros(4, np.uint16), _seed("g"), variance, 16)


@pytest.mark.parametrize(
    ("seed", "error"),
    [
        (b"x" * 31, InputError),
        (b"x" * 33, InputError),
        ("x" * 32, InputTypeError),
        (bytearray(32), InputTypeError),
        (None, InputTypeError),
    ],
)
def test_bad_seed(seed: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        noise.sample(seed, 4, 1)  # type: ignore[arg-type]
    with pytest.raises(error):
        noise.add_noise(np.zeros(4, np.uint16), seed, 1, 16)  # type: ignore[arg-type]
    with pytest.raises(error):
        rotation.rotate(np.zeros(4, np.float32), seed)  # type: ignore[arg-type]


def test_bad_arrays_and_sizes() -> None:
    s = _seed("b")
    with pytest.raises(InputTypeError):
        noise.add_noise(np.zeros(4, np.uint32), s, 1, 16)  # wrong ring dtype
    with pytest.raises(InputTypeError):
        noise.add_noise(np.zeros(4, np.int64), s, 1, 32)
    with pytest.raises(InputTypeError):
        noise.add_noise([0, 0], s, 1, 16)  # type: ignore[arg-type]
    ro = np.zeros(4, np.uint16)
    ro.flags.writeable = False
    with pytest.raises(InputTypeError):
        noise.add_noise(ro, s, 1, 16)
    with pytest.raises(InputTypeError):
        noise.add_noise(np.zeros(8, np.uint16)[::2], s, 1, 16)
    with pytest.raises(InputError):
        noise.add_noise(np.zeros(4, np.uint16), s, 1, 0)
    with pytest.raises(InputError):
        noise.add_noise(np.zeros(4, np.uint32), s, 1, 33)
    with pytest.raises(InputError):
        noise.sample(s, -1, 1)
    with pytest.raises(InputTypeError):
        noise.sample(s, 2.0, 1)  # type: ignore[arg-type]
    with pytest.raises(ResourceError):
        noise.sample(s, 2**40, 1)
    with pytest.raises(InputTypeError):
        noise.centered(np.zeros(3, np.uint16), 1.5, 16)  # type: ignore[arg-type]
    with pytest.raises(InputTypeError):
        rotation.rotate(np.zeros(4, np.float64), s)
    with pytest.raises(InputError):
        rotation.rotate(np.array([np.nan], np.float32), s)
    with pytest.raises(InputError):
        rotation.unrotate(np.zeros(8, np.float32), s, 3)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(InputError):
            rotation.rounded_norm_bound(bad, 10, 0.01)
    with pytest.raises(InputError):
        rotation.rounded_norm_bound(1.0, 10, 1.5)
    with pytest.raises(InputError):
        rotation.rounded_norm_bound(1.0, 0, 0.1)


def test_core_refuses_out_of_range_parameters_directly() -> None:
    out = np.empty(3, np.int64)
    with pytest.raises(ValueError):
        _core.skellam_sample(bytes(32), 1, 0, out)
    with pytest.raises(ValueError):
        _core.skellam_sample(bytes(32), 2**50, 1, out)
    with pytest.raises(ValueError):
        _core.skellam_add(np.zeros(3, np.uint16), bytes(32), 1, 1, 17)
    with pytest.raises(ValueError):
        _core.fwht(np.zeros(3, np.float32))
    with pytest.raises(TypeError):
        _core.skellam_sample(bytes(32), 1, 1, np.empty(3, np.int32))
