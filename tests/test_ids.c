/* SPDX-License-Identifier: MIT */
/* Connection ids (tc_conn_id), sends and closes by id from other threads
 * (tc_server_send_to, tc_server_close_conn), and the walk over a loop's
 * connections (tc_loop_foreach): issue 19's "handles that outlive a
 * connection" and "reaching every connection". */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"
#include "tcpchan/tcpchan.h"

#define NCLIENTS 6

/* What the handlers saw; written by the server's threads, read by the test's. */
struct seen {
    atomic_int lock, nids;
    _Atomic uint64_t ids[64];
    atomic_int closes_eclosed, closes;
    atomic_int block;       /* on_message for "block" waits until this is 0 */
    tc_test_event opened, closed, blocked;
};

static void seen_init(struct seen *s)
{
    memset(s, 0, sizeof *s);
    tc_test_event_init(&s->opened);
    tc_test_event_init(&s->closed);
    tc_test_event_init(&s->blocked);
}

static void seen_destroy(struct seen *s)
{
    tc_test_event_destroy(&s->opened);
    tc_test_event_destroy(&s->closed);
    tc_test_event_destroy(&s->blocked);
}

static int ids_open(tc_conn *c, void *ctx)
{
    struct seen *s = ctx;
    int i = atomic_fetch_add(&s->nids, 1);
    if (i < 64)
        atomic_store(&s->ids[i], tc_conn_id(c));
    tc_test_event_post(&s->opened, NULL);
    return 0;
}

/* Echo; "block" first waits (bounded) while the test holds the worker. */
static int ids_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    struct seen *s = ctx;
    if (len == 5 && memcmp(msg, "block", 5) == 0) {
        tc_test_event_post(&s->blocked, NULL);
        int64_t end = tc_test_now_ms() + TC_TEST_WAIT_MS;
        while (atomic_load(&s->block) && tc_test_now_ms() < end)
            tc_test_nap_ms(1);
    }
    ssize_t r = tc_conn_send(c, msg, len);
    return r < 0 ? (int)r : 0;
}

static void ids_close(tc_conn *c, int reason, void *ctx)
{
    struct seen *s = ctx;
    (void)c;
    atomic_fetch_add(&s->closes, 1);
    if (reason == TC_ECLOSED)
        atomic_fetch_add(&s->closes_eclosed, 1);
    tc_test_event_post(&s->closed, NULL);
}

static void start(tc_test_server *ts, struct seen *s, tc_mode mode, int workers)
{
    tc_server_config cfg = tc_test_config();
    cfg.mode = mode;
    cfg.workers = workers;
    cr_assert_eq(tc_codec_delimited(&cfg.codec, "\n", 1), 0);
    tc_handler h = TC_HANDLER_INIT;
    h.on_open = ids_open;
    h.on_message = ids_message;
    h.on_close = ids_close;
    h.ctx = s;
    tc_test_server_start(ts, NULL, &cfg, &h);
}

/* Connect n clients, each echoing once: on_open has run for all of them. */
static void connect_all(tc_test_server *ts, struct seen *s, int *fd, int n)
{
    for (int i = 0; i < n; i++) {
        fd[i] = tc_test_connect_ok(&ts->addr);
        cr_assert_eq(tc_test_send_all(fd[i], "hi\n", 3), 0);
        char b[3];
        cr_assert_eq(tc_test_recv_full(fd[i], b, 3), 3);
    }
    cr_assert_eq(tc_test_event_wait(&s->opened, n, TC_TEST_WAIT_MS), 0);
}

/* A loop-mode server (two workers) whose n clients have each echoed once,
 * and what it must leave behind. */
struct rig {
    const char *name;
    struct seen s;
    tc_test_counts before;
    tc_test_server ts;
    int fd[32]; /* -1 once the test closed it */
    int n;
};

static void rig_open(struct rig *g, tc_mode mode, int n)
{
    cr_assert_leq(n, (int)(sizeof g->fd / sizeof g->fd[0]));
    g->name = tc_mode_name(mode);
    g->n = n;
    seen_init(&g->s);
    g->before = tc_test_counts_now(NULL, 0);
    start(&g->ts, &g->s, mode, 2);
    connect_all(&g->ts, &g->s, g->fd, n);
}

