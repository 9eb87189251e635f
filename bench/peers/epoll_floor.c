/* SPDX-License-Identifier: MIT */
/* epoll_floor: the least an echo server can do, as the benchmark's floor.
 * One thread, level-triggered epoll, one shared read buffer; a connection owns
 * memory only while the peer is not reading its echo (a pending tail). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "peer_common.h"

#define BUF_SIZE (64 * 1024)
#define ACCEPTS_PER_WAKEUP 64

struct pending {
    char *data;
    size_t off, len;
};

static struct pending *pend; /* indexed by fd; NULL data: nothing pending */
static int npend;
static volatile sig_atomic_t stop;

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

static void drop(int ep, int fd)
{
    if (fd < npend) {
        free(pend[fd].data);
        pend[fd].data = NULL;
    }
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
}

static int ensure_slot(int fd)
{
    if (fd < npend)
        return 0;
    int n = npend ? npend : 1024;
    while (n <= fd)
        n *= 2;
    struct pending *p = realloc(pend, (size_t)n * sizeof *p);
    if (!p)
        return -1;
    memset(p + npend, 0, (size_t)(n - npend) * sizeof *p);
    pend = p;
    npend = n;
    return 0;
}

/* Send what is pending; 1 when all of it went out. */
static int flush(int ep, int fd)
{
    struct pending *p = &pend[fd];
    while (p->off < p->len) {
        ssize_t n = send(fd, p->data + p->off, p->len - p->off, MSG_NOSIGNAL);
        if (n > 0) {
            p->off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            return 0;
        } else {
            drop(ep, fd);
            return -1;
        }
    }
    free(p->data);
    p->data = NULL;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
    return 1;
}

static void echo(int ep, int fd, char *buf)
{
    ssize_t n = recv(fd, buf, BUF_SIZE, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        drop(ep, fd);
        return;
    }
    size_t off = 0;
    while (off < (size_t)n) {
        ssize_t w = send(fd, buf + off, (size_t)n - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && errno == EAGAIN) {
            /* The peer is not reading: keep the tail, stop reading until it drains. */
            struct pending *p = &pend[fd];
            p->len = (size_t)n - off;
            p->off = 0;
            p->data = malloc(p->len);
            if (!p->data) {
                drop(ep, fd);
                return;
            }
            memcpy(p->data, buf + off, p->len);
            struct epoll_event ev = {.events = EPOLLOUT, .data.fd = fd};
            epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
            return;
        } else {
            drop(ep, fd);
            return;
        }
    }
}

int main(int argc, char **argv)
{
    const char *listen_addr = peer_listen_arg(argc, argv);
    int lfd = peer_listen(listen_addr);
    if (lfd < 0)
        return 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    char *buf = malloc(BUF_SIZE);
    if (ep < 0 || !buf || ensure_slot(1024) < 0)
        return 1;
    peer_announce(lfd);

    struct epoll_event evs[256];
    while (!stop) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                for (int k = 0; k < ACCEPTS_PER_WAKEUP; k++) {
                    int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0)
                        break;
                    if (ensure_slot(c) < 0) {
                        close(c);
                        continue;
                    }
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
            } else if (fd < npend && pend[fd].data) {
                flush(ep, fd);
            } else {
                echo(ep, fd, buf);
            }
        }
    }
    return 0;
}
