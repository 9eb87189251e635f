/* SPDX-License-Identifier: MIT */
/**
 * @file ws.h
 * @brief WebSocket (RFC 6455) servers: the same message-style handlers
 *        behind a web page.
 *
 * Point @ref tc_server_config::ws at a tc_ws_config and every accepted
 * connection starts with the HTTP upgrade handshake; from then on
 * on_message receives whole WebSocket messages (fragments joined, text
 * checked as UTF-8), pings are answered, and a close is answered with a
 * close. It works in every mode (inline, threading, forking, pool, event)
 * with message-style handlers (on_message); a stream handler (handle) is
 * TC_EBADCONFIG.
 *
 * @code
 * static int echo(tc_conn *c, const void *msg, size_t len, void *ctx) {
 *     (void)ctx;
 *     ssize_t n = tc_ws_send(c, tc_ws_message_type(c), msg, len);
 *     return n < 0 ? (int)n : 0;
 * }
 * int main(void) {
 *     tc_server_config cfg = TC_SERVER_CONFIG_INIT;
 *     tc_ws_config ws = TC_WS_CONFIG_INIT;
 *     tc_handler h = TC_HANDLER_INIT;
 *     tc_server *srv;
 *     cfg.listen = "127.0.0.1:8080";
 *     cfg.mode = TC_MODE_EVENT;
 *     cfg.ws = &ws;
 *     h.on_message = echo;
 *     if (tc_server_create(&srv, &cfg, &h) < 0) return 1;
 *     tc_server_serve_forever(srv);
 *     tc_server_destroy(srv);
 *     return 0;
 * }
 * @endcode
 *
 * **Limits.** The largest message (after joining fragments) is the server
 * codec's maximum, @ref tc_codec::max_frame (1 MiB by default); a frame
 * announcing more is refused from its header with close code 1009. The
 * request head is bounded by @ref tc_ws_config::max_header_size (16 KiB)
 * and 64 header fields (431), and must arrive within
 * @ref tc_ws_config::handshake_timeout_ms.
 *
 * **Closing.** Frames that break the protocol (reserved bits, unknown
 * opcodes, unmasked client frames, fragmented or oversized control frames,
 * a continuation of nothing) are answered with close code 1002, text that
 * is not UTF-8 with 1007, an oversized message with 1009; the session then
 * ends with TC_EBADFRAME or TC_ETOOBIG (reported to handle_error and given
 * to on_close) once the peer has closed, or after
 * @ref tc_ws_config::close_timeout_ms. A close from the peer is answered
 * with the same code and ends the session cleanly (on_close reason 0;
 * tc_ws_close_code() tells the code).
 *
 * **Absent.** Extensions (permessage-deflate: it would need zlib) are not
 * negotiated; a client offering one gets a connection without it.
 *
 * @par Thread safety
 * As for the channel: tc_ws_send() follows tc_conn_send()'s rules (from
 * any thread in event mode); the other calls are made from the
 * connection's callbacks.
 */
#ifndef TCPCHAN_WS_H
#define TCPCHAN_WS_H

#include <stddef.h>
#include <sys/types.h>

#include "common.h"
#include "conn.h"

