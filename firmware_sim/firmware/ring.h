/*
 * Sample ring buffer: the hand-off between the ADC side (producer, an interrupt on a real device)
 * and the frame task (consumer). Fixed storage, no allocation; one flag byte travels with every
 * sample so saturation and lead-off end up on the frame that holds the affected samples.
 */
#ifndef FEDGATE_FW_RING_H
#define FEDGATE_FW_RING_H

#include <stddef.h>
#include <stdint.h>

#define FW_RING_SAMPLES 1024u /* per-channel samples; must be a power of two */
#define FW_RING_CHANNELS 8u

typedef struct fw_ring {
    int16_t values[FW_RING_SAMPLES * FW_RING_CHANNELS];
    uint8_t flags[FW_RING_SAMPLES];
    uint32_t head;   /* next sample slot to write (monotonic, masked on use) */
    uint32_t tail;   /* next sample slot to read */
    uint8_t n_channels;
} fw_ring;

void fw_ring_init(fw_ring *r, uint8_t n_channels);
uint32_t fw_ring_count(const fw_ring *r);
uint32_t fw_ring_free(const fw_ring *r);
/* Writes one sample (n_channels values); returns 0 when full (the sample is dropped). */
int fw_ring_put(fw_ring *r, const int16_t *values, uint8_t flags);
/* Reads up to n samples into out (n * n_channels values), ORing their flags into *flags_or;
 * returns the number read. */
uint32_t fw_ring_get(fw_ring *r, int16_t *out, uint32_t n, uint8_t *flags_or);

#endif /* FEDGATE_FW_RING_H */
