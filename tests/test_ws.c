/* SPDX-License-Identifier: MIT */
/* WebSocket servers (ws.h) in every mode, with a raw client written here:
 * the handshake and its refusals, then one test per group of the Autobahn
 * testsuite (framing, pings/pongs, reserved bits, opcodes, fragmentation,
 * UTF-8 handling, limits, close handling), each asserting the bytes the
 * server sends back and how the connection ends. Servers listen on
 * 127.0.0.1:0 in a thread; what the handlers see is kept in shared memory
 * (forking mode runs them in children). */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <tcpchan/tcpchan.h>

#include "helpers.h"

TestSuite(ws, .timeout = 60);

#define MODE_PARAMS(test)                                                                          \
    ParameterizedTestParameters(ws, test)                                                          \
    {                                                                                              \
        static const tc_mode want[] = {TC_MODE_INLINE, TC_MODE_THREADING, TC_MODE_FORKING,       \
                                       TC_MODE_POOL, TC_MODE_EVENT};                               \
        static tc_mode params[5];                                                                  \
        size_t n = 0;                                                                              \
        for (size_t i = 0; i < 5; i++)                                                             \
            if (tc_test_mode_enabled(want[i]))                                                     \
                params[n++] = want[i];                                                             \
        return cr_make_param_array(tc_mode, params, n);                                            \
    }

/* ---- what the server saw (shared with forked children) ---------------------------- */

struct seen {
    atomic_int closes, last_reason, last_code, errors, last_error, opens;
    char path[128];
    char close_reason[128]; /* the peer's, from the last on_close (reason_lock) */
    atomic_flag reason_lock; /* a spin lock over path and close_reason: their callbacks
                              * may run in two threads or processes at once */
};

static struct seen *seen;

static void reason_lock(void)
{
    while (atomic_flag_test_and_set(&seen->reason_lock))
        ;
}

static void reason_unlock(void)
{
    atomic_flag_clear(&seen->reason_lock);
}

/* The last close reason on_close saw, copied out under the lock. */
static const char *last_close_reason(char *out, size_t n)
{
    reason_lock();
    snprintf(out, n, "%s", seen->close_reason);
    reason_unlock();
    return out;
}

static void seen_map(void)
{
    seen = mmap(NULL, sizeof *seen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(seen, MAP_FAILED);
    memset(seen, 0, sizeof *seen);
}

static int echo(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    (void)ctx;
    if (len == 5 && !memcmp(msg, "close", 5))
        return tc_ws_close(c, 4001, "asked");
    if (len == 5 && !memcmp(msg, "parts", 5)) { /* the answer in three fragments */
        ssize_t r = tc_ws_send_part(c, TC_WS_TEXT, "ab", 2, 0);
        if (r >= 0)
            r = tc_ws_send_part(c, TC_WS_TEXT, "cd", 2, 0);
        if (r >= 0)
            r = tc_ws_send_part(c, TC_WS_TEXT, "ef", 2, 1);
        return r < 0 ? (int)r : 0;
    }
    ssize_t n = tc_ws_send(c, (tc_ws_type)tc_ws_message_type(c), msg, len);
    return n < 0 ? (int)n : 0;
}

static tc_conn *_Atomic opened_conn; /* the last connection opened (in this process) */

static int on_open(tc_conn *c, void *ctx)
{
    (void)ctx;
    atomic_store(&opened_conn, c);
    const char *p = tc_ws_path(c);
    reason_lock(); /* the same lock: another connection's on_open may write it too */
    snprintf(seen->path, sizeof seen->path, "%s", p ? p : "(null)");
    reason_unlock();
    atomic_fetch_add(&seen->opens, 1);
    return 0;
}

static void on_close(tc_conn *c, int reason, void *ctx)
{
    (void)ctx;
    atomic_store(&seen->last_reason, reason);
    atomic_store(&seen->last_code, tc_ws_close_code(c));
    const char *why = tc_ws_close_reason(c);
    reason_lock();
    snprintf(seen->close_reason, sizeof seen->close_reason, "%s", why ? why : "(null)");
    reason_unlock();
    atomic_fetch_add(&seen->closes, 1);
}

static void on_error(tc_server *srv, tc_conn *c, int err, void *ctx)
{
    (void)srv, (void)c, (void)ctx;
    atomic_store(&seen->last_error, err);
    atomic_fetch_add(&seen->errors, 1);
}

static int refuse_evil(tc_conn *c, const tc_ws_request *req, const char **sub, void *ctx)
{
    (void)c, (void)ctx;
    if (req->origin && !strcmp(req->origin, "http://evil.example"))
        return 403;
    if (!strcmp(req->path, "/missing"))
        return 404;
    if (req->protocols)
        *sub = "chat";
    return 0;
}

static int page(tc_conn *c, const tc_ws_request *req, void *ctx)
{
    (void)ctx;
    const char *body = "<p>hello</p>";
    return tc_conn_printf(c,
                          "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n"
                          "Connection: close\r\n\r\n%s%s",
                          strlen(body) + strlen(req->path), body, req->path) < 0 ? -EIO : 0;
}

static tc_ws_config ws_cfg;
static int keepalive_ms; /* ws_cfg.ping_interval_ms of the next start() */

static void start(tc_test_server *ts, tc_mode mode, size_t max_frame)
{
    seen_map();
    tc_server_config cfg = tc_test_config();
    tc_handler h = TC_HANDLER_INIT;
    tc_ws_config_init(&ws_cfg);
    ws_cfg.on_handshake = refuse_evil;
    ws_cfg.on_http = NULL;
    ws_cfg.close_timeout_ms = tc_test_ms(2000);
    ws_cfg.ping_interval_ms = keepalive_ms;
    ws_cfg.ping_timeout_ms = keepalive_ms * 2;
    cfg.mode = mode;
    cfg.workers = 2;
    cfg.ws = &ws_cfg;
    cfg.hooks.handle_error = on_error;
    if (max_frame)
        tc_codec_set_max_frame(&cfg.codec, max_frame);
    h.on_message = echo;
    h.on_open = on_open;
    h.on_close = on_close;
    tc_test_server_start(ts, NULL, &cfg, &h);
}

static void stop(tc_test_server *ts)
{
    tc_test_server_stop(ts);
    munmap(seen, sizeof *seen);
}

/* ---- a raw client ------------------------------------------------------------------ */

/* Read an HTTP response head into buf (NUL-terminated): its length, asserted. */
static size_t read_head(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = recv(fd, buf + n, 1, 0); /* byte by byte: nothing past the head */
        if (r < 0 && errno == EINTR)
            continue; /* a forked server's child ended (SIGCHLD) */
        cr_assert_eq(r, 1, "response head cut short after %zu bytes (%zd, %s)", n, r,
                     r < 0 ? strerror(errno) : "end of stream");
        n++;
        buf[n] = '\0';
        if (n >= 4 && !memcmp(buf + n - 4, "\r\n\r\n", 4))
            return n;
    }
    cr_assert_fail("response head too long");
    return 0;
}

