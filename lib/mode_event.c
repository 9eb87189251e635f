/* SPDX-License-Identifier: MIT */
/* Event loops, and event mode on them: `workers` epoll loops run
 * message-style handlers, each connection owned by one loop. Loop 0 runs in
 * the thread that called serve_forever, accepts, and deals connections
 * round-robin (to itself directly, to the others through their mailboxes).
 * Replies are sent at once when the socket takes them and queued otherwise;
 * above a high-water mark of queued output a connection is not read until
 * it drains.
 *
 * Pool mode runs one loop with a dispatch table (tc__dispatch). An idle
 * message-style connection is parked in a second poller, the ready set,
 * one-shot, and the workers wait on that set themselves: the one that takes
 * a connection's event receives, runs on_message on each complete message,
 * sends straight to the socket, and in the common case (all sent, nothing
 * asked of the loop) parks it again, so that a message costs one wake-up, as
 * in a thread per connection. Who may touch a parked connection is settled
 * by its slot (stable memory, with a generation, so that a late event for a
 * closed connection finds nothing); the loop claims a connection through it
 * for a timer, a send from another thread or the drain, and takes it back
 * whenever there is more to do (queued output, a close). A stream-style
 * connection is handed to a worker for good once its first bytes arrive. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

/* per loop: receives land here, not in per-connection buffers */
#define SCRATCH_SIZE ((size_t)64 * 1024)
#define ACCEPT_BATCH 64          /* fairness: accepts per wake-up */
#define ACCEPT_RING 8            /* a listener's accept requests in flight (io_uring) */
#define LEND_MIN ((size_t)2048)  /* smaller sends are copied (see lend_send) */
/* A connection's input: its bytes, where the backend receives for the loop */
#define CONN_IN (TC__POLL_IN | TC__POLL_RECV)

enum { TIMER_IDLE, TIMER_USER, TIMER_LOOP };

/* A connection's timer (its record found from which one it is: etimer_ec),
 * or a loop's own; t.tag holds the kind (TIMER_*). */
struct etimer {
    tc__timer t; /* first: the heap hands back a tc__timer pointer */
};

/* A loop's own timer (tcpchan/loop.h), on the loop's list until stopped. */
struct tc_loop_timer {
    struct etimer e; /* first: kind TIMER_LOOP */
    struct tc_loop *loop;
    tc_loop_fn fn;
    void *arg;
    int interval_ms;
    struct tc_loop_timer *prev, *next;
};

/* A descriptor of the application's own (tcpchan/loop.h), on the loop's
 * list until stopped, then on its dead list until the end of the turn. */
struct tc_watch {
    struct tc_loop *loop;
    int fd;
    unsigned events;     /* TC_WATCH_* wanted now; 0: out of the poller */
    int registered;      /* fd is in the loop's poller */
    int stopped;
    tc_watch_fn cb;
    void *ctx;
    struct tc_watch *prev, *next, *dead_next;
};

struct mail {
    struct mail *next;
    tc_loop_fn fn;         /* work posted to the loop (tc_loop_post), or */
    void *arg;
    struct evconn *ec;     /* a send from another thread, or */
    tc__session *newsess;  /* a connection dealt to this loop, or */
    uint64_t id;           /* a payload for, or a close of, a connection by id */
    int close;
    size_t len;
    unsigned char data[];
};

struct tc_loop;

/* A connection's record in its loop: the driver's side of the channel,
 * kept in the session's room (tc__mode.session_room). Idle connections are
 * what a loop holds most of, so the record is small: flags are bytes, and
 * what only pool mode uses comes last, outside event mode's room (see
 * EVCONN_EVENT_SIZE): event mode never touches those fields. */
struct evconn {
    tc__session *s;
    tc_conn *conn;
    struct tc_loop *loop;
    struct evconn *prev, *next; /* the loop's connections */
    struct evconn *dead_next;   /* freed at the end of the turn */
    struct etimer idle, user;
    /* the idle clock runs from here: the last input, or output drained
     * (a worker that parks the connection sets it, before it lets go) */
    int64_t idle_from;
    int64_t frame_from;  /* an incomplete frame has been buffered since (0: none) */
    /* Bytes other threads sent that the loop has not taken yet, and the
     * output queue as the loop last saw it: a foreign send is refused
     * (-EAGAIN) while they add up to the high-water mark or more. */
    atomic_size_t mail_bytes, out_queued;
    int interval_ms;     /* user timer: period, 0 = one-shot */
    int linger_reason;   /* closing: flush first, then close with this reason ... */
    int end_reason;      /* tc_conn_end's reason, for its mail */
    uint32_t slot;       /* pool mode: its slot (message style), else PSLOT_NONE */
    signed char linger_report; /* ... reported so (TC__REPORT_*) */
    unsigned char interest; /* TC__POLL_* registered now */
    unsigned char paused;   /* not read: too much output queued */
    unsigned char above;    /* the output passed the high-water mark since on_drain last ran */
    unsigned char shut_wr;  /* half-close once the output is out */
    unsigned char lingering; /* closing: see linger_reason */
    unsigned char closed;   /* ended: the record waits on the dead list */
    unsigned char dirty;    /* on the loop's list of queues to submit (io_uring) */
    unsigned char proxy_wait; /* reading the PROXY header: no setup or on_open yet */
    unsigned char upgrade_wait, upgraded; /* the protocol's opening step (a WebSocket handshake) */
    unsigned char secure_wait; /* the transport's handshake (TLS), after the PROXY header */
    /* Pool mode. away: the loop has let the connection go (parked in the
     * ready set, or handed to a worker); it touches nothing of it then
     * but under lp->mu, after claiming it through its slot (or setting
     * deferred, timer_due or drain_cut, which the worker looks at, under
     * lp->mu, before it parks it again). */
    unsigned char away;
    unsigned char in_ready;   /* the descriptor is in the ready set (armed or not) */
    unsigned char waiting;    /* waits for room in the pool (on lp->waiting) */
    unsigned char registered; /* the descriptor is in the loop's poller */
    unsigned char unwatched;  /* no events wanted from the loop's poller (handed out
                               * or waiting): out of it, as epoll reports a hang-up
                               * whatever the interest */
    unsigned char stream;     /* a stream handler: a worker takes it at its first bytes */
    unsigned char in_ids;     /* in the loop's id table */
    /* Outbound (tc_loop_dial): connecting, its idle timer the connect's
     * timeout; held (HELD_*): neither read nor given messages, no idle timeout. */
    unsigned char connecting, held;
    unsigned char eof_kept; /* the peer ended its stream; on_eof kept it open for sending */

    /* ---- pool mode only (past EVCONN_EVENT_SIZE) ---- */
    tc__job job;         /* a pool hands back the tc__job pointer (job_ec) */
    int drain_cut;       /* the drain's deadline passed while a worker had it: socket shut */
    int timer_due;       /* the user timer fired while a worker had it */
    /* tc_conn_set_timer from the worker: applied when the loop takes it back */
    int timer_req, timer_interval_ms;
    int64_t timer_when;  /* 0: cancel */
    int job_rc;          /* on_message's answer (or a frame error), from the worker */
    int io_err;          /* the worker's receive or flush failed with this */
    struct evconn *done_next, *wait_next;
    struct mail *deferred, **deferred_tail; /* mail that came while a worker had it */
};
/* Event mode's room: the record up to the pool's fields. */
#define EVCONN_EVENT_SIZE offsetof(struct evconn, job)
/* The record a connection's timer belongs to (NULL: a loop's own timer). */
static struct evconn *etimer_ec(struct etimer *et)
{
    if (et->t.tag == TIMER_IDLE)
        return (struct evconn *)(void *)((char *)et - offsetof(struct evconn, idle));
    if (et->t.tag == TIMER_USER)
        return (struct evconn *)(void *)((char *)et - offsetof(struct evconn, user));
    return NULL;
}
/* The record a pool's job belongs to. */
static struct evconn *job_ec(tc__job *job)
{
    return (struct evconn *)(void *)((char *)job - offsetof(struct evconn, job));
}

struct tc_loop {
    tc_server *srv;
    int idx;
    pthread_t tid;            /* the thread running the loop, as it stores it itself */
    pthread_t thread;         /* loops 1..: pthread_create's handle, for the join */
    int running;
    /* What the loop waits with: epoll, or io_uring (event mode, if asked
     * for and offered). Its add/mod/del watch any descriptor for readiness
     * with a pointer handed back, a connection with TC__POLL_RECV. */
    const tc__evbackend *be;
    tc__evb *evb;
    tc__ev *rx;               /* the event on_readable or on_writable runs for (io_uring:
                               * the bytes received, the send completed) */
    struct evconn **dirty;    /* io_uring: connections with output to submit this turn */
    size_t ndirty, capdirty;
    int mailfd;               /* eventfd: mail arrived, or stop */
    pthread_mutex_t mu;       /* guards the mailbox */
    int ended;                /* the loop has ended: no more posted work (mu) */
    struct mail *mail, **mail_tail;
    tc__theap timers;
    struct tc_loop_timer *own_timers; /* the loop's own (tc_loop_timer_start) */
    size_t n_own_timers;
    struct tc_watch *watches, *dead_watches; /* tc_loop_watch; stopped this turn */
    struct evconn *conns, *dead;
    /* Its message-style connections by id (open addressing, linear probes;
     * cap a power of two or 0). Changed by the loop under mu; read by the
     * loop freely, by other threads under mu. */
    struct evconn **ids;
    size_t ids_cap, ids_used;
    uint64_t last_seq; /* ids: seq * nloops + idx, so an id names its loop */
    struct evconn *done;      /* handed back by workers (mu) */
    struct evconn *waiting, **waiting_tail; /* frames waiting for room in the pool */
    int room_freed;           /* the pool had room since the waiting were last retried */
    int room_mail;            /* the pool reported room (mu) */
    unsigned nconns;
    struct state *st;
    atomic_int draining;      /* set by loop 0 when the server shuts down */
    int64_t drain_deadline;
    int drain_past;           /* the deadline's sweep ran: no need to wake for it again */
    unsigned char *scratch;
    /* Above hwm bytes of queued output a connection is not read and sends
     * from other threads fail (-EAGAIN); below lwm it is read again and
     * on_drain runs: the server's send_high_water and send_low_water. */
    size_t hwm, lwm;
};

struct state {
    int nloops;
    struct tc_loop *loops;
    unsigned next;   /* round-robin dealer */
    int listening;   /* the listener is in loop 0's poller */
    int ring_accept; /* loop 0 accepts with the backend's requests (io_uring) */
    int ring_n;      /* requests each listener was told to keep in flight */
    int ring_starved; /* a request found no descriptor: polled until one is taken */
    int pooled;      /* handlers run in a pool (dispatch), not in the loops */
    const tc__evbackend *be; /* every loop's */
    tc__dispatch dispatch;
    /* pool mode: the ready set the workers wait on, and the slots */
    tc__poller *ready;
    _Atomic(struct pslot *) *chunks; /* PSLOT_CHUNKS, each set once */
    uint32_t slots_used;  /* slots made so far (the loop's) */
    uint32_t slot_free;   /* the free list's head, or PSLOT_NONE */
};

/* A parked connection's slot: memory that stays while the loops run, so a
 * worker can look at it with a token from the ready set even after the
 * connection is gone. word = generation << 1 | owned: a worker or the loop
 * takes a connection by setting owned from the generation its token (or
 * the loop's record) names; closing moves the generation on. */
struct pslot {
    _Atomic uint64_t word;
    struct evconn *ec;   /* read only by whoever took the slot */
    uint32_t next_free;
};
#define PSLOT_CHUNK 1024u
#define PSLOT_CHUNKS 4096u /* slots at most: 4 Mi connections */
#define PSLOT_NONE UINT32_MAX
#define WAKE_TOKEN UINT64_MAX /* the pool's wakefd in the ready set */

/* The connection whose handler this worker thread runs now (pool mode):
 * its sends go straight to the socket. */
static _Thread_local struct evconn *tl_job;

/* The loop this thread is running, if any: a test that needs no other
 * thread's data (the loop's tid is written as it starts). */
static _Thread_local struct tc_loop *tl_loop;

static char tag_wake, tag_mail; /* poller cookies that are not connections */

/* The other cookies are pointers to records whose low bits are free: a
 * connection's (the record itself), a watch's (1 byte into its tc_watch), a
 * listener's (2 bytes into its tc__listener). Compare with the static tags
 * first: a char may sit anywhere. */
enum { TAG_CONN = 0, TAG_WATCH = 1, TAG_LISTENER = 2 };
#define TAG_MASK 3u
static void *tag_make(void *obj, unsigned kind)
{
    return (char *)obj + kind;
}
static unsigned tag_kind(const void *p)
{
    return (unsigned)((uintptr_t)p & TAG_MASK);
}
static void *tag_obj(void *p, unsigned kind)
{
    return (char *)p - kind;
}

/* When the connection times out: after idle_timeout_ms of silence, or when
 * an incomplete frame has taken conn_timeout_ms to arrive (a client sending
 * a byte now and then is not silent, but holds a frame open forever). */
static int64_t idle_due(const struct evconn *ec)
{
    const tc_server_config *cfg = &ec->loop->srv->cfg;
    int64_t due = TC__NO_DEADLINE;
    if (cfg->idle_timeout_ms > 0)
        due = ec->idle_from + (int64_t)cfg->idle_timeout_ms * TC_NS_PER_MS;
    if (cfg->conn_timeout_ms > 0 && ec->frame_from) {
        int64_t f = ec->frame_from + (int64_t)cfg->conn_timeout_ms * TC_NS_PER_MS;
        if (f < due)
            due = f;
    }
    if (ec->conn && ec->conn->deadline < due)
        due = ec->conn->deadline; /* the channel's own (a WebSocket closing) */
    if (ec->conn && ec->conn->proto && ec->conn->proto->wake_at(ec->conn) < due)
        due = ec->conn->proto->wake_at(ec->conn); /* its protocol's (a keepalive ping) */
    return due;
}

static void schedule_idle(struct evconn *ec)
{
    int64_t due = idle_due(ec);
    if (due != TC__NO_DEADLINE)
        (void)tc__theap_schedule(&ec->loop->timers, &ec->idle.t, due);
}

/* Restart the idle clock now (input arrived, or the output drained). */
static void restart_idle(struct evconn *ec)
{
    const tc_server_config *cfg = &ec->loop->srv->cfg;
    if (cfg->idle_timeout_ms > 0 || cfg->conn_timeout_ms > 0 || (ec->conn && ec->conn->proto)) {
        ec->idle_from = tc__now_ns();
        schedule_idle(ec);
    }
}

/* Whether ec has ended (its record waits to be freed). conn is NULL then
 * too, which the analyzer can follow where it loses closed. */
static int gone(const struct evconn *ec)
{
    return ec->closed || !ec->conn;
}

/* A backend that sends for the loop (io_uring): hand it the queued output
 * as one send, unless one is in flight (its completion sends the rest). */
static int async_flush(struct evconn *ec)
{
    struct tc_loop *lp = ec->loop;
    tc_conn *c = ec->conn;
    if (c->b->wflight || c->b->wlen == c->b->woff)
        return 0;
    unsigned char *buf = c->b->wbuf;
    size_t off = c->b->woff, len = c->b->wlen - c->b->woff, cap = c->b->wcap;
    int rc = lp->be->send(lp->evb, c->fd, buf, off, len, cap);
    if (rc < 0)
        return c->werr = rc;
    /* The buffer is the send's now; the next bytes start another. */
    c->b->wbuf = NULL;
    c->b->wcap = c->b->woff = c->b->wlen = 0;
    c->b->wflight += len;
    return 0;
}

