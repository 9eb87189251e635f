/* SPDX-License-Identifier: MIT */
/* The PROXY protocol: the pure parser (every valid header split at every
 * byte, against a guard page; malformed, oversized and foreign input), the
 * trusted list, and servers reading headers in every mode: the real client
 * as tc_conn_peer(), bytes after the header kept, untrusted peers, timeouts. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "helpers.h"
#include "internal.h" /* tc__proxy_parse, tc__cidr_*: lib/proxy.c is compiled in */

TestSuite(proxy, .timeout = 30);

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            cr_assert_fail(__VA_ARGS__);                                                           \
    } while (0)

/* ---- building headers ----------------------------------------------------------- */

static const unsigned char v2sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                        0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* A v2 header: ver_cmd, fam, then the block (len bytes) as given. */
static size_t v2(unsigned char *out, unsigned char ver_cmd, unsigned char fam,
                 const void *block, size_t len)
{
    memcpy(out, v2sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (unsigned char)(len >> 8);
    out[15] = (unsigned char)len;
    if (len)
        memcpy(out + 16, block, len);
    return 16 + len;
}

static size_t v2_tcp4(unsigned char *out, const char *src, const char *dst, unsigned sp,
                      unsigned dp, size_t tlv_bytes)
{
    unsigned char b[12 + 64];
    inet_pton(AF_INET, src, b);
    inet_pton(AF_INET, dst, b + 4);
    b[8] = (unsigned char)(sp >> 8), b[9] = (unsigned char)sp;
    b[10] = (unsigned char)(dp >> 8), b[11] = (unsigned char)dp;
    cr_assert_leq(tlv_bytes, 64);
    memset(b + 12, 0, tlv_bytes); /* PP2_TYPE_NOOP-like padding: ignored */
    return v2(out, 0x21, 0x11, b, 12 + tlv_bytes);
}

static size_t v2_tcp6(unsigned char *out, const char *src, const char *dst, unsigned sp,
                      unsigned dp)
{
    unsigned char b[36];
    inet_pton(AF_INET6, src, b);
    inet_pton(AF_INET6, dst, b + 16);
    b[32] = (unsigned char)(sp >> 8), b[33] = (unsigned char)sp;
    b[34] = (unsigned char)(dp >> 8), b[35] = (unsigned char)dp;
    return v2(out, 0x21, 0x21, b, 36);
}

static size_t v2_unix(unsigned char *out, const char *src, const char *dst)
{
    unsigned char b[216];
    memset(b, 0, sizeof b);
    memcpy(b, src, strlen(src));
    memcpy(b + 108, dst, strlen(dst));
    return v2(out, 0x21, 0x31, b, sizeof b);
}

static void fmt(const tc_addr *a, char *buf)
{
    CHECK(tc_addr_format(a, buf, TC_ADDR_STRLEN) > 0, "unformattable address");
}

/* ---- the parser ------------------------------------------------------------------- */

struct valid {
    const char *name;
    unsigned char buf[512];
    size_t len;
    int version, local, has_addr;
    const char *src, *dst; /* formatted, when has_addr */
};

static size_t text(unsigned char *out, const char *s)
{
    memcpy(out, s, strlen(s));
    return strlen(s);
}

static size_t valid_headers(struct valid *v)
{
    size_t n = 0;
    v[n] = (struct valid){.name = "v1 TCP4", .version = 1, .has_addr = 1,
                          .src = "192.0.2.7:51234", .dst = "198.51.100.1:443"};
    v[n].len = text(v[n].buf, "PROXY TCP4 192.0.2.7 198.51.100.1 51234 443\r\n");
    n++;
    v[n] = (struct valid){.name = "v1 TCP6", .version = 1, .has_addr = 1,
                          .src = "[2001:db8::1]:0", .dst = "[::1]:65535"};
    v[n].len = text(v[n].buf, "PROXY TCP6 2001:db8::1 ::1 0 65535\r\n");
    n++;
    v[n] = (struct valid){.name = "v1 TCP6 longest", .version = 1, .has_addr = 1,
                          .src = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                          .dst = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65535"};
    v[n].len = text(v[n].buf, "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                              "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe 65535 65535\r\n");
    n++;
    v[n] = (struct valid){.name = "v1 UNKNOWN", .version = 1};
    v[n].len = text(v[n].buf, "PROXY UNKNOWN\r\n");
    n++;
    v[n] = (struct valid){.name = "v1 UNKNOWN with addresses", .version = 1};
    v[n].len = text(v[n].buf, "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n");
    n++;
    /* The longest v1 line the specification allows: 107 bytes with CRLF. */
    v[n] = (struct valid){.name = "v1 107 bytes", .version = 1};
    memset(v[n].buf, 'x', 107);
    memcpy(v[n].buf, "PROXY UNKNOWN ", 14);
    memcpy(v[n].buf + 105, "\r\n", 2);
    v[n].len = 107;
    n++;
    v[n] = (struct valid){.name = "v2 TCP4", .version = 2, .has_addr = 1,
                          .src = "10.1.2.3:40000", .dst = "10.9.9.9:7000"};
    v[n].len = v2_tcp4(v[n].buf, "10.1.2.3", "10.9.9.9", 40000, 7000, 0);
    n++;
    v[n] = (struct valid){.name = "v2 TCP4 with TLVs", .version = 2, .has_addr = 1,
                          .src = "10.1.2.3:1", .dst = "10.9.9.9:2"};
    v[n].len = v2_tcp4(v[n].buf, "10.1.2.3", "10.9.9.9", 1, 2, 40);
    n++;
    v[n] = (struct valid){.name = "v2 TCP6", .version = 2, .has_addr = 1,
                          .src = "[2001:db8::5]:1234", .dst = "[2001:db8::6]:80"};
    v[n].len = v2_tcp6(v[n].buf, "2001:db8::5", "2001:db8::6", 1234, 80);
    n++;
    v[n] = (struct valid){.name = "v2 UNIX", .version = 2, .has_addr = 1,
                          .src = "unix:/run/client.sock", .dst = "unix:/run/haproxy.sock"};
    v[n].len = v2_unix(v[n].buf, "/run/client.sock", "/run/haproxy.sock");
    n++;
    v[n] = (struct valid){.name = "v2 LOCAL", .version = 2, .local = 1};
    v[n].len = v2(v[n].buf, 0x20, 0x00, NULL, 0);
    n++;
    v[n] = (struct valid){.name = "v2 LOCAL with a block", .version = 2, .local = 1};
    {
        unsigned char b[12];
        memset(b, 7, sizeof b);
        v[n].len = v2(v[n].buf, 0x20, 0x11, b, sizeof b);
    }
    n++;
    v[n] = (struct valid){.name = "v2 PROXY UNSPEC", .version = 2};
    v[n].len = v2(v[n].buf, 0x21, 0x00, NULL, 0);
    n++;
    v[n] = (struct valid){.name = "v2 PROXY datagram", .version = 2};
    {
        unsigned char b[12] = {0};
        v[n].len = v2(v[n].buf, 0x21, 0x12, b, sizeof b);
    }
    n++;
    return n;
}

static void check_done(const struct valid *v, const tc__proxy_hdr *h)
{
    char a[TC_ADDR_STRLEN];
    CHECK(h->len == v->len, "%s: len %zu, want %zu", v->name, h->len, v->len);
    CHECK(h->version == v->version, "%s: version %d", v->name, h->version);
    CHECK(h->local == v->local, "%s: local %d", v->name, h->local);
    CHECK(h->has_addr == v->has_addr, "%s: has_addr %d", v->name, h->has_addr);
    if (v->has_addr) {
        fmt(&h->src, a);
        CHECK(strcmp(a, v->src) == 0, "%s: src %s, want %s", v->name, a, v->src);
        fmt(&h->dst, a);
        CHECK(strcmp(a, v->dst) == 0, "%s: dst %s, want %s", v->name, a, v->dst);
    }
}

Test(proxy, valid_headers_at_every_split)
{
    static struct valid v[32];
    size_t n = valid_headers(v);
    for (size_t i = 0; i < n; i++) {
        tc__proxy_hdr h;
        /* Every proper prefix: need more. */
        for (size_t k = 0; k < v[i].len; k++) {
            int rc = tc__proxy_parse(v[i].buf, k, &h);
            CHECK(rc == TC__PROXY_MORE, "%s: prefix of %zu bytes gave %d", v[i].name, k, rc);
        }
        /* The whole header, then with the first bytes of the payload behind it. */
        CHECK(tc__proxy_parse(v[i].buf, v[i].len, &h) == TC__PROXY_DONE, "%s: not done",
              v[i].name);
        check_done(&v[i], &h);
        unsigned char more[600];
        memcpy(more, v[i].buf, v[i].len);
        memcpy(more + v[i].len, "GET / HTTP/1.0\r\n\r\n", 18);
        CHECK(tc__proxy_parse(more, v[i].len + 18, &h) == TC__PROXY_DONE, "%s + payload",
              v[i].name);
        check_done(&v[i], &h);
    }
}

/* The header's last byte is the page's last readable byte: any read past len faults. */
Test(proxy, never_reads_past_len)
{
    static struct valid v[32];
    size_t n = valid_headers(v);
    long pg = sysconf(_SC_PAGESIZE);
    unsigned char *m = mmap(NULL, 2 * (size_t)pg, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(m, MAP_FAILED);
    cr_assert_eq(mprotect(m + pg, (size_t)pg, PROT_NONE), 0);
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k <= v[i].len; k++) {
            unsigned char *p = m + pg - k;
            memcpy(p, v[i].buf, k);
            tc__proxy_hdr h;
            int rc = tc__proxy_parse(p, k, &h);
            CHECK(rc == (k == v[i].len ? TC__PROXY_DONE : TC__PROXY_MORE), "%s at %zu: %d",
                  v[i].name, k, rc);
        }
    }
    /* Garbage that keeps looking like a v1 line, up to the limit. */
    memset(m + pg - 200, 'a', 200);
    memcpy(m + pg - 200, "PROXY ", 6);
    tc__proxy_hdr h;
    cr_assert_eq(tc__proxy_parse(m + pg - 200, 200, &h), TC_EPROXY);
    munmap(m, 2 * (size_t)pg);
}

Test(proxy, malformed_headers)
{
    static const char *const v1_bad[] = {
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",         /* no CR */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",     /* CR in the last field */
        "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",       /* protocol */
        "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4 ::1 ::1 1 2\r\n",                /* v6 addresses under TCP4 */
        "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",        /* v4 under TCP6 */
        "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",   /* port range */
        "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",      /* leading zero */
        "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",         /* a field missing */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",     /* one too many */
        "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",      /* two spaces */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",      /* trailing space */
        "PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2x\r\n",
        "PROXY UNKNOWNX\r\n",
        "PROXY \r\n",
        "PROXY TCP4\r\n",
    };
    for (size_t i = 0; i < sizeof v1_bad / sizeof v1_bad[0]; i++) {
        tc__proxy_hdr h;
        int rc = tc__proxy_parse(v1_bad[i], strlen(v1_bad[i]), &h);
        cr_expect_eq(rc, TC_EPROXY, "\"%s\" gave %d", v1_bad[i], rc);
        cr_expect(rc != TC_EPROXY || h.why, "no reason given");
    }
    /* 108 bytes without a line end: over the limit, however it goes on. */
    char long1[200];
    memset(long1, 'x', sizeof long1);
    memcpy(long1, "PROXY UNKNOWN ", 14);
    tc__proxy_hdr h;
    cr_expect_eq(tc__proxy_parse(long1, 106, &h), TC__PROXY_MORE);
    cr_expect_eq(tc__proxy_parse(long1, 107, &h), TC_EPROXY);
    memcpy(long1 + 106, "\r\n", 2); /* a 108-byte line */
    cr_expect_eq(tc__proxy_parse(long1, 108, &h), TC_EPROXY);

    unsigned char b[TC__PROXY_MAX + 64], blk[300];
    memset(blk, 0, sizeof blk);
    struct {
        unsigned char ver_cmd, fam;
        size_t len;
        const char *what;
    } v2_bad[] = {
        {0x11, 0x11, 12, "version 1"},  {0x31, 0x11, 12, "version 3"},
        {0x22, 0x11, 12, "command 2"},  {0x2F, 0x11, 12, "command 15"},
        {0x21, 0x41, 12, "family 4"},   {0x21, 0x13, 12, "transport 3"},
        {0x21, 0x11, 11, "TCP4 short"}, {0x21, 0x21, 35, "TCP6 short"},
        {0x21, 0x31, 215, "UNIX short"},
    };
    for (size_t i = 0; i < sizeof v2_bad / sizeof v2_bad[0]; i++) {
        size_t n = v2(b, v2_bad[i].ver_cmd, v2_bad[i].fam, blk, v2_bad[i].len);
        int rc = tc__proxy_parse(b, n, &h);
        cr_expect_eq(rc, TC_EPROXY, "v2 %s gave %d", v2_bad[i].what, rc);
    }
    /* The length field alone decides "too long", before the bytes arrive. */
    b[14] = (TC__PROXY_V2_MAX_PAYLOAD + 1) >> 8;
    b[15] = (TC__PROXY_V2_MAX_PAYLOAD + 1) & 0xFF;
    b[12] = 0x21, b[13] = 0x11;
    cr_expect_eq(tc__proxy_parse(b, 16, &h), TC_EPROXY);
    b[14] = TC__PROXY_V2_MAX_PAYLOAD >> 8;
    b[15] = TC__PROXY_V2_MAX_PAYLOAD & 0xFF;
    cr_expect_eq(tc__proxy_parse(b, 16, &h), TC__PROXY_MORE);
    memset(b + 16, 0, TC__PROXY_V2_MAX_PAYLOAD);
    cr_expect_eq(tc__proxy_parse(b, TC__PROXY_MAX, &h), TC__PROXY_DONE);
    cr_expect_eq(h.len, (size_t)TC__PROXY_MAX);
}

Test(proxy, not_a_header)
{
    static const char *const none[] = {"GET / HTTP/1.1\r\n", "P", "PROXX", "proxy ", "PROXY", "\r\n\r\nx",
                                       "\r\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0B", "\x00"};
    static const size_t lens[] = {16, 1, 5, 6, 5, 5, 12, 1};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
        tc__proxy_hdr h;
        int rc = tc__proxy_parse(none[i], lens[i], &h);
        int want = i == 1 || i == 4 ? TC__PROXY_MORE : TC__PROXY_NONE;
        cr_expect_eq(rc, want, "input %zu gave %d, want %d", i, rc, want);
    }
}

/* ---- the trusted list -------------------------------------------------------------- */

static int trusted(const char *list, const char *addr)
{
    tc__cidr c[16];
    size_t n;
    cr_assert_eq(tc__cidr_parse(list, c, 16, &n), 0, "list \"%s\"", list);
    tc_addr a;
    cr_assert_eq(tc_addr_parse(&a, addr), 0, "address %s", addr);
    return tc__cidr_match(c, n, &a);
}

Test(proxy, trusted_list)
{
    cr_expect(trusted(TC__PROXY_DEFAULT_TRUSTED, "127.0.0.1:1"));
    cr_expect(trusted(TC__PROXY_DEFAULT_TRUSTED, "127.255.0.9:1"));
    cr_expect(trusted(TC__PROXY_DEFAULT_TRUSTED, "[::1]:1"));
    cr_expect(trusted(TC__PROXY_DEFAULT_TRUSTED, "[::ffff:127.0.0.1]:1"));
    cr_expect(!trusted(TC__PROXY_DEFAULT_TRUSTED, "10.0.0.1:1"));
    cr_expect(!trusted(TC__PROXY_DEFAULT_TRUSTED, "[::2]:1"));
    cr_expect(!trusted(TC__PROXY_DEFAULT_TRUSTED, "unix:/tmp/x"));
    cr_expect(trusted("10.0.0.0/8, 192.168.1.10 ,unix", "10.200.3.4:5"));
    cr_expect(trusted("10.0.0.0/8, 192.168.1.10 ,unix", "192.168.1.10:5"));
    cr_expect(!trusted("10.0.0.0/8, 192.168.1.10 ,unix", "192.168.1.11:5"));
    cr_expect(trusted("10.0.0.0/8, 192.168.1.10 ,unix", "unix:/run/x.sock"));
    cr_expect(trusted("10.1.2.3/8", "10.9.9.9:1"), "host bits are cleared");
    cr_expect(trusted("192.168.4.0/23", "192.168.5.255:1"));
    cr_expect(!trusted("192.168.4.0/23", "192.168.6.0:1"));
    cr_expect(trusted("2001:db8::/33", "[2001:db8:7fff::1]:1"));
    cr_expect(!trusted("2001:db8::/33", "[2001:db8:8000::1]:1"));
    cr_expect(trusted("0.0.0.0/0", "203.0.113.9:1"));
    cr_expect(!trusted("0.0.0.0/0", "[2001:db8::1]:1"));
    cr_expect(trusted("::/0", "[2001:db8::1]:1"));
    cr_expect(!trusted("", "127.0.0.1:1"), "an empty list trusts nobody");

    static const char *const bad[] = {"10.0.0.0/33", "::1/129", "10.0.0.0/", "10.0.0.0/08",
                                      "10.0.0.0/-1", "localhost", "10.0.0.1,,10.0.0.2",
                                      "10.0.0.1,", "1.2.3.4/8x", "unix/8", "*"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tc__cidr c[16];
        size_t n;
        cr_expect_eq(tc__cidr_parse(bad[i], c, 16, &n), TC_EBADCONFIG, "\"%s\" accepted", bad[i]);
    }
    tc__cidr c[2];
    size_t n;
    cr_expect_eq(tc__cidr_parse("1.1.1.1, 2.2.2.2, 3.3.3.3/33", c, 2, &n), TC_EBADCONFIG);
    cr_expect_eq(n, 2, "the bad entry's index");
}

/* ---- servers ------------------------------------------------------------------------- */

/* Handler: one line "peer=... proxy=... dest=...", then an echo of the rest. */
static int peer_handle(tc_conn *c, void *ctx)
{
    char p[TC_ADDR_STRLEN] = "-", x[TC_ADDR_STRLEN] = "-", d[TC_ADDR_STRLEN] = "-";
    (void)ctx;
    (void)tc_addr_format(tc_conn_peer(c), p, sizeof p);
    if (tc_conn_proxy_peer(c))
        (void)tc_addr_format(tc_conn_proxy_peer(c), x, sizeof x);
    if (tc_conn_proxy_dest(c))
        (void)tc_addr_format(tc_conn_proxy_dest(c), d, sizeof d);
    int rc = tc_conn_printf(c, "peer=%s proxy=%s dest=%s\n", p, x, d);
    if (rc < 0 || (rc = tc_conn_flush(c)) < 0)
        return rc;
    return tc_test_echo_handle(c, NULL);
}

/* The same for event mode, message style: the line from on_open, then each
 * message echoed. */
static int peer_open(tc_conn *c, void *ctx)
{
    char p[TC_ADDR_STRLEN] = "-", x[TC_ADDR_STRLEN] = "-", d[TC_ADDR_STRLEN] = "-";
    (void)ctx;
    (void)tc_addr_format(tc_conn_peer(c), p, sizeof p);
    if (tc_conn_proxy_peer(c))
        (void)tc_addr_format(tc_conn_proxy_peer(c), x, sizeof x);
    if (tc_conn_proxy_dest(c))
        (void)tc_addr_format(tc_conn_proxy_dest(c), d, sizeof d);
    int rc = tc_conn_printf(c, "peer=%s proxy=%s dest=%s\n", p, x, d);
    return rc < 0 ? rc : 0;
}

static int echo_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    (void)ctx;
    ssize_t sent = tc_conn_send(c, msg, len);
    return sent < 0 ? (int)sent : 0;
}

