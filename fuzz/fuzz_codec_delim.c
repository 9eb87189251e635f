/* SPDX-License-Identifier: MIT */
/* libFuzzer target: delimited codecs. Input: [dlen][delimiter bytes][max lo]
 * [max hi][step][stream...]. Every frame's payload must hold no delimiter,
 * must be followed by one, and must encode back without complaint. */
#include "fuzz_common.h"

static void on_frame(const tc_codec *c, const unsigned char *buf, size_t off, size_t plen,
                     size_t flen)
{
    size_t d = c->delim_len;
    CHECK(off == 0 && flen == plen + d);
    CHECK(memcmp(buf + plen, c->delim, d) == 0);
    /* The first occurrence: none starts earlier. */
    for (size_t i = 0; i < plen; i++)
        CHECK(memcmp(buf + i, c->delim, d) != 0);
    tc_codec_envelope env;
    CHECK(tc_codec_encode(c, buf, plen, &env) == 0);
    CHECK(env.head_len == 0 && env.tail_len == d && memcmp(env.tail, c->delim, d) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 5)
        return 0;
    size_t dlen = 1 + data[0] % TC_CODEC_DELIM_MAX;
    if (size < 1 + dlen + 3)
        return 0;
    tc_codec c;
    CHECK(tc_codec_delimited(&c, data + 1, dlen) == 0);
    const uint8_t *p = data + 1 + dlen;
    size_t max = (size_t)p[0] | (size_t)p[1] << 8; /* 0 = the 1 MiB default */
    CHECK(tc_codec_set_max_frame(&c, max) == 0);
    size_t step = p[2];
    p += 3;
    drive(&c, p, size - (size_t)(p - data), step, on_frame);
    /* Arbitrary payloads: encode refuses exactly those that would not read back. */
    size_t n = size - (size_t)(p - data);
    tc_codec_envelope env;
    int rc = tc_codec_encode(&c, p, n, &env);
    if (rc == 0) {
        unsigned char *buf = __builtin_alloca(n + dlen);
        memcpy(buf, p, n);
        memcpy(buf + n, c.delim, dlen);
        size_t off, plen, flen;
        CHECK(tc_codec_scan(&c, buf, n + dlen, &off, &plen, &flen) == 1);
        CHECK(plen == n && flen == n + dlen);
    } else {
        CHECK(rc == TC_EBADFRAME || rc == TC_ETOOBIG);
    }
    return 0;
}
