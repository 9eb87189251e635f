/* SPDX-License-Identifier: MIT */
/* The allocation hook of alloc_hook.h: malloc, calloc, realloc and strdup
 * defined in the test executable take precedence over libc's for the whole
 * process, libtcpchan included; each asks the hook, then calls the real one. */
#include "alloc_hook.h"

#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define AH_SANITIZED 1
#endif
#if __has_feature(address_sanitizer)
#define AH_LSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define AH_SANITIZED 1
#endif
#if defined(__SANITIZE_ADDRESS__)
#define AH_LSAN 1
#endif

#ifdef AH_SANITIZED
/* The sanitizer's allocator (its malloc is a weak alias of these). */
void *__interceptor_malloc(size_t n);
void *__interceptor_calloc(size_t k, size_t n);
void *__interceptor_realloc(void *p, size_t n);
#define REAL_MALLOC __interceptor_malloc
#define REAL_CALLOC __interceptor_calloc
#define REAL_REALLOC __interceptor_realloc
#else
void *__libc_malloc(size_t n);
void *__libc_calloc(size_t k, size_t n);
void *__libc_realloc(void *p, size_t n);
#define REAL_MALLOC __libc_malloc
#define REAL_CALLOC __libc_calloc
#define REAL_REALLOC __libc_realloc
#endif

#ifdef AH_LSAN
#include <sanitizer/lsan_interface.h>
#endif

/* The allocator is called while the sanitizer's runtime starts, before it
 * can track anything: the hook itself must not be instrumented (TSan would
 * record a function entry into a thread state that does not exist yet). */
#if defined(__has_attribute)
#if __has_attribute(disable_sanitizer_instrumentation) && defined(AH_SANITIZED)
#define AH_RAW                                                                                     \
    __attribute__((disable_sanitizer_instrumentation, no_sanitize("address", "thread")))
#endif
#endif
#ifndef AH_RAW
#define AH_RAW
#endif

struct ah_state {
    atomic_int armed;
    atomic_long countdown; /* the call that takes it from 1 to 0 fails ... */
    atomic_int sticky;     /* ... and, if set, every one after it */
    atomic_int scope;
    atomic_int fired;
    atomic_long counted;
    atomic_int tracking;
    atomic_size_t largest;
};

/* NULL until ah_init(): until then every call passes straight through. */
static struct ah_state *_Atomic ah;
static _Thread_local int tl_armer; /* this thread armed the countdown */

#ifdef AH_SANITIZED
/* Whether the sanitizer's runtime is starting a thread: it asks
 * pthread_getattr_np for the new thread's stack before the thread runs
 * anything, and cannot survive an allocation failing there. (backtrace()
 * was called once by ah_init(), so it does not allocate here.) */
AH_RAW static int ah_runtime_internal(void)
{
    void *bt[12];
    int k = backtrace(bt, 12);
    for (int i = 2; i < k; i++) {
        Dl_info di;
        if (dladdr(bt[i], &di) && di.dli_sname && strstr(di.dli_sname, "pthread_getattr_np"))
            return 1;
    }
    return 0;
}
#else
#define ah_runtime_internal() 0
#endif

/* 1 if this request must fail. */
AH_RAW static int ah_check(size_t n)
{
    struct ah_state *s = atomic_load_explicit(&ah, memory_order_acquire);
    if (!s)
        return 0;
    if (atomic_load_explicit(&s->tracking, memory_order_relaxed)) {
        size_t m = atomic_load_explicit(&s->largest, memory_order_relaxed);
        while (n > m && !atomic_compare_exchange_weak(&s->largest, &m, n))
            ;
    }
    if (!atomic_load(&s->armed))
        return 0;
    int mine = tl_armer;
    if ((atomic_load(&s->scope) == AH_THIS_THREAD) != (mine != 0))
        return 0;
    if (ah_runtime_internal())
        return 0;
    atomic_fetch_add(&s->counted, 1);
    long k = atomic_fetch_sub(&s->countdown, 1);
    if (k != 1 && !(k < 1 && atomic_load(&s->sticky)))
        return 0;
    atomic_fetch_add(&s->fired, 1);
    return 1;
}

AH_RAW void *malloc(size_t n)
{
    if (ah_check(n)) {
        errno = ENOMEM;
        return NULL;
    }
    return REAL_MALLOC(n);
}

AH_RAW void *calloc(size_t k, size_t n)
{
    size_t total;
    if (__builtin_mul_overflow(k, n, &total))
        total = SIZE_MAX;
    if (ah_check(total)) {
        errno = ENOMEM;
        return NULL;
    }
    return REAL_CALLOC(k, n);
}

AH_RAW void *realloc(void *p, size_t n)
{
    if (ah_check(n)) {
        errno = ENOMEM;
        return NULL;
    }
    return REAL_REALLOC(p, n);
}

AH_RAW char *strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    if (ah_check(n)) {
        errno = ENOMEM;
        return NULL;
    }
    char *p = REAL_MALLOC(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

void ah_init(void)
{
#ifdef AH_SANITIZED
    void *warm[2];
    (void)backtrace(warm, 2); /* its first call loads the unwinder, allocating */
#endif
    struct ah_state *s = atomic_load(&ah);
    if (!s) {
        void *p = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return;
        s = p;
    }
    atomic_store(&s->armed, 0);
    atomic_store(&s->countdown, 0);
    atomic_store(&s->sticky, 0);
    atomic_store(&s->scope, 0);
    atomic_store(&s->fired, 0);
    atomic_store(&s->counted, 0);
    atomic_store(&s->tracking, 0);
    atomic_store(&s->largest, 0);
    atomic_store_explicit(&ah, s, memory_order_release);
}

static void arm(long n, enum ah_scope scope, int sticky)
{
    struct ah_state *s = atomic_load(&ah);
    if (!s)
        return;
    tl_armer = 1;
    atomic_store(&s->fired, 0);
    atomic_store(&s->counted, 0);
    atomic_store(&s->scope, (int)scope);
    atomic_store(&s->countdown, n);
    atomic_store(&s->sticky, sticky);
    atomic_store(&s->armed, 1);
}

void ah_fail_nth(long n, enum ah_scope scope)
{
    arm(n, scope, 0);
}

void ah_fail_from(long n, enum ah_scope scope)
{
    arm(n, scope, 1);
}

int ah_disarm(void)
{
    struct ah_state *s = atomic_load(&ah);
    if (!s)
        return 0;
    atomic_store(&s->armed, 0);
    tl_armer = 0;
    return atomic_load(&s->fired);
}

long ah_counted(void)
{
    struct ah_state *s = atomic_load(&ah);
    return s ? atomic_load(&s->counted) : 0;
}

void ah_track_start(void)
{
    struct ah_state *s = atomic_load(&ah);
    if (!s)
        return;
    atomic_store(&s->largest, 0);
    atomic_store(&s->tracking, 1);
}

size_t ah_track_peek(void)
{
    struct ah_state *s = atomic_load(&ah);
    return s ? atomic_load(&s->largest) : 0;
}

size_t ah_track_stop(void)
{
    struct ah_state *s = atomic_load(&ah);
    if (!s)
        return 0;
    atomic_store(&s->tracking, 0);
    return atomic_load(&s->largest);
}

int ah_have_lsan(void)
{
#ifdef AH_LSAN
    return 1;
#else
    return 0;
#endif
}

int ah_leak_check(void)
{
#ifdef AH_LSAN
    return __lsan_do_recoverable_leak_check();
#else
    return 0;
#endif
}
