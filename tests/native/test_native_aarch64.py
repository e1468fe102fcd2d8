"""aarch64 build of the pure kernels: known answers from x86-64, replayed under qemu-user."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / ".ci" / "aarch64-kat.sh"
GOLDEN = REPO / "native" / "kat" / "golden.txt"


def _missing_tools() -> str | None:
    if shutil.which("aarch64-linux-gnu-g++") is None:
        return "aarch64 cross compiler absent (apt-get install g++-aarch64-linux-gnu)"
    if shutil.which("qemu-aarch64") is None and shutil.which("qemu-aarch64-static") is None:
        return "qemu-aarch64 absent (apt-get install qemu-user)"
    return None


needs_cross = pytest.mark.skipif(_missing_tools() is not None, reason=str(_missing_tools()))


def _run_kat(golden: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), str(golden)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)


def test_golden_file_matches_the_python_face(tmp_path: Path, vectors_dir: Path) -> None:
    # If a kernel's arithmetic changes, the committed known answers must be regenerated with it.
    fresh = tmp_path / "golden.txt"
    subprocess.run([sys.executable, str(REPO / "native" / "kat" / "make_golden.py"),
                    "--vectors", str(vectors_dir / "chacha20_rfc8439.json"), "--out", str(fresh)],
                   cwd=REPO, check=True, capture_output=True, timeout=120)
    assert fresh.read_text() == GOLDEN.read_text()


@pytest.mark.slow
@needs_cross
def test_aarch64_build_reproduces_x86_64_known_answers() -> None:
    result = _run_kat(GOLDEN)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("KAT OK") >= 2  # aarch64 NEON path and scalar path (+ host)
    assert "simd=neon" in result.stdout


@pytest.mark.slow
@needs_cross
def test_kat_script_fails_on_a_wrong_or_garbage_golden_file(tmp_path: Path) -> None:
    lines = GOLDEN.read_text().splitlines()
    idx = next(i for i, line in enumerate(lines) if line.startswith("expand "))
    head, digest = lines[idx].rsplit(" ", 1)
    lines[idx] = f"{head} {int(digest, 16) ^ 1:016x}"  # one flipped bit of one digest
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("\n".join(lines) + "\n")
    result = _run_kat(wrong)
    assert result.returncode != 0
    assert "KAT FAILED" in result.stdout and "FAIL line" in result.stderr

    garbage = tmp_path / "garbage.txt"
    garbage.write_text("expand zz 12\nbogus 1 2 3\n\x00\xff\n")
    result = _run_kat(garbage)
    assert result.returncode != 0
    assert "FAIL line" in result.stderr


def test_kat_script_refuses_a_missing_golden_file(tmp_path: Path) -> None:
    if _missing_tools() is not None:
        pytest.skip(str(_missing_tools()))
    result = _run_kat(tmp_path / "absent.txt")
    assert result.returncode == 2
    assert "cannot read" in result.stderr


def test_golden_generator_refuses_missing_or_garbage_vectors(tmp_path: Path) -> None:
    script = str(REPO / "native" / "kat" / "make_golden.py")
    out = tmp_path / "golden.txt"
    missing = subprocess.run([sys.executable, script, "--vectors", str(tmp_path / "absent.json"),
                              "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                             timeout=120, check=False)
    assert missing.returncode != 0 and "vectors not found" in missing.stderr
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    bad = subprocess.run([sys.executable, script, "--vectors", str(garbage), "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode != 0 and "JSONDecodeError" in bad.stderr
    assert not out.exists()  # nothing half-written
