/* SPDX-License-Identifier: MIT */
/* Concurrency modes: the same stream handler run in every mode (inline,
 * threading, forking, pool): concurrency, max_conns, pool queueing, fork
 * hygiene (reaping only our children, crashes, the pipe fallback), shutdown
 * and destroy with and without block_on_close, resource counts and stats,
 * service_actions while idle, and handler threads that end in pthread_exit
 * or are cancelled (threading, pool). Self-contained: its own helpers
 * (prefix m_). TC_TEST_MODES=threading,pool restricts the modes (e.g. under
 * TSan); TC_TEST_TIMEOUT_MULT scales waits. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <tcpchan/tcpchan.h>

#include "helpers.h"

/* ---- time and bounded waits ----------------------------------------------- */

/* Bounded polls (tc_test_* in helpers.c) with the scaled bound of the suite. */
#define M_WAIT_UNTIL(cond, ms) TC_TEST_WAIT_UNTIL(cond, tc_test_ms(ms))

#define WAIT_MS 5000 /* the bound of one wait that should succeed */
#define QUIET_MS 150 /* the window in which something must NOT happen */
#define HANDLER_MAX_MS 10000 /* no handler blocks longer than this */

/* ---- modes under test -------------------------------------------------------- */

/* Fill out with the enabled modes among want[]; returns how many. */
static size_t enabled_modes(tc_mode *out, const tc_mode *want, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (tc_test_mode_enabled(want[i]))
            out[k++] = want[i];
    return k;
}

#define ALL_MODES {TC_MODE_INLINE, TC_MODE_THREADING, TC_MODE_FORKING, TC_MODE_POOL}
#define CONCURRENT_MODES {TC_MODE_THREADING, TC_MODE_FORKING, TC_MODE_POOL}
#define STOPFD_MODES {TC_MODE_INLINE, TC_MODE_FORKING} /* waits watch the stop descriptor */

#define MODE_PARAMS(suite, test, list)                                                             \
    ParameterizedTestParameters(suite, test)                                                       \
    {                                                                                              \
        static const tc_mode want[] = list;                                                        \
        static tc_mode params[sizeof want / sizeof want[0]];                                       \
        size_t n = enabled_modes(params, want, sizeof want / sizeof want[0]);                      \
        return cr_make_param_array(tc_mode, params, n);                                            \
    }

#define SKIP_UNLESS(mode)                                                                          \
    do {                                                                                           \
        if (!tc_test_mode_enabled(mode))                                                                   \
            cr_skip_test("mode %s not selected by TC_TEST_MODES", tc_mode_name(mode));             \
    } while (0)

/* ---- state shared with handlers (in threads or forked children) ------------- */

/* MAP_SHARED: forked children update the same counters the test reads. */
struct shared {
    atomic_int cur, max;        /* handlers between setup and finish, and the peak */
    atomic_int started, finished, saw_eof;
    atomic_int saw_shutdown;    /* reads that ended with TC_ESHUTDOWN */
    atomic_int exact_probe;     /* the handler reads 1 byte, then read_exact 8: */
    atomic_int in_exact;        /* ... it is about to wait in read_exact, */
    atomic_int exact_rc, after_rc; /* which returned this, then tc_conn_read this */
    atomic_int in_finish;       /* handlers waiting on the gate in finish */
    atomic_int gate_on;
    int gate_rd;                /* finish reads one byte from it when gate_on */
    atomic_int errors, echild, null_conn;
    atomic_int refuse;          /* verify_request refuses while set */
    atomic_int poll_shutdown;   /* inline: handlers poll tc_server_shutting_down() */
    atomic_int fork_in_loop;    /* service_actions forks a child of the test's own ... */
    atomic_int loop_child;      /* ... whose pid lands here ... */
    int release_rd;             /* ... and which exits 43 once this is readable */
    atomic_int log_pidfds, log_pipes, log_sigkill, log_sigabrt;
    atomic_int probe;           /* setup inspects the descriptors it inherited */
    atomic_int probed;
    struct fdkinds {            /* the most any probed handler saw */
        atomic_int listeners, siblings, anon, pipes;
    } seen;
    atomic_int services;        /* service_actions calls */
    atomic_int closes;          /* message style: on_close calls */
    atomic_int victim_ready;    /* a handler stored its thread in victim and goes on to block */
    pthread_t victim;           /* written before victim_ready is set */
    atomic_int in_msg, msg_peak, msgs; /* pool: on_message calls running, the most, all */
    int block_rd;               /* pool, message style: 'C' blocks reading this pipe ... */
    atomic_int block_in_pipe;   /* ... when set (its channel cannot be read there) */
};

static struct shared *shared_new(void)
{
    void *p = mmap(NULL, sizeof(struct shared), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(p, MAP_FAILED);
    return p; /* zero-filled: every counter starts at 0 */
}

static void shared_free(struct shared *sh)
{
    munmap(sh, sizeof *sh);
}

static void atomic_max(atomic_int *a, int v)
{
    int m = atomic_load(a);
    while (v > m && !atomic_compare_exchange_weak(a, &m, v))
        ;
}

/* Count this process's descriptors by kind: TCP sockets bound to `port`
 * (listening, or accepted ones other than `own`), the library's kinds of
 * anonymous descriptors (eventfd, epoll, timerfd, pidfd), and pipes. */
static void fd_kinds(int port, int own, int *listeners, int *siblings, int *anon, int *pipes)
{
    *listeners = *siblings = *anon = *pipes = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd == dirfd(d) || fd == own)
            continue;
        char path[64], link[128];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, link, sizeof link - 1);
        if (n < 0)
            continue;
        link[n] = '\0';
        if (!strncmp(link, "pipe:", 5)) {
            (*pipes)++;
        } else if (!strncmp(link, "anon_inode:", 11)) {
            *anon += strstr(link, "eventfd") || strstr(link, "eventpoll") ||
                     strstr(link, "timerfd") || strstr(link, "pidfd");
        } else if (!strncmp(link, "socket:", 7)) {
            struct sockaddr_in sin;
            socklen_t len = sizeof sin;
            int acc = 0;
            socklen_t alen = sizeof acc;
            if (getsockname(fd, (struct sockaddr *)&sin, &len) < 0 || sin.sin_family != AF_INET ||
                ntohs(sin.sin_port) != port)
                continue;
            getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &alen);
            if (acc)
                (*listeners)++;
            else
                (*siblings)++;
        }
    }
    closedir(d);
}

static void probe_fds(struct shared *sh, tc_conn *conn)
{
    int l, s, a, p;
    fd_kinds(tc_addr_port(tc_conn_local(conn)), tc_conn_fd(conn), &l, &s, &a, &p);
    atomic_max(&sh->seen.listeners, l);
    atomic_max(&sh->seen.siblings, s);
    atomic_max(&sh->seen.anon, a);
    atomic_max(&sh->seen.pipes, p);
    atomic_fetch_add(&sh->probed, 1);
}

static int h_setup(tc_conn *conn, void *ctx)
{
    struct shared *sh = ctx;
    if (atomic_load(&sh->probe))
        probe_fds(sh, conn);
    atomic_max(&sh->max, atomic_fetch_add(&sh->cur, 1) + 1);
    atomic_fetch_add(&sh->started, 1);
    return 0;
}

/* The stream handler every mode runs: echo until the end of the stream.
 * Magic bytes (sent only to forking servers): 'K' SIGKILL, 'A' abort. */
static int h_handle(tc_conn *conn, void *ctx)
{
    struct shared *sh = ctx;
    char buf[256];
    if (atomic_load(&sh->exact_probe) && tc_conn_read(conn, buf, 1) == 1) {
        atomic_store(&sh->in_exact, 1);
        ssize_t r = tc_conn_read_exact(conn, buf, 8);
        atomic_store(&sh->exact_rc, (int)r);
        atomic_store(&sh->after_rc, (int)tc_conn_read(conn, buf, sizeof buf));
        return (int)r;
    }
    for (;;) {
        ssize_t n = tc_conn_read(conn, buf, sizeof buf);
        if (n == TC_EOF) {
            atomic_fetch_add(&sh->saw_eof, 1);
            return 0;
        }
        if (n == TC_ESHUTDOWN)
            atomic_fetch_add(&sh->saw_shutdown, 1);
        if (n == -ETIMEDOUT && atomic_load(&sh->poll_shutdown)) {
            if (tc_server_shutting_down(tc_conn_server(conn)))
                return 0;
            continue;
        }
        if (n < 0)
            return (int)n;
        if (buf[0] == 'K')
            raise(SIGKILL);
        if (buf[0] == 'A') {
            struct rlimit none = {0, 0};
            setrlimit(RLIMIT_CORE, &none); /* no core file */
            abort();
        }
        if ((n = tc_conn_send_all(conn, buf, (size_t)n)) < 0)
            return (int)n;
    }
}

static int h_finish(tc_conn *conn, void *ctx)
{
    struct shared *sh = ctx;
    (void)conn;
    if (atomic_load(&sh->gate_on)) {
        /* Bounded, so that no child outlives a failed test for long. */
        struct pollfd p = {.fd = sh->gate_rd, .events = POLLIN};
        char c;
        atomic_fetch_add(&sh->in_finish, 1);
        if (poll(&p, 1, tc_test_ms(HANDLER_MAX_MS)) == 1)
            (void)!read(sh->gate_rd, &c, 1);
    }
    atomic_fetch_sub(&sh->cur, 1);
    atomic_fetch_add(&sh->finished, 1);
    return 0;
}

