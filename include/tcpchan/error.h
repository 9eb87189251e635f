/* SPDX-License-Identifier: MIT */
/**
 * @file error.h
 * @brief Error codes and their descriptions.
 *
 * Every libtcpchan function that can fail returns an `int` (or `ssize_t`):
 * zero or a non-negative count on success, a negative code on failure.
 * System errors are negated errno values (`-ECONNRESET`, `-ETIMEDOUT`,
 * `-EADDRINUSE`, ...). The library's own conditions use the codes below,
 * numbered from -4100 downward so they never collide with an errno value.
 * The range -4100 to -4198 is reserved for them: no library code, present
 * or future, lies outside it.
 *
 * Comparing a result with a negated errno value is part of the API, so this
 * header (and the umbrella <tcpchan/tcpchan.h>, which includes it) includes
 * `<errno.h>`: `rc == -ETIMEDOUT` needs no other include.
 */
#ifndef TCPCHAN_ERROR_H
#define TCPCHAN_ERROR_H

#include <errno.h> /* the E* constants the codes are compared with */

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief The library's own error codes, as one list: XX(name, value, description).
 *
 * Used to generate the tc_error enum, tc_strerror() and tc_err_name(); it is
 * public so that applications can build their own tables from it.
 */
#define TC_ERROR_MAP(XX)                                                       \
    XX(EOF, -4100, "end of stream")                                            \
    XX(ETOOBIG, -4101, "line or frame larger than the configured maximum")     \
    XX(ESHUTDOWN, -4102, "server is shutting down")                            \
    XX(EBADCONFIG, -4103, "invalid configuration")                             \
    XX(ENOMODE, -4104, "concurrency mode not available")                       \
    XX(EBADADDR, -4105, "malformed address")                                   \
    XX(ENORESOLVE, -4106, "host name could not be resolved")                   \
    XX(EBADFRAME, -4107, "malformed frame")                                    \
    XX(ECLOSED, -4108, "channel is closed")                                    \
    XX(EDENIED, -4109, "request denied by the server")                         \
    XX(ECHILD, -4110, "forked child ended abnormally")                         \
    XX(EPARTIAL, -4111, "end of stream in the middle of a message")            \
    XX(EPROXY, -4112, "malformed or missing PROXY protocol header")            \
    XX(EUNTRUSTED, -4113, "PROXY protocol header from an untrusted peer")      \
    XX(ENOLISTENFDS, -4114, "no listening sockets passed to this process")     \
    XX(ENOFDNAME, -4115, "no passed socket has that name")                     \
    XX(ETRUNCATED, -4116, "stream ended without the peer's close_notify")      \
    XX(EHANDSHAKE, -4117, "transport handshake failed")

/**
 * @brief The library's own error codes (all negative), generated from TC_ERROR_MAP.
 *
 * | code          | value | meaning |
 * |---------------|-------|---------|
 * | TC_EOF        | -4100 | end of stream: the peer closed its side |
 * | TC_ETOOBIG    | -4101 | a line or frame larger than the configured maximum |
 * | TC_ESHUTDOWN  | -4102 | the server is shutting down |
 * | TC_EBADCONFIG | -4103 | invalid configuration (tc_last_error_detail() and the log hook name the field) |
 * | TC_ENOMODE    | -4104 | the concurrency mode is not available in this build |
 * | TC_EBADADDR   | -4105 | malformed address text |
 * | TC_ENORESOLVE | -4106 | the host name could not be resolved |
 * | TC_EBADFRAME  | -4107 | a malformed frame |
 * | TC_ECLOSED    | -4108 | the channel is closed |
 * | TC_EDENIED    | -4109 | the request was denied by the server |
 * | TC_ECHILD     | -4110 | a forked child ended abnormally (signal or non-zero exit) |
 * | TC_EPARTIAL   | -4111 | end of stream in the middle of a message |
 * | TC_EPROXY     | -4112 | a PROXY protocol header that is malformed, truncated, oversized, or missing where required |
 * | TC_EUNTRUSTED | -4113 | a PROXY protocol header (or a connection that needs one) from a peer not in the trusted list |
 * | TC_ENOLISTENFDS | -4114 | tc_listen_fds(): the service manager passed no sockets to this process (LISTEN_PID, LISTEN_FDS) |
 * | TC_ENOFDNAME  | -4115 | tc_listen_fds(): no passed socket has the requested name (LISTEN_FDNAMES) |
 * | TC_ETRUNCATED | -4116 | a transport (TLS) stream ended without close_notify: possibly cut by an attacker |
 * | TC_EHANDSHAKE | -4117 | a transport (TLS) handshake failed (the reason went to the log hook) |
 */
