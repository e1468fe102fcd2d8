"""benchmarks/bench_e2e.py refuses bad flags before it starts a broker or a simulation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv, needle", [
    (["--seconds", "5"], "--seconds of signal per device must be 30"),
    (["--seconds", "nan"], "--seconds of signal per device must be 30"),
    (["--seconds", "many"], "invalid float value"),
    (["--case", "nope"], "invalid choice"),
    (["--rounds", "3"], "unrecognized arguments"),
])
def test_bad_flags_exit_2_with_the_reason(argv: list[str], needle: str) -> None:
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "bench_e2e.py"), *argv],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert proc.stdout == ""
