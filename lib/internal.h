/* SPDX-License-Identifier: MIT */
/* Private structures and cross-file internals of libtcpchan (tc__ prefix).
 * Nothing here is installed or exported.
 *
 * The layers, bottom to top (docs/inside.md draws them):
 *
 *   leaves   clock, wake, sock, addr, codec, proxy, poller, timer, child
 *   chan     chan.c: a channel's buffers; non-blocking fill, frame scan,
 *            consume, reserve, send window, advance. No waiting.
 *   conn     conn.c: the public tc_conn API over chan, waiting and sending
 *            only through the channel's driver (tc__driver).
 *   drivers  drv_block.c (blocking sockets, dial and the blocking modes),
 *            mode_event.c's (an event loop's channels), drv_dgram.c's (a
 *            datagram request; a dialled datagram socket), dgram.c's (event
 *            mode's batched datagram replies). One table each.
 *   session  session.c: the handler contract (socketserver's
 *            BaseRequestHandler), written once: open, messages, close,
 *            and the blocking pump.
 *   modes    mode_*.c: how connections get a thread, a process or a loop.
 *   server   server.c: bind, accept, hooks, shutdown and drain; dgram.c:
 *            a datagram server's receive (its "accept"), pool feeder and
 *            event loops.
 *
 * Calls go downward by name. Upward only through a table: the driver table
 * (conn -> driver) and the mode table (server -> mode). chan.c and conn.c
 * never name the server, a mode or an event loop. */
#ifndef TCPCHAN_INTERNAL_H
#define TCPCHAN_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "tcpchan/tcpchan.h"

/* ---- lists --------------------------------------------------------------- */

/* A NULL-terminated doubly linked list of structs with prev and next
 * members, headed by the pointer head: push node in front, or unlink it. */
#define TC__LIST_PUSH(head, node)                                                                \
    do {                                                                                         \
        (node)->prev = NULL;                                                                     \
        (node)->next = (head);                                                                   \
        if (head)                                                                                \
            (head)->prev = (node);                                                               \
        (head) = (node);                                                                         \
    } while (0)
#define TC__LIST_UNLINK(head, node)                                                              \
    do {                                                                                         \
        if ((node)->prev)                                                                        \
            (node)->prev->next = (node)->next;                                                   \
        else                                                                                     \
            (head) = (node)->next;                                                               \
        if ((node)->next)                                                                        \
            (node)->next->prev = (node)->prev;                                                   \
    } while (0)

/* ---- time (clock.c) ----------------------------------------------------- */

/* Absolute deadlines in CLOCK_MONOTONIC nanoseconds; TC__NO_DEADLINE waits forever. */
#define TC__NO_DEADLINE INT64_MAX
int64_t tc__now_ns(void);
/* The deadline ms milliseconds from now; ms <= 0 means none. */
int64_t tc__deadline_ms(int ms);
/* A poll timeout reaching deadline: -1 for none, 0 if passed, else the
 * milliseconds left rounded up (a wait never ends before the deadline). */
int tc__ms_until(int64_t deadline);
/* A condition variable whose timed waits use CLOCK_MONOTONIC, as deadlines do. */
void tc__cond_init(pthread_cond_t *cond);
/* One wait on cond (mu held) until signalled or deadline (TC__NO_DEADLINE:
 * none): 0, or -ETIMEDOUT. Callers loop on their own predicate. */
int tc__cond_wait(pthread_cond_t *cond, pthread_mutex_t *mu, int64_t deadline);

/* ---- wake-ups (wake.c: eventfd) ------------------------------------------- */

/* A non-blocking, close-on-exec eventfd: 0 or a negated errno. */
int tc__wake_open(int *out_fd);
/* Make fd readable; async-signal-safe, errno preserved. */
void tc__wake(int fd);
/* Consume every wake-up, so that a level-triggered watcher does not spin. */
void tc__wake_drain(int fd);
/* Whether fd has a wake-up pending (no waiting, nothing consumed). */
int tc__wake_pending(int fd);

/* ---- sockets (sock.c: the only file making raw socket calls) ------------ */

/* Create a listening socket bound to addr; *out_fd set on success. */
int tc__sock_listen(const tc_addr *addr, int backlog, int reuse_addr, int reuse_port, int *out_fd);
/* Take over a socket the process was given: check that it is a SOCK_STREAM
 * socket, listening or (listening 0) not, and make it non-blocking and
 * close-on-exec. 0, -EBADF, -ENOTSOCK, -EPROTOTYPE (not a stream socket),
 * -EINVAL (listening or not, against the wish), or another negated errno. */
int tc__sock_adopt(int fd, int listening);
/* Accept one connection (close-on-exec; non-blocking unless blocking is
 * set); -EAGAIN when none is pending. */
int tc__sock_accept(int lfd, tc_addr *peer, int *out_fd, int blocking);
/* Take over a SOCK_DGRAM socket the process was given (bound): make it
 * non-blocking and close-on-exec. 0, -EPROTOTYPE (not a datagram socket),
 * -EBADF, -ENOTSOCK or another negated errno. */
int tc__sock_adopt_dgram(int fd);
/* Make an accepted socket blocking (a connection an event loop hands to a
 * thread of its own): 0 or a negated errno. */
int tc__sock_set_blocking(int fd);
/* Start a non-blocking connect; 0 if connected at once, -EINPROGRESS, or an error. */
int tc__sock_connect_start(const tc_addr *addr, int *out_fd);
/* The pending error of a socket (SO_ERROR), negated. */
int tc__sock_error(int fd);
int tc__sock_local(int fd, tc_addr *out);
int tc__sock_peer(int fd, tc_addr *out);
/* recv/send with EINTR retried, MSG_NOSIGNAL and MSG_DONTWAIT (they never
 * sleep, whatever the socket's mode): a count, 0 at end of stream (recv
 * only), -EAGAIN when the socket would block, or a negated errno. */
ssize_t tc__sock_recv(int fd, void *buf, size_t n);
ssize_t tc__sock_send(int fd, const void *buf, size_t n);
/* One recv that may sleep (a blocking socket): a count, 0 at end of stream,
 * -EINTR (not retried: the caller recomputes its timeout), -EAGAIN when
 * SO_RCVTIMEO ran out, or a negated errno. */
ssize_t tc__sock_recv_block(int fd, void *buf, size_t n);
/* Set SO_RCVTIMEO or SO_SNDTIMEO (opt) to ns nanoseconds, rounded up to a
 * microsecond; 0 = none. 0 or a negated errno. */
int tc__sock_set_timeout(int fd, int opt, int64_t ns);
/* Wait until fd has one of events (POLLIN/POLLOUT) or an error condition,
 * or the deadline passes: 0 or -ETIMEDOUT. EINTR is retried against the deadline. */
int tc__sock_wait(int fd, short events, int64_t deadline);
/* Like tc__sock_wait, but an interrupting signal returns -EINTR (so the
 * caller can look at a flag the signal handler set), and stopfd (if >= 0)
 * becoming readable returns TC_ESHUTDOWN. */
int tc__sock_wait_stop(int fd, short events, int stopfd, int64_t deadline);
/* Whether fd has input, an end of stream or an error to report now (no waiting). */
int tc__sock_readable(int fd);
/* shutdown(SHUT_RDWR), ignoring errors: wakes whoever is blocked on the socket. */
void tc__sock_shutdown(int fd);
/* shutdown(how): 0 or a negated errno. */
int tc__sock_shutdown_how(int fd, int how);
/* sendmsg(MSG_NOSIGNAL | MSG_DONTWAIT) of at most IOV_MAX entries, EINTR
 * retried: a count, -EAGAIN when the socket would block, or a negated errno. */
ssize_t tc__sock_sendmsg(int fd, const struct iovec *iov, int cnt);
/* sendfile with SIGPIPE blocked in the calling thread (sendfile has no
 * MSG_NOSIGNAL) and EINTR retried, on a non-blocking socket (it has no
 * MSG_DONTWAIT either): a count, 0 at the end of the file, -EAGAIN when the
 * socket would block, or a negated errno. */
ssize_t tc__sock_sendfile(int fd, int file_fd, off_t *offset, size_t n);
/* One datagram, without waiting (MSG_DONTWAIT, EINTR retried): its length
 * (0: an empty datagram), -EAGAIN when none is queued, or a negated errno.
 * *truncated: it was longer than n (MSG_TRUNC), and buf holds only its
 * start. from (if not NULL) receives the sender, socktype SOCK_DGRAM. to
 * (if not NULL, holding the socket's address): the address the sender sent
 * to, from IP_PKTINFO / IPV6_PKTINFO (see tc__sock_pktinfo_on), port kept;
 * len 0 if the datagram carried none. */
ssize_t tc__sock_recvfrom(int fd, void *buf, size_t n, tc_addr *from, int *truncated,
                          tc_addr *to);
/* One datagram of iov (at most IOV_MAX entries, else -EMSGSIZE) to to (NULL:
 * the connected peer), from the source address from (NULL: the kernel's
 * choice; else IP_PKTINFO), MSG_NOSIGNAL | MSG_DONTWAIT, EINTR retried: the
 * count, -EAGAIN when the socket would block, or a negated errno. */
