"""The table discrete Gaussian sampler: plan and draws equal to the Python rendering of
docs/privacy.md (dgauss_reference.py), rigorous exp bounds, determinism, bit-identity at every
SIMD level, the rare branches driven with chosen words (tail, undecided test), and garbage on every
entry point."""

from __future__ import annotations

import decimal
import functools
import hashlib
import importlib.util
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from native import _core, mask, noise
from native.errors import InputError, InputTypeError


def _load_reference() -> ModuleType:
    # The tests run with --import-mode=importlib, so the rendering beside this file is loaded
    # by path; it must be in sys.modules before it runs (its dataclass looks itself up there).
    spec = importlib.util.spec_from_file_location(
        "dgauss_reference", Path(__file__).with_name("dgauss_reference.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ref = _load_reference()
Plan = Any  # dgauss_reference.Plan, loaded by path so invisible to the type checker

# Both sides of every regime: w = 1 (sigma < 512) and w > 1, integer and fractional variances,
# the smallest and the largest accepted one.
PLAN_VARIANCES = [
    Fraction(1, 4096),
    Fraction(1),
    Fraction(7, 3),
    Fraction(100),
    Fraction(2**18 - 1),
    Fraction(2**18),
    Fraction(300001, 3),
    Fraction(10**8),
    Fraction(2**32),
]


def _seed(*parts: object) -> bytes:
    return hashlib.blake2b(repr(parts).encode(), digest_size=32).digest()


@functools.cache
def _plan(var: Fraction) -> Plan:
    return ref.plan(var)


@pytest.mark.parametrize("var", PLAN_VARIANCES)
def test_plan_matches_the_documented_construction(var: Fraction) -> None:
    got = _core.dgauss_plan(var.numerator, var.denominator)
    pl = _plan(var)
    assert (got["omega"], got["J"], got["p"], got["C"], got["pool"]) == (
        pl.omega,
        pl.J,
        pl.p,
        pl.C,
        pl.pool,
    )
    assert got["A"].tolist() == pl.A
    assert got["prefix"].tolist() == pl.prefix
    packed = [((t // 2) << pl.p) | a for t, a in zip(pl.thr, pl.alias, strict=True)]
    assert got["slots"].tolist() == packed
    # The proposal is all of 2^32 and nearly all of it lands on the target.
    assert pl.prefix[-1] < pl.pool
    assert noise.dgauss_table(var).slow_fraction < 0.005


@pytest.mark.parametrize(
    ("var", "n"),
    [
        (Fraction(1, 4096), 3000),
        (Fraction(7, 3), 20_000),
        (Fraction(2**18), 20_000),
        (Fraction(300001, 3), 20_000),
        (Fraction(2**32), 30_000),
    ],
)
def test_draws_match_the_python_rendering(var: Fraction, n: int) -> None:
    seed = _seed("render", var)
    want, slow = ref.samples(seed, n, var, _plan(var))
    assert noise.sample_dgauss(seed, n, var).tolist() == want
    if var >= 2**18:
        assert slow > 10  # the comparison covers the slow path, not only the fast one


@pytest.mark.parametrize(
    ("num", "den"),
    [
        (0, 1),
        (1, 1),
        (1, 3),
        (7, 2),
        (104, 1),
        (2**52 - 1, 2**45 - 7),
        (639, 5),
        (128, 1),
        (10**15, 3),
    ],
)
def test_exp_bounds_contain_the_value(num: int, den: int) -> None:
    lo, hi = _core.dgauss_exp_bounds(num, den)
    ctx = decimal.Context(prec=80)
    exact = ctx.multiply(ctx.exp(ctx.divide(-decimal.Decimal(num), den)), decimal.Decimal(2**127))
    assert lo <= exact <= hi
    assert hi - lo <= noise.EXP_WIDTH_BOUND  # what the undecided bound of privacy.md assumes


def test_exp_bounds_stay_within_the_stated_width() -> None:
    rng = np.random.default_rng(3)
    widths = []
    for _ in range(3000):
        den = int(rng.integers(1, 2**45))
        lo, hi = _core.dgauss_exp_bounds(int(rng.integers(0, 110 * den)), den)
        widths.append(hi - lo)
    assert max(widths) <= noise.EXP_WIDTH_BOUND


def test_undecided_probability_is_negligible_for_every_variance() -> None:
    # From 2^-12 to 2^32, integers and fractions: below 2^-115 per proposal everywhere.
    grid = [Fraction(2**e) for e in range(-12, 33)] + [Fraction(10**e, 3) for e in range(0, 10)]
    grid += [Fraction(2**e - 1, 4096) for e in range(13, 44, 3)]
    worst = max(noise.dgauss_table(v).undecided_bound for v in grid)
    assert 0 < worst < 2**-115


def test_deterministic_and_prefix_stable_across_chunks() -> None:
    var = Fraction(2**32)  # the most slow-path draws: the secondary stream must line up too
    a = noise.sample_dgauss(_seed("d"), 5000, var)
    assert np.array_equal(a, noise.sample_dgauss(_seed("d"), 5000, var))
    for n in (1, 15, 1023, 1024, 1025, 3333):
        assert np.array_equal(a[:n], noise.sample_dgauss(_seed("d"), n, var))
    assert not np.array_equal(a, noise.sample_dgauss(_seed("e"), 5000, var))
    assert noise.sample_dgauss(_seed("d"), 0, var).shape == (0,)


@pytest.mark.parametrize("bits", [1, 5, 16, 17, 32])
def test_add_is_the_sample_mod_ring(bits: int) -> None:
    dtype = mask.ring_dtype(bits)
    acc = np.random.default_rng(bits).integers(0, 2**bits, 4099, dtype=np.uint64).astype(dtype)
    var = Fraction(10**6)
    expected = (acc.astype(np.int64) + noise.sample_dgauss(_seed("add", bits), 4099, var)) % 2**bits
    noise.add_dgauss_noise(acc, _seed("add", bits), var, bits)
    assert np.array_equal(acc.astype(np.int64), expected)


_LEVEL_SCRIPT = """
import hashlib, numpy as np
from native import _core, noise
h = hashlib.sha256()
for var, n in ((1, 5001), (100, 20000), (10**6, 50001), (2**32, 50001)):
    h.update(noise.sample_dgauss(bytes(range(32)), n, var).tobytes())
acc16 = np.arange(30001, dtype=np.uint16)
noise.add_dgauss_noise(acc16, bytes(32), 12345, 16)
acc32 = np.arange(30001, dtype=np.uint32)
noise.add_dgauss_noise(acc32, bytes(32), 2**31, 32)
h.update(acc16.tobytes() + acc32.tobytes())
print(_core.simd_level(), h.hexdigest())
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


# ---- the rare branches, driven with chosen words ---------------------------------------------


def _word_for(t: int, n: int) -> int:
    """A 32-bit word that Lemire's uniform32(n) maps to t without a redraw."""
    u = ((t + 1) * 2**32 - 1) // n
    assert (u * n) >> 32 == t and (u * n) % 2**32 >= (2**32 - n) % n
    return u


def _out_word(pl: Plan) -> tuple[int, int]:
    """A word the fast path accepts, and its sample."""
    for u in range(12345, 2**32, 2**20 + 7):
        kind, x = ref.decode(pl, u)
        if kind == "out":
            return u, x
    raise AssertionError("no accepted word")


def _words(*ws: int) -> np.ndarray[Any, Any]:
    return np.array(ws, dtype=np.uint32)


def _v_words(v: int) -> tuple[int, ...]:
    return tuple((v >> (32 * i)) & 0xFFFFFFFF for i in (3, 2, 1, 0))


@pytest.mark.parametrize("var", [Fraction(7, 3), Fraction(2**32)])
def test_tail_unit_raises_and_its_rest_rejects(var: Fraction) -> None:
    pl = _plan(var)
    t_word = _word_for(pl.prefix[-1], pl.pool)
    with pytest.raises(RuntimeError, match="tail"):
        _core.dgauss_slow_path(
            var.numerator, var.denominator, True, _words(t_word, 0, 0, 0, 2**28 - 1)
        )
    u, x = _out_word(pl)
    words = _words(t_word, 0, 0, 0, 2**28, u)
    assert _core.dgauss_slow_path(var.numerator, var.denominator, True, words) == x
    reject = _word_for(pl.prefix[-1] + 1, pl.pool)  # a plain reject unit: no words for V
    assert _core.dgauss_slow_path(var.numerator, var.denominator, True, _words(reject, u)) == x


def _tau_scaled(pl: Plan, m: int) -> int:
    """floor(C phi(m) 2^128), decided at 90 digits."""
    ctx = decimal.Context(prec=90)
    t = ctx.multiply(ctx.multiply(pl.C, ref._phi(m, pl.a, pl.b)), decimal.Decimal(2**128))
    return int(t.to_integral_value(decimal.ROUND_FLOOR))


@pytest.mark.parametrize("var", [Fraction(300001, 3), Fraction(2**32)])
def test_undecided_exact_test_raises_and_its_neighbours_decide(var: Fraction) -> None:
    pl = _plan(var)
    j = next(i for i in range(1, pl.J) if pl.prefix[i + 1] - pl.prefix[i] >= 2 * pl.w)
    r, s = pl.w - 1, 1
    m = j * pl.w + r
    tau = _tau_scaled(pl, m)
    num, den = var.numerator, var.denominator

    def words(x: int, *more: int) -> np.ndarray[Any, Any]:
        # the pool unit of (m, s) in row x >> 128, then the 128 bits of x below it
        k = x >> 128
        assert pl.A[j] <= k < pl.A[j] + (pl.prefix[j + 1] - pl.prefix[j]) // (2 * pl.w)
        t = pl.prefix[j] + (k - pl.A[j]) * 2 * pl.w + s * pl.w + r
        return _words(_word_for(t, pl.pool), *_v_words(x % 2**128), *more)

    # k + v / 2^128 within 2^-128 below tau: no 128 bits can decide it
    with pytest.raises(RuntimeError, match="undecided"):
        _core.dgauss_slow_path(num, den, True, words(tau))
    for stage2 in (False, True):
        with pytest.raises(RuntimeError, match="undecided"):
            _core.dgauss_exact(num, den, tau >> 128, m, s, (tau >> 64) % 2**64, tau % 2**64, stage2)
    # Beyond the width of the bounds on tau (below 2 C 2^9 units of 2^-128) both answers are proven.
    margin = 2**44
    assert _core.dgauss_slow_path(num, den, True, words(tau - margin)) == -m
    u, x = _out_word(pl)
    assert _core.dgauss_slow_path(num, den, True, words(tau + margin, u)) == x


@pytest.mark.parametrize("var", [Fraction(7, 3), Fraction(300001, 3), Fraction(2**32)])
def test_exact_test_agrees_with_decimal_at_both_stages(var: Fraction) -> None:
    pl = _plan(var)
    rng = np.random.default_rng(7)
    for _ in range(300):
        m = int(rng.integers(1, pl.J * pl.w))
        tau = _tau_scaled(pl, m)
        k = max(0, (tau >> 128) + int(rng.integers(-2, 2)))
        v = int(rng.integers(0, 2**63)) * 2**65 + int(rng.integers(0, 2**63))
        want = (k << 128) + v < tau
        for stage2 in (False, True):
            num, den = var.numerator, var.denominator
            assert _core.dgauss_exact(num, den, k, m, 0, v >> 64, v % 2**64, stage2) == want


# ---- garbage ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num", "den"), [(0, 1), (1, 0), (1, 2**13), (2**32 + 1, 1), (2**45, 2**12 - 1), (2**64 - 1, 1)]
)
def test_core_refuses_bad_variances_everywhere(num: int, den: int) -> None:
    with pytest.raises(ValueError):
        _core.dgauss_plan(num, den)
    with pytest.raises(ValueError):
        _core.dgauss_sample(bytes(32), num, den, np.empty(3, np.int64))
    with pytest.raises(ValueError):
        _core.dgauss_add(np.zeros(3, np.uint32), bytes(32), num, den, 20)
    with pytest.raises(ValueError):
        _core.dgauss_cks_sample(bytes(32), num, den, np.empty(3, np.int64))
    with pytest.raises(ValueError):
        _core.dgauss_exact(num, den, 0, 1, 0, 0, 0, False)
    with pytest.raises(ValueError):
        _core.dgauss_slow_path(num, den, True, _words(1, 2, 3))


def test_core_refuses_garbage_arguments() -> None:
    with pytest.raises(TypeError):
        _core.dgauss_plan(-1, 1)
    with pytest.raises(TypeError):
        _core.dgauss_plan("1", 1)  # type: ignore[arg-type]
    for num, den in ((1, 0), (2**62, 1), (1, 2**56)):
        with pytest.raises(ValueError):
            _core.dgauss_exp_bounds(num, den)
    with pytest.raises(TypeError):
        _core.dgauss_exp_bounds(1.5, 1)  # type: ignore[arg-type]
    pl = _plan(Fraction(7, 3))
    with pytest.raises(ValueError):
        _core.dgauss_exact(7, 3, 0, pl.J * pl.w, 0, 0, 0, False)  # m beyond the table
    with pytest.raises(ValueError):
        _core.dgauss_exact(7, 3, 0, 1, 2, 0, 0, False)
    with pytest.raises(ValueError):
        _core.dgauss_exact(7, 3, 2**33, 1, 0, 0, 0, False)
    with pytest.raises(IndexError):
        _core.dgauss_slow_path(7, 3, True, _words())  # the words run out
    with pytest.raises(TypeError):
        _core.dgauss_slow_path(7, 3, True, np.zeros(4, np.int64))
    with pytest.raises(ValueError):
        _core.dgauss_add(np.zeros(3, np.uint16), bytes(32), 7, 3, 17)
    with pytest.raises(ValueError):
        _core.dgauss_add(np.zeros(3, np.uint32), bytes(32), 7, 3, 0)
    with pytest.raises(ValueError):
        _core.dgauss_sample(bytes(31), 7, 3, np.empty(3, np.int64))
    with pytest.raises(TypeError):
        _core.dgauss_sample(bytes(32), 7, 3, np.empty(3, np.int32))
    with pytest.raises(ValueError):
        _core.dgauss_cks_add(np.zeros(3, np.uint32), bytes(32), 7, 3, 33)


@pytest.mark.parametrize(
    ("variance", "error"),
    [
        (0, InputError),
        (Fraction(1, 2**13), InputError),
        (2**33, InputError),
        ("2", InputTypeError),
        (None, InputTypeError),
        (True, InputTypeError),
        (float("nan"), InputError),
    ],
)
def test_faces_refuse_bad_variances(variance: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        noise.sample_dgauss_cks(_seed("g"), 4, variance)
    with pytest.raises(error):
        noise.add_dgauss_noise_cks(np.zeros(4, np.uint32), _seed("g"), variance, 20)
    with pytest.raises(error):
        noise.dgauss_table(variance)


def test_faces_refuse_bad_buffers_and_seeds() -> None:
    with pytest.raises(InputTypeError):
        noise.add_dgauss_noise(np.zeros(4, np.uint16), _seed("g"), 2, 17)
    with pytest.raises(InputTypeError):
        noise.add_dgauss_noise(np.zeros(8, np.uint32)[::2], _seed("g"), 2, 20)
    ro = np.zeros(4, np.uint32)
    ro.flags.writeable = False
    with pytest.raises(InputTypeError):
        noise.add_dgauss_noise(ro, _seed("g"), 2, 20)
    with pytest.raises(InputError):
        noise.sample_dgauss(b"x" * 31, 4, 2)
    with pytest.raises(InputTypeError):
        noise.add_dgauss_noise_cks(np.zeros(4, np.int32), _seed("g"), 2, 20)
    with pytest.raises(InputError):
        noise.sample_dgauss_cks(_seed("g"), -1, 2)
