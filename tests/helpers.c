/* SPDX-License-Identifier: MIT */
/* Test helpers (see helpers.h): background servers, raw loopback clients,
 * event synchronisation, resource counts, and the timeout multiplier. */
#include "helpers.h"

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- time ------------------------------------------------------------------ */

double tc_test_mult(void)
{
    const char *s = getenv("TC_TEST_TIMEOUT_MULT");
    if (!s || !*s)
        return 1.0;
    char *end;
    double v = strtod(s, &end);
    return (*end == '\0' && v > 0) ? v : 1.0;
}

int tc_test_ms(int base_ms)
{
    double v = base_ms * tc_test_mult();
    if (v < 1)
        return 1;
    if (v > 3600.0 * 1000)
        return 3600 * 1000;
    return (int)v;
}

#ifndef TC_TEST_SHIM /* the TSan job's stand-in scales timeouts itself */
/* Criterion reads each test's .timeout when it starts the test, after the
 * PRE_ALL hooks: scale them here so slow machines (valgrind, sanitizers, CI)
 * only need TC_TEST_TIMEOUT_MULT. */
ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    double k = tc_test_mult();
    if (k == 1.0)
        return;
    FOREACH_SET(struct criterion_suite_set *s, set->suites)
    {
        if (!s->tests)
            continue;
        FOREACH_SET(struct criterion_test *t, s->tests)
        {
            if (t->data && t->data->timeout > 0)
                t->data->timeout *= k;
        }
    }
}
#endif

int64_t tc_test_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t tc_test_now_ms(void)
{
    return tc_test_now_ns() / 1000000;
}