static const char *KEY = "dGhlIHNhbXBsZSBub25jZQ==";

/* Connect and send a request with extra header lines; the response head in buf. */
static int request(const tc_addr *a, const char *path, const char *extra, char *buf, size_t cap)
{
    int fd = tc_test_connect_ok(a);
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s\r\n",
                     path, KEY, extra ? extra : "");
    cr_assert_eq(tc_test_send_all(fd, req, (size_t)n), 0);
    read_head(fd, buf, cap);
    return fd;
}

/* A connection past the handshake. */
static int ws_connect(const tc_addr *a)
{
    char head[1024];
    int fd = request(a, "/", NULL, head, sizeof head);
    cr_assert(!strncmp(head, "HTTP/1.1 101 ", 13), "%s", head);
    cr_assert_not_null(strstr(head, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    return fd;
}

/* One client frame: masked unless told otherwise; rsv bits as given. */
static void send_frame(int fd, int fin, int rsv, int op, int masked, const void *p, size_t n)
{
    static const unsigned char key[4] = {0xa1, 0xb2, 0xc3, 0xd4};
    unsigned char *f = malloc(n + 14);
    cr_assert_not_null(f);
    size_t h = 2;
    f[0] = (unsigned char)((fin ? 0x80 : 0) | (rsv << 4) | op);
    unsigned char m = masked ? 0x80 : 0;
    if (n < 126) {
        f[1] = (unsigned char)(m | n);
    } else if (n < 65536) {
        f[1] = m | 126;
        f[2] = (unsigned char)(n >> 8);
        f[3] = (unsigned char)n;
        h = 4;
    } else {
        f[1] = m | 127;
        for (int i = 0; i < 8; i++)
            f[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
        h = 10;
    }
    if (masked) {
        memcpy(f + h, key, 4);
        h += 4;
    }
    for (size_t i = 0; i < n; i++)
        f[h + i] = ((const unsigned char *)p)[i] ^ (masked ? key[i & 3] : 0);
    cr_assert_eq(tc_test_send_all(fd, f, h + n), 0);
    free(f);
}

/* Read one server frame: its opcode; the payload (malloc'd) in *out. */
static int read_frame(int fd, unsigned char **out, size_t *len)
{
    unsigned char h[10];
    cr_assert_eq(tc_test_recv_full(fd, h, 2), 2, "no frame");
    cr_assert_eq(h[1] & 0x80, 0, "a server frame is masked");
    cr_assert_eq(h[0] & 0x70, 0, "reserved bits from the server");
    uint64_t n = h[1] & 127;
    if (n == 126) {
        cr_assert_eq(tc_test_recv_full(fd, h + 2, 2), 2);
        n = (uint64_t)h[2] << 8 | h[3];
    } else if (n == 127) {
        cr_assert_eq(tc_test_recv_full(fd, h + 2, 8), 8);
        n = 0;
        for (int i = 0; i < 8; i++)
            n = n << 8 | h[2 + i];
    }
    *out = malloc(n ? n : 1);
    cr_assert_not_null(*out);
    if (n)
        cr_assert_eq(tc_test_recv_full(fd, *out, n), (ssize_t)n);
    *len = n;
    cr_assert(h[0] & 0x80, "a fragmented server frame");
    return h[0] & 15;
}

static void expect_message(int fd, int op, const void *p, size_t n)
{
    unsigned char *got;
    size_t len;
    int o = read_frame(fd, &got, &len);
    cr_assert_eq(o, op, "opcode %d, want %d", o, op);
    cr_assert_eq(len, n);
    cr_assert_eq(memcmp(got, p, n), 0);
    free(got);
}

/* A close frame with code comes next, then the end of the stream. */
static void expect_close(int fd, int code)
{
    unsigned char *got;
    size_t len;
    int o = read_frame(fd, &got, &len);
    cr_assert_eq(o, 8, "opcode %d, want close", o);
    cr_assert_geq(len, code ? 2 : 0);
    if (code)
        cr_assert_eq(got[0] << 8 | got[1], code, "close code %d, want %d", got[0] << 8 | got[1],
                     code);
    free(got);
    cr_assert_eq(tc_test_recv_eof(fd), 0, "no end of stream after the close");
}

/* The server answered a protocol error with code: answer its close (as a
 * client does), see the end; the session reported err. */
static void expect_failure(int fd, int code, int err)
{
    expect_close(fd, code);
    unsigned char p[2] = {(unsigned char)(code >> 8), (unsigned char)code};
    send_frame(fd, 1, 0, 8, 1, p, 2);
    /* shutdown, not only close: a forked server's child holds a copy of fd */
    shutdown(fd, SHUT_RDWR);
    close(fd);
    TC_TEST_WAIT_UNTIL(atomic_load(&seen->closes) >= 1, TC_TEST_WAIT_MS);
    cr_assert_eq(atomic_load(&seen->closes), 1);
    cr_assert_eq(atomic_load(&seen->last_reason), err, "on_close reason %d (%s), want %d",
                 atomic_load(&seen->last_reason), tc_err_name(atomic_load(&seen->last_reason)),
                 err);
    cr_assert_eq(atomic_load(&seen->last_error), err);
}

/* ---- the handshake ------------------------------------------------------------------- */

Test(ws, accept_key_rfc6455_example)
{
    char out[29];
    cr_assert_eq(tc_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out), 0);
    cr_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    cr_assert_eq(tc_ws_accept_key("short", out), -EINVAL);
    cr_assert_eq(tc_ws_accept_key(NULL, out), -EINVAL);
    tc_ws_config c, z;
    memset(&c, 0x5a, sizeof c);
    memset(&z, 0, sizeof z);
    tc_ws_config_init(&c);
    cr_assert_eq(memcmp(&c, &z, sizeof c), 0);
}

Test(ws, config_errors)
{
    tc_server_config cfg = tc_test_config();
    tc_ws_config w = TC_WS_CONFIG_INIT;
    tc_handler h = tc_test_echo_handler(); /* a stream handler */
    tc_server *srv;
    cfg.ws = &w;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
    cr_assert_not_null(strstr(tc_last_error_detail(), "ws"));
    h = (tc_handler)TC_HANDLER_INIT;
    h.on_message = echo;
    w.close_timeout_ms = -1;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
    cr_assert_not_null(strstr(tc_last_error_detail(), "close_timeout_ms"));
}

MODE_PARAMS(handshake)
ParameterizedTest(tc_mode *mode, ws, handshake)
{
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_test_server ts;
    start(&ts, *mode, 0);
    char head[2048];
    /* Accepted, with the subprotocol chosen among those offered and the path kept. */
    int fd = request(&ts.addr, "/room/1?x=y", "Sec-WebSocket-Protocol: superchat, chat\r\n"
                     "Origin: http://good.example\r\n", head, sizeof head);
    cr_assert(!strncmp(head, "HTTP/1.1 101 ", 13), "%s", head);
    cr_assert_not_null(strstr(head, "Sec-WebSocket-Protocol: chat\r\n"), "%s", head);
    cr_assert_not_null(strstr(head, "Upgrade: websocket\r\n"));
    send_frame(fd, 1, 0, 1, 1, "hi", 2);
    expect_message(fd, 1, "hi", 2);
    cr_assert_str_eq(seen->path, "/room/1?x=y");
    close(fd);
    /* Refused by the hook: its status, then the end. */
    fd = request(&ts.addr, "/", "Origin: http://evil.example\r\n", head, sizeof head);
    cr_assert(!strncmp(head, "HTTP/1.1 403 ", 13), "%s", head);
    close(fd);
    fd = request(&ts.addr, "/missing", NULL, head, sizeof head);
    cr_assert(!strncmp(head, "HTTP/1.1 404 ", 13), "%s", head);
    close(fd);
    /* Another version: 426 naming ours. */
    fd = tc_test_connect_ok(&ts.addr);
    const char *v8 = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 8\r\n\r\n";
    cr_assert_eq(tc_test_send_all(fd, v8, strlen(v8)), 0);
    read_head(fd, head, sizeof head);
    cr_assert(!strncmp(head, "HTTP/1.1 426 ", 13), "%s", head);
    cr_assert_not_null(strstr(head, "Sec-WebSocket-Version: 13\r\n"));
    close(fd);
    /* An upgrade over HTTP/1.0: 400 (RFC 6455 asks for 1.1 or later). */
    fd = tc_test_connect_ok(&ts.addr);
    const char *h10 = "GET / HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n";
    cr_assert_eq(tc_test_send_all(fd, h10, strlen(h10)), 0);
    read_head(fd, head, sizeof head);
    cr_assert(!strncmp(head, "HTTP/1.1 400 ", 13), "%s", head);
    close(fd);
    /* A key that is not 16 bytes of base64: 400. */
    fd = tc_test_connect_ok(&ts.addr);
    const char *badkey = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\n"
                         "Sec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n\r\n";
    cr_assert_eq(tc_test_send_all(fd, badkey, strlen(badkey)), 0);
    read_head(fd, head, sizeof head);
    cr_assert(!strncmp(head, "HTTP/1.1 400 ", 13), "%s", head);
    cr_assert_eq(tc_test_recv_eof(fd), 1); /* the body, then ... */
    close(fd);
    /* Plain HTTP without Upgrade: 426, and closed. */
    fd = tc_test_connect_ok(&ts.addr);
    const char *plain = "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n";
    cr_assert_eq(tc_test_send_all(fd, plain, strlen(plain)), 0);
    read_head(fd, head, sizeof head);
    cr_assert(!strncmp(head, "HTTP/1.1 426 ", 13), "%s", head);
    char body[64];
    cr_assert_eq(tc_test_recv_full(fd, body, sizeof body), (ssize_t)strlen("Upgrade Required\n"));
    close(fd);
    /* A head over 16 KiB: 431. */
    fd = tc_test_connect_ok(&ts.addr);
    char *big = malloc(20000);
    cr_assert_not_null(big);
    int n = sprintf(big, "GET / HTTP/1.1\r\nX: ");
    memset(big + n, 'a', 20000 - (size_t)n);
    (void)tc_test_send_all(fd, big, 20000);
    read_head(fd, head, sizeof head);
    cr_assert(!strncmp(head, "HTTP/1.1 431 ", 13), "%s", head);
    free(big);
    close(fd);
    /* Not HTTP at all: 400. */
    fd = tc_test_connect_ok(&ts.addr);
    cr_assert_eq(tc_test_send_all(fd, "\x16\x03\x01\x00", 4), 0);
    read_head(fd, head, sizeof head);
    cr_assert(!strncmp(head, "HTTP/1.1 400 ", 13), "%s", head);
    close(fd);
    cr_assert_eq(atomic_load(&seen->opens), 1, "a refused request reached on_open");
    stop(&ts);
    tc_test_expect_counts(before, NULL, 0, "after the handshakes");
}

/* on_http answers plain requests: one port serves a page and its socket. */
MODE_PARAMS(plain_http_hook)
ParameterizedTest(tc_mode *mode, ws, plain_http_hook)
{
    tc_test_server ts;
    seen_map();
    tc_server_config cfg = tc_test_config();
    tc_handler h = TC_HANDLER_INIT;
    tc_ws_config w = TC_WS_CONFIG_INIT;
    w.on_http = page;
    cfg.mode = *mode;
    cfg.workers = 2;
    cfg.ws = &w;
    h.on_message = echo;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    int fd = tc_test_connect_ok(&ts.addr);
    const char *get = "GET /x HTTP/1.1\r\nHost: x\r\n\r\n";
    cr_assert_eq(tc_test_send_all(fd, get, strlen(get)), 0);
    char resp[256];
    ssize_t r = tc_test_recv_full(fd, resp, sizeof resp - 1);
    cr_assert_gt(r, 0);
    resp[r] = '\0';
    cr_assert(!strncmp(resp, "HTTP/1.1 200 OK\r\n", 17), "%s", resp);
    cr_assert_not_null(strstr(resp, "\r\n\r\n<p>hello</p>/x"), "%s", resp);
    close(fd);
    int ws = ws_connect(&ts.addr);
    send_frame(ws, 1, 0, 2, 1, "b", 1);
    expect_message(ws, 2, "b", 1);
    close(ws);
    stop(&ts);
}

/* ---- Autobahn's groups ----------------------------------------------------------------- */

/* 1.x: text and binary of 7, 16 and 64-bit lengths echoed, a frame split in pieces too. */
MODE_PARAMS(framing)
ParameterizedTest(tc_mode *mode, ws, framing)
{
    tc_test_server ts;
    start(&ts, *mode, 0);
    int fd = ws_connect(&ts.addr);
    static const size_t sizes[] = {0, 125, 126, 65535, 65536, 200000};
    unsigned char *p = malloc(200000);
    cr_assert_not_null(p);
    for (size_t i = 0; i < 200000; i++)
        p[i] = (unsigned char)('a' + i % 26);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        send_frame(fd, 1, 0, 1, 1, p, sizes[i]);
        expect_message(fd, 1, p, sizes[i]);
        send_frame(fd, 1, 0, 2, 1, p, sizes[i]);
        expect_message(fd, 2, p, sizes[i]);
    }
    free(p);
    /* Two frames in one send, and the handshake's pipelined frame. */
    close(fd);
    fd = tc_test_connect_ok(&ts.addr);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                     "\x81\x82\x01\x02\x03\x04" "\x69\x6b", KEY); /* "hi" masked */
    cr_assert_eq(tc_test_send_all(fd, req, (size_t)n), 0);
    char head[512];
    read_head(fd, head, sizeof head);
    expect_message(fd, 1, "hi", 2);
    close(fd);
    stop(&ts);
}