#ifdef __cplusplus
extern "C" {
#endif

/** @brief Default of tc_ws_config::max_header_size, in bytes (16 KiB). */
#define TC_WS_DEFAULT_MAX_HEADER 16384
/** @brief Default of tc_ws_config::handshake_timeout_ms, in ms (10 s). */
#define TC_WS_DEFAULT_HANDSHAKE_TIMEOUT_MS 10000
/** @brief Default of tc_ws_config::close_timeout_ms, in ms (5 s). */
#define TC_WS_DEFAULT_CLOSE_TIMEOUT_MS 5000
/** @brief Default of tc_ws_config::ping_timeout_ms, in ms (10 s). */
#define TC_WS_DEFAULT_PING_TIMEOUT_MS 10000

/** @brief Message types (the RFC's opcodes). */
typedef enum tc_ws_type {
    TC_WS_TEXT = 1,  /**< UTF-8 text */
    TC_WS_BINARY = 2 /**< bytes */
} tc_ws_type;

/**
 * @brief The HTTP request that opened a connection, as the hooks see it.
 *
 * Every string is NUL-terminated and valid only during the hook's call.
 */
typedef struct tc_ws_request {
    const char *method;    /**< "GET", or what else the client sent */
    const char *path;      /**< the request target, query included ("/chat?room=1") */
    const char *host;      /**< the Host field, or NULL */
    const char *origin;    /**< the Origin field (browsers send it), or NULL */
    const char *protocols; /**< Sec-WebSocket-Protocol: the subprotocols offered, or NULL */
    size_t nheaders;       /**< how many header fields */
    const char *const *names;  /**< their names, as sent */
    const char *const *values; /**< their values, without surrounding spaces */
} tc_ws_request;

/**
 * @brief Find a header field of a request by name (case-insensitive).
 * @param req  The request.
 * @param name The field's name.
 * @return The first field's value, or NULL (also for NULL arguments).
 * @par Thread safety
 * Any thread; valid as long as @p req.
 */
TC_API const char *tc_ws_request_header(const tc_ws_request *req, const char *name);

/**
 * @brief WebSocket settings of a server (@ref tc_server_config::ws).
 *        Zero-initialise, or use TC_WS_CONFIG_INIT; 0 means the default.
 *
 * tc_server_create() copies it; the hooks' @ref tc_ws_config::ctx must stay
 * valid while the server runs.
 */
typedef struct tc_ws_config {
    /** @brief The largest request head (request line and fields), in bytes;
     *         0 = TC_WS_DEFAULT_MAX_HEADER. Larger: 431 and the connection closed. */
    size_t max_header_size;
    /** @brief The longest wait for the whole request head, from the start of
     *         the connection's run, in ms; 0 = TC_WS_DEFAULT_HANDSHAKE_TIMEOUT_MS. */
    int handshake_timeout_ms;
    /** @brief After the server sent a close frame, how long it waits for the
     *         peer to close, in ms; 0 = TC_WS_DEFAULT_CLOSE_TIMEOUT_MS. */
    int close_timeout_ms;
    /** @brief Keepalive: after this long without a frame from the peer, in
     *         ms, send a ping; 0 = no keepalive. Any frame (the pong, or
     *         anything else) counts as an answer. */
    int ping_interval_ms;
    /** @brief Keepalive: how long a ping may go unanswered before the
     *         connection is closed (on_close reason -ETIMEDOUT), in ms;
     *         0 = TC_WS_DEFAULT_PING_TIMEOUT_MS. */
    int ping_timeout_ms;
    /**
     * @brief Check an upgrade request and choose a subprotocol (may be NULL:
     *        every path and origin is accepted, no subprotocol).
     *
     * Called in the connection's thread (event mode: the loop), before
     * setup. Check @ref tc_ws_request::origin and @ref tc_ws_request::path
     * here.
     * @param conn The channel (nothing has been sent yet).
     * @param req  The request.
     * @param[out] subprotocol Set it to one of the offered subprotocols
     *             (a string that outlives the call, such as a literal) to
     *             accept it; left NULL, none is chosen. One not offered is ignored.
     * @param ctx  @ref tc_ws_config::ctx.
     * @return 0 to accept; an HTTP status from 400 to 599 to refuse with it
     *         (any other value: 403). The refusal closes the connection
     *         quietly; no handler callback runs.
     */
    int (*on_handshake)(tc_conn *conn, const tc_ws_request *req, const char **subprotocol,
                        void *ctx);
    /**
     * @brief Answer a plain HTTP request (one without `Upgrade: websocket`),
     *        so that one port serves a page and its socket (may be NULL: such
     *        requests get 426 Upgrade Required).
     *
     * Write a whole HTTP response with tc_conn_write() or tc_conn_printf();
     * the library flushes it and closes the connection (send
     * `Connection: close`). Called in the connection's thread, before setup;
     * no handler callback runs for the connection.
     * @return 0, or a negative code (reported to handle_error).
     */
    int (*on_http)(tc_conn *conn, const tc_ws_request *req, void *ctx);
    /** @brief Passed to the hooks as their last argument. */
    void *ctx;
} tc_ws_config;

/** @brief Initialiser for tc_ws_config: every field at its default. */
#define TC_WS_CONFIG_INIT {0, 0, 0, 0, 0, 0, 0, 0}

/**
 * @brief Set every field of @p cfg to its default: a copy of TC_WS_CONFIG_INIT.
 * @param cfg The config; NULL does nothing.
 */
TC_API void tc_ws_config_init(tc_ws_config *cfg);

/**
 * @brief The type of the message being handled (in on_message).
 * @param conn A WebSocket channel.
 * @return TC_WS_TEXT or TC_WS_BINARY for the last message delivered, or
 *         -EINVAL for NULL or a channel that does not speak WebSocket.
 * @par Thread safety
 * From the thread running on_message (pool mode: the worker).
 */
TC_API int tc_ws_message_type(const tc_conn *conn);

/**
 * @brief Send one message.
 *
 * One frame, unmasked (the server's side), sent as tc_conn_send() sends:
 * in the blocking modes it waits until the socket took it (within the
 * channel's timeout); in event and pool mode it sends what the socket takes
 * and queues the rest, and may be called from any thread (the bytes then go
 * through the loop's mailbox: -EAGAIN above send_high_water queued). tc_conn_send() on
 * a WebSocket channel sends a binary message.
 * @param conn A WebSocket channel.
 * @param type TC_WS_TEXT (@p buf must be UTF-8) or TC_WS_BINARY.
 * @param buf  The payload (may be NULL when @p len is 0).
 * @param len  Its length.
 * @return @p len, or TC_ECLOSED once a close frame was sent or received,
 *         TC_EBADFRAME for text that is not UTF-8, -EINVAL for NULL, an
 *         unknown type or a channel that does not speak WebSocket (or the
 *         handshake is not done), or tc_conn_send()'s errors.
 * @par Ownership
 * The payload is the caller's; it is copied or sent before the call returns.
 */
TC_API ssize_t tc_ws_send(tc_conn *conn, tc_ws_type type, const void *buf, size_t len);

/**
 * @brief Send one message in parts (fragments): a large payload produced
 *        piece by piece, without holding it whole.
 *
 * The first call sends a frame of @p type, the following ones
 * continuations, the call with @p last set the final one; the peer
 * receives one message. No other message may be sent on the channel in
 * between (control frames the library sends may: the RFC allows them), so
 * call it from one thread, and not with tc_ws_send() interleaved. Each part
 * goes out as tc_ws_send() sends a message.
 * @param conn A WebSocket channel.
 * @param type TC_WS_TEXT or TC_WS_BINARY: the message's type (the same for
 *             every part). Text parts must each be whole UTF-8 characters.
 * @param buf  This part (may be NULL when @p len is 0).
 * @param len  Its length.
 * @param last Non-zero for the message's last part.
 * @return @p len, or the errors of tc_ws_send().
 * @par Thread safety
 * One thread per message, as above.
 */
TC_API ssize_t tc_ws_send_part(tc_conn *conn, tc_ws_type type, const void *buf, size_t len,
                               int last);

/**
 * @brief Start the close handshake: send a close frame with @p code and
 *        @p reason, then wait (reading and dropping messages) for the
 *        peer's close, at most @ref tc_ws_config::close_timeout_ms.
 *
 * The session then ends as usual (on_close with reason 0 when the peer
 * answered, -ETIMEDOUT otherwise). Further sends fail with TC_ECLOSED.
 * @param conn   A WebSocket channel.
 * @param code   A close code: 1000 (normal), 1001, 1008, 1011, or 3000 to 4999.
 * @param reason UTF-8 text of at most 123 bytes, or NULL.
 * @return 0, TC_ECLOSED if a close was already sent, -EINVAL for an invalid
 *         code, reason or channel, or the send's error.
 * @par Thread safety
 * From the connection's callbacks (the loop thread in event mode).
 */
TC_API int tc_ws_close(tc_conn *conn, unsigned code, const char *reason);

/**
 * @brief The close code the peer sent.
 * @param conn A WebSocket channel.
 * @return 0 while no close frame came, the code, 1005 for a close frame
 *         without one, or -EINVAL for a channel that does not speak WebSocket.
 * @par Thread safety
 * From the connection's callbacks (on_close, typically).
 */
TC_API int tc_ws_close_code(const tc_conn *conn);

/**
 * @brief The reason the peer gave with its close code.
 * @param conn A WebSocket channel.
 * @return The reason's text (UTF-8, at most 123 bytes, NUL-terminated; ""
 *         while no close frame came or when it had none), valid until the
 *         connection closes; or NULL for a channel that does not speak
 *         WebSocket.
 * @par Thread safety
 * From the connection's callbacks (on_close, typically).
 */
TC_API const char *tc_ws_close_reason(const tc_conn *conn);

/**
 * @brief The request target the connection was opened with ("/chat?x=1").
 * @param conn A WebSocket channel.
 * @return The path (valid until the connection closes), or NULL before the
 *         handshake or for a channel that does not speak WebSocket.
 */
TC_API const char *tc_ws_path(const tc_conn *conn);

/**
 * @brief The subprotocol chosen in the handshake.
 * @param conn A WebSocket channel.
 * @return It (valid until the connection closes), or NULL when none was.
 */
TC_API const char *tc_ws_subprotocol(const tc_conn *conn);

/**
 * @brief Compute Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455
 *        section 4.2.2: base64 of the SHA-1 of the key and the GUID).
 * @param key      The key as the client sent it (24 characters of base64).
 * @param[out] out Receives 28 characters and a NUL (room for 29).
 * @return 0, or -EINVAL for NULL arguments or a key that is not base64 of 16 bytes.
 * @par Thread safety
 * Any thread; pure.
 */
TC_API int tc_ws_accept_key(const char *key, char out[29]);

/**
 * @brief Configuration of tc_ws_dial(). Zero-initialise, or use TC_WS_DIAL_CONFIG_INIT.
 */
typedef struct tc_ws_dial_config {
    /** @brief The connection's settings (tc_dial()); the codec's max_frame
     *         is the largest message accepted (1 MiB by default; larger: 1009). */
    tc_dial_config dial;
    /** @brief An Origin field to send, or NULL. Copied into the request. */
    const char *origin;
    /** @brief Sec-WebSocket-Protocol to offer ("chat, superchat"), or NULL. */
    const char *protocols;
    /** @brief After tc_ws_close(), how long tc_ws_recv() waits for the
     *         server's close, in ms; 0 = TC_WS_DEFAULT_CLOSE_TIMEOUT_MS. */
    int close_timeout_ms;
} tc_ws_dial_config;

/** @brief Initialiser for tc_ws_dial_config: every field at its default. */
#define TC_WS_DIAL_CONFIG_INIT {TC_DIAL_CONFIG_INIT, 0, 0, 0}

/**
 * @brief Set every field of @p cfg to its default: a copy of TC_WS_DIAL_CONFIG_INIT.
 * @param cfg The config; NULL does nothing.
 */
TC_API void tc_ws_dial_config_init(tc_ws_dial_config *cfg);

/**
 * @brief Open a WebSocket client connection (for tests and tools): connect,
 *        send the upgrade request, check the server's 101 and its
 *        Sec-WebSocket-Accept.
 *
 * The channel is a blocking client channel, as tc_dial() returns: send with
 * tc_ws_send() (frames are masked, as a client's must be), receive with
 * tc_ws_recv(), end with tc_ws_close() then tc_ws_recv() until TC_EOF, and
 * free it with tc_conn_close().
 * @code
 * tc_conn *c;
 * const void *msg;
 * size_t len;
 * if (tc_ws_dial(&c, "ws://127.0.0.1:7000/echo", NULL) < 0) return 1;
 * tc_ws_send(c, TC_WS_TEXT, "hi", 2);
 * int type = tc_ws_recv(c, &msg, &len);   // TC_WS_TEXT, "hi"
 * tc_ws_close(c, 1000, NULL);
 * while (tc_ws_recv(c, &msg, &len) > 0) {}
 * tc_conn_close(c);
 * @endcode
 * @param[out] out Receives the channel; written only on success.
 * @param url      "ws://HOST[:PORT][/PATH]" (port 80 by default; HOST as
 *                 tc_dial() takes it, [::1] for IPv6).
 * @param cfg      The configuration, or NULL for the defaults.
 * @return 0, or TC_EBADADDR (not such a URL; tc_last_error_detail() says
 *         so), tc_dial()'s errors, TC_EDENIED (the server answered with
 *         another status than 101), TC_EBADFRAME (a 101 without the right
 *         Upgrade, Connection or Sec-WebSocket-Accept, or naming an extension
 *         or subprotocol not offered), TC_ETOOBIG (a response head over
 *         16 KiB), -ETIMEDOUT (the dial config's timeout_ms), -ENOMEM.
 * @par Ownership
 * The caller owns the channel and releases it with tc_conn_close().
 */
TC_API int tc_ws_dial(tc_conn **out, const char *url, const tc_ws_dial_config *cfg);

/**
 * @brief Receive the next message on a client channel from tc_ws_dial().
 *
 * Waits (within the channel's timeout) for a whole message: fragments are
 * joined, pings answered, text checked as UTF-8. A close from the server is
 * answered, and ends the stream.
 * @param conn     The client channel.
 * @param[out] msg Receives the payload: a view into the channel's buffer,
 *                 valid until the next read call on the channel.
 * @param[out] len Receives its length.
 * @return TC_WS_TEXT or TC_WS_BINARY, TC_EOF once the server closed (see
 *         tc_ws_close_code()) or the connection ended, TC_EBADFRAME or
 *         TC_ETOOBIG for what broke the protocol (the client answered with
 *         1002, 1007 or 1009), -ETIMEDOUT, a socket error, or -EINVAL (NULL,
 *         or not a tc_ws_dial() channel).
 * @par Thread safety
 * One thread at a time per channel.
 */
TC_API int tc_ws_recv(tc_conn *conn, const void **msg, size_t *len);

#ifdef __cplusplus
}
#endif
#endif /* TCPCHAN_WS_H */
