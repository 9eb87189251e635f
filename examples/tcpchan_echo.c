/* SPDX-License-Identifier: MIT */
/* tcpchan-echo: the demo and benchmark server. Echoes what each client sends,
 * in any concurrency mode: raw bytes with a stream handler, lines or len32
 * frames with a message-style handler; SIGINT/SIGTERM shut it down gracefully.
 * Deployment: several processes on one port (--processes), systemd socket
 * activation (--listen systemd:NAME), inetd (--inetd), behind a proxy
 * speaking the PROXY protocol (--proxy). The command line is a stable
 * contract: see usage() and the README. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <tcpchan/tcpchan.h>

static const char usage_text[] =
    "usage: tcpchan-echo [--listen ADDR] [--mode MODE] [--workers N] [--max-conns N]\n"
    "                    [--framing F] [--max-frame BYTES] [--idle-timeout MS] [--drain-timeout MS]\n"
    "                    [--processes N] [--proxy P] [--proxy-trusted LIST] [--greet] [--inetd]\n"
    "  --listen ADDR       default 127.0.0.1:7000; HOST:PORT, [IPV6]:PORT or unix:PATH; port 0 = any free port;\n"
    "                      systemd or systemd:NAME = the socket systemd passed (socket activation)\n"
    "  --mode MODE         inline | threading | forking | pool | event   (default threading)\n"
    "  --workers N         pool: worker threads; event: loop threads (default: CPU count)\n"
    "  --max-conns N       live connections at most; further clients wait (default: no limit; forking: 40)\n"
    "  --framing F         raw (default) | line | len32\n"
    "  --max-frame BYTES   largest line or frame accepted (default 1048576)\n"
    "  --idle-timeout MS   close a connection silent for MS ms (default 0: never)\n"
    "  --drain-timeout MS  on SIGINT/SIGTERM, let connections finish for at most MS ms (default 5000)\n"
    "  --processes N       N worker processes sharing the port with SO_REUSEPORT, restarted if they\n"
    "                      crash (default 1: no workers); not with unix:PATH\n"
    "  --proxy P           off (default) | required | optional: PROXY protocol header (v1 or v2) first\n"
    "  --proxy-trusted L   proxies allowed to send one: addresses and CIDR blocks, comma-separated\n"
    "                      (default 127.0.0.0/8,::1/128)\n"
    "  --greet             start each connection with a line \"peer=ADDR proxy=ADDR|- pid=PID\"\n"
    "  --inetd             serve the one connection on stdin, then exit (inetd, or systemd Accept=yes)\n";

struct options {
    const char *listen;
    tc_mode mode;
    long workers, max_conns, max_frame, idle_timeout, drain_timeout, processes;
    const char *framing;
    int set_max_frame, set_idle_timeout;
    tc_proxy_mode proxy;
    const char *proxy_trusted;
    int greet, inetd;
    const char *systemd_name; /* --listen systemd[:NAME]; NULL name = the first socket */
    int systemd;
};

static tc_server *volatile the_server;
static tc_prefork *volatile the_prefork;

static void on_signal(int sig)
{
    (void)sig;
    if (the_server)
        tc_server_shutdown(the_server); /* async-signal-safe */
    if (the_prefork)
        tc_prefork_stop(the_prefork); /* async-signal-safe; nothing in a worker */
}

/* SIGINT and SIGTERM ask the_server or the_prefork for a graceful stop. */
static void catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
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
        if (!strcmp(a, "--greet") || !strcmp(a, "--inetd")) { /* flags without a value */
            *(a[2] == 'g' ? &o->greet : &o->inetd) = 1;
            continue;
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
        else if (!strcmp(a, "--processes"))
            rc = parse_long(a, v, 1, &o->processes);
        else if (!strcmp(a, "--proxy"))
            rc = !strcmp(v, "off")        ? (o->proxy = TC_PROXY_OFF, 0)
                 : !strcmp(v, "required") ? (o->proxy = TC_PROXY_REQUIRED, 0)
                 : !strcmp(v, "optional") ? (o->proxy = TC_PROXY_OPTIONAL, 0)
                                          : bad_arg(a, "must be off, required or optional");
        else if (!strcmp(a, "--proxy-trusted"))
            o->proxy_trusted = v;
        else
            rc = bad_arg(a, "unknown argument");
        if (rc)
            return rc;
    }
    if (strcmp(o->framing, "raw") != 0 && strcmp(o->framing, "line") != 0 &&
        strcmp(o->framing, "len32") != 0)
        return bad_arg("--framing", "must be raw, line or len32");
    if (!strcmp(o->listen, "systemd") || !strncmp(o->listen, "systemd:", 8)) {
        o->systemd = 1;
        o->systemd_name = o->listen[7] == ':' ? o->listen + 8 : NULL;
    }
    if (o->inetd && o->processes > 1)
        return bad_arg("--processes", "makes no sense with --inetd");
    if (o->processes > 1 && !o->systemd && !strncmp(o->listen, "unix:", 5))
        return bad_arg("--processes", "needs a TCP address (SO_REUSEPORT) or systemd");
    /* Features of later milestones: refuse clearly rather than ignore. */
    if (!tc_mode_available(o->mode))
        return bad_arg("--mode", "not available yet");
    return 0;
}