/* A send of bytes the loop received into a backend's buffer (an echo, a
 * relay) goes out from that buffer (see tc__evbackend.lend), after what is
 * queued (handed to the backend first, to keep the order): 1 if it did
 * (counted as in flight), else 0. Small ones are copied: a loan holds a
 * whole buffer of the ring until its send completes. */
static int lend_send(struct evconn *ec, const struct iovec *vec, int cnt, size_t total)
{
    struct tc_loop *lp = ec->loop;
    tc_conn *c = ec->conn;
    if (!lp->be->lend || cnt != 1 || total < LEND_MIN || !c->wasync || c->werr ||
        c->io != &tc__io_plain || tc__chan_own(c) < 0)
        return 0;
    struct tc__chanbuf *cb = c->b;
    if (cb->woff != cb->wlen) {
        size_t len = cb->wlen - cb->woff;
        if (lp->be->send(lp->evb, c->fd, cb->wbuf, cb->woff, len, cb->wcap) < 0)
            return 0;
        cb->wbuf = NULL;
        cb->wcap = cb->woff = cb->wlen = 0;
        cb->wflight += len;
    }
    if (lp->be->lend(lp->evb, c->fd, vec[0].iov_base, total) < 0) {
        tc__chan_release(c); /* owned for nothing: an idle channel stays small */
        return 0;
    }
    cb->wflight += total;
    return 1;
}

/* Output queued for an io_uring loop goes out at the end of the turn, all
 * of the turn's sends in the one system call that waits. */
static void mark_dirty(struct evconn *ec)
{
    struct tc_loop *lp = ec->loop;
    tc_conn *c = ec->conn;
    if (!c->wasync || ec->dirty || c->b->wflight || c->b->wlen == c->b->woff)
        return;
    if (lp->ndirty == lp->capdirty) {
        size_t cap = lp->capdirty ? lp->capdirty * 2 : 64;
        struct evconn **d = realloc(lp->dirty, cap * sizeof(struct evconn *));
        if (!d) {
            (void)async_flush(ec); /* at once, then (an error is the close's) */
            return;
        }
        lp->dirty = d;
        lp->capdirty = cap;
    }
    ec->dirty = 1;
    lp->dirty[lp->ndirty++] = ec;
}

static void ev_close(struct evconn *ec, int reason, int report);

/* The end of the turn: the queues marked go to the backend. */
static void flush_dirty(struct tc_loop *lp)
{
    for (size_t i = 0; i < lp->ndirty; i++) {
        struct evconn *ec = lp->dirty[i];
        ec->dirty = 0;
        if (!gone(ec) && async_flush(ec) < 0)
            ev_close(ec, ec->conn->werr, TC__REPORT_AUTO);
    }
    lp->ndirty = 0;
}

/* Off the loop's list of connections (it no longer counts for the drain). */
static void ev_unlink(struct evconn *ec)
{
    TC__LIST_UNLINK(ec->loop->conns, ec);
    ec->loop->nconns--;
}

/* ---- pool mode: slots ------------------------------------------------------ */

static struct pslot *slot_at(struct state *st, uint32_t i)
{
    struct pslot *chunk = atomic_load_explicit(&st->chunks[i / PSLOT_CHUNK], memory_order_acquire);
    return &chunk[i % PSLOT_CHUNK];
}

/* A slot for ec, owned (by the loop): 0 or -ENOMEM. */
static int slot_new(struct state *st, struct evconn *ec)
{
    uint32_t i = st->slot_free;
    if (i != PSLOT_NONE) {
        st->slot_free = slot_at(st, i)->next_free;
    } else {
        if (st->slots_used == PSLOT_CHUNK * PSLOT_CHUNKS)
            return -ENOMEM;
        i = st->slots_used;
        if (i % PSLOT_CHUNK == 0) {
            struct pslot *chunk = calloc(PSLOT_CHUNK, sizeof *chunk);
            if (!chunk)
                return -ENOMEM;
            for (uint32_t k = 0; k < PSLOT_CHUNK; k++)
                atomic_init(&chunk[k].word, 1); /* generation 0, owned */
            atomic_store_explicit(&st->chunks[i / PSLOT_CHUNK], chunk, memory_order_release);
        }
        st->slots_used++;
    }
    slot_at(st, i)->ec = ec;
    ec->slot = i;
    return 0;
}

/* ec is closed: its slot moves to the next generation (owned, so that no
 * late token takes it) and is free for another connection. */
static void slot_end(struct state *st, struct evconn *ec)
{
    struct pslot *sl = slot_at(st, ec->slot);
    uint64_t w = atomic_load_explicit(&sl->word, memory_order_relaxed);
    atomic_store_explicit(&sl->word, (((w >> 1) + 1) & 0xffffffffu) << 1 | 1, memory_order_release);
    sl->next_free = st->slot_free;
    st->slot_free = ec->slot;
}

/* The ready set's token for ec: its slot and generation. */
static uint64_t slot_token(struct state *st, const struct evconn *ec)
{
    uint64_t w = atomic_load_explicit(&slot_at(st, ec->slot)->word, memory_order_relaxed);
    return (w >> 1) << 32 | ec->slot;
}

/* Take the connection a token names, if it is still that one and nobody
 * has it: the record, or NULL. Acquire: what its last owner wrote is seen. */
static struct evconn *slot_take(struct state *st, uint64_t token)
{
    uint32_t i = (uint32_t)token;
    if (i >= PSLOT_CHUNK * PSLOT_CHUNKS)
        return NULL;
    struct pslot *sl = slot_at(st, i);
    uint64_t free_word = (token >> 32) << 1;
    if (!atomic_compare_exchange_strong_explicit(&sl->word, &free_word, free_word | 1,
                                                 memory_order_acq_rel, memory_order_relaxed))
        return NULL;
    return sl->ec;
}

/* Let ec go (release: what this thread wrote is seen by the next owner). */
static void slot_give(struct state *st, const struct evconn *ec)
{
    struct pslot *sl = slot_at(st, ec->slot);
    uint64_t w = atomic_load_explicit(&sl->word, memory_order_relaxed);
    atomic_store_explicit(&sl->word, w & ~(uint64_t)1, memory_order_release);
}

/* Park ec in the ready set for the workers (the loop has it): 0, or an
 * error with ec still the loop's. */
static int park(struct evconn *ec)
{
    struct tc_loop *lp = ec->loop;
    struct state *st = lp->st;
    tc_conn *c = ec->conn;
    if (ec->registered) {
        (void)lp->be->del(lp->evb, c->fd);
        ec->registered = 0;
        ec->interest = 0;
    }
    int add = !ec->in_ready;
    uint64_t token = slot_token(st, ec);
    int fd = c->fd;
    ec->in_ready = 1;
    ec->away = 1;
    slot_give(st, ec);
    /* From here on a worker may have it: only locals. */
    int rc = tc__poller_set_token(st->ready, add, fd, TC__POLL_IN | TC__POLL_ONESHOT, token);
    if (rc == 0)
        return 0;
    pthread_mutex_lock(&lp->mu);
    struct evconn *back = slot_take(st, token);
    if (back) {
        back->away = 0;
        back->in_ready = 0; /* not added, or (a mod that failed) not there */
    }
    pthread_mutex_unlock(&lp->mu);
    return back ? rc : 0; /* a worker that took it meanwhile parks it again */
}

/* The loop takes back a connection it let go, unless a worker has it:
 * then theirs (if not NULL) runs under lp->mu, leaving word for the worker
 * to see before it parks the connection again. 1 if the loop has it now. */
static int claim_or(struct evconn *ec, void (*theirs)(struct evconn *ec, void *arg), void *arg)
{
    if (!ec->away)
        return 1;
    struct tc_loop *lp = ec->loop;
    pthread_mutex_lock(&lp->mu);
    int got = slot_take(lp->st, slot_token(lp->st, ec)) != NULL;
    if (got)
        ec->away = 0;
    else if (theirs)
        theirs(ec, arg);
    pthread_mutex_unlock(&lp->mu);
    return got;
}

static void set_flag(struct evconn *ec, void *flag)
{
    (void)ec;
    *(int *)flag = 1;
}

/* claim_or, setting *flag (if not NULL) when a worker has it. */
static int claim(struct evconn *ec, int *flag)
{
    return claim_or(ec, flag ? set_flag : NULL, flag);
}

/* Whether a pool's message-style connection can wait in the ready set
 * now: open, nothing to send, not closing. */
static int parkable(const struct evconn *ec, size_t pending)
{
    return !ec->proxy_wait && !ec->secure_wait && ec->s->opened && !ec->paused && !ec->lingering && !ec->above &&
           pending == 0;
}

static void ev_close(struct evconn *ec, int reason, int report);
static void deliver(struct evconn *ec, struct mail *m);
/* Outbound connections (tc_loop_dial), further down. */
static void dial_ready(struct evconn *ec);
static void dial_run(struct tc_loop *lp, void *arg);
static void dial_drop(void *arg);
static int ev_eof(struct evconn *ec);

/* The events the loop's poller should report for ec. */
static unsigned wanted(const struct evconn *ec, size_t pending)
{
    unsigned want = 0;
    /* A transport's handshake or read that must write first (TLS). */
    if (ec->conn->xwant == TC_TRANSPORT_WANT_WRITE)
        want |= TC__POLL_OUT;
    if (ec->secure_wait)
        return want ? want : TC__POLL_IN;
    if (!ec->paused && !ec->lingering && !ec->held && !ec->eof_kept)
        want |= CONN_IN;
    /* Paused or closing, on_writable resumes reading or ends the connection;
     * owed an on_drain, it calls it: wait for it even when another path
     * (process_input's flush, a mail, a timer, a worker) already emptied the
     * output, or nothing would ever wake us. */
    if (pending || ec->paused || ec->lingering || ec->above)
        want |= TC__POLL_OUT;
    return want;
}

/* set_interest for a pool's message-style connection (park it, or bring it
 * back to the loop's poller), or one out of the loop's poller. Out of line:
 * event mode's path stays short. */
__attribute__((noinline)) static void set_interest_slow(struct evconn *ec, size_t pending)
{
    struct tc_loop *lp = ec->loop;
    tc_conn *c = ec->conn;
    if (ec->slot != PSLOT_NONE) {
        if (parkable(ec, pending)) {
            int rc = park(ec);
            if (rc < 0)
                ev_close(ec, rc, TC__REPORT_YES);
            return;
        }
        if (ec->in_ready) { /* back from the ready set (the loop has it) */
            (void)tc__poller_del(lp->st->ready, c->fd);
            ec->in_ready = 0;
        }
    }
    unsigned want = wanted(ec, pending);
    if (!ec->registered) {
        if (lp->be->add(lp->evb, c->fd, want, ec) < 0) {
            ev_close(ec, -ENOMEM, TC__REPORT_YES);
            return;
        }
        ec->registered = 1;
        ec->interest = want;
    } else if (want != ec->interest && lp->be->mod(lp->evb, c->fd, want, ec) == 0) {
        ec->interest = want;
    }
}

/* What the loop wants to hear of ec, from its poller or (pool mode, when
 * it has nothing to send) the ready set. In pool mode ec may be a worker's
 * once this returns. */
static void set_interest(struct evconn *ec)
{
    tc_conn *c = ec->conn;
    mark_dirty(ec);
    if (ec->shut_wr && tc__chan_pending(c) == 0) {
        /* A half-close waited for the queued output, whichever path sent it. */
        (void)c->io->shutdown_write(c);
        ec->shut_wr = 0;
    }
    size_t pending = tc__chan_pending(c);
    atomic_store_explicit(&ec->out_queued, pending, memory_order_relaxed);
    if (pending > ec->loop->hwm)
        ec->above = 1; /* on_drain once it falls below the low one */
    if (ec->idle.t.slot == TC__TIMER_IDLE && ec->s->opened && !ec->lingering && pending == 0)
        restart_idle(ec); /* the idle clock stopped while output was pending */
    if (ec->unwatched)
        return; /* a worker has it, or its frame waits for one */
    if (ec->slot != PSLOT_NONE || !ec->registered) {
        set_interest_slow(ec, pending);
        return;
    }
    unsigned want = wanted(ec, pending);
    if (want != ec->interest && ec->loop->be->mod(ec->loop->evb, c->fd, want, ec) == 0)
        ec->interest = want;
}

/* Forget the mail other threads sent to ec: in the mailbox, and what was
 * kept while a worker had it. */
static void drop_mail(struct tc_loop *lp, struct evconn *ec)
{
    pthread_mutex_lock(&lp->mu);
    for (struct mail **pm = &lp->mail; *pm;) {
        struct mail *m = *pm;
        if (m->ec == ec) {
            *pm = m->next;
            free(m);
        } else {
            pm = &m->next;
        }
    }
    lp->mail_tail = &lp->mail;
    while (*lp->mail_tail)
        lp->mail_tail = &(*lp->mail_tail)->next;
    pthread_mutex_unlock(&lp->mu);
    while (lp->st->pooled && ec->deferred) {
        struct mail *m = ec->deferred;
        ec->deferred = m->next;
        free(m);
    }
}

/* No events for ec from the loop's poller: a worker owns it, or it waits
 * for one. Not even a hang-up may come then (epoll reports one whatever
 * the interest), so it leaves the poller. */
static void unwatch(struct evconn *ec)
{
    if (ec->unwatched)
        return;
    ec->unwatched = 1;
    if (ec->registered) {
        (void)ec->loop->be->del(ec->loop->evb, ec->conn->fd);
        ec->registered = 0;
        ec->interest = 0;
    }
}

/* Events again, none chosen yet (set_interest picks, and registers). */
static void rewatch(struct evconn *ec)
{
    ec->unwatched = 0;
}

/* Off the list of those waiting for room in the pool (still unwatched). */
static void stop_waiting(struct evconn *ec)
{
    struct tc_loop *lp = ec->loop;
    if (!ec->waiting)
        return;
    struct evconn **pw = &lp->waiting;
    while (*pw != ec)
        pw = &(*pw)->wait_next;
    *pw = ec->wait_next;
    lp->waiting_tail = &lp->waiting;
    while (*lp->waiting_tail)
        lp->waiting_tail = &(*lp->waiting_tail)->wait_next;
    ec->waiting = 0;
}

/* ---- connections by id (tc_server_send_to, tc_server_close_conn) --------- */

static size_t id_home(const struct tc_loop *lp, uint64_t id)
{
    /* The sequence part, spread: ids of one loop differ there. */
    uint64_t seq = id / (uint64_t)lp->st->nloops;
    return (size_t)(seq * UINT64_C(0x9E3779B97F4A7C15) >> 32) & (lp->ids_cap - 1);
}

static struct evconn *id_find(const struct tc_loop *lp, uint64_t id)
{
    if (!lp->ids_cap)
        return NULL;
    for (size_t i = id_home(lp, id);; i = (i + 1) & (lp->ids_cap - 1)) {
        struct evconn *ec = lp->ids[i];
        if (!ec || ec->conn->id == id)
            return ec;
    }
}