static void deadline_in(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

static void cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

/* ---- events ------------------------------------------------------------------ */

void tc_test_event_init(tc_test_event *e)
{
    memset(e, 0, sizeof *e);
    pthread_mutex_init(&e->mu, NULL);
    cond_init_monotonic(&e->cv);
}

void tc_test_event_destroy(tc_test_event *e)
{
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
}

void tc_test_event_post(tc_test_event *e, const char *tag)
{
    pthread_mutex_lock(&e->mu);
    if (tag) {
        size_t used = strlen(e->log);
        if (used < sizeof e->log - 1)
            snprintf(e->log + used, sizeof e->log - used, "%s%s", used ? "," : "", tag);
    }
    e->count++;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void tc_test_event_postf(tc_test_event *e, const char *fmt, ...)
{
    char tag[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tag, sizeof tag, fmt, ap);
    va_end(ap);
    tc_test_event_post(e, tag);
}

int tc_test_event_wait(tc_test_event *e, int target, int ms)
{
    struct timespec dl;
    int rc = 0;
    deadline_in(&dl, ms);
    pthread_mutex_lock(&e->mu);
    while (e->count < target && rc == 0)
        rc = pthread_cond_timedwait(&e->cv, &e->mu, &dl);
    rc = e->count >= target ? 0 : -ETIMEDOUT;
    pthread_mutex_unlock(&e->mu);
    return rc;
}

int tc_test_event_count(tc_test_event *e)
{
    pthread_mutex_lock(&e->mu);
    int n = e->count;
    pthread_mutex_unlock(&e->mu);
    return n;
}

void tc_test_event_log(tc_test_event *e, char *out, size_t n)
{
    pthread_mutex_lock(&e->mu);
    snprintf(out, n, "%s", e->log);
    pthread_mutex_unlock(&e->mu);
}

void tc_test_log_hook(tc_server *srv, tc_log_level level, const char *msg, void *ctx)
{
    static const char *const names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    (void)srv;
    tc_test_event_postf(ctx, "%s:%s", (unsigned)level < 4 ? names[level] : "?", msg);
}

/* ---- event mode's backend --------------------------------------------------- */

int tc_test_backend_uring(void)
{
    const char *b = getenv("TC_TEST_BACKEND");
    return b && strcmp(b, "io_uring") == 0;
}

int tc_test_server_create_raw(tc_server **out, const tc_server_config *cfg,
                              const tc_handler *handler)
{
    if (cfg && tc_test_backend_uring()) {
        /* The io_uring run is for event mode's loops: a test serving with
         * anything else (another mode, datagrams) ran in the epoll run. */
        if (cfg->mode != TC_MODE_EVENT || (cfg->listen && (!strncmp(cfg->listen, "udp:", 4) ||
                                                           !strncmp(cfg->listen, "unixgram:", 9))))
            cr_skip_test("not an event-mode stream server: the epoll run covers it");
        if (cfg->backend == TC_BACKEND_DEFAULT) {
            tc_server_config c = *cfg;
            c.backend = TC_BACKEND_IO_URING;
            return (tc_server_create)(out, &c, handler);
        }
    }
    return (tc_server_create)(out, cfg, handler);
}

/* ---- a server in a background thread ----------------------------------------- */

tc_server_config tc_test_config(void)
{
    tc_server_config cfg;
    tc_server_config_init(&cfg);
    cfg.conn_timeout_ms = TC_TEST_WAIT_MS;
    return cfg;
}

int tc_test_echo_handle(tc_conn *c, void *ctx)
{
    char buf[4096];
    ssize_t n;
    (void)ctx;
    while ((n = tc_conn_read(c, buf, sizeof buf)) > 0)
        if ((n = tc_conn_send_all(c, buf, (size_t)n)) < 0)
            return (int)n;
    return n == TC_EOF ? 0 : (int)n;
}

tc_handler tc_test_echo_handler(void)
{
    tc_handler h = TC_HANDLER_INIT;
    h.handle = tc_test_echo_handle;
    return h;
}

int tc_test_server_create(tc_test_server *ts, const char *listen, const tc_server_config *cfg,
                          const tc_handler *handler)
{
    tc_server_config c = cfg ? *cfg : tc_test_config();
    tc_handler h = handler ? *handler : tc_test_echo_handler();
    memset(ts, 0, sizeof *ts);
    pthread_mutex_init(&ts->mu, NULL);
    cond_init_monotonic(&ts->cv);
    if (listen)
        c.listen = listen;
    int rc = tc_server_create(&ts->srv, &c, &h);
    if (rc < 0) {
        ts->srv = NULL;
        return rc;
    }
    cr_assert_eq(tc_server_address(ts->srv, &ts->addr), 0);
    cr_assert_gt(tc_addr_format(&ts->addr, ts->addr_str, sizeof ts->addr_str), 0);
    return 0;
}

static void *serve_main(void *arg)
{
    tc_test_server *ts = arg;
    pthread_mutex_lock(&ts->mu);
    ts->entered = 1;
    pthread_cond_broadcast(&ts->cv);
    pthread_mutex_unlock(&ts->mu);

    int rc = tc_server_serve_forever(ts->srv);

    pthread_mutex_lock(&ts->mu);
    ts->serve_rc = rc;
    ts->done = 1;
    pthread_cond_broadcast(&ts->cv);
    pthread_mutex_unlock(&ts->mu);
    return NULL;
}

void tc_test_server_run(tc_test_server *ts)
{
    cr_assert_not_null(ts->srv);
    cr_assert(!ts->thread_running, "server thread already running");
    pthread_mutex_lock(&ts->mu);
    ts->entered = ts->done = 0;
    ts->serve_rc = 0;
    pthread_mutex_unlock(&ts->mu);
    cr_assert_eq(pthread_create(&ts->thread, NULL, serve_main, ts), 0);
    ts->thread_running = 1;
}

void tc_test_server_start(tc_test_server *ts, const char *listen, const tc_server_config *cfg,
                          const tc_handler *handler)
{
    int rc = tc_test_server_create(ts, listen, cfg, handler);
    cr_assert_eq(rc, 0, "tc_server_create(%s): %s (%s)", listen ? listen : "default",
                 tc_strerror(rc), tc_err_name(rc));
    tc_test_server_run(ts);
}

static int wait_flag(tc_test_server *ts, const int *flag, int ms)
{
    struct timespec dl;
    int rc = 0;
    deadline_in(&dl, ms);
    pthread_mutex_lock(&ts->mu);
    while (!*flag && rc == 0)
        rc = pthread_cond_timedwait(&ts->cv, &ts->mu, &dl);
    rc = *flag ? 0 : -ETIMEDOUT;
    pthread_mutex_unlock(&ts->mu);
    return rc;
}

int tc_test_server_wait_entered(tc_test_server *ts, int ms)
{
    return wait_flag(ts, &ts->entered, ms);
}

int tc_test_server_wait_done(tc_test_server *ts, int ms)
{
    return wait_flag(ts, &ts->done, ms);
}

int tc_test_server_join(tc_test_server *ts)
{
    if (!ts->thread_running)
        return 0;
    cr_assert_eq(tc_test_server_wait_done(ts, TC_TEST_WAIT_MS), 0,
                 "serve_forever did not return within %d ms", TC_TEST_WAIT_MS);
    cr_assert_eq(pthread_join(ts->thread, NULL), 0);
    ts->thread_running = 0;
    return ts->serve_rc;
}

int tc_test_server_stop(tc_test_server *ts)
{
    int rc = 0;
    if (!ts->srv)
        return 0;
    if (ts->thread_running) {
        cr_assert_eq(tc_server_shutdown(ts->srv), 0);
        rc = tc_test_server_join(ts);
    }
    tc_server_destroy(ts->srv);
    ts->srv = NULL;
    pthread_cond_destroy(&ts->cv);
    pthread_mutex_destroy(&ts->mu);
    return rc;
}

/* ---- raw clients -------------------------------------------------------------- */

/* A connect() a signal interrupted (with SO_SNDTIMEO set, even SA_RESTART
 * does not restart it; tests that storm their own thread with signals hit
 * this) goes on in the kernel: wait for it, bounded, and take its result. */
static int connect_finish(int fd, int ms)
{
    int64_t end = tc_test_now_ms() + ms;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int r;
    do {
        int64_t left = end - tc_test_now_ms();
        r = poll(&p, 1, left > 0 ? (int)left : 0); /* never negative: that is forever */
    } while (r < 0 && errno == EINTR && tc_test_now_ms() < end);
    if (r <= 0)
        return r == 0 ? ETIMEDOUT : errno;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return errno;
    return err;
}

void tc_test_nofile_lower(struct rlimit *old, int headroom)
{
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, old), 0);
    rlim_t lim = 0;
    while (fcntl((int)lim, F_GETFD) >= 0)
        lim++;
    struct rlimit rl = *old;
    rl.rlim_cur = lim + (rlim_t)headroom;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
}

