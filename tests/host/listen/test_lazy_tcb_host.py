"""HostStack(lazy_tcb=...): which children start as quasi-TCBs (tcp.quasi), the counters
of births, promotions and quasi-TCBs freed, and the accounting invariant either way."""

import pytest

from acceltcp.tcp.connection import TcpConnection
from acceltcp.tcp.quasi import QuasiTcb
from acceltcp.wire.tcp import ACK, RST

from ...accounting import check_accounting
from ..util import PEER_IP, PEER_MAC, tcp_frame
from .test_syn_cookies import cookie_syn_ack, final_ack


class MyTcb(TcpConnection):
    __slots__ = ()


def test_the_option_and_its_default(make_stack):
    assert make_stack().lazy_tcb is True
    assert make_stack(lazy_tcb=False).lazy_tcb is False
    assert make_stack(lazy_tcb="always").lazy_tcb == "always"
    with pytest.raises(ValueError):
        make_stack(lazy_tcb="sometimes")
    # a quasi-TCB promotes to a TcpConnection: another TCB type gets no lazy creation
    assert make_stack(tcb_class=MyTcb).lazy_tcb is False
    assert make_stack(tcb_class=MyTcb, lazy_tcb="always").lazy_tcb is False


def _cookie_child(make_stack, dev, lazy, payload=b"GET /\r\n"):
    """A host cookie handshake whose final ACK carries the request -> (stack, child)."""
    st = make_stack(max_syn_backlog=0, lazy_tcb=lazy,     # every SYN gets a cookie
                    secret=b"the same cookies")
    st.arp_add(PEER_IP, PEER_MAC)
    lst = st.listen(80, 8)
    s = cookie_syn_ack(st, dev)
    st.receive_frame(final_ack(s.tcp, payload=payload))
    conn = lst.accept()
    assert conn is not None and bytes(conn.rcvbuf) == payload
    return st, conn, s


def test_by_default_only_where_a_quasi_can_end_as_one(make_stack, dev):
    # no NIC, so no teardown offload: every quasi would be promoted at close at the
    # latest, which costs more than a full TCB built at once
    st, conn, _ = _cookie_child(make_stack, dev, True)
    assert conn.__class__ is TcpConnection and st.counters["tcb_quasi"] == 0


def test_a_cookie_child_with_its_request_is_quasi_until_it_needs_more(make_stack, dev):
    st, conn, s = _cookie_child(make_stack, dev, "always")
    assert conn.__class__ is QuasiTcb
    c = st.counters
    assert c["tcb_quasi"] == 1 and c["tcb_quasi_freed"] == 0
    # the client resets it: a segment the quasi cannot take -> a full TCB, then closed
    st.receive_frame(tcp_frame(RST | ACK, seq=conn.rcv_nxt, ack=conn.snd_una, sport=5000))
    assert conn.__class__ is TcpConnection and conn.closed and conn.error == "reset"
    c = st.counters
    assert c["tcb_promoted_rst"] == 1 and c["tcb_quasi_freed"] == 0
    assert c["conns_reset"] == 1
    check_accounting(st)


def test_without_lazy_creation_the_child_is_full_and_nothing_is_counted(make_stack, dev):
    st, conn, _ = _cookie_child(make_stack, dev, False)
    assert conn.__class__ is TcpConnection
    st.receive_frame(tcp_frame(RST | ACK, seq=conn.rcv_nxt, ack=conn.snd_una, sport=5000))
    c = st.counters
    assert c["tcb_quasi"] == 0 and not [k for k in c if k.startswith("tcb_promoted_")]
    check_accounting(st)


def test_a_closed_quasi_is_a_full_tcb_and_sends_as_one(make_stack, dev):
    outs = {}
    for lazy in ("always", False):
        st, conn, _ = _cookie_child(make_stack, dev, lazy)
        dev.take()
        st.send(conn, st.recv(conn, 100).upper())
        st.close(conn)
        outs[lazy] = dev.take()
        assert st.counters.get("tcb_promoted_send", 0) == (1 if lazy else 0)
        check_accounting(st)
    assert outs["always"] == outs[False] and outs[False]
