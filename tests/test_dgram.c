/* SPDX-License-Identifier: MIT */
/* Datagram servers (issue 14): test_socketserver's datagram scenarios
 * (UDPServer, ThreadingUDPServer, ForkingUDPServer, UnixDatagramServer and
 * their Threading/Forking variants) plus pool and event mode, each echoing
 * through real sockets; sizes 0 to 65507; interleaved clients; oversize
 * datagrams dropped and counted; a flood; thousands of source sockets; unix
 * clients with their own path; addresses; tc_dial; the config checks.
 * Servers bind 127.0.0.1:0 or a path under a fresh temporary directory. */
#include <criterion/criterion.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "helpers.h"

TestSuite(dgram, .timeout = 60);

/* ---- raw datagram clients ---------------------------------------------------- */

/* A datagram socket for family (AF_INET: bound to 127.0.0.1:0; AF_UNIX:
 * bound to path unless it is NULL), its receives bounded. */
static int dg_client(int family, const char *path)
{
    int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    if (family == AF_INET) {
        tc_addr a;
        cr_assert_eq(tc_addr_parse(&a, "127.0.0.1:0"), 0);
        cr_assert_eq(bind(fd, &a.u.sa, a.len), 0);
    } else if (path) {
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        snprintf(un.sun_path, sizeof un.sun_path, "%s", path);
        cr_assert_eq(bind(fd, (struct sockaddr *)&un, sizeof un), 0, "bind %s: %s", path,
                     strerror(errno));
    }
    int ms = TC_TEST_WAIT_MS;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    int big = 1 << 20;
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    return fd;
}

static void dg_send(int fd, const tc_addr *to, const void *buf, size_t n)
{
    ssize_t r = sendto(fd, buf, n, 0, &to->u.sa, to->len);
    cr_assert_eq(r, (ssize_t)n, "sendto: %s", strerror(errno));
}

/* One datagram (bounded by SO_RCVTIMEO): its length, or -errno. */
static ssize_t dg_recv(int fd, void *buf, size_t n)
{
    ssize_t r;
    do /* SO_RCVTIMEO makes recv return EINTR even for a restartable signal */
        r = recv(fd, buf, n, 0);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

/* Whether a datagram arrives within ms. */
static int dg_quiet(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int64_t end = tc_test_now_ms() + tc_test_ms(ms);
    int r;
    do
        r = poll(&p, 1, (int)(end - tc_test_now_ms() > 0 ? end - tc_test_now_ms() : 0));
    while (r < 0 && errno == EINTR);
    return r == 0;
}

/* Send msg and expect it back, whole. */
static void dg_echo(int fd, const tc_addr *to, const void *msg, size_t n)
{
    static unsigned char got[70000];
    dg_send(fd, to, msg, n);
    ssize_t r = dg_recv(fd, got, sizeof got);
    cr_assert_eq(r, (ssize_t)n, "echo of %zu bytes: got %zd (%s)", n, r,
                 r < 0 ? strerror((int)-r) : "a datagram of another size");
    cr_assert(n == 0 || memcmp(got, msg, n) == 0);
}

/* ---- handlers --------------------------------------------------------------- */

static atomic_int errors_seen;

static void count_error(tc_server *srv, tc_conn *conn, int err, void *ctx)
{
    (void)srv, (void)conn, (void)err, (void)ctx;
    atomic_fetch_add(&errors_seen, 1);
}

static int msg_echo(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    (void)ctx;
    ssize_t r = tc_conn_send(c, msg, len);
    return r < 0 ? (int)r : 0;
}

/* Stream style, as socketserver's DatagramRequestHandler: read the datagram
 * (reads end with it), write the reply (it goes out as one datagram). */
static int stream_echo(tc_conn *c, void *ctx)
{
    static _Thread_local unsigned char buf[70000];
    (void)ctx;
    size_t got = 0;
    ssize_t r;
    while ((r = tc_conn_read(c, buf + got, sizeof buf - got)) > 0)
        got += (size_t)r;
    if (r != TC_EOF)
        return (int)r;
    r = tc_conn_send_all(c, buf, got);
    return r < 0 ? (int)r : 0;
}

static tc_handler msg_handler(void)
{
    tc_handler h = TC_HANDLER_INIT;
    h.on_message = msg_echo;
    return h;
}

static tc_handler stream_handler(void)
{
    tc_handler h = TC_HANDLER_INIT;
    h.handle = stream_echo;
    return h;
}

static tc_server_config dg_config(tc_mode mode)
{
    tc_server_config cfg = tc_test_config();
    cfg.mode = mode;
    cfg.workers = 2;
    cfg.hooks.handle_error = count_error;
    return cfg;
}

/* ---- the socketserver scenarios ----------------------------------------------- */

/* A server of mode on family, echoing (message style, and for the modes
 * that run stream handlers, stream style too): a few datagrams through
 * real sockets, then no descriptor, thread or child left behind. */
static void scenario(tc_mode mode, int family, int stream)
{
    if (!tc_test_mode_enabled(mode))
        cr_skip_test("mode %s not selected by TC_TEST_MODES", tc_mode_name(mode));
    char dir[64] = "", listen[128], cpath[128];
    if (family == AF_UNIX) {
        tc_test_tmpdir(dir, sizeof dir);
        snprintf(listen, sizeof listen, "unixgram:%s/s", dir);
        snprintf(cpath, sizeof cpath, "%s/c", dir);
    } else {
        snprintf(listen, sizeof listen, "udp:127.0.0.1:0");
    }
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_server_config cfg = dg_config(mode);
    tc_handler h = stream ? stream_handler() : msg_handler();
    tc_test_server ts;
    tc_test_server_start(&ts, listen, &cfg, &h);
    cr_assert_eq(ts.addr.socktype, SOCK_DGRAM);
    int fd = dg_client(family, family == AF_UNIX ? cpath : NULL);
    const char *msgs[] = {"hello", "world", "", "one more datagram"};
    for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++)
        dg_echo(fd, &ts.addr, msgs[i], strlen(msgs[i]));
    close(fd);
    tc_stats st;
    cr_assert_eq(tc_server_stats(ts.srv, &st), 0);
    cr_assert_eq(st.dgram_received, 4);
    cr_assert_eq(st.accepted, 4);
    if (mode != TC_MODE_FORKING) { /* the children count their own replies */
        /* counted once sent: the client may read the last one first */
        TC_TEST_WAIT_UNTIL(tc_server_stats(ts.srv, &st) == 0 && st.dgram_answered == 4,
                           TC_TEST_WAIT_MS);
        cr_assert_eq(st.dgram_answered, 4);
    }
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    cr_assert_eq(atomic_load(&errors_seen), 0);
    if (family == AF_UNIX) {
        cr_assert(access(listen + strlen("unixgram:"), F_OK) != 0, "socket file removed");
        tc_test_rmtree(dir);
    }
    tc_test_expect_counts(before, NULL, 0, "after the datagram server");
}

