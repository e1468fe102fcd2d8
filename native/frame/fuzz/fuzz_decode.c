/*
 * libFuzzer harness for the frame decoder. Build and run (see docs/firmware.md):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I native/frame \
 *       native/frame/fuzz/fuzz_decode.c native/frame/frame.c -o /tmp/fuzz_frame
 *   /tmp/fuzz_frame -max_total_time=300 -max_len=2048 /tmp/frame_corpus
 * The first input byte picks a mode: odd means "repair the CRC first", so the fuzzer also reaches
 * the checks behind the CRC (sensor, flags, rate, annotations) instead of stopping at it.
 * Properties checked beyond "no crash, no sanitizer report": an accepted frame has consistent
 * fields and re-encodes to the very same bytes; fg_peek_len agrees with a successful decode.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

static uint8_t repaired[FG_MAX_FRAME + 64];

static void repair_crc(uint8_t *buf, size_t size)
{
    uint32_t crc;
    if (size < FG_CRC_LEN) {
        return;
    }
    crc = fg_crc32(buf, size - FG_CRC_LEN);
    buf[size - 4] = (uint8_t)crc;
    buf[size - 3] = (uint8_t)(crc >> 8);
    buf[size - 2] = (uint8_t)(crc >> 16);
    buf[size - 1] = (uint8_t)(crc >> 24);
}

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t input_size)
{
    const uint8_t *data;
    size_t size;
    fg_header h;
    int16_t samples[FG_MAX_VALUES];
    fg_annotation ann[FG_MAX_ANNOTATIONS];
    uint8_t out[FG_MAX_FRAME];
    size_t out_len = 0, peek = 0;
    int rc, prc;
    if (input_size == 0) {
        return 0;
    }
    data = input + 1;
    size = input_size - 1;
    if ((input[0] & 1u) && size <= sizeof repaired) {
        memcpy(repaired, data, size);
        repair_crc(repaired, size);
        data = repaired;
    }
    rc = fg_decode(data, size, &h, samples, FG_MAX_VALUES, ann, FG_MAX_ANNOTATIONS);
    prc = fg_peek_len(data, size, &peek);
    if (rc < FG_OK || rc > FG_ERR_LAST) {
        abort();
    }
    if (rc != FG_OK) {
        return 0;
    }
    if (prc != FG_OK || peek != size || fg_frame_len(&h) != size) {
        abort();
    }
    if (fg_encode(&h, samples, ann, out, sizeof out, &out_len) != FG_OK || out_len != size ||
        memcmp(out, data, size) != 0) {
        abort();
    }
    return 0;
}
