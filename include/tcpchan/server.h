/* SPDX-License-Identifier: MIT */
/**
 * @file server.h
 * @brief tc_server: bind, listen, accept and dispatch connections to a
 *        request handler, with Python socketserver's lifecycle and hooks.
 *
 * @code
 * static int echo(tc_conn *c, void *ctx) {
 *     char buf[4096];
 *     ssize_t n;
 *     (void)ctx;
 *     while ((n = tc_conn_read(c, buf, sizeof buf)) > 0)
 *         if ((n = tc_conn_send_all(c, buf, (size_t)n)) < 0) return (int)n;
 *     return n == TC_EOF ? 0 : (int)n;
 * }
 * int main(void) {
 *     tc_server_config cfg = TC_SERVER_CONFIG_INIT;
 *     tc_handler h = TC_HANDLER_INIT;
 *     tc_server *srv;
 *     cfg.listen = "127.0.0.1:7000";
 *     h.handle = echo;
 *     if (tc_server_create(&srv, &cfg, &h) < 0) return 1;
 *     tc_server_serve_forever(srv);   // until tc_server_shutdown()
 *     tc_server_destroy(srv);
 *     return 0;
 * }
 * @endcode
 */
#ifndef TCPCHAN_SERVER_H
#define TCPCHAN_SERVER_H

#include "addr.h"
#include "codec.h"
#include "common.h"
#include "conn.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief How connections are run: socketserver's mixins, chosen by configuration.
 *
 * The same handler runs unchanged in every mode that is available; see
 * docs/modes.md for how to choose.
 *
 * @par Forking
 * Each connection runs in a child process made with fork(), so:
 * - the handler runs in the child: changes it makes to memory (counters,
 *   caches, tc_conn_set_data()) are never seen by the parent or by other
 *   connections; share state through files, pipes or shared memory. In the
 *   child, tc_server_shutdown() and tc_server_shutting_down() act on the
 *   child's copy of the server and have no effect on the parent: a handler
 *   learns of a shutdown from a read that has to wait (it watches the
 *   parent's stop signal and returns TC_ESHUTDOWN), or, busy elsewhere, when
 *   the drain shuts its socket down (end of stream).
 * - fork() copies only the serving thread. Do not use this mode while threads
 *   of the application may hold locks (their own mutexes, or those of
 *   libraries that are not fork-safe) at the moment of a fork: the child
 *   would inherit them locked forever.
 * - the child closes the server's descriptors (the listener, its wake-up and
 *   mode descriptors, the other connections' sockets) but inherits every other
 *   descriptor of the process, close-on-exec or not.
 * - the child ends with _exit() after finish: atexit handlers do not run and
 *   stdio buffers are not flushed, so a handler that writes with stdio should
 *   fflush() itself (stderr is unbuffered).
 * - children are watched with pidfds (or, where pidfd_open() is missing, a
 *   pipe each) and reaped with waitpid() on their own pids only: the library
 *   installs no SIGCHLD handler and never reaps a child it did not fork.
 *   A child killed by a signal or exiting with a non-zero status is reported
 *   to handle_error as TC_ECHILD with a NULL channel; the signal number or
 *   status is in the message passed to the log hook, not in the code.
 *   Errors a handler returns are reported in the child (its handle_error and
 *   log hooks run there), so the parent's tc_stats::handler_errors counts
 *   only TC_ECHILD; accepted, active and peak_active count children exactly.
 * - max_conns defaults to 40 (ForkingMixIn.max_children), not TC_DEFAULT_MAX_CONNS.
 *
 * @par Pool
 * An event loop (the one of TC_MODE_EVENT, in the thread that calls
 * tc_server_serve_forever()) holds every connection, and
 * @ref tc_server_config::workers threads, started by tc_server_create() and
 * joined by tc_server_destroy(), run the handlers that may block:
 * - **Message style**: setup, on_open, on_close, finish and on_timer run in
 *   the loop thread, on_message in a worker. An idle connection costs no
 *   thread: it waits in an epoll set that the idle workers wait on
 *   themselves, and the worker that takes a ready connection receives and
 *   runs on_message on each complete frame; a connection is with one worker
 *   at a time, so its messages are handled in order. The worker's replies
 *   go straight to the socket (never blocking: what the socket does not
 *   take is queued, and the loop sends it); the channel cannot be read
 *   there (-ENOTSUP), as in event mode. With every worker busy, ready
 *   connections wait, unread, in the kernel (backpressure: nothing is
 *   dropped). Above send_high_water of queued output (1 MiB by default) a
 *   connection is not read until it drains, as in event mode.
 * - **Stream style**: a connection waits on the loop, costing no thread,
 *   until its first bytes arrive; then a worker takes it for the rest of its
 *   life (setup, handle, finish, with blocking reads, as in threading mode).
 *   Connections with something to say wait for a worker in a queue of
 *   @ref tc_server_config::queue_len places; when it is full the loop stops
 *   reading them, and they wait, unread.
 *
 * Connections are not bounded by the workers: @ref tc_server_config::max_conns
 * is the limit, as in threading mode. The idle clock starts at the accept:
 * a message-style connection that sends nothing is closed
 * @ref tc_server_config::idle_timeout_ms after it connected (on_close gets
 * -ETIMEDOUT); a stream-style one that sends nothing is closed after
 * @ref tc_server_config::conn_timeout_ms, without setup or any other
 * callback (-ETIMEDOUT reaches handle_error with the connection). A
 * connection whose message a worker is running is never timed out: its
 * idle clock starts again when the handler returns.
 * tc_server_handle_request() is not available (-ENOTSUP): the loop accepts.
 * At shutdown the loop ends idle connections at once, lets messages in
 * flight finish and their replies go out, and at the drain deadline shuts
 * down the sockets of connections still busy in a worker (their handler's
 * sends then fail); serve_forever returns when their handlers have
 * returned, and stream sessions get the drain of the blocking modes.
 *
 * @par Datagram servers
 * A request is one datagram (see @ref tc_server_config::listen): inline runs
 * them one at a time in the serving thread (UDPServer); threading starts a
 * thread per datagram (ThreadingUDPServer: about 16 µs of thread creation
 * and exit per datagram, several times the work of an echo, so it suits
 * handlers that block for long; pool is the sane choice for blocking ones);
 * forking a child per datagram, at most max_conns (40) at once; pool hands
 * each datagram to a worker from the serving thread's receive loop (at most
 * queue_len waiting: then the loop stops reading, and the socket's buffer
 * holds the rest); event runs @ref tc_server_config::workers loops that all
 * read the one socket, each taking datagrams in batches (recvmmsg), running
 * on_message in the loop thread and sending the batch's replies with one
 * sendmmsg. docs/datagrams.md has the details and the measurements.
 */
