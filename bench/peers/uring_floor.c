/* SPDX-License-Identifier: MIT */
/* uring_floor: the least an io_uring echo server does, as the benchmark's
 * io_uring floor beside epoll_floor. One thread; multishot accept; one
 * multishot receive per connection into a provided buffer ring of 16 KiB
 * buffers; each received buffer sent back as it is (one send in flight per
 * connection, the rest queued in order) and returned to the ring when sent;
 * every request of a loop turn submitted with the wait (DEFER_TASKRUN,
 * SINGLE_ISSUER, a registered ring descriptor). No fixed files: a
 * connection is a plain descriptor, as in tcpchan. */
#define _GNU_SOURCE
#include <errno.h>
#include <liburing.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "peer_common.h"

#define ENTRIES 4096
#define NBUFS 1024 /* a power of two */
#define BUF_SIZE (16 * 1024)
#define BGID 0

enum { OP_ACCEPT = 1, OP_RECV, OP_SEND };

struct conn {
    int head, tail;  /* queued buffers to send, in order (-1: none) */
    unsigned off;    /* bytes of the head buffer already sent */
    int sending;     /* a send of the head is in flight */
    int recv_on;     /* the multishot receive is armed */
    int closing;     /* the peer is gone: close once nothing is in flight */
};

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static unsigned char *bufs;
static int nxt[NBUFS];           /* the next buffer in a connection's queue */
static unsigned blen[NBUFS];     /* bytes in a queued buffer */

static struct conn *conns;       /* indexed by descriptor */
static int nconns;
static int *rearm, nrearm;       /* receives ended for want of buffers */
static volatile sig_atomic_t stop;

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

static uint64_t tag(int op, int fd) { return (uint64_t)op << 32 | (uint32_t)fd; }

static struct io_uring_sqe *sqe_get(void)
{
    struct io_uring_sqe *s = io_uring_get_sqe(&ring);
    if (!s) {
        io_uring_submit(&ring);
        s = io_uring_get_sqe(&ring);
    }
    return s;
}

static void give(int bid)
{
    io_uring_buf_ring_add(br, bufs + (size_t)bid * BUF_SIZE, BUF_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(NBUFS), 0);
    io_uring_buf_ring_advance(br, 1);
}

