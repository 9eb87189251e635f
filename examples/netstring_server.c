/* SPDX-License-Identifier: MIT */
/* A self-describing format through a custom codec: the server reads
 * netstrings ("5:hello,") with a message-style handler and answers each with
 * a netstring of the payload in upper case. Usage: netstring_server [ADDR]
 * (default 127.0.0.1:7001); try: printf '5:hello,3:abc,' | tcpchan-cat ADDR */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <tcpchan/tcpchan.h>

#include "serve_until_signal.h"

#include "netstring.h"

#define MAX_FRAME 65536

static int on_message(tc_conn *conn, const void *frame, size_t len, void *ctx)
{
    const char *payload;
    size_t n;
    (void)ctx;
    /* The codec delivers the frame whole, "LEN:BYTES,": take the bytes out. */
    int rc = netstring_payload(frame, len, &payload, &n);
    if (rc < 0)
        return rc;
    /* The view is ours until we return: upper-case into the write buffer. */
    if ((rc = tc_conn_printf(conn, "%zu:", n)) < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        char up = (char)toupper((unsigned char)payload[i]);
        if ((rc = (int)tc_conn_write(conn, &up, 1)) < 0)
            return rc;
    }
    /* Buffered: the library flushes before it waits for the next message. */
    return tc_conn_write(conn, ",", 1) < 0 ? -EPIPE : 0;
}

static void on_close(tc_conn *conn, int reason, void *ctx)
{
    char peer[TC_ADDR_STRLEN];
    (void)ctx;
    tc_addr_format(tc_conn_peer(conn), peer, sizeof peer);
    printf("%s: closed (%s)\n", peer, reason ? tc_strerror(reason) : "end of stream");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    static struct netstring_limits limits = {MAX_FRAME};
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    tc_handler h = TC_HANDLER_INIT;
    tc_server *srv;

    cfg.listen = argc > 1 ? argv[1] : "127.0.0.1:7001";
    cfg.mode = TC_MODE_THREADING;
    cfg.idle_timeout_ms = 60000;
    /* The limits ride along as the scan context: a netstring announcing more
     * than MAX_FRAME is refused on its length digits, before its bytes come. */
    tc_codec_custom(&cfg.codec, netstring_scan, &limits);
    tc_codec_set_max_frame(&cfg.codec, MAX_FRAME);
    h.on_message = on_message;
    h.on_close = on_close;
    int rc = tc_server_create(&srv, &cfg, &h);
    if (rc < 0) {
        fprintf(stderr, "netstring_server: %s: %s\n", cfg.listen, tc_strerror(rc));
        return 1;
    }
    rc = serve_until_signal(srv); /* until Ctrl-C */
    tc_server_destroy(srv);
    return rc < 0 ? 1 : 0;
}
