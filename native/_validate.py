"""Argument checks shared by the Python faces of the C++ kernels (mask, quant, packing).

Everything that crosses into ``native._core`` passes through here first: the C++ side takes numpy
buffers without copying, so a wrong dtype, layout or length must be refused before the call.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from native.errors import InputError, InputTypeError, NativeError, ResourceError

# Largest vector the kernels accept (elements). Far above any model a gateway trains, far below
# what would exhaust memory by accident; the ChaCha20 stream itself allows 2**36 uint32 words.
MAX_ELEMENTS = 2**31
MAX_SEEDS = 1 << 16
SEED_BYTES = 32
MIN_BITS = 1
MAX_BITS = 32

_T = TypeVar("_T")


def ring_dtype(bits: int) -> np.dtype[Any]:
    """The word type of Z_2^bits: uint16 for bits <= 16, else uint32."""
    bits = check_bits(bits)
    return np.dtype(np.uint16) if bits <= 16 else np.dtype(np.uint32)


def check_int(value: object, name: str) -> int:
    """An integer (Python or numpy), never a bool or a float."""
    if isinstance(value, bool | np.bool_):
        raise InputTypeError(f"{name} must be an integer, got a bool")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InputTypeError(f"{name} must be an integer, got {type(value).__name__}") from None


def check_bits(bits: object, name: str = "bits", lo: int = MIN_BITS, hi: int = MAX_BITS) -> int:
    """A ring or quantization width in lo..hi."""
    value = check_int(bits, name)
    if not lo <= value <= hi:
        raise InputError(f"{name} must be in {lo}..{hi}, got {value}")
    return value


def check_length(n: object, name: str = "n") -> int:
    """An element count in 0..MAX_ELEMENTS; larger counts are a ResourceError, not an attempt."""
    value = check_int(n, name)
    if value < 0:
        raise InputError(f"{name} must be >= 0, got {value}")
    if value > MAX_ELEMENTS:
        raise ResourceError(f"{name} = {value} exceeds the limit of {MAX_ELEMENTS} elements")
    return value


def check_positive_float(value: object, name: str) -> float:
    """A finite number > 0 (ints are accepted, bools are not)."""
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        raise InputTypeError(f"{name} must be a number, got {type(value).__name__}")
    out = float(value)
    if not (math.isfinite(out) and out > 0.0):
        raise InputError(f"{name} must be finite and > 0, got {out}")
    return out


def check_seed(seed: object, name: str = "seed") -> bytes:
    """Exactly 32 bytes of type bytes (a str or a truncated seed is refused, never padded)."""
    if not isinstance(seed, bytes):
        raise InputTypeError(f"{name} must be bytes, got {type(seed).__name__}")
    if len(seed) != SEED_BYTES:
        raise InputError(f"{name} must be exactly {SEED_BYTES} bytes, got {len(seed)}")
    return bytes(seed)


def check_seeds(seeds: object, name: str = "seeds") -> list[bytes]:
    """A list or tuple of seeds (a single bytes object is refused: it is a sequence of ints)."""
    if isinstance(seeds, bytes | bytearray | str) or not isinstance(seeds, Sequence):
        raise InputTypeError(f"{name} must be a list or tuple of 32-byte seeds")
    if len(seeds) > MAX_SEEDS:
        raise ResourceError(f"{len(seeds)} {name} exceed the limit of {MAX_SEEDS}")
    return [check_seed(s, f"{name}[{i}]") for i, s in enumerate(seeds)]


def check_array(
    a: object,
    name: str,
    dtypes: Sequence[np.dtype[Any]],
    *,
    writable: bool = False,
    ndim: int = 1,
) -> np.ndarray[Any, Any]:
    """A numpy array of one of ``dtypes`` (native byte order), C-contiguous, aligned, ``ndim``-D."""
    if not isinstance(a, np.ndarray):
        raise InputTypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if not any(a.dtype == d for d in dtypes):
        wanted = " or ".join(str(d) for d in dtypes)
        raise InputTypeError(f"{name} must have dtype {wanted}, got {a.dtype}")
    if a.ndim != ndim:
        raise InputError(f"{name} must be {ndim}-dimensional, got shape {a.shape}")
    if not (a.flags.c_contiguous and a.flags.aligned):
        raise InputTypeError(f"{name} must be C-contiguous and aligned (pass np.ascontiguousarray)")
    if writable and not a.flags.writeable:
        raise InputTypeError(f"{name} is read-only but is written in place")
    if a.size > MAX_ELEMENTS:
        raise ResourceError(f"{name} has {a.size} elements, over the limit of {MAX_ELEMENTS}")
    return a


def allocate(n: int, dtype: np.dtype[Any] | type[Any]) -> np.ndarray[Any, Any]:
    """An uninitialized output vector; an allocation failure is a ResourceError."""
    try:
        return np.empty(n, dtype=dtype)
    except MemoryError as exc:
        raise ResourceError(f"cannot allocate {n} elements of {np.dtype(dtype)}") from exc


def core_call(fn: Callable[..., _T], *args: object) -> _T:
    """Calls a ``_core`` kernel, mapping what C++ may still refuse onto the error tree."""
    try:
        return fn(*args)
    except MemoryError as exc:
        raise ResourceError(f"native {getattr(fn, '__name__', 'kernel')}: out of memory") from exc
    except (ValueError, TypeError, RuntimeError, IndexError, OverflowError) as exc:
        raise NativeError(f"native {getattr(fn, '__name__', 'kernel')} refused: {exc}") from exc
