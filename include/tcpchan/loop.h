/* SPDX-License-Identifier: MIT */
/**
 * @file loop.h
 * @brief The event loops of an event-mode or pool-mode server: work posted
 *        to a loop from any thread, and a message sent to every connection.
 *
 * In TC_MODE_EVENT a server runs @ref tc_server_config::workers loops, in
 * TC_MODE_POOL one; each connection belongs to one loop for its life
 * (tc_conn_loop()). A loop runs its connections' callbacks in its own
 * thread, so work posted to it (tc_loop_post()) runs without locks against
 * them: the way another thread (a timer thread, a database client's
 * callback) hands something to the connections of a loop. Servers in the
 * other modes, and datagram servers, have no loops.
 *
 * @code
 * static void announce(tc_loop *loop, void *arg)   // runs in the loop's thread
 * {
 *     (void)loop;
 *     tc_conn_send(arg, "ready", 5);               // arg: a connection of that loop
 * }
 * ...
 * tc_loop_post(tc_conn_loop(conn), announce, conn); // from any thread
 * tc_server_broadcast(srv, "news", 4);             // every connection, every loop
 * @endcode
 */
#ifndef TCPCHAN_LOOP_H
#define TCPCHAN_LOOP_H

#include <stddef.h>

#include "common.h"
#include "conn.h"
#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

/** @brief An event loop of a server (opaque; the server owns it). */
typedef struct tc_loop tc_loop;

/** @brief Work for a loop: runs in the loop's thread, with the argument given to tc_loop_post(). */
typedef void (*tc_loop_fn)(tc_loop *loop, void *arg);

/**
 * @brief What the server's event-mode loops wait with.
 * @param srv The server (NULL is allowed).
 * @return TC_BACKEND_IO_URING, or TC_BACKEND_EPOLL: asked for, fallen back
 *         to (see tc_backend), or a server without event-mode loops (other
 *         modes, datagram servers, NULL).
 * @par Thread safety
 * Any thread, between tc_server_create() and tc_server_destroy().
 */
TC_API tc_backend tc_server_backend(const tc_server *srv);

/**
 * @brief How many loops a server has.
 * @param srv The server.
 * @return TC_MODE_EVENT's @ref tc_server_config::workers, 1 for TC_MODE_POOL,
 *         0 for the other modes, datagram servers and NULL.
 * @par Thread safety
 * Any thread, between tc_server_create() and tc_server_destroy().
 */
TC_API int tc_server_loop_count(const tc_server *srv);

/**
 * @brief One of a server's loops.
 * @param srv The server.
 * @param i   0 to tc_server_loop_count() - 1.
 * @return The loop (valid until tc_server_destroy()), or NULL for an index
 *         out of range or a server without loops.
 * @par Thread safety
 * Any thread, between tc_server_create() and tc_server_destroy().
 */
TC_API tc_loop *tc_server_loop(tc_server *srv, int i);

/**
 * @brief The loop a connection belongs to.
 * @param conn A channel.
 * @return Its loop, or NULL for a channel that has none (the blocking modes,
 *         a dialled channel, a pool's stream-style connection once a worker
 *         has it, NULL).
 * @par Thread safety
 * Any thread while the connection lives (until its on_close returns).
 */
TC_API tc_loop *tc_conn_loop(const tc_conn *conn);

/**
 * @brief The server a loop belongs to.
 * @param loop A loop.
 * @return The server, or NULL for NULL.
 */
TC_API tc_server *tc_loop_server(const tc_loop *loop);

/**
 * @brief Run @p fn (@p loop, @p arg) in the loop's thread, as soon as it can.
 *
 * Posted work runs in the order it was posted (from one thread), between
 * the loop's callbacks, never inside one: posting from the loop's own
 * thread runs it after the current callback returns. Work posted before
 * tc_server_serve_forever() runs once the loops start; work posted once
 * the loop has ended is refused. In pool mode the loop runs @p fn, not a
 * worker: it must not block.
 * @param loop The loop.
 * @param fn   The work.
 * @param arg  Passed to @p fn; the caller keeps ownership.
 * @return 0 (it will run, unless the server is destroyed without serving),
 *         TC_ESHUTDOWN (the loop has ended: it will not run), -ENOMEM, or
 *         -EINVAL for NULL @p loop or @p fn.
 * @par Thread safety
 * Any thread.
 */
TC_API int tc_loop_post(tc_loop *loop, tc_loop_fn fn, void *arg);

/** @brief A timer of a loop's own (opaque; see tc_loop_timer_start()). */
typedef struct tc_loop_timer tc_loop_timer;

/**
 * @brief Run @p fn (@p loop, @p arg) in the loop's thread after @p delay_ms,
 *        then every @p interval_ms (0: once).
 *
 * A server-wide timer (a statistics line, a cache's expiry, a heartbeat to
 * every connection): it lives in the loop's timer heap with the
 * connections' timers, fires in deadline order, never early, and between
 * the loop's callbacks. From another thread, post a function that starts it
 * (tc_loop_post()).
 * @param loop        The loop, from its own thread (a callback of one of its
 *                    connections, or work posted to it).
 * @param delay_ms    The first run, from now (0: at the loop's next turn).
 * @param interval_ms The period after it; 0 runs once.
 * @param fn          The work; it may stop its own timer.
 * @param arg         Passed to @p fn; the caller keeps ownership.
 * @param out         The handle, for tc_loop_timer_stop(). It stays valid
 *                    after a one-shot timer has run, until it is stopped or
 *                    the server is destroyed (which frees the timers nobody
 *                    stopped).
 * @return 0, -EPERM (not the loop's thread), -ENOMEM, or -EINVAL (NULL
 *         @p loop, @p fn or @p out, a negative time).
 * @par Thread safety
 * The loop's thread only.
 */
TC_API int tc_loop_timer_start(tc_loop *loop, int delay_ms, int interval_ms, tc_loop_fn fn,
                               void *arg, tc_loop_timer **out);

/**
 * @brief Cancel a loop timer and free it.
 * @param t The handle tc_loop_timer_start() gave; not used again after.
 * @return 0, -EPERM (not the loop's thread), or -EINVAL for NULL.
 * @par Thread safety
 * The loop's thread only.
 */
TC_API int tc_loop_timer_stop(tc_loop_timer *t);

/**
 * @brief Send one message to every message-style connection of the server.
 *
 * Each loop sends it to its own connections, in its own thread, as
 * tc_conn_send() would (framed by the codec; a WebSocket message on a
 * WebSocket server): the call copies @p msg once and returns at once. A
 * connection with TC_SEND_HIGH_WATER or more queued (a client that does not
 * read) is skipped rather than let its queue grow: a slow receiver never
 * holds up the others, nor the loop. Connections accepted after the call
 * may or may not get it.
 * @param srv The server.
 * @param msg The payload, @p len bytes (the codec's limits apply).
 * @param len Its length.
 * @return 0, -ENOTSUP for a server without loops (see tc_server_loop_count()),
 *         TC_ESHUTDOWN when its loops have ended, -ENOMEM, or -EINVAL for NULL.
 * @par Thread safety
 * Any thread, between tc_server_create() and tc_server_destroy().
 */
TC_API int tc_server_broadcast(tc_server *srv, const void *msg, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* TCPCHAN_LOOP_H */
