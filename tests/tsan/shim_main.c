/* SPDX-License-Identifier: MIT */
/* The runner of the TSan job's Criterion stand-in (criterion/criterion.h). */
#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "criterion/criterion.h"

#define MAX_TESTS 512
#define DEFAULT_TIMEOUT 60.0

static struct shim_test tests[MAX_TESTS];
static int ntests, child_failed;
static struct {
    const char *name;
    const struct shim_opts *opts;
} suites[64];
static int nsuites;

void shim_register_suite(const char *name, const struct shim_opts *opts)
{
    if (nsuites < 64) {
        suites[nsuites].name = name;
        suites[nsuites++].opts = opts;
    }
}

static const struct shim_opts *suite_opts(const struct shim_test *t)
{
    for (int i = 0; i < nsuites; i++)
        if (!strcmp(suites[i].name, t->suite))
            return suites[i].opts;
    return NULL;
}

void shim_register(const struct shim_test *t)
{
    if (ntests < MAX_TESTS)
        tests[ntests++] = *t;
}

void shim_fail(const char *file, int line, const char *what, int fatal)
{
    fprintf(stderr, "  %s:%d: %s failed: %s\n", file, line, fatal ? "assert" : "expect", what);
    child_failed = 1;
    if (fatal)
        _exit(1);
}

void shim_skip(void)
{
    _exit(77);
}

static void *nothing(void *arg)
{
    return arg;
}

static double opt_timeout(const struct shim_test *t)
{
    double k = getenv("TC_TEST_TIMEOUT_MULT") ? atof(getenv("TC_TEST_TIMEOUT_MULT")) : 1.0;
    const struct shim_opts *so = suite_opts(t);
    double s = t->opts->timeout > 0 ? t->opts->timeout
               : so && so->timeout > 0 ? so->timeout
                                       : DEFAULT_TIMEOUT;
    return s * (k > 0 ? k : 1.0);
}

/* One run in a child: 0 pass, 1 fail, 2 skip, 3 crash or timeout. */
static int run_one(const struct shim_test *t, void *param)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return 3;
    if (pid == 0) {
        alarm((unsigned)(opt_timeout(t) + 0.999));
        /* TSan starts a helper thread with the first thread: start it now,
         * so that tests counting threads see it in their baseline. */
        pthread_t th;
        if (pthread_create(&th, NULL, nothing, NULL) == 0)
            pthread_join(th, NULL);
        const struct shim_opts *so = suite_opts(t);
        void (*init)(void) = t->opts->init ? t->opts->init : so ? so->init : NULL;
        void (*fini)(void) = t->opts->fini ? t->opts->fini : so ? so->fini : NULL;
        if (init)
            init();
        t->fn(param);
        if (fini)
            fini();
        fflush(NULL);
        _exit(child_failed);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status))
        return WEXITSTATUS(status) == 0 ? 0 : WEXITSTATUS(status) == 77 ? 2 : 1;
    fprintf(stderr, "  killed by signal %d%s\n", WTERMSIG(status),
            WTERMSIG(status) == SIGALRM ? " (timeout)" : "");
    return 3;
}

int main(int argc, char **argv)
{
    const char *filter = argc > 1 ? argv[1] : NULL;
    int counts[4] = {0};
    static const char *const words[] = {"PASS", "FAIL", "SKIP", "CRASH"};
    for (int i = 0; i < ntests; i++) {
        const struct shim_test *t = &tests[i];
        char full[256];
        snprintf(full, sizeof full, "%s::%s", t->suite, t->name);
        if (filter && !strstr(full, filter))
            continue;
        if (t->opts->disabled || (suite_opts(t) && suite_opts(t)->disabled))
            continue;
        struct shim_params p = t->params ? t->params() : (struct shim_params){0, NULL, 1};
        for (size_t k = 0; k < p.count; k++) {
            int r = run_one(t, p.ptr ? (char *)p.ptr + k * p.size : NULL);
            counts[r]++;
            fprintf(stderr, "[%s] %s #%zu\n", words[r], full, k);
        }
    }
    printf("%d passed, %d failed, %d skipped\n", counts[0], counts[1] + counts[3], counts[2]);
    return counts[1] + counts[3] ? 1 : 0;
}
