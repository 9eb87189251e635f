/* SPDX-License-Identifier: MIT */
/* libFuzzer target: length-prefixed codecs in every width and byte order.
 * Input: [width/order][max lo][max hi][max top][step][stream...]. A frame's
 * prefix must decode to its payload length and encode back to the same bytes;
 * a prefix over the maximum must be refused on the prefix alone. */
#include "fuzz_common.h"

static void on_frame(const tc_codec *c, const unsigned char *buf, size_t off, size_t plen,
                     size_t flen)
{
    unsigned w = c->prefix_width;
    CHECK(off == w && flen == w + plen);
    tc_codec_envelope env;
    CHECK(tc_codec_encode(c, buf + off, plen, &env) == 0);
    CHECK(env.head_len == w && env.tail_len == 0 && memcmp(env.head, buf, w) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const unsigned widths[] = {1, 2, 4, 8};
    if (size < 5)
        return 0;
    unsigned w = widths[data[0] & 3];
    tc_byte_order order = (data[0] >> 2) & 1 ? TC_LITTLE_ENDIAN : TC_BIG_ENDIAN;
    tc_codec c;
    CHECK(tc_codec_length_prefixed(&c, w, order) == 0);
    /* Mostly small maximums, sometimes huge ones (prefixes up to 2^40). */
    size_t max = (size_t)data[1] | (size_t)data[2] << 8;
    if (data[3] & 1)
        max = TC_CODEC_MAX_FRAME_LIMIT >> (data[3] >> 4);
    CHECK(tc_codec_set_max_frame(&c, max) == 0);
    size_t step = data[4];
    const uint8_t *p = data + 5;
    size_t n = size - 5;
    drive(&c, p, n, step, on_frame);
    /* The first prefix alone decides TC_ETOOBIG. */
    if (n >= w) {
        uint64_t v = 0;
        for (unsigned i = 0; i < w; i++)
            v = (v << 8) | p[order == TC_LITTLE_ENDIAN ? w - 1 - i : i];
        size_t off, plen, flen;
        int rc = tc_codec_scan(&c, p, w, &off, &plen, &flen);
        if (v > tc_codec_max_frame(&c))
            CHECK(rc == TC_ETOOBIG);
        else
            CHECK(rc == (v == 0 ? 1 : 0));
    }
    return 0;
}
