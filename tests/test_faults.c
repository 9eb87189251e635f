/* SPDX-License-Identifier: MIT */
/* Faults from the system: out of descriptors on accept (no busy loop, only
 * real drops reported, recovery), allocation failures walked site by site
 * (tc_server_create, tc_dial, serving a connection, the channel's buffers)
 * with a failing-malloc hook (tests/alloc_hook.c), signals interrupting
 * every blocking call, SIGPIPE never raised, and a shutdown arriving while a
 * handler is in the middle of a large write. TC_TEST_MODES restricts modes. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "accept_hook.h"
#include "alloc_hook.h"
#include "helpers.h"

/* ---- modes --------------------------------------------------------------------------- */

#define MODE_PARAMS(suite, test, ...)                                                              \
    ParameterizedTestParameters(suite, test)                                                       \
    {                                                                                              \
        static const tc_mode want[] = {__VA_ARGS__};                                               \
        static tc_mode params[sizeof want / sizeof want[0]];                                       \
        size_t n = 0;                                                                              \
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)                                  \
            if (tc_test_mode_enabled(want[i]))                                                             \
                params[n++] = want[i];                                                             \
        return cr_make_param_array(tc_mode, params, n);                                            \
    }

/* ---- what the server saw (shared with forked children) -------------------------------------- */

#define NREC 256

struct fx {
    atomic_int rec_lock;                /* tc_test_rec: the records below */
    atomic_int drops;                /* log: "dropping a connection" */
    atomic_int other_logs;           /* log: any other warning or error */
    char first_log[256];             /* the first of those */
    atomic_int nerr, err[NREC];      /* handle_error's codes */
    atomic_int nclose, reason[NREC]; /* on_close's reasons */
    atomic_int setups, finishes, messages;
    atomic_int nres, res[NREC];      /* results recorded by handlers */
    atomic_int started;              /* a handler began its long write */
    atomic_uint handler_tid_set;
    pthread_t handler_tid;           /* the thread running the last handler (threading, pool) */
};

static struct fx *fx_new(void)
{
    void *p = mmap(NULL, sizeof(struct fx), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    cr_assert_neq(p, MAP_FAILED);
    return p;
}

static void fx_free(struct fx *x)
{
    munmap(x, sizeof *x);
}

static void rec(struct fx *x, atomic_int *n, atomic_int *arr, int v)
{
    tc_test_rec(&x->rec_lock, n, arr, NREC, v);
}

static int last_of(atomic_int *n, atomic_int *arr)
{
    int k = atomic_load(n);
    return k > 0 && k <= NREC ? atomic_load(&arr[k - 1]) : 0;
}

static void f_log(tc_server *srv, tc_log_level level, const char *msg, void *ctx)
{
    struct fx *x = ctx;
    (void)srv;
    if (strstr(msg, "dropping a connection")) {
        atomic_fetch_add(&x->drops, 1);
    } else if (level <= TC_LOG_WARN && atomic_fetch_add(&x->other_logs, 1) == 0) {
        snprintf(x->first_log, sizeof x->first_log, "%s", msg);
    }
}

static void f_error(tc_server *srv, tc_conn *conn, int err, void *ctx)
{
    struct fx *x = ctx;
    (void)srv, (void)conn;
    rec(x, &x->nerr, x->err, err);
}

static int f_setup(tc_conn *c, void *ctx)
{
    struct fx *x = ctx;
    (void)c;
    atomic_fetch_add(&x->setups, 1);
    return 0;
}

static int f_finish(tc_conn *c, void *ctx)
{
    struct fx *x = ctx;
    (void)c;
    atomic_fetch_add(&x->finishes, 1);
    return 0;
}

static void f_close(tc_conn *c, int reason, void *ctx)
{
    struct fx *x = ctx;
    (void)c;
    rec(x, &x->nclose, x->reason, reason);
}

#define BIG ((size_t)64 << 20)
static unsigned char big_buf[BIG]; /* zero pages: costs address space only */
#define LARGE (20 * 1024) /* over the write buffer: printf formats in a temporary */
static char large_line[LARGE + 2];

/* Echo each line; "big" is answered with BIG bytes (raw). */
static int f_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    struct fx *x = ctx;
    atomic_fetch_add(&x->messages, 1);
    if (len == 4 && memcmp(msg, "half", 4) == 0) { /* a send after our own half-close */
        int rc = tc_conn_shutdown_write(c);
        ssize_t sent = rc < 0 ? rc : tc_conn_send(c, "late", 4);
        return sent < 0 ? (int)sent : 0;
    }
    if (len == 3 && memcmp(msg, "big", 3) == 0) {
        atomic_store(&x->started, 1);
        ssize_t n = tc_conn_send_all(c, big_buf, BIG);
        return n < 0 ? (int)n : 0;
    }
    ssize_t sent = tc_conn_send(c, msg, len);
    return sent < 0 ? (int)sent : 0;
}

static tc_handler f_handler(struct fx *x)
{
    tc_handler h = TC_HANDLER_INIT;
    h.setup = f_setup;
    h.finish = f_finish;
    h.on_message = f_message;
    h.on_close = f_close;
    h.ctx = x;
    return h;
}

static tc_server_config f_config(tc_mode mode, struct fx *x)
{
    tc_server_config cfg = tc_test_config();
    cfg.mode = mode;
    cfg.workers = 2;
    cfg.drain_timeout_ms = tc_test_ms(2000);
    cr_assert_eq(tc_codec_delimited(&cfg.codec, "\n", 1), 0);
    cfg.hooks.log = f_log;
    cfg.hooks.handle_error = f_error;
    cfg.hooks.ctx = x;
    return cfg;
}

static void wait_idle(tc_test_server *ts)
{
    tc_stats st;
    TC_TEST_WAIT_UNTIL((tc_server_stats(ts->srv, &st), st.active == 0), TC_TEST_WAIT_MS);
    cr_assert_eq(st.active, 0, "%u connections still live", st.active);
}

/* ---- raw clients ---------------------------------------------------------------------------- */

static void cl_close(int fd)
{
    shutdown(fd, SHUT_RDWR);
    close(fd);
}

/* Send line + "\n", expect it back: 0, or -1 if the echo did not come. */
static int cl_try_echo(int fd, const char *line)
{
    char want[128], got[128];
    int n = snprintf(want, sizeof want, "%s\n", line);
    if (tc_test_send_all(fd, want, (size_t)n) < 0)
        return -1;
    ssize_t r = tc_test_recv_full(fd, got, (size_t)n);
    return r == n && memcmp(got, want, (size_t)n) == 0 ? 0 : -1;
}

static void cl_echo(int fd, const char *line)
{
    cr_assert_eq(cl_try_echo(fd, line), 0, "no echo of \"%s\"", line);
}

static void cl_roundtrip(const tc_addr *a, const char *line)
{
    int fd = tc_test_connect_ok(a);
    cl_echo(fd, line);
    cl_close(fd);
}

