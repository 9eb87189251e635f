/* SPDX-License-Identifier: MIT */
/* WebSocket frames (RFC 6455 section 5) as pure functions: the header,
 * masking, UTF-8 validation that resumes across fragments, and the
 * receiver's step over a buffer that unmasks payloads in place and joins
 * fragments at the front of it. No I/O, no allocation. */
#include <string.h>

#include "internal.h"

/* ---- headers ------------------------------------------------------------- */

int tc__ws_header_parse(const unsigned char *b, size_t n, tc__ws_hdr *h)
{
    if (n < 2)
        return 0;
    h->fin = b[0] >> 7;
    h->rsv = (b[0] >> 4) & 7;
    h->opcode = b[0] & 15;
    h->masked = b[1] >> 7;
    unsigned small = b[1] & 127;
    size_t size = 2;
    uint64_t len = small;
    if (small == 126) {
        if (n < 4)
            return 0;
        len = (uint64_t)b[2] << 8 | b[3];
        size = 4;
    } else if (small == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | b[2 + i];
        if (len >> 63)
            return TC_EBADFRAME; /* the most significant bit must be 0 */
        size = 10;
    }
    if (h->masked) {
        if (n < size + 4)
            return 0;
        memcpy(h->mask, b + size, 4);
        size += 4;
    }
    h->len = len;
    h->size = size;
    return 1;
}

size_t tc__ws_header_build(unsigned char *out, int fin, int opcode, uint64_t len,
                           const unsigned char *mask)
{
    size_t n = 2;
    out[0] = (unsigned char)((fin ? 0x80 : 0) | (opcode & 15));
    unsigned char m = mask ? 0x80 : 0;
    if (len < 126) {
        out[1] = (unsigned char)(m | len);
    } else if (len <= 0xffff) {
        out[1] = m | 126;
        out[2] = (unsigned char)(len >> 8);
        out[3] = (unsigned char)len;
        n = 4;
    } else {
        out[1] = m | 127;
        for (int i = 0; i < 8; i++)
            out[2 + i] = (unsigned char)(len >> (56 - 8 * i));
        n = 10;
    }
    if (mask) {
        memcpy(out + n, mask, 4);
        n += 4;
    }
    return n;
}

void tc__ws_mask(unsigned char *p, size_t n, const unsigned char mask[4], size_t phase)
{
    size_t i = 0;
    /* A word at a time once the key is rotated to the phase; the bytes
     * before and after one by one. */
    unsigned char k[8];
    for (int j = 0; j < 8; j++)
        k[j] = mask[(phase + (size_t)j) & 3];
    uint64_t kw;
    memcpy(&kw, k, 8);
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        w ^= kw;
        memcpy(p + i, &w, 8);
    }
    for (; i < n; i++)
        p[i] ^= mask[(phase + i) & 3];
}

/* ---- UTF-8 ------------------------------------------------------------------ */

/* A state between characters is 0; inside one it packs the continuation
 * bytes still due and the range the next one must fall in (the narrower
 * second-byte ranges refuse overlong forms, surrogates and code points
 * past U+10FFFF). */
#define PACK(need, lo, hi) ((uint32_t)(need) << 16 | (uint32_t)(lo) << 8 | (uint32_t)(hi))

uint32_t tc__utf8_feed(uint32_t st, const unsigned char *p, size_t n)
{
    if (st == TC__UTF8_BAD)
        return st;
    for (size_t i = 0; i < n; i++) {
        unsigned b = p[i];
        if (st == 0) {
            if (b < 0x80) {
                /* ASCII runs: eight bytes a step */
                while (i + 8 <= n) {
                    uint64_t w;
                    memcpy(&w, p + i, 8);
                    if (w & 0x8080808080808080ull)
                        break;
                    i += 8;
                }
                if (i < n && p[i] < 0x80)
                    continue;
                if (i >= n)
                    break;
                b = p[i];
            }
            if (b >= 0xc2 && b <= 0xdf)
                st = PACK(1, 0x80, 0xbf);
            else if (b == 0xe0)
                st = PACK(2, 0xa0, 0xbf);
            else if ((b >= 0xe1 && b <= 0xec) || b == 0xee || b == 0xef)
                st = PACK(2, 0x80, 0xbf);
            else if (b == 0xed)
                st = PACK(2, 0x80, 0x9f);
            else if (b == 0xf0)
                st = PACK(3, 0x90, 0xbf);
            else if (b >= 0xf1 && b <= 0xf3)
                st = PACK(3, 0x80, 0xbf);
            else if (b == 0xf4)
                st = PACK(3, 0x80, 0x8f);
            else
                return TC__UTF8_BAD;
            continue;
        }
        unsigned need = st >> 16, lo = (st >> 8) & 0xff, hi = st & 0xff;
        if (b < lo || b > hi)
            return TC__UTF8_BAD;
        st = need > 1 ? PACK(need - 1, 0x80, 0xbf) : 0;
    }
    return st;
}

