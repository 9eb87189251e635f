/* SPDX-License-Identifier: MIT */
/* The request handler contract of server.h, written once (socketserver's
 * BaseRequestHandler): the PROXY verdict, setup and on_open; on_message per
 * frame; the end (the quiet-end rule, the error report, the flush, on_close,
 * finish). The event loops call these as they go; the blocking modes run
 * tc__session_run(), whose pump waits through the channel's driver. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "internal.h"

int tc__session_quiet_end(int reason)
{
    return reason == 0 || reason == TC_EOF || reason == TC_ESHUTDOWN || reason == -ETIMEDOUT;
}

int tc__session_stopping(const tc_server *srv)
{
    /* A forked child's copy of the flag never changes: ask the eventfd. */
    return srv->in_child ? tc__wake_pending(srv->stopfd) : atomic_load(&srv->stopping);
}

/* ---- opening ------------------------------------------------------------ */

int tc__session_proxy_precheck(tc__session *s)
{
    tc_server *srv = s->srv;
    if (srv->cfg.proxy_protocol != TC_PROXY_REQUIRED)
        return 0;
    tc_addr from;
    tc__chan_peer_copy(s->conn, &from);
    if (tc__cidr_match(srv->proxy_trusted, srv->proxy_ntrusted, &from))
        return 0;
    char peer[TC_ADDR_STRLEN] = "-";
    (void)tc_addr_format(&from, peer, sizeof peer);
    tc__log(srv, TC_LOG_WARN, "PROXY header required, but %s is not a trusted proxy", peer);
    tc__report(srv, s->conn, TC_EUNTRUSTED);
    return TC_EUNTRUSTED;
}

/* What the header (or its absence) means: 0 go on, 1 close quietly, or the
 * code to close with. */
static int proxy_verdict(tc__session *s, int rc, const tc__proxy_hdr *h)
{
    tc_server *srv = s->srv;
    tc_conn *conn = s->conn;
    int required = srv->cfg.proxy_protocol == TC_PROXY_REQUIRED;
    tc_addr from;
    tc__chan_peer_copy(conn, &from);
    char peer[TC_ADDR_STRLEN] = "-";
    (void)tc_addr_format(&from, peer, sizeof peer);
    switch (rc) {
    case TC__PROXY_DONE:
        break;
    case TC__PROXY_NONE:
        if (!required)
            return 0;
        tc__log(srv, TC_LOG_WARN, "PROXY header required, but %s sent none", peer);
        return TC_EPROXY;
    case TC_EOF:
        return required ? 1 : 0;
    case TC_ESHUTDOWN:
        return 1; /* the drain ended the wait (a channel watching the stop descriptor) */
    case TC_EPROXY:
        tc__log(srv, TC_LOG_WARN, "PROXY header from %s: %s", peer, h->why);
        return rc;
    case -ETIMEDOUT:
        if (!required && conn->b->rlen == 0)
            return 0; /* a silent client: served without a header */
        tc__log(srv, TC_LOG_WARN, "PROXY header from %s: none complete within %d ms", peer,
                srv->cfg.proxy_timeout_ms);
        return rc;
    default:
        return rc;
    }
    if (!tc__cidr_match(srv->proxy_trusted, srv->proxy_ntrusted, &from)) {
        tc__log(srv, TC_LOG_WARN, "PROXY header from %s, which is not a trusted proxy", peer);
        return TC_EUNTRUSTED;
    }
    if (!tc__chan_ext(conn) || !(conn->x->proxy = calloc(1, sizeof *conn->x->proxy)))
        return -ENOMEM;
    conn->x->proxy->peer = from;
    if (h->has_addr) {
        if (tc__chan_set_peer(conn, &h->src) < 0)
            return -ENOMEM;
        conn->x->proxy->dest = h->dst;
    }
    char client[TC_ADDR_STRLEN] = "-";
    (void)tc_addr_format(h->has_addr ? &h->src : &from, client, sizeof client);
    tc__log(srv, TC_LOG_DEBUG, "PROXY v%d header from %s: client %s%s", h->version, peer, client,
            h->has_addr ? "" : " (no addresses: the proxy itself)");
    return 0;
}

