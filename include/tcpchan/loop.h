/* SPDX-License-Identifier: MIT */
/**
 * @file loop.h
 * @brief The event loops of an event-mode or pool-mode server: work posted
 *        to a loop from any thread, timers, descriptors of the application's
 *        own watched by a loop, and a message sent to every connection.
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
#include <stdint.h>

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

/** @brief A descriptor of the application's own watched by a loop (opaque;
 *         see tc_loop_watch()). */
typedef struct tc_watch tc_watch;

/** @brief Events of a watch: readable, writable (a bit mask). */
enum {
    TC_WATCH_READ = 1, /**< the descriptor is readable (or at its end, or in error) */
    TC_WATCH_WRITE = 2 /**< the descriptor is writable (or in error) */
};

/**
 * @brief What a watch runs: @p events (TC_WATCH_READ and/or TC_WATCH_WRITE,
 *        only among those asked for) are ready on @p fd.
 *
 * It runs in the loop's thread, between the connections' callbacks, and
 * must not block (it holds up every connection of the loop). It may
 * update or stop its own watch, or any other of the loop's, start new ones,
 * and send on the loop's connections.
 */
typedef void (*tc_watch_fn)(tc_watch *w, int fd, unsigned events, void *ctx);

/**
 * @brief Watch a descriptor of the application's own in a loop: a pipe from
 *        another subsystem, a database client's socket, an eventfd, a timerfd.
 *
 * Level-triggered: while @p fd stays ready for one of @p events, @p cb runs
 * at each turn of the loop (read or write until EAGAIN, or change the
 * events). An error or hang-up on @p fd reports whichever of the asked
 * events are set, so the next read or write sees it. With @p events 0 the
 * watch exists but is paused (the descriptor is out of the loop's epoll set).
 * Watches do not hold a drain open: the loop ends when its connections have;
 * callbacks do not run while the server is not serving, and run again when
 * it serves again.
 *
 * @code
 * static void on_pipe(tc_watch *w, int fd, unsigned events, void *ctx)
 * {
 *     char buf[512];
 *     ssize_t n;
 *     (void)w, (void)events;
 *     while ((n = read(fd, buf, sizeof buf)) > 0)   // fd is O_NONBLOCK
 *         tc_server_broadcast(ctx, buf, (size_t)n);
 * }
 * static void start(tc_loop *loop, void *arg)      // posted: runs in the loop
 * {
 *     tc_watch *w;
 *     tc_loop_watch(loop, pipe_rd, TC_WATCH_READ, on_pipe, tc_loop_server(loop), &w);
 * }
 * ...
 * tc_loop_post(tc_server_loop(srv, 0), start, NULL);
 * @endcode
 * @param loop   The loop, from its own thread (a callback of one of its
 *               connections, a timer, a watch, or work posted to it).
 * @param fd     The descriptor; make it non-blocking (a callback must not block).
 * @param events TC_WATCH_READ, TC_WATCH_WRITE, both, or 0 (paused).
 * @param cb     The callback.
 * @param ctx    Passed to @p cb; the caller keeps ownership.
 * @param[out] out The handle, for tc_watch_update() and tc_watch_stop();
 *               written only on success.
 * @return 0, -EPERM (not the loop's thread), -EEXIST (@p fd is watched
 *         already by this loop, a watch's or the library's own), -EBADF,
 *         -EPERM from epoll (a regular file: it is always ready; use a
 *         thread), -ENOMEM, or -EINVAL (NULL @p loop, @p cb or @p out, a
 *         negative @p fd, unknown bits in @p events).
 * @par Ownership
 * The descriptor stays the caller's: the loop never reads, writes or closes
 * it. Stop the watch before closing it. The watch is freed by
 * tc_watch_stop() (at the end of the loop's turn, so a callback may stop
 * itself), or, if still running then, by tc_server_destroy().
 * @par Thread safety
 * The loop's thread only: from another thread, post a function that starts
 * it (tc_loop_post()). The same holds for tc_watch_update() and
 * tc_watch_stop(). Event mode and pool mode (in the loop, never a worker).
 */
TC_API int tc_loop_watch(tc_loop *loop, int fd, unsigned events, tc_watch_fn cb, void *ctx,
                         tc_watch **out);

/**
 * @brief Change the events a watch waits for (0 pauses it).
 * @param w      The watch.
 * @param events TC_WATCH_READ, TC_WATCH_WRITE, both, or 0.
 * @return 0, -EPERM (not the loop's thread), an epoll error (-ENOMEM), or
 *         -EINVAL (NULL, a stopped watch, unknown bits).
 * @par Thread safety
 * The loop's thread only.
 */
TC_API int tc_watch_update(tc_watch *w, unsigned events);

