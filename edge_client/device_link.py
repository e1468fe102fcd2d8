"""The gateway's side of the wearable link: device frames from the local MQTT broker into the store.

Each wearable (or the radio bridge in front of it) publishes one frame per message on
``fedgate/dev/<id>/frames`` at QoS 0; the gateway asks for lost frames on
``fedgate/dev/<id>/resend`` (``native.resend``). Reliability lives here and in the firmware's
transmit window, not in MQTT: the radio hop, which loses frames, is invisible to the broker.

Threads: paho's network thread only enqueues ``(topic, payload)`` (the paho-mqtt v2 callback API);
one worker thread owns the ``Ingestor`` and its SQLite ``Store`` (a connection is not shared between
threads), feeds every message to ``Ingestor.feed``, commits periodically, flushes a device's
held-back frames once it has gone silent, and publishes resend requests from ``Ingestor.missing``.

Garbage never raises: a message that is not a frame of a device this link serves is counted in the
store under device -1 by reason (``topic``, ``oversize``, ``topic_mismatch``, ``queue_full``), and
the ingestor counts its own reasons (``crc``, ``short``, ``stream_mismatch``, ...).
"""

from __future__ import annotations

import logging
import queue
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge_client.ingest import IngestConfig, Ingestor
from edge_client.store import UNKNOWN_DEVICE, Store
from native import frames, topics
from native.errors import ConfigError, TransportError, WireError
from native.plain_mqtt import PlainClient
from native.resend import MAX_RESEND, encode_resend

log = logging.getLogger(__name__)

_DEVICE_ID = struct.Struct("<I")
_STOP = ("", b"")


@dataclass(frozen=True)
class LinkConfig:
    """How one gateway listens to its wearables."""

    root: str = topics.DEVICE_ROOT
    devices: frozenset[int] | None = None  # paired devices; None = every device on the broker
    queue_limit: int = 1 << 16             # messages waiting for the worker before drops
    silence_s: float = 2.0                 # a device this quiet has its held frames released
    commit_every_s: float = 1.0
    resend_check_frames: int = 4           # look for holes every this many frames of a device
    reask_after_frames: int = 12           # frames of that device before asking again
    resend_tries: int = 3                  # requests per missing frame (the window is 64 frames)
    keepalive_s: int = 30
    ingest: IngestConfig = field(default_factory=IngestConfig)

    def __post_init__(self) -> None:
        try:
            topics.check_root(self.root)
            for dev in self.devices or ():
                topics.check_device_id(dev)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"device link: {exc}") from None
        if not (1 <= self.queue_limit <= 1 << 24 and self.silence_s > 0
                and self.commit_every_s > 0 and self.resend_check_frames >= 1
                and self.reask_after_frames >= 1 and self.resend_tries >= 0
                and self.keepalive_s >= 5):
            raise ConfigError(f"invalid device link configuration: {self}")


@dataclass
class _DeviceState:
    handled: int = 0                  # messages on this device's topic taken by the worker
    last_seen: float = 0.0
    flushed: bool = True              # nothing held since the last silence flush
    asked: dict[int, tuple[int, int]] = field(default_factory=dict)  # seq -> (tries, at handled)


