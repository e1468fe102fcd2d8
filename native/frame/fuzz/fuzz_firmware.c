/*
 * libFuzzer harness for the firmware core driven by random operation sequences: every frame the
 * firmware hands to the radio must decode with the shared codec, whatever the sequence of samples,
 * link changes, lead-off, clock jumps and resend requests. Build and run from the repo root:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
 *       -I native/frame -I firmware_sim/firmware native/frame/fuzz/fuzz_firmware.c \
 *       firmware_sim/firmware/fw.c firmware_sim/firmware/ring.c native/frame/frame.c \
 *       -o /tmp/fuzz_firmware
 *   /tmp/fuzz_firmware -max_total_time=120 -max_len=4096
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "fw.h"

static fw_device dev;
static int16_t values[256 * 3];
static uint8_t labels[256];

static void check_tx(void)
{
    uint8_t out[FG_MAX_FRAME];
    size_t len = 0;
    fg_header h;
    int16_t samples[FG_MAX_VALUES];
    fg_annotation ann[FG_MAX_ANNOTATIONS];
    while (fw_poll_tx(&dev, out, sizeof out, &len) == FW_OK && len > 0) {
        if (fg_decode(out, len, &h, samples, FG_MAX_VALUES, ann, FG_MAX_ANNOTATIONS) != FG_OK ||
            h.device_id != dev.cfg.device_id) {
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fw_config cfg;
    size_t i = 0;
    if (size < 4) {
        return 0;
    }
    memset(&cfg, 0, sizeof cfg);
    cfg.device_id = 42;
    cfg.sensor = (uint8_t)(1u + data[0] % 3u);
    cfg.n_channels = (uint8_t)(cfg.sensor == FG_SENSOR_ACC ? 3 : 1);
    cfg.sample_rate_hz = (uint16_t)(50u + data[1] * 4u);
    cfg.samples_per_frame = (uint16_t)(1u + data[2] % 150u);
    cfg.adc_min = -2048;
    cfg.adc_max = 2047;
    cfg.clock_drift_ppm = (int32_t)data[3] * 100 - 12800;
    cfg.battery_capacity_nas = 1u + (uint64_t)data[3] * 2000000u;
    cfg.sample_current_na = 300000;
    cfg.tx_nas_per_byte = 40;
    cfg.status_every_frames = (uint16_t)(data[0] % 5u);
    if (fw_init(&dev, &cfg) != FW_OK) {
        abort(); /* every configuration above is valid */
    }
    for (i = 4; i + 1 < size; i += 2) {
        uint8_t op = data[i], arg = data[i + 1];
        uint32_t n, k;
        switch (op % 7u) {
        case 0:
        case 1:
            n = arg;
            for (k = 0; k < n * cfg.n_channels; ++k) {
                values[k] = (int16_t)((int)(k * 37u + arg) % 5000 - 2500);
            }
            for (k = 0; k < n; ++k) {
                labels[k] = (uint8_t)((k % 7u == 3u) ? 'N' : 0);
            }
            (void)fw_push(&dev, values, labels, NULL, n);
            break;
        case 2: fw_set_link(&dev, arg & 1); break;
        case 3: fw_set_lead_off(&dev, arg & 1); break;
        case 4: (void)fw_request_resend(&dev, dev.next_seq - 1u - arg); break;
        case 5: fw_clock_jump(&dev, ((int64_t)arg - 128) * 100000); break;
        default: check_tx(); break;
        }
    }
    fw_set_link(&dev, 1);
    check_tx();
    return 0;
}
