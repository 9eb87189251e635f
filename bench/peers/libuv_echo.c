/* SPDX-License-Identifier: MIT */
/* libuv_echo: a single-threaded libuv echo server in the style of libuv's own
 * echo examples: each read is written back and freed when the write completes. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

#include "peer_common.h"

struct write_req {
    uv_write_t req;
    uv_buf_t buf;
};

static uv_loop_t *loop;
static uv_tcp_t server;
static uv_signal_t sig_term, sig_int;

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    buf->base = malloc(suggested);
    buf->len = buf->base ? suggested : 0;
}

static void on_close(uv_handle_t *h)
{
    free(h);
}

static void on_write(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    uv_handle_t *h = (uv_handle_t *)req->handle;
    free(w->buf.base);
    free(w);
    if (status < 0 && !uv_is_closing(h))
        uv_close(h, on_close);
}

static void on_read(uv_stream_t *client, ssize_t nread, const uv_buf_t *buf)
{
    if (nread > 0) {
        struct write_req *w = malloc(sizeof *w);
        if (w) {
            w->buf = uv_buf_init(buf->base, (unsigned)nread);
            if (uv_write(&w->req, client, &w->buf, 1, on_write) == 0)
                return;
            free(w);
        }
        free(buf->base);
        uv_close((uv_handle_t *)client, on_close);
        return;
    }
    free(buf->base);
    if (nread < 0 && !uv_is_closing((uv_handle_t *)client))
        uv_close((uv_handle_t *)client, on_close);
}

static void on_connection(uv_stream_t *srv, int status)
{
    if (status < 0)
        return;
    uv_tcp_t *client = malloc(sizeof *client);
    if (!client)
        return;
    uv_tcp_init(loop, client);
    if (uv_accept(srv, (uv_stream_t *)client) == 0)
        uv_read_start((uv_stream_t *)client, on_alloc, on_read);
    else
        uv_close((uv_handle_t *)client, on_close);
}

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h, (void)signum;
    uv_stop(loop);
}

int main(int argc, char **argv)
{
    const char *addr = peer_listen_arg(argc, argv);
    struct sockaddr_in sin;
    if (peer_parse(addr, &sin) < 0) {
        fprintf(stderr, "--listen %s: want IPV4:PORT\n", addr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    loop = uv_default_loop();
    uv_tcp_init(loop, &server);
    int rc = uv_tcp_bind(&server, (const struct sockaddr *)&sin, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&server, PEER_BACKLOG, on_connection);
    if (rc < 0) {
        fprintf(stderr, "listen: %s\n", uv_strerror(rc));
        return 1;
    }
    uv_signal_init(loop, &sig_term);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_init(loop, &sig_int);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_os_fd_t fd;
    uv_fileno((uv_handle_t *)&server, &fd);
    peer_announce(fd);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
