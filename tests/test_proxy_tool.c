/* SPDX-License-Identifier: MIT */
/* tcpchan-proxy end to end (examples/tcpchan_proxy.c, the real binary):
 * echo through it to tcpchan-echo, a backend that refuses, a backend that
 * stalls and a client that never reads (the proxy's memory stays bounded
 * and every byte arrives, in order, once the reader reads), SIGTERM -> 0.
 * Loopback only, port 0 everywhere. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

TestSuite(proxy_tool, .timeout = 60);

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

/* ---- processes ------------------------------------------------------------------ */

struct tool {
    pid_t pid;
    int out, err;       /* its stdout and stderr, read ends */
    char addr[192];     /* from its "listening on" line */
};

static int read_line(int fd, char *buf, size_t n)
{
    size_t got = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (got < n - 1) {
        if (poll(&p, 1, TC_TEST_WAIT_MS) != 1)
            return -ETIMEDOUT;
        ssize_t r = read(fd, buf + got, 1);
        if (r <= 0 || buf[got] == '\n')
            break;
        got++;
    }
    buf[got] = '\0';
    return (int)got;
}

/* Start argv, wait for its "listening on ADDR" line. */
static void tool_start(struct tool *t, char *const argv[])
{
    int out[2], err[2];
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(err, O_CLOEXEC), 0);
    pid_t parent = getpid(), pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        tc_test_child_dies_with(parent);
        dup2(out[1], 1);
        dup2(err[1], 2);
        execv(argv[0], argv);
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    t->pid = pid;
    t->out = out[0];
    t->err = err[0];
    char line[192];
    int n = read_line(t->out, line, sizeof line);
    cr_assert(n > 13 && !strncmp(line, "listening on ", 13), "%s: no listening line (%d): %s",
              argv[0], n, line);
    snprintf(t->addr, sizeof t->addr, "%s", line + 13);
}

/* SIGTERM, then its exit status (bounded; SIGKILL past the bound: -1). */
static int tool_stop(struct tool *t)
{
    int status;
    kill(t->pid, SIGTERM);
    int64_t end = tc_test_now_ms() + TC_TEST_WAIT_MS;
    while (waitpid(t->pid, &status, WNOHANG) != t->pid) {
        if (tc_test_now_ms() > end) {
            kill(t->pid, SIGKILL);
            waitpid(t->pid, &status, 0);
            status = -1;
            break;
        }
        tc_test_nap_ms(5);
    }
    close(t->out);
    close(t->err);
    return status;
}

static void echo_start(struct tool *t)
{
    char *argv[] = {TC_ECHO_BIN, "--listen", "127.0.0.1:0", "--mode", "event", "--workers", "1",
                    NULL};
    tool_start(t, argv);
}

static void proxy_start(struct tool *t, const char *to)
{
    char *argv[] = {TC_PROXY_BIN, "--listen", "127.0.0.1:0", "--to", (char *)to, NULL};
    tool_start(t, argv);
}

static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static int connect_to(const char *text)
{
    tc_addr a;
    cr_assert_eq(tc_addr_parse(&a, text), 0, "%s", text);
    return tc_test_connect_ok(&a);
}

/* ---- a byte stream to check ---------------------------------------------------------- */

static unsigned char pattern(size_t i)
{
    return (unsigned char)(i % 251);
}

/* Sends total bytes of the pattern on fd, in pieces (blocking, bounded by
 * SO_SNDTIMEO as the helpers set it), counting what went. */
struct writer {
    int fd;
    size_t total;
    atomic_size_t sent;
    atomic_int rc;
    pthread_t thread;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    static _Thread_local unsigned char buf[64 * 1024];
    size_t off = 0;
    while (off < w->total) {
        size_t n = w->total - off < sizeof buf ? w->total - off : sizeof buf;
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern(off + i);
        ssize_t r = send(w->fd, buf, n, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            atomic_store(&w->rc, r < 0 ? -errno : -EPIPE);
            return NULL;
        }
        off += (size_t)r;
        atomic_store(&w->sent, off);
    }
    return NULL;
}

