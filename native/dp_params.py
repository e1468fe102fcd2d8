"""Noise parameters of a DP round, shared by the aggregator (which sets them) and the gateways
(which check them against their own policy before they train).

The round config carries a ``NoiseParams``: the mechanism (distributed discrete Gaussian, the
default, or Skellam), the total noise variance (in quantization levels, an exact rational) that
the ring sum of any ``threshold`` or more survivors carries, and the
sensitivities of one gateway's contribution in the same integer units. Each gateway adds
``share_variance(params)`` = variance / threshold, so the guarantee needs no trust in the count of
survivors beyond the threshold that secure aggregation already enforces (fewer survivors: the sum
is never unmasked).

Privacy unit: the content of one gateway's update. Its centered quantized vector has L2 norm at
most ``l2_sensitivity`` (conditional rounding, ``native.rotation``); for a vector of half-integers
the L1 norm is at most 2 * L2^2 and at most sqrt(d) * L2.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from fractions import Fraction

from native import noise
from native._validate import check_int
from native.errors import InputError, InputTypeError, ProtocolError
from native.noise import check_dgauss_variance, check_variance

__all__ = [
    "GatewayPolicy",
    "NoiseParams",
    "add_round_noise",
    "check_round_noise",
    "l1_sensitivity_bound",
    "noise_multiplier",
    "ring_bits_with_noise",
    "share_variance",
]

logger = logging.getLogger(__name__)

MECHANISMS = ("ddg", "skellam")
# The total may exceed what one sampler call draws; each share must not (checked below).
MAX_TOTAL_VARIANCE = Fraction(2**52)


def _finite_positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | Fraction):
        raise InputTypeError(f"{name} must be a number, got {type(value).__name__}")
    out = float(value)
    if not (math.isfinite(out) and out > 0):
        raise InputError(f"{name} must be finite and > 0, got {value!r}")
    return out


def l1_sensitivity_bound(l2_sensitivity: float, dim: int) -> float:
    """min(sqrt(d) * L2, 2 * L2^2): the L1 bound of a half-integer vector of L2 norm <= L2."""
    l2 = _finite_positive(l2_sensitivity, "l2_sensitivity")
    d = check_int(dim, "dim")
    if d < 1:
        raise InputError(f"dim must be >= 1, got {d}")
    return min(math.sqrt(d) * l2, 2 * l2 * l2)


@dataclass(frozen=True)
class NoiseParams:
    """Noise of one round as the signed round config states it (validated on construction)."""

    variance: Fraction  # total noise variance of the sum over >= threshold survivors, levels^2
    threshold: int  # secure-aggregation threshold: fewest survivors whose sum is ever unmasked
    l2_sensitivity: float  # L2 bound on one gateway's centered integer vector
    dim: int  # coordinates of the (rotated, padded) vector
    mechanism: str = "ddg"  # "ddg": discrete Gaussian shares; "skellam": Skellam shares
    max_participants: int | None = (
        None  # most shares a sum can hold (ddg accounting); None: threshold
    )

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise InputError(f"mechanism must be one of {MECHANISMS}, got {self.mechanism!r}")
        variance = check_variance(self.variance, maximum=MAX_TOTAL_VARIANCE)
        if variance == 0:
            raise InputError("variance must be > 0 for a DP round")
        threshold = check_int(self.threshold, "threshold")
        if threshold < 1:
            raise InputError(f"threshold must be >= 1, got {threshold}")
        share_check = check_dgauss_variance if self.mechanism == "ddg" else check_variance
        share_check(variance / threshold, "variance / threshold")
        most = threshold if self.max_participants is None else self.max_participants
        most = check_int(most, "max_participants")
        if most < threshold:
            raise InputError(f"max_participants must be >= threshold {threshold}, got {most}")
        object.__setattr__(self, "max_participants", most)
        _finite_positive(self.l2_sensitivity, "l2_sensitivity")
        dim = check_int(self.dim, "dim")
        if dim < 1:
            raise InputError(f"dim must be >= 1, got {dim}")
        object.__setattr__(self, "variance", variance)
        object.__setattr__(self, "threshold", threshold)
        object.__setattr__(self, "l2_sensitivity", float(self.l2_sensitivity))
        object.__setattr__(self, "dim", dim)

    @property
    def l1_sensitivity(self) -> float:
        """The L1 sensitivity implied by the L2 bound and the dimension."""
        return l1_sensitivity_bound(self.l2_sensitivity, self.dim)


def share_variance(params: NoiseParams) -> Fraction:
    """The noise variance each gateway adds: variance / threshold, exact."""
    return params.variance / params.threshold


def add_round_noise(acc: object, seed: bytes, params: NoiseParams, bits: int) -> None:
    """Add this gateway's noise share to its quantized vector, in place mod 2**bits."""
    if not isinstance(params, NoiseParams):
        raise InputTypeError(f"params must be NoiseParams, got {type(params).__name__}")
    add = noise.add_dgauss_noise if params.mechanism == "ddg" else noise.add_noise
    add(acc, seed, share_variance(params), bits)  # type: ignore[arg-type]


