/* SPDX-License-Identifier: MIT */
/**
 * @file conn.h
 * @brief tc_conn, the channel: one connected stream socket, handed to request
 *        handlers on the server side and returned by tc_dial() on the client side.
 *
 * The blocking calls here wait against an absolute deadline computed from
 * the channel's timeout, so a timeout is exact, interrupted system calls are
 * retried and EINTR never reaches the caller: with poll() on a non-blocking
 * socket, or, for a server connection with a thread or process of its own
 * (threading, forking, inline, pool's stream style), asleep in recv() on a
 * blocking socket whose SO_RCVTIMEO the library sets (sends never sleep in the kernel:
 * MSG_DONTWAIT, then poll()). Sends use MSG_NOSIGNAL: a closed peer gives -EPIPE,
 * never SIGPIPE.
 *
 * A server connection in inline or forking mode (or served with
 * tc_server_serve_inetd()) also watches the server's stop signal while a
 * read waits (ppoll() on the socket and the signal, then a recv() that does
 * not sleep): once tc_server_shutdown() is called, a read that finds no
 * input waiting ends with TC_ESHUTDOWN, consuming nothing, so that the
 * handler returns and the drain completes. Bytes already received are
 * still returned. In threading and pool modes the drain instead shuts the
 * connection's socket after tc_server_config::drain_timeout_ms, and a
 * waiting read sees the end of the stream.
 *
 * @par Thread safety
 * A channel is used by one thread at a time (the handler's, or the client's).
 * The accessors are safe from any thread while the channel is alive.
 * Event mode adds one exception: the unbuffered sends (tc_conn_send(),
 * tc_conn_write_frame(), tc_conn_writev(), tc_conn_send_all()) may be called
 * from any thread; see tc_conn_send().
 *
 * What is said here of TC_MODE_EVENT holds for every channel an event loop
 * runs: those of event mode, and the message-style connections of
 * TC_MODE_POOL, whose loop hands each message to a worker thread. That
 * worker owns the channel while on_message runs: its sends go straight to
 * the socket (never blocking; what the socket does not take is queued for
 * the loop), and it may call tc_conn_set_timer() and tc_conn_shutdown_write()
 * as the loop thread may.
 */
#ifndef TCPCHAN_CONN_H
#define TCPCHAN_CONN_H

#include <stdint.h>
#include <sys/types.h>

#include "addr.h"
#include "clock.h"
#include "codec.h"
#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @def TC_PRINTF_LIKE
 * @brief Lets the compiler check a printf-style format (argument @p f) against
 *        its arguments (from @p a on); empty for compilers without the attribute.
 */
#if defined(__GNUC__) || defined(__clang__)
#define TC_PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define TC_PRINTF_LIKE(f, a)
#endif

/**
 * @brief The socket descriptor under the channel.
 *
 * For poll()ing it, or setsockopt(); reading or writing it directly
 * bypasses the channel's buffering. The library owns and closes it.
 * A request of a datagram server has no socket of its own (its replies go
 * out through the server's, tc_server_fileno()): -1.
 * @param conn The channel.
 * @return The descriptor, -1 for a datagram server's request, or -EINVAL for NULL.
 */
TC_API int tc_conn_fd(const tc_conn *conn);

/**
 * @brief The address of the other end: the client.
 *
 * On a server whose @ref tc_server_config::proxy_protocol is on, and a
 * connection that came with a PROXY header carrying addresses, this is the
 * client's address and port as the proxy saw them, from setup on (the proxy's
 * own address is tc_conn_proxy_peer()). Otherwise it is the socket's peer.
 * @param conn The channel.
 * @return A pointer valid while the channel lives; NULL for a NULL channel,
 *         or when out of memory: the channel keeps an IPv4 or IPv6 address
 *         in less room than a tc_addr, and makes the tc_addr this returns at
 *         the first call (any thread may call it).
 */
TC_API const tc_addr *tc_conn_peer(const tc_conn *conn);

/**
 * @brief The address of the proxy that sent this connection's PROXY header:
 *        the socket's real peer.
 * @param conn The channel.
 * @return A pointer valid while the channel lives, or NULL when the
 *         connection carried no PROXY header (the protocol is off, or optional
 *         and the client connected directly) and for a NULL channel. After a
 *         header without addresses (v2 LOCAL, v1 UNKNOWN) it equals
 *         tc_conn_peer().
 * @par Thread safety
 * As the other accessors: from the connection's handler, or any thread while
 * the channel lives.
 */
