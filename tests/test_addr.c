/* SPDX-License-Identifier: MIT */
/* tc_addr: parsing good and bad text, formatting, round trips, accessors.
 * Nothing here leaves the machine: numeric addresses, "localhost" (from
 * /etc/hosts) and a name the resolver refuses before sending any query. */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "helpers.h"

static tc_addr parse_ok(const char *text)
{
    tc_addr a;
    int rc = tc_addr_parse(&a, text);
    cr_assert_eq(rc, 0, "tc_addr_parse(\"%s\") = %d %s", text, rc, tc_err_name(rc));
    return a;
}

static const char *fmt(const tc_addr *a, char *buf)
{
    int n = tc_addr_format(a, buf, TC_ADDR_STRLEN);
    cr_assert_gt(n, 0, "tc_addr_format: %d %s", n, tc_err_name(n));
    cr_assert_eq((size_t)n, strlen(buf));
    return buf;
}

static void assert_same_addr(const tc_addr *a, const tc_addr *b, const char *what)
{
    cr_assert_eq(a->len, b->len, "%s: len %u != %u", what, (unsigned)a->len, (unsigned)b->len);
    cr_assert_eq(memcmp(&a->u, &b->u, a->len), 0, "%s: bytes differ", what);
}

Test(addr, ipv4_port_zero, .timeout = 10)
{
    char buf[TC_ADDR_STRLEN];
    tc_addr a = parse_ok("127.0.0.1:0");
    cr_assert_eq(tc_addr_family(&a), AF_INET);
    cr_assert_eq(a.len, sizeof(struct sockaddr_in));
    cr_assert_eq(a.u.in4.sin_addr.s_addr, htonl(INADDR_LOOPBACK));
    cr_assert_eq(tc_addr_port(&a), 0);
    cr_assert_str_eq(fmt(&a, buf), "127.0.0.1:0");
}

Test(addr, ipv4_max_port, .timeout = 10)
{
    char buf[TC_ADDR_STRLEN];
    tc_addr a = parse_ok("127.0.0.1:65535");
    cr_assert_eq(tc_addr_port(&a), 65535);
    cr_assert_eq(ntohs(a.u.in4.sin_port), 65535);
    cr_assert_str_eq(fmt(&a, buf), "127.0.0.1:65535");
}

Test(addr, ipv6_loopback, .timeout = 10)
{
    char buf[TC_ADDR_STRLEN];
    tc_addr a = parse_ok("[::1]:8080");
    cr_assert_eq(tc_addr_family(&a), AF_INET6);
    cr_assert_eq(a.len, sizeof(struct sockaddr_in6));
    cr_assert(IN6_IS_ADDR_LOOPBACK(&a.u.in6.sin6_addr));
    cr_assert_eq(tc_addr_port(&a), 8080);
    cr_assert_str_eq(fmt(&a, buf), "[::1]:8080");
}

Test(addr, ipv6_zone, .timeout = 10)
{
    char buf[TC_ADDR_STRLEN];
    tc_addr a;
    memset(&a, 0xAB, sizeof a);
    int rc = tc_addr_parse(&a, "[fe80::1%lo]:80");
    unsigned lo = if_nametoindex("lo");
    if (rc != 0) {
        /* Without a usable "lo" zone here, the failure must be a clean one. */
        cr_assert_eq(rc, TC_EBADADDR, "zone failure gave %d %s", rc, tc_err_name(rc));
        cr_assert_eq(lo, 0u, "lo exists (index %u) yet its zone was refused", lo);
        return;
    }
    cr_assert_eq(tc_addr_family(&a), AF_INET6);
    cr_assert(IN6_IS_ADDR_LINKLOCAL(&a.u.in6.sin6_addr));
    cr_assert_eq(a.u.in6.sin6_scope_id, lo);
    cr_assert_eq(tc_addr_port(&a), 80);
    cr_assert_str_eq(fmt(&a, buf), "[fe80::1%lo]:80");
    /* A numeric zone names the same interface. */
    char numeric[64];
    snprintf(numeric, sizeof numeric, "[fe80::1%%%u]:80", lo);
    tc_addr b = parse_ok(numeric);
    assert_same_addr(&a, &b, "numeric zone");
}

