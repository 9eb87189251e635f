/* SPDX-License-Identifier: MIT */
/* Forking mode (ForkingMixIn): a process per connection. The parent keeps
 * each connection registered until its child is reaped, and learns that a
 * child ended through a pidfd (or, where pidfd_open is missing, a pipe the
 * child holds) watched by a poller: no SIGCHLD handler, no waitpid(-1). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define EVENTS_PER_TURN 64
#define UNWATCHED_POLL_MS 10 /* how often children without a descriptor are polled */
#define EOF_RETRIES 50       /* pipe EOF comes just before the child turns zombie */

struct child {
    pid_t pid;
    int fd;                     /* pidfd or the pipe's read end; -1: polled (unwatched) */
    tc__session *s;             /* the parent's copy, registered until the reap */
    struct child *prev, *next;
};

/* Used by one thread at a time: the serving thread, then the one calling
 * destroy, then (block_on_close off) the reaper thread it starts. */
struct state {
    tc__poller *poller;         /* the children's descriptors and tfd; srv->mode_fd is its fd */
    int tfd;                    /* timerfd, armed while some child is unwatched */
    int use_pidfd;
    unsigned live;
    unsigned unwatched;
    struct child *children;
};

static struct state *st_of(tc_server *srv)
{
    return srv->mode_state;
}

static void arm_timer(struct state *st, int on)
{
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (on) {
        its.it_value.tv_nsec = UNWATCHED_POLL_MS * 1000000L;
        its.it_interval = its.it_value;
    }
    (void)timerfd_settime(st->tfd, 0, &its, NULL);
}

/* Stop watching a child's descriptor: it is then polled with WNOHANG on a timer. */
static void unwatch(struct state *st, struct child *c)
{
    if (c->fd >= 0) {
        /* Remove it before closing: a sibling forked meanwhile may still hold a
         * copy, and epoll keeps reporting a description while any copy lives. */
        (void)tc__poller_del(st->poller, c->fd);
        tc__close(c->fd);
        c->fd = -1;
    }
    if (st->unwatched++ == 0)
        arm_timer(st, 1);
}

static void watch(tc_server *srv, struct state *st, struct child *c, int fd)
{
    c->fd = fd;
    if (fd >= 0 && tc__poller_add(st->poller, fd, TC__POLL_IN, c) == 0)
        return;
    tc__log(srv, TC_LOG_DEBUG, "forking: child %d is polled (no descriptor to watch)",
                   (int)c->pid);
    unwatch(st, c);
}

/* The child is gone (how: tc__child_reap's answer): say how it ended, then
 * release its connection. */
static void child_done(tc_server *srv, struct state *st, struct child *c, int how, int status)
{
    if (c->fd >= 0) {
        (void)tc__poller_del(st->poller, c->fd);
        tc__close(c->fd);
    } else if (--st->unwatched == 0) {
        arm_timer(st, 0);
    }
    TC__LIST_UNLINK(st->children, c);
    st->live--;

    if (!tc__child_succeeded(how, status)) {
        /* Reaped elsewhere (SIGCHLD set to SIG_IGN, or the application's
         * waitpid(-1)) is no failure of the child's: only a debug line. */
        int failed = how == TC__CHILD_ENDED;
        char peer[TC_ADDR_STRLEN] = "-", text[TC__CHILD_HOW_LEN];
        tc_addr from;
        tc__chan_peer_copy(c->s->conn, &from);
        (void)tc_addr_format(&from, peer, sizeof peer);
        tc__log(srv, failed ? TC_LOG_WARN : TC_LOG_DEBUG, "forking: child %d (%s) %s",
                       (int)c->pid, peer, tc__child_describe(how, status, text, sizeof text));
        if (failed)
            tc__report(srv, NULL, TC_ECHILD);
    }
    tc__session *s = c->s;
    free(c);
    tc__server_session_done(s); /* may free srv when it holds the last reference */
}

