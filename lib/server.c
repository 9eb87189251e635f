/* SPDX-License-Identifier: MIT */
/* BaseServer: validate, bind and listen; the accept loop with its hooks;
 * shutdown through an eventfd; the request handler lifecycle. How an accepted
 * connection runs is the mode's business (mode_*.c). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define DEFAULT_LISTEN "127.0.0.1:0"
#define DEFAULT_POLL_INTERVAL_MS 500
#define ACCEPTS_PER_TURN 32 /* fairness: the loop's other duties run between batches */

void tc__server_log(tc_server *srv, tc_log_level level, const char *fmt, ...)
{
    if (!srv || !srv->cfg.hooks.log)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    srv->cfg.hooks.log(srv, level, msg, srv->cfg.hooks.ctx);
}

void tc__server_error(tc_server *srv, tc_conn *conn, int err)
{
    if (srv->cfg.hooks.handle_error) {
        srv->cfg.hooks.handle_error(srv, conn, err, srv->cfg.hooks.ctx);
        return;
    }
    char peer[TC_ADDR_STRLEN] = "-";
    if (conn)
        (void)tc_addr_format(&conn->peer, peer, sizeof peer);
    tc__server_log(srv, TC_LOG_ERROR, "handler error for %s: %s (%s)", peer, tc_strerror(err),
                   tc_err_name(err));
}

void tc__server_run_conn(tc_server *srv, tc_conn *conn)
{
    const tc_handler *h = &srv->handler;
    int rc = h->setup ? h->setup(conn, h->ctx) : 0;
    if (rc < 0) {
        tc__server_error(srv, conn, rc); /* refused: no handle, no finish */
    } else {
        rc = h->handle(conn, h->ctx);
        if (rc < 0)
            tc__server_error(srv, conn, rc);
        rc = h->finish ? h->finish(conn, h->ctx) : 0;
        if (rc < 0)
            tc__server_error(srv, conn, rc);
    }
    tc__conn_free(conn);
}

static int bad(tc_server *srv, const char *field, const char *why)
{
    tc__server_log(srv, TC_LOG_ERROR, "invalid configuration: %s %s", field, why);
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
    if (!handler->handle)
        return bad(srv, "handler.handle", "is required");
    if ((int)c->mode < TC_MODE_INLINE || (int)c->mode > TC_MODE_EVENT)
        return bad(srv, "mode", "is not a tc_mode value");
    if (c->backlog < 0)
        return bad(srv, "backlog", "is negative");
    if (!valid_switch(c->reuse_addr))
        return bad(srv, "reuse_addr", "is not TC_DEFAULT, TC_ON or TC_OFF");
    if (!valid_switch(c->reuse_port))
        return bad(srv, "reuse_port", "is not TC_DEFAULT, TC_ON or TC_OFF");
    if (c->timeout_ms < 0)
        return bad(srv, "timeout_ms", "is negative");
    if (c->conn_timeout_ms < 0)
        return bad(srv, "conn_timeout_ms", "is negative");
    if (!(srv->mode = tc__mode_find(c->mode))) {
        tc__server_log(srv, TC_LOG_ERROR, "mode %s is not available in this build",
                       tc_mode_name(c->mode));
        return TC_ENOMODE;
    }
    if (c->backlog == 0)
        c->backlog = SOMAXCONN;
    if (c->poll_interval_ms == 0)
        c->poll_interval_ms = DEFAULT_POLL_INTERVAL_MS;
    return 0;
}