int tc__session_proxy(tc__session *s, int rc, const tc__proxy_hdr *h)
{
    int verdict = proxy_verdict(s, rc, h);
    s->proxy_done = 1;
    if (verdict < 0)
        tc__report(s->srv, s->conn, verdict);
    return verdict;
}

int tc__session_open(tc__session *s)
{
    const tc_handler *h = tc__session_handler(s);
    int rc;
    s->dialling = 0; /* connected: from here on, on_close follows on_open */
    if (h->setup && (rc = h->setup(s->conn, h->ctx)) < 0) {
        tc__report(s->srv, s->conn, rc); /* refused: nothing more runs, not even finish */
        return rc;
    }
    s->setup_done = 1;
    if (!h->on_message)
        return 0;
    if (h->on_open && (rc = h->on_open(s->conn, h->ctx)) < 0) {
        tc__report(s->srv, s->conn, rc); /* no on_close; finish still runs */
        return rc;
    }
    s->opened = 1;
    return 0;
}

/* ---- the transport's handshake (TLS) ---------------------------------------- */

/* A handshake that fails is the client's problem (a scanner, a plaintext
 * client, an old version): logged at INFO with the transport's reason,
 * never reported to handle_error. */
static int secure_failed(tc__session *s, int rc)
{
    if (rc != TC_ESHUTDOWN) {
        char peer[TC_ADDR_STRLEN] = "-";
        tc_addr from;
        tc__chan_peer_copy(s->conn, &from);
        (void)tc_addr_format(&from, peer, sizeof peer);
        const char *why = rc == -ETIMEDOUT ? "not finished in time" : tc__xport_why(s->conn);
        tc__log(s->srv, TC_LOG_INFO, "%s handshake with %s failed: %s%s%s",
                s->srv->cfg.transport->ops->name, peer, tc_strerror(rc), *why ? ": " : "", why);
    }
    return rc;
}

int tc__session_secure_begin(tc__session *s)
{
    int rc = tc__xport_attach(s->conn, s->srv->cfg.transport, 0, NULL);
    if (rc < 0)
        tc__report(s->srv, s->conn, rc);
    return rc;
}

int tc__session_secure_step(tc__session *s)
{
    int rc = tc__xport_step(s->conn);
    return rc < 0 ? secure_failed(s, rc) : rc;
}

void tc__session_secure_late(tc__session *s)
{
    (void)secure_failed(s, -ETIMEDOUT);
}

/* Blocking: attach and the whole handshake, within its timeout. */
static int secure(tc__session *s)
{
    int rc = tc__session_secure_begin(s);
    if (rc < 0)
        return rc;
    rc = tc__xport_handshake(s->conn, tc__xport_deadline(s->srv->cfg.transport));
    return rc < 0 ? secure_failed(s, rc) : 0;
}

/* ---- the protocol's opening step --------------------------------------------- */

int tc__session_upgrade(tc__session *s)
{
    int rc = s->conn->proto->open(s->conn);
    if (rc < 0 && rc != TC_EOF)
        tc__report(s->srv, s->conn, rc);
    return rc;
}

/* Blocking: the opening step until done, within its timeout. 0 to go on,
 * or the session ends (its response flushed). */
static int upgrade(tc__session *s)
{
    tc_conn *c = s->conn;
    int64_t deadline = tc__deadline_ms(c->proto->open_timeout_ms(c));
    for (;;) {
        int rc = tc__session_upgrade(s);
        if (rc == 1)
            return 0;
        if (rc < 0) {
            tc__conn_flush_quiet(c);
            return rc;
        }
        /* A client that never asks, or leaves, ends quietly. */
        ssize_t r = c->drv->fill(c, deadline, tc__chan_frame_limit(c));
        if (r < 0 && r != TC_EOF)
            return (int)r;
    }
}

/* ---- messages ----------------------------------------------------------- */

int tc__session_message(tc__session *s, const void *msg, size_t len)
{
    const tc_handler *h = tc__session_handler(s);
    return h->on_message(s->conn, msg, len, h->ctx);
}

int tc__session_timer(tc__session *s)
{
    const tc_handler *h = tc__session_handler(s);
    return h->on_timer(s->conn, h->ctx);
}

int tc__session_eof(tc__session *s)
{
    const tc_handler *h = tc__session_handler(s);
    return h->on_eof ? h->on_eof(s->conn, h->ctx) : 0;
}

