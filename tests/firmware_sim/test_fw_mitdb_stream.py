"""A MIT-BIH record streamed by its simulated patch (firmware -> MQTT device link -> store) gives
the training set ``models.ecg.beat_dataset`` gives for the record: same beats, labels and inputs,
so the federated figures stay comparable with the direct reading of the records. The one
documented edge effect: frames holding a sample at an ADC rail are flagged saturated and left out
(record 116 touches its rail), and a record's last partial frame (20 samples) is never sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_client.device_link import DeviceLink, LinkConfig
from edge_client.localdata import StoreData
from edge_client.store import Store
from firmware_sim.devices import build_device
from firmware_sim.publisher import DevicePublisher
from models.ecg import beat_dataset, read_record
from native.broker import EmbeddedBroker

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    with EmbeddedBroker() as broker:  # what `fedgate sim --data mitdb` streams through
        yield broker.url


def streamed(broker_url: str, record: Path, tmp: Path) -> tuple[Path, dict[str, int]]:
    path = tmp / f"{record.name}.sqlite"
    device = build_device({"id": 1, "kind": "mitdb", "record": str(record)})
    link = DeviceLink(broker_url, path, LinkConfig(devices=frozenset({1}), silence_s=0.3))
    link.start()
    pub = DevicePublisher(broker_url, [device])
    pub.start()
    try:
        pub.run(3600.0, chunk_s=1.0, taken=link.handled, linger_s=0.5)
        assert link.wait_idle(30)
    finally:
        pub.stop()
        link.stop()
    assert device.exhausted  # the whole record, as fast as the link takes it
    return path, device.firmware.stats


@pytest.mark.parametrize("record", ["208", "119"])
def test_a_streamed_record_gives_the_beat_dataset(broker_url: str, mitdb_dir: Path,
                                                  tmp_path: Path, record: str) -> None:
    path, stats = streamed(broker_url, mitdb_dir / record, tmp_path)
    assert stats["samples_saturated"] == 0
    with Store(path) as store:
        assert store.gaps(1) == [] and set(store.counters(1)) == {"accepted"}
        idx, _ = store.signal(1)
    x, _, _, _ = read_record(mitdb_dir / record)
    assert idx.size == x.size - x.size % 90  # all but the last partial frame
    got, got_labels = StoreData(path).dataset()
    want, want_labels = beat_dataset(mitdb_dir / record)
    assert np.array_equal(got_labels, want_labels) and got_labels.size > 1900
    for key in want:
        assert got[key].dtype == want[key].dtype
        # counts vs mV: the per-patient amplitude normalisation removes the 200 counts/mV
        assert np.allclose(got[key], want[key], rtol=0, atol=1e-5), key


def test_a_record_that_touches_its_adc_rail_loses_only_those_frames(
        broker_url: str, mitdb_dir: Path, tmp_path: Path) -> None:
    path, stats = streamed(broker_url, mitdb_dir / "116", tmp_path)
    assert stats["samples_saturated"] > 0
    got_inputs, got = StoreData(path).dataset()
    _, want = beat_dataset(mitdb_dir / "116")
    _, _, peaks, symbols = read_record(mitdb_dir / "116")
    assert 0.99 * want.size <= got.size < want.size
    with Store(path) as store:
        stored = {s: lb for s, lb, _ in store.beats(1)}
        sent = store.signal(1)[0].size
    # Every annotated beat arrived with its label; only the training windows skip rail frames.
    assert all(stored.get(int(p)) == s for p, s in zip(peaks, symbols, strict=True) if p < sent)
    assert np.isfinite(got_inputs["beat"]).all()
