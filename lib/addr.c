/* SPDX-License-Identifier: MIT */
/* Address parsing and formatting: HOST:PORT, [IPV6]:PORT, :PORT and *:PORT
 * (every IPv4 address), unix:PATH, unix:@NAME; the same for datagram
 * sockets behind udp: and unixgram:. Numeric hosts never touch the
 * resolver; only names go to getaddrinfo(). */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define UNIX_PREFIX "unix:"
#define UDP_PREFIX "udp:"
#define UNIXGRAM_PREFIX "unixgram:"
#define HOST_MAX 256 /* a DNS name is at most 253 characters; a zone may follow IPv6 */

static int parse_port(const char *s, int *port)
{
    size_t n = strlen(s);
    if (n == 0 || n > 5)
        return TC_EBADADDR;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return TC_EBADADDR;
        v = v * 10 + (s[i] - '0');
    }
    if (v > 65535)
        return TC_EBADADDR;
    *port = v;
    return 0;
}

static int parse_unix(tc_addr *out, const char *path)
{
    size_t n = strlen(path);
    tc_addr a;
    memset(&a, 0, sizeof a);
    a.u.un.sun_family = AF_UNIX;
    if (n == 0 || (path[0] == '@' && n == 1))
        return TC_EBADADDR;
    if (path[0] == '@') {
        /* Abstract namespace: a leading NUL, the name, no terminator. */
        if (n > sizeof a.u.un.sun_path)
            return -ENAMETOOLONG;
        memcpy(a.u.un.sun_path + 1, path + 1, n - 1);
        a.len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        if (n >= sizeof a.u.un.sun_path)
            return -ENAMETOOLONG;
        memcpy(a.u.un.sun_path, path, n + 1);
        a.len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    *out = a;
    return 0;
}

/* Split "HOST:PORT" or "[HOST]:PORT"; *bracketed tells which. HOST may be
 * empty without brackets (":PORT"). */
static int split_host_port(const char *text, char *host, int *port, int *bracketed)
{
    const char *h, *hend, *p;
    if (text[0] == '[') {
        h = text + 1;
        hend = strchr(h, ']');
        if (!hend || hend[1] != ':')
            return TC_EBADADDR;
        p = hend + 2;
        *bracketed = 1;
    } else {
        hend = strrchr(text, ':');
        if (!hend)
            return TC_EBADADDR;
        h = text;
        p = hend + 1;
        *bracketed = 0;
        if (memchr(h, ':', (size_t)(hend - h)))
            return TC_EBADADDR; /* IPv6 must be bracketed */
    }
    size_t hn = (size_t)(hend - h);
    if ((hn == 0 && *bracketed) || hn >= HOST_MAX)
        return TC_EBADADDR;
    memcpy(host, h, hn);
    host[hn] = '\0';
    return parse_port(p, port);
}

/* Characters a host name may have; anything else is garbage, not a lookup. */
static int valid_name(const char *host, int *numeric_like)
{
    int only_digits_dots = 1;
    for (const char *s = host; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!isalnum(c) && c != '-' && c != '.' && c != '_')
            return 0;
        if (!isdigit(c) && c != '.')
            only_digits_dots = 0;
    }
    *numeric_like = only_digits_dots;
    return 1;
}

static int gai_to_code(int rc)
{
    switch (rc) {
    case EAI_MEMORY:
        return -ENOMEM;
    case EAI_SYSTEM:
        return errno ? -errno : TC_ENORESOLVE;
    default:
        return TC_ENORESOLVE;
    }
}

static void set_port(tc_addr *a, int port)
{
    if (a->u.sa.sa_family == AF_INET)
        a->u.in4.sin_port = htons((uint16_t)port);
    else if (a->u.sa.sa_family == AF_INET6)
        a->u.in6.sin6_port = htons((uint16_t)port);
}

static int has_prefix(const char *text, const char *prefix)
{
    return strncmp(text, prefix, strlen(prefix)) == 0;
}

static int resolve_inet(const char *text, int socktype, tc_addr *list, int max, int *count);

int tc__addr_resolve(const char *text, tc_addr *list, int max, int *count)
{
    if (!text || !list || max < 1 || !count)
        return text ? -EINVAL : TC_EBADADDR;
    int socktype = 0, rc, n = 0;
    const char *path = NULL;
    if (has_prefix(text, UNIX_PREFIX)) {
        path = text + strlen(UNIX_PREFIX);
    } else if (has_prefix(text, UNIXGRAM_PREFIX)) {
        path = text + strlen(UNIXGRAM_PREFIX);
        socktype = SOCK_DGRAM;
    } else if (has_prefix(text, UDP_PREFIX)) {
        text += strlen(UDP_PREFIX);
        socktype = SOCK_DGRAM;
    }
    if (path) {
        if ((rc = parse_unix(&list[0], path)) == 0)
            n = 1;
    } else {
        rc = resolve_inet(text, socktype, list, max, &n);
    }
    if (rc < 0)
        return rc;
    for (int i = 0; i < n; i++)
        list[i].socktype = socktype;
    *count = n;
    return 0;
}

