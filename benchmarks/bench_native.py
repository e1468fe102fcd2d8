"""Native kernels against Flower's SecAgg+ primitives, plain numpy and memory bandwidth.

Run from the repo root: ``python benchmarks/bench_native.py [--quick]``. Every contender of a case
runs on the same vectors, the contenders of a case take turns (rotating order) within each
repetition, and every call is timed both by the wall clock and by the CPU time of its thread
(all kernels compared run single-threaded on the calling thread). Figures are medians; a ratio is
the median over repetitions of peer time / our time within one repetition, from CPU time in
``ratios`` and from the wall clock in ``ratios_wall_clock``. The last line is one JSON object.

What is compared, per case:
- quantize (d = 1e6): ``native.quant.quantize`` (8-bit levels in a 16-bit ring) vs Flower's
  ``quantize`` (``target_range`` = 255) vs docs/native.md's quantization written in numpy float64
  (keystream from a numpy ChaCha20), checked equal to ours bit for bit before timing.
- expand (d = 1e6): ``native.mask.expand`` vs Flower's ``pseudo_rand_gen`` (same modulus) vs
  ChaCha20 written in numpy; 32-bit words give the keystream bandwidth (bytes per second).
- client masking (d = 1e5, 10 neighbours): quantize + self mask + 10 pairwise masks. Flower's path
  is ``_collect_masked_vectors`` of ``flwr.client.mod.secure_aggregation.secaggplus_mod`` from the
  weighting to the final ``parameters_mod``, with the shared keys already agreed (key agreement and
  serialisation are left out on every side).
- ring sum of 100 vectors of 1e5 in the 16-bit ring vs numpy, Flower's server loop over its int64
  vectors, and ``np.copyto`` of the same bytes (the physical limit).
"""

# ruff: noqa: E402  (the thread caps below must precede the numpy import)
from __future__ import annotations

import os

# BLAS / OpenMP pools must be capped before numpy is imported; the kernels compared are
# single-threaded and the machine is shared.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import functools
import json
import logging
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info

logger = logging.getLogger(__name__)
Arr = np.ndarray[Any, Any]

CLIP = 1.0
QBITS = 8
PARTICIPANTS = 256
RING_BITS = QBITS + math.ceil(math.log2(PARTICIPANTS))  # 16
NEIGHBOURS = 10
_NONCE = np.frombuffer(b"LibsodiumDRG", dtype="<u4")
_SIGMA = np.frombuffer(b"expand 32-byte k", dtype="<u4")
TIE_COUNTER = 2**31  # first block of the quantizer's tie-break stream

TARGETS = {  # acceptance of issue 2: (ratio name, minimum)
    "quantize_vs_flower": 20.0,
    "expand_vs_flower": 3.0,
    "client_mask_vs_flower": 8.0,
    "ring_sum_vs_memcpy": 0.5,
}


# ---------------------------------------------------------------- plain numpy reference


def _rotl(x: Arr, n: int) -> Arr:
    return (x << np.uint32(n)) | (x >> np.uint32(32 - n))


def _quarter(s: list[Arr], a: int, b: int, c: int, d: int) -> None:
    s[a] += s[b]
    s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] += s[d]
    s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] += s[b]
    s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] += s[d]
    s[b] = _rotl(s[b] ^ s[c], 7)


def np_blocks(seed: bytes, counters: Arr) -> Arr:
    """ChaCha20-IETF blocks (key = seed, nonce ``LibsodiumDRG``) at ``counters``, (len, 16)."""
    m = len(counters)
    key = np.frombuffer(seed, dtype="<u4")
    init = [np.full(m, w, dtype=np.uint32) for w in (*_SIGMA, *key)]
    init.append(counters.astype(np.uint32))
    init += [np.full(m, w, dtype=np.uint32) for w in _NONCE]
    s = [w.copy() for w in init]
    for _ in range(10):
        _quarter(s, 0, 4, 8, 12)
        _quarter(s, 1, 5, 9, 13)
        _quarter(s, 2, 6, 10, 14)
        _quarter(s, 3, 7, 11, 15)
        _quarter(s, 0, 5, 10, 15)
        _quarter(s, 1, 6, 11, 12)
        _quarter(s, 2, 7, 8, 13)
        _quarter(s, 3, 4, 9, 14)
    return np.stack([s[i] + init[i] for i in range(16)], axis=1)  # block-major