int tc_test_nofile_fill(int *fds, int cap)
{
    int n = 0;
    for (int fd; n < cap && (fd = dup(0)) >= 0;)
        fds[n++] = fd;
    cr_assert(n < cap || dup(0) < 0, "descriptors were not exhausted (%d taken)", n);
    return n;
}

int tc_test_connect(const tc_addr *addr)
{
    int fd = socket(tc_addr_family(addr), SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int ms = TC_TEST_WAIT_MS;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    /* SO_SNDTIMEO also bounds a blocking connect() on Linux. */
    int err = 0;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0)
        err = errno;
    else if (connect(fd, &addr->u.sa, addr->len) < 0)
        err = errno == EINTR ? connect_finish(fd, ms) : errno;
    if (err) {
        close(fd);
        return -err;
    }
    return fd;
}

int tc_test_connect_ok(const tc_addr *addr)
{
    int fd = tc_test_connect(addr);
    cr_assert_geq(fd, 0, "connect: %s", strerror(-fd));
    return fd;
}

int tc_test_send_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

ssize_t tc_test_recv_full(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, (char *)buf + got, n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return got ? (ssize_t)got : -errno;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

int tc_test_recv_eof(int fd)
{
    char c;
    for (;;) {
        ssize_t r = recv(fd, &c, 1, 0);
        if (r == 0)
            return 0;
        if (r > 0)
            return 1;
        if (errno == EINTR)
            continue;
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

void tc_test_echo_roundtrip(const tc_addr *addr, const char *msg)
{
    size_t n = strlen(msg);
    char buf[4096];
    cr_assert_lt(n, sizeof buf);
    int fd = tc_test_connect_ok(addr);
    cr_assert_eq(tc_test_send_all(fd, msg, n), 0);
    cr_assert_eq(shutdown(fd, SHUT_WR), 0);
    ssize_t got = tc_test_recv_full(fd, buf, n);
    cr_assert_eq(got, (ssize_t)n, "echo: got %zd of %zu bytes", got, n);
    cr_assert_eq(memcmp(buf, msg, n), 0, "echo: payload differs");
    cr_assert_eq(tc_test_recv_eof(fd), 0, "echo: no EOF after the payload");
    close(fd);
}

/* ---- resources ----------------------------------------------------------------- */

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -errno;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

int tc_test_count_fds(void)
{
    int n = count_dir("/proc/self/fd");
    cr_assert_gt(n, 0, "cannot list /proc/self/fd");
    return n - 1; /* the directory stream's own descriptor */
}

int tc_test_count_threads(void)
{
    int n = count_dir("/proc/self/task");
    cr_assert_gt(n, 0, "cannot list /proc/self/task");
    return n;
}

int tc_test_wait_threads(int expected, int ms)
{
    /* Nothing signals the kernel's reaping of a joined thread, so this one
     * wait polls, with a deadline. */
    int64_t end = tc_test_now_ms() + ms;
    int n;
    while ((n = tc_test_count_threads()) > expected && tc_test_now_ms() < end) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return n;
}

/* The state and parent of process pid (from /proc/<pid>/stat): 0, or -1 if it is gone. */
static int proc_stat(long pid, char *state, long *ppid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1; /* gone meanwhile */
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    char *rp = strrchr(buf, ')'); /* the command name may hold anything */
    int pp;
    if (!rp || sscanf(rp + 1, " %c %d", state, &pp) != 2)
        return -1;
    *ppid = pp;
    return 0;
}

int tc_test_count_children(const pid_t *except, size_t n, int *zombies)
{
    DIR *d = opendir("/proc");
    cr_assert_not_null(d);
    pid_t me = getpid();
    int k = 0, z = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end, state;
        long pid = strtol(e->d_name, &end, 10), ppid;
        if (*end || pid <= 0)
            continue;
        int skip = 0;
        for (size_t i = 0; i < n; i++)
            skip |= except[i] > 0 && pid == except[i];
        if (skip || proc_stat(pid, &state, &ppid) < 0 || ppid != me)
            continue;
        k++;
        z += state == 'Z';
    }
    closedir(d);
    if (zombies)
        *zombies = z;
    return k;
}

int tc_test_threads_asleep(void)
{
    DIR *d = opendir("/proc/self/task");
    cr_assert_not_null(d);
    pid_t me = (pid_t)syscall(SYS_gettid);
    int n = 0, awake = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        n++;
        char path[320], buf[256];
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = '\0';
        char *rp = strrchr(buf, ')');
        if (atoi(e->d_name) != me && rp && rp[1] == ' ' && rp[2] != 'S')
            awake++;
    }
    closedir(d);
    return awake ? 0 : n;
}

void tc_test_child_dies_with(pid_t parent)
{
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) /* it ended before prctl: nobody would send it */
        _exit(127);
}

