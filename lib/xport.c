/* SPDX-License-Identifier: MIT */
/* A channel's byte I/O: straight to the socket (tc__io_plain), or through a
 * tc_transport such as libtcpchan-tls (xport_io). The drivers wait on the
 * socket as they always do; only the bytes take another way. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

#define HANDSHAKE_DEFAULT_MS 10000
/* Bytes of a file read per transport send (one TLS record at most). */
#define FILE_CHUNK ((size_t)16 * 1024)

/* ---- plain ---------------------------------------------------------------- */

static ssize_t plain_recv(tc_conn *c, void *buf, size_t n, int sleep)
{
    return sleep ? tc__sock_recv_block(c->fd, buf, n) : tc__sock_recv(c->fd, buf, n);
}

static ssize_t plain_send(tc_conn *c, const struct iovec *v, int cnt)
{
    /* One piece (the usual reply): send() costs the kernel less than sendmsg(). */
    return cnt == 1 ? tc__sock_send(c->fd, v[0].iov_base, v[0].iov_len)
                    : tc__sock_sendmsg(c->fd, v, cnt);
}

static ssize_t plain_sendfile(tc_conn *c, int file_fd, off_t *offset, size_t n)
{
    return tc__sock_sendfile(c->fd, file_fd, offset, n);
}

static int plain_shutdown_write(tc_conn *c)
{
    return tc__sock_shutdown_how(c->fd, SHUT_WR);
}

static size_t plain_pending(const tc_conn *c)
{
    (void)c;
    return 0;
}

const tc__io tc__io_plain = {
    .recv = plain_recv,
    .send = plain_send,
    .sendfile = plain_sendfile,
    .shutdown_write = plain_shutdown_write,
    .pending = plain_pending,
};

/* ---- through a transport ---------------------------------------------------- */

static short poll_events(unsigned want)
{
    return want == TC_TRANSPORT_WANT_WRITE ? POLLOUT : POLLIN;
}

/* A step that waits for the other direction than the driver waits for (a
 * read that must write first, a write that must read): a blocking channel
 * waits for it here, within the channel's operation deadline; an event
 * loop's channel (its driver reads for it: no fill) leaves it in xwant. */
static int wait_other(tc_conn *c, unsigned want)
{
    if (!c->drv->fill)
        return -EAGAIN;
    return tc__sock_wait(c->fd, poll_events(want), tc__conn_op_deadline(c));
}

static ssize_t xport_recv(tc_conn *c, void *buf, size_t n, int sleep)
{
    for (;;) {
        unsigned want = 0;
        ssize_t r = c->x->xport->ops->recv(c->x->xstate, buf, n, sleep ? TC_TRANSPORT_SLEEP : 0, &want);
        c->xwant = (unsigned char)(r == -EAGAIN ? want : 0);
        if (r != -EAGAIN || want != TC_TRANSPORT_WANT_WRITE)
            return r;
        int rc = wait_other(c, want);
        if (rc < 0)
            return rc;
    }
}

static ssize_t xport_send(tc_conn *c, const struct iovec *v, int cnt)
{
    for (;;) {
        unsigned want = 0;
        ssize_t r = c->x->xport->ops->send(c->x->xstate, v, cnt, &want);
        if (r != -EAGAIN || want != TC_TRANSPORT_WANT_READ)
            return r;
        int rc = wait_other(c, want);
        if (rc < 0)
            return rc;
    }
}

/* The transport's own sendfile (kTLS: the kernel encrypts) when it has one
 * for this connection; else a copy: the file's bytes go through the
 * transport (encrypted in user space). The same bytes are read again when
 * the transport asks for the same send to be repeated (-EAGAIN), as TLS
 * requires. */
