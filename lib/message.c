/* SPDX-License-Identifier: MIT */
/* The message loop of message-style handlers: read a frame with the channel's
 * codec, call on_message, repeat. One place for every mode: it runs inside
 * tc__server_run_handler(), which inline, threading, forking and pool share. */
#include <errno.h>

#include "internal.h"

/* Whether the code that ended the loop is a normal way for a connection to
 * end (not reported to handle_error): the peer left, was silent between
 * messages, or the server is draining. */
static int quiet_end(int reason)
{
    return reason == 0 || reason == TC_EOF || reason == TC_ESHUTDOWN || reason == -ETIMEDOUT;
}

void tc__conn_run_messages(tc_server *srv, tc_conn *conn)
{
    const tc_handler *h = &srv->handler;
    conn->msg_style = 1;
    conn->idle_ms = srv->cfg.idle_timeout_ms;
    int rc = h->on_open ? h->on_open(conn, h->ctx) : 0;
    if (rc < 0) {
        tc__server_error(srv, conn, rc);
        return;
    }
    int reason, report;
    for (;;) {
        /* Between messages: replies collected so far go out before we wait. */
        if (conn->rlen == conn->rview && conn->wlen > conn->woff &&
            (rc = tc_conn_flush(conn)) < 0) {
            reason = rc;
            report = 1;
            break;
        }
        rc = tc__conn_wait_message(conn);
        if (rc < 0) {
            reason = rc;
            report = !quiet_end(rc);
            break;
        }
        const void *msg;
        size_t len;
        if ((rc = tc_conn_read_frame(conn, &msg, &len)) < 0) {
            reason = rc;
            /* A silence inside a frame is an error, unlike one between frames. */
            report = rc != TC_EOF;
            break;
        }
        if ((rc = h->on_message(conn, msg, len, h->ctx)) < 0) {
            reason = rc;
            report = 1;
            break;
        }
    }
    tc__conn_flush_quiet(conn);
    if (reason == TC_EOF)
        reason = 0;
    if (report)
        tc__server_error(srv, conn, reason);
    if (h->on_close)
        h->on_close(conn, reason, h->ctx);
}
