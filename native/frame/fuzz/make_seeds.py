"""Write a seed corpus of valid frames for the frame-decoder fuzzers (run from the repo root)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from native.frames import Annotation, Flag, Frame, Sensor, encode


def seeds() -> list[bytes]:
    """A handful of valid frames of every sensor type and shape."""
    rng = np.random.default_rng(0)
    out = [encode(Frame(device_id=1, seq=0, t_us=0, sensor=Sensor.STATUS, flags=Flag.SHUTDOWN))]
    for sensor, ch, n in ((Sensor.ECG, 1, 90), (Sensor.PPG, 1, 25), (Sensor.ACC, 3, 25),
                          (Sensor.ECG, 8, 60)):
        samples = rng.integers(-2048, 2048, size=(n, ch)).astype(np.int16)
        anns = (Annotation(3, "N"), Annotation(n - 1, "V", 1))
        out.append(encode(Frame(device_id=7, seq=5, t_us=10**9, sensor=sensor, samples=samples,
                                first_sample=450, sample_rate_hz=360, annotations=anns,
                                battery_pct=80, battery_mv=3900)))
    return out


if __name__ == "__main__":
    # usage: make_seeds.py FOLDER [--raw]
    # The libFuzzer harness reads a mode byte first (0 = as is, 1 = repair the CRC); the atheris
    # harness takes plain frames (--raw).
    folder = Path(sys.argv[1])
    prefix = b"" if "--raw" in sys.argv[2:] else b"\x01"
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(seeds()):
        (folder / f"seed{i}.bin").write_bytes(prefix + frame)
