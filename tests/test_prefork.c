/* SPDX-License-Identifier: MIT */
/* tc_prefork: workers sharing a port with SO_REUSEPORT (the kernel spreads
 * the connections), a killed worker restarted while the others keep their
 * connections, graceful stop, the restart limit, SIGKILL after the stop
 * timeout, clean exits, and the supervisor's copy in a worker. The supervisor
 * runs in a forked child of the test (or in the test process), never with
 * Criterion assertions outside the test process. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "helpers.h"

TestSuite(prefork, .timeout = 60);

/* ---- a worker: a threading server on the shared port --------------------------- */

struct wctx {
    const char *listen;
    int ready_fd; /* the worker writes "ready INDEX PID\n" here once it listens */
};

static int w_index;
static tc_server *volatile w_srv;

static void w_term(int sig)
{
    (void)sig;
    if (w_srv)
        tc_server_shutdown(w_srv);
}

/* "INDEX PID\n", then an echo. */
static int index_handle(tc_conn *c, void *ctx)
{
    (void)ctx;
    int rc = tc_conn_printf(c, "%d %ld\n", w_index, (long)getpid());
    if (rc < 0 || (rc = tc_conn_flush(c)) < 0)
        return rc;
    return tc_test_echo_handle(c, NULL);
}

static int test_worker(int index, void *ctx)
{
    struct wctx *w = ctx;
    tc_server_config cfg;
    tc_server_config_init(&cfg);
    cfg.listen = w->listen;
    cfg.reuse_port = TC_ON;
    cfg.mode = TC_MODE_THREADING;
    cfg.conn_timeout_ms = 10000;
    cfg.drain_timeout_ms = 200;
    tc_handler h = TC_HANDLER_INIT;
    h.handle = index_handle;
    tc_server *srv;
    w_index = index;
    if (tc_server_create(&srv, &cfg, &h) < 0)
        return 1;
    w_srv = srv;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = w_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    char line[64];
    int n = snprintf(line, sizeof line, "ready %d %ld\n", index, (long)getpid());
    if (write(w->ready_fd, line, (size_t)n) != n) /* one write: lines never interleave */
        return 1;
    int rc = tc_server_serve_forever(srv);
    tc_server_destroy(srv);
    return rc < 0;
}

static tc_prefork *volatile sup;

static void sup_term(int sig)
{
    (void)sig;
    tc_prefork_stop(sup);
}

/* The supervisor process: runs until SIGTERM; exits 0 when run returned 0. */
static pid_t start_supervisor(struct wctx *w, int processes)
{
    pid_t pid = fork();
    if (pid < 0)
        cr_assert_fail("fork: %s", strerror(errno)); /* not in the child: no Criterion there */
    if (pid)
        return pid;
    tc_prefork_config o = TC_PREFORK_CONFIG_INIT;
    tc_prefork *pf;
    o.processes = processes;
    o.worker = test_worker;
    o.ctx = w;
    o.stop_timeout_ms = 5000;
    if (tc_prefork_create(&pf, &o) < 0)
        _exit(2);
    sup = pf;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = sup_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    int rc = tc_prefork_run(pf);
    tc_prefork_destroy(pf);
    _exit(rc == 0 ? 0 : 3);
}

/* Hold a port for the workers: bound with SO_REUSEPORT, never listening, so
 * it receives no connection itself. */
static int reserve_port(char *listen, size_t n)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;
    cr_assert_geq(fd, 0);
    cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on), 0);
    cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on), 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    snprintf(listen, n, "127.0.0.1:%d", ntohs(a.sin_port));
    return fd;
}

/* Read one line from fd within ms: 0, or -ETIMEDOUT / -EPIPE. */
static int read_line(int fd, char *buf, size_t n, int ms)
{
    size_t got = 0;
    int64_t end = tc_test_now_ms() + ms;
    for (;;) {
        int left = (int)(end - tc_test_now_ms());
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, left) <= 0)
            return -ETIMEDOUT;
        ssize_t r = read(fd, buf + got, 1);
        if (r <= 0)
            return -EPIPE;
        if (buf[got] == '\n' || got + 2 == n) {
            buf[got] = '\0';
            return 0;
        }
        got++;
    }
}

static int wait_exit(pid_t pid, int ms)
{
    int64_t end = tc_test_now_ms() + ms;
    int status;
    for (;;) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (tc_test_now_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        struct timespec ts = {0, 5 * 1000000};
        nanosleep(&ts, NULL);
    }
}

