/* SPDX-License-Identifier: MIT */
/* Message-style handlers (on_open / on_message / on_close), the same tests in
 * every in-process mode (inline, threading, event): order of callbacks,
 * replies, configuration errors, an oversized frame closing only its
 * connection, the idle timeout, and the graceful drain (idle connections
 * closed at once, the in-flight message completed), and a complete frame
 * followed by part of the next answered at once (every mode, forking and
 * pool too). Servers listen on 127.0.0.1:0 and run in a thread. */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <tcpchan/tcpchan.h>

#include "helpers.h"

TestSuite(message, .timeout = 20);

/* One test per mode for a function taking the mode: name_inline,
 * name_threading, name_event. Forking runs callbacks in a child, where the
 * shared record below is not shared, so it is not among them. */
#define PER_MODE(name, fn)                                                                         \
    Test(message, name##_inline) { fn(TC_MODE_INLINE); }                                           \
    Test(message, name##_threading) { fn(TC_MODE_THREADING); }                                     \
    Test(message, name##_event) { fn(TC_MODE_EVENT); }

static int64_t now_ms(void)
{
    return tc_monotonic_ns() / TC_NS_PER_MS;
}

/* What the callbacks saw, shared with the test thread. */
struct rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char log[4096];
    int opens, closes, errors;
    int last_reason, last_error;
    int blocked, release; /* an on_message holding a "block" message */
    int fail_open;
    int wait_bye, bye_seen, bye_first; /* on_close waits for the client's "bye" */
};

static void rec_init(struct rec *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
}

static void rec_add(struct rec *r, const char *fmt, const char *a, size_t alen)
{
    char item[256];
    snprintf(item, sizeof item, fmt, (int)alen, a);
    strncat(r->log, item, sizeof r->log - strlen(r->log) - 1);
}

/* Wait until cond(r) holds, up to 5 s; with the lock held. */
static int rec_wait(struct rec *r, int (*cond)(struct rec *, int), int arg)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 5;
    int ok = 1;
    pthread_mutex_lock(&r->mu);
    while (!cond(r, arg))
        if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) != 0) {
            ok = cond(r, arg);
            break;
        }
    pthread_mutex_unlock(&r->mu);
    return ok;
}

static int closes_at_least(struct rec *r, int n) { return r->closes >= n; }
static int is_blocked(struct rec *r, int n) { return r->blocked >= n; }

static int on_open(tc_conn *c, void *ctx)
{
    struct rec *r = ctx;
    (void)c;
    pthread_mutex_lock(&r->mu);
    r->opens++;
    rec_add(r, "open;%.*s", "", 0);
    int fail = r->fail_open;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return fail ? -EACCES : 0;
}

static int on_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    struct rec *r = ctx;
    pthread_mutex_lock(&r->mu);
    rec_add(r, "msg:%.*s;", msg, len);
    if (len == 5 && memcmp(msg, "block", 5) == 0) {
        r->blocked++;
        pthread_cond_broadcast(&r->cv);
        while (!r->release)
            pthread_cond_wait(&r->cv, &r->mu);
        pthread_mutex_unlock(&r->mu);
        ssize_t sent = tc_conn_send(c, "done", 4);
        return sent < 0 ? (int)sent : 0;
    }
    pthread_mutex_unlock(&r->mu);
    if (len == 4 && memcmp(msg, "fail", 4) == 0)
        return -EPROTO;
    if (len == 4 && memcmp(msg, "last", 4) == 0) {
        /* A parting word, buffered, then an error: it still goes out. */
        tc_conn_write(c, "bye\n", 4);
        return -EPROTO;
    }
    if (len == 4 && memcmp(msg, "buff", 4) == 0) {
        /* Buffered replies are flushed by the loop before it waits. */
        tc_conn_write(c, "bu", 2);
        return tc_conn_printf(c, "ff\n") < 0 ? -EIO : 0;
    }
    ssize_t sent = tc_conn_send(c, msg, len);
    if (sent >= 0 && sent != (ssize_t)len)
        return -ERANGE; /* a send returns the payload's length, the framing not counted */
    return sent < 0 ? (int)sent : 0;
}

