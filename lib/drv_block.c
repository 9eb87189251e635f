/* SPDX-License-Identifier: MIT */
/* The blocking drivers: a channel used by one thread that may sleep. Every
 * wait is against an absolute deadline, so timeouts are exact and signals
 * never leak out. Two tables: "sleep" for a blocking socket whose reads
 * sleep in recv under SO_RCVTIMEO (a connection with a thread or process of
 * its own: one system call per wait), "poll" for a non-blocking socket
 * waited on with poll (dial). Sends never sleep in the kernel: MSG_DONTWAIT
 * (sendfile: a non-blocking socket), then poll. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "internal.h"

/* The read buffer of a channel asleep in recv (see fill_idle): room for a
 * typical request, small because every idle threading connection holds one
 * (with it, 9.5-9.7 KiB of RSS per idle connection; 1 KiB made it 10.0). */
#define IDLE_ROOM ((size_t)512)

/* Slack of a cached socket timeout: one set a moment ago for the same
 * relative wait is kept (a setsockopt saved per request); it may end a
 * wait up to 1 ms late (the kernel rounds to a jiffy anyway) or up to an
 * eighth early (the caller then looks at the clock and waits again). */
#define TIMEO_LATE_NS TC_NS_PER_MS

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

/* Less than asked: the socket is most likely empty now, so the next read
 * waits before it tries (saves a failing recv) and lets an empty buffer go first. */
static ssize_t note_dry(tc_conn *c, ssize_t r, size_t n)
{
    if (r > 0)
        c->rdry = (size_t)r < n;
    return r;
}

/* A receive for a channel that watches the stop descriptor (inline, a
 * forked child, inetd: nothing else could wake a handler asleep in a read):
 * ppoll on the socket and stopfd, then a recv that does not sleep; a recv
 * first when the last one filled its buffer (more is most likely there).
 * Once the stop descriptor is readable, bytes already there are still read;
 * a read that would wait ends with TC_ESHUTDOWN. */
static ssize_t recv_watch(tc_conn *c, void *buf, size_t n, int64_t deadline, int intr)
{
    for (;;) {
        if (!c->rdry || tc__chan_io_pending(c)) {
            ssize_t r = c->io->recv(c, buf, n, 0);
            if (r != -EAGAIN)
                return r;
        }
        int rc = tc__sock_wait_stop(c->fd, POLLIN, c->stopfd, deadline);
        if (rc == 0 || (rc == -EINTR && !intr)) {
            c->rdry = rc != 0; /* a signal: wait again against the same deadline */
            continue;
        }
        if (rc != TC_ESHUTDOWN && rc != -ETIMEDOUT)
            return rc;
        ssize_t r = c->io->recv(c, buf, n, 0); /* only what is there already */
        return r == -EAGAIN ? rc : r;
    }
}

/* ---- sleep: a blocking socket ------------------------------------------- */

/* One recv that sleeps until input, the deadline or (if intr) a signal: a
 * count, 0 at the end of the stream, -ETIMEDOUT, -EINTR, TC_ESHUTDOWN (a
 * channel with a stop descriptor: recv_watch), or an error. No poll first:
 * the common wait costs one system call. */
static ssize_t recv_block(tc_conn *c, void *buf, size_t n, int64_t deadline, int intr)
{
    if (c->stopfd >= 0)
        return recv_watch(c, buf, n, deadline, intr);
    for (;;) {
        int64_t left = time_left(deadline);
        if (left < 0) {
            ssize_t r = c->io->recv(c, buf, n, 0); /* only what is there already */
            return r == -EAGAIN ? -ETIMEDOUT : r;
        }
        if (!tc__chan_ext(c))
            return -ENOMEM;
        int rc = arm_timeout(c, SO_RCVTIMEO, &c->x->rcvtimeo, left);
        if (rc < 0)
            return rc;
        ssize_t r = c->io->recv(c, buf, n, 1);
        if (r >= 0 || (r == -EINTR && intr) || (r != -EINTR && r != -EAGAIN))
            return r;
        /* A signal, or SO_RCVTIMEO ran out: the loop recomputes the time left. */
    }
}

static ssize_t sleep_recv(tc_conn *c, void *buf, size_t n, int64_t deadline)
{
    if (c->rpend)
        return take_pending(c);
    return note_dry(c, recv_block(c, buf, n, deadline, 0), n);
}

/* An empty buffer, about to sleep: a channel asleep in recv holds a buffer,
 * so it is a small one; what does not fit is taken at once, without
 * sleeping, into a full-size buffer. Bytes added, TC_EOF, or an error
 * (-EINTR only if intr). */
