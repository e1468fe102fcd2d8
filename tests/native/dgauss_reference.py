"""A second implementation of the table discrete Gaussian sampler of docs/privacy.md, in plain
Python from the raw keystream: every integer of the plan and every sample must equal the C++ ones.

The real numbers of the description (phi(m) = exp(-m^2 / (2 sigma^2)) and the floors and ceilings
built from it) are evaluated with ``decimal`` at 90 significant digits, far beyond what any of
them needs; an interval that still straddles an integer raises instead of guessing.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

from native import mask

NONCE = b"FedgateNoise"
SECONDARY_BLOCK = 2**31
TAIL_SIGMAS_SQ = 208  # J is the least with (J w)^2 >= 208 sigma^2: phi(M0) <= e^-104
BUCKETS_PER_SIGMA_LOG2 = 8
_CTX = decimal.Context(prec=90)
_SLACK = decimal.Decimal(10) ** -80


class Undecided(Exception):
    """A comparison the reference cannot settle at its precision (never expected in tests)."""


def _phi(m: int, a: int, b: int) -> decimal.Decimal:
    return _CTX.exp(_CTX.divide(-decimal.Decimal(m * m * b), decimal.Decimal(2 * a)))


def _floor(x: decimal.Decimal) -> int:
    lo = int(_CTX.multiply(x, 1 - _SLACK).to_integral_value(decimal.ROUND_FLOOR))
    hi = int(_CTX.multiply(x, 1 + _SLACK).to_integral_value(decimal.ROUND_FLOOR))
    if lo != hi:
        raise Undecided(f"floor of {x}")
    return lo


@dataclass
class Plan:
    a: int
    b: int
    omega: int
    J: int
    C: int
    Q: list[int]
    A: list[int]
    p: int
    thr: list[int]
    alias: list[int]
    pool: int  # weight of the pool outcome J
    prefix: list[int]  # prefix[j] = sum_{i<j} 2w (Q_i - A_i), prefix[J] = maybe units in all

    @property
    def w(self) -> int:
        return 1 << self.omega


def plan(var: Fraction) -> Plan:
    a, b = var.numerator, var.denominator
    e = (a // b).bit_length() - 1
    omega = max(0, e // 2 - BUCKETS_PER_SIGMA_LOG2)
    w = 1 << omega
    J = 1
    while (J * w) ** 2 * b < TAIL_SIGMAS_SQ * a:
        J += 1
    phis = [_phi(j * w, a, b) for j in range(J)]
    # Bucket 0 of width 1 holds only x = 0, counted once, not once per sign.
    s = _CTX.add(sum(phis[1:], decimal.Decimal(0)), decimal.Decimal(1 if w > 1 else 0.5))
    C = 2 * _floor(_CTX.divide(decimal.Decimal(2**32 - 1 - 2 * w * J), 4 * w * s))
    Q, A = [], []
    for j in range(J):
        if j == 0:
            Q.append(C if w > 1 else C // 2)
            A.append(_floor(C * _phi(w - 1, a, b)) if w > 1 else C // 2)
            continue
        Q.append(-_floor(-C * phis[j]))
        A.append(_floor(C * _phi(j * w + w - 1, a, b)))
    weights = [2 * w * x for x in A]
    p = J.bit_length()
    weights += [2**32 - sum(weights)] + [0] * ((1 << p) - J - 1)
    thr, alias = _alias(weights, 1 << (32 - p))
    prefix = [0]
    for j in range(J):
        prefix.append(prefix[-1] + 2 * w * (Q[j] - A[j]))
    return Plan(a, b, omega, J, C, Q, A, p, thr, alias, weights[J], prefix)


def _alias(weights: list[int], cap: int) -> tuple[list[int], list[int]]:
    """Vose's alias method in exact integers, lists used as stacks (the order is normative)."""
    w = list(weights)
    thr, alias = [cap] * len(w), list(range(len(w)))
    small = [i for i, x in enumerate(w) if x < cap]
    large = [i for i, x in enumerate(w) if x >= cap]
    while small and large:
        s, g = small.pop(), large.pop()
        thr[s], alias[s] = w[s], g
        w[g] -= cap - w[s]
        (small if w[g] < cap else large).append(g)
    return thr, alias


