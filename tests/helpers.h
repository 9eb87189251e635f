/* SPDX-License-Identifier: MIT */
/* Test helpers shared by every suite: a server serving in a background thread,
 * raw loopback clients, event counters to synchronise on, descriptor and thread
 * counts, temporary directories, and waits scaled by TC_TEST_TIMEOUT_MULT. */
#ifndef TCPCHAN_TESTS_HELPERS_H
#define TCPCHAN_TESTS_HELPERS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <tcpchan/tcpchan.h>

/* ---- event mode's backend --------------------------------------------------- */

/* tc_server_create, except that TC_TEST_BACKEND=io_uring in the environment
 * makes an event-mode config that leaves the backend at its default ask
 * for TC_BACKEND_IO_URING: ctest runs the event-mode tests once per backend
 * (the *_io_uring entries). Every suite's tc_server_create() comes here. */
int tc_test_server_create_raw(tc_server **out, const tc_server_config *cfg,
                              const tc_handler *handler);
#define tc_server_create(out, cfg, handler) tc_test_server_create_raw(out, cfg, handler)
/* Whether TC_TEST_BACKEND asks for io_uring. */
int tc_test_backend_uring(void);

/* ---- time ------------------------------------------------------------------ */

/* The multiplier from the environment variable TC_TEST_TIMEOUT_MULT (default 1).
 * It scales every bounded wait below and, through a Criterion PRE_ALL hook in
 * helpers.c, every test's .timeout in the suites that link the helpers. */
double tc_test_mult(void);
/* base_ms scaled by the multiplier (at least 1). */
int tc_test_ms(int base_ms);
/* The default bound for one wait (5 s, scaled). */
#define TC_TEST_WAIT_MS tc_test_ms(5000)
/* CLOCK_MONOTONIC, in nanoseconds and milliseconds. */
int64_t tc_test_now_ns(void);
int64_t tc_test_now_ms(void);
/* Sleep ms milliseconds: the step of a bounded poll, never a synchronisation. */
void tc_test_nap_ms(int ms);
/* Poll cond every millisecond until it holds or ms pass (bounded): for state
 * nothing signals (forked children's shared memory, /proc counts). */
#define TC_TEST_WAIT_UNTIL(cond, ms)                                                               \
    do {                                                                                           \
        int64_t wu_end_ = tc_test_now_ms() + (ms);                                                 \
        while (!(cond) && tc_test_now_ms() < wu_end_)                                              \
            tc_test_nap_ms(1);                                                                     \
    } while (0)
/* Whether mode m is to be tested: TC_TEST_MODES (a comma-separated list of
 * mode names) unset or empty means every mode. */
int tc_test_mode_enabled(tc_mode m);
/* Append v to an ordered record arr[0..cap) whose count is *n, from any
 * thread or forked child (keep all three in shared memory then): *lock is
 * held across the store and the count, so a reader that sees n entries sees
 * their values written (a count bumped first would show 0 for a moment). */
void tc_test_rec(atomic_int *lock, atomic_int *n, atomic_int *arr, int cap, int v);

/* ---- events: a counter, a log of tags, a condition variable ------------------ */

/* Callbacks in the server's threads post events; the test thread waits for a
 * count with a bound. Never call Criterion asserts outside the test thread:
 * record in an event and assert afterwards. */
typedef struct tc_test_event {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC */
    int count;
    char log[4096];    /* tags joined with ',' (truncated, never overflowing) */
} tc_test_event;

