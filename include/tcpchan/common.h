/* SPDX-License-Identifier: MIT */
/**
 * @file common.h
 * @brief Definitions shared by every libtcpchan header: the export macro, the
 *        handle types and the tri-state switch used in configuration structs.
 */
#ifndef TCPCHAN_COMMON_H
#define TCPCHAN_COMMON_H

/**
 * @def TC_API
 * @brief Marks a function exported from the shared library.
 *
 * The library is built with hidden default visibility, so only functions
 * declared with TC_API (all named `tc_*`) appear in its dynamic symbol table.
 */
#if defined(__GNUC__) || defined(__clang__)
#define TC_API __attribute__((visibility("default")))
#else
#define TC_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** @brief A listening server; opaque. See server.h. */
typedef struct tc_server tc_server;

/** @brief One TCP or unix stream channel, server or client side; opaque. See conn.h. */
typedef struct tc_conn tc_conn;

/**
 * @brief Values of the on/off switches in configuration structs.
 *
 * A zero-initialised switch means "the documented default", so a config
 * written as `= {0}` is valid; set TC_ON or TC_OFF to choose explicitly.
 */
enum tc_switch {
    TC_DEFAULT = 0, /**< use the field's documented default */
    TC_ON = 1,      /**< explicitly on */
    TC_OFF = -1     /**< explicitly off */
};

#ifdef __cplusplus
}
#endif
#endif /* TCPCHAN_COMMON_H */
