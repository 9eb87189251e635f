/* SPDX-License-Identifier: MIT */
/* libtcpchan-tls: a tc_transport on OpenSSL 3. Built into its own library:
 * it sees only the public API (no tc__ internals), and the core never links
 * OpenSSL. Sockets are read and written by a BIO of our own (MSG_NOSIGNAL,
 * and bytes read before the handshake are served first). */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tcpchan/error.h"
#include "tcpchan/tls.h"

#define GATHER ((size_t)16 * 1024) /* small pieces of a vector are sent as one record */
/* OpenSSL reads a record's 5-byte header, then its body: one recv of up to
 * this much takes both (and what follows) when records are small. */
#define RAHEAD ((size_t)4096)
#define WHY_MAX 200

/* What one generation of settings built: the contexts new connections get.
 * A reload makes a new one; connections keep theirs (reference counted). */
struct gen {
    atomic_int refs;
    SSL_CTX *def;     /* the default certificate (server), or the client's */
    size_t n;
    SSL_CTX **ctx;    /* certs[i]'s context */
    char **names;     /* certs[i].name */
    struct tc_tls *tls;
};

struct tc_tls {
    tc_transport base; /* first: tc_tls_transport() hands out &base */
    int server;
    tc_tls_config cfg; /* strings below are our copies */
    tc_tls_cert *certs;
    unsigned char *alpn_wire; /* ALPN list in wire format */
    size_t alpn_len;
    pthread_mutex_t mu; /* guards cur and the client's session cache */
    struct gen *cur;
    int ktls; /* new connections ask the kernel for kTLS (tc_tls_config::ktls) */
    SSL_SESSION *last_sess; /* client: the last session, for last_host */
    char *last_host;
};

/* A connection's state. */
struct tconn {
    SSL *ssl;
    struct gen *gen;
    struct tc_tls *tls;
    char *host; /* client: the host, for the session cache */
    int fd;
    int sleep;  /* the BIO's next reads may sleep (a blocking socket) */
    int err;    /* the BIO's last errno (0: none) */
    int done;   /* the handshake finished */
    int broken; /* a fatal error: no close_notify, no more I/O */
    int rerr;   /* an error to report after the bytes returned with it */
    /* kTLS: OpenSSL sets it up only on its own socket BIO, which writes with
     * write(2): while that BIO writes (sock set), every OpenSSL call that may
     * write runs with SIGPIPE held (struct nopipe). */
    BIO *sock;
    int ktls; /* the kernel encrypts what is sent */
    const unsigned char *early;
    size_t early_len, early_off;
    unsigned char *rbuf; /* RAHEAD bytes read ahead, allocated at the first small read */
    size_t roff, rlen;   /* what of rbuf OpenSSL has not taken yet */
    unsigned char *gbuf; /* GATHER bytes, allocated at the first gathered send */
    char why[WHY_MAX];
};

static char *dup_str(const char *s, int *fail)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *fail = 1;
    return d;
}

