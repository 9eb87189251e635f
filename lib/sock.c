/* SPDX-License-Identifier: MIT */
/* The only file that makes raw socket system calls: close-on-exec
 * descriptors, MSG_NOSIGNAL on every send, EINTR retried, waits against
 * absolute monotonic deadlines. Sockets are non-blocking, except those of a
 * connection that has a thread or process of its own (see tc__mode). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

int tc__sock_readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;
    do
        r = poll(&p, 1, 0);
    while (r < 0 && errno == EINTR);
    return r > 0;
}

void tc__sock_shutdown(int fd)
{
    if (fd >= 0)
        (void)shutdown(fd, SHUT_RDWR);
}

int tc__sock_shutdown_how(int fd, int how)
{
    return shutdown(fd, how) < 0 ? -errno : 0;
}

int tc__sock_set_nonblocking(int fd, int on)
{
    int v = on ? 1 : 0;
    return ioctl(fd, FIONBIO, &v) < 0 ? -errno : 0; /* one call: no F_GETFL first */
}

int tc__sock_setopt(int fd, int level, int opt, int value)
{
    return setsockopt(fd, level, opt, &value, sizeof value) < 0 ? -errno : 0;
}

void tc__close(int fd)
{
    if (fd >= 0)
        (void)close(fd); /* on Linux the fd is gone even if EINTR is reported */
}

static int set_flag(int fd, int level, int opt, int on)
{
    return setsockopt(fd, level, opt, &on, sizeof on) < 0 ? -errno : 0;
}

int tc__sock_listen(const tc_addr *addr, int backlog, int reuse_addr, int reuse_port, int *out_fd)
{
    int family = tc_addr_family(addr);
    int dgram = addr->socktype == SOCK_DGRAM;
    int fd = socket(family, (dgram ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int rc = 0;
    if (fd < 0)
        return -errno;
    if (family != AF_UNIX) {
        if (reuse_addr && (rc = set_flag(fd, SOL_SOCKET, SO_REUSEADDR, 1)) < 0)
            goto fail;
        if (reuse_port && (rc = set_flag(fd, SOL_SOCKET, SO_REUSEPORT, 1)) < 0)
            goto fail;
        /* [::] means IPv6 only; bind 0.0.0.0 too for both families. */
        if (family == AF_INET6 && (rc = set_flag(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1)) < 0)
            goto fail;
    }
    /* A datagram socket is bound and ready: there is nothing to listen for. */
    if (bind(fd, &addr->u.sa, addr->len) < 0 || (!dgram && listen(fd, backlog) < 0)) {
        rc = -errno;
        goto fail;
    }
    *out_fd = fd;
    return 0;
fail:
    tc__close(fd);
    return rc;
}

int tc__sock_adopt(int fd, int listening)
{
    int type = 0, acc = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
        return -errno; /* EBADF, ENOTSOCK */
    if (type != SOCK_STREAM)
        return -EPROTOTYPE;
    len = sizeof acc;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) < 0)
        return -errno;
    if (!acc != !listening)
        return -EINVAL;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0))
        return -errno;
    int fdfl = fcntl(fd, F_GETFD);
    if (fdfl < 0 || (!(fdfl & FD_CLOEXEC) && fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0))
        return -errno;
    return 0;
}

int tc__sock_adopt_dgram(int fd)
{
    int type = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
        return -errno;
    if (type != SOCK_DGRAM)
        return -EPROTOTYPE;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0))
        return -errno;
    int fdfl = fcntl(fd, F_GETFD);
    if (fdfl < 0 || (!(fdfl & FD_CLOEXEC) && fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0))
        return -errno;
    return 0;
}

int tc__sock_set_blocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || ((fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0))
        return -errno;
    return 0;
}

int tc__sock_accept(int lfd, tc_addr *peer, int *out_fd, int blocking)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd, flags = blocking ? SOCK_CLOEXEC : SOCK_NONBLOCK | SOCK_CLOEXEC;
    do {
        len = sizeof ss;
        fd = accept4(lfd, (struct sockaddr *)&ss, &len, flags);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    tc_addr_from_sockaddr(peer, (struct sockaddr *)&ss, len);
    *out_fd = fd;
    return 0;
}

int tc__sock_connect_start(const tc_addr *addr, int *out_fd)
{
    int dgram = addr->socktype == SOCK_DGRAM;
    int fd = socket(tc_addr_family(addr),
                    (dgram ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = 0;
    if (dgram && tc_addr_family(addr) == AF_UNIX) {
        /* A unix datagram client needs an address of its own for the replies
         * to come back to: the kernel picks an abstract one (autobind). */
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        if (bind(fd, (struct sockaddr *)&un, sizeof(sa_family_t)) < 0)
            rc = -errno;
    }
    if (rc == 0)
        rc = connect(fd, &addr->u.sa, addr->len) < 0 ? -errno : 0;
    /* An interrupted connect goes on in the background, like EINPROGRESS. */
    if (rc == -EINTR)
        rc = -EINPROGRESS;
    /* A unix socket whose backlog is full answers EAGAIN; report it as refused. */
    if (rc == -EAGAIN)
        rc = -ECONNREFUSED;
    if (rc == 0 || rc == -EINPROGRESS) {
        *out_fd = fd;
        return rc;
    }
    tc__close(fd);
    return rc;
}

int tc__sock_error(int fd)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return -errno;
    return -err;
}

int tc__sock_local(int fd, tc_addr *out)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    return tc_addr_from_sockaddr(out, (struct sockaddr *)&ss, len);
}

