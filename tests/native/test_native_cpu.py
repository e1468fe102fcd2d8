"""native.cpu: the SIMD level the kernels dispatch to, and its environment cap."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from native import cpu

LEVELS = ("scalar", "neon", "avx2", "avx512")


def _level_under(cap: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", "from native import cpu; print(cpu.simd_level())"],
        env=dict(os.environ, FEDGATE_SIMD=cap), capture_output=True, text=True, check=True,
    )
    return proc.stdout.strip()


def test_simd_level_names_a_known_level_of_this_architecture() -> None:
    level = cpu.simd_level()
    assert level in LEVELS
    if platform.machine() == "aarch64":
        assert level in ("neon", "scalar")
    elif platform.machine() == "x86_64":
        assert level != "neon" or os.environ.get("FEDGATE_SIMD") == "neon"


def test_the_cap_lowers_the_level_and_never_raises_it() -> None:
    assert _level_under("scalar") == "scalar"
    hardware = _level_under("")
    assert hardware in LEVELS
    assert _level_under("avx512") == hardware or LEVELS.index(hardware) < LEVELS.index("avx512")
    if LEVELS.index(hardware) >= LEVELS.index("avx2"):
        assert _level_under("avx2") == "avx2"


@pytest.mark.parametrize("garbage", ["AVX512", "sse9", "0", "scalar ", "\u00e9"])
def test_an_unknown_cap_is_ignored(garbage: str) -> None:
    assert _level_under(garbage) == _level_under("")


def test_simd_level_takes_no_arguments() -> None:
    with pytest.raises(TypeError):
        cpu.simd_level("avx2")  # type: ignore[call-arg]
