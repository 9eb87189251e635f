/* SPDX-License-Identifier: MIT */
/* tls_floor: the least a TLS echo server can do, as the TLS benchmark's floor
 * (issue #15). One thread, level-triggered epoll, OpenSSL 3 on non-blocking
 * sockets (SSL_set_fd), one shared buffer; what a slow reader leaves unsent
 * is the one retry OpenSSL asks for. Records are read ahead (a record's
 * header and body in one read) and reading stops when OpenSSL holds nothing
 * (epoll is level-triggered): one read per small request, as libtcpchan-tls
 * does. --cert and --key: PEM files. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "peer_common.h"

#define BUF_SIZE (64 * 1024)
#define MAX_FD 65536

struct tconn {
    SSL *ssl;
    int handshaken;
    unsigned char *tail; /* an SSL_write to retry (WANT_WRITE) */
    size_t tail_len;
};

static struct tconn *conns[MAX_FD];
static volatile sig_atomic_t stop;

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

static void drop(int ep, int fd)
{
    struct tconn *t = conns[fd];
    if (t) {
        SSL_free(t->ssl);
        free(t->tail);
        free(t);
        conns[fd] = NULL;
    }
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
}

static void want(int ep, int fd, unsigned events)
{
    struct epoll_event ev = {.events = events, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

/* Write buf; 0 done, 1 waiting for EPOLLOUT (kept as the tail), -1 dropped. */
static int put(int ep, int fd, const unsigned char *buf, size_t len)
{
    struct tconn *t = conns[fd];
    size_t w;
    ERR_clear_error();
    if (SSL_write_ex(t->ssl, buf, len, &w) == 1)
        return 0;
    if (SSL_get_error(t->ssl, 0) != SSL_ERROR_WANT_WRITE) {
        drop(ep, fd);
        return -1;
    }
    if (t->tail != buf) {
        free(t->tail);
        t->tail = malloc(len);
        if (!t->tail) {
            drop(ep, fd);
            return -1;
        }
        memcpy(t->tail, buf, len);
        t->tail_len = len;
    }
    want(ep, fd, EPOLLOUT);
    return 1;
}

static void serve(int ep, int fd, unsigned char *buf)
{
    struct tconn *t = conns[fd];
    ERR_clear_error();
    if (!t->handshaken) {
        int r = SSL_accept(t->ssl);
        if (r == 1) {
            t->handshaken = 1;
            want(ep, fd, EPOLLIN);
        } else {
            int e = SSL_get_error(t->ssl, r);
            if (e == SSL_ERROR_WANT_READ)
                want(ep, fd, EPOLLIN);
            else if (e == SSL_ERROR_WANT_WRITE)
                want(ep, fd, EPOLLOUT);
            else
                drop(ep, fd);
            return;
        }
    }
    if (t->tail) {
        int r = put(ep, fd, t->tail, t->tail_len);
        if (r != 0)
            return;
        free(t->tail);
        t->tail = NULL;
        want(ep, fd, EPOLLIN);
    }
    for (;;) {
        size_t n;
        if (SSL_read_ex(t->ssl, buf, BUF_SIZE, &n) != 1) {
            int e = SSL_get_error(t->ssl, 0);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                drop(ep, fd);
            return;
        }
        if (put(ep, fd, buf, n) != 0 || !SSL_has_pending(t->ssl))
            return;
    }
}

int main(int argc, char **argv)
{
    const char *listen_addr = "127.0.0.1:0", *cert = NULL, *key = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--listen"))
            listen_addr = argv[i + 1];
        else if (!strcmp(argv[i], "--cert"))
            cert = argv[i + 1];
        else if (!strcmp(argv[i], "--key"))
            key = argv[i + 1];
    }
    if (!cert || !key) {
        fprintf(stderr, "usage: tls_floor --cert PEM --key PEM [--listen HOST:PORT]\n");
        return 2;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_read_ahead(ctx, 1);
    int lfd = peer_listen(listen_addr);
    if (lfd < 0)
        return 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* SSL_set_fd's BIO writes with write(2) */

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    unsigned char *buf = malloc(BUF_SIZE);
    if (ep < 0 || !buf)
        return 1;
    peer_announce(lfd);
    struct epoll_event evs[256];
    while (!stop) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd != lfd) {
                if (conns[fd])
                    serve(ep, fd, buf);
                continue;
            }
            for (int k = 0; k < 64; k++) {
                int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (c < 0)
                    break;
                struct tconn *t = c < MAX_FD ? calloc(1, sizeof *t) : NULL;
                if (!t || !(t->ssl = SSL_new(ctx)) || SSL_set_fd(t->ssl, c) != 1) {
                    if (t)
                        SSL_free(t->ssl);
                    free(t);
                    close(c);
                    continue;
                }
                conns[c] = t;
                struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
            }
        }
    }
    SSL_CTX_free(ctx);
    return 0;
}
