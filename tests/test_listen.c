/* SPDX-License-Identifier: MIT */
/* Listeners the process is given: adopting a listening socket (adopt_fd,
 * descriptor 0 included), systemd socket activation (tc_listen_fds with
 * LISTEN_PID / LISTEN_FDS / LISTEN_FDNAMES set up by the test, in a forked
 * child and through exec of tcpchan-echo), and inetd-style single connections. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "helpers.h"

TestSuite(listen, .timeout = 30);

/* A blocking, inheritable TCP listener on 127.0.0.1:0 (as a service manager
 * would pass it); its address in *addr. */
static int listener(tc_addr *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(fd, 16), 0);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    tc_addr_from_sockaddr(addr, (struct sockaddr *)&ss, len);
    return fd;
}

static tc_server_config adopt_config(int fd, tc_test_event *log)
{
    tc_server_config cfg = tc_test_config();
    cfg.adopt_fd = TC_ON;
    cfg.listen_fd = fd;
    if (log) {
        cfg.hooks.log = tc_test_log_hook;
        cfg.hooks.ctx = log;
    }
    return cfg;
}

Test(listen, adopt_a_listening_socket)
{
    tc_addr want;
    int fd = listener(&want);
    int fds = tc_test_count_fds();
    tc_server_config cfg = adopt_config(fd, NULL);
    cfg.mode = TC_MODE_THREADING;
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, NULL);
    cr_assert_eq(tc_server_fileno(ts.srv), fd);
    cr_assert_eq(memcmp(&ts.addr.u.in4, &want.u.in4, sizeof want.u.in4), 0, "address %s",
                 ts.addr_str);
    cr_assert(fcntl(fd, F_GETFL) & O_NONBLOCK, "not made non-blocking");
    cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC, "not made close-on-exec");
    tc_test_echo_roundtrip(&ts.addr, "adopted");
    tc_test_echo_roundtrip(&ts.addr, "again");
    tc_test_server_stop(&ts);
    /* destroy closed it: ownership passed on success. */
    cr_assert_eq(fcntl(fd, F_GETFD), -1);
    cr_assert_eq(errno, EBADF);
    cr_assert_eq(tc_test_count_fds(), fds - 1);
}

/* inetd and xinetd (wait mode) pass a listening socket as stdin: fd 0. */
Test(listen, adopt_descriptor_zero)
{
    tc_addr addr;
    int saved = dup(0), fd = listener(&addr);
    cr_assert_geq(saved, 0);
    cr_assert_eq(dup2(fd, 0), 0);
    close(fd);
    tc_server_config cfg = adopt_config(0, NULL);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, NULL);
    cr_assert_eq(tc_server_fileno(ts.srv), 0);
    tc_test_echo_roundtrip(&ts.addr, "from stdin's listener");
    tc_test_server_stop(&ts);
    cr_assert_eq(dup2(saved, 0), 0);
    close(saved);
}

Test(listen, adopt_a_unix_socket_leaves_its_file)
{
    char dir[64], path[128];
    tc_test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "unix:%s/s", dir);
    tc_addr a;
    cr_assert_eq(tc_addr_parse(&a, path), 0);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    cr_assert_eq(bind(fd, &a.u.sa, a.len), 0);
    cr_assert_eq(listen(fd, 4), 0);
    tc_server_config cfg = adopt_config(fd, NULL);
    tc_test_server ts;
    tc_test_server_start(&ts, NULL, &cfg, NULL);
    cr_assert_str_eq(ts.addr_str, path);
    tc_test_echo_roundtrip(&ts.addr, "over unix");
    tc_test_server_stop(&ts);
    struct stat st;
    cr_assert_eq(stat(path + 5, &st), 0, "the file was removed: the server did not create it");
    tc_test_rmtree(dir);
}

