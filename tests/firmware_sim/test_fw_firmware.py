"""The C firmware through cffi: frames, ring buffer, state machine, battery, signal sources."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from firmware_sim.devices import TX_WINDOW, Device, Firmware
from firmware_sim.faults import FaultConfig, Window
from firmware_sim.signals import AccelSource, Episode, MitbihSource, SyntheticCardiacSource
from native.errors import ConfigError, InputError
from native.frames import Flag, Frame, Sensor, decode


def _fw(**over: int) -> Firmware:
    cfg: dict[str, int] = dict(device_id=9, sensor=Sensor.ECG, n_channels=1, sample_rate_hz=360,
                               samples_per_frame=90, adc_min=-2048, adc_max=2047)
    cfg.update(over)
    return Firmware(**cfg)  # type: ignore[arg-type]


def _ramp(n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    values = ((np.arange(start, start + n) % 2000) - 1000).astype(np.int16).reshape(-1, 1)
    return values, np.zeros(n, np.uint8), np.zeros(n, np.uint8)


def _drain(fw: Firmware) -> list[Frame]:
    out = []
    while (raw := fw.poll_tx()) is not None:
        out.append(decode(raw))
    return out


def test_frames_carry_the_samples_in_order() -> None:
    fw = _fw()
    values, labels, aux = _ramp(900)
    labels[[10, 95, 450]] = [ord("N"), ord("V"), ord("A")]
    assert fw.push(values, labels, aux) == 10
    frames = _drain(fw)
    assert [f.seq for f in frames] == list(range(10))
    assert [f.first_sample for f in frames] == list(range(0, 900, 90))
    assert np.array_equal(np.concatenate([f.samples for f in frames]), values)
    beats = [(f.first_sample + a.offset, a.label) for f in frames for a in f.annotations]
    assert beats == [(10, "N"), (95, "V"), (450, "A")]
    # 250 ms frames: the timestamps step by 250 000 us on an exact clock.
    assert {b.t_us - a.t_us for a, b in itertools.pairwise(frames)} == {250_000}
    assert fw.stats["frames_sent"] == 10 and fw.backlog == 0


def test_partial_frames_wait_in_the_ring() -> None:
    fw = _fw()
    fw.push(*_ramp(89))
    assert _drain(fw) == []
    fw.push(*_ramp(1, 89))
    assert len(_drain(fw)) == 1


def test_disconnect_buffers_and_reconnect_drains_in_order() -> None:
    fw = _fw()
    fw.set_link(False)
    assert fw.state == "buffering"
    fw.push(*_ramp(90 * 20))
    assert fw.poll_tx() is None and fw.backlog == 20
    fw.set_link(True)
    frames = _drain(fw)
    assert [f.seq for f in frames] == list(range(20))
    assert all(f.flags & Flag.BUFFERED for f in frames)
    assert fw.state == "sampling"


def test_a_long_disconnect_overwrites_the_oldest_frames() -> None:
    fw = _fw()
    fw.set_link(False)
    fw.push(*_ramp(90 * (TX_WINDOW + 10)))
    fw.set_link(True)
    frames = _drain(fw)
    assert [f.seq for f in frames] == list(range(10, TX_WINDOW + 10))
    assert fw.stats["frames_overwritten"] == 10


def test_resend_window() -> None:
    fw = _fw()
    fw.push(*_ramp(90 * 5))
    first = _drain(fw)
    assert fw.request_resend(2) and fw.request_resend(4)
    assert not fw.request_resend(7)  # never sent
    again = _drain(fw)
    assert [f.seq for f in again] == [2, 4]
    assert all(f.flags & Flag.RESEND for f in again)
    assert np.array_equal(again[0].samples, first[2].samples)
    fw.push(*_ramp(90 * (TX_WINDOW + 1)))
    _drain(fw)
    assert not fw.request_resend(0)  # slid out of the window
    assert fw.stats["resend_refused"] == 2


def test_saturation_clamps_and_flags() -> None:
    fw = _fw(adc_min=-100, adc_max=100)
    values = np.full((90, 1), 500, dtype=np.int16)
    fw.push(values, np.zeros(90, np.uint8), np.zeros(90, np.uint8))
    (frame,) = _drain(fw)
    assert frame.flags & Flag.SATURATED and int(frame.samples.max()) == 100


def test_lead_off_flags_and_drops_beat_markers() -> None:
    fw = _fw()
    fw.set_lead_off(True)
    values, labels, aux = _ramp(90)
    labels[5] = ord("N")
    fw.push(values, labels, aux)
    (frame,) = _drain(fw)
    assert frame.flags & Flag.LEAD_OFF and frame.annotations == ()


def test_battery_dies_and_the_device_says_so() -> None:
    # 10 s of sampling at 300 uA plus the radio: far less than that capacity.
    fw = _fw(battery_capacity_nas=300_000 * 5)
    fw.push(*_ramp(360 * 10))
    assert fw.state == "shutdown"
    frames = _drain(fw)
    assert frames[-1].sensor == Sensor.STATUS and frames[-1].flags & Flag.SHUTDOWN
    assert all(f.first_sample < 360 * 6 for f in frames)
    assert fw.push(*_ramp(90)) == 0
    pct = [f.battery_pct for f in frames]
    assert pct == sorted(pct, reverse=True) and pct[-1] == 0


def test_clock_drift_and_jump() -> None:
    fw = _fw(clock_drift_ppm=1000)
    fw.push(*_ramp(90 * 41))
    frames = _drain(fw)
    span = frames[40].t_us - frames[0].t_us
    assert span == pytest.approx(10_000_000 * 1.001, abs=2)
    fw.clock_jump(-5_000_000)
    fw.push(*_ramp(90))
    (after,) = _drain(fw)
    assert after.t_us - frames[40].t_us == pytest.approx(250_000 * 1.001 - 5_000_000, abs=2)


@pytest.mark.parametrize("bad", [
    dict(sensor=0), dict(sensor=7), dict(n_channels=0), dict(n_channels=9), dict(sample_rate_hz=0),
    dict(samples_per_frame=0), dict(samples_per_frame=481), dict(adc_min=5, adc_max=5),
    dict(battery_capacity_nas=0), dict(clock_drift_ppm=200_000),
])
def test_bad_firmware_config_is_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        _fw(**bad)


def test_bad_sample_blocks_are_refused() -> None:
    fw = _fw()
    with pytest.raises(InputError):
        fw.push(np.zeros((10, 2), np.int16), np.zeros(10, np.uint8), np.zeros(10, np.uint8))
    with pytest.raises(InputError):
        fw.push(np.zeros((10, 1), np.int16), np.zeros(9, np.uint8), np.zeros(10, np.uint8))
    with pytest.raises(ConfigError):
        _fw(n_channels=300)
    with pytest.raises(InputError):
        _fw(device_id=-1)


def test_synthetic_ecg_is_deterministic_and_block_size_free() -> None:
    a = SyntheticCardiacSource(seed=3, episodes=(Episode(5, 10, "pvc"),))
    b = SyntheticCardiacSource(seed=3, episodes=(Episode(5, 10, "pvc"),))
    va, la, _ = a.read(360 * 20)
    parts = [b.read(n) for n in (1, 359, 1000, 360 * 20 - 1360)]
    assert np.array_equal(va, np.concatenate([p[0] for p in parts]))
    assert np.array_equal(la, np.concatenate([p[1] for p in parts]))
    symbols = [chr(x) for x in la[la > 0]]
    assert "V" in symbols and symbols.count("N") > 10
    with pytest.raises(ConfigError):
        SyntheticCardiacSource(hr_bpm=5)
    with pytest.raises(ConfigError):
        Episode(0, 1, "torsades")


def test_synthetic_ppg_and_accelerometer_devices() -> None:
    ppg = Device(1, SyntheticCardiacSource(kind="ppg", seed=1))
    frames = [decode(f) for f in ppg.run(10)]
    assert {f.sensor for f in frames} >= {Sensor.PPG} and frames[0].sample_rate_hz == 100
    acc = Device(2, AccelSource(schedule=((4.0, "rest"), (4.0, "run")), seed=1))
    frames = [decode(f) for f in acc.run(8)]
    data = [f for f in frames if f.sensor == Sensor.ACC]
    assert data[0].n_channels == 3
    marks = [(f.first_sample + a.offset, a.label) for f in data for a in f.annotations]
    assert marks == [(0, "R"), (200, "U")]
    with pytest.raises(ConfigError):
        AccelSource(schedule=((1.0, "dance"),))


def test_device_battery_life_fault() -> None:
    dev = Device(3, SyntheticCardiacSource(seed=2), FaultConfig(battery_life_s=30))
    frames = [decode(f) for f in dev.run(120)]
    assert dev.firmware.state == "shutdown"
    assert 25 < dev.t_s < 35
    assert frames[-1].flags & Flag.SHUTDOWN


def test_device_disconnect_window_loses_nothing() -> None:
    clean = [decode(f) for f in Device(4, SyntheticCardiacSource(seed=4)).run(30)]
    faulty = Device(4, SyntheticCardiacSource(seed=4),
                    FaultConfig(disconnects=(Window(5.0, 10.0),)))
    frames = [decode(f) for f in faulty.run(30)]
    assert [f.seq for f in frames] == [f.seq for f in clean]
    assert any(f.flags & Flag.BUFFERED for f in frames)


def test_mitbih_playback_emits_the_atr_beats(mitdb_dir: Path) -> None:
    import wfdb

    src = MitbihSource(mitdb_dir / "101")
    assert src.sample_rate_hz == 360
    dev = Device(101, src)
    frames = [decode(f) for f in dev.run(60)]
    beats = [(f.first_sample + a.offset, a.label) for f in frames for a in f.annotations]
    ann = wfdb.rdann(str(mitdb_dir / "101"), "atr")
    spf = dev.samples_per_frame
    sent = max(f.first_sample for f in frames if f.n_samples) + spf
    expected = [(int(s), y) for s, y in zip(ann.sample, ann.symbol, strict=True)
                if s < sent and y in "NLRBAaJSVrFejnE/fQ?"]
    assert beats == expected and len(beats) > 50
    record = wfdb.rdrecord(str(mitdb_dir / "101"), physical=False, sampto=sent)
    ecg = np.concatenate([f.samples[:, 0] for f in frames if f.sensor == Sensor.ECG])
    assert np.array_equal(ecg, record.d_signal[:sent, 0] - record.adc_zero[0])
    with pytest.raises(InputError):
        MitbihSource(mitdb_dir / "nope")
    with pytest.raises(InputError):
        MitbihSource(mitdb_dir / "101", lead="V7")
