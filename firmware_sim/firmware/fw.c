/* Wearable firmware core; see fw.h. */
#include "fw.h"

#include <string.h>

#define MAX_DRIFT_PPM 100000

static uint8_t flag_bits(const fw_device *d)
{
    uint8_t f = 0;
    if (!d->link_up) {
        f |= FG_FLAG_BUFFERED;
    }
    if (fw_battery_pct(d) <= FW_LOW_BATTERY_PCT) {
        f |= FG_FLAG_LOW_BATTERY;
    }
    return f;
}

int fw_init(fw_device *d, const fw_config *cfg)
{
    int64_t base;
    uint32_t values;
    if (d == NULL || cfg == NULL) {
        return FW_ERR_ARG;
    }
    values = (uint32_t)cfg->n_channels * cfg->samples_per_frame;
    if (cfg->sensor == FG_SENSOR_STATUS || cfg->sensor > FG_SENSOR_LAST || cfg->n_channels == 0u ||
        cfg->n_channels > FW_RING_CHANNELS || cfg->sample_rate_hz == 0u ||
        cfg->sample_rate_hz > FG_MAX_RATE_HZ || cfg->samples_per_frame == 0u ||
        values > FG_MAX_VALUES || cfg->samples_per_frame > FW_RING_SAMPLES / 2u ||
        cfg->adc_min >= cfg->adc_max || cfg->battery_capacity_nas == 0u ||
        cfg->clock_drift_ppm > MAX_DRIFT_PPM || cfg->clock_drift_ppm < -MAX_DRIFT_PPM) {
        return FW_ERR_CONFIG;
    }
    memset(d, 0, sizeof *d);
    d->cfg = *cfg;
    d->state = FW_SAMPLING;
    d->link_up = 1;
    fw_ring_init(&d->ring, cfg->n_channels);
    d->clock_ns = cfg->clock_start_us * 1000u;
    /* 16.16 fixed point keeps sub-nanosecond drift from accumulating into a visible error. */
    base = (int64_t)((1000000000ull << 16) / cfg->sample_rate_hz);
    d->step_ns_q16 = (uint64_t)(base + base * cfg->clock_drift_ppm / 1000000);
    d->charge_nas = cfg->battery_capacity_nas;
    return FW_OK;
}

uint8_t fw_battery_pct(const fw_device *d)
{
    return (uint8_t)((d->charge_nas * 100u + d->cfg.battery_capacity_nas - 1u) /
                     d->cfg.battery_capacity_nas);
}

uint16_t fw_battery_mv(const fw_device *d)
{
    /* A Li-Po discharge curve in four straight pieces: flat middle, steep ends. */
    static const uint8_t pct[5] = {0, 10, 50, 90, 100};
    static const uint16_t mv[5] = {3300, 3600, 3750, 4000, 4200};
    uint8_t p = fw_battery_pct(d);
    int i;
    for (i = 1; i < 5; ++i) {
        if (p <= pct[i]) {
            return (uint16_t)(mv[i - 1] + (uint32_t)(mv[i] - mv[i - 1]) * (p - pct[i - 1]) /
                                              (uint32_t)(pct[i] - pct[i - 1]));
        }
    }
    return mv[4];
}

uint32_t fw_backlog(const fw_device *d) { return d->next_seq - d->send_seq; }

static void queue_frame(fw_device *d, const fg_header *h, const int16_t *values,
                        const fg_annotation *ann, int *rc)
{
    fw_slot *slot = &d->slots[d->next_seq % FW_TX_SLOTS];
    size_t len = 0;
    if (d->next_seq - d->send_seq >= FW_TX_SLOTS) {
        /* Window full while the link is down: the oldest unsent frame gives way. */
        d->send_seq++;
        d->stats.frames_overwritten++;
    }
    if (fg_encode(h, values, ann, slot->bytes, sizeof slot->bytes, &len) != FG_OK) {
        slot->len = 0;
        *rc = FW_ERR_ENCODE;
        return;
    }
    slot->seq = d->next_seq;
    slot->len = (uint16_t)len;
    d->next_seq++;
    d->stats.frames_encoded++;
}

static void base_header(const fw_device *d, fg_header *h)
{
    memset(h, 0, sizeof *h);
    h->version = FG_VERSION;
    h->device_id = d->cfg.device_id;
    h->seq = d->next_seq;
    h->battery_pct = fw_battery_pct(d);
    h->battery_mv = fw_battery_mv(d);
    h->flags = flag_bits(d);
}

static void queue_status(fw_device *d, uint8_t extra_flags, int *rc)
{
    fg_header h;
    base_header(d, &h);
    h.sensor = FG_SENSOR_STATUS;
    h.flags |= extra_flags;
    h.t_us = d->clock_ns / 1000u;
    h.first_sample = d->sample_no;
    queue_frame(d, &h, NULL, NULL, rc);
    d->frames_since_status = 0;
}