def np_keystream_words(seed: bytes, n_words: int) -> Arr:
    """The keystream from counter 0 (the mask PRG) as uint32 words."""
    blocks = -(-n_words // 16)
    return np_blocks(seed, np.arange(blocks, dtype=np.uint32)).reshape(-1)[:n_words]


def np_expand(seed: bytes, n: int, bits: int) -> Arr:
    """The ring elements of ``native.mask.expand``, computed with numpy only."""
    if bits <= 16:
        words = np_keystream_words(seed, -(-n // 2)).view("<u2")[:n].copy()
    else:
        words = np_keystream_words(seed, n)
    if bits not in (16, 32):
        words &= words.dtype.type((1 << bits) - 1)
    return words


def np_quantize(x: Arr, clip: float, bits: int, seed: bytes, ring_bits: int) -> Arr:
    """docs/native.md's quantization in numpy float64: 16-bit draws, 32-bit tie-break words."""
    top = float((1 << bits) - 1)
    v = np.minimum((np.clip(x.astype(np.float64), -clip, clip) + clip) * (top / (2.0 * clip)), top)
    f = np.floor(v)
    t = (v - f) * 65536.0
    g = np.floor(t)
    h = np_keystream_words(seed, -(-x.size // 2)).view("<u2")[: x.size]
    up = h < g
    ties = np.flatnonzero(h == g)
    if ties.size:
        words = np_blocks(seed, TIE_COUNTER + ties // 16)[np.arange(ties.size), ties % 16]
        up[ties] = words * 2.0**-32 < t[ties] - g[ties]
    out: Arr = (f + up).astype(np.uint16 if ring_bits <= 16 else np.uint32)
    return out


def np_client_mask(x: Arr, qseed: bytes, own: bytes, add: list[bytes],
                   sub: list[bytes]) -> Arr:
    """Quantize, then add the self mask and the pairwise masks (ring wraps with the dtype)."""
    acc = np_quantize(x, CLIP, QBITS, qseed, RING_BITS)
    for s in (own, *add):
        acc += np_expand(s, acc.size, RING_BITS)
    for s in sub:
        acc -= np_expand(s, acc.size, RING_BITS)
    return acc


# ---------------------------------------------------------------- Flower's client path


def flower_client_mask(x: Arr, rd_seed: bytes, keys: dict[int, bytes], nid: int,
                       num_examples: int, max_weight: int) -> list[Arr]:
    """Flower 1.40 ``_collect_masked_vectors`` after key agreement, up to its ``parameters_mod``."""
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        factor_combine,
        parameters_addition,
        parameters_mod,
        parameters_multiply,
        parameters_subtraction,
    )
    from flwr.common.secure_aggregation.quantization import quantize
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen

    target_range, mod_range = (1 << QBITS) - 1, 1 << RING_BITS
    q_ratio = round(num_examples / max_weight * target_range)
    parameters = parameters_multiply([x], q_ratio / target_range)
    quantized = factor_combine(q_ratio, quantize(parameters, CLIP, target_range))
    dims = [a.shape for a in quantized]
    quantized = parameters_addition(quantized, pseudo_rand_gen(rd_seed, mod_range, dims))
    for node_id, shared_key in keys.items():
        pairwise = pseudo_rand_gen(shared_key, mod_range, dims)
        if nid > node_id:
            quantized = parameters_addition(quantized, pairwise)
        else:
            quantized = parameters_subtraction(quantized, pairwise)
    return parameters_mod(quantized, mod_range)


def flower_ring_sum(vectors: list[list[Arr]]) -> list[Arr]:
    """Flower's server loop in ``collect_masked_vectors_stage`` over decoded masked vectors."""
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        parameters_addition,
        parameters_mod,
    )

    total = vectors[0]
    for vec in vectors[1:]:
        total = parameters_addition(total, vec)
    return parameters_mod(total, 1 << RING_BITS)


# ---------------------------------------------------------------- timing


Samples = dict[str, list[float]]


def interleaved(contenders: dict[str, Callable[[], object]], reps: int) -> Samples:
    """Seconds per call of each contender; each repetition runs every one once, rotating order.

    For contender ``c`` the result holds ``c`` (wall-clock seconds) and ``c_cpu`` (CPU seconds of
    this thread, which every contender runs on). On a shared machine the wall clock of a long call
    includes the time slices other processes took, a short call's median does not: CPU time is
    what a dedicated core would show, so the ratios are taken from it.
    """
    names = list(contenders)
    for fn in contenders.values():  # warm caches, page in buffers, load lazy imports
        fn()
    samples: Samples = {key: [] for name in names for key in (name, f"{name}_cpu")}
    for rep in range(reps):
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
            contenders[name]()
            samples[name].append((time.perf_counter_ns() - wall) * 1e-9)
            samples[f"{name}_cpu"].append((time.thread_time_ns() - cpu) * 1e-9)
    return samples


def _idle_ticks() -> dict[int, int]:
    ticks: dict[int, int] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks[int(name[3:])] = int(fields[3]) + int(fields[4])  # idle + iowait
    return ticks


def pin_one_core() -> int | None:
    """Pin to the usable core that was idlest over the last half second.

    The kernels compared are single-threaded; one fixed core keeps them from being migrated
    mid-run, and on a shared machine the idlest core is the least disturbed one.
    """
    try:
        cores = sorted(os.sched_getaffinity(0))
        before = _idle_ticks()
        time.sleep(0.5)
        after = _idle_ticks()
        core = max(cores, key=lambda c: after.get(c, 0) - before.get(c, 0))
        os.sched_setaffinity(0, {core})
        return core
    except (AttributeError, OSError, ValueError):
        return None


# ---------------------------------------------------------------- cases


def bench_quantize(d: int, reps: int, rng: np.random.Generator) -> Samples:
    from flwr.common.secure_aggregation.quantization import quantize as fl_quantize

    from native import quant

    x = rng.standard_normal(d, dtype=np.float32) * np.float32(0.5)
    seed = os.urandom(32)
    ours = quant.quantize(x, CLIP, QBITS, seed, ring_bits=RING_BITS)
    ref = np_quantize(x, CLIP, QBITS, seed, RING_BITS)
    flower_params: list[Any] = [x]  # float32, as Flower's client hands it (its hint says float64)
    # The same documented arithmetic, bit for bit, ties included.
    if not np.array_equal(ours, ref):
        raise SystemExit("native quantize disagrees with the numpy reference")
    t = interleaved({
        "ours": lambda: quant.quantize(x, CLIP, QBITS, seed, ring_bits=RING_BITS),
        "flower": lambda: fl_quantize(flower_params, CLIP, (1 << QBITS) - 1),
        "numpy": lambda: np_quantize(x, CLIP, QBITS, seed, RING_BITS),
    }, reps)
    return {f"quantize_{k}_s": v for k, v in t.items()}


def bench_expand(d: int, reps: int) -> Samples:
    import nacl.utils
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen

    from native import mask

    seed = os.urandom(32)
    ref = np.frombuffer(nacl.utils.randombytes_deterministic(4 * d, seed), "<u4")
    assert np.array_equal(mask.expand(seed, d, 32), ref), "expand is not libsodium's keystream"
    assert np.array_equal(np_expand(seed, d, 32), ref), "numpy ChaCha20 is wrong"
    out: Samples = {}
    for bits in (32, RING_BITS):
        t = interleaved({
            "ours": functools.partial(mask.expand, seed, d, bits),
            "flower": functools.partial(pseudo_rand_gen, seed, 1 << bits, [(d,)]),
            "numpy": functools.partial(np_expand, seed, d, bits),
        }, reps)
        out.update({f"expand{bits}_{k}_s": v for k, v in t.items()})
    return out


def bench_client_mask(d: int, reps: int, rng: np.random.Generator) -> Samples:
    from native import mask, quant

    x = rng.standard_normal(d, dtype=np.float32) * np.float32(0.5)
    qseed, own = os.urandom(32), os.urandom(32)
    keys = {node: os.urandom(32) for node in range(1, NEIGHBOURS + 2) if node != 6}
    nid = 6  # half the neighbours below, half above: five adds and five subtractions
    add = [k for node, k in keys.items() if nid > node]
    sub = [k for node, k in keys.items() if nid < node]

    def ours() -> Arr:
        acc = quant.quantize(x, CLIP, QBITS, qseed, ring_bits=RING_BITS)
        mask.apply_masks(acc, [own, *add], sub, RING_BITS)
        return acc

    expected = quant.quantize(x, CLIP, QBITS, qseed, ring_bits=RING_BITS)
    for s in (own, *add):
        expected += mask.expand(s, d, RING_BITS)
    for s in sub:
        expected -= mask.expand(s, d, RING_BITS)
    assert np.array_equal(ours(), expected), "apply_masks differs from expand-and-add"
    if not np.array_equal(np_client_mask(x, qseed, own, add, sub), expected):
        raise SystemExit("numpy client masking disagrees with ours")
    t = interleaved({
        "ours": ours,
        "flower": lambda: flower_client_mask(x, own, keys, nid, 1, 1),
        "numpy": lambda: np_client_mask(x, qseed, own, add, sub),
    }, reps)
    return {f"client_mask_{k}_s": v for k, v in t.items()}


def bench_ring_sum(m: int, d: int, reps: int) -> Samples:
    from native import mask

    vectors = np.frombuffer(os.urandom(2 * m * d), dtype=np.uint16).reshape(m, d).copy()
    flower_vecs = [[row.astype(np.int64)] for row in vectors]  # what Flower decodes: int64
    copy_dst = np.empty_like(vectors)
    expected = vectors.sum(axis=0, dtype=np.uint16)
    assert np.array_equal(mask.ring_sum(vectors, RING_BITS), expected), "ring_sum is wrong"
    assert np.array_equal(flower_ring_sum(flower_vecs)[0], expected)
    t = interleaved({
        "ours": lambda: mask.ring_sum(vectors, RING_BITS),
        "numpy": lambda: vectors.sum(axis=0, dtype=np.uint16),
        "flower": lambda: flower_ring_sum(flower_vecs),
        "memcpy": lambda: np.copyto(copy_dst, vectors),
    }, reps)
    return {f"ring_sum_{k}_s": v for k, v in t.items()}


def wire_bytes(d: int, rng: np.random.Generator) -> dict[str, float]:
    """Bytes per parameter of one masked update on the wire, 8-bit levels, 256 participants."""
    from flwr.common import ndarray_to_bytes

    from native import packing

    x = rng.standard_normal(d, dtype=np.float32)
    keys = {node: os.urandom(32) for node in range(2, 12)}
    masked = flower_client_mask(x, os.urandom(32), keys, 1, 1, 1)
    flower_bytes = sum(len(ndarray_to_bytes(a)) for a in masked)
    return {
        "wire_ours_bytes_per_param": packing.packed_size(d, RING_BITS) / d,
        "wire_flower_bytes_per_param": flower_bytes / d,
    }


# ---------------------------------------------------------------- report


PAIRS = {  # ratio name -> (peer samples, our samples); each ratio is peer_time / our_time
    "quantize_vs_flower": ("quantize_flower_s", "quantize_ours_s"),
    "quantize_vs_numpy": ("quantize_numpy_s", "quantize_ours_s"),
    "expand_vs_flower": ("expand32_flower_s", "expand32_ours_s"),
    "expand_vs_numpy": ("expand32_numpy_s", "expand32_ours_s"),
    f"expand{RING_BITS}_vs_flower": (f"expand{RING_BITS}_flower_s", f"expand{RING_BITS}_ours_s"),
    f"expand{RING_BITS}_vs_numpy": (f"expand{RING_BITS}_numpy_s", f"expand{RING_BITS}_ours_s"),
    "client_mask_vs_flower": ("client_mask_flower_s", "client_mask_ours_s"),
    "client_mask_vs_numpy": ("client_mask_numpy_s", "client_mask_ours_s"),
    "ring_sum_vs_flower": ("ring_sum_flower_s", "ring_sum_ours_s"),
    "ring_sum_vs_numpy": ("ring_sum_numpy_s", "ring_sum_ours_s"),
    # ours_bandwidth / memcpy_bandwidth over the same bytes = memcpy_time / our_time
    "ring_sum_vs_memcpy": ("ring_sum_memcpy_s", "ring_sum_ours_s"),
}


def ratios_of(samples: Samples, suffix: str) -> dict[str, float]:
    """Median over repetitions of the per-repetition ratio peer_time / our_time.

    The two calls of a repetition ran back to back, so on a shared machine their ratio is far
    steadier than the ratio of two medians taken over the whole run. ``suffix`` picks CPU time
    (``"_cpu"``) or wall-clock time (``""``).
    """
    def key(name: str) -> str:
        return name.removesuffix("_s") + suffix + "_s"

    r = {name: statistics.median(
            p / o for p, o in zip(samples[key(peer)], samples[key(ours)], strict=True))
         for name, (peer, ours) in PAIRS.items()}
    return {k: round(v, 3) for k, v in r.items()}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    parser.add_argument("--reps", type=_positive, default=None, help="repetitions per case")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    reps = args.reps or (5 if args.quick else 41)
    core = pin_one_core()
    rng = np.random.default_rng(20261123)  # benchmark data only; every seed comes from os.urandom
    big, small, rows = 1_000_000, 100_000, 100

    samples: Samples = {}
    cases: list[tuple[str, Callable[[], Samples]]] = [
        ("quantize", lambda: bench_quantize(big, reps, rng)),
        ("expand", lambda: bench_expand(big, reps)),
        ("client masking", lambda: bench_client_mask(small, reps, rng)),
        ("ring sum", lambda: bench_ring_sum(rows, small, reps)),
    ]
    for label, run in cases:
        logger.info("measuring %s ...", label)
        samples.update(run())
    figures = {name: statistics.median(ts) for name, ts in samples.items()}
    spread = {name: [float(f"{q:.4g}") for q in np.percentile(ts, [25, 75])]
              for name, ts in samples.items()}
    figures.update(wire_bytes(small, rng))
    # Bandwidths from CPU time: the bytes one core moves per second of its own time.
    figures["expand32_ours_keystream_GBps"] = 4 * big / figures["expand32_ours_cpu_s"] / 1e9
    in_bytes = figures["ring_sum_input_bytes"] = 2.0 * rows * small
    for who in ("ours", "numpy", "memcpy"):
        figures[f"ring_sum_{who}_GBps"] = in_bytes / figures[f"ring_sum_{who}_cpu_s"] / 1e9

    ratios = ratios_of(samples, "_cpu")
    ratios["wire_vs_flower"] = round(
        figures["wire_flower_bytes_per_param"] / figures["wire_ours_bytes_per_param"], 3)
    checks = {name: ratios[name] >= target for name, target in TARGETS.items()}
    checks["keystream_ge_2GBps"] = figures["expand32_ours_keystream_GBps"] >= 2.0
    checks["wire_le_2_bytes_per_param"] = figures["wire_ours_bytes_per_param"] <= 2.0
    report: dict[str, Any] = {
        "area": "native",
        "machine": machine_info(pinned_core=core, reps=reps),
        "params": {"quantize_bits": QBITS, "ring_bits": RING_BITS, "clip": CLIP,
                   "neighbours": NEIGHBOURS, "d_large": big, "d_small": small, "rows": rows},
        "figures": {k: float(f"{v:.6g}") for k, v in figures.items()},
        "ratios": ratios,
        "ratios_wall_clock": ratios_of(samples, ""),
        "acceptance": checks,
        "spread_p25_p75_s": spread,
    }
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
