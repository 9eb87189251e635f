/* SPDX-License-Identifier: MIT */
/* What UDP GSO and GRO would save a bulk sender and its receiver on this
 * machine (issue 14 asks to consider them): one process, a sender thread
 * pushing COUNT datagrams of SIZE bytes to a receiver over loopback, either
 * with sendmmsg batches of 64 or with UDP_SEGMENT (64 segments per send),
 * and the receiver with recvmmsg or with UDP_GRO. Prints the datagrams
 * received per second and the CPU per datagram of each side (thread CPU
 * clocks). Usage: udp_gso_probe [SIZE] [COUNT] (default 1400 1000000). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define BATCH 64

static size_t size = 1400;
static long count = 1000000;
static struct sockaddr_in dst;
static int gso, gro;
static volatile int sender_done;

static double thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double send_cpu;

static void *sender(void *arg)
{
    (void)arg;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    connect(fd, (struct sockaddr *)&dst, sizeof dst);
    static unsigned char buf[BATCH * 65536];
    memset(buf, 'g', sizeof buf);
    double c0 = thread_cpu();
    if (gso) {
        int seg = (int)size;
        setsockopt(fd, IPPROTO_UDP, UDP_SEGMENT, &seg, sizeof seg);
        size_t per = size * (65000 / size < BATCH ? 65000 / size : BATCH); /* under 64 KiB */
        for (long sent = 0; sent < count; sent += (long)(per / size))
            if (send(fd, buf, per, 0) < 0)
                break;
    } else {
        struct mmsghdr m[BATCH];
        struct iovec v[BATCH];
        for (int i = 0; i < BATCH; i++) {
            v[i] = (struct iovec){buf + (size_t)i * size, size};
            memset(&m[i], 0, sizeof m[i]);
            m[i].msg_hdr.msg_iov = &v[i];
            m[i].msg_hdr.msg_iovlen = 1;
        }
        for (long sent = 0; sent < count;) {
            int r = sendmmsg(fd, m, BATCH, 0);
            if (r <= 0)
                break;
            sent += r;
        }
    }
    send_cpu = thread_cpu() - c0;
    sender_done = 1;
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        size = (size_t)atol(argv[1]);
    if (argc > 2)
        count = atol(argv[2]);
    for (int mode = 0; mode < 4; mode++) {
        gso = mode & 1;
        gro = mode >> 1;
        int rfd = socket(AF_INET, SOCK_DGRAM, 0), big = 8 << 20, one = 1;
        setsockopt(rfd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
        memset(&dst, 0, sizeof dst);
        dst.sin_family = AF_INET;
        dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bind(rfd, (struct sockaddr *)&dst, sizeof dst);
        socklen_t len = sizeof dst;
        getsockname(rfd, (struct sockaddr *)&dst, &len);
        if (gro && setsockopt(rfd, IPPROTO_UDP, UDP_GRO, &one, sizeof one) < 0)
            perror("UDP_GRO");
        struct timeval tv = {0, 200000};
        setsockopt(rfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        sender_done = 0;
        pthread_t t;
        double t0 = now(), c0 = thread_cpu();
        pthread_create(&t, NULL, sender, NULL);
        static unsigned char rbuf[BATCH][65536];
        struct mmsghdr m[BATCH];
        struct iovec v[BATCH];
        long got = 0;
        for (;;) {
            for (int i = 0; i < BATCH; i++) {
                v[i] = (struct iovec){rbuf[i], sizeof rbuf[i]};
                memset(&m[i], 0, sizeof m[i]);
                m[i].msg_hdr.msg_iov = &v[i];
                m[i].msg_hdr.msg_iovlen = 1;
            }
            int r = recvmmsg(rfd, m, BATCH, MSG_WAITFORONE, NULL);
            if (r <= 0) {
                if (sender_done)
                    break;
                continue;
            }
            for (int i = 0; i < r; i++) /* GRO: one buffer holds a train of segments */
                got += (long)((m[i].msg_len + size - 1) / size);
        }
        double wall = now() - t0 - 0.2, rcpu = thread_cpu() - c0;
        pthread_join(t, NULL);
        close(rfd);
        printf("send %-9s recv %-9s: %6.2f%% received, %8.0f datagrams/s, sender %.3f µs, "
               "receiver %.3f µs CPU per datagram\n",
               gso ? "GSO" : "sendmmsg", gro ? "GRO" : "recvmmsg", 100.0 * (double)got / (double)count,
               (double)got / wall, send_cpu * 1e6 / (double)count, got ? rcpu * 1e6 / (double)got : 0);
    }
    return 0;
}
