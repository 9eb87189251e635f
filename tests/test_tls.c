/* SPDX-License-Identifier: MIT */
/* libtcpchan-tls against real clients: Python's ssl module and openssl
 * s_client in every mode, tc_dial with TLS, and hostile clients (plaintext,
 * garbage, a truncated or stalled ClientHello, no close_notify). The
 * certificates are made at test time by the openssl command (no key in the
 * tree). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <tcpchan/tcpchan.h>
#include <tcpchan/tls.h>

#include "helpers.h"

#ifndef TC_SOURCE_DIR
#error "TC_SOURCE_DIR must be defined"
#endif
#define PY "/usr/bin/python3"
#define CLIENT_PY TC_SOURCE_DIR "/tests/tls/client.py"

TestSuite(tls, .timeout = 120, .fini = tc_test_kill_children);

/* ---- certificates ----------------------------------------------------------- */

static char dir[256];

static void run_ok(const char *cmd)
{
    int st = system(cmd);
    cr_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "failed: %s", cmd);
}

/* A CA, a server certificate for localhost and 127.0.0.1 (CN=server), a
 * second one for other.test (CN=other), a client one (CN=client), all
 * ECDSA P-256 and signed by the CA, in dir. */
static void make_certs(void)
{
    tc_test_tmpdir(dir, sizeof dir);
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "set -e; cd %s; K='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes'; "
             "openssl req -x509 $K -keyout ca.key -out ca.pem -days 2 -subj /CN=tc-test-ca "
             "2>/dev/null; "
             "mk() { openssl req $K -keyout $1.key -out $1.csr -subj /CN=$1 2>/dev/null; "
             "printf 'subjectAltName=%%s\\n' \"$2\" > $1.ext; "
             "openssl x509 -req -in $1.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
             "-extfile $1.ext -out $1.pem 2>/dev/null; rm -f $1.csr $1.ext; }; "
             "mk server DNS:localhost,IP:127.0.0.1; mk other DNS:other.test; "
             "mk client DNS:client; mk server2 DNS:localhost,IP:127.0.0.1; rm -f ca.srl",
             dir);
    run_ok(cmd);
}

static void rm_certs(void)
{
    tc_test_rmtree(dir);
}

static const char *path(const char *name)
{
    static char buf[8][320];
    static int i;
    char *p = buf[i++ % 8];
    snprintf(p, 320, "%s/%s", dir, name);
    return p;
}

/* ---- what the server saw, in shared memory (forking mode's children too) ----- */

struct seen {
    atomic_int opened, closed;
    int close_reason;
    tc_tls_info info;
    int info_rc;
    int peer_port, via_proxy;
};
static struct seen *seen;
static tc_test_event logs;

static void shared_init(void)
{
    seen = mmap(NULL, sizeof *seen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert(seen != MAP_FAILED);
    memset(seen, 0, sizeof *seen);
    tc_test_event_init(&logs);
}

static int on_open(tc_conn *c, void *ctx)
{
    (void)ctx;
    seen->info_rc = tc_tls_conn_info(c, &seen->info);
    atomic_fetch_add(&seen->opened, 1);
    return 0;
}

/* Echo; "bye" ends the connection (the server closes, with close_notify). */
static int on_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    (void)ctx;
    if (len == 3 && memcmp(msg, "bye", 3) == 0)
        return TC_EOF;
    ssize_t r = tc_conn_send(c, msg, len);
    return r < 0 ? (int)r : 0;
}

static void on_close(tc_conn *c, int reason, void *ctx)
{
    (void)c;
    (void)ctx;
    seen->close_reason = reason;
    atomic_fetch_add(&seen->closed, 1);
}

static tc_handler echo_handler(void)
{
    tc_handler h = {0};
    h.on_open = on_open;
    h.on_message = on_message;
    h.on_close = on_close;
    return h;
}

static tc_tls *server_tls(const tc_tls_config *extra)
{
    tc_tls_config c = TC_TLS_CONFIG_INIT;
    if (extra)
        c = *extra;
    if (!c.cert_file && !c.cert_pem) {
        c.cert_file = path("server.pem");
        c.key_file = path("server.key");
    }
    tc_tls *tls;
    int rc = tc_tls_server_create(&tls, &c);
    cr_assert_eq(rc, 0, "tc_tls_server_create: %s", tc_strerror(rc));
    return tls;
}

static void start(tc_test_server *ts, tc_mode mode, tc_tls *tls, tc_codec codec)
{
    tc_server_config cfg = tc_test_config();
    cfg.mode = mode;
    cfg.codec = codec;
    cfg.transport = tc_tls_transport(tls);
    cfg.hooks.log = tc_test_log_hook;
    cfg.hooks.ctx = &logs;
    tc_handler h = echo_handler();
    tc_test_server_start(ts, "127.0.0.1:0", &cfg, &h);
}

/* One TLS server under test (start's echo handler) and what it must leave
 * behind: the descriptors, threads and children of before. */
struct rig {
    const char *name;
    tc_test_counts before;
    tc_test_server ts;
};

static void rig_open(struct rig *g, tc_mode mode, tc_tls *tls, tc_codec codec)
{
    g->name = tc_mode_name(mode);
    shared_init();
    g->before = tc_test_counts_now(NULL, 0);
    start(&g->ts, mode, tls, codec);
}

/* Stop the server: nothing may leak. */
static void rig_close(struct rig *g)
{
    cr_assert_eq(tc_test_server_stop(&g->ts), 0, "%s: the server did not end cleanly", g->name);
    tc_test_expect_counts(g->before, NULL, 0, g->name);
}

static tc_codec line_codec(void)
{
    tc_codec c;
    cr_assert_eq(tc_codec_delimited(&c, "\n", 1), 0);
    return c;
}