/* The server ended the connection: 0 for end of stream or a reset. */
static int cl_closed(int fd)
{
    char c;
    for (;;) {
        ssize_t n = recv(fd, &c, 1, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return 0;
        if (n < 0 && errno != EINTR)
            return -errno;
    }
}

TestSuite(faults, .timeout = 30, .fini = tc_test_kill_children);

/* ---- out of descriptors on accept ------------------------------------------------------------ */

static int64_t thread_cpu_ns(pthread_t t)
{
    clockid_t cid;
    struct timespec ts;
    cr_assert_eq(pthread_getcpuclockid(t, &cid), 0);
    cr_assert_eq(clock_gettime(cid, &ts), 0);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The process runs out of descriptors (this test's process only: every slot
 * under RLIMIT_NOFILE taken) while clients keep connecting. The limit is
 * lowered before the server starts, as a ring's accept requests read it when
 * they are submitted, and the slots are filled after. The
 * serving thread must not spin on the ready listener: its CPU time over the
 * window stays under a fifth of the wall time. Each waiting client is
 * dropped and logged once, and only those (Linux fails accept with EMFILE
 * before looking at the queue, so an accept with nobody waiting must not
 * count as a drop); a connection accepted before keeps being served; once
 * descriptors are free again, clients are accepted again. */
MODE_PARAMS(faults, accept_out_of_descriptors, TC_MODE_INLINE, TC_MODE_THREADING, TC_MODE_POOL,
            TC_MODE_EVENT)
ParameterizedTest(tc_mode *mode, faults, accept_out_of_descriptors, .timeout = 30)
{
    enum { K = 8, HEADROOM = 256 };
    static int fill[HEADROOM + 64];
    const int W = tc_test_ms(500);
    const char *name = tc_mode_name(*mode);
    struct fx *x = fx_new();
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = f_config(*mode, x);
    cfg.workers = 1;
    tc_handler h = f_handler(x);
    struct rlimit old;
    tc_test_nofile_lower(&old, HEADROOM); /* the server's own descriptors, the clients' */
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    int a = -1;
    if (*mode != TC_MODE_INLINE) { /* inline serves one connection at a time */
        a = tc_test_connect_ok(&ts.addr);
        cl_echo(a, "before");
    }
    int cl[K + 1];
    for (int i = 0; i <= K; i++) {
        cl[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(cl[i], 0);
        struct timeval tv = {TC_TEST_WAIT_MS / 1000, 0};
        setsockopt(cl[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    int nfill = tc_test_nofile_fill(fill, (int)(sizeof fill / sizeof fill[0]));
    int probe = dup(0);
    int probe_err = errno;

    int64_t cpu0 = thread_cpu_ns(ts.thread), t0 = tc_test_now_ns();
    int during = 0;
    for (int i = 0; i < K; i++) {
        if (connect(cl[i], &ts.addr.u.sa, ts.addr.len) < 0)
            break;
        if (a >= 0 && cl_try_echo(a, "during") == 0)
            during++;
        tc_test_nap_ms(W / K); /* pacing: clients keep arriving through the window */
    }
    int64_t cpu = thread_cpu_ns(ts.thread) - cpu0, wall = tc_test_now_ns() - t0;
    /* Dropped clients see the end of the stream (bounded: a server that
     * cannot drop them leaves them waiting). */
    int closed = 0;
    int64_t end = tc_test_now_ms() + TC_TEST_WAIT_MS;
    for (int i = 0; i < K; i++) {
        struct pollfd p = {.fd = cl[i], .events = POLLIN};
        int left = (int)(end - tc_test_now_ms());
        if (poll(&p, 1, left > 0 ? left : 0) == 1)
            closed += cl_closed(cl[i]) == 0;
    }
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);

    cr_assert_lt(probe, 0, "descriptors were not exhausted");
    cr_assert_eq(probe_err, EMFILE);
    cr_assert_lt(cpu * 5, wall, "%s: the serving thread used %lld ms of CPU in %lld ms", name,
                 (long long)(cpu / 1000000), (long long)(wall / 1000000));
    cr_assert_eq(closed, K, "%s: %d of %d clients dropped", name, closed, K);
    cr_assert_eq(atomic_load(&x->drops), K, "%s: %d drops logged for %d clients", name,
                 atomic_load(&x->drops), K);
    cr_assert_eq(atomic_load(&x->other_logs), 0, "%s: logged \"%s\"", name, x->first_log);
    if (a >= 0)
        cr_assert_eq(during, K, "%s: the connection accepted before was not served", name);

    /* Descriptors are back: the next client is accepted and served. */
    cr_assert_eq(connect(cl[K], &ts.addr.u.sa, ts.addr.len), 0);
    if (a >= 0)
        cl_echo(a, "still");
    if (a >= 0)
        cl_close(a);
    cl_echo(cl[K], "recovered");
    for (int i = 0; i <= K; i++)
        cl_close(cl[i]);
    wait_idle(&ts);
    tc_stats st;
    cr_assert_eq(tc_server_stats(ts.srv, &st), 0);
    cr_assert_eq(st.accepted, a >= 0 ? 2u : 1u, "%s: %llu accepted", name, st.accepted);
    cr_assert_eq(atomic_load(&x->nerr), 0);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, name);
    fx_free(x);
}

/* The descriptors of this process that are /dev/null, as flags over [0, n). */
static void devnull_fds(unsigned char *set, int n)
{
    memset(set, 0, (size_t)n);
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        char path[320], link[64];
        if (e->d_name[0] == '.' || fd == dirfd(d) || fd >= n)
            continue;
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(path, link, sizeof link - 1);
        if (len > 0) {
            link[len] = '\0';
            set[fd] = strcmp(link, "/dev/null") == 0;
        }
    }
    closedir(d);
}

static int64_t process_cpu_ns(void)
{
    struct rusage ru;
    cr_assert_eq(getrusage(RUSAGE_SELF, &ru), 0);
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
           ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

enum starvation { SPARE_LOST, SYSTEM_TABLE_FULL };

/* A client arrives while no descriptor can be had even with the spare freed:
 * SPARE_LOST lowers RLIMIT_NOFILE to the spare's own number with every slot
 * below it taken, so the spare cannot come back; SYSTEM_TABLE_FULL makes
 * accept fail with ENFILE (tests/accept_hook.c). The server must pause
 * accepting rather than spin on the ready listener: over a window in which
 * it fails ATTEMPTS times (and WINDOW_MS at least), the process's CPU time
 * stays under a fifth of the wall time; it logs the shortage once, keeps
 * serving the connection it has, neither takes nor drops the client
 * meanwhile, and accepts it once descriptors are back, without a connection
 * having to end first. */
static void starve(tc_mode mode, enum starvation how)
{
    enum { FDMAX = 4096, ATTEMPTS = 5, WINDOW_MS = 200 };
    static unsigned char null0[FDMAX], null1[FDMAX];
    static int fill[FDMAX];
    const char *name = tc_mode_name(mode);
    struct fx *x = fx_new();
    acc_init();
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = f_config(mode, x);
    cfg.workers = 1;
    /* Both starvations are made with accept4 in mind: the hook interposes
     * it, and the limit is lowered while serving, which a ring's accept
     * requests in flight would not see (tc_server_config::ring_accept);
     * accept_out_of_descriptors starves the ring's requests. */
    cfg.ring_accept = TC_OFF;
    tc_handler h = f_handler(x);
    devnull_fds(null0, FDMAX);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    devnull_fds(null1, FDMAX);
    int spare = -1, nspare = 0;
    for (int fd = 0; fd < FDMAX; fd++)
        if (null1[fd] && !null0[fd])
            spare = fd, nspare++;
    cr_assert_eq(nspare, 1, "%d new /dev/null descriptors: which is the spare?", nspare);
    int a = -1;
    if (mode != TC_MODE_INLINE) { /* inline serves one connection at a time */
        a = tc_test_connect_ok(&ts.addr);
        cl_echo(a, "before");
    }
    int b = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(b, 0);
    struct timeval tv = {TC_TEST_WAIT_MS / 1000, 0};
    setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

    struct rlimit old, rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    int nfill = 0, probe = -1, probe_err = 0;
    if (how == SPARE_LOST) {
        /* Every slot below the spare taken, and the limit at the spare: the
         * slot its closing frees is out of reach. */
        for (int fd; (fd = fcntl(b, F_DUPFD_CLOEXEC, 0)) >= 0;) {
            if (fd > spare) {
                close(fd);
                break;
            }
            fill[nfill++] = fd;
        }
        rl = old;
        rl.rlim_cur = (rlim_t)spare;
        cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
        probe = fcntl(b, F_DUPFD_CLOEXEC, 0);
        probe_err = errno;
    } else {
        acc_fail(ENFILE, -1);
    }

    long f0 = acc_out_of_fds();
    int64_t cpu0 = process_cpu_ns(), t0 = tc_test_now_ns();
    int conn_rc = connect(b, &ts.addr.u.sa, ts.addr.len);
    int waited = acc_wait_out_of_fds(f0 + 2 * ATTEMPTS, TC_TEST_WAIT_MS);
    /* The window lasts a little longer than the failures it waited for, so
     * that a loop spinning on the listener shows in the ratio. */
    int during = 0, turns = 0;
    do {
        turns++;
        during += a >= 0 && cl_try_echo(a, "during") == 0;
        tc_test_nap_ms(20);
    } while (tc_test_now_ns() - t0 < (int64_t)WINDOW_MS * 1000000);
    int64_t cpu = process_cpu_ns() - cpu0, wall = tc_test_now_ns() - t0;
    struct pollfd p = {.fd = b, .events = POLLIN};
    int b_early = poll(&p, 1, 0); /* served or dropped while starved */
    tc_stats st;
    cr_assert_eq(tc_server_stats(ts.srv, &st), 0);
    unsigned long long accepted_starved = st.accepted;

    /* Descriptors are back. */
    if (how == SPARE_LOST) {
        cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
        for (int i = 0; i < nfill; i++)
            close(fill[i]);
    }
    acc_disarm();
    unsigned long long want = a >= 0 ? 2u : 1u;

    if (how == SPARE_LOST) {
        cr_assert_lt(probe, 0, "descriptors were not exhausted");
        cr_assert_eq(probe_err, EMFILE);
    }
    cr_assert_eq(conn_rc, 0, "connect: %s", strerror(errno));
    cr_assert_eq(waited, 0, "%s: %ld accepts failed for want of descriptors, not %d", name,
                 acc_out_of_fds() - f0, 2 * ATTEMPTS);
    cr_assert_lt(cpu * 5, wall, "%s: the process used %lld ms of CPU in %lld ms", name,
                 (long long)(cpu / 1000000), (long long)(wall / 1000000));
    cr_assert_eq(b_early, 0, "%s: the client was answered while descriptors were short", name);
    cr_assert_eq(accepted_starved, want - 1, "%s: %llu accepted", name, accepted_starved);
    if (a >= 0)
        cr_assert_eq(during, turns, "%s: the connection accepted before was not served", name);
    cr_assert_eq(atomic_load(&x->drops), 0, "%s: a client dropped", name);
    cr_assert_eq(atomic_load(&x->other_logs), 1, "%s: %d warnings, the first \"%s\"", name,
                 atomic_load(&x->other_logs), x->first_log);
    cr_assert(strstr(x->first_log, "pausing accepts"), "%s: logged \"%s\"", name, x->first_log);

    /* The client is taken at the end of the pause, while `a` still lives. */
    TC_TEST_WAIT_UNTIL((tc_server_stats(ts.srv, &st), st.accepted == want), TC_TEST_WAIT_MS);
    cr_assert_eq(st.accepted, want, "%s: %llu accepted once descriptors were back", name,
                 st.accepted);
    if (a >= 0) {
        cl_echo(a, "still");
        cl_close(a); /* a pool's one worker serves b once a has gone */
    }
    cl_echo(b, "recovered");
    cl_close(b);
    wait_idle(&ts);
    cr_assert_eq(atomic_load(&x->nerr), 0);
    cr_assert_eq(atomic_load(&x->other_logs), 1, "%s: logged \"%s\" and more", name, x->first_log);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, name);
    fx_free(x);
}

MODE_PARAMS(faults, accept_spare_lost, TC_MODE_INLINE, TC_MODE_THREADING, TC_MODE_POOL,
            TC_MODE_EVENT)
ParameterizedTest(tc_mode *mode, faults, accept_spare_lost, .timeout = 30)
{
    starve(*mode, SPARE_LOST);
}

MODE_PARAMS(faults, accept_system_table_full, TC_MODE_INLINE, TC_MODE_THREADING, TC_MODE_POOL,
            TC_MODE_EVENT)
ParameterizedTest(tc_mode *mode, faults, accept_system_table_full, .timeout = 30)
{
    starve(*mode, SYSTEM_TABLE_FULL);
}

/* Event mode on io_uring takes connections with the ring's accept requests,
 * not accept4: with every accept4 failing (ENFILE, the hook), a client is
 * served all the same and no call failed; with ring_accept TC_OFF the loop
 * polls and calls accept4, so the client waits (accept paused) until the
 * hook is disarmed. Skipped where the kernel refuses io_uring. */
static void ring_accept_or_not(int ring)
{
    struct fx *x = fx_new();
    acc_init();
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = f_config(TC_MODE_EVENT, x);
    cfg.workers = 1;
    cfg.backend = TC_BACKEND_IO_URING;
    cfg.ring_accept = ring ? TC_DEFAULT : TC_OFF;
    tc_handler h = f_handler(x);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    if (tc_server_backend(ts.srv) != TC_BACKEND_IO_URING) {
        cr_assert_eq(tc_test_server_stop(&ts), 0);
        fx_free(x);
        cr_skip("the kernel refuses io_uring here");
    }
    acc_fail(ENFILE, -1);
    int b = tc_test_connect_ok(&ts.addr);
    struct timeval tv = {TC_TEST_WAIT_MS / 1000, 0};
    setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (ring) {
        cl_echo(b, "ring");
        cr_assert_eq(acc_out_of_fds(), 0, "%ld accept4 calls failed", acc_out_of_fds());
    } else {
        cr_assert_eq(acc_wait_out_of_fds(2, TC_TEST_WAIT_MS), 0, "accept4 was not called");
        struct pollfd p = {.fd = b, .events = POLLIN};
        cr_assert_eq(poll(&p, 1, 0), 0, "answered while accept4 failed");
        acc_disarm();
        cl_echo(b, "polled"); /* taken at the end of the pause */
    }
    acc_disarm();
    cl_close(b);
    wait_idle(&ts);
    tc_stats st;
    cr_assert_eq(tc_server_stats(ts.srv, &st), 0);
    cr_assert_eq(st.accepted, 1u);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, ring ? "ring accepts" : "accept4");
    fx_free(x);
}

Test(faults, io_uring_accepts_without_accept4, .timeout = 30) { ring_accept_or_not(1); }
Test(faults, io_uring_ring_accept_off_calls_accept4, .timeout = 30) { ring_accept_or_not(0); }

/* ---- allocation failures, site by site ------------------------------------------------------- */

#define WALK_MAX 2000

static void expect_no_leak(const char *what)
{
    cr_expect_eq(ah_leak_check(), 0, "%s: LeakSanitizer found leaks (see above)", what);
}

static const tc_mode all_modes[] = {TC_MODE_INLINE, TC_MODE_THREADING, TC_MODE_FORKING,
                                    TC_MODE_POOL, TC_MODE_EVENT};

/* tc_server_create in every mode, with a trusted-proxy list to copy: every
 * allocation fails in turn; each failure is -ENOMEM (-EAGAIN when a pool
 * worker cannot be started), leaves *out alone, and releases everything
 * (descriptors, threads, memory). */
Test(faults, server_create_out_of_memory, .timeout = 60)
{
    ah_init();
    for (size_t m = 0; m < sizeof all_modes / sizeof all_modes[0]; m++) {
        if (!tc_test_mode_enabled(all_modes[m]))
            continue;
        const char *name = tc_mode_name(all_modes[m]);
        struct fx *x = fx_new();
        tc_test_counts before = tc_test_counts_now(NULL, 0);
        tc_server_config cfg = f_config(all_modes[m], x);
        cfg.proxy_trusted = "10.0.0.0/8, ::1/128, unix";
        tc_handler h = f_handler(x);
        long n;
        for (n = 1; n < WALK_MAX; n++) {
            tc_server *srv = (tc_server *)&n; /* must stay untouched on failure */
            ah_fail_nth(n, AH_THIS_THREAD);
            int rc = tc_server_create(&srv, &cfg, &h);
            int fired = ah_disarm();
            if (!fired) {
                cr_assert_eq(rc, 0, "%s: %s with no failure", name, tc_err_name(rc));
                tc_server_destroy(srv);
                break;
            }
            cr_assert(rc == -ENOMEM || rc == -EAGAIN, "%s: allocation %ld failed: %s", name, n,
                      tc_err_name(rc));
            cr_assert_eq(srv, (tc_server *)&n, "%s: *out written on failure", name);
            tc_test_expect_counts(before, NULL, 0, name);
        }
        cr_assert_gt(n, 1, "%s: tc_server_create allocates nothing?", name);
        cr_log_info("%s: tc_server_create makes %ld allocations", name, n - 1);
        tc_test_expect_counts(before, NULL, 0, name);
        fx_free(x);
    }
    expect_no_leak("tc_server_create");
}

/* tc_dial to a numeric address and to a name (getaddrinfo allocates too):
 * each failure is -ENOMEM (a resolver that could not allocate may also say
 * the name does not resolve), *out stays alone, nothing leaks; then the
 * channel works. */
Test(faults, dial_out_of_memory, .timeout = 60)
{
    ah_init();
    struct fx *x = fx_new();
    tc_server_config cfg = f_config(TC_MODE_THREADING, x);
    tc_handler h = f_handler(x);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    tc_dial_config o = TC_DIAL_CONFIG_INIT;
    o.timeout_ms = TC_TEST_WAIT_MS;
    cr_assert_eq(tc_codec_delimited(&o.codec, "\n", 1), 0);
    char byname[TC_ADDR_STRLEN];
    snprintf(byname, sizeof byname, "localhost:%d", tc_addr_port(&ts.addr));
    const char *targets[] = {ts.addr_str, byname};
    for (int t = 0; t < 2; t++) {
        tc_conn *c;
        if (t == 1) { /* the resolver's first use loads modules for good: not a leak */
            if (tc_dial(&c, byname, &o) < 0)
                cr_skip_test("localhost does not resolve here");
            tc_conn_close(c);
        }
        wait_idle(&ts); /* the server's side of the last channel closed too */
        tc_test_counts before = tc_test_counts_now(NULL, 0);
        long n;
        for (n = 1; n < WALK_MAX; n++) {
            c = (tc_conn *)&n;
            ah_fail_nth(n, AH_THIS_THREAD);
            int rc = tc_dial(&c, targets[t], &o);
            int fired = ah_disarm();
            if (!fired) {
                cr_assert_eq(rc, 0, "%s: %s with no failure", targets[t], tc_err_name(rc));
                break;
            }
            if (rc == 0) { /* the resolver had another way */
                tc_conn_close(c);
                continue;
            }
            cr_assert(rc == -ENOMEM || (t == 1 && rc == TC_ENORESOLVE),
                      "%s: allocation %ld failed: %s", targets[t], n, tc_err_name(rc));
            cr_assert_eq(c, (tc_conn *)&n, "*out written on failure");
            if (t == 0) {
                tc_test_expect_counts(before, NULL, 0, targets[t]);
            } else {
                /* The resolver may drop a descriptor it keeps (glibc's own
                 * cache) when it fails: none more than before, then. */
                int fds;
                TC_TEST_WAIT_UNTIL((fds = tc_test_count_fds()) <= before.fds, TC_TEST_WAIT_MS);
                cr_assert_leq(fds, before.fds, "%s: %d descriptors, %d before", targets[t], fds,
                              before.fds);
            }
        }
        cr_log_info("tc_dial(%s) makes %ld allocations", targets[t], n - 1);
        cr_assert_eq(tc_conn_send(c, "dialled", 7), 7);
        const void *m;
        size_t len;
        cr_assert_eq(tc_conn_read_frame(c, &m, &len), 0);
        cr_assert(len == 7 && memcmp(m, "dialled", 7) == 0);
        tc_conn_close(c);
    }
    wait_idle(&ts);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    fx_free(x);
    expect_no_leak("tc_dial");
}

/* Accepting a connection and one echo exchange, with each allocation the
 * server makes for it failing in turn (in its threads: the serving thread,
 * handler threads, event loops). Either the exchange still works, and the
 * connection still ends at its idle timeout (no timer silently lost), or it
 * is closed and -ENOMEM (-EAGAIN: no thread for it) reported; never a crash
 * or a leak, and the next client is served. */
static void serve_walk(tc_mode m, int workers)
{
    const tc_mode *mode = &m;
    char name[32];
    snprintf(name, sizeof name, "%s/%d", tc_mode_name(m), workers);
    ah_init();
    struct fx *x = fx_new();
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = f_config(*mode, x);
    cfg.workers = workers;
    const int idle = tc_test_ms(200);
    cfg.idle_timeout_ms = idle; /* timers: the event loop's heap */
    tc_handler h = f_handler(x);
    tc_test_server ts;
    int threads = tc_test_count_threads();
    tc_test_server_start(&ts, NULL, &cfg, &h);
    /* Serving, with its threads started, before anything may fail (a loop
     * thread that cannot start stops the server: a different test). */
    int want = threads + 1 + (*mode == TC_MODE_POOL ? cfg.workers : 0) +
               (*mode == TC_MODE_EVENT ? cfg.workers - 1 : 0);
    int asleep;
    TC_TEST_WAIT_UNTIL((asleep = tc_test_threads_asleep()) >= want, TC_TEST_WAIT_MS);
    cr_assert_geq(asleep, want, "the server's threads did not settle");
    /* First a client that sends nothing: only its idle timeout (a timer armed
     * when it opens, the first of the loop's) ends it. Memory stays short
     * from the nth allocation on: a second try must not succeed by chance. */
    long n;
    for (n = 1; n < WALK_MAX; n++) {
        int errs = atomic_load(&x->nerr);
        ah_fail_from(n, AH_OTHER_THREADS);
        /* The clock starts before the connect: the server's idle clock starts
         * at its accept, which may come before connect() returns here, and
         * "closed before the timeout" must mean a failure closed it. */
        int64_t t0 = tc_test_now_ms();
        int fd = tc_test_connect_ok(&ts.addr);
        int closed = cl_closed(fd);
        int64_t waited = tc_test_now_ms() - t0;
        cl_close(fd);
        wait_idle(&ts);
        int fired = ah_disarm();
        cr_assert_eq(closed, 0, "%s: silent, allocation %ld: never closed", name, n);
        cr_assert_lt(waited, idle + tc_test_ms(1000), "%s: silent, allocation %ld: closed after "
                     "%lld ms", name, n, (long long)waited);
        if (!fired)
            break;
        if (waited < idle - 1) { /* not the timeout: the failure closed it, and said so */
            TC_TEST_WAIT_UNTIL(atomic_load(&x->nerr) > errs, TC_TEST_WAIT_MS);
            int e = last_of(&x->nerr, x->err);
            cr_assert(atomic_load(&x->nerr) > errs && (e == -ENOMEM || e == -EAGAIN),
                      "%s: silent, allocation %ld: closed early, reported %s", name, n,
                      tc_err_name(e));
        }
        /* No exchange in between: the next client meets the next allocation
         * (the first connection of a loop allocates its timers). */
    }
    cr_log_info("%s: %ld allocations to hold a silent connection", name, n - 1);
    int failed_exchanges = 0;
    for (n = 1; n < WALK_MAX; n++) {
        int errs = atomic_load(&x->nerr);
        ah_fail_nth(n, AH_OTHER_THREADS);
        int fd = tc_test_connect_ok(&ts.addr);
        int ok = cl_try_echo(fd, "ping") == 0;
        int64_t t0 = tc_test_now_ms();
        int closed = cl_closed(fd); /* by the idle timeout, or at once after a failure */
        int64_t waited = tc_test_now_ms() - t0;
        cl_close(fd);
        wait_idle(&ts);
        int fired = ah_disarm();
        cr_assert_eq(closed, 0, "%s: allocation %ld: the connection was never closed", name, n);
        cr_assert_lt(waited, idle + tc_test_ms(1000), "%s: allocation %ld: closed after %lld ms",
                     name, n, (long long)waited);
        if (!fired) {
            cr_assert(ok, "%s: no echo with no failure", name);
            break;
        }
        if (!ok) {
            failed_exchanges++;
            TC_TEST_WAIT_UNTIL(atomic_load(&x->nerr) > errs, TC_TEST_WAIT_MS);
            cr_assert_gt(atomic_load(&x->nerr), errs, "%s: allocation %ld failed silently",
                         name, n);
            int e = last_of(&x->nerr, x->err);
            cr_assert(e == -ENOMEM || e == -EAGAIN, "%s: allocation %ld: reported %s", name, n,
                      tc_err_name(e));
        }
        cl_roundtrip(&ts.addr, "after"); /* the server goes on */
        wait_idle(&ts);
    }
    cr_log_info("%s: %ld allocations to serve one exchange, %d failures cost it", name, n - 1,
                failed_exchanges);
    cr_assert_gt(n, 1);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, name);
    fx_free(x);
    expect_no_leak(name);
}

/* Each loop's first connection allocates the loop's timers; with one loop
 * the sequence of allocations is the same for every client, so the walk
 * meets each of them; with two, connections alternate (and go by mail). */
MODE_PARAMS(faults, serve_out_of_memory, TC_MODE_INLINE, TC_MODE_THREADING, TC_MODE_FORKING,
            TC_MODE_POOL, TC_MODE_EVENT)
ParameterizedTest(tc_mode *mode, faults, serve_out_of_memory, .timeout = 60)
{
    if (*mode == TC_MODE_EVENT)
        serve_walk(*mode, 1);
    serve_walk(*mode, 2);
}

/* An event-mode channel keeps its buffer state (struct tc__chanbuf) only
 * while it holds bytes: an idle one has none. A loop keeps one released
 * state for the next channel, so the allocation is only met while the loop
 * has none to spare: here, a fresh server's first bytes. Failing it closes
 * the connection with -ENOMEM reported (nothing half-read), the next client
 * is served, and nothing leaks. No timers (they would allocate too). */
Test(faults, idle_channel_buffer_state_out_of_memory, .timeout = 30)
{
    ah_init();
    struct fx *x = fx_new();
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = f_config(TC_MODE_EVENT, x);
    cfg.workers = 1;
    cfg.idle_timeout_ms = 0;
    cfg.conn_timeout_ms = 0;
    tc_handler h = f_handler(x);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    int fd = tc_test_connect_ok(&ts.addr);
    tc_stats st;
    TC_TEST_WAIT_UNTIL(atomic_load(&x->setups) == 1 && (tc_server_stats(ts.srv, &st), st.active == 1),
                       TC_TEST_WAIT_MS);
    cr_assert_eq(atomic_load(&x->setups), 1, "the connection was not set up");
    int errs = atomic_load(&x->nerr);
    ah_fail_nth(1, AH_OTHER_THREADS);
    int ok = cl_try_echo(fd, "first") == 0;
    int closed = cl_closed(fd);
    int fired = ah_disarm();
    cl_close(fd);
    cr_assert(fired, "no allocation when bytes came to an idle channel");
    cr_assert(!ok, "echoed without the buffer state");
    cr_assert_eq(closed, 0, "the connection was not closed");
    TC_TEST_WAIT_UNTIL(atomic_load(&x->nerr) > errs, TC_TEST_WAIT_MS);
    cr_assert_eq(last_of(&x->nerr, x->err), -ENOMEM, "reported %s",
                 tc_err_name(last_of(&x->nerr, x->err)));
    cl_roundtrip(&ts.addr, "after"); /* the server goes on */
    wait_idle(&ts);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, "idle channel");
    fx_free(x);
    expect_no_leak("idle channel");
}

