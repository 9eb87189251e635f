/* SPDX-License-Identifier: MIT */
/* Hostile clients, in every mode each case applies to: slowloris (silent and
 * dribbling connections), oversized frames and lines, length prefixes
 * announcing gigabytes, resets mid-frame and mid-reply, half-closes, clients
 * that never read, and floods far past max_conns. Each misbehaving connection
 * gets a clear code (handler or handle_error), others keep being served, and
 * descriptors, threads and children are as before. TC_TEST_MODES restricts
 * the modes (the TSan job leaves out forking). */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc_hook.h"
#include "helpers.h"

/* ---- modes and cases ------------------------------------------------------------ */

struct hcase {
    tc_mode mode;
    int stream; /* 1: a stream handler (handle); 0: message style (on_message) */
};

#define MSG_CASES                                                                                  \
    {TC_MODE_INLINE, 0}, {TC_MODE_THREADING, 0}, {TC_MODE_FORKING, 0}, {TC_MODE_POOL, 0},          \
        {TC_MODE_EVENT, 0}
#define STREAM_CASES                                                                               \
    {TC_MODE_INLINE, 1}, {TC_MODE_THREADING, 1}, {TC_MODE_FORKING, 1}, {TC_MODE_POOL, 1}
/* Message style where a send from on_message blocks (pool and event queue
 * instead: a worker or a loop never blocks on a peer). */
#define BLOCKING_MSG_CASES {TC_MODE_INLINE, 0}, {TC_MODE_THREADING, 0}, {TC_MODE_FORKING, 0}

/* The parameters of a test: the cases listed whose mode is enabled. */
#define CASES(suite, test, ...)                                                                    \
    ParameterizedTestParameters(suite, test)                                                       \
    {                                                                                              \
        static const struct hcase want[] = {__VA_ARGS__};                                          \
        static struct hcase params[sizeof want / sizeof want[0]];                                  \
        size_t n = 0;                                                                              \
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)                                  \
            if (tc_test_mode_enabled(want[i].mode))                                                        \
                params[n++] = want[i];                                                             \
        return cr_make_param_array(struct hcase, params, n);                                       \
    }

static const char *case_name(const struct hcase *p)
{
    static char buf[64];
    snprintf(buf, sizeof buf, "%s/%s", tc_mode_name(p->mode), p->stream ? "stream" : "message");
    return buf;
}

/* ---- what the handlers saw (shared with forked children) -------------------------- */

#define NREC 512

struct hx {
    atomic_int rec_lock;                /* tc_test_rec: the records below */
    atomic_int live, peak;              /* between setup and finish, and the most at once */
    atomic_int setups, finishes, opens, messages;
    atomic_int nerr, err[NREC];         /* codes passed to handle_error, in order */
    atomic_int nerr_noconn;             /* ... of which with a NULL channel */
    atomic_int nclose, reason[NREC];    /* on_close reasons */
    atomic_int nret, ret[NREC];         /* what stream handlers returned */
    atomic_int norder, order[NREC];     /* client ports, in verify_request order */
};

static struct hx *hx_new(void)
{
    void *p = mmap(NULL, sizeof(struct hx), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    cr_assert_neq(p, MAP_FAILED);
    return p; /* zero-filled */
}

static void hx_free(struct hx *x)
{
    munmap(x, sizeof *x);
}

static void rec(struct hx *x, atomic_int *n, atomic_int *arr, int v)
{
    tc_test_rec(&x->rec_lock, n, arr, NREC, v);
}

/* How many of the first n recorded values equal v. */
static int count_of(atomic_int *n, atomic_int *arr, int v)
{
    int k = atomic_load(n), c = 0;
    for (int i = 0; i < k && i < NREC; i++)
        c += atomic_load(&arr[i]) == v;
    return c;
}

/* A reply far larger than any socket buffers: a write of it blocks. */
#define BIG ((size_t)64 << 20)
static unsigned char big_buf[BIG]; /* zero pages: costs address space only */
#define REPLY ((size_t)256 << 10) /* the event backpressure test's reply */

static int x_setup(tc_conn *c, void *ctx)
{
    struct hx *x = ctx;
    (void)c;
    int now = atomic_fetch_add(&x->live, 1) + 1;
    int m = atomic_load(&x->peak);
    while (now > m && !atomic_compare_exchange_weak(&x->peak, &m, now))
        ;
    atomic_fetch_add(&x->setups, 1);
    return 0;
}

static int x_finish(tc_conn *c, void *ctx)
{
    struct hx *x = ctx;
    (void)c;
    atomic_fetch_sub(&x->live, 1);
    atomic_fetch_add(&x->finishes, 1);
    return 0;
}

static int x_open(tc_conn *c, void *ctx)
{
    struct hx *x = ctx;
    (void)c;
    atomic_fetch_add(&x->opens, 1);
    return 0;
}

static void x_close(tc_conn *c, int reason, void *ctx)
{
    struct hx *x = ctx;
    (void)c;
    rec(x, &x->nclose, x->reason, reason);
}

/* Echo; "big" gets BIG bytes back, "r" gets REPLY bytes (raw, unframed), and
 * so does "s" after shrinking the socket's send buffer to the minimum, so
 * that most of the reply stays queued in the server. */
static int x_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    struct hx *x = ctx;
    atomic_fetch_add(&x->messages, 1);
    if (len == 3 && memcmp(msg, "big", 3) == 0) {
        ssize_t n = tc_conn_send_all(c, big_buf, BIG);
        return n < 0 ? (int)n : 0;
    }
    if (len == 1 && (memcmp(msg, "r", 1) == 0 || memcmp(msg, "s", 1) == 0)) {
        int small = 4096;
        if (memcmp(msg, "s", 1) == 0 &&
            setsockopt(tc_conn_fd(c), SOL_SOCKET, SO_SNDBUF, &small, sizeof small) < 0)
            return -errno;
        ssize_t n = tc_conn_send_all(c, big_buf, REPLY);
        return n < 0 ? (int)n : 0;
    }
    ssize_t sent = tc_conn_send(c, msg, len);
    return sent < 0 ? (int)sent : 0;
}

