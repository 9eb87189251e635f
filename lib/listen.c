/* SPDX-License-Identifier: MIT */
/* Socket activation without libsystemd: the sockets a service manager passed
 * through LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES (sd_listen_fds(3)). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define FIRST_FD 3 /* SD_LISTEN_FDS_START */

/* A decimal number without sign or junk: 0, or -1. */
static int parse_num(const char *s, long *out)
{
    if (!s || *s < '0' || *s > '9')
        return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

int tc_listen_fds(const char *name, int *fds, int max)
{
    if (max < 0 || (!fds && max > 0))
        return -EINVAL;
    long pid, n;
    if (parse_num(getenv("LISTEN_PID"), &pid) < 0 || pid != (long)getpid() ||
        parse_num(getenv("LISTEN_FDS"), &n) < 0 || n == 0)
        return TC_ENOLISTENFDS;
    if (n > INT_MAX - FIRST_FD)
        return TC_EBADCONFIG;
    for (int fd = FIRST_FD; fd < FIRST_FD + n; fd++) {
        int fl = fcntl(fd, F_GETFD);
        if (fl < 0 || (!(fl & FD_CLOEXEC) && fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0))
            return -errno;
    }
    const char *names = getenv("LISTEN_FDNAMES");
    long found = 0;
    const char *s = names;
    for (long i = 0; i < n; i++) {
        const char *e = NULL;
        size_t len = 0;
        if (names) {
            if (!s)
                return TC_EBADCONFIG; /* fewer names than sockets */
            e = strchr(s, ':');
            len = e ? (size_t)(e - s) : strlen(s);
        }
        int match = !name || (names ? strlen(name) == len && memcmp(s, name, len) == 0
                                    : strcmp(name, "unknown") == 0);
        if (match) {
            if (found < max)
                fds[found] = FIRST_FD + (int)i;
            found++;
        }
        if (names)
            s = e ? e + 1 : NULL;
    }
    if (names && s)
        return TC_EBADCONFIG; /* more names than sockets */
    return found ? (int)found : TC_ENOFDNAME;
}
