/* SPDX-License-Identifier: MIT */
/* Framing codecs: constructors, scan at every split point of every input,
 * limits at / under / over the maximum, malformed input, the encoder, and
 * scans against a guard page (nothing is read past len). Pure: no sockets. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <tcpchan/tcpchan.h>

#include "../examples/netstring.h"

TestSuite(codec, .timeout = 30);

/* For the hot loops: record an assertion only when it fails, so that
 * --full-stats does not log millions of passing ones. */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            cr_assert_fail(__VA_ARGS__);                                                           \
    } while (0)

/* A frame expected from a stream: its payload. */
struct expect {
    const char *payload;
    size_t len;
};

/* Feed input to a consumer the way a channel does, in pieces cut at the
 * given split points (sorted, within len), and check the frames it yields.
 * Returns the code that ended the stream: 0 when all input was consumed at a
 * frame boundary, 0 with leftover bytes counted in *left, or the error. */
static int run_stream(const tc_codec *c, const unsigned char *in, size_t len, const size_t *cuts,
                      size_t ncuts, const struct expect *ex, size_t nex, size_t *left)
{
    unsigned char *buf = malloc(len + 1);
    size_t have = 0, fed = 0, next = 0;
    CHECK(buf, "out of memory");
    for (size_t piece = 0; piece <= ncuts; piece++) {
        size_t upto = piece < ncuts ? cuts[piece] : len;
        memcpy(buf + have, in + fed, upto - fed);
        have += upto - fed;
        fed = upto;
        for (;;) {
            size_t off = 99, plen = 99, flen = 99;
            int rc = tc_codec_scan(c, buf, have, &off, &plen, &flen);
            if (rc == 0)
                break;
            if (rc < 0) {
                free(buf);
                *left = have;
                return rc;
            }
            CHECK(rc == 1, "scan returned %d", rc);
            CHECK(next < nex, "more frames than expected");
            CHECK(flen <= have && off + plen <= flen, "frame outside the buffer");
            CHECK(plen == ex[next].len, "frame %zu: length %zu, expected %zu", next, plen,
                  ex[next].len);
            CHECK(memcmp(buf + off, ex[next].payload, plen) == 0, "frame %zu differs", next);
            next++;
            memmove(buf, buf + flen, have - flen);
            have -= flen;
        }
    }
    free(buf);
    CHECK(next == nex, "%zu frames, expected %zu", next, nex);
    *left = have;
    return 0;
}

/* The stream cut at every single point, at every pair of points, and fed one
 * byte at a time must give the same frames. */
static void check_all_splits(const tc_codec *c, const void *input, size_t len,
                             const struct expect *ex, size_t nex, int want_rc)
{
    const unsigned char *in = input;
    size_t left;
    int rc = run_stream(c, in, len, NULL, 0, ex, nex, &left);
    cr_assert_eq(rc, want_rc, "whole: %s", tc_err_name(rc));
    for (size_t i = 0; i <= len; i++) {
        size_t cut[1] = {i};
        rc = run_stream(c, in, len, cut, 1, ex, nex, &left);
        CHECK(rc == want_rc, "split at %zu: %s", i, tc_err_name(rc));
        for (size_t j = i; j <= len && len <= 64; j++) {
            size_t cut2[2] = {i, j};
            rc = run_stream(c, in, len, cut2, 2, ex, nex, &left);
            CHECK(rc == want_rc, "split at %zu,%zu: %s", i, j, tc_err_name(rc));
        }
    }
    size_t *ones = malloc((len + 1) * sizeof *ones);
    for (size_t i = 0; i < len; i++)
        ones[i] = i + 1;
    rc = run_stream(c, in, len, ones, len, ex, nex, &left);
    free(ones);
    cr_assert_eq(rc, want_rc, "byte by byte: %s", tc_err_name(rc));
}

#define S(x) {x, sizeof x - 1}

Test(codec, zero_initialised_is_raw_with_default_max)
{
    tc_codec z;
    memset(&z, 0, sizeof z);
    tc_codec init = TC_CODEC_INIT;
    cr_assert_eq(z.kind, TC_CODEC_RAW);
    cr_assert_eq(tc_codec_validate(&z), 0);
    cr_assert_eq(tc_codec_validate(&init), 0);
    cr_assert_eq(tc_codec_max_frame(&z), (size_t)1 << 20);
    cr_assert_eq(tc_codec_max_frame(NULL), (size_t)1 << 20);
    tc_codec r;
    cr_assert_eq(tc_codec_raw(&r), 0);
    cr_assert(memcmp(&r, &z, sizeof r) == 0);
}

