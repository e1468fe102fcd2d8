"""Distributed DP noise: throughput of the exact Skellam and discrete Gaussian samplers, their cost
next to quantization, the Hadamard rotation, and numpy's inexact float samplers as the peers.

Run from the repo root: ``python benchmarks/bench_dp.py [--quick]``. On the same d-vector (1e6,
1e5 with --quick) each repetition times, in rotating order, ``native.quant.quantize`` (8-bit
levels into a 20-bit ring), ``native.noise.add_noise`` (Skellam) and ``add_dgauss_noise``
(discrete Gaussian) at several per-gateway variances, numpy's ``Generator.poisson`` difference
and rounded ``Generator.normal`` of the same variances (not exact: float parameters, and a
rounded Gaussian is not a discrete Gaussian). Figures are medians of the wall
clock; ``noise_over_quantize_var*`` is median(noise time) / median(quantize time); ``ratios`` are
peer time / our time with numpy's samplers as the peers. The last line is one JSON object.
"""

# ruff: noqa: E402  (the thread caps below must precede the numpy import)
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info

from native import noise, quant, rotation

logger = logging.getLogger(__name__)

BITS = 8
RING_BITS = 20
VARIANCES = (Fraction(1), Fraction(10), Fraction(100))
DGAUSS_VARIANCES = (Fraction(1), Fraction(100), Fraction(10**6))


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(d: int, reps: int) -> dict[str, object]:
    """Interleaved repetitions; returns the JSON document."""
    x = (np.random.default_rng(0).standard_normal(d) * 0.01).astype(np.float32)
    qseed, nseed, rseed = bytes(range(32)), bytes(range(1, 33)), bytes(range(2, 34))
    acc = quant.quantize(x, 0.05, BITS, qseed, ring_bits=RING_BITS)
    gen = np.random.default_rng(1)
    cases: dict[str, Callable[[], object]] = {
        "quantize": lambda: quant.quantize(x, 0.05, BITS, qseed, ring_bits=RING_BITS),
        "rotate": lambda: rotation.rotate(x, rseed),
    }
    for v in VARIANCES:
        cases[f"add_noise_var{v}"] = lambda v=v: noise.add_noise(acc, nseed, v, RING_BITS)
        lam = float(v) / 2
        cases[f"numpy_skellam_var{v}"] = lambda lam=lam: gen.poisson(lam, d) - gen.poisson(lam, d)
    for v in DGAUSS_VARIANCES:
        cases[f"add_dgauss_var{v}"] = lambda v=v: noise.add_dgauss_noise(acc, nseed, v, RING_BITS)
        sd = float(v) ** 0.5
        cases[f"numpy_rounded_gauss_var{v}"] = lambda sd=sd: np.rint(gen.normal(0.0, sd, d))
    times: dict[str, list[float]] = {k: [] for k in cases}
    names = list(cases)
    for rep in range(reps):
        for i in range(len(names)):
            name = names[(rep + i) % len(names)]
            times[name].append(_timed(cases[name]))
        logger.info("rep %d/%d done", rep + 1, reps)
    med = {k: statistics.median(v) for k, v in times.items()}
    figures: dict[str, float] = {f"{k}_s": t for k, t in med.items()}
    ratios: dict[str, float] = {}
    for v in VARIANCES:
        ours = med[f"add_noise_var{v}"]
        figures[f"skellam_samples_per_s_var{v}"] = d / ours
        figures[f"noise_over_quantize_var{v}"] = ours / med["quantize"]
        ratios[f"numpy_skellam_var{v}"] = med[f"numpy_skellam_var{v}"] / ours
    for v in DGAUSS_VARIANCES:
        ours = med[f"add_dgauss_var{v}"]
        figures[f"dgauss_samples_per_s_var{v}"] = d / ours
        figures[f"dgauss_over_quantize_var{v}"] = ours / med["quantize"]
        ratios[f"numpy_rounded_gauss_var{v}"] = med[f"numpy_rounded_gauss_var{v}"] / ours
    return {
        "area": "dp",
        "machine": machine_info(reps=reps, d=d, bits=BITS, ring_bits=RING_BITS),
        "figures": figures,
        "ratios": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="d = 1e5, 3 repetitions")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    d, reps = (10**5, 3) if args.quick else (10**6, 7)
    print(json.dumps(run(d, reps)))


if __name__ == "__main__":
    main()
