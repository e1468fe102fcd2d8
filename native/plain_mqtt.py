"""Plain paho-mqtt clients for the wearable link (frames and resend requests, QoS 0).

Device traffic does not use ``native.transport``: a frame is its own envelope (sequence number,
CRC), so the transport's 104-byte header and QoS 1 would only cost bytes and round trips. What the
two share is the broker URL (``mqtt://`` or ``mqtts://``, ``user:pass@``), parsed once by
``TransportConfig.from_url``, and paho's v2 callback API with its own reconnect backoff.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from native.errors import TransportError
from native.transport import TransportConfig

OnMessage = Callable[[mqtt.Client, Any, mqtt.MQTTMessage], None]


class PlainClient:
    """One paho connection that subscribes to ``filters`` (QoS 0) on every (re)connect."""

    def __init__(self, url: str, client_id: str, filters: list[str], on_message: OnMessage,
                 *, keepalive_s: int = 30) -> None:
        self.config = TransportConfig.from_url(url, client_id, keepalive_s=keepalive_s)
        cfg = self.config
        self.filters = list(filters)
        self.connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=True, protocol=mqtt.MQTTv311)
        self.client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)
        self.client.max_queued_messages_set(0)
        if cfg.username is not None:
            self.client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            self.client.tls_set(ca_certs=cfg.ca_certs, cert_reqs=ssl.CERT_REQUIRED)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = on_message

    @property
    def where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Connect (paho keeps reconnecting afterwards) and wait for the first CONNACK."""
        try:
            self.client.connect_async(self.config.host, self.config.port, self.config.keepalive_s)
        except (OSError, ValueError) as exc:
            raise TransportError(f"cannot reach {self.where}: {exc}") from exc
        self.client.loop_start()
        if not self.connected.wait(timeout):
            self.client.disconnect()
            self.client.loop_stop()
            raise TransportError(f"no connection to {self.where} within {timeout} s")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()

    def publish(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=0)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            return  # start() times out and says so; paho retries with backoff meanwhile
        if self.filters:
            client.subscribe([(f, 0) for f in self.filters])
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self.connected.clear()
