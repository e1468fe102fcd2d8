"""Device frames: the validating Python face of the C frame codec (``native._frame``).

The wearable firmware and the gateway share one C codec (``native/frame/frame.c``); this module is
the only Python code that calls it. It checks types, ranges and shapes before anything crosses
into C, and turns every C status into a ``FrameError`` whose ``reason`` names the failed check, so
a gateway can count rejected frames by reason. The byte layout is in ``docs/firmware.md``.
"""

from __future__ import annotations

import enum
import struct
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from native import _frame  # type: ignore[attr-defined]
from native.errors import InputError, InputTypeError, WireError

_ffi: Any = _frame.ffi
_lib: Any = _frame.lib

VERSION: int = int(_lib.FG_VERSION)
HEADER_LEN: int = int(_lib.FG_HEADER_LEN)
CRC_LEN: int = int(_lib.FG_CRC_LEN)
MAX_FRAME: int = int(_lib.FG_MAX_FRAME)
MIN_FRAME: int = int(_lib.FG_MIN_FRAME)
MAX_VALUES: int = int(_lib.FG_MAX_VALUES)
MAX_CHANNELS: int = int(_lib.FG_MAX_CHANNELS)
MAX_ANNOTATIONS: int = int(_lib.FG_MAX_ANNOTATIONS)
MAX_RATE_HZ: int = int(_lib.FG_MAX_RATE_HZ)

#: Every reason a decoder can give, in C status order (index 0 is "ok").
REASONS: tuple[str, ...] = tuple(
    _ffi.string(_lib.fg_status_name(i)).decode() for i in range(int(_lib.FG_ERR_LAST) + 1)
)


class Sensor(enum.IntEnum):
    """What a frame carries; STATUS frames carry battery telemetry and no samples."""

    STATUS = 0
    ECG = 1
    PPG = 2
    ACC = 3


class Flag(enum.IntFlag):
    """Header flag bits set by the firmware."""

    NONE = 0
    RESEND = 0x01
    LEAD_OFF = 0x02
    SATURATED = 0x04
    LOW_BATTERY = 0x08
    SHUTDOWN = 0x10
    BUFFERED = 0x20


class Annotation(NamedTuple):
    """A beat (or event) marker: sample offset within the frame, MIT-BIH symbol, aux code."""

    offset: int
    label: str
    aux: int = 0