static ssize_t fill_idle(tc_conn *c, int64_t deadline, size_t limit, int intr)
{
    if (c->rpend)
        return take_pending(c);
    size_t small = limit < IDLE_ROOM ? limit : IDLE_ROOM;
    tc__chan_trim(c, small);
    int rc = tc__chan_make_room(c, small);
    if (rc < 0)
        return rc;
    size_t room = c->b->rcap - c->b->roff - c->b->rlen;
    ssize_t r =
        tc__chan_filled(c, recv_block(c, c->b->rbuf + c->b->roff + c->b->rlen, room, deadline, intr));
    if (r > 0 && r < (ssize_t)room)
        c->rdry = 1; /* most likely all there was: the next read sleeps here again */
    if (r != (ssize_t)room || room >= limit)
        return r;
    ssize_t more = tc__chan_fill_once(c, limit); /* sets rdry */
    if (more > 0)
        r += more;
    else if (more != -EAGAIN && more != TC_EOF && more != -ENOMEM)
        c->rpend = (int)more; /* reof, set by fill_once, is seen by the next read */
    return r;
}

static ssize_t sleep_fill(tc_conn *c, int64_t deadline, size_t limit)
{
    if (c->rdry && c->b->rlen == 0)
        return fill_idle(c, deadline, limit, 0);
    if (c->rpend)
        return take_pending(c);
    if (c->rdry)
        tc__chan_trim(c, 0); /* about to sleep, most likely: an empty buffer goes back */
    int rc = tc__chan_make_room(c, limit);
    if (rc < 0)
        return rc;
    return tc__chan_filled(
        c, sleep_recv(c, c->b->rbuf + c->b->roff + c->b->rlen, c->b->rcap - c->b->roff - c->b->rlen, deadline));
}

/* ---- poll: a non-blocking socket ---------------------------------------- */

static ssize_t poll_recv(tc_conn *c, void *buf, size_t n, int64_t deadline)
{
    if (c->stopfd >= 0)
        return note_dry(c, recv_watch(c, buf, n, deadline, 0), n);
    ssize_t r;
    for (;;) {
        if (c->rdry && !tc__chan_io_pending(c)) {
            int rc = tc__sock_wait(c->fd, POLLIN, deadline);
            if (rc < 0)
                return rc;
            c->rdry = 0;
        }
        if ((r = c->io->recv(c, buf, n, 0)) != -EAGAIN)
            break;
        c->rdry = 1;
    }
    return note_dry(c, r, n);
}

static ssize_t poll_fill(tc_conn *c, int64_t deadline, size_t limit)
{
    if (c->rdry)
        tc__chan_trim(c, 0); /* about to sleep, most likely: an empty buffer goes back */
    if (c->rdry && c->stopfd < 0 && !tc__chan_io_pending(c)) { /* else poll_recv waits */
        int rc = tc__sock_wait(c->fd, POLLIN, deadline);
        if (rc < 0)
            return rc;
        c->rdry = 0;
    }
    int rc = tc__chan_make_room(c, limit);
    if (rc < 0)
        return rc;
    return tc__chan_filled(
        c, poll_recv(c, c->b->rbuf + c->b->roff + c->b->rlen, c->b->rcap - c->b->roff - c->b->rlen, deadline));
}

/* ---- the wait between messages ------------------------------------------ */

/* Watching the stop descriptor ahead of the socket, in one ppoll: no
 * separate look at a flag, which would cost a forked child a poll() per
 * message. */
static ssize_t wait_stop(tc_conn *c, int64_t deadline)
{
    if (c->rpend)
        return take_pending(c);
    tc__chan_trim(c, 0);
    if (tc__chan_io_pending(c)) /* held by the transport: the socket will not say */
        return tc__chan_fill_once(c, tc__chan_frame_room(c));
    for (;;) {
        int rc = tc__sock_wait_stop(c->fd, POLLIN, c->stopfd, deadline);
        if (rc == -ETIMEDOUT && tc__sock_readable(c->fd))
            rc = 0; /* input was there as the clock ran out (a queued first wait) */
        if (rc < 0)
            return rc;
        ssize_t r = tc__chan_fill_once(c, tc__chan_frame_room(c));
        if (r != -EAGAIN)
            return r; /* else a spurious wake-up */
    }
}

static ssize_t sleep_wait_input(tc_conn *c, int64_t deadline)
{
    if (c->stopfd >= 0)
        return wait_stop(c, deadline);
    /* Sleep in recv itself: a drain shuts our read side, which ends the
     * wait like the peer's end of stream. */
    return fill_idle(c, deadline, tc__chan_frame_room(c), 1);
}

