/* SPDX-License-Identifier: MIT */
/* BaseServer: validate, bind and listen; the accept loop with its hooks;
 * shutdown through an eventfd; the request handler lifecycle. How an accepted
 * connection runs is the mode's business (mode_*.c). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define DEFAULT_LISTEN "127.0.0.1:0"
#define DEFAULT_POLL_INTERVAL_MS 500
#define DEFAULT_DRAIN_TIMEOUT_MS 5000
#define DEFAULT_STACK_SIZE ((size_t)256 * 1024)
#define DRAIN_GRACE_MS 1000 /* after the sockets are shut down, for finish to run */
#define ACCEPTS_PER_TURN 32 /* fairness: the loop's other duties run between batches */
#define DEFAULT_PROXY_TIMEOUT_MS 5000
/* Out of descriptors even with the spare freed: stop polling the listener
 * (level-triggered, it stays ready) for a pause that doubles while it lasts. */
#define ACCEPT_PAUSE_MIN_MS 10
#define ACCEPT_PAUSE_MAX_MS 500

void tc__server_run_session(tc__session *s)
{
    tc__session_run(s);
    tc__server_session_done(s);
}

/* The final release: no connection is live and the owner has let go. */
static void server_free(tc_server *srv)
{
    if (srv->mode && srv->mode->stop)
        srv->mode->stop(srv);
    if (srv->proto)
        srv->proto->unconfigure(srv->proto_cfg);
    tc__close(srv->wakefd);
    tc__close(srv->stopfd);
    tc__close(srv->spare_fd);
    pthread_mutex_destroy(&srv->mu);
    free(srv->listen_text);
    free(srv->listeners);
    free(srv->pfd);
    free(srv->proxy_trusted_text);
    free(srv->proxy_trusted);
    tc__dgram_free(srv);
    free(srv);
}

void tc__server_ref(tc_server *srv)
{
    atomic_fetch_add(&srv->refs, 1);
}

void tc__server_release(tc_server *srv)
{
    if (atomic_fetch_sub(&srv->refs, 1) == 1)
        server_free(srv);
}

/* The listener a session's connection came from, or NULL (inetd: none). */
static tc__listener *listener_of(tc_server *srv, const tc_conn *c)
{
    return c && c->listener >= 0 && c->listener < srv->nlisteners ? &srv->listeners[c->listener]
                                                                  : NULL;
}

static void session_register(tc_server *srv, tc__session *s)
{
    tc__listener *l = listener_of(srv, s->conn);
    if (l)
        atomic_fetch_add(&l->active, 1);
    tc__server_ref(srv);
    pthread_mutex_lock(&srv->mu);
    TC__LIST_PUSH(srv->live, s);
    pthread_mutex_unlock(&srv->mu);
    unsigned n = atomic_fetch_add(&srv->active, 1) + 1;
    unsigned peak = atomic_load(&srv->peak);
    while (n > peak && !atomic_compare_exchange_weak(&srv->peak, &peak, n))
        ;
}

/* A session for an accepted channel (which it owns from here, even on
 * failure), registered: 0 or -ENOMEM. */
static int session_new(tc_server *srv, tc_conn *conn, tc__session **out)
{
    tc__session *s = calloc(1, sizeof *s + srv->session_room);
    if (!s) {
        tc__chan_free(conn);
        return -ENOMEM;
    }
    s->srv = srv;
    s->conn = conn;
    /* An event loop names its connections itself (their ids route to it). */
    conn->id = atomic_fetch_add(&srv->last_conn_id, 1) + 1;
    s->handler = &srv->handler;
    s->msg_style = srv->handler.on_message != NULL;
    atomic_init(&s->idle, 0);
    session_register(srv, s);
    *out = s;
    return 0;
}

int tc__server_session_outbound(tc_server *srv, tc_conn *conn, const tc_handler *h,
                                tc__session **out)
{
    /* The handler's copy after the room, rounded up to its alignment. */
    size_t align = _Alignof(tc_handler);
    size_t room = (srv->session_room + align - 1) / align * align;
    tc__session *s = calloc(1, sizeof *s + room + sizeof(tc_handler));
    if (!s) {
        tc__chan_free(conn);
        return -ENOMEM;
    }
    tc_handler *copy = (tc_handler *)(void *)(s->room + room);
    *copy = *h;
    s->srv = srv;
    s->conn = conn;
    s->handler = copy;
    s->msg_style = 1;
    s->proxy_done = 1; /* nobody sends a PROXY header on a connection we made */
    s->dialling = 1;
    s->outbound = 1;
    atomic_init(&s->idle, 0);
    conn->srv = srv;
    conn->listener = -1; /* no listener accepted it */
    conn->timeout_ms = srv->cfg.conn_timeout_ms;
    conn->stopfd = srv->mode->drain_reaches_idle ? -1 : srv->stopfd;
    *out = s;
    return 0;
}

void tc__server_session_register(tc__session *s)
{
    session_register(s->srv, s);
}

void tc__server_session_end(tc__session *s)
{
    tc_server *srv = s->srv;
    pthread_mutex_lock(&srv->mu);
    TC__LIST_UNLINK(srv->live, s);
    pthread_mutex_unlock(&srv->mu);
    tc__listener *l = listener_of(srv, s->conn);
    if (l)
        atomic_fetch_sub(&l->active, 1);
    tc__chan_free(s->conn);
    s->conn = NULL;
    atomic_fetch_sub(&srv->active, 1);
    /* A descriptor was freed: a pause for want of them ends here. */
    if (atomic_load(&srv->accept_paused_until))
        atomic_store(&srv->accept_paused_until, 0);
    if (atomic_exchange(&srv->at_limit, 0))
        tc__wake(srv->wakefd);
    tc__server_release(srv);
}

