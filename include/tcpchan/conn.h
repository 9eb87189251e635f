/* SPDX-License-Identifier: MIT */
/**
 * @file conn.h
 * @brief tc_conn, the channel: one connected stream socket, handed to request
 *        handlers on the server side and returned by tc_dial() on the client side.
 *
 * Sockets are non-blocking inside; the blocking calls here wait with poll()
 * against an absolute deadline computed from the channel's timeout, so a
 * timeout is exact, interrupted system calls are retried and EINTR never
 * reaches the caller. Sends use MSG_NOSIGNAL: a closed peer gives -EPIPE,
 * never SIGPIPE.
 *
 * @par Thread safety
 * A channel is used by one thread at a time (the handler's, or the client's).
 * The accessors are safe from any thread while the channel is alive.
 */
#ifndef TCPCHAN_CONN_H
#define TCPCHAN_CONN_H

#include <sys/types.h>

#include "addr.h"
#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief The socket descriptor under the channel.
 *
 * For poll()ing it, or setsockopt(); reading or writing it directly
 * bypasses the channel's buffering. The library owns and closes it.
 * @param conn The channel.
 * @return The descriptor, or -EINVAL for NULL.
 */
TC_API int tc_conn_fd(const tc_conn *conn);

/**
 * @brief The address of the other end.
 * @param conn The channel.
 * @return A pointer valid while the channel lives; NULL for a NULL channel.
 */
TC_API const tc_addr *tc_conn_peer(const tc_conn *conn);

/**
 * @brief The address of this end (the server's listening address and port
 *        for a server-side channel).
 * @param conn The channel.
 * @return A pointer valid while the channel lives; NULL for a NULL channel.
 */
TC_API const tc_addr *tc_conn_local(const tc_conn *conn);

/**
 * @brief The server that accepted this channel.
 * @param conn The channel.
 * @return The server, or NULL for a client channel from tc_dial().
 */
TC_API tc_server *tc_conn_server(const tc_conn *conn);

/**
 * @brief Attach a user pointer to the channel (per-connection state).
 * @param conn The channel.
 * @param data Anything; the library never dereferences or frees it.
 */
TC_API void tc_conn_set_data(tc_conn *conn, void *data);

/**
 * @brief The user pointer set with tc_conn_set_data() (NULL until set).
 * @param conn The channel.
 * @return The pointer.
 */
TC_API void *tc_conn_data(const tc_conn *conn);

/**
 * @brief Set the per-operation timeout (socketserver's StreamRequestHandler.timeout).
 *
 * Each blocking call on the channel (one read, one whole send_all) gives up
 * with -ETIMEDOUT when it cannot complete within this time. The channel
 * stays usable after a read times out; after a send times out part of the
 * data may have gone out, so treat the channel as broken.
 * @param conn The channel.
 * @param ms   Milliseconds; 0 or negative waits forever (the default, unless
 *             the server or dial options set one).
 * @return 0, or -EINVAL for NULL.
 */
TC_API int tc_conn_set_timeout(tc_conn *conn, int ms);

/**
 * @brief Read what is available, up to @p n bytes, waiting for at least one.
 * @param conn The channel.
 * @param buf  Destination.
 * @param n    Its size; 0 returns 0 at once.
 * @return The number of bytes read (> 0), or TC_EOF when the peer closed its
 *         side, -ETIMEDOUT, -ECONNRESET or another negated errno value,
 *         -EINVAL for NULL arguments.
 */
TC_API ssize_t tc_conn_read(tc_conn *conn, void *buf, size_t n);

/**
 * @brief Send all @p n bytes, waiting as long as the socket needs.
 *
 * Retries partial writes and signals until everything is sent or the
 * channel's timeout (for the whole call) expires.
 * @param conn The channel.
 * @param buf  The bytes.
 * @param n    How many.
 * @return @p n, or -ETIMEDOUT, -EPIPE, -ECONNRESET or another negated errno
 *         value (some bytes may have been sent), -EINVAL for NULL arguments.
 */
TC_API ssize_t tc_conn_send_all(tc_conn *conn, const void *buf, size_t n);

/** @brief Options for tc_dial(). Zero-initialise, or use TC_DIAL_OPTIONS_INIT. */
typedef struct tc_dial_options {
    int connect_timeout_ms; /**< give up connecting after this long; 0 = 30000 ms */
    int timeout_ms;         /**< per-operation timeout of the channel; 0 = none */
} tc_dial_options;

/** @brief Initialiser for tc_dial_options: every field at its default. */
#define TC_DIAL_OPTIONS_INIT {0, 0}

/**
 * @brief Connect to a server and return a client channel.
 *
 * Resolves @p address (same forms as tc_addr_parse()), tries each address
 * the name resolves to in turn (IPv6 and IPv4) until one connects, each
 * within the connect timeout.
 * @code
 * tc_conn *c;
 * int rc = tc_dial(&c, "127.0.0.1:7000", NULL);
 * if (rc < 0) { fprintf(stderr, "dial: %s\n", tc_strerror(rc)); return 1; }
 * tc_conn_send_all(c, "hi\n", 3);
 * tc_conn_close(c);
 * @endcode
 * @param[out] out  Receives the channel; written only on success.
 * @param address   Where to connect.
 * @param opts      Options, or NULL for the defaults.
 * @return 0, or TC_EBADADDR / -ENAMETOOLONG for a malformed address,
 *         TC_ENORESOLVE for a name that does not resolve, -ECONNREFUSED,
 *         -ETIMEDOUT (connect timeout), -ENETUNREACH / -EHOSTUNREACH,
 *         -ENOMEM, -EMFILE or another negated errno value, -EINVAL for NULL.
 * @par Ownership
 * The caller owns the channel and releases it with tc_conn_close().
 */
TC_API int tc_dial(tc_conn **out, const char *address, const tc_dial_options *opts);

/**
 * @brief Close a client channel from tc_dial() and free it.
 *
 * Server-side channels are closed by the library after the handler's finish
 * and must not be passed here (the call is then ignored). NULL does nothing.
 * @param conn The channel.
 */
TC_API void tc_conn_close(tc_conn *conn);

#ifdef __cplusplus
}
#endif
#endif /* TCPCHAN_CONN_H */