/* Reap one child if it has ended: 1 if it was, 0 if it still runs. */
static int try_reap(tc_server *srv, struct state *st, struct child *c)
{
    int status = 0;
    int how = tc__child_reap(c->pid, 0, &status);
    if (how == TC__CHILD_RUNNING)
        return 0;
    child_done(srv, st, c, how, status);
    return 1;
}

/* A child's descriptor became readable: its process ended (pidfd) or closed
 * its end of the pipe, which it does on exit, a moment before it can be reaped. */
static void on_event(tc_server *srv, struct state *st, struct child *c)
{
    for (int i = 0; i < EOF_RETRIES; i++) {
        if (try_reap(srv, st, c))
            return;
        if (st->use_pidfd)
            break;
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
    }
    /* Still running: it closed the pipe itself (or exec'd). Poll it from now on. */
    unwatch(st, c);
}

/* Reap every child that has ended; never blocks. */
static void forking_service(tc_server *srv)
{
    struct state *st = st_of(srv);
    tc__pevent ev[EVENTS_PER_TURN];
    int n;
    do {
        n = tc__poller_wait(st->poller, ev, EVENTS_PER_TURN, 0);
        for (int i = 0; i < n; i++) {
            if (ev[i].ptr == NULL) { /* the timer */
                uint64_t ticks;
                ssize_t r = read(st->tfd, &ticks, sizeof ticks);
                (void)r;
                continue;
            }
            on_event(srv, st, ev[i].ptr);
        }
    } while (n == EVENTS_PER_TURN);
    if (st->unwatched) {
        struct child *next;
        for (struct child *c = st->children; c; c = next) {
            next = c->next;
            if (c->fd < 0)
                (void)try_reap(srv, st, c);
        }
    }
}

static int forking_start(tc_server *srv)
{
    struct state *st = calloc(1, sizeof *st);
    if (!st)
        return -ENOMEM;
    st->tfd = -1;
    int rc = tc__poller_create(&st->poller);
    if (rc == 0 && (st->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)) < 0)
        rc = -errno;
    if (rc == 0)
        rc = tc__poller_add(st->poller, st->tfd, TC__POLL_IN, NULL);
    if (rc < 0) {
        tc__poller_destroy(st->poller);
        tc__close(st->tfd);
        free(st);
        return rc;
    }
    /* Without pidfds each child holds a pipe. */
    int probe = tc__child_probe();
    st->use_pidfd = probe == 0;
    if (st->use_pidfd)
        tc__log(srv, TC_LOG_DEBUG, "forking: children watched with pidfds");
    else
        tc__log(srv, TC_LOG_DEBUG, "forking: children watched with pipes (pidfd_open: %s)",
                       tc_strerror(probe));
    srv->mode_state = st;
    srv->mode_fd = tc__poller_fd(st->poller);
    return 0;
}

/* In the child: drop every descriptor of the server but this connection's,
 * run the handler and leave with _exit (no atexit handlers, no second flush
 * of stdio buffers copied from the parent). Never returns. */
__attribute__((noreturn)) static void child_main(tc_server *srv, struct state *st,
                                                 tc__session *s, int pipe_rd)
{
    if (!srv->dgram) /* a datagram's reply goes out through the server's socket */
        tc__server_close_listeners(srv);
    tc__close(srv->wakefd);
    tc__close(srv->spare_fd);
    tc__poller_destroy(st->poller);
    st->poller = NULL;
    tc__close(st->tfd);
    tc__close(pipe_rd);
    /* -1, so that a handler calling tc_server_shutdown() on its copy of the
     * server cannot write into a descriptor that reuses the number. */
    srv->lfd = srv->wakefd = srv->spare_fd = srv->mode_fd = -1;
    srv->in_child = 1; /* stopfd stays: the parent's drain reaches us through it */
    /* The siblings' sockets: kept open here, their clients would not see the
     * end of the stream until this child exits too. */
    for (struct child *c = st->children; c; c = c->next) {
        tc__close(c->s->conn->fd);
        tc__close(c->fd);
    }
    tc__session_run(s);
    /* The parent's copy stays open until the reap: end the stream now. */
    tc__sock_shutdown(s->conn->fd);
    _exit(0);
}