typedef enum tc_mode {
    TC_MODE_INLINE = 0, /**< one connection at a time, in the serving thread (TCPServer); the default */
    TC_MODE_THREADING,  /**< a thread per connection (ThreadingMixIn) */
    TC_MODE_FORKING,    /**< a process per connection (ForkingMixIn); see the notes above */
    TC_MODE_POOL,       /**< an event loop holding connections, handlers on worker threads */
    TC_MODE_EVENT       /**< epoll event loops running message-style handlers */
} tc_mode;

/**
 * @brief The name of a mode ("inline", "threading", "forking", "pool", "event").
 * @param mode The mode.
 * @return A static string; "unknown" for values outside the enum.
 */
TC_API const char *tc_mode_name(tc_mode mode);

/**
 * @brief Parse a mode name as tc_mode_name() writes it.
 * @param name   The name.
 * @param[out] out Receives the mode; written only on success.
 * @return 0, or TC_EBADCONFIG for an unknown name, -EINVAL for NULL.
 */
TC_API int tc_mode_parse(const char *name, tc_mode *out);

/**
 * @brief Whether this build of the library implements a mode.
 * @param mode The mode.
 * @return 1 if available, 0 if tc_server_create() would fail with TC_ENOMODE.
 */
TC_API int tc_mode_available(tc_mode mode);

/**
 * @brief What event mode's loops wait with (@ref tc_server_config::backend).
 *
 * Both serve the same: every callback, limit, timeout and flow-control rule
 * of TC_MODE_EVENT behaves alike, and the test suite runs every event-mode
 * test on each. io_uring (Linux 6.0 or later) takes a connection's bytes
 * with its completion (one multishot receive per connection into buffers
 * the loop shares, so an idle connection holds no receive buffer), accepts
 * with requests on the ring (@ref tc_server_config::ring_accept), and
 * submits the loop's requests with its wait, saving a system call per
 * receive, per accept and per wait; epoll works everywhere. Where io_uring is refused
 * (an older kernel, `kernel.io_uring_disabled`, a seccomp filter such as
 * Docker's default profile, a memory limit), tc_server_create() falls back
 * to epoll and says so once through the log hook (TC_LOG_WARN when
 * TC_BACKEND_IO_URING was asked for, TC_LOG_INFO for TC_BACKEND_AUTO);
 * tc_server_backend() tells which one serves. Other modes (pool included,
 * whose workers wait on an epoll set themselves) and datagram servers
 * ignore the choice.
 *
 * The default is epoll for now: io_uring is new here, and becomes the
 * default (through TC_BACKEND_AUTO) once it has served a release.
 */
typedef enum tc_backend {
    TC_BACKEND_DEFAULT = 0, /**< the library's choice: TC_BACKEND_EPOLL in this release */
    TC_BACKEND_EPOLL,       /**< epoll */
    TC_BACKEND_IO_URING,    /**< io_uring where the kernel offers it, else epoll (logged) */
    TC_BACKEND_AUTO         /**< the same as TC_BACKEND_IO_URING, logged at TC_LOG_INFO only */
} tc_backend;

/** @brief Severity of a message passed to the log hook. */
typedef enum tc_log_level {
    TC_LOG_ERROR = 0, /**< something failed */
    TC_LOG_WARN,      /**< something is off but serving goes on */
    TC_LOG_INFO,      /**< notable events */
    TC_LOG_DEBUG      /**< detail */
} tc_log_level;

/**
 * @brief Server-level hooks, BaseServer's overridable methods. Any may be NULL.
 *
 * All hooks receive @ref tc_server_hooks::ctx as their last argument.
 */
typedef struct tc_server_hooks {
    /**
     * @brief Accept filter (verify_request): called with the peer address of
     *        each accepted connection, in the serving thread, before any handler.
     * @return 0 to serve the connection; a negative value to refuse it: it is
     *         closed at once and the handler never sees it.
     */
    int (*verify_request)(tc_server *srv, const tc_addr *peer, void *ctx);
    /**
     * @brief Called when a handler callback returns a negative code
     *        (handle_error), in the thread that ran the handler.
     *
     * @p conn is the failing channel, still open; it is NULL when the error is
     * not tied to a live channel (an accept failure, a forked child that died).
     * In forking mode a handler's errors are reported in the child process,
     * and TC_ECHILD in the parent by the thread that reaps the child: the
     * serving thread, the one calling tc_server_destroy(), or, after a destroy
     * without block_on_close, the library's reaper thread.
     * Default: the error is passed to the log hook, if any.
     */
    void (*handle_error)(tc_server *srv, tc_conn *conn, int err, void *ctx);
    /** @brief Called by tc_server_handle_request() when its timeout expires, in the calling thread. */
    void (*handle_timeout)(tc_server *srv, void *ctx);
    /**
     * @brief Called once per turn of the serve_forever loop (service_actions),
     *        in the serving thread: after each batch of accepts and at least
     *        every @ref tc_server_config::poll_interval_ms when idle.
     */
    void (*service_actions)(tc_server *srv, void *ctx);
    /**
     * @brief Receives the library's diagnostics (which config field is wrong,
     *        accept failures, unreported handler errors). Nothing is printed
     *        when it is NULL. May be called from any of the server's threads.
     */
    void (*log)(tc_server *srv, tc_log_level level, const char *msg, void *ctx);
    /** @brief User pointer passed to every hook. */
    void *ctx;
} tc_server_hooks;

