/* SPDX-License-Identifier: MIT */
/* Netstrings ("5:hello,"), a self-describing format, as a custom codec scan
 * callback: shared by the netstring_server example, the tests and the fuzzer. */
#ifndef TCPCHAN_EXAMPLE_NETSTRING_H
#define TCPCHAN_EXAMPLE_NETSTRING_H

#include <stddef.h>
#include <stdint.h>

#include <tcpchan/tcpchan.h>

/* Optional scan context: refuse a frame over max_frame as soon as its length
 * digits are read, before its bytes arrive. */
struct netstring_limits {
    size_t max_frame;
};

#define NETSTRING_MAX_DIGITS 19 /* fits in 64 bits without overflow checks */

/* tc_codec_scan_fn for netstrings: 1 and *frame_len for a complete
 * "LEN:BYTES,", 0 for need more, TC_EBADFRAME or TC_ETOOBIG. */
static inline int netstring_scan(const void *buf, size_t len, size_t *frame_len, void *ctx)
{
    const unsigned char *b = buf;
    const struct netstring_limits *lim = ctx;
    uint64_t n = 0;
    size_t i = 0;
    for (; i < len && b[i] != ':'; i++) {
        if (b[i] < '0' || b[i] > '9' || i == NETSTRING_MAX_DIGITS)
            return TC_EBADFRAME;
        if (i == 1 && b[0] == '0')
            return TC_EBADFRAME; /* no leading zeros */
        n = n * 10 + (uint64_t)(b[i] - '0');
    }
    if (i < len && i == 0)
        return TC_EBADFRAME; /* ":" without a length */
    uint64_t frame = (uint64_t)i + 1 + n + 1;
    if (lim && lim->max_frame && frame > lim->max_frame)
        return TC_ETOOBIG;
    if (i == len || (uint64_t)len < frame)
        return 0;
    if (b[frame - 1] != ',')
        return TC_EBADFRAME;
    *frame_len = (size_t)frame;
    return 1;
}

/* The payload of a complete netstring frame (as netstring_scan found it). */
static inline int netstring_payload(const void *frame, size_t len, const char **payload,
                                    size_t *plen)
{
    const char *f = frame;
    size_t i = 0;
    while (i < len && f[i] != ':')
        i++;
    if (i + 2 > len)
        return TC_EBADFRAME;
    *payload = f + i + 1;
    *plen = len - i - 2;
    return 0;
}

#endif /* TCPCHAN_EXAMPLE_NETSTRING_H */
