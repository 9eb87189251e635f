/* SPDX-License-Identifier: MIT */
/* tc_server: binding (TCP, IPv6, unix), the handler lifecycle and hooks,
 * handle_request, shutdown from threads and signals, configuration errors,
 * inline mode, and descriptor hygiene. Loopback only, port 0 only. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "helpers.h"

/* ---- shared handler: records its lifecycle into an event log ------------------ */

struct life {
    tc_test_event ev;
    int setup_rc;  /* what setup returns */
    int handle_rc; /* what handle returns after echoing (0: the echo's result) */
    int finish_rc; /* what finish returns */
};

static void life_init(struct life *l)
{
    memset(l, 0, sizeof *l);
    tc_test_event_init(&l->ev);
}

static int life_setup(tc_conn *c, void *ctx)
{
    struct life *l = ctx;
    tc_conn_set_data(c, l);
    tc_test_event_post(&l->ev, "setup");
    return l->setup_rc;
}

static int life_handle(tc_conn *c, void *ctx)
{
    struct life *l = ctx;
    /* Per-connection data set in setup reaches handle. */
    tc_test_event_post(&l->ev, tc_conn_data(c) == l ? "handle" : "handle(no data)");
    int rc = tc_test_echo_handle(c, NULL);
    return l->handle_rc ? l->handle_rc : rc;
}

static int life_finish(tc_conn *c, void *ctx)
{
    struct life *l = ctx;
    tc_test_event_post(&l->ev, tc_conn_data(c) == l ? "finish" : "finish(no data)");
    return l->finish_rc;
}

static void life_error(tc_server *srv, tc_conn *conn, int err, void *ctx)
{
    struct life *l = ctx;
    (void)srv;
    tc_test_event_postf(&l->ev, "error:%s%s", tc_err_name(err), conn ? "" : "(no conn)");
}

static tc_handler life_handler(struct life *l)
{
    tc_handler h = TC_HANDLER_INIT;
    h.setup = life_setup;
    h.handle = life_handle;
    h.finish = life_finish;
    h.ctx = l;
    return h;
}

static tc_server_config life_config(struct life *l)
{
    tc_server_config cfg = tc_test_config();
    cfg.hooks.handle_error = life_error;
    cfg.hooks.log = tc_test_log_hook;
    cfg.hooks.ctx = l;
    return cfg;
}

static void assert_log(tc_test_event *ev, const char *expect)
{
    char log[sizeof ev->log];
    tc_test_event_log(ev, log, sizeof log);
    cr_assert_str_eq(log, expect);
}

/* A mode this build does not implement, or -1 when all are available. */
static int unavailable_mode(void)
{
    for (int m = TC_MODE_INLINE; m <= TC_MODE_EVENT; m++)
        if (!tc_mode_available((tc_mode)m))
            return m;
    return -1;
}

/* A pointer no create returns: *out must keep it when create fails. */
static char sentinel_byte;
#define SENTINEL ((tc_server *)(void *)&sentinel_byte)

/* ---- binding -------------------------------------------------------------------- */

Test(server, bind_port_in_use, .timeout = 20)
{
    tc_test_server a;
    tc_test_server_start(&a, "127.0.0.1:0", NULL, NULL);
    tc_server_config cfg = tc_test_config();
    cfg.reuse_addr = TC_ON; /* SO_REUSEADDR on both: still one listener per port */
    cfg.listen = a.addr_str;
    tc_handler h = tc_test_echo_handler();
    tc_server *b = SENTINEL;
    cr_assert_eq(tc_server_create(&b, &cfg, &h), -EADDRINUSE);
    cr_assert_eq(b, SENTINEL, "out written on failure");
    /* The first server is undisturbed. */
    tc_test_echo_roundtrip(&a.addr, "still here");
    cr_assert_eq(tc_test_server_stop(&a), 0);
}

Test(server, port_zero_reports_real_port, .timeout = 20)
{
    tc_test_server s;
    cr_assert_eq(tc_test_server_create(&s, "127.0.0.1:0", NULL, NULL), 0);
    int port = tc_addr_port(&s.addr);
    cr_assert_gt(port, 0);
    cr_assert_eq(tc_addr_family(&s.addr), AF_INET);
    cr_assert_eq(s.addr.u.in4.sin_addr.s_addr, htonl(INADDR_LOOPBACK));

    int fd = tc_server_fileno(s.srv);
    cr_assert_geq(fd, 0);
    cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC, "listener is not close-on-exec");
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    cr_assert_eq(ntohs(sin.sin_port), port);
    int listening = 0;
    len = sizeof listening;
    cr_assert_eq(getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len), 0);
    cr_assert(listening);

    char expect[32];
    snprintf(expect, sizeof expect, "127.0.0.1:%d", port);
    cr_assert_str_eq(s.addr_str, expect);

    /* The default listen address is a free loopback port too. */
    tc_server *d;
    tc_handler h = tc_test_echo_handler();
    tc_addr da;
    cr_assert_eq(tc_server_create(&d, NULL, &h), 0);
    cr_assert_eq(tc_server_address(d, &da), 0);
    cr_assert_eq(da.u.in4.sin_addr.s_addr, htonl(INADDR_LOOPBACK));
    cr_assert_gt(tc_addr_port(&da), 0);
    cr_assert_neq(tc_addr_port(&da), port);
    tc_server_destroy(d);
    tc_test_server_stop(&s);
}

Test(server, ipv6_echo, .timeout = 20)
{
    if (!tc_test_have_ipv6())
        cr_skip("no IPv6 loopback on this machine");
    tc_test_server s;
    tc_test_server_start(&s, "[::1]:0", NULL, NULL);
    cr_assert_eq(tc_addr_family(&s.addr), AF_INET6);
    cr_assert_gt(tc_addr_port(&s.addr), 0);
    cr_assert_eq(strncmp(s.addr_str, "[::1]:", 6), 0, "address %s", s.addr_str);
    tc_test_echo_roundtrip(&s.addr, "over IPv6");
    cr_assert_eq(tc_test_server_stop(&s), 0);
}

Test(server, unix_socket_file_lifecycle, .timeout = 20)
{
    char dir[64], path[128], listen[140];
    tc_test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/srv.sock", dir);
    snprintf(listen, sizeof listen, "unix:%s", path);

    tc_test_server s;
    tc_test_server_start(&s, listen, NULL, NULL);
    cr_assert_str_eq(s.addr_str, listen);
    struct stat st;
    cr_assert_eq(lstat(path, &st), 0, "socket file missing while serving");
    cr_assert(S_ISSOCK(st.st_mode));
    tc_test_echo_roundtrip(&s.addr, "over a unix socket");
    cr_assert_eq(tc_test_server_stop(&s), 0);
    cr_assert_eq(lstat(path, &st), -1, "socket file left behind by destroy");
    cr_assert_eq(errno, ENOENT);
    tc_test_rmtree(dir);
}