static void writer_start(struct writer *w, int fd, size_t total)
{
    memset(w, 0, sizeof *w);
    w->fd = fd;
    w->total = total;
    /* No send timeout: the test's bounded waits decide; a stuck writer is
     * woken by shutting its socket. */
    struct timeval tv = {0, 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    cr_assert_eq(pthread_create(&w->thread, NULL, writer_main, w), 0);
}

/* Wait until the writer has made no progress for 300 ms (it is held up), or
 * has finished; bounded. */
static size_t writer_stalled(struct writer *w)
{
    size_t last = (size_t)-1;
    int64_t since = tc_test_now_ms(), end = since + TC_TEST_WAIT_MS;
    while (tc_test_now_ms() < end) {
        size_t now = atomic_load(&w->sent);
        if (now != last) {
            last = now;
            since = tc_test_now_ms();
        } else if (tc_test_now_ms() - since >= 300 || now == w->total) {
            break;
        }
        tc_test_nap_ms(10);
    }
    return last;
}

/* Read total bytes from fd, checking the pattern: how many matched. */
static size_t read_pattern(int fd, size_t total)
{
    static unsigned char buf[64 * 1024];
    size_t got = 0;
    while (got < total) {
        size_t want = total - got < sizeof buf ? total - got : sizeof buf;
        ssize_t r = recv(fd, buf, want, 0);
        if (r <= 0)
            break;
        for (ssize_t i = 0; i < r; i++)
            if (buf[i] != pattern(got + (size_t)i))
                return got + (size_t)i;
        got += (size_t)r;
    }
    return got;
}

/* ---- tests --------------------------------------------------------------------------- */

Test(proxy_tool, echo_through_the_proxy_and_sigterm)
{
    struct tool echo, proxy;
    echo_start(&echo);
    proxy_start(&proxy, echo.addr);
    enum { CLIENTS = 4 };
    int fd[CLIENTS];
    for (int i = 0; i < CLIENTS; i++)
        fd[i] = connect_to(proxy.addr);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < CLIENTS; i++) {
            char msg[64], got[64];
            int n = snprintf(msg, sizeof msg, "client %d round %d\n", i, round);
            cr_assert_eq(tc_test_send_all(fd[i], msg, (size_t)n), 0);
            cr_assert_eq(tc_test_recv_full(fd[i], got, (size_t)n), n, "client %d: no echo", i);
            cr_assert_eq(memcmp(got, msg, (size_t)n), 0);
        }
    }
    /* A half-close is passed on: the answer still comes back, then the end. */
    tc_addr pa;
    cr_assert_eq(tc_addr_parse(&pa, proxy.addr), 0);
    tc_test_echo_roundtrip(&pa, "half-closed and still answered");
    /* A megabyte both ways, written and read at once. */
    struct writer w;
    writer_start(&w, fd[0], (size_t)1 << 20);
    cr_assert_eq(read_pattern(fd[0], (size_t)1 << 20), (size_t)1 << 20, "echo lost bytes");
    pthread_join(w.thread, NULL);
    cr_assert_eq(atomic_load(&w.rc), 0);
    /* A client that leaves closes its pair: the others go on. */
    close(fd[0]);
    cr_assert_eq(tc_test_send_all(fd[1], "still\n", 6), 0);
    char got[6];
    cr_assert_eq(tc_test_recv_full(fd[1], got, 6), 6);
    /* SIGTERM with clients connected: they are closed, the proxy exits 0. */
    int status = tool_stop(&proxy);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "proxy status %d", status);
    for (int i = 1; i < CLIENTS; i++) {
        cr_assert_eq(tc_test_recv_eof(fd[i]), 0, "client %d not closed by the drain", i);
        close(fd[i]);
    }
    status = tool_stop(&echo);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

