/* SPDX-License-Identifier: MIT */
/* End to end behind a real HAProxy, on loopback: tcpchan-echo --proxy required
 * --greet as the backend, HAProxy from the configuration in haproxy.cfg.in
 * (the one docs/deploy.md shows: checked here) with a send-proxy (v1) and a
 * send-proxy-v2 frontend. A client through HAProxy must be seen with its own
 * address and port; a client going around it must be refused. Skipped, with
 * a message, only where haproxy is not installed. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "helpers.h"

TestSuite(haproxy, .timeout = 60);

static const char *find_haproxy(void)
{
    static char path[256];
    const char *env = getenv("PATH");
    char dirs[1024];
    snprintf(dirs, sizeof dirs, "%s:/usr/sbin:/usr/local/sbin:/sbin", env ? env : "/usr/bin");
    for (char *save, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(path, sizeof path, "%s/haproxy", d);
        if (access(path, X_OK) == 0)
            return path;
    }
    return NULL;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    static char buf[16384];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return strdup(buf);
}

/* Replace every @KEY@ in text. */
static char *subst(const char *text, const char *key, const char *val)
{
    size_t kl = strlen(key), vl = strlen(val), n = 0;
    for (const char *p = text; (p = strstr(p, key)); p += kl)
        n++;
    char *out = malloc(strlen(text) + n * vl + 1), *o = out;
    for (const char *p = text, *q; ; p = q + kl) {
        q = strstr(p, key);
        size_t l = q ? (size_t)(q - p) : strlen(p);
        memcpy(o, p, l);
        o += l;
        if (!q)
            break;
        memcpy(o, val, vl);
        o += vl;
    }
    *o = '\0';
    return out;
}

/* A port for HAProxy's frontend, held until HAProxy has bound it too: a bound
 * SO_REUSEPORT socket that never listens (HAProxy binds with SO_REUSEPORT). */
