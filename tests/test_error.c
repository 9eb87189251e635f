/* SPDX-License-Identifier: MIT */
/* tc_strerror / tc_err_name over every code the library defines, errno values
 * and undefined codes; tc_last_error_detail(): what sets it, what empties it,
 * one per thread; tc_version against the header's macros. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "helpers.h"

struct code {
    int value;
    const char *name;
    const char *text;
};

/* Built from the public X-macro, so a code added to the map is tested too. */
static const struct code own_codes[] = {
#define XX(name, value, text) {value, "TC_" #name, text},
    TC_ERROR_MAP(XX)
#undef XX
};
#define N_OWN (sizeof own_codes / sizeof own_codes[0])

/* The range error.h reserves for the library's own codes: -4100 to -4198. */
#define OWN_FIRST (-4100)
#define OWN_BOUND (-4199) /* just past the range; not a code */

Test(error, success_codes, .timeout = 10)
{
    cr_assert_str_eq(tc_strerror(0), "success");
    cr_assert_str_eq(tc_err_name(0), "OK");
    /* Non-negative values are counts: also success. */
    cr_assert_str_eq(tc_strerror(1), "success");
    cr_assert_str_eq(tc_err_name(4096), "OK");
    cr_assert_str_eq(tc_strerror(INT_MAX), "success");
    cr_assert_str_eq(tc_err_name(INT_MAX), "OK");
}

Test(error, every_library_code, .timeout = 10)
{
    cr_assert_geq(N_OWN, 11, "the map lost codes");
    for (size_t i = 0; i < N_OWN; i++) {
        const struct code *c = &own_codes[i];
        cr_assert_str_eq(tc_strerror(c->value), c->text, "tc_strerror(%d)", c->value);
        cr_assert_str_eq(tc_err_name(c->value), c->name, "tc_err_name(%d)", c->value);
        /* In the reserved range, below every errno value, and unique. */
        cr_assert(c->value <= OWN_FIRST && c->value > OWN_BOUND, "%s = %d out of range", c->name,
                  c->value);
        for (size_t j = 0; j < i; j++)
            cr_assert_neq(own_codes[j].value, c->value, "%s and %s share %d", own_codes[j].name,
                          c->name, c->value);
    }
    /* The enum constants are the map's values. */
    cr_assert_eq(TC_EOF, -4100);
    cr_assert_str_eq(tc_err_name(TC_EOF), "TC_EOF");
    cr_assert_str_eq(tc_err_name(TC_EBADADDR), "TC_EBADADDR");
    cr_assert_str_eq(tc_strerror(TC_ENOMODE), "concurrency mode not available");
}

