/* SPDX-License-Identifier: MIT */
/* Outbound connections on an event loop (tc_loop_dial) and reading on
 * demand (tc_conn_pause_reading / resume, tc_conn_end): connect and echo,
 * refused, timed out, reset, dialled from another thread and from an
 * accepted connection's on_open, flow control, the drain, argument checks,
 * descriptors back to their count. Everything on loopback, port 0. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <tcpchan/loop.h>

#include "helpers.h"

TestSuite(loopdial, .timeout = 30);

/* ---- what the callbacks saw ------------------------------------------------------ */

struct seen {
    tc_test_event ev;            /* one post per callback, tags in order */
    tc_test_event closed;        /* on_close only */
    atomic_int opens, closes, msgs, drains;
    atomic_int last_reason;
    atomic_int wrong_thread;     /* a callback outside the conn's loop thread */
    _Atomic(tc_conn *) conn;     /* the outbound connection, once open */
    atomic_int end_after;        /* on_message ends the conn after this many (0: never) */
    atomic_int pause_on_first;   /* on_message pauses the conn at the first message */
    atomic_int flood;            /* on_open sends until past the high-water mark */
    atomic_size_t flooded, peak, at_drain;
    atomic_int data_ok;          /* tc_conn_data was the config's data in on_open */
    void *want_data;
};

static void seen_init(struct seen *s)
{
    memset(s, 0, sizeof *s);
    tc_test_event_init(&s->ev);
    tc_test_event_init(&s->closed);
}

static void seen_destroy(struct seen *s)
{
    tc_test_event_destroy(&s->ev);
    tc_test_event_destroy(&s->closed);
}

static void noop_fn(tc_loop *loop, void *arg)
{
    (void)loop, (void)arg;
}

/* A callback runs in the connection's loop thread: there (only) a loop
 * timer can be started. */
static void check_thread(struct seen *s, tc_conn *c)
{
    tc_loop *lp = tc_conn_loop(c);
    tc_loop_timer *t;
    if (!lp || tc_loop_timer_start(lp, 60000, 0, noop_fn, NULL, &t) != 0)
        atomic_fetch_add(&s->wrong_thread, 1);
    else
        (void)tc_loop_timer_stop(t);
}

#define CHUNK ((size_t)64 * 1024)
static char big[CHUNK];

static int d_open(tc_conn *c, void *ctx)
{
    struct seen *s = ctx;
    check_thread(s, c);
    atomic_store(&s->data_ok, tc_conn_data(c) == s->want_data);
    atomic_store(&s->conn, c);
    atomic_fetch_add(&s->opens, 1);
    if (atomic_load(&s->flood)) {
        size_t peak = 0;
        while (tc_conn_pending(c) <= TC_SEND_HIGH_WATER) {
            ssize_t r = tc_conn_send(c, big, sizeof big);
            if (r < 0)
                return (int)r;
            atomic_fetch_add(&s->flooded, sizeof big);
        }
        peak = tc_conn_pending(c);
        atomic_store(&s->peak, peak);
    } else if (tc_conn_send(c, "hello", 5) != 5) {
        return -EIO;
    }
    tc_test_event_post(&s->ev, "open");
    return 0;
}

static int d_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    struct seen *s = ctx;
    check_thread(s, c);
    int n = atomic_fetch_add(&s->msgs, 1) + 1;
    tc_test_event_postf(&s->ev, "msg:%.*s", (int)len, (const char *)msg);
    if (n == 1 && atomic_load(&s->pause_on_first) && tc_conn_pause_reading(c) != 0)
        return -EIO;
    int end = atomic_load(&s->end_after);
    if (end && n == end && tc_conn_end(c, 0) != 0)
        return -EIO;
    return 0;
}

static void d_close(tc_conn *c, int reason, void *ctx)
{
    struct seen *s = ctx;
    (void)c;
    atomic_store(&s->last_reason, reason);
    atomic_fetch_add(&s->closes, 1);
    tc_test_event_postf(&s->ev, "close:%d", reason);
    tc_test_event_post(&s->closed, NULL);
}

static int d_drain(tc_conn *c, void *ctx)
{
    struct seen *s = ctx;
    atomic_store(&s->at_drain, tc_conn_pending(c));
    atomic_fetch_add(&s->drains, 1);
    ssize_t r = tc_conn_send(c, "end\n", 4);
    return r < 0 ? (int)r : 0;
}