int tc__ws_close_code_valid(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* ---- the receiver's step ---------------------------------------------------- */

static int fail(tc__ws_ev *ev, int code)
{
    ev->close_code = code;
    return code == 1009 ? TC_ETOOBIG : TC_EBADFRAME;
}

/* Need more bytes: while a message is assembled, close the gap the headers
 * (and control frames) left behind the joined payload when it is at least
 * a quarter of what follows it, so that the buffer stays near the
 * message's size and each byte moves O(1) times. */
static int more(tc__ws_rx *rx, unsigned char *buf, size_t len, tc__ws_ev *ev)
{
    size_t gap = rx->pos - rx->asm_len, rest = len - rx->pos;
    if (rx->in_msg && gap && gap * 4 >= rest) {
        memmove(buf + rx->asm_len, buf + rx->pos, rest);
        ev->squeeze = gap;
        rx->pos = rx->asm_len;
    }
    return TC__WS_MORE;
}

int tc__ws_rx_step(tc__ws_rx *rx, unsigned char *buf, size_t len, tc__ws_ev *ev)
{
    memset(ev, 0, sizeof *ev);
    for (;;) {
        tc__ws_hdr h;
        int rc = tc__ws_header_parse(buf + rx->pos, len - rx->pos, &h);
        if (rc < 0)
            return fail(ev, 1002);
        if (rc == 0)
            return more(rx, buf, len, ev);
        int op = (int)h.opcode;
        int control = op & 8;
        if (h.rsv)
            return fail(ev, 1002); /* no extension was negotiated */
        if (op != TC__WS_CONT && op != TC__WS_TEXT && op != TC__WS_BINARY &&
            op != TC__WS_CLOSE && op != TC__WS_PING && op != TC__WS_PONG)
            return fail(ev, 1002);
        if ((int)h.masked != rx->expect_mask)
            return fail(ev, 1002);
        if (control && (!h.fin || h.len > 125))
            return fail(ev, 1002);
        if (!control && (op == TC__WS_CONT) != (rx->in_msg != 0))
            return fail(ev, 1002); /* a continuation of nothing, or a new message inside one */
        /* Over the limit on the header alone: nothing is buffered for it. */
        if (!control && h.len > (uint64_t)(rx->max - (rx->in_msg ? rx->asm_len : 0)))
            return fail(ev, 1009);
        if ((uint64_t)(len - rx->pos - h.size) < h.len)
            return more(rx, buf, len, ev);
        size_t plen = (size_t)h.len, at = rx->pos + h.size, end = at + plen;
        if (h.masked)
            tc__ws_mask(buf + at, plen, h.mask, 0);
        if (control) {
            if (op == TC__WS_CLOSE && plen) {
                unsigned code = (unsigned)buf[at] << 8 | buf[at + 1 < end ? at + 1 : at];
                if (plen == 1 || !tc__ws_close_code_valid(code))
                    return fail(ev, 1002);
                if (tc__utf8_feed(0, buf + at + 2, plen - 2) != 0)
                    return fail(ev, 1007);
            }
            ev->opcode = op;
            ev->off = at;
            ev->len = plen;
            if (rx->in_msg) {
                rx->pos = end; /* stays behind the joined payload until the message ends */
            } else {
                ev->used = end;
                rx->pos = 0;
            }
            return TC__WS_CTRL;
        }
        int type = op == TC__WS_CONT ? rx->type : op;
        if (type == TC__WS_TEXT) {
            uint32_t st = tc__utf8_feed(rx->in_msg ? rx->utf8 : 0, buf + at, plen);
            if (st == TC__UTF8_BAD || (h.fin && st != 0))
                return fail(ev, 1007);
            rx->utf8 = st;
        }
        if (!rx->in_msg && h.fin) { /* the usual case: one frame, in place */
            ev->opcode = op;
            ev->off = at;
            ev->len = plen;
            ev->used = end;
            rx->pos = 0;
            return TC__WS_MSG;
        }
        if (!rx->in_msg) {
            rx->in_msg = 1;
            rx->type = op;
            rx->asm_len = 0;
        }
        memmove(buf + rx->asm_len, buf + at, plen);
        rx->asm_len += plen;
        rx->pos = end;
        if (h.fin) {
            ev->opcode = rx->type;
            ev->off = 0;
            ev->len = rx->asm_len;
            ev->used = end;
            rx->in_msg = 0;
            rx->asm_len = 0;
            rx->pos = 0;
            return TC__WS_MSG;
        }
    }
}