void tc_test_kill_children(void)
{
    DIR *d = opendir("/proc");
    if (!d)
        return;
    pid_t me = getpid();
    struct dirent *e;
    while ((e = readdir(d))) {
        char state;
        long pid = strtol(e->d_name, NULL, 10), ppid;
        if (pid <= 0 || proc_stat(pid, &state, &ppid) < 0 || ppid != me)
            continue;
        kill((pid_t)pid, SIGKILL);
        waitpid((pid_t)pid, NULL, 0);
    }
    closedir(d);
}

tc_test_counts tc_test_counts_now(const pid_t *except, size_t n)
{
    tc_test_counts c = {tc_test_count_fds(), tc_test_count_threads(),
                        tc_test_count_children(except, n, NULL)};
    return c;
}

void tc_test_expect_counts(tc_test_counts before, const pid_t *except, size_t n,
                           const char *what)
{
    /* Nothing signals the end of a thread's or a child's last trace in
     * /proc: this wait polls, with a deadline. */
    int64_t end = tc_test_now_ms() + TC_TEST_WAIT_MS;
    tc_test_counts now;
    for (;;) {
        now = tc_test_counts_now(except, n);
        if ((now.fds == before.fds && now.threads <= before.threads &&
             now.children == before.children) ||
            tc_test_now_ms() >= end)
            break;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    cr_expect_eq(now.fds, before.fds, "%s: %d descriptors, %d before", what, now.fds, before.fds);
    cr_expect_leq(now.threads, before.threads, "%s: %d threads, %d before", what, now.threads,
                  before.threads);
    cr_expect_eq(now.children, before.children, "%s: %d children, %d before", what, now.children,
                 before.children);
}

void tc_test_tmpdir(char *buf, size_t n)
{
    cr_assert_gt(n, sizeof "/tmp/tctest.XXXXXX");
    snprintf(buf, n, "/tmp/tctest.XXXXXX");
    cr_assert_not_null(mkdtemp(buf), "mkdtemp: %s", strerror(errno));
}

void tc_test_rmtree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        (void)unlink(path);
    }
    closedir(d);
    (void)rmdir(dir);
}

int tc_test_have_ipv6(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

void tc_test_nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ; /* a signal does not cut the nap short */
}

int tc_test_mode_enabled(tc_mode m)
{
    const char *only = getenv("TC_TEST_MODES");
    if (!only || !*only)
        return 1;
    const char *name = tc_mode_name(m);
    size_t n = strlen(name);
    for (const char *p = only; (p = strstr(p, name)); p += n)
        if ((p == only || p[-1] == ',') && (p[n] == '\0' || p[n] == ','))
            return 1;
    return 0;
}

void tc_test_rec(atomic_int *lock, atomic_int *n, atomic_int *arr, int cap, int v)
{
    while (atomic_exchange(lock, 1)) /* held for two stores: a spin is enough */
        sched_yield();
    int i = atomic_load(n);
    if (i < cap)
        atomic_store(&arr[i], v);
    atomic_store(n, i + 1);
    atomic_store(lock, 0);
}