static void id_place(struct tc_loop *lp, struct evconn *ec)
{
    size_t i = id_home(lp, ec->conn->id);
    while (lp->ids[i])
        i = (i + 1) & (lp->ids_cap - 1);
    lp->ids[i] = ec;
}

/* Name a message-style connection and enter it in the table: 0 or -ENOMEM. */
static int id_add(struct tc_loop *lp, struct evconn *ec)
{
    ec->conn->id = ++lp->last_seq * (uint64_t)lp->st->nloops + (uint64_t)lp->idx;
    struct evconn **grown = NULL;
    size_t cap = lp->ids_cap;
    if ((lp->ids_used + 1) * 4 > cap * 3) { /* at most 3/4 full */
        cap = cap ? cap * 2 : 64;
        if (!(grown = calloc(cap, sizeof(struct evconn *))))
            return -ENOMEM;
    }
    pthread_mutex_lock(&lp->mu);
    if (grown) {
        struct evconn **old = lp->ids;
        size_t old_cap = lp->ids_cap;
        lp->ids = grown;
        lp->ids_cap = cap;
        for (size_t i = 0; i < old_cap; i++)
            if (old[i])
                id_place(lp, old[i]);
        free(old);
    }
    id_place(lp, ec);
    lp->ids_used++;
    pthread_mutex_unlock(&lp->mu);
    ec->in_ids = 1;
    return 0;
}

/* Out of the table, at the start of its close: from here other threads'
 * sends and closes by id find nothing. */
static void id_remove(struct tc_loop *lp, struct evconn *ec)
{
    if (!ec->in_ids)
        return;
    ec->in_ids = 0;
    size_t mask = lp->ids_cap - 1, i = id_home(lp, ec->conn->id);
    pthread_mutex_lock(&lp->mu);
    while (lp->ids[i] != ec)
        i = (i + 1) & mask;
    /* Shift back the entries of the run after it that would no longer be
     * reached from their home (no tombstones). */
    for (size_t j = (i + 1) & mask; lp->ids[j]; j = (j + 1) & mask) {
        size_t home = id_home(lp, lp->ids[j]->conn->id);
        if (((j - home) & mask) >= ((j - i) & mask)) {
            lp->ids[i] = lp->ids[j];
            i = j;
        }
    }
    lp->ids[i] = NULL;
    lp->ids_used--;
    pthread_mutex_unlock(&lp->mu);
}

/* End a connection: the session's close (report, flush, on_close, finish),
 * then the core's bookkeeping. The record itself is freed at the end of the
 * turn (other lists may still point at it). */
static void ev_close(struct evconn *ec, int reason, int report)
{
    /* conn is NULL once closed too: the analyzer cannot tell that the
     * list and mail unlinking below leave closed set. */
    if (ec->closed || !ec->conn)
        return;
    ec->closed = 1;
    struct tc_loop *lp = ec->loop;
    tc_conn *c = ec->conn;
    id_remove(lp, ec);

    if (ec->registered)
        (void)lp->be->del(lp->evb, c->fd);
    if (ec->in_ready)
        (void)tc__poller_del(lp->st->ready, c->fd);
    if (ec->slot != PSLOT_NONE)
        slot_end(lp->st, ec); /* a late token for it finds another generation */
    tc__theap_cancel(&lp->timers, &ec->idle.t);
    tc__theap_cancel(&lp->timers, &ec->user.t);
    if (!c->b->wflight)
        c->wasync = 0; /* the session's last flushes go to the socket, as on epoll */
    tc__session_close(ec->s, reason, report);
    /* Sends other threads queued for it die with it (see tc_conn_send). Only
     * now: a foreign thread may send until on_close returns, and a mail left
     * behind would point at this record after it is freed. */
    drop_mail(lp, ec);
    stop_waiting(ec); /* rare: a close while a frame waited for the pool */
    ev_unlink(ec);
    (void)tc__chan_settle(c);
    tc__server_session_end(ec->s);
    ec->conn = NULL;
    ec->dead_next = lp->dead;
    lp->dead = ec;
}

/* Close once the queued output is out (or at once if there is none). */
static void ev_close_after_flush(struct evconn *ec, int reason, int report)
{
    /* Its frame no longer waits for a worker (on_timer asked to close, say):
     * back on the poller, so that its output can drain. */
    stop_waiting(ec);
    rewatch(ec);
    /* Nothing reads the input any more: drop it rather than copy it out of
     * the loop's scratch buffer into a new one. */
    tc__chan_view_all(ec->conn);
    (void)tc__chan_settle(ec->conn); /* give the loop's scratch buffer back first */
    int rc = tc__chan_flush_nb(ec->conn);
    if (rc < 0 && tc__session_quiet_end(reason)) {
        ev_close(ec, rc, TC__REPORT_AUTO);
        return;
    }
    if (rc <= 0) {
        ev_close(ec, reason, report);
        return;
    }
    ec->lingering = 1;
    ec->linger_reason = reason;
    ec->linger_report = (signed char)report; /* TC__REPORT_*: -1 to 1 */
    /* No more callbacks but on_close: a periodic timer would call on_timer on
     * a connection the handler has asked to close, for as long as its output
     * takes to drain (and each call may queue more). */
    tc__theap_cancel(&ec->loop->timers, &ec->user.t);
    set_interest(ec);
}

/* ---- pool mode: handlers in workers ------------------------------------- */

/* A worker is done with ec, and the loop has something to do with it:
 * hand it back (the loop runs job_finished; ec stays owned, now the loop's). */
static void job_done(struct evconn *ec)
{
    struct tc_loop *lp = ec->loop;
    tl_job = NULL;
    pthread_mutex_lock(&lp->mu);
    ec->done_next = lp->done;
    lp->done = ec;
    pthread_mutex_unlock(&lp->mu);
    tc__wake(lp->mailfd);
}

/* In a worker: on_message for every complete frame buffered, while the
 * handler goes on and the output stays under the high-water mark. 0 once
 * a frame is incomplete, 1 when the output is too high (the loop pauses
 * reading), or the error that ends the connection (in job_rc). */
static int serve_frames(struct evconn *ec)
{
    const void *msg;
    size_t len;
    for (;;) {
        int rc = tc__chan_frame(ec->conn, &msg, &len);
        if (rc == 0)
            return 0;
        if (rc < 0)
            return ec->job_rc = rc;
        ec->frame_from = 0;
        if ((rc = tc__session_message(ec->s, msg, len)) < 0)
            return ec->job_rc = rc;
        if (tc__chan_pending(ec->conn) > ec->loop->hwm)
            return 1;
    }
}

/* In a worker, the common ending: nothing is left for the loop to do (all
 * sent, no partial frame, no end of stream, no timer request, no mail, no
 * drain), so park the connection in the ready set again, without the loop.
 * 1 if done (ec may be another worker's at once); 0: hand it back instead. */
static int let_go(struct evconn *ec)
{
    tc_conn *c = ec->conn;
    struct tc_loop *lp = ec->loop;
    struct state *st = lp->st;
    /* A channel deadline (a WebSocket closing) needs the loop's timer, an
     * owed on_drain the loop. */
    if (ec->job_rc < 0 || ec->io_err || c->b->rlen > 0 || c->reof || tc__chan_pending(c) > 0 ||
        ec->timer_req || ec->shut_wr || ec->above || c->deadline != TC__NO_DEADLINE)
        return 0;
    const tc_server_config *cfg = &lp->srv->cfg;
    int done = 0;
    /* Under lp->mu: the loop's claims and flags (deferred, timer_due,
     * drain_cut) take it too, and the loop must not claim the connection
     * between the release and the arming (it could close the descriptor). */
    pthread_mutex_lock(&lp->mu);
    if (!ec->deferred && !ec->drain_cut && !ec->timer_due && !atomic_load(&lp->draining)) {
        /* The idle timer stays scheduled (fire_timers moves it on): only
         * the clock's start moves. */
        if (cfg->idle_timeout_ms > 0 || cfg->conn_timeout_ms > 0)
            ec->idle_from = tc__now_ns();
        int add = !ec->in_ready;
        uint64_t token = slot_token(st, ec);
        int fd = c->fd;
        ec->in_ready = 1;
        tl_job = NULL;
        slot_give(st, ec);
        /* From here on another worker may have it: only locals. */
        int rc = tc__poller_set_token(st->ready, add, fd, TC__POLL_IN | TC__POLL_ONESHOT, token);
        /* Not armed: taken back for the loop to see to, unless a worker
         * took it meanwhile (it parks it again). */
        if (rc < 0 && slot_take(st, token) == ec) {
            tl_job = ec;
            ec->in_ready = 0; /* not added, or (a mod that failed) not there */
        } else {
            done = 1;
        }
    }
    pthread_mutex_unlock(&lp->mu);
    return done;
}

/* In a worker: serve a connection with input. The frames already buffered,
 * then one receive into the worker's buffer and the frames it completes;
 * buffered replies go out; what is left of a frame moves into the
 * connection's own buffer. Then park it again, or hand it back. */
static void serve_job(tc__job *job)
{
    struct evconn *ec = job_ec(job);
    tc_conn *c = ec->conn;
    tl_job = ec;
    ec->job_rc = 0;
    ec->io_err = 0;
    int rc = serve_frames(ec);
    while (rc == 0 && !c->reof) {
        ssize_t r = tc__chan_fill_scratch(c, job->scratch, job->scratch_len);
        if (r > 0 || r == TC_EOF)
            rc = serve_frames(ec); /* its answer is in job_rc and the output queued */
        else if (r < 0 && r != -EAGAIN)
            ec->io_err = (int)r;
        /* Input a transport (TLS) holds: the ready set would never announce it. */
        if (r <= 0 || ec->job_rc < 0 || !tc__chan_io_pending(c) || tc__chan_settle(c) < 0)
            break;
    }
    if (ec->job_rc < 0 || ec->io_err)
        tc__chan_view_all(c); /* it ends: what it sent after is not kept */
    if (tc__chan_settle(c) < 0 && !ec->io_err)
        ec->io_err = -ENOMEM;
    if (ec->job_rc == 0 && !ec->io_err && tc__chan_pending(c) && tc__chan_flush_nb(c) < 0)
        ec->io_err = c->werr;
    if (!let_go(ec))
        job_done(ec);
}

/* The worker's thread ended inside on_message: its buffer is about to go
 * to another thread, so what the connection has in it moves out first. */
static void serve_lost(tc__job *job)
{
    struct evconn *ec = job_ec(job);
    (void)tc__chan_settle(ec->conn);
    ec->job_rc = -ECANCELED;
    job_done(ec);
}

tc__job *tc__loops_wait(tc_server *srv, int *woken)
{
    struct state *st = srv->mode_state;
    uint64_t token;
    unsigned events;
    int n = tc__poller_wait_token(st->ready, &token, &events, -1);
    if (n <= 0)
        return NULL;
    if (token == WAKE_TOKEN) {
        *woken = 1;
        return NULL;
    }
    struct evconn *ec = slot_take(st, token);
    if (!ec)
        return NULL; /* gone, or the loop has it: it parks it again */
    ec->job.run = serve_job;
    ec->job.lost = serve_lost;
    return &ec->job;
}

/* Hand ec to the pool's queue (the loop has it): the loop gets no events
 * for it, and touches neither its channel nor its session until the
 * worker parks it or hands it back. 0, or -EAGAIN (the pool is full: ec is
 * unwatched, still the loop's). */
static int hand_out(struct evconn *ec)
{
    struct tc_loop *lp = ec->loop;
    unwatch(ec);
    ec->away = 1;
    int rc = lp->st->dispatch.submit(lp->st->dispatch.pool, &ec->job);
    if (rc < 0)
        ec->away = 0;
    return rc;
}

/* Wait for room in the pool, unwatched (not read meanwhile: backpressure);
 * retried when the pool reports room (retry_waiting). */
static void wait_for_pool(struct evconn *ec)
{
    struct tc_loop *lp = ec->loop;
    unwatch(ec);
    ec->waiting = 1;
    ec->wait_next = NULL;
    *lp->waiting_tail = ec;
    lp->waiting_tail = &ec->wait_next;
}

/* A message-style connection has input the ready set will not report
 * (frames already buffered, or input seen by the loop): a worker from the
 * queue serves it, or it waits for one. What it has in the loop's scratch
 * buffer moves into its own first (the scratch is for the next receive). */
static void dispatch_serve(struct evconn *ec)
{
    tc_conn *c = ec->conn;
    if (tc__chan_settle(c) < 0) {
        ev_close(ec, -ENOMEM, TC__REPORT_YES);
        return;
    }
    ec->job.run = serve_job;
    ec->job.lost = serve_lost;
    if (hand_out(ec) < 0)
        wait_for_pool(ec);
}

/* In a worker: a stream-style connection's whole life. */
static void stream_job(tc__job *job)
{
    tc__session *s = job_ec(job)->s;
    tc__session_run(s);
    tc__server_session_done(s); /* frees the record this job lives in */
}

static void stream_lost(tc__job *job)
{
    tc__server_session_done(job_ec(job)->s); /* the session has closed */
}

static const tc__driver ev_driver;
static void process_input(struct evconn *ec);

/* A stream-style connection said something: a worker takes it for good,
 * with a blocking driver. 1 if it waits for room in the pool (else ec may
 * be gone already). */
static int dispatch_stream(struct evconn *ec)
{
    struct tc_loop *lp = ec->loop;
    tc_conn *c = ec->conn;
    if (tc__chan_settle(c) < 0) { /* its bytes leave the loop's scratch buffer */
        ev_close(ec, -ENOMEM, TC__REPORT_YES);
        return 0;
    }
    ec->job.run = stream_job;
    ec->job.lost = stream_lost;
    /* Off the loop first: once submitted, the job may end (and free ec) at
     * once. No idle clock while it waits for a worker: it has spoken. Out
     * of the poller for good: its descriptor becomes the worker's. */
    unwatch(ec);
    tc__theap_cancel(&lp->timers, &ec->idle.t);
    tc__theap_cancel(&lp->timers, &ec->user.t);
    drop_mail(lp, ec);
    ev_unlink(ec);
    /* From here on it is served as in threading mode: a blocking socket,
     * one recv per wait under SO_RCVTIMEO (the sleep driver). */
    int rc = tc__sock_set_blocking(c->fd);
    if (rc < 0) {
        TC__LIST_PUSH(lp->conns, ec);
        lp->nconns++;
        ev_close(ec, rc, TC__REPORT_YES);
        return 0;
    }
    c->drv = &tc__drv_sleep;
    c->drv_data = NULL;
    c->stopfd = -1; /* the drain reaches it by shutting its socket */
    tc__drv_sleep_prepare(c);
    if (lp->st->dispatch.submit(lp->st->dispatch.pool, &ec->job) == 0)
        return 0;
    /* The pool is full: back on the loop's list, unwatched, until a worker is free. */
    c->drv = &ev_driver;
    c->drv_data = ec;
    TC__LIST_PUSH(lp->conns, ec);
    lp->nconns++;
    wait_for_pool(ec);
    return 1;
}

/* The handler's tc_conn_set_timer calls from the worker, in effect now
 * (the last one wins; a firing that came meanwhile is void if it moved). */