static void tls_log(const struct tc_tls *tls, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void tls_log(const struct tc_tls *tls, const char *fmt, ...)
{
    if (!tls->cfg.log)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tls->cfg.log(TC_LOG_WARN, msg, tls->cfg.log_ctx);
}

/* OpenSSL's queued reasons, oldest first, into buf; the queue is emptied. */
static void ssl_reasons(char *buf, size_t len)
{
    buf[0] = 0;
    size_t used = 0;
    unsigned long e;
    while ((e = ERR_get_error()) != 0) {
        const char *r = ERR_reason_error_string(e);
        char tmp[64];
        if (!r) {
            (void)snprintf(tmp, sizeof tmp, "error %lx", e);
            r = tmp;
        }
        int k = snprintf(buf + used, len - used, "%s%s", used ? "; " : "", r);
        if (k < 0 || (size_t)k >= len - used)
            break;
        used += (size_t)k;
    }
}

/* ---- SIGPIPE held around OpenSSL's socket BIO --------------------------------- */

/* write(2) to a reset socket raises SIGPIPE and a library must not change
 * the process's disposition: block it in this thread for the call and take
 * the one the call raised (not one that was pending before). */
struct nopipe {
    sigset_t old;
    int on, before;
};

static void pipe_hold(const struct tconn *t, struct nopipe *p)
{
    p->on = t->sock != NULL;
    if (!p->on)
        return;
    sigset_t set, pend;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigemptyset(&pend);
    (void)sigpending(&pend);
    p->before = sigismember(&pend, SIGPIPE) == 1;
    (void)pthread_sigmask(SIG_BLOCK, &set, &p->old);
}

static void pipe_release(struct nopipe *p)
{
    if (!p->on)
        return;
    int saved = errno;
    sigset_t set, pend;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigemptyset(&pend);
    (void)sigpending(&pend);
    if (!p->before && sigismember(&pend, SIGPIPE) == 1) {
        const struct timespec zero = {0, 0};
        while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    (void)pthread_sigmask(SIG_SETMASK, &p->old, NULL);
    errno = saved;
}

/* The kernel's tls module is loaded (listed as a TCP upper layer). */
static int ktls_listed(void)
{
    FILE *f = fopen("/proc/sys/net/ipv4/tcp_available_ulp", "re");
    if (!f)
        return 0;
    char line[256] = "";
    int found = 0;
    if (fgets(line, sizeof line, f))
        for (char *save = NULL, *w = strtok_r(line, " \n", &save); w && !found;
             w = strtok_r(NULL, " \n", &save))
            found = strcmp(w, "tls") == 0;
    (void)fclose(f);
    return found;
}

/* ---- the BIO: our socket calls ------------------------------------------- */

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static ssize_t sock_recv(struct tconn *t, void *buf, size_t len)
{
    ssize_t r;
    do
        r = recv(t->fd, buf, len, t->sleep ? 0 : MSG_DONTWAIT);
    while (r < 0 && errno == EINTR && !t->sleep);
    if (r < 0)
        t->err = errno;
    return r;
}

static int bio_read(BIO *b, char *buf, int len)
{
    struct tconn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (t->early_off < t->early_len) {
        size_t k = t->early_len - t->early_off;
        if (k > (size_t)len)
            k = (size_t)len;
        memcpy(buf, t->early + t->early_off, k);
        t->early_off += k;
        return (int)k;
    }
    ssize_t r = 0;
    if (t->rlen == 0 && (size_t)len < RAHEAD &&
        (t->rbuf || (t->rbuf = malloc(RAHEAD)) != NULL)) {
        r = sock_recv(t, t->rbuf, RAHEAD);
        t->roff = 0;
        t->rlen = r > 0 ? (size_t)r : 0;
        if (r == 0)
            return 0;
    }
    if (t->rlen > 0) {
        size_t k = t->rlen < (size_t)len ? t->rlen : (size_t)len;
        memcpy(buf, t->rbuf + t->roff, k);
        t->roff += k;
        t->rlen -= k;
        if (t->rlen == 0 && t->tls->cfg.release_buffers) {
            free(t->rbuf);
            t->rbuf = NULL;
        }
        return (int)k;
    }
    if (r == 0) /* a large read (a body), or no buffer: straight into OpenSSL's */
        r = sock_recv(t, buf, (size_t)len);
    if (r >= 0)
        return (int)r;
    if (t->err == EAGAIN || t->err == EWOULDBLOCK || t->err == EINTR)
        BIO_set_retry_read(b);
    return -1;
}

/* A whole record is waiting in rbuf: OpenSSL reads it without the socket.
 * rbuf starts at a record's header whenever OpenSSL is between records
 * (mid-record, it has taken all of rbuf and waits for the socket). */
static int record_buffered(const struct tconn *t)
{
    if (t->rlen < 5)
        return 0;
    const unsigned char *h = t->rbuf + t->roff;
    return t->rlen >= 5 + (((size_t)h[3] << 8) | h[4]);
}

static int bio_write(BIO *b, const char *buf, int len)
{
    struct tconn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t r;
    do
        r = send(t->fd, buf, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r >= 0)
        return (int)r;
    t->err = errno;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        BIO_set_retry_write(b);
    return -1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void bio_setup(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "tcpchan");
    if (m && (!BIO_meth_set_read(m, bio_read) || !BIO_meth_set_write(m, bio_write) ||
              !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create))) {
        BIO_meth_free(m);
        m = NULL;
    }
    bio_method = m;
}

/* ---- generations of contexts ---------------------------------------------- */

static void gen_release(struct gen *g)
{
    if (!g || atomic_fetch_sub(&g->refs, 1) != 1)
        return;
    SSL_CTX_free(g->def);
    for (size_t i = 0; i < g->n; i++) {
        SSL_CTX_free(g->ctx[i]);
        free(g->names[i]);
    }
    free(g->ctx);
    free(g->names);
    free(g);
}

static int name_matches(const char *pattern, const char *name)
{
    if (strncmp(pattern, "*.", 2) == 0) {
        const char *dot = strchr(name, '.');
        return dot && dot != name && strcasecmp(dot + 1, pattern + 2) == 0;
    }
    return strcasecmp(pattern, name) == 0;
}

/* SNI: switch the connection to the certificate for the name asked. */
static int servername_cb(SSL *ssl, int *alert, void *arg)
{
    struct gen *g = arg;
    const struct tc_tls *tls = g->tls;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    long idx = -1;
    if (tls->cfg.select_cert) {
        idx = tls->cfg.select_cert(name, tls->cfg.select_ctx);
        if (idx < -1 || idx >= (long)g->n) {
            *alert = SSL_AD_UNRECOGNIZED_NAME;
            return SSL_TLSEXT_ERR_ALERT_FATAL;
        }
    } else if (name) {
        for (size_t i = 0; i < g->n && idx < 0; i++)
            if (g->names[i] && name_matches(g->names[i], name))
                idx = (long)i;
    }
    if (idx >= 0 && !SSL_set_SSL_CTX(ssl, g->ctx[idx]))
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    return SSL_TLSEXT_ERR_OK;
}

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned inlen, void *arg)
{
    (void)ssl;
    const struct tc_tls *tls = arg;
    unsigned char *o;
    if (SSL_select_next_proto(&o, outlen, tls->alpn_wire, (unsigned)tls->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* nothing in common: go on without ALPN */
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

/* OPTIONAL: any certificate (or none) is let through; the handler sees the
 * result in tc_tls_info::verify_result. */
static int verify_any(int ok, X509_STORE_CTX *x)
{
    (void)ok;
    (void)x;
    return 1;
}

static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct tconn *t = SSL_get_app_data(ssl);
    if (!t || !t->host)
        return 0;
    struct tc_tls *tls = t->tls;
    char *h = strdup(t->host);
    if (!h)
        return 0;
    pthread_mutex_lock(&tls->mu);
    SSL_SESSION_free(tls->last_sess);
    free(tls->last_host);
    tls->last_sess = sess; /* the reference OpenSSL handed us (return 1) */
    tls->last_host = h;
    pthread_mutex_unlock(&tls->mu);
    return 1;
}

/* Certificate and key from files or PEM text into ctx: 0 or -1 (why set). */
static int load_pair(SSL_CTX *ctx, const char *cert_file, const char *key_file,
                     const char *cert_pem, const char *key_pem, char *why, size_t wlen)
{
    const char *what = cert_file ? cert_file : "cert_pem";
    int ok = 0;
    if (cert_file) {
        ok = SSL_CTX_use_certificate_chain_file(ctx, cert_file) == 1;
    } else if (cert_pem) {
        BIO *b = BIO_new_mem_buf(cert_pem, -1);
        X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        ok = x && SSL_CTX_use_certificate(ctx, x) == 1;
        X509_free(x);
        X509 *extra;
        while (ok && (extra = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
            if (SSL_CTX_add0_chain_cert(ctx, extra) != 1) {
                X509_free(extra);
                ok = 0;
            }
        ERR_clear_error(); /* the end of the text reads as "no start line" */
        BIO_free(b);
    }
    if (!ok) {
        char r[WHY_MAX];
        ssl_reasons(r, sizeof r);
        (void)snprintf(why, wlen, "certificate %s: %s", what, *r ? r : "none given");
        return -1;
    }
    what = key_file ? key_file : "key_pem";
    ok = 0;
    if (key_file) {
        ok = SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) == 1;
    } else if (key_pem) {
        BIO *b = BIO_new_mem_buf(key_pem, -1);
        EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
        ok = k && SSL_CTX_use_PrivateKey(ctx, k) == 1;
        EVP_PKEY_free(k);
        BIO_free(b);
    }
    if (ok && SSL_CTX_check_private_key(ctx) != 1)
        ok = 0;
    if (!ok) {
        char r[WHY_MAX];
        ssl_reasons(r, sizeof r);
        (void)snprintf(why, wlen, "private key %s: %s", what, *r ? r : "none given");
        return -1;
    }
    return 0;
}

/* One context with the shared settings, and its certificate: NULL on failure (why set). */
static SSL_CTX *make_ctx(struct tc_tls *tls, const char *cert_file, const char *key_file,
                         const char *cert_pem, const char *key_pem, char *why, size_t wlen)
{
    const tc_tls_config *c = &tls->cfg;
    SSL_CTX *ctx = SSL_CTX_new(tls->server ? TLS_server_method() : TLS_client_method());
    if (!ctx) {
        (void)snprintf(why, wlen, "out of memory");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, c->min_version == TC_TLS_1_3 ? TLS1_3_VERSION
                                                                    : TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (tls->ktls)
        SSL_CTX_set_options(ctx, SSL_OP_ENABLE_KTLS);
    if (c->release_buffers) /* less memory per idle connection, more CPU per record */
        SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    int verify = c->verify;
    if (verify == TC_TLS_VERIFY_DEFAULT)
        verify = tls->server ? TC_TLS_VERIFY_NONE : TC_TLS_VERIFY_REQUIRED;
    const char *fail = NULL;
    if ((cert_file || cert_pem || key_file || key_pem) &&
        load_pair(ctx, cert_file, key_file, cert_pem, key_pem, why, wlen) < 0)
        goto out;
    if (verify != TC_TLS_VERIFY_NONE) {
        if (c->ca_file || c->ca_dir) {
            if (SSL_CTX_load_verify_locations(ctx, c->ca_file, c->ca_dir) != 1)
                fail = "CA file or directory";
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            fail = "the system's CA store";
        }
        if (!fail && tls->server && c->ca_file) {
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(c->ca_file);
            if (names)
                SSL_CTX_set_client_CA_list(ctx, names);
        }
        int mode = SSL_VERIFY_PEER;
        if (tls->server && verify == TC_TLS_VERIFY_REQUIRED)
            mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_verify(ctx, mode, verify == TC_TLS_VERIFY_OPTIONAL ? verify_any : NULL);
    }
    if (fail) {
        char r[WHY_MAX];
        ssl_reasons(r, sizeof r);
        (void)snprintf(why, wlen, "%s: %s", fail, r);
        goto out;
    }
    if (tls->server) {
        static const unsigned char sid[] = "tcpchan";
        SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
        if (c->no_resumption) {
            SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
            SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
            SSL_CTX_set_num_tickets(ctx, 0);
        }
        if (tls->alpn_wire)
            SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, tls);
    } else {
        if (tls->alpn_wire && SSL_CTX_set_alpn_protos(ctx, tls->alpn_wire,
                                                      (unsigned)tls->alpn_len) != 0) {
            (void)snprintf(why, wlen, "alpn: not accepted");
            goto out;
        }
        if (!c->no_resumption) {
            SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                                    SSL_SESS_CACHE_NO_INTERNAL_STORE);
            SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
        }
    }
    return ctx;
out:
    SSL_CTX_free(ctx);
    return NULL;
}

/* A complete generation from the configuration (the files read now): NULL
 * on failure, why set. */
static struct gen *gen_build(struct tc_tls *tls, char *why, size_t wlen)
{
    const tc_tls_config *c = &tls->cfg;
    struct gen *g = calloc(1, sizeof *g);
    if (!g || (c->ncerts && (!(g->ctx = calloc(c->ncerts, sizeof(SSL_CTX *))) ||
                             !(g->names = calloc(c->ncerts, sizeof(char *)))))) {
        (void)snprintf(why, wlen, "out of memory");
        if (g) {
            free(g->ctx);
            free(g);
        }
        return NULL;
    }
    atomic_init(&g->refs, 1);
    g->tls = tls;
    g->def = make_ctx(tls, c->cert_file, c->key_file, c->cert_pem, c->key_pem, why, wlen);
    for (size_t i = 0; g->def && i < c->ncerts; i++, g->n++) {
        const tc_tls_cert *e = &tls->certs[i];
        int fail = 0;
        g->names[i] = dup_str(e->name, &fail);
        g->ctx[i] = fail ? NULL
                         : make_ctx(tls, e->cert_file, e->key_file, e->cert_pem, e->key_pem,
                                    why, wlen);
        if (!g->ctx[i]) {
            g->n++;
            gen_release(g);
            return NULL;
        }
    }
    if (!g->def) {
        gen_release(g);
        return NULL;
    }
    if (tls->server && (c->ncerts || c->select_cert)) {
        SSL_CTX_set_tlsext_servername_callback(g->def, servername_cb);
        SSL_CTX_set_tlsext_servername_arg(g->def, g);
    }
    return g;
}

/* ---- the transport ---------------------------------------------------------- */

static const tc_transport_ops tls_ops;

/* The reason of a failure, kept for why() (and OpenSSL's queue emptied). */
static void note_failure(struct tconn *t, const char *fallback)
{
    char r[WHY_MAX];
    ssl_reasons(r, sizeof r);
    long v = SSL_get_verify_result(t->ssl);
    if (v != X509_V_OK && SSL_get0_peer_certificate(t->ssl))
        (void)snprintf(t->why, sizeof t->why, "%.120s (certificate: %.60s)", *r ? r : fallback,
                 X509_verify_cert_error_string(v));
    else
        (void)snprintf(t->why, sizeof t->why, "%s", *r ? r : fallback);
}

/* An OpenSSL result that is not success, as our codes. */
static int map_error(struct tconn *t, int ret, unsigned *want, int in_handshake)
{
    int e = SSL_get_error(t->ssl, ret);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        if (t->sleep && t->err == EINTR) {
            t->err = 0;
            return -EINTR; /* asleep in recv, a signal came: the caller looks at its flags */
        }
        *want = TC_TRANSPORT_WANT_READ;
        return -EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        *want = TC_TRANSPORT_WANT_WRITE;
        return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        t->broken = 1;
        if (t->err && t->err != EAGAIN) {
            (void)snprintf(t->why, sizeof t->why, "%s", strerror(t->err));
            return in_handshake ? TC_EHANDSHAKE : -t->err;
        }
        ERR_clear_error();
        (void)snprintf(t->why, sizeof t->why, "the peer closed without close_notify");
        return in_handshake ? TC_EHANDSHAKE : TC_ETRUNCATED;
    default: {
        t->broken = 1;
        unsigned long top = ERR_peek_last_error();
        if (ERR_GET_REASON(top) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            ERR_clear_error();
            (void)snprintf(t->why, sizeof t->why, "the peer closed without close_notify");
            return in_handshake ? TC_EHANDSHAKE : TC_ETRUNCATED;
        }
        note_failure(t, "TLS protocol error");
        return in_handshake ? TC_EHANDSHAKE : -EPROTO;
    }
    }
}

static int t_attach(tc_transport *tr, int fd, int client, const char *host, const void *early,
                    size_t early_len, void **out)
{
    struct tc_tls *tls = (struct tc_tls *)tr;
    if (pthread_once(&bio_once, bio_setup) != 0 || !bio_method)
        return -ENOMEM;
    if (client == tls->server)
        return -EINVAL; /* a server's context on a dialled socket, or the reverse */
    struct tconn *t = calloc(1, sizeof *t + early_len);
    if (!t)
        return -ENOMEM;
    t->fd = fd;
    t->tls = tls;
    if (early_len) {
        unsigned char *copy = (unsigned char *)(t + 1);
        memcpy(copy, early, early_len);
        t->early = copy;
        t->early_len = early_len;
    }
    pthread_mutex_lock(&tls->mu);
    struct gen *g = tls->cur;
    atomic_fetch_add(&g->refs, 1);
    pthread_mutex_unlock(&tls->mu);
    t->gen = g;
    int fail = 0;
    const char *name = tls->cfg.server_name ? tls->cfg.server_name : host;
    t->host = client ? dup_str(name, &fail) : NULL;
    BIO *b = NULL;
    if (fail || !(t->ssl = SSL_new(g->def)) || !(b = BIO_new(bio_method)))
        goto nomem;
    BIO_set_data(b, t);
    /* kTLS is set up during the handshake, by OpenSSL, on its own socket
     * BIO only: that one writes until the handshake says whether the kernel
     * took the keys; reads stay ours (bytes behind a PROXY header). */
    if (tls->ktls && (t->sock = BIO_new_socket(fd, BIO_NOCLOSE)) != NULL) {
        SSL_set0_rbio(t->ssl, b);
        SSL_set0_wbio(t->ssl, t->sock);
    } else {
        SSL_set_bio(t->ssl, b, b);
    }
    SSL_set_app_data(t->ssl, t);
    if (client) {
        SSL_set_connect_state(t->ssl);
        if (t->host) {
            unsigned char ip[16];
            int is_ip = inet_pton(AF_INET, t->host, ip) == 1 || inet_pton(AF_INET6, t->host, ip) == 1;
            /* SNI carries names only; an address is checked against the certificate's IPs. */
            if (!is_ip && SSL_set_tlsext_host_name(t->ssl, t->host) != 1)
                goto nomem;
            int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), t->host)
                           : SSL_set1_host(t->ssl, t->host);
            if (ok != 1)
                goto nomem;
            pthread_mutex_lock(&tls->mu);
            if (tls->last_sess && tls->last_host && strcmp(tls->last_host, t->host) == 0)
                (void)SSL_set_session(t->ssl, tls->last_sess);
            pthread_mutex_unlock(&tls->mu);
        }
    } else {
        SSL_set_accept_state(t->ssl);
    }
    *out = t;
    return 0;
