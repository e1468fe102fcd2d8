"""Shared core of fedgate: everything gateway and aggregator must agree on bit for bit.

The C++ kernels live in the private ``native._core``; only the modules of this package import it,
and they validate every argument before it crosses into C++.
"""

from __future__ import annotations

from native.errors import (
    FedgateError,
    InputError,
    InputTypeError,
    IntegrityError,
    NativeError,
    ProtocolError,
    ResourceError,
    WireError,
)

__all__ = [
    "FedgateError",
    "InputError",
    "InputTypeError",
    "IntegrityError",
    "NativeError",
    "ProtocolError",
    "ResourceError",
    "WireError",
]
