/* SPDX-License-Identifier: MIT */
/* The WebSocket leaves (internal: compiled into this test): SHA-1 against
 * FIPS 180's vectors, base64 against RFC 4648's, the handshake's accept
 * value from RFC 6455's example, frame headers (7, 16 and 64-bit lengths,
 * masks, every split), UTF-8 (every split), the receiver's step over every
 * opcode and rule, fed a byte at a time as a channel would, and the HTTP
 * request parser. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

TestSuite(ws_frame, .timeout = 20);

static void hex(const unsigned char *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void expect_sha1(const void *data, size_t len, const char *want)
{
    unsigned char d[TC__SHA1_LEN];
    char h[41];
    tc__sha1(data, len, d);
    hex(d, sizeof d, h);
    cr_assert_str_eq(h, want);
}

Test(ws_frame, sha1_fips180_vectors)
{
    expect_sha1("abc", 3, "a9993e364706816aba3e25717850c26c9cd0d89d");
    expect_sha1("", 0, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    expect_sha1(two, strlen(two), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    const char *four = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
                       "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    expect_sha1(four, strlen(four), "a49b2446a02c645bf419f995b67091253a04a259");
    char *million = malloc(1000000);
    cr_assert_not_null(million);
    memset(million, 'a', 1000000);
    expect_sha1(million, 1000000, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    free(million);
}

/* Fed in two pieces split anywhere, the digest is the one-shot one (also
 * around the 55/56/64-byte padding edges). */
Test(ws_frame, sha1_incremental_every_split)
{
    unsigned char data[130];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (unsigned char)(i * 7 + 3);
    for (size_t len = 0; len <= sizeof data; len++) {
        unsigned char one[TC__SHA1_LEN];
        tc__sha1(data, len, one);
        for (size_t cut = 0; cut <= len; cut++) {
            unsigned char two[TC__SHA1_LEN];
            tc__sha1_ctx s;
            tc__sha1_init(&s);
            tc__sha1_update(&s, data, cut);
            tc__sha1_update(&s, data + cut, len - cut);
            tc__sha1_final(&s, two);
            if (memcmp(one, two, sizeof one) != 0)
                cr_assert_fail("len %zu cut %zu", len, cut);
        }
    }
}

Test(ws_frame, base64_rfc4648_vectors)
{
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const coded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=",
                                        "Zm9vYmFy"};
    for (size_t i = 0; i < 7; i++) {
        char out[16];
        unsigned char back[16];
        size_t n = tc__base64_encode(plain[i], strlen(plain[i]), out);
        cr_assert_eq(n, strlen(coded[i]));
        cr_assert_str_eq(out, coded[i]);
        ssize_t m = tc__base64_decode(coded[i], n, back, sizeof back);
        cr_assert_eq(m, (ssize_t)strlen(plain[i]));
        cr_assert_eq(memcmp(back, plain[i], (size_t)m), 0);
    }
    unsigned char b[16];
    cr_assert_eq(tc__base64_decode("Zg=", 3, b, sizeof b), -EINVAL);      /* not 4k long */
    cr_assert_eq(tc__base64_decode("Z!==", 4, b, sizeof b), -EINVAL);     /* alphabet */
    cr_assert_eq(tc__base64_decode("Zh==", 4, b, sizeof b), -EINVAL);     /* not canonical */
    cr_assert_eq(tc__base64_decode("Zg==Zg==", 8, b, sizeof b), -EINVAL); /* padding inside */
    cr_assert_eq(tc__base64_decode("Zm9vYmFy", 8, b, 5), -ENOSPC);
}

