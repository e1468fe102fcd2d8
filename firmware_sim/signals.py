"""Signal sources for the simulated wearables: what the analog front end would digitise.

Each source yields blocks of int16 ADC counts, shape (n, channels), with a per-sample label byte
(0, or the beat/event symbol at that sample) and an aux byte, the way a Holter-style device marks
R peaks. Sources are deterministic: the same seed gives the same samples whatever the block sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from native.errors import ConfigError, InputError
from native.frames import Sensor

Block = tuple[npt.NDArray[np.int16], npt.NDArray[np.uint8], npt.NDArray[np.uint8]]

#: MIT-BIH beat symbols (everything else in an .atr file is a rhythm or signal-quality note).
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")
AUX_SINUS, AUX_AFIB = 0, 1


class SignalSource(Protocol):
    """What a device samples. ``read`` returns fewer than n rows only when the source is over."""

    sensor: Sensor
    n_channels: int
    sample_rate_hz: int
    adc_min: int
    adc_max: int

    def read(self, n: int) -> Block: ...


def _empty_labels(n: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    return np.zeros(n, dtype=np.uint8), np.zeros(n, dtype=np.uint8)


class MitbihSource:
    """A MIT-BIH Arrhythmia record streamed as a patch ECG would: one lead, raw ADC counts around
    the record's zero (11 bits at 200 counts/mV), R-peak markers with the .atr beat labels."""

    sensor = Sensor.ECG
    n_channels = 1

    def __init__(self, record: Path | str, lead: str = "MLII") -> None:
        import wfdb  # imported here: only MIT-BIH playback needs it

        path = Path(record)
        if not path.with_suffix(".hea").is_file():
            raise InputError(f"MIT-BIH record header not found: {path}.hea")
        rec = wfdb.rdrecord(str(path), physical=False)
        if lead not in rec.sig_name:
            raise InputError(f"lead {lead!r} not in record {path.name}: {rec.sig_name}")
        ch = rec.sig_name.index(lead)
        zero = int(rec.adc_zero[ch])
        resolution = int(rec.adc_res[ch]) or 11
        self.sample_rate_hz = int(rec.fs)
        self.adc_min = -(1 << (resolution - 1))
        self.adc_max = (1 << (resolution - 1)) - 1
        self._signal = (rec.d_signal[:, ch].astype(np.int32) - zero).astype(np.int16)
        ann = wfdb.rdann(str(path), "atr")
        self._labels = np.zeros(len(self._signal), dtype=np.uint8)
        for sample, symbol in zip(ann.sample, ann.symbol, strict=True):
            if symbol in BEAT_SYMBOLS and 0 <= sample < len(self._signal):
                self._labels[sample] = ord(symbol)
        self._pos = 0

    @property
    def n_total(self) -> int:
        return len(self._signal)

    def read(self, n: int) -> Block:
        lo, hi = self._pos, min(self._pos + n, len(self._signal))
        self._pos = hi
        return (self._signal[lo:hi].reshape(-1, 1).copy(), self._labels[lo:hi].copy(),
                np.zeros(hi - lo, dtype=np.uint8))


@dataclass(frozen=True, slots=True)
class Episode:
    """An arrhythmia episode of a synthetic heart: ``kind`` in pvc, apc, afib, tachy, brady."""

    start_s: float
    duration_s: float
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in ("pvc", "apc", "afib", "tachy", "brady"):
            raise ConfigError(f"unknown arrhythmia episode kind {self.kind!r}")
        if self.start_s < 0 or self.duration_s <= 0:
            raise ConfigError(f"episode needs start_s >= 0 and duration_s > 0: {self}")


