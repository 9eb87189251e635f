/* SPDX-License-Identifier: MIT */
/* Buffered channel I/O over real loopback connections: every read function
 * with data in one burst and in 1-byte pieces, limits, end of stream
 * mid-message, timeouts and deadlines (the one place timing is measured),
 * what a timed-out write sent (tc_conn_last_sent), half-close, sendfile,
 * partial writes on a full socket, and the client's distinct dial errors.
 * The peer side is a plain blocking socket. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <tcpchan/tcpchan.h>

#include "../examples/netstring.h"

TestSuite(channel, .timeout = 20);

/* Timing tolerance, scaled by TC_TEST_TIME_MULT on slow machines. */
static int64_t tolerance_ms(int64_t base)
{
    const char *m = getenv("TC_TEST_TIME_MULT");
    int mult = m && atoi(m) > 0 ? atoi(m) : 1;
    return base * mult;
}

static int64_t now_ms(void)
{
    return tc_monotonic_ns() / TC_NS_PER_MS;
}

struct pair {
    tc_conn *c; /* the channel under test (a client from tc_dial) */
    int peer;   /* the other end: a plain blocking socket */
};

static int listener(struct sockaddr_in *a, int backlog)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(l >= 0);
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(l, (struct sockaddr *)a, sizeof *a), 0);
    cr_assert_eq(listen(l, backlog), 0);
    socklen_t al = sizeof *a;
    getsockname(l, (struct sockaddr *)a, &al);
    return l;
}

static void make_pair_opts(struct pair *p, const tc_dial_config *o)
{
    struct sockaddr_in a;
    char addr[64];
    int l = listener(&a, 4);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(a.sin_port));
    cr_assert_eq(tc_dial(&p->c, addr, o), 0);
    p->peer = accept(l, NULL, NULL);
    cr_assert(p->peer >= 0);
    close(l);
    tc_conn_set_timeout(p->c, 5000); /* a bug must fail the test, not hang it */
}

static void make_pair(struct pair *p)
{
    make_pair_opts(p, NULL);
}

static void free_pair(struct pair *p)
{
    tc_conn_close(p->c);
    if (p->peer >= 0)
        close(p->peer);
}

static void peer_send(struct pair *p, const void *data, size_t n)
{
    cr_assert_eq(send(p->peer, data, n, MSG_NOSIGNAL), (ssize_t)n);
}

static size_t peer_recv_all(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, (char *)buf + got, n - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return got;
}

/* Sends bytes one at a time, each only after the channel has taken the last
 * one from its socket, so every receive sees a single byte. */
struct feeder {
    pthread_t tid;
    int fd, watch;
    const unsigned char *data;
    size_t len;
    int shut; /* close the write side at the end */
};

static void *feed_main(void *arg)
{
    struct feeder *f = arg;
    for (size_t i = 0; i < f->len; i++) {
        if (send(f->fd, f->data + i, 1, MSG_NOSIGNAL) != 1)
            break;
        int64_t give_up = now_ms() + 3000;
        int queued = 1;
        while (ioctl(f->watch, FIONREAD, &queued) == 0 && queued > 0 && now_ms() < give_up)
            sched_yield();
    }
    if (f->shut)
        shutdown(f->fd, SHUT_WR);
    return NULL;
}

/* Deliver data to the channel in one burst or in 1-byte pieces. */
static void deliver(struct pair *p, struct feeder *f, const void *data, size_t len, int bytewise,
                    int shut)
{
    f->fd = p->peer;
    f->watch = tc_conn_fd(p->c);
    f->data = data;
    f->len = len;
    f->shut = shut;
    if (bytewise) {
        cr_assert_eq(pthread_create(&f->tid, NULL, feed_main, f), 0);
    } else {
        peer_send(p, data, len);
        if (shut)
            shutdown(p->peer, SHUT_WR);
        f->len = 0;
    }
}

static void delivered(struct feeder *f, int bytewise)
{
    if (bytewise)
        pthread_join(f->tid, NULL);
}

/* ---- every read function, in a burst and byte by byte ------------------- */

static void check_read(int bytewise)
{
    struct pair p;
    struct feeder f;
    char msg[300], got[300];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (char)('a' + i % 26);
    make_pair(&p);
    deliver(&p, &f, msg, sizeof msg, bytewise, 1);
    size_t total = 0;
    while (total < sizeof msg) {
        ssize_t n = tc_conn_read(p.c, got + total, sizeof got - total);
        cr_assert(n > 0, "read: %s", tc_err_name((int)n));
        total += (size_t)n;
    }
    cr_assert(memcmp(got, msg, sizeof msg) == 0);
    cr_assert_eq(tc_conn_read(p.c, got, sizeof got), TC_EOF);
    cr_assert_eq(tc_conn_read(p.c, got, sizeof got), TC_EOF, "end of stream stays");
    delivered(&f, bytewise);
    free_pair(&p);
}

Test(channel, read_burst) { check_read(0); }
Test(channel, read_bytewise) { check_read(1); }

static void check_read_exact(int bytewise)
{
    struct pair p;
    struct feeder f;
    const char msg[] = "0123456789abcdefghij";
    char got[20];
    make_pair(&p);
    deliver(&p, &f, msg, 20, bytewise, 1);
    cr_assert_eq(tc_conn_read_exact(p.c, got, 7), 7);
    cr_assert(memcmp(got, "0123456", 7) == 0);
    cr_assert_eq(tc_conn_read_exact(p.c, got, 13), 13);
    cr_assert(memcmp(got, "789abcdefghij", 13) == 0);
    cr_assert_eq(tc_conn_read_exact(p.c, got, 1), TC_EOF);
    delivered(&f, bytewise);
    free_pair(&p);
}

Test(channel, read_exact_burst) { check_read_exact(0); }
Test(channel, read_exact_bytewise) { check_read_exact(1); }

