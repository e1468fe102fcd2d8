/* fedgate device frame codec, wire version 1. See frame.h and docs/firmware.md. */
#include "frame.h"

#include <string.h>

/* Byte offsets of the header fields; the layout is little-endian and naturally aligned. */
enum {
    OFF_MAGIC0 = 0, OFF_MAGIC1 = 1, OFF_VERSION = 2, OFF_SENSOR = 3, OFF_FLAGS = 4,
    OFF_CHANNELS = 5, OFF_SAMPLES = 6, OFF_RATE = 8, OFF_NANN = 10, OFF_BATT_PCT = 11,
    OFF_BATT_MV = 12, OFF_PAYLOAD_LEN = 14, OFF_DEVICE = 16, OFF_SEQ = 20, OFF_T_US = 24,
    OFF_FIRST_SAMPLE = 32
};

static const uint32_t crc_table[256] = {
    0x00000000U, 0x77073096U, 0xEE0E612CU, 0x990951BAU, 0x076DC419U, 0x706AF48FU,
    0xE963A535U, 0x9E6495A3U, 0x0EDB8832U, 0x79DCB8A4U, 0xE0D5E91EU, 0x97D2D988U,
    0x09B64C2BU, 0x7EB17CBDU, 0xE7B82D07U, 0x90BF1D91U, 0x1DB71064U, 0x6AB020F2U,
    0xF3B97148U, 0x84BE41DEU, 0x1ADAD47DU, 0x6DDDE4EBU, 0xF4D4B551U, 0x83D385C7U,
    0x136C9856U, 0x646BA8C0U, 0xFD62F97AU, 0x8A65C9ECU, 0x14015C4FU, 0x63066CD9U,
    0xFA0F3D63U, 0x8D080DF5U, 0x3B6E20C8U, 0x4C69105EU, 0xD56041E4U, 0xA2677172U,
    0x3C03E4D1U, 0x4B04D447U, 0xD20D85FDU, 0xA50AB56BU, 0x35B5A8FAU, 0x42B2986CU,
    0xDBBBC9D6U, 0xACBCF940U, 0x32D86CE3U, 0x45DF5C75U, 0xDCD60DCFU, 0xABD13D59U,
    0x26D930ACU, 0x51DE003AU, 0xC8D75180U, 0xBFD06116U, 0x21B4F4B5U, 0x56B3C423U,
    0xCFBA9599U, 0xB8BDA50FU, 0x2802B89EU, 0x5F058808U, 0xC60CD9B2U, 0xB10BE924U,
    0x2F6F7C87U, 0x58684C11U, 0xC1611DABU, 0xB6662D3DU, 0x76DC4190U, 0x01DB7106U,
    0x98D220BCU, 0xEFD5102AU, 0x71B18589U, 0x06B6B51FU, 0x9FBFE4A5U, 0xE8B8D433U,
    0x7807C9A2U, 0x0F00F934U, 0x9609A88EU, 0xE10E9818U, 0x7F6A0DBBU, 0x086D3D2DU,
    0x91646C97U, 0xE6635C01U, 0x6B6B51F4U, 0x1C6C6162U, 0x856530D8U, 0xF262004EU,
    0x6C0695EDU, 0x1B01A57BU, 0x8208F4C1U, 0xF50FC457U, 0x65B0D9C6U, 0x12B7E950U,
    0x8BBEB8EAU, 0xFCB9887CU, 0x62DD1DDFU, 0x15DA2D49U, 0x8CD37CF3U, 0xFBD44C65U,
    0x4DB26158U, 0x3AB551CEU, 0xA3BC0074U, 0xD4BB30E2U, 0x4ADFA541U, 0x3DD895D7U,
    0xA4D1C46DU, 0xD3D6F4FBU, 0x4369E96AU, 0x346ED9FCU, 0xAD678846U, 0xDA60B8D0U,
    0x44042D73U, 0x33031DE5U, 0xAA0A4C5FU, 0xDD0D7CC9U, 0x5005713CU, 0x270241AAU,
    0xBE0B1010U, 0xC90C2086U, 0x5768B525U, 0x206F85B3U, 0xB966D409U, 0xCE61E49FU,
    0x5EDEF90EU, 0x29D9C998U, 0xB0D09822U, 0xC7D7A8B4U, 0x59B33D17U, 0x2EB40D81U,
    0xB7BD5C3BU, 0xC0BA6CADU, 0xEDB88320U, 0x9ABFB3B6U, 0x03B6E20CU, 0x74B1D29AU,
    0xEAD54739U, 0x9DD277AFU, 0x04DB2615U, 0x73DC1683U, 0xE3630B12U, 0x94643B84U,
    0x0D6D6A3EU, 0x7A6A5AA8U, 0xE40ECF0BU, 0x9309FF9DU, 0x0A00AE27U, 0x7D079EB1U,
    0xF00F9344U, 0x8708A3D2U, 0x1E01F268U, 0x6906C2FEU, 0xF762575DU, 0x806567CBU,
    0x196C3671U, 0x6E6B06E7U, 0xFED41B76U, 0x89D32BE0U, 0x10DA7A5AU, 0x67DD4ACCU,
    0xF9B9DF6FU, 0x8EBEEFF9U, 0x17B7BE43U, 0x60B08ED5U, 0xD6D6A3E8U, 0xA1D1937EU,
    0x38D8C2C4U, 0x4FDFF252U, 0xD1BB67F1U, 0xA6BC5767U, 0x3FB506DDU, 0x48B2364BU,
    0xD80D2BDAU, 0xAF0A1B4CU, 0x36034AF6U, 0x41047A60U, 0xDF60EFC3U, 0xA867DF55U,
    0x316E8EEFU, 0x4669BE79U, 0xCB61B38CU, 0xBC66831AU, 0x256FD2A0U, 0x5268E236U,
    0xCC0C7795U, 0xBB0B4703U, 0x220216B9U, 0x5505262FU, 0xC5BA3BBEU, 0xB2BD0B28U,
    0x2BB45A92U, 0x5CB36A04U, 0xC2D7FFA7U, 0xB5D0CF31U, 0x2CD99E8BU, 0x5BDEAE1DU,
    0x9B64C2B0U, 0xEC63F226U, 0x756AA39CU, 0x026D930AU, 0x9C0906A9U, 0xEB0E363FU,
    0x72076785U, 0x05005713U, 0x95BF4A82U, 0xE2B87A14U, 0x7BB12BAEU, 0x0CB61B38U,
    0x92D28E9BU, 0xE5D5BE0DU, 0x7CDCEFB7U, 0x0BDBDF21U, 0x86D3D2D4U, 0xF1D4E242U,
    0x68DDB3F8U, 0x1FDA836EU, 0x81BE16CDU, 0xF6B9265BU, 0x6FB077E1U, 0x18B74777U,
    0x88085AE6U, 0xFF0F6A70U, 0x66063BCAU, 0x11010B5CU, 0x8F659EFFU, 0xF862AE69U,
    0x616BFFD3U, 0x166CCF45U, 0xA00AE278U, 0xD70DD2EEU, 0x4E048354U, 0x3903B3C2U,
    0xA7672661U, 0xD06016F7U, 0x4969474DU, 0x3E6E77DBU, 0xAED16A4AU, 0xD9D65ADCU,
    0x40DF0B66U, 0x37D83BF0U, 0xA9BCAE53U, 0xDEBB9EC5U, 0x47B2CF7FU, 0x30B5FFE9U,
    0xBDBDF21CU, 0xCABAC28AU, 0x53B39330U, 0x24B4A3A6U, 0xBAD03605U, 0xCDD70693U,
    0x54DE5729U, 0x23D967BFU, 0xB3667A2EU, 0xC4614AB8U, 0x5D681B02U, 0x2A6F2B94U,
    0xB40BBE37U, 0xC30C8EA1U, 0x5A05DF1BU, 0x2D02EF8DU
};