/* Moves the annotations that fall inside [first, first + n) into the frame's scratch. */
static uint8_t take_annotations(fw_device *d, uint32_t first, uint32_t n)
{
    uint8_t count = 0;
    while (d->ann_tail != d->ann_head) {
        uint32_t i = d->ann_tail % FW_ANN_QUEUE;
        uint32_t rel = d->ann_sample[i] - first;
        if (rel >= n) {
            break;
        }
        if (count < FG_MAX_ANNOTATIONS) {
            d->ann_scratch[count].offset = (uint16_t)rel;
            d->ann_scratch[count].label = d->ann_label[i];
            d->ann_scratch[count].aux = d->ann_aux[i];
            count++;
        } else {
            d->stats.annotations_dropped++;
        }
        d->ann_tail++;
    }
    return count;
}

/* The frame task: every full frame's worth of samples in the ring becomes one queued frame. */
static int service(fw_device *d)
{
    int rc = FW_OK, frames = 0;
    uint32_t spf = d->cfg.samples_per_frame;
    while (rc == FW_OK && fw_ring_count(&d->ring) >= spf) {
        fg_header h;
        uint8_t flags = 0;
        uint32_t queued = fw_ring_count(&d->ring);
        uint64_t age_ns = (uint64_t)queued * (d->step_ns_q16 >> 16);
        base_header(d, &h);
        h.sensor = d->cfg.sensor;
        h.n_channels = d->cfg.n_channels;
        h.n_samples = (uint16_t)spf;
        h.sample_rate_hz = d->cfg.sample_rate_hz;
        h.first_sample = d->sample_no - queued;
        h.t_us = (d->clock_ns - age_ns) / 1000u;
        fw_ring_get(&d->ring, d->value_scratch, spf, &flags);
        h.flags |= flags;
        h.n_annotations = take_annotations(d, h.first_sample, spf);
        queue_frame(d, &h, d->value_scratch, d->ann_scratch, &rc);
        frames++;
        if (d->cfg.status_every_frames != 0u &&
            ++d->frames_since_status >= d->cfg.status_every_frames) {
            queue_status(d, 0, &rc);
        }
    }
    return rc == FW_OK ? frames : rc;
}

static void drain(fw_device *d, uint64_t nas)
{
    int rc = FW_OK;
    if (d->state == FW_SHUTDOWN) {
        return; /* the brown-out reserve covers the final flush */
    }
    d->charge_nas = (nas >= d->charge_nas) ? 0u : d->charge_nas - nas;
    if (d->charge_nas == 0u) {
        d->state = FW_SHUTDOWN;
        queue_status(d, FG_FLAG_SHUTDOWN, &rc);
    }
}

static uint8_t condition(fw_device *d, const int16_t *in, int16_t *out)
{
    uint8_t c, flags = d->lead_off ? (uint8_t)FG_FLAG_LEAD_OFF : (uint8_t)0;
    for (c = 0; c < d->cfg.n_channels; ++c) {
        int16_t v = in[c];
        if (v <= d->cfg.adc_min || v >= d->cfg.adc_max) {
            v = (v <= d->cfg.adc_min) ? d->cfg.adc_min : d->cfg.adc_max;
            flags |= FG_FLAG_SATURATED;
        }
        out[c] = v;
    }
    if (flags & FG_FLAG_SATURATED) {
        d->stats.samples_saturated++;
    }
    return flags;
}

static void note_annotation(fw_device *d, uint8_t label, uint8_t aux)
{
    uint32_t i;
    /* No beat detection without electrode contact. */
    if (d->lead_off) {
        return;
    }
    if (d->ann_head - d->ann_tail >= FW_ANN_QUEUE) {
        d->stats.annotations_dropped++;
        return;
    }
    i = d->ann_head % FW_ANN_QUEUE;
    d->ann_sample[i] = d->sample_no;
    d->ann_label[i] = label;
    d->ann_aux[i] = aux;
    d->ann_head++;
}

static void tick_clock(fw_device *d)
{
    uint64_t acc = (uint64_t)d->clock_frac + (d->step_ns_q16 & 0xFFFFu);
    d->clock_ns += (d->step_ns_q16 >> 16) + (acc >> 16);
    d->clock_frac = (uint32_t)(acc & 0xFFFFu);
}

