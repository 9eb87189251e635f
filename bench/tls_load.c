/* SPDX-License-Identifier: MIT */
/* tls_load: the TLS benchmark's client (issue #15). CONNS threads, each one
 * blocking TLS 1.3 connection (X25519), over loopback:
 *   rr         a closed loop of SIZE-byte echoes per connection: requests/s
 *   handshake  connect, a full handshake (no resumption), one echo, close: handshakes/s
 * With --server-pid, the server's CPU (utime+stime) over the measured window
 * per request or handshake. With --max-requests N it stops after N (bench/soak:
 * the counts loadgen's churn and rr take), --duration being the time limit.
 * Every echo is checked. Prints one JSON line. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>

static struct sockaddr_in target;
static SSL_CTX *ctx;
static size_t size = 64;
static int handshake_mode;
static atomic_long done_count, errors, connect_errors, verify_errors, tickets;
static long max_requests; /* 0: no limit */
static atomic_int measuring, quit;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static SSL *open_conn(int *fdp)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0) {
        close(fd);
        return NULL;
    }
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    *fdp = fd;
    return ssl;
}

static int echo_once(SSL *ssl, const unsigned char *msg, unsigned char *buf)
{
    size_t w, got = 0, r;
    if (SSL_write_ex(ssl, msg, size, &w) != 1)
        return -1;
    while (got < size) {
        if (SSL_read_ex(ssl, buf + got, size - got, &r) != 1)
            return -1;
        got += r;
    }
    if (memcmp(buf, msg, size) != 0) {
        atomic_fetch_add(&verify_errors, 1);
        return -1;
    }
    return 0;
}

static void *worker(void *arg)
{
    (void)arg;
    unsigned char *buf = malloc(size), *msg = malloc(size);
    for (size_t i = 0; i < size; i++)
        msg[i] = (unsigned char)('a' + i % 26);
    int fd = -1;
    SSL *ssl = NULL;
    while (!atomic_load(&quit)) {
        if (max_requests && atomic_fetch_add(&tickets, 1) >= max_requests)
            break;
        if (!ssl && !(ssl = open_conn(&fd))) {
            atomic_fetch_add(&errors, 1);
            atomic_fetch_add(&connect_errors, 1);
            continue;
        }
        if (echo_once(ssl, msg, buf) < 0) {
            atomic_fetch_add(&errors, 1);
            SSL_free(ssl);
            close(fd);
            ssl = NULL;
            continue;
        }
        if (atomic_load(&measuring))
            atomic_fetch_add(&done_count, 1);
        if (handshake_mode) {
            SSL_shutdown(ssl);
            SSL_free(ssl);
            close(fd);
            ssl = NULL;
        }
    }
    if (ssl) {
        SSL_shutdown(ssl);
        SSL_free(ssl);
        close(fd);
    }
    free(buf);
    free(msg);
    return NULL;
}

/* utime + stime of pid, in seconds. */
static double cpu_of(int pid)
{
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f || !fgets(line, sizeof line, f)) {
        if (f)
            fclose(f);
        return 0;
    }
    fclose(f);
    char *p = strrchr(line, ')');
    unsigned long ut = 0, st = 0;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

int main(int argc, char **argv)
{
    const char *connect_to = NULL;
    int conns = 16, pid = 0;
    double duration = 5, warmup = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--connect"))
            connect_to = v;
        else if (!strcmp(a, "--scenario"))
            handshake_mode = !strcmp(v, "handshake");
        else if (!strcmp(a, "--conns"))
            conns = atoi(v);
        else if (!strcmp(a, "--size"))
            size = (size_t)atol(v);
        else if (!strcmp(a, "--duration"))
            duration = atof(v);
        else if (!strcmp(a, "--warmup"))
            warmup = atof(v);
        else if (!strcmp(a, "--server-pid"))
            pid = atoi(v);
        else if (!strcmp(a, "--max-requests"))
            max_requests = atol(v);
    }
    char host[64];
    const char *colon = connect_to ? strrchr(connect_to, ':') : NULL;
    if (!colon || (size_t)(colon - connect_to) >= sizeof host || conns < 1 || size < 1) {
        fprintf(stderr, "usage: tls_load --connect IP:PORT [--scenario rr|handshake] [--conns N]\n"
                        "                [--size B] [--duration S] [--warmup S] [--server-pid PID]\n");
        return 2;
    }
    memcpy(host, connect_to, (size_t)(colon - connect_to));
    host[colon - connect_to] = 0;
    target.sin_family = AF_INET;
    target.sin_port = htons((unsigned short)atoi(colon + 1));
    inet_pton(AF_INET, host, &target.sin_addr);
    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set1_groups_list(ctx, "X25519");
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF); /* every handshake a full one */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);          /* loopback benchmark */
    pthread_t *t = calloc((size_t)conns, sizeof *t);
    if (max_requests) { /* every request counts: no warm-up */
        warmup = 0;
        atomic_store(&measuring, 1);
    }
    for (int i = 0; i < conns; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    struct timespec w = {(time_t)warmup, (long)((warmup - (double)(time_t)warmup) * 1e9)};
    nanosleep(&w, NULL);
    double c0 = pid ? cpu_of(pid) : 0, t0 = now();
    atomic_store(&measuring, 1);
    if (max_requests) { /* until the workers are done with their tickets, or the time limit */
        double end = t0 + duration;
        while (atomic_load(&done_count) + atomic_load(&errors) < max_requests && now() < end) {
            struct timespec tick = {0, 10 * 1000 * 1000};
            nanosleep(&tick, NULL);
        }
    } else {
        struct timespec d = {(time_t)duration,
                             (long)((duration - (double)(time_t)duration) * 1e9)};
        nanosleep(&d, NULL);
    }
    atomic_store(&measuring, 0);
    double t1 = now(), c1 = pid ? cpu_of(pid) : 0;
    long n = atomic_load(&done_count);
    atomic_store(&quit, 1);
    for (int i = 0; i < conns; i++)
        pthread_join(t[i], NULL);
    long e = atomic_load(&errors), ce = atomic_load(&connect_errors),
         ve = atomic_load(&verify_errors);
    printf("{\"scenario\": \"%s\", \"conns\": %d, \"size\": %zu, \"per_s\": %.0f, "
           "\"server_cpu_us\": %.2f, \"server_cpu_share\": %.2f, \"requests\": %ld, "
           "\"errors\": %ld, \"connect_errors\": %ld, \"io_errors\": %ld, "
           "\"verify_errors\": %ld}\n",
           handshake_mode ? "handshake" : "rr", conns, size, (double)n / (t1 - t0),
           n && pid ? (c1 - c0) * 1e6 / (double)n : 0, pid ? (c1 - c0) / (t1 - t0) : 0,
           atomic_load(&done_count), e, ce, e - ce - ve, ve);
    SSL_CTX_free(ctx);
    free(t);
    return 0;
}
