"""The DP block of ROUND_CONFIG (wire version 2): layout, round trips, and garbage."""

from __future__ import annotations

import math
import struct
from fractions import Fraction

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from native import dp_params, round_noise, wire
from native.errors import WireError

KEY = nacl.signing.SigningKey(bytes(32))
RID = bytes(range(16))
NOISE = wire.RoundNoise("ddg", Fraction(3 * 10_000), 1.0, 25_000.0, 4)


def _config(noise: wire.RoundNoise | None = NOISE, *, ring_bits: int | None = None,
            max_weight: int = 1, n: int = 4) -> wire.RoundConfig:
    parts = tuple(wire.Participant(p, bytes([p]) * 32) for p in range(1, n + 1))
    if ring_bits is None:
        ring_bits = 16 if noise is None else dp_params.ring_bits_with_noise(
            12, n, noise.params(3, 1000))
    return wire.RoundConfig(n - 1, 3, 12, ring_bits, max_weight, 0.1, 1000, b"\x07" * 32, parts,
                            noise)


def _body(cfg: wire.RoundConfig) -> bytes:
    return wire.encode(cfg, RID, 0, KEY)[32:-64]


def test_dp_config_round_trips_and_pins_its_layout() -> None:
    cfg = _config()
    data = wire.encode(cfg, RID, 0, KEY)
    assert data[4:6] == b"\x02\x00"  # wire version 2
    env = wire.decode(data)
    assert env.message == cfg
    block = _body(cfg)[100 + 4 * 36:]
    assert len(block) == round_noise.BLOCK_BYTES == 40
    assert block == struct.pack("<BBHQQddI", 1, 0, 0, 30_000, 1, 1.0, 25_000.0, 4)
    assert cfg.masked_len == 1024 + 1 and _config(None).masked_len == 1000 + 1


def test_skellam_and_rational_variance_round_trip() -> None:
    noise = wire.RoundNoise("skellam", Fraction(7, 2), 0.5, 25_000.0, 6)
    cfg = _config(noise, n=6)
    assert wire.decode(wire.encode(cfg, RID, 0, KEY)).message == cfg


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-1], "noise block must be"),
        (lambda b: b + b"\x00", "noise block must be"),
        (lambda b: b"\x09" + b[1:], "unknown noise mechanism"),
        (lambda b: b[:1] + b"\x01" + b[2:], "reserved"),
        (lambda b: b[:4] + bytes(8) + b[12:], "positive fraction"),
        (lambda b: b[:12] + bytes(8) + b[20:], "positive fraction"),
        (lambda b: b[:20] + struct.pack("<d", math.nan) + b[28:], "l2_clip"),
        (lambda b: b[:28] + struct.pack("<d", -1.0) + b[36:], "l2_sensitivity"),
        (lambda b: b[:28] + struct.pack("<d", math.inf) + b[36:], "l2_sensitivity"),
        (lambda b: b[:36] + struct.pack("<I", 0), "max_participants"),
        (lambda b: b[:36] + struct.pack("<I", 3), "max_participants 3 < 4"),
        (lambda b: b[:4] + struct.pack("<Q", 2**60) + b[12:], "noise parameters invalid"),
        (lambda b: b[:4] + struct.pack("<QQ", 1, 8193) + b[20:], "noise parameters invalid"),
    ],
)
def test_garbage_in_the_noise_block_is_a_wire_error(mutate: object, message: str) -> None:
    data = wire.encode(_config(), RID, 0, KEY)
    head, body = data[:32], data[32:-64]
    cut = 100 + 4 * 36
    new_body = body[:cut] + mutate(body[cut:])  # type: ignore[operator]
    forged = head[:28] + struct.pack("<I", len(new_body)) + new_body + data[-64:]
    with pytest.raises(WireError, match=message):
        wire.decode(forged)


def test_round_without_noise_needs_exactly_one_zero_byte() -> None:
    data = wire.encode(_config(None), RID, 0, KEY)
    body = data[32:-64]
    for bad in (body[:-1], body + b"\x00", body[:-1] + b"\x00" * 2):
        forged = data[:28] + struct.pack("<I", len(bad)) + bad + data[-64:]
        with pytest.raises(WireError):
            wire.decode(forged)


def test_config_rules_that_tie_noise_to_the_round() -> None:
    with pytest.raises(WireError, match="unweighted"):
        _config(max_weight=2, ring_bits=32).validate()
    with pytest.raises(WireError, match="can wrap with this noise"):
        _config(ring_bits=14).validate()
    with pytest.raises(WireError, match="max_participants"):
        _config(wire.RoundNoise("ddg", Fraction(30_000), 1.0, 25_000.0, 3)).validate()
    with pytest.raises(WireError, match="mechanism"):
        round_noise.encode_block(wire.RoundNoise("gauss", Fraction(1), 1.0, 1.0, 4))
    with pytest.raises(WireError, match="Fraction"):
        round_noise.encode_block(wire.RoundNoise("ddg", 2.0, 1.0, 1.0, 4))  # type: ignore[arg-type]


def test_rotation_seed_is_bound_to_graph_seed_and_round() -> None:
    a = wire.rotation_seed(b"\x07" * 32, RID)
    assert len(a) == 32 and a == wire.rotation_seed(b"\x07" * 32, RID)
    assert a not in (wire.rotation_seed(b"\x08" * 32, RID), wire.rotation_seed(b"\x07" * 32,
                                                                               bytes(16)))
    with pytest.raises(WireError):
        wire.rotation_seed(b"short", RID)
    with pytest.raises(WireError):
        wire.rotation_seed(b"\x07" * 32, b"short")


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_as_a_noise_block_decode_or_raise_wire_error(block: bytes) -> None:
    try:
        noise = round_noise.decode_block(block)
    except WireError:
        return
    assert noise is None or round_noise.encode_block(noise) == block
