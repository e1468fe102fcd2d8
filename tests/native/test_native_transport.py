from __future__ import annotations

import hashlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from native import topics
from native.broker import MosquittoBroker, find_mosquitto
from native.chunking import (
    HEADER,
    DedupWindow,
    FrameRejected,
    Limits,
    Reassembler,
    decode_header,
    encode_frames,
)
from native.errors import ConfigError, InputError, TransportError
from native.transport import PRESENCE_OFFLINE, PRESENCE_ONLINE, Transport, TransportConfig

LIMITS = Limits(chunk_size=1000, max_chunks=64, max_message=50_000, pending_timeout_s=5)


def feed_all(frames: list[bytes], limits: Limits = LIMITS) -> bytes | None:
    reasm, out = Reassembler(limits), None
    for frame in frames:
        header, body = decode_header(frame, limits)
        result = reasm.feed(header, body)
        out = result if result is not None else out
    return out


def frames_of(payload: bytes, seq: int = 1, chunk: int = 1000) -> list[bytes]:
    return encode_frames(payload, round_id=3, sender="gw-1", sequence=seq, chunk_size=chunk)


# -- codec and reassembly, no network ------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=20_000), st.integers(1, 3000), st.randoms(use_true_random=False))
def test_chunks_reassemble_in_any_order(payload: bytes, chunk: int, rnd: random.Random) -> None:
    frames = frames_of(payload, chunk=chunk)
    if len(frames) > LIMITS.max_chunks:
        return
    rnd.shuffle(frames)
    assert feed_all(frames) == payload
    header, _ = decode_header(frames[0], LIMITS)
    assert header.key == (3, "gw-1", 1)
    assert header.digest == hashlib.sha256(payload).digest()


def test_header_is_fixed_104_bytes() -> None:
    assert HEADER.size == 104
    (frame,) = frames_of(b"abc")
    assert len(frame) == 107 and frame[:4] == b"FGMT" and frame[4] == 1


def test_lost_chunk_expires_as_incomplete() -> None:
    now = [0.0]
    reasm = Reassembler(LIMITS, clock=lambda: now[0])
    frames = frames_of(bytes(3500))
    for frame in frames[:-1]:
        assert reasm.feed(*decode_header(frame, LIMITS)) is None
    assert reasm.pending == 1 and reasm.expire() == []
    now[0] = 10.0
    assert reasm.expire() == [(3, "gw-1", 1)] and reasm.pending == 0


def test_duplicate_chunk_is_flagged_and_message_still_completes() -> None:
    reasm = Reassembler(LIMITS)
    frames = frames_of(bytes(range(256)) * 10)
    reasm.feed(*decode_header(frames[0], LIMITS))
    with pytest.raises(FrameRejected) as exc:
        reasm.feed(*decode_header(frames[0], LIMITS))
    assert exc.value.reason == "duplicate_chunk"
    out = None
    for frame in frames[1:]:
        out = reasm.feed(*decode_header(frame, LIMITS)) or out
    assert out == bytes(range(256)) * 10


def test_corrupt_chunk_fails_the_digest() -> None:
    frames = frames_of(bytes(2500))
    bad = bytearray(frames[1])
    bad[-1] ^= 1
    with pytest.raises(FrameRejected) as exc:
        feed_all([frames[0], bytes(bad), frames[2]])
    assert exc.value.reason == "digest_mismatch"


def test_conflicting_and_mismatched_chunks() -> None:
    frames = frames_of(bytes(2500))
    other = frames_of(bytes(2400))  # same key, different total and digest
    reasm = Reassembler(LIMITS)
    reasm.feed(*decode_header(frames[0], LIMITS))
    with pytest.raises(FrameRejected) as exc:
        reasm.feed(*decode_header(other[1], LIMITS))
    assert exc.value.reason == "chunk_mismatch" and reasm.pending == 0
    reasm.feed(*decode_header(frames[0], LIMITS))
    forged = bytearray(frames[0])
    forged[-1] ^= 1
    with pytest.raises(FrameRejected) as exc:
        reasm.feed(*decode_header(bytes(forged), LIMITS))
    assert exc.value.reason == "chunk_conflict"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda f: f[:50], "truncated"),
        (lambda f: b"", "truncated"),
        (lambda f: b"XXXX" + f[4:], "bad_magic"),
        (lambda f: f[:4] + b"\x02" + f[5:], "bad_version"),
        (lambda f: f[:5] + b"\x01" + f[6:], "bad_header"),
        (lambda f: f[:6] + b"\x00" + f[7:], "bad_header"),
        (lambda f: f[:6] + b"\x21" + f[7:], "bad_header"),
        (lambda f: f[:72] + b"gw/1" + f[76:], "bad_header"),
        (lambda f: f[:103] + b"\xff" + f[104:], "bad_header"),
        (lambda f: f[:28] + (10**6).to_bytes(4, "little") + f[32:], "too_many_chunks"),
        (lambda f: f[:28] + bytes(4) + f[32:], "too_many_chunks"),
        (lambda f: f[:32] + (2**31).to_bytes(4, "little") + f[36:], "too_large"),
        (lambda f: f[:24] + (5).to_bytes(4, "little") + f[28:], "bad_offset"),
        (lambda f: f[:36] + (49_999).to_bytes(4, "little") + f[40:], "bad_offset"),
    ],
)
def test_bad_headers_are_rejected_with_reason(mutate: object, reason: str) -> None:
    frame = frames_of(bytes(2500))[0]
    with pytest.raises(FrameRejected) as exc:
        decode_header(mutate(frame), LIMITS)  # type: ignore[operator]
    assert exc.value.reason == reason


