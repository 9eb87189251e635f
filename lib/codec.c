/* SPDX-License-Identifier: MIT */
/* Framing codecs as pure functions over (buf, len): need more / a frame of
 * N bytes / invalid. No I/O, no allocation, nothing read past len. */
#include <errno.h>
#include <string.h>

#include "internal.h"

int tc_codec_raw(tc_codec *out)
{
    if (!out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    return 0;
}

int tc_codec_delimited(tc_codec *out, const void *delim, size_t len)
{
    if (!out || !delim || len == 0 || len > TC_CODEC_DELIM_MAX)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    out->kind = TC_CODEC_DELIMITED;
    memcpy(out->delim, delim, len);
    out->delim_len = (unsigned char)len;
    return 0;
}

int tc_codec_length_prefixed(tc_codec *out, unsigned width, tc_byte_order order)
{
    if (!out || (width != 1 && width != 2 && width != 4 && width != 8) ||
        (order != TC_BIG_ENDIAN && order != TC_LITTLE_ENDIAN))
        return -EINVAL;
    memset(out, 0, sizeof *out);
    out->kind = TC_CODEC_LENGTH_PREFIXED;
    out->prefix_width = (unsigned char)width;
    out->byte_order = (unsigned char)order;
    return 0;
}

int tc_codec_custom(tc_codec *out, tc_codec_scan_fn scan, void *ctx)
{
    if (!out || !scan)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    out->kind = TC_CODEC_CUSTOM;
    out->scan = scan;
    out->scan_ctx = ctx;
    return 0;
}

int tc_codec_set_max_frame(tc_codec *codec, size_t max)
{
    if (!codec || max > TC_CODEC_MAX_FRAME_LIMIT)
        return -EINVAL;
    codec->max_frame = max;
    return 0;
}

size_t tc_codec_max_frame(const tc_codec *codec)
{
    return codec && codec->max_frame ? codec->max_frame : TC_CODEC_DEFAULT_MAX_FRAME;
}

int tc_codec_validate(const tc_codec *c)
{
    if (!c || c->max_frame > TC_CODEC_MAX_FRAME_LIMIT)
        return -EINVAL;
    switch (c->kind) {
    case TC_CODEC_RAW:
        return 0;
    case TC_CODEC_DELIMITED:
        return c->delim_len >= 1 && c->delim_len <= TC_CODEC_DELIM_MAX ? 0 : -EINVAL;
    case TC_CODEC_LENGTH_PREFIXED:
        if (c->prefix_width != 1 && c->prefix_width != 2 && c->prefix_width != 4 &&
            c->prefix_width != 8)
            return -EINVAL;
        return c->byte_order == TC_BIG_ENDIAN || c->byte_order == TC_LITTLE_ENDIAN ? 0 : -EINVAL;
    case TC_CODEC_CUSTOM:
        return c->scan ? 0 : -EINVAL;
    default:
        return -EINVAL;
    }
}

size_t tc__codec_overhead(const tc_codec *c)
{
    switch (c->kind) {
    case TC_CODEC_DELIMITED:
        return c->delim_len;
    case TC_CODEC_LENGTH_PREFIXED:
        return c->prefix_width;
    default:
        return 0;
    }
}

static uint64_t get_uint(const unsigned char *p, unsigned width, int little)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < width; i++)
        v = (v << 8) | p[little ? width - 1 - i : i];
    return v;
}

