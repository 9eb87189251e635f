/* SPDX-License-Identifier: MIT */
/* tc_conn and tc_dial: accessors in a handler, EOF, timeouts, send_all under
 * a storm of signals, the deadline of every send to a reader that keeps up,
 * what a timed-out send sent (tc_conn_last_sent), sends to a closed peer (no
 * SIGPIPE), dialling TCP, IPv6 and unix servers, refusals and bad
 * addresses. Loopback only. */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "helpers.h"

static void addr_str(const tc_addr *a, char *buf)
{
    cr_assert_not_null(a);
    int n = tc_addr_format(a, buf, TC_ADDR_STRLEN);
    cr_assert_gt(n, 0, "format: %s", tc_err_name(n));
}

static void sock_name(int fd, char *buf)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    tc_addr a;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    cr_assert_eq(tc_addr_from_sockaddr(&a, (struct sockaddr *)&ss, len), 0);
    addr_str(&a, buf);
}

/* ---- accessors ------------------------------------------------------------------- */

struct seen {
    tc_test_event ev;
    char peer[TC_ADDR_STRLEN];
    char local[TC_ADDR_STRLEN];
    tc_server *server;
    int fd_type;        /* SO_TYPE of tc_conn_fd */
    int data_ok;        /* set_data / data round trip */
    char misuse[256];   /* codes of invalid calls on a live channel */
};

static int seen_handle(tc_conn *c, void *ctx)
{
    struct seen *s = ctx;
    if (tc_addr_format(tc_conn_peer(c), s->peer, sizeof s->peer) < 0)
        strcpy(s->peer, "?");
    if (tc_addr_format(tc_conn_local(c), s->local, sizeof s->local) < 0)
        strcpy(s->local, "?");
    s->server = tc_conn_server(c);
    socklen_t len = sizeof s->fd_type;
    if (getsockopt(tc_conn_fd(c), SOL_SOCKET, SO_TYPE, &s->fd_type, &len) < 0)
        s->fd_type = -1;
    s->data_ok = tc_conn_data(c) == NULL;
    tc_conn_set_data(c, s);
    s->data_ok = s->data_ok && tc_conn_data(c) == s;
    char b[1];
    snprintf(s->misuse, sizeof s->misuse, "read0=%zd,readnull=%s,sendnull=%s,send0=%zd,timeout=%d",
             tc_conn_read(c, b, 0), tc_err_name((int)tc_conn_read(c, NULL, 1)),
             tc_err_name((int)tc_conn_send_all(c, NULL, 1)), tc_conn_send_all(c, b, 0),
             tc_conn_set_timeout(c, TC_TEST_WAIT_MS));
    tc_test_event_post(&s->ev, "handled");
    return tc_test_echo_handle(c, NULL);
}

static void check_accessors(const char *listen, int unix_family)
{
    struct seen s;
    memset(&s, 0, sizeof s);
    tc_test_event_init(&s.ev);
    tc_handler h = TC_HANDLER_INIT;
    h.handle = seen_handle;
    h.ctx = &s;
    tc_test_server ts;
    tc_test_server_start(&ts, listen, NULL, &h);

    int fd = tc_test_connect_ok(&ts.addr);
    char me[TC_ADDR_STRLEN];
    sock_name(fd, me);
    tc_test_send_all(fd, "hello", 5);
    shutdown(fd, SHUT_WR);
    char buf[16];
    cr_assert_eq(tc_test_recv_full(fd, buf, sizeof buf), 5, "data round trip");
    cr_assert_eq(memcmp(buf, "hello", 5), 0);
    close(fd);
    cr_assert_eq(tc_test_event_wait(&s.ev, 1, TC_TEST_WAIT_MS), 0);

    cr_assert_str_eq(s.peer, me, "peer is the client's own address");
    if (unix_family)
        cr_assert_str_eq(s.peer, "unix:", "an unnamed unix client");
    cr_assert_str_eq(s.local, ts.addr_str, "local is the server's address");
    cr_assert_eq(s.server, ts.srv);
    cr_assert_eq(s.fd_type, SOCK_STREAM);
    cr_assert(s.data_ok, "tc_conn_data did not return what tc_conn_set_data stored");
    cr_assert_str_eq(s.misuse, "read0=0,readnull=EINVAL,sendnull=EINVAL,send0=0,timeout=0");
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_event_destroy(&s.ev);
}

Test(conn, accessors_in_handler_tcp, .timeout = 20)
{
    check_accessors("127.0.0.1:0", 0);
}

Test(conn, accessors_in_handler_unix, .timeout = 20)
{
    char dir[64], listen[140];
    tc_test_tmpdir(dir, sizeof dir);
    snprintf(listen, sizeof listen, "unix:%s/c.sock", dir);
    check_accessors(listen, 1);
    tc_test_rmtree(dir);
}