/* 2.x: a ping is answered with a pong carrying its payload; a pong nobody asked for is ignored. */
MODE_PARAMS(pings_pongs)
ParameterizedTest(tc_mode *mode, ws, pings_pongs)
{
    tc_test_server ts;
    start(&ts, *mode, 0);
    int fd = ws_connect(&ts.addr);
    send_frame(fd, 1, 0, 9, 1, "ping!", 5);
    expect_message(fd, 10, "ping!", 5);
    send_frame(fd, 1, 0, 9, 1, "", 0);
    expect_message(fd, 10, "", 0);
    send_frame(fd, 1, 0, 10, 1, "unasked", 7);
    send_frame(fd, 1, 0, 1, 1, "after", 5);
    expect_message(fd, 1, "after", 5);
    /* A ping of 126 bytes breaks the rules: 1002. */
    char big[126];
    memset(big, 'p', sizeof big);
    send_frame(fd, 1, 0, 9, 1, big, sizeof big);
    expect_failure(fd, 1002, TC_EBADFRAME);
    stop(&ts);
}

/* 3.x: a reserved bit without an extension: 1002. */
MODE_PARAMS(reserved_bits)
ParameterizedTest(tc_mode *mode, ws, reserved_bits)
{
    tc_test_server ts;
    start(&ts, *mode, 0);
    int fd = ws_connect(&ts.addr);
    send_frame(fd, 1, 0, 1, 1, "ok", 2);
    expect_message(fd, 1, "ok", 2);
    send_frame(fd, 1, 4, 1, 1, "rsv1", 4);
    expect_failure(fd, 1002, TC_EBADFRAME);
    stop(&ts);
}