static void on_close(tc_conn *c, int reason, void *ctx)
{
    struct rec *r = ctx;
    (void)c;
    pthread_mutex_lock(&r->mu);
    if (r->wait_bye) {
        /* Bounded: without the flush before on_close the client gets its
         * reply only after this returns, and bye_first stays 0. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 2;
        while (!r->bye_seen && pthread_cond_timedwait(&r->cv, &r->mu, &ts) == 0)
            ;
        r->bye_first = r->bye_seen;
    }
    r->closes++;
    r->last_reason = reason;
    const char *name = tc_err_name(reason);
    rec_add(r, "close:%.*s;", name, strlen(name));
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void on_error(tc_server *srv, tc_conn *conn, int err, void *ctx)
{
    struct rec *r = ctx;
    (void)srv, (void)conn;
    pthread_mutex_lock(&r->mu);
    r->errors++;
    r->last_error = err;
    pthread_mutex_unlock(&r->mu);
}

struct srv {
    tc_server *s;
    pthread_t tid;
    char addr[TC_ADDR_STRLEN];
    int serve_rc;
};

static void *serve_main(void *arg)
{
    struct srv *v = arg;
    v->serve_rc = tc_server_serve_forever(v->s);
    return NULL;
}

static void line_codec(tc_codec *c, size_t max)
{
    tc_codec_delimited(c, "\n", 1);
    tc_codec_set_max_frame(c, max);
}

static void start(struct srv *v, tc_mode mode, struct rec *r, tc_server_config *cfg)
{
    tc_handler h = TC_HANDLER_INIT;
    h.on_open = on_open;
    h.on_message = on_message;
    h.on_close = on_close;
    h.ctx = r;
    cfg->mode = mode;
    cfg->hooks.handle_error = on_error;
    cfg->hooks.ctx = r;
    if (!cfg->conn_timeout_ms)
        cfg->conn_timeout_ms = 5000;
    cr_assert_eq(tc_server_create(&v->s, cfg, &h), 0);
    tc_addr a;
    tc_server_address(v->s, &a);
    tc_addr_format(&a, v->addr, sizeof v->addr);
    cr_assert_eq(pthread_create(&v->tid, NULL, serve_main, v), 0);
}

static void stop(struct srv *v)
{
    tc_server_shutdown(v->s);
    pthread_join(v->tid, NULL);
    tc_server_destroy(v->s);
}

static tc_conn *client(struct srv *v, const tc_codec *codec)
{
    tc_dial_config o = TC_DIAL_CONFIG_INIT;
    o.timeout_ms = 5000;
    if (codec)
        o.codec = *codec;
    tc_conn *c;
    cr_assert_eq(tc_dial(&c, v->addr, &o), 0);
    return c;
}

static void expect_reply(tc_conn *c, const char *want)
{
    const void *m;
    size_t n;
    int rc = tc_conn_read_frame(c, &m, &n);
    cr_assert_eq(rc, 0, "reply: %s", tc_err_name(rc));
    cr_assert(n == strlen(want) && memcmp(m, want, n) == 0, "got %.*s, want %s", (int)n,
              (const char *)m, want);
}

/* ---- order and replies ---------------------------------------------------- */

static void order_and_replies(tc_mode mode)
{
    struct rec r;
    struct srv v;
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    tc_codec line;
    rec_init(&r);
    line_codec(&line, 1024);
    cfg.codec = line;
    start(&v, mode, &r, &cfg);
    tc_conn *c = client(&v, &line);
    cr_assert_eq(tc_conn_send_all(c, "a\nbb\nbuff\n", 10), 10, "pipelined in one burst");
    expect_reply(c, "a");
    expect_reply(c, "bb");
    expect_reply(c, "buff");
    cr_assert_eq(tc_conn_send(c, "ccc", 3), 3);
    expect_reply(c, "ccc");
    tc_conn_close(c);
    cr_assert(rec_wait(&r, closes_at_least, 1));
    stop(&v);
    cr_assert_str_eq(r.log, "open;msg:a;msg:bb;msg:buff;msg:ccc;close:OK;");
    cr_assert_eq(r.last_reason, 0);
    cr_assert_eq(r.errors, 0);
}

PER_MODE(order_and_replies, order_and_replies)

static void len32_frames(tc_mode mode)
{
    struct rec r;
    struct srv v;
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    tc_codec len32;
    rec_init(&r);
    tc_codec_length_prefixed(&len32, 4, TC_BIG_ENDIAN);
    cfg.codec = len32;
    start(&v, mode, &r, &cfg);
    tc_conn *c = client(&v, &len32);
    /* Three frames in one write, one of them empty. */
    cr_assert_eq(tc_conn_send_all(c, "\0\0\0\3one\0\0\0\0\0\0\0\5three", 20), 20);
    expect_reply(c, "one");
    expect_reply(c, "");
    expect_reply(c, "three");
    tc_conn_close(c);
    cr_assert(rec_wait(&r, closes_at_least, 1));
    stop(&v);
    cr_assert_str_eq(r.log, "open;msg:one;msg:;msg:three;close:OK;");
}

PER_MODE(len32_frames, len32_frames)

/* ---- configuration --------------------------------------------------------- */

static int dummy_handle(tc_conn *c, void *ctx)
{
    (void)c, (void)ctx;
    return 0;
}

Test(message, handler_style_must_be_exactly_one)
{
    tc_server *s = NULL;
    tc_handler h = TC_HANDLER_INIT;
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    cr_assert_eq(tc_server_create(&s, &cfg, &h), TC_EBADCONFIG, "neither");
    h.handle = dummy_handle;
    h.on_message = on_message;
    cr_assert_eq(tc_server_create(&s, &cfg, &h), TC_EBADCONFIG, "both");
    h.on_message = NULL;
    h.on_close = on_close;
    cr_assert_eq(tc_server_create(&s, &cfg, &h), TC_EBADCONFIG, "on_close without on_message");
    h.on_close = NULL;
    h.handle = NULL;
    h.on_message = on_message;
    cfg.codec.kind = TC_CODEC_LENGTH_PREFIXED; /* width 0 */
    cr_assert_eq(tc_server_create(&s, &cfg, &h), TC_EBADCONFIG, "invalid codec");
    tc_codec_raw(&cfg.codec);
    cfg.idle_timeout_ms = -1; /* never: accepted */
    cr_assert_eq(tc_server_create(&s, &cfg, &h), 0, "negative idle timeout means never");
    tc_server_destroy(s);
    s = NULL;
    tc_server_config zero = {0};
    cr_assert_eq(tc_server_create(&s, &zero, &h), 0, "= {0} is all defaults: raw codec");
    tc_server_destroy(s);
}

/* Event mode runs message-style handlers only, and only through serve_forever. */
static void count_log(tc_server *srv, tc_log_level level, const char *msg, void *ctx)
{
    (void)srv, (void)level;
    if (strstr(msg, "event mode"))
        ++*(int *)ctx;
}

Test(message, event_mode_refuses_a_stream_handler)
{
    tc_server *s = NULL;
    tc_handler h = TC_HANDLER_INIT;
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    int logged = 0;
    cfg.mode = TC_MODE_EVENT;
    cfg.hooks.log = count_log;
    cfg.hooks.ctx = &logged;
    h.handle = dummy_handle;
    cr_assert_eq(tc_server_create(&s, &cfg, &h), TC_EBADCONFIG);
    cr_assert_null(s, "out untouched on failure");
    cr_assert_eq(logged, 1, "the log hook names the reason");
}

Test(message, event_mode_has_no_handle_request)
{
    struct rec r;
    tc_server *s = NULL;
    tc_handler h = TC_HANDLER_INIT;
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    rec_init(&r);
    cfg.mode = TC_MODE_EVENT;
    cfg.timeout_ms = 10;
    h.on_message = on_message;
    h.ctx = &r;
    cr_assert_eq(tc_server_create(&s, &cfg, &h), 0);
    cr_assert_eq(tc_server_handle_request(s), -ENOTSUP);
    cr_assert_eq(tc_server_handle_request(s), -ENOTSUP, "and it does not mark the server busy");
    tc_server_destroy(s);
}

/* In event mode the loop reads for the handler: read calls, and sendfile
 * (which would block the loop), are refused inside on_message. */
static int reader_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    char buf[8];
    const void *p;
    size_t n;
    (void)msg, (void)len, (void)ctx;
    char out[128];
    snprintf(out, sizeof out, "%zd %d %d %zd", tc_conn_read(c, buf, sizeof buf),
             tc_conn_read_frame(c, &p, &n), tc_conn_peek(c, 1, &p, &n),
             tc_conn_sendfile(c, 0, 0, 1));
    ssize_t sent = tc_conn_send(c, out, strlen(out));
    return sent < 0 ? (int)sent : 0;
}

Test(message, event_mode_refuses_reads_inside_on_message)
{
    struct rec r;
    struct srv v;
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    tc_codec line;
    rec_init(&r);
    line_codec(&line, 100);
    cfg.codec = line;
    cfg.mode = TC_MODE_EVENT;
    cfg.conn_timeout_ms = 5000;
    tc_handler h = TC_HANDLER_INIT;
    h.on_message = reader_message;
    cr_assert_eq(tc_server_create(&v.s, &cfg, &h), 0);
    tc_addr a;
    tc_server_address(v.s, &a);
    tc_addr_format(&a, v.addr, sizeof v.addr);
    cr_assert_eq(pthread_create(&v.tid, NULL, serve_main, &v), 0);
    tc_conn *c = client(&v, &line);
    cr_assert_eq(tc_conn_send(c, "x", 1), 1);
    char want[64];
    snprintf(want, sizeof want, "%d %d %d %d", -ENOTSUP, -ENOTSUP, -ENOTSUP, -ENOTSUP);
    expect_reply(c, want);
    tc_conn_close(c);
    stop(&v);
}

/* ---- an oversized frame closes only its connection --------------------------- */

static void oversized(tc_mode mode)
{
    struct rec r;
    struct srv v;
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    tc_codec line;
    char junk[64];
    rec_init(&r);
    line_codec(&line, 8);
    cfg.codec = line;
    start(&v, mode, &r, &cfg);
    tc_conn *a = NULL;
    if (mode != TC_MODE_INLINE) {
        /* A stays connected, mid-conversation, while B misbehaves. */
        a = client(&v, &line);
        tc_conn_send(a, "hi", 2);
        expect_reply(a, "hi");
    }
    tc_conn *b = client(&v, &line);
    memset(junk, 'x', sizeof junk);
    cr_assert_eq(tc_conn_send_all(b, junk, 9), 9, "over the limit, no newline ever");
    const void *m;
    size_t n;
    int rc = tc_conn_read_frame(b, &m, &n);
    cr_assert(rc == TC_EOF || rc == -ECONNRESET, "B is closed: %s", tc_err_name(rc));
    cr_assert(rec_wait(&r, closes_at_least, 1));
    cr_assert_eq(r.last_reason, TC_ETOOBIG);
    cr_assert_eq(r.last_error, TC_ETOOBIG, "reported to handle_error too");
    tc_conn_close(b);
    if (!a)
        a = client(&v, &line);
    tc_conn_send(a, "still", 5);
    expect_reply(a, "still");
    tc_conn_close(a);
    cr_assert(rec_wait(&r, closes_at_least, 2));
    stop(&v);
}

PER_MODE(oversized_frame_closes_that_connection, oversized)

/* ---- errors from callbacks ------------------------------------------------------ */

static void on_message_error(tc_mode mode)
{
    struct rec r;
    struct srv v;
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    tc_codec line;
    rec_init(&r);
    line_codec(&line, 100);
    cfg.codec = line;
    start(&v, mode, &r, &cfg);
    tc_conn *c = client(&v, &line);
    tc_conn_send(c, "fail", 4);
    const void *m;
    size_t n;
    int rc = tc_conn_read_frame(c, &m, &n);
    cr_assert(rc == TC_EOF || rc == -ECONNRESET, "%s", tc_err_name(rc));
    cr_assert(rec_wait(&r, closes_at_least, 1));
    cr_assert_eq(r.last_reason, -EPROTO);
    cr_assert_eq(r.last_error, -EPROTO);
    tc_conn_close(c);
    stop(&v);
}

PER_MODE(on_message_error_ends_the_connection, on_message_error)

/* What a handler buffered before it failed reaches the client before
 * on_close runs (on_close may take its time), and the connection then ends. */
static void error_after_buffered_reply(tc_mode mode)
{
    struct rec r;
    struct srv v;
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    tc_codec line;
    rec_init(&r);
    line_codec(&line, 100);
    cfg.codec = line;
    r.wait_bye = 1;
    start(&v, mode, &r, &cfg);
    tc_conn *c = client(&v, &line);
    cr_assert_eq(tc_conn_send(c, "last", 4), 4);
    expect_reply(c, "bye");
    pthread_mutex_lock(&r.mu);
    r.bye_seen = 1;
    pthread_cond_broadcast(&r.cv);
    pthread_mutex_unlock(&r.mu);
    const void *m;
    size_t n;
    int rc = tc_conn_read_frame(c, &m, &n);
    cr_assert_eq(rc, TC_EOF, "after the parting word: %s", tc_err_name(rc));
    cr_assert(rec_wait(&r, closes_at_least, 1));
    cr_assert_eq(r.last_reason, -EPROTO);
    cr_assert_eq(r.bye_first, 1, "the reply left only after on_close returned");
    tc_conn_close(c);
    stop(&v);
}

PER_MODE(error_after_a_buffered_reply_flushes_it, error_after_buffered_reply)

static void on_open_failure(tc_mode mode)
{
    struct rec r;
    struct srv v;
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    rec_init(&r);
    r.fail_open = 1;
    start(&v, mode, &r, &cfg);
    tc_conn *c = client(&v, NULL);
    char b[4];
    ssize_t rc = tc_conn_read(c, b, sizeof b);
    cr_assert(rc == TC_EOF || rc == -ECONNRESET);
    tc_conn_close(c);
    stop(&v);
    cr_assert_str_eq(r.log, "open;");
    cr_assert_eq(r.closes, 0);
    cr_assert_eq(r.last_error, -EACCES);
}

PER_MODE(on_open_failure_skips_the_connection, on_open_failure)

/* ---- idle timeout ------------------------------------------------------------------ */

static void idle_timeout(tc_mode mode)
{
    struct rec r;
    struct srv v;
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    tc_codec line;
    rec_init(&r);
    line_codec(&line, 100);
    cfg.codec = line;
    cfg.idle_timeout_ms = 200;
    start(&v, mode, &r, &cfg);
    tc_conn *c = client(&v, &line);
    tc_conn_send(c, "x", 1);
    expect_reply(c, "x");
    int64_t t0 = now_ms();
    const void *m;
    size_t n;
    int rc = tc_conn_read_frame(c, &m, &n);
    int64_t el = now_ms() - t0;
    cr_assert(rc == TC_EOF || rc == -ECONNRESET, "%s", tc_err_name(rc));
    cr_assert(el >= 190 && el < 2000, "closed after %lld ms", (long long)el);
    cr_assert(rec_wait(&r, closes_at_least, 1));
    cr_assert_eq(r.last_reason, -ETIMEDOUT);
    cr_assert_eq(r.errors, 0, "an idle close is not an error");
    tc_conn_close(c);
    stop(&v);
}

PER_MODE(idle_timeout_closes_a_silent_connection, idle_timeout)

/* Silence inside a frame is an error (server.h: idle_timeout_ms), unlike
 * silence between frames. */
static void idle_inside_a_frame(tc_mode mode)
{
    struct rec r;
    struct srv v;
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    tc_codec line;
    rec_init(&r);
    line_codec(&line, 100);
    cfg.codec = line;
    cfg.idle_timeout_ms = 100;
    start(&v, mode, &r, &cfg);
    tc_conn *c = client(&v, &line);
    cr_assert_eq(tc_conn_send_all(c, "half a li", 9), 9);
    const void *m;
    size_t n;
    int rc = tc_conn_read_frame(c, &m, &n);
    cr_assert(rc == TC_EOF || rc == -ECONNRESET, "%s", tc_err_name(rc));
    cr_assert(rec_wait(&r, closes_at_least, 1));
    cr_assert_eq(r.last_reason, -ETIMEDOUT);
    pthread_mutex_lock(&r.mu);
    cr_assert_eq(r.errors, 1, "reported to handle_error");
    cr_assert_eq(r.last_error, -ETIMEDOUT);
    pthread_mutex_unlock(&r.mu);
    tc_conn_close(c);
    stop(&v);
}

PER_MODE(idle_timeout_inside_a_frame_is_an_error, idle_inside_a_frame)

/* ---- graceful drain --------------------------------------------------------------- */

/* Two connections at once, one blocked in on_message: not for inline mode.
 * In event mode the blocked callback holds its loop, so the idle connection
 * must be on another: two loops, dealt round-robin (first to loop 0). */
static void drain(tc_mode mode)
{
    struct rec r;
    struct srv v;
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    tc_codec line;
    rec_init(&r);
    line_codec(&line, 100);
    cfg.codec = line;
    cfg.drain_timeout_ms = 10000; /* far more than the test waits */
    cfg.workers = 2;
    start(&v, mode, &r, &cfg);
    tc_conn *idle = client(&v, &line);
    tc_conn_send(idle, "hello", 5);
    expect_reply(idle, "hello");
    tc_conn *busy = client(&v, &line);
    tc_conn_send(busy, "block", 5);
    cr_assert(rec_wait(&r, is_blocked, 1));

    int64_t t0 = now_ms();
    tc_server_shutdown(v.s);
    /* The idle connection ends at once, while the busy one is still inside on_message. */
    cr_assert(rec_wait(&r, closes_at_least, 1), "idle connection not closed");
    cr_assert_eq(r.last_reason, TC_ESHUTDOWN);
    const void *m;
    size_t n;
    int rc = tc_conn_read_frame(idle, &m, &n);
    cr_assert(rc == TC_EOF || rc == -ECONNRESET, "%s", tc_err_name(rc));

    pthread_mutex_lock(&r.mu);
    cr_assert_eq(r.closes, 1, "the in-flight message is not cut");
    r.release = 1;
    pthread_cond_broadcast(&r.cv);
    pthread_mutex_unlock(&r.mu);
    expect_reply(busy, "done");
    pthread_join(v.tid, NULL);
    int64_t el = now_ms() - t0;
    cr_assert(el < 3000, "the drain took %lld ms", (long long)el);
    cr_assert_eq(r.closes, 2);
    cr_assert_eq(r.last_reason, TC_ESHUTDOWN);
    cr_assert_eq(r.errors, 0);
    tc_conn_close(idle);
    tc_conn_close(busy);
    tc_server_destroy(v.s);
}

Test(message, drain_closes_idle_connections_at_once_and_completes_in_flight_threading)
{
    drain(TC_MODE_THREADING);
}

Test(message, drain_closes_idle_connections_at_once_and_completes_in_flight_event)
{
    drain(TC_MODE_EVENT);
}

/* ---- a complete frame followed by part of the next (issue 12, §3.1) ------------- */

/* A pipelining client writes one whole frame and the start of the next in a
 * single write: the reply to the whole frame must come at once, without the
 * client sending anything more. Two handlers: one replying with
 * tc_conn_send() (sent and flushed at once), one buffering its reply with
 * tc_conn_write() as tcpchan-echo does in the blocking modes (header,
 * payload, trailer), which relies on the message loop to flush before it
 * waits for input, including input that completes a frame already begun.
 * Every mode, forking included: only the client's view is checked, so
 * nothing needs to be shared with the handler. Event mode is the reference. */
static int pipe_send(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    (void)ctx;
    return tc_conn_send(c, msg, len);
}

static int pipe_write(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    tc_codec_envelope env;
    (void)ctx;
    int rc = tc_codec_encode(tc_conn_codec(c), msg, len, &env);
    ssize_t w = 0;
    if (rc < 0)
        return rc;
    if ((w = tc_conn_write(c, env.head, env.head_len)) >= 0 &&
        (w = tc_conn_write(c, msg, len)) >= 0)
        w = tc_conn_write(c, env.tail, env.tail_len);
    return w < 0 ? (int)w : 0;
}

/* What the client writes and what it must read back. */
struct pipeline {
    const char *name;
    const char *burst; /* one frame, then the start of the next: one write */
    size_t burst_len;
    const char *reply1; /* the reply to the whole frame */
    size_t reply1_len;
    const char *rest; /* completes the second frame */
    size_t rest_len;
    const char *reply2;
    size_t reply2_len;
};

/* A string literal and its length (without the final NUL; it may hold others). */
#define LIT(s) s, sizeof s - 1

static const struct pipeline line_pipeline = {
    "line", LIT("ab\ncd"), LIT("ab\n"), LIT("\n"), LIT("cd\n"),
};

/* One 4-byte length-prefixed frame, then the header and half the payload of the next. */
static const struct pipeline len32_pipeline = {
    "len32",
    LIT("\0\0\0\2ab"
        "\0\0\0\4cd"),
    LIT("\0\0\0\2ab"),
    LIT("ef"),
    LIT("\0\0\0\4cdef"),
};

#define PIPELINE_REPLY_MS 2000 /* the bound for a reply (scaled); event mode takes < 1 ms */

/* Wait (bounded) for n bytes of reply and compare them with want. */
static void expect_bytes(int fd, const char *want, size_t n, const char *what)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int ms = tc_test_ms(PIPELINE_REPLY_MS), r;
    do
        r = poll(&p, 1, ms);
    while (r < 0 && errno == EINTR);
    cr_assert_eq(r, 1, "%s: no reply within %d ms", what, ms);
    char buf[16];
    cr_assert_leq(n, sizeof buf);
    ssize_t got = tc_test_recv_full(fd, buf, n);
    cr_assert_eq(got, (ssize_t)n, "%s: %zd of %zu bytes", what, got, n);
    cr_assert_eq(memcmp(buf, want, n), 0, "%s: wrong bytes", what);
}

