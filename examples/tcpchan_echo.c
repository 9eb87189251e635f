/* SPDX-License-Identifier: MIT */
/* tcpchan-echo: the demo and benchmark server. Echoes what each client sends,
 * in any concurrency mode: raw bytes with a stream handler, lines or len32
 * frames with a message-style handler; SIGINT/SIGTERM shut it down gracefully.
 * The command line is a stable contract: see usage() and the README. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tcpchan/tcpchan.h>

static const char usage_text[] =
    "usage: tcpchan-echo [--listen ADDR] [--mode MODE] [--workers N] [--max-conns N]\n"
    "                    [--framing F] [--max-frame BYTES] [--idle-timeout MS] [--drain-timeout MS]\n"
    "  --listen ADDR       default 127.0.0.1:7000; HOST:PORT, [IPV6]:PORT or unix:PATH; port 0 = any free port\n"
    "  --mode MODE         inline | threading | forking | pool | event   (default threading)\n"
    "  --workers N         pool: worker threads; event: loop threads (default: CPU count)\n"
    "  --max-conns N       live connections at most; further clients wait (default: no limit; forking: 40)\n"
    "  --framing F         raw (default) | line | len32\n"
    "  --max-frame BYTES   largest line or frame accepted (default 1048576)\n"
    "  --idle-timeout MS   close a connection silent for MS ms (default 0: never)\n"
    "  --drain-timeout MS  on SIGINT/SIGTERM, let connections finish for at most MS ms (default 5000)\n";

struct options {
    const char *listen;
    tc_mode mode;
    long workers, max_conns, max_frame, idle_timeout, drain_timeout;
    const char *framing;
    int set_max_frame, set_idle_timeout;
};

static tc_server *volatile the_server;

static void on_signal(int sig)
{
    (void)sig;
    if (the_server)
        tc_server_shutdown(the_server); /* async-signal-safe */
}

static int bad_arg(const char *arg, const char *why)
{
    fprintf(stderr, "tcpchan-echo: %s: %s\n", arg, why);
    return 2;
}

static int parse_long(const char *arg, const char *s, long min, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > INT_MAX)
        return bad_arg(arg, "not a valid number");
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, struct options *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage_text, stdout);
            exit(0);
        }
        if (i + 1 >= argc)
            return a[0] == '-' && a[1] == '-' ? bad_arg(a, "missing value")
                                              : bad_arg(a, "unknown argument");
        const char *v = argv[++i];
        int rc = 0;
        if (!strcmp(a, "--listen"))
            o->listen = v;
        else if (!strcmp(a, "--mode"))
            rc = tc_mode_parse(v, &o->mode) < 0 ? bad_arg(a, "unknown mode") : 0;
        else if (!strcmp(a, "--workers"))
            rc = parse_long(a, v, 1, &o->workers);
        else if (!strcmp(a, "--max-conns"))
            rc = parse_long(a, v, 1, &o->max_conns);
        else if (!strcmp(a, "--framing"))
            o->framing = v;
        else if (!strcmp(a, "--max-frame"))
            rc = parse_long(a, v, 1, &o->max_frame), o->set_max_frame = 1;
        else if (!strcmp(a, "--idle-timeout"))
            rc = parse_long(a, v, 0, &o->idle_timeout), o->set_idle_timeout = 1;
        else if (!strcmp(a, "--drain-timeout"))
            rc = parse_long(a, v, 0, &o->drain_timeout);
        else
            rc = bad_arg(a, "unknown argument");
        if (rc)
            return rc;
    }
    if (strcmp(o->framing, "raw") && strcmp(o->framing, "line") && strcmp(o->framing, "len32"))
        return bad_arg("--framing", "must be raw, line or len32");
    /* Features of later milestones: refuse clearly rather than ignore. */
    if (!tc_mode_available(o->mode))
        return bad_arg("--mode", "not available yet");
    return 0;
}

static int echo_raw(tc_conn *conn, void *ctx)
{
    char buf[16384]; /* handler threads have small stacks */
    ssize_t n;
    (void)ctx;
    while ((n = tc_conn_read(conn, buf, sizeof buf)) > 0)
        if ((n = tc_conn_send_all(conn, buf, (size_t)n)) < 0)
            return (int)n;
    return n == TC_EOF ? 0 : (int)n;
}

