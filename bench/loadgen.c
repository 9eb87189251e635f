/* SPDX-License-Identifier: MIT */
/* loadgen: the benchmark client. Drives an echo server over loopback from
 * epoll loops (one per thread), checks every echoed byte and prints one JSON
 * line: requests/s, MB/s, latency percentiles, errors, server CPU per request. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: loadgen --connect HOST:PORT [--scenario rr|churn|throughput|idle]\n"
    "               [--conns N] [--size BYTES] [--depth D] [--framing raw|line|len32|ws]\n"
    "               [--duration S] [--warmup S] [--threads T] [--server-pid PID]\n"
    "               [--connect-timeout S] [--max-requests N] [--hold S] [--no-ping]\n"
    "  rr          each connection sends DEPTH messages and waits for their echo (closed loop)\n"
    "  churn       CONNS slots: connect, one exchange, close, again; latency = connect..echo\n"
    "  throughput  bulk streaming: rr with about 1 MiB in flight per connection (MB/s)\n"
    "  idle        open CONNS connections, ping each once, print a ready line, hold them\n"
    "              until a line (or EOF) on stdin, SIGUSR1 or --hold S, then close\n"
    "  udp         datagrams: CONNS connected UDP sockets, each a closed loop of one datagram\n"
    "              of SIZE bytes in flight (raw framing); no reply in 200 ms counts as lost\n"
    "  --size      payload bytes per message; line adds '\\n', len32 a 4-byte length,\n"
    "              ws a WebSocket frame (binary, masked; the handshake is made at connect)\n"
    "  --server-pid  sample utime+stime of that process tree over the measured window\n";

enum { SC_RR, SC_CHURN, SC_THROUGHPUT, SC_IDLE, SC_UDP };
enum { FR_RAW, FR_LINE, FR_LEN32, FR_WS };
enum { ST_FREE, ST_CONNECTING, ST_ACTIVE, ST_DEAD };

#define MAX_CONNS 200000
#define MAX_DEPTH 65536
#define RECV_BUF (256 * 1024)
#define SEND_BATCH (256 * 1024)   /* bytes of frames generated per send */
#define STAMP_LEN 16              /* per-message marker: sequence and connection id */
#define MAX_CONNECTING 256        /* connects in flight at once (backlogs are finite) */
#define MAX_THREAD_ERRORS 100000  /* a loop that only fails stops */
#define READS_PER_WAKEUP 8        /* fairness between connections */
#define DRAIN_NS 500000000LL      /* after the run: wait this long for echoes in flight */

/* ---- options ---- */

static struct {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    const char *target;
    int scenario, framing;
    int conns, threads, depth, ping;
    size_t size, frame;
    double duration, warmup, hold, connect_timeout;
    long long max_requests;
    pid_t server_pid;
} opt = {.scenario = SC_RR, .framing = FR_RAW, .conns = 1, .threads = 1, .depth = 0,
         .ping = 1, .size = 64, .duration = 2.0, .warmup = 0.5, .hold = 120.0,
         .connect_timeout = 10.0, .max_requests = 1000000000LL};

static const char *scenario_names[] = {"rr", "churn", "throughput", "idle", "udp"};
static const char *framing_names[] = {"raw", "line", "len32", "ws"};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "loadgen: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(2);
}

/* ---- log-linear latency histogram (ns): 32 linear buckets per power of two ---- */

#define SUB_BITS 5
#define SUB (1 << SUB_BITS)
#define NBUCKETS ((64 - SUB_BITS + 1) * SUB)

struct hist {
    uint64_t b[NBUCKETS];
    uint64_t count, max;
    double sum;
};

static int bucket_of(uint64_t v)
{
    if (v < SUB)
        return (int)v;
    int e = 63 - __builtin_clzll(v); /* >= SUB_BITS */
    int sub = (int)((v >> (e - SUB_BITS)) & (SUB - 1));
    return (e - SUB_BITS + 1) * SUB + sub;
}

/* The middle of a bucket: relative error at most 1/64. */
static double bucket_mid(int i)
{
    if (i < SUB)
        return i;
    int e = i / SUB - 1 + SUB_BITS, sub = i % SUB;
    double lo = ldexp(1.0, e) + (double)sub * ldexp(1.0, e - SUB_BITS);
    return lo + ldexp(1.0, e - SUB_BITS) / 2;
}

static void hist_add(struct hist *h, int64_t v)
{
    uint64_t u = v > 0 ? (uint64_t)v : 0;
    h->b[bucket_of(u)]++;
    h->count++;
    h->sum += (double)u;
    if (u > h->max)
        h->max = u;
}

static void hist_merge(struct hist *to, const struct hist *from)
{
    for (int i = 0; i < NBUCKETS; i++)
        to->b[i] += from->b[i];
    to->count += from->count;
    to->sum += from->sum;
    if (from->max > to->max)
        to->max = from->max;
}

static double hist_pct(const struct hist *h, double q)
{
    if (!h->count)
        return 0;
    uint64_t want = (uint64_t)ceil(q * (double)h->count), acc = 0;
    if (want < 1)
        want = 1;
    for (int i = 0; i < NBUCKETS; i++) {
        acc += h->b[i];
        if (acc >= want) {
            double m = bucket_mid(i);
            return m > (double)h->max ? (double)h->max : m;
        }
    }
    return (double)h->max;
}

/* ---- message frames: template + a stamp naming the message and connection ---- */