/* Run the Python client with extra arguments: its exit status; its JSON line in out. */
static int python_at(int port, const char *args, char *out, size_t n)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "timeout 30 " PY " " CLIENT_PY " --port %d --ca %s %s", port,
             path("ca.pem"), args);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    out[0] = 0;
    size_t k = fread(out, 1, n - 1, f);
    out[k] = 0;
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int python(const tc_test_server *ts, const char *args, char *out, size_t n)
{
    return python_at(tc_addr_port(&ts->addr), args, out, n);
}

/* TC_TLS_QUICK (the sanitizer and valgrind runs): only the core cases run. */
static void not_quick(void)
{
    if (getenv("TC_TLS_QUICK"))
        cr_skip_test("TC_TLS_QUICK: left to the plain run");
}

static const tc_mode all_modes[] = {TC_MODE_INLINE, TC_MODE_THREADING, TC_MODE_FORKING,
                                    TC_MODE_POOL, TC_MODE_EVENT};

/* ---- real clients, every mode ---------------------------------------------------- */

Test(tls, python_every_mode_tls12_and_tls13)
{
    make_certs();
    tc_tls *tls = server_tls(NULL);
    for (size_t m = 0; m < sizeof all_modes / sizeof *all_modes; m++) {
        if (!tc_test_mode_enabled(all_modes[m]))
            continue;
        for (int v = 2; v <= 3; v++) {
            struct rig g;
            rig_open(&g, all_modes[m], tls, line_codec());
            char out[1024], args[128];
            snprintf(args, sizeof args, "--version 1.%d --lines 5", v);
            int st = python(&g.ts, args, out, sizeof out);
            cr_assert_eq(st, 0, "%s TLS 1.%d: %s", tc_mode_name(all_modes[m]), v, out);
            cr_assert(strstr(out, "\"echo_ok\": true"), "%s: %s", tc_mode_name(all_modes[m]), out);
            char want[32];
            snprintf(want, sizeof want, "\"TLSv1.%d\"", v);
            cr_assert(strstr(out, want), "%s: %s", tc_mode_name(all_modes[m]), out);
            TC_TEST_WAIT_UNTIL(atomic_load(&seen->closed) == 1, TC_TEST_WAIT_MS);
            cr_assert_eq(atomic_load(&seen->closed), 1, "%s", tc_mode_name(all_modes[m]));
            cr_assert_eq(seen->close_reason, 0, "%s TLS 1.%d: a close_notify is a clean end, got %s",
                         tc_mode_name(all_modes[m]), v, tc_strerror(seen->close_reason));
            cr_assert_eq(seen->info_rc, 0);
            cr_assert_str_eq(seen->info.version, want[0] == '"' ? (v == 2 ? "TLSv1.2" : "TLSv1.3")
                                                                 : "");
            rig_close(&g);
        }
    }
    tc_tls_destroy(tls);
    rm_certs();
}

Test(tls, s_client_every_mode)
{
    not_quick();
    make_certs();
    tc_tls *tls = server_tls(NULL);
    for (size_t m = 0; m < sizeof all_modes / sizeof *all_modes; m++) {
        if (!tc_test_mode_enabled(all_modes[m]))
            continue;
        for (int v = 2; v <= 3; v++) {
            struct rig g;
            rig_open(&g, all_modes[m], tls, line_codec());
            char cmd[1024];
            snprintf(cmd, sizeof cmd,
                     "printf 'hello tls\\nbye\\n' | timeout 20 openssl s_client -quiet "
                     "-connect 127.0.0.1:%d -tls1_%d -CAfile %s -verify_return_error "
                     "-servername localhost 2>/tmp/tls_sclient.err",
                     tc_addr_port(&g.ts.addr), v, path("ca.pem"));
            FILE *f = popen(cmd, "r");
            char out[256] = "";
            size_t k = fread(out, 1, sizeof out - 1, f);
            out[k] = 0;
            int st = pclose(f);
            cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: s_client failed",
                      tc_mode_name(all_modes[m]));
            cr_assert_str_eq(out, "hello tls\n", "%s TLS 1.%d: [%s]", tc_mode_name(all_modes[m]), v, out);
            TC_TEST_WAIT_UNTIL(atomic_load(&seen->closed) == 1, TC_TEST_WAIT_MS);
            cr_assert(seen->close_reason == 0 || seen->close_reason == TC_EOF, "%s: %s",
                      tc_mode_name(all_modes[m]),
                         tc_strerror(seen->close_reason));
            rig_close(&g);
        }
    }
    tc_tls_destroy(tls);
    rm_certs();
}

/* ---- hostile clients ------------------------------------------------------------- */

/* Wait for the server to close fd (an alert may come first): 0 or -ECONNRESET. */
static int closed_by_server(int fd)
{
    int rc = tc_test_recv_eof(fd);
    while (rc == 1) {
        char junk[512];
        ssize_t k = recv(fd, junk, sizeof junk, 0);
        rc = k == 0 ? 0 : k < 0 ? -errno : 1;
    }
    return rc;
}

#define STALL_MS 300

/* Four bad clients at once: plaintext HTTP, garbage, a ClientHello cut short
 * that then stalls, and one that says nothing. Each is closed (the stalled
 * ones after the handshake timeout, not before), the handler sees none of
 * them, and a good client is served afterwards. */