Test(proxy_tool, backend_refusing)
{
    /* A port nobody listens on. */
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert_eq(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(getsockname(l, (struct sockaddr *)&a, &len), 0);
    char to[64];
    snprintf(to, sizeof to, "127.0.0.1:%d", ntohs(a.sin_port));
    close(l);
    struct tool proxy;
    proxy_start(&proxy, to);
    for (int i = 0; i < 3; i++) {
        int fd = connect_to(proxy.addr);
        (void)tc_test_send_all(fd, "hello\n", 6);
        int rc = tc_test_recv_eof(fd);
        cr_assert(rc == 0 || rc == -ECONNRESET, "client %d: not closed (%d)", i, rc);
        close(fd);
    }
    char line[256];
    cr_assert_gt(read_line(proxy.err, line, sizeof line), 0);
    cr_assert(strstr(line, "refused"), "stderr: %s", line);
    int status = tool_stop(&proxy);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "proxy status %d", status);
}

#define FLOOD ((size_t)48 << 20)

/* Growth of the proxy's RSS allowed while FLOOD bytes are held up: two
 * queues of about TC_SEND_HIGH_WATER and a receive's worth each, and room. */
static long rss_bound_kib(void)
{
    return SANITIZED ? 256 * 1024 : 16 * 1024;
}

/* A backend that accepts and does not read: the client is held up, the
 * proxy stays small; once the backend reads, every byte arrives in order. */
Test(proxy_tool, backend_stalling)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert_eq(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(l, 4), 0);
    cr_assert_eq(getsockname(l, (struct sockaddr *)&a, &len), 0);
    char to[64];
    snprintf(to, sizeof to, "127.0.0.1:%d", ntohs(a.sin_port));
    struct tool proxy;
    proxy_start(&proxy, to);
    long rss0 = rss_kib(proxy.pid);
    int fd = connect_to(proxy.addr);
    struct pollfd p = {.fd = l, .events = POLLIN};
    cr_assert_eq(poll(&p, 1, TC_TEST_WAIT_MS), 1, "the proxy never dialled");
    int b = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    cr_assert_geq(b, 0);
    struct writer w;
    writer_start(&w, fd, FLOOD);
    size_t held = writer_stalled(&w);
    cr_assert_lt(held, FLOOD, "the client was never held up");
    long grew = rss_kib(proxy.pid) - rss0;
    cr_assert_lt(grew, rss_bound_kib(), "the proxy grew by %ld KiB holding %zu bytes", grew, held);
    struct timeval tv = {TC_TEST_WAIT_MS / 1000, 0};
    (void)setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    cr_assert_eq(read_pattern(b, FLOOD), FLOOD, "bytes lost or out of order");
    pthread_join(w.thread, NULL);
    cr_assert_eq(atomic_load(&w.rc), 0);
    close(fd);
    cr_assert_eq(tc_test_recv_eof(b), 0, "the client's end did not reach the backend");
    close(b);
    close(l);
    int status = tool_stop(&proxy);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "proxy status %d", status);
}

/* A client that sends to an echo backend and does not read: the echo
 * comes back to the proxy faster than the client takes it; the proxy
 * stops reading the backend, the backend stops reading, the proxy stops
 * reading the client. Bounded memory; then the client reads it all. */
Test(proxy_tool, client_never_reading)
{
    struct tool echo, proxy;
    echo_start(&echo);
    proxy_start(&proxy, echo.addr);
    long rss0 = rss_kib(proxy.pid);
    int fd = connect_to(proxy.addr);
    struct writer w;
    writer_start(&w, fd, FLOOD);
    size_t held = writer_stalled(&w);
    cr_assert_lt(held, FLOOD, "the client was never held up");
    long grew = rss_kib(proxy.pid) - rss0;
    cr_assert_lt(grew, rss_bound_kib(), "the proxy grew by %ld KiB holding %zu bytes", grew, held);
    struct timeval tv = {TC_TEST_WAIT_MS / 1000, 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    cr_assert_eq(read_pattern(fd, FLOOD), FLOOD, "bytes lost or out of order");
    pthread_join(w.thread, NULL);
    cr_assert_eq(atomic_load(&w.rc), 0);
    close(fd);
    int status = tool_stop(&proxy);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "proxy status %d", status);
    status = tool_stop(&echo);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
