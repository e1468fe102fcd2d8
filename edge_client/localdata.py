"""Training data of one gateway: ECG beats from its local SQLite store, never uploaded.

``StoreData`` turns what ingestion stored (samples and annotated R peaks per wearable) into the
ECG model's inputs with ``models.ecg.beats_from_stream``, one contiguous stretch of signal at a
time, so a gap in the radio link never splices two stretches into one beat window. Each device is
one patient: its normalisation statistics come from its own longest stretch. ``ArrayData`` holds
inputs prepared elsewhere (a simulator that has already preprocessed its records).
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from edge_client.store import Store
from models.ecg import AAMI, PatientStats, beats_from_stream, patient_stats
from native.errors import InputError
from native.frames import Sensor

Inputs = dict[str, npt.NDArray[Any]]
# inputs, labels, the stream (device) of each row, and its time within that stream
Timed = tuple[Inputs, npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]

# Gaps longer than this split the signal; shorter holes cannot happen (samples are keyed).
_MIN_STRETCH = 2 * 360


class LocalData(Protocol):
    """What the daemon trains on."""

    def sample_count(self) -> int:
        """Labelled samples available now (cheap: called before every round)."""
        ...

    def dataset(self) -> tuple[Inputs, npt.NDArray[np.int64]]:
        """Model inputs and integer labels of every labelled sample."""
        ...


class ArrayData:
    """Inputs already in memory (simulators, tests)."""

    def __init__(self, inputs: Inputs, labels: npt.NDArray[Any]) -> None:
        n = len(labels)
        if any(len(v) != n for v in inputs.values()):
            raise InputError("every input needs one row per label")
        self.inputs = inputs
        self.labels = np.asarray(labels, dtype=np.int64)

    def sample_count(self) -> int:
        return int(self.labels.size)

    def dataset(self) -> tuple[Inputs, npt.NDArray[np.int64]]:
        return self.inputs, self.labels

    def timed_dataset(self) -> Timed:
        """The rows in the order they were recorded: one stream, row index = time."""
        n = int(self.labels.size)
        return self.inputs, self.labels, np.zeros(n, dtype=np.int64), np.arange(n, dtype=np.int64)


class StoreData:
    """ECG beats from the gateway store at ``path`` (opened per call: the daemon's threads and
    the ingestor each keep their own SQLite connection).

    The beats of the last call are kept with the store's ``data_version``: a round on an
    unchanged store reuses them instead of decoding every frame again, which on a gateway is
    most of the CPU a round costs besides the training steps themselves.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._count: tuple[tuple[int, ...], int] | None = None
        self._beats: tuple[tuple[int, ...], Timed] | None = None

    def sample_count(self) -> int:
        if not self.path.exists():
            return 0
        store = Store(self.path)
        try:
            version = store.data_version()
            with self._lock:
                if self._count is not None and self._count[0] == version:
                    return self._count[1]
            count = sum(store.count_beats(d, AAMI) for d in self._ecg_devices(store))
        finally:
            store.close()
        with self._lock:
            self._count = (version, count)
        return count

    def dataset(self) -> tuple[Inputs, npt.NDArray[np.int64]]:
        inputs, labels, _, _ = self.timed_dataset()
        return inputs, labels

    def timed_dataset(self) -> Timed:
        """Every labelled beat with its device id and its R-peak sample number (its time)."""
        parts: list[tuple[Inputs, npt.NDArray[np.int64], npt.NDArray[np.int64], int]] = []
        store = Store(self.path)
        try:
            version = store.data_version()
            with self._lock:
                if self._beats is not None and self._beats[0] == version:
                    return self._beats[1]
            for device in self._ecg_devices(store):
                parts.extend((*p, device) for p in _device_beats(store, device))
        finally:
            store.close()
        if not parts:
            raise InputError(f"no ECG beats in {self.path}")
        inputs = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
        labels = np.concatenate([p[1] for p in parts])
        groups = np.concatenate([np.full(p[1].size, p[3], dtype=np.int64) for p in parts])
        times = np.concatenate([p[2] for p in parts])
        for arr in (*inputs.values(), labels, groups, times):
            arr.flags.writeable = False  # shared by later rounds: nobody may change it
        timed = (inputs, labels, groups, times)
        with self._lock:
            self._beats = (version, timed)
        return timed

    @staticmethod
    def _ecg_devices(store: Store) -> list[int]:
        out = []
        for device in store.device_ids():
            info = store.device(device)
            if info is None or info["sensor"] == int(Sensor.ECG):
                out.append(device)
        return out


def _sample_rate(info: dict[str, int]) -> float:
    rate, channels = info.get("sample_rate_hz") or 360, info.get("n_channels") or 1
    # Ingest currently records rate and channel count in each other's column; an ECG patch
    # never has 50+ channels nor a rate below 50 Hz, so the swap is unambiguous.
    if rate < 50 <= channels:
        rate = channels
    return float(rate)


def _stretches(idx: npt.NDArray[np.int64]) -> list[tuple[int, int]]:
    """[lo, hi) positions of runs of consecutive sample numbers."""
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    bounds = [0, *breaks.tolist(), int(idx.size)]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b - a >= _MIN_STRETCH]


def _device_beats(store: Store, device: int
                  ) -> list[tuple[Inputs, npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    idx, vals = store.signal(device, clean_only=True)
    if idx.size == 0:
        return []
    fs = _sample_rate(store.device(device) or {})
    signal = vals[:, 0].astype(np.float64)  # counts; amplitude normalisation removes the scale
    beats = store.beats(device)
    samples = np.array([b[0] for b in beats], dtype=np.int64)
    symbols = [b[1] for b in beats]
    stretches = _stretches(idx)
    if not stretches:
        return []
    stats: PatientStats | None = None
    out = []
    for lo, hi in sorted(stretches, key=lambda s: s[0] - s[1]):  # longest first: sets stats
        first, last = int(idx[lo]), int(idx[hi - 1])
        sel = np.flatnonzero((samples >= first) & (samples <= last))
        if sel.size < 3:
            continue
        peaks = samples[sel] - first
        x = signal[lo:hi]
        if stats is None:
            stats = patient_stats(x, peaks, fs)
        inputs, used = beats_from_stream(x, peaks, fs, stats)
        labels = np.array([AAMI.get(symbols[sel[u]], -1) for u in used], dtype=np.int64)
        keep = labels >= 0
        if keep.any():
            at = samples[sel[np.asarray(used, dtype=np.int64)]]
            out.append(({k: v[keep] for k, v in inputs.items()}, labels[keep], at[keep]))
    return out
