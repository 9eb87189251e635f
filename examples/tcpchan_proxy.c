/* SPDX-License-Identifier: MIT */
/* tcpchan-proxy: a TCP relay on event loops. Each client gets a connection
 * to the backend dialled from its own loop (tc_loop_dial); bytes go both
 * ways as they come (raw framing), and each side stops reading while the
 * other side's queue is above the high-water mark, until that side's
 * on_drain. An end of stream is passed on as a half-close; the two
 * connections of a pair close together. SIGINT/SIGTERM drain and exit 0. The command line is a stable contract: see usage(). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <tcpchan/loop.h>
#include <tcpchan/tcpchan.h>

#include "cli.h"
#include "serve_until_signal.h"

static const char usage_text[] =
    "usage: tcpchan-proxy --listen ADDR --to ADDR [--workers N] [--max-conns N]\n"
    "                     [--connect-timeout MS] [--idle-timeout MS] [--drain-timeout MS]\n"
    "  --listen ADDR          where clients connect: HOST:PORT, [IPV6]:PORT or unix:PATH;\n"
    "                         port 0 = any free port (the \"listening on\" line says which)\n"
    "  --to ADDR              the backend: HOST:PORT, [IPV6]:PORT or unix:PATH (a host name\n"
    "                         is resolved once, at start)\n"
    "  --workers N            event loops (default 1; 0: one per CPU)\n"
    "  --max-conns N          clients at once (default 2048; each also holds a backend\n"
    "                         connection; 0: no limit)\n"
    "  --connect-timeout MS   give up on the backend after MS ms (default 5000)\n"
    "  --idle-timeout MS      close a pair silent both ways for MS ms (default 300000; 0: never)\n"
    "  --drain-timeout MS     on SIGINT/SIGTERM, let pairs finish for at most MS ms (default 5000)\n"
    "Every option also takes the form --name=VALUE.\n";

#define DEFAULT_CLIENTS 2048

struct options {
    const char *listen, *to;
    long workers, max_conns, connect_timeout, idle_timeout, drain_timeout;
};

/* A client and its backend connection; freed when both are gone. */
struct pair {
    tc_conn *client, *backend;
    int dialling;          /* the backend's dial has not answered yet */
    int client_eof, backend_eof; /* that side ended its stream (half-close) */
};

struct proxy {
    const char *to;
    tc_loop_dial_config dial;
    tc_handler backend_handler;
};

/* Both sides gone: the pair goes too. */
static void pair_release(struct pair *p)
{
    if (!p->client && !p->backend && !p->dialling)
        free(p);
}

/* Send what one side said to the other; stop reading the sayer while the
 * other side's queue is above the high-water mark (its on_drain resumes). */
static int relay(tc_conn *from, tc_conn *to, const void *msg, size_t len)
{
    ssize_t r = tc_conn_send(to, msg, len);
    if (r < 0)
        return (int)r;
    if (tc_conn_pending(to) > TC_SEND_HIGH_WATER)
        return tc_conn_pause_reading(from);
    return 0;
}

/* One side ended its stream: the other side's peer hears it as a
 * half-close once what was sent before it is out (tc_conn_shutdown_write),
 * and this side stays open for the answer. Both ended: the pair is done. */
static int half_close(struct pair *p, tc_conn *other, int other_eof)
{
    if (!other)
        return 0; /* nobody to tell: close */
    int rc = tc_conn_shutdown_write(other);
    if (rc < 0)
        return rc;
    if (other_eof) {
        (void)tc_conn_end(p->client, 0);
        (void)tc_conn_end(p->backend, 0);
    }
    return 1;
}

/* ---- the backend side ---------------------------------------------------------- */

static int backend_open(tc_conn *b, void *ctx)
{
    struct pair *p = tc_conn_data(b);
    (void)ctx;
    p->dialling = 0;
    p->backend = b;
    (void)tc_conn_set_nodelay(b, 1); /* a relay adds no Nagle delay (unix sockets: no-op) */
    if (!p->client)
        return tc_conn_end(b, 0); /* the client left while we connected */
    return tc_conn_resume_reading(p->client); /* it waited for us */
}