/* The stream handler: the same, line by line. */
static int x_handle(tc_conn *c, void *ctx)
{
    struct hx *x = ctx;
    int rc;
    for (;;) {
        const char *l;
        size_t n;
        rc = tc_conn_read_line(c, 1024, &l, &n);
        if (rc == TC_EOF) {
            rc = 0;
            break;
        }
        if (rc < 0)
            break;
        atomic_fetch_add(&x->messages, 1);
        if (n == 3 && memcmp(l, "big", 3) == 0) {
            ssize_t w = tc_conn_send_all(c, big_buf, BIG);
            if (w < 0) {
                rc = (int)w;
                break;
            }
            continue;
        }
        ssize_t w;
        if ((w = tc_conn_write(c, l, n)) < 0 || (w = tc_conn_write(c, "\n", 1)) < 0 ||
            (w = tc_conn_flush(c)) < 0) {
            rc = (int)w;
            break;
        }
    }
    rec(x, &x->nret, x->ret, rc);
    return rc;
}

static void x_error(tc_server *srv, tc_conn *conn, int err, void *ctx)
{
    struct hx *x = ctx;
    (void)srv;
    if (!conn)
        atomic_fetch_add(&x->nerr_noconn, 1);
    rec(x, &x->nerr, x->err, err);
}

static int x_verify(tc_server *srv, const tc_addr *peer, void *ctx)
{
    struct hx *x = ctx;
    (void)srv;
    rec(x, &x->norder, x->order, tc_addr_port(peer));
    return 0;
}

static tc_codec line_codec(size_t max)
{
    tc_codec c;
    cr_assert_eq(tc_codec_delimited(&c, "\n", 1), 0);
    cr_assert_eq(tc_codec_set_max_frame(&c, max), 0);
    return c;
}

static tc_server_config x_config(const struct hcase *p, struct hx *x)
{
    tc_server_config cfg = tc_test_config();
    cfg.mode = p->mode;
    cfg.codec = line_codec(0);
    cfg.hooks.handle_error = x_error;
    cfg.hooks.verify_request = x_verify;
    cfg.hooks.ctx = x;
    cfg.drain_timeout_ms = tc_test_ms(2000);
    return cfg;
}

static tc_handler x_handler(const struct hcase *p, struct hx *x)
{
    tc_handler h = TC_HANDLER_INIT;
    h.setup = x_setup;
    h.finish = x_finish;
    if (p->stream) {
        h.handle = x_handle;
    } else {
        h.on_open = x_open;
        h.on_message = x_message;
        h.on_close = x_close;
    }
    h.ctx = x;
    return h;
}

/* Wait until the server has no live connection (forking: children reaped). */
static void wait_idle(tc_test_server *ts, int ms)
{
    tc_stats st;
    TC_TEST_WAIT_UNTIL((tc_server_stats(ts->srv, &st), st.active == 0), ms);
    cr_assert_eq(st.active, 0, "%u connections still live", st.active);
}

/* ---- raw clients ------------------------------------------------------------------- */

static int cl_port(int fd)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    return ntohs(sin.sin_port);
}

/* shutdown first: a forking server's children hold copies of our sockets. */
static void cl_close(int fd)
{
    shutdown(fd, SHUT_RDWR);
    close(fd);
}

/* Close with a reset (SO_LINGER {1, 0}) instead of a FIN: 0, or -errno. */
static int cl_reset(int fd)
{
    struct linger lg = {1, 0};
    int rc = setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* Run a client in a child process and return what it returned (0: all went
 * as planned). A forking server's children inherit the test's descriptors,
 * its clients' sockets included, and a socket resets only when its last
 * copy is closed: a client of its own process has the only copy. The child
 * makes system calls only (no Criterion, no allocation). */
static int in_child(int (*client)(const tc_addr *), const tc_addr *a)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) /* before any assertion: with --full-stats each one talks to the runner */
        _exit(client(a));
    cr_assert_geq(pid, 0);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        cr_assert_eq(errno, EINTR);
    cr_assert(WIFEXITED(status), "the client process died");
    return WEXITSTATUS(status);
}

static void cl_send(int fd, const void *buf, size_t n)
{
    int rc = tc_test_send_all(fd, buf, n);
    cr_assert_eq(rc, 0, "send: %s", strerror(-rc));
}

/* Send line + "\n" and expect the same back. */
static void cl_echo(int fd, const char *line)
{
    char want[256], got[256];
    int n = snprintf(want, sizeof want, "%s\n", line);
    cl_send(fd, want, (size_t)n);
    ssize_t r = tc_test_recv_full(fd, got, (size_t)n);
    cr_assert_eq(r, n, "echo of \"%s\": got %zd bytes", line, r);
    cr_assert_eq(memcmp(got, want, (size_t)n), 0);
}

/* A fresh client, one echo, closed. */
static void cl_roundtrip(const tc_addr *a, const char *line)
{
    int fd = tc_test_connect_ok(a);
    cl_echo(fd, line);
    cl_close(fd);
}

/* The server ended the connection: end of stream or a reset. */
static void cl_expect_closed(int fd, const char *what)
{
    int rc;
    char c;
    for (;;) {
        ssize_t n = recv(fd, &c, 1, 0);
        if (n > 0)
            continue; /* what the server wrote before it closed */
        rc = n == 0 ? 0 : errno == EWOULDBLOCK ? -EAGAIN : -errno;
        if (rc != -EINTR)
            break;
    }
    cr_assert(rc == 0 || rc == -ECONNRESET, "%s: not closed (%s)", what, strerror(-rc));
}