class DeviceLink:
    """Frames from the wearables on ``broker_url`` into the store at ``store_path``."""

    def __init__(self, broker_url: str, store_path: str | Path,
                 config: LinkConfig | None = None, *, client_id: str | None = None) -> None:
        self.config = config or LinkConfig()
        self.store_path = Path(store_path)
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(self.config.queue_limit)
        self._lock = threading.Lock()
        self._early: Counter[str] = Counter()   # counted on the network thread
        self._early_total = 0
        self._devices: dict[int, _DeviceState] = {}
        self._resends_sent = 0
        self._taken = 0                     # messages the worker has taken, of any kind
        self._busy = False
        self._worker: threading.Thread | None = None
        self._worker_error: BaseException | None = None
        cid = client_id or f"fedgate-link-{uuid.uuid4().hex[:12]}"
        self._mqtt = PlainClient(broker_url, cid, self._filters(), self._on_message,
                                 keepalive_s=self.config.keepalive_s)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Open the store (on the worker thread), connect and subscribe."""
        ready = threading.Event()
        self._worker = threading.Thread(target=self._work, args=(ready,), daemon=True,
                                        name=f"fedgate-link-{self.store_path.parent.name}")
        self._worker.start()
        ready.wait(timeout)
        if self._worker_error is not None:
            raise self._worker_error
        try:
            self._mqtt.start(timeout)
        except TransportError:
            self._halt_worker()
            raise

    def stop(self, timeout: float = 30.0) -> None:
        """Disconnect, ingest what is queued, release every held frame, commit, close the store."""
        self._mqtt.stop()
        self._halt_worker(timeout)

    def _halt_worker(self, timeout: float = 30.0) -> None:
        if self._worker is not None:
            try:
                self._inbox.put(_STOP, timeout=timeout)
            except queue.Full:
                log.error("device link: inbox still full at stop; queued frames are lost")
            self._worker.join(timeout)

    # -- what the outside may ask (any thread) ---------------------------------------------------

    def handled(self, device_id: int) -> int:
        """Messages on this device's frames topic that the worker has taken so far."""
        with self._lock:
            st = self._devices.get(device_id)
            return st.handled if st else 0

    def idle(self) -> bool:
        """Nothing queued, nothing being ingested, every silent device flushed."""
        with self._lock:
            return (self._inbox.empty() and not self._busy
                    and all(st.flushed for st in self._devices.values()))

    def wait_idle(self, timeout: float) -> bool:
        """Block until ``idle()`` (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while not self.idle():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    @property
    def resends_sent(self) -> int:
        return self._resends_sent

    @property
    def messages(self) -> int:
        """Messages the worker has taken from the inbox, garbage included."""
        with self._lock:
            return self._taken

    @property
    def early_drops(self) -> int:
        """Messages dropped on the network thread (oversize, inbox full), since the start."""
        with self._lock:
            return self._early_total

    # -- network thread: only enqueue ----------------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        payload = msg.payload
        if len(payload) > frames.MAX_FRAME:  # never queue what cannot be a frame
            self._count_early("oversize")
            return
        try:
            self._inbox.put_nowait((msg.topic, bytes(payload)))
        except queue.Full:
            self._count_early("queue_full")

    def _count_early(self, reason: str) -> None:
        with self._lock:
            self._early[reason] += 1
            self._early_total += 1

    def _filters(self) -> list[str]:
        root = self.config.root
        if self.config.devices is None:
            return [topics.all_device_frames(root)]
        # Paired devices only: on a broker shared by several gateways, the others' frames never
        # reach this one.
        return [topics.device_frames(d, root) for d in sorted(self.config.devices)]

    # -- worker thread -------------------------------------------------------------------------

    def _work(self, ready: threading.Event) -> None:
        try:
            store = Store(self.store_path)
        except Exception as exc:  # sqlite3 errors: an unusable path or a damaged file
            self._worker_error = ConfigError(f"device link cannot open {self.store_path}: {exc}")
            ready.set()
            return
        ingestor = Ingestor(store, self.config.ingest)
        ready.set()
        try:
            self._serve(ingestor)
        finally:
            self._drain_early(store)
            ingestor.flush()
            store.close()
            with self._lock:
                for st in self._devices.values():
                    st.flushed = True

    def _serve(self, ingestor: Ingestor) -> None:
        last_commit = time.monotonic()
        while True:
            try:
                item = self._inbox.get(timeout=0.05)
            except queue.Empty:
                item = None
            if item is _STOP:
                self._ingest_rest(ingestor)
                return
            now = time.monotonic()
            if item is not None:
                with self._lock:
                    self._busy = True
                    self._taken += 1
                try:
                    self._handle(ingestor, item[0], item[1], now)
                finally:
                    with self._lock:
                        self._busy = False
            if now - last_commit >= self.config.commit_every_s:
                self._drain_early(ingestor.store)
                ingestor.store.commit()
                last_commit = now
            self._flush_silent(ingestor, now)

    def _ingest_rest(self, ingestor: Ingestor) -> None:
        while True:
            try:
                topic, payload = self._inbox.get_nowait()
            except queue.Empty:
                return
            if topic:
                self._handle(ingestor, topic, payload, time.monotonic())

    def _handle(self, ingestor: Ingestor, topic: str, payload: bytes, now: float) -> None:
        store = ingestor.store
        try:
            parsed = topics.parse_device(topic, self.config.root)
        except WireError:
            store.count(UNKNOWN_DEVICE, "topic")
            return
        served = self.config.devices
        if parsed.kind != "frames" or (served is not None and parsed.device_id not in served):
            store.count(UNKNOWN_DEVICE, "topic")
            return
        dev = parsed.device_id
        if self._claims_other_device(payload, dev):
            store.count(UNKNOWN_DEVICE, "topic_mismatch")
            return
        ingestor.feed(payload)
        with self._lock:
            st = self._devices.setdefault(dev, _DeviceState())
            st.handled += 1
            st.last_seen, st.flushed = now, False
            check = st.handled % self.config.resend_check_frames == 0
        if check:
            self._ask_resend(ingestor, dev, st)

    @staticmethod
    def _claims_other_device(payload: bytes, topic_device: int) -> bool:
        """A valid frame whose header names another device than its topic (a device must not
        fill another's stream). Frames that fail decoding are left to the ingestor's reasons."""
        if len(payload) < frames.HEADER_LEN or payload[:2] != b"FG":
            return False
        (claimed,) = _DEVICE_ID.unpack_from(payload, 16)
        if claimed == topic_device:
            return False
        try:
            frames.decode(payload)
        except WireError:
            return False
        return True

    def _ask_resend(self, ingestor: Ingestor, dev: int, st: _DeviceState) -> None:
        missing = ingestor.missing(dev, MAX_RESEND)
        if not missing and not st.asked:
            return
        cfg = self.config
        want = []
        for seq in missing:
            tries, at = st.asked.get(seq, (0, -cfg.reask_after_frames))
            if tries < cfg.resend_tries and st.handled - at >= cfg.reask_after_frames:
                want.append(seq)
                st.asked[seq] = (tries + 1, st.handled)
        still = set(missing)
        st.asked = {s: v for s, v in st.asked.items() if s in still}
        if want:
            self._mqtt.publish(topics.device_resend(dev, cfg.root), encode_resend(want))
            self._resends_sent += 1

    def _flush_silent(self, ingestor: Ingestor, now: float) -> None:
        with self._lock:
            quiet = [d for d, st in self._devices.items()
                     if not st.flushed and now - st.last_seen >= self.config.silence_s]
        for dev in quiet:
            ingestor.flush(dev)
            st = self._devices[dev]
            # The holes found by the flush are worth one request each: the device may still
            # hold them, and a device that went silent because it stopped sending is not harmed.
            self._ask_resend(ingestor, dev, st)
            with self._lock:
                st.flushed = now - st.last_seen >= self.config.silence_s

    def _drain_early(self, store: Store) -> None:
        with self._lock:
            early, self._early = self._early, Counter()
        for reason, n in early.items():
            store.count(UNKNOWN_DEVICE, reason, n)


def ingestion_figures(store: Store, device_ids: Iterable[int]) -> dict[str, Any]:
    """What a gateway took in: counters by outcome and reason, gaps, frames and beats stored."""
    per_device = {}
    for dev in device_ids:
        counts = store.counters(dev)
        gaps = store.gaps(dev)
        per_device[str(dev)] = {
            "accepted": counts.get("accepted", 0) + counts.get("late", 0),
            "late": counts.get("late", 0), "duplicate": counts.get("duplicate", 0),
            "rejected": {k: v for k, v in sorted(counts.items()) if k not in _NOT_REJECTIONS},
            "gaps": len(gaps), "gap_frames": sum(b - a + 1 for a, b in gaps),
            "clock_jumps": counts.get("clock_jump", 0), "beats": len(store.beats(dev)),
            "device": store.device(dev)}
    unattributed = store.counters(UNKNOWN_DEVICE)
    return {"devices": per_device, "unattributed_rejected": dict(sorted(unattributed.items()))}


_NOT_REJECTIONS = frozenset({"accepted", "late", "duplicate", "gap_frames", "clock_jump"})