/* One line or len32 frame in, the same frame out. The reply is buffered
 * (header, payload, trailer from the codec); the message loop flushes it
 * before it waits for more input, so pipelined requests share a send. */
static int echo_message(tc_conn *conn, const void *msg, size_t len, void *ctx)
{
    tc_codec_envelope env;
    (void)ctx;
    int rc = tc_codec_encode(tc_conn_codec(conn), msg, len, &env);
    ssize_t w = 0;
    if (rc < 0)
        return rc;
    if ((w = tc_conn_write(conn, env.head, env.head_len)) >= 0 &&
        (w = tc_conn_write(conn, msg, len)) >= 0)
        w = tc_conn_write(conn, env.tail, env.tail_len);
    return w < 0 ? (int)w : 0;
}

/* Event mode: send each reply at once (one sendmsg while the socket takes
 * it; the loop queues the rest), so a request costs no buffer allocation. */
static int echo_send(tc_conn *conn, const void *msg, size_t len, void *ctx)
{
    (void)ctx;
    return tc_conn_send(conn, msg, len);
}

int main(int argc, char **argv)
{
    struct options o = {.listen = "127.0.0.1:7000", .mode = TC_MODE_THREADING,
                        .framing = "raw", .drain_timeout = 5000};
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc;

    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    tc_handler handler = TC_HANDLER_INIT;
    cfg.listen = o.listen;
    cfg.mode = o.mode;
    cfg.workers = (int)o.workers;
    cfg.max_conns = (int)o.max_conns;
    cfg.drain_timeout_ms = o.drain_timeout ? (int)o.drain_timeout : -1; /* 0: no wait */
    if (o.mode == TC_MODE_EVENT) {
        /* Event loops run message-style handlers: raw is the codec that
         * hands over whatever bytes arrived. */
        if (!strcmp(o.framing, "line"))
            tc_codec_delimited(&cfg.codec, "\n", 1);
        else if (!strcmp(o.framing, "len32"))
            tc_codec_length_prefixed(&cfg.codec, 4, TC_BIG_ENDIAN);
        if (o.set_max_frame && tc_codec_set_max_frame(&cfg.codec, (size_t)o.max_frame) < 0)
            return bad_arg("--max-frame", "too large");
        cfg.idle_timeout_ms = (int)o.idle_timeout;
        handler.on_message = echo_send;
    } else if (!strcmp(o.framing, "raw")) {
        /* A byte echo has no frames; a silent connection ends through the
         * per-operation timeout instead. */
        handler.handle = echo_raw;
        cfg.conn_timeout_ms = (int)o.idle_timeout;
    } else {
        if (!strcmp(o.framing, "line"))
            tc_codec_delimited(&cfg.codec, "\n", 1);
        else
            tc_codec_length_prefixed(&cfg.codec, 4, TC_BIG_ENDIAN);
        if (o.set_max_frame && tc_codec_set_max_frame(&cfg.codec, (size_t)o.max_frame) < 0)
            return bad_arg("--max-frame", "too large");
        cfg.idle_timeout_ms = (int)o.idle_timeout;
        handler.on_message = echo_message;
    }

    tc_server *srv;
    rc = tc_server_create(&srv, &cfg, &handler);
    if (rc == TC_EBADADDR || rc == -ENAMETOOLONG)
        return bad_arg("--listen", tc_strerror(rc));
    if (rc < 0) {
        fprintf(stderr, "tcpchan-echo: cannot listen on %s: %s\n", o.listen, tc_strerror(rc));
        return 1;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    the_server = srv;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    tc_addr bound;
    char addr[TC_ADDR_STRLEN];
    tc_server_address(srv, &bound);
    tc_addr_format(&bound, addr, sizeof addr);
    printf("listening on %s\n", addr);
    fflush(stdout);

    rc = tc_server_serve_forever(srv);
    the_server = NULL;
    tc_server_destroy(srv);
    if (rc < 0) {
        fprintf(stderr, "tcpchan-echo: %s\n", tc_strerror(rc));
        return 1;
    }
    return 0;
}