/* Raw framing: whatever bytes arrived go straight back (one sendmsg, no
 * copy). The message loop keeps no buffer while a connection is idle, and a
 * handler thread touches only a couple of stack pages. */
static int echo_send(tc_conn *conn, const void *msg, size_t len, void *ctx)
{
    (void)ctx;
    ssize_t sent = tc_conn_send(conn, msg, len); /* len, or a negative code */
    return sent < 0 ? (int)sent : 0;
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

/* --greet: one line saying who the client is, as the server sees it. */
static int greet(tc_conn *conn)
{
    char peer[TC_ADDR_STRLEN] = "-", proxy[TC_ADDR_STRLEN] = "-";
    (void)tc_addr_format(tc_conn_peer(conn), peer, sizeof peer);
    if (tc_conn_proxy_peer(conn))
        (void)tc_addr_format(tc_conn_proxy_peer(conn), proxy, sizeof proxy);
    int rc = tc_conn_printf(conn, "peer=%s proxy=%s pid=%ld\n", peer, proxy, (long)getpid());
    return rc < 0 ? rc : tc_conn_flush(conn);
}

static int greet_open(tc_conn *conn, void *ctx)
{
    (void)ctx;
    return greet(conn);
}

/* Create the server and serve until SIGINT/SIGTERM. The "listening on" line
 * is printed when token_fd is -1, or by the one worker that takes the token. */
static int serve(const tc_server_config *cfg, const tc_handler *handler, const char *listen,
                 int token_fd)
{
    tc_server *srv;
    int rc = tc_server_create(&srv, cfg, handler);
    if (rc == TC_EBADADDR || rc == -ENAMETOOLONG)
        return bad_arg("--listen", tc_strerror(rc));
    if (rc == TC_EBADCONFIG && cfg->proxy_trusted)
        return bad_arg("--proxy-trusted", "not a list of addresses and CIDR blocks");
    if (rc < 0) {
        fprintf(stderr, "tcpchan-echo: cannot listen on %s: %s\n", listen, tc_strerror(rc));
        return 1;
    }

    the_server = srv;
    catch_signals();

    char token;
    if (token_fd < 0 || read(token_fd, &token, 1) == 1) {
        tc_addr bound;
        char addr[TC_ADDR_STRLEN];
        tc_server_address(srv, &bound);
        tc_addr_format(&bound, addr, sizeof addr);
        printf("listening on %s\n", addr);
        fflush(stdout);
    }

    rc = tc_server_serve_forever(srv);
    the_server = NULL;
    tc_server_destroy(srv);
    if (rc < 0) {
        fprintf(stderr, "tcpchan-echo: %s\n", tc_strerror(rc));
        return 1;
    }
    return 0;
}

struct prefork_ctx {
    const tc_server_config *cfg;
    const tc_handler *handler;
    const char *listen;
    int token_fd;   /* one byte: the first worker to listen prints the line */
    int reserve_fd; /* the parent's hold on port 0's real port, or -1 */
};

static int echo_worker(int index, void *ctx)
{
    struct prefork_ctx *p = ctx;
    (void)index;
    if (p->reserve_fd >= 0)
        close(p->reserve_fd);
    int rc = serve(p->cfg, p->handler, p->listen, p->token_fd);
    fflush(stdout);
    return rc;
}

static void prefork_log(tc_prefork *pf, tc_log_level level, const char *msg, void *ctx)
{
    (void)pf;
    (void)ctx;
    if (level <= TC_LOG_WARN)
        fprintf(stderr, "tcpchan-echo: %s\n", msg);
}

/* Port 0 with several processes: every worker must bind the same port, so
 * the parent picks it with a bound (never listening) SO_REUSEPORT socket,
 * kept open to hold it. It never receives connections: the kernel hands
 * them only to listening sockets of the group. */
static int reserve_port(const char *listen, char *real, size_t n, int *fd_out)
{
    tc_addr a;
    int rc = tc_addr_parse(&a, listen);
    if (rc < 0)
        return bad_arg("--listen", tc_strerror(rc));
    *fd_out = -1;
    snprintf(real, n, "%s", listen);
    if (tc_addr_port(&a) != 0)
        return 0;
    int fd = socket(tc_addr_family(&a), SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;
    socklen_t len = sizeof a.u.storage;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) < 0 ||
        bind(fd, &a.u.sa, a.len) < 0 || getsockname(fd, &a.u.sa, &len) < 0) {
        fprintf(stderr, "tcpchan-echo: cannot listen on %s: %s\n", listen, strerror(errno));
        if (fd >= 0)
            close(fd);
        return 1;
    }
    a.len = len;
    tc_addr_format(&a, real, n);
    *fd_out = fd;
    return 0;
}

