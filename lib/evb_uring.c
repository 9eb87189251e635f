/* SPDX-License-Identifier: MIT */
/* Event mode's io_uring backend: a loop's descriptors as io_uring requests
 * instead of epoll registrations. A connection (added with TC__POLL_RECV)
 * has one multishot receive into the ring's provided buffers, so that its
 * bytes come with the completion (no recv call, and an idle connection
 * holds no buffer), and its output goes out as sends the loop hands over
 * or loans of the receive buffers themselves (ub_lend), in order, one
 * request in flight each. A listener has accept requests in flight, as many
 * as the loop asks for (ub_accept). Any other descriptor (wake-ups, a
 * listener polled) is a one-shot poll armed again after the loop has
 * handled it, which is what a level-triggered epoll reports. */
#include <errno.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"

#define RING_ENTRIES 1024u       /* submission slots (the completion queue: 4x) */
#define RING_BUFS 128u           /* provided receive buffers, shared by the loop's connections */
#define RING_BUF_SIZE ((size_t)16 * 1024)
#define DETACH_ROUNDS 4          /* reaps at the end for the cancellations to land */
/* Loans (see ub_lend): a connection with this many sends queued is not read
 * until one completes (a peer reading slowly holds no more; the loop's
 * high-water mark, 1 MiB by default, is about as many buffers), and an
 * eighth of the ring is never lent, for the other connections to receive
 * into while peers that stopped reading hold the rest. */
#define LEND_PER_CONN 64u
#define LEND_MAX (RING_BUFS - RING_BUFS / 8)
/* A connection's loans queued behind a send in flight go out together, as
 * one IORING_OP_SENDMSG of up to LEND_IOV buffers: one send per connection
 * and turn, as the loop's own queue does (sent one by one, the loans piled
 * up faster than they went out). The kernel copies the message header when
 * it takes the request, so the headers live only until the next submission:
 * MSG_SLOTS of them per turn, then single sends. */
#define LEND_IOV 64
#define MSG_SLOTS 64
/* Accept requests in flight, all listeners together (see ub_accept); one
 * listener keeps at most ACCEPT_FLY. */
#define ACCEPT_SLOTS ((unsigned)TC__ACCEPT_SLOTS)
#define ACCEPT_FLY 15u

enum { K_RECV = 1, K_PIN, K_POUT, K_CANCEL, K_SEND, K_ACCEPT }; /* what a request is for */
enum { R_OFF, R_ON, R_CANCEL };               /* a descriptor's multishot receive */
#define GEN_MASK 0xffffffu

/* A watched descriptor, indexed by its number. Requests carry the number
 * and a generation: one for a descriptor deleted (and perhaps a new socket
 * of the same number) finds another generation and is dropped. */
struct ent {
    void *ptr;
    uint32_t gen;
    uint32_t batch;       /* the submission batch that last named it */
    uint32_t sslot;       /* its send in flight: a slot's index + 1, or 0 */
    /* Bit-fields: the table has an entry per descriptor number (10,000
     * connections: 16,384 entries), and only the loop's thread touches it. */
    unsigned live : 1, pin : 1, pout : 1, queued : 1;
    unsigned recv : 2;    /* R_* */
    unsigned conn : 1;    /* added with TC__POLL_RECV: the loop sends through us */
    unsigned nodelay : 1; /* TCP_NODELAY set (see stream_seen) */
    unsigned starved : 1; /* its receive ended for want of a buffer (see ub_wait) */
    unsigned lendfull : 1; /* LEND_PER_CONN loans: not read until one completes */
    unsigned want : 8;    /* TC__POLL_* */
    unsigned acc_want : 4; /* accept requests wanted in flight (ub_accept) */
    unsigned acc_fly : 4;  /* and in flight */
};

/* An accept request in flight, by index (its tag): where the kernel writes
 * the peer's address, which the loop reads before the next wait (a slot is
 * armed again only in ub_wait). */
struct aslot {
    struct sockaddr_storage ss;
    socklen_t len;
    int fd;               /* the listener */
    uint32_t gen;         /* its entry's generation when armed */
    int busy;
    void *ptr;            /* the listener's, reported even after a del */
};

/* A send, by index (its requests' tag): the loop's buffer, ours until all
 * of it went out, or (bid >= 0) a loan of a receive buffer. A descriptor's
 * sends form a list in order (ent.sslot: the head, the one in flight). A
 * slot whose descriptor was deleted is an orphan, freed when its last
 * completion comes. */
struct sslot {
    unsigned char *buf;
    size_t off, len, cap, total;
    int fd;
    int bid;              /* the lent receive buffer, or -1 */
    uint32_t gen;
    uint32_t next_free;   /* index + 1 of the next free slot, or 0 */
    uint32_t next;        /* index + 1 of the descriptor's next send, or 0 */
    uint32_t nfly;        /* the head: sends of the list in its request */
    int orphan;
};