Test(conn, null_channel, .timeout = 10)
{
    char b[4];
    cr_assert_eq(tc_conn_fd(NULL), -EINVAL);
    cr_assert_null(tc_conn_peer(NULL));
    cr_assert_null(tc_conn_local(NULL));
    cr_assert_null(tc_conn_server(NULL));
    cr_assert_null(tc_conn_data(NULL));
    tc_conn_set_data(NULL, b); /* a no-op */
    cr_assert_eq(tc_conn_set_timeout(NULL, 10), -EINVAL);
    cr_assert_eq(tc_conn_read(NULL, b, sizeof b), -EINVAL);
    cr_assert_eq(tc_conn_send_all(NULL, b, sizeof b), -EINVAL);
    int fds = tc_test_count_fds();
    tc_conn_close(NULL); /* a no-op */
    cr_assert_eq(tc_test_count_fds(), fds);
}

/* ---- reads: EOF and timeouts -------------------------------------------------------- */

struct reads {
    tc_test_event ev;
    int timeout_ms; /* set on the channel first when > 0 */
};

static int eof_handle(tc_conn *c, void *ctx)
{
    struct reads *r = ctx;
    char buf[16];
    ssize_t n = tc_conn_read(c, buf, sizeof buf);
    if (n > 0)
        tc_test_event_postf(&r->ev, "data:%.*s", (int)n, buf);
    else
        tc_test_event_postf(&r->ev, "first:%s", tc_err_name((int)n));
    n = tc_conn_read(c, buf, sizeof buf);
    tc_test_event_postf(&r->ev, "%s", n > 0 ? "more data" : tc_err_name((int)n));
    /* End of stream stays the end. */
    n = tc_conn_read(c, buf, sizeof buf);
    tc_test_event_postf(&r->ev, "%s", n > 0 ? "more data" : tc_err_name((int)n));
    return 0;
}

Test(conn, read_returns_eof_after_client_close, .timeout = 20)
{
    struct reads r = {0};
    tc_test_event_init(&r.ev);
    tc_handler h = TC_HANDLER_INIT;
    h.handle = eof_handle;
    h.ctx = &r;
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, NULL, &h);
    int fd = tc_test_connect_ok(&ts.addr);
    cr_assert_eq(tc_test_send_all(fd, "abc", 3), 0);
    /* The first read must see the data before the close: wait for it. */
    cr_assert_eq(tc_test_event_wait(&r.ev, 1, TC_TEST_WAIT_MS), 0);
    close(fd);
    cr_assert_eq(tc_test_event_wait(&r.ev, 3, TC_TEST_WAIT_MS), 0);
    char log[256];
    tc_test_event_log(&r.ev, log, sizeof log);
    cr_assert_str_eq(log, "data:abc,TC_EOF,TC_EOF");
    cr_assert_eq(tc_test_server_stop(&ts), 0);
}

static int timeout_handle(tc_conn *c, void *ctx)
{
    struct reads *r = ctx;
    char buf[16];
    if (r->timeout_ms > 0)
        tc_conn_set_timeout(c, r->timeout_ms);
    ssize_t n = tc_conn_read(c, buf, sizeof buf);
    tc_test_event_postf(&r->ev, "%s", n > 0 ? "data" : tc_err_name((int)n));
    /* The channel is still usable after a read timed out: tell the client, read again. */
    tc_conn_set_timeout(c, TC_TEST_WAIT_MS);
    if (tc_conn_send_all(c, "T", 1) != 1)
        return -EIO;
    n = tc_conn_read(c, buf, sizeof buf);
    tc_test_event_postf(&r->ev, "%s%.*s", n > 0 ? "then:" : tc_err_name((int)n), n > 0 ? (int)n : 0,
                        buf);
    return 0;
}

static void check_read_timeout(int conn_timeout_ms, int set_timeout_ms)
{
    struct reads r = {0};
    tc_test_event_init(&r.ev);
    r.timeout_ms = set_timeout_ms;
    tc_handler h = TC_HANDLER_INIT;
    h.handle = timeout_handle;
    h.ctx = &r;
    tc_server_config cfg = tc_test_config();
    cfg.conn_timeout_ms = conn_timeout_ms;
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);

    int fd = tc_test_connect_ok(&ts.addr);
    /* Send nothing; the server's read gives up and says so. */
    char c;
    cr_assert_eq(tc_test_recv_full(fd, &c, 1), 1, "no word from the handler after its timeout");
    cr_assert_eq(c, 'T');
    cr_assert_eq(tc_test_event_count(&r.ev), 1);
    char log[256];
    tc_test_event_log(&r.ev, log, sizeof log);
    cr_assert_str_eq(log, "ETIMEDOUT");
    cr_assert_eq(tc_test_send_all(fd, "x", 1), 0);
    cr_assert_eq(tc_test_event_wait(&r.ev, 2, TC_TEST_WAIT_MS), 0);
    tc_test_event_log(&r.ev, log, sizeof log);
    cr_assert_str_eq(log, "ETIMEDOUT,then:x");
    close(fd);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
}