nomem:
    ERR_clear_error();
    SSL_free(t->ssl);
    gen_release(g);
    free(t->host);
    free(t);
    return -ENOMEM;
}

static int t_handshake(void *st, unsigned *want)
{
    struct tconn *t = st;
    if (t->done)
        return 0;
    if (t->broken)
        return TC_EHANDSHAKE;
    t->sleep = 0;
    t->err = 0;
    ERR_clear_error();
    struct nopipe np;
    pipe_hold(t, &np);
    int r = SSL_do_handshake(t->ssl);
    if (r <= 0 && t->sock && !t->err)
        t->err = errno; /* the socket BIO's write failed: map_error reports it */
    pipe_release(&np);
    if (r == 1) {
        t->done = 1;
        if (t->sock && BIO_get_ktls_send(t->sock)) {
            t->ktls = 1;
        } else if (t->sock) {
            /* No kTLS (no module, another cipher): our BIO writes again,
             * without the SIGPIPE guard. The handshake's flight is out. */
            BIO *ours = SSL_get_rbio(t->ssl);
            BIO_up_ref(ours);
            SSL_set0_wbio(t->ssl, ours); /* frees the socket BIO (not the descriptor) */
            t->sock = NULL;
        }
        return 0;
    }
    int rc = map_error(t, r, want, 1);
    if (rc == 0) { /* a close_notify in the middle of the handshake */
        t->broken = 1;
        (void)snprintf(t->why, sizeof t->why, "the peer closed during the handshake");
        rc = TC_EHANDSHAKE;
    }
    return rc;
}

