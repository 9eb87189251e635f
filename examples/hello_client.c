/* SPDX-License-Identifier: MIT */
/* The tutorial's first TCP channel, client side: connect, send a greeting,
 * print the answer, close. Usage: hello_client [ADDR] (default 127.0.0.1:12345). */
#include <stdio.h>

#include <tcpchan/tcpchan.h>

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : "127.0.0.1:12345";
    tc_dial_config opts = TC_DIAL_CONFIG_INIT;
    tc_conn *conn;
    char buf[1024];

    opts.timeout_ms = 10000; /* a silent server must not hang us forever */
    int rc = tc_dial(&conn, addr, &opts);
    if (rc < 0) {
        fprintf(stderr, "hello_client: %s: %s\n", addr, tc_strerror(rc));
        return 1;
    }
    printf("Connected to server at %s\n", addr);

    const char msg[] = "Hello from the client!";
    ssize_t n = tc_conn_send_all(conn, msg, sizeof msg - 1);
    if (n >= 0) {
        printf("Sent to server: %s\n", msg);
        n = tc_conn_read(conn, buf, sizeof buf);
    }
    if (n < 0) {
        fprintf(stderr, "hello_client: %s\n", tc_strerror((int)n));
        tc_conn_close(conn);
        return 1;
    }
    printf("Received from server: %.*s\n", (int)n, buf);
    tc_conn_close(conn);
    printf("Client socket closed.\n");
    return 0;
}