static tc_test_event errors;

static void record_error(tc_server *srv, tc_conn *conn, int err, void *ctx)
{
    (void)srv;
    (void)conn;
    (void)ctx;
    tc_test_event_post(&errors, tc_err_name(err));
}

static tc_server_config proxy_config(tc_proxy_mode pm, const char *trusted_list)
{
    tc_server_config cfg = tc_test_config();
    cfg.proxy_protocol = pm;
    cfg.proxy_trusted = trusted_list;
    cfg.hooks.handle_error = record_error;
    return cfg;
}

static void start(tc_test_server *ts, tc_mode mode, tc_proxy_mode pm, const char *list)
{
    tc_test_event_init(&errors);
    tc_server_config cfg = proxy_config(pm, list);
    cfg.mode = mode;
    tc_handler h = TC_HANDLER_INIT;
    if (mode == TC_MODE_EVENT) {
        h.on_open = peer_open;
        h.on_message = echo_message;
    } else {
        h.handle = peer_handle;
    }
    tc_test_server_start(ts, NULL, &cfg, &h);
}

/* Send the header and the payload (in one write, or cut at cut), half-close,
 * and read everything back. Returns the bytes read (reply NUL-terminated). */
static ssize_t exchange(const tc_addr *addr, const void *hdr, size_t hlen, const char *payload,
                        size_t cut, char *reply, size_t n, int *fd_out)
{
    int fd = tc_test_connect_ok(addr);
    size_t plen = strlen(payload);
    unsigned char *all = malloc(hlen + plen);
    memcpy(all, hdr, hlen);
    memcpy(all + hlen, payload, plen);
    if (cut && cut < hlen + plen) {
        cr_assert_eq(tc_test_send_all(fd, all, cut), 0);
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL); /* let the server read the first piece alone */
        cr_assert_eq(tc_test_send_all(fd, all + cut, hlen + plen - cut), 0);
    } else {
        cr_assert_eq(tc_test_send_all(fd, all, hlen + plen), 0);
    }
    free(all);
    shutdown(fd, SHUT_WR);
    ssize_t got = tc_test_recv_full(fd, reply, n - 1);
    reply[got > 0 ? got : 0] = '\0';
    if (fd_out)
        *fd_out = fd;
    else
        close(fd);
    return got;
}

