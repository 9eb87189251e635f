/* SPDX-License-Identifier: MIT */
/* The channel's public API: accessors, options, reads, writes. Buffers are
 * chan.c's; every wait and every send goes through the channel's driver
 * (c->drv), so this file is the same over any transport. */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"

int tc_conn_fd(const tc_conn *conn)
{
    return conn ? conn->fd : -EINVAL;
}

const tc_addr *tc_conn_peer(const tc_conn *conn)
{
    return conn ? tc__chan_peer(conn) : NULL;
}

const tc_addr *tc_conn_local(const tc_conn *conn)
{
    return conn ? conn->local : NULL;
}

const tc_addr *tc_conn_proxy_peer(const tc_conn *conn)
{
    return conn && conn->x->proxy ? &conn->x->proxy->peer : NULL;
}

const tc_addr *tc_conn_proxy_dest(const tc_conn *conn)
{
    return conn && conn->x->proxy && conn->x->proxy->dest.len ? &conn->x->proxy->dest : NULL;
}

tc_server *tc_conn_server(const tc_conn *conn)
{
    return conn ? conn->srv : NULL;
}

uint64_t tc_conn_id(const tc_conn *conn)
{
    return conn ? conn->id : 0;
}

void tc_conn_set_data(tc_conn *conn, void *data)
{
    if (conn)
        conn->data = data;
}

void *tc_conn_data(const tc_conn *conn)
{
    return conn ? conn->data : NULL;
}

/* ---- options ------------------------------------------------------------ */

int tc_conn_set_timeout(tc_conn *conn, int ms)
{
    if (!conn)
        return -EINVAL;
    conn->timeout_ms = ms > 0 ? ms : 0;
    return 0;
}

int tc_conn_set_deadline(tc_conn *conn, int64_t deadline_ns)
{
    if (!conn || deadline_ns < 0)
        return -EINVAL;
    conn->deadline = deadline_ns ? deadline_ns : TC__NO_DEADLINE;
    return 0;
}

int tc_conn_set_buffer_sizes(tc_conn *conn, size_t read_size, size_t write_size)
{
    if (!conn || read_size > TC__BUF_MAX || write_size > TC__BUF_MAX)
        return -EINVAL;
    conn->rsize = (uint32_t)(read_size ? read_size : TC__BUF_DEFAULT);
    conn->wsize = (uint32_t)(write_size ? write_size : TC__BUF_DEFAULT);
    return 0;
}

int tc_conn_set_nodelay(tc_conn *conn, int on)
{
    if (!conn)
        return -EINVAL;
    int rc = tc__sock_setopt(conn->fd, IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0);
    return rc == -ENOPROTOOPT ? -EOPNOTSUPP : rc;
}

int tc_conn_set_keepalive(tc_conn *conn, int on, int idle_s)
{
    if (!conn || idle_s < 0)
        return -EINVAL;
    int rc = tc__sock_setopt(conn->fd, SOL_SOCKET, SO_KEEPALIVE, on ? 1 : 0);
    if (rc == 0 && on && idle_s > 0) {
        rc = tc__sock_setopt(conn->fd, IPPROTO_TCP, TCP_KEEPIDLE, idle_s);
        if (rc == 0)
            rc = tc__sock_setopt(conn->fd, IPPROTO_TCP, TCP_KEEPINTVL, idle_s);
    }
    return rc == -ENOPROTOOPT ? -EOPNOTSUPP : rc;
}

int tc_conn_set_codec(tc_conn *conn, const tc_codec *codec)
{
    if (!conn)
        return -EINVAL;
    if (codec && tc_codec_validate(codec) < 0)
        return -EINVAL;
    return tc__chan_set_codec(conn, codec);
}

const tc_codec *tc_conn_codec(const tc_conn *conn)
{
    return conn ? conn->codec : NULL;
}

/* ---- waiting ------------------------------------------------------------ */