Test(error, errno_values, .timeout = 10)
{
    static const struct {
        int err;
        const char *name;
        const char *text;
    } cases[] = {
        {ECONNRESET, "ECONNRESET", "Connection reset by peer"},
        {EPIPE, "EPIPE", "Broken pipe"},
        {ETIMEDOUT, "ETIMEDOUT", "Connection timed out"},
        {EADDRINUSE, "EADDRINUSE", "Address already in use"},
        {ECONNREFUSED, "ECONNREFUSED", "Connection refused"},
        {ENAMETOOLONG, "ENAMETOOLONG", "File name too long"},
        {EAFNOSUPPORT, "EAFNOSUPPORT", "Address family not supported by protocol"},
        {ENOSPC, "ENOSPC", "No space left on device"},
        {EINVAL, "EINVAL", "Invalid argument"},
        {EBUSY, "EBUSY", "Device or resource busy"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_assert_str_eq(tc_err_name(-cases[i].err), cases[i].name);
        /* Locale-independent glibc descriptions. */
        cr_assert_str_eq(tc_strerror(-cases[i].err), cases[i].text, "tc_strerror(-%s)",
                         cases[i].name);
    }
}

Test(error, undefined_codes, .timeout = 10)
{
    /* Far outside errno, in the reserved range but unassigned, and its bound. */
    const int undefined[] = {-99999, -4198, -4150, OWN_BOUND, -1000000};
    for (size_t i = 0; i < sizeof undefined / sizeof undefined[0]; i++) {
        cr_assert_str_eq(tc_strerror(undefined[i]), "unknown error", "tc_strerror(%d)",
                         undefined[i]);
        cr_assert_str_eq(tc_err_name(undefined[i]), "UNKNOWN", "tc_err_name(%d)", undefined[i]);
    }
    /* INT_MIN cannot be negated: it must still be answered without overflow. */
    cr_assert_str_eq(tc_strerror(INT_MIN), "unknown error");
    cr_assert_str_eq(tc_err_name(INT_MIN), "UNKNOWN");
    cr_assert_str_eq(tc_strerror(INT_MIN + 1), "unknown error");
}

Test(error, never_null, .timeout = 20)
{
    for (int code = -5000; code <= 16; code++) {
        const char *s = tc_strerror(code), *n = tc_err_name(code);
        cr_assert_not_null(s, "tc_strerror(%d) is NULL", code);
        cr_assert_not_null(n, "tc_err_name(%d) is NULL", code);
        cr_assert_gt(strlen(s), 0, "tc_strerror(%d) is empty", code);
        cr_assert_gt(strlen(n), 0, "tc_err_name(%d) is empty", code);
    }
    for (int code = INT_MIN; code < INT_MIN + 16; code++) {
        cr_assert_not_null(tc_strerror(code));
        cr_assert_not_null(tc_err_name(code));
    }
}

Test(error, version_matches_macros, .timeout = 10)
{
    char expect[32];
    snprintf(expect, sizeof expect, "%d.%d.%d", TC_VERSION_MAJOR, TC_VERSION_MINOR,
             TC_VERSION_PATCH);
    cr_assert_str_eq(TC_VERSION_STRING, expect);
    cr_assert_str_eq(tc_version_string(), TC_VERSION_STRING);
    cr_assert_eq(tc_version(), (unsigned)TC_VERSION_HEX);
    cr_assert_eq(tc_version(), ((unsigned)TC_VERSION_MAJOR << 16) |
                                   ((unsigned)TC_VERSION_MINOR << 8) | (unsigned)TC_VERSION_PATCH);
    cr_assert_eq(tc_version() >> 16, (unsigned)TC_VERSION_MAJOR);
    cr_assert_eq((tc_version() >> 8) & 0xff, (unsigned)TC_VERSION_MINOR);
    cr_assert_eq(tc_version() & 0xff, (unsigned)TC_VERSION_PATCH);
}

/* ---- tc_last_error_detail ------------------------------------------------------ */

/* A create that fails on workers, without hooks. */
static int create_bad_workers(void)
{
    tc_server_config cfg = tc_test_config();
    tc_handler h = tc_test_echo_handler();
    tc_server *srv;
    cfg.workers = -1;
    return tc_server_create(&srv, &cfg, &h);
}

Test(error, detail_empty_until_a_failure, .timeout = 10)
{
    const char *d = tc_last_error_detail();
    cr_assert_not_null(d);
    cr_assert_str_eq(d, "");
}

Test(error, detail_names_the_field_and_stays_until_the_next_create, .timeout = 10)
{
    cr_assert_eq(create_bad_workers(), TC_EBADCONFIG);
    cr_assert_str_eq(tc_last_error_detail(), "invalid configuration: workers is negative");
    /* Calls that create nothing leave it as it is. */
    tc_addr a;
    (void)tc_strerror(TC_EBADCONFIG);
    (void)tc_addr_parse(&a, "not an address");
    cr_assert_str_eq(tc_last_error_detail(), "invalid configuration: workers is negative");
    /* Each create starts by emptying it: a NULL argument has nothing to add... */
    tc_handler h = tc_test_echo_handler();
    cr_assert_eq(tc_server_create(NULL, NULL, &h), -EINVAL);
    cr_assert_str_eq(tc_last_error_detail(), "");
    /* ...and neither has a success. */
    cr_assert_eq(create_bad_workers(), TC_EBADCONFIG);
    tc_server *srv;
    tc_server_config cfg = tc_test_config();
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), 0);
    cr_assert_str_eq(tc_last_error_detail(), "");
    tc_server_destroy(srv);
}

/* A thread that reads its own detail, fails a create, and keeps a copy. */
struct detail_thread {
    char before[64];
    char after[TC_ADDR_STRLEN];
};

