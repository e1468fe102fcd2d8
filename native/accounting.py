"""Privacy accounting of distributed-noise rounds with Poisson participant sampling (RDP).

Per round the aggregator releases the sum of the sampled gateways' updates plus the sum of their
noise shares. With D1, D2 the L1 and L2 sensitivities in integer units, its Renyi DP at integer
order a > 1 is

- Skellam, total variance mu (Agarwal, Kairouz, Liu 2021, Corollary 3.6):
  eps(a) = a D2^2 / (2 mu) + min(((2a - 1) D2^2 + 6 D1) / (4 mu^2), 3 D1 / (2 mu));
- distributed discrete Gaussian, s shares of variance v each (Kairouz, Liu, Steinke 2021: the
  RDP bound for sums of discrete Gaussians, in its three-term form with L1), sigma^2 = s v,
  tau = 10 sum_{k=1}^{s-1} exp(-2 pi^2 v k/(k+1)):
  eps(a) = min(a D2^2/(2 sigma^2) + tau d, a/2 (D2^2/sigma^2 + 2 D1 tau/sigma + tau^2 d),
  a/2 (D2/sigma + tau sqrt(d))^2); the bound uses s = threshold for sigma and s =
  max_participants for tau, so it holds for every number of survivors in between.

Both tend to the Gaussian a D2^2 / (2 sigma^2) as the variance grows.
Poisson sampling of gateways at rate q (expected participants / population) amplifies it by the
general bound of Zhu and Wang (2019, Theorem 6) for integer orders, kept only where it is below the
unsampled value. Rounds compose by adding RDP; (eps, delta) comes from dp-accounting's conversion
(Canonne, Kamath, Steinke 2020) or, on request, the classic one (Mironov 2017). dp-accounting's own
RDP accountant has no Skellam event, so only the conversion and the Gaussian reference use it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from dp_accounting.rdp import rdp_privacy_accountant as _rdp  # type: ignore[import-untyped]

from native._validate import check_int
from native.dp_params import NoiseParams
from native.errors import InputError, InputTypeError

__all__ = [
    "ORDERS",
    "PrivacyAccountant",
    "ddg_rdp",
    "epsilon_from_rdp",
    "gaussian_rdp",
    "release_rdp",
    "skellam_rdp",
    "subsampled_rdp",
]

logger = logging.getLogger(__name__)

_Vec = np.ndarray[Any, Any]

ORDERS: tuple[int, ...] = (*range(2, 129), 160, 192, 256, 384, 512)


def _check_orders(orders: Sequence[int]) -> list[int]:
    if isinstance(orders, str | bytes) or not isinstance(orders, Sequence) or not orders:
        raise InputTypeError("orders must be a non-empty sequence of integers")
    out = [check_int(a, "order") for a in orders]
    if min(out) < 2:
        raise InputError("orders must be integers >= 2")
    return out


def _check_rate(q: object) -> float:
    if isinstance(q, bool) or not isinstance(q, int | float):
        raise InputTypeError(f"sampling rate must be a number, got {type(q).__name__}")
    rate = float(q)
    if not (math.isfinite(rate) and 0 < rate <= 1):
        raise InputError(f"sampling rate must be in (0, 1], got {q!r}")
    return rate


def skellam_rdp(orders: Sequence[int], params: NoiseParams) -> _Vec:
    """RDP of one unsampled release of the sum with Sk(params.variance) noise, per order.

    The Skellam bound is applied whatever ``params.mechanism`` says; use ``release_rdp``.
    """
    orders = _check_orders(orders)
    if not isinstance(params, NoiseParams):
        raise InputTypeError(f"params must be NoiseParams, got {type(params).__name__}")
    mu = float(params.variance)
    d2sq = params.l2_sensitivity**2
    d1 = params.l1_sensitivity
    a = np.asarray(orders, dtype=np.float64)
    extra = np.minimum(((2 * a - 1) * d2sq + 6 * d1) / (4 * mu * mu), 3 * d1 / (2 * mu))
    out: _Vec = a * d2sq / (2 * mu) + extra
    return out


def ddg_rdp(orders: Sequence[int], params: NoiseParams) -> _Vec:
    """RDP of one unsampled release with distributed discrete Gaussian shares, per order."""
    orders = _check_orders(orders)
    if not isinstance(params, NoiseParams):
        raise InputTypeError(f"params must be NoiseParams, got {type(params).__name__}")
    share = float(params.variance / params.threshold)
    sigma = math.sqrt(float(params.variance))
    most = int(params.max_participants or params.threshold)
    tau = 10 * sum(math.exp(-2 * math.pi**2 * share * k / (k + 1)) for k in range(1, most))
    d2, d1, d = params.l2_sensitivity / sigma, params.l1_sensitivity / sigma, params.dim
    a = np.asarray(orders, dtype=np.float64)
    out: _Vec = np.minimum.reduce(
        [
            a / 2 * d2**2 + tau * d,
            a / 2 * (d2**2 + 2 * d1 * tau + tau**2 * d),
            a / 2 * (d2 + math.sqrt(d) * tau) ** 2,
        ]
    )
    return out


def release_rdp(orders: Sequence[int], params: NoiseParams) -> _Vec:
    """RDP of one unsampled release with the round's mechanism."""
    if not isinstance(params, NoiseParams):
        raise InputTypeError(f"params must be NoiseParams, got {type(params).__name__}")
    return ddg_rdp(orders, params) if params.mechanism == "ddg" else skellam_rdp(orders, params)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def subsampled_rdp(orders: Sequence[int], q: float, rdp: _Vec) -> _Vec:
    """Zhu-Wang upper bound on the RDP of a Poisson-subsampled mechanism (integer orders).

    ``rdp`` must hold the unsampled RDP at every order 2..max(orders) (index a - 2), so pass the
    values of a mechanism at ``range(2, max(orders) + 1)``.
    """
    orders = _check_orders(orders)
    q = _check_rate(q)
    rdp = np.asarray(rdp, dtype=np.float64)
    if rdp.shape != (max(orders) - 1,) or not np.all(np.isfinite(rdp)) or np.any(rdp < 0):
        raise InputError("rdp must hold finite values >= 0 for the orders 2..max(orders)")
    if q == 1.0:
        same: _Vec = rdp[np.asarray(orders) - 2].copy()
        return same
    out = np.empty(len(orders))
    log_q, log_1q = math.log(q), math.log1p(-q)
    for i, a in enumerate(orders):
        terms = [
            (a - 1) * log_1q + math.log(a * q - q + 1),
            _log_comb(a, 2) + 2 * log_q + (a - 2) * log_1q + rdp[0],
        ]
        terms += [
            math.log(3) + _log_comb(a, k) + k * log_q + (a - k) * log_1q + (k - 1) * rdp[k - 2]
            for k in range(3, a + 1)
        ]
        top = max(terms)
        bound = (top + math.log(sum(math.exp(t - top) for t in terms))) / (a - 1)
        out[i] = min(bound, rdp[a - 2])
    return out