/* The channel's buffers: each call whose allocation fails returns -ENOMEM
 * and takes or consumes nothing, so that the same call made again succeeds
 * and the peer sees each byte exactly once. A fresh channel for each call,
 * since buffers are allocated when first needed. */
enum op { OP_WRITE, OP_PRINTF, OP_PRINTF_LARGE, OP_READ_LINE, OP_READ_EXACT, OP_READ_FRAME,
          OP_PEEK, OP_READ, OP_SEND_ALL, OP_COUNT };
static const char *const op_names[] = {"write", "printf", "printf (large)", "read_line",
                                       "read_exact", "read_frame", "peek", "read", "send_all"};


/* Run op on c: its result (< 0 an error). */
static long do_op(enum op op, tc_conn *c, char *out, size_t *outlen)
{
    const void *v;
    const char *l;
    size_t n;
    ssize_t r;
    int rc;
    switch (op) {
    case OP_WRITE:
        return (long)tc_conn_write(c, "w\n", 2);
    case OP_PRINTF:
        return tc_conn_printf(c, "p%d\n", 1);
    case OP_PRINTF_LARGE:
        return tc_conn_printf(c, "%s\n", large_line);
    case OP_READ_LINE:
        rc = tc_conn_read_line(c, 0, &l, &n);
        if (rc == 0)
            memcpy(out, l, *outlen = n);
        return rc;
    case OP_READ_EXACT:
        r = tc_conn_read_exact(c, out, 3);
        *outlen = r > 0 ? (size_t)r : 0;
        return (long)r;
    case OP_READ_FRAME:
        rc = tc_conn_read_frame(c, &v, &n);
        if (rc == 0)
            memcpy(out, v, *outlen = n);
        return rc;
    case OP_PEEK:
        rc = tc_conn_peek(c, 3, &v, &n);
        if (rc == 0)
            memcpy(out, v, *outlen = n);
        return rc;
    case OP_READ:
        r = tc_conn_read(c, out, 3);
        *outlen = r > 0 ? (size_t)r : 0;
        return (long)r;
    case OP_SEND_ALL:
        return (long)tc_conn_send_all(c, "s\n", 2);
    default:
        return -EINVAL;
    }
}