int64_t tc__conn_op_deadline(const tc_conn *c)
{
    int64_t d = tc__deadline_ms(c->timeout_ms);
    return c->deadline < d ? c->deadline : d;
}

/* One receive into the buffer through the driver, waiting until deadline. */
static ssize_t fill(tc_conn *c, int64_t deadline, size_t limit)
{
    return c->drv->fill(c, deadline, limit);
}

/* ---- read side ---------------------------------------------------------- */

/* The common start of every read call: end the last view, report a broken side. */
static int read_start(tc_conn *c)
{
    if (!c->drv->fill)
        return -ENOTSUP; /* the driver reads for the handler (an event loop) */
    tc__chan_consume_view(c);
    return c->rerr;
}

ssize_t tc_conn_read(tc_conn *conn, void *buf, size_t n)
{
    if (!conn || (!buf && n))
        return -EINVAL;
    int rc = read_start(conn);
    if (rc < 0)
        return rc;
    if (n == 0)
        return 0;
    if (conn->b->rlen == 0) {
        if (conn->reof)
            return TC_EOF;
        int64_t deadline = tc__conn_op_deadline(conn);
        if (n >= conn->rsize) {
            /* A large read: straight into the caller's buffer, no copy. */
            tc__chan_trim(conn, 0);
            ssize_t r = conn->drv->recv(conn, buf, n, deadline);
            if (r > 0)
                return r;
            if (r == 0) {
                conn->reof = 1;
                return TC_EOF;
            }
            return tc__chan_broken(conn, (int)r);
        }
        ssize_t r = fill(conn, deadline, conn->rsize);
        if (r < 0)
            return r == TC_EOF ? r : tc__chan_broken(conn, (int)r);
    }
    size_t k = conn->b->rlen < n ? conn->b->rlen : n;
    memcpy(buf, conn->b->rbuf + conn->b->roff, k);
    conn->b->rview = k; /* consumed now: the caller has its copy */
    tc__chan_consume_view(conn);
    return (ssize_t)k;
}

/* Put bytes the caller had already taken back in front of the (empty) buffer. */
static int unread(tc_conn *c, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (tc__chan_own(c) < 0)
        return -ENOMEM;
    if (c->b->rcap < n) {
        unsigned char *nb = realloc(c->b->rbuf, n);
        if (!nb)
            return -ENOMEM;
        c->b->rbuf = nb;
        c->b->rcap = n;
    }
    memcpy(c->b->rbuf, p, n);
    c->b->roff = 0;
    c->b->rlen = n;
    return 0;
}

ssize_t tc_conn_read_exact(tc_conn *conn, void *buf, size_t n)
{
    if (!conn || (!buf && n))
        return -EINVAL;
    int rc = read_start(conn);
    if (n == 0)
        return 0;
    if (rc < 0)
        return rc;
    unsigned char *dst = buf;
    size_t got = 0;
    int64_t deadline = tc__conn_op_deadline(conn);
    while (got < n) {
        if (conn->b->rlen > 0) {
            size_t k = conn->b->rlen < n - got ? conn->b->rlen : n - got;
            memcpy(dst + got, conn->b->rbuf + conn->b->roff, k);
            got += k;
            conn->b->rview = k;
            tc__chan_consume_view(conn);
            continue;
        }
        ssize_t r;
        if (conn->reof) {
            r = TC_EOF;
        } else if (n - got >= conn->rsize) {
            tc__chan_trim(conn, 0); /* empty: the rest goes straight into the caller's buffer */
            r = conn->drv->recv(conn, dst + got, n - got, deadline);
            if (r > 0) {
                got += (size_t)r;
                continue;
            }
            if (r == 0) {
                conn->reof = 1;
                r = TC_EOF;
            }
        } else {
            r = fill(conn, deadline, conn->rsize);
            if (r > 0)
                continue;
        }
        if (r == TC_EOF)
            return got == 0 ? TC_EOF : tc__chan_broken(conn, TC_EPARTIAL);
        if (r == -ETIMEDOUT || r == -ENOMEM || r == TC_ESHUTDOWN) {
            /* Consume nothing: the caller can try again with the same n. */
            rc = unread(conn, dst, got);
            return rc < 0 ? tc__chan_broken(conn, rc) : (int)r;
        }
        return tc__chan_broken(conn, (int)r);
    }
    return (ssize_t)n;
}

