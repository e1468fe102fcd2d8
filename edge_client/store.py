"""The gateway-local store: samples, beats, gaps and ingest counters in one SQLite file.

Raw sensor data never leaves the gateway; this file is where it lives. Writes are batched: the
ingestor queues rows and ``commit()`` writes them in one transaction, so a power cut loses at most
the uncommitted batch and never leaves half a frame. Samples are keyed by their absolute sample
number on the device, which makes every write idempotent: a frame stored twice is stored once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from native.errors import InputError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    device_id INTEGER NOT NULL, seq INTEGER NOT NULL, first_sample INTEGER NOT NULL,
    t_us INTEGER NOT NULL, sensor INTEGER NOT NULL, flags INTEGER NOT NULL,
    sample_rate_hz INTEGER NOT NULL, n_samples INTEGER NOT NULL, n_channels INTEGER NOT NULL,
    battery_pct INTEGER NOT NULL, battery_mv INTEGER NOT NULL, samples BLOB NOT NULL,
    PRIMARY KEY (device_id, seq));
CREATE INDEX IF NOT EXISTS frames_by_sample ON frames (device_id, first_sample);
CREATE TABLE IF NOT EXISTS beats (
    device_id INTEGER NOT NULL, sample INTEGER NOT NULL, label TEXT NOT NULL,
    aux INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (device_id, sample));
CREATE TABLE IF NOT EXISTS gaps (
    device_id INTEGER NOT NULL, seq_from INTEGER NOT NULL, seq_to INTEGER NOT NULL,
    PRIMARY KEY (device_id, seq_from));
CREATE TABLE IF NOT EXISTS counters (
    device_id INTEGER NOT NULL, name TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (device_id, name));
CREATE TABLE IF NOT EXISTS devices (
    device_id INTEGER PRIMARY KEY, sensor INTEGER, sample_rate_hz INTEGER, n_channels INTEGER,
    battery_pct INTEGER, battery_mv INTEGER, shutdown INTEGER NOT NULL DEFAULT 0);
"""

#: Device id under which frames that cannot be attributed to a device are counted.
UNKNOWN_DEVICE = -1

FrameRow = tuple[int, int, int, int, int, int, int, int, int, int, int, bytes]
BeatRow = tuple[int, int, str, int, int]