static void on_error(tc_server *srv, tc_conn *conn, int err, void *ctx)
{
    struct shared *sh = ctx;
    (void)srv;
    atomic_fetch_add(&sh->errors, 1);
    if (err == TC_ECHILD)
        atomic_fetch_add(&sh->echild, 1);
    if (!conn)
        atomic_fetch_add(&sh->null_conn, 1);
}

/* Wait (bounded) for one byte on fd, then _exit(status). */
static void own_child_main(int fd, int status)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    char c;
    if (poll(&p, 1, tc_test_ms(HANDLER_MAX_MS)) == 1)
        (void)!read(fd, &c, 1);
    _exit(status);
}

/* In the serving thread: fork a child that is not the server's, from the
 * very thread that forks the server's children and waits for them. */
static void on_service(tc_server *srv, void *ctx)
{
    struct shared *sh = ctx;
    (void)srv;
    atomic_fetch_add(&sh->services, 1);
    if (!atomic_exchange(&sh->fork_in_loop, 0))
        return;
    pid_t pid = fork();
    if (pid == 0)
        own_child_main(sh->release_rd, 43);
    atomic_store(&sh->loop_child, pid);
}

static int on_verify(tc_server *srv, const tc_addr *peer, void *ctx)
{
    struct shared *sh = ctx;
    (void)srv, (void)peer;
    return atomic_load(&sh->refuse) ? -1 : 0;
}

static void on_log(tc_server *srv, tc_log_level level, const char *msg, void *ctx)
{
    struct shared *sh = ctx;
    (void)srv, (void)level;
    if (strstr(msg, "watched with pidfds"))
        atomic_fetch_add(&sh->log_pidfds, 1);
    if (strstr(msg, "watched with pipes"))
        atomic_fetch_add(&sh->log_pipes, 1);
    if (strstr(msg, "killed by signal 9"))
        atomic_fetch_add(&sh->log_sigkill, 1);
    if (strstr(msg, "killed by signal 6"))
        atomic_fetch_add(&sh->log_sigabrt, 1);
}

static tc_server_config base_config(tc_mode mode, struct shared *sh)
{
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    cfg.listen = "127.0.0.1:0";
    cfg.mode = mode;
    cfg.hooks.handle_error = on_error;
    cfg.hooks.verify_request = on_verify;
    cfg.hooks.log = on_log;
    cfg.hooks.service_actions = on_service;
    cfg.hooks.ctx = sh;
    /* Inline runs the handler in the serving thread: it polls for shutdown.
     * Elsewhere a bound, so that a forked child orphaned by a failed test
     * (holding copies of the test's client sockets) still ends. */
    atomic_store(&sh->poll_shutdown, mode == TC_MODE_INLINE);
    cfg.conn_timeout_ms = mode == TC_MODE_INLINE ? 50 : tc_test_ms(HANDLER_MAX_MS);
    return cfg;
}

static tc_handler base_handler(struct shared *sh)
{
    tc_handler h = TC_HANDLER_INIT;
    h.setup = h_setup;
    h.handle = h_handle;
    h.finish = h_finish;
    h.ctx = sh;
    return h;
}

/* ---- a server serving in a background thread ----------------------------- */

struct msrv {
    tc_server *srv;
    tc_addr addr;
    pthread_t thread;
    int running;
    atomic_int done;
    int rc;
};

static void *serve_main(void *arg)
{
    struct msrv *m = arg;
    m->rc = tc_server_serve_forever(m->srv);
    atomic_store(&m->done, 1);
    return NULL;
}

static void srv_create(struct msrv *m, const tc_server_config *cfg, struct shared *sh)
{
    tc_handler h = base_handler(sh);
    memset(m, 0, sizeof *m);
    int rc = tc_server_create(&m->srv, cfg, &h);
    cr_assert_eq(rc, 0, "tc_server_create(%s): %s", tc_mode_name(cfg->mode), tc_strerror(rc));
    cr_assert_eq(tc_server_address(m->srv, &m->addr), 0);
}

/* The server listens once created: clients may connect before the thread runs. */
static void srv_start(struct msrv *m, const tc_server_config *cfg, struct shared *sh)
{
    srv_create(m, cfg, sh);
    cr_assert_eq(pthread_create(&m->thread, NULL, serve_main, m), 0);
    m->running = 1;
}

/* Shut down and join; returns how long serve_forever took to return, in ms. */
static int64_t srv_stop(struct msrv *m)
{
    int64_t t0 = tc_test_now_ms();
    cr_assert_eq(tc_server_shutdown(m->srv), 0);
    M_WAIT_UNTIL(atomic_load(&m->done), WAIT_MS * 2);
    cr_assert(atomic_load(&m->done), "serve_forever did not return");
    int64_t took = tc_test_now_ms() - t0;
    pthread_join(m->thread, NULL);
    m->running = 0;
    cr_assert_eq(m->rc, 0);
    return took;
}

static void srv_destroy(struct msrv *m)
{
    tc_server_destroy(m->srv);
    m->srv = NULL;
}

static tc_stats srv_stats(struct msrv *m)
{
    tc_stats st;
    cr_assert_eq(tc_server_stats(m->srv, &st), 0);
    return st;
}

/* ---- raw clients ------------------------------------------------------------- */

static int cl_connect(const tc_addr *a)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    int ms = tc_test_ms(WAIT_MS);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    cr_assert_eq(connect(fd, &a->u.sa, a->len), 0, "connect: %s", strerror(errno));
    return fd;
}

static void cl_send(int fd, char c)
{
    cr_assert_eq(send(fd, &c, 1, MSG_NOSIGNAL), 1, "send: %s", strerror(errno));
}

/* Read one byte: the byte, -1 at EOF (or reset), -2 on timeout. */
static int cl_recv1(int fd)
{
    unsigned char c;
    ssize_t n;
    do
        n = recv(fd, &c, 1, 0);
    while (n < 0 && errno == EINTR);
    if (n == 1)
        return c;
    if (n == 0 || errno == ECONNRESET)
        return -1;
    return -2;
}

/* Whether fd becomes readable (data or EOF) within ms (scaled). */
static int cl_readable(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, tc_test_ms(ms)) > 0;
}

static void cl_expect_echo(int fd, char c)
{
    int r = cl_recv1(fd);
    cr_assert_eq(r, (unsigned char)c, "expected echo '%c', got %d", c, r);
}

/* shutdown first: with a forking server, children forked meanwhile hold
 * copies of this test's client sockets, so close alone ends nothing. */
static void cl_close(int fd)
{
    shutdown(fd, SHUT_RDWR);
    close(fd);
}

static void cl_roundtrip(const tc_addr *a, char c)
{
    int fd = cl_connect(a);
    cl_send(fd, c);
    cl_expect_echo(fd, c);
    cl_close(fd);
}

/* ---- resources ----------------------------------------------------------- */

/* Children the test forks itself, left out of the counts of children. */
static pid_t own_children[2];

static char proc_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return '?';
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' ? rp[2] : '?';
}

/* ---- every mode -------------------------------------------------------------- */

TestSuite(modes, .timeout = 20, .fini = tc_test_kill_children);

Test(modes, available, .timeout = 5)
{
    for (int m = TC_MODE_INLINE; m <= TC_MODE_POOL; m++)
        cr_expect_eq(tc_mode_available((tc_mode)m), 1, "%s", tc_mode_name((tc_mode)m));
}

/* Eight clients holding their connections open are served at once (inline: in turn). */
MODE_PARAMS(modes, concurrent_clients, ALL_MODES)
ParameterizedTest(tc_mode *mode, modes, concurrent_clients, .timeout = 20)
{
    enum { N = 8 };
    struct shared *sh = shared_new();
    tc_server_config cfg = base_config(*mode, sh);
    cfg.workers = N; /* pool */
    struct msrv m;
    srv_start(&m, &cfg, sh);
    int fd[N];
    for (int i = 0; i < N; i++) {
        fd[i] = cl_connect(&m.addr);
        cl_send(fd[i], (char)('a' + i));
    }
    if (*mode == TC_MODE_INLINE) {
        for (int i = 0; i < N; i++) {
            cl_expect_echo(fd[i], (char)('a' + i));
            cl_close(fd[i]);
        }
    } else {
        for (int i = 0; i < N; i++)
            cl_expect_echo(fd[i], (char)('a' + i)); /* all served, none closed */
        cr_expect_eq(atomic_load(&sh->cur), N);
        for (int i = 0; i < N; i++)
            cl_close(fd[i]);
    }
    M_WAIT_UNTIL(atomic_load(&sh->finished) == N, WAIT_MS);
    cr_expect_eq(atomic_load(&sh->finished), N);
    cr_expect_eq(atomic_load(&sh->max), *mode == TC_MODE_INLINE ? 1 : N);
    srv_stop(&m);
    tc_stats st = srv_stats(&m);
    cr_expect_eq(st.accepted, N);
    cr_expect_eq(st.peak_active, *mode == TC_MODE_INLINE ? 1u : (unsigned)N);
    cr_expect_eq(st.handler_errors, 0);
    srv_destroy(&m);
    shared_free(sh);
}