def test_single_frame_with_wrong_length_is_rejected() -> None:
    (frame,) = frames_of(b"hello")
    with pytest.raises(FrameRejected) as exc:
        feed_all([frame + b"!"])
    assert exc.value.reason == "bad_offset"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_never_escapes_the_error_tree(data: bytes) -> None:
    try:
        feed_all([data])
        feed_all([b"FGMT\x01" + data])
    except FrameRejected:
        pass


def test_oversized_claims_are_refused_before_any_allocation() -> None:
    small = Limits(chunk_size=100, max_chunks=4, max_message=1000, max_pending_streams=2,
                   max_pending_bytes=250)
    with pytest.raises(FrameRejected, match="too_large"):
        feed_all(frames_of(bytes(2000), chunk=600), small)
    with pytest.raises(FrameRejected, match="too_many_chunks"):
        feed_all(frames_of(bytes(500), chunk=100), small)
    reasm = Reassembler(small)
    for seq in (1, 2):
        reasm.feed(*decode_header(frames_of(bytes(300), seq=seq, chunk=100)[0], small))
    with pytest.raises(FrameRejected, match="pending_limit"):
        reasm.feed(*decode_header(frames_of(bytes(300), seq=3, chunk=100)[0], small))
    with pytest.raises(FrameRejected, match="pending_limit"):
        reasm.feed(*decode_header(frames_of(bytes(300), seq=1, chunk=100)[1], small))


def test_encode_refuses_bad_arguments() -> None:
    for kwargs in ({"sequence": -1}, {"sequence": 2**64}, {"sequence": True}, {"sender": "a/b"}):
        args = {"round_id": 1, "sender": "gw", "sequence": 1, "chunk_size": 10} | kwargs
        with pytest.raises((InputError, TypeError)):
            encode_frames(b"x", **args)  # type: ignore[arg-type]
    with pytest.raises((InputError, TypeError)):
        encode_frames("text", round_id=1, sender="gw", sequence=1, chunk_size=10)  # type: ignore[arg-type]


def test_dedup_window_forgets_oldest() -> None:
    window = DedupWindow(2)
    for seq in range(3):
        window.add((1, "a", seq))
    assert (1, "a", 0) not in window and (1, "a", 2) in window


