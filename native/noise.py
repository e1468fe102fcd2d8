"""Exact integer noise in Z_2^k for distributed differential privacy (C++ samplers, ChaCha20).

Two mechanisms: the distributed discrete Gaussian (``sample_dgauss`` / ``add_dgauss_noise``, the
default of ``dp_params``) and Skellam (``sample`` / ``add_noise``). The symmetric Skellam
distribution Sk(mu) is P1 - P2 with P1, P2 ~ Poisson(mu / 2) independent; its variance is mu, and
the sum of independent Sk(mu_i) is Sk(sum mu_i). Noise is added *after* quantization, so the
modular sum of secure aggregation is exactly what the privacy proof covers.

Exactness: the C++ samplers use integer arithmetic only (docs/privacy.md, "Exactness of the
samplers"), so a variance is a rational number with a bounded denominator (``Fraction``; a float
is accepted only when it is exactly such a rational, e.g. 2.5). The randomness is the ChaCha20
keystream of a dedicated 32-byte noise seed (nonce ``FedgateNoise``), so a draw is reproducible
from its seed. The discrete Gaussian uses a per-variance table (built once, cached) and one 32-bit
keystream word per sample on its fast path; ``sample_dgauss_cks`` keeps the slower reference
sampler of Canonne, Kamath and Steinke for checking. Skellam costs grow linearly with mu.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from numbers import Rational
from typing import Any

import numpy as np

from native import _core
from native._validate import (
    allocate,
    check_array,
    check_bits,
    check_length,
    check_seed,
    core_call,
    ring_dtype,
)
from native.errors import InputError, InputTypeError

__all__ = [
    "DGAUSS_MAX_DENOMINATOR",
    "DGAUSS_MAX_VARIANCE",
    "EXP_WIDTH_BOUND",
    "MAX_DENOMINATOR",
    "MAX_VARIANCE",
    "DgaussTable",
    "add_dgauss_noise",
    "add_dgauss_noise_cks",
    "add_noise",
    "centered",
    "check_dgauss_variance",
    "check_variance",
    "dgauss_table",
    "sample",
    "sample_dgauss",
    "sample_dgauss_cks",
]

logger = logging.getLogger(__name__)

# Limits of the C++ sampler on each Poisson mean lambda = mu / 2 (noise.hpp).
MAX_DENOMINATOR = 2**24
MAX_VARIANCE = Fraction(2**21)
# Limits of the discrete Gaussian sampler on sigma^2 (noise.hpp).
DGAUSS_MAX_DENOMINATOR = 2**12
DGAUSS_MAX_VARIANCE = Fraction(2**32)
# Width bound of the table sampler's exp(-g) intervals, in units of 2**-127 (dgauss_exp.cpp).
EXP_WIDTH_BOUND = 150


def _exact_rational(value: object, name: str) -> Fraction:
    """int, Fraction or a finite float, as the exact rational it denotes (never rounded)."""
    if isinstance(value, bool | np.bool_):
        raise InputTypeError(f"{name} must be a number, got a bool")
    if isinstance(value, int | np.integer):
        return Fraction(int(value))
    if isinstance(value, Rational):
        return Fraction(value)
    if isinstance(value, float | np.floating):
        if not math.isfinite(float(value)):
            raise InputError(f"{name} must be finite, got {float(value)}")
        return Fraction(float(value))
    raise InputTypeError(f"{name} must be an int, Fraction or float, got {type(value).__name__}")


def check_variance(
    value: object, name: str = "variance", maximum: Fraction = MAX_VARIANCE
) -> Fraction:
    """A Skellam variance mu as an exact rational in [0, maximum] (default: the sampler's limit).

    Accepts int, ``Fraction`` and floats that are exactly a rational whose half (the Poisson mean
    of each side) has a denominator <= 2**24; never rounds (0.1 is refused: pass Fraction(1, 10)).
    """
    exact = _exact_rational(value, name)
    if exact < 0:
        raise InputError(f"{name} must be >= 0, got {exact}")
    if exact > maximum:
        raise InputError(f"{name} = {float(exact):.6g} exceeds the limit {maximum}")
    if (exact / 2).denominator > MAX_DENOMINATOR:
        raise InputError(
            f"{name} = {value!r}: half of it needs a denominator <= {MAX_DENOMINATOR}; "
            "pass a fractions.Fraction"
        )
    return exact


def _poisson_mean(variance: Fraction) -> tuple[int, int]:
    half = variance / 2
    return half.numerator, half.denominator


def sample(seed: bytes, n: int, variance: object) -> np.ndarray[Any, Any]:
    """n independent Sk(variance) draws as int64, deterministic given the 32-byte seed."""
    seed = check_seed(seed)
    n = check_length(n)
    num, den = _poisson_mean(check_variance(variance))
    out = allocate(n, np.int64)
    core_call(_core.skellam_sample, seed, num, den, out)
    return out


def add_noise(acc: np.ndarray[Any, Any], seed: bytes, variance: object, bits: int) -> None:
    """In place: acc += Sk(variance) noise mod 2**bits (acc of ``ring_dtype(bits)``).

    The draws are those of ``sample(seed, len(acc), variance)``, reduced mod 2**bits.
    """
    bits = check_bits(bits)
    acc = check_array(acc, "acc", [ring_dtype(bits)], writable=True)
    seed = check_seed(seed)
    num, den = _poisson_mean(check_variance(variance))
    core_call(_core.skellam_add, acc, seed, num, den, bits)


def centered(total: np.ndarray[Any, Any], offset: int, bits: int) -> np.ndarray[Any, Any]:
    """Signed int64 view of ``total - offset`` mod 2**bits, in [-2**(bits-1), 2**(bits-1)).

    This is the modular clipping of the distributed mechanisms: a noisy sum that left the ring
    on either side wraps back, and the decode maps it to the nearest representative around 0.
    """
    bits = check_bits(bits)
    total = check_array(total, "total", [ring_dtype(bits)])
    if isinstance(offset, bool) or not isinstance(offset, int | np.integer):
        raise InputTypeError(f"offset must be an integer, got {type(offset).__name__}")
    modulus = 1 << bits
    shifted = (total.astype(np.int64) - (int(offset) % modulus)) % modulus
    return np.where(shifted >= modulus // 2, shifted - modulus, shifted)


def check_dgauss_variance(value: object, name: str = "variance") -> Fraction:
    """A discrete Gaussian variance: exact rational in (0, 2**32], denominator <= 2**12."""
    exact = _exact_rational(value, name)
    if not 0 < exact <= DGAUSS_MAX_VARIANCE:
        raise InputError(f"{name} must be in (0, {DGAUSS_MAX_VARIANCE}], got {float(exact):.6g}")
    if exact.denominator > DGAUSS_MAX_DENOMINATOR:
        raise InputError(
            f"{name} = {value!r} needs a denominator <= {DGAUSS_MAX_DENOMINATOR}; "
            "pass a fractions.Fraction"
        )
    return exact


def sample_dgauss(seed: bytes, n: int, variance: object) -> np.ndarray[Any, Any]:
    """n discrete Gaussian N_Z(0, variance) draws as int64, exact, deterministic given the seed.

    The table sampler of docs/privacy.md. It raises ``NativeError`` instead of returning a draw on
    events of probability below 2**-115 per sample (a tail beyond the table, an acceptance test
    not settled by 128 keystream bits).
    """
    seed = check_seed(seed)
    n = check_length(n)
    var = check_dgauss_variance(variance)
    out = allocate(n, np.int64)
    core_call(_core.dgauss_sample, seed, var.numerator, var.denominator, out)
    return out


def add_dgauss_noise(acc: np.ndarray[Any, Any], seed: bytes, variance: object, bits: int) -> None:
    """In place: acc += N_Z(0, variance) mod 2**bits, the draws of ``sample_dgauss``.

    After a ``NativeError`` acc holds part of the noise only and must be discarded.
    """
    bits = check_bits(bits)
    acc = check_array(acc, "acc", [ring_dtype(bits)], writable=True)
    seed = check_seed(seed)
    var = check_dgauss_variance(variance)
    core_call(_core.dgauss_add, acc, seed, var.numerator, var.denominator, bits)


def sample_dgauss_cks(seed: bytes, n: int, variance: object) -> np.ndarray[Any, Any]:
    """The reference sampler: Canonne, Kamath, Steinke 2020, Algorithm 3 (docs/privacy.md).

    Same distribution as ``sample_dgauss`` (other draws from the same seed), about 30x slower.
    """
    seed = check_seed(seed)
    n = check_length(n)
    var = check_dgauss_variance(variance)
    out = allocate(n, np.int64)
    core_call(_core.dgauss_cks_sample, seed, var.numerator, var.denominator, out)
    return out


def add_dgauss_noise_cks(
    acc: np.ndarray[Any, Any], seed: bytes, variance: object, bits: int
) -> None:
    """In place: acc += the draws of ``sample_dgauss_cks`` mod 2**bits."""
    bits = check_bits(bits)
    acc = check_array(acc, "acc", [ring_dtype(bits)], writable=True)
    seed = check_seed(seed)
    var = check_dgauss_variance(variance)
    core_call(_core.dgauss_cks_add, acc, seed, var.numerator, var.denominator, bits)


@dataclass(frozen=True)
class DgaussTable:
    """The table sampler's plan of one variance (docs/privacy.md names the symbols)."""

    omega: int  # bucket width w = 2**omega
    buckets: int  # J
    slots_log2: int  # p: 2**p alias slots of 2**(32 - p) units
    scale: int  # C
    pool_weight: int  # units of the 2**32 that leave the fast path
    maybe_weight: int  # of those, the units settled by the exact test

    @property
    def slow_fraction(self) -> float:
        """Probability that a primary word leaves the fast path through the pool."""
        return self.pool_weight / 2**32

    @property
    def undecided_bound(self) -> float:
        """Upper bound on the probability that one proposal raises instead of deciding.

        The tail unit raises with 2**-132; an exact test is undecided only in a window of width
        2 C Delta + 1 (units of 2**-128, Delta = 150 bounding the exp intervals) next to
        tau(m, s), for each of the 2 J w pairs (m, s) (docs/privacy.md).
        """
        pairs = 2 * self.buckets * (1 << self.omega)
        return (pairs * (2 * self.scale * EXP_WIDTH_BOUND + 1) + 2**28) / 2**160


def dgauss_table(variance: object) -> DgaussTable:
    """The plan the table sampler uses for ``variance`` (built and cached on first use)."""
    var = check_dgauss_variance(variance)
    plan = core_call(_core.dgauss_plan, var.numerator, var.denominator)
    return DgaussTable(
        omega=int(plan["omega"]),
        buckets=int(plan["J"]),
        slots_log2=int(plan["p"]),
        scale=int(plan["C"]),
        pool_weight=int(plan["pool"]),
        maybe_weight=int(plan["prefix"][-1]),
    )
