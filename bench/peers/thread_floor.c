/* SPDX-License-Identifier: MIT */
/* thread_floor: the least a thread-per-connection echo server can do, the
 * floor of the blocking modes (bench/ab compares threading and pool with it):
 * a detached thread per connection on a small stack, blocking recv and send,
 * nothing else. No limits, no timeouts, no shutdown of its threads: a
 * benchmark peer, not a server to copy. */
#define _GNU_SOURCE /* accept4 */
#include <poll.h>
#include <stdint.h>
#include <pthread.h>
#include <signal.h>

#include "peer_common.h"

#define BUF_SIZE 16384

static void *serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[BUF_SIZE];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
            break;
        for (ssize_t off = 0, w; off < n; off += w)
            if ((w = send(fd, buf + off, (size_t)(n - off), MSG_NOSIGNAL)) <= 0)
                goto out;
    }
out:
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    int lfd = peer_listen(peer_listen_arg(argc, argv));
    if (lfd < 0)
        return 1;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    peer_announce(lfd);
    for (;;) {
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        if (poll(&p, 1, -1) < 0)
            continue;
        int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC); /* blocking: the thread sleeps in recv */
        if (c < 0)
            continue;
        pthread_t t;
        if (pthread_create(&t, &attr, serve, (void *)(intptr_t)c) != 0)
            close(c);
    }
}
