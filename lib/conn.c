/* SPDX-License-Identifier: MIT */
/* The channel: a socket with lazily allocated, bounded read and write
 * buffers, whose blocking calls wait against an absolute deadline (poll on a
 * non-blocking socket; recv under SO_RCVTIMEO on a blocking one), so timeouts
 * are exact and signals never leak out. */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"

/* Entries of the caller's vector passed to one sendmsg; never over IOV_MAX. */
#define IOV_WINDOW (64 < IOV_MAX ? 64 : IOV_MAX)
/* The read buffer of a channel asleep in recv (see fill_idle): room for a
 * typical request, small because every idle threading connection holds one
 * (with it, 9.5-9.7 KiB of RSS per idle connection; 1 KiB made it 10.0). */
#define IDLE_ROOM ((size_t)512)

int tc__conn_new(tc_conn **out, tc_server *srv, int fd, const tc_addr *peer, const tc_addr *local)
{
    tc_conn *c = calloc(1, sizeof *c + (local ? 0 : sizeof(tc_addr)));
    if (!c) {
        tc__close(fd);
        return -ENOMEM;
    }
    c->fd = fd;
    c->srv = srv;
    if (peer)
        c->peer = *peer;
    if (local) {
        c->local = local;
    } else {
        (void)tc__sock_local(fd, &c->own_local[0]);
        c->local = &c->own_local[0];
    }
    c->deadline = TC__NO_DEADLINE;
    c->rsize = c->wsize = TC__BUF_DEFAULT;
    atomic_init(&c->idle, 0);
    *out = c;
    return 0;
}

void tc__conn_free(tc_conn *conn)
{
    if (!conn)
        return;
    tc__close(conn->fd);
    if (!conn->rborrowed)
        free(conn->rbuf);
    free(conn->wbuf);
    free(conn->proxy);
    free(conn);
}

int tc_conn_fd(const tc_conn *conn)
{
    return conn ? conn->fd : -EINVAL;
}

const tc_addr *tc_conn_peer(const tc_conn *conn)
{
    return conn ? &conn->peer : NULL;
}

const tc_addr *tc_conn_local(const tc_conn *conn)
{
    return conn ? conn->local : NULL;
}

const tc_addr *tc_conn_proxy_peer(const tc_conn *conn)
{
    return conn && conn->proxy ? &conn->proxy->peer : NULL;
}

const tc_addr *tc_conn_proxy_dest(const tc_conn *conn)
{
    return conn && conn->proxy && conn->proxy->dest.len ? &conn->proxy->dest : NULL;
}

tc_server *tc_conn_server(const tc_conn *conn)
{
    return conn ? conn->srv : NULL;
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
    conn->rsize = read_size ? read_size : TC__BUF_DEFAULT;
    conn->wsize = write_size ? write_size : TC__BUF_DEFAULT;
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
    if (!codec)
        return tc_codec_raw(&conn->codec);
    if (tc_codec_validate(codec) < 0)
        return -EINVAL;
    conn->codec = *codec;
    return 0;
}

const tc_codec *tc_conn_codec(const tc_conn *conn)
{
    return conn ? &conn->codec : NULL;
}

/* ---- waiting ------------------------------------------------------------ */

/* The deadline of a call starting now: the earlier of timeout and deadline. */
static int64_t op_deadline(const tc_conn *c)
{
    int64_t d = tc__deadline_ms(c->timeout_ms);
    return c->deadline < d ? c->deadline : d;
}

/* The earlier of the call's deadline and idle_ms of silence from now. */
static int64_t read_deadline(const tc_conn *c, int64_t deadline)
{
    if (c->idle_ms > 0) {
        int64_t idle = tc__deadline_ms(c->idle_ms);
        if (idle < deadline)
            deadline = idle;
    }
    return deadline;
}

