/* SPDX-License-Identifier: MIT */
/* Event mode (lib/mode_event.c): a thousand concurrent connections on one or
 * two loops, bounded memory under backpressure, tc_conn_send from a foreign
 * thread and its high-water mark, what a send took (tc_conn_last_sent),
 * timers (order, periods, cancel), the idle
 * timeout, flushing on shutdown, max_conns, verify_request, stats, 10,000
 * idle connections (their clients in a child process),
 * service_actions while idle, and clean teardown. Servers listen on
 * 127.0.0.1:0; clients are raw sockets, tc_dial channels or an epoll fleet. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

/* Loops assert with `if (...) cr_assert_fail()`: ctest runs suites with
 * --full-stats, which records every passing assertion too. */
TestSuite(event, .timeout = 30);

/* Memory figures mean little under a sanitizer (shadow memory, ASan's
 * quarantine of freed blocks): there the backpressure test checks only data. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

#define MS (INT64_C(1000000))

/* ---- what the handlers saw ----------------------------------------------------- */

#define MAX_LOOPS 8

struct hs {
    pthread_mutex_t mu;
    int opens, closes, open_now, max_open;
    int errors, last_error, last_reason;
    pthread_t loop[MAX_LOOPS]; /* the threads that ran on_open, and how many each */
    int loop_conns[MAX_LOOPS];
    int nloops;
    tc_test_event opened, closed; /* posted by on_open / on_close (tag: reason) */
    atomic_llong consumed;        /* payload bytes on_message saw */
    atomic_int refuse;            /* verify_request refuses while set */
    atomic_int dropped;           /* log messages about dropped connections */
};

static void hs_init(struct hs *h)
{
    memset(h, 0, sizeof *h);
    pthread_mutex_init(&h->mu, NULL);
    tc_test_event_init(&h->opened);
    tc_test_event_init(&h->closed);
    atomic_init(&h->consumed, 0);
    atomic_init(&h->refuse, 0);
    atomic_init(&h->dropped, 0);
}

static void hs_destroy(struct hs *h)
{
    tc_test_event_destroy(&h->opened);
    tc_test_event_destroy(&h->closed);
    pthread_mutex_destroy(&h->mu);
}

static int hs_on_open(tc_conn *c, void *ctx)
{
    struct hs *h = ctx;
    (void)c;
    pthread_mutex_lock(&h->mu);
    h->opens++;
    if (++h->open_now > h->max_open)
        h->max_open = h->open_now;
    int i = 0;
    while (i < h->nloops && !pthread_equal(h->loop[i], pthread_self()))
        i++;
    if (i == h->nloops && i < MAX_LOOPS)
        h->loop[h->nloops++] = pthread_self();
    if (i < MAX_LOOPS)
        h->loop_conns[i]++;
    pthread_mutex_unlock(&h->mu);
    tc_test_event_post(&h->opened, NULL);
    return 0;
}

static void hs_on_close(tc_conn *c, int reason, void *ctx)
{
    struct hs *h = ctx;
    (void)c;
    pthread_mutex_lock(&h->mu);
    h->closes++;
    h->open_now--;
    h->last_reason = reason;
    pthread_mutex_unlock(&h->mu);
    tc_test_event_post(&h->closed, tc_err_name(reason));
}

/* Echo every message; "fail" is refused with -EPROTO instead. */
static int echo_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    struct hs *h = ctx;
    atomic_fetch_add(&h->consumed, (long long)len);
    if (len == 4 && memcmp(msg, "fail", 4) == 0)
        return -EPROTO;
    ssize_t sent = tc_conn_send(c, msg, len);
    return sent < 0 ? (int)sent : 0;
}

static void hs_error(tc_server *srv, tc_conn *conn, int err, void *ctx)
{
    struct hs *h = ctx;
    (void)srv, (void)conn;
    pthread_mutex_lock(&h->mu);
    h->errors++;
    h->last_error = err;
    pthread_mutex_unlock(&h->mu);
}

static int hs_verify(tc_server *srv, const tc_addr *peer, void *ctx)
{
    struct hs *h = ctx;
    (void)srv, (void)peer;
    return atomic_load(&h->refuse) ? -EACCES : 0;
}

static void hs_log(tc_server *srv, tc_log_level level, const char *msg, void *ctx)
{
    struct hs *h = ctx;
    (void)srv;
    if (level == TC_LOG_WARN && strstr(msg, "dropping"))
        atomic_fetch_add(&h->dropped, 1);
}

static int hs_get(struct hs *h, const int *field)
{
    pthread_mutex_lock(&h->mu);
    int v = *field;
    pthread_mutex_unlock(&h->mu);
    return v;
}

static tc_handler echo_handler(struct hs *h)
{
    tc_handler hd = TC_HANDLER_INIT;
    hd.on_open = hs_on_open;
    hd.on_message = echo_message;
    hd.on_close = hs_on_close;
    hd.ctx = h;
    return hd;
}

static tc_codec line_codec(void)
{
    tc_codec c;
    tc_codec_delimited(&c, "\n", 1);
    return c;
}

static tc_codec len32_codec(void)
{
    tc_codec c;
    tc_codec_length_prefixed(&c, 4, TC_BIG_ENDIAN);
    return c;
}

/* An event-mode config: `workers` loops, the line codec, hooks into h. */
static tc_server_config ev_config(struct hs *h, int workers)
{
    tc_server_config cfg = tc_test_config();
    cfg.mode = TC_MODE_EVENT;
    cfg.workers = workers;
    cfg.codec = line_codec();
    cfg.hooks.handle_error = hs_error;
    cfg.hooks.verify_request = hs_verify;
    cfg.hooks.log = hs_log;
    cfg.hooks.ctx = h;
    return cfg;
}

static tc_conn *dial(const tc_test_server *ts, const tc_codec *codec)
{
    tc_dial_config o = TC_DIAL_CONFIG_INIT;
    o.timeout_ms = TC_TEST_WAIT_MS;
    if (codec)
        o.codec = *codec;
    tc_conn *c = NULL;
    int rc = tc_dial(&c, ts->addr_str, &o);
    cr_assert_eq(rc, 0, "dial %s: %s", ts->addr_str, tc_err_name(rc));
    return c;
}

static void expect_frame(tc_conn *c, const char *want)
{
    const void *m;
    size_t n;
    int rc = tc_conn_read_frame(c, &m, &n);
    cr_assert_eq(rc, 0, "waiting for \"%s\": %s", want, tc_err_name(rc));
    cr_assert(n == strlen(want) && memcmp(m, want, n) == 0, "got \"%.*s\", want \"%s\"", (int)n,
              (const char *)m, want);
}

static void expect_closed(tc_conn *c)
{
    const void *m;
    size_t n;
    int rc = tc_conn_read_frame(c, &m, &n);
    cr_assert(rc == TC_EOF || rc == -ECONNRESET, "expected end of stream, got %s (%.*s)",
              tc_err_name(rc), rc == 0 ? (int)n : 0, rc == 0 ? (const char *)m : "");
}

/* Send one line and expect it back. */
static void exchange(tc_conn *c, const char *line)
{
    cr_assert_eq(tc_conn_send(c, line, strlen(line)), (ssize_t)strlen(line));
    expect_frame(c, line);
}

static tc_stats stats_of(const tc_test_server *ts)
{
    tc_stats s;
    cr_assert_eq(tc_server_stats(ts->srv, &s), 0);
    return s;
}

/* Raise the soft descriptor limit to at least want (or skip the test). The
 * test runs in its own process, so nothing else sees the change. */
static void need_fds(rlim_t want)
{
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        rlim_t n = want;
        if (rl.rlim_max != RLIM_INFINITY && n > rl.rlim_max)
            n = rl.rlim_max;
        rl.rlim_cur = n;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
        if (rl.rlim_cur < want)
            cr_skip("RLIMIT_NOFILE is %llu, below %llu", (unsigned long long)rl.rlim_cur,
                    (unsigned long long)want);
    }
}

/* ---- a fleet of clients driven by one epoll loop --------------------------------- */

/* Each client connects (non-blocking), then does `exchanges` round trips of
 * one line "c<idx>.<k>\n" echoed back, one at a time. */
struct fc {
    int fd;
    int connected, done, failed;
    int exch;
    char out[48];
    size_t outlen, outoff;
    char in[64];
    size_t inlen;
};

struct fleet {
    int n, exchanges;
    int close_when_done; /* close each client after its last exchange */
    int finished, failed;
    char why[256];
    struct fc *c;
    int epfd;
};

static void fleet_fail(struct fleet *f, int i, const char *what, int err)
{
    struct fc *c = &f->c[i];
    if (!f->why[0])
        snprintf(f->why, sizeof f->why, "client %d (exchange %d): %s: %s", i, c->exch, what,
                 err ? strerror(err) : "-");
    c->failed = 1;
    f->failed++;
    (void)epoll_ctl(f->epfd, EPOLL_CTL_DEL, c->fd, NULL);
}

static void fc_prepare(struct fc *c, int idx)
{
    c->outlen = (size_t)snprintf(c->out, sizeof c->out, "c%d.%d\n", idx, c->exch);
    c->outoff = 0;
    c->inlen = 0;
}

/* Send what is left of out: 0 all sent, 1 the socket is full, or -errno. */
static int fc_send(struct fc *c)
{
    while (c->outoff < c->outlen) {
        ssize_t w = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return errno == EAGAIN ? 1 : -errno;
        c->outoff += (size_t)w;
    }
    return 0;
}

static void fc_interest(struct fleet *f, int i, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)i};
    if (epoll_ctl(f->epfd, EPOLL_CTL_MOD, f->c[i].fd, &ev) != 0)
        cr_assert_fail("epoll_ctl: %s", strerror(errno));
}

static void fc_start_exchange(struct fleet *f, int i)
{
    struct fc *c = &f->c[i];
    fc_prepare(c, i);
    int rc = fc_send(c);
    if (rc < 0)
        fleet_fail(f, i, "send", -rc);
    else
        fc_interest(f, i, rc ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

static void fc_readable(struct fleet *f, int i)
{
    struct fc *c = &f->c[i];
    ssize_t r = recv(c->fd, c->in + c->inlen, sizeof c->in - c->inlen, 0);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r < 0) {
        fleet_fail(f, i, "recv", errno);
        return;
    }
    if (r == 0) {
        fleet_fail(f, i, "end of stream before the reply", 0);
        return;
    }
    c->inlen += (size_t)r;
    if (c->inlen < c->outlen)
        return;
    if (c->inlen > c->outlen || memcmp(c->in, c->out, c->outlen) != 0) {
        fleet_fail(f, i, "wrong reply", 0);
        return;
    }
    if (++c->exch < f->exchanges) {
        fc_start_exchange(f, i);
        return;
    }
    c->done = 1;
    f->finished++;
    (void)epoll_ctl(f->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    if (f->close_when_done) {
        close(c->fd);
        c->fd = -1;
    }
}

/* Connect n clients at once and run them until all are done or failed, or
 * ms pass. Returns with the clients still open unless close_when_done. */
static void fleet_run(struct fleet *f, const tc_addr *addr, int n, int exchanges,
                      int close_when_done, int ms)
{
    memset(f, 0, sizeof *f);
    f->n = n;
    f->exchanges = exchanges;
    f->close_when_done = close_when_done;
    f->c = calloc((size_t)n, sizeof *f->c);
    cr_assert_not_null(f->c);
    f->epfd = epoll_create1(EPOLL_CLOEXEC);
    cr_assert_geq(f->epfd, 0);
    for (int i = 0; i < n; i++) {
        struct fc *c = &f->c[i];
        c->fd = socket(tc_addr_family(addr), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
            cr_assert_fail("socket %d: %s", i, strerror(errno));
        if (connect(c->fd, &addr->u.sa, addr->len) != 0 && errno != EINPROGRESS)
            cr_assert_fail("connect %d: %s", i, strerror(errno));
        struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
        if (epoll_ctl(f->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
            cr_assert_fail("epoll_ctl %d: %s", i, strerror(errno));
    }
    int64_t end = tc_test_now_ms() + ms;
    struct epoll_event evs[256];
    while (f->finished + f->failed < n) {
        int64_t left = end - tc_test_now_ms();
        if (left <= 0)
            break;
        int k = epoll_wait(f->epfd, evs, 256, (int)left);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            cr_assert_fail("epoll_wait: %s", strerror(errno));
        for (int j = 0; j < k; j++) {
            int i = (int)evs[j].data.u32;
            struct fc *c = &f->c[i];
            if (c->failed || c->done)
                continue;
            if (!c->connected) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) {
                    fleet_fail(f, i, "connect", err);
                    continue;
                }
                c->connected = 1;
                fc_start_exchange(f, i);
                continue;
            }
            if (evs[j].events & EPOLLOUT) {
                int rc = fc_send(c);
                if (rc < 0) {
                    fleet_fail(f, i, "send", -rc);
                    continue;
                }
                if (rc == 0)
                    fc_interest(f, i, EPOLLIN);
            }
            if (evs[j].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                fc_readable(f, i);
        }
    }
}

static void fleet_close(struct fleet *f)
{
    for (int i = 0; i < f->n; i++)
        if (f->c[i].fd >= 0)
            close(f->c[i].fd);
    close(f->epfd);
    free(f->c);
    f->c = NULL;
}

/* ---- a thousand concurrent connections ------------------------------------------ */

static void thousand(int workers)
{
    enum { N = 1000, EXCHANGES = 5 };
    need_fds(4096);
    struct hs h;
    hs_init(&h);
    tc_server_config cfg = ev_config(&h, workers);
    tc_handler hd = echo_handler(&h);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &hd);

    struct fleet f;
    fleet_run(&f, &ts.addr, N, EXCHANGES, 0, tc_test_ms(30000));
    cr_assert_eq(f.failed, 0, "%s", f.why);
    cr_assert_eq(f.finished, N, "%d of %d clients finished in time", f.finished, N);

    /* Every client is still connected: all of them are open at once. */
    tc_stats s = stats_of(&ts);
    cr_assert_eq(s.accepted, N);
    cr_assert_eq(s.active, N);
    cr_assert_eq(s.peak_active, N);
    cr_assert_eq(hs_get(&h, &h.opens), N);
    cr_assert_eq(hs_get(&h, &h.max_open), N);
    pthread_mutex_lock(&h.mu);
    int nloops = h.nloops;
    int per0 = h.loop_conns[0], per1 = h.loop_conns[1];
    pthread_mutex_unlock(&h.mu);
    cr_assert_eq(nloops, workers, "connections ran on %d threads", nloops);
    if (workers == 2)
        cr_assert(per0 == N / 2 && per1 == N / 2, "dealt round-robin: %d and %d", per0, per1);

    fleet_close(&f);
    cr_assert_eq(tc_test_event_wait(&h.closed, N, TC_TEST_WAIT_MS), 0, "closed: %d of %d",
                 tc_test_event_count(&h.closed), N);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    cr_assert_eq(hs_get(&h, &h.errors), 0);
    cr_assert_eq(hs_get(&h, &h.last_reason), 0, "clean ends");
    long long want = 0;
    char line[48];
    for (int i = 0; i < N; i++)
        for (int k = 0; k < EXCHANGES; k++)
            want += snprintf(line, sizeof line, "c%d.%d", i, k);
    cr_assert_eq(atomic_load(&h.consumed), want, "every request seen once");
    hs_destroy(&h);
}

Test(event, thousand_connections_one_loop, .timeout = 60) { thousand(1); }
Test(event, thousand_connections_two_loops, .timeout = 60) { thousand(2); }

/* ---- ten thousand idle connections (issue #17) ------------------------------------ */

/* The clients live in a child process: its own descriptor table, so the
 * 10,000 clients there and the 10,000 accepted sockets here each fit a
 * hard limit of 20,000. The child connects at most MANY_WAVE at a time,
 * makes each client echo one line, reports how many did on rep, holds every
 * connection until cmd says to close, closes them all and exits. */
enum { MANY_N = 10000, MANY_WAVE = 256 };

struct mc {
    int fd;
    unsigned char state; /* 0 connecting, 1 waiting for the echo, 2 done */
    unsigned char got, len;
    char line[14];
};

static int many_client_run(const tc_addr *addr, struct mc *m, int n, int ms)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        return -1;
    int started = 0, done = 0, busy = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct epoll_event evs[256];
    while (done < n) {
        while (busy < MANY_WAVE && started < n) {
            struct mc *c = &m[started];
            c->fd = socket(tc_addr_family(addr), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (c->fd < 0 || (connect(c->fd, &addr->u.sa, addr->len) != 0 && errno != EINPROGRESS))
                return -1;
            struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)started};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
                return -1;
            c->len = (unsigned char)snprintf(c->line, sizeof c->line, "m%d\n", started);
            started++;
            busy++;
        }
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long left = ms - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        if (left <= 0)
            break;
        int k = epoll_wait(ep, evs, 256, (int)left);
        for (int j = 0; j < k; j++) {
            struct mc *c = &m[evs[j].data.u32];
            if (c->state == 0) {
                int err = 0;
                socklen_t len = sizeof err;
                (void)getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[j].data.u32};
                if (err || send(c->fd, c->line, c->len, MSG_NOSIGNAL) != c->len ||
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) != 0)
                    return -1;
                c->state = 1;
                continue;
            }
            char in[16];
            ssize_t r = recv(c->fd, in, sizeof in, 0);
            if (r < 0 && errno == EAGAIN)
                continue;
            if (r <= 0 || c->got + r > c->len || memcmp(in, c->line + c->got, (size_t)r) != 0)
                return -1;
            if ((c->got = (unsigned char)(c->got + r)) == c->len) {
                c->state = 2;
                (void)epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                done++;
                busy--;
            }
        }
    }
    close(ep);
    return done;
}