/* max_conns is never exceeded; a waiting client is served once a slot frees. */
MODE_PARAMS(modes, max_conns, ALL_MODES)
ParameterizedTest(tc_mode *mode, modes, max_conns, .timeout = 20)
{
    enum { N = 6, MAX = 3 };
    struct shared *sh = shared_new();
    tc_server_config cfg = base_config(*mode, sh);
    cfg.max_conns = MAX;
    cfg.workers = 4; /* pool: the limit is max_conns, not the workers */
    int cap = *mode == TC_MODE_INLINE ? 1 : MAX;
    struct msrv m;
    srv_start(&m, &cfg, sh);
    int fd[N];
    for (int i = 0; i < N; i++) {
        fd[i] = cl_connect(&m.addr);
        cl_send(fd[i], (char)('a' + i));
    }
    for (int i = 0; i < cap; i++)
        cl_expect_echo(fd[i], (char)('a' + i));
    /* Slots full: the next client waits in the backlog, unanswered. */
    cr_expect_not(cl_readable(fd[cap], QUIET_MS), "client %d served beyond max_conns", cap);
    for (int i = cap; i < N; i++) {
        cl_close(fd[i - cap]); /* frees a slot ... */
        cl_expect_echo(fd[i], (char)('a' + i)); /* ... for the next in line */
    }
    for (int i = N - cap; i < N; i++)
        cl_close(fd[i]);
    M_WAIT_UNTIL(atomic_load(&sh->finished) == N, WAIT_MS);
    cr_expect_eq(atomic_load(&sh->finished), N);
    cr_expect_eq(atomic_load(&sh->max), cap);
    srv_stop(&m);
    tc_stats st = srv_stats(&m);
    cr_expect_eq(st.accepted, N);
    cr_expect_leq(st.peak_active, (unsigned)MAX);
    srv_destroy(&m);
    shared_free(sh);
}

/* Shutdown with handlers blocked in read: serve_forever returns within the
 * drain timeout plus a bound, finish runs. Threading and pool handlers see
 * the end of the stream once the drain timeout cuts their sockets; inline
 * and forked ones watch the stop descriptor: their read ends at once with
 * TC_ESHUTDOWN. */
MODE_PARAMS(modes, shutdown_blocked_handlers, ALL_MODES)
ParameterizedTest(tc_mode *mode, modes, shutdown_blocked_handlers, .timeout = 20)
{
    enum { DRAIN = 200 };
    int n = *mode == TC_MODE_INLINE ? 1 : 3;
    struct shared *sh = shared_new();
    tc_server_config cfg = base_config(*mode, sh);
    cfg.drain_timeout_ms = DRAIN;
    cfg.workers = 3; /* pool */
    struct msrv m;
    srv_start(&m, &cfg, sh);
    int fd[3];
    for (int i = 0; i < n; i++) {
        fd[i] = cl_connect(&m.addr);
        cl_send(fd[i], 'x');
        cl_expect_echo(fd[i], 'x'); /* the handler now waits in read */
    }
    cr_expect_eq(tc_server_shutting_down(m.srv), 0);
    int64_t t0 = tc_test_now_ms();
    cr_assert_eq(tc_server_shutdown(m.srv), 0);
    int watch_stop = *mode == TC_MODE_INLINE || *mode == TC_MODE_FORKING;
    /* Threading, pool: the drain lasts at least until the handlers' sockets
     * are cut (with the stop descriptor it may be over already). */
    if (!watch_stop)
        cr_expect_eq(tc_server_shutting_down(m.srv), 1);
    M_WAIT_UNTIL(atomic_load(&m.done), WAIT_MS);
    cr_assert(atomic_load(&m.done), "serve_forever did not return");
    int64_t took = tc_test_now_ms() - t0;
    pthread_join(m.thread, NULL);
    cr_expect_eq(m.rc, 0);
    cr_expect_lt(took, DRAIN + tc_test_ms(1500), "serve_forever took %lld ms", (long long)took);
    cr_expect_eq(atomic_load(&sh->finished), n);
    if (watch_stop) {
        cr_expect_eq(atomic_load(&sh->saw_eof), 0);
        cr_expect_eq(atomic_load(&sh->saw_shutdown), n);
    } else {
        cr_expect_geq(took, DRAIN - 20, "the drain did not wait (%lld ms)", (long long)took);
        cr_expect_eq(atomic_load(&sh->saw_eof), n);
    }
    cr_expect_eq(atomic_load(&sh->errors), 0, "TC_ESHUTDOWN from handle is not reported");
    for (int i = 0; i < n; i++) {
        cr_expect_eq(cl_recv1(fd[i]), -1, "client %d: no end of stream", i);
        cl_close(fd[i]);
    }
    cr_expect_eq(tc_server_shutting_down(m.srv), 0, "the request is consumed");
    srv_destroy(&m);
    shared_free(sh);
}

/* A stream handler asleep in tc_conn_read on a silent client, with a
 * connection timeout far beyond the drain: inline runs it in the serving
 * thread and a forked child's memory is its own, so only the stop
 * descriptor reaches the read. It ends with TC_ESHUTDOWN, the handler
 * returns, finish runs, and serve_forever returns within the drain timeout. */
MODE_PARAMS(modes, shutdown_ends_read_on_silent_client, STOPFD_MODES)
ParameterizedTest(tc_mode *mode, modes, shutdown_ends_read_on_silent_client, .timeout = 40)
{
    struct shared *sh = shared_new();
    tc_server_config cfg = base_config(*mode, sh);
    int drain = tc_test_ms(3000);
    atomic_store(&sh->poll_shutdown, 0); /* the handler only reads */
    cfg.conn_timeout_ms = tc_test_ms(HANDLER_MAX_MS);
    cfg.drain_timeout_ms = drain;
    struct msrv m;
    srv_start(&m, &cfg, sh);
    int fd = cl_connect(&m.addr);
    cl_send(fd, 'x');
    cl_expect_echo(fd, 'x'); /* the handler now sleeps in tc_conn_read */
    int64_t t0 = tc_test_now_ms();
    cr_assert_eq(tc_server_shutdown(m.srv), 0);
    M_WAIT_UNTIL(atomic_load(&m.done), drain + tc_test_ms(1000));
    int64_t took = tc_test_now_ms() - t0;
    int done = atomic_load(&m.done);
    if (!done)
        cl_close(fd); /* the client leaves, so that the handler ends */
    cr_assert(done, "%s: serve_forever still waits for the silent client after %lld ms",
              tc_mode_name(*mode), (long long)took);
    pthread_join(m.thread, NULL);
    cr_expect_eq(m.rc, 0);
    cr_expect_lt(took, drain, "%s: serve_forever took %lld ms", tc_mode_name(*mode),
                 (long long)took);
    M_WAIT_UNTIL(atomic_load(&sh->finished) == 1, WAIT_MS);
    cr_expect_eq(atomic_load(&sh->finished), 1, "finish did not run");
    cr_expect_eq(atomic_load(&sh->saw_shutdown), 1, "the read did not end with TC_ESHUTDOWN");
    cr_expect_eq(atomic_load(&sh->saw_eof), 0);
    cr_expect_eq(atomic_load(&sh->errors), 0, "TC_ESHUTDOWN from handle is not reported");
    cr_expect_eq(cl_recv1(fd), -1, "no end of stream for the client");
    cl_close(fd);
    srv_destroy(&m);
    shared_free(sh);
}

/* A read the drain ends consumes nothing: the bytes tc_conn_read_exact had
 * taken are still there for the next read. */
MODE_PARAMS(modes, shutdown_read_consumes_nothing, STOPFD_MODES)
ParameterizedTest(tc_mode *mode, modes, shutdown_read_consumes_nothing, .timeout = 40)
{
    struct shared *sh = shared_new();
    tc_server_config cfg = base_config(*mode, sh);
    atomic_store(&sh->poll_shutdown, 0);
    atomic_store(&sh->exact_probe, 1);
    cfg.conn_timeout_ms = tc_test_ms(HANDLER_MAX_MS);
    struct msrv m;
    srv_start(&m, &cfg, sh);
    int fd = cl_connect(&m.addr);
    cr_assert_eq(send(fd, "abcd", 4, MSG_NOSIGNAL), 4);
    M_WAIT_UNTIL(atomic_load(&sh->in_exact), WAIT_MS); /* 3 of 8 bytes buffered */
    cr_assert(atomic_load(&sh->in_exact));
    int64_t took = srv_stop(&m);
    cr_expect_lt(took, tc_test_ms(WAIT_MS));
    M_WAIT_UNTIL(atomic_load(&sh->finished) == 1, WAIT_MS);
    cr_expect_eq(atomic_load(&sh->exact_rc), TC_ESHUTDOWN, "%s: read_exact gave %s",
                 tc_mode_name(*mode), tc_err_name(atomic_load(&sh->exact_rc)));
    cr_expect_eq(atomic_load(&sh->after_rc), 3, "%s: then tc_conn_read gave %d",
                 tc_mode_name(*mode), atomic_load(&sh->after_rc));
    cl_close(fd);
    srv_destroy(&m);
    shared_free(sh);
}