static void check_read_line(int bytewise)
{
    struct pair p;
    struct feeder f;
    const char msg[] = "first line\n\nthird\r\n";
    const char *line;
    size_t len;
    make_pair(&p);
    deliver(&p, &f, msg, sizeof msg - 1, bytewise, 1);
    cr_assert_eq(tc_conn_read_line(p.c, 100, &line, &len), 0);
    cr_assert_eq(len, 10);
    cr_assert(memcmp(line, "first line", 10) == 0);
    cr_assert_eq(line[len], '\n', "the delimiter follows the view");
    cr_assert_eq(tc_conn_read_line(p.c, 100, &line, &len), 0);
    cr_assert_eq(len, 0);
    cr_assert_eq(tc_conn_read_line(p.c, 100, &line, &len), 0);
    cr_assert_eq(len, 6, "a \\r before the \\n is kept");
    cr_assert(memcmp(line, "third\r", 6) == 0);
    cr_assert_eq(tc_conn_read_line(p.c, 100, &line, &len), TC_EOF);
    delivered(&f, bytewise);
    free_pair(&p);
}

Test(channel, read_line_burst) { check_read_line(0); }
Test(channel, read_line_bytewise) { check_read_line(1); }

static void check_read_until(int bytewise)
{
    struct pair p;
    struct feeder f;
    /* The delimiter is split across reads byte by byte, and "\r" alone or
     * "\r\r" must not end a record. */
    const char msg[] = "GET /\r\nHost: x\r\r\n\r\n";
    const void *v;
    size_t len;
    make_pair(&p);
    deliver(&p, &f, msg, sizeof msg - 1, bytewise, 1);
    cr_assert_eq(tc_conn_read_until(p.c, "\r\n", 2, 64, &v, &len), 0);
    cr_assert(len == 5 && memcmp(v, "GET /", 5) == 0);
    cr_assert_eq(tc_conn_read_until(p.c, "\r\n", 2, 64, &v, &len), 0);
    cr_assert(len == 8 && memcmp(v, "Host: x\r", 8) == 0);
    cr_assert_eq(tc_conn_read_until(p.c, "\r\n", 2, 64, &v, &len), 0);
    cr_assert_eq(len, 0);
    cr_assert_eq(tc_conn_read_until(p.c, "\r\n", 2, 64, &v, &len), TC_EOF);
    delivered(&f, bytewise);
    free_pair(&p);
}

Test(channel, read_until_burst) { check_read_until(0); }
Test(channel, read_until_bytewise) { check_read_until(1); }