struct lendmsg {
    struct msghdr mh;
    struct iovec iov[LEND_IOV];
};

struct tc__evb {
    /* Made ahead, disabled, in a short-lived thread (its descriptor exists
     * from tc_server_create on, and no application thread made it);
     * enabled by the thread that runs the loop, the only one that may
     * submit; closed when that one stops (a thread that ends cancels what
     * it submitted, and the next run may be another thread's), and made
     * again for the next. */
    tc__uring *ring;
    int attached;
    struct ent *tab;
    size_t ntab;
    int *rearm;            /* descriptors to arm again before the next wait */
    size_t nrearm, caprearm;
    uint32_t batch;        /* submissions so far */
    struct sslot *slots;   /* sends in flight (grown, never shrunk) */
    uint32_t nslots, free_slot;
    /* Receive buffers: out = the loop has it (an event not yet released),
     * lent = sends from it not yet completed; back in the ring when neither. */
    unsigned char out[RING_BUFS];
    uint16_t lent[RING_BUFS];
    unsigned nlent;        /* buffers with a loan */
    struct lendmsg *msgs;  /* MSG_SLOTS headers (made at the first use) */
    unsigned nmsgs;        /* used since the last complete submission */
    int gave;              /* a buffer went back to the ring since the last re-arming */
    struct aslot *acc;     /* ACCEPT_SLOTS (made at the first ub_accept) */
};

/* More input waited behind a receive: a stream larger than a provided
 * buffer is arriving, and its echo or answer goes out in pieces of a
 * buffer (16 KiB), each below loopback's MSS, which Nagle would hold until
 * the previous piece was acknowledged (1 MiB echoes ran at 0.6-0.75x the
 * epoll floor's rate with the CPU idle; epoll receives 64 KiB at a time).
 * The loop's own batching (one send per connection per turn) does what
 * Nagle would for small writes, so such a connection gets TCP_NODELAY,
 * once (not on unix sockets: no such option there, ignored). */
static void stream_seen(struct ent *e, int fd)
{
    e->nodelay = 1;
    (void)tc__sock_setopt(fd, IPPROTO_TCP, TCP_NODELAY, 1);
}

static uint64_t ud(int fd, uint32_t gen, unsigned kind)
{
    return (uint64_t)(uint32_t)fd | (uint64_t)(gen & GEN_MASK) << 32 | (uint64_t)kind << 56;
}

/* A receive buffer back to the kernel: a receive that ran dry may go on. */
static void give(tc__evb *b, int bid)
{
    tc__uring_buf_give(b->ring, bid);
    b->gave = 1;
}

/* The loop is done with a buffer it was handed, or a send from it ended. */
static void buf_done(tc__evb *b, int bid, int loan)
{
    if (loan && --b->lent[bid] == 0)
        b->nlent--;
    else if (!loan)
        b->out[bid] = 0;
    if (!b->out[bid] && !b->lent[bid])
        give(b, bid);
}

static int ensure(tc__evb *b, int fd)
{
    if (fd < 0)
        return -EBADF;
    if ((size_t)fd < b->ntab)
        return 0;
    size_t n = b->ntab ? b->ntab : 64;
    while (n <= (size_t)fd)
        n *= 2;
    /* calloc, not realloc and memset: the entries of descriptor numbers
     * never used stay untouched pages (a large calloc is fresh memory). */
    struct ent *t = calloc(n, sizeof *t);
    if (!t)
        return -ENOMEM;
    if (b->ntab)
        memcpy(t, b->tab, b->ntab * sizeof *t);
    free(b->tab);
    b->tab = t;
    b->ntab = n;
    return 0;
}

/* Arm it again before the next wait. The list has room for every
 * descriptor watched (grown by add), so this cannot fail. */
static void queue(tc__evb *b, int fd)
{
    struct ent *e = &b->tab[fd];
    if (e->queued || b->nrearm == b->caprearm)
        return;
    e->queued = 1;
    b->rearm[b->nrearm++] = fd;
}

static int prep(tc__evb *b, struct ent *e, int fd, unsigned op, unsigned kind,
                struct io_uring_sqe **out)
{
    struct io_uring_sqe *sqe = tc__uring_sqe(b->ring);
    if (!sqe)
        return -EBUSY;
    sqe->opcode = (uint8_t)op;
    sqe->fd = fd;
    sqe->user_data = ud(fd, e->gen, kind);
    e->batch = b->batch;
    *out = sqe;
    return 0;
}