/* "peer=<client> proxy=<our client socket> dest=..." for a client socket fd. */
static void local_of(int fd, char *buf)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    tc_addr a;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    tc_addr_from_sockaddr(&a, (struct sockaddr *)&ss, len);
    fmt(&a, buf);
}

#define PROXY_MODES {TC_MODE_INLINE, TC_MODE_THREADING, TC_MODE_FORKING, TC_MODE_POOL, TC_MODE_EVENT}

ParameterizedTestParameters(proxy, v1_and_v2_in_every_mode)
{
    static tc_mode modes[] = PROXY_MODES;
    return cr_make_param_array(tc_mode, modes, sizeof modes / sizeof modes[0]);
}

ParameterizedTest(tc_mode *mode, proxy, v1_and_v2_in_every_mode, .timeout = 30)
{
    tc_test_server ts;
    start(&ts, *mode, TC_PROXY_REQUIRED, NULL);
    unsigned char hdr[600];
    char reply[1024], want[512], me[TC_ADDR_STRLEN];
    const char *v1 = "PROXY TCP4 192.0.2.7 198.51.100.1 51234 443\r\n";
    /* v1, with the payload in the same segment as the header, then cut at
     * every few bytes through the header. */
    for (size_t cut = 0; cut <= strlen(v1) + 2; cut += (cut < 8 ? 1 : 13)) {
        int fd;
        exchange(&ts.addr, v1, strlen(v1), "hello after the header", cut, reply, sizeof reply,
                 &fd);
        local_of(fd, me);
        close(fd);
        snprintf(want, sizeof want,
                 "peer=192.0.2.7:51234 proxy=%s dest=198.51.100.1:443\nhello after the header", me);
        cr_assert_str_eq(reply, want, "mode %s, cut %zu", tc_mode_name(*mode), cut);
    }
    size_t n = v2_tcp6(hdr, "2001:db8::5", "2001:db8::6", 1234, 80);
    int fd;
    exchange(&ts.addr, hdr, n, "v2 payload", 0, reply, sizeof reply, &fd);
    local_of(fd, me);
    close(fd);
    snprintf(want, sizeof want, "peer=[2001:db8::5]:1234 proxy=%s dest=[2001:db8::6]:80\nv2 payload",
             me);
    cr_assert_str_eq(reply, want);
    /* LOCAL: the proxy's own connection; the real endpoints stay. */
    n = v2(hdr, 0x20, 0x00, NULL, 0);
    exchange(&ts.addr, hdr, n, "check", 0, reply, sizeof reply, &fd);
    local_of(fd, me);
    close(fd);
    snprintf(want, sizeof want, "peer=%s proxy=%s dest=-\ncheck", me, me);
    cr_assert_str_eq(reply, want);
    tc_test_server_stop(&ts);
    if (*mode != TC_MODE_FORKING) /* a forked child reports in its own process */
        cr_assert_eq(tc_test_event_count(&errors), 0);
}