/**
 * @brief Stop a watch: its callback never runs again (not even for events
 *        already taken in the current turn), and it is freed at the end of
 *        the loop's turn. The descriptor is left open.
 * @param w The watch; not used again after (a callback may stop its own).
 * @return 0, -EPERM (not the loop's thread), or -EINVAL for NULL or a
 *         watch already stopped.
 * @par Thread safety
 * The loop's thread only.
 */
TC_API int tc_watch_stop(tc_watch *w);

/**
 * @brief Send one message to every message-style connection of the server.
 *
 * Each loop sends it to its own connections, in its own thread, as
 * tc_conn_send() would (framed by the codec; a WebSocket message on a
 * WebSocket server): the call copies @p msg once and returns at once. A
 * connection with send_high_water or more queued (a client that does not
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

/**
 * @brief Send one message to the connection with id @p id (tc_conn_id()),
 *        from any thread, without holding its tc_conn pointer.
 *
 * The way to reach a connection from a thread that does not own it and
 * cannot know whether it is still open (a chat room's member list, a
 * session table of a gateway): the id is looked up under the loop's lock,
 * the payload is copied into the loop's mailbox, and the loop sends it as
 * tc_conn_send() would (framed by the codec; a WebSocket message on a
 * WebSocket server), in order with the loop's own sends and with other
 * messages sent to the id from the same thread. A connection that closes
 * before the loop takes the message drops it, as it drops a send queued
 * on its socket; a message over the codec's max_frame is dropped then too.
 * The queue is bounded as tc_conn_send()'s from another thread is.
 * @param srv The server (event or pool mode, message-style handler).
 * @param id  The connection's id.
 * @param msg The payload, @p len bytes.
 * @param len Its length.
 * @return 0 (queued), TC_ECLOSED (no open connection of this server has
 *         that id: it closed, or never existed), -EAGAIN (send_high_water
 *         or more is waiting for it: try again once the peer has read),
 *         TC_ESHUTDOWN (its loop has ended), -ENOTSUP (a server without
 *         loops: the other modes' connections belong to their handler's
 *         thread), -ENOMEM, or -EINVAL (NULL, id 0).
 * @par Thread safety
 * Any thread, between tc_server_create() and tc_server_destroy(); races with
 * the connection's close are safe (that is its purpose).
 */
TC_API int tc_server_send_to(tc_server *srv, uint64_t id, const void *msg, size_t len);

/**
 * @brief Close the connection with id @p id (tc_conn_id()), from any thread.
 *
 * Event and pool modes, message style: the connection's loop closes it
 * once what is queued for it has gone out (on_close sees TC_ECLOSED; not
 * reported to handle_error). Other modes, and a pool's stream-style
 * connections: the socket is shut down, so the handler's next read sees
 * the end of the stream and its writes fail, and it ends as if the peer
 * had left. Either way the call returns at once; the close happens in the
 * connection's own thread.
 * @param srv The server.
 * @param id  The connection's id.
 * @return 0 (the close is under way), TC_ECLOSED (no open connection has
 *         that id), TC_ESHUTDOWN (its loop has ended), -ENOTSUP (called in a
 *         forked child of a TC_MODE_FORKING server), -ENOMEM, or -EINVAL
 *         (NULL, id 0).
 * @par Thread safety
 * Any thread, between tc_server_create() and tc_server_destroy(), including
 * a callback of that very connection.
 */
TC_API int tc_server_close_conn(tc_server *srv, uint64_t id);

/**
 * @brief Visit a loop's connections: the callback for tc_loop_foreach().
 * @return 0 to go on, non-zero to stop.
 */
typedef int (*tc_conn_visit_fn)(tc_conn *conn, void *arg);

/**
 * @brief Call @p fn for each open message-style connection of @p loop.
 *
 * Open means on_open has run and no close has begun; connections accepted
 * or closed by what @p fn does are visited or not, never visited twice or
 * after they are gone. In event mode @p fn may use the connection as its
 * own callbacks do (send, set its timer, read tc_conn_data()); closing it
 * by id takes effect after the walk. In pool mode a worker may be running
 * on_message for a connection meanwhile: touch only what is safe from
 * another thread (tc_conn_send(), tc_conn_id(), tc_conn_pending(),
 * tc_server_close_conn()).
 * @param loop The loop, from its own thread (a callback of one of its
 *             connections, posted work, a loop timer).
 * @param fn   Called with each connection and @p arg.
 * @param arg  Passed to @p fn.
 * @return The number of connections visited (including the one whose
 *         @p fn stopped the walk), -EPERM (not the loop's thread), or
 *         -EINVAL (NULL @p loop or @p fn).
 * @par Thread safety
 * The loop's thread only.
 */
TC_API int tc_loop_foreach(tc_loop *loop, tc_conn_visit_fn fn, void *arg);

#ifdef __cplusplus
}
#endif

#endif /* TCPCHAN_LOOP_H */