/* 4.x: reserved opcodes (data 3 to 7, control 11 to 15): 1002; and an
 * unmasked client frame: 1002. */
MODE_PARAMS(opcodes)
ParameterizedTest(tc_mode *mode, ws, opcodes)
{
    tc_test_server ts;
    start(&ts, *mode, 0);
    int fd = ws_connect(&ts.addr);
    send_frame(fd, 1, 0, 3, 1, "x", 1);
    expect_failure(fd, 1002, TC_EBADFRAME);
    atomic_store(&seen->closes, 0);
    fd = ws_connect(&ts.addr);
    send_frame(fd, 1, 0, 11, 1, "", 0);
    expect_failure(fd, 1002, TC_EBADFRAME);
    atomic_store(&seen->closes, 0);
    fd = ws_connect(&ts.addr);
    send_frame(fd, 1, 0, 2, 0, "unmasked", 8);
    expect_failure(fd, 1002, TC_EBADFRAME);
    stop(&ts);
}

/* 5.x: fragments joined, pings between them answered first, 1-byte
 * fragments; a continuation of nothing: 1002. */
MODE_PARAMS(fragmentation)
ParameterizedTest(tc_mode *mode, ws, fragmentation)
{
    tc_test_server ts;
    start(&ts, *mode, 0);
    int fd = ws_connect(&ts.addr);
    send_frame(fd, 0, 0, 1, 1, "frag", 4);
    send_frame(fd, 1, 0, 9, 1, "mid", 3);
    expect_message(fd, 10, "mid", 3); /* answered before the message is whole */
    send_frame(fd, 0, 0, 0, 1, "men", 3);
    send_frame(fd, 1, 0, 0, 1, "ted", 3);
    expect_message(fd, 1, "fragmented", 10);
    const char *one = "one byte at a time";
    for (size_t i = 0; one[i]; i++)
        send_frame(fd, one[i + 1] == '\0', 0, i ? 0 : 2, 1, one + i, 1);
    expect_message(fd, 2, one, strlen(one));
    send_frame(fd, 1, 0, 0, 1, "orphan", 6);
    expect_failure(fd, 1002, TC_EBADFRAME);
    stop(&ts);
}

