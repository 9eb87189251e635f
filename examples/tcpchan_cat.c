/* SPDX-License-Identifier: MIT */
/* tcpchan-cat: a small nc. Sends standard input to a server and prints what
 * comes back. With --framing line or len32, each stdin line is one frame and
 * each reply frame is printed as one line. At the end of stdin the sending
 * side is half-closed and replies are printed until the server closes.
 * Datagrams (udp:ADDR, unixgram:PATH, or --udp): each stdin read (raw) or
 * line (line) is one datagram; at the end of stdin replies are printed until
 * there are as many as datagrams sent, or --timeout passes without one.
 * --tls: over TLS (libtcpchan-tls), the server verified against --tls-ca or
 * the system's store, its name checked. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tcpchan/tcpchan.h>
#ifdef TC_CAT_TLS
#include <tcpchan/tls.h>
#endif

#include "cli.h"

static const char usage_text[] =
    "usage: tcpchan-cat ADDR [--framing raw|line|len32] [--max-frame BYTES] [--timeout MS]\n"
    "                        [--udp] [--tls [--tls-ca FILE]]\n"
    "  ADDR               HOST:PORT, [IPV6]:PORT or unix:PATH; datagrams: udp:HOST:PORT,\n"
    "                     udp:[IPV6]:PORT or unixgram:PATH (each read or line one datagram)\n"
    "  --udp              ADDR is a UDP address (as if written udp:ADDR)\n"
    "  --framing F        raw (default): bytes both ways; line: a line per message;\n"
    "                     len32: each stdin line sent as a 4-byte big-endian length + payload,\n"
    "                     each reply frame printed as a line\n"
    "  --max-frame BYTES  largest reply frame accepted (default 1048576)\n"
    "  --timeout MS       connect timeout, and how long a reply may stall (default 10000)\n"
    "  --tls              TLS: the server's certificate is verified and must name HOST\n"
    "  --tls-ca FILE      the CA certificates (PEM) to verify it with (default: the system's)\n"
    "Every option also takes the form --name=VALUE. A mistake in the arguments prints one\n"
    "line naming it and exits 2.\n";

enum framing { RAW, LINE, LEN32 };

static int fail(const char *what, int rc)
{
    fprintf(stderr, "tcpchan-cat: %s: %s\n", what, tc_strerror(rc));
    return 1;
}

/* Print every reply that is complete or arriving; TC_EOF once the server is done. */
static int print_replies(tc_conn *c, enum framing f)
{
    const void *msg;
    size_t len;
    if (f == RAW) {
        char buf[65536];
        ssize_t n = tc_conn_read(c, buf, sizeof buf);
        if (n < 0)
            return (int)n;
        fwrite(buf, 1, (size_t)n, stdout);
        fflush(stdout);
        return 0;
    }
    do {
        int rc = tc_conn_read_frame(c, &msg, &len);
        if (rc < 0)
            return rc;
        fwrite(msg, 1, len, stdout);
        putchar('\n');
        /* More replies may already be buffered: poll() would not show them. */
        rc = tc_conn_peek(c, 0, &msg, &len);
        if (rc < 0)
            return rc;
    } while (len > 0);
    fflush(stdout);
    return 0;
}

/* Send what stdin gave: raw bytes as they are, else one frame per complete line. */
static int send_input(tc_conn *c, enum framing f, char *pending, size_t *plen, int at_eof)
{
    if (f == RAW) {
        ssize_t n = tc_conn_send_all(c, pending, *plen);
        *plen = 0;
        return n < 0 ? (int)n : 0;
    }
    size_t start = 0;
    for (;;) {
        char *nl = memchr(pending + start, '\n', *plen - start);
        size_t end = nl ? (size_t)(nl - pending) : *plen;
        if (!nl && (!at_eof || end == start))
            break;
        ssize_t rc = tc_conn_write_frame(c, pending + start, end - start);
        if (rc < 0)
            return (int)rc;
        start = nl ? end + 1 : end;
    }
    memmove(pending, pending + start, *plen - start);
    *plen -= start;
    return 0;
}

