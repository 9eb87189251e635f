/* SPDX-License-Identifier: MIT */
/* The tutorial's first TCP channel, server side: wait for one client, read
 * its greeting, answer, close, exit. Usage: hello_server [ADDR] (default 127.0.0.1:12345). */
#include <stdio.h>

#include <tcpchan/tcpchan.h>

static int greet(tc_conn *conn, void *ctx)
{
    char buf[1024], peer[TC_ADDR_STRLEN];
    (void)ctx;
    tc_addr_format(tc_conn_peer(conn), peer, sizeof peer);
    printf("Connection established with %s\n", peer);

    ssize_t n = tc_conn_read(conn, buf, sizeof buf);
    if (n < 0)
        return (int)n;
    printf("Received from client: %.*s\n", (int)n, buf);

    const char reply[] = "Hello from the server!";
    n = tc_conn_send_all(conn, reply, sizeof reply - 1);
    return n < 0 ? (int)n : 0;
}

static void report(tc_server *srv, tc_conn *conn, int err, void *ctx)
{
    (void)srv, (void)conn, (void)ctx;
    fprintf(stderr, "hello_server: %s\n", tc_strerror(err));
}

int main(int argc, char **argv)
{
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    tc_handler handler = TC_HANDLER_INIT;
    tc_server *srv;
    char addr[TC_ADDR_STRLEN];
    tc_addr bound;

    cfg.listen = argc > 1 ? argv[1] : "127.0.0.1:12345";
    cfg.hooks.handle_error = report;
    handler.handle = greet;
    int rc = tc_server_create(&srv, &cfg, &handler);
    if (rc < 0) {
        fprintf(stderr, "hello_server: %s: %s\n", cfg.listen, tc_strerror(rc));
        return 1;
    }
    tc_server_address(srv, &bound);
    tc_addr_format(&bound, addr, sizeof addr);
    printf("Server listening on %s\n", addr);
    fflush(stdout);

    rc = tc_server_handle_request(srv); /* exactly one client, served inline */
    printf("Client connection closed.\n");
    tc_server_destroy(srv);
    printf("Server socket closed.\n");
    return rc < 0 ? 1 : 0;
}
