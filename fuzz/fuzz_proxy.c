/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the PROXY protocol parser and the trusted list.
 * Input: [step][stream...]. Fed as a channel feeds it (a prefix growing by
 * step bytes), the answers must be need-more until one final answer that
 * every longer prefix repeats; a header is within the limits and parses alone
 * to the same result; the list parser and matcher run on the input as text. */
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

static void same(const tc__proxy_hdr *a, const tc__proxy_hdr *b)
{
    CHECK(a->len == b->len && a->version == b->version && a->local == b->local &&
          a->has_addr == b->has_addr);
    if (a->has_addr)
        CHECK(a->src.len == b->src.len && memcmp(&a->src.u, &b->src.u, a->src.len) == 0 &&
              a->dst.len == b->dst.len && memcmp(&a->dst.u, &b->dst.u, a->dst.len) == 0);
}

static void check_header(const tc__proxy_hdr *h, size_t have)
{
    CHECK(h->len >= 8 && h->len <= have && h->len <= TC__PROXY_MAX);
    CHECK(h->version == 1 || h->version == 2);
    if (h->version == 1)
        CHECK(h->len <= TC__PROXY_V1_MAX && !h->local);
    if (h->local)
        CHECK(!h->has_addr);
    if (h->has_addr) {
        int f = tc_addr_family(&h->src);
        CHECK(f == AF_INET || f == AF_INET6 || f == AF_UNIX);
        CHECK(tc_addr_family(&h->dst) == f);
        CHECK(h->src.len <= sizeof h->src.u && h->dst.len <= sizeof h->dst.u);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = data[0] ? data[0] : 1;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    tc__proxy_hdr final, h;
    int final_rc = TC__PROXY_MORE;
    for (size_t have = 0;; have = have + step < n ? have + step : n) {
        int rc = tc__proxy_parse(have ? p : NULL, have, &h);
        CHECK(rc == TC__PROXY_MORE || rc == TC__PROXY_DONE || rc == TC__PROXY_NONE ||
              rc == TC_EPROXY);
        if (rc == TC_EPROXY)
            CHECK(h.why != NULL);
        if (final_rc != TC__PROXY_MORE) {
            CHECK(rc == final_rc); /* a final answer never changes with more bytes */
            if (rc == TC__PROXY_DONE)
                same(&final, &h);
        } else if (rc == TC__PROXY_MORE) {
            CHECK(have < TC__PROXY_MAX);
        } else {
            final_rc = rc;
            final = h;
            if (rc == TC__PROXY_DONE) {
                check_header(&h, have);
                tc__proxy_hdr alone;
                CHECK(tc__proxy_parse(p, h.len, &alone) == TC__PROXY_DONE);
                same(&h, &alone);
            }
        }
        if (have == n)
            break;
    }
    /* The input as a trusted list, matched against the header's client. */
    char *text = malloc(n + 1);
    if (!text)
        return 0;
    memcpy(text, p, n);
    text[n] = '\0';
    size_t max = tc__cidr_count(text), count = 0;
    tc__cidr *list = calloc(max, sizeof *list);
    if (list) {
        int rc = tc__cidr_parse(text, list, max, &count);
        CHECK(rc == 0 || rc == TC_EBADCONFIG);
        CHECK(count <= max);
        for (size_t i = 0; rc == 0 && i < count; i++)
            CHECK(list[i].family == AF_UNIX ||
                  (list[i].family == AF_INET && list[i].bits <= 32) ||
                  (list[i].family == AF_INET6 && list[i].bits <= 128));
        if (rc == 0 && final_rc == TC__PROXY_DONE && final.has_addr)
            (void)tc__cidr_match(list, count, &final.src);
        free(list);
    }
    free(text);
    return 0;
}
