/* SPDX-License-Identifier: MIT */
/**
 * @file version.h
 * @brief Compile-time and run-time version of libtcpchan.
 */
#ifndef TCPCHAN_VERSION_H
#define TCPCHAN_VERSION_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** @brief Major version: changes when the ABI breaks (it is the SONAME). */
#define TC_VERSION_MAJOR 0
/** @brief Minor version: new features, ABI compatible. */
#define TC_VERSION_MINOR 1
/** @brief Patch version: fixes only. */
#define TC_VERSION_PATCH 0
/** @brief The version as a string, "MAJOR.MINOR.PATCH". */
#define TC_VERSION_STRING "0.1.0"
/** @brief The version as one comparable number: (major << 16) | (minor << 8) | patch. */
#define TC_VERSION_HEX ((TC_VERSION_MAJOR << 16) | (TC_VERSION_MINOR << 8) | TC_VERSION_PATCH)

/**
 * @brief The version of the library actually linked, as TC_VERSION_HEX encodes it.
 * @return (major << 16) | (minor << 8) | patch.
 * @par Thread safety
 * Safe from any thread.
 */
TC_API unsigned tc_version(void);

/**
 * @brief The version of the library actually linked, as a string.
 * @return A static string such as "0.1.0"; never NULL.
 * @par Thread safety
 * Safe from any thread.
 */
TC_API const char *tc_version_string(void);

#ifdef __cplusplus
}
#endif
#endif /* TCPCHAN_VERSION_H */