/* Message-style connections idle between messages do not hold a drain open,
 * in any mode: in a forked child the drain reaches the message loop through
 * the server's stop descriptor, since the child's memory is its own. */
static int m_echo(tc_conn *conn, const void *msg, size_t len, void *ctx)
{
    (void)ctx;
    ssize_t sent = tc_conn_send(conn, msg, len);
    return sent < 0 ? (int)sent : 0;
}

static void m_closed(tc_conn *conn, int reason, void *ctx)
{
    struct shared *sh = ctx;
    (void)conn;
    if (reason == TC_ESHUTDOWN)
        atomic_fetch_add(&sh->saw_eof, 1);
    atomic_fetch_add(&sh->finished, 1);
}

MODE_PARAMS(modes, drain_closes_idle_message_connections, ALL_MODES)
ParameterizedTest(tc_mode *mode, modes, drain_closes_idle_message_connections, .timeout = 20)
{
    enum { DRAIN = 4000 };
    int n = *mode == TC_MODE_INLINE ? 1 : 3;
    struct shared *sh = shared_new();
    tc_server_config cfg = base_config(*mode, sh);
    cfg.drain_timeout_ms = DRAIN;
    cfg.workers = 3; /* pool */
    tc_handler h = TC_HANDLER_INIT;
    h.on_message = m_echo;
    h.on_close = m_closed;
    h.ctx = sh;
    struct msrv m;
    memset(&m, 0, sizeof m);
    cr_assert_eq(tc_server_create(&m.srv, &cfg, &h), 0);
    cr_assert_eq(tc_server_address(m.srv, &m.addr), 0);
    cr_assert_eq(pthread_create(&m.thread, NULL, serve_main, &m), 0);
    m.running = 1;
    int fd[3];
    for (int i = 0; i < n; i++) {
        fd[i] = cl_connect(&m.addr);
        cl_send(fd[i], 'm');
        cl_expect_echo(fd[i], 'm'); /* served; now idle between messages */
    }
    int64_t took = srv_stop(&m);
    cr_expect_lt(took, DRAIN / 2, "idle connections held the drain for %lld ms", (long long)took);
    for (int i = 0; i < n; i++) {
        cr_expect_eq(cl_recv1(fd[i]), -1, "client %d: no end of stream", i);
        cl_close(fd[i]);
    }
    /* on_close ran with TC_ESHUTDOWN for each (in the child, for forking). */
    M_WAIT_UNTIL(atomic_load(&sh->finished) == n, WAIT_MS);
    cr_expect_eq(atomic_load(&sh->finished), n);
    cr_expect_eq(atomic_load(&sh->saw_eof), n);
    srv_destroy(&m);
    shared_free(sh);
}

/* Inline and forking: a message loop waiting for the rest of a frame is
 * reached by the stop descriptor too; it ends quietly with TC_ESHUTDOWN. */
MODE_PARAMS(modes, drain_ends_wait_inside_a_frame, STOPFD_MODES)
ParameterizedTest(tc_mode *mode, modes, drain_ends_wait_inside_a_frame, .timeout = 40)
{
    struct shared *sh = shared_new();
    tc_server_config cfg = base_config(*mode, sh);
    int drain = tc_test_ms(3000);
    cfg.drain_timeout_ms = drain;
    cfg.conn_timeout_ms = tc_test_ms(HANDLER_MAX_MS);
    tc_codec_delimited(&cfg.codec, "\n", 1);
    tc_handler h = TC_HANDLER_INIT;
    h.on_message = m_echo;
    h.on_close = m_closed;
    h.ctx = sh;
    struct msrv m;
    memset(&m, 0, sizeof m);
    cr_assert_eq(tc_server_create(&m.srv, &cfg, &h), 0);
    cr_assert_eq(tc_server_address(m.srv, &m.addr), 0);
    cr_assert_eq(pthread_create(&m.thread, NULL, serve_main, &m), 0);
    m.running = 1;
    int fd = cl_connect(&m.addr);
    /* One send: the reply to the first line comes once the half line
     * behind it is buffered, and the loop waits for the rest of it. */
    cr_assert_eq(send(fd, "m\nhalf a li", 12, MSG_NOSIGNAL), 12);
    cl_expect_echo(fd, 'm');
    cl_expect_echo(fd, '\n');
    int64_t t0 = tc_test_now_ms();
    cr_assert_eq(tc_server_shutdown(m.srv), 0);
    M_WAIT_UNTIL(atomic_load(&m.done), drain + tc_test_ms(1000));
    int64_t took = tc_test_now_ms() - t0;
    int done = atomic_load(&m.done);
    if (!done)
        cl_close(fd); /* the client leaves, so that the loop ends */
    cr_assert(done, "%s: serve_forever still waits after %lld ms", tc_mode_name(*mode),
              (long long)took);
    pthread_join(m.thread, NULL);
    cr_expect_lt(took, drain, "%s: serve_forever took %lld ms", tc_mode_name(*mode),
                 (long long)took);
    M_WAIT_UNTIL(atomic_load(&sh->finished) == 1, WAIT_MS);
    cr_expect_eq(atomic_load(&sh->saw_eof), 1, "on_close did not get TC_ESHUTDOWN");
    cr_expect_eq(atomic_load(&sh->errors), 0, "the drain was reported");
    cl_close(fd);
    srv_destroy(&m);
    shared_free(sh);
}

/* destroy leaves descriptors, threads and children as they were. */
MODE_PARAMS(modes, destroy_restores_counts, ALL_MODES)
ParameterizedTest(tc_mode *mode, modes, destroy_restores_counts, .timeout = 20)
{
    struct shared *sh = shared_new();
    tc_test_counts before = tc_test_counts_now(own_children, 2);
    tc_server_config cfg = base_config(*mode, sh);
    struct msrv m;
    srv_start(&m, &cfg, sh);
    for (int round = 0; round < 3; round++) {
        int a = cl_connect(&m.addr);
        cl_send(a, 'a');
        cl_expect_echo(a, 'a');
        if (*mode == TC_MODE_INLINE) {
            cl_close(a);
            cl_roundtrip(&m.addr, 'b');
        } else {
            cl_roundtrip(&m.addr, 'b'); /* while a is still open */
            cl_close(a);
        }
    }
    srv_stop(&m);
    srv_destroy(&m);
    tc_test_expect_counts(before, own_children, 2, tc_mode_name(*mode));
    cr_expect_eq(atomic_load(&sh->finished), 6);
    shared_free(sh);
}

/* accepted, refused and peak_active. */
MODE_PARAMS(modes, stats, ALL_MODES)
ParameterizedTest(tc_mode *mode, modes, stats, .timeout = 20)
{
    struct shared *sh = shared_new();
    tc_server_config cfg = base_config(*mode, sh);
    struct msrv m;
    srv_start(&m, &cfg, sh);
    int a = cl_connect(&m.addr);
    cl_send(a, 'a');
    cl_expect_echo(a, 'a');
    if (*mode != TC_MODE_INLINE) {
        cl_roundtrip(&m.addr, 'b'); /* two live at once */
        cl_close(a);
    } else {
        cl_close(a);
        cl_roundtrip(&m.addr, 'b');
    }
    tc_stats st;
    /* Closed clients end asynchronously: let them, or C could overlap them. */
    M_WAIT_UNTIL((tc_server_stats(m.srv, &st), st.active == 0), WAIT_MS);
    atomic_store(&sh->refuse, 1);
    for (int i = 0; i < 2; i++) {
        int r = cl_connect(&m.addr);
        cl_send(r, 'r');
        cr_expect_eq(cl_recv1(r), -1, "a refused client is closed without a reply");
        cl_close(r);
    }
    atomic_store(&sh->refuse, 0);
    cl_roundtrip(&m.addr, 'c');
    M_WAIT_UNTIL((tc_server_stats(m.srv, &st), st.active == 0), WAIT_MS);
    cr_expect_eq(st.accepted, 5);
    cr_expect_eq(st.refused, 2);
    cr_expect_eq(st.active, 0);
    cr_expect_eq(st.peak_active, *mode == TC_MODE_INLINE ? 1u : 2u);
    cr_expect_eq(st.handler_errors, 0);
    cr_expect_eq(atomic_load(&sh->started), 3, "refused clients never reach the handler");
    srv_stop(&m);
    srv_destroy(&m);
    shared_free(sh);
}

/* ---- block_on_close: threading, forking --------------------------------- */

/* These serve through handle_request, which pool mode (like event mode) does
 * not offer: its loop accepts, and serves only through serve_forever. */
#define HANDLE_REQUEST_MODES {TC_MODE_THREADING, TC_MODE_FORKING}

Test(modes, handle_request_not_in_pool_mode, .timeout = 10)
{
    SKIP_UNLESS(TC_MODE_POOL);
    struct shared *sh = shared_new();
    tc_server_config cfg = base_config(TC_MODE_POOL, sh);
    struct msrv m;
    srv_create(&m, &cfg, sh);
    int fd = cl_connect(&m.addr); /* waiting in the backlog: nothing takes it */
    cr_assert_eq(tc_server_handle_request(m.srv), -ENOTSUP);
    cr_expect_eq(srv_stats(&m).accepted, 0, "handle_request accepted a connection");
    cl_close(fd);
    srv_destroy(&m);
    shared_free(sh);
}