/* ":PORT" and "*:PORT" are every IPv4 address, as nginx and HAProxy read
 * them: 0.0.0.0, never [::] (a listener on [::] is IPv6 only, addr.h). */
Test(addr, all_addresses, .timeout = 10)
{
    static const char *const texts[] = {":7000", "*:7000", "0.0.0.0:7000"};
    char buf[TC_ADDR_STRLEN];
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        tc_addr a = parse_ok(texts[i]);
        cr_assert_eq(tc_addr_family(&a), AF_INET, "%s", texts[i]);
        cr_assert_eq(a.len, sizeof(struct sockaddr_in), "%s", texts[i]);
        cr_assert_eq(a.u.in4.sin_addr.s_addr, htonl(INADDR_ANY), "%s", texts[i]);
        cr_assert_eq(tc_addr_port(&a), 7000, "%s", texts[i]);
        cr_assert_str_eq(fmt(&a, buf), "0.0.0.0:7000", "%s", texts[i]);
    }
    tc_addr a = parse_ok(":0");
    cr_assert_eq(a.u.in4.sin_addr.s_addr, htonl(INADDR_ANY));
    cr_assert_eq(tc_addr_port(&a), 0);
}

Test(addr, localhost, .timeout = 10)
{
    /* Resolved from /etc/hosts, no DNS traffic; either family is acceptable. */
    tc_addr a = parse_ok("localhost:80");
    int fam = tc_addr_family(&a);
    cr_assert(fam == AF_INET || fam == AF_INET6, "family %d", fam);
    if (fam == AF_INET)
        cr_assert_eq(ntohl(a.u.in4.sin_addr.s_addr) >> 24, 127u);
    else
        cr_assert(IN6_IS_ADDR_LOOPBACK(&a.u.in6.sin6_addr));
    cr_assert_eq(tc_addr_port(&a), 80);
}

Test(addr, unix_path, .timeout = 10)
{
    char buf[TC_ADDR_STRLEN];
    tc_addr a = parse_ok("unix:/tmp/x");
    cr_assert_eq(tc_addr_family(&a), AF_UNIX);
    cr_assert_str_eq(a.u.un.sun_path, "/tmp/x");
    cr_assert_eq(a.len, offsetof(struct sockaddr_un, sun_path) + sizeof "/tmp/x");
    cr_assert_eq(tc_addr_port(&a), -EAFNOSUPPORT);
    cr_assert_str_eq(fmt(&a, buf), "unix:/tmp/x");
}

Test(addr, unix_abstract, .timeout = 10)
{
    char buf[TC_ADDR_STRLEN];
    tc_addr a = parse_ok("unix:@abstract");
    cr_assert_eq(tc_addr_family(&a), AF_UNIX);
    /* Linux's abstract namespace: a leading NUL, then the name, no terminator. */
    cr_assert_eq(a.u.un.sun_path[0], '\0');
    cr_assert_eq(memcmp(a.u.un.sun_path + 1, "abstract", 8), 0);
    cr_assert_eq(a.len, offsetof(struct sockaddr_un, sun_path) + 1 + 8);
    cr_assert_eq(tc_addr_port(&a), -EAFNOSUPPORT);
    cr_assert_str_eq(fmt(&a, buf), "unix:@abstract");
}