Test(conn, set_timeout_makes_read_time_out, .timeout = 20)
{
    check_read_timeout(TC_TEST_WAIT_MS, 50);
}

Test(conn, conn_timeout_from_server_config, .timeout = 20)
{
    check_read_timeout(50, 0);
}

/* ---- send_all under signals ---------------------------------------------------------- */

#define BULK_SIZE (16u << 20)

static unsigned char pattern(size_t i)
{
    return (unsigned char)((i >> 16) * 13 + (i >> 8) * 7 + i * 3 + 1);
}

static volatile sig_atomic_t g_usr2;

static void on_sigusr2(int sig)
{
    (void)sig;
    g_usr2++;
}

struct bulk {
    tc_test_event started, sent;
    pthread_t sender;
    unsigned char *buf;
    ssize_t rc;
    int signals_during_send;
    atomic_int stop;
};

static int bulk_handle(tc_conn *c, void *ctx)
{
    struct bulk *b = ctx;
    b->sender = pthread_self();
    int before = g_usr2;
    tc_test_event_post(&b->started, NULL);
    b->rc = tc_conn_send_all(c, b->buf, BULK_SIZE);
    b->signals_during_send = g_usr2 - before;
    tc_test_event_post(&b->sent, NULL);
    return 0;
}

static void *signaller(void *arg)
{
    struct bulk *b = arg;
    if (tc_test_event_wait(&b->started, 1, TC_TEST_WAIT_MS) < 0)
        return NULL;
    while (!atomic_load(&b->stop)) {
        pthread_kill(b->sender, SIGUSR2);
        /* Pacing, not synchronisation: a signal every 100 us. */
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

Test(conn, send_all_survives_signals, .timeout = 120)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigusr2;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: every blocking call sees EINTR */
    cr_assert_eq(sigaction(SIGUSR2, &sa, NULL), 0);

    struct bulk b;
    memset(&b, 0, sizeof b);
    tc_test_event_init(&b.started);
    tc_test_event_init(&b.sent);
    b.buf = malloc(BULK_SIZE);
    cr_assert_not_null(b.buf);
    for (size_t i = 0; i < BULK_SIZE; i++)
        b.buf[i] = pattern(i);

    tc_handler h = TC_HANDLER_INIT;
    h.handle = bulk_handle;
    h.ctx = &b;
    tc_server_config cfg = tc_test_config();
    cfg.conn_timeout_ms = tc_test_ms(60000); /* the whole send_all, slow reader included */
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);

    /* A small receive buffer keeps the sender blocked most of the time. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    int rcvbuf = 32 * 1024;
    cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
    int ms = TC_TEST_WAIT_MS;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    cr_assert_eq(connect(fd, &ts.addr.u.sa, ts.addr.len), 0);

    pthread_t sig_thread;
    cr_assert_eq(pthread_create(&sig_thread, NULL, signaller, &b), 0);

    /* Read slowly, in chunks, checking every byte. */
    static unsigned char chunk[16384];
    size_t total = 0;
    int bad_at = -1;
    while (total < BULK_SIZE) {
        ssize_t n = recv(fd, chunk, sizeof chunk, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n && bad_at < 0; i++)
            if (chunk[i] != pattern(total + (size_t)i))
                bad_at = (int)(total + (size_t)i);
        total += (size_t)n;
        if (total % (256u * 1024) < (size_t)n) {
            struct timespec pause = {0, 2000000}; /* slow reader: pacing only */
            nanosleep(&pause, NULL);
        }
    }
    int eof = tc_test_recv_eof(fd);
    close(fd);
    int waited = tc_test_event_wait(&b.sent, 1, TC_TEST_WAIT_MS);
    atomic_store(&b.stop, 1);
    pthread_join(sig_thread, NULL);
    cr_assert_eq(tc_test_server_stop(&ts), 0);

    cr_assert_eq(total, BULK_SIZE, "received %zu of %u bytes", total, BULK_SIZE);
    cr_assert_eq(bad_at, -1, "wrong byte at offset %d", bad_at);
    cr_assert_eq(eof, 0, "no EOF after the data");
    cr_assert_eq(waited, 0);
    cr_assert_eq(b.rc, (ssize_t)BULK_SIZE, "send_all returned %zd (%s)", b.rc,
                 tc_err_name((int)b.rc));
    cr_assert_gt(b.signals_during_send, 0, "no signal arrived during the send: test is void");
    free(b.buf);
}

/* ---- one deadline for every send, even to a reader that keeps up ---------------------- */

/* A reader that takes STEADY_CHUNK bytes every STEADY_PACE_MS (scaled) needs
 * at least 64 MiB / 32 KiB * 5 ms = 10.2 s (scaled) for the whole file: four
 * times the bound a send with a 1 s timeout must end within. */