struct destroyer {
    tc_server *srv;
    struct shared *sh;
    atomic_int done;
    int finished_at_return;
};

static void *destroy_main(void *arg)
{
    struct destroyer *d = arg;
    tc_server_destroy(d->srv);
    d->finished_at_return = atomic_load(&d->sh->finished);
    atomic_store(&d->done, 1);
    return NULL;
}

/* On (the default): destroy waits for a handler that is still in finish. */
MODE_PARAMS(modes, block_on_close_on, HANDLE_REQUEST_MODES)
ParameterizedTest(tc_mode *mode, modes, block_on_close_on, .timeout = 20)
{
    struct shared *sh = shared_new();
    int gate[2];
    cr_assert_eq(pipe2(gate, O_CLOEXEC), 0);
    sh->gate_rd = gate[0];
    atomic_store(&sh->gate_on, 1);
    tc_test_counts before = tc_test_counts_now(own_children, 2);
    tc_server_config cfg = base_config(*mode, sh);
    struct msrv m;
    srv_create(&m, &cfg, sh);
    int fd = cl_connect(&m.addr);
    cr_assert_eq(tc_server_handle_request(m.srv), 0); /* dispatched, not served */
    cl_send(fd, 'x');
    cl_expect_echo(fd, 'x');
    cl_close(fd);
    M_WAIT_UNTIL(atomic_load(&sh->in_finish) == 1, WAIT_MS);
    cr_assert_eq(atomic_load(&sh->in_finish), 1);

    struct destroyer d = {.srv = m.srv, .sh = sh};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, destroy_main, &d), 0);
    M_WAIT_UNTIL(atomic_load(&d.done), QUIET_MS);
    cr_expect_not(atomic_load(&d.done), "destroy returned while finish was running");
    cr_assert_eq(write(gate[1], "g", 1), 1);
    pthread_join(t, NULL);
    cr_expect_eq(d.finished_at_return, 1, "destroy returned before finish ended");
    tc_test_expect_counts(before, own_children, 2, tc_mode_name(*mode));
    close(gate[0]);
    close(gate[1]);
    shared_free(sh);
}

/* Off: destroy returns at once while a handler is blocked in read; the
 * handler then sees the end of the stream; everything is released later. */
MODE_PARAMS(modes, block_on_close_off, HANDLE_REQUEST_MODES)
ParameterizedTest(tc_mode *mode, modes, block_on_close_off, .timeout = 20)
{
    struct shared *sh = shared_new();
    tc_test_counts before = tc_test_counts_now(own_children, 2);
    tc_server_config cfg = base_config(*mode, sh);
    cfg.block_on_close = TC_OFF;
    struct msrv m;
    srv_create(&m, &cfg, sh);
    int fd = cl_connect(&m.addr);
    cr_assert_eq(tc_server_handle_request(m.srv), 0);
    cl_send(fd, 'x');
    cl_expect_echo(fd, 'x'); /* the handler now waits in read */
    int64_t t0 = tc_test_now_ms();
    srv_destroy(&m);
    int64_t took = tc_test_now_ms() - t0;
    cr_expect_lt(took, tc_test_ms(300), "destroy took %lld ms", (long long)took);
    M_WAIT_UNTIL(atomic_load(&sh->finished) == 1, WAIT_MS);
    cr_expect_eq(atomic_load(&sh->saw_eof), 1);
    cr_expect_eq(atomic_load(&sh->finished), 1);
    cr_expect_eq(cl_recv1(fd), -1, "the client sees the end of the stream");
    cl_close(fd);
    tc_test_expect_counts(before, own_children, 2, tc_mode_name(*mode));
    shared_free(sh);
}

/* ---- poll_interval_ms: service_actions while idle ------------------------------ */

/* server.h: service_actions runs at least every poll_interval_ms while the
 * server is idle (and not in a busy loop: the fifth call cannot come before
 * two intervals have passed). The reference for the same test in event mode
 * (test_event.c), which fails there on 3589a83 (issue 12, 3.2). */
MODE_PARAMS(modes, service_actions_every_poll_interval, ALL_MODES)
ParameterizedTest(tc_mode *mode, modes, service_actions_every_poll_interval, .timeout = 20)
{
    enum { INTERVAL = 20, CALLS = 5, WITHIN = 3000 };
    struct shared *sh = shared_new();
    tc_server_config cfg = base_config(*mode, sh);
    cfg.poll_interval_ms = INTERVAL;
    struct msrv m;
    int64_t t0 = tc_test_now_ms();
    srv_start(&m, &cfg, sh);
    M_WAIT_UNTIL(atomic_load(&sh->services) >= CALLS, WITHIN);
    int64_t took = tc_test_now_ms() - t0;
    int n = atomic_load(&sh->services);
    cr_expect_geq(n, CALLS, "%s: service_actions ran %d times in %lld ms (poll_interval_ms %d)",
                  tc_mode_name(*mode), n, (long long)took, INTERVAL);
    cr_expect_geq(took, 2 * INTERVAL, "%s: %d calls in %lld ms: a busy loop", tc_mode_name(*mode),
                  n, (long long)took);
    srv_stop(&m);
    srv_destroy(&m);
    shared_free(sh);
}

/* ---- a handler thread that ends abnormally: threading, pool ------------------- */

/* A handler's thread may end without returning: pthread_exit() inside the
 * handler, or pthread_cancel() from another thread while it is blocked in a
 * read (both unwind the thread; glibc runs cleanup handlers). The connection
 * must still be closed (the client sees the end of the stream), finish must
 * run exactly once, stats.active must fall back to 0, tc_server_destroy must
 * return, and pool must replace the worker it lost: with workers = 1 a new
 * connection is still served. On 3589a83 (issue 12, 3.3) the client stays
 * connected, finish never runs, active stays 1 and destroy hangs.
 *
 * Byte commands, one per send: 'X' the handler calls pthread_exit(NULL);
 * 'C' it stores its thread in victim, sets victim_ready and blocks in
 * tc_conn_read (pool, message style: in read(2) on a pipe, since its channel
 * cannot be read there) and the test then cancels it; anything else is
 * echoed. */
enum { DIE_EXIT, DIE_CANCEL };

static int die_command(struct shared *sh, tc_conn *conn, char cmd)
{
    if (cmd == 'X')
        pthread_exit(NULL);
    if (cmd != 'C')
        return 0;
    sh->victim = pthread_self();
    atomic_store(&sh->victim_ready, 1);
    char buf[16];
    if (atomic_load(&sh->block_in_pipe)) {
        /* Pool, message style: on_message runs in a worker that cannot read
         * its channel (-ENOTSUP); it blocks in a cancellation point of its
         * own, read(2) on a pipe nobody writes to. */
        ssize_t r = read(sh->block_rd, buf, sizeof buf);
        return r < 0 ? -errno : 0; /* not reached */
    }
    /* Cancellation is deferred: it takes effect inside this read (poll/recv). */
    ssize_t n = tc_conn_read(conn, buf, sizeof buf);
    return n < 0 && n != TC_EOF ? (int)n : 0; /* not reached: nothing more is sent */
}

static int die_handle(tc_conn *conn, void *ctx)
{
    struct shared *sh = ctx;
    char buf[16];
    for (;;) {
        ssize_t n = tc_conn_read(conn, buf, sizeof buf);
        if (n == TC_EOF)
            return 0;
        if (n < 0)
            return (int)n;
        int rc = die_command(sh, conn, buf[0]);
        if (rc < 0)
            return rc;
        if ((n = tc_conn_send_all(conn, buf, (size_t)n)) < 0)
            return (int)n;
    }
}

static int die_message(tc_conn *conn, const void *msg, size_t len, void *ctx)
{
    int rc = die_command(ctx, conn, *(const char *)msg);
    return rc < 0 ? rc : tc_conn_send(conn, msg, len);
}

static void die_closed(tc_conn *conn, int reason, void *ctx)
{
    struct shared *sh = ctx;
    (void)conn, (void)reason;
    atomic_fetch_add(&sh->closes, 1);
}

#define DIE_MS 2000 /* the bound of each step that should happen (scaled) */

