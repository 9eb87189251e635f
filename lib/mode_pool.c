/* SPDX-License-Identifier: MIT */
/* Pool mode: a fixed set of worker threads and an event loop that holds
 * the connections. A message-style connection costs no thread while it is
 * idle: it waits in the loops' ready set, which the idle workers wait on
 * themselves (tc__loops_wait); the worker that takes it serves its input
 * (one worker at a time per connection, so its order holds). A
 * stream-style connection gets a worker for the rest of its life once its
 * first bytes arrive, through the queue, so clients that connect and say
 * nothing cost no worker. The queue of work the loop hands over is bounded:
 * when it is full the loop stops reading those connections, and the
 * kernel's buffers hold the rest (backpressure); so does the ready set,
 * whose connections wait for a worker in the kernel. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>

#include "internal.h"

struct state;

/* One worker's place: a thread that ends inside a handler is replaced in it. */
struct slot {
    struct state *st;
    pthread_t tid;
    tc__job *cur;         /* the job the worker runs, if any */
    int counted;          /* cur came from the queue (counted in busy) */
    unsigned char *scratch; /* lent to each job it runs (TC__JOB_SCRATCH bytes) */
};

struct state {
    tc_server *srv;
    pthread_mutex_t mu;
    int wakefd;           /* eventfd: a job was queued, or quit was set (one
                           * worker wakes per write, in tc__loops_wait) */
    pthread_cond_t idle;  /* the queue is empty and no worker is busy */
    pthread_attr_t attr;  /* the workers' (stack size) */
    struct slot *slots;
    int nslots;           /* allocated */
    int nworkers;         /* started */
    tc__job *head, **tail; /* the queue ... */
    int count, cap;       /* ... of at most cap jobs */
    int busy;             /* workers running a job */
    int refused;          /* a job was refused since the queue last had room */
    int quit;
};

/* Set in the worker whose job's end freed the server (see pool_stop). */
static _Thread_local int tl_freed_server;

static void *worker_main(void *arg);

/* The loop's way in: 0, or -EAGAIN when the queue is full. */
static int submit(void *pool, tc__job *job)
{
    struct state *st = pool;
    pthread_mutex_lock(&st->mu);
    int full = st->count >= st->cap;
    if (!full) {
        job->next = NULL;
        *st->tail = job;
        st->tail = &job->next;
        st->count++;
    } else {
        st->refused = 1;
    }
    pthread_mutex_unlock(&st->mu);
    if (!full)
        tc__wake(st->wakefd);
    return full ? -EAGAIN : 0;
}

/* The worker's thread exits or is cancelled inside a handler: the job is
 * lost (its connection is handed back or ended), and a new thread takes
 * the worker's place. */