# Gaussian waves of one beat (centre s from the R peak, amplitude mV, width s): a sum-of-Gaussians
# model in the spirit of McSharry et al. (ECGSYN), evaluated directly in time.
_WAVES = {
    "N": ((-0.20, 0.15, 0.025), (-0.03, -0.10, 0.010), (0.0, 1.20, 0.011),
          (0.03, -0.25, 0.010), (0.26, 0.30, 0.060)),
    "A": ((-0.15, -0.10, 0.020), (-0.03, -0.10, 0.010), (0.0, 1.15, 0.011),
          (0.03, -0.25, 0.010), (0.24, 0.28, 0.060)),
    "V": ((-0.04, -0.20, 0.025), (0.0, 1.60, 0.030), (0.07, -0.60, 0.035), (0.32, -0.40, 0.080)),
    "AF": ((-0.03, -0.10, 0.010), (0.0, 1.20, 0.011), (0.03, -0.25, 0.010), (0.26, 0.30, 0.060)),
}
_PULSE = ((0.15, 1.0, 0.05), (0.40, 0.35, 0.07))  # PPG systolic and dicrotic waves after the R peak


class SyntheticCardiacSource:
    """A synthetic heart seen as ECG (counts at 200/mV) or PPG, with heart-rate variability and
    scheduled arrhythmia episodes; beats labelled N (normal), V (PVC) or A (APC), aux 1 in AF."""

    def __init__(self, kind: str = "ecg", hr_bpm: float = 70.0, sample_rate_hz: int | None = None,
                 episodes: tuple[Episode, ...] = (), seed: int = 0, hrv: float = 0.03) -> None:
        if kind not in ("ecg", "ppg"):
            raise ConfigError(f"synthetic source kind must be 'ecg' or 'ppg', got {kind!r}")
        if not 20.0 <= hr_bpm <= 250.0 or not 0.0 <= hrv <= 0.3:
            raise ConfigError(f"hr_bpm must be 20..250 and hrv 0..0.3 (got {hr_bpm}, {hrv})")
        self.kind = kind
        self.sensor = Sensor.ECG if kind == "ecg" else Sensor.PPG
        self.n_channels = 1
        self.sample_rate_hz = int(sample_rate_hz or (360 if kind == "ecg" else 100))
        self.adc_min, self.adc_max = (-2048, 2047) if kind == "ecg" else (-8192, 8191)
        self.hr_bpm, self.hrv, self.episodes = hr_bpm, hrv, episodes
        seq = np.random.SeedSequence([seed, 0xECE])
        self._beat_rng, self._noise_rng = (np.random.default_rng(s) for s in seq.spawn(2))
        self._beats: list[tuple[float, str, int]] = []  # (R time s, label, aux)
        self._next_beat_s = 0.5
        self._count = 0
        self._pos = 0

    def _episode(self, t_s: float) -> str | None:
        for ep in self.episodes:
            if ep.start_s <= t_s < ep.start_s + ep.duration_s:
                return ep.kind
        return None

    def _generate_until(self, t_end: float) -> None:
        while self._next_beat_s < t_end:
            t = self._next_beat_s
            ep = self._episode(t)
            rr = 60.0 / self.hr_bpm * {"tachy": 0.55, "brady": 1.6}.get(ep or "", 1.0)
            rr *= 1.0 + self.hrv * float(self._beat_rng.standard_normal())
            label, aux = "N", AUX_SINUS
            if ep == "afib":
                rr *= float(self._beat_rng.uniform(0.55, 1.45))
                aux = AUX_AFIB
            elif ep == "pvc" and self._count % 2 == 1:
                label = "V"
            elif ep == "apc" and self._count % 4 == 3:
                label = "A"
            self._beats.append((t, label, aux))
            self._count += 1
            # Ectopic beats come early and are followed by a compensatory pause.
            early = label in ("V", "A")
            self._next_beat_s = t + max(0.25, rr * (1.35 if early else 1.0))

    def _waves(self, label: str, aux: int) -> tuple[tuple[float, float, float], ...]:
        if self.kind == "ppg":
            return tuple((c, a * (0.5 if label == "V" else 1.0), w) for c, a, w in _PULSE)
        return _WAVES["AF" if aux == AUX_AFIB and label == "N" else label]

    def read(self, n: int) -> Block:
        fs = self.sample_rate_hz
        t = (self._pos + np.arange(n)) / fs
        t0, t1 = self._pos / fs, (self._pos + n) / fs
        self._generate_until(t1 + 1.0)
        mv = np.zeros(n)
        labels, aux = _empty_labels(n)
        for tb, label, code in self._beats:
            if tb < t0 - 1.0 or tb > t1 + 1.0:
                continue
            for centre, amp, width in self._waves(label, code):
                mv += amp * np.exp(-0.5 * ((t - tb - centre) / width) ** 2)
            idx = round((tb + (0.15 if self.kind == "ppg" else 0.0)) * fs) - self._pos
            if 0 <= idx < n:
                labels[idx], aux[idx] = ord(label), code
        self._beats = [b for b in self._beats if b[0] >= t1 - 1.0]
        mv += 0.08 * np.sin(2 * math.pi * 0.25 * t)  # respiration / baseline wander
        if self.kind == "ecg" and self._episode(t0) == "afib":
            mv += 0.05 * np.sin(2 * math.pi * 6.0 * t)  # fibrillatory waves
        mv += 0.015 * self._noise_rng.standard_normal(n)
        scale = 200.0 if self.kind == "ecg" else 3000.0
        counts = np.clip(np.round(mv * scale), self.adc_min, self.adc_max).astype(np.int16)
        self._pos += n
        return counts.reshape(-1, 1), labels, aux


