/* SPDX-License-Identifier: MIT */
/* The client of socketserver's UDP example: send the words of the command
 * line as one datagram, print the one that comes back. No connection: a
 * datagram that is lost is waited for until the timeout.
 * Usage: udp_upper_client ADDR WORDS... (ADDR such as udp:127.0.0.1:9999). */
#include <stdio.h>
#include <string.h>

#include <tcpchan/tcpchan.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: udp_upper_client ADDR WORDS...\n");
        return 2;
    }
    char data[1024] = "";
    size_t len = 0;
    for (int i = 2; i < argc; i++) {
        int n = snprintf(data + len, sizeof data - len, "%s%s", i > 2 ? " " : "", argv[i]);
        if (n < 0 || (size_t)n >= sizeof data - len) {
            fprintf(stderr, "udp_upper_client: the words do not fit in %zu bytes\n", sizeof data);
            return 2;
        }
        len += (size_t)n;
    }
    tc_dial_config opts = TC_DIAL_CONFIG_INIT;
    opts.timeout_ms = 5000; /* a lost datagram or a silent server: give up */
    tc_conn *conn;
    int rc = tc_dial(&conn, argv[1], &opts);
    if (rc < 0) {
        fprintf(stderr, "udp_upper_client: %s: %s\n", argv[1], tc_strerror(rc));
        return 1;
    }
    char reply[2048];
    ssize_t n = tc_conn_send(conn, data, len); /* one datagram */
    if (n >= 0)
        n = tc_conn_read(conn, reply, sizeof reply); /* one datagram back */
    tc_conn_close(conn);
    if (n < 0) {
        fprintf(stderr, "udp_upper_client: %s\n", tc_strerror((int)n));
        return 1;
    }
    printf("Sent:     %.*s\n", (int)len, data);
    printf("Received: %.*s\n", (int)n, reply);
    return 0;
}
