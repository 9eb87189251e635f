/* SPDX-License-Identifier: MIT */
/* Datagram channels, two drivers. "dgram": a request of a datagram server,
 * one received datagram whose reads end with it and whose sends go back to
 * its sender as one datagram each, at once, through the server's socket.
 * "dgram_dial": a connected datagram socket of a client, each receive one
 * whole datagram. Neither coalesces: one send call is one datagram. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"

/* A reply the socket refuses for want of room waits this long at most for
 * it (a UDP socket's send buffer frees as the kernel delivers); a unix peer
 * whose queue is full is not waited for: poll cannot see it. */
#define REPLY_WAIT_MS 10

int tc__dgram_chan(tc_conn **out, tc__dgram_sock *ds, const tc_addr *peer, const tc_addr *local,
                   const tc_addr *dst, const void *data, size_t len)
{
    unsigned char *copy = NULL;
    if (len && !(copy = malloc(len)))
        return -ENOMEM;
    tc_conn *c;
    int rc = tc__chan_new(&c, &tc__drv_dgram, -1, peer, dst ? NULL : local);
    if (rc < 0) {
        free(copy);
        return rc;
    }
    if (dst)
        c->own_local[0] = *dst; /* the channel has room for it: local was NULL */
    if (len)
        memcpy(copy, data, len);
    if (tc__chan_own(c) < 0) {
        tc__chan_free(c);
        free(copy);
        return -ENOMEM;
    }
    c->drv_data = ds;
    c->b->rbuf = copy;
    c->b->rcap = c->b->rlen = len;
    c->reof = 1; /* a read never goes past this datagram */
    *out = c;
    return 0;
}

/* One datagram of vec through fd to peer (NULL: connected), from src (NULL:
 * the kernel's choice), counted. */
static ssize_t put_datagram(tc__dgram_sock *ds, int fd, const tc_addr *peer, const tc_addr *src,
                            const struct iovec *vec, int cnt, int64_t deadline)
{
    ssize_t r = tc__sock_sendto(fd, vec, cnt, peer, src);
    if (r == -EAGAIN) {
        /* A connected client waits its own deadline; a server's reply briefly. */
        int64_t soon = tc__deadline_ms(REPLY_WAIT_MS);
        if (peer && soon < deadline)
            deadline = soon;
        if (tc__sock_wait(fd, POLLOUT, deadline) == 0)
            r = tc__sock_sendto(fd, vec, cnt, peer, src);
    }
    if (ds)
        atomic_fetch_add_explicit(r >= 0 ? &ds->answered : &ds->dropped, 1, memory_order_relaxed);
    return r;
}

/* Send what tc_conn_write buffered as one datagram, then vec as another
 * (cnt 0: a flush, nothing more). */
static ssize_t send_both(tc_conn *c, tc__dgram_sock *ds, const tc_addr *peer,
                         const struct iovec *vec, int cnt, size_t total)
{
    int fd = ds && peer ? ds->fd : c->fd;
    const tc_addr *src = ds && ds->pktinfo ? c->local : NULL;
    int64_t deadline = tc__conn_op_deadline(c);
    ssize_t r = 0;
    if (c->b->woff < c->b->wlen) {
        struct iovec q = {c->b->wbuf + c->b->woff, c->b->wlen - c->b->woff};
        r = put_datagram(ds, fd, peer, src, &q, 1, deadline);
        c->b->woff = c->b->wlen = 0; /* sent or lost: a datagram is not retried */
        tc__chan_trim(c, SIZE_MAX);
    }
    if (cnt == 0 || r < 0) {
        tc__chan_set_sent(c, 0);
        return r < 0 ? r : 0;
    }
    r = put_datagram(ds, fd, peer, src, vec, cnt, deadline);
    tc__chan_set_sent(c, r < 0 ? 0 : total);
    return r < 0 ? r : (ssize_t)total;
}

/* ---- a server's request ---------------------------------------------------- */

static ssize_t req_fill(tc_conn *c, int64_t deadline, size_t limit)
{
    (void)c, (void)deadline, (void)limit;
    return TC_EOF; /* the one datagram is buffered already */
}