static void apply_timer_request(struct evconn *ec)
{
    struct tc_loop *lp = ec->loop;
    if (!ec->timer_req)
        return;
    ec->timer_req = 0;
    ec->timer_due = 0;
    if (ec->timer_when == 0) {
        tc__theap_cancel(&lp->timers, &ec->user.t);
        return;
    }
    ec->interval_ms = ec->timer_interval_ms;
    (void)tc__theap_schedule(&lp->timers, &ec->user.t, ec->timer_when);
}

/* The loop takes ec back from its worker. */
static void job_finished(struct evconn *ec)
{
    tc_conn *c = ec->conn;
    ec->away = 0; /* the worker handed it back: the loop's now */
    rewatch(ec);
    int rc;
    while (ec->deferred && !ec->closed) { /* sends and closes other threads made meanwhile */
        struct mail *m = ec->deferred;
        ec->deferred = m->next;
        deliver(ec, m);
        free(m);
    }
    if (ec->closed)
        return;
    ec->deferred_tail = &ec->deferred;
    if (ec->drain_cut) { /* the drain's deadline passed meanwhile: no more messages */
        ev_close(ec, TC_ESHUTDOWN, TC__REPORT_AUTO);
        return;
    }
    if (ec->lingering) /* closed by id meanwhile: it flushes, then ends */
        return;
    apply_timer_request(ec);
    if (ec->job_rc < 0) {
        ev_close_after_flush(ec, ec->job_rc, TC__REPORT_YES);
        return;
    }
    if (ec->io_err) { /* the worker's receive or flush failed */
        ev_close(ec, ec->io_err, TC__REPORT_AUTO);
        return;
    }
    if (ec->timer_due) {
        ec->timer_due = 0;
        if ((rc = tc__session_timer(ec->s)) < 0) {
            ev_close_after_flush(ec, rc, TC__REPORT_YES);
            return;
        }
    }
    /* The worker's replies went straight to the socket; what it did not
     * take is queued, and above the high-water mark the connection is not
     * read until it drains, as in event mode. */
    if (tc__chan_pending(c) > ec->loop->hwm)
        ec->paused = 1;
    restart_idle(ec);
    process_input(ec); /* the next frames, if buffered; then flush and watch */
}

/* Workers handed connections back: take them. */
static void take_done(struct tc_loop *lp)
{
    pthread_mutex_lock(&lp->mu);
    struct evconn *ec = lp->done;
    lp->done = NULL;
    if (lp->room_mail) {
        lp->room_mail = 0;
        lp->room_freed = 1;
    }
    pthread_mutex_unlock(&lp->mu);
    while (ec) {
        struct evconn *next = ec->done_next;
        job_finished(ec);
        ec = next;
    }
}

/* The pool has room again: hand out, in turn, the frames and connections
 * that waited for it, until it is full again. Between batches of events,
 * never inside one: a connection handed out there could still have an
 * event further on in the batch (and a stream one may be gone by then). */
static void retry_waiting(struct tc_loop *lp)
{
    if (!lp->room_freed)
        return;
    lp->room_freed = 0;
    while (lp->waiting) {
        struct evconn *w = lp->waiting;
        lp->waiting = w->wait_next;
        if (!lp->waiting)
            lp->waiting_tail = &lp->waiting;
        w->waiting = 0;
        if (w->stream) {
            if (dispatch_stream(w))
                break; /* still full */
            continue;
        }
        dispatch_serve(w);
        if (w->waiting)
            break; /* still full */
    }
}

void tc__loops_room(tc_server *srv)
{
    if (srv->dgram) { /* a datagram server's pool is fed by dgram.c */
        tc__dgram_room(srv);
        return;
    }
    struct state *st = srv->mode_state;
    for (int i = 0; i < st->nloops; i++) {
        struct tc_loop *lp = &st->loops[i];
        pthread_mutex_lock(&lp->mu);
        lp->room_mail = 1;
        pthread_mutex_unlock(&lp->mu);
        tc__wake(lp->mailfd);
    }
}

/* Run on_message for every complete frame buffered, unless paused. */
static void process_input(struct evconn *ec)
{
    tc_server *srv = ec->loop->srv;
    tc_conn *c = ec->conn;
    const void *msg;
    size_t len;
    while (!ec->closed && !ec->paused && !ec->lingering && !ec->held) {
        int rc = tc__chan_frame(c, &msg, &len);
        if (rc == 0) {
            if (c->b->rlen > 0 && !ec->frame_from && srv->cfg.conn_timeout_ms > 0) {
                ec->frame_from = tc__now_ns(); /* the frame's clock starts */
                schedule_idle(ec);
            }
            break;
        }
        if (rc < 0) {
            ev_close_after_flush(ec, rc, TC__REPORT_YES);
            return;
        }
        ec->frame_from = 0;
        if (ec->loop->st->pooled) {
            c->b->rview = 0; /* not taken here: the worker scans it again */
            dispatch_serve(ec);
            return;
        }
        if ((rc = tc__session_message(ec->s, msg, len)) < 0) {
            ev_close_after_flush(ec, rc, TC__REPORT_YES);
            return;
        }
        if (tc__chan_pending(c) > ec->loop->hwm)
            ec->paused = 1; /* backpressure: read again once it drains */
    }
    if (ec->paused || ec->held)
        ec->frame_from = 0; /* we stopped reading: not the peer's delay */
    if (ec->closed || ec->lingering)
        return;
    if (tc__chan_settle(c) < 0) {
        ev_close(ec, -ENOMEM, TC__REPORT_AUTO);
        return;
    }
    if (c->reof && !ec->held && !ec->eof_kept) { /* held: its frames wait for resume */
        /* The peer finished sending; a frame cut short was caught above.
         * on_eof may keep the connection open for sending (a relay). */
        int rc = ev_eof(ec);
        if (rc <= 0) {
            ev_close_after_flush(ec, rc, rc < 0 ? TC__REPORT_YES : TC__REPORT_NO);
            return;
        }
    }
    /* Buffered replies (tc_conn_write) go out now, not a poll turn later. */
    if (tc__chan_pending(c) && tc__chan_flush_nb(c) < 0) {
        ev_close(ec, c->werr, TC__REPORT_AUTO);
        return;
    }
    set_interest(ec);
}

static void proxy_done(struct evconn *ec, int rc, const tc__proxy_hdr *hdr);
static void upgrade_step(struct evconn *ec);
static int secure_start(struct evconn *ec);

static void secure_step(struct evconn *ec);

/* One receive for ec: the bytes its event brought (a backend that
 * receives for the loop), or a recv into the loop's scratch buffer. */
static ssize_t ev_fill(struct tc_loop *lp, struct evconn *ec)
{
    tc__ev *rx = lp->rx;
    if (!rx || !rx->recv)
        return tc__chan_fill_scratch(ec->conn, lp->scratch, SCRATCH_SIZE);
    lp->rx = NULL;
    if (ec->lingering)
        return -EAGAIN; /* nothing reads the input any more (the receive is being cancelled) */
    if (rx->res == 0)
        return tc__chan_filled(ec->conn, 0);
    if (rx->res < 0)
        return rx->res;
    return tc__chan_feed(ec->conn, rx->data, (size_t)rx->res);
}

/* The loop is done with an event: the bytes it lent go back to the backend
 * (what the channel still needs of them moves into its own buffer first). */
static void ev_release(struct tc_loop *lp, struct evconn *ec, tc__ev *e)
{
    lp->rx = NULL;
    if (e->buf < 0 && !e->data)
        return;
    if (ec && !gone(ec) && ec->conn->b->rborrowed && ec->conn->b->rbuf == e->data)
        (void)tc__chan_settle(ec->conn);
    lp->rx = NULL;
    lp->be->release(lp->evb, e);
}

static void on_readable(struct evconn *ec)
{
    struct tc_loop *lp = ec->loop;
    if (ec->secure_wait) {
        secure_step(ec);
        return;
    }
    if (ec->eof_kept) { /* not read any more: a hang-up (both ways shut, or a reset) */
        ev_close_after_flush(ec, 0, TC__REPORT_NO);
        return;
    }
    if (ec->stream && !ec->proxy_wait) {
        (void)dispatch_stream(ec); /* its handler reads for itself */
        return;
    }
    if (ec->slot != PSLOT_NONE && !ec->proxy_wait && !ec->upgrade_wait) {
        dispatch_serve(ec); /* a worker receives */
        return;
    }
    ssize_t r = ev_fill(lp, ec);
    if (r == -EAGAIN) {
        if (ec->conn->xwant == TC_TRANSPORT_WANT_WRITE)
            set_interest(ec); /* a TLS read that must write first */
        return;
    }
    if (r < 0 && r != TC_EOF) {
        ev_close(ec, (int)r, TC__REPORT_AUTO);
        return;
    }
    if (ec->proxy_wait) {
        tc__proxy_hdr hdr;
        int rc = tc__chan_proxy(ec->conn, &hdr);
        if (rc == TC__PROXY_MORE) {
            (void)tc__chan_settle(ec->conn); /* the scratch buffer is shared */
            return;
        }
        proxy_done(ec, rc, &hdr);
        return;
    }
    if (ec->upgrade_wait) {
        upgrade_step(ec);
        return;
    }
    restart_idle(ec);
    process_input(ec);
    /* process_input may have set it (a WebSocket closing); not while a
     * worker has the connection (its handler may be setting it). */
    if (!ec->closed && !ec->away && ec->conn && ec->conn->deadline != TC__NO_DEADLINE)
        schedule_idle(ec);
    /* Input a transport (TLS) decrypted and holds: the socket will not announce it. */
    if (!ec->closed && !ec->away && !ec->unwatched && !ec->paused && !ec->lingering &&
        ec->conn && tc__chan_io_pending(ec->conn))
        on_readable(ec);
}

/* on_writable's flush: the socket can take more (epoll), or (io_uring) a
 * send of the queue completed: its buffer is freed, and what was queued
 * meanwhile goes next. 0 all out, 1 some left, or an error. */
static int ev_flush(struct evconn *ec)
{
    struct tc_loop *lp = ec->loop;
    tc_conn *c = ec->conn;
    tc__ev *e = lp->rx;
    if (!e || !e->send)
        return tc__chan_flush_nb(c);
    lp->rx = NULL;
    unsigned char *done = e->data; /* NULL: a loan's send (lend_send) */
    e->data = NULL;
    if (e->res < 0) {
        c->b->wflight = 0;
        free(done);
        return c->werr = e->res;
    }
    struct tc__chanbuf *cb = c->b;
    cb->wflight -= (size_t)e->res < cb->wflight ? (size_t)e->res : cb->wflight;
    if (cb->wlen > cb->woff) {
        int rc = async_flush(ec);
        if (rc == 0 && !cb->wbuf && done) {
            /* Streaming: the two buffers take turns (no allocation, no
             * page faults, per send); an idle channel keeps neither. */
            c->b->wbuf = done;
            c->b->wcap = e->cap;
            done = NULL;
        }
        free(done);
        return rc < 0 ? rc : 1;
    }
    free(done);
    if (cb->wflight)
        return 1;
    tc__chan_trim(c, 0);
    return 0;
}

static void on_writable(struct evconn *ec)
{
    if (ec->secure_wait) {
        secure_step(ec);
        return;
    }
    int rc = ev_flush(ec);
    if (rc < 0) {
        ev_close(ec, rc, TC__REPORT_AUTO);
        return;
    }
    if (rc == 0 && ec->lingering) {
        ev_close(ec, ec->linger_reason, ec->linger_report);
        return;
    }
    if (ec->above && !ec->lingering && tc__chan_pending(ec->conn) < ec->loop->lwm) {
        ec->above = 0; /* flow control: the handler may send more */
        if ((rc = tc__session_drain(ec->s)) < 0) {
            ev_close_after_flush(ec, rc, TC__REPORT_YES);
            return;
        }
    }
    if (ec->paused && tc__chan_pending(ec->conn) < ec->loop->lwm) {
        ec->paused = 0;
        process_input(ec); /* frames that waited in the buffer */
        return;
    }
    if (ec->conn->xwant == TC_TRANSPORT_WANT_WRITE) {
        on_readable(ec); /* a TLS read waited for this */
        return;
    }
    set_interest(ec);
}

/* setup, then on_open: the connection is the handler's from here on. */
static void ev_start(struct evconn *ec)
{
    if (ec->stream) {
        /* Parked until it says something, counting silence from the
         * accept as a queue would: the per-operation timeout. */
        int ms = ec->loop->srv->cfg.conn_timeout_ms;
        if (ms > 0)
            (void)tc__theap_schedule(&ec->loop->timers, &ec->idle.t,
                                     ec->s->idle_since + (int64_t)ms * TC_NS_PER_MS);
        if (ec->conn->b->rlen > 0 || tc__chan_io_pending(ec->conn)) /* bytes came already */
            (void)dispatch_stream(ec);
        return;
    }
    if (ec->conn->proto && !ec->upgraded) {
        /* The protocol's opening step first, within its timeout. */
        ec->upgrade_wait = 1;
        (void)tc__theap_schedule(&ec->loop->timers, &ec->idle.t,
                                 tc__deadline_ms(ec->conn->proto->open_timeout_ms(ec->conn)));
        if (ec->conn->b->rlen > 0) /* bytes came behind a PROXY header */
            upgrade_step(ec);
        return;
    }
    if (tc__session_open(ec->s) < 0) {
        ev_close(ec, 0, TC__REPORT_NO); /* reported; finish if setup ran */
        return;
    }
    /* The first silence counts from the accept (a mailbox or a PROXY
     * header before this is not the handler's doing, but is silence). */
    ec->idle_from = ec->s->idle_since ? ec->s->idle_since : tc__now_ns();
    schedule_idle(ec);
    if (ec->loop->st->pooled && (ec->conn->b->rlen > 0 || tc__chan_io_pending(ec->conn)))
        dispatch_serve(ec); /* bytes came already (a PROXY header, a handshake): not in the socket */
    else
        set_interest(ec); /* in pool mode, a worker's from here on */
}

/* The PROXY header, or what stands instead (rc as tc__chan_proxy gives
 * it); on success the handler starts and the bytes after the header become
 * its first input. */
static void proxy_done(struct evconn *ec, int rc, const tc__proxy_hdr *hdr)
{
    tc__theap_cancel(&ec->loop->timers, &ec->idle.t);
    ec->proxy_wait = 0;
    if (tc__session_proxy(ec->s, rc, hdr) != 0) {
        ev_close(ec, 0, TC__REPORT_NO);
        return;
    }
    if (secure_start(ec))
        return;
    int stream = ec->stream, pooled = ec->loop->st->pooled;
    ev_start(ec);
    if (!stream && !pooled && !ec->closed)
        process_input(ec);
}

/* One step of the transport's handshake; once done, as after the PROXY
 * header (bytes that came with its end are read at once: the transport
 * holds them, and the socket will not announce them). */
static void secure_step(struct evconn *ec)
{
    int rc = tc__session_secure_step(ec->s);
    if (rc == 0) {
        set_interest(ec);
        return;
    }
    tc__theap_cancel(&ec->loop->timers, &ec->idle.t);
    ec->secure_wait = 0;
    if (rc < 0) {
        ev_close(ec, rc, TC__REPORT_NO); /* logged, the handler never saw it */
        return;
    }
    int stream = ec->stream, pooled = ec->loop->st->pooled;
    ev_start(ec);
    if (!stream && !pooled && !ec->closed)
        on_readable(ec);
}

