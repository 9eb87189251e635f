/* SPDX-License-Identifier: MIT */
/* Datagram servers (socketserver's UDPServer and UnixDatagramServer): a
 * request is one datagram. The blocking modes get requests from the core
 * loop, which receives here instead of accepting; pool mode feeds its
 * workers from the serve loop below; event mode runs `workers` loops that
 * take datagrams in batches (recvmmsg), run the handler on each in the loop
 * thread and send the replies in batches (sendmmsg). */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"

#define REQUESTS_PER_TURN 32 /* pool: datagrams taken per wake-up (fairness) */
#define EV_BATCH 32          /* event: datagrams per recvmmsg, at most ... */
#define EV_IN_BUDGET ((size_t)2 * 1024 * 1024) /* ... and receive buffers per loop */
#define EV_OUT_ARENA ((size_t)256 * 1024)      /* event: replies held for one sendmmsg */
#define EV_OUT_MAX 64                          /* ... and how many of them */
#define EV_SEND_WAIT_MS 10   /* a full socket: wait this long for room, then drop */

struct tc__dgram {
    tc__dgram_sock sock;  /* first: the requests' drv_data */
    unsigned char *buf;   /* the serving thread's receive buffer: max + 1 bytes */
};

static int bad(tc_server *srv, const char *field, const char *why)
{
    tc__log_detail(srv, "invalid configuration: %s %s", field, why);
    return TC_EBADCONFIG;
}

int tc__dgram_start(tc_server *srv)
{
    tc_server_config *c = &srv->cfg;
    if (srv->addr.socktype != SOCK_DGRAM)
        return 0;
    if (c->proxy_protocol != TC_PROXY_OFF)
        return bad(srv, "proxy_protocol",
                   "does not apply to a datagram socket (there is no stream to carry a header)");
    if (c->transport)
        return bad(srv, "transport", "does not apply to a datagram socket (no DTLS)");
    if (c->codec.kind != TC_CODEC_RAW)
        return bad(srv, "codec", "must be raw on a datagram socket: a datagram is one message "
                                 "(only max_frame applies)");
    if (c->codec.max_frame == 0)
        c->codec.max_frame = TC_DGRAM_DEFAULT_MAX_FRAME;
    if (c->codec.max_frame > TC_DGRAM_MAX_FRAME)
        return bad(srv, "codec.max_frame", "is over TC_DGRAM_MAX_FRAME for a datagram socket");
    struct tc__dgram *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    d->sock.fd = srv->lfd;
    d->sock.max = c->codec.max_frame;
    /* Bound to every address (0.0.0.0, [::]): a reply must leave from the
     * address its request was sent to, or a client that sent to one of
     * several (and connected its socket to it) never sees it. */
    const tc_addr *a = &srv->addr;
    if ((tc_addr_family(a) == AF_INET && a->u.in4.sin_addr.s_addr == htonl(INADDR_ANY)) ||
        (tc_addr_family(a) == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&a->u.in6.sin6_addr)))
        d->sock.pktinfo = tc__sock_pktinfo_on(srv->lfd, tc_addr_family(a)) == 0;
    if (!(d->buf = malloc(d->sock.max + 1))) {
        free(d);
        return -ENOMEM;
    }
    srv->dgram = d;
    return 0;
}

void tc__dgram_free(tc_server *srv)
{
    if (!srv->dgram)
        return;
    free(srv->dgram->buf);
    free(srv->dgram);
    srv->dgram = NULL;
}

void tc__dgram_stats(const tc_server *srv, tc_stats *out)
{
    const tc__dgram_sock *ds = srv->dgram ? &srv->dgram->sock : NULL;
    out->dgram_received = ds ? atomic_load(&ds->received) : 0;
    out->dgram_answered = ds ? atomic_load(&ds->answered) : 0;
    out->dgram_dropped = ds ? atomic_load(&ds->dropped) : 0;
    out->dgram_truncated = ds ? atomic_load(&ds->truncated) : 0;
}

