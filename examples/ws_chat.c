/* SPDX-License-Identifier: MIT */
/* A chat room for browsers: one event loop serves its own page on `/` and
 * the WebSocket on `/ws`, and every message a browser sends is broadcast to
 * every connected browser. The room is a plain list of connections: on_open
 * adds, on_close removes, on_message sends to each; all of it runs in the
 * one loop thread (workers = 1), so the list needs no lock.
 * Usage: ws_chat [ADDR] (default 127.0.0.1:8080), then open http://ADDR/ in
 * two tabs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tcpchan/tcpchan.h>

#include "serve_until_signal.h"

/* The page: a log, a line to type in, and a socket to the same host. With
 * ?name=N&say=TEXT it says TEXT once connected (the browser test does). */
static const char page[] =
    "<!doctype html>\n"
    "<html><head><meta charset=\"utf-8\"><title>tcpchan chat</title></head>\n"
    "<body>\n"
    "<h1>tcpchan chat</h1>\n"
    "<div id=\"state\">connecting</div>\n"
    "<ul id=\"log\"></ul>\n"
    "<form id=\"f\"><input id=\"line\" autocomplete=\"off\"><button>send</button></form>\n"
    "<script>\n"
    "const q = new URLSearchParams(location.search);\n"
    "const name = q.get('name') || 'guest';\n"
    "const ws = new WebSocket('ws://' + location.host + '/ws');\n"
    "const log = document.getElementById('log');\n"
    "ws.onopen = () => {\n"
    "  document.getElementById('state').textContent = 'open';\n"
    "  if (q.get('say')) ws.send(name + ': ' + q.get('say'));\n"
    "};\n"
    "ws.onclose = () => { document.getElementById('state').textContent = 'closed'; };\n"
    "ws.onmessage = (e) => {\n"
    "  const li = document.createElement('li');\n"
    "  li.textContent = e.data;\n"
    "  log.appendChild(li);\n"
    "};\n"
    "document.getElementById('f').onsubmit = (e) => {\n"
    "  e.preventDefault();\n"
    "  const l = document.getElementById('line');\n"
    "  if (l.value) ws.send(name + ': ' + l.value);\n"
    "  l.value = '';\n"
    "};\n"
    "</script>\n"
    "</body></html>\n";

/* The room: every open connection, in the loop thread only. */
struct member {
    tc_conn *conn;
    struct member *next;
};
static struct member *room;

static int only_ws_path(tc_conn *conn, const tc_ws_request *req, const char **sub, void *ctx)
{
    (void)conn, (void)sub, (void)ctx;
    return strcmp(req->path, "/ws") == 0 ? 0 : 404;
}

static int serve_page(tc_conn *conn, const tc_ws_request *req, void *ctx)
{
    (void)ctx;
    if (strcmp(req->path, "/") != 0 && strncmp(req->path, "/?", 2) != 0)
        return tc_conn_printf(conn, "HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n"
                                    "Connection: close\r\n\r\nnot found\n") < 0 ? -EIO : 0;
    int rc = tc_conn_printf(conn, "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                                  "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                            sizeof page - 1);
    ssize_t n = rc < 0 ? rc : tc_conn_write(conn, page, sizeof page - 1);
    return n < 0 ? (int)n : 0;
}

static int join(tc_conn *conn, void *ctx)
{
    (void)ctx;
    struct member *m = malloc(sizeof *m);
    if (!m)
        return -ENOMEM;
    m->conn = conn;
    m->next = room;
    room = m;
    return 0;
}

static void leave(tc_conn *conn, int reason, void *ctx)
{
    (void)reason, (void)ctx;
    for (struct member **p = &room; *p; p = &(*p)->next)
        if ((*p)->conn == conn) {
            struct member *m = *p;
            *p = m->next;
            free(m);
            return;
        }
}

/* One message to everyone, the sender included (as its echo). A member
 * whose queue is full (a browser that stopped reading) misses it. */
static int broadcast(tc_conn *conn, const void *msg, size_t len, void *ctx)
{
    (void)conn, (void)ctx;
    tc_ws_type type = (tc_ws_type)tc_ws_message_type(conn);
    for (struct member *m = room; m; m = m->next)
        (void)tc_ws_send(m->conn, type, msg, len);
    return 0;
}

static void report(tc_server *srv, tc_conn *conn, int err, void *ctx)
{
    (void)srv, (void)conn, (void)ctx;
    fprintf(stderr, "ws_chat: %s\n", tc_strerror(err));
}

int main(int argc, char **argv)
{
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    tc_ws_config ws = TC_WS_CONFIG_INIT;
    tc_handler h = TC_HANDLER_INIT;
    tc_server *srv;
    cfg.listen = argc > 1 ? argv[1] : "127.0.0.1:8080";
    cfg.mode = TC_MODE_EVENT;
    cfg.workers = 1; /* one loop: the room is touched by one thread */
    cfg.hooks.handle_error = report;
    cfg.ws = &ws;
    ws.on_handshake = only_ws_path;
    ws.on_http = serve_page;
    h.on_open = join;
    h.on_message = broadcast;
    h.on_close = leave;
    int rc = tc_server_create(&srv, &cfg, &h);
    if (rc < 0) {
        const char *why = tc_last_error_detail();
        fprintf(stderr, "ws_chat: %s\n", why[0] ? why : tc_strerror(rc));
        return 1;
    }
    rc = serve_until_signal(srv);
    tc_server_destroy(srv);
    while (room) { /* every connection closed (on_close ran): nothing is left, but be tidy */
        struct member *m = room;
        room = m->next;
        free(m);
    }
    return rc < 0;
}