/* 6.x: text must be UTF-8 (1007), also across fragments; a character split
 * between fragments is fine. */
MODE_PARAMS(utf8_handling)
ParameterizedTest(tc_mode *mode, ws, utf8_handling)
{
    tc_test_server ts;
    start(&ts, *mode, 0);
    int fd = ws_connect(&ts.addr);
    send_frame(fd, 0, 0, 1, 1, "\xce\xba\xe1", 3);
    send_frame(fd, 1, 0, 0, 1, "\xbd\xb9", 2);
    expect_message(fd, 1, "\xce\xba\xe1\xbd\xb9", 5);
    send_frame(fd, 0, 0, 1, 1, "ok", 2);
    send_frame(fd, 1, 0, 0, 1, "\xed\xa0\x80", 3); /* a surrogate */
    expect_failure(fd, 1007, TC_EBADFRAME);
    stop(&ts);
}

/* 9.x and the limit: a message over max_frame is refused (1009) from its
 * header, even while its payload still streams in; across fragments too. */
MODE_PARAMS(limits)
ParameterizedTest(tc_mode *mode, ws, limits)
{
    tc_test_server ts;
    start(&ts, *mode, 1000);
    int fd = ws_connect(&ts.addr);
    unsigned char *p = calloc(1, 300000);
    cr_assert_not_null(p);
    send_frame(fd, 1, 0, 2, 1, p, 1000);
    expect_message(fd, 2, p, 1000);
    send_frame(fd, 1, 0, 2, 1, p, 300000); /* the server reads the header only */
    expect_failure(fd, 1009, TC_ETOOBIG);
    atomic_store(&seen->closes, 0);
    fd = ws_connect(&ts.addr);
    send_frame(fd, 0, 0, 2, 1, p, 600);
    send_frame(fd, 1, 0, 0, 1, p, 401);
    expect_failure(fd, 1009, TC_ETOOBIG);
    free(p);
    stop(&ts);
}