TestSuite(hostile, .timeout = 30, .fini = tc_test_kill_children);

/* ---- slowloris ------------------------------------------------------------------------- */

/* Silent connections and dribblers (a byte every 100 ms of a line that never
 * ends) are closed by the timeouts: idle_timeout_ms for silence and
 * conn_timeout_ms for a frame in message style; conn_timeout_ms (per read)
 * for a stream handler. A normal client connecting after them is served at
 * once in every concurrent mode; in pool mode the silent ones queued behind
 * the busy workers are closed without running once their timeout passed in
 * the queue (without that, 16 of them on 2 free workers cost 8 timeouts). */
CASES(hostile, slowloris, MSG_CASES, STREAM_CASES)
ParameterizedTest(struct hcase *p, hostile, slowloris, .timeout = 30)
{
    enum { MAXC = 32, TICK = 100 };
    const int T = tc_test_ms(300);
    const int inl = p->mode == TC_MODE_INLINE, pool = p->mode == TC_MODE_POOL;
    const int S = inl ? 2 : 16, D = inl ? 1 : 2, N = S + D;
    const int frame_to = p->stream ? T : 2 * T; /* when a dribbler is cut */
    struct hx *x = hx_new();
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = x_config(p, x);
    if (p->stream) {
        cfg.conn_timeout_ms = T;
    } else {
        cfg.idle_timeout_ms = T;
        cfg.conn_timeout_ms = frame_to;
    }
    cfg.workers = p->mode == TC_MODE_EVENT ? 2 : 4;
    cfg.queue_len = 64;
    tc_handler h = x_handler(p, x);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);

    int fd[MAXC];
    int64_t opened[MAXC], closed[MAXC];
    for (int i = 0; i < N; i++) {
        fd[i] = tc_test_connect_ok(&ts.addr);
        opened[i] = tc_test_now_ms();
        closed[i] = 0;
        if (i < D)
            cl_send(fd[i], "x", 1); /* dribblers first: they take workers */
    }
    int normal = tc_test_connect_ok(&ts.addr);
    int64_t t0 = tc_test_now_ms();
    cl_send(normal, "hello\n", 6);
    char got[8];
    size_t ngot = 0;
    int64_t served = 0, next_tick = t0 + TICK;
    int64_t limit = inl ? D * frame_to + S * T + 3 * T : frame_to + 3 * T;
    int open_left = N;
    while ((open_left > 0 || !served) && tc_test_now_ms() - t0 < limit) {
        struct pollfd pf[MAXC + 1];
        for (int i = 0; i < N; i++)
            pf[i] = (struct pollfd){.fd = closed[i] ? -1 : fd[i], .events = POLLIN};
        pf[N] = (struct pollfd){.fd = served ? -1 : normal, .events = POLLIN};
        int wait = (int)(next_tick - tc_test_now_ms());
        poll(pf, (nfds_t)N + 1, wait > 0 ? wait : 0);
        for (int i = 0; i < N; i++) {
            if (!pf[i].revents)
                continue;
            char b[64];
            ssize_t n = recv(fd[i], b, sizeof b, MSG_DONTWAIT);
            if (n > 0)
                cr_assert_fail("%s: slowloris %d got %zd bytes", case_name(p), i, n);
            if (n == 0 || (n < 0 && errno == ECONNRESET)) {
                closed[i] = tc_test_now_ms();
                open_left--;
            }
        }
        if (pf[N].revents) {
            ssize_t n = recv(normal, got + ngot, sizeof got - ngot, MSG_DONTWAIT);
            if (n <= 0)
                cr_assert_fail("%s: the normal client was closed", case_name(p));
            ngot += (size_t)n;
            if (ngot >= 6) {
                served = tc_test_now_ms();
                cl_close(normal); /* before its own timeout */
            }
        }
        if (tc_test_now_ms() >= next_tick) {
            for (int i = 0; i < D; i++)
                if (!closed[i])
                    (void)send(fd[i], "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            next_tick += TICK;
        }
    }
    cr_assert(served, "%s: the normal client was not served within %lld ms", case_name(p),
              (long long)limit);
    cr_assert(ngot == 6 && memcmp(got, "hello\n", 6) == 0, "%s: wrong echo", case_name(p));
    int64_t latency = served - t0;
    int64_t bound = inl ? D * frame_to + S * T + 2 * T : pool ? 4 * T : 2 * T;
    cr_assert_lt(latency, bound, "%s: the normal client waited %lld ms (timeout %d ms)",
                 case_name(p), (long long)latency, T);
    for (int i = 0; i < N; i++) {
        cr_assert_neq(closed[i], 0, "%s: slowloris %d (%s) never closed", case_name(p), i,
                      i < D ? "dribbler" : "silent");
        int64_t life = closed[i] - opened[i];
        int least = i < D ? frame_to : T;
        cr_assert_geq(life, least - 20, "%s: slowloris %d closed after %lld ms, before its %d ms",
                      case_name(p), i, (long long)life, least);
        /* Counted from the accept, wherever it waited (pool: in the queue,
         * behind busy workers), give or take one timeout for a stream
         * handler taken just before its time ran out (its read's timeout
         * counts from the read); inline accepts one at a time. */
        int most = least + (pool && p->stream ? 3 * T / 2 : T / 2);
        if (!inl)
            cr_assert_lt(life, most, "%s: slowloris %d closed %lld ms after it connected, "
                         "timeout %d ms", case_name(p), i, (long long)life, least);
    }
    for (int i = 0; i < N; i++)
        cl_close(fd[i]);
    wait_idle(&ts, TC_TEST_WAIT_MS);
    cr_assert_eq(tc_test_server_stop(&ts), 0);

    /* Every slowloris ended with -ETIMEDOUT; pool skipped some queued ones. */
    int setups = atomic_load(&x->setups), stale = N + 1 - setups;
    int etimedout = count_of(&x->nerr, x->err, -ETIMEDOUT);
    cr_assert_eq(atomic_load(&x->nerr), etimedout, "%s: other errors reported", case_name(p));
    if (!pool) /* pool: those whose time ran out in the queue never ran */
        cr_assert_eq(stale, 0, "%s: %d setups for %d clients", case_name(p), setups, N + 1);
    if (p->stream) {
        cr_assert_eq(etimedout, N, "%s: %d timeouts reported", case_name(p), etimedout);
        cr_assert_eq(count_of(&x->nret, x->ret, -ETIMEDOUT), setups - 1);
        cr_assert_eq(count_of(&x->nret, x->ret, 0), 1);
    } else {
        /* Silence between messages is no error; a frame cut short is. */
        cr_assert_eq(etimedout, D + stale, "%s: %d timeouts reported", case_name(p), etimedout);
        cr_assert_eq(count_of(&x->nclose, x->reason, -ETIMEDOUT), setups - 1);
        cr_assert_eq(count_of(&x->nclose, x->reason, 0), 1);
    }
    cr_assert_eq(atomic_load(&x->finishes), setups);
    tc_test_expect_counts(before, NULL, 0, case_name(p));
    hx_free(x);
}

