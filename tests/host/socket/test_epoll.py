"""Epoll with Linux semantics: level- vs edge-triggered, keyed wakeups, ONESHOT."""

import pytest

from acceltcp.host.socket import (EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD, EPOLLERR,
                                  EPOLLET, EPOLLHUP, EPOLLIN, EPOLLONESHOT, EPOLLOUT,
                                  EPOLLRDHUP, SO_SNDBUF, SOL_SOCKET)


@pytest.fixture
def conn(sk):
    """(sockets, client fd, server fd, epoll on the client's API)."""
    cfd, sfd = sk.pair()
    return sk, cfd, sfd, sk.a.epoll_create()


def send_from_server(sk, sfd, data=b"x" * 100):
    sk.b.write(sfd, data)
    sk.run(0.1)                 # past the delayed ACK: Nagle may hold a second small write


def test_level_triggered_reports_until_drained(conn):
    sk, cfd, sfd, ep = conn
    sk.a.epoll_ctl(ep, EPOLL_CTL_ADD, cfd, EPOLLIN)
    assert sk.a.epoll_wait(ep) == []
    send_from_server(sk, sfd)
    assert sk.a.epoll_wait(ep) == [(cfd, EPOLLIN)]
    assert sk.a.epoll_wait(ep) == [(cfd, EPOLLIN)]
    sk.a.read(cfd, 50)
    assert sk.a.epoll_wait(ep) == [(cfd, EPOLLIN)]
    sk.a.read(cfd, 50)
    assert sk.a.epoll_wait(ep) == []


def test_edge_triggered_reports_once_per_arrival(conn):
    sk, cfd, sfd, ep = conn
    sk.a.epoll_ctl(ep, EPOLL_CTL_ADD, cfd, EPOLLIN | EPOLLET)
    send_from_server(sk, sfd)
    assert sk.a.epoll_wait(ep) == [(cfd, EPOLLIN)]
    assert sk.a.epoll_wait(ep) == []                   # not drained, yet no new edge
    send_from_server(sk, sfd)                          # new data: a new wakeup (Linux)
    assert sk.a.epoll_wait(ep) == [(cfd, EPOLLIN)]
    assert sk.a.epoll_wait(ep) == []


def test_edge_triggered_in_out_reports_out_with_every_data_wakeup(conn):
    """The Linux behaviour: the wakeup is keyed (EPOLLIN) but the report is the poll mask."""
    sk, cfd, sfd, ep = conn
    sk.a.epoll_ctl(ep, EPOLL_CTL_ADD, cfd, EPOLLIN | EPOLLOUT | EPOLLET)
    assert sk.a.epoll_wait(ep) == [(cfd, EPOLLOUT)]    # ready at insert
    assert sk.a.epoll_wait(ep) == []
    send_from_server(sk, sfd)
    assert sk.a.epoll_wait(ep) == [(cfd, EPOLLIN | EPOLLOUT)]


def test_edge_triggered_out_only_ignores_data_wakeups(conn):
    sk, cfd, sfd, ep = conn
    sk.a.epoll_ctl(ep, EPOLL_CTL_ADD, cfd, EPOLLOUT | EPOLLET)
    assert sk.a.epoll_wait(ep) == [(cfd, EPOLLOUT)]
    send_from_server(sk, sfd)
    assert sk.a.epoll_wait(ep) == []


def test_edge_triggered_out_fires_after_the_buffer_was_full(conn):
    sk, cfd, sfd, ep = conn
    sk.a.setsockopt(cfd, SOL_SOCKET, SO_SNDBUF, 16384)
    sk.a.epoll_ctl(ep, EPOLL_CTL_ADD, cfd, EPOLLOUT | EPOLLET)
    assert sk.a.epoll_wait(ep) == [(cfd, EPOLLOUT)]
    with pytest.raises(BlockingIOError):
        while True:
            sk.a.write(cfd, b"y" * 4096)
    assert sk.a.epoll_wait(ep) == []
    sk.run(0.01)                          # ACKs free space: one write-space wakeup
    assert sk.a.epoll_wait(ep) == [(cfd, EPOLLOUT)]
    assert sk.a.epoll_wait(ep) == []


def test_oneshot_disarms_until_mod(conn):
    sk, cfd, sfd, ep = conn
    sk.a.epoll_ctl(ep, EPOLL_CTL_ADD, cfd, EPOLLIN | EPOLLONESHOT)
    send_from_server(sk, sfd)
    assert sk.a.epoll_wait(ep) == [(cfd, EPOLLIN)]
    send_from_server(sk, sfd)
    assert sk.a.epoll_wait(ep) == []
    sk.a.epoll_ctl(ep, EPOLL_CTL_MOD, cfd, EPOLLIN | EPOLLONESHOT)
    assert sk.a.epoll_wait(ep) == [(cfd, EPOLLIN)]


def test_mod_rearms_an_edge_triggered_item(conn):
    sk, cfd, sfd, ep = conn
    sk.a.epoll_ctl(ep, EPOLL_CTL_ADD, cfd, EPOLLIN | EPOLLET)
    send_from_server(sk, sfd)
    assert sk.a.epoll_wait(ep) == [(cfd, EPOLLIN)]
    sk.a.epoll_ctl(ep, EPOLL_CTL_MOD, cfd, EPOLLIN | EPOLLET)
    assert sk.a.epoll_wait(ep) == [(cfd, EPOLLIN)]