/**
 * @brief A request handler: socketserver's BaseRequestHandler as callbacks,
 *        in one of two styles.
 *
 * **Stream style** (set @ref tc_handler::handle): for each accepted connection the
 * library calls setup, then handle, then finish, and closes the channel
 * itself afterwards. handle reads and writes the channel as it likes.
 *
 * **Message style** (set @ref tc_handler::on_message instead): the library reads frames
 * with the server's codec (@ref tc_server_config::codec) and calls
 * on_message once per frame; replies go out with tc_conn_send(). The order is
 * setup, on_open, on_message for each frame, on_close, finish. The loop ends
 * at a clean end of stream (on_close reason 0), when on_message returns a
 * negative code, on a read error (a frame over the codec's maximum:
 * TC_ETOOBIG; the stream ending inside a frame: TC_EPARTIAL; a socket error),
 * after @ref tc_server_config::idle_timeout_ms (or the channel's timeout) of
 * silence between messages (-ETIMEDOUT), or when a graceful shutdown drains
 * the server while the connection is idle between messages (TC_ESHUTDOWN;
 * a message being handled completes and its reply is flushed first; in
 * inline and forking modes also while it waits for the rest of a frame).
 * What the write buffer holds is flushed after each batch of messages: every
 * complete frame already buffered is handled first, and the replies go out
 * before the loop waits for more input (so a pipelining client never waits
 * for a reply held behind its next, incomplete request).
 *
 * Setting both handle and on_message, or neither, is TC_EBADCONFIG, and so
 * is on_open or on_close without on_message.
 *
 * If setup returns a negative code the connection is refused: everything else
 * is skipped and the code reaches handle_error. finish runs whenever setup
 * succeeded (or is NULL), even when handle failed. on_close runs whenever
 * on_open succeeded (or is NULL). A negative code returned by any callback
 * reaches the handle_error hook, except TC_ESHUTDOWN returned by handle (the
 * code of a read the drain ended, passed on), and so does the error that
 * ended a message loop, except a clean end of stream, a timeout between
 * messages and a drain.
 * Before closing the channel the library flushes its write buffer.
 *
 * In threading and pool mode, a handler thread that ends inside a callback
 * (pthread_exit(), or a cancellation at a blocking read, or in pool mode's
 * on_message at a cancellation point of the handler's own) still ends its
 * connection as above: the reason reported (and given to on_close) is
 * -ECANCELED, finish runs, the channel is closed, and pool mode starts a new
 * worker in place of the lost one.
 *
 * All callbacks run in the thread (or process) the mode gives the
 * connection, one at a time per connection, and receive @ref tc_handler::ctx
 * last. Pool mode, message style, is the one mode with two threads per
 * connection: on_message runs in a worker, the other callbacks in the loop
 * thread, never at the same time (see tc_mode).
 *
 * On a datagram server (see @ref tc_server_config::listen) each datagram is
 * a request of its own, as in socketserver's DatagramRequestHandler: setup,
 * then handle (its reads see that datagram and then TC_EOF; never the next
 * one) or on_open, on_message with the datagram whole (an empty one too)
 * and on_close (reason 0), then finish. tc_conn_peer() is the sender, and
 * each tc_conn_send() (or tc_conn_send_all(), tc_conn_writev()) sends one
 * datagram to it; what tc_conn_write() and tc_conn_printf() buffer goes out
 * as one datagram at tc_conn_flush() or at the end of the request. A reply
 * the socket does not take within 10 ms (its buffer full; a unix peer's
 * queue full, which is not waited for) fails with -EAGAIN and counts in
 * tc_stats::dgram_dropped; in event mode replies are sent after on_message
 * returns, in one sendmmsg per batch, so a refusal is only counted.
 * Timers and tc_conn_sendfile() are not available (-ENOTSUP).
 */
typedef struct tc_handler {
    /** @brief Prepare the connection (may be NULL). @return 0, or negative to refuse it. */
    int (*setup)(tc_conn *conn, void *ctx);
    /** @brief Stream style: serve the connection. @return 0, or a negative code reported to handle_error. */
    int (*handle)(tc_conn *conn, void *ctx);
    /** @brief Clean up (may be NULL). @return 0, or a negative code reported to handle_error. */
    int (*finish)(tc_conn *conn, void *ctx);
    /**
     * @brief Message style: the connection opens, before its first message (may be NULL).
     * @return 0, or a negative code: the connection is closed without
     *         reading (on_close is not called) and the code reaches handle_error.
     */
    int (*on_open)(tc_conn *conn, void *ctx);
    /**
     * @brief Message style: one frame arrived.
     *
     * @p msg is the frame's payload (see tc_conn_read_frame()), a view into
     * the channel's read buffer valid until this callback returns; copy what
     * must live longer. Reply with tc_conn_send() (or tc_conn_write() and
     * friends; the library flushes them before it waits for the next message).
     * Calling read functions on the channel from here ends the view.
     * @return 0 to go on, or a negative code to close the connection (the
     *         code reaches handle_error and on_close).
     */
    int (*on_message)(tc_conn *conn, const void *msg, size_t len, void *ctx);
    /**
     * @brief Message style: the connection is about to close (may be NULL).
     *        What the handler buffered has been sent (best effort) before it
     *        runs; what on_close itself writes is flushed after it returns.
     * @param reason 0 for a clean end of stream, else the code that ended
     *               the loop: TC_ETOOBIG, TC_EPARTIAL, TC_EBADFRAME,
     *               -ETIMEDOUT, TC_ESHUTDOWN, -ECONNRESET, on_message's code...
     */
    void (*on_close)(tc_conn *conn, int reason, void *ctx);
    /**
     * @brief Event mode: the connection's timer fired (see tc_conn_set_timer()); may be NULL.
     * @return 0 to go on, or a negative code to close the connection (after
     *         its queued output), which reaches handle_error and on_close.
     */
    int (*on_timer)(tc_conn *conn, void *ctx);
    /** @brief User pointer passed to every callback. */
    void *ctx;
    /**
     * @brief Event and pool modes: the connection's queued output, having
     *        passed tc_server_config::send_high_water, fell below
     *        send_low_water (TC_SEND_HIGH_WATER, TC_SEND_LOW_WATER by default);
     *        may be NULL.
     *
     * Flow control for a handler that produces more than the peer reads
     * (a relay, a broadcast, a file): send until tc_conn_pending() passes the
     * high-water mark, then wait for this callback to send more. It runs in
     * the connection's loop thread, once per crossing. The blocking modes
     * never call it (their sends wait for the peer).
     * @return 0 to go on, or a negative code to close the connection (after
     *         its queued output), which reaches handle_error and on_close.
     */
    int (*on_drain)(tc_conn *conn, void *ctx);
    /**
     * @brief Event mode: the peer ended its stream (a half-close), after
     *        every message before it was handled; may be NULL.
     *
     * Without it (or when it returns 0) the connection closes, its queued
     * output flushed, and on_close gets reason 0. A relay forwards the
     * half-close instead (tc_conn_shutdown_write() on the other side) and
     * keeps this side open for what is still to be sent to it: the
     * connection is then no longer read, and stays until tc_conn_end(), an
     * error, the idle timeout or the drain (a hang-up from the peer closes
     * it too). Not called in the other modes.
     * @return 1 to keep the connection open for sending, 0 to close it, or
     *         a negative code to close it (after its queued output), which
     *         reaches handle_error and on_close.
     */
    int (*on_eof)(tc_conn *conn, void *ctx);
} tc_handler;

/** @brief Initialiser for tc_handler: no callbacks, NULL ctx. */
#define TC_HANDLER_INIT {0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

/**
 * @brief Whether a server expects the PROXY protocol header that load
 *        balancers such as HAProxy put before a client's bytes
 *        (@ref tc_server_config::proxy_protocol).
 *
 * With a header, tc_conn_peer() is the client's address as the proxy saw it
 * and tc_conn_proxy_peer() the proxy's own. Versions 1 (text) and 2 (binary)
 * are both understood. See docs/deploy.md.
 */