Test(addr, unix_path_length_limits, .timeout = 10)
{
    char text[300], buf[TC_ADDR_STRLEN];
    const size_t max = sizeof(((struct sockaddr_un *)0)->sun_path); /* 108 */
    tc_addr a;

    /* The longest path that fits: max - 1 characters and the NUL. */
    strcpy(text, "unix:/");
    memset(text + 6, 'p', max - 2);
    text[6 + max - 2] = '\0';
    a = parse_ok(text);
    cr_assert_eq(strlen(a.u.un.sun_path), max - 1);
    cr_assert_str_eq(fmt(&a, buf), text);

    /* One more, and far more, do not fit. */
    for (size_t extra = 1; extra <= 100; extra += 99) {
        strcpy(text, "unix:/");
        memset(text + 6, 'p', max - 2 + extra);
        text[6 + max - 2 + extra] = '\0';
        memset(&a, 0xAB, sizeof a);
        cr_assert_eq(tc_addr_parse(&a, text), -ENAMETOOLONG, "path of %zu chars",
                     max - 1 + extra);
        cr_assert_eq(a.u.un.sun_family, 0xABAB, "out written on failure");
    }

    /* Abstract names: max - 1 characters after the leading NUL fit, max do not. */
    strcpy(text, "unix:@");
    memset(text + 6, 'n', max - 1);
    text[6 + max - 1] = '\0';
    a = parse_ok(text);
    cr_assert_eq(a.len, offsetof(struct sockaddr_un, sun_path) + max);
    cr_assert_str_eq(fmt(&a, buf), text);
    strcat(text, "n");
    cr_assert_eq(tc_addr_parse(&a, text), -ENAMETOOLONG);
}

Test(addr, round_trip, .timeout = 10)
{
    static const char *const texts[] = {
        "127.0.0.1:0",   "127.0.0.1:65535", "10.1.2.3:443",  "0.0.0.0:1",
        "[::1]:8080",    "[::]:0",          "[2001:db8::5]:65535",
        "[::ffff:127.0.0.1]:80", "unix:/tmp/x", "unix:@abstract", "unix:relative/sock",
    };
    char buf[TC_ADDR_STRLEN];
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        tc_addr a = parse_ok(texts[i]), b;
        fmt(&a, buf);
        /* These are canonical forms: the text comes back unchanged. */
        cr_assert_str_eq(buf, texts[i]);
        cr_assert_eq(tc_addr_parse(&b, buf), 0, "reparse of %s", buf);
        assert_same_addr(&a, &b, texts[i]);
    }
    /* Non-canonical input formats canonically and parses back to the same address. */
    static const struct {
        const char *in, *out;
    } canon[] = {
        {"[0:0:0:0:0:0:0:1]:80", "[::1]:80"},
        {"[2001:DB8:0::5]:7", "[2001:db8::5]:7"},
        {"127.0.0.1:00080", "127.0.0.1:80"},
    };
    for (size_t i = 0; i < sizeof canon / sizeof canon[0]; i++) {
        tc_addr a = parse_ok(canon[i].in), b;
        cr_assert_str_eq(fmt(&a, buf), canon[i].out);
        b = parse_ok(buf);
        assert_same_addr(&a, &b, canon[i].in);
    }
}

Test(addr, bad_text, .timeout = 10)
{
    static const struct {
        const char *text;
        int rc;
    } cases[] = {
        {"", TC_EBADADDR},
        {"127.0.0.1", TC_EBADADDR},        /* no port */
        {"127.0.0.1:", TC_EBADADDR},       /* empty port */
        {"127.0.0.1:65536", TC_EBADADDR},  /* port too large */
        {"127.0.0.1:99999", TC_EBADADDR},
        {"127.0.0.1:-1", TC_EBADADDR},     /* sign */
        {"127.0.0.1:+80", TC_EBADADDR},
        {"127.0.0.1:8x", TC_EBADADDR},     /* stray characters */
        {"127.0.0.1:80 ", TC_EBADADDR},
        {"127.0.0.1:000080", TC_EBADADDR}, /* more than five digits */
        {"::1:80", TC_EBADADDR},           /* unbracketed IPv6 */
        {"[::1]", TC_EBADADDR},            /* bracketed, no port */
        {"[::1]80", TC_EBADADDR},          /* no colon after the bracket */
        {"[::1]:", TC_EBADADDR},
        {"[::1:80", TC_EBADADDR},          /* unclosed bracket */
        {"[127.0.0.1]:80", TC_EBADADDR},   /* brackets are for IPv6 only */
        {"[zz::1]:80", TC_EBADADDR},
        {":", TC_EBADADDR},                /* all addresses, but no port */
        {"*:", TC_EBADADDR},
        {"*", TC_EBADADDR},
        {"**:80", TC_EBADADDR},            /* only a lone * means all addresses */
        {"*.example:80", TC_EBADADDR},
        {"[*]:80", TC_EBADADDR},
        {"[]:80", TC_EBADADDR},
        {"256.1.1.1:80", TC_EBADADDR},     /* numeric-looking, not an address */
        {"1.2.3:80", TC_EBADADDR},
        {"exa mple.com:80", TC_EBADADDR},  /* space: garbage, never looked up */
        {"exa%mple.com:80", TC_EBADADDR},
        {" 127.0.0.1:80", TC_EBADADDR},
        {"unix:", TC_EBADADDR},            /* empty path */
        {"unix:@", TC_EBADADDR},           /* empty abstract name */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tc_addr a;
        memset(&a, 0xAB, sizeof a);
        int rc = tc_addr_parse(&a, cases[i].text);
        cr_assert_eq(rc, cases[i].rc, "tc_addr_parse(\"%s\") = %d %s, expected %s", cases[i].text,
                     rc, tc_err_name(rc), tc_err_name(cases[i].rc));
        cr_assert_eq(a.len, (socklen_t)0xABABABAB, "\"%s\": out written on failure",
                     cases[i].text);
    }
}

