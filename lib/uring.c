/* SPDX-License-Identifier: MIT */
/* An io_uring, through the raw system calls (no liburing: nothing new to
 * link or to ship): setup with the cheapest task-work mode the kernel
 * offers, the submission and completion queues, one provided buffer ring
 * the kernel picks receive buffers from. A leaf: it knows no loop. */
#include <errno.h>
#include <linux/io_uring.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

/* The longest wait for a closed ring's notice to this thread. */
#define EXIT_NOTICE_MS 100

/* A loop idle this long hands the pages of the receive buffers it used
 * back to the kernel (see tc__uring_wait). */
#define TRIM_IDLE_MS 100

struct tc__uring {
    int fd;
    unsigned enter_flags; /* IORING_ENTER_REGISTERED_RING once the fd is registered */
    int ring_index;       /* what enter is given instead of fd then */
    unsigned features;
    /* submission queue */
    _Atomic unsigned *sq_head, *sq_tail;
    unsigned sq_mask, sq_entries, sq_local_tail, sq_flushed;
    struct io_uring_sqe *sqes;
    /* completion queue */
    _Atomic unsigned *cq_head, *cq_tail;
    unsigned cq_mask;
    struct io_uring_cqe *cqes;
    void *sq_map, *cq_map;
    size_t sq_map_len, cq_map_len, sqes_len;
    /* the provided buffer ring (group 0) and its buffers */
    struct io_uring_buf_ring *br;
    size_t br_len;
    unsigned char *bufs;
    size_t bufs_len, buf_size;
    unsigned nbufs;
    uint16_t br_tail;
    /* Buffers handed back since the last trim and not taken since: in the
     * ring, their first pages (at least) resident. A bit each. */
    uint64_t *touched;
    unsigned ntouched;
    /* The kernel fills buffers only inside our waits (DEFER_TASKRUN), so
     * one in the ring can be trimmed between them. */
    unsigned char can_trim;
};

static int sys_setup(unsigned entries, struct io_uring_params *p)
{
    long r = syscall(__NR_io_uring_setup, entries, p);
    return r < 0 ? -errno : (int)r;
}

static int sys_enter(tc__uring *u, unsigned submit, unsigned min, unsigned flags, void *arg,
                     size_t argsz)
{
    int fd = u->enter_flags ? u->ring_index : u->fd;
    long r = syscall(__NR_io_uring_enter, fd, submit, min, flags | u->enter_flags, arg, argsz);
    return r < 0 ? -errno : (int)r;
}

static int sys_register(int fd, unsigned op, void *arg, unsigned n)
{
    long r = syscall(__NR_io_uring_register, fd, op, arg, n);
    return r < 0 ? -errno : (int)r;
}

/* Set up a ring of entries with flags: the fd, or a negated errno. */
static int setup(unsigned entries, unsigned flags, struct io_uring_params *p)
{
    memset(p, 0, sizeof *p);
    p->flags = flags | IORING_SETUP_CQSIZE;
    p->cq_entries = entries * 4; /* multishot receives post many completions per submission */
    return sys_setup(entries, p);
}

/* The task-work modes, cheapest first: completions run when the loop
 * enters to wait (6.1), or at least without interrupting it (5.19). */
static const unsigned setup_modes[] = {
    IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
    IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN,
    0,
};

static atomic_int probed;    /* the probe ran ... */
static atomic_int probe_err; /* ... and found this */

/* A ring, the operations the loop needs (a provided buffer ring: 5.19;
 * multishot receive: 6.0) and the extended wait argument. */
static void *probe_main(void *arg)
{
    int *err = arg;
    tc__uring *u;
    *err = tc__uring_create(&u, 4, 2, 4096, 0);
    if (*err == 0) {
        if (!(u->features & IORING_FEAT_EXT_ARG) || !(u->features & IORING_FEAT_NODROP))
            *err = -ENOSYS;
        tc__uring_destroy(u);
    }
    return NULL;
}

int tc__uring_probe(void)
{
    if (atomic_load(&probed))
        return atomic_load(&probe_err);
    /* In a thread of its own: closing a ring interrupts, a little later,
     * the blocking call of every thread that touched it (EINTR), and the
     * caller's thread is the application's. */
    int err = -EAGAIN;
    pthread_t t;
    if (pthread_create(&t, NULL, probe_main, &err) != 0)
        return -EAGAIN; /* not cached: no verdict */
    pthread_join(t, NULL);
    atomic_store(&probe_err, err);
    atomic_store(&probed, 1);
    return err;
}