TC_API const tc_addr *tc_conn_proxy_peer(const tc_conn *conn);

/**
 * @brief The destination the client connected to, as a PROXY header gave it
 *        (the proxy's frontend address and port).
 * @param conn The channel.
 * @return A pointer valid while the channel lives, or NULL when the
 *         connection's header carried no addresses, when it had no header,
 *         and for a NULL channel.
 */
TC_API const tc_addr *tc_conn_proxy_dest(const tc_conn *conn);

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
 * @brief The connection's id: a name for it that other threads can hold
 *        safely after the connection is gone (see tc_server_send_to() and
 *        tc_server_close_conn()).
 *
 * Nonzero, set before setup runs, and never given to another connection of
 * the same server while the server lives (ids are not reused). Unlike the
 * tc_conn pointer, which is freed once on_close (or finish) returns, an id
 * stays harmless: using it later returns TC_ECLOSED.
 * @param conn The channel.
 * @return The id, or 0 for a client channel from tc_dial() and for NULL.
 * @par Thread safety
 * Any thread while the connection lives.
 */
TC_API uint64_t tc_conn_id(const tc_conn *conn);

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
 * Each blocking call on the channel (one read, one whole write, flush or
 * send) gives up with -ETIMEDOUT when it cannot complete within this time,
 * counted from the start of the call. See "Timeouts and deadlines" in
 * @ref channels for the state a timed-out call leaves.
 * @param conn The channel.
 * @param ms   Milliseconds; 0 or negative waits forever. Accepted channels
 *             start with the server's @ref tc_server_config::conn_timeout_ms
 *             (5 minutes by default); dialled ones with
 *             @ref tc_dial_config::timeout_ms (none by default).
 * @return 0, or -EINVAL for NULL.
 */
TC_API int tc_conn_set_timeout(tc_conn *conn, int ms);

/**
 * @brief Set an overall deadline for the channel: an absolute point in time
 *        after which every blocking call fails with -ETIMEDOUT.
 *
 * Unlike the per-operation timeout, it does not restart with each call, so
 * it bounds a whole exchange (a request and its reply, a transfer):
 * @code
 * tc_conn_set_deadline(c, tc_monotonic_ns() + 2000 * TC_NS_PER_MS); // 2 s from now
 * ... reads and writes ...
 * tc_conn_set_deadline(c, 0);                                       // none again
 * @endcode
 * Both limits apply; the earlier wins. Calls that need not wait (data already
 * buffered, room in the socket) still succeed after the deadline.
 * @param conn        The channel.
 * @param deadline_ns Absolute CLOCK_MONOTONIC time in nanoseconds, as
 *                    tc_monotonic_ns() counts; 0 removes the deadline.
 * @return 0, or -EINVAL for NULL or a negative deadline.
 */
TC_API int tc_conn_set_deadline(tc_conn *conn, int64_t deadline_ns);

/**
 * @brief Choose the sizes of the channel's read and write buffers.
 *
 * The read buffer size is how much one receive asks the kernel for (it grows
 * past it only to hold one whole line or frame); the write buffer size is how
 * much tc_conn_write() and tc_conn_printf() collect before sending. Buffers
 * already holding data keep their size until they are empty.
 * @param conn       The channel.
 * @param read_size  Bytes, 1 to 64 MiB; 0 = the default, 16 KiB.
 * @param write_size Bytes, 1 to 64 MiB; 0 = the default, 16 KiB.
 * @return 0, or -EINVAL for NULL or a size over 64 MiB.
 */
TC_API int tc_conn_set_buffer_sizes(tc_conn *conn, size_t read_size, size_t write_size);

/**
 * @brief Turn Nagle's algorithm off (TCP_NODELAY on) or back on.
 * @param conn The channel.
 * @param on   Non-zero: send small writes at once (TCP_NODELAY); 0: coalesce.
 * @return 0, or -EINVAL for NULL, -EOPNOTSUPP (or another negated errno
 *         value) for a socket that is not TCP, such as a unix socket.
 */
TC_API int tc_conn_set_nodelay(tc_conn *conn, int on);

