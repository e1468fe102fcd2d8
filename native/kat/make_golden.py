"""Write native/kat/golden.txt: known answers of the native kernels, taken from the Python face.

Run on x86-64 after ``pip install -e .``: ``python native/kat/make_golden.py``. The C++ driver
``native/kat/kat_main.cpp`` replays every line against the pure kernels (no Python), so a build
for another architecture (aarch64 under qemu-user, .ci/aarch64-kat.sh) must reproduce x86-64 bit
for bit.

Inputs that would make the file large are not stored: both sides regenerate them from a 64-bit
seed with splitmix64, and outputs are stored as FNV-1a-64 digests of their little-endian bytes.
The RFC 8439 ChaCha20 vectors come from ../shared/vectors/chacha20_rfc8439.json when present.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from native import mask, packing, quant, shamir

_M64 = (1 << 64) - 1
_PRIME = (1 << 61) - 1
HERE = Path(__file__).resolve().parent


def splitmix64(state: int) -> Iterator[int]:
    """The splitmix64 sequence from ``state`` (mirrored by kat_main.cpp)."""
    while True:
        state = (state + 0x9E3779B97F4A7C15) & _M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        yield z ^ (z >> 31)


def gen_ring(gen: int, n: int, bits: int) -> np.ndarray[Any, Any]:
    it = splitmix64(gen)
    values = [next(it) & ((1 << bits) - 1) for _ in range(n)]
    return np.array(values, dtype=mask.ring_dtype(bits))


def gen_f32(gen: int, n: int) -> np.ndarray[Any, Any]:
    """Floats in [-2, 2), all exactly representable: (top 24 bits - 2^23) * 2^-22."""
    it = splitmix64(gen)
    return np.array([((next(it) >> 40) - (1 << 23)) * 2.0**-22 for _ in range(n)], np.float32)


def gen_below(gen: int, n: int, bound: int) -> list[int]:
    it = splitmix64(gen)
    return [next(it) % (bound + 1) for _ in range(n)]


def fnv(data: bytes | np.ndarray[Any, Any]) -> str:
    """FNV-1a 64 of the little-endian bytes, as 16 hex digits."""
    raw = data.astype(data.dtype.newbyteorder("<")).tobytes() if isinstance(data, np.ndarray) \
        else data
    h = 0xCBF29CE484222325
    for byte in raw:
        h = ((h ^ byte) * 0x100000001B3) & _M64
    return f"{h:016x}"


def seed_of(i: int) -> bytes:
    """A fixed, public 32-byte seed per index (known answers, not secrets)."""
    return bytes((i * 37 + j * 11 + 5) & 0xFF for j in range(32))


def chacha_lines(vectors: Path) -> list[str]:
    # The known answers must always carry the RFC vectors: no file is an error, not a gap.
    if not vectors.is_file():
        raise SystemExit(f"make_golden: RFC 8439 vectors not found at {vectors} (see --vectors)")
    doc = json.loads(vectors.read_text())
    out = []
    for v in (*doc["block_function"], *doc["encryption"]):
        stream = v.get("keystream") or bytes(
            p ^ c for p, c in zip(bytes.fromhex(v["plaintext"]), bytes.fromhex(v["ciphertext"]),
                                  strict=True)).hex()
        out.append(f"chacha {v['key']} {v['nonce']} {v['counter']} {stream}")
    return out


def mask_lines() -> list[str]:
    out = []
    lengths = (1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 255, 256, 257, 1000, 4099, 100003)
    for i, n in enumerate(lengths):
        for bits in (1, 8, 12, 16, 17, 24, 31, 32):
            digest = fnv(mask.expand(seed_of(i), n, bits))
            out.append(f"expand {seed_of(i).hex()} {n} {bits} {digest}")
    for i, (bits, n, n_add, n_sub) in enumerate(
        [(16, 100003, 6, 5), (12, 4099, 1, 0), (32, 2053, 0, 3), (24, 65, 2, 2), (1, 257, 3, 1)]
    ):
        add = [seed_of(100 + 10 * i + j) for j in range(n_add)]
        sub = [seed_of(200 + 10 * i + j) for j in range(n_sub)]
        acc = gen_ring(1000 + i, n, bits)
        mask.apply_masks(acc, add, sub, bits)
        fields = [str(v) for v in (bits, n, 1000 + i, n_add, n_sub)]
        fields += [s.hex() for s in (*add, *sub)] + [fnv(acc)]
        out.append("apply " + " ".join(fields))
    sums = [(16, 100, 1001), (32, 7, 4099), (9, 33, 17), (20, 3, 100003)]
    for i, (bits, m, n) in enumerate(sums):
        rows = [gen_ring(2000 + 100 * i + r, n, bits) for r in range(m)]
        out.append(f"ringsum {bits} {m} {n} {2000 + 100 * i} {fnv(mask.ring_sum(rows, bits))}")
        a, b = rows[0].copy(), rows[1 % m]
        mask.ring_add(a, b, bits)
        c = rows[0].copy()
        mask.ring_sub(c, b, bits)
        out.append(f"ringaddsub {bits} {n} {2000 + 100 * i} {2000 + 100 * i + 1 % m} "
                   f"{fnv(a)} {fnv(c)}")
    return out


def tie_count(x: np.ndarray[Any, Any], clip: float, bits: int, seed: bytes) -> int:
    """How many elements docs/native.md's definition settles with the tie-break stream (h == g)."""
    top = float((1 << bits) - 1)
    v = np.minimum((np.clip(x.astype(np.float64), -clip, clip) + clip) * (top / (2 * clip)), top)
    g = np.floor((v - np.floor(v)) * 2.0**16)
    return int(np.count_nonzero(mask.expand(seed, len(x), 16) == g))