static void hostile(tc_mode mode, tc_tls *tls)
{
    static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    /* A TLS record header announcing a ClientHello, then too little of it. */
    static const unsigned char cut[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03};
    unsigned char garbage[700];
    for (size_t i = 0; i < sizeof garbage; i++)
        garbage[i] = (unsigned char)(i * 131 + 7);
    const void *what[4] = {http, garbage, cut, NULL};
    size_t len[4] = {sizeof http - 1, sizeof garbage, sizeof cut, 0};
    struct rig g;
    rig_open(&g, mode, tls, line_codec());
    int fd[4];
    int64_t t0 = tc_test_now_ms();
    for (int i = 0; i < 4; i++) {
        fd[i] = tc_test_connect_ok(&g.ts.addr);
        if (len[i])
            cr_assert_eq(tc_test_send_all(fd[i], what[i], len[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        int rc = closed_by_server(fd[i]);
        cr_assert(rc == 0 || rc == -ECONNRESET, "%s: bad client %d not closed: %d",
                  tc_mode_name(mode), i, rc);
        if (i >= 2) { /* the stalled ones: the handshake's own timeout */
            int64_t took = tc_test_now_ms() - t0;
            cr_assert(took >= STALL_MS - 20 && took < STALL_MS + tc_test_ms(2000),
                      "%s: a stalled handshake closed after %lld ms", tc_mode_name(mode),
                      (long long)took);
        }
        close(fd[i]);
    }
    cr_assert_eq(atomic_load(&seen->opened), 0, "the handler saw a failed handshake");
    char out[1024];
    cr_assert_eq(python(&g.ts, "--lines 2", out, sizeof out), 0, "%s: %s", tc_mode_name(mode), out);
    rig_close(&g);
}

Test(tls, plaintext_garbage_truncated_and_stalled_clients)
{
    make_certs();
    tc_tls_config c = TC_TLS_CONFIG_INIT;
    c.handshake_timeout_ms = STALL_MS;
    tc_tls *tls = server_tls(&c);
    for (size_t m = 0; m < sizeof all_modes / sizeof *all_modes; m++)
        if (tc_test_mode_enabled(all_modes[m]))
            hostile(all_modes[m], tls);
    char log[4096];
    tc_test_event_log(&logs, log, sizeof log);
    cr_assert(strstr(log, "TLS handshake with"), "no handshake failure logged: %s", log);
    cr_assert(strstr(log, "not finished in time"), "no handshake timeout logged: %s", log);
    tc_tls_destroy(tls);
    rm_certs();
}

Test(tls, no_close_notify_is_truncation)
{
    make_certs();
    tc_tls *tls = server_tls(NULL);
    const tc_mode modes[] = {TC_MODE_THREADING, TC_MODE_EVENT, TC_MODE_INLINE};
    for (size_t m = 0; m < 3; m++) {
        if (!tc_test_mode_enabled(modes[m]))
            continue;
        struct rig g;
        rig_open(&g, modes[m], tls, line_codec());
        char out[1024];
        cr_assert_eq(python(&g.ts, "--lines 1 --no-close-notify", out, sizeof out), 0, "%s", out);
        TC_TEST_WAIT_UNTIL(atomic_load(&seen->closed) == 1, TC_TEST_WAIT_MS);
        cr_assert_eq(seen->close_reason, TC_ETRUNCATED, "%s: %s", tc_mode_name(modes[m]),
                     tc_strerror(seen->close_reason));
        rig_close(&g);
    }
    tc_tls_destroy(tls);
    rm_certs();
}

Test(tls, one_mib_frames)
{
    not_quick();
    make_certs();
    tc_tls *tls = server_tls(NULL);
    for (size_t m = 0; m < sizeof all_modes / sizeof *all_modes; m++) {
        if (!tc_test_mode_enabled(all_modes[m]))
            continue;
        tc_codec codec;
        cr_assert_eq(tc_codec_length_prefixed(&codec, 4, TC_BIG_ENDIAN), 0);
        cr_assert_eq(tc_codec_set_max_frame(&codec, 2u << 20), 0);
        struct rig g;
        rig_open(&g, all_modes[m], tls, codec);
        char out[1024];
        int st = python(&g.ts, "--frame 1048576", out, sizeof out);
        cr_assert_eq(st, 0, "%s: %s", tc_mode_name(all_modes[m]), out);
        cr_assert(strstr(out, "\"echo_ok\": true"), "%s: %s", tc_mode_name(all_modes[m]), out);
        rig_close(&g);
    }
    tc_tls_destroy(tls);
    rm_certs();
}

/* ---- what a handler can ask; ALPN, SNI, client certificates ------------------------ */

Test(tls, info_alpn_and_sni)
{
    not_quick();
    make_certs();
    tc_tls_cert other = {.name = "other.test",
                         .cert_file = path("other.pem"),
                         .key_file = path("other.key")};
    tc_tls_config c = TC_TLS_CONFIG_INIT;
    c.alpn = "x-test,h2";
    c.certs = &other;
    c.ncerts = 1;
    tc_tls *tls = server_tls(&c);
    struct rig g;
    rig_open(&g, TC_MODE_EVENT, tls, line_codec());
    char out[1024];
    /* The client prefers h2; the server's own order wins. */
    cr_assert_eq(python(&g.ts, "--alpn h2,x-test --sni other.test", out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "\"peer_cn\": \"other\""), "SNI did not choose other.test: %s", out);
    cr_assert(strstr(out, "\"alpn\": \"x-test\""), "%s", out);
    TC_TEST_WAIT_UNTIL(atomic_load(&seen->closed) == 1, TC_TEST_WAIT_MS);
    cr_assert_eq(seen->info_rc, 0);
    cr_assert_str_eq(seen->info.version, "TLSv1.3");
    cr_assert_str_eq(seen->info.alpn, "x-test");
    cr_assert_str_eq(seen->info.server_name, "other.test");
    cr_assert_eq(seen->info.peer_cert, 0);
    cr_assert_neq(seen->info.cipher[0], 0);
    /* The default certificate for any other name; no ALPN in common: none. */
    cr_assert_eq(python(&g.ts, "--alpn spdy/1", out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "\"peer_cn\": \"server\""), "%s", out);
    cr_assert(strstr(out, "\"alpn\": \"\""), "%s", out);
    rig_close(&g);
    tc_tls_destroy(tls);
    rm_certs();
}

Test(tls, mutual_tls)
{
    not_quick();
    make_certs();
    tc_tls_config c = TC_TLS_CONFIG_INIT;
    c.verify = TC_TLS_VERIFY_REQUIRED;
    c.ca_file = path("ca.pem");
    tc_tls *tls = server_tls(&c);
    const tc_mode modes[] = {TC_MODE_THREADING, TC_MODE_EVENT};
    for (size_t m = 0; m < 2; m++) {
        struct rig g;
        rig_open(&g, modes[m], tls, line_codec());
        char out[1024], args[512];
        /* TLS 1.3 sends the refusal after the client's handshake ends: it
         * shows at the first read, as an error either way. */
        cr_assert_neq(python(&g.ts, "--lines 1", out, sizeof out), 0, "accepted without a cert: %s",
                      out);
        cr_assert_eq(atomic_load(&seen->opened), 0);
        snprintf(args, sizeof args, "--cert %s --key %s", path("client.pem"), path("client.key"));
        cr_assert_eq(python(&g.ts, args, out, sizeof out), 0, "%s", out);
        TC_TEST_WAIT_UNTIL(atomic_load(&seen->closed) == 1, TC_TEST_WAIT_MS);
        cr_assert_eq(seen->info.peer_cert, 1);
        cr_assert_eq(seen->info.verify_result, 0);
        cr_assert_str_eq(seen->info.peer_subject, "CN=client");
        rig_close(&g);
    }
    tc_tls_destroy(tls);
    rm_certs();
}

/* ---- tc_dial with TLS ---------------------------------------------------------------- */

static tc_tls *client_tls(const char *alpn)
{
    tc_tls_config c = TC_TLS_CONFIG_INIT;
    c.ca_file = path("ca.pem");
    c.alpn = alpn;
    tc_tls *tls;
    cr_assert_eq(tc_tls_client_create(&tls, &c), 0);
    return tls;
}

static tc_conn *dial(const tc_test_server *ts, const char *host, tc_tls *tls, int *rc)
{
    char addr[128];
    snprintf(addr, sizeof addr, "%s:%d", host, tc_addr_port(&ts->addr));
    tc_dial_config dc = TC_DIAL_CONFIG_INIT;
    dc.timeout_ms = TC_TEST_WAIT_MS;
    dc.transport = tc_tls_transport(tls);
    tc_conn *c = NULL;
    *rc = tc_dial(&c, addr, &dc);
    return c;
}

static void dial_echo(tc_conn *c, const char *line)
{
    size_t n = strlen(line);
    cr_assert_eq(tc_conn_send_all(c, line, n), (ssize_t)n);
    char buf[256];
    cr_assert_eq(tc_conn_read_exact(c, buf, n), (ssize_t)n);
    cr_assert_eq(memcmp(buf, line, n), 0);
}

Test(tls, dial_verifies_resumes_and_half_closes)
{
    make_certs();
    tc_tls_config sc = TC_TLS_CONFIG_INIT;
    sc.alpn = "x-test";
    tc_tls *tls = server_tls(&sc);
    tc_tls *cli = client_tls("x-test");
    struct rig g;
    rig_open(&g, TC_MODE_THREADING, tls, line_codec());
    int rc;
    tc_conn *c = dial(&g.ts, "localhost", cli, &rc);
    cr_assert_eq(rc, 0, "dial: %s (%s)", tc_strerror(rc), tc_last_error_detail());
    dial_echo(c, "one\n");
    tc_tls_info info;
    cr_assert_eq(tc_tls_conn_info(c, &info), 0);
    cr_assert_str_eq(info.alpn, "x-test");
    cr_assert_str_eq(info.peer_subject, "CN=server");
    cr_assert_eq(info.resumed, 0);
    /* Half-close: close_notify, and the server's reply still comes back. */
    cr_assert_eq(tc_conn_send_all(c, "two\n", 4), 4);
    cr_assert_eq(tc_conn_shutdown_write(c), 0);
    char buf[8];
    cr_assert_eq(tc_conn_read_exact(c, buf, 4), 4);
    ssize_t r = tc_conn_read(c, buf, sizeof buf);
    cr_assert_eq(r, TC_EOF, "no clean end after close_notify: %s", tc_strerror((int)r));
    tc_conn_close(c);
    TC_TEST_WAIT_UNTIL(atomic_load(&seen->closed) == 1, TC_TEST_WAIT_MS);
    cr_assert_eq(seen->close_reason, 0, "%s", tc_strerror(seen->close_reason));
    /* The same host again: the session is resumed (TLS 1.3 tickets). */
    c = dial(&g.ts, "localhost", cli, &rc);
    cr_assert_eq(rc, 0);
    dial_echo(c, "three\n");
    cr_assert_eq(tc_tls_conn_info(c, &info), 0);
    cr_assert_eq(info.resumed, 1, "not resumed");
    tc_conn_close(c);
    /* A name the certificate does not carry: refused by the client. */
    tc_tls *wrong;
    tc_tls_config wc = TC_TLS_CONFIG_INIT;
    wc.ca_file = path("ca.pem");
    wc.server_name = "wrong.test";
    cr_assert_eq(tc_tls_client_create(&wrong, &wc), 0);
    c = dial(&g.ts, "127.0.0.1", wrong, &rc);
    cr_assert_eq(rc, TC_EHANDSHAKE, "%s", tc_strerror(rc));
    cr_assert_null(c);
    cr_assert(strstr(tc_last_error_detail(), "certificate"), "%s", tc_last_error_detail());
    tc_tls_destroy(wrong);
    /* Its address, which the certificate does carry, is accepted. */
    c = dial(&g.ts, "127.0.0.1", cli, &rc);
    cr_assert_eq(rc, 0, "%s", tc_last_error_detail());
    tc_conn_close(c);
    /* A client without the CA: refused too. */
    tc_tls *bare;
    tc_tls_config bc = TC_TLS_CONFIG_INIT;
    bc.ca_file = path("other.pem"); /* not the CA */
    cr_assert_eq(tc_tls_client_create(&bare, &bc), 0);
    c = dial(&g.ts, "localhost", bare, &rc);
    cr_assert_eq(rc, TC_EHANDSHAKE);
    tc_tls_destroy(bare);
    rig_close(&g);
    tc_tls_destroy(cli);
    tc_tls_destroy(tls);
    rm_certs();
}

/* ---- reload ---------------------------------------------------------------------------- */

static void copy_file(const char *from, const char *to)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp %s %s.tmp && mv %s.tmp %s", from, to, to, to);
    run_ok(cmd);
}

Test(tls, reload_new_connections_old_one_keeps_working)
{
    not_quick();
    make_certs();
    copy_file(path("server.pem"), path("live.pem"));
    copy_file(path("server.key"), path("live.key"));
    tc_tls_config c = TC_TLS_CONFIG_INIT;
    c.cert_file = path("live.pem");
    c.key_file = path("live.key");
    tc_tls *tls = server_tls(&c);
    tc_tls *cli = client_tls(NULL);
    struct rig g;
    rig_open(&g, TC_MODE_EVENT, tls, line_codec());
    int rc;
    tc_conn *old = dial(&g.ts, "localhost", cli, &rc);
    cr_assert_eq(rc, 0);
    dial_echo(old, "before\n");
    copy_file(path("server2.pem"), path("live.pem"));
    copy_file(path("server2.key"), path("live.key"));
    cr_assert_eq(tc_tls_reload(tls), 0);
    char out[1024];
    cr_assert_eq(python(&g.ts, "", out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "\"peer_cn\": \"server2\""), "the reload was not seen: %s", out);
    dial_echo(old, "after\n"); /* the old connection goes on */
    /* A broken file: reload fails, the last good certificate stays. */
    run_ok("true");
    FILE *f = fopen(path("live.key"), "w");
    cr_assert_not_null(f);
    fputs("not a key\n", f);
    fclose(f);
    cr_assert_eq(tc_tls_reload(tls), TC_EBADCONFIG);
    cr_assert_eq(python(&g.ts, "", out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "\"peer_cn\": \"server2\""), "%s", out);
    tc_conn_close(old);
    rig_close(&g);
    tc_tls_destroy(cli);
    tc_tls_destroy(tls);
    rm_certs();
}

/* ---- sendfile -------------------------------------------------------------------------- */

static atomic_int ktls_seen; /* the last sender's tc_tls_info::ktls_send, -1 before */

static int send_file(tc_conn *c, void *ctx)
{
    char go[3];
    ssize_t n = tc_conn_read_exact(c, go, 3);
    if (n < 0)
        return (int)n;
    int fd = open(ctx, O_RDONLY);
    if (fd < 0)
        return -errno;
    ssize_t r = tc_conn_sendfile(c, fd, 0, 300000);
    close(fd);
    tc_tls_info ti;
    if (tc_tls_conn_info(c, &ti) == 0)
        atomic_store(&ktls_seen, ti.ktls_send);
    return r == 300000 ? 0 : (int)(r < 0 ? r : -EIO);
}

/* The kernel's tls module is loaded: kTLS may be taken. */
static int kernel_ktls(void)
{
    char line[256] = "";
    FILE *f = fopen("/proc/sys/net/ipv4/tcp_available_ulp", "r");
    if (f) {
        if (!fgets(line, sizeof line, f))
            line[0] = 0;
        fclose(f);
    }
    return strstr(line, "tls") != NULL;
}

/* Every mode's sendfile over TLS, with kTLS left to the kernel (AUTO) and
 * asked of it on every connection (TRY): where the kernel has no tls module
 * (this machine's), TRY runs the handshake on OpenSSL's socket BIO, is
 * refused, falls back to the copy and says so (ktls_send 0). */
Test(tls, sendfile_copies_through_tls)
{
    not_quick();
    make_certs();
    char file[320];
    snprintf(file, sizeof file, "%s", path("data.bin"));
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    long sum = 0;
    for (int i = 0; i < 300000; i++) {
        fputc(i * 7 % 251, f);
        sum += i * 7 % 251;
    }
    fclose(f);
    const int have_ktls = kernel_ktls();
    tc_tls *tls[2];
    for (int k = 0; k < 2; k++) {
        tc_tls_config tc = TC_TLS_CONFIG_INIT;
        tc.ktls = k ? TC_TLS_KTLS_TRY : TC_TLS_KTLS_AUTO;
        tls[k] = server_tls(&tc);
    }
    /* Stream handlers: their own thread, the inline loop, a pool's worker (the
     * handshake done by the pool's loop, the reads by the worker). */
    const tc_mode modes[] = {TC_MODE_THREADING, TC_MODE_INLINE, TC_MODE_POOL};
    for (size_t i = 0; i < 6; i++) {
        atomic_store(&ktls_seen, -1);
        tc_server_config cfg = tc_test_config();
        cfg.mode = modes[i % 3];
        cfg.transport = tc_tls_transport(tls[i / 3]);
        tc_handler h = {0};
        h.handle = send_file;
        h.ctx = file;
        tc_test_server ts;
        tc_test_server_start(&ts, "127.0.0.1:0", &cfg, &h);
        char out[1024];
        cr_assert_eq(python(&ts, "--read-file 300000", out, sizeof out), 0, "%s", out);
        char want[64];
        snprintf(want, sizeof want, "\"file_sum\": %ld", sum % 1000000007);
        cr_assert(strstr(out, "\"file_len\": 300000"), "%s", out);
        cr_assert(strstr(out, want), "%s", out);
        tc_test_server_stop(&ts);
        int k = atomic_load(&ktls_seen);
        cr_assert(k == 0 || (k == 1 && have_ktls), "ktls_send %d (kernel module: %d)", k,
                  have_ktls);
    }
    tc_tls_destroy(tls[0]);
    tc_tls_destroy(tls[1]);
    unlink(file);
    rm_certs();
}

/* What the kTLS test's server sends: a range of a file (an offset inside it). */
struct span {
    const char *file;
    off_t off;
    size_t len;
};

static int send_span(tc_conn *c, void *ctx)
{
    const struct span *s = ctx;
    char go[3];
    ssize_t n = tc_conn_read_exact(c, go, 3);
    if (n < 0)
        return (int)n;
    int fd = open(s->file, O_RDONLY);
    if (fd < 0)
        return -errno;
    ssize_t r = tc_conn_sendfile(c, fd, s->off, s->len);
    close(fd);
    tc_tls_info ti;
    if (tc_tls_conn_info(c, &ti) == 0)
        atomic_store(&ktls_seen, ti.ktls_send);
    return r == (ssize_t)s->len ? 0 : (int)(r < 0 ? r : -EIO);
}

/* A counter of /proc/net/tls_stat (sockets the kernel took TLS keys for in
 * this network namespace), -1 without the file. */
static long tls_stat(const char *name)
{
    FILE *f = fopen("/proc/net/tls_stat", "r");
    if (!f)
        return -1;
    char key[64];
    long v, found = -1;
    while (found < 0 && fscanf(f, "%63s %ld", key, &v) == 2)
        if (strcmp(key, name) == 0)
            found = v;
    fclose(f);
    return found;
}

/* Where the kernel has kTLS (its tls ULP listed; scripts/vm-ktls boots such a
 * kernel): a server's sendfile takes it (ktls_send 1, in each stream mode,
 * with the client's own sends through the kernel too), and with
 * TC_TLS_KTLS_OFF takes the copy (ktls_send 0); either way the bytes of the
 * file's range arrive exactly, then a clean end (close_notify). The kernel's
 * own count of kTLS send sockets says it too, not only libtcpchan-tls. */
Test(tls, sendfile_ktls_taken_where_the_kernel_has_it)
{
    if (!kernel_ktls())
        cr_skip_test("no kTLS here: the kernel lists no tls ULP in "
                     "/proc/sys/net/ipv4/tcp_available_ulp (scripts/vm-ktls runs this test in a "
                     "VM whose kernel has it)");
    make_certs();
    /* 1 MiB and some of pseudo-random bytes: many records, no pattern that
     * a shifted or repeated record could still match. */
    const size_t size = (1u << 20) + 4321;
    unsigned char *data = malloc(size);
    cr_assert_not_null(data);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < size; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data[i] = (unsigned char)x;
    }
    char file[320];
    snprintf(file, sizeof file, "%s", path("span.bin"));
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, size, f), size);
    cr_assert_eq(fclose(f), 0);
    struct span sp = {file, 777, size - 777 - 1000};
    unsigned char *got = malloc(sp.len);
    cr_assert_not_null(got);
    tc_tls_config cc = TC_TLS_CONFIG_INIT; /* ktls AUTO: the client's sends go through the kernel */
    cc.ca_file = path("ca.pem");
    tc_tls *cli;
    cr_assert_eq(tc_tls_client_create(&cli, &cc), 0);
    const tc_mode modes[] = {TC_MODE_THREADING, TC_MODE_INLINE, TC_MODE_POOL};
    const tc_test_counts before = tc_test_counts_now(NULL, 0);
    const long tx0 = tls_stat("TlsTxSw");
    for (int off = 0; off < 2; off++) {
        if (off && tx0 >= 0) /* 3 servers and 3 clients with kTLS, maybe more from elsewhere */
            cr_assert_geq(tls_stat("TlsTxSw") - tx0, 6, "the kernel counted %ld kTLS senders",
                          tls_stat("TlsTxSw") - tx0);
        tc_tls_config sc = TC_TLS_CONFIG_INIT;
        sc.ktls = off ? TC_TLS_KTLS_OFF : TC_TLS_KTLS_AUTO;
        tc_tls *tls = server_tls(&sc);
        for (size_t m = 0; m < sizeof modes / sizeof *modes; m++) {
            atomic_store(&ktls_seen, -1);
            tc_server_config cfg = tc_test_config();
            cfg.mode = modes[m];
            cfg.transport = tc_tls_transport(tls);
            tc_handler h = {0};
            h.handle = send_span;
            h.ctx = &sp;
            tc_test_server ts;
            tc_test_server_start(&ts, "127.0.0.1:0", &cfg, &h);
            int rc;
            tc_conn *c = dial(&ts, "localhost", cli, &rc);
            cr_assert_eq(rc, 0, "dial: %s (%s)", tc_strerror(rc), tc_last_error_detail());
            tc_tls_info ci;
            cr_assert_eq(tc_tls_conn_info(c, &ci), 0);
            cr_assert_eq(ci.ktls_send, 1, "the client's sends did not get kTLS");
            cr_assert_eq(tc_conn_send_all(c, "go\n", 3), 3);
            memset(got, 0, sp.len);
            ssize_t r = tc_conn_read_exact(c, got, sp.len);
            cr_assert_eq(r, (ssize_t)sp.len, "%s: read %zd: %s", tc_mode_name(modes[m]), r,
                         r < 0 ? tc_strerror((int)r) : "short");
            cr_assert(memcmp(got, data + sp.off, sp.len) == 0, "%s ktls %s: the bytes differ",
                      tc_mode_name(modes[m]), off ? "off" : "auto");
            char more;
            r = tc_conn_read(c, &more, 1);
            cr_assert_eq(r, TC_EOF, "no clean end: %s", tc_strerror((int)r));
            tc_conn_close(c);
            tc_test_server_stop(&ts);
            int k = atomic_load(&ktls_seen);
            cr_assert_eq(k, off ? 0 : 1, "%s ktls %s: ktls_send %d", tc_mode_name(modes[m]),
                         off ? "off" : "auto", k);
        }
        tc_tls_destroy(tls);
    }
    tc_tls_destroy(cli);
    tc_test_expect_counts(before, NULL, 0, "kTLS sendfile");
    free(got);
    free(data);
    unlink(file);
    rm_certs();
}