static void worker_lost(void *arg)
{
    struct slot *sl = arg;
    struct state *st = sl->st;
    tc__job *job = sl->cur;
    sl->cur = NULL;
    job->lost(job);
    if (tl_freed_server)
        return;
    pthread_mutex_lock(&st->mu);
    if (sl->counted && --st->busy == 0 && st->count == 0)
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

/* Run the slot's job; should the thread end inside it, worker_lost cleans
 * up. (A function of its own: the cleanup macros use setjmp.) */
static void run_guarded(struct slot *sl)
{
    pthread_cleanup_push(worker_lost, sl);
    sl->cur->run(sl->cur);
    pthread_cleanup_pop(0);
}

/* Run a connection the ready set gave this worker: not counted in busy
 * (pool_wait is for what ends sessions in workers; this hands the
 * connection back to the loop, or parks it). */
static void run_ready(struct slot *sl, tc__job *job)
{
    sl->cur = job;
    sl->counted = 0;
    job->scratch = sl->scratch;
    job->scratch_len = TC__JOB_SCRATCH;
    run_guarded(sl);
    sl->cur = NULL;
}

static void *worker_main(void *arg)
{
    struct slot *sl = arg;
    struct state *st = sl->st;
    pthread_mutex_lock(&st->mu);
    for (;;) {
        if (st->count == 0) {
            if (st->quit)
                break; /* and nothing left to run */
            pthread_mutex_unlock(&st->mu);
            int woken = 0;
            tc__job *job = tc__loops_wait(st->srv, &woken);
            if (job)
                run_ready(sl, job);
            else if (woken)
                tc__wake_drain(st->wakefd); /* every write woke one worker already */
            pthread_mutex_lock(&st->mu);
            continue;
        }
        tc__job *job = st->head;
        st->head = job->next;
        if (!st->head)
            st->tail = &st->head;
        st->count--;
        st->busy++;
        sl->cur = job;
        sl->counted = 1;
        job->scratch = sl->scratch;
        job->scratch_len = TC__JOB_SCRATCH;
        int room = st->refused;
        st->refused = 0;
        int more = st->count > 0;
        pthread_mutex_unlock(&st->mu);
        if (more) /* pass it on: another worker takes the next job */
            tc__wake(st->wakefd);
        if (room) /* the job's session holds the server: the loops are there */
            tc__loops_room(st->srv);
        run_guarded(sl); /* the job may end a session, and that may free the server */
        sl->cur = NULL;
        if (tl_freed_server)
            return NULL; /* srv and st are gone; this thread is detached */
        pthread_mutex_lock(&st->mu);
        if (--st->busy == 0 && st->count == 0)
            pthread_cond_broadcast(&st->idle);
    }
    pthread_mutex_unlock(&st->mu);
    tc__wake(st->wakefd); /* quit: wake the next worker, which does the same */
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
    tc__wake(st->wakefd); /* each worker that quits wakes the next */
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
    tc__close(st->wakefd);
    pthread_cond_destroy(&st->idle);
    pthread_mutex_destroy(&st->mu);
    pthread_attr_destroy(&st->attr);
    for (int i = 0; i < st->nslots; i++)
        free(st->slots[i].scratch);
    free(st->slots);
    free(st);
}

static struct state *pool_of(tc_server *srv)
{
    return srv->mode_state ? tc__loops_dispatch(srv)->pool : NULL;
}

static int pool_start(tc_server *srv)
{
    int workers = srv->cfg.workers, queue_len = srv->cfg.queue_len;
    if (workers > INT_MAX - queue_len) { /* messages in hand and waiting, at most */
        tc__log_detail(srv, "invalid configuration: workers + queue_len overflows");
        return TC_EBADCONFIG;
    }
    struct state *st = calloc(1, sizeof *st);
    if (!st)
        return -ENOMEM;
    st->srv = srv;
    st->tail = &st->head;
    st->cap = queue_len; /* messages waiting for a worker, at most */
    st->slots = calloc((size_t)workers, sizeof *st->slots);
    int rc = st->slots ? 0 : ENOMEM;
    for (; rc == 0 && st->nslots < workers; st->nslots++)
        if (!(st->slots[st->nslots].scratch = malloc(TC__JOB_SCRATCH)))
            rc = ENOMEM;
    if (rc == 0 && (rc = pthread_attr_init(&st->attr)) == 0 &&
        (rc = pthread_attr_setstacksize(&st->attr, srv->cfg.thread_stack_size)) != 0)
        pthread_attr_destroy(&st->attr);
    st->wakefd = -1;
    if (rc == 0 && (rc = -tc__wake_open(&st->wakefd)) != 0)
        pthread_attr_destroy(&st->attr);
    if (rc != 0) {
        for (int i = 0; st->slots && i < st->nslots; i++)
            free(st->slots[i].scratch);
        free(st->slots);
        free(st);
        return -rc;
    }
    pthread_mutex_init(&st->mu, NULL);
    tc__cond_init(&st->idle);
    /* The loop first: the workers wait on its ready set from the start. */
    tc__dispatch d = {.submit = submit, .pool = st, .wakefd = st->wakefd};
    if ((rc = tc__loops_start(srv, 1, &d)) < 0) {
        free_state(st);
        return rc;
    }
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
        tc__loops_stop(srv);
        free_state(st);
        return -rc;
    }
    return 0;
}

static int pool_process_request(tc_server *srv, tc__session *s)
{
    (void)srv, (void)s;
    return -ENOTSUP; /* never called: the loop accepts */
}

/* Wait until no worker runs a job (stream-style sessions end in theirs). */
static int pool_wait(tc_server *srv, int64_t deadline)
{
    struct state *st = pool_of(srv);
    if (!st)
        return 0;
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
    struct state *st = pool_of(srv);
    if (!st)
        return;
    quit_workers(st);
    tc__loops_stop(srv);
    free_state(st);
}

/* No .abandon: with block_on_close off, destroy shuts down the live sockets
 * and drops its reference; the workers run the remaining stream sessions to
 * their end, and the last one to end frees the server, joining the other
 * workers (see quit_workers). */
const tc__mode tc__mode_pool = {
    .id = TC_MODE_POOL,
    .start = pool_start,
    .process_request = pool_process_request,
    .serve = tc__loops_serve,
    .wait = pool_wait,
    .stop = pool_stop,
};