int tc__server_shut_live(tc_server *srv, uint64_t id)
{
    int rc = TC_ECLOSED;
    if (srv->in_child)
        return -ENOTSUP; /* a forked child's list names its siblings' closed descriptors */
    pthread_mutex_lock(&srv->mu);
    for (tc__session *s = srv->live; s; s = s->next) {
        if (s->conn && s->conn->id == id) {
            /* The handler's thread (or process) sees the end of the stream
             * at its next read, and its writes fail: it ends as if the
             * peer had gone. Closing the descriptor here could not be safe. */
            tc__sock_shutdown(s->conn->fd);
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&srv->mu);
    return rc;
}

void tc__server_session_done(tc__session *s)
{
    tc__server_session_end(s);
    free(s);
}

/* Shut down the sockets of all live connections (end of a drain). */
static void shutdown_live(tc_server *srv)
{
    pthread_mutex_lock(&srv->mu);
    for (tc__session *s = srv->live; s; s = s->next)
        tc__sock_shutdown(s->conn->fd);
    pthread_mutex_unlock(&srv->mu);
}

/* Shut down (SHUT_RD) the message-style sessions idle between messages
 * (start of a drain): they end at once instead of holding the drain open. */
static void close_idle(tc_server *srv)
{
    pthread_mutex_lock(&srv->mu);
    for (tc__session *s = srv->live; s; s = s->next)
        if (s->msg_style && atomic_load(&s->idle))
            (void)tc__sock_shutdown_how(s->conn->fd, SHUT_RD);
    pthread_mutex_unlock(&srv->mu);
}

static int bad(tc_server *srv, const char *field, const char *why)
{
    tc__log_detail(srv, "invalid configuration: %s %s", field, why);
    return TC_EBADCONFIG;
}

static int valid_switch(int v)
{
    return v == TC_DEFAULT || v == TC_ON || v == TC_OFF;
}

/* Check every field and fill in the defaults; srv->cfg holds the user's copy. */
static int validate(tc_server *srv, const tc_handler *handler)
{
    tc_server_config *c = &srv->cfg;
    if (!handler->handle && !handler->on_message)
        return bad(srv, "handler", "needs handle (stream style) or on_message (message style)");
    if (handler->handle && handler->on_message)
        return bad(srv, "handler", "sets both handle and on_message; choose one style");
    if (!handler->on_message && (handler->on_open || handler->on_close))
        return bad(srv, "handler.on_open/on_close", "need on_message");
    if (tc_codec_validate(&c->codec) < 0)
        return bad(srv, "codec", "is not a valid tc_codec");
    if ((int)c->mode < TC_MODE_INLINE || (int)c->mode > TC_MODE_EVENT)
        return bad(srv, "mode", "is not a tc_mode value");
    if ((int)c->proxy_protocol < TC_PROXY_OFF || (int)c->proxy_protocol > TC_PROXY_OPTIONAL)
        return bad(srv, "proxy_protocol", "is not a tc_proxy_mode value");
    if (c->proxy_timeout_ms < 0)
        return bad(srv, "proxy_timeout_ms", "is negative");
    if (c->transport && (!c->transport->ops || !c->transport->ops->attach))
        return bad(srv, "transport", "has no tc_transport_ops");
    if (!valid_switch(c->adopt_fd))
        return bad(srv, "adopt_fd", "is not TC_DEFAULT, TC_ON or TC_OFF");
    if (c->adopt_fd == TC_ON && c->listen)
        return bad(srv, "listen", "must be NULL with adopt_fd (the socket is already bound)");
    if (c->adopt_fd == TC_ON && c->listen_list)
        return bad(srv, "listen_list", "must be NULL with adopt_fd (use listen_fds)");
    if (c->adopt_fd == TC_ON && c->listen_fd < 0)
        return bad(srv, "listen_fd", "is negative");
    if (c->adopt_fd != TC_ON && c->listen_fd != 0)
        return bad(srv, "listen_fd", "is set, but adopt_fd is not TC_ON");
    if (c->listen && c->listen_list)
        return bad(srv, "listen_list", "is set with listen; set one of them");
    if (c->listen_count < 0)
        return bad(srv, "listen_count", "is negative");
    if (c->listen_count && !c->listen_list)
        return bad(srv, "listen_count", "is set without listen_list");
    if (c->listen_fds && c->adopt_fd != TC_ON)
        return bad(srv, "listen_fds", "is set, but adopt_fd is not TC_ON");
    if (c->listen_fds && c->listen_fd != 0)
        return bad(srv, "listen_fd", "must be 0 with listen_fds");
    if (c->listen_fds ? c->listen_fd_count < 1 : c->listen_fd_count != 0)
        return bad(srv, "listen_fd_count", "must be at least 1 with listen_fds, 0 without");
    if (c->backlog < 0)
        return bad(srv, "backlog", "is negative");
    if (!valid_switch(c->reuse_addr))
        return bad(srv, "reuse_addr", "is not TC_DEFAULT, TC_ON or TC_OFF");
    if (!valid_switch(c->reuse_port))
        return bad(srv, "reuse_port", "is not TC_DEFAULT, TC_ON or TC_OFF");
    if (c->timeout_ms < 0)
        return bad(srv, "timeout_ms", "is negative");
    if (c->workers < 0)
        return bad(srv, "workers", "is negative");
    if (c->queue_len < 0)
        return bad(srv, "queue_len", "is negative");
    if (!valid_switch(c->ring_accept))
        return bad(srv, "ring_accept", "is not TC_DEFAULT, TC_ON or TC_OFF");
    if ((unsigned)c->backend > TC_BACKEND_AUTO)
        return bad(srv, "backend", "is not a tc_backend");
    if (!valid_switch(c->block_on_close))
        return bad(srv, "block_on_close", "is not TC_DEFAULT, TC_ON or TC_OFF");
    if (c->thread_stack_size && c->thread_stack_size < (size_t)PTHREAD_STACK_MIN)
        return bad(srv, "thread_stack_size", "is below PTHREAD_STACK_MIN");
    if (!(srv->mode = tc__mode_find(c->mode))) {
        tc__log_detail(srv, "mode %s is not available in this build", tc_mode_name(c->mode));
        return TC_ENOMODE;
    }
    if (c->backlog == 0)
        c->backlog = SOMAXCONN;
    if (c->poll_interval_ms == 0)
        c->poll_interval_ms = DEFAULT_POLL_INTERVAL_MS;
    /* Every limit is finite unless the config says otherwise with a negative
     * value; from here on 0 means "none", as the rest of the library reads it. */
    if (c->max_conns == 0)
        c->max_conns = srv->mode->default_max_conns ? srv->mode->default_max_conns
                                                    : TC_DEFAULT_MAX_CONNS;
    else if (c->max_conns < 0)
        c->max_conns = 0;
    if (c->idle_timeout_ms == 0)
        c->idle_timeout_ms = TC_DEFAULT_IDLE_TIMEOUT_MS;
    else if (c->idle_timeout_ms < 0)
        c->idle_timeout_ms = 0;
    if (c->conn_timeout_ms == 0)
        c->conn_timeout_ms = TC_DEFAULT_CONN_TIMEOUT_MS;
    else if (c->conn_timeout_ms < 0)
        c->conn_timeout_ms = 0;
    if (c->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->workers = n > 0 ? (int)n : 1;
    }
    if (c->queue_len == 0)
        c->queue_len = c->workers;
    if (c->send_high_water == 0)
        c->send_high_water = TC_SEND_HIGH_WATER;
    if (c->send_low_water == 0)
        c->send_low_water = c->send_high_water / 4 < TC_SEND_LOW_WATER ? c->send_high_water / 4
                                                                       : TC_SEND_LOW_WATER;
    if (c->send_low_water >= c->send_high_water)
        return bad(srv, "send_low_water", "is not below send_high_water");
    if (c->backend == TC_BACKEND_DEFAULT)
        c->backend = TC_BACKEND_EPOLL; /* until io_uring has served a release (see tc_backend) */
    if (c->drain_timeout_ms == 0)
        c->drain_timeout_ms = DEFAULT_DRAIN_TIMEOUT_MS;
    if (c->thread_stack_size == 0)
        c->thread_stack_size = DEFAULT_STACK_SIZE;
    if (c->proxy_timeout_ms == 0)
        c->proxy_timeout_ms = DEFAULT_PROXY_TIMEOUT_MS;
    return 0;
}

/* Copy and parse the trusted-proxy list. */
static int load_trusted(tc_server *srv)
{
    tc_server_config *c = &srv->cfg;
    srv->proxy_trusted_text = strdup(c->proxy_trusted ? c->proxy_trusted
                                                      : TC__PROXY_DEFAULT_TRUSTED);
    c->proxy_trusted = srv->proxy_trusted_text;
    if (!srv->proxy_trusted_text)
        return -ENOMEM;
    size_t max = tc__cidr_count(srv->proxy_trusted_text), n;
    if (!(srv->proxy_trusted = calloc(max, sizeof *srv->proxy_trusted)))
        return -ENOMEM;
    if (tc__cidr_parse(srv->proxy_trusted_text, srv->proxy_trusted, max, &n) < 0) {
        tc__log_detail(srv,
                       "invalid configuration: proxy_trusted entry %zu of \"%s\" is not an "
                       "address, a CIDR block or \"unix\"",
                       n + 1, srv->proxy_trusted_text);
        return TC_EBADCONFIG;
    }
    srv->proxy_ntrusted = n;
    return 0;
}

/* adopt_fd: serve a socket that is already listening, as listener l. */
static int adopt_listener(tc_server *srv, int fd, tc__listener *l, int only)
{
    int rc = tc__sock_adopt(fd, 1);
    int dgram = rc == -EPROTOTYPE && (rc = tc__sock_adopt_dgram(fd)) == 0;
    if (rc < 0) {
        const char *why = rc == -EBADF        ? "is not an open descriptor"
                          : rc == -ENOTSOCK   ? "is not a socket"
                          : rc == -EPROTOTYPE ? "is not a SOCK_STREAM or SOCK_DGRAM socket"
                          : rc == -EINVAL     ? "is not listening"
                                              : tc_strerror(rc);
        tc__log_detail(srv, "invalid configuration: listen_fd %d %s", fd, why);
        return TC_EBADCONFIG;
    }
    if (dgram && !only) {
        tc__log_detail(srv, "invalid configuration: listen_fds: %d is a datagram socket; a "
                            "datagram server has one socket, not mixed with others", fd);
        return TC_EBADCONFIG;
    }
    if ((rc = tc__sock_local(fd, &l->addr)) < 0)
        return rc;
    if (dgram) {
        l->addr.socktype = SOCK_DGRAM;
        if (tc_addr_port(&l->addr) == 0 || l->addr.len <= sizeof(sa_family_t)) {
            tc__log_detail(srv, "invalid configuration: listen_fd %d is a datagram socket "
                                "that is not bound", fd);
            return TC_EBADCONFIG;
        }
    }
    l->fd = fd;
    return 0;
}

/* Bind text (already parsed into addr) as listener l. */
static int bind_listener(tc_server *srv, const char *text, const tc_addr *addr, tc__listener *l)
{
    tc_server_config *c = &srv->cfg;
    /* Datagrams: SO_REUSEADDR would let another process bind the same UDP
     * port and take our datagrams, so it is on only when asked for. */
    int dgram = addr->socktype == SOCK_DGRAM;
    int reuse_addr = dgram ? c->reuse_addr == TC_ON : c->reuse_addr != TC_OFF;
    int rc = tc__sock_listen(addr, c->backlog, reuse_addr, c->reuse_port == TC_ON, &l->fd);
    if (rc < 0) {
        tc__log_detail(srv, "cannot listen on %s: %s", text, tc_strerror(rc));
        return rc;
    }
    if ((rc = tc__sock_local(l->fd, &l->addr)) < 0)
        return rc;
    l->addr.socktype = addr->socktype;
    /* Bound to one address, every accepted socket's local address is the
     * listener's: no getsockname per connection. A wildcard needs it. */
    l->local_known = !((tc_addr_family(&l->addr) == AF_INET &&
                        l->addr.u.in4.sin_addr.s_addr == htonl(INADDR_ANY)) ||
                       (tc_addr_family(&l->addr) == AF_INET6 &&
                        IN6_IS_ADDR_UNSPECIFIED(&l->addr.u.in6.sin6_addr)));
    /* Remember which file we created, so destroy never removes someone else's. */
    if (tc_addr_family(addr) == AF_UNIX && addr->u.un.sun_path[0] != '\0') {
        struct stat st;
        if (lstat(addr->u.un.sun_path, &st) == 0) {
            l->unix_created = 1;
            l->unix_dev = st.st_dev;
            l->unix_ino = st.st_ino;
        }
    }
    return 0;
}

/* The listen addresses of the config: listen_list, or the one listen. */
static int listen_texts(const tc_server_config *c, const char *const **texts)
{
    if (!c->listen_list) {
        *texts = &c->listen;
        return 1;
    }
    *texts = c->listen_list;
    if (c->listen_count)
        return c->listen_count;
    int n = 0;
    while (n < INT_MAX && c->listen_list[n])
        n++;
    return n;
}

/* Every listener: bound from the addresses, or adopted from the descriptors.
 * The addresses are all parsed before anything is bound, so that a bad entry
 * or a datagram address among several binds nothing. */
static int open_listeners(tc_server *srv)
{
    tc_server_config *c = &srv->cfg;
    int adopt = c->adopt_fd == TC_ON;
    const char *const *texts = NULL;
    int n = adopt ? (c->listen_fds ? c->listen_fd_count : 1) : listen_texts(c, &texts);
    if (n < 1)
        return bad(srv, "listen_list", "is empty");
    if (!(srv->listeners = calloc((size_t)n, sizeof *srv->listeners)) ||
        !(srv->pfd = calloc((size_t)n + 2, sizeof *srv->pfd)))
        return -ENOMEM;
    for (int i = 0; i < n; i++)
        srv->listeners[i].fd = -1;
    srv->nlisteners = n;
    int rc = 0;
    if (adopt) {
        for (int i = 0; i < n && rc == 0; i++)
            rc = adopt_listener(srv, c->listen_fds ? c->listen_fds[i] : c->listen_fd,
                                &srv->listeners[i], n == 1);
    } else {
        tc_addr *addrs = calloc((size_t)n, sizeof *addrs);
        if (!addrs)
            return -ENOMEM;
        for (int i = 0; i < n && rc == 0; i++) {
            const char *t = c->listen_list ? texts[i] : srv->listen_text;
            if (!t) {
                tc__log_detail(srv, "invalid configuration: listen_list entry %d is NULL", i);
                rc = TC_EBADCONFIG;
            } else if ((rc = tc_addr_parse(&addrs[i], t)) < 0) {
                if (c->listen_list)
                    tc__log_detail(srv, "listen address %d \"%s\": %s", i, t, tc_strerror(rc));
                else
                    tc__log_detail(srv, "listen address \"%s\": %s", t, tc_strerror(rc));
            } else if (n > 1 && addrs[i].socktype == SOCK_DGRAM) {
                tc__log_detail(srv, "invalid configuration: listen_list entry %d \"%s\" is a "
                                    "datagram address; a datagram server has one socket, not "
                                    "mixed with others", i, t);
                rc = TC_EBADCONFIG;
            }
        }
        for (int i = 0; i < n && rc == 0; i++)
            rc = bind_listener(srv, c->listen_list ? texts[i] : srv->listen_text, &addrs[i],
                               &srv->listeners[i]);
        free(addrs);
    }
    if (rc < 0)
        return rc;
    srv->lfd = srv->listeners[0].fd;
    srv->addr = srv->listeners[0].addr;
    return 0;
}

void tc__server_close_listeners(tc_server *srv)
{
    for (int i = 0; i < srv->nlisteners; i++) {
        tc__close(srv->listeners[i].fd);
        srv->listeners[i].fd = -1;
    }
    srv->lfd = -1;
}

void tc_server_config_init(tc_server_config *cfg)
{
    if (cfg) /* the macro is the one source of the defaults */
        *cfg = (tc_server_config)TC_SERVER_CONFIG_INIT;
}

/* tc_server_create(); without a listener (listener 0) for tc_server_serve_inetd(). */
static int create_server(tc_server **out, const tc_server_config *cfg, const tc_handler *handler,
                         int listener)
{
    tc_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return -ENOMEM;
    srv->lfd = srv->wakefd = srv->stopfd = srv->spare_fd = srv->mode_fd = -1;
    atomic_init(&srv->refs, 1);
    pthread_mutex_init(&srv->mu, NULL);
    if (cfg)
        srv->cfg = *cfg;
    srv->handler = *handler;
    srv->cfg.proxy_trusted = NULL; /* the caller's until load_trusted copies it */
    int rc = validate(srv, handler);
    if (rc < 0)
        goto fail;
    if ((cfg && cfg->proxy_trusted) || srv->cfg.proxy_protocol != TC_PROXY_OFF) {
        srv->cfg.proxy_trusted = cfg ? cfg->proxy_trusted : NULL;
        if ((rc = load_trusted(srv)) < 0)
            goto fail;
    }
    if (srv->cfg.ws) { /* every channel speaks WebSocket (ws.c) */
        if ((rc = tc__proto_ws.configure(srv, &srv->proto_cfg)) < 0)
            goto fail;
        srv->proto = &tc__proto_ws;
    }
    if (listener && srv->cfg.adopt_fd != TC_ON && !srv->cfg.listen_list) {
        srv->listen_text = strdup(srv->cfg.listen ? srv->cfg.listen : DEFAULT_LISTEN);
        if (!srv->listen_text) {
            rc = -ENOMEM;
            goto fail;
        }
        srv->cfg.listen = srv->listen_text;
    }
    if ((rc = tc__wake_open(&srv->wakefd)) < 0 || (rc = tc__wake_open(&srv->stopfd)) < 0)
        goto fail;
    if ((srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
        rc = -errno;
        goto fail;
    }
    rc = listener ? open_listeners(srv) : 0;
    /* The caller's list and descriptors: not kept (the addresses are in listeners). */
    srv->cfg.listen_list = NULL;
    srv->cfg.listen_count = 0;
    srv->cfg.listen_fds = NULL;
    if (rc < 0)
        goto fail;
    if ((rc = tc__dgram_start(srv)) < 0) /* a datagram socket: check the config against it */
        goto fail;
    if (srv->mode->start && (rc = srv->mode->start(srv)) < 0)
        goto fail;
    srv->limit = srv->cfg.max_conns;
    if (srv->mode_limit && (!srv->limit || srv->mode_limit < srv->limit))
        srv->limit = srv->mode_limit;
    *out = srv;
    return 0;
fail:
    srv->mode = NULL; /* never started (or start cleaned up): nothing to wait for or stop */
    if (srv->cfg.adopt_fd == TC_ON) { /* still the caller's */
        for (int i = 0; i < srv->nlisteners; i++)
            srv->listeners[i].fd = -1;
        srv->lfd = -1;
    }
    tc_server_destroy(srv);
    return rc;
}

int tc_server_create(tc_server **out, const tc_server_config *cfg, const tc_handler *handler)
{
    tc__detail_clear();
    if (!out || !handler)
        return -EINVAL;
    return create_server(out, cfg, handler, 1);
}

/* Stop accepting for a while: a pause that doubles while descriptors stay
 * short, cut short when a connection ends. Logged once per shortage. */
static void pause_accepting(tc_server *srv, int err)
{
    if (!srv->accept_backoff_ms) {
        srv->accept_backoff_ms = ACCEPT_PAUSE_MIN_MS;
        tc__log(srv, TC_LOG_WARN, "accept: %s, even with the reserve descriptor freed; "
                       "pausing accepts until descriptors free", tc_strerror(err));
    }
    atomic_store(&srv->accept_paused_until, tc__deadline_ms(srv->accept_backoff_ms));
    if (srv->accept_backoff_ms < ACCEPT_PAUSE_MAX_MS)
        srv->accept_backoff_ms *= 2;
}

/* A client was taken: the shortage, if there was one, is over. */
static void accepting_again(tc_server *srv)
{
    if (!srv->accept_backoff_ms)
        return;
    srv->accept_backoff_ms = 0;
    atomic_store(&srv->accept_paused_until, 0);
    tc__log(srv, TC_LOG_INFO, "accept: descriptors available again; accepting");
}

/* Accept one connection, filter it and hand it to the mode.
 * 0 when one was taken (served or refused), -EAGAIN when none was pending. */
int tc__server_accept(tc_server *srv, tc__session **out)
{
    return tc__server_accept_from(srv, 0, out);
}

int tc__server_accept_from(tc_server *srv, int li, tc__session **out)
{
    tc_addr peer;
    tc__listener *l = &srv->listeners[li];
    *out = NULL;
    if (srv->dgram) { /* socketserver's get_request: a recvfrom, not an accept */
        tc_conn *dc;
        tc__session *ds;
        int drc = tc__dgram_receive(srv, &dc);
        if (drc < 0 || !dc)
            return drc;
        if ((drc = session_new(srv, dc, &ds)) < 0) {
            tc__report(srv, NULL, drc);
            return 0;
        }
        ds->dgram = 1;
        *out = ds;
        return 0;
    }
    if (srv->spare_fd < 0) /* lost to a race for the last descriptor: take it back */
        srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int fd, rc = tc__sock_accept(l->fd, &peer, &fd, srv->mode->blocking);
    if (rc == -EMFILE || rc == -ENFILE) {
        /* Out of descriptors: without this the level-triggered listener
         * would wake us forever. Linux looks for a free descriptor before it
         * looks at the queue, so the error says nothing about a waiting
         * client: free the spare and ask again; take a client and drop it. */
        int err = rc;
        tc__close(srv->spare_fd);
        srv->spare_fd = -1;
        rc = tc__sock_accept(l->fd, &peer, &fd, srv->mode->blocking);
        if (rc == 0) {
            tc__close(fd);
            tc__log(srv, TC_LOG_WARN, "accept: %s; dropping a connection",
                           tc_strerror(err));
        }
        srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (rc == -EMFILE || rc == -ENFILE) {
            /* Not even the spare's slot helps (others took it, or the
             * limit went below it; or the system's table is full): asking
             * again now would spin. Pause; the caller sees nothing pending. */
            pause_accepting(srv, rc);
            return -EAGAIN;
        }
        if (rc == 0) {
            accepting_again(srv);
            return 0;
        } /* -EAGAIN below: nobody was waiting, nothing to report */
    }
    if (rc == -ECONNABORTED || rc == -EPROTO || rc == -EPERM)
        return 0; /* that client is gone; others may be waiting */
    if (rc < 0)
        return rc;
    return tc__server_take(srv, li, fd, &peer, out);
}

int tc__server_take(tc_server *srv, int li, int fd, const tc_addr *peer, tc__session **out)
{
    tc__listener *l = &srv->listeners[li];
    int rc;
    *out = NULL;
    accepting_again(srv);
    atomic_fetch_add(&srv->accepted, 1);
    atomic_fetch_add(&l->accepted, 1);
    if (srv->cfg.hooks.verify_request &&
        srv->cfg.hooks.verify_request(srv, peer, srv->cfg.hooks.ctx) < 0) {
        atomic_fetch_add(&srv->refused, 1);
        atomic_fetch_add(&l->refused, 1);
        tc__close(fd);
        return 0;
    }
    const tc__driver *drv = srv->mode->blocking ? &tc__drv_sleep : &tc__drv_poll;
    tc_conn *conn;
    if ((rc = tc__chan_new(&conn, drv, fd, peer, l->local_known ? &l->addr : NULL)) < 0) {
        tc__report(srv, NULL, rc);
        return 0;
    }
    conn->srv = srv;
    conn->listener = li;
    conn->timeout_ms = srv->cfg.conn_timeout_ms;
    conn->codec = &srv->cfg.codec;
    if (srv->proto && (rc = srv->proto->attach(conn, srv->proto_cfg)) < 0) {
        tc__report(srv, NULL, rc);
        tc__chan_free(conn);
        return 0;
    }
    /* The drain reaches an idle session by shutting its socket, or its
     * reads and waits watch the stop descriptor. */
    conn->stopfd = srv->mode->drain_reaches_idle ? -1 : srv->stopfd;
    if (drv == &tc__drv_sleep)
        tc__drv_sleep_prepare(conn);
    tc__session *s;
    if ((rc = session_new(srv, conn, &s)) < 0) {
        tc__report(srv, NULL, rc);
        return 0;
    }
    s->idle_since = tc__now_ns(); /* a queue (pool) counts as silence */
    *out = s;
    return 0;
}

/* Accept one connection, filter it and hand it to the mode.
 * 0 when one was taken (served or refused), -EAGAIN when none was pending. */
static int accept_one(tc_server *srv, int li)
{
    tc__session *s;
    int rc = tc__server_accept_from(srv, li, &s);
    if (rc < 0 || !s)
        return rc;
    if ((rc = srv->mode->process_request(srv, s)) < 0) {
        tc__report(srv, s->conn, rc);
        tc__server_session_done(s);
    }
    return 0;
}

/* Drain the eventfd; 1 if a shutdown request is pending (and consume it). */
static int take_shutdown(tc_server *srv)
{
    tc__wake_drain(srv->wakefd);
    tc__wake_drain(srv->stopfd); /* served out: the next serve starts afresh */
    return atomic_exchange(&srv->shutdown_req, 0);
}

/* Whether an accept pause is on; if so, the next connection to end wakes the loop. */
static int accept_paused(tc_server *srv)
{
    int64_t until = atomic_load(&srv->accept_paused_until);
    if (!until)
        return 0;
    if (tc__now_ns() >= until) { /* over: a wait must not keep aiming at its end */
        (void)atomic_compare_exchange_strong(&srv->accept_paused_until, &until, 0);
        return 0;
    }
    atomic_store(&srv->at_limit, 1);
    /* Re-check: a connection may have ended (and ended the pause) meanwhile. */
    if (!atomic_load(&srv->accept_paused_until)) {
        atomic_store(&srv->at_limit, 0);
        return 0;
    }
    return 1;
}

int tc__server_accept_timeout(tc_server *srv, int timeout_ms)
{
    int64_t until = atomic_load(&srv->accept_paused_until);
    if (!until)
        return timeout_ms;
    if (until <= tc__now_ns())
        return timeout_ms; /* over (may_accept clears it) */
    int ms = tc__ms_until(until);
    return timeout_ms < 0 || ms < timeout_ms ? ms : timeout_ms;
}

int tc__server_may_accept(tc_server *srv)
{
    if (accept_paused(srv))
        return 0;
    if (!srv->limit || atomic_load(&srv->active) < (unsigned)srv->limit)
        return 1;
    atomic_store(&srv->at_limit, 1);
    /* Re-check: a connection may have ended between the test and the flag. */
    if (atomic_load(&srv->active) < (unsigned)srv->limit) {
        atomic_store(&srv->at_limit, 0);
        return 1;
    }
    return 0;
}

int tc__server_room(tc_server *srv, int max)
{
    if (!tc__server_may_accept(srv))
        return 0;
    if (!srv->limit)
        return max;
    unsigned active = atomic_load(&srv->active), limit = (unsigned)srv->limit;
    unsigned room = active < limit ? limit - active : 0;
    return room < (unsigned)max ? (int)room : max;
}

/* Whether poll found listener i ready (after wait_ready). */
static int listener_ready(const tc_server *srv, int i)
{
    return (srv->pfd[2 + i].revents & (POLLIN | POLLERR | POLLHUP)) != 0;
}

/* Wait for a listener (if accepting), a wake-up or the mode's descriptor.
 * 1 some listener ready (listener_ready says which), 0 otherwise (timeout,
 * wake-up, mode serviced). */
static int wait_ready(tc_server *srv, int timeout_ms)
{
    struct pollfd *p = srv->pfd;
    int accepting = tc__server_may_accept(srv);
    p[0] = (struct pollfd){.fd = srv->wakefd, .events = POLLIN};
    p[1] = (struct pollfd){.fd = srv->mode_fd, .events = POLLIN};
    for (int i = 0; i < srv->nlisteners; i++)
        p[2 + i] = (struct pollfd){.fd = accepting ? srv->listeners[i].fd : -1, .events = POLLIN};
    int r = poll(p, (nfds_t)srv->nlisteners + 2, tc__server_accept_timeout(srv, timeout_ms));
    if (r < 0) {
        for (int i = 0; i < srv->nlisteners; i++)
            p[2 + i].revents = 0;
        return errno == EINTR ? 0 : -errno;
    }
    if (p[0].revents & POLLIN) {
        /* Consume the wake-up, or the eventfd stays readable and the loop
         * spins. A shutdown stores its flag before writing, so the caller's
         * next check of shutdown_req still sees it. */
        tc__wake_drain(srv->wakefd);
    }
    if (p[1].revents && srv->mode->service)
        srv->mode->service(srv);
    for (int i = 0; r > 0 && i < srv->nlisteners; i++)
        if (listener_ready(srv, i))
            return 1;
    return 0;
}

/* Accept from each ready listener in turn, up to ACCEPTS_PER_TURN from each
 * (fairness), while the limit allows; stop at a shutdown. */
static void accept_ready(tc_server *srv)
{
    for (int li = 0; li < srv->nlisteners; li++) {
        if (!listener_ready(srv, li))
            continue;
        for (int i = 0; i < ACCEPTS_PER_TURN; i++) {
            if (atomic_load(&srv->shutdown_req))
                return;
            int a = accept_one(srv, li);
            if (a == -EAGAIN)
                break;
            if (a < 0) {
                tc__log(srv, TC_LOG_WARN, "accept: %s", tc_strerror(a));
                break;
            }
            /* The serving thread holds the owner's reference: releasing a
             * connection never frees srv here (clang-tidy cannot know refs > 1). */
            if (!tc__server_may_accept(srv)) /* NOLINT(clang-analyzer-unix.Malloc) */
                return;
        }
    }
}

/* After the loop: let connections finish, then cut them short (see server.h). */
static void drain(tc_server *srv)
{
    /* Message-style connections idle between messages hold nothing in
     * flight: end them now rather than let them hold the drain open. */
    close_idle(srv);
    if (!srv->mode->wait)
        return;
    int64_t deadline = tc__deadline_ms(srv->cfg.drain_timeout_ms);
    if (srv->cfg.drain_timeout_ms < 0 || srv->mode->wait(srv, deadline) < 0) {
        shutdown_live(srv);
        (void)srv->mode->wait(srv, tc__deadline_ms(DRAIN_GRACE_MS));
    }
}

int tc_server_serve_forever(tc_server *srv)
{
    if (!srv)
        return -EINVAL;
    if (atomic_exchange(&srv->serving, 1))
        return -EBUSY;
    int rc = 0;
    if (srv->mode->serve) {
        /* The mode runs its own loop (event, pool): accept, dispatch,
         * drain; what its loop handed to other threads drains here. */
        rc = srv->mode->serve(srv);
        drain(srv);
        (void)take_shutdown(srv);
        atomic_store(&srv->stopping, 0);
        atomic_store(&srv->serving, 0);
        return rc;
    }
    while (!atomic_load(&srv->shutdown_req)) {
        int ready = wait_ready(srv, srv->cfg.poll_interval_ms);
        if (ready < 0) {
            rc = ready;
            break;
        }
        if (ready)
            accept_ready(srv);
        if (srv->mode->service)
            srv->mode->service(srv);
        if (srv->cfg.hooks.service_actions)
            srv->cfg.hooks.service_actions(srv, srv->cfg.hooks.ctx);
    }
    drain(srv);
    (void)take_shutdown(srv);
    atomic_store(&srv->stopping, 0);
    atomic_store(&srv->serving, 0);
    return rc;
}

int tc_server_handle_request(tc_server *srv)
{
    if (!srv)
        return -EINVAL;
    if (srv->mode->serve)
        return -ENOTSUP; /* a mode with its own loop serves only through serve_forever */
    if (atomic_exchange(&srv->serving, 1))
        return -EBUSY;
    int64_t deadline = tc__deadline_ms(srv->cfg.timeout_ms);
    int rc;
    for (;;) {
        if (atomic_load(&srv->shutdown_req)) {
            /* No drain follows: end the message-style connections idle in
             * handler threads here (they do not watch stopfd). */
            close_idle(srv);
            (void)take_shutdown(srv);
            atomic_store(&srv->stopping, 0);
            rc = TC_ESHUTDOWN;
            break;
        }
        int timeout = tc__ms_until(deadline);
        if (timeout == 0) {
            if (srv->cfg.hooks.handle_timeout)
                srv->cfg.hooks.handle_timeout(srv, srv->cfg.hooks.ctx);
            rc = -ETIMEDOUT;
            break;
        }
        int ready = wait_ready(srv, timeout);
        if (ready < 0) {
            rc = ready;
            break;
        }
        /* One connection: from the first ready listener that has one. */
        rc = -EAGAIN;
        for (int li = 0; ready && rc == -EAGAIN && li < srv->nlisteners; li++)
            if (listener_ready(srv, li))
                rc = accept_one(srv, li);
        if (rc != -EAGAIN)
            break;
    }
    atomic_store(&srv->serving, 0);
    return rc;
}

int tc_server_shutdown(tc_server *srv)
{
    if (!srv)
        return -EINVAL;
    /* Async-signal-safe: an atomic store and a write(); errno is preserved
     * because this may run inside a signal handler. The descriptors are
     * read first: once the first wake-up is out, the server may end and be
     * freed before this returns (tc_server_serve_inetd() destroys its own
     * server as soon as the handler's read gives up). */
    int stopfd = srv->stopfd, wakefd = srv->wakefd;
    atomic_store(&srv->stopping, 1);
    atomic_store(&srv->shutdown_req, 1);
    /* stopfd first: message loops waiting for input, here, in handler
     * threads or in forked children, see the drain begin. */
    tc__wake(stopfd);
    tc__wake(wakefd);
    return 0;
}

int tc_server_address(const tc_server *srv, tc_addr *out)
{
    if (!srv || !out)
        return -EINVAL;
    *out = srv->addr;
    return 0;
}

int tc_server_fileno(const tc_server *srv)
{
    return srv ? srv->lfd : -EINVAL;
}

int tc_server_listener_count(const tc_server *srv)
{
    if (!srv)
        return -EINVAL;
    return srv->nlisteners;
}

int tc_server_listener_address(const tc_server *srv, int i, tc_addr *out)
{
    if (!srv || !out)
        return -EINVAL;
    if (i < 0 || i >= srv->nlisteners)
        return -ERANGE;
    *out = srv->listeners[i].addr;
    return 0;
}

int tc_server_listener_fileno(const tc_server *srv, int i)
{
    if (!srv)
        return -EINVAL;
    if (i < 0 || i >= srv->nlisteners)
        return -ERANGE;
    return srv->listeners[i].fd;
}

int tc_server_listener_stats(const tc_server *srv, int i, tc_listener_stats *out)
{
    if (!srv || !out)
        return -EINVAL;
    if (i < 0 || i >= srv->nlisteners)
        return -ERANGE;
    const tc__listener *l = &srv->listeners[i];
    /* A datagram server counts its requests in dgram.c, on the server. */
    out->accepted = atomic_load(srv->dgram ? &srv->accepted : &l->accepted);
    out->refused = atomic_load(srv->dgram ? &srv->refused : &l->refused);
    out->active = atomic_load(srv->dgram ? &srv->active : &l->active);
    return 0;
}

int tc_conn_listener(const tc_conn *conn)
{
    if (!conn)
        return -EINVAL;
    return conn->srv && conn->listener >= 0 ? conn->listener : -ENOTSUP;
}

int tc_server_shutting_down(const tc_server *srv)
{
    if (!srv)
        return 0;
    return tc__session_stopping(srv);
}

int tc_server_stats(const tc_server *srv, tc_stats *out)
{
    if (!srv || !out)
        return -EINVAL;
    out->accepted = atomic_load(&srv->accepted);
    out->refused = atomic_load(&srv->refused);
    out->handler_errors = atomic_load(&srv->errors);
    out->active = atomic_load(&srv->active);
    out->peak_active = atomic_load(&srv->peak);
    tc__dgram_stats(srv, out);
    return 0;
}

void tc_server_destroy(tc_server *srv)
{
    if (!srv)
        return;
    tc__server_close_listeners(srv); /* new clients are refused from here on */
    if (srv->mode && srv->cfg.block_on_close != TC_OFF) {
        if (srv->mode->wait)
            (void)srv->mode->wait(srv, TC__NO_DEADLINE);
    } else if (srv->mode) {
        /* Daemon connections: cut their sockets, let them end on their own;
         * the last one to end frees the server. */
        shutdown_live(srv);
        if (srv->mode->abandon)
            srv->mode->abandon(srv);
    }
    for (int i = 0; i < srv->nlisteners; i++) {
        const tc__listener *l = &srv->listeners[i];
        struct stat st;
        const char *path = l->addr.u.un.sun_path;
        if (l->unix_created && lstat(path, &st) == 0 && st.st_dev == l->unix_dev &&
            st.st_ino == l->unix_ino)
            (void)unlink(path);
    }
    tc__server_release(srv);
}

int tc_server_serve_inetd(const tc_server_config *cfg, const tc_handler *handler, int fd)
{
    tc__detail_clear(); /* it creates a server */
    if (!handler || fd < 0)
        return -EINVAL;
    tc_server_config c;
    if (cfg)
        c = *cfg;
    else
        tc_server_config_init(&c);
    /* One connection, in this thread: no listener, no mode to speak of. */
    c.mode = TC_MODE_INLINE;
    c.listen = NULL;
    c.listen_list = NULL;
    c.listen_count = 0;
    c.adopt_fd = TC_DEFAULT;
    c.listen_fd = 0;
    c.listen_fds = NULL;
    c.listen_fd_count = 0;
    tc_server *srv = NULL;
    int rc = create_server(&srv, &c, handler, 0);
    if (rc < 0 || !srv) { /* !srv never happens: the analyzer cannot tell */
        tc__close(fd);
        return rc;
    }
    tc_addr peer;
    if ((rc = tc__sock_adopt(fd, 0)) < 0 || (rc = tc__sock_peer(fd, &peer)) < 0) {
        tc__log_detail(srv, "inetd: descriptor %d is not a connected stream socket: %s", fd,
                       tc_strerror(rc));
        tc__close(fd);
        tc_server_destroy(srv);
        return rc;
    }
    atomic_fetch_add(&srv->accepted, 1);
    tc_conn *conn;
    tc__session *sess;
    if (srv->cfg.hooks.verify_request &&
        srv->cfg.hooks.verify_request(srv, &peer, srv->cfg.hooks.ctx) < 0) {
        atomic_fetch_add(&srv->refused, 1);
        tc__close(fd);
    } else if ((rc = tc__chan_new(&conn, &tc__drv_poll, fd, &peer, NULL)) == 0 &&
               (rc = session_new(srv, conn, &sess)) == 0) {
        srv->addr = *conn->local;
        conn->srv = srv;
        conn->timeout_ms = srv->cfg.conn_timeout_ms;
        conn->codec = &srv->cfg.codec;
        conn->stopfd = srv->stopfd;
        if (!srv->proto || (rc = srv->proto->attach(conn, srv->proto_cfg)) == 0)
            tc__session_run(sess);
        /* inetd also hands the socket over as stdout: closing our descriptor
         * alone would not end the stream for the client. */
        tc__sock_shutdown(conn->fd);
        tc__server_session_done(sess);
    }
    tc_server_destroy(srv); /* NOLINT(clang-analyzer-unix.Malloc): we still hold the owner's ref */
    return rc;
}
