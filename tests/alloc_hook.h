/* SPDX-License-Identifier: MIT */
/* An allocation hook for the test executables that link alloc_hook.c: it
 * interposes malloc, calloc, realloc and strdup (the library's allocators)
 * to fail the Nth allocation from now, and to record the largest request.
 * Disarmed it passes every call through to the real allocator (glibc's, or
 * the sanitizer's, so that ASan and LeakSanitizer still see every block). */
#ifndef TCPCHAN_TESTS_ALLOC_HOOK_H
#define TCPCHAN_TESTS_ALLOC_HOOK_H

#include <stddef.h>

/* Which threads an armed countdown counts. */
enum ah_scope {
    AH_THIS_THREAD = 1, /* only the thread that armed it (a library call it makes) */
    AH_OTHER_THREADS = 2 /* every thread but the one that armed it (a server's) */
};

/* Set up the hook's state in memory shared with the processes this one forks
 * (a forking server's children report there too). Call once per test, before
 * anything else here; it resets every counter. */
void ah_init(void);
/* Arm: the nth counted allocation from now (n >= 1) fails with ENOMEM; the
 * ones before it and after it succeed. */
void ah_fail_nth(long n, enum ah_scope scope);
/* Arm: the nth counted allocation from now and every one after it fail
 * (memory that stays exhausted), until ah_disarm(). */
void ah_fail_from(long n, enum ah_scope scope);
/* Disarm; returns how many allocations failed since arming (with
 * ah_fail_nth(), 0 or 1). */
int ah_disarm(void);
/* Allocations counted since the last ah_fail_nth(). */
long ah_counted(void);
/* Record the largest single request, in every thread and forked child, from
 * now until ah_track_stop(), which returns it. */
void ah_track_start(void);
size_t ah_track_stop(void);
/* The largest request seen so far by an ongoing track. */
size_t ah_track_peek(void);
/* Whether this build can check for leaks (LeakSanitizer), and the check:
 * 0 when no block is leaked so far. Without LeakSanitizer: 0. */
int ah_have_lsan(void);
int ah_leak_check(void);

#endif /* TCPCHAN_TESTS_ALLOC_HOOK_H */