typedef enum tc_proxy_mode {
    TC_PROXY_OFF = 0,  /**< no PROXY protocol (the default): the first bytes belong to the handler */
    TC_PROXY_REQUIRED, /**< every connection starts with a header from a trusted proxy, or is closed */
    TC_PROXY_OPTIONAL  /**< a header is used when there is one; connections without one are served as they are */
} tc_proxy_mode;

/** @brief Default of @ref tc_server_config::idle_timeout_ms (5 minutes). */
#define TC_DEFAULT_IDLE_TIMEOUT_MS 300000
/** @brief Default of @ref tc_server_config::conn_timeout_ms (5 minutes). */
#define TC_DEFAULT_CONN_TIMEOUT_MS 300000
/** @brief Default of @ref tc_server_config::max_conns in every mode but forking (40). */
#define TC_DEFAULT_MAX_CONNS 4096
/** @brief A datagram server's default max_frame (the codec's max_frame left
 *         0): 65507 bytes, the largest UDP payload over IPv4. */
#define TC_DGRAM_DEFAULT_MAX_FRAME 65507
/** @brief The largest max_frame a datagram server accepts (16 MiB; a unix
 *         datagram can be as large as the socket buffers allow). */
#define TC_DGRAM_MAX_FRAME ((size_t)16 * 1024 * 1024)

/**
 * @brief Server configuration. Every field's zero value means its default,
 *        so `= {0}`, TC_SERVER_CONFIG_INIT and tc_server_config_init() agree.
 *
 * Every limit has a finite default, so that a server configured with `= {0}`
 * cannot be made to hold resources forever by clients that connect and go
 * silent, or by many clients at once:
 *
 * | limit                          | default                        | "none"      |
 * |--------------------------------|--------------------------------|-------------|
 * | codec's max_frame (message size) | 1 MiB (TC_CODEC_DEFAULT_MAX_FRAME) | no such value (at most TC_CODEC_MAX_FRAME_LIMIT) |
 * | idle_timeout_ms (between messages) | 300 000 ms (TC_DEFAULT_IDLE_TIMEOUT_MS) | negative |
 * | conn_timeout_ms (each read, write, flush) | 300 000 ms (TC_DEFAULT_CONN_TIMEOUT_MS) | negative |
 * | max_conns (live connections)   | 4096 (TC_DEFAULT_MAX_CONNS); forking: 40 | negative |
 * | queue_len (pool: work the loop hands over) | the number of workers | no such value |
 * | proxy_timeout_ms (PROXY header) | 5000 ms                       | no such value |
 * | drain_timeout_ms (shutdown)    | 5000 ms                        | negative = do not wait |
 * | backlog (listen queue)         | SOMAXCONN                      | no such value |
 *
 * docs/production.md explains how to choose them.
 */