/* Too long: counted and logged, never delivered cut. */
static void too_long(tc_server *srv, const tc_addr *peer)
{
    tc__dgram_sock *ds = &srv->dgram->sock;
    atomic_fetch_add_explicit(&ds->truncated, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&ds->dropped, 1, memory_order_relaxed);
    char from[TC_ADDR_STRLEN] = "-";
    (void)tc_addr_format(peer, from, sizeof from);
    tc__log(srv, TC_LOG_DEBUG, "datagram from %s over max_frame (%zu bytes): dropped", from,
            ds->max);
}

/* verify_request on a datagram: 0 to serve it, else refused (counted). */
static int verify(tc_server *srv, const tc_addr *peer)
{
    if (!srv->cfg.hooks.verify_request ||
        srv->cfg.hooks.verify_request(srv, peer, srv->cfg.hooks.ctx) >= 0)
        return 0;
    atomic_fetch_add(&srv->refused, 1);
    return -1;
}

int tc__dgram_receive(tc_server *srv, tc_conn **out)
{
    struct tc__dgram *d = srv->dgram;
    tc_addr peer, dst = srv->addr;
    int trunc = 0;
    *out = NULL;
    ssize_t r = tc__sock_recvfrom(srv->lfd, d->buf, d->sock.max + 1, &peer, &trunc,
                                  d->sock.pktinfo ? &dst : NULL);
    if (r < 0)
        return (int)r;
    atomic_fetch_add_explicit(&d->sock.received, 1, memory_order_relaxed);
    if (trunc || (size_t)r > d->sock.max) {
        too_long(srv, &peer);
        return 0;
    }
    atomic_fetch_add(&srv->accepted, 1);
    if (verify(srv, &peer) < 0)
        return 0;
    tc_conn *conn;
    int rc = tc__dgram_chan(&conn, &d->sock, &peer, &srv->addr,
                            d->sock.pktinfo && dst.len ? &dst : NULL, d->buf, (size_t)r);
    if (rc < 0) {
        atomic_fetch_add_explicit(&d->sock.dropped, 1, memory_order_relaxed);
        tc__report(srv, NULL, rc);
        return 0;
    }
    conn->srv = srv;
    conn->timeout_ms = srv->cfg.conn_timeout_ms;
    conn->codec = &srv->cfg.codec;
    *out = conn;
    return 0;
}

/* ---- pool mode: the serving thread receives, the workers handle ------------- */

/* A request on its way to a worker, in its session's room. */
struct pjob {
    tc__job job; /* first: the pool hands back the tc__job pointer */
    tc__session *s;
};

static void pjob_run(tc__job *job)
{
    tc__server_run_session(((struct pjob *)job)->s);
}

/* The worker's thread ended inside the handler: the session has closed. */
static void pjob_lost(tc__job *job)
{
    tc__server_session_done(((struct pjob *)job)->s);
}

static int hand_to_pool(const tc__dispatch *dp, tc__session *s)
{
    struct pjob *p = (struct pjob *)(void *)s->room;
    p->job.run = pjob_run;
    p->job.lost = pjob_lost;
    p->s = s;
    return dp->submit(dp->pool, &p->job);
}

void tc__dgram_room(tc_server *srv)
{
    tc__wake(srv->wakefd);
}

static int pool_serve(tc_server *srv, const tc__dispatch *dp)
{
    tc__session *held = NULL; /* received, refused by a full queue: retried first */
    int rc = 0;
    while (!atomic_load(&srv->shutdown_req)) {
        int take = !held && tc__server_may_accept(srv);
        struct pollfd p[2] = {{.fd = srv->wakefd, .events = POLLIN},
                              {.fd = take ? srv->lfd : -1, .events = POLLIN}};
        int every = srv->cfg.poll_interval_ms;
        if (poll(p, 2, every > 0 ? every : -1) < 0 && errno != EINTR) {
            rc = -errno;
            break;
        }
        if (p[0].revents)
            tc__wake_drain(srv->wakefd);
        if (held && hand_to_pool(dp, held) == 0)
            held = NULL;
        for (int i = 0; !held && i < REQUESTS_PER_TURN && !atomic_load(&srv->shutdown_req) &&
                        tc__server_may_accept(srv);
             i++) {
            tc__session *s;
            int a = tc__server_accept(srv, &s);
            if (a == -EAGAIN)
                break;
            if (a < 0) {
                tc__log(srv, TC_LOG_WARN, "recvfrom: %s", tc_strerror(a));
                break;
            }
            if (s && hand_to_pool(dp, s) < 0)
                held = s; /* the queue is full: wait for room (tc__dgram_room) */
        }
        if (srv->cfg.hooks.service_actions)
            srv->cfg.hooks.service_actions(srv, srv->cfg.hooks.ctx);
    }
    if (held) /* received already: in flight, so it is answered, here */
        tc__server_run_session(held);
    return rc;
}