Test(server, unix_existing_path_refused_and_kept, .timeout = 20)
{
    char dir[64], path[128], listen[140];
    tc_test_tmpdir(dir, sizeof dir);
    tc_handler h = tc_test_echo_handler();
    tc_server_config cfg = tc_test_config();

    /* Someone else's regular file. */
    snprintf(path, sizeof path, "%s/file", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("precious", f);
    fclose(f);
    snprintf(listen, sizeof listen, "unix:%s", path);
    cfg.listen = listen;
    tc_server *srv = SENTINEL;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), -EADDRINUSE);
    cr_assert_eq(srv, SENTINEL);
    char buf[32] = {0};
    f = fopen(path, "r");
    cr_assert_not_null(f, "the existing file was removed");
    cr_assert_not_null(fgets(buf, sizeof buf, f));
    fclose(f);
    cr_assert_str_eq(buf, "precious");

    /* A live server's socket: the second server fails, the first keeps its file and serves. */
    tc_test_server a;
    snprintf(path, sizeof path, "%s/live.sock", dir);
    snprintf(listen, sizeof listen, "unix:%s", path);
    tc_test_server_start(&a, listen, NULL, NULL);
    struct stat before, after;
    cr_assert_eq(lstat(path, &before), 0);
    cfg.listen = listen;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), -EADDRINUSE);
    cr_assert_eq(lstat(path, &after), 0, "the live socket file was removed");
    cr_assert_eq(before.st_ino, after.st_ino);
    tc_test_echo_roundtrip(&a.addr, "first server still serves");
    cr_assert_eq(tc_test_server_stop(&a), 0);
    tc_test_rmtree(dir);
}

Test(server, unix_abstract_echo, .timeout = 20)
{
    char listen[64];
    snprintf(listen, sizeof listen, "unix:@tctest-%ld-%ld", (long)getpid(), (long)tc_test_now_ns());
    tc_test_server s;
    tc_test_server_start(&s, listen, NULL, NULL);
    cr_assert_str_eq(s.addr_str, listen);
    tc_test_echo_roundtrip(&s.addr, "abstract");
    cr_assert_eq(tc_test_server_stop(&s), 0);
}

/* ---- the request handler's lifecycle ------------------------------------------- */

Test(server, handler_lifecycle_order, .timeout = 20)
{
    struct life l;
    life_init(&l);
    tc_handler h = life_handler(&l);
    tc_server_config cfg = life_config(&l);
    tc_test_server s;
    tc_test_server_start(&s, NULL, &cfg, &h);
    /* The client sees EOF only after finish: the library closes after it. */
    tc_test_echo_roundtrip(&s.addr, "lifecycle");
    cr_assert_eq(tc_test_event_wait(&l.ev, 3, TC_TEST_WAIT_MS), 0);
    assert_log(&l.ev, "setup,handle,finish");
    tc_test_echo_roundtrip(&s.addr, "again");
    cr_assert_eq(tc_test_event_wait(&l.ev, 6, TC_TEST_WAIT_MS), 0);
    assert_log(&l.ev, "setup,handle,finish,setup,handle,finish");
    cr_assert_eq(tc_test_server_stop(&s), 0);
}

Test(server, finish_runs_after_failing_handle, .timeout = 20)
{
    struct life l;
    life_init(&l);
    l.handle_rc = -ECONNRESET;
    tc_handler h = life_handler(&l);
    tc_server_config cfg = life_config(&l);
    tc_test_server s;
    tc_test_server_start(&s, NULL, &cfg, &h);
    tc_test_echo_roundtrip(&s.addr, "fail");
    cr_assert_eq(tc_test_event_wait(&l.ev, 4, TC_TEST_WAIT_MS), 0);
    /* handle_error gets exactly the handler's code, once, with the live channel. */
    assert_log(&l.ev, "setup,handle,error:ECONNRESET,finish");

    /* A failing finish is reported too. */
    l.handle_rc = 0;
    l.finish_rc = -EPIPE;
    tc_test_echo_roundtrip(&s.addr, "fail finish");
    cr_assert_eq(tc_test_event_wait(&l.ev, 8, TC_TEST_WAIT_MS), 0);
    assert_log(&l.ev, "setup,handle,error:ECONNRESET,finish,setup,handle,finish,error:EPIPE");
    cr_assert_eq(tc_test_server_stop(&s), 0);
}

Test(server, refused_setup_skips_handle_and_finish, .timeout = 20)
{
    struct life l;
    life_init(&l);
    l.setup_rc = TC_EDENIED;
    tc_handler h = life_handler(&l);
    tc_server_config cfg = life_config(&l);
    tc_test_server s;
    tc_test_server_start(&s, NULL, &cfg, &h);
    int fd = tc_test_connect_ok(&s.addr);
    cr_assert_eq(tc_test_send_all(fd, "x", 1), 0);
    int r = tc_test_recv_eof(fd);
    cr_assert(r == 0 || r == -ECONNRESET, "expected the connection closed, got %d", r);
    close(fd);
    cr_assert_eq(tc_test_event_wait(&l.ev, 2, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(tc_test_server_stop(&s), 0);
    /* After stop nothing else can run: the log is final. */
    assert_log(&l.ev, "setup,error:TC_EDENIED");
}

static int refuse_peer(tc_server *srv, const tc_addr *peer, void *ctx)
{
    char buf[TC_ADDR_STRLEN];
    (void)srv;
    tc_addr_format(peer, buf, sizeof buf);
    tc_test_event_postf(ctx, "verify:%s", buf);
    return TC_EDENIED;
}

Test(server, verify_request_refuses_peer, .timeout = 20)
{
    struct life l;
    life_init(&l);
    tc_handler h = life_handler(&l);
    tc_server_config cfg = life_config(&l);
    cfg.hooks.verify_request = refuse_peer;
    int fds0 = tc_test_count_fds();
    tc_test_server s;
    tc_test_server_start(&s, NULL, &cfg, &h);
    int fds_serving = tc_test_count_fds();

    for (int i = 0; i < 3; i++) {
        int fd = tc_test_connect_ok(&s.addr);
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        tc_addr me;
        char me_s[TC_ADDR_STRLEN], expect[TC_ADDR_STRLEN + 8], log[4096];
        cr_assert_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
        cr_assert_eq(tc_addr_from_sockaddr(&me, (struct sockaddr *)&ss, len), 0);
        cr_assert_gt(tc_addr_format(&me, me_s, sizeof me_s), 0);

        /* EOF (or a reset) shows the server closed its side: the accepted socket is gone. */
        int r = tc_test_recv_eof(fd);
        cr_assert(r == 0 || r == -ECONNRESET, "expected the connection closed, got %d", r);
        cr_assert_eq(tc_test_count_fds(), fds_serving + 1,
                     "server holds descriptors after refusing a peer");
        close(fd);
        cr_assert_eq(tc_test_count_fds(), fds_serving);

        /* verify_request saw this very client. */
        cr_assert_eq(tc_test_event_wait(&l.ev, i + 1, TC_TEST_WAIT_MS), 0);
        tc_test_event_log(&l.ev, log, sizeof log);
        snprintf(expect, sizeof expect, "verify:%s", me_s);
        cr_assert_not_null(strstr(log, expect), "log \"%s\" lacks \"%s\"", log, expect);
    }
    /* The listener survived (a double close would have hit a reused number). */
    cr_assert_geq(fcntl(tc_server_fileno(s.srv), F_GETFD), 0);
    cr_assert_eq(tc_test_server_stop(&s), 0);
    char log[4096];
    tc_test_event_log(&l.ev, log, sizeof log);
    cr_assert_null(strstr(log, "setup"), "a handler ran for a refused peer: %s", log);
    cr_assert_null(strstr(log, "handle"), "a handler ran for a refused peer: %s", log);
    cr_assert_eq(tc_test_event_count(&l.ev), 3);
    cr_assert_eq(tc_test_count_fds(), fds0);
}

static int fail_handle(tc_conn *c, void *ctx)
{
    (void)c;
    (void)ctx;
    return -ECONNRESET;
}

Test(server, handler_error_goes_to_log_without_hook, .timeout = 20)
{
    tc_test_event ev;
    tc_test_event_init(&ev);
    tc_server_config cfg = tc_test_config();
    cfg.hooks.log = tc_test_log_hook;
    cfg.hooks.ctx = &ev;
    tc_handler h = TC_HANDLER_INIT;
    h.handle = fail_handle;
    tc_test_server s;
    tc_test_server_start(&s, NULL, &cfg, &h);
    int fd = tc_test_connect_ok(&s.addr);
    int r = tc_test_recv_eof(fd);
    cr_assert(r == 0 || r == -ECONNRESET, "got %d", r);
    close(fd);
    cr_assert_eq(tc_test_event_wait(&ev, 1, TC_TEST_WAIT_MS), 0);
    char log[4096];
    tc_test_event_log(&ev, log, sizeof log);
    cr_assert_eq(strncmp(log, "ERROR:", 6), 0, "log: %s", log);
    cr_assert_not_null(strstr(log, "ECONNRESET"), "log: %s", log);
    cr_assert_eq(tc_test_server_stop(&s), 0);
    tc_test_event_destroy(&ev);
}

static int reenter_handle(tc_conn *c, void *ctx)
{
    tc_server *srv = tc_conn_server(c);
    /* From a handler, the server is being served: both must say so. */
    tc_test_event_postf(ctx, "serve=%s,handle_request=%s", tc_err_name(tc_server_serve_forever(srv)),
                        tc_err_name(tc_server_handle_request(srv)));
    return 0;
}

Test(server, serving_twice_is_busy, .timeout = 20)
{
    tc_test_event ev;
    tc_test_event_init(&ev);
    tc_handler h = TC_HANDLER_INIT;
    h.handle = reenter_handle;
    h.ctx = &ev;
    tc_test_server s;
    tc_test_server_start(&s, NULL, NULL, &h);
    int fd = tc_test_connect_ok(&s.addr);
    cr_assert_eq(tc_test_recv_eof(fd), 0);
    close(fd);
    cr_assert_eq(tc_test_event_wait(&ev, 1, TC_TEST_WAIT_MS), 0);
    assert_log(&ev, "serve=EBUSY,handle_request=EBUSY");
    cr_assert_eq(tc_test_server_stop(&s), 0);
    tc_test_event_destroy(&ev);
}

/* ---- handle_request --------------------------------------------------------------- */

static void count_timeout(tc_server *srv, void *ctx)
{
    (void)srv;
    tc_test_event_post(ctx, "timeout");
}

Test(server, handle_request_times_out, .timeout = 20)
{
    struct life l;
    life_init(&l);
    tc_handler h = life_handler(&l);
    tc_server_config cfg = tc_test_config();
    cfg.timeout_ms = 50;
    cfg.hooks.handle_timeout = count_timeout;
    cfg.hooks.ctx = &l.ev;
    tc_server *srv;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), 0);
    /* The one place where measuring time is the point: the timeout is a lower bound. */
    int64_t t0 = tc_test_now_ns();
    int rc = tc_server_handle_request(srv);
    int64_t elapsed = tc_test_now_ns() - t0;
    cr_assert_eq(rc, -ETIMEDOUT, "got %d %s", rc, tc_err_name(rc));
    cr_assert_geq(elapsed, 50 * 1000000LL, "returned after %lld ns", (long long)elapsed);
    assert_log(&l.ev, "timeout");
    /* Each call that times out calls the hook once. */
    cr_assert_eq(tc_server_handle_request(srv), -ETIMEDOUT);
    assert_log(&l.ev, "timeout,timeout");
    tc_server_destroy(srv);
}

