/* SPDX-License-Identifier: MIT */
/* Several listeners on one server (listen_list, listen_fds): IPv4, IPv6 and
 * unix together in every mode, per-listener stats, tc_conn_listener, the
 * shutdown closing them all, bad lists failing create without leaks; and
 * descriptors of the application's own watched by a loop (tc_loop_watch). */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <tcpchan/tcpchan.h>

#include "helpers.h"

TestSuite(listeners, .timeout = 30, .fini = tc_test_kill_children);

/* Shared with forked children (forking mode runs handlers there). */
struct lshared {
    atomic_int opened; /* on_open calls */
    atomic_int wrong;  /* a callback saw a listener index out of range */
};

static struct lshared *lshared_new(void)
{
    void *p = mmap(NULL, sizeof(struct lshared), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(p, MAP_FAILED);
    return p;
}

/* Replies "L<listener>:" and the message. */
static int tag_reply(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    (void)ctx;
    int li = tc_conn_listener(c);
    char buf[256];
    int n = snprintf(buf, sizeof buf, "L%d:", li);
    if (len > sizeof buf - (size_t)n)
        len = sizeof buf - (size_t)n;
    memcpy(buf + n, msg, len);
    ssize_t r = tc_conn_send(c, buf, (size_t)n + len);
    return r < 0 ? (int)r : 0;
}

static int count_open(tc_conn *c, void *ctx)
{
    struct lshared *sh = ctx;
    int li = tc_conn_listener(c);
    if (li < 0 || li >= tc_server_listener_count(tc_conn_server(c)))
        atomic_fetch_add(&sh->wrong, 1);
    atomic_fetch_add(&sh->opened, 1);
    return 0;
}

static tc_handler tag_handler(struct lshared *sh)
{
    tc_handler h = TC_HANDLER_INIT;
    h.on_message = tag_reply;
    h.on_open = count_open;
    h.ctx = sh;
    return h;
}

/* The addresses of a test server: v4, v6 (where ::1 works) and a unix path
 * in dir. */
struct addrs {
    char dir[64];
    char unix_text[128];
    const char *list[4];
    int n;
};

static void addrs_make(struct addrs *a)
{
    tc_test_tmpdir(a->dir, sizeof a->dir);
    snprintf(a->unix_text, sizeof a->unix_text, "unix:%s/s", a->dir);
    a->n = 0;
    a->list[a->n++] = "127.0.0.1:0";
    if (tc_test_have_ipv6())
        a->list[a->n++] = "[::1]:0";
    a->list[a->n++] = a->unix_text;
    a->list[a->n] = NULL;
}

/* Connect to listener i, send msg, expect "L<i>:msg", close. */
static void talk(tc_server *srv, int i, const char *msg)
{
    tc_addr a;
    cr_assert_eq(tc_server_listener_address(srv, i, &a), 0);
    int fd = tc_test_connect_ok(&a);
    cr_assert_eq(tc_test_send_all(fd, msg, strlen(msg)), 0);
    char want[128], got[128] = {0};
    int n = snprintf(want, sizeof want, "L%d:%s", i, msg);
    cr_assert_eq(tc_test_recv_full(fd, got, (size_t)n), n, "listener %d: no full reply", i);
    cr_assert_str_eq(got, want);
    /* shutdown, not just close: a forked child may hold a copy of this end. */
    shutdown(fd, SHUT_RDWR);
    close(fd);
}

static tc_server_config list_config(tc_mode mode, const struct addrs *a)
{
    tc_server_config cfg = tc_test_config();
    cfg.mode = mode;
    cfg.workers = 2;
    cfg.listen_list = a->list;
    cfg.listen_count = 0; /* NULL-terminated */
    return cfg;
}

static size_t modes_enabled(tc_mode *out)
{
    static const tc_mode all[] = {TC_MODE_INLINE, TC_MODE_THREADING, TC_MODE_FORKING,
                                  TC_MODE_POOL, TC_MODE_EVENT};
    size_t k = 0;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (tc_test_mode_enabled(all[i]))
            out[k++] = all[i];
    return k;
}

ParameterizedTestParameters(listeners, every_mode)
{
    static tc_mode params[5];
    size_t n = modes_enabled(params);
    return cr_make_param_array(tc_mode, params, n);
}

/* v4 + v6 + unix on one server: each answers with its own index, the
 * stats split by listener, shutdown closes them all and removes the unix
 * file, and the descriptors come back to the baseline. */
ParameterizedTest(tc_mode *mode, listeners, every_mode)
{
    struct addrs a;
    addrs_make(&a);
    struct lshared *sh = lshared_new();
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = list_config(*mode, &a);
    tc_handler h = tag_handler(sh);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    cr_assert_eq(tc_server_listener_count(ts.srv), a.n);
    tc_addr addr[4];
    for (int i = 0; i < a.n; i++) {
        cr_assert_eq(tc_server_listener_address(ts.srv, i, &addr[i]), 0);
        cr_assert_geq(tc_server_listener_fileno(ts.srv, i), 0);
    }
    cr_assert_eq(tc_addr_family(&addr[0]), AF_INET);
    cr_assert_neq(tc_addr_port(&addr[0]), 0, "the real port");
    cr_assert_eq(tc_addr_family(&addr[a.n - 1]), AF_UNIX);
    if (a.n == 3)
        cr_assert_eq(tc_addr_family(&addr[1]), AF_INET6);
    cr_assert_eq(tc_server_listener_fileno(ts.srv, 0), tc_server_fileno(ts.srv));

    /* Listener i: i + 1 connections, one after another (inline serves one at a time). */
    for (int i = 0; i < a.n; i++)
        for (int k = 0; k <= i; k++)
            talk(ts.srv, i, "hello");
    cr_assert_eq(atomic_load(&sh->wrong), 0);
    unsigned long long total = 0;
    for (int i = 0; i < a.n; i++) {
        tc_listener_stats st;
        /* A connection is still active until the server saw its end. */
        TC_TEST_WAIT_UNTIL(tc_server_listener_stats(ts.srv, i, &st) == 0 && st.active == 0,
                           TC_TEST_WAIT_MS);
        cr_assert_eq(tc_server_listener_stats(ts.srv, i, &st), 0);
        cr_assert_eq(st.accepted, (unsigned long long)i + 1, "listener %d accepted %llu", i,
                     st.accepted);
        cr_assert_eq(st.refused, 0);
        cr_assert_eq(st.active, 0);
        total += st.accepted;
    }
    tc_stats all;
    cr_assert_eq(tc_server_stats(ts.srv, &all), 0);
    cr_assert_eq(all.accepted, total);

    cr_assert_eq(tc_test_server_stop(&ts), 0);
    /* Every listener closed: nobody answers, the unix file is gone. */
    for (int i = 0; i < a.n; i++)
        cr_assert_lt(tc_test_connect(&addr[i]), 0, "listener %d still accepts", i);
    struct stat stt;
    cr_assert_neq(stat(addr[a.n - 1].u.un.sun_path, &stt), 0, "unix socket file left");
    tc_test_expect_counts(before, NULL, 0, "after destroy");
    tc_test_rmtree(a.dir);
    munmap(sh, sizeof *sh);
}

/* Connections held open: active per listener, in event mode (and refused
 * per listener through verify_request in threading mode below). */
Test(listeners, active_per_listener)
{
    if (!tc_test_mode_enabled(TC_MODE_EVENT))
        cr_skip_test("event mode not selected");
    struct addrs a;
    addrs_make(&a);
    struct lshared *sh = lshared_new();
    tc_server_config cfg = list_config(TC_MODE_EVENT, &a);
    tc_handler h = tag_handler(sh);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    int last = a.n - 1;
    tc_addr a0, al;
    cr_assert_eq(tc_server_listener_address(ts.srv, 0, &a0), 0);
    cr_assert_eq(tc_server_listener_address(ts.srv, last, &al), 0);
    int c[3] = {tc_test_connect_ok(&a0), tc_test_connect_ok(&a0), tc_test_connect_ok(&al)};
    TC_TEST_WAIT_UNTIL(atomic_load(&sh->opened) == 3, TC_TEST_WAIT_MS);
    cr_assert_eq(atomic_load(&sh->opened), 3);
    tc_listener_stats s0, sl;
    cr_assert_eq(tc_server_listener_stats(ts.srv, 0, &s0), 0);
    cr_assert_eq(tc_server_listener_stats(ts.srv, last, &sl), 0);
    cr_assert_eq(s0.active, 2);
    cr_assert_eq(sl.active, 1);
    for (int i = 0; i < 3; i++) {
        shutdown(c[i], SHUT_RDWR);
        close(c[i]);
    }
    TC_TEST_WAIT_UNTIL(tc_server_listener_stats(ts.srv, 0, &s0) == 0 && s0.active == 0 &&
                           tc_server_listener_stats(ts.srv, last, &sl) == 0 && sl.active == 0,
                       TC_TEST_WAIT_MS);
    cr_assert_eq(s0.active + sl.active, 0);
    cr_assert_eq(s0.accepted, 2);
    cr_assert_eq(sl.accepted, 1);
    tc_test_server_stop(&ts);
    tc_test_rmtree(a.dir);
    munmap(sh, sizeof *sh);
}

/* Event mode with more listeners than io_uring's accept requests cover at 8
 * in flight each (64 in all: 5 each for 12), with no connection limit, the
 * default one and a limit below the number of listeners (every listener
 * polled): each listener serves client after client. Both backends through
 * the ctest variants. */
static void many_listeners(int max_conns)
{
    enum { NL = 12, ROUNDS = 3 };
    if (!tc_test_mode_enabled(TC_MODE_EVENT))
        cr_skip_test("event mode not selected");
    const char *list[NL + 1];
    for (int i = 0; i < NL; i++)
        list[i] = "127.0.0.1:0";
    list[NL] = NULL;
    struct lshared *sh = lshared_new();
    tc_server_config cfg = tc_test_config();
    cfg.mode = TC_MODE_EVENT;
    cfg.workers = 1;
    cfg.listen_list = list;
    cfg.max_conns = max_conns;
    tc_handler h = tag_handler(sh);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    cr_assert_eq(tc_server_listener_count(ts.srv), NL);
    for (int r = 0; r < ROUNDS; r++)
        for (int i = NL - 1; i >= 0; i--)
            talk(ts.srv, i, "hi");
    for (int i = 0; i < NL; i++) {
        tc_listener_stats s;
        TC_TEST_WAIT_UNTIL(tc_server_listener_stats(ts.srv, i, &s) == 0 && s.active == 0,
                           TC_TEST_WAIT_MS);
        cr_assert_eq(s.accepted, ROUNDS, "listener %d: %llu accepted", i, s.accepted);
        cr_assert_eq(s.active, 0);
    }
    cr_assert_eq(atomic_load(&sh->wrong), 0);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    munmap(sh, sizeof *sh);
}

Test(listeners, many_in_event_mode) { many_listeners(-1); }
Test(listeners, many_in_event_mode_default_limit) { many_listeners(0); }
Test(listeners, many_in_event_mode_with_a_low_limit) { many_listeners(4); }

static int refuse_unix(tc_server *srv, const tc_addr *peer, void *ctx)
{
    (void)srv, (void)ctx;
    return tc_addr_family(peer) == AF_UNIX ? -1 : 0;
}

Test(listeners, refused_per_listener)
{
    if (!tc_test_mode_enabled(TC_MODE_THREADING))
        cr_skip_test("threading mode not selected");
    struct addrs a;
    addrs_make(&a);
    struct lshared *sh = lshared_new();
    tc_server_config cfg = list_config(TC_MODE_THREADING, &a);
    cfg.hooks.verify_request = refuse_unix;
    tc_handler h = tag_handler(sh);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    int last = a.n - 1;
    talk(ts.srv, 0, "ok");
    tc_addr al;
    cr_assert_eq(tc_server_listener_address(ts.srv, last, &al), 0);
    int fd = tc_test_connect_ok(&al);
    cr_assert_eq(tc_test_recv_eof(fd), 0, "a refused connection is closed");
    close(fd);
    tc_listener_stats s0, sl;
    cr_assert_eq(tc_server_listener_stats(ts.srv, 0, &s0), 0);
    cr_assert_eq(tc_server_listener_stats(ts.srv, last, &sl), 0);
    cr_assert_eq(s0.accepted, 1);
    cr_assert_eq(s0.refused, 0);
    cr_assert_eq(sl.accepted, 1);
    cr_assert_eq(sl.refused, 1);
    tc_test_server_stop(&ts);
    tc_test_rmtree(a.dir);
    munmap(sh, sizeof *sh);
}

/* An entry that does not parse fails create with its code and binds
 * nothing, not even the entries before it. */
Test(listeners, bad_address_fails_create)
{
    struct addrs a;
    addrs_make(&a);
    const char *list[] = {a.unix_text, "127.0.0.1:0", "no-such-form:::"};
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = tc_test_config();
    cfg.listen_list = list;
    cfg.listen_count = 3;
    tc_handler h = tc_test_echo_handler();
    tc_server *srv = NULL;
    int rc = tc_server_create(&srv, &cfg, &h);
    cr_assert_lt(rc, 0);
    cr_assert(rc == TC_EBADADDR || rc == TC_ENORESOLVE, "rc %s", tc_err_name(rc));
    cr_assert_null(srv);
    cr_assert(strstr(tc_last_error_detail(), "listen address 2"), "detail: %s",
              tc_last_error_detail());
    struct stat st;
    cr_assert_neq(stat(a.unix_text + 5, &st), 0, "unix file created");
    tc_test_expect_counts(before, NULL, 0, "after the failed create");
    tc_test_rmtree(a.dir);
}

/* An address that cannot be bound (taken) after others that were: those
 * are closed again, the unix file removed. */
Test(listeners, bind_failure_undoes_the_others)
{
    struct addrs a;
    addrs_make(&a);
    tc_test_server taken;
    tc_test_server_start(&taken, "127.0.0.1:0", NULL, NULL);
    const char *list[] = {a.unix_text, "127.0.0.1:0", taken.addr_str, NULL};
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = tc_test_config();
    cfg.listen_list = list;
    cfg.reuse_addr = TC_OFF;
    tc_handler h = tc_test_echo_handler();
    tc_server *srv = NULL;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), -EADDRINUSE);
    cr_assert_null(srv);
    struct stat st;
    cr_assert_neq(stat(a.unix_text + 5, &st), 0, "unix file left");
    tc_test_expect_counts(before, NULL, 0, "after the failed create");
    tc_test_server_stop(&taken);
    tc_test_rmtree(a.dir);
}

