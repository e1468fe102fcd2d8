"""Gateway ingestion fed by real frames from the C firmware, with the simulator's faults."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_client.ingest import IngestConfig, Ingestor, unwrap32
from edge_client.store import UNKNOWN_DEVICE, Store
from firmware_sim.devices import Device
from firmware_sim.faults import FaultConfig, Window
from firmware_sim.signals import Episode, SyntheticCardiacSource
from native.errors import ConfigError, InputError
from native.frames import Annotation, Frame, FrameDecoder, Sensor, encode

DEV = 21
EPISODES = (Episode(20, 20, "pvc"), Episode(60, 20, "apc"))


def _device(faults: FaultConfig | None = None, device_id: int = DEV) -> Device:
    return Device(device_id, SyntheticCardiacSource(hr_bpm=75, seed=device_id, episodes=EPISODES),
                  faults)


def _ingest(frames: list[bytes], config: IngestConfig | None = None
            ) -> tuple[Store, Ingestor, Counter[str]]:
    store = Store()
    ing = Ingestor(store, config)
    outcomes = Counter(ing.feed(f) for f in frames)
    ing.flush()
    return store, ing, outcomes


def _stored_seqs(store: Store) -> set[int]:
    rows = store._db.execute("SELECT seq FROM frames WHERE device_id=?", (DEV,))
    return {int(r[0]) for r in rows}


@pytest.fixture(scope="module")
def clean() -> tuple[Store, list[bytes]]:
    frames = list(_device().run(120))
    store, _, outcomes = _ingest(frames)
    assert outcomes == Counter(accepted=len(frames))
    return store, frames


@pytest.mark.parametrize("seed", [8, 13, 21])
def test_loss_and_duplicates_keep_exactly_the_beats_that_arrived(
        clean: tuple[Store, list[bytes]], seed: int) -> None:
    clean_store, _ = clean
    frames = list(_device(FaultConfig(seed=seed, loss=0.05, duplicate=0.05)).run(120))
    store, _, outcomes = _ingest(frames)
    assert outcomes["duplicate"] > 0 and outcomes["accepted"] < len(clean[1])
    arrived = _stored_seqs(store)
    beat_seq = dict(clean_store._db.execute(
        "SELECT sample, seq FROM beats WHERE device_id=?", (DEV,)).fetchall())
    expected = [b for b in clean_store.beats(DEV) if beat_seq[b[0]] in arrived]
    assert store.beats(DEV) == expected and len(expected) > 100
    idx, vals = store.signal(DEV)
    cidx, cvals = clean_store.signal(DEV)
    keep = np.isin(cidx, idx)
    assert np.array_equal(cidx[keep], idx) and np.array_equal(cvals[keep], vals)
    # Gaps are only knowable between the first and the last frame that arrived.
    missing = sorted(set(range(min(arrived), max(arrived) + 1)) - arrived)
    gaps = [s for a, b in store.gaps(DEV) for s in range(a, b + 1)]
    assert gaps == missing


def test_corrupt_frames_never_reach_the_store(clean: tuple[Store, list[bytes]]) -> None:
    clean_store, clean_frames = clean
    genuine = set(clean_frames)
    faults = FaultConfig(seed=9, bit_flip=0.1, truncate=0.05, reorder=0.05, duplicate=0.02)
    dev = _device(faults)
    store = Store()
    ing = Ingestor(store)
    corrupted = 0
    for frame in dev.run(120):
        outcome = ing.feed(frame)
        if frame in genuine:
            assert outcome in ("accepted", "duplicate", "late")
        else:
            corrupted += 1
            assert outcome not in ("accepted", "duplicate", "late")
    ing.flush()
    assert corrupted >= dev.link.counts["bit_flipped"] > 20
    assert sum(store.counters(UNKNOWN_DEVICE).values()) == corrupted
    idx, vals = store.signal(DEV)
    cidx, cvals = clean_store.signal(DEV)
    pos = np.searchsorted(cidx, idx)
    assert np.array_equal(cidx[pos], idx) and np.array_equal(cvals[pos], vals)
    assert set(store.beats(DEV)) <= set(clean_store.beats(DEV))


def test_battery_death_keeps_what_arrived(clean: tuple[Store, list[bytes]]) -> None:
    clean_store, _ = clean
    dev = _device(FaultConfig(battery_life_s=50, loss=0.02, seed=3))
    store, _, _ = _ingest(list(dev.run(120)))
    info = store.device(DEV)
    assert info is not None and info["shutdown"] == 1 and info["battery_pct"] == 0
    beats = store.beats(DEV)
    assert 40 < len(beats) < len(clean_store.beats(DEV))
    assert set(beats) <= set(clean_store.beats(DEV))
    windows, labels = store.beat_windows(DEV, 90, 126)
    assert windows.shape[1] == 216 and len(labels) == windows.shape[0] > 20


def test_reordering_within_the_window_is_invisible(clean: tuple[Store, list[bytes]]) -> None:
    clean_store, frames = clean
    rng = random.Random(5)
    shuffled = list(frames)
    for start in range(0, len(shuffled), 8):  # shuffle inside blocks of 8 < window of 16
        block = shuffled[start:start + 8]
        rng.shuffle(block)
        shuffled[start:start + 8] = block
    store, _, outcomes = _ingest(shuffled)
    # Frames that overtook the very first one arrive "late" but are stored all the same.
    assert set(outcomes) <= {"accepted", "late"} and outcomes.total() == len(frames)
    assert store.gaps(DEV) == [] and store.beats(DEV) == clean_store.beats(DEV)


def test_gap_repair_through_the_resend_window(clean: tuple[Store, list[bytes]]) -> None:
    clean_store, _ = clean
    store = Store()
    ing = Ingestor(store, IngestConfig(reorder_window=4))
    dev = _device(FaultConfig(seed=2, loss=0.1))
    late = 0
    while dev.t_s < 120:
        for frame in dev.step(1.0):
            ing.feed(frame)
        dev.request_resend(ing.missing(DEV))
    for frame in dev.finish():
        late += ing.feed(frame) == "late"
    ing.flush()
    counters = store.counters(DEV)
    assert counters["late"] > 0 and counters["gap_frames"] > counters["late"]
    # Resends are lossy too, but whatever arrived in the end matches the clean run.
    assert set(store.beats(DEV)) <= set(clean_store.beats(DEV))
    assert len(store.beats(DEV)) > 0.95 * len(clean_store.beats(DEV))


def test_disconnect_shorter_than_the_window_leaves_no_gap() -> None:
    dev = _device(FaultConfig(disconnects=(Window(10, 12),)))
    store, _, outcomes = _ingest(list(dev.run(60)))
    assert store.gaps(DEV) == [] and set(outcomes) == {"accepted"}


def test_long_disconnect_is_recorded_as_a_gap() -> None:
    dev = _device(FaultConfig(disconnects=(Window(10, 30),)))
    store, _, _ = _ingest(list(dev.run(60)))
    lost = dev.firmware.stats["frames_overwritten"]
    assert lost > 0
    assert sum(b - a + 1 for a, b in store.gaps(DEV)) == lost


def _ecg(seq: int, t_us: int, first_sample: int | None = None, rate: int = 360,
         device_id: int = 5) -> bytes:
    return encode(Frame(device_id=device_id, seq=seq, t_us=t_us, sensor=Sensor.ECG,
                        samples=np.zeros((90, 1), np.int16), sample_rate_hz=rate,
                        first_sample=90 * seq if first_sample is None else first_sample,
                        annotations=(Annotation(3, "N"),)))


def test_timestamps_must_agree_with_the_sample_clock() -> None:
    store = Store()
    ing = Ingestor(store)
    assert ing.feed(_ecg(0, 10**9)) == "accepted"
    assert ing.feed(_ecg(1, 10**9 + 250_000)) == "accepted"
    assert ing.feed(_ecg(2, 10**9 + 500_000 + 5_000)) == "accepted"   # jitter
    assert ing.feed(_ecg(3, 10**9 + 750_000 + 3 * 10**6)) == "accepted"  # small step: followed
    assert store.counters(5)["clock_jump"] == 1
    assert ing.feed(_ecg(4, 10**15)) == "timestamp"                   # implausible
    assert ing.feed(_ecg(5, 10**9 + 1_250_000 + 3 * 10**6)) == "accepted"
    assert ing.feed(_ecg(6, 2 * 10**15)) == "timestamp"
    assert ing.feed(_ecg(7, 2 * 10**15 + 250_000)) == "accepted"      # confirmed: a real step
    assert ing.feed(_ecg(8, 10**9, rate=250)) == "stream_mismatch"
    assert ing.feed(_ecg(9, 2**64 - 1)) == "timestamp"                # beyond SQLite's range
    assert ing.feed(_ecg(1, 10**9 + 250_000)) == "duplicate"
    ing.flush()
    assert store.counters(5)["timestamp"] == 3


def test_sequence_wraparound() -> None:
    assert unwrap32(2**32 - 1, 0) == 2**32
    assert unwrap32(2**32 + 5, 2**32 - 3) == 2**32 - 3
    store = Store()
    ing = Ingestor(store)
    seqs = [2**32 - 2, 2**32 - 1, 0, 1]
    firsts = [2**32 - 180, 2**32 - 90, 0, 90]
    for i, (s, f) in enumerate(zip(seqs, firsts, strict=True)):
        assert ing.feed(_ecg(s, 10**9 + 250_000 * i, first_sample=f)) == "accepted"
    ing.flush()
    assert [b[0] for b in store.beats(5)] == [2**32 - 180 + 3, 2**32 - 90 + 3, 2**32 + 3,
                                              2**32 + 93]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_garbage_never_crashes_and_is_counted(blobs: list[bytes]) -> None:
    store = Store()
    ing = Ingestor(store)
    outcomes = [ing.feed(b) for b in blobs]
    ing.flush()
    assert all(isinstance(o, str) and o != "accepted" for o in outcomes)
    assert sum(store.counters().values()) == len(blobs)
    assert store.device_ids() == []


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 7))
def test_flipped_real_frames_are_rejected(pos: int, bit: int) -> None:
    frame = bytearray(_ecg(3, 10**9))
    frame[pos % len(frame)] ^= 1 << bit
    store = Store()
    assert Ingestor(store).feed(bytes(frame)) in {"crc", "magic", "version", "length", "short",
                                                  "trailing"}


def test_wrong_types_and_bad_config() -> None:
    store = Store()
    ing = Ingestor(store)
    assert ing.feed("not bytes") == "type"  # type: ignore[arg-type]
    assert ing.feed(None) == "type"  # type: ignore[arg-type]
    assert store.counters(UNKNOWN_DEVICE) == {"type": 2}
    with pytest.raises(ConfigError):
        IngestConfig(reorder_window=0)
    with pytest.raises(InputError):
        store.beat_windows(1, -1, 5)


def test_store_survives_reopen(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "gw.sqlite"
    with Store(path) as store:
        ing = Ingestor(store)
        for frame in _device().run(10):
            ing.feed(frame)
        ing.flush()
        beats = store.beats(DEV)
    with Store(path) as again:
        assert again.beats(DEV) == beats and again.counters(DEV)["accepted"] > 30
    assert FrameDecoder().decode_or_reason(b"") == "short"


def test_flush_of_one_device_leaves_the_others_waiting() -> None:
    """A device that went silent has its held frames released; another device's reorder wait is
    untouched (its hole can still be filled in order, without a recorded gap)."""
    a, b = list(_device(device_id=1).run(3)), list(_device(device_id=2).run(3))  # < 16 frames
    store = Store()
    ing = Ingestor(store)
    for frames in (a, b):
        for i, f in enumerate(frames):
            if i != 3:
                assert ing.feed(f) == "accepted"
    ing.flush(1)
    assert store.gaps(1) == [(3, 3)] and ing.missing(1) == [3]
    assert store.gaps(2) == [] and ing.missing(2) == []
    assert ing.feed(b[3]) == "accepted"  # in order after all: nothing was given up
    assert ing.feed(a[3]) == "late"
    ing.flush()
    assert store.gaps(1) == store.gaps(2) == []
    assert len(store.beats(1)) == len(store.beats(2)) >= 2


def test_missing_gives_the_newest_holes_oldest_first() -> None:
    frames = list(_device().run(60))
    store = Store()
    ing = Ingestor(store)
    for i, f in enumerate(frames):
        if i % 3 != 1:
            ing.feed(f)
    ing.flush()
    holes = [i for i in range(len(frames)) if i % 3 == 1]
    assert ing.missing(DEV, 5) == holes[-5:]
    assert ing.missing(DEV) == holes[-64:]
    assert ing.missing(999) == []