/* The connection is closed before setup with the code reported to handle_error. */
static void expect_refused(tc_test_server *ts, const void *hdr, size_t n, const char *code)
{
    char reply[256];
    int before = tc_test_event_count(&errors);
    ssize_t got = exchange(&ts->addr, hdr, n, "payload", 0, reply, sizeof reply, NULL);
    cr_assert(got <= 0, "served anyway: \"%s\"", reply);
    cr_assert_eq(tc_test_event_wait(&errors, before + 1, TC_TEST_WAIT_MS), 0, "no error for %s",
                 code);
    char log[4096];
    tc_test_event_log(&errors, log, sizeof log);
    const char *last = strrchr(log, ',');
    cr_assert_str_eq(last ? last + 1 : log, code);
}

static void rejects_malformed_untrusted_and_missing(tc_mode mode)
{
    tc_test_server ts;
    start(&ts, mode, TC_PROXY_REQUIRED, NULL);
    const char *bad = "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n";
    expect_refused(&ts, bad, strlen(bad), "TC_EPROXY");
    expect_refused(&ts, "GET / HTTP/1.0\r\n\r\n", 18, "TC_EPROXY");
    char trunc[] = "PROXY TCP4 1.2.3.4";
    expect_refused(&ts, trunc, strlen(trunc), "TC_EPROXY"); /* then end of stream */
    char big[300];
    memset(big, 'x', sizeof big);
    memcpy(big, "PROXY UNKNOWN ", 14);
    expect_refused(&ts, big, sizeof big, "TC_EPROXY");
    tc_test_server_stop(&ts);

    /* Trusting only 10/8: our loopback peer is refused at once. */
    start(&ts, mode, TC_PROXY_REQUIRED, "10.0.0.0/8");
    const char *v1 = "PROXY TCP4 192.0.2.7 198.51.100.1 51234 443\r\n";
    expect_refused(&ts, v1, strlen(v1), "TC_EUNTRUSTED");
    tc_test_server_stop(&ts);

    /* Optional and untrusted: a plain client is served, a header is refused. */
    start(&ts, mode, TC_PROXY_OPTIONAL, "");
    char reply[256];
    exchange(&ts.addr, "", 0, "plain", 0, reply, sizeof reply, NULL);
    cr_assert(strstr(reply, "proxy=- dest=-\nplain"), "reply: %s", reply);
    expect_refused(&ts, v1, strlen(v1), "TC_EUNTRUSTED");
    tc_test_server_stop(&ts);
}

