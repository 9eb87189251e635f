/* SPDX-License-Identifier: MIT */
/* The channel's buffers and the non-blocking primitives every driver builds
 * on: lazily allocated, bounded read and write buffers; one receive; the
 * frame scan; the send window over queued output and the caller's vector.
 * Nothing here waits, and nothing here knows a server or a loop. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"

/* Entries of the caller's vector passed to one sendmsg; never over IOV_MAX. */
#define IOV_WINDOW (64 < IOV_MAX ? 64 : IOV_MAX)

/* Every channel's codec until its server's or its own is set. */
static const tc_codec raw_codec = {.kind = TC_CODEC_RAW};

const struct tc__chanbuf tc__chanbuf_none = {.rbuf = NULL};
const struct tc__chanx tc__chanx_none = {.xport = NULL};

/* The read-only state of a channel without bytes, as the pointer every
 * channel holds (stores go through tc__chan_own first). */
static struct tc__chanbuf *none_buf(void)
{
    return (struct tc__chanbuf *)&tc__chanbuf_none;
}

/* An event loop's thread keeps the buffer states of channels that went
 * empty for the next ones that get bytes: a request then costs no
 * allocation (see tc__chan_spare). A loop turn serves many channels, each
 * holding a state from its first byte to its last, so one spare is not
 * enough: up to SPARE_MAX, chained through rbuf. */
#define SPARE_MAX 256
static _Thread_local struct {
    struct tc__chanbuf *spare;
    unsigned nspare;
    unsigned char keep;
} tl __attribute__((tls_model("initial-exec")));

static struct tc__chanbuf *spare_pop(void)
{
    struct tc__chanbuf *b = tl.spare;
    if (b) {
        tl.spare = (struct tc__chanbuf *)(void *)b->rbuf;
        b->rbuf = NULL;
        tl.nspare--;
    }
    return b;
}

/* Keep b (no longer any channel's) as a spare: 1, or 0 if it was not kept. */
static int spare_push(struct tc__chanbuf *b)
{
    if (!tl.keep || tl.nspare >= SPARE_MAX)
        return 0;
    memset(b, 0, sizeof *b); /* all zero for its next channel */
    b->rbuf = (unsigned char *)(void *)tl.spare;
    tl.spare = b;
    tl.nspare++;
    return 1;
}

void tc__chan_spare(int on)
{
    if (!on) {
        struct tc__chanbuf *b;
        while ((b = spare_pop()))
            free(b);
    }
    tl.keep = on != 0;
}

struct tc__chanx *tc__chan_ext_slow(tc_conn *c)
{
    struct tc__chanx *x = calloc(1, sizeof *x);
    if (x)
        c->x = x;
    return x;
}

int tc__chan_own_slow(tc_conn *c)
{
    struct tc__chanbuf *b = spare_pop();
    if (!b && !(b = calloc(1, sizeof *b)))
        return -ENOMEM;
    c->b = b;
    return 0;
}

void tc__chan_release(tc_conn *c)
{
    struct tc__chanbuf *b = c->b;
    if (b == &tc__chanbuf_none || b->rbuf || b->rlen || b->rview || b->wbuf || b->wlen ||
        b->wflight)
        return;
    c->b = none_buf();
    if (!spare_push(b))
        free(b);
}

int tc__chan_set_codec(tc_conn *c, const tc_codec *codec)
{
    struct tc__chanx *x = tc__chan_ext(c);
    if (!x || (!x->codec_own && !(x->codec_own = malloc(sizeof *x->codec_own))))
        return -ENOMEM;
    *x->codec_own = codec ? *codec : raw_codec;
    c->codec = x->codec_own;
    return 0;
}

