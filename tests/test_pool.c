/* SPDX-License-Identifier: MIT */
/* Pool mode (lib/mode_pool.c on lib/mode_event.c's loop, issue 13): a
 * thousand concurrent connections on four workers, idle clients that cost
 * no worker, per-connection order under a pipelining client, a blocking
 * handler that stalls nobody while workers are left, the drain, the idle
 * timeout, max_conns, and a timer and a half-close asked for from a worker.
 * Servers listen on 127.0.0.1:0; clients are raw sockets. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

TestSuite(pool, .timeout = 60);

#define QUIET_MS 150 /* the window in which something must NOT happen (scaled) */

/* ---- what the handlers saw ----------------------------------------------------- */

struct ps {
    atomic_int setups, finishes, opens, msgs, timers;
    atomic_int live, peak_live;       /* between setup and finish, and the most at once */
    atomic_int in_msg, peak_msg;      /* on_message calls running, and the most at once */
    atomic_int disorder;              /* two messages of a connection in flight, or out of order */
    atomic_int slow_in, slow_done;    /* handlers inside their block, and out of it */
    atomic_int slow_ms;               /* the block of "slow" and "slowsend" (0: 200 ms) */
    atomic_int late_send;             /* what the send after "slowsend"'s block returned */
    atomic_int timer_rc, half_rc;     /* tc_conn_set_timer, tc_conn_shutdown_write from a worker */
    atomic_int msg_on_loop, timer_off_loop; /* callbacks in the wrong thread */
    atomic_int errors;
    pthread_mutex_t mu;
    pthread_t loop;                   /* the thread that ran on_open */
    int have_loop;
    tc_test_event closed;             /* on_close, tag: the reason's name */
    tc_test_event slept;              /* a handler entered its block */
    tc_test_event held;               /* "hold" entered: its connection is in held_conn */
    _Atomic(tc_conn *) held_conn;
    atomic_int release;               /* "hold" may answer */
};

/* Per connection: the next number "n<k>" must carry, and messages in flight. */
struct pc {
    atomic_int in_flight;
    long next;
};

static void ps_init(struct ps *p)
{
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    tc_test_event_init(&p->closed);
    tc_test_event_init(&p->slept);
    tc_test_event_init(&p->held);
}

static void ps_destroy(struct ps *p)
{
    tc_test_event_destroy(&p->closed);
    tc_test_event_destroy(&p->slept);
    tc_test_event_destroy(&p->held);
    pthread_mutex_destroy(&p->mu);
}

static void raise_max(atomic_int *peak, int v)
{
    int m = atomic_load(peak);
    while (v > m && !atomic_compare_exchange_weak(peak, &m, v))
        ;
}

static int on_loop(struct ps *p)
{
    pthread_mutex_lock(&p->mu);
    int yes = p->have_loop && pthread_equal(p->loop, pthread_self());
    pthread_mutex_unlock(&p->mu);
    return yes;
}

static int p_setup(tc_conn *c, void *ctx)
{
    struct ps *p = ctx;
    struct pc *pc = calloc(1, sizeof *pc);
    if (!pc)
        return -ENOMEM;
    tc_conn_set_data(c, pc);
    atomic_fetch_add(&p->setups, 1);
    raise_max(&p->peak_live, atomic_fetch_add(&p->live, 1) + 1);
    return 0;
}

static int p_finish(tc_conn *c, void *ctx)
{
    struct ps *p = ctx;
    free(tc_conn_data(c));
    atomic_fetch_sub(&p->live, 1);
    atomic_fetch_add(&p->finishes, 1);
    return 0;
}

static int p_open(tc_conn *c, void *ctx)
{
    struct ps *p = ctx;
    (void)c;
    pthread_mutex_lock(&p->mu);
    p->loop = pthread_self();
    p->have_loop = 1;
    pthread_mutex_unlock(&p->mu);
    atomic_fetch_add(&p->opens, 1);
    return 0;
}

static void p_close(tc_conn *c, int reason, void *ctx)
{
    struct ps *p = ctx;
    (void)c;
    tc_test_event_post(&p->closed, tc_err_name(reason));
}

/* One frame (the line codec adds the newline). */
static int reply(tc_conn *c, const char *text)
{
    ssize_t n = tc_conn_send(c, text, strlen(text));
    return n < 0 ? (int)n : 0;
}

/* Lines: "slow" blocks, then answers "slow"; "slowsend" blocks, then sends
 * "late" and records the result (returning 0 whatever it was); "hold"
 * publishes its connection, waits (bounded) for release, then answers
 * "held"; "timer" arms
 * the timer (20 ms) and answers "armed"; "half" answers "bye" and
 * half-closes; "n<k>" checks that k follows the connection's last number;
 * anything else is echoed. */