Test(codec, constructors_reject_bad_arguments)
{
    tc_codec c;
    memset(&c, 0x5a, sizeof c);
    tc_codec before = c;
    cr_assert_eq(tc_codec_delimited(&c, "", 0), -EINVAL);
    cr_assert_eq(tc_codec_delimited(&c, "123456789", 9), -EINVAL);
    cr_assert_eq(tc_codec_delimited(&c, NULL, 1), -EINVAL);
    cr_assert_eq(tc_codec_length_prefixed(&c, 3, TC_BIG_ENDIAN), -EINVAL);
    cr_assert_eq(tc_codec_length_prefixed(&c, 0, TC_BIG_ENDIAN), -EINVAL);
    cr_assert_eq(tc_codec_length_prefixed(&c, 4, (tc_byte_order)7), -EINVAL);
    cr_assert_eq(tc_codec_custom(&c, NULL, NULL), -EINVAL);
    cr_assert(memcmp(&c, &before, sizeof c) == 0, "failed constructors must not write");
    cr_assert_eq(tc_codec_raw(NULL), -EINVAL);
    cr_assert_eq(tc_codec_delimited(&c, "12345678", 8), 0);
    cr_assert_eq(tc_codec_set_max_frame(&c, TC_CODEC_MAX_FRAME_LIMIT + 1), -EINVAL);
    cr_assert_eq(tc_codec_set_max_frame(&c, 10), 0);
    cr_assert_eq(tc_codec_max_frame(&c), 10);
    cr_assert_eq(tc_codec_set_max_frame(&c, 0), 0);
    cr_assert_eq(tc_codec_max_frame(&c), (size_t)1 << 20);
    cr_assert_eq(tc_codec_set_max_frame(NULL, 1), -EINVAL);
    /* Hand-filled codecs are validated. */
    tc_codec bad = TC_CODEC_INIT;
    bad.kind = TC_CODEC_DELIMITED;
    cr_assert_eq(tc_codec_validate(&bad), -EINVAL);
    bad.kind = TC_CODEC_LENGTH_PREFIXED;
    bad.prefix_width = 5;
    cr_assert_eq(tc_codec_validate(&bad), -EINVAL);
    bad.kind = TC_CODEC_CUSTOM;
    cr_assert_eq(tc_codec_validate(&bad), -EINVAL);
    bad.kind = (tc_codec_kind)42;
    cr_assert_eq(tc_codec_validate(&bad), -EINVAL);
    size_t o, p, f;
    cr_assert_eq(tc_codec_scan(&bad, "x", 1, &o, &p, &f), -EINVAL);
    cr_assert_eq(tc_codec_scan(NULL, "x", 1, &o, &p, &f), -EINVAL);
    cr_assert_eq(tc_codec_validate(NULL), -EINVAL);
}

Test(codec, raw_frames_are_what_is_there_up_to_max)
{
    tc_codec c = TC_CODEC_INIT;
    size_t o, p, f;
    cr_assert_eq(tc_codec_scan(&c, NULL, 0, &o, &p, &f), 0);
    cr_assert_eq(tc_codec_scan(&c, "hello", 5, &o, &p, &f), 1);
    cr_assert(o == 0 && p == 5 && f == 5);
    tc_codec_set_max_frame(&c, 3);
    cr_assert_eq(tc_codec_scan(&c, "hello", 5, &o, &p, &f), 1);
    cr_assert(o == 0 && p == 3 && f == 3);
}

Test(codec, newline_at_every_split)
{
    tc_codec c;
    tc_codec_delimited(&c, "\n", 1);
    const char in[] = "one\n\ntwo two\nthree\n";
    struct expect ex[] = {S("one"), S(""), S("two two"), S("three")};
    check_all_splits(&c, in, sizeof in - 1, ex, 4, 0);
}

Test(codec, crlf_and_nul_and_long_delimiters_at_every_split)
{
    tc_codec c;
    tc_codec_delimited(&c, "\r\n", 2);
    const char in[] = "a\rb\r\n\r\n\n\r\r\r\nlast\r\n";
    struct expect ex[] = {S("a\rb"), S(""), S("\n\r\r"), S("last")};
    check_all_splits(&c, in, sizeof in - 1, ex, 4, 0);

    tc_codec_delimited(&c, "\0", 1);
    const char z[] = "x\0yy\0\0";
    struct expect ez[] = {S("x"), S("yy"), S("")};
    check_all_splits(&c, z, sizeof z - 1, ez, 3, 0);

    tc_codec_delimited(&c, "--END--!", 8);
    const char l[] = "--END-!--END--!--END--!-x-END--!--END--!";
    struct expect el[] = {S("--END-!"), S(""), S("-x-END--!")};
    check_all_splits(&c, l, sizeof l - 1, el, 3, 0);

    /* Self-overlapping delimiter: the first complete match wins. */
    tc_codec_delimited(&c, "aa", 2);
    const char o[] = "baaaab";
    struct expect eo[] = {S("b"), S("")};
    size_t left;
    cr_assert_eq(run_stream(&c, (const unsigned char *)o, 6, NULL, 0, eo, 2, &left), 0);
    cr_assert_eq(left, 1);
}

