"""Clipping and stochastic quantization: bounds, unbiasedness, exact definition, dequantization."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from native import cpu, mask, quant
from native.errors import InputError


def _seed(*parts: object) -> bytes:
    return hashlib.blake2b(repr(parts).encode(), digest_size=32).digest()


_SIGMA = np.frombuffer(b"expand 32-byte k", dtype="<u4")
_NONCE = np.frombuffer(b"LibsodiumDRG", dtype="<u4")
TIE_COUNTER = 2**31  # first block of the tie-break stream


def _chacha_blocks(seed: bytes, counters: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """ChaCha20-IETF blocks (key = seed, nonce LibsodiumDRG) at ``counters``, (len, 16) uint32.

    Written independently of the C++ so the tie-break stream, which expand() cannot reach, has a
    reference of its own; checked against expand() at counter 0 below.
    """
    m = len(counters)
    init = [np.full(m, w, np.uint32) for w in (*_SIGMA, *np.frombuffer(seed, "<u4"))]
    init += [counters.astype(np.uint32)] + [np.full(m, w, np.uint32) for w in _NONCE]
    s = [w.copy() for w in init]

    def rotl(v: np.ndarray[Any, Any], c: int) -> np.ndarray[Any, Any]:
        return (v << np.uint32(c)) | (v >> np.uint32(32 - c))

    quarters = [(0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
                (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14)]
    for _ in range(10):
        for a, b, c, d in quarters:
            s[a] += s[b]; s[d] = rotl(s[d] ^ s[a], 16)  # noqa: E702
            s[c] += s[d]; s[b] = rotl(s[b] ^ s[c], 12)  # noqa: E702
            s[a] += s[b]; s[d] = rotl(s[d] ^ s[a], 8)  # noqa: E702
            s[c] += s[d]; s[b] = rotl(s[b] ^ s[c], 7)  # noqa: E702
    return np.stack([s[i] + init[i] for i in range(16)], axis=1)


def _levels(
    x: np.ndarray[Any, Any], clip: float, bits: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(f, t, g) of docs/native.md in numpy float64 (one IEEE rounding per step, no FMA)."""
    top = float((1 << bits) - 1)
    scale = top / (2.0 * clip)
    v = np.minimum((np.minimum(np.maximum(x.astype(np.float64), -clip), clip) + clip) * scale, top)
    f = np.floor(v)
    t = (v - f) * 2.0**16
    return f, t, np.floor(t)


