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

int tc__chan_set_codec(tc_conn *c, const tc_codec *codec)
{
    if (!c->codec_own && !(c->codec_own = malloc(sizeof *c->codec_own)))
        return -ENOMEM;
    *c->codec_own = codec ? *codec : raw_codec;
    c->codec = c->codec_own;
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
    if (c->xport)
        c->xport->ops->free(c->xstate);
    tc__close(c->fd);
    if (!c->rborrowed)
        free(c->rbuf);
    free(c->wbuf);
    free(c->proxy);
    free(c->codec_own);
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
    c->rtaken += c->rview;
    c->roff += c->rview;
    c->rlen -= c->rview;
    c->rview = 0;
    if (c->rlen == 0)
        c->roff = 0;
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
    if (c->rlen == 0 && c->rbuf && !c->rborrowed && c->rcap > keep) {
        free(c->rbuf);
        c->rbuf = NULL;
        c->rcap = c->roff = 0;
    }
    if (c->wlen == c->woff && c->wbuf) {
        free(c->wbuf);
        c->wbuf = NULL;
        c->wcap = c->woff = c->wlen = 0;
    }
}

int tc__chan_make_room(tc_conn *c, size_t limit)
{
    /* rsize, or double what is buffered, to hold a growing frame */
    size_t want = c->rlen < c->rsize ? c->rsize : c->rlen * 2;
    if (want > limit)
        want = limit;
    if (want < c->rlen + 1)
        want = c->rlen + 1;
    if (c->rcap - c->roff - c->rlen >= want - c->rlen)
        return 0;
    if (c->roff > 0) {
        memmove(c->rbuf, c->rbuf + c->roff, c->rlen);
        c->roff = 0;
    }
    if (c->rcap >= want)
        return 0;
    unsigned char *nb = realloc(c->rbuf, want);
    if (!nb)
        return -ENOMEM;
    c->rbuf = nb;
    c->rcap = want;
    return 0;
}

ssize_t tc__chan_filled(tc_conn *c, ssize_t r)
{
    if (r > 0)
        c->rlen += (size_t)r;
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
    size_t room = c->rcap - c->roff - c->rlen;
    ssize_t r = c->io->recv(c, c->rbuf + c->roff + c->rlen, room, 0);
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
    if (c->rlen == 0)
        return 0; /* the usual end of a batch: nothing to scan */
    if (c->rscan > c->rlen)
        c->rscan = 0; /* a plain read took bytes since the last scan */
    size_t off, plen, flen;
    int rc = tc__codec_scan_from(c->codec, c->rbuf + c->roff, c->rlen, c->rscan, &off, &plen,
                                 &flen);
    if (rc < 0)
        return tc__chan_broken(c, rc);
    if (rc == 0) {
        c->rscan = c->rlen; /* resume there: a slow frame is not rescanned */
        return c->reof ? tc__chan_broken(c, TC_EPARTIAL) : 0;
    }
    c->rscan = 0;
    c->rview = flen;
    *msg = c->rbuf + c->roff + off;
    *len = plen;
    return 1;
}

ssize_t tc__chan_fill_scratch(tc_conn *c, unsigned char *scratch, size_t scratch_len)
{
    tc__chan_consume_view(c);
    if (c->rerr)
        return c->rerr;
    if (c->rlen == 0 && !c->rbuf && scratch) {
        /* Nothing buffered: receive into the loop's scratch buffer, so that
         * a complete request costs no allocation; settle keeps the rest. */
        c->rbuf = scratch;
        c->rcap = scratch_len;
        c->roff = 0;
        c->rborrowed = 1;
    }
    if (!c->rborrowed)
        return tc__chan_fill_once(c, tc__chan_frame_limit(c));
    /* The scratch never grows (it is not ours to realloc): compact it, and
     * when it is full let the frames go first, then settle. */
    if (c->roff > 0 && c->roff + c->rlen == c->rcap) {
        memmove(c->rbuf, c->rbuf + c->roff, c->rlen);
        c->roff = 0;
    }
    size_t room = c->rcap - c->roff - c->rlen;
    if (room == 0)
        return 0;
    return tc__chan_filled(c, c->io->recv(c, c->rbuf + c->roff + c->rlen, room, 0));
}

ssize_t tc__chan_feed(tc_conn *c, unsigned char *data, size_t n)
{
    tc__chan_consume_view(c);
    if (c->rerr)
        return c->rerr;
    if (c->rlen == 0 && !c->rbuf) {
        /* Nothing buffered: the frames are read where the bytes landed. */
        c->rbuf = data;
        c->rcap = n;
        c->roff = 0;
        c->rlen = n;
        c->rborrowed = 1;
        return (ssize_t)n;
    }
    int rc = c->rborrowed ? tc__chan_keep(c) : 0;
    if (rc < 0)
        return rc;
    /* Appended: the bytes are already out of the socket. A codec refuses a
     * frame over its limit (TC_ETOOBIG) once it sees one, so this exceeds
     * the limit by one receive at most. */
    if (c->rcap - c->roff - c->rlen < n) {
        if (c->roff > 0) {
            memmove(c->rbuf, c->rbuf + c->roff, c->rlen);
            c->roff = 0;
        }
        if (c->rcap - c->rlen < n) {
            size_t want = c->rlen + n < c->rsize ? c->rsize : c->rlen + n;
            unsigned char *nb = realloc(c->rbuf, want);
            if (!nb)
                return tc__chan_broken(c, -ENOMEM);
            c->rbuf = nb;
            c->rcap = want;
        }
    }
    memcpy(c->rbuf + c->roff + c->rlen, data, n);
    c->rlen += n;
    return (ssize_t)n;
}

