/* SPDX-License-Identifier: MIT */
/* The PROXY protocol, versions 1 (text) and 2 (binary), as a pure parser over
 * (buf, len) answering need-more / header of N bytes / not a header / invalid;
 * and the trusted-proxy list (addresses and CIDR blocks). No I/O, no allocation. */
#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "internal.h"

static const unsigned char v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                         0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_sig[] = "PROXY ";
#define V1_SIG_LEN (sizeof v1_sig - 1)
#define V2_HEAD 16                   /* signature, version/command, family, length */
#define V2_IPV4_LEN 12               /* two addresses, two ports */
#define V2_IPV6_LEN 36
#define V2_UNIX_LEN 216              /* two 108-byte paths */
#define V2_UNIX_PATH 108

static int invalid(tc__proxy_hdr *out, const char *why)
{
    out->why = why;
    return TC_EPROXY;
}

static void set_inet(tc_addr *a, int family, const unsigned char *ip, unsigned port)
{
    memset(a, 0, sizeof *a);
    if (family == AF_INET) {
        a->u.in4.sin_family = AF_INET;
        memcpy(&a->u.in4.sin_addr, ip, 4);
        a->u.in4.sin_port = htons((uint16_t)port);
        a->len = sizeof a->u.in4;
    } else {
        a->u.in6.sin6_family = AF_INET6;
        memcpy(&a->u.in6.sin6_addr, ip, 16);
        a->u.in6.sin6_port = htons((uint16_t)port);
        a->len = sizeof a->u.in6;
    }
}

/* A 108-byte v2 unix path: a file path (NUL-terminated unless it fills the
 * field), an abstract name (a leading NUL; trailing NULs are padding), or
 * nothing at all (an unnamed socket). */
static void set_unix(tc_addr *a, const unsigned char *path)
{
    size_t off = offsetof(struct sockaddr_un, sun_path), n;
    memset(a, 0, sizeof *a);
    a->u.un.sun_family = AF_UNIX;
    memcpy(a->u.un.sun_path, path, V2_UNIX_PATH);
    if (path[0] != 0) {
        n = strnlen((const char *)path, V2_UNIX_PATH);
        a->len = (socklen_t)(off + n + (n < V2_UNIX_PATH ? 1 : 0));
        return;
    }
    n = V2_UNIX_PATH;
    while (n > 1 && path[n - 1] == 0)
        n--;
    a->len = (socklen_t)(off + (n > 1 ? n : 0));
}

static unsigned get16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

static int parse_v2(const unsigned char *p, size_t len, tc__proxy_hdr *out)
{
    if (len < V2_HEAD)
        return TC__PROXY_MORE;
    unsigned ver = p[12] >> 4, cmd = p[12] & 0x0F;
    unsigned fam = p[13] >> 4, proto = p[13] & 0x0F;
    size_t plen = get16(p + 14);
    if (ver != 2)
        return invalid(out, "v2: version is not 2");
    if (cmd > 1)
        return invalid(out, "v2: command is neither LOCAL nor PROXY");
    if (fam > 3 || proto > 2)
        return invalid(out, "v2: unknown address family or transport");
    if (plen > TC__PROXY_V2_MAX_PAYLOAD)
        return invalid(out, "v2: header longer than the limit");
    if (len < V2_HEAD + plen)
        return TC__PROXY_MORE;
    const unsigned char *a = p + V2_HEAD;
    out->version = 2;
    out->len = V2_HEAD + plen;
    out->local = cmd == 0;
    out->has_addr = 0;
    /* LOCAL: the proxy speaks for itself (health checks); its block is ignored.
     * Families other than stream sockets carry nothing we can use. */
    if (out->local || proto != 1 || fam == 0)
        return TC__PROXY_DONE;
    if (fam == 1) {
        if (plen < V2_IPV4_LEN)
            return invalid(out, "v2: address block too short for IPv4");
        set_inet(&out->src, AF_INET, a, get16(a + 8));
        set_inet(&out->dst, AF_INET, a + 4, get16(a + 10));
    } else if (fam == 2) {
        if (plen < V2_IPV6_LEN)
            return invalid(out, "v2: address block too short for IPv6");
        set_inet(&out->src, AF_INET6, a, get16(a + 32));
        set_inet(&out->dst, AF_INET6, a + 16, get16(a + 34));
    } else {
        if (plen < V2_UNIX_LEN)
            return invalid(out, "v2: address block too short for unix");
        set_unix(&out->src, a);
        set_unix(&out->dst, a + V2_UNIX_PATH);
    }
    out->has_addr = 1;
    return TC__PROXY_DONE;
}