/**
 * @brief Turn TCP keepalive probes on or off.
 * @param conn   The channel.
 * @param on     Non-zero: SO_KEEPALIVE on; 0: off.
 * @param idle_s When on and > 0: seconds of silence before the first probe
 *               (TCP_KEEPIDLE), also used as the interval between probes
 *               (TCP_KEEPINTVL); 0 keeps the system's defaults (two hours).
 * @return 0, or -EINVAL for NULL or a negative @p idle_s, or a negated errno
 *         value from setsockopt (a unix socket gives -EOPNOTSUPP for idle_s).
 */
TC_API int tc_conn_set_keepalive(tc_conn *conn, int on, int idle_s);

/**
 * @brief Set the framing used by tc_conn_read_frame() and tc_conn_write_frame().
 *
 * A server channel starts with @ref tc_server_config::codec, a dialled one
 * with @ref tc_dial_config::codec (raw by default). Change it only between
 * frames.
 * @param conn  The channel.
 * @param codec The codec (copied), or NULL for raw with the default maximum.
 * @return 0, or -EINVAL for NULL @p conn or an invalid codec (see
 *         tc_codec_validate()), or -ENOMEM (the channel's first codec of its
 *         own is allocated; the codec is then unchanged).
 */
TC_API int tc_conn_set_codec(tc_conn *conn, const tc_codec *codec);

/**
 * @brief The channel's codec.
 * @param conn The channel.
 * @return A pointer valid while the channel lives (until the next
 *         tc_conn_set_codec()); NULL for NULL.
 */
TC_API const tc_codec *tc_conn_codec(const tc_conn *conn);

/**
 * @brief Read what is available, up to @p n bytes, waiting for at least one.
 *
 * Buffered bytes are returned first (without waiting); otherwise one receive
 * is made. After a framed read answered TC_EPARTIAL, this returns the bytes
 * of the incomplete last line or frame, then TC_EOF.
 * @param conn The channel.
 * @param buf  Destination.
 * @param n    Its size; 0 returns 0 at once.
 * @return The number of bytes read (> 0), or TC_EOF when the peer closed its
 *         side and nothing is buffered, -ETIMEDOUT (nothing consumed),
 *         TC_ESHUTDOWN (the server's drain began while the call waited, in
 *         inline and forking modes: see "Reads and a shutdown" in
 *         @ref channels; nothing consumed),
 *         -ECONNRESET or another negated errno value, the code that broke
 *         the read side earlier (see "Broken channels" in @ref channels),
 *         -ENOTSUP in TC_MODE_EVENT (the loop reads for the handler),
 *         -EINVAL for NULL arguments.
 */
TC_API ssize_t tc_conn_read(tc_conn *conn, void *buf, size_t n);

/**
 * @brief Read exactly @p n bytes, waiting as long as needed.
 *
 * On -ETIMEDOUT and TC_ESHUTDOWN nothing is consumed: the bytes that did
 * arrive are kept in the read buffer for the next read call, and the
 * channel stays usable.
 * @param conn The channel.
 * @param buf  Destination, @p n bytes.
 * @param n    How many; 0 returns 0 at once.
 * @return @p n; TC_EOF if the stream ended before any byte; TC_EPARTIAL if it
 *         ended after some but fewer than @p n (the read side is then
 *         broken); -ETIMEDOUT; TC_ESHUTDOWN (the server's drain began while
 *         the call waited: see tc_conn_read()); -ECONNRESET or another negated errno value;
 *         -ENOMEM if the bytes of a timed-out call could not be kept;
 *         -ENOTSUP in TC_MODE_EVENT (the loop reads for the handler; @p n 0
 *         still returns 0); -EINVAL for NULL arguments.
 */
TC_API ssize_t tc_conn_read_exact(tc_conn *conn, void *buf, size_t n);

