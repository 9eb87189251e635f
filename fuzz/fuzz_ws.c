/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the WebSocket receiver step and the HTTP request head
 * parser. Input: [step][max][stream...]. The stream is fed to the receiver
 * as a channel feeds it (growing by step bytes; messages and control frames
 * dropped once seen): every answer stays inside the buffer, messages are
 * within the limit, text is UTF-8, the buffer never grows far past the
 * message being joined, and an error is final. The same bytes are parsed as
 * a request head at every prefix: once complete or refused, the answer
 * never changes, and the spans lie inside the head. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            __builtin_trap();                                                                      \
    } while (0)

static void receiver(const uint8_t *p, size_t n, size_t step, size_t max)
{
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf)
        return;
    tc__ws_rx rx = {.max = max, .expect_mask = 1};
    size_t len = 0, fed = 0;
    while (fed < n) {
        size_t k = n - fed < step ? n - fed : step;
        memcpy(buf + len, p + fed, k);
        len += k;
        fed += k;
        for (;;) {
            tc__ws_ev ev;
            int rc = tc__ws_rx_step(&rx, buf, len, &ev);
            CHECK(ev.squeeze <= len);
            len -= ev.squeeze;
            if (rc == TC__WS_MORE)
                break;
            if (rc < 0) {
                CHECK(rc == TC_EBADFRAME || rc == TC_ETOOBIG);
                CHECK(ev.close_code == 1002 || ev.close_code == 1007 || ev.close_code == 1009);
                CHECK((rc == TC_ETOOBIG) == (ev.close_code == 1009));
                free(buf);
                return; /* the connection is failed from here */
            }
            CHECK(ev.off + ev.len <= len && ev.used <= len);
            if (rc == TC__WS_MSG) {
                CHECK(ev.opcode == TC__WS_TEXT || ev.opcode == TC__WS_BINARY);
                CHECK(ev.len <= max);
                CHECK(ev.used >= ev.off + ev.len);
                if (ev.opcode == TC__WS_TEXT)
                    CHECK(tc__utf8_feed(0, buf + ev.off, ev.len) == 0);
            } else {
                CHECK(rc == TC__WS_CTRL);
                CHECK(ev.opcode == TC__WS_CLOSE || ev.opcode == TC__WS_PING ||
                      ev.opcode == TC__WS_PONG);
                CHECK(ev.len <= 125);
            }
            memmove(buf, buf + ev.used, len - ev.used);
            len -= ev.used;
        }
        /* Joined payload, the gap behind it, and at most what came since. */
        CHECK(rx.asm_len <= max);
        CHECK(rx.pos <= len);
    }
    free(buf);
}

static void request(const char *p, size_t n, size_t step, size_t max)
{
    tc__http_req first, h;
    int final = 0;
    for (size_t have = 0;; have = have + step < n ? have + step : n) {
        int rc = tc__http_parse(p, have, max, &h);
        CHECK(rc == 0 || rc == 1 || rc == TC_EBADFRAME || rc == TC_ETOOBIG);
        if (final) {
            CHECK(rc == final);
            if (rc == 1)
                CHECK(h.size == first.size && h.nheaders == first.nheaders);
        } else if (rc != 0) {
            final = rc;
            first = h;
        } else {
            CHECK(have < max);
        }
        if (rc == 1) {
            CHECK(h.size <= have && h.size <= max && h.nheaders <= TC__HTTP_MAX_HEADERS);
            CHECK(h.method.off + h.method.len <= h.size && h.target.off + h.target.len <= h.size);
            for (size_t i = 0; i < h.nheaders; i++) {
                CHECK(h.name[i].len > 0 && h.name[i].off + h.name[i].len <= h.size);
                CHECK(h.value[i].off + h.value[i].len <= h.size);
                (void)tc__http_has_token(p + h.value[i].off, h.value[i].len, "upgrade");
            }
        }
        if (have == n)
            break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t step = data[0] ? data[0] : 1;
    size_t max = (size_t)data[1] * 4 + 1;
    receiver(data + 2, size - 2, step, max);
    request((const char *)data + 2, size - 2, step, max * 16);
    return 0;
}
