"""Data for ``fedgate sim``: the fleet each data mode stands for, and the held-out patients the
global model is evaluated on.

``synthetic`` (the default, needs no files): every gateway has ``--devices`` simulated ECG patches
(``firmware_sim.devices``: synthetic heart -> C firmware -> frames); their frames travel over the
MQTT device link into the gateway's own SQLite store, and the daemon trains on that store.
Patients differ in heart rate and in which arrhythmia episodes they have (PVC, APC, AF,
tachycardia), and a gateway's patches share its episode kinds, so the fleet is non-IID. Held-out
patients are further synthetic hearts with a mix of both ectopic kinds, streamed straight into a
store of the evaluator's (no gateway holds them) and preprocessed exactly as a gateway does.

``mitdb``: one gateway per MIT-BIH record found in the folder, whose simulated patch plays the
whole record through the firmware and the device link; the held-out records are evaluated
patient-wise with ``models.ecg.beat_dataset``, which gives the same beats as a streamed record
(``tests/firmware_sim/test_fw_mitdb_stream.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_client.ingest import Ingestor
from edge_client.localdata import ArrayData, Inputs, StoreData
from edge_client.store import Store
from firmware_sim.devices import build_device
from firmware_sim.scenario import GatewaySpec, Scenario
from native.errors import ConfigError

log = logging.getLogger(__name__)

_KINDS = ("pvc", "apc", "afib", "tachy")
DEFAULT_SECONDS = 240.0  # signal per synthetic device when neither flag nor scenario says


def patient_spec(index: int, seed: int, seconds: float, held_out: bool = False,
                 device: int = 0) -> dict[str, Any]:
    """The simulated ECG patch of one patient: heart rate and arrhythmia episodes. ``device`` > 0
    gives further patients of gateway ``index``, with the same episode kinds."""
    rng = np.random.default_rng([seed, index, int(held_out)] + ([device] if device else []))
    hr = float(rng.uniform(58, 92))
    if held_out:
        kinds = ["pvc", "apc"]
    else:
        kinds = [_KINDS[index % len(_KINDS)]]
        if index % 3 == 0:
            kinds.append("apc" if kinds[0] != "apc" else "pvc")
    episodes = []
    span = seconds / (len(kinds) + 1)
    for i, kind in enumerate(kinds):
        start = span * (i + 0.5) + float(rng.uniform(0, span * 0.2))
        episodes.append([start, span * 0.6, kind])
    return {"id": index + 1, "kind": "ecg",
            "seed": seed * 1000 + index + (500 if held_out else 0) + 100_000 * device,
            "hr_bpm": hr, "episodes": episodes}


def synthetic_scenario(gateways: int, devices: int, seed: int, seconds: float) -> Scenario:
    """The default fleet: ``gateways`` homes with ``devices`` synthetic ECG patches each."""
    specs = []
    for i in range(gateways):
        patches = []
        for k in range(devices):
            spec = patient_spec(i, seed, seconds, device=k)
            spec["id"] = i * devices + k + 1
            patches.append(spec)
        specs.append(GatewaySpec(f"synthetic-{i}", tuple(patches)))
    return Scenario(tuple(specs), source="synthetic")


def mitdb_scenario(data_dir: Path, records: list[str]) -> Scenario:
    """One gateway per record, its patch playing the record from the first sample to the last."""
    gateways = tuple(GatewaySpec(r, ({"id": i + 1, "kind": "mitdb", "record": str(data_dir / r)},))
                     for i, r in enumerate(records))
    return Scenario(gateways, source=f"mitdb:{data_dir}")


def fill_store(path: Path, spec: dict[str, Any], seconds: float) -> int:
    """Stream ``seconds`` of a simulated patch into the store at ``path``; frames accepted."""
    device = build_device(spec)
    store = Store(path)
    try:
        ingestor = Ingestor(store)
        accepted = sum(ingestor.feed(frame) == "accepted" for frame in device.run(seconds))
        ingestor.flush()
    finally:
        store.close()
    return accepted


def synthetic_holdout(folder: Path, count: int, seed: int,
                      seconds: float) -> tuple[Inputs, npt.NDArray[np.int64]]:
    """Held-out synthetic patients, preprocessed through a store as a gateway would."""
    parts = []
    for i in range(count):
        path = folder / f"holdout-{i}.sqlite"
        fill_store(path, patient_spec(i, seed, seconds, held_out=True), seconds)
        parts.append(StoreData(path).dataset())
    return _concat(parts)


def mitdb_records(data_dir: Path) -> list[str]:
    """Record names with header, signal and annotation files in ``data_dir``."""
    if not data_dir.is_dir():
        raise ConfigError(f"--data-dir {data_dir} is not a folder")
    names = sorted(p.stem for p in data_dir.glob("*.hea")
                   if p.with_suffix(".dat").exists() and p.with_suffix(".atr").exists())
    if not names:
        raise ConfigError(f"no MIT-BIH records (.hea + .dat + .atr) in {data_dir}")
    return names


def split_records(records: list[str], holdout: list[str] | None) -> tuple[list[str], list[str]]:
    """(gateway records, held-out records); by default every fifth record is held out."""
    held = list(holdout) if holdout else records[::5]
    unknown = set(held) - set(records)
    if unknown:
        raise ConfigError(f"held-out records not in the data folder: {sorted(unknown)}")
    train = [r for r in records if r not in held]
    if len(train) < 2 or not held:
        raise ConfigError("need at least two gateway records and one held-out record")
    return train, held


def mitdb_data(data_dir: Path, record: str) -> ArrayData:
    """One patient's beats, as that patient's gateway holds them."""
    from models.ecg import beat_dataset

    inputs, labels = beat_dataset(data_dir / record)
    return ArrayData(inputs, labels)


def mitdb_holdout(data_dir: Path, records: list[str]) -> tuple[Inputs, npt.NDArray[np.int64]]:
    parts = [mitdb_data(data_dir, r).dataset() for r in records]
    return _concat(parts)


def record_holdout(record_dir: Path, records: list[str]) -> tuple[Inputs, npt.NDArray[np.int64]]:
    """A scenario's held-out MIT-BIH records (names in ``record_dir``, or paths)."""
    from firmware_sim.device_schema import resolve_record

    paths = [resolve_record(r, record_dir, f"holdout[{i}]") for i, r in enumerate(records)]
    return _concat([mitdb_data(p.parent, p.name).dataset() for p in paths])


def _concat(parts: list[tuple[Inputs, npt.NDArray[np.int64]]]
            ) -> tuple[Inputs, npt.NDArray[np.int64]]:
    inputs = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
    return inputs, np.concatenate([p[1] for p in parts])
