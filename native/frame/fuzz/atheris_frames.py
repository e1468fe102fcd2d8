"""atheris fuzzing of the cffi path: native.frames decoding and the gateway's Ingestor.feed.

Run from the repository root (see docs/firmware.md for the recorded runs):
    python native/frame/fuzz/atheris_frames.py -max_total_time=120 /tmp/frame_corpus_py
Every input is fed as is, and with its CRC repaired so the checks behind the CRC are reached too.
Any exception other than the documented outcome strings, or any crash, is a finding.
"""

from __future__ import annotations

import sys
import zlib

import atheris  # type: ignore[import-untyped,unused-ignore]

from edge_client.ingest import Ingestor
from edge_client.store import Store
from native import frames

# instrument_all rather than instrument_imports: the editable install loads the packages through
# a custom finder, which instrument_imports does not always see.
atheris.instrument_all()

_DECODER = frames.FrameDecoder()
_STORE = Store()
_INGEST = Ingestor(_STORE)
_OUTCOMES = set(frames.REASONS[1:]) | {"accepted", "duplicate", "late", "timestamp",
                                       "stream_mismatch"}


def _repair(data: bytes) -> bytes:
    if len(data) < 4:
        return data
    return data[:-4] + zlib.crc32(data[:-4]).to_bytes(4, "little")


def test_one_input(data: bytes) -> None:
    for blob in (data, _repair(data)):
        result = _DECODER.decode_or_reason(blob)
        if isinstance(result, frames.Frame):
            again = frames.encode(result)
            if again != blob:
                raise AssertionError("decoded frame does not re-encode to the same bytes")
        outcome = _INGEST.feed(blob)
        if outcome not in _OUTCOMES:
            raise AssertionError(f"unexpected ingest outcome {outcome!r}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