Test(listeners, bad_configs)
{
    tc_handler h = tc_test_echo_handler();
    tc_server *srv = NULL;
    int fds = tc_test_count_fds();
    const char *two[] = {"127.0.0.1:0", "127.0.0.1:0"};
    const char *with_null[] = {"127.0.0.1:0", NULL};
    const char *empty[] = {NULL};
    const char *mixed[] = {"127.0.0.1:0", "udp:127.0.0.1:0"};
    struct {
        const char *const *list;
        int count;
        const char *listen;
        const char *field;
    } cases[] = {
        {two, 2, "127.0.0.1:0", "listen_list"}, /* both listen and listen_list */
        {two, -1, NULL, "listen_count"},
        {with_null, 2, NULL, "listen_list entry 1"},
        {empty, 0, NULL, "listen_list"},
        {mixed, 2, NULL, "datagram"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tc_server_config cfg = tc_test_config();
        cfg.listen_list = cases[i].list;
        cfg.listen_count = cases[i].count;
        cfg.listen = cases[i].listen;
        cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG, "case %zu", i);
        cr_assert_null(srv);
        cr_assert(strstr(tc_last_error_detail(), cases[i].field), "case %zu: %s", i,
                  tc_last_error_detail());
    }
    tc_server_config cfg = tc_test_config();
    cfg.listen_count = 1; /* without a list */
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
    cfg = tc_test_config();
    int one = 3;
    cfg.listen_fds = &one; /* without adopt_fd */
    cfg.listen_fd_count = 1;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
    cfg.adopt_fd = TC_ON;
    cfg.listen_fd_count = 0;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
    cfg = tc_test_config();
    cfg.adopt_fd = TC_ON;
    cfg.listen_list = two;
    cfg.listen_count = 2;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
    cr_assert_null(srv);
    cr_assert_eq(tc_test_count_fds(), fds);
}