static ssize_t xport_sendfile(tc_conn *c, int file_fd, off_t *offset, size_t n)
{
    while (c->x->xport->ops->sendfile) {
        unsigned want = 0;
        ssize_t r = c->x->xport->ops->sendfile(c->x->xstate, file_fd, offset, n, &want);
        if (r == -ENOTSUP)
            break;
        if (r != -EAGAIN || want != TC_TRANSPORT_WANT_READ)
            return r;
        int rc = wait_other(c, want);
        if (rc < 0)
            return rc;
    }
    size_t len = n < FILE_CHUNK ? n : FILE_CHUNK;
    unsigned char *buf = malloc(len);
    if (!buf)
        return -ENOMEM;
    ssize_t r;
    do
        r = pread(file_fd, buf, len, *offset);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        r = -errno;
    else if (r > 0)
        r = xport_send(c, &(struct iovec){buf, (size_t)r}, 1);
    free(buf);
    if (r > 0)
        *offset += r;
    return r;
}

static int xport_shutdown_write(tc_conn *c)
{
    unsigned want = 0;
    int rc;
    while ((rc = c->x->xport->ops->shutdown(c->x->xstate, &want)) == -EAGAIN) {
        if ((rc = wait_other(c, want)) < 0)
            break;
    }
    int r2 = tc__sock_shutdown_how(c->fd, SHUT_WR);
    return rc < 0 ? rc : r2;
}

static size_t xport_pending(const tc_conn *c)
{
    return c->x->xport->ops->pending(c->x->xstate);
}

static const tc__io xport_io = {
    .recv = xport_recv,
    .send = xport_send,
    .sendfile = xport_sendfile,
    .shutdown_write = xport_shutdown_write,
    .pending = xport_pending,
};

int tc__xport_attach(tc_conn *c, tc_transport *t, int client, const char *host)
{
    if (!t || !t->ops)
        return -EINVAL;
    if (!tc__chan_ext(c))
        return -ENOMEM;
    tc__chan_consume_view(c);
    void *st = NULL;
    int rc = t->ops->attach(t, c->fd, client, host,
                            c->b->rlen ? c->b->rbuf + c->b->roff : NULL, c->b->rlen, &st);
    if (rc < 0)
        return rc;
    /* The bytes behind a PROXY header were the transport's: they are its now. */
    tc__chan_take(c, c->b->rlen);
    c->x->xport = t;
    c->x->xstate = st;
    c->io = &xport_io;
    return 0;
}

void tc__xport_goodbye(tc_conn *c)
{
    unsigned want;
    if (c->x->xport) /* the transport skips it when the stream is broken or never opened */
        (void)c->x->xport->ops->shutdown(c->x->xstate, &want);
}

int tc__xport_step(tc_conn *c)
{
    unsigned want = 0;
    int rc = c->x->xport->ops->handshake(c->x->xstate, &want);
    c->xwant = (unsigned char)(rc == -EAGAIN ? want : 0);
    return rc == 0 ? 1 : rc == -EAGAIN ? 0 : rc;
}

int tc__xport_handshake(tc_conn *c, int64_t deadline)
{
    for (;;) {
        int rc = tc__xport_step(c);
        if (rc != 0)
            return rc < 0 ? rc : 0;
        rc = c->stopfd >= 0 ? tc__sock_wait_stop(c->fd, poll_events(c->xwant), c->stopfd, deadline)
                            : tc__sock_wait(c->fd, poll_events(c->xwant), deadline);
        if (rc < 0 && rc != -EINTR)
            return rc;
    }
}

int64_t tc__xport_deadline(const tc_transport *t)
{
    int ms = t->handshake_timeout_ms > 0 ? t->handshake_timeout_ms : HANDSHAKE_DEFAULT_MS;
    return tc__deadline_ms(ms);
}

const char *tc__xport_why(const tc_conn *c)
{
    const char *w = c->x->xport && c->x->xport->ops->why ? c->x->xport->ops->why(c->x->xstate) : NULL;
    return w ? w : "";
}

tc_transport *tc_conn_transport(const tc_conn *conn, void **state)
{
    if (state)
        *state = conn ? conn->x->xstate : NULL;
    return conn ? conn->x->xport : NULL;
}