/* Connect and read the worker's "INDEX PID" line; the socket stays open in *fd. */
static void who(const tc_addr *addr, int *fd, int *index, long *pid)
{
    char line[64];
    *fd = tc_test_connect_ok(addr);
    cr_assert_eq(read_line(*fd, line, sizeof line, TC_TEST_WAIT_MS), 0, "no greeting");
    cr_assert_eq(sscanf(line, "%d %ld", index, pid), 2, "greeting: %s", line);
}

#define WORKERS 4
#define CONNECTIONS 200

Test(prefork, spread_kill_restart_stop)
{
    char listen[64], line[64];
    int hold = reserve_port(listen, sizeof listen);
    int ready[2];
    cr_assert_eq(pipe2(ready, O_CLOEXEC), 0);
    struct wctx w = {listen, ready[1]};
    pid_t sup_pid = start_supervisor(&w, WORKERS);
    close(ready[1]);
    long pids[WORKERS] = {0};
    for (int i = 0; i < WORKERS; i++) {
        int idx;
        long pid;
        cr_assert_eq(read_line(ready[0], line, sizeof line, TC_TEST_WAIT_MS), 0);
        cr_assert_eq(sscanf(line, "ready %d %ld", &idx, &pid), 2, "line: %s", line);
        cr_assert(idx >= 0 && idx < WORKERS && pids[idx] == 0, "line: %s", line);
        pids[idx] = pid;
    }
    tc_addr addr;
    cr_assert_eq(tc_addr_parse(&addr, listen), 0);

    /* The kernel spreads connections by a hash: over 200, several workers answer. */
    int hits[WORKERS] = {0}, open_fd[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        open_fd[i] = -1;
    for (int i = 0; i < CONNECTIONS; i++) {
        int fd, idx;
        long pid;
        who(&addr, &fd, &idx, &pid);
        cr_assert(idx >= 0 && idx < WORKERS && pid == pids[idx], "worker %d pid %ld", idx, pid);
        hits[idx]++;
        if (open_fd[idx] < 0)
            open_fd[idx] = fd; /* one open connection per worker that answered */
        else
            close(fd);
    }
    int distinct = 0;
    for (int i = 0; i < WORKERS; i++)
        distinct += hits[i] > 0;
    cr_log_info("connections per worker: %d %d %d %d", hits[0], hits[1], hits[2], hits[3]);
    cr_assert_geq(distinct, 2, "only %d worker(s) answered", distinct);

    /* SIGKILL one worker that holds an open connection. */
    int victim = -1;
    for (int i = 0; i < WORKERS && victim < 0; i++)
        if (open_fd[i] >= 0)
            victim = i;
    cr_assert_eq(kill((pid_t)pids[victim], SIGKILL), 0);
    /* Its client sees the connection end... */
    char buf[16];
    cr_assert_leq(tc_test_recv_full(open_fd[victim], buf, 1), 0);
    close(open_fd[victim]);
    open_fd[victim] = -1;
    /* ... the others keep echoing ... */
    for (int i = 0; i < WORKERS; i++) {
        if (open_fd[i] < 0)
            continue;
        cr_assert_eq(tc_test_send_all(open_fd[i], "still here", 10), 0);
        cr_assert_eq(tc_test_recv_full(open_fd[i], buf, 10), 10, "worker %d lost its client", i);
        cr_assert_eq(memcmp(buf, "still here", 10), 0);
    }
    /* ... and the supervisor starts the victim's index again, as a new process. */
    int idx;
    long pid;
    cr_assert_eq(read_line(ready[0], line, sizeof line, TC_TEST_WAIT_MS), 0, "no restart");
    cr_assert_eq(sscanf(line, "ready %d %ld", &idx, &pid), 2);
    cr_assert_eq(idx, victim);
    cr_assert_neq(pid, pids[victim]);
    pids[victim] = pid;
    int seen = 0;
    for (int i = 0; i < CONNECTIONS && !seen; i++) {
        int fd;
        long p;
        who(&addr, &fd, &idx, &p);
        seen = p == pid;
        close(fd);
    }
    cr_assert(seen, "the restarted worker never answered");

    /* A graceful stop: every worker exits, the supervisor with status 0. */
    for (int i = 0; i < WORKERS; i++)
        if (open_fd[i] >= 0)
            close(open_fd[i]);
    cr_assert_eq(kill(sup_pid, SIGTERM), 0);
    cr_assert_eq(wait_exit(sup_pid, TC_TEST_WAIT_MS), 0);
    for (int i = 0; i < WORKERS; i++)
        cr_assert(kill((pid_t)pids[i], 0) < 0 && errno == ESRCH, "worker %d still exists", i);
    cr_assert_eq(tc_test_connect(&addr), -ECONNREFUSED);
    close(ready[0]);
    close(hold);
}

/* ---- the supervisor in this process -------------------------------------------------- */

static tc_test_event plog;

static void log_hook(tc_prefork *pf, tc_log_level level, const char *msg, void *ctx)
{
    (void)pf;
    (void)level;
    (void)ctx;
    tc_test_event_post(&plog, msg);
}

static int crashing_worker(int index, void *ctx)
{
    (void)index;
    (void)ctx;
    return 7; /* exit status 1: a failure */
}

Test(prefork, restart_limit)
{
    tc_test_event_init(&plog);
    tc_prefork_config o = TC_PREFORK_CONFIG_INIT;
    o.processes = 2;
    o.worker = crashing_worker;
    o.max_restarts = 2;
    o.log = log_hook;
    tc_prefork *pf;
    cr_assert_eq(tc_prefork_create(&pf, &o), 0);
    int64_t t0 = tc_test_now_ms();
    cr_assert_eq(tc_prefork_run(pf), TC_ECHILD);
    cr_assert_lt(tc_test_now_ms() - t0, TC_TEST_WAIT_MS);
    char log[4096];
    tc_test_event_log(&plog, log, sizeof log);
    cr_assert(strstr(log, "exited with status 1; restarting it"), "log: %s", log);
    cr_assert(strstr(log, "more than 2 restarts within 10000 ms; giving up"), "log: %s", log);
    /* Worker starts: 1 + 2 restarts for the one that hit the limit first. */
    int starts = 0;
    for (const char *p = log; (p = strstr(p, "started: pid")); p++)
        starts++;
    cr_assert(starts >= 4 && starts <= 6, "%d starts; log: %s", starts, log);
    cr_assert_eq(tc_prefork_worker_pid(pf, 0), 0);
    cr_assert_eq(tc_prefork_worker_pid(pf, 1), 0);
    tc_prefork_destroy(pf);
    tc_test_event_destroy(&plog);
}

static int done_worker(int index, void *ctx)
{
    (void)ctx;
    (void)index;
    return 0;
}

/* A worker that returns 0 is done: not restarted; run returns when all are. */
Test(prefork, clean_exits_are_not_restarted)
{
    tc_test_event_init(&plog);
    tc_prefork_config o = TC_PREFORK_CONFIG_INIT;
    o.processes = 3;
    o.worker = done_worker;
    o.log = log_hook;
    tc_prefork *pf;
    cr_assert_eq(tc_prefork_create(&pf, &o), 0);
    cr_assert_eq(tc_prefork_processes(pf), 3);
    cr_assert_eq(tc_prefork_run(pf), 0);
    char log[4096];
    tc_test_event_log(&plog, log, sizeof log);
    cr_assert(!strstr(log, "restarting"), "log: %s", log);
    int starts = 0;
    for (const char *p = log; (p = strstr(p, "started: pid")); p++)
        starts++;
    cr_assert_eq(starts, 3, "log: %s", log);
    tc_prefork_destroy(pf);
    tc_test_event_destroy(&plog);
}

/* A worker that ignores the stop signal is killed after stop_timeout_ms. */
static int stubborn_worker(int index, void *ctx)
{
    (void)index;
    int fd = *(int *)ctx;
    signal(SIGTERM, SIG_IGN);
    if (write(fd, "r", 1) != 1)
        return 1;
    for (;;)
        pause();
}

struct stopper {
    tc_prefork *pf;
    int ready_fd, workers;
};

static void *stopper_main(void *arg)
{
    struct stopper *s = arg;
    char c;
    for (int i = 0; i < s->workers; i++) {
        struct pollfd p = {.fd = s->ready_fd, .events = POLLIN};
        if (poll(&p, 1, TC_TEST_WAIT_MS) != 1 || read(s->ready_fd, &c, 1) != 1)
            break;
    }
    tc_prefork_stop(s->pf);
    return NULL;
}

Test(prefork, stop_timeout_then_sigkill)
{
    tc_test_event_init(&plog);
    int ready[2];
    cr_assert_eq(pipe2(ready, O_CLOEXEC), 0);
    tc_prefork_config o = TC_PREFORK_CONFIG_INIT;
    o.processes = 2;
    o.worker = stubborn_worker;
    o.ctx = &ready[1];
    o.stop_timeout_ms = 300;
    o.log = log_hook;
    tc_prefork *pf;
    cr_assert_eq(tc_prefork_create(&pf, &o), 0);
    struct stopper s = {pf, ready[0], 2};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, stopper_main, &s), 0);
    int64_t t0 = tc_test_now_ms();
    cr_assert_eq(tc_prefork_run(pf), 0);
    int64_t took = tc_test_now_ms() - t0;
    pthread_join(t, NULL);
    cr_assert_geq(took, 300, "returned after %lld ms", (long long)took);
    char log[4096];
    tc_test_event_log(&plog, log, sizeof log);
    cr_assert(strstr(log, "still running after 300 ms: SIGKILL"), "log: %s", log);
    tc_prefork_destroy(pf);
    close(ready[0]);
    close(ready[1]);
    tc_test_event_destroy(&plog);
}