/* Close the clients left, stop the server: nothing may leak. */
static void rig_close(struct rig *g)
{
    for (int i = 0; i < g->n; i++)
        if (g->fd[i] >= 0)
            close(g->fd[i]);
    cr_assert_eq(tc_test_server_stop(&g->ts), 0);
    tc_test_expect_counts(g->before, NULL, 0, g->name);
    seen_destroy(&g->s);
}

static const tc_mode loop_modes[] = {TC_MODE_EVENT, TC_MODE_POOL};

/* Ids are distinct and nonzero; a send by id reaches that connection only,
 * framed; a close by id ends it (on_close sees TC_ECLOSED) and then the id
 * is refused with TC_ECLOSED, as is an id that never was. */
Test(ids, send_to_and_close_by_id, .timeout = 60)
{
    for (size_t m = 0; m < sizeof loop_modes / sizeof loop_modes[0]; m++) {
        if (!tc_test_mode_enabled(loop_modes[m]))
            continue;
        struct rig g;
        rig_open(&g, loop_modes[m], NCLIENTS);
        for (int i = 0; i < NCLIENTS; i++) {
            uint64_t id = atomic_load(&g.s.ids[i]);
            cr_assert_neq(id, 0, "%s: id 0", g.name);
            for (int j = 0; j < i; j++)
                cr_assert_neq(id, atomic_load(&g.s.ids[j]), "%s: ids %d and %d equal", g.name, i, j);
        }
        /* Each id reaches exactly one client (the clients are in accept order). */
        for (int i = 0; i < NCLIENTS; i++) {
            char b[8];
            cr_assert_eq(tc_server_send_to(g.ts.srv, atomic_load(&g.s.ids[i]), "to", 2), 0);
            cr_assert_eq(tc_test_recv_full(g.fd[i], b, 3), 3, "%s: client %d got nothing", g.name, i);
            cr_assert(memcmp(b, "to\n", 3) == 0, "%s: client %d", g.name, i);
        }
        for (int i = 0; i < NCLIENTS; i++) /* nobody got a second copy */
            cr_assert_eq(recv(g.fd[i], (char[4]){0}, 4, MSG_DONTWAIT), -1, "%s", g.name);
        /* Close client 0 by id, from this thread. */
        uint64_t id0 = atomic_load(&g.s.ids[0]);
        cr_assert_eq(tc_server_close_conn(g.ts.srv, id0), 0);
        cr_assert_eq(tc_test_recv_eof(g.fd[0]), 0, "%s: no end of stream after close by id", g.name);
        cr_assert_eq(tc_test_event_wait(&g.s.closed, 1, TC_TEST_WAIT_MS), 0);
        cr_assert_eq(atomic_load(&g.s.closes_eclosed), 1, "%s: on_close's reason", g.name);
        cr_assert_eq(tc_server_send_to(g.ts.srv, id0, "x", 1), TC_ECLOSED, "%s", g.name);
        cr_assert_eq(tc_server_close_conn(g.ts.srv, id0), TC_ECLOSED, "%s", g.name);
        cr_assert_eq(tc_server_send_to(g.ts.srv, id0 + 1000000, "x", 1), TC_ECLOSED, "%s", g.name);
        cr_assert_eq(tc_server_send_to(g.ts.srv, 0, "x", 1), -EINVAL);
        cr_assert_eq(tc_server_send_to(NULL, id0, "x", 1), -EINVAL);
        cr_assert_eq(tc_server_close_conn(g.ts.srv, 0), -EINVAL);
        /* The others still echo. */
        for (int i = 1; i < NCLIENTS; i++) {
            char b[3];
            cr_assert_eq(tc_test_send_all(g.fd[i], "ok\n", 3), 0);
            cr_assert_eq(tc_test_recv_full(g.fd[i], b, 3), 3, "%s: client %d", g.name, i);
        }
        for (int i = 0; i < NCLIENTS; i++) {
            close(g.fd[i]);
            g.fd[i] = -1;
        }
        cr_assert_eq(tc_test_event_wait(&g.s.closed, NCLIENTS, TC_TEST_WAIT_MS), 0);
        rig_close(&g);
    }
}