static int p_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    struct ps *p = ctx;
    struct pc *pc = tc_conn_data(c);
    if (atomic_fetch_add(&pc->in_flight, 1) != 0)
        atomic_fetch_add(&p->disorder, 1);
    raise_max(&p->peak_msg, atomic_fetch_add(&p->in_msg, 1) + 1);
    atomic_fetch_add(&p->msgs, 1);
    if (on_loop(p))
        atomic_fetch_add(&p->msg_on_loop, 1);
    char line[64];
    size_t n = len < sizeof line - 1 ? len : sizeof line - 1;
    memcpy(line, msg, n);
    line[n] = '\0';
    int rc;
    int ms = atomic_load(&p->slow_ms) ? atomic_load(&p->slow_ms) : 200;
    if (!strcmp(line, "slow") || !strcmp(line, "slowsend")) {
        atomic_fetch_add(&p->slow_in, 1);
        tc_test_event_post(&p->slept, NULL);
        tc_test_nap_ms(ms); /* the handler's own block */
        atomic_fetch_sub(&p->slow_in, 1);
        atomic_fetch_add(&p->slow_done, 1);
        if (!strcmp(line, "slow")) {
            rc = reply(c, "slow");
        } else {
            atomic_store(&p->late_send, (int)tc_conn_send(c, "late", 4));
            rc = 0;
        }
    } else if (!strcmp(line, "hold")) {
        atomic_store(&p->held_conn, c);
        tc_test_event_post(&p->held, NULL);
        TC_TEST_WAIT_UNTIL(atomic_load(&p->release), TC_TEST_WAIT_MS);
        rc = reply(c, "held");
    } else if (!strcmp(line, "timer")) {
        atomic_store(&p->timer_rc, tc_conn_set_timer(c, 20, 0));
        rc = reply(c, "armed");
    } else if (!strcmp(line, "half")) {
        rc = reply(c, "bye");
        atomic_store(&p->half_rc, tc_conn_shutdown_write(c));
    } else {
        if (line[0] == 'n') {
            long k = strtol(line + 1, NULL, 10);
            if (k != pc->next)
                atomic_fetch_add(&p->disorder, 1);
            pc->next = k + 1;
        }
        ssize_t w = tc_conn_send(c, msg, len);
        rc = w < 0 ? (int)w : 0;
    }
    atomic_fetch_sub(&p->in_msg, 1);
    atomic_fetch_sub(&pc->in_flight, 1);
    return rc;
}

static int p_timer(tc_conn *c, void *ctx)
{
    struct ps *p = ctx;
    if (!on_loop(p))
        atomic_fetch_add(&p->timer_off_loop, 1);
    atomic_fetch_add(&p->timers, 1);
    return reply(c, "tick");
}

static void p_error(tc_server *srv, tc_conn *conn, int err, void *ctx)
{
    struct ps *p = ctx;
    (void)srv, (void)conn, (void)err;
    atomic_fetch_add(&p->errors, 1);
}

/* The stream style: echo line by line. */
static int p_handle(tc_conn *c, void *ctx)
{
    struct ps *p = ctx;
    for (;;) {
        const char *l;
        size_t n;
        int rc = tc_conn_read_line(c, 64, &l, &n);
        if (rc == TC_EOF)
            return 0;
        if (rc < 0)
            return rc;
        atomic_fetch_add(&p->msgs, 1);
        ssize_t w;
        if ((w = tc_conn_write(c, l, n)) < 0 || (w = tc_conn_write(c, "\n", 1)) < 0 ||
            (w = tc_conn_flush(c)) < 0)
            return (int)w;
    }
}

static tc_server_config p_config(struct ps *p, int workers)
{
    tc_server_config cfg = tc_test_config();
    cfg.mode = TC_MODE_POOL;
    cfg.workers = workers;
    cr_assert_eq(tc_codec_delimited(&cfg.codec, "\n", 1), 0);
    cfg.hooks.handle_error = p_error;
    cfg.hooks.ctx = p;
    return cfg;
}

static tc_handler p_handler(struct ps *p, int stream)
{
    tc_handler h = TC_HANDLER_INIT;
    h.setup = p_setup;
    h.finish = p_finish;
    if (stream) {
        h.handle = p_handle;
    } else {
        h.on_open = p_open;
        h.on_message = p_message;
        h.on_close = p_close;
        h.on_timer = p_timer;
    }
    h.ctx = p;
    return h;
}

#define SKIP_UNLESS_POOL()                                                                         \
    do {                                                                                           \
        if (!tc_test_mode_enabled(TC_MODE_POOL))                                                   \
            cr_skip_test("pool mode not selected by TC_TEST_MODES");                               \
    } while (0)

/* Wait until the server has no live connection. */
static void wait_idle(tc_test_server *ts)
{
    tc_stats st;
    TC_TEST_WAIT_UNTIL((tc_server_stats(ts->srv, &st), st.active == 0), TC_TEST_WAIT_MS);
    cr_assert_eq(st.active, 0, "%u connections still live", st.active);
}