def test_config_validation() -> None:
    cfg = TransportConfig.from_url("mqtts://u%40x:p%3A@broker.example:9999", "gw-1")
    assert (cfg.host, cfg.port, cfg.tls, cfg.username, cfg.password) == (
        "broker.example", 9999, True, "u@x", "p:")
    assert TransportConfig.from_url("mqtt://h", "gw-1").port == 1883
    for url in ("http://h:1", "mqtt://", "mqtt://h:99999", "h:1883", ""):
        with pytest.raises(ConfigError):
            TransportConfig.from_url(url, "gw-1")
    for kwargs in ({"client_id": "a/b"}, {"client_id": "x", "port": 0},
                   {"client_id": "x", "password": "p"}, {"client_id": "x", "root": "a/#"},
                   {"client_id": "x", "reconnect_min_s": 5, "reconnect_max_s": 1}):
        with pytest.raises(ConfigError):
            TransportConfig(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Limits(chunk_size=0)


def test_unreachable_broker_is_a_transport_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    transport = Transport(TransportConfig(client_id="gw-x", port=port))
    with pytest.raises(TransportError):
        transport.start(timeout=0.5)


# -- against a real Mosquitto --------------------------------------------------------------------


@pytest.fixture
def mosquitto() -> Iterator[MosquittoBroker]:
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not installed")
    with MosquittoBroker() as broker:
        yield broker


def connect(broker: MosquittoBroker, name: str, **kwargs: object) -> Transport:
    cfg = TransportConfig(client_id=f"{name}-{uuid.uuid4().hex[:8]}", port=broker.port,
                          reconnect_max_s=2, **kwargs)  # type: ignore[arg-type]
    transport = Transport(cfg)
    transport.start()
    return transport


def drain(transport: Transport, count: int, timeout: float = 10.0) -> list[object]:
    out, deadline = [], time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        item = transport.receive(timeout=0.2)
        if item is not None:
            out.append(item)
    return out


def test_qos1_chunked_roundtrip_and_idempotent_republish(mosquitto: MosquittoBroker) -> None:
    agg = connect(mosquitto, "agg", limits=Limits(chunk_size=64 * 1024))
    gw = connect(mosquitto, "gw", limits=Limits(chunk_size=64 * 1024))
    try:
        agg.subscribe(topics.all_uplinks())
        time.sleep(0.2)
        big = random.Random(1).randbytes(1_000_003)
        topic = topics.up(5, gw.config.client_id)
        assert gw.publish(topic, big, round_id=5, sequence=1).wait(10)
        assert gw.publish(topic, b"small", round_id=5, sequence=2).wait(10)
        assert gw.publish(topic, big, round_id=5, sequence=1).wait(10)  # a replay after a crash
        got = drain(agg, 3, timeout=5)
        assert [(d.payload, d.sequence, d.sender) for d in got] == [  # type: ignore[attr-defined]
            (big, 1, gw.config.client_id), (b"small", 2, gw.config.client_id)]
        assert agg.rejections["duplicate"] == 16  # every chunk of the replay
    finally:
        gw.stop()
        agg.stop()


def _nodelay(transport: Transport) -> int:
    sock = transport._client.socket()
    assert isinstance(sock, socket.socket)
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_nagle_is_off_on_both_ends_and_after_a_reconnect(mosquitto: MosquittoBroker) -> None:
    # Small protocol messages that wait for each other's answers must not sit in Nagle's buffer
    # until a delayed ACK: our sockets set TCP_NODELAY on every connection, and the test broker
    # is configured to do the same on its side.
    assert "set_tcp_nodelay true" in (mosquitto.workdir / "mosquitto.conf").read_text()
    gw = connect(mosquitto, "gw")
    try:
        assert _nodelay(gw) != 0
        mosquitto.restart()
        deadline = time.monotonic() + 20
        while gw.connects < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.connects >= 2 and gw.connected
        assert _nodelay(gw) != 0
    finally:
        gw.stop()


def test_retained_announce_reaches_late_subscriber_once(mosquitto: MosquittoBroker) -> None:
    agg = connect(mosquitto, "agg")
    try:
        assert agg.publish(topics.announce(), b"round 9", round_id=9, sequence=0,
                           retain=True).wait(5)
        with pytest.raises(InputError):
            agg.publish(topics.announce(), bytes(300_000), round_id=9, sequence=1, retain=True)
        gw = connect(mosquitto, "gw")
        gw.subscribe(topics.announce())
        (delivery,) = drain(gw, 1)
        assert delivery.payload == b"round 9" and delivery.retained  # type: ignore[attr-defined]
        gw.subscribe(topics.announce())  # the broker replays the retained message: deduplicated
        assert drain(gw, 1, timeout=1.0) == []
        assert gw.rejections["duplicate"] == 1
        gw.stop()
    finally:
        agg.stop()


def test_last_will_marks_an_abrupt_disconnect(mosquitto: MosquittoBroker) -> None:
    agg = connect(mosquitto, "agg", presence=False)
    gw = connect(mosquitto, "gw")
    try:
        agg.subscribe(topics.all_status())
        (online,) = drain(agg, 1)
        assert online.payload == PRESENCE_ONLINE  # type: ignore[attr-defined]
        # Cut the TCP connection under paho, as a power loss would: no DISCONNECT is sent.
        gw._client.loop_stop()
        gw._client.socket().shutdown(socket.SHUT_RDWR)
        gw._client.socket().close()
        (offline,) = drain(agg, 1)
        assert offline.payload == PRESENCE_OFFLINE  # type: ignore[attr-defined]
        assert offline.sender == gw.config.client_id  # type: ignore[attr-defined]
    finally:
        agg.stop()


def test_garbage_on_a_subscribed_topic_is_counted_not_delivered(mosquitto: MosquittoBroker) -> None:
    agg = connect(mosquitto, "agg")
    raw = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-" + uuid.uuid4().hex[:8])
    raw.connect("127.0.0.1", mosquitto.port)
    raw.loop_start()
    try:
        agg.subscribe(topics.all_uplinks())
        time.sleep(0.2)
        good = frames_of(bytes(2500))
        corrupt = bytearray(good[2])
        corrupt[200] ^= 0xFF
        for payload in (b"", b"junk", good[0][:60], b"FGMT" + bytes(200), good[0], good[1],
                        bytes(corrupt)):
            raw.publish(topics.up(3, "gw-1"), payload, qos=1).wait_for_publish(5)
        time.sleep(0.5)
        assert agg.inbox.empty()
        assert agg.rejections["truncated"] == 3 and agg.rejections["bad_version"] == 1
        assert agg.rejections["digest_mismatch"] == 1
        # A broker that delivers outside our subscriptions (amqtt once did) is refused too.
        assert agg.handle_frame(topics.status("gw-1"), good[0]) is None
        assert agg.rejections["unsubscribed_topic"] == 1
    finally:
        raw.disconnect()
        raw.loop_stop()
        agg.stop()


def test_broker_restart_mid_stream_loses_nothing_acknowledged(mosquitto: MosquittoBroker) -> None:
    limits = Limits(chunk_size=4096)
    agg = connect(mosquitto, "agg", limits=limits, presence=False)
    agg.subscribe(topics.all_uplinks())
    gw = connect(mosquitto, "gw", limits=limits)
    time.sleep(0.2)
    agg.stop()  # the aggregator is away: the broker must queue its QoS 1 messages
    topic = topics.up(1, gw.config.client_id)
    payloads = [random.Random(i).randbytes(10_000) for i in range(40)]
    try:
        pubs = [gw.publish(topic, p, round_id=1, sequence=i) for i, p in enumerate(payloads[:20])]
        assert all(p.wait(10) for p in pubs)  # acknowledged by the broker, not yet delivered
        mosquitto.restart()
        # Published during and after the restart: queued by paho until it reconnects.
        pubs = [gw.publish(topic, p, round_id=1, sequence=20 + i)
                for i, p in enumerate(payloads[20:])]
        assert all(p.wait(20) for p in pubs)
        assert gw.connects >= 2
        back = Transport(agg.config)  # same client id: the broker's stored session resumes
        back.subscribe(topics.all_uplinks())
        back.start()
        got = drain(back, 40, timeout=20)
        assert sorted((d.sequence, d.payload) for d in got) == list(  # type: ignore[attr-defined]
            enumerate(payloads))
        back.stop()
    finally:
        gw.stop()


def _make_tls_files(folder: Path) -> tuple[Path, Path, Path]:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
        "-subj", "/CN=fedgate-test-ca")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "san.ext")
    return folder / "ca.crt", folder / "server.crt", folder / "server.key"