/* Pool, one worker. Stream style: a talking client A holds the worker for
 * 1.5 timeouts while a silent client B is parked on the loop; B spent its
 * whole timeout waiting, so it is closed at the end of it (counted from the
 * accept), without setup or callbacks, -ETIMEDOUT reported with its channel.
 * Message style: a parked connection opens at once on the loop (setup,
 * on_open), and its idle clock starts at the accept: B, silent, is closed one
 * idle timeout after it connected, without on_message, while A, which talks
 * through the same worker, is served throughout (a silence between messages
 * is no error). */
static void pool_queue(int stream)
{
    const struct hcase p = {TC_MODE_POOL, stream};
    if (!tc_test_mode_enabled(TC_MODE_POOL))
        cr_skip_test("pool mode not selected by TC_TEST_MODES");
    const int T = tc_test_ms(600);
    const int hold = stream ? 3 * T / 2 : T / 2;
    struct hx *x = hx_new();
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = x_config(&p, x);
    cfg.workers = 1;
    cfg.queue_len = 4;
    if (stream)
        cfg.conn_timeout_ms = T;
    else
        cfg.idle_timeout_ms = cfg.conn_timeout_ms = T;
    tc_handler h = x_handler(&p, x);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    int a = tc_test_connect_ok(&ts.addr);
    cl_echo(a, "a"); /* stream: A has the worker */
    int echoes = 1;
    int b = tc_test_connect_ok(&ts.addr);
    int64_t tb = tc_test_now_ms();
    while (tc_test_now_ms() - tb < hold) {
        tc_test_nap_ms(T / 6); /* pacing: A talks well within its timeout */
        cl_echo(a, "a");
        echoes++;
    }
    cl_close(a);
    cl_expect_closed(b, "the parked client");
    int64_t life = tc_test_now_ms() - tb;
    cl_close(b);
    wait_idle(&ts, TC_TEST_WAIT_MS);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    if (stream) {
        cr_assert_geq(life, hold - 20, "%s: B closed after %lld ms", case_name(&p),
                      (long long)life);
        cr_assert_lt(life, hold + T / 2, "%s: B closed after %lld ms, A left at %d ms",
                     case_name(&p), (long long)life, hold);
        cr_assert_eq(atomic_load(&x->setups), 1, "%s: B ran", case_name(&p));
        cr_assert_eq(atomic_load(&x->nerr), 1);
        cr_assert_eq(atomic_load(&x->err[0]), -ETIMEDOUT);
        cr_assert_eq(atomic_load(&x->nerr_noconn), 0, "reported without its channel");
    } else {
        cr_assert_geq(life, T - 20, "%s: B closed after %lld ms", case_name(&p),
                      (long long)life);
        cr_assert_lt(life, T + T / 4, "%s: B closed after %lld ms: its clock started late",
                     case_name(&p), (long long)life);
        cr_assert_eq(atomic_load(&x->setups), 2);
        cr_assert_eq(atomic_load(&x->opens), 2, "%s: B opened on the loop", case_name(&p));
        cr_assert_eq(atomic_load(&x->messages), echoes, "%s: on_message ran for B",
                     case_name(&p));
        cr_assert_eq(atomic_load(&x->nerr), 0, "a silence between messages is no error");
        cr_assert_eq(count_of(&x->nclose, x->reason, -ETIMEDOUT), 1);
    }
    tc_test_expect_counts(before, NULL, 0, case_name(&p));
    hx_free(x);
}

Test(hostile, pool_queue_counts_as_silence_message) { pool_queue(0); }
Test(hostile, pool_queue_counts_as_silence_stream) { pool_queue(1); }

/* ---- oversized frames and lines ---------------------------------------------------------- */

#define LIMIT 1024

enum framing { F_LINE, F_LEN32, F_LEN64 };

static tc_codec framing_codec(enum framing f)
{
    tc_codec c;
    if (f == F_LINE)
        return line_codec(LIMIT);
    cr_assert_eq(tc_codec_length_prefixed(&c, f == F_LEN32 ? 4 : 8, TC_BIG_ENDIAN), 0);
    cr_assert_eq(tc_codec_set_max_frame(&c, LIMIT), 0);
    return c;
}