Test(dgram, udp_server) { scenario(TC_MODE_INLINE, AF_INET, 0); scenario(TC_MODE_INLINE, AF_INET, 1); }
Test(dgram, threading_udp_server) { scenario(TC_MODE_THREADING, AF_INET, 0); scenario(TC_MODE_THREADING, AF_INET, 1); }
Test(dgram, forking_udp_server) { scenario(TC_MODE_FORKING, AF_INET, 0); scenario(TC_MODE_FORKING, AF_INET, 1); }
Test(dgram, pool_udp_server) { scenario(TC_MODE_POOL, AF_INET, 0); scenario(TC_MODE_POOL, AF_INET, 1); }
Test(dgram, event_udp_server) { scenario(TC_MODE_EVENT, AF_INET, 0); }
Test(dgram, unix_datagram_server) { scenario(TC_MODE_INLINE, AF_UNIX, 0); scenario(TC_MODE_INLINE, AF_UNIX, 1); }
Test(dgram, threading_unix_datagram_server) { scenario(TC_MODE_THREADING, AF_UNIX, 0); scenario(TC_MODE_THREADING, AF_UNIX, 1); }
Test(dgram, forking_unix_datagram_server) { scenario(TC_MODE_FORKING, AF_UNIX, 0); scenario(TC_MODE_FORKING, AF_UNIX, 1); }
Test(dgram, pool_unix_datagram_server) { scenario(TC_MODE_POOL, AF_UNIX, 0); }
Test(dgram, event_unix_datagram_server) { scenario(TC_MODE_EVENT, AF_UNIX, 0); }

/* ---- sizes, interleaving, oversize ---------------------------------------------- */

static void sizes_in(tc_mode mode)
{
    if (!tc_test_mode_enabled(mode))
        return;
    tc_server_config cfg = dg_config(mode);
    tc_handler h = msg_handler();
    tc_test_server ts;
    tc_test_server_start(&ts, "udp:127.0.0.1:0", &cfg, &h);
    int fd = dg_client(AF_INET, NULL);
    static unsigned char big[65507];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (unsigned char)(i * 7 + 3);
    const size_t sizes[] = {0, 1, 1400, 65507};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        dg_echo(fd, &ts.addr, big, sizes[i]);
    close(fd);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
}

Test(dgram, sizes_0_1_1400_65507)
{
    tc_mode modes[] = {TC_MODE_INLINE, TC_MODE_THREADING, TC_MODE_POOL, TC_MODE_EVENT};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        sizes_in(modes[i]);
}

/* Each reply goes to its own sender: 8 clients, their datagrams interleaved. */
static void interleaved_in(tc_mode mode)
{
    if (!tc_test_mode_enabled(mode))
        return;
    enum { CLIENTS = 8, ROUNDS = 20 };
    tc_server_config cfg = dg_config(mode);
    tc_handler h = TC_HANDLER_INIT;
    h.on_message = msg_echo;
    tc_test_server ts;
    tc_test_server_start(&ts, "udp:127.0.0.1:0", &cfg, &h);
    int fds[CLIENTS];
    for (int i = 0; i < CLIENTS; i++)
        fds[i] = dg_client(AF_INET, NULL);
    for (int r = 0; r < ROUNDS; r++)
        for (int i = 0; i < CLIENTS; i++) {
            char m[32];
            int n = snprintf(m, sizeof m, "client %d round %d", i, r);
            dg_send(fds[i], &ts.addr, m, (size_t)n);
        }
    for (int i = 0; i < CLIENTS; i++) {
        int seen[ROUNDS] = {0};
        for (int r = 0; r < ROUNDS; r++) {
            char got[64];
            ssize_t n = dg_recv(fds[i], got, sizeof got - 1);
            cr_assert_gt(n, 0, "client %d: reply %d missing (%zd)", i, r, n);
            got[n] = '\0';
            int who = -1, round = -1;
            cr_assert_eq(sscanf(got, "client %d round %d", &who, &round), 2);
            cr_assert_eq(who, i, "client %d got client %d's reply", i, who);
            cr_assert(round >= 0 && round < ROUNDS && !seen[round]);
            seen[round] = 1;
        }
        close(fds[i]);
    }
    cr_assert_eq(tc_test_server_stop(&ts), 0);
}