uint32_t fg_crc32(const uint8_t *data, size_t len)
{
    uint32_t c = 0xFFFFFFFFu;
    size_t i;
    if (data == NULL) {
        return 0u;
    }
    for (i = 0; i < len; ++i) {
        c = crc_table[(c ^ data[i]) & 0xFFu] ^ (c >> 8);
    }
    return c ^ 0xFFFFFFFFu;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)v);
    put16(p + 2, (uint16_t)(v >> 16));
}
static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | ((uint16_t)p[1] << 8)); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) | ((uint32_t)get16(p + 2) << 16); }
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32); }

/* Geometry rules shared by encoder and decoder: payload bytes, or 0 with *ok = 0 on a violation. */
static size_t payload_len(uint8_t sensor, uint8_t n_channels, uint16_t n_samples,
                          uint8_t n_annotations, int *ok)
{
    size_t values = (size_t)n_channels * (size_t)n_samples;
    *ok = 0;
    if (sensor == FG_SENSOR_STATUS) {
        if (n_channels != 0u || n_samples != 0u || n_annotations != 0u) {
            return 0;
        }
    } else if (n_channels == 0u || n_channels > FG_MAX_CHANNELS || n_samples == 0u) {
        return 0;
    }
    if (values > FG_MAX_VALUES || n_annotations > FG_MAX_ANNOTATIONS) {
        return 0;
    }
    *ok = 1;
    return values * 2u + (size_t)n_annotations * FG_ANNOTATION_LEN;
}