/* Read one frame of codec into the buffer: on 0 the payload is at
 * rbuf + roff + *off, *plen long, and the frame is the new view. */
static int read_framed(tc_conn *c, const tc_codec *codec, size_t *off, size_t *plen)
{
    int rc = read_start(c);
    if (rc < 0)
        return rc;
    size_t limit = tc_codec_max_frame(codec) + tc__codec_overhead(codec);
    size_t scanned = 0, flen = 0;
    int64_t deadline = tc__conn_op_deadline(c);
    for (;;) {
        rc = tc__codec_scan_from(codec, c->b->rbuf ? c->b->rbuf + c->b->roff : NULL, c->b->rlen, scanned,
                                 off, plen, &flen);
        if (rc == 1) {
            c->b->rview = flen;
            return 0;
        }
        if (rc < 0)
            return tc__chan_broken(c, rc);
        scanned = c->b->rlen;
        if (c->reof) /* the cut-short tail stays buffered for plain reads */
            return c->b->rlen ? TC_EPARTIAL : TC_EOF;
        ssize_t r = fill(c, deadline, limit);
        if (r < 0 && r != TC_EOF)
            return tc__chan_broken(c, (int)r);
    }
}

int tc_conn_read_until(tc_conn *conn, const void *delim, size_t dlen, size_t max,
                       const void **ptr, size_t *len)
{
    tc_codec codec;
    if (!conn || !ptr || !len || tc_codec_delimited(&codec, delim, dlen) < 0 ||
        tc_codec_set_max_frame(&codec, max) < 0)
        return -EINVAL;
    size_t off, plen;
    int rc = read_framed(conn, &codec, &off, &plen);
    if (rc < 0)
        return rc;
    *ptr = conn->b->rbuf + conn->b->roff + off;
    *len = plen;
    return 0;
}

int tc_conn_read_line(tc_conn *conn, size_t max, const char **line, size_t *len)
{
    const void *p;
    if (!line)
        return -EINVAL;
    int rc = tc_conn_read_until(conn, "\n", 1, max, &p, len);
    if (rc == 0)
        *line = p;
    return rc;
}

int tc_conn_read_frame(tc_conn *conn, const void **msg, size_t *len)
{
    if (!conn || !msg || !len)
        return -EINVAL;
    size_t off, plen;
    int rc = read_framed(conn, conn->codec, &off, &plen);
    if (rc < 0)
        return rc;
    *msg = conn->b->rbuf + conn->b->roff + off;
    *len = plen;
    return 0;
}

int tc_conn_peek(tc_conn *conn, size_t n, const void **ptr, size_t *len)
{
    if (!conn || !ptr || !len)
        return -EINVAL;
    int rc = read_start(conn);
    if (rc < 0)
        return rc;
    size_t bound = tc_codec_max_frame(conn->codec);
    if (bound < conn->rsize)
        bound = conn->rsize;
    if (n > bound)
        return TC_ETOOBIG;
    int64_t deadline = tc__conn_op_deadline(conn);
    while (conn->b->rlen < n) {
        if (conn->reof)
            break;
        ssize_t r = fill(conn, deadline, bound);
        if (r < 0 && r != TC_EOF)
            return tc__chan_broken(conn, (int)r);
    }
    *ptr = conn->b->rbuf ? conn->b->rbuf + conn->b->roff : (const void *)"";
    *len = conn->b->rlen;
    return conn->b->rlen < n ? TC_EOF : 0;
}

