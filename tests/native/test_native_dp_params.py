"""Noise parameters of a round: validation, per-gateway shares, the gateway's policy check, ring
width, and the full integer path (quantize, add a share, ring-sum, decode) being exact."""

from __future__ import annotations

import hashlib
import math
from fractions import Fraction

import numpy as np
import pytest

from native import mask, noise, quant
from native.dp_params import (
    GatewayPolicy,
    NoiseParams,
    add_round_noise,
    check_round_noise,
    l1_sensitivity_bound,
    noise_multiplier,
    ring_bits_with_noise,
    share_variance,
)
from native.errors import InputError, InputTypeError, ProtocolError


def _seed(*parts: object) -> bytes:
    return hashlib.blake2b(repr(parts).encode(), digest_size=32).digest()


def _params(**kw: object) -> NoiseParams:
    base: dict[str, object] = {
        "variance": Fraction(40_000),
        "threshold": 8,
        "l2_sensitivity": 100.0,
        "dim": 1024,
        "mechanism": "skellam",
    }
    base.update(kw)
    return NoiseParams(**base)  # type: ignore[arg-type]


def test_shares_sum_to_the_target_exactly() -> None:
    p = _params(variance=Fraction(1000, 3), threshold=7)
    assert share_variance(p) * 7 == p.variance
    assert share_variance(p) == Fraction(1000, 21)
    assert noise_multiplier(p) == pytest.approx(math.sqrt(1000 / 3) / 100)
    assert p.l1_sensitivity == min(32 * 100.0, 2 * 100.0**2)
    assert l1_sensitivity_bound(0.5, 10**6) == 0.5  # 2 * L2^2 wins for tiny vectors


def test_gateway_refuses_a_round_below_its_policy() -> None:
    policy = GatewayPolicy(min_noise_multiplier=1.5, min_threshold=5)
    ok = _params(variance=Fraction(150**2), threshold=5)  # z = 1.5 exactly
    assert check_round_noise(ok, policy) is ok
    with pytest.raises(ProtocolError, match="below this gateway's minimum"):
        check_round_noise(_params(variance=Fraction(149**2), threshold=5), policy)
    with pytest.raises(ProtocolError, match="threshold"):
        check_round_noise(_params(variance=Fraction(300**2), threshold=4), policy)
    with pytest.raises(ProtocolError):
        check_round_noise(None, policy)
    with pytest.raises(InputTypeError):
        check_round_noise({"variance": 10**6}, policy)
    with pytest.raises(InputTypeError):
        check_round_noise(ok, {"min_noise_multiplier": 1.0})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("variance", -1, InputError),
        ("variance", 0, InputError),
        ("variance", float("nan"), InputError),
        ("variance", float("inf"), InputError),
        ("variance", 10**30, InputError),
        ("variance", "100", InputTypeError),
        ("variance", Fraction(1, 3), InputError),  # 1/24 per gateway side: fine; 1/3 / 8 / 2 = 1/48
        ("threshold", 0, InputError),
        ("threshold", -3, InputError),
        ("threshold", 2.0, InputTypeError),
        ("threshold", True, InputTypeError),
        ("l2_sensitivity", 0.0, InputError),
        ("l2_sensitivity", -1.0, InputError),
        ("l2_sensitivity", float("nan"), InputError),
        ("l2_sensitivity", float("inf"), InputError),
        ("l2_sensitivity", "1", InputTypeError),
        ("dim", 0, InputError),
        ("dim", 1.5, InputTypeError),
        ("mechanism", "gaussian", InputError),
    ],
)
def test_bad_params(field: str, value: object, error: type[Exception]) -> None:
    if field == "variance" and value == Fraction(1, 3):
        # a share whose half has a denominator beyond the sampler's limit is refused up front
        with pytest.raises(error):
            _params(variance=Fraction(1, 3), threshold=2**23)
        return
    with pytest.raises(error):
        _params(**{field: value})


def test_bad_policy() -> None:
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(InputError):
            GatewayPolicy(min_noise_multiplier=bad)
    with pytest.raises(InputTypeError):
        GatewayPolicy(min_noise_multiplier="1")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        GatewayPolicy(min_noise_multiplier=1.0, min_threshold=0)


@pytest.mark.parametrize("mechanism", ["skellam", "ddg"])
def test_ring_bits_and_the_exact_integer_path(mechanism: str) -> None:
    # n gateways quantize, add their noise share, and the ring sum decodes (modular clipping)
    # to exactly sum(levels) - n * top / 2 + the sum of the noise draws.
    n, bits, d = 9, 8, 3000
    p = _params(variance=Fraction(600), threshold=6, dim=d, mechanism=mechanism)
    draw = noise.sample_dgauss if mechanism == "ddg" else noise.sample
    ring = ring_bits_with_noise(bits, n, p)
    assert ring >= quant.ring_bits_for(bits, n)
    rng = np.random.default_rng(3)
    acc = np.zeros(d, mask.ring_dtype(ring))
    levels = np.zeros(d, np.int64)
    draws = np.zeros(d, np.int64)
    for g in range(n):
        x = rng.uniform(-1, 1, d).astype(np.float32)
        q = quant.quantize(x, 1.0, bits, _seed("q", g), ring_bits=ring)
        levels += q.astype(np.int64)
        add_round_noise(q, _seed("n", g), p, ring)
        draws += draw(_seed("n", g), d, share_variance(p))
        mask.ring_add(acc, q, ring)
    top = 2**bits - 1
    # n * top is odd: decode twice the centered value to stay in integers
    centered = noise.centered(acc, 0, ring)
    assert np.array_equal(centered, levels + draws)
    assert abs(draws.std() ** 2 / (n * float(share_variance(p))) - 1) < 0.1
    assert np.abs(centered - n * top / 2).max() < 2 ** (ring - 1)
    with pytest.raises(InputError):
        ring_bits_with_noise(bits, p.threshold - 1, p)
    with pytest.raises(InputError):
        ring_bits_with_noise(30, 2**10, p)


def test_ddg_params() -> None:
    p = NoiseParams(
        variance=Fraction(10**6), threshold=10, l2_sensitivity=100.0, dim=64, max_participants=50
    )
    assert p.mechanism == "ddg" and p.max_participants == 50
    assert (
        NoiseParams(variance=Fraction(4), threshold=2, l2_sensitivity=1.0, dim=1).max_participants
        == 2
    )
    with pytest.raises(InputError):  # share 1 / 2^13: beyond the discrete Gaussian's denominators
        NoiseParams(variance=Fraction(1, 2**12), threshold=2, l2_sensitivity=1.0, dim=1)
    with pytest.raises(InputError):  # share above 2^32
        NoiseParams(variance=Fraction(2**34), threshold=2, l2_sensitivity=1.0, dim=1)
    with pytest.raises(InputError):
        NoiseParams(variance=4, threshold=3, l2_sensitivity=1.0, dim=1, max_participants=2)
    with pytest.raises(InputTypeError):
        NoiseParams(variance=4, threshold=3, l2_sensitivity=1.0, dim=1, max_participants=5.0)  # type: ignore[arg-type]
    with pytest.raises(InputTypeError):
        add_round_noise(np.zeros(3, np.uint16), _seed("x"), {"variance": 4}, 16)  # type: ignore[arg-type]
