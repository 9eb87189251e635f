/* SPDX-License-Identifier: MIT */
/* The accept hook of accept_hook.h: accept4 defined in the test executable
 * takes precedence over libc's for the whole process, libtcpchan included. */
#include "accept_hook.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define ACC_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ACC_SANITIZED 1
#endif

#ifdef ACC_SANITIZED
/* The sanitizer's own (its accept4 is a weak alias of this): it keeps its
 * bookkeeping of descriptors. */
int __interceptor_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
#define REAL_ACCEPT4 __interceptor_accept4
#else
static int real_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    return (int)syscall(SYS_accept4, fd, addr, len, flags);
}
#define REAL_ACCEPT4 real_accept4
#endif

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int fail_err;
static long fail_left; /* < 0: without end */
static long out_of_fds;

void acc_init(void)
{
    pthread_mutex_lock(&mu);
    fail_err = 0;
    fail_left = 0;
    out_of_fds = 0;
    pthread_mutex_unlock(&mu);
}

void acc_fail(int err, long n)
{
    pthread_mutex_lock(&mu);
    fail_err = err;
    fail_left = n;
    pthread_mutex_unlock(&mu);
}

void acc_disarm(void)
{
    acc_fail(0, 0);
}

long acc_out_of_fds(void)
{
    pthread_mutex_lock(&mu);
    long n = out_of_fds;
    pthread_mutex_unlock(&mu);
    return n;
}

int acc_wait_out_of_fds(long n, int ms)
{
    struct timespec end;
    clock_gettime(CLOCK_REALTIME, &end); /* the condition variable's default clock */
    end.tv_sec += ms / 1000;
    end.tv_nsec += (long)(ms % 1000) * 1000000;
    if (end.tv_nsec >= 1000000000) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000;
    }
    int rc = 0;
    pthread_mutex_lock(&mu);
    while (out_of_fds < n && rc == 0)
        rc = pthread_cond_timedwait(&cv, &mu, &end);
    int ok = out_of_fds >= n;
    pthread_mutex_unlock(&mu);
    return ok ? 0 : -1;
}

/* glibc's prototype, transparent union and all (under _GNU_SOURCE). */
int accept4(int fd, __SOCKADDR_ARG addr, socklen_t *__restrict len, int flags)
{
    pthread_mutex_lock(&mu);
    int err = 0;
    if (fail_left != 0) {
        err = fail_err;
        if (fail_left > 0)
            fail_left--;
    }
    pthread_mutex_unlock(&mu);
    int rc = err ? -1 : REAL_ACCEPT4(fd, addr.__sockaddr__, len, flags);
    if (err)
        errno = err;
    else if (rc < 0)
        err = errno;
    if (err == EMFILE || err == ENFILE) {
        pthread_mutex_lock(&mu);
        out_of_fds++;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
        errno = err;
    }
    return rc;
}
