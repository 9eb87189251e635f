/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the custom codec with the netstring scan of the
 * examples. Input: [max lo][max hi][limits?][step][stream...]. Each frame
 * must be a well-formed netstring whose declared length matches. */
#include <stdlib.h>

#include "fuzz_common.h"
#include "netstring.h"

static void on_frame(const tc_codec *c, const unsigned char *buf, size_t off, size_t plen,
                     size_t flen)
{
    CHECK(off == 0 && plen == flen && flen >= 3);
    CHECK(buf[flen - 1] == ',');
    const char *payload;
    size_t n;
    CHECK(netstring_payload(buf, flen, &payload, &n) == 0);
    CHECK((size_t)strtoull((const char *)buf, NULL, 10) == n || n == 0);
    tc_codec_envelope env;
    CHECK(tc_codec_encode(c, buf, flen, &env) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct netstring_limits limits;
    if (size < 4)
        return 0;
    size_t max = (size_t)data[0] | (size_t)data[1] << 8;
    limits.max_frame = max;
    tc_codec c;
    CHECK(tc_codec_custom(&c, netstring_scan, data[2] & 1 ? &limits : NULL) == 0);
    CHECK(tc_codec_set_max_frame(&c, max) == 0);
    drive(&c, data + 4, size - 4, data[3], on_frame);
    return 0;
}