static int resolve_inet(const char *text, int socktype, tc_addr *list, int max, int *count)
{
    char host[HOST_MAX];
    int port, bracketed, numeric_like, rc;

    if ((rc = split_host_port(text, host, &port, &bracketed)) < 0)
        return rc;

    tc_addr a;
    memset(&a, 0, sizeof a);
    if (!bracketed) {
        /* ":PORT" and "*:PORT": every address, as nginx and HAProxy read
         * them; IPv4 (0.0.0.0), because a listener on [::] is IPv6 only. */
        if (host[0] == '\0' || strcmp(host, "*") == 0)
            memcpy(host, "0.0.0.0", sizeof "0.0.0.0");
        if (inet_pton(AF_INET, host, &a.u.in4.sin_addr) == 1) {
            a.u.in4.sin_family = AF_INET;
            a.len = sizeof a.u.in4;
            set_port(&a, port);
            list[0] = a;
            *count = 1;
            return 0;
        }
        if (!valid_name(host, &numeric_like) || numeric_like)
            return TC_EBADADDR;
    }

    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = socktype ? socktype : SOCK_STREAM;
    hints.ai_family = bracketed ? AF_INET6 : AF_UNSPEC;
    hints.ai_flags = bracketed ? AI_NUMERICHOST : 0;
    errno = 0;
    rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0)
        return bracketed ? TC_EBADADDR : gai_to_code(rc);
    int n = 0;
    for (struct addrinfo *ai = res; ai && n < max; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        if (tc_addr_from_sockaddr(&list[n], ai->ai_addr, ai->ai_addrlen) < 0)
            continue;
        set_port(&list[n], port);
        n++;
    }
    freeaddrinfo(res);
    if (n == 0)
        return TC_ENORESOLVE;
    *count = n;
    return 0;
}

int tc_addr_parse(tc_addr *out, const char *text)
{
    tc_addr a;
    int n;
    if (!out)
        return -EINVAL;
    int rc = tc__addr_resolve(text, &a, 1, &n);
    if (rc == 0)
        *out = a;
    return rc;
}

int tc__addr_parse_numeric(const char *text, tc_addr *out)
{
    const char *t = text;
    if (t && has_prefix(t, UDP_PREFIX))
        t += strlen(UDP_PREFIX);
    if (t && !has_prefix(t, UNIX_PREFIX) && !has_prefix(t, UNIXGRAM_PREFIX)) {
        char host[HOST_MAX];
        int port, bracketed;
        int rc = split_host_port(t, host, &port, &bracketed);
        if (rc < 0)
            return rc;
        struct in_addr a4;
        /* Bracketed IPv6 is parsed without a lookup (AI_NUMERICHOST). */
        if (!bracketed && host[0] != '\0' && strcmp(host, "*") != 0 &&
            inet_pton(AF_INET, host, &a4) != 1)
            return TC_EBADADDR; /* a name: it would need the resolver */
    }
    return tc_addr_parse(out, text);
}

int tc_addr_from_sockaddr(tc_addr *out, const struct sockaddr *sa, socklen_t len)
{
    if (!out || !sa || len > sizeof out->u.storage)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    memcpy(&out->u, sa, len);
    out->len = len;
    return 0;
}

int tc_addr_family(const tc_addr *addr)
{
    if (!addr || addr->len == 0)
        return AF_UNSPEC;
    return addr->u.sa.sa_family;
}

int tc_addr_port(const tc_addr *addr)
{
    if (!addr)
        return -EINVAL;
    switch (tc_addr_family(addr)) {
    case AF_INET:
        return ntohs(addr->u.in4.sin_port);
    case AF_INET6:
        return ntohs(addr->u.in6.sin6_port);
    default:
        return -EAFNOSUPPORT;
    }
}

static int put(char *buf, size_t size, int n)
{
    if (n < 0 || (size_t)n >= size) {
        buf[0] = '\0';
        return -ENOSPC;
    }
    return n;
}

int tc_addr_format(const tc_addr *addr, char *buf, size_t size)
{
    char host[INET6_ADDRSTRLEN + 32];
    if (!addr || !buf)
        return -EINVAL;
    if (size == 0)
        return -ENOSPC;
    int dgram = addr->socktype == SOCK_DGRAM;
    const char *ip = dgram ? UDP_PREFIX : "";
    const char *un = dgram ? UNIXGRAM_PREFIX : UNIX_PREFIX;
    switch (tc_addr_family(addr)) {
    case AF_INET:
        if (!inet_ntop(AF_INET, &addr->u.in4.sin_addr, host, sizeof host))
            return put(buf, size, -1);
        return put(buf, size, snprintf(buf, size, "%s%s:%d", ip, host, tc_addr_port(addr)));
    case AF_INET6:
        /* NI_NUMERICHOST: no lookup; it also writes a scope as %zone. */
        if (getnameinfo(&addr->u.sa, addr->len, host, sizeof host, NULL, 0, NI_NUMERICHOST) != 0)
            return put(buf, size, -1);
        return put(buf, size, snprintf(buf, size, "%s[%s]:%d", ip, host, tc_addr_port(addr)));
    case AF_UNIX: {
        size_t off = offsetof(struct sockaddr_un, sun_path);
        size_t n = addr->len > off ? addr->len - off : 0;
        const char *p = addr->u.un.sun_path;
        if (n == 0)
            return put(buf, size, snprintf(buf, size, "%s", un));
        if (p[0] == '\0')
            return put(buf, size, snprintf(buf, size, "%s@%.*s", un, (int)(n - 1), p + 1));
        return put(buf, size, snprintf(buf, size, "%s%.*s", un, (int)strnlen(p, n), p));
    }
    default:
        return -EAFNOSUPPORT;
    }
}