static void handler_thread_dies(tc_mode mode, int message_style, int how)
{
    const char *what = message_style ? "message style" : "stream style";
    const char *end = how == DIE_EXIT ? "pthread_exit" : "pthread_cancel";
    struct shared *sh = shared_new();
    int block[2] = {-1, -1};
    if (mode == TC_MODE_POOL && message_style && how == DIE_CANCEL) {
        cr_assert_eq(pipe2(block, O_CLOEXEC), 0);
        sh->block_rd = block[0];
        atomic_store(&sh->block_in_pipe, 1);
    }
    tc_test_counts before = tc_test_counts_now(own_children, 2);
    tc_server_config cfg = base_config(mode, sh);
    cfg.workers = 1; /* pool: the one worker dies */
    cfg.drain_timeout_ms = 200;
    tc_handler h = TC_HANDLER_INIT;
    h.setup = h_setup;
    h.finish = h_finish;
    if (message_style) {
        h.on_message = die_message; /* the raw codec: whatever bytes arrived */
        h.on_close = die_closed;
    } else {
        h.handle = die_handle;
    }
    h.ctx = sh;
    struct msrv m;
    memset(&m, 0, sizeof m);
    cr_assert_eq(tc_server_create(&m.srv, &cfg, &h), 0);
    cr_assert_eq(tc_server_address(m.srv, &m.addr), 0);
    cr_assert_eq(pthread_create(&m.thread, NULL, serve_main, &m), 0);
    m.running = 1;

    int fd = tc_test_connect_ok(&m.addr);
    cl_send(fd, 'a');
    cl_expect_echo(fd, 'a'); /* the handler runs */
    if (how == DIE_EXIT) {
        cl_send(fd, 'X');
    } else {
        cl_send(fd, 'C');
        M_WAIT_UNTIL(atomic_load(&sh->victim_ready), WAIT_MS);
        cr_assert(atomic_load(&sh->victim_ready), "the handler did not reach its read");
        cr_assert_eq(pthread_cancel(sh->victim), 0);
    }

    /* The client sees its connection end. */
    int eof = cl_readable(fd, DIE_MS) ? cl_recv1(fd) : -2;
    cr_expect_eq(eof, -1, "%s %s, %s: the client is still connected %d ms after its handler's "
                 "thread ended (%s)", tc_mode_name(mode), what, end, tc_test_ms(DIE_MS),
                 eof == -2 ? "no end of stream" : "data instead of the end of stream");
    cl_close(fd);
    /* finish ran, once; on_close at most once; the connection is no longer active. */
    M_WAIT_UNTIL(atomic_load(&sh->finished) >= 1, DIE_MS);
    cr_expect_eq(atomic_load(&sh->finished), 1, "%s %s, %s: finish ran %d times",
                 tc_mode_name(mode), what, end, atomic_load(&sh->finished));
    cr_expect_leq(atomic_load(&sh->closes), 1, "%s %s, %s: on_close ran %d times",
                  tc_mode_name(mode), what, end, atomic_load(&sh->closes));
    tc_stats st;
    M_WAIT_UNTIL((tc_server_stats(m.srv, &st), st.active == 0), DIE_MS);
    cr_expect_eq(st.active, 0, "%s %s, %s: stats.active is %u", tc_mode_name(mode), what, end,
                 st.active);

    /* Still serving: pool with one worker must have replaced it. */
    int fd2 = tc_test_connect_ok(&m.addr);
    cl_send(fd2, 'b');
    int served = cl_readable(fd2, DIE_MS);
    cr_expect(served, "%s %s, %s: a new connection is not served within %d ms (the lost %s was "
              "not replaced)", tc_mode_name(mode), what, end, tc_test_ms(DIE_MS),
              mode == TC_MODE_POOL ? "worker" : "thread");
    if (served)
        cl_expect_echo(fd2, 'b');
    cl_close(fd2);
    if (served) {
        M_WAIT_UNTIL(atomic_load(&sh->finished) >= 2, DIE_MS);
        cr_expect_eq(atomic_load(&sh->finished), 2,
                     "%s %s, %s: %d finish calls once the second connection ended, want 2",
                     tc_mode_name(mode), what, end, atomic_load(&sh->finished));
    }

    /* serve_forever returns (bounded by the drain), then destroy must too:
     * run it in a helper thread and fail instead of hanging. */
    cr_assert_eq(tc_server_shutdown(m.srv), 0);
    M_WAIT_UNTIL(atomic_load(&m.done), WAIT_MS);
    cr_assert(atomic_load(&m.done), "%s %s, %s: serve_forever did not return", tc_mode_name(mode),
              what, end);
    pthread_join(m.thread, NULL);
    struct destroyer d = {.srv = m.srv, .sh = sh};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, destroy_main, &d), 0);
    M_WAIT_UNTIL(atomic_load(&d.done), DIE_MS);
    cr_assert(atomic_load(&d.done), "%s %s, %s: tc_server_destroy did not return within %d ms",
              tc_mode_name(mode), what, end, tc_test_ms(DIE_MS));
    pthread_join(t, NULL);
    cr_expect_eq(atomic_load(&sh->finished), served ? 2 : 1, "finish ran again in destroy");
    tc_test_expect_counts(before, own_children, 2, tc_mode_name(mode));
    if (block[0] >= 0) {
        close(block[0]);
        close(block[1]);
    }
    shared_free(sh);
}

#define THREAD_MODES {TC_MODE_THREADING, TC_MODE_POOL}

MODE_PARAMS(modes, stream_handler_pthread_exit, THREAD_MODES)
ParameterizedTest(tc_mode *mode, modes, stream_handler_pthread_exit, .timeout = 30)
{
    handler_thread_dies(*mode, 0, DIE_EXIT);
}

MODE_PARAMS(modes, stream_handler_cancelled_in_read, THREAD_MODES)
ParameterizedTest(tc_mode *mode, modes, stream_handler_cancelled_in_read, .timeout = 30)
{
    handler_thread_dies(*mode, 0, DIE_CANCEL);
}

MODE_PARAMS(modes, message_handler_pthread_exit, THREAD_MODES)
ParameterizedTest(tc_mode *mode, modes, message_handler_pthread_exit, .timeout = 30)
{
    handler_thread_dies(*mode, 1, DIE_EXIT);
}

MODE_PARAMS(modes, message_handler_cancelled_in_read, THREAD_MODES)
ParameterizedTest(tc_mode *mode, modes, message_handler_cancelled_in_read, .timeout = 30)
{
    handler_thread_dies(*mode, 1, DIE_CANCEL);
}

/* ---- pool ------------------------------------------------------------------ */

TestSuite(pool, .fini = tc_test_kill_children);

/* The job queue of the pool holds messages, not connections: with two
 * workers and one place in the queue, four clients are all accepted and
 * opened at once; two messages run, one is queued, and the fourth
 * connection's message waits unread on the loop (backpressure) instead of
 * being dropped. Once the workers are free every message is answered, each
 * connection's in order, never more than two at a time. */
static int gated_message(tc_conn *conn, const void *msg, size_t len, void *ctx)
{
    struct shared *sh = ctx;
    atomic_max(&sh->msg_peak, atomic_fetch_add(&sh->in_msg, 1) + 1);
    atomic_fetch_add(&sh->msgs, 1);
    struct pollfd p = {.fd = sh->gate_rd, .events = POLLIN};
    char c;
    if (poll(&p, 1, tc_test_ms(HANDLER_MAX_MS)) == 1)
        (void)!read(sh->gate_rd, &c, 1);
    atomic_fetch_sub(&sh->in_msg, 1);
    ssize_t n = tc_conn_send(conn, msg, len);
    return n < 0 ? (int)n : 0;
}

static void read_exact_or_fail(int fd, char *buf, size_t n, int client)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, buf + got, n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        cr_assert_gt(r, 0, "client %d: %zu of %zu bytes, then %s", client, got, n,
                     r == 0 ? "end of stream" : strerror(errno));
        got += (size_t)r;
    }
}