/* A list of one datagram address is a datagram server, as listen is. */
Test(listeners, one_datagram_entry)
{
    const char *list[] = {"udp:127.0.0.1:0"};
    tc_server_config cfg = tc_test_config();
    cfg.listen_list = list;
    cfg.listen_count = 1;
    tc_handler h = TC_HANDLER_INIT;
    h.on_message = tag_reply;
    tc_server *srv = NULL;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), 0);
    tc_addr a;
    cr_assert_eq(tc_server_listener_address(srv, 0, &a), 0);
    cr_assert_eq(a.socktype, SOCK_DGRAM);
    tc_listener_stats st;
    cr_assert_eq(tc_server_listener_stats(srv, 0, &st), 0);
    cr_assert_eq(st.accepted, 0);
    tc_server_destroy(srv);
}

static int stream_listener(tc_addr *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&in, sizeof in), 0);
    cr_assert_eq(listen(fd, 16), 0);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    tc_addr_from_sockaddr(addr, (struct sockaddr *)&ss, len);
    return fd;
}

/* Socket activation with two sockets: both adopted, both served (event
 * mode); destroy closes both. A datagram socket among them is refused and
 * the descriptors stay the caller's. */
Test(listeners, adopt_several)
{
    struct lshared *sh = lshared_new();
    tc_addr a0, a1;
    int fds[2] = {stream_listener(&a0), stream_listener(&a1)};
    int base = tc_test_count_fds();
    tc_server_config cfg = tc_test_config();
    cfg.mode = tc_test_mode_enabled(TC_MODE_EVENT) ? TC_MODE_EVENT : TC_MODE_THREADING;
    cfg.workers = 2;
    cfg.adopt_fd = TC_ON;
    cfg.listen_fds = fds;
    cfg.listen_fd_count = 2;
    tc_handler h = tag_handler(sh);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    cr_assert_eq(tc_server_listener_count(ts.srv), 2);
    cr_assert_eq(tc_server_listener_fileno(ts.srv, 1), fds[1]);
    talk(ts.srv, 0, "first");
    talk(ts.srv, 1, "second");
    tc_test_server_stop(&ts);
    cr_assert_eq(fcntl(fds[0], F_GETFD), -1, "not closed");
    cr_assert_eq(fcntl(fds[1], F_GETFD), -1, "not closed");
    cr_assert_eq(tc_test_count_fds(), base - 2);

    int s = stream_listener(&a0);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(u, (struct sockaddr *)&in, sizeof in), 0);
    int mixed[2] = {s, u};
    cfg.listen_fds = mixed;
    tc_server *srv = NULL;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
    cr_assert_geq(fcntl(s, F_GETFD), 0, "the caller's descriptor was closed");
    cr_assert_geq(fcntl(u, F_GETFD), 0, "the caller's descriptor was closed");
    close(s);
    close(u);
    munmap(sh, sizeof *sh);
}