static void many_child(const tc_addr *addr, int cmd, int rep)
{
    struct mc *m = calloc(MANY_N, sizeof *m);
    int done = m ? many_client_run(addr, m, MANY_N, tc_test_ms(20000)) : -1;
    if (write(rep, &done, sizeof done) != (ssize_t)sizeof done)
        _exit(1);
    char go;
    (void)read(cmd, &go, 1); /* the parent counted the server's connections */
    for (int i = 0; m && i < MANY_N; i++)
        if (m[i].fd > 0)
            close(m[i].fd);
    _exit(0);
}

Test(event, ten_thousand_idle_connections, .timeout = 60)
{
#if defined(__SANITIZE_THREAD__)
    cr_skip("10,000 connections: not under ThreadSanitizer");
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
    cr_skip("10,000 connections: not under ThreadSanitizer");
#endif
#endif
    need_fds(MANY_N + 512); /* this process holds the server's side */
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    struct hs h;
    hs_init(&h);
    tc_server_config cfg = ev_config(&h, 1);
    cfg.max_conns = MANY_N + 16;
    tc_handler hd = echo_handler(&h);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &hd);

    int cmd[2], rep[2];
    cr_assert_eq(pipe2(cmd, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(rep, O_CLOEXEC), 0);
    pid_t pid = fork();
    if (pid == 0) { /* no assertion here: the runner takes reports from its own child only */
        close(cmd[1]);
        close(rep[0]);
        many_child(&ts.addr, cmd[0], rep[1]);
    }
    cr_assert_geq(pid, 0);
    close(cmd[0]);
    close(rep[1]);
    struct pollfd pf = {.fd = rep[0], .events = POLLIN};
    int done = -1;
    cr_assert_eq(poll(&pf, 1, tc_test_ms(30000)), 1, "the clients never reported");
    cr_assert_eq(read(rep[0], &done, sizeof done), (ssize_t)sizeof done);
    cr_assert_eq(done, MANY_N, "%d of %d clients had their echo", done, MANY_N);

    /* Every one is open at once, each one echo served. */
    tc_stats s = stats_of(&ts);
    cr_assert_eq(s.accepted, MANY_N);
    cr_assert_eq(s.active, MANY_N);
    cr_assert_eq(hs_get(&h, &h.max_open), MANY_N);

    cr_assert_eq(write(cmd[1], "x", 1), 1);
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the clients' process failed");
    close(cmd[1]);
    close(rep[0]);
    cr_assert_eq(tc_test_event_wait(&h.closed, MANY_N, TC_TEST_WAIT_MS), 0, "closed: %d of %d",
                 tc_test_event_count(&h.closed), MANY_N);
    TC_TEST_WAIT_UNTIL((tc_server_stats(ts.srv, &s), s.active == 0), TC_TEST_WAIT_MS);
    cr_assert_eq(s.active, 0, "%u connections still live", s.active);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    cr_assert_eq(hs_get(&h, &h.errors), 0);
    hs_destroy(&h);
    tc_test_expect_counts(before, NULL, 0, "after 10,000 connections");
}

/* ---- backpressure: a client that never reads cannot make the server buffer ------- */

/* Frame j of the stream (len32): its payload length and bytes, known to both
 * the writer and the checker. */
static size_t bp_len(unsigned j)
{
    return 1 + (j * 7919u) % 65536u;
}

static unsigned char bp_byte(unsigned j, size_t k)
{
    return (unsigned char)(j * 131u + k * 7u + (k >> 8));
}

/* A field of /proc/self/status in kB (VmRSS, VmHWM), or -1. */
static long status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            v = strtol(line + klen + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* Reset VmHWM to the current RSS (Linux >= 4.0): 1 if it worked. */
static int reset_peak_rss(void)
{
    int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    int ok = write(fd, "5", 1) == 1;
    close(fd);
    return ok;
}

struct bp_writer {
    int fd;
    size_t target;         /* push frames until this many bytes */
    atomic_size_t pushed;  /* bytes the socket took so far */
    int stall_ms;          /* no progress for this long: the server pushes back */
    int err;
    tc_test_event stalled; /* posted once: stalled, or everything pushed */
    tc_test_event finished;
};

static void *bp_write_main(void *arg)
{
    struct bp_writer *w = arg;
    unsigned char *buf = malloc(4 + 65536);
    int stall_posted = 0;
    if (!buf) {
        w->err = ENOMEM;
        goto out;
    }
    for (unsigned j = 0; atomic_load(&w->pushed) < w->target; j++) {
        size_t len = bp_len(j), total = len + 4, off = 0;
        buf[0] = (unsigned char)(len >> 24), buf[1] = (unsigned char)(len >> 16);
        buf[2] = (unsigned char)(len >> 8), buf[3] = (unsigned char)len;
        for (size_t k = 0; k < len; k++)
            buf[4 + k] = bp_byte(j, k);
        while (off < total) {
            ssize_t n = send(w->fd, buf + off, total - off, MSG_NOSIGNAL);
            if (n > 0) {
                off += (size_t)n;
                atomic_fetch_add(&w->pushed, (size_t)n);
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno != EAGAIN) {
                w->err = errno;
                goto out;
            }
            struct pollfd p = {.fd = w->fd, .events = POLLOUT};
            int r = poll(&p, 1, stall_posted ? TC_TEST_WAIT_MS * 6 : w->stall_ms);
            if (r == 0 && !stall_posted) {
                /* The socket stays full: the server has stopped reading. */
                stall_posted = 1;
                tc_test_event_post(&w->stalled, "stalled");
            } else if (r == 0) {
                w->err = ETIMEDOUT;
                goto out;
            }
        }
    }
out:
    free(buf);
    if (!stall_posted)
        tc_test_event_post(&w->stalled, "everything pushed");
    tc_test_event_post(&w->finished, NULL);
    return NULL;
}

Test(event, backpressure_bounds_server_memory, .timeout = 120)
{
    const size_t target = (SANITIZED ? 16u : 64u) << 20;
    const long bound_kb = 16 << 10;
    struct hs h;
    hs_init(&h);
    tc_server_config cfg = ev_config(&h, 1);
    cfg.codec = len32_codec();
    tc_handler hd = echo_handler(&h);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &hd);

    size_t cap = 1 << 18, have = 0;
    unsigned char *in = malloc(cap);
    cr_assert_not_null(in);
    memset(in, 0, cap); /* touched now, not counted as growth later */
    int fd = tc_test_connect_ok(&ts.addr);
    cr_assert_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
    /* The server has taken the connection before memory is measured. */
    cr_assert_eq(tc_test_event_wait(&h.opened, 1, TC_TEST_WAIT_MS), 0);

    int hwm_ok = reset_peak_rss();
    long rss0 = status_kb("VmRSS");
    cr_assert_gt(rss0, 0, "VmRSS unreadable");

    struct bp_writer w = {.fd = fd, .target = target, .stall_ms = tc_test_ms(300)};
    atomic_init(&w.pushed, 0);
    tc_test_event_init(&w.stalled);
    tc_test_event_init(&w.finished);
    pthread_t tid;
    cr_assert_eq(pthread_create(&tid, NULL, bp_write_main, &w), 0);
    cr_assert_eq(tc_test_event_wait(&w.stalled, 1, TC_TEST_WAIT_MS * 6), 0, "writer stuck");
    long rss1 = status_kb("VmRSS");
    size_t pushed1 = atomic_load(&w.pushed);
    long long consumed1 = atomic_load(&h.consumed);

    /* Now read everything back and check every frame. */
    unsigned j = 0;
    size_t verified = 0;
    int64_t end = tc_test_now_ms() + TC_TEST_WAIT_MS * 6;
    for (;;) {
        if (tc_test_event_count(&w.finished) && verified == atomic_load(&w.pushed))
            break;
        if (tc_test_now_ms() >= end)
            cr_assert_fail("read %zu of %zu bytes in time", verified, atomic_load(&w.pushed));
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, 50);
        if (r <= 0)
            continue; /* check the writer's state again */
        ssize_t n = recv(fd, in + have, cap - have, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0)
            cr_assert_fail("recv after %zu bytes: %s", verified, n ? strerror(errno) : "EOF");
        have += (size_t)n;
        size_t pos = 0;
        while (have - pos >= 4) {
            size_t len = (size_t)in[pos] << 24 | (size_t)in[pos + 1] << 16 |
                         (size_t)in[pos + 2] << 8 | in[pos + 3];
            if (len != bp_len(j))
                cr_assert_fail("frame %u: length %zu, want %zu", j, len, bp_len(j));
            if (have - pos < 4 + len)
                break;
            for (size_t k = 0; k < len; k++)
                if (in[pos + 4 + k] != bp_byte(j, k))
                    cr_assert_fail("frame %u differs at byte %zu", j, k);
            pos += 4 + len;
            verified += 4 + len;
            j++;
        }
        memmove(in, in + pos, have - pos);
        have -= pos;
    }
    pthread_join(tid, NULL);
    cr_assert_eq(w.err, 0, "writer: %s", strerror(w.err));
    long hwm = status_kb("VmHWM");
    char stall_log[64];
    tc_test_event_log(&w.stalled, stall_log, sizeof stall_log);
    cr_log_info("backpressure: %s after %zu bytes (server consumed %lld); RSS %ld -> %ld kB, "
                "peak %ld kB (reset %s); %u frames, %zu bytes checked",
                stall_log, pushed1, consumed1, rss0, rss1, hwm, hwm_ok ? "ok" : "unavailable", j,
                verified);
    cr_assert_geq(verified, target);
    if (SANITIZED) {
        cr_log_info("sanitized build: memory growth not asserted");
    } else {
        cr_assert_lt(rss1 - rss0, bound_kb, "RSS grew by %ld kB with %zu bytes pushed",
                     rss1 - rss0, pushed1);
        if (hwm_ok && hwm > 0)
            cr_assert_lt(hwm - rss0, bound_kb, "peak RSS grew by %ld kB over %zu bytes",
                         hwm - rss0, verified);
    }
    close(fd);
    free(in);
    cr_assert_eq(tc_test_event_wait(&h.closed, 1, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    cr_assert_eq(hs_get(&h, &h.errors), 0);
    tc_test_event_destroy(&w.stalled);
    tc_test_event_destroy(&w.finished);
    hs_destroy(&h);
}

/* ---- large echoes: sent from the receive buffers themselves (io_uring) ---------------- */

/* On io_uring a handler that echoes what it was given sends it from the
 * ring's receive buffer (a loan, kept out of the ring until the send
 * completes). These stream through a raw echo on several connections at
 * once and check every byte: in order across loans, the loop's own queue
 * and the buffers that run dry; peers that stop reading hold loans, which
 * must come back when they leave or the server stops. On epoll the same
 * streams pass through the usual path. */

struct pump {
    int fd;
    unsigned seed;
    size_t total;    /* bytes to send */
    size_t sent, got;
    int reading;     /* 0: a peer that does not read */
};

static unsigned char pump_byte(unsigned seed, size_t off)
{
    return (unsigned char)(off * 131u + (off >> 9) + seed * 17u) ^ (unsigned char)(off >> 17);
}

static void pump_init(struct pump *p, int fd, unsigned seed, size_t total, int reading)
{
    *p = (struct pump){.fd = fd, .seed = seed, .total = total, .reading = reading};
    cr_assert_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
}

/* Drive n pumps until each reading one got its bytes back and each other
 * one has sent all or made no progress for stall_ms: NULL, or what went
 * wrong (a byte that differs, an error, the deadline). */
static const char *pump_run(struct pump *p, int n, int stall_ms, char *why, size_t whylen)
{
    enum { CHUNK = 64 * 1024, MAXP = 64 };
    static unsigned char out[CHUNK], in[CHUNK];
    struct pollfd pf[MAXP];
    int64_t end = tc_test_now_ms() + TC_TEST_WAIT_MS * 6, last = tc_test_now_ms();
    cr_assert_leq(n, MAXP);
    for (;;) {
        int busy = 0, all_sent = 1;
        for (int i = 0; i < n; i++) {
            short ev = 0;
            if (p[i].sent < p[i].total)
                ev |= POLLOUT;
            if (p[i].reading && p[i].got < p[i].total)
                ev |= POLLIN;
            pf[i] = (struct pollfd){.fd = ev ? p[i].fd : -1, .events = ev};
            busy |= p[i].reading && p[i].got < p[i].total;
            all_sent &= p[i].sent == p[i].total;
        }
        int64_t now = tc_test_now_ms();
        if (!busy && (all_sent || now - last >= stall_ms))
            return NULL;
        if (now >= end) {
            snprintf(why, whylen, "deadline: pump 0 sent %zu got %zu of %zu", p[0].sent, p[0].got,
                     p[0].total);
            return why;
        }
        if (poll(pf, (nfds_t)n, 20) < 0 && errno != EINTR) {
            snprintf(why, whylen, "poll: %s", strerror(errno));
            return why;
        }
        for (int i = 0; i < n; i++) {
            struct pump *q = &p[i];
            if ((pf[i].revents & (POLLOUT | POLLERR | POLLHUP)) && q->sent < q->total) {
                size_t k = q->total - q->sent < CHUNK ? q->total - q->sent : CHUNK;
                for (size_t j = 0; j < k; j++)
                    out[j] = pump_byte(q->seed, q->sent + j);
                ssize_t w = send(q->fd, out, k, MSG_NOSIGNAL);
                if (w > 0) {
                    q->sent += (size_t)w;
                    last = tc_test_now_ms();
                } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                    snprintf(why, whylen, "send on pump %d: %s", i, strerror(errno));
                    return why;
                }
            }
            if ((pf[i].revents & (POLLIN | POLLERR | POLLHUP)) && q->reading) {
                ssize_t r = recv(q->fd, in, CHUNK, 0);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                    snprintf(why, whylen, "recv on pump %d after %zu bytes: %s", i, q->got,
                             r ? strerror(errno) : "EOF");
                    return why;
                }
                for (ssize_t j = 0; j < r; j++)
                    if (in[j] != pump_byte(q->seed, q->got + (size_t)j)) {
                        snprintf(why, whylen, "pump %d: byte %zu differs", i,
                                 q->got + (size_t)j);
                        return why;
                    }
                if (r > 0) {
                    q->got += (size_t)r;
                    last = tc_test_now_ms();
                }
            }
        }
    }
}

/* A raw echo server on one loop (the backend the run chooses). */
static void raw_echo_server(tc_test_server *ts, struct hs *h)
{
    tc_server_config cfg = ev_config(h, 1);
    tc_codec_raw(&cfg.codec);
    cfg.conn_timeout_ms = TC_TEST_WAIT_MS * 6;
    cfg.drain_timeout_ms = tc_test_ms(300);
    tc_handler hd = echo_handler(h);
    tc_test_server_start(ts, NULL, &cfg, &hd);
}

/* n connections, each streaming `each` bytes through the echo at once. */
static void stream_echoes(const tc_test_server *ts, int n, size_t each, unsigned seed)
{
    struct pump p[64];
    char why[160];
    for (int i = 0; i < n; i++)
        pump_init(&p[i], tc_test_connect_ok(&ts->addr), seed + (unsigned)i, each, 1);
    const char *err = pump_run(p, n, TC_TEST_WAIT_MS, why, sizeof why);
    cr_assert_null(err, "%d x %zu bytes: %s", n, each, err);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(p[i].got, each);
        close(p[i].fd);
    }
}