Test(server, handle_request_serves_one, .timeout = 20)
{
    struct life l;
    life_init(&l);
    tc_handler h = life_handler(&l);
    tc_server_config cfg = life_config(&l);
    cfg.timeout_ms = TC_TEST_WAIT_MS; /* bounded: a lost client fails, never hangs */
    tc_test_server s;
    cr_assert_eq(tc_test_server_create(&s, NULL, &cfg, &h), 0);

    /* The client is queued in the backlog before handle_request runs; it
     * half-closes so the inline echo handler finishes. */
    int fd = tc_test_connect_ok(&s.addr);
    cr_assert_eq(tc_test_send_all(fd, "ping", 4), 0);
    cr_assert_eq(shutdown(fd, SHUT_WR), 0);
    cr_assert_eq(tc_server_handle_request(s.srv), 0);
    /* Inline: served completely when it returns. */
    assert_log(&l.ev, "setup,handle,finish");
    char buf[8];
    cr_assert_eq(tc_test_recv_full(fd, buf, sizeof buf), 4);
    cr_assert_eq(memcmp(buf, "ping", 4), 0);
    close(fd);

    /* A pending shutdown makes it return TC_ESHUTDOWN, consuming the request. */
    cr_assert_eq(tc_server_shutdown(s.srv), 0);
    cr_assert_eq(tc_server_handle_request(s.srv), TC_ESHUTDOWN);
    fd = tc_test_connect_ok(&s.addr);
    cr_assert_eq(shutdown(fd, SHUT_WR), 0);
    cr_assert_eq(tc_server_handle_request(s.srv), 0);
    cr_assert_eq(tc_test_recv_eof(fd), 0);
    close(fd);
    assert_log(&l.ev, "setup,handle,finish,setup,handle,finish");
    tc_test_server_stop(&s);
}

Test(server, handle_request_refused_peer_counts, .timeout = 20)
{
    struct life l;
    life_init(&l);
    tc_handler h = life_handler(&l);
    tc_server_config cfg = life_config(&l);
    cfg.timeout_ms = TC_TEST_WAIT_MS;
    cfg.hooks.verify_request = refuse_peer;
    tc_test_server s;
    cr_assert_eq(tc_test_server_create(&s, NULL, &cfg, &h), 0);
    int fd = tc_test_connect_ok(&s.addr);
    cr_assert_eq(tc_server_handle_request(s.srv), 0);
    int r = tc_test_recv_eof(fd);
    cr_assert(r == 0 || r == -ECONNRESET, "got %d", r);
    close(fd);
    cr_assert_eq(tc_test_event_count(&l.ev), 1);
    char log[4096];
    tc_test_event_log(&l.ev, log, sizeof log);
    cr_assert_eq(strncmp(log, "verify:127.0.0.1:", 17), 0, "log: %s", log);
    tc_test_server_stop(&s);
}

/* ---- shutdown --------------------------------------------------------------------- */

Test(server, shutdown_from_other_thread, .timeout = 20)
{
    tc_server_config cfg = tc_test_config();
    cfg.poll_interval_ms = -1; /* no periodic wake-up: only the shutdown can end the wait */
    tc_test_server s;
    tc_test_server_start(&s, NULL, &cfg, NULL);
    tc_test_echo_roundtrip(&s.addr, "serving");
    cr_assert_eq(tc_test_server_wait_done(&s, 0), -ETIMEDOUT, "returned before shutdown");
    cr_assert_eq(tc_server_shutdown(s.srv), 0);
    cr_assert_eq(tc_test_server_wait_done(&s, TC_TEST_WAIT_MS), 0,
                 "serve_forever did not return after shutdown");
    cr_assert_eq(tc_test_server_stop(&s), 0);
}

static tc_server *volatile g_signal_srv;

static void on_sigusr1(int sig)
{
    (void)sig;
    tc_server_shutdown(g_signal_srv);
}

Test(server, shutdown_from_signal_handler, .timeout = 20)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigusr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: poll returns EINTR, the loop must cope */
    cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);

    tc_server_config cfg = tc_test_config();
    cfg.poll_interval_ms = -1;
    tc_test_server s;
    tc_test_server_start(&s, NULL, &cfg, NULL);
    g_signal_srv = s.srv;
    tc_test_echo_roundtrip(&s.addr, "before the signal");
    cr_assert_eq(pthread_kill(s.thread, SIGUSR1), 0);
    cr_assert_eq(tc_test_server_wait_done(&s, TC_TEST_WAIT_MS), 0,
                 "serve_forever did not return after a shutdown from a signal handler");
    cr_assert_eq(tc_test_server_stop(&s), 0);
}

