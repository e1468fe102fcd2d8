"""What the native kernels run on: the SIMD level they dispatch to on this CPU."""

from __future__ import annotations

from native import _core

__all__ = ["simd_level"]


def simd_level() -> str:
    """The SIMD path of the C++ kernels: "avx512", "avx2", "neon" or "scalar".

    Chosen once per process from the CPU's features, capped by the environment variable
    ``FEDGATE_SIMD=scalar|avx2|avx512|neon`` (for tests and benchmarks; a cap never raises the
    level, an unknown value is ignored). Every level gives bit-identical results.
    """
    return str(_core.simd_level())