int tc__chan_settle(tc_conn *c)
{
    tc__chan_consume_view(c);
    if (!c->rborrowed) {
        tc__chan_trim(c, 0);
        return 0;
    }
    unsigned char *scratch = c->rbuf;
    c->rbuf = NULL;
    c->rcap = 0;
    c->rborrowed = 0;
    if (c->rlen == 0) {
        c->roff = 0;
        return 0;
    }
    /* Part of a frame is left: it moves into the channel's own buffer. */
    size_t cap = tc__chan_frame_room(c);
    if (cap < c->rlen)
        cap = c->rlen;
    unsigned char *nb = malloc(cap);
    if (!nb) {
        c->rlen = 0;
        return tc__chan_broken(c, -ENOMEM);
    }
    memcpy(nb, scratch + c->roff, c->rlen);
    c->rbuf = nb;
    c->rcap = cap;
    c->roff = 0;
    return 0;
}

int tc__chan_keep(tc_conn *c)
{
    if (!c->rborrowed)
        return 0;
    size_t cap = tc__chan_frame_room(c);
    if (cap < c->rlen)
        cap = c->rlen;
    unsigned char *nb = malloc(cap ? cap : 1);
    if (!nb)
        return tc__chan_broken(c, -ENOMEM);
    memcpy(nb, c->rbuf + c->roff, c->rlen);
    c->rbuf = nb;
    c->rcap = cap;
    c->roff = 0;
    c->rborrowed = 0;
    return 0;
}

int tc__chan_proxy(tc_conn *c, tc__proxy_hdr *h)
{
    int rc = tc__proxy_parse(c->rbuf ? c->rbuf + c->roff : NULL, c->rlen, h);
    if (rc == TC__PROXY_DONE) {
        c->roff += h->len;
        c->rlen -= h->len;
        if (c->rlen == 0)
            c->roff = 0;
        return rc;
    }
    if (rc == TC__PROXY_MORE && c->reof) {
        if (c->rlen == 0)
            return TC_EOF;
        h->why = "the stream ended inside the header";
        return TC_EPROXY;
    }
    return rc;
}

void tc__chan_take(tc_conn *c, size_t n)
{
    c->rtaken += n;
    c->roff += n;
    c->rlen -= n;
    if (c->rlen == 0)
        c->roff = 0;
}

/* ---- write side --------------------------------------------------------- */

size_t tc__chan_pending(const tc_conn *c)
{
    return c->wlen - c->woff + c->wflight;
}

int tc__chan_reserve(tc_conn *c, size_t n)
{
    if (c->wcap - c->wlen >= n)
        return 0;
    if (c->woff > 0) {
        memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
        c->wlen -= c->woff;
        c->woff = 0;
        if (c->wcap - c->wlen >= n)
            return 0;
    }
    size_t cap = c->wsize > c->wlen + n ? c->wsize : c->wlen + n;
    if (c->wasync) /* each turn's queue goes to the kernel whole: sized to it, doubling */
        cap = c->wcap * 2 > c->wlen + n ? c->wcap * 2 : c->wlen + n;
    unsigned char *nb = realloc(c->wbuf, cap);
    if (!nb)
        return -ENOMEM;
    c->wbuf = nb;
    c->wcap = cap;
    return 0;
}

int tc__chan_queue(tc_conn *c, const void *p, size_t n)
{
    int rc = tc__chan_reserve(c, n);
    if (rc < 0)
        return rc;
    memcpy(c->wbuf + c->wlen, p, n);
    c->wlen += n;
    return 0;
}

ssize_t tc__chan_send_window(tc_conn *c, const struct iovec *vec, int cnt, int idx, size_t ioff)
{
    struct iovec win[IOV_WINDOW];
    int k = 0;
    if (c->woff < c->wlen)
        win[k++] = (struct iovec){c->wbuf + c->woff, c->wlen - c->woff};
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
    if (c->woff < c->wlen) {
        size_t t = c->wlen - c->woff < x ? c->wlen - c->woff : x;
        c->woff += t;
        x -= t;
        if (c->woff == c->wlen)
            c->woff = c->wlen = 0;
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
    int direct = !c->wasync || (total >= TC__ASYNC_DIRECT_MIN && !c->wflight && c->woff == c->wlen);
    while (direct && (c->woff < c->wlen || sent < total)) {
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
            memcpy(c->wbuf + c->wlen, (char *)vec[i].iov_base + o, vec[i].iov_len - o);
            c->wlen += vec[i].iov_len - o;
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
    if (c->wlen > c->woff || c->wflight)
        return 1;
    tc__chan_trim(c, 0);
    return 0;
}