/* With a transport (TLS), its handshake comes before setup, within its own
 * timeout: 1 if it has begun (or the connection ended), 0 without one. */
static int secure_start(struct evconn *ec)
{
    tc_server *srv = ec->loop->srv;
    if (!srv->cfg.transport)
        return 0;
    int rc = tc__session_secure_begin(ec->s);
    (void)tc__chan_settle(ec->conn); /* the scratch buffer (now empty) goes back */
    if (rc < 0) {
        ev_close(ec, 0, TC__REPORT_NO);
        return 1;
    }
    ec->secure_wait = 1;
    (void)tc__theap_schedule(&ec->loop->timers, &ec->idle.t,
                             tc__xport_deadline(srv->cfg.transport));
    secure_step(ec);
    return 1;
}

/* The opening step over what came; once done, the handler starts and the
 * bytes after the request are its first input. */
static void upgrade_step(struct evconn *ec)
{
    int rc = tc__session_upgrade(ec->s);
    if (rc == 0) {
        (void)tc__chan_settle(ec->conn); /* the scratch buffer is shared */
        return;
    }
    tc__theap_cancel(&ec->loop->timers, &ec->idle.t);
    ec->upgrade_wait = 0;
    if (rc < 0) {
        ev_close_after_flush(ec, rc, TC__REPORT_NO); /* its response goes out first */
        return;
    }
    ec->upgraded = 1;
    int pooled = ec->loop->st->pooled;
    ev_start(ec); /* in pool mode it may be a worker's from here */
    if (!pooled && !ec->closed)
        process_input(ec);
}

static const tc__driver ev_driver;

/* Take a connection into this loop: register, then the PROXY header or setup and on_open. */
static void ev_open(struct tc_loop *lp, tc__session *s)
{
    tc_server *srv = lp->srv;
    tc_conn *c = s->conn;
    struct evconn *ec = (struct evconn *)s->room;
    ec->s = s;
    ec->conn = c;
    ec->loop = lp;
    ec->idle = (struct etimer){.t = {.slot = TC__TIMER_IDLE, .tag = TIMER_IDLE}};
    ec->user = (struct etimer){.t = {.slot = TC__TIMER_IDLE, .tag = TIMER_USER}};
    atomic_init(&ec->mail_bytes, 0);
    atomic_init(&ec->out_queued, 0);
    c->drv = &ev_driver;
    c->drv_data = ec;
    c->wasync = lp->be->send != NULL; /* io_uring: the loop submits each turn's output */
    if (lp->st->pooled)
        ec->deferred_tail = &ec->deferred;
    ec->stream = tc__session_handler(s)->handle != NULL;
    ec->slot = PSLOT_NONE;
    TC__LIST_PUSH(lp->conns, ec);
    lp->nconns++;
    /* A message-style connection can be reached by id from other threads. */
    int rc = ec->stream ? 0 : id_add(lp, ec);
    /* A pool's message-style connection waits in the ready set, from the
     * end of on_open: a slot, and the loop's poller only for what comes
     * first (a PROXY header, a protocol's opening step). */
    int parks = lp->st->pooled && !ec->stream;
    if (rc == 0 && parks)
        rc = slot_new(lp->st, ec);
    if (rc == 0 &&
        (!parks || srv->cfg.proxy_protocol != TC_PROXY_OFF || c->proto || srv->cfg.transport)) {
        if ((rc = lp->be->add(lp->evb, c->fd, CONN_IN, ec)) == 0) {
            ec->registered = 1;
            ec->interest = CONN_IN;
        }
    }
    if (rc < 0) {
        tc__report(srv, c, rc);
        ev_close(ec, rc, TC__REPORT_NO);
        return;
    }
    /* Room for every connection's two timers now: arming one later (an idle
     * clock restarting, a frame starting) can then never fail for memory. */
    if ((rc = tc__theap_reserve(&lp->timers, 2 * (size_t)lp->nconns + lp->n_own_timers)) < 0) {
        tc__report(srv, c, rc);
        ev_close(ec, rc, TC__REPORT_NO);
        return;
    }
    if (srv->cfg.proxy_protocol != TC_PROXY_OFF && !s->proxy_done) {
        /* The header comes first; setup and on_open wait for it. */
        if (tc__session_proxy_precheck(s) < 0) {
            ev_close(ec, 0, TC__REPORT_NO);
            return;
        }
        ec->proxy_wait = 1;
        (void)tc__theap_schedule(&lp->timers, &ec->idle.t,
                                 tc__deadline_ms(srv->cfg.proxy_timeout_ms));
        return;
    }
    if (!secure_start(ec))
        ev_start(ec);
}

static void post(struct tc_loop *lp, struct mail *m)
{
    m->next = NULL;
    pthread_mutex_lock(&lp->mu);
    *lp->mail_tail = m;
    lp->mail_tail = &m->next;
    pthread_mutex_unlock(&lp->mu);
    tc__wake(lp->mailfd);
}

static void defer_mail(struct evconn *ec, void *arg)
{
    struct mail *m = arg;
    m->next = NULL;
    *ec->deferred_tail = m;
    ec->deferred_tail = &m->next;
}

/* Keep a send from another thread for later if a worker has the
 * connection: 1 if kept (the worker looks at the deferred mail, under the
 * same lock, before it parks the connection again). 0: the loop has it. */
static int defer_if_away(struct mail *m)
{
    return !claim_or(m->ec, defer_mail, m);
}

/* post(), unless the loop has ended (the caller keeps m then): 0 or TC_ESHUTDOWN. */
static int post_unless_ended(struct tc_loop *lp, struct mail *m)
{
    m->next = NULL;
    pthread_mutex_lock(&lp->mu);
    int ended = lp->ended;
    if (!ended) {
        *lp->mail_tail = m;
        lp->mail_tail = &m->next;
    }
    pthread_mutex_unlock(&lp->mu);
    if (ended)
        return TC_ESHUTDOWN;
    tc__wake(lp->mailfd);
    return 0;
}

/* Carry out mail for ec, which the loop has (claimed if it was away): a
 * send from another thread (framed already, or by id: framed here), or a
 * close by id. A connection closing takes no more. */
static void deliver(struct evconn *ec, struct mail *m)
{
    tc_conn *c = ec->conn;
    if (!m->close)
        atomic_fetch_sub(&ec->mail_bytes, m->len);
    if (ec->lingering)
        return;
    if (m->close) {
        ev_close_after_flush(ec, TC_ECLOSED, TC__REPORT_NO);
    } else if (m->id) {
        /* As tc_server_broadcast: a codec's refusal drops the message, a
         * broken socket ends the connection. Not before on_open. */
        if (!ec->proxy_wait && !ec->upgrade_wait && ec->s->opened &&
            tc_conn_send(c, m->data, m->len) < 0 && c->werr)
            ev_close(ec, c->werr, TC__REPORT_AUTO);
    } else {
        struct iovec v1 = {m->data, m->len};
        if (tc__chan_send_nb(c, &v1, 1, m->len, NULL) < 0)
            ev_close(ec, c->werr, TC__REPORT_AUTO);
    }
}

static void read_mail(struct tc_loop *lp)
{
    tc__wake_drain(lp->mailfd);
    pthread_mutex_lock(&lp->mu);
    struct mail *m = lp->mail;
    lp->mail = NULL;
    lp->mail_tail = &lp->mail;
    pthread_mutex_unlock(&lp->mu);
    while (m) {
        struct mail *next = m->next;
        if (m->fn) {
            m->fn(lp, m->arg);
        } else if (m->newsess) {
            ev_open(lp, m->newsess);
        } else if (m->id && !(m->ec = id_find(lp, m->id))) {
            /* Closed since it was posted: nothing to do. */
        } else if (defer_if_away(m)) {
            /* Its worker owns the channel: done when the worker is done. */
            m = next;
            continue;
        } else if (!m->ec->closed) {
            deliver(m->ec, m);
            if (!m->ec->closed)
                set_interest(m->ec);
        }
        free(m);
        m = next;
    }
    take_done(lp);
}

/* ---- the driver: a channel an event loop runs ------------------------------ */

/* After a send by whoever has the connection: the queue as other threads
 * see it (tc_conn_pending, the mailbox's bound), and whether it passed the
 * high-water mark (on_drain is owed once it falls below the low one, even
 * if a flush brings it down before the loop looks). */
static void note_queued(struct evconn *ec)
{
    mark_dirty(ec);
    size_t pending = tc__chan_pending(ec->conn);
    atomic_store_explicit(&ec->out_queued, pending, memory_order_relaxed);
    if (pending > ec->loop->hwm)
        ec->above = 1;
}

static ssize_t ev_send(tc_conn *c, const struct iovec *vec, int cnt, size_t total)
{
    struct evconn *ec = c->drv_data;
    if (tl_job == ec) { /* its worker, which owns it now: straight to the socket */
        size_t taken;
        ssize_t r = tc__chan_send_nb(c, vec, cnt, total, &taken);
        tc__chan_set_sent(c, taken);
        note_queued(ec);
        return r;
    }
    if (pthread_equal(pthread_self(), ec->loop->tid) && !ec->closed) {
        int was_away = ec->away;
        if (claim(ec, NULL)) { /* the loop has it (or took it back from the ready set) */
            size_t taken = total;
            ssize_t r = lend_send(ec, vec, cnt, total) ? (ssize_t)total
                                                       : tc__chan_send_nb(c, vec, cnt, total, &taken);
            tc__chan_set_sent(c, taken);
            note_queued(ec);
            if (was_away || (r >= 0 && tc__chan_pending(c) && !(ec->interest & TC__POLL_OUT)))
                set_interest(ec); /* taken back: it must go back too */
            return r;
        }
    }
    /* Another thread: copy the bytes into the loop's mailbox, within bounds
     * (a queue that is never read must not grow without end). All or none. */
    tc__chan_set_sent(c, 0);
    size_t queued = atomic_load(&ec->mail_bytes) +
                    atomic_load_explicit(&ec->out_queued, memory_order_relaxed);
    if (queued >= ec->loop->hwm)
        return -EAGAIN;
    if (total > SIZE_MAX - sizeof(struct mail))
        return -EINVAL;
    struct mail *m = malloc(sizeof *m + total);
    if (!m)
        return -ENOMEM;
    m->fn = NULL;
    m->ec = ec;
    m->newsess = NULL;
    m->id = 0;
    m->close = 0;
    m->len = total;
    size_t off = 0;
    for (int i = 0; i < cnt; i++) {
        memcpy(m->data + off, vec[i].iov_base, vec[i].iov_len);
        off += vec[i].iov_len;
    }
    atomic_fetch_add(&ec->mail_bytes, total);
    tc__chan_set_sent(c, total); /* before post: after it the loop may close c */
    post(ec->loop, m);
    return (ssize_t)total;
}

static int ev_shutdown_write(tc_conn *c)
{
    struct evconn *ec = c->drv_data;
    /* The loop thread, or the worker that owns the connection now (the loop
     * reads shut_wr when it takes it back). */
    int taken_back = 0;
    if (tl_job != ec) {
        if (!pthread_equal(pthread_self(), ec->loop->tid))
            return -EPERM;
        taken_back = ec->away;
        if (!claim(ec, NULL))
            return -EAGAIN; /* pool mode: a worker has it now */
    }
    int rc = 0;
    if (tc__chan_pending(c) == 0)
        rc = c->io->shutdown_write(c);
    else
        ec->shut_wr = 1;
    if (taken_back)
        set_interest(ec);
    return rc;
}

static int ev_set_timer(tc_conn *c, int delay_ms, int interval_ms)
{
    struct evconn *ec = c->drv_data;
    if (tl_job == ec) {
        /* The worker running on_message: the heap is the loop's, so the
         * request waits in the record until the loop takes it back. */
        if (!tc__session_handler(ec->s)->on_timer)
            return TC_EBADCONFIG;
        ec->timer_req = 1;
        ec->timer_when = delay_ms ? tc__deadline_ms(delay_ms) : 0;
        ec->timer_interval_ms = interval_ms;
        return 0;
    }
    if (!pthread_equal(pthread_self(), ec->loop->tid))
        return -EPERM;
    if (!tc__session_handler(ec->s)->on_timer)
        return TC_EBADCONFIG;
    if (delay_ms == 0) {
        tc__theap_cancel(&ec->loop->timers, &ec->user.t);
        return 0;
    }
    ec->interval_ms = interval_ms;
    return tc__theap_schedule(&ec->loop->timers, &ec->user.t, tc__deadline_ms(delay_ms));
}

/* Queued output and the other threads' sends not taken yet: exact from the
 * thread that has the channel, as the loop last saw it from the others. */
static size_t ev_pending(const tc_conn *c)
{
    struct evconn *ec = c->drv_data;
    size_t mail = atomic_load(&ec->mail_bytes);
    if (tl_job == ec || (pthread_equal(pthread_self(), ec->loop->tid) && !ec->away))
        return tc__chan_pending(c) + mail;
    return atomic_load_explicit(&ec->out_queued, memory_order_relaxed) + mail;
}

/* Reads, waits and sendfile are absent: the loop reads for the handler,
 * and nothing may block it. */
static const tc__driver ev_driver = {
    .name = "event",
    .send = ev_send,
    .shutdown_write = ev_shutdown_write,
    .set_timer = ev_set_timer,
    .pending = ev_pending,
};