#define STEADY_SIZE ((size_t)64 << 20)
#define STEADY_CHUNK 32768
#define STEADY_PACE_MS 5
#define STEADY_TIMEOUT_MS 1000
#define STEADY_LIMIT_MS 2500

struct steady {
    int use_sendfile;
    int file_fd;          /* a sparse file of STEADY_SIZE bytes (sendfile) */
    unsigned char *buf;   /* STEADY_SIZE bytes (send_all) */
    tc_test_event done;
    ssize_t rc, last; /* the send's code, and tc_conn_last_sent after it */
    int64_t elapsed_ms;
};

static int steady_handle(tc_conn *c, void *ctx)
{
    struct steady *s = ctx;
    tc_conn_set_timeout(c, STEADY_TIMEOUT_MS);
    int64_t t0 = tc_test_now_ms();
    s->rc = s->use_sendfile ? tc_conn_sendfile(c, s->file_fd, 0, STEADY_SIZE)
                            : tc_conn_send_all(c, s->buf, STEADY_SIZE);
    s->elapsed_ms = tc_test_now_ms() - t0;
    s->last = tc_conn_last_sent(c);
    tc_test_event_post(&s->done, NULL);
    return 0;
}

/* A raw client with a small receive buffer (set before connecting, so the
 * window is small from the start), its waits bounded like tc_test_connect's. */