/* ---- event mode: batches in the loop threads --------------------------------- */

struct evloop {
    tc_server *srv;
    pthread_t thread;
    int idx;
    unsigned nin;                 /* datagrams per recvmmsg */
    size_t slot;                  /* bytes per receive buffer: max + 1 */
    unsigned char *in;            /* nin receive buffers */
    struct mmsghdr *inh;
    struct iovec *iniov;
    struct sockaddr_storage *inaddr;
    struct {
        _Alignas(size_t) unsigned char buf[TC__PKTINFO_SPACE]; /* as struct cmsghdr */
    } *inctl;                     /* pktinfo: where each datagram was sent */
    unsigned char *out;           /* EV_OUT_ARENA bytes of replies ... */
    size_t outlen;
    unsigned nout;                /* ... in this many datagrams */
    struct mmsghdr outh[EV_OUT_MAX];
    struct iovec outiov[EV_OUT_MAX];
    tc_addr outaddr[EV_OUT_MAX];
    struct {
        _Alignas(size_t) unsigned char buf[TC__PKTINFO_SPACE]; /* as struct cmsghdr */
    } outctl[EV_OUT_MAX];         /* pktinfo: the source of each reply */
    tc_conn *conn;                /* the request channel, reused for each datagram */
    tc__session *s;               /* its session, reused too */
};

/* Send the replies held, in as few sendmmsg calls as the socket allows. */
static void out_flush(struct evloop *lp)
{
    tc__dgram_sock *ds = &lp->srv->dgram->sock;
    unsigned i = 0;
    int waited = 0;
    while (i < lp->nout) {
        int r = tc__sock_sendmmsg(ds->fd, lp->outh + i, lp->nout - i);
        if (r > 0) {
            atomic_fetch_add_explicit(&ds->answered, (unsigned)r, memory_order_relaxed);
            i += (unsigned)r;
        } else if (r == -EAGAIN && !waited) {
            waited = 1;
            (void)tc__sock_wait(ds->fd, POLLOUT, tc__deadline_ms(EV_SEND_WAIT_MS));
        } else if (r == -EAGAIN) {
            atomic_fetch_add_explicit(&ds->dropped, lp->nout - i, memory_order_relaxed);
            break;
        } else {
            atomic_fetch_add_explicit(&ds->dropped, 1, memory_order_relaxed);
            i++; /* that one is refused (an unreachable unix peer...): the rest go on */
        }
    }
    lp->nout = 0;
    lp->outlen = 0;
}