void tc__uring_absorb_exit(void)
{
    /* The ring's exit work notifies each thread that used it (task work
     * with TWA_SIGNAL), about 20 ms after the close: the thread's next
     * interruptible wait ends with EINTR. Take that here, in a wait of our
     * own, not in the application's next call. Bounded, for a kernel that
     * sends none. */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        return;
    struct epoll_event ev;
    int64_t end = tc__now_ns() + (int64_t)EXIT_NOTICE_MS * TC_NS_PER_MS;
    for (;;) {
        int left = tc__ms_until(end);
        if (left <= 0 || epoll_wait(ep, &ev, 1, left) != 0)
            break; /* timed out, or interrupted: the notice came */
    }
    tc__close(ep);
}

static void unmap(tc__uring *u)
{
    if (u->sqes)
        munmap(u->sqes, u->sqes_len);
    if (u->cq_map && u->cq_map != u->sq_map)
        munmap(u->cq_map, u->cq_map_len);
    if (u->sq_map)
        munmap(u->sq_map, u->sq_map_len);
    if (u->br)
        munmap(u->br, u->br_len);
    if (u->bufs)
        munmap(u->bufs, u->bufs_len);
    free(u->touched);
}

static void *map(size_t len, int fd, off_t off)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, off);
    // cppcheck-suppress memleak ; the mapping is returned (unmap() releases it)
    return p == MAP_FAILED ? NULL : p;
}

/* Anonymous memory: pages become resident only once written. */
static void *anon(size_t len)
{
    // cppcheck-suppress invalidFunctionArg ; fd -1 is what MAP_ANONYMOUS asks for
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    // cppcheck-suppress memleak ; the mapping is returned (unmap() releases it)
    return p == MAP_FAILED ? NULL : p;
}

/* Put buffer bid at the ring's tail: the kernel takes it after those ahead. */
static void give(tc__uring *u, int bid)
{
    struct io_uring_buf *b = &u->br->bufs[u->br_tail & (u->nbufs - 1)];
    b->addr = (uint64_t)(uintptr_t)(u->bufs + (size_t)bid * u->buf_size);
    b->len = (uint32_t)u->buf_size;
    b->bid = (uint16_t)bid;
    u->br_tail++;
    /* The tail shares its place with the first entry's resv field. */
    atomic_store_explicit((_Atomic uint16_t *)(void *)&u->br->tail, u->br_tail,
                          memory_order_release);
}