static void optional_with_and_without_header(tc_mode mode)
{
    tc_test_server ts;
    start(&ts, mode, TC_PROXY_OPTIONAL, NULL);
    char reply[256], want[300], me[TC_ADDR_STRLEN];
    int fd;
    exchange(&ts.addr, "", 0, "no header here", 0, reply, sizeof reply, &fd);
    local_of(fd, me);
    close(fd);
    snprintf(want, sizeof want, "peer=%s proxy=- dest=-\nno header here", me);
    cr_assert_str_eq(reply, want);
    /* "PRO" is a prefix of the v1 signature until the fourth byte says otherwise. */
    exchange(&ts.addr, "", 0, "PROBABLY NOT", 2, reply, sizeof reply, NULL);
    cr_assert(strstr(reply, "proxy=- dest=-\nPROBABLY NOT"), "reply: %s", reply);
    const char *v1 = "PROXY TCP4 192.0.2.7 198.51.100.1 51234 443\r\n";
    exchange(&ts.addr, v1, strlen(v1), "x", 0, reply, sizeof reply, NULL);
    cr_assert(strstr(reply, "peer=192.0.2.7:51234 "), "reply: %s", reply);
    tc_test_server_stop(&ts);
    cr_assert_eq(tc_test_event_count(&errors), 0);
}

