"""The "machine" block every benchmark prints: what the figures were measured on."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    # /proc/cpuinfo names the model on x86-64; aarch64 kernels often leave it out.
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_simd_flags() -> list[str]:
    """The CPU's SIMD extensions that fedgate's kernels can dispatch to."""
    wanted = ("avx2", "avx512f", "avx512bw", "asimd")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                present = set(value.split())
                return [f for f in wanted if f in present]
    except OSError:
        pass
    return []


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _ort_version() -> str | None:
    return _version("onnxruntime-training") or _version("onnxruntime")


def _simd_level() -> str | None:
    # The native kernels pick their SIMD path at run time; the figures depend on it.
    try:
        from native import cpu
    except ImportError:  # fedgate not built here: the block still describes the machine
        return None
    return cpu.simd_level()


def machine_info(**extra: Any) -> dict[str, Any]:
    """Describe the CPU and software stack; ``extra`` entries are merged in (e.g. pinned core)."""
    import numpy as np

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": _ort_version(),
        "fedgate_simd": _simd_level(),
        "cpu_simd": _cpu_simd_flags(),
        "simd_cap": os.environ.get("FEDGATE_SIMD"),
    }
    info.update(extra)
    return info