static uint8_t *tmpl;     /* one whole frame; the stamp region is overwritten per message */
static size_t stamp_off;  /* where the stamp starts inside a frame */
static size_t stamp_len;  /* min(STAMP_LEN, size) */
/* What comes back: the same frame, except for WebSocket (the server's frame
 * is unmasked, the client's masked), whose echo has its own template. */
static uint8_t *rtmpl;
static size_t rstamp_off, rframe;
static const uint8_t ws_key[4] = {0x37, 0xfa, 0x21, 0x3d};

/* A WebSocket binary frame header for size bytes, masked or not: its length. */
static size_t ws_header(uint8_t *h, size_t size, int masked)
{
    size_t n = 2;
    h[0] = 0x82;
    if (size < 126) {
        h[1] = (uint8_t)size;
    } else if (size < 65536) {
        h[1] = 126;
        h[2] = (uint8_t)(size >> 8);
        h[3] = (uint8_t)size;
        n = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)((uint64_t)size >> (56 - 8 * i));
        n = 10;
    }
    if (masked) {
        h[1] |= 0x80;
        memcpy(h + n, ws_key, 4);
        n += 4;
    }
    return n;
}

/* WebSocket: the client's frame (masked) in tmpl, the echo (unmasked) in rtmpl. */
static void make_ws_templates(void)
{
    uint8_t h[14];
    size_t sh = ws_header(h, opt.size, 1), rh = ws_header(h, opt.size, 0);
    opt.frame = sh + opt.size;
    rframe = rh + opt.size;
    tmpl = malloc(opt.frame);
    rtmpl = malloc(rframe);
    if (!tmpl || !rtmpl)
        die("%s", "out of memory");
    ws_header(tmpl, opt.size, 1);
    ws_header(rtmpl, opt.size, 0);
    stamp_off = sh;
    rstamp_off = rh;
    stamp_len = opt.size < STAMP_LEN ? opt.size : STAMP_LEN;
    for (size_t i = 0; i < opt.size; i++) {
        rtmpl[rh + i] = (uint8_t)('A' + (i * 7 + i / 26) % 26);
        tmpl[sh + i] = rtmpl[rh + i] ^ ws_key[i & 3];
    }
}

static void make_template(void)
{
    if (opt.framing == FR_WS) {
        make_ws_templates();
        return;
    }
    opt.frame = opt.size + (opt.framing == FR_LINE ? 1 : opt.framing == FR_LEN32 ? 4 : 0);
    tmpl = malloc(opt.frame);
    if (!tmpl)
        die("%s", "out of memory");
    size_t p = 0;
    if (opt.framing == FR_LEN32) {
        uint32_t be = htonl((uint32_t)opt.size);
        memcpy(tmpl, &be, 4);
        p = 4;
    }
    stamp_off = p;
    stamp_len = opt.size < STAMP_LEN ? opt.size : STAMP_LEN;
    for (size_t i = 0; i < opt.size; i++)
        tmpl[p + i] = (uint8_t)('A' + (i * 7 + i / 26) % 26); /* never '\n' */
    if (opt.framing == FR_LINE)
        tmpl[opt.frame - 1] = '\n';
    rtmpl = tmpl;
    rstamp_off = stamp_off;
    rframe = opt.frame;
}

static void make_stamp(uint8_t *dst, uint64_t seq, uint32_t cid)
{
    uint8_t s[STAMP_LEN];
    for (int i = 0; i < 8; i++) {
        s[i] = (uint8_t)('a' + ((seq >> (4 * i)) & 15));
        s[8 + i] = (uint8_t)('a' + ((cid >> (4 * i)) & 15));
    }
    memcpy(dst, s, stamp_len);
}

/* ---- server CPU: utime+stime(+reaped children) over a process tree ---- */

struct procstat {
    pid_t pid, ppid;
    unsigned long long ticks;
};

static int read_procstat(pid_t pid, struct procstat *ps)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime stime cutime cstime (fields 3..17) */
    char state;
    int ppid;
    unsigned long long f[15];
    if (sscanf(p + 2, "%c %d %*d %*d %*d %*d %*u %llu %llu %llu %llu %llu %llu %llu %llu", &state,
               &ppid, &f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6], &f[7]) != 10)
        return -1;
    ps->pid = pid;
    ps->ppid = ppid;
    ps->ticks = f[4] + f[5] + f[6] + f[7];
    return 0;
}

/* Seconds of CPU used by pid and its live descendants (exited, reaped ones are
 * in their parents' cutime/cstime). procs_out: processes in the tree. */
static double tree_cpu(pid_t root, int *procs_out)
{
    size_t cap = 1024, n = 0;
    struct procstat *all = malloc(cap * sizeof *all);
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (all && d && (e = readdir(d))) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        if (n == cap) {
            struct procstat *g = realloc(all, 2 * cap * sizeof *all);
            if (!g)
                break;
            all = g;
            cap *= 2;
        }
        if (read_procstat((pid_t)atoi(e->d_name), &all[n]) == 0)
            n++;
    }
    if (d)
        closedir(d);
    /* Mark the tree: repeat until no new member (trees here are shallow). */
    char *in = calloc(n ? n : 1, 1);
    unsigned long long ticks = 0;
    int procs = 0;
    for (size_t i = 0; in && i < n; i++)
        if (all[i].pid == root)
            in[i] = 1;
    for (int changed = 1; in && changed;) {
        changed = 0;
        for (size_t i = 0; i < n; i++) {
            if (in[i])
                continue;
            for (size_t j = 0; j < n; j++)
                if (in[j] && all[j].pid == all[i].ppid) {
                    in[i] = 1, changed = 1;
                    break;
                }
        }
    }
    for (size_t i = 0; in && i < n; i++)
        if (in[i])
            ticks += all[i].ticks, procs++;
    free(in);
    free(all);
    if (procs_out)
        *procs_out = procs;
    return (double)ticks / (double)sysconf(_SC_CLK_TCK);
}

