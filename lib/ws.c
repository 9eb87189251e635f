/* SPDX-License-Identifier: MIT */
/* WebSocket (RFC 6455) as a protocol over a channel (tc__proto): the
 * server's handshake as an opening step, messages out of frames (the pure
 * receiver in ws_frame.c), automatic pongs, the close handshake, and the
 * frames around what the handler sends. Sends go through the channel's
 * driver; answers the receiver owes (pong, close) are queued in the write
 * buffer, which every mode flushes before it waits for input. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "internal.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
/* Messages up to this size go out as one piece with their header. */
#define WS_SMALL 512
/* Room for a receive behind a message being joined (see limit()). */
#define WS_SLACK ((size_t)64 * 1024)

/* The server's settings, copied at create. */
struct ws_cfg {
    tc_ws_config user;
    size_t max_msg; /* the codec's max_frame */
};

enum { WS_HANDSHAKE, WS_OPEN, WS_CLOSING, WS_FAILED, WS_DONE };

struct ws {
    const struct ws_cfg *cfg;
    int state;          /* the thread that reads the channel's only */
    int opened;         /* the handshake is done: set once, before the channel
                         * reaches the handler (other threads may read it) */
    tc__ws_rx rx;
    int type;           /* the last message's */
    int peer_code;      /* the peer's close code: 0 none yet, 1005 a close without one */
    char peer_reason[124]; /* its reason (at most 123 bytes of UTF-8), NUL-terminated */
    atomic_int close_sent;
    int err;            /* WS_FAILED: the error the session ends with */
    int64_t heard;      /* keepalive: the last frame from the peer (ns) */
    int64_t pinged;     /* keepalive: when our unanswered ping went out (0: none) */
    /* A message handed out, which the caller may not have taken (a pool
     * full of work scans the same frame again): it is handed out again,
     * not unmasked twice, while nothing was consumed since. */
    int delivered;
    uint64_t delivered_at;
    size_t d_off, d_len, d_used;
    char *path, *subprotocol;
    int client;              /* tc_ws_dial's side: frames out are masked, frames in are not */
    int sending_parts;       /* tc_ws_send_part: a message is going out in fragments */
    struct ws_cfg *own_cfg;  /* a client's settings (a server's are the server's) */
};

static struct ws *ws_of(const tc_conn *c)
{
    return c && c->proto == &tc__proto_ws ? c->x->proto_data : NULL;
}

/* ---- settings --------------------------------------------------------------- */

void tc_ws_config_init(tc_ws_config *cfg)
{
    if (cfg)
        *cfg = (tc_ws_config)TC_WS_CONFIG_INIT;
}

static int ws_configure(tc_server *srv, void **out)
{
    const tc_ws_config *u = srv->cfg.ws;
    if (!srv->handler.on_message) {
        tc__log_detail(srv, "invalid configuration: ws needs a message-style handler "
                            "(on_message, not handle)");
        return TC_EBADCONFIG;
    }
    if (u->handshake_timeout_ms < 0 || u->close_timeout_ms < 0 || u->ping_interval_ms < 0 ||
        u->ping_timeout_ms < 0) {
        tc__log_detail(srv, "invalid configuration: ws.%s is negative",
                       u->handshake_timeout_ms < 0 ? "handshake_timeout_ms"
                       : u->close_timeout_ms < 0   ? "close_timeout_ms"
                       : u->ping_interval_ms < 0   ? "ping_interval_ms"
                                                   : "ping_timeout_ms");
        return TC_EBADCONFIG;
    }
    if (u->max_header_size && u->max_header_size < 64) {
        tc__log_detail(srv, "invalid configuration: ws.max_header_size is below 64 bytes");
        return TC_EBADCONFIG;
    }
    struct ws_cfg *cfg = calloc(1, sizeof *cfg);
    if (!cfg)
        return -ENOMEM;
    cfg->user = *u;
    if (!cfg->user.max_header_size)
        cfg->user.max_header_size = TC_WS_DEFAULT_MAX_HEADER;
    if (!cfg->user.handshake_timeout_ms)
        cfg->user.handshake_timeout_ms = TC_WS_DEFAULT_HANDSHAKE_TIMEOUT_MS;
    if (!cfg->user.close_timeout_ms)
        cfg->user.close_timeout_ms = TC_WS_DEFAULT_CLOSE_TIMEOUT_MS;
    if (!cfg->user.ping_timeout_ms)
        cfg->user.ping_timeout_ms = TC_WS_DEFAULT_PING_TIMEOUT_MS;
    cfg->max_msg = tc_codec_max_frame(&srv->cfg.codec);
    srv->cfg.ws = &cfg->user; /* the copy, not the caller's */
    *out = cfg;
    return 0;
}