static void put_uint(unsigned char *p, unsigned width, int little, uint64_t v)
{
    for (unsigned i = 0; i < width; i++) {
        p[little ? i : width - 1 - i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

static int scan_delimited(const tc_codec *c, const unsigned char *buf, size_t len, size_t from,
                          size_t max, size_t *off, size_t *plen, size_t *flen)
{
    size_t d = c->delim_len;
    /* A delimiter starting past max means a payload over max: never look
     * further than max + d bytes. */
    size_t window = len < max + d ? len : max + d;
    /* Bytes before from - (d - 1) were already searched without a match. */
    size_t start = from >= d ? from - (d - 1) : 0;
    if (start < window && window - start >= d) {
        const unsigned char *hit;
        if (d == 1)
            hit = memchr(buf + start, c->delim[0], window - start);
        else
            hit = memmem(buf + start, window - start, c->delim, d);
        if (hit) {
            *off = 0;
            *plen = (size_t)(hit - buf);
            *flen = *plen + d;
            return 1;
        }
    }
    return len >= max + d ? TC_ETOOBIG : 0;
}

static int scan_prefixed(const tc_codec *c, const unsigned char *buf, size_t len, size_t max,
                         size_t *off, size_t *plen, size_t *flen)
{
    unsigned w = c->prefix_width;
    if (len < w)
        return 0;
    uint64_t n = get_uint(buf, w, c->byte_order == TC_LITTLE_ENDIAN);
    if (n > (uint64_t)max)
        return TC_ETOOBIG; /* refused on the prefix alone: nothing is buffered for it */
    if (len - w < n)
        return 0;
    *off = w;
    *plen = (size_t)n;
    *flen = w + (size_t)n;
    return 1;
}

static int scan_custom(const tc_codec *c, const unsigned char *buf, size_t len, size_t max,
                       size_t *off, size_t *plen, size_t *flen)
{
    static const unsigned char empty[1];
    size_t n = 0;
    /* Show the callback at most one byte past the maximum: enough to tell a
     * frame that is too long from one that fits. */
    size_t shown = len > max + 1 ? max + 1 : len;
    int rc = c->scan(shown ? (const void *)buf : (const void *)empty, shown, &n, c->scan_ctx);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return shown > max ? TC_ETOOBIG : 0;
    if (n == 0 || n > shown)
        return TC_EBADFRAME; /* the callback broke its contract */
    if (n > max)
        return TC_ETOOBIG;
    *off = 0;
    *plen = n;
    *flen = n;
    return 1;
}

int tc__codec_scan_from(const tc_codec *c, const void *buf, size_t len, size_t from,
                        size_t *off, size_t *plen, size_t *flen)
{
    size_t max = tc_codec_max_frame(c);
    const unsigned char *b = buf;
    switch (c->kind) {
    case TC_CODEC_RAW:
        if (len == 0)
            return 0;
        *off = 0;
        *plen = *flen = len < max ? len : max;
        return 1;
    case TC_CODEC_DELIMITED:
        return scan_delimited(c, b, len, from, max, off, plen, flen);
    case TC_CODEC_LENGTH_PREFIXED:
        return scan_prefixed(c, b, len, max, off, plen, flen);
    case TC_CODEC_CUSTOM:
        return scan_custom(c, b, len, max, off, plen, flen);
    default:
        return -EINVAL;
    }
}

int tc_codec_scan(const tc_codec *c, const void *buf, size_t len, size_t *payload_off,
                  size_t *payload_len, size_t *frame_len)
{
    if (tc_codec_validate(c) < 0 || !payload_off || !payload_len || !frame_len ||
        (!buf && len))
        return -EINVAL;
    return tc__codec_scan_from(c, buf, len, 0, payload_off, payload_len, frame_len);
}

/* Whether payload followed by the delimiter reads back as exactly that payload:
 * the first occurrence of the delimiter in payload ++ delim must be the last one. */
static int delimiter_safe(const tc_codec *c, const unsigned char *p, size_t len)
{
    size_t d = c->delim_len;
    if (len >= d && (d == 1 ? memchr(p, c->delim[0], len) != NULL
                            : memmem(p, len, c->delim, d) != NULL))
        return 0;
    /* A match straddling the end of the payload and the start of the delimiter. */
    for (size_t k = 1; k < d && k <= len; k++)
        if (memcmp(p + len - k, c->delim, k) == 0 && memcmp(c->delim + k, c->delim, d - k) == 0)
            return 0;
    return 1;
}

int tc_codec_encode(const tc_codec *c, const void *payload, size_t len, tc_codec_envelope *env)
{
    if (tc_codec_validate(c) < 0 || !env || (!payload && len))
        return -EINVAL;
    memset(env, 0, sizeof *env); /* unused bytes too: the caller may copy it whole */
    return tc__codec_encode(c, payload, len, env);
}

int tc__codec_encode(const tc_codec *c, const void *payload, size_t len, tc_codec_envelope *env)
{
    env->head_len = env->tail_len = 0;
    size_t max = tc_codec_max_frame(c);
    switch (c->kind) {
    case TC_CODEC_RAW:
        return 0;
    case TC_CODEC_DELIMITED:
        if (len > max)
            return TC_ETOOBIG;
        if (len && !delimiter_safe(c, payload, len))
            return TC_EBADFRAME;
        memcpy(env->tail, c->delim, c->delim_len);
        env->tail_len = c->delim_len;
        return 0;
    case TC_CODEC_LENGTH_PREFIXED: {
        unsigned w = c->prefix_width;
        if (len > max || (w < 8 && (uint64_t)len >> (8 * w)))
            return TC_ETOOBIG;
        put_uint(env->head, w, c->byte_order == TC_LITTLE_ENDIAN, (uint64_t)len);
        env->head_len = w;
        return 0;
    }
    case TC_CODEC_CUSTOM: {
        size_t off, plen, flen;
        if (len > max)
            return TC_ETOOBIG;
        int rc = scan_custom(c, payload, len, max, &off, &plen, &flen);
        return rc == 1 && flen == len ? 0 : TC_EBADFRAME;
    }
    default:
        return -EINVAL;
    }
}