Test(listeners, getters_and_arguments)
{
    tc_test_server ts;
    tc_test_server_start(&ts, "127.0.0.1:0", NULL, NULL);
    tc_addr a;
    tc_listener_stats st;
    cr_assert_eq(tc_server_listener_count(ts.srv), 1);
    cr_assert_eq(tc_server_listener_count(NULL), -EINVAL);
    cr_assert_eq(tc_server_listener_address(ts.srv, 1, &a), -ERANGE);
    cr_assert_eq(tc_server_listener_address(ts.srv, -1, &a), -ERANGE);
    cr_assert_eq(tc_server_listener_address(ts.srv, 0, NULL), -EINVAL);
    cr_assert_eq(tc_server_listener_address(ts.srv, 0, &a), 0);
    cr_assert_eq(memcmp(&a, &ts.addr, sizeof a), 0, "listener 0 is tc_server_address()");
    cr_assert_eq(tc_server_listener_fileno(ts.srv, 1), -ERANGE);
    cr_assert_eq(tc_server_listener_fileno(NULL, 0), -EINVAL);
    cr_assert_eq(tc_server_listener_stats(ts.srv, 1, &st), -ERANGE);
    cr_assert_eq(tc_server_listener_stats(ts.srv, 0, NULL), -EINVAL);
    cr_assert_eq(tc_conn_listener(NULL), -EINVAL);
    tc_test_server_stop(&ts);
}

