/* SPDX-License-Identifier: MIT */
/* Shared by the C peers: parse --listen HOST:PORT (numeric IPv4, port 0 = any),
 * bind a listener and print "listening on HOST:PORT" like tcpchan-echo. */
#ifndef BENCH_PEER_COMMON_H
#define BENCH_PEER_COMMON_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PEER_BACKLOG 4096 /* the same for every server in the benchmark */

static inline const char *peer_listen_arg(int argc, char **argv)
{
    const char *addr = "127.0.0.1:0";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
            addr = argv[++i];
        } else {
            fprintf(stderr, "usage: %s [--listen HOST:PORT]\n", argv[0]);
            exit(2);
        }
    }
    return addr;
}

static inline int peer_parse(const char *s, struct sockaddr_in *out)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons((unsigned short)atoi(colon + 1));
    return inet_pton(AF_INET, host, &out->sin_addr) == 1 ? 0 : -1;
}

/* A non-blocking listener, or -1 (reported on stderr). */
static inline int peer_listen(const char *s)
{
    struct sockaddr_in sin;
    if (peer_parse(s, &sin) < 0) {
        fprintf(stderr, "--listen %s: want IPV4:PORT\n", s);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(fd, PEER_BACKLOG) < 0) {
        perror("listen");
        return -1;
    }
    return fd;
}

static inline void peer_announce(int fd)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    char host[INET_ADDRSTRLEN];
    getsockname(fd, (struct sockaddr *)&sin, &len);
    inet_ntop(AF_INET, &sin.sin_addr, host, sizeof host);
    printf("listening on %s:%u\n", host, (unsigned)ntohs(sin.sin_port));
    fflush(stdout);
}

#endif