/* ---- the tools: tcpchan-echo --tls-cert/--tls-key, tcpchan-cat --tls ---------------------- */

#ifdef TC_ECHO_BIN
/* Start tcpchan-echo with TLS; its port from the "listening on" line. */
static pid_t echo_start(const char *mode, const char *framing, int *port, FILE **err)
{
    int out[2], errp[2];
    cr_assert_eq(pipe(out), 0);
    cr_assert_eq(pipe(errp), 0);
    pid_t parent = getpid(), pid = fork();
    if (pid == 0) { /* no Criterion call in the child: it would report to the runner */
        tc_test_child_dies_with(parent);
        dup2(out[1], 1);
        dup2(errp[1], 2);
        execl(TC_ECHO_BIN, "tcpchan-echo", "--listen", "127.0.0.1:0", "--mode", mode,
              "--framing", framing, "--tls-cert", path("live.pem"), "--tls-key", path("live.key"),
              (char *)NULL);
        _exit(127);
    }
    cr_assert_neq(pid, -1);
    close(out[1]);
    close(errp[1]);
    FILE *f = fdopen(out[0], "r");
    char line[128] = "";
    cr_assert_not_null(fgets(line, sizeof line, f), "tcpchan-echo printed nothing");
    fclose(f);
    char *colon = strrchr(line, ':');
    cr_assert_not_null(colon, "%s", line);
    *port = atoi(colon + 1);
    *err = fdopen(errp[0], "r");
    return pid;
}