size_t fg_frame_len(const fg_header *h)
{
    int ok;
    size_t pl;
    if (h == NULL) {
        return 0;
    }
    pl = payload_len(h->sensor, h->n_channels, h->n_samples, h->n_annotations, &ok);
    return ok ? FG_HEADER_LEN + pl + FG_CRC_LEN : 0;
}

/* Semantic checks that do not depend on lengths; shared so an encoder cannot emit what a decoder
 * would refuse. */
static int check_fields(const fg_header *h, const fg_annotation *ann)
{
    uint8_t i;
    if (h->sensor > FG_SENSOR_LAST) {
        return FG_ERR_SENSOR;
    }
    if ((h->flags & (uint8_t)~FG_FLAGS_KNOWN) != 0u) {
        return FG_ERR_FLAGS;
    }
    if (h->sensor != FG_SENSOR_STATUS &&
        (h->sample_rate_hz == 0u || h->sample_rate_hz > FG_MAX_RATE_HZ)) {
        return FG_ERR_RATE;
    }
    for (i = 0; i < h->n_annotations; ++i) {
        /* Label 0 means "no marker" on the device side, so it never travels. */
        if (ann[i].offset >= h->n_samples || ann[i].label == 0u) {
            return FG_ERR_ANNOTATION;
        }
    }
    return FG_OK;
}

int fg_encode(const fg_header *h, const int16_t *samples, const fg_annotation *ann,
              uint8_t *out, size_t out_cap, size_t *out_len)
{
    size_t values, total, i;
    uint8_t *p;
    int rc;
    if (h == NULL || out == NULL || out_len == NULL) {
        return FG_ERR_ARG;
    }
    *out_len = 0;
    total = fg_frame_len(h);
    if (total == 0) {
        return FG_ERR_LENGTH;
    }
    values = (size_t)h->n_channels * (size_t)h->n_samples;
    if ((values > 0u && samples == NULL) || (h->n_annotations > 0u && ann == NULL)) {
        return FG_ERR_ARG;
    }
    if (h->version != FG_VERSION) {
        return FG_ERR_VERSION;
    }
    rc = check_fields(h, ann);
    if (rc != FG_OK) {
        return rc;
    }
    if (out_cap < total) {
        return FG_ERR_CAPACITY;
    }
    out[OFF_MAGIC0] = FG_MAGIC0;
    out[OFF_MAGIC1] = FG_MAGIC1;
    out[OFF_VERSION] = h->version;
    out[OFF_SENSOR] = h->sensor;
    out[OFF_FLAGS] = h->flags;
    out[OFF_CHANNELS] = h->n_channels;
    put16(out + OFF_SAMPLES, h->n_samples);
    put16(out + OFF_RATE, h->sample_rate_hz);
    out[OFF_NANN] = h->n_annotations;
    out[OFF_BATT_PCT] = h->battery_pct;
    put16(out + OFF_BATT_MV, h->battery_mv);
    put16(out + OFF_PAYLOAD_LEN, (uint16_t)(total - FG_HEADER_LEN - FG_CRC_LEN));
    put32(out + OFF_DEVICE, h->device_id);
    put32(out + OFF_SEQ, h->seq);
    put64(out + OFF_T_US, h->t_us);
    put32(out + OFF_FIRST_SAMPLE, h->first_sample);
    p = out + FG_HEADER_LEN;
    for (i = 0; i < values; ++i, p += 2) {
        put16(p, (uint16_t)samples[i]);
    }
    for (i = 0; i < h->n_annotations; ++i, p += FG_ANNOTATION_LEN) {
        put16(p, ann[i].offset);
        p[2] = ann[i].label;
        p[3] = ann[i].aux;
    }
    put32(p, fg_crc32(out, total - FG_CRC_LEN));
    *out_len = total;
    return FG_OK;
}