/* ---- descriptors of the application's own in a loop (tc_loop_watch) ---------- */

TestSuite(watch, .timeout = 30);

struct wstate {
    tc_test_event ev;     /* "R" / "W" per callback, "started" */
    tc_test_event turns;  /* loop_turns' markers */
    tc_loop *loop;
    int fd;
    unsigned start_events;
    tc_watch *w;
    pthread_t loop_thread;
    int start_rc, again_rc, stop_rc, update_rc;
    int wrong_thread;
    int calls;
    int stop_in_cb;       /* the callback stops its watch */
    int to_write;         /* after a read, wait for writable; then pause */
};

static void wstate_init(struct wstate *st, int fd, unsigned events)
{
    memset(st, 0, sizeof *st);
    tc_test_event_init(&st->ev);
    tc_test_event_init(&st->turns);
    st->fd = fd;
    st->start_events = events;
    st->stop_rc = st->update_rc = 1;
}

static void wstate_destroy(struct wstate *st)
{
    tc_test_event_destroy(&st->ev);
    tc_test_event_destroy(&st->turns);
}

static void drain_fd(int fd)
{
    char buf[256];
    while (read(fd, buf, sizeof buf) > 0)
        ;
}

static void on_watch(tc_watch *w, int fd, unsigned events, void *ctx)
{
    struct wstate *st = ctx;
    if (!pthread_equal(pthread_self(), st->loop_thread) || w != st->w || fd != st->fd)
        st->wrong_thread = 1;
    st->calls++;
    if (events & TC_WATCH_READ) {
        drain_fd(fd);
        if (st->stop_in_cb)
            st->stop_rc = tc_watch_stop(w);
        else if (st->to_write)
            st->update_rc = tc_watch_update(w, TC_WATCH_WRITE);
        tc_test_event_post(&st->ev, "R");
    } else if (events & TC_WATCH_WRITE) {
        st->update_rc = tc_watch_update(w, 0); /* paused: writable forever otherwise */
        tc_test_event_post(&st->ev, "W");
    }
}