/* The same in a blocking mode and in the event loop, which reads the header
 * without blocking, from whatever pieces arrive. */
Test(proxy, rejects_malformed_untrusted_and_missing_threading)
{
    rejects_malformed_untrusted_and_missing(TC_MODE_THREADING);
}
Test(proxy, rejects_malformed_untrusted_and_missing_event)
{
    rejects_malformed_untrusted_and_missing(TC_MODE_EVENT);
}
Test(proxy, optional_with_and_without_header_threading)
{
    optional_with_and_without_header(TC_MODE_THREADING);
}
Test(proxy, optional_with_and_without_header_event)
{
    optional_with_and_without_header(TC_MODE_EVENT);
}

static void timeouts_and_early_close(tc_mode mode)
{
    tc_test_event_init(&errors);
    tc_server_config cfg = proxy_config(TC_PROXY_REQUIRED, NULL);
    cfg.mode = mode;
    cfg.proxy_timeout_ms = 150;
    tc_handler h = TC_HANDLER_INIT;
    if (mode == TC_MODE_EVENT) {
        h.on_open = peer_open;
        h.on_message = echo_message;
    } else {
        h.handle = peer_handle;
    }
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    /* A silent client: closed after the timeout with -ETIMEDOUT. */
    int64_t t0 = tc_test_now_ms();
    int fd = tc_test_connect_ok(&ts.addr);
    cr_assert_eq(tc_test_recv_eof(fd), 0);
    int64_t took = tc_test_now_ms() - t0;
    cr_assert_geq(took, 140, "closed after %lld ms", (long long)took);
    close(fd);
    cr_assert_eq(tc_test_event_wait(&errors, 1, TC_TEST_WAIT_MS), 0);
    char log[256];
    tc_test_event_log(&errors, log, sizeof log);
    cr_assert_str_eq(log, "ETIMEDOUT");
    /* A client that leaves without a byte (a TCP health check): no error. */
    fd = tc_test_connect_ok(&ts.addr);
    close(fd);
    fd = tc_test_connect_ok(&ts.addr);
    const char *v1 = "PROXY UNKNOWN\r\n";
    cr_assert_eq(tc_test_send_all(fd, v1, strlen(v1)), 0);
    shutdown(fd, SHUT_WR);
    char reply[256];
    cr_assert_gt(tc_test_recv_full(fd, reply, sizeof reply - 1), 0);
    close(fd);
    tc_test_server_stop(&ts);
    cr_assert_eq(tc_test_event_count(&errors), 1, "the early close was reported");

    /* Optional: a silent client is served without a header once the wait ends. */
    tc_test_event_init(&errors);
    cfg.proxy_protocol = TC_PROXY_OPTIONAL;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    fd = tc_test_connect_ok(&ts.addr);
    ssize_t got = recv(fd, reply, sizeof reply - 1, 0);
    cr_assert_gt(got, 0);
    reply[got] = '\0';
    cr_assert(strstr(reply, "proxy=- dest=-\n"), "reply: %s", reply);
    close(fd);
    tc_test_server_stop(&ts);
}