Test(server, shutdown_preserves_errno, .timeout = 10)
{
    tc_server *srv;
    tc_handler h = tc_test_echo_handler();
    cr_assert_eq(tc_server_create(&srv, NULL, &h), 0);
    errno = EXDEV;
    cr_assert_eq(tc_server_shutdown(srv), 0);
    cr_assert_eq(tc_server_shutdown(srv), 0); /* twice: requests do not pile up */
    cr_assert_eq(errno, EXDEV, "a signal handler calling shutdown would clobber errno");
    cr_assert_eq(tc_server_serve_forever(srv), 0);
    tc_server_destroy(srv);
}

struct racer {
    tc_server *srv;
    pthread_barrier_t *barrier;
    int rc;
    atomic_int done;
};

static void *race_serve(void *arg)
{
    struct racer *r = arg;
    if (r->barrier)
        pthread_barrier_wait(r->barrier);
    r->rc = tc_server_serve_forever(r->srv);
    atomic_store(&r->done, 1);
    return NULL;
}

/* serve_forever in a thread, shutdown from here at three moments; serve_forever
 * must return every time (CPython issue #2302: no lost wake-up). */
Test(server, shutdown_race_twenty_servers, .timeout = 60)
{
    for (int variant = 0; variant < 3; variant++) {
        for (int i = 0; i < 20; i++) {
            struct racer r = {0};
            tc_handler h = tc_test_echo_handler();
            tc_server_config cfg = tc_test_config();
            cfg.poll_interval_ms = -1; /* a lost wake-up would hang, not be hidden by polling */
            cr_assert_eq(tc_server_create(&r.srv, &cfg, &h), 0);
            pthread_barrier_t barrier;
            pthread_t t;
            if (variant == 0) {
                /* Before serve_forever starts. */
                cr_assert_eq(tc_server_shutdown(r.srv), 0);
                cr_assert_eq(pthread_create(&t, NULL, race_serve, &r), 0);
            } else if (variant == 1) {
                /* Right after starting the thread, as CPython's test does. */
                cr_assert_eq(pthread_create(&t, NULL, race_serve, &r), 0);
                cr_assert_eq(tc_server_shutdown(r.srv), 0);
            } else {
                /* Released together: shutdown lands just as serve_forever starts. */
                pthread_barrier_init(&barrier, NULL, 2);
                r.barrier = &barrier;
                cr_assert_eq(pthread_create(&t, NULL, race_serve, &r), 0);
                pthread_barrier_wait(&barrier);
                cr_assert_eq(tc_server_shutdown(r.srv), 0);
            }
            struct timespec dl;
            clock_gettime(CLOCK_REALTIME, &dl);
            dl.tv_sec += TC_TEST_WAIT_MS / 1000 + 1;
            int jr = pthread_timedjoin_np(t, NULL, &dl);
            cr_assert_eq(jr, 0, "variant %d, server %d: serve_forever did not return", variant, i);
            cr_assert_eq(r.rc, 0);
            if (variant == 2)
                pthread_barrier_destroy(&barrier);
            tc_server_destroy(r.srv);
        }
    }
}

Test(server, serve_again_after_shutdown, .timeout = 30)
{
    tc_server_config cfg = tc_test_config();
    cfg.poll_interval_ms = -1;
    tc_test_server s;
    cr_assert_eq(tc_test_server_create(&s, NULL, &cfg, NULL), 0);

    /* A shutdown before the first serve: it returns at once and consumes it. */
    cr_assert_eq(tc_server_shutdown(s.srv), 0);
    tc_test_server_run(&s);
    cr_assert_eq(tc_test_server_join(&s), 0);

    /* The second serve serves: the request was consumed. */
    tc_test_server_run(&s);
    tc_test_echo_roundtrip(&s.addr, "second serve");
    cr_assert_eq(tc_test_server_wait_done(&s, 0), -ETIMEDOUT, "second serve returned on its own");
    cr_assert_eq(tc_server_shutdown(s.srv), 0);
    cr_assert_eq(tc_test_server_join(&s), 0);

    /* And a third time, after a shutdown that stopped a running loop. */
    tc_test_server_run(&s);
    tc_test_echo_roundtrip(&s.addr, "third serve");
    cr_assert_eq(tc_test_server_wait_done(&s, 0), -ETIMEDOUT, "third serve returned on its own");
    cr_assert_eq(tc_test_server_stop(&s), 0);
}

/* ---- resources --------------------------------------------------------------------- */

Test(server, destroy_without_serving, .timeout = 10)
{
    int fds0 = tc_test_count_fds();
    tc_server *srv;
    tc_handler h = tc_test_echo_handler();
    cr_assert_eq(tc_server_create(&srv, NULL, &h), 0);
    cr_assert_gt(tc_test_count_fds(), fds0);
    tc_server_destroy(srv);
    cr_assert_eq(tc_test_count_fds(), fds0);
    tc_server_destroy(NULL); /* a no-op */
    cr_assert_eq(tc_test_count_fds(), fds0);
}

Test(server, destroy_releases_every_fd, .timeout = 30)
{
    char dir[64], listen[140];
    tc_test_tmpdir(dir, sizeof dir);
    snprintf(listen, sizeof listen, "unix:%s/s", dir);
    int threads0 = tc_test_count_threads();
    int fds0 = tc_test_count_fds();

    tc_test_server tcp, un;
    tc_test_server_start(&tcp, NULL, NULL, NULL);
    tc_test_server_start(&un, listen, NULL, NULL);
    for (int i = 0; i < 5; i++) {
        tc_test_echo_roundtrip(&tcp.addr, "tcp");
        tc_test_echo_roundtrip(&un.addr, "unix");
    }
    cr_assert_eq(tc_test_server_stop(&un), 0);
    cr_assert_eq(tc_test_server_stop(&tcp), 0);

    cr_assert_eq(tc_test_count_fds(), fds0, "descriptors leaked");
    cr_assert_eq(tc_test_wait_threads(threads0, TC_TEST_WAIT_MS), threads0, "threads leaked");
    tc_test_rmtree(dir);
}

Test(server, failing_creates_leak_nothing, .timeout = 60)
{
    char dir[64], file[128], file_listen[140], long_listen[300] = {0}; /* 0: NUL after the x's */
    tc_test_tmpdir(dir, sizeof dir);
    snprintf(file, sizeof file, "%s/taken", dir);
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fclose(f);
    snprintf(file_listen, sizeof file_listen, "unix:%s", file);
    snprintf(long_listen, sizeof long_listen, "unix:%s/", dir);
    memset(long_listen + strlen(long_listen), 'x', 150);
    long_listen[sizeof long_listen - 1] = '\0';

    tc_test_server live;
    tc_test_server_start(&live, NULL, NULL, NULL);
    int nomode = unavailable_mode();

    int fds0 = tc_test_count_fds();
    int threads0 = tc_test_count_threads();
    tc_handler h = tc_test_echo_handler();
    /* Each kind fails at a different step: address parsing, bind, config
     * validation, an existing unix path, a too long path, the mode. */
    const struct {
        const char *listen;
        int backlog, mode, expect;
    } kinds[] = {
        {"127.0.0.1:99999", 0, TC_MODE_INLINE, TC_EBADADDR},
        {live.addr_str, 0, TC_MODE_INLINE, -EADDRINUSE},
        {NULL, -1, TC_MODE_INLINE, TC_EBADCONFIG},
        {file_listen, 0, TC_MODE_INLINE, -EADDRINUSE},
        {long_listen, 0, TC_MODE_INLINE, -ENAMETOOLONG},
        {NULL, 0, nomode, TC_ENOMODE},
        {"[::1]", 0, TC_MODE_INLINE, TC_EBADADDR},
    };
    for (int i = 0; i < 1024; i++) {
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            if (kinds[k].mode < 0)
                continue; /* every mode available: no ENOMODE case */
            tc_server_config cfg = tc_test_config();
            cfg.listen = kinds[k].listen;
            cfg.backlog = kinds[k].backlog;
            cfg.mode = (tc_mode)kinds[k].mode;
            tc_server *srv = SENTINEL;
            int rc = tc_server_create(&srv, &cfg, &h);
            if (rc != kinds[k].expect || srv != SENTINEL)
                cr_assert_fail("round %d kind %zu: rc %d (%s), expected %s", i, k, rc,
                               tc_err_name(rc), tc_err_name(kinds[k].expect));
        }
    }
    cr_assert_eq(tc_test_count_fds(), fds0, "failed creates leaked descriptors");
    cr_assert_eq(tc_test_count_threads(), threads0);
    /* The live server was not disturbed. */
    tc_test_echo_roundtrip(&live.addr, "undisturbed");
    cr_assert_eq(tc_test_server_stop(&live), 0);
    struct stat st;
    cr_assert_eq(lstat(file, &st), 0, "the file in the way was removed");
    tc_test_rmtree(dir);
}