static int hold_port(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;
    cr_assert_geq(fd, 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static pid_t spawn(char *const argv[], int out_fd, int err_fd)
{
    pid_t pid = fork();
    if (pid < 0)
        cr_assert_fail("fork: %s", strerror(errno)); /* not in the child: no Criterion there */
    if (pid == 0) {
        if (out_fd >= 0)
            dup2(out_fd, 1);
        if (err_fd >= 0)
            dup2(err_fd, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static int stop(pid_t pid)
{
    int status;
    kill(pid, SIGTERM);
    int64_t end = tc_test_now_ms() + TC_TEST_WAIT_MS;
    while (waitpid(pid, &status, WNOHANG) != pid) {
        if (tc_test_now_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        struct timespec ts = {0, 5 * 1000000};
        nanosleep(&ts, NULL);
    }
    return status;
}

static int read_line(int fd, char *buf, size_t n)
{
    size_t got = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (got < n - 1) {
        if (poll(&p, 1, TC_TEST_WAIT_MS) != 1)
            return -ETIMEDOUT;
        ssize_t r = read(fd, buf + got, 1);
        if (r <= 0)
            break;
        if (buf[got] == '\n')
            break;
        got++;
    }
    buf[got] = '\0';
    return (int)got;
}

/* Connect through a frontend until HAProxy answers with the greeting (it
 * listens a moment after it starts; until then the held port refuses). */
static int connect_through(const tc_addr *front, char *line, size_t n)
{
    int64_t end = tc_test_now_ms() + TC_TEST_WAIT_MS;
    for (;;) {
        int fd = tc_test_connect(front);
        if (fd >= 0 && read_line(fd, line, n) > 0)
            return fd;
        if (fd >= 0)
            close(fd);
        cr_assert_lt(tc_test_now_ms(), end, "no answer through HAProxy on port %d",
                     tc_addr_port(front));
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL); /* HAProxy gives no readiness signal to wait on */
    }
}

static void local_of(int fd, char *buf)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    tc_addr a;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    tc_addr_from_sockaddr(&a, (struct sockaddr *)&ss, len);
    tc_addr_format(&a, buf, TC_ADDR_STRLEN);
}

Test(haproxy, client_address_through_send_proxy_v1_and_v2)
{
    const char *haproxy = find_haproxy();
    if (!haproxy)
        cr_skip_test("haproxy is not installed: apt-get install haproxy (bash scripts/test "
                     "installs it), then run this test again");
    char version[256];
    {
        int p[2];
        cr_assert_eq(pipe(p), 0);
        char *argv[] = {(char *)haproxy, "-v", NULL};
        pid_t pid = spawn(argv, p[1], p[1]);
        close(p[1]);
        read_line(p[0], version, sizeof version);
        close(p[0]);
        waitpid(pid, NULL, 0);
        cr_log_info("%s", version);
    }

    /* The backend: tcpchan-echo requiring the header, greeting with the peer it sees. */
    int out[2];
    cr_assert_eq(pipe(out), 0);
    char *echo_argv[] = {TC_ECHO_BIN, "--listen", "127.0.0.1:0", "--proxy", "required", "--greet",
                         NULL};
    pid_t echo = spawn(echo_argv, out[1], -1);
    close(out[1]);
    char line[512], backend[64];
    cr_assert_gt(read_line(out[0], line, sizeof line), 0);
    cr_assert_eq(sscanf(line, "listening on %63s", backend), 1, "tcpchan-echo: %s", line);

    /* HAProxy, from the template the documentation shows. */
    char *tmpl = slurp(TC_SOURCE_DIR "/tests/deploy/haproxy.cfg.in");
    char *doc = slurp(TC_SOURCE_DIR "/docs/deploy.md");
    cr_assert_not_null(strstr(doc, tmpl), "docs/deploy.md does not show tests/deploy/haproxy.cfg.in");
    int p1, p2, h1 = hold_port(&p1), h2 = hold_port(&p2);
    char f1[64], f2[64];
    snprintf(f1, sizeof f1, "127.0.0.1:%d", p1);
    snprintf(f2, sizeof f2, "127.0.0.1:%d", p2);
    char *a = subst(tmpl, "@FRONT_V1@", f1), *b = subst(a, "@FRONT_V2@", f2),
         *cfg = subst(b, "@BACKEND@", backend);
    char dir[64], cfg_path[128], log_path[128];
    tc_test_tmpdir(dir, sizeof dir);
    snprintf(cfg_path, sizeof cfg_path, "%s/haproxy.cfg", dir);
    snprintf(log_path, sizeof log_path, "%s/haproxy.log", dir);
    FILE *f = fopen(cfg_path, "w");
    fputs(cfg, f);
    fclose(f);
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    char *hp_argv[] = {(char *)haproxy, "-db", "-f", cfg_path, NULL};
    pid_t hp = spawn(hp_argv, log_fd, log_fd);
    close(log_fd);

    tc_addr front[2];
    cr_assert_eq(tc_addr_parse(&front[0], f1), 0);
    cr_assert_eq(tc_addr_parse(&front[1], f2), 0);
    for (int v = 0; v < 2; v++) {
        for (int i = 0; i < 3; i++) {
            int fd = connect_through(&front[v], line, sizeof line);
            char me[TC_ADDR_STRLEN], peer[TC_ADDR_STRLEN], via[TC_ADDR_STRLEN];
            long pid;
            local_of(fd, me);
            cr_log_info("v%d client %s: server saw \"%s\"", v + 1, me, line);
            cr_assert_eq(sscanf(line, "peer=%127s proxy=%127s pid=%ld", peer, via, &pid), 3,
                         "greeting: %s", line);
            cr_assert_str_eq(peer, me, "v%d: the server saw %s, the client is %s", v + 1, peer, me);
            cr_assert_str_neq(via, "-", "no PROXY header seen");
            cr_assert_str_neq(via, me);
            /* And the stream goes on through the proxy. */
            cr_assert_eq(tc_test_send_all(fd, "ping\n", 5), 0);
            cr_assert_gt(read_line(fd, line, sizeof line), 0);
            cr_assert_str_eq(line, "ping");
            close(fd);
        }
    }
    /* Around the proxy: no header, so no service. */
    tc_addr direct;
    cr_assert_eq(tc_addr_parse(&direct, backend), 0);
    int fd = tc_test_connect_ok(&direct);
    cr_assert_eq(tc_test_send_all(fd, "hello\n", 6), 0);
    char buf[64];
    cr_assert_leq(tc_test_recv_full(fd, buf, sizeof buf), 0, "served without a PROXY header");
    close(fd);

    /* HAProxy's health checks (a connection that sends the header and
     * closes) pass against both backends. */
    char *hlog = NULL;
    int64_t end = tc_test_now_ms() + TC_TEST_WAIT_MS;
    for (;;) {
        free(hlog);
        hlog = slurp(log_path);
        if (strstr(hlog, "server echo_v1/echo1 succeeded") &&
            strstr(hlog, "server echo_v2/echo1 succeeded"))
            break;
        cr_assert_lt(tc_test_now_ms(), end, "no health check passed:\n%s", hlog);
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL); /* HAProxy's log is the only sign of a check */
    }
    int st = stop(hp);
    cr_assert_neq(st, -1, "haproxy did not stop");
    free(hlog);
    hlog = slurp(log_path);
    cr_log_info("haproxy log:\n%s", hlog);
    cr_assert_null(strstr(hlog, "is DOWN"), "a health check failed:\n%s", hlog);
    cr_assert_null(strstr(hlog, "failed"), "a health check failed:\n%s", hlog);
    st = stop(echo);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "tcpchan-echo: status %d", st);
    close(out[0]);
    close(h1);
    close(h2);
    tc_test_rmtree(dir);
    free(tmpl), free(doc), free(a), free(b), free(cfg), free(hlog);
}