Test(proxy, timeouts_and_early_close_threading)
{
    timeouts_and_early_close(TC_MODE_THREADING);
}
Test(proxy, timeouts_and_early_close_event)
{
    timeouts_and_early_close(TC_MODE_EVENT);
}

/* Message style: each line back, prefixed with the peer. */
static int peer_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    char p[TC_ADDR_STRLEN];
    (void)ctx;
    (void)tc_addr_format(tc_conn_peer(c), p, sizeof p);
    int rc = tc_conn_printf(c, "%s %.*s\n", p, (int)len, (const char *)msg);
    return rc < 0 ? rc : 0;
}

Test(proxy, message_style_and_buffered_bytes)
{
    /* A line codec: the first line arrives in the same segment as the header. */
    tc_test_event_init(&errors);
    tc_server_config cfg = proxy_config(TC_PROXY_REQUIRED, NULL);
    cfg.mode = TC_MODE_THREADING;
    tc_codec_delimited(&cfg.codec, "\n", 1);
    tc_handler h = TC_HANDLER_INIT;
    h.on_message = peer_message;
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, &h);
    const char *in = "PROXY TCP6 2001:db8::1 2001:db8::2 7 8\r\none\ntwo\n";
    char reply[256];
    exchange(&ts.addr, in, strlen(in), "three\n", 0, reply, sizeof reply, NULL);
    cr_assert_str_eq(reply, "[2001:db8::1]:7 one\n[2001:db8::1]:7 two\n[2001:db8::1]:7 three\n");
    tc_test_server_stop(&ts);
    cr_assert_eq(tc_test_event_count(&errors), 0);
}