static ssize_t t_recv(void *st, void *buf, size_t n, int flags, unsigned *want)
{
    struct tconn *t = st;
    if (t->rerr) /* sticky: what came behind the last bytes returned */
        return t->rerr == TC_EOF ? 0 : t->rerr;
    size_t got = 0;
    t->sleep = (flags & TC_TRANSPORT_SLEEP) != 0;
    while (got < n) {
        size_t k = 0;
        t->err = 0;
        ERR_clear_error();
        struct nopipe np; /* a read may write (an alert, a key update) */
        pipe_hold(t, &np);
        int ok = SSL_read_ex(t->ssl, (unsigned char *)buf + got, n - got, &k);
        pipe_release(&np);
        if (ok == 1) {
            got += k;
            t->sleep = 0; /* more only if it is there already */
            /* Nothing held: the socket is most likely empty, and a recv to
             * learn it costs a system call per request (the socket is
             * level-triggered for whoever waits on it). */
            if (SSL_pending(t->ssl) <= 0 && t->rlen == 0)
                break;
            continue;
        }
        int rc = map_error(t, 0, want, 0);
        t->sleep = 0;
        if (got == 0)
            return rc;
        if (rc != -EAGAIN && rc != -EINTR)
            t->rerr = rc == 0 ? TC_EOF : rc; /* after the bytes: the next call says it */
        break;
    }
    return (ssize_t)got;
}