def quant_lines() -> list[str]:
    out = []
    # The last two are long enough to meet ties (about one element in 2^16), so the known answers
    # cover the tie-break stream on both ring widths.
    cases = [(8, 16, 1.0, 100003), (8, 8, 0.5, 1001), (4, 12, 3.0, 4099), (16, 24, 1.5, 2049),
             (12, 32, 0.25, 17), (1, 1, 2.0, 129), (8, 16, 1.5, 300007), (20, 32, 2.0, 300007)]
    ties = 0
    for i, (bits, ring, clip, n) in enumerate(cases):
        x = gen_f32(3000 + i, n)
        ties += tie_count(x, clip, bits, seed_of(300 + i))
        q = quant.quantize(x, clip, bits, seed_of(300 + i), ring_bits=ring)
        out.append(f"quantize {seed_of(300 + i).hex()} {n} {bits} {ring} {clip.hex()} "
                   f"{3000 + i} {fnv(q)}")
    if ties < 4:
        raise SystemExit(f"make_golden: the quantize cases meet only {ties} ties")
    for i, (bits, ring, clip, count, n) in enumerate(
        [(8, 16, 1.0, 256, 100003), (8, 32, 0.5, 1000, 513), (16, 32, 2.0, 3, 65)]
    ):
        total = np.array(gen_below(4000 + i, n, count * ((1 << bits) - 1)),
                         dtype=mask.ring_dtype(ring))
        deq = quant.dequantize(total, count, clip, bits)
        out.append(f"dequantize {n} {count} {bits} {ring} {clip.hex()} {4000 + i} {fnv(deq)}")
    for i, n in enumerate((1, 7, 8, 9, 1000, 100003)):
        x = gen_f32(5000 + i, n)
        norm = quant.l2_norm(x)
        max_norm = norm / 3.0 if norm > 0 else 1.0
        clipped, _ = quant.clip_l2(x, max_norm)
        out.append(f"l2 {n} {5000 + i} {struct.pack('<d', norm).hex()} {max_norm.hex()} "
                   f"{fnv(clipped)}")
    return out


def pack_lines() -> list[str]:
    out = []
    for i, bits in enumerate((1, 3, 7, 8, 9, 12, 15, 16, 17, 23, 24, 31, 32)):
        for n in (1, 5, 64, 1001):
            values = gen_ring(6000 + 50 * i + n, n, bits)
            out.append(f"pack {bits} {n} {6000 + 50 * i + n} {fnv(packing.pack(values, bits))}")
    return out


def field_lines() -> list[str]:
    out = []
    it = splitmix64(7000)
    for _ in range(16):
        a, b = next(it) % _PRIME or 1, next(it) % _PRIME
        out.append(f"field {a} {b} {a * b % _PRIME} {(a + b) % _PRIME} {(a - b) % _PRIME} "
                   f"{pow(a, _PRIME - 2, _PRIME)}")
    # Shamir through the Python face: shares of x86-64 recombine to the secret on any build.
    assert shamir.combine([1, 2, 3], shamir.split(b"k" * 32, 3, [1, 2, 3]), 3) == b"k" * 32
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = Path(os.environ.get("FEDGATE_SHARED", HERE.parents[2] / "shared"))
    parser.add_argument("--vectors", type=Path,
                        default=shared / "vectors" / "chacha20_rfc8439.json")
    parser.add_argument("--out", type=Path, default=HERE / "golden.txt")
    args = parser.parse_args(argv)
    lines = ["# fedgate native known answers, generated by native/kat/make_golden.py on x86-64",
             *chacha_lines(args.vectors), *mask_lines(), *quant_lines(), *pack_lines(),
             *field_lines()]
    args.out.write_text("\n".join(lines) + "\n")
    sys.stderr.write(f"{len(lines) - 1} known answers -> {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