Test(proxy, configuration)
{
    tc_test_event_init(&errors);
    tc_server *srv;
    tc_handler h = tc_test_echo_handler();
    tc_server_config cfg = proxy_config(TC_PROXY_REQUIRED, "10.0.0.0/8, nonsense");
    tc_test_event log;
    tc_test_event_init(&log);
    cfg.hooks.log = tc_test_log_hook;
    cfg.hooks.ctx = &log;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
    char text[4096];
    tc_test_event_log(&log, text, sizeof text);
    cr_assert(strstr(text, "proxy_trusted entry 2"), "log: %s", text);
    cfg.proxy_trusted = NULL;
    cfg.proxy_protocol = (tc_proxy_mode)7;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
    cfg.proxy_protocol = TC_PROXY_OPTIONAL;
    cfg.proxy_timeout_ms = -1;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
    cfg.proxy_timeout_ms = 0;
    /* A bad list is refused even with the protocol off. */
    cfg.mode = TC_MODE_INLINE;
    cfg.proxy_protocol = TC_PROXY_OFF;
    cfg.proxy_trusted = "300.1.1.1";
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
    /* The list is copied: the caller's string may go. */
    char *list = strdup("127.0.0.1/32");
    cfg.proxy_trusted = list;
    cfg.proxy_protocol = TC_PROXY_REQUIRED;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), 0);
    memset(list, 'z', strlen(list));
    free(list);
    tc_server_destroy(srv);
    tc_test_event_destroy(&log);
}
