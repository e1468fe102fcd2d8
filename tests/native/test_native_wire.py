"""The secure-aggregation wire format: round trips, golden bytes, limits, garbage into decode."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct

import nacl.signing
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from native import packing, wire
from native.errors import FedgateError, IntegrityError, WireError

KEY = nacl.signing.SigningKey(bytes(32))
RID = bytes(range(16))
GOLDEN_SIG_PREFIX = "879be7f8df301f3f"


def _config(n: int = 4, degree: int = 3) -> wire.RoundConfig:
    parts = tuple(wire.Participant(p, bytes([p]) * 32) for p in range(1, n + 1))
    return wire.RoundConfig(degree, 3, 8, 16, 1, 1.5, 1000, b"\x07" * 32, parts)


def _sealed(peer: int) -> wire.SealedShare:
    return wire.SealedShare(peer, bytes([peer]) * wire.SEALED_SHARE_BYTES)


SAMPLES: list[wire.Message] = [
    _config(),
    wire.AdvertiseKeys(b"a" * 32, b"b" * 32),
    wire.KeyList(
        (
            wire.KeyEntry(1, b"m" * 32, b"e" * 32, b"s" * 64),
            wire.KeyEntry(2, b"n" * 32, b"f" * 32, b"t" * 64),
        )
    ),
    wire.ShareKeys((_sealed(2), _sealed(3))),
    wire.SharesRelay(5, (_sealed(1),)),
    wire.MaskedInput(12, 5, bytes(8)),
    wire.UnmaskRequest((1, 2, 3), (4,)),
    wire.UnmaskShares(((1, b"x" * 40),), ((4, b"y" * 40), (5, b"z" * 40))),
    wire.RoundResult(1, (), "too few masked inputs"),
    wire.RoundResult(0, (1, 2, 3), ""),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip_and_signature(msg: wire.Message) -> None:
    data = wire.encode(msg, RID, 7, KEY)
    env = wire.decode(data)
    assert env.message == msg and env.round_id == RID and env.sender == 7
    assert env.version == wire.WIRE_VERSION
    env.verify(bytes(KEY.verify_key))
    with pytest.raises(IntegrityError):
        env.verify(bytes(nacl.signing.SigningKey.generate().verify_key))


def test_golden_header_bytes() -> None:
    data = wire.encode(wire.AdvertiseKeys(b"a" * 32, b"b" * 32), RID, 0x01020304, KEY)
    assert data[:32].hex() == ("4647534102000200" + RID.hex() + "0403020140000000")
    assert data[32:96] == b"a" * 32 + b"b" * 32
    assert len(data) == 32 + 64 + 64
    # Ed25519 over SHA-256(header || body); Ed25519 is deterministic, so this never changes.
    digest = hashlib.sha256(data[:96]).digest()
    assert data[96:] == KEY.sign(digest).signature
    assert data[96:].hex()[:16] == GOLDEN_SIG_PREFIX


def test_config_body_layout() -> None:
    body = wire.encode(_config(), RID, 0, KEY)[32:-64]
    head = struct.unpack_from("<IIIBBHIdI32sI32s", body)
    assert head == (4, 3, 3, 8, 16, 0, 1, 1.5, 1000, b"\x07" * 32, 0, bytes(32))
    assert struct.calcsize("<IIIBBHIdI32sI32s") == 100
    assert body[100:136] == struct.pack("<I", 1) + b"\x01" * 32
    assert body[-1:] == b"\x00" and len(body) == 100 + 4 * 36 + 1  # no DP block


def test_config_names_its_base_model() -> None:
    cfg = dataclasses.replace(_config(), model_version=7, model_sha256=b"\x09" * 32)
    body = wire.encode(cfg, RID, 0, KEY)[32:-64]
    assert body[64:100] == struct.pack("<I", 7) + b"\x09" * 32
    assert wire.decode(wire.encode(cfg, RID, 0, KEY)).message == cfg
    for bad in (dict(model_version=7), dict(model_sha256=b"\x09" * 32),
                dict(model_version=-1, model_sha256=b"\x09" * 32),
                dict(model_version=1, model_sha256=b"short")):
        with pytest.raises(WireError):
            dataclasses.replace(_config(), **bad).validate()  # type: ignore[arg-type]


def test_advertise_signed_bytes_match_message() -> None:
    data = wire.encode(wire.AdvertiseKeys(b"a" * 32, b"b" * 32), RID, 9, KEY)
    assert wire.advertise_signed_bytes(RID, 9, b"a" * 32, b"b" * 32) == data[:-64]
    entry = wire.KeyEntry(9, b"a" * 32, b"b" * 32, data[-64:])
    wire.verify_key_entry(RID, entry, bytes(KEY.verify_key))
    with pytest.raises(IntegrityError):
        wire.verify_key_entry(bytes(16), entry, bytes(KEY.verify_key))


@settings(max_examples=60, deadline=None)
@given(
    survivors=st.lists(st.integers(0, 2**32 - 1), max_size=50),
    dropped=st.lists(st.integers(0, 2**32 - 1), max_size=50),
    sender=st.integers(0, 2**32 - 1),
    count=st.integers(0, 300),
    bits=st.integers(1, 32),
)
def test_round_trip_property(
    survivors: list[int], dropped: list[int], sender: int, count: int, bits: int
) -> None:
    for msg in (
        wire.UnmaskRequest(tuple(survivors), tuple(dropped)),
        wire.MaskedInput(bits, count, os.urandom((count * bits + 7) // 8)),
        wire.RoundResult(0, tuple(survivors), "ok ✓"),
    ):
        assert wire.decode(wire.encode(msg, RID, sender, KEY)).message == msg


def _garbage_outcome(data: bytes) -> None:
    try:
        env = wire.decode(data)
    except WireError:
        return
    with pytest.raises(IntegrityError):
        env.verify(bytes(KEY.verify_key))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400))
def test_random_bytes_never_crash(data: bytes) -> None:
    with pytest.raises(WireError):
        wire.decode(data)


@settings(max_examples=300, deadline=None)
@given(
    which=st.sampled_from(range(len(SAMPLES))),
    tail=st.binary(max_size=300),
    cut=st.integers(0, 2000),
)
def test_valid_header_garbage_body(which: int, tail: bytes, cut: int) -> None:
    good = wire.encode(SAMPLES[which], RID, 3, KEY)
    # Same header type, random body with a consistent length field: must fail cleanly.
    header = bytearray(good[:32])
    header[28:32] = struct.pack("<I", len(tail))
    _garbage_outcome(bytes(header) + tail + bytes(64))
    _garbage_outcome(good[: min(cut, len(good) - 1)])


@pytest.mark.parametrize("which", range(len(SAMPLES)))
def test_every_single_byte_flip_is_caught(which: int) -> None:
    good = wire.encode(SAMPLES[which], RID, 3, KEY)
    for pos in range(0, len(good), max(1, len(good) // 97)):
        bad = bytearray(good)
        bad[pos] ^= 0x41
        _garbage_outcome(bytes(bad))


def test_huge_counts_rejected_before_allocation() -> None:
    for kind in (wire.MsgType.KEY_LIST, wire.MsgType.SHARE_KEYS, wire.MsgType.UNMASK_REQUEST):
        body = struct.pack("<I", 0xFFFFFFFF) + bytes(8)
        data = wire.HEADER.pack(wire.MAGIC, 1, kind, RID, 1, len(body)) + body + bytes(64)
        with pytest.raises(WireError):
            wire.decode(data)
    body = struct.pack("<BBHI", 32, 0, 0, 2**31) + bytes(4)
    data = wire.HEADER.pack(wire.MAGIC, 1, wire.MsgType.MASKED_INPUT, RID, 1, len(body)) + body
    with pytest.raises(WireError):
        wire.decode(data + bytes(64))


def test_version_magic_type_and_length_checks() -> None:
    good = bytearray(wire.encode(SAMPLES[1], RID, 3, KEY))
    for offset, value, match in [
        (4, 1, "version"),  # a version-1 message is refused, not misread
        (4, 3, "version"),
        (0, 0x58, "magic"),
        (6, 99, "type"),
        (28, 0x41, "length"),
    ]:
        bad = bytearray(good)
        bad[offset] = value
        with pytest.raises(WireError, match=match):
            wire.decode(bytes(bad))
    with pytest.raises(WireError):
        wire.decode(bytes(good) + b"\x00")
    with pytest.raises(WireError):
        wire.decode("not bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "cfg",
    [
        _config(degree=1),  # degree must be n - 1 or even in 2 .. n - 2
        wire.RoundConfig(3, 5, 8, 16, 1, 1.0, 10, bytes(32), _config().participants),
        wire.RoundConfig(3, 3, 8, 9, 1, 1.0, 10, bytes(32), _config().participants),
        wire.RoundConfig(3, 3, 8, 16, 1, float("nan"), 10, bytes(32), _config().participants),
        wire.RoundConfig(3, 3, 8, 16, 1, 1.0, 0, bytes(32), _config().participants),
        wire.RoundConfig(
            3,
            3,
            8,
            16,
            1,
            1.0,
            10,
            bytes(32),
            (*_config().participants[:3], wire.Participant(3, b"z" * 32)),
        ),
    ],
)
def test_invalid_round_configs_rejected_on_decode(cfg: wire.RoundConfig) -> None:
    with pytest.raises(WireError):
        wire.decode(wire.encode(cfg, RID, 0, KEY))


def test_encode_rejects_bad_fields() -> None:
    with pytest.raises(WireError):
        wire.encode(wire.AdvertiseKeys(b"a" * 31, b"b" * 32), RID, 1, KEY)
    with pytest.raises(WireError):
        wire.encode(wire.UnmaskRequest((2**32,), ()), RID, 1, KEY)
    with pytest.raises(WireError):
        wire.encode(SAMPLES[1], RID[:4], 1, KEY)
    with pytest.raises(WireError):
        wire.encode("nope", RID, 1, KEY)  # type: ignore[arg-type]


@pytest.mark.parametrize("bits", [5, 13, 16, 24, 32])
def test_ring_packing_matches_native_packing(bits: int) -> None:
    dtype = np.uint16 if bits <= 16 else np.uint32
    raw = np.frombuffer(os.urandom(4 * 999), np.uint32).astype(np.uint64)
    values = (raw % (1 << bits)).astype(dtype)
    packed = wire.pack_ring(values, bits)
    assert packed == packing.pack(values, bits)
    msg = wire.MaskedInput.of(values, bits)
    back = wire.decode(wire.encode(msg, RID, 1, KEY)).message
    assert isinstance(back, wire.MaskedInput)
    assert np.array_equal(back.values(), values) and back.values().dtype == dtype


def test_unpack_ring_checks_length() -> None:
    with pytest.raises(WireError):
        wire.unpack_ring(bytes(7), 4, 16)
    with pytest.raises(FedgateError):
        wire.unpack_ring(bytes(3), 4, 13)
