/* SPDX-License-Identifier: MIT */
/* libevent_echo: a single-threaded libevent echo server with bufferevents,
 * written the way libevent's documentation shows it. */
#define _GNU_SOURCE
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <signal.h>
#include <stdio.h>

#include "peer_common.h"

static void on_read(struct bufferevent *bev, void *ctx)
{
    (void)ctx;
    evbuffer_add_buffer(bufferevent_get_output(bev), bufferevent_get_input(bev));
}

static void on_event(struct bufferevent *bev, short what, void *ctx)
{
    (void)ctx;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        bufferevent_free(bev);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *ctx)
{
    (void)l, (void)sa, (void)len;
    struct event_base *base = ctx;
    struct bufferevent *bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        evutil_closesocket(fd);
        return;
    }
    bufferevent_setcb(bev, on_read, NULL, on_event, NULL);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void on_signal(evutil_socket_t sig, short what, void *ctx)
{
    (void)sig, (void)what;
    event_base_loopbreak(ctx);
}

int main(int argc, char **argv)
{
    const char *addr = peer_listen_arg(argc, argv);
    int lfd = peer_listen(addr);
    if (lfd < 0)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    struct event_base *base = event_base_new();
    struct evconnlistener *l =
        evconnlistener_new(base, on_accept, base, LEV_OPT_CLOSE_ON_FREE, PEER_BACKLOG, lfd);
    struct event *term = evsignal_new(base, SIGTERM, on_signal, base);
    struct event *intr = evsignal_new(base, SIGINT, on_signal, base);
    if (!base || !l || !term || !intr)
        return 1;
    event_add(term, NULL);
    event_add(intr, NULL);
    peer_announce(lfd);
    event_base_dispatch(base);
    event_free(term);
    event_free(intr);
    evconnlistener_free(l);
    event_base_free(base);
    return 0;
}
