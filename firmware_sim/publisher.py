"""The wearables' side of the MQTT device link: simulated devices publishing their frames.

A ``DevicePublisher`` plays the radio bridge in front of one gateway's wearables: it advances each
device in signal time (``Device.step``: firmware, then the faulty radio), publishes every frame that
reaches the gateway on ``fedgate/dev/<id>/frames`` (QoS 0, one frame per message) and applies the
gateway's resend requests (``fedgate/dev/<id>/resend``, ``native.resend``) to the device's firmware,
whose re-queued frames go out with the next step.

Pacing: ``speedup`` paces signal time against the wall clock (1.0 = real time). Without it the
devices run as fast as the gateway takes their frames: ``taken(device_id)`` reports how many the
gateway has handled, and a device waits while more than ``max_ahead`` of its frames are unhandled,
as a radio with finite throughput would make it. That keeps resend requests inside the firmware's
64-frame window however fast the simulation runs.

The paho callback only enqueues; resend requests are applied on the publishing thread, which owns
the devices (a firmware instance is not thread-safe). Bad requests are counted by reason.
"""

from __future__ import annotations

import logging
import queue
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt

from firmware_sim.devices import Device
from native import topics
from native.errors import ConfigError, InputError, WireError
from native.plain_mqtt import PlainClient
from native.resend import ResendError, decode_resend

log = logging.getLogger(__name__)

Taken = Callable[[int], int]


class DevicePublisher:
    """Publishes the frames of ``devices`` to the broker at ``broker_url``."""

    def __init__(self, broker_url: str, devices: Sequence[Device], *,
                 root: str = topics.DEVICE_ROOT, client_id: str | None = None,
                 queue_limit: int = 4096) -> None:
        ids = [d.device_id for d in devices]
        if not ids or len(set(ids)) != len(ids):
            raise ConfigError(f"a publisher needs devices with distinct ids, got {ids}")
        self.devices = {d.device_id: d for d in devices}
        self.root = topics.check_root(root)
        self.published: Counter[int] = Counter()
        self.counts: Counter[str] = Counter()   # resend requests and bad ones, by reason
        self._written_off: Counter[int] = Counter()
        self._unpaced: set[int] = set()
        self._requests: queue.Queue[tuple[str, bytes]] = queue.Queue(queue_limit)
        self._dropped = 0
        cid = client_id or f"fedgate-radio-{uuid.uuid4().hex[:12]}"
        filters = [topics.device_resend(d, self.root) for d in self.devices]
        self._mqtt = PlainClient(broker_url, cid, filters, self._on_message)
        self._last: mqtt.MQTTMessageInfo | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        self._mqtt.start(timeout)

    def stop(self) -> None:
        if self._last is not None:
            self._last.wait_for_publish(5.0)  # QoS 0: written to the socket
        self._mqtt.stop()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._requests.put_nowait((msg.topic, bytes(msg.payload)))
        except queue.Full:
            self._dropped += 1

    # -- the publishing thread -----------------------------------------------------------------

    def run(self, duration_s: float, *, chunk_s: float = 0.25, speedup: float | None = None,
            taken: Taken | None = None, max_ahead: int = 8, stall_s: float = 2.0,
            linger_s: float = 0.0) -> None:
        """Stream ``duration_s`` of signal from every device, then serve resend requests until
        none has come for ``linger_s``."""
        if not (duration_s > 0 and chunk_s > 0 and max_ahead >= 1 and stall_s > 0):
            raise InputError("need duration_s > 0, chunk_s > 0, max_ahead >= 1, stall_s > 0")
        if speedup is not None and not speedup > 0:
            raise InputError(f"speedup must be > 0, got {speedup}")
        start, t0 = time.monotonic(), min(d.t_s for d in self.devices.values())
        live = dict(self.devices)
        while live:
            for dev_id, device in list(live.items()):
                if taken is not None:
                    self._wait_for_gateway(dev_id, taken, max_ahead, stall_s)
                step = min(chunk_s, t0 + duration_s - device.t_s)
                if step <= 1e-9 or device.done:
                    self._send(dev_id, device.finish())
                    del live[dev_id]
                    continue
                self._send(dev_id, device.step(step))
                self.apply_requests()
            if speedup:
                reached = min((d.t_s for d in live.values()), default=t0 + duration_s)
                ahead = (reached - t0) / speedup - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        self._linger(linger_s)

    def _wait_for_gateway(self, dev_id: int, taken: Taken, max_ahead: int, stall_s: float) -> None:
        if dev_id in self._unpaced:
            return
        deadline = time.monotonic() + stall_s
        before = taken(dev_id)
        while self.published[dev_id] - self._written_off[dev_id] - taken(dev_id) > max_ahead:
            self.apply_requests()
            if time.monotonic() > deadline:
                now = taken(dev_id)
                if now == before:  # the gateway takes nothing: stop waiting for it
                    self._unpaced.add(dev_id)
                    log.warning("device %d: the gateway stopped taking frames", dev_id)
                # QoS 0 may lose messages between broker and gateway; they will never be taken.
                self._written_off[dev_id] = self.published[dev_id] - now - max_ahead
                self.counts["stalls"] += 1
                return
            time.sleep(0.001)

    def _linger(self, linger_s: float) -> None:
        quiet_until = time.monotonic() + linger_s
        while time.monotonic() < quiet_until:
            if self.apply_requests():
                quiet_until = time.monotonic() + linger_s
            time.sleep(0.01)

    def _send(self, dev_id: int, out: list[bytes]) -> None:
        topic = topics.device_frames(dev_id, self.root)
        for frame in out:
            self._last = self._mqtt.publish(topic, frame)
        self.published[dev_id] += len(out)

    def apply_requests(self) -> int:
        """Apply every queued resend request (on the thread that owns the devices); the resent
        frames are published at once. Returns the number of requests taken from the queue."""
        n = 0
        while True:
            try:
                topic, payload = self._requests.get_nowait()
            except queue.Empty:
                break
            n += 1
            self._apply(topic, payload)
        if self._dropped:
            self.counts["resend_queue_full"] += self._dropped
            self._dropped = 0
        return n

    def _apply(self, topic: str, payload: bytes) -> None:
        try:
            parsed = topics.parse_device(topic, self.root)
        except WireError:
            self.counts["resend_topic"] += 1
            return
        device = self.devices.get(parsed.device_id)
        if parsed.kind != "resend" or device is None:
            self.counts["resend_topic"] += 1
            return
        try:
            seqs = decode_resend(payload)
        except ResendError as exc:
            self.counts[f"resend_{exc.reason}"] += 1
            return
        self.counts["resend_requests"] += 1
        granted = device.request_resend(seqs)
        self.counts["resend_granted"] += granted
        self.counts["resend_refused"] += len(seqs) - granted
        # The firmware sends the re-queued frames on its next radio poll.
        self._send(parsed.device_id, device.poll_radio())

    def figures(self) -> dict[str, Any]:
        """Per device: frames published, link faults applied, firmware counters, battery."""
        out: dict[str, Any] = {}
        for dev_id, d in self.devices.items():
            fw = d.firmware
            out[str(dev_id)] = {"published": self.published[dev_id], "link": dict(d.link.counts),
                                "firmware": fw.stats, "state": fw.state,
                                "battery_pct": fw.battery_pct, "signal_s": round(d.t_s, 3)}
        return {"devices": out, "resend": dict(sorted(self.counts.items()))}