/* 7.x: the client's close is answered with its code and ends the session
 * cleanly; the handler's close waits for the client's answer; bad codes: 1002. */
MODE_PARAMS(close_handling)
ParameterizedTest(tc_mode *mode, ws, close_handling)
{
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_test_server ts;
    start(&ts, *mode, 0);
    int fd = ws_connect(&ts.addr);
    send_frame(fd, 1, 0, 8, 1, "\x03\xe8" "done", 6);
    expect_close(fd, 1000);
    close(fd);
    TC_TEST_WAIT_UNTIL(atomic_load(&seen->closes) >= 1, TC_TEST_WAIT_MS);
    cr_assert_eq(atomic_load(&seen->last_reason), 0);
    cr_assert_eq(atomic_load(&seen->last_code), 1000);
    char why[128];
    cr_assert_str_eq(last_close_reason(why, sizeof why), "done");
    /* A close without a code: an empty one back; the code seen is 1005. */
    atomic_store(&seen->closes, 0);
    fd = ws_connect(&ts.addr);
    send_frame(fd, 1, 0, 8, 1, "", 0);
    expect_close(fd, 0);
    close(fd);
    TC_TEST_WAIT_UNTIL(atomic_load(&seen->closes) >= 1, TC_TEST_WAIT_MS);
    cr_assert_eq(atomic_load(&seen->last_code), 1005);
    cr_assert_str_eq(last_close_reason(why, sizeof why), "");
    /* The handler closes (tc_ws_close): its code comes, then the session
     * waits for the client's answer and ends cleanly. */
    atomic_store(&seen->closes, 0);
    fd = ws_connect(&ts.addr);
    send_frame(fd, 1, 0, 1, 1, "close", 5);
    unsigned char *got;
    size_t len;
    cr_assert_eq(read_frame(fd, &got, &len), 8);
    cr_assert_eq(len, 2 + strlen("asked"));
    cr_assert_eq(got[0] << 8 | got[1], 4001);
    free(got);
    send_frame(fd, 1, 0, 1, 1, "dropped", 7); /* the server is closing: not echoed */
    send_frame(fd, 1, 0, 8, 1, "\x0f\xa1", 2);
    cr_assert_eq(tc_test_recv_eof(fd), 0);
    close(fd);
    TC_TEST_WAIT_UNTIL(atomic_load(&seen->closes) >= 1, TC_TEST_WAIT_MS);
    cr_assert_eq(atomic_load(&seen->last_reason), 0);
    cr_assert_eq(atomic_load(&seen->last_code), 4001);
    /* An invalid code: 1002. */
    atomic_store(&seen->closes, 0);
    fd = ws_connect(&ts.addr);
    send_frame(fd, 1, 0, 8, 1, "\x03\xed", 2); /* 1005 may not be sent */
    expect_failure(fd, 1002, TC_EBADFRAME);
    cr_assert_eq(atomic_load(&seen->errors), 1);
    stop(&ts);
    tc_test_expect_counts(before, NULL, 0, "after the closes");
}

