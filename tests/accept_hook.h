/* SPDX-License-Identifier: MIT */
/* An accept hook for the test executables that link accept_hook.c: it
 * interposes accept4 (the library's only accept) to fail the next calls with
 * a chosen errno, as a full system file table would (ENFILE), and counts the
 * calls that failed for want of descriptors, injected or real. */
#ifndef TCPCHAN_TESTS_ACCEPT_HOOK_H
#define TCPCHAN_TESTS_ACCEPT_HOOK_H

/* Reset the counters and disarm. Call once per test, before anything else here. */
void acc_init(void);
/* The next n calls of accept4 fail with err (without calling the real one);
 * n < 0: every call until acc_disarm(). */
void acc_fail(int err, long n);
void acc_disarm(void);
/* Calls so far that failed with EMFILE or ENFILE, injected or not. */
long acc_out_of_fds(void);
/* Wait until acc_out_of_fds() >= n: 0, or -1 after ms milliseconds. */
int acc_wait_out_of_fds(long n, int ms);

#endif /* TCPCHAN_TESTS_ACCEPT_HOOK_H */