typedef struct tc_server_config {
    /**
     * @brief Listen address (see tc_addr_parse()); NULL = "127.0.0.1:0", any free loopback port.
     *        Must be NULL when @ref tc_server_config::adopt_fd is TC_ON.
     *
     * A datagram address (`udp:HOST:PORT`, `udp:[IPV6]:PORT`, `unixgram:PATH`,
     * `unixgram:@NAME`) makes a datagram server (socketserver's UDPServer and
     * UnixDatagramServer): each datagram received is a request, run by the
     * same handler in the same mode, and the replies go back to its sender
     * as datagrams. There, the codec must be raw and its max_frame bounds a
     * datagram (0 = TC_DGRAM_DEFAULT_MAX_FRAME, at most TC_DGRAM_MAX_FRAME:
     * a longer one is dropped and counted, never delivered cut); max_conns
     * counts the datagrams in flight; proxy_protocol must be off;
     * SO_REUSEADDR is set only with reuse_addr TC_ON (on a UDP port it would
     * let another process take our datagrams). Bound to every address
     * (`udp::PORT`, `udp:[::]:PORT`), the server answers each datagram from
     * the address it was sent to (IP_PKTINFO), which is then the request's
     * tc_conn_local(). See docs/datagrams.md.
     */
    const char *listen;
    /** @brief Concurrency mode; default TC_MODE_INLINE. */
    tc_mode mode;
    /** @brief listen() backlog; 0 = SOMAXCONN. */
    int backlog;
    /** @brief SO_REUSEADDR on TCP listeners (TC_DEFAULT = on, TC_OFF). */
    int reuse_addr;
    /** @brief SO_REUSEPORT on TCP listeners (TC_DEFAULT = off, TC_ON). */
    int reuse_port;
    /** @brief How long tc_server_handle_request() waits for a connection, in ms; 0 = forever. */
    int timeout_ms;
    /** @brief Longest idle wait of serve_forever between service_actions calls, in ms;
     *         0 = 500 (socketserver's poll_interval), negative = wake only for events.
     *         Shutdown never waits for it. */
    int poll_interval_ms;
    /**
     * @brief Initial per-operation timeout of every accepted channel (see
     *        tc_conn_set_timeout()), in ms; 0 = TC_DEFAULT_CONN_TIMEOUT_MS
     *        (5 minutes), negative = none.
     *
     * One read, one whole write, a flush or a send that cannot complete
     * within it fails with -ETIMEDOUT, so that a peer which stops sending or
     * stops reading cannot hold a stream handler (and its thread or process)
     * forever. A stream handler that must wait longer for a quiet peer sets
     * its own with tc_conn_set_timeout(), or the server sets a negative value
     * and bounds connections some other way. Message style: it bounds the
     * arrival of each frame from its first byte, so that a client sending a
     * byte now and then cannot hold a frame open forever (-ETIMEDOUT,
     * reported as an error), in every mode. In the blocking modes (inline,
     * threading, forking) it bounds the wait between messages too, as
     * @ref tc_server_config::idle_timeout_ms does (the shorter of the two
     * applies); TC_MODE_EVENT and TC_MODE_POOL bound that wait with
     * idle_timeout_ms alone (pool, stream style: conn_timeout_ms also bounds
     * the wait for the first bytes; see tc_mode).
     */
    int conn_timeout_ms;
    /** @brief Framing of every accepted channel (tc_conn_set_codec()), used by
     *         message-style handlers; zero-initialised = raw, 1 MiB maximum. */
    tc_codec codec;
    /** @brief Message style: close a connection that sent nothing for this
     *         long, in ms (between messages, on_close gets -ETIMEDOUT; inside
     *         a frame it counts as an error too); 0 = TC_DEFAULT_IDLE_TIMEOUT_MS
     *         (5 minutes), negative = never. Before the first message the
     *         silence is counted from the accept. */
    int idle_timeout_ms;
    /** @brief Live connections at most; while that many run, the server stops
     *         accepting and further clients wait in the listen backlog (they are
     *         not refused). 0 = TC_DEFAULT_MAX_CONNS (4096), except forking: 40
     *         (ForkingMixIn's max_children); negative = no limit (threads,
     *         processes, memory and descriptors are then the only bounds). */
    int max_conns;
    /** @brief Pool: worker threads; event: loop threads. 0 = the number of CPUs. */
    int workers;
    /** @brief Pool: the work the loop hands to the workers itself (stream
     *         connections that spoke, frames left buffered after a pause)
     *         waiting for a worker, at most; when the queue is full the loop
     *         stops reading those connections (see tc_mode). Connections the
     *         workers take from the epoll set they wait on need no place.
     *         0 = the number of workers. */
    int queue_len;
    /** @brief After tc_server_shutdown(), how long serve_forever lets open
     *         connections finish before shutting down their sockets, in ms;
     *         0 = 5000, negative = do not wait. */
    int drain_timeout_ms;
    /** @brief Threading, forking and pool: whether tc_server_destroy() waits
     *         for the connections still running (TC_DEFAULT = on, as
     *         ThreadingMixIn's block_on_close; TC_OFF = daemon threads or
     *         children, whose sockets destroy shuts down but does not wait for).
     *         With TC_OFF the server is freed when its last connection ends:
     *         forking hands the remaining children to a detached reaper thread;
     *         in pool mode (whose message-style connections all end with
     *         serve_forever) the worker that ends the last stream connection
     *         joins the other workers and exits. Handler and hook contexts must stay valid
     *         until then. */
    int block_on_close;
    /** @brief Stack size of the threads running handlers, in bytes; 0 = 256 KiB
     *         (10,000 idle threads fit in 2.5 GiB of address space and far less
     *         memory, since only touched pages count). At least PTHREAD_STACK_MIN. */
    size_t thread_stack_size;
    /** @brief Server hooks. */
    tc_server_hooks hooks;
    /**
     * @brief TC_ON: serve the listening socket @ref tc_server_config::listen_fd
     *        instead of binding @ref tc_server_config::listen (TC_DEFAULT = off).
     *
     * A switch rather than a descriptor value, because 0 is both "the default"
     * in a config and a valid descriptor (inetd passes sockets on stdin).
     * The socket is one the process was given already listening: by systemd
     * (see tc_listen_fds()), by a supervisor, by a parent before fork().
     * tc_server_create() checks that it is a listening SOCK_STREAM socket
     * (SO_TYPE, SO_ACCEPTCONN), or a bound SOCK_DGRAM socket (a datagram
     * server, as with a `udp:` address), makes it non-blocking and close-on-exec, and
     * does not bind, listen, or set any socket option on it; backlog,
     * reuse_addr and reuse_port are then ignored, and listen must stay NULL.
     * @par Ownership
     * On success the server owns the descriptor: tc_server_destroy() closes
     * it (a unix socket's file is never removed: the server did not create it).
     * When tc_server_create() fails the descriptor stays the caller's and stays
     * open (its O_NONBLOCK and FD_CLOEXEC flags may have been set).
     */
    int adopt_fd;
    /** @brief The listening descriptor served when @ref tc_server_config::adopt_fd is TC_ON
     *         (0 is a valid value then); must be 0 otherwise. */
    int listen_fd;
    /**
     * @brief PROXY protocol (tc_proxy_mode): TC_PROXY_OFF (the default),
     *        TC_PROXY_REQUIRED or TC_PROXY_OPTIONAL.
     *
     * When on, the library reads the header before the handler's setup (in the
     * thread or process that runs the connection), within
     * @ref tc_server_config::proxy_timeout_ms, through the channel's buffer:
     * the bytes after the header stay buffered for the handler. Only peers in
     * @ref tc_server_config::proxy_trusted may send one. The connection is
     * closed before setup, with the code reported to handle_error, when:
     * - the peer is not trusted: TC_EUNTRUSTED (required: at once, without
     *   reading; optional: when what it sends starts like a header);
     * - the header is malformed, truncated by the end of the stream, longer
     *   than the limits (v1: 107 bytes; v2: 16 + 2048 bytes), or (required)
     *   missing: TC_EPROXY; the log hook says what is wrong;
     * - required: no complete header within the timeout: -ETIMEDOUT.
     * A peer that closes before sending any byte (a TCP health check) is
     * closed quietly when the header is required. In optional mode a
     * connection whose first bytes are not a header, or that sends nothing
     * within the timeout, is served without one; so optional suits protocols
     * in which the client speaks first.
     *
     * A v2 LOCAL header (the proxy's own health checks), a v1 UNKNOWN header
     * and a v2 header without stream addresses (UNSPEC family, datagrams)
     * are accepted, as the specification asks, and the connection keeps the
     * real endpoints: tc_conn_peer() is then the proxy's address.
     *
     * verify_request runs before the header is read and sees the proxy's
     * address; filter on the client's address in setup. Every mode reads it,
     * TC_MODE_EVENT included: there the loop reads the header without
     * blocking, within the same timeout, before setup and on_open.
     */
    tc_proxy_mode proxy_protocol;
    /**
     * @brief The proxies allowed to send a PROXY header: a comma-separated
     *        list of IPv4 and IPv6 addresses or CIDR blocks, and the word
     *        `unix` for every peer of a unix socket, such as
     *        "10.0.0.0/8, 192.168.1.10, ::1/128, unix".
     *
     * NULL = "127.0.0.0/8,::1/128": loopback only, so that turning the
     * protocol on never lets a remote client choose the address it appears
     * to have. An empty string trusts nobody. IPv4 blocks also match
     * IPv4-mapped IPv6 peers (such as \::ffff:192.0.2.1). A malformed entry is
     * TC_EBADCONFIG (tc_last_error_detail() and the log hook name it).
     * Copied by tc_server_create().
     */
    const char *proxy_trusted;
    /** @brief Longest wait for the whole PROXY header, from the start of the
     *         connection's run, in ms; 0 = 5000. */
    int proxy_timeout_ms;
    /** @brief WebSocket (see ws.h): every connection opens with the upgrade
     *         handshake, and on_message receives WebSocket messages (at most
     *         the codec's max_frame each); NULL = plain TCP. Copied by
     *         tc_server_create(). Message-style handlers only. */
    const struct tc_ws_config *ws;
    /** @brief Event and pool modes: above this many bytes of queued output a
     *         connection is not read, sends to it from other threads are
     *         refused (-EAGAIN), and tc_handler::on_drain is owed;
     *         0 = TC_SEND_HIGH_WATER (1 MiB). Lower it for many connections
     *         that may each fall behind (memory is about this much per slow
     *         reader), raise it for a few fast bulk streams. */
    size_t send_high_water;
    /** @brief Event and pool modes: below this many bytes, after passing the
     *         high-water mark, the connection is read again and on_drain runs;
     *         less than send_high_water. 0 = TC_SEND_LOW_WATER (256 KiB), or a
     *         quarter of send_high_water when that is set lower. */
    size_t send_low_water;
    /**
     * @brief Several listen addresses: one listener each, all served by the
     *        same handler and mode (an IPv4 port, an IPv6 port and a unix
     *        socket, say); NULL = the single @ref tc_server_config::listen.
     *
     * An array of @ref tc_server_config::listen_count addresses in the
     * tc_addr_parse() forms, or, with listen_count 0, terminated by a NULL
     * entry. Listener i is the address at index i: see
     * tc_server_listener_address(), tc_server_listener_stats() and
     * tc_conn_listener(). Every mode accepts from all of them, with the
     * connection limit and the accept pause applied to the server as a
     * whole. A datagram address (`udp:`, `unixgram:`) is allowed only as the
     * list's sole entry: a datagram server has one socket, and stream and
     * datagram listeners do not mix (TC_EBADCONFIG). Setting both this and
     * @ref tc_server_config::listen, an empty list, or a NULL entry within
     * listen_count is TC_EBADCONFIG; so is this with adopt_fd (use
     * @ref tc_server_config::listen_fds). The array and its strings are
     * copied by tc_server_create(). See docs/event.md, "Several listeners".
     */
    const char *const *listen_list;
    /** @brief Entries of @ref tc_server_config::listen_list; 0 = up to its
     *         NULL entry. Negative is TC_EBADCONFIG. */
    int listen_count;
    /**
     * @brief With @ref tc_server_config::adopt_fd TC_ON: several listening
     *        sockets to serve, such as every socket tc_listen_fds() found
     *        (socket activation with several `ListenStream=` lines);
     *        listener i is listen_fds[i]. NULL = the single
     *        @ref tc_server_config::listen_fd (which must then stay 0).
     *
     * Each must be a listening SOCK_STREAM socket; a bound SOCK_DGRAM socket
     * only as the sole entry. Ownership as for listen_fd: on success the
     * server owns them all, on failure they all stay the caller's.
     */
    const int *listen_fds;
    /** @brief Entries of @ref tc_server_config::listen_fds (at least 1 when it is set). */
    int listen_fd_count;
    /** @brief A transport every connection runs over (see transport.h): for
     *         TLS, what tc_tls_server_create() returns; NULL = plain TCP.
     *         Not copied: it must outlive the server. Stream sockets only. */
    struct tc_transport *transport;
    /** @brief TC_MODE_EVENT: what its loops wait with (see tc_backend);
     *         default TC_BACKEND_DEFAULT (epoll). */
    tc_backend backend;
    /**
     * @brief TC_MODE_EVENT on io_uring: how connections are accepted.
     *
     * TC_DEFAULT or TC_ON: accept requests wait on the ring (up to 8 per
     * listener, and never more than max_conns leaves room for), so that a
     * connection is taken without a system call of its own. TC_OFF: the
     * loop waits until a listener is readable and calls accept4(), as on
     * epoll. Choose TC_OFF where every accept must pass through accept4()
     * (a preloaded library or a seccomp filter that watches it), or where
     * RLIMIT_NOFILE is lowered while serving: Linux reads the limit when a
     * request is submitted, so up to 8 connections may still be taken under
     * the old limit. Several listeners share the room equally; closer to
     * max_conns than one connection each, they are polled. A kernel that
     * refuses such requests turns them off (logged once, TC_LOG_WARN).
     * Ignored by other modes and by epoll.
     */
    int ring_accept;
} tc_server_config;

