/* SPDX-License-Identifier: MIT */
/* Base64 (RFC 4648, the standard alphabet, with padding): the WebSocket
 * handshake's key and accept values. Pure: no I/O, no allocation. */
#include <errno.h>

#include "internal.h"

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t tc__base64_encode(const void *data, size_t len, char *out)
{
    const unsigned char *p = data;
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = alphabet[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0);
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        if (i + 1 < len)
            out[o++] = alphabet[(v >> 6) & 63];
        else
            out[o++] = '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

static int value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

ssize_t tc__base64_decode(const char *in, size_t len, void *out, size_t cap)
{
    unsigned char *o = out;
    size_t n = 0;
    if (len % 4)
        return -EINVAL;
    for (size_t i = 0; i < len; i += 4) {
        int last = i + 4 == len;
        int pad = (in[i + 3] == '=') + (in[i + 2] == '=' && in[i + 3] == '=');
        if (pad && !last)
            return -EINVAL;
        int v[4];
        for (int k = 0; k < 4 - pad; k++)
            if ((v[k] = value(in[i + (size_t)k])) < 0)
                return -EINVAL;
        for (int k = 4 - pad; k < 4; k++)
            v[k] = 0;
        uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
                     (uint32_t)v[3];
        size_t k = 3 - (size_t)pad;
        /* The bits the padding drops must be zero: one text per value. */
        if ((pad == 1 && (x & 0xff)) || (pad == 2 && (x & 0xffff)))
            return -EINVAL;
        if (n + k > cap)
            return -ENOSPC;
        for (size_t j = 0; j < k; j++)
            o[n++] = (unsigned char)(x >> (16 - 8 * j));
    }
    return (ssize_t)n;
}