/* A frame of the framing around len bytes of 'p': its size. */
static size_t make_frame(enum framing f, unsigned char *out, size_t len)
{
    size_t head = f == F_LINE ? 0 : f == F_LEN32 ? 4 : 8;
    for (size_t i = 0; i < head; i++)
        out[i] = (unsigned char)((uint64_t)len >> (8 * (head - 1 - i)));
    memset(out + head, 'p', len);
    if (f == F_LINE)
        out[head + len++] = '\n';
    return head + len;
}

/* Refused at the limit: a line over it, length prefixes announcing 4 GiB and
 * 4 EiB. Each hostile connection ends with TC_ETOOBIG (on_close and
 * handle_error), no allocation during it is larger than the channel's
 * default receive size (none follows the announced length), and clients
 * before and after it, with frames exactly at the limit, are served. */
CASES(hostile, oversized, MSG_CASES)
ParameterizedTest(struct hcase *p, hostile, oversized, .timeout = 30)
{
    static const char *const names[] = {"line", "len32", "len64"};
    static unsigned char frame[LIMIT + 16], reply[LIMIT + 16];
    ah_init();
    for (int f = F_LINE; f <= F_LEN64; f++) {
        struct hx *x = hx_new();
        tc_test_counts before = tc_test_counts_now(NULL, 0);
        tc_server_config cfg = x_config(p, x);
        cfg.codec = framing_codec((enum framing)f);
        cfg.workers = 2;
        tc_handler h = x_handler(p, x);
        tc_test_server ts;
        tc_test_server_start(&ts, NULL, &cfg, &h);
        size_t n = make_frame((enum framing)f, frame, LIMIT);
        int fd = tc_test_connect_ok(&ts.addr);
        cl_send(fd, frame, n);
        cr_assert_eq(tc_test_recv_full(fd, reply, n), (ssize_t)n, "%s: at the limit", names[f]);
        cr_assert_eq(memcmp(reply, frame, n), 0);
        cl_close(fd);
        wait_idle(&ts, TC_TEST_WAIT_MS);

        ah_track_start();
        int bad = tc_test_connect_ok(&ts.addr);
        static unsigned char huge[4096];
        size_t hn;
        if (f == F_LINE) {
            memset(huge, 'x', sizeof huge); /* 4 KiB, no newline */
            hn = sizeof huge;
        } else if (f == F_LEN32) {
            memcpy(huge, "\xff\xff\xff\xf0", 4); /* 4 GiB - 16 */
            hn = 4;
        } else {
            memcpy(huge, "\x40\0\0\0\0\0\0\0", 8); /* 2^62 */
            hn = 8;
        }
        cl_send(bad, huge, hn);
        cl_expect_closed(bad, names[f]);
        wait_idle(&ts, TC_TEST_WAIT_MS);
        size_t largest = ah_track_stop();
        cl_close(bad);
        cr_assert_leq(largest, (size_t)LIMIT + 64, "%s, %s: an allocation of %zu bytes",
                      case_name(p), names[f], largest);
        cr_assert_eq(atomic_load(&x->nerr), 1, "%s, %s: errors", case_name(p), names[f]);
        cr_assert_eq(atomic_load(&x->err[0]), TC_ETOOBIG, "%s, %s: reported %s", case_name(p),
                     names[f], tc_err_name(atomic_load(&x->err[0])));
        cr_assert_eq(atomic_load(&x->nclose), 2);
        cr_assert_eq(atomic_load(&x->reason[1]), TC_ETOOBIG, "%s, %s: on_close got %s",
                     case_name(p), names[f], tc_err_name(atomic_load(&x->reason[1])));

        fd = tc_test_connect_ok(&ts.addr); /* the server goes on */
        n = make_frame((enum framing)f, frame, 5);
        cl_send(fd, frame, n);
        cr_assert_eq(tc_test_recv_full(fd, reply, n), (ssize_t)n);
        cl_close(fd);
        cr_assert_eq(tc_test_server_stop(&ts), 0);
        tc_test_expect_counts(before, NULL, 0, case_name(p));
        hx_free(x);
    }
}

/* A frame that arrives in parts is kept in a buffer sized for one frame of
 * the codec, not the channel's 16 KiB receive size: the part that waits
 * (more than the blocking modes' 512-byte idle buffer, so every mode must
 * allocate for it) costs at most the limit, and the frame completes. */
CASES(hostile, partial_frame_kept_small, MSG_CASES)
ParameterizedTest(struct hcase *p, hostile, partial_frame_kept_small, .timeout = 30)
{
    static unsigned char frame[LIMIT], reply[LIMIT];
    ah_init();
    struct hx *x = hx_new();
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = x_config(p, x);
    cfg.codec = line_codec(LIMIT);
    cfg.workers = 1;
    tc_handler h = x_handler(p, x);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    size_t n = make_frame(F_LINE, frame, LIMIT - 1); /* LIMIT bytes with the newline */
    int fd = tc_test_connect_ok(&ts.addr);
    cl_send(fd, "hi\n", 3); /* the connection is set up before the tracking starts */
    cr_assert_eq(tc_test_recv_full(fd, reply, 3), 3);
    ah_track_start();
    cl_send(fd, frame, n - 16);
    TC_TEST_WAIT_UNTIL(ah_track_peek() > 0, TC_TEST_WAIT_MS);
    size_t first = ah_track_peek();
    cl_send(fd, frame + n - 16, 16);
    cr_assert_eq(tc_test_recv_full(fd, reply, n), (ssize_t)n, "%s: the frame", case_name(p));
    cr_assert_eq(memcmp(reply, frame, n), 0);
    size_t largest = ah_track_stop();
    cl_close(fd);
    cr_assert_gt(first, 0, "%s: no allocation seen for the waiting part", case_name(p));
    cr_assert_leq(largest, (size_t)LIMIT + 64, "%s: an allocation of %zu bytes for a %d-byte frame",
                  case_name(p), largest, LIMIT);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, case_name(p));
    hx_free(x);
}