static ssize_t t_send(void *st, const struct iovec *iov, int cnt, unsigned *want)
{
    struct tconn *t = st;
    size_t sent = 0, off = 0;
    int i = 0;
    t->sleep = 0;
    while (i < cnt) {
        if (off == iov[i].iov_len) {
            i++;
            off = 0;
            continue;
        }
        const unsigned char *p = (const unsigned char *)iov[i].iov_base + off;
        size_t len = iov[i].iov_len - off;
        /* Small pieces (a frame's header and its payload) go as one record.
         * A retried send starts with the same bytes and is at least as long,
         * as OpenSSL requires. */
        if (len < GATHER && i + 1 < cnt) {
            if (!t->gbuf && !(t->gbuf = malloc(GATHER)))
                return sent ? (ssize_t)sent : -ENOMEM;
            size_t g = 0, o = off;
            for (int j = i; j < cnt && g < GATHER; j++, o = 0) {
                size_t k = iov[j].iov_len - o;
                if (k > GATHER - g)
                    k = GATHER - g;
                memcpy(t->gbuf + g, (const unsigned char *)iov[j].iov_base + o, k);
                g += k;
            }
            p = t->gbuf;
            len = g;
        }
        size_t w = 0;
        t->err = 0;
        ERR_clear_error();
        struct nopipe np;
        pipe_hold(t, &np);
        int ok = SSL_write_ex(t->ssl, p, len, &w);
        if (ok != 1 && t->sock)
            t->err = errno;
        pipe_release(&np);
        if (ok != 1) {
            int rc = map_error(t, 0, want, 0);
            if (rc == 0)
                rc = -EPIPE; /* the peer's close_notify came: it reads no more */
            return sent ? (ssize_t)sent : rc;
        }
        sent += w;
        while (w > 0) { /* advance through the vector */
            size_t k = iov[i].iov_len - off;
            if (w < k) {
                off += w;
                break;
            }
            w -= k;
            i++;
            off = 0;
        }
    }
    return (ssize_t)sent;
}