static void echo_stop(pid_t pid, FILE *err)
{
    kill(pid, SIGTERM);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "tcpchan-echo ended badly");
    fclose(err);
}

Test(tls, echo_tool_every_mode_and_sighup_reload)
{
    not_quick();
    make_certs();
    copy_file(path("server.pem"), path("live.pem"));
    copy_file(path("server.key"), path("live.key"));
    for (size_t m = 0; m < sizeof all_modes / sizeof *all_modes; m++) {
        if (!tc_test_mode_enabled(all_modes[m]))
            continue;
        const char *framing = m % 2 ? "len32" : "line";
        int port;
        FILE *err;
        pid_t pid = echo_start(tc_mode_name(all_modes[m]), framing, &port, &err);
        char out[1024];
        cr_assert_eq(python_at(port, m % 2 ? "--frame 70000" : "--lines 3", out, sizeof out), 0,
                     "%s: %s", tc_mode_name(all_modes[m]), out);
        cr_assert(strstr(out, "\"echo_ok\": true"), "%s", out);
        if (all_modes[m] == TC_MODE_EVENT) {
            /* SIGHUP: new connections get the new certificate ... */
            copy_file(path("server2.pem"), path("live.pem"));
            copy_file(path("server2.key"), path("live.key"));
            kill(pid, SIGHUP);
            int seen2 = 0;
            for (int i = 0; i < 50 && !seen2; i++) {
                cr_assert_eq(python_at(port, "", out, sizeof out), 0, "%s", out);
                seen2 = strstr(out, "\"peer_cn\": \"server2\"") != NULL;
                if (!seen2)
                    tc_test_nap_ms(20);
            }
            cr_assert(seen2, "SIGHUP did not reload: %s", out);
            /* ... and a bad file keeps them, with one line on stderr. */
            FILE *k = fopen(path("live.key"), "w");
            fputs("junk\n", k);
            fclose(k);
            kill(pid, SIGHUP);
            char line[512] = "";
            cr_assert_not_null(fgets(line, sizeof line, err));
            cr_assert(strstr(line, "reload failed"), "%s", line);
            cr_assert_eq(python_at(port, "", out, sizeof out), 0, "%s", out);
            cr_assert(strstr(out, "\"peer_cn\": \"server2\""), "%s", out);
            /* tcpchan-cat --tls as the client. */
            char cmd[1024];
            snprintf(cmd, sizeof cmd,
                     "printf 'over tls\\n' | timeout 20 %s/tcpchan-cat localhost:%d --framing line "
                     "--tls --tls-ca %s",
                     TC_TOOLS_DIR, port, path("ca.pem"));
            FILE *f = popen(cmd, "r");
            char got[64] = "";
            size_t k2 = fread(got, 1, sizeof got - 1, f);
            got[k2] = 0;
            cr_assert_eq(pclose(f), 0);
            cr_assert_str_eq(got, "over tls\n");
            copy_file(path("server.pem"), path("live.pem"));
            copy_file(path("server.key"), path("live.key"));
        }
        echo_stop(pid, err);
    }
    rm_certs();
}
#endif