/* ---- raw clients ------------------------------------------------------------------- */

static void cl_send(int fd, const char *text)
{
    int rc = tc_test_send_all(fd, text, strlen(text));
    cr_assert_eq(rc, 0, "send: %s", strerror(-rc));
}

/* Expect exactly the bytes of want next. */
static void cl_expect(int fd, const char *want)
{
    char got[256];
    size_t n = strlen(want);
    cr_assert_lt(n, sizeof got);
    ssize_t r = tc_test_recv_full(fd, got, n);
    cr_assert_eq(r, (ssize_t)n, "expected \"%s\": got %zd bytes", want, r);
    cr_assert_eq(memcmp(got, want, n), 0, "expected \"%s\", got \"%.*s\"", want, (int)n, got);
}

/* Whether fd becomes readable (data or end of stream) within ms. */
static int cl_readable(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;
    while ((r = poll(&p, 1, ms)) < 0 && errno == EINTR)
        ;
    return r > 0;
}

/* One line's round trip on fd, in ms. */
static int64_t cl_rtt(int fd, const char *line)
{
    char out[64];
    snprintf(out, sizeof out, "%s\n", line);
    int64_t t0 = tc_test_now_ms();
    cl_send(fd, out);
    cl_expect(fd, out);
    return tc_test_now_ms() - t0;
}

/* Raise the soft descriptor limit to at least want (or skip). */
static void need_fds(rlim_t want)
{
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && want > rl.rlim_max ? rl.rlim_max : want;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
        if (rl.rlim_cur < want)
            cr_skip_test("RLIMIT_NOFILE is %llu, below %llu", (unsigned long long)rl.rlim_cur,
                         (unsigned long long)want);
    }
}

/* ---- many connections, few workers ---------------------------------------------------- */

/* Four workers, a thousand clients connected at once, each sending one line
 * and keeping its connection until every client is answered: all are
 * answered within 10 s, the thousand are live together, and the server
 * runs five threads for them (the loop and the workers). */
Test(pool, thousand_connections_echo_once)
{
    SKIP_UNLESS_POOL();
    enum { N = 1000, WORKERS = 4 };
    need_fds(2 * N + 256);
    struct ps p;
    ps_init(&p);
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = p_config(&p, WORKERS);
    tc_handler h = p_handler(&p, 0);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    static int fd[N];
    static size_t got[N];
    static char want[N][16];
    int64_t t0 = tc_test_now_ms();
    for (int i = 0; i < N; i++) {
        fd[i] = tc_test_connect(&ts.addr);
        if (fd[i] < 0)
            cr_assert_fail("connect %d: %s", i, strerror(-fd[i]));
        got[i] = 0;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    cr_assert_geq(ep, 0);
    for (int i = 0; i < N; i++) {
        snprintf(want[i], sizeof want[i], "c%d\n", i);
        if (tc_test_send_all(fd[i], want[i], strlen(want[i])) != 0)
            cr_assert_fail("send %d: %s", i, strerror(errno));
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd[i], &ev) != 0)
            cr_assert_fail("epoll_ctl: %s", strerror(errno));
    }
    int left = N, threads = 0;
    const int64_t end = t0 + tc_test_ms(10000);
    struct epoll_event evs[128];
    while (left > 0 && tc_test_now_ms() < end) {
        int k = epoll_wait(ep, evs, 128, (int)(end - tc_test_now_ms()));
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            cr_assert_fail("epoll_wait: %s", strerror(errno));
        if (threads == 0)
            threads = tc_test_count_threads(); /* every connection is live here */
        for (int j = 0; j < k; j++) {
            int i = (int)evs[j].data.u32;
            char buf[16];
            size_t n = strlen(want[i]);
            ssize_t r = recv(fd[i], buf, n - got[i], 0);
            if (r < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (r <= 0)
                cr_assert_fail("client %d: %s", i, r == 0 ? "end of stream" : strerror(errno));
            if (memcmp(buf, want[i] + got[i], (size_t)r) != 0)
                cr_assert_fail("client %d: wrong reply", i);
            got[i] += (size_t)r;
            if (got[i] == n) {
                left--;
                (void)epoll_ctl(ep, EPOLL_CTL_DEL, fd[i], NULL);
            }
        }
    }
    int64_t took = tc_test_now_ms() - t0;
    cr_assert_eq(left, 0, "%d of %d clients not answered in %lld ms", left, N, (long long)took);
    cr_assert_leq(took, tc_test_ms(10000), "took %lld ms", (long long)took);
    tc_stats st;
    cr_assert_eq(tc_server_stats(ts.srv, &st), 0);
    cr_assert_eq(st.accepted, N);
    cr_assert_eq(st.peak_active, N, "%u connections live at once, of %d", st.peak_active, N);
    cr_assert_eq(threads, before.threads + 1 + WORKERS, "%d threads for %d connections",
                 threads - before.threads, N);
    cr_assert_leq(atomic_load(&p.peak_msg), WORKERS);
    close(ep);
    for (int i = 0; i < N; i++)
        close(fd[i]);
    wait_idle(&ts);
    cr_assert_eq(atomic_load(&p.msgs), N);
    cr_assert_eq(atomic_load(&p.finishes), N);
    cr_assert_eq(atomic_load(&p.errors), 0);
    cr_assert_eq(atomic_load(&p.msg_on_loop), 0, "on_message ran in the loop thread");
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, "pool");
    ps_destroy(&p);
}