int tc__session_drain(tc__session *s)
{
    const tc_handler *h = tc__session_handler(s);
    return h->on_drain ? h->on_drain(s->conn, h->ctx) : 0;
}

/* ---- closing ------------------------------------------------------------ */

void tc__session_close(tc__session *s, int reason, int report)
{
    if (s->closed)
        return;
    s->closed = 1;
    tc_server *srv = s->srv;
    const tc_handler *h = tc__session_handler(s);
    if (reason == TC_EOF)
        reason = 0;
    /* The drain shuts an idle connection's socket: over TLS that reads as a
     * stream cut short, but it is the server's own doing. */
    if (reason == TC_ETRUNCATED && tc__session_stopping(srv))
        reason = TC_ESHUTDOWN;
    if (report == TC__REPORT_AUTO ? !tc__session_quiet_end(reason) : report)
        tc__report(srv, s->conn, reason);
    if (s->opened || s->dialling) { /* dialling: the connect failed, told once */
        /* A parting word the handler buffered reaches the peer before on_close. */
        tc__conn_flush_quiet(s->conn);
        if (h->on_close)
            h->on_close(s->conn, reason, h->ctx);
    }
    if (s->setup_done && h->finish) {
        int rc = h->finish(s->conn, h->ctx);
        if (rc < 0)
            tc__report(srv, s->conn, rc);
    }
    /* What the handler wrote but did not flush still goes out, then a
     * transport's goodbye (TLS close_notify): a forked child ends its
     * stream without freeing the channel. */
    tc__conn_flush_quiet(s->conn);
    tc__xport_goodbye(s->conn);
}

/* ---- the blocking pump --------------------------------------------------- */

