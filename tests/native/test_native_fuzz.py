"""Garbage on every entry point of the native Python face: always an error from the tree, never a
crash, never a silent result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from native import mask, packing, quant
from native.errors import FedgateError, InputError, InputTypeError, ResourceError

SEED = b"\x07" * 32


def _arrays() -> st.SearchStrategy[Any]:
    """Arrays that are wrong in some way for a uint16/uint32/float32 parameter, plus non-arrays."""
    base = st.sampled_from(
        [
            np.zeros(8, np.float64),
            np.zeros(8, np.int32),
            np.zeros(8, np.uint8),
            np.zeros(8, np.int64),
            np.zeros(8, ">u4"),
            np.zeros(8, ">u2"),
            np.zeros(8, ">f4"),
            np.zeros((2, 4), np.uint32),
            np.zeros((2, 4), np.float32),
            np.zeros(16, np.uint32)[::2],
            np.zeros(16, np.uint16)[::2],
            np.zeros(16, np.float32)[::2],
            np.frombuffer(b"\x00" * 33, np.uint8)[1:].view(np.uint32),  # misaligned read-only
            np.array(3, np.uint32),
            np.zeros(8, object),
        ]
    )
    others = st.one_of(
        st.none(),
        st.integers(),
        st.text(max_size=4),
        st.binary(max_size=8),
        st.lists(st.integers(), max_size=4),
    )
    return st.one_of(base, others)


def _read_only(dtype: Any, n: int = 8) -> np.ndarray[Any, Any]:
    a = np.zeros(n, dtype)
    a.flags.writeable = False
    return a


def _bad_bits() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from([0, 33, -1, 64, 2**40, -(2**63)]),
        st.sampled_from([8.0, "8", None, b"8", True, [8]]),
    )


def _bad_seed() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.binary(max_size=31),
        st.binary(min_size=33, max_size=64),
        st.text(min_size=32, max_size=32),
        st.sampled_from([None, 0, bytearray(32), memoryview(bytes(32)), [0] * 32]),
    )


def _bad_n() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=2**31 + 1, max_value=2**80),
        st.sampled_from([1.5, "10", None, b"1", True]),
    )


def _raises(fn: Callable[[], object]) -> FedgateError:
    with pytest.raises(FedgateError) as info:
        fn()
    return info.value


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(seed=_bad_seed(), n=st.integers(0, 100), bits=st.integers(1, 32))
def test_expand_bad_seed(seed: Any, n: int, bits: int) -> None:
    _raises(lambda: mask.expand(seed, n, bits))


@FUZZ
@given(n=_bad_n(), bits=st.integers(1, 32))
def test_expand_bad_n(n: Any, bits: int) -> None:
    err = _raises(lambda: mask.expand(SEED, n, bits))
    if isinstance(n, int) and not isinstance(n, bool) and n > 2**31:
        assert isinstance(err, ResourceError)


@FUZZ
@given(bits=_bad_bits())
def test_bad_bits_everywhere(bits: Any) -> None:
    x = np.zeros(4, np.float32)
    acc = np.zeros(4, np.uint32)
    for call in (
        lambda: mask.expand(SEED, 4, bits),
        lambda: mask.ring_dtype(bits),
        lambda: mask.add_masks(acc, [SEED], bits),
        lambda: mask.subtract_masks(acc, [SEED], bits),
        lambda: mask.apply_masks(acc, [SEED], [], bits),
        lambda: mask.ring_add(acc, acc, bits),
        lambda: mask.ring_sub(acc, acc, bits),
        lambda: mask.ring_sum([acc], bits),
        lambda: quant.quantize(x, 1.0, bits, SEED),
        lambda: quant.quantize(x, 1.0, 8, SEED, ring_bits=0 if bits is None else bits),
        lambda: quant.dequantize(acc, 1, 1.0, bits),
        lambda: quant.ring_bits_for(bits, 10),
        lambda: packing.pack(acc, bits),
        lambda: packing.unpack(b"", 0, bits),
        lambda: packing.packed_size(4, bits),
    ):
        _raises(call)


@FUZZ
@given(acc=_arrays(), bits=st.sampled_from([8, 16, 20, 32]))
def test_mask_ops_bad_arrays(acc: Any, bits: int) -> None:
    good = np.zeros(8, mask.ring_dtype(bits))
    _raises(lambda: mask.add_masks(acc, [SEED], bits))
    _raises(lambda: mask.apply_masks(acc, [], [SEED], bits))
    _raises(lambda: mask.ring_add(acc, good, bits))
    _raises(lambda: mask.ring_sub(good.copy(), acc, bits))
    _raises(lambda: mask.ring_sum([good, acc], bits))
    if not (isinstance(acc, np.ndarray) and acc.ndim == 2 and acc.dtype == good.dtype):
        _raises(lambda: mask.ring_sum(acc, bits))
    _raises(lambda: packing.pack(acc, bits))
    _raises(lambda: quant.dequantize(acc, 1, 1.0, 8))


@FUZZ
@given(x=_arrays())
def test_quant_bad_arrays(x: Any) -> None:
    _raises(lambda: quant.l2_norm(x))
    _raises(lambda: quant.clip_l2(x, 1.0))
    _raises(lambda: quant.quantize(x, 1.0, 8, SEED))


def test_read_only_outputs_are_refused() -> None:
    for bits, dtype in ((8, np.uint16), (24, np.uint32)):
        ro = _read_only(dtype)
        with pytest.raises(InputTypeError):
            mask.add_masks(ro, [SEED], bits)
        with pytest.raises(InputTypeError):
            mask.ring_add(ro, np.zeros(8, dtype), bits)
        assert not ro.any()
    # read-only inputs are fine where nothing is written
    mask.ring_add(np.zeros(8, np.uint16), _read_only(np.uint16), 8)
    quant.quantize(_read_only(np.float32), 1.0, 8, SEED)


@FUZZ
@given(
    seeds=st.one_of(
        _bad_seed().map(lambda s: [SEED, s]), st.sampled_from([SEED, "x", None, 5, b""])
    )
)
def test_bad_seed_lists(seeds: Any) -> None:
    acc = np.zeros(8, np.uint16)
    _raises(lambda: mask.add_masks(acc, seeds, 8))
    _raises(lambda: mask.apply_masks(acc, [SEED], seeds, 8))
    assert not acc.any()  # nothing was applied before the refusal


def test_length_mismatches() -> None:
    with pytest.raises(InputError):
        mask.ring_add(np.zeros(8, np.uint16), np.zeros(9, np.uint16), 8)
    with pytest.raises(InputError):
        mask.ring_sum([np.zeros(8, np.uint16), np.zeros(7, np.uint16)], 8)
    with pytest.raises(InputError):
        mask.ring_sum(np.zeros((2, 2, 2), np.uint16), 8)


@FUZZ
@given(
    clip=st.one_of(st.sampled_from([0.0, -1.0, float("nan"), float("inf"), -0.0, None, "1", True])),
)
def test_bad_clip_and_norm(clip: Any) -> None:
    x = np.ones(4, np.float32)
    _raises(lambda: quant.quantize(x, clip, 8, SEED))
    _raises(lambda: quant.clip_l2(x, clip))
    _raises(lambda: quant.dequantize(np.zeros(4, np.uint16), 1, clip, 8))


@FUZZ
@given(
    count=st.one_of(
        st.integers(max_value=0),
        st.integers(min_value=(2**32 - 1) // 255 + 1),
        st.sampled_from([1.0, None, "2"]),
    )
)
def test_bad_counts(count: Any) -> None:
    _raises(lambda: quant.dequantize(np.zeros(4, np.uint32), count, 1.0, 8))
    _raises(lambda: quant.ring_bits_for(8, count))


@FUZZ
@given(
    data=st.one_of(st.binary(max_size=40), st.text(max_size=4), st.none(), st.integers()),
    n=st.integers(0, 40),
    bits=st.integers(1, 32),
)
def test_unpack_garbage(data: Any, n: int, bits: int) -> None:
    try:
        out = packing.unpack(data, n, bits)
    except FedgateError:
        return
    # accepted only when it is the canonical encoding of what came out
    assert isinstance(data, bytes) and packing.pack(out, bits) == data


def test_unpack_non_contiguous_memoryview_and_huge_n() -> None:
    with pytest.raises(InputTypeError):
        packing.unpack(memoryview(bytes(16))[::2], 8, 8)
    with pytest.raises(ResourceError):
        packing.unpack(b"", 2**40, 8)
    with pytest.raises(ResourceError):
        packing.packed_size(2**40, 8)


def test_keystream_helper_garbage() -> None:
    for args in (
        (b"k" * 31, b"n" * 12, 0, 1),
        ("k" * 32, b"n" * 12, 0, 1),
        (b"k" * 32, b"n" * 11, 0, 1),
        (b"k" * 32, "n" * 12, 0, 1),
        (b"k" * 32, b"n" * 12, -1, 1),
        (b"k" * 32, b"n" * 12, 2**32, 1),
        (b"k" * 32, b"n" * 12, 0, -1),
        (b"k" * 32, b"n" * 12, 0, 2**40),
        (b"k" * 32, b"n" * 12, 0.0, 1),
    ):
        with pytest.raises(FedgateError):
            mask.chacha20_keystream(*args)


def test_core_bindings_refuse_what_the_face_would_have_caught() -> None:
    """The private bindings have no policy, but a bad buffer still never reaches the kernels."""
    from native import _core

    u16, u32, f32 = np.zeros(8, np.uint16), np.zeros(8, np.uint32), np.zeros(8, np.float32)
    ro = _read_only(np.uint32)
    calls: list[Callable[[], object]] = [
        lambda: _core.expand(b"x" * 31, 8, u32),
        lambda: _core.expand("x" * 32, 8, u32),
        lambda: _core.expand(SEED, 8, np.zeros(8, np.int32)),
        lambda: _core.expand(SEED, 8, np.zeros(16, np.uint32)[::2]),
        lambda: _core.expand(SEED, 8, ro),
        lambda: _core.expand(SEED, 8, np.zeros((2, 4), np.uint32)),
        lambda: _core.expand(SEED, 8, np.zeros(33, np.uint8)[1:].view(np.uint32)),
        lambda: _core.ring_sum([np.zeros(33, np.uint8)[1:].view(np.uint32)], u32, 8),
        lambda: _core.expand(SEED, 17, u16),
        lambda: _core.expand(SEED, 0, u32),
        lambda: _core.expand(SEED, -1, u32),
        lambda: _core.apply_masks(u32, [SEED, b"short"], [], 8),
        lambda: _core.apply_masks(u32, [SEED], 5, 8),
        lambda: _core.ring_add(u32, np.zeros(9, np.uint32), 8),
        lambda: _core.ring_add(u32, u16, 8),
        lambda: _core.ring_sum([u32, np.zeros(9, np.uint32)], np.zeros(8, np.uint32), 8),
        lambda: _core.ring_sum([u32, u16], np.zeros(8, np.uint32), 8),
        lambda: _core.ring_sum([u32], np.zeros(8, np.uint32), 33),
        lambda: _core.quantize(f32, 1.0, 17, SEED, u16),
        lambda: _core.quantize(f32, 0.0, 8, SEED, u16),
        lambda: _core.quantize(f32, float("nan"), 8, SEED, u16),
        lambda: _core.quantize(f32, 1e-300, 32, SEED, u32),
        lambda: _core.quantize(f32, 1e308, 8, SEED, u16),
        lambda: _core.quantize(f32, 1.0, 8, SEED, np.zeros(7, np.uint16)),
        lambda: _core.quantize(np.zeros(8, np.float64), 1.0, 8, SEED, u16),
        lambda: _core.dequantize(u32, 0, 1.0, 8, f32),
        lambda: _core.dequantize(u32, 2**32, 1.0, 8, f32),
        lambda: _core.dequantize(u32, 1, 1.0, 8, np.zeros(9, np.float32)),
        lambda: _core.clip_l2(f32, np.zeros(9, np.float32), 1.0),
        lambda: _core.clip_l2(f32, np.zeros(8, np.float32), 0.0),
        lambda: _core.pack(u16, 17),
        lambda: _core.pack(u16, 0),
        lambda: _core.unpack(b"\x00" * 3, 8, u16),
        lambda: _core.unpack(memoryview(np.zeros(4, np.uint16)), 8, u16),
        lambda: _core.chacha20_keystream(SEED, b"n" * 12, 2**32 - 1, 65),
        lambda: _core.chacha20_keystream(SEED, b"n" * 11, 0, 1),
    ]
    for i, call in enumerate(calls):
        with pytest.raises((TypeError, ValueError)):
            call()
            pytest.fail(f"call {i} was accepted")
    assert not u32.any() and not ro.any()