static void ws_unconfigure(void *cfg)
{
    free(cfg);
}

static int ws_attach(tc_conn *c, const void *cfg)
{
    struct ws *w = tc__chan_ext(c) ? calloc(1, sizeof *w) : NULL;
    if (!w)
        return -ENOMEM;
    w->cfg = cfg;
    atomic_init(&w->close_sent, 0);
    c->proto = &tc__proto_ws;
    c->x->proto_data = w;
    return 0;
}

static void ws_detach(tc_conn *c)
{
    struct ws *w = c->x->proto_data;
    if (w) {
        free(w->path);
        free(w->subprotocol);
        free(w->own_cfg);
        free(w);
    }
    if (c->x != &tc__chanx_none)
        c->x->proto_data = NULL;
}

static int ws_open_timeout_ms(const tc_conn *c)
{
    return ((const struct ws *)c->x->proto_data)->cfg->user.handshake_timeout_ms;
}

static size_t ws_limit(const tc_conn *c)
{
    const struct ws *w = c->x->proto_data;
    if (w->state == WS_HANDSHAKE)
        return w->cfg->user.max_header_size;
    return w->cfg->max_msg + TC__WS_HDR_MAX + WS_SLACK;
}

/* ---- the handshake ---------------------------------------------------------- */

int tc_ws_accept_key(const char *key, char out[29])
{
    unsigned char raw[18], digest[TC__SHA1_LEN];
    if (!key || !out)
        return -EINVAL;
    size_t n = strlen(key);
    if (n != 24 || tc__base64_decode(key, n, raw, sizeof raw) != 16)
        return -EINVAL;
    tc__sha1_ctx s;
    tc__sha1_init(&s);
    tc__sha1_update(&s, key, n);
    tc__sha1_update(&s, WS_GUID, sizeof WS_GUID - 1);
    tc__sha1_final(&s, digest);
    (void)tc__base64_encode(digest, sizeof digest, out);
    return 0;
}

const char *tc_ws_request_header(const tc_ws_request *req, const char *name)
{
    if (!req || !name)
        return NULL;
    for (size_t i = 0; i < req->nheaders; i++)
        if (tc__http_ieq(req->names[i], strlen(req->names[i]), name))
            return req->values[i];
    return NULL;
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

/* Queue a short error response (the session ends after it). */
static void respond(tc_conn *c, int status, const char *extra)
{
    char buf[512];
    const char *why = reason_phrase(status);
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %zu\r\n%s\r\n%s\n",
                     status, why, strlen(why) + 1, extra ? extra : "", why);
    if (n > 0 && (size_t)n < sizeof buf)
        (void)tc__chan_queue(c, buf, (size_t)n);
}

/* The request with NUL-terminated strings, in one allocation. */
struct request {
    tc_ws_request pub;
    int minor;           /* HTTP/1.minor */
    char *text;
    const char *names[TC__HTTP_MAX_HEADERS], *values[TC__HTTP_MAX_HEADERS];
};

