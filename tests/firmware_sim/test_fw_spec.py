"""Devices built from scenario-file entries, and garbage entries refused with ConfigError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from firmware_sim.devices import build_device
from native.errors import ConfigError, InputError
from native.frames import Sensor, decode


def test_each_kind_builds_and_streams() -> None:
    ecg = build_device({"id": 1, "kind": "ecg", "seed": 4, "hr_bpm": 90,
                        "episodes": [[2, 5, "pvc"]], "faults": {"loss": 0.1}})
    frames = [decode(f) for f in ecg.run(10)]
    assert frames[0].sensor == Sensor.ECG and ecg.faults.loss == 0.1 and ecg.faults.seed == 4
    assert "V" in {a.label for f in frames for a in f.annotations}
    ppg = build_device({"id": 2, "kind": "ppg"})
    assert decode(next(iter(ppg.run(1)))).sensor == Sensor.PPG
    acc = build_device({"id": 3, "kind": "acc", "schedule": [[5, "walk"]]})
    assert decode(next(iter(acc.run(1)))).n_channels == 3


def test_mitdb_entry(mitdb_dir: Path) -> None:
    dev = build_device({"id": 101, "kind": "mitdb", "record": str(mitdb_dir / "101")})
    assert dev.source.sample_rate_hz == 360
    with pytest.raises(InputError):
        build_device({"id": 101, "kind": "mitdb", "record": str(mitdb_dir / "999")})


@pytest.mark.parametrize("bad", [
    [1, 2], {"id": 1}, {"id": "1", "kind": "ecg"}, {"id": 1, "kind": "ecg", "colour": "red"},
    {"id": 1, "kind": "ecg", "hr_bpm": "fast"}, {"id": 1, "kind": "ecg", "episodes": [[1, 2]]},
    {"id": 1, "kind": "ecg", "episodes": [[1, 2, "torsades"]]}, {"id": 1, "kind": "mitdb"},
    {"id": 1, "kind": "acc", "schedule": [[5, "dance"]]}, {"id": 1, "kind": "ecg", "seed": 1.5},
    {"id": 1, "kind": "ecg", "faults": {"loss": 2}}, {"id": 1, "kind": "ecg", "faults": [1]},
    {"id": 1, "kind": "ecg", "samples_per_frame": 5000},
    {"id": 1, "kind": "ecg", "samples_per_frame": "many"}, {"id": -1, "kind": "ecg"},
])
def test_bad_entries(bad: Any) -> None:
    with pytest.raises(ConfigError if bad != {"id": -1, "kind": "ecg"} else InputError):
        build_device(bad)


def test_paced_playback_yields_the_same_frames() -> None:
    fast = list(build_device({"id": 5, "kind": "ecg", "seed": 5}).run(2))
    paced = list(build_device({"id": 5, "kind": "ecg", "seed": 5}).run(2, speedup=200.0))
    assert paced == fast and len(fast) == 8