def words32(seed: bytes, block: int) -> Iterator[int]:
    """Little-endian uint32 words of the noise keystream from ``block`` on."""
    while True:
        chunk = mask.chacha20_keystream(seed, NONCE, block, 1024)
        block += 16
        yield from (int.from_bytes(chunk[i : i + 4], "little") for i in range(0, 1024, 4))


def uniform32(words: Iterator[int], n: int) -> int:
    """Lemire's multiply-shift on 32-bit words, exactly uniform in [0, n)."""
    x = next(words) * n
    if x % 2**32 < n:
        t = (2**32 - n) % n
        while x % 2**32 < t:
            x = next(words) * n
    return x >> 32


def _v128(words: Iterator[int]) -> int:
    v = 0
    for _ in range(4):
        v = (v << 32) | next(words)
    return v


def exact(pl: Plan, k: int, m: int, s: int, v: int) -> bool:
    """Is k + (v + theta) / 2^128 < tau(m, s) for every theta in [0, 1)? Raises if undecided."""
    if m == 0:
        tau2 = (pl.C if s == 0 else 0) << 128
        lo = hi = decimal.Decimal(tau2)
    else:
        t = _CTX.multiply(_CTX.multiply(pl.C, _phi(m, pl.a, pl.b)), decimal.Decimal(2**128))
        lo, hi = _CTX.multiply(t, 1 - _SLACK), _CTX.multiply(t, 1 + _SLACK)
    x = (k << 128) + v
    if x + 1 <= lo:
        return True
    if x >= hi:
        return False
    raise Undecided("exact test")


def decode(pl: Plan, u: int) -> tuple[str, int]:
    """The fast path of one 32-bit word: ("out", x), ("pool", 0) or ("reject", 0)."""
    q = 32 - pl.p
    slot, v = u >> q, u & ((1 << q) - 1)
    o = slot if v < pl.thr[slot] else pl.alias[slot]
    if o == pl.J:
        return "pool", 0
    r, s = v % pl.w, (v >> pl.omega) & 1
    m = o * pl.w + r
    if pl.w > 1 and m == 0 and s == 1:
        return "reject", 0
    return "out", -m if s else m


def slow(pl: Plan, kind: str, sec: Iterator[int]) -> int:
    """Exception path: from a pool hit or a rejection, proposals from the secondary words."""
    while True:
        if kind == "pool":
            t = uniform32(sec, pl.pool)
            if t < pl.prefix[-1]:
                j = max(i for i in range(pl.J) if pl.prefix[i] <= t)
                off = t - pl.prefix[j]
                r, s = off % pl.w, (off >> pl.omega) & 1
                k = pl.A[j] + (off >> (pl.omega + 1))
                m = j * pl.w + r
                if exact(pl, k, m, s, _v128(sec)):
                    return -m if s else m
            elif t == pl.prefix[-1] and _v128(sec) < 2**28:
                raise Undecided("tail")
        kind, x = decode(pl, next(sec))
        if kind == "out":
            return x


def samples(seed: bytes, n: int, var: Fraction, pl: Plan | None = None) -> tuple[list[int], int]:
    """n draws of the table sampler and how many of them took the slow path."""
    pl = plan(var) if pl is None else pl
    prim, sec = words32(seed, 0), words32(seed, SECONDARY_BLOCK)
    out, slow_count = [], 0
    for _ in range(n):
        kind, x = decode(pl, next(prim))
        if kind != "out":
            slow_count += 1
            x = slow(pl, kind, sec)
        out.append(x)
    return out, slow_count
