/* SPDX-License-Identifier: MIT */
/* An outside program built against an installed libtcpchan: starts an inline
 * server on 127.0.0.1:0, dials it from a forked child, checks one echo round
 * trip and prints OK. Used by tests/packaging/install_test.sh. */
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <tcpchan/tcpchan.h>

#define MSG "ping\n"
#define TIMEOUT_MS 10000

static int echo(tc_conn *c, void *ctx)
{
    char buf[256];
    ssize_t n;
    (void)ctx;
    while ((n = tc_conn_read(c, buf, sizeof buf)) > 0)
        if ((n = tc_conn_send_all(c, buf, (size_t)n)) < 0)
            return (int)n;
    return n == TC_EOF ? 0 : (int)n;
}

/* The client side, in the child: dial, send MSG, read it back. */
static int client(const char *address)
{
    tc_dial_config opts = TC_DIAL_CONFIG_INIT;
    tc_conn *c;
    char buf[sizeof MSG];
    size_t got = 0;
    opts.connect_timeout_ms = TIMEOUT_MS;
    opts.timeout_ms = TIMEOUT_MS;
    int rc = tc_dial(&c, address, &opts);
    if (rc < 0) {
        fprintf(stderr, "consumer: tc_dial(%s): %s\n", address, tc_strerror(rc));
        return 1;
    }
    ssize_t n = tc_conn_send_all(c, MSG, strlen(MSG));
    while (n >= 0 && got < strlen(MSG)) {
        n = tc_conn_read(c, buf + got, strlen(MSG) - got);
        if (n > 0)
            got += (size_t)n;
    }
    tc_conn_close(c);
    if (n < 0) {
        fprintf(stderr, "consumer: echo: %s\n", tc_strerror((int)n));
        return 1;
    }
    if (memcmp(buf, MSG, strlen(MSG)) != 0) {
        fprintf(stderr, "consumer: echo came back different\n");
        return 1;
    }
    return 0;
}

int main(void)
{
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    tc_handler h = TC_HANDLER_INIT;
    tc_server *srv;
    tc_addr addr;
    char text[TC_ADDR_STRLEN];

    if (tc_version() != TC_VERSION_HEX) {
        fprintf(stderr, "consumer: header version %s but library %s\n", TC_VERSION_STRING,
                tc_version_string());
        return 1;
    }
    cfg.listen = "127.0.0.1:0";
    cfg.mode = TC_MODE_INLINE;
    cfg.timeout_ms = TIMEOUT_MS;
    cfg.conn_timeout_ms = TIMEOUT_MS;
    h.handle = echo;
    int rc = tc_server_create(&srv, &cfg, &h);
    if (rc < 0) {
        fprintf(stderr, "consumer: tc_server_create: %s\n", tc_strerror(rc));
        return 1;
    }
    if ((rc = tc_server_address(srv, &addr)) < 0 ||
        (rc = tc_addr_format(&addr, text, sizeof text)) < 0) {
        fprintf(stderr, "consumer: server address: %s\n", tc_strerror(rc));
        tc_server_destroy(srv);
        return 1;
    }

    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("consumer: fork");
        tc_server_destroy(srv);
        return 1;
    }
    if (pid == 0)
        _exit(client(text)); /* the listener is already listening: dial succeeds */

    rc = tc_server_handle_request(srv); /* inline: serves the one connection fully */
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        ;
    tc_server_destroy(srv);
    if (rc < 0) {
        fprintf(stderr, "consumer: tc_server_handle_request: %s\n", tc_strerror(rc));
        return 1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "consumer: client failed\n");
        return 1;
    }
    printf("OK (libtcpchan %s, echo via %s)\n", tc_version_string(), text);
    return 0;
}