static void fire_timers(struct tc_loop *lp)
{
    int64_t now = tc__now_ns();
    tc__timer *t;
    while ((t = tc__theap_next(&lp->timers)) && t->when <= now) {
        struct etimer *et = (struct etimer *)t;
        struct evconn *ec = etimer_ec(et);
        tc__theap_cancel(&lp->timers, t);
        if (et->t.tag == TIMER_LOOP) {
            struct tc_loop_timer *lt = (struct tc_loop_timer *)et;
            if (lt->interval_ms > 0) /* first: fn may stop (free) it */
                (void)tc__theap_schedule(&lp->timers, t,
                                         t->when + (int64_t)lt->interval_ms * TC_NS_PER_MS);
            lt->fn(lp, lt->arg);
            continue;
        }
        if (et->t.tag == TIMER_IDLE && ec->connecting) {
            ev_close(ec, -ETIMEDOUT, TC__REPORT_NO); /* the connect's timeout */
            continue;
        }
        if (et->t.tag == TIMER_IDLE && ec->proxy_wait) {
            tc__proxy_hdr hdr = {.why = "no complete header in time"};
            proxy_done(ec, -ETIMEDOUT, &hdr);
            continue;
        }
        if (et->t.tag == TIMER_IDLE && ec->secure_wait) {
            tc__session_secure_late(ec->s);
            ev_close(ec, -ETIMEDOUT, TC__REPORT_NO); /* no handshake in time */
            continue;
        }
        if (et->t.tag == TIMER_IDLE && ec->upgrade_wait) {
            ev_close(ec, -ETIMEDOUT, TC__REPORT_NO); /* no request in time */
            continue;
        }
        if (et->t.tag == TIMER_IDLE && ec->stream) {
            /* Parked for the pool and silent for its whole timeout: closed
             * without a worker, as a queue would. */
            ev_close(ec, -ETIMEDOUT, TC__REPORT_YES);
            continue;
        }
        if (et->t.tag == TIMER_IDLE) {
            /* Not idle while a worker has it or it waits for one, nor while
             * a reply is still going out (the peer may be reading it
             * slowly), as the other modes wait for the next message only
             * after flushing: look again later, by when the clock will have
             * restarted (a worker that parks it restarts it without the
             * loop). A parked one is taken back to look, and goes back. */
            const tc_server_config *cfg = &lp->srv->cfg;
            int ms = cfg->idle_timeout_ms > 0 ? cfg->idle_timeout_ms : cfg->conn_timeout_ms;
            int was_away = ec->away;
            if (!claim(ec, NULL) || ec->waiting) {
                if (ms <= 0 || (ec->conn->proto && ms > 100))
                    ms = 100; /* a protocol's wake-up may come sooner */
                (void)tc__theap_schedule(&lp->timers, t, now + (int64_t)ms * TC_NS_PER_MS);
                continue;
            }
            if (ec->conn->proto && ec->conn->proto->wake_at(ec->conn) <= now) {
                /* Its protocol's turn (a keepalive ping, or no answer to one). */
                int rc = ec->conn->proto->wake(ec->conn);
                int f = rc == 0 ? tc__chan_flush_nb(ec->conn) : 0;
                if (f < 0)
                    rc = f;
                if (rc < 0) {
                    ev_close(ec, rc, TC__REPORT_AUTO);
                    continue;
                }
                schedule_idle(ec);
                set_interest(ec); /* in pool mode, possibly a worker's from here */
                continue;
            }
            if (tc__chan_pending(ec->conn) > 0 || ec->held) {
                (void)tc__theap_schedule(&lp->timers, t, now + (int64_t)ms * TC_NS_PER_MS);
                if (was_away)
                    set_interest(ec);
                continue;
            }
            int64_t due = idle_due(ec);
            if (due > now) { /* moved on meanwhile: a frame completed, say */
                (void)tc__theap_schedule(&lp->timers, t, due);
                if (was_away)
                    set_interest(ec);
                continue;
            }
            /* Silence inside a frame is an error; between frames it is not. */
            ev_close(ec, -ETIMEDOUT, ec->conn->b->rlen > 0 ? TC__REPORT_YES : TC__REPORT_NO);
            continue;
        }
        if (ec->interval_ms > 0)
            (void)tc__theap_schedule(&lp->timers, t,
                                     t->when + (int64_t)ec->interval_ms * TC_NS_PER_MS);
        if (!claim(ec, &ec->timer_due))
            continue; /* on_timer runs when the worker is done */
        int rc = tc__session_timer(ec->s);
        if (rc < 0)
            ev_close_after_flush(ec, rc, TC__REPORT_YES);
        else if (!ec->closed)
            set_interest(ec);
    }
}

/* Loop 0: a connection accepted goes to the next loop in turn. */
static void deal(struct tc_loop *lp, tc__session *c)
{
    struct state *st = lp->st;
    struct tc_loop *to = &st->loops[st->next++ % (unsigned)st->nloops];
    if (to == lp) {
        ev_open(lp, c);
        return;
    }
    struct mail *m = malloc(sizeof *m);
    if (!m) {
        tc__report(lp->srv, c->conn, -ENOMEM);
        tc__server_session_done(c);
        return;
    }
    m->fn = NULL;
    m->ec = NULL;
    m->newsess = c;
    m->id = 0;
    m->close = 0;
    m->len = 0;
    post(to, m);
}

/* Loop 0: one accept4 from listener li, its connection dealt out: 0,
 * -EAGAIN (nobody was waiting), or an error (logged). */
static int accept_one(struct tc_loop *lp, int li)
{
    tc__session *c;
    int rc = tc__server_accept_from(lp->srv, li, &c);
    if (rc < 0 && rc != -EAGAIN)
        tc__log(lp->srv, TC_LOG_WARN, "accept: %s", tc_strerror(rc));
    if (rc == 0 && c) {
        lp->st->ring_starved = 0; /* descriptors are back */
        deal(lp, c);
    }
    return rc;
}

/* Loop 0: take what listener li has, while the connection limit allows. */
static void accept_batch(struct tc_loop *lp, int li)
{
    tc_server *srv = lp->srv;
    /* The listener's event can come in the same batch as the shutdown's
     * (even after it): once a shutdown is asked for, nothing more is
     * accepted, and nothing is dealt to loops that may have finished. */
    if (atomic_load(&srv->shutdown_req) || atomic_load(&lp->draining))
        return;
    for (int i = 0; i < ACCEPT_BATCH && tc__server_may_accept(srv); i++)
        if (accept_one(lp, li) < 0)
            break;
}

/* Loop 0: an accept request of listener li completed (ring accepts). It
 * was made within the room max_conns left, so what it took is served
 * unless a shutdown came first. A shortage of descriptors or memory is
 * left to one accept4 (the request's share of the room), which frees the
 * spare descriptor, drops a client and pauses as on epoll; an error that
 * says the kernel cannot accept this way turns the requests off for good. */
static void accept_done(struct tc_loop *lp, int li, const tc__ev *ev)
{
    tc_server *srv = lp->srv;
    int rc = ev->res;
    if (atomic_load(&srv->shutdown_req) || atomic_load(&lp->draining)) {
        if (rc >= 0)
            tc__close(rc);
        return;
    }
    if (rc >= 0) {
        tc_addr peer;
        tc__session *c;
        /* as tc__sock_accept (an unnamed unix peer has no more than a family) */
        (void)tc_addr_from_sockaddr(&peer, (const struct sockaddr *)ev->data, (socklen_t)ev->cap);
        (void)tc__server_take(srv, li, rc, &peer, &c);
        if (c)
            deal(lp, c);
        return;
    }
    switch (rc) {
    case -EMFILE:
    case -ENFILE:
    case -ENOBUFS:
    case -ENOMEM:
        /* Linux looks for a descriptor before it looks at the queue: a
         * request made again would fail at once, with nobody waiting, and
         * the loop would spin. The listener is polled instead, as on epoll,
         * until a connection is taken. */
        lp->st->ring_starved = 1;
        (void)accept_one(lp, li);
        return;
    case -EAGAIN:
    case -EINTR:
    case -ECONNABORTED:
    case -EPROTO:
    case -EPERM:
        return; /* that client is gone; the request is made again */
    default:
        tc__log(srv, TC_LOG_WARN, "accept: %s; accepting with accept4 from now on",
                tc_strerror(rc));
        lp->st->ring_accept = 0;
        lp->st->ring_n = -1; /* update_listener tells the backend */
    }
}

/* Loop 0: the accept requests each listener keeps in flight (0: polled),
 * given the room for connections. Together they never exceed the room
 * max_conns leaves (each completion lowers both) nor the backend's slots,
 * and every listener gets as many: when the room is smaller than the
 * number of listeners, all are polled, and accept4 takes connections one
 * by one under the limit. */
static int ring_share(struct tc_loop *lp, int room)
{
    int nl = lp->srv->nlisteners, most;
    if (!lp->st->ring_accept || lp->st->ring_starved || nl <= 0)
        return 0;
    most = TC__ACCEPT_SLOTS / nl;
    if (most > ACCEPT_RING)
        most = ACCEPT_RING;
    return (room < most * nl ? room : most * nl) / nl;
}

/* Loop 0: poll the listeners (or keep accept requests on them) only while
 * accepting is allowed. */
static void update_listener(struct tc_loop *lp)
{
    tc_server *srv = lp->srv;
    struct state *st = lp->st;
    int room = atomic_load(&lp->draining) ? 0 : tc__server_room(srv, INT_MAX);
    int want = room > 0, n = want ? ring_share(lp, room) : 0;
    if (want == st->listening && n == st->ring_n)
        return;
    for (int i = 0; i < srv->nlisteners; i++) {
        tc__listener *l = &srv->listeners[i];
        if (want && !st->listening)
            (void)lp->be->add(lp->evb, l->fd, TC__POLL_IN, tag_make(l, TAG_LISTENER));
        else if (!want && st->listening)
            (void)lp->be->del(lp->evb, l->fd); /* and its requests */
        if (want && lp->be->accept && (st->ring_accept || st->ring_n) &&
            lp->be->accept(lp->evb, l->fd, n) < 0) {
            st->ring_accept = 0; /* polled from now on */
            n = 0;
        }
    }
    st->listening = want;
    st->ring_n = n;
}

/* Loop 0, on shutdown: stop accepting and tell every loop to drain. */
static void start_drain(struct tc_loop *lp)
{
    tc_server *srv = lp->srv;
    struct state *st = lp->st;
    int ms = srv->cfg.drain_timeout_ms;
    int64_t deadline = ms < 0 ? tc__now_ns() : tc__deadline_ms(ms);
    for (int i = 0; i < st->nloops; i++) {
        struct tc_loop *o = &st->loops[i];
        o->drain_deadline = deadline; /* published by the atomic store below */
        atomic_store(&o->draining, 1);
        tc__wake(o->mailfd);
    }
    update_listener(lp);
}

/* Take ec back if the loop let it go and no worker has it: 0 (the loop
 * has it), or 1 when a worker does; then, if cut is set, its socket is shut
 * so that its sends fail at once, and it will be handed back rather than
 * parked (the loop closes it then). */
static void cut_socket(struct evconn *ec, void *arg)
{
    (void)arg;
    if (!ec->drain_cut) {
        ec->drain_cut = 1;
        tc__sock_shutdown(ec->conn->fd);
    }
}

static int cut_if_away(struct evconn *ec, int cut)
{
    return !claim_or(ec, cut ? cut_socket : NULL, NULL);
}

/* While draining: close what is idle; at the deadline, close everything. */
static void drain_sweep(struct tc_loop *lp)
{
    int late = tc__now_ns() >= lp->drain_deadline;
    /* What outlives the deadline is with a worker, and the loop wakes when
     * the worker hands it back. */
    lp->drain_past = late;
    for (struct evconn *ec = lp->conns, *next; ec; ec = next) {
        next = ec->next;
        int was_away = ec->away;
        if (cut_if_away(ec, late))
            continue; /* its worker finishes the message first */
        tc_conn *c = ec->conn;
        /* A frame (or a stream connection's first bytes) waiting for a
         * worker is a request in flight, not idleness. */
        int idle = c->b->rlen == 0 && tc__chan_pending(c) == 0 && !ec->waiting;
        if (idle || late)
            ev_close(ec, TC_ESHUTDOWN, TC__REPORT_AUTO);
        else if (was_away)
            set_interest(ec); /* taken back to look: it goes back */
    }
}

/* A watch's events fired: run its callback with those it still wants. */
static void watch_fire(struct tc_watch *w, unsigned pev)
{
    unsigned got = ((pev & TC__POLL_IN) ? TC_WATCH_READ : 0u) |
                   ((pev & TC__POLL_OUT) ? TC_WATCH_WRITE : 0u);
    got &= w->events; /* stopped or changed earlier in the batch */
    if (!w->stopped && got)
        w->cb(w, w->fd, got, w->ctx);
}

static void free_dead(struct tc_loop *lp)
{
    while (lp->dead_watches) { /* stopped this turn: no event of the batch names them now */
        struct tc_watch *w = lp->dead_watches;
        lp->dead_watches = w->dead_next;
        free(w);
    }
    while (lp->dead) {
        struct evconn *ec = lp->dead;
        lp->dead = ec->dead_next;
        free(ec->s); /* the record lives in the session's room */
    }
}

static int next_timeout_ms(struct tc_loop *lp)
{
    int64_t when = TC__NO_DEADLINE;
    tc__timer *t = tc__theap_next(&lp->timers);
    if (t)
        when = t->when;
    if (atomic_load(&lp->draining) && !lp->drain_past && lp->drain_deadline < when)
        when = lp->drain_deadline;
    return tc__ms_until(when);
}

static void run_loop(struct tc_loop *lp)
{
    tc_server *srv = lp->srv;
    tc__ev ev[TC__POLL_BATCH];
    tl_loop = lp;
    tc__chan_spare(1); /* a request costs no allocation of buffer state */
    int rc = lp->be->attach(lp->evb);
    if (rc < 0) {
        tc__log(srv, TC_LOG_ERROR, "event loop %d: %s: %s", lp->idx, lp->be->name,
                tc_strerror(rc));
        (void)tc_server_shutdown(srv);
    }
    while (rc == 0) {
        int timeout = next_timeout_ms(lp);
        if (lp->idx == 0) {
            /* The listener's loop: wake at the end of an accept pause, and
             * at least every poll interval for service_actions. */
            timeout = tc__server_accept_timeout(srv, timeout);
            int every = srv->cfg.poll_interval_ms; /* negative: only for events */
            if (every > 0 && (timeout < 0 || timeout > every))
                timeout = every;
        }
        int n = lp->be->wait(lp->evb, ev, TC__POLL_BATCH, timeout);
        if (n < 0) {
            tc__log(srv, TC_LOG_ERROR, "event loop %d: %s", lp->idx, tc_strerror(n));
            break;
        }
        for (int i = 0; i < n; i++) {
            void *p = ev[i].ptr;
            if (p == &tag_wake) {
                tc__wake_drain(srv->wakefd);
                if (atomic_load(&srv->shutdown_req) && !atomic_load(&lp->draining))
                    start_drain(lp);
            } else if (p == &tag_mail) {
                read_mail(lp);
            } else if (tag_kind(p) == TAG_WATCH) {
                watch_fire(tag_obj(p, TAG_WATCH), ev[i].events);
            } else if (tag_kind(p) == TAG_LISTENER) {
                tc__listener *l = tag_obj(p, TAG_LISTENER);
                if (ev[i].accept)
                    accept_done(lp, (int)(l - srv->listeners), &ev[i]);
                else
                    accept_batch(lp, (int)(l - srv->listeners));
            } else {
                /* In pool mode a connection may have left for the ready
                 * set or a worker earlier in the batch (away): its event
                 * is stale, and the record no longer the loop's to read. */
                struct evconn *ec = p;
                if (gone(ec) || ec->away || ec->unwatched) {
                    ev_release(lp, NULL, &ev[i]);
                    continue;
                }
                if (ec->connecting) {
                    ev_release(lp, NULL, &ev[i]);
                    dial_ready(ec);
                    continue;
                }
                lp->rx = &ev[i];
                if (ev[i].events & TC__POLL_OUT)
                    on_writable(ec); /* may park it or hand it out */
                if (!gone(ec) && !ec->away && !ec->unwatched && (ev[i].events & TC__POLL_IN))
                    on_readable(ec);
                ev_release(lp, ec, &ev[i]);
                lp->rx = NULL;
            }
        }
        retry_waiting(lp);
        fire_timers(lp);
        if (lp->idx == 0) {
            if (atomic_load(&srv->shutdown_req) && !atomic_load(&lp->draining))
                start_drain(lp);
            update_listener(lp);
            if (srv->cfg.hooks.service_actions)
                srv->cfg.hooks.service_actions(srv, srv->cfg.hooks.ctx);
        }
        if (atomic_load(&lp->draining)) {
            read_mail(lp); /* connections dealt just before the drain started */
            retry_waiting(lp);
            drain_sweep(lp);
        }
        flush_dirty(lp);
        free_dead(lp);
        if (atomic_load(&lp->draining) && lp->nconns == 0)
            break;
    }
    /* An error ended the loop early: nothing may outlive it. A connection
     * a worker has is cut, and closed once the worker hands it back. */
    for (;;) {
        int busy = 0;
        for (struct evconn *ec = lp->conns, *next; ec; ec = next) {
            next = ec->next;
            if (!cut_if_away(ec, 1)) {
                ev_close(ec, TC_ESHUTDOWN, TC__REPORT_AUTO);
                continue;
            }
            busy = 1;
        }
        free_dead(lp);
        if (!busy)
            break;
        (void)tc__sock_wait(lp->mailfd, POLLIN, TC__NO_DEADLINE);
        read_mail(lp); /* takes them back (job_done) */
    }
    /* No more posted work; what came before this runs now. */
    pthread_mutex_lock(&lp->mu);
    lp->ended = 1;
    pthread_mutex_unlock(&lp->mu);
    read_mail(lp);
    lp->be->detach(lp->evb);
    tc__chan_spare(0);
    tl_loop = NULL;
}

