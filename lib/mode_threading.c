/* SPDX-License-Identifier: MIT */
/* Threading mode (ThreadingMixIn): a thread per connection. Finished threads
 * are joined as the loop turns, so no list of dead threads grows; destroy
 * waits for the rest (block_on_close) or detaches them (daemon threads). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"

struct worker {
    pthread_t tid;
    tc_server *srv;
    tc__session *s;
    struct worker *prev, *next; /* in running, then (next only) in done */
};

struct state {
    pthread_mutex_t mu;
    pthread_cond_t idle;  /* signalled when live drops to 0 */
    pthread_attr_t attr;
    unsigned live;        /* threads not yet finished */
    struct worker *running;
    struct worker *done;  /* finished, waiting to be joined */
    int detached;         /* destroy without block_on_close: nobody joins */
};

static struct state *st_of(tc_server *srv)
{
    return srv->mode_state;
}

/* The end of a connection's thread, however it ends: its handler returned,
 * or the thread exited or was cancelled inside it (the session has closed). */
static void worker_end(void *arg)
{
    struct worker *w = arg;
    tc_server *srv = w->srv;
    struct state *st = st_of(srv);

    tc__server_session_done(w->s);

    pthread_mutex_lock(&st->mu);
    if (--st->live == 0)
        pthread_cond_broadcast(&st->idle);
    TC__LIST_UNLINK(st->running, w);
    if (st->detached) {
        free(w);
    } else {
        w->next = st->done;
        st->done = w;
    }
    pthread_mutex_unlock(&st->mu);
    tc__server_release(srv); /* the reference process_request took for this thread */
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    pthread_cleanup_push(worker_end, w);
    tc__session_run(w->s);
    pthread_cleanup_pop(1);
    return NULL;
}

/* Join the threads that have finished; they are gone or about to be. */
static void reap(struct state *st)
{
    pthread_mutex_lock(&st->mu);
    struct worker *w = st->done;
    st->done = NULL;
    pthread_mutex_unlock(&st->mu);
    while (w) {
        struct worker *next = w->next;
        pthread_join(w->tid, NULL);
        free(w);
        w = next;
    }
}

static int threading_start(tc_server *srv)
{
    struct state *st = calloc(1, sizeof *st);
    if (!st)
        return -ENOMEM;
    tc__cond_init(&st->idle);
    pthread_mutex_init(&st->mu, NULL);
    pthread_attr_init(&st->attr);
    int rc = pthread_attr_setstacksize(&st->attr, srv->cfg.thread_stack_size);
    if (rc != 0) {
        pthread_attr_destroy(&st->attr);
        pthread_cond_destroy(&st->idle);
        pthread_mutex_destroy(&st->mu);
        free(st);
        return -rc;
    }
    srv->mode_state = st;
    return 0;
}

static int threading_process_request(tc_server *srv, tc__session *s)
{
    struct state *st = st_of(srv);
    reap(st);
    struct worker *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->srv = srv;
    w->s = s;
    tc__server_ref(srv);
    pthread_mutex_lock(&st->mu);
    st->live++;
    int rc = pthread_create(&w->tid, &st->attr, worker_main, w);
    if (rc != 0) {
        st->live--;
    } else {
        TC__LIST_PUSH(st->running, w);
    }
    pthread_mutex_unlock(&st->mu);
    if (rc != 0) {
        free(w);
        tc__server_release(srv);
        return -rc; /* the core reports it and closes the connection */
    }
    return 0;
}

static void threading_service(tc_server *srv)
{
    reap(st_of(srv));
}

static int threading_wait(tc_server *srv, int64_t deadline)
{
    struct state *st = st_of(srv);
    pthread_mutex_lock(&st->mu);
    while (st->live > 0 && tc__cond_wait(&st->idle, &st->mu, deadline) == 0)
        ;
    int busy = st->live > 0;
    pthread_mutex_unlock(&st->mu);
    reap(st);
    return busy ? -ETIMEDOUT : 0;
}

static void threading_abandon(tc_server *srv)
{
    struct state *st = st_of(srv);
    reap(st);
    /* Threads still running will not be joined: detach them, and they free
     * their own records. Under the lock, so none finishes half-way through. */
    pthread_mutex_lock(&st->mu);
    st->detached = 1;
    for (struct worker *w = st->running; w; w = w->next)
        pthread_detach(w->tid);
    pthread_mutex_unlock(&st->mu);
}

static void threading_stop(tc_server *srv)
{
    struct state *st = st_of(srv);
    if (!st)
        return;
    reap(st);
    pthread_attr_destroy(&st->attr);
    pthread_cond_destroy(&st->idle);
    pthread_mutex_destroy(&st->mu);
    free(st);
    srv->mode_state = NULL;
}

const tc__mode tc__mode_threading = {
    .id = TC_MODE_THREADING,
    .blocking = 1,
    .drain_reaches_idle = 1,
    .start = threading_start,
    .process_request = threading_process_request,
    .service = threading_service,
    .wait = threading_wait,
    .abandon = threading_abandon,
    .stop = threading_stop,
};