class FrameError(WireError):
    """Bytes that are not a valid frame; ``reason`` is the short name of the failed check."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"invalid device frame: {reason}" + (f" ({detail})" if detail else ""))
        self.reason = reason


_EMPTY_SAMPLES = np.zeros((0, 0), dtype=np.int16)
_EMPTY_SAMPLES.flags.writeable = False


class Frame(NamedTuple):
    """One decoded (or to be encoded) device frame. ``samples`` is int16, shape (n, channels);
    decoded samples are read-only. A NamedTuple rather than a dataclass: the gateway builds one per
    received frame, and tuple construction is several times cheaper."""

    device_id: int
    seq: int
    t_us: int
    sensor: Sensor
    samples: npt.NDArray[np.int16] = _EMPTY_SAMPLES
    first_sample: int = 0
    sample_rate_hz: int = 0
    flags: Flag = Flag.NONE
    annotations: tuple[Annotation, ...] = ()
    battery_pct: int = 0
    battery_mv: int = 0

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.samples.shape[1])


# Wire header from byte 3 (after magic and version): see docs/firmware.md.
_HEADER = struct.Struct("<BBBHHBBHHIIQI")
_ANNOTATION = struct.Struct("<HBB")
_SENSORS = tuple(Sensor)
_FLAG_CACHE: dict[int, Flag] = {}


def _flags(bits: int) -> Flag:
    # IntFlag construction is slow; there are only 64 valid combinations.
    flag = _FLAG_CACHE.get(bits)
    if flag is None:
        flag = _FLAG_CACHE[bits] = Flag(bits)
    return flag


_U8, _U16, _U32, _U64 = 0xFF, 0xFFFF, 0xFFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF


def _int_field(name: str, value: object, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InputTypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= int(value) <= hi:
        raise InputError(f"{name}={value} is outside 0..{hi}")
    return int(value)


def _check_samples(frame: Frame) -> npt.NDArray[np.int16]:
    s = frame.samples
    if not isinstance(s, np.ndarray):
        raise InputTypeError(f"samples must be a numpy array, got {type(s).__name__}")
    if s.dtype != np.int16 or s.ndim != 2:
        raise InputTypeError(
            f"samples must be int16 of shape (n, channels), got {s.dtype} {s.shape}")
    if frame.sensor == Sensor.STATUS:
        if s.size != 0 or frame.annotations:
            raise InputError("a STATUS frame carries no samples and no annotations")
    elif not (1 <= s.shape[1] <= MAX_CHANNELS and s.shape[0] >= 1 and s.size <= MAX_VALUES):
        raise InputError(f"samples shape {s.shape} breaks the limits (<= {MAX_VALUES} values)")
    return np.ascontiguousarray(s)


def _fill_annotations(frame: Frame) -> Any:
    anns = frame.annotations
    if len(anns) > MAX_ANNOTATIONS:
        raise InputError(f"{len(anns)} annotations, at most {MAX_ANNOTATIONS}")
    c_ann = _ffi.new("fg_annotation[]", max(1, len(anns)))
    for i, ann in enumerate(anns):
        if not isinstance(ann, Annotation) or not isinstance(ann.label, str) or len(ann.label) != 1:
            raise InputTypeError(f"annotation {i} must be Annotation(offset, 1-char label, aux)")
        label = ord(ann.label)
        if not 0 < label <= _U8:
            raise InputError(f"annotation {i} label {ann.label!r} is not a 1-byte symbol")
        if not 0 <= _int_field("annotation offset", ann.offset, _U16) < frame.n_samples:
            raise InputError(
                f"annotation {i} offset {ann.offset} outside {frame.n_samples} samples")
        c_ann[i].offset = ann.offset
        c_ann[i].label = label
        c_ann[i].aux = _int_field("annotation aux", ann.aux, _U8)
    return c_ann


def encode(frame: Frame) -> bytes:
    """Encode ``frame`` with the C codec; raises ``InputError``/``InputTypeError`` on bad fields."""
    if not isinstance(frame, Frame):
        raise InputTypeError(f"expected a Frame, got {type(frame).__name__}")
    samples = _check_samples(frame)
    h = _ffi.new("fg_header *")
    h.version = VERSION
    h.sensor = _int_field("sensor", int(frame.sensor), _U8)
    h.flags = _int_field("flags", int(frame.flags), _U8)
    h.n_channels = samples.shape[1] if samples.size else 0
    h.n_samples = samples.shape[0] if samples.size else 0
    h.sample_rate_hz = _int_field("sample_rate_hz", frame.sample_rate_hz, _U16)
    h.device_id = _int_field("device_id", frame.device_id, _U32)
    h.seq = _int_field("seq", frame.seq, _U32)
    h.t_us = _int_field("t_us", frame.t_us, _U64)
    h.first_sample = _int_field("first_sample", frame.first_sample, _U32)
    h.n_annotations = len(frame.annotations)
    h.battery_pct = _int_field("battery_pct", frame.battery_pct, _U8)
    h.battery_mv = _int_field("battery_mv", frame.battery_mv, _U16)
    c_ann = _fill_annotations(frame)
    out = bytearray(MAX_FRAME)
    out_len = _ffi.new("size_t *")
    rc = _lib.fg_encode(h, _ffi.from_buffer("int16_t[]", samples), c_ann,
                        _ffi.from_buffer(out), len(out), out_len)
    if rc != 0:
        raise InputError(f"frame refused by the encoder: {REASONS[rc]}")
    return bytes(out[: out_len[0]])


def _as_buffer(data: object) -> bytes | bytearray | memoryview:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InputTypeError(f"frame bytes must be bytes-like, got {type(data).__name__}")
    if isinstance(data, memoryview) and not data.c_contiguous:
        raise InputTypeError("frame memoryview must be contiguous")
    return data


class FrameDecoder:
    """Reusable decoder: C-side scratch is allocated once, so the hot path allocates only output.

    Not thread-safe; give each ingest thread its own decoder.
    """

    def __init__(self) -> None:
        self._h = _ffi.new("fg_header *")
        self._ann = _ffi.new("fg_annotation[]", MAX_ANNOTATIONS)
        self._scratch = np.empty(MAX_VALUES, dtype=np.int16)
        self._c_scratch = _ffi.from_buffer("int16_t[]", self._scratch)

    def decode_or_reason(self, data: object) -> Frame | str:
        """Decode one frame; return the rejection reason string instead of raising."""
        buf = _as_buffer(data)
        # cffi passes bytes to a const uint8_t * without a copy; other buffers need from_buffer.
        c_buf = buf if isinstance(buf, bytes) else _ffi.from_buffer(buf)
        rc = _lib.fg_decode(c_buf, len(buf), self._h, self._c_scratch, MAX_VALUES, self._ann,
                            MAX_ANNOTATIONS)
        if rc != 0:
            return REASONS[rc] if 0 < rc < len(REASONS) else "unknown"
        # The C decoder has checked every field; reading the (fixed, little-endian) layout back
        # from the bytes with one struct call is much cheaper than one cffi access per field.
        (sensor, flags, ch, n, rate, n_ann, pct, mv, _plen, device_id, seq, t_us,
         first) = _HEADER.unpack_from(buf, 3)
        if n:
            if isinstance(buf, bytes):
                samples = np.frombuffer(buf, dtype="<i2", count=n * ch, offset=HEADER_LEN)
            else:  # a mutable buffer must not alias the frame's samples
                samples = self._scratch[: n * ch].copy()
                samples.flags.writeable = False
            samples = samples.reshape(n, ch)
        else:
            samples = _EMPTY_SAMPLES
        anns: tuple[Annotation, ...] = ()
        if n_ann:
            off = HEADER_LEN + 2 * n * ch
            anns = tuple(Annotation(o, chr(lb), ax) for o, lb, ax in
                         _ANNOTATION.iter_unpack(bytes(buf[off: off + 4 * n_ann])))
        return Frame(device_id, seq, t_us, _SENSORS[sensor], samples, first, rate,
                     _flags(flags), anns, pct, mv)

    def decode(self, data: object) -> Frame:
        """Decode one frame occupying all of ``data``; raises ``FrameError`` with a reason."""
        result = self.decode_or_reason(data)
        if isinstance(result, str):
            raise FrameError(result)
        return result


def decode(data: object) -> Frame:
    """Decode one frame occupying all of ``data``; raises ``FrameError`` with a reason."""
    return FrameDecoder().decode(data)


def peek_len(data: object) -> int:
    """Full length of the frame that starts ``data`` (for stream transports); needs the header."""
    buf = _as_buffer(data)
    out = _ffi.new("size_t *")
    rc = _lib.fg_peek_len(_ffi.from_buffer(buf), len(buf), out)
    if rc != 0:
        raise FrameError(REASONS[rc])
    return int(out[0])


def crc32(data: object) -> int:
    """CRC-32 (IEEE) as the frames use it; equal to ``zlib.crc32``."""
    buf = _as_buffer(data)
    return int(_lib.fg_crc32(_ffi.from_buffer(buf), len(buf)))