static int cancel_tag(tc__evb *b, struct ent *e, int fd, uint64_t tag)
{
    struct io_uring_sqe *sqe;
    int rc = prep(b, e, fd, IORING_OP_ASYNC_CANCEL, K_CANCEL, &sqe);
    if (rc == 0) {
        sqe->fd = -1;
        sqe->addr = tag;
    }
    return rc;
}

static int cancel(tc__evb *b, struct ent *e, int fd, unsigned kind)
{
    return cancel_tag(b, e, fd, ud(fd, e->gen, kind));
}

/* Queue the send of slot i's remaining bytes. */
static int prep_send(tc__evb *b, uint32_t i)
{
    struct sslot *sl = &b->slots[i];
    struct io_uring_sqe *sqe = tc__uring_sqe(b->ring);
    if (!sqe)
        return -EBUSY;
    unsigned n = 1;
    uint32_t k = sl->next;
    if (sl->bid >= 0)
        for (; k && n < LEND_IOV && b->slots[k - 1].bid >= 0; k = b->slots[k - 1].next)
            n++;
    if (n > 1 && !b->msgs && !(b->msgs = malloc(MSG_SLOTS * sizeof *b->msgs)))
        n = 1;
    if (n > 1 && b->nmsgs < MSG_SLOTS) {
        struct lendmsg *m = &b->msgs[b->nmsgs++];
        k = i + 1;
        for (unsigned x = 0; x < n; x++, k = b->slots[k - 1].next) {
            const struct sslot *t = &b->slots[k - 1];
            m->iov[x] = (struct iovec){t->buf + t->off, t->len};
        }
        m->mh = (struct msghdr){.msg_iov = m->iov, .msg_iovlen = n};
        sqe->opcode = IORING_OP_SENDMSG;
        sqe->addr = (uint64_t)(uintptr_t)&m->mh;
        sqe->len = 1;
    } else {
        n = 1;
        sqe->opcode = IORING_OP_SEND;
        sqe->addr = (uint64_t)(uintptr_t)(sl->buf + sl->off);
        sqe->len = sl->len > UINT32_MAX ? UINT32_MAX : (uint32_t)sl->len;
    }
    sqe->fd = sl->fd;
    sqe->msg_flags = MSG_NOSIGNAL;
    sqe->user_data = ud((int)i, sl->gen, K_SEND);
    sl->nfly = n;
    b->tab[sl->fd].batch = b->batch;
    return 0;
}

static void slot_free(tc__evb *b, uint32_t i)
{
    b->slots[i].bid = -1;
    b->slots[i].buf = NULL;
    b->slots[i].next_free = b->free_slot;
    b->free_slot = i + 1;
}

/* Its buffer gone with it: the loop's freed, a loan ended. */
static void slot_drop(tc__evb *b, uint32_t i)
{
    struct sslot *sl = &b->slots[i];
    if (sl->bid < 0)
        free(sl->buf);
    else if (b->ring)
        buf_done(b, sl->bid, 1);
    slot_free(b, i);
}

/* Slot k (index + 1, or 0) and the sends of the list after it: dropped. */
static void drop_from(tc__evb *b, uint32_t k)
{
    while (k) {
        uint32_t next = b->slots[k - 1].next;
        slot_drop(b, k - 1);
        k = next;
    }
}

/* The sends of the list after head i's request (not submitted): dropped. */
static void drop_unsent(tc__evb *b, uint32_t i)
{
    for (uint32_t n = b->slots[i].nfly; n > 1 && b->slots[i].next; n--)
        i = b->slots[i].next - 1;
    drop_from(b, b->slots[i].next);
    b->slots[i].next = 0;
}

/* A slot for a send on fd, put at the end of its list (started at once
 * when the list was empty): 0, or an error with nothing changed. */
static int enlist(tc__evb *b, int fd, struct sslot tmpl)
{
    struct ent *e = &b->tab[fd];
    uint32_t tail = 0;
    for (uint32_t k = e->sslot; k; k = b->slots[k - 1].next)
        tail = k;
    if (!b->free_slot) {
        uint32_t cap = b->nslots ? b->nslots * 2 : 64;
        struct sslot *t = realloc(b->slots, cap * sizeof *t);
        if (!t)
            return -ENOMEM;
        b->slots = t;
        for (uint32_t k = cap; k-- > b->nslots;) { /* free list in index order */
            t[k].buf = NULL;
            t[k].bid = -1;
            t[k].next_free = b->free_slot;
            b->free_slot = k + 1;
        }
        b->nslots = cap;
    }
    uint32_t i = b->free_slot - 1;
    struct sslot *sl = &b->slots[i];
    b->free_slot = sl->next_free;
    *sl = tmpl;
    sl->total = sl->len;
    sl->fd = fd;
    sl->gen = e->gen;
    sl->next = 0;
    sl->orphan = 0;
    if (tail) {
        b->slots[tail - 1].next = i + 1;
        return 0;
    }
    int rc = prep_send(b, i);
    if (rc < 0) {
        slot_free(b, i);
        return rc;
    }
    e->sslot = i + 1;
    return 0;
}

