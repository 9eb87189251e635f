/* SPDX-License-Identifier: MIT */
/* Error descriptions: the library's own codes from TC_ERROR_MAP, errno values
 * from libc; and each thread's detail of its last failed create or dial. */
#include <limits.h>
#include <string.h>

#include "internal.h"

/* Per thread, so that concurrent creates never see each other's text; a
 * fixed buffer, so that recording it can neither fail nor leak. */
static _Thread_local char detail[TC__MSG_MAX];

void tc__detail_clear(void)
{
    detail[0] = '\0';
}

void tc__detail_set(const char *msg)
{
    size_t n = strnlen(msg, sizeof detail - 1);
    memcpy(detail, msg, n);
    detail[n] = '\0';
}

const char *tc_last_error_detail(void)
{
    return detail;
}

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
