"""RDP accounting: published reference values, the Skellam bound and its Gaussian limit, the
subsampling bound against dp-accounting's exact Gaussian, composition, and garbage."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from native.accounting import (
    ORDERS,
    PrivacyAccountant,
    ddg_rdp,
    epsilon_from_rdp,
    gaussian_rdp,
    release_rdp,
    skellam_rdp,
    subsampled_rdp,
)
from native.dp_params import NoiseParams
from native.errors import InputError, InputTypeError

# TF Privacy's compute_dp_sgd_privacy orders of 2018-2019, which produced the published value.
TFP_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))


def test_abadi_2016_moments_accountant_value() -> None:
    # Abadi et al. 2016, Sec. 3.1: q = 0.01, sigma = 4, delta = 1e-5, T = 10000 -> eps ~ 1.26.
    orders = list(range(2, 65))
    rdp = gaussian_rdp(orders, 0.01, 4.0) * 10_000
    assert epsilon_from_rdp(orders, rdp, 1e-5, conversion="classic") == pytest.approx(
        1.26, abs=0.005
    )
    assert epsilon_from_rdp(orders, rdp, 1e-5) < 1.26  # the tighter conversion only improves it


def test_tf_privacy_mnist_tutorial_value() -> None:
    # TF Privacy tutorial README: N=60000, batch 256, noise 1.1, 60 epochs, delta 1e-5
    # -> eps = 3.01.
    steps = int(60 * 60000 / 256)
    rdp = gaussian_rdp(TFP_ORDERS, 256 / 60000, 1.1) * steps
    assert round(epsilon_from_rdp(TFP_ORDERS, rdp, 1e-5, conversion="classic"), 2) == 3.01


def test_skellam_rdp_by_hand() -> None:
    # mu = 100, D2 = 2, d = 4 -> D1 = min(sqrt(4) * 2, 2 * 2^2) = 4;
    # a = 2: 2*4/200 + min((3*4 + 24) / 40000, 12/200) = 0.04 + 0.0009.
    p = NoiseParams(
        mechanism="skellam", variance=Fraction(100), threshold=1, l2_sensitivity=2.0, dim=4
    )
    got = skellam_rdp([2, 3], p)
    assert got[0] == pytest.approx(0.0409, rel=1e-12)
    assert got[1] == pytest.approx(3 * 4 / 200 + (5 * 4 + 24) / 40000, rel=1e-12)


def test_skellam_tends_to_the_gaussian() -> None:
    orders = list(range(2, 65))
    for z in (0.8, 2.0):
        d2 = 1e5
        p = NoiseParams(
            mechanism="skellam",
            variance=Fraction(round((z * d2) ** 2)),
            threshold=10**5,
            l2_sensitivity=d2,
            dim=1000,
        )
        gauss = np.asarray(orders) / (2 * z * z)
        sk = skellam_rdp(orders, p)
        assert np.all(sk >= gauss * (1 - 1e-9))
        assert np.allclose(sk, gauss, rtol=1e-3)
    # and at small mu the discreteness costs something on top of the Gaussian value
    small = NoiseParams(
        mechanism="skellam", variance=Fraction(4), threshold=1, l2_sensitivity=2.0, dim=1000
    )
    assert skellam_rdp([8], small)[0] > 8 * 4 / (2 * 4) * 1.1


def test_zhu_wang_bound_upper_bounds_the_exact_subsampled_gaussian() -> None:
    orders = list(range(2, 65))
    full = np.arange(2, 65) / (2 * 1.0**2)  # Gaussian, z = 1
    for q in (0.001, 0.01, 0.1):
        bound = subsampled_rdp(orders, q, full)
        exact = gaussian_rdp(orders, q, 1.0)
        assert np.all(bound >= exact * (1 - 1e-9))
        e_bound = epsilon_from_rdp(orders, bound * 1000, 1e-5)
        e_exact = epsilon_from_rdp(orders, exact * 1000, 1e-5)
        assert e_exact * (1 - 1e-9) <= e_bound < 1.25 * e_exact
    assert np.array_equal(subsampled_rdp(orders, 1.0, full), full)


def test_accountant_composes_rounds() -> None:
    p = NoiseParams(
        mechanism="skellam", variance=Fraction(10**8), threshold=100, l2_sensitivity=1e4, dim=2**16
    )
    acc = PrivacyAccountant()
    assert acc.epsilon(1e-5) == 0.0
    one = acc.round_epsilon(p, 0.05, 1e-5)
    acc.spend(p, 0.05)
    assert acc.epsilon(1e-5) == pytest.approx(one)
    acc.spend(p, 0.05, rounds=99)
    assert acc.rounds == 100
    assert np.allclose(acc.rdp, 100 * acc.round_rdp(p, 0.05))
    eps100 = acc.epsilon(1e-5)
    assert eps100 > one
    # sampling helps, and more noise helps
    assert acc.round_epsilon(p, 0.01, 1e-5) < one
    noisier = NoiseParams(
        mechanism="skellam",
        variance=Fraction(4 * 10**8),
        threshold=1000,
        l2_sensitivity=1e4,
        dim=2**16,
    )
    assert acc.round_epsilon(noisier, 0.05, 1e-5) < one
    # close to the Gaussian accountant with the same noise multiplier (z = 1)
    gauss = epsilon_from_rdp(ORDERS, gaussian_rdp(list(ORDERS), 0.05, 1.0) * 100, 1e-5)
    assert gauss <= eps100 < 1.25 * gauss


@pytest.mark.parametrize("q", [0, -0.1, 1.5, float("nan"), float("inf"), "0.1", True, None])
def test_bad_sampling_rate(q: object) -> None:
    p = NoiseParams(
        mechanism="skellam", variance=Fraction(100), threshold=1, l2_sensitivity=1.0, dim=4
    )
    with pytest.raises((InputError, InputTypeError)):
        PrivacyAccountant().round_rdp(p, q)  # type: ignore[arg-type]
    with pytest.raises((InputError, InputTypeError)):
        gaussian_rdp([2], q, 1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("delta", [0, 1, -1e-5, 2.0, float("nan"), float("inf"), "1e-5", None])
def test_bad_delta(delta: object) -> None:
    with pytest.raises((InputError, InputTypeError)):
        epsilon_from_rdp([2, 3], np.array([0.1, 0.2]), delta)  # type: ignore[arg-type]


def test_bad_orders_rdp_and_params() -> None:
    p = NoiseParams(
        mechanism="skellam", variance=Fraction(100), threshold=1, l2_sensitivity=1.0, dim=4
    )
    with pytest.raises(InputError):
        skellam_rdp([1], p)
    with pytest.raises(InputTypeError):
        skellam_rdp([2.5], p)
    with pytest.raises(InputTypeError):
        skellam_rdp([], p)
    with pytest.raises(InputTypeError):
        skellam_rdp([2], {"variance": 100})  # type: ignore[arg-type]
    with pytest.raises(InputError):
        subsampled_rdp([2, 3], 0.1, np.array([0.1]))  # too short
    with pytest.raises(InputError):
        subsampled_rdp([2, 3], 0.1, np.array([0.1, -1.0]))
    with pytest.raises(InputError):
        subsampled_rdp([2, 3], 0.1, np.array([0.1, math.nan]))
    with pytest.raises(InputError):
        epsilon_from_rdp([2, 3], np.array([0.1]), 1e-5)
    with pytest.raises(InputError):
        epsilon_from_rdp([2], np.array([0.1]), 1e-5, conversion="loose")
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(InputError):
            gaussian_rdp([2], 0.1, bad)
    with pytest.raises(InputError):
        PrivacyAccountant().spend(p, 0.1, rounds=0)
    with pytest.raises(InputTypeError):
        PrivacyAccountant().spend(p, 0.1, rounds=1.5)  # type: ignore[arg-type]


def test_ddg_rdp_limits() -> None:
    orders = list(range(2, 65))
    # Large shares: tau underflows to 0 and the bound is exactly the Gaussian a/(2 z^2).
    p = NoiseParams(
        variance=Fraction(10**8), threshold=10, l2_sensitivity=1e4, dim=2**16, max_participants=100
    )
    assert np.allclose(ddg_rdp(orders, p), np.asarray(orders) / 2.0, rtol=1e-12)
    assert np.array_equal(release_rdp(orders, p), ddg_rdp(orders, p))
    # Tiny shares: the sum is far from a discrete Gaussian and tau costs something.
    tiny = NoiseParams(
        variance=Fraction(10, 10), threshold=10, l2_sensitivity=1.0, dim=100, max_participants=20
    )
    tau = 10 * sum(math.exp(-2 * math.pi**2 * 0.1 * k / (k + 1)) for k in range(1, 20))
    a = np.asarray(orders, dtype=np.float64)
    expected = np.minimum.reduce(
        [a / 2 + tau * 100, a / 2 * (1 + 2 * 10 * tau + tau**2 * 100), a / 2 * (1 + 10 * tau) ** 2]
    )
    assert np.allclose(ddg_rdp(orders, tiny), expected, rtol=1e-12)
    assert np.all(ddg_rdp(orders, tiny) > a / 2)


def test_ddg_accountant_near_the_gaussian() -> None:
    p = NoiseParams(
        variance=Fraction(10**8),
        threshold=100,
        l2_sensitivity=1e4,
        dim=2**16,
        max_participants=1000,
    )
    acc = PrivacyAccountant()
    acc.spend(p, 0.05, rounds=100)
    gauss = epsilon_from_rdp(ORDERS, gaussian_rdp(list(ORDERS), 0.05, 1.0) * 100, 1e-5)
    assert gauss <= acc.epsilon(1e-5) < 1.25 * gauss
    with pytest.raises(InputTypeError):
        ddg_rdp([2], "params")  # type: ignore[arg-type]