Test(codec, delimited_limit_at_under_over)
{
    tc_codec c;
    tc_codec_delimited(&c, "\r\n", 2);
    tc_codec_set_max_frame(&c, 8);
    size_t o, p, f;
    cr_assert_eq(tc_codec_scan(&c, "12345678\r\n", 10, &o, &p, &f), 1, "exactly at max");
    cr_assert_eq(p, 8);
    cr_assert_eq(f, 10);
    cr_assert_eq(tc_codec_scan(&c, "1234567\r\n", 9, &o, &p, &f), 1, "one under");
    cr_assert_eq(p, 7);
    cr_assert_eq(tc_codec_scan(&c, "123456789\r\n", 11, &o, &p, &f), TC_ETOOBIG, "one over");
    /* Detected before the delimiter arrives: max + dlen bytes with none in them. */
    cr_assert_eq(tc_codec_scan(&c, "123456789", 9, &o, &p, &f), 0, "may still end at 8 + \\r\\n");
    cr_assert_eq(tc_codec_scan(&c, "12345678\r", 9, &o, &p, &f), 0);
    cr_assert_eq(tc_codec_scan(&c, "123456789\r", 10, &o, &p, &f), TC_ETOOBIG);
    cr_assert_eq(tc_codec_scan(&c, "1234567890", 10, &o, &p, &f), TC_ETOOBIG);
    /* Every split of an over-long stream reports TC_ETOOBIG after the good frame. */
    const char in[] = "ok\r\n123456789\r\n";
    struct expect ex[] = {S("ok")};
    check_all_splits(&c, in, sizeof in - 1, ex, 1, TC_ETOOBIG);
}

static void put_be(unsigned char *p, unsigned w, uint64_t v)
{
    for (unsigned i = 0; i < w; i++)
        p[w - 1 - i] = (unsigned char)(v >> (8 * i));
}

