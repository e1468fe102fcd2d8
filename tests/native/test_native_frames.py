"""The shared C frame codec through native.frames: round trips, golden bytes, and garbage."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from native import frames as F
from native.errors import InputError, InputTypeError, WireError


def _frame(**over: object) -> F.Frame:
    base: dict[str, object] = dict(
        device_id=0x01020304, seq=5, t_us=1_000_000, sensor=F.Sensor.ECG,
        samples=np.arange(-3, 3, dtype=np.int16).reshape(6, 1), first_sample=450,
        sample_rate_hz=360, annotations=(F.Annotation(2, "N"), F.Annotation(5, "V", 1)),
        battery_pct=80, battery_mv=3900, flags=F.Flag.BUFFERED)
    base.update(over)
    return F.Frame(**base)  # type: ignore[arg-type]


def _patch(frame: bytes, offset: int, value: bytes) -> bytes:
    """Overwrite bytes and repair the CRC, to reach the checks that sit behind it."""
    buf = bytearray(frame)
    buf[offset:offset + len(value)] = value
    buf[-4:] = zlib.crc32(bytes(buf[:-4])).to_bytes(4, "little")
    return bytes(buf)


def _reason(data: bytes) -> str:
    with pytest.raises(F.FrameError) as info:
        F.decode(data)
    assert isinstance(info.value, WireError)
    return info.value.reason


def test_golden_bytes_pin_the_layout() -> None:
    data = F.encode(_frame())
    assert data.hex() == (
        "4647010120010600680102503c0f1400040302010500000040420f0000000000c2010000"
        "fdfffeffffff000001000200" "02004e0005005601" "a0d8f1b7")
    header = data[:36]
    assert header[:2] == b"FG" and header[2] == F.VERSION and header[3] == F.Sensor.ECG
    assert header[4] == F.Flag.BUFFERED and header[5] == 1
    assert int.from_bytes(header[6:8], "little") == 6
    assert int.from_bytes(header[8:10], "little") == 360
    assert header[10] == 2 and header[11] == 80
    assert int.from_bytes(header[12:14], "little") == 3900
    assert int.from_bytes(header[14:16], "little") == 6 * 2 + 2 * 4
    assert int.from_bytes(header[16:20], "little") == 0x01020304
    assert int.from_bytes(header[20:24], "little") == 5
    assert int.from_bytes(header[24:32], "little") == 1_000_000
    assert int.from_bytes(header[32:36], "little") == 450
    payload = data[36:-4]
    assert np.array_equal(np.frombuffer(payload[:12], "<i2"), np.arange(-3, 3))
    assert payload[12:] == bytes([2, 0, ord("N"), 0, 5, 0, ord("V"), 1])
    assert int.from_bytes(data[-4:], "little") == zlib.crc32(data[:-4])
    assert len(data) == F.HEADER_LEN + 20 + F.CRC_LEN


def test_crc_matches_zlib_known_answer() -> None:
    assert F.crc32(b"123456789") == 0xCBF43926
    assert F.crc32(b"") == 0


@given(st.binary(max_size=512))
def test_crc_matches_zlib(data: bytes) -> None:
    assert F.crc32(data) == zlib.crc32(data)


_ann = st.tuples(st.integers(0, 65535), st.characters(min_codepoint=1, max_codepoint=255),
                 st.integers(0, 255))


@st.composite
def frames(draw: st.DrawFn) -> F.Frame:
    sensor = draw(st.sampled_from(list(F.Sensor)))
    if sensor == F.Sensor.STATUS:
        return F.Frame(device_id=draw(st.integers(0, 2**32 - 1)),
                       seq=draw(st.integers(0, 2**32 - 1)),
                       t_us=draw(st.integers(0, 2**64 - 1)), sensor=sensor,
                       flags=F.Flag(draw(st.integers(0, 0x3F))))
    ch = draw(st.integers(1, F.MAX_CHANNELS))
    n = draw(st.integers(1, F.MAX_VALUES // ch))
    values = draw(st.lists(st.integers(-32768, 32767), min_size=n * ch, max_size=n * ch))
    anns = draw(st.lists(_ann, max_size=F.MAX_ANNOTATIONS))
    return F.Frame(
        device_id=draw(st.integers(0, 2**32 - 1)), seq=draw(st.integers(0, 2**32 - 1)),
        t_us=draw(st.integers(0, 2**64 - 1)), sensor=sensor,
        samples=np.array(values, dtype=np.int16).reshape(n, ch),
        first_sample=draw(st.integers(0, 2**32 - 1)),
        sample_rate_hz=draw(st.integers(1, F.MAX_RATE_HZ)),
        flags=F.Flag(draw(st.integers(0, 0x3F))),
        annotations=tuple(F.Annotation(o % n, lb, a) for o, lb, a in anns),
        battery_pct=draw(st.integers(0, 255)), battery_mv=draw(st.integers(0, 65535)))


@settings(max_examples=200, deadline=None)
@given(frames())
def test_round_trip(frame: F.Frame) -> None:
    data = F.encode(frame)
    assert F.peek_len(data) == len(data)
    back = F.decode(data)
    assert np.array_equal(back.samples, frame.samples)
    for name in ("device_id", "seq", "t_us", "sensor", "first_sample", "flags", "annotations",
                 "battery_pct", "battery_mv"):
        assert getattr(back, name) == getattr(frame, name), name
    if frame.sensor != F.Sensor.STATUS:
        assert back.sample_rate_hz == frame.sample_rate_hz
    assert not back.samples.flags.writeable


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2 * F.MAX_FRAME))
def test_random_bytes_are_rejected_with_a_reason(data: bytes) -> None:
    result = F.FrameDecoder().decode_or_reason(data)
    assert isinstance(result, str) and result in F.REASONS[1:]


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=F.HEADER_LEN, max_size=F.MAX_FRAME))
def test_random_body_behind_a_valid_magic_is_rejected(body: bytes) -> None:
    data = b"FG\x01" + body[3:]
    assert F.FrameDecoder().decode_or_reason(data) in F.REASONS[1:]


def test_every_truncation_is_short() -> None:
    data = F.encode(_frame())
    dec = F.FrameDecoder()
    assert {dec.decode_or_reason(data[:n]) for n in range(len(data))} == {"short"}


def test_every_single_bit_flip_is_rejected() -> None:
    data = F.encode(_frame())
    dec = F.FrameDecoder()
    reasons = set()
    for bit in range(len(data) * 8):
        buf = bytearray(data)
        buf[bit // 8] ^= 1 << (bit % 8)
        result = dec.decode_or_reason(bytes(buf))
        assert isinstance(result, str), f"bit {bit} flipped and the frame was accepted"
        reasons.add(result)
    assert "crc" in reasons and "magic" in reasons and "version" in reasons


@pytest.mark.parametrize(("offset", "value", "reason"), [
    (6, (0xFFFF).to_bytes(2, "little"), "length"),       # n_samples far over the limit
    (14, (0xFFFF).to_bytes(2, "little"), "length"),      # payload length over the limit
    (14, (21).to_bytes(2, "little"), "length"),          # payload length inconsistent
    (5, bytes([9]), "length"),                           # too many channels
    (10, bytes([200]), "length"),                        # too many annotations
    (3, bytes([9]), "sensor"),
    (4, bytes([0x80]), "flags"),
    (8, (0).to_bytes(2, "little"), "rate"),
    (8, (20000).to_bytes(2, "little"), "rate"),
    (36 + 12, (6).to_bytes(2, "little"), "annotation"),  # annotation past the last sample
    (36 + 14, bytes([0]), "annotation"),                 # label 0 means "no marker"
])
def test_field_checks_behind_the_crc(offset: int, value: bytes, reason: str) -> None:
    assert _reason(_patch(F.encode(_frame()), offset, value)) == reason


def test_trailing_bytes_and_peek() -> None:
    data = F.encode(_frame())
    assert _reason(data + b"\x00") == "trailing"
    assert F.peek_len(data + b"garbage after") == len(data)
    with pytest.raises(F.FrameError):
        F.peek_len(b"FG\x01")
    with pytest.raises(F.FrameError):
        F.peek_len(b"XX" + data[2:])


def test_non_bytes_input_is_a_type_error() -> None:
    for bad in (None, "FG", 12, [1, 2], np.zeros(40, dtype=np.uint8)):
        with pytest.raises(InputTypeError):
            F.decode(bad)
    with pytest.raises(InputTypeError):
        F.decode(memoryview(bytes(80))[::2])


def test_encode_refuses_bad_fields() -> None:
    with pytest.raises(InputTypeError):
        F.encode("frame")  # type: ignore[arg-type]
    with pytest.raises(InputTypeError):
        F.encode(_frame(samples=np.zeros((4, 1), dtype=np.float32)))
    with pytest.raises(InputError):
        F.encode(_frame(samples=np.zeros((F.MAX_VALUES + 1, 1), dtype=np.int16), annotations=()))
    with pytest.raises(InputError):
        F.encode(_frame(device_id=-1))
    with pytest.raises(InputError):
        F.encode(_frame(seq=2**32))
    with pytest.raises(InputTypeError):
        F.encode(_frame(seq=1.5))
    with pytest.raises(InputError):
        F.encode(_frame(annotations=(F.Annotation(6, "N"),)))
    with pytest.raises(InputTypeError):
        F.encode(_frame(annotations=(F.Annotation(1, "NN"),)))
    with pytest.raises(InputError):
        F.encode(_frame(sensor=F.Sensor.STATUS))
    with pytest.raises(InputError):
        F.encode(_frame(sample_rate_hz=0))
    with pytest.raises(InputError):
        F.encode(_frame(flags=0x80))


def test_mutable_buffers_do_not_alias_the_samples() -> None:
    data = bytearray(F.encode(_frame()))
    frame = F.decode(data)
    view = F.decode(memoryview(bytes(data)))
    data[36:48] = bytes(12)
    assert np.array_equal(frame.samples[:, 0], np.arange(-3, 3))
    assert np.array_equal(view.samples, frame.samples)
    assert not frame.samples.flags.writeable