def noise_multiplier(params: NoiseParams) -> float:
    """z = sqrt(variance) / L2 sensitivity, the Gaussian-equivalent noise multiplier."""
    return math.sqrt(params.variance) / params.l2_sensitivity


def ring_bits_with_noise(
    bits: int, max_participants: int, params: NoiseParams, tail_sigmas: float = 10.0
) -> int:
    """Ring width whose sum (levels + noise of up to ``max_participants`` shares) never wraps
    except with probability below the noise tail at ``tail_sigmas`` standard deviations."""
    bits = check_int(bits, "bits")
    n = check_int(max_participants, "max_participants")
    if not 1 <= bits <= 32 or n < params.threshold:
        raise InputError(f"need 1 <= bits <= 32 and max_participants >= {params.threshold}")
    sigmas = _finite_positive(tail_sigmas, "tail_sigmas")
    noise_sd = math.sqrt(float(share_variance(params)) * n)
    # Centered sum: |levels| <= n * top / 2, plus the noise tail, on both sides of zero.
    half_range = n * ((1 << bits) - 1) / 2 + sigmas * noise_sd
    ring = math.ceil(math.log2(2 * half_range + 1))
    if ring > 32:
        raise InputError(f"a {ring}-bit ring is needed (max 32)")
    return ring


@dataclass(frozen=True)
class GatewayPolicy:
    """A gateway's own floor: it trains only in rounds at least this noisy."""

    min_noise_multiplier: float
    min_threshold: int = 2

    def __post_init__(self) -> None:
        _finite_positive(self.min_noise_multiplier, "min_noise_multiplier")
        if check_int(self.min_threshold, "min_threshold") < 1:
            raise InputError(f"min_threshold must be >= 1, got {self.min_threshold}")


def check_round_noise(config_noise: object, policy: GatewayPolicy) -> NoiseParams:
    """Refuse (ProtocolError) a round whose noise is below the gateway's policy; returns it."""
    if not isinstance(policy, GatewayPolicy):
        raise InputTypeError(f"policy must be a GatewayPolicy, got {type(policy).__name__}")
    if config_noise is None:
        raise ProtocolError("round config carries no noise parameters; this gateway requires DP")
    if not isinstance(config_noise, NoiseParams):
        raise InputTypeError(f"noise must be NoiseParams, got {type(config_noise).__name__}")
    z = noise_multiplier(config_noise)
    if z < policy.min_noise_multiplier:
        raise ProtocolError(
            f"round noise multiplier {z:.4g} is below this gateway's minimum "
            f"{policy.min_noise_multiplier:.4g}"
        )
    if config_noise.threshold < policy.min_threshold:
        raise ProtocolError(
            f"round threshold {config_noise.threshold} is below this gateway's minimum "
            f"{policy.min_threshold}"
        )
    return config_noise