static int sendable(const tc__evb *b, int fd)
{
    return fd >= 0 && (size_t)fd < b->ntab && b->tab[fd].live && b->tab[fd].conn && b->attached;
}

static int ub_send(tc__evb *b, int fd, unsigned char *buf, size_t off, size_t len, size_t cap)
{
    if (!sendable(b, fd))
        return -EINVAL;
    return enlist(b, fd, (struct sslot){.buf = buf, .off = off, .len = len, .cap = cap, .bid = -1});
}

/* A loan: p lies in a receive buffer the loop holds (the handler answers
 * with the bytes it was given), so the send goes from there, with no copy
 * and no system call of its own, and the buffer stays out of the ring until
 * the send completes (the io_uring floor's way; a copy into the queue cost
 * more than the send() it saved). Refused (the caller sends as usual) for
 * other bytes, and past the bounds of LEND_*. */
static int ub_lend(tc__evb *b, int fd, const void *p, size_t len)
{
    if (!sendable(b, fd) || !len)
        return -EINVAL;
    /* the block itself: tc__uring_buf(ring, 0) would mark buffer 0 as taken */
    unsigned char *base = tc__uring_bufs(b->ring);
    const unsigned char *q = p;
    if (q < base || q >= base + (size_t)RING_BUFS * RING_BUF_SIZE)
        return -EINVAL;
    size_t at = (size_t)(q - base);
    int bid = (int)(at / RING_BUF_SIZE);
    if (!b->out[bid] || len > RING_BUF_SIZE - at % RING_BUF_SIZE)
        return -EINVAL;
    if (!b->lent[bid] && b->nlent >= LEND_MAX)
        return -EAGAIN;
    uint32_t n = 0;
    for (uint32_t k = b->tab[fd].sslot; k; k = b->slots[k - 1].next)
        n++;
    if (n >= LEND_PER_CONN)
        return -EAGAIN;
    /* The same bytes, through the ring's own (writable) pointer. */
    unsigned char *from = base + at;
    int rc = enlist(b, fd, (struct sslot){.buf = from, .len = len, .bid = bid});
    if (rc < 0)
        return rc;
    if (n + 1 >= LEND_PER_CONN) {
        /* Its input waits (the receive is cancelled) rather than being
         * copied: the sends have not kept up with it (a slow reader). */
        b->tab[fd].lendfull = 1;
        queue(b, fd);
    }
    if (b->lent[bid]++ == 0)
        b->nlent++;
    return 0;
}

/* Accept requests for listener fd, up to what it wants in flight (or as
 * many as free slots allow). */
static int arm_accepts(tc__evb *b, struct ent *e, int fd)
{
    for (uint32_t i = 0; i < ACCEPT_SLOTS && e->acc_fly < e->acc_want; i++) {
        struct aslot *a = &b->acc[i];
        if (a->busy)
            continue;
        struct io_uring_sqe *sqe = tc__uring_sqe(b->ring);
        if (!sqe)
            return -EBUSY;
        a->len = sizeof a->ss;
        a->fd = fd;
        a->gen = e->gen;
        a->ptr = e->ptr;
        a->busy = 1;
        sqe->opcode = IORING_OP_ACCEPT;
        sqe->fd = fd;
        sqe->addr = (uint64_t)(uintptr_t)&a->ss;
        sqe->addr2 = (uint64_t)(uintptr_t)&a->len;
        sqe->accept_flags = SOCK_NONBLOCK | SOCK_CLOEXEC;
        sqe->user_data = ud((int)i, 0, K_ACCEPT);
        e->batch = b->batch;
        e->acc_fly++;
    }
    return 0;
}

/* Cancel listener fd's accept requests in flight. */
static void cancel_accepts(tc__evb *b, struct ent *e, int fd)
{
    for (uint32_t i = 0; b->acc && i < ACCEPT_SLOTS; i++)
        if (b->acc[i].busy && b->acc[i].fd == fd && b->acc[i].gen == e->gen)
            (void)cancel_tag(b, e, fd, ud((int)i, 0, K_ACCEPT));
}

/* Requests for what fd's wish asks and is not in flight; its receive
 * cancelled if input is no longer wanted (paused: backpressure). */
