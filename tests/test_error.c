/* SPDX-License-Identifier: MIT */
/* tc_strerror / tc_err_name over every code the library defines, errno values
 * and undefined codes; tc_version against the header's macros. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "helpers.h"

struct code {
    int value;
    const char *name;
    const char *text;
};

/* Built from the public X-macro, so a code added to the map is tested too. */
static const struct code own_codes[] = {
#define XX(name, value, text) {value, "TC_" #name, text},
    TC_ERROR_MAP(XX)
#undef XX
};
#define N_OWN (sizeof own_codes / sizeof own_codes[0])

/* The range error.h reserves for the library's own codes: -4100 to -4198. */
#define OWN_FIRST (-4100)
#define OWN_BOUND (-4199) /* just past the range; not a code */

Test(error, success_codes, .timeout = 10)
{
    cr_assert_str_eq(tc_strerror(0), "success");
    cr_assert_str_eq(tc_err_name(0), "OK");
    /* Non-negative values are counts: also success. */
    cr_assert_str_eq(tc_strerror(1), "success");
    cr_assert_str_eq(tc_err_name(4096), "OK");
    cr_assert_str_eq(tc_strerror(INT_MAX), "success");
    cr_assert_str_eq(tc_err_name(INT_MAX), "OK");
}

Test(error, every_library_code, .timeout = 10)
{
    cr_assert_geq(N_OWN, 11, "the map lost codes");
    for (size_t i = 0; i < N_OWN; i++) {
        const struct code *c = &own_codes[i];
        cr_assert_str_eq(tc_strerror(c->value), c->text, "tc_strerror(%d)", c->value);
        cr_assert_str_eq(tc_err_name(c->value), c->name, "tc_err_name(%d)", c->value);
        /* In the reserved range, below every errno value, and unique. */
        cr_assert(c->value <= OWN_FIRST && c->value > OWN_BOUND, "%s = %d out of range", c->name,
                  c->value);
        for (size_t j = 0; j < i; j++)
            cr_assert_neq(own_codes[j].value, c->value, "%s and %s share %d", own_codes[j].name,
                          c->name, c->value);
    }
    /* The enum constants are the map's values. */
    cr_assert_eq(TC_EOF, -4100);
    cr_assert_str_eq(tc_err_name(TC_EOF), "TC_EOF");
    cr_assert_str_eq(tc_err_name(TC_EBADADDR), "TC_EBADADDR");
    cr_assert_str_eq(tc_strerror(TC_ENOMODE), "concurrency mode not available");
}

Test(error, errno_values, .timeout = 10)
{
    static const struct {
        int err;
        const char *name;
        const char *text;
    } cases[] = {
        {ECONNRESET, "ECONNRESET", "Connection reset by peer"},
        {EPIPE, "EPIPE", "Broken pipe"},
        {ETIMEDOUT, "ETIMEDOUT", "Connection timed out"},
        {EADDRINUSE, "EADDRINUSE", "Address already in use"},
        {ECONNREFUSED, "ECONNREFUSED", "Connection refused"},
        {ENAMETOOLONG, "ENAMETOOLONG", "File name too long"},
        {EAFNOSUPPORT, "EAFNOSUPPORT", "Address family not supported by protocol"},
        {ENOSPC, "ENOSPC", "No space left on device"},
        {EINVAL, "EINVAL", "Invalid argument"},
        {EBUSY, "EBUSY", "Device or resource busy"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_assert_str_eq(tc_err_name(-cases[i].err), cases[i].name);
        /* Locale-independent glibc descriptions. */
        cr_assert_str_eq(tc_strerror(-cases[i].err), cases[i].text, "tc_strerror(-%s)",
                         cases[i].name);
    }
}

Test(error, undefined_codes, .timeout = 10)
{
    /* Far outside errno, in the reserved range but unassigned, and its bound. */
    const int undefined[] = {-99999, -4198, -4150, OWN_BOUND, -1000000};
    for (size_t i = 0; i < sizeof undefined / sizeof undefined[0]; i++) {
        cr_assert_str_eq(tc_strerror(undefined[i]), "unknown error", "tc_strerror(%d)",
                         undefined[i]);
        cr_assert_str_eq(tc_err_name(undefined[i]), "UNKNOWN", "tc_err_name(%d)", undefined[i]);
    }
    /* INT_MIN cannot be negated: it must still be answered without overflow. */
    cr_assert_str_eq(tc_strerror(INT_MIN), "unknown error");
    cr_assert_str_eq(tc_err_name(INT_MIN), "UNKNOWN");
    cr_assert_str_eq(tc_strerror(INT_MIN + 1), "unknown error");
}

Test(error, never_null, .timeout = 20)
{
    for (int code = -5000; code <= 16; code++) {
        const char *s = tc_strerror(code), *n = tc_err_name(code);
        cr_assert_not_null(s, "tc_strerror(%d) is NULL", code);
        cr_assert_not_null(n, "tc_err_name(%d) is NULL", code);
        cr_assert_gt(strlen(s), 0, "tc_strerror(%d) is empty", code);
        cr_assert_gt(strlen(n), 0, "tc_err_name(%d) is empty", code);
    }
    for (int code = INT_MIN; code < INT_MIN + 16; code++) {
        cr_assert_not_null(tc_strerror(code));
        cr_assert_not_null(tc_err_name(code));
    }
}

Test(error, version_matches_macros, .timeout = 10)
{
    char expect[32];
    snprintf(expect, sizeof expect, "%d.%d.%d", TC_VERSION_MAJOR, TC_VERSION_MINOR,
             TC_VERSION_PATCH);
    cr_assert_str_eq(TC_VERSION_STRING, expect);
    cr_assert_str_eq(tc_version_string(), TC_VERSION_STRING);
    cr_assert_eq(tc_version(), (unsigned)TC_VERSION_HEX);
    cr_assert_eq(tc_version(), ((unsigned)TC_VERSION_MAJOR << 16) |
                                   ((unsigned)TC_VERSION_MINOR << 8) | (unsigned)TC_VERSION_PATCH);
    cr_assert_eq(tc_version() >> 16, (unsigned)TC_VERSION_MAJOR);
    cr_assert_eq((tc_version() >> 8) & 0xff, (unsigned)TC_VERSION_MINOR);
    cr_assert_eq(tc_version() & 0xff, (unsigned)TC_VERSION_PATCH);
}