Test(dgram, eight_clients_interleaved)
{
    tc_mode modes[] = {TC_MODE_INLINE, TC_MODE_THREADING, TC_MODE_POOL, TC_MODE_EVENT};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        interleaved_in(modes[i]);
}

static void oversize_in(tc_mode mode)
{
    if (!tc_test_mode_enabled(mode))
        return;
    tc_server_config cfg = dg_config(mode);
    cfg.codec.max_frame = 100;
    tc_handler h = msg_handler();
    tc_test_server ts;
    tc_test_server_start(&ts, "udp:127.0.0.1:0", &cfg, &h);
    int fd = dg_client(AF_INET, NULL);
    unsigned char buf[200];
    memset(buf, 'x', sizeof buf);
    dg_send(fd, &ts.addr, buf, 101); /* one over: dropped, never delivered cut */
    dg_echo(fd, &ts.addr, buf, 100); /* the next one is answered */
    cr_assert(dg_quiet(fd, 100), "no reply to the oversize datagram");
    tc_stats st;
    cr_assert_eq(tc_server_stats(ts.srv, &st), 0);
    cr_assert_eq(st.dgram_received, 2);
    cr_assert_eq(st.dgram_truncated, 1);
    cr_assert_eq(st.dgram_dropped, 1);
    cr_assert_eq(st.accepted, 1);
    TC_TEST_WAIT_UNTIL(tc_server_stats(ts.srv, &st) == 0 && st.dgram_answered == 1,
                       TC_TEST_WAIT_MS);
    cr_assert_eq(st.dgram_answered, 1);
    close(fd);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
}

Test(dgram, oversize_dropped_and_counted)
{
    tc_mode modes[] = {TC_MODE_INLINE, TC_MODE_THREADING, TC_MODE_POOL, TC_MODE_EVENT};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        oversize_in(modes[i]);
}

/* ---- hostile loads ---------------------------------------------------------------- */

/* Under a sanitizer freed memory waits in a quarantine: RSS says nothing there. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DG_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define DG_SANITIZED 1
#endif
#endif
#ifndef DG_SANITIZED
#define DG_SANITIZED 0
#endif

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* 100,000 datagrams from a client that never reads its replies: the server
 * stays up, its memory does not grow with them, and it still answers. */
static void flood_in(tc_mode mode)
{
    if (!tc_test_mode_enabled(mode))
        return;
    enum { FLOOD = 100000 };
    tc_server_config cfg = dg_config(mode);
    tc_handler h = msg_handler();
    tc_test_server ts;
    tc_test_server_start(&ts, "udp:127.0.0.1:0", &cfg, &h);
    int fd = dg_client(AF_INET, NULL);
    dg_echo(fd, &ts.addr, "warm", 4);
    long rss0 = rss_kib();
    unsigned char m[64];
    memset(m, 'f', sizeof m);
    int bad = 0; /* one assertion after the loop: each one is a message to the runner */
    for (int i = 0; i < FLOOD; i++) {
        ssize_t r = sendto(fd, m, sizeof m, 0, &ts.addr.u.sa, ts.addr.len);
        bad += r != (ssize_t)sizeof m && errno != EAGAIN && errno != ENOBUFS;
    }
    cr_assert_eq(bad, 0, "sendto failed during the flood");
    /* Alive and serving: a fresh client is answered (its datagram may be
     * behind the flood in the queue, or lost to a full queue: retry). */
    int fd2 = dg_client(AF_INET, NULL);
    int answered = 0;
    int64_t end = tc_test_now_ms() + TC_TEST_WAIT_MS;
    while (!answered && tc_test_now_ms() < end) {
        dg_send(fd2, &ts.addr, "still there?", 12);
        struct pollfd p = {.fd = fd2, .events = POLLIN};
        if (poll(&p, 1, 200) == 1) {
            char got[32];
            answered = dg_recv(fd2, got, sizeof got) == 12;
        }
    }
    cr_assert(answered, "the server answers after the flood");
    long grown = rss_kib() - rss0;
    if (!DG_SANITIZED)
        cr_assert_lt(grown, 32 * 1024, "memory grew by %ld KiB during the flood", grown);
    tc_stats st;
    cr_assert_eq(tc_server_stats(ts.srv, &st), 0);
    cr_assert_gt(st.dgram_received, 1);
    cr_assert_leq(st.dgram_received, FLOOD + 1 + 1000);
    close(fd);
    close(fd2);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
}

