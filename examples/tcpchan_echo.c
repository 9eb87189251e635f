/* SPDX-License-Identifier: MIT */
/* tcpchan-echo: the demo and benchmark server. Echoes what each client sends,
 * in any concurrency mode: raw bytes with a stream handler, lines or len32
 * frames with a message-style handler; SIGINT/SIGTERM shut it down gracefully.
 * Deployment: several processes on one port (--processes), systemd socket
 * activation (--listen systemd:NAME), inetd (--inetd), behind a proxy
 * speaking the PROXY protocol (--proxy), several addresses at once (--listen
 * given more than once); TLS with --tls-cert/--tls-key (libtcpchan-tls;
 * SIGHUP reads them again). The command line is a stable contract: see
 * usage() and the README. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <tcpchan/tcpchan.h>
#ifdef TC_ECHO_TLS
#include <tcpchan/tls.h>
#endif

#include "cli.h"

static const char usage_text[] =
    "usage: tcpchan-echo [--listen ADDR] [--mode MODE] [--workers N] [--max-conns N]\n"
    "                    [--framing F] [--max-frame BYTES] [--idle-timeout MS] [--conn-timeout MS]\n"
    "                    [--drain-timeout MS] [--processes N] [--proxy P] [--proxy-trusted LIST]\n"
    "                    [--backend B] [--greet] [--inetd]\n"
    "                    [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]\n"
    "  --listen ADDR       default 127.0.0.1:7000; HOST:PORT, [IPV6]:PORT or unix:PATH; port 0 = any free port;\n"
    "                      :PORT or *:PORT = every IPv4 address (0.0.0.0:PORT);\n"
    "                      systemd or systemd:NAME = every socket systemd passed, or those named NAME\n"
    "                      (socket activation; stream sockets, or one datagram socket);\n"
    "                      given several times: one listener each, all served alike\n"
    "                      (stream addresses only), one \"listening on\" line each, in order;\n"
    "                      udp:HOST:PORT, udp:[IPV6]:PORT or unixgram:PATH = datagrams: each one\n"
    "                      echoed to its sender as one datagram (--max-frame bounds it, default\n"
    "                      65507; larger ones are dropped); not with --framing, --idle-timeout,\n"
    "                      --max-conns, --processes or --proxy\n"
    "  --mode MODE         inline | threading | forking | pool | event   (default threading)\n"
    "  --workers N         pool: worker threads; event: loop threads (default, or 0: CPU count)\n"
    "  --backend B         event: epoll (default) | io_uring (where the kernel refuses it: a line\n"
    "                      on stderr, and epoll)\n"
    "  --max-conns N       live connections at most; further clients wait in the backlog\n"
    "                      (default 4096; forking: 40; 0: no limit)\n"
    "  --framing F         raw (default) | line | len32 | ws\n"
    "                      ws: WebSocket (RFC 6455) on any path; each text or binary message\n"
    "                      echoed as one message of its type, pings answered, a close answered\n"
    "  --max-frame BYTES   largest line, frame or WebSocket message accepted (default 1048576;\n"
    "                      ws: a larger one is refused with close code 1009)\n"
    "  --idle-timeout MS   close a connection silent between messages for MS ms\n"
    "                      (default 300000; 0: never)\n"
    "  --conn-timeout MS   bound on each read and send, and on a message in progress\n"
    "                      (default 300000; 0: never)\n"
    "  --drain-timeout MS  on SIGINT/SIGTERM, let connections finish for at most MS ms (default 5000)\n"
    "  --processes N       N worker processes sharing the port with SO_REUSEPORT, restarted if they\n"
    "                      crash (default 1: no workers); not with unix:PATH. The parent binds the\n"
    "                      port first: one that is taken fails at once\n"
    "  --proxy P           off (default) | required | optional: PROXY protocol header (v1 or v2) first\n"
    "  --proxy-trusted L   proxies allowed to send one: addresses and CIDR blocks, comma-separated\n"
    "                      (default 127.0.0.0/8,::1/128)\n"
    "  --greet             start each connection with a line \"peer=ADDR proxy=ADDR|- pid=PID\"\n"
    "  --inetd             serve the one connection on stdin, then exit (inetd, or systemd Accept=yes)\n"
    "  --tls-cert FILE     TLS (1.2 and 1.3): the certificate chain, PEM, leaf first; with --tls-key\n"
    "  --tls-key FILE      its private key, PEM. A handshake must finish within 10 s (or\n"
    "                      --idle-timeout if smaller); SIGHUP reads both files again for new\n"
    "                      connections (a bad file keeps the old ones, with one line on stderr)\n"
    "  --tls-client-ca F   require a client certificate signed by a CA in F\n"
    "Every option also takes the form --name=VALUE. The limits default to the library's finite\n"
    "values (docs/production.md), so a silent or stalled client never holds a connection\n"
    "forever; 0 turns one off.\n";

#define MAX_LISTEN 16 /* --listen given this many times at most */