static void start_watch(tc_loop *loop, void *arg)
{
    struct wstate *st = arg;
    st->loop_thread = pthread_self();
    st->loop = loop;
    st->start_rc = tc_loop_watch(loop, st->fd, st->start_events, on_watch, st, &st->w);
    /* The same descriptor twice in one loop. */
    tc_watch *dup = NULL;
    st->again_rc = tc_loop_watch(loop, st->fd, TC_WATCH_READ, on_watch, st, &dup);
    tc_test_event_post(&st->ev, "started");
}

static void turn_marker(tc_loop *loop, void *arg)
{
    (void)loop;
    tc_test_event_post(arg, NULL);
}

/* Let the loop go round n more times (each marker is posted after the last
 * ran): a ready descriptor still watched would have fired by then. */
static void loop_turns(tc_loop *loop, tc_test_event *e, int n)
{
    for (int i = 0; i < n; i++) {
        int target = tc_test_event_count(e) + 1;
        cr_assert_eq(tc_loop_post(loop, turn_marker, e), 0);
        cr_assert_eq(tc_test_event_wait(e, target, TC_TEST_WAIT_MS), 0);
    }
}

static void start_loop_server(tc_test_server *ts, tc_mode mode)
{
    tc_server_config cfg = tc_test_config();
    cfg.mode = mode;
    cfg.workers = 1;
    tc_handler h = TC_HANDLER_INIT;
    h.on_message = tag_reply;
    tc_test_server_start(ts, "127.0.0.1:0", &cfg, &h);
}

static void *write_byte(void *arg)
{
    int fd = *(int *)arg;
    ssize_t r = write(fd, "x", 1);
    return (void *)(intptr_t)r;
}

ParameterizedTestParameters(watch, pipe_from_another_thread)
{
    static tc_mode params[2];
    size_t n = 0;
    if (tc_test_mode_enabled(TC_MODE_EVENT))
        params[n++] = TC_MODE_EVENT;
    if (tc_test_mode_enabled(TC_MODE_POOL))
        params[n++] = TC_MODE_POOL;
    return cr_make_param_array(tc_mode, params, n);
}

/* A pipe written from another thread wakes the callback in the loop's
 * thread; the watch is left running: destroy frees it, and the pipe stays
 * open (the loop never closes the application's descriptor). */