Test(dgram, flood_without_reading_replies, .timeout = 120)
{
    tc_mode modes[] = {TC_MODE_INLINE, TC_MODE_POOL, TC_MODE_EVENT};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        flood_in(modes[i]);
}

/* 2,000 source sockets, one after another: no descriptor stays behind. */
static void sources_in(tc_mode mode)
{
    if (!tc_test_mode_enabled(mode))
        return;
    tc_server_config cfg = dg_config(mode);
    tc_handler h = msg_handler();
    tc_test_server ts;
    tc_test_server_start(&ts, "udp:127.0.0.1:0", &cfg, &h);
    int fds_serving = tc_test_count_fds(), bad = 0;
    tc_addr lo;
    cr_assert_eq(tc_addr_parse(&lo, "127.0.0.1:0"), 0);
    struct timeval tv = {TC_TEST_WAIT_MS / 1000, (TC_TEST_WAIT_MS % 1000) * 1000};
    /* Plain checks, one assertion at the end: each one is a message to the runner. */
    for (int i = 0; i < 2000 && !bad; i++) {
        char got[8];
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        bad = fd < 0 || bind(fd, &lo.u.sa, lo.len) < 0 ||
              setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
              sendto(fd, "ping", 4, 0, &ts.addr.u.sa, ts.addr.len) != 4 ||
              dg_recv(fd, got, sizeof got) != 4 || memcmp(got, "ping", 4) != 0
                  ? i + 1
                  : 0;
        if (fd >= 0)
            close(fd);
    }
    cr_assert_eq(bad, 0, "source %d was not answered", bad);
    cr_assert_eq(tc_test_count_fds(), fds_serving);
    tc_stats st;
    cr_assert_eq(tc_server_stats(ts.srv, &st), 0);
    cr_assert_eq(st.dgram_received, 2000);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
}

Test(dgram, two_thousand_sources_leave_no_descriptor, .timeout = 120)
{
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_mode modes[] = {TC_MODE_INLINE, TC_MODE_THREADING, TC_MODE_EVENT};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        sources_in(modes[i]);
    tc_test_expect_counts(before, NULL, 0, "after 2,000 sources");
}

/* ---- the request's channel ------------------------------------------------------ */

/* What a stream handler sees of its datagram, sent back as text: reads end
 * with the datagram; writes gather into one reply; sends are one each. */
static int inspect(tc_conn *c, void *ctx)
{
    (void)ctx;
    char buf[64];
    ssize_t a = tc_conn_read(c, buf, 3);          /* "abc" of "abcdef" */
    ssize_t b = tc_conn_read(c, buf, sizeof buf); /* "def": the rest, not "ghi" */
    ssize_t e = tc_conn_read(c, buf, 1);          /* the end of the datagram */
    char peer[TC_ADDR_STRLEN];
    (void)tc_addr_format(tc_conn_peer(c), peer, sizeof peer);
    tc_conn_printf(c, "a=%zd b=%zd e=%s ", a, b, tc_err_name((int)e));
    tc_conn_printf(c, "peer=%s", peer);       /* the same datagram as the line before */
    tc_conn_flush(c);
    tc_conn_send(c, "second", 6);             /* a datagram of its own */
    return 0;
}

Test(dgram, request_reads_one_datagram_writes_gather)
{
    tc_server_config cfg = dg_config(TC_MODE_INLINE);
    tc_handler h = TC_HANDLER_INIT;
    h.handle = inspect;
    tc_test_server ts;
    tc_test_server_start(&ts, "udp:127.0.0.1:0", &cfg, &h);
    int fd = dg_client(AF_INET, NULL);
    dg_send(fd, &ts.addr, "abcdef", 6);
    dg_send(fd, &ts.addr, "ghi", 3); /* never part of the first request's reads */
    tc_addr me;
    socklen_t len = sizeof me.u;
    cr_assert_eq(getsockname(fd, &me.u.sa, &len), 0);
    me.len = len;
    me.socktype = SOCK_DGRAM;
    char mine[TC_ADDR_STRLEN], want[256], got[256];
    cr_assert_gt(tc_addr_format(&me, mine, sizeof mine), 0);
    snprintf(want, sizeof want, "a=3 b=3 e=TC_EOF peer=%s", mine);
    ssize_t n = dg_recv(fd, got, sizeof got - 1);
    cr_assert_gt(n, 0);
    got[n] = '\0';
    cr_assert_str_eq(got, want);
    n = dg_recv(fd, got, sizeof got - 1);
    cr_assert_eq(n, 6);
    cr_assert(memcmp(got, "second", 6) == 0);
    n = dg_recv(fd, got, sizeof got - 1); /* the second request: "ghi" read whole */
    cr_assert_gt(n, 0);
    got[n] = '\0';
    cr_assert(strncmp(got, "a=3 b=-4100 e=TC_EOF", 20) == 0, "got %s", got);
    close(fd);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
}