ssize_t tc__sock_sendto(int fd, const struct iovec *iov, int cnt, const tc_addr *to,
                        const tc_addr *from);
/* A socket bound to every address answers from the one each datagram was
 * sent to: ask for that address with each datagram (IP_PKTINFO,
 * IPV6_RECVPKTINFO; nothing for other families): 0 or a negated errno. */
int tc__sock_pktinfo_on(int fd, int family);
/* Room for one pktinfo control message, either family. */
#define TC__PKTINFO_SPACE 64
struct msghdr;
/* The destination address of a received message (its pktinfo), port set:
 * 1, or 0 if it carries none. */
int tc__sock_pktinfo_get(const struct msghdr *m, int port, tc_addr *to);
/* Write a control message choosing from as the source of a datagram into
 * buf (len bytes, at least TC__PKTINFO_SPACE): its length, 0 if from is not
 * an IP address. */
size_t tc__sock_pktinfo_put(void *buf, size_t len, const tc_addr *from);
/* recvmmsg / sendmmsg without waiting, EINTR retried: how many datagrams,
 * -EAGAIN when none could be taken, or a negated errno. */
struct mmsghdr;
int tc__sock_recvmmsg(int fd, struct mmsghdr *v, unsigned n);
int tc__sock_sendmmsg(int fd, struct mmsghdr *v, unsigned n);
/* Set or clear O_NONBLOCK on a socket: 0 or a negated errno. */
int tc__sock_set_nonblocking(int fd, int on);
/* setsockopt with an int value: 0 or a negated errno. */
int tc__sock_setopt(int fd, int level, int opt, int value);
/* close() that never reports EINTR (Linux frees the descriptor regardless). */
void tc__close(int fd);

/* ---- addresses (addr.c) ------------------------------------------------- */

/* Resolve text into up to max addresses (all families); *count set on success. */
int tc__addr_resolve(const char *text, tc_addr *list, int max, int *count);
/* tc_addr_parse without the resolver: a host name is TC_EBADADDR (an event
 * loop must not block in getaddrinfo). */
int tc__addr_parse_numeric(const char *text, tc_addr *out);

/* ---- codecs (codec.c: pure) --------------------------------------------- */

/* tc_codec_scan on a valid codec, resuming a delimiter search: the first
 * from bytes are known to hold no complete delimiter. */
int tc__codec_scan_from(const tc_codec *c, const void *buf, size_t len, size_t from,
                        size_t *off, size_t *plen, size_t *flen);
/* Framing bytes around a payload at most: delimiter or prefix length. */
size_t tc__codec_overhead(const tc_codec *c);
/* tc_codec_encode for a codec already validated (a channel's): every reply
 * passes here, and the checks were made when the codec was set. */
int tc__codec_encode(const tc_codec *c, const void *payload, size_t len, tc_codec_envelope *env);

/* ---- WebSocket leaves (sha1.c, base64.c, ws_frame.c, ws_http.c: pure) ------ */

#define TC__SHA1_LEN 20
typedef struct tc__sha1_ctx {
    uint32_t h[5];
    uint64_t total;         /* bytes hashed */
    size_t used;            /* bytes waiting in buf */
    unsigned char buf[64];
} tc__sha1_ctx;
void tc__sha1_init(tc__sha1_ctx *s);
void tc__sha1_update(tc__sha1_ctx *s, const void *data, size_t len);
void tc__sha1_final(tc__sha1_ctx *s, unsigned char out[TC__SHA1_LEN]);
void tc__sha1(const void *data, size_t len, unsigned char out[TC__SHA1_LEN]);

/* Base64 of len bytes into out (room for 4 * ((len + 2) / 3) + 1, NUL
 * written): the length without the NUL. */
size_t tc__base64_encode(const void *data, size_t len, char *out);
/* Decode padded base64 (len a multiple of 4) into out (cap bytes): the
 * count, -EINVAL (not canonical base64) or -ENOSPC. */
ssize_t tc__base64_decode(const char *in, size_t len, void *out, size_t cap);

enum { TC__WS_CONT = 0, TC__WS_TEXT = 1, TC__WS_BINARY = 2,
       TC__WS_CLOSE = 8, TC__WS_PING = 9, TC__WS_PONG = 10 };
#define TC__WS_HDR_MAX 14 /* 2 + 8 (64-bit length) + 4 (mask) */

typedef struct tc__ws_hdr {
    unsigned fin, rsv, opcode, masked;
    uint64_t len;           /* payload length */
    unsigned char mask[4];
    size_t size;            /* header bytes, mask included */
} tc__ws_hdr;
/* A frame header at b: 1 (h set), 0 need more, TC_EBADFRAME (a 64-bit
 * length with its top bit set). Checks nothing else. */
int tc__ws_header_parse(const unsigned char *b, size_t n, tc__ws_hdr *h);
/* Write a header (mask NULL: unmasked) to out (TC__WS_HDR_MAX bytes): its size. */
size_t tc__ws_header_build(unsigned char *out, int fin, int opcode, uint64_t len,
                           const unsigned char *mask);
/* XOR n bytes with the key, the first byte being number phase of the payload. */
void tc__ws_mask(unsigned char *p, size_t n, const unsigned char mask[4], size_t phase);

/* UTF-8 validation that resumes: feed state 0 and the bytes; 0 means at a
 * character boundary, TC__UTF8_BAD invalid (sticky), else inside one. */
#define TC__UTF8_BAD UINT32_MAX
uint32_t tc__utf8_feed(uint32_t st, const unsigned char *p, size_t n);
/* Whether a peer may send this close code. */
int tc__ws_close_code_valid(unsigned code);

/* The receiver: what tc__ws_rx_step returns besides an error. */
enum { TC__WS_MORE = 0, TC__WS_MSG = 1, TC__WS_CTRL = 2 };
typedef struct tc__ws_rx {
    size_t max;             /* the largest message payload */
    int expect_mask;        /* frames must be masked (a server) or must not (a client) */
    int in_msg;             /* a fragmented message is being joined */
    int type;               /* its opcode */
    uint32_t utf8;          /* its text's validator state */
    size_t asm_len;         /* its payload so far, at buf[0, asm_len) */
    size_t pos;             /* the first byte of buf not parsed yet */
} tc__ws_rx;
typedef struct tc__ws_ev {
    int opcode;             /* MSG: TEXT or BINARY; CTRL: CLOSE, PING or PONG */
    size_t off, len;        /* the payload, unmasked, at buf + off */
    size_t used;            /* bytes to drop from the front of buf once done with it */
    size_t squeeze;         /* bytes removed from inside buf: its length is len - squeeze */
    int close_code;         /* on an error: the close code to answer with */
} tc__ws_ev;
/* One step over the buffered bytes buf[0, len), which start at a frame (or
 * the message being joined): unmasks payloads in place, joins fragments at
 * the front, checks the RFC's rules. TC__WS_MSG, TC__WS_CTRL, TC__WS_MORE,
 * or TC_EBADFRAME / TC_ETOOBIG with ev->close_code (1002, 1007, 1009). The
 * caller drops ev->used bytes before the next step and shortens buf by
 * ev->squeeze (any answer). */
int tc__ws_rx_step(tc__ws_rx *rx, unsigned char *buf, size_t len, tc__ws_ev *ev);

#define TC__HTTP_MAX_HEADERS 64
typedef struct tc__http_span {
    size_t off, len;
} tc__http_span;
typedef struct tc__http_req {
    size_t size;            /* bytes of the head, blank line included */
    tc__http_span method, target;
    int minor;              /* HTTP/1.minor */
    size_t nheaders;
    tc__http_span name[TC__HTTP_MAX_HEADERS], value[TC__HTTP_MAX_HEADERS];
} tc__http_req;
/* A request head at buf, looked for in the first max bytes: 1 (out set),
 * 0 need more, TC_EBADFRAME malformed, TC_ETOOBIG (no end within max, or
 * more than TC__HTTP_MAX_HEADERS fields). */
int tc__http_parse(const char *buf, size_t len, size_t max, tc__http_req *out);
/* Whether a (alen bytes) equals the string b, ignoring ASCII case. */
int tc__http_ieq(const char *a, size_t alen, const char *b);
/* Whether a comma-separated field value holds token (ignoring case). */
int tc__http_has_token(const char *v, size_t len, const char *token);

/* ---- PROXY protocol (proxy.c: pure) --------------------------------------- */

#define TC__PROXY_V1_MAX 107           /* a v1 line at most, CRLF included (the spec's bound) */
#define TC__PROXY_V2_MAX_PAYLOAD 2048  /* v2: addresses and TLVs after the 16-byte head */
#define TC__PROXY_MAX (16 + TC__PROXY_V2_MAX_PAYLOAD) /* the longest header accepted */
#define TC__PROXY_DEFAULT_TRUSTED "127.0.0.0/8,::1/128"