Test(addr, null_arguments, .timeout = 10)
{
    tc_addr a;
    char buf[TC_ADDR_STRLEN];
    cr_assert_eq(tc_addr_parse(&a, NULL), TC_EBADADDR);
    cr_assert_eq(tc_addr_parse(NULL, "127.0.0.1:80"), -EINVAL);
    a = parse_ok("127.0.0.1:80");
    cr_assert_eq(tc_addr_format(NULL, buf, sizeof buf), -EINVAL);
    cr_assert_eq(tc_addr_format(&a, NULL, sizeof buf), -EINVAL);
    cr_assert_eq(tc_addr_port(NULL), -EINVAL);
    cr_assert_eq(tc_addr_family(NULL), AF_UNSPEC);
    cr_assert_eq(tc_addr_from_sockaddr(NULL, &a.u.sa, a.len), -EINVAL);
    cr_assert_eq(tc_addr_from_sockaddr(&a, NULL, 16), -EINVAL);
}

Test(addr, unresolvable_host, .timeout = 20)
{
    /* A 70-character label: glibc refuses to build the query (labels are at
     * most 63 bytes), so no packet leaves the machine; the files source does
     * not know it either. The library reports TC_ENORESOLVE (getaddrinfo's
     * EAI_NONAME / EAI_FAIL map to it), not TC_EBADADDR: the text itself is
     * well formed. */
    char text[128];
    memset(text, 'a', 70);
    strcpy(text + 70, ".invalid:80");
    tc_addr a;
    memset(&a, 0xAB, sizeof a);
    int rc = tc_addr_parse(&a, text);
    cr_assert_eq(rc, TC_ENORESOLVE, "got %d %s", rc, tc_err_name(rc));
    cr_assert_eq(a.len, (socklen_t)0xABABABAB, "out written on failure");

    /* A host longer than any DNS name is refused as malformed, before any lookup. */
    char longname[400];
    memset(longname, 'b', 300);
    strcpy(longname + 300, ":80");
    cr_assert_eq(tc_addr_parse(&a, longname), TC_EBADADDR);
}

Test(addr, format_small_buffer, .timeout = 10)
{
    static const char *const texts[] = {"127.0.0.1:8080", "[::1]:8080", "unix:/tmp/x",
                                        "unix:@abstract"};
    for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
        tc_addr a = parse_ok(texts[t]);
        size_t need = strlen(texts[t]) + 1;
        char buf[TC_ADDR_STRLEN];
        /* Every size short of the text and its NUL fails cleanly. */
        for (size_t size = 1; size < need; size++) {
            memset(buf, 'Z', sizeof buf);
            int rc = tc_addr_format(&a, buf, size);
            cr_assert_eq(rc, -ENOSPC, "%s into %zu bytes: %d", texts[t], size, rc);
            cr_assert_eq(buf[0], '\0', "%s into %zu bytes: not emptied", texts[t], size);
            cr_assert_eq(buf[size], 'Z', "%s into %zu bytes: wrote past the end", texts[t], size);
        }
        memset(buf, 'Z', sizeof buf);
        cr_assert_eq(tc_addr_format(&a, buf, 0), -ENOSPC);
        cr_assert_eq(buf[0], 'Z', "size 0: buffer touched");
        /* The exact size works. */
        cr_assert_eq(tc_addr_format(&a, buf, need), (int)(need - 1));
        cr_assert_str_eq(buf, texts[t]);
    }
}