static int arm(tc__evb *b, int fd)
{
    struct ent *e = &b->tab[fd];
    struct io_uring_sqe *sqe;
    int rc = 0;
    if (!b->attached || !e->live)
        return 0;
    int in = (e->want & TC__POLL_IN) && !e->lendfull, rx = (e->want & TC__POLL_RECV) != 0;
    if (in && rx && e->recv == R_OFF) {
        if ((rc = prep(b, e, fd, IORING_OP_RECV, K_RECV, &sqe)) < 0)
            return rc;
        sqe->ioprio = IORING_RECV_MULTISHOT;
        sqe->flags = IOSQE_BUFFER_SELECT;
        sqe->buf_group = 0;
        e->recv = R_ON;
    } else if (!in && e->recv == R_ON) {
        if ((rc = cancel(b, e, fd, K_RECV)) < 0)
            return rc;
        e->recv = R_CANCEL; /* its last completion says when it is gone */
    }
    if (in && e->acc_want > e->acc_fly && (rc = arm_accepts(b, e, fd)) < 0)
        return rc;
    /* A listener is polled while none of its accept requests is in flight:
     * none wanted, or no slot free (ACCEPT_SLOTS shared by many listeners). */
    if (in && !rx && !e->pin && !e->acc_fly) {
        if ((rc = prep(b, e, fd, IORING_OP_POLL_ADD, K_PIN, &sqe)) < 0)
            return rc;
        sqe->poll32_events = POLLIN;
        e->pin = 1;
    }
    if ((e->want & TC__POLL_OUT) && !e->conn && !e->pout) {
        if ((rc = prep(b, e, fd, IORING_OP_POLL_ADD, K_POUT, &sqe)) < 0)
            return rc;
        sqe->poll32_events = POLLOUT;
        e->pout = 1;
    }
    return 0;
}

struct maker {
    tc__uring *ring;
    int rc;
};

static void *make_main(void *arg)
{
    struct maker *m = arg;
    m->rc = tc__uring_create(&m->ring, RING_ENTRIES, RING_BUFS, RING_BUF_SIZE, 1);
    return NULL;
}

/* A disabled ring for the next run, made in a thread of its own. */
static int make_ring(tc__evb *b)
{
    struct maker m = {NULL, -EAGAIN};
    pthread_t t;
    int rc = -pthread_create(&t, NULL, make_main, &m);
    if (rc < 0)
        return rc;
    pthread_join(t, NULL);
    if (m.rc == 0)
        b->ring = m.ring;
    return m.rc;
}

static int ub_create(tc__evb **out)
{
    tc__evb *b = calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    int rc = make_ring(b);
    if (rc < 0) {
        free(b);
        return rc;
    }
    *out = b;
    return 0;
}

static void free_slots(tc__evb *b);

static void ub_destroy(tc__evb *b)
{
    if (!b)
        return;
    tc__uring_destroy(b->ring);
    free_slots(b);
    free(b->slots);
    free(b->tab);
    free(b->rearm);
    free(b->msgs);
    free(b->acc);
    free(b);
}

static int ub_add(tc__evb *b, int fd, unsigned events, void *ptr)
{
    int rc = ensure(b, fd);
    if (rc < 0)
        return rc;
    struct ent *e = &b->tab[fd];
    if (e->live)
        return -EEXIST;
    if (b->nrearm + 1 > b->caprearm || b->caprearm < b->ntab) {
        /* Room for every descriptor on the re-arm list. */
        size_t cap = b->ntab;
        int *r = realloc(b->rearm, cap * sizeof *r);
        if (!r)
            return -ENOMEM;
        b->rearm = r;
        b->caprearm = cap;
    }
    e->ptr = ptr;
    e->live = 1;
    e->want = (unsigned char)events;
    e->conn = (events & TC__POLL_RECV) != 0;
    e->nodelay = 0; /* a new socket, perhaps of a closed one's number */
    e->pin = e->pout = 0;
    e->recv = R_OFF;
    e->sslot = 0;
    e->starved = e->lendfull = 0;
    e->acc_want = e->acc_fly = 0;
    if ((rc = arm(b, fd)) < 0) {
        e->gen++;
        e->live = 0;
    }
    return rc;
}

static int ub_mod(tc__evb *b, int fd, unsigned events, void *ptr)
{
    if (fd < 0 || (size_t)fd >= b->ntab || !b->tab[fd].live)
        return -ENOENT;
    struct ent *e = &b->tab[fd];
    e->ptr = ptr;
    e->want = (unsigned char)events;
    if (events & TC__POLL_RECV)
        e->conn = 1;
    return arm(b, fd);
}