/* Answers of tc__proxy_parse besides TC_EPROXY. */
enum { TC__PROXY_MORE = 0, TC__PROXY_DONE = 1, TC__PROXY_NONE = 2 };

typedef struct tc__proxy_hdr {
    size_t len;       /* DONE: bytes of the header, to consume */
    int version;      /* 1 or 2 */
    int local;        /* v2 LOCAL command: the proxy speaks for itself */
    int has_addr;     /* src and dst hold the client's and the destination's addresses
                       * (0: LOCAL, v1 UNKNOWN, v2 UNSPEC or datagram: keep the real ones) */
    tc_addr src, dst;
    const char *why;  /* TC_EPROXY: what is wrong, a static string */
} tc__proxy_hdr;

/* Look for a PROXY header at the start of buf: TC__PROXY_DONE (*out filled),
 * TC__PROXY_MORE (a valid prefix, or nothing yet: read more), TC__PROXY_NONE
 * (the bytes start with neither signature) or TC_EPROXY (out->why). Reads at
 * most TC__PROXY_MAX bytes; MORE is never the answer for len >= TC__PROXY_MAX. */
int tc__proxy_parse(const void *buf, size_t len, tc__proxy_hdr *out);

/* One entry of the trusted-proxy list. */
typedef struct tc__cidr {
    int family;              /* AF_INET, AF_INET6, or AF_UNIX: every unix-socket peer */
    unsigned char addr[16];  /* network byte order, host bits cleared */
    int bits;                /* prefix length */
} tc__cidr;

/* Entries "text" can hold at most (commas + 1). */
size_t tc__cidr_count(const char *text);
/* Parse "127.0.0.0/8, ::1/128, unix" into list (max entries): 0 with *count
 * set (an empty or blank text gives 0 entries), or TC_EBADCONFIG with *count
 * the index of the bad entry. */
int tc__cidr_parse(const char *text, tc__cidr *list, size_t max, size_t *count);
/* Whether a is in one of the n blocks (an IPv4-mapped IPv6 address matches IPv4 blocks). */
int tc__cidr_match(const tc__cidr *list, size_t n, const tc_addr *a);

/* ---- readiness poller (poller.c: epoll) ---------------------------------- */

typedef struct tc__poller tc__poller;
/* Flags for add and mod. TC__POLL_ONESHOT: the descriptor reports one
 * event, then nothing until a mod arms it again, from whichever thread.
 * TC__POLL_EDGE: an event per change (each write to an eventfd), not while
 * the state lasts. */
enum { TC__POLL_IN = 1, TC__POLL_OUT = 2, TC__POLL_ONESHOT = 4, TC__POLL_EDGE = 8 };
#define TC__POLL_BATCH 256 /* events taken per wait: bounds one loop turn */
typedef struct tc__pevent {
    void *ptr;        /* what was registered with the descriptor */
    unsigned events;  /* TC__POLL_IN / TC__POLL_OUT; errors and hang-ups set both */
} tc__pevent;
int tc__poller_create(tc__poller **out);
void tc__poller_destroy(tc__poller *p);
int tc__poller_add(tc__poller *p, int fd, unsigned events, void *ptr);
int tc__poller_mod(tc__poller *p, int fd, unsigned events, void *ptr);
int tc__poller_del(tc__poller *p, int fd);
/* Wait up to timeout_ms (-1: forever): the number of events, 0 on timeout or EINTR. */
int tc__poller_wait(tc__poller *p, tc__pevent *out, int max, int timeout_ms);
/* A poller that several threads wait on, each taking one event: add (add
 * set) or mod fd with a 64-bit token instead of a pointer; wait for one
 * event: 1 (*token, *events set), 0 on timeout or EINTR, or an error. */
int tc__poller_set_token(tc__poller *p, int add, int fd, unsigned events, uint64_t token);
int tc__poller_wait_token(tc__poller *p, uint64_t *token, unsigned *events, int timeout_ms);
/* The epoll descriptor itself, readable while an event is pending: for a
 * caller that waits on it with other descriptors (a mode's srv->mode_fd). */
int tc__poller_fd(const tc__poller *p);

/* ---- io_uring (uring.c: raw system calls, no liburing) -------------------- */

typedef struct tc__uring tc__uring;
struct io_uring_sqe;
struct io_uring_cqe;
/* Whether this kernel (and its sandbox) offers what the loops need: 0, or
 * the negated errno that refused it (-ENOSYS, -EPERM under seccomp or
 * io_uring_disabled, -ENOMEM over RLIMIT_MEMLOCK). Probed once per process. */
int tc__uring_probe(void);
/* A ring of entries submission slots, with nbufs (a power of two)
 * provided receive buffers of buf_size bytes each (buffer group 0). One
 * thread submits (IORING_SETUP_SINGLE_ISSUER where offered): the creating
 * one, or (disabled set) the one that enables it. Closing a ring later
 * interrupts a blocking call of each thread that made or used it (EINTR):
 * make it in a thread of the library's. 0 or a negated errno. */
int tc__uring_create(tc__uring **out, unsigned entries, unsigned nbufs, size_t buf_size,
                     int disabled);
/* Enable a ring made disabled: the calling thread becomes its submitter. */
int tc__uring_enable(tc__uring *u);
/* After the calling thread closed a ring it used: wait (briefly) for the
 * kernel's notice that interrupts its next blocking call, so that the
 * application's next call is not the one interrupted. */
void tc__uring_absorb_exit(void);
/* Close the ring: what is in flight is cancelled. NULL does nothing. */
void tc__uring_destroy(tc__uring *u);
/* The calling thread starts (on) or stops using the ring: registers its
 * descriptor for cheaper entries, or drops that registration (required
 * before the thread lets the ring go). */
void tc__uring_own(tc__uring *u, int on);
/* The next submission entry, zeroed, or NULL (the queue is full and the
 * kernel took none of it). Goes in with the next submit or wait. */
struct io_uring_sqe *tc__uring_sqe(tc__uring *u);
/* Whether entries wait to be submitted. */
int tc__uring_pending(const tc__uring *u);
/* Submit what is queued without waiting: 0 or a negated errno. */
int tc__uring_submit(tc__uring *u);
/* Submit, then wait up to timeout_ms (-1: forever, 0: not at all) for a
 * completion unless one is ready: 0 (also on timeout or a signal), or a
 * negated errno. */
int tc__uring_wait(tc__uring *u, int timeout_ms);
/* The next completion, or NULL; tc__uring_cqe_seen consumes it. */
struct io_uring_cqe *tc__uring_cqe(tc__uring *u);
void tc__uring_cqe_seen(tc__uring *u);
/* A provided buffer's memory, and handing it back to the kernel. */
unsigned char *tc__uring_buf(tc__uring *u, int bid);
/* The provided buffers' one block (buffer bid at bid * the buffer size). */
unsigned char *tc__uring_bufs(tc__uring *u);
void tc__uring_buf_give(tc__uring *u, int bid);

/* ---- event loop backends (poller.c: epoll; evb_uring.c: io_uring) ----------- */

/* What an event loop's backend reports: readiness, as the poller does, or
 * (a backend that receives for the loop, asked with TC__POLL_RECV) the
 * bytes themselves. */
typedef struct tc__ev {
    void *ptr;            /* what was registered with the descriptor */
    unsigned char *data;  /* recv: the bytes, lent until release; send: the
                           * buffer handed to send, the loop's again */
    size_t cap;           /* send: that buffer's capacity */
    unsigned events;      /* TC__POLL_IN / TC__POLL_OUT */
    int recv;             /* a receive's result: res holds it, data the bytes */
    int send;             /* a send's result (TC__POLL_OUT): res is all its bytes, or -errno */
    int res;              /* bytes received (> 0), 0 at the end of the stream, or -errno */
    int buf;              /* the backend's buffer behind data, or -1 */
    int accept;           /* an accept's result: res is the new descriptor
                           * (the loop's) or -errno, data the peer's struct
                           * sockaddr and cap its length */
} tc__ev;
/* Flag for add and mod (besides the poller's): the loop wants the bytes of
 * the descriptor, not its readiness; a backend that cannot receive for it
 * (epoll) reports TC__POLL_IN instead. */