static int backend_message(tc_conn *b, const void *msg, size_t len, void *ctx)
{
    struct pair *p = tc_conn_data(b);
    (void)ctx;
    return p->client ? relay(b, p->client, msg, len) : 0;
}

static int backend_eof(tc_conn *b, void *ctx)
{
    struct pair *p = tc_conn_data(b);
    (void)ctx;
    p->backend_eof = 1;
    return half_close(p, p->client, p->client_eof);
}

static int backend_drain(tc_conn *b, void *ctx)
{
    struct pair *p = tc_conn_data(b);
    (void)ctx;
    return p->client ? tc_conn_resume_reading(p->client) : 0;
}

static void backend_close(tc_conn *b, int reason, void *ctx)
{
    struct pair *p = tc_conn_data(b);
    (void)ctx;
    if (p->dialling && reason != TC_ESHUTDOWN) {
        char to[TC_ADDR_STRLEN] = "-";
        (void)tc_addr_format(tc_conn_peer(b), to, sizeof to);
        fprintf(stderr, "tcpchan-proxy: backend %s: %s\n", to, tc_strerror(reason));
    }
    p->dialling = 0;
    p->backend = NULL;
    if (p->client)
        (void)tc_conn_end(p->client, 0); /* after what it still has to send */
    pair_release(p);
}

/* ---- the client side -------------------------------------------------------------- */

static int client_open(tc_conn *c, void *ctx)
{
    struct proxy *px = ctx;
    struct pair *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->client = c;
    tc_conn_set_data(c, p);
    (void)tc_conn_set_nodelay(c, 1);
    /* Nothing is read until the backend is there to take it. */
    int rc = tc_conn_pause_reading(c);
    tc_loop_dial_config dc = px->dial;
    dc.data = p;
    if (rc == 0)
        rc = tc_loop_dial(tc_conn_loop(c), px->to, &dc, &px->backend_handler);
    if (rc < 0) {
        free(p);
        return rc;
    }
    p->dialling = 1;
    return 0;
}

static int client_message(tc_conn *c, const void *msg, size_t len, void *ctx)
{
    struct pair *p = tc_conn_data(c);
    (void)ctx;
    return p->backend ? relay(c, p->backend, msg, len) : -ENOTCONN;
}

static int client_eof(tc_conn *c, void *ctx)
{
    struct pair *p = tc_conn_data(c);
    (void)ctx;
    p->client_eof = 1;
    return half_close(p, p->backend, p->backend_eof);
}

static int client_drain(tc_conn *c, void *ctx)
{
    struct pair *p = tc_conn_data(c);
    (void)ctx;
    return p->backend ? tc_conn_resume_reading(p->backend) : 0;
}

static void client_close(tc_conn *c, int reason, void *ctx)
{
    struct pair *p = tc_conn_data(c);
    (void)reason, (void)ctx;
    p->client = NULL;
    if (p->backend)
        (void)tc_conn_end(p->backend, 0);
    pair_release(p); /* a dial still out frees it in its on_close or ends it in on_open */
}

/* ---- the command line ---------------------------------------------------------------- */

