"""The table discrete Gaussian on aarch64: a small driver cross-compiled with the pure kernels and
run under qemu-user must write the very bytes the x86-64 Python face gives (draws and a uint16
ring addition, for variances on both sides of every regime of the table)."""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from native import noise

REPO = Path(__file__).resolve().parents[2]
VARIANCES = [
    Fraction(1),
    Fraction(7, 3),
    Fraction(100),
    Fraction(2**18),
    Fraction(10**6),
    Fraction(2**32),
]
N = 20_001

DRIVER = r"""
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "fedgate/noise.hpp"

// For each (num, den) of argv: N int64 draws, then N uint16 ring elements 0, 1, ... plus noise,
// little-endian, to stdout.
int main(int argc, char** argv) {
    const std::size_t n = std::strtoull(argv[1], nullptr, 10);
    std::uint8_t seed[32];
    for (int i = 0; i < 32; ++i) seed[i] = static_cast<std::uint8_t>(i);
    for (int a = 2; a + 1 < argc; a += 2) {
        const std::uint64_t num = std::strtoull(argv[a], nullptr, 10);
        const std::uint64_t den = std::strtoull(argv[a + 1], nullptr, 10);
        std::vector<std::int64_t> out(n);
        fedgate::dgauss_sample(seed, num, den, n, out.data());
        std::vector<std::uint16_t> acc(n);
        for (std::size_t i = 0; i < n; ++i) acc[i] = static_cast<std::uint16_t>(i);
        fedgate::dgauss_add<std::uint16_t>(seed, num, den, 16, acc.data(), n);
        for (std::int64_t x : out) {
            const auto u = static_cast<std::uint64_t>(x);
            for (int b = 0; b < 8; ++b) std::putchar(static_cast<int>((u >> (8 * b)) & 0xff));
        }
        for (std::uint16_t x : acc) {
            std::putchar(x & 0xff);
            std::putchar(x >> 8);
        }
    }
}
"""


def _qemu() -> str | None:
    return shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("aarch64-linux-gnu-g++") is None or _qemu() is None,
    reason="aarch64 cross compiler or qemu-aarch64 absent "
    "(apt-get install g++-aarch64-linux-gnu qemu-user)",
)
def test_aarch64_draws_equal_x86_64(tmp_path: Path) -> None:
    driver = tmp_path / "dgauss_driver.cpp"
    driver.write_text(DRIVER)
    sources = sorted(
        str(p)
        for p in (REPO / "native" / "src").glob("*.cpp")
        if not p.name.startswith("bind_") and p.name != "module.cpp"
    )
    binary = tmp_path / "dgauss-aarch64"
    subprocess.run(
        [
            "aarch64-linux-gnu-g++",
            "-std=c++17",
            "-O2",
            "-fno-strict-aliasing",
            "-static",
            f"-I{REPO / 'native' / 'include'}",
            str(driver),
            *sources,
            "-o",
            str(binary),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    args = [str(N)] + [str(x) for v in VARIANCES for x in (v.numerator, v.denominator)]
    qemu = _qemu()
    assert qemu is not None
    got = subprocess.run([qemu, str(binary), *args], check=True, capture_output=True, timeout=300)
    want = b""
    seed = bytes(range(32))
    for v in VARIANCES:
        acc = np.arange(N, dtype=np.uint32).astype(np.uint16)
        noise.add_dgauss_noise(acc, seed, v, 16)
        want += (
            noise.sample_dgauss(seed, N, v).astype("<i8").tobytes() + acc.astype("<u2").tobytes()
        )
    assert got.stdout == want