enum { TC__POLL_RECV = 16 };
typedef struct tc__evb tc__evb;
typedef struct tc__evbackend {
    const char *name;
    int (*create)(tc__evb **out);
    void (*destroy)(tc__evb *b);
    /* The calling thread starts or stops running the loop (a ring is one
     * thread's): 0 or a negated errno (start only). */
    int (*attach)(tc__evb *b);
    void (*detach)(tc__evb *b);
    /* As the poller's (TC__POLL_* flags, TC__POLL_RECV too). After del, the
     * descriptor may be closed at once, and nothing more is reported for it. */
    int (*add)(tc__evb *b, int fd, unsigned events, void *ptr);
    int (*mod)(tc__evb *b, int fd, unsigned events, void *ptr);
    int (*del)(tc__evb *b, int fd);
    /* Wait up to timeout_ms (-1: forever): events, 0 on timeout or EINTR. */
    int (*wait)(tc__evb *b, tc__ev *out, int max, int timeout_ms);
    /* The loop is done with ev's bytes. */
    void (*release)(tc__evb *b, tc__ev *ev);
    /* Send len bytes at buf + off for a descriptor added with
     * TC__POLL_RECV (in order with its loans, one in flight at a time): buf (malloc'd, cap bytes) is
     * the backend's until the completion event hands it back, after all of
     * it went out (short sends are resubmitted) or an error; freed by the
     * backend if the descriptor is deleted first. TC__POLL_OUT on such a
     * descriptor asks for nothing more. 0, or an error (buf still the
     * caller's). NULL: the loop sends itself (epoll). */
    int (*send)(tc__evb *b, int fd, unsigned char *buf, size_t off, size_t len, size_t cap);
    /* Send len bytes at p, which lie in a receive buffer the loop holds (an
     * event's data, not yet released), from that buffer itself, after fd's
     * sends before it; it stays out of the ring until the send completes,
     * which reports a send event with data NULL and res len (or -errno).
     * 0, or an error with nothing done (other bytes, too many loans: the
     * caller sends them as usual). NULL: no loans (epoll). */
    int (*lend)(tc__evb *b, int fd, const void *p, size_t len);
    /* Keep up to n accept requests in flight on listening descriptor fd
     * (added with TC__POLL_IN; its readiness is not reported while n > 0),
     * armed with the next wait; n = 0 cancels them. Lowering n lets those
     * in flight complete. Each completion is an event with accept set (see
     * tc__ev), one that lands after a cancellation too. 0, or an error with
     * nothing in flight (the loop polls and accepts itself). NULL: no such
     * requests (epoll). */
    int (*accept)(tc__evb *b, int fd, int n);
} tc__evbackend;
/* Accept requests a backend keeps in flight, all listeners together: the
 * loop shares them out (a listener that finds no slot free is polled). */
#define TC__ACCEPT_SLOTS 64
extern const tc__evbackend tc__evb_epoll;
extern const tc__evbackend tc__evb_uring;

/* ---- child processes (child.c: pidfd watch, reap by pid, exit status) ------ */

/* What tc__child_reap found. */
enum {
    TC__CHILD_RUNNING = 0, /* still running: nothing reaped */
    TC__CHILD_ENDED = 1,   /* reaped here: *status holds its wait status */
    TC__CHILD_GONE = 2,    /* reaped elsewhere (SIGCHLD ignored, someone's waitpid(-1)) */
};
#define TC__CHILD_HOW_LEN 48 /* room for any text of tc__child_describe */

/* Whether pidfds work here: 0, or the negated errno of pidfd_open on this
 * process (-ENOSYS before Linux 5.3 or under a seccomp filter). Probe once,
 * then watch each child with tc__child_watch or fall back for all of them. */
int tc__child_probe(void);
/* A close-on-exec pidfd for pid, readable once it ends, or a negated errno:
 * no descriptor, and the caller falls back to a pipe the child holds or to
 * polling with tc__child_reap. */
int tc__child_watch(pid_t pid);
/* Reap pid and only pid (never waitpid(-1)), EINTR retried, without waiting
 * unless block is set: TC__CHILD_RUNNING (never when blocking),
 * TC__CHILD_ENDED with *status set, or TC__CHILD_GONE (status unknown). */
int tc__child_reap(pid_t pid, int block, int *status);
/* Whether tc__child_reap's answer how (and status) is an exit with status 0. */
int tc__child_succeeded(int how, int status);
/* How a child ended, for a log line: "exited with status 3", "killed by
 * signal 9", "was reaped elsewhere (status unknown)". Returns buf. */
const char *tc__child_describe(int how, int status, char *buf, size_t len);

/* ---- timers (timer.c: a min-heap on absolute deadlines) --------------------- */

#define TC__TIMER_IDLE UINT32_MAX /* slot of a timer that is not scheduled */
typedef struct tc__timer {
    int64_t when;     /* absolute CLOCK_MONOTONIC ns */
    uint32_t slot;    /* index in the heap, or TC__TIMER_IDLE */
    uint32_t tag;     /* the owner's, untouched here (what the timer is for) */
} tc__timer;
typedef struct tc__theap {
    tc__timer **v;
    size_t n, cap;
} tc__theap;
/* Make room for n timers, so that adding up to that many cannot fail. */
int tc__theap_reserve(tc__theap *h, size_t n);
/* Add or move a timer (set slot = TC__TIMER_IDLE before first use). */
int tc__theap_schedule(tc__theap *h, tc__timer *t, int64_t when);
void tc__theap_cancel(tc__theap *h, tc__timer *t);
tc__timer *tc__theap_next(const tc__theap *h);
void tc__theap_free(tc__theap *h);

/* ---- channels (chan.c: buffers; conn.c: the public API) ------------------ */

#define TC__BUF_DEFAULT ((size_t)16 * 1024)
/* A send this large goes straight to the socket even on an asynchronous
 * (io_uring) channel, when nothing is queued or in flight before it. */
#define TC__ASYNC_DIRECT_MIN ((size_t)8 * 1024)
#define TC__BUF_MAX ((size_t)64 * 1024 * 1024)

/* What a PROXY header told about a channel. */
struct tc__proxy_addrs {
    tc_addr peer; /* the proxy that sent the header */
    tc_addr dest; /* the destination the header carried (len 0: none) */
};

typedef struct tc__driver tc__driver;
typedef struct tc__io tc__io;

/* A channel's buffers and their offsets: all zero while the channel is
 * idle, so they live apart from it, made with the first byte buffered or
 * queued (tc__chan_own) and freed once both directions are empty again
 * (tc__chan_release): an idle connection then costs this much less (what
 * libuv, nginx and Redis do with idle connections' buffers). Reads need no
 * check: an idle channel points to tc__chanbuf_none, all zero and
 * read-only, so only code that stores must own the struct first. */
struct tc__chanbuf {
    /* read side: data is rbuf[roff, roff + rlen); the last view covers the
     * first rview bytes of it, consumed at the start of the next read call */
    unsigned char *rbuf;
    size_t rcap, roff, rlen, rview;
    size_t rscan;      /* bytes of rbuf already scanned for the next frame */
    /* write side: pending data is wbuf[woff, wlen) */
    unsigned char *wbuf;
    size_t wcap, woff, wlen;
    size_t wflight;    /* see tc_conn.wasync */
    unsigned char rborrowed; /* rbuf is the event loop's scratch buffer, not ours */
};

/* The state of every channel that holds no bytes (never written). */
extern const struct tc__chanbuf tc__chanbuf_none;

/* What few channels use (TLS, a WebSocket, a codec of their own, a PROXY
 * header, a blocking receive timeout): apart, as an idle channel should
 * be small. Made by tc__chan_ext at the first store, freed with the
 * channel; until then c->x is tc__chanx_none (all zero, read-only). */
struct tc__chanx {
    /* the tc_transport (TLS) attached, and its state; see tc_conn.io */
    tc_transport *xport;
    void *xstate;
    void *proto_data;              /* the state of tc_conn.proto */
    tc_codec *codec_own;           /* the channel's own codec (see tc_conn.codec) */
    struct tc__proxy_addrs *proxy; /* allocated once a PROXY header is accepted */
    int64_t rcvtimeo;              /* SO_RCVTIMEO as last set (ns; 0 = none) */
};

/* The state of every channel that has no tc__chanx of its own (never written). */
extern const struct tc__chanx tc__chanx_none;