static tc_handler dial_handler(struct seen *s)
{
    tc_handler h = TC_HANDLER_INIT;
    h.on_open = d_open;
    h.on_message = d_message;
    h.on_close = d_close;
    h.on_drain = d_drain;
    h.ctx = s;
    return h;
}

static tc_codec line_codec(void)
{
    tc_codec c;
    cr_assert_eq(tc_codec_delimited(&c, "\n", 1), 0);
    return c;
}

/* ---- servers ----------------------------------------------------------------------- */

static int echo_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    (void)ctx;
    ssize_t r = tc_conn_send(c, msg, len);
    return r < 0 ? (int)r : 0;
}

/* The server whose loop dials: event mode, one loop, lines, an echo handler. */
static void front_start(tc_test_server *ts, const tc_handler *h)
{
    tc_server_config cfg = tc_test_config();
    cfg.mode = TC_MODE_EVENT;
    cfg.workers = 1;
    cfg.codec = line_codec();
    tc_handler echo = TC_HANDLER_INIT;
    echo.on_message = echo_message;
    tc_test_server_start(ts, NULL, &cfg, h ? h : &echo);
}

/* A backend: a threading server echoing bytes. */
static void backend_start(tc_test_server *ts)
{
    tc_server_config cfg = tc_test_config();
    cfg.mode = TC_MODE_THREADING;
    tc_test_server_start(ts, NULL, &cfg, NULL);
}

static tc_stats stats_of(tc_test_server *ts)
{
    tc_stats st;
    cr_assert_eq(tc_server_stats(ts->srv, &st), 0);
    return st;
}

/* A raw listener on 127.0.0.1:0: its descriptor; *addr its address text. */
static int raw_listener(int backlog, char *addr, size_t n)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(fd, backlog), 0);
    socklen_t len = sizeof a;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    snprintf(addr, n, "127.0.0.1:%d", ntohs(a.sin_port));
    return fd;
}

