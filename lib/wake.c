/* SPDX-License-Identifier: MIT */
/* Wake-up descriptors: an eventfd one thread (or a signal handler) writes
 * and a poll loop watches, then drains. */
#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"

int tc__wake_open(int *out_fd)
{
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    *out_fd = fd;
    return 0;
}

void tc__wake(int fd)
{
    int saved = errno; /* callable from a signal handler */
    uint64_t one = 1;
    ssize_t w = write(fd, &one, sizeof one);
    (void)w; /* EAGAIN: the counter is already non-zero, the watcher wakes anyway */
    errno = saved;
}

void tc__wake_drain(int fd)
{
    uint64_t v;
    while (read(fd, &v, sizeof v) == (ssize_t)sizeof v)
        ;
}

int tc__wake_pending(int fd)
{
    return tc__sock_readable(fd);
}
