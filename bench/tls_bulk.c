/* SPDX-License-Identifier: MIT */
/* tls_bulk: issue #15's bulk benchmark. A server process (libtcpchan, inline
 * mode, on CPU 0) sends one file with tc_conn_sendfile(), over TLS 1.3 or in
 * clear; this process (CPU 1) reads it all (OpenSSL for TLS) and prints one
 * JSON line: the path the server took (ktls, copy or plain), MiB/s, and the
 * server's CPU per GiB. --ktls-off: the copy even where the kernel has kTLS. Built by bench/tls_bulk.sh against a libtcpchan build. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tcpchan/tcpchan.h"
#include "tcpchan/tls.h"

static const char *file_path;
static int report_fd = -1; /* the server's line to the client: "ktls" or "copy" or "plain" */

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    (void)sched_setaffinity(0, sizeof set, &set);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_of(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* The server's one connection: the whole file, then the end (close_notify over TLS). */
static int send_file(tc_conn *c, void *ctx)
{
    (void)ctx;
    int fd = open(file_path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        return -errno;
    ssize_t r = tc_conn_sendfile(c, fd, 0, (size_t)st.st_size);
    close(fd);
    tc_tls_info ti;
    int plain = tc_tls_conn_info(c, &ti) < 0;
    const char *path = plain ? "plain" : ti.ktls_send ? "ktls" : "copy";
    char line[128];
    int k = snprintf(line, sizeof line, "%s %zd %s\n", path, r, plain ? "-" : ti.cipher);
    if (write(report_fd, line, (size_t)k) != k)
        return -EIO;
    return r < 0 ? (int)r : 0;
}

static int serve(int tls_on, int ktls_off, const char *cert, const char *key, int ready_fd)
{
    pin(0);
    tc_tls *tls = NULL;
    if (tls_on) {
        tc_tls_config tc = TC_TLS_CONFIG_INIT;
        tc.cert_file = cert;
        tc.key_file = key;
        if (ktls_off) /* the copy path even where the kernel has kTLS */
            tc.ktls = TC_TLS_KTLS_OFF;
        if (tc_tls_server_create(&tls, &tc) < 0)
            return 1;
    }
    tc_server_config cfg = TC_SERVER_CONFIG_INIT;
    cfg.listen = "127.0.0.1:0";
    cfg.mode = TC_MODE_INLINE;
    cfg.transport = tls ? tc_tls_transport(tls) : NULL;
    tc_handler h = TC_HANDLER_INIT;
    h.handle = send_file;
    tc_server *srv;
    if (tc_server_create(&srv, &cfg, &h) < 0)
        return 1;
    tc_addr a;
    char addr[128];
    if (tc_server_address(srv, &a) < 0 || tc_addr_format(&a, addr, sizeof addr) < 0)
        return 1;
    size_t len = strlen(addr) + 1;
    if (write(ready_fd, addr, len) != (ssize_t)len)
        return 1;
    close(ready_fd);
    (void)tc_server_serve_forever(srv);
    tc_server_destroy(srv);
    tc_tls_destroy(tls);
    return 0;
}

int main(int argc, char **argv)
{
    const char *cert = NULL, *key = NULL;
    int tls_on = 1, ktls_off = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--file") && i + 1 < argc)
            file_path = argv[++i];
        else if (!strcmp(argv[i], "--cert") && i + 1 < argc)
            cert = argv[++i];
        else if (!strcmp(argv[i], "--key") && i + 1 < argc)
            key = argv[++i];
        else if (!strcmp(argv[i], "--plain"))
            tls_on = 0;
        else if (!strcmp(argv[i], "--ktls-off"))
            ktls_off = 1;
    }
    if (!file_path || (tls_on && (!cert || !key))) {
        fprintf(stderr, "usage: tls_bulk --file F (--cert PEM --key PEM [--ktls-off] | --plain)\n");
        return 2;
    }
    int ready[2], rep[2];
    if (pipe(ready) < 0 || pipe(rep) < 0)
        return 1;
    pid_t pid = fork();
    if (pid == 0) {
        close(ready[0]);
        close(rep[0]);
        report_fd = rep[1];
        _exit(serve(tls_on, ktls_off, cert, key, ready[1]));
    }
    close(ready[1]);
    close(rep[1]);
    pin(1);
    char addr[128] = "";
    ssize_t n = read(ready[0], addr, sizeof addr - 1);
    close(ready[0]);
    char *colon = n > 0 ? strrchr(addr, ':') : NULL;
    if (!colon) {
        fprintf(stderr, "tls_bulk: the server did not start\n");
        return 1;
    }
    *colon = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    inet_pton(AF_INET, addr, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    double c0 = cpu_of(pid), t0 = now();
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        perror("connect");
        return 1;
    }
    SSL_CTX *ctx = NULL;
    SSL *ssl = NULL;
    if (tls_on) {
        ctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
        SSL_CTX_set1_groups_list(ctx, "X25519");
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL); /* loopback benchmark */
        ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        if (SSL_connect(ssl) != 1) {
            ERR_print_errors_fp(stderr);
            return 1;
        }
    }
    static unsigned char buf[256 * 1024];
    unsigned long long got = 0;
    for (;;) {
        size_t k = 0;
        if (ssl) {
            if (SSL_read_ex(ssl, buf, sizeof buf, &k) != 1)
                break;
        } else {
            ssize_t r = read(fd, buf, sizeof buf);
            if (r <= 0)
                break;
            k = (size_t)r;
        }
        got += k;
    }
    double t1 = now();
    char line[128] = "";
    n = read(rep[0], line, sizeof line - 1);
    line[n > 0 ? n : 0] = 0;
    double c1 = cpu_of(pid);
    char path[16] = "?", cipher[64] = "-";
    (void)sscanf(line, "%15s %*d %63s", path, cipher);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    double gib = (double)got / (1024.0 * 1024 * 1024);
    printf("{\"path\": \"%s\", \"cipher\": \"%s\", \"bytes\": %llu, \"seconds\": %.3f, "
           "\"mib_per_s\": %.1f, \"server_cpu_s_per_gib\": %.3f}\n",
           path, cipher, got, t1 - t0, (double)got / (1024.0 * 1024) / (t1 - t0),
           gib > 0 ? (c1 - c0) / gib : 0);
    return 0;
}