Test(pool, queue_and_backpressure, .timeout = 20)
{
    SKIP_UNLESS(TC_MODE_POOL);
    enum { N = 4, PER = 2 };
    struct shared *sh = shared_new();
    int gate[2];
    cr_assert_eq(pipe2(gate, O_CLOEXEC), 0);
    sh->gate_rd = gate[0];
    tc_server_config cfg = base_config(TC_MODE_POOL, sh);
    cfg.workers = 2;
    cfg.queue_len = 1;
    cr_assert_eq(tc_codec_delimited(&cfg.codec, "\n", 1), 0);
    tc_test_counts before = tc_test_counts_now(own_children, 2);
    tc_handler h = TC_HANDLER_INIT;
    h.setup = h_setup;
    h.on_message = gated_message;
    h.finish = h_finish;
    h.ctx = sh;
    struct msrv m;
    memset(&m, 0, sizeof m);
    cr_assert_eq(tc_server_create(&m.srv, &cfg, &h), 0);
    cr_assert_eq(tc_server_address(m.srv, &m.addr), 0);
    cr_assert_eq(pthread_create(&m.thread, NULL, serve_main, &m), 0);
    m.running = 1;
    cr_expect_eq(tc_test_count_threads(), before.threads + 3,
                 "two workers and the serving thread (the loop)");
    int fd[N];
    for (int i = 0; i < N; i++) {
        fd[i] = cl_connect(&m.addr);
        char req[2 * PER];
        for (int k = 0; k < PER; k++) {
            req[2 * k] = (char)((k == 0 ? 'a' : 'A') + i);
            req[2 * k + 1] = '\n';
        }
        cr_assert_eq(send(fd[i], req, sizeof req, MSG_NOSIGNAL), (ssize_t)sizeof req);
    }
    M_WAIT_UNTIL(atomic_load(&sh->in_msg) == 2, WAIT_MS);
    cr_assert_eq(atomic_load(&sh->in_msg), 2, "both workers run a message");
    tc_stats st;
    M_WAIT_UNTIL((tc_server_stats(m.srv, &st), st.accepted == N), WAIT_MS);
    cr_expect_eq(st.accepted, N, "connections are not bounded by workers + queue_len");
    M_WAIT_UNTIL(atomic_load(&sh->started) == N, WAIT_MS);
    cr_expect_eq(atomic_load(&sh->started), N, "every connection set up on the loop");
    /* Two running, one queued, the rest waiting: nothing more runs. */
    for (int i = 0; i < N; i++)
        cr_expect_not(cl_readable(fd[i], i == 0 ? QUIET_MS : 0), "client %d answered", i);
    cr_expect_eq(atomic_load(&sh->msgs), 2, "a third message ran beyond the two workers");
    /* One message ends: the queued one starts, the waiting one is queued. */
    cr_assert_eq(write(gate[1], "g", 1), 1);
    M_WAIT_UNTIL(atomic_load(&sh->msgs) == 3, WAIT_MS);
    cr_expect_eq(atomic_load(&sh->msgs), 3);
    /* Open the gate for the rest: every message answered, none dropped. */
    char all[N * PER];
    memset(all, 'g', sizeof all);
    cr_assert_eq(write(gate[1], all, sizeof all - 1), (ssize_t)sizeof all - 1);
    for (int i = 0; i < N; i++) {
        char got[2 * PER], want[2 * PER];
        for (int k = 0; k < PER; k++) {
            want[2 * k] = (char)((k == 0 ? 'a' : 'A') + i);
            want[2 * k + 1] = '\n';
        }
        read_exact_or_fail(fd[i], got, sizeof got, i);
        cr_expect_eq(memcmp(got, want, sizeof got), 0, "client %d: \"%.*s\"", i,
                     (int)sizeof got, got);
    }
    cr_expect_eq(atomic_load(&sh->msgs), N * PER);
    cr_expect_eq(atomic_load(&sh->msg_peak), 2, "more messages at once than workers");
    for (int i = 0; i < N; i++)
        cl_close(fd[i]);
    M_WAIT_UNTIL(atomic_load(&sh->finished) == N, WAIT_MS);
    cr_expect_eq(atomic_load(&sh->finished), N);
    cr_expect_eq(atomic_load(&sh->errors), 0);
    srv_stop(&m);
    srv_destroy(&m);
    tc_test_expect_counts(before, own_children, 2, "pool");
    close(gate[0]);
    close(gate[1]);
    shared_free(sh);
}

/* Stream style: a connection gets a worker for good at its first bytes.
 * With two workers and one place in the queue, two clients hold the
 * workers; two more that each send a byte are accepted and wait (one
 * queued, one on the loop: which is which depends on the order the loop saw
 * their bytes), and each is served in turn as a worker frees up. */
Test(pool, stream_connections_wait_for_a_worker, .timeout = 20)
{
    SKIP_UNLESS(TC_MODE_POOL);
    struct shared *sh = shared_new();
    tc_server_config cfg = base_config(TC_MODE_POOL, sh);
    cfg.workers = 2;
    cfg.queue_len = 1;
    tc_test_counts before = tc_test_counts_now(own_children, 2);
    struct msrv m;
    srv_start(&m, &cfg, sh);
    int fd[4];
    for (int i = 0; i < 4; i++) {
        fd[i] = cl_connect(&m.addr);
        cl_send(fd[i], (char)('a' + i));
        if (i < 2)
            cl_expect_echo(fd[i], (char)('a' + i)); /* it holds a worker from here */
    }
    tc_stats st;
    M_WAIT_UNTIL((tc_server_stats(m.srv, &st), st.accepted == 4), WAIT_MS);
    cr_expect_eq(st.accepted, 4, "parked on the loop, not in the backlog");
    cr_expect_not(cl_readable(fd[2], QUIET_MS), "the third client was served by a third worker");
    cr_expect_not(cl_readable(fd[3], 0), "the fourth client was served by a third worker");
    /* A worker frees up: one of the two is served, the other still waits. */
    cl_close(fd[0]);
    struct pollfd p[2] = {{.fd = fd[2], .events = POLLIN}, {.fd = fd[3], .events = POLLIN}};
    int r;
    while ((r = poll(p, 2, tc_test_ms(WAIT_MS))) < 0 && errno == EINTR)
        ;
    cr_assert_eq(r, 1, "%s once a worker was free", r == 0 ? "neither was served" : "both served");
    int first = p[0].revents ? 2 : 3, second = 5 - first;
    cl_expect_echo(fd[first], (char)('a' + first));
    cr_expect_not(cl_readable(fd[second], QUIET_MS), "served beyond the two workers");
    cl_close(fd[1]);
    cl_expect_echo(fd[second], (char)('a' + second));
    cl_close(fd[2]);
    cl_close(fd[3]);
    M_WAIT_UNTIL(atomic_load(&sh->finished) == 4, WAIT_MS);
    cr_expect_eq(atomic_load(&sh->max), 2);
    srv_stop(&m);
    srv_destroy(&m);
    tc_test_expect_counts(before, own_children, 2, "pool");
    shared_free(sh);
}

/* ---- forking ----------------------------------------------------------------- */

TestSuite(forking, .fini = tc_test_kill_children);

/* n connect/echo/close rounds against a forking server limited to maxc
 * children: never more children than that, none left behind. */
static void churn(struct msrv *m, int n, int maxc)
{
    for (int i = 0; i < n; i++) {
        cl_roundtrip(&m->addr, (char)('a' + i % 26));
        if (i % 10 == 0) {
            int alive = tc_test_count_children(own_children, 2, NULL);
            cr_expect_leq(alive, maxc, "%d children alive, max_children %d", alive, maxc);
        }
    }
    tc_stats st;
    M_WAIT_UNTIL((tc_server_stats(m->srv, &st), st.active == 0), WAIT_MS);
    cr_expect_eq(st.active, 0);
    cr_expect_leq(st.peak_active, (unsigned)maxc);
    int zombies, alive;
    M_WAIT_UNTIL((alive = tc_test_count_children(own_children, 2, &zombies)) == 0, WAIT_MS);
    cr_expect_eq(alive, 0, "%d children left (%d zombies)", alive, zombies);
}

/* A child holds only its own connection: not the listener, not its
 * siblings' sockets, not the server's eventfd, epoll, timer or pidfds, nor
 * the other children's pipes. Clients are opened one by one, so each later
 * child is forked while the earlier ones are alive. */
struct fdbase {
    int anon, pipes; /* the test process's own, before the server exists */
};

static struct fdbase fd_base(void)
{
    int l, s;
    struct fdbase b;
    fd_kinds(0, -1, &l, &s, &b.anon, &b.pipes); /* port 0: no socket counted */
    return b;
}

static void check_child_hygiene(struct msrv *m, struct shared *sh, int pipe_mode, struct fdbase b)
{
    enum { N = 3 }; /* within every max_conns used here */
    atomic_store(&sh->probe, 1);
    int fd[N];
    for (int i = 0; i < N; i++) {
        fd[i] = cl_connect(&m->addr);
        cl_send(fd[i], 'h');
        cl_expect_echo(fd[i], 'h');
    }
    for (int i = 0; i < N; i++)
        cl_close(fd[i]);
    atomic_store(&sh->probe, 0);
    cr_expect_eq(atomic_load(&sh->probed), N);
    cr_expect_eq(atomic_load(&sh->seen.listeners), 0, "a child kept the listener");
    cr_expect_eq(atomic_load(&sh->seen.siblings), 0, "a child kept its siblings' sockets");
    /* One eventfd is kept on purpose: the stop descriptor, through which the
     * parent's drain reaches the child's message loop. */
    cr_expect_eq(atomic_load(&sh->seen.anon), b.anon + 1,
                 "a child kept the server's wake-up eventfd, epoll, timerfd or pidfds");
    /* The test's own pipes are inherited; a pipe-mode child keeps its write end. */
    cr_expect_eq(atomic_load(&sh->seen.pipes), b.pipes + pipe_mode,
                 "a child kept other children's pipes");
}

Test(forking, child_hygiene, .timeout = 20)
{
    SKIP_UNLESS(TC_MODE_FORKING);
    struct shared *sh = shared_new();
    struct fdbase base = fd_base();
    tc_server_config cfg = base_config(TC_MODE_FORKING, sh);
    struct msrv m;
    srv_start(&m, &cfg, sh);
    check_child_hygiene(&m, sh, 0, base);
    srv_stop(&m);
    srv_destroy(&m);
    shared_free(sh);
}

/* Under churn: no zombies, never more than max_children, and children the
 * application forked itself (one from another thread, one from the serving
 * thread) are left alone: waitpid still finds them. */