_ACTIVITY = {"rest": (0.0, 0.0, "R"), "walk": (1.8, 300.0, "W"), "run": (2.7, 900.0, "U"),
             "sleep": (0.0, 0.0, "S")}


class AccelSource:
    """A 3-axis wrist accelerometer in mg (+-8 g range) following a schedule of activities; the
    first sample of each activity carries its label (R rest, W walk, U run, S sleep)."""

    sensor = Sensor.ACC
    n_channels = 3
    adc_min, adc_max = -8000, 8000

    def __init__(self, schedule: tuple[tuple[float, str], ...] = ((60.0, "rest"), (60.0, "walk")),
                 sample_rate_hz: int = 50, seed: int = 0) -> None:
        if not schedule or any(a not in _ACTIVITY or d <= 0 for d, a in schedule):
            raise ConfigError(f"accelerometer schedule needs (seconds > 0, activity in "
                              f"{sorted(_ACTIVITY)}) pairs, got {schedule!r}")
        self.sample_rate_hz = sample_rate_hz
        self.schedule = schedule
        self._rng = np.random.default_rng(np.random.SeedSequence([seed, 0xACC]))
        self._cycle_s = sum(d for d, _ in schedule)
        self._pos = 0

    def _activity(self, t_s: float) -> tuple[str, float]:
        """The activity at t and when it began (the schedule repeats)."""
        base = math.floor(t_s / self._cycle_s) * self._cycle_s
        start = base
        for duration, name in self.schedule:
            if t_s < start + duration:
                return name, start
            start += duration
        return self.schedule[-1][1], start

    def read(self, n: int) -> Block:
        fs = self.sample_rate_hz
        idx = self._pos + np.arange(n)
        t = idx / fs
        out = np.zeros((n, 3))
        labels, aux = _empty_labels(n)
        for i, ti in enumerate(t):
            name, start = self._activity(float(ti))
            freq, amp, symbol = _ACTIVITY[name]
            tilt = 0.3 if name == "sleep" else 0.1 * math.sin(2 * math.pi * 0.05 * ti)
            g = 1000.0 * np.array([math.sin(tilt), 0.0, math.cos(tilt)])
            swing = amp * np.array([math.sin(2 * math.pi * freq * ti),
                                    0.5 * math.sin(4 * math.pi * freq * ti),
                                    0.3 * math.cos(2 * math.pi * freq * ti)])
            out[i] = g + swing
            if round(start * fs) == idx[i]:
                labels[i] = ord(symbol)
        out += 8.0 * self._rng.standard_normal((n, 3))
        self._pos += n
        return np.clip(np.round(out), self.adc_min, self.adc_max).astype(np.int16), labels, aux