/* Accept one connection within the test's wait: its descriptor. */
static int raw_accept(int lfd)
{
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    cr_assert_eq(poll(&p, 1, TC_TEST_WAIT_MS), 1, "nobody connected");
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    cr_assert_geq(fd, 0);
    struct timeval tv = {.tv_sec = TC_TEST_WAIT_MS / 1000, .tv_usec = 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static void expect_log(struct seen *s, const char *want)
{
    char log[4096];
    tc_test_event_log(&s->ev, log, sizeof log);
    cr_assert_str_eq(log, want);
}

/* One test's servers and what they must leave behind: the front server
 * (event mode, one loop: its loop dials), a backend if asked, the dialled
 * connection's record, and the descriptors, threads and children before. */
struct rig {
    const char *name;
    tc_test_counts before;
    struct seen s;
    tc_test_server front, back;
    int with_back;
    tc_loop *lp; /* the front's loop */
};

/* front_h: the front's handler (NULL: an echo); it may point at g->s. */
static void rig_open(struct rig *g, const char *name, int with_back, const tc_handler *front_h)
{
    g->name = name;
    g->before = tc_test_counts_now(NULL, 0);
    seen_init(&g->s);
    g->with_back = with_back;
    if (with_back)
        backend_start(&g->back);
    front_start(&g->front, front_h);
    g->lp = tc_server_loop(g->front.srv, 0);
    cr_assert_not_null(g->lp);
}

/* Stop the servers (each must end cleanly): nothing may leak. */
static void rig_close(struct rig *g)
{
    cr_assert_eq(tc_test_server_stop(&g->front), 0);
    if (g->with_back)
        cr_assert_eq(tc_test_server_stop(&g->back), 0);
    seen_destroy(&g->s);
    tc_test_expect_counts(g->before, NULL, 0, g->name);
}

/* ---- connect, echo, end ------------------------------------------------------------ */

/* Dialled from this (another) thread: on_open in the loop's thread with the
 * config's data, the backend's echo as a message, tc_conn_end from
 * on_message, on_close(0). It counts as active while open, not as accepted. */
Test(loopdial, connect_echo_and_end)
{
    struct rig g;
    rig_open(&g, "connect_echo_and_end", 1, NULL);
    struct seen *s = &g.s;
    tc_test_server *front = &g.front;
    tc_handler h = dial_handler(s);
    tc_loop_dial_config dc = TC_LOOP_DIAL_CONFIG_INIT;
    dc.data = &s->ev;
    s->want_data = &s->ev;
    atomic_store(&s->end_after, 2);
    tc_loop *lp = g.lp;
    cr_assert_eq(tc_loop_dial(lp, g.back.addr_str, &dc, &h), 0);
    cr_assert_eq(tc_test_event_wait(&s->ev, 2, TC_TEST_WAIT_MS), 0, "no open and echo");
    tc_stats st = stats_of(front);
    cr_assert_eq(st.active, 1, "the outbound connection is live");
    cr_assert_eq(st.accepted, 0, "but not accepted");
    tc_conn *c = atomic_load(&s->conn);
    cr_assert_eq(tc_conn_loop(c), lp);
    cr_assert_eq(tc_conn_pause_reading(c), -EPERM, "not from this thread");
    cr_assert_eq(tc_conn_end(c, 0), -EPERM);
    cr_assert_eq(tc_conn_send(c, "again", 5), 5, "a send from another thread is mail");
    cr_assert_eq(tc_test_event_wait(&s->closed, 1, TC_TEST_WAIT_MS), 0, "never closed");
    expect_log(s, "open,msg:hello,msg:again,close:0");
    cr_assert(atomic_load(&s->data_ok), "tc_conn_data was not the config's data");
    cr_assert_eq(atomic_load(&s->wrong_thread), 0);
    TC_TEST_WAIT_UNTIL(stats_of(front).active == 0, TC_TEST_WAIT_MS);
    cr_assert_eq(stats_of(front).active, 0);
    cr_assert_eq(stats_of(front).peak_active, 1);
    rig_close(&g);
}

/* A unix backend connects at once (no EINPROGRESS); the server's codec is
 * used when the config names none; NULL config. */
Test(loopdial, unix_backend_and_server_codec)
{
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    char dir[64], where[128];
    tc_test_tmpdir(dir, sizeof dir);
    snprintf(where, sizeof where, "unix:%s/b.sock", dir);
    struct seen s;
    seen_init(&s);
    tc_test_server back, front;
    tc_server_config bcfg = tc_test_config();
    bcfg.mode = TC_MODE_THREADING;
    tc_test_server_start(&back, where, &bcfg, NULL);
    front_start(&front, NULL);
    tc_handler h = dial_handler(&s);
    atomic_store(&s.end_after, 1);
    cr_assert_eq(tc_loop_dial(tc_server_loop(front.srv, 0), where, NULL, &h), 0);
    cr_assert_eq(tc_test_event_wait(&s.closed, 1, TC_TEST_WAIT_MS), 0);
    expect_log(&s, "open,msg:hello,close:0");
    cr_assert_eq(tc_test_server_stop(&front), 0);
    cr_assert_eq(tc_test_server_stop(&back), 0);
    tc_test_rmtree(dir);
    seen_destroy(&s);
    tc_test_expect_counts(before, NULL, 0, "unix");
}

static int timer_fired(tc_conn *c, void *ctx)
{
    struct seen *s = ctx;
    tc_test_event_post(&s->ev, "timer");
    return tc_conn_end(c, -ECANCELED);
}

static int timer_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    int rc = d_message(c, msg, len, ctx);
    return rc < 0 ? rc : tc_conn_set_timer(c, 20, 0);
}

/* The outbound connection's own handler has on_timer (the server's has
 * none): armed at the first message, it fires in the loop, and ends the
 * connection with the reason on_close then gets. */
Test(loopdial, timer_on_an_outbound_connection)
{
    struct rig g;
    rig_open(&g, "timer", 1, NULL);
    tc_handler h = dial_handler(&g.s);
    h.on_message = timer_message;
    h.on_timer = timer_fired;
    cr_assert_eq(tc_loop_dial(g.lp, g.back.addr_str, NULL, &h), 0);
    cr_assert_eq(tc_test_event_wait(&g.s.closed, 1, TC_TEST_WAIT_MS), 0);
    char want[64];
    snprintf(want, sizeof want, "open,msg:hello,timer,close:%d", -ECANCELED);
    expect_log(&g.s, want);
    cr_assert_eq(stats_of(&g.front).handler_errors, 0);
    rig_close(&g);
}

/* ---- failures: on_close once, never on_open ------------------------------------------ */

static void expect_failure(tc_test_server *front, const char *addr, int connect_ms, int want)
{
    struct seen s;
    seen_init(&s);
    tc_handler h = dial_handler(&s);
    tc_loop_dial_config dc = TC_LOOP_DIAL_CONFIG_INIT;
    dc.connect_timeout_ms = connect_ms;
    dc.data = &s;
    int64_t t0 = tc_test_now_ms();
    cr_assert_eq(tc_loop_dial(tc_server_loop(front->srv, 0), addr, &dc, &h), 0);
    cr_assert_eq(tc_test_event_wait(&s.closed, 1, TC_TEST_WAIT_MS), 0, "%s: no on_close", addr);
    int64_t took = tc_test_now_ms() - t0;
    char log[64];
    snprintf(log, sizeof log, "close:%d", want);
    expect_log(&s, log);
    if (connect_ms)
        cr_assert_geq(took, connect_ms, "timed out early: %lld ms", (long long)took);
    cr_assert_eq(atomic_load(&s.opens), 0);
    cr_assert_eq(atomic_load(&s.closes), 1);
    seen_destroy(&s);
}

Test(loopdial, refused_tcp_and_unix)
{
    struct rig g;
    rig_open(&g, "refused", 0, NULL);
    tc_test_server *front = &g.front;
    char addr[64];
    int lfd = raw_listener(1, addr, sizeof addr);
    close(lfd); /* the port is free again: nobody listens */
    expect_failure(front, addr, 0, -ECONNREFUSED);
    char dir[64], where[128];
    tc_test_tmpdir(dir, sizeof dir);
    snprintf(where, sizeof where, "unix:%s/none.sock", dir);
    expect_failure(front, where, 0, -ENOENT);
    cr_assert_eq(stats_of(front).handler_errors, 0, "a failed dial is not a handler error");
    TC_TEST_WAIT_UNTIL(stats_of(front).active == 0, TC_TEST_WAIT_MS); /* after on_close */
    cr_assert_eq(stats_of(front).active, 0);
    tc_test_rmtree(dir);
    rig_close(&g);
}

/* A listener with a backlog of 0 and one connection it never accepts: the
 * next SYN is dropped, so the connect hangs until its timeout. */
Test(loopdial, connect_timeout)
{
    struct rig g;
    rig_open(&g, "timeout", 0, NULL);
    char addr[64];
    int lfd = raw_listener(0, addr, sizeof addr);
    tc_addr a;
    cr_assert_eq(tc_addr_parse(&a, addr), 0);
    int filler = tc_test_connect_ok(&a);
    expect_failure(&g.front, addr, 200, -ETIMEDOUT);
    close(filler);
    close(lfd);
    rig_close(&g);
}

/* The backend resets the connection after on_open: on_close(-ECONNRESET). */
Test(loopdial, reset_by_the_backend)
{
    struct rig g;
    rig_open(&g, "reset", 0, NULL);
    char addr[64];
    int lfd = raw_listener(4, addr, sizeof addr);
    struct seen *s = &g.s;
    tc_handler h = dial_handler(s);
    cr_assert_eq(tc_loop_dial(g.lp, addr, NULL, &h), 0);
    int fd = raw_accept(lfd);
    cr_assert_eq(tc_test_event_wait(&s->ev, 1, TC_TEST_WAIT_MS), 0, "no on_open");
    char b[6];
    cr_assert_eq(tc_test_recv_full(fd, b, 6), 6);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(fd); /* RST */
    cr_assert_eq(tc_test_event_wait(&s->closed, 1, TC_TEST_WAIT_MS), 0);
    char want[32];
    snprintf(want, sizeof want, "open,close:%d", -ECONNRESET);
    expect_log(s, want);
    close(lfd);
    rig_close(&g);
}

/* ---- from an accepted connection: a relay ------------------------------------------- */

/* Each client's on_open dials the backend from the loop thread, with the
 * client as the backend connection's data; lines go client -> backend ->
 * client; the client leaving ends the backend connection (tc_conn_end). */
struct relay {
    const char *backend;
    atomic_int backend_closes, client_closes, dial_rc;
    tc_handler bh;
};

struct pair {
    tc_conn *client, *backend;
    struct relay *r;
};

static int rb_open(tc_conn *c, void *ctx)
{
    (void)ctx;
    struct pair *p = tc_conn_data(c);
    p->backend = c;
    if (p->client)
        (void)tc_conn_resume_reading(p->client);
    return 0;
}

static int rb_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    (void)ctx;
    struct pair *p = tc_conn_data(c);
    if (!p->client)
        return 0;
    ssize_t r = tc_conn_send(p->client, msg, len);
    return r < 0 ? (int)r : 0;
}