/* tc_server_handle_request serves exactly one datagram (inline: to the end). */
Test(dgram, handle_request_serves_one_datagram)
{
    tc_server_config cfg = dg_config(TC_MODE_INLINE);
    cfg.timeout_ms = tc_test_ms(100);
    tc_handler h = msg_handler();
    tc_server *srv;
    cfg.listen = "udp:127.0.0.1:0";
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), 0);
    tc_addr a;
    cr_assert_eq(tc_server_address(srv, &a), 0);
    cr_assert_eq(tc_server_handle_request(srv), -ETIMEDOUT);
    int fd = dg_client(AF_INET, NULL);
    dg_send(fd, &a, "one", 3);
    dg_send(fd, &a, "two", 3);
    cr_assert_eq(tc_server_handle_request(srv), 0);
    char got[8];
    cr_assert_eq(dg_recv(fd, got, sizeof got), 3);
    cr_assert(memcmp(got, "one", 3) == 0);
    cr_assert(dg_quiet(fd, 50), "the second waits for the next call");
    cr_assert_eq(tc_server_handle_request(srv), 0);
    cr_assert_eq(dg_recv(fd, got, sizeof got), 3);
    cr_assert(memcmp(got, "two", 3) == 0);
    close(fd);
    tc_server_destroy(srv);
}

/* verify_request sees each sender; a refused datagram gets no handler. */
static int refuse_all(tc_server *srv, const tc_addr *peer, void *ctx)
{
    (void)srv, (void)ctx;
    return peer->socktype == SOCK_DGRAM ? -1 : 0;
}

Test(dgram, verify_request_refuses)
{
    tc_server_config cfg = dg_config(TC_MODE_INLINE);
    cfg.hooks.verify_request = refuse_all;
    tc_handler h = msg_handler();
    tc_test_server ts;
    tc_test_server_start(&ts, "udp:127.0.0.1:0", &cfg, &h);
    int fd = dg_client(AF_INET, NULL);
    dg_send(fd, &ts.addr, "no", 2);
    cr_assert(dg_quiet(fd, 150));
    tc_stats st;
    cr_assert_eq(tc_server_stats(ts.srv, &st), 0);
    cr_assert_eq(st.refused, 1);
    cr_assert_eq(st.dgram_answered, 0);
    close(fd);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
}

/* ---- drain: a datagram in flight is answered ------------------------------------- */

static tc_test_event in_handler, may_go;

static int slow_echo(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    (void)ctx;
    tc_test_event_post(&in_handler, NULL);
    (void)tc_test_event_wait(&may_go, 1, TC_TEST_WAIT_MS);
    ssize_t r = tc_conn_send(c, msg, len);
    return r < 0 ? (int)r : 0;
}

static void *release_later(void *arg)
{
    tc_test_server *ts = arg;
    tc_server_shutdown(ts->srv);
    tc_test_event_post(&may_go, NULL);
    return NULL;
}

static void drain_in(tc_mode mode)
{
    if (!tc_test_mode_enabled(mode))
        return;
    tc_test_event_init(&in_handler);
    tc_test_event_init(&may_go);
    tc_server_config cfg = dg_config(mode);
    tc_handler h = TC_HANDLER_INIT;
    h.on_message = slow_echo;
    tc_test_server ts;
    tc_test_server_start(&ts, "udp:127.0.0.1:0", &cfg, &h);
    int fd = dg_client(AF_INET, NULL);
    dg_send(fd, &ts.addr, "in flight", 9);
    cr_assert_eq(tc_test_event_wait(&in_handler, 1, TC_TEST_WAIT_MS), 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, release_later, &ts), 0);
    char got[32];
    cr_assert_eq(dg_recv(fd, got, sizeof got), 9, "the datagram in flight is answered");
    pthread_join(t, NULL);
    cr_assert_eq(tc_test_server_join(&ts), 0);
    tc_server_destroy(ts.srv);
    close(fd);
    tc_test_event_destroy(&in_handler);
    tc_test_event_destroy(&may_go);
}

Test(dgram, drain_answers_in_flight)
{
    tc_mode modes[] = {TC_MODE_THREADING, TC_MODE_POOL, TC_MODE_EVENT};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        drain_in(modes[i]);
}

/* ---- limits: datagrams in flight ------------------------------------------------------ */

static int nap_echo(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    (void)ctx;
    tc_test_nap_ms(40); /* the handler's work: holds its thread, worker or child */
    ssize_t r = tc_conn_send(c, msg, len);
    return r < 0 ? (int)r : 0;
}

/* More datagrams than the mode takes at once: the rest wait in the socket's
 * buffer (pool: one waits in the loop for room in the queue), none is lost,
 * and no more than the limit is ever in flight. */