typedef enum tc_error {
    /* A helper for the line below, undefined after it; not in the reference. */
/** @cond */
#define TC_ERROR_ENUM_ENTRY(name, value, text) TC_##name = (value),
    TC_ERROR_MAP(TC_ERROR_ENUM_ENTRY)
#undef TC_ERROR_ENUM_ENTRY
/** @endcond */
} tc_error;

/**
 * @brief Describe an error code in words.
 * @param code Any value returned by a libtcpchan function: 0, a negated errno
 *             value or one of the tc_error codes.
 * @return A static, human-readable string; never NULL ("success" for
 *         non-negative values, "unknown error" for codes nobody defined).
 * @par Thread safety
 * Safe from any thread; the string is constant and needs no freeing.
 */
TC_API const char *tc_strerror(int code);

/**
 * @brief The symbolic name of an error code.
 * @param code As for tc_strerror().
 * @return A static string such as "TC_EOF" or "ECONNRESET"; "OK" for
 *         non-negative values and "UNKNOWN" for undefined codes; never NULL.
 * @par Thread safety
 * Safe from any thread.
 */
TC_API const char *tc_err_name(int code);

/**
 * @brief Why the calling thread's last create or dial failed, in words:
 *        the field, the address or the limit, not only the code.
 *
 * tc_server_create() and tc_server_serve_inetd() that fail with
 * TC_EBADCONFIG or TC_ENOMODE, or on the listen address (TC_EBADADDR,
 * TC_ENORESOLVE, -ENAMETOOLONG, a bind or listen error such as
 * -EADDRINUSE), leave the same line their log hook gets, for instance
 * `invalid configuration: workers is negative` or
 * `cannot listen on 127.0.0.1:7000: Address already in use`, with or
 * without a log hook. tc_prefork_create() names the field it refuses
 * (`invalid configuration: processes is negative`), and tc_dial() an
 * invalid configuration or an address that does not parse or resolve
 * (`dial address "x:1": host name could not be resolved`).
 *
 * Each of those calls empties the detail when it starts, so after a
 * success, and after failures that have nothing to add (-ENOMEM, -EINVAL
 * for a NULL argument, a refused connect), it is "". No other function
 * sets or clears it.
 * @code
 * int rc = tc_server_create(&srv, &cfg, &handler);
 * if (rc < 0) {
 *     const char *why = tc_last_error_detail();
 *     fprintf(stderr, "server: %s
", why[0] ? why : tc_strerror(rc));
 *     return 1;
 * }
 * @endcode
 * @return The detail; "" when there is none; never NULL. At most 511 bytes
 *         (a longer message is cut).
 * @par Thread safety
 * Safe from any thread: each thread has its own detail, so a create failing
 * in one thread never shows in another (in a forked child, the parent's
 * thread's detail at the time of the fork).
 * @par Ownership
 * The string belongs to the library and must not be freed or written. It
 * stays valid until the next libtcpchan call on the same thread (or the
 * thread's end): copy it to keep it.
 */
TC_API const char *tc_last_error_detail(void);

#ifdef __cplusplus
}
#endif
#endif /* TCPCHAN_ERROR_H */