int tc__chan_new(tc_conn **out, const tc__driver *drv, int fd, const tc_addr *peer,
                 const tc_addr *local)
{
    tc_conn *c = calloc(1, sizeof *c + (local ? 0 : sizeof(tc_addr)));
    if (!c) {
        tc__close(fd);
        return -ENOMEM;
    }
    c->fd = fd;
    c->drv = drv;
    c->io = &tc__io_plain;
    c->b = none_buf();
    c->x = (struct tc__chanx *)&tc__chanx_none;
    c->stopfd = -1;
    if (peer && tc__chan_set_peer(c, peer) < 0) {
        tc__close(fd);
        free(c);
        return -ENOMEM;
    }
    if (local) {
        c->local = local;
    } else {
        (void)tc__sock_local(fd, &c->own_local[0]);
        c->local = &c->own_local[0];
    }
    c->deadline = TC__NO_DEADLINE;
    c->rsize = c->wsize = TC__BUF_DEFAULT;
    c->codec = &raw_codec;
    *out = c;
    return 0;
}

void tc__chan_free(tc_conn *c)
{
    if (!c)
        return;
    if (c->proto)
        c->proto->detach(c);
    tc__xport_goodbye(c); /* a dialled channel's close_notify, if not sent yet */
    if (c->x->xport)
        c->x->xport->ops->free(c->x->xstate);
    tc__close(c->fd);
    if (c->b != &tc__chanbuf_none) {
        if (!c->b->rborrowed)
            free(c->b->rbuf);
        free(c->b->wbuf);
        free(c->b);
    }
    if (c->x != &tc__chanx_none) {
        free(c->x->proxy);
        free(c->x->codec_own);
        free(c->x);
    }
    free(atomic_load_explicit(&c->peer_full, memory_order_relaxed));
    free(c);
}

/* ---- the peer's address ------------------------------------------------- */

static int peer_inline(const tc_addr *a)
{
    sa_family_t f = a->u.sa.sa_family;
    return a->len <= sizeof(((tc_conn *)0)->peer_in) &&
           (a->len == 0 || f == AF_INET || f == AF_INET6);
}

int tc__chan_set_peer(tc_conn *c, const tc_addr *a)
{
    tc_addr *full = atomic_load_explicit(&c->peer_full, memory_order_acquire);
    if (peer_inline(a)) {
        memcpy(&c->peer_in, &a->u, a->len);
        c->peer_len = (unsigned char)a->len;
        c->peer_socktype = (unsigned char)a->socktype;
        c->peer_big = 0;
    } else {
        if (!full) {
            if (!(full = malloc(sizeof *full)))
                return -ENOMEM;
            atomic_store_explicit(&c->peer_full, full, memory_order_release);
        }
        c->peer_big = 1;
    }
    if (full)
        *full = *a;
    return 0;
}

void tc__chan_peer_copy(const tc_conn *c, tc_addr *out)
{
    if (c->peer_big) {
        *out = *atomic_load_explicit(&c->peer_full, memory_order_acquire);
        return;
    }
    memset(out, 0, sizeof *out);
    memcpy(&out->u, &c->peer_in, c->peer_len);
    out->len = c->peer_len;
    out->socktype = c->peer_socktype;
}