static int connect_small_rcvbuf(const tc_addr *addr)
{
    int fd = socket(tc_addr_family(addr), SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    int rcvbuf = 65536;
    cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
    int ms = TC_TEST_WAIT_MS;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    cr_assert_eq(connect(fd, &addr->u.sa, addr->len), 0);
    return fd;
}

static void check_send_deadline_to_steady_reader(int use_sendfile)
{
    struct steady s;
    memset(&s, 0, sizeof s);
    tc_test_event_init(&s.done);
    s.use_sendfile = use_sendfile;
    s.file_fd = -1;
    if (use_sendfile) {
        char path[] = "/tmp/tc_steady_XXXXXX";
        s.file_fd = mkstemp(path);
        cr_assert_geq(s.file_fd, 0);
        unlink(path);
        cr_assert_eq(ftruncate(s.file_fd, (off_t)STEADY_SIZE), 0); /* sparse: no disk */
    } else {
        s.buf = calloc(1, STEADY_SIZE);
        cr_assert_not_null(s.buf);
    }
    tc_handler h = TC_HANDLER_INIT;
    h.handle = steady_handle;
    h.ctx = &s;
    tc_test_server ts;
    tc_test_server_start(&ts, "127.0.0.1:0", NULL, &h);

    int fd = connect_small_rcvbuf(&ts.addr);
    static unsigned char chunk[STEADY_CHUNK];
    size_t got = 0;
    int limit = tc_test_ms(STEADY_LIMIT_MS);
    /* Read steadily until the send ends; twice the limit bounds a send that
     * does not (the close then ends it with an error). */
    int64_t give_up = tc_test_now_ms() + 2 * limit;
    while (tc_test_event_count(&s.done) == 0 && tc_test_now_ms() < give_up) {
        ssize_t n = recv(fd, chunk, sizeof chunk, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
        tc_test_nap_ms(tc_test_ms(STEADY_PACE_MS)); /* the reader's pace */
    }
    /* The send ended: the rest of what it handed to the kernel, to the end. */
    ssize_t n = 1;
    while (tc_test_event_count(&s.done) > 0 && (n = recv(fd, chunk, sizeof chunk, 0)) > 0)
        got += (size_t)n;
    close(fd);
    cr_assert_eq(tc_test_event_wait(&s.done, 1, TC_TEST_WAIT_MS), 0, "the send never ended");
    cr_assert_eq(tc_test_server_stop(&ts), 0);

    cr_assert_eq(s.rc, -ETIMEDOUT, "%s ended with %zd (%s) after %lld ms, %zu bytes read",
                 use_sendfile ? "sendfile" : "send_all", s.rc, tc_err_name((int)s.rc),
                 (long long)s.elapsed_ms, got);
    cr_assert_geq(s.elapsed_ms, STEADY_TIMEOUT_MS - 1, "ended %lld ms in, before its deadline",
                  (long long)s.elapsed_ms);
    cr_assert_lt(s.elapsed_ms, limit, "ended %lld ms in (%zu bytes read): past the deadline",
                 (long long)s.elapsed_ms, got);
    cr_assert_gt(got, (size_t)STEADY_CHUNK, "the reader took only %zu bytes: not steady", got);
    cr_assert_lt(got, STEADY_SIZE);
    cr_assert_eq(n, 0, "no end of stream after the send: %s", n < 0 ? strerror(errno) : "data");
    cr_assert_eq(s.last, (ssize_t)got, "tc_conn_last_sent says %zd bytes, the peer got %zu", s.last,
                 got);
    if (s.file_fd >= 0)
        close(s.file_fd);
    free(s.buf);
    tc_test_event_destroy(&s.done);
}

Test(conn, sendfile_ends_at_its_deadline_while_the_peer_keeps_reading, .timeout = 40)
{
    check_send_deadline_to_steady_reader(1);
}

Test(conn, send_all_ends_at_its_deadline_while_the_peer_keeps_reading, .timeout = 40)
{
    check_send_deadline_to_steady_reader(0);
}

/* ---- how much a failed send sent --------------------------------------------------------- */

#define LAST_HEAD ((size_t)5)      /* a first, small send that succeeds */
#define LAST_BIG ((size_t)8 << 20) /* far more than the kernel's buffers hold */

struct last {
    int use_sendfile;
    int file_fd;        /* LAST_HEAD + LAST_BIG pattern bytes (sendfile) */
    unsigned char *buf; /* the same bytes (send_all, and what the client checks) */
    tc_test_event done;
    ssize_t head_rc, head_last, big_rc, big_last, after_rc, after_last;
};

static int last_handle(tc_conn *c, void *ctx)
{
    struct last *l = ctx;
    int small = 65536;
    (void)setsockopt(tc_conn_fd(c), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    tc_conn_set_timeout(c, 200);
    l->head_rc = l->use_sendfile ? tc_conn_sendfile(c, l->file_fd, 0, LAST_HEAD)
                                 : tc_conn_send_all(c, l->buf, LAST_HEAD);
    l->head_last = tc_conn_last_sent(c);
    l->big_rc = l->use_sendfile ? tc_conn_sendfile(c, l->file_fd, (off_t)LAST_HEAD, LAST_BIG)
                                : tc_conn_send_all(c, l->buf + LAST_HEAD, LAST_BIG);
    l->big_last = tc_conn_last_sent(c);
    l->after_rc = tc_conn_send_all(c, "x", 1); /* the write side is broken now */
    l->after_last = tc_conn_last_sent(c);
    tc_test_event_post(&l->done, NULL);
    return 0;
}

/* The client does not read until the handler's send timed out, then drains
 * the socket to the end: it gets exactly the bytes tc_conn_last_sent counted. */
static void check_last_sent_after_timeout(int use_sendfile)
{
    struct last l;
    memset(&l, 0, sizeof l);
    tc_test_event_init(&l.done);
    l.use_sendfile = use_sendfile;
    l.file_fd = -1;
    size_t total = LAST_HEAD + LAST_BIG;
    l.buf = malloc(total);
    cr_assert_not_null(l.buf);
    for (size_t i = 0; i < total; i++)
        l.buf[i] = pattern(i);
    if (use_sendfile) {
        char path[] = "/tmp/tc_lastsent_XXXXXX";
        l.file_fd = mkstemp(path);
        cr_assert_geq(l.file_fd, 0);
        unlink(path);
        cr_assert_eq(write(l.file_fd, l.buf, total), (ssize_t)total);
    }
    tc_handler h = TC_HANDLER_INIT;
    h.handle = last_handle;
    h.ctx = &l;
    tc_test_server ts;
    tc_test_server_start(&ts, "127.0.0.1:0", NULL, &h);
    int fd = connect_small_rcvbuf(&ts.addr);
    cr_assert_eq(tc_test_event_wait(&l.done, 1, TC_TEST_WAIT_MS), 0, "the send never ended");
    unsigned char *got = malloc(total);
    cr_assert_not_null(got);
    ssize_t n = tc_test_recv_full(fd, got, total); /* to the end: the handler has returned */
    int eof = tc_test_recv_eof(fd);
    close(fd);
    cr_assert_eq(tc_test_server_stop(&ts), 0);

    const char *what = use_sendfile ? "sendfile" : "send_all";
    cr_assert_eq(l.head_rc, (ssize_t)LAST_HEAD, "%s: %s", what, tc_err_name((int)l.head_rc));
    cr_assert_eq(l.head_last, (ssize_t)LAST_HEAD, "after a success: the length");
    cr_assert_eq(l.big_rc, -ETIMEDOUT, "%s: %zd (%s)", what, l.big_rc, tc_err_name((int)l.big_rc));
    cr_assert_gt(l.big_last, 0, "%s timed out after sending some bytes: the count says none",
                 what);
    cr_assert_lt(l.big_last, (ssize_t)LAST_BIG);
    cr_assert_eq(l.after_rc, -ETIMEDOUT, "the write side stays broken");
    cr_assert_eq(l.after_last, 0, "a send refused at once sent nothing");
    cr_assert_geq(n, 0, "the client's read: %s", strerror((int)-n));
    cr_assert_eq(eof, 0, "the client's drain did not reach the end of the stream");
    cr_assert_eq((size_t)n, LAST_HEAD + (size_t)l.big_last,
                 "%s: the client got %zd bytes, tc_conn_last_sent counted %zu + %zd", what, n,
                 LAST_HEAD, l.big_last);
    cr_assert(memcmp(got, l.buf, (size_t)n) == 0, "the bytes are the send's first ones");
    free(got);
    free(l.buf);
    if (l.file_fd >= 0)
        close(l.file_fd);
    tc_test_event_destroy(&l.done);
}

Test(conn, last_sent_after_a_timed_out_send_all_is_what_the_peer_gets, .timeout = 30)
{
    check_last_sent_after_timeout(0);
}

Test(conn, last_sent_after_a_timed_out_sendfile_is_what_the_peer_gets, .timeout = 30)
{
    check_last_sent_after_timeout(1);
}

/* ---- send_all to a closed peer: an error code, never SIGPIPE ------------------------------ */

/* Send until the dead peer's reset is reported; the code of the failure. */
static ssize_t send_until_error(tc_conn *c)
{
    static char junk[65536];
    ssize_t rc = 0;
    for (int i = 0; i < 1000 && rc >= 0; i++)
        rc = tc_conn_send_all(c, junk, sizeof junk);
    return rc;
}

static int closed_peer_handle(tc_conn *c, void *ctx)
{
    char b[8];
    ssize_t n = tc_conn_read(c, b, sizeof b); /* the client closes without sending */
    ssize_t rc = send_until_error(c);
    tc_test_event_postf(ctx, "%s,%s", tc_err_name((int)n), tc_err_name((int)rc));
    return 0;
}

static void assert_sigpipe_default(void)
{
    struct sigaction cur;
    cr_assert_eq(sigaction(SIGPIPE, NULL, &cur), 0);
    cr_assert_eq(cur.sa_handler, SIG_DFL, "SIGPIPE disposition changed");
}

Test(conn, send_all_to_closed_peer_server_side, .timeout = 20)
{
    /* SIGPIPE keeps its default action: were it raised, this process would die. */
    assert_sigpipe_default();
    tc_test_event ev;
    tc_test_event_init(&ev);
    tc_handler h = TC_HANDLER_INIT;
    h.handle = closed_peer_handle;
    h.ctx = &ev;
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, NULL, &h);
    int fd = tc_test_connect_ok(&ts.addr);
    close(fd);
    cr_assert_eq(tc_test_event_wait(&ev, 1, TC_TEST_WAIT_MS), 0);
    char log[128];
    tc_test_event_log(&ev, log, sizeof log);
    cr_assert(strcmp(log, "TC_EOF,EPIPE") == 0 || strcmp(log, "TC_EOF,ECONNRESET") == 0,
              "got %s", log);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    assert_sigpipe_default();
}

static int close_at_once(tc_conn *c, void *ctx)
{
    (void)c;
    (void)ctx;
    return 0;
}

Test(conn, send_all_to_closed_peer_client_side, .timeout = 20)
{
    assert_sigpipe_default();
    tc_handler h = TC_HANDLER_INIT;
    h.handle = close_at_once;
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, NULL, &h);
    tc_conn *c;
    tc_dial_config o = TC_DIAL_CONFIG_INIT;
    o.timeout_ms = TC_TEST_WAIT_MS;
    cr_assert_eq(tc_dial(&c, ts.addr_str, &o), 0);
    char b[4];
    cr_assert_eq(tc_conn_read(c, b, sizeof b), TC_EOF, "the server did not close");
    ssize_t rc = send_until_error(c);
    cr_assert(rc == -EPIPE || rc == -ECONNRESET, "got %zd %s", rc, tc_err_name((int)rc));
    tc_conn_close(c);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    assert_sigpipe_default();
}

/* ---- tc_dial -------------------------------------------------------------------------- */

static void dial_echo(const tc_test_server *ts, const char *address, const char *msg)
{
    tc_conn *c = NULL;
    tc_dial_config o = TC_DIAL_CONFIG_INIT;
    o.timeout_ms = TC_TEST_WAIT_MS;
    o.connect_timeout_ms = TC_TEST_WAIT_MS;
    int rc = tc_dial(&c, address, &o);
    cr_assert_eq(rc, 0, "tc_dial(%s): %s", address, tc_err_name(rc));
    cr_assert_null(tc_conn_server(c), "a dialled channel has no server");

    char peer[TC_ADDR_STRLEN], local[TC_ADDR_STRLEN], me[TC_ADDR_STRLEN];
    addr_str(tc_conn_peer(c), peer);
    cr_assert_str_eq(peer, ts->addr_str, "peer of the dialled channel");
    addr_str(tc_conn_local(c), local);
    sock_name(tc_conn_fd(c), me);
    cr_assert_str_eq(local, me);

    size_t n = strlen(msg);
    cr_assert_eq(tc_conn_send_all(c, msg, n), (ssize_t)n);
    char buf[256];
    size_t got = 0;
    while (got < n) {
        ssize_t r = tc_conn_read(c, buf + got, sizeof buf - got);
        cr_assert_gt(r, 0, "read: %s", tc_err_name((int)r));
        got += (size_t)r;
    }
    cr_assert_eq(got, n);
    cr_assert_eq(memcmp(buf, msg, n), 0);
    /* Half-close; the echo handler ends and the server closes: EOF here means
     * the server side is gone too, so descriptor counts are settled. */
    cr_assert_eq(shutdown(tc_conn_fd(c), SHUT_WR), 0);
    ssize_t r = tc_conn_read(c, buf, sizeof buf);
    cr_assert_eq(r, TC_EOF, "expected EOF, got %zd %s", r, tc_err_name((int)r));
    tc_conn_close(c);
}

Test(conn, dial_echo_tcp, .timeout = 20)
{
    int fds0 = tc_test_count_fds();
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, NULL, NULL);
    int fds_serving = tc_test_count_fds();
    dial_echo(&ts, ts.addr_str, "through tc_dial");
    dial_echo(&ts, ts.addr_str, "twice");
    /* tc_conn_close released the client's descriptor. */
    cr_assert_eq(tc_test_count_fds(), fds_serving);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    cr_assert_eq(tc_test_count_fds(), fds0);
}