/* ---- connections and per-thread loops ---- */

struct conn {
    int fd, state, want_out;
    uint32_t id;
    uint64_t sent, recvd; /* messages queued for sending / fully echoed */
    size_t roff;          /* bytes of the current incoming frame seen so far */
    uint8_t exp_stamp[STAMP_LEN];
    uint8_t *sbuf;
    size_t slen, soff, scap;
    int64_t *tsent; /* ring of depth send times */
    int64_t t_open; /* churn/idle: when connect started */
    uint64_t done_in_window;
    int pinged;
};

struct thread {
    pthread_t tid;
    int idx, epfd;
    struct conn *conns;
    int nconns;
    uint8_t *rbuf;
    struct hist hist;
    uint64_t requests, bytes; /* in the window */
    uint64_t total_done;
    uint64_t errors, verify_errors, connect_errors, io_errors;
    uint32_t next_id;
    int connecting, established, unpinged;
};

static struct thread *threads;
static pthread_barrier_t barrier;
static _Atomic int64_t t_ws, t_we, t_stop; /* window start, end; hard stop */
static _Atomic long long requests_left;
static _Atomic int threads_done; /* threads past their main loop */
static volatile sig_atomic_t release_idle;

static void thread_error(struct thread *t, uint64_t *which)
{
    (*which)++;
    t->errors++;
}

static void conn_close(struct thread *t, struct conn *c, int dead)
{
    if (c->fd >= 0) {
        close(c->fd); /* also leaves the epoll set */
        c->fd = -1;
    }
    if (c->state == ST_CONNECTING)
        t->connecting--;
    if (c->state == ST_ACTIVE && opt.scenario == SC_IDLE && opt.ping && !c->pinged)
        t->unpinged--;
    c->state = dead ? ST_DEAD : ST_FREE;
    c->slen = c->soff = 0;
    c->roff = 0;
    c->want_out = 0;
}

static int set_events(struct thread *t, struct conn *c, uint32_t ev, int op)
{
    struct epoll_event e = {.events = ev, .data.ptr = c};
    return epoll_ctl(t->epfd, op, c->fd, &e);
}

/* Start a non-blocking connect; the connection waits for EPOLLOUT. */
static int conn_open(struct thread *t, struct conn *c)
{
    c->fd = socket(opt.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -errno;
    int one = 1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->sent = c->recvd = 0;
    c->roff = c->slen = c->soff = 0;
    c->pinged = 0;
    c->id = t->next_id++;
    c->t_open = now_ns();
    if (opt.scenario == SC_CHURN && opt.addr.ss_family == AF_INET) {
        /* Churn to a loopback server: spread the sockets over 16 source
         * addresses (port chosen at connect), or TIME_WAIT makes connect()
         * scan one address's ports and bounds the client, not the server. */
        struct sockaddr_in *dst = (struct sockaddr_in *)&opt.addr;
        if ((ntohl(dst->sin_addr.s_addr) >> 24) == 127) {
            struct sockaddr_in src = {.sin_family = AF_INET};
            src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(c->id % 16));
            (void)setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
            if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0) {
                int e = -errno;
                close(c->fd);
                c->fd = -1;
                return e;
            }
        }
    }
    if (connect(c->fd, (struct sockaddr *)&opt.addr, opt.addrlen) < 0 && errno != EINPROGRESS) {
        int e = -errno;
        close(c->fd);
        c->fd = -1;
        return e;
    }
    c->state = ST_CONNECTING;
    t->connecting++;
    c->want_out = 1;
    if (set_events(t, c, EPOLLOUT, EPOLL_CTL_ADD) < 0) {
        int e = -errno;
        conn_close(t, c, 0);
        return e;
    }
    return 0;
}