/* The next space-separated token of [*s, end): at most max - 1 bytes, copied
 * NUL-terminated into tok. 0, or -1 if missing, empty or too long. The token
 * must be followed by one space (or be the last, when last is set). */
static int token(const char **s, const char *end, char *tok, size_t max, int last)
{
    const char *p = *s, *q = p;
    while (q < end && *q != ' ')
        q++;
    size_t n = (size_t)(q - p);
    if (n == 0 || n >= max)
        return -1;
    if (last ? q != end : q == end)
        return -1;
    memcpy(tok, p, n);
    tok[n] = '\0';
    *s = last ? q : q + 1;
    return 0;
}

/* A port: decimal 0 to 65535, no sign, no leading zeros. */
static int port_of(const char *t, unsigned *port)
{
    size_t n = strlen(t);
    if (n == 0 || n > 5 || (n > 1 && t[0] == '0'))
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i] < '0' || t[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(t[i] - '0');
    }
    if (v > 65535)
        return -1;
    *port = v;
    return 0;
}

static int parse_v1(const char *p, size_t len, tc__proxy_hdr *out)
{
    size_t scan = len < TC__PROXY_V1_MAX ? len : TC__PROXY_V1_MAX;
    const char *nl = memchr(p, '\n', scan);
    if (!nl)
        return len >= TC__PROXY_V1_MAX ? invalid(out, "v1: no CRLF within 107 bytes")
                                       : TC__PROXY_MORE;
    if (nl == p || nl[-1] != '\r')
        return invalid(out, "v1: line does not end with CRLF");
    const char *s = p + V1_SIG_LEN, *end = nl - 1;
    out->version = 1;
    out->len = (size_t)(nl - p) + 1;
    out->local = 0;
    out->has_addr = 0;
    size_t rest = (size_t)(end - s);
    /* UNKNOWN: the rest of the line is ignored, the real endpoints are used. */
    if (rest >= 7 && memcmp(s, "UNKNOWN", 7) == 0 && (rest == 7 || s[7] == ' '))
        return TC__PROXY_DONE;
    int family;
    if (rest >= 5 && memcmp(s, "TCP4 ", 5) == 0)
        family = AF_INET;
    else if (rest >= 5 && memcmp(s, "TCP6 ", 5) == 0)
        family = AF_INET6;
    else
        return invalid(out, "v1: protocol is not TCP4, TCP6 or UNKNOWN");
    s += 5;
    char src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN], sp[8], dp[8];
    unsigned sport, dport;
    unsigned char sip[16], dip[16];
    if (token(&s, end, src, sizeof src, 0) < 0 || token(&s, end, dst, sizeof dst, 0) < 0 ||
        token(&s, end, sp, sizeof sp, 0) < 0 || token(&s, end, dp, sizeof dp, 1) < 0)
        return invalid(out, "v1: expected source, destination and two ports");
    if (inet_pton(family, src, sip) != 1 || inet_pton(family, dst, dip) != 1)
        return invalid(out, "v1: address does not match the protocol");
    if (port_of(sp, &sport) < 0 || port_of(dp, &dport) < 0)
        return invalid(out, "v1: port is not a decimal number 0 to 65535");
    set_inet(&out->src, family, sip, sport);
    set_inet(&out->dst, family, dip, dport);
    out->has_addr = 1;
    return TC__PROXY_DONE;
}

int tc__proxy_parse(const void *buf, size_t len, tc__proxy_hdr *out)
{
    const unsigned char *p = buf;
    memset(out, 0, sizeof *out);
    if (len == 0)
        return TC__PROXY_MORE;
    size_t n = len < sizeof v2_sig ? len : sizeof v2_sig;
    if (memcmp(p, v2_sig, n) == 0)
        return n < sizeof v2_sig ? TC__PROXY_MORE : parse_v2(p, len, out);
    n = len < V1_SIG_LEN ? len : V1_SIG_LEN;
    if (memcmp(p, v1_sig, n) == 0)
        return n < V1_SIG_LEN ? TC__PROXY_MORE : parse_v1(buf, len, out);
    return TC__PROXY_NONE;
}