int tc__sock_peer(int fd, tc_addr *out)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    return tc_addr_from_sockaddr(out, (struct sockaddr *)&ss, len);
}

ssize_t tc__sock_recv(int fd, void *buf, size_t n)
{
    ssize_t r;
    do
        r = recv(fd, buf, n, MSG_DONTWAIT); /* never sleeps, even on a blocking socket */
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return r;
}

ssize_t tc__sock_recv_block(int fd, void *buf, size_t n)
{
    ssize_t r = recv(fd, buf, n, 0);
    if (r < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return r;
}

int tc__sock_set_timeout(int fd, int opt, int64_t ns)
{
    /* Whole microseconds, rounded up: {0, 0} would mean "no timeout". */
    int64_t us = (ns + 999) / 1000;
    struct timeval tv = {.tv_sec = (time_t)(us / 1000000), .tv_usec = (suseconds_t)(us % 1000000)};
    return setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv) < 0 ? -errno : 0;
}

ssize_t tc__sock_send(int fd, const void *buf, size_t n)
{
    ssize_t r;
    do
        r = send(fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return r;
}

ssize_t tc__sock_sendmsg(int fd, const struct iovec *iov, int cnt)
{
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = (struct iovec *)iov; /* sendmsg does not write through it */
    m.msg_iovlen = (size_t)(cnt < IOV_MAX ? cnt : IOV_MAX);
    ssize_t r;
    do
        r = sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return r;
}

ssize_t tc__sock_sendfile(int fd, int file_fd, off_t *offset, size_t n)
{
    /* sendfile cannot take MSG_NOSIGNAL and a library must not change the
     * process's disposition: block SIGPIPE in this thread for the call and
     * swallow the one it raised, unless one was already pending before. */
    sigset_t pipe_set, old, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigemptyset(&pending);
    sigpending(&pending);
    int was_pending = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    ssize_t r;
    do
        r = sendfile(fd, file_fd, offset, n);
    while (r < 0 && errno == EINTR);
    int err = r < 0 ? errno : 0;
    if (err == EPIPE && !was_pending) {
        const struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r < 0)
        return err == EWOULDBLOCK ? -EAGAIN : -err;
    return r;
}

int tc__sock_pktinfo_on(int fd, int family)
{
    if (family == AF_INET)
        return set_flag(fd, IPPROTO_IP, IP_PKTINFO, 1);
    if (family == AF_INET6)
        return set_flag(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1);
    return 0;
}

int tc__sock_pktinfo_get(const struct msghdr *m, int port, tc_addr *to)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR((struct msghdr *)m); c;
         c = CMSG_NXTHDR((struct msghdr *)m, c)) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
            struct in_pktinfo pi;
            memcpy(&pi, CMSG_DATA(c), sizeof pi);
            memset(to, 0, sizeof *to);
            to->u.in4.sin_family = AF_INET;
            to->u.in4.sin_addr = pi.ipi_addr; /* the destination the sender used */
            to->u.in4.sin_port = htons((uint16_t)port);
            to->len = sizeof to->u.in4;
            to->socktype = SOCK_DGRAM;
            return 1;
        }
        if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
            struct in6_pktinfo pi;
            memcpy(&pi, CMSG_DATA(c), sizeof pi);
            memset(to, 0, sizeof *to);
            to->u.in6.sin6_family = AF_INET6;
            to->u.in6.sin6_addr = pi.ipi6_addr;
            to->u.in6.sin6_port = htons((uint16_t)port);
            if (IN6_IS_ADDR_LINKLOCAL(&pi.ipi6_addr))
                to->u.in6.sin6_scope_id = pi.ipi6_ifindex;
            to->len = sizeof to->u.in6;
            to->socktype = SOCK_DGRAM;
            return 1;
        }
    }
    return 0;
}

