/* SPDX-License-Identifier: MIT */
/* The timer heap of lib/timer.c (internal: compiled into this test): order,
 * moves, cancels, ties and growth, checked against the heap invariant after
 * every operation and against a plain model under random operations. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>

#include "internal.h"

TestSuite(timer, .timeout = 10);

/* Every slot matches its index and no parent is later than its children.
 * (Loops record an assertion only when it fails: --full-stats keeps them all.) */
static void check_heap(const tc__theap *h)
{
    if (h->n > h->cap)
        cr_assert_fail("%zu entries in a capacity of %zu", h->n, h->cap);
    for (size_t i = 0; i < h->n; i++) {
        if (h->v[i]->slot != i)
            cr_assert_fail("slot of entry %zu is %zu", i, (size_t)h->v[i]->slot);
        if (i > 0 && h->v[(i - 1) / 2]->when > h->v[i]->when)
            cr_assert_fail("heap order broken at %zu", i);
    }
}

static void init(tc__timer *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        t[i] = (tc__timer){.when = 0, .slot = TC__TIMER_IDLE};
}

/* Take the earliest timer out; its deadline. */
static int64_t pop(tc__theap *h)
{
    tc__timer *t = tc__theap_next(h);
    cr_assert_not_null(t);
    int64_t when = t->when;
    tc__theap_cancel(h, t);
    cr_assert_eq(t->slot, TC__TIMER_IDLE);
    check_heap(h);
    return when;
}

Test(timer, empty_heap)
{
    tc__theap h = {0};
    tc__timer t;
    init(&t, 1);
    cr_assert_null(tc__theap_next(&h));
    tc__theap_cancel(&h, &t); /* not scheduled: nothing happens */
    cr_assert_eq(t.slot, TC__TIMER_IDLE);
    tc__theap_free(&h);
    tc__theap_free(&h); /* twice is fine */
    cr_assert_null(h.v);
}

Test(timer, pops_in_deadline_order)
{
    static const int64_t when[] = {50, 10, 40, 30, 20, 60, 0, 70, 35, 15};
    enum { N = sizeof when / sizeof when[0] };
    tc__theap h = {0};
    tc__timer t[N];
    init(t, N);
    for (size_t i = 0; i < N; i++) {
        cr_assert_eq(tc__theap_schedule(&h, &t[i], when[i]), 0);
        check_heap(&h);
    }
    cr_assert_eq(h.n, N);
    int64_t last = INT64_MIN;
    for (size_t i = 0; i < N; i++) {
        int64_t w = pop(&h);
        cr_assert_geq(w, last);
        last = w;
    }
    cr_assert_null(tc__theap_next(&h));
    tc__theap_free(&h);
}

Test(timer, moving_a_timer_earlier_and_later)
{
    enum { N = 9 };
    tc__theap h = {0};
    tc__timer t[N];
    init(t, N);
    for (int i = 0; i < N; i++)
        tc__theap_schedule(&h, &t[i], 100 + 10 * i);
    cr_assert_eq(tc__theap_next(&h), &t[0]);
    tc__theap_schedule(&h, &t[8], 1); /* the last to the front */
    check_heap(&h);
    cr_assert_eq(tc__theap_next(&h), &t[8]);
    tc__theap_schedule(&h, &t[8], 1000); /* and to the back */
    check_heap(&h);
    cr_assert_eq(tc__theap_next(&h), &t[0]);
    tc__theap_schedule(&h, &t[0], 155); /* the front into the middle */
    check_heap(&h);
    cr_assert_eq(tc__theap_next(&h), &t[1]);
    tc__theap_schedule(&h, &t[4], t[4].when); /* same deadline: stays valid */
    check_heap(&h);
    cr_assert_eq(h.n, N, "moving never adds an entry");
    static const int64_t order[N] = {110, 120, 130, 140, 150, 155, 160, 170, 1000};
    for (int i = 0; i < N; i++)
        cr_assert_eq(pop(&h), order[i]);
    tc__theap_free(&h);
}

