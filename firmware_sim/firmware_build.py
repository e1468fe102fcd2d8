"""cffi (API mode) definitions of the wearable firmware, ``firmware_sim._firmware``.

The project's CMake build runs ``python firmware_sim/firmware_build.py --emit <file.c>`` and
compiles the result with ``firmware_sim/firmware/*.c`` and the shared codec
``native/frame/frame.c``. Only what the simulator drives is declared here; the C structs are sized
by the compiler (``...;``), so the firmware can grow fields without touching this file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
FW_DIR = HERE / "firmware"
FRAME_DIR = HERE.parent / "native" / "frame"

CDEF = """
#define FG_MAX_FRAME ...
#define FW_TX_SLOTS ...
#define FW_RING_SAMPLES ...

typedef enum fw_state { FW_SAMPLING = 0, FW_BUFFERING = 1, FW_SHUTDOWN = 2 } fw_state;

typedef struct fw_config {
    uint32_t device_id;
    uint8_t sensor;
    uint8_t n_channels;
    uint16_t sample_rate_hz;
    uint16_t samples_per_frame;
    int16_t adc_min;
    int16_t adc_max;
    int32_t clock_drift_ppm;
    uint64_t clock_start_us;
    uint64_t battery_capacity_nas;
    uint32_t sample_current_na;
    uint32_t tx_nas_per_byte;
    uint16_t status_every_frames;
} fw_config;

typedef struct fw_stats {
    uint32_t samples_in;
    uint32_t samples_dropped;
    uint32_t samples_saturated;
    uint32_t frames_encoded;
    uint32_t frames_sent;
    uint32_t frames_resent;
    uint32_t frames_overwritten;
    uint32_t resend_refused;
    uint32_t annotations_dropped;
} fw_stats;

typedef struct fw_device {
    fw_state state;
    uint8_t link_up;
    uint8_t lead_off;
    uint32_t next_seq;
    uint32_t send_seq;
    fw_stats stats;
    ...;
} fw_device;

int fw_init(fw_device *d, const fw_config *cfg);
int fw_push(fw_device *d, const int16_t *values, const uint8_t *labels, const uint8_t *aux,
            uint32_t n);
int fw_poll_tx(fw_device *d, uint8_t *out, size_t cap, size_t *len);
int fw_request_resend(fw_device *d, uint32_t seq);
void fw_set_link(fw_device *d, int up);
void fw_set_lead_off(fw_device *d, int off);
void fw_clock_jump(fw_device *d, int64_t delta_us);
uint8_t fw_battery_pct(const fw_device *d);
uint16_t fw_battery_mv(const fw_device *d);
uint32_t fw_backlog(const fw_device *d);
"""


def make_ffi() -> FFI:
    """The FFI builder of ``firmware_sim._firmware``."""
    ffi = FFI()
    ffi.cdef(CDEF)
    ffi.set_source(
        "firmware_sim._firmware",
        '#include "fw.h"',
        sources=[str(p) for p in sorted(FW_DIR.glob("*.c"))] + [str(FRAME_DIR / "frame.c")],
        include_dirs=[str(FW_DIR), str(FRAME_DIR)],
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