Test(event, large_echoes_come_back_byte_exact, .timeout = 120)
{
    struct hs h;
    hs_init(&h);
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_test_server ts;
    raw_echo_server(&ts, &h);
    stream_echoes(&ts, 8, (size_t)1 << 20, 1);  /* 8 x 1 MiB */
    stream_echoes(&ts, 4, (size_t)16 << 20, 9); /* 4 x 16 MiB */
    cr_assert_eq(tc_test_event_wait(&h.closed, 12, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(atomic_load(&h.consumed), 8LL * (1 << 20) + 4LL * (16 << 20));
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    cr_assert_eq(hs_get(&h, &h.errors), 0);
    hs_destroy(&h);
    tc_test_expect_counts(before, NULL, 0, "after the large echoes");
}

/* More input at once than the loop has receive buffers (io_uring: 128 of
 * 16 KiB, many of them lent to sends): receives run out of buffers and must
 * start again as buffers come back. */
Test(event, many_streams_at_once_outrun_the_receive_buffers, .timeout = 120)
{
    struct hs h;
    hs_init(&h);
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_test_server ts;
    raw_echo_server(&ts, &h);
    stream_echoes(&ts, 48, (size_t)1 << 20, 100);
    cr_assert_eq(tc_test_event_wait(&h.closed, 48, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    cr_assert_eq(hs_get(&h, &h.errors), 0);
    hs_destroy(&h);
    tc_test_expect_counts(before, NULL, 0, "after 48 streams");
}

/* Peers that stop reading: their echoes back up (held as loans on io_uring)
 * until the high-water mark stops their input. Others are still served; one
 * that reads again gets every byte in order; one that resets and one left
 * stalled at shutdown (the drain deadline) end with sends in flight, whose
 * buffers must come back (ASan: nothing used after it is freed). */
Test(event, peers_that_stop_reading_hold_no_buffer_for_good, .timeout = 120)
{
    struct hs h;
    hs_init(&h);
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_test_server ts;
    raw_echo_server(&ts, &h);
    enum { STALLED = 3 };
    struct pump p[STALLED];
    char why[160];
    for (int i = 0; i < STALLED; i++)
        pump_init(&p[i], tc_test_connect_ok(&ts.addr), 50u + (unsigned)i, (size_t)32 << 20, 0);
    const char *err = pump_run(p, STALLED, tc_test_ms(300), why, sizeof why);
    cr_assert_null(err, "stalling: %s", err);
    for (int i = 0; i < STALLED; i++)
        cr_assert_lt(p[i].sent, p[i].total, "peer %d was never pushed back", i);
    /* The others are served meanwhile, large echoes too. */
    for (int round = 0; round < 3; round++)
        stream_echoes(&ts, 4, (size_t)1 << 20, 200u + (unsigned)round * 8u);
    /* Peer 0 reads again: everything it sent comes back, in order. */
    p[0].total = p[0].sent;
    p[0].reading = 1;
    err = pump_run(p, 1, TC_TEST_WAIT_MS, why, sizeof why);
    cr_assert_null(err, "peer 0 reading again: %s", err);
    cr_assert_eq(p[0].got, p[0].sent);
    close(p[0].fd);
    /* Peer 1 resets its connection with the server's sends in flight. */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    cr_assert_eq(setsockopt(p[1].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(p[1].fd);
    cr_assert_eq(tc_test_event_wait(&h.closed, 12 + 2, TC_TEST_WAIT_MS), 0);
    /* Still served after all that. */
    stream_echoes(&ts, 8, (size_t)1 << 20, 300);
    /* Peer 2 is still stalled when the server stops (the drain's deadline). */
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    close(p[2].fd);
    cr_assert_eq(hs_get(&h, &h.opens), hs_get(&h, &h.closes));
    hs_destroy(&h);
    tc_test_expect_counts(before, NULL, 0, "after the stalled peers");
}

/* ---- tc_conn_send from a foreign thread ---------------------------------------------- */

/* on_open hands each connection to a sender thread through a queue; the
 * sender uses the pointer only under the slot's lock and stops once on_close
 * (which takes the same lock) has cleared it: the contract that a foreign
 * thread is done with the channel before on_close returns. */
struct fslot {
    pthread_mutex_t mu;
    tc_conn *conn; /* NULL once on_close ran */
    int sent, send_err, timer_rc;
};

#define FSLOTS 8

struct fstate {
    struct hs hs; /* first: the hooks' ctx */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct fslot slot[FSLOTS];
    int nslots;
    int queue[FSLOTS];
    int qhead, qtail;
    int frames; /* per connection; 0 = until it closes (at most BLAST_MAX) */
};

#define BLAST_MAX 100000

static int f_on_open(tc_conn *c, void *ctx)
{
    struct fstate *fs = ctx;
    pthread_mutex_lock(&fs->mu);
    if (fs->nslots == FSLOTS) {
        pthread_mutex_unlock(&fs->mu);
        return -ENOSPC;
    }
    int i = fs->nslots++;
    struct fslot *s = &fs->slot[i];
    pthread_mutex_lock(&s->mu);
    s->conn = c;
    pthread_mutex_unlock(&s->mu);
    tc_conn_set_data(c, s);
    fs->queue[fs->qtail++] = i;
    pthread_cond_broadcast(&fs->cv);
    pthread_mutex_unlock(&fs->mu);
    return hs_on_open(c, &fs->hs);
}

static int f_on_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    struct fstate *fs = ctx;
    return echo_message(c, msg, len, &fs->hs);
}

static void f_on_close(tc_conn *c, int reason, void *ctx)
{
    struct fstate *fs = ctx;
    struct fslot *s = tc_conn_data(c);
    pthread_mutex_lock(&s->mu);
    s->conn = NULL; /* after this, the sender never touches c again */
    pthread_mutex_unlock(&s->mu);
    hs_on_close(c, reason, &fs->hs);
}

static void *sender_main(void *arg)
{
    struct fstate *fs = arg;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += TC_TEST_WAIT_MS / 1000 + 1;
    pthread_mutex_lock(&fs->mu);
    while (fs->qhead == fs->qtail)
        if (pthread_cond_timedwait(&fs->cv, &fs->mu, &dl) != 0) {
            pthread_mutex_unlock(&fs->mu);
            return NULL;
        }
    struct fslot *s = &fs->slot[fs->queue[fs->qhead++]];
    pthread_mutex_unlock(&fs->mu);

    pthread_mutex_lock(&s->mu);
    if (s->conn)
        s->timer_rc = tc_conn_set_timer(s->conn, 10, 0); /* not from this thread */
    pthread_mutex_unlock(&s->mu);
    for (int k = 0; fs->frames ? k < fs->frames : k < BLAST_MAX; k++) {
        char b[32];
        int n = snprintf(b, sizeof b, "f%d", k);
        pthread_mutex_lock(&s->mu);
        int live = s->conn != NULL;
        ssize_t rc = live ? tc_conn_send(s->conn, b, (size_t)n) : 0;
        pthread_mutex_unlock(&s->mu);
        if (!live)
            break;
        if (rc < 0) {
            s->send_err = (int)rc;
            break;
        }
        if (rc == n) /* the whole frame taken (the count the tests check) */
            s->sent++;
    }
    return NULL;
}

static void fstate_init(struct fstate *fs, int frames)
{
    memset(fs, 0, sizeof *fs);
    hs_init(&fs->hs);
    pthread_mutex_init(&fs->mu, NULL);
    pthread_cond_init(&fs->cv, NULL);
    for (int i = 0; i < FSLOTS; i++)
        pthread_mutex_init(&fs->slot[i].mu, NULL);
    fs->frames = frames;
}

static tc_handler f_handler(struct fstate *fs)
{
    tc_handler hd = TC_HANDLER_INIT;
    hd.on_open = f_on_open;
    hd.on_message = f_on_message;
    hd.on_close = f_on_close;
    hd.ctx = fs;
    return hd;
}

Test(event, send_from_a_foreign_thread)
{
    enum { NCONN = 4, FRAMES = 300, REPLIES = 100 };
    struct fstate fs;
    fstate_init(&fs, FRAMES);
    tc_server_config cfg = ev_config(&fs.hs, 2);
    tc_handler hd = f_handler(&fs);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &hd);
    pthread_t senders[NCONN];
    for (int i = 0; i < NCONN; i++)
        cr_assert_eq(pthread_create(&senders[i], NULL, sender_main, &fs), 0);

    tc_codec line = line_codec();
    tc_conn *c[NCONN];
    for (int i = 0; i < NCONN; i++)
        c[i] = dial(&ts, &line);
    /* Requests and their replies interleave with the foreign frames; each
     * stream keeps its own order. */
    for (int i = 0; i < NCONN; i++) {
        int nextf = 0;
        for (int j = 0; j <= REPLIES; j++) {
            char want[32];
            if (j < REPLIES) {
                snprintf(want, sizeof want, "r%d", j);
                cr_assert_eq(tc_conn_send(c[i], want, strlen(want)), (ssize_t)strlen(want));
            }
            for (;;) {
                if (j == REPLIES && nextf == FRAMES)
                    break;
                const void *m;
                size_t n;
                int rc = tc_conn_read_frame(c[i], &m, &n);
                cr_assert_eq(rc, 0, "conn %d: %s after %d frames and %d replies", i,
                             tc_err_name(rc), nextf, j);
                char got[32];
                snprintf(got, sizeof got, "%.*s", (int)n, (const char *)m);
                if (got[0] == 'f') {
                    char f[32];
                    snprintf(f, sizeof f, "f%d", nextf);
                    cr_assert_str_eq(got, f, "conn %d: foreign frames in order", i);
                    nextf++;
                    continue;
                }
                cr_assert_str_eq(got, want, "conn %d: replies in order", i);
                break;
            }
        }
    }
    for (int i = 0; i < NCONN; i++)
        tc_conn_close(c[i]);
    cr_assert_eq(tc_test_event_wait(&fs.hs.closed, NCONN, TC_TEST_WAIT_MS), 0);
    for (int i = 0; i < NCONN; i++)
        pthread_join(senders[i], NULL);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    for (int i = 0; i < NCONN; i++) {
        cr_assert_eq(fs.slot[i].sent, FRAMES);
        cr_assert_eq(fs.slot[i].send_err, 0);
        cr_assert_eq(fs.slot[i].timer_rc, -EPERM, "tc_conn_set_timer from a foreign thread");
    }
    cr_assert_eq(hs_get(&fs.hs, &fs.hs.errors), 0);
    hs_destroy(&fs.hs);
}

/* The peer leaves while a foreign thread is sending as fast as it can: sends
 * queued for the loop up to the moment on_close returns must not outlive
 * the connection (the loop must not touch it after it is gone). */
Test(event, foreign_sends_racing_the_close)
{
    enum { NCONN = 8, READ = 20 };
    struct fstate fs;
    fstate_init(&fs, 0);
    tc_server_config cfg = ev_config(&fs.hs, 2);
    tc_handler hd = f_handler(&fs);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &hd);
    pthread_t senders[NCONN];
    for (int i = 0; i < NCONN; i++)
        cr_assert_eq(pthread_create(&senders[i], NULL, sender_main, &fs), 0);
    tc_codec line = line_codec();
    for (int i = 0; i < NCONN; i++) {
        tc_conn *c = dial(&ts, &line);
        for (int k = 0; k < READ; k++) {
            const void *m;
            size_t n;
            int rc = tc_conn_read_frame(c, &m, &n);
            cr_assert_eq(rc, 0, "conn %d, frame %d: %s", i, k, tc_err_name(rc));
            char want[32];
            snprintf(want, sizeof want, "f%d", k);
            cr_assert(n == strlen(want) && memcmp(m, want, n) == 0);
        }
        tc_conn_close(c); /* unread data: most likely a reset */
    }
    cr_assert_eq(tc_test_event_wait(&fs.hs.closed, NCONN, TC_TEST_WAIT_MS * 2), 0);
    for (int i = 0; i < NCONN; i++)
        pthread_join(senders[i], NULL);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    for (int i = 0; i < NCONN; i++)
        cr_log_info("sender %d: %d frames queued, stopped by %s", i, fs.slot[i].sent,
                    fs.slot[i].send_err ? tc_err_name(fs.slot[i].send_err) : "on_close");
    hs_destroy(&fs.hs);
}

/* ---- foreign sends are bounded by a high-water mark ------------------------------------ */

/* Expected behaviour (issue 12, 3.4; on 3589a83 every foreign send is copied
 * into the loop's mailbox, without limit):
 * - tc_conn_send(), tc_conn_send_all() and tc_conn_write_frame() called from
 *   a thread that is not the connection's loop thread fail at once with
 *   -EAGAIN, queueing nothing of the message, once the bytes queued for that
 *   connection (accepted but not yet handed to the socket) pass a high-water
 *   mark of 1 MiB;
 * - a send to a connection with nothing queued is always accepted, whatever
 *   its size (here 2 MiB);
 * - once the peer reads and the queue drains, sends are accepted again, and
 *   the peer receives exactly the accepted messages, in order.
 * Success is any code >= 0 (0, or the byte count for tc_conn_send_all).
 * The client here never reads at first: the kernel's buffers fill, then the
 * library's queue. So when -EAGAIN comes the bytes accepted are at most
 * 1 MiB + what the kernel holds (the server's send queue, SIOCOUTQ, and the
 * client's receive queue, FIONREAD, both measured) + one message (+ one more
 * for the measurement), and in any case at most 16 MiB. (The kernel's part
 * is measured after the refusal; it only grows once nothing more is
 * accepted, so the bound errs on the lenient side.)
 *
 * on_open hands the channel to the sending thread; on_close clears it under
 * the lock the sender holds while it sends, so the sender is done with it
 * before on_close returns (conn.h: a foreign thread may use the channel
 * until on_close returns). */
#define HWM ((long long)1 << 20)
#define HWM_MSG ((size_t)64 * 1024)
#define HWM_TOTAL_MAX ((long long)64 << 20) /* phase 1 gives up after this much */
#define HWM_SANE ((long long)16 << 20)
#define HWM_BIG ((size_t)2 << 20)

enum { VIA_SEND, VIA_SEND_ALL, VIA_WRITE_FRAME, VIA_N };
static const char *const via_name[VIA_N] = {"tc_conn_send", "tc_conn_send_all",
                                            "tc_conn_write_frame"};

struct hwm {
    struct hs hs; /* first: the hooks' ctx; hs.opened hands the channel over */
    pthread_mutex_t mu;
    tc_conn *conn; /* NULL once on_close ran */
    int fd;        /* the server side's socket, for SIOCOUTQ */
    tc_test_event full;  /* the sender posts: phase 1 ended (results below) */
    tc_test_event go;    /* the test posts: (1) the client reads now, (2) all was read */
    tc_test_event again; /* the sender posts: (1) a send was accepted again, (2) the big one sent */
    /* Phase 1: until the first refusal. */
    long long accepted; /* bytes of the accepted messages, the offset of the next */
    int msgs;
    int err, err_via;   /* the first failure and the function that returned it */
    int64_t err_ns;     /* how long the refused call took */
    int other_rc[VIA_N - 1]; /* the other two functions, right after it */
    int outq;           /* the server socket's unsent bytes, right after it */
    int closed;         /* on_close cleared conn before the sender was done */
    /* Phase 2: retries while the client reads. */
    int refusals, again_rc;
    int drained; /* follow-up sends taken after a refusal (the loop had drained) */
    /* Phase 3: one big message into an empty queue. */
    int big_rc;
    tc_test_event done;
};

/* The stream's byte at offset o: every accepted message continues it. */
static unsigned char hwm_byte(long long o)
{
    return (unsigned char)(o * 7 + (o >> 8) * 131 + (o >> 16));
}

static int hwm_on_open(tc_conn *c, void *ctx)
{
    struct hwm *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->conn = c;
    w->fd = tc_conn_fd(c);
    pthread_mutex_unlock(&w->mu);
    return hs_on_open(c, &w->hs); /* posts hs.opened: the sender starts */
}

static void hwm_on_close(tc_conn *c, int reason, void *ctx)
{
    struct hwm *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->conn = NULL; /* after this the sender never touches c again */
    pthread_mutex_unlock(&w->mu);
    hs_on_close(c, reason, &w->hs);
}

/* One send of p[0..n) through function via, under the lock; 1 if the
 * channel is gone, else the function's code folded to 0 / negative. */
static int hwm_send(struct hwm *w, int via, const unsigned char *p, size_t n)
{
    int rc = 1;
    pthread_mutex_lock(&w->mu);
    if (w->conn) {
        if (via == VIA_SEND) {
            rc = tc_conn_send(w->conn, p, n);
        } else if (via == VIA_WRITE_FRAME) {
            rc = tc_conn_write_frame(w->conn, p, n);
        } else {
            ssize_t r = tc_conn_send_all(w->conn, p, n);
            rc = r < 0 ? (int)r : r == 0 || r == (ssize_t)n ? 0 : -EPROTO; /* partial: wrong */
        }
    }
    pthread_mutex_unlock(&w->mu);
    if (rc > 0 && rc != 1)
        rc = 0;
    return rc;
}

static void hwm_fill(unsigned char *p, size_t n, long long off)
{
    for (size_t i = 0; i < n; i++)
        p[i] = hwm_byte(off + (long long)i);
}

static void *hwm_sender(void *arg)
{
    struct hwm *w = arg;
    unsigned char *p = malloc(HWM_BIG);
    if (!p || tc_test_event_wait(&w->hs.opened, 1, TC_TEST_WAIT_MS) < 0)
        goto out;
    /* Phase 1: 64 KiB messages, the three functions in turn, until one is refused. */
    for (int k = 0; w->accepted < HWM_TOTAL_MAX; k++) {
        int via = k % VIA_N;
        hwm_fill(p, HWM_MSG, w->accepted);
        int64_t t0 = tc_test_now_ns();
        int rc = hwm_send(w, via, p, HWM_MSG);
        int64_t took = tc_test_now_ns() - t0;
        if (rc == 1) {
            w->closed = 1;
            break;
        }
        if (rc == 0) {
            w->accepted += (long long)HWM_MSG;
            w->msgs++;
            continue;
        }
        w->err = rc;
        w->err_via = via;
        w->err_ns = took;
        if (rc == -EAGAIN) {
            /* The same size through the other two: refused too, unless the
             * loop moved bytes into the kernel meanwhile (its socket buffers
             * still growing early in a connection): such a send is taken
             * like any other, and the refusal is sought again (bounded). */
            int took = 0;
            for (int i = 1; i < VIA_N && !took; i++) {
                w->other_rc[i - 1] = hwm_send(w, (via + i) % VIA_N, p, HWM_MSG);
                took = w->other_rc[i - 1] == 0;
            }
            if (took && ++w->drained < 8) {
                w->accepted += (long long)HWM_MSG;
                w->msgs++;
                continue;
            }
            pthread_mutex_lock(&w->mu);
            if (w->conn && ioctl(w->fd, SIOCOUTQ, &w->outq) < 0)
                w->outq = -errno;
            pthread_mutex_unlock(&w->mu);
        }
        break;
    }
    tc_test_event_post(&w->full, NULL);
    if (w->err != -EAGAIN)
        goto out;

    /* Phase 2: once the client reads, retry (a bounded poll) until a send is accepted. */
    if (tc_test_event_wait(&w->go, 1, TC_TEST_WAIT_MS) < 0)
        goto out;
    int64_t end = tc_test_now_ms() + TC_TEST_WAIT_MS;
    w->again_rc = -EAGAIN;
    hwm_fill(p, HWM_MSG, w->accepted);
    while (w->again_rc == -EAGAIN && tc_test_now_ms() < end) {
        w->again_rc = hwm_send(w, w->refusals % VIA_N, p, HWM_MSG);
        if (w->again_rc == -EAGAIN) {
            w->refusals++;
            tc_test_nap_ms(1);
        }
    }
    if (w->again_rc == 0) {
        w->accepted += (long long)HWM_MSG;
        w->msgs++;
    }
    tc_test_event_post(&w->again, NULL);
    if (w->again_rc != 0)
        goto out;

    /* Phase 3: everything was read, so nothing is queued: a message over
     * the mark is accepted. */
    if (tc_test_event_wait(&w->go, 2, TC_TEST_WAIT_MS) < 0)
        goto out;
    hwm_fill(p, HWM_BIG, w->accepted);
    w->big_rc = hwm_send(w, VIA_SEND, p, HWM_BIG);
    if (w->big_rc == 0)
        w->accepted += (long long)HWM_BIG;
    tc_test_event_post(&w->again, NULL);
out:
    free(p);
    tc_test_event_post(&w->done, NULL);
    return NULL;
}

/* Read from fd, checking every byte against the stream, until *got reaches
 * want (or, with want < 0, one read is done); 0, or -1 if a wait of ms
 * found nothing. Asserts on wrong bytes and on errors. */
static int hwm_read(int fd, long long *got, long long want, int ms)
{
    static unsigned char buf[256 * 1024];
    if (want >= 0 && *got >= want)
        return 0;
    do {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int r = poll(&pf, 1, ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0)
            return -1;
        size_t room = sizeof buf;
        if (want >= 0 && want - *got < (long long)room)
            room = (size_t)(want - *got);
        ssize_t n = recv(fd, buf, room, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0)
            cr_assert_fail("client: %s after %lld bytes",
                           n == 0 ? "end of stream" : strerror(errno), *got);
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != hwm_byte(*got + i))
                cr_assert_fail("client: byte %lld differs: a refused send queued something, or "
                               "accepted ones were lost or reordered",
                               *got + (long long)i);
        *got += n;
    } while (want >= 0 && *got < want);
    return 0;
}

Test(event, foreign_sends_refused_past_the_high_water_mark, .timeout = 60)
{
    struct hwm w;
    memset(&w, 0, sizeof w);
    hs_init(&w.hs);
    pthread_mutex_init(&w.mu, NULL);
    tc_test_event_init(&w.full);
    tc_test_event_init(&w.go);
    tc_test_event_init(&w.again);
    tc_test_event_init(&w.done);
    tc_server_config cfg = ev_config(&w.hs, 1);
    tc_codec_raw(&cfg.codec); /* the stream is exactly the payloads */
    cfg.conn_timeout_ms = tc_test_ms(60000);
    tc_handler hd = echo_handler(&w.hs);
    hd.on_open = hwm_on_open;
    hd.on_close = hwm_on_close;
    hd.ctx = &w;
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &hd);
    pthread_t sender;
    cr_assert_eq(pthread_create(&sender, NULL, hwm_sender, &w), 0);
    int fd = tc_test_connect_ok(&ts.addr); /* and it does not read, for now */

    /* Phase 1: the sender stops at its first refusal. */
    cr_assert_eq(tc_test_event_wait(&w.full, 1, tc_test_ms(30000)), 0, "the sender is stuck");
    if (w.err != -EAGAIN) { /* the sender ends at once: join it before failing */
        cr_assert_eq(tc_test_event_wait(&w.done, 1, TC_TEST_WAIT_MS), 0);
        pthread_join(sender, NULL);
    }
    int inq = -1;
    cr_assert_eq(ioctl(fd, FIONREAD, &inq), 0);
    cr_log_info("foreign sends: %d accepted (%lld bytes; %d after a refusal), then %s from %s "
                "in %lld us; kernel held %d (server's send queue) + %d (client's receive queue) "
                "bytes",
                w.msgs, w.accepted, w.drained, tc_err_name(w.err), via_name[w.err_via],
                (long long)(w.err_ns / 1000), w.outq, inq);
    cr_assert_eq(w.closed, 0, "the connection closed under the sender");
    cr_assert_eq(w.err, -EAGAIN,
                 "no -EAGAIN from a foreign thread: %d sends of 64 KiB (%lld bytes) accepted "
                 "for a client that never reads%s%s",
                 w.msgs, w.accepted, w.err ? ", then " : "", w.err ? tc_err_name(w.err) : "");
    cr_assert_lt(w.err_ns, (int64_t)tc_test_ms(500) * MS,
                 "the refusal took %lld ms: it must not block", (long long)(w.err_ns / MS));
    for (int i = 0; i < VIA_N - 1; i++)
        cr_assert_eq(w.other_rc[i], -EAGAIN, "%s right after the refusal: %s",
                     via_name[(w.err_via + 1 + i) % VIA_N], tc_err_name(w.other_rc[i]));
    cr_assert_geq(w.outq, 0, "SIOCOUTQ: %s", strerror(-w.outq));
    cr_assert_leq(w.accepted, HWM_SANE, "%lld bytes accepted before the refusal", w.accepted);
    cr_assert_leq(w.accepted, HWM + w.outq + inq + 2 * (long long)HWM_MSG,
                  "%lld bytes accepted: the library queued %lld, past 1 MiB + one message",
                  w.accepted, w.accepted - w.outq - inq);
    cr_assert_geq(w.accepted, HWM - (long long)HWM_MSG,
                  "refused after only %lld bytes accepted, less than the 1 MiB mark itself",
                  w.accepted);

    /* Phase 2: the client reads; a send is accepted again (bounded). */
    long long got = 0;
    tc_test_event_post(&w.go, NULL);
    int64_t end = tc_test_now_ms() + tc_test_ms(10000);
    while (tc_test_event_count(&w.again) < 1 && tc_test_now_ms() < end)
        (void)hwm_read(fd, &got, -1, 10);
    cr_assert_eq(tc_test_event_wait(&w.again, 1, 0), 0, "the sender is stuck");
    cr_assert_eq(w.again_rc, 0, "no send accepted again while the client read %lld bytes: %s",
                 got, tc_err_name(w.again_rc));
    cr_log_info("accepted again after %d refusals", w.refusals);
    cr_assert_eq(hwm_read(fd, &got, w.accepted, tc_test_ms(5000)), 0,
                 "the client got %lld of the %lld bytes accepted", got, w.accepted);

    /* Phase 3: nothing queued: a message over the mark is accepted. */
    tc_test_event_post(&w.go, NULL);
    cr_assert_eq(tc_test_event_wait(&w.again, 2, TC_TEST_WAIT_MS), 0, "the sender is stuck");
    cr_assert_eq(w.big_rc, 0, "a 2 MiB send to a connection with nothing queued: %s",
                 tc_err_name(w.big_rc));
    cr_assert_eq(hwm_read(fd, &got, w.accepted, tc_test_ms(5000)), 0,
                 "the client got %lld of the %lld bytes accepted", got, w.accepted);

    cr_assert_eq(tc_test_event_wait(&w.done, 1, TC_TEST_WAIT_MS), 0);
    pthread_join(sender, NULL);
    close(fd);
    cr_assert_eq(tc_test_event_wait(&w.hs.closed, 1, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    cr_assert_eq(hs_get(&w.hs, &w.hs.errors), 0);
    tc_test_event_destroy(&w.full);
    tc_test_event_destroy(&w.go);
    tc_test_event_destroy(&w.again);
    tc_test_event_destroy(&w.done);
    hs_destroy(&w.hs);
}

/* ---- tc_conn_last_sent in event mode ---------------------------------------------------- */

/* In event mode a send "takes" what the loop accepts into its queue: all of
 * a loop-thread send, however little the socket took; all of a foreign
 * send below the high-water mark; nothing of one refused above it. The
 * loop's own sends of queued bytes (mail, flushes) never change the count. */
#define LS_BIG ((size_t)4 << 20)

struct lsent {
    struct hs hs; /* first: the hooks' ctx */
    pthread_mutex_t mu;
    tc_conn *conn;     /* NULL once on_close ran */
    tc_test_event big; /* on_message sent LS_BIG bytes */
    ssize_t big_rc, big_last;
};

static int ls_on_open(tc_conn *c, void *ctx)
{
    struct lsent *ls = ctx;
    int small = 65536; /* the kernel holds little: most of LS_BIG is queued */
    (void)setsockopt(tc_conn_fd(c), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    pthread_mutex_lock(&ls->mu);
    ls->conn = c;
    pthread_mutex_unlock(&ls->mu);
    return hs_on_open(c, &ls->hs);
}

static void ls_on_close(tc_conn *c, int reason, void *ctx)
{
    struct lsent *ls = ctx;
    pthread_mutex_lock(&ls->mu);
    ls->conn = NULL;
    pthread_mutex_unlock(&ls->mu);
    hs_on_close(c, reason, &ls->hs);
}

static int ls_on_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    struct lsent *ls = ctx;
    (void)msg, (void)len;
    unsigned char *p = calloc(1, LS_BIG);
    ls->big_rc = p ? tc_conn_send(c, p, LS_BIG) : -ENOMEM;
    ls->big_last = tc_conn_last_sent(c);
    free(p);
    tc_test_event_post(&ls->big, NULL);
    return 0;
}

/* A send from this (foreign) thread and the count after it; -EPIPE if the
 * channel is gone. */
static ssize_t ls_send(struct lsent *ls, const char *s, ssize_t *last)
{
    ssize_t rc = -EPIPE;
    pthread_mutex_lock(&ls->mu);
    if (ls->conn) {
        rc = tc_conn_send(ls->conn, s, strlen(s));
        *last = tc_conn_last_sent(ls->conn);
    }
    pthread_mutex_unlock(&ls->mu);
    return rc;
}

Test(event, last_sent_counts_what_the_loop_accepted)
{
    struct lsent ls;
    memset(&ls, 0, sizeof ls);
    hs_init(&ls.hs);
    pthread_mutex_init(&ls.mu, NULL);
    tc_test_event_init(&ls.big);
    tc_server_config cfg = ev_config(&ls.hs, 1);
    tc_codec_raw(&cfg.codec); /* the stream is exactly the payloads */
    tc_handler hd = TC_HANDLER_INIT;
    hd.on_open = ls_on_open;
    hd.on_message = ls_on_message;
    hd.on_close = ls_on_close;
    hd.ctx = &ls;
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &hd);
    int fd = tc_test_connect_ok(&ts.addr);
    cr_assert_eq(tc_test_event_wait(&ls.hs.opened, 1, TC_TEST_WAIT_MS), 0);

    ssize_t last = -1;
    cr_assert_eq(ls_send(&ls, "abc", &last), 3, "a foreign send is accepted");
    cr_assert_eq(last, 3, "all of it went to the loop's queue");
    char b[4];
    cr_assert_eq(tc_test_recv_full(fd, b, 3), 3); /* the loop has sent the mail */
    pthread_mutex_lock(&ls.mu);
    cr_assert_eq(tc_conn_last_sent(ls.conn), 3, "the loop's own send left the count alone");
    pthread_mutex_unlock(&ls.mu);

    cr_assert_eq(tc_test_send_all(fd, "go", 2), 0); /* the client reads no more */
    cr_assert_eq(tc_test_event_wait(&ls.big, 1, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(ls.big_rc, (ssize_t)LS_BIG, "%s", tc_err_name((int)ls.big_rc));
    cr_assert_eq(ls.big_last, (ssize_t)LS_BIG, "sent or queued: all of it");
    last = -1;
    ssize_t rc = ls_send(&ls, "x", &last);
    cr_assert_eq(rc, -EAGAIN, "a foreign send past the high-water mark: %s", tc_err_name((int)rc));
    cr_assert_eq(last, 0, "a refused send took nothing");

    close(fd);
    cr_assert_eq(tc_test_event_wait(&ls.hs.closed, 1, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_event_destroy(&ls.big);
    pthread_mutex_destroy(&ls.mu);
    hs_destroy(&ls.hs);
}

/* ---- timers ------------------------------------------------------------------------- */

#define TSLOTS 8
#define TFIRES 16

/* One connection's timer, written by its loop thread; the test reads it
 * after an event the loop posted later. */
struct tslot {
    int64_t before, after; /* tc_monotonic_ns() around the last tc_conn_set_timer */
    int delay, interval;
    int fires;
    int64_t fire_ns[TFIRES];
    int seq[TFIRES];  /* global firing order */
    int limit;        /* periodic: at this many fires cancel and send "done" */
    int watch;        /* >= 0: when firing, note how often that slot fired */
    int observed;
    size_t bye;       /* > 0: on_timer sends this many bytes, arms slot `then` and fails */
    int then;
};

struct tstate {
    struct hs hs; /* first: the hooks' ctx */
    struct tslot slot[TSLOTS];
    tc_conn *conn[TSLOTS]; /* loop thread only */
    atomic_int seq;
    tc_test_event fired; /* tag t<slot> */
};

static void tstate_init(struct tstate *t)
{
    memset(t, 0, sizeof *t);
    hs_init(&t->hs);
    atomic_init(&t->seq, 0);
    tc_test_event_init(&t->fired);
    for (int i = 0; i < TSLOTS; i++)
        t->slot[i].watch = t->slot[i].then = -1;
}

static int reply(tc_conn *c, const char *fmt, int a, int b, int d)
{
    char out[64];
    int n = snprintf(out, sizeof out, fmt, a, b, d);
    ssize_t sent = tc_conn_send(c, out, (size_t)n);
    return sent < 0 ? (int)sent : 0;
}

/* Commands: "id N" (this connection is slot N), "arm D I", "cancel",
 * "armcancel D", "rearm" (arm far away, then move to 20 ms), "bad". */
static int t_on_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    struct tstate *t = ctx;
    char cmd[64];
    int a = 0, b = 0;
    snprintf(cmd, sizeof cmd, "%.*s", (int)len, (const char *)msg);
    struct tslot *s = tc_conn_data(c);
    if (sscanf(cmd, "id %d", &a) == 1 && a >= 0 && a < TSLOTS) {
        t->conn[a] = c;
        tc_conn_set_data(c, &t->slot[a]);
        return reply(c, "ok", 0, 0, 0);
    }
    if (!s)
        return -EPROTO;
    if (sscanf(cmd, "arm %d %d", &a, &b) == 2) {
        s->delay = a, s->interval = b;
        s->before = tc_monotonic_ns();
        int rc = tc_conn_set_timer(c, a, b);
        s->after = tc_monotonic_ns();
        return reply(c, "armed %d", rc, 0, 0);
    }
    if (strcmp(cmd, "cancel") == 0)
        return reply(c, "cancelled %d", tc_conn_set_timer(c, 0, 0), 0, 0);
    if (sscanf(cmd, "armcancel %d", &a) == 1) {
        int r1 = tc_conn_set_timer(c, a, 0);
        return reply(c, "%d %d", r1, tc_conn_set_timer(c, 0, 0), 0);
    }
    if (strcmp(cmd, "rearm") == 0) {
        s->delay = 20, s->interval = 0;
        int r1 = tc_conn_set_timer(c, 100000, 0);
        s->before = tc_monotonic_ns();
        int r2 = tc_conn_set_timer(c, 20, 0);
        s->after = tc_monotonic_ns();
        return reply(c, "armed %d", r1 ? r1 : r2, 0, 0);
    }
    if (strcmp(cmd, "bad") == 0)
        return reply(c, "%d %d %d", tc_conn_set_timer(c, -1, 0), tc_conn_set_timer(c, 1, -1),
                     tc_conn_set_timer(NULL, 1, 0));
    return -EPROTO;
}

static int t_on_timer(tc_conn *c, void *ctx)
{
    struct tstate *t = ctx;
    struct tslot *s = tc_conn_data(c);
    int64_t now = tc_monotonic_ns();
    int k = s->fires++;
    if (k < TFIRES) {
        s->fire_ns[k] = now;
        s->seq[k] = atomic_fetch_add(&t->seq, 1);
    }
    if (s->watch >= 0)
        s->observed = t->slot[s->watch].fires;
    int rc = 0;
    if (s->limit && s->fires == s->limit) {
        tc_conn_set_timer(c, 0, 0);
        ssize_t sent = tc_conn_send(c, "done", 4);
        rc = sent < 0 ? (int)sent : 0;
    }
    if (s->bye) {
        char *big = malloc(s->bye);
        if (big) {
            memset(big, 'b', s->bye);
            ssize_t n = tc_conn_send_all(c, big, s->bye); /* raw: over the codec's maximum */
            rc = n < 0 ? (int)n : 0;
            free(big);
        }
        if (s->then >= 0)
            tc_conn_set_timer(t->conn[s->then], 50, 0);
        rc = rc < 0 ? rc : -ECANCELED;
    }
    tc_test_event_postf(&t->fired, "t%d", (int)(s - t->slot));
    return rc;
}

static tc_handler t_handler(struct tstate *t)
{
    tc_handler hd = TC_HANDLER_INIT;
    hd.on_open = hs_on_open;
    hd.on_message = t_on_message;
    hd.on_close = hs_on_close;
    hd.on_timer = t_on_timer;
    hd.ctx = t;
    return hd;
}

/* Wait (bounded) until the timer of slot id has fired: 0 or -ETIMEDOUT. */
static int wait_fired(struct tstate *t, int id)
{
    char tag[16], log[sizeof t->fired.log + 2];
    snprintf(tag, sizeof tag, ",t%d,", id);
    int64_t end = tc_test_now_ms() + TC_TEST_WAIT_MS;
    for (int n = 1;; n++) {
        int64_t left = end - tc_test_now_ms();
        if (left <= 0 || tc_test_event_wait(&t->fired, n, (int)left) < 0)
            return -ETIMEDOUT;
        log[0] = ',';
        tc_test_event_log(&t->fired, log + 1, sizeof log - 2);
        strcat(log, ",");
        if (strstr(log, tag))
            return 0;
    }
}

/* A client for slot id, already identified. */
static tc_conn *t_client(const tc_test_server *ts, int id)
{
    tc_codec line = line_codec();
    tc_conn *c = dial(ts, &line);
    char b[16];
    snprintf(b, sizeof b, "id %d", id);
    cr_assert_eq(tc_conn_send(c, b, strlen(b)), (ssize_t)strlen(b));
    expect_frame(c, "ok");
    return c;
}

static void command(tc_conn *c, const char *cmd, const char *want)
{
    cr_assert_eq(tc_conn_send(c, cmd, strlen(cmd)), (ssize_t)strlen(cmd));
    expect_frame(c, want);
}

/* The one place this suite asserts timing: a timer never fires before its
 * deadline, and not later than this after it (scaled for slow machines). */
#define LATE_NS (tc_test_ms(500) * MS)

static void assert_on_time(const struct tslot *s, int k, int64_t due_ms, const char *what)
{
    int64_t early = s->before + due_ms * MS; /* the deadline is at least this */
    int64_t late = s->after + due_ms * MS + LATE_NS;
    cr_assert_geq(s->fire_ns[k], early, "%s fire %d: %.3f ms early", what, k,
                  (double)(early - s->fire_ns[k]) / MS);
    cr_assert_leq(s->fire_ns[k], late, "%s fire %d: %.3f ms late", what, k,
                  (double)(s->fire_ns[k] - late + LATE_NS) / MS);
}

static void timers_in_order(int workers)
{
    enum { N = 5 };
    static const int delays[N] = {250, 50, 200, 100, 150};
    struct tstate t;
    tstate_init(&t);
    tc_server_config cfg = ev_config(&t.hs, workers);
    tc_handler hd = t_handler(&t);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &hd);
    tc_conn *c[N];
    for (int i = 0; i < N; i++)
        c[i] = t_client(&ts, i);
    for (int i = 0; i < N; i++) {
        char b[32];
        snprintf(b, sizeof b, "arm %d 0", delays[i]);
        command(c[i], b, "armed 0");
    }
    cr_assert_eq(tc_test_event_wait(&t.fired, N, TC_TEST_WAIT_MS), 0, "fired %d of %d",
                 tc_test_event_count(&t.fired), N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(t.slot[i].fires, 1, "timer %d fired %d times", i, t.slot[i].fires);
        assert_on_time(&t.slot[i], 0, delays[i], "one-shot");
    }
    /* One loop runs every timer from one heap: strict deadline order. With
     * two loops each fires on time, whatever the order across loops. */
    if (workers == 1)
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++)
                if (t.slot[i].after + delays[i] * MS < t.slot[j].before + delays[j] * MS)
                    cr_assert_lt(t.slot[i].seq[0], t.slot[j].seq[0],
                                 "timer %d (%d ms) fired after timer %d (%d ms)", i, delays[i],
                                 j, delays[j]);
    for (int i = 0; i < N; i++)
        tc_conn_close(c[i]);
    cr_assert_eq(tc_test_event_wait(&t.hs.closed, N, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    cr_assert_eq(hs_get(&t.hs, &t.hs.errors), 0);
    hs_destroy(&t.hs);
}

Test(event, timers_fire_in_deadline_order_one_loop) { timers_in_order(1); }
Test(event, timers_fire_on_time_two_loops) { timers_in_order(2); }

Test(event, periodic_timer_fires_until_cancelled)
{
    struct tstate t;
    tstate_init(&t);
    t.slot[0].limit = 5; /* the periodic one cancels itself after five */
    t.slot[1].watch = 0; /* the barrier notes how often it fired */
    tc_server_config cfg = ev_config(&t.hs, 1);
    tc_handler hd = t_handler(&t);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &hd);
    tc_conn *p = t_client(&ts, 0), *b = t_client(&ts, 1);
    command(p, "arm 30 20", "armed 0");
    expect_frame(p, "done");
    /* Same loop, one heap: were the periodic timer still armed, it would
     * fire (every 20 ms) before this 100 ms one. */
    command(b, "arm 100 0", "armed 0");
    cr_assert_eq(tc_test_event_wait(&t.fired, 6, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(t.slot[0].fires, 5);
    cr_assert_eq(t.slot[1].observed, 5, "the cancelled timer fired again");
    /* Periods count from the deadline, not from the firing: no drift. */
    for (int k = 0; k < 5; k++)
        assert_on_time(&t.slot[0], k, 30 + 20 * k, "periodic");
    for (int k = 1; k < 5; k++)
        cr_assert_gt(t.slot[0].seq[k], t.slot[0].seq[k - 1]);
    tc_conn_close(p);
    tc_conn_close(b);
    cr_assert_eq(tc_test_event_wait(&t.hs.closed, 2, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    hs_destroy(&t.hs);
}

Test(event, timer_cancel_and_rearm)
{
    struct tstate t;
    tstate_init(&t);
    t.slot[1].watch = 0;
    tc_server_config cfg = ev_config(&t.hs, 1);
    tc_handler hd = t_handler(&t);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &hd);
    tc_conn *c0 = t_client(&ts, 0), *c1 = t_client(&ts, 1), *c2 = t_client(&ts, 2);

    /* Arming again moves the timer: 100 s, then 20 ms. */
    command(c2, "rearm", "armed 0");
    cr_assert_eq(tc_test_event_wait(&t.fired, 1, TC_TEST_WAIT_MS), 0,
                 "the moved timer never fired");
    assert_on_time(&t.slot[2], 0, 20, "re-armed");

    char want[64];
    snprintf(want, sizeof want, "%d %d %d", -EINVAL, -EINVAL, -EINVAL);
    command(c0, "bad", want);
    command(c0, "armcancel 10", "0 0");
    char arm[32];
    int T = tc_test_ms(300);
    snprintf(arm, sizeof arm, "arm %d 0", T);
    command(c0, arm, "armed 0");
    command(c0, "cancel", "cancelled 0");
    command(c0, "cancel", "cancelled 0"); /* cancelling an idle timer is fine */
    /* The barrier's deadline is past both of c0's: it fires after them, had
     * they not been cancelled. */
    snprintf(arm, sizeof arm, "arm %d 0", 2 * T);
    command(c1, arm, "armed 0");
    cr_assert_eq(tc_test_event_wait(&t.fired, 2, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(t.slot[1].fires, 1);
    cr_assert_eq(t.slot[1].observed, 0, "a cancelled timer fired");
    cr_assert_eq(t.slot[0].fires, 0);
    tc_conn_close(c0);
    tc_conn_close(c1);
    tc_conn_close(c2);
    cr_assert_eq(tc_test_event_wait(&t.hs.closed, 3, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    cr_assert_eq(hs_get(&t.hs, &t.hs.errors), 0);
    hs_destroy(&t.hs);
}

/* on_timer failing: its output goes out, then the connection closes with
 * its code, and no further on_timer runs meanwhile (the timer was periodic). */
Test(event, on_timer_error_closes_after_its_output)
{
    const size_t big = 8u << 20; /* more than the socket buffers hold */
    struct tstate t;
    tstate_init(&t);
    t.slot[0].bye = big;
    t.slot[0].then = 1;
    t.slot[1].watch = 0;
    tc_server_config cfg = ev_config(&t.hs, 1);
    tc_handler hd = t_handler(&t);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &hd);
    tc_conn *e = t_client(&ts, 0), *f = t_client(&ts, 1);
    command(e, "arm 10 5", "armed 0");
    /* Slot 0 fired and armed slot 1's timer 50 ms on; e is not read yet, so
     * its reply is still queued when slot 1 fires. */
    cr_assert_eq(wait_fired(&t, 1), 0);
    cr_assert_eq(t.slot[1].observed, 1, "on_timer ran %d times on a closing connection",
                 t.slot[1].observed);
    char *buf = malloc(big);
    cr_assert_not_null(buf);
    ssize_t got = tc_conn_read_exact(e, buf, big);
    cr_assert_eq(got, (ssize_t)big, "read %zd (%s)", got, tc_err_name((int)got));
    for (size_t i = 0; i < big; i++)
        if (buf[i] != 'b')
            cr_assert_fail("reply differs at byte %zu", i);
    free(buf);
    expect_closed(e);
    cr_assert_eq(tc_test_event_wait(&t.hs.closed, 1, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(hs_get(&t.hs, &t.hs.last_reason), -ECANCELED);
    cr_assert_eq(hs_get(&t.hs, &t.hs.last_error), -ECANCELED, "reported to handle_error");
    cr_assert_eq(t.slot[0].fires, 1);
    tc_conn_close(e);
    tc_conn_close(f);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    hs_destroy(&t.hs);
}

/* tc_conn_set_timer's answer from inside on_message, whatever the mode. */
static int probe_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    (void)msg, (void)len, (void)ctx;
    return reply(c, "%d", tc_conn_set_timer(c, 10, 0), 0, 0);
}

static int probe_handle(tc_conn *c, void *ctx)
{
    (void)ctx;
    char out[16];
    int n = snprintf(out, sizeof out, "%d\n", tc_conn_set_timer(c, 10, 0));
    return (int)tc_conn_send_all(c, out, (size_t)n) < 0 ? -EIO : 0;
}

static void probe(tc_mode mode, int stream, int expect)
{
    tc_server_config cfg = tc_test_config();
    cfg.mode = mode;
    cfg.codec = line_codec();
    tc_handler hd = TC_HANDLER_INIT;
    if (stream)
        hd.handle = probe_handle;
    else
        hd.on_message = probe_message;
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &hd);
    tc_codec line = line_codec();
    tc_conn *c = dial(&ts, &line);
    char want[16];
    snprintf(want, sizeof want, "%d", expect);
    cr_assert_eq(tc_conn_send(c, "x", 1), 1);
    expect_frame(c, want);
    tc_conn_close(c);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
}

Test(event, set_timer_outside_event_mode_or_without_on_timer)
{
    probe(TC_MODE_INLINE, 0, -ENOTSUP);
    probe(TC_MODE_THREADING, 0, -ENOTSUP);
    probe(TC_MODE_THREADING, 1, -ENOTSUP);
    probe(TC_MODE_EVENT, 0, TC_EBADCONFIG); /* the handler has no on_timer */
    cr_assert_eq(tc_conn_set_timer(NULL, 10, 0), -EINVAL);
}

/* ---- idle timeout ----------------------------------------------------------------------- */

/* a and c are silent, b keeps talking. c connected after b, so its idle
 * deadline is later than b's would be without traffic: b still open when c
 * is closed shows that messages push the idle deadline back. One loop, one heap. */
Test(event, idle_timeout_closes_silent_connections_only)
{
    struct hs h;
    hs_init(&h);
    tc_server_config cfg = ev_config(&h, 1);
    cfg.idle_timeout_ms = tc_test_ms(300);
    tc_handler hd = echo_handler(&h);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &hd);
    tc_codec line = line_codec();
    tc_conn *a = dial(&ts, &line);
    exchange(a, "a");
    tc_conn *b = dial(&ts, &line);
    exchange(b, "b");
    tc_conn *c = dial(&ts, &line);
    exchange(c, "c");
    int talks = 0;
    int64_t end = tc_test_now_ms() + TC_TEST_WAIT_MS;
    for (;;) {
        struct pollfd p = {.fd = tc_conn_fd(c), .events = POLLIN};
        if (poll(&p, 1, 10) == 1)
            break;
        cr_assert_lt(tc_test_now_ms(), end, "the silent connection was never closed");
        exchange(b, "b");
        talks++;
    }
    expect_closed(c);
    expect_closed(a);
    exchange(b, "still here");
    cr_assert_eq(tc_test_event_wait(&h.closed, 2, TC_TEST_WAIT_MS), 0);
    char log[256];
    tc_test_event_log(&h.closed, log, sizeof log);
    cr_assert_str_eq(log, "ETIMEDOUT,ETIMEDOUT", "a, then c");
    cr_assert_eq(hs_get(&h, &h.errors), 0, "an idle close is not an error");
    cr_assert_gt(talks, 0);
    tc_conn_close(a);
    tc_conn_close(b);
    tc_conn_close(c);
    cr_assert_eq(tc_test_event_wait(&h.closed, 3, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    hs_destroy(&h);
}

/* ---- shutdown: queued output is flushed, idle connections closed at once ----------------- */

#define BIG_REPLY ((size_t)16 << 20)

static unsigned char big_byte(size_t i)
{
    return (unsigned char)('a' + (i * 7 + (i >> 12)) % 26); /* never '\n' */
}

struct bigstate {
    struct hs hs;
    tc_test_event queued;
};

/* "big": one reply much larger than the socket buffers, queued at once. */
static int big_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    struct bigstate *b = ctx;
    if (len != 3 || memcmp(msg, "big", 3) != 0)
        return echo_message(c, msg, len, &b->hs);
    unsigned char *p = malloc(BIG_REPLY);
    if (!p)
        return -ENOMEM;
    for (size_t i = 0; i < BIG_REPLY; i++)
        p[i] = big_byte(i);
    ssize_t n = tc_conn_send_all(c, p, BIG_REPLY);
    free(p);
    tc_test_event_post(&b->queued, NULL);
    return n < 0 ? (int)n : 0;
}

static void big_server(tc_test_server *ts, struct bigstate *b, int workers, int drain_ms)
{
    hs_init(&b->hs);
    tc_test_event_init(&b->queued);
    tc_server_config cfg = ev_config(&b->hs, workers);
    cfg.drain_timeout_ms = drain_ms;
    tc_handler hd = echo_handler(&b->hs);
    hd.on_message = big_message;
    hd.ctx = b;
    tc_test_server_start(ts, NULL, &cfg, &hd);
}

/* Read the whole big reply from a raw socket; the count read. */
static size_t read_big(int fd)
{
    unsigned char buf[65536];
    size_t got = 0;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return got;
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != big_byte(got + (size_t)i) && got + (size_t)i < BIG_REPLY)
                cr_assert_fail("reply differs at byte %zu", got + (size_t)i);
        got += (size_t)n;
    }
}

static void shutdown_flushes(int workers)
{
    struct bigstate b;
    tc_test_server ts;
    big_server(&ts, &b, workers, tc_test_ms(30000));
    /* First to loop 0, second to loop 1 when there are two. */
    int canary = tc_test_connect_ok(&ts.addr);
    cr_assert_eq(tc_test_event_wait(&b.hs.opened, 1, TC_TEST_WAIT_MS), 0);
    int fd = tc_test_connect_ok(&ts.addr);
    cr_assert_eq(tc_test_send_all(fd, "big\n", 4), 0);
    cr_assert_eq(tc_test_event_wait(&b.queued, 1, TC_TEST_WAIT_MS), 0);

    cr_assert_eq(tc_server_shutdown(ts.srv), 0);
    /* The drain has begun once the idle canary is closed... */
    cr_assert_eq(tc_test_event_wait(&b.hs.closed, 1, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(tc_test_recv_eof(canary), 0);
    cr_assert_eq(tc_test_event_count(&b.hs.closed), 1, "the connection with output is kept");
    /* ... and the reply still arrives whole, then end of stream. */
    size_t got = read_big(fd);
    cr_assert_eq(got, BIG_REPLY, "received %zu of %zu bytes", got, BIG_REPLY);
    cr_assert_eq(tc_test_server_join(&ts), 0);
    char log[64];
    tc_test_event_log(&b.hs.closed, log, sizeof log);
    cr_assert_str_eq(log, "TC_ESHUTDOWN,TC_ESHUTDOWN");
    cr_assert_eq(hs_get(&b.hs, &b.hs.errors), 0);
    close(fd);
    close(canary);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    hs_destroy(&b.hs);
}

Test(event, shutdown_flushes_queued_output_one_loop, .timeout = 60) { shutdown_flushes(1); }
Test(event, shutdown_flushes_queued_output_two_loops, .timeout = 60) { shutdown_flushes(2); }

/* A client that never reads cannot hold the drain open past its deadline. */
Test(event, drain_deadline_cuts_unread_output)
{
    struct bigstate b;
    tc_test_server ts;
    big_server(&ts, &b, 2, 200);
    int fd = tc_test_connect_ok(&ts.addr);
    cr_assert_eq(tc_test_send_all(fd, "big\n", 4), 0);
    cr_assert_eq(tc_test_event_wait(&b.queued, 1, TC_TEST_WAIT_MS), 0);
    int64_t t0 = tc_test_now_ms();
    cr_assert_eq(tc_server_shutdown(ts.srv), 0);
    cr_assert_eq(tc_test_server_join(&ts), 0);
    int64_t el = tc_test_now_ms() - t0;
    cr_assert_lt(el, TC_TEST_WAIT_MS, "the drain took %lld ms", (long long)el);
    size_t got = read_big(fd);
    cr_assert_lt(got, BIG_REPLY, "the reply was cut");
    cr_assert_eq(hs_get(&b.hs, &b.hs.last_reason), TC_ESHUTDOWN);
    close(fd);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    hs_destroy(&b.hs);
}

/* The idle timeout counts silence while the server waits for a message, as
 * in the other modes: a client slowly reading a long reply is not idle. The
 * pauses make the reader slow; they synchronise nothing. */
Test(event, idle_timeout_spares_a_slow_reader, .timeout = 60)
{
    struct bigstate b;
    tc_test_server ts;
    hs_init(&b.hs);
    tc_test_event_init(&b.queued);
    tc_server_config cfg = ev_config(&b.hs, 1);
    int idle = tc_test_ms(200);
    cfg.idle_timeout_ms = idle;
    tc_handler hd = echo_handler(&b.hs);
    hd.on_message = big_message;
    hd.ctx = &b;
    tc_test_server_start(&ts, NULL, &cfg, &hd);
    int fd = tc_test_connect_ok(&ts.addr);
    cr_assert_eq(tc_test_send_all(fd, "big\n", 4), 0);
    static unsigned char buf[256 * 1024];
    size_t got = 0;
    int64_t t0 = tc_test_now_ms();
    while (got < BIG_REPLY) {
        ssize_t n = tc_test_recv_full(fd, buf, sizeof buf);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != big_byte(got + (size_t)i))
                cr_assert_fail("reply differs at byte %zu", got + (size_t)i);
        got += (size_t)n;
        struct timespec pause = {0, (long)idle * 1000000 / 8};
        nanosleep(&pause, NULL);
    }
    int64_t el = tc_test_now_ms() - t0;
    cr_assert_eq(got, BIG_REPLY, "cut after %zu bytes and %lld ms (idle timeout %d ms)", got,
                 (long long)el, idle);
    cr_assert_gt(el, idle, "the reader was not slow enough to test anything");
    /* Once the reply is out, silence counts again. */
    cr_assert_eq(tc_test_recv_eof(fd), 0);
    cr_assert_eq(tc_test_event_wait(&b.hs.closed, 1, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(hs_get(&b.hs, &b.hs.last_reason), -ETIMEDOUT);
    close(fd);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    hs_destroy(&b.hs);
}

/* ---- max_conns, verify_request, stats --------------------------------------------------- */

Test(event, max_conns_holds_the_next_client_until_a_slot_frees)
{
    struct hs h;
    hs_init(&h);
    tc_server_config cfg = ev_config(&h, 2);
    cfg.max_conns = 2;
    tc_handler hd = echo_handler(&h);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &hd);
    tc_codec line = line_codec();
    tc_conn *a = dial(&ts, &line), *b = dial(&ts, &line);
    exchange(a, "a");
    exchange(b, "b");
    tc_conn *c = dial(&ts, &line); /* connected in the backlog, not accepted */
    cr_assert_eq(tc_conn_send(c, "c", 1), 1);
    struct pollfd p = {.fd = tc_conn_fd(c), .events = POLLIN};
    cr_assert_eq(poll(&p, 1, tc_test_ms(100)), 0, "served beyond max_conns");
    cr_assert_eq(stats_of(&ts).accepted, 2);
    tc_conn_close(a);
    expect_frame(c, "c");
    exchange(b, "b");
    tc_stats s = stats_of(&ts);
    cr_assert_eq(s.accepted, 3);
    cr_assert_eq(s.peak_active, 2);
    cr_assert_eq(hs_get(&h, &h.max_open), 2);
    tc_conn_close(b);
    tc_conn_close(c);
    cr_assert_eq(tc_test_event_wait(&h.closed, 3, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    hs_destroy(&h);
}

Test(event, max_conns_never_exceeded_by_a_crowd)
{
    enum { N = 40, MAX = 3 };
    struct hs h;
    hs_init(&h);
    tc_server_config cfg = ev_config(&h, 2);
    cfg.max_conns = MAX;
    tc_handler hd = echo_handler(&h);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &hd);
    struct fleet f;
    fleet_run(&f, &ts.addr, N, 3, 1, TC_TEST_WAIT_MS * 2);
    cr_assert_eq(f.failed, 0, "%s", f.why);
    cr_assert_eq(f.finished, N);
    fleet_close(&f);
    cr_assert_eq(tc_test_event_wait(&h.closed, N, TC_TEST_WAIT_MS), 0);
    tc_stats s = stats_of(&ts);
    cr_assert_eq(s.accepted, N);
    cr_assert_leq(s.peak_active, MAX);
    cr_assert_leq(hs_get(&h, &h.max_open), MAX);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    hs_destroy(&h);
}

Test(event, verify_request_refuses_and_stats_count)
{
    struct hs h;
    hs_init(&h);
    tc_server_config cfg = ev_config(&h, 2);
    tc_handler hd = echo_handler(&h);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &hd);
    atomic_store(&h.refuse, 1);
    int r = tc_test_connect_ok(&ts.addr);
    int rc = tc_test_recv_eof(r);
    cr_assert(rc == 0 || rc == -ECONNRESET, "refused: %d", rc);
    close(r);
    atomic_store(&h.refuse, 0);

    tc_codec line = line_codec();
    tc_conn *c[3];
    for (int i = 0; i < 3; i++) {
        c[i] = dial(&ts, &line);
        exchange(c[i], "hello");
    }
    tc_stats s = stats_of(&ts);
    cr_assert_eq(s.accepted, 4, "refused connections count as accepted");
    cr_assert_eq(s.refused, 1);
    cr_assert_eq(s.active, 3);
    cr_assert_eq(s.peak_active, 3);
    cr_assert_eq(s.handler_errors, 0);
    cr_assert_eq(hs_get(&h, &h.opens), 3, "the refused one never reached the handler");

    cr_assert_eq(tc_conn_send(c[0], "fail", 4), 4);
    expect_closed(c[0]);
    cr_assert_eq(tc_test_event_wait(&h.closed, 1, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(hs_get(&h, &h.last_reason), -EPROTO);
    for (int i = 0; i < 3; i++)
        tc_conn_close(c[i]);
    cr_assert_eq(tc_test_event_wait(&h.closed, 3, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(tc_server_shutdown(ts.srv), 0);
    cr_assert_eq(tc_test_server_join(&ts), 0);
    s = stats_of(&ts);
    cr_assert_eq(s.handler_errors, 1);
    cr_assert_eq(hs_get(&h, &h.last_error), -EPROTO);
    cr_assert_eq(s.active, 0);
    cr_assert_eq(s.peak_active, 3);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    hs_destroy(&h);
}

/* ---- teardown ------------------------------------------------------------------------------ */

Test(event, destroy_restores_fds_and_threads)
{
    int fds0 = tc_test_count_fds();
    int threads0 = tc_test_count_threads();
    struct hs h;
    hs_init(&h);
    tc_server_config cfg = ev_config(&h, 3);
    tc_handler hd = echo_handler(&h);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &hd);
    struct fleet f;
    fleet_run(&f, &ts.addr, 30, 2, 1, TC_TEST_WAIT_MS);
    cr_assert_eq(f.finished, 30, "%s", f.why);
    fleet_close(&f);
    /* Shut down with connections still open, then serve again. */
    tc_codec line = line_codec();
    tc_conn *c = dial(&ts, &line);
    exchange(c, "before");
    cr_assert_eq(tc_server_shutdown(ts.srv), 0);
    cr_assert_eq(tc_test_server_join(&ts), 0);
    expect_closed(c);
    tc_conn_close(c);
    cr_assert_eq(stats_of(&ts).active, 0);
    tc_test_server_run(&ts);
    c = dial(&ts, &line);
    exchange(c, "after");
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    expect_closed(c);
    tc_conn_close(c);
    cr_assert_eq(tc_test_wait_threads(threads0, TC_TEST_WAIT_MS), threads0, "threads leaked");
    cr_assert_eq(tc_test_count_fds(), fds0, "descriptors leaked");
    cr_assert_eq(hs_get(&h, &h.errors), 0);
    hs_destroy(&h);
}

Test(event, shutdown_before_serving_returns_at_once)
{
    int fds0 = tc_test_count_fds();
    int threads0 = tc_test_count_threads();
    struct hs h;
    hs_init(&h);
    tc_server_config cfg = ev_config(&h, 4);
    tc_handler hd = echo_handler(&h);
    tc_server *s;
    cr_assert_eq(tc_server_create(&s, &cfg, &hd), 0);
    cr_assert_eq(tc_server_shutdown(s), 0);
    cr_assert_eq(tc_server_serve_forever(s), 0);
    tc_server_destroy(s);
    cr_assert_eq(tc_server_create(&s, &cfg, &hd), 0);
    tc_server_destroy(s); /* never served */
    cr_assert_eq(tc_test_wait_threads(threads0, TC_TEST_WAIT_MS), threads0);
    cr_assert_eq(tc_test_count_fds(), fds0);
    hs_destroy(&h);
}

/* ---- output ordering details ------------------------------------------------------------- */

/* "hc": a buffered write, then a half-close: the peer reads it, then end of
 * stream, while the server still reads. "blob": a buffered reply over the
 * high-water mark (the loop stops reading), several pipelined. */
#define BLOB ((size_t)1536 * 1024)

static int detail_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    struct hs *h = ctx;
    if (len == 2 && memcmp(msg, "hc", 2) == 0) {
        ssize_t n = tc_conn_write(c, "hello\n", 6);
        if (n < 0)
            return (int)n;
        return tc_conn_shutdown_write(c);
    }
    if (len == 4 && memcmp(msg, "blob", 4) == 0) {
        tc_conn_set_buffer_sizes(c, 0, 4 * BLOB); /* so the write is only buffered */
        unsigned char *p = malloc(BLOB);
        if (!p)
            return -ENOMEM;
        for (size_t i = 0; i < BLOB; i++)
            p[i] = big_byte(i);
        ssize_t n = tc_conn_write(c, p, BLOB);
        free(p);
        return n < 0 ? (int)n : 0;
    }
    return echo_message(c, msg, len, h);
}

static void detail_server(tc_test_server *ts, struct hs *h, tc_codec codec)
{
    hs_init(h);
    tc_server_config cfg = ev_config(h, 1);
    cfg.codec = codec;
    tc_handler hd = echo_handler(h);
    hd.on_message = detail_message;
    tc_test_server_start(ts, NULL, &cfg, &hd);
}

Test(event, half_close_after_buffered_output)
{
    struct hs h;
    tc_test_server ts;
    detail_server(&ts, &h, line_codec());
    int fd = tc_test_connect_ok(&ts.addr);
    cr_assert_eq(tc_test_send_all(fd, "hc\n", 3), 0);
    char buf[16];
    cr_assert_eq(tc_test_recv_full(fd, buf, 6), 6);
    cr_assert_eq(memcmp(buf, "hello\n", 6), 0);
    cr_assert_eq(tc_test_recv_eof(fd), 0, "no end of stream after the half-close");
    cr_assert_eq(tc_test_event_count(&h.closed), 0, "only the write side is closed");
    close(fd);
    cr_assert_eq(tc_test_event_wait(&h.closed, 1, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    hs_destroy(&h);
}

Test(event, pipelined_replies_over_the_high_water_mark)
{
    enum { N = 4 };
    struct hs h;
    tc_test_server ts;
    detail_server(&ts, &h, line_codec());
    int fd = tc_test_connect_ok(&ts.addr);
    cr_assert_eq(tc_test_send_all(fd, "blob\nblob\nblob\nblob\nx\n", 22), 0);
    unsigned char *buf = malloc(BLOB);
    cr_assert_not_null(buf);
    for (int k = 0; k < N; k++) {
        ssize_t n = tc_test_recv_full(fd, buf, BLOB);
        cr_assert_eq(n, (ssize_t)BLOB, "reply %d: %zd bytes", k, n);
        for (size_t i = 0; i < BLOB; i++)
            if (buf[i] != big_byte(i))
                cr_assert_fail("reply %d differs at byte %zu", k, i);
    }
    cr_assert_eq(tc_test_recv_full(fd, buf, 2), 2);
    cr_assert_eq(memcmp(buf, "x\n", 2), 0);
    free(buf);
    close(fd);
    cr_assert_eq(tc_test_event_wait(&h.closed, 1, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    cr_assert_eq(hs_get(&h, &h.errors), 0);
    hs_destroy(&h);
}

/* Frames larger than the loop's 64 KiB receive buffer, and one dribbled a
 * byte at a time, all echoed intact; a length prefix over the maximum ends
 * the connection at once with TC_ETOOBIG. */
Test(event, large_and_dribbled_frames)
{
    enum { NBIG = 3 };
    const size_t blen = 300 * 1024;
    struct hs h;
    tc_test_server ts;
    detail_server(&ts, &h, len32_codec());
    int fd = tc_test_connect_ok(&ts.addr);
    size_t total = NBIG * (4 + blen);
    unsigned char *out = malloc(total), *in = malloc(4 + blen);
    cr_assert(out && in);
    for (int k = 0; k < NBIG; k++) {
        unsigned char *f = out + (size_t)k * (4 + blen);
        f[0] = 0, f[1] = (unsigned char)(blen >> 16), f[2] = (unsigned char)(blen >> 8);
        f[3] = (unsigned char)blen;
        for (size_t i = 0; i < blen; i++)
            f[4 + i] = bp_byte((unsigned)k, i);
    }
    cr_assert_eq(tc_test_send_all(fd, out, total), 0);
    for (int k = 0; k < NBIG; k++) {
        cr_assert_eq(tc_test_recv_full(fd, in, 4 + blen), (ssize_t)(4 + blen));
        cr_assert_eq(memcmp(in, out + (size_t)k * (4 + blen), 4 + blen), 0, "frame %d", k);
    }
    static const unsigned char small[] = {0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'};
    for (size_t i = 0; i < sizeof small; i++)
        cr_assert_eq(tc_test_send_all(fd, small + i, 1), 0);
    cr_assert_eq(tc_test_recv_full(fd, in, sizeof small), (ssize_t)sizeof small);
    cr_assert_eq(memcmp(in, small, sizeof small), 0);
    static const unsigned char huge[] = {0, 0x20, 0, 0}; /* 2 MiB > 1 MiB */
    cr_assert_eq(tc_test_send_all(fd, huge, sizeof huge), 0);
    int rc = tc_test_recv_eof(fd);
    cr_assert(rc == 0 || rc == -ECONNRESET, "closed: %d", rc);
    cr_assert_eq(tc_test_event_wait(&h.closed, 1, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(hs_get(&h, &h.last_reason), TC_ETOOBIG);
    cr_assert_eq(hs_get(&h, &h.last_error), TC_ETOOBIG);
    free(out);
    free(in);
    close(fd);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    hs_destroy(&h);
}

/* An io_uring loop idle for 100 ms gives the pages of the receive buffers
 * it used back to the kernel (uring.c: trim). Bytes that come after must
 * arrive whole: frames of 300 KiB on three connections (each fills about
 * twenty of the ring's buffers), then a pause long enough for a trim (a
 * pause is the point here, not a wait for an event), three times over,
 * each round with bytes of its own. On epoll the same exchange, no trim. */
Test(event, frames_arrive_whole_after_an_idle_trim, .timeout = 60)
{
    enum { NC = 3, ROUNDS = 3 };
    const size_t blen = 300 * 1024;
    struct hs h;
    tc_test_server ts;
    detail_server(&ts, &h, len32_codec());
    int fd[NC];
    for (int i = 0; i < NC; i++)
        fd[i] = tc_test_connect_ok(&ts.addr);
    unsigned char *out = malloc(4 + blen), *in = malloc(4 + blen);
    cr_assert(out && in);
    out[0] = 0, out[1] = (unsigned char)(blen >> 16), out[2] = (unsigned char)(blen >> 8);
    out[3] = (unsigned char)blen;
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < NC; i++) {
            for (size_t k = 0; k < blen; k++)
                out[4 + k] = bp_byte((unsigned)(r * NC + i + 1), k);
            cr_assert_eq(tc_test_send_all(fd[i], out, 4 + blen), 0);
            cr_assert_eq(tc_test_recv_full(fd[i], in, 4 + blen), (ssize_t)(4 + blen));
            cr_assert_eq(memcmp(in, out, 4 + blen), 0, "round %d, connection %d", r, i);
        }
        struct timespec pause = {0, 300 * 1000 * 1000}; /* three trim periods */
        nanosleep(&pause, NULL);
    }
    free(out);
    free(in);
    for (int i = 0; i < NC; i++)
        close(fd[i]);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    hs_destroy(&h);
}

/* ---- poll_interval_ms: service_actions while idle -------------------------------------- */

/* server.h: service_actions runs in the serving thread, after each batch of
 * accepts and at least every poll_interval_ms while the server is idle. The
 * other modes do (test_modes: service_actions_every_poll_interval); event
 * mode on 3589a83 (issue 12, 3.2) calls it only when something wakes loop 0,
 * so an idle server never does. With poll_interval_ms 20, five calls must
 * come within 3 s (scaled), though not at once (no busy loop: the fifth no
 * sooner than two intervals), first with no connection, then with one open
 * and idle. The hook signals each call through a tc_test_event. */
struct svc {
    struct hs hs; /* first: the hooks' ctx */
    tc_test_event calls;
    pthread_mutex_t mu;
    pthread_t last;  /* the thread of the latest call */
    int threads;     /* calls from another thread than the previous one */
};

static void svc_hook(tc_server *srv, void *ctx)
{
    struct svc *s = ctx;
    (void)srv;
    pthread_mutex_lock(&s->mu);
    if (tc_test_event_count(&s->calls) > 0 && !pthread_equal(s->last, pthread_self()))
        s->threads++;
    s->last = pthread_self();
    pthread_mutex_unlock(&s->mu);
    tc_test_event_post(&s->calls, NULL);
}

/* Wait for `calls` more calls than `from`; asserts they came in time but not at once. */
static void expect_service_calls(struct svc *s, int from, int workers, const char *when)
{
    enum { INTERVAL = 20, CALLS = 5, WITHIN = 3000 };
    int64_t t0 = tc_test_now_ms();
    int rc = tc_test_event_wait(&s->calls, from + CALLS, tc_test_ms(WITHIN));
    int64_t took = tc_test_now_ms() - t0;
    int n = tc_test_event_count(&s->calls) - from;
    cr_assert_eq(rc, 0,
                 "event mode, %d loop(s), %s: service_actions ran %d times in %lld ms "
                 "(poll_interval_ms %d: at least %d expected)",
                 workers, when, n, (long long)took, INTERVAL, CALLS);
    cr_assert_geq(took, 2 * INTERVAL,
                  "event mode, %d loop(s), %s: %d calls in %lld ms: a busy loop", workers, when, n,
                  (long long)took);
}

static void service_while_idle(int workers)
{
    struct svc s;
    memset(&s, 0, sizeof s);
    hs_init(&s.hs);
    tc_test_event_init(&s.calls);
    pthread_mutex_init(&s.mu, NULL);
    tc_server_config cfg = ev_config(&s.hs, workers);
    cfg.poll_interval_ms = 20;
    cfg.hooks.service_actions = svc_hook;
    cfg.hooks.ctx = &s;
    tc_handler hd = echo_handler(&s.hs);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &hd);
    expect_service_calls(&s, 0, workers, "no connection");

    tc_codec line = line_codec();
    tc_conn *c = dial(&ts, &line);
    exchange(c, "hello");
    expect_service_calls(&s, tc_test_event_count(&s.calls), workers, "one idle connection");
    pthread_mutex_lock(&s.mu);
    int threads = s.threads;
    int serving = pthread_equal(s.last, ts.thread);
    pthread_mutex_unlock(&s.mu);
    cr_assert(serving && threads == 0, "service_actions ran outside the serving thread");
    tc_conn_close(c);
    cr_assert_eq(tc_test_event_wait(&s.hs.closed, 1, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    pthread_mutex_destroy(&s.mu);
    tc_test_event_destroy(&s.calls);
    hs_destroy(&s.hs);
}

Test(event, service_actions_every_poll_interval_one_loop) { service_while_idle(1); }
Test(event, service_actions_every_poll_interval_two_loops) { service_while_idle(2); }

/* ---- accepting: never after shutdown, and out of descriptors -------------------------------- */

struct gate {
    struct hs hs; /* first: the hooks' ctx */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int arm, blocked, release;
};

/* service_actions runs at the end of each turn of loop 0, after the loop
 * looked for a shutdown request: once armed, it holds the loop there. */
static void gate_service(tc_server *srv, void *ctx)
{
    struct gate *g = ctx;
    (void)srv;
    pthread_mutex_lock(&g->mu);
    if (g->arm) {
        g->arm = 0;
        g->blocked = 1;
        pthread_cond_broadcast(&g->cv);
        while (!g->release)
            pthread_cond_wait(&g->cv, &g->mu);
    }
    pthread_mutex_unlock(&g->mu);
}

/* tc_server_shutdown() and a new client both arrive while loop 0 is busy:
 * its next wait sees the shutdown and the listener ready together, and the
 * client must stay unaccepted (server.h: clients still in the backlog are
 * never accepted), in particular not dealt to a loop that is already gone. */
static void no_accept_after_shutdown(int workers)
{
    struct gate g;
    memset(&g, 0, sizeof g);
    hs_init(&g.hs);
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    tc_server_config cfg = ev_config(&g.hs, workers);
    cfg.drain_timeout_ms = tc_test_ms(10000);
    cfg.hooks.service_actions = gate_service;
    tc_handler hd = echo_handler(&g.hs);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &hd);
    tc_codec line = line_codec();
    tc_conn *a = dial(&ts, &line); /* loop 0 */
    exchange(a, "one");
    pthread_mutex_lock(&g.mu);
    g.arm = 1;
    pthread_mutex_unlock(&g.mu);
    cr_assert_eq(tc_conn_send(a, "two", 3), 3); /* a turn of loop 0, which then blocks */
    pthread_mutex_lock(&g.mu);
    while (!g.blocked)
        pthread_cond_wait(&g.cv, &g.mu); /* bounded by the test's timeout */
    pthread_mutex_unlock(&g.mu);

    cr_assert_eq(tc_server_shutdown(ts.srv), 0);
    int late = tc_test_connect_ok(&ts.addr); /* completes in the backlog */
    pthread_mutex_lock(&g.mu);
    g.release = 1;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    expect_frame(a, "two");
    cr_assert_eq(tc_test_server_join(&ts), 0);
    tc_stats s = stats_of(&ts);
    cr_assert_eq(s.accepted, 1, "a client was accepted after the shutdown");
    cr_assert_eq(s.active, 0);
    cr_assert_eq(hs_get(&g.hs, &g.hs.opens), 1);
    close(late);
    tc_conn_close(a);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    hs_destroy(&g.hs);
}

Test(event, no_accept_after_shutdown_one_loop) { no_accept_after_shutdown(1); }
Test(event, no_accept_after_shutdown_two_loops) { no_accept_after_shutdown(2); }

/* Out of descriptors: the loop drops the clients it cannot take (the spare
 * descriptor trick) instead of waking forever on the listener, serves the
 * ones it took, and takes new clients once descriptors are free again. */
Test(event, accept_out_of_descriptors_drops_and_recovers)
{
    enum { N = 8, ROOM = 2, HEADROOM = 256 };
    static int fill[HEADROOM + 64];
    struct hs h;
    hs_init(&h);
    tc_server_config cfg = ev_config(&h, 1);
    tc_handler hd = echo_handler(&h);
    /* The limit is lowered before the server starts (a ring's accept
     * requests read it when submitted), then all but ROOM slots under it
     * are filled. */
    struct rlimit old;
    tc_test_nofile_lower(&old, HEADROOM);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &hd);
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(fds[i], 0);
    }
    int nfill = tc_test_nofile_fill(fill, (int)(sizeof fill / sizeof fill[0]));
    cr_assert_lt(dup(0), 0, "descriptors were not exhausted");
    cr_assert_geq(nfill, ROOM);
    for (int i = 0; i < ROOM; i++)
        close(fill[--nfill]);
    for (int i = 0; i < N; i++)
        cr_assert_eq(connect(fds[i], &ts.addr.u.sa, ts.addr.len), 0);
    /* The first ROOM are served; the rest are dropped (end of stream or reset). */
    for (int i = 0; i < N; i++) {
        if (i < ROOM) {
            cr_assert_eq(tc_test_send_all(fds[i], "hi\n", 3), 0);
            char b[3];
            cr_assert_eq(tc_test_recv_full(fds[i], b, 3), 3, "client %d not served", i);
        } else {
            int rc = tc_test_recv_eof(fds[i]);
            cr_assert(rc == 0 || rc == -ECONNRESET, "client %d: %d", i, rc);
        }
    }
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    cr_assert_eq(stats_of(&ts).accepted, ROOM);
    cr_assert_geq(atomic_load(&h.dropped), N - ROOM, "%d dropped clients logged",
                  atomic_load(&h.dropped));
    for (int i = 0; i < N; i++)
        close(fds[i]);
    tc_codec line = line_codec();
    tc_conn *c = dial(&ts, &line);
    exchange(c, "recovered");
    tc_conn_close(c);
    cr_assert_eq(tc_test_event_wait(&h.closed, ROOM + 1, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    hs_destroy(&h);
}

/* ---- flow control: tc_conn_pending and on_drain ------------------------------------------ */

/* The server the flow-control, posting and timer tests share: line framing,
 * `workers` loops of `mode`, send water marks high and low (0: the
 * defaults), and the handler h (copied by the server). */
static void start_line_server(tc_test_server *ts, tc_mode mode, int workers, size_t high,
                              size_t low, const tc_handler *h)
{
    tc_server_config cfg = tc_test_config();
    cfg.mode = mode;
    cfg.workers = workers;
    cfg.send_high_water = high;
    cfg.send_low_water = low;
    cr_assert_eq(tc_codec_delimited(&cfg.codec, "\n", 1), 0);
    tc_test_server_start(ts, NULL, &cfg, h);
}

struct drain_seen {
    _Atomic uint64_t id;
    atomic_int flooded, drains;
    atomic_size_t peak, at_drain;
    atomic_int on_loop_ok; /* on_drain ran in the thread that ran on_open */
    pthread_t loop;
};

enum { DRAIN_PIECES = 128, DRAIN_PIECE = 64 * 1024 }; /* 8 MiB, beyond any socket buffer */

static int drain_open(tc_conn *c, void *ctx)
{
    struct drain_seen *d = ctx;
    d->loop = pthread_self();
    atomic_store(&d->id, tc_conn_id(c));
    return 0;
}

/* "flood": 8 MiB of lines, more than the socket takes; the count queued after. */
static int drain_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    struct drain_seen *d = ctx;
    (void)msg, (void)len;
    static char piece[DRAIN_PIECE];
    memset(piece, 'x', sizeof piece);
    for (int i = 0; i < DRAIN_PIECES; i++) {
        ssize_t r = tc_conn_send(c, piece, sizeof piece);
        if (r < 0)
            return (int)r;
    }
    atomic_store(&d->peak, tc_conn_pending(c));
    atomic_store(&d->flooded, 1);
    return 0;
}

/* The queue fell below the low-water mark: one more line, "drained". */
static int drain_drain(tc_conn *c, void *ctx)
{
    struct drain_seen *d = ctx;
    atomic_store(&d->at_drain, tc_conn_pending(c));
    if (pthread_equal(pthread_self(), d->loop))
        atomic_store(&d->on_loop_ok, 1);
    atomic_fetch_add(&d->drains, 1);
    ssize_t r = tc_conn_send(c, "drained", 7);
    return r < 0 ? (int)r : 0;
}

/* Read total bytes (at least 2) from fd, asserting each piece: the end of
 * the last piece (the bytes before it are the stream's last ones). */
static const char *read_all(int fd, size_t total, const char *name)
{
    static char buf[256 * 1024];
    size_t got = 0, want = 0;
    while (got < total) {
        want = total - got < sizeof buf ? total - got : sizeof buf;
        ssize_t r = tc_test_recv_full(fd, buf, want);
        cr_assert_eq(r, (ssize_t)want, "%s: %zd after %zu bytes", name, r, got);
        got += want;
    }
    cr_assert_geq(want, 2);
    return buf + want;
}

/* Event and pool modes: a handler queues 8 MiB for a client that reads
 * nothing yet; tc_conn_pending shows more than the high-water mark (high;
 * 0: the default), and a send by id from this thread is refused. As the
 * client reads, on_drain runs once, in the loop thread, with less than the
 * low-water mark queued, and its line comes after every byte before it. */
static void flow_control(size_t high, size_t low)
{
    const tc_mode modes[] = {TC_MODE_EVENT, TC_MODE_POOL};
    size_t hwm = high ? high : TC_SEND_HIGH_WATER, lwm = low ? low : TC_SEND_LOW_WATER;
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        if (!tc_test_mode_enabled(modes[m]))
            continue;
        struct drain_seen d;
        memset(&d, 0, sizeof d);
        tc_test_counts before = tc_test_counts_now(NULL, 0);
        tc_test_server ts;
        start_line_server(&ts, modes[m], modes[m] == TC_MODE_POOL ? 2 : 1, high, low,
                          &(tc_handler){.on_open = drain_open, .on_message = drain_message,
                                        .on_drain = drain_drain, .ctx = &d});
        int fd = tc_test_connect_ok(&ts.addr);
        cr_assert_eq(tc_test_send_all(fd, "flood\n", 6), 0);
        TC_TEST_WAIT_UNTIL(atomic_load(&d.flooded), TC_TEST_WAIT_MS);
        cr_assert(atomic_load(&d.flooded), "%s: the flood never ran", tc_mode_name(modes[m]));
        cr_assert_gt(atomic_load(&d.peak), hwm, "%s: %zu bytes queued",
                     tc_mode_name(modes[m]), atomic_load(&d.peak));
        cr_assert_eq(tc_server_send_to(ts.srv, atomic_load(&d.id), "x", 1), -EAGAIN,
                     "%s: a send by id to a full queue", tc_mode_name(modes[m]));
        cr_assert_eq(atomic_load(&d.drains), 0, "on_drain before the client read");
        const size_t total = (size_t)DRAIN_PIECES * (DRAIN_PIECE + 1);
        (void)read_all(fd, total, tc_mode_name(modes[m]));
        char tail[8];
        cr_assert_eq(tc_test_recv_full(fd, tail, 8), 8, "%s: no line from on_drain",
                     tc_mode_name(modes[m]));
        cr_assert_eq(memcmp(tail, "drained\n", 8), 0);
        cr_assert_eq(atomic_load(&d.drains), 1, "%s: on_drain ran %d times",
                     tc_mode_name(modes[m]), atomic_load(&d.drains));
        cr_assert_lt(atomic_load(&d.at_drain), lwm, "%s: on_drain with %zu bytes queued",
                     tc_mode_name(modes[m]), atomic_load(&d.at_drain));
        cr_assert(atomic_load(&d.on_loop_ok), "%s: on_drain outside the loop thread",
                  tc_mode_name(modes[m]));
        close(fd);
        cr_assert_eq(tc_test_server_stop(&ts), 0);
        tc_test_expect_counts(before, NULL, 0, tc_mode_name(modes[m]));
    }
}

Test(event, flow_control_pending_and_on_drain, .timeout = 60) { flow_control(0, 0); }

/* tc_server_config::send_high_water and send_low_water move both marks. */
Test(event, flow_control_with_configured_water_marks, .timeout = 60)
{
    flow_control(128 * 1024, 32 * 1024);
}

/* A high-water mark above what the handler queues (16 MiB against 8 MiB):
 * the queue never passes it, so a send by id is taken, reading goes on and
 * on_drain never runs. */
Test(event, flow_control_high_mark_above_the_output, .timeout = 60)
{
    const tc_mode modes[] = {TC_MODE_EVENT, TC_MODE_POOL};
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        if (!tc_test_mode_enabled(modes[m]))
            continue;
        const char *name = tc_mode_name(modes[m]);
        struct drain_seen d;
        memset(&d, 0, sizeof d);
        tc_test_server ts;
        start_line_server(&ts, modes[m], modes[m] == TC_MODE_POOL ? 2 : 1, 16 * 1024 * 1024, 0,
                          &(tc_handler){.on_open = drain_open, .on_message = drain_message,
                                        .on_drain = drain_drain, .ctx = &d});
        int fd = tc_test_connect_ok(&ts.addr);
        cr_assert_eq(tc_test_send_all(fd, "flood\n", 6), 0);
        TC_TEST_WAIT_UNTIL(atomic_load(&d.flooded), TC_TEST_WAIT_MS);
        cr_assert(atomic_load(&d.flooded), "%s: the flood never ran", name);
        cr_assert_gt(atomic_load(&d.peak), TC_SEND_HIGH_WATER, "%s: %zu bytes queued", name,
                     atomic_load(&d.peak));
        cr_assert_eq(tc_server_send_to(ts.srv, atomic_load(&d.id), "x", 1), 0, "%s", name);
        const size_t total = (size_t)DRAIN_PIECES * (DRAIN_PIECE + 1) + 2;
        const char *end = read_all(fd, total, name);
        cr_assert(memcmp(end - 2, "x\n", 2) == 0, "%s: the message sent by id is not last", name);
        close(fd);
        cr_assert_eq(tc_test_server_stop(&ts), 0);
    }
}

/* A low-water mark not below the high one is refused. */
Test(event, water_marks_out_of_order_are_refused)
{
    tc_server_config cfg = tc_test_config();
    cfg.mode = TC_MODE_EVENT;
    cfg.send_high_water = 64 * 1024;
    cfg.send_low_water = 64 * 1024;
    tc_handler h = tc_test_echo_handler();
    h.handle = NULL;
    h.on_message = drain_message;
    tc_server *srv = NULL;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
    cr_assert_null(srv);
}

/* ---- loops: posted work and broadcasts (tcpchan/loop.h) -------------------------------- */

struct post_seen {
    _Atomic(tc_conn *) conn[2];  /* the two clients' connections, as on_open saw them */
    pthread_t thread[2];         /* the thread that ran each one's on_open */
    atomic_int opened;
    atomic_int ran, right_thread;
    tc_test_event done;
};

static int post_open(tc_conn *c, void *ctx)
{
    struct post_seen *p = ctx;
    int i = atomic_fetch_add(&p->opened, 1);
    if (i < 2) {
        p->thread[i] = pthread_self();
        atomic_store(&p->conn[i], c);
    }
    return 0;
}

static int post_echo(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    (void)ctx;
    ssize_t r = tc_conn_send(c, msg, len);
    return r < 0 ? (int)r : 0;
}

struct post_job {
    struct post_seen *p;
    int i;
};

/* Posted to connection i's loop: it runs in the thread that opened it. */
static void post_fn(tc_loop *loop, void *arg)
{
    struct post_job *j = arg;
    if (pthread_equal(pthread_self(), j->p->thread[j->i]) &&
        tc_conn_loop(atomic_load(&j->p->conn[j->i])) == loop)
        atomic_fetch_add(&j->p->right_thread, 1);
    atomic_fetch_add(&j->p->ran, 1);
    tc_test_event_post(&j->p->done, NULL);
}

/* Event mode with two loops: tc_server_loop_count and tc_server_loop name
 * them, tc_conn_loop gives each connection's; work posted from this thread
 * runs in that loop's thread; once the server has stopped, posting is
 * refused. A threading server has no loops. */
Test(event, loop_post_runs_in_the_connections_loop)
{
    if (!tc_test_mode_enabled(TC_MODE_EVENT))
        cr_skip_test("event mode not selected by TC_TEST_MODES");
    struct post_seen p;
    memset(&p, 0, sizeof p);
    tc_test_event_init(&p.done);
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_test_server ts;
    start_line_server(&ts, TC_MODE_EVENT, 2, 0, 0,
                      &(tc_handler){.on_open = post_open, .on_message = post_echo, .ctx = &p});
    cr_assert_eq(tc_server_loop_count(ts.srv), 2);
    cr_assert_not_null(tc_server_loop(ts.srv, 0));
    cr_assert_not_null(tc_server_loop(ts.srv, 1));
    cr_assert_null(tc_server_loop(ts.srv, 2));
    cr_assert_null(tc_server_loop(ts.srv, -1));
    cr_assert_eq(tc_loop_server(tc_server_loop(ts.srv, 1)), ts.srv);
    int fd[2];
    for (int i = 0; i < 2; i++) {
        fd[i] = tc_test_connect_ok(&ts.addr);
        cr_assert_eq(tc_test_send_all(fd[i], "hi\n", 3), 0); /* opened once it answers */
        char b[3];
        cr_assert_eq(tc_test_recv_full(fd[i], b, 3), 3);
    }
    cr_assert_eq(atomic_load(&p.opened), 2);
    /* Dealt round-robin: one connection on each loop. */
    cr_assert_neq(tc_conn_loop(atomic_load(&p.conn[0])), tc_conn_loop(atomic_load(&p.conn[1])));
    struct post_job jobs[2] = {{&p, 0}, {&p, 1}};
    for (int i = 0; i < 2; i++)
        cr_assert_eq(tc_loop_post(tc_conn_loop(atomic_load(&p.conn[i])), post_fn, &jobs[i]), 0);
    cr_assert_eq(tc_test_event_wait(&p.done, 2, TC_TEST_WAIT_MS), 0, "posted work never ran");
    cr_assert_eq(atomic_load(&p.right_thread), 2, "posted work ran outside its loop's thread");
    cr_assert_eq(tc_loop_post(NULL, post_fn, &jobs[0]), -EINVAL);
    cr_assert_eq(tc_loop_post(tc_server_loop(ts.srv, 0), NULL, NULL), -EINVAL);
    close(fd[0]);
    close(fd[1]);
    tc_loop *l0 = tc_server_loop(ts.srv, 0);
    cr_assert_eq(tc_server_shutdown(ts.srv), 0);
    cr_assert_eq(tc_test_server_join(&ts), 0); /* serve_forever returned; not yet destroyed */
    cr_assert_eq(tc_loop_post(l0, post_fn, &jobs[0]), TC_ESHUTDOWN);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, "event");
    tc_test_event_destroy(&p.done);
    cr_assert_eq(atomic_load(&p.ran), 2);
}

static void sync_fn(tc_loop *loop, void *arg)
{
    (void)loop;
    tc_test_event_post(arg, NULL);
}

enum { BC_FAST = 4, BC_ROUNDS = 16, BC_SIZE = 512 * 1024 }; /* 8 MiB: more than the kernel holds */

/* Event mode (two loops) and pool mode (two workers): tc_server_broadcast
 * reaches every connection, in order, round after round, while one client
 * that never reads is skipped once its queue passes the high-water mark (it
 * holds up nobody, and what is queued for it stays bounded). A threading
 * server has no loops: -ENOTSUP. */
Test(event, broadcast_reaches_every_connection_and_skips_a_slow_one, .timeout = 60)
{
    const tc_mode modes[] = {TC_MODE_EVENT, TC_MODE_POOL};
    static char piece[BC_SIZE], got[BC_SIZE + 1];
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        if (!tc_test_mode_enabled(modes[m]))
            continue;
        const char *name = tc_mode_name(modes[m]);
        struct post_seen p;
        memset(&p, 0, sizeof p);
        tc_test_event_init(&p.done);
        tc_test_counts before = tc_test_counts_now(NULL, 0);
        tc_test_server ts;
        start_line_server(&ts, modes[m], 2, 0, 0,
                          &(tc_handler){.on_open = post_open, .on_message = post_echo, .ctx = &p});
        /* The slow client first (post_open keeps the first two connections). */
        int slow = tc_test_connect_ok(&ts.addr);
        int small = 4096;
        cr_assert_eq(setsockopt(slow, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
        int fd[BC_FAST];
        for (int i = -1; i < BC_FAST; i++) {
            int f = i < 0 ? slow : (fd[i] = tc_test_connect_ok(&ts.addr));
            cr_assert_eq(tc_test_send_all(f, "hi\n", 3), 0);
            char b[3];
            cr_assert_eq(tc_test_recv_full(f, b, 3), 3, "%s: no echo", name);
        }
        tc_conn *slow_conn = atomic_load(&p.conn[0]);
        for (int k = 0; k < BC_ROUNDS; k++) {
            memset(piece, 'a' + k, sizeof piece);
            cr_assert_eq(tc_server_broadcast(ts.srv, piece, sizeof piece), 0);
            for (int i = 0; i < BC_FAST; i++) {
                ssize_t r = tc_test_recv_full(fd[i], got, sizeof got);
                if (r != (ssize_t)sizeof got || got[0] != 'a' + k || got[BC_SIZE - 1] != 'a' + k ||
                    got[BC_SIZE] != '\n')
                    cr_assert_fail("%s: client %d, round %d: %zd bytes, '%c'", name, i, k, r,
                                   r > 0 ? got[0] : '?');
            }
        }
        size_t queued = tc_conn_pending(slow_conn);
        cr_assert_leq(queued, TC_SEND_HIGH_WATER + BC_SIZE + 1, "%s: %zu bytes queued for the "
                      "client that does not read", name, queued);
        /* The loop's next turn comes after that read (its mailbox lock
         * orders them), and only then may it free the connection. */
        cr_assert_eq(tc_loop_post(tc_conn_loop(slow_conn), sync_fn, &p.done), 0);
        cr_assert_eq(tc_test_event_wait(&p.done, 1, TC_TEST_WAIT_MS), 0);
        for (int i = 0; i < BC_FAST; i++)
            close(fd[i]);
        close(slow);
        cr_assert_eq(tc_test_server_stop(&ts), 0);
        tc_test_expect_counts(before, NULL, 0, name);
        tc_test_event_destroy(&p.done);
    }
    /* No loops in threading mode. */
    tc_server_config cfg = tc_test_config();
    cfg.mode = TC_MODE_THREADING;
    tc_handler h = tc_test_echo_handler();
    tc_server *srv;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), 0);
    cr_assert_eq(tc_server_loop_count(srv), 0);
    cr_assert_null(tc_server_loop(srv, 0));
    cr_assert_eq(tc_server_broadcast(srv, "x", 1), -ENOTSUP);
    cr_assert_eq(tc_server_broadcast(NULL, "x", 1), -EINVAL);
    tc_server_destroy(srv);
}

/* ---- a loop's own timers ------------------------------------------------------------------ */

struct lt_seen {
    atomic_int ticks, once, left_running, stopped_at, start_rc;
    tc_loop_timer *periodic; /* the loop thread's only */
    tc_test_event started;
};

static void lt_tick(tc_loop *loop, void *arg)
{
    (void)loop;
    atomic_fetch_add(&((struct lt_seen *)arg)->ticks, 1);
}

static void lt_once(tc_loop *loop, void *arg)
{
    (void)loop;
    atomic_fetch_add(&((struct lt_seen *)arg)->once, 1);
}

static void lt_forgotten(tc_loop *loop, void *arg)
{
    (void)loop;
    atomic_fetch_add(&((struct lt_seen *)arg)->left_running, 1);
}

/* Posted from the test thread: starts a timer nobody stops (destroy frees it). */
static void lt_start_forgotten(tc_loop *loop, void *arg)
{
    struct lt_seen *s = arg;
    tc_loop_timer *t;
    atomic_store(&s->start_rc, tc_loop_timer_start(loop, 0, 5, lt_forgotten, s, &t));
    tc_test_event_post(&s->started, NULL);
}

static int lt_open(tc_conn *c, void *ctx)
{
    struct lt_seen *s = ctx;
    tc_loop_timer *once;
    int rc = tc_loop_timer_start(tc_conn_loop(c), 20, 20, lt_tick, s, &s->periodic);
    if (rc == 0)
        rc = tc_loop_timer_start(tc_conn_loop(c), 10, 0, lt_once, s, &once);
    return rc;
}

/* "stop": stop the periodic timer, answer with the ticks so far. */
static int lt_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    struct lt_seen *s = ctx;
    (void)msg, (void)len;
    int rc = tc_loop_timer_stop(s->periodic);
    atomic_store(&s->stopped_at, atomic_load(&s->ticks));
    char line[32];
    int n = snprintf(line, sizeof line, "%d", rc);
    ssize_t r = tc_conn_send(c, line, (size_t)n);
    return r < 0 ? (int)r : 0;
}

/* tc_loop_timer_start from a connection's callback: a periodic timer ticks
 * until tc_loop_timer_stop, a one-shot one runs once; from another thread
 * the start is refused (-EPERM) and a posted function starts it instead;
 * a timer never stopped is freed with the server (ASan, valgrind). */
Test(event, loop_timers_periodic_once_and_stopped)
{
    if (!tc_test_mode_enabled(TC_MODE_EVENT))
        cr_skip_test("event mode not selected by TC_TEST_MODES");
    struct lt_seen s;
    memset(&s, 0, sizeof s);
    atomic_store(&s.start_rc, 1);
    tc_test_event_init(&s.started);
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_test_server ts;
    start_line_server(&ts, TC_MODE_EVENT, 1, 0, 0,
                      &(tc_handler){.on_open = lt_open, .on_message = lt_message, .ctx = &s});
    tc_loop_timer *t;
    cr_assert_eq(tc_loop_timer_start(tc_server_loop(ts.srv, 0), 1, 0, lt_once, &s, &t), -EPERM);
    cr_assert_null(t);
    int fd = tc_test_connect_ok(&ts.addr);
    TC_TEST_WAIT_UNTIL(atomic_load(&s.ticks) >= 3, TC_TEST_WAIT_MS);
    cr_assert_geq(atomic_load(&s.ticks), 3, "the periodic timer ticked %d times",
                  atomic_load(&s.ticks));
    cr_assert_eq(atomic_load(&s.once), 1, "the one-shot timer ran %d times", atomic_load(&s.once));
    cr_assert_eq(tc_test_send_all(fd, "stop\n", 5), 0);
    char reply[2];
    cr_assert_eq(tc_test_recv_full(fd, reply, 2), 2);
    cr_assert_eq(memcmp(reply, "0\n", 2), 0, "tc_loop_timer_stop: %.2s", reply);
    tc_test_nap_ms(tc_test_ms(100)); /* a window in which a stopped timer must not tick */
    cr_assert_eq(atomic_load(&s.ticks), atomic_load(&s.stopped_at), "ticked after its stop");
    cr_assert_eq(atomic_load(&s.once), 1);
    cr_assert_eq(tc_loop_post(tc_server_loop(ts.srv, 0), lt_start_forgotten, &s), 0);
    cr_assert_eq(tc_test_event_wait(&s.started, 1, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(atomic_load(&s.start_rc), 0);
    TC_TEST_WAIT_UNTIL(atomic_load(&s.left_running) >= 2, TC_TEST_WAIT_MS);
    cr_assert_geq(atomic_load(&s.left_running), 2);
    close(fd);
    cr_assert_eq(tc_test_server_stop(&ts), 0); /* frees the timer left running */
    tc_test_expect_counts(before, NULL, 0, "event");
    tc_test_event_destroy(&s.started);
}

/* ---- backends: epoll and io_uring ------------------------------------------------ */

/* Refuse io_uring in this process as a sandbox does (Docker's default
 * seccomp profile): io_uring_setup fails with EPERM. */
static void refuse_io_uring(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {(unsigned short)(sizeof f / sizeof f[0]), f};
    cr_assert_eq(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
    cr_assert_eq(syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog),
                 0, "seccomp: %s", strerror(errno));
}

/* Log lines mentioning io_uring, kept in order (the hooks' ctx is the hs). */
static tc_test_event uring_lines;
static void uring_log(tc_server *srv, tc_log_level level, const char *msg, void *ctx)
{
    (void)srv, (void)ctx;
    if (strstr(msg, "io_uring"))
        tc_test_event_postf(&uring_lines, "%d:%s", (int)level, msg);
}

/* The default is epoll; a value outside the enum is refused; modes without
 * event loops of their own accept the choice and keep epoll. */
Test(event, backend_default_bad_value_and_other_modes)
{
    tc_handler h = echo_handler(NULL);
    tc_server_config cfg = ev_config(NULL, 1);
    cfg.hooks.log = NULL;
    tc_server *srv;
    /* The real tc_server_create: TC_TEST_BACKEND must not choose here. */
    cr_assert_eq((tc_server_create)(&srv, &cfg, &h), 0);
    cr_assert_eq(tc_server_backend(srv), TC_BACKEND_EPOLL);
    tc_server_destroy(srv);
    cfg.backend = (tc_backend)42;
    cr_assert_eq((tc_server_create)(&srv, &cfg, &h), TC_EBADCONFIG);
    cr_assert(strstr(tc_last_error_detail(), "backend"), "%s", tc_last_error_detail());
    cfg.backend = TC_BACKEND_IO_URING;
    cfg.mode = TC_MODE_POOL;
    cfg.workers = 2;
    cr_assert_eq((tc_server_create)(&srv, &cfg, &h), 0);
    cr_assert_eq(tc_server_backend(srv), TC_BACKEND_EPOLL, "pool mode waits with epoll");
    tc_server_destroy(srv);
    cr_assert_eq(tc_server_backend(NULL), TC_BACKEND_EPOLL);
}

/* A sandbox refusing io_uring: epoll serves, and the log hook says so once. */
Test(event, io_uring_refused_falls_back_to_epoll_with_one_log_line)
{
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    refuse_io_uring();
    struct hs h;
    hs_init(&h);
    tc_test_event_init(&uring_lines);
    tc_server_config cfg = ev_config(&h, 2);
    cfg.backend = TC_BACKEND_IO_URING;
    cfg.hooks.log = uring_log;
    tc_handler hd = echo_handler(&h);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &hd);
    cr_assert_eq(tc_server_backend(ts.srv), TC_BACKEND_EPOLL);
    tc_codec line = line_codec();
    tc_conn *c = dial(&ts, &line);
    exchange(c, "served on epoll");
    tc_conn_close(c);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    cr_assert_eq(tc_test_event_count(&uring_lines), 1, "one line about io_uring");
    char text[512];
    tc_test_event_log(&uring_lines, text, sizeof text);
    cr_assert(strstr(text, "io_uring unavailable") && strstr(text, "using epoll"), "%s", text);
    cr_assert_eq(text[0], '0' + TC_LOG_WARN, "%s", text);
    /* Asked for with AUTO, the same line is only information. */
    tc_test_event_destroy(&uring_lines);
    tc_test_event_init(&uring_lines);
    cfg.backend = TC_BACKEND_AUTO;
    tc_server *srv;
    cr_assert_eq((tc_server_create)(&srv, &cfg, &hd), 0);
    cr_assert_eq(tc_server_backend(srv), TC_BACKEND_EPOLL);
    tc_server_destroy(srv);
    tc_test_event_log(&uring_lines, text, sizeof text);
    cr_assert_eq(text[0], '0' + TC_LOG_INFO, "%s", text);
    tc_test_expect_counts(before, NULL, 0, "fallback");
    tc_test_event_destroy(&uring_lines);
    hs_destroy(&h);
}

/* Where the kernel offers io_uring, it serves; served three times in a row
 * by two loops (each run's rings are its threads'), with descriptors and
 * threads back where they were; and where it is refused, never silently. */
Test(event, io_uring_serves_again_and_again)
{
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    struct hs h;
    hs_init(&h);
    tc_test_event_init(&uring_lines);
    tc_server_config cfg = ev_config(&h, 2);
    cfg.backend = TC_BACKEND_IO_URING;
    cfg.hooks.log = uring_log;
    tc_handler hd = echo_handler(&h);
    tc_test_server ts;
    cr_assert_eq(tc_test_server_create(&ts, NULL, &cfg, &hd), 0);
    if (tc_server_backend(ts.srv) != TC_BACKEND_IO_URING)
        cr_assert_eq(tc_test_event_count(&uring_lines), 1, "fell back without a word");
    else
        cr_assert_eq(tc_test_event_count(&uring_lines), 0);
    tc_codec line = line_codec();
    for (int run = 0; run < 3; run++) {
        tc_test_server_run(&ts);
        tc_conn *c[4];
        for (int i = 0; i < 4; i++) /* both loops */
            c[i] = dial(&ts, &line);
        for (int i = 0; i < 4; i++)
            exchange(c[i], "again");
        for (int i = 0; i < 4; i++)
            tc_conn_close(c[i]);
        cr_assert_eq(tc_server_shutdown(ts.srv), 0);
        cr_assert_eq(tc_test_server_join(&ts), 0, "run %d", run);
    }
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, "three runs");
    tc_test_event_destroy(&uring_lines);
    hs_destroy(&h);
}