/** @brief Initialiser for tc_server_config: every field at its default. */
#define TC_SERVER_CONFIG_INIT                                                                      \
    {0, TC_MODE_INLINE, 0, 0, 0, 0, 0, 0, TC_CODEC_INIT, 0, 0, 0, 0, 0, 0, 0, {0, 0, 0, 0, 0, 0},  \
     0, 0, TC_PROXY_OFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, TC_BACKEND_DEFAULT, TC_DEFAULT}

/** @brief Counters of a server, as tc_server_stats() reads them. */
typedef struct tc_stats {
    unsigned long long accepted;       /**< connections accepted (including refused ones) */
    unsigned long long refused;        /**< connections refused by verify_request */
    unsigned long long handler_errors; /**< negative codes reported to handle_error */
    unsigned active;                   /**< connections accepted and not yet closed */
    unsigned peak_active;              /**< the most connections ever active at once */
    /* Added at the end (datagram servers): their counters (all 0 for a
     * stream server). There, accepted counts the datagrams handed on as
     * requests (refused ones included), and active the requests in flight. */
    unsigned long long dgram_received;  /**< datagrams read from the socket, all of them */
    unsigned long long dgram_answered;  /**< reply datagrams the socket took */
    unsigned long long dgram_dropped;   /**< datagrams lost inside the server: received but
                                             never handed on as requests (over max_frame, no
                                             memory to hold them), or replies the socket
                                             refused (its buffer full, an unreachable unix
                                             peer). A request that gets no thread or process
                                             is reported to handle_error, as a connection is */
    unsigned long long dgram_truncated; /**< of the dropped, those over max_frame (MSG_TRUNC) */
} tc_stats;

/**
 * @brief Set every field of @p cfg to its default: a copy of TC_SERVER_CONFIG_INIT.
 * @param cfg The config; NULL does nothing.
 */
TC_API void tc_server_config_init(tc_server_config *cfg);

/**
 * @brief Create a server: validate the configuration, bind and listen
 *        (socketserver's server_bind and server_activate).
 *
 * The config and handler are copied (the listen string too), so they need
 * not outlive the call. A bad field, or the address that could not be
 * bound, is named in tc_last_error_detail() (with or without hooks) and
 * through the log hook, in the same words.
 * @param[out] out  Receives the server; written only on success.
 * @param cfg       Configuration, or NULL for all defaults.
 * @param handler   The request handler: handle or on_message, exactly one.
 * With @ref tc_server_config::adopt_fd, nothing is bound: the given
 * listening socket is checked and adopted instead.
 * @return 0, or:
 *   - TC_EBADCONFIG: a field out of range, an invalid codec, neither or
 *     both of handle and on_message, on_open/on_close without on_message;
 *     adopt_fd with a descriptor that is not an open, listening SOCK_STREAM
 *     socket or a bound SOCK_DGRAM one, or with listen set, or listen_fd set
 *     without adopt_fd; a malformed proxy_trusted entry; on a datagram socket,
 *     proxy_protocol not off, a codec that is not raw or a max_frame over
 *     TC_DGRAM_MAX_FRAME (tc_last_error_detail() names the field); listen_list
 *     with listen or adopt_fd, empty, with a NULL entry, or mixing a datagram
 *     address with others; listen_count negative or without listen_list;
 *     listen_fds without adopt_fd, with listen_fd set or listen_fd_count < 1,
 *     or holding a datagram socket among others;
 *   - TC_ENOMODE: the mode is not available in this build;
 *   - TC_EBADADDR, -ENAMETOOLONG, TC_ENORESOLVE: the listen address, or an
 *     entry of listen_list (see tc_addr_parse(); the detail names its index);
 *     nothing is bound then;
 *   - -EADDRINUSE: the address is taken (a unix path that exists counts);
 *     with several addresses, those already bound are closed again;
 *   - -EACCES, -EADDRNOTAVAIL, -EMFILE, -ENOMEM or another negated errno value;
 *   - -EINVAL: @p out or @p handler is NULL.
 * @par Ownership
 * The caller owns the server and releases it with tc_server_destroy().
 */