struct tc_conn {
    int fd;
    int stopfd;            /* a stop signal reads and message waits watch (readable:
                            * TC_ESHUTDOWN), or -1 */
    const tc__driver *drv; /* the transport: how this channel waits and sends */
    void *drv_data;        /* the driver's record of the channel, or NULL */
    /* The bytes' way to and from the socket: tc__io_plain, or through a
     * tc_transport (TLS) once one is attached (x->xport, its state x->xstate). */
    const tc__io *io;
    /* The buffers' state (see struct tc__chanbuf): never NULL; the shared,
     * read-only tc__chanbuf_none while the channel holds no bytes. */
    struct tc__chanbuf *b;
    /* The framing: the server's codec (shared: an idle channel should be
     * small), or x->codec_own, the channel's copy, once one is set for it alone. */
    const tc_codec *codec;
    /* A protocol spoken over the channel (a WebSocket), or NULL: its table
     * (see tc__proto); its state is x->proto_data. */
    const struct tc__proto *proto;
    struct tc__chanx *x;   /* never NULL; see struct tc__chanx */
    tc_server *srv;        /* opaque here: tc_conn_server(); NULL for a dialled channel */
    uint64_t id;           /* tc_conn_id(): the server's name for it; 0 when dialled */
    void *data;            /* user pointer */
    int64_t deadline;      /* overall absolute deadline; TC__NO_DEADLINE = none */
    uint64_t rtaken;       /* bytes consumed from the front of the read buffer so far */
    /* the caller's bytes the last write call took (tc_conn_last_sent): an
     * event channel's sends may come from any thread, hence atomic (relaxed) */
    atomic_size_t last_sent;
    _Atomic(tc_addr *) peer_full; /* see peer_in */
    /* The server's address when every accepted socket shares it, else the
     * copy in own_local: an idle channel in event mode should cost little,
     * and most never need a copy. */
    const tc_addr *local;
    int timeout_ms;        /* per-operation timeout; <= 0 = none */
    int rerr;              /* sticky: the read side is broken with this code */
    int rpend;             /* an error that came behind buffered bytes: reported after them */
    int werr;              /* sticky: the write side is broken with this code */
    int listener;          /* the index of the server's listener that accepted it (0: one
                            * only), -1 for a loop's outbound connection */
    uint32_t rsize;        /* read buffer size (receive size; at most TC__BUF_MAX) */
    uint32_t wsize;        /* write buffer size */
    /* The peer's address (tc_conn_peer): IPv4 and IPv6 inline, in peer_in
     * (peer_len bytes of it), as a tc_addr costs 136 bytes and an idle
     * channel should be small; another family (a unix socket's path) in
     * *peer_full (peer_big set). peer_full is also the tc_addr that
     * tc_conn_peer hands out, made at its first call and kept equal to the
     * inline copy from then on. Read and set with tc__chan_peer*. */
    union {
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } peer_in;
    unsigned char peer_len;
    unsigned char peer_big;
    unsigned char peer_socktype; /* 0, SOCK_STREAM or SOCK_DGRAM */
    unsigned char xwant;   /* TC_TRANSPORT_WANT_*: what the last read (or handshake
                            * step) that would block waits for; 0 after one that did not */
    unsigned char reof;    /* the peer's end of stream was seen */
    unsigned char rdry;    /* the last receive drained the socket: wait before the next */
    /* The transport sends the queue itself (an io_uring loop, once per
     * turn): sends and flushes only queue; b->wflight bytes are in a send the
     * kernel has not finished, and count as pending. */
    unsigned char wasync;
    tc_addr own_local[]; /* allocated (one) only when local is not shared */
};

/* chan.c: the non-blocking primitives every driver builds on. */

/* Wrap an accepted or connected socket (takes ownership of fd, even on
 * failure), run by drv; local NULL: ask the socket. */
int tc__chan_new(tc_conn **out, const tc__driver *drv, int fd, const tc_addr *peer,
                 const tc_addr *local);
/* Close the socket and free the channel. */
void tc__chan_free(tc_conn *c);
/* Give the channel a codec of its own, a copy of codec (NULL: raw): 0 or -ENOMEM. */
int tc__chan_set_codec(tc_conn *c, const tc_codec *codec);
/* Set the channel's peer address: 0, or -ENOMEM (a family other than IPv4
 * and IPv6 needs a tc_addr of its own). */
int tc__chan_set_peer(tc_conn *c, const tc_addr *a);
/* A copy of the channel's peer address. */
void tc__chan_peer_copy(const tc_conn *c, tc_addr *out);
/* The channel's peer address as a tc_addr that lives as long as the
 * channel (made at the first call; any thread), or NULL without memory. */
const tc_addr *tc__chan_peer(const tc_conn *c);
/* Drop the bytes of the last view: it ends with the next read call. */
void tc__chan_consume_view(tc_conn *c);
/* Remember a hard read error (not a timeout, ENOMEM, EAGAIN or
 * TC_ESHUTDOWN): the read side stays broken with it. Returns err. */
int tc__chan_broken(tc_conn *c, int err);
/* Free empty buffers (a read buffer only if it holds more than keep bytes). */
void tc__chan_trim(tc_conn *c, size_t keep);
/* Make c->b the channel's own before storing into it: 0 or -ENOMEM. */
int tc__chan_own_slow(tc_conn *c);
static inline int tc__chan_own(tc_conn *c)
{
    return c->b != &tc__chanbuf_none ? 0 : tc__chan_own_slow(c);
}
/* Free c->b if both directions are empty (nothing buffered, viewed,
 * queued or in flight): back to tc__chanbuf_none. */
void tc__chan_release(tc_conn *c);
/* The calling thread (an event loop's) keeps one released buffer state for
 * the next channel that needs one (on), or stops and frees it (off: before
 * the thread ends). */
void tc__chan_spare(int on);
/* c->x as the channel's own, to store into: NULL without memory. */
struct tc__chanx *tc__chan_ext_slow(tc_conn *c);
static inline struct tc__chanx *tc__chan_ext(tc_conn *c)
{
    return c->x != &tc__chanx_none ? c->x : tc__chan_ext_slow(c);
}
/* The view covers everything buffered (ended with the next read call). */
static inline void tc__chan_view_all(tc_conn *c)
{
    if (c->b->rlen) /* else the view is empty already, and c->b perhaps read-only */
        c->b->rview = c->b->rlen;
}
/* Make room for more input: at least one byte, ideally rsize, never a
 * capacity over limit unless the buffer already had it. 0 or -ENOMEM. */
int tc__chan_make_room(tc_conn *c, size_t limit);
/* Account for what a receive into the free end of the buffer returned:
 * bytes added, TC_EOF (reof set), or the error. */
ssize_t tc__chan_filled(tc_conn *c, ssize_t r);
/* One receive into the buffer without waiting: bytes added, TC_EOF,
 * -EAGAIN (rdry set), or an error. */
ssize_t tc__chan_fill_once(tc_conn *c, size_t limit);
/* The most one frame of the channel's codec takes, framing included. */
size_t tc__chan_frame_limit(const tc_conn *c);
/* The receive size for frames of the channel's codec: a buffer never grows
 * past what one frame can need. */
size_t tc__chan_frame_room(const tc_conn *c);
/* The next buffered frame: 1 (msg, len: a view until the next call), 0 need
 * more, or the (sticky) error; TC_EPARTIAL once the peer ended mid-frame. */
int tc__chan_frame(tc_conn *c, const void **msg, size_t *len);
/* The event loop's receive: with nothing buffered it lands in the loop's
 * scratch buffer. Bytes added, 0 if the buffer is full, TC_EOF, -EAGAIN or an error. */
ssize_t tc__chan_fill_scratch(tc_conn *c, unsigned char *scratch, size_t scratch_len);
/* Bytes a backend received for the channel (data, n > 0): lent as the
 * buffer when nothing is buffered (settle keeps what is left), else
 * appended to it. n, or an error (the sticky one, -ENOMEM). */
ssize_t tc__chan_feed(tc_conn *c, unsigned char *data, size_t n);
/* After a batch of frames: move leftovers out of the scratch buffer, free empty buffers. */
int tc__chan_settle(tc_conn *c);
/* Move what the scratch buffer holds (the current view included) into the
 * channel's own buffer, offsets relative to roff kept: 0 or -ENOMEM. */
int tc__chan_keep(tc_conn *c);
/* A PROXY header in what is buffered: TC__PROXY_MORE until one is
 * complete (then consumed: TC__PROXY_DONE), TC__PROXY_NONE, TC_EPROXY
 * (h->why), or TC_EOF (the stream ended before any byte). */
int tc__chan_proxy(tc_conn *c, tc__proxy_hdr *h);
/* Drop n buffered bytes from the front (consumed by a protocol step). */
void tc__chan_take(tc_conn *c, size_t n);
/* Append n bytes to the write queue (sent with the next flush or send):
 * 0 or -ENOMEM. */
int tc__chan_queue(tc_conn *c, const void *p, size_t n);
/* Bytes queued for sending (in flight included). */
size_t tc__chan_pending(const tc_conn *c);
/* Room for n more bytes in the write buffer. 0 or -ENOMEM. */
int tc__chan_reserve(tc_conn *c, size_t n);
/* One send of what is queued, then vec from (idx, ioff): the count sent, 0
 * if nothing was left, or the socket's answer (-EAGAIN...). */
ssize_t tc__chan_send_window(tc_conn *c, const struct iovec *vec, int cnt, int idx, size_t ioff);
/* Account for x bytes sent: first the queue, then vec from (idx, ioff).
 * Returns how many of the caller's bytes went out. */
size_t tc__chan_advance(tc_conn *c, const struct iovec *vec, int cnt, int *idx, size_t *ioff,
                        size_t x);
/* Send what the socket takes now (nothing with wasync), queue the rest: total or an error.
 * *taken (if not NULL): how many of vec's bytes were sent or queued, also
 * after an error. */
ssize_t tc__chan_send_nb(tc_conn *c, const struct iovec *vec, int cnt, size_t total,
                         size_t *taken);
/* Send queued output: 0 all gone (buffer freed), 1 some left (always, with
 * wasync, while any is queued or in flight), or an error. */
int tc__chan_flush_nb(tc_conn *c);
/* While a framed write (a codec's envelope, a WebSocket header) is in its
 * driver's send, in the sending thread: where the caller's bytes sit in
 * what the driver sends. The driver records its count in the sending thread,
 * before any hand-off to a loop, and the writer clears this afterwards
 * without touching the channel, which the loop may have freed by then. */
struct tc__sent_window {
    const tc_conn *c;
    size_t head, len;
};
extern _Thread_local struct tc__sent_window tc__tl_sent;

