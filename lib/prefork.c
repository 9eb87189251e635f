/* SPDX-License-Identifier: MIT */
/* Prefork: a supervisor forks N workers (each serving on its own, typically
 * with SO_REUSEPORT), restarts the ones that crash within a rate limit and
 * stops them on request. Children are watched with pidfds and reaped by pid:
 * no SIGCHLD handler, no waitpid(-1), no signal handler of ours anywhere. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define DEFAULT_MAX_RESTARTS 5
#define DEFAULT_RESTART_WINDOW_MS 10000
#define DEFAULT_STOP_TIMEOUT_MS 10000
#define POLL_MS 100        /* without pidfds: how often children are polled */
#define RETRY_FORK_MS 200  /* a restart whose fork failed is tried again after this */

enum wstate { W_IDLE, W_RUNNING, W_PENDING, W_DONE };

struct worker {
    atomic_int pid;        /* > 0 while running */
    int pidfd;             /* -1 when none (or not running) */
    enum wstate state;
    int64_t retry_at;      /* W_PENDING: when to fork again */
    int64_t *stamps;       /* times of the last max_restarts restarts (a ring) */
    int nstamps, next;
};

struct tc_prefork {
    tc_prefork_config o;
    pid_t owner;           /* the supervisor's pid: tc_prefork_stop() is a no-op elsewhere */
    int wakefd;            /* eventfd written by tc_prefork_stop() */
    int use_pidfd;
    atomic_int stop_req;
    atomic_int running;
    struct worker *w;
    int64_t *stamps;       /* every worker's ring, one allocation */
};

static void plog(tc_prefork *pf, tc_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void plog(tc_prefork *pf, tc_log_level level, const char *fmt, ...)
{
    if (!pf->o.log)
        return;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof msg, fmt, ap); /* a longer message is cut */
    va_end(ap);
    pf->o.log(pf, level, msg, pf->o.ctx);
}

void tc_prefork_config_init(tc_prefork_config *cfg)
{
    if (cfg) /* the macro is the one source of the defaults */
        *cfg = (tc_prefork_config)TC_PREFORK_CONFIG_INIT;
}

/* A field create refuses, named in the thread's error detail (there is no
 * supervisor yet whose log hook could hear it). */
static int bad(const char *field, const char *why)
{
    tc__log_detail(NULL, "invalid configuration: %s %s", field, why);
    return TC_EBADCONFIG;
}

static int validate(const tc_prefork_config *o)
{
    if (!o->worker)
        return bad("worker", "is NULL");
    if (o->processes < 0)
        return bad("processes", "is negative");
    if (o->max_restarts < 0)
        return bad("max_restarts", "is negative");
    if (o->restart_window_ms < 0)
        return bad("restart_window_ms", "is negative");
    if (o->stop_timeout_ms < 0)
        return bad("stop_timeout_ms", "is negative");
    if (o->stop_signal < 0 || o->stop_signal >= NSIG)
        return bad("stop_signal", "is not a signal number");
    if (o->stop_signal == SIGSTOP)
        return bad("stop_signal", "is SIGSTOP, which never ends a process");
    return 0;
}

int tc_prefork_create(tc_prefork **out, const tc_prefork_config *opts)
{
    tc__detail_clear();
    if (!out || !opts)
        return -EINVAL;
    tc_prefork_config o = *opts;
    int rc = validate(&o);
    if (rc < 0)
        return rc;
    if (o.processes == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o.processes = n > 0 ? (int)n : 1;
    }
    if (o.max_restarts == 0)
        o.max_restarts = DEFAULT_MAX_RESTARTS;
    if (o.restart_window_ms == 0)
        o.restart_window_ms = DEFAULT_RESTART_WINDOW_MS;
    if (o.stop_signal == 0)
        o.stop_signal = SIGTERM;
    if (o.stop_timeout_ms == 0)
        o.stop_timeout_ms = DEFAULT_STOP_TIMEOUT_MS;
    tc_prefork *pf = calloc(1, sizeof *pf);
    if (!pf)
        return -ENOMEM;
    pf->o = o;
    pf->owner = getpid();
    pf->w = calloc((size_t)o.processes, sizeof *pf->w);
    pf->stamps = calloc((size_t)o.processes * (size_t)o.max_restarts, sizeof *pf->stamps);
    pf->wakefd = -1;
    rc = !pf->w || !pf->stamps ? -ENOMEM : tc__wake_open(&pf->wakefd);
    if (rc < 0) {
        tc__close(pf->wakefd);
        free(pf->w);
        free(pf->stamps);
        free(pf);
        return rc;
    }
    for (int i = 0; i < o.processes; i++) {
        atomic_init(&pf->w[i].pid, 0);
        pf->w[i].pidfd = -1;
        pf->w[i].stamps = pf->stamps + (size_t)i * (size_t)o.max_restarts;
    }
    pf->use_pidfd = tc__child_probe() == 0;
    atomic_init(&pf->stop_req, 0);
    atomic_init(&pf->running, 0);
    *out = pf;
    return 0;
}

