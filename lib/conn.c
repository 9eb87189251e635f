/* SPDX-License-Identifier: MIT */
/* The channel: a non-blocking socket whose blocking calls wait with poll
 * against a deadline, so timeouts are exact and signals never leak out. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int tc__conn_new(tc_conn **out, tc_server *srv, int fd, const tc_addr *peer)
{
    tc_conn *c = calloc(1, sizeof *c);
    if (!c) {
        tc__close(fd);
        return -ENOMEM;
    }
    c->fd = fd;
    c->srv = srv;
    if (peer)
        c->peer = *peer;
    (void)tc__sock_local(fd, &c->local);
    *out = c;
    return 0;
}

void tc__conn_free(tc_conn *conn)
{
    if (!conn)
        return;
    tc__close(conn->fd);
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
    return conn ? &conn->local : NULL;
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

int tc_conn_set_timeout(tc_conn *conn, int ms)
{
    if (!conn)
        return -EINVAL;
    conn->timeout_ms = ms > 0 ? ms : 0;
    return 0;
}

ssize_t tc_conn_read(tc_conn *conn, void *buf, size_t n)
{
    if (!conn || (!buf && n))
        return -EINVAL;
    if (n == 0)
        return 0;
    int64_t deadline = tc__deadline_ms(conn->timeout_ms);
    for (;;) {
        ssize_t r = tc__sock_recv(conn->fd, buf, n);
        if (r > 0)
            return r;
        if (r == 0)
            return TC_EOF;
        if (r != -EAGAIN)
            return r;
        int w = tc__sock_wait(conn->fd, POLLIN, deadline);
        if (w < 0)
            return w;
    }
}

ssize_t tc_conn_send_all(tc_conn *conn, const void *buf, size_t n)
{
    if (!conn || (!buf && n))
        return -EINVAL;
    const char *p = buf;
    size_t done = 0;
    int64_t deadline = tc__deadline_ms(conn->timeout_ms);
    while (done < n) {
        ssize_t r = tc__sock_send(conn->fd, p + done, n - done);
        if (r > 0) {
            done += (size_t)r;
            continue;
        }
        if (r != -EAGAIN)
            return r == 0 ? -EIO : r;
        int w = tc__sock_wait(conn->fd, POLLOUT, deadline);
        if (w < 0)
            return w;
    }
    return (ssize_t)n;
}

void tc_conn_close(tc_conn *conn)
{
    /* Server channels belong to the library, which closes them after finish. */
    if (conn && !conn->srv)
        tc__conn_free(conn);
}