static int ub_del(tc__evb *b, int fd)
{
    if (fd < 0 || (size_t)fd >= b->ntab || !b->tab[fd].live)
        return -ENOENT;
    struct ent *e = &b->tab[fd];
    if (b->attached) {
        /* A request naming the number must reach the kernel before the
         * caller closes it: the number may be a new socket's by the next
         * submission. */
        if (e->batch == b->batch && tc__uring_pending(b->ring))
            (void)tc__uring_submit(b->ring);
        /* In flight, a request holds the socket open: cancel them (by
         * their tags, which outlive the number). */
        if (e->recv == R_ON)
            (void)cancel(b, e, fd, K_RECV);
        if (e->pin)
            (void)cancel(b, e, fd, K_PIN);
        if (e->pout)
            (void)cancel(b, e, fd, K_POUT);
        if (e->acc_fly)
            cancel_accepts(b, e, fd);
    }
    if (e->sslot) {
        /* The one in flight keeps its buffer until the kernel lets go of
         * it; those behind it never started. */
        drop_unsent(b, e->sslot - 1);
        struct sslot *sl = &b->slots[e->sslot - 1];
        sl->orphan = 1;
        if (b->attached)
            (void)cancel_tag(b, e, fd, ud((int)(e->sslot - 1), sl->gen, K_SEND));
        e->sslot = 0;
    }
    e->gen = (e->gen + 1) & GEN_MASK;
    e->live = 0;
    e->want = 0;
    e->pin = e->pout = 0;
    e->acc_want = e->acc_fly = 0;
    e->recv = R_OFF;
    e->ptr = NULL;
    return 0;
}

/* Accepting with the ring: no accept4 (and no poll before it) per
 * connection, as the io_uring floor's multishot accept, but bounded: a
 * multishot accept takes every connection queued, past max_conns. The
 * loop passes n as the room under its limit; each completion lowers both. */
static int ub_accept(tc__evb *b, int fd, int n)
{
    if (fd < 0 || (size_t)fd >= b->ntab || !b->tab[fd].live || b->tab[fd].conn || n < 0)
        return -EINVAL;
    if (n && !b->acc && !(b->acc = calloc(ACCEPT_SLOTS, sizeof *b->acc)))
        return -ENOMEM;
    struct ent *e = &b->tab[fd];
    e->acc_want = (unsigned)n < ACCEPT_FLY ? (unsigned)n : ACCEPT_FLY;
    if (!e->acc_want && e->acc_fly && b->attached)
        cancel_accepts(b, e, fd);
    queue(b, fd); /* armed with the next wait; a poll again if none wanted */
    return 0;
}

/* A send's completion: the rest goes out, or the loop hears of it (of
 * loans too: their bytes counted as queued output) and the next sends of
 * the descriptor start. */
static int sent(tc__evb *b, uint32_t i, int res, tc__ev *ev)
{
    if (i >= b->nslots || !b->slots[i].buf)
        return 0;
    struct sslot *sl = &b->slots[i];
    struct ent *e = b->tab && (size_t)sl->fd < b->ntab ? &b->tab[sl->fd] : NULL;
    uint32_t head = i + 1;
    int sl_fd = sl->fd;
    if (sl->orphan || !e) {
        drop_from(b, head); /* the request's sends: the rest went at del */
        return 0;
    }
    if (res == 0)
        res = -EPIPE; /* a stream socket that takes nothing is broken */
    *ev = (tc__ev){.ptr = e->ptr, .events = TC__POLL_OUT, .send = 1, .res = res, .buf = -1};
    if (res < 0) {
        /* The connection ends: nothing more goes out. */
        if (sl->bid < 0) {
            ev->data = sl->buf; /* the loop's again */
            ev->cap = sl->cap;
            head = sl->next;
            slot_free(b, i);
        }
        drop_from(b, head);
        e->sslot = 0;
        return 1;
    }
    size_t left = (size_t)res, done = 0;
    if (sl->bid < 0) {
        if (left < sl->len) {
            sl->off += left;
            sl->len -= left;
        } else {
            ev->data = sl->buf;
            ev->cap = sl->cap;
            done = sl->total;
            head = sl->next;
            slot_free(b, i);
        }
    } else {
        for (uint32_t n = sl->nfly; n && head && left >= b->slots[head - 1].len; n--) {
            struct sslot *t = &b->slots[head - 1];
            uint32_t next = t->next;
            left -= t->len;
            done += t->total;
            slot_drop(b, head - 1); /* the loan is over */
            head = next;
        }
        if (left) { /* short: the rest of a loan goes next */
            b->slots[head - 1].off += left;
            b->slots[head - 1].len -= left;
        }
    }
    e->sslot = head;
    ev->res = (int)(done > INT32_MAX ? INT32_MAX : done);
    if (e->lendfull && done) {
        e->lendfull = 0; /* read again (see ub_lend) */
        queue(b, sl_fd);
    }
    if (head && prep_send(b, head - 1) < 0) {
        /* The queue is full and the kernel takes nothing: reported as an
         * error (ends the connection), as a failed send is. */
        drop_from(b, head);
        e->sslot = 0;
        ev->res = -EBUSY;
    }
    return done > 0 || ev->res < 0;
}

