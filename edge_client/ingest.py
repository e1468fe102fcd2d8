"""Gateway ingestion of wearable frames: validate, deduplicate, reorder, record gaps, store.

The core is transport-free: ``Ingestor.feed(frame_bytes)`` takes one frame as it arrived (an MQTT
message payload, a datagram, a frame cut from a socket stream with ``native.frames.peek_len``) and
returns what happened to it: ``"accepted"``, ``"duplicate"``, ``"late"`` (a gap filled by a resend)
or the reason it was rejected. Every outcome is counted per device in the store; nothing in the
bytes can raise out of ``feed``.

Validation, in order:
1. the shared C decoder: magic, version, lengths, CRC-32, field ranges (reasons from the codec);
2. the stream: a device keeps its sensor, channels and rate (``stream_mismatch``);
3. the clock: the device timestamp must agree with the sample number, allowing crystal drift
   and jitter. A step beyond ``max_clock_jump_s`` is ``timestamp``-rejected until a second frame
   confirms the new clock; smaller steps are counted as ``clock_jump`` and followed.
Sequence numbers then order the frames: duplicates are dropped, frames wait up to
``reorder_window`` frames for a missing predecessor, after which the hole is recorded as a gap.
A frame that fills a recorded gap later (a resend) is stored as ``late``.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

from edge_client.store import UNKNOWN_DEVICE, BeatRow, Store
from native.errors import ConfigError
from native.frames import Flag, Frame, FrameDecoder, Sensor

log = logging.getLogger(__name__)

_U32 = 1 << 32
_MAX_T_US = 1 << 63


def unwrap32(reference: int, raw: int) -> int:
    """The 64-bit value nearest ``reference`` whose low 32 bits are ``raw``."""
    return reference + ((raw - reference + (1 << 31)) % _U32) - (1 << 31)


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """Ingestion policy of one gateway."""

    reorder_window: int = 16          # frames held back waiting for a missing predecessor
    max_missing: int = 4096           # missing sequence numbers remembered per device
    drift_ppm: float = 2000.0         # device clock error tolerated (crystals: 20-100 ppm)
    jitter_us: int = 20_000
    max_clock_jump_s: float = 3600.0  # beyond this a timestamp is implausible until confirmed
    commit_every: int = 512           # frames per SQLite transaction

    def __post_init__(self) -> None:
        if not (1 <= self.reorder_window <= 4096 and 0 <= self.max_missing <= 1 << 20
                and self.drift_ppm >= 0 and self.jitter_us >= 0 and self.max_clock_jump_s > 0
                and self.commit_every >= 1):
            raise ConfigError(f"invalid ingest configuration: {self}")


@dataclass(slots=True)
class _Stream:
    """What the gateway knows about one device's frame stream."""

    sensor: int
    n_channels: int
    sample_rate_hz: int
    next_seq: int                      # lowest sequence number not yet released in order
    last_seq: int                      # newest sequence number seen (unwrap reference)
    last_sample: int                   # newest first_sample seen (unwrap reference)
    anchor: tuple[int, int]            # (sample number, t_us) of the clock reference
    suspect: tuple[int, int] | None = None
    pending: dict[int, tuple[Frame, int]] = field(default_factory=dict)
    missing: dict[int, None] = field(default_factory=dict)  # insertion-ordered set