int tc__conn_read_proxy(tc_conn *c, int64_t deadline, tc__proxy_hdr *h)
{
    if (!c->drv->fill)
        return -ENOTSUP;
    for (;;) {
        int rc = tc__chan_proxy(c, h);
        if (rc != TC__PROXY_MORE)
            return rc;
        /* Never more than the longest header in one receive: what follows
         * the header is read, but stays in the buffer for the handler. */
        ssize_t r = fill(c, deadline, TC__PROXY_MAX);
        if (r < 0 && r != TC_EOF)
            return r == -ETIMEDOUT || r == -ENOMEM ? (int)r : tc__chan_broken(c, (int)r);
    }
}

/* ---- write side --------------------------------------------------------- */

/* The start of every write call: whether conn is a channel, and if so none
 * of the call's bytes taken yet (the driver records its progress). */
static int write_start(tc_conn *c)
{
    if (!c)
        return 0;
    tc__chan_set_sent(c, 0);
    return 1;
}

ssize_t tc_conn_last_sent(const tc_conn *conn)
{
    if (!conn)
        return -EINVAL;
    return (ssize_t)atomic_load_explicit(&conn->last_sent, memory_order_relaxed);
}

/* Send everything queued, then vec: through the driver (which may queue). */
static ssize_t send_vec(tc_conn *c, const struct iovec *vec, int cnt, size_t total)
{
    return c->drv->send(c, vec, cnt, total);
}

static int flush_buffer(tc_conn *c)
{
    ssize_t r = send_vec(c, NULL, 0, 0);
    return r < 0 ? (int)r : 0;
}

int tc_conn_flush(tc_conn *conn)
{
    if (!write_start(conn))
        return -EINVAL;
    return flush_buffer(conn);
}

void tc__conn_flush_quiet(tc_conn *conn)
{
    if (conn && conn->b->wlen > conn->b->woff)
        (void)flush_buffer(conn);
}

ssize_t tc_conn_write(tc_conn *conn, const void *buf, size_t n)
{
    if (!write_start(conn) || (!buf && n) || n > SSIZE_MAX)
        return -EINVAL;
    if (conn->werr)
        return conn->werr;
    if (n == 0)
        return 0;
    size_t pending = conn->b->wlen - conn->b->woff;
    if (pending + n > conn->wsize) {
        if (n >= conn->wsize) {
            /* Larger than the buffer: send it directly, behind what is buffered. */
            struct iovec v = {(void *)buf, n};
            return send_vec(conn, &v, 1, n);
        }
        int rc = flush_buffer(conn);
        if (rc < 0)
            return rc; /* nothing of this call was taken */
    }
    int rc = tc__chan_reserve(conn, n);
    if (rc < 0)
        return rc;
    memcpy(conn->b->wbuf + conn->b->wlen, buf, n);
    conn->b->wlen += n;
    tc__chan_set_sent(conn, n); /* queued: it goes out with the next flush */
    return (ssize_t)n;
}

int tc_conn_printf(tc_conn *conn, const char *fmt, ...)
{
    if (!write_start(conn) || !fmt)
        return -EINVAL;
    if (conn->werr)
        return conn->werr;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    size_t need = (size_t)n + 1; /* vsnprintf writes a NUL we then drop */
    int rc;
    if ((size_t)n < conn->wsize) {
        if (conn->b->wlen - conn->b->woff + (size_t)n > conn->wsize && (rc = flush_buffer(conn)) < 0)
            return rc;
        if ((rc = tc__chan_reserve(conn, need)) < 0)
            return rc;
        va_start(ap, fmt);
        /* n bytes, as measured above */
        (void)vsnprintf((char *)conn->b->wbuf + conn->b->wlen, need, fmt, ap);
        va_end(ap);
        conn->b->wlen += (size_t)n;
        tc__chan_set_sent(conn, (size_t)n);
        return n;
    }
    char *tmp = malloc(need);
    if (!tmp)
        return -ENOMEM;
    va_start(ap, fmt);
    (void)vsnprintf(tmp, need, fmt, ap); /* n bytes, measured above */
    va_end(ap);
    struct iovec v = {tmp, (size_t)n};
    ssize_t r = send_vec(conn, &v, 1, (size_t)n);
    free(tmp);
    return r < 0 ? (int)r : n;
}