/* Slack of a cached socket timeout: one set a moment ago for the same
 * relative wait is kept (a setsockopt saved per request); it may end a
 * wait up to 1 ms late (the kernel rounds to a jiffy anyway) or up to an
 * eighth early (the caller then looks at the clock and waits again). */
#define TIMEO_LATE_NS ((int64_t)1000000)

/* Make the socket's SO_RCVTIMEO / SO_SNDTIMEO (*cur, as last set) fit a
 * wait of left ns (0: none). */
static int arm_timeout(tc_conn *c, int opt, int64_t *cur, int64_t left)
{
    if (left == 0 ? *cur == 0
                  : *cur != 0 && *cur <= left + TIMEO_LATE_NS && *cur >= left - left / 8)
        return 0;
    int rc = tc__sock_set_timeout(c->fd, opt, left);
    if (rc == 0)
        *cur = left;
    return rc;
}

/* The time left until deadline, for arm_timeout: 0 for none, -1 if passed. */
static int64_t time_left(int64_t deadline)
{
    if (deadline == TC__NO_DEADLINE)
        return 0;
    int64_t left = deadline - tc__now_ns();
    return left > 0 ? left : -1;
}

/* An error the socket reported behind bytes fill_idle() buffered: it is the
 * answer of the next receive, once those bytes are read. */
static int take_pending(tc_conn *c)
{
    int err = c->rpend;
    c->rpend = 0;
    return err;
}

/* A blocking socket: one recv that sleeps until input, the deadline or (if
 * intr) a signal: a count, 0 at the end of the stream, -ETIMEDOUT, -EINTR,
 * or an error. No poll first: the common wait costs one system call. */
static ssize_t recv_block(tc_conn *c, void *buf, size_t n, int64_t deadline, int intr)
{
    for (;;) {
        int64_t left = time_left(deadline);
        if (left < 0) {
            ssize_t r = tc__sock_recv(c->fd, buf, n); /* only what is there already */
            return r == -EAGAIN ? -ETIMEDOUT : r;
        }
        int rc = arm_timeout(c, SO_RCVTIMEO, &c->rcvtimeo, left);
        if (rc < 0)
            return rc;
        ssize_t r = tc__sock_recv_block(c->fd, buf, n);
        if (r >= 0 || (r == -EINTR && intr) || (r != -EINTR && r != -EAGAIN))
            return r;
        /* A signal, or SO_RCVTIMEO ran out: the loop recomputes the time left. */
    }
}

/* One receive into buf, waiting for input until the deadline (or idle_ms of
 * silence): a count, 0 at the end of the stream, or an error. */
static ssize_t recv_wait(tc_conn *c, void *buf, size_t n, int64_t deadline)
{
    ssize_t r;
    if (c->rpend)
        return take_pending(c);
    if (c->blocking) {
        r = recv_block(c, buf, n, read_deadline(c, deadline), 0);
    } else {
        for (;;) {
            if (c->rdry) {
                int rc = tc__sock_wait(c->fd, POLLIN, read_deadline(c, deadline));
                if (rc < 0)
                    return rc;
                c->rdry = 0;
            }
            if ((r = tc__sock_recv(c->fd, buf, n)) != -EAGAIN)
                break;
            c->rdry = 1;
        }
    }
    /* Less than asked: the socket is most likely empty now, so the next
     * read waits before it tries (saves a failing recv) and lets an empty
     * buffer go first. */
    if (r > 0)
        c->rdry = (size_t)r < n;
    return r;
}

/* ---- read side ---------------------------------------------------------- */

/* Drop the bytes of the last view: it ends with the next read call. */
static void consume_view(tc_conn *c)
{
    c->roff += c->rview;
    c->rlen -= c->rview;
    c->rview = 0;
    if (c->rlen == 0)
        c->roff = 0;
}

/* An idle channel holds no buffer memory: free buffers that are empty (a
 * read buffer only if it holds more than keep bytes). */
static void trim_keep(tc_conn *c, size_t keep)
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

static void trim(tc_conn *c)
{
    trim_keep(c, 0);
}