static void check_read_frame_len32(int bytewise)
{
    struct pair p;
    struct feeder f;
    tc_codec c;
    const unsigned char msg[] = {0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o', 0, 0, 0, 0, 0, 0, 0, 1, '!'};
    const void *v;
    size_t len;
    make_pair(&p);
    tc_codec_length_prefixed(&c, 4, TC_BIG_ENDIAN);
    cr_assert_eq(tc_conn_set_codec(p.c, &c), 0);
    deliver(&p, &f, msg, sizeof msg, bytewise, 1);
    cr_assert_eq(tc_conn_read_frame(p.c, &v, &len), 0);
    cr_assert(len == 5 && memcmp(v, "hello", 5) == 0);
    cr_assert_eq(tc_conn_read_frame(p.c, &v, &len), 0);
    cr_assert_eq(len, 0);
    cr_assert_eq(tc_conn_read_frame(p.c, &v, &len), 0);
    cr_assert(len == 1 && memcmp(v, "!", 1) == 0);
    cr_assert_eq(tc_conn_read_frame(p.c, &v, &len), TC_EOF);
    delivered(&f, bytewise);
    free_pair(&p);
}

Test(channel, read_frame_len32_burst) { check_read_frame_len32(0); }
Test(channel, read_frame_len32_bytewise) { check_read_frame_len32(1); }

static void check_read_frame_netstring(int bytewise)
{
    struct pair p;
    struct feeder f;
    tc_codec c;
    const char msg[] = "5:hello,0:,3:abc,";
    const void *v;
    size_t len;
    make_pair(&p);
    tc_codec_custom(&c, netstring_scan, NULL);
    tc_conn_set_codec(p.c, &c);
    deliver(&p, &f, msg, sizeof msg - 1, bytewise, 1);
    cr_assert_eq(tc_conn_read_frame(p.c, &v, &len), 0);
    cr_assert(len == 8 && memcmp(v, "5:hello,", 8) == 0, "custom frames come whole");
    cr_assert_eq(tc_conn_read_frame(p.c, &v, &len), 0);
    cr_assert(len == 3 && memcmp(v, "0:,", 3) == 0);
    cr_assert_eq(tc_conn_read_frame(p.c, &v, &len), 0);
    cr_assert(len == 6 && memcmp(v, "3:abc,", 6) == 0);
    cr_assert_eq(tc_conn_read_frame(p.c, &v, &len), TC_EOF);
    delivered(&f, bytewise);
    free_pair(&p);
}

Test(channel, read_frame_custom_burst) { check_read_frame_netstring(0); }
Test(channel, read_frame_custom_bytewise) { check_read_frame_netstring(1); }

static void check_read_frame_raw_and_peek(int bytewise)
{
    struct pair p;
    struct feeder f;
    const char msg[] = "abcdefgh";
    const void *v;
    size_t len, total = 0;
    char got[8];
    make_pair(&p);
    deliver(&p, &f, msg, 8, bytewise, 1);
    cr_assert_eq(tc_conn_peek(p.c, 3, &v, &len), 0);
    cr_assert(len >= 3 && memcmp(v, "abc", 3) == 0);
    cr_assert_eq(tc_conn_peek(p.c, 3, &v, &len), 0, "peeking consumes nothing");
    cr_assert(len >= 3 && memcmp(v, "abc", 3) == 0);
    while (total < 8) {
        cr_assert_eq(tc_conn_read_frame(p.c, &v, &len), 0, "raw frame");
        cr_assert(len > 0 && total + len <= 8);
        memcpy(got + total, v, len);
        total += len;
    }
    cr_assert(memcmp(got, msg, 8) == 0);
    cr_assert_eq(tc_conn_peek(p.c, 1, &v, &len), TC_EOF);
    cr_assert_eq(len, 0);
    delivered(&f, bytewise);
    free_pair(&p);
}

Test(channel, raw_frames_and_peek_burst) { check_read_frame_raw_and_peek(0); }
Test(channel, raw_frames_and_peek_bytewise) { check_read_frame_raw_and_peek(1); }

/* ---- limits -------------------------------------------------------------- */

Test(channel, line_at_under_and_over_the_limit)
{
    struct pair p;
    const char *line;
    size_t len;
    make_pair(&p);
    peer_send(&p, "12345678\n1234567\n", 17);
    cr_assert_eq(tc_conn_read_line(p.c, 8, &line, &len), 0, "exactly at the limit");
    cr_assert_eq(len, 8);
    cr_assert_eq(tc_conn_read_line(p.c, 8, &line, &len), 0, "one under");
    cr_assert_eq(len, 7);
    /* One over, and the newline is never sent: refused on the 9th byte. */
    peer_send(&p, "123456789", 9);
    cr_assert_eq(tc_conn_read_line(p.c, 8, &line, &len), TC_ETOOBIG);
    cr_assert_eq(tc_conn_read_line(p.c, 8, &line, &len), TC_ETOOBIG, "broken stays broken");
    char b[4];
    cr_assert_eq(tc_conn_read(p.c, b, 4), TC_ETOOBIG);
    free_pair(&p);
}

Test(channel, frame_at_under_and_over_the_limit)
{
    struct pair p;
    tc_codec c;
    const void *v;
    size_t len;
    unsigned char buf[4 + 16];
    make_pair(&p);
    tc_codec_length_prefixed(&c, 4, TC_BIG_ENDIAN);
    tc_codec_set_max_frame(&c, 16);
    tc_conn_set_codec(p.c, &c);
    memset(buf, 'x', sizeof buf);
    for (unsigned n = 16; n >= 15; n--) {
        buf[0] = buf[1] = buf[2] = 0;
        buf[3] = (unsigned char)n;
        peer_send(&p, buf, 4 + n);
        cr_assert_eq(tc_conn_read_frame(p.c, &v, &len), 0, "%u bytes", n);
        cr_assert_eq(len, n);
    }
    /* 17 announced: refused on the header alone; the payload never comes. */
    buf[3] = 17;
    peer_send(&p, buf, 4);
    cr_assert_eq(tc_conn_read_frame(p.c, &v, &len), TC_ETOOBIG);
    cr_assert_eq(tc_conn_read_frame(p.c, &v, &len), TC_ETOOBIG);
    free_pair(&p);
}

static long rss_kib(void)
{
    long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    cr_assert_not_null(f);
    cr_assert_eq(fscanf(f, "%ld %ld", &size, &resident), 2);
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

Test(channel, prefix_announcing_4GiB_is_refused_without_allocating)
{
    struct pair p;
    tc_codec c;
    const void *v;
    size_t len;
    long before = rss_kib();
    make_pair(&p);
    tc_codec_length_prefixed(&c, 4, TC_BIG_ENDIAN);
    tc_conn_set_codec(p.c, &c);
    peer_send(&p, "\xff\xff\xff\xff", 4);
    cr_assert_eq(tc_conn_read_frame(p.c, &v, &len), TC_ETOOBIG);
    free_pair(&p);
    make_pair(&p);
    tc_codec_length_prefixed(&c, 8, TC_LITTLE_ENDIAN);
    tc_codec_set_max_frame(&c, (size_t)64 << 20);
    tc_conn_set_codec(p.c, &c);
    peer_send(&p, "\0\0\0\0\1\0\0\0", 8); /* 4 GiB, little endian */
    cr_assert_eq(tc_conn_read_frame(p.c, &v, &len), TC_ETOOBIG);
    free_pair(&p);
    long grown = rss_kib() - before;
    cr_assert(grown < 8 * 1024, "RSS grew by %ld KiB", grown);
}

/* ---- end of stream in the middle of a message --------------------------- */

/* TC_EPARTIAL from a framed read consumes nothing: the framed read keeps
 * answering TC_EPARTIAL, and the cut-short tail, framing included, is
 * readable by peek and plain reads; then TC_EOF for every read. */
Test(channel, end_of_stream_mid_frame_is_partial_and_leaves_the_tail)
{
    struct pair p;
    tc_codec c;
    const void *v;
    size_t len;
    char b[16];
    make_pair(&p);
    tc_codec_length_prefixed(&c, 2, TC_BIG_ENDIAN);
    tc_conn_set_codec(p.c, &c);
    peer_send(&p, "\0\3abc\0\x0a" "12345", 12); /* 5 of the second frame's 10 bytes */
    shutdown(p.peer, SHUT_WR);
    cr_assert_eq(tc_conn_read_frame(p.c, &v, &len), 0);
    cr_assert_eq(tc_conn_read_frame(p.c, &v, &len), TC_EPARTIAL);
    cr_assert_eq(tc_conn_read_frame(p.c, &v, &len), TC_EPARTIAL);
    cr_assert_eq(tc_conn_peek(p.c, 0, &v, &len), 0);
    cr_assert_eq(len, 7);
    cr_assert_eq(memcmp(v, "\0\x0a" "12345", 7), 0);
    cr_assert_eq(tc_conn_peek(p.c, 8, &v, &len), TC_EOF, "fewer than 8 bytes will ever come");
    cr_assert_eq(len, 7);
    cr_assert_eq(tc_conn_read(p.c, b, 3), 3);
    cr_assert_eq(memcmp(b, "\0\x0a" "1", 3), 0);
    cr_assert_eq(tc_conn_read_frame(p.c, &v, &len), TC_EPARTIAL, "a tail is left");
    cr_assert_eq(tc_conn_read(p.c, b, sizeof b), 4);
    cr_assert_eq(memcmp(b, "2345", 4), 0);
    cr_assert_eq(tc_conn_read(p.c, b, sizeof b), TC_EOF);
    cr_assert_eq(tc_conn_read_frame(p.c, &v, &len), TC_EOF, "the tail is taken");
    free_pair(&p);
}

/* An unterminated last line (Python's readline returns it): read_line says
 * TC_EPARTIAL, and the line is there for tc_conn_read; also when it came a
 * byte at a time, and through read_until with a longer delimiter. */
Test(channel, unterminated_last_line_stays_readable)
{
    struct pair p;
    const char *line;
    const void *v;
    size_t len;
    char b[32];
    make_pair(&p);
    peer_send(&p, "one\ntwo", 7);
    shutdown(p.peer, SHUT_WR);
    cr_assert_eq(tc_conn_read_line(p.c, 100, &line, &len), 0);
    cr_assert_eq(len, 3);
    cr_assert_eq(tc_conn_read_line(p.c, 100, &line, &len), TC_EPARTIAL);
    cr_assert_eq(tc_conn_read_line(p.c, 100, &line, &len), TC_EPARTIAL);
    cr_assert_eq(tc_conn_read(p.c, b, sizeof b), 3);
    cr_assert_eq(memcmp(b, "two", 3), 0);
    cr_assert_eq(tc_conn_read_line(p.c, 100, &line, &len), TC_EOF);
    cr_assert_eq(tc_conn_read(p.c, b, sizeof b), TC_EOF);
    free_pair(&p);

    static const unsigned char slow[] = "no newline\r";
    make_pair(&p);
    struct feeder f;
    deliver(&p, &f, slow, sizeof slow - 1, 1, 1); /* a byte at a time, then the end */
    cr_assert_eq(tc_conn_read_until(p.c, "\r\n", 2, 100, &v, &len), TC_EPARTIAL);
    delivered(&f, 1);
    cr_assert_eq(tc_conn_read(p.c, b, sizeof b), (ssize_t)(sizeof slow - 1));
    cr_assert_eq(memcmp(b, slow, sizeof slow - 1), 0);
    cr_assert_eq(tc_conn_read_until(p.c, "\r\n", 2, 100, &v, &len), TC_EOF);
    free_pair(&p);
}

Test(channel, end_of_stream_mid_line_and_mid_exact)
{
    struct pair p;
    const char *line;
    size_t len;
    char b[10];
    make_pair(&p);
    peer_send(&p, "no newline", 10);
    shutdown(p.peer, SHUT_WR);
    cr_assert_eq(tc_conn_read_line(p.c, 100, &line, &len), TC_EPARTIAL);
    free_pair(&p);
    make_pair(&p);
    peer_send(&p, "abc", 3);
    shutdown(p.peer, SHUT_WR);
    cr_assert_eq(tc_conn_read_exact(p.c, b, 5), TC_EPARTIAL);
    cr_assert_eq(tc_conn_read_exact(p.c, b, 1), TC_EPARTIAL);
    free_pair(&p);
    make_pair(&p);
    shutdown(p.peer, SHUT_WR);
    cr_assert_eq(tc_conn_read_exact(p.c, b, 5), TC_EOF, "nothing read: plain end of stream");
    free_pair(&p);
}

/* ---- timeouts and deadlines --------------------------------------------- */

Test(channel, read_timeout_fires_on_time_and_leaves_the_channel_usable)
{
    struct pair p;
    char b[8];
    make_pair(&p);
    tc_conn_set_timeout(p.c, 200);
    int64_t t0 = now_ms();
    cr_assert_eq(tc_conn_read(p.c, b, sizeof b), -ETIMEDOUT);
    int64_t el = now_ms() - t0;
    cr_assert(el >= 200, "fired early: %lld ms", (long long)el);
    cr_assert(el < 200 + tolerance_ms(250), "fired late: %lld ms", (long long)el);
    peer_send(&p, "ok", 2);
    cr_assert_eq(tc_conn_read(p.c, b, sizeof b), 2);
    free_pair(&p);
}

Test(channel, deadline_bounds_a_sequence_and_can_be_cleared)
{
    struct pair p;
    const char *line;
    size_t len;
    make_pair(&p);
    tc_conn_set_timeout(p.c, 0);
    int64_t t0 = now_ms();
    cr_assert_eq(tc_conn_set_deadline(p.c, tc_monotonic_ns() + 300 * TC_NS_PER_MS), 0);
    /* Partial progress does not restart the deadline. */
    peer_send(&p, "par", 3);
    cr_assert_eq(tc_conn_read_line(p.c, 100, &line, &len), -ETIMEDOUT);
    int64_t el = now_ms() - t0;
    cr_assert(el >= 300 && el < 300 + tolerance_ms(250), "%lld ms", (long long)el);
    cr_assert_eq(tc_conn_read_line(p.c, 100, &line, &len), -ETIMEDOUT, "still past it");
    cr_assert_eq(tc_conn_set_deadline(p.c, 0), 0);
    tc_conn_set_timeout(p.c, 5000);
    peer_send(&p, "tial\n", 5);
    cr_assert_eq(tc_conn_read_line(p.c, 100, &line, &len), 0, "nothing was lost");
    cr_assert(len == 7 && memcmp(line, "partial", 7) == 0);
    cr_assert_eq(tc_conn_set_deadline(p.c, -1), -EINVAL);
    free_pair(&p);
}

Test(channel, read_exact_timeout_consumes_nothing)
{
    struct pair p;
    char b[6] = {0};
    make_pair(&p);
    tc_conn_set_timeout(p.c, 100);
    peer_send(&p, "abc", 3);
    cr_assert_eq(tc_conn_read_exact(p.c, b, 6), -ETIMEDOUT);
    peer_send(&p, "def", 3);
    cr_assert_eq(tc_conn_read_exact(p.c, b, 6), 6);
    cr_assert(memcmp(b, "abcdef", 6) == 0);
    free_pair(&p);
}

/* Fill the socket until it would block, with raw sends on the channel's fd. */
static size_t stuff_socket(tc_conn *c)
{
    static char junk[65536];
    size_t total = 0;
    for (;;) {
        ssize_t r = send(tc_conn_fd(c), junk, sizeof junk, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r <= 0)
            break;
        total += (size_t)r;
    }
    return total;
}

struct drain_arg {
    int fd;
    size_t want;
    unsigned char *out;
    size_t got;
    int slow; /* read in small pieces, yielding between them */
};

static void *drain_main(void *arg)
{
    struct drain_arg *d = arg;
    size_t chunk = d->slow ? 1500 : 65536;
    char *tmp = malloc(chunk);
    while (d->got < d->want) {
        size_t n = d->want - d->got < chunk ? d->want - d->got : chunk;
        ssize_t r = recv(d->fd, d->out ? (char *)d->out + d->got : tmp, n, 0);
        if (r <= 0)
            break;
        d->got += (size_t)r;
        if (d->slow)
            sched_yield();
    }
    free(tmp);
    return NULL;
}

Test(channel, flush_timeout_keeps_the_buffer_and_retries_exactly)
{
    struct pair p;
    make_pair(&p);
    int small = 4096;
    setsockopt(tc_conn_fd(p.c), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(p.peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    size_t stuffed = stuff_socket(p.c);
    tc_conn_set_timeout(p.c, 100);
    cr_assert_eq(tc_conn_write(p.c, "tail", 4), 4);
    int64_t t0 = now_ms();
    cr_assert_eq(tc_conn_flush(p.c), -ETIMEDOUT);
    cr_assert(now_ms() - t0 >= 100);
    struct drain_arg d = {.fd = p.peer, .want = stuffed + 4, .out = malloc(stuffed + 4)};
    pthread_t t;
    pthread_create(&t, NULL, drain_main, &d);
    tc_conn_set_timeout(p.c, 5000);
    cr_assert_eq(tc_conn_flush(p.c), 0, "the channel stayed usable");
    pthread_join(t, NULL);
    cr_assert_eq(d.got, stuffed + 4);
    cr_assert(memcmp(d.out + stuffed, "tail", 4) == 0, "the rest went out exactly once");
    free(d.out);
    free_pair(&p);
}

Test(channel, unbuffered_write_timeout_after_progress_breaks_the_write_side)
{
    struct pair p;
    make_pair(&p);
    int small = 4096;
    setsockopt(tc_conn_fd(p.c), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(p.peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    tc_conn_set_timeout(p.c, 150);
    size_t n = 8 << 20;
    char *big = calloc(1, n);
    int64_t t0 = now_ms();
    cr_assert_eq(tc_conn_send_all(p.c, big, n), -ETIMEDOUT);
    int64_t el = now_ms() - t0;
    cr_assert(el >= 150 && el < 150 + tolerance_ms(250), "%lld ms", (long long)el);
    cr_assert_eq(tc_conn_write(p.c, "x", 1), -ETIMEDOUT, "sticky");
    cr_assert_eq(tc_conn_flush(p.c), -ETIMEDOUT);
    free(big);
    free_pair(&p);
}

/* After an unbuffered write timed out part way, tc_conn_last_sent() counts
 * exactly the caller's bytes the peer then receives: after the bytes that
 * were buffered before it and the codec's header, which it does not count. */
enum { LS_WRITEV, LS_WRITE_FRAME, LS_WRITE, LS_PRINTF, LS_N };
static const char *const ls_name[LS_N] = {"writev", "write_frame", "write", "printf"};

static void check_last_sent_timed_out(int kind)
{
    struct pair p;
    make_pair(&p);
    int small = 4096;
    setsockopt(tc_conn_fd(p.c), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(p.peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(p.peer, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv); /* a bug fails, not hangs */
    size_t n = 8 << 20, head = 0;
    char *big = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + (i * 7 + i / 4093) % 26);
    big[n] = '\0';
    cr_assert_eq(tc_conn_write(p.c, "pre", 3), 3); /* buffered: goes first, not counted */
    tc_conn_set_timeout(p.c, 150);
    ssize_t r;
    if (kind == LS_WRITEV) {
        struct iovec v[8];
        for (int i = 0; i < 8; i++)
            v[i] = (struct iovec){big + (size_t)i * (n / 8), n / 8};
        r = tc_conn_writev(p.c, v, 8);
    } else if (kind == LS_WRITE_FRAME) {
        tc_codec c;
        tc_codec_length_prefixed(&c, 4, TC_BIG_ENDIAN);
        tc_codec_set_max_frame(&c, n);
        tc_conn_set_codec(p.c, &c);
        head = 4;
        r = tc_conn_write_frame(p.c, big, n);
    } else if (kind == LS_WRITE) {
        r = tc_conn_write(p.c, big, n); /* larger than the buffer: sent directly */
    } else {
        r = tc_conn_printf(p.c, "%s", big);
    }
    ssize_t last = tc_conn_last_sent(p.c);
    tc_conn_close(p.c); /* nothing more goes out: the write side is broken */
    p.c = NULL;
    char *got = malloc(n + 16);
    size_t k = peer_recv_all(p.peer, got, n + 16);
    cr_assert_eq(r, -ETIMEDOUT, "%s: %zd (%s)", ls_name[kind], r, tc_err_name((int)r));
    cr_assert_gt(last, 0, "%s: the count says nothing went out", ls_name[kind]);
    cr_assert_lt(last, (ssize_t)n);
    cr_assert_eq(k, 3 + head + (size_t)last,
                 "%s: the peer got %zu bytes, the count says 3 + %zu + %zd", ls_name[kind], k,
                 head, last);
    cr_assert(memcmp(got, "pre", 3) == 0);
    cr_assert(memcmp(got + 3 + head, big, (size_t)last) == 0, "%s: the first bytes, in order",
              ls_name[kind]);
    free(got);
    free(big);
    free_pair(&p);
}

Test(channel, last_sent_after_a_timed_out_writev) { check_last_sent_timed_out(LS_WRITEV); }
Test(channel, last_sent_after_a_timed_out_frame) { check_last_sent_timed_out(LS_WRITE_FRAME); }
Test(channel, last_sent_after_a_timed_out_direct_write) { check_last_sent_timed_out(LS_WRITE); }
Test(channel, last_sent_after_a_timed_out_printf) { check_last_sent_timed_out(LS_PRINTF); }

/* ---- writes ------------------------------------------------------------- */

static int queued(int fd)
{
    int n = -1;
    ioctl(fd, FIONREAD, &n);
    return n;
}

Test(channel, writes_are_buffered_until_flush)
{
    struct pair p;
    char b[64];
    make_pair(&p);
    cr_assert_eq(tc_conn_write(p.c, "abc", 3), 3);
    cr_assert_eq(tc_conn_printf(p.c, "-%d-%s", 42, "x"), 5);
    cr_assert_eq(queued(p.peer), 0, "nothing sent before the flush");
    cr_assert_eq(tc_conn_flush(p.c), 0);
    cr_assert_eq(peer_recv_all(p.peer, b, 8), 8);
    cr_assert(memcmp(b, "abc-42-x", 8) == 0);
    /* send_all flushes first, keeping the order. */
    tc_conn_write(p.c, "1", 1);
    cr_assert_eq(tc_conn_send_all(p.c, "2", 1), 1);
    cr_assert_eq(peer_recv_all(p.peer, b, 2), 2);
    cr_assert(memcmp(b, "12", 2) == 0);
    /* A printf larger than the buffer goes out directly, in order. */
    tc_conn_set_buffer_sizes(p.c, 0, 16);
    tc_conn_write(p.c, "<", 1);
    cr_assert_eq(tc_conn_printf(p.c, "%040d", 7), 40);
    cr_assert_eq(tc_conn_flush(p.c), 0);
    cr_assert_eq(peer_recv_all(p.peer, b, 41), 41);
    cr_assert_eq(b[0], '<');
    cr_assert_eq(b[40], '7');
    free_pair(&p);
}

Test(channel, writev_over_IOV_MAX_entries)
{
    struct pair p;
    enum { N = 3000 };
    static struct iovec iov[N];
    static char data[N][3];
    static unsigned char got[N * 3];
    make_pair(&p);
    for (int i = 0; i < N; i++) {
        data[i][0] = (char)i, data[i][1] = (char)(i >> 8), data[i][2] = '.';
        iov[i].iov_base = data[i];
        iov[i].iov_len = i % 7 == 0 ? 0 : 3; /* empty entries are skipped */
    }
    size_t total = 0;
    for (int i = 0; i < N; i++)
        total += iov[i].iov_len;
    struct drain_arg d = {.fd = p.peer, .want = total, .out = got};
    pthread_t t;
    pthread_create(&t, NULL, drain_main, &d);
    tc_conn_write(p.c, "", 0);
    cr_assert_eq(tc_conn_writev(p.c, iov, N), (ssize_t)total);
    pthread_join(t, NULL);
    cr_assert_eq(d.got, total);
    size_t o = 0;
    for (int i = 0; i < N; i++) {
        cr_assert(memcmp(got + o, data[i], iov[i].iov_len) == 0, "entry %d", i);
        o += iov[i].iov_len;
    }
    cr_assert_eq(tc_conn_writev(p.c, iov, -1), -EINVAL);
    cr_assert_eq(tc_conn_writev(p.c, NULL, 0), 0);
    free_pair(&p);
}

static void pattern(unsigned char *b, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)((i * 131 + seed) ^ (i >> 9));
}

Test(channel, partial_writes_on_a_full_socket_to_a_slow_reader)
{
    struct pair p;
    make_pair(&p);
    /* Far below the 2 MiB written, so sends are partial; not smaller, where
     * TCP crawls at one small segment per delayed ACK. */
    int small = 32768;
    setsockopt(tc_conn_fd(p.c), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(p.peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    tc_codec c;
    tc_codec_length_prefixed(&c, 4, TC_BIG_ENDIAN);
    tc_codec_set_max_frame(&c, 4 << 20);
    tc_conn_set_codec(p.c, &c);
    size_t n = 1 << 20, small_writes = 5000, total = 4 + n + small_writes * 7 + n;
    unsigned char *payload = malloc(n), *got = malloc(total);
    pattern(payload, n, 1);
    struct drain_arg d = {.fd = p.peer, .want = total, .out = got, .slow = 1};
    pthread_t t;
    pthread_create(&t, NULL, drain_main, &d);
    cr_assert_eq(tc_conn_write_frame(p.c, payload, n), (ssize_t)n);
    for (size_t i = 0; i < small_writes; i++)
        cr_assert_eq(tc_conn_printf(p.c, "%06zu;", i), 7);
    cr_assert_eq(tc_conn_send_all(p.c, payload, n), (ssize_t)n);
    pthread_join(t, NULL);
    cr_assert_eq(d.got, total);
    cr_assert(got[0] == 0 && got[1] == 0x10 && got[2] == 0 && got[3] == 0, "prefix 1 MiB");
    cr_assert(memcmp(got + 4, payload, n) == 0);
    char want[8];
    for (size_t i = 0; i < small_writes; i++) {
        snprintf(want, sizeof want, "%06zu;", i);
        cr_assert(memcmp(got + 4 + n + i * 7, want, 7) == 0, "small write %zu", i);
    }
    cr_assert(memcmp(got + 4 + n + small_writes * 7, payload, n) == 0);
    free(payload);
    free(got);
    free_pair(&p);
}

Test(channel, write_frame_encodes_with_the_codec)
{
    struct pair p;
    tc_codec c;
    unsigned char b[32];
    make_pair(&p);
    tc_codec_length_prefixed(&c, 2, TC_LITTLE_ENDIAN);
    tc_conn_set_codec(p.c, &c);
    cr_assert_eq(tc_conn_send(p.c, "hey", 3), 3);
    cr_assert_eq(peer_recv_all(p.peer, b, 5), 5);
    cr_assert(memcmp(b, "\3\0hey", 5) == 0);
    tc_codec_delimited(&c, "\r\n", 2);
    tc_conn_set_codec(p.c, &c);
    cr_assert_eq(tc_conn_write(p.c, "pre:", 4), 4);
    cr_assert_eq(tc_conn_write_frame(p.c, "line", 4), 4);
    cr_assert_eq(peer_recv_all(p.peer, b, 10), 10);
    cr_assert(memcmp(b, "pre:line\r\n", 10) == 0);
    cr_assert_eq(tc_conn_write_frame(p.c, "a\r\nb", 4), TC_EBADFRAME);
    tc_codec_set_max_frame(&c, 2);
    tc_conn_set_codec(p.c, &c);
    cr_assert_eq(tc_conn_write_frame(p.c, "abc", 3), TC_ETOOBIG);
    cr_assert_eq(tc_conn_write_frame(p.c, "ab", 2), 2, "the channel is still fine");
    cr_assert_eq(peer_recv_all(p.peer, b, 4), 4);
    cr_assert(memcmp(b, "ab\r\n", 4) == 0);
    free_pair(&p);
}

/* Every send returns the number of the caller's bytes it took: never the
 * bytes already buffered that go out first, never the codec's framing. */
Test(channel, sends_return_the_callers_byte_count)
{
    struct pair p;
    tc_codec c;
    make_pair(&p);
    tc_codec_length_prefixed(&c, 4, TC_BIG_ENDIAN);
    tc_conn_set_codec(p.c, &c);
    char path[] = "/tmp/tc_sendcount_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    unlink(path);
    cr_assert_eq(write(fd, "0123456789", 10), 10);

    /* After a success tc_conn_last_sent() is the call's return value. */
#define SENT(call, n, ...)                                                                         \
    do {                                                                                           \
        cr_assert_eq((call), (n), __VA_ARGS__);                                                    \
        cr_assert_eq(tc_conn_last_sent(p.c), (ssize_t)(n), "last_sent after %s", #call);          \
    } while (0)
    SENT(tc_conn_write(p.c, "buffered", 8), 8, "write");
    SENT(tc_conn_send_all(p.c, "all", 3), 3, "the 8 buffered bytes are not counted");
    SENT(tc_conn_write(p.c, "x", 1), 1, "write");
    struct iovec v[2] = {{"ab", 2}, {"cde", 3}};
    SENT(tc_conn_writev(p.c, v, 2), 5, "the vector's length, not the buffered byte");
    SENT(tc_conn_printf(p.c, "%d", 12345), 5, "printf");
    SENT(tc_conn_write_frame(p.c, "frame", 5), 5, "the payload: no prefix, no buffer");
    SENT(tc_conn_send(p.c, "", 0), 0, "an empty frame: 4 bytes of prefix, 0 of payload");
    SENT(tc_conn_send(p.c, "msg", 3), 3, "send");
    SENT(tc_conn_write(p.c, "z", 1), 1, "write");
    SENT(tc_conn_flush(p.c), 0, "a flush takes none of the caller's bytes");
    SENT(tc_conn_write(p.c, "y", 1), 1, "write");
    SENT(tc_conn_sendfile(p.c, fd, 4, 100), 6, "the file's bytes, up to its end");
    SENT(tc_conn_send_all(p.c, "", 0), 0, "nothing");
    SENT(tc_conn_writev(p.c, NULL, 0), 0, "nothing");
#undef SENT
    cr_assert_eq(tc_conn_write_frame(p.c, "x", 1 << 30), TC_ETOOBIG);
    cr_assert_eq(tc_conn_last_sent(p.c), 0, "a frame the codec refused sent nothing");
    cr_assert_eq(tc_conn_send_all(p.c, NULL, 1), -EINVAL);
    cr_assert_eq(tc_conn_last_sent(p.c), 0, "invalid arguments sent nothing");
    cr_assert_eq(tc_conn_last_sent(NULL), -EINVAL);

    static const char want[] = "bufferedallxabcde12345\0\0\0\5frame\0\0\0\0\0\0\0\3msgzy456789";
    char got[sizeof want];
    cr_assert_eq(peer_recv_all(p.peer, got, sizeof want - 1), sizeof want - 1);
    cr_assert(memcmp(got, want, sizeof want - 1) == 0, "the bytes on the wire");
    close(fd);
    free_pair(&p);
}

Test(channel, views_survive_writes_and_echo_directly)
{
    struct pair p;
    const char *line;
    size_t len;
    char b[16];
    make_pair(&p);
    peer_send(&p, "echo me\nnext\n", 13);
    cr_assert_eq(tc_conn_read_line(p.c, 64, &line, &len), 0);
    cr_assert_eq(tc_conn_write(p.c, line, len + 1), (ssize_t)len + 1, "view and its \\n");
    cr_assert_eq(tc_conn_flush(p.c), 0);
    cr_assert_eq(peer_recv_all(p.peer, b, 8), 8);
    cr_assert(memcmp(b, "echo me\n", 8) == 0);
    cr_assert_eq(tc_conn_read_line(p.c, 64, &line, &len), 0);
    cr_assert(len == 4 && memcmp(line, "next", 4) == 0);
    free_pair(&p);
}

Test(channel, half_close_sends_eof_and_keeps_reading)
{
    struct pair p;
    char b[16];
    make_pair(&p);
    tc_conn_write(p.c, "request", 7);
    cr_assert_eq(tc_conn_shutdown_write(p.c), 0, "flushes, then half-closes");
    cr_assert_eq(peer_recv_all(p.peer, b, sizeof b), 7, "the peer reads to end of stream");
    cr_assert(memcmp(b, "request", 7) == 0);
    peer_send(&p, "reply", 5);
    close(p.peer);
    p.peer = -1;
    cr_assert_eq(tc_conn_read_exact(p.c, b, 5), 5);
    cr_assert(memcmp(b, "reply", 5) == 0);
    cr_assert_eq(tc_conn_read(p.c, b, sizeof b), TC_EOF);
    cr_assert_eq(tc_conn_send_all(p.c, "x", 1), -EPIPE);
    free_pair(&p);
}

Test(channel, sendfile_sends_the_file_range)
{
    struct pair p;
    char path[] = "/tmp/tc_sendfile_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    unlink(path);
    size_t n = 300000;
    unsigned char *data = malloc(n), *got = malloc(n);
    pattern(data, n, 7);
    cr_assert_eq(write(fd, data, n), (ssize_t)n);
    make_pair(&p);
    tc_conn_write(p.c, "HDR", 3); /* buffered bytes go first */
    size_t off = 1000, count = 250000;
    struct drain_arg d = {.fd = p.peer, .want = 3 + count, .out = got};
    pthread_t t;
    pthread_create(&t, NULL, drain_main, &d);
    cr_assert_eq(tc_conn_sendfile(p.c, fd, (off_t)off, count), (ssize_t)count);
    pthread_join(t, NULL);
    cr_assert_eq(d.got, 3 + count);
    cr_assert(memcmp(got, "HDR", 3) == 0);
    cr_assert(memcmp(got + 3, data + off, count) == 0);
    cr_assert_eq(lseek(fd, 0, SEEK_CUR), (off_t)n, "the file offset is untouched");
    /* Past the end of the file: a short count. */
    cr_assert_eq(tc_conn_sendfile(p.c, fd, (off_t)(n - 10), 100), 10);
    cr_assert_eq(peer_recv_all(p.peer, got, 10), 10);
    cr_assert(memcmp(got, data + n - 10, 10) == 0);
    cr_assert_eq(tc_conn_sendfile(p.c, -1, 0, 1), -EINVAL);
    free(data);
    free(got);
    close(fd);
    free_pair(&p);
}

Test(channel, a_closed_peer_gives_EPIPE_not_SIGPIPE)
{
    /* SIGPIPE keeps its default action (terminate) here: surviving is the test. */
    signal(SIGPIPE, SIG_DFL);
    struct pair p;
    char path[] = "/tmp/tc_sigpipe_XXXXXX";
    int fd = mkstemp(path);
    unlink(path);
    static char blob[65536];
    cr_assert_eq(write(fd, blob, sizeof blob), (ssize_t)sizeof blob);
    make_pair(&p);
    close(p.peer);
    p.peer = -1;
    ssize_t r = 0;
    for (int i = 0; i < 100 && r >= 0; i++)
        r = tc_conn_send_all(p.c, blob, sizeof blob);
    cr_assert(r == -EPIPE || r == -ECONNRESET, "%s", tc_err_name((int)r));
    ssize_t last = tc_conn_last_sent(p.c);
    cr_assert(last >= 0 && last < (ssize_t)sizeof blob, "sent %zd of the failed call", last);
    free_pair(&p);
    make_pair(&p);
    close(p.peer);
    p.peer = -1;
    r = 0;
    for (int i = 0; i < 100 && r >= 0; i++)
        r = tc_conn_sendfile(p.c, fd, 0, sizeof blob);
    cr_assert(r == -EPIPE || r == -ECONNRESET, "%s", tc_err_name((int)r));
    close(fd);
    free_pair(&p);
}

/* ---- options ------------------------------------------------------------- */

Test(channel, options)
{
    struct pair p;
    tc_codec bad = TC_CODEC_INIT;
    make_pair(&p);
    cr_assert_eq(tc_conn_set_nodelay(p.c, 1), 0);
    cr_assert_eq(tc_conn_set_nodelay(p.c, 0), 0);
    cr_assert_eq(tc_conn_set_keepalive(p.c, 1, 30), 0);
    cr_assert_eq(tc_conn_set_keepalive(p.c, 0, 0), 0);
    cr_assert_eq(tc_conn_set_keepalive(p.c, 1, -1), -EINVAL);
    cr_assert_eq(tc_conn_set_buffer_sizes(p.c, (size_t)65 << 20, 0), -EINVAL);
    cr_assert_eq(tc_conn_set_buffer_sizes(p.c, 1, 1), 0);
    bad.kind = TC_CODEC_CUSTOM;
    cr_assert_eq(tc_conn_set_codec(p.c, &bad), -EINVAL);
    cr_assert_eq(tc_conn_set_codec(p.c, NULL), 0);
    cr_assert_eq(tc_conn_codec(p.c)->kind, TC_CODEC_RAW);
    cr_assert_eq(tc_conn_set_nodelay(NULL, 1), -EINVAL);
    /* Tiny buffers still carry lines longer than themselves. */
    const char *line;
    size_t len;
    peer_send(&p, "a line longer than one byte\n", 28);
    cr_assert_eq(tc_conn_read_line(p.c, 100, &line, &len), 0);
    cr_assert_eq(len, 27);
    tc_conn_write(p.c, "ab", 2);
    cr_assert_eq(tc_conn_flush(p.c), 0);
    char b[2];
    cr_assert_eq(peer_recv_all(p.peer, b, 2), 2);
    free_pair(&p);
}

Test(channel, dial_config_set_codec_and_buffers)
{
    struct pair p;
    tc_dial_config o = TC_DIAL_CONFIG_INIT;
    tc_codec_delimited(&o.codec, "\n", 1);
    o.read_buffer_size = 8;
    make_pair_opts(&p, &o);
    cr_assert_eq(tc_conn_codec(p.c)->kind, TC_CODEC_DELIMITED);
    peer_send(&p, "framed by newline\n", 18);
    const void *v;
    size_t len;
    cr_assert_eq(tc_conn_read_frame(p.c, &v, &len), 0);
    cr_assert_eq(len, 17);
    free_pair(&p);
    tc_conn *c;
    o.codec.kind = TC_CODEC_CUSTOM; /* without scan */
    cr_assert_eq(tc_dial(&c, "127.0.0.1:1", &o), -EINVAL);
}

/* ---- the client's errors -------------------------------------------------- */

Test(channel, dial_refused)
{
    /* A port that is bound but not listening refuses connections. */
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &al);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(a.sin_port));
    tc_conn *c = NULL;
    cr_assert_eq(tc_dial(&c, addr, NULL), -ECONNREFUSED);
    cr_assert_null(c);
    close(s);
}

Test(channel, dial_unresolvable_name_sends_no_query)
{
    /* A 70-character label is invalid DNS; glibc refuses it without asking
     * any server (checked once with strace -f -e trace=network). */
    char name[128];
    memset(name, 'a', 70);
    strcpy(name + 70, ".invalid:80");
    tc_conn *c = NULL;
    cr_assert_eq(tc_dial(&c, name, NULL), TC_ENORESOLVE);
    cr_assert_null(c);
}

Test(channel, dial_times_out_against_a_full_backlog)
{
    /* listen(fd, 0) holds one pending connection; the next SYN goes
     * unanswered, so connect() hangs until our timeout. */
    struct sockaddr_in a;
    int l = listener(&a, 0);
    int filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(connect(filler, (struct sockaddr *)&a, sizeof a), 0);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(a.sin_port));
    tc_dial_config o = TC_DIAL_CONFIG_INIT;
    o.connect_timeout_ms = 300;
    tc_conn *c = NULL;
    int64_t t0 = now_ms();
    int rc = tc_dial(&c, addr, &o);
    int64_t el = now_ms() - t0;
    cr_assert_eq(rc, -ETIMEDOUT, "%s", tc_err_name(rc));
    cr_assert(el >= 300 && el < 300 + tolerance_ms(300), "%lld ms", (long long)el);
    close(filler);
    close(l);
}