static void *detail_thread_main(void *arg)
{
    struct detail_thread *t = arg;
    snprintf(t->before, sizeof t->before, "%s", tc_last_error_detail());
    (void)create_bad_workers();
    snprintf(t->after, sizeof t->after, "%s", tc_last_error_detail());
    return NULL;
}

Test(error, detail_is_per_thread, .timeout = 10)
{
    tc_server_config cfg = tc_test_config();
    tc_handler h = tc_test_echo_handler();
    tc_server *srv;
    cfg.backlog = -1;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
    struct detail_thread t;
    memset(&t, 0, sizeof t);
    pthread_t tid;
    cr_assert_eq(pthread_create(&tid, NULL, detail_thread_main, &t), 0);
    cr_assert_eq(pthread_join(tid, NULL), 0);
    cr_assert_str_eq(t.before, "", "a new thread sees another thread's detail");
    cr_assert_str_eq(t.after, "invalid configuration: workers is negative");
    cr_assert_str_eq(tc_last_error_detail(), "invalid configuration: backlog is negative",
                     "another thread's create changed this thread's detail");
}

Test(error, detail_is_cut_and_terminated, .timeout = 10)
{
    /* The proxy_trusted message quotes the whole list: make it longer than the room. */
    static char list[2048];
    memset(list, 'x', sizeof list - 1);
    tc_server_config cfg = tc_test_config();
    tc_handler h = tc_test_echo_handler();
    tc_server *srv;
    cfg.proxy_trusted = list;
    cr_assert_eq(tc_server_create(&srv, &cfg, &h), TC_EBADCONFIG);
    const char *d = tc_last_error_detail();
    cr_assert_eq(strlen(d), 511, "detail of %zu bytes", strlen(d));
    cr_assert_eq(strncmp(d, "invalid configuration: proxy_trusted entry 1 of \"xxx", 52), 0, "%s", d);
}

static int prefork_worker(int index, void *ctx)
{
    (void)index;
    (void)ctx;
    return 0;
}

static void expect_prefork_detail(tc_prefork_config o, const char *text)
{
    tc_prefork *pf;
    cr_assert_eq(tc_prefork_create(&pf, &o), TC_EBADCONFIG, "%s", text);
    cr_assert_str_eq(tc_last_error_detail(), text);
}

Test(error, detail_from_prefork_create, .timeout = 10)
{
    tc_prefork_config o = TC_PREFORK_CONFIG_INIT;
    expect_prefork_detail(o, "invalid configuration: worker is NULL");
    o.worker = prefork_worker;
    o.processes = -1;
    expect_prefork_detail(o, "invalid configuration: processes is negative");
    o.processes = 1;
    o.restart_window_ms = -1;
    expect_prefork_detail(o, "invalid configuration: restart_window_ms is negative");
    o.restart_window_ms = 0;
    o.stop_signal = SIGSTOP;
    expect_prefork_detail(o, "invalid configuration: stop_signal is SIGSTOP, which never ends a process");
    o.stop_signal = 100000;
    expect_prefork_detail(o, "invalid configuration: stop_signal is not a signal number");
    o.stop_signal = 0;
    tc_prefork *pf;
    cr_assert_eq(tc_prefork_create(&pf, &o), 0);
    cr_assert_str_eq(tc_last_error_detail(), "");
    tc_prefork_destroy(pf);
}

Test(error, detail_from_dial, .timeout = 10)
{
    tc_conn *c;
    cr_assert_eq(tc_dial(&c, "127.0.0.1", NULL), TC_EBADADDR);
    cr_assert_str_eq(tc_last_error_detail(), "dial address \"127.0.0.1\": malformed address");
    tc_dial_config o = TC_DIAL_CONFIG_INIT;
    o.read_buffer_size = (size_t)1 << 40;
    cr_assert_eq(tc_dial(&c, "127.0.0.1:1", &o), -EINVAL);
    cr_assert_not_null(strstr(tc_last_error_detail(), "invalid configuration: read_buffer_size"),
                       "%s", tc_last_error_detail());
    /* A port bound but not listening refuses: no detail to add to the code. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sin;
    cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0 &&
              getsockname(fd, (struct sockaddr *)&sin, &len) == 0);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sin.sin_port));
    cr_assert_eq(tc_dial(&c, addr, NULL), -ECONNREFUSED);
    cr_assert_str_eq(tc_last_error_detail(), "");
    close(fd);
}
