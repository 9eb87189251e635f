/* SPDX-License-Identifier: MIT */
/**
 * @file prefork.h
 * @brief tc_prefork: run a server in several processes on one port, and
 *        supervise them (restart the ones that die, stop them all gracefully).
 *
 * The parent binds nothing: it forks N workers, and each worker creates its
 * own server, usually with @ref tc_server_config::reuse_port on, so that the
 * kernel spreads the incoming connections over the workers' listeners (by a
 * hash of the addresses: expect a fair spread over many connections, not an
 * exact one). A worker may instead adopt a listening socket the parent opened
 * before (@ref tc_server_config::adopt_fd, e.g. from tc_listen_fds()); the
 * workers then accept from one shared queue. Any mode works inside a worker.
 *
 * The library installs no signal handler: the application's own handler
 * calls tc_prefork_stop(), which is async-signal-safe, and tc_prefork_run()
 * then sends each worker @ref tc_prefork_config::stop_signal and waits for
 * them. Children are watched with pidfds (polled every 100 ms where
 * pidfd_open() is missing) and reaped with waitpid() on their own pids only,
 * so other children of the process are left alone; do not set SIGCHLD to
 * SIG_IGN (exit statuses would be lost, and every exit would count as a crash).
 *
 * @code
 * static tc_prefork *volatile pf;
 * static void on_signal(int sig) { (void)sig; tc_prefork_stop(pf); }
 *
 * static tc_server *volatile srv;  // the worker's own, in its own process
 * static void on_term(int sig) { (void)sig; tc_server_shutdown(srv); }
 *
 * static int worker(int index, void *ctx) {
 *     tc_server_config cfg = TC_SERVER_CONFIG_INIT;
 *     tc_handler h = TC_HANDLER_INIT;
 *     tc_server *s;
 *     (void)index; (void)ctx;
 *     cfg.listen = "0.0.0.0:7000";
 *     cfg.reuse_port = TC_ON;                  // one listener per worker
 *     h.handle = echo;
 *     if (tc_server_create(&s, &cfg, &h) < 0) return 1;
 *     srv = s;
 *     signal(SIGTERM, on_term);                // the stop signal: drain, then exit 0
 *     tc_server_serve_forever(s);
 *     tc_server_destroy(s);
 *     return 0;
 * }
 *
 * int main(void) {
 *     tc_prefork_config o = TC_PREFORK_CONFIG_INIT;
 *     tc_prefork *p;
 *     o.processes = 4;
 *     o.worker = worker;
 *     if (tc_prefork_create(&p, &o) < 0) return 1;
 *     pf = p;
 *     signal(SIGTERM, on_signal);
 *     signal(SIGINT, on_signal);
 *     int rc = tc_prefork_run(p);             // until tc_prefork_stop()
 *     tc_prefork_destroy(p);
 *     return rc < 0;
 * }
 * @endcode
 */
#ifndef TCPCHAN_PREFORK_H
#define TCPCHAN_PREFORK_H

#include "common.h"
#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

/** @brief A supervisor of worker processes; opaque. */
typedef struct tc_prefork tc_prefork;

/**
 * @brief Configuration of tc_prefork_create(). Every field's zero value means its
 *        default, so `= {0}` and TC_PREFORK_CONFIG_INIT agree.
 */
typedef struct tc_prefork_config {
    /** @brief How many worker processes; 0 = the number of CPUs. */
    int processes;
    /**
     * @brief The worker's body, run in each child process (required).
     *
     * Called once per start of worker @p index (0 to processes - 1; a
     * restarted worker keeps its index) in a new child, which then ends with
     * _exit(): status 0 when it returns 0, else 1. A worker that exits with
     * status 0 is done and is not restarted (tc_prefork_run() returns once
     * every worker is done); one killed by a signal or exiting with another
     * status is restarted, within @ref tc_prefork_config::max_restarts.
     *
     * The child starts with the stop signal at its default action (so it
     * terminates) and unblocked; the worker installs its own handler to
     * stop gracefully (tc_server_shutdown() of its server, as in the example).
     * Other signal dispositions, the rest of the signal mask and the
     * descriptors are inherited from the parent (the supervisor's own
     * descriptors are closed). Only the thread that called tc_prefork_run()
     * exists in the child: fork from a process whose other threads hold no
     * locks. atexit handlers do not run and stdio buffers are not flushed at
     * the end: fflush() what the worker writes, and flush the parent's stdio
     * before tc_prefork_run(), or the children inherit its unflushed buffers.
     * @param index The worker's number, 0 to processes - 1.
     * @param ctx   @ref tc_prefork_config::ctx.
     * @return 0 when the worker is done; anything else counts as a failure.
     */
    int (*worker)(int index, void *ctx);
    /** @brief User pointer passed to the worker and the log hook. */
    void *ctx;
    /** @brief Restarts of one worker allowed within
     *         @ref tc_prefork_config::restart_window_ms; one more crash and
     *         the supervisor gives up (tc_prefork_run() stops the other workers
     *         and returns TC_ECHILD). 0 = 5. */
    int max_restarts;
    /** @brief The window of the restart limit, in ms; 0 = 10000. */
    int restart_window_ms;
    /** @brief The signal sent to each worker on tc_prefork_stop(); 0 = SIGTERM. */
    int stop_signal;
    /** @brief After the stop signal, how long workers may take to exit before
     *         SIGKILL, in ms; 0 = 10000. */
    int stop_timeout_ms;
    /**
     * @brief Receives the supervisor's messages (workers started, exited,
     *        restarted; the restart limit), in the thread running
     *        tc_prefork_run(). NULL: nothing is reported.
     */
    void (*log)(tc_prefork *pf, tc_log_level level, const char *msg, void *ctx);
} tc_prefork_config;

