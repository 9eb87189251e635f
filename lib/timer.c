/* SPDX-License-Identifier: MIT */
/* A binary min-heap of timers keyed by absolute deadline: O(log n) to add,
 * move or remove one, O(1) to find the next. Each timer knows its slot, so
 * rescheduling an idle timeout on every message costs one sift. */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

static void put(tc__theap *h, size_t i, tc__timer *t)
{
    h->v[i] = t;
    t->slot = (uint32_t)i;
}

static void sift_up(tc__theap *h, size_t i)
{
    tc__timer *t = h->v[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->v[parent]->when <= t->when)
            break;
        put(h, i, h->v[parent]);
        i = parent;
    }
    put(h, i, t);
}

static void sift_down(tc__theap *h, size_t i)
{
    tc__timer *t = h->v[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && h->v[c + 1]->when < h->v[c]->when)
            c++;
        if (t->when <= h->v[c]->when)
            break;
        put(h, i, h->v[c]);
        i = c;
    }
    put(h, i, t);
}

int tc__theap_reserve(tc__theap *h, size_t n)
{
    if (h->cap >= n)
        return 0;
    if (n >= TC__TIMER_IDLE) /* slots are 32-bit (a connection's timers stay small) */
        return -ENOMEM;
    size_t cap = h->cap ? h->cap : 64;
    while (cap < n)
        cap *= 2;
    tc__timer **v = realloc(h->v, cap * sizeof *v); /* NOLINT(bugprone-sizeof-expression) */
    if (!v)
        return -ENOMEM;
    h->v = v;
    h->cap = cap;
    return 0;
}

void tc__theap_free(tc__theap *h)
{
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}

int tc__theap_schedule(tc__theap *h, tc__timer *t, int64_t when)
{
    if (t->slot != TC__TIMER_IDLE) {
        int64_t old = t->when;
        t->when = when;
        if (when < old)
            sift_up(h, t->slot);
        else
            sift_down(h, t->slot);
        return 0;
    }
    int rc = tc__theap_reserve(h, h->n + 1);
    if (rc < 0)
        return rc;
    t->when = when;
    put(h, h->n++, t);
    sift_up(h, t->slot);
    return 0;
}

void tc__theap_cancel(tc__theap *h, tc__timer *t)
{
    if (t->slot == TC__TIMER_IDLE)
        return;
    size_t i = t->slot;
    t->slot = TC__TIMER_IDLE;
    tc__timer *last = h->v[--h->n];
    if (i == h->n)
        return;
    put(h, i, last);
    if (i > 0 && h->v[(i - 1) / 2]->when > last->when)
        sift_up(h, i);
    else
        sift_down(h, i);
}

tc__timer *tc__theap_next(const tc__theap *h)
{
    return h->n ? h->v[0] : NULL;
}
