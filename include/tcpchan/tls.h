/* SPDX-License-Identifier: MIT */
/**
 * @file tls.h
 * @brief libtcpchan-tls: TLS 1.2 and 1.3 for servers and tc_dial(), on OpenSSL 3.
 *
 * A separate library (`-ltcpchan-tls`, pkg-config `tcpchan-tls`, CMake
 * `tcpchan::tls`): libtcpchan itself never links OpenSSL. Create a tc_tls,
 * and put its transport in the server's or the dialler's config:
 * @code
 * tc_tls_config tc = TC_TLS_CONFIG_INIT;
 * tc.cert_file = "server.pem";   // the certificate chain, leaf first
 * tc.key_file = "server.key";
 * tc_tls *tls;
 * if (tc_tls_server_create(&tls, &tc) < 0) return 1;   // why: the log hook
 * tc_server_config cfg = TC_SERVER_CONFIG_INIT;
 * cfg.transport = tc_tls_transport(tls);
 * // ... tc_server_create, serve_forever, destroy; then:
 * tc_tls_destroy(tls);
 * @endcode
 * The channel API does not change: reads, frames, timeouts, message
 * handlers, send_all, tc_conn_shutdown_write() (a close_notify, then the
 * TCP half-close) work in every mode. A stream that ends without the
 * peer's close_notify is an error, TC_ETRUNCATED, never a clean end.
 * Renegotiation is off. See docs/tls.md.
 */
#ifndef TCPCHAN_TLS_H
#define TCPCHAN_TLS_H

#include <stddef.h>

#include "conn.h"
#include "server.h"
#include "transport.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @def TC_TLS_API
 * @brief Marks the functions libtcpchan-tls exports (its own library, built
 *        with hidden visibility as libtcpchan is).
 */
#if defined(__GNUC__) || defined(__clang__)
#define TC_TLS_API __attribute__((visibility("default")))
#else
#define TC_TLS_API
#endif

/** @brief A TLS context: certificates, keys and settings, shared by every
 *         connection it is given to. Opaque. */
typedef struct tc_tls tc_tls;

/** @brief Whether and how the peer must present a certificate. */
typedef enum tc_tls_verify {
    /** The default: a server asks for none; a client verifies the server (REQUIRED). */
    TC_TLS_VERIFY_DEFAULT = 0,
    TC_TLS_VERIFY_NONE,     /**< no verification (a client accepts any server: tests only) */
    TC_TLS_VERIFY_OPTIONAL, /**< server: ask for a client certificate; none, or one that
                                 fails verification, is accepted (see tc_tls_info::verify_result) */
    TC_TLS_VERIFY_REQUIRED  /**< the peer must present a certificate that verifies */
} tc_tls_verify;

/** @brief Protocol versions for tc_tls_config::min_version. */
typedef enum tc_tls_version {
    TC_TLS_DEFAULT_VERSION = 0, /**< the default: TLS 1.2 */
    TC_TLS_1_2,                 /**< TLS 1.2 */
    TC_TLS_1_3                  /**< TLS 1.3 */
} tc_tls_version;

/** @brief kTLS for tc_tls_config::ktls: the kernel encrypting what a
 *         connection sends, so that tc_conn_sendfile() sends a file without
 *         reading it into user space. Needs OpenSSL built with kTLS and the
 *         kernel's tls module; a connection that cannot have it (another
 *         cipher, the module missing) encrypts in user space as usual. */
typedef enum tc_tls_ktls {
    /** The default: on when the kernel lists the tls module in
     *  /proc/sys/net/ipv4/tcp_available_ulp (it is loaded). */
    TC_TLS_KTLS_AUTO = 0,
    TC_TLS_KTLS_OFF, /**< never */
    /** Asked of the kernel for every connection, even when the module is not
     *  listed (a kernel that loads it on demand). */
    TC_TLS_KTLS_TRY
} tc_tls_ktls;