def test_tls_and_password_against_mosquitto(tmp_path: Path) -> None:
    if find_mosquitto() is None or shutil.which("openssl") is None:
        pytest.skip("needs mosquitto and openssl")
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        pytest.skip("needs mosquitto_passwd")
    ca, cert, key = _make_tls_files(tmp_path)
    subprocess.run([passwd, "-c", "-b", str(tmp_path / "passwd"), "gw-tls", "s3cret"],
                   check=True, capture_output=True)
    with MosquittoBroker(password_file=tmp_path / "passwd", tls_files=(ca, cert, key)) as broker:
        url = f"mqtts://gw-tls:s3cret@127.0.0.1:{broker.port}"
        agg = Transport(TransportConfig.from_url(url, "agg-tls", ca_certs=str(ca)))
        gw = Transport(TransportConfig.from_url(url, "gw-tls", ca_certs=str(ca)))
        agg.start()
        gw.start()
        try:
            agg.subscribe(topics.all_uplinks())
            time.sleep(0.2)
            assert gw.publish(topics.up(1, "gw-tls"), b"over tls", round_id=1,
                              sequence=1).wait(5)
            assert [d.payload for d in drain(agg, 1)] == [b"over tls"]  # type: ignore[attr-defined]
        finally:
            gw.stop()
            agg.stop()
        wrong = f"mqtts://gw-tls:nope@127.0.0.1:{broker.port}"
        with pytest.raises(TransportError, match="refused"):
            Transport(TransportConfig.from_url(wrong, "gw-bad", ca_certs=str(ca))).start(5)
        # A server certificate from an unknown CA is never accepted.
        other_ca = _make_tls_files(Path(tempfile.mkdtemp(dir=tmp_path)))[0]
        with pytest.raises(TransportError):
            Transport(TransportConfig.from_url(url, "gw-mitm", ca_certs=str(other_ca))).start(2)
        # Without TLS the listener does not speak MQTT at all.
        plain = f"mqtt://gw-tls:s3cret@127.0.0.1:{broker.port}"
        with pytest.raises(TransportError):
            Transport(TransportConfig.from_url(plain, "gw-plain")).start(2)