class Store:
    """The SQLite store of one gateway. Not shared between threads."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._frames: list[FrameRow] = []
        self._beats: list[BeatRow] = []
        self._counters: dict[tuple[int, str], int] = {}

    def close(self) -> None:
        self.commit()
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes (queued until commit) ---------------------------------------------------------

    def add_frame(self, row: FrameRow, beats: Iterable[BeatRow]) -> None:
        """Queue one frame's samples and its beats."""
        self._frames.append(row)
        self._beats.extend(beats)

    def count(self, device_id: int, name: str, n: int = 1) -> None:
        key = (device_id, name)
        self._counters[key] = self._counters.get(key, 0) + n

    @property
    def pending(self) -> int:
        return len(self._frames)

    def commit(self) -> None:
        """Write everything queued in one transaction."""
        if not (self._frames or self._beats or self._counters):
            return
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany("INSERT OR IGNORE INTO frames VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                           self._frames)
            db.executemany("INSERT OR IGNORE INTO beats VALUES (?,?,?,?,?)", self._beats)
            db.executemany(
                "INSERT INTO counters VALUES (?,?,?) ON CONFLICT (device_id, name) "
                "DO UPDATE SET count = count + excluded.count",
                [(d, n, c) for (d, n), c in self._counters.items()])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._frames.clear()
        self._beats.clear()
        self._counters.clear()

    def set_device(self, device_id: int, sensor: int, rate: int, channels: int, battery_pct: int,
                   battery_mv: int, shutdown: bool) -> None:
        self._db.execute(
            "INSERT INTO devices VALUES (?,?,?,?,?,?,?) ON CONFLICT (device_id) DO UPDATE SET "
            "battery_pct=excluded.battery_pct, battery_mv=excluded.battery_mv, "
            "shutdown=max(shutdown, excluded.shutdown), sensor=coalesce(excluded.sensor, sensor), "
            "sample_rate_hz=coalesce(excluded.sample_rate_hz, sample_rate_hz), "
            "n_channels=coalesce(excluded.n_channels, n_channels)",
            (device_id, sensor or None, rate or None, channels or None, battery_pct, battery_mv,
             int(shutdown)))

    def add_gap(self, device_id: int, seq_from: int, seq_to: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO gaps VALUES (?,?,?)",
                         (device_id, seq_from, seq_to))

    def fill_gap(self, device_id: int, seq: int) -> None:
        """A frame inside a recorded gap arrived late (a resend): split the gap around it."""
        row = self._db.execute(
            "SELECT seq_from, seq_to FROM gaps WHERE device_id=? AND seq_from<=? AND seq_to>=?",
            (device_id, seq, seq)).fetchone()
        if row is None:
            return
        lo, hi = row
        self._db.execute("DELETE FROM gaps WHERE device_id=? AND seq_from=?", (device_id, lo))
        for a, b in ((lo, seq - 1), (seq + 1, hi)):
            if a <= b:
                self.add_gap(device_id, a, b)

    # -- reads ------------------------------------------------------------------------------

    def counters(self, device_id: int | None = None) -> dict[str, int]:
        """Ingest counters (accepted, duplicate, and one per rejection reason), summed."""
        self.commit()
        sql = "SELECT name, sum(count) FROM counters"
        args: tuple[int, ...] = ()
        if device_id is not None:
            sql, args = sql + " WHERE device_id=?", (device_id,)
        return {n: int(c) for n, c in self._db.execute(sql + " GROUP BY name", args)}

    def beats(self, device_id: int) -> list[tuple[int, str, int]]:
        """(absolute sample number, label, aux) of every stored beat, in sample order."""
        self.commit()
        return [(int(s), str(lb), int(a)) for s, lb, a in self._db.execute(
            "SELECT sample, label, aux FROM beats WHERE device_id=? ORDER BY sample", (device_id,))]

    def count_beats(self, device_id: int, labels: Iterable[str]) -> int:
        """How many stored beats of a device carry one of ``labels`` (one SQL count)."""
        self.commit()
        wanted = sorted(set(labels))
        if not wanted or not all(isinstance(w, str) for w in wanted):
            raise InputError("count_beats needs a non-empty set of label strings")
        marks = ",".join("?" * len(wanted))
        row = self._db.execute(f"SELECT count(*) FROM beats WHERE device_id=? AND label IN "
                               f"({marks})", (device_id, *wanted)).fetchone()
        return int(row[0])

    def data_version(self) -> tuple[int, ...]:
        """Changes whenever a frame or a beat is added or replaced (row counts and largest rowids:
        rows are only ever inserted, and a replaced row gets a new rowid)."""
        self.commit()
        row = self._db.execute(
            "SELECT (SELECT count(*) FROM frames), (SELECT max(rowid) FROM frames), "
            "(SELECT count(*) FROM beats), (SELECT max(rowid) FROM beats), "
            "(SELECT count(*) FROM devices)").fetchone()
        return tuple(int(v or 0) for v in row)

    def gaps(self, device_id: int) -> list[tuple[int, int]]:
        self.commit()
        return [(int(a), int(b)) for a, b in self._db.execute(
            "SELECT seq_from, seq_to FROM gaps WHERE device_id=? ORDER BY seq_from", (device_id,))]

    def device_ids(self) -> list[int]:
        self.commit()
        return [int(r[0]) for r in self._db.execute(
            "SELECT DISTINCT device_id FROM frames ORDER BY device_id")]

    def device(self, device_id: int) -> dict[str, int] | None:
        row = self._db.execute("SELECT * FROM devices WHERE device_id=?", (device_id,)).fetchone()
        if row is None:
            return None
        keys = ("device_id", "sensor", "sample_rate_hz", "n_channels", "battery_pct",
                "battery_mv", "shutdown")
        return dict(zip(keys, row, strict=True))

    def signal(self, device_id: int, *, clean_only: bool = False, flag_mask: int = 0x06
               ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int16]]:
        """All stored samples of a device: (absolute sample numbers, values (n, channels)).
        ``clean_only`` leaves out frames with any ``flag_mask`` bit (lead-off, saturation)."""
        self.commit()
        rows = self._db.execute(
            "SELECT first_sample, n_samples, n_channels, samples, flags FROM frames "
            "WHERE device_id=? AND n_samples>0 ORDER BY first_sample", (device_id,)).fetchall()
        rows = [r for r in rows if not (clean_only and r[4] & flag_mask)]
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 1), dtype=np.int16)
        idx = np.concatenate([np.arange(f, f + n, dtype=np.int64) for f, n, _, _, _ in rows])
        vals = np.concatenate([np.frombuffer(b, dtype="<i2").reshape(n, c).astype(np.int16)
                               for _, n, c, b, _ in rows])
        return idx, vals

    def beat_windows(self, device_id: int, before: int, after: int, channel: int = 0
                     ) -> tuple[npt.NDArray[np.int16], list[str]]:
        """Windows of [beat - before, beat + after) samples around each stored beat, kept only
        where every sample arrived and none was flagged lead-off or saturated."""
        if before < 0 or after <= 0:
            raise InputError(f"window needs before >= 0 and after > 0, got {before}, {after}")
        idx, vals = self.signal(device_id, clean_only=True)
        if idx.size == 0:
            return np.zeros((0, before + after), dtype=np.int16), []
        out, labels = [], []
        for sample, label, _aux in self.beats(device_id):
            lo = int(np.searchsorted(idx, sample - before))
            hi = lo + before + after
            if hi <= idx.size and idx[lo] == sample - before and idx[hi - 1] == sample + after - 1:
                out.append(vals[lo:hi, channel])
                labels.append(label)
        if not out:
            return np.zeros((0, before + after), dtype=np.int16), []
        return np.stack(out).astype(np.int16), labels