static void arm_accept(int lfd)
{
    struct io_uring_sqe *s = sqe_get();
    io_uring_prep_multishot_accept(s, lfd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(s, tag(OP_ACCEPT, lfd));
}

static void arm_recv(int fd)
{
    struct io_uring_sqe *s = sqe_get();
    io_uring_prep_recv_multishot(s, fd, NULL, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = BGID;
    io_uring_sqe_set_data64(s, tag(OP_RECV, fd));
    conns[fd].recv_on = 1;
}

static void send_head(int fd)
{
    struct conn *c = &conns[fd];
    int bid = c->head;
    struct io_uring_sqe *s = sqe_get();
    io_uring_prep_send(s, fd, bufs + (size_t)bid * BUF_SIZE + c->off, blen[bid] - c->off,
                       MSG_NOSIGNAL);
    io_uring_sqe_set_data64(s, tag(OP_SEND, fd));
    c->sending = 1;
}

static void maybe_close(int fd)
{
    struct conn *c = &conns[fd];
    if (!c->closing || c->sending || c->recv_on)
        return;
    while (c->head >= 0) {
        int b = c->head;
        c->head = nxt[b];
        give(b);
    }
    close(fd);
    memset(c, 0, sizeof *c);
    c->head = c->tail = -1;
}

static int ensure(int fd)
{
    if (fd < nconns)
        return 0;
    int n = nconns ? nconns : 1024;
    while (n <= fd)
        n *= 2;
    struct conn *p = realloc(conns, (size_t)n * sizeof *p);
    int *r = realloc(rearm, (size_t)n * sizeof *r);
    if (!p || !r)
        return -1;
    for (int i = nconns; i < n; i++)
        p[i] = (struct conn){.head = -1, .tail = -1};
    conns = p;
    rearm = r;
    nconns = n;
    return 0;
}

static void on_recv(int fd, const struct io_uring_cqe *cqe)
{
    struct conn *c = &conns[fd];
    int more = cqe->flags & IORING_CQE_F_MORE;
    if (!more)
        c->recv_on = 0;
    if (cqe->res > 0) {
        int bid = (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        blen[bid] = (unsigned)cqe->res;
        nxt[bid] = -1;
        if (c->tail >= 0)
            nxt[c->tail] = bid;
        else
            c->head = bid;
        c->tail = bid;
        if (!c->sending)
            send_head(fd);
        if (!more && !c->closing)
            rearm[nrearm++] = fd;
        return;
    }
    if (cqe->res == -ENOBUFS && !c->closing) {
        rearm[nrearm++] = fd;
        return;
    }
    c->closing = 1; /* end of stream or an error */
    maybe_close(fd);
}

static void on_send(int fd, int res)
{
    struct conn *c = &conns[fd];
    c->sending = 0;
    if (res <= 0) {
        c->closing = 1;
        maybe_close(fd);
        return;
    }
    int bid = c->head;
    c->off += (unsigned)res;
    if (c->off == blen[bid]) {
        c->head = nxt[bid];
        if (c->head < 0)
            c->tail = -1;
        c->off = 0;
        give(bid);
    }
    if (c->head >= 0 && !c->closing)
        send_head(fd);
    maybe_close(fd);
}

int main(int argc, char **argv)
{
    const char *listen_addr = peer_listen_arg(argc, argv);
    int lfd = peer_listen(listen_addr);
    if (lfd < 0)
        return 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
    p.cq_entries = ENTRIES * 4;
    int rc = io_uring_queue_init_params(ENTRIES, &ring, &p);
    if (rc < 0) {
        fprintf(stderr, "io_uring: %s\n", strerror(-rc));
        return 1;
    }
    io_uring_register_ring_fd(&ring);
    bufs = malloc((size_t)NBUFS * BUF_SIZE);
    /* The buffer ring (liburing 2.3 has no io_uring_setup_buf_ring). */
    void *mem = mmap(NULL, NBUFS * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    br = mem == MAP_FAILED ? NULL : mem;
    if (br) {
        io_uring_buf_ring_init(br);
        struct io_uring_buf_reg reg = {.ring_addr = (unsigned long)br, .ring_entries = NBUFS,
                                       .bgid = BGID};
        rc = io_uring_register_buf_ring(&ring, &reg, 0);
        if (rc < 0)
            br = NULL;
    }
    if (!bufs || !br || ensure(1024) < 0) {
        fprintf(stderr, "buffer ring: %s\n", strerror(-rc));
        return 1;
    }
    for (int i = 0; i < NBUFS; i++)
        give(i);
    arm_accept(lfd);
    peer_announce(lfd);

    while (!stop) {
        for (int i = 0; i < nrearm; i++)
            if (!conns[rearm[i]].recv_on && !conns[rearm[i]].closing)
                arm_recv(rearm[i]);
        nrearm = 0;
        if (io_uring_submit_and_wait(&ring, 1) < 0 && errno != EINTR)
            continue;
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            int op = (int)(cqe->user_data >> 32), fd = (int)(uint32_t)cqe->user_data;
            if (op == OP_ACCEPT) {
                if (cqe->res >= 0) {
                    if (ensure(cqe->res) < 0) {
                        close(cqe->res);
                    } else {
                        conns[cqe->res] = (struct conn){.head = -1, .tail = -1};
                        /* A stream is echoed in 16 KiB pieces, each below
                         * loopback's MSS (64 KiB): Nagle held every one until
                         * the previous was acknowledged (1 MiB echoes at
                         * 0.43-0.66x the epoll floor's rate, the CPU idle).
                         * One send in flight per connection already batches
                         * small replies. */
                        int one = 1;
                        (void)setsockopt(cqe->res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                        arm_recv(cqe->res);
                    }
                }
                if (!(cqe->flags & IORING_CQE_F_MORE))
                    arm_accept(lfd);
            } else if (op == OP_RECV) {
                on_recv(fd, cqe);
            } else if (op == OP_SEND) {
                on_send(fd, cqe->res);
            }
        }
        io_uring_cq_advance(&ring, seen);
    }
    return 0;
}