static void *loop_main(void *arg)
{
    struct tc_loop *lp = arg;
    lp->tid = pthread_self();
    run_loop(lp);
    return NULL;
}

int tc__loops_serve(tc_server *srv)
{
    if (srv->dgram) /* datagrams have a loop of their own (dgram.c) */
        return tc__dgram_serve(srv);
    struct state *st = srv->mode_state;
    struct tc_loop *l0 = &st->loops[0];
    int rc = l0->be->add(l0->evb, srv->wakefd, TC__POLL_IN, &tag_wake);
    if (rc < 0)
        return rc;
    l0->tid = pthread_self();
    for (int i = 0; i < st->nloops; i++) {
        atomic_store(&st->loops[i].draining, 0);
        st->loops[i].drain_past = 0;
        pthread_mutex_lock(&st->loops[i].mu);
        st->loops[i].ended = 0; /* serving again: work may be posted again */
        pthread_mutex_unlock(&st->loops[i].mu);
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, srv->cfg.thread_stack_size);
    int started = 1;
    for (; started < st->nloops; started++) {
        struct tc_loop *lp = &st->loops[started];
        /* Not into lp->tid: the new thread writes that one (it needs it at
         * once), and two unordered writes of it would race. */
        if ((rc = -pthread_create(&lp->thread, &attr, loop_main, lp)) < 0)
            break;
    }
    pthread_attr_destroy(&attr);
    if (rc < 0) {
        tc__log(srv, TC_LOG_ERROR, "event mode: cannot start loop threads: %s",
                       tc_strerror(rc));
        (void)tc_server_shutdown(srv); /* the loops that did start drain at once */
    }
    update_listener(l0);
    run_loop(l0);
    for (int i = 1; i < started; i++)
        pthread_join(st->loops[i].thread, NULL);
    if (st->listening) {
        for (int i = 0; i < srv->nlisteners; i++)
            (void)l0->be->del(l0->evb, srv->listeners[i].fd);
        st->listening = 0;
    }
    (void)l0->be->del(l0->evb, srv->wakefd);
    return rc;
}

static void free_loops(struct state *st)
{
    for (int i = 0; i < st->nloops; i++) {
        struct tc_loop *lp = &st->loops[i];
        if (lp->be)
            lp->be->destroy(lp->evb);
        tc__close(lp->mailfd);
        while (lp->mail) { /* work posted to a server that never served */
            struct mail *m = lp->mail;
            lp->mail = m->next;
            if (m->fn == dial_run)
                dial_drop(m->arg);
            free(m);
        }
        pthread_mutex_destroy(&lp->mu);
        tc__theap_free(&lp->timers);
        while (lp->own_timers) { /* the ones the application never stopped */
            struct tc_loop_timer *lt = lp->own_timers;
            lp->own_timers = lt->next;
            free(lt);
        }
        while (lp->watches) { /* likewise; their descriptors stay the application's */
            struct tc_watch *w = lp->watches;
            lp->watches = w->next;
            free(w);
        }
        while (lp->dead_watches) {
            struct tc_watch *w = lp->dead_watches;
            lp->dead_watches = w->dead_next;
            free(w);
        }
        free(lp->scratch);
        free(lp->ids);
        free(lp->dirty);
    }
    tc__poller_destroy(st->ready);
    if (st->chunks) {
        for (uint32_t i = 0; i < PSLOT_CHUNKS; i++)
            free(atomic_load_explicit(&st->chunks[i], memory_order_relaxed));
        free((void *)st->chunks);
    }
    free(st->loops);
    free(st);
}

static int loops_start_with(tc_server *srv, int nloops, const tc__dispatch *d,
                            const tc__evbackend *be)
{
    struct state *st = calloc(1, sizeof *st);
    if (!st)
        return -ENOMEM;
    st->be = be;
    st->ring_accept = be->accept && srv->cfg.ring_accept != TC_OFF;
    st->nloops = nloops;
    st->slot_free = PSLOT_NONE;
    if (d) {
        st->pooled = 1;
        st->dispatch = *d;
    }
    st->loops = calloc((size_t)st->nloops, sizeof *st->loops);
    if (!st->loops) {
        free(st);
        return -ENOMEM;
    }
    for (int i = 0; i < nloops; i++) {
        st->loops[i].hwm = srv->cfg.send_high_water;
        st->loops[i].lwm = srv->cfg.send_low_water;
    }
    int rc = 0;
    if (d && nloops != 1) {
        rc = -EINVAL; /* the slots are one loop's */
    } else if (d) {
        /* The ready set, and the pool's wake-ups in it: edge-triggered, one
         * worker per write. */
        st->chunks = calloc(PSLOT_CHUNKS, sizeof *st->chunks);
        if (!st->chunks)
            rc = -ENOMEM;
        if (rc == 0)
            rc = tc__poller_create(&st->ready);
        if (rc == 0)
            rc = tc__poller_set_token(st->ready, 1, d->wakefd, TC__POLL_IN | TC__POLL_EDGE,
                                      WAKE_TOKEN);
    }
    for (int i = 0; i < st->nloops; i++) {
        struct tc_loop *lp = &st->loops[i];
        lp->srv = srv;
        lp->st = st;
        lp->idx = i;
        lp->mailfd = -1;
        lp->mail_tail = &lp->mail;
        lp->waiting_tail = &lp->waiting;
        pthread_mutex_init(&lp->mu, NULL);
        atomic_init(&lp->draining, 0);
        lp->mailfd = -1;
        if (rc == 0)
            rc = (lp->be = st->be)->create(&lp->evb);
        if (rc == 0)
            rc = tc__wake_open(&lp->mailfd);
        if (rc == 0 && !(lp->scratch = malloc(SCRATCH_SIZE)))
            rc = -ENOMEM;
        if (rc == 0)
            rc = lp->be->add(lp->evb, lp->mailfd, TC__POLL_IN, &tag_mail);
    }
    if (rc < 0) {
        free_loops(st);
        return rc;
    }
    srv->mode_state = st;
    srv->session_room = st->pooled ? sizeof(struct evconn) : EVCONN_EVENT_SIZE;
    return 0;
}

int tc__loops_start(tc_server *srv, int nloops, const tc__dispatch *d)
{
    /* Pool mode's workers wait on an epoll set of their own: epoll. */
    tc_backend want = d ? TC_BACKEND_EPOLL : srv->cfg.backend;
    if (want != TC_BACKEND_IO_URING && want != TC_BACKEND_AUTO)
        return loops_start_with(srv, nloops, d, &tc__evb_epoll);
    if (srv->cfg.transport) {
        /* A transport (TLS) reads and writes the socket itself; the ring
         * would receive its records for it. */
        tc__log(srv, want == TC_BACKEND_AUTO ? TC_LOG_INFO : TC_LOG_WARN,
                "event mode: io_uring does not run a transport (TLS), using epoll");
        return loops_start_with(srv, nloops, d, &tc__evb_epoll);
    }
    int rc = tc__uring_probe();
    if (rc == 0 || rc == -EAGAIN) /* EAGAIN: no thread to probe in, no verdict */
        return rc == 0 ? loops_start_with(srv, nloops, d, &tc__evb_uring) : rc;
    /* Refused (an old kernel, io_uring_disabled, a seccomp filter, a
     * memory limit): epoll serves the same. */
    tc__log(srv, want == TC_BACKEND_AUTO ? TC_LOG_INFO : TC_LOG_WARN,
            "event mode: io_uring unavailable (%s), using epoll", tc_strerror(rc));
    return loops_start_with(srv, nloops, d, &tc__evb_epoll);
}

const tc__dispatch *tc__loops_dispatch(tc_server *srv)
{
    struct state *st = srv->mode_state;
    return st && st->pooled ? &st->dispatch : NULL;
}

void tc__loops_stop(tc_server *srv)
{
    if (srv->mode_state)
        free_loops(srv->mode_state);
    srv->mode_state = NULL;
}

/* ---- the loops' public face (tcpchan/loop.h) --------------------------------- */

/* The loops' state of a server that has loops, or NULL. */
static struct state *loops_of(const tc_server *srv)
{
    if (!srv || srv->dgram || !srv->mode ||
        (srv->mode->id != TC_MODE_EVENT && srv->mode->id != TC_MODE_POOL))
        return NULL;
    return srv->mode_state;
}

tc_backend tc_server_backend(const tc_server *srv)
{
    struct state *st = loops_of(srv);
    return st && st->be == &tc__evb_uring ? TC_BACKEND_IO_URING : TC_BACKEND_EPOLL;
}

int tc_server_loop_count(const tc_server *srv)
{
    struct state *st = loops_of(srv);
    return st ? st->nloops : 0;
}

tc_loop *tc_server_loop(tc_server *srv, int i)
{
    struct state *st = loops_of(srv);
    return st && i >= 0 && i < st->nloops ? &st->loops[i] : NULL;
}

tc_loop *tc_conn_loop(const tc_conn *conn)
{
    if (!conn || conn->drv != &ev_driver)
        return NULL;
    return ((const struct evconn *)conn->drv_data)->loop;
}

tc_server *tc_loop_server(const tc_loop *loop)
{
    return loop ? loop->srv : NULL;
}

int tc_loop_post(tc_loop *loop, tc_loop_fn fn, void *arg)
{
    if (!loop || !fn)
        return -EINVAL;
    struct mail *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->fn = fn;
    m->arg = arg;
    int rc = post_unless_ended(loop, m);
    if (rc < 0)
        free(m);
    return rc;
}

int tc_loop_timer_start(tc_loop *loop, int delay_ms, int interval_ms, tc_loop_fn fn, void *arg,
                        tc_loop_timer **out)
{
    if (out)
        *out = NULL;
    if (!loop || !fn || !out || delay_ms < 0 || interval_ms < 0)
        return -EINVAL;
    if (tl_loop != loop)
        return -EPERM; /* the heap is the loop's: post the start instead */
    struct tc_loop_timer *lt = calloc(1, sizeof *lt);
    if (!lt)
        return -ENOMEM;
    /* Room for it without taking the connections' reserved places. */
    lt->e.t.slot = TC__TIMER_IDLE;
    int rc = tc__theap_reserve(&loop->timers, 2 * (size_t)loop->nconns + loop->n_own_timers + 1);
    if (rc == 0)
        rc = tc__theap_schedule(&loop->timers, &lt->e.t,
                                tc__now_ns() + (int64_t)delay_ms * TC_NS_PER_MS);
    if (rc < 0) {
        free(lt);
        return rc;
    }
    lt->e.t.tag = TIMER_LOOP;
    lt->loop = loop;
    lt->fn = fn;
    lt->arg = arg;
    lt->interval_ms = interval_ms;
    TC__LIST_PUSH(loop->own_timers, lt);
    loop->n_own_timers++;
    *out = lt;
    return 0;
}

int tc_loop_timer_stop(tc_loop_timer *t)
{
    if (!t)
        return -EINVAL;
    struct tc_loop *lp = t->loop;
    if (tl_loop != lp)
        return -EPERM;
    tc__theap_cancel(&lp->timers, &t->e.t);
    TC__LIST_UNLINK(lp->own_timers, t);
    lp->n_own_timers--;
    free(t);
    return 0;
}

/* The one place a watch meets the loop's backend: put fd in its set for
 * events, move it, or take it out. */
static int watch_arm(struct tc_watch *w, unsigned events)
{
    struct tc_loop *lp = w->loop;
    unsigned pev = ((events & TC_WATCH_READ) ? TC__POLL_IN : 0u) |
                   ((events & TC_WATCH_WRITE) ? TC__POLL_OUT : 0u);
    int rc = 0;
    if (!events) {
        /* Out of the set: epoll reports errors and hang-ups whatever the
         * interest, and a paused watch must not spin the loop. */
        if (w->registered && (rc = lp->be->del(lp->evb, w->fd)) == 0)
            w->registered = 0;
    } else if (w->registered) {
        rc = lp->be->mod(lp->evb, w->fd, pev, tag_make(w, TAG_WATCH));
    } else if ((rc = lp->be->add(lp->evb, w->fd, pev, tag_make(w, TAG_WATCH))) == 0) {
        w->registered = 1;
    }
    if (rc == 0)
        w->events = events;
    return rc;
}

#define WATCH_EVENTS ((unsigned)(TC_WATCH_READ | TC_WATCH_WRITE))

int tc_loop_watch(tc_loop *loop, int fd, unsigned events, tc_watch_fn cb, void *ctx,
                  tc_watch **out)
{
    if (!loop || !cb || !out || fd < 0 || (events & ~WATCH_EVENTS))
        return -EINVAL;
    if (tl_loop != loop)
        return -EPERM; /* the poller's set and the lists are the loop's: post the start */
    struct tc_watch *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->loop = loop;
    w->fd = fd;
    w->cb = cb;
    w->ctx = ctx;
    int rc = watch_arm(w, events);
    if (rc < 0) {
        free(w);
        return rc;
    }
    TC__LIST_PUSH(loop->watches, w);
    *out = w;
    return 0;
}

int tc_watch_update(tc_watch *w, unsigned events)
{
    if (!w || w->stopped || (events & ~WATCH_EVENTS))
        return -EINVAL;
    if (tl_loop != w->loop)
        return -EPERM;
    return watch_arm(w, events);
}

int tc_watch_stop(tc_watch *w)
{
    if (!w || w->stopped)
        return -EINVAL;
    struct tc_loop *lp = w->loop;
    if (tl_loop != lp)
        return -EPERM;
    (void)watch_arm(w, 0);
    w->stopped = 1;
    TC__LIST_UNLINK(lp->watches, w);
    /* Freed at the end of the turn: an event for it may still be in the batch. */
    w->dead_next = lp->dead_watches;
    lp->dead_watches = w;
    return 0;
}

/* One message for every loop's connections, freed by the last loop. */
struct bcast {
    atomic_int refs;
    size_t len;
    unsigned char data[];
};

/* Whether a connection of the loop is one the application reaches as its
 * own: message style, open (on_open ran), not closing. */
static int reachable(const struct evconn *ec)
{
    return !gone(ec) && !ec->stream && !ec->proxy_wait && !ec->upgrade_wait && !ec->lingering &&
           ec->s->opened;
}

/* In each loop: the message to each of its open message-style connections
 * that it accepted (not those it dialled), with room (a send from the loop
 * thread claims a parked one, and leaves one a worker has to the mailbox). */