/* The buffers of the sends still in flight (the ring is gone: loans end
 * with it). */
static void free_slots(tc__evb *b)
{
    for (uint32_t i = 0; i < b->nslots; i++) {
        if (b->slots[i].buf) {
            if (b->slots[i].bid < 0)
                free(b->slots[i].buf);
            slot_free(b, i);
        }
    }
    for (size_t fd = 0; fd < b->ntab; fd++)
        b->tab[fd].sslot = 0;
    memset(b->out, 0, sizeof b->out);
    memset(b->lent, 0, sizeof b->lent);
    b->nlent = 0;
}

/* An accept's completion: what it took goes to the loop even after a
 * cancellation or a del (the loop closes it if it no longer accepts), and
 * the listener is armed again with the next wait (see arm). */
static int accepted(tc__evb *b, uint32_t i, int res, tc__ev *ev)
{
    if (!b->acc || i >= ACCEPT_SLOTS || !b->acc[i].busy)
        return 0;
    struct aslot *a = &b->acc[i];
    a->busy = 0;
    struct ent *e = &b->tab[a->fd];
    if (e->live && e->gen == a->gen) {
        e->acc_fly--;
        queue(b, a->fd); /* the next request, or a poll once none is in flight */
    }
    if (res == -ECANCELED)
        return 0;
    *ev = (tc__ev){.ptr = a->ptr, .accept = 1, .res = res, .buf = -1};
    if (res >= 0) {
        ev->data = (unsigned char *)&a->ss;
        ev->cap = a->len;
    }
    return 1;
}

/* One completion: 1 with *ev filled, or 0 (nothing for the loop). */
static int handle(tc__evb *b, const struct io_uring_cqe *cqe, tc__ev *ev)
{
    uint64_t tag = cqe->user_data;
    unsigned kind = (unsigned)(tag >> 56);
    int fd = (int)(uint32_t)tag;
    uint32_t gen = (uint32_t)(tag >> 32) & GEN_MASK;
    int res = cqe->res;
    int bid = (cqe->flags & IORING_CQE_F_BUFFER) ? (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT)
                                                 : -1;
    struct ent *e = (size_t)fd < b->ntab ? &b->tab[fd] : NULL;
    int stale = !e || !e->live || e->gen != gen;
    if (kind == K_CANCEL)
        return 0;
    if (kind == K_SEND)
        return sent(b, (uint32_t)tag, res, ev);
    if (kind == K_ACCEPT)
        return accepted(b, (uint32_t)tag, res, ev);
    if (kind == K_RECV) {
        if (stale) {
            if (bid >= 0)
                give(b, bid);
            return 0;
        }
        int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
        int wanted = (e->want & (TC__POLL_IN | TC__POLL_RECV)) == (TC__POLL_IN | TC__POLL_RECV);
        if (!more) {
            e->recv = R_OFF;
            /* Ended: out of buffers, cancelled (and wanted again since),
             * or after a receive that ended it; not at the end of the
             * stream or on an error, which the loop is told of. */
            if (wanted && (res > 0 || res == -ENOBUFS || res == -ECANCELED))
                queue(b, fd);
            /* Out of buffers: armed again once one is back (see ub_wait). */
            e->starved = res == -ENOBUFS;
        }
        if (res == -ENOBUFS || res == -ECANCELED) {
            if (bid >= 0)
                give(b, bid);
            return 0;
        }
        if ((cqe->flags & IORING_CQE_F_SOCK_NONEMPTY) && !e->nodelay)
            stream_seen(e, fd);
        *ev = (tc__ev){.ptr = e->ptr, .events = TC__POLL_IN, .recv = 1, .res = res, .buf = -1};
        if (res > 0 && bid >= 0) {
            ev->data = tc__uring_buf(b->ring, bid);
            ev->buf = bid;
            b->out[bid] = 1;
        } else if (bid >= 0) {
            give(b, bid);
        } else if (res > 0) {
            ev->res = -EIO; /* bytes without a buffer: cannot happen */
        }
        return 1;
    }
    if (stale)
        return 0;
    unsigned bit = kind == K_PIN ? TC__POLL_IN : TC__POLL_OUT;
    if (kind == K_PIN)
        e->pin = 0;
    else
        e->pout = 0;
    if (!(e->want & bit) || (kind == K_PIN && e->acc_fly))
        return 0; /* no longer wanted (accept requests took over): not armed again */
    queue(b, fd); /* level-triggered: armed again once the loop has looked */
    if (res == -ECANCELED)
        return 0;
    *ev = (tc__ev){.ptr = e->ptr, .events = bit, .buf = -1};
    return 1;
}