struct options {
    const char *listen; /* the first --listen */
    const char *listens[MAX_LISTEN];
    int nlisten;
    tc_mode mode;
    long workers, max_conns, max_frame, idle_timeout, conn_timeout, drain_timeout, processes;
    const char *framing;
    int set_max_frame, set_max_conns, set_idle_timeout, set_conn_timeout;
    tc_proxy_mode proxy;
    tc_backend backend;
    const char *proxy_trusted;
    int greet, inetd;
    const char *systemd_name; /* --listen systemd[:NAME]; NULL name = the first socket */
    int systemd;
    const char *tls_cert, *tls_key, *tls_client_ca;
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

/* --mode: a name, or a message listing the names. */
static int parse_mode(const char *arg, const char *v, tc_mode *out)
{
    if (tc_mode_parse(v, out) == 0)
        return 0;
    char why[160];
    int n = snprintf(why, sizeof why, "unknown mode \"%.32s\"; one of", v);
    for (int m = TC_MODE_INLINE; m <= TC_MODE_EVENT && n > 0 && (size_t)n < sizeof why; m++)
        n += snprintf(why + n, sizeof why - (size_t)n, "%s %s", m > TC_MODE_INLINE ? "," : "",
                      tc_mode_name((tc_mode)m));
    return cli_bad(arg, why);
}

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
        if (!strcmp(a, "--greet") || !strcmp(a, "--inetd")) { /* flags without a value */
            if ((rc = cli_flag(&opt)) != 0)
                return rc;
            *(a[2] == 'g' ? &o->greet : &o->inetd) = 1;
            continue;
        }
        if (a[0] != '-' || a[1] != '-')
            return cli_bad(a, "unknown argument");
        if ((rc = cli_value(argc, argv, &i, &opt)) != 0)
            return rc;
        const char *v = opt.value;
        if (!strcmp(a, "--listen")) {
            if (o->nlisten == MAX_LISTEN)
                return cli_bad(a, "given too many times (16 at most)");
            o->listens[o->nlisten++] = v;
            o->listen = o->listens[0];
        }
        else if (!strcmp(a, "--mode"))
            rc = parse_mode(a, v, &o->mode);
        else if (!strcmp(a, "--workers"))
            rc = cli_long(a, v, 0, &o->workers);
        else if (!strcmp(a, "--max-conns"))
            rc = cli_long(a, v, 0, &o->max_conns), o->set_max_conns = 1;
        else if (!strcmp(a, "--framing"))
            o->framing = v;
        else if (!strcmp(a, "--max-frame"))
            rc = cli_long(a, v, 1, &o->max_frame), o->set_max_frame = 1;
        else if (!strcmp(a, "--idle-timeout"))
            rc = cli_long(a, v, 0, &o->idle_timeout), o->set_idle_timeout = 1;
        else if (!strcmp(a, "--conn-timeout"))
            rc = cli_long(a, v, 0, &o->conn_timeout), o->set_conn_timeout = 1;
        else if (!strcmp(a, "--drain-timeout"))
            rc = cli_long(a, v, 0, &o->drain_timeout);
        else if (!strcmp(a, "--processes"))
            rc = cli_long(a, v, 1, &o->processes);
        else if (!strcmp(a, "--proxy"))
            rc = !strcmp(v, "off")        ? (o->proxy = TC_PROXY_OFF, 0)
                 : !strcmp(v, "required") ? (o->proxy = TC_PROXY_REQUIRED, 0)
                 : !strcmp(v, "optional") ? (o->proxy = TC_PROXY_OPTIONAL, 0)
                                          : cli_bad(a, "must be off, required or optional");
        else if (!strcmp(a, "--backend")) {
            if (!strcmp(v, "epoll"))
                o->backend = TC_BACKEND_EPOLL;
            else if (!strcmp(v, "io_uring"))
                o->backend = TC_BACKEND_IO_URING;
            else
                rc = cli_bad(a, "must be epoll or io_uring");
        } else if (!strcmp(a, "--proxy-trusted"))
            o->proxy_trusted = v;
        else if (!strcmp(a, "--tls-cert"))
            o->tls_cert = v;
        else if (!strcmp(a, "--tls-key"))
            o->tls_key = v;
        else if (!strcmp(a, "--tls-client-ca"))
            o->tls_client_ca = v;
        else
            rc = cli_bad(a, "unknown argument");
        if (rc)
            return rc;
    }
    if (o->nlisten == 0) /* the default address */
        o->listens[o->nlisten++] = o->listen;
    if (strcmp(o->framing, "raw") != 0 && strcmp(o->framing, "line") != 0 &&
        strcmp(o->framing, "len32") != 0 && strcmp(o->framing, "ws") != 0)
        return cli_bad("--framing", "must be raw, line, len32 or ws");
    if (o->greet && !strcmp(o->framing, "ws"))
        return cli_bad("--greet", "makes no sense with --framing ws (a line is no message)");
    for (int i = 0; o->nlisten > 1 && i < o->nlisten; i++) {
        const char *l = o->listens[i];
        if (!strncmp(l, "udp:", 4) || !strncmp(l, "unixgram:", 9))
            return cli_bad("--listen",
                           "a datagram address cannot be combined with other addresses");
        if (!strcmp(l, "systemd") || !strncmp(l, "systemd:", 8))
            return cli_bad("--listen", "systemd cannot be combined with other addresses");
    }
    if (!strcmp(o->listen, "systemd") || !strncmp(o->listen, "systemd:", 8)) {
        o->systemd = 1;
        o->systemd_name = o->listen[7] == ':' ? o->listen + 8 : NULL;
    }
    /* Datagrams: each is one message, no connection idles, none is live. */
    if (!strncmp(o->listen, "udp:", 4) || !strncmp(o->listen, "unixgram:", 9)) {
        if (strcmp(o->framing, "raw") != 0)
            return cli_bad("--framing", "does not apply to datagrams (a datagram is one message)");
        if (o->set_idle_timeout)
            return cli_bad("--idle-timeout", "does not apply to datagrams (no connection idles)");
        if (o->set_max_conns)
            return cli_bad("--max-conns", "does not apply to datagrams (there are no connections)");
        if (o->processes > 1)
            return cli_bad("--processes", "does not apply to datagrams");
    }
    if (o->backend != TC_BACKEND_DEFAULT && o->mode != TC_MODE_EVENT)
        return cli_bad("--backend", "chooses event mode's loops (--mode event)");
    if (o->inetd && o->processes > 1)
        return cli_bad("--processes", "makes no sense with --inetd");
    for (int i = 0; i < o->nlisten; i++)
        if (o->processes > 1 && !o->systemd && !strncmp(o->listens[i], "unix:", 5))
            return cli_bad("--processes", "needs a TCP address (SO_REUSEPORT) or systemd");
    if (!o->tls_cert != !o->tls_key)
        return cli_bad(o->tls_cert ? "--tls-key" : "--tls-cert", "is needed too");
    if (o->tls_client_ca && !o->tls_cert)
        return cli_bad("--tls-client-ca", "needs --tls-cert and --tls-key");
    for (int i = 0; i < o->nlisten && o->tls_cert; i++)
        if (!strncmp(o->listens[i], "udp:", 4) || !strncmp(o->listens[i], "unixgram:", 9))
            return cli_bad("--tls-cert", "does not apply to datagrams");