/* Slowloris: 64 clients connect and say nothing. They hold no worker, so
 * a fresh client's round trip takes no longer than 100 ms (scaled), in
 * either handler style (stream: a connection gets its worker at its first
 * bytes). */
ParameterizedTestParameters(pool, idle_clients_do_not_delay_a_fresh_one)
{
    static int styles[] = {0, 1};
    return cr_make_param_array(int, styles, 2);
}

ParameterizedTest(int *stream, pool, idle_clients_do_not_delay_a_fresh_one)
{
    SKIP_UNLESS_POOL();
    enum { IDLE = 64, WORKERS = 4 };
    struct ps p;
    ps_init(&p);
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = p_config(&p, WORKERS);
    tc_handler h = p_handler(&p, *stream);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    int idle[IDLE];
    for (int i = 0; i < IDLE; i++)
        idle[i] = tc_test_connect_ok(&ts.addr);
    tc_stats st;
    TC_TEST_WAIT_UNTIL((tc_server_stats(ts.srv, &st), st.accepted == IDLE), TC_TEST_WAIT_MS);
    cr_assert_eq(st.accepted, IDLE, "the idle clients were not all accepted");
    int64_t worst = 0;
    for (int round = 0; round < 3; round++) { /* a fresh client each time */
        int fd = tc_test_connect_ok(&ts.addr);
        int64_t t0 = tc_test_now_ms();
        cl_send(fd, "fresh\n");
        cl_expect(fd, "fresh\n");
        int64_t rtt = tc_test_now_ms() - t0;
        worst = rtt > worst ? rtt : worst;
        close(fd);
    }
    cr_assert_leq(worst, tc_test_ms(100), "%s: a fresh client waited %lld ms behind %d idle ones",
                  *stream ? "stream" : "message", (long long)worst, IDLE);
    for (int i = 0; i < IDLE; i++)
        close(idle[i]);
    wait_idle(&ts);
    cr_assert_eq(atomic_load(&p.msgs), 3);
    cr_assert_eq(atomic_load(&p.errors), 0);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, "pool");
    ps_destroy(&p);
}

/* ---- order ------------------------------------------------------------------------- */

/* Eight clients each pipeline a thousand numbered lines in one send, on four
 * workers: every connection's replies come back in order, complete, and no
 * connection ever has two messages in flight (the handler checks both). */
Test(pool, order_under_pipelining)
{
    SKIP_UNLESS_POOL();
    enum { C = 8, LINES = 1000 };
    struct ps p;
    ps_init(&p);
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = p_config(&p, 4);
    tc_handler h = p_handler(&p, 0);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    static char req[C][LINES * 8];
    size_t len[C];
    int fd[C];
    for (int c = 0; c < C; c++) {
        len[c] = 0;
        for (int k = 0; k < LINES; k++)
            len[c] += (size_t)snprintf(req[c] + len[c], sizeof req[c] - len[c], "n%d\n", k);
        fd[c] = tc_test_connect_ok(&ts.addr);
    }
    for (int c = 0; c < C; c++) /* far less than the socket buffers: no reader needed */
        cr_assert_eq(tc_test_send_all(fd[c], req[c], len[c]), 0);
    static char got[LINES * 8];
    for (int c = 0; c < C; c++) {
        ssize_t r = tc_test_recv_full(fd[c], got, len[c]);
        cr_assert_eq(r, (ssize_t)len[c], "client %d: %zd of %zu bytes", c, r, len[c]);
        cr_assert_eq(memcmp(got, req[c], len[c]), 0, "client %d: replies out of order", c);
    }
    for (int c = 0; c < C; c++)
        close(fd[c]);
    wait_idle(&ts);
    cr_assert_eq(atomic_load(&p.msgs), C * LINES);
    cr_assert_eq(atomic_load(&p.disorder), 0, "messages of one connection overlapped or "
                                               "came out of order");
    cr_assert_gt(atomic_load(&p.peak_msg), 0);
    cr_assert_leq(atomic_load(&p.peak_msg), 4);
    cr_assert_eq(atomic_load(&p.errors), 0);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, "pool");
    ps_destroy(&p);
}