static int parse_args(int argc, char **argv, struct options *o)
{
    for (int i = 1; i < argc; i++) {
        struct cli_opt opt;
        int rc = cli_split(argv[i], &opt);
        if (rc)
            return rc;
        const char *a = opt.name;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage_text, stdout);
            exit(0);
        }
        if (a[0] != '-' || a[1] != '-')
            return cli_bad(a, "unknown argument");
        if ((rc = cli_value(argc, argv, &i, &opt)) != 0)
            return rc;
        const char *v = opt.value;
        if (!strcmp(a, "--listen"))
            o->listen = v;
        else if (!strcmp(a, "--to"))
            o->to = v;
        else if (!strcmp(a, "--workers"))
            rc = cli_long(a, v, 0, &o->workers);
        else if (!strcmp(a, "--max-conns"))
            rc = cli_long(a, v, 0, &o->max_conns);
        else if (!strcmp(a, "--connect-timeout"))
            rc = cli_long(a, v, 0, &o->connect_timeout);
        else if (!strcmp(a, "--idle-timeout"))
            rc = cli_long(a, v, 0, &o->idle_timeout);
        else if (!strcmp(a, "--drain-timeout"))
            rc = cli_long(a, v, 0, &o->drain_timeout);
        else
            rc = cli_bad(a, "unknown argument");
        if (rc)
            return rc;
    }
    if (!o->listen)
        return cli_bad("--listen", "is required");
    if (!o->to)
        return cli_bad("--to", "is required");
    /* A name is resolved once, here: the loops dial the address. */
    static char to[TC_ADDR_STRLEN];
    tc_addr a;
    int rc = tc_addr_parse(&a, o->to);
    if (rc < 0)
        return cli_bad("--to", tc_strerror(rc));
    if (a.socktype == SOCK_DGRAM)
        return cli_bad("--to", "must be a stream address: HOST:PORT, [IPV6]:PORT or unix:PATH");
    if (tc_addr_format(&a, to, sizeof to) < 0)
        return cli_bad("--to", "cannot be written back as an address");
    o->to = to;
    return 0;
}

int main(int argc, char **argv)
{
    struct options o = {.workers = 1, .max_conns = DEFAULT_CLIENTS, .connect_timeout = 5000,
                        .idle_timeout = -1, .drain_timeout = 5000};
    cli_prog = "tcpchan-proxy";
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc;

    struct proxy px;
    memset(&px, 0, sizeof px);
    px.to = o.to;
    tc_loop_dial_config_init(&px.dial);
    px.dial.connect_timeout_ms = o.connect_timeout > 0 ? (int)o.connect_timeout : 5000;
    tc_handler bh = TC_HANDLER_INIT;
    bh.on_open = backend_open;
    bh.on_message = backend_message;
    bh.on_drain = backend_drain;
    bh.on_eof = backend_eof;
    bh.on_close = backend_close;
    px.backend_handler = bh;

    tc_server_config cfg;
    tc_server_config_init(&cfg);
    cfg.listen = o.listen;
    cfg.mode = TC_MODE_EVENT;
    cfg.workers = (int)o.workers;
    /* Each client holds its backend connection too: both count. */
    cfg.max_conns = o.max_conns ? (int)(o.max_conns > INT_MAX / 2 ? INT_MAX : 2 * o.max_conns) : -1;
    if (o.idle_timeout >= 0)
        cfg.idle_timeout_ms = o.idle_timeout ? (int)o.idle_timeout : -1;
    cfg.drain_timeout_ms = o.drain_timeout ? (int)o.drain_timeout : -1;
    tc_codec_raw(&cfg.codec);
    tc_handler h = TC_HANDLER_INIT;
    h.on_open = client_open;
    h.on_message = client_message;
    h.on_drain = client_drain;
    h.on_eof = client_eof;
    h.on_close = client_close;
    h.ctx = &px;

    tc_server *srv;
    rc = tc_server_create(&srv, &cfg, &h);
    if (rc < 0) {
        const char *why = tc_last_error_detail();
        fprintf(stderr, "tcpchan-proxy: %s\n", why[0] ? why : tc_strerror(rc));
        return rc == TC_EBADADDR || rc == TC_EBADCONFIG ? 2 : 1;
    }
    rc = serve_until_signal(srv);
    tc_server_destroy(srv);
    if (rc < 0) {
        fprintf(stderr, "tcpchan-proxy: %s\n", tc_strerror(rc));
        return 1;
    }
    return 0;
}