/* Queue as many frames as depth allows and the batch holds, then send. */
static int conn_pump(struct thread *t, struct conn *c, int64_t now)
{
    if (c->soff == c->slen) {
        c->soff = c->slen = 0;
        while (c->sent - c->recvd < (uint64_t)opt.depth && c->slen + opt.frame <= c->scap &&
               now < atomic_load_explicit(&t_stop, memory_order_relaxed)) {
            if (opt.scenario != SC_IDLE &&
                atomic_fetch_sub_explicit(&requests_left, 1, memory_order_relaxed) <= 0)
                break;
            uint8_t *f = c->sbuf + c->slen;
            memcpy(f, tmpl, opt.frame);
            make_stamp(f + stamp_off, c->sent, c->id);
            if (opt.framing == FR_WS) /* the stamp is payload: masked too */
                for (size_t i = 0; i < stamp_len; i++)
                    f[stamp_off + i] ^= ws_key[i & 3];
            c->tsent[c->sent % (uint64_t)opt.depth] = now;
            c->sent++;
            c->slen += opt.frame;
        }
    }
    while (c->soff < c->slen) {
        ssize_t n = send(c->fd, c->sbuf + c->soff, c->slen - c->soff, MSG_NOSIGNAL);
        if (n > 0) {
            c->soff += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        return -1;
    }
    int want = c->soff < c->slen;
    if (want != c->want_out) {
        c->want_out = want;
        if (set_events(t, c, EPOLLIN | (want ? EPOLLOUT : 0), EPOLL_CTL_MOD) < 0)
            return -1;
    }
    return 0;
}

/* A message came back whole. Returns 1 when the connection is finished with. */
static int message_done(struct thread *t, struct conn *c, int64_t now)
{
    int64_t lat = opt.scenario == SC_CHURN ? now - c->t_open
                                           : now - c->tsent[c->recvd % (uint64_t)opt.depth];
    c->recvd++;
    t->total_done++;
    if (now >= atomic_load_explicit(&t_ws, memory_order_relaxed) &&
        now < atomic_load_explicit(&t_we, memory_order_relaxed)) {
        hist_add(&t->hist, lat);
        t->requests++;
        t->bytes += opt.frame;
        c->done_in_window++;
    }
    if (opt.scenario == SC_CHURN)
        return 1;
    if (opt.scenario == SC_IDLE && !c->pinged) {
        c->pinged = 1;
        t->unpinged--;
    }
    return 0;
}

/* Check incoming bytes against what was sent. -1 on a mismatch. */
static int consume(struct thread *t, struct conn *c, const uint8_t *p, size_t n, int64_t now,
                   int *finished)
{
    while (n > 0) {
        if (c->roff == 0) {
            if (c->recvd >= c->sent)
                return -1; /* bytes nobody asked for */
            make_stamp(c->exp_stamp, c->recvd, c->id);
        }
        size_t take = rframe - c->roff;
        if (take > n)
            take = n;
        /* [roff, roff+take) against the template, except the stamp region. */
        size_t a = c->roff, b = c->roff + take;
        size_t s0 = rstamp_off, s1 = rstamp_off + stamp_len;
        size_t lo = a > s0 ? a : s0, hi = b < s1 ? b : s1;
        if (lo < hi) {
            if (memcmp(p + (lo - a), c->exp_stamp + (lo - s0), hi - lo))
                return -1;
            if (lo > a && memcmp(p, rtmpl + a, lo - a))
                return -1;
            if (b > hi && memcmp(p + (hi - a), rtmpl + hi, b - hi))
                return -1;
        } else if (memcmp(p, rtmpl + a, take)) {
            return -1;
        }
        c->roff += take;
        p += take;
        n -= take;
        if (c->roff == rframe) {
            c->roff = 0;
            if (message_done(t, c, now)) {
                *finished = 1;
                return n ? -1 : 0;
            }
        }
    }
    return 0;
}

/* WebSocket: the upgrade, made blocking (poll) right after the connect:
 * the request, then the response head read up to its blank line (the
 * server says nothing more before our first frame). 0 or -1. */
static int ws_handshake(int fd)
{
    char req[512], head[1024];
    int n = snprintf(req, sizeof req,
                     "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     opt.target);
    int64_t end = now_ns() + (int64_t)(opt.connect_timeout * 1e9);
    size_t off = 0, got = 0;
    while (off < (size_t)n || got < 4 || memcmp(head + got - 4, "\r\n\r\n", 4)) {
        struct pollfd p = {fd, off < (size_t)n ? POLLOUT : POLLIN, 0};
        int ms = (int)((end - now_ns()) / 1000000);
        if (ms <= 0 || got == sizeof head || poll(&p, 1, ms) < 0)
            return -1;
        ssize_t r = off < (size_t)n ? send(fd, req + off, (size_t)n - off, MSG_NOSIGNAL)
                                    : recv(fd, head + got, 1, 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (r <= 0)
            return -1;
        if (off < (size_t)n)
            off += (size_t)r;
        else
            got += (size_t)r;
    }
    return got >= 12 && !memcmp(head, "HTTP/1.1 101", 12) ? 0 : -1;
}

/* Handle readiness on an active connection: read, verify, send more. */
static void conn_ready(struct thread *t, struct conn *c, uint32_t ev, int64_t now)
{
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            thread_error(t, &t->connect_errors);
            conn_close(t, c, opt.scenario != SC_CHURN);
            return;
        }
        if (!(ev & EPOLLOUT))
            return;
        if (opt.framing == FR_WS && ws_handshake(c->fd) < 0) {
            thread_error(t, &t->connect_errors);
            conn_close(t, c, opt.scenario != SC_CHURN);
            return;
        }
        c->state = ST_ACTIVE;
        t->connecting--;
        t->established++;
        c->want_out = 0;
        if (set_events(t, c, EPOLLIN, EPOLL_CTL_MOD) < 0) {
            thread_error(t, &t->io_errors);
            conn_close(t, c, 1);
            return;
        }
        /* rr/throughput start when every thread is connected; churn and idle now. */
        if (opt.scenario == SC_IDLE && opt.ping)
            t->unpinged++;
        if ((opt.scenario == SC_CHURN || (opt.scenario == SC_IDLE && opt.ping)) &&
            conn_pump(t, c, now) < 0) {
            thread_error(t, &t->io_errors);
            conn_close(t, c, opt.scenario != SC_CHURN);
        }
        return;
    }
    if (c->state != ST_ACTIVE)
        return;
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        for (int i = 0; i < READS_PER_WAKEUP; i++) {
            ssize_t n = recv(c->fd, t->rbuf, RECV_BUF, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno == EAGAIN)
                break;
            if (n <= 0) { /* EOF or reset while waiting for an echo */
                thread_error(t, &t->io_errors);
                conn_close(t, c, opt.scenario != SC_CHURN);
                return;
            }
            int finished = 0;
            if (consume(t, c, t->rbuf, (size_t)n, now, &finished) < 0) {
                thread_error(t, &t->verify_errors);
                conn_close(t, c, opt.scenario != SC_CHURN);
                return;
            }
            if (finished) {
                conn_close(t, c, 0);
                return;
            }
            if ((size_t)n < RECV_BUF)
                break;
        }
    }
    if (opt.scenario == SC_IDLE)
        return; /* one ping, then hold */
    if (conn_pump(t, c, now) < 0) {
        thread_error(t, &t->io_errors);
        conn_close(t, c, opt.scenario != SC_CHURN);
    }
}