static ssize_t req_recv(tc_conn *c, void *buf, size_t n, int64_t deadline)
{
    (void)c, (void)buf, (void)n, (void)deadline;
    return 0;
}

static ssize_t req_wait_input(tc_conn *c, int64_t deadline)
{
    (void)c, (void)deadline;
    return TC_EOF;
}

static ssize_t req_send(tc_conn *c, const struct iovec *vec, int cnt, size_t total)
{
    tc_addr to;
    tc__chan_peer_copy(c, &to);
    return send_both(c, c->drv_data, &to, vec, cnt, total);
}

/* A datagram's reply is complete once sent: flush, nothing to half-close. */
static int req_shutdown_write(tc_conn *c)
{
    ssize_t r = req_send(c, NULL, 0, 0);
    return r < 0 ? (int)r : 0;
}

const tc__driver tc__drv_dgram = {
    .name = "dgram",
    .fill = req_fill,
    .recv = req_recv,
    .wait_input = req_wait_input,
    .send = req_send,
    .shutdown_write = req_shutdown_write,
};

/* ---- a client's connected socket -------------------------------------------- */

void tc__dgram_dial_prepare(tc_conn *c, size_t max)
{
    c->drv_data = NULL;
    /* A receive size over the largest datagram: a read of rsize bytes or
     * more goes straight to the caller's buffer, which then holds it whole. */
    c->rsize = (uint32_t)(max + 1);
}

/* One whole datagram into buf (n bytes), waiting until deadline. One
 * longer than n is dropped (never delivered cut) and the wait goes on. */
static ssize_t dial_take(tc_conn *c, void *buf, size_t n, int64_t deadline)
{
    for (;;) {
        int trunc = 0;
        ssize_t r = tc__sock_recvfrom(c->fd, buf, n, NULL, &trunc, NULL);
        if (r >= 0 && !trunc)
            return r;
        if (r != -EAGAIN && r < 0)
            return r;
        if (r == -EAGAIN) {
            int rc = tc__sock_wait(c->fd, POLLIN, deadline);
            if (rc < 0)
                return rc;
        }
    }
}

static ssize_t dial_fill(tc_conn *c, int64_t deadline, size_t limit)
{
    (void)limit;
    if (c->b->rlen)
        return TC_EPARTIAL; /* a read may not span two datagrams */
    size_t need = c->rsize;
    if (tc__chan_own(c) < 0)
        return -ENOMEM;
    if (c->b->rcap < need) {
        unsigned char *nb = realloc(c->b->rbuf, need);
        if (!nb)
            return -ENOMEM;
        c->b->rbuf = nb;
        c->b->rcap = need;
    }
    c->b->roff = 0;
    ssize_t r = dial_take(c, c->b->rbuf, c->b->rcap, deadline);
    if (r > 0)
        c->b->rlen = (size_t)r;
    return r; /* 0: an empty datagram, nothing added */
}

static ssize_t dial_recv(tc_conn *c, void *buf, size_t n, int64_t deadline)
{
    ssize_t r = dial_take(c, buf, n, deadline);
    /* conn.c reads 0 as the end of the stream; a datagram socket has none:
     * an empty datagram is one that says nothing, and the wait goes on. */
    while (r == 0)
        r = dial_take(c, buf, n, deadline);
    return r;
}

static ssize_t dial_wait_input(tc_conn *c, int64_t deadline)
{
    return dial_fill(c, deadline, c->rsize);
}

static ssize_t dial_send(tc_conn *c, const struct iovec *vec, int cnt, size_t total)
{
    return send_both(c, NULL, NULL, vec, cnt, total);
}

static int dial_shutdown_write(tc_conn *c)
{
    ssize_t r = dial_send(c, NULL, 0, 0);
    return r < 0 ? (int)r : 0;
}

const tc__driver tc__drv_dgram_dial = {
    .name = "dgram_dial",
    .fill = dial_fill,
    .recv = dial_recv,
    .wait_input = dial_wait_input,
    .send = dial_send,
    .shutdown_write = dial_shutdown_write,
};