Test(listen, adopt_refuses_what_is_not_a_listener)
{
    tc_test_event log;
    tc_test_event_init(&log);
    tc_server *srv;
    tc_handler h = tc_test_echo_handler();
    char text[4096];
    struct {
        int fd;
        const char *why;
    } cases[5];
    int p[2];
    cr_assert_eq(pipe(p), 0);
    int udp = socket(AF_INET, SOCK_DGRAM, 0), tcp = socket(AF_INET, SOCK_STREAM, 0);
    int seq = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    cases[0].fd = p[0], cases[0].why = "is not a socket";
    cases[1].fd = udp, cases[1].why = "is a datagram socket that is not bound";
    cases[2].fd = tcp, cases[2].why = "is not listening";
    cases[3].fd = 999, cases[3].why = "is not an open descriptor";
    cases[4].fd = seq, cases[4].why = "is not a SOCK_STREAM or SOCK_DGRAM socket";
    for (int i = 0; i < 5; i++) {
        tc_server_config cfg = adopt_config(cases[i].fd, &log);
        cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG, "case %d", i);
        tc_test_event_log(&log, text, sizeof text);
        cr_assert(strstr(text, cases[i].why), "case %d: log: %s", i, text);
        if (cases[i].fd != 999)
            cr_assert_neq(fcntl(cases[i].fd, F_GETFD), -1, "case %d: closed on failure", i);
    }
    /* The listener fields are exclusive, and listen_fd needs the switch. */
    tc_addr addr;
    int fd = listener(&addr);
    tc_server_config cfg = adopt_config(fd, &log);
    cfg.listen = "127.0.0.1:0";
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
    cfg = adopt_config(-1, &log);
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
    cfg = tc_test_config();
    cfg.listen_fd = fd;
    cfg.hooks.log = tc_test_log_hook;
    cfg.hooks.ctx = &log;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
    tc_test_event_log(&log, text, sizeof text);
    cr_assert(strstr(text, "listen_fd is set, but adopt_fd is not TC_ON"), "log: %s", text);
    cfg.listen_fd = 0;
    cfg.adopt_fd = 5;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
    /* A failure after the adoption (an unavailable mode) leaves it open too. */
    cfg = adopt_config(fd, &log);
    cfg.mode = TC_MODE_THREADING;
    cfg.thread_stack_size = 1;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
    cr_assert_neq(fcntl(fd, F_GETFD), -1);
    close(fd);
    close(p[0]);
    close(p[1]);
    close(udp);
    close(tcp);
    close(seq);
    tc_test_event_destroy(&log);
}

/* ---- socket activation ------------------------------------------------------------ */

/* In a forked child: put the listeners at 3, 4, ... as a service manager does. */
static void pass_fds(const int *fds, int n)
{
    int tmp[8];
    for (int i = 0; i < n; i++)
        tmp[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 100); /* out of the way of 3.. */
    for (int i = 0; i < n; i++)
        dup2(tmp[i], 3 + i); /* dup2 clears FD_CLOEXEC: inherited across exec */
    for (int i = 0; i < n; i++)
        close(tmp[i]);
}

static void set_env(const char *pid, const char *nfds, const char *names)
{
    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDS", nfds, 1);
    if (names)
        setenv("LISTEN_FDNAMES", names, 1);
    else
        unsetenv("LISTEN_FDNAMES");
}

static char *pidstr(pid_t pid)
{
    static char buf[32];
    snprintf(buf, sizeof buf, "%ld", (long)pid);
    return buf;
}

/* The child's checks of tc_listen_fds; returns the number of the first failed
 * check, or 0. No Criterion assertions in a forked child. */
