/* SPDX-License-Identifier: MIT */
/* pool_floor: the least a pool of threads over one epoll set can do, as
 * the pool mode's floor. N worker threads wait on the same epoll set, in
 * which every connection (and the listener) is registered EPOLLONESHOT: the
 * kernel gives each ready descriptor to one waiting worker, which receives,
 * echoes with a blocking send and arms the descriptor again. No loop
 * thread, no timers, no limits, no frames.
 *
 *   pool_floor [--listen HOST:PORT] [--workers N]   (default 16) */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "peer_common.h"

#define BUF_SIZE (64 * 1024)

static int ep, lfd;

static void arm(int fd, int add)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.fd = fd};
    epoll_ctl(ep, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev);
}

/* Everything of buf out, waiting for room with poll (a slow reader). */
static int send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            poll(&p, 1, -1);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static void *worker(void *arg)
{
    (void)arg;
    char *buf = malloc(BUF_SIZE);
    if (!buf)
        return NULL;
    for (;;) {
        struct epoll_event ev;
        if (epoll_wait(ep, &ev, 1, -1) != 1)
            continue;
        int fd = ev.data.fd;
        if (fd == lfd) {
            int c;
            while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0)
                arm(c, 1);
            arm(lfd, 0);
            continue;
        }
        ssize_t n = recv(fd, buf, BUF_SIZE, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            arm(fd, 0);
            continue;
        }
        if (n <= 0 || send_all(fd, buf, (size_t)n) < 0) {
            close(fd); /* leaves the epoll set with it */
            continue;
        }
        arm(fd, 0);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1:0";
    int nworkers = 16;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
            addr = argv[++i];
        } else if (!strcmp(argv[i], "--workers") && i + 1 < argc) {
            nworkers = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--listen HOST:PORT] [--workers N]\n", argv[0]);
            return 2;
        }
    }
    if (nworkers < 1) {
        fprintf(stderr, "--workers: at least 1\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if ((lfd = peer_listen(addr)) < 0)
        return 1;
    ep = epoll_create1(EPOLL_CLOEXEC);
    arm(lfd, 1);
    for (int i = 0; i < nworkers; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, NULL) != 0) {
            perror("pthread_create");
            return 1;
        }
        pthread_detach(t);
    }
    peer_announce(lfd);
    for (;;) /* SIGTERM's default action ends it */
        pause();
}
