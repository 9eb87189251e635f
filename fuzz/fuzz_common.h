/* SPDX-License-Identifier: MIT */
/* Shared by the codec fuzz targets: a check that traps (libFuzzer reports
 * it as a crash) and a stream driver that feeds the input to a codec in
 * pieces, as a channel would, checking each answer. */
#ifndef TC_FUZZ_COMMON_H
#define TC_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            __builtin_trap();                                                                      \
    } while (0)

/* Called for each frame found: the frame starts at buf, the payload at
 * buf + off. */
typedef void (*frame_fn)(const tc_codec *c, const unsigned char *buf, size_t off, size_t plen,
                         size_t flen);

/* Scan data as a stream: the buffer grows by step bytes at a time (step from
 * the input), frames are consumed as found. Checks the scan's contract and
 * that resuming a search (what the channel does) answers like a fresh scan. */
static void drive(const tc_codec *c, const unsigned char *data, size_t len, size_t step,
                  frame_fn on_frame)
{
    size_t max = tc_codec_max_frame(c), start = 0, have = 0, scanned = 0;
    if (step == 0)
        step = 1;
    while (start + have <= len) {
        size_t off = 0, plen = 0, flen = 0;
        const unsigned char *b = data + start;
        int rc = tc_codec_scan(c, have ? b : NULL, have, &off, &plen, &flen);
        size_t off2 = 0, plen2 = 0, flen2 = 0;
        int rc2 = tc__codec_scan_from(c, have ? b : NULL, have, scanned, &off2, &plen2, &flen2);
        CHECK(rc == rc2);
        if (rc == 1) {
            CHECK(off2 == off && plen2 == plen && flen2 == flen);
            CHECK(flen >= 1 || c->kind == TC_CODEC_LENGTH_PREFIXED || c->kind == TC_CODEC_DELIMITED);
            CHECK(flen <= have);
            CHECK(off + plen <= flen);
            CHECK(plen <= max);
            CHECK(flen <= max + tc__codec_overhead(c));
            if (on_frame)
                on_frame(c, b, off, plen, flen);
            start += flen;
            have -= flen;
            scanned = 0;
            if (flen == 0)
                break; /* cannot happen: checked above for the kinds that allow it */
            continue;
        }
        if (rc < 0) {
            CHECK(rc == TC_ETOOBIG || rc == TC_EBADFRAME);
            return; /* the channel would be broken from here */
        }
        CHECK(rc == 0);
        /* Need more: the bound holds; a buffer at the limit cannot need more. */
        CHECK(have < max + tc__codec_overhead(c) + (c->kind == TC_CODEC_CUSTOM ? 1 : 0));
        scanned = have;
        if (start + have == len)
            break;
        size_t add = len - start - have < step ? len - start - have : step;
        have += add;
    }
}

#endif