static int request_build(struct request *r, const char *head, const tc__http_req *h)
{
    memset(r, 0, sizeof *r);
    if (!(r->text = malloc(h->size + 1)))
        return -ENOMEM;
    memcpy(r->text, head, h->size);
    r->text[h->method.off + h->method.len] = '\0';
    r->text[h->target.off + h->target.len] = '\0';
    r->pub.method = r->text + h->method.off;
    r->pub.path = r->text + h->target.off;
    for (size_t i = 0; i < h->nheaders; i++) {
        r->text[h->name[i].off + h->name[i].len] = '\0';
        r->text[h->value[i].off + h->value[i].len] = '\0';
        r->names[i] = r->text + h->name[i].off;
        r->values[i] = r->text + h->value[i].off;
    }
    r->pub.nheaders = h->nheaders;
    r->pub.names = r->names;
    r->pub.values = r->values;
    r->pub.host = tc_ws_request_header(&r->pub, "Host");
    r->pub.origin = tc_ws_request_header(&r->pub, "Origin");
    r->pub.protocols = tc_ws_request_header(&r->pub, "Sec-WebSocket-Protocol");
    return 0;
}

static int has_token(const tc_ws_request *r, const char *name, const char *token)
{
    const char *v = tc_ws_request_header(r, name);
    return v && tc__http_has_token(v, strlen(v), token);
}

