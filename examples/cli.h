/* SPDX-License-Identifier: MIT */
/* The command-line conventions tcpchan-echo, tcpchan-cat and tcpchan-proxy
 * share: options as "--name value" or "--name=value"; a mistake is one
 * stderr line naming the argument and exit status 2; numbers are decimal,
 * from a minimum to INT_MAX. Static inline, like serve_until_signal.h, so
 * each tool stays one .c file plus headers. */
#ifndef TCPCHAN_EXAMPLES_CLI_H
#define TCPCHAN_EXAMPLES_CLI_H

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The tool's name, for its error lines; main sets it first. */
static const char *cli_prog = "tcpchan";

/* One argument of the command line, split. */
struct cli_opt {
    const char *name;  /* "--workers", "-h" or a positional argument */
    const char *value; /* after '=', or NULL until cli_value */
    char buf[32];      /* the name, when it came joined to its value */
};

/* A command-line mistake: one line naming the argument; returns 2, the
 * exit status. */
static inline int cli_bad(const char *arg, const char *why)
{
    fprintf(stderr, "%s: %s: %s\n", cli_prog, arg, why);
    return 2;
}

/* Split arg into o: "--name=value" gives both, anything else a name and
 * no value. 0, or 2 (printed) for a name too long to be an option. */
static inline int cli_split(const char *arg, struct cli_opt *o)
{
    const char *eq = strchr(arg, '=');
    o->name = arg;
    o->value = NULL;
    if (arg[0] != '-' || arg[1] != '-' || !eq)
        return 0;
    if ((size_t)(eq - arg) >= sizeof o->buf)
        return cli_bad(arg, "unknown argument (see --help)");
    memcpy(o->buf, arg, (size_t)(eq - arg));
    o->buf[eq - arg] = '\0';
    o->name = o->buf;
    o->value = eq + 1;
    return 0;
}

/* A flag takes no value: 0, or 2 (printed) if "--flag=..." gave one. */
static inline int cli_flag(const struct cli_opt *o)
{
    return o->value ? cli_bad(o->name, "takes no value") : 0;
}

/* Make sure o has its value: the part after '=', or the next argument
 * (*i moves past it). 0, or 2 (printed) when the command line ends. */
static inline int cli_value(int argc, char **argv, int *i, struct cli_opt *o)
{
    if (o->value)
        return 0;
    if (*i + 1 >= argc)
        return cli_bad(o->name, "missing value");
    o->value = argv[++*i];
    return 0;
}

/* A decimal number from min to INT_MAX into *out; each way to miss says
 * which. 0, or 2 (printed). */
static inline int cli_long(const char *arg, const char *s, long min, long *out)
{
    char *end, why[96];
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end) {
        snprintf(why, sizeof why, "\"%.40s\" is not a number", s);
        return cli_bad(arg, why);
    }
    if (v < min) {
        snprintf(why, sizeof why, "must be >= %ld", min);
        return cli_bad(arg, why);
    }
    if (errno == ERANGE || v > INT_MAX) {
        snprintf(why, sizeof why, "must be <= %d", INT_MAX);
        return cli_bad(arg, why);
    }
    *out = v;
    return 0;
}

#endif