static int run_prefork(const struct options *o, tc_server_config *cfg, const tc_handler *handler)
{
    static char listen[TC_ADDR_STRLEN]; /* static: cfg (the caller's) keeps pointing at it */
    int rc, reserve_fd = -1, token[2];
    if (!o->systemd) {
        if ((rc = reserve_port(o->listen, listen, sizeof listen, &reserve_fd)) != 0)
            return rc;
        cfg->listen = listen;
        cfg->reuse_port = TC_ON; /* a listener per worker; the kernel spreads clients */
    }
    if (pipe2(token, O_CLOEXEC | O_NONBLOCK) < 0 || write(token[1], "t", 1) != 1) {
        fprintf(stderr, "tcpchan-echo: pipe: %s\n", strerror(errno));
        return 1;
    }
    struct prefork_ctx ctx = {cfg, handler, o->listen, token[0], reserve_fd};
    tc_prefork_config po = TC_PREFORK_CONFIG_INIT;
    tc_prefork *pf;
    po.processes = (int)o->processes;
    po.worker = echo_worker;
    po.ctx = &ctx;
    po.log = prefork_log;
    /* A worker drains for up to --drain-timeout after SIGTERM; then some slack. */
    po.stop_timeout_ms = (o->drain_timeout > 0 ? (int)o->drain_timeout : 0) + 2000;
    if ((rc = tc_prefork_create(&pf, &po)) < 0) {
        fprintf(stderr, "tcpchan-echo: %s\n", tc_strerror(rc));
        return 1;
    }
    the_prefork = pf;
    catch_signals();
    fflush(stdout);
    rc = tc_prefork_run(pf);
    the_prefork = NULL;
    tc_prefork_destroy(pf);
    close(token[0]);
    close(token[1]);
    if (reserve_fd >= 0)
        close(reserve_fd);
    if (rc < 0) {
        fprintf(stderr, "tcpchan-echo: workers: %s\n", tc_strerror(rc));
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct options o = {.listen = "127.0.0.1:7000", .mode = TC_MODE_THREADING,
                        .framing = "raw", .drain_timeout = 5000, .processes = 1};
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc;

    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    tc_handler handler = TC_HANDLER_INIT;
    cfg.listen = o.listen;
    cfg.mode = o.mode;
    cfg.workers = (int)o.workers;
    /* The library's defaults are finite (server.h); this tool's command line
     * promises "no limit" and "never" unless asked, so it says so explicitly
     * with negative values. Forking keeps its default of 40 children. */
    cfg.max_conns = o.max_conns ? (int)o.max_conns : o.mode == TC_MODE_FORKING ? 0 : -1;
    cfg.drain_timeout_ms = o.drain_timeout ? (int)o.drain_timeout : -1; /* 0: no wait */
    /* Every framing runs as a message-style handler: raw is the codec that
     * hands over whatever bytes arrived (--max-frame bounds one read). */
    if (!strcmp(o.framing, "line"))
        tc_codec_delimited(&cfg.codec, "\n", 1);
    else if (!strcmp(o.framing, "len32"))
        tc_codec_length_prefixed(&cfg.codec, 4, TC_BIG_ENDIAN);
    if (o.set_max_frame && tc_codec_set_max_frame(&cfg.codec, (size_t)o.max_frame) < 0)
        return bad_arg("--max-frame", "too large");
    cfg.idle_timeout_ms = o.idle_timeout ? (int)o.idle_timeout : -1; /* 0: never */
    cfg.conn_timeout_ms = -1; /* no flag: a silence is bounded by --idle-timeout alone */
    /* Event loops, and pool's workers, send at once what the socket takes:
     * no buffer to fill (and in pool mode no second hop through the loop). */
    int sends_now = o.mode == TC_MODE_EVENT || o.mode == TC_MODE_POOL;
    handler.on_message = strcmp(o.framing, "raw") != 0 && !sends_now ? echo_message : echo_send;

    if (o.greet)
        handler.on_open = greet_open;
    cfg.proxy_protocol = o.proxy;
    cfg.proxy_trusted = o.proxy_trusted;

    if (o.inetd) {
        rc = tc_server_serve_inetd(&cfg, &handler, 0);
        if (rc < 0)
            fprintf(stderr, "tcpchan-echo: --inetd: %s\n", tc_strerror(rc));
        return rc < 0 ? 1 : 0;
    }
    if (o.systemd) {
        int fd;
        rc = tc_listen_fds(o.systemd_name, &fd, 1);
        if (rc < 0) {
            fprintf(stderr, "tcpchan-echo: --listen %s: %s\n", o.listen, tc_strerror(rc));
            return 1;
        }
        cfg.listen = NULL;
        cfg.adopt_fd = TC_ON;
        cfg.listen_fd = fd;
    }
    if (o.processes > 1)
        return run_prefork(&o, &cfg, &handler);
    return serve(&cfg, &handler, o.listen, -1);
}