static void in_flight_in(tc_mode mode, int max_conns, int workers, int queue_len)
{
    if (!tc_test_mode_enabled(mode))
        return;
    enum { N = 8 };
    tc_server_config cfg = dg_config(mode);
    cfg.max_conns = max_conns;
    cfg.workers = workers;
    cfg.queue_len = queue_len;
    tc_handler h = TC_HANDLER_INIT;
    h.on_message = nap_echo;
    tc_test_server ts;
    tc_test_server_start(&ts, "udp:127.0.0.1:0", &cfg, &h);
    int fd = dg_client(AF_INET, NULL);
    for (int i = 0; i < N; i++) {
        char m[8];
        int n = snprintf(m, sizeof m, "d%d", i);
        dg_send(fd, &ts.addr, m, (size_t)n);
    }
    int seen = 0;
    for (int i = 0; i < N; i++) {
        char got[8];
        ssize_t n = dg_recv(fd, got, sizeof got - 1);
        cr_assert_gt(n, 0, "%s: reply %d of %d missing", tc_mode_name(mode), i, N);
        got[n] = '\0';
        int k = atoi(got + 1);
        cr_assert(k >= 0 && k < N && !(seen & (1 << k)));
        seen |= 1 << k;
        if (mode == TC_MODE_POOL && workers == 1) /* one worker, a FIFO queue: in order */
            cr_assert_eq(k, i);
    }
    tc_stats st;
    cr_assert_eq(tc_server_stats(ts.srv, &st), 0);
    cr_assert_leq(st.peak_active, (unsigned)(max_conns > 0 ? max_conns : N));
    cr_assert_eq(st.accepted, N);
    close(fd);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
}

Test(dgram, max_conns_bounds_datagrams_in_flight)
{
    in_flight_in(TC_MODE_THREADING, 2, 0, 0);
    in_flight_in(TC_MODE_FORKING, 2, 0, 0);  /* ForkingUDPServer's max_children */
    in_flight_in(TC_MODE_POOL, 0, 1, 1);     /* a full queue: the loop waits for room */
    in_flight_in(TC_MODE_POOL, 3, 2, 4);
}

/* ---- unix clients with a path of their own, abstract names -------------------------- */

static int peer_echo(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    (void)msg, (void)len, (void)ctx;
    char peer[TC_ADDR_STRLEN];
    int n = tc_addr_format(tc_conn_peer(c), peer, sizeof peer);
    ssize_t r = tc_conn_send(c, peer, n > 0 ? (size_t)n : 0);
    return r < 0 ? (int)r : 0;
}

Test(dgram, unixgram_clients_with_their_own_path)
{
    char dir[64], listen[128], p1[128], p2[128];
    tc_test_tmpdir(dir, sizeof dir);
    snprintf(listen, sizeof listen, "unixgram:%s/srv", dir);
    snprintf(p1, sizeof p1, "%s/one", dir);
    snprintf(p2, sizeof p2, "%s/two", dir);
    tc_server_config cfg = dg_config(TC_MODE_THREADING);
    tc_handler h = TC_HANDLER_INIT;
    h.on_message = peer_echo;
    tc_test_server ts;
    tc_test_server_start(&ts, listen, &cfg, &h);
    cr_assert_str_eq(ts.addr_str, listen);
    int a = dg_client(AF_UNIX, p1), b = dg_client(AF_UNIX, p2);
    char got[256], want[160];
    dg_send(a, &ts.addr, "x", 1);
    dg_send(b, &ts.addr, "y", 1);
    ssize_t n = dg_recv(b, got, sizeof got - 1);
    cr_assert_gt(n, 0);
    got[n] = '\0';
    snprintf(want, sizeof want, "unixgram:%s", p2);
    cr_assert_str_eq(got, want);
    n = dg_recv(a, got, sizeof got - 1);
    cr_assert_gt(n, 0);
    got[n] = '\0';
    snprintf(want, sizeof want, "unixgram:%s", p1);
    cr_assert_str_eq(got, want);
    close(a);
    close(b);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_rmtree(dir);
}

/* A unix client without a name cannot be answered: the reply is dropped and
 * counted, the error reported, and the server goes on. */
Test(dgram, unixgram_unnamed_client_cannot_be_answered)
{
    char dir[64], listen[128], path[128];
    tc_test_tmpdir(dir, sizeof dir);
    snprintf(listen, sizeof listen, "unixgram:%s/srv", dir);
    snprintf(path, sizeof path, "%s/named", dir);
    atomic_store(&errors_seen, 0);
    tc_server_config cfg = dg_config(TC_MODE_INLINE);
    tc_handler h = msg_handler();
    tc_test_server ts;
    tc_test_server_start(&ts, listen, &cfg, &h);
    int anon = dg_client(AF_UNIX, NULL), named = dg_client(AF_UNIX, path);
    dg_send(anon, &ts.addr, "lost", 4);
    dg_echo(named, &ts.addr, "found", 5); /* after the first: it was handled first */
    tc_stats st;
    cr_assert_eq(tc_server_stats(ts.srv, &st), 0);
    cr_assert_eq(st.dgram_dropped, 1);
    cr_assert_eq(atomic_load(&errors_seen), 1);
    close(anon);
    close(named);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_rmtree(dir);
}

Test(dgram, udp_over_ipv6)
{
    if (!tc_test_have_ipv6())
        cr_skip_test("no IPv6 loopback here");
    tc_server_config cfg = dg_config(TC_MODE_EVENT);
    tc_handler h = msg_handler();
    tc_test_server ts;
    tc_test_server_start(&ts, "udp:[::1]:0", &cfg, &h);
    cr_assert(strncmp(ts.addr_str, "udp:[::1]:", 10) == 0);
    tc_conn *c;
    tc_dial_config dc = TC_DIAL_CONFIG_INIT;
    dc.timeout_ms = TC_TEST_WAIT_MS;
    cr_assert_eq(tc_dial(&c, ts.addr_str, &dc), 0);
    cr_assert_eq(tc_conn_send(c, "six", 3), 3);
    char got[8];
    cr_assert_eq(tc_conn_read(c, got, sizeof got), 3);
    cr_assert(memcmp(got, "six", 3) == 0);
    tc_conn_close(c);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
}