/* Checks magic, version and length fields; on success *total is the full frame length. */
static int check_envelope(const uint8_t *buf, size_t len, size_t *total)
{
    size_t pl;
    int ok;
    if (len < 2u) {
        return FG_ERR_SHORT;
    }
    if (buf[OFF_MAGIC0] != FG_MAGIC0 || buf[OFF_MAGIC1] != FG_MAGIC1) {
        return FG_ERR_MAGIC;
    }
    if (len < FG_HEADER_LEN) {
        return FG_ERR_SHORT;
    }
    if (buf[OFF_VERSION] != FG_VERSION) {
        return FG_ERR_VERSION;
    }
    pl = payload_len(buf[OFF_SENSOR] == FG_SENSOR_STATUS ? FG_SENSOR_STATUS : FG_SENSOR_ECG,
                     buf[OFF_CHANNELS], get16(buf + OFF_SAMPLES), buf[OFF_NANN], &ok);
    if (!ok || pl != get16(buf + OFF_PAYLOAD_LEN)) {
        return FG_ERR_LENGTH;
    }
    *total = FG_HEADER_LEN + pl + FG_CRC_LEN;
    return FG_OK;
}

int fg_peek_len(const uint8_t *buf, size_t len, size_t *frame_len)
{
    size_t total = 0;
    int rc;
    if (buf == NULL || frame_len == NULL) {
        return FG_ERR_ARG;
    }
    rc = check_envelope(buf, len, &total);
    *frame_len = (rc == FG_OK) ? total : 0u;
    return rc;
}

int fg_decode(const uint8_t *buf, size_t len, fg_header *h, int16_t *samples, size_t samples_cap,
              fg_annotation *ann, size_t ann_cap)
{
    size_t total = 0, values, i;
    const uint8_t *p;
    int rc;
    if (buf == NULL || h == NULL) {
        return FG_ERR_ARG;
    }
    rc = check_envelope(buf, len, &total);
    if (rc != FG_OK) {
        return rc;
    }
    if (len < total) {
        return FG_ERR_SHORT;
    }
    if (len > total) {
        return FG_ERR_TRAILING;
    }
    if (fg_crc32(buf, total - FG_CRC_LEN) != get32(buf + total - FG_CRC_LEN)) {
        return FG_ERR_CRC;
    }
    memset(h, 0, sizeof *h);
    h->version = buf[OFF_VERSION];
    h->sensor = buf[OFF_SENSOR];
    h->flags = buf[OFF_FLAGS];
    h->n_channels = buf[OFF_CHANNELS];
    h->n_samples = get16(buf + OFF_SAMPLES);
    h->sample_rate_hz = get16(buf + OFF_RATE);
    h->n_annotations = buf[OFF_NANN];
    h->battery_pct = buf[OFF_BATT_PCT];
    h->battery_mv = get16(buf + OFF_BATT_MV);
    h->device_id = get32(buf + OFF_DEVICE);
    h->seq = get32(buf + OFF_SEQ);
    h->t_us = get64(buf + OFF_T_US);
    h->first_sample = get32(buf + OFF_FIRST_SAMPLE);
    values = (size_t)h->n_channels * (size_t)h->n_samples;
    if ((values > 0u && (samples == NULL || samples_cap < values)) ||
        (h->n_annotations > 0u && (ann == NULL || ann_cap < h->n_annotations))) {
        return FG_ERR_CAPACITY;
    }
    p = buf + FG_HEADER_LEN;
    for (i = 0; i < values; ++i, p += 2) {
        samples[i] = (int16_t)get16(p);
    }
    for (i = 0; i < h->n_annotations; ++i, p += FG_ANNOTATION_LEN) {
        ann[i].offset = get16(p);
        ann[i].label = p[2];
        ann[i].aux = p[3];
    }
    return check_fields(h, ann);
}

const char *fg_status_name(int status)
{
    static const char *const names[FG_ERR_LAST + 1] = {
        "ok", "arg", "short", "magic", "version", "sensor", "flags",
        "length", "crc", "trailing", "annotation", "rate", "capacity"
    };
    if (status < 0 || status > FG_ERR_LAST) {
        return "unknown";
    }
    return names[status];
}