def gaussian_rdp(orders: Sequence[float], q: float, noise_multiplier: float) -> _Vec:
    """RDP of the Poisson-subsampled Gaussian mechanism (dp-accounting), for reference."""
    q = _check_rate(q)
    if isinstance(noise_multiplier, bool) or not isinstance(noise_multiplier, int | float):
        raise InputTypeError("noise_multiplier must be a number")
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise InputError(f"noise_multiplier must be finite and > 0, got {noise_multiplier!r}")
    out: _Vec = np.asarray(
        _rdp._compute_rdp_poisson_subsampled_gaussian(q, float(noise_multiplier), list(orders))
    )
    return out


def epsilon_from_rdp(
    orders: Sequence[float], rdp: _Vec, delta: float, *, conversion: str = "tight"
) -> float:
    """(eps, delta) from an RDP curve.

    'tight': dp-accounting's conversion; 'classic': min over orders of rdp + log(1/delta)/(a-1).
    """
    if isinstance(delta, bool) or not isinstance(delta, int | float):
        raise InputTypeError("delta must be a number")
    if not (math.isfinite(delta) and 0 < delta < 1):
        raise InputError(f"delta must be in (0, 1), got {delta!r}")
    rdp = np.asarray(rdp, dtype=np.float64)
    a = np.asarray(orders, dtype=np.float64)
    if rdp.shape != a.shape or np.any(np.isnan(rdp)):
        raise InputError("rdp and orders must have the same length, without NaN")
    if conversion == "classic":
        return float(np.min(rdp + math.log(1 / delta) / (a - 1)))
    if conversion != "tight":
        raise InputError(f"conversion must be 'tight' or 'classic', got {conversion!r}")
    eps, _ = _rdp.compute_epsilon(list(a), list(rdp), delta)
    return float(eps)


@dataclass
class PrivacyAccountant:
    """Cumulative RDP of the rounds run so far (explicit state; store ``rdp`` in the lineage)."""

    orders: tuple[int, ...] = ORDERS
    rdp: _Vec = field(default_factory=lambda: np.zeros(len(ORDERS)))
    rounds: int = 0

    def round_rdp(self, params: NoiseParams, q: float) -> _Vec:
        """The RDP of one round with these parameters and sampling rate q."""
        full = release_rdp(range(2, max(self.orders) + 1), params)
        return subsampled_rdp(self.orders, q, full)

    def round_epsilon(self, params: NoiseParams, q: float, delta: float) -> float:
        """(eps, delta) of a single round, without spending it."""
        return epsilon_from_rdp(self.orders, self.round_rdp(params, q), delta)

    def spend(self, params: NoiseParams, q: float, rounds: int = 1) -> None:
        """Compose ``rounds`` rounds with these parameters into the total."""
        rounds = check_int(rounds, "rounds")
        if rounds < 1:
            raise InputError(f"rounds must be >= 1, got {rounds}")
        self.rdp = self.rdp + rounds * self.round_rdp(params, q)
        self.rounds += rounds

    def epsilon(self, delta: float) -> float:
        """Cumulative epsilon at this delta (0.0 before any round)."""
        if self.rounds == 0:
            return 0.0
        return epsilon_from_rdp(self.orders, self.rdp, delta)