/**
 * @brief Read up to and including a delimiter; return a view of the bytes before it.
 *
 * The view (@p *ptr, @p *len) excludes the delimiter, which follows it in the
 * buffer; it is valid until the next read call on the channel. The limit is
 * checked as bytes arrive: as soon as more than @p max bytes are buffered
 * with no delimiter that could end a line of at most @p max bytes, the call
 * fails, without waiting for the delimiter and without buffering more than
 * @p max + @p dlen bytes.
 * @code
 * const void *p; size_t n;
 * while (tc_conn_read_until(c, "\r\n", 2, 8192, &p, &n) == 0)
 *     handle_line(p, n);
 * @endcode
 * @param conn  The channel.
 * @param delim The delimiter.
 * @param dlen  Its length, 1 to TC_CODEC_DELIM_MAX.
 * @param max   Longest accepted content (delimiter excluded); 0 = 1 MiB.
 * @param[out] ptr Receives the start of the view.
 * @param[out] len Receives its length.
 * @return 0; TC_EOF when the stream ended at a line boundary; TC_EPARTIAL
 *         when it ended inside a line (nothing consumed: the unterminated
 *         tail stays buffered, for tc_conn_read() or tc_conn_peek(); this
 *         call answers TC_EPARTIAL again until the tail is taken, then
 *         TC_EOF); TC_ETOOBIG over @p max; -ETIMEDOUT
 *         (nothing consumed); TC_ESHUTDOWN (the server's drain began while
 *         the call waited: see tc_conn_read(); nothing consumed); -ENOMEM;
 *         -ECONNRESET or another negated errno
 *         value; -ENOTSUP in TC_MODE_EVENT (the loop reads for the handler);
 *         -EINVAL for NULL arguments, @p dlen out of range or @p max over
 *         TC_CODEC_MAX_FRAME_LIMIT.
 * @par Ownership
 * The view points into the channel's buffer; the channel owns it.
 */
TC_API int tc_conn_read_until(tc_conn *conn, const void *delim, size_t dlen, size_t max,
                              const void **ptr, size_t *len);

/**
 * @brief Read one "\n"-terminated line: tc_conn_read_until() with "\n".
 *
 * The view excludes the "\n" (a "\r" before it is kept) and is not
 * NUL-terminated; it is valid until the next read call on the channel.
 * @param conn The channel.
 * @param max  Longest accepted line, "\n" excluded; 0 = 1 MiB.
 * @param[out] line Receives the start of the line.
 * @param[out] len  Receives its length.
 * @return As tc_conn_read_until(): 0; TC_EOF, TC_EPARTIAL (the last
 *         line had no "\n": it stays readable, like the line Python's
 *         readline() returns; see tc_conn_read_until()), TC_ETOOBIG,
 *         -ETIMEDOUT, TC_ESHUTDOWN, -ENOMEM, -ECONNRESET or another negated
 *         errno value;
 *         -ENOTSUP in TC_MODE_EVENT; -EINVAL for NULL arguments or @p max
 *         over TC_CODEC_MAX_FRAME_LIMIT.
 * @par Ownership
 * The view points into the channel's buffer; the channel owns it.
 */
TC_API int tc_conn_read_line(tc_conn *conn, size_t max, const char **line, size_t *len);

/**
 * @brief Read one frame with the channel's codec; return a view of its payload.
 *
 * Raw codec: whatever is buffered or arrives with one receive, up to the
 * maximum. Delimited: the payload without the delimiter. Length-prefixed: the
 * payload after the prefix (a prefix over the maximum fails at once). Custom:
 * the whole frame. The view is valid until the next read call on the channel.
 * @code
 * const void *msg; size_t n;
 * while ((rc = tc_conn_read_frame(c, &msg, &n)) == 0)
 *     if ((rc = tc_conn_write_frame(c, msg, n)) < 0) break;   // echo
 * @endcode
 * @param conn The channel.
 * @param[out] msg Receives the start of the payload (valid even for length 0).
 * @param[out] len Receives its length.
 * @return 0; TC_EOF at a clean end of stream between frames; TC_EPARTIAL
 *         when the stream ended inside a frame (nothing consumed: the bytes
 *         of the incomplete frame, framing included, stay readable by
 *         tc_conn_read() and tc_conn_peek(); this call answers TC_EPARTIAL
 *         until they are taken, then TC_EOF); TC_ETOOBIG for a frame over
 *         the maximum; TC_EBADFRAME (or a custom scan's code) for malformed
 *         bytes; -ETIMEDOUT (nothing consumed); TC_ESHUTDOWN (the server's
 *         drain began while the call waited: see tc_conn_read(); nothing
 *         consumed); -ENOMEM; -ECONNRESET or another negated errno value;
 *         -ENOTSUP in TC_MODE_EVENT (the loop reads for the handler: see
 *         tc_handler::on_message); -EINVAL for NULL arguments. After any
 *         failure but -ETIMEDOUT, TC_ESHUTDOWN, TC_EPARTIAL, -ENOMEM,
 *         -ENOTSUP and -EINVAL the read side is broken.
 * @par Ownership
 * The view points into the channel's buffer; the channel owns it.
 */
TC_API int tc_conn_read_frame(tc_conn *conn, const void **msg, size_t *len);