/** @brief One more certificate of a server, chosen by the name the client
 *         asks for (SNI). Files or PEM text, as in tc_tls_config. */
typedef struct tc_tls_cert {
    const char *name;      /**< the host name it serves; "*.example.com" matches one label */
    const char *cert_file; /**< PEM certificate chain file, leaf first (or cert_pem) */
    const char *key_file;  /**< PEM private key file (or key_pem) */
    const char *cert_pem;  /**< the chain as PEM text, NUL-terminated */
    const char *key_pem;   /**< the key as PEM text, NUL-terminated */
} tc_tls_cert;

/** @brief Configuration of a tc_tls. Zero-initialise, or use TC_TLS_CONFIG_INIT.
 *
 * Strings and arrays are copied by create. File names are kept:
 * tc_tls_reload() reads the files again. */
typedef struct tc_tls_config {
    /** Certificate chain, PEM file, leaf first. A server needs this or cert_pem;
     *  a client sends it (with key_file) as its client certificate. */
    const char *cert_file;
    const char *key_file;    /**< private key, PEM file (or key_pem) */
    const char *cert_pem;    /**< the chain as PEM text instead of a file */
    const char *key_pem;     /**< the key as PEM text instead of a file */
    /** Server: more certificates chosen by SNI (the one above is the default). */
    const tc_tls_cert *certs;
    size_t ncerts;           /**< entries of certs */
    /** Server: choose the certificate for the name the client asked for
     *  (NULL when it sent none): an index into certs, -1 for the default, or
     *  -2 to refuse the handshake. Called in the thread that runs the
     *  handshake. NULL: certs are matched by name. */
    int (*select_cert)(const char *server_name, void *ctx);
    void *select_ctx;        /**< passed to select_cert */
    /** ALPN protocols, comma-separated, in order of preference ("h2,http/1.1").
     *  A server picks the first of its own the client offers (none shared:
     *  no ALPN); a client offers them. NULL: no ALPN. */
    const char *alpn;
    tc_tls_version min_version; /**< the oldest version accepted; default TLS 1.2 */
    tc_tls_verify verify;    /**< peer certificates; see tc_tls_verify */
    /** CA certificates (PEM file) that verify the peer: a server's client
     *  certificates, a client's server (NULL: the system's store). */
    const char *ca_file;
    const char *ca_dir;      /**< a hashed CA directory, as OpenSSL's -CApath */
    /** Client: the name sent as SNI and checked against the server's
     *  certificate; NULL: the host part of the dialled address. */
    const char *server_name;
    int no_resumption;       /**< 1: no session resumption (on by default) */
    int handshake_timeout_ms; /**< the longest a handshake may take; 0 = 10000 ms */
    /** 1: OpenSSL frees a connection's buffers between records (an idle
     *  connection keeps about 34 KiB less, a small request costs about 30%
     *  more server CPU: docs/tls.md). 0 (the default): it keeps them. */
    int release_buffers;
    /** kTLS (the kernel encrypts what is sent; tc_conn_sendfile() without a
     *  copy): see tc_tls_ktls. Reported in tc_tls_info::ktls_send. */
    tc_tls_ktls ktls;
    /** Messages of the TLS context itself (a reload that failed and why), at
     *  TC_LOG_WARN; a connection's handshake failure goes to the server's
     *  log hook instead, with OpenSSL's reason. Called in the thread that
     *  calls create or reload. NULL: none. Never stderr. */
    void (*log)(tc_log_level level, const char *msg, void *ctx);
    void *log_ctx;           /**< passed to log */
} tc_tls_config;

/** @brief Initialiser for tc_tls_config: every field at its default. */
#define TC_TLS_CONFIG_INIT {0}

