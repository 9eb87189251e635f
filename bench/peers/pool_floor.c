/* SPDX-License-Identifier: MIT */
/* pool_floor: the least a multiplexing pool can do, as the pool mode's floor.
 * One epoll thread parks every connection (EPOLLONESHOT) and accepts; a
 * ready connection goes through a bounded queue (mutex + condition) to one
 * of N worker threads, which receives, echoes with a blocking send and arms
 * the descriptor again itself. No timers, no limits, no frames: what is left
 * is the hand-off, which a thread-per-connection server (thread_floor) does
 * not pay and an epoll server (epoll_floor) does not either.
 *
 *   pool_floor [--listen HOST:PORT] [--workers N]   (default 16) */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "peer_common.h"

#define QUEUE_CAP 4096
#define BUF_SIZE (64 * 1024)

static int ep;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work = PTHREAD_COND_INITIALIZER;
static int queue[QUEUE_CAP];
static unsigned qhead, qlen;

static void arm(int fd)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
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
    for (;;) {
        pthread_mutex_lock(&mu);
        while (qlen == 0)
            pthread_cond_wait(&work, &mu);
        int fd = queue[qhead];
        qhead = (qhead + 1) % QUEUE_CAP;
        qlen--;
        pthread_mutex_unlock(&mu);
        ssize_t n = recv(fd, buf, BUF_SIZE, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            arm(fd);
            continue;
        }
        if (n <= 0 || send_all(fd, buf, (size_t)n) < 0) {
            close(fd); /* leaves the epoll set with it */
            continue;
        }
        arm(fd);
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
    int lfd = peer_listen(addr);
    if (lfd < 0)
        return 1;
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    for (int i = 0; i < nworkers; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, NULL) != 0) {
            perror("pthread_create");
            return 1;
        }
        pthread_detach(t);
    }
    peer_announce(lfd);
    struct epoll_event evs[256];
    for (;;) { /* SIGTERM's default action ends it */
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                int c;
                while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT,
                                             .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
                }
                continue;
            }
            pthread_mutex_lock(&mu);
            if (qlen < QUEUE_CAP) {
                queue[(qhead + qlen) % QUEUE_CAP] = fd;
                qlen++;
                pthread_cond_signal(&work);
            } else {
                arm(fd); /* full: look again later (the floor never fills it) */
            }
            pthread_mutex_unlock(&mu);
        }
    }
}