/* Record how many of the caller's bytes the current write call took (of
 * the payload only, inside a framed write). */
static inline void tc__chan_set_sent(tc_conn *c, size_t n)
{
    if (tc__tl_sent.c == c) {
        n = n > tc__tl_sent.head ? n - tc__tl_sent.head : 0;
        n = n < tc__tl_sent.len ? n : tc__tl_sent.len;
    }
    atomic_store_explicit(&c->last_sent, n, memory_order_relaxed);
}

/* conn.c */

/* The deadline of a call starting now: the earlier of timeout and deadline. */
int64_t tc__conn_op_deadline(const tc_conn *c);
/* Flush the write buffer, best effort (before the library closes a channel). */
void tc__conn_flush_quiet(tc_conn *c);
/* Read a PROXY header through the channel until deadline: as
 * tc__chan_proxy, never TC__PROXY_MORE; -ETIMEDOUT (c->rlen tells whether
 * anything came) or a socket error. */
int tc__conn_read_proxy(tc_conn *c, int64_t deadline, tc__proxy_hdr *h);

/* ---- protocols: what a channel speaks over its bytes (ws.c) --------------- */

/* A protocol with its own framing and an opening step (the WebSocket
 * handshake). The server hands it to each accepted channel; chan.c and
 * conn.c consult the channel's table where a codec would do the work
 * (frames, tc_conn_send), and the session runs its opening step before
 * setup, in every mode. */
typedef struct tc__proto {
    const char *name;
    /* Copy and check the server's settings: 0 or TC_EBADCONFIG (detail logged), -ENOMEM. */
    int (*configure)(tc_server *srv, void **out);
    void (*unconfigure)(void *cfg);
    /* Give an accepted channel its state (c->proto, c->x->proto_data): 0 or -ENOMEM. */
    int (*attach)(tc_conn *c, const void *cfg);
    /* Free the channel's state (from tc__chan_free). */
    void (*detach)(tc_conn *c);
    /* The opening step over what is buffered, without waiting: 1 done (the
     * handler may open), 0 more bytes needed, TC_EOF to end quietly, or an
     * error to report; a response may be queued for the peer in any case. */
    int (*open)(tc_conn *c);
    /* The longest wait for the opening step, in ms. */
    int (*open_timeout_ms)(const tc_conn *c);
    /* As tc__chan_frame: the next message (1), 0 need more, or an error. */
    int (*frame)(tc_conn *c, const void **msg, size_t *len);
    /* tc_conn_send on the channel: len or an error. */
    ssize_t (*send)(tc_conn *c, const void *buf, size_t len);
    /* The most the read buffer needs to hold (tc__chan_frame_limit). */
    size_t (*limit)(const tc_conn *c);
    /* When the protocol wants to act while the channel waits for input (a
     * keepalive ping, or its timeout): an absolute deadline, or
     * TC__NO_DEADLINE. The modes call wake once it has passed. */
    int64_t (*wake_at)(const tc_conn *c);
    /* Act: 0 (perhaps with something queued to send), or the code to end
     * the session with (-ETIMEDOUT: no answer to a ping). */
    int (*wake)(tc_conn *c);
} tc__proto;

extern const tc__proto tc__proto_ws;

/* ---- byte I/O under a channel (xport.c): the socket, or a transport ------ */

/* Every receive and send a channel makes goes through c->io: one table for
 * a plain socket, one calling the channel's tc_transport (TLS). The
 * drivers wait on the socket as before; a transport's step that waits for
 * the other direction is waited for here (blocking drivers) or left in
 * c->xwant (an event loop, whose driver has no fill). */
struct tc__io {
    /* A receive without waiting (sleep 0), or asleep in recv on a blocking
     * socket (sleep 1: tc__sock_recv_block's answers). */
    ssize_t (*recv)(tc_conn *c, void *buf, size_t n, int sleep);
    /* tc__sock_sendmsg's answers (one piece: tc__sock_send). */
    ssize_t (*send)(tc_conn *c, const struct iovec *v, int cnt);
    /* tc__sock_sendfile's answers, on a non-blocking socket. */
    ssize_t (*sendfile)(tc_conn *c, int file_fd, off_t *offset, size_t n);
    /* Half-close: shutdown(SHUT_WR), after a close_notify. 0 or an error. */
    int (*shutdown_write)(tc_conn *c);
    /* Bytes received that a recv returns without the socket being readable. */
    size_t (*pending)(const tc_conn *c);
};
extern const tc__io tc__io_plain;

/* Put c on the transport t (the server's or the dialler's), after any PROXY
 * header: bytes already buffered are the transport's to read first. 0 or
 * an error (the channel stays plain). client: a dialled channel, host its
 * name (SNI) or NULL. */
int tc__xport_attach(tc_conn *c, tc_transport *t, int client, const char *host);
/* One handshake step: 1 done, 0 waiting (c->xwant: for what), or an error. */
int tc__xport_step(tc_conn *c);
/* The handshake until done or deadline, waiting on the socket (and the
 * stop descriptor, if the channel has one): 0, -ETIMEDOUT, TC_ESHUTDOWN or
 * an error. */
int tc__xport_handshake(tc_conn *c, int64_t deadline);
/* A transport's goodbye (TLS close_notify) without waiting, once: nothing
 * for a plain channel, or one whose stream is broken. */
void tc__xport_goodbye(tc_conn *c);
/* The deadline of a handshake starting now. */
int64_t tc__xport_deadline(const tc_transport *t);
/* Why the transport failed, for a log line ("" if it says nothing). */
const char *tc__xport_why(const tc_conn *c);
/* Whether the transport holds received bytes the socket will not announce. */
static inline size_t tc__chan_io_pending(const tc_conn *c)
{
    return c->io->pending(c);
}

/* ---- drivers: how a channel waits and sends ----------------------------- */

/* The transport under a channel. conn.c calls only these; a NULL entry is
 * an operation the transport does not offer (-ENOTSUP). */
struct tc__driver {
    const char *name;
    /* One receive into the buffer (capacity at most limit), waiting for
     * input until deadline: bytes added, TC_EOF, -ETIMEDOUT, TC_ESHUTDOWN
     * (c->stopfd became readable while it had to wait) or an error.
     * NULL: the driver reads for the handler (event loops). */
    ssize_t (*fill)(tc_conn *c, int64_t deadline, size_t limit);
    /* One receive straight into buf (a read larger than the buffer), waiting
     * until deadline: a count, 0 at the end of the stream, or an error
     * (TC_ESHUTDOWN as for fill). */
    ssize_t (*recv)(tc_conn *c, void *buf, size_t n, int64_t deadline);
    /* The wait between messages: one receive into the empty buffer that may
     * sleep until deadline: bytes added, TC_EOF, -ETIMEDOUT, -EINTR (a
     * signal: the caller looks at its flags and calls again), TC_ESHUTDOWN
     * (c->stopfd became readable), or an error. */
    ssize_t (*wait_input)(tc_conn *c, int64_t deadline);
    /* Send everything queued, then vec (total bytes): total or an error. A
     * blocking driver waits until the channel's deadline; an event loop's
     * sends what the socket takes and queues the rest (from any thread).
     * Either records how many of vec's bytes went out or were queued, also
     * on failure (tc__chan_set_sent); sendfile too, of the file's bytes. */
    ssize_t (*send)(tc_conn *c, const struct iovec *vec, int cnt, size_t total);
    /* Half-close once the queued output is out. */
    int (*shutdown_write)(tc_conn *c);
    ssize_t (*sendfile)(tc_conn *c, int file_fd, off_t offset, size_t count);
    int (*set_timer)(tc_conn *c, int delay_ms, int interval_ms);
    /* The bytes queued for sending, from whichever thread asks (NULL: the
     * write buffer's, tc__chan_pending). */
    size_t (*pending)(const tc_conn *c);
};

/* drv_block.c: blocking channels. sleep: a blocking socket, reads asleep
 * in recv under SO_RCVTIMEO (a connection with a thread or process of its
 * own); poll: a non-blocking socket and poll() (dial). */
extern const tc__driver tc__drv_sleep;
extern const tc__driver tc__drv_poll;
/* Give a sleeping channel the small buffer its first wait sleeps in, from
 * the accepting thread: a handler thread that never allocates never gets
 * malloc's per-thread cache. Best effort. */
void tc__drv_sleep_prepare(tc_conn *c);

/* drv_dgram.c: datagram channels. A request channel holds one datagram
 * received by the server (its reads see that datagram and then the end of
 * the stream) and sends each reply to its sender (c->peer) through the
 * server's socket, at once, as one datagram; its drv_data is the socket's
 * tc__dgram_sock. The dial driver runs a connected datagram socket of its
 * own: each receive is one whole datagram. */