int tc__uring_create(tc__uring **out, unsigned entries, unsigned nbufs, size_t buf_size,
                     int disabled)
{
    if (nbufs == 0 || (nbufs & (nbufs - 1)) || nbufs > 32768)
        return -EINVAL;
    tc__uring *u = calloc(1, sizeof *u);
    if (!u)
        return -ENOMEM;
    struct io_uring_params p;
    int fd = -EINVAL;
    for (size_t i = 0; i < sizeof setup_modes / sizeof setup_modes[0]; i++) {
        fd = setup(entries, setup_modes[i] | (disabled ? IORING_SETUP_R_DISABLED : 0), &p);
        if (fd != -EINVAL)
            break; /* an older kernel refuses a flag it does not know with EINVAL */
    }
    if (fd < 0) {
        free(u);
        return fd;
    }
    u->can_trim = (p.flags & IORING_SETUP_DEFER_TASKRUN) != 0;
    u->fd = fd;
    u->features = p.features;
    u->sq_map_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    u->cq_map_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        if (u->cq_map_len > u->sq_map_len)
            u->sq_map_len = u->cq_map_len;
        u->cq_map_len = u->sq_map_len;
    }
    u->sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
    int rc = -ENOMEM;
    u->sq_map = map(u->sq_map_len, fd, IORING_OFF_SQ_RING);
    if (u->sq_map)
        u->cq_map = (p.features & IORING_FEAT_SINGLE_MMAP)
                        ? u->sq_map
                        : map(u->cq_map_len, fd, IORING_OFF_CQ_RING);
    if (u->cq_map)
        u->sqes = map(u->sqes_len, fd, IORING_OFF_SQES);
    if (u->sqes) {
        unsigned char *sq = u->sq_map, *cq = u->cq_map;
        u->sq_head = (_Atomic unsigned *)(void *)(sq + p.sq_off.head);
        u->sq_tail = (_Atomic unsigned *)(void *)(sq + p.sq_off.tail);
        u->sq_mask = *(unsigned *)(void *)(sq + p.sq_off.ring_mask);
        u->sq_entries = p.sq_entries;
        unsigned *array = (unsigned *)(void *)(sq + p.sq_off.array);
        for (unsigned i = 0; i < p.sq_entries; i++)
            array[i] = i; /* each slot names the entry of the same index, once */
        u->sq_local_tail = u->sq_flushed = atomic_load_explicit(u->sq_tail, memory_order_relaxed);
        u->cq_head = (_Atomic unsigned *)(void *)(cq + p.cq_off.head);
        u->cq_tail = (_Atomic unsigned *)(void *)(cq + p.cq_off.tail);
        u->cq_mask = *(unsigned *)(void *)(cq + p.cq_off.ring_mask);
        u->cqes = (struct io_uring_cqe *)(void *)(cq + p.cq_off.cqes);
        rc = 0;
    }
    /* The provided buffers: anonymous memory the kernel writes into (pages
     * are only resident once used). */
    if (rc == 0) {
        u->nbufs = nbufs;
        u->buf_size = buf_size;
        u->br_len = nbufs * sizeof(struct io_uring_buf);
        u->bufs_len = nbufs * buf_size;
        u->br = anon(u->br_len);
        u->bufs = anon(u->bufs_len);
        u->touched = calloc((nbufs + 63) / 64, sizeof *u->touched);
        if (!u->br || !u->bufs || !u->touched)
            rc = -ENOMEM;
    }
    if (rc == 0) {
        struct io_uring_buf_reg reg = {.ring_addr = (uint64_t)(uintptr_t)u->br,
                                       .ring_entries = nbufs,
                                       .bgid = 0};
        rc = sys_register(fd, IORING_REGISTER_PBUF_RING, &reg, 1);
    }
    if (rc < 0) {
        unmap(u);
        tc__close(fd);
        free(u);
        return rc;
    }
    for (unsigned i = 0; i < nbufs; i++)
        give(u, (int)i);
    *out = u;
    return 0;
}