/* ---- a handler that blocks ------------------------------------------------------- */

/* Four workers. Three connections' handlers block for 200 ms: a fourth
 * connection's message is answered meanwhile, at once. Four block: the
 * fifth connection's message waits for a worker, and is answered only once
 * one of them is done (the pool never runs more than its workers). */
Test(pool, blocked_handlers_stall_nobody_while_workers_are_left)
{
    SKIP_UNLESS_POOL();
    enum { WORKERS = 4 };
    struct ps p;
    ps_init(&p);
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = p_config(&p, WORKERS);
    tc_handler h = p_handler(&p, 0);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    int slow[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        slow[i] = tc_test_connect_ok(&ts.addr);
    int fast = tc_test_connect_ok(&ts.addr);

    for (int i = 0; i < WORKERS - 1; i++)
        cl_send(slow[i], "slow\n");
    cr_assert_eq(tc_test_event_wait(&p.slept, WORKERS - 1, TC_TEST_WAIT_MS), 0);
    int64_t rtt = cl_rtt(fast, "quick");
    int done = atomic_load(&p.slow_done);
    cr_assert_eq(done, 0, "the quick message was answered only after a blocked one (%lld ms)",
                 (long long)rtt);
    cr_assert_leq(rtt, tc_test_ms(100), "the quick message took %lld ms", (long long)rtt);
    for (int i = 0; i < WORKERS - 1; i++)
        cl_expect(slow[i], "slow\n");

    for (int i = 0; i < WORKERS; i++)
        cl_send(slow[i], "slow\n");
    cr_assert_eq(tc_test_event_wait(&p.slept, 2 * WORKERS - 1, TC_TEST_WAIT_MS), 0);
    cl_send(fast, "quick\n");
    cl_expect(fast, "quick\n");
    done = atomic_load(&p.slow_done);
    cr_assert_geq(done, WORKERS, "answered while all %d workers were blocked", WORKERS);
    for (int i = 0; i < WORKERS; i++)
        cl_expect(slow[i], "slow\n");
    cr_assert_eq(atomic_load(&p.peak_msg), WORKERS);

    for (int i = 0; i < WORKERS; i++)
        close(slow[i]);
    close(fast);
    wait_idle(&ts);
    cr_assert_eq(atomic_load(&p.errors), 0);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, "pool");
    ps_destroy(&p);
}

/* ---- drain -------------------------------------------------------------------------- */

/* A shutdown with an idle connection and one whose handler is blocked in a
 * worker: the idle one ends at once (TC_ESHUTDOWN); the busy one gets its
 * reply, then ends; serve_forever returns once it has, within the drain. */
Test(pool, drain_ends_idle_connections_and_finishes_messages_in_flight)
{
    SKIP_UNLESS_POOL();
    struct ps p;
    ps_init(&p);
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = p_config(&p, 2);
    cfg.drain_timeout_ms = tc_test_ms(5000);
    tc_handler h = p_handler(&p, 0);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    int idle = tc_test_connect_ok(&ts.addr);
    cr_assert_lt(cl_rtt(idle, "hello"), TC_TEST_WAIT_MS);
    int busy = tc_test_connect_ok(&ts.addr);
    cl_send(busy, "slow\n");
    cr_assert_eq(tc_test_event_wait(&p.slept, 1, TC_TEST_WAIT_MS), 0);
    int64_t t0 = tc_test_now_ms();
    cr_assert_eq(tc_server_shutdown(ts.srv), 0);
    cr_assert(cl_readable(idle, tc_test_ms(100)), "the idle connection was not ended at once");
    cr_assert_eq(tc_test_recv_eof(idle), 0);
    cr_assert_eq(atomic_load(&p.slow_done), 0, "the idle one waited for the busy one");
    cl_expect(busy, "slow\n");
    cr_assert_eq(tc_test_recv_eof(busy), 0, "the busy connection did not end after its reply");
    cr_assert_eq(tc_test_server_join(&ts), 0);
    int64_t took = tc_test_now_ms() - t0;
    cr_assert_lt(took, tc_test_ms(1000), "the drain took %lld ms", (long long)took);
    char log[256];
    tc_test_event_log(&p.closed, log, sizeof log);
    cr_assert_str_eq(log, "TC_ESHUTDOWN,TC_ESHUTDOWN", "on_close reasons: %s", log);
    cr_assert_eq(atomic_load(&p.finishes), 2);
    cr_assert_eq(atomic_load(&p.errors), 0);
    close(idle);
    close(busy);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, "pool");
    ps_destroy(&p);
}

/* The drain's deadline passes while a handler is still blocked: its socket
 * is cut there (the client sees the end of the stream without the reply,
 * and the handler's send fails); the connection ends once the handler
 * returns, and serve_forever returns then. */