/* Hold one reply datagram for the batch's sendmmsg (from: its source, or NULL). */
static void out_add(struct evloop *lp, const tc_addr *to, const tc_addr *from,
                    const struct iovec *vec, int cnt, size_t total)
{
    tc__dgram_sock *ds = &lp->srv->dgram->sock;
    if (total > EV_OUT_ARENA) { /* too big to hold: on its own, now */
        ssize_t r = tc__sock_sendto(ds->fd, vec, cnt, to, from);
        atomic_fetch_add_explicit(r >= 0 ? &ds->answered : &ds->dropped, 1,
                                  memory_order_relaxed);
        return;
    }
    if (lp->nout == EV_OUT_MAX || lp->outlen + total > EV_OUT_ARENA)
        out_flush(lp);
    unsigned char *p = lp->out + lp->outlen;
    size_t off = 0;
    for (int i = 0; i < cnt; i++) {
        if (vec[i].iov_len)
            memcpy(p + off, vec[i].iov_base, vec[i].iov_len);
        off += vec[i].iov_len;
    }
    unsigned k = lp->nout++;
    lp->outlen += total;
    lp->outaddr[k] = *to;
    lp->outiov[k] = (struct iovec){p, total};
    memset(&lp->outh[k], 0, sizeof lp->outh[k]);
    lp->outh[k].msg_hdr.msg_name = &lp->outaddr[k].u;
    lp->outh[k].msg_hdr.msg_namelen = to->len;
    lp->outh[k].msg_hdr.msg_iov = &lp->outiov[k];
    lp->outh[k].msg_hdr.msg_iovlen = 1;
    size_t clen =
        from ? tc__sock_pktinfo_put(lp->outctl[k].buf, sizeof lp->outctl[k].buf, from) : 0;
    if (clen) {
        lp->outh[k].msg_hdr.msg_control = lp->outctl[k].buf;
        lp->outh[k].msg_hdr.msg_controllen = clen;
    }
}

static ssize_t ev_fill(tc_conn *c, int64_t deadline, size_t limit)
{
    (void)c, (void)deadline, (void)limit;
    return TC_EOF; /* the one datagram is buffered already */
}

static ssize_t ev_recv(tc_conn *c, void *buf, size_t n, int64_t deadline)
{
    (void)c, (void)buf, (void)n, (void)deadline;
    return 0;
}

static ssize_t ev_wait_input(tc_conn *c, int64_t deadline)
{
    (void)c, (void)deadline;
    return TC_EOF;
}

/* One reply, held for the batch: what tc_conn_write buffered, then vec. */
static ssize_t ev_send(tc_conn *c, const struct iovec *vec, int cnt, size_t total)
{
    struct evloop *lp = c->drv_data;
    const tc_addr *from = lp->srv->dgram->sock.pktinfo ? c->local : NULL;
    const tc_addr *to = tc__chan_peer(c); /* made once: the loop reuses the channel */
    if (!to)
        return -ENOMEM;
    if (c->b->woff < c->b->wlen) {
        struct iovec q = {c->b->wbuf + c->b->woff, c->b->wlen - c->b->woff};
        out_add(lp, to, from, &q, 1, q.iov_len);
        c->b->woff = c->b->wlen = 0;
    }
    tc__chan_set_sent(c, 0);
    if (cnt == 0)
        return 0;
    if (cnt > IOV_MAX)
        return -EMSGSIZE;
    out_add(lp, to, from, vec, cnt, total);
    tc__chan_set_sent(c, total);
    return (ssize_t)total;
}

static int ev_shutdown_write(tc_conn *c)
{
    return (int)ev_send(c, NULL, 0, 0);
}

static const tc__driver ev_dgram_driver = {
    .name = "dgram_event",
    .fill = ev_fill,
    .recv = ev_recv,
    .wait_input = ev_wait_input,
    .send = ev_send,
    .shutdown_write = ev_shutdown_write,
};

static void ev_free(struct evloop *lp)
{
    if (lp->conn) {
        if (lp->conn->b != &tc__chanbuf_none) {
            lp->conn->b->rbuf = NULL; /* a receive buffer's, not the channel's */
            lp->conn->b->rborrowed = 0;
        }
        tc__chan_free(lp->conn);
    }
    free(lp->s);
    free(lp->in);
    free(lp->inh);
    free(lp->iniov);
    free(lp->inaddr);
    free(lp->inctl);
    free(lp->out);
}