TC_API int tc_server_create(tc_server **out, const tc_server_config *cfg, const tc_handler *handler);

/**
 * @brief Accept and dispatch connections until tc_server_shutdown() is called.
 *
 * Each turn waits for a connection or a shutdown request (no polling delay:
 * shutdown wakes it at once), accepts, applies verify_request and hands the
 * connection to the mode, then calls service_actions. A shutdown requested
 * before this call starts makes it return at once.
 *
 * On shutdown it stops accepting at once (clients still in the backlog are
 * never accepted), closes the message-style connections that are idle
 * between messages (and those that become idle later), lets open connections finish for up to
 * @ref tc_server_config::drain_timeout_ms, then shuts down the sockets of
 * those still open so that handlers blocked in a read see end of stream and
 * their finish runs, waits a short grace period for them, and returns. In
 * inline and forking modes a handler's read that waits for its client does
 * not wait for that: it ends with TC_ESHUTDOWN as soon as the shutdown is
 * requested (see tc_conn_read()). The shutdown request is then consumed, so
 * the server can be served again.
 * @param srv The server.
 * @return 0 after a shutdown request, or -EINVAL for NULL, -EBUSY if the
 *         server is already being served in another thread.
 * @par Thread safety
 * Call from one thread at a time; other threads may call tc_server_shutdown().
 */
TC_API int tc_server_serve_forever(tc_server *srv);

/**
 * @brief Wait for and serve exactly one connection (handle_request).
 *
 * Waits at most @ref tc_server_config::timeout_ms for a connection; on
 * expiry calls the handle_timeout hook and returns -ETIMEDOUT. In inline mode
 * the connection has been served completely when this returns; in other
 * modes it has been dispatched.
 * @param srv The server.
 * @return 0 once a connection was accepted and dispatched (also when
 *         verify_request refused it), -ETIMEDOUT, TC_ESHUTDOWN if
 *         tc_server_shutdown() was called (the request is consumed), -EBUSY if
 *         the server is being served in another thread, -ENOTSUP in
 *         TC_MODE_EVENT and TC_MODE_POOL (their loop accepts, and serves
 *         only through tc_server_serve_forever()), -EINVAL for NULL.
 */
TC_API int tc_server_handle_request(tc_server *srv);

/**
 * @brief Ask serve_forever (or handle_request) to return.
 *
 * Takes effect at once: the serving thread is woken through an eventfd. It
 * does not wait for the loop to stop; destroy does the waiting.
 * @param srv The server.
 * @return 0, or -EINVAL for NULL.
 * @par Thread safety
 * Safe from any thread and async-signal-safe: it may be called from a
 * signal handler, and before serve_forever starts.
 */
TC_API int tc_server_shutdown(tc_server *srv);

/**
 * @brief Whether tc_server_shutdown() has been called and the server is
 *        stopping: a stream handler that loops should check it and return.
 * @param srv The server.
 * @return 1 while a shutdown is pending or draining, else 0 (also for NULL).
 * @par Thread safety
 * Safe from any thread, and from handlers.
 */
TC_API int tc_server_shutting_down(const tc_server *srv);

/**
 * @brief Read the server's counters.
 * @param srv       The server.
 * @param[out] out  Receives a snapshot (each counter read atomically).
 * @return 0, or -EINVAL for NULL.
 * @par Thread safety
 * Safe from any thread.
 */
TC_API int tc_server_stats(const tc_server *srv, tc_stats *out);

/**
 * @brief The address the server listens on, with the real port where port 0 was asked.
 *
 * With several listeners, the first one's (see tc_server_listener_address()).
 * @param srv       The server.
 * @param[out] out  Receives the address.
 * @return 0, or -EINVAL for NULL.
 * @par Thread safety
 * Safe from any thread.
 */
TC_API int tc_server_address(const tc_server *srv, tc_addr *out);

/**
 * @brief The listening socket's descriptor (socketserver's fileno()).
 *
 * With several listeners, the first one's (see tc_server_listener_fileno()).
 * @param srv The server.
 * @return The descriptor, or -EINVAL for NULL.
 */
TC_API int tc_server_fileno(const tc_server *srv);

/**
 * @brief How many listening sockets a server has: the entries of
 *        @ref tc_server_config::listen_list or
 *        @ref tc_server_config::listen_fds, else 1.
 * @param srv The server.
 * @return The count (>= 1), or -EINVAL for NULL.
 * @par Thread safety
 * Any thread, between tc_server_create() and tc_server_destroy().
 */
TC_API int tc_server_listener_count(const tc_server *srv);

/**
 * @brief The address listener @p i listens on, with the real port where
 *        port 0 was asked (tc_server_address() is listener 0's).
 * @param srv       The server.
 * @param i         0 to tc_server_listener_count() - 1, in the config's order.
 * @param[out] out  Receives the address; written only on success.
 * @return 0, -ERANGE for an index out of range, or -EINVAL for NULL.
 * @par Thread safety
 * Any thread, between tc_server_create() and tc_server_destroy().
 */
TC_API int tc_server_listener_address(const tc_server *srv, int i, tc_addr *out);

/**
 * @brief Listener @p i's descriptor.
 * @param srv The server.
 * @param i   0 to tc_server_listener_count() - 1.
 * @return The descriptor, -ERANGE for an index out of range, or -EINVAL for NULL.
 */
TC_API int tc_server_listener_fileno(const tc_server *srv, int i);

/** @brief Counters of one listener, as tc_server_listener_stats() reads them. */
typedef struct tc_listener_stats {
    unsigned long long accepted; /**< connections accepted from it (including refused ones) */
    unsigned long long refused;  /**< of those, refused by verify_request */
    unsigned active;             /**< its connections accepted and not yet closed */
} tc_listener_stats;