static int64_t earlier(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* Between messages: wait for the first bytes of the next, marked idle (the
 * drain may end it), within the idle timeout (counted from the accept for
 * the first message: a queue counts as silence). 0 once bytes came, TC_EOF,
 * TC_ESHUTDOWN, -ETIMEDOUT, or the read side's error. */
static int wait_message(tc__session *s)
{
    tc_conn *c = s->conn;
    tc_server *srv = s->srv;
    int64_t deadline = tc__conn_op_deadline(c);
    int idle_ms = srv->cfg.idle_timeout_ms;
    if (idle_ms > 0)
        deadline = earlier(deadline, s->idle_since
                                         ? s->idle_since + (int64_t)idle_ms * TC_NS_PER_MS
                                         : tc__deadline_ms(idle_ms));
    if (c->proto)
        deadline = earlier(deadline, c->proto->wake_at(c)); /* a keepalive ping */
    s->idle_since = 0;
    /* Idle, then look at the flag: a drain that starts after this store
     * finds the session idle and shuts it; one that started before it is
     * seen here (both are sequentially consistent). A wait that watches the
     * stop descriptor itself needs no look. */
    atomic_store(&s->idle, 1);
    ssize_t r;
    do
        r = c->stopfd < 0 && atomic_load(&srv->stopping) ? TC_ESHUTDOWN
                                                         : c->drv->wait_input(c, deadline);
    while (r == -EINTR); /* a signal: perhaps the one that asked for shutdown */
    atomic_store(&s->idle, 0);
    if (r > 0)
        return 0;
    if (r == TC_EOF && tc__session_stopping(srv))
        return TC_ESHUTDOWN; /* our read side was shut by the drain */
    return r == TC_EOF || r == TC_ESHUTDOWN || r == -ETIMEDOUT ? (int)r
                                                              : tc__chan_broken(c, (int)r);
}

/* Message style: every complete frame buffered goes to on_message before
 * anything waits; what the handler wrote goes out before any wait (a
 * pipelining client never waits for a reply held behind its next request). */
static void pump(tc__session *s)
{
    tc_conn *c = s->conn;
    int idle_ms = s->srv->cfg.idle_timeout_ms;
    int64_t frame_deadline = 0; /* the frame in progress must complete by this */
    int reason, report = TC__REPORT_YES;
    for (;;) {
        const void *msg;
        size_t len;
        int rc = tc__chan_frame(c, &msg, &len);
        if (rc == 1) {
            frame_deadline = 0;
            if ((rc = tc__session_message(s, msg, len)) < 0) {
                reason = rc;
                break;
            }
            continue;
        }
        if (rc < 0) {
            reason = rc;
            break;
        }
        if (c->reof) {
            reason = 0; /* the peer finished between frames */
            report = TC__REPORT_NO;
            break;
        }
        if (tc__chan_pending(c) && (rc = tc_conn_flush(c)) < 0) {
            reason = rc;
            break;
        }
        if (c->b->rlen == 0) {
            if ((rc = wait_message(s)) < 0) {
                if (rc == TC_EOF && c->proto)
                    continue; /* its protocol has the last word (a WebSocket that failed) */
                if (rc == -ETIMEDOUT && c->proto && c->proto->wake_at(c) <= tc__now_ns() &&
                    (rc = c->proto->wake(c)) == 0)
                    continue; /* a keepalive ping is queued: flushed before the next wait */
                reason = rc;
                report = TC__REPORT_AUTO;
                break;
            }
            continue;
        }
        /* Inside a frame: the per-operation timeout counts from its start,
         * the idle timeout from the last bytes; silence here is an error. */
        if (!frame_deadline)
            frame_deadline = tc__conn_op_deadline(c);
        int64_t deadline = frame_deadline;
        if (idle_ms > 0)
            deadline = earlier(deadline, tc__deadline_ms(idle_ms));
        ssize_t r = c->drv->fill(c, deadline, tc__chan_frame_limit(c));
        if (r < 0 && r != TC_EOF) {
            reason = tc__chan_broken(c, (int)r);
            if (r == TC_ESHUTDOWN)
                report = TC__REPORT_AUTO; /* the drain, through the stop descriptor */
            break;
        }
    }
    tc__session_close(s, reason, report);
}

/* Message style, a datagram request: its one datagram is the message,
 * whole (an empty one too), and the session ends after it. */
static void datagram(tc__session *s)
{
    tc_conn *c = s->conn;
    tc__chan_view_all(c); /* a read from on_message ends the view */
    int rc = tc__session_message(s, c->b->rlen ? c->b->rbuf + c->b->roff : (const void *)"", c->b->rlen);
    tc__session_close(s, rc, rc < 0 ? TC__REPORT_YES : TC__REPORT_NO);
}

static void run(tc__session *s)
{
    tc_server *srv = s->srv;
    if (srv->cfg.proxy_protocol != TC_PROXY_OFF && !s->proxy_done) {
        /* The header comes before anything the handler may see or send. */
        int rc = tc__session_proxy_precheck(s);
        if (rc == 0) {
            tc__proxy_hdr h;
            rc = tc__conn_read_proxy(s->conn, tc__deadline_ms(srv->cfg.proxy_timeout_ms), &h);
            rc = tc__session_proxy(s, rc, &h);
        }
        if (rc != 0) {
            s->closed = 1; /* nothing of the handler ran */
            return;
        }
    }
    if (srv->cfg.transport && !s->conn->x->xport && secure(s) != 0) {
        s->closed = 1; /* nothing of the handler ran */
        return;
    }
    if (s->conn->proto && upgrade(s) != 0) {
        s->closed = 1; /* nothing of the handler ran */
        return;
    }
    if (tc__session_open(s) < 0) {
        tc__session_close(s, 0, TC__REPORT_NO); /* reported; finish if setup ran */
        return;
    }
    if (srv->handler.on_message) {
        if (s->dgram)
            datagram(s);
        else
            pump(s);
        return;
    }
    int rc = srv->handler.handle(s->conn, srv->handler.ctx);
    /* TC_ESHUTDOWN: most likely a read the drain ended, passed on. */
    tc__session_close(s, rc, rc < 0 && rc != TC_ESHUTDOWN ? TC__REPORT_YES : TC__REPORT_NO);
}

/* The handler's thread ends inside a callback (pthread_exit, or a
 * cancellation): the session still closes, and finish still runs. */
static void thread_ended(void *arg)
{
    tc__session_close(arg, -ECANCELED, TC__REPORT_YES);
}

void tc__session_run(tc__session *s)
{
    pthread_cleanup_push(thread_ended, s);
    run(s);
    pthread_cleanup_pop(0);
}