static void partial_frame_after_a_complete_one(tc_mode mode, int buffered,
                                               const struct pipeline *pl)
{
    if (!tc_test_mode_enabled(mode))
        cr_skip_test("mode %s not selected by TC_TEST_MODES", tc_mode_name(mode));
    tc_server_config cfg = tc_test_config();
    cfg.mode = mode;
    cfg.workers = 2; /* pool, event */
    if (pl == &len32_pipeline)
        tc_codec_length_prefixed(&cfg.codec, 4, TC_BIG_ENDIAN);
    else
        tc_codec_delimited(&cfg.codec, "\n", 1);
    tc_handler h = TC_HANDLER_INIT;
    h.on_message = buffered ? pipe_write : pipe_send;
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    int fd = tc_test_connect_ok(&ts.addr);
    char what[128];
    snprintf(what, sizeof what, "%s mode, %s codec, reply with %s", tc_mode_name(mode), pl->name,
             buffered ? "tc_conn_write (buffered)" : "tc_conn_send");

    /* One write: a complete frame and part of the next. */
    ssize_t w = send(fd, pl->burst, pl->burst_len, MSG_NOSIGNAL);
    cr_assert_eq(w, (ssize_t)pl->burst_len, "send: %s", strerror(errno));
    char step[192];
    snprintf(step, sizeof step, "%s: the first frame's reply, the second frame incomplete", what);
    expect_bytes(fd, pl->reply1, pl->reply1_len, step);
    char extra;
    cr_assert_eq(recv(fd, &extra, 1, MSG_DONTWAIT), -1, "%s: a reply to an incomplete frame",
                 what);

    /* The rest of the second frame: its reply, then a clean end. */
    cr_assert_eq(tc_test_send_all(fd, pl->rest, pl->rest_len), 0);
    snprintf(step, sizeof step, "%s: the second frame's reply", what);
    expect_bytes(fd, pl->reply2, pl->reply2_len, step);
    cr_assert_eq(shutdown(fd, SHUT_WR), 0);
    cr_assert_eq(tc_test_recv_eof(fd), 0, "%s: no end of stream after the half-close", what);
    /* shutdown first: forked children hold copies of this socket. */
    shutdown(fd, SHUT_RDWR);
    close(fd);
    cr_assert_eq(tc_test_server_stop(&ts), 0);
}