Test(addr, unix_unnamed_and_other_families, .timeout = 10)
{
    char buf[TC_ADDR_STRLEN];
    /* An unnamed unix socket (a typical client) as the kernel reports it. */
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    cr_assert_eq(getsockname(sv[0], (struct sockaddr *)&ss, &len), 0);
    close(sv[0]);
    close(sv[1]);
    tc_addr a;
    cr_assert_eq(tc_addr_from_sockaddr(&a, (struct sockaddr *)&ss, len), 0);
    cr_assert_eq(tc_addr_family(&a), AF_UNIX);
    cr_assert_str_eq(fmt(&a, buf), "unix:");
    cr_assert_eq(tc_addr_port(&a), -EAFNOSUPPORT);

    /* Built by hand: just the family. */
    memset(&a, 0, sizeof a);
    a.u.un.sun_family = AF_UNIX;
    a.len = sizeof(sa_family_t);
    cr_assert_eq(tc_addr_format(&a, buf, sizeof buf), 5);
    cr_assert_str_eq(buf, "unix:");

    /* No address at all, and a family the library does not handle. */
    memset(&a, 0, sizeof a);
    cr_assert_eq(tc_addr_family(&a), AF_UNSPEC);
    cr_assert_eq(tc_addr_port(&a), -EAFNOSUPPORT);
    cr_assert_eq(tc_addr_format(&a, buf, sizeof buf), -EAFNOSUPPORT);
    a.u.sa.sa_family = AF_APPLETALK;
    a.len = sizeof(struct sockaddr);
    cr_assert_eq(tc_addr_format(&a, buf, sizeof buf), -EAFNOSUPPORT);
    cr_assert_eq(tc_addr_port(&a), -EAFNOSUPPORT);
}

Test(addr, from_sockaddr, .timeout = 10)
{
    char buf[TC_ADDR_STRLEN];
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons(4242);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    tc_addr a;
    cr_assert_eq(tc_addr_from_sockaddr(&a, (struct sockaddr *)&sin, sizeof sin), 0);
    cr_assert_eq(a.len, sizeof sin);
    cr_assert_eq(tc_addr_port(&a), 4242);
    cr_assert_str_eq(fmt(&a, buf), "127.0.0.1:4242");
    tc_addr b = parse_ok("127.0.0.1:4242");
    assert_same_addr(&a, &b, "from_sockaddr vs parse");

    /* A length larger than any address is refused and leaves out alone. */
    char big[sizeof(struct sockaddr_storage) + 8];
    memset(big, 0, sizeof big);
    memset(&b, 0xAB, sizeof b);
    cr_assert_eq(tc_addr_from_sockaddr(&b, (struct sockaddr *)big, sizeof big), -EINVAL);
    cr_assert_eq(b.len, (socklen_t)0xABABABAB);
}

Test(addr, strlen_suffices, .timeout = 10)
{
    /* The longest forms fit in TC_ADDR_STRLEN. */
    char text[300], buf[TC_ADDR_STRLEN];
    strcpy(text, "unix:@");
    memset(text + 6, 'n', 107);
    text[113] = '\0';
    tc_addr a = parse_ok(text);
    cr_assert_eq(tc_addr_format(&a, buf, sizeof buf), 113);
    a = parse_ok("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
    cr_assert_eq(tc_addr_format(&a, buf, sizeof buf), 47);
    a = parse_ok("255.255.255.255:65535");
    cr_assert_str_eq(fmt(&a, buf), "255.255.255.255:65535");
}