size_t tc__sock_pktinfo_put(void *buf, size_t len, const tc_addr *from)
{
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_control = buf;
    m.msg_controllen = len;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    int family = tc_addr_family(from);
    if (!c || (family != AF_INET && family != AF_INET6) || len < TC__PKTINFO_SPACE)
        return 0;
    memset(buf, 0, TC__PKTINFO_SPACE);
    if (family == AF_INET) {
        struct in_pktinfo pi;
        memset(&pi, 0, sizeof pi);
        pi.ipi_spec_dst = from->u.in4.sin_addr; /* the source of the reply */
        c->cmsg_level = IPPROTO_IP;
        c->cmsg_type = IP_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof pi);
        memcpy(CMSG_DATA(c), &pi, sizeof pi);
        return CMSG_SPACE(sizeof pi);
    }
    struct in6_pktinfo pi;
    memset(&pi, 0, sizeof pi);
    pi.ipi6_addr = from->u.in6.sin6_addr;
    pi.ipi6_ifindex = from->u.in6.sin6_scope_id;
    c->cmsg_level = IPPROTO_IPV6;
    c->cmsg_type = IPV6_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof pi);
    memcpy(CMSG_DATA(c), &pi, sizeof pi);
    return CMSG_SPACE(sizeof pi);
}

ssize_t tc__sock_recvfrom(int fd, void *buf, size_t n, tc_addr *from, int *truncated,
                          tc_addr *to)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss); /* a unix sender without a name fills none of it */
    struct {
        _Alignas(size_t) unsigned char buf[TC__PKTINFO_SPACE]; /* as struct cmsghdr */
    } ctl;
    struct iovec v = {buf, n};
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_name = from ? &ss : NULL;
    m.msg_namelen = from ? sizeof ss : 0;
    m.msg_iov = &v;
    m.msg_iovlen = 1;
    if (to) {
        m.msg_control = ctl.buf;
        m.msg_controllen = sizeof ctl.buf;
    }
    ssize_t r;
    do
        r = recvmsg(fd, &m, MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    *truncated = (m.msg_flags & MSG_TRUNC) != 0;
    if (from) {
        (void)tc_addr_from_sockaddr(from, (struct sockaddr *)&ss, m.msg_namelen);
        from->socktype = SOCK_DGRAM;
    }
    if (to && !tc__sock_pktinfo_get(&m, tc_addr_port(to) > 0 ? tc_addr_port(to) : 0, to))
        to->len = 0; /* none came: the caller keeps its own idea */
    return r;
}

ssize_t tc__sock_sendto(int fd, const struct iovec *iov, int cnt, const tc_addr *to,
                        const tc_addr *from)
{
    if (cnt > IOV_MAX)
        return -EMSGSIZE; /* capped, the datagram would go out cut */
    struct {
        _Alignas(size_t) unsigned char buf[TC__PKTINFO_SPACE]; /* as struct cmsghdr */
    } ctl;
    struct msghdr m;
    memset(&m, 0, sizeof m);
    if (to) {
        m.msg_name = (void *)&to->u; /* sendmsg does not write through it */
        m.msg_namelen = to->len;
    }
    m.msg_iov = (struct iovec *)iov;
    m.msg_iovlen = (size_t)cnt;
    if (from && (m.msg_controllen = tc__sock_pktinfo_put(ctl.buf, sizeof ctl.buf, from)) > 0)
        m.msg_control = ctl.buf;
    ssize_t r;
    do
        r = sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return r;
}

int tc__sock_recvmmsg(int fd, struct mmsghdr *v, unsigned n)
{
    int r;
    do
        r = recvmmsg(fd, v, n, MSG_DONTWAIT, NULL);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return r;
}

int tc__sock_sendmmsg(int fd, struct mmsghdr *v, unsigned n)
{
    int r;
    do
        r = sendmmsg(fd, v, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return r;
}

/* Wait for fd (or stopfd, if >= 0, to become readable: TC_ESHUTDOWN). */
static int wait_fd(int fd, short events, int stopfd, int64_t deadline, int report_eintr)
{
    struct pollfd p[2] = {{.fd = fd, .events = events}, {.fd = stopfd, .events = POLLIN}};
    for (;;) {
        struct timespec ts, *tsp = NULL;
        if (deadline != TC__NO_DEADLINE) {
            int64_t left = deadline - tc__now_ns();
            if (left <= 0)
                return -ETIMEDOUT;
            ts.tv_sec = (time_t)(left / 1000000000);
            ts.tv_nsec = (long)(left % 1000000000);
            tsp = &ts;
        }
        int r = ppoll(p, stopfd >= 0 ? 2 : 1, tsp, NULL);
        if (r > 0 && stopfd >= 0 && p[1].revents)
            return TC_ESHUTDOWN; /* before input: an idle wait ends at a shutdown */
        if (r > 0)
            return 0; /* ready, or an error the next call will report */
        if (r < 0 && errno != EINTR)
            return -errno;
        if (r < 0 && report_eintr)
            return -EINTR;
    }
}

int tc__sock_wait(int fd, short events, int64_t deadline)
{
    return wait_fd(fd, events, -1, deadline, 0);
}

int tc__sock_wait_stop(int fd, short events, int stopfd, int64_t deadline)
{
    return wait_fd(fd, events, stopfd, deadline, 1);
}
