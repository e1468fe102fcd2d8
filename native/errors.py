"""The one error tree of fedgate.

Every failure the project raises on purpose is a ``FedgateError``. Errors that are also a bad
argument value or type inherit from ``ValueError`` / ``TypeError`` too, so callers that only know
the built-in contract still catch them.
"""

from __future__ import annotations


class FedgateError(Exception):
    """Base of every error fedgate raises on purpose."""


class InputError(FedgateError, ValueError):
    """An argument has the right type but a value fedgate refuses (range, length, shape)."""


class InputTypeError(FedgateError, TypeError):
    """An argument has the wrong type, dtype, memory layout or writability."""


class WireError(FedgateError, ValueError):
    """Bytes from the network or a file do not decode to a valid message."""


class ProtocolError(FedgateError):
    """A well-formed message arrived at the wrong time, from the wrong party, or breaks a rule."""


class IntegrityError(FedgateError):
    """A signature, hash or manifest does not verify."""


class NativeError(FedgateError):
    """The C++ core refused an operation (allocation failure, internal invariant)."""


class ResourceError(NativeError, MemoryError):
    """A requested size cannot be allocated or exceeds a configured limit."""


class TransportError(FedgateError, ConnectionError):
    """The message broker could not be reached or refused the connection."""


class ConfigError(FedgateError, ValueError):
    """A configuration file, flag or environment variable is invalid."""


class TrainingError(FedgateError):
    """Local training could not run (bad artifacts, bad parameters, NaN/Inf in data)."""


class StageError(ProtocolError):
    """A protocol message arrived in a stage that does not accept it."""

    def __init__(self, expected: str, arrived: str) -> None:
        super().__init__(f"expected {expected}, but {arrived} arrived")
        self.expected = expected
        self.arrived = arrived


class UnknownSenderError(ProtocolError):
    """A message came from a sender that is not enrolled in, or not part of, this round."""


class ReplayError(ProtocolError):
    """A message belongs to another round (a replay or a stale retransmission)."""


class DuplicateError(ProtocolError):
    """A sender sent a second message for a stage it already completed."""


class MisaddressedError(ProtocolError):
    """Shares or a request are addressed to a participant they must not reach."""


class RoundAbortedError(ProtocolError):
    """A secure-aggregation round cannot continue (too few participants, refused request)."""
