"""The wearables' side of the MQTT device link: frames published per device, resend requests
applied to the firmware (and garbage requests counted by reason), pacing against the gateway."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_client.device_link import DeviceLink, LinkConfig
from edge_client.store import Store
from firmware_sim.devices import Device
from firmware_sim.publisher import DevicePublisher
from firmware_sim.signals import SyntheticCardiacSource
from native import topics
from native.broker import EmbeddedBroker, MosquittoBroker, find_mosquitto
from native.errors import ConfigError, InputError
from native.frames import Flag, decode
from native.resend import encode_resend


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    if find_mosquitto() is not None:
        with MosquittoBroker() as broker:
            yield broker.url
    else:
        with EmbeddedBroker() as embedded:
            yield embedded.url


def heart(device_id: int) -> Device:
    return Device(device_id, SyntheticCardiacSource(hr_bpm=70, seed=device_id))


class Listener:
    def __init__(self, url: str, *filters: str) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.got: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, clean_session=True)
        self.client.on_message = lambda _c, _u, m: self.got.append((m.topic, bytes(m.payload)))
        self.client.connect(host, int(port))
        for f in filters:
            self.client.subscribe(f, qos=0)
        self.client.loop_start()
        time.sleep(0.2)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def settle(pub: DevicePublisher, want: int, timeout: float = 10.0) -> None:
    """Apply requests on this (the devices') thread until ``want`` have been taken."""
    deadline, seen = time.monotonic() + timeout, 0
    while seen < want:
        assert time.monotonic() < deadline, f"only {seen} of {want} requests arrived"
        seen += pub.apply_requests()
        time.sleep(0.01)


def test_frames_go_to_their_device_topics_and_resends_come_back(broker_url: str) -> None:
    listen = Listener(broker_url, topics.all_device_frames())
    pub = DevicePublisher(broker_url, [heart(3), heart(4)])
    pub.start()
    try:
        pub.run(5.0)
        deadline = time.monotonic() + 10
        while len(listen.got) < sum(pub.published.values()) and time.monotonic() < deadline:
            time.sleep(0.01)
        by_topic = {t: [decode(p) for tp, p in listen.got if tp == t]
                    for t in {t for t, _ in listen.got}}
        assert set(by_topic) == {topics.device_frames(3), topics.device_frames(4)}
        assert all(f.device_id == 3 for f in by_topic[topics.device_frames(3)])
        assert len(by_topic[topics.device_frames(4)]) == pub.published[4] == 20
        before = len(listen.got)
        ctl = Listener(broker_url)
        ctl.client.publish(topics.device_resend(3), encode_resend([2, 5]), qos=0).wait_for_publish()
        settle(pub, 1)
        ctl.close()
        deadline = time.monotonic() + 10
        while len(listen.got) < before + 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        resent = [decode(p) for _, p in listen.got[before:]]
        assert [(f.device_id, f.seq) for f in resent] == [(3, 2), (3, 5)]
        assert all(f.flags & Flag.RESEND for f in resent)
        assert pub.counts["resend_granted"] == 2
    finally:
        pub.stop()
        listen.close()


def test_garbage_resend_requests_are_counted_and_harmless(broker_url: str) -> None:
    pub = DevicePublisher(broker_url, [heart(8)])
    pub.start()
    ctl = Listener(broker_url)
    try:
        pub.run(3.0)
        sent_before = pub.published[8]
        garbage = [b"", b"\x01\x02", b"\x00" * 7, b"\xff" * 400, encode_resend([10_000]),
                   encode_resend([2**32 - 1])]
        for payload in garbage:
            ctl.client.publish(topics.device_resend(8), payload, qos=0).wait_for_publish()
        settle(pub, len(garbage))
        assert pub.counts["resend_empty"] == 1 and pub.counts["resend_length"] == 2
        assert pub.counts["resend_oversize"] == 1
        assert pub.counts["resend_requests"] == 2 and pub.counts["resend_refused"] == 2
        assert pub.counts["resend_granted"] == 0 and pub.published[8] == sent_before
        pub.run(1.0)  # the device streams on
        assert pub.published[8] == sent_before + 4
        assert pub.devices[8].firmware.stats["resend_refused"] == 2
    finally:
        ctl.close()
        pub.stop()


def test_pacing_keeps_the_device_close_to_the_gateway(broker_url: str, tmp_path: Path) -> None:
    """As fast as possible, but never more than max_ahead frames ahead of what the gateway took:
    whatever the speed, the gateway's resend requests land inside the 64-frame window."""
    from firmware_sim.faults import FaultConfig

    dev = Device(11, SyntheticCardiacSource(hr_bpm=80, seed=11), FaultConfig(seed=2, loss=0.08))
    link = DeviceLink(broker_url, tmp_path / "s.sqlite", LinkConfig(devices=frozenset({11}),
                                                                     silence_s=0.3))
    link.start()
    pub = DevicePublisher(broker_url, [dev])
    pub.start()
    worst = 0

    def taken(device_id: int) -> int:
        nonlocal worst
        n = link.handled(device_id)
        worst = max(worst, pub.published[device_id] - n)
        return n

    try:
        pub.run(90.0, taken=taken, max_ahead=8, linger_s=1.0)
        link.wait_idle(10)
    finally:
        pub.stop()
        link.stop()
    # max_ahead, plus one step's frames and resends granted while waiting: far inside 64.
    assert worst <= 16
    assert dev.link.counts["lost"] > 10
    assert dev.firmware.stats["resend_refused"] == 0 and pub.counts["resend_granted"] > 10
    with Store(tmp_path / "s.sqlite") as store:
        # A resend can be lost too; three losses of one frame in a row (p = 5e-4) leave a gap.
        assert len(store.gaps(11)) <= 1


def test_bad_publisher_arguments(broker_url: str) -> None:
    with pytest.raises(ConfigError):
        DevicePublisher(broker_url, [])
    with pytest.raises(ConfigError):
        DevicePublisher(broker_url, [heart(1), heart(1)])
    with pytest.raises(ConfigError):
        DevicePublisher("tcp://x", [heart(1)])
    pub = DevicePublisher(broker_url, [heart(2)])
    for kwargs in ({"duration_s": 0}, {"duration_s": 1, "chunk_s": 0},
                   {"duration_s": 1, "speedup": -1.0}, {"duration_s": 1, "max_ahead": 0}):
        with pytest.raises(InputError):
            pub.run(**kwargs)