Test(timer, cancel_from_anywhere)
{
    enum { N = 31 };
    tc__theap h = {0};
    tc__timer t[N];
    init(t, N);
    for (int i = 0; i < N; i++)
        tc__theap_schedule(&h, &t[i], (i * 17) % N);
    /* Cancel the root, a leaf, the last entry, and some in between. */
    int gone[N] = {0};
    tc__timer *root = tc__theap_next(&h);
    gone[root - t] = 1;
    tc__theap_cancel(&h, root);
    check_heap(&h);
    tc__timer *last = h.v[h.n - 1];
    gone[last - t] = 1;
    tc__theap_cancel(&h, last);
    check_heap(&h);
    for (int i = 3; i < N; i += 5) {
        if (gone[i])
            continue;
        gone[i] = 1;
        tc__theap_cancel(&h, &t[i]);
        cr_assert_eq(t[i].slot, TC__TIMER_IDLE);
        check_heap(&h);
        tc__theap_cancel(&h, &t[i]); /* again: nothing */
        check_heap(&h);
    }
    int left = 0;
    for (int i = 0; i < N; i++)
        left += !gone[i];
    cr_assert_eq(h.n, (size_t)left);
    int64_t prev = INT64_MIN;
    while (h.n) {
        tc__timer *n = tc__theap_next(&h);
        cr_assert(!gone[n - t], "a cancelled timer came back");
        int64_t w = pop(&h);
        cr_assert_geq(w, prev);
        prev = w;
    }
    /* A cancelled timer can be scheduled again. */
    cr_assert_eq(tc__theap_schedule(&h, &t[3], 5), 0);
    cr_assert_eq(tc__theap_next(&h), &t[3]);
    tc__theap_free(&h);
}

Test(timer, equal_deadlines)
{
    enum { N = 100 };
    tc__theap h = {0};
    tc__timer t[N];
    init(t, N);
    for (int i = 0; i < N; i++)
        tc__theap_schedule(&h, &t[i], i % 2 ? 7 : 3);
    check_heap(&h);
    int threes = 0, sevens = 0;
    while (h.n) {
        int64_t w = pop(&h);
        if (w == 3) {
            cr_assert_eq(sevens, 0, "3 after 7");
            threes++;
        } else {
            sevens++;
        }
    }
    cr_assert_eq(threes, N / 2);
    cr_assert_eq(sevens, N / 2);
    tc__theap_free(&h);
}

/* Random schedules, moves and cancels against a model that just stores each
 * timer's deadline (or none): the heap's minimum is always the model's. */
Test(timer, random_operations_match_a_model)
{
    enum { N = 2000, OPS = 100000 };
    tc__theap h = {0};
    tc__timer *t = calloc(N, sizeof *t);
    int64_t *model = calloc(N, sizeof *model); /* -1: not scheduled */
    cr_assert(t && model);
    init(t, N);
    for (int i = 0; i < N; i++)
        model[i] = -1;
    unsigned seed = 12345;
    size_t scheduled = 0;
    for (int op = 0; op < OPS; op++) {
        int i = rand_r(&seed) % N;
        int kind = rand_r(&seed) % 3;
        if (kind < 2) {
            int64_t w = rand_r(&seed) % 5000;
            if (tc__theap_schedule(&h, &t[i], w) != 0)
                cr_assert_fail("op %d: schedule failed", op);
            scheduled += model[i] < 0;
            model[i] = w;
        } else {
            tc__theap_cancel(&h, &t[i]);
            scheduled -= model[i] >= 0;
            model[i] = -1;
        }
        if (h.n != scheduled)
            cr_assert_fail("op %d: %zu entries, want %zu", op, h.n, scheduled);
        if ((t[i].slot != TC__TIMER_IDLE) != (model[i] >= 0))
            cr_assert_fail("op %d: timer %d scheduled state is wrong", op, i);
        if (op % 1000 == 0)
            check_heap(&h);
        if (op % 97 == 0 && h.n) {
            int64_t min = INT64_MAX;
            for (int k = 0; k < N; k++)
                if (model[k] >= 0 && model[k] < min)
                    min = model[k];
            if (tc__theap_next(&h)->when != min)
                cr_assert_fail("op %d: next is %lld, want %lld", op,
                               (long long)tc__theap_next(&h)->when, (long long)min);
        }
    }
    check_heap(&h);
    int64_t prev = INT64_MIN;
    while (h.n) {
        tc__timer *n = tc__theap_next(&h);
        if (n->when != model[n - t])
            cr_assert_fail("timer %td: deadline %lld, want %lld", n - t, (long long)n->when,
                           (long long)model[n - t]);
        int64_t w = n->when;
        tc__theap_cancel(&h, n);
        if (w < prev)
            cr_assert_fail("%lld after %lld", (long long)w, (long long)prev);
        prev = w;
    }
    check_heap(&h);
    tc__theap_free(&h);
    free(t);
    free(model);
}
