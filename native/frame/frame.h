/*
 * fedgate device frame codec, wire version 1.
 *
 * One codec serves both ends: the wearable firmware encodes with it and the gateway decodes with it,
 * so the two can never disagree on a byte. Plain C99, no allocation, no global state; every length
 * is checked against the caller's buffer before a byte is read or written. The byte layout is
 * documented in docs/firmware.md; changing it needs a new FG_VERSION.
 */
#ifndef FEDGATE_FRAME_H
#define FEDGATE_FRAME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FG_MAGIC0 0x46u /* 'F' */
#define FG_MAGIC1 0x47u /* 'G' */
#define FG_VERSION 1u

#define FG_HEADER_LEN 36u
#define FG_CRC_LEN 4u
/* Bounds chosen so a full frame fits a single 2 KiB radio buffer; the limits, not the length
 * fields, decide how much a decoder will ever write. */
#define FG_MAX_VALUES 480u      /* n_samples * n_channels */
#define FG_MAX_CHANNELS 8u
#define FG_MAX_ANNOTATIONS 32u
#define FG_ANNOTATION_LEN 4u
#define FG_MAX_PAYLOAD (FG_MAX_VALUES * 2u + FG_MAX_ANNOTATIONS * FG_ANNOTATION_LEN)
#define FG_MAX_FRAME (FG_HEADER_LEN + FG_MAX_PAYLOAD + FG_CRC_LEN)
#define FG_MIN_FRAME (FG_HEADER_LEN + FG_CRC_LEN)
#define FG_MAX_RATE_HZ 10000u

/* Sensor types. STATUS frames carry no samples: battery and state telemetry only. */
enum fg_sensor {
    FG_SENSOR_STATUS = 0,
    FG_SENSOR_ECG = 1,
    FG_SENSOR_PPG = 2,
    FG_SENSOR_ACC = 3,
    FG_SENSOR_LAST = 3
};

/* Header flags (bit set). */
enum fg_flag {
    FG_FLAG_RESEND = 0x01,     /* re-transmission of a frame already sent once */
    FG_FLAG_LEAD_OFF = 0x02,   /* electrode contact lost during this frame */
    FG_FLAG_SATURATED = 0x04,  /* at least one sample hit the ADC rail */
    FG_FLAG_LOW_BATTERY = 0x08,
    FG_FLAG_SHUTDOWN = 0x10,   /* last frame before the device powers off */
    FG_FLAG_BUFFERED = 0x20,   /* encoded while the link was down */
    FG_FLAGS_KNOWN = 0x3F
};

/* Results. Every rejection has its own code so the gateway can count frames by reason. */
enum fg_status {
    FG_OK = 0,
    FG_ERR_ARG = 1,        /* NULL pointer or bad argument from the caller */
    FG_ERR_SHORT = 2,      /* fewer bytes than the header or than the length fields announce */
    FG_ERR_MAGIC = 3,
    FG_ERR_VERSION = 4,
    FG_ERR_SENSOR = 5,     /* unknown sensor type */
    FG_ERR_FLAGS = 6,      /* reserved flag bits set */
    FG_ERR_LENGTH = 7,     /* length fields over the limits or inconsistent with each other */
    FG_ERR_CRC = 8,
    FG_ERR_TRAILING = 9,   /* bytes after the CRC */
    FG_ERR_ANNOTATION = 10,/* annotation outside the frame's samples, or with label 0 */
    FG_ERR_RATE = 11,      /* sample rate 0 or above FG_MAX_RATE_HZ for a sampled frame */
    FG_ERR_CAPACITY = 12,  /* the caller's output buffer is too small */
    FG_ERR_LAST = 12
};

typedef struct fg_header {
    uint8_t version;
    uint8_t sensor;
    uint8_t flags;
    uint8_t n_channels;
    uint16_t n_samples;      /* per channel */
    uint16_t sample_rate_hz;
    uint32_t device_id;
    uint32_t seq;
    uint64_t t_us;           /* device clock at the first sample */
    uint32_t first_sample;   /* device's running sample number of the first sample (wraps) */
    uint8_t n_annotations;
    uint8_t battery_pct;
    uint16_t battery_mv;
} fg_header;

typedef struct fg_annotation {
    uint16_t offset;  /* sample index within the frame */
    uint8_t label;    /* beat label as the MIT-BIH symbol character, e.g. 'N', 'V' */
    uint8_t aux;      /* rhythm or sensor specific code, 0 if none */
} fg_annotation;

/* CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320, init and xorout 0xFFFFFFFF); same as zlib.crc32. */
uint32_t fg_crc32(const uint8_t *data, size_t len);

/* Total encoded length of a frame with this header, or 0 if the header breaks a limit. */
size_t fg_frame_len(const fg_header *h);

/* Encode one frame. samples: n_samples * n_channels int16, interleaved by sample (may be NULL when
 * there are none); ann: n_annotations entries (may be NULL when none). Writes *out_len bytes. */
int fg_encode(const fg_header *h, const int16_t *samples, const fg_annotation *ann,
              uint8_t *out, size_t out_cap, size_t *out_len);

/* Decode exactly one frame occupying all of buf[0..len). On FG_OK fills *h, samples (capacity in
 * int16 values) and ann (capacity in entries). Nothing is written past the capacities. */
int fg_decode(const uint8_t *buf, size_t len, fg_header *h, int16_t *samples, size_t samples_cap,
              fg_annotation *ann, size_t ann_cap);

/* For stream transports: with at least FG_HEADER_LEN bytes available, the full length of the frame
 * starting at buf, after checking magic, version and the length limits. */
int fg_peek_len(const uint8_t *buf, size_t len, size_t *frame_len);

/* A short constant name for a status code ("crc", "short", ...); "unknown" outside the range. */
const char *fg_status_name(int status);

#ifdef __cplusplus
}
#endif

#endif /* FEDGATE_FRAME_H */