/* ---- behind HAProxy: TCP mode, PROXY v2, TLS passed through -------------------------------- */

static int record_peer(tc_conn *c, void *ctx)
{
    seen->peer_port = tc_addr_port(tc_conn_peer(c));
    seen->via_proxy = tc_conn_proxy_peer(c) != NULL;
    return on_open(c, ctx);
}

static const char *find_haproxy(void)
{
    static const char *const where[] = {"/usr/sbin/haproxy", "/usr/bin/haproxy",
                                        "/usr/local/sbin/haproxy"};
    for (size_t i = 0; i < 3; i++)
        if (access(where[i], X_OK) == 0)
            return where[i];
    return NULL;
}

Test(tls, behind_haproxy_proxy_v2)
{
    not_quick();
    const char *haproxy = find_haproxy();
    if (!haproxy)
        cr_skip_test("haproxy is not installed: apt-get install haproxy");
    make_certs();
    tc_tls *tls = server_tls(NULL);
    const tc_mode modes[] = {TC_MODE_EVENT, TC_MODE_THREADING};
    for (size_t m = 0; m < 2; m++) {
        shared_init();
        tc_server_config cfg = tc_test_config();
        cfg.mode = modes[m];
        cfg.codec = line_codec();
        cfg.transport = tc_tls_transport(tls);
        cfg.proxy_protocol = TC_PROXY_REQUIRED;
        tc_handler h = echo_handler();
        h.on_open = record_peer;
        tc_test_server ts;
        tc_test_server_start(&ts, "127.0.0.1:0", &cfg, &h);
        /* A free port for HAProxy's frontend (a moment's race: loopback, port 0's pick). */
        int tmp = socket(AF_INET, SOCK_STREAM, 0);
        tc_addr any;
        cr_assert_eq(tc_addr_parse(&any, "127.0.0.1:0"), 0);
        cr_assert_eq(bind(tmp, &any.u.sa, any.len), 0);
        socklen_t len = sizeof any.u.storage;
        cr_assert_eq(getsockname(tmp, &any.u.sa, &len), 0);
        any.len = len;
        int front = tc_addr_port(&any);
        close(tmp);
        char cfgtext[1024], cfgpath[320];
        snprintf(cfgtext, sizeof cfgtext,
                 "global\n    maxconn 64\ndefaults\n    mode tcp\n    timeout connect 5s\n"
                 "    timeout client 30s\n    timeout server 30s\n"
                 "frontend tls_in\n    bind 127.0.0.1:%d\n    default_backend tls_out\n"
                 "backend tls_out\n    server s1 %s send-proxy-v2\n",
                 front, ts.addr_str);
        snprintf(cfgpath, sizeof cfgpath, "%s", path("haproxy.cfg"));
        FILE *f = fopen(cfgpath, "w");
        fputs(cfgtext, f);
        fclose(f);
        pid_t parent = getpid(), hp = fork();
        if (hp == 0) { /* no Criterion call in the child */
            tc_test_child_dies_with(parent);
            int nul = open("/dev/null", O_WRONLY);
            dup2(nul, 1);
            dup2(nul, 2);
            execl(haproxy, "haproxy", "-db", "-f", cfgpath, (char *)NULL);
            _exit(127);
        }
        cr_assert_neq(hp, -1);
        /* HAProxy gives no readiness signal: try until it answers (bounded). */
        char out[1024];
        int st = 1;
        for (int i = 0; i < 100 && st != 0; i++) {
            st = python_at(front, "--lines 2", out, sizeof out);
            if (st != 0)
                tc_test_nap_ms(50);
        }
        kill(hp, SIGTERM);
        waitpid(hp, NULL, 0);
        cr_assert_eq(st, 0, "%s: through HAProxy: %s", tc_mode_name(modes[m]), out);
        cr_assert(strstr(out, "\"echo_ok\": true"), "%s", out);
        char want[48];
        TC_TEST_WAIT_UNTIL(atomic_load(&seen->opened) >= 1, TC_TEST_WAIT_MS);
        snprintf(want, sizeof want, "\"local_port\": %d,", seen->peer_port);
        cr_assert(strstr(out, want), "%s: the server saw port %d, not the client's: %s",
                  tc_mode_name(modes[m]), seen->peer_port, out);
        cr_assert_eq(seen->via_proxy, 1, "no PROXY header seen");
        cr_assert_eq(seen->info_rc, 0);
        cr_assert_str_eq(seen->info.version, "TLSv1.3");
        tc_test_server_stop(&ts);
    }
    tc_tls_destroy(tls);
    rm_certs();
}

