/* SPDX-License-Identifier: MIT */
/* The tutorial's concurrent server ("Example 2"): a thread per client, each
 * message answered with "ACK: <message>" until the client leaves; Ctrl-C
 * (SIGINT) or SIGTERM shuts it down gracefully.
 * Usage: ack_server [ADDR] (default 127.0.0.1:5050). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <tcpchan/tcpchan.h>

#include "serve_until_signal.h"

#define POLL_MS 200 /* how often a waiting handler checks for shutdown */

static void peer_name(tc_conn *conn, char *buf, size_t n)
{
    if (tc_addr_format(tc_conn_peer(conn), buf, n) < 0)
        snprintf(buf, n, "?");
}

static int ack_setup(tc_conn *conn, void *ctx)
{
    char peer[TC_ADDR_STRLEN];
    tc_stats st;
    (void)ctx;
    peer_name(conn, peer, sizeof peer);
    tc_server_stats(tc_conn_server(conn), &st);
    printf("[NEW CONNECTION] %s connected.\n", peer);
    printf("[ACTIVE CONNECTIONS] %u\n", st.active);
    /* Reads give up every POLL_MS so the loop below notices a shutdown. */
    tc_conn_set_timeout(conn, POLL_MS);
    return 0;
}

static int ack_handle(tc_conn *conn, void *ctx)
{
    char peer[TC_ADDR_STRLEN], data[1024], reply[5 + sizeof data];
    (void)ctx;
    peer_name(conn, peer, sizeof peer);
    for (;;) {
        ssize_t n = tc_conn_read(conn, data, sizeof data);
        if (n == -ETIMEDOUT) {
            if (tc_server_shutting_down(tc_conn_server(conn)))
                return 0;
            continue;
        }
        if (n == TC_EOF)
            return 0; /* the client closed the connection */
        if (n < 0)
            return (int)n;
        printf("[%s] Received: %.*s\n", peer, (int)n, data);
        memcpy(reply, "ACK: ", 5); /* binary-safe: the message may hold NULs */
        memcpy(reply + 5, data, (size_t)n);
        if ((n = tc_conn_send_all(conn, reply, 5 + (size_t)n)) < 0)
            return (int)n;
    }
}

static int ack_finish(tc_conn *conn, void *ctx)
{
    char peer[TC_ADDR_STRLEN];
    (void)ctx;
    peer_name(conn, peer, sizeof peer);
    printf("[CLOSE CONNECTION] %s disconnected.\n", peer);
    return 0;
}

static void on_error(tc_server *srv, tc_conn *conn, int err, void *ctx)
{
    char peer[TC_ADDR_STRLEN] = "server";
    (void)srv, (void)ctx;
    if (conn)
        peer_name(conn, peer, sizeof peer);
    if (err == -ECONNRESET)
        printf("[%s] forcibly closed the connection.\n", peer);
    else
        fprintf(stderr, "ack_server: %s: %s\n", peer, tc_strerror(err));
}

int main(int argc, char **argv)
{
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    tc_handler handler = TC_HANDLER_INIT;
    tc_server *srv;

    setvbuf(stdout, NULL, _IOLBF, 0); /* one line at a time, also into a pipe */
    cfg.listen = argc > 1 ? argv[1] : "127.0.0.1:5050";
    cfg.mode = TC_MODE_THREADING;
    cfg.hooks.handle_error = on_error;
    handler.setup = ack_setup;
    handler.handle = ack_handle;
    handler.finish = ack_finish;
    int rc = tc_server_create(&srv, &cfg, &handler);
    if (rc < 0) {
        fprintf(stderr, "ack_server: %s: %s\n", cfg.listen, tc_strerror(rc));
        return 1;
    }

    rc = serve_until_signal(srv); /* until Ctrl-C */
    printf("[SHUTTING DOWN] Server is shutting down.\n");
    tc_server_destroy(srv);
    return rc < 0 ? 1 : 0;
}