static int conn_alloc(struct conn *c)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    size_t per = opt.frame, n = SEND_BATCH / per;
    if (n < 1)
        n = 1;
    if (n > (size_t)opt.depth)
        n = (size_t)opt.depth;
    c->scap = n * per;
    c->sbuf = malloc(c->scap);
    c->tsent = malloc((size_t)opt.depth * sizeof *c->tsent);
    return c->sbuf && c->tsent ? 0 : -1;
}

/* Connect all of this thread's connections (at most MAX_CONNECTING pending). */
static void connect_all(struct thread *t, int64_t deadline)
{
    struct epoll_event evs[256];
    int next = 0;
    for (;;) {
        int64_t now = now_ns();
        while (next < t->nconns && t->connecting + t->unpinged < MAX_CONNECTING) {
            if (conn_open(t, &t->conns[next]) < 0) {
                thread_error(t, &t->connect_errors);
                t->conns[next].state = ST_DEAD;
            }
            next++;
        }
        if (next == t->nconns && t->connecting + t->unpinged == 0)
            return;
        if (now >= deadline)
            break;
        int to = (int)((deadline - now) / 1000000) + 1;
        int n = epoll_wait(t->epfd, evs, 256, to > 100 ? 100 : to);
        now = now_ns();
        for (int i = 0; i < n; i++)
            conn_ready(t, evs[i].data.ptr, evs[i].events, now);
    }
    /* Out of time: what is still connecting counts as failed. */
    for (int i = 0; i < t->nconns; i++)
        if (t->conns[i].state == ST_CONNECTING) {
            thread_error(t, &t->connect_errors);
            conn_close(t, &t->conns[i], 1);
        }
}

static void *thread_main(void *arg)
{
    struct thread *t = arg;
    struct epoll_event evs[256];
    int64_t setup_deadline = now_ns() + (int64_t)(opt.connect_timeout * 1e9);

    if (opt.scenario == SC_RR || opt.scenario == SC_THROUGHPUT || opt.scenario == SC_IDLE)
        connect_all(t, setup_deadline);
    pthread_barrier_wait(&barrier); /* all connected */
    pthread_barrier_wait(&barrier); /* main has set the window */
    if (opt.scenario == SC_IDLE)
        return NULL;

    int64_t now = now_ns();
    for (int i = 0; i < t->nconns; i++) {
        struct conn *c = &t->conns[i];
        if (opt.scenario == SC_CHURN) {
            if (conn_open(t, c) < 0) {
                thread_error(t, &t->connect_errors);
                c->state = ST_FREE;
            }
        } else if (c->state == ST_ACTIVE && conn_pump(t, c, now) < 0) {
            thread_error(t, &t->io_errors);
            conn_close(t, c, 1);
        }
    }
    int64_t stop = atomic_load(&t_stop);
    while ((now = now_ns()) < stop && t->errors < MAX_THREAD_ERRORS) {
        if (atomic_load_explicit(&requests_left, memory_order_relaxed) <= 0) {
            int busy = 0; /* the count is spent: stop once the last echoes are in */
            for (int i = 0; i < t->nconns && !busy; i++)
                busy = t->conns[i].state == ST_ACTIVE && t->conns[i].sent > t->conns[i].recvd;
            if (!busy)
                break;
        }
        int to = (int)((stop - now) / 1000000) + 1;
        int n = epoll_wait(t->epfd, evs, 256, to > 50 ? 50 : to);
        if (n < 0 && errno != EINTR)
            break;
        now = now_ns();
        for (int i = 0; i < n; i++)
            conn_ready(t, evs[i].data.ptr, evs[i].events, now);
        if (opt.scenario == SC_CHURN) /* restart finished or failed slots */
            for (int i = 0; i < t->nconns && now < stop; i++) {
                struct conn *c = &t->conns[i];
                if (c->state == ST_FREE && conn_open(t, c) < 0) {
                    thread_error(t, &t->connect_errors);
                    if (t->errors >= MAX_THREAD_ERRORS)
                        break;
                }
            }
    }
    atomic_fetch_add(&threads_done, 1);
    stop = now < stop ? now : stop;
    /* Collect the echoes still in flight, so that closing sends a FIN, not a
     * reset for unread data; servers then see a clean end of stream. */
    int64_t drain_until = stop + DRAIN_NS;
    while ((now = now_ns()) < drain_until) {
        int busy = 0;
        for (int i = 0; i < t->nconns; i++) {
            struct conn *c = &t->conns[i];
            if (c->state == ST_ACTIVE && c->sent > c->recvd)
                busy = 1;
            else if (c->state == ST_CONNECTING)
                conn_close(t, c, 0);
        }
        if (!busy)
            break;
        int n = epoll_wait(t->epfd, evs, 256, 20);
        now = now_ns();
        for (int i = 0; i < n; i++)
            conn_ready(t, evs[i].data.ptr, evs[i].events, now);
    }
    return NULL;
}