/* ---- the drain ---------------------------------------------------------------------------- */

static void count_error(tc_server *srv, tc_conn *c, int err, void *ctx)
{
    (void)srv;
    (void)c;
    (void)err;
    (void)ctx;
    atomic_fetch_add(&seen->opened, 1000); /* any report fails the test */
}

/* An idle TLS connection is ended by the drain quietly, in every mode that
 * shuts idle sockets or tells them to stop. */
Test(tls, drain_ends_idle_connections_quietly)
{
    make_certs();
    tc_tls *tls = server_tls(NULL);
    tc_tls *cli = client_tls(NULL);
    for (size_t m = 0; m < sizeof all_modes / sizeof *all_modes; m++) {
        if (!tc_test_mode_enabled(all_modes[m]) || all_modes[m] == TC_MODE_FORKING)
            continue;
        shared_init();
        tc_server_config cfg = tc_test_config();
        cfg.mode = all_modes[m];
        cfg.codec = line_codec();
        cfg.transport = tc_tls_transport(tls);
        cfg.hooks.handle_error = count_error;
        tc_handler h = echo_handler();
        tc_test_server ts;
        tc_test_server_start(&ts, "127.0.0.1:0", &cfg, &h);
        int rc;
        tc_conn *c = dial(&ts, "localhost", cli, &rc);
        cr_assert_eq(rc, 0);
        dial_echo(c, "hi\n");
        tc_test_server_stop(&ts);
        cr_assert_eq(atomic_load(&seen->closed), 1, "%s", tc_mode_name(all_modes[m]));
        cr_assert(seen->close_reason == 0 || seen->close_reason == TC_ESHUTDOWN, "%s: closed with %s", tc_mode_name(all_modes[m]),
                  tc_strerror(seen->close_reason));
        cr_assert_eq(atomic_load(&seen->opened), 1, "%s: an error was reported",
                     tc_mode_name(all_modes[m]));
        tc_conn_close(c);
    }
    tc_tls_destroy(cli);
    tc_tls_destroy(tls);
    rm_certs();
}

