/* SPDX-License-Identifier: MIT */
/* Error descriptions: the library's own codes from TC_ERROR_MAP, errno values from libc. */
#include <limits.h>
#include <string.h>

#include "internal.h"

const char *tc_strerror(int code)
{
    if (code >= 0)
        return "success";
    switch (code) {
#define XX(name, value, text)                                                  \
    case TC_##name:                                                            \
        return text;
        TC_ERROR_MAP(XX)
#undef XX
    default:
        break;
    }
    /* strerrordesc_np is thread-safe and locale-independent, unlike strerror.
     * INT_MIN cannot be negated (and is no errno value). */
    const char *s = code != INT_MIN ? strerrordesc_np(-code) : NULL;
    return s ? s : "unknown error";
}

const char *tc_err_name(int code)
{
    if (code >= 0)
        return "OK";
    switch (code) {
#define XX(name, value, text)                                                  \
    case TC_##name:                                                            \
        return "TC_" #name;
        TC_ERROR_MAP(XX)
#undef XX
    default:
        break;
    }
    const char *s = code != INT_MIN ? strerrorname_np(-code) : NULL;
    return s ? s : "UNKNOWN";
}