ParameterizedTest(tc_mode *mode, watch, pipe_from_another_thread)
{
    int p[2];
    cr_assert_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    struct wstate st;
    wstate_init(&st, p[0], TC_WATCH_READ);
    tc_test_server ts;
    start_loop_server(&ts, *mode);
    tc_loop *loop = tc_server_loop(ts.srv, 0);
    cr_assert_not_null(loop);
    cr_assert_eq(tc_loop_post(loop, start_watch, &st), 0);
    cr_assert_eq(tc_test_event_wait(&st.ev, 1, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(st.start_rc, 0);
    cr_assert_eq(st.again_rc, -EEXIST);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, write_byte, &p[1]), 0);
    cr_assert_eq(tc_test_event_wait(&st.ev, 2, TC_TEST_WAIT_MS), 0, "no callback");
    void *wr;
    pthread_join(t, &wr);
    cr_assert_eq((intptr_t)wr, 1);
    loop_turns(loop, &st.turns, 2);
    char log[64];
    tc_test_event_log(&st.ev, log, sizeof log);
    cr_assert_str_eq(log, "started,R");
    cr_assert_eq(st.wrong_thread, 0);
    /* Only the loop's thread may touch it. */
    cr_assert_eq(tc_watch_update(st.w, TC_WATCH_READ), -EPERM);
    cr_assert_eq(tc_watch_stop(st.w), -EPERM);
    tc_test_server_stop(&ts); /* the watch is still there: destroy frees it */
    cr_assert_geq(fcntl(p[0], F_GETFD), 0, "the loop closed the application's descriptor");
    close(p[0]);
    close(p[1]);
    before.fds -= 2;
    tc_test_expect_counts(before, NULL, 0, "after destroy");
    wstate_destroy(&st);
}