/**
 * @brief Look at buffered input without consuming it, waiting until at least
 *        @p n bytes are buffered.
 * @param conn The channel.
 * @param n    Bytes wanted, at most the larger of the read buffer size and
 *             the codec's maximum frame; 0 returns what is buffered at once.
 * @param[out] ptr Receives the start of the buffered bytes.
 * @param[out] len Receives how many are buffered (>= @p n on success).
 * @return 0; TC_EOF if the stream ended with fewer than @p n bytes buffered
 *         (*@p len then tells how many, still readable); TC_ETOOBIG for @p n
 *         over the bound; -ETIMEDOUT; TC_ESHUTDOWN (the server's drain began
 *         while the call waited: see tc_conn_read()); -ENOMEM; a socket
 *         error; -ENOTSUP in TC_MODE_EVENT (the loop reads for the handler);
 *         -EINVAL for NULL arguments.
 * @par Ownership
 * The view points into the channel's buffer, valid until the next read call.
 */
TC_API int tc_conn_peek(tc_conn *conn, size_t n, const void **ptr, size_t *len);

/**
 * @brief Append bytes to the write buffer; send when it is full.
 *
 * Nothing is guaranteed to be sent until tc_conn_flush() (or an unbuffered
 * write, which flushes first). A write at least as large as the buffer is
 * sent directly after the buffered bytes.
 * @param conn The channel.
 * @param buf  The bytes.
 * @param n    How many.
 * @return @p n; -ETIMEDOUT (see "Timeouts and deadlines" in @ref channels);
 *         -EPIPE, -ECONNRESET or another negated errno value; -ENOMEM;
 *         -EINVAL for NULL arguments. On failure, tc_conn_last_sent() tells
 *         how many bytes went out (only a write sent directly sends any).
 */
TC_API ssize_t tc_conn_write(tc_conn *conn, const void *buf, size_t n);

/**
 * @brief Format into the write buffer, like fprintf().
 * @param conn The channel.
 * @param fmt  A printf format.
 * @param ...  Its arguments.
 * @return The number of bytes formatted (all taken: appended, or sent at
 *         once when more than the buffer holds), or the codes of
 *         tc_conn_write(), or -EINVAL for NULL arguments or a format error.
 *         On failure, tc_conn_last_sent() tells how many bytes went out.
 */
TC_API int tc_conn_printf(tc_conn *conn, const char *fmt, ...) TC_PRINTF_LIKE(2, 3);

/**
 * @brief Send everything in the write buffer.
 * @param conn The channel.
 * @return 0 (it takes none of the caller's bytes); -ETIMEDOUT (the unsent
 *         rest stays buffered: flush again later); -EPIPE, -ECONNRESET or
 *         another negated errno value; -EINVAL for NULL.
 */
TC_API int tc_conn_flush(tc_conn *conn);

/**
 * @brief Send all @p n bytes, unbuffered, waiting as long as the socket needs.
 *
 * Sends what the write buffer holds first, then the bytes, retrying partial
 * writes and signals until everything is sent or the call's deadline passes.
 * @param conn The channel.
 * @param buf  The bytes.
 * @param n    How many.
 * @return @p n (all of them sent; the buffered bytes sent before them are
 *         not counted), or -ETIMEDOUT, -EPIPE, -ECONNRESET or another
 *         negated errno value (some bytes may have been sent: see "Timeouts
 *         and deadlines" in @ref channels), -EINVAL for NULL arguments.
 *         On failure, tc_conn_last_sent() tells how many bytes went out.
 */
TC_API ssize_t tc_conn_send_all(tc_conn *conn, const void *buf, size_t n);

/**
 * @brief Send a vector of buffers completely, unbuffered (like header + payload).
 *
 * The write buffer's contents go first, in the same sendmsg() calls. Partial
 * sends advance through the vector exactly; at most IOV_MAX entries are
 * passed to one system call, so any @p iovcnt works.
 * @param conn   The channel.
 * @param iov    The buffers (not modified).
 * @param iovcnt Their number, >= 0.
 * @return The vector's total length, all of it sent (the buffered bytes sent
 *         before it are not counted); -ETIMEDOUT, -EPIPE, -ECONNRESET or
 *         another negated errno value; -EINVAL for NULL arguments, a
 *         negative count or a total over SSIZE_MAX. On failure,
 *         tc_conn_last_sent() tells how many bytes went out (counted through
 *         the vector in order).
 */