/* Pool mode: a send and a close by id while a worker runs the connection's
 * on_message wait for the worker (they are left for it), then happen in
 * order: the reply, the sent message, the end of the stream. */
Test(ids, pool_send_and_close_wait_for_the_worker, .timeout = 60)
{
    if (!tc_test_mode_enabled(TC_MODE_POOL))
        cr_skip_test("pool mode not selected by TC_TEST_MODES");
    struct rig g;
    rig_open(&g, TC_MODE_POOL, 1);
    int fd = g.fd[0];
    uint64_t id = atomic_load(&g.s.ids[0]);
    atomic_store(&g.s.block, 1);
    cr_assert_eq(tc_test_send_all(fd, "block\n", 6), 0);
    cr_assert_eq(tc_test_event_wait(&g.s.blocked, 1, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(tc_server_send_to(g.ts.srv, id, "after", 5), 0);
    cr_assert_eq(tc_server_close_conn(g.ts.srv, id), 0);
    atomic_store(&g.s.block, 0);
    char b[12];
    cr_assert_eq(tc_test_recv_full(fd, b, 12), 12);
    cr_assert(memcmp(b, "block\nafter\n", 12) == 0, "got %.12s", b);
    cr_assert_eq(tc_test_recv_eof(fd), 0);
    cr_assert_eq(tc_test_event_wait(&g.s.closed, 1, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(atomic_load(&g.s.closes_eclosed), 1);
    rig_close(&g);
}

/* ---- races: sends and closes by id against the connection's own end ------- */

struct racer {
    tc_server *srv;
    struct seen *s;
    int n;
    atomic_int stop;
    atomic_int ok, eclosed, eagain, other;
    atomic_int other_rc; /* the last unexpected answer, for the failure message */
};

static void *race_main(void *arg)
{
    struct racer *r = arg;
    /* At least two rounds over the ids, so that a racer scheduled only
     * after every client has gone still asks (and hears TC_ECLOSED). */
    for (unsigned k = 0; !atomic_load(&r->stop) || k < 2 * (unsigned)r->n; k++) {
        uint64_t id = atomic_load(&r->s->ids[k % (unsigned)r->n]);
        int rc = (k % 7 == 3) ? tc_server_close_conn(r->srv, id)
                              : tc_server_send_to(r->srv, id, "race", 4);
        if (rc == 0)
            atomic_fetch_add(&r->ok, 1);
        else if (rc == TC_ECLOSED)
            atomic_fetch_add(&r->eclosed, 1);
        else if (rc == -EAGAIN)
            atomic_fetch_add(&r->eagain, 1);
        else {
            atomic_fetch_add(&r->other, 1);
            atomic_store(&r->other_rc, rc);
        }
    }
    return NULL;
}

/* Two threads send to and close 24 connections by id while the clients
 * hang up (half of them with a reset): every answer is 0, TC_ECLOSED or
 * -EAGAIN, nothing is touched after it is freed (ASan, TSan), and at the
 * end every id is refused and nothing leaks. */
Test(ids, sends_and_closes_race_the_connections_end, .timeout = 120)
{
    enum { N = 24 };
    for (size_t m = 0; m < sizeof loop_modes / sizeof loop_modes[0]; m++) {
        if (!tc_test_mode_enabled(loop_modes[m]))
            continue;
        struct rig g;
        rig_open(&g, loop_modes[m], N);
        struct racer r = {.srv = g.ts.srv, .s = &g.s, .n = N};
        pthread_t t[2];
        for (int i = 0; i < 2; i++)
            cr_assert_eq(pthread_create(&t[i], NULL, race_main, &r), 0);
        for (int i = 0; i < N; i++) {
            if (i % 2) {
                struct linger lg = {1, 0}; /* a reset */
                (void)setsockopt(g.fd[i], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            }
            close(g.fd[i]);
            g.fd[i] = -1;
        }
        int all = tc_test_event_wait(&g.s.closed, N, TC_TEST_WAIT_MS);
        atomic_store(&r.stop, 1);
        for (int i = 0; i < 2; i++)
            pthread_join(t[i], NULL);
        cr_assert_eq(all, 0, "%s: %d of %d closed", g.name, atomic_load(&g.s.closes), N);
        cr_assert_eq(atomic_load(&r.other), 0, "%s: %d unexpected answers, the last %d (%s)",
                     g.name, atomic_load(&r.other), atomic_load(&r.other_rc),
                     tc_strerror(atomic_load(&r.other_rc)));
        cr_assert_gt(atomic_load(&r.ok) + atomic_load(&r.eclosed), 0, "%s", g.name);
        for (int i = 0; i < N; i++) {
            uint64_t id = atomic_load(&g.s.ids[i]);
            cr_assert_eq(tc_server_send_to(g.ts.srv, id, "x", 1), TC_ECLOSED, "%s", g.name);
            cr_assert_eq(tc_server_close_conn(g.ts.srv, id), TC_ECLOSED, "%s", g.name);
        }
        rig_close(&g);
    }
}

/* ---- tc_loop_foreach ----------------------------------------------------------------- */

struct walk {
    struct seen *s;
    atomic_int visited, matched, stopped_at, eperm;
    int stop_after;
    tc_test_event done;
};

static int walk_visit(tc_conn *c, void *arg)
{
    struct walk *w = arg;
    atomic_fetch_add(&w->visited, 1);
    uint64_t id = tc_conn_id(c);
    for (int i = 0; i < atomic_load(&w->s->nids) && i < 64; i++)
        if (atomic_load(&w->s->ids[i]) == id)
            atomic_fetch_add(&w->matched, 1);
    (void)tc_conn_send(c, "w", 1);
    return w->stop_after && atomic_load(&w->visited) >= w->stop_after;
}

static void walk_fn(tc_loop *loop, void *arg)
{
    struct walk *w = arg;
    int n = tc_loop_foreach(loop, walk_visit, w);
    atomic_store(&w->stopped_at, n);
    tc_test_event_post(&w->done, NULL);
}

/* Each loop's walk visits its own open connections, once each (together:
 * all of them); a visit can send; a visitor stops the walk by returning
 * non-zero; a closed connection is not visited; from another thread the
 * call is refused. */
Test(ids, foreach_visits_each_open_connection_once, .timeout = 60)
{
    for (size_t m = 0; m < sizeof loop_modes / sizeof loop_modes[0]; m++) {
        if (!tc_test_mode_enabled(loop_modes[m]))
            continue;
        struct rig g;
        rig_open(&g, loop_modes[m], NCLIENTS);
        /* One connection closes first: it must not be visited. */
        cr_assert_eq(tc_server_close_conn(g.ts.srv, atomic_load(&g.s.ids[0])), 0);
        cr_assert_eq(tc_test_event_wait(&g.s.closed, 1, TC_TEST_WAIT_MS), 0);
        int loops = tc_server_loop_count(g.ts.srv);
        struct walk w = {.s = &g.s};
        tc_test_event_init(&w.done);
        for (int i = 0; i < loops; i++)
            cr_assert_eq(tc_loop_post(tc_server_loop(g.ts.srv, i), walk_fn, &w), 0);
        cr_assert_eq(tc_test_event_wait(&w.done, loops, TC_TEST_WAIT_MS), 0);
        cr_assert_eq(atomic_load(&w.visited), NCLIENTS - 1, "%s: visited", g.name);
        cr_assert_eq(atomic_load(&w.matched), NCLIENTS - 1, "%s: ids seen in on_open", g.name);
        for (int i = 1; i < NCLIENTS; i++) {
            char b[2];
            cr_assert_eq(tc_test_recv_full(g.fd[i], b, 2), 2, "%s: client %d not visited", g.name, i);
            cr_assert(b[0] == 'w');
        }
        /* Stopping after the first visit, in a loop with connections. */
        struct walk w1 = {.s = &g.s, .stop_after = 1};
        tc_test_event_init(&w1.done);
        cr_assert_eq(tc_loop_post(tc_server_loop(g.ts.srv, 0), walk_fn, &w1), 0);
        cr_assert_eq(tc_test_event_wait(&w1.done, 1, TC_TEST_WAIT_MS), 0);
        cr_assert_eq(atomic_load(&w1.stopped_at), 1, "%s: the walk went on after a stop", g.name);
        /* Not from this thread. */
        cr_assert_eq(tc_loop_foreach(tc_server_loop(g.ts.srv, 0), walk_visit, &w), -EPERM);
        cr_assert_eq(tc_loop_foreach(NULL, walk_visit, &w), -EINVAL);
        cr_assert_eq(tc_loop_foreach(tc_server_loop(g.ts.srv, 0), NULL, &w), -EINVAL);
        rig_close(&g);
        tc_test_event_destroy(&w.done);
        tc_test_event_destroy(&w1.done);
    }
}

/* ---- the modes without loops ---------------------------------------------------------- */

struct blk {
    _Atomic uint64_t id;
    tc_test_event entered, left;
};

static int blk_handle(tc_conn *c, void *ctx)
{
    struct blk *b = ctx;
    atomic_store(&b->id, tc_conn_id(c));
    tc_test_event_post(&b->entered, NULL);
    char buf[64];
    ssize_t r;
    while ((r = tc_conn_read(c, buf, sizeof buf)) > 0)
        if (tc_conn_send_all(c, buf, (size_t)r) < 0)
            break;
    tc_test_event_post(&b->left, NULL);
    return 0;
}

/* Threading and inline modes: a connection has an id; closing it by id
 * from another thread ends its handler (its read sees the end of the
 * stream) and its client sees the end of the stream; sending by id is not
 * offered (the handler's thread owns the channel). */
Test(ids, close_by_id_in_the_blocking_modes, .timeout = 60)
{
    const tc_mode modes[] = {TC_MODE_THREADING, TC_MODE_INLINE, TC_MODE_FORKING};
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        if (!tc_test_mode_enabled(modes[m]))
            continue;
        const char *name = tc_mode_name(modes[m]);
        struct blk b;
        memset(&b, 0, sizeof b);
        tc_test_event_init(&b.entered);
        tc_test_event_init(&b.left);
        tc_test_counts before = tc_test_counts_now(NULL, 0);
        tc_server_config cfg = tc_test_config();
        cfg.mode = modes[m];
        tc_handler h = TC_HANDLER_INIT;
        h.handle = blk_handle;
        h.ctx = &b;
        tc_test_server ts;
        tc_test_server_start(&ts, NULL, &cfg, &h);
        int fd = tc_test_connect_ok(&ts.addr);
        char buf[3];
        cr_assert_eq(tc_test_send_all(fd, "hi\n", 3), 0);
        cr_assert_eq(tc_test_recv_full(fd, buf, 3), 3, "%s: no echo", name);
        uint64_t id = 0;
        if (modes[m] != TC_MODE_FORKING) { /* the child's memory is its own */
            cr_assert_eq(tc_test_event_wait(&b.entered, 1, TC_TEST_WAIT_MS), 0);
            id = atomic_load(&b.id);
            cr_assert_neq(id, 0, "%s", name);
        } else {
            id = 1; /* the first connection of the server */
        }
        cr_assert_eq(tc_server_send_to(ts.srv, id, "x", 1), -ENOTSUP, "%s", name);
        cr_assert_eq(tc_server_close_conn(ts.srv, id), 0, "%s", name);
        cr_assert_eq(tc_test_recv_eof(fd), 0, "%s: the client saw no end of stream", name);
        if (modes[m] != TC_MODE_FORKING)
            cr_assert_eq(tc_test_event_wait(&b.left, 1, TC_TEST_WAIT_MS), 0,
                         "%s: the handler did not end", name);
        close(fd);
        TC_TEST_WAIT_UNTIL(tc_server_close_conn(ts.srv, id) == TC_ECLOSED, TC_TEST_WAIT_MS);
        cr_assert_eq(tc_server_close_conn(ts.srv, id), TC_ECLOSED, "%s: the id outlived it", name);
        cr_assert_eq(tc_test_server_stop(&ts), 0);
        tc_test_expect_counts(before, NULL, 0, name);
        tc_test_event_destroy(&b.entered);
        tc_test_event_destroy(&b.left);
    }
}

/* ---- accepted and dialled connections -------------------------------------------------- */

struct mixed {
    const char *backend;   /* the address the accepted connection's on_open dials */
    atomic_int walked, walked_out;
    tc_test_event opened, done;
};

static int mixed_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    (void)c, (void)msg, (void)len, (void)ctx;
    return 0;
}

static int dialled_open(tc_conn *c, void *ctx)
{
    struct mixed *x = ctx;
    (void)c;
    tc_test_event_post(&x->opened, "dialled");
    return 0;
}

static int accepted_open(tc_conn *c, void *ctx)
{
    struct mixed *x = ctx;
    tc_handler h = TC_HANDLER_INIT;
    h.on_open = dialled_open;
    h.on_message = mixed_message;
    h.ctx = x;
    tc_test_event_post(&x->opened, "accepted");
    return tc_loop_dial(tc_conn_loop(c), x->backend, NULL, &h);
}

static int mixed_visit(tc_conn *c, void *arg)
{
    struct mixed *x = arg;
    atomic_fetch_add(&x->walked, 1);
    if (tc_conn_listener(c) < 0)
        atomic_fetch_add(&x->walked_out, 1);
    return 0;
}

static void mixed_walk(tc_loop *loop, void *arg)
{
    struct mixed *x = arg;
    (void)tc_loop_foreach(loop, mixed_visit, x);
    tc_test_event_post(&x->done, NULL);
}

/* A loop with an accepted connection and one it dialled (to a listener of
 * this test's): the walk visits both, a broadcast reaches only the one the
 * server accepted. */
Test(ids, broadcast_skips_dialled_connections_the_walk_sees_them, .timeout = 60)
{
    if (!tc_test_mode_enabled(TC_MODE_EVENT))
        cr_skip_test("event mode not selected by TC_TEST_MODES");
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sin;
    cr_assert_eq(bind(lfd, (struct sockaddr *)&sin, sizeof sin), 0);
    cr_assert_eq(listen(lfd, 4), 0);
    cr_assert_eq(getsockname(lfd, (struct sockaddr *)&sin, &sl), 0);
    char backend[64];
    snprintf(backend, sizeof backend, "127.0.0.1:%d", ntohs(sin.sin_port));
    struct mixed x = {.backend = backend};
    tc_test_event_init(&x.opened);
    tc_test_event_init(&x.done);
    tc_server_config cfg = tc_test_config();
    cfg.mode = TC_MODE_EVENT;
    cfg.workers = 1;
    cr_assert_eq(tc_codec_delimited(&cfg.codec, "\n", 1), 0);
    tc_handler h = TC_HANDLER_INIT;
    h.on_open = accepted_open;
    h.on_message = mixed_message;
    h.ctx = &x;
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    int client = tc_test_connect_ok(&ts.addr);
    int peer = accept(lfd, NULL, NULL);
    cr_assert_geq(peer, 0);
    cr_assert_eq(tc_test_event_wait(&x.opened, 2, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(tc_loop_post(tc_server_loop(ts.srv, 0), mixed_walk, &x), 0);
    cr_assert_eq(tc_test_event_wait(&x.done, 1, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(atomic_load(&x.walked), 2, "the walk visited %d", atomic_load(&x.walked));
    cr_assert_eq(atomic_load(&x.walked_out), 1, "the dialled one is not a listener's");
    cr_assert_eq(tc_server_broadcast(ts.srv, "b", 1), 0);
    char b[2];
    cr_assert_eq(tc_test_recv_full(client, b, 2), 2);
    cr_assert(b[0] == 'b' && b[1] == '\n');
    /* The broadcast's walk ran before this one: the dialled peer got nothing. */
    cr_assert_eq(tc_loop_post(tc_server_loop(ts.srv, 0), mixed_walk, &x), 0);
    cr_assert_eq(tc_test_event_wait(&x.done, 2, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(recv(peer, b, 1, MSG_DONTWAIT), -1, "a broadcast reached a dialled connection");
    close(client);
    close(peer);
    close(lfd);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_event_destroy(&x.opened);
    tc_test_event_destroy(&x.done);
}