static int ub_wait(tc__evb *b, tc__ev *out, int max, int timeout_ms)
{
    if (!b->attached)
        return -EBADFD;
    /* A receive that ran out of buffers waits on the list until one is
     * back (a send's loan ended, the loop released one): armed at once, it
     * would fail again at every turn while the loop spins. */
    int gave = b->gave;
    size_t keep = 0, i = 0;
    b->gave = 0;
    for (; i < b->nrearm; i++) {
        int fd = b->rearm[i];
        struct ent *e = &b->tab[fd];
        if (e->starved && !gave && e->live) {
            b->rearm[keep++] = fd;
            continue;
        }
        e->starved = 0;
        e->queued = 0;
        if (arm(b, fd) < 0) {
            /* The queue is full and the kernel takes nothing: try again
             * after this wait. */
            for (; i < b->nrearm; i++) {
                b->tab[b->rearm[i]].queued = 1;
                b->rearm[keep++] = b->rearm[i];
            }
            timeout_ms = 0;
        }
    }
    b->nrearm = keep;
    int rc = tc__uring_wait(b->ring, timeout_ms);
    b->batch++;
    if (!tc__uring_pending(b->ring))
        b->nmsgs = 0; /* the kernel has the headers' contents */
    if (rc < 0)
        return rc;
    int n = 0;
    struct io_uring_cqe *cqe;
    while (n < max && (cqe = tc__uring_cqe(b->ring))) {
        struct io_uring_cqe c = *cqe;
        tc__uring_cqe_seen(b->ring);
        n += handle(b, &c, &out[n]);
    }
    return n;
}

static void ub_release(tc__evb *b, tc__ev *ev)
{
    if (ev->buf >= 0 && b->ring)
        buf_done(b, ev->buf, 0); /* unless a send still has it (ub_lend) */
    else if (ev->send)
        free(ev->data); /* a send's buffer the loop did not take back */
    ev->buf = -1;
    ev->data = NULL;
}

static int ub_attach(tc__evb *b)
{
    if (b->attached)
        return 0;
    /* Made at the end of the last run, unless that failed: then here. */
    int rc = b->ring ? tc__uring_enable(b->ring)
                     : tc__uring_create(&b->ring, RING_ENTRIES, RING_BUFS, RING_BUF_SIZE, 0);
    if (rc < 0)
        return rc;
    tc__uring_own(b->ring, 1);
    b->attached = 1;
    b->nrearm = 0;
    for (size_t fd = 0; fd < b->ntab; fd++) {
        b->tab[fd].queued = 0;
        b->tab[fd].starved = b->tab[fd].lendfull = 0;
        if (b->tab[fd].live)
            queue(b, (int)fd);
    }
    return 0;
}

static void ub_detach(tc__evb *b)
{
    if (!b->attached)
        return;
    /* The cancellations of the last connections reach the kernel and
     * complete (with deferred task work, only inside a wait), so that their
     * sockets are released now rather than when the ring goes. */
    for (size_t fd = 0; b->acc && fd < b->ntab; fd++)
        if (b->tab[fd].live && b->tab[fd].acc_fly)
            cancel_accepts(b, &b->tab[fd], (int)fd);
    for (int round = 0; round < DETACH_ROUNDS; round++) {
        if (tc__uring_wait(b->ring, 0) < 0)
            break;
        struct io_uring_cqe *cqe;
        int any = 0;
        while ((cqe = tc__uring_cqe(b->ring))) {
            struct io_uring_cqe c = *cqe;
            tc__uring_cqe_seen(b->ring);
            any = 1;
            tc__ev ev;
            if (!handle(b, &c, &ev))
                continue;
            if (ev.accept && ev.res >= 0)
                tc__close(ev.res); /* taken as the loop ended: refused */
            else
                ub_release(b, &ev);
        }
        if (!any)
            break;
    }
    tc__uring_own(b->ring, 0);
    tc__uring_destroy(b->ring);
    b->ring = NULL;
    b->attached = 0;
    free_slots(b);
    tc__uring_absorb_exit();
    (void)make_ring(b); /* for the next run */
    for (size_t fd = 0; fd < b->ntab; fd++) {
        struct ent *e = &b->tab[fd];
        e->pin = e->pout = 0;
        e->acc_want = e->acc_fly = 0;
        e->recv = R_OFF;
        e->queued = 0;
    }
    if (b->acc)
        memset(b->acc, 0, ACCEPT_SLOTS * sizeof *b->acc);
    b->nrearm = 0;
}

const tc__evbackend tc__evb_uring = {
    .name = "io_uring",
    .create = ub_create,
    .destroy = ub_destroy,
    .attach = ub_attach,
    .detach = ub_detach,
    .add = ub_add,
    .mod = ub_mod,
    .del = ub_del,
    .wait = ub_wait,
    .release = ub_release,
    .send = ub_send,
    .lend = ub_lend,
    .accept = ub_accept,
};