static int activation_checks(void)
{
    int fds[4] = {-1, -1, -1, -1};
    set_env(pidstr(getpid()), "2", "one:two");
    if (tc_listen_fds(NULL, fds, 4) != 2 || fds[0] != 3 || fds[1] != 4)
        return 1;
    if (!(fcntl(3, F_GETFD) & FD_CLOEXEC) || !(fcntl(4, F_GETFD) & FD_CLOEXEC))
        return 2;
    if (tc_listen_fds("two", fds, 1) != 1 || fds[0] != 4)
        return 3;
    if (tc_listen_fds("nope", fds, 1) != TC_ENOFDNAME)
        return 4;
    if (tc_listen_fds("two", NULL, 0) != 1 || tc_listen_fds("two", NULL, 1) != -EINVAL)
        return 5;
    set_env(pidstr(getppid()), "2", "one:two"); /* another process's sockets */
    if (tc_listen_fds(NULL, fds, 1) != TC_ENOLISTENFDS)
        return 6;
    set_env(pidstr(getpid()), "0", "");
    if (tc_listen_fds(NULL, fds, 1) != TC_ENOLISTENFDS)
        return 7;
    set_env(pidstr(getpid()), "x2", NULL);
    if (tc_listen_fds(NULL, fds, 1) != TC_ENOLISTENFDS)
        return 8;
    set_env(pidstr(getpid()), "2", "a:b:c");
    if (tc_listen_fds(NULL, fds, 1) != TC_EBADCONFIG)
        return 9;
    set_env(pidstr(getpid()), "2", "a");
    if (tc_listen_fds("a", fds, 1) != TC_EBADCONFIG)
        return 10;
    set_env(pidstr(getpid()), "2", NULL); /* an old manager: every socket is "unknown" */
    if (tc_listen_fds("unknown", fds, 4) != 2 || tc_listen_fds("one", fds, 1) != TC_ENOFDNAME)
        return 11;
    set_env(pidstr(getpid()), "3", "one:two:three"); /* fd 5 is not open */
    close(5);
    if (tc_listen_fds(NULL, fds, 1) != -EBADF)
        return 12;
    unsetenv("LISTEN_PID");
    if (tc_listen_fds(NULL, fds, 1) != TC_ENOLISTENFDS)
        return 13;
    /* Serve "two" for two connections. */
    set_env(pidstr(getpid()), "2", "one:two");
    if (tc_listen_fds("two", fds, 1) != 1)
        return 14;
    tc_server_config cfg;
    tc_server_config_init(&cfg);
    cfg.adopt_fd = TC_ON;
    cfg.listen_fd = fds[0];
    cfg.conn_timeout_ms = 5000;
    cfg.timeout_ms = 10000;
    tc_handler h = TC_HANDLER_INIT;
    h.handle = tc_test_echo_handle;
    tc_server *srv;
    if (tc_server_create(&srv, &cfg, &h) < 0)
        return 15;
    for (int i = 0; i < 2; i++)
        if (tc_server_handle_request(srv) < 0)
            return 16;
    tc_server_destroy(srv);
    return 0;
}

static int wait_exit(pid_t pid, int ms)
{
    int64_t end = tc_test_now_ms() + ms;
    int status;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (tc_test_now_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        struct timespec ts = {0, 5 * 1000000};
        nanosleep(&ts, NULL); /* a child's end has no descriptor to wait on here */
    }
}

Test(listen, socket_activation_in_a_child)
{
    tc_addr a1, a2;
    int fds[2] = {listener(&a1), listener(&a2)};
    pid_t parent = getpid(), pid = fork();
    if (pid < 0)
        cr_assert_fail("fork: %s", strerror(errno)); /* not in the child: no Criterion there */
    if (pid == 0) {
        tc_test_child_dies_with(parent);
        pass_fds(fds, 2);
        _exit(activation_checks());
    }
    close(fds[0]);
    close(fds[1]);
    /* The listener named "two" is served; connections wait in its backlog
     * until the child gets there. */
    tc_test_echo_roundtrip(&a2, "activated");
    tc_test_echo_roundtrip(&a2, "twice");
    int rc = wait_exit(pid, TC_TEST_WAIT_MS);
    cr_assert_eq(rc, 0, "check %d failed in the child", rc);
}

#ifdef TC_ECHO_BIN
/* Run tcpchan-echo as systemd would: fds 3.. inherited, the variables set
 * for its pid. Returns its pid; its stdout and stderr go to *out_fd. */