TC_API ssize_t tc_conn_writev(tc_conn *conn, const struct iovec *iov, int iovcnt);

/**
 * @brief Send @p count bytes of a file, starting at @p offset, with sendfile(2).
 *
 * The write buffer is flushed first. The file's own offset is not changed.
 * Like every send, the whole call ends at the channel's deadline (the
 * timeout counts from its start), however steadily the peer reads: a
 * transfer still going then fails with -ETIMEDOUT.
 * @param conn    The channel.
 * @param file_fd An open, readable regular file.
 * @param offset  Where to start in the file, >= 0.
 * @param count   How many bytes.
 * @return The number of bytes sent: @p count, or fewer if the file ends
 *         first; -ETIMEDOUT, -EPIPE, -ECONNRESET, -EBADF, or another negated
 *         errno value; -ENOTSUP in TC_MODE_EVENT (it would block the loop);
 *         -EINVAL for NULL, a negative offset or a negative @p file_fd. On
 *         failure, tc_conn_last_sent() tells how many bytes went out (of the
 *         file, from @p offset on).
 */
TC_API ssize_t tc_conn_sendfile(tc_conn *conn, int file_fd, off_t offset, size_t count);

/**
 * @brief Encode one frame with the channel's codec, send it and flush.
 *
 * Whatever the write buffer holds, the codec's header, the payload and its
 * trailer go out in one vectored write (see tc_codec_encode()).
 * @param conn The channel.
 * @param buf  The payload.
 * @param len  Its length.
 * @return @p len, the payload's length (the codec's header and trailer, and
 *         the buffered bytes sent before them, are not counted); TC_ETOOBIG or
 *         TC_EBADFRAME from the codec (nothing sent); the codes of
 *         tc_conn_writev(). On failure, tc_conn_last_sent() tells how many
 *         bytes went out (of the payload: the header's do not count).
 */
TC_API ssize_t tc_conn_write_frame(tc_conn *conn, const void *buf, size_t len);

/**
 * @brief Send one message: the same as tc_conn_write_frame().
 *
 * In event mode, from the channel's own loop (inside its callbacks), the
 * frame goes out at once as far as the socket takes it and the rest is
 * queued; the call never blocks. Above the server's
 * tc_server_config::send_high_water of queued output (1 MiB by default) the
 * loop stops reading the channel until it drains below send_low_water
 * (256 KiB) (backpressure).
 * @param conn The channel.
 * @param buf  The payload.
 * @param len  Its length.
 * @return As tc_conn_write_frame(): @p len, or a negative code (on failure,
 *         tc_conn_last_sent() tells how many bytes went out); in event
 *         mode, from a thread other than the channel's loop, -EAGAIN while
 *         send_high_water (1 MiB by default) or more is queued for the
 *         channel (nothing of this call is
 *         queued then: try again once the peer has read).
 * @par Thread safety
 * In event mode this (and tc_conn_write_frame(), tc_conn_writev(),
 * tc_conn_send_all()) may be called from any thread: the bytes are copied
 * into the loop's mailbox and sent by the loop, in order with the loop's own
 * sends, and the call returns at once with @p len. The queue is bounded: a
 * send is refused with -EAGAIN while the bytes waiting for the channel (in
 * the mailbox and in its output queue) reach send_high_water; a send to a channel with
 * nothing queued is always taken, whatever its size. It is allowed until the
 * channel's on_close returns: stop using the pointer then (for example, take
 * a lock in on_close that the sending thread also holds). Buffered writes
 * (tc_conn_write(), tc_conn_printf(), tc_conn_flush()) stay loop-only. In
 * the other modes a channel belongs to its handler's thread.
 */
TC_API ssize_t tc_conn_send(tc_conn *conn, const void *buf, size_t len);