static void put_le(unsigned char *p, unsigned w, uint64_t v)
{
    for (unsigned i = 0; i < w; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

Test(codec, length_prefix_all_widths_and_orders_at_every_split)
{
    static const unsigned widths[] = {1, 2, 4, 8};
    for (int le = 0; le <= 1; le++) {
        for (size_t wi = 0; wi < 4; wi++) {
            unsigned w = widths[wi];
            tc_codec c;
            cr_assert_eq(tc_codec_length_prefixed(&c, w, le ? TC_LITTLE_ENDIAN : TC_BIG_ENDIAN), 0);
            struct expect ex[] = {S("hello"), S(""), S("x"), S("0123456789abcdef")};
            unsigned char in[128];
            size_t n = 0;
            for (size_t i = 0; i < 4; i++) {
                tc_codec_envelope env;
                cr_assert_eq(tc_codec_encode(&c, ex[i].payload, ex[i].len, &env), 0);
                cr_assert_eq(env.head_len, w);
                cr_assert_eq(env.tail_len, 0);
                unsigned char want[8];
                (le ? put_le : put_be)(want, w, ex[i].len);
                cr_assert(memcmp(env.head, want, w) == 0, "prefix bytes, width %u le %d", w, le);
                memcpy(in + n, env.head, w);
                memcpy(in + n + w, ex[i].payload, ex[i].len);
                n += w + ex[i].len;
            }
            check_all_splits(&c, in, n, ex, 4, 0);
        }
    }
}

Test(codec, length_prefix_limit_at_under_over)
{
    tc_codec c;
    tc_codec_length_prefixed(&c, 2, TC_BIG_ENDIAN);
    tc_codec_set_max_frame(&c, 4);
    size_t o, p, f;
    cr_assert_eq(tc_codec_scan(&c, "\0\4abcd", 6, &o, &p, &f), 1, "at max");
    cr_assert(o == 2 && p == 4 && f == 6);
    cr_assert_eq(tc_codec_scan(&c, "\0\3abc", 5, &o, &p, &f), 1, "under");
    /* Over: refused on the two prefix bytes alone. */
    cr_assert_eq(tc_codec_scan(&c, "\0\5", 2, &o, &p, &f), TC_ETOOBIG, "over");
    cr_assert_eq(tc_codec_scan(&c, "\0", 1, &o, &p, &f), 0);
    tc_codec_envelope env;
    cr_assert_eq(tc_codec_encode(&c, "abcde", 5, &env), TC_ETOOBIG);
    cr_assert_eq(tc_codec_encode(&c, "abcd", 4, &env), 0);
}

Test(codec, length_prefix_announcing_4GiB_is_refused_at_once)
{
    tc_codec c;
    unsigned char h8[8], h4[4] = {0xff, 0xff, 0xff, 0xff};
    size_t o, p, f;
    tc_codec_length_prefixed(&c, 8, TC_BIG_ENDIAN);
    put_be(h8, 8, (uint64_t)4 << 30);
    cr_assert_eq(tc_codec_scan(&c, h8, 8, &o, &p, &f), TC_ETOOBIG);
    put_be(h8, 8, UINT64_MAX);
    cr_assert_eq(tc_codec_scan(&c, h8, 8, &o, &p, &f), TC_ETOOBIG);
    tc_codec_length_prefixed(&c, 4, TC_LITTLE_ENDIAN);
    tc_codec_set_max_frame(&c, TC_CODEC_MAX_FRAME_LIMIT);
    cr_assert_eq(tc_codec_scan(&c, h4, 4, &o, &p, &f), 0, "fits the limit: need more");
    tc_codec_set_max_frame(&c, 0);
    cr_assert_eq(tc_codec_scan(&c, h4, 4, &o, &p, &f), TC_ETOOBIG);
}

Test(codec, length_prefix_width_bounds_the_encoder)
{
    tc_codec c;
    tc_codec_length_prefixed(&c, 1, TC_BIG_ENDIAN);
    static char big[300];
    tc_codec_envelope env;
    cr_assert_eq(tc_codec_encode(&c, big, 255, &env), 0);
    cr_assert_eq(env.head[0], 255);
    cr_assert_eq(tc_codec_encode(&c, big, 256, &env), TC_ETOOBIG);
}

Test(codec, delimited_encoder_refuses_payloads_that_would_not_read_back)
{
    tc_codec c;
    tc_codec_envelope env;
    tc_codec_delimited(&c, "\n", 1);
    cr_assert_eq(tc_codec_encode(&c, "ab", 2, &env), 0);
    cr_assert_eq(env.tail_len, 1);
    cr_assert_eq(env.tail[0], '\n');
    cr_assert_eq(env.head_len, 0);
    cr_assert_eq(tc_codec_encode(&c, "a\nb", 3, &env), TC_EBADFRAME);
    cr_assert_eq(tc_codec_encode(&c, "", 0, &env), 0);
    tc_codec_delimited(&c, "aa", 2);
    cr_assert_eq(tc_codec_encode(&c, "xa", 2, &env), TC_EBADFRAME, "xa+aa reads back as x");
    cr_assert_eq(tc_codec_encode(&c, "ax", 2, &env), 0);
    tc_codec_delimited(&c, "\r\n", 2);
    cr_assert_eq(tc_codec_encode(&c, "x\r", 2, &env), 0, "x\\r\\r\\n reads back as x\\r");
    tc_codec_set_max_frame(&c, 2);
    cr_assert_eq(tc_codec_encode(&c, "abc", 3, &env), TC_ETOOBIG);
    tc_codec raw = TC_CODEC_INIT;
    tc_codec_set_max_frame(&raw, 2);
    cr_assert_eq(tc_codec_encode(&raw, "abc", 3, &env), 0, "raw writes have no limit");
    cr_assert(env.head_len == 0 && env.tail_len == 0);
}

Test(codec, custom_netstring_at_every_split)
{
    tc_codec c;
    cr_assert_eq(tc_codec_custom(&c, netstring_scan, NULL), 0);
    const char in[] = "5:hello,0:,12:hello world!,";
    struct expect ex[] = {S("5:hello,"), S("0:,"), S("12:hello world!,")};
    check_all_splits(&c, in, sizeof in - 1, ex, 3, 0);
    const char *payload;
    size_t plen;
    cr_assert_eq(netstring_payload("5:hello,", 8, &payload, &plen), 0);
    cr_assert_eq(plen, 5);
    cr_assert(memcmp(payload, "hello", 5) == 0);
}

Test(codec, custom_netstring_malformed_and_too_big)
{
    tc_codec c;
    size_t o, p, f;
    tc_codec_custom(&c, netstring_scan, NULL);
    cr_assert_eq(tc_codec_scan(&c, "x:", 2, &o, &p, &f), TC_EBADFRAME);
    cr_assert_eq(tc_codec_scan(&c, "5:hellox", 8, &o, &p, &f), TC_EBADFRAME);
    cr_assert_eq(tc_codec_scan(&c, "05:hello,", 9, &o, &p, &f), TC_EBADFRAME);
    cr_assert_eq(tc_codec_scan(&c, ":", 1, &o, &p, &f), TC_EBADFRAME);
    cr_assert_eq(tc_codec_scan(&c, "5:hel", 5, &o, &p, &f), 0);
    tc_codec_set_max_frame(&c, 8);
    cr_assert_eq(tc_codec_scan(&c, "5:hello,", 8, &o, &p, &f), 1, "frame of exactly max");
    cr_assert_eq(tc_codec_scan(&c, "6:hello!,", 9, &o, &p, &f), TC_ETOOBIG, "one over");
    cr_assert_eq(tc_codec_scan(&c, "6:hello!", 8, &o, &p, &f), 0, "could still be 8");
    /* A length that can never fit is refused by the callback's own bound. */
    struct netstring_limits lim = {.max_frame = 8};
    tc_codec_custom(&c, netstring_scan, &lim);
    cr_assert_eq(tc_codec_scan(&c, "999999999:", 10, &o, &p, &f), TC_ETOOBIG);
    tc_codec_envelope env;
    tc_codec_custom(&c, netstring_scan, NULL);
    cr_assert_eq(tc_codec_encode(&c, "3:abc,", 6, &env), 0);
    cr_assert_eq(tc_codec_encode(&c, "3:abc,3:abc,", 12, &env), TC_EBADFRAME, "two frames");
    cr_assert_eq(tc_codec_encode(&c, "3:ab", 4, &env), TC_EBADFRAME, "half a frame");
}

static int liar_scan(const void *buf, size_t len, size_t *frame_len, void *ctx)
{
    (void)buf;
    *frame_len = len + *(size_t *)ctx; /* beyond what it was shown */
    return 1;
}

static int zero_scan(const void *buf, size_t len, size_t *frame_len, void *ctx)
{
    (void)buf, (void)len, (void)ctx;
    *frame_len = 0;
    return 1;
}

Test(codec, custom_callback_breaking_its_contract_is_a_bad_frame)
{
    tc_codec c;
    size_t o, p, f, extra = 1;
    tc_codec_custom(&c, liar_scan, &extra);
    cr_assert_eq(tc_codec_scan(&c, "abc", 3, &o, &p, &f), TC_EBADFRAME);
    tc_codec_custom(&c, zero_scan, NULL);
    cr_assert_eq(tc_codec_scan(&c, "abc", 3, &o, &p, &f), TC_EBADFRAME);
}

/* Bytes placed so that they end exactly at a PROT_NONE page: any read past
 * len faults. */
static unsigned char *guarded(const void *data, size_t len, void **map, size_t *maplen)
{
    long pg = sysconf(_SC_PAGESIZE);
    *maplen = 2 * (size_t)pg;
    unsigned char *m = mmap(NULL, *maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(m, MAP_FAILED);
    cr_assert_eq(mprotect(m + pg, (size_t)pg, PROT_NONE), 0);
    unsigned char *p = m + pg - len;
    memcpy(p, data, len);
    *map = m;
    return p;
}

Test(codec, scans_never_read_past_len)
{
    tc_codec codecs[5];
    tc_codec_delimited(&codecs[0], "\n", 1);
    tc_codec_delimited(&codecs[1], "\r\n", 2);
    tc_codec_length_prefixed(&codecs[2], 4, TC_BIG_ENDIAN);
    tc_codec_custom(&codecs[3], netstring_scan, NULL);
    tc_codec_raw(&codecs[4]);
    const char *inputs[] = {"abc\r", "abc", "\0\0\0\x09hello", "12:hello", "5:hel", "x"};
    for (size_t ci = 0; ci < 5; ci++) {
        for (size_t ii = 0; ii < sizeof inputs / sizeof inputs[0]; ii++) {
            size_t n = ii == 2 ? 9 : strlen(inputs[ii]);
            for (size_t len = 0; len <= n; len++) {
                void *map;
                size_t maplen, o, p, f;
                unsigned char *b = guarded(inputs[ii], len, &map, &maplen);
                int rc = tc_codec_scan(&codecs[ci], b, len, &o, &p, &f);
                CHECK(rc >= -4199 && rc <= 1, "scan returned %d", rc);
                munmap(map, maplen);
            }
        }
    }
}