int tc__uring_enable(tc__uring *u)
{
    return sys_register(u->fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
}

void tc__uring_own(tc__uring *u, int on)
{
    /* Entering by a registered index spares the kernel a descriptor lookup
     * on every wait. The index is the calling thread's, and holds the ring
     * until it is unregistered (closing the descriptor would not free it). */
    if (on && !u->enter_flags) {
        struct io_uring_rsrc_update up = {.offset = -1U, .data = (uint64_t)u->fd};
        if (sys_register(u->fd, IORING_REGISTER_RING_FDS, &up, 1) == 1) {
            u->ring_index = (int)up.offset;
            u->enter_flags = IORING_ENTER_REGISTERED_RING;
        }
    } else if (!on && u->enter_flags) {
        struct io_uring_rsrc_update up = {.offset = (unsigned)u->ring_index};
        (void)sys_register(u->fd, IORING_UNREGISTER_RING_FDS, &up, 1);
        u->enter_flags = 0;
    }
}

void tc__uring_destroy(tc__uring *u)
{
    if (!u)
        return;
    unmap(u);
    tc__close(u->fd); /* cancels what is in flight (and drops its hold on sockets) */
    free(u);
}

/* Hand the queued entries to the kernel's view of the queue. */
static unsigned flush_sq(tc__uring *u)
{
    if (u->sq_local_tail != u->sq_flushed) {
        atomic_store_explicit(u->sq_tail, u->sq_local_tail, memory_order_release);
        u->sq_flushed = u->sq_local_tail;
    }
    return u->sq_local_tail - atomic_load_explicit(u->sq_head, memory_order_acquire);
}

int tc__uring_pending(const tc__uring *u)
{
    return u->sq_local_tail != atomic_load_explicit(u->sq_head, memory_order_acquire);
}

int tc__uring_submit(tc__uring *u)
{
    unsigned n = flush_sq(u);
    if (n == 0)
        return 0;
    int rc;
    do
        rc = sys_enter(u, n, 0, 0, NULL, 0);
    while (rc == -EINTR);
    return rc < 0 ? rc : 0;
}

struct io_uring_sqe *tc__uring_sqe(tc__uring *u)
{
    unsigned head = atomic_load_explicit(u->sq_head, memory_order_acquire);
    if (u->sq_local_tail - head >= u->sq_entries) {
        /* Full: what is queued goes in now. */
        if (tc__uring_submit(u) < 0)
            return NULL;
        head = atomic_load_explicit(u->sq_head, memory_order_acquire);
        if (u->sq_local_tail - head >= u->sq_entries)
            return NULL;
    }
    struct io_uring_sqe *sqe = &u->sqes[u->sq_local_tail & u->sq_mask];
    u->sq_local_tail++;
    memset(sqe, 0, sizeof *sqe);
    return sqe;
}

/* Give the pages of the buffers used since the last trim (all in the ring
 * now) back to the kernel: a loop whose connections went quiet holds no
 * receive memory, as an idle connection holds none. */
static void trim(tc__uring *u)
{
    unsigned words = (u->nbufs + 63) / 64;
    for (unsigned w = 0; w < words; w++) {
        while (u->touched[w]) {
            /* one call per run of neighbouring buffers */
            unsigned first = (unsigned)__builtin_ctzll(u->touched[w]);
            unsigned end = first;
            while (end < 64 && (u->touched[w] >> end & 1))
                end++;
            unsigned char *at = u->bufs + ((size_t)w * 64 + first) * u->buf_size;
            (void)madvise(at, (size_t)(end - first) * u->buf_size, MADV_DONTNEED);
            u->touched[w] = end == 64 ? 0 : u->touched[w] & ~(((uint64_t)1 << end) - 1);
        }
    }
    u->ntouched = 0;
}

/* One io_uring_enter that submits n entries and waits for min completions,
 * at most timeout_ms (< 0: no limit). */
static int enter_wait(tc__uring *u, unsigned n, unsigned min, int timeout_ms)
{
    struct __kernel_timespec ts;
    struct io_uring_getevents_arg arg = {0};
    if (min && timeout_ms >= 0) {
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
        arg.ts = (uint64_t)(uintptr_t)&ts;
    }
    int rc = sys_enter(u, n, min, IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg, sizeof arg);
    if (rc == -ETIME || rc == -EINTR || rc == -EBUSY)
        return 0; /* EBUSY: the completion queue is full; it is read now */
    return rc < 0 ? rc : 0;
}

static int cq_ready(const tc__uring *u)
{
    return atomic_load_explicit(u->cq_tail, memory_order_acquire) !=
           atomic_load_explicit(u->cq_head, memory_order_relaxed);
}

int tc__uring_wait(tc__uring *u, int timeout_ms)
{
    unsigned n = flush_sq(u);
    if (cq_ready(u) || timeout_ms == 0) {
        /* Only submit, and (task work deferred to this call) run what completed. */
        return enter_wait(u, n, 0, 0);
    }
    if (u->ntouched && u->can_trim && (timeout_ms < 0 || timeout_ms > TRIM_IDLE_MS)) {
        /* A loop that stays idle a while lets the buffers' pages go. Only
         * here, when it would sleep anyway: a busy loop never pays for it. */
        int rc = enter_wait(u, n, 1, TRIM_IDLE_MS);
        if (rc < 0 || cq_ready(u))
            return rc;
        trim(u);
        n = 0;
        if (timeout_ms > 0)
            timeout_ms -= TRIM_IDLE_MS;
    }
    return enter_wait(u, n, 1, timeout_ms);
}

struct io_uring_cqe *tc__uring_cqe(tc__uring *u)
{
    unsigned head = atomic_load_explicit(u->cq_head, memory_order_relaxed);
    if (head == atomic_load_explicit(u->cq_tail, memory_order_acquire))
        return NULL;
    return &u->cqes[head & u->cq_mask];
}

void tc__uring_cqe_seen(tc__uring *u)
{
    unsigned head = atomic_load_explicit(u->cq_head, memory_order_relaxed);
    atomic_store_explicit(u->cq_head, head + 1, memory_order_release);
}

unsigned char *tc__uring_buf(tc__uring *u, int bid)
{
    uint64_t bit = (uint64_t)1 << (bid & 63);
    if (u->touched[bid >> 6] & bit) { /* out of the ring again: not to be trimmed */
        u->touched[bid >> 6] &= ~bit;
        u->ntouched--;
    }
    return u->bufs + (size_t)bid * u->buf_size;
}

unsigned char *tc__uring_bufs(tc__uring *u)
{
    return u->bufs;
}

void tc__uring_buf_give(tc__uring *u, int bid)
{
    uint64_t bit = (uint64_t)1 << (bid & 63);
    if (!(u->touched[bid >> 6] & bit)) {
        u->touched[bid >> 6] |= bit;
        u->ntouched++;
    }
    give(u, bid);
}