static void rb_close(tc_conn *c, int reason, void *ctx)
{
    struct relay *r = ctx;
    (void)reason;
    struct pair *p = tc_conn_data(c);
    atomic_fetch_add(&r->backend_closes, 1);
    p->backend = NULL;
    if (p->client)
        (void)tc_conn_end(p->client, 0);
    else
        free(p);
}

static int rc_open(tc_conn *c, void *ctx)
{
    struct relay *r = ctx;
    struct pair *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->client = c;
    p->r = r;
    tc_conn_set_data(c, p);
    tc_loop_dial_config dc = TC_LOOP_DIAL_CONFIG_INIT;
    dc.data = p;
    int rc = tc_conn_pause_reading(c); /* until the backend is there */
    if (rc == 0)
        rc = tc_loop_dial(tc_conn_loop(c), r->backend, &dc, &r->bh);
    atomic_store(&r->dial_rc, rc);
    if (rc < 0)
        free(p);
    return rc;
}

static int rc_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    (void)ctx;
    struct pair *p = tc_conn_data(c);
    if (!p->backend)
        return -EIO; /* read while paused */
    ssize_t r = tc_conn_send(p->backend, msg, len);
    return r < 0 ? (int)r : 0;
}

static void rc_close(tc_conn *c, int reason, void *ctx)
{
    struct relay *r = ctx;
    (void)reason;
    struct pair *p = tc_conn_data(c);
    atomic_fetch_add(&r->client_closes, 1);
    p->client = NULL;
    if (p->backend)
        (void)tc_conn_end(p->backend, 0);
    else
        free(p); /* the dial's on_close frees it otherwise */
}

