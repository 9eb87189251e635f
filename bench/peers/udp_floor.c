/* SPDX-License-Identifier: MIT */
/* The datagram floor: the least a UDP echo can do per datagram, one thread,
 * a blocking recvmmsg (MSG_WAITFORONE) of up to 64 datagrams and one sendmmsg
 * of the replies. No handler, no checks: what libtcpchan's event mode is
 * measured against. Prints "listening on udp:HOST:PORT". */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "peer_common.h"

#define BATCH 64
#define SLOT 65536

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv)
{
    const char *addr = peer_listen_arg(argc, argv);
    struct sockaddr_in sin;
    if (!strncmp(addr, "udp:", 4))
        addr += 4;
    if (peer_parse(addr, &sin) < 0) {
        fprintf(stderr, "--listen %s: want IPV4:PORT\n", addr);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0) {
        perror("bind");
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term; /* no SA_RESTART: recvmmsg returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    socklen_t len = sizeof sin;
    char host[INET_ADDRSTRLEN];
    getsockname(fd, (struct sockaddr *)&sin, &len);
    inet_ntop(AF_INET, &sin.sin_addr, host, sizeof host);
    printf("listening on udp:%s:%u\n", host, (unsigned)ntohs(sin.sin_port));
    fflush(stdout);

    static unsigned char buf[BATCH][SLOT];
    static struct mmsghdr m[BATCH];
    static struct iovec iov[BATCH];
    static struct sockaddr_in from[BATCH];
    while (!stop) {
        for (int i = 0; i < BATCH; i++) {
            iov[i] = (struct iovec){buf[i], SLOT};
            memset(&m[i].msg_hdr, 0, sizeof m[i].msg_hdr);
            m[i].msg_hdr.msg_name = &from[i];
            m[i].msg_hdr.msg_namelen = sizeof from[i];
            m[i].msg_hdr.msg_iov = &iov[i];
            m[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(fd, m, BATCH, MSG_WAITFORONE, NULL);
        if (n <= 0)
            continue; /* EINTR: look at stop */
        for (int i = 0; i < n; i++)
            iov[i].iov_len = m[i].msg_len; /* the reply: the datagram, to its sender */
        for (int done = 0; done < n;) {
            int r = sendmmsg(fd, m + done, (unsigned)(n - done), 0);
            if (r <= 0)
                break;
            done += r;
        }
    }
    close(fd);
    return 0;
}