/**
 * @brief Create a server's TLS context.
 * @param[out] out Receives the context; written only on success.
 * @param cfg      The configuration (copied).
 * @return 0; -EINVAL for NULL; TC_EBADCONFIG for a missing or unreadable
 *         certificate or key, a key that does not match, a bad CA file or ALPN
 *         list (the log hook says which and why); -ENOMEM.
 * @par Thread safety
 * Safe from any thread.
 * @par Ownership
 * The caller destroys it with tc_tls_destroy() after every server and
 * channel using it is gone.
 */
TC_TLS_API int tc_tls_server_create(tc_tls **out, const tc_tls_config *cfg);

/**
 * @brief Create a client's TLS context for tc_dial() (@ref tc_dial_config::transport).
 *
 * The server is verified by default (cfg->ca_file / ca_dir, else the
 * system's store), SNI is sent and the name checked against its
 * certificate. Sessions are resumed with the same host when possible.
 * @param[out] out Receives the context; written only on success.
 * @param cfg      The configuration (copied), or NULL for the defaults.
 * @return 0, -EINVAL for NULL @p out, TC_EBADCONFIG (the log hook says why), -ENOMEM.
 * @par Thread safety
 * Safe from any thread; one context may serve dials from several threads.
 * @par Ownership
 * As tc_tls_server_create().
 */
TC_TLS_API int tc_tls_client_create(tc_tls **out, const tc_tls_config *cfg);

/**
 * @brief The transport to put in @ref tc_server_config::transport or
 *        @ref tc_dial_config::transport.
 * @param tls The context.
 * @return The transport (part of @p tls), or NULL for NULL.
 * @par Thread safety
 * Safe from any thread.
 */
TC_TLS_API tc_transport *tc_tls_transport(tc_tls *tls);

/**
 * @brief Read the certificate and key files (and the SNI certificates and
 *        the CA file) again: new connections get the new ones, connections
 *        already open keep theirs. A file that fails keeps everything as it
 *        was, and the log hook says why.
 * @param tls The context.
 * @return 0, TC_EBADCONFIG (nothing changed), -EINVAL for NULL, -ENOMEM.
 * @par Thread safety
 * Safe from any thread, while servers accept (not from a signal handler:
 * set a flag there, or use tc_loop_post()).
 */
TC_TLS_API int tc_tls_reload(tc_tls *tls);

/**
 * @brief Destroy a context. NULL does nothing.
 * @param tls The context; no server or channel may still use it.
 * @par Thread safety
 * Not with any other call on the same context.
 */
TC_TLS_API void tc_tls_destroy(tc_tls *tls);

/** @brief What was negotiated on a TLS channel (tc_tls_conn_info()). */
typedef struct tc_tls_info {
    char version[16];       /**< "TLSv1.3", "TLSv1.2" */
    char cipher[64];        /**< the cipher suite, OpenSSL's name */
    char alpn[64];          /**< the ALPN protocol agreed, or "" */
    char server_name[256];  /**< the SNI name the client sent (server side), or "" */
    char peer_subject[256]; /**< the peer certificate's subject (RFC 2253), or "" for none */
    int peer_cert;          /**< 1 if the peer presented a certificate */
    long verify_result;     /**< OpenSSL's verification result (0: X509_V_OK) */
    int resumed;            /**< 1 if the session was resumed */
    int ktls_send;          /**< 1 if the kernel encrypts what is sent (kTLS; sendfile without a copy) */
} tc_tls_info;

/**
 * @brief What a TLS channel negotiated: version, cipher, ALPN, SNI and the
 *        peer's certificate.
 * @param conn The channel (a server's connection once setup runs, or a dialled one).
 * @param[out] out Filled on success.
 * @return 0, -EINVAL for NULL, -ENOTSUP if the channel is not on libtcpchan-tls.
 * @par Thread safety
 * From the thread that owns the channel.
 */
TC_TLS_API int tc_tls_conn_info(const tc_conn *conn, tc_tls_info *out);

#ifdef __cplusplus
}
#endif

#endif /* TCPCHAN_TLS_H */