static pid_t spawn_echo(const int *fds, int n, const char *names, int wrong_pid, const char *listen,
                        int *out_fd)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    pid_t parent = getpid(), pid = fork();
    if (pid < 0)
        cr_assert_fail("fork: %s", strerror(errno)); /* not in the child: no Criterion there */
    if (pid == 0) {
        tc_test_child_dies_with(parent);
        dup2(p[1], 1);
        dup2(p[1], 2);
        pass_fds(fds, n);
        char nfds[8];
        snprintf(nfds, sizeof nfds, "%d", n);
        set_env(pidstr(wrong_pid ? getppid() : getpid()), nfds, names);
        execl(TC_ECHO_BIN, "tcpchan-echo", "--listen", listen, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    *out_fd = p[0];
    return pid;
}

static void read_line(int fd, char *buf, size_t n)
{
    size_t got = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (got < n - 1 && poll(&p, 1, TC_TEST_WAIT_MS) == 1) {
        ssize_t r = read(fd, buf + got, 1);
        if (r <= 0 || buf[got] == '\n')
            break;
        got++;
    }
    buf[got] = '\0';
}

Test(listen, socket_activation_of_tcpchan_echo)
{
    tc_addr a1, a2;
    int fds[2] = {listener(&a1), listener(&a2)}, out;
    char line[256], want[256];
    pid_t pid = spawn_echo(fds, 2, "web:echo", 0, "systemd:echo", &out);
    read_line(out, line, sizeof line);
    char addr[TC_ADDR_STRLEN];
    tc_addr_format(&a2, addr, sizeof addr);
    snprintf(want, sizeof want, "listening on %s", addr);
    cr_assert_str_eq(line, want);
    tc_test_echo_roundtrip(&a2, "hello systemd");
    kill(pid, SIGTERM);
    cr_assert_eq(wait_exit(pid, TC_TEST_WAIT_MS), 0);
    close(out);

    /* LISTEN_PID of another process: the sockets are not ours. */
    pid = spawn_echo(fds, 2, "web:echo", 1, "systemd:echo", &out);
    read_line(out, line, sizeof line);
    cr_assert(strstr(line, "no listening sockets passed to this process"), "stderr: %s", line);
    cr_assert_eq(wait_exit(pid, TC_TEST_WAIT_MS), 1);
    close(out);

    /* A name no socket has. */
    pid = spawn_echo(fds, 2, "web:echo", 0, "systemd:nope", &out);
    read_line(out, line, sizeof line);
    cr_assert_str_eq(line, "tcpchan-echo: --listen systemd:nope: no passed socket has that name");
    cr_assert_eq(wait_exit(pid, TC_TEST_WAIT_MS), 1);
    close(out);
    close(fds[0]);
    close(fds[1]);
}

/* Several sockets passed (issue 19): `--listen systemd` serves them all,
 * one "listening on" line each, in the order they were passed. */
Test(listen, socket_activation_of_several_sockets)
{
    tc_addr a1, a2;
    int fds[2] = {listener(&a1), listener(&a2)}, out;
    pid_t pid = spawn_echo(fds, 2, NULL, 0, "systemd", &out);
    tc_addr *want_addr[2] = {&a1, &a2};
    for (int i = 0; i < 2; i++) {
        char line[256], want[256], addr[TC_ADDR_STRLEN];
        read_line(out, line, sizeof line);
        tc_addr_format(want_addr[i], addr, sizeof addr);
        snprintf(want, sizeof want, "listening on %s", addr);
        cr_assert_str_eq(line, want);
    }
    tc_test_echo_roundtrip(&a1, "first socket");
    tc_test_echo_roundtrip(&a2, "second socket");
    kill(pid, SIGTERM);
    cr_assert_eq(wait_exit(pid, TC_TEST_WAIT_MS), 0);
    close(out);
    close(fds[0]);
    close(fds[1]);
}

/* A datagram socket passed by systemd (ListenDatagram=): tcpchan-echo
 * adopts it and echoes each datagram (issue 14). */
Test(listen, socket_activation_of_a_datagram_socket)
{
    int udp = socket(AF_INET, SOCK_DGRAM, 0), out;
    tc_addr a;
    cr_assert_eq(tc_addr_parse(&a, "127.0.0.1:0"), 0);
    cr_assert_eq(bind(udp, &a.u.sa, a.len), 0);
    socklen_t len = sizeof a.u;
    cr_assert_eq(getsockname(udp, &a.u.sa, &len), 0);
    a.len = len;
    a.socktype = SOCK_DGRAM;
    char line[256], want[256], addr[TC_ADDR_STRLEN];
    pid_t pid = spawn_echo(&udp, 1, "dns", 0, "systemd:dns", &out);
    read_line(out, line, sizeof line);
    tc_addr_format(&a, addr, sizeof addr);
    snprintf(want, sizeof want, "listening on %s", addr);
    cr_assert_str_eq(line, want);
    tc_conn *c;
    tc_dial_config dc = TC_DIAL_CONFIG_INIT;
    dc.timeout_ms = TC_TEST_WAIT_MS;
    cr_assert_eq(tc_dial(&c, addr, &dc), 0);
    cr_assert_eq(tc_conn_send(c, "activated", 9), 9);
    char got[16];
    cr_assert_eq(tc_conn_read(c, got, sizeof got), 9);
    cr_assert(memcmp(got, "activated", 9) == 0);
    tc_conn_close(c);
    kill(pid, SIGTERM);
    cr_assert_eq(wait_exit(pid, TC_TEST_WAIT_MS), 0);
    close(out);
    close(udp);
}
#endif

/* ---- inetd ----------------------------------------------------------------------- */

/* A connected pair over loopback: *client and *server. */
static void tcp_pair(int *client, int *server)
{
    tc_addr a;
    int l = listener(&a);
    *client = tc_test_connect_ok(&a);
    *server = accept(l, NULL, NULL);
    cr_assert_geq(*server, 0);
    close(l);
}

struct inetd_run {
    int fd, rc;
    tc_server_config cfg;
    tc_handler h;
};

static void *inetd_main(void *arg)
{
    struct inetd_run *r = arg;
    r->rc = tc_server_serve_inetd(&r->cfg, &r->h, r->fd);
    return NULL;
}

static int greet_handle(tc_conn *c, void *ctx)
{
    char p[TC_ADDR_STRLEN];
    (void)ctx;
    tc_addr_format(tc_conn_peer(c), p, sizeof p);
    tc_conn_printf(c, "%s\n", p);
    return tc_test_echo_handle(c, NULL);
}

Test(listen, inetd_one_connection)
{
    int c, s;
    tcp_pair(&c, &s);
    int fds = tc_test_count_fds();
    struct inetd_run r = {.fd = s, .cfg = tc_test_config(), .h = TC_HANDLER_INIT};
    r.h.handle = greet_handle;
    r.cfg.proxy_protocol = TC_PROXY_REQUIRED;
    r.cfg.mode = TC_MODE_FORKING; /* ignored: the connection runs in the calling thread */
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, inetd_main, &r), 0);
    const char *in = "PROXY TCP4 203.0.113.5 203.0.113.6 4242 80\r\npayload";
    cr_assert_eq(tc_test_send_all(c, in, strlen(in)), 0);
    shutdown(c, SHUT_WR);
    char buf[256];
    ssize_t got = tc_test_recv_full(c, buf, sizeof buf - 1);
    cr_assert_gt(got, 0);
    buf[got] = '\0';
    cr_assert_str_eq(buf, "203.0.113.5:4242\npayload");
    cr_assert_eq(pthread_join(t, NULL), 0);
    cr_assert_eq(r.rc, 0);
    cr_assert_eq(tc_test_count_fds(), fds - 1, "the socket was not closed");
    close(c);

    /* Not a connected stream socket: refused, and closed all the same. */
    int p[2];
    cr_assert_eq(pipe(p), 0);
    tc_handler h = tc_test_echo_handler();
    cr_assert_eq(tc_server_serve_inetd(NULL, &h, p[0]), -ENOTSOCK);
    cr_assert_eq(fcntl(p[0], F_GETFD), -1);
    close(p[1]);
    tc_addr a;
    cr_assert_eq(tc_server_serve_inetd(NULL, &h, listener(&a)), -EINVAL);
    cr_assert_eq(tc_server_serve_inetd(NULL, NULL, 0), -EINVAL);
    cr_assert_eq(tc_server_serve_inetd(NULL, &h, -1), -EINVAL);
}

