"""setsockopt/getsockopt: the standard options, TCP_INFO, and the extension registry."""

import errno
import json

import pytest

from acceltcp.host.socket import (IPPROTO_TCP, SO_LINGER, SO_RCVBUF, SO_REUSEADDR, SO_SNDBUF,
                                  SOCKOPTS, SOL_SOCKET, TCP_INFO, TCP_MAXSEG, TCP_NODELAY,
                                  register_sockopt)


def test_nodelay_reaches_the_live_tcb(sk):
    cfd, sfd = sk.pair()
    assert sk.a.getsockopt(cfd, IPPROTO_TCP, TCP_NODELAY) == 0
    sk.a.setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, 1)
    assert sk.a.getsockopt(cfd, IPPROTO_TCP, TCP_NODELAY) == 1
    assert sk.a.conn_of(cfd).config.nodelay is True
    assert sk.net.a.config.nodelay is False         # the stack default is untouched


def test_nodelay_sends_small_writes_without_waiting(sk):
    cfd, sfd = sk.pair()
    sk.a.setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, 1)
    sk.a.write(cfd, b"a")
    sk.a.write(cfd, b"b")
    sk.run(0.005)                                    # well under the 40 ms delayed ACK
    assert sk.b.read(sfd, 10) == b"ab"


def test_buffer_sizes(sk):
    fd = sk.a.socket()
    sk.a.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, 65536)
    sk.a.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, 1)
    assert sk.a.getsockopt(fd, SOL_SOCKET, SO_RCVBUF) == 65536
    assert sk.a.getsockopt(fd, SOL_SOCKET, SO_SNDBUF) == 2048       # clamped to a minimum
    with pytest.raises(OSError) as ei:
        sk.a.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, -1)
    assert ei.value.errno == errno.EINVAL


def test_sndbuf_limits_what_write_takes(sk):
    cfd, sfd = sk.pair()
    sk.a.setsockopt(cfd, SOL_SOCKET, SO_SNDBUF, 8192)
    assert sk.a.write(cfd, b"z" * 100000) == 8192


def test_maxseg_before_connect_is_advertised(sk):
    lfd = sk.server()
    fd = sk.a.socket()
    sk.a.setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, 536)
    assert sk.a.getsockopt(fd, IPPROTO_TCP, TCP_MAXSEG) == 536
    with pytest.raises(BlockingIOError):
        sk.a.connect(fd, ("198.18.0.2", 80))
    sfd, _ = sk.accept(lfd)
    assert sk.b.getsockopt(sfd, IPPROTO_TCP, TCP_MAXSEG) <= 536
    with pytest.raises(OSError) as ei:
        sk.a.setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, 10)
    assert ei.value.errno == errno.EINVAL


def test_accepted_sockets_inherit_listener_options(sk):
    lfd = sk.b.socket()
    sk.b.setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, 1)
    sk.b.bind(lfd, ("0.0.0.0", 80))
    sk.b.listen(lfd, 4)
    sk.connect()
    sfd, _ = sk.accept(lfd)
    assert sk.b.getsockopt(sfd, IPPROTO_TCP, TCP_NODELAY) == 1


def test_linger_zero_close_sends_rst(sk):
    cfd, sfd = sk.pair()
    sk.a.setsockopt(cfd, SOL_SOCKET, SO_LINGER, (1, 0))
    assert sk.a.getsockopt(cfd, SOL_SOCKET, SO_LINGER) == (1, 0)
    sk.a.close(cfd)
    assert sk.net.a.connections == {}                 # no TIME-WAIT after an abort
    sk.run(0.01)
    with pytest.raises(ConnectionResetError):
        sk.b.read(sfd, 10)


def test_linger_accepts_struct_bytes(sk):
    import struct
    fd = sk.a.socket()
    sk.a.setsockopt(fd, SOL_SOCKET, SO_LINGER, struct.pack("ii", 1, 5))
    assert sk.a.getsockopt(fd, SOL_SOCKET, SO_LINGER) == (1, 5)
    sk.a.setsockopt(fd, SOL_SOCKET, SO_LINGER, (0, 0))
    assert sk.a.getsockopt(fd, SOL_SOCKET, SO_LINGER) == (0, 0)


def test_reuseaddr_roundtrip(sk):
    fd = sk.a.socket()
    sk.a.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, 1)
    assert sk.a.getsockopt(fd, SOL_SOCKET, SO_REUSEADDR) == 1


def test_tcp_info(sk):
    fd = sk.a.socket()
    assert sk.a.getsockopt(fd, IPPROTO_TCP, TCP_INFO)["state"] == "CLOSED"
    cfd, sfd = sk.pair()
    sk.a.write(cfd, b"q" * 5000)
    sk.run(0.1)
    info = sk.a.getsockopt(cfd, IPPROTO_TCP, TCP_INFO)
    assert info["state"] == "ESTABLISHED"
    for k in ("rtt", "rto", "cwnd", "ssthresh", "retransmits", "total_retrans", "snd_mss"):
        assert k in info
    assert info["rtt"] > 0 and info["bytes_out"] == 5000
    json.dumps(info)
    lfd = [f for f, s in sk.b._fds.items() if getattr(s, "listener", None)][0]
    assert sk.b.getsockopt(lfd, IPPROTO_TCP, TCP_INFO)["state"] == "LISTEN"


def test_registry_takes_new_options(sk):
    OPT = 0x4001
    register_sockopt(IPPROTO_TCP, OPT, "TCP_TEST_FLAG",
                     get=lambda api, s: s.extra.get("flag", 0),
                     set=lambda api, s, v: s.extra.__setitem__("flag", int(v)))
    try:
        fd = sk.a.socket()
        sk.a.setsockopt(fd, IPPROTO_TCP, OPT, 1)
        assert sk.a.getsockopt(fd, IPPROTO_TCP, OPT) == 1
    finally:
        del SOCKOPTS[(IPPROTO_TCP, OPT)]
