/* SPDX-License-Identifier: MIT */
/* Pool mode: a fixed set of worker threads taking accepted connections from
 * a bounded queue. The core stops accepting once workers + queue_len
 * connections are live, so a burst waits in the kernel's listen backlog. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"

struct state {
    tc_server *srv;
    pthread_mutex_t mu;
    pthread_cond_t work;  /* a connection was queued, or quit was set */
    pthread_cond_t idle;  /* the queue is empty and no worker is busy */
    pthread_t *tids;
    int nworkers;         /* started */
    tc_conn **queue;      /* a ring of cap entries */
    int cap, head, count;
    int busy;             /* workers running a connection */
    int quit;
};

/* Set in the worker whose connection's end freed the server (see pool_stop). */
static _Thread_local int tl_freed_server;

static struct state *st_of(tc_server *srv)
{
    return srv->mode_state;
}

/* Whether a dequeued connection already spent its idle timeout (message
 * style; stream style: the per-operation timeout) in the queue, counted from
 * the accept, and sent nothing: no byte, no end of stream. */
static int waited_out(tc_server *srv, tc_conn *conn)
{
    int ms = srv->handler.on_message ? srv->cfg.idle_timeout_ms : srv->cfg.conn_timeout_ms;
    if (ms <= 0 || tc__now_ns() - conn->idle_since < (int64_t)ms * TC_NS_PER_MS)
        return 0;
    return !tc__sock_readable(conn->fd);
}

static void *worker_main(void *arg)
{
    struct state *st = arg;
    tc_server *srv = st->srv;
    pthread_mutex_lock(&st->mu);
    for (;;) {
        while (st->count == 0 && !st->quit)
            pthread_cond_wait(&st->work, &st->mu);
        if (st->count == 0)
            break; /* quit, and nothing left to run */
        tc_conn *conn = st->queue[st->head];
        st->head = (st->head + 1) % st->cap;
        st->count--;
        st->busy++;
        pthread_mutex_unlock(&st->mu);

        if (waited_out(srv, conn)) {
            /* Silent for its whole timeout while queued: close it without
             * running it, rather than give it a worker for another period. */
            tc__server_error(srv, conn, -ETIMEDOUT);
            tc__server_conn_done(srv, conn);
        } else {
            tc__server_run_conn(srv, conn);
        }
        if (tl_freed_server)
            return NULL; /* srv and st are gone; this thread is detached */

        pthread_mutex_lock(&st->mu);
        if (--st->busy == 0 && st->count == 0)
            pthread_cond_broadcast(&st->idle);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

/* Ask the workers to quit and join them. A worker cannot join itself: when
 * the last connection ends in a worker after a destroy with block_on_close
 * off, that worker frees the server and runs this; it detaches itself and
 * exits as soon as this returns, touching nothing of the server. */
static void quit_workers(struct state *st)
{
    pthread_mutex_lock(&st->mu);
    st->quit = 1;
    pthread_cond_broadcast(&st->work);
    pthread_mutex_unlock(&st->mu);
    pthread_t self = pthread_self();
    for (int i = 0; i < st->nworkers; i++) {
        if (pthread_equal(st->tids[i], self)) {
            pthread_detach(self);
            tl_freed_server = 1;
        } else {
            pthread_join(st->tids[i], NULL);
        }
    }
}

static void free_state(struct state *st)
{
    pthread_cond_destroy(&st->work);
    pthread_cond_destroy(&st->idle);
    pthread_mutex_destroy(&st->mu);
    free(st->queue);
    free(st->tids);
    free(st);
}

static int pool_start(tc_server *srv)
{
    int workers = srv->cfg.workers, queue_len = srv->cfg.queue_len;
    if (workers > INT_MAX - queue_len) {
        tc__server_log(srv, TC_LOG_ERROR, "invalid configuration: workers + queue_len overflows");
        return TC_EBADCONFIG;
    }
    struct state *st = calloc(1, sizeof *st);
    if (!st)
        return -ENOMEM;
    st->srv = srv;
    /* The core keeps at most cap connections live, so the ring never overflows. */
    st->cap = workers + queue_len;
    st->queue = calloc((size_t)st->cap, sizeof *st->queue); /* NOLINT(bugprone-sizeof-expression) */
    st->tids = calloc((size_t)workers, sizeof *st->tids);
    if (!st->queue || !st->tids) {
        free(st->queue);
        free(st->tids);
        free(st);
        return -ENOMEM;
    }
    pthread_mutex_init(&st->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&st->work, &ca);
    pthread_cond_init(&st->idle, &ca);
    pthread_condattr_destroy(&ca);

    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc == 0 && (rc = pthread_attr_setstacksize(&attr, srv->cfg.thread_stack_size)) == 0) {
        for (; st->nworkers < workers; st->nworkers++) {
            rc = pthread_create(&st->tids[st->nworkers], &attr, worker_main, st);
            if (rc != 0)
                break;
        }
    }
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        tc__server_log(srv, TC_LOG_ERROR, "pool: cannot start worker %d of %d: %s",
                       st->nworkers + 1, workers, tc_strerror(-rc));
        quit_workers(st);
        free_state(st);
        return -rc;
    }
    srv->mode_state = st;
    srv->mode_limit = st->cap;
    return 0;
}

static int pool_process_request(tc_server *srv, tc_conn *conn)
{
    struct state *st = st_of(srv);
    pthread_mutex_lock(&st->mu);
    int full = st->count == st->cap;
    if (!full) {
        st->queue[(st->head + st->count) % st->cap] = conn;
        st->count++;
        pthread_cond_signal(&st->work);
    }
    pthread_mutex_unlock(&st->mu);
    return full ? -EAGAIN : 0; /* full cannot happen while the core enforces the limit */
}

static int pool_wait(tc_server *srv, int64_t deadline)
{
    struct state *st = st_of(srv);
    struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000),
                          .tv_nsec = (long)(deadline % 1000000000)};
    int rc = 0;
    pthread_mutex_lock(&st->mu);
    while ((st->count > 0 || st->busy > 0) && rc != ETIMEDOUT) {
        if (deadline == TC__NO_DEADLINE)
            pthread_cond_wait(&st->idle, &st->mu);
        else
            rc = pthread_cond_timedwait(&st->idle, &st->mu, &ts);
    }
    int busy = st->count > 0 || st->busy > 0;
    pthread_mutex_unlock(&st->mu);
    return busy ? -ETIMEDOUT : 0;
}

/* Called once no connection is live: the workers are idle (or about to be). */
static void pool_stop(tc_server *srv)
{
    struct state *st = st_of(srv);
    if (!st)
        return;
    quit_workers(st);
    free_state(st);
    srv->mode_state = NULL;
}

/* No .abandon: with block_on_close off, destroy shuts down the live sockets
 * and drops its reference; the workers run the remaining connections (and
 * any still queued) to their end, and the last one to end frees the server,
 * joining the other workers (see quit_workers). */
const tc__mode tc__mode_pool = {
    .id = TC_MODE_POOL,
    .blocking = 1,
    .drain_reaches_idle = 1,
    .start = pool_start,
    .process_request = pool_process_request,
    .service = NULL,
    .wait = pool_wait,
    .abandon = NULL,
    .stop = pool_stop,
};
