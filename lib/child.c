/* SPDX-License-Identifier: MIT */
/* Child processes, for forking mode and prefork: a pidfd to watch one, a reap
 * by pid (never waitpid(-1): the application's other children are not ours)
 * and the short text saying how one ended. A leaf: no server, no log. */
#include <errno.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

int tc__child_watch(pid_t pid)
{
#ifdef SYS_pidfd_open
    long fd = syscall(SYS_pidfd_open, pid, 0); /* close-on-exec by design */
    return fd < 0 ? -errno : (int)fd;
#else
    (void)pid;
    return -ENOSYS;
#endif
}

int tc__child_probe(void)
{
    /* pidfd_open is missing before Linux 5.3 and under some sandboxes
     * (gVisor, seccomp filters): try it once on ourselves. */
    int fd = tc__child_watch(getpid());
    if (fd < 0)
        return fd;
    tc__close(fd);
    return 0;
}

int tc__child_reap(pid_t pid, int block, int *status)
{
    int st = 0;
    pid_t r;
    do
        r = waitpid(pid, &st, block ? 0 : WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return TC__CHILD_RUNNING;
    if (r != pid)
        return TC__CHILD_GONE; /* ECHILD: SIGCHLD ignored, or the application's waitpid(-1) */
    *status = st;
    return TC__CHILD_ENDED;
}

int tc__child_succeeded(int how, int status)
{
    return how == TC__CHILD_ENDED && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

const char *tc__child_describe(int how, int status, char *buf, size_t len)
{
    if (how == TC__CHILD_RUNNING)
        (void)snprintf(buf, len, "is still running");
    else if (how == TC__CHILD_GONE)
        (void)snprintf(buf, len, "was reaped elsewhere (status unknown)");
    else if (WIFSIGNALED(status))
        (void)snprintf(buf, len, "killed by signal %d", WTERMSIG(status));
    else
        (void)snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    return buf;
}