/* Readable, then (updated from the callback) writable once, then paused. */
Test(watch, update_to_writable)
{
    if (!tc_test_mode_enabled(TC_MODE_EVENT))
        cr_skip_test("event mode not selected");
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    struct wstate st;
    wstate_init(&st, sv[0], TC_WATCH_READ);
    st.to_write = 1;
    tc_test_server ts;
    start_loop_server(&ts, TC_MODE_EVENT);
    tc_loop *loop = tc_server_loop(ts.srv, 0);
    cr_assert_eq(tc_loop_post(loop, start_watch, &st), 0);
    cr_assert_eq(tc_test_event_wait(&st.ev, 1, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(st.start_rc, 0);
    cr_assert_eq(write(sv[1], "x", 1), 1);
    cr_assert_eq(tc_test_event_wait(&st.ev, 3, TC_TEST_WAIT_MS), 0);
    /* Paused: input now wakes nothing. */
    cr_assert_eq(write(sv[1], "y", 1), 1);
    loop_turns(loop, &st.turns, 3);
    char log[64];
    tc_test_event_log(&st.ev, log, sizeof log);
    cr_assert_str_eq(log, "started,R,W");
    cr_assert_eq(st.update_rc, 0);
    cr_assert_eq(st.calls, 2);
    tc_test_server_stop(&ts);
    close(sv[0]);
    close(sv[1]);
    wstate_destroy(&st);
}

/* A callback that stops its own watch: never called again, though the pipe
 * stays readable. */
Test(watch, stop_inside_the_callback)
{
    if (!tc_test_mode_enabled(TC_MODE_EVENT))
        cr_skip_test("event mode not selected");
    int p[2];
    cr_assert_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    struct wstate st;
    wstate_init(&st, p[0], TC_WATCH_READ);
    st.stop_in_cb = 1;
    tc_test_server ts;
    start_loop_server(&ts, TC_MODE_EVENT);
    tc_loop *loop = tc_server_loop(ts.srv, 0);
    cr_assert_eq(tc_loop_post(loop, start_watch, &st), 0);
    cr_assert_eq(tc_test_event_wait(&st.ev, 1, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(write(p[1], "x", 1), 1);
    cr_assert_eq(tc_test_event_wait(&st.ev, 2, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(write(p[1], "y", 1), 1);
    loop_turns(loop, &st.turns, 3);
    cr_assert_eq(st.stop_rc, 0);
    cr_assert_eq(st.calls, 1);
    cr_assert_eq(tc_test_event_count(&st.ev), 2);
    tc_test_server_stop(&ts);
    close(p[0]);
    close(p[1]);
    wstate_destroy(&st);
}

#define MANY 64

struct many {
    tc_test_event ev;
    int rd[MANY], wr[MANY];
    tc_watch *w[MANY];
    int rc[MANY], stop_rc[MANY];
};

static void many_cb(tc_watch *w, int fd, unsigned events, void *ctx)
{
    struct many *m = ctx;
    (void)events;
    drain_fd(fd);
    for (int i = 0; i < MANY; i++)
        if (m->w[i] == w)
            m->stop_rc[i] = tc_watch_stop(w);
    tc_test_event_post(&m->ev, NULL);
}

static void many_start(tc_loop *loop, void *arg)
{
    struct many *m = arg;
    for (int i = 0; i < MANY; i++)
        m->rc[i] = tc_loop_watch(loop, m->rd[i], TC_WATCH_READ, many_cb, m, &m->w[i]);
    tc_test_event_post(&m->ev, NULL);
}

static void *write_all(void *arg)
{
    struct many *m = arg;
    for (int i = 0; i < MANY; i++)
        if (write(m->wr[i], "x", 1) != 1)
            return (void *)1;
    return NULL;
}

/* Many watches at once, each stopping itself; destroy with none left. */
Test(watch, many_watches)
{
    if (!tc_test_mode_enabled(TC_MODE_EVENT))
        cr_skip_test("event mode not selected");
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    struct many *m = calloc(1, sizeof *m);
    cr_assert_not_null(m);
    tc_test_event_init(&m->ev);
    for (int i = 0; i < MANY; i++) {
        int p[2];
        cr_assert_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
        m->rd[i] = p[0];
        m->wr[i] = p[1];
        m->stop_rc[i] = 1;
    }
    tc_test_server ts;
    start_loop_server(&ts, TC_MODE_EVENT);
    tc_loop *loop = tc_server_loop(ts.srv, 0);
    cr_assert_eq(tc_loop_post(loop, many_start, m), 0);
    cr_assert_eq(tc_test_event_wait(&m->ev, 1, TC_TEST_WAIT_MS), 0);
    for (int i = 0; i < MANY; i++)
        cr_assert_eq(m->rc[i], 0, "watch %d: %d", i, m->rc[i]);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, write_all, m), 0);
    cr_assert_eq(tc_test_event_wait(&m->ev, 1 + MANY, TC_TEST_WAIT_MS), 0);
    void *wr;
    pthread_join(t, &wr);
    cr_assert_null(wr);
    for (int i = 0; i < MANY; i++)
        cr_assert_eq(m->stop_rc[i], 0, "watch %d", i);
    cr_assert_eq(tc_test_event_count(&m->ev), 1 + MANY);
    tc_test_server_stop(&ts);
    for (int i = 0; i < MANY; i++) {
        close(m->rd[i]);
        close(m->wr[i]);
    }
    tc_test_event_destroy(&m->ev);
    free(m);
    tc_test_expect_counts(before, NULL, 0, "after destroy");
}

Test(watch, arguments)
{
    if (!tc_test_mode_enabled(TC_MODE_EVENT))
        cr_skip_test("event mode not selected");
    tc_test_server ts;
    start_loop_server(&ts, TC_MODE_EVENT);
    tc_loop *loop = tc_server_loop(ts.srv, 0);
    tc_watch *w = NULL;
    cr_assert_eq(tc_loop_watch(loop, 0, TC_WATCH_READ, on_watch, NULL, &w), -EPERM,
                 "not the loop's thread");
    cr_assert_null(w);
    cr_assert_eq(tc_loop_watch(NULL, 0, TC_WATCH_READ, on_watch, NULL, &w), -EINVAL);
    cr_assert_eq(tc_loop_watch(loop, -1, TC_WATCH_READ, on_watch, NULL, &w), -EINVAL);
    cr_assert_eq(tc_loop_watch(loop, 0, 4, on_watch, NULL, &w), -EINVAL);
    cr_assert_eq(tc_loop_watch(loop, 0, TC_WATCH_READ, NULL, NULL, &w), -EINVAL);
    cr_assert_eq(tc_loop_watch(loop, 0, TC_WATCH_READ, on_watch, NULL, NULL), -EINVAL);
    cr_assert_eq(tc_watch_update(NULL, 0), -EINVAL);
    cr_assert_eq(tc_watch_stop(NULL), -EINVAL);
    tc_test_server_stop(&ts);
}
