/* SPDX-License-Identifier: MIT */
/* The tutorial's socketserver example (ThreadingMixIn + TCPServer): each
 * client sends one message and gets it back stripped of surrounding
 * whitespace and in upper case (ASCII), then the connection is closed.
 * Ctrl-C (SIGINT) or SIGTERM shuts it down gracefully.
 * Usage: upper_server [ADDR] (default 127.0.0.1:5051). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <tcpchan/tcpchan.h>

#include "serve_until_signal.h"

/* The handler's handle(): the whole request, like BaseRequestHandler.handle. */
static int upper_handle(tc_conn *conn, void *ctx)
{
    char peer[TC_ADDR_STRLEN], data[1024];
    (void)ctx;
    if (tc_addr_format(tc_conn_peer(conn), peer, sizeof peer) < 0)
        snprintf(peer, sizeof peer, "?");
    printf("[NEW CONNECTION] %s connected.\n", peer);

    ssize_t n = tc_conn_read(conn, data, sizeof data);
    if (n < 0) { /* TC_EOF: it left without a word (or the server is stopping) */
        if (n == -ECONNRESET)
            printf("[%s] forcibly closed the connection.\n", peer);
        printf("[CLOSE CONNECTION] %s disconnected.\n", peer);
        return n == -ECONNRESET || n == TC_EOF ? 0 : (int)n;
    }
    /* strip(), then upper() */
    char *p = data, *end = data + n;
    while (p < end && isspace((unsigned char)*p))
        p++;
    while (end > p && isspace((unsigned char)end[-1]))
        end--;
    printf("[%s] Received: %.*s\n", peer, (int)(end - p), p);
    for (char *q = p; q < end; q++)
        *q = (char)toupper((unsigned char)*q);

    n = tc_conn_send_all(conn, p, (size_t)(end - p));
    printf("[CLOSE CONNECTION] %s disconnected.\n", peer);
    return n < 0 ? (int)n : 0; /* the library closes the connection */
}

static void on_error(tc_server *srv, tc_conn *conn, int err, void *ctx)
{
    (void)srv, (void)conn, (void)ctx;
    fprintf(stderr, "upper_server: %s\n", tc_strerror(err));
}

int main(int argc, char **argv)
{
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    tc_handler handler = TC_HANDLER_INIT;
    tc_server *srv;

    setvbuf(stdout, NULL, _IOLBF, 0); /* one line at a time, also into a pipe */
    cfg.listen = argc > 1 ? argv[1] : "127.0.0.1:5051";
    cfg.mode = TC_MODE_THREADING;
    cfg.hooks.handle_error = on_error;
    /* On Ctrl-C, give clients that have not sent their message 1 s, not 5. */
    cfg.drain_timeout_ms = 1000;
    handler.handle = upper_handle;
    int rc = tc_server_create(&srv, &cfg, &handler);
    if (rc < 0) {
        fprintf(stderr, "upper_server: %s: %s\n", cfg.listen, tc_strerror(rc));
        return 1;
    }

    rc = serve_until_signal(srv); /* until Ctrl-C */
    printf("[SHUTTING DOWN] Server is shutting down.\n");
    tc_server_destroy(srv);
    return rc < 0 ? 1 : 0;
}