#ifndef TC_ECHO_TLS
    if (o->tls_cert)
        return cli_bad("--tls-cert", "this build has no TLS (libtcpchan-tls: OpenSSL 3)");
#endif
    /* Features of later milestones: refuse clearly rather than ignore. */
    if (!tc_mode_available(o->mode))
        return cli_bad("--mode", "not available yet");
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

/* WebSocket: the message back, with its type (text or binary). */
static int echo_ws(tc_conn *conn, const void *msg, size_t len, void *ctx)
{
    (void)ctx;
    ssize_t sent = tc_ws_send(conn, (tc_ws_type)tc_ws_message_type(conn), msg, len);
    return sent < 0 ? (int)sent : 0;
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
    /* The library says which field or address it refused, and why. */
    const char *why = tc_last_error_detail();
    if (rc == TC_EBADADDR || rc == -ENAMETOOLONG)
        return cli_bad("--listen", tc_strerror(rc));
    if (rc == TC_EBADCONFIG && cfg->proxy_trusted && strstr(why, "proxy_trusted"))
        return cli_bad("--proxy-trusted", why);
    if (rc == TC_EBADCONFIG || rc == TC_ENOMODE) {
        fprintf(stderr, "tcpchan-echo: %s\n", why[0] ? why : tc_strerror(rc));
        return 2; /* the command line asked for something the library refuses */
    }
    if (rc < 0) {
        if (why[0])
            fprintf(stderr, "tcpchan-echo: %s\n", why); /* "cannot listen on ADDR: ..." */
        else
            fprintf(stderr, "tcpchan-echo: cannot listen on %s: %s\n", listen, tc_strerror(rc));
        return 1;
    }

    if (cfg->backend == TC_BACKEND_IO_URING && tc_server_backend(srv) != TC_BACKEND_IO_URING)
        fprintf(stderr, "tcpchan-echo: io_uring is not available here: serving with epoll\n");
    the_server = srv;
    catch_signals();

    char token;
    if (token_fd < 0 || read(token_fd, &token, 1) == 1) {
        int n = tc_server_listener_count(srv);
        for (int i = 0; i < n; i++) {
            tc_addr bound;
            char addr[TC_ADDR_STRLEN];
            (void)tc_server_listener_address(srv, i, &bound);
            (void)tc_addr_format(&bound, addr, sizeof addr);
            printf("listening on %s\n", addr);
        }
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

/* Close the first n reserved ports. */
static void release_ports(const int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

struct prefork_ctx {
    const tc_server_config *cfg;
    const tc_handler *handler;
    const char *listen;
    int token_fd;   /* one byte: the first worker to listen prints the lines */
    const int *reserve_fd; /* the parent's hold on port 0's real ports */
    int nreserved;
};

static int echo_worker(int index, void *ctx)
{
    struct prefork_ctx *p = ctx;
    (void)index;
    release_ports(p->reserve_fd, p->nreserved);
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

/* Several processes: the parent binds the address first, with a bound (never
 * listening) SO_REUSEPORT socket kept open for as long as it runs. A port
 * that is taken or not allowed fails here, at once, with one line, instead
 * of in every worker and every restart. With port 0 it also picks the port
 * every worker then binds. The socket never receives connections: the
 * kernel hands them only to listening sockets of the group. */
static int reserve_port(const char *listen, char *real, size_t n, int *fd_out)
{
    tc_addr a;
    int rc = tc_addr_parse(&a, listen);
    if (rc < 0)
        return cli_bad("--listen", tc_strerror(rc));
    *fd_out = -1;
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
    /* static: cfg (the caller's) keeps pointing at them */
    static char listen[MAX_LISTEN][TC_ADDR_STRLEN];
    static const char *list[MAX_LISTEN];
    int rc, reserve_fd[MAX_LISTEN], nreserved = 0, token[2];
    if (!o->systemd) {
        for (; nreserved < o->nlisten; nreserved++) {
            int i = nreserved;
            rc = reserve_port(o->listens[i], listen[i], sizeof listen[i], &reserve_fd[i]);
            if (rc != 0) {
                release_ports(reserve_fd, nreserved);
                return rc;
            }
            list[i] = listen[i];
        }
        cfg->listen = o->nlisten == 1 ? listen[0] : NULL;
        cfg->listen_list = o->nlisten > 1 ? list : NULL;
        cfg->listen_count = o->nlisten > 1 ? o->nlisten : 0;
        cfg->reuse_port = TC_ON; /* a listener per worker; the kernel spreads clients */
    }
    if (pipe2(token, O_CLOEXEC | O_NONBLOCK) < 0 || write(token[1], "t", 1) != 1) {
        fprintf(stderr, "tcpchan-echo: pipe: %s\n", strerror(errno));
        release_ports(reserve_fd, nreserved);
        return 1;
    }
    struct prefork_ctx ctx = {cfg, handler, o->listen, token[0], reserve_fd, nreserved};
    tc_prefork_config po = TC_PREFORK_CONFIG_INIT;
    tc_prefork *pf;
    po.processes = (int)o->processes;
    po.worker = echo_worker;
    po.ctx = &ctx;
    po.log = prefork_log;
    /* A worker drains for up to --drain-timeout after SIGTERM; then some slack. */
    po.stop_timeout_ms = (o->drain_timeout > 0 ? (int)o->drain_timeout : 0) + 2000;
    if ((rc = tc_prefork_create(&pf, &po)) < 0) {
        const char *why = tc_last_error_detail();
        fprintf(stderr, "tcpchan-echo: %s\n", why[0] ? why : tc_strerror(rc));
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
    release_ports(reserve_fd, nreserved);
    if (rc < 0) {
        fprintf(stderr, "tcpchan-echo: workers: %s\n", tc_strerror(rc));
        return 1;
    }
    return 0;
}

#ifdef TC_ECHO_TLS
static void tls_log(tc_log_level level, const char *msg, void *ctx)
{
    (void)level;
    (void)ctx;
    fprintf(stderr, "tcpchan-echo: %s\n", msg);
}

/* SIGHUP, taken by this thread alone (blocked everywhere else): read the
 * certificate and key again. Ends at a SIGHUP with quit set. */
static volatile sig_atomic_t reload_quit;
static void *reload_main(void *arg)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    for (;;) {
        int sig;
        if (sigwait(&set, &sig) != 0 || reload_quit)
            return NULL;
        (void)tc_tls_reload(arg); /* a failure is the one stderr line of tls_log */
    }
}

/* The TLS context from the options, and a thread for SIGHUP: 0, or the exit status. */
static int tls_setup(const struct options *o, tc_server_config *cfg, tc_tls **tls,
                     pthread_t *reloader)
{
    tc_tls_config tc = TC_TLS_CONFIG_INIT;
    tc.cert_file = o->tls_cert;
    tc.key_file = o->tls_key;
    if (o->tls_client_ca) {
        tc.ca_file = o->tls_client_ca;
        tc.verify = TC_TLS_VERIFY_REQUIRED;
    }
    tc.handshake_timeout_ms = 10000;
    if (o->set_idle_timeout && o->idle_timeout > 0 && o->idle_timeout < 10000)
        tc.handshake_timeout_ms = (int)o->idle_timeout;
    tc.log = tls_log;
    if (tc_tls_server_create(tls, &tc) < 0)
        return 2; /* tls_log said why */
    cfg->transport = tc_tls_transport(*tls);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* every thread from here on inherits it */
    if (pthread_create(reloader, NULL, reload_main, *tls) != 0) {
        fprintf(stderr, "tcpchan-echo: cannot start the SIGHUP thread\n");
        tc_tls_destroy(*tls);
        return 1;
    }
    return 0;
}

static void tls_teardown(tc_tls *tls, pthread_t reloader)
{
    reload_quit = 1;
    pthread_kill(reloader, SIGHUP);
    pthread_join(reloader, NULL);
    tc_tls_destroy(tls);
}
#endif

static int run(const struct options *op, tc_server_config *cfgp, const tc_handler *hp);

/* A limit for the config: 0 (the library's default) when no flag set it,
 * negative (none) for a flag's 0, else the flag's value. */
static int limit(int set, long value)
{
    return !set ? 0 : value ? (int)value : -1;
}

int main(int argc, char **argv)
{
    cli_prog = "tcpchan-echo";
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
    cfg.backend = o.backend;
    /* The limits keep the library's finite defaults (0 in the config) unless
     * a flag sets them; a flag's 0 means none, a negative value to the library. */
    cfg.max_conns = limit(o.set_max_conns, o.max_conns);
    cfg.idle_timeout_ms = limit(o.set_idle_timeout, o.idle_timeout);
    cfg.conn_timeout_ms = limit(o.set_conn_timeout, o.conn_timeout);
    cfg.drain_timeout_ms = o.drain_timeout ? (int)o.drain_timeout : -1; /* 0: no wait */
    /* Every framing runs as a message-style handler: raw is the codec that
     * hands over whatever bytes arrived (--max-frame bounds one read). */
    if (!strcmp(o.framing, "line"))
        tc_codec_delimited(&cfg.codec, "\n", 1);
    else if (!strcmp(o.framing, "len32"))
        tc_codec_length_prefixed(&cfg.codec, 4, TC_BIG_ENDIAN);
    if (o.set_max_frame && tc_codec_set_max_frame(&cfg.codec, (size_t)o.max_frame) < 0)
        return cli_bad("--max-frame", "too large");
    /* Event loops, and pool's workers, send at once what the socket takes:
     * no buffer to fill (and in pool mode no second hop through the loop). */
    int sends_now = o.mode == TC_MODE_EVENT || o.mode == TC_MODE_POOL;
    handler.on_message = strcmp(o.framing, "raw") != 0 && !sends_now ? echo_message : echo_send;
    tc_ws_config ws = TC_WS_CONFIG_INIT;
    if (!strcmp(o.framing, "ws")) {
        cfg.ws = &ws;
        handler.on_message = echo_ws;
    }

    if (o.greet)
        handler.on_open = greet_open;
    cfg.proxy_protocol = o.proxy;
    cfg.proxy_trusted = o.proxy_trusted;

#ifdef TC_ECHO_TLS
    tc_tls *tls = NULL;
    pthread_t reloader;
    if (o.tls_cert) {
        if ((rc = tls_setup(&o, &cfg, &tls, &reloader)) != 0)
            return rc;
        rc = run(&o, &cfg, &handler);
        tls_teardown(tls, reloader);
        return rc;
    }
#endif
    return run(&o, &cfg, &handler);
}

/* inetd, prefork or one server, as the options say. */
static int run(const struct options *op, tc_server_config *cfgp, const tc_handler *hp)
{
    const struct options o = *op;
    tc_server_config cfg = *cfgp;
    tc_handler handler = *hp;
    int rc;
    if (o.inetd) {
        rc = tc_server_serve_inetd(&cfg, &handler, 0);
        if (rc < 0)
            fprintf(stderr, "tcpchan-echo: --inetd: %s\n", tc_strerror(rc));
        return rc < 0 ? 1 : 0;
    }
    if (o.nlisten > 1) {
        cfg.listen = NULL;
        cfg.listen_list = o.listens;
        cfg.listen_count = o.nlisten;
    }
    int fds[MAX_LISTEN];
    if (o.systemd) {
        /* Every socket passed (with that name): one listener each. */
        rc = tc_listen_fds(o.systemd_name, fds, MAX_LISTEN);
        if (rc < 0) {
            fprintf(stderr, "tcpchan-echo: --listen %s: %s\n", o.listen, tc_strerror(rc));
            return 1;
        }
        cfg.listen = NULL;
        cfg.adopt_fd = TC_ON;
        if (rc == 1) {
            cfg.listen_fd = fds[0];
        } else {
            cfg.listen_fds = fds;
            cfg.listen_fd_count = rc < MAX_LISTEN ? rc : MAX_LISTEN;
        }
    }
    if (o.processes > 1)
        return run_prefork(&o, &cfg, &handler);
    return serve(&cfg, &handler, o.listen, -1);
}
