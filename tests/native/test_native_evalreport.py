"""The signed evaluation report: golden bytes, round trip, signature domain, and garbage."""

from __future__ import annotations

import contextlib
import math
import struct

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from native import evalreport
from native.errors import InputError, IntegrityError, WireError

SEED = bytes(range(32))


def sample() -> evalreport.EvalReport:
    return evalreport.EvalReport.of(7, "gw-0123456789abcdef", [[10, 1], [2, 3]], 4.5)


def test_golden_bytes_follow_the_documented_layout() -> None:
    data = evalreport.encode(sample())
    gid = b"gw-0123456789abcdef"
    expected = (b"FGEV" + struct.pack("<HBBIQd", 1, 2, len(gid), 7, 16, 4.5) + gid
                + struct.pack("<4Q", 10, 1, 2, 3))
    assert data == expected
    assert data.hex() == (
        "46474556010002130700000010000000000000000000000000001240"
        "67772d30313233343536373839616263646566"
        "0a000000000000000100000000000000020000000000000003000000"
        "00000000")
    assert evalreport.decode(data) == sample()


def test_signature_covers_the_domain_and_every_byte() -> None:
    key = nacl.signing.SigningKey(SEED)
    data, sig = evalreport.sign(key, sample())
    assert evalreport.verify(data, sig, bytes(key.verify_key)) == sample()
    # The same bytes signed without the domain, or another report, do not verify.
    bare = bytes(key.sign(data).signature)
    with pytest.raises(IntegrityError):
        evalreport.verify(data, bare, bytes(key.verify_key))
    flipped = bytearray(data)
    flipped[-1] ^= 1
    with pytest.raises(IntegrityError):
        evalreport.verify(bytes(flipped), sig, bytes(key.verify_key))
    other = nacl.signing.SigningKey.generate()
    with pytest.raises(IntegrityError):
        evalreport.verify(data, sig, bytes(other.verify_key))
    for bad_sig, bad_key in ((sig[:63], bytes(key.verify_key)), (sig, b"k" * 31)):
        with pytest.raises(WireError):
            evalreport.verify(data, bad_sig, bad_key)


@pytest.mark.parametrize("build", [
    lambda: evalreport.EvalReport.of(0, "gw-a", [[1]], 0.0),
    lambda: evalreport.EvalReport.of(2**31, "gw-a", [[1]], 0.0),
    lambda: evalreport.EvalReport.of(1, "", [[1]], 0.0),
    lambda: evalreport.EvalReport.of(1, "gw a", [[1]], 0.0),
    lambda: evalreport.EvalReport.of(1, "g" * 33, [[1]], 0.0),
    lambda: evalreport.EvalReport.of(1, "gw-a", [[1, 2]], 0.0),
    lambda: evalreport.EvalReport.of(1, "gw-a", [], 0.0),
    lambda: evalreport.EvalReport.of(1, "gw-a", [[-1, 2], [0, 1]], 0.0),
    lambda: evalreport.EvalReport.of(1, "gw-a", [[0, 0], [0, 0]], 0.0),
    lambda: evalreport.EvalReport.of(1, "gw-a", [[1.5]], 0.0),  # type: ignore[list-item]
    lambda: evalreport.EvalReport.of(1, "gw-a", [[True]], 0.0),
    lambda: evalreport.EvalReport.of(1, "gw-a", [[1]], math.nan),
    lambda: evalreport.EvalReport.of(1, "gw-a", [[1]], math.inf),
    lambda: evalreport.EvalReport.of(1, "gw-a", [[1]], -0.5),
    lambda: evalreport.EvalReport.of(1, "gw-a", [[1]], 2e6),
    lambda: evalreport.EvalReport.of(1, "gw-a", [[evalreport.MAX_SAMPLES + 1]], 0.0),
    lambda: evalreport.EvalReport(1, "gw-a", 2, 0.0, ((1,),)),
])
def test_garbage_reports_cannot_be_built(build: object) -> None:
    with pytest.raises(InputError):
        build()  # type: ignore[operator]


def _raw(k: int, samples: int, counts: list[int], loss: float = 1.0, gid: bytes = b"gw-a",
         version: int = 3, magic: bytes = b"FGEV", fmt: int = 1) -> bytes:
    return (magic + struct.pack("<HBBIQd", fmt, k, len(gid), version, samples, loss) + gid
            + struct.pack(f"<{len(counts)}Q", *counts))


@pytest.mark.parametrize(("data", "counts_error"), [
    (b"", False), (b"FGEV", False), (_raw(2, 4, [1, 1, 1, 1])[:-1], False),
    (_raw(2, 4, [1, 1, 1, 1]) + b"\x00", False), (_raw(1, 1, [1], magic=b"FGSA"), False),
    (_raw(1, 1, [1], fmt=2), False), (_raw(0, 0, []), False), (_raw(65, 1, [1]), False),
    (_raw(1, 1, [1], gid=b""), False), (_raw(1, 1, [1], gid=b"gw-\xff"), False),
    (_raw(1, 1, [1], gid=b"gw a"), False), (_raw(1, 1, [1], version=0), False),
    (_raw(2, 5, [1, 1, 1, 1]), True),  # counts do not add up
    (_raw(1, 2**63, [2**63]), True),  # a negative int64 read as unsigned: oversized
    (_raw(1, 2**64 - 1, [2**64 - 1]), True),
    (_raw(1, 1, [1], loss=math.nan), True), (_raw(1, 1, [1], loss=-math.inf), True),
    (_raw(1, 1, [1], loss=-1.0), True),
])
def test_garbage_bytes_are_wire_errors(data: bytes, counts_error: bool) -> None:
    with pytest.raises(WireError) as info:
        evalreport.decode(data)
    assert isinstance(info.value, evalreport.CountError) is counts_error


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoding_random_bytes_never_crashes(data: bytes) -> None:
    with contextlib.suppress(WireError):
        evalreport.decode(data)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6).flatmap(lambda k: st.lists(
    st.lists(st.integers(0, 10**6), min_size=k, max_size=k), min_size=k, max_size=k)),
    st.floats(0, 10, allow_nan=False), st.integers(1, 2**31 - 1))
def test_round_trip(confusion: list[list[int]], mean_loss: float, version: int) -> None:
    if sum(map(sum, confusion)) == 0:
        confusion[0][0] = 1
    rep = evalreport.EvalReport.of(version, "gw-x_Y-9", confusion,
                                   mean_loss * sum(map(sum, confusion)))
    assert evalreport.decode(evalreport.encode(rep)) == rep