Test(faults, channel_buffers_out_of_memory, .timeout = 60)
{
    ah_init();
    memset(large_line, 'L', LARGE);
    struct fx *x = fx_new();
    tc_server_config cfg = f_config(TC_MODE_THREADING, x);
    tc_handler h = f_handler(x);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    tc_dial_config o = TC_DIAL_CONFIG_INIT;
    o.timeout_ms = TC_TEST_WAIT_MS;
    cr_assert_eq(tc_codec_delimited(&o.codec, "\n", 1), 0);
    tc_codec_set_max_frame(&o.codec, 2 * LARGE);
    for (int op = 0; op < OP_COUNT; op++) {
        tc_conn *c;
        cr_assert_eq(tc_dial(&c, ts.addr_str, &o), 0);
        int reading = op >= OP_READ_LINE && op <= OP_READ;
        if (reading) { /* something to read: "abc" echoed, waiting in the socket */
            cr_assert_eq(tc_conn_send_all(c, "abc\n", 4), 0 + 4);
            struct pollfd p = {.fd = tc_conn_fd(c), .events = POLLIN};
            cr_assert_eq(poll(&p, 1, TC_TEST_WAIT_MS), 1);
        }
        static char out[LARGE + 8];
        size_t outlen = 0;
        long n, r = 0;
        int failures = 0;
        for (n = 1; n < WALK_MAX; n++) {
            ah_fail_nth(n, AH_THIS_THREAD);
            r = do_op((enum op)op, c, out, &outlen);
            int fired = ah_disarm();
            if (!fired)
                break;
            failures++;
            cr_assert_eq(r, -ENOMEM, "%s: allocation %ld failed: %s", op_names[op], n,
                         tc_err_name((int)r));
        }
        cr_assert_geq(r, 0, "%s: %s with no failure", op_names[op], tc_err_name((int)r));
        cr_log_info("%s: %d allocation(s) walked", op_names[op], failures);
        if (reading) {
            if (op == OP_PEEK)
                cr_assert_geq(outlen, 3, "%s: %zu bytes", op_names[op], outlen);
            else
                cr_assert_eq(outlen, 3, "%s: %zu bytes", op_names[op], outlen);
            cr_assert_eq(memcmp(out, "abc", 3), 0, "%s: wrong bytes", op_names[op]);
        } else {
            /* Sent (or buffered) once: the echo comes back once. */
            cr_assert_eq(tc_conn_flush(c), 0);
            cr_assert_eq(tc_conn_send_all(c, "end\n", 4), 4);
            const char *want = op == OP_WRITE ? "w" : op == OP_PRINTF ? "p1"
                               : op == OP_SEND_ALL ? "s" : large_line;
            const void *m;
            size_t len;
            cr_assert_eq(tc_conn_read_frame(c, &m, &len), 0);
            cr_assert(len == strlen(want) && memcmp(m, want, len) == 0, "%s: echo of %zu bytes",
                      op_names[op], len);
            cr_assert_eq(tc_conn_read_frame(c, &m, &len), 0);
            cr_assert(len == 3 && memcmp(m, "end", 3) == 0, "%s: sent twice?", op_names[op]);
        }
        tc_conn_close(c);
    }
    wait_idle(&ts);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    fx_free(x);
    expect_no_leak("channel buffers");
}

