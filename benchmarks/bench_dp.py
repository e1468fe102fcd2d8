"""Distributed DP noise: throughput of the exact discrete Gaussian (default) and Skellam samplers,
their cost next to quantization, the Hadamard rotation, and numpy's inexact float samplers as the
peers.

Run from the repo root: ``python benchmarks/bench_dp.py [--quick]``. On the same d-vector (1e6,
1e5 with --quick) each repetition times, in rotating order, ``native.quant.quantize`` (8-bit
levels into a 20-bit ring, as a DP round uses), ``native.noise.add_dgauss_noise`` (the table
discrete Gaussian) at per-gateway variances from 1 to 2**32, the reference sampler
``add_dgauss_noise_cks`` at two of them, ``add_noise`` (Skellam) at small variances, numpy's
``Generator.poisson`` difference and rounded ``Generator.normal`` of the same variances (not exact:
float parameters, and a rounded Gaussian is not a discrete Gaussian), and the rotation.

Figures are medians over the repetitions, of the wall clock (``*_s``) and of the process CPU time
(``*_cpu_s``, less disturbed by other jobs on a shared machine). ``noise_over_quantize_var*`` is
median(discrete Gaussian time) / median(quantize time) in CPU time (``*_wall`` in wall time),
``skellam_over_quantize_var*`` the same for Skellam; ``ratios`` are peer time / our time with
numpy's samplers and the reference sampler as peers. A second phase times quantize and the
discrete Gaussian back to back with nothing else in between (``*_warm_*``): there quantize's
output allocation and caches stay warm, which makes quantize faster than in the interleaved run.
``acceptance`` checks issue 7's line in both phases: adding the default noise costs at most 2x the
quantization time at every variance. The machine block carries the load average before and
after. The last line is one JSON object.
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
SKELLAM_VARIANCES = (Fraction(1), Fraction(10), Fraction(100))
DGAUSS_VARIANCES = (
    Fraction(1),
    Fraction(100),
    Fraction(10**4),
    Fraction(10**6),
    Fraction(10**8),
    Fraction(2**32),
)
CKS_VARIANCES = (Fraction(1), Fraction(10**6))


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _label(v: Fraction) -> str:
    return f"{float(v):g}"


def _cases(d: int) -> tuple[dict[str, Callable[[], object]], dict[str, float]]:
    """The timed calls, and the one-off build time of each discrete Gaussian table."""
    x = (np.random.default_rng(0).standard_normal(d) * 0.01).astype(np.float32)
    qseed, nseed, rseed = bytes(range(32)), bytes(range(1, 33)), bytes(range(2, 34))
    acc = quant.quantize(x, 0.05, BITS, qseed, ring_bits=RING_BITS)
    gen = np.random.default_rng(1)
    builds: dict[str, float] = {}
    cases: dict[str, Callable[[], object]] = {
        "quantize": lambda: quant.quantize(x, 0.05, BITS, qseed, ring_bits=RING_BITS),
        "rotate": lambda: rotation.rotate(x, rseed),
    }
    for v in DGAUSS_VARIANCES:
        builds[f"dgauss_table_build_var{_label(v)}_s"] = _timed(lambda v=v: noise.dgauss_table(v))[
            0
        ]
        cases[f"dgauss_var{_label(v)}"] = lambda v=v: noise.add_dgauss_noise(
            acc, nseed, v, RING_BITS
        )
        sd = float(v) ** 0.5
        cases[f"numpy_rounded_gauss_var{_label(v)}"] = lambda sd=sd: np.rint(gen.normal(0.0, sd, d))
    for v in CKS_VARIANCES:
        cases[f"dgauss_cks_var{_label(v)}"] = lambda v=v: noise.add_dgauss_noise_cks(
            acc, nseed, v, RING_BITS
        )
    for v in SKELLAM_VARIANCES:
        cases[f"skellam_var{_label(v)}"] = lambda v=v: noise.add_noise(acc, nseed, v, RING_BITS)
        lam = float(v) / 2
        cases[f"numpy_skellam_var{_label(v)}"] = lambda lam=lam: (
            gen.poisson(lam, d) - gen.poisson(lam, d)
        )
    return cases, builds


def _measure(cases: dict[str, Callable[[], object]], reps: int) -> dict[str, tuple[float, float]]:
    """Interleaved repetitions (rotating start); median wall and CPU seconds per case."""
    names = list(cases)
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for rep in range(reps):
        for i in range(len(names)):
            name = names[(rep + i) % len(names)]
            w, c = _timed(cases[name])
            wall[name].append(w)
            cpu[name].append(c)
        logger.info("rep %d/%d done", rep + 1, reps)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in names}


def _warm_pairs(cases: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """quantize and then one noise case, back to back with nothing else between them (the
    interleaved run evicts caches and churns the allocator around quantize's output); per
    variance the median noise CPU time over the median quantize CPU time of its pairs."""
    out: dict[str, float] = {}
    for v in DGAUSS_VARIANCES:
        q_times, n_times = [], []
        for _ in range(3 * reps):
            q_times.append(_timed(cases["quantize"])[1])
            n_times.append(_timed(cases[f"dgauss_var{_label(v)}"])[1])
        out[f"noise_over_quantize_warm_var{_label(v)}"] = statistics.median(
            n_times
        ) / statistics.median(q_times)
        out[f"quantize_warm_cpu_s_var{_label(v)}"] = statistics.median(q_times)
    return out


def run(d: int, reps: int) -> dict[str, object]:
    """Builds the cases, measures them and returns the JSON document."""
    load_before = os.getloadavg()
    cases, builds = _cases(d)
    med = _measure(cases, reps)
    figures: dict[str, float] = dict(builds)
    for k, (w, c) in med.items():
        figures[f"{k}_s"], figures[f"{k}_cpu_s"] = w, c
    q_wall, q_cpu = med["quantize"]
    ratios: dict[str, float] = {}
    for v in DGAUSS_VARIANCES:
        w, c = med[f"dgauss_var{_label(v)}"]
        figures[f"dgauss_samples_per_s_var{_label(v)}"] = d / c
        figures[f"noise_over_quantize_var{_label(v)}"] = c / q_cpu
        figures[f"noise_over_quantize_var{_label(v)}_wall"] = w / q_wall
        figures[f"dgauss_slow_fraction_var{_label(v)}"] = noise.dgauss_table(v).slow_fraction
        ratios[f"numpy_rounded_gauss_var{_label(v)}"] = (
            med[f"numpy_rounded_gauss_var{_label(v)}"][1] / c
        )
    for v in CKS_VARIANCES:
        ratios[f"dgauss_cks_var{_label(v)}"] = (
            med[f"dgauss_cks_var{_label(v)}"][1] / med[f"dgauss_var{_label(v)}"][1]
        )
    for v in SKELLAM_VARIANCES:
        c = med[f"skellam_var{_label(v)}"][1]
        figures[f"skellam_samples_per_s_var{_label(v)}"] = d / c
        figures[f"skellam_over_quantize_var{_label(v)}"] = c / q_cpu
        ratios[f"numpy_skellam_var{_label(v)}"] = med[f"numpy_skellam_var{_label(v)}"][1] / c
    figures.update(_warm_pairs(cases, reps))
    worst = max(figures[f"noise_over_quantize_var{_label(v)}"] for v in DGAUSS_VARIANCES)
    worst_warm = max(figures[f"noise_over_quantize_warm_var{_label(v)}"] for v in DGAUSS_VARIANCES)
    info = machine_info(reps=reps, d=d, bits=BITS, ring_bits=RING_BITS)
    info["loadavg_before"], info["loadavg_after"] = list(load_before), list(os.getloadavg())
    return {
        "area": "dp",
        "machine": info,
        "figures": figures,
        "ratios": ratios,
        "acceptance": {
            "noise_le_2x_quantize": worst <= 2.0,
            "worst_noise_over_quantize": worst,
            "noise_le_2x_quantize_warm": worst_warm <= 2.0,
            "worst_noise_over_quantize_warm": worst_warm,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="d = 1e5, 3 repetitions")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    d, reps = (10**5, 3) if args.quick else (10**6, 9)
    print(json.dumps(run(d, reps)))


if __name__ == "__main__":
    main()
