/* SPDX-License-Identifier: MIT */
/* The HTTP/1.1 request head a WebSocket handshake starts with (RFC 9110,
 * 9112), parsed as a pure function over (buf, len): need more / a head of N
 * bytes / malformed / too large. Spans point into the caller's bytes. */
#include <string.h>

#include "internal.h"

/* RFC 9110 tchar: the characters of a method or a header name. */
static int tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* The end of the head (just past the blank line) within the first max
 * bytes: its length, or 0 if there is none yet. */
static size_t head_end(const char *buf, size_t len)
{
    for (size_t i = 3; i < len; i++)
        if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' && buf[i - 3] == '\r')
            return i + 1;
    return 0;
}

int tc__http_parse(const char *buf, size_t len, size_t max, tc__http_req *out)
{
    size_t n = head_end(buf, len < max ? len : max);
    if (n == 0) {
        /* Refuse junk as soon as the first bytes show it is no request. */
        if (len > 0 && !tchar((unsigned char)buf[0]))
            return TC_EBADFRAME;
        return len >= max ? TC_ETOOBIG : 0;
    }
    memset(out, 0, sizeof *out);
    out->size = n;
    size_t i = 0;
    /* request-line = method SP request-target SP HTTP-version CRLF */
    out->method.off = i;
    while (i < n && tchar((unsigned char)buf[i]))
        i++;
    out->method.len = i;
    if (out->method.len == 0 || buf[i] != ' ')
        return TC_EBADFRAME;
    out->target.off = ++i;
    while (i < n && (unsigned char)buf[i] > ' ' && buf[i] != 0x7f)
        i++;
    out->target.len = i - out->target.off;
    if (out->target.len == 0 || buf[i] != ' ')
        return TC_EBADFRAME;
    i++;
    if (n - i < 10 || memcmp(buf + i, "HTTP/1.", 7) != 0 || buf[i + 7] < '0' || buf[i + 7] > '9' ||
        buf[i + 8] != '\r' || buf[i + 9] != '\n')
        return TC_EBADFRAME;
    out->minor = buf[i + 7] - '0';
    i += 10;
    /* header-field = field-name ":" OWS field-value OWS CRLF, until the blank line */
    while (i + 2 < n) {
        size_t k = out->nheaders;
        if (k == TC__HTTP_MAX_HEADERS)
            return TC_ETOOBIG;
        out->name[k].off = i;
        while (i < n && tchar((unsigned char)buf[i]))
            i++;
        out->name[k].len = i - out->name[k].off;
        if (out->name[k].len == 0 || buf[i] != ':')
            return TC_EBADFRAME; /* no name, a space before the colon, or obs-fold */
        i++;
        while (buf[i] == ' ' || buf[i] == '\t')
            i++;
        size_t start = i, last = i;
        for (; buf[i] != '\r'; i++) {
            unsigned char c = (unsigned char)buf[i];
            if ((c < ' ' && c != '\t') || c == 0x7f)
                return TC_EBADFRAME;
            if (c != ' ' && c != '\t')
                last = i + 1;
        }
        if (buf[i + 1] != '\n')
            return TC_EBADFRAME;
        out->value[k].off = start;
        out->value[k].len = last - start;
        out->nheaders++;
        i += 2;
    }
    return 1;
}

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

int tc__http_ieq(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    if (alen != blen)
        return 0;
    for (size_t i = 0; i < alen; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return 0;
    return 1;
}

int tc__http_has_token(const char *v, size_t len, const char *token)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < len && v[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end > start && tc__http_ieq(v + start, end - start, token))
            return 1;
    }
    return 0;
}