ssize_t tc_conn_send_all(tc_conn *conn, const void *buf, size_t n)
{
    if (!write_start(conn) || (!buf && n) || n > SSIZE_MAX)
        return -EINVAL;
    struct iovec v = {(void *)buf, n};
    return send_vec(conn, &v, 1, n);
}

ssize_t tc_conn_writev(tc_conn *conn, const struct iovec *iov, int iovcnt)
{
    if (!write_start(conn) || iovcnt < 0 || (!iov && iovcnt))
        return -EINVAL;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (!iov[i].iov_base && iov[i].iov_len)
            return -EINVAL;
        if (iov[i].iov_len > SSIZE_MAX - total)
            return -EINVAL;
        total += iov[i].iov_len;
    }
    return send_vec(conn, iov, iovcnt, total);
}

ssize_t tc_conn_sendfile(tc_conn *conn, int file_fd, off_t offset, size_t count)
{
    if (!write_start(conn) || file_fd < 0 || offset < 0)
        return -EINVAL;
    if (!conn->drv->sendfile)
        return -ENOTSUP; /* an event loop: it would block the loop */
    return conn->drv->sendfile(conn, file_fd, offset, count > SSIZE_MAX ? SSIZE_MAX : count);
}

_Thread_local struct tc__sent_window tc__tl_sent;

ssize_t tc_conn_write_frame(tc_conn *conn, const void *buf, size_t len)
{
    if (!write_start(conn) || (!buf && len))
        return -EINVAL;
    if (len > SSIZE_MAX)
        return -EINVAL;
    if (conn->proto)
        return conn->proto->send(conn, buf, len); /* its own framing */
    tc_codec_envelope env;
    int rc = tc__codec_encode(conn->codec, buf, len, &env);
    if (rc < 0)
        return rc;
    /* Only the pieces there are: a raw reply is one send() of the caller's bytes. */
    struct iovec v[3];
    int n = 0;
    if (env.head_len)
        v[n++] = (struct iovec){env.head, env.head_len};
    v[n++] = (struct iovec){(void *)buf, len};
    if (env.tail_len)
        v[n++] = (struct iovec){env.tail, env.tail_len};
    /* The driver counts the framing too: it records the payload's part. A
     * send from another thread has handed conn to its loop when this
     * returns, so conn is not touched after it. */
    tc__tl_sent = (struct tc__sent_window){conn, env.head_len, len};
    ssize_t r = send_vec(conn, v, n, env.head_len + len + env.tail_len);
    tc__tl_sent.c = NULL;
    return r < 0 ? r : (ssize_t)len; /* the caller's bytes, not the framing */
}

ssize_t tc_conn_send(tc_conn *conn, const void *buf, size_t len)
{
    return tc_conn_write_frame(conn, buf, len);
}

int tc_conn_shutdown_write(tc_conn *conn)
{
    if (!write_start(conn))
        return -EINVAL;
    return conn->drv->shutdown_write(conn); /* after the queued output */
}

void tc_conn_close(tc_conn *conn)
{
    /* Server channels belong to the library, which closes them after finish. */
    if (conn && !conn->srv) {
        tc__conn_flush_quiet(conn);
        tc__chan_free(conn);
    }
}


size_t tc_conn_pending(const tc_conn *conn)
{
    if (!conn)
        return 0;
    return conn->drv->pending ? conn->drv->pending(conn) : tc__chan_pending(conn);
}

int tc_conn_set_timer(tc_conn *conn, int delay_ms, int interval_ms)
{
    if (!conn || delay_ms < 0 || interval_ms < 0)
        return -EINVAL;
    if (!conn->drv->set_timer)
        return -ENOTSUP; /* only an event loop has timers */
    return conn->drv->set_timer(conn, delay_ms, interval_ms);
}
