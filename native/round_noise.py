"""The differential-privacy block of a signed ROUND_CONFIG (wire version 2, docs/protocol.md).

A round with distributed DP states, in the config every gateway checks before it trains: the
mechanism, the total noise variance (levels^2, an exact rational) that the ring sum of any
``threshold`` or more survivors carries, the L2 clip of the float update, the L2 bound of one
gateway's centered integer vector after rotation and conditional rounding, and the most shares a
sum may hold. The dimension the noise covers is the rotated length (the next power of two of the
model's parameter count); the rotation seed is derived from the round's public graph seed.

Block layout: ``u8 mechanism`` (0 = no DP noise; then the block ends), else ``u8 0, u16 0,
u64 variance numerator, u64 variance denominator, f64 l2_clip, f64 l2_sensitivity,
u32 max_participants``.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from fractions import Fraction

from native.dp_params import MECHANISMS, NoiseParams
from native.errors import FedgateError, WireError

__all__ = [
    "BLOCK_BYTES",
    "DEFAULT_BETA",
    "RoundNoise",
    "decode_block",
    "encode_block",
    "plan",
    "rotation_seed",
]

_CODES = {"ddg": 1, "skellam": 2}
_NAMES = {code: name for name, code in _CODES.items()}
_BLOCK = struct.Struct("<BBHQQddI")
BLOCK_BYTES = _BLOCK.size
_ROTATION_PERSON = b"fedgate-rotate1\x00"
# Conditional rounding's failure probability per try (Kairouz, Liu, Steinke 2021 use e^-0.5):
# about 1.6 quantizations on average, in exchange for a tighter bound, hence less noise.
DEFAULT_BETA = math.exp(-0.5)


@dataclass(frozen=True)
class RoundNoise:
    """What a DP round adds to secure aggregation; ``params`` gives the accountant's view."""

    mechanism: str
    variance: Fraction
    l2_clip: float
    l2_sensitivity: float
    max_participants: int

    def params(self, threshold: int, vector_len: int) -> NoiseParams:
        """The noise parameters of a round with this threshold and model size (validated)."""
        return NoiseParams(
            self.variance,
            threshold,
            self.l2_sensitivity,
            padded_length(vector_len),
            self.mechanism,
            self.max_participants,
        )

    def check(self) -> None:
        """Field ranges that need no round context; WireError otherwise."""
        if self.mechanism not in MECHANISMS:
            raise WireError(f"noise mechanism must be one of {MECHANISMS}")
        if not isinstance(self.variance, Fraction) or self.variance <= 0:
            raise WireError("noise variance must be a positive Fraction")
        if self.variance.numerator >= 1 << 64 or self.variance.denominator >= 1 << 64:
            raise WireError("noise variance does not fit two u64")
        for name in ("l2_clip", "l2_sensitivity"):
            value = getattr(self, name)
            if not (isinstance(value, float) and math.isfinite(value) and value > 0):
                raise WireError(f"{name} must be a finite float > 0")
        if not isinstance(self.max_participants, int) or not 1 <= self.max_participants < 1 << 32:
            raise WireError("max_participants must be 1 .. 2^32 - 1")


def padded_length(n: int) -> int:
    """The rotation's length: the power of two >= n (as ``native.rotation.padded_length``)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def encode_block(noise: RoundNoise | None) -> bytes:
    """The config's DP block; one zero byte for a round without noise."""
    if noise is None:
        return b"\x00"
    noise.check()
    return _BLOCK.pack(
        _CODES[noise.mechanism],
        0,
        0,
        noise.variance.numerator,
        noise.variance.denominator,
        noise.l2_clip,
        noise.l2_sensitivity,
        noise.max_participants,
    )


def decode_block(block: bytes | memoryview) -> RoundNoise | None:
    """Inverse of :func:`encode_block`; the block must be exactly one of the two lengths."""
    if len(block) < 1:
        raise WireError("round config lacks its noise block")
    if block[0] == 0:
        if len(block) != 1:
            raise WireError("noise block of a round without noise must be one byte")
        return None
    if len(block) != BLOCK_BYTES:
        raise WireError(f"noise block must be {BLOCK_BYTES} bytes, got {len(block)}")
    code, zero8, zero16, num, den, l2_clip, l2_sens, most = _BLOCK.unpack(block)
    if code not in _NAMES or zero8 or zero16:
        raise WireError(f"unknown noise mechanism {code} or non-zero reserved bytes")
    if den == 0 or num == 0:
        raise WireError("noise variance must be a positive fraction")
    noise = RoundNoise(_NAMES[code], Fraction(num, den), l2_clip, l2_sens, most)
    noise.check()
    return noise


def check_against_round(noise: RoundNoise, threshold: int, vector_len: int, n: int,
                        max_weight: int) -> NoiseParams:
    """Rules that tie the DP block to the rest of the config; WireError when one fails."""
    if max_weight != 1:
        raise WireError("a DP round is unweighted: max_weight must be 1")
    if noise.max_participants < n:
        raise WireError(f"max_participants {noise.max_participants} < {n} participants")
    try:
        return noise.params(threshold, vector_len)
    except FedgateError as exc:
        raise WireError(f"noise parameters invalid: {exc}") from exc


def rotation_seed(graph_seed: bytes, round_id: bytes) -> bytes:
    """The round's public rotation seed, bound to its graph seed and round id.

    Public by design (the rotation only has to be independent of the data); the BLAKE2b
    personalisation keeps it apart from every secret seed of the protocol.
    """
    if len(graph_seed) != 32 or len(round_id) != 16:
        raise WireError("rotation seed needs a 32-byte graph seed and a 16-byte round id")
    return hashlib.blake2b(round_id, digest_size=32, key=graph_seed,
                           person=_ROTATION_PERSON).digest()


def plan(
    noise_multiplier: float,
    l2_clip: float,
    *,
    quant_bits: int,
    clip: float,
    vector_len: int,
    threshold: int,
    max_participants: int,
    mechanism: str = "ddg",
    beta: float = DEFAULT_BETA,
) -> RoundNoise:
    """The DP block of a round whose summed noise is ``noise_multiplier`` x its L2 sensitivity.

    One gateway's update is L2-clipped to ``l2_clip``, rotated to the padded length and scaled by
    ``(2^b - 1) / (2 clip)`` levels per unit; its conditional rounding has norm at most
    ``rounded_norm_bound(l2_clip * scale, dim, beta)``, the sensitivity. The total variance is
    ``(z * sensitivity)^2`` rounded up to a multiple of the threshold, so each share is an integer.
    """
    from native import rotation

    top = (1 << quant_bits) - 1
    scale = top / (2 * clip)
    bound = rotation.rounded_norm_bound(l2_clip * scale, padded_length(vector_len), beta)
    share = math.ceil((noise_multiplier * bound) ** 2 / threshold)
    noise = RoundNoise(mechanism, Fraction(share * threshold), float(l2_clip), float(bound),
                       max_participants)
    noise.params(threshold, vector_len)  # the sampler's limits, as an InputError
    return noise
