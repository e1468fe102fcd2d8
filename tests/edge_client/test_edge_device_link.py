"""The gateway's MQTT device link against a real broker: frames into the store, resend requests
for holes (after a reorder overflow and after a device goes silent), and garbage on the frames
topics counted by reason without disturbing the stream."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_client.device_link import DeviceLink, LinkConfig, ingestion_figures
from edge_client.store import UNKNOWN_DEVICE, Store
from firmware_sim.devices import Device
from firmware_sim.signals import AccelSource, SyntheticCardiacSource
from native import topics
from native.broker import EmbeddedBroker, MosquittoBroker, find_mosquitto
from native.errors import ConfigError, TransportError
from native.frames import FrameDecoder, decode
from native.resend import decode_resend

DEV = 5


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    if find_mosquitto() is not None:
        with MosquittoBroker() as broker:
            yield broker.url
    else:  # the embedded broker is what `fedgate sim` uses by default
        with EmbeddedBroker() as embedded:
            yield embedded.url


def ecg_frames(seconds: float, device_id: int = DEV) -> list[bytes]:
    dev = Device(device_id, SyntheticCardiacSource(hr_bpm=72, seed=device_id))
    return list(dev.run(seconds))


class Raw:
    """A plain client that publishes anything and records what arrives on its subscriptions."""

    def __init__(self, url: str, *filters: str) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.got: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", clean_session=True)
        self.client.on_message = lambda _c, _u, m: self.got.append((m.topic, bytes(m.payload)))
        self.client.connect(host, int(port))
        for f in filters:
            self.client.subscribe(f, qos=0)
        self.client.loop_start()
        time.sleep(0.2)  # let the SUBACKs come back

    def send(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=0).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_frames_arrive_in_the_store_as_direct_ingestion_would_store_them(
        broker_url: str, tmp_path: Path) -> None:
    frames = ecg_frames(30)
    link = DeviceLink(broker_url, tmp_path / "s.sqlite", LinkConfig(devices=frozenset({DEV})))
    link.start()
    raw = Raw(broker_url)
    try:
        for f in frames:
            raw.send(topics.device_frames(DEV), f)
        wait_for(lambda: link.handled(DEV) == len(frames))
    finally:
        raw.close()
        link.stop()
    with Store(tmp_path / "s.sqlite") as store:
        assert store.counters(DEV) == {"accepted": len(frames)}
        beats = [(f.first_sample + a.offset, a.label) for f in map(decode, frames)
                 for a in f.annotations]
        assert [(s, lb) for s, lb, _ in store.beats(DEV)] == beats


def test_a_hole_is_asked_for_and_filled_late(broker_url: str, tmp_path: Path) -> None:
    """One frame lost mid-stream (asked for once 16 newer frames wait) and one near the end
    (asked for once the device has been silent), both resent: no gap remains."""
    frames = ecg_frames(15)
    seqs = [decode(f).seq for f in frames]
    mid, tail = seqs.index(10), len(frames) - 2
    cfg = LinkConfig(devices=frozenset({DEV}), silence_s=0.3, resend_tries=1)
    link = DeviceLink(broker_url, tmp_path / "s.sqlite", cfg)
    link.start()
    raw = Raw(broker_url, topics.device_resend(DEV))
    try:
        for i, f in enumerate(frames):
            if i not in (mid, tail):
                raw.send(topics.device_frames(DEV), f)
        wait_for(lambda: len(raw.got) >= 2)  # the reorder overflow, then the silence flush
        asked = [decode_resend(p) for _, p in raw.got]
        assert asked[0] == [10] and asked[1] == [seqs[tail]]
        with Store(tmp_path / "s.sqlite") as store:  # WAL: readable beside the worker
            wait_for(lambda: store.gaps(DEV) == [(10, 10), (seqs[tail], seqs[tail])])
        raw.send(topics.device_frames(DEV), frames[mid])
        raw.send(topics.device_frames(DEV), frames[tail])
        wait_for(lambda: link.handled(DEV) == len(frames))
    finally:
        raw.close()
        link.stop()
    with Store(tmp_path / "s.sqlite") as store:
        assert store.gaps(DEV) == []
        assert store.counters(DEV)["late"] == 2
        assert store.counters(DEV)["accepted"] == len(frames) - 2


def test_garbage_on_the_frames_topics_is_counted_by_reason(broker_url: str,
                                                           tmp_path: Path) -> None:
    rng = random.Random(6)
    good = ecg_frames(20)
    other = ecg_frames(2, device_id=9)
    acc = list(Device(DEV, AccelSource(seed=1)).run(2))  # right device, wrong stream
    flipped = bytearray(good[3])
    flipped[40] ^= 0x10
    link = DeviceLink(broker_url, tmp_path / "s.sqlite")  # every device on the broker
    link.start()
    raw = Raw(broker_url)
    sent = 0
    expect_early = 0

    def send(topic: str, payload: bytes) -> None:
        nonlocal sent
        raw.send(topic, payload)
        sent += 1

    try:
        half = len(good) // 2
        for f in good[:half]:
            send(topics.device_frames(DEV), f)
        noise = [rng.randbytes(rng.randrange(0, 1100)) for _ in range(150)]
        for blob in noise:
            send(topics.device_frames(DEV), blob)
        for bad_topic in ("fedgate/dev/007/frames", "fedgate/dev/abc/frames",
                          "fedgate/dev/99999999999/frames", "fedgate/dev/-3/frames"):
            send(bad_topic, good[0])
        send(topics.device_frames(DEV), other[0])        # device 9's frame on device 5's topic
        send(topics.device_frames(DEV), bytes(flipped))  # a bit flip the CRC catches
        send(topics.device_frames(DEV), good[4][:-7])    # truncated
        send(topics.device_frames(DEV), acc[1])          # accelerometer frame on an ECG stream
        send(topics.device_frames(DEV), b"\x00" * 5000)  # oversize: dropped before queueing
        expect_early += 1
        for f in good[half:]:
            send(topics.device_frames(DEV), f)
        wait_for(lambda: link.messages + link.early_drops == sent)
    finally:
        raw.close()
        link.stop()
    with Store(tmp_path / "s.sqlite") as store:
        dev = store.counters(DEV)
        junk = store.counters(UNKNOWN_DEVICE)
        figures = ingestion_figures(store, [DEV])
    assert dev["accepted"] == len(good) and dev["stream_mismatch"] == 1
    assert junk["topic"] == 4 and junk["topic_mismatch"] == 1 and junk["oversize"] == 1
    assert junk["crc"] >= 1 and junk["short"] >= 1
    decoder = FrameDecoder()
    noise_reasons = [decoder.decode_or_reason(b) for b in noise]
    assert all(isinstance(r, str) for r in noise_reasons)  # random bytes never pass
    assert sum(junk.values()) == len(noise) + 4 + 1 + 2 + expect_early
    assert figures["devices"][str(DEV)]["rejected"] == {"stream_mismatch": 1}
    assert figures["devices"][str(DEV)]["gaps"] == 0


def test_bad_link_configurations_are_config_errors(tmp_path: Path) -> None:
    for kwargs in ({"silence_s": 0}, {"queue_limit": 0}, {"resend_tries": -1},
                   {"devices": frozenset({-1})}, {"devices": frozenset({2**32})},
                   {"root": "a/+/b"}, {"keepalive_s": 1}):
        with pytest.raises(ConfigError):
            LinkConfig(**kwargs)
    for url in ("http://x", "mqtt://", "mqtt://host:99999", "127.0.0.1:1883"):
        with pytest.raises(ConfigError):
            DeviceLink(url, tmp_path / "s.sqlite")


def test_unreachable_broker_and_unusable_store(tmp_path: Path) -> None:
    from native.broker import free_port

    link = DeviceLink(f"mqtt://127.0.0.1:{free_port()}", tmp_path / "s.sqlite")
    with pytest.raises(TransportError):
        link.start(timeout=1.0)
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(ConfigError):
        DeviceLink("mqtt://127.0.0.1:1883", tmp_path / "dir.sqlite").start(timeout=1.0)