/* ---- udp: a closed loop of one datagram per connected socket ---- */

#define UDP_LOST_NS 200000000LL /* no reply for this long: lost; the next one goes out */

static void udp_send(struct thread *t, struct conn *c, int64_t now)
{
    if (now >= atomic_load_explicit(&t_stop, memory_order_relaxed) ||
        atomic_fetch_sub_explicit(&requests_left, 1, memory_order_relaxed) <= 0)
        return;
    memcpy(c->sbuf, tmpl, opt.frame);
    make_stamp(c->sbuf + stamp_off, c->sent, c->id);
    c->tsent[0] = now;
    c->sent++;
    if (send(c->fd, c->sbuf, opt.frame, 0) != (ssize_t)opt.frame)
        thread_error(t, &t->io_errors); /* counted; the loss timer sends the next */
}

static void udp_readable(struct thread *t, struct conn *c, int64_t now)
{
    for (int i = 0; i < READS_PER_WAKEUP; i++) {
        ssize_t n = recv(c->fd, t->rbuf, RECV_BUF, MSG_DONTWAIT);
        if (n < 0)
            return;
        /* The one in flight comes back whole; anything else (the late reply
         * to one counted lost) is a verify error and changes nothing. */
        if (c->sent == c->recvd || (size_t)n != opt.frame || memcmp(t->rbuf, c->sbuf, opt.frame)) {
            thread_error(t, &t->verify_errors);
            continue;
        }
        message_done(t, c, now);
        udp_send(t, c, now);
    }
}

static void *udp_thread_main(void *arg)
{
    struct thread *t = arg;
    struct epoll_event evs[256];
    for (int i = 0; i < t->nconns; i++) {
        struct conn *c = &t->conns[i];
        c->fd = socket(opt.addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&opt.addr, opt.addrlen) < 0 ||
            set_events(t, c, EPOLLIN, EPOLL_CTL_ADD) < 0) {
            thread_error(t, &t->connect_errors);
            conn_close(t, c, 1);
            continue;
        }
        c->id = t->next_id++;
        c->state = ST_ACTIVE;
        t->established++;
    }
    pthread_barrier_wait(&barrier); /* all set up */
    pthread_barrier_wait(&barrier); /* main has set the window */
    int64_t now = now_ns(), stop = atomic_load(&t_stop);
    for (int i = 0; i < t->nconns; i++)
        if (t->conns[i].state == ST_ACTIVE)
            udp_send(t, &t->conns[i], now);
    int64_t next_sweep = now + UDP_LOST_NS / 4;
    while ((now = now_ns()) < stop && t->errors < MAX_THREAD_ERRORS) {
        int n = epoll_wait(t->epfd, evs, 256, 50);
        if (n < 0 && errno != EINTR)
            break;
        now = now_ns();
        for (int i = 0; i < n; i++)
            udp_readable(t, evs[i].data.ptr, now);
        if (now >= next_sweep) { /* lost datagrams: count them, go on with the next */
            next_sweep = now + UDP_LOST_NS / 4;
            for (int i = 0; i < t->nconns; i++) {
                struct conn *c = &t->conns[i];
                if (c->state == ST_ACTIVE && c->sent > c->recvd && now - c->tsent[0] > UDP_LOST_NS) {
                    thread_error(t, &t->io_errors);
                    c->recvd = c->sent;
                    udp_send(t, c, now);
                }
            }
        }
        int busy = 0; /* the count is spent: stop once the last replies are in */
        if (atomic_load_explicit(&requests_left, memory_order_relaxed) <= 0) {
            for (int i = 0; i < t->nconns && !busy; i++)
                busy = t->conns[i].state == ST_ACTIVE && t->conns[i].sent > t->conns[i].recvd;
            if (!busy)
                break;
        }
    }
    atomic_fetch_add(&threads_done, 1);
    return NULL;
}

/* ---- argument parsing ---- */

static double parse_num(const char *a, const char *v, double min, double max)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || d < min || d > max)
        die("%s: bad value", a);
    return d;
}

static void parse_target(const char *s)
{
    char host[256];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host)
        die("--connect %s: want HOST:PORT", s);
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    long port = strtol(colon + 1, NULL, 10);
    if (port <= 0 || port > 65535)
        die("--connect %s: bad port", s);
    struct sockaddr_in *in4 = (struct sockaddr_in *)&opt.addr;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&opt.addr;
    char *h = host;
    size_t hl = strlen(h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h[hl - 1] = 0;
        h++;
    }
    if (inet_pton(AF_INET, h, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        opt.addrlen = sizeof *in4;
    } else if (inet_pton(AF_INET6, h, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        opt.addrlen = sizeof *in6;
    } else {
        die("--connect %s: numeric addresses only", s);
    }
    opt.target = s;
}

static int lookup(const char *v, const char **names, int n, const char *a)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(v, names[i]))
            return i;
    die("%s: unknown value", a);
    return -1;
}

