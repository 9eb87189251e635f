/* SPDX-License-Identifier: MIT */
/* Time for deadlines (CLOCK_MONOTONIC nanoseconds) and the one rounding of
 * "time left" into a poll/epoll timeout. */
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