const tc_addr *tc__chan_peer(const tc_conn *c)
{
    /* The copy is made once, for every caller: the only field a const
     * channel has changed (atomically). */
    tc_conn *m = (tc_conn *)c;
    tc_addr *full = atomic_load_explicit(&m->peer_full, memory_order_acquire);
    if (full)
        return full;
    if (!(full = malloc(sizeof *full)))
        return NULL;
    tc__chan_peer_copy(c, full);
    tc_addr *none = NULL;
    if (!atomic_compare_exchange_strong_explicit(&m->peer_full, &none, full, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        free(full); /* another thread made it first */
        return none;
    }
    return full;
}

/* ---- read side ---------------------------------------------------------- */

void tc__chan_consume_view(tc_conn *c)
{
    struct tc__chanbuf *b = c->b;
    if (b == &tc__chanbuf_none)
        return; /* nothing buffered, nothing viewed */
    c->rtaken += b->rview;
    b->roff += b->rview;
    b->rlen -= b->rview;
    b->rview = 0;
    if (b->rlen == 0)
        b->roff = 0;
}

int tc__chan_broken(tc_conn *c, int err)
{
    /* TC_ESHUTDOWN: a wait the stop descriptor ended, not a fault of the stream. */
    if (err != -ETIMEDOUT && err != -ENOMEM && err != -EAGAIN && err != TC_ESHUTDOWN)
        c->rerr = err;
    return err;
}

/* An idle channel holds no buffer memory. */
void tc__chan_trim(tc_conn *c, size_t keep)
{
    if (c->b->rlen == 0 && c->b->rbuf && !c->b->rborrowed && c->b->rcap > keep) {
        free(c->b->rbuf);
        c->b->rbuf = NULL;
        c->b->rcap = c->b->roff = 0;
    }
    if (c->b->wlen == c->b->woff && c->b->wbuf) {
        free(c->b->wbuf);
        c->b->wbuf = NULL;
        c->b->wcap = c->b->woff = c->b->wlen = 0;
    }
    tc__chan_release(c);
}

int tc__chan_make_room(tc_conn *c, size_t limit)
{
    if (tc__chan_own(c) < 0)
        return -ENOMEM;
    /* rsize, or double what is buffered, to hold a growing frame */
    size_t want = c->b->rlen < c->rsize ? c->rsize : c->b->rlen * 2;
    if (want > limit)
        want = limit;
    if (want < c->b->rlen + 1)
        want = c->b->rlen + 1;
    if (c->b->rcap - c->b->roff - c->b->rlen >= want - c->b->rlen)
        return 0;
    if (c->b->roff > 0 && c->b->rbuf) { /* roff > 0: there is a buffer */
        memmove(c->b->rbuf, c->b->rbuf + c->b->roff, c->b->rlen);
        c->b->roff = 0;
    }
    if (c->b->rcap >= want)
        return 0;
    unsigned char *nb = realloc(c->b->rbuf, want);
    if (!nb)
        return -ENOMEM;
    c->b->rbuf = nb;
    c->b->rcap = want;
    return 0;
}

ssize_t tc__chan_filled(tc_conn *c, ssize_t r)
{
    if (r > 0)
        c->b->rlen += (size_t)r;
    if (r != 0)
        return r;
    c->reof = 1;
    return TC_EOF;
}

ssize_t tc__chan_fill_once(tc_conn *c, size_t limit)
{
    int rc = tc__chan_make_room(c, limit);
    if (rc < 0)
        return rc;
    size_t room = c->b->rcap - c->b->roff - c->b->rlen;
    ssize_t r = c->io->recv(c, c->b->rbuf + c->b->roff + c->b->rlen, room, 0);
    if (r == -EAGAIN)
        c->rdry = 1;
    else if (r > 0)
        c->rdry = (size_t)r < room; /* less than asked: most likely empty now */
    return tc__chan_filled(c, r);
}

size_t tc__chan_frame_limit(const tc_conn *c)
{
    if (c->proto)
        return c->proto->limit(c);
    return tc_codec_max_frame(c->codec) + tc__codec_overhead(c->codec);
}

size_t tc__chan_frame_room(const tc_conn *c)
{
    size_t limit = tc__chan_frame_limit(c);
    return c->rsize < limit ? c->rsize : limit;
}

int tc__chan_frame(tc_conn *c, const void **msg, size_t *len)
{
    tc__chan_consume_view(c);
    if (c->rerr)
        return c->rerr;
    if (c->proto)
        return c->proto->frame(c, msg, len); /* its own framing */
    struct tc__chanbuf *b = c->b; /* not changed by a scan */
    if (b->rlen == 0)
        return 0; /* the usual end of a batch: nothing to scan */
    if (b->rscan > b->rlen)
        b->rscan = 0; /* a plain read took bytes since the last scan */
    size_t off, plen, flen;
    int rc = tc__codec_scan_from(c->codec, b->rbuf + b->roff, b->rlen, b->rscan, &off, &plen, &flen);
    if (rc < 0)
        return tc__chan_broken(c, rc);
    if (rc == 0) {
        b->rscan = b->rlen; /* resume there: a slow frame is not rescanned */
        return c->reof ? tc__chan_broken(c, TC_EPARTIAL) : 0;
    }
    b->rscan = 0;
    b->rview = flen;
    *msg = b->rbuf + b->roff + off;
    *len = plen;
    return 1;
}

ssize_t tc__chan_fill_scratch(tc_conn *c, unsigned char *scratch, size_t scratch_len)
{
    tc__chan_consume_view(c);
    if (c->rerr)
        return c->rerr;
    if (c->b->rlen == 0 && !c->b->rbuf && scratch) {
        /* Nothing buffered: receive into the loop's scratch buffer, so that
         * a complete request costs no allocation; settle keeps the rest. */
        if (tc__chan_own(c) < 0)
            return -ENOMEM;
        c->b->rbuf = scratch;
        c->b->rcap = scratch_len;
        c->b->roff = 0;
        c->b->rborrowed = 1;
    }
    if (!c->b->rborrowed)
        return tc__chan_fill_once(c, tc__chan_frame_limit(c));
    /* The scratch never grows (it is not ours to realloc): compact it, and
     * when it is full let the frames go first, then settle. */
    if (c->b->roff > 0 && c->b->roff + c->b->rlen == c->b->rcap && c->b->rbuf) {
        memmove(c->b->rbuf, c->b->rbuf + c->b->roff, c->b->rlen);
        c->b->roff = 0;
    }
    size_t room = c->b->rcap - c->b->roff - c->b->rlen;
    if (room == 0)
        return 0;
    return tc__chan_filled(c, c->io->recv(c, c->b->rbuf + c->b->roff + c->b->rlen, room, 0));
}

ssize_t tc__chan_feed(tc_conn *c, unsigned char *data, size_t n)
{
    tc__chan_consume_view(c);
    if (c->rerr)
        return c->rerr;
    if (c->b->rlen == 0 && !c->b->rbuf) {
        /* Nothing buffered: the frames are read where the bytes landed. */
        if (tc__chan_own(c) < 0)
            return -ENOMEM;
        c->b->rbuf = data;
        c->b->rcap = n;
        c->b->roff = 0;
        c->b->rlen = n;
        c->b->rborrowed = 1;
        return (ssize_t)n;
    }
    int rc = c->b->rborrowed ? tc__chan_keep(c) : 0;
    if (rc < 0)
        return rc;
    /* Appended: the bytes are already out of the socket. A codec refuses a
     * frame over its limit (TC_ETOOBIG) once it sees one, so this exceeds
     * the limit by one receive at most. */
    if (c->b->rcap - c->b->roff - c->b->rlen < n) {
        if (c->b->roff > 0) {
            memmove(c->b->rbuf, c->b->rbuf + c->b->roff, c->b->rlen);
            c->b->roff = 0;
        }
        if (c->b->rcap - c->b->rlen < n) {
            size_t want = c->b->rlen + n < c->rsize ? c->rsize : c->b->rlen + n;
            unsigned char *nb = realloc(c->b->rbuf, want);
            if (!nb)
                return tc__chan_broken(c, -ENOMEM);
            c->b->rbuf = nb;
            c->b->rcap = want;
        }
    }
    memcpy(c->b->rbuf + c->b->roff + c->b->rlen, data, n);
    c->b->rlen += n;
    return (ssize_t)n;
}

int tc__chan_settle(tc_conn *c)
{
    tc__chan_consume_view(c);
    if (!c->b->rborrowed) {
        tc__chan_trim(c, 0);
        return 0;
    }
    struct tc__chanbuf *b = c->b;
    unsigned char *scratch = b->rbuf;
    b->rbuf = NULL;
    b->rcap = 0;
    b->rborrowed = 0;
    if (b->rlen == 0) {
        b->roff = b->rscan = 0;
        /* The usual end of a request: the read side is empty; the state goes
         * back to the thread's spare unless output waits (tc__chan_release,
         * inline for this path). */
        if (!b->wbuf && !b->wlen && !b->wflight && !b->rview && spare_push(b)) {
            c->b = none_buf();
        } else {
            tc__chan_release(c);
        }
        return 0;
    }
    /* Part of a frame is left: it moves into the channel's own buffer. */
    size_t cap = tc__chan_frame_room(c);
    if (cap < c->b->rlen)
        cap = c->b->rlen;
    unsigned char *nb = malloc(cap);
    if (!nb) {
        c->b->rlen = 0;
        return tc__chan_broken(c, -ENOMEM);
    }
    memcpy(nb, scratch + c->b->roff, c->b->rlen);
    c->b->rbuf = nb;
    c->b->rcap = cap;
    c->b->roff = 0;
    return 0;
}

int tc__chan_keep(tc_conn *c)
{
    if (!c->b->rborrowed)
        return 0;
    size_t cap = tc__chan_frame_room(c);
    if (cap < c->b->rlen)
        cap = c->b->rlen;
    unsigned char *nb = malloc(cap ? cap : 1);
    if (!nb)
        return tc__chan_broken(c, -ENOMEM);
    memcpy(nb, c->b->rbuf + c->b->roff, c->b->rlen);
    c->b->rbuf = nb;
    c->b->rcap = cap;
    c->b->roff = 0;
    c->b->rborrowed = 0;
    return 0;
}

int tc__chan_proxy(tc_conn *c, tc__proxy_hdr *h)
{
    int rc = tc__proxy_parse(c->b->rbuf ? c->b->rbuf + c->b->roff : NULL, c->b->rlen, h);
    if (rc == TC__PROXY_DONE) {
        c->b->roff += h->len;
        c->b->rlen -= h->len;
        if (c->b->rlen == 0)
            c->b->roff = 0;
        return rc;
    }
    if (rc == TC__PROXY_MORE && c->reof) {
        if (c->b->rlen == 0)
            return TC_EOF;
        h->why = "the stream ended inside the header";
        return TC_EPROXY;
    }
    return rc;
}

void tc__chan_take(tc_conn *c, size_t n)
{
    if (c->b == &tc__chanbuf_none)
        return; /* nothing buffered: n is 0 */
    c->rtaken += n;
    c->b->roff += n;
    c->b->rlen -= n;
    if (c->b->rlen == 0)
        c->b->roff = 0;
}

/* ---- write side --------------------------------------------------------- */

size_t tc__chan_pending(const tc_conn *c)
{
    return c->b->wlen - c->b->woff + c->b->wflight;
}

int tc__chan_reserve(tc_conn *c, size_t n)
{
    if (c->b->wcap - c->b->wlen >= n)
        return 0;
    if (c->b->woff > 0) {
        memmove(c->b->wbuf, c->b->wbuf + c->b->woff, c->b->wlen - c->b->woff);
        c->b->wlen -= c->b->woff;
        c->b->woff = 0;
        if (c->b->wcap - c->b->wlen >= n)
            return 0;
    }
    if (tc__chan_own(c) < 0)
        return -ENOMEM;
    size_t cap = c->wsize > c->b->wlen + n ? c->wsize : c->b->wlen + n;
    if (c->wasync) /* each turn's queue goes to the kernel whole: sized to it, doubling */
        cap = c->b->wcap * 2 > c->b->wlen + n ? c->b->wcap * 2 : c->b->wlen + n;
    unsigned char *nb = realloc(c->b->wbuf, cap);
    if (!nb)
        return -ENOMEM;
    c->b->wbuf = nb;
    c->b->wcap = cap;
    return 0;
}

int tc__chan_queue(tc_conn *c, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    int rc = tc__chan_reserve(c, n);
    if (rc < 0)
        return rc;
    memcpy(c->b->wbuf + c->b->wlen, p, n);
    c->b->wlen += n;
    return 0;
}

ssize_t tc__chan_send_window(tc_conn *c, const struct iovec *vec, int cnt, int idx, size_t ioff)
{
    struct iovec win[IOV_WINDOW];
    int k = 0;
    if (c->b->woff < c->b->wlen)
        win[k++] = (struct iovec){c->b->wbuf + c->b->woff, c->b->wlen - c->b->woff};
    for (int i = idx; i < cnt && k < IOV_WINDOW; i++) {
        size_t o = i == idx ? ioff : 0;
        if (vec[i].iov_len > o)
            win[k++] = (struct iovec){(char *)vec[i].iov_base + o, vec[i].iov_len - o};
    }
    if (k == 0)
        return 0;
    return c->io->send(c, win, k);
}

size_t tc__chan_advance(tc_conn *c, const struct iovec *vec, int cnt, int *idx, size_t *ioff,
                        size_t x)
{
    if (c->b->woff < c->b->wlen) {
        size_t t = c->b->wlen - c->b->woff < x ? c->b->wlen - c->b->woff : x;
        c->b->woff += t;
        x -= t;
        if (c->b->woff == c->b->wlen)
            c->b->woff = c->b->wlen = 0;
    }
    size_t mine = x;
    while (x > 0 && *idx < cnt) { /* sendmsg never takes more than it was given */
        size_t rem = vec[*idx].iov_len - *ioff;
        if (x < rem) {
            *ioff += x;
            x = 0;
        } else {
            x -= rem;
            (*idx)++;
            *ioff = 0;
        }
    }
    return mine;
}

ssize_t tc__chan_send_nb(tc_conn *c, const struct iovec *vec, int cnt, size_t total,
                         size_t *taken)
{
    size_t ignored, sent = 0;
    if (!taken)
        taken = &ignored;
    *taken = 0;
    if (c->werr)
        return c->werr;
    int idx = 0;
    size_t ioff = 0;
    /* Try the socket first, behind anything already queued; what it does not
     * take is appended to the write buffer (never blocks). An asynchronous
     * transport queues, except a large send with nothing ahead of it: the
     * copy into the queue would cost more than the system call. */
    int direct = !c->wasync || (total >= TC__ASYNC_DIRECT_MIN && !c->b->wflight && c->b->woff == c->b->wlen);
    while (direct && (c->b->woff < c->b->wlen || sent < total)) {
        ssize_t r = tc__chan_send_window(c, vec, cnt, idx, ioff);
        if (r == -EAGAIN || r == 0)
            break;
        if (r < 0) {
            c->werr = (int)r;
            return r;
        }
        sent += tc__chan_advance(c, vec, cnt, &idx, &ioff, (size_t)r);
        *taken = sent;
    }
    size_t rest = total - sent;
    if (rest == 0)
        return (ssize_t)total;
    int rc = tc__chan_reserve(c, rest);
    if (rc < 0)
        return rc;
    for (int i = idx; i < cnt; i++) {
        size_t o = i == idx ? ioff : 0;
        if (vec[i].iov_len > o) {
            memcpy(c->b->wbuf + c->b->wlen, (char *)vec[i].iov_base + o, vec[i].iov_len - o);
            c->b->wlen += vec[i].iov_len - o;
        }
    }
    *taken = total;
    return (ssize_t)total;
}

int tc__chan_flush_nb(tc_conn *c)
{
    ssize_t r = tc__chan_send_nb(c, NULL, 0, 0, NULL);
    if (r < 0)
        return (int)r;
    if (c->b->wlen > c->b->woff || c->b->wflight)
        return 1;
    tc__chan_trim(c, 0);
    return 0;
}