/* A peer that never answers the server's close is dropped after close_timeout_ms. */
MODE_PARAMS(close_timeout)
ParameterizedTest(tc_mode *mode, ws, close_timeout)
{
    tc_test_server ts;
    start(&ts, *mode, 0);
    int fd = ws_connect(&ts.addr);
    int64_t t0 = tc_test_now_ms();
    send_frame(fd, 1, 0, 1, 1, "close", 5);
    unsigned char *got;
    size_t len;
    cr_assert_eq(read_frame(fd, &got, &len), 8);
    free(got);
    /* Say nothing: the server ends it. */
    cr_assert_eq(tc_test_recv_eof(fd), 0);
    int64_t took = tc_test_now_ms() - t0;
    cr_assert_geq(took, 1500, "closed after %lld ms", (long long)took);
    close(fd);
    stop(&ts);
}

/* Keepalive: a silent peer gets pings; answering keeps it open, silence
 * through a ping's timeout closes it (-ETIMEDOUT). */
MODE_PARAMS(keepalive)
ParameterizedTest(tc_mode *mode, ws, keepalive)
{
    tc_test_server ts;
    keepalive_ms = tc_test_ms(200);
    start(&ts, *mode, 0);
    int fd = ws_connect(&ts.addr);
    for (int i = 0; i < 2; i++) {
        unsigned char *got;
        size_t len;
        cr_assert_eq(read_frame(fd, &got, &len), 9, "no ping");
        cr_assert_eq(len, 7);
        cr_assert_eq(memcmp(got, "tcpchan", 7), 0);
        send_frame(fd, 1, 0, 10, 1, got, len);
        free(got);
    }
    send_frame(fd, 1, 0, 1, 1, "still here", 10);
    expect_message(fd, 1, "still here", 10);
    /* Now silent: a ping, then the end after its timeout. */
    int64_t t0 = tc_test_now_ms();
    unsigned char *got;
    size_t len;
    cr_assert_eq(read_frame(fd, &got, &len), 9);
    free(got);
    cr_assert_eq(tc_test_recv_eof(fd), 0);
    cr_assert_geq(tc_test_now_ms() - t0, keepalive_ms * 2 - 50);
    close(fd);
    TC_TEST_WAIT_UNTIL(atomic_load(&seen->closes) >= 1, TC_TEST_WAIT_MS);
    cr_assert_eq(atomic_load(&seen->last_reason), -ETIMEDOUT);
    stop(&ts);
}

/* The client (tc_ws_dial, tc_ws_recv) against the server: messages both
 * ways with their types, the close handshake from either side, refusals. */
