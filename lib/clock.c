/* SPDX-License-Identifier: MIT */
/* Time for deadlines (CLOCK_MONOTONIC nanoseconds) and the one rounding of
 * "time left" into a poll/epoll timeout. */
#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "internal.h"

int64_t tc__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t tc_monotonic_ns(void)
{
    return tc__now_ns();
}

int64_t tc__deadline_ms(int ms)
{
    if (ms <= 0)
        return TC__NO_DEADLINE;
    return tc__now_ns() + (int64_t)ms * TC_NS_PER_MS;
}

int tc__ms_until(int64_t deadline)
{
    if (deadline == TC__NO_DEADLINE)
        return -1;
    int64_t left = deadline - tc__now_ns();
    if (left <= 0)
        return 0;
    /* Round up: a wait that ends early would only be made again. */
    int64_t ms = (left + TC_NS_PER_MS - 1) / TC_NS_PER_MS;
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

void tc__cond_init(pthread_cond_t *cond)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &ca);
    pthread_condattr_destroy(&ca);
}

int tc__cond_wait(pthread_cond_t *cond, pthread_mutex_t *mu, int64_t deadline)
{
    if (deadline == TC__NO_DEADLINE)
        return -pthread_cond_wait(cond, mu);
    struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000),
                          .tv_nsec = (long)(deadline % 1000000000)};
    int rc = pthread_cond_timedwait(cond, mu, &ts);
    return rc == ETIMEDOUT ? -ETIMEDOUT : -rc;
}
