"""Gateway ingestion throughput: frames decoded, validated and stored per second on one core.

Run from the repo root: ``python benchmarks/bench_ingest.py [--quick]``. The frames are real: 50
simulated ECG patches (360 Hz, 90 samples per frame) run through the C firmware, interleaved as a
gateway would receive them. Each repetition times, in rotating order on the same frames:

- ``ingest``: ``Ingestor.feed`` for every frame + ``flush`` into a fresh SQLite file (WAL) — the
  whole gateway pipeline: C decode, checks, dedup/reorder, beats and samples stored;
- ``decode``: ``FrameDecoder.decode_or_reason`` alone (C decoder + the Python face);
- ``c_decoder``: the bare cffi call of ``fg_decode`` into preallocated buffers;
- ``peer_python_decode``: the same decoding in pure Python (struct, zlib.crc32, numpy): what a
  gateway without the shared C codec would run.

Figures are medians over repetitions of wall-clock seconds for the whole batch, turned into
frames/s. ``share_c_decoder`` = c_decoder time / ingest time. ``required_fps_50_devices`` is what
50 ECG devices produce at 360 Hz with this frame size (plus their STATUS frames); ``headroom`` is
measured / required. The process is pinned to one CPU. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info

from edge_client.ingest import Ingestor
from edge_client.store import Store
from firmware_sim.devices import Device
from firmware_sim.signals import SyntheticCardiacSource
from native import _frame  # type: ignore[attr-defined]
from native import frames as F

DEVICES = 50
RATE_HZ = 360
STATUS_EVERY = 40


def make_frames(devices: int, seconds: float) -> list[bytes]:
    """Frames of ``devices`` ECG patches, interleaved per 250 ms step as they would arrive."""
    fleet = [Device(i + 1, SyntheticCardiacSource(hr_bpm=60 + i % 40, seed=i),
                    status_every_frames=STATUS_EVERY) for i in range(devices)]
    out: list[bytes] = []
    t = 0.0
    while t < seconds:
        for dev in fleet:
            out.extend(dev.step(0.25))
        t += 0.25
    return out


def c_decoder(frames: list[bytes]) -> Callable[[], None]:
    ffi, lib = _frame.ffi, _frame.lib
    h = ffi.new("fg_header *")
    ann = ffi.new("fg_annotation[]", F.MAX_ANNOTATIONS)
    samples = ffi.new("int16_t[]", F.MAX_VALUES)
    decode = lib.fg_decode

    def run() -> None:
        for f in frames:
            if decode(f, len(f), h, samples, F.MAX_VALUES, ann, F.MAX_ANNOTATIONS) != 0:
                raise RuntimeError("benchmark frame failed to decode")
    return run


_HEADER = struct.Struct("<2sBBBBHHBBHHIIQI")


def python_decode(data: bytes) -> tuple[Any, ...] | str:
    """The frame decoder in pure Python, with the same checks as the C one."""
    if len(data) < F.HEADER_LEN + F.CRC_LEN:
        return "short"
    (magic, version, sensor, flags, ch, n, rate, n_ann, pct, mv, plen, dev, seq, t_us,
     first) = _HEADER.unpack_from(data)
    if magic != b"FG" or version != F.VERSION:
        return "magic"
    if ch > F.MAX_CHANNELS or n * ch > F.MAX_VALUES or n_ann > F.MAX_ANNOTATIONS or \
            plen != 2 * n * ch + 4 * n_ann:
        return "length"
    if len(data) != F.HEADER_LEN + plen + F.CRC_LEN:
        return "short"
    if zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "little"):
        return "crc"
    if sensor > 3 or flags & 0xC0 or (sensor and not 0 < rate <= F.MAX_RATE_HZ):
        return "field"
    body = F.HEADER_LEN + 2 * n * ch
    samples = np.frombuffer(data, dtype="<i2", count=n * ch, offset=F.HEADER_LEN).reshape(n, ch)
    anns = []
    for i in range(n_ann):
        off, label, aux = struct.unpack_from("<HBB", data, body + 4 * i)
        if off >= n or label == 0:
            return "annotation"
        anns.append((off, chr(label), aux))
    return (dev, seq, t_us, first, sensor, flags, rate, pct, mv, samples.copy(), tuple(anns))


def timed_cases(frames: list[bytes], tmp: Path) -> dict[str, Callable[[], None]]:
    decoder = F.FrameDecoder()
    counter = iter(range(10**9))

    def ingest() -> None:
        path = tmp / f"gw{next(counter)}.sqlite"
        with Store(path) as store:
            ing = Ingestor(store)
            for f in frames:
                ing.feed(f)
            ing.flush()
        for p in tmp.glob(path.name + "*"):
            p.unlink()

    def decode() -> None:
        for f in frames:
            decoder.decode_or_reason(f)

    def peer() -> None:
        for f in frames:
            python_decode(f)

    return {"ingest": ingest, "decode": decode, "c_decoder": c_decoder(frames),
            "peer_python_decode": peer}


def measure(cases: dict[str, Callable[[], None]], reps: int) -> dict[str, list[float]]:
    names = list(cases)
    times: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            t0 = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def check_outcomes(frames: list[bytes]) -> dict[str, int]:
    with Store() as store:
        ing = Ingestor(store)
        for f in frames:
            ing.feed(f)
        ing.flush()
        return store.counters()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20 s of signal, 3 repetitions")
    args = parser.parse_args()
    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})
    seconds, reps = (20.0, 3) if args.quick else (120.0, 7)
    frames = make_frames(DEVICES, seconds)
    counters = check_outcomes(frames)
    with tempfile.TemporaryDirectory() as tmp:
        times = measure(timed_cases(frames, Path(tmp)), reps)
    med = {k: statistics.median(v) for k, v in times.items()}
    n = len(frames)
    data_frames = sum(1 for f in frames if f[3] != F.Sensor.STATUS)
    mean_bytes = sum(len(f) for f in frames) / n
    required = DEVICES * RATE_HZ / 90 * (1 + 1 / STATUS_EVERY)
    fps = {k: n / v for k, v in med.items()}
    result = {
        "area": "ingest",
        "machine": machine_info(pinned_cpu=cpu),
        "figures": {
            "frames": n, "data_frames": data_frames, "signal_seconds_per_device": seconds,
            "mean_frame_bytes": round(mean_bytes, 1),
            "ingest_s": med["ingest"], "decode_s": med["decode"], "c_decoder_s": med["c_decoder"],
            "peer_python_decode_s": med["peer_python_decode"],
            "ingest_frames_per_s": round(fps["ingest"]),
            "decode_frames_per_s": round(fps["decode"]),
            "c_decoder_frames_per_s": round(fps["c_decoder"]),
            "peer_python_decode_frames_per_s": round(fps["peer_python_decode"]),
            "share_c_decoder": round(med["c_decoder"] / med["ingest"], 4),
            "share_decode_with_python_face": round(med["decode"] / med["ingest"], 4),
            "required_fps_50_devices": round(required, 1),
            "headroom_50_devices": round(fps["ingest"] / required, 1),
            "max_ecg_devices_real_time": int(fps["ingest"] / (required / DEVICES)),
            "ingest_counters": counters,
            "repetitions": reps,
        },
        "ratios": {
            "decode_python_over_c_face": round(
                statistics.median(p / d for p, d in zip(times["peer_python_decode"],
                                                         times["decode"], strict=True)), 2),
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
