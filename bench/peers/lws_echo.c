/* SPDX-License-Identifier: MIT */
/* Benchmark peer: a minimal WebSocket echo server on libwebsockets (Debian
 * libwebsockets-dev), written the way its minimal examples are: one
 * protocol callback, a queue of messages per connection, each written back
 * with its type when the socket is writable. No extensions (no
 * permessage-deflate, as in tcpchan). Usage: lws_echo [--listen HOST:PORT];
 * prints "listening on HOST:PORT"; SIGINT/SIGTERM end it. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libwebsockets.h>

struct msg {
    struct msg *next;
    size_t len;
    int binary;
    unsigned char buf[]; /* LWS_PRE bytes of room, then the payload */
};

struct session {
    struct msg *head, **tail;
    unsigned char *part; /* a message arriving in pieces */
    size_t part_len;
};

static volatile sig_atomic_t stopping;
static struct lws_context *context;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
    if (context)
        lws_cancel_service(context);
}

static int enqueue(struct session *s, const void *p, size_t n, int binary)
{
    struct msg *m = malloc(sizeof *m + LWS_PRE + n);
    if (!m)
        return -1;
    m->next = NULL;
    m->len = n;
    m->binary = binary;
    memcpy(m->buf + LWS_PRE, p, n);
    *s->tail = m;
    s->tail = &m->next;
    return 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    struct session *s = user;
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
        memset(s, 0, sizeof *s);
        s->tail = &s->head;
        break;
    case LWS_CALLBACK_RECEIVE: {
        int first = lws_is_first_fragment(wsi), last = lws_is_final_fragment(wsi);
        int binary = lws_frame_is_binary(wsi);
        if (first && last && !lws_remaining_packet_payload(wsi)) {
            if (enqueue(s, in, len, binary) < 0)
                return -1;
        } else { /* join the pieces */
            unsigned char *np = realloc(s->part, s->part_len + len);
            if (!np)
                return -1;
            memcpy(np + s->part_len, in, len);
            s->part = np;
            s->part_len += len;
            if (!last || lws_remaining_packet_payload(wsi))
                break;
            int rc = enqueue(s, s->part, s->part_len, binary);
            free(s->part);
            s->part = NULL;
            s->part_len = 0;
            if (rc < 0)
                return -1;
        }
        lws_callback_on_writable(wsi);
        break;
    }
    case LWS_CALLBACK_SERVER_WRITEABLE: {
        struct msg *m = s->head;
        if (!m)
            break;
        int n = lws_write(wsi, m->buf + LWS_PRE, m->len,
                          m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
        if (n < (int)m->len)
            return -1;
        s->head = m->next;
        if (!s->head)
            s->tail = &s->head;
        free(m);
        if (s->head)
            lws_callback_on_writable(wsi);
        break;
    }
    case LWS_CALLBACK_CLOSED:
        while (s->head) {
            struct msg *m = s->head;
            s->head = m->next;
            free(m);
        }
        free(s->part);
        break;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {"echo", callback, sizeof(struct session), 4096, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:0";
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--listen"))
            listen = argv[i + 1];
    static char host[256];
    const char *colon = strrchr(listen, ':');
    if (!colon || (size_t)(colon - listen) >= sizeof host) {
        fprintf(stderr, "lws_echo: --listen HOST:PORT\n");
        return 2;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = atoi(colon + 1);
    info.iface = host;
    info.protocols = protocols;
    info.gid = -1;
    info.uid = -1;
    lws_set_log_level(LLL_ERR, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    context = lws_create_context(&info);
    if (!context) {
        fprintf(stderr, "lws_echo: cannot create the context\n");
        return 1;
    }
    printf("listening on %s:%d\n", host,
           lws_get_vhost_listen_port(lws_get_vhost_by_name(context, "default")));
    fflush(stdout);
    while (!stopping && lws_service(context, 0) >= 0)
        ;
    lws_context_destroy(context);
    return 0;
}