/* inetd: tc_server_shutdown() on the connection's server (from a signal
 * handler, say) ends a read that waits for a silent client, as in inline mode. */
struct inetd_stop {
    tc_server *_Atomic srv; /* set by the handler before it reads */
    atomic_int read_rc;     /* 1 until the read returns */
    atomic_int done;
    struct inetd_run run;
};

static int stop_handle(tc_conn *c, void *ctx)
{
    struct inetd_stop *st = ctx;
    char b[16];
    atomic_store(&st->srv, tc_conn_server(c));
    ssize_t n = tc_conn_read(c, b, sizeof b);
    atomic_store(&st->read_rc, (int)n);
    return n < 0 ? (int)n : 0;
}

static void *inetd_stop_main(void *arg)
{
    struct inetd_stop *st = arg;
    inetd_main(&st->run);
    atomic_store(&st->done, 1);
    return NULL;
}

Test(listen, inetd_shutdown_ends_a_waiting_read)
{
    int c, s;
    tcp_pair(&c, &s);
    struct inetd_stop st = {.run = {.fd = s, .cfg = tc_test_config(), .h = TC_HANDLER_INIT}};
    atomic_init(&st.read_rc, 1);
    st.run.cfg.conn_timeout_ms = tc_test_ms(60000); /* far beyond the waits below */
    st.run.h.handle = stop_handle;
    st.run.h.ctx = &st;
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, inetd_stop_main, &st), 0);
    TC_TEST_WAIT_UNTIL(atomic_load(&st.srv) != NULL, TC_TEST_WAIT_MS);
    cr_assert(atomic_load(&st.srv) != NULL, "the handler never ran");
    cr_assert_eq(tc_server_shutdown(atomic_load(&st.srv)), 0);
    TC_TEST_WAIT_UNTIL(atomic_load(&st.done), TC_TEST_WAIT_MS);
    int done = atomic_load(&st.done);
    if (!done)
        shutdown(c, SHUT_WR); /* end the read, so that the thread can be joined */
    cr_assert_eq(pthread_join(t, NULL), 0);
    cr_assert(done, "the read still waited after the shutdown (it returned %s)",
              tc_err_name(atomic_load(&st.read_rc)));
    cr_assert_eq(atomic_load(&st.read_rc), TC_ESHUTDOWN, "the read returned %s",
                 tc_err_name(atomic_load(&st.read_rc)));
    cr_assert_eq(st.run.rc, 0);
    char b;
    cr_assert_eq(recv(c, &b, 1, 0), 0, "the client did not see the end of the stream");
    close(c);
}

#ifdef TC_ECHO_BIN
/* inetd proper: the socket as stdin and stdout of an exec'd tcpchan-echo --inetd. */
Test(listen, inetd_tcpchan_echo)
{
    int c, s;
    tcp_pair(&c, &s);
    pid_t parent = getpid(), pid = fork();
    if (pid < 0)
        cr_assert_fail("fork: %s", strerror(errno)); /* not in the child: no Criterion there */
    if (pid == 0) {
        tc_test_child_dies_with(parent);
        dup2(s, 0);
        dup2(s, 1);
        close(s);
        close(c);
        execl(TC_ECHO_BIN, "tcpchan-echo", "--inetd", (char *)NULL);
        _exit(127);
    }
    close(s);
    cr_assert_eq(tc_test_send_all(c, "via inetd", 9), 0);
    shutdown(c, SHUT_WR);
    char buf[64];
    ssize_t got = tc_test_recv_full(c, buf, sizeof buf);
    cr_assert_eq(got, 9);
    cr_assert_eq(memcmp(buf, "via inetd", 9), 0);
    cr_assert_eq(wait_exit(pid, TC_TEST_WAIT_MS), 0);
    close(c);
}
#endif