/* In the new child: leave the supervisor's descriptors, give the stop signal
 * its default action, run the worker, _exit. Never returns. */
__attribute__((noreturn)) static void child_main(tc_prefork *pf, int index, const sigset_t *mask)
{
    tc__close(pf->wakefd);
    pf->wakefd = -1;
    for (int i = 0; i < pf->o.processes; i++) {
        tc__close(pf->w[i].pidfd);
        pf->w[i].pidfd = -1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    (void)sigaction(pf->o.stop_signal, &sa, NULL);
    sigset_t m = *mask;
    sigdelset(&m, pf->o.stop_signal);
    pthread_sigmask(SIG_SETMASK, &m, NULL);
    int rc = pf->o.worker(index, pf->o.ctx);
    _exit(rc == 0 ? 0 : 1);
}

/* Fork worker index: 0, or a negated errno (it is then W_PENDING). */
static int spawn(tc_prefork *pf, int index)
{
    struct worker *w = &pf->w[index];
    /* Every signal blocked across fork: the child must not run the parent's
     * handlers (one calling tc_prefork_stop() would swallow a stop signal)
     * before the stop signal is back to its default. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = fork();
    if (pid == 0)
        child_main(pf, index, &old);
    int err = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        w->state = W_PENDING;
        w->retry_at = tc__now_ns() + (int64_t)RETRY_FORK_MS * 1000000;
        plog(pf, TC_LOG_ERROR, "worker %d: fork: %s", index, tc_strerror(-err));
        return -err;
    }
    atomic_store(&w->pid, (int)pid);
    w->state = W_RUNNING;
    w->pidfd = -1;
    if (pf->use_pidfd) {
        int fd = tc__child_watch(pid);
        w->pidfd = fd >= 0 ? fd : -1; /* none: polled every POLL_MS */
    }
    plog(pf, TC_LOG_INFO, "worker %d started: pid %d", index, (int)pid);
    return 0;
}

/* Reap worker w if it has ended (without waiting unless block): how it ended
 * (TC__CHILD_ENDED with *status, or TC__CHILD_GONE), or TC__CHILD_RUNNING. */
static int reap(struct worker *w, int block, int *status)
{
    int how = tc__child_reap((pid_t)atomic_load(&w->pid), block, status);
    if (how == TC__CHILD_RUNNING)
        return how;
    tc__close(w->pidfd);
    w->pidfd = -1;
    atomic_store(&w->pid, 0);
    return how;
}

/* A worker crashed: 1 if it may be restarted now (the restart is recorded),
 * 0 if it went over the limit. */
static int may_restart(tc_prefork *pf, struct worker *w)
{
    int64_t now = tc__now_ns(), window = (int64_t)pf->o.restart_window_ms * 1000000;
    int recent = 0;
    for (int i = 0; i < w->nstamps; i++)
        recent += now - w->stamps[i] < window;
    if (recent >= pf->o.max_restarts)
        return 0;
    w->stamps[w->next] = now;
    w->next = (w->next + 1) % pf->o.max_restarts;
    if (w->nstamps < pf->o.max_restarts)
        w->nstamps++;
    return 1;
}

/* Look at every running worker; restart crashed ones. 0, or TC_ECHILD at the limit. */
static int check_workers(tc_prefork *pf)
{
    for (int i = 0; i < pf->o.processes; i++) {
        struct worker *w = &pf->w[i];
        int status = 0;
        if (w->state == W_PENDING && tc__now_ns() >= w->retry_at) {
            (void)spawn(pf, i);
            continue;
        }
        if (w->state != W_RUNNING)
            continue;
        int pid = atomic_load(&w->pid);
        int ended = reap(w, 0, &status);
        if (ended == TC__CHILD_RUNNING)
            continue;
        char how[TC__CHILD_HOW_LEN];
        (void)tc__child_describe(ended, status, how, sizeof how);
        if (tc__child_succeeded(ended, status)) {
            w->state = W_DONE;
            plog(pf, TC_LOG_INFO, "worker %d (pid %d) %s: done", i, pid, how);
            continue;
        }
        if (!may_restart(pf, w)) {
            w->state = W_DONE;
            plog(pf, TC_LOG_ERROR,
                 "worker %d (pid %d) %s: more than %d restarts within %d ms; giving up", i, pid,
                 how, pf->o.max_restarts, pf->o.restart_window_ms);
            return TC_ECHILD;
        }
        plog(pf, TC_LOG_WARN, "worker %d (pid %d) %s; restarting it", i, pid, how);
        (void)spawn(pf, i);
    }
    return 0;
}

