/* SPDX-License-Identifier: MIT */
/* Real WebSocket clients against the real tool: Python's websockets
 * (tests/ws/client.py) and Node's ws (tests/ws/client.js) talk to
 * `tcpchan-echo --framing ws` in every mode: sizes 0 to 1 MiB, text and
 * binary, 1-byte fragments, a ping between fragments, the close handshake,
 * close codes 1009, 1002 and 1007, and plain HTTP answered with a 4xx. The
 * tool listens on 127.0.0.1:0 and says where; every wait is bounded. And a
 * real browser: headless Chromium in two tabs of examples/ws_chat. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

extern char **environ;

TestSuite(ws_clients, .timeout = 180);

/* Wait for pid, at most ms: its status, or -1 (then it is killed and reaped). */
static int wait_bounded(pid_t pid, int ms)
{
    int st;
    int64_t end = tc_test_now_ms() + ms;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        if (r < 0 && errno != EINTR)
            return -1;
        if (tc_test_now_ms() >= end) {
            kill(pid, SIGKILL);
            (void)waitpid(pid, &st, 0);
            return -1;
        }
        tc_test_nap_ms(5);
    }
}

struct echo {
    pid_t pid;
    char addr[TC_ADDR_STRLEN];
};

/* Start argv[0]; its address from its first line ("listening on ADDR"). */
static void server_start(struct echo *e, char **argv)
{
    int out[2];
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    cr_assert_eq(posix_spawn(&e->pid, argv[0], &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    char line[128] = "";
    size_t n = 0;
    /* The line comes once it listens; bounded by the read below and the suite's timeout. */
    while (n + 1 < sizeof line) {
        ssize_t r = read(out[0], line + n, 1);
        if (r <= 0 || line[n] == '\n')
            break;
        n++;
    }
    line[n] = '\0';
    close(out[0]);
    cr_assert(sscanf(line, "listening on %63s", e->addr) == 1, "%s said \"%s\"", argv[0], line);
}

/* tcpchan-echo --framing ws in mode. */
static void echo_start(struct echo *e, tc_mode mode)
{
    char *argv[] = {TC_ECHO_BIN, "--framing", "ws", "--listen", "127.0.0.1:0", "--mode",
                    (char *)tc_mode_name(mode), "--workers", "2", NULL};
    server_start(e, argv);
}

static void echo_stop(struct echo *e)
{
    kill(e->pid, SIGTERM);
    int st = wait_bounded(e->pid, TC_TEST_WAIT_MS * 2);
    cr_assert(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the server ended badly (%d)",
              st);
}

/* Run a client script: its exit status (-1: killed at the bound), its
 * output in out. */
static int run_script(const char *prog, const char *script, const char *addr, char *out,
                      size_t cap)
{
    char log[] = "/tmp/tc_ws_client_XXXXXX";
    int fd = mkstemp(log);
    cr_assert_geq(fd, 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd, 1);
    posix_spawn_file_actions_adddup2(&fa, fd, 2);
    char path[512];
    snprintf(path, sizeof path, "%s/tests/ws/%s", TC_SOURCE_DIR, script);
    char *argv[] = {(char *)prog, path, (char *)addr, NULL};
    pid_t pid;
    int rc = posix_spawnp(&pid, prog, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    cr_assert_eq(rc, 0, "cannot run %s: %s", prog, strerror(rc));
    int st = wait_bounded(pid, tc_test_ms(120000));
    ssize_t n = pread(fd, out, cap - 1, 0);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(log);
    return st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Run a client that must succeed; its output goes to the test's log. */
static void run_client(const char *prog, const char *script, const char *addr)
{
    char out[4096];
    int st = run_script(prog, script, addr, out, sizeof out);
    cr_assert_eq(st, 0, "%s %s failed (status %d):\n%s", prog, script, st, out);
    cr_log_info("%s", out);
}

/* Debian's python3 (the one python3-websockets is for), where PATH may
 * find another first. */
static const char *python(void)
{
    return access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
}

ParameterizedTestParameters(ws_clients, python_websockets)
{
    static tc_mode params[5];
    size_t n = 0;
    for (int m = TC_MODE_INLINE; m <= TC_MODE_EVENT; m++)
        if (tc_test_mode_enabled((tc_mode)m))
            params[n++] = (tc_mode)m;
    return cr_make_param_array(tc_mode, params, n);
}

ParameterizedTest(tc_mode *mode, ws_clients, python_websockets)
{
    struct echo e;
    echo_start(&e, *mode);
    run_client(python(), "client.py", e.addr);
    echo_stop(&e);
}

ParameterizedTestParameters(ws_clients, node_ws)
{
    static tc_mode params[5];
    size_t n = 0;
    for (int m = TC_MODE_INLINE; m <= TC_MODE_EVENT; m++)
        if (tc_test_mode_enabled((tc_mode)m))
            params[n++] = (tc_mode)m;
    return cr_make_param_array(tc_mode, params, n);
}

ParameterizedTest(tc_mode *mode, ws_clients, node_ws)
{
    /* Debian's node-ws lives in /usr/share/nodejs, which a node from
     * elsewhere does not search. */
    const char *np = getenv("NODE_PATH");
    char buf[1024];
    snprintf(buf, sizeof buf, "%s%s/usr/share/nodejs", np ? np : "", np && *np ? ":" : "");
    setenv("NODE_PATH", buf, 1);
    struct echo e;
    echo_start(&e, *mode);
    run_client("node", "client.js", e.addr);
    echo_stop(&e);
}

/* A real browser: headless Chromium opens examples/ws_chat in two tabs,
 * each sends a line through the page's form, each shows both. Skipped, with
 * one line, only where chromium is not installed. */
Test(ws_clients, chromium_chat)
{
    struct echo e;
    char *argv[] = {TC_CHAT_BIN, "127.0.0.1:0", NULL};
    server_start(&e, argv);
    char out[4096];
    int st = run_script(python(), "chat_browser.py", e.addr, out, sizeof out);
    echo_stop(&e);
    if (st == 77)
        cr_skip_test("%s", out);
    cr_assert_eq(st, 0, "chat_browser.py failed (status %d):\n%s", st, out);
    cr_log_info("%s", out);
}