static int ev_init(struct evloop *lp, tc_server *srv, int idx)
{
    memset(lp, 0, sizeof *lp);
    lp->srv = srv;
    lp->idx = idx;
    lp->slot = srv->dgram->sock.max + 1;
    size_t n = EV_IN_BUDGET / lp->slot;
    lp->nin = n < 1 ? 1 : n > EV_BATCH ? EV_BATCH : (unsigned)n;
    lp->in = malloc(lp->nin * lp->slot);
    lp->inh = calloc(lp->nin, sizeof *lp->inh);
    lp->iniov = calloc(lp->nin, sizeof *lp->iniov);
    lp->inaddr = calloc(lp->nin, sizeof *lp->inaddr);
    lp->inctl = calloc(lp->nin, sizeof *lp->inctl);
    lp->out = malloc(EV_OUT_ARENA);
    lp->s = calloc(1, sizeof *lp->s + srv->session_room);
    int rc = lp->in && lp->inh && lp->iniov && lp->inaddr && lp->inctl && lp->out && lp->s
                 ? 0
                 : -ENOMEM;
    /* A local address of its own (NULL): with pktinfo, each datagram's. */
    if (rc == 0)
        rc = tc__chan_new(&lp->conn, &ev_dgram_driver, -1, NULL, NULL);
    if (rc < 0) {
        ev_free(lp);
        return rc;
    }
    lp->conn->drv_data = lp;
    lp->conn->srv = srv;
    lp->conn->own_local[0] = srv->addr;
    lp->s->srv = srv;
    lp->s->conn = lp->conn;
    lp->s->msg_style = 1;
    lp->s->dgram = 1;
    return 0;
}

/* Run the handler on one datagram, in this loop's reused channel and session. */
static void ev_handle(struct evloop *lp, const tc_addr *peer, const tc_addr *dst,
                      unsigned char *data, size_t len)
{
    tc_server *srv = lp->srv;
    tc_conn *c = lp->conn;
    if (tc__chan_set_peer(c, peer) < 0) { /* a unix socket's path, without memory */
        atomic_fetch_add_explicit(&srv->dgram->sock.dropped, 1, memory_order_relaxed);
        return;
    }
    if (tc__chan_own(c) < 0) {
        atomic_fetch_add_explicit(&srv->dgram->sock.dropped, 1, memory_order_relaxed);
        return;
    }
    c->own_local[0] = *dst;
    c->b->rbuf = data;
    c->b->rborrowed = 1;
    c->b->rcap = c->b->rlen = len;
    c->b->roff = c->b->rview = c->b->rscan = 0;
    c->reof = 1;
    c->rerr = c->werr = 0;
    c->data = NULL;
    c->timeout_ms = srv->cfg.conn_timeout_ms;
    c->deadline = TC__NO_DEADLINE;
    c->codec = &srv->cfg.codec;
    tc__session *s = lp->s;
    s->setup_done = s->opened = s->closed = 0;
    tc__session_run(s);
    c->b->rbuf = NULL;
    c->b->rborrowed = 0;
    tc__chan_trim(c, 0); /* a write buffer the handler made */
}

/* Take and handle one batch: how many datagrams came, or -EAGAIN / an error. */
static int ev_batch(struct evloop *lp)
{
    tc_server *srv = lp->srv;
    tc__dgram_sock *ds = &srv->dgram->sock;
    for (unsigned i = 0; i < lp->nin; i++) {
        lp->iniov[i] = (struct iovec){lp->in + i * lp->slot, lp->slot};
        memset(&lp->inh[i].msg_hdr, 0, sizeof lp->inh[i].msg_hdr);
        lp->inh[i].msg_hdr.msg_name = &lp->inaddr[i];
        lp->inh[i].msg_hdr.msg_namelen = sizeof lp->inaddr[i];
        lp->inh[i].msg_hdr.msg_iov = &lp->iniov[i];
        lp->inh[i].msg_hdr.msg_iovlen = 1;
        if (ds->pktinfo) {
            lp->inh[i].msg_hdr.msg_control = lp->inctl[i].buf;
            lp->inh[i].msg_hdr.msg_controllen = sizeof lp->inctl[i].buf;
        }
    }
    int n = tc__sock_recvmmsg(ds->fd, lp->inh, lp->nin);
    if (n <= 0)
        return n;
    atomic_fetch_add_explicit(&ds->received, (unsigned)n, memory_order_relaxed);
    /* The batch is in flight until its replies are out (tc_stats.active). */
    unsigned active = atomic_fetch_add(&srv->active, (unsigned)n) + (unsigned)n;
    unsigned peak = atomic_load(&srv->peak);
    while (active > peak && !atomic_compare_exchange_weak(&srv->peak, &peak, active))
        ;
    unsigned handed = 0;
    /* Every datagram received is in flight: a shutdown now still answers them. */
    for (int i = 0; i < n; i++) {
        tc_addr peer;
        (void)tc_addr_from_sockaddr(&peer, (struct sockaddr *)&lp->inaddr[i],
                                    lp->inh[i].msg_hdr.msg_namelen);
        peer.socktype = SOCK_DGRAM;
        size_t len = lp->inh[i].msg_len;
        if ((lp->inh[i].msg_hdr.msg_flags & MSG_TRUNC) || len > ds->max) {
            too_long(srv, &peer);
            continue;
        }
        handed++;
        tc_addr dst = srv->addr;
        if (ds->pktinfo && !tc__sock_pktinfo_get(&lp->inh[i].msg_hdr, tc_addr_port(&dst), &dst))
            dst = srv->addr;
        if (verify(srv, &peer) == 0)
            ev_handle(lp, &peer, &dst, lp->in + (size_t)i * lp->slot, len);
    }
    atomic_fetch_add(&srv->accepted, handed);
    out_flush(lp);
    atomic_fetch_sub(&srv->active, (unsigned)n);
    return n;
}