int fw_push(fw_device *d, const int16_t *values, const uint8_t *labels, const uint8_t *aux,
            uint32_t n)
{
    int frames = 0, rc;
    uint32_t i, nch;
    int16_t sample[FW_RING_CHANNELS];
    if (d == NULL || (values == NULL && n > 0u)) {
        return FW_ERR_ARG;
    }
    nch = d->cfg.n_channels;
    for (i = 0; i < n; ++i) {
        uint8_t flags;
        if (d->state == FW_SHUTDOWN) {
            return frames > 0 ? frames : FW_ERR_OFF;
        }
        flags = condition(d, values + (size_t)i * nch, sample);
        if (labels != NULL && labels[i] != 0u) {
            note_annotation(d, labels[i], aux != NULL ? aux[i] : (uint8_t)0);
        }
        if (fw_ring_put(&d->ring, sample, flags)) {
            d->sample_no++;
        } else {
            d->stats.samples_dropped++;
        }
        d->stats.samples_in++;
        tick_clock(d);
        drain(d, d->cfg.sample_current_na / d->cfg.sample_rate_hz);
        if (fw_ring_count(&d->ring) >= d->cfg.samples_per_frame) {
            rc = service(d);
            if (rc < 0) {
                return rc;
            }
            frames += rc;
        }
    }
    return frames;
}

static int in_window(const fw_device *d, uint32_t seq)
{
    uint32_t back = d->next_seq - seq;
    const fw_slot *s = &d->slots[seq % FW_TX_SLOTS];
    /* Only frames already sent once can be asked for again, and only while their slot holds them. */
    return back >= 1u && back <= FW_TX_SLOTS && (d->send_seq - seq) >= 1u &&
           (d->send_seq - seq) <= FW_TX_SLOTS && s->seq == seq && s->len > 0u;
}

int fw_request_resend(fw_device *d, uint32_t seq)
{
    uint8_t i;
    if (d == NULL) {
        return 0;
    }
    if (!in_window(d, seq) || d->n_resend >= FW_RESEND_QUEUE) {
        d->stats.resend_refused++;
        return 0;
    }
    for (i = 0; i < d->n_resend; ++i) {
        if (d->resend[i] == seq) {
            return 1;
        }
    }
    d->resend[d->n_resend++] = seq;
    return 1;
}

static int emit(fw_device *d, const fw_slot *s, uint8_t extra_flags, uint8_t *out, size_t cap,
                size_t *len)
{
    uint32_t crc;
    if (cap < s->len) {
        return FW_ERR_ARG;
    }
    memcpy(out, s->bytes, s->len);
    if (extra_flags != 0u) {
        /* Flags sit inside the CRC, so a marked copy needs its CRC recomputed. */
        out[4] |= extra_flags;
        crc = fg_crc32(out, (size_t)s->len - FG_CRC_LEN);
        out[s->len - 4u] = (uint8_t)crc;
        out[s->len - 3u] = (uint8_t)(crc >> 8);
        out[s->len - 2u] = (uint8_t)(crc >> 16);
        out[s->len - 1u] = (uint8_t)(crc >> 24);
    }
    *len = s->len;
    drain(d, (uint64_t)s->len * d->cfg.tx_nas_per_byte);
    return FW_OK;
}

int fw_poll_tx(fw_device *d, uint8_t *out, size_t cap, size_t *len)
{
    if (d == NULL || out == NULL || len == NULL) {
        return FW_ERR_ARG;
    }
    *len = 0;
    if (!d->link_up) {
        return FW_OK;
    }
    while (d->n_resend > 0u) {
        uint32_t seq = d->resend[0];
        d->n_resend--;
        memmove(d->resend, d->resend + 1, d->n_resend * sizeof d->resend[0]);
        if (in_window(d, seq)) {
            d->stats.frames_resent++;
            return emit(d, &d->slots[seq % FW_TX_SLOTS], FG_FLAG_RESEND, out, cap, len);
        }
        d->stats.resend_refused++;
    }
    if (d->send_seq != d->next_seq) {
        const fw_slot *s = &d->slots[d->send_seq % FW_TX_SLOTS];
        int rc = emit(d, s, 0, out, cap, len);
        if (rc == FW_OK) {
            d->send_seq++;
            d->stats.frames_sent++;
        }
        return rc;
    }
    return FW_OK;
}

void fw_set_link(fw_device *d, int up)
{
    d->link_up = up ? 1u : 0u;
    if (d->state != FW_SHUTDOWN) {
        d->state = up ? FW_SAMPLING : FW_BUFFERING;
    }
}

void fw_set_lead_off(fw_device *d, int off) { d->lead_off = off ? 1u : 0u; }

void fw_clock_jump(fw_device *d, int64_t delta_us)
{
    int64_t ns = delta_us * 1000;
    d->clock_ns = (ns < 0 && (uint64_t)(-ns) > d->clock_ns) ? 0u : d->clock_ns + (uint64_t)ns;
}