/* ---- configuration ------------------------------------------------------------------ */

/* Field by field: padding bytes are not part of a struct's value (an assignment
 * need not copy them), so memcmp could fail on equal configs. */
static void assert_codec_eq(const tc_codec *a, const tc_codec *b, const char *what)
{
    cr_assert_eq(a->kind, b->kind, "%s: codec.kind", what);
    cr_assert_eq(a->max_frame, b->max_frame, "%s: codec.max_frame", what);
    for (size_t i = 0; i < sizeof a->delim; i++)
        cr_assert_eq(a->delim[i], b->delim[i], "%s: codec.delim[%zu]", what, i);
    cr_assert_eq(a->delim_len, b->delim_len, "%s: codec.delim_len", what);
    cr_assert_eq(a->prefix_width, b->prefix_width, "%s: codec.prefix_width", what);
    cr_assert_eq(a->byte_order, b->byte_order, "%s: codec.byte_order", what);
    cr_assert(a->scan == b->scan, "%s: codec.scan", what);
    cr_assert(a->scan_ctx == b->scan_ctx, "%s: codec.scan_ctx", what);
}

static void assert_config_eq(const tc_server_config *a, const tc_server_config *b,
                             const char *what)
{
    /* A field added after ring_accept must be compared here too. */
    cr_assert_leq(sizeof *a, offsetof(tc_server_config, ring_accept) + sizeof(int) +
                                 _Alignof(tc_server_config) - 1,
                  "tc_server_config grew: compare the new field");
    cr_assert(a->listen == b->listen, "%s: listen", what);
    cr_assert_eq(a->mode, b->mode, "%s: mode", what);
    cr_assert_eq(a->backlog, b->backlog, "%s: backlog", what);
    cr_assert_eq(a->reuse_addr, b->reuse_addr, "%s: reuse_addr", what);
    cr_assert_eq(a->reuse_port, b->reuse_port, "%s: reuse_port", what);
    cr_assert_eq(a->timeout_ms, b->timeout_ms, "%s: timeout_ms", what);
    cr_assert_eq(a->poll_interval_ms, b->poll_interval_ms, "%s: poll_interval_ms", what);
    cr_assert_eq(a->conn_timeout_ms, b->conn_timeout_ms, "%s: conn_timeout_ms", what);
    assert_codec_eq(&a->codec, &b->codec, what);
    cr_assert_eq(a->idle_timeout_ms, b->idle_timeout_ms, "%s: idle_timeout_ms", what);
    cr_assert_eq(a->max_conns, b->max_conns, "%s: max_conns", what);
    cr_assert_eq(a->workers, b->workers, "%s: workers", what);
    cr_assert_eq(a->queue_len, b->queue_len, "%s: queue_len", what);
    cr_assert_eq(a->drain_timeout_ms, b->drain_timeout_ms, "%s: drain_timeout_ms", what);
    cr_assert_eq(a->block_on_close, b->block_on_close, "%s: block_on_close", what);
    cr_assert_eq(a->thread_stack_size, b->thread_stack_size, "%s: thread_stack_size", what);
    cr_assert(a->hooks.verify_request == b->hooks.verify_request, "%s: hooks.verify_request", what);
    cr_assert(a->hooks.handle_error == b->hooks.handle_error, "%s: hooks.handle_error", what);
    cr_assert(a->hooks.handle_timeout == b->hooks.handle_timeout, "%s: hooks.handle_timeout", what);
    cr_assert(a->hooks.service_actions == b->hooks.service_actions, "%s: hooks.service_actions",
              what);
    cr_assert(a->hooks.log == b->hooks.log, "%s: hooks.log", what);
    cr_assert(a->hooks.ctx == b->hooks.ctx, "%s: hooks.ctx", what);
    cr_assert_eq(a->adopt_fd, b->adopt_fd, "%s: adopt_fd", what);
    cr_assert_eq(a->listen_fd, b->listen_fd, "%s: listen_fd", what);
    cr_assert_eq(a->proxy_protocol, b->proxy_protocol, "%s: proxy_protocol", what);
    cr_assert(a->proxy_trusted == b->proxy_trusted, "%s: proxy_trusted", what);
    cr_assert_eq(a->proxy_timeout_ms, b->proxy_timeout_ms, "%s: proxy_timeout_ms", what);
    cr_assert(a->ws == b->ws, "%s: ws", what);
    cr_assert_eq(a->send_high_water, b->send_high_water, "%s: send_high_water", what);
    cr_assert_eq(a->send_low_water, b->send_low_water, "%s: send_low_water", what);
    cr_assert(a->listen_list == b->listen_list, "%s: listen_list", what);
    cr_assert_eq(a->listen_count, b->listen_count, "%s: listen_count", what);
    cr_assert(a->listen_fds == b->listen_fds, "%s: listen_fds", what);
    cr_assert_eq(a->listen_fd_count, b->listen_fd_count, "%s: listen_fd_count", what);
    cr_assert(a->transport == b->transport, "%s: transport", what);
    cr_assert_eq(a->backend, b->backend, "%s: backend", what);
    cr_assert_eq(a->ring_accept, b->ring_accept, "%s: ring_accept", what);
}

/* tc_server_config_init() copies TC_SERVER_CONFIG_INIT, over whatever was there. */
Test(server, config_init_equals_the_macro, .timeout = 10)
{
    tc_server_config m = TC_SERVER_CONFIG_INIT, b;
    memset(&b, 0x5A, sizeof b);
    tc_server_config_init(&b);
    assert_config_eq(&b, &m, "tc_server_config_init() vs TC_SERVER_CONFIG_INIT");
}

Test(server, config_init_and_defaults, .timeout = 10)
{
    tc_server_config a = TC_SERVER_CONFIG_INIT, b, z;
    memset(&b, 0x5A, sizeof b);
    tc_server_config_init(&b);
    memset(&z, 0, sizeof z);
    assert_config_eq(&a, &z, "TC_SERVER_CONFIG_INIT is not all defaults (= {0})");
    assert_config_eq(&b, &z, "tc_server_config_init is not all defaults (= {0})");
    tc_server_config_init(NULL); /* a no-op */
    tc_handler h = TC_HANDLER_INIT, hz;
    memset(&hz, 0, sizeof hz);
    cr_assert_eq(memcmp(&h, &hz, sizeof h), 0);

    /* = {0} is a working config; the listen string is copied. */
    char listen[32] = "127.0.0.1:0";
    z.listen = listen;
    h.handle = tc_test_echo_handle;
    tc_test_server s;
    tc_test_server_start(&s, NULL, &z, &h);
    memset(listen, 'X', sizeof listen - 1);
    tc_test_echo_roundtrip(&s.addr, "zero config");
    cr_assert_eq(tc_test_server_stop(&s), 0);
}