def test_listener_in_level_and_edge(sk):
    lfd = sk.server()
    ep_lt, ep_et = sk.b.epoll_create(), sk.b.epoll_create()
    sk.b.epoll_ctl(ep_lt, EPOLL_CTL_ADD, lfd, EPOLLIN)
    sk.b.epoll_ctl(ep_et, EPOLL_CTL_ADD, lfd, EPOLLIN | EPOLLET)
    sk.connect()
    sk.connect()
    sk.run(0.01)
    assert sk.b.epoll_wait(ep_lt) == [(lfd, EPOLLIN)]
    assert sk.b.epoll_wait(ep_et) == [(lfd, EPOLLIN)]
    sk.b.accept(lfd)
    assert sk.b.epoll_wait(ep_lt) == [(lfd, EPOLLIN)]
    assert sk.b.epoll_wait(ep_et) == []
    sk.b.accept(lfd)
    assert sk.b.epoll_wait(ep_lt) == []


def test_connect_completion_is_epollout(sk):
    sk.server()
    ep = sk.a.epoll_create()
    fd = sk.a.socket()
    with pytest.raises(BlockingIOError):
        sk.a.connect(fd, ("198.18.0.2", 80))
    sk.a.epoll_ctl(ep, EPOLL_CTL_ADD, fd, EPOLLOUT | EPOLLET)
    assert sk.a.epoll_wait(ep) == []
    sk.run(0.01)
    assert sk.a.epoll_wait(ep) == [(fd, EPOLLOUT)]


def test_refused_connect_reports_err_and_hup_without_asking(sk):
    ep = sk.a.epoll_create()
    fd = sk.connect(port=9)
    sk.a.epoll_ctl(ep, EPOLL_CTL_ADD, fd, EPOLLOUT | EPOLLET)
    sk.run(0.01)
    assert sk.a.epoll_wait(ep) == [(fd, EPOLLOUT | EPOLLERR | EPOLLHUP)]


def test_peer_fin_is_in_and_rdhup(conn):
    sk, cfd, sfd, ep = conn
    sk.a.epoll_ctl(ep, EPOLL_CTL_ADD, cfd, EPOLLIN | EPOLLRDHUP | EPOLLET)
    sk.b.shutdown(sfd)
    sk.run(0.01)
    assert sk.a.epoll_wait(ep) == [(cfd, EPOLLIN | EPOLLRDHUP)]
    assert sk.a.read(cfd, 10) == b""


def test_both_directions_shut_is_hup(conn):
    sk, cfd, sfd, ep = conn
    sk.a.epoll_ctl(ep, EPOLL_CTL_ADD, cfd, EPOLLIN)
    sk.b.shutdown(sfd)
    sk.a.shutdown(cfd)
    sk.run(0.01)
    [(fd, ev)] = sk.a.epoll_wait(ep)
    assert ev == EPOLLIN | EPOLLHUP


def test_fresh_socket_polls_out_hup(sk):
    ep = sk.a.epoll_create()
    fd = sk.a.socket()
    sk.a.epoll_ctl(ep, EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLOUT)
    assert sk.a.epoll_wait(ep) == [(fd, EPOLLOUT | EPOLLHUP)]


def test_del_and_close_stop_reports(conn):
    sk, cfd, sfd, ep = conn
    sk.a.epoll_ctl(ep, EPOLL_CTL_ADD, cfd, EPOLLIN)
    send_from_server(sk, sfd)
    sk.a.epoll_ctl(ep, EPOLL_CTL_DEL, cfd)
    assert sk.a.epoll_wait(ep) == []
    sk.a.epoll_ctl(ep, EPOLL_CTL_ADD, cfd, EPOLLIN)
    sk.a.close(cfd)
    assert sk.a.epoll_wait(ep) == []


def test_maxevents_leaves_the_rest_for_the_next_call(sk):
    sk.server()
    ep = sk.a.epoll_create()
    fds = []
    for _ in range(5):
        fd = sk.connect()
        sk.a.epoll_ctl(ep, EPOLL_CTL_ADD, fd, EPOLLOUT)
        fds.append(fd)
    sk.run(0.01)
    first = sk.a.epoll_wait(ep, 3)
    second = sk.a.epoll_wait(ep, 3)
    assert [fd for fd, _ in first] == fds[:3]
    assert [fd for fd, _ in second] == fds[3:] + fds[:1]   # LT items re-queued at the tail


def test_on_ready_hook(conn):
    sk, cfd, sfd, ep = conn
    seen = []
    sk.a.on_ready = seen.append
    sk.a.epoll_ctl(ep, EPOLL_CTL_ADD, cfd, EPOLLIN | EPOLLET)
    send_from_server(sk, sfd)
    send_from_server(sk, sfd)
    assert seen == [ep]                   # only when the ready list becomes non-empty
    sk.a.epoll_wait(ep)
    send_from_server(sk, sfd)
    assert seen == [ep, ep]


def test_epoll_driven_echo(sk):
    """A small mTCP-style event loop: server echoes with epoll, client checks bytes."""
    lfd = sk.server()
    ep = sk.b.epoll_create()
    sk.b.epoll_ctl(ep, EPOLL_CTL_ADD, lfd, EPOLLIN)

    def pump():
        for fd, ev in sk.b.epoll_wait(ep):
            if fd == lfd:
                nfd, _ = sk.b.accept(lfd)
                sk.b.epoll_ctl(ep, EPOLL_CTL_ADD, nfd, EPOLLIN | EPOLLET)
                continue
            while True:
                try:
                    data = sk.b.read(fd, 65536)
                except BlockingIOError:
                    break
                if not data:
                    sk.b.close(fd)
                    break
                sk.b.write(fd, data)
    sk.b.on_ready = lambda _ep: sk.loop.call_soon(pump)
    pump()
    cfd = sk.connect()
    sk.until(lambda: sk.a.poll(cfd) & EPOLLOUT)
    payload = bytes(range(256)) * 40
    assert sk.a.write(cfd, payload) == len(payload)
    assert sk.read_all(sk.a, cfd, len(payload)) == payload
