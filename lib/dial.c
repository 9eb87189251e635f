/* SPDX-License-Identifier: MIT */
/* The client side: resolve, then try each address in turn with a connect timeout. */
#include <errno.h>
#include <poll.h>
#include <string.h>

#include "internal.h"

#define DIAL_MAX_ADDRS 16
#define DIAL_DEFAULT_TIMEOUT_MS 30000

void tc_dial_config_init(tc_dial_config *cfg)
{
    if (cfg) /* the macro is the one source of the defaults */
        *cfg = (tc_dial_config)TC_DIAL_CONFIG_INIT;
}

static int connect_one(const tc_addr *addr, int timeout_ms, int *out_fd)
{
    int fd = -1;
    int rc = tc__sock_connect_start(addr, &fd);
    if (rc == -EINPROGRESS) {
        rc = tc__sock_wait(fd, POLLOUT, tc__deadline_ms(timeout_ms));
        if (rc == 0)
            rc = tc__sock_error(fd);
    }
    if (rc < 0) {
        tc__close(fd);
        return rc;
    }
    *out_fd = fd;
    return 0;
}

/* The host part of "host:port" or "[v6]:port" into buf (empty for a unix
 * socket or a text too long): what a transport checks the peer against. */
static void host_of(const char *address, char *buf, size_t len)
{
    buf[0] = 0;
    if (strncmp(address, "unix:", 5) == 0)
        return;
    const char *start = address, *end = strrchr(address, ':');
    if (*start == '[') {
        start++;
        end = strchr(start, ']');
    }
    if (!end || (size_t)(end - start) >= len)
        return;
    memcpy(buf, start, (size_t)(end - start));
    buf[end - start] = 0;
}

/* The transport's handshake on a new client channel, within the connect
 * timeout: 0, or the channel is closed and the error returned. */
static int secure(tc_conn *c, const char *address, const tc_dial_config *opts, int connect_ms)
{
    char host[256];
    host_of(address, host, sizeof host);
    int rc = tc__xport_attach(c, opts->transport, 1, host[0] ? host : NULL);
    if (rc == 0) {
        int64_t deadline = tc__deadline_ms(connect_ms);
        int64_t hs = tc__xport_deadline(opts->transport);
        rc = tc__xport_handshake(c, hs < deadline ? hs : deadline);
    }
    if (rc < 0) {
        const char *why = tc__xport_why(c);
        tc__log_detail(NULL, "%s handshake with %s failed: %s%s%s", opts->transport->ops->name,
                       address, tc_strerror(rc), *why ? ": " : "", why);
        tc__chan_free(c);
    }
    return rc;
}

int tc_dial(tc_conn **out, const char *address, const tc_dial_config *opts)
{
    tc_addr addrs[DIAL_MAX_ADDRS];
    int n = 0, fd = -1, rc;
    int connect_ms = opts && opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms
                                                          : DIAL_DEFAULT_TIMEOUT_MS;
    tc__detail_clear();
    if (!out || !address)
        return -EINVAL;
    if (opts && tc_codec_validate(&opts->codec) < 0) {
        tc__log_detail(NULL, "invalid configuration: codec is not a valid tc_codec");
        return -EINVAL;
    }
    if (opts && (opts->read_buffer_size > TC__BUF_MAX || opts->write_buffer_size > TC__BUF_MAX)) {
        tc__log_detail(NULL, "invalid configuration: %s is over %zu bytes",
                       opts->read_buffer_size > TC__BUF_MAX ? "read_buffer_size"
                                                            : "write_buffer_size",
                       (size_t)TC__BUF_MAX);
        return -EINVAL;
    }
    if ((rc = tc__addr_resolve(address, addrs, DIAL_MAX_ADDRS, &n)) < 0) {
        tc__log_detail(NULL, "dial address \"%s\": %s", address, tc_strerror(rc));
        return rc;
    }
    if (opts && opts->transport && (!opts->transport->ops || addrs[0].socktype == SOCK_DGRAM)) {
        tc__log_detail(NULL, "invalid configuration: transport needs its ops and a stream address");
        return -EINVAL;
    }
    if (addrs[0].socktype == SOCK_DGRAM && opts &&
        (opts->codec.kind != TC_CODEC_RAW || opts->codec.max_frame > TC_DGRAM_MAX_FRAME)) {
        tc__log_detail(NULL, "invalid configuration: codec must be raw, with max_frame at most "
                             "TC_DGRAM_MAX_FRAME, for a datagram address (a datagram is one "
                             "message)");
        return -EINVAL;
    }
    /* Keep the first failure that is not a refusal: it says more (a timeout
     * on one address and a refusal on another is reported as the timeout). */
    int err = -ECONNREFUSED;
    for (int i = 0; i < n; i++) {
        rc = connect_one(&addrs[i], connect_ms, &fd);
        if (rc == 0)
            break;
        if (err == -ECONNREFUSED)
            err = rc;
    }
    if (rc < 0)
        return err;
    int dgram = addrs[0].socktype == SOCK_DGRAM;
    tc_conn *c;
    if ((rc = tc__chan_new(&c, dgram ? &tc__drv_dgram_dial : &tc__drv_poll, fd, &addrs[0], NULL)) <
        0)
        return rc;
    /* The peer is the address that answered, not necessarily the first. */
    tc_addr peer = addrs[0];
    (void)tc__sock_peer(fd, &peer);
    peer.socktype = c->own_local[0].socktype = addrs[0].socktype; /* local: not shared */
    if ((rc = tc__chan_set_peer(c, &peer)) < 0) {
        tc__chan_free(c);
        return rc;
    }
    c->timeout_ms = opts && opts->timeout_ms > 0 ? opts->timeout_ms : 0;
    tc_codec codec = {.kind = TC_CODEC_RAW};
    if (opts)
        codec = opts->codec;
    if (dgram && !codec.max_frame)
        codec.max_frame = TC_DGRAM_DEFAULT_MAX_FRAME;
    if ((opts || dgram) && (rc = tc__chan_set_codec(c, &codec)) < 0) {
        tc__chan_free(c);
        return rc;
    }
    if (opts) {
        (void)tc_conn_set_buffer_sizes(c, opts->read_buffer_size, opts->write_buffer_size);
    }
    if (dgram)
        tc__dgram_dial_prepare(c, codec.max_frame);
    if (opts && opts->transport && (rc = secure(c, address, opts, connect_ms)) < 0)
        return rc;
    *out = c;
    return 0;
}