Test(pool, drain_deadline_cuts_a_busy_connection)
{
    SKIP_UNLESS_POOL();
    const int DRAIN = 50, BLOCK = 400;
    struct ps p;
    ps_init(&p);
    atomic_store(&p.slow_ms, BLOCK);
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = p_config(&p, 2);
    cfg.drain_timeout_ms = DRAIN;
    tc_handler h = p_handler(&p, 0);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    int fd = tc_test_connect_ok(&ts.addr);
    cl_send(fd, "slowsend\n");
    cr_assert_eq(tc_test_event_wait(&p.slept, 1, TC_TEST_WAIT_MS), 0);
    int64_t t0 = tc_test_now_ms();
    cr_assert_eq(tc_server_shutdown(ts.srv), 0);
    cr_assert_eq(tc_test_recv_eof(fd), 0, "no end of stream, or data, after the deadline");
    int64_t cut = tc_test_now_ms() - t0;
    cr_assert_eq(atomic_load(&p.slow_done), 0, "the socket was cut only after the handler ended");
    cr_assert_lt(cut, BLOCK, "cut after %lld ms", (long long)cut);
    cr_assert_eq(tc_test_server_join(&ts), 0);
    cr_assert_eq(atomic_load(&p.slow_done), 1);
    int late = atomic_load(&p.late_send);
    cr_assert(late == -EPIPE || late == -ECONNRESET, "the send after the cut: %s",
              tc_err_name(late));
    cr_assert_eq(atomic_load(&p.finishes), 1);
    close(fd);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, "pool");
    ps_destroy(&p);
}

/* ---- idle timeout ------------------------------------------------------------------------ */

/* idle_timeout T. A silent client is closed T after its accept (on_close
 * -ETIMEDOUT, no error reported). A handler that blocks 2T does not get its
 * connection timed out meanwhile: the reply arrives, and the idle clock
 * starts again from there. */
Test(pool, idle_timeout)
{
    SKIP_UNLESS_POOL();
    const int T = tc_test_ms(200);
    struct ps p;
    ps_init(&p);
    atomic_store(&p.slow_ms, 2 * T);
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = p_config(&p, 2);
    cfg.idle_timeout_ms = T;
    tc_handler h = p_handler(&p, 0);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    int64_t t0 = tc_test_now_ms();
    int silent = tc_test_connect_ok(&ts.addr);
    int busy = tc_test_connect_ok(&ts.addr);
    cl_send(busy, "slow\n");
    cr_assert_eq(tc_test_recv_eof(silent), 0, "the silent client was not closed");
    int64_t life = tc_test_now_ms() - t0;
    cr_assert_geq(life, T - 20, "closed after %lld ms", (long long)life);
    cr_assert_lt(life, T + T / 2 + 50, "closed after %lld ms", (long long)life);
    cl_expect(busy, "slow\n");
    int64_t replied = tc_test_now_ms();
    cr_assert_geq(replied - t0, 2 * T - 20);
    cr_assert_eq(tc_test_recv_eof(busy), 0, "the busy client was not closed after its reply");
    int64_t after = tc_test_now_ms() - replied;
    cr_assert_geq(after, T - 20, "closed %lld ms after its reply", (long long)after);
    cr_assert_lt(after, T + T / 2 + 50, "closed %lld ms after its reply", (long long)after);
    wait_idle(&ts);
    char log[256];
    tc_test_event_log(&p.closed, log, sizeof log);
    cr_assert_str_eq(log, "ETIMEDOUT,ETIMEDOUT", "on_close reasons: %s", log);
    cr_assert_eq(atomic_load(&p.errors), 0, "a silence between messages is no error");
    cr_assert_eq(atomic_load(&p.msgs), 1);
    close(silent);
    close(busy);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, "pool");
    ps_destroy(&p);
}

/* ---- max_conns -------------------------------------------------------------------------- */

/* max_conns 4 on two workers: of eight clients that connect and send a
 * line, four are accepted and answered, the others wait in the listen
 * backlog (not refused, not accepted) until connections end; never more
 * than four live. */