Test(forking, churn_reaps_only_its_children, .timeout = 30)
{
    SKIP_UNLESS(TC_MODE_FORKING);
    enum { ROUNDS = 200, MAXC = 4 };
    struct shared *sh = shared_new();
    int release[2];
    cr_assert_eq(pipe2(release, O_CLOEXEC), 0);
    sh->release_rd = release[0];
    pid_t own = fork();
    if (own == 0) /* no Criterion call in a child: it would talk to the runner */
        own_child_main(release[0], 42);
    cr_assert_geq(own, 0);
    own_children[0] = own;
    atomic_store(&sh->fork_in_loop, 1);
    tc_test_counts before = tc_test_counts_now(own_children, 2);
    tc_server_config cfg = base_config(TC_MODE_FORKING, sh);
    cfg.max_conns = MAXC;
    struct msrv m;
    srv_start(&m, &cfg, sh);
    cr_expect_eq(atomic_load(&sh->log_pidfds) + atomic_load(&sh->log_pipes), 1);
    cl_roundtrip(&m.addr, 'f'); /* a loop turn: service_actions forks */
    M_WAIT_UNTIL(atomic_load(&sh->loop_child) != 0, WAIT_MS);
    own_children[1] = atomic_load(&sh->loop_child);
    cr_assert_gt(own_children[1], 0);
    churn(&m, ROUNDS, MAXC);
    cr_expect_leq(atomic_load(&sh->max), MAXC);
    cr_expect_eq(atomic_load(&sh->finished), ROUNDS + 1);

    /* Our own children end and stay zombies while the server goes on serving. */
    cr_assert_eq(write(release[1], "xx", 2), 2);
    for (int k = 0; k < 2; k++) {
        char state;
        M_WAIT_UNTIL((state = proc_state(own_children[k])) == 'Z', WAIT_MS);
        cr_expect_eq(state, 'Z');
    }
    for (int i = 0; i < 5; i++)
        cl_roundtrip(&m.addr, 'z');
    srv_stop(&m);
    srv_destroy(&m);
    for (int k = 0; k < 2; k++) {
        int status = 0;
        cr_expect_eq(waitpid(own_children[k], &status, WNOHANG), own_children[k],
                     "the server reaped child %d, not its own", k);
        cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 42 + k);
    }
    own_children[0] = own_children[1] = 0;
    tc_test_counts after = tc_test_counts_now(own_children, 2);
    cr_expect_eq(after.fds, before.fds);
    cr_expect_eq(after.children, 0);
    close(release[0]);
    close(release[1]);
    shared_free(sh);
}

/* A child that crashes is reported as TC_ECHILD (conn NULL), with its signal
 * in the log; the server goes on serving. */
Test(forking, crashing_child_reported, .timeout = 20)
{
    SKIP_UNLESS(TC_MODE_FORKING);
    struct shared *sh = shared_new();
    tc_server_config cfg = base_config(TC_MODE_FORKING, sh);
    struct msrv m;
    srv_start(&m, &cfg, sh);
    const char magic[] = {'K', 'A'};
    for (int i = 0; i < 2; i++) {
        int fd = cl_connect(&m.addr);
        cl_send(fd, magic[i]);
        cr_expect_eq(cl_recv1(fd), -1, "the dead child's client sees the end");
        cl_close(fd);
        M_WAIT_UNTIL(atomic_load(&sh->echild) == i + 1, WAIT_MS);
        cr_expect_eq(atomic_load(&sh->echild), i + 1);
        cl_roundtrip(&m.addr, 'o'); /* still serving */
    }
    cr_expect_eq(atomic_load(&sh->null_conn), 2);
    cr_expect_eq(atomic_load(&sh->errors), 2);
    cr_expect_eq(atomic_load(&sh->log_sigkill), 1);
    cr_expect_eq(atomic_load(&sh->log_sigabrt), 1);
    srv_stop(&m);
    tc_stats st = srv_stats(&m);
    cr_expect_eq(st.handler_errors, 2);
    cr_expect_eq(st.accepted, 4);
    srv_destroy(&m);
    cr_expect_eq(tc_test_count_children(own_children, 2, NULL), 0);
    shared_free(sh);
}

/* max_children defaults to 40, as in ForkingMixIn. */
Test(forking, default_max_children, .timeout = 30)
{
    SKIP_UNLESS(TC_MODE_FORKING);
    enum { N = 41 };
    struct shared *sh = shared_new();
    tc_server_config cfg = base_config(TC_MODE_FORKING, sh);
    struct msrv m;
    srv_start(&m, &cfg, sh);
    int fd[N];
    for (int i = 0; i < N; i++) {
        fd[i] = cl_connect(&m.addr);
        cl_send(fd[i], 'x');
    }
    for (int i = 0; i < N - 1; i++)
        cl_expect_echo(fd[i], 'x');
    cr_expect_not(cl_readable(fd[N - 1], QUIET_MS), "a 41st child was forked");
    cl_close(fd[0]);
    cl_expect_echo(fd[N - 1], 'x');
    for (int i = 1; i < N; i++)
        cl_close(fd[i]);
    M_WAIT_UNTIL(atomic_load(&sh->finished) == N, WAIT_MS);
    cr_expect_eq(atomic_load(&sh->max), N - 1);
    srv_stop(&m);
    cr_expect_eq(srv_stats(&m).peak_active, N - 1);
    srv_destroy(&m);
    shared_free(sh);
}

/* Make pidfd_open fail with ENOSYS in this test process, as under gVisor. */
static int deny_pidfd_open(void)
{
#if defined(__x86_64__)
    const unsigned arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
    const unsigned arch = AUDIT_ARCH_AARCH64;
#else
    const unsigned arch = 0;
#endif
#ifndef SYS_pidfd_open
    return -1;
#else
    if (!arch)
        return -1;
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_pidfd_open, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof filter / sizeof filter[0], .filter = filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
#endif
}

/* Without pidfd_open each child holds a pipe: the same guarantees. */
Test(forking, pipe_fallback, .timeout = 30)
{
    SKIP_UNLESS(TC_MODE_FORKING);
    if (deny_pidfd_open() < 0)
        cr_skip_test("cannot install a seccomp filter here");
    errno = 0;
    cr_assert_eq(syscall(SYS_pidfd_open, getpid(), 0), -1);
    cr_assert_eq(errno, ENOSYS);
    enum { MAXC = 3 };
    struct shared *sh = shared_new();
    tc_test_counts before = tc_test_counts_now(own_children, 2);
    struct fdbase base = fd_base();
    tc_server_config cfg = base_config(TC_MODE_FORKING, sh);
    cfg.max_conns = MAXC;
    cfg.drain_timeout_ms = 100;
    struct msrv m;
    srv_start(&m, &cfg, sh);
    cr_expect_eq(atomic_load(&sh->log_pipes), 1, "the fallback was not chosen");
    check_child_hygiene(&m, sh, 1, base);
    churn(&m, 60, MAXC);
    int fd = cl_connect(&m.addr);
    cl_send(fd, 'K');
    cr_expect_eq(cl_recv1(fd), -1);
    cl_close(fd);
    M_WAIT_UNTIL(atomic_load(&sh->echild) == 1, WAIT_MS);
    cr_expect_eq(atomic_load(&sh->echild), 1);
    /* A handler blocked in read is still cut short by the drain. */
    fd = cl_connect(&m.addr);
    cl_send(fd, 'x');
    cl_expect_echo(fd, 'x');
    tc_server_shutdown(m.srv);
    M_WAIT_UNTIL(atomic_load(&m.done), WAIT_MS * 2);
    pthread_join(m.thread, NULL);
    cr_expect_eq(cl_recv1(fd), -1);
    cl_close(fd);
    srv_destroy(&m);
    tc_test_expect_counts(before, own_children, 2, "forking/pipes");
    shared_free(sh);
}

/* Without block_on_close, destroy returns while children still run (here
 * waiting in finish, which shutting their sockets down does not end); the
 * reaper thread reaps them afterwards and the server is freed last. */
Test(forking, abandoned_children_reaped, .timeout = 20)
{
    SKIP_UNLESS(TC_MODE_FORKING);
    enum { N = 3 };
    struct shared *sh = shared_new();
    int gate[2];
    cr_assert_eq(pipe2(gate, O_CLOEXEC), 0);
    sh->gate_rd = gate[0];
    atomic_store(&sh->gate_on, 1);
    tc_test_counts before = tc_test_counts_now(own_children, 2);
    tc_server_config cfg = base_config(TC_MODE_FORKING, sh);
    cfg.block_on_close = TC_OFF;
    struct msrv m;
    srv_create(&m, &cfg, sh);
    for (int i = 0; i < N; i++) {
        int fd = cl_connect(&m.addr);
        cr_assert_eq(tc_server_handle_request(m.srv), 0);
        cl_send(fd, 'x');
        cl_expect_echo(fd, 'x');
        cl_close(fd);
    }
    M_WAIT_UNTIL(atomic_load(&sh->in_finish) == N, WAIT_MS);
    cr_assert_eq(atomic_load(&sh->in_finish), N);
    int64_t t0 = tc_test_now_ms();
    srv_destroy(&m);
    cr_expect_lt(tc_test_now_ms() - t0, tc_test_ms(300), "destroy waited for the children");
    cr_expect_eq(tc_test_count_children(own_children, 2, NULL), N, "children ended before the gate opened");
    cr_assert_eq(write(gate[1], "ggg", N), N);
    tc_test_expect_counts(before, own_children, 2, "forking/abandon");
    cr_expect_eq(atomic_load(&sh->finished), N);
    close(gate[0]);
    close(gate[1]);
    shared_free(sh);
}