def _reference_quantize(
    x: np.ndarray[Any, Any], clip: float, bits: int, seed: bytes
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """docs/native.md's definition written with numpy: (q as uint64, indices of the ties)."""
    f, t, g = _levels(x, clip, bits)
    h = mask.expand(seed, len(x), 16).astype(np.float64)
    up = h < g
    ties = np.flatnonzero(h == g)
    if len(ties):
        words = _chacha_blocks(seed, TIE_COUNTER + ties // 16)[np.arange(len(ties)), ties % 16]
        up[ties] = words.astype(np.float64) * 2.0**-32 < t[ties] - g[ties]
    return (f + up).astype(np.uint64), ties


def test_reference_chacha_matches_expand() -> None:
    seed = _seed("ref")
    blocks = _chacha_blocks(seed, np.arange(5))
    np.testing.assert_array_equal(blocks.reshape(-1), mask.expand(seed, 80, 32))


@settings(max_examples=80, deadline=None)
@given(
    x=hnp.arrays(np.float32, st.integers(0, 300), elements=st.floats(-1e6, 1e6, width=32)),
    clip=st.floats(1e-3, 1e3),
    bits=st.integers(1, 32),
    tag=st.integers(0, 2**16),
)
def test_quantize_matches_the_documented_definition(
    x: np.ndarray[Any, Any], clip: float, bits: int, tag: int
) -> None:
    seed = _seed("q", tag)
    got = quant.quantize(x, clip, bits, seed)
    assert got.dtype == mask.ring_dtype(bits)
    want, _ = _reference_quantize(x, clip, bits, seed)
    np.testing.assert_array_equal(got.astype(np.uint64), want)
    assert int(got.max(initial=0)) <= (1 << bits) - 1


@pytest.mark.parametrize("clip", [0.1, 1 / 3, 1.0, 2.5, 1e-3, 7e5])
@pytest.mark.parametrize("bits", [1, 8, 16, 31, 32])
def test_quantize_at_the_clip_boundary(clip: float, bits: int) -> None:
    # float32 neighbours of +-clip, which is usually not a float32 itself; whole 16-element blocks
    # inside the bound and blocks that straddle it take different vector paths with one result.
    c32 = np.float32(clip)
    near = np.array(
        [np.nextafter(c32, np.float32(np.inf)), c32, np.nextafter(c32, np.float32(0))], np.float32
    )
    rng = np.random.default_rng(bits)
    inside = rng.uniform(-clip, clip, 16 * 40).astype(np.float32)
    inside = np.clip(inside, -np.nextafter(c32, np.float32(0)), np.nextafter(c32, np.float32(0)))
    edges = np.resize(np.concatenate([near, -near]), 16 * 40)
    x = np.concatenate(
        [inside, edges, rng.permutation(np.concatenate([inside[:300], edges[:300]]))]
    )
    seed = _seed("edge", clip, bits)
    got = quant.quantize(x, clip, bits, seed)
    want, _ = _reference_quantize(x, clip, bits, seed)
    np.testing.assert_array_equal(got.astype(np.uint64), want)


def _all_ties(seed: bytes, fracs: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """x (1-bit levels, clip 1) whose every element is a tie: t_i = h_i + fracs_i exactly.

    With bits = 1 and clip = 1, v = (x + 1) / 2 and t = (x + 1) * 2^15; x = (h + frac) / 2^15 - 1
    is a float32 when frac is a multiple of 2^-8, so g = floor(t) = h.
    """
    h = mask.expand(seed, len(fracs), 16).astype(np.float64)
    x: np.ndarray[Any, Any] = ((h + fracs) / 2.0**15 - 1.0).astype(np.float32)
    f, t, g = _levels(x, 1.0, 1)
    assert np.array_equal(g, h) and np.array_equal(t - g, fracs) and not f.any()
    return x


_TIE_FRACS = np.array([0.0, 1 / 256, 0.25, 0.5, 0.75, 255 / 256])


@pytest.mark.parametrize("n", [1, 15, 16, 17, 4095, 4096, 4097, 3 * 4096 + 37])
@pytest.mark.parametrize("ring_bits", [1, 32])
def test_constructed_ties_follow_the_tie_break_stream(n: int, ring_bits: int) -> None:
    # Every element a tie: the whole vector is settled by the tie-break words (the worst case of
    # the tie list), across chunk boundaries and in the scalar tail.
    seed = _seed("ties", n)
    fracs = np.resize(_TIE_FRACS, n)
    x = _all_ties(seed, fracs)
    want, ties = _reference_quantize(x, 1.0, 1, seed)
    assert len(ties) == n
    got = quant.quantize(x, 1.0, 1, seed, ring_bits=ring_bits)
    np.testing.assert_array_equal(got.astype(np.uint64), want)
    assert not got[fracs == 0].any()  # t == g: the fraction is g / 2^16 exactly, never up
    if n >= 4096:
        assert 0 < int(got.sum()) < n


_TIE_LEVEL_SCRIPT = """
import sys
import numpy as np
from native import cpu, quant
x = np.frombuffer(bytes.fromhex(sys.argv[1]), np.float32)
seed = bytes.fromhex(sys.argv[2])
out = [cpu.simd_level()]
for ring in (1, 32):
    out.append(quant.quantize(x, 1.0, 1, seed, ring_bits=ring).tobytes().hex())
print(" ".join(out))
"""


def test_ties_are_settled_alike_at_every_simd_level() -> None:
    seed = _seed("tie levels")
    n = 4096 + 8 + 4 + 3
    x = _all_ties(seed, np.resize(_TIE_FRACS, n))
    want, _ = _reference_quantize(x, 1.0, 1, seed)
    seen = set()
    for level in ("scalar", "avx2", "avx512", "neon"):
        proc = subprocess.run(
            [sys.executable, "-c", _TIE_LEVEL_SCRIPT, x.tobytes().hex(), seed.hex()],
            env=dict(os.environ, FEDGATE_SIMD=level), capture_output=True, text=True, check=True,
        )
        got_level, *outputs = proc.stdout.split()
        seen.add(got_level)
        for ring, hexed in zip((np.uint16, np.uint32), outputs, strict=True):
            got = np.frombuffer(bytes.fromhex(hexed), ring)
            np.testing.assert_array_equal(got.astype(np.uint64), want, err_msg=got_level)
    assert "scalar" in seen and cpu.simd_level() in seen


# (clip, bits, ring_bits) reaching each specialisation of the vector loops: clip a float32 or not,
# clip outside [2^-60, 2^60] (no folded 2^16), min(v, top) needed (7e5 at 16 bits, 1e-20 at 17),
# levels above 2^16 - 1 (wide lanes), uint16 and uint32 outputs.
_PATH_CASES = [(1.0, 8, 16), (1.0, 8, 32), (1 / 3, 15, 16), (0.1, 16, 16), (7e5, 16, 32),
               (2.5, 17, 32), (1e-20, 17, 32), (1e20, 8, 16), (0.3, 32, 32), (1e-20, 1, 1)]
# Lengths around the 512-element batches of the fused keystream and the 4096-element chunks.
_PATH_LENGTHS = [31, 511, 512, 545, 4641, 9000]
_PATH_SCRIPT = """
import hashlib, sys
import numpy as np
from native import cpu, quant
out = [cpu.simd_level()]
for clip, bits, ring in eval(sys.argv[1]):
    x = np.random.default_rng(bits).standard_normal(9000).astype(np.float32) * np.float32(clip)
    x[::97] = np.float32(clip)
    x[1::97] = -np.float32(clip)
    for n in eval(sys.argv[2]):
        q = quant.quantize(x[:n], clip, bits, b"p" * 32, ring_bits=ring)
        out.append(hashlib.sha256(q.tobytes()).hexdigest())
print(" ".join(out))
"""


def test_every_kernel_path_matches_the_definition_at_every_simd_level() -> None:
    runs = {}
    for level in ("scalar", "avx2", "avx512", "neon"):
        proc = subprocess.run(
            [sys.executable, "-c", _PATH_SCRIPT, repr(_PATH_CASES), repr(_PATH_LENGTHS)],
            env=dict(os.environ, FEDGATE_SIMD=level), capture_output=True, text=True, check=True,
        )
        got_level, *digests = proc.stdout.split()
        runs[got_level] = digests
    assert "scalar" in runs and cpu.simd_level() in runs
    want = []
    for clip, bits, ring in _PATH_CASES:
        x = np.random.default_rng(bits).standard_normal(9000).astype(np.float32) * np.float32(clip)
        x[::97] = np.float32(clip)
        x[1::97] = -np.float32(clip)
        for n in _PATH_LENGTHS:
            q = quant.quantize(x[:n], clip, bits, b"p" * 32, ring_bits=ring)
            ref, _ = _reference_quantize(x[:n], clip, bits, b"p" * 32)
            np.testing.assert_array_equal(q.astype(np.uint64), ref, err_msg=f"{clip} {bits} {n}")
            want.append(hashlib.sha256(q.tobytes()).hexdigest())
    for level, digests in runs.items():
        assert digests == want, level


def _float32_first_pass(x: np.ndarray[Any, Any], clip: float, bits: int) -> np.ndarray[Any, Any]:
    """trunc(fl32(fl32(clamp(x, K) + K) * S)): the AVX-512 loop's estimate of floor(v * 2^16)."""
    k, s = np.float32(clip), np.float32(((1 << bits) - 1) / (2.0 * clip) * 65536.0)
    p = (np.minimum(np.maximum(x, -k), k) + k) * s
    assert p.dtype == np.float32
    return np.trunc(p.astype(np.float64))


@pytest.mark.parametrize(("clip", "bits"), [(1.0, 8), (0.1, 8), (1 / 3, 5), (2.5, 1)])
def test_levels_next_to_a_draw_are_exact(clip: float, bits: int) -> None:
    # Up to 255 levels the AVX-512 loop computes F = floor(v * 2^16) in float32 first (within 4 of
    # the binary64 value) and redoes a pass in binary64 when u = F + 65535 - h has low 16 bits
    # within 8 of a carry. Put every element within 20 of one, F = h - 1 + w (mod 2^16), and
    # the values whose float32 estimate is furthest off on ties (F = h mod 2^16).
    n = 1 << 16
    seed = _seed("window", clip, bits)
    h = mask.expand(seed, n, 16).astype(np.int64)
    rng = np.random.default_rng(bits)
    top = (1 << bits) - 1
    target = rng.integers(0, top, n) * 65536 + (h - 1 + rng.integers(-20, 21, n)) % 65536
    x = ((target + 0.5) / 65536.0 / (top / (2.0 * clip)) - clip).astype(np.float32)
    pool = rng.uniform(-clip, clip, 1 << 18).astype(np.float32)
    f, _, g = _levels(pool, clip, bits)
    err = np.abs(_float32_first_pass(pool, clip, bits) - (f * 65536 + g))
    worst = pool[err == err.max()][:200]
    _, _, gw = _levels(worst, clip, bits)
    at = {int(v): int(i) for i, v in enumerate(h)}  # an index of each draw value
    placed = {at[int(gv)]: xv for gv, xv in zip(gw, worst, strict=True) if int(gv) in at}
    x[list(placed)] = list(placed.values())
    assert err.max() >= 1 and len(placed) >= 50
    f, _, g = _levels(x, clip, bits)
    low = (f * 65536 + g + 65535 - h).astype(np.int64) % 65536
    assert np.count_nonzero((low < 8) | (low > 65526)) > n // 4  # redone in binary64
    assert np.count_nonzero(((low >= 8) & (low < 20)) | ((low > 65514) & (low <= 65526))) > n // 4
    want, ties = _reference_quantize(x, clip, bits, seed)
    assert len(ties) >= len(placed)
    for ring in (bits, 32):
        got = quant.quantize(x, clip, bits, seed, ring_bits=ring)
        np.testing.assert_array_equal(got.astype(np.uint64), want)


def test_clips_whose_scale_overflows_are_refused() -> None:
    # (2^bits - 1) / (2 clip) must be finite, or the levels would be NaN.
    x = np.zeros(8, np.float32)
    for clip, bits in [(1e-300, 32), (1e-300, 29), (1e308, 8), (8.99e307, 1)]:
        with pytest.raises(InputError, match="out of range"):
            quant.quantize(x, clip, bits, _seed("range"))
    q = quant.quantize(x, 1e-300, 8, _seed("range"))  # a small clip alone is fine: v = 127.5
    assert set(q.tolist()) <= {127, 128}


@pytest.mark.parametrize(("bits", "ring_bits"), [(8, 16), (16, 16), (32, 32)])
def test_natural_ties_match_the_definition(bits: int, ring_bits: int) -> None:
    # Random updates meet a tie about once in 2^16 elements: search a few seeds for some.
    x = (np.random.default_rng(bits).standard_normal(1 << 18) * 0.5).astype(np.float32)
    for tag in range(20):
        seed = _seed("natural", bits, tag)
        want, ties = _reference_quantize(x, 1.0, bits, seed)
        if len(ties) >= 3:
            break
    assert len(ties) >= 3
    got = quant.quantize(x, 1.0, bits, seed, ring_bits=ring_bits)
    np.testing.assert_array_equal(got.astype(np.uint64), want)


@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(np.float32, st.integers(1, 400), elements=st.floats(-10, 10, width=32)),
    clip=st.floats(0.01, 20),
    bits=st.integers(1, 24),
)
def test_error_is_at_most_one_step(x: np.ndarray[Any, Any], clip: float, bits: int) -> None:
    step = 2 * clip / ((1 << bits) - 1)
    q = quant.quantize(x, clip, bits, _seed("err"))
    back = quant.dequantize(q, 1, clip, bits).astype(np.float64)
    clipped = np.clip(x.astype(np.float64), -clip, clip)
    slack = 1e-6 * clip  # the final float32 rounding of dequantize
    assert np.all(np.abs(back - clipped) <= step + slack)


def test_quantization_is_unbiased() -> None:
    clip, bits, trials = 1.0, 4, 400
    step = 2 * clip / 15
    # fractions of a step spread over [0, 1), at several levels, plus both clip bounds
    levels = np.arange(16, dtype=np.float64)
    fracs = np.linspace(0.0, 0.98, 50)
    v = np.minimum((levels[:, None] + fracs[None, :]).ravel(), 15.0)
    x = (v * step - clip).astype(np.float32)
    exact = (np.minimum(np.maximum(x.astype(np.float64), -clip), clip) + clip) * (15 / (2 * clip))
    total = np.zeros(len(x), np.float64)
    for t in range(trials):
        total += quant.quantize(x, clip, bits, _seed("unbiased", t))
    mean = total / trials
    frac = exact - np.floor(exact)
    sd = np.sqrt(frac * (1 - frac) / trials)
    # per element: within 6 standard errors (zero error where the level is exact)
    assert np.all(np.abs(mean - exact) <= 6 * sd + 1e-9)
    # overall: the average error is within 4 standard errors of zero
    overall_sd = np.sqrt((frac * (1 - frac)).sum()) / (len(x) * np.sqrt(trials))
    assert abs((mean - exact).mean()) <= 4 * overall_sd
    # and the rounding is really random: a fraction of 0.5 goes up about half of the time
    halves = np.isclose(frac, 0.5, atol=0.011)
    assert halves.any() and np.all(np.abs(mean[halves] - exact[halves]) < 0.2)


@pytest.mark.parametrize("below", [0.0, 1 / 256, 0.25, 0.5, 0.75, 255 / 256])
def test_the_tie_break_is_unbiased(below: float) -> None:
    # A tie has r = (g + s) / 2^16 with s = t - g: it must round up with probability s, i.e. the
    # 2^-16 of probability left between the draws h < g and h > g is split exactly. (h < g has
    # probability g / 2^16 exactly, so together E[q] = v to 2^-48 of a step.)
    n = 1 << 15
    ups = 0
    for k in range(4):
        seed = _seed("tie bias", below, k)
        x = _all_ties(seed, np.full(n, below))
        ups += int(quant.quantize(x, 1.0, 1, seed).sum())
    trials = 4 * n
    sd = np.sqrt(below * (1 - below) / trials)
    assert abs(ups / trials - below) <= 6 * sd + 1e-12


def test_quantize_is_deterministic_given_the_seed() -> None:
    x = np.random.default_rng(1).standard_normal(10_001).astype(np.float32)
    a = quant.quantize(x, 2.0, 8, _seed(1))
    assert (a == quant.quantize(x, 2.0, 8, _seed(1))).all()
    assert (a != quant.quantize(x, 2.0, 8, _seed(2))).any()


def test_quantize_clips_and_keeps_bounds_exact() -> None:
    x = np.array([-5.0, -1.0, 0.0, 1.0, 5.0, np.float32(1e30)], dtype=np.float32)
    q = quant.quantize(x, 1.0, 8, _seed("b"))
    assert q.tolist()[:2] == [0, 0] and q.tolist()[3:] == [255, 255, 255]
    assert q[2] in (127, 128)


def test_ring_bits_widens_the_dtype_only() -> None:
    x = np.linspace(-1, 1, 999, dtype=np.float32)
    narrow = quant.quantize(x, 1.0, 8, _seed("r"))
    wide = quant.quantize(x, 1.0, 8, _seed("r"), ring_bits=quant.ring_bits_for(8, 1000))
    assert narrow.dtype == np.uint16 and wide.dtype == np.uint32
    np.testing.assert_array_equal(narrow, wide)


def test_ring_bits_for() -> None:
    assert quant.ring_bits_for(8, 1) == 8
    assert quant.ring_bits_for(8, 2) == 9
    assert quant.ring_bits_for(8, 256) == 16
    assert quant.ring_bits_for(8, 257) == 17
    assert quant.ring_bits_for(16, 2**16) == 32
    with pytest.raises(InputError):
        quant.ring_bits_for(16, 2**16 + 1)
    with pytest.raises(InputError):
        quant.ring_bits_for(8, 0)


@pytest.mark.parametrize("bits", [1, 2, 8, 12, 16])
def test_dequantize_inverts_the_ring_sum_at_the_largest_participant_count(bits: int) -> None:
    clip = 0.75
    top = (1 << bits) - 1
    count = (2**32 - 1) // top  # the largest count whose sum fits the widest ring
    x = np.random.default_rng(bits).uniform(-1, 1, 4099).astype(np.float32)
    q = quant.quantize(x, clip, bits, _seed("big", bits), ring_bits=32)
    total = (q.astype(np.uint64) * count).astype(np.uint32)  # count identical participants
    est = quant.dequantize(total, count, clip, bits).astype(np.float64)
    step = 2 * clip / top
    want = (total.astype(np.float64) - count * top / 2) * step
    np.testing.assert_array_equal(est, want.astype(np.float32).astype(np.float64))
    clipped = np.clip(x.astype(np.float64), -clip, clip)
    assert np.all(np.abs(est - count * clipped) <= count * step * (1 + 1e-6))
    with pytest.raises(InputError):
        quant.dequantize(total, count + 1, clip, bits)


def test_masked_round_of_many_participants_dequantizes_to_the_sum() -> None:
    clip, bits, count, n = 1.0, 8, 300, 2000
    ring = quant.ring_bits_for(bits, count)
    rng = np.random.default_rng(7)
    xs = rng.uniform(-1.2, 1.2, (count, n)).astype(np.float32)
    masked = np.empty((count, n), mask.ring_dtype(ring))
    for i in range(count):
        masked[i] = quant.quantize(xs[i], clip, bits, _seed("p", i), ring_bits=ring)
        mask.add_masks(masked[i], [_seed("m", i)], ring)
    total = mask.ring_sum(masked, ring)
    mask.subtract_masks(total, [_seed("m", i) for i in range(count)], ring)
    est = quant.dequantize(total, count, clip, bits).astype(np.float64)
    true = np.clip(xs.astype(np.float64), -clip, clip).sum(axis=0)
    step = 2 * clip / 255
    err = est - true
    assert np.all(np.abs(err) <= count * step)
    # independent roundings: the error is about sqrt(count) steps, not count steps
    assert np.abs(err).mean() < 3 * np.sqrt(count) * step


def test_dequantize_refuses_impossible_totals() -> None:
    with pytest.raises(InputError):
        quant.dequantize(np.array([256], np.uint16), 1, 1.0, 8)
    with pytest.raises(InputError):
        quant.dequantize(np.array([1], np.uint16), 0, 1.0, 8)
    with pytest.raises(InputError):
        quant.dequantize(np.array([1], np.uint16), 1, 1.0, 17)  # uint16 cannot hold 17-bit levels
    assert quant.dequantize(np.array([0, 255], np.uint16), 1, 1.0, 8).tolist() == [-1.0, 1.0]


def test_l2_norm_and_clip() -> None:
    x = np.random.default_rng(3).standard_normal(100_003).astype(np.float32)
    assert quant.l2_norm(x) == pytest.approx(float(np.linalg.norm(x.astype(np.float64))), rel=1e-12)
    zero = np.zeros(17, np.float32)
    assert quant.l2_norm(zero) == 0.0
    clipped, norm = quant.clip_l2(zero, 1.0)
    assert norm == 0.0 and not clipped.any() and clipped is not zero
    clipped, norm = quant.clip_l2(x, 10.0)
    assert norm == pytest.approx(float(np.linalg.norm(x.astype(np.float64))))
    assert quant.l2_norm(clipped) <= 10.0
    assert quant.l2_norm(clipped) == pytest.approx(10.0, rel=1e-5)
    np.testing.assert_allclose(clipped, x * (10.0 / norm), rtol=1e-5, atol=1e-7)
    same, _ = quant.clip_l2(x, 1e9)
    np.testing.assert_array_equal(same, x)
    assert quant.l2_norm(np.zeros(0, np.float32)) == 0.0


@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(
        np.float32,
        st.integers(0, 200),
        elements=st.floats(width=32, allow_nan=False, allow_infinity=False),
    ),
    max_norm=st.floats(1e-6, 1e6),
)
def test_clip_l2_never_exceeds_max_norm(x: np.ndarray[Any, Any], max_norm: float) -> None:
    clipped, norm = quant.clip_l2(x, max_norm)
    assert quant.l2_norm(clipped) <= max_norm
    if norm <= max_norm:
        np.testing.assert_array_equal(clipped, x)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_refused(bad: float) -> None:
    x = np.ones(1000, np.float32)
    x[517] = bad
    for call in (
        lambda: quant.l2_norm(x),
        lambda: quant.clip_l2(x, 1.0),
        lambda: quant.quantize(x, 1.0, 8, _seed("nan")),
    ):
        with pytest.raises(InputError):
            call()