static size_t t_pending(void *st)
{
    struct tconn *t = st;
    if (t->broken)
        return 0;
    int p = SSL_pending(t->ssl);
    return (p > 0 ? (size_t)p : 0) + (t->early_len - t->early_off) +
           (size_t)record_buffered(t);
}

static int t_shutdown(void *st, unsigned *want)
{
    struct tconn *t = st;
    if (!t->done || t->broken || (SSL_get_shutdown(t->ssl) & SSL_SENT_SHUTDOWN))
        return 0;
    t->sleep = 0;
    t->err = 0;
    ERR_clear_error();
    struct nopipe np;
    pipe_hold(t, &np);
    int r = SSL_shutdown(t->ssl);
    if (r < 0 && t->sock)
        t->err = errno;
    pipe_release(&np);
    if (r >= 0)
        return 0;
    int rc = map_error(t, r, want, 0);
    return rc == -EAGAIN ? rc : 0;
}

/* kTLS: the kernel reads the file and encrypts it (SSL_sendfile is sendfile(2)). */
static ssize_t t_sendfile(void *st, int file_fd, off_t *offset, size_t n, unsigned *want)
{
    struct tconn *t = st;
    if (!t->ktls || t->broken)
        return -ENOTSUP;
    ERR_clear_error();
    struct nopipe np;
    pipe_hold(t, &np);
    ossl_ssize_t r = SSL_sendfile(t->ssl, file_fd, *offset, n, 0);
    int e = errno;
    pipe_release(&np);
    if (r >= 0) {
        *offset += (off_t)r;
        return (ssize_t)r;
    }
    ERR_clear_error();
    if (e == EAGAIN || e == EWOULDBLOCK || e == EINTR || e == EBUSY) {
        *want = TC_TRANSPORT_WANT_WRITE;
        return -EAGAIN;
    }
    t->broken = 1;
    (void)snprintf(t->why, sizeof t->why, "sendfile: %s", strerror(e ? e : EIO));
    return -(e ? e : EIO);
}

