"""ChaCha20 known answers (RFC 8439) and bit-identity of the mask PRG with libsodium (PyNaCl)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nacl.utils
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from native import _core, mask
from native.errors import InputError

LEVELS = ["scalar", "avx2", "avx512"] if _core.arch == "x86_64" else ["scalar", "neon"]


def _vectors(vectors_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((vectors_dir / "chacha20_rfc8439.json").read_text())
    return data


def _nacl_words(seed: bytes, n: int, bits: int) -> np.ndarray[Any, Any]:
    dtype = np.dtype("<u2") if bits <= 16 else np.dtype("<u4")
    raw = nacl.utils.randombytes_deterministic(n * dtype.itemsize, seed)
    words = np.frombuffer(raw, dtype=dtype).astype(mask.ring_dtype(bits))
    return words & np.array((1 << bits) - 1, dtype=words.dtype)


def test_rfc8439_block_function(vectors_dir: Path) -> None:
    cases = _vectors(vectors_dir)["block_function"]
    assert len(cases) >= 6
    for case in cases:
        got = mask.chacha20_keystream(
            bytes.fromhex(case["key"]), bytes.fromhex(case["nonce"]), case["counter"], 64
        )
        assert got.hex() == case["keystream"], case["id"]


def test_rfc8439_encryption(vectors_dir: Path) -> None:
    cases = _vectors(vectors_dir)["encryption"]
    assert cases
    for case in cases:
        plain = bytes.fromhex(case["plaintext"])
        stream = mask.chacha20_keystream(
            bytes.fromhex(case["key"]), bytes.fromhex(case["nonce"]), case["counter"], len(plain)
        )
        cipher = bytes(p ^ k for p, k in zip(plain, stream, strict=True))
        assert cipher.hex() == case["ciphertext"], case["id"]
        if "keystream" in case:
            assert stream.hex().startswith(case["keystream"]), case["id"]


@pytest.mark.parametrize(
    "nbytes", [0, 1, 63, 64, 65, 511, 512, 513, 1023, 1024, 1025, 8193, 100_003]
)
def test_keystream_matches_libsodium_across_lengths(nbytes: int) -> None:
    seed = bytes(range(7, 39))
    assert mask.chacha20_keystream(seed, b"LibsodiumDRG", 0, nbytes) == (
        nacl.utils.randombytes_deterministic(nbytes, seed)
    )


@settings(max_examples=150, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    n=st.integers(min_value=0, max_value=5000),
    bits=st.integers(min_value=1, max_value=32),
)
def test_expand_bit_identical_to_pynacl(seed: bytes, n: int, bits: int) -> None:
    got = mask.expand(seed, n, bits)
    assert got.dtype == mask.ring_dtype(bits)
    np.testing.assert_array_equal(got, _nacl_words(seed, n, bits))


@pytest.mark.parametrize("bits", [16, 32, 13])
def test_expand_long_vector(bits: int) -> None:
    seed = b"\xa5" * 32
    n = 1_000_003
    np.testing.assert_array_equal(mask.expand(seed, n, bits), _nacl_words(seed, n, bits))


def test_counter_is_32_bit_and_never_wraps_into_the_nonce() -> None:
    key = bytes(32)
    last = mask.chacha20_keystream(key, b"LibsodiumDRG", 2**32 - 1, 64)
    assert len(last) == 64
    with pytest.raises(InputError):
        mask.chacha20_keystream(key, b"LibsodiumDRG", 2**32 - 1, 65)
    with pytest.raises(ValueError):  # the kernel refuses on its own too
        _core.chacha20_keystream(key, b"LibsodiumDRG", 2**32 - 1, 65)


_LEVEL_SCRIPT = """
import hashlib, sys
import numpy as np
from native import _core, mask, quant
out = {"level": _core.simd_level()}
for n in (0, 1, 15, 16, 17, 63, 64, 65, 127, 129, 255, 257, 1000, 4097, 70001):
    for bits in (5, 16, 21, 32):
        h = hashlib.sha256(mask.expand(bytes((n + i) % 256 for i in range(32)), n, bits).tobytes())
        out[f"e{n}_{bits}"] = h.hexdigest()
x = np.random.default_rng(5).standard_normal(70001).astype(np.float32) * 2
x[::97] = [3.0, -3.0, 1e30, -1e30, 0.0] * (len(x[::97]) // 5) + [1.5] * (len(x[::97]) % 5)
for bits in (1, 8, 16, 24, 32):
    for n in (0, 1, 7, 8, 9, 15, 16, 17, 33, 70001):
        q = quant.quantize(x[:n], 2.5, bits, b"q" * 32, ring_bits=max(bits, 17))
        out[f"q{n}_{bits}"] = hashlib.sha256(q.tobytes()).hexdigest()
acc = np.arange(30011, dtype=np.uint32)
mask.apply_masks(acc, [b"a" * 32, b"b" * 32], [b"c" * 32], 29)
out["masks"] = hashlib.sha256(acc.tobytes()).hexdigest()
print(repr(out))
"""


def _run_at_level(level: str) -> dict[str, str]:
    env = dict(os.environ, FEDGATE_SIMD=level)
    proc = subprocess.run(
        [sys.executable, "-c", _LEVEL_SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, str] = ast.literal_eval(proc.stdout)
    return result


def test_every_simd_level_is_bit_identical() -> None:
    results = {level: _run_at_level(level) for level in LEVELS}
    seen = {r.pop("level") for r in results.values()}
    # The cap never raises the level, so the set of levels seen depends on the CPU; at least the
    # scalar path and the widest one must both have run.
    assert "scalar" in seen and _core.simd_level() in seen
    reference = results["scalar"]
    for level, got in results.items():
        assert got == reference, f"level {level} differs from scalar"
