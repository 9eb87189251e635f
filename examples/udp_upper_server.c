/* SPDX-License-Identifier: MIT */
/* socketserver's UDP example (UDPServer with a DatagramRequestHandler): each
 * datagram is a request; the reply, the same text in upper case (ASCII), goes
 * back to its sender as one datagram. Ctrl-C (SIGINT) or SIGTERM stops it.
 * Usage: udp_upper_server [ADDR] (default udp:127.0.0.1:9999). */
#include <ctype.h>
#include <stdio.h>

#include <tcpchan/tcpchan.h>

#include "serve_until_signal.h"

/* handle(): read the datagram (the reads end with it), write the reply
 * (what is written goes out as one datagram when the request ends). */
static int upper_handle(tc_conn *conn, void *ctx)
{
    char peer[TC_ADDR_STRLEN], data[2048];
    (void)ctx;
    if (tc_addr_format(tc_conn_peer(conn), peer, sizeof peer) < 0)
        snprintf(peer, sizeof peer, "?");
    ssize_t n = tc_conn_read(conn, data, sizeof data);
    if (n == TC_EOF)
        n = 0; /* an empty datagram */
    if (n < 0)
        return (int)n;
    printf("%s wrote: %.*s\n", peer, (int)n, data);
    for (ssize_t i = 0; i < n; i++)
        data[i] = (char)toupper((unsigned char)data[i]);
    n = tc_conn_write(conn, data, (size_t)n);
    return n < 0 ? (int)n : 0;
}

static void on_error(tc_server *srv, tc_conn *conn, int err, void *ctx)
{
    (void)srv, (void)conn, (void)ctx;
    fprintf(stderr, "udp_upper_server: %s\n", tc_strerror(err));
}

int main(int argc, char **argv)
{
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    tc_handler handler = TC_HANDLER_INIT;
    tc_server *srv;

    setvbuf(stdout, NULL, _IOLBF, 0); /* one line at a time, also into a pipe */
    cfg.listen = argc > 1 ? argv[1] : "udp:127.0.0.1:9999";
    cfg.hooks.handle_error = on_error;
    handler.handle = upper_handle;
    int rc = tc_server_create(&srv, &cfg, &handler);
    if (rc < 0) {
        fprintf(stderr, "udp_upper_server: %s: %s\n", cfg.listen, tc_strerror(rc));
        return 1;
    }
    rc = serve_until_signal(srv); /* until Ctrl-C */
    tc_server_destroy(srv);
    return rc < 0 ? 1 : 0;
}