/* Datagrams: every stdin read (raw) or line (line) goes out as one datagram,
 * every reply datagram is printed (line: followed by a newline). */
static int run_datagrams(tc_conn *c, enum framing f, int timeout_ms)
{
    static char in[65536], out[65536];
    size_t plen = 0;
    long sent = 0, got = 0;
    int stdin_open = 1;
    for (;;) {
        struct pollfd p[2] = {{.fd = stdin_open ? STDIN_FILENO : -1, .events = POLLIN},
                              {.fd = tc_conn_fd(c), .events = POLLIN}};
        if (!stdin_open && got >= sent)
            return 0;
        int r = poll(p, 2, stdin_open ? -1 : timeout_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return fail("poll", -errno);
        if (r == 0)
            return 0; /* quiet for --timeout after the end of stdin: done */
        if (p[1].revents) {
            ssize_t n = tc_conn_read(c, out, sizeof out); /* one datagram (0: an empty one) */
            if (n < 0 && n != TC_EOF)
                return fail("receive", (int)n);
            got++;
            fwrite(out, 1, n > 0 ? (size_t)n : 0, stdout);
            if (f == LINE)
                putchar('\n');
            fflush(stdout);
        }
        if (p[0].revents) {
            ssize_t n = read(STDIN_FILENO, in + plen, sizeof in - plen);
            if (n < 0 && errno == EINTR)
                continue;
            if (n > 0)
                plen += (size_t)n;
            size_t start = 0;
            for (;;) {
                char *nl = f == LINE ? memchr(in + start, '\n', plen - start) : NULL;
                size_t end = nl ? (size_t)(nl - in) : plen;
                /* raw: all there is; line: complete lines, and at the end the rest */
                if (start == plen || (f == LINE && !nl && n > 0 && plen < sizeof in))
                    break;
                ssize_t w = tc_conn_send(c, in + start, end - start);
                if (w < 0)
                    return fail("send", (int)w);
                sent++;
                start = nl ? end + 1 : end;
            }
            memmove(in, in + start, plen - start);
            plen -= start;
            if (n <= 0)
                stdin_open = 0;
        }
    }
}

int main(int argc, char **argv)
{
    enum framing f = RAW;
    const char *addr = NULL;
    long max_frame = 0, timeout = 10000;
    int udp = 0, tls = 0;
    const char *tls_ca = NULL;
    cli_prog = "tcpchan-cat";
    for (int i = 1; i < argc; i++) {
        struct cli_opt opt;
        int rc = cli_split(argv[i], &opt);
        if (rc)
            return rc;
        const char *a = opt.name;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (!strcmp(a, "--udp") || !strcmp(a, "--tls")) {
            if ((rc = cli_flag(&opt)) != 0)
                return rc;
            *(a[2] == 'u' ? &udp : &tls) = 1;
            continue;
        }
        if (a[0] != '-') {
            if (addr)
                return cli_bad(a, "one address only");
            addr = a;
            continue;
        }
        if (strcmp(a, "--framing") != 0 && strcmp(a, "--max-frame") != 0 &&
            strcmp(a, "--timeout") != 0 && strcmp(a, "--tls-ca") != 0)
            return cli_bad(a, "unknown argument (see --help)");
        if ((rc = cli_value(argc, argv, &i, &opt)) != 0)
            return rc;
        const char *v = opt.value;
        if (!strcmp(a, "--framing"))
            rc = !strcmp(v, "raw")     ? (f = RAW, 0)
                 : !strcmp(v, "line")  ? (f = LINE, 0)
                 : !strcmp(v, "len32") ? (f = LEN32, 0)
                                       : cli_bad(a, "must be raw, line or len32");
        else if (!strcmp(a, "--max-frame"))
            rc = cli_long(a, v, 0, &max_frame);
        else if (!strcmp(a, "--tls-ca"))
            tls_ca = v, tls = 1;
        else
            rc = cli_long(a, v, 0, &timeout);
        if (rc)
            return rc;
    }
    if (!addr)
        return cli_bad("ADDR", "missing: where to connect (see --help)");
    static char udp_addr[TC_ADDR_STRLEN + 8];
    if (udp) {
        if (!strncmp(addr, "udp:", 4) || !strncmp(addr, "unix", 4))
            return cli_bad("--udp", "takes a HOST:PORT address (or write udp:HOST:PORT alone)");
        snprintf(udp_addr, sizeof udp_addr, "udp:%s", addr);
        addr = udp_addr;
    }
    int dgram = !strncmp(addr, "udp:", 4) || !strncmp(addr, "unixgram:", 9);
    if (dgram && f == LEN32)
        return cli_bad("--framing", "len32 does not apply to datagrams (each is one message)");

    tc_dial_config o = TC_DIAL_CONFIG_INIT;
    o.connect_timeout_ms = (int)timeout;
    if (f == LINE && !dgram)
        tc_codec_delimited(&o.codec, "\n", 1);
    else if (f == LEN32)
        tc_codec_length_prefixed(&o.codec, 4, TC_BIG_ENDIAN);
    if (tc_codec_set_max_frame(&o.codec, (size_t)max_frame) < 0)
        return cli_bad("--max-frame", "too large");
    if (tls && dgram)
        return cli_bad("--tls", "does not apply to datagrams");
#ifdef TC_CAT_TLS
    tc_tls *tctx = NULL;
    if (tls) {
        tc_tls_config tc = TC_TLS_CONFIG_INIT;
        tc.ca_file = tls_ca;
        if (tc_tls_client_create(&tctx, &tc) < 0)
            return cli_bad("--tls-ca", "cannot be read as PEM certificates");
        o.transport = tc_tls_transport(tctx);
    }
#else
    if (tls)
        return cli_bad("--tls", "this build has no TLS (libtcpchan-tls: OpenSSL 3)");
#endif
    tc_conn *c;
    int rc = tc_dial(&c, addr, &o);
    if (rc < 0) {
        const char *why = tc_last_error_detail();
        fprintf(stderr, "tcpchan-cat: %s: %s\n", addr, why[0] ? why : tc_strerror(rc));
#ifdef TC_CAT_TLS
        tc_tls_destroy(tctx);
#endif
        return 1;
    }
    tc_conn_set_timeout(c, (int)timeout); /* a frame that stalls half-way */
    if (dgram) {
        int status = run_datagrams(c, f, (int)timeout);
        tc_conn_close(c);
        return status;
    }

    static char pending[1 << 16];
    size_t plen = 0;
    int stdin_open = 1, status = 0;
    for (;;) {
        struct pollfd p[2] = {{.fd = stdin_open ? STDIN_FILENO : -1, .events = POLLIN},
                              {.fd = tc_conn_fd(c), .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            status = fail("poll", -errno);
            break;
        }
        if (p[1].revents) {
            /* TLS: readable may be a session ticket and no data (a read would
             * wait), and a read may leave decrypted data poll() cannot see:
             * read until a short wait finds nothing. */
            if (tls)
                tc_conn_set_timeout(c, 1);
            do
                rc = print_replies(c, f);
            while (tls && rc == 0);
            if (tls) {
                tc_conn_set_timeout(c, (int)timeout);
                if (rc == -ETIMEDOUT)
                    rc = 0;
            }
            if (rc == TC_EOF)
                break;
            if (rc < 0) {
                status = fail("receive", rc);
                break;
            }
        }
        if (p[0].revents) {
            ssize_t n = read(STDIN_FILENO, pending + plen, sizeof pending - plen);
            if (n < 0 && errno == EINTR)
                continue;
            if (n > 0)
                plen += (size_t)n;
            /* At the end, or with a line longer than the buffer: send the rest as a frame. */
            int whole = n <= 0 || plen == sizeof pending;
            if ((rc = send_input(c, f, pending, &plen, whole)) < 0) {
                status = fail("send", rc);
                break;
            }
            if (n <= 0) {
                stdin_open = 0;
                tc_conn_shutdown_write(c); /* the server sees the end; replies still come */
            }
        }
    }
    tc_conn_close(c);
#ifdef TC_CAT_TLS
    tc_tls_destroy(tctx);
#endif
    return status;
}
