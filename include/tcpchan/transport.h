/* SPDX-License-Identifier: MIT */
/**
 * @file transport.h
 * @brief A pluggable byte transport under a channel (TLS is one): the table
 *        an add-on library implements, and how a server or tc_dial() is given one.
 *
 * libtcpchan itself speaks plain TCP. A transport takes over a connected
 * socket and turns the bytes a channel reads and writes into what goes on
 * the wire, after an opening handshake. libtcpchan-tls (tcpchan/tls.h)
 * implements one on OpenSSL: its tc_tls_server_create() and
 * tc_tls_client_create() return a tc_transport that goes into
 * @ref tc_server_config::transport or @ref tc_dial_config::transport. The
 * core links nothing for it: a program that never sets a transport never
 * loads the add-on.
 *
 * Every mode runs the handshake after the PROXY header (if any) and before
 * setup: in a connection's own thread or process by waiting on the socket,
 * in an event loop as a non-blocking opening step. The handshake has its
 * own timeout (@ref tc_transport::handshake_timeout_ms); a failed or late
 * handshake ends the connection before the handler sees it (reported to
 * the log hook, at TC_LOG_INFO: a scanner or a plaintext client is not a
 * server error).
 *
 * Most programs never implement this table; it is public so that an
 * add-on outside the core library can.
 */
#ifndef TCPCHAN_TRANSPORT_H
#define TCPCHAN_TRANSPORT_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** @brief A transport's step would block until the socket is readable. */
#define TC_TRANSPORT_WANT_READ 1u
/** @brief A transport's step would block until the socket is writable. */
#define TC_TRANSPORT_WANT_WRITE 2u
/** @brief tc_transport_ops::recv flag: the socket is blocking and the call may sleep in it. */
#define TC_TRANSPORT_SLEEP 1

/** @brief A transport object (see struct tc_transport). */
typedef struct tc_transport tc_transport;
struct tc_conn;

/**
 * @brief The functions of a transport. Every one that can block answers
 *        -EAGAIN instead, with *want set to TC_TRANSPORT_WANT_READ or
 *        TC_TRANSPORT_WANT_WRITE: what the socket must become before the
 *        same call is made again (a TLS read may need to write, and a
 *        write to read).
 *
 * Calls on one connection's state come from one thread at a time (the
 * thread that owns the channel); attach may run in several threads at once
 * for different connections.
 */
typedef struct tc_transport_ops {
    /** @brief Short name for logs ("tls"). */
    const char *name;
    /**
     * @brief Take over a connected socket (the core keeps owning and closes the descriptor).
     * @param t       The transport.
     * @param fd      The socket: non-blocking or blocking; sends must use MSG_NOSIGNAL.
     * @param client  1 for a dialled channel (the transport starts the handshake), 0 for an accepted one.
     * @param host    Client: the host name of the dialled address (SNI, name check), or NULL. Server: NULL.
     * @param early   Bytes already read from the socket (behind a PROXY header): the transport reads these first.
     * @param early_len Their length.
     * @param out     Set to the connection's state on success.
     * @return 0, -ENOMEM, or another negative code.
     */
    int (*attach)(tc_transport *t, int fd, int client, const char *host, const void *early,
                  size_t early_len, void **out);
    /** @brief One step of the handshake: 0 done, -EAGAIN (*want set), or an error (the reason logged). */
    int (*handshake)(void *conn, unsigned *want);
    /**
     * @brief Receive up to n bytes: as many as are there, without waiting unless
     *        flags has TC_TRANSPORT_SLEEP (a blocking socket under SO_RCVTIMEO).
     * @return A count; 0 at a clean end (the peer's close_notify); -EAGAIN (*want
     *         set); -EINTR (a signal while asleep); TC_ETRUNCATED (the stream ended
     *         without close_notify); or another error.
     */
    ssize_t (*recv)(void *conn, void *buf, size_t n, int flags, unsigned *want);
    /** @brief Send from iov (cnt entries): the count taken (all of it, or less), -EAGAIN (*want set), or an error. */
    ssize_t (*send)(void *conn, const struct iovec *iov, int cnt, unsigned *want);
    /** @brief Received bytes the transport holds that recv returns without the socket (0 if none). */
    size_t (*pending)(void *conn);
    /** @brief Tell the peer the stream ends here (close_notify): 0, -EAGAIN (*want set), or an error. */
    int (*shutdown)(void *conn, unsigned *want);
    /** @brief Why the last step failed, for a log line (static or the state's; "" if unknown). */
    const char *(*why)(void *conn);
    /** @brief Free the connection's state (the descriptor is the core's). */
    void (*free)(void *conn);
    /**
     * @brief Optional (NULL: the core copies the file through send): send up to
     *        n bytes of file_fd from *offset without a copy (TLS: kTLS).
     * @return The count sent (*offset advanced), 0 at the file's end, -ENOTSUP
     *         (not on this connection: the core copies), -EAGAIN (*want set), or
     *         an error. Must not raise SIGPIPE.
     */
    ssize_t (*sendfile)(void *conn, int file_fd, off_t *offset, size_t n, unsigned *want);
} tc_transport_ops;

/**
 * @brief A transport object: an implementation embeds it as its first member.
 * @par Ownership
 * The object belongs to whoever created it (for TLS: tc_tls_destroy()); it
 * must outlive every server and channel it was given to.
 */
struct tc_transport {
    const tc_transport_ops *ops; /**< the functions */
    int handshake_timeout_ms;    /**< the longest a handshake may take; 0 = 10000 ms */
};

/**
 * @brief The transport a channel runs over, and its state for the channel.
 * @param conn  The channel.
 * @param state If not NULL, set to the transport's state for this channel (NULL when none).
 * @return The transport, or NULL for a plain channel (or NULL @p conn).
 * @par Thread safety
 * Safe from the thread that owns the channel.
 */
TC_API tc_transport *tc_conn_transport(const struct tc_conn *conn, void **state);

#ifdef __cplusplus
}
#endif

#endif /* TCPCHAN_TRANSPORT_H */
