/* SPDX-License-Identifier: MIT */
/* The child-process helpers of lib/child.c (internal: compiled into this
 * test): a pidfd that turns readable when its child ends, a reap that takes
 * only the pid it names (blocking or not, through signals), and the text
 * that says how a child ended. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

TestSuite(child, .timeout = 10);

/* child.c's one call into the rest of the library (lib/sock.c). */
void tc__close(int fd)
{
    if (fd >= 0)
        (void)close(fd);
}

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* The children below make no Criterion call: an assertion (passed or not)
 * from a forked copy of the test would speak on the test's channel to the runner. */

/* A child that sleeps (5 s: past the tests) unless killed, or its parent dies. */
static pid_t sleeper(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        nap_ms(5000);
        _exit(0);
    }
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    return pid;
}

/* A child that exits with code at once. */
static pid_t exiter(int code)
{
    pid_t pid = fork();
    if (pid == 0)
        _exit(code);
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    return pid;
}

static void expect_text(int how, int status, const char *want)
{
    char buf[TC__CHILD_HOW_LEN];
    const char *got = tc__child_describe(how, status, buf, sizeof buf);
    cr_expect_eq(got, buf);
    cr_expect_str_eq(buf, want);
}

Test(child, exit_status_described)
{
    int status = -1;
    pid_t pid = exiter(3);
    cr_assert_eq(tc__child_reap(pid, 1, &status), TC__CHILD_ENDED);
    expect_text(TC__CHILD_ENDED, status, "exited with status 3");
    cr_expect_not(tc__child_succeeded(TC__CHILD_ENDED, status));

    pid = exiter(0);
    cr_assert_eq(tc__child_reap(pid, 1, &status), TC__CHILD_ENDED);
    expect_text(TC__CHILD_ENDED, status, "exited with status 0");
    cr_expect(tc__child_succeeded(TC__CHILD_ENDED, status));
}

Test(child, signal_described)
{
    int status = -1;
    pid_t pid = sleeper();
    int how = tc__child_reap(pid, 0, &status);
    cr_expect_eq(how, TC__CHILD_RUNNING);
    cr_expect_eq(status, -1, "a running child leaves *status alone");
    expect_text(how, status, "is still running");
    cr_expect_not(tc__child_succeeded(how, 0));

    cr_assert_eq(kill(pid, SIGKILL), 0);
    cr_assert_eq(tc__child_reap(pid, 1, &status), TC__CHILD_ENDED);
    expect_text(TC__CHILD_ENDED, status, "killed by signal 9");
    cr_expect_not(tc__child_succeeded(TC__CHILD_ENDED, status));
}

/* The longest text fits the documented room, and a short buffer is cut, terminated. */
Test(child, text_bounded)
{
    char buf[TC__CHILD_HOW_LEN];
    (void)tc__child_describe(TC__CHILD_GONE, 0, buf, sizeof buf);
    cr_expect_str_eq(buf, "was reaped elsewhere (status unknown)");
    cr_expect_lt(strlen(buf), sizeof buf);
    char small[8];
    memset(small, 'x', sizeof small);
    (void)tc__child_describe(TC__CHILD_GONE, 0, small, sizeof small);
    cr_expect_str_eq(small, "was rea");
}

/* Someone else took the status: the answer says so, and nothing blocks. */
Test(child, reaped_elsewhere)
{
    int status = -1;
    pid_t pid = exiter(4);
    cr_assert_eq(waitpid(pid, NULL, 0), pid);
    cr_expect_eq(tc__child_reap(pid, 0, &status), TC__CHILD_GONE);
    cr_expect_eq(tc__child_reap(pid, 1, &status), TC__CHILD_GONE);
    cr_expect_eq(status, -1);
    cr_expect_not(tc__child_succeeded(TC__CHILD_GONE, 0));

    /* SIGCHLD ignored: the kernel reaps children itself. */
    struct sigaction ign = {.sa_handler = SIG_IGN}, old;
    sigemptyset(&ign.sa_mask);
    cr_assert_eq(sigaction(SIGCHLD, &ign, &old), 0);
    pid = exiter(0);
    cr_expect_eq(tc__child_reap(pid, 1, &status), TC__CHILD_GONE);
    cr_assert_eq(sigaction(SIGCHLD, &old, NULL), 0);
}

/* Only the named pid is reaped: a sibling that ended stays for its owner. */
Test(child, reaps_only_its_pid)
{
    int status = -1;
    pid_t mine = sleeper(), other = exiter(6);
    siginfo_t info;
    /* Wait for the sibling's end without reaping it: it is a zombie now. */
    cr_assert_eq(waitid(P_PID, (id_t)other, &info, WEXITED | WNOWAIT), 0);
    cr_expect_eq(tc__child_reap(mine, 0, &status), TC__CHILD_RUNNING);
    int st = 0;
    cr_expect_eq(waitpid(other, &st, 0), other, "the sibling was reaped by someone");
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 6);
    cr_assert_eq(kill(mine, SIGKILL), 0);
    cr_expect_eq(tc__child_reap(mine, 1, &status), TC__CHILD_ENDED);
}

static void on_usr1(int sig)
{
    (void)sig;
}

/* A blocking reap outlasts signals that interrupt waitpid (no SA_RESTART). */
Test(child, blocking_reap_retries_eintr)
{
    struct sigaction sa = {.sa_handler = on_usr1}, old;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGUSR1, &sa, &old), 0);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        for (int i = 0; i < 3; i++) {
            nap_ms(30);
            (void)kill(parent, SIGUSR1);
        }
        nap_ms(30);
        _exit(5);
    }
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    int status = -1;
    cr_expect_eq(tc__child_reap(pid, 1, &status), TC__CHILD_ENDED);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 5);
    cr_assert_eq(sigaction(SIGUSR1, &old, NULL), 0);
}

/* Where pidfds work, a watch turns readable when its child ends, not before;
 * where they do not, watch and probe report the same error. */
Test(child, watch_readable_at_exit)
{
    int probe = tc__child_probe();
    pid_t pid = sleeper();
    int fd = tc__child_watch(pid);
    if (probe < 0) {
        cr_expect_eq(fd, probe);
        cr_assert_eq(kill(pid, SIGKILL), 0);
        int status;
        cr_expect_eq(tc__child_reap(pid, 1, &status), TC__CHILD_ENDED);
        cr_skip_test("no pidfds here: %s", strerror(-probe));
    }
    cr_assert_geq(fd, 0, "tc__child_watch: %s", strerror(-fd));
    int flags = fcntl(fd, F_GETFD);
    cr_expect(flags >= 0 && (flags & FD_CLOEXEC), "a watch is close-on-exec");
    struct pollfd p = {.fd = fd, .events = POLLIN};
    cr_expect_eq(poll(&p, 1, 50), 0, "readable while the child runs");
    cr_assert_eq(kill(pid, SIGKILL), 0);
    cr_expect_eq(poll(&p, 1, 5000), 1, "not readable after the child ended");
    int status = -1;
    cr_expect_eq(tc__child_reap(pid, 0, &status), TC__CHILD_ENDED,
                 "readable, yet not reapable at once");
    expect_text(TC__CHILD_ENDED, status, "killed by signal 9");
    tc__close(fd);
}