void tc_test_event_init(tc_test_event *e);
void tc_test_event_destroy(tc_test_event *e);
/* count++, append tag (if not NULL) to the log, wake the waiters. */
void tc_test_event_post(tc_test_event *e, const char *tag);
/* Like post, with a printf-formatted tag. */
void tc_test_event_postf(tc_test_event *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Wait until count >= target: 0, or -ETIMEDOUT after ms milliseconds. */
int tc_test_event_wait(tc_test_event *e, int target, int ms);
int tc_test_event_count(tc_test_event *e);
/* Copy the log into out (size n). */
void tc_test_event_log(tc_test_event *e, char *out, size_t n);

/* A tc_server_hooks.log callback: ctx is a tc_test_event; posts "LEVEL:msg". */
void tc_test_log_hook(tc_server *srv, tc_log_level level, const char *msg, void *ctx);

/* ---- a server in a background thread --------------------------------------- */

typedef struct tc_test_server {
    tc_server *srv;
    tc_addr addr;                      /* the real address (port filled in) */
    char addr_str[TC_ADDR_STRLEN];     /* the same, formatted */
    pthread_t thread;
    int thread_running;                /* a serving thread exists and is not joined */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int entered;                       /* the thread is about to call serve_forever */
    int done;                          /* serve_forever returned ... */
    int serve_rc;                      /* ... with this */
} tc_test_server;

/* A config at its defaults, except conn_timeout_ms bounded (TC_TEST_WAIT_MS) so
 * a handler can never block forever on a misbehaving test client. */
tc_server_config tc_test_config(void);
/* An echo handler's handle callback (the one from server.h's example). */
int tc_test_echo_handle(tc_conn *conn, void *ctx);
/* A handler whose handle is tc_test_echo_handle. */
tc_handler tc_test_echo_handler(void);

/* Create a server (no thread): listen (if not NULL) overrides cfg->listen; cfg
 * NULL means tc_test_config(); handler NULL means the echo handler. Fills addr
 * and addr_str. Returns tc_server_create's code. */
int tc_test_server_create(tc_test_server *ts, const char *listen, const tc_server_config *cfg,
                          const tc_handler *handler);
/* Start the thread that runs tc_server_serve_forever (asserts on failure). */
void tc_test_server_run(tc_test_server *ts);
/* create + run; asserts that create succeeds. */
void tc_test_server_start(tc_test_server *ts, const char *listen, const tc_server_config *cfg,
                          const tc_handler *handler);
/* Wait (bounded) until the thread is about to call serve_forever: 0 / -ETIMEDOUT. */
int tc_test_server_wait_entered(tc_test_server *ts, int ms);
/* Wait (bounded) until serve_forever returned: 0 / -ETIMEDOUT. */
int tc_test_server_wait_done(tc_test_server *ts, int ms);
/* Wait for serve_forever to return (asserting it does within TC_TEST_WAIT_MS)
 * and join the thread; returns serve_forever's code. */
int tc_test_server_join(tc_test_server *ts);
/* tc_server_shutdown, then join (bounded, asserted), then destroy.
 * Returns serve_forever's code (0 if the server was never run). */
int tc_test_server_stop(tc_test_server *ts);

/* ---- running out of descriptors ------------------------------------------------ */

struct rlimit;
/* Lower RLIMIT_NOFILE to the lowest free descriptor + headroom, saving the
 * limit in *old (restore it with setrlimit). Call it before the server
 * starts: a ring's accept request reads the limit when it is submitted. */
void tc_test_nofile_lower(struct rlimit *old, int headroom);
/* Take every free descriptor under the limit (dups of 0), at most cap, into
 * fds: the count. Asserts that none is left unless cap stopped it. */
int tc_test_nofile_fill(int *fds, int cap);

/* ---- raw clients (plain blocking sockets, bounded by SO_RCVTIMEO/SO_SNDTIMEO) - */

/* socket() + connect(); returns the descriptor or -errno. */
int tc_test_connect(const tc_addr *addr);
/* The same, asserting success. */
int tc_test_connect_ok(const tc_addr *addr);
/* Send all n bytes: 0 or -errno. */
int tc_test_send_all(int fd, const void *buf, size_t n);
/* Read until n bytes or end of stream: the count (< n at EOF), or -errno if an
 * error (-EAGAIN: the receive timeout) came first. */
ssize_t tc_test_recv_full(int fd, void *buf, size_t n);
/* Wait for the end of the stream: 0 at EOF, -ECONNRESET on reset, 1 if data
 * arrived instead, -EAGAIN on timeout, another -errno otherwise. */
int tc_test_recv_eof(int fd);
/* One echo conversation with a raw client: connect, send msg, half-close,
 * read it back, then EOF. Asserts every step. */
void tc_test_echo_roundtrip(const tc_addr *addr, const char *msg);

/* ---- resources --------------------------------------------------------------- */

/* Open descriptors of this process (/proc/self/fd), not counting the one used to list them. */
int tc_test_count_fds(void);
/* Threads of this process (/proc/self/task). */
int tc_test_count_threads(void);
/* A joined thread's task can linger in /proc for a moment after pthread_join
 * returns; poll (bounded) until the count is <= expected. Returns the last count. */
int tc_test_wait_threads(int expected, int ms);

/* This process's children (scanning /proc for ppid == getpid()), but the n
 * pids in except (may be NULL); *zombies (if not NULL) receives how many of
 * them are in state Z. */
int tc_test_count_children(const pid_t *except, size_t n, int *zombies);
/* The number of this process's threads if all but the caller are asleep
 * (blocked in the kernel: state S), else 0. */
int tc_test_threads_asleep(void);
/* SIGKILL and reap every child of this process (a suite's .fini: no child
 * may outlive a test, even a failed one). */
void tc_test_kill_children(void);
/* In a forked child about to exec a server: it gets SIGKILL when the test
 * that forked it ends, however it ends (a timeout kills the test before any
 * .fini runs); parent is the test's pid, taken before the fork. */
void tc_test_child_dies_with(pid_t parent);

/* Descriptors, threads and children (but the n pids in except) right now. */
typedef struct tc_test_counts {
    int fds, threads, children;
} tc_test_counts;
tc_test_counts tc_test_counts_now(const pid_t *except, size_t n);
/* Expect the counts of before again: the same descriptors and children, no
 * more threads. Threads linger in /proc/self/task for a moment after they
 * end, and detached threads, reapers and children end on their own: waits
 * (bounded, TC_TEST_WAIT_MS) for that first. what names the check. */
void tc_test_expect_counts(tc_test_counts before, const pid_t *except, size_t n,
                           const char *what);

/* Create a fresh directory under /tmp (short, for sun_path); asserts. */
void tc_test_tmpdir(char *buf, size_t n);
/* Remove the files in dir, then dir itself (one level). */
void tc_test_rmtree(const char *dir);

/* Whether IPv6 loopback (::1) can be bound here. */
int tc_test_have_ipv6(void);

#endif /* TCPCHAN_TESTS_HELPERS_H */
