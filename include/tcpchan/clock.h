/* SPDX-License-Identifier: MIT */
/**
 * @file clock.h
 * @brief The clock deadlines are measured on: CLOCK_MONOTONIC, in nanoseconds.
 */
#ifndef TCPCHAN_CLOCK_H
#define TCPCHAN_CLOCK_H

#include <stdint.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** @brief Nanoseconds in a millisecond, for building deadlines. */
#define TC_NS_PER_MS INT64_C(1000000)

/**
 * @brief The current time on the clock deadlines use: CLOCK_MONOTONIC, in nanoseconds.
 * @return Nanoseconds since an arbitrary fixed point (boot).
 * @par Thread safety
 * Safe from any thread.
 */
TC_API int64_t tc_monotonic_ns(void);

#ifdef __cplusplus
}
#endif
#endif /* TCPCHAN_CLOCK_H */