Test(conn, dial_localhost, .timeout = 20)
{
    /* "localhost" comes from /etc/hosts; if it also yields ::1 first, the
     * refused attempt is followed by 127.0.0.1. */
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, NULL, NULL);
    char address[64];
    snprintf(address, sizeof address, "localhost:%d", tc_addr_port(&ts.addr));
    dial_echo(&ts, address, "by name");
    cr_assert_eq(tc_test_server_stop(&ts), 0);
}

Test(conn, dial_ipv6, .timeout = 20)
{
    if (!tc_test_have_ipv6())
        cr_skip("no IPv6 loopback on this machine");
    tc_test_server ts;
    tc_test_server_start(&ts, "[::1]:0", NULL, NULL);
    dial_echo(&ts, ts.addr_str, "over IPv6");
    cr_assert_eq(tc_test_server_stop(&ts), 0);
}

Test(conn, dial_unix, .timeout = 20)
{
    char dir[64], listen[140];
    tc_test_tmpdir(dir, sizeof dir);
    snprintf(listen, sizeof listen, "unix:%s/d.sock", dir);
    tc_test_server ts;
    tc_test_server_start(&ts, listen, NULL, NULL);
    dial_echo(&ts, listen, "over a unix socket");
    cr_assert_eq(tc_test_server_stop(&ts), 0);

    snprintf(listen, sizeof listen, "unix:@tctest-dial-%ld-%ld", (long)getpid(),
             (long)tc_test_now_ns());
    tc_test_server_start(&ts, listen, NULL, NULL);
    dial_echo(&ts, listen, "over an abstract unix socket");
    cr_assert_eq(tc_test_server_stop(&ts), 0);
    tc_test_rmtree(dir);
}