/* In a worker the supervisor's copy cannot stop anything. */
static tc_prefork *self;

static int stop_in_worker(int index, void *ctx)
{
    (void)index;
    (void)ctx;
    return tc_prefork_stop(self) == -EPERM && tc_prefork_run(self) == -EPERM ? 0 : 1;
}

Test(prefork, stop_and_run_in_a_worker_do_nothing)
{
    tc_prefork_config o = TC_PREFORK_CONFIG_INIT;
    o.processes = 2;
    o.worker = stop_in_worker;
    o.max_restarts = 1;
    cr_assert_eq(tc_prefork_create(&self, &o), 0);
    cr_assert_eq(tc_prefork_run(self), 0);
    tc_prefork_destroy(self);
}

Test(prefork, stop_before_run_and_options)
{
    tc_prefork_config o = TC_PREFORK_CONFIG_INIT;
    tc_prefork *pf;
    cr_assert_eq(tc_prefork_create(&pf, &o), TC_EBADCONFIG, "no worker");
    o.worker = crashing_worker;
    o.stop_signal = SIGSTOP;
    cr_assert_eq(tc_prefork_create(&pf, &o), TC_EBADCONFIG);
    o.stop_signal = 0;
    o.processes = -1;
    cr_assert_eq(tc_prefork_create(&pf, &o), TC_EBADCONFIG);
    o.processes = 0;
    cr_assert_eq(tc_prefork_create(NULL, &o), -EINVAL);
    cr_assert_eq(tc_prefork_create(&pf, &o), 0);
    cr_assert_geq(tc_prefork_processes(pf), 1, "0 = the CPU count");
    cr_assert_eq(tc_prefork_worker_pid(pf, 0), 0);
    cr_assert_eq(tc_prefork_worker_pid(pf, -1), -EINVAL);
    /* A stop requested before run: run returns at once, forking nothing. */
    cr_assert_eq(tc_prefork_stop(pf), 0);
    cr_assert_eq(tc_prefork_run(pf), 0);
    cr_assert_eq(tc_prefork_worker_pid(pf, 0), 0);
    tc_prefork_destroy(pf);
    tc_prefork_destroy(NULL);
    cr_assert_eq(tc_prefork_stop(NULL), -EINVAL);
    cr_assert_eq(tc_prefork_run(NULL), -EINVAL);
}

/* tc_prefork_config_init() copies TC_PREFORK_CONFIG_INIT, over whatever was there. */
Test(prefork, config_init_equals_the_macro, .timeout = 10)
{
    tc_prefork_config m = TC_PREFORK_CONFIG_INIT, b;
    memset(&b, 0x5A, sizeof b);
    tc_prefork_config_init(&b);
    cr_assert_eq(b.processes, m.processes);
    cr_assert(b.worker == m.worker);
    cr_assert(b.ctx == m.ctx);
    cr_assert_eq(b.max_restarts, m.max_restarts);
    cr_assert_eq(b.restart_window_ms, m.restart_window_ms);
    cr_assert_eq(b.stop_signal, m.stop_signal);
    cr_assert_eq(b.stop_timeout_ms, m.stop_timeout_ms);
    cr_assert(b.log == m.log);
    tc_prefork_config_init(NULL); /* does nothing */
}
