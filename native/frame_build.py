"""cffi (API mode) definitions of the device frame codec, ``native._frame``.

The project's CMake build runs ``python native/frame_build.py --emit <file.c>`` to generate the
module's C source, then compiles it together with ``native/frame/frame.c``. Nothing imports this
file at run time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
FRAME_DIR = HERE / "frame"

CDEF = """
#define FG_VERSION ...
#define FG_HEADER_LEN ...
#define FG_CRC_LEN ...
#define FG_MAX_VALUES ...
#define FG_MAX_CHANNELS ...
#define FG_MAX_ANNOTATIONS ...
#define FG_MAX_FRAME ...
#define FG_MIN_FRAME ...
#define FG_MAX_RATE_HZ ...
#define FG_ERR_LAST ...

typedef struct fg_header {
    uint8_t version;
    uint8_t sensor;
    uint8_t flags;
    uint8_t n_channels;
    uint16_t n_samples;
    uint16_t sample_rate_hz;
    uint32_t device_id;
    uint32_t seq;
    uint64_t t_us;
    uint32_t first_sample;
    uint8_t n_annotations;
    uint8_t battery_pct;
    uint16_t battery_mv;
} fg_header;

typedef struct fg_annotation {
    uint16_t offset;
    uint8_t label;
    uint8_t aux;
} fg_annotation;

uint32_t fg_crc32(const uint8_t *data, size_t len);
size_t fg_frame_len(const fg_header *h);
int fg_encode(const fg_header *h, const int16_t *samples, const fg_annotation *ann,
              uint8_t *out, size_t out_cap, size_t *out_len);
int fg_decode(const uint8_t *buf, size_t len, fg_header *h, int16_t *samples, size_t samples_cap,
              fg_annotation *ann, size_t ann_cap);
int fg_peek_len(const uint8_t *buf, size_t len, size_t *frame_len);
const char *fg_status_name(int status);
"""


def make_ffi() -> FFI:
    """The FFI builder of ``native._frame``."""
    ffi = FFI()
    ffi.cdef(CDEF)
    ffi.set_source(
        "native._frame",
        '#include "frame.h"',
        sources=[str(FRAME_DIR / "frame.c")],
        include_dirs=[str(FRAME_DIR)],
    )
    return ffi


ffibuilder = make_ffi()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--emit", required=True, help="path of the C file to write")
    args = parser.parse_args()
    ffibuilder.emit_c_code(args.emit)


if __name__ == "__main__":
    main()