/* A whole request: answer it. 1 upgraded, TC_EOF refused (answered), or an error. */
static int handshake(tc_conn *c, struct ws *w, const struct request *r)
{
    const tc_ws_config *cfg = &w->cfg->user;
    const tc_ws_request *req = &r->pub;
    if (!has_token(req, "Upgrade", "websocket")) {
        if (cfg->on_http) {
            int rc = cfg->on_http(c, req, cfg->ctx);
            return rc < 0 ? rc : TC_EOF;
        }
        respond(c, 426, "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
        return TC_EOF;
    }
    if (strcmp(req->method, "GET") != 0) {
        respond(c, 405, "Allow: GET\r\n");
        return TC_EOF;
    }
    if (r->minor < 1) { /* RFC 6455 4.1: an upgrade is an HTTP/1.1 (or later) GET */
        respond(c, 400, NULL);
        return TC_EOF;
    }
    const char *version = tc_ws_request_header(req, "Sec-WebSocket-Version");
    if (!version || strcmp(version, "13") != 0) {
        respond(c, 426, "Sec-WebSocket-Version: 13\r\n");
        return TC_EOF;
    }
    char accept[29];
    const char *key = tc_ws_request_header(req, "Sec-WebSocket-Key");
    if (!req->host || !has_token(req, "Connection", "upgrade") || !key ||
        tc_ws_accept_key(key, accept) < 0) {
        respond(c, 400, NULL);
        return TC_EOF;
    }
    const char *sub = NULL;
    if (cfg->on_handshake) {
        int rc = cfg->on_handshake(c, req, &sub, cfg->ctx);
        if (rc != 0) {
            respond(c, rc >= 400 && rc <= 599 ? rc : 403, NULL);
            return TC_EOF;
        }
    }
    if (sub && !(req->protocols && tc__http_has_token(req->protocols, strlen(req->protocols), sub)))
        sub = NULL; /* not offered: the client would fail the connection */
    if (!(w->path = strdup(req->path)) || (sub && !(w->subprotocol = strdup(sub))))
        return -ENOMEM;
    char buf[512];
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s%s%s\r\n",
                     accept, sub ? "Sec-WebSocket-Protocol: " : "", sub ? sub : "",
                     sub ? "\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof buf)
        return -EINVAL; /* a subprotocol name too long for the response */
    int rc = tc__chan_queue(c, buf, (size_t)n);
    return rc < 0 ? rc : 1;
}

static int ws_open(tc_conn *c)
{
    struct ws *w = c->x->proto_data;
    tc__http_req h;
    const char *head = c->b->rbuf ? (const char *)c->b->rbuf + c->b->roff : "";
    int rc = tc__http_parse(head, c->b->rlen, w->cfg->user.max_header_size, &h);
    if (rc == 0)
        return c->reof ? TC_EOF : 0; /* a client that left before asking */
    if (rc < 0) {
        respond(c, rc == TC_ETOOBIG ? 431 : 400, NULL);
        return rc;
    }
    struct request r;
    if ((rc = request_build(&r, head, &h)) < 0)
        return rc;
    r.minor = h.minor;
    rc = handshake(c, w, &r);
    free(r.text);
    if (rc != 1)
        return rc;
    tc__chan_take(c, h.size);
    w->state = WS_OPEN;
    w->opened = 1;
    w->heard = tc__now_ns();
    w->rx.max = w->cfg->max_msg;
    w->rx.expect_mask = 1;
    return 1;
}

/* ---- receiving -------------------------------------------------------------- */

/* Queue a control frame (at most 125 bytes of payload) behind the output. */
static int queue_control(tc_conn *c, int op, const void *p, size_t n)
{
    const struct ws *w = c->x->proto_data;
    unsigned char frame[TC__WS_HDR_MAX + 125], key[4];
    if (w->client && getrandom(key, sizeof key, 0) != (ssize_t)sizeof key)
        memset(key, 0x5a, sizeof key); /* the mask hides nothing secret here */
    size_t h = tc__ws_header_build(frame, 1, op, n, w->client ? key : NULL);
    if (n)
        memcpy(frame + h, p, n);
    if (w->client)
        tc__ws_mask(frame + h, n, key, 0);
    return tc__chan_queue(c, frame, h + n);
}

/* The close handshake has begun on our side: the peer gets close_ms to
 * answer, counted in every mode by the channel's deadline. */
static void start_closing(tc_conn *c, struct ws *w)
{
    int64_t d = tc__deadline_ms(w->cfg->user.close_timeout_ms);
    if (d < c->deadline)
        c->deadline = d;
}

/* A protocol error: answer with a close frame, stop reading frames (the
 * stream is out of step), and end once the peer leaves or the close
 * timeout passes. The write side is shut after the close frame, so that a
 * peer still sending (an oversized frame) learns of it, answers and closes,
 * rather than meeting a reset that could hide the close code. */
static void fail(tc_conn *c, struct ws *w, int code, int err)
{
    if (!atomic_exchange(&w->close_sent, 1)) {
        unsigned char p[2] = {(unsigned char)(code >> 8), (unsigned char)code};
        (void)queue_control(c, TC__WS_CLOSE, p, 2);
        (void)c->drv->shutdown_write(c); /* once the queued output is out */
    }
    w->state = WS_FAILED;
    w->err = err;
    start_closing(c, w);
}

static void control(tc_conn *c, struct ws *w, const tc__ws_ev *ev)
{
    const unsigned char *p = c->b->rbuf + c->b->roff + ev->off;
    if (ev->opcode == TC__WS_PING) {
        if (!atomic_load(&w->close_sent))
            (void)queue_control(c, TC__WS_PONG, p, ev->len);
        return;
    }
    if (ev->opcode != TC__WS_CLOSE)
        return; /* a pong: nothing asked for it (no keepalive yet) */
    w->peer_code = ev->len >= 2 ? (int)(p[0] << 8 | p[1]) : 1005;
    size_t rlen = ev->len > 2 ? ev->len - 2 : 0; /* a control frame: at most 123 */
    if (rlen > sizeof w->peer_reason - 1)
        rlen = sizeof w->peer_reason - 1;
    memcpy(w->peer_reason, p + 2, rlen);
    w->peer_reason[rlen] = '\0';
    if (!atomic_exchange(&w->close_sent, 1))
        (void)queue_control(c, TC__WS_CLOSE, p, ev->len >= 2 ? 2 : 0); /* the same code */
    w->state = WS_DONE;
    c->reof = 1; /* the peer's close is the end of its stream */
}

static int ws_frame(tc_conn *c, const void **msg, size_t *len)
{
    struct ws *w = c->x->proto_data;
    if (w->delivered) {
        if (c->rtaken == w->delivered_at) { /* not taken: the same message again */
            c->b->rview = w->d_used;
            *msg = c->b->rbuf + c->b->roff + w->d_off;
            *len = w->d_len;
            return 1;
        }
        w->delivered = 0;
    }
    for (;;) {
        if (w->state == WS_DONE || w->state == WS_FAILED) {
            tc__chan_take(c, c->b->rlen); /* nothing more is read */
            return w->state == WS_FAILED && c->reof ? w->err : 0;
        }
        if (c->b->rlen == 0)
            return 0;
        unsigned char *base = c->b->rbuf + c->b->roff;
        tc__ws_ev ev;
        int rc = tc__ws_rx_step(&w->rx, base, c->b->rlen, &ev);
        c->b->rlen -= ev.squeeze;
        if (rc != TC__WS_MORE && w->cfg->user.ping_interval_ms) {
            w->heard = tc__now_ns(); /* a frame: the peer is there */
            w->pinged = 0;
        }
        if (rc == TC__WS_MORE)
            return c->reof && w->state == WS_OPEN ? tc__chan_broken(c, TC_EPARTIAL) : 0;
        if (rc < 0) {
            fail(c, w, ev.close_code, rc);
            continue;
        }
        if (rc == TC__WS_CTRL) {
            control(c, w, &ev);
            tc__chan_take(c, ev.used);
            continue;
        }
        if (w->state == WS_CLOSING) { /* we said goodbye: messages are dropped */
            tc__chan_take(c, ev.used);
            continue;
        }
        w->type = ev.opcode;
        w->delivered = 1;
        w->delivered_at = c->rtaken;
        w->d_off = ev.off;
        w->d_len = ev.len;
        w->d_used = ev.used;
        c->b->rview = ev.used;
        *msg = base + ev.off;
        *len = ev.len;
        return 1;
    }
}

/* ---- keepalive --------------------------------------------------------------- */

static int64_t ws_wake_at(const tc_conn *c)
{
    const struct ws *w = c->x->proto_data;
    const tc_ws_config *cfg = &w->cfg->user;
    if (!cfg->ping_interval_ms || w->state != WS_OPEN)
        return TC__NO_DEADLINE;
    if (w->pinged)
        return w->pinged + (int64_t)cfg->ping_timeout_ms * TC_NS_PER_MS;
    return w->heard + (int64_t)cfg->ping_interval_ms * TC_NS_PER_MS;
}

static int ws_wake(tc_conn *c)
{
    struct ws *w = c->x->proto_data;
    int64_t now = tc__now_ns();
    if (ws_wake_at(c) > now)
        return 0;
    if (w->pinged)
        return -ETIMEDOUT; /* silent through the ping and its timeout */
    w->pinged = now;
    return queue_control(c, TC__WS_PING, "tcpchan", 7);
}

/* ---- sending ---------------------------------------------------------------- */

/* One frame around the caller's bytes, through the driver. */
static ssize_t send_frame_fin(tc_conn *c, int fin, int op, const void *buf, size_t len);

static ssize_t send_frame(tc_conn *c, int op, const void *buf, size_t len)
{
    return send_frame_fin(c, 1, op, buf, len);
}

static ssize_t send_frame_fin(tc_conn *c, int fin, int op, const void *buf, size_t len)
{
    const struct ws *w = c->x->proto_data;
    unsigned char head[TC__WS_HDR_MAX], key[4];
    unsigned char *copy = NULL;
    if (w->client) { /* a client masks: a copy, the caller's bytes stay as they are */
        if (getrandom(key, sizeof key, 0) != (ssize_t)sizeof key)
            memset(key, 0x5a, sizeof key);
        if (len && !(copy = malloc(len)))
            return -ENOMEM;
        if (len) {
            memcpy(copy, buf, len);
            tc__ws_mask(copy, len, key, 0);
            buf = copy;
        }
    }
    size_t h = tc__ws_header_build(head, fin, op, len, w->client ? key : NULL);
    struct iovec v[2] = {{head, h}, {(void *)buf, len}};
    int cnt = len ? 2 : 1;
    unsigned char small[TC__WS_HDR_MAX + WS_SMALL];
    if (len && len <= WS_SMALL) {
        /* A small message in one piece: one send(), not a sendmsg() of two. */
        memcpy(small, head, h);
        memcpy(small + h, buf, len);
        v[0] = (struct iovec){small, h + len};
        cnt = 1;
    }
    /* The driver counts the header too: it records the payload's part (c is
     * not touched after the send: another thread's send hands it over). */
    tc__tl_sent = (struct tc__sent_window){c, h, len};
    tc__chan_set_sent(c, 0);
    ssize_t r = c->drv->send(c, v, cnt, h + len);
    tc__tl_sent.c = NULL;
    free(copy);
    return r < 0 ? r : (ssize_t)len;
}

/* From any thread (event mode): only what never changes once the handler
 * has the channel, and the atomic close flag. */
static int sendable(const struct ws *w)
{
    if (!w || !w->opened)
        return -EINVAL;
    return atomic_load(&w->close_sent) ? TC_ECLOSED : 0;
}

static ssize_t ws_send(tc_conn *c, const void *buf, size_t len)
{
    int rc = sendable(c->x->proto_data);
    return rc < 0 ? rc : send_frame(c, TC__WS_BINARY, buf, len);
}

/* What tc_ws_send and tc_ws_send_part check first: 0 with *out set, or the
 * error. Text must be UTF-8; a part of a message must end at a character
 * boundary (each is checked alone). */
static int send_check(tc_conn *conn, tc_ws_type type, const void *buf, size_t len,
                      struct ws **out)
{
    struct ws *w = ws_of(conn);
    if (!w || (!buf && len) || (type != TC_WS_TEXT && type != TC_WS_BINARY) || len > SSIZE_MAX)
        return -EINVAL;
    int rc = sendable(w);
    if (rc < 0)
        return rc;
    if (type == TC_WS_TEXT && len && tc__utf8_feed(0, buf, len) != 0)
        return TC_EBADFRAME;
    *out = w;
    return 0;
}

ssize_t tc_ws_send(tc_conn *conn, tc_ws_type type, const void *buf, size_t len)
{
    struct ws *w;
    int rc = send_check(conn, type, buf, len, &w);
    return rc < 0 ? rc : send_frame(conn, (int)type, buf, len);
}

ssize_t tc_ws_send_part(tc_conn *conn, tc_ws_type type, const void *buf, size_t len, int last)
{
    struct ws *w;
    int rc = send_check(conn, type, buf, len, &w);
    if (rc < 0)
        return rc;
    ssize_t r = send_frame_fin(conn, last != 0, w->sending_parts ? TC__WS_CONT : (int)type, buf,
                               len);
    if (r >= 0)
        w->sending_parts = !last;
    return r;
}

int tc_ws_close(tc_conn *conn, unsigned code, const char *reason)
{
    struct ws *w = ws_of(conn);
    size_t rlen = reason ? strlen(reason) : 0;
    if (!w || !w->opened || rlen > 123 ||
        !(code == 1000 || code == 1001 || code == 1008 || code == 1011 ||
          (code >= 3000 && code <= 4999)) ||
        (rlen && tc__utf8_feed(0, (const unsigned char *)reason, rlen) != 0))
        return -EINVAL;
    if (atomic_exchange(&w->close_sent, 1))
        return TC_ECLOSED;
    unsigned char p[125] = {(unsigned char)(code >> 8), (unsigned char)code};
    for (size_t i = 0; i < rlen; i++)
        p[2 + i] = (unsigned char)reason[i];
    ssize_t r = send_frame(conn, TC__WS_CLOSE, p, 2 + rlen);
    if (r < 0)
        return (int)r;
    if (w->state == WS_OPEN)
        w->state = WS_CLOSING;
    start_closing(conn, w);
    return 0;
}

/* ---- the client --------------------------------------------------------------- */

void tc_ws_dial_config_init(tc_ws_dial_config *cfg)
{
    if (cfg)
        *cfg = (tc_ws_dial_config)TC_WS_DIAL_CONFIG_INIT;
}

/* "ws://HOST[:PORT][/PATH]": HOST:PORT for tc_dial, the path, the Host field. */
static int parse_url(const char *url, char *addr, size_t an, char *host, size_t hn,
                     const char **path)
{
    if (strncmp(url, "ws://", 5) != 0)
        return TC_EBADADDR;
    const char *h = url + 5, *end = h + strcspn(h, "/?#");
    size_t n = (size_t)(end - h);
    if (n == 0 || n >= hn || n + 4 >= an)
        return TC_EBADADDR;
    memcpy(host, h, n);
    host[n] = '\0';
    /* A port is there if the last colon follows the closing bracket of an IPv6 literal. */
    const char *colon = strrchr(host, ':'), *bracket = strrchr(host, ']');
    int has_port = colon && (!bracket || colon > bracket);
    if ((size_t)snprintf(addr, an, "%s%s", host, has_port ? "" : ":80") >= an)
        return TC_EBADADDR;
    *path = *end == '/' ? end : "/";
    if (*end == '?' || *end == '#')
        return TC_EBADADDR; /* a query needs a path: ws://host/?q */
    return 0;
}

/* Whether the response head (without its blank line) upgrades with accept. */
static int check_response(const char *p, size_t n, const char *accept, const char *protocols,
                          char **sub)
{
    if (n < 12 || memcmp(p, "HTTP/1.1 101", 12) != 0)
        return TC_EDENIED;
    int upgrade = 0, connection = 0, accepted = 0;
    for (size_t i = 0; i < n;) {
        size_t e = i;
        while (e < n && p[e] != '\r')
            e++;
        const char *line = p + i, *colon = memchr(line, ':', e - i);
        if (colon && i > 0) {
            size_t nl = (size_t)(colon - line);
            const char *v = colon + 1;
            while (v < p + e && (*v == ' ' || *v == '\t'))
                v++;
            size_t vl = (size_t)(p + e - v);
            while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
                vl--;
            if (tc__http_ieq(line, nl, "Upgrade"))
                upgrade |= tc__http_has_token(v, vl, "websocket");
            else if (tc__http_ieq(line, nl, "Connection"))
                connection |= tc__http_has_token(v, vl, "upgrade");
            else if (tc__http_ieq(line, nl, "Sec-WebSocket-Accept"))
                accepted = vl == 28 && memcmp(v, accept, 28) == 0;
            else if (tc__http_ieq(line, nl, "Sec-WebSocket-Protocol") && !*sub) {
                if (!(*sub = strndup(v, vl)))
                    return -ENOMEM;
                if (!protocols || !tc__http_has_token(protocols, strlen(protocols), *sub))
                    return TC_EBADFRAME; /* one we did not offer */
            } else if (tc__http_ieq(line, nl, "Sec-WebSocket-Extensions")) {
                return TC_EBADFRAME; /* none was offered */
            }
        }
        i = e + 2;
    }
    return upgrade && connection && accepted ? 0 : TC_EBADFRAME;
}

int tc_ws_dial(tc_conn **out, const char *url, const tc_ws_dial_config *cfg)
{
    tc_ws_dial_config defaults = TC_WS_DIAL_CONFIG_INIT;
    char addr[300], host[280], key[25], accept[29], req[1024];
    const char *path;
    unsigned char nonce[16];
    if (!out || !url)
        return -EINVAL;
    if (!cfg)
        cfg = &defaults;
    int rc = parse_url(url, addr, sizeof addr, host, sizeof host, &path);
    if (rc < 0) {
        tc__detail_clear();
        tc__log_detail(NULL, "WebSocket URL \"%s\": not ws://HOST[:PORT][/PATH]", url);
        return rc;
    }
    struct ws_cfg *wc = calloc(1, sizeof *wc);
    if (!wc)
        return -ENOMEM;
    wc->user.close_timeout_ms = cfg->close_timeout_ms ? cfg->close_timeout_ms
                                                      : TC_WS_DEFAULT_CLOSE_TIMEOUT_MS;
    wc->max_msg = tc_codec_max_frame(&cfg->dial.codec);
    tc_conn *c;
    if ((rc = tc_dial(&c, addr, &cfg->dial)) < 0) {
        free(wc);
        return rc;
    }
    if (getrandom(nonce, sizeof nonce, 0) != (ssize_t)sizeof nonce) {
        rc = -EIO;
        goto fail;
    }
    (void)tc__base64_encode(nonce, sizeof nonce, key);
    (void)tc_ws_accept_key(key, accept);
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s%s%s%s%s%s\r\n",
                     path, host, key, cfg->origin ? "Origin: " : "",
                     cfg->origin ? cfg->origin : "", cfg->origin ? "\r\n" : "",
                     cfg->protocols ? "Sec-WebSocket-Protocol: " : "",
                     cfg->protocols ? cfg->protocols : "", cfg->protocols ? "\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof req) {
        rc = -ENAMETOOLONG;
        goto fail;
    }
    ssize_t s = tc_conn_send_all(c, req, (size_t)n);
    if (s < 0) {
        rc = (int)s;
        goto fail;
    }
    const void *head;
    size_t hlen;
    if ((rc = tc_conn_read_until(c, "\r\n\r\n", 4, TC_WS_DEFAULT_MAX_HEADER, &head, &hlen)) < 0)
        goto fail;
    char *sub = NULL;
    if ((rc = check_response(head, hlen, accept, cfg->protocols, &sub)) < 0) {
        free(sub);
        goto fail;
    }
    tc__chan_consume_view(c); /* the response is done with; frames may follow it */
    if ((rc = ws_attach(c, wc)) < 0) {
        free(sub);
        goto fail;
    }
    struct ws *w = c->x->proto_data;
    w->own_cfg = wc;
    w->client = 1;
    w->subprotocol = sub;
    w->path = strdup(path);
    w->state = WS_OPEN;
    w->opened = 1;
    w->heard = tc__now_ns();
    w->rx.max = wc->max_msg;
    w->rx.expect_mask = 0;
    *out = c;
    return 0;
fail:
    tc_conn_close(c);
    free(wc);
    return rc;
}

