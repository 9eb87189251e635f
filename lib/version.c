/* SPDX-License-Identifier: MIT */
/* The linked library's version, for comparison with the headers' macros. */
#include "internal.h"

unsigned tc_version(void)
{
    return TC_VERSION_HEX;
}

const char *tc_version_string(void)
{
    return TC_VERSION_STRING;
}