MODE_PARAMS(dial_client)
ParameterizedTest(tc_mode *mode, ws, dial_client)
{
    tc_test_counts before = tc_test_counts_now(NULL, 0);
    tc_test_server ts;
    start(&ts, *mode, 0);
    char url[TC_ADDR_STRLEN + 32];
    snprintf(url, sizeof url, "ws://%s/dialled?q=1", ts.addr_str);
    tc_ws_dial_config dc;
    tc_ws_dial_config_init(&dc);
    dc.dial.timeout_ms = TC_TEST_WAIT_MS;
    dc.protocols = "chat";
    tc_conn *c;
    cr_assert_eq(tc_ws_dial(&c, url, &dc), 0, "%s", tc_last_error_detail());
    cr_assert_str_eq(tc_ws_subprotocol(c), "chat");
    static const size_t sizes[] = {0, 125, 126, 65536, 200000};
    char *p = malloc(200000);
    cr_assert_not_null(p);
    memset(p, 'z', 200000);
    for (size_t i = 0; i < 5; i++) {
        for (int type = TC_WS_TEXT; type <= TC_WS_BINARY; type++) {
            cr_assert_eq(tc_ws_send(c, (tc_ws_type)type, p, sizes[i]), (ssize_t)sizes[i]);
            const void *m;
            size_t len;
            cr_assert_eq(tc_ws_recv(c, &m, &len), type);
            cr_assert_eq(len, sizes[i]);
            cr_assert_eq(memcmp(m, p, len), 0);
        }
    }
    free(p);
    /* A message the server sends in fragments arrives whole. */
    cr_assert_eq(tc_ws_send(c, TC_WS_TEXT, "parts", 5), 5);
    const void *pm;
    size_t plen;
    cr_assert_eq(tc_ws_recv(c, &pm, &plen), TC_WS_TEXT);
    cr_assert_eq(plen, 6);
    cr_assert_eq(memcmp(pm, "abcdef", 6), 0);
    cr_assert_str_eq(seen->path, "/dialled?q=1");
    cr_assert_eq(tc_ws_close(c, 1000, "done"), 0);
    const void *m;
    size_t len;
    cr_assert_eq(tc_ws_recv(c, &m, &len), TC_EOF);
    cr_assert_eq(tc_ws_close_code(c), 1000);
    cr_assert_eq(tc_ws_send(c, TC_WS_TEXT, "x", 1), TC_ECLOSED);
    tc_conn_close(c);
    /* The server closes: its code, then the end. */
    cr_assert_eq(tc_ws_dial(&c, url, &dc), 0);
    cr_assert_eq(tc_ws_send(c, TC_WS_TEXT, "close", 5), 5);
    cr_assert_eq(tc_ws_recv(c, &m, &len), TC_EOF);
    cr_assert_eq(tc_ws_close_code(c), 4001);
    tc_conn_close(c);
    /* Refusals. */
    dc.origin = "http://evil.example";
    cr_assert_eq(tc_ws_dial(&c, url, &dc), TC_EDENIED);
    cr_assert_eq(tc_ws_dial(&c, "http://x/", NULL), TC_EBADADDR);
    cr_assert_not_null(strstr(tc_last_error_detail(), "ws://"));
    cr_assert_eq(tc_ws_recv(NULL, &m, &len), -EINVAL);
    stop(&ts);
    tc_test_expect_counts(before, NULL, 0, "after the dialled connections");
}

/* A client refuses a message over its own max_frame with 1009. */
Test(ws, dial_client_limit)
{
    tc_test_server ts;
    start(&ts, TC_MODE_EVENT, 0);
    char url[TC_ADDR_STRLEN + 32];
    snprintf(url, sizeof url, "ws://%s/", ts.addr_str);
    tc_ws_dial_config dc = TC_WS_DIAL_CONFIG_INIT;
    dc.dial.timeout_ms = TC_TEST_WAIT_MS;
    tc_codec_set_max_frame(&dc.dial.codec, 100);
    tc_conn *c;
    cr_assert_eq(tc_ws_dial(&c, url, &dc), 0);
    char p[200] = {0};
    cr_assert_eq(tc_ws_send(c, TC_WS_BINARY, p, sizeof p), (ssize_t)sizeof p);
    const void *m;
    size_t len;
    cr_assert_eq(tc_ws_recv(c, &m, &len), TC_ETOOBIG);
    tc_conn_close(c);
    TC_TEST_WAIT_UNTIL(atomic_load(&seen->closes) >= 1, TC_TEST_WAIT_MS);
    cr_assert_eq(atomic_load(&seen->last_code), 1009);
    stop(&ts);
}

/* Event and pool mode: tc_ws_send from a thread of the application (here
 * the test's), as tc_conn_send allows there; the frame arrives whole. */
ParameterizedTestParameters(ws, send_from_another_thread)
{
    static tc_mode params[] = {TC_MODE_EVENT, TC_MODE_POOL};
    size_t n = 0;
    for (size_t i = 0; i < 2; i++)
        if (tc_test_mode_enabled(params[i]))
            params[n++] = params[i];
    return cr_make_param_array(tc_mode, params, n);
}
ParameterizedTest(tc_mode *mode, ws, send_from_another_thread)
{
    tc_test_server ts;
    atomic_store(&opened_conn, NULL);
    start(&ts, *mode, 0);
    int fd = ws_connect(&ts.addr);
    TC_TEST_WAIT_UNTIL(atomic_load(&opened_conn) != NULL, TC_TEST_WAIT_MS);
    tc_conn *c = atomic_load(&opened_conn);
    cr_assert_not_null(c);
    char big[70000];
    memset(big, 'q', sizeof big);
    cr_assert_eq(tc_ws_send(c, TC_WS_TEXT, "pushed", 6), 6);
    cr_assert_eq(tc_ws_send(c, TC_WS_BINARY, big, sizeof big), (ssize_t)sizeof big);
    cr_assert_eq(tc_ws_send(c, TC_WS_TEXT, "\xff", 1), TC_EBADFRAME);
    expect_message(fd, 1, "pushed", 6);
    expect_message(fd, 2, big, sizeof big);
    send_frame(fd, 1, 0, 1, 1, "echo", 4);
    expect_message(fd, 1, "echo", 4);
    send_frame(fd, 1, 0, 8, 1, "\x03\xe8", 2);
    expect_close(fd, 1000);
    close(fd);
    stop(&ts);
}