/** @brief Initialiser for tc_prefork_config: every field at its default (worker still to set). */
#define TC_PREFORK_CONFIG_INIT {0, 0, 0, 0, 0, 0, 0, 0}

/**
 * @brief Set every field of @p cfg to its default: a copy of TC_PREFORK_CONFIG_INIT.
 * @param cfg The config; NULL does nothing.
 * @par Thread safety
 * Safe from any thread.
 */
TC_API void tc_prefork_config_init(tc_prefork_config *cfg);

/**
 * @brief Create a supervisor (no process is forked yet).
 * @param[out] out Receives the supervisor; written only on success.
 * @param opts     The configuration (copied); worker is required.
 * @return 0, or TC_EBADCONFIG for a NULL worker, a negative field, or a stop
 *         signal that is no signal number or is SIGSTOP (which never ends a
 *         process), the field named in tc_last_error_detail() (the log
 *         hook is not called: there is no supervisor yet); -ENOMEM, -EMFILE;
 *         -EINVAL for NULL @p out or @p opts.
 * @par Ownership
 * The caller owns the supervisor and frees it with tc_prefork_destroy().
 */
TC_API int tc_prefork_create(tc_prefork **out, const tc_prefork_config *opts);

/**
 * @brief Fork the workers and supervise them until tc_prefork_stop() or
 *        until every worker is done.
 *
 * Restarts a worker that dies unexpectedly (killed by a signal, or a
 * non-zero exit status), at once, at most
 * @ref tc_prefork_config::max_restarts times per window. On
 * tc_prefork_stop() it sends the stop signal to every worker, waits up to
 * @ref tc_prefork_config::stop_timeout_ms for them to exit, kills the rest
 * with SIGKILL, reaps them all and returns. A stop requested before the
 * call makes it return at once, forking nothing. The stop request is then
 * consumed, so the supervisor can be run again.
 * @param pf The supervisor.
 * @return 0 after a stop or when every worker exited with status 0;
 *         TC_ECHILD when a worker went over the restart limit (the others
 *         were stopped); -EAGAIN, -ENOMEM or another negated errno value when
 *         the first fork of a worker fails (the workers already started are
 *         stopped); -EBUSY if it is already running; -EPERM when called in a
 *         worker; -EINVAL for NULL.
 * @par Thread safety
 * Call from one thread at a time; any thread or signal handler may call
 * tc_prefork_stop().
 */
TC_API int tc_prefork_run(tc_prefork *pf);

/**
 * @brief Ask tc_prefork_run() to stop the workers and return.
 *
 * Async-signal-safe (an atomic store and a write to an eventfd; errno is
 * preserved): call it from the application's SIGTERM and SIGINT handlers. It
 * does not wait. In a worker, which has a copy of the supervisor, it does
 * nothing.
 * @param pf The supervisor.
 * @return 0, -EPERM in a worker process, -EINVAL for NULL.
 * @par Thread safety
 * Any thread, and signal handlers.
 */
TC_API int tc_prefork_stop(tc_prefork *pf);

/**
 * @brief The process id of a worker, as last started.
 * @param pf    The supervisor.
 * @param index The worker's number, 0 to processes - 1.
 * @return The pid (> 0) while the worker runs, 0 when it is not running
 *         (not started yet, done, or waiting to be restarted), -EINVAL for
 *         NULL or an index out of range.
 * @par Thread safety
 * Any thread (the value may change at once after a crash and restart).
 */
TC_API int tc_prefork_worker_pid(const tc_prefork *pf, int index);

/**
 * @brief The number of worker processes (after defaults: the CPU count for 0).
 * @param pf The supervisor.
 * @return The count, or -EINVAL for NULL.
 */
TC_API int tc_prefork_processes(const tc_prefork *pf);

/**
 * @brief Free the supervisor. NULL does nothing. tc_prefork_run() must have
 *        returned (every worker is then reaped); in a worker it frees only
 *        the worker's copy.
 * @param pf The supervisor.
 */
TC_API void tc_prefork_destroy(tc_prefork *pf);

#ifdef __cplusplus
}
#endif
#endif /* TCPCHAN_PREFORK_H */
