"""MQTT transport shared by the gateway daemon and the aggregator (paho-mqtt v2 API).

Every application payload travels inside transport frames: a fixed 104-byte little-endian header
(idempotency key, chunk position, sha256 of the whole payload) followed by a slice of the payload.
Payloads above ``Limits.chunk_size`` are split into several frames and reassembled on receipt;
the receiver checks every limit before it keeps a byte, and the digest before it delivers.

The paho callbacks run on paho's network thread and only decode and enqueue: a complete,
deduplicated ``Delivery`` lands in ``Transport.inbox`` (a ``queue.Queue``). Training, unmasking and
database work happen on the consumer's thread. Every rejected frame is counted by reason in
``Transport.rejections`` and reported to the optional ``on_reject(reason, topic)`` hook.
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from native import topics
from native.chunking import (
    DedupWindow,
    Delivery,
    FrameRejected,
    Limits,
    Reassembler,
    decode_header,
    encode_frames,
)
from native.errors import ConfigError, InputError, TransportError

log = logging.getLogger(__name__)

PRESENCE_ONLINE = b"online"
PRESENCE_OFFLINE = b"offline"

__all__ = ["Delivery", "FrameRejected", "Limits", "Publication", "Transport", "TransportConfig"]

@dataclass(frozen=True)
class TransportConfig:
    """Where and how to connect. ``client_id`` doubles as the frame sender id."""

    client_id: str
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    tls_insecure: bool = False
    keepalive_s: int = 30
    reconnect_min_s: int = 1
    reconnect_max_s: int = 30
    clean_session: bool = False
    presence: bool = True
    root: str = topics.DEFAULT_ROOT
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        try:
            topics.check_id(self.client_id, "client_id")
            topics.check_root(self.root)
        except (InputError, TypeError) as exc:
            raise ConfigError(str(exc)) from None
        if not 0 < self.port < 65536 or not self.host:
            raise ConfigError(f"bad broker address {self.host!r}:{self.port}")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s or self.keepalive_s < 5:
            raise ConfigError("need 0 < reconnect_min_s <= reconnect_max_s and keepalive_s >= 5")
        if self.password is not None and self.username is None:
            raise ConfigError("a password needs a username")

    @classmethod
    def from_url(cls, url: str, client_id: str, **kwargs: Any) -> TransportConfig:
        """Build from ``mqtt://[user:pass@]host[:port]`` or ``mqtts://...`` (TLS, port 8883)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError(f"broker URL must be mqtt://host[:port] or mqtts://..., got {url!r}")
        try:
            port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        except ValueError:
            raise ConfigError(f"bad port in broker URL {url!r}") from None
        user = unquote(parts.username) if parts.username else None
        pw = unquote(parts.password) if parts.password else None
        return cls(client_id=client_id, host=parts.hostname, port=port, username=user, password=pw,
                   tls=parts.scheme == "mqtts", **kwargs)


