"""Bad descriptors and wrong states give OSError with Linux's errno, never a crash."""

import errno

import pytest

from acceltcp.host.socket import (EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, SO_ERROR, SO_LINGER,
                                  SO_REUSEADDR, SOL_SOCKET)
from acceltcp.tcp.config import TcpConfig


def errno_of(fn, *args):
    with pytest.raises(OSError) as ei:
        fn(*args)
    return ei.value.errno


def test_bad_fd(sk):
    a = sk.a
    assert errno_of(a.read, 99, 10) == errno.EBADF
    assert errno_of(a.write, 99, b"x") == errno.EBADF
    assert errno_of(a.close, 99) == errno.EBADF
    fd = a.socket()
    a.close(fd)
    assert errno_of(a.close, fd) == errno.EBADF


def test_fds_are_small_and_reused_lowest_first(sk):
    a = sk.a
    fds = [a.socket() for _ in range(3)]
    assert fds == [3, 4, 5]
    a.close(4)
    assert a.socket() == 4


def test_socket_calls_on_an_epoll_fd_are_enotsock(sk):
    ep = sk.a.epoll_create()
    assert errno_of(sk.a.read, ep, 1) == errno.ENOTSOCK


def test_unconnected_socket(sk):
    a = sk.a
    fd = a.socket()
    assert errno_of(a.read, fd, 10) == errno.ENOTCONN
    assert errno_of(a.shutdown, fd) == errno.ENOTCONN
    assert errno_of(a.getpeername, fd) == errno.ENOTCONN
    assert errno_of(a.write, fd, b"x") == errno.EPIPE     # as Linux tcp_sendmsg
    assert errno_of(a.accept, fd) == errno.EINVAL


def test_nonblocking_connect_then_ealready_then_eisconn(sk):
    lfd = sk.server()
    a = sk.a
    fd = a.socket()
    with pytest.raises(BlockingIOError) as ei:
        a.connect(fd, ("198.18.0.2", 80))
    assert ei.value.errno == errno.EINPROGRESS
    assert errno_of(a.connect, fd, ("198.18.0.2", 80)) == errno.EALREADY
    assert errno_of(a.read, fd, 1) == errno.EAGAIN
    assert errno_of(a.write, fd, b"x") == errno.EAGAIN
    sk.until(lambda: a.poll(fd) & EPOLLOUT)
    assert errno_of(a.connect, fd, ("198.18.0.2", 80)) == errno.EISCONN
    assert a.getsockopt(fd, SOL_SOCKET, SO_ERROR) == 0
    assert a.getpeername(fd) == ("198.18.0.2", 80)
    assert sk.accept(lfd)[1] == ("198.18.0.1", a.getsockname(fd)[1])


def test_connect_on_a_listening_socket_is_eisconn(sk):
    lfd = sk.server()
    assert errno_of(sk.b.connect, lfd, ("198.18.0.1", 80)) == errno.EISCONN


def test_refused_connect_shows_as_err_hup_and_so_error_once(sk):
    a = sk.a
    fd = sk.connect(port=9)
    sk.until(lambda: a.poll(fd) & EPOLLERR)
    assert a.poll(fd) & (EPOLLERR | EPOLLHUP | EPOLLIN | EPOLLOUT) == \
        EPOLLERR | EPOLLHUP | EPOLLIN | EPOLLOUT
    assert a.getsockopt(fd, SOL_SOCKET, SO_ERROR) == errno.ECONNREFUSED
    assert a.getsockopt(fd, SOL_SOCKET, SO_ERROR) == 0
    assert not a.poll(fd) & EPOLLERR
    assert a.read(fd, 10) == b""


def test_refused_connect_error_is_reported_by_the_next_connect_then_retry_works(sk):
    a = sk.a
    fd = sk.connect(port=80)
    sk.until(lambda: a.poll(fd) & EPOLLERR)
    assert errno_of(a.connect, fd, ("198.18.0.2", 80)) == errno.ECONNREFUSED
    sk.server(80)
    with pytest.raises(BlockingIOError):
        a.connect(fd, ("198.18.0.2", 80))
    sk.until(lambda: a.poll(fd) & EPOLLOUT)
    assert a.write(fd, b"hi") == 2


