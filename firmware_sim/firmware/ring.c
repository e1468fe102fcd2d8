/* Sample ring buffer; see ring.h. */
#include "ring.h"

#define RING_MASK (FW_RING_SAMPLES - 1u)

void fw_ring_init(fw_ring *r, uint8_t n_channels)
{
    r->head = 0;
    r->tail = 0;
    r->n_channels = (n_channels > FW_RING_CHANNELS) ? (uint8_t)FW_RING_CHANNELS : n_channels;
}

uint32_t fw_ring_count(const fw_ring *r) { return r->head - r->tail; }

uint32_t fw_ring_free(const fw_ring *r) { return FW_RING_SAMPLES - fw_ring_count(r); }

int fw_ring_put(fw_ring *r, const int16_t *values, uint8_t flags)
{
    uint32_t slot, c;
    if (fw_ring_free(r) == 0u) {
        return 0;
    }
    slot = r->head & RING_MASK;
    for (c = 0; c < r->n_channels; ++c) {
        r->values[slot * FW_RING_CHANNELS + c] = values[c];
    }
    r->flags[slot] = flags;
    r->head++;
    return 1;
}

uint32_t fw_ring_get(fw_ring *r, int16_t *out, uint32_t n, uint8_t *flags_or)
{
    uint32_t i, c, slot, avail = fw_ring_count(r);
    if (n > avail) {
        n = avail;
    }
    for (i = 0; i < n; ++i) {
        slot = (r->tail + i) & RING_MASK;
        for (c = 0; c < r->n_channels; ++c) {
            out[i * r->n_channels + c] = r->values[slot * FW_RING_CHANNELS + c];
        }
        *flags_or |= r->flags[slot];
    }
    r->tail += n;
    return n;
}
