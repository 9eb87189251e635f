/* SPDX-License-Identifier: MIT */
/**
 * @file addr.h
 * @brief Socket addresses: one value type for IPv4, IPv6 and unix sockets,
 *        parsed from and formatted to text.
 *
 * The text forms are `HOST:PORT` (an IPv4 address or a host name),
 * `[IPV6]:PORT` (optionally with a `%zone`), `unix:PATH` and, for Linux's
 * abstract namespace, `unix:@NAME`. Port 0 asks the kernel for a free port
 * when binding.
 *
 * Datagram sockets have the same forms behind their own scheme:
 * `udp:HOST:PORT`, `udp:[IPV6]:PORT`, `udp::PORT`, `unixgram:PATH` and
 * `unixgram:@NAME`. The address then carries @ref tc_addr::socktype
 * SOCK_DGRAM, and tc_addr_format() writes the scheme back (see
 * docs/datagrams.md).
 *
 * `:PORT` and `*:PORT` mean every address, as in nginx's `listen` and
 * HAProxy's `bind`: they are `0.0.0.0:PORT`, every IPv4 address. Not `[::]`:
 * a server listening on an IPv6 address sets IPV6_V6ONLY, so `[::]:PORT`
 * takes IPv6 clients only (and fails on a host without IPv6); a server for
 * both families listens on `0.0.0.0:PORT` and `[::]:PORT`, with two servers
 * or two adopted sockets. As a dial address, `0.0.0.0` reaches this host on
 * Linux.
 */
#ifndef TCPCHAN_ADDR_H
#define TCPCHAN_ADDR_H

#include <stddef.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/un.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** @brief Buffer size that holds any address tc_addr_format() writes, NUL included. */
#define TC_ADDR_STRLEN 128

/**
 * @brief A socket address of any supported family. A plain value: copy it freely.
 *
 * Zero-initialised, it is "no address" (family AF_UNSPEC, len 0).
 */
typedef struct tc_addr {
    /** @brief The address, viewed as each family's sockaddr. */
    union {
        struct sockaddr sa;               /**< generic view (family in sa_family) */
        struct sockaddr_in in4;           /**< AF_INET */
        struct sockaddr_in6 in6;          /**< AF_INET6 */
        struct sockaddr_un un;            /**< AF_UNIX */
        struct sockaddr_storage storage;  /**< room for any family */
    } u;
    socklen_t len; /**< length of the meaningful part of u, as the socket calls take it */
    /** @brief The socket type the address is for: 0 (or SOCK_STREAM) for a
     *         stream socket, SOCK_DGRAM for a datagram one (`udp:`,
     *         `unixgram:`). On 64-bit Linux it sits in what was padding: the size of
     *         tc_addr did not change. */
    int socktype;
} tc_addr;

/**
 * @brief Parse an address from text, resolving a host name if needed.
 *
 * Numeric IPv4 and bracketed IPv6 addresses are converted without any
 * lookup; anything else is a host name resolved with getaddrinfo(), and the
 * first address it returns is taken (resolution may block). The port must be
 * decimal, 0 to 65535.
 *
 * @param[out] out  Receives the address; written only on success.
 * @param text      `HOST:PORT`, `[IPV6]:PORT`, `:PORT` or `*:PORT` (both
 *                  `0.0.0.0:PORT`), `unix:PATH` or `unix:@NAME`; or, for a
 *                  datagram socket (socktype SOCK_DGRAM), any of the first
 *                  four behind `udp:` (`udp:127.0.0.1:7000`, `udp:[::1]:7000`),
 *                  `unixgram:PATH` or `unixgram:@NAME`.
 * @return 0 on success, or:
 *   - TC_EBADADDR: NULL or empty text, missing or non-numeric port, port over
 *     65535, unbracketed IPv6, empty brackets or path, stray characters;
 *   - -ENAMETOOLONG: the unix path does not fit in sockaddr_un;
 *   - TC_ENORESOLVE: the host name does not resolve;
 *   - -EINVAL: @p out is NULL.
 * @par Thread safety
 * Safe from any thread.
 */
TC_API int tc_addr_parse(tc_addr *out, const char *text);

/**
 * @brief Write an address in the text form tc_addr_parse() reads.
 *
 * IPv4 as `1.2.3.4:PORT`, IPv6 as `[::1]:PORT`, unix as `unix:PATH` or
 * `unix:@NAME`; an unnamed unix socket (a typical client) as `unix:`. A
 * datagram address (socktype SOCK_DGRAM) gets its scheme: `udp:1.2.3.4:PORT`,
 * `udp:[::1]:PORT`, `unixgram:PATH`, `unixgram:@NAME`, or `unixgram:` unnamed.
 *
 * @param addr  The address.
 * @param buf   Destination; TC_ADDR_STRLEN bytes always suffice.
 * @param size  Size of @p buf in bytes.
 * @return The length written (without the NUL), or -EINVAL for a NULL
 *         argument, -EAFNOSUPPORT for an unsupported family, -ENOSPC if
 *         @p buf is too small (it then holds an empty string when size > 0).
 * @par Thread safety
 * Safe from any thread.
 */
TC_API int tc_addr_format(const tc_addr *addr, char *buf, size_t size);

/**
 * @brief Fill a tc_addr from a system socket address (socktype 0: a stream
 *        address; set @ref tc_addr::socktype to SOCK_DGRAM for a datagram one).
 * @param[out] out  Receives the copy.
 * @param sa        The address, as accept() or getsockname() return it.
 * @param len       Its length.
 * @return 0, or -EINVAL for NULL arguments or a length that does not fit.
 * @par Thread safety
 * Safe from any thread.
 */
TC_API int tc_addr_from_sockaddr(tc_addr *out, const struct sockaddr *sa, socklen_t len);

/**
 * @brief The address family: AF_INET, AF_INET6, AF_UNIX, or AF_UNSPEC for none.
 * @param addr The address (NULL counts as none).
 * @return The family.
 * @par Thread safety
 * Safe from any thread.
 */
TC_API int tc_addr_family(const tc_addr *addr);

/**
 * @brief The port of an IPv4 or IPv6 address, in host byte order.
 * @param addr The address.
 * @return The port (0 to 65535), or -EAFNOSUPPORT for a unix or empty address,
 *         -EINVAL for NULL.
 * @par Thread safety
 * Safe from any thread.
 */
TC_API int tc_addr_port(const tc_addr *addr);

#ifdef __cplusplus
}
#endif
#endif /* TCPCHAN_ADDR_H */