def test_read_and_accept_would_block(sk):
    cfd, sfd = sk.pair()
    assert errno_of(sk.a.read, cfd, 10) == errno.EAGAIN
    lfd = [fd for fd, s in sk.b._fds.items() if getattr(s, "listener", None)][0]
    with pytest.raises(BlockingIOError) as ei:
        sk.b.accept(lfd)
    assert ei.value.errno == errno.EAGAIN


def test_write_after_shutdown_is_epipe_and_peer_sees_eof(sk):
    cfd, sfd = sk.pair()
    sk.a.write(cfd, b"bye")
    sk.a.shutdown(cfd)
    assert errno_of(sk.a.write, cfd, b"x") == errno.EPIPE
    assert sk.read_all(sk.b, sfd, 3) == b"bye"
    sk.until(lambda: sk.at_eof(sk.b, sfd))


def test_reset_by_peer_is_econnreset_once_then_eof(sk):
    cfd, sfd = sk.pair()
    sk.b.setsockopt(sfd, SOL_SOCKET, SO_LINGER, (1, 0))
    sk.b.close(sfd)                                   # linger 0: RST
    sk.until(lambda: sk.a.poll(cfd) & EPOLLERR)
    assert errno_of(sk.a.read, cfd, 10) == errno.ECONNRESET
    assert sk.a.read(cfd, 10) == b""
    assert errno_of(sk.a.write, cfd, b"x") == errno.EPIPE


def test_write_on_reset_connection_reports_econnreset_first(sk):
    cfd, sfd = sk.pair()
    sk.b.setsockopt(sfd, SOL_SOCKET, SO_LINGER, (1, 0))
    sk.b.close(sfd)
    sk.until(lambda: sk.a.poll(cfd) & EPOLLERR)
    assert errno_of(sk.a.write, cfd, b"x") == errno.ECONNRESET


def test_connect_timeout_is_etimedout(sk, net):
    a = sk.a
    fd = a.socket()
    from acceltcp.host.socket import IPPROTO_TCP, TCP_MAXSEG
    a.setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, 1000)
    a._fds[fd].config = a._fds[fd].config.copy(syn_retries=2)
    with pytest.raises(BlockingIOError):
        a.connect(fd, ("198.18.0.77", 80))           # nobody answers ARP
    sk.until(lambda: a.poll(fd) & EPOLLERR, timeout=60)
    assert a.getsockopt(fd, SOL_SOCKET, SO_ERROR) == errno.ETIMEDOUT


def test_connect_without_route_is_enetunreach(sk):
    fd = sk.a.socket()
    assert errno_of(sk.a.connect, fd, ("192.0.2.1", 80)) == errno.ENETUNREACH


def test_bad_addresses_are_einval(sk):
    fd = sk.a.socket()
    assert errno_of(sk.a.bind, fd, ("not-an-ip", 80)) == errno.EINVAL
    assert errno_of(sk.a.bind, fd, ("198.18.0.1", 70000)) == errno.EINVAL
    assert errno_of(sk.a.connect, fd, "198.18.0.2") == errno.EINVAL


def test_bind_rules(sk):
    a = sk.a
    s1, s2 = a.socket(), a.socket()
    a.bind(s1, ("0.0.0.0", 8080))
    assert errno_of(a.bind, s1, ("0.0.0.0", 8081)) == errno.EINVAL       # already bound
    assert errno_of(a.bind, s2, ("0.0.0.0", 8080)) == errno.EADDRINUSE
    assert errno_of(a.bind, s2, ("198.18.0.9", 8082)) == errno.EADDRNOTAVAIL
    a.bind(s2, ("198.18.0.1", 0))
    assert a.getsockname(s2)[1] != 8080


def test_so_reuseaddr_allows_sharing_unless_listening(sk):
    a = sk.a
    s1, s2, s3 = a.socket(), a.socket(), a.socket()
    for s in (s1, s2, s3):
        a.setsockopt(s, SOL_SOCKET, SO_REUSEADDR, 1)
    a.bind(s1, ("0.0.0.0", 8080))
    a.bind(s2, ("0.0.0.0", 8080))
    a.listen(s1, 8)
    assert errno_of(a.bind, s3, ("0.0.0.0", 8080)) == errno.EADDRINUSE
    assert errno_of(a.listen, s2, 8) == errno.EADDRINUSE