/* Every limit has a finite default; a negative value asks for none, explicitly. */
Test(server, config_negative_limits_mean_none, .timeout = 10)
{
    tc_handler h = tc_test_echo_handler();
    for (int mode = TC_MODE_INLINE; mode <= TC_MODE_POOL; mode++) {
        if (!tc_mode_available((tc_mode)mode))
            continue;
        tc_server_config cfg = tc_test_config();
        cfg.mode = (tc_mode)mode;
        cfg.conn_timeout_ms = -1;
        cfg.idle_timeout_ms = -5;
        cfg.max_conns = -1;
        tc_test_server s;
        tc_test_server_start(&s, NULL, &cfg, &h);
        tc_test_echo_roundtrip(&s.addr, tc_mode_name((tc_mode)mode));
        cr_assert_eq(tc_test_server_stop(&s), 0);
    }
}

/* Pool: connections are not bounded by the workers. With max_conns unlimited
 * and two workers, twenty clients that connect and each send one message
 * (none closes before all are answered) are all answered: an idle
 * message-style connection holds no worker. */
static int echo_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    (void)ctx;
    ssize_t n = tc_conn_send(c, msg, len);
    return n < 0 ? (int)n : 0;
}

Test(server, config_unlimited_max_conns_pool_serves_beyond_workers, .timeout = 20)
{
    if (!tc_mode_available(TC_MODE_POOL))
        cr_skip("pool mode is not available in this build");
    tc_server_config cfg = tc_test_config();
    cfg.mode = TC_MODE_POOL;
    cfg.max_conns = -1;
    cfg.workers = 2;
    tc_handler h = TC_HANDLER_INIT;
    h.on_message = echo_message;
    tc_test_server s;
    tc_test_server_start(&s, NULL, &cfg, &h);
    enum { N = 20 };
    int fd[N];
    for (int i = 0; i < N; i++) {
        fd[i] = tc_test_connect_ok(&s.addr);
        char c = (char)('a' + i);
        cr_assert_eq(tc_test_send_all(fd[i], &c, 1), 0);
    }
    for (int i = 0; i < N; i++) {
        char c = 0;
        cr_assert_eq(tc_test_recv_full(fd[i], &c, 1), 1, "client %d not answered", i);
        cr_assert_eq(c, 'a' + i, "client %d: got '%c'", i, c);
    }
    tc_stats st;
    cr_assert_eq(tc_server_stats(s.srv, &st), 0);
    cr_assert_eq(st.accepted, N);
    cr_assert_eq(st.peak_active, N, "all %d connections live at once", N);
    for (int i = 0; i < N; i++)
        close(fd[i]);
    cr_assert_eq(tc_test_server_stop(&s), 0);
}

Test(server, config_null_handler, .timeout = 10)
{
    tc_server *srv = SENTINEL;
    tc_server_config cfg = tc_test_config();
    cr_assert_eq(tc_server_create(&srv, &cfg, NULL), -EINVAL);
    cr_assert_eq(srv, SENTINEL);
    tc_handler h = tc_test_echo_handler();
    cr_assert_eq(tc_server_create(NULL, &cfg, &h), -EINVAL);
}

/* Create with a bad config: the code, *out untouched, and a log line naming
 * the field, which tc_last_error_detail() repeats word for word. */
static void expect_bad_config(tc_server_config cfg, const tc_handler *h, int code,
                              const char *field)
{
    tc_test_event ev;
    tc_test_event_init(&ev);
    cfg.hooks.log = tc_test_log_hook;
    cfg.hooks.ctx = &ev;
    tc_server *srv = SENTINEL;
    int rc = tc_server_create(&srv, &cfg, h);
    cr_assert_eq(rc, code, "%s: got %d %s, expected %s", field, rc, tc_err_name(rc),
                 tc_err_name(code));
    cr_assert_eq(srv, SENTINEL, "%s: out written on failure", field);
    char log[4096];
    tc_test_event_log(&ev, log, sizeof log);
    cr_assert_geq(tc_test_event_count(&ev), 1, "%s: nothing logged", field);
    cr_assert_eq(strncmp(log, "ERROR:", 6), 0, "%s: log \"%s\"", field, log);
    cr_assert_not_null(strstr(log, field), "log \"%s\" does not name %s", log, field);
    cr_assert_str_eq(tc_last_error_detail(), log + 6, "%s: the detail differs from the log line",
                     field);
    tc_test_event_destroy(&ev);
}

/* Create with a bad config and no hooks at all: the code, and the thread's
 * error detail naming the field (the same text a log hook would get). */
static void expect_detail(tc_server_config cfg, const tc_handler *h, int code, const char *text)
{
    tc_server *srv = SENTINEL;
    int rc = tc_server_create(&srv, &cfg, h);
    cr_assert_eq(rc, code, "%s: got %d %s, expected %s", text, rc, tc_err_name(rc),
                 tc_err_name(code));
    cr_assert_eq(srv, SENTINEL, "%s: out written on failure", text);
    const char *detail = tc_last_error_detail();
    cr_assert_not_null(strstr(detail, text), "detail \"%s\" lacks \"%s\"", detail, text);
}

static int noop_setup(tc_conn *c, void *ctx)
{
    (void)c;
    (void)ctx;
    return 0;
}

Test(server, config_handler_without_handle, .timeout = 10)
{
    tc_handler h = TC_HANDLER_INIT;
    h.setup = noop_setup;
    expect_bad_config(tc_test_config(), &h, TC_EBADCONFIG, "handle");
}

Test(server, config_negative_backlog, .timeout = 10)
{
    tc_server_config cfg = tc_test_config();
    cfg.backlog = -1;
    tc_handler h = tc_test_echo_handler();
    expect_bad_config(cfg, &h, TC_EBADCONFIG, "backlog");
}

Test(server, config_unavailable_mode, .timeout = 10)
{
    cr_assert(tc_mode_available(TC_MODE_INLINE), "the default mode must exist");
    int m = unavailable_mode();
    if (m < 0)
        cr_skip("every mode is available in this build");
    tc_server_config cfg = tc_test_config();
    cfg.mode = (tc_mode)m;
    tc_handler h = tc_test_echo_handler();
    expect_bad_config(cfg, &h, TC_ENOMODE, tc_mode_name((tc_mode)m));
}

Test(server, config_other_bad_fields, .timeout = 10)
{
    tc_handler h = tc_test_echo_handler();
    tc_server_config cfg;

    cfg = tc_test_config();
    cfg.mode = (tc_mode)42;
    expect_bad_config(cfg, &h, TC_EBADCONFIG, "mode");
    cfg = tc_test_config();
    cfg.mode = (tc_mode)-1;
    expect_bad_config(cfg, &h, TC_EBADCONFIG, "mode");
    cfg = tc_test_config();
    cfg.reuse_addr = 2;
    expect_bad_config(cfg, &h, TC_EBADCONFIG, "reuse_addr");
    cfg = tc_test_config();
    cfg.reuse_port = -7;
    expect_bad_config(cfg, &h, TC_EBADCONFIG, "reuse_port");
    cfg = tc_test_config();
    cfg.ring_accept = 3;
    expect_bad_config(cfg, &h, TC_EBADCONFIG, "ring_accept");
    cfg = tc_test_config();
    cfg.timeout_ms = -1;
    expect_bad_config(cfg, &h, TC_EBADCONFIG, "timeout_ms");
    /* A bad listen address is named by its text. */
    cfg = tc_test_config();
    cfg.listen = "127.0.0.1:65536";
    expect_bad_config(cfg, &h, TC_EBADADDR, "127.0.0.1:65536");
}