typedef struct tc__dgram_sock {
    int fd;         /* the bound socket the replies go out of */
    size_t max;     /* the largest datagram delivered (max_frame) */
    int pktinfo;    /* bound to every address: replies go out from the one each
                     * request was sent to (its channel's local address) */
    atomic_ullong received, answered, dropped, truncated; /* tc_stats' datagram counters */
} tc__dgram_sock;
extern const tc__driver tc__drv_dgram;
extern const tc__driver tc__drv_dgram_dial;
/* A request channel for the datagram data[0, len) from peer, replies going
 * out through ds: 0 or -ENOMEM. Its local address is dst (a copy: the
 * address the datagram was sent to) or, if dst is NULL, local (shared).
 * The channel has no descriptor of its own (c->fd is -1: nothing can close
 * or shut down the shared socket through it). */
int tc__dgram_chan(tc_conn **out, tc__dgram_sock *ds, const tc_addr *peer, const tc_addr *local,
                   const tc_addr *dst, const void *data, size_t len);
/* Prepare a dialled datagram channel: receive buffer for datagrams of max bytes. */
void tc__dgram_dial_prepare(tc_conn *c, size_t max);

/* ---- sessions (session.c: the handler contract, once) -------------------- */

/* One accepted connection's run of the handler (BaseRequestHandler). */
typedef struct tc__session {
    tc_server *srv;
    tc_conn *conn;
    struct tc__session *prev, *next; /* the server's live sessions (srv->mu) */
    const tc_handler *handler; /* what it runs: &srv->handler (or NULL), or an
                                * outbound connection's own copy (tc_loop_dial) */
    int64_t idle_since; /* accept time: the first wait for a message counts silence
                         * from here (a queue counts as silence); 0 after it */
    atomic_int idle;    /* message style, waiting for the next message: the
                         * drain may shut its read side */
    unsigned char msg_style, setup_done, opened, closed;
    unsigned char proxy_done; /* the PROXY step ran (an event loop did it) */
    unsigned char dgram;      /* a datagram request: its one datagram is the message */
    unsigned char dialling;   /* an outbound connect in progress: on_close reports
                               * its failure (cleared when the handler opens) */
    unsigned char outbound;   /* made by tc_loop_dial, not accepted */
    /* the mode's record of the connection (srv->session_room bytes) */
    _Alignas(max_align_t) unsigned char room[];
} tc__session;

/* How tc__session_close reports its reason to handle_error. */
enum { TC__REPORT_AUTO = -1, TC__REPORT_NO = 0, TC__REPORT_YES = 1 };

/* The PROXY verdict (rc and h as tc__chan_proxy or tc__conn_read_proxy gave
 * them): 0 to go on, non-zero to end the session, quietly or reported. */
int tc__session_proxy(tc__session *s, int rc, const tc__proxy_hdr *h);
/* Before the PROXY header is read: 0, or TC_EUNTRUSTED reported. */
int tc__session_proxy_precheck(tc__session *s);
/* The transport (cfg.transport, TLS) on the channel, after the PROXY step:
 * 0, or an error (reported). */
int tc__session_secure_begin(tc__session *s);
/* One handshake step without waiting: 1 done, 0 waiting (c->xwant), or an
 * error (logged with the transport's reason; the session ends unopened). */
int tc__session_secure_step(tc__session *s);
/* The handshake's timeout passed (logged). */
void tc__session_secure_late(tc__session *s);
/* setup, then (message style) on_open: 0, or the refusal, reported. */
int tc__session_open(tc__session *s);
/* The channel's protocol's opening step (the WebSocket handshake) over what
 * is buffered: 1 done, 0 more bytes needed, or the session ends (TC_EOF
 * quietly, another code reported; a response may be queued). */
int tc__session_upgrade(tc__session *s);
/* on_message: its answer. */
int tc__session_message(tc__session *s, const void *msg, size_t len);
/* on_timer: its answer. */
int tc__session_timer(tc__session *s);
/* on_eof (if set): its answer (1: keep the connection open for sending), or 0. */
int tc__session_eof(tc__session *s);
/* on_drain (if set): its answer, or 0. */
int tc__session_drain(tc__session *s);
/* The end: the reason reported (AUTO: unless a quiet end), queued output
 * flushed (best effort), on_close (if opened), finish (if set up), and a
 * last flush. Runs once; the channel stays open (the mode ends it). */
void tc__session_close(tc__session *s, int reason, int report);
/* Whether reason is a normal way for a connection to end (not reported):
 * the peer left, was silent between messages, or the server is draining. */
int tc__session_quiet_end(int reason);
/* Whether the server's drain has begun (a forked child asks the stop descriptor). */
int tc__session_stopping(const tc_server *srv);
/* A blocking connection's whole handler run, in the calling thread: PROXY
 * header, open, handle or the message pump, close. A thread that exits or
 * is cancelled inside a callback still closes the session. */
void tc__session_run(tc__session *s);

/* ---- error detail (error.c: tc_last_error_detail()) ----------------------- */

/* Room for one message: the log hook's and the error detail's (longer ones are cut). */
#define TC__MSG_MAX 512
/* The calling thread's detail: emptied when a create or dial starts, set
 * (a copy, cut to TC__MSG_MAX - 1 bytes) when one fails with a message. */
void tc__detail_clear(void);
void tc__detail_set(const char *msg);

/* ---- reports (report.c: the hooks that tell the application) --------------- */

/* Count a handler error and report it to handle_error (or, without it, to
 * the log hook). conn may be NULL. */