/* RFC 6455 section 1.3's example, from the leaves. */
Test(ws_frame, handshake_accept_rfc6455_example)
{
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    char both[80], out[29];
    unsigned char d[TC__SHA1_LEN];
    snprintf(both, sizeof both, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    tc__sha1(both, strlen(both), d);
    tc__base64_encode(d, sizeof d, out);
    cr_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

/* ---- headers ------------------------------------------------------------------ */

Test(ws_frame, header_lengths_7_16_64_and_masks)
{
    static const uint64_t lens[] = {0, 1, 125, 126, 127, 65535, 65536, (uint64_t)1 << 32,
                                    ((uint64_t)1 << 63) - 1};
    static const size_t sizes[] = {2, 2, 2, 4, 4, 4, 10, 10, 10};
    const unsigned char key[4] = {1, 2, 3, 4};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        for (int masked = 0; masked < 2; masked++) {
            unsigned char b[TC__WS_HDR_MAX];
            size_t n = tc__ws_header_build(b, 1, TC__WS_BINARY, lens[i], masked ? key : NULL);
            cr_assert_eq(n, sizes[i] + (masked ? 4 : 0), "len %llu", (unsigned long long)lens[i]);
            for (size_t cut = 0; cut < n; cut++) {
                tc__ws_hdr h;
                if (tc__ws_header_parse(b, cut, &h) != 0)
                    cr_assert_fail("a header cut at %zu of %zu is complete", cut, n);
            }
            tc__ws_hdr h;
            cr_assert_eq(tc__ws_header_parse(b, n, &h), 1);
            cr_assert_eq(h.len, lens[i]);
            cr_assert_eq(h.size, n);
            cr_assert_eq(h.masked, (unsigned)masked);
            cr_assert_eq(h.fin, 1);
            cr_assert_eq(h.opcode, TC__WS_BINARY);
            if (masked)
                cr_assert_eq(memcmp(h.mask, key, 4), 0);
        }
    }
    unsigned char top[10] = {0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0};
    tc__ws_hdr h;
    cr_assert_eq(tc__ws_header_parse(top, sizeof top, &h), TC_EBADFRAME); /* MSB set */
    unsigned char rsv[2] = {0xf1, 0};
    cr_assert_eq(tc__ws_header_parse(rsv, 2, &h), 1);
    cr_assert_eq(h.rsv, 7);
    cr_assert_eq(h.fin, 1);
}

Test(ws_frame, mask_is_an_involution_at_any_phase)
{
    const unsigned char key[4] = {0x37, 0xfa, 0x21, 0x3d};
    unsigned char a[100], b[100];
    for (size_t i = 0; i < sizeof a; i++)
        a[i] = (unsigned char)i;
    memcpy(b, a, sizeof b);
    tc__ws_mask(b, sizeof b, key, 0);
    for (size_t i = 0; i < sizeof b; i++)
        cr_assert_eq(b[i], a[i] ^ key[i & 3]);
    /* In two pieces, the second with its phase: the same. */
    unsigned char c[100];
    memcpy(c, a, sizeof c);
    tc__ws_mask(c, 13, key, 0);
    tc__ws_mask(c + 13, sizeof c - 13, key, 13);
    cr_assert_eq(memcmp(b, c, sizeof b), 0);
    tc__ws_mask(b, sizeof b, key, 0);
    cr_assert_eq(memcmp(a, b, sizeof a), 0);
}

/* ---- UTF-8 ---------------------------------------------------------------------- */

static int utf8_ok(const char *s, size_t n)
{
    return tc__utf8_feed(0, (const unsigned char *)s, n) == 0;
}

Test(ws_frame, utf8_valid_and_invalid)
{
    static const char *const good[] = {"", "hello", "\xc2\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
                                       "\xed\x9f\xbf", "\xee\x80\x80", "\xf4\x8f\xbf\xbf",
                                       "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5",
                                       "0123456789abcdef0123456789abcdef\xc3\xa9"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        cr_assert(utf8_ok(good[i], strlen(good[i])), "good %zu", i);
    static const char *const bad[] = {
        "\x80",             /* a lone continuation */
        "\xc0\x80",         /* overlong NUL */
        "\xc1\xbf",         /* overlong */
        "\xe0\x80\x80",     /* overlong */
        "\xe0\x9f\xbf",     /* overlong */
        "\xed\xa0\x80",     /* a surrogate */
        "\xf0\x80\x80\x80", /* overlong */
        "\xf4\x90\x80\x80", /* past U+10FFFF */
        "\xf5\x80\x80\x80", "\xff", "\xfe",
        "abcdefghijklmno\316\272\341\275\271\317\203\316\274\316\265\355\240\200edited",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(tc__utf8_feed(0, (const unsigned char *)bad[i], strlen(bad[i])),
                     TC__UTF8_BAD, "bad %zu", i);
    /* Truncated: not bad, not at a boundary either. */
    uint32_t st = tc__utf8_feed(0, (const unsigned char *)"\xf0\x9f\x98", 3);
    cr_assert_neq(st, 0);
    cr_assert_neq(st, TC__UTF8_BAD);
}

/* Split anywhere, the answer is the one-shot answer. */
Test(ws_frame, utf8_every_split)
{
    const char *s = "a\xc2\xa9\xe2\x82\xac\xf0\x9f\x98\x80z\xed\xa0\x80";
    size_t n = strlen(s);
    for (size_t len = 0; len <= n; len++) {
        uint32_t one = tc__utf8_feed(0, (const unsigned char *)s, len);
        for (size_t cut = 0; cut <= len; cut++) {
            uint32_t st = tc__utf8_feed(0, (const unsigned char *)s, cut);
            st = tc__utf8_feed(st, (const unsigned char *)s + cut, len - cut);
            if (st != one)
                cr_assert_fail("len %zu cut %zu", len, cut);
        }
    }
}

/* ---- the receiver ------------------------------------------------------------- */

/* One client frame (masked) into out: its size. */
static size_t frame(unsigned char *out, int fin, int rsv, int op, int masked, const void *p,
                    size_t n)
{
    static const unsigned char key[4] = {0x11, 0x22, 0x33, 0x44};
    size_t h = tc__ws_header_build(out, fin, op, n, masked ? key : NULL);
    out[0] |= (unsigned char)(rsv << 4);
    memcpy(out + h, p, n);
    if (masked)
        tc__ws_mask(out + h, n, key, 0);
    return h + n;
}

#define SIM_CAP (4u << 20)

/* A channel's view: bytes arrive step at a time, the receiver runs over
 * what is buffered, events are recorded as text ("T:hello", "P:x", "C:1000"),
 * messages and control frames are dropped once seen. */
struct sim {
    unsigned char *buf;
    size_t len;
    tc__ws_rx rx;
    char log[4096];
    int err, code;
    size_t peak; /* the most bytes buffered at once */
};

static void sim_init(struct sim *s, size_t max)
{
    memset(s, 0, sizeof *s);
    s->buf = malloc(SIM_CAP);
    cr_assert_not_null(s->buf);
    s->rx.max = max;
    s->rx.expect_mask = 1;
}

static void sim_log(struct sim *s, int op, const unsigned char *p, size_t n)
{
    size_t at = strlen(s->log);
    char tag = op == TC__WS_TEXT ? 'T' : op == TC__WS_BINARY ? 'B' : op == TC__WS_PING ? 'P'
             : op == TC__WS_PONG ? 'O' : 'C';
    if (op == TC__WS_CLOSE && n >= 2)
        snprintf(s->log + at, sizeof s->log - at, "%s%c:%u", at ? "," : "", tag,
                 (unsigned)(p[0] << 8 | p[1]));
    else
        snprintf(s->log + at, sizeof s->log - at, "%s%c:%.*s", at ? "," : "", tag,
                 (int)(n > 40 ? 40 : n), (const char *)p);
}

/* Run the receiver over what is buffered until it needs more or fails. */
static void sim_run(struct sim *s)
{
    while (!s->err) {
        tc__ws_ev ev;
        int rc = tc__ws_rx_step(&s->rx, s->buf, s->len, &ev);
        s->len -= ev.squeeze;
        if (rc == TC__WS_MORE)
            return;
        if (rc < 0) {
            s->err = rc;
            s->code = ev.close_code;
            return;
        }
        cr_assert_leq(ev.off + ev.len, s->len);
        sim_log(s, ev.opcode, s->buf + ev.off, ev.len);
        cr_assert_leq(ev.used, s->len);
        memmove(s->buf, s->buf + ev.used, s->len - ev.used);
        s->len -= ev.used;
    }
}

/* Feed stream in pieces of step bytes. */
static void sim_feed(struct sim *s, const unsigned char *stream, size_t n, size_t step)
{
    for (size_t i = 0; i < n && !s->err; i += step) {
        size_t k = n - i < step ? n - i : step;
        cr_assert_leq(s->len + k, SIM_CAP);
        memcpy(s->buf + s->len, stream + i, k);
        s->len += k;
        if (s->len > s->peak)
            s->peak = s->len;
        sim_run(s);
    }
}

static void sim_free(struct sim *s)
{
    free(s->buf);
}

/* Feed at every step from 1 to the whole: the same log, error and code. */
static void expect_stream(const unsigned char *stream, size_t n, size_t max, const char *log,
                          int err, int code)
{
    for (size_t step = 1; step <= n; step++) {
        struct sim s;
        sim_init(&s, max);
        sim_feed(&s, stream, n, step);
        if (strcmp(s.log, log) != 0 || s.err != err || s.code != code)
            cr_assert_fail("step %zu: log \"%s\" err %d code %d; want \"%s\" %d %d", step, s.log,
                           s.err, s.code, log, err, code);
        sim_free(&s);
    }
}

/* Autobahn 1.x and 2.x: every opcode that exists, in one stream. */
Test(ws_frame, every_opcode)
{
    unsigned char st[512];
    size_t n = 0;
    n += frame(st + n, 1, 0, TC__WS_TEXT, 1, "hi", 2);
    n += frame(st + n, 1, 0, TC__WS_BINARY, 1, "\x00\x01", 2);
    n += frame(st + n, 1, 0, TC__WS_PING, 1, "p", 1);
    n += frame(st + n, 1, 0, TC__WS_PONG, 1, "o", 1);
    n += frame(st + n, 0, 0, TC__WS_TEXT, 1, "a", 1);
    n += frame(st + n, 1, 0, TC__WS_CONT, 1, "b", 1);
    n += frame(st + n, 1, 0, TC__WS_CLOSE, 1, "\x03\xe8", 2);
    expect_stream(st, n, 1000, "T:hi,B:,P:p,O:o,T:ab,C:1000", 0, 0);
    /* Reserved opcodes: 1002. */
    for (int op = 3; op < 16; op++) {
        if (op >= 8 && op <= 10)
            continue;
        n = frame(st, 1, 0, op, 1, "x", 1);
        expect_stream(st, n, 1000, "", TC_EBADFRAME, 1002);
    }
}

/* Autobahn 3.x: a reserved bit set, on data and control frames. */
Test(ws_frame, reserved_bits)
{
    unsigned char st[64];
    for (int rsv = 1; rsv < 8; rsv++) {
        size_t n = frame(st, 1, rsv, TC__WS_TEXT, 1, "x", 1);
        expect_stream(st, n, 1000, "", TC_EBADFRAME, 1002);
        n = frame(st, 1, rsv, TC__WS_PING, 1, "", 0);
        expect_stream(st, n, 1000, "", TC_EBADFRAME, 1002);
    }
}

/* Client frames must be masked; a server's reader refuses the others. */
Test(ws_frame, unmasked_client_frame)
{
    unsigned char st[64];
    size_t n = frame(st, 1, 0, TC__WS_TEXT, 0, "x", 1);
    expect_stream(st, n, 1000, "", TC_EBADFRAME, 1002);
    /* A client's reader wants them unmasked. */
    struct sim s;
    sim_init(&s, 1000);
    s.rx.expect_mask = 0;
    sim_feed(&s, st, n, n);
    cr_assert_str_eq(s.log, "T:x");
    sim_free(&s);
}

/* Autobahn 2.x: control frames over 125 bytes or fragmented. */
Test(ws_frame, control_frame_rules)
{
    unsigned char st[512], big[126];
    memset(big, 'x', sizeof big);
    size_t n = frame(st, 1, 0, TC__WS_PING, 1, big, 126);
    expect_stream(st, n, 1000, "", TC_EBADFRAME, 1002);
    n = frame(st, 1, 0, TC__WS_PING, 1, big, 125);
    struct sim s;
    sim_init(&s, 1000);
    sim_feed(&s, st, n, 7);
    cr_assert_eq(s.err, 0);
    sim_free(&s);
    n = frame(st, 0, 0, TC__WS_PING, 1, "x", 1);
    expect_stream(st, n, 1000, "", TC_EBADFRAME, 1002);
}

/* Autobahn 5.x: fragments, pings between them, bad sequences. */
Test(ws_frame, fragmentation)
{
    unsigned char st[1024];
    size_t n = 0;
    n += frame(st + n, 0, 0, TC__WS_BINARY, 1, "ab", 2);
    n += frame(st + n, 1, 0, TC__WS_PING, 1, "1", 1);
    n += frame(st + n, 0, 0, TC__WS_CONT, 1, "cd", 2);
    n += frame(st + n, 1, 0, TC__WS_PONG, 1, "2", 1);
    n += frame(st + n, 0, 0, TC__WS_CONT, 1, "", 0);
    n += frame(st + n, 1, 0, TC__WS_CONT, 1, "ef", 2);
    n += frame(st + n, 1, 0, TC__WS_TEXT, 1, "next", 4);
    expect_stream(st, n, 1000, "P:1,O:2,B:abcdef,T:next", 0, 0);
    /* A continuation of nothing. */
    n = frame(st, 1, 0, TC__WS_CONT, 1, "x", 1);
    expect_stream(st, n, 1000, "", TC_EBADFRAME, 1002);
    /* A new message inside a fragmented one. */
    n = frame(st, 0, 0, TC__WS_TEXT, 1, "a", 1);
    n += frame(st + n, 1, 0, TC__WS_TEXT, 1, "b", 1);
    expect_stream(st, n, 1000, "", TC_EBADFRAME, 1002);
}

/* A message in 1-byte fragments with pings between: joined whole, and the
 * buffer never holds much more than the message (the gap is squeezed). */
Test(ws_frame, one_byte_fragments_bounded_buffer)
{
    size_t len = 20000, cap = len * 16;
    unsigned char *st = malloc(cap), *msg = malloc(len);
    cr_assert(st && msg);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        msg[i] = (unsigned char)('a' + i % 26);
        n += frame(st + n, i == len - 1, 0, i ? TC__WS_CONT : TC__WS_TEXT, 1, msg + i, 1);
        if (i % 1000 == 0)
            n += frame(st + n, 1, 0, TC__WS_PING, 1, "", 0);
    }
    struct sim s;
    sim_init(&s, len);
    sim_feed(&s, st, n, 1500);
    cr_assert_eq(s.err, 0);
    cr_assert(strncmp(s.log, "P:", 2) == 0);
    cr_assert_not_null(strstr(s.log, "T:abcdefghij"));
    cr_assert_lt(s.peak, len + 4 * 1500, "peak %zu", s.peak);
    sim_free(&s);
    free(st);
    free(msg);
}

/* Autobahn 9.x and the limit: over max on the header alone, across fragments too. */
Test(ws_frame, limits)
{
    unsigned char st[4096], big[300];
    memset(big, 'x', sizeof big);
    size_t n = frame(st, 1, 0, TC__WS_BINARY, 1, big, 101);
    expect_stream(st, 6, 100, "", TC_ETOOBIG, 1009); /* the header alone (2 + mask) */
    n = frame(st, 1, 0, TC__WS_BINARY, 1, big, 100);
    expect_stream(st, n, 100, "B:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 0, 0);
    n = frame(st, 0, 0, TC__WS_BINARY, 1, big, 60);
    n += frame(st + n, 1, 0, TC__WS_CONT, 1, big, 41);
    expect_stream(st, n, 100, "", TC_ETOOBIG, 1009);
    /* 16 and 64-bit lengths, exact. */
    unsigned char *b2 = malloc(70000), *s2 = malloc(70100);
    cr_assert(b2 && s2);
    memset(b2, 'y', 70000);
    size_t sizes[] = {125, 126, 65535, 65536, 70000};
    for (size_t i = 0; i < 5; i++) {
        n = frame(s2, 1, 0, TC__WS_BINARY, 1, b2, sizes[i]);
        struct sim s;
        sim_init(&s, 70000);
        sim_feed(&s, s2, n, 4096);
        cr_assert_eq(s.err, 0);
        cr_assert_eq(strncmp(s.log, "B:yyy", 5), 0);
        sim_free(&s);
    }
    free(b2);
    free(s2);
}

/* Autobahn 6.x: invalid text refused (1007), also split across fragments;
 * a valid character split across fragments accepted. */
Test(ws_frame, utf8_handling)
{
    unsigned char st[256];
    size_t n = frame(st, 1, 0, TC__WS_TEXT, 1, "\xed\xa0\x80", 3);
    expect_stream(st, n, 100, "", TC_EBADFRAME, 1007);
    n = frame(st, 0, 0, TC__WS_TEXT, 1, "\xf0\x9f", 2);
    n += frame(st + n, 1, 0, TC__WS_CONT, 1, "\x98\x80", 2);
    expect_stream(st, n, 100, "T:\xf0\x9f\x98\x80", 0, 0);
    n = frame(st, 0, 0, TC__WS_TEXT, 1, "\xf0\x9f", 2);
    n += frame(st + n, 1, 0, TC__WS_CONT, 1, "\x98", 1); /* ends inside a character */
    expect_stream(st, n, 100, "", TC_EBADFRAME, 1007);
    n = frame(st, 0, 0, TC__WS_TEXT, 1, "ok\xce", 3);
    n += frame(st + n, 1, 0, TC__WS_CONT, 1, "\x41", 1); /* not a continuation byte */
    expect_stream(st, n, 100, "", TC_EBADFRAME, 1007);
    /* Binary is not checked. */
    n = frame(st, 1, 0, TC__WS_BINARY, 1, "\xff", 1);
    expect_stream(st, n, 100, "B:\xff", 0, 0);
}

/* Autobahn 7.x: close payloads: empty, a code, a code and a reason; invalid
 * codes, a 1-byte payload, a reason that is not UTF-8. */
Test(ws_frame, close_handling)
{
    unsigned char st[256];
    size_t n = frame(st, 1, 0, TC__WS_CLOSE, 1, "", 0);
    expect_stream(st, n, 100, "C:", 0, 0);
    n = frame(st, 1, 0, TC__WS_CLOSE, 1, "\x0f\xa0" "bye", 5);
    expect_stream(st, n, 100, "C:4000", 0, 0);
    static const unsigned bad[] = {0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned char p[2] = {(unsigned char)(bad[i] >> 8), (unsigned char)bad[i]};
        n = frame(st, 1, 0, TC__WS_CLOSE, 1, p, 2);
        expect_stream(st, n, 100, "", TC_EBADFRAME, 1002);
    }
    n = frame(st, 1, 0, TC__WS_CLOSE, 1, "\x03", 1);
    expect_stream(st, n, 100, "", TC_EBADFRAME, 1002);
    n = frame(st, 1, 0, TC__WS_CLOSE, 1, "\x03\xe8\xff", 3);
    expect_stream(st, n, 100, "", TC_EBADFRAME, 1007);
}

/* ---- the HTTP request head ---------------------------------------------------------- */

static const char req_ok[] = "GET /chat?x=1 HTTP/1.1\r\n"
                             "Host: example.com\r\n"
                             "Upgrade: websocket\r\n"
                             "Connection: keep-alive, Upgrade\r\n"
                             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                             "Sec-WebSocket-Version: 13\r\n"
                             "X-Empty:\r\n"
                             "\r\n";

Test(ws_frame, http_request_every_split)
{
    size_t n = sizeof req_ok - 1;
    tc__http_req r;
    for (size_t cut = 0; cut < n; cut++)
        if (tc__http_parse(req_ok, cut, 16384, &r) != 0)
            cr_assert_fail("complete at %zu of %zu", cut, n);
    char more[sizeof req_ok + 8];
    memcpy(more, req_ok, n);
    memcpy(more + n, "\x81\x80", 2); /* a frame already behind it */
    cr_assert_eq(tc__http_parse(more, n + 2, 16384, &r), 1);
    cr_assert_eq(r.size, n);
    cr_assert_eq(r.minor, 1);
    cr_assert_eq(r.nheaders, 6);
    cr_assert(tc__http_ieq(req_ok + r.method.off, r.method.len, "get"));
    cr_assert_eq(r.target.len, strlen("/chat?x=1"));
    cr_assert(tc__http_ieq(req_ok + r.name[3].off, r.name[3].len, "SEC-WEBSOCKET-KEY"));
    cr_assert_eq(r.value[3].len, 24);
    cr_assert_eq(r.value[5].len, 0);
    cr_assert(tc__http_has_token(req_ok + r.value[2].off, r.value[2].len, "upgrade"));
    cr_assert(!tc__http_has_token(req_ok + r.value[2].off, r.value[2].len, "close"));
}

Test(ws_frame, http_request_malformed_and_limits)
{
    tc__http_req r;
    static const char *const bad[] = {
        "GET / HTTP/1.1\r\nHost : x\r\n\r\n",     /* a space before the colon */
        "GET / HTTP/1.1\r\n folded\r\n\r\n",      /* obs-fold */
        "GET /  HTTP/1.1\r\n\r\n",                /* two spaces */
        "GET / HTTP/2.0\r\n\r\n",                 /* not 1.x */
        "GET / HTTP/1.1\r\nA: b\x01\r\n\r\n",     /* a control character */
        "GET / HTTP/1.1\nHost: x\r\n\r\n",        /* a bare LF ends the line */
        "\x16\x03\x01",                           /* TLS, early */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(tc__http_parse(bad[i], strlen(bad[i]), 16384, &r), TC_EBADFRAME, "bad %zu", i);
    /* No end within max: too big. */
    char big[300];
    memset(big, 'a', sizeof big);
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    cr_assert_eq(tc__http_parse(big, sizeof big, 200, &r), TC_ETOOBIG);
    cr_assert_eq(tc__http_parse(big, 199, 200, &r), 0);
    /* Too many fields. */
    char *many = malloc(64 * 1024);
    cr_assert_not_null(many);
    int k = sprintf(many, "GET / HTTP/1.1\r\n");
    for (int i = 0; i <= TC__HTTP_MAX_HEADERS; i++)
        k += sprintf(many + k, "X%d: y\r\n", i);
    k += sprintf(many + k, "\r\n");
    cr_assert_eq(tc__http_parse(many, (size_t)k, 64 * 1024, &r), TC_ETOOBIG);
    free(many);
}