static void parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage_text, stdout);
            exit(0);
        }
        if (!strcmp(a, "--no-ping")) {
            opt.ping = 0;
            continue;
        }
        if (i + 1 >= argc)
            die("%s: missing value", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--connect"))
            parse_target(v);
        else if (!strcmp(a, "--scenario"))
            opt.scenario = lookup(v, scenario_names, 5, a);
        else if (!strcmp(a, "--framing"))
            opt.framing = lookup(v, framing_names, 4, a);
        else if (!strcmp(a, "--conns"))
            opt.conns = (int)parse_num(a, v, 1, MAX_CONNS);
        else if (!strcmp(a, "--size"))
            opt.size = (size_t)parse_num(a, v, 1, 64 << 20);
        else if (!strcmp(a, "--depth"))
            opt.depth = (int)parse_num(a, v, 1, MAX_DEPTH);
        else if (!strcmp(a, "--threads"))
            opt.threads = (int)parse_num(a, v, 1, 64);
        else if (!strcmp(a, "--duration"))
            opt.duration = parse_num(a, v, 0.05, 3600);
        else if (!strcmp(a, "--warmup"))
            opt.warmup = parse_num(a, v, 0, 600);
        else if (!strcmp(a, "--hold"))
            opt.hold = parse_num(a, v, 0, 3600);
        else if (!strcmp(a, "--connect-timeout"))
            opt.connect_timeout = parse_num(a, v, 0.1, 600);
        else if (!strcmp(a, "--max-requests"))
            opt.max_requests = (long long)parse_num(a, v, 1, 1e15);
        else if (!strcmp(a, "--server-pid"))
            opt.server_pid = (pid_t)parse_num(a, v, 1, 1 << 30);
        else
            die("%s: unknown argument", a);
    }
    if (!opt.target)
        die("%s", "--connect HOST:PORT is required");
    if (opt.depth == 0) /* throughput: about 1 MiB in flight per connection */
        opt.depth = opt.scenario == SC_THROUGHPUT
                        ? (int)((1 << 20) / (opt.size + 4) > 1 ? (1 << 20) / (opt.size + 4) : 1)
                        : 1;
    if (opt.scenario == SC_CHURN || opt.scenario == SC_IDLE || opt.scenario == SC_UDP)
        opt.depth = 1;
    if (opt.scenario == SC_UDP && (opt.framing != FR_RAW || opt.size > 65507))
        die("%s", "--scenario udp: raw framing, --size at most 65507");
    if (opt.scenario == SC_IDLE)
        opt.threads = 1;
    if (opt.threads > opt.conns)
        opt.threads = opt.conns;
}

static void raise_nofile(int need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= (rlim_t)need)
        return;
    if (rl.rlim_max < (rlim_t)need)
        rl.rlim_max = (rlim_t)need; /* works as root, else the next line fails */
    rl.rlim_cur = (rlim_t)need;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void on_usr1(int sig)
{
    (void)sig;
    release_idle = 1;
}

static double cpu_self(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}

static void sleep_until(int64_t t)
{
    int64_t d;
    while ((d = t - now_ns()) > 0) {
        struct timespec ts = {.tv_sec = d / 1000000000, .tv_nsec = d % 1000000000};
        nanosleep(&ts, NULL);
    }
}