Test(server, config_errors_named_without_a_log_hook, .timeout = 20)
{
    tc_handler h = tc_test_echo_handler();
    tc_server_config cfg;

    cfg = tc_test_config();
    cfg.workers = -1;
    expect_detail(cfg, &h, TC_EBADCONFIG, "invalid configuration: workers is negative");
    cfg = tc_test_config();
    cfg.backlog = -5;
    expect_detail(cfg, &h, TC_EBADCONFIG, "invalid configuration: backlog is negative");
    cfg = tc_test_config();
    cfg.reuse_port = 9;
    expect_detail(cfg, &h, TC_EBADCONFIG, "invalid configuration: reuse_port is not TC_DEFAULT");
    cfg = tc_test_config();
    cfg.thread_stack_size = 1;
    expect_detail(cfg, &h, TC_EBADCONFIG, "invalid configuration: thread_stack_size is below");
    cfg = tc_test_config();
    cfg.proxy_trusted = "10.0.0.1, 10.0.0.0/99";
    expect_detail(cfg, &h, TC_EBADCONFIG,
                  "invalid configuration: proxy_trusted entry 2 of \"10.0.0.1, 10.0.0.0/99\"");
    cfg = tc_test_config();
    cfg.adopt_fd = TC_ON;
    cfg.listen = NULL;
    cfg.listen_fd = STDERR_FILENO; /* open, but no socket */
    expect_detail(cfg, &h, TC_EBADCONFIG, "invalid configuration: listen_fd 2 is not a socket");
    /* Found by the mode, once the server is bound. */
    cfg = tc_test_config();
    cfg.mode = TC_MODE_POOL;
    cfg.workers = INT_MAX;
    expect_detail(cfg, &h, TC_EBADCONFIG, "invalid configuration: workers + queue_len overflows");
    if (tc_mode_available(TC_MODE_EVENT)) {
        cfg = tc_test_config();
        cfg.mode = TC_MODE_EVENT;
        expect_detail(cfg, &h, TC_EBADCONFIG, "invalid configuration: event mode runs message-style");
    }
    /* The listen address: one that does not parse, and one that is taken. */
    cfg = tc_test_config();
    cfg.listen = "127.0.0.1:99999";
    expect_detail(cfg, &h, TC_EBADADDR, "listen address \"127.0.0.1:99999\": malformed address");
    tc_test_server a;
    tc_test_server_start(&a, "127.0.0.1:0", NULL, NULL);
    char busy[TC_ADDR_STRLEN + 64];
    snprintf(busy, sizeof busy, "cannot listen on %s: Address already in use", a.addr_str);
    cfg = tc_test_config();
    cfg.listen = a.addr_str;
    expect_detail(cfg, &h, -EADDRINUSE, busy);
    cr_assert_eq(tc_test_server_stop(&a), 0);

    /* The next create empties it first: a success leaves "". */
    tc_server *srv;
    cfg = tc_test_config();
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), 0);
    cr_assert_str_eq(tc_last_error_detail(), "");
    tc_server_destroy(srv);
}

Test(server, null_arguments, .timeout = 10)
{
    tc_addr a;
    cr_assert_eq(tc_server_serve_forever(NULL), -EINVAL);
    cr_assert_eq(tc_server_handle_request(NULL), -EINVAL);
    cr_assert_eq(tc_server_shutdown(NULL), -EINVAL);
    cr_assert_eq(tc_server_address(NULL, &a), -EINVAL);
    cr_assert_eq(tc_server_fileno(NULL), -EINVAL);
    tc_server *srv;
    tc_handler h = tc_test_echo_handler();
    cr_assert_eq(tc_server_create(&srv, NULL, &h), 0);
    cr_assert_eq(tc_server_address(srv, NULL), -EINVAL);
    tc_server_destroy(srv);
}

Test(server, mode_names_round_trip, .timeout = 10)
{
    static const char *const names[] = {"inline", "threading", "forking", "pool", "event"};
    for (int m = TC_MODE_INLINE; m <= TC_MODE_EVENT; m++) {
        const char *n = tc_mode_name((tc_mode)m);
        cr_assert_str_eq(n, names[m]);
        tc_mode out = (tc_mode)-1;
        cr_assert_eq(tc_mode_parse(n, &out), 0);
        cr_assert_eq(out, (tc_mode)m);
    }
    cr_assert_str_eq(tc_mode_name((tc_mode)99), "unknown");
    cr_assert_str_eq(tc_mode_name((tc_mode)-1), "unknown");
    tc_mode out = TC_MODE_POOL;
    cr_assert_eq(tc_mode_parse("bogus", &out), TC_EBADCONFIG);
    cr_assert_eq(tc_mode_parse("", &out), TC_EBADCONFIG);
    cr_assert_eq(tc_mode_parse("unknown", &out), TC_EBADCONFIG);
    cr_assert_eq(out, TC_MODE_POOL, "out written on failure");
    cr_assert_eq(tc_mode_parse(NULL, &out), -EINVAL);
    cr_assert_eq(tc_mode_parse("inline", NULL), -EINVAL);
    cr_assert_eq(tc_mode_available((tc_mode)99), 0);
    cr_assert_eq(tc_mode_available((tc_mode)-1), 0);
}

/* ---- serving ------------------------------------------------------------------------ */

static void echo_three_then_stop(const char *listen)
{
    int fds0 = tc_test_count_fds();
    tc_test_server s;
    tc_test_server_start(&s, listen, NULL, NULL);
    tc_test_echo_roundtrip(&s.addr, "one");
    tc_test_echo_roundtrip(&s.addr, "two, a little longer");
    tc_test_echo_roundtrip(&s.addr, "three\nwith\nlines\n");
    cr_assert_eq(tc_test_server_stop(&s), 0);
    cr_assert_eq(tc_test_count_fds(), fds0);
}

Test(server, three_echoes_tcp, .timeout = 20)
{
    echo_three_then_stop("127.0.0.1:0");
}

Test(server, three_echoes_unix, .timeout = 20)
{
    char dir[64], listen[140];
    tc_test_tmpdir(dir, sizeof dir);
    snprintf(listen, sizeof listen, "unix:%s/echo.sock", dir);
    echo_three_then_stop(listen);
    tc_test_rmtree(dir);
}

/* The same echo handler in every mode that shares the blocking handler API
 * (the event mode runs message-style handlers); modes this build lacks are
 * skipped, so the test follows the library as modes are added. */
ParameterizedTestParameters(server, echo_in_every_mode)
{
    static tc_mode modes[] = {TC_MODE_INLINE, TC_MODE_THREADING, TC_MODE_FORKING, TC_MODE_POOL};
    return cr_make_param_array(tc_mode, modes, sizeof modes / sizeof modes[0]);
}

ParameterizedTest(tc_mode *mode, server, echo_in_every_mode, .timeout = 30)
{
    if (!tc_mode_available(*mode))
        cr_skip("mode %s is not available in this build", tc_mode_name(*mode));
    int fds0 = tc_test_count_fds();
    int threads0 = tc_test_count_threads();
    tc_server_config cfg = tc_test_config();
    cfg.mode = *mode;
    tc_test_server s;
    tc_test_server_start(&s, NULL, &cfg, NULL);
    tc_test_echo_roundtrip(&s.addr, "one");
    tc_test_echo_roundtrip(&s.addr, "two");
    tc_test_echo_roundtrip(&s.addr, "three");
    cr_assert_eq(tc_test_server_stop(&s), 0);
    cr_assert_eq(tc_test_count_fds(), fds0, "%s: descriptors leaked", tc_mode_name(*mode));
    cr_assert_eq(tc_test_wait_threads(threads0, TC_TEST_WAIT_MS), threads0, "%s: threads leaked",
                 tc_mode_name(*mode));
}