int tc_ws_recv(tc_conn *conn, const void **msg, size_t *len)
{
    struct ws *w = ws_of(conn);
    if (!w || !w->client || !msg || !len)
        return -EINVAL;
    int64_t deadline = tc__conn_op_deadline(conn);
    for (;;) {
        int rc = tc__chan_frame(conn, msg, len);
        if (rc == 1)
            return w->type;
        if (rc < 0)
            return rc;
        /* Answers we owe (a pong, our close) go out before we wait. */
        if (tc__chan_pending(conn) && (rc = tc_conn_flush(conn)) < 0)
            return rc;
        if (w->state == WS_DONE || conn->reof)
            return TC_EOF; /* the peer closed (its close answered) */
        ssize_t r = conn->drv->fill(conn, deadline, tc__chan_frame_limit(conn));
        if (r < 0 && r != TC_EOF)
            return tc__chan_broken(conn, (int)r);
    }
}

/* ---- accessors -------------------------------------------------------------- */

int tc_ws_message_type(const tc_conn *conn)
{
    const struct ws *w = ws_of(conn);
    return w && w->type ? w->type : -EINVAL;
}

int tc_ws_close_code(const tc_conn *conn)
{
    const struct ws *w = ws_of(conn);
    return w ? w->peer_code : -EINVAL;
}

const char *tc_ws_close_reason(const tc_conn *conn)
{
    const struct ws *w = ws_of(conn);
    return w ? w->peer_reason : NULL;
}

const char *tc_ws_path(const tc_conn *conn)
{
    const struct ws *w = ws_of(conn);
    return w ? w->path : NULL;
}

const char *tc_ws_subprotocol(const tc_conn *conn)
{
    const struct ws *w = ws_of(conn);
    return w ? w->subprotocol : NULL;
}

const tc__proto tc__proto_ws = {
    .name = "websocket",
    .configure = ws_configure,
    .unconfigure = ws_unconfigure,
    .attach = ws_attach,
    .detach = ws_detach,
    .open = ws_open,
    .open_timeout_ms = ws_open_timeout_ms,
    .frame = ws_frame,
    .send = ws_send,
    .limit = ws_limit,
    .wake_at = ws_wake_at,
    .wake = ws_wake,
};