static int bind_listener(tc_server *srv)
{
    tc_server_config *c = &srv->cfg;
    tc_addr addr;
    int rc = tc_addr_parse(&addr, c->listen);
    if (rc < 0) {
        tc__server_log(srv, TC_LOG_ERROR, "listen address \"%s\": %s", c->listen,
                       tc_strerror(rc));
        return rc;
    }
    rc = tc__sock_listen(&addr, c->backlog, c->reuse_addr != TC_OFF, c->reuse_port == TC_ON,
                         &srv->lfd);
    if (rc < 0) {
        tc__server_log(srv, TC_LOG_ERROR, "cannot listen on %s: %s", c->listen, tc_strerror(rc));
        return rc;
    }
    if ((rc = tc__sock_local(srv->lfd, &srv->addr)) < 0)
        return rc;
    /* Remember which file we created, so destroy never removes someone else's. */
    if (tc_addr_family(&addr) == AF_UNIX && addr.u.un.sun_path[0] != '\0') {
        struct stat st;
        if (lstat(addr.u.un.sun_path, &st) == 0) {
            srv->unix_created = 1;
            srv->unix_dev = st.st_dev;
            srv->unix_ino = st.st_ino;
        }
    }
    return 0;
}

void tc_server_config_init(tc_server_config *cfg)
{
    if (cfg)
        memset(cfg, 0, sizeof *cfg);
}

int tc_server_create(tc_server **out, const tc_server_config *cfg, const tc_handler *handler)
{
    if (!out || !handler)
        return -EINVAL;
    tc_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return -ENOMEM;
    srv->lfd = srv->wakefd = srv->spare_fd = -1;
    if (cfg)
        srv->cfg = *cfg;
    srv->handler = *handler;
    int rc = validate(srv, handler);
    if (rc < 0)
        goto fail;
    srv->listen_text = strdup(srv->cfg.listen ? srv->cfg.listen : DEFAULT_LISTEN);
    if (!srv->listen_text) {
        rc = -ENOMEM;
        goto fail;
    }
    srv->cfg.listen = srv->listen_text;
    srv->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (srv->wakefd < 0 || srv->spare_fd < 0) {
        rc = -errno;
        goto fail;
    }
    if ((rc = bind_listener(srv)) < 0)
        goto fail;
    if (srv->mode->start && (rc = srv->mode->start(srv)) < 0)
        goto fail;
    *out = srv;
    return 0;
fail:
    srv->mode = NULL; /* not started: nothing for stop() to wait for */
    tc_server_destroy(srv);
    return rc;
}

/* Accept one connection, filter it and hand it to the mode.
 * 0 when one was taken (served or refused), -EAGAIN when none was pending. */
static int accept_one(tc_server *srv)
{
    tc_addr peer;
    int fd, rc = tc__sock_accept(srv->lfd, &peer, &fd);
    if (rc == -EMFILE || rc == -ENFILE) {
        /* Out of descriptors: without this the level-triggered listener
         * would wake us forever. Free the spare, take the client and drop it. */
        tc__server_log(srv, TC_LOG_WARN, "accept: %s; dropping a connection", tc_strerror(rc));
        tc__close(srv->spare_fd);
        if (tc__sock_accept(srv->lfd, &peer, &fd) == 0)
            tc__close(fd);
        srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        return 0;
    }
    if (rc == -ECONNABORTED || rc == -EPROTO || rc == -EPERM)
        return 0; /* that client is gone; others may be waiting */
    if (rc < 0)
        return rc;
    if (srv->cfg.hooks.verify_request &&
        srv->cfg.hooks.verify_request(srv, &peer, srv->cfg.hooks.ctx) < 0) {
        tc__close(fd);
        return 0;
    }
    tc_conn *conn;
    if ((rc = tc__conn_new(&conn, srv, fd, &peer)) < 0) {
        tc__server_error(srv, NULL, rc);
        return 0;
    }
    conn->timeout_ms = srv->cfg.conn_timeout_ms;
    if ((rc = srv->mode->process_request(srv, conn)) < 0)
        tc__server_error(srv, NULL, rc);
    return 0;
}

/* Drain the eventfd; 1 if a shutdown request is pending (and consume it). */
static int take_shutdown(tc_server *srv)
{
    uint64_t v;
    while (read(srv->wakefd, &v, sizeof v) == (ssize_t)sizeof v)
        ;
    return atomic_exchange(&srv->shutdown_req, 0);
}

