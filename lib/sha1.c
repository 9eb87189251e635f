/* SPDX-License-Identifier: MIT */
/* SHA-1 (FIPS 180-4), one-shot and incremental: the WebSocket handshake's
 * Sec-WebSocket-Accept needs it, and nothing else does. Pure: no I/O, no
 * allocation. Not for anything that needs collision resistance. */
#include <string.h>

#include "internal.h"

static uint32_t rol(uint32_t x, unsigned n)
{
    return (x << n) | (x >> (32 - n));
}

static void block(uint32_t h[5], const unsigned char *p)
{
    uint32_t w[80];
    for (size_t i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5a827999u;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ed9eba1u;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8f1bbcdcu;
        } else {
            f = b ^ c ^ d;
            k = 0xca62c1d6u;
        }
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

void tc__sha1_init(tc__sha1_ctx *s)
{
    static const uint32_t iv[5] = {0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u,
                                   0xc3d2e1f0u};
    memcpy(s->h, iv, sizeof iv);
    s->total = 0;
    s->used = 0;
}

void tc__sha1_update(tc__sha1_ctx *s, const void *data, size_t len)
{
    const unsigned char *p = data;
    s->total += len;
    if (s->used) {
        size_t k = 64 - s->used < len ? 64 - s->used : len;
        memcpy(s->buf + s->used, p, k);
        s->used += k;
        p += k;
        len -= k;
        if (s->used < 64)
            return;
        block(s->h, s->buf);
        s->used = 0;
    }
    for (; len >= 64; p += 64, len -= 64)
        block(s->h, p);
    memcpy(s->buf, p, len);
    s->used = len;
}

void tc__sha1_final(tc__sha1_ctx *s, unsigned char out[TC__SHA1_LEN])
{
    uint64_t bits = s->total * 8;
    unsigned char pad[72] = {0x80};
    /* 0x80, zeros to 56 mod 64, then the length in bits, big-endian */
    size_t padlen = s->used < 56 ? 56 - s->used : 120 - s->used;
    for (int i = 0; i < 8; i++)
        pad[padlen + (size_t)i] = (unsigned char)(bits >> (56 - 8 * i));
    tc__sha1_update(s, pad, padlen + 8);
    for (size_t i = 0; i < 5; i++) {
        out[4 * i] = (unsigned char)(s->h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(s->h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(s->h[i] >> 8);
        out[4 * i + 3] = (unsigned char)s->h[i];
    }
}

void tc__sha1(const void *data, size_t len, unsigned char out[TC__SHA1_LEN])
{
    tc__sha1_ctx s;
    tc__sha1_init(&s);
    tc__sha1_update(&s, data, len);
    tc__sha1_final(&s, out);
}
