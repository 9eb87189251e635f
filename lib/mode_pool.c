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

struct state;

/* One worker's place: a thread that ends inside a handler is replaced in it. */
struct slot {
    struct state *st;
    pthread_t tid;
    tc__session *cur;     /* the session the worker runs, if any */
};

struct state {
    tc_server *srv;
    pthread_mutex_t mu;
    pthread_cond_t work;  /* a connection was queued, or quit was set */
    pthread_cond_t idle;  /* the queue is empty and no worker is busy */
    pthread_attr_t attr;  /* the workers' (stack size) */
    struct slot *slots;
    int nworkers;         /* started */
    tc__session **queue;  /* a ring of cap entries */
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
static int waited_out(tc_server *srv, tc__session *s)
{
    int ms = srv->handler.on_message ? srv->cfg.idle_timeout_ms : srv->cfg.conn_timeout_ms;
    if (ms <= 0 || tc__now_ns() - s->idle_since < (int64_t)ms * TC_NS_PER_MS)
        return 0;
    return !tc__sock_readable(s->conn->fd);
}

static void *worker_main(void *arg);

/* A session is over (its handler returned, or its thread is ending inside
 * it): release it; 1 if that freed the server (see pool_stop). */
static int session_over(struct slot *sl)
{
    tc__session *s = sl->cur;
    sl->cur = NULL; /* before: the last session's end may free the slots */
    tc__server_session_done(s);
    return tl_freed_server;
}

/* The worker's thread exits or is cancelled inside a handler (the session
 * has closed): end the session, and put a new thread in its place. */
static void worker_lost(void *arg)
{
    struct slot *sl = arg;
    struct state *st = sl->st;
    if (session_over(sl))
        return;
    pthread_mutex_lock(&st->mu);
    if (--st->busy == 0 && st->count == 0)
        pthread_cond_broadcast(&st->idle);
    /* Nobody will join this thread: the slot gets the new one's handle. */
    pthread_detach(pthread_self());
    int rc = st->quit ? 0 : pthread_create(&sl->tid, &st->attr, worker_main, sl);
    if (rc != 0) {
        sl->tid = pthread_self(); /* quit_workers skips a slot whose thread is gone */
        sl->st = NULL;
    }
    pthread_mutex_unlock(&st->mu);
    if (rc != 0)
        tc__log(st->srv, TC_LOG_ERROR, "pool: cannot replace a worker that ended: %s",
                tc_strerror(-rc));
}

/* Run the slot's session; should the thread end inside it, worker_lost
 * cleans up. (A function of its own: the cleanup macros use setjmp.) */
static void run_guarded(struct slot *sl)
{
    pthread_cleanup_push(worker_lost, sl);
    tc__session_run(sl->cur);
    pthread_cleanup_pop(0);
}

static void *worker_main(void *arg)
{
    struct slot *sl = arg;
    struct state *st = sl->st;
    tc_server *srv = st->srv;
    pthread_mutex_lock(&st->mu);
    for (;;) {
        while (st->count == 0 && !st->quit)
            pthread_cond_wait(&st->work, &st->mu);
        if (st->count == 0)
            break; /* quit, and nothing left to run */
        tc__session *s = st->queue[st->head];
        st->head = (st->head + 1) % st->cap;
        st->count--;
        st->busy++;
        sl->cur = s;
        pthread_mutex_unlock(&st->mu);

        if (waited_out(srv, s)) {
            /* Silent for its whole timeout while queued: close it without
             * running it, rather than give it a worker for another period. */
            tc__report(srv, s->conn, -ETIMEDOUT);
        } else {
            run_guarded(sl);
        }
        if (session_over(sl))
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
        /* Under the lock: a lost worker's replacement writes its slot. */
        pthread_mutex_lock(&st->mu);
        pthread_t tid = st->slots[i].tid;
        int gone = !st->slots[i].st;
        pthread_mutex_unlock(&st->mu);
        if (gone)
            continue;
        if (pthread_equal(tid, self)) {
            pthread_detach(self);
            tl_freed_server = 1;
        } else {
            pthread_join(tid, NULL);
        }
    }
}

static void free_state(struct state *st)
{
    pthread_cond_destroy(&st->work);
    pthread_cond_destroy(&st->idle);
    pthread_mutex_destroy(&st->mu);
    pthread_attr_destroy(&st->attr);
    free(st->queue);
    free(st->slots);
    free(st);
}

static int pool_start(tc_server *srv)
{
    int workers = srv->cfg.workers, queue_len = srv->cfg.queue_len;
    if (workers > INT_MAX - queue_len) {
        tc__log_detail(srv, "invalid configuration: workers + queue_len overflows");
        return TC_EBADCONFIG;
    }
    struct state *st = calloc(1, sizeof *st);
    if (!st)
        return -ENOMEM;
    st->srv = srv;
    /* The core keeps at most cap connections live, so the ring never overflows. */
    st->cap = workers + queue_len;
    st->queue = calloc((size_t)st->cap, sizeof *st->queue); /* NOLINT(bugprone-sizeof-expression) */
    st->slots = calloc((size_t)workers, sizeof *st->slots);
    int rc = st->queue && st->slots ? pthread_attr_init(&st->attr) : ENOMEM;
    if (rc == 0 && (rc = pthread_attr_setstacksize(&st->attr, srv->cfg.thread_stack_size)) != 0)
        pthread_attr_destroy(&st->attr);
    if (rc != 0) {
        free(st->queue);
        free(st->slots);
        free(st);
        return -rc;
    }
    pthread_mutex_init(&st->mu, NULL);
    tc__cond_init(&st->work);
    tc__cond_init(&st->idle);

    for (; st->nworkers < workers; st->nworkers++) {
        struct slot *sl = &st->slots[st->nworkers];
        sl->st = st;
        /* Under the lock: a worker lost at once may already replace itself. */
        pthread_mutex_lock(&st->mu);
        rc = pthread_create(&sl->tid, &st->attr, worker_main, sl);
        pthread_mutex_unlock(&st->mu);
        if (rc != 0) {
            sl->st = NULL;
            break;
        }
    }
    if (rc != 0) {
        tc__log_detail(srv, "pool: cannot start worker %d of %d: %s", st->nworkers + 1, workers,
                       tc_strerror(-rc));
        quit_workers(st);
        free_state(st);
        return -rc;
    }
    srv->mode_state = st;
    srv->mode_limit = st->cap;
    return 0;
}

static int pool_process_request(tc_server *srv, tc__session *s)
{
    struct state *st = st_of(srv);
    pthread_mutex_lock(&st->mu);
    int full = st->count == st->cap;
    if (!full) {
        st->queue[(st->head + st->count) % st->cap] = s;
        st->count++;
        pthread_cond_signal(&st->work);
    }
    pthread_mutex_unlock(&st->mu);
    return full ? -EAGAIN : 0; /* full cannot happen while the core enforces the limit */
}

static int pool_wait(tc_server *srv, int64_t deadline)
{
    struct state *st = st_of(srv);
    pthread_mutex_lock(&st->mu);
    while ((st->count > 0 || st->busy > 0) && tc__cond_wait(&st->idle, &st->mu, deadline) == 0)
        ;
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
