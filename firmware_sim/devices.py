"""Simulated wearables: a signal source, the real C firmware (through cffi), and a faulty radio.

A ``Device`` advances in signal time. ``step(dt_s)`` digitises dt_s of signal, pushes it through
the firmware (ring buffer -> frame encoder -> transmit window) and returns the frames that reach
the gateway after the link faults. Nothing here knows the transport: the fleet simulator hands the
frames to whatever carries them (``edge_client.ingest.Ingestor.feed`` directly, or an MQTT publish),
and routes the gateway's gap reports back with ``request_resend``.

Typical use::

    dev = Device(7, SyntheticCardiacSource(hr_bpm=72, seed=7), FaultConfig(loss=0.05, seed=7))
    for frame in dev.run(duration_s=60):
        ingestor.feed(frame)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from firmware_sim import _firmware  # type: ignore[attr-defined]
from firmware_sim.faults import (
    FaultConfig,
    LinkChannel,
    apply_lead_off,
    apply_saturation,
    device_rng,
)
from firmware_sim.signals import (
    AccelSource,
    Episode,
    MitbihSource,
    SignalSource,
    SyntheticCardiacSource,
)
from native.errors import ConfigError, InputError, NativeError
from native.frames import Sensor

log = logging.getLogger(__name__)

_ffi: Any = _firmware.ffi
_lib: Any = _firmware.lib

MAX_FRAME: int = int(_lib.FG_MAX_FRAME)
TX_WINDOW: int = int(_lib.FW_TX_SLOTS)
STATES = {0: "sampling", 1: "buffering", 2: "shutdown"}
_FW_OFF = -2

#: Frame length in seconds per sensor: 250 ms of ECG (90 samples at 360 Hz) fits one BLE 5 packet.
FRAME_SECONDS = {Sensor.ECG: 0.25, Sensor.PPG: 0.25, Sensor.ACC: 0.5}
SAMPLE_CURRENT_NA = 300_000     # AFE + MCU while sampling (300 uA)
TX_NAS_PER_BYTE = 40            # ~5 mA radio for 8 us per byte
DEFAULT_CAPACITY_NAS = 200 * 3_600_000_000  # a 200 mAh cell


class Firmware:
    """One firmware instance: a 1:1 wrapper of the C API that checks arguments first."""

    def __init__(self, *, device_id: int, sensor: Sensor, n_channels: int, sample_rate_hz: int,
                 samples_per_frame: int, adc_min: int, adc_max: int, clock_drift_ppm: int = 0,
                 clock_start_us: int = 0, battery_capacity_nas: int = DEFAULT_CAPACITY_NAS,
                 status_every_frames: int = 0) -> None:
        if not 0 <= device_id <= 0xFFFF_FFFF:
            raise InputError(f"device_id {device_id} is not a uint32")
        self._dev = _ffi.new("fw_device *")
        cfg = _ffi.new("fw_config *")
        try:
            cfg.device_id, cfg.sensor, cfg.n_channels = device_id, int(sensor), n_channels
            cfg.sample_rate_hz, cfg.samples_per_frame = sample_rate_hz, samples_per_frame
            cfg.adc_min, cfg.adc_max, cfg.clock_drift_ppm = adc_min, adc_max, clock_drift_ppm
            cfg.clock_start_us, cfg.battery_capacity_nas = clock_start_us, battery_capacity_nas
            cfg.sample_current_na, cfg.tx_nas_per_byte = SAMPLE_CURRENT_NA, TX_NAS_PER_BYTE
            cfg.status_every_frames = status_every_frames
        except (OverflowError, TypeError) as exc:
            raise ConfigError(f"firmware config field out of range: {exc}") from exc
        if _lib.fw_init(self._dev, cfg) != 0:
            raise ConfigError("firmware refused the configuration (sensor, channels, rate, "
                              "samples per frame, ADC range, battery or drift out of bounds)")
        self.n_channels = n_channels
        self._out = bytearray(MAX_FRAME)
        self._c_out = _ffi.from_buffer(self._out)
        self._len = _ffi.new("size_t *")

    def push(self, values: npt.NDArray[Any], labels: npt.NDArray[Any], aux: npt.NDArray[Any]
             ) -> int:
        """Feed samples (int16, shape (n, channels)) and per-sample labels; frames encoded."""
        values = np.ascontiguousarray(values, dtype=np.int16)
        n = values.shape[0]
        if values.ndim != 2 or values.shape[1] != self.n_channels or labels.shape != (n,) or \
                aux.shape != (n,):
            raise InputError(f"samples {values.shape} / labels {labels.shape} do not match "
                             f"{self.n_channels} channels")
        if n == 0:
            return 0
        labels = np.ascontiguousarray(labels, dtype=np.uint8)
        aux = np.ascontiguousarray(aux, dtype=np.uint8)
        rc = int(_lib.fw_push(self._dev, _ffi.from_buffer("int16_t[]", values),
                              _ffi.from_buffer("uint8_t[]", labels),
                              _ffi.from_buffer("uint8_t[]", aux), n))
        if rc == _FW_OFF:
            return 0
        if rc < 0:
            raise NativeError(f"firmware fw_push failed with {rc}")
        return rc

    def poll_tx(self) -> bytes | None:
        """The next frame the radio sends, or None when nothing is due (or the link is down)."""
        if _lib.fw_poll_tx(self._dev, self._c_out, MAX_FRAME, self._len) != 0:
            raise NativeError("firmware fw_poll_tx failed")
        n = int(self._len[0])
        return bytes(self._out[:n]) if n else None

    def request_resend(self, seq: int) -> bool:
        return bool(_lib.fw_request_resend(self._dev, seq & 0xFFFF_FFFF))

    def set_link(self, up: bool) -> None:
        _lib.fw_set_link(self._dev, int(up))

    def set_lead_off(self, off: bool) -> None:
        _lib.fw_set_lead_off(self._dev, int(off))

    def clock_jump(self, delta_us: int) -> None:
        _lib.fw_clock_jump(self._dev, delta_us)

    @property
    def state(self) -> str:
        return STATES[int(self._dev.state)]

    @property
    def battery_pct(self) -> int:
        return int(_lib.fw_battery_pct(self._dev))

    @property
    def backlog(self) -> int:
        return int(_lib.fw_backlog(self._dev))

    @property
    def stats(self) -> dict[str, int]:
        s = self._dev.stats
        return {name: int(getattr(s, name)) for name in dir(s)}


class Device:
    """A simulated wearable: source -> signal faults -> firmware -> link faults -> frames."""

    def __init__(self, device_id: int, source: SignalSource, faults: FaultConfig | None = None,
                 *, samples_per_frame: int | None = None, clock_start_us: int = 0,
                 status_every_frames: int = 40) -> None:
        self.device_id = device_id
        self.source = source
        self.faults = faults or FaultConfig()
        fs = source.sample_rate_hz
        spf = samples_per_frame or max(1, round(FRAME_SECONDS[source.sensor] * fs))
        self.samples_per_frame = spf
        capacity = DEFAULT_CAPACITY_NAS
        if self.faults.battery_life_s is not None:
            # Charge for that long: sampling draw plus the radio at one frame per spf samples.
            frame_bytes = 40 + 2 * spf * source.n_channels
            per_s = SAMPLE_CURRENT_NA + TX_NAS_PER_BYTE * frame_bytes * fs / spf
            capacity = max(1, int(self.faults.battery_life_s * per_s))
        self.firmware = Firmware(
            device_id=device_id, sensor=source.sensor, n_channels=source.n_channels,
            sample_rate_hz=fs, samples_per_frame=spf, adc_min=source.adc_min,
            adc_max=source.adc_max, clock_drift_ppm=self.faults.clock_drift_ppm,
            clock_start_us=clock_start_us, battery_capacity_nas=capacity,
            status_every_frames=status_every_frames)
        self.link = LinkChannel(self.faults, device_rng(self.faults.seed, device_id, 1))
        self._jumps = sorted(self.faults.clock_jumps)
        self._pos = 0
        self._carry = 0.0
        self.exhausted = False

    @property
    def t_s(self) -> float:
        """Signal time reached so far."""
        return self._pos / self.source.sample_rate_hz

    @property
    def done(self) -> bool:
        """Nothing more will come: source over or battery dead, and the backlog is out."""
        fw = self.firmware
        return (self.exhausted or fw.state == "shutdown") and (fw.backlog == 0 or not
                                                                self.faults.link_up(self.t_s))

    def _apply_schedule(self) -> None:
        t, fw = self.t_s, self.firmware
        fw.set_link(self.faults.link_up(t))
        fw.set_lead_off(self.faults.lead_off_at(t))
        while self._jumps and self._jumps[0][0] <= t:
            _, delta = self._jumps.pop(0)
            fw.clock_jump(delta)
            log.debug("device %d: clock jump %+d us at %.2f s", self.device_id, delta, t)

    def step(self, dt_s: float) -> list[bytes]:
        """Advance dt_s of signal time; the frames that arrive at the gateway meanwhile."""
        if not dt_s > 0:
            raise InputError(f"dt_s must be > 0, got {dt_s}")
        self._apply_schedule()
        exact = dt_s * self.source.sample_rate_hz + self._carry
        n = int(exact)
        self._carry = exact - n
        if n and not self.exhausted and self.firmware.state != "shutdown":
            values, labels, aux = self.source.read(n)
            if values.shape[0] < n:
                self.exhausted = True
            t = self.t_s
            if self.faults.lead_off_at(t):
                values = apply_lead_off(values, self.source.adc_max)
            elif self.faults.saturated_at(t):
                values = apply_saturation(values, self.faults.saturation_gain)
            self.firmware.push(values, labels, aux)
            self._pos += values.shape[0]
        return self._drain()

    def _drain(self) -> list[bytes]:
        out: list[bytes] = []
        while (frame := self.firmware.poll_tx()) is not None:
            out.extend(self.link.transmit(frame))
        return out

    def poll_radio(self) -> list[bytes]:
        """Frames the firmware sends now without new samples (resends it was asked for)."""
        return self._drain()

    def request_resend(self, seqs: Iterable[int]) -> int:
        """Gap repair from the gateway; how many of the sequences were still in the window."""
        return sum(self.firmware.request_resend(s) for s in seqs)

    def finish(self) -> list[bytes]:
        """End of the run: the remaining backlog (if the link is up) and held-back frames."""
        return self._drain() + self.link.flush()

    def run(self, duration_s: float, *, chunk_s: float = 0.25, speedup: float | None = None,
            on_frame: Callable[[bytes], object] | None = None) -> Iterator[bytes]:
        """Play ``duration_s`` of signal in chunks, yielding arriving frames. With ``speedup`` the
        playback is paced against the wall clock (1.0 = real time); without it, as fast as possible.
        """
        start = time.monotonic()
        t_end = self.t_s + duration_s
        while self.t_s < t_end - 1e-9 and not self.done:
            for frame in self.step(min(chunk_s, t_end - self.t_s)):
                if on_frame is not None:
                    on_frame(frame)
                yield frame
            if speedup:
                ahead = (self.t_s - (t_end - duration_s)) / speedup - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
            if self.exhausted:
                break
        yield from self.finish()


_SPEC_KEYS = frozenset({"id", "kind", "seed", "hr_bpm", "hrv", "episodes", "record", "lead",
                        "schedule", "faults", "samples_per_frame", "sample_rate_hz"})


def build_device(spec: Mapping[str, Any]) -> Device:
    """A device from one scenario-file entry, e.g. ``{"id": 3, "kind": "ecg", "seed": 3,
    "hr_bpm": 70, "episodes": [[60, 30, "afib"]], "faults": {"loss": 0.05}}``. Kinds: ``ecg``,
    ``ppg`` (synthetic heart), ``acc`` (wrist, ``schedule`` = [[seconds, activity], ...]),
    ``mitdb`` (``record`` = path of a MIT-BIH record without extension)."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"a device entry must be a table, got {type(spec).__name__}")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ConfigError(f"unknown device keys: {sorted(unknown)}")
    kind, device_id, seed = spec.get("kind"), spec.get("id"), spec.get("seed", 0)
    if not isinstance(device_id, int) or not isinstance(seed, int):
        raise ConfigError("a device entry needs an integer 'id' (and an integer 'seed' if given)")
    fault_table = spec.get("faults", {})
    if not isinstance(fault_table, Mapping):
        raise ConfigError(f"'faults' must be a table, got {type(fault_table).__name__}")
    faults = FaultConfig.from_mapping({"seed": seed, **fault_table})
    source: SignalSource
    try:
        if kind in ("ecg", "ppg"):
            episodes = tuple(Episode(float(s), float(d), str(k))
                             for s, d, k in spec.get("episodes", ()))
            source = SyntheticCardiacSource(kind, float(spec.get("hr_bpm", 70.0)),
                                            spec.get("sample_rate_hz"), episodes, seed,
                                            float(spec.get("hrv", 0.03)))
        elif kind == "acc":
            schedule = tuple((float(d), str(a)) for d, a in spec.get("schedule", ((60, "rest"),)))
            source = AccelSource(schedule, int(spec.get("sample_rate_hz", 50)), seed)
        elif kind == "mitdb":
            source = MitbihSource(str(spec["record"]), str(spec.get("lead", "MLII")))
        else:
            raise ConfigError(f"device kind must be ecg, ppg, acc or mitdb, got {kind!r}")
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError | InputError):
            raise
        raise ConfigError(f"bad device entry {spec!r}: {exc}") from exc
    return Device(device_id, source, faults, samples_per_frame=spec.get("samples_per_frame"))