def test_bind_over_a_time_wait_connection_needs_reuseaddr(sk, loop):
    cfd, sfd = sk.pair(port=80)
    sk.b.close(sfd)                    # the server closes first: its side ends in TIME-WAIT
    sk.until(lambda: sk.at_eof(sk.a, cfd))
    sk.a.close(cfd)
    sk.run(1.0)
    lfd = [fd for fd in list(sk.b._fds) if sk.b._fds[fd].listener is not None][0]
    sk.b.close(lfd)
    assert any(c.state == 10 for c in sk.net.b.time_wait.values())       # TIME-WAIT
    s = sk.b.socket()
    assert errno_of(sk.b.bind, s, ("0.0.0.0", 80)) == errno.EADDRINUSE
    sk.b.setsockopt(s, SOL_SOCKET, SO_REUSEADDR, 1)
    sk.b.bind(s, ("0.0.0.0", 80))
    sk.b.listen(s, 8)


def test_two_listeners_on_a_port_are_eaddrinuse(sk):
    sk.server(80)
    fd = sk.b.socket()
    sk.b.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, 1)
    assert errno_of(sk.b.bind, fd, ("0.0.0.0", 80)) == errno.EADDRINUSE


def test_listen_on_connected_socket_is_einval(sk):
    cfd, _ = sk.pair()
    assert errno_of(sk.a.listen, cfd, 8) == errno.EINVAL


def test_listen_autobinds(sk):
    fd = sk.b.socket()
    sk.b.listen(fd, 4)
    assert sk.b.getsockname(fd)[1] > 0


def test_shutdown_bad_how_is_einval(sk):
    cfd, _ = sk.pair()
    assert errno_of(sk.a.shutdown, cfd, 7) == errno.EINVAL


def test_close_releases_port_and_listener(sk):
    lfd = sk.server(80)
    sk.b.close(lfd)
    assert 80 not in sk.net.b.listeners
    sk.server(80)


def test_unknown_options_are_enoprotoopt(sk):
    fd = sk.a.socket()
    assert errno_of(sk.a.setsockopt, fd, 6, 9999, 1) == errno.ENOPROTOOPT
    assert errno_of(sk.a.getsockopt, fd, 1, 9999) == errno.ENOPROTOOPT
    assert errno_of(sk.a.setsockopt, fd, SOL_SOCKET, SO_ERROR, 1) == errno.ENOPROTOOPT


def test_epoll_ctl_errors(sk):
    a = sk.a
    ep = a.epoll_create()
    fd = a.socket()
    a.epoll_ctl(ep, 1, fd, EPOLLIN)
    assert errno_of(a.epoll_ctl, ep, 1, fd, EPOLLIN) == errno.EEXIST
    assert errno_of(a.epoll_ctl, ep, 3, a.socket(), EPOLLIN) == errno.ENOENT
    assert errno_of(a.epoll_ctl, ep, 2, 77, 0) == errno.EBADF
    assert errno_of(a.epoll_ctl, fd, 1, fd, EPOLLIN) == errno.EINVAL
    assert errno_of(a.epoll_ctl, ep, 1, ep, EPOLLIN) == errno.EINVAL
    assert errno_of(a.epoll_ctl, ep, 9, fd, EPOLLIN) == errno.EINVAL
    assert errno_of(a.epoll_wait, ep, 0) == errno.EINVAL
    assert errno_of(a.epoll_wait, fd) == errno.EINVAL
    assert errno_of(a.epoll_create, 0) == errno.EINVAL


def test_config_is_copy_on_write(sk):
    from acceltcp.host.socket import IPPROTO_TCP, TCP_NODELAY
    fd = sk.a.socket()
    sk.a.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, 1)
    assert sk.net.a.config.nodelay is False
    assert isinstance(sk.a._fds[fd].config, TcpConfig)
