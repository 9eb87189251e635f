/* SPDX-License-Identifier: MIT */
/* The registry of concurrency modes: names, and the table of each mode this
 * build implements. A new mode is a new mode_*.c file plus one line here. */
#include <errno.h>
#include <string.h>

#include "internal.h"

static const char *const names[] = {"inline", "threading", "forking", "pool", "event"};

static const tc__mode *const modes[] = {
    [TC_MODE_INLINE] = &tc__mode_inline,
    [TC_MODE_THREADING] = &tc__mode_threading,
    [TC_MODE_FORKING] = &tc__mode_forking,
    [TC_MODE_POOL] = &tc__mode_pool,
    [TC_MODE_EVENT] = &tc__mode_event,
};

const tc__mode *tc__mode_find(tc_mode id)
{
    if ((int)id < 0 || (size_t)id >= sizeof modes / sizeof modes[0])
        return NULL;
    return modes[id];
}

const char *tc_mode_name(tc_mode mode)
{
    if ((int)mode < 0 || (size_t)mode >= sizeof names / sizeof names[0])
        return "unknown";
    return names[mode];
}

int tc_mode_parse(const char *name, tc_mode *out)
{
    if (!name || !out)
        return -EINVAL;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (tc_mode)i;
            return 0;
        }
    }
    return TC_EBADCONFIG;
}

int tc_mode_available(tc_mode mode)
{
    return tc__mode_find(mode) != NULL;
}