/**
 * @brief How many of the caller's bytes the last write call on the channel
 *        took, valid after a success and after a failure.
 *
 * Every write call sets it: tc_conn_send(), tc_conn_write_frame(),
 * tc_conn_send_all(), tc_conn_writev(), tc_conn_sendfile(), tc_conn_write(),
 * tc_conn_printf(), and tc_conn_flush() and tc_conn_shutdown_write(), which
 * take none of the caller's bytes (0). Taken means handed to the kernel, or
 * queued to go out after what is already queued: appended to the write
 * buffer by tc_conn_write() or tc_conn_printf(), or accepted by an event
 * loop's queue. So after a success it equals the call's return value (for
 * tc_conn_write_frame() the payload's bytes, never the codec's framing, nor
 * buffered bytes sent before the caller's). After a failure (-ETIMEDOUT,
 * -EPIPE, ...) it tells how many of the call's bytes went out before it: a
 * prefix of them, in order, that the peer receives unless the connection
 * breaks, so that a caller can resume after it on a new connection, or log
 * it. A call that fails before sending anything (invalid arguments, a
 * broken write side, a codec's refusal) leaves 0. It costs nothing: no
 * system call, one number the send paths keep.
 * @code
 * ssize_t r = tc_conn_sendfile(c, fd, off, len);
 * if (r < 0)
 *     fprintf(stderr, "%zd of %zu bytes sent: %s\n", tc_conn_last_sent(c), len,
 *             tc_strerror((int)r));
 * @endcode
 * @param conn The channel.
 * @return The count (>= 0), or -EINVAL for NULL.
 * @par Thread safety
 * Ask from the thread that made the call, before its next write call. In
 * event mode, where sends may come from any thread, each call overwrites the
 * count (safely): it is meaningful when one thread sends on the channel.
 */
TC_API ssize_t tc_conn_last_sent(const tc_conn *conn);

/** @brief Event and pool modes: above this much queued output a connection is not read,
 *         sends from other threads are refused, and tc_handler::on_drain is armed (1 MiB):
 *         the default of tc_server_config::send_high_water. */
#define TC_SEND_HIGH_WATER ((size_t)1024 * 1024)
/** @brief Event and pool modes: below this much queued output, after the high-water mark,
 *         the connection is read again and tc_handler::on_drain runs (256 KiB): the
 *         default of tc_server_config::send_low_water. */
#define TC_SEND_LOW_WATER ((size_t)256 * 1024)

/**
 * @brief The bytes queued for sending on the channel and not yet taken by
 *        the kernel.
 *
 * In the blocking modes (and on a dialled channel) that is what
 * tc_conn_write() buffered and no flush has sent yet. In event and pool
 * modes it is also what the connection's sends queued because the socket
 * was full, and what other threads sent that the loop has not taken yet:
 * the figure to compare with the server's send_high_water
 * (TC_SEND_HIGH_WATER by default), with tc_handler::on_drain telling when it
 * fell below send_low_water again.
 * @param conn The channel.
 * @return The count, or 0 for NULL.
 * @par Thread safety
 * From the thread that runs the connection's handler, any time. In event
 * and pool modes also from any other thread, where the answer is the
 * count as the loop last saw it (with the other threads' sends since).
 */
TC_API size_t tc_conn_pending(const tc_conn *conn);

/**
 * @brief Half-close: flush, then send end of stream (shutdown SHUT_WR) and
 *        keep reading.
 *
 * The peer reads end of stream; replies can still be read from this side.
 * Later write calls fail with -EPIPE.
 * @param conn The channel.
 * @return 0, or a flush error, or a negated errno value from shutdown(),
 *         -EINVAL for NULL.
 */
TC_API int tc_conn_shutdown_write(tc_conn *conn);

/**
 * @brief Event mode (and pool mode, message style): arm the channel's timer,
 *        which calls the handler's on_timer in the channel's loop thread.
 *
 * Each channel has one timer; arming it again moves it. Timers live in a
 * heap per loop (O(log n) to arm, move or cancel) and fire in deadline order,
 * never early.
 * Pool mode, message style: on_timer runs in the loop thread too, never
 * while a worker runs on_message for the channel (a firing that comes
 * meanwhile waits for the message to end). Armed from on_message, in the
 * worker, the timer takes effect when the worker hands the channel back,
 * counting from the call.
 * @param conn        A channel run by an event loop, from one of its callbacks.
 * @param delay_ms    First firing, in ms from now; 0 cancels the timer.
 * @param interval_ms Period after that, in ms; 0 = fire once.
 * @return 0, or -ENOTSUP outside event mode and pool mode's message style,
 *         -EPERM from a thread other than the channel's loop (and, in pool
 *         mode, the worker running its on_message), TC_EBADCONFIG if the
 *         handler has no on_timer, -EINVAL for NULL or negative times, -ENOMEM.
 * @par Thread safety
 * Only from the loop thread that runs the channel (inside its callbacks), or
 * in pool mode from on_message.
 */
TC_API int tc_conn_set_timer(tc_conn *conn, int delay_ms, int interval_ms);

