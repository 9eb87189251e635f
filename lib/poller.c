/* SPDX-License-Identifier: MIT */
/* The readiness poller behind the event mode and forking mode's watch on its
 * children: epoll here, behind a small interface (create / add / mod / del /
 * wait, and fd to nest it in another wait) so kqueue could stand in. */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "internal.h"

struct tc__poller {
    int epfd;
};

static uint32_t to_epoll(unsigned events)
{
    uint32_t e = 0;
    if (events & TC__POLL_IN)
        e |= EPOLLIN | EPOLLRDHUP;
    if (events & TC__POLL_OUT)
        e |= EPOLLOUT;
    if (events & TC__POLL_ONESHOT)
        e |= EPOLLONESHOT;
    if (events & TC__POLL_EDGE)
        e |= EPOLLET;
    return e;
}

int tc__poller_create(tc__poller **out)
{
    tc__poller *p = malloc(sizeof *p);
    if (!p)
        return -ENOMEM;
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epfd < 0) {
        int err = -errno;
        free(p);
        return err;
    }
    *out = p;
    return 0;
}

void tc__poller_destroy(tc__poller *p)
{
    if (!p)
        return;
    tc__close(p->epfd);
    free(p);
}

int tc__poller_fd(const tc__poller *p)
{
    return p->epfd;
}

static int ctl(tc__poller *p, int op, int fd, unsigned events, void *ptr)
{
    struct epoll_event ev = {.events = to_epoll(events), .data.ptr = ptr};
    return epoll_ctl(p->epfd, op, fd, &ev) < 0 ? -errno : 0;
}

int tc__poller_add(tc__poller *p, int fd, unsigned events, void *ptr)
{
    return ctl(p, EPOLL_CTL_ADD, fd, events, ptr);
}

int tc__poller_mod(tc__poller *p, int fd, unsigned events, void *ptr)
{
    return ctl(p, EPOLL_CTL_MOD, fd, events, ptr);
}

int tc__poller_del(tc__poller *p, int fd)
{
    return ctl(p, EPOLL_CTL_DEL, fd, 0, NULL);
}

int tc__poller_set_token(tc__poller *p, int add, int fd, unsigned events, uint64_t token)
{
    struct epoll_event ev = {.events = to_epoll(events), .data.u64 = token};
    return epoll_ctl(p->epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

static unsigned from_epoll(uint32_t events)
{
    unsigned e = 0;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        e |= TC__POLL_IN;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        e |= TC__POLL_OUT;
    return e;
}

int tc__poller_wait_token(tc__poller *p, uint64_t *token, unsigned *events, int timeout_ms)
{
    struct epoll_event ev;
    int n = epoll_wait(p->epfd, &ev, 1, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    if (n == 1) {
        *token = ev.data.u64;
        *events = from_epoll(ev.events);
    }
    return n;
}

int tc__poller_wait(tc__poller *p, tc__pevent *out, int max, int timeout_ms)
{
    struct epoll_event ev[TC__POLL_BATCH];
    if (max > TC__POLL_BATCH)
        max = TC__POLL_BATCH;
    int n = epoll_wait(p->epfd, ev, max, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; i++) {
        out[i].ptr = ev[i].data.ptr;
        out[i].events = from_epoll(ev[i].events);
    }
    return n;
}

/* ---- the event loops' epoll backend: the poller as it is ------------------ */

static int evb_create(tc__evb **out)
{
    return tc__poller_create((tc__poller **)out);
}

static void evb_destroy(tc__evb *b)
{
    tc__poller_destroy((tc__poller *)b);
}

static int evb_attach(tc__evb *b)
{
    (void)b;
    return 0;
}

static void evb_detach(tc__evb *b)
{
    (void)b;
}

static int evb_add(tc__evb *b, int fd, unsigned events, void *ptr)
{
    return tc__poller_add((tc__poller *)b, fd, events, ptr);
}

static int evb_mod(tc__evb *b, int fd, unsigned events, void *ptr)
{
    return tc__poller_mod((tc__poller *)b, fd, events, ptr);
}

static int evb_del(tc__evb *b, int fd)
{
    return tc__poller_del((tc__poller *)b, fd);
}

static int evb_wait(tc__evb *b, tc__ev *out, int max, int timeout_ms)
{
    tc__pevent ev[TC__POLL_BATCH];
    int n = tc__poller_wait((tc__poller *)b, ev, max, timeout_ms);
    for (int i = 0; i < n; i++)
        out[i] = (tc__ev){.ptr = ev[i].ptr, .events = ev[i].events, .buf = -1};
    return n;
}

static void evb_release(tc__evb *b, tc__ev *ev)
{
    (void)b, (void)ev; /* readiness only: the loop received into its own buffer */
}

const tc__evbackend tc__evb_epoll = {
    .name = "epoll",
    .create = evb_create,
    .destroy = evb_destroy,
    .attach = evb_attach,
    .detach = evb_detach,
    .add = evb_add,
    .mod = evb_mod,
    .del = evb_del,
    .wait = evb_wait,
    .release = evb_release,
};