/* ---- signals: EINTR everywhere, SIGPIPE never ------------------------------------------------ */

static atomic_int g_usr2;

static void on_usr2(int sig)
{
    (void)sig;
    atomic_fetch_add(&g_usr2, 1);
}

/* A no-op SIGUSR2 without SA_RESTART: every blocking call it lands in fails with EINTR. */
static void install_usr2(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    cr_assert_eq(sigaction(SIGUSR2, &sa, NULL), 0);
}

/* A thread sending SIGUSR2 to a target thread every 200 us (until stopped,
 * or until a time given in ms, if any). */
struct hammer {
    pthread_t target, thread;
    atomic_int stop;
    int64_t until_ms;
};

static void *hammer_main(void *arg)
{
    struct hammer *hm = arg;
    while (!atomic_load(&hm->stop) && (!hm->until_ms || tc_test_now_ms() < hm->until_ms)) {
        pthread_kill(hm->target, SIGUSR2);
        struct timespec ts = {0, 200000}; /* pacing, not synchronisation */
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void hammer_start_until(struct hammer *hm, pthread_t target, int64_t until_ms)
{
    hm->target = target;
    hm->until_ms = until_ms;
    atomic_init(&hm->stop, 0);
    cr_assert_eq(pthread_create(&hm->thread, NULL, hammer_main, hm), 0);
}

static void hammer_start(struct hammer *hm, pthread_t target)
{
    hammer_start_until(hm, target, 0);
}

static void hammer_stop(struct hammer *hm)
{
    atomic_store(&hm->stop, 1);
    pthread_join(hm->thread, NULL);
}

/* A stream handler obeying commands, one per line:
 *   "slow N"  send N bytes of a pattern in 5 pieces, 30 ms apart;
 *   "split"   send "abc", then 50 ms later "def\n";
 *   "sink N"  read N bytes, then answer "ok";
 *   "wait N"  read a line with an N ms timeout, record its result and the
 *             ms it took, then answer "ok";
 *   "mute"    never read again: wait for the end of the stream.
 * It records its thread and each command's result in fx->res. */
static unsigned char pattern(size_t i)
{
    return (unsigned char)('a' + (i * 7 + (i >> 10)) % 26);
}

static int cmd_handle(tc_conn *c, void *ctx)
{
    struct fx *x = ctx;
    x->handler_tid = pthread_self();
    atomic_store(&x->handler_tid_set, 1);
    static unsigned char buf[1 << 16];
    for (;;) {
        const char *l;
        size_t n;
        int rc = tc_conn_read_line(c, 64, &l, &n);
        if (rc == TC_EOF)
            return 0;
        if (rc < 0)
            return rc;
        char cmd[65];
        memcpy(cmd, l, n);
        cmd[n] = '\0';
        long arg = 0;
        char *sp = strchr(cmd, ' ');
        if (sp)
            arg = strtol(sp + 1, NULL, 10);
        ssize_t r = 0;
        if (!strncmp(cmd, "slow", 4)) {
            unsigned char *p = malloc((size_t)arg);
            for (long i = 0; i < arg; i++)
                p[i] = pattern((size_t)i);
            for (int k = 0; k < 5 && r >= 0; k++) {
                size_t from = (size_t)arg * (size_t)k / 5, to = (size_t)arg * (size_t)(k + 1) / 5;
                r = tc_conn_send_all(c, p + from, to - from);
                tc_test_nap_ms(30);
            }
            free(p);
        } else if (!strcmp(cmd, "split")) {
            r = tc_conn_send_all(c, "abc", 3);
            tc_test_nap_ms(50);
            if (r >= 0)
                r = tc_conn_send_all(c, "def\n", 4);
        } else if (!strncmp(cmd, "sink", 4)) {
            size_t left = (size_t)arg;
            while (left > 0 && r >= 0) {
                r = tc_conn_read_exact(c, buf, left < sizeof buf ? left : sizeof buf);
                if (r > 0)
                    left -= (size_t)r;
            }
            rec(x, &x->nres, x->res, r < 0 ? (int)r : (int)arg);
            if (r >= 0)
                r = tc_conn_send_all(c, "ok\n", 3);
        } else if (!strncmp(cmd, "wait", 4)) {
            /* A read that times out: its result and how long it took. */
            const char *w;
            size_t wn;
            tc_conn_set_timeout(c, (int)arg);
            int64_t t0 = tc_test_now_ms();
            int wr = tc_conn_read_line(c, 64, &w, &wn);
            rec(x, &x->nres, x->res, wr);
            rec(x, &x->nres, x->res, (int)(tc_test_now_ms() - t0));
            tc_conn_set_timeout(c, 0);
            r = tc_conn_send_all(c, "ok\n", 3);
        } else if (!strcmp(cmd, "mute")) {
            /* Read nothing more: wait (bounded) for the peer to go. */
            struct pollfd p = {.fd = tc_conn_fd(c), .events = POLLRDHUP};
            while (poll(&p, 1, TC_TEST_WAIT_MS) < 0 && errno == EINTR)
                ;
            return 0;
        }
        if (r < 0)
            return (int)r;
    }
}

static tc_handler cmd_handler(struct fx *x)
{
    tc_handler h = TC_HANDLER_INIT;
    h.handle = cmd_handle;
    h.setup = f_setup;
    h.finish = f_finish;
    h.ctx = x;
    return h;
}

static void cmd(tc_conn *c, const char *text)
{
    cr_assert_eq(tc_conn_printf(c, "%s\n", text), (int)strlen(text) + 1);
    cr_assert_eq(tc_conn_flush(c), 0);
}

/* Wait for the end of an elapsed time measured from t0 (ms) to land within
 * [ms, ms + slack]. */
static void expect_took(int64_t t0, int ms, const char *what)
{
    int64_t took = tc_test_now_ms() - t0;
    cr_assert_geq(took, ms - 1, "%s: gave up after %lld ms, before its %d ms", what,
                  (long long)took, ms);
    cr_assert_lt(took, ms + tc_test_ms(500), "%s: took %lld ms for a %d ms timeout", what,
                 (long long)took, ms);
}

/* The client's calls, with its own thread hammered by signals: tc_dial,
 * tc_conn_read_exact and tc_conn_read_line across pauses, tc_conn_send_all
 * of 8 MiB to a server reading it, and timeouts (read, line, send) still
 * ending on time. Results as without signals. */
Test(faults, client_calls_survive_signals, .timeout = 60)
{
    enum { SLOW = 100000, SINK = 8 << 20 };
    const int T = tc_test_ms(200);
    install_usr2();
    struct fx *x = fx_new();
    tc_server_config cfg = f_config(TC_MODE_THREADING, x);
    tc_handler h = cmd_handler(x);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    struct hammer hm;
    hammer_start(&hm, pthread_self());
    int s0 = atomic_load(&g_usr2);

    tc_dial_config o = TC_DIAL_CONFIG_INIT;
    o.timeout_ms = TC_TEST_WAIT_MS;
    tc_conn *c;
    int rc = tc_dial(&c, ts.addr_str, &o);
    cr_assert_eq(rc, 0, "dial: %s", tc_err_name(rc));

    cmd(c, "slow 100000");
    static unsigned char got[SLOW];
    cr_assert_eq(tc_conn_read_exact(c, got, SLOW), SLOW);
    for (size_t i = 0; i < SLOW; i++)
        if (got[i] != pattern(i))
            cr_assert_fail("read_exact: byte %zu differs", i);

    cmd(c, "split");
    const char *l;
    size_t n;
    cr_assert_eq(tc_conn_read_line(c, 0, &l, &n), 0);
    cr_assert(n == 6 && memcmp(l, "abcdef", 6) == 0, "read_line: \"%.*s\"", (int)n, l);

    cmd(c, "sink 8388608");
    cr_assert_eq(tc_conn_send_all(c, big_buf, SINK), SINK);
    cr_assert_eq(tc_conn_read_line(c, 0, &l, &n), 0);
    cr_assert(n == 2 && memcmp(l, "ok", 2) == 0);
    cr_assert_eq(atomic_load(&x->res[0]), SINK);

    /* Timeouts: nothing comes, nothing is read. */
    cr_assert_eq(tc_conn_set_timeout(c, T), 0);
    int64_t t0 = tc_test_now_ms();
    cr_assert_eq(tc_conn_read_exact(c, got, 10), -ETIMEDOUT);
    expect_took(t0, T, "read_exact");
    t0 = tc_test_now_ms();
    cr_assert_eq(tc_conn_read_line(c, 0, &l, &n), -ETIMEDOUT);
    expect_took(t0, T, "read_line");
    cmd(c, "mute");
    t0 = tc_test_now_ms();
    ssize_t w = tc_conn_send_all(c, big_buf, BIG);
    cr_assert_eq(w, -ETIMEDOUT, "send_all to a peer that reads nothing: %s", tc_err_name((int)w));
    expect_took(t0, T, "send_all");

    int signals = atomic_load(&g_usr2) - s0;
    hammer_stop(&hm);
    cr_assert_gt(signals, 100, "only %d signals arrived: the test is void", signals);
    /* A reset: a FIN would wait behind the megabytes the server never read. */
    struct linger lg = {1, 0};
    cr_assert_eq(setsockopt(tc_conn_fd(c), SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    tc_conn_close(c);
    wait_idle(&ts);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    fx_free(x);
}

/* The same calls made by a handler (threading: its thread; pool: a worker)
 * whose thread is hammered while the client paces its side, its read
 * timeout included (a blocking recv under SO_RCVTIMEO, or pool's poll: each
 * signal interrupts it, and the time left is recomputed from the deadline).
 * A stream-style connection gets its pool worker at its first bytes: there
 * the client opens with an empty line (no command) before the hammering. */
MODE_PARAMS(faults, handler_calls_survive_signals, TC_MODE_THREADING, TC_MODE_POOL)
ParameterizedTest(tc_mode *mode, faults, handler_calls_survive_signals, .timeout = 60)
{
    enum { SINK = 8 << 20 };
    const int T = tc_test_ms(200);
    install_usr2();
    struct fx *x = fx_new();
    tc_server_config cfg = f_config(*mode, x);
    tc_handler h = cmd_handler(x);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    int fd = tc_test_connect_ok(&ts.addr);
    if (*mode == TC_MODE_POOL)
        cr_assert_eq(tc_test_send_all(fd, "\n", 1), 0);
    TC_TEST_WAIT_UNTIL(atomic_load(&x->handler_tid_set), TC_TEST_WAIT_MS);
    cr_assert(atomic_load(&x->handler_tid_set));
    struct hammer hm;
    hammer_start(&hm, x->handler_tid);
    int s0 = atomic_load(&g_usr2);
    /* read_line across pauses: the command arrives in pieces. */
    const char *line = "sink 8388608\n";
    size_t len = strlen(line);
    for (size_t off = 0; off < len; off += 4) {
        cr_assert_eq(tc_test_send_all(fd, line + off, len - off < 4 ? len - off : 4), 0);
        tc_test_nap_ms(20);
    }
    /* read_exact: 8 MiB, with pauses. */
    for (size_t sent = 0; sent < SINK; sent += 1 << 20) {
        cr_assert_eq(tc_test_send_all(fd, big_buf, 1 << 20), 0);
        tc_test_nap_ms(5);
    }
    char ok[3];
    cr_assert_eq(tc_test_recv_full(fd, ok, 3), 3);
    cr_assert_eq(memcmp(ok, "ok\n", 3), 0);
    cr_assert_eq(atomic_load(&x->res[0]), SINK);
    /* send_all: 100000 bytes in five pieces, received slowly. */
    cr_assert_eq(tc_test_send_all(fd, "slow 100000\n", 12), 0);
    static unsigned char got[100000];
    size_t total = 0;
    while (total < sizeof got) {
        size_t want = sizeof got - total < 4096 ? sizeof got - total : 4096;
        ssize_t r = tc_test_recv_full(fd, got + total, want);
        cr_assert_gt(r, 0, "after %zu bytes: %s; handler errors %d (%s)", total,
                     strerror((int)-r), atomic_load(&x->nerr),
                     tc_err_name(atomic_load(&x->err[0])));
        total += (size_t)r;
        tc_test_nap_ms(1);
    }
    for (size_t i = 0; i < sizeof got; i++)
        if (got[i] != pattern(i))
            cr_assert_fail("byte %zu differs", i);
    /* A read timeout: it ends on time, not restarted by each signal. */
    char wait_cmd[32];
    int wl = snprintf(wait_cmd, sizeof wait_cmd, "wait %d\n", T);
    cr_assert_eq(tc_test_send_all(fd, wait_cmd, (size_t)wl), 0);
    cr_assert_eq(tc_test_recv_full(fd, ok, 3), 3, "no answer after the handler's read timeout");
    cr_assert_eq(memcmp(ok, "ok\n", 3), 0);
    cr_assert_eq(atomic_load(&x->nres), 3);
    cr_assert_eq(atomic_load(&x->res[1]), -ETIMEDOUT, "the read ended with %s",
                 tc_err_name(atomic_load(&x->res[1])));
    int took = atomic_load(&x->res[2]);
    cr_assert_geq(took, T - 1, "the read gave up after %d ms, before its %d ms", took, T);
    cr_assert_lt(took, T + tc_test_ms(500), "the read took %d ms for a %d ms timeout", took, T);
    int signals = atomic_load(&g_usr2) - s0;
    hammer_stop(&hm); /* before the handler's thread may end */
    cr_assert_gt(signals, 100, "only %d signals arrived: the test is void", signals);
    cl_close(fd);
    wait_idle(&ts);
    cr_assert_eq(atomic_load(&x->nerr), 0, "handler error %s",
                 tc_err_name(atomic_load(&x->err[0])));
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    fx_free(x);
}

/* serve_forever with its thread hammered: clients are served, and a
 * shutdown still ends it promptly. */
MODE_PARAMS(faults, serve_forever_survives_signals, TC_MODE_INLINE, TC_MODE_THREADING,
            TC_MODE_POOL, TC_MODE_EVENT)
ParameterizedTest(tc_mode *mode, faults, serve_forever_survives_signals, .timeout = 30)
{
    install_usr2();
    struct fx *x = fx_new();
    tc_server_config cfg = f_config(*mode, x);
    cfg.poll_interval_ms = -1; /* no periodic wake-up to hide a lost one */
    tc_handler h = f_handler(x);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    cr_assert_eq(tc_test_server_wait_entered(&ts, TC_TEST_WAIT_MS), 0);
    struct hammer hm;
    hammer_start(&hm, ts.thread);
    int s0 = atomic_load(&g_usr2);
    for (int i = 0; i < 20; i++) {
        cl_roundtrip(&ts.addr, "under fire");
        tc_test_nap_ms(5);
    }
    int64_t t0 = tc_test_now_ms();
    cr_assert_eq(tc_server_shutdown(ts.srv), 0);
    cr_assert_eq(tc_test_server_wait_done(&ts, TC_TEST_WAIT_MS), 0);
    int64_t took = tc_test_now_ms() - t0;
    int signals = atomic_load(&g_usr2) - s0;
    hammer_stop(&hm); /* the thread has returned but is not joined: still a valid target */
    cr_assert_eq(tc_test_server_join(&ts), 0);
    cr_assert_lt(took, tc_test_ms(1000), "shutdown took %lld ms", (long long)took);
    cr_assert_gt(signals, 100, "only %d signals arrived: the test is void", signals);
    cr_assert_eq(atomic_load(&x->nerr), 0);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    fx_free(x);
}

/* handle_request with a timeout, its thread hammered: it still gives up
 * after timeout_ms (not earlier, not much later), and serves a client.
 * (Pool and event modes serve only through serve_forever.) */
MODE_PARAMS(faults, handle_request_timeout_survives_signals, TC_MODE_INLINE, TC_MODE_THREADING)
ParameterizedTest(tc_mode *mode, faults, handle_request_timeout_survives_signals, .timeout = 30)
{
    const int T = tc_test_ms(300);
    install_usr2();
    struct fx *x = fx_new();
    tc_server_config cfg = f_config(*mode, x);
    cfg.timeout_ms = T;
    tc_handler h = f_handler(x);
    tc_test_server ts;
    cr_assert_eq(tc_test_server_create(&ts, NULL, &cfg, &h), 0);
    struct hammer hm;
    /* Bounded: a wait that restarted its timeout at each signal would
     * otherwise never end; this way it ends late, and says so. */
    hammer_start_until(&hm, pthread_self(), tc_test_now_ms() + T + tc_test_ms(2000));
    int s0 = atomic_load(&g_usr2);
    int64_t t0 = tc_test_now_ms();
    int rc = tc_server_handle_request(ts.srv);
    int64_t took = tc_test_now_ms() - t0;
    int fd = tc_test_connect_ok(&ts.addr); /* waits in the backlog */
    cr_assert_eq(tc_test_send_all(fd, "x\n", 2), 0);
    if (*mode == TC_MODE_INLINE)
        cr_assert_eq(shutdown(fd, SHUT_WR), 0); /* inline serves it to the end in the call */
    int rc2 = tc_server_handle_request(ts.srv);
    int signals = atomic_load(&g_usr2) - s0;
    hammer_stop(&hm);
    cr_assert_eq(rc, -ETIMEDOUT, "%s", tc_err_name(rc));
    cr_assert_geq(took, T - 1, "gave up after %lld ms", (long long)took);
    cr_assert_lt(took, T + tc_test_ms(500), "gave up after %lld ms", (long long)took);
    cr_assert_eq(rc2, 0, "%s", tc_err_name(rc2));
    char b[2];
    cr_assert_eq(tc_test_recv_full(fd, b, 2), 2);
    cr_assert_gt(signals, 100, "only %d signals arrived: the test is void", signals);
    cl_close(fd);
    wait_idle(&ts);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    fx_free(x);
}

/* A listener of the test's own that resets each connection it accepts. */
static int resetter_listen(tc_addr *a)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(l, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(l, (struct sockaddr *)&sin, sizeof sin), 0);
    cr_assert_eq(listen(l, 16), 0);
    socklen_t len = sizeof sin;
    cr_assert_eq(getsockname(l, (struct sockaddr *)&sin, &len), 0);
    cr_assert_eq(tc_addr_from_sockaddr(a, (struct sockaddr *)&sin, len), 0);
    return l;
}

/* A client channel whose peer has reset it (the reset has arrived and its
 * error was taken). */
static tc_conn *reset_channel(int l, const tc_addr *a)
{
    char text[TC_ADDR_STRLEN];
    cr_assert_gt(tc_addr_format(a, text, sizeof text), 0);
    tc_conn *c;
    cr_assert_eq(tc_dial(&c, text, NULL), 0);
    int s = accept(l, NULL, NULL);
    cr_assert_geq(s, 0);
    struct linger lg = {1, 0};
    cr_assert_eq(setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(s);
    struct pollfd p = {.fd = tc_conn_fd(c), .events = POLLIN};
    cr_assert_eq(poll(&p, 1, TC_TEST_WAIT_MS), 1);
    /* Take the pending ECONNRESET: from now on a send fails with EPIPE,
     * and raises SIGPIPE unless told not to. */
    int err = 0;
    socklen_t len = sizeof err;
    cr_assert_eq(getsockopt(tc_conn_fd(c), SOL_SOCKET, SO_ERROR, &err, &len), 0);
    cr_assert_eq(err, ECONNRESET);
    return c;
}

static void assert_sigpipe_default(void)
{
    struct sigaction cur;
    cr_assert_eq(sigaction(SIGPIPE, NULL, &cur), 0);
    cr_assert_eq(cur.sa_handler, SIG_DFL, "SIGPIPE disposition changed");
}

/* Every write function on a channel whose peer reset it: -EPIPE or
 * -ECONNRESET, never SIGPIPE (its default action would kill this process),
 * none left pending, the thread's signal mask as it was. */
Test(faults, no_sigpipe_from_any_write, .timeout = 30)
{
    enum { W_WRITE, W_PRINTF, W_WRITE_LARGE, W_PRINTF_LARGE, W_SEND_ALL, W_WRITEV,
           W_WRITE_FRAME, W_SEND, W_SENDFILE, W_CLOSE, W_COUNT };
    static const char *const names[] = {"write+flush", "printf+flush", "write (large)",
                                        "printf (large)", "send_all", "writev", "write_frame",
                                        "send", "sendfile", "close (buffered)"};
    signal(SIGPIPE, SIG_DFL);
    assert_sigpipe_default();
    sigset_t mask0, mask1, pending;
    cr_assert_eq(pthread_sigmask(SIG_SETMASK, NULL, &mask0), 0);
    memset(large_line, 'L', LARGE);
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(big_buf, 1, 1 << 20, f), 1u << 20);
    fflush(f);
    tc_addr a;
    int l = resetter_listen(&a);
    for (int w = 0; w < W_COUNT; w++) {
        tc_conn *c = reset_channel(l, &a);
        long rc = 0;
        struct iovec v[2] = {{big_buf, 1 << 16}, {big_buf, 1 << 16}};
        switch (w) {
        case W_WRITE:
            rc = (long)tc_conn_write(c, "w\n", 2);
            if (rc >= 0)
                rc = tc_conn_flush(c);
            break;
        case W_PRINTF:
            rc = tc_conn_printf(c, "p%d\n", 1);
            if (rc >= 0)
                rc = tc_conn_flush(c);
            break;
        case W_WRITE_LARGE:
            rc = (long)tc_conn_write(c, big_buf, 1 << 20);
            break;
        case W_PRINTF_LARGE:
            rc = tc_conn_printf(c, "%s", large_line);
            break;
        case W_SEND_ALL:
            rc = (long)tc_conn_send_all(c, big_buf, 1 << 20);
            break;
        case W_WRITEV:
            rc = (long)tc_conn_writev(c, v, 2);
            break;
        case W_WRITE_FRAME:
            rc = tc_conn_write_frame(c, "frame", 5);
            break;
        case W_SEND:
            rc = tc_conn_send(c, "send", 4);
            break;
        case W_SENDFILE:
            rc = (long)tc_conn_sendfile(c, fileno(f), 0, 1 << 20);
            break;
        case W_CLOSE:
            rc = (long)tc_conn_write(c, "buffered", 8); /* goes out in close */
            cr_assert_eq(rc, 8);
            rc = -EPIPE;
            break;
        }
        cr_assert_eq(rc, -EPIPE, "%s on a reset channel: %s", names[w], tc_err_name((int)rc));
        tc_conn_close(c);
    }
    close(l);
    fclose(f);
    cr_assert_eq(pthread_sigmask(SIG_SETMASK, NULL, &mask1), 0);
    cr_assert_eq(sigismember(&mask1, SIGPIPE), sigismember(&mask0, SIGPIPE), "mask changed");
    cr_assert_eq(sigpending(&pending), 0);
    cr_assert_eq(sigismember(&pending, SIGPIPE), 0, "a SIGPIPE is pending");
    assert_sigpipe_default();
}

/* The event loop writing to clients that reset: a reply queued behind a
 * reset, a large reply cut by a reset, and a send after the handler's own
 * half-close (EPIPE, which raises SIGPIPE without MSG_NOSIGNAL). The loop
 * reports the error and goes on; no SIGPIPE. */
Test(faults, no_sigpipe_from_the_event_loop, .timeout = 30)
{
    if (!tc_test_mode_enabled(TC_MODE_EVENT))
        cr_skip_test("event mode not selected by TC_TEST_MODES");
    signal(SIGPIPE, SIG_DFL);
    struct fx *x = fx_new();
    tc_server_config cfg = f_config(TC_MODE_EVENT, x);
    tc_handler h = f_handler(x);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    /* Lines the loop answers after the reset arrived. */
    int fd = tc_test_connect_ok(&ts.addr);
    static char lines[200000];
    for (size_t i = 0; i < sizeof lines; i += 2)
        memcpy(lines + i, "l\n", 2);
    cr_assert_eq(tc_test_send_all(fd, lines, sizeof lines), 0);
    struct linger lg = {1, 0};
    cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(fd);
    /* A large reply, cut. */
    fd = tc_test_connect_ok(&ts.addr);
    cr_assert_eq(tc_test_send_all(fd, "big\n", 4), 0);
    static unsigned char part[1 << 16];
    cr_assert_eq(tc_test_recv_full(fd, part, sizeof part), (ssize_t)sizeof part);
    cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(fd);
    TC_TEST_WAIT_UNTIL(atomic_load(&x->nclose) == 2, TC_TEST_WAIT_MS);
    cr_assert_eq(atomic_load(&x->nclose), 2);
    /* A send after the handler's own half-close. */
    fd = tc_test_connect_ok(&ts.addr);
    cr_assert_eq(tc_test_send_all(fd, "half\n", 5), 0);
    cr_assert_eq(tc_test_recv_eof(fd), 0, "the half-close did not arrive");
    TC_TEST_WAIT_UNTIL(atomic_load(&x->nclose) == 3, TC_TEST_WAIT_MS);
    cr_assert_eq(atomic_load(&x->nclose), 3);
    cr_assert_eq(atomic_load(&x->reason[2]), -EPIPE, "the send after a half-close: %s",
                 tc_err_name(atomic_load(&x->reason[2])));
    close(fd);
    for (int i = 0; i < 2; i++) {
        int r = atomic_load(&x->reason[i]);
        cr_assert(r == -EPIPE || r == -ECONNRESET, "connection %d ended with %s", i,
                  tc_err_name(r));
    }
    cl_roundtrip(&ts.addr, "after");
    wait_idle(&ts);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    fx_free(x);
}

/* ---- a shutdown in the middle of a large write ----------------------------------------------- */

/* A stream handler sending 64 MiB to a client that reads nothing, with a
 * per-operation timeout far longer than the test: the shutdown's drain
 * deadline shuts the socket down, the send ends with an error (reported),
 * finish runs, and serve_forever returns within the drain plus its grace.
 * Event mode runs a message handler whose reply is queued instead (ended by
 * the drain, TC_ESHUTDOWN). Pool keeps the stream handler, on a worker; the
 * client says a word first, since a pool worker takes a stream connection
 * only at its first bytes. */
static int blast_handle(tc_conn *c, void *ctx)
{
    struct fx *x = ctx;
    atomic_store(&x->started, 1);
    ssize_t r = tc_conn_send_all(c, big_buf, BIG);
    rec(x, &x->nres, x->res, r < 0 ? (int)r : 0);
    return r < 0 ? (int)r : 0;
}

MODE_PARAMS(faults, shutdown_mid_write, TC_MODE_THREADING, TC_MODE_FORKING, TC_MODE_POOL,
            TC_MODE_EVENT)
ParameterizedTest(tc_mode *mode, faults, shutdown_mid_write, .timeout = 30)
{
    const int DRAIN = 200, GRACE = 1000; /* GRACE: lib/server.c's DRAIN_GRACE_MS */
    const char *name = tc_mode_name(*mode);
    struct fx *x = fx_new();
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = f_config(*mode, x);
    cfg.conn_timeout_ms = tc_test_ms(60000);
    cfg.drain_timeout_ms = DRAIN;
    tc_handler h = f_handler(x);
    if (*mode != TC_MODE_EVENT) {
        tc_handler stream = TC_HANDLER_INIT;
        h = stream;
        h.handle = blast_handle;
        h.finish = f_finish;
        h.ctx = x;
    }
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    int fd = tc_test_connect_ok(&ts.addr);
    if (*mode == TC_MODE_EVENT)
        cr_assert_eq(tc_test_send_all(fd, "big\n", 4), 0);
    if (*mode == TC_MODE_POOL)
        cr_assert_eq(tc_test_send_all(fd, "go\n", 3), 0);
    TC_TEST_WAIT_UNTIL(atomic_load(&x->started), TC_TEST_WAIT_MS);
    cr_assert(atomic_load(&x->started), "%s: the write never started", name);
    int64_t t0 = tc_test_now_ms();
    cr_assert_eq(tc_server_shutdown(ts.srv), 0);
    cr_assert_eq(tc_test_server_join(&ts), 0);
    int64_t took = tc_test_now_ms() - t0;
    cr_assert_lt(took, DRAIN + GRACE + tc_test_ms(300), "%s: serve_forever took %lld ms", name,
                 (long long)took);
    TC_TEST_WAIT_UNTIL(atomic_load(&x->finishes) == 1, TC_TEST_WAIT_MS);
    cr_assert_eq(atomic_load(&x->finishes), 1, "%s: finish did not run", name);
    if (*mode == TC_MODE_EVENT) {
        cr_assert_eq(atomic_load(&x->nclose), 1);
        cr_assert_eq(atomic_load(&x->reason[0]), TC_ESHUTDOWN, "%s: ended with %s", name,
                     tc_err_name(atomic_load(&x->reason[0])));
    } else {
        int r = atomic_load(&x->res[0]);
        cr_assert(r == -EPIPE || r == -ECONNRESET || r == -ESHUTDOWN, "%s: the send ended with %s",
                  name, tc_err_name(r));
        TC_TEST_WAIT_UNTIL(atomic_load(&x->nerr) == 1, TC_TEST_WAIT_MS);
        cr_assert_eq(atomic_load(&x->err[0]), r, "%s: reported %s", name,
                     tc_err_name(atomic_load(&x->err[0])));
    }
    cl_close(fd);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_expect_counts(before, NULL, 0, name);
    fx_free(x);
}