static void ev_run(struct evloop *lp)
{
    tc_server *srv = lp->srv;
    int full = 0; /* the last batch was full: more are most likely queued */
    for (;;) {
        if (atomic_load(&srv->shutdown_req) || tc__wake_pending(srv->stopfd))
            break;
        if (!full) {
            int every = lp->idx == 0 ? srv->cfg.poll_interval_ms : -1;
            struct pollfd p[2] = {{.fd = srv->lfd, .events = POLLIN},
                                  {.fd = srv->stopfd, .events = POLLIN}};
            int r = poll(p, 2, every > 0 ? every : -1);
            if (r < 0 && errno != EINTR) {
                tc__log(srv, TC_LOG_ERROR, "datagram loop %d: %s", lp->idx,
                        tc_strerror(-errno));
                break;
            }
            if (p[1].revents)
                break;
        }
        int n = ev_batch(lp);
        if (n < 0 && n != -EAGAIN)
            tc__log(srv, TC_LOG_WARN, "recvmmsg: %s", tc_strerror(n));
        full = n == (int)lp->nin;
        if (lp->idx == 0 && srv->cfg.hooks.service_actions)
            srv->cfg.hooks.service_actions(srv, srv->cfg.hooks.ctx);
    }
}

static void *ev_main(void *arg)
{
    ev_run(arg);
    return NULL;
}

static int event_serve(tc_server *srv)
{
    int nloops = srv->cfg.workers > 0 ? srv->cfg.workers : 1;
    struct evloop *loops = calloc((size_t)nloops, sizeof *loops);
    if (!loops)
        return -ENOMEM;
    int rc = 0, ready = 0, started = 1;
    for (; ready < nloops && rc == 0; ready++)
        if ((rc = ev_init(&loops[ready], srv, ready)) < 0)
            break;
    if (rc == 0) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, srv->cfg.thread_stack_size);
        for (; started < nloops; started++)
            if ((rc = -pthread_create(&loops[started].thread, &attr, ev_main, &loops[started])) < 0)
                break;
        pthread_attr_destroy(&attr);
        if (rc < 0) {
            tc__log(srv, TC_LOG_ERROR, "event mode: cannot start loop threads: %s",
                    tc_strerror(rc));
            (void)tc_server_shutdown(srv); /* the loops that did start stop at once */
        }
        ev_run(&loops[0]);
        for (int i = 1; i < started; i++)
            pthread_join(loops[i].thread, NULL);
    }
    for (int i = 0; i < ready; i++)
        ev_free(&loops[i]);
    free(loops);
    return rc;
}

int tc__dgram_serve(tc_server *srv)
{
    const tc__dispatch *dp = tc__loops_dispatch(srv);
    if (!dp)
        return event_serve(srv);
    /* The pool's jobs live in the sessions' room. */
    if (srv->session_room < sizeof(struct pjob))
        srv->session_room = sizeof(struct pjob);
    return pool_serve(srv, dp);
}