/* Make room for more input: at least one byte, ideally rsize (or double what
 * is buffered, to hold a growing frame), never a capacity over limit unless
 * the buffer already had it. */
static int make_room(tc_conn *c, size_t limit)
{
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

/* One receive into the buffer without waiting: the number of bytes added,
 * TC_EOF (and reof set), -EAGAIN, or an error. */
static ssize_t fill_once(tc_conn *c, size_t limit)
{
    int rc = make_room(c, limit);
    if (rc < 0)
        return rc;
    size_t room = c->rcap - c->roff - c->rlen;
    ssize_t r = tc__sock_recv(c->fd, c->rbuf + c->roff + c->rlen, room);
    if (r > 0) {
        c->rlen += (size_t)r;
        c->rdry = (size_t)r < room; /* as in recv_wait */
        return r;
    }
    if (r == -EAGAIN)
        c->rdry = 1;
    if (r == 0) {
        c->reof = 1;
        return TC_EOF;
    }
    return r;
}

void tc__conn_idle_buffer(tc_conn *c)
{
    if (!c->rbuf && (c->rbuf = malloc(IDLE_ROOM)))
        c->rcap = IDLE_ROOM;
}

/* Account for what a receive into the free end of the buffer returned. */
static ssize_t filled(tc_conn *c, ssize_t r)
{
    if (r > 0)
        c->rlen += (size_t)r;
    if (r != 0)
        return r;
    c->reof = 1;
    return TC_EOF;
}

/* A blocking socket, an empty buffer, about to sleep: a channel asleep in
 * recv holds a buffer, so it is a small one (no more than a poll-based wait
 * held: nothing but this); what does not fit is taken at once, without
 * sleeping, into a full-size buffer. Bytes added, TC_EOF, or an error
 * (-EINTR only if intr). */
static ssize_t fill_idle(tc_conn *c, int64_t deadline, size_t limit, int intr)
{
    if (c->rpend)
        return take_pending(c);
    size_t small = limit < IDLE_ROOM ? limit : IDLE_ROOM;
    trim_keep(c, small);
    int rc = make_room(c, small);
    if (rc < 0)
        return rc;
    size_t room = c->rcap - c->roff - c->rlen;
    ssize_t r = filled(c, recv_block(c, c->rbuf + c->roff + c->rlen, room, deadline, intr));
    if (r > 0 && r < (ssize_t)room)
        c->rdry = 1; /* most likely all there was: the next read sleeps here again */
    if (r != (ssize_t)room || room >= limit)
        return r;
    ssize_t more = fill_once(c, limit); /* sets rdry */
    if (more > 0)
        r += more;
    else if (more != -EAGAIN && more != TC_EOF && more != -ENOMEM)
        c->rpend = (int)more; /* reof, set by fill_once, is seen by the next read */
    return r;
}

/* One receive into the buffer, waiting for input until the deadline:
 * the number of bytes added, TC_EOF (and reof set), or an error. */
static ssize_t fill(tc_conn *c, int64_t deadline, size_t limit)
{
    if (c->blocking && c->rdry && c->rlen == 0)
        return fill_idle(c, read_deadline(c, deadline), limit, 0);
    if (c->rpend)
        return take_pending(c);
    if (c->rdry) {
        trim(c); /* about to sleep, most likely: an empty buffer goes back */
        if (!c->blocking) {
            int rc = tc__sock_wait(c->fd, POLLIN, read_deadline(c, deadline));
            if (rc < 0)
                return rc;
            c->rdry = 0;
        }
    }
    int rc = make_room(c, limit);
    if (rc < 0)
        return rc;
    return filled(c, recv_wait(c, c->rbuf + c->roff + c->rlen, c->rcap - c->roff - c->rlen,
                               deadline));
}

/* Remember a hard read error: the read side stays broken with it. */
static int broken(tc_conn *c, int err)
{
    if (err != -ETIMEDOUT && err != -ENOMEM && err != -EAGAIN)
        c->rerr = err;
    return err;
}

/* The common start of every read call: end the last view, report a broken side. */
static int read_start(tc_conn *c)
{
    if (c->ev)
        return -ENOTSUP; /* the event loop reads for the handler */
    consume_view(c);
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
    if (conn->rlen == 0) {
        if (conn->reof)
            return TC_EOF;
        int64_t deadline = op_deadline(conn);
        if (n >= conn->rsize) {
            /* A large read: straight into the caller's buffer, no copy. */
            trim(conn);
            ssize_t r = recv_wait(conn, buf, n, deadline);
            if (r > 0)
                return r;
            if (r == 0) {
                conn->reof = 1;
                return TC_EOF;
            }
            return broken(conn, (int)r);
        }
        ssize_t r = fill(conn, deadline, conn->rsize);
        if (r < 0)
            return r == TC_EOF ? r : broken(conn, (int)r);
    }
    size_t k = conn->rlen < n ? conn->rlen : n;
    memcpy(buf, conn->rbuf + conn->roff, k);
    conn->rview = k; /* consumed now: the caller has its copy */
    consume_view(conn);
    return (ssize_t)k;
}

/* The receive size for frames of the channel's codec: a buffer never grows
 * past what one frame can need (a peer never makes us hold more). */
static size_t frame_room(const tc_conn *c)
{
    size_t limit = tc_codec_max_frame(&c->codec) + tc__codec_overhead(&c->codec);
    return c->rsize < limit ? c->rsize : limit;
}

/* Put bytes the caller had already taken back in front of the (empty) buffer. */
static int unread(tc_conn *c, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (c->rcap < n) {
        unsigned char *nb = realloc(c->rbuf, n);
        if (!nb)
            return -ENOMEM;
        c->rbuf = nb;
        c->rcap = n;
    }
    memcpy(c->rbuf, p, n);
    c->roff = 0;
    c->rlen = n;
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
    int64_t deadline = op_deadline(conn);
    while (got < n) {
        if (conn->rlen > 0) {
            size_t k = conn->rlen < n - got ? conn->rlen : n - got;
            memcpy(dst + got, conn->rbuf + conn->roff, k);
            got += k;
            conn->rview = k;
            consume_view(conn);
            continue;
        }
        ssize_t r;
        if (conn->reof) {
            r = TC_EOF;
        } else if (n - got >= conn->rsize) {
            trim(conn); /* empty: the rest goes straight into the caller's buffer */
            r = recv_wait(conn, dst + got, n - got, deadline);
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
            return got == 0 ? TC_EOF : broken(conn, TC_EPARTIAL);
        if (r == -ETIMEDOUT || r == -ENOMEM) {
            /* Consume nothing: the caller can try again with the same n. */
            rc = unread(conn, dst, got);
            return rc < 0 ? broken(conn, rc) : (int)r;
        }
        return broken(conn, (int)r);
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
    int64_t deadline = op_deadline(c);
    for (;;) {
        rc = tc__codec_scan_from(codec, c->rbuf ? c->rbuf + c->roff : NULL, c->rlen, scanned,
                                 off, plen, &flen);
        if (rc == 1) {
            c->rview = flen;
            return 0;
        }
        if (rc < 0)
            return broken(c, rc);
        scanned = c->rlen;
        if (c->reof)
            return c->rlen ? broken(c, TC_EPARTIAL) : TC_EOF;
        ssize_t r = fill(c, deadline, limit);
        if (r < 0 && r != TC_EOF)
            return broken(c, (int)r);
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
    *ptr = conn->rbuf + conn->roff + off;
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
    int rc = read_framed(conn, &conn->codec, &off, &plen);
    if (rc < 0)
        return rc;
    *msg = conn->rbuf + conn->roff + off;
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
    size_t bound = tc_codec_max_frame(&conn->codec);
    if (bound < conn->rsize)
        bound = conn->rsize;
    if (n > bound)
        return TC_ETOOBIG;
    int64_t deadline = op_deadline(conn);
    while (conn->rlen < n) {
        if (conn->reof)
            break;
        ssize_t r = fill(conn, deadline, bound);
        if (r < 0 && r != TC_EOF)
            return broken(conn, (int)r);
    }
    *ptr = conn->rbuf ? conn->rbuf + conn->roff : (const void *)"";
    *len = conn->rlen;
    return conn->rlen < n ? TC_EOF : 0;
}

int tc__conn_proxy_nb(tc_conn *c, tc__proxy_hdr *h)
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

int tc__conn_read_proxy(tc_conn *c, int64_t deadline, tc__proxy_hdr *h)
{
    for (;;) {
        int rc = tc__conn_proxy_nb(c, h);
        if (rc != TC__PROXY_MORE)
            return rc;
        /* Never more than the longest header in one receive: what follows
         * the header is read, but stays in the buffer for the handler. */
        ssize_t r = fill(c, deadline, TC__PROXY_MAX);
        if (r < 0 && r != TC_EOF)
            return r == -ETIMEDOUT || r == -ENOMEM ? (int)r : broken(c, (int)r);
    }
}

int tc__conn_wait_message(tc_conn *c)
{
    int64_t since = c->idle_since;
    c->idle_since = 0; /* only the first wait counts from the accept */
    int rc = read_start(c);
    if (rc < 0)
        return rc;
    if (c->rlen > 0)
        return 0;
    if (c->reof)
        return TC_EOF;
    if (c->rpend)
        return broken(c, take_pending(c));
    trim_keep(c, c->drain_reaches ? IDLE_ROOM : 0); /* fill_idle keeps a small one */
    /* Idle, then look at the flag: a drain that starts after this store
     * finds the channel idle and shuts it; one that started before it is
     * seen here (both are sequentially consistent). */
    atomic_store(&c->idle, 1);
    int64_t deadline = op_deadline(c);
    if (c->idle_ms > 0) {
        int64_t idle = since ? since + (int64_t)c->idle_ms * TC_NS_PER_MS
                             : tc__deadline_ms(c->idle_ms);
        if (idle < deadline)
            deadline = idle;
    }
    for (;;) {
        if (c->drain_reaches) {
            if (tc_server_shutting_down(c->srv)) {
                rc = TC_ESHUTDOWN;
                break;
            }
            /* Sleep in recv itself: a drain shuts our read side (we are
             * marked idle), which ends it like the peer's end of stream. */
            ssize_t r = fill_idle(c, deadline, frame_room(c), 1);
            if (r == -EINTR)
                continue; /* a signal: perhaps the one that asked for shutdown */
            rc = r > 0 ? 0 : (int)r;
            if (rc == TC_EOF && tc_server_shutting_down(c->srv))
                rc = TC_ESHUTDOWN;
            break;
        }
        /* The wait watches stopfd ahead of the socket: no separate look at
         * the flag, which costs a forked child a poll() per message. */
        rc = tc__sock_wait_stop(c->fd, POLLIN, c->srv ? c->srv->stopfd : -1, deadline);
        if (rc == -ETIMEDOUT && tc__sock_readable(c->fd))
            rc = 0; /* input was there as the clock ran out (a queued first wait) */
        if (rc == -EINTR)
            continue; /* a signal: perhaps the one that asked for shutdown */
        if (rc < 0)
            break;
        ssize_t r = fill_once(c, frame_room(c));
        if (r == -EAGAIN)
            continue; /* a spurious wake-up */
        rc = r > 0 ? 0 : (int)r;
        if (rc == TC_EOF && c->srv && tc_server_shutting_down(c->srv))
            rc = TC_ESHUTDOWN; /* our read side was shut by the drain */
        break;
    }
    atomic_store(&c->idle, 0);
    return rc == 0 || rc == TC_EOF || rc == TC_ESHUTDOWN || rc == -ETIMEDOUT ? rc
                                                                            : broken(c, rc);
}

/* ---- write side --------------------------------------------------------- */

/* One send of what is queued in wbuf, then vec from (idx, ioff), through a
 * window of at most IOV_WINDOW pieces: the count sent, 0 if nothing was left,
 * or the socket's answer (-EAGAIN...). */
static ssize_t send_window(tc_conn *c, const struct iovec *vec, int cnt, int idx, size_t ioff)
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
    /* One piece (the usual reply): send() costs the kernel less than sendmsg(). */
    return k == 1 ? tc__sock_send(c->fd, win[0].iov_base, win[0].iov_len)
                  : tc__sock_sendmsg(c->fd, win, k);
}

/* Account for x bytes sent: first from wbuf, the rest from vec, moving
 * (idx, ioff) exactly. Returns how many of the caller's bytes went out. */
static size_t advance(tc_conn *c, const struct iovec *vec, int cnt, int *idx, size_t *ioff,
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

/* Send everything in wbuf[woff, wlen) and vec (total bytes), as few sendmsg
 * calls as the socket allows, advancing exactly through partial sends. */
static ssize_t send_vec(tc_conn *c, const struct iovec *vec, int cnt, size_t total)
{
    /* Event mode first: the caller may be a foreign thread, and the write
     * side (werr included) belongs to the loop, which checks it itself. */
    if (c->ev)
        return tc__event_send(c, vec, cnt, total); /* queued, never blocks the loop */
    if (c->werr)
        return c->werr;
    int64_t deadline = op_deadline(c);
    int idx = 0;
    size_t ioff = 0, sent = 0;
    while (c->woff < c->wlen || sent < total) {
        ssize_t r = send_window(c, vec, cnt, idx, ioff);
        if (r > 0) {
            sent += advance(c, vec, cnt, &idx, &ioff, (size_t)r);
            continue;
        }
        if (r == -EAGAIN)
            r = tc__sock_wait(c->fd, POLLOUT, deadline);
        if (r == 0)
            continue;
        /* A timeout before any of the caller's bytes left keeps the stream
         * consistent (the buffer holds exactly the unsent rest); after some
         * did, or on any other error, the write side is broken. */
        if (r != -ETIMEDOUT || sent > 0)
            c->werr = (int)r;
        return r;
    }
    return (ssize_t)total;
}

static int flush_buffer(tc_conn *c)
{
    ssize_t r = send_vec(c, NULL, 0, 0);
    return r < 0 ? (int)r : 0;
}

int tc_conn_flush(tc_conn *conn)
{
    if (!conn)
        return -EINVAL;
    return flush_buffer(conn);
}

void tc__conn_flush_quiet(tc_conn *conn)
{
    if (conn && conn->wlen > conn->woff)
        (void)flush_buffer(conn);
}

/* Room for n more bytes in the write buffer (which is empty or has room). */
static int wbuf_reserve(tc_conn *c, size_t n)
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
    unsigned char *nb = realloc(c->wbuf, cap);
    if (!nb)
        return -ENOMEM;
    c->wbuf = nb;
    c->wcap = cap;
    return 0;
}

ssize_t tc_conn_write(tc_conn *conn, const void *buf, size_t n)
{
    if (!conn || (!buf && n) || n > SSIZE_MAX)
        return -EINVAL;
    if (conn->werr)
        return conn->werr;
    if (n == 0)
        return 0;
    size_t pending = conn->wlen - conn->woff;
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
    int rc = wbuf_reserve(conn, n);
    if (rc < 0)
        return rc;
    memcpy(conn->wbuf + conn->wlen, buf, n);
    conn->wlen += n;
    return (ssize_t)n;
}

int tc_conn_printf(tc_conn *conn, const char *fmt, ...)
{
    if (!conn || !fmt)
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
        if (conn->wlen - conn->woff + (size_t)n > conn->wsize && (rc = flush_buffer(conn)) < 0)
            return rc;
        if ((rc = wbuf_reserve(conn, need)) < 0)
            return rc;
        va_start(ap, fmt);
        /* n bytes, as measured above */
        (void)vsnprintf((char *)conn->wbuf + conn->wlen, need, fmt, ap);
        va_end(ap);
        conn->wlen += (size_t)n;
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
    if (!conn || (!buf && n) || n > SSIZE_MAX)
        return -EINVAL;
    struct iovec v = {(void *)buf, n};
    return send_vec(conn, &v, 1, n);
}

ssize_t tc_conn_writev(tc_conn *conn, const struct iovec *iov, int iovcnt)
{
    if (!conn || iovcnt < 0 || (!iov && iovcnt))
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
    if (!conn || file_fd < 0 || offset < 0)
        return -EINVAL;
    if (conn->ev)
        return -ENOTSUP; /* it would block the event loop */
    if (count > SSIZE_MAX)
        count = SSIZE_MAX;
    int rc = flush_buffer(conn);
    if (rc < 0)
        return rc;
    int64_t deadline = op_deadline(conn);
    size_t sent = 0;
    while (sent < count) {
        /* sendfile has no MSG_DONTWAIT: on a blocking socket it sleeps, for
         * no longer than the time left. */
        int64_t left = conn->blocking ? time_left(deadline) : 0;
        if (left < 0) {
            rc = -ETIMEDOUT;
            if (sent > 0)
                conn->werr = rc;
            return rc;
        }
        if (conn->blocking && (rc = arm_timeout(conn, SO_SNDTIMEO, &conn->sndtimeo, left)) < 0)
            return rc;
        ssize_t r = tc__sock_sendfile(conn->fd, file_fd, &offset, count - sent);
        if (r > 0) {
            sent += (size_t)r;
            continue;
        }
        if (r == 0)
            break; /* the file ended */
        if ((r == -EAGAIN || r == -EINTR) && (r = tc__sock_wait(conn->fd, POLLOUT, deadline)) == 0)
            continue;
        if (r != -ETIMEDOUT || sent > 0)
            conn->werr = (int)r;
        return r;
    }
    return (ssize_t)sent;
}

ssize_t tc_conn_write_frame(tc_conn *conn, const void *buf, size_t len)
{
    if (!conn || (!buf && len))
        return -EINVAL;
    if (len > SSIZE_MAX)
        return -EINVAL;
    tc_codec_envelope env;
    int rc = tc__codec_encode(&conn->codec, buf, len, &env);
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
    ssize_t r = send_vec(conn, v, n, env.head_len + len + env.tail_len);
    return r < 0 ? r : (ssize_t)len; /* the caller's bytes, not the framing */
}

ssize_t tc_conn_send(tc_conn *conn, const void *buf, size_t len)
{
    return tc_conn_write_frame(conn, buf, len);
}

int tc_conn_shutdown_write(tc_conn *conn)
{
    if (!conn)
        return -EINVAL;
    if (conn->ev)
        return tc__event_shutdown_write(conn); /* after the queued output */
    int rc = flush_buffer(conn);
    if (rc < 0)
        return rc;
    return tc__sock_shutdown_how(conn->fd, SHUT_WR);
}

void tc_conn_close(tc_conn *conn)
{
    /* Server channels belong to the library, which closes them after finish. */
    if (conn && !conn->srv) {
        tc__conn_flush_quiet(conn);
        tc__conn_free(conn);
    }
}

/* ---- the event loop's side (mode_event.c) -------------------------------- */

ssize_t tc__conn_fill_nb(tc_conn *c, unsigned char *scratch, size_t scratch_len)
{
    consume_view(c);
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
    if (c->rborrowed) {
        /* The scratch never grows (it is not ours to realloc): compact it,
         * and when it is full let the frames go first, then settle. */
        if (c->roff > 0 && c->roff + c->rlen == c->rcap) {
            memmove(c->rbuf, c->rbuf + c->roff, c->rlen);
            c->roff = 0;
        }
        size_t room = c->rcap - c->roff - c->rlen;
        if (room == 0)
            return 0;
        ssize_t r = tc__sock_recv(c->fd, c->rbuf + c->roff + c->rlen, room);
        if (r > 0)
            c->rlen += (size_t)r;
        else if (r == 0)
            c->reof = 1;
        return r == 0 ? TC_EOF : r;
    }
    size_t limit = tc_codec_max_frame(&c->codec) + tc__codec_overhead(&c->codec);
    return fill_once(c, limit);
}

int tc__conn_frame_nb(tc_conn *c, const void **msg, size_t *len)
{
    consume_view(c);
    if (c->rerr)
        return c->rerr;
    if (c->rlen == 0)
        return 0; /* the usual end of a batch: nothing to scan */
    size_t off, plen, flen;
    int rc = tc__codec_scan_from(&c->codec, c->rbuf ? c->rbuf + c->roff : NULL, c->rlen, c->rscan,
                                 &off, &plen, &flen);
    if (rc < 0)
        return broken(c, rc);
    if (rc == 0) {
        c->rscan = c->rlen; /* resume there: a slow frame is not rescanned */
        return c->reof && c->rlen ? broken(c, TC_EPARTIAL) : 0;
    }
    c->rscan = 0;
    c->rview = flen;
    *msg = c->rbuf + c->roff + off;
    *len = plen;
    return 1;
}

int tc__conn_settle(tc_conn *c)
{
    consume_view(c);
    if (!c->rborrowed) {
        trim(c);
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
    size_t cap = frame_room(c);
    if (cap < c->rlen)
        cap = c->rlen;
    unsigned char *nb = malloc(cap);
    if (!nb) {
        c->rlen = 0;
        return broken(c, -ENOMEM);
    }
    memcpy(nb, scratch + c->roff, c->rlen);
    c->rbuf = nb;
    c->rcap = cap;
    c->roff = 0;
    return 0;
}

size_t tc__conn_pending(const tc_conn *c)
{
    return c->wlen - c->woff;
}

ssize_t tc__conn_send_nb(tc_conn *c, const struct iovec *vec, int cnt, size_t total)
{
    if (c->werr)
        return c->werr;
    size_t sent = 0;
    int idx = 0;
    size_t ioff = 0;
    /* Try the socket first, behind anything already queued; what it does not
     * take is appended to the write buffer (never blocks). */
    while (c->woff < c->wlen || sent < total) {
        ssize_t r = send_window(c, vec, cnt, idx, ioff);
        if (r == -EAGAIN || r == 0)
            break;
        if (r < 0) {
            c->werr = (int)r;
            return r;
        }
        sent += advance(c, vec, cnt, &idx, &ioff, (size_t)r);
    }
    size_t rest = total - sent;
    if (rest == 0)
        return (ssize_t)total;
    int rc = wbuf_reserve(c, rest);
    if (rc < 0)
        return rc;
    for (int i = idx; i < cnt; i++) {
        size_t o = i == idx ? ioff : 0;
        if (vec[i].iov_len > o) {
            memcpy(c->wbuf + c->wlen, (char *)vec[i].iov_base + o, vec[i].iov_len - o);
            c->wlen += vec[i].iov_len - o;
        }
    }
    return (ssize_t)total;
}

int tc__conn_append(tc_conn *c, const void *buf, size_t n)
{
    if (c->werr)
        return c->werr;
    int rc = wbuf_reserve(c, n);
    if (rc < 0)
        return rc;
    memcpy(c->wbuf + c->wlen, buf, n);
    c->wlen += n;
    return 0;
}

int tc__conn_flush_nb(tc_conn *c)
{
    ssize_t r = tc__conn_send_nb(c, NULL, 0, 0);
    if (r < 0)
        return (int)r;
    if (c->wlen > c->woff)
        return 1;
    trim(c);
    return 0;
}
