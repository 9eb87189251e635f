/* SPDX-License-Identifier: MIT */
/* A small stand-in for Criterion's test macros, used only for the TSan job:
 * Criterion 2.4 cannot start under ThreadSanitizer (its inheritable arena
 * collides with TSan's memory layout). Each test runs in a forked child of a
 * single-threaded runner, bounded by its .timeout; the runner prints
 * "N passed, N failed, N skipped" and exits non-zero on any failure. */
#ifndef TC_TSAN_CRITERION_H
#define TC_TSAN_CRITERION_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TC_TEST_SHIM 1

struct shim_opts {
    int unused;
    double timeout;
    void (*init)(void);
    void (*fini)(void);
    int disabled;
};
struct shim_params {
    size_t size;
    void *ptr;
    size_t count;
};
struct shim_test {
    const char *suite, *name;
    void (*fn)(void *param);
    struct shim_params (*params)(void);
    const struct shim_opts *opts;
};

void shim_register(const struct shim_test *t);
void shim_register_suite(const char *name, const struct shim_opts *opts);
void shim_fail(const char *file, int line, const char *what, int fatal);
void shim_skip(void);

#define SHIM_CHECK(fatal, cond, text)                                                              \
    do {                                                                                           \
        if (!(cond))                                                                               \
            shim_fail(__FILE__, __LINE__, text, fatal);                                            \
    } while (0)
#define SHIM_CMP(fatal, a, op, b) SHIM_CHECK(fatal, (a)op(b), #a " " #op " " #b)

#define cr_assert(c, ...) SHIM_CHECK(1, (c), #c)
#define cr_expect(c, ...) SHIM_CHECK(0, (c), #c)
#define cr_assert_not(c, ...) SHIM_CHECK(1, !(c), "!(" #c ")")
#define cr_expect_not(c, ...) SHIM_CHECK(0, !(c), "!(" #c ")")
#define cr_assert_null(c, ...) SHIM_CHECK(1, (c) == NULL, #c " == NULL")
#define cr_assert_not_null(c, ...) SHIM_CHECK(1, (c) != NULL, #c " != NULL")
#define cr_assert_eq(a, b, ...) SHIM_CMP(1, a, ==, b)
#define cr_expect_eq(a, b, ...) SHIM_CMP(0, a, ==, b)
#define cr_assert_neq(a, b, ...) SHIM_CMP(1, a, !=, b)
#define cr_expect_neq(a, b, ...) SHIM_CMP(0, a, !=, b)
#define cr_assert_lt(a, b, ...) SHIM_CMP(1, a, <, b)
#define cr_expect_lt(a, b, ...) SHIM_CMP(0, a, <, b)
#define cr_assert_leq(a, b, ...) SHIM_CMP(1, a, <=, b)
#define cr_expect_leq(a, b, ...) SHIM_CMP(0, a, <=, b)
#define cr_assert_gt(a, b, ...) SHIM_CMP(1, a, >, b)
#define cr_expect_gt(a, b, ...) SHIM_CMP(0, a, >, b)
#define cr_assert_geq(a, b, ...) SHIM_CMP(1, a, >=, b)
#define cr_expect_geq(a, b, ...) SHIM_CMP(0, a, >=, b)
#define cr_assert_str_eq(a, b, ...) SHIM_CHECK(1, strcmp((a), (b)) == 0, #a " == " #b)
#define cr_assert_fail(...) shim_fail(__FILE__, __LINE__, "cr_assert_fail", 1)
#define cr_skip_test(...) shim_skip()
#define cr_skip(...) shim_skip()
#define cr_log_info(...) (fprintf(stderr, __VA_ARGS__), fputc('\n', stderr))
#define cr_log_warn(...) (fprintf(stderr, __VA_ARGS__), fputc('\n', stderr))

#define TestSuite(S, ...)                                                                          \
    static const struct shim_opts shim_suite_##S;                                                  \
    __attribute__((constructor)) static void shim_suite_reg_##S(void)                              \
    {                                                                                              \
        shim_register_suite(#S, &shim_suite_##S);                                                  \
    }                                                                                              \
    static const struct shim_opts shim_suite_##S = {0, __VA_ARGS__}

#define SHIM_DEFINE(S, N, PARAMS, ...)                                                             \
    static const struct shim_opts S##_##N##_opts = {0, __VA_ARGS__};                               \
    static void S##_##N##_run(void *param);                                                        \
    __attribute__((constructor)) static void S##_##N##_reg(void)                                   \
    {                                                                                              \
        struct shim_test t = {#S, #N, S##_##N##_run, PARAMS, &S##_##N##_opts};                     \
        shim_register(&t);                                                                         \
    }

#define Test(S, N, ...)                                                                            \
    static void S##_##N##_impl(void);                                                              \
    SHIM_DEFINE(S, N, NULL, __VA_ARGS__)                                                           \
    static void S##_##N##_run(void *param)                                                         \
    {                                                                                              \
        (void)param;                                                                               \
        S##_##N##_impl();                                                                          \
    }                                                                                              \
    static void S##_##N##_impl(void)

#define ParameterizedTestParameters(S, N) static struct shim_params S##_##N##_params(void)
#define cr_make_param_array(T, arr, n, ...) ((struct shim_params){sizeof(T), (void *)(arr), (n)})
#define ParameterizedTest(P, S, N, ...)                                                            \
    static void S##_##N##_pimpl(P);                                                                \
    static struct shim_params S##_##N##_params(void);                                              \
    SHIM_DEFINE(S, N, S##_##N##_params, __VA_ARGS__)                                               \
    static void S##_##N##_run(void *param)                                                         \
    {                                                                                              \
        S##_##N##_pimpl(param);                                                                    \
    }                                                                                              \
    static void S##_##N##_pimpl(P)

#endif /* TC_TSAN_CRITERION_H */