static void bcast_run(tc_loop *lp, void *arg)
{
    struct bcast *b = arg;
    for (struct evconn *ec = lp->conns, *next; ec; ec = next) {
        next = ec->next; /* a failed send may close ec */
        if (reachable(ec) && !ec->s->outbound && ev_pending(ec->conn) < ec->loop->hwm)
            (void)tc_conn_send(ec->conn, b->data, b->len);
    }
    if (atomic_fetch_sub(&b->refs, 1) == 1)
        free(b);
}

int tc_loop_foreach(tc_loop *loop, tc_conn_visit_fn fn, void *arg)
{
    if (!loop || !fn)
        return -EINVAL;
    if (tl_loop != loop)
        return -EPERM;
    int n = 0;
    for (struct evconn *ec = loop->conns, *next; ec; ec = next) {
        next = ec->next; /* a failed send may close ec (never another) */
        if (!reachable(ec))
            continue;
        n++;
        if (fn(ec->conn, arg) != 0)
            break;
    }
    return n;
}

/* Mail for the connection with this id, if its loop has it and is running
 * (under the loop's lock, so that it cannot close meanwhile): 0, or
 * TC_ECLOSED, TC_ESHUTDOWN, -EAGAIN (its queue is full). m stays the
 * caller's unless 0. */
static int post_to(struct state *st, uint64_t id, struct mail *m)
{
    struct tc_loop *lp = &st->loops[id % (uint64_t)st->nloops];
    m->next = NULL;
    m->fn = NULL;
    m->ec = NULL;
    m->newsess = NULL;
    m->id = id;
    int rc = 0;
    pthread_mutex_lock(&lp->mu);
    struct evconn *ec = lp->ended ? NULL : id_find(lp, id);
    if (lp->ended) {
        rc = TC_ESHUTDOWN;
    } else if (!ec) {
        rc = TC_ECLOSED;
    } else if (!m->close) {
        size_t queued = atomic_load(&ec->mail_bytes) +
                        atomic_load_explicit(&ec->out_queued, memory_order_relaxed);
        if (queued >= ec->loop->hwm)
            rc = -EAGAIN;
        else
            atomic_fetch_add(&ec->mail_bytes, m->len);
    }
    if (rc == 0) {
        *lp->mail_tail = m;
        lp->mail_tail = &m->next;
    }
    pthread_mutex_unlock(&lp->mu);
    if (rc == 0)
        tc__wake(lp->mailfd);
    return rc;
}

int tc_server_send_to(tc_server *srv, uint64_t id, const void *msg, size_t len)
{
    if (!srv || !id || (!msg && len))
        return -EINVAL;
    struct state *st = loops_of(srv);
    if (!st)
        return -ENOTSUP;
    if (len > SIZE_MAX - sizeof(struct mail))
        return -EINVAL;
    struct mail *m = malloc(sizeof *m + len);
    if (!m)
        return -ENOMEM;
    m->close = 0;
    m->len = len;
    if (len)
        memcpy(m->data, msg, len);
    int rc = post_to(st, id, m);
    if (rc < 0)
        free(m);
    return rc;
}

int tc_server_close_conn(tc_server *srv, uint64_t id)
{
    if (!srv || !id)
        return -EINVAL;
    struct state *st = loops_of(srv);
    if (!st || srv->handler.handle) /* stream style: a thread of its own has it */
        return tc__server_shut_live(srv, id);
    struct mail *m = malloc(sizeof *m);
    if (!m)
        return -ENOMEM;
    m->close = 1;
    m->len = 0;
    int rc = post_to(st, id, m);
    if (rc < 0)
        free(m);
    return rc;
}

int tc_server_broadcast(tc_server *srv, const void *msg, size_t len)
{
    if (!srv || (!msg && len))
        return -EINVAL;
    struct state *st = loops_of(srv);
    if (!st)
        return -ENOTSUP;
    if (len > SIZE_MAX - sizeof(struct bcast))
        return -EINVAL;
    struct bcast *b = malloc(sizeof *b + len);
    if (!b)
        return -ENOMEM;
    atomic_init(&b->refs, st->nloops);
    b->len = len;
    if (len)
        memcpy(b->data, msg, len);
    int posted = 0, rc = 0;
    for (int i = 0; i < st->nloops; i++) {
        int r = tc_loop_post(&st->loops[i], bcast_run, b);
        if (r == 0)
            posted++;
        else
            rc = r;
    }
    /* The loops that took it free it; what the others would have held goes now. */
    int unposted = st->nloops - posted;
    if (unposted && atomic_fetch_sub(&b->refs, unposted) == unposted)
        free(b);
    return posted ? 0 : rc;
}

/* ---- event mode: the handlers run in the loops ----------------------------- */

static int event_start(tc_server *srv)
{
    if (srv->handler.handle || !srv->handler.on_message) {
        tc__log_detail(srv, "invalid configuration: event mode runs message-style handlers only "
                            "(set on_message, not handle)");
        return TC_EBADCONFIG;
    }
    return tc__loops_start(srv, srv->cfg.workers, NULL);
}

static int event_process_request(tc_server *srv, tc__session *s)
{
    (void)srv, (void)s;
    return -ENOTSUP; /* never called: the mode accepts in its own loop */
}

const tc__mode tc__mode_event = {
    .id = TC_MODE_EVENT,
    .start = event_start,
    .process_request = event_process_request,
    .serve = tc__loops_serve,
    .stop = tc__loops_stop,
};

/* ---- outbound connections (tc_loop_dial) and reading on demand ----------------- */

/* An outbound connection is made in its loop, never in the caller's thread:
 * tc_loop_dial prepares the channel (no descriptor yet) and its session and
 * posts them; dial_run starts a non-blocking connect and waits for the
 * socket to become writable (or its idle timer, the connect's timeout);
 * once connected the record starts afresh as an accepted connection's
 * would (ev_open: registered for input, setup, on_open). A failure before
 * that ends the session with its reason, which on_close reports (dialling). */

enum { HELD_USER = 1, HELD_ENDING = 2 };

void tc_loop_dial_config_init(tc_loop_dial_config *cfg)
{
    if (cfg) /* the macro is the one source of the defaults */
        *cfg = (tc_loop_dial_config)TC_LOOP_DIAL_CONFIG_INIT;
}

/* A dial whose mail never ran (the server was destroyed without serving). */
static void dial_drop(void *arg)
{
    tc__session *s = arg;
    tc__chan_free(s->conn);
    free(s);
}

/* Connected: the record starts again as ev_open makes it. */
static void dial_connected(struct evconn *ec)
{
    struct tc_loop *lp = ec->loop;
    tc__session *s = ec->s;
    tc__theap_cancel(&lp->timers, &ec->idle.t);
    if (ec->registered)
        (void)lp->be->del(lp->evb, s->conn->fd);
    ev_unlink(ec);
    memset(ec, 0, lp->srv->session_room); /* event mode's record is shorter than *ec */
    s->conn->deadline = TC__NO_DEADLINE; /* it was the connect's */
    ev_open(lp, s);
}

/* The connecting socket is writable, or failed: its answer (SO_ERROR). */
static void dial_ready(struct evconn *ec)
{
    int rc = tc__sock_error(ec->conn->fd);
    if (rc == 0)
        dial_connected(ec);
    else
        ev_close(ec, rc, TC__REPORT_NO); /* the application hears it in on_close */
}

/* The outbound connect, to the channel's peer. */
static int dial_start(const tc_conn *c, int *fd)
{
    tc_addr to;
    tc__chan_peer_copy(c, &to);
    return tc__sock_connect_start(&to, fd);
}

/* In the loop: the session joins it, and the connect starts. */
static void dial_run(struct tc_loop *lp, void *arg)
{
    tc__session *s = arg;
    tc_conn *c = s->conn;
    struct evconn *ec = (struct evconn *)s->room;
    tc__server_session_register(s);
    ec->s = s;
    ec->conn = c;
    ec->loop = lp;
    ec->idle = (struct etimer){.t = {.slot = TC__TIMER_IDLE, .tag = TIMER_IDLE}};
    ec->user = (struct etimer){.t = {.slot = TC__TIMER_IDLE, .tag = TIMER_USER}};
    atomic_init(&ec->mail_bytes, 0);
    atomic_init(&ec->out_queued, 0);
    c->drv = &ev_driver;
    c->drv_data = ec;
    if (lp->st->pooled)
        ec->deferred_tail = &ec->deferred;
    ec->slot = PSLOT_NONE;
    ec->connecting = 1;
    TC__LIST_PUSH(lp->conns, ec);
    lp->nconns++;
    /* ended: the loop's last mail, after its connections closed. */
    int fd = -1;
    int rc = atomic_load(&lp->draining) || lp->ended ? TC_ESHUTDOWN
                                                     : dial_start(c, &fd);
    if (rc == 0 || rc == -EINPROGRESS) {
        c->fd = fd;
        (void)tc__sock_local(fd, &c->own_local[0]);
    }
    if (rc == 0) { /* a unix socket connects at once */
        dial_connected(ec);
        return;
    }
    if (rc == -EINPROGRESS &&
        (rc = tc__theap_reserve(&lp->timers, 2 * (size_t)lp->nconns + lp->n_own_timers)) == 0 &&
        (rc = lp->be->add(lp->evb, fd, TC__POLL_OUT, ec)) == 0) {
        ec->registered = 1;
        ec->interest = TC__POLL_OUT;
        (void)tc__theap_schedule(&lp->timers, &ec->idle.t, c->deadline);
        return;
    }
    ev_close(ec, rc, TC__REPORT_NO);
}

int tc_loop_dial(tc_loop *loop, const char *address, const tc_loop_dial_config *cfg,
                 const tc_handler *handler)
{
    tc__detail_clear();
    if (!loop || !address)
        return -EINVAL;
    tc_server *srv = loop->srv;
    const tc_handler *h = handler ? handler : &srv->handler;
    if (loop->st->pooled) {
        tc__log_detail(NULL, "tc_loop_dial: outbound connections are event mode's, not pool mode's");
        return -ENOTSUP;
    }
    if (!h->on_message || h->handle) {
        tc__log_detail(NULL, "invalid argument: an outbound connection runs a message-style "
                             "handler (on_message, not handle)");
        return -EINVAL;
    }
    if (cfg && (cfg->connect_timeout_ms < 0 || (cfg->codec && tc_codec_validate(cfg->codec) < 0))) {
        tc__log_detail(NULL, "invalid configuration: %s",
                       cfg->connect_timeout_ms < 0 ? "connect_timeout_ms is negative"
                                                   : "codec is not a valid tc_codec");
        return -EINVAL;
    }
    tc_addr addr;
    int rc = tc__addr_parse_numeric(address, &addr);
    if (rc < 0) {
        tc__log_detail(NULL, "dial address \"%s\": %s", address,
                       rc == TC_EBADADDR ? "not a numeric address (a loop resolves no names)"
                                         : tc_strerror(rc));
        return rc;
    }
    if (addr.socktype == SOCK_DGRAM) {
        tc__log_detail(NULL, "dial address \"%s\": a loop dials stream sockets only", address);
        return -ENOTSUP;
    }
    if (atomic_load(&loop->draining))
        return TC_ESHUTDOWN;
    tc_conn *c;
    if ((rc = tc__chan_new(&c, &ev_driver, -1, &addr, NULL)) < 0)
        return rc;
    c->codec = &srv->cfg.codec;
    if (cfg && cfg->codec && (rc = tc__chan_set_codec(c, cfg->codec)) < 0) {
        tc__chan_free(c);
        return rc;
    }
    c->data = cfg ? cfg->data : NULL;
    /* Until it connects, the channel's deadline is the connect's. */
    int ms = cfg && cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms
                                                : TC_LOOP_DIAL_TIMEOUT_MS;
    c->deadline = tc__deadline_ms(ms);
    tc__session *s;
    if ((rc = tc__server_session_outbound(srv, c, h, &s)) < 0)
        return rc;
    struct mail *m = calloc(1, sizeof *m);
    if (!m) {
        dial_drop(s);
        return -ENOMEM;
    }
    m->fn = dial_run;
    m->arg = s;
    if ((rc = post_unless_ended(loop, m)) < 0) {
        free(m);
        dial_drop(s);
    }
    return rc;
}

/* The record of an event-mode connection, for a call from its loop's
 * thread: NULL with *rc set (0: it has closed, nothing to do). */
static struct evconn *own_conn(const tc_conn *conn, int *rc)
{
    *rc = -EINVAL;
    if (!conn)
        return NULL;
    *rc = -ENOTSUP;
    if (conn->drv != &ev_driver)
        return NULL;
    struct evconn *ec = conn->drv_data;
    if (ec->loop->st->pooled)
        return NULL;
    *rc = -EPERM;
    if (tl_loop != ec->loop)
        return NULL;
    *rc = 0;
    return gone(ec) || ec->connecting ? NULL : ec;
}

/* Run fn(ec) from the loop's mailbox, after the current callback: never
 * inside one of ec's (whose caller may still hold its frames); the mail
 * dies with ec (drop_mail). 0 or -ENOMEM. */
static int post_for(struct evconn *ec, tc_loop_fn fn)
{
    struct mail *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->fn = fn;
    m->arg = ec;
    m->ec = ec;
    post(ec->loop, m);
    return 0;
}

int tc_conn_pause_reading(tc_conn *conn)
{
    int rc;
    struct evconn *ec = own_conn(conn, &rc);
    if (ec && !ec->held) {
        ec->held = HELD_USER;
        if (!ec->lingering)
            set_interest(ec);
    }
    return rc;
}

/* Frames that waited while it was held. */
static void resume_run(struct tc_loop *lp, void *arg)
{
    struct evconn *ec = arg;
    (void)lp;
    if (!gone(ec) && !ec->held && !ec->lingering)
        process_input(ec);
}

int tc_conn_resume_reading(tc_conn *conn)
{
    int rc;
    struct evconn *ec = own_conn(conn, &rc);
    if (!ec || !(ec->held & HELD_USER))
        return rc;
    ec->held &= (unsigned char)~HELD_USER;
    if (ec->held || ec->lingering)
        return 0;
    if (ec->conn->b->rlen > 0 || ec->conn->reof)
        rc = post_for(ec, resume_run);
    set_interest(ec);
    return rc;
}

static void end_run(struct tc_loop *lp, void *arg)
{
    struct evconn *ec = arg;
    (void)lp;
    if (!gone(ec) && !ec->lingering)
        ev_close_after_flush(ec, ec->end_reason, TC__REPORT_NO);
}

int tc_conn_end(tc_conn *conn, int reason)
{
    int rc;
    struct evconn *ec = own_conn(conn, &rc);
    if (!ec || (ec->held & HELD_ENDING) || ec->lingering)
        return rc;
    if ((rc = post_for(ec, end_run)) < 0)
        return rc;
    ec->held |= HELD_ENDING; /* no more messages meanwhile */
    ec->end_reason = reason;
    set_interest(ec);
    return 0;
}

/* The peer's end of stream in event mode: on_eof's answer (1: keep the
 * connection for sending, unread from here on), 0 to close it, or an error. */
static int ev_eof(struct evconn *ec)
{
    if (ec->loop->st->pooled || !tc__session_handler(ec->s)->on_eof)
        return 0;
    int rc = tc__session_eof(ec->s);
    if (rc > 0 && !ec->closed && !ec->lingering)
        ec->eof_kept = 1; /* set_interest drops POLL_IN */
    return rc > 0 ? 1 : rc;
}