/* ---- trusted proxies -------------------------------------------------------- */

/* One entry of [s, e): "unix", an address, or address/bits. */
static int parse_entry(const char *s, const char *e, tc__cidr *c)
{
    char tok[INET6_ADDRSTRLEN + 8];
    size_t n = (size_t)(e - s);
    if (n == 0 || n >= sizeof tok)
        return -1;
    memcpy(tok, s, n);
    tok[n] = '\0';
    memset(c, 0, sizeof *c);
    if (strcmp(tok, "unix") == 0) {
        c->family = AF_UNIX;
        return 0;
    }
    char *slash = strchr(tok, '/');
    if (slash)
        *slash = '\0';
    if (inet_pton(AF_INET, tok, c->addr) == 1)
        c->family = AF_INET;
    else if (inet_pton(AF_INET6, tok, c->addr) == 1)
        c->family = AF_INET6;
    else
        return -1;
    int maxbits = c->family == AF_INET ? 32 : 128;
    c->bits = maxbits;
    if (slash) {
        const char *b = slash + 1;
        size_t bl = strlen(b);
        if (bl == 0 || bl > 3 || (bl > 1 && b[0] == '0'))
            return -1;
        int v = 0;
        for (size_t i = 0; i < bl; i++) {
            if (b[i] < '0' || b[i] > '9')
                return -1;
            v = v * 10 + (b[i] - '0');
        }
        if (v > maxbits)
            return -1;
        c->bits = v;
    }
    /* Host bits set under the mask (10.1.2.3/8) are cleared: the block is meant. */
    for (int i = 0; i < 16; i++) {
        int keep = c->bits - i * 8;
        c->addr[i] &= keep >= 8 ? 0xFF : keep <= 0 ? 0 : (unsigned char)(0xFF << (8 - keep));
    }
    return 0;
}

size_t tc__cidr_count(const char *text)
{
    size_t n = 1;
    for (const char *s = text; *s; s++)
        n += *s == ',';
    return n;
}

int tc__cidr_parse(const char *text, tc__cidr *list, size_t max, size_t *count)
{
    size_t n = 0;
    const char *s = text;
    while (*s == ' ')
        s++;
    if (*s == '\0') {
        *count = 0;
        return 0;
    }
    for (;;) {
        while (*s == ' ')
            s++;
        const char *e = s;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > s && t[-1] == ' ')
            t--;
        if (n == max || parse_entry(s, t, &list[n]) < 0) {
            *count = n;
            return TC_EBADCONFIG;
        }
        n++;
        if (*e == '\0')
            break;
        s = e + 1;
    }
    *count = n;
    return 0;
}

static int prefix_eq(const unsigned char *a, const unsigned char *b, int bits)
{
    int full = bits / 8, rest = bits % 8;
    if (memcmp(a, b, (size_t)full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    unsigned char mask = (unsigned char)(0xFF << (8 - rest));
    return (a[full] & mask) == (b[full] & mask);
}

int tc__cidr_match(const tc__cidr *list, size_t n, const tc_addr *a)
{
    int family = tc_addr_family(a);
    const unsigned char *ip = NULL, *ip4 = NULL;
    if (family == AF_INET) {
        ip4 = (const unsigned char *)&a->u.in4.sin_addr;
    } else if (family == AF_INET6) {
        ip = (const unsigned char *)&a->u.in6.sin6_addr;
        /* ::ffff:a.b.c.d, a v4 client of a dual-stack listener, matches v4 blocks. */
        if (IN6_IS_ADDR_V4MAPPED(&a->u.in6.sin6_addr))
            ip4 = ip + 12;
    }
    for (size_t i = 0; i < n; i++) {
        const tc__cidr *c = &list[i];
        if (c->family == AF_UNIX ? family == AF_UNIX
            : c->family == AF_INET ? ip4 && prefix_eq(ip4, c->addr, c->bits)
                                   : ip && prefix_eq(ip, c->addr, c->bits))
            return 1;
    }
    return 0;
}