Test(loopdial, relay_dialled_from_on_open)
{
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_test_server back, front;
    backend_start(&back);
    struct relay r;
    memset(&r, 0, sizeof r);
    r.backend = back.addr_str;
    r.bh = (tc_handler)TC_HANDLER_INIT;
    r.bh.on_open = rb_open;
    r.bh.on_message = rb_message;
    r.bh.on_close = rb_close;
    r.bh.ctx = &r;
    tc_handler fh = TC_HANDLER_INIT;
    fh.on_open = rc_open;
    fh.on_message = rc_message;
    fh.on_close = rc_close;
    fh.ctx = &r;
    front_start(&front, &fh);
    enum { CLIENTS = 8 };
    int fd[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        fd[i] = tc_test_connect_ok(&front.addr);
        char line[32];
        int n = snprintf(line, sizeof line, "line %d\n", i);
        cr_assert_eq(tc_test_send_all(fd[i], line, (size_t)n), 0); /* before the backend is there */
    }
    for (int i = 0; i < CLIENTS; i++) {
        char want[32], got[32];
        int n = snprintf(want, sizeof want, "line %d\n", i);
        cr_assert_eq(tc_test_recv_full(fd[i], got, (size_t)n), n, "client %d: no echo", i);
        cr_assert_eq(memcmp(got, want, (size_t)n), 0);
    }
    cr_assert_eq(atomic_load(&r.dial_rc), 0);
    cr_assert_eq(stats_of(&front).active, 2 * CLIENTS, "clients and backends are live");
    for (int i = 0; i < CLIENTS; i++)
        close(fd[i]);
    TC_TEST_WAIT_UNTIL(atomic_load(&r.backend_closes) == CLIENTS, TC_TEST_WAIT_MS);
    cr_assert_eq(atomic_load(&r.backend_closes), CLIENTS, "the pairs closed together");
    cr_assert_eq(atomic_load(&r.client_closes), CLIENTS);
    TC_TEST_WAIT_UNTIL(stats_of(&back).active == 0, TC_TEST_WAIT_MS);
    cr_assert_eq(stats_of(&back).active, 0, "the backend saw them go");
    cr_assert_eq(stats_of(&front).handler_errors, 0);
    cr_assert_eq(tc_test_server_stop(&front), 0);
    cr_assert_eq(tc_test_server_stop(&back), 0);
    tc_test_expect_counts(before, NULL, 0, "relay");
}