/**
 * @brief Read one listener's counters: the server's tc_stats accepted,
 *        refused and active, split by the listener a connection came from
 *        (summed over the listeners, they give the server's).
 *
 * A datagram server has one listener, whose counters are the server's.
 * @param srv       The server.
 * @param i         0 to tc_server_listener_count() - 1.
 * @param[out] out  Receives a snapshot (each counter read atomically).
 * @return 0, -ERANGE for an index out of range, or -EINVAL for NULL.
 * @par Thread safety
 * Any thread, between tc_server_create() and tc_server_destroy().
 */
TC_API int tc_server_listener_stats(const tc_server *srv, int i, tc_listener_stats *out);

/**
 * @brief Which of its server's listeners a connection came from.
 * @param conn A channel.
 * @return The listener's index (0 to tc_server_listener_count() - 1; 0 for
 *         a datagram request or a connection served by
 *         tc_server_serve_inetd()), -ENOTSUP for a dialled channel
 *         (tc_dial()'s, or a loop's from tc_loop_dial(): no listener), or
 *         -EINVAL for NULL.
 * @par Thread safety
 * Any thread while the connection lives.
 */
TC_API int tc_conn_listener(const tc_conn *conn);

/**
 * @brief Serve one connection that is already open, inetd-style, in the
 *        calling thread, then return.
 *
 * For a program started per connection: by inetd or xinetd (`nowait`; the
 * socket is stdin, pass 0), or by a systemd socket unit with `Accept=yes`
 * (the socket is fd 3 with the default `StandardInput=null`, or stdin with
 * `StandardInput=socket`). The handler runs exactly as in a server created
 * with @p cfg: verify_request, the PROXY header if
 * @ref tc_server_config::proxy_protocol asks for one, setup, handle or the
 * message loop, finish, with the config's codec and timeouts and its hooks.
 * The listener fields (listen, adopt_fd, listen_fd, backlog, reuse_*) and the
 * mode are ignored. At the end the socket is shut down, so that the client
 * sees the end of the stream even though inetd also passed it as stdout,
 * then closed. A handler calling tc_server_shutdown() on tc_conn_server()
 * ends a message loop as a drain would.
 * @code
 * int main(void) { // in inetd.conf: echo stream tcp nowait nobody /usr/bin/myecho myecho
 *     tc_handler h = TC_HANDLER_INIT;
 *     h.handle = echo;
 *     return tc_server_serve_inetd(NULL, &h, 0) < 0;
 * }
 * @endcode
 * @param cfg     Configuration, or NULL for the defaults.
 * @param handler The request handler.
 * @param fd      The connected socket: 0 for inetd's stdin.
 * @return 0 once the connection was served (or refused by verify_request;
 *         the handler's own errors went to handle_error), or TC_EBADCONFIG
 *         and the other codes of tc_server_create(); -ENOTSOCK, -EPROTOTYPE
 *         (not a stream socket), -EINVAL (a listening socket), -ENOTCONN, -EBADF
 *         for an @p fd that is not a connected stream socket; -ENOMEM;
 *         -EINVAL for a NULL handler or a negative @p fd.
 * @par Ownership
 * The call takes @p fd over and closes it before returning, whatever the
 * result (except -EINVAL for bad arguments); it also makes it non-blocking.
 * @par Thread safety
 * Any thread; the connection runs in the calling one.
 */
TC_API int tc_server_serve_inetd(const tc_server_config *cfg, const tc_handler *handler, int fd);

/**
 * @brief Find the listening sockets that systemd (or any service manager
 *        speaking its protocol) passed to this process: socket activation
 *        without libsystemd.
 *
 * Reads `LISTEN_PID`, which must be this process's pid (so a child that
 * inherited the environment ignores it), `LISTEN_FDS` (how many sockets,
 * starting at descriptor 3) and `LISTEN_FDNAMES` (their names, separated by
 * colons: each socket unit's `FileDescriptorName=`, by default the unit's
 * name such as "echo.socket"). Without `LISTEN_FDNAMES` every socket is named
 * "unknown", as in sd_listen_fds_with_names(). Like sd_listen_fds(), it marks
 * every passed descriptor close-on-exec. The variables are left in the
 * environment (unsetting is not thread-safe): calling it again gives the
 * same answer, and the pid check keeps children out. Serve a socket with
 * @ref tc_server_config::adopt_fd, as here:
 * @code
 * int fd;
 * int n = tc_listen_fds("echo", &fd, 1);     // FileDescriptorName=echo
 * if (n < 0) { fprintf(stderr, "%s\n", tc_strerror(n)); return 1; }
 * cfg.adopt_fd = TC_ON;
 * cfg.listen_fd = fd;
 * @endcode
 * A passed SOCK_DGRAM socket (a socket unit's `ListenDatagram=`) is
 * adopted the same way and served as a datagram server. Several passed
 * stream sockets become several listeners of one server through
 * @ref tc_server_config::listen_fds.
 * With tc_prefork_run(), call it in the parent, before the workers are
 * forked (their pids differ from `LISTEN_PID`), and let every worker adopt
 * the same descriptor: they then accept from one shared queue.
 * @param name The `FileDescriptorName=` to look for, or NULL for every passed socket.
 * @param[out] fds Receives up to @p max descriptors, in the order they were passed.
 * @param max  Room in @p fds (0: just count them).
 * @return The number of matching sockets (>= 1; more than @p max means only
 *         the first @p max were stored), or:
 *   - TC_ENOLISTENFDS: the process was not given sockets: `LISTEN_PID` or
 *     `LISTEN_FDS` missing, malformed or 0, or `LISTEN_PID` naming another process;
 *   - TC_ENOFDNAME: no passed socket is named @p name;
 *   - TC_EBADCONFIG: `LISTEN_FDNAMES` has a different number of names than
 *     `LISTEN_FDS` says, or `LISTEN_FDS` is out of range;
 *   - -EBADF: a passed descriptor is not open;
 *   - -EINVAL: @p fds is NULL while @p max > 0, or @p max is negative.
 * @par Ownership
 * The descriptors stay the caller's until a server adopts one.
 * @par Thread safety
 * As getenv(): not while another thread changes the environment.
 */
TC_API int tc_listen_fds(const char *name, int *fds, int max);

/**
 * @brief Close the server and free it (server_close).
 *
 * Closes the listeners (adopted ones too), waits for the connections the mode still runs,
 * closes the wake-up descriptor, removes the unix socket file the server
 * created (if it is still the same file) and frees everything. NULL does
 * nothing. serve_forever must have returned; never call it from a handler.
 * @param srv The server.
 */
TC_API void tc_server_destroy(tc_server *srv);

#ifdef __cplusplus
}
#endif
#endif /* TCPCHAN_SERVER_H */