/* ---- resets, half-closes ---------------------------------------------------------------- */

/* The code a connection ended with: on_close's reason (message style) or
 * what the stream handler returned. */
static int ended_with(const struct hcase *p, struct hx *x, int k)
{
    return p->stream ? atomic_load(&x->ret[k]) : atomic_load(&x->reason[k]);
}

static int ended(const struct hcase *p, struct hx *x)
{
    return p->stream ? atomic_load(&x->nret) : atomic_load(&x->nclose);
}

/* An echo, then part of a line, then a reset. */
static int reset_mid_frame(const tc_addr *a)
{
    char got[6];
    int fd = tc_test_connect(a);
    if (fd < 0)
        return 1;
    if (tc_test_send_all(fd, "first\n", 6) < 0 || tc_test_recv_full(fd, got, 6) != 6 ||
        memcmp(got, "first\n", 6) != 0)
        return 2; /* the handler now waits for the next line */
    if (tc_test_send_all(fd, "abc", 3) < 0)
        return 3;
    return cl_reset(fd) < 0 ? 4 : 0;
}

/* Ask for the big reply, read the start of it, reset. */
static int reset_mid_reply(const tc_addr *a)
{
    static unsigned char part[64 << 10];
    int fd = tc_test_connect(a);
    if (fd < 0)
        return 1;
    if (tc_test_send_all(fd, "big\n", 4) < 0 ||
        tc_test_recv_full(fd, part, sizeof part) != (ssize_t)sizeof part)
        return 2;
    return cl_reset(fd) < 0 ? 4 : 0;
}

/* A reset in the middle of a frame, and in the middle of a large reply: the
 * connection ends with -ECONNRESET (or TC_EPARTIAL, or -EPIPE for the reply),
 * reported to handle_error, and the next client is served. */
CASES(hostile, reset, MSG_CASES, STREAM_CASES)
ParameterizedTest(struct hcase *p, hostile, reset, .timeout = 30)
{
    struct hx *x = hx_new();
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = x_config(p, x);
    cfg.workers = 2;
    tc_handler h = x_handler(p, x);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);

    cr_assert_eq(in_child(reset_mid_frame, &ts.addr), 0, "%s: client", case_name(p));
    TC_TEST_WAIT_UNTIL(ended(p, x) == 1, TC_TEST_WAIT_MS);
    cr_assert_eq(ended(p, x), 1, "%s: the reset connection did not end", case_name(p));
    int code = ended_with(p, x, 0);
    cr_assert(code == -ECONNRESET || code == TC_EPARTIAL, "%s: mid-frame reset ended with %s",
              case_name(p), tc_err_name(code));
    TC_TEST_WAIT_UNTIL(atomic_load(&x->nerr) == 1, TC_TEST_WAIT_MS);
    cr_assert_eq(atomic_load(&x->nerr), 1);
    cr_assert_eq(atomic_load(&x->err[0]), code);

    cr_assert_eq(in_child(reset_mid_reply, &ts.addr), 0, "%s: client", case_name(p));
    TC_TEST_WAIT_UNTIL(ended(p, x) == 2, TC_TEST_WAIT_MS);
    cr_assert_eq(ended(p, x), 2, "%s: the reset reply did not end", case_name(p));
    code = ended_with(p, x, 1);
    cr_assert(code == -ECONNRESET || code == -EPIPE, "%s: mid-reply reset ended with %s",
              case_name(p), tc_err_name(code));
    TC_TEST_WAIT_UNTIL(atomic_load(&x->nerr) == 2, TC_TEST_WAIT_MS);
    cr_assert_eq(atomic_load(&x->nerr), 2);
    cr_assert_eq(atomic_load(&x->err[1]), code);

    cl_roundtrip(&ts.addr, "after");
    wait_idle(&ts, TC_TEST_WAIT_MS);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    cr_assert_eq(atomic_load(&x->finishes), 3);
    tc_test_expect_counts(before, NULL, 0, case_name(p));
    hx_free(x);
}

/* The peer half-closes after two lines: both are answered, then the
 * connection ends cleanly (reason 0, nothing reported). */
CASES(hostile, half_close, MSG_CASES, STREAM_CASES)
ParameterizedTest(struct hcase *p, hostile, half_close, .timeout = 30)
{
    struct hx *x = hx_new();
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = x_config(p, x);
    cfg.workers = 2;
    tc_handler h = x_handler(p, x);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    int fd = tc_test_connect_ok(&ts.addr);
    cl_send(fd, "one\ntwo\n", 8);
    cr_assert_eq(shutdown(fd, SHUT_WR), 0);
    char got[16];
    cr_assert_eq(tc_test_recv_full(fd, got, sizeof got), 8, "%s: replies", case_name(p));
    cr_assert_eq(memcmp(got, "one\ntwo\n", 8), 0);
    cr_assert_eq(tc_test_recv_eof(fd), 0, "%s: no end of stream", case_name(p));
    close(fd);
    wait_idle(&ts, TC_TEST_WAIT_MS);
    cr_assert_eq(ended(p, x), 1);
    cr_assert_eq(ended_with(p, x, 0), 0, "%s: ended with %s", case_name(p),
                 tc_err_name(ended_with(p, x, 0)));
    cr_assert_eq(atomic_load(&x->nerr), 0);
    cr_assert_eq(atomic_load(&x->messages), 2);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, case_name(p));
    hx_free(x);
}