/* ---- flow control, pausing -------------------------------------------------------------- */

/* An outbound connection to a peer that does not read: on_open queues past
 * the high-water mark, on_drain runs once the peer has read it down, and
 * every byte arrives. */
Test(loopdial, flow_control_on_an_outbound_connection, .timeout = 60)
{
    struct rig g;
    rig_open(&g, "flow control", 0, NULL);
    char addr[64];
    int lfd = raw_listener(4, addr, sizeof addr);
    struct seen *s = &g.s;
    atomic_store(&s->flood, 1);
    tc_handler h = dial_handler(s);
    tc_codec raw = TC_CODEC_INIT;
    tc_loop_dial_config dc = TC_LOOP_DIAL_CONFIG_INIT;
    dc.codec = &raw; /* the bytes as sent */
    cr_assert_eq(tc_loop_dial(g.lp, addr, &dc, &h), 0);
    int fd = raw_accept(lfd);
    cr_assert_eq(tc_test_event_wait(&s->ev, 1, TC_TEST_WAIT_MS), 0, "no on_open");
    cr_assert_gt(atomic_load(&s->peak), TC_SEND_HIGH_WATER);
    cr_assert_eq(atomic_load(&s->drains), 0, "on_drain before the peer read");
    size_t total = atomic_load(&s->flooded), got = 0;
    static char buf[CHUNK];
    while (got < total) {
        size_t want = total - got < sizeof buf ? total - got : sizeof buf;
        ssize_t r = tc_test_recv_full(fd, buf, want);
        cr_assert_eq(r, (ssize_t)want, "%zd after %zu of %zu bytes", r, got, total);
        got += want;
    }
    cr_assert_eq(tc_test_recv_full(fd, buf, 4), 4, "nothing from on_drain");
    cr_assert_eq(memcmp(buf, "end\n", 4), 0);
    cr_assert_eq(atomic_load(&s->drains), 1);
    cr_assert_lt(atomic_load(&s->at_drain), TC_SEND_LOW_WATER);
    close(fd); /* its end of stream closes ours: reason 0 */
    cr_assert_eq(tc_test_event_wait(&s->closed, 1, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(atomic_load(&s->last_reason), 0);
    close(lfd);
    rig_close(&g);
}

static void resume_fn(tc_loop *loop, void *arg)
{
    (void)loop;
    struct seen *s = arg;
    (void)tc_conn_resume_reading(atomic_load(&s->conn));
}

/* Paused in on_message at the first of two lines that came in one segment:
 * the second waits in the buffer, more input waits in the kernel, until a
 * resume posted to the loop; then both come, in order, and the end of the
 * stream after them. */
Test(loopdial, pause_holds_buffered_frames_until_resume)
{
    struct rig g;
    rig_open(&g, "pause", 0, NULL);
    char addr[64];
    int lfd = raw_listener(4, addr, sizeof addr);
    struct seen *s = &g.s;
    atomic_store(&s->pause_on_first, 1);
    tc_handler h = dial_handler(s);
    cr_assert_eq(tc_loop_dial(g.lp, addr, NULL, &h), 0);
    int fd = raw_accept(lfd);
    cr_assert_eq(tc_test_event_wait(&s->ev, 1, TC_TEST_WAIT_MS), 0, "no on_open");
    cr_assert_eq(tc_test_send_all(fd, "a\nb\n", 4), 0);
    cr_assert_eq(tc_test_event_wait(&s->ev, 2, TC_TEST_WAIT_MS), 0, "no first message");
    cr_assert_eq(tc_test_send_all(fd, "c\n", 2), 0);
    /* The loop does not take "c\n": it stays in the socket's receive queue. */
    int sfd = tc_conn_fd(atomic_load(&s->conn)), queued = 0;
    TC_TEST_WAIT_UNTIL(ioctl(sfd, FIONREAD, &queued) == 0 && queued == 2, TC_TEST_WAIT_MS);
    cr_assert_eq(queued, 2, "the paused connection was read");
    shutdown(fd, SHUT_WR);
    expect_log(s, "open,msg:a");
    cr_assert_eq(tc_loop_post(g.lp, resume_fn, s), 0);
    cr_assert_eq(tc_test_event_wait(&s->closed, 1, TC_TEST_WAIT_MS), 0);
    expect_log(s, "open,msg:a,msg:b,msg:c,close:0");
    close(fd);
    close(lfd);
    rig_close(&g);
}

/* ---- the peer's end of stream ------------------------------------------------------------ */

static int eof_keep(tc_conn *c, void *ctx)
{
    struct seen *s = ctx;
    tc_test_event_post(&s->ev, "eof");
    if (tc_conn_send(c, "bye", 3) != 3 || tc_conn_end(c, 0) != 0)
        return -EIO;
    return 1;
}

/* on_eof keeps a connection open for sending after the peer's half-close:
 * every message first, then on_eof, its reply, then on_close(0). Without
 * on_eof the connection closes at the end of the stream. */
Test(loopdial, on_eof_keeps_the_connection_for_sending)
{
    struct rig g;
    tc_handler h = TC_HANDLER_INIT;
    h.on_message = d_message;
    h.on_eof = eof_keep;
    h.on_close = d_close;
    h.ctx = &g.s;
    rig_open(&g, "on_eof", 0, &h);
    int fd = tc_test_connect_ok(&g.front.addr);
    cr_assert_eq(tc_test_send_all(fd, "a\nb\n", 4), 0);
    cr_assert_eq(shutdown(fd, SHUT_WR), 0);
    char got[4];
    cr_assert_eq(tc_test_recv_full(fd, got, 4), 4, "no reply after the half-close");
    cr_assert_eq(memcmp(got, "bye\n", 4), 0);
    cr_assert_eq(tc_test_recv_eof(fd), 0);
    cr_assert_eq(tc_test_event_wait(&g.s.closed, 1, TC_TEST_WAIT_MS), 0);
    expect_log(&g.s, "msg:a,msg:b,eof,close:0");
    close(fd);
    rig_close(&g);
}

/* ---- the drain ------------------------------------------------------------------------ */

/* A shutdown with one outbound connection open and one still connecting:
 * both end with TC_ESHUTDOWN, serve_forever returns, nothing leaks; a dial
 * once the loops have ended is refused. */
Test(loopdial, drain_ends_outbound_connections)
{
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_test_server back, front;
    backend_start(&back);
    front_start(&front, NULL);
    char addr[64];
    int lfd = raw_listener(0, addr, sizeof addr);
    tc_addr a;
    cr_assert_eq(tc_addr_parse(&a, addr), 0);
    int filler = tc_test_connect_ok(&a);
    struct seen open1, pending;
    seen_init(&open1);
    seen_init(&pending);
    tc_handler h1 = dial_handler(&open1), h2 = dial_handler(&pending);
    tc_loop *lp = tc_server_loop(front.srv, 0);
    cr_assert_eq(tc_loop_dial(lp, back.addr_str, NULL, &h1), 0);
    cr_assert_eq(tc_loop_dial(lp, addr, NULL, &h2), 0);
    cr_assert_eq(tc_test_event_wait(&open1.ev, 2, TC_TEST_WAIT_MS), 0, "no echo");
    TC_TEST_WAIT_UNTIL(stats_of(&front).active == 2, TC_TEST_WAIT_MS);
    cr_assert_eq(stats_of(&front).active, 2);
    cr_assert_eq(tc_server_shutdown(front.srv), 0);
    cr_assert_eq(tc_test_server_join(&front), 0);
    char want[64];
    snprintf(want, sizeof want, "open,msg:hello,close:%d", TC_ESHUTDOWN);
    expect_log(&open1, want);
    snprintf(want, sizeof want, "close:%d", TC_ESHUTDOWN);
    expect_log(&pending, want);
    cr_assert_eq(stats_of(&front).active, 0);
    cr_assert_eq(tc_loop_dial(lp, back.addr_str, NULL, &h1), TC_ESHUTDOWN);
    tc_server_destroy(front.srv);
    cr_assert_eq(tc_test_server_stop(&back), 0);
    close(filler);
    close(lfd);
    seen_destroy(&open1);
    seen_destroy(&pending);
    tc_test_expect_counts(before, NULL, 0, "drain");
}

/* A dial posted to a server that is destroyed without serving: no callback, no leak. */
Test(loopdial, dial_before_serving_then_destroy)
{
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    struct seen s;
    seen_init(&s);
    tc_server_config cfg = tc_test_config();
    cfg.mode = TC_MODE_EVENT;
    cfg.workers = 1;
    tc_handler echo = TC_HANDLER_INIT;
    echo.on_message = echo_message;
    tc_server *srv;
    cr_assert_eq(tc_server_create(&srv, &cfg, &echo), 0);
    tc_handler h = dial_handler(&s);
    cr_assert_eq(tc_loop_dial(tc_server_loop(srv, 0), "127.0.0.1:9", NULL, &h), 0);
    tc_server_destroy(srv);
    cr_assert_eq(atomic_load(&s.closes) + atomic_load(&s.opens), 0);
    seen_destroy(&s);
    tc_test_expect_counts(before, NULL, 0, "destroy");
}

/* ---- arguments ------------------------------------------------------------------------------ */

Test(loopdial, arguments_and_modes)
{
    struct seen s;
    seen_init(&s);
    tc_test_server front;
    front_start(&front, NULL);
    tc_loop *lp = tc_server_loop(front.srv, 0);
    tc_handler h = dial_handler(&s);
    cr_assert_eq(tc_loop_dial(NULL, "127.0.0.1:1", NULL, &h), -EINVAL);
    cr_assert_eq(tc_loop_dial(lp, NULL, NULL, &h), -EINVAL);
    cr_assert_eq(tc_loop_dial(lp, "localhost:80", NULL, &h), TC_EBADADDR, "names: not on a loop");
    cr_assert_eq(tc_loop_dial(lp, "127.0.0.1", NULL, &h), TC_EBADADDR);
    cr_assert_eq(tc_loop_dial(lp, "udp:127.0.0.1:9", NULL, &h), -ENOTSUP);
    tc_loop_dial_config dc;
    tc_loop_dial_config_init(&dc);
    cr_assert_eq(dc.connect_timeout_ms, 0);
    cr_assert_null(dc.codec);
    dc.connect_timeout_ms = -1;
    cr_assert_eq(tc_loop_dial(lp, "127.0.0.1:1", &dc, &h), -EINVAL);
    tc_codec bad;
    memset(&bad, 0xff, sizeof bad);
    dc.connect_timeout_ms = 0;
    dc.codec = &bad;
    cr_assert_eq(tc_loop_dial(lp, "127.0.0.1:1", &dc, &h), -EINVAL);
    tc_handler stream = tc_test_echo_handler();
    cr_assert_eq(tc_loop_dial(lp, "127.0.0.1:1", NULL, &stream), -EINVAL);
    cr_assert_eq(tc_conn_pause_reading(NULL), -EINVAL);
    cr_assert_eq(tc_conn_resume_reading(NULL), -EINVAL);
    cr_assert_eq(tc_conn_end(NULL, 0), -EINVAL);
    cr_assert_eq(tc_test_server_stop(&front), 0);
    cr_assert_eq(atomic_load(&s.closes) + atomic_load(&s.opens), 0);

    /* Pool mode's loop does not dial, nor pause its connections. */
    tc_server_config cfg = tc_test_config();
    cfg.mode = TC_MODE_POOL;
    cfg.workers = 2;
    tc_handler echo = TC_HANDLER_INIT;
    echo.on_message = echo_message;
    tc_server *pool;
    cr_assert_eq(tc_server_create(&pool, &cfg, &echo), 0);
    cr_assert_eq(tc_loop_dial(tc_server_loop(pool, 0), "127.0.0.1:1", NULL, &h), -ENOTSUP);
    tc_server_destroy(pool);
    /* A blocking dial's channel has no loop. */
    tc_test_server back;
    backend_start(&back);
    tc_conn *c;
    cr_assert_eq(tc_dial(&c, back.addr_str, NULL), 0);
    cr_assert_eq(tc_conn_pause_reading(c), -ENOTSUP);
    cr_assert_eq(tc_conn_end(c, 0), -ENOTSUP);
    tc_conn_close(c);
    cr_assert_eq(tc_test_server_stop(&back), 0);
    seen_destroy(&s);
}