class Ingestor:
    """Frame ingestion for one gateway, writing into ``store``. Not thread-safe: the transport's
    callback enqueues bytes and a single worker calls ``feed``."""

    def __init__(self, store: Store, config: IngestConfig | None = None) -> None:
        self.store = store
        self.config = config or IngestConfig()
        self._decoder = FrameDecoder()
        self._streams: dict[int, _Stream] = {}
        self._since_commit = 0

    # -- entry point ---------------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> str:
        """Ingest one received frame; returns the outcome (see the module docstring)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            self.store.count(UNKNOWN_DEVICE, "type")
            return "type"
        result = self._decoder.decode_or_reason(data)
        if isinstance(result, str):
            # The device id of a frame that failed its checks cannot be trusted.
            self.store.count(UNKNOWN_DEVICE, result)
            return result
        outcome = self._admit(result)
        self.store.count(result.device_id, outcome)
        return outcome

    def flush(self, device_id: int | None = None) -> None:
        """Release everything held for reordering (recording the holes as gaps) and commit.
        Call it when a run ends or the link has been idle for a while; with ``device_id``, only
        that device's held frames are released (it went silent, the others still stream)."""
        for dev, st in self._streams.items():
            if device_id is not None and dev != device_id:
                continue
            while st.pending:
                self._skip_to(dev, st, min(st.pending))
                self._release(dev, st)
        self.store.commit()

    def missing(self, device_id: int, limit: int = 64) -> list[int]:
        """The newest sequence numbers (raw, 32-bit) still missing from a device: what to ask the
        device to resend."""
        st = self._streams.get(device_id)
        if st is None:
            return []
        # Newest first from the end of the insertion-ordered set: O(limit), however many are
        # remembered (a link asks after every few frames).
        newest = itertools.islice(reversed(st.missing), limit)
        return [s % _U32 for s in reversed(list(newest))]

    # -- validation ----------------------------------------------------------------------------

    def _admit(self, f: Frame) -> str:
        if f.t_us >= _MAX_T_US:
            return "timestamp"  # past the year 294 000, and beyond what SQLite stores
        st = self._streams.get(f.device_id)
        if st is None:
            st = self._new_stream(f)
        if f.sensor != Sensor.STATUS:
            geometry = (int(f.sensor), f.n_channels, f.sample_rate_hz)
            if st.sample_rate_hz == 0:
                st.sensor, st.n_channels, st.sample_rate_hz = geometry
                self.store.set_device(f.device_id, *geometry, f.battery_pct, f.battery_mv, False)
            elif geometry != (st.sensor, st.n_channels, st.sample_rate_hz):
                return "stream_mismatch"
        seq = unwrap32(st.last_seq, f.seq)
        sample = unwrap32(st.last_sample, f.first_sample)
        late = seq < st.next_seq
        if (late and seq not in st.missing) or seq in st.pending:
            return "duplicate"
        verdict = self._check_clock(f.device_id, st, sample, f.t_us, seq)
        if verdict is not None:
            return verdict
        st.last_seq = max(st.last_seq, seq)
        st.last_sample = max(st.last_sample, sample)
        if late:
            del st.missing[seq]
            self.store.fill_gap(f.device_id, seq)
            self._store(f, seq, sample)
            return "late"
        st.pending[seq] = (f, sample)
        self._release(f.device_id, st)
        if len(st.pending) > self.config.reorder_window:
            self._skip_to(f.device_id, st, min(st.pending))
            self._release(f.device_id, st)
        return "accepted"

    def _new_stream(self, f: Frame) -> _Stream:
        st = _Stream(sensor=0, n_channels=0, sample_rate_hz=0, next_seq=f.seq, last_seq=f.seq,
                     last_sample=f.first_sample, anchor=(f.first_sample, f.t_us))
        # The first frame seen need not be the first sent (reordering, a gateway restart): the
        # frames just before it are accepted later, without recording them as a gap.
        st.missing = dict.fromkeys(range(max(0, f.seq - self.config.reorder_window), f.seq))
        self._streams[f.device_id] = st
        return st

    def _check_clock(self, device_id: int, st: _Stream, sample: int, t_us: int, seq: int
                     ) -> str | None:
        rate = st.sample_rate_hz
        if not rate:
            return None  # a stream that has only sent STATUS frames has no sample clock yet
        cfg = self.config
        a_sample, a_t = st.anchor
        dt_pred = (sample - a_sample) * 1_000_000 / rate
        residual = t_us - a_t - dt_pred
        tolerance = cfg.jitter_us + abs(dt_pred) * cfg.drift_ppm * 1e-6
        if abs(residual) <= tolerance:
            if seq >= st.last_seq:
                st.anchor, st.suspect = (sample, t_us), None
            return None
        if abs(residual) <= cfg.max_clock_jump_s * 1e6 or self._confirms(st, sample, t_us):
            self.store.count(device_id, "clock_jump")
            st.anchor, st.suspect = (sample, t_us), None
            return None
        st.suspect = (sample, t_us)
        return "timestamp"

    def _confirms(self, st: _Stream, sample: int, t_us: int) -> bool:
        """Does this frame agree with the previous implausible one (a real clock step)?"""
        if st.suspect is None:
            return False
        s_sample, s_t = st.suspect
        dt_pred = (sample - s_sample) * 1_000_000 / st.sample_rate_hz
        tol = self.config.jitter_us + abs(dt_pred) * self.config.drift_ppm * 1e-6
        return abs(t_us - s_t - dt_pred) <= tol

    # -- ordering and storage -------------------------------------------------------------------

    def _skip_to(self, device_id: int, st: _Stream, seq: int) -> None:
        """Give up waiting for [next_seq, seq): record the hole as a gap."""
        if seq <= st.next_seq:
            return
        self.store.add_gap(device_id, st.next_seq, seq - 1)
        self.store.count(device_id, "gap_frames", seq - st.next_seq)
        for s in range(max(st.next_seq, seq - self.config.max_missing), seq):
            st.missing[s] = None
        while len(st.missing) > self.config.max_missing:
            del st.missing[next(iter(st.missing))]
        st.next_seq = seq

    def _release(self, device_id: int, st: _Stream) -> None:
        while st.next_seq in st.pending:
            frame, sample = st.pending.pop(st.next_seq)
            self._store(frame, st.next_seq, sample)
            st.next_seq += 1

    def _store(self, f: Frame, seq: int, sample: int) -> None:
        beats: list[BeatRow] = [
            (f.device_id, sample + a.offset, a.label, a.aux, seq) for a in f.annotations]
        self.store.add_frame(
            (f.device_id, seq, sample, f.t_us, int(f.sensor), int(f.flags), f.sample_rate_hz,
             f.n_samples, f.n_channels, f.battery_pct, f.battery_mv,
             f.samples.astype("<i2", copy=False).tobytes()),
            beats)
        if f.sensor == Sensor.STATUS or f.flags & Flag.SHUTDOWN:
            self.store.set_device(f.device_id, 0, 0, 0, f.battery_pct, f.battery_mv,
                                  bool(f.flags & Flag.SHUTDOWN))
        self._since_commit += 1
        if self._since_commit >= self.config.commit_every:
            self.store.commit()
            self._since_commit = 0