Test(pool, max_conns)
{
    SKIP_UNLESS_POOL();
    enum { N = 8, MAX = 4 };
    struct ps p;
    ps_init(&p);
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = p_config(&p, 2);
    cfg.max_conns = MAX;
    tc_handler h = p_handler(&p, 0);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    int fd[N];
    char line[N][8];
    for (int i = 0; i < N; i++) {
        fd[i] = tc_test_connect_ok(&ts.addr);
        snprintf(line[i], sizeof line[i], "m%d\n", i);
        cl_send(fd[i], line[i]);
    }
    for (int i = 0; i < MAX; i++)
        cl_expect(fd[i], line[i]);
    for (int i = MAX; i < N; i++)
        cr_assert_not(cl_readable(fd[i], i == MAX ? tc_test_ms(QUIET_MS) : 0),
                      "client %d answered beyond max_conns", i);
    tc_stats st;
    cr_assert_eq(tc_server_stats(ts.srv, &st), 0);
    cr_assert_eq(st.accepted, MAX);
    for (int i = 0; i < MAX; i++)
        close(fd[i]);
    for (int i = MAX; i < N; i++)
        cl_expect(fd[i], line[i]);
    for (int i = MAX; i < N; i++)
        close(fd[i]);
    wait_idle(&ts);
    cr_assert_eq(tc_server_stats(ts.srv, &st), 0);
    cr_assert_eq(st.accepted, N);
    cr_assert_eq(st.refused, 0);
    cr_assert_leq(st.peak_active, MAX);
    cr_assert_leq(atomic_load(&p.peak_live), MAX);
    cr_assert_eq(atomic_load(&p.errors), 0);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, "pool");
    ps_destroy(&p);
}

/* ---- what a worker may ask of its connection -------------------------------------------- */

/* From on_message, in a worker: tc_conn_set_timer arms the connection's
 * timer (on_timer then runs in the loop thread, after the reply), and
 * tc_conn_shutdown_write half-closes after the reply. */
Test(pool, timer_and_half_close_from_a_worker)
{
    SKIP_UNLESS_POOL();
    struct ps p;
    ps_init(&p);
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = p_config(&p, 2);
    tc_handler h = p_handler(&p, 0);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    int fd = tc_test_connect_ok(&ts.addr);
    cl_send(fd, "timer\n");
    cl_expect(fd, "armed\ntick\n");
    cr_assert_eq(atomic_load(&p.timer_rc), 0, "tc_conn_set_timer: %s",
                 tc_err_name(atomic_load(&p.timer_rc)));
    cr_assert_eq(atomic_load(&p.timers), 1);
    cr_assert_eq(atomic_load(&p.timer_off_loop), 0, "on_timer ran outside the loop thread");
    cr_assert_eq(atomic_load(&p.msg_on_loop), 0, "on_message ran in the loop thread");
    cl_send(fd, "half\n");
    cl_expect(fd, "bye\n");
    cr_assert_eq(tc_test_recv_eof(fd), 0, "no half-close after the reply");
    cr_assert_eq(atomic_load(&p.half_rc), 0, "tc_conn_shutdown_write: %s",
                 tc_err_name(atomic_load(&p.half_rc)));
    close(fd);
    wait_idle(&ts);
    cr_assert_eq(atomic_load(&p.errors), 0);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, "pool");
    ps_destroy(&p);
}

/* ---- a worker lets go of the connection itself ---------------------------------------------- */

/* A pool of workers serving the message handler (idle_timeout_ms idle_ms
 * when positive), with the process's counts taken first. */
struct pt {
    struct ps p;
    tc_test_counts before;
    tc_test_server ts;
};

static void pt_start(struct pt *t, int workers, int idle_ms)
{
    ps_init(&t->p);
    t->before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = p_config(&t->p, workers);
    if (idle_ms > 0)
        cfg.idle_timeout_ms = idle_ms;
    tc_handler h = p_handler(&t->p, 0);
    tc_test_server_start(&t->ts, NULL, &cfg, &h);
}

/* No overlap or disorder; the server stops and leaves nothing behind. */
static void pt_stop(struct pt *t)
{
    wait_idle(&t->ts);
    cr_assert_eq(atomic_load(&t->p.disorder), 0, "messages of one connection overlapped or "
                                                  "came out of order");
    cr_assert_eq(tc_test_server_stop(&t->ts), 0);
    tc_test_expect_counts(t->before, NULL, 0, "pool");
    ps_destroy(&t->p);
}

/* idle_timeout T. A client that sends a line every T/2 for 3T is never
 * timed out: each message a worker serves moves the idle clock on, also
 * when the worker arms the connection again itself, without the loop.
 * Silent after its last reply, it is closed T later (ETIMEDOUT, no error). */
Test(pool, idle_clock_restarts_with_each_message)
{
    SKIP_UNLESS_POOL();
    const int T = tc_test_ms(200);
    struct pt t;
    pt_start(&t, 2, T);
    int fd = tc_test_connect_ok(&t.ts.addr);
    int64_t last = 0;
    for (int i = 0; i < 6; i++) {
        char line[32];
        snprintf(line, sizeof line, "n%d", i);
        cl_rtt(fd, line);
        last = tc_test_now_ms();
        tc_test_nap_ms(T / 2); /* a pause, not a synchronisation: the clock must survive it */
    }
    cr_assert_eq(tc_test_recv_eof(fd), 0, "the silent client was not closed");
    int64_t after = tc_test_now_ms() - last;
    cr_assert_geq(after, T - 20, "closed %lld ms after its last reply", (long long)after);
    cr_assert_lt(after, T + T / 2 + 50, "closed %lld ms after its last reply", (long long)after);
    close(fd);
    wait_idle(&t.ts);
    char log[256];
    tc_test_event_log(&t.p.closed, log, sizeof log);
    cr_assert_str_eq(log, "ETIMEDOUT", "on_close reasons: %s", log);
    cr_assert_eq(atomic_load(&t.p.msgs), 6);
    cr_assert_eq(atomic_load(&t.p.errors), 0, "a silence between messages is no error");
    pt_stop(&t);
}