/** @brief Configuration of tc_dial(). Zero-initialise, or use TC_DIAL_CONFIG_INIT. */
typedef struct tc_dial_config {
    int connect_timeout_ms;   /**< give up connecting after this long; 0 = 30000 ms */
    int timeout_ms;           /**< per-operation timeout of the channel; 0 = none */
    tc_codec codec;           /**< framing of the channel; zero = raw, 1 MiB maximum */
    size_t read_buffer_size;  /**< see tc_conn_set_buffer_sizes(); 0 = 16 KiB */
    size_t write_buffer_size; /**< see tc_conn_set_buffer_sizes(); 0 = 16 KiB */
    /** A transport to run the channel over (transport.h; for TLS what
     *  tc_tls_client_create() returns), NULL = plain TCP. tc_dial() then
     *  runs its handshake, within its timeout, before it returns; the host
     *  part of the address goes to the transport (TLS: SNI and the name
     *  check). Not copied: it must outlive the channel. */
    struct tc_transport *transport;
} tc_dial_config;

/** @brief Initialiser for tc_dial_config: every field at its default. */
#define TC_DIAL_CONFIG_INIT {0, 0, TC_CODEC_INIT, 0, 0, 0}

/**
 * @brief Set every field of @p cfg to its default: a copy of TC_DIAL_CONFIG_INIT.
 * @param cfg The config; NULL does nothing.
 * @par Thread safety
 * Safe from any thread.
 */
TC_API void tc_dial_config_init(tc_dial_config *cfg);

/**
 * @brief Connect to a server and return a client channel.
 *
 * Resolves @p address (same forms as tc_addr_parse()), tries each address
 * the name resolves to in turn (IPv6 and IPv4) until one connects, each
 * within the connect timeout.
 *
 * A datagram address (`udp:HOST:PORT`, `unixgram:PATH`) gives a connected
 * datagram socket (a unix one is bound to an abstract name the kernel picks,
 * so that replies reach it): each tc_conn_send() or tc_conn_send_all() is
 * one datagram (what tc_conn_write() buffered goes out as one datagram at
 * the flush), tc_conn_read() and tc_conn_read_frame() return one whole
 * datagram each (tc_conn_read() returns 0 for an empty one, which frame
 * reads skip), a read never spans two datagrams (one that would, such as
 * tc_conn_read_exact() past the end of the current datagram, fails with
 * TC_EPARTIAL), a datagram longer than the codec's max_frame (default
 * TC_DGRAM_DEFAULT_MAX_FRAME) is dropped, never delivered cut, and every
 * wait is bounded by the channel's timeout. The codec must be raw. See
 * docs/datagrams.md.
 * @code
 * tc_conn *c;
 * int rc = tc_dial(&c, "127.0.0.1:7000", NULL);
 * if (rc < 0) { fprintf(stderr, "dial: %s\n", tc_strerror(rc)); return 1; }
 * tc_conn_send_all(c, "hi\n", 3);
 * tc_conn_close(c);
 * @endcode
 * @param[out] out  Receives the channel; written only on success.
 * @param address   Where to connect.
 * @param opts      The configuration, or NULL for the defaults.
 * @return 0, or TC_EBADADDR / -ENAMETOOLONG for a malformed address,
 *         TC_ENORESOLVE for a name that does not resolve, -ECONNREFUSED,
 *         -ETIMEDOUT (connect timeout), -ENETUNREACH / -EHOSTUNREACH,
 *         -ENOMEM, -EMFILE or another negated errno value, -EINVAL for NULL
 *         or an invalid configuration (codec, buffer sizes; a codec that
 *         is not raw, or a max_frame over TC_DGRAM_MAX_FRAME, for a datagram
 *         address). An invalid
 *         configuration and an address that does not parse or resolve are
 *         described in tc_last_error_detail().
 * @par Ownership
 * The caller owns the channel and releases it with tc_conn_close().
 */
TC_API int tc_dial(tc_conn **out, const char *address, const tc_dial_config *opts);

/**
 * @brief Close a client channel from tc_dial() and free it.
 *
 * What the write buffer still holds is flushed first, best effort, within
 * the channel's timeout and deadline. Server-side channels are closed by the library after the handler's finish
 * and must not be passed here (the call is then ignored). NULL does nothing.
 * @param conn The channel.
 */
TC_API void tc_conn_close(tc_conn *conn);

#ifdef __cplusplus
}
#endif
#endif /* TCPCHAN_CONN_H */