Test(conn, dial_refused, .timeout = 20)
{
    /* A bound socket that does not listen keeps its port reserved and refuses. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    socklen_t len = sizeof sin;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    char address[256];
    snprintf(address, sizeof address, "127.0.0.1:%d", ntohs(sin.sin_port));
    tc_conn *c = (tc_conn *)&sin;
    int fds0 = tc_test_count_fds();
    cr_assert_eq(tc_dial(&c, address, NULL), -ECONNREFUSED);
    cr_assert_eq(c, (tc_conn *)&sin, "out written on failure");
    cr_assert_eq(tc_test_count_fds(), fds0, "the failed dial leaked its socket");
    close(fd);

    /* The same for a unix socket file nobody listens on, and a missing path. */
    char dir[64];
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    tc_test_tmpdir(dir, sizeof dir);
    cr_assert_lt(strlen(dir) + sizeof "/deaf.sock", sizeof sun.sun_path);
    strcpy(sun.sun_path, dir);
    strcat(sun.sun_path, "/deaf.sock");
    const char *path = sun.sun_path;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
    snprintf(address, sizeof address, "unix:%s", path);
    fds0 = tc_test_count_fds();
    cr_assert_eq(tc_dial(&c, address, NULL), -ECONNREFUSED);
    snprintf(address, sizeof address, "unix:%s/missing.sock", dir);
    cr_assert_eq(tc_dial(&c, address, NULL), -ENOENT);
    cr_assert_eq(c, (tc_conn *)&sin, "out written on failure");
    cr_assert_eq(tc_test_count_fds(), fds0, "a failed dial leaked its socket");
    close(fd);
    tc_test_rmtree(dir);
}

