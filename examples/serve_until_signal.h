/* SPDX-License-Identifier: MIT */
/* The ending the example servers share: say where they listen, then serve
 * until SIGINT (Ctrl-C) or SIGTERM asks for a graceful shutdown. Static
 * inline functions, so that each example stays one .c file plus this. */
#ifndef TCPCHAN_EXAMPLES_SERVE_UNTIL_SIGNAL_H
#define TCPCHAN_EXAMPLES_SERVE_UNTIL_SIGNAL_H

#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <tcpchan/tcpchan.h>

static tc_server *volatile example_server;

static inline void example_on_signal(int sig)
{
    (void)sig;
    if (example_server)
        tc_server_shutdown(example_server); /* async-signal-safe */
}

/* Print "listening on ADDR" (the line scripts wait for), catch SIGINT and
 * SIGTERM, and serve. Returns what tc_server_serve_forever returned; the
 * caller still owns srv and destroys it. */
static inline int serve_until_signal(tc_server *srv)
{
    tc_addr bound;
    char addr[TC_ADDR_STRLEN];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = example_on_signal;
    sigemptyset(&sa.sa_mask);
    example_server = srv;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    tc_server_address(srv, &bound);
    tc_addr_format(&bound, addr, sizeof addr);
    printf("listening on %s\n", addr);
    fflush(stdout);
    int rc = tc_server_serve_forever(srv);
    example_server = NULL;
    return rc;
}

#endif