void tc__drv_sleep_prepare(tc_conn *c)
{
    c->rdry = 1; /* its first read sleeps with a small buffer (fill_idle) */
    if (!c->b->rbuf && tc__chan_own(c) == 0 && (c->b->rbuf = malloc(IDLE_ROOM)))
        c->b->rcap = IDLE_ROOM;
}

/* ---- sending ------------------------------------------------------------ */

/* Whether a send with more to go is past its deadline. The deadline ends the
 * whole call, not only its waits: a peer that reads as fast as we send would
 * otherwise keep it going. A clock read only after a partial send. */
static int overdue(int64_t deadline)
{
    return deadline != TC__NO_DEADLINE && tc__now_ns() >= deadline;
}

/* Send everything queued and vec, as few sendmsg calls as the socket
 * allows, advancing exactly through partial sends, until the deadline. */
static ssize_t send_until(tc_conn *c, const struct iovec *vec, int cnt, size_t total,
                          int64_t deadline)
{
    if (c->werr) {
        tc__chan_set_sent(c, 0);
        return c->werr;
    }
    int idx = 0;
    size_t ioff = 0, sent = 0;
    while (c->b->woff < c->b->wlen || sent < total) {
        ssize_t r = tc__chan_send_window(c, vec, cnt, idx, ioff);
        if (r > 0) {
            sent += tc__chan_advance(c, vec, cnt, &idx, &ioff, (size_t)r);
            if ((c->b->woff == c->b->wlen && sent == total) || !overdue(deadline))
                continue;
            r = -ETIMEDOUT;
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
        tc__chan_set_sent(c, sent);
        return r;
    }
    tc__chan_set_sent(c, total);
    return (ssize_t)total;
}

static ssize_t block_send(tc_conn *c, const struct iovec *vec, int cnt, size_t total)
{
    return send_until(c, vec, cnt, total, tc__conn_op_deadline(c));
}

static int block_shutdown_write(tc_conn *c)
{
    ssize_t r = block_send(c, NULL, 0, 0);
    if (r < 0)
        return (int)r;
    return c->io->shutdown_write(c);
}

/* The file to a non-blocking socket, every wait a poll against the call's
 * deadline, as in block_send. */
static ssize_t poll_sendfile(tc_conn *c, int file_fd, off_t offset, size_t count)
{
    int64_t deadline = tc__conn_op_deadline(c); /* one for the flush and the file */
    ssize_t r = send_until(c, NULL, 0, 0, deadline);
    if (r < 0)
        return r;
    size_t sent = 0;
    r = 0;
    while (sent < count && r == 0) {
        r = c->io->sendfile(c, file_fd, &offset, count - sent);
        if (r > 0) {
            sent += (size_t)r;
            r = sent < count && overdue(deadline) ? -ETIMEDOUT : 0;
        } else if (r == 0) {
            break; /* the file ended */
        } else if (r == -EAGAIN) {
            r = tc__sock_wait(c->fd, POLLOUT, deadline);
        }
    }
    if (r < 0 && (r != -ETIMEDOUT || sent > 0))
        c->werr = (int)r; /* as in block_send */
    tc__chan_set_sent(c, sent);
    return r < 0 ? r : (ssize_t)sent;
}

/* sendfile has no MSG_DONTWAIT, and asleep in the kernel it would restart
 * SO_SNDTIMEO with every piece it hands to TCP: the blocking socket is made
 * non-blocking for the call. */
static ssize_t sleep_sendfile(tc_conn *c, int file_fd, off_t offset, size_t count)
{
    ssize_t r = tc__sock_set_nonblocking(c->fd, 1);
    if (r < 0)
        return r;
    r = poll_sendfile(c, file_fd, offset, count);
    int rc = tc__sock_set_nonblocking(c->fd, 0);
    if (rc < 0) {
        /* A sleeping read on a non-blocking socket would spin: both sides are done. */
        c->werr = rc;
        (void)tc__chan_broken(c, rc);
        if (r >= 0)
            r = rc;
    }
    return r;
}

const tc__driver tc__drv_sleep = {
    .name = "sleep",
    .fill = sleep_fill,
    .recv = sleep_recv,
    .wait_input = sleep_wait_input,
    .send = block_send,
    .shutdown_write = block_shutdown_write,
    .sendfile = sleep_sendfile,
};

const tc__driver tc__drv_poll = {
    .name = "poll",
    .fill = poll_fill,
    .recv = poll_recv,
    .wait_input = wait_stop,
    .send = block_send,
    .shutdown_write = block_shutdown_write,
    .sendfile = poll_sendfile,
};