/* A send from another thread while a worker has the connection waits for
 * the worker: the client gets the worker's reply first, then the other
 * thread's message, then echoes as before (the worker hands the connection
 * back to the loop, which sends the mail and arms it again). */
Test(pool, foreign_send_while_a_worker_has_the_connection)
{
    SKIP_UNLESS_POOL();
    struct pt t;
    pt_start(&t, 2, 0);
    int fd = tc_test_connect_ok(&t.ts.addr);
    cl_send(fd, "hold\n");
    cr_assert_eq(tc_test_event_wait(&t.p.held, 1, TC_TEST_WAIT_MS), 0, "hold never ran");
    tc_conn *c = atomic_load(&t.p.held_conn);
    cr_assert_eq(tc_conn_send(c, "mail", 4), 4, "the send from this thread was refused");
    cr_assert_not(cl_readable(fd, tc_test_ms(QUIET_MS)), "the mail overtook the worker's reply");
    atomic_store(&t.p.release, 1);
    cl_expect(fd, "held\nmail\n");
    cr_assert_lt(cl_rtt(fd, "n0"), TC_TEST_WAIT_MS, "no echo after the mail");
    close(fd);
    cr_assert_eq(atomic_load(&t.p.errors), 0);
    pt_stop(&t);
}

/* ---- connections that come and go while workers serve others ---------------------------- */

struct churner {
    const tc_addr *addr;
    int id;
    atomic_int *answered, *failed;
};

/* Connect, make a few round trips, close; every fourth connection closes
 * with its last line unread (the worker's reply then meets a closed peer). */
static void *churn_main(void *arg)
{
    struct churner *ch = arg;
    for (int i = 0; i < 150; i++) {
        int fd = tc_test_connect(ch->addr);
        if (fd < 0) {
            atomic_fetch_add(ch->failed, 1);
            continue;
        }
        int ok = 1;
        for (int k = 0; k < 4 && ok; k++) {
            char line[32], got[32];
            int n = snprintf(line, sizeof line, "n%d\n", k);
            if (tc_test_send_all(fd, line, (size_t)n) < 0) {
                ok = 0;
                break;
            }
            if (k == 3 && i % 4 == 0)
                break; /* leave without the last reply */
            if (tc_test_recv_full(fd, got, (size_t)n) != n || memcmp(got, line, (size_t)n) != 0)
                ok = 0;
            else
                atomic_fetch_add(ch->answered, 1);
        }
        if (!ok)
            atomic_fetch_add(ch->failed, 1);
        close(fd);
    }
    return NULL;
}

/* Two workers, eight client threads: 1,200 connections of a few round
 * trips each, a quarter of them closing before their last reply. Every
 * reply read is the right one, in order, no connection's messages overlap,
 * and the server ends with no connection, descriptor or thread left (the
 * slots of closed connections are reused while workers may still hold
 * events for them: TSan and ASan watch that). */
Test(pool, connections_come_and_go_while_workers_serve)
{
    SKIP_UNLESS_POOL();
    enum { T = 8 };
    struct pt pool;
    pt_start(&pool, 2, 0);
    atomic_int answered = 0, failed = 0;
    struct churner ch[T];
    pthread_t t[T];
    for (int i = 0; i < T; i++) {
        ch[i] = (struct churner){.addr = &pool.ts.addr, .id = i, .answered = &answered,
                                 .failed = &failed};
        cr_assert_eq(pthread_create(&t[i], NULL, churn_main, &ch[i]), 0);
    }
    for (int i = 0; i < T; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(atomic_load(&failed), 0, "%d connections failed", atomic_load(&failed));
    /* 150 connections a thread; those with i % 4 == 0 (38 of them) read 3
     * replies, the others 4 */
    const int early = (150 + 3) / 4;
    int want = T * (early * 3 + (150 - early) * 4);
    cr_assert_eq(atomic_load(&answered), want, "%d replies read, %d expected",
                 atomic_load(&answered), want);
    wait_idle(&pool.ts);
    cr_assert_leq(atomic_load(&pool.p.peak_msg), 2);
    cr_assert_eq(atomic_load(&pool.p.setups), T * 150);
    cr_assert_eq(atomic_load(&pool.p.finishes), T * 150);
    pt_stop(&pool);
}