Test(dgram, unixgram_abstract_name)
{
    char listen[64];
    snprintf(listen, sizeof listen, "unixgram:@tc-dgram-test-%d", (int)getpid());
    tc_server_config cfg = dg_config(TC_MODE_INLINE);
    tc_handler h = msg_handler();
    tc_test_server ts;
    tc_test_server_start(&ts, listen, &cfg, &h);
    cr_assert_str_eq(ts.addr_str, listen);
    tc_conn *c;
    cr_assert_eq(tc_dial(&c, listen, NULL), 0); /* autobound: the reply finds it */
    cr_assert_eq(tc_conn_send(c, "abstract", 8), 8);
    char got[16];
    cr_assert_eq(tc_conn_read(c, got, sizeof got), 8);
    cr_assert(memcmp(got, "abstract", 8) == 0);
    tc_conn_close(c);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
}

/* ---- a server bound to every address ------------------------------------------------ */

static int local_echo(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    (void)msg, (void)len, (void)ctx;
    char local[TC_ADDR_STRLEN];
    int n = tc_addr_format(tc_conn_local(c), local, sizeof local);
    ssize_t r = tc_conn_send(c, local, n > 0 ? (size_t)n : 0);
    return r < 0 ? (int)r : 0;
}

/* Bound to 0.0.0.0: a client that sent to 127.0.0.2 over a connected socket
 * gets its reply from 127.0.0.2 (IP_PKTINFO), and tc_conn_local() says so.
 * (The server listens on every IPv4 address for the length of the test.) */
static void wildcard_in(tc_mode mode)
{
    if (!tc_test_mode_enabled(mode))
        return;
    tc_server_config cfg = dg_config(mode);
    tc_handler h = TC_HANDLER_INIT;
    h.on_message = local_echo;
    tc_test_server ts;
    tc_test_server_start(&ts, "udp:0.0.0.0:0", &cfg, &h);
    for (int k = 1; k <= 2; k++) {
        char addr[64], got[TC_ADDR_STRLEN];
        snprintf(addr, sizeof addr, "udp:127.0.0.%d:%d", k, tc_addr_port(&ts.addr));
        tc_conn *c;
        tc_dial_config dc = TC_DIAL_CONFIG_INIT;
        dc.timeout_ms = TC_TEST_WAIT_MS;
        cr_assert_eq(tc_dial(&c, addr, &dc), 0);
        cr_assert_eq(tc_conn_send(c, "?", 1), 1);
        ssize_t n = tc_conn_read(c, got, sizeof got - 1);
        cr_assert_gt(n, 0, "%s: no reply from %s (%s)", tc_mode_name(mode), addr,
                     tc_strerror((int)n));
        got[n] = '\0';
        cr_assert_str_eq(got, addr);
        tc_conn_close(c);
    }
    cr_assert_eq(tc_test_server_stop(&ts), 0);
}

Test(dgram, wildcard_server_answers_from_the_address_used)
{
    tc_mode modes[] = {TC_MODE_INLINE, TC_MODE_THREADING, TC_MODE_FORKING, TC_MODE_POOL,
                       TC_MODE_EVENT};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        wildcard_in(modes[i]);
}

/* ---- tc_dial ------------------------------------------------------------------------- */

static int silent(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    (void)c, (void)msg, (void)len, (void)ctx;
    return 0;
}

Test(dgram, dial_udp_whole_datagrams_and_timeout)
{
    tc_server_config cfg = dg_config(TC_MODE_INLINE); /* replies in order */
    tc_handler h = msg_handler();
    tc_test_server ts;
    tc_test_server_start(&ts, "udp:127.0.0.1:0", &cfg, &h);
    tc_conn *c;
    tc_dial_config dc = TC_DIAL_CONFIG_INIT;
    dc.timeout_ms = tc_test_ms(2000);
    cr_assert_eq(tc_dial(&c, ts.addr_str, &dc), 0);
    cr_assert_eq(tc_conn_peer(c)->socktype, SOCK_DGRAM);
    static unsigned char big[65507], got[65507];
    memset(big, 'b', sizeof big);
    const size_t sizes[] = {1, 1400, 65507};
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(tc_conn_send(c, big, sizes[i]), (ssize_t)sizes[i]);
        const void *msg;
        size_t len;
        cr_assert_eq(tc_conn_read_frame(c, &msg, &len), 0);
        cr_assert_eq(len, sizes[i]);
        cr_assert(memcmp(msg, big, len) == 0);
    }
    /* Two datagrams: two reads, never one across both. */
    cr_assert_eq(tc_conn_send(c, "12", 2), 2);
    cr_assert_eq(tc_conn_send(c, "345", 3), 3);
    cr_assert_eq(tc_conn_read(c, got, sizeof got), 2);
    cr_assert_eq(tc_conn_read(c, got, sizeof got), 3);
    tc_conn_close(c);
    cr_assert_eq(tc_test_server_stop(&ts), 0);

    /* A server that never answers: the read times out. */
    h.on_message = silent;
    tc_test_server_start(&ts, "udp:127.0.0.1:0", &cfg, &h);
    dc.timeout_ms = tc_test_ms(200);
    cr_assert_eq(tc_dial(&c, ts.addr_str, &dc), 0);
    cr_assert_eq(tc_conn_send(c, "?", 1), 1);
    int64_t t0 = tc_test_now_ms();
    cr_assert_eq(tc_conn_read(c, got, sizeof got), -ETIMEDOUT);
    cr_assert_geq(tc_test_now_ms() - t0, tc_test_ms(200) - 5);
    tc_conn_close(c);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
}