/* The peer asks for a 256 KiB reply and half-closes as soon as its first
 * byte arrives, reading nothing more meanwhile: its receive buffer and the
 * server's send buffer are at their minimum, so most of the reply is still
 * queued in the server when the end of stream reaches it. The whole reply arrives, then end of
 * stream; the connection ends cleanly (reason 0, nothing reported). */
CASES(hostile, half_close_mid_reply, MSG_CASES)
ParameterizedTest(struct hcase *p, hostile, half_close_mid_reply, .timeout = 30)
{
    static unsigned char got[REPLY + 1];
    struct hx *x = hx_new();
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = x_config(p, x);
    cfg.workers = 2;
    tc_handler h = x_handler(p, x);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    int fd = socket(tc_addr_family(&ts.addr), SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    int small = 4096; /* before connecting: the window offered stays small */
    cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    struct timeval tv = {.tv_sec = TC_TEST_WAIT_MS / 1000,
                         .tv_usec = (TC_TEST_WAIT_MS % 1000) * 1000};
    cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    cr_assert_eq(connect(fd, &ts.addr.u.sa, ts.addr.len), 0, "connect: %s", strerror(errno));
    cl_send(fd, "s\n", 2);
    cr_assert_eq(tc_test_recv_full(fd, got, 1), 1, "%s: no reply", case_name(p));
    cr_assert_eq(shutdown(fd, SHUT_WR), 0);
    ssize_t n = tc_test_recv_full(fd, got + 1, sizeof got - 1);
    cr_assert_eq(n + 1, (ssize_t)REPLY, "%s: %zd bytes of a %zu-byte reply, then end of stream",
                 case_name(p), n + 1, REPLY);
    close(fd);
    wait_idle(&ts, TC_TEST_WAIT_MS);
    cr_assert_eq(ended(p, x), 1);
    cr_assert_eq(ended_with(p, x, 0), 0, "%s: ended with %s", case_name(p),
                 tc_err_name(ended_with(p, x, 0)));
    cr_assert_eq(atomic_load(&x->nerr), 0);
    cr_assert_eq(atomic_load(&x->messages), 1);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, case_name(p));
    hx_free(x);
}

/* ---- clients that never read ---------------------------------------------------------- */

/* A handler writing a reply far larger than the socket buffers to a client
 * that never reads: its send gives up with -ETIMEDOUT after conn_timeout_ms
 * (reported to handle_error) instead of blocking forever, and other clients
 * are served meanwhile (inline: afterwards). Message style in pool mode is
 * left out, as event mode is: sends from on_message never block there (the
 * output queue and backpressure apply: see pool_never_reads below). */
CASES(hostile, never_reads, BLOCKING_MSG_CASES, STREAM_CASES)
ParameterizedTest(struct hcase *p, hostile, never_reads, .timeout = 30)
{
    const int T = tc_test_ms(300);
    struct hx *x = hx_new();
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = x_config(p, x);
    cfg.conn_timeout_ms = T;
    cfg.workers = 2;
    tc_handler h = x_handler(p, x);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    int fd = tc_test_connect_ok(&ts.addr);
    int64_t t0 = tc_test_now_ms();
    cl_send(fd, "big\n", 4);
    TC_TEST_WAIT_UNTIL(atomic_load(&x->messages) == 1, TC_TEST_WAIT_MS);
    if (p->mode != TC_MODE_INLINE)
        cl_roundtrip(&ts.addr, "meanwhile");
    TC_TEST_WAIT_UNTIL(atomic_load(&x->nerr) == 1, T + TC_TEST_WAIT_MS);
    int64_t took = tc_test_now_ms() - t0;
    cr_assert_eq(atomic_load(&x->nerr), 1, "%s: the blocked send was not reported", case_name(p));
    cr_assert_eq(atomic_load(&x->err[0]), -ETIMEDOUT, "%s: reported %s", case_name(p),
                 tc_err_name(atomic_load(&x->err[0])));
    cr_assert_geq(took, T - 20, "%s: gave up after %lld ms", case_name(p), (long long)took);
    cr_assert_lt(took, 3 * T + 500, "%s: gave up after %lld ms", case_name(p), (long long)took);
    if (p->mode == TC_MODE_INLINE)
        cl_roundtrip(&ts.addr, "after");
    cl_close(fd);
    wait_idle(&ts, TC_TEST_WAIT_MS);
    if (p->stream)
        cr_assert_eq(count_of(&x->nret, x->ret, -ETIMEDOUT), 1);
    else
        cr_assert_eq(count_of(&x->nclose, x->reason, -ETIMEDOUT), 1);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, case_name(p));
    hx_free(x);
}

/* Event mode (and pool mode, message style, whose workers send as the
 * loop does): a client pipelines thousands of requests, each answered with
 * 256 KiB, and reads nothing. Backpressure stops reading it, so the replies
 * produced and the memory queued stay bounded (far under the 1 GiB its
 * requests ask for); another client is served meanwhile; the drain deadline
 * ends it and serve_forever returns. */