void tc__report(tc_server *srv, tc_conn *conn, int err);
/* Format a message for the log hook; nothing happens without one. */
void tc__log(tc_server *srv, tc_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Why the current create (or dial) fails, such as "invalid configuration:
 * workers is negative": formatted once, kept as the thread's
 * tc_last_error_detail() and passed to srv's log hook at TC_LOG_ERROR, if
 * there are a srv (it may be NULL) and a hook. */
void tc__log_detail(tc_server *srv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- concurrency modes (mode.c and mode_*.c) ---------------------------- */

/* The C form of socketserver's mixins: the core calls only these. A mode
 * runs each session through tc__server_run_session() (or, in a forked
 * child, tc__session_run()) and ends it with tc__server_session_done(). */
typedef struct tc__mode {
    tc_mode id;
    int default_max_conns; /* used when the config says 0 (forking: 40); 0 = TC_DEFAULT_MAX_CONNS */
    /* Each connection has a thread or process of its own: accept blocking
     * sockets, run by tc__drv_sleep, so a read is one recv rather than poll
     * + recv (unless it watches the stop descriptor: see drain_reaches_idle). */
    int blocking;
    /* The connections run in this process, on threads other than the serving
     * thread, so the drain can shut the idle message-style ones itself and
     * cut the others after drain_timeout: their reads and waits need not
     * watch the stop descriptor. Otherwise (inline, forking) every read and
     * wait watches it, and ends with TC_ESHUTDOWN once the drain begins. */
    int drain_reaches_idle;
    /* Prepare the mode's state once the server is bound (may be NULL). May
     * set srv->mode_fd (polled by the loop; service runs when it is readable),
     * srv->mode_limit (the most connections the mode takes at once) and
     * srv->session_room (bytes of tc__session.room for its record of a
     * connection). */
    int (*start)(tc_server *srv);
    /* Take ownership of an accepted, verified session (process_request). */
    int (*process_request)(tc_server *srv, tc__session *s);
    /* A mode with its own loop (event): serve_forever calls this instead of
     * the core loop; it accepts with tc__server_accept(), honours
     * tc__server_may_accept(), drains on shutdown and returns 0 or an error.
     * handle_request is then not available. May be NULL. */
    int (*serve)(tc_server *srv);
    /* Housekeeping in the serving thread: each loop turn and when mode_fd is
     * readable (reap finished threads or children). May be NULL. */
    void (*service)(tc_server *srv);
    /* Wait until no connection of this mode is live, or the deadline
     * (TC__NO_DEADLINE: forever): 0 or -ETIMEDOUT. NULL: nothing to wait for. */
    int (*wait)(tc_server *srv, int64_t deadline);
    /* Destroy with block_on_close off: let connections run on without the
     * caller (detach threads, hand children to a reaper). May be NULL. */
    void (*abandon)(tc_server *srv);
    /* Free the mode's state; called once no connection is live (may be NULL). */
    void (*stop)(tc_server *srv);
} tc__mode;

/* The table of a mode, or NULL where this build does not implement it. */
const tc__mode *tc__mode_find(tc_mode id);

extern const tc__mode tc__mode_inline;
extern const tc__mode tc__mode_threading;
extern const tc__mode tc__mode_forking;
extern const tc__mode tc__mode_pool;
extern const tc__mode tc__mode_event;

/* ---- event loops (mode_event.c): event mode's, and pool mode's ------------- */

/* Work an event loop hands to a worker pool: run in a worker thread; lost
 * instead when that thread ends inside it (pthread_exit, cancellation). */
typedef struct tc__job {
    struct tc__job *next; /* the pool's queue */
    void (*run)(struct tc__job *job);
    void (*lost)(struct tc__job *job);
    /* The running worker's receive buffer, lent for the run (and for lost):
     * what is left in it must move out before either returns. */
    unsigned char *scratch;
    size_t scratch_len;
} tc__job;

/* Bytes of a worker's receive buffer (tc__job.scratch). */
#define TC__JOB_SCRATCH ((size_t)64 * 1024)

/* Where the loops send handlers to run (pool mode); absent, they run them
 * in the loop thread (event mode). In pool mode the workers also wait for
 * connections with input themselves (tc__loops_wait): the loop queues work
 * only for what it cannot leave to them (a stream connection's first bytes,
 * frames left buffered). */
typedef struct tc__dispatch {
    /* Queue a job: 0, or -EAGAIN when the queue is full (the pool calls
     * tc__loops_room once it has room again, and the loop retries). */
    int (*submit)(void *pool, tc__job *job);
    void *pool;
    /* An eventfd the pool writes to wake one worker in tc__loops_wait
       (work queued, or quit): watched edge-triggered. */
    int wakefd;
} tc__dispatch;

/* Start nloops loops (srv->mode_state, srv->session_room); d may be NULL
 * (with d, nloops must be 1). */
int tc__loops_start(tc_server *srv, int nloops, const tc__dispatch *d);
/* From a pool worker, between jobs: wait for a connection with input and
 * take it (its job, ready to run), or NULL: nothing after all, or (*woken
 * set) the pool's wakefd fired. */
tc__job *tc__loops_wait(tc_server *srv, int *woken);
/* serve_forever: accept, run, drain; 0 or an error. */
int tc__loops_serve(tc_server *srv);
/* Free the loops (no connection is live). */
void tc__loops_stop(tc_server *srv);
/* The dispatch the loops were started with (NULL: none). */
const tc__dispatch *tc__loops_dispatch(tc_server *srv);
/* From the pool, any thread: it has room again after refusing a job (the
 * loops retry what waited for it). */
void tc__loops_room(tc_server *srv);

/* ---- server (server.c) -------------------------------------------------- */

/* One listening socket of a server. listeners[0] is also srv->lfd and
 * srv->addr, which the single-socket code (datagrams, forking) reads. */
struct pollfd;
typedef struct tc__listener {
    int fd;
    tc_addr addr;         /* bound address, real port */
    int local_known;      /* addr is every accepted socket's local address (no wildcard) */
    int unix_created;     /* we created a unix socket file ... */
    dev_t unix_dev;       /* ... identified by device and inode */
    ino_t unix_ino;
    atomic_ullong accepted, refused;
    atomic_uint active;
} tc__listener;

struct tc_server {
    tc_server_config cfg; /* validated copy, defaults filled in */
    char *listen_text;    /* owned copy of cfg.listen */
    tc_handler handler;
    const tc__mode *mode;
    void *mode_state;

    int lfd;              /* listening socket (listeners[0].fd) */
    tc_addr addr;         /* bound address, real port (listeners[0].addr) */
    tc__listener *listeners; /* every listening socket, in the config's order */
    int nlisteners;       /* 0: none (inetd) */
    struct pollfd *pfd;   /* the blocking modes' poll set: wake-up, mode, listeners */
    int wakefd;           /* eventfd written by tc_server_shutdown() */
    int spare_fd;         /* reserve descriptor for EMFILE on accept */
    _Atomic int64_t accept_paused_until; /* no accept before this (ns): out of
                                          * descriptors even with the spare freed */
    int accept_backoff_ms; /* the next pause (accepting thread only) */

    _Atomic uint64_t last_conn_id; /* ids of connections without a loop (tc_conn_id) */
    int mode_fd;          /* the mode's descriptor for the loop to poll, or -1 */
    int mode_limit;       /* the most connections the mode takes; 0 = any */
    size_t session_room;  /* bytes of each session's room the mode asked for */
    int limit;            /* effective max live connections; 0 = none */

    int stopfd;           /* eventfd, readable from tc_server_shutdown() until the request
                           * is consumed: seen by message loops, also in forked children */
    int in_child;         /* this copy of the server lives in a forked child */

    atomic_int shutdown_req;
    atomic_int stopping;  /* shutdown requested and not yet served out */
    atomic_int serving;
    atomic_int at_limit;  /* the loop waits for a connection to end */
    atomic_int refs;      /* the owner's, plus one per live connection */

    pthread_mutex_t mu;   /* guards live */
    tc__session *live;

    atomic_uint active, peak;
    atomic_ullong accepted, refused, errors;

    const tc__proto *proto;   /* what every channel speaks (cfg.ws), or NULL */
    void *proto_cfg;          /* its settings, as proto->configure copied them */

    char *proxy_trusted_text; /* owned copy of cfg.proxy_trusted */
    tc__cidr *proxy_trusted;  /* the parsed list ... */
    size_t proxy_ntrusted;    /* ... of this many entries */

    struct tc__dgram *dgram;  /* a datagram server's socket, buffer and loops (dgram.c), or NULL */
};

/* Unregister a session, close and free its channel and drop its server
 * reference; wakes the loop if it was waiting at the connection limit. The
 * session's memory stays (the caller frees it: an event loop does so at the
 * end of its turn). */
void tc__server_session_end(tc__session *s);
/* Shut the socket of the live connection with this id (tc_server_close_conn
 * where no loop has it): 0, or TC_ECLOSED when none has it. */
int tc__server_shut_live(tc_server *srv, uint64_t id);
/* tc__server_session_end(), then free the session. */
void tc__server_session_done(tc__session *s);
/* An outbound connection's session (tc_loop_dial) for conn (owned from
 * here, even on failure): the mode's room, then a copy of h for it to run;
 * no PROXY step, dialling set. Not registered yet: 0 or -ENOMEM. */
int tc__server_session_outbound(tc_server *srv, tc_conn *conn, const tc_handler *h,
                                tc__session **out);
/* Register it once its loop takes it: live and counted like an accepted
 * connection (active, peak, the drain, the server's reference), not in accepted. */
void tc__server_session_register(tc__session *s);

/* The handler a session runs (a session made elsewhere, such as a datagram
 * loop's, leaves handler NULL: the server's). */
static inline const tc_handler *tc__session_handler(const tc__session *s)
{
    return s->handler ? s->handler : &s->srv->handler;
}
/* tc__session_run() then tc__server_session_done(): a connection's whole
 * life, for the modes that run it in this process. */
void tc__server_run_session(tc__session *s);
/* Accept one pending connection, apply verify_request, wrap and register it:
 * 0 with *out set, 0 with *out NULL (refused or dropped), -EAGAIN (none), or an error. */
int tc__server_accept(tc_server *srv, tc__session **out);
/* The same from listener i (0 .. srv->nlisteners - 1). */
int tc__server_accept_from(tc_server *srv, int i, tc__session **out);
/* The same for a connection already accepted from listener i (by a ring's
 * accept request): fd is the server's from here on, closed on refusal or
 * failure. 0 with *out set, or 0 with *out NULL. */
int tc__server_take(tc_server *srv, int i, int fd, const tc_addr *peer, tc__session **out);
/* Close every listening socket (a forked child's copy, or destroy). */
void tc__server_close_listeners(tc_server *srv);
/* Whether the connection limit allows another accept, and accepting is not
 * paused for want of descriptors; if not, the next connection to end writes
 * the server's wake-up eventfd (and ends the pause). */
int tc__server_may_accept(tc_server *srv);
/* How many more connections may be accepted now, at most max: 0 when
 * tc__server_may_accept() says no, else what max_conns leaves (max when
 * there is no limit). */
int tc__server_room(tc_server *srv, int max);
/* timeout_ms (-1: none) shortened to the end of an accept pause, so that a
 * loop waiting without the listener wakes up to try again. */
int tc__server_accept_timeout(tc_server *srv, int timeout_ms);
/* Hold and drop a reference on the server: the last drop frees it (after
 * destroy, with daemon connections, that may be in a handler thread). */
void tc__server_ref(tc_server *srv);
void tc__server_release(tc_server *srv);

/* ---- datagram servers (dgram.c) ------------------------------------------ */

/* A datagram server's "get a request" is a receive instead of an accept:
 * server.c asks dgram.c for the next datagram as a request channel, and
 * hands it to the mode like an accepted connection. Pool and event mode
 * serve datagrams with dgram.c's loop (mode_event.c's loops hand over). */

/* After bind: if srv's socket is a datagram one, check the config against
 * it and set srv->dgram. 0 or TC_EBADCONFIG (the field named) or -ENOMEM. */
int tc__dgram_start(tc_server *srv);
void tc__dgram_free(tc_server *srv);
/* Receive one datagram, drop it if over max_frame (counted), apply
 * verify_request, wrap it: 0 with *out set, 0 with *out NULL (dropped or
 * refused), -EAGAIN (none queued), or an error. */
int tc__dgram_receive(tc_server *srv, tc_conn **out);
/* serve_forever for pool and event mode on a datagram socket. */
int tc__dgram_serve(tc_server *srv);
/* From the pool, any thread: room again after refusing a job. */
void tc__dgram_room(tc_server *srv);
/* The datagram counters into out (zero for a stream server). */
void tc__dgram_stats(const tc_server *srv, tc_stats *out);

#endif /* TCPCHAN_INTERNAL_H */