Test(conn, dial_bad_address, .timeout = 20)
{
    static const char *const bad[] = {"", "127.0.0.1", "127.0.0.1:65536", "[::1]", "::1:80",
                                      "exa mple.com:80", "unix:"};
    tc_conn *c = NULL;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = tc_dial(&c, bad[i], NULL);
        cr_assert_eq(rc, TC_EBADADDR, "tc_dial(\"%s\") = %d %s", bad[i], rc, tc_err_name(rc));
        cr_assert_null(c);
    }
    cr_assert_eq(tc_dial(&c, NULL, NULL), -EINVAL);
    cr_assert_eq(tc_dial(NULL, "127.0.0.1:1", NULL), -EINVAL);
    /* A name the resolver refuses locally (a 70-byte label): no DNS traffic. */
    char name[128];
    memset(name, 'a', 70);
    strcpy(name + 70, ".invalid:80");
    cr_assert_eq(tc_dial(&c, name, NULL), TC_ENORESOLVE);
    cr_assert_null(c);
}

Test(conn, dial_timeout_option, .timeout = 20)
{
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, NULL, NULL);
    tc_conn *c;
    tc_dial_config o = TC_DIAL_CONFIG_INIT;
    o.timeout_ms = 50;
    cr_assert_eq(tc_dial(&c, ts.addr_str, &o), 0);
    char buf[8];
    /* The server echoes only what it gets: nothing, so the read times out. */
    cr_assert_eq(tc_conn_read(c, buf, sizeof buf), -ETIMEDOUT);
    /* Still usable afterwards. */
    cr_assert_eq(tc_conn_set_timeout(c, TC_TEST_WAIT_MS), 0);
    cr_assert_eq(tc_conn_send_all(c, "late", 4), 4);
    cr_assert_eq(tc_conn_read(c, buf, 4), 4);
    cr_assert_eq(memcmp(buf, "late", 4), 0);
    tc_conn_close(c);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
}

static int close_then_use(tc_conn *c, void *ctx)
{
    /* Server channels belong to the library: tc_conn_close ignores them. */
    tc_conn_close(c);
    ssize_t rc = tc_conn_send_all(c, "still open", 10);
    tc_test_event_postf(ctx, "%zd", rc);
    return 0;
}

Test(conn, close_ignores_server_channels, .timeout = 20)
{
    tc_test_event ev;
    tc_test_event_init(&ev);
    tc_handler h = TC_HANDLER_INIT;
    h.handle = close_then_use;
    h.ctx = &ev;
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, NULL, &h);
    int fd = tc_test_connect_ok(&ts.addr);
    char buf[16];
    cr_assert_eq(tc_test_recv_full(fd, buf, sizeof buf), 10);
    cr_assert_eq(memcmp(buf, "still open", 10), 0);
    close(fd);
    cr_assert_eq(tc_test_event_wait(&ev, 1, TC_TEST_WAIT_MS), 0);
    char log[32];
    tc_test_event_log(&ev, log, sizeof log);
    cr_assert_str_eq(log, "10");
    cr_assert_eq(tc_test_server_stop(&ts), 0);
}

/* tc_dial_config_init() copies TC_DIAL_CONFIG_INIT, over whatever was there. */
Test(conn, dial_config_init_equals_the_macro, .timeout = 10)
{
    tc_dial_config m = TC_DIAL_CONFIG_INIT, b;
    memset(&b, 0x5A, sizeof b);
    tc_dial_config_init(&b);
    cr_assert_eq(b.connect_timeout_ms, m.connect_timeout_ms);
    cr_assert_eq(b.timeout_ms, m.timeout_ms);
    cr_assert_eq(tc_codec_max_frame(&b.codec), tc_codec_max_frame(&m.codec));
    cr_assert_eq(tc_codec_validate(&b.codec), 0, "the default codec is valid");
    cr_assert_eq(b.read_buffer_size, m.read_buffer_size);
    cr_assert_eq(b.write_buffer_size, m.write_buffer_size);
    tc_dial_config_init(NULL); /* does nothing */
}

/* tc_conn_pending on a blocking channel: what tc_conn_write buffered, until a
 * flush sends it; 0 for NULL. */
Test(conn, pending_counts_buffered_writes, .timeout = 20)
{
    tc_handler h = tc_test_echo_handler();
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, NULL, &h);
    tc_conn *c;
    tc_dial_config o = TC_DIAL_CONFIG_INIT;
    o.timeout_ms = TC_TEST_WAIT_MS;
    cr_assert_eq(tc_dial(&c, ts.addr_str, &o), 0);
    cr_assert_eq(tc_conn_pending(NULL), 0);
    cr_assert_eq(tc_conn_pending(c), 0);
    cr_assert_eq(tc_conn_write(c, "hello, ", 7), 7);
    cr_assert_eq(tc_conn_write(c, "world", 5), 5);
    cr_assert_eq(tc_conn_pending(c), 12, "buffered: %zu", tc_conn_pending(c));
    cr_assert_eq(tc_conn_flush(c), 0);
    cr_assert_eq(tc_conn_pending(c), 0);
    char buf[12];
    cr_assert_eq(tc_conn_read_exact(c, buf, sizeof buf), (ssize_t)sizeof buf);
    cr_assert_eq(memcmp(buf, "hello, world", 12), 0);
    tc_conn_close(c);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
}