/* Wait for the listener or a wake-up: 1 listener ready, 0 timeout/wake-up. */
static int wait_ready(tc_server *srv, int timeout_ms, int *woken)
{
    struct pollfd p[2] = {{.fd = srv->lfd, .events = POLLIN}, {.fd = srv->wakefd, .events = POLLIN}};
    int r = poll(p, 2, timeout_ms);
    *woken = r > 0 && (p[1].revents & POLLIN);
    if (r < 0)
        return errno == EINTR ? 0 : -errno;
    return r > 0 && (p[0].revents & (POLLIN | POLLERR | POLLHUP)) ? 1 : 0;
}

int tc_server_serve_forever(tc_server *srv)
{
    if (!srv)
        return -EINVAL;
    if (atomic_exchange(&srv->serving, 1))
        return -EBUSY;
    int rc = 0;
    while (!atomic_load(&srv->shutdown_req)) {
        int woken, ready = wait_ready(srv, srv->cfg.poll_interval_ms, &woken);
        if (ready < 0) {
            rc = ready;
            break;
        }
        for (int i = 0; ready && i < ACCEPTS_PER_TURN && !atomic_load(&srv->shutdown_req); i++) {
            int a = accept_one(srv);
            if (a == -EAGAIN)
                break;
            if (a < 0) {
                tc__server_log(srv, TC_LOG_WARN, "accept: %s", tc_strerror(a));
                break;
            }
        }
        if (srv->cfg.hooks.service_actions)
            srv->cfg.hooks.service_actions(srv, srv->cfg.hooks.ctx);
    }
    (void)take_shutdown(srv);
    atomic_store(&srv->serving, 0);
    return rc;
}

int tc_server_handle_request(tc_server *srv)
{
    if (!srv)
        return -EINVAL;
    if (atomic_exchange(&srv->serving, 1))
        return -EBUSY;
    int64_t deadline = tc__deadline_ms(srv->cfg.timeout_ms);
    int rc;
    for (;;) {
        if (atomic_load(&srv->shutdown_req)) {
            (void)take_shutdown(srv);
            rc = TC_ESHUTDOWN;
            break;
        }
        int timeout = -1;
        if (deadline != TC__NO_DEADLINE) {
            int64_t left = deadline - tc__now_ns();
            if (left <= 0) {
                if (srv->cfg.hooks.handle_timeout)
                    srv->cfg.hooks.handle_timeout(srv, srv->cfg.hooks.ctx);
                rc = -ETIMEDOUT;
                break;
            }
            timeout = (int)((left + 999999) / 1000000); /* round up: never wake early */
        }
        int woken, ready = wait_ready(srv, timeout, &woken);
        if (ready < 0) {
            rc = ready;
            break;
        }
        if (ready && (rc = accept_one(srv)) != -EAGAIN)
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
     * because this may run inside a signal handler. */
    int saved = errno;
    uint64_t one = 1;
    atomic_store(&srv->shutdown_req, 1);
    ssize_t w = write(srv->wakefd, &one, sizeof one);
    (void)w; /* EAGAIN means the counter is already non-zero: awake anyway */
    errno = saved;
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

void tc_server_destroy(tc_server *srv)
{
    if (!srv)
        return;
    tc__close(srv->lfd); /* new clients are refused from here on */
    if (srv->mode && srv->mode->stop)
        srv->mode->stop(srv);
    if (srv->unix_created) {
        struct stat st;
        const char *path = srv->addr.u.un.sun_path;
        if (lstat(path, &st) == 0 && st.st_dev == srv->unix_dev && st.st_ino == srv->unix_ino)
            (void)unlink(path);
    }
    tc__close(srv->wakefd);
    tc__close(srv->spare_fd);
    free(srv->listen_text);
    free(srv);
}
