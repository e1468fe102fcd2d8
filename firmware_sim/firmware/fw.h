/*
 * Wearable firmware core, as it would run on the device's microcontroller: samples go into a ring
 * buffer, full frames are encoded with the shared frame codec into a fixed window of transmit slots,
 * and the radio drains that window in order. Plain C99, no allocation anywhere, all state in one
 * caller-owned fw_device (static storage on a real device).
 *
 * States: SAMPLING (link up), BUFFERING (link down: frames pile up in the slot window, the oldest
 * unsent one is overwritten when it is full), SHUTDOWN (battery at cut-off: sampling stops, a final
 * STATUS frame is queued, the remaining backlog is flushed from the reserve while the link is up).
 */
#ifndef FEDGATE_FW_H
#define FEDGATE_FW_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "ring.h"

#define FW_TX_SLOTS 64u        /* resend window and disconnected backlog, in frames */
#define FW_RESEND_QUEUE 16u
#define FW_ANN_QUEUE 64u
#define FW_CUTOFF_PCT 0u
#define FW_LOW_BATTERY_PCT 15u

typedef enum fw_state { FW_SAMPLING = 0, FW_BUFFERING = 1, FW_SHUTDOWN = 2 } fw_state;

typedef enum fw_result {
    FW_OK = 0,
    FW_ERR_CONFIG = -1,   /* fw_init refused the configuration */
    FW_ERR_OFF = -2,      /* the device is shut down */
    FW_ERR_ENCODE = -3,   /* the codec refused a frame (a firmware bug if it ever happens) */
    FW_ERR_ARG = -4
} fw_result;

typedef struct fw_config {
    uint32_t device_id;
    uint8_t sensor;              /* FG_SENSOR_ECG / PPG / ACC */
    uint8_t n_channels;
    uint16_t sample_rate_hz;
    uint16_t samples_per_frame;
    int16_t adc_min;             /* ADC rails: samples are clamped here and flagged saturated */
    int16_t adc_max;
    int32_t clock_drift_ppm;     /* crystal error: the device clock runs this much fast (+) or slow */
    uint64_t clock_start_us;
    uint64_t battery_capacity_nas;  /* charge in nano-ampere-seconds */
    uint32_t sample_current_na;     /* average draw of AFE + MCU while sampling */
    uint32_t tx_nas_per_byte;       /* radio charge per transmitted byte */
    uint16_t status_every_frames;   /* queue a STATUS frame after this many sample frames; 0 = never */
} fw_config;

typedef struct fw_stats {
    uint32_t samples_in;
    uint32_t samples_dropped;     /* ring full: the frame task fell behind */
    uint32_t samples_saturated;
    uint32_t frames_encoded;
    uint32_t frames_sent;
    uint32_t frames_resent;
    uint32_t frames_overwritten;  /* lost from the backlog while the link was down too long */
    uint32_t resend_refused;      /* requested sequence already outside the window */
    uint32_t annotations_dropped;
} fw_stats;

typedef struct fw_slot {
    uint32_t seq;
    uint16_t len;
    uint8_t bytes[FG_MAX_FRAME];
} fw_slot;

typedef struct fw_device {
    fw_config cfg;
    fw_state state;
    uint8_t link_up;
    uint8_t lead_off;
    fw_ring ring;
    fg_annotation ann_scratch[FG_MAX_ANNOTATIONS];
    int16_t value_scratch[FG_MAX_VALUES];
    uint32_t ann_sample[FW_ANN_QUEUE];  /* absolute sample number of each queued annotation */
    uint8_t ann_label[FW_ANN_QUEUE];
    uint8_t ann_aux[FW_ANN_QUEUE];
    uint32_t ann_head, ann_tail;
    uint32_t sample_no;                /* running number of the next sample into the ring */
    uint64_t clock_ns;                 /* device clock at the next sample */
    uint64_t step_ns_q16;              /* sample period in ns, 16.16 fixed point, drift included */
    uint32_t clock_frac;
    uint64_t charge_nas;
    uint32_t next_seq;                 /* next sequence number to assign */
    uint32_t send_seq;                 /* next fresh sequence number to transmit */
    uint32_t resend[FW_RESEND_QUEUE];
    uint8_t n_resend;
    uint16_t frames_since_status;
    fw_stats stats;
    fw_slot slots[FW_TX_SLOTS];
} fw_device;

/* Validates cfg and resets the device; returns FW_OK or FW_ERR_CONFIG. */
int fw_init(fw_device *d, const fw_config *cfg);

/* Producer side: n samples (n * n_channels interleaved values); labels[i] != 0 marks a beat (or
 * event) at sample i with that label and aux[i] (aux may be NULL). Runs the frame task afterwards.
 * Returns the number of frames encoded, or a negative fw_result. */
int fw_push(fw_device *d, const int16_t *values, const uint8_t *labels, const uint8_t *aux,
            uint32_t n);

/* Next frame for the radio: FW_OK with *len > 0, FW_OK with *len == 0 when nothing is due. */
int fw_poll_tx(fw_device *d, uint8_t *out, size_t cap, size_t *len);

/* The gateway asks again for a frame (gap repair); returns 1 if it is still in the window. */
int fw_request_resend(fw_device *d, uint32_t seq);

void fw_set_link(fw_device *d, int up);
void fw_set_lead_off(fw_device *d, int off);
/* The device clock is set (a time sync or an RTC fault): all later timestamps move by delta_us. */
void fw_clock_jump(fw_device *d, int64_t delta_us);

uint8_t fw_battery_pct(const fw_device *d);
uint16_t fw_battery_mv(const fw_device *d);
/* Frames encoded but not yet sent (the backlog the link has to drain). */
uint32_t fw_backlog(const fw_device *d);

#endif /* FEDGATE_FW_H */