static int forking_process_request(tc_server *srv, tc__session *s)
{
    struct state *st = st_of(srv);
    forking_service(srv); /* reap first: fewer inherited descriptors to close */
    struct child *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    int p[2] = {-1, -1};
    if (!st->use_pidfd && pipe2(p, O_CLOEXEC) < 0) {
        int rc = -errno;
        free(c);
        return rc;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int rc = -errno;
        tc__close(p[0]);
        tc__close(p[1]);
        free(c);
        return rc; /* the core reports it and closes the connection */
    }
    if (pid == 0) {
        free(c); /* the parent's record of the child: nothing to the child itself */
        child_main(srv, st, s, p[0]);
    }

    tc__close(p[1]); /* the child's end: EOF here once the child is gone */
    c->pid = pid;
    c->s = s;
    TC__LIST_PUSH(st->children, c);
    st->live++;
    int fd = p[0];
    if (st->use_pidfd && (fd = tc__child_watch(pid)) < 0) {
        tc__log(srv, TC_LOG_WARN, "forking: pidfd_open(%d): %s", (int)pid,
                       tc_strerror(fd));
        fd = -1;
    }
    watch(srv, st, c, fd);
    return 0;
}

static int forking_wait(tc_server *srv, int64_t deadline)
{
    struct state *st = st_of(srv);
    for (;;) {
        forking_service(srv);
        if (st->live == 0)
            return 0;
        int timeout = tc__ms_until(deadline);
        if (timeout == 0)
            return -ETIMEDOUT;
        struct pollfd p = {.fd = tc__poller_fd(st->poller), .events = POLLIN};
        if (poll(&p, 1, timeout) < 0 && errno != EINTR)
            return -errno;
    }
}

/* After destroy with block_on_close off: reap the remaining children as they
 * end. It holds a server reference, so the server (and this state) outlive
 * it; the release at the end may free them, in this thread. */
static void *reaper_main(void *arg)
{
    tc_server *srv = arg;
    (void)forking_wait(srv, TC__NO_DEADLINE);
    tc__server_release(srv);
    return NULL;
}

static void forking_abandon(tc_server *srv)
{
    struct state *st = st_of(srv);
    forking_service(srv);
    if (st->live == 0)
        return;
    pthread_attr_t attr;
    pthread_t tid;
    int rc = pthread_attr_init(&attr);
    if (rc == 0) {
        (void)pthread_attr_setstacksize(&attr, srv->cfg.thread_stack_size);
        (void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        tc__server_ref(srv);
        rc = pthread_create(&tid, &attr, reaper_main, srv);
        pthread_attr_destroy(&attr);
        if (rc != 0)
            tc__server_release(srv); /* not the last: the caller still holds one */
    }
    if (rc != 0) {
        /* Nobody else could reap them: wait here rather than leave zombies. */
        tc__log(srv, TC_LOG_WARN, "forking: no reaper thread (%s); waiting for %u children",
                       tc_strerror(-rc), st->live);
        (void)forking_wait(srv, TC__NO_DEADLINE);
    }
}

static void forking_stop(tc_server *srv)
{
    struct state *st = st_of(srv);
    if (!st)
        return;
    /* No connection is live, so every child has been reaped. */
    tc__poller_destroy(st->poller);
    tc__close(st->tfd);
    free(st);
    srv->mode_state = NULL;
    srv->mode_fd = -1;
}

const tc__mode tc__mode_forking = {
    .id = TC_MODE_FORKING,
    /* The child's reads and message waits watch stopfd: the parent cannot
     * see them idle, and cuts their sockets only after drain_timeout. */
    .blocking = 1,
    .default_max_conns = 40, /* ForkingMixIn.max_children */
    .start = forking_start,
    .process_request = forking_process_request,
    .service = forking_service,
    .wait = forking_wait,
    .abandon = forking_abandon,
    .stop = forking_stop,
};