/* name_<mode> for every mode; .fini reaps a forking server's children even
 * when an assertion ends the test early. */
#define EVERY_MODE(name, ...)                                                                      \
    Test(message, name##_inline, .fini = tc_test_kill_children)                                    \
    {                                                                                              \
        partial_frame_after_a_complete_one(TC_MODE_INLINE, __VA_ARGS__);                           \
    }                                                                                              \
    Test(message, name##_threading, .fini = tc_test_kill_children)                                 \
    {                                                                                              \
        partial_frame_after_a_complete_one(TC_MODE_THREADING, __VA_ARGS__);                        \
    }                                                                                              \
    Test(message, name##_forking, .fini = tc_test_kill_children)                                   \
    {                                                                                              \
        partial_frame_after_a_complete_one(TC_MODE_FORKING, __VA_ARGS__);                          \
    }                                                                                              \
    Test(message, name##_pool, .fini = tc_test_kill_children)                                      \
    {                                                                                              \
        partial_frame_after_a_complete_one(TC_MODE_POOL, __VA_ARGS__);                             \
    }                                                                                              \
    Test(message, name##_event, .fini = tc_test_kill_children)                                     \
    {                                                                                              \
        partial_frame_after_a_complete_one(TC_MODE_EVENT, __VA_ARGS__);                            \
    }

EVERY_MODE(partial_line_after_a_complete_one_sent, 0, &line_pipeline)
EVERY_MODE(partial_line_after_a_complete_one_buffered, 1, &line_pipeline)
EVERY_MODE(partial_len32_after_a_complete_one_sent, 0, &len32_pipeline)
EVERY_MODE(partial_len32_after_a_complete_one_buffered, 1, &len32_pipeline)