static const char *t_why(void *st)
{
    return ((struct tconn *)st)->why;
}

static void t_free(void *st)
{
    struct tconn *t = st;
    if (!t)
        return;
    SSL_free(t->ssl);
    ERR_clear_error(); /* nothing of ours stays in this thread's queue */
    gen_release(t->gen);
    free(t->gbuf);
    free(t->rbuf);
    free(t->host);
    free(t);
}

static const tc_transport_ops tls_ops = {
    .name = "TLS",
    .attach = t_attach,
    .handshake = t_handshake,
    .recv = t_recv,
    .send = t_send,
    .pending = t_pending,
    .shutdown = t_shutdown,
    .why = t_why,
    .free = t_free,
    .sendfile = t_sendfile,
};

/* ---- the public API --------------------------------------------------------- */

/* "h2,http/1.1" into ALPN's wire format (a length byte before each): 0 or -1. */
static int alpn_encode(struct tc_tls *tls, const char *list)
{
    size_t n = strlen(list);
    unsigned char *w = malloc(n + 1);
    if (!w)
        return -1;
    size_t len = 0;
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t k = e ? (size_t)(e - p) : strlen(p);
        if (k == 0 || k > 255) {
            free(w);
            return -1;
        }
        w[len++] = (unsigned char)k;
        memcpy(w + len, p, k); /* NOLINT(bugprone-not-null-terminated-result): length-prefixed */
        len += k;
        p += k + (e ? 1 : 0);
    }
    if (len == 0) {
        free(w);
        return -1;
    }
    tls->alpn_wire = w;
    tls->alpn_len = len;
    return 0;
}

static void tls_free(struct tc_tls *tls)
{
    if (!tls)
        return;
    gen_release(tls->cur);
    for (size_t i = 0; tls->certs && i < tls->cfg.ncerts; i++) {
        tc_tls_cert *e = &tls->certs[i];
        free((char *)e->name);
        free((char *)e->cert_file);
        free((char *)e->key_file);
        free((char *)e->cert_pem);
        free((char *)e->key_pem);
    }
    free(tls->certs);
    free((char *)tls->cfg.cert_file);
    free((char *)tls->cfg.key_file);
    free((char *)tls->cfg.cert_pem);
    free((char *)tls->cfg.key_pem);
    free((char *)tls->cfg.alpn);
    free((char *)tls->cfg.ca_file);
    free((char *)tls->cfg.ca_dir);
    free((char *)tls->cfg.server_name);
    free(tls->alpn_wire);
    SSL_SESSION_free(tls->last_sess);
    free(tls->last_host);
    pthread_mutex_destroy(&tls->mu);
    free(tls);
}