/* Idle: hold the connections until told to let go. */
static void idle_hold(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    int64_t until = now_ns() + (int64_t)(opt.hold * 1e9);
    while (!release_idle) {
        int64_t left = until - now_ns();
        if (left <= 0)
            break;
        struct pollfd p = {.fd = 0, .events = POLLIN};
        int r = poll(&p, 1, left > 200000000 ? 200 : (int)(left / 1000000) + 1);
        if (r > 0) {
            char buf[256];
            (void)read(0, buf, sizeof buf); /* a line or EOF: either releases */
            break;
        }
    }
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    make_template();
    signal(SIGPIPE, SIG_IGN);
    raise_nofile(opt.conns + 64);
    atomic_store(&requests_left, opt.max_requests);
    atomic_store(&t_stop, INT64_MAX);
    atomic_store(&t_ws, INT64_MAX);
    atomic_store(&t_we, INT64_MAX);

    threads = calloc((size_t)opt.threads, sizeof *threads);
    if (!threads)
        die("%s", "out of memory");
    pthread_barrier_init(&barrier, NULL, (unsigned)opt.threads + 1);
    for (int i = 0, first = 0; i < opt.threads; i++) {
        struct thread *t = &threads[i];
        t->idx = i;
        t->nconns = opt.conns / opt.threads + (i < opt.conns % opt.threads);
        t->conns = calloc((size_t)t->nconns, sizeof *t->conns);
        t->rbuf = malloc(RECV_BUF);
        t->epfd = epoll_create1(EPOLL_CLOEXEC);
        t->next_id = (uint32_t)first << 12; /* distinct ids across threads */
        first += t->nconns;
        if (!t->conns || !t->rbuf || t->epfd < 0)
            die("%s", "cannot set up a thread");
        for (int j = 0; j < t->nconns; j++)
            if (conn_alloc(&t->conns[j]) < 0)
                die("%s", "out of memory");
        if (pthread_create(&t->tid, NULL, opt.scenario == SC_UDP ? udp_thread_main : thread_main,
                           t) != 0)
            die("%s", "pthread_create failed");
    }

    int64_t t_setup = now_ns();
    pthread_barrier_wait(&barrier); /* everyone connected (or gave up) */
    int64_t t0 = now_ns();
    double setup_s = (double)(t0 - t_setup) / 1e9;
    int idle = opt.scenario == SC_IDLE;
    atomic_store(&t_ws, t0 + (int64_t)(opt.warmup * 1e9));
    atomic_store(&t_we, t0 + (int64_t)((opt.warmup + opt.duration) * 1e9));
    atomic_store(&t_stop, idle ? INT64_MAX : atomic_load(&t_we));
    pthread_barrier_wait(&barrier);

    double cpu0 = 0, cpu1 = 0, lg0 = 0, lg1 = 0;
    int procs = 0, procs_end = 0;
    if (idle) {
        struct thread *t = &threads[0];
        int pinged = 0;
        pthread_join(t->tid, NULL);
        for (int i = 0; i < t->nconns; i++)
            pinged += t->conns[i].state == ST_ACTIVE && (t->conns[i].pinged || !opt.ping);
        printf("{\"event\":\"ready\",\"conns\":%d,\"established\":%d,\"pinged\":%d,"
               "\"errors\":%" PRIu64 ",\"setup_s\":%.3f}\n",
               opt.conns, t->established, pinged, t->errors, setup_s);
        fflush(stdout);
        idle_hold();
        for (int i = 0; i < t->nconns; i++)
            conn_close(t, &t->conns[i], 0);
        printf("{\"scenario\":\"idle\",\"conns\":%d,\"established\":%d,\"pinged\":%d,"
               "\"errors\":%" PRIu64 ",\"connect_errors\":%" PRIu64 ",\"setup_s\":%.3f}\n",
               opt.conns, t->established, pinged, t->errors, t->connect_errors, setup_s);
        return 0;
    }

    sleep_until(atomic_load(&t_ws));
    if (opt.server_pid)
        cpu0 = tree_cpu(opt.server_pid, &procs);
    lg0 = cpu_self();
    /* The window ends at its time or when every thread has spent the count. */
    int64_t t_end;
    while ((t_end = now_ns()) < atomic_load(&t_we) && atomic_load(&threads_done) < opt.threads) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    if (t_end > atomic_load(&t_we))
        t_end = atomic_load(&t_we);
    if (opt.server_pid)
        cpu1 = tree_cpu(opt.server_pid, &procs_end);
    lg1 = cpu_self();
    for (int i = 0; i < opt.threads; i++)
        pthread_join(threads[i].tid, NULL);

    struct hist h;
    memset(&h, 0, sizeof h);
    uint64_t req = 0, bytes = 0, err = 0, verr = 0, cerr = 0, ioerr = 0;
    int established = 0, stalled = 0;
    for (int i = 0; i < opt.threads; i++) {
        struct thread *t = &threads[i];
        hist_merge(&h, &t->hist);
        req += t->requests;
        bytes += t->bytes;
        err += t->errors;
        verr += t->verify_errors;
        cerr += t->connect_errors;
        ioerr += t->io_errors;
        established += t->established;
        if (opt.scenario != SC_CHURN)
            for (int j = 0; j < t->nconns; j++)
                stalled += t->conns[j].state == ST_ACTIVE && t->conns[j].done_in_window == 0;
        for (int j = 0; j < t->nconns; j++)
            conn_close(t, &t->conns[j], 0);
    }
    double win = (double)(t_end - atomic_load(&t_ws)) / 1e9;
    if (win <= 0)
        win = 1e-9;
    double scpu = cpu1 - cpu0;
    printf("{\"scenario\":\"%s\",\"framing\":\"%s\",\"conns\":%d,\"established\":%d,"
           "\"size\":%zu,\"frame\":%zu,\"depth\":%d,\"threads\":%d,\"warmup_s\":%.3f,"
           "\"duration_s\":%.3f,\"requests\":%" PRIu64 ",\"rps\":%.1f,\"mbps\":%.3f,"
           "\"lat_us\":{\"p50\":%.2f,\"p90\":%.2f,\"p99\":%.2f,\"p999\":%.2f,\"max\":%.2f,"
           "\"mean\":%.2f},\"errors\":%" PRIu64 ",\"verify_errors\":%" PRIu64
           ",\"connect_errors\":%" PRIu64 ",\"io_errors\":%" PRIu64 ",\"stalled\":%d,",
           scenario_names[opt.scenario], framing_names[opt.framing], opt.conns, established,
           opt.size, opt.frame, opt.depth, opt.threads, opt.warmup, win, req, (double)req / win,
           (double)bytes / win / 1e6, hist_pct(&h, 0.50) / 1e3, hist_pct(&h, 0.90) / 1e3,
           hist_pct(&h, 0.99) / 1e3, hist_pct(&h, 0.999) / 1e3, (double)h.max / 1e3,
           h.count ? h.sum / (double)h.count / 1e3 : 0.0, err, verr, cerr, ioerr, stalled);
    if (opt.server_pid)
        printf("\"server_cpu_s\":%.3f,\"server_cpu_util\":%.3f,\"cpu_us_per_req\":%.3f,"
               "\"server_procs\":%d,",
               scpu, scpu / win, req ? scpu * 1e6 / (double)req : 0.0,
               procs_end > procs ? procs_end : procs);
    printf("\"client_cpu_util\":%.3f,\"setup_s\":%.3f}\n", (lg1 - lg0) / win, setup_s);
    return 0;
}