static void loop_never_reads(tc_mode mode, int workers)
{
    enum { REQS = 4000 };
    const struct hcase ev = {mode, 0};
    if (!tc_test_mode_enabled(mode))
        cr_skip_test("%s mode not selected by TC_TEST_MODES", tc_mode_name(mode));
    ah_init();
    struct hx *x = hx_new();
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = x_config(&ev, x);
    cfg.workers = workers;
    cfg.drain_timeout_ms = tc_test_ms(300);
    tc_handler h = x_handler(&ev, x);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    ah_track_start();
    int fd = tc_test_connect_ok(&ts.addr);
    static char reqs[REQS * 2];
    for (int i = 0; i < REQS; i++)
        memcpy(reqs + 2 * i, "r\n", 2);
    cl_send(fd, reqs, sizeof reqs);
    /* Let the loop answer until it pauses: the count settles. */
    int last = -1, now;
    int64_t settled = tc_test_now_ms();
    while (tc_test_now_ms() - settled < tc_test_ms(300)) {
        tc_test_nap_ms(10);
        if ((now = atomic_load(&x->messages)) != last) {
            last = now;
            settled = tc_test_now_ms();
        }
    }
    cr_assert_gt(last, 0);
    cr_assert_lt(last, 128, "%d replies of 256 KiB produced for a client reading none", last);
    cl_roundtrip(&ts.addr, "meanwhile"); /* the loop is not blocked */
    TC_TEST_WAIT_UNTIL(atomic_load(&x->nclose) == 1, TC_TEST_WAIT_MS);
    cr_assert_eq(atomic_load(&x->nclose), 1);
    cr_assert_eq(atomic_load(&x->reason[0]), 0);
    size_t largest = ah_track_stop();
    cr_assert_lt(largest, (size_t)4 << 20, "%zu bytes queued at once", largest);
    int64_t t0 = tc_test_now_ms();
    cr_assert_eq(tc_server_shutdown(ts.srv), 0);
    cr_assert_eq(tc_test_server_join(&ts), 0);
    int64_t took = tc_test_now_ms() - t0;
    cr_assert_lt(took, tc_test_ms(300) + 1500, "the drain took %lld ms", (long long)took);
    cr_assert_eq(atomic_load(&x->nclose), 2);
    cr_assert_eq(atomic_load(&x->reason[1]), TC_ESHUTDOWN, "ended with %s",
                 tc_err_name(atomic_load(&x->reason[1])));
    cr_assert_eq(atomic_load(&x->nerr), 0);
    cl_close(fd);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, case_name(&ev));
    hx_free(x);
}

Test(hostile, event_never_reads_one_loop) { loop_never_reads(TC_MODE_EVENT, 1); }
Test(hostile, event_never_reads_two_loops) { loop_never_reads(TC_MODE_EVENT, 2); }
Test(hostile, pool_never_reads) { loop_never_reads(TC_MODE_POOL, 2); }

/* ---- floods ------------------------------------------------------------------------------ */

/* 64 clients at once against max_conns 4: never more than 4 handlers live
 * (counted by the handlers themselves), nor server-side descriptors for more;
 * every client is served, in the order it connected (the listen backlog is
 * a queue). */
CASES(hostile, flood, MSG_CASES)
ParameterizedTest(struct hcase *p, hostile, flood, .timeout = 30)
{
    enum { N = 64, MAX = 4 };
    struct hx *x = hx_new();
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = x_config(p, x);
    cfg.max_conns = MAX;
    cfg.workers = 2;
    cfg.queue_len = 2;
    tc_handler h = x_handler(p, x);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    const int base = tc_test_count_fds(); /* the server's own descriptors included */
    int fd[N], port[N], done[N] = {0};
    for (int i = 0; i < N; i++) {
        fd[i] = tc_test_connect_ok(&ts.addr);
        port[i] = cl_port(fd[i]);
        char line[16];
        int n = snprintf(line, sizeof line, "%d\n", i);
        cl_send(fd[i], line, (size_t)n);
    }
    /* Server-side descriptors: a socket per live connection (forking: and a
     * pidfd per child). */
    const int per_conn = p->mode == TC_MODE_FORKING ? 2 : 1;
    int left = N, worst = 0;
    int64_t end = tc_test_now_ms() + 2 * TC_TEST_WAIT_MS;
    while (left > 0 && tc_test_now_ms() < end) {
        struct pollfd pf[N];
        for (int i = 0; i < N; i++)
            pf[i] = (struct pollfd){.fd = done[i] ? -1 : fd[i], .events = POLLIN};
        if (poll(pf, N, 100) <= 0)
            continue;
        for (int i = 0; i < N; i++) {
            if (!pf[i].revents)
                continue;
            char line[16], want[16];
            int n = snprintf(want, sizeof want, "%d\n", i);
            ssize_t r = tc_test_recv_full(fd[i], line, (size_t)n);
            if (r != n || memcmp(line, want, (size_t)n) != 0)
                cr_assert_fail("%s: client %d got %zd bytes", case_name(p), i, r);
            int extra = tc_test_count_fds() - base - left;
            if (extra > worst)
                worst = extra;
            cl_close(fd[i]);
            done[i] = 1;
            left--;
        }
    }
    cr_assert_eq(left, 0, "%s: %d clients never served", case_name(p), left);
    wait_idle(&ts, TC_TEST_WAIT_MS);
    int cap = p->mode == TC_MODE_INLINE ? 1 : MAX;
    cr_assert_leq(atomic_load(&x->peak), cap, "%s: %d handlers live at once", case_name(p),
                  atomic_load(&x->peak));
    tc_stats st;
    cr_assert_eq(tc_server_stats(ts.srv, &st), 0);
    cr_assert_leq(st.peak_active, (unsigned)cap);
    cr_assert_eq(st.accepted, N);
    /* Beyond the server's own descriptors: those of its live connections. */
    cr_assert_leq(worst, cap * per_conn + 2, "%s: %d server descriptors", case_name(p), worst);
    cr_assert_eq(atomic_load(&x->norder), N);
    for (int i = 0; i < N; i++)
        cr_assert_eq(atomic_load(&x->order[i]), port[i], "%s: client %d accepted out of turn",
                     case_name(p), i);
    cr_assert_eq(atomic_load(&x->nerr), 0);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, case_name(p));
    hx_free(x);
}
