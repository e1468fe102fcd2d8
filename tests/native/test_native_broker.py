from __future__ import annotations

import random
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from native import topics
from native.broker import EmbeddedBroker, MosquittoBroker, find_mosquitto, wait_for_port
from native.chunking import Limits
from native.errors import ConfigError, TransportError
from native.transport import PRESENCE_OFFLINE, PRESENCE_ONLINE, Delivery, Transport, TransportConfig

pytest.importorskip("amqtt", reason="the embedded broker needs amqtt")


@pytest.fixture(scope="module")
def embedded() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as broker:
        yield broker


def connect(port: int, name: str, **kwargs: object) -> Transport:
    cfg = TransportConfig(client_id=f"{name}-{uuid.uuid4().hex[:8]}", port=port,
                          reconnect_max_s=2, **kwargs)  # type: ignore[arg-type]
    transport = Transport(cfg)
    transport.start()
    return transport


def drain(transport: Transport, count: int, timeout: float = 10.0) -> list[Delivery]:
    out: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        item = transport.receive(timeout=0.1)
        if item is not None:
            out.append(item)
    return out


def test_embedded_qos1_chunked_roundtrip(embedded: EmbeddedBroker) -> None:
    agg = connect(embedded.port, "agg", limits=Limits(chunk_size=32 * 1024))
    gw = connect(embedded.port, "gw", limits=Limits(chunk_size=32 * 1024))
    try:
        agg.subscribe(topics.all_uplinks())
        time.sleep(0.2)
        payload = random.Random(2).randbytes(300_000)
        assert gw.publish(topics.up(1, gw.config.client_id), payload, round_id=1,
                          sequence=7).wait(10)
        (got,) = drain(agg, 1)
        assert (got.payload, got.round_id, got.sequence) == (payload, 1, 7)
    finally:
        gw.stop()
        agg.stop()


def test_embedded_retained_goes_only_to_subscribers(embedded: EmbeddedBroker) -> None:
    agg = connect(embedded.port, "agg")
    watcher = connect(embedded.port, "watch")
    try:
        watcher.subscribe(topics.announce())
        assert agg.publish(topics.announce(), b"round 4", round_id=4, sequence=0,
                           retain=True).wait(5)
        assert [d.payload for d in drain(watcher, 1)] == [b"round 4"]
        # A client that subscribes to nothing must receive nothing (stock amqtt pushes every
        # retained message matching anybody's filters to each new connection).
        bystander = connect(embedded.port, "bystander")
        late = connect(embedded.port, "late")
        late.subscribe(topics.announce())
        (got,) = drain(late, 1)
        assert got.payload == b"round 4" and got.retained
        time.sleep(0.3)
        assert bystander.inbox.empty() and sum(bystander.rejections.values()) == 0
        assert late.rejections["duplicate"] == 0
        bystander.stop()
        late.stop()
    finally:
        watcher.stop()
        agg.stop()


def test_embedded_last_will(embedded: EmbeddedBroker) -> None:
    agg = connect(embedded.port, "agg", presence=False)
    gw = connect(embedded.port, "gw")
    try:
        agg.subscribe(topics.all_status())
        mine = [d for d in drain(agg, 20, timeout=1.0) if d.sender == gw.config.client_id]
        assert [d.payload for d in mine] == [PRESENCE_ONLINE]
        gw._client.loop_stop()
        gw._client.socket().shutdown(socket.SHUT_RDWR)
        gw._client.socket().close()
        deadline = time.monotonic() + 10
        got: list[bytes] = []
        while time.monotonic() < deadline and PRESENCE_OFFLINE not in got:
            got += [d.payload for d in drain(agg, 1, 0.5) if d.sender == gw.config.client_id]
        assert got == [PRESENCE_OFFLINE]
    finally:
        agg.stop()


def test_embedded_broker_stops_and_frees_its_port() -> None:
    broker = EmbeddedBroker()
    broker.start()
    assert wait_for_port("127.0.0.1", broker.port, 2)
    broker.stop()
    broker.stop()  # idempotent
    with pytest.raises(TransportError):
        Transport(TransportConfig(client_id="gw-z", port=broker.port)).start(timeout=0.5)


def test_embedded_broker_on_a_taken_port_fails_clearly() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(TransportError):
            EmbeddedBroker(port=sock.getsockname()[1]).start(timeout=5)


def test_mosquitto_helper_stop_restart_kill() -> None:
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not installed")
    broker = MosquittoBroker()
    try:
        broker.start()
        port = broker.port
        assert broker.running and wait_for_port("127.0.0.1", port, 1)
        broker.restart()
        assert broker.running and broker.port == port
        broker.kill()
        assert not broker.running
        broker.start()
        assert broker.running
    finally:
        broker.close()
    assert not broker.workdir.exists()


def test_mosquitto_missing_binary_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        MosquittoBroker(executable=str(tmp_path / "no-such-mosquitto"))