struct serial {
    tc_test_event ev;
    tc_test_event second_connected;
    pthread_mutex_t mu;
    int active, max_active, n;
    int pending_seen; /* the first handler saw the second client waiting in the backlog */
};

static int serial_setup(tc_conn *c, void *ctx)
{
    struct serial *s = ctx;
    pthread_mutex_lock(&s->mu);
    int idx = s->n++;
    if (++s->active > s->max_active)
        s->max_active = s->active;
    pthread_mutex_unlock(&s->mu);
    tc_conn_set_data(c, (void *)(intptr_t)idx);
    tc_test_event_postf(&s->ev, "start%d", idx);
    return 0;
}

static int serial_handle(tc_conn *c, void *ctx)
{
    struct serial *s = ctx;
    if ((intptr_t)tc_conn_data(c) == 0) {
        /* While this handler runs, the second client connects: it must wait,
         * unaccepted, in the listen queue (the listener polls readable). */
        if (tc_test_event_wait(&s->second_connected, 1, TC_TEST_WAIT_MS) == 0) {
            struct pollfd p = {.fd = tc_server_fileno(tc_conn_server(c)), .events = POLLIN};
            s->pending_seen = poll(&p, 1, TC_TEST_WAIT_MS) == 1 && (p.revents & POLLIN);
        }
    }
    return tc_test_echo_handle(c, NULL);
}

static int serial_finish(tc_conn *c, void *ctx)
{
    struct serial *s = ctx;
    pthread_mutex_lock(&s->mu);
    s->active--;
    pthread_mutex_unlock(&s->mu);
    tc_test_event_postf(&s->ev, "finish%d", (int)(intptr_t)tc_conn_data(c));
    return 0;
}

Test(server, inline_serves_one_at_a_time, .timeout = 30)
{
    struct serial st;
    memset(&st, 0, sizeof st);
    tc_test_event_init(&st.ev);
    tc_test_event_init(&st.second_connected);
    pthread_mutex_init(&st.mu, NULL);
    tc_handler h = TC_HANDLER_INIT;
    h.setup = serial_setup;
    h.handle = serial_handle;
    h.finish = serial_finish;
    h.ctx = &st;
    tc_server_config cfg = tc_test_config();
    cfg.mode = TC_MODE_INLINE;
    tc_test_server s;
    tc_test_server_start(&s, NULL, &cfg, &h);

    int a = tc_test_connect_ok(&s.addr);
    cr_assert_eq(tc_test_send_all(a, "A", 1), 0);
    cr_assert_eq(tc_test_event_wait(&st.ev, 1, TC_TEST_WAIT_MS), 0, "first handler never started");
    int b = tc_test_connect_ok(&s.addr);
    cr_assert_eq(tc_test_send_all(b, "B", 1), 0);
    cr_assert_eq(shutdown(b, SHUT_WR), 0);
    tc_test_event_post(&st.second_connected, NULL);

    char buf[4];
    cr_assert_eq(shutdown(a, SHUT_WR), 0);
    cr_assert_eq(tc_test_recv_full(a, buf, sizeof buf), 1);
    cr_assert_eq(buf[0], 'A');
    cr_assert_eq(tc_test_recv_full(b, buf, sizeof buf), 1);
    cr_assert_eq(buf[0], 'B');
    close(a);
    close(b);
    cr_assert_eq(tc_test_event_wait(&st.ev, 4, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(tc_test_server_stop(&s), 0);

    assert_log(&st.ev, "start0,finish0,start1,finish1");
    cr_assert_eq(st.max_active, 1, "%d handlers ran at once", st.max_active);
    cr_assert(st.pending_seen, "the second client was not left waiting in the backlog");
}

static void count_service(tc_server *srv, void *ctx)
{
    (void)srv;
    tc_test_event_post(ctx, "service");
}

static int post_handle(tc_conn *c, void *ctx)
{
    tc_test_event_post(ctx, "handle");
    return tc_test_echo_handle(c, NULL);
}

Test(server, service_actions_after_each_turn, .timeout = 20)
{
    tc_test_event ev;
    tc_test_event_init(&ev);
    tc_server_config cfg = tc_test_config();
    cfg.poll_interval_ms = -1; /* turns happen only for events */
    cfg.hooks.service_actions = count_service;
    cfg.hooks.ctx = &ev;
    tc_handler h = TC_HANDLER_INIT;
    h.handle = post_handle;
    h.ctx = &ev;
    tc_test_server s;
    tc_test_server_start(&s, NULL, &cfg, &h);
    tc_test_echo_roundtrip(&s.addr, "turn one");
    cr_assert_eq(tc_test_event_wait(&ev, 2, TC_TEST_WAIT_MS), 0, "no service_actions after a turn");
    assert_log(&ev, "handle,service");
    tc_test_echo_roundtrip(&s.addr, "turn two");
    cr_assert_eq(tc_test_event_wait(&ev, 4, TC_TEST_WAIT_MS), 0);
    assert_log(&ev, "handle,service,handle,service");
    cr_assert_eq(tc_test_server_stop(&s), 0);
    tc_test_event_destroy(&ev);
}

Test(server, service_actions_when_idle, .timeout = 20)
{
    tc_test_event ev;
    tc_test_event_init(&ev);
    tc_server_config cfg = tc_test_config();
    cfg.poll_interval_ms = 10;
    cfg.hooks.service_actions = count_service;
    cfg.hooks.ctx = &ev;
    tc_test_server s;
    tc_test_server_start(&s, NULL, &cfg, NULL);
    /* No client at all: the poll interval alone drives the turns. */
    cr_assert_eq(tc_test_event_wait(&ev, 3, TC_TEST_WAIT_MS), 0,
                 "service_actions not called while idle");
    cr_assert_eq(tc_test_server_stop(&s), 0);
    tc_test_event_destroy(&ev);
}

/* A connection ending at the connection limit wakes the loop; after that
 * wake-up the loop must sleep again, not spin on a readable descriptor. */
Test(server, loop_sleeps_after_limit_wakeup, .timeout = 20)
{
    if (!tc_mode_available(TC_MODE_THREADING))
        cr_skip("threading mode is not available in this build");
    tc_test_event ev;
    tc_test_event_init(&ev);
    tc_server_config cfg = tc_test_config();
    cfg.mode = TC_MODE_THREADING;
    cfg.max_conns = 1;         /* every connection reaches the limit */
    cfg.poll_interval_ms = -1; /* turns happen only for events */
    cfg.hooks.service_actions = count_service;
    cfg.hooks.ctx = &ev;
    tc_test_server s;
    tc_test_server_start(&s, NULL, &cfg, NULL);
    tc_test_echo_roundtrip(&s.addr, "first");
    tc_test_echo_roundtrip(&s.addr, "second");
    int turns = tc_test_event_count(&ev);
    /* Absence can only be observed over a window: an idle loop does not turn
     * 1000 times in 200 ms, a spinning one does in a few milliseconds. */
    int spun = tc_test_event_wait(&ev, turns + 1000, tc_test_ms(200));
    cr_assert_eq(spun, -ETIMEDOUT, "the idle loop spun: %d turns after %d", tc_test_event_count(&ev) - turns, turns);
    cr_assert_eq(tc_test_server_stop(&s), 0);
    tc_test_event_destroy(&ev);
}