/* Wait for a child to end, a stop request, or until deadline (ns; 0 = none). */
static void wait_events(tc_prefork *pf, int64_t deadline)
{
    struct pollfd *p = calloc((size_t)pf->o.processes + 1, sizeof *p);
    int n = 0, polled = 0;
    if (p) {
        p[n++] = (struct pollfd){.fd = pf->wakefd, .events = POLLIN};
        for (int i = 0; i < pf->o.processes; i++) {
            if (pf->w[i].state != W_RUNNING)
                continue;
            if (pf->w[i].pidfd >= 0)
                p[n++] = (struct pollfd){.fd = pf->w[i].pidfd, .events = POLLIN};
            else
                polled = 1;
        }
    }
    for (int i = 0; i < pf->o.processes; i++)
        if (pf->w[i].state == W_PENDING && (!deadline || pf->w[i].retry_at < deadline))
            deadline = pf->w[i].retry_at;
    int timeout = polled || !p ? POLL_MS : -1;
    if (deadline) {
        int left = tc__ms_until(deadline);
        if (timeout < 0 || left < timeout)
            timeout = left;
    }
    if (p)
        (void)poll(p, (nfds_t)n, timeout); /* EINTR: look again at once */
    else
        (void)poll(NULL, 0, timeout);
    free(p);
    tc__wake_drain(pf->wakefd);
}

static int live_count(const tc_prefork *pf)
{
    int n = 0;
    for (int i = 0; i < pf->o.processes; i++)
        n += pf->w[i].state == W_RUNNING || pf->w[i].state == W_PENDING;
    return n;
}

/* Stop every worker: the stop signal, a bounded wait, then SIGKILL. */
static void stop_all(tc_prefork *pf)
{
    for (int i = 0; i < pf->o.processes; i++) {
        struct worker *w = &pf->w[i];
        if (w->state == W_PENDING)
            w->state = W_DONE;
        if (w->state == W_RUNNING)
            (void)kill((pid_t)atomic_load(&w->pid), pf->o.stop_signal);
    }
    int64_t deadline = tc__now_ns() + (int64_t)pf->o.stop_timeout_ms * 1000000;
    for (;;) {
        int left = 0;
        for (int i = 0; i < pf->o.processes; i++) {
            struct worker *w = &pf->w[i];
            int status = 0, pid = atomic_load(&w->pid);
            if (w->state != W_RUNNING)
                continue;
            int ended = reap(w, 0, &status);
            if (ended != TC__CHILD_RUNNING) {
                char how[TC__CHILD_HOW_LEN];
                (void)tc__child_describe(ended, status, how, sizeof how);
                w->state = W_DONE;
                plog(pf, TC_LOG_INFO, "worker %d (pid %d) %s: stopped", i, pid, how);
            } else {
                left++;
            }
        }
        if (left == 0)
            return;
        if (tc__now_ns() >= deadline)
            break;
        wait_events(pf, deadline);
    }
    for (int i = 0; i < pf->o.processes; i++) {
        struct worker *w = &pf->w[i];
        int status = 0, pid = atomic_load(&w->pid);
        if (w->state != W_RUNNING)
            continue;
        plog(pf, TC_LOG_WARN, "worker %d (pid %d) still running after %d ms: SIGKILL", i, pid,
             pf->o.stop_timeout_ms);
        (void)kill((pid_t)pid, SIGKILL);
        (void)reap(w, 1, &status);
        w->state = W_DONE;
    }
}

int tc_prefork_run(tc_prefork *pf)
{
    if (!pf)
        return -EINVAL;
    if (getpid() != pf->owner)
        return -EPERM;
    if (atomic_exchange(&pf->running, 1))
        return -EBUSY;
    int rc = 0;
    for (int i = 0; i < pf->o.processes; i++) {
        struct worker *w = &pf->w[i];
        w->state = W_IDLE;
        w->nstamps = w->next = 0;
    }
    for (int i = 0; i < pf->o.processes && !atomic_load(&pf->stop_req); i++)
        if ((rc = spawn(pf, i)) < 0) {
            pf->w[i].state = W_DONE;
            break;
        }
    while (rc == 0 && !atomic_load(&pf->stop_req) && live_count(pf) > 0) {
        wait_events(pf, 0);
        rc = check_workers(pf);
    }
    stop_all(pf);
    /* Consume the request, so that the supervisor can run again. */
    tc__wake_drain(pf->wakefd);
    atomic_store(&pf->stop_req, 0);
    atomic_store(&pf->running, 0);
    return rc;
}

int tc_prefork_stop(tc_prefork *pf)
{
    if (!pf)
        return -EINVAL;
    /* Async-signal-safe: getpid, an atomic store, a write; errno preserved. */
    if (getpid() != pf->owner)
        return -EPERM; /* a worker's copy: the stop is the supervisor's to decide */
    atomic_store(&pf->stop_req, 1);
    tc__wake(pf->wakefd);
    return 0;
}

int tc_prefork_worker_pid(const tc_prefork *pf, int index)
{
    if (!pf || index < 0 || index >= pf->o.processes)
        return -EINVAL;
    return atomic_load(&pf->w[index].pid);
}

int tc_prefork_processes(const tc_prefork *pf)
{
    return pf ? pf->o.processes : -EINVAL;
}

void tc_prefork_destroy(tc_prefork *pf)
{
    if (!pf)
        return;
    for (int i = 0; i < pf->o.processes; i++)
        tc__close(pf->w[i].pidfd);
    tc__close(pf->wakefd);
    free(pf->stamps);
    free(pf->w);
    free(pf);
}