Test(tls, min_version_tls13_refuses_tls12)
{
    not_quick();
    make_certs();
    tc_tls_config c = TC_TLS_CONFIG_INIT;
    c.min_version = TC_TLS_1_3;
    tc_tls *tls = server_tls(&c);
    struct rig g;
    rig_open(&g, TC_MODE_EVENT, tls, line_codec());
    char out[1024];
    cr_assert_neq(python(&g.ts, "--version 1.2", out, sizeof out), 0, "TLS 1.2 accepted: %s", out);
    cr_assert_eq(python(&g.ts, "--version 1.3", out, sizeof out), 0, "%s", out);
    rig_close(&g);
    tc_tls_destroy(tls);
    /* A configuration mistake is refused with the reason in the log hook. */
    tc_tls_config bad = TC_TLS_CONFIG_INIT;
    bad.cert_file = path("server.pem");
    bad.key_file = path("other.key"); /* not its key */
    tc_tls *none = NULL;
    cr_assert_eq(tc_tls_server_create(&none, &bad), TC_EBADCONFIG);
    cr_assert_null(none);
    bad.key_file = path("server.key");
    bad.alpn = "h2,,x";
    cr_assert_eq(tc_tls_server_create(&none, &bad), TC_EBADCONFIG);
    rm_certs();
}