static int create(tc_tls **out, const tc_tls_config *cfg, int server)
{
    static const tc_tls_config defaults = TC_TLS_CONFIG_INIT;
    if (!out)
        return -EINVAL;
    if (!cfg)
        cfg = &defaults;
    struct tc_tls *tls = calloc(1, sizeof *tls);
    if (!tls)
        return -ENOMEM;
    if (pthread_mutex_init(&tls->mu, NULL) != 0) {
        free(tls);
        return -ENOMEM;
    }
    tls->base.ops = &tls_ops;
    tls->base.handshake_timeout_ms = cfg->handshake_timeout_ms > 0 ? cfg->handshake_timeout_ms : 0;
    tls->server = server;
    tls->cfg = *cfg;
    int fail = 0;
    tc_tls_config *c = &tls->cfg;
    c->cert_file = dup_str(cfg->cert_file, &fail);
    c->key_file = dup_str(cfg->key_file, &fail);
    c->cert_pem = dup_str(cfg->cert_pem, &fail);
    c->key_pem = dup_str(cfg->key_pem, &fail);
    c->alpn = dup_str(cfg->alpn, &fail);
    c->ca_file = dup_str(cfg->ca_file, &fail);
    c->ca_dir = dup_str(cfg->ca_dir, &fail);
    c->server_name = dup_str(cfg->server_name, &fail);
    c->certs = NULL;
    c->ncerts = 0;
    if (!fail && cfg->ncerts && cfg->certs) {
        if (!(tls->certs = calloc(cfg->ncerts, sizeof *tls->certs)))
            fail = 1;
        for (size_t i = 0; !fail && i < cfg->ncerts; i++) {
            const tc_tls_cert *s = &cfg->certs[i];
            tc_tls_cert *d = &tls->certs[i];
            c->ncerts = i + 1;
            d->name = dup_str(s->name, &fail);
            d->cert_file = dup_str(s->cert_file, &fail);
            d->key_file = dup_str(s->key_file, &fail);
            d->cert_pem = dup_str(s->cert_pem, &fail);
            d->key_pem = dup_str(s->key_pem, &fail);
        }
        c->certs = tls->certs;
    }
    if (fail) {
        tls_free(tls);
        return -ENOMEM;
    }
    int rc = TC_EBADCONFIG;
    char why[WHY_MAX + 64] = "";
    tls->ktls = c->ktls == TC_TLS_KTLS_TRY || (c->ktls == TC_TLS_KTLS_AUTO && ktls_listed());
    if ((int)c->min_version < TC_TLS_DEFAULT_VERSION || (int)c->min_version > TC_TLS_1_3)
        (void)snprintf(why, sizeof why, "min_version is not a tc_tls_version");
    else if ((int)c->verify < TC_TLS_VERIFY_DEFAULT || (int)c->verify > TC_TLS_VERIFY_REQUIRED)
        (void)snprintf(why, sizeof why, "verify is not a tc_tls_verify");
    else if ((int)c->ktls < TC_TLS_KTLS_AUTO || (int)c->ktls > TC_TLS_KTLS_TRY)
        (void)snprintf(why, sizeof why, "ktls is not a tc_tls_ktls");
    else if (server && !c->cert_file && !c->cert_pem)
        (void)snprintf(why, sizeof why, "a server needs cert_file or cert_pem");
    else if (c->alpn && alpn_encode(tls, c->alpn) < 0)
        (void)snprintf(why, sizeof why, "alpn: \"%s\" is not a comma-separated list of 1-255 byte names",
                 c->alpn);
    else if ((tls->cur = gen_build(tls, why, sizeof why)) != NULL)
        rc = 0;
    if (rc < 0) {
        tls_log(tls, "TLS configuration: %s", why);
        tls_free(tls);
        return rc;
    }
    *out = tls;
    return 0;
}

int tc_tls_server_create(tc_tls **out, const tc_tls_config *cfg)
{
    if (!cfg)
        return -EINVAL;
    return create(out, cfg, 1);
}

int tc_tls_client_create(tc_tls **out, const tc_tls_config *cfg)
{
    return create(out, cfg, 0);
}

tc_transport *tc_tls_transport(tc_tls *tls)
{
    return tls ? &tls->base : NULL;
}

int tc_tls_reload(tc_tls *tls)
{
    if (!tls)
        return -EINVAL;
    char why[WHY_MAX + 64] = "";
    struct gen *g = gen_build(tls, why, sizeof why);
    if (!g) {
        tls_log(tls, "TLS reload failed, the old certificates stay: %s", why);
        return TC_EBADCONFIG;
    }
    pthread_mutex_lock(&tls->mu);
    struct gen *old = tls->cur;
    tls->cur = g;
    pthread_mutex_unlock(&tls->mu);
    gen_release(old);
    return 0;
}

void tc_tls_destroy(tc_tls *tls)
{
    tls_free(tls);
}

int tc_tls_conn_info(const tc_conn *conn, tc_tls_info *out)
{
    if (!conn || !out)
        return -EINVAL;
    void *st;
    tc_transport *tr = tc_conn_transport(conn, &st);
    if (!tr || tr->ops != &tls_ops || !st)
        return -ENOTSUP;
    const struct tconn *t = st;
    SSL *ssl = t->ssl;
    memset(out, 0, sizeof *out);
    (void)snprintf(out->version, sizeof out->version, "%s", SSL_get_version(ssl));
    const char *cipher = SSL_get_cipher_name(ssl);
    (void)snprintf(out->cipher, sizeof out->cipher, "%s", cipher ? cipher : "");
    const unsigned char *a = NULL;
    unsigned alen = 0;
    SSL_get0_alpn_selected(ssl, &a, &alen);
    if (a && alen < sizeof out->alpn) {
        memcpy(out->alpn, a, alen);
        out->alpn[alen] = 0;
    }
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    (void)snprintf(out->server_name, sizeof out->server_name, "%s", sni && !t->host ? sni : "");
    X509 *peer = SSL_get0_peer_certificate(ssl);
    if (peer) {
        out->peer_cert = 1;
        BIO *b = BIO_new(BIO_s_mem());
        if (b && X509_NAME_print_ex(b, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253) >= 0) {
            int k = BIO_read(b, out->peer_subject, (int)sizeof out->peer_subject - 1);
            out->peer_subject[k > 0 ? k : 0] = 0;
        }
        BIO_free(b);
    }
    out->verify_result = SSL_get_verify_result(ssl);
    out->resumed = SSL_session_reused(ssl);
    out->ktls_send = t->ktls;
    return 0;
}