/* ---- addresses ------------------------------------------------------------------------ */

static void roundtrip(const char *text, int family)
{
    tc_addr a;
    char out[TC_ADDR_STRLEN];
    cr_assert_eq(tc_addr_parse(&a, text), 0, "parse %s", text);
    cr_assert_eq(a.socktype, SOCK_DGRAM, "%s is a datagram address", text);
    cr_assert_eq(tc_addr_family(&a), family);
    cr_assert_gt(tc_addr_format(&a, out, sizeof out), 0);
    cr_assert_str_eq(out, text);
}

/* socktype lives in what was padding: the struct kept its size (LP64). */
_Static_assert(sizeof(void *) != 8 || sizeof(tc_addr) == sizeof(struct sockaddr_storage) + 8,
               "tc_addr grew");

Test(dgram, addresses)
{
    roundtrip("udp:127.0.0.1:7000", AF_INET);
    roundtrip("udp:[::1]:7000", AF_INET6);
    roundtrip("udp:0.0.0.0:53", AF_INET);
    roundtrip("unixgram:/tmp/x.sock", AF_UNIX);
    roundtrip("unixgram:@name", AF_UNIX);
    tc_addr a;
    char out[TC_ADDR_STRLEN];
    cr_assert_eq(tc_addr_parse(&a, "udp::9"), 0);
    cr_assert_eq(tc_addr_format(&a, out, sizeof out), (int)strlen("udp:0.0.0.0:9"));
    cr_assert_str_eq(out, "udp:0.0.0.0:9");
    cr_assert_eq(tc_addr_parse(&a, "unix:/tmp/s"), 0);
    cr_assert_eq(a.socktype, 0);
    cr_assert_eq(tc_addr_parse(&a, "127.0.0.1:1"), 0);
    cr_assert_eq(a.socktype, 0);
    const char *bad[] = {"udp:", "udp:127.0.0.1", "udp:[::1]", "udp:unix:/x", "unixgram:",
                         "unixgram:@", "udp:1.2.3.4:99999", "udp:::1:5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(tc_addr_parse(&a, bad[i]), TC_EBADADDR, "%s is malformed", bad[i]);
    /* An unnamed unix datagram peer. */
    memset(&a, 0, sizeof a);
    a.u.un.sun_family = AF_UNIX;
    a.len = sizeof(sa_family_t);
    a.socktype = SOCK_DGRAM;
    cr_assert_eq(tc_addr_format(&a, out, sizeof out), (int)strlen("unixgram:"));
    cr_assert_str_eq(out, "unixgram:");
}

/* ---- configuration ------------------------------------------------------------------- */

Test(dgram, config_checks)
{
    tc_server *srv = NULL;
    tc_handler h = msg_handler();
    tc_server_config cfg = dg_config(TC_MODE_INLINE);
    cfg.listen = "udp:127.0.0.1:0";
    cfg.proxy_protocol = TC_PROXY_REQUIRED;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
    cr_assert(strstr(tc_last_error_detail(), "proxy_protocol") != NULL);
    cfg.proxy_protocol = TC_PROXY_OFF;
    cr_assert_eq(tc_codec_delimited(&cfg.codec, "\n", 1), 0);
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
    cr_assert(strstr(tc_last_error_detail(), "codec") != NULL);
    cr_assert_eq(tc_codec_raw(&cfg.codec), 0);
    cfg.codec.max_frame = TC_DGRAM_MAX_FRAME + 1;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
    cr_assert(strstr(tc_last_error_detail(), "max_frame") != NULL);
    cfg.codec.max_frame = 0;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), 0);
    tc_server_destroy(srv);
    /* Event mode runs message-style handlers only, datagrams too. */
    cfg.mode = TC_MODE_EVENT;
    h = stream_handler();
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
}

/* An adopted SOCK_DGRAM socket (socket activation, a supervisor) is served. */
Test(dgram, adopted_datagram_socket)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    tc_addr a;
    cr_assert_eq(tc_addr_parse(&a, "127.0.0.1:0"), 0);
    cr_assert_eq(bind(s, &a.u.sa, a.len), 0);
    tc_server_config cfg = dg_config(TC_MODE_INLINE);
    cfg.adopt_fd = TC_ON;
    cfg.listen_fd = s;
    tc_handler h = msg_handler();
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    cr_assert_eq(ts.addr.socktype, SOCK_DGRAM);
    cr_assert(strncmp(ts.addr_str, "udp:127.0.0.1:", 14) == 0);
    int fd = dg_client(AF_INET, NULL);
    dg_echo(fd, &ts.addr, "adopted", 7);
    close(fd);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
}