class Transport:
    """One MQTT connection: QoS 1, framed and chunked publishes, a deduplicating inbox."""

    def __init__(
        self, config: TransportConfig, *, on_reject: Callable[[str, str], None] | None = None
    ) -> None:
        self.config = config
        self.inbox: queue.Queue[Delivery] = queue.Queue()
        self.rejections: Counter[str] = Counter()
        self.connects = 0
        self._on_reject = on_reject
        self._lock = threading.Lock()
        self._filters: dict[str, None] = {}
        self._reassembler = Reassembler(config.limits)
        self._dedup = DedupWindow(config.limits.dedup_window)
        self._connected = threading.Event()
        self._refused: str | None = None
        self._answered = threading.Event()
        self._presence_base = time.time_ns() // 1000
        self._generation = 0
        self._client = self._build_client()

    def _build_client(self) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=cfg.client_id,
            clean_session=cfg.clean_session, protocol=mqtt.MQTTv311,
        )
        client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)
        client.max_queued_messages_set(0)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            client.tls_set(ca_certs=cfg.ca_certs, certfile=cfg.certfile, keyfile=cfg.keyfile,
                           cert_reqs=ssl.CERT_REQUIRED)
            client.tls_insecure_set(cfg.tls_insecure)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._arm_will(client)
        return client

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self, timeout: float = 10.0) -> None:
        """Connect (paho keeps reconnecting with backoff afterwards); wait for the first CONNACK."""
        try:
            self._client.connect_async(self.config.host, self.config.port, self.config.keepalive_s)
        except (OSError, ValueError) as exc:
            where = f"{self.config.host}:{self.config.port}"
            raise TransportError(f"cannot reach {where}: {exc}") from exc
        self._client.loop_start()
        self._answered.wait(timeout)
        if not self._connected.is_set():
            self._client.disconnect()
            self._client.loop_stop()
            where = f"{self.config.host}:{self.config.port}"
            if self._refused is not None:
                raise TransportError(f"broker {where} refused the connection: {self._refused}")
            raise TransportError(f"no connection to {where} within {timeout} s")

    def stop(self, timeout: float = 5.0) -> None:
        """Say offline (when presence is on), disconnect cleanly and stop the network thread."""
        if self.config.presence and self.connected:
            info = self._publish_presence(PRESENCE_OFFLINE, self._generation * 2 + 1)
            info.wait_for_publish(timeout)
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    def subscribe(self, topic_filter: str) -> None:
        """Subscribe at QoS 1; the filter is re-subscribed after every reconnect."""
        with self._lock:
            self._filters[topic_filter] = None
        if self.connected:
            self._client.subscribe(topic_filter, qos=1)

    def publish(
        self, topic: str, payload: bytes, *, round_id: int, sequence: int, retain: bool = False
    ) -> Publication:
        """Publish ``payload`` at QoS 1 under the key (round_id, client_id, sequence).

        Republishing the same key (after a crash, say) is harmless: receivers deliver it once.
        Messages published while disconnected are queued by paho and sent after reconnecting.
        """
        frames = encode_frames(payload, round_id=round_id, sender=self.config.client_id,
                               sequence=sequence, chunk_size=self.config.limits.chunk_size)
        if retain and len(frames) > 1:
            raise InputError(f"a retained message must fit one chunk, this one needs {len(frames)}")
        infos = [self._client.publish(topic, frame, qos=1, retain=retain) for frame in frames]
        return Publication(infos)

    def receive(self, timeout: float | None = None) -> Delivery | None:
        """Next delivery from the inbox, or None after ``timeout`` seconds."""
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def expire_pending(self) -> int:
        """Drop incomplete chunked messages past their timeout, counting each as ``incomplete``."""
        with self._lock:
            stale = self._reassembler.expire()
        for key in stale:
            self._reject("incomplete", f"round {key[0]} sender {key[1]} seq {key[2]}")
        return len(stale)

    # -- network thread ----------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.warning("broker refused %s: %s", self.config.client_id, reason)
            self._refused = str(reason)
            self._answered.set()
            return
        _no_delay(client)
        with self._lock:
            filters = list(self._filters)
        if filters:
            client.subscribe([(f, 1) for f in filters])
        if self.config.presence:
            self._publish_presence(PRESENCE_ONLINE, self._generation * 2)
        self.connects += 1
        self._refused = None
        self._connected.set()
        self._answered.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self._connected.clear()
        self._generation += 1
        self._arm_will(client)
        log.info("%s disconnected: %s", self.config.client_id, reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # Never let an exception escape into paho's loop: it would stop the network thread.
        try:
            self.handle_frame(msg.topic, bytes(msg.payload), bool(msg.retain))
        except Exception:
            log.exception("unexpected error decoding a frame on %s", msg.topic)
            self._reject("internal", msg.topic)

    def handle_frame(self, topic: str, frame: bytes, retained: bool = False) -> Delivery | None:
        """Decode one incoming frame; enqueue and return the delivery when a message completes."""
        with self._lock:
            subscribed = any(mqtt.topic_matches_sub(f, topic) for f in self._filters)
        if not subscribed:
            self._reject("unsubscribed_topic", topic)
            return None
        try:
            header, body = decode_header(frame, self.config.limits)
            with self._lock:
                if header.key in self._dedup:
                    raise FrameRejected("duplicate", f"message {header.key} already delivered")
                payload = self._reassembler.feed(header, body)
                if payload is not None:
                    self._dedup.add(header.key)
        except FrameRejected as exc:
            self._reject(exc.reason, topic)
            return None
        if payload is None:
            return None
        delivery = Delivery(topic, payload, header.round_id, header.sender, header.sequence,
                            retained)
        self.inbox.put(delivery)
        return delivery

    def _reject(self, reason: str, topic: str) -> None:
        with self._lock:
            self.rejections[reason] += 1
        log.debug("rejected frame on %s: %s", topic, reason)
        if self._on_reject is not None:
            try:
                self._on_reject(reason, topic)
            except Exception:
                log.exception("on_reject hook failed")

    def _presence_frame(self, payload: bytes, offset: int) -> bytes:
        return encode_frames(payload, round_id=0, sender=self.config.client_id,
                             sequence=self._presence_base + offset, chunk_size=64)[0]

    def _publish_presence(self, payload: bytes, offset: int) -> mqtt.MQTTMessageInfo:
        topic = topics.status(self.config.client_id, self.config.root)
        return self._client.publish(topic, self._presence_frame(payload, offset), qos=1,
                                    retain=True)

    def _arm_will(self, client: mqtt.Client) -> None:
        # Each connection gets its own presence keys, so that "offline" after a reconnect is
        # not swallowed by the receiver's dedup window as a replay of an earlier one.
        if self.config.presence:
            frame = self._presence_frame(PRESENCE_OFFLINE, self._generation * 2 + 1)
            client.will_set(topics.status(self.config.client_id, self.config.root), frame,
                            qos=1, retain=True)


def _no_delay(client: mqtt.Client) -> None:
    """Turn Nagle's algorithm off: protocol messages are small and each stage waits for the
    answers to the last one, so Nagle holding a segment until the peer's delayed ACK (40 ms on
    Linux) would add that to every hop; measured over Mosquitto on loopback, a request/answer
    round trip took 88 ms with it and 0.4 ms without (the broker needs ``set_tcp_nodelay``)."""
    sock = client.socket()
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:  # not fatal: the connection works, only slower
            log.warning("cannot set TCP_NODELAY: %s", exc)


class Publication:
    """The MQTT messages of one publish; acknowledged when the broker PUBACKed every chunk."""

    def __init__(self, infos: list[mqtt.MQTTMessageInfo]) -> None:
        self.infos = infos

    def is_acknowledged(self) -> bool:
        # paho's is_published() raises for a message published while disconnected even after
        # paho resent it and the broker acknowledged it; the PUBACK flag itself is reliable.
        return all(bool(info._published) for info in self.infos)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every chunk is acknowledged; False if ``timeout`` passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_acknowledged():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True
