"""Fault injection for simulated wearables: radio link, device clock, battery, sensor.

Every fault is set per device in a ``FaultConfig`` and is reproducible from its seed: the same
config and seed give the same lost, duplicated, reordered and corrupted frames, byte for byte.
numpy's Generator is right here: this is simulation, nothing here protects a secret.

Where each fault acts:
- link faults (loss, duplicates, reordering, bit flips, truncation) act on encoded frames between
  the firmware's radio and the gateway, in ``LinkChannel``;
- disconnects, clock drift and jumps, lead-off and battery act on the firmware itself
  (``firmware_sim.devices.Device`` applies them at the scheduled signal times);
- saturation scales the analog signal so the firmware's ADC clamps it, as an AFE would.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from native.errors import ConfigError

_PROBABILITIES = ("loss", "duplicate", "reorder", "bit_flip", "truncate")


@dataclass(frozen=True, slots=True)
class Window:
    """A span of signal time, in seconds from the start of the recording."""

    start_s: float
    duration_s: float

    def __post_init__(self) -> None:
        if not (self.start_s >= 0 and self.duration_s > 0):
            raise ConfigError(f"fault window needs start_s >= 0 and duration_s > 0: {self}")

    def contains(self, t_s: float) -> bool:
        return self.start_s <= t_s < self.start_s + self.duration_s


def _in_any(windows: tuple[Window, ...], t_s: float) -> bool:
    return any(w.contains(t_s) for w in windows)


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Faults of one device. Probabilities are per transmitted frame."""

    seed: int = 0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_max_delay: int = 4          # frames a reordered frame is held back, at most
    bit_flip: float = 0.0
    bit_flip_max_bits: int = 3
    truncate: float = 0.0
    disconnects: tuple[Window, ...] = ()
    clock_drift_ppm: int = 0
    clock_jumps: tuple[tuple[float, int], ...] = ()  # (signal time s, jump in us)
    battery_life_s: float | None = None  # the battery reaches cut-off after this much signal time
    saturation: tuple[Window, ...] = ()
    saturation_gain: float = 8.0
    lead_off: tuple[Window, ...] = ()

    def __post_init__(self) -> None:
        for name in _PROBABILITIES:
            p = getattr(self, name)
            if not isinstance(p, int | float) or not 0.0 <= float(p) <= 1.0:
                raise ConfigError(f"fault {name}={p!r} must be a probability in [0, 1]")
        if not 1 <= self.reorder_max_delay <= 1000 or not 1 <= self.bit_flip_max_bits <= 64:
            raise ConfigError("reorder_max_delay must be 1..1000, bit_flip_max_bits 1..64")
        if not -100_000 <= self.clock_drift_ppm <= 100_000:
            raise ConfigError(f"clock_drift_ppm={self.clock_drift_ppm} outside +-100000")
        if self.battery_life_s is not None and not self.battery_life_s > 0:
            raise ConfigError("battery_life_s must be > 0 when set")
        if not self.saturation_gain >= 1.0:
            raise ConfigError("saturation_gain must be >= 1")
        for at_s, _jump in self.clock_jumps:
            if at_s < 0:
                raise ConfigError("clock jump times must be >= 0")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FaultConfig:
        """Build from a scenario file's table: windows as [start_s, duration_s] pairs."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"faults must be a table, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown fault keys: {sorted(unknown)}")
        kwargs: dict[str, Any] = dict(data)
        try:
            for key in ("disconnects", "saturation", "lead_off"):
                if key in kwargs:
                    kwargs[key] = tuple(Window(float(s), float(d)) for s, d in kwargs[key])
            if "clock_jumps" in kwargs:
                kwargs["clock_jumps"] = tuple((float(t), int(j)) for t, j in kwargs["clock_jumps"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad fault window or jump list: {exc}") from exc
        return cls(**kwargs)

    def link_up(self, t_s: float) -> bool:
        return not _in_any(self.disconnects, t_s)

    def lead_off_at(self, t_s: float) -> bool:
        return _in_any(self.lead_off, t_s)

    def saturated_at(self, t_s: float) -> bool:
        return _in_any(self.saturation, t_s)


def device_rng(seed: int, device_id: int, stream: int) -> np.random.Generator:
    """An independent, reproducible generator per (seed, device, purpose)."""
    return np.random.default_rng(np.random.SeedSequence([seed, device_id, stream]))


@dataclass(slots=True)
class LinkChannel:
    """A lossy radio link: frames in, frames out, with the configured faults applied."""

    config: FaultConfig
    rng: np.random.Generator
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("sent", "lost", "duplicated", "reordered", "bit_flipped", "truncated", "delivered"), 0))
    _held: list[tuple[int, bytes]] = field(default_factory=list)

    def _corrupt(self, frame: bytes) -> bytes:
        cfg, rng = self.config, self.rng
        if cfg.bit_flip and rng.random() < cfg.bit_flip:
            buf = bytearray(frame)
            for _ in range(int(rng.integers(1, cfg.bit_flip_max_bits + 1))):
                bit = int(rng.integers(0, len(buf) * 8))
                buf[bit // 8] ^= 1 << (bit % 8)
            self.counts["bit_flipped"] += 1
            frame = bytes(buf)
        if cfg.truncate and rng.random() < cfg.truncate and len(frame) > 1:
            frame = frame[: int(rng.integers(0, len(frame)))]
            self.counts["truncated"] += 1
        return frame

    def transmit(self, frame: bytes) -> list[bytes]:
        """Send one frame; returns the frames that reach the gateway now, in arrival order."""
        cfg, rng = self.config, self.rng
        self.counts["sent"] += 1
        out: list[bytes] = []
        if cfg.loss and rng.random() < cfg.loss:
            self.counts["lost"] += 1
        else:
            frame = self._corrupt(frame)
            copies = [frame]
            if cfg.duplicate and rng.random() < cfg.duplicate:
                copies.append(frame)
                self.counts["duplicated"] += 1
            for copy in copies:
                if cfg.reorder and rng.random() < cfg.reorder:
                    self._held.append((int(rng.integers(1, cfg.reorder_max_delay + 1)), copy))
                    self.counts["reordered"] += 1
                else:
                    out.append(copy)
        out.extend(self._release())
        self.counts["delivered"] += len(out)
        return out

    def _release(self) -> list[bytes]:
        due = [f for d, f in self._held if d <= 1]
        self._held = [(d - 1, f) for d, f in self._held if d > 1]
        return due

    def flush(self) -> list[bytes]:
        """Everything still held back, delivered now (end of a run)."""
        out = [f for _, f in self._held]
        self._held = []
        self.counts["delivered"] += len(out)
        return out


def apply_saturation(block: npt.NDArray[np.int16], gain: float) -> npt.NDArray[np.int16]:
    """The analog front end overdriven by ``gain``; values beyond int16 pin at its limits, and the
    firmware then clamps them to its ADC rails and flags the frame."""
    scaled = np.clip(block.astype(np.float64) * gain, -32768, 32767)
    return scaled.astype(np.int16)


def apply_lead_off(block: npt.NDArray[np.int16], rail: int) -> npt.NDArray[np.int16]:
    """Electrode contact lost: the input amplifier drifts to a rail, as real AFEs do."""
    return np.full_like(block, rail)
