/* SPDX-License-Identifier: MIT */
/* What the library tells the application: handler errors to handle_error
 * (counted in the stats), everything else to the log hook; why a create
 * failed also to the thread's error detail. Messages are formatted here only. */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

static void vlog(tc_server *srv, tc_log_level level, int detail, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

static void vlog(tc_server *srv, tc_log_level level, int detail, const char *fmt, va_list ap)
{
    char msg[TC__MSG_MAX];
    (void)vsnprintf(msg, sizeof msg, fmt, ap); /* a longer message is cut */
    if (detail)
        tc__detail_set(msg);
    if (srv && srv->cfg.hooks.log)
        srv->cfg.hooks.log(srv, level, msg, srv->cfg.hooks.ctx);
}

void tc__log(tc_server *srv, tc_log_level level, const char *fmt, ...)
{
    if (!srv || !srv->cfg.hooks.log)
        return; /* not even formatted */
    va_list ap;
    va_start(ap, fmt);
    vlog(srv, level, 0, fmt, ap);
    va_end(ap);
}

void tc__log_detail(tc_server *srv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(srv, TC_LOG_ERROR, 1, fmt, ap);
    va_end(ap);
}

void tc__report(tc_server *srv, tc_conn *conn, int err)
{
    atomic_fetch_add(&srv->errors, 1);
    if (srv->cfg.hooks.handle_error) {
        srv->cfg.hooks.handle_error(srv, conn, err, srv->cfg.hooks.ctx);
        return;
    }
    char peer[TC_ADDR_STRLEN] = "-";
    if (conn) {
        tc_addr from;
        tc__chan_peer_copy(conn, &from);
        (void)tc_addr_format(&from, peer, sizeof peer);
    }
    tc__log(srv, TC_LOG_ERROR, "handler error for %s: %s (%s)", peer, tc_strerror(err),
                   tc_err_name(err));
}
