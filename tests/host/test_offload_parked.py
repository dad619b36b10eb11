"""A connection offered to the NIC for teardown is *parked* until the NIC answers. With
the NIC in its own process the channel runs both ways at once, so a peer segment the
NIC passed up before it read the offer can reach the host afterwards (a hung NIC makes
it common). Such a segment must not make a second TCB for the 4-tuple: that one's own
offer was refused as a duplicate, and resuming it overwrote the first TCB in the table,
which was then never closed (issue 9: accepted - closed = 5 with conns_live 0).
Also: what the host reports when the NIC is lost (host.offload.NicOffload.lost)."""

import pytest

from acceltcp.host.stack import HostStack
from acceltcp.wire import control
from acceltcp.wire.tcp import ACK, FIN, build_tcp_frame, tcp_options

from ..accounting import check_accounting
from .util import PEER_IP, PEER_MAC, US_IP, US_MAC, Clock, FakeDevice

COOKIE_TS = 0x1001
KEY = PEER_IP + US_IP + (40000).to_bytes(2, "big") + (80).to_bytes(2, "big")


class FakeNic(FakeDevice):
    nic = True


def _peer(payload=b"hi", flags=ACK, seq=1000, tsecr=COOKIE_TS):
    return build_tcp_frame(US_MAC, PEER_MAC, PEER_IP, US_IP, 1, 40000, 80, seq, 5000, flags,
                           500, tcp_options(timestamps=(77, tsecr)), payload)


def _cookie_frame(payload=b"hi"):
    """The NIC's 0x090A: a completed cookie handshake (the client's ACK, with data)."""
    return control.wrap(_peer(payload), control.NewConnection(mss=1460, ts_base=COOKIE_TS))


def _offers(dev):
    return [f for f in dev.take() if f[12:14] == b"\x09\x0b"]


@pytest.fixture
def env():
    dev = FakeNic()
    st = HostStack(dev, US_IP, Clock(1.0), strict=True)
    st.arp_add(PEER_IP, PEER_MAC)
    lst = st.listen(80, 8, offload_setup=True, offload_teardown=True)
    return dev, st, lst


def _echo_and_close(st, lst, dev):
    """The app: accept, echo what arrived, close -> the connection is offered (parked)."""
    conn = lst.accept()
    assert conn is not None
    st.send(conn, st.recv(conn, 1 << 16))
    dev.take()
    st.close(conn)
    assert len(_offers(dev)) == 1
    return conn


def test_a_crossing_cookie_frame_makes_no_second_tcb(env):
    dev, st, lst = env
    st.receive_frame(_cookie_frame())
    _echo_and_close(st, lst, dev)
    assert st.connections == {}                 # parked: out of the table
    # The NIC passed the client's retransmission (still echoing the cookie TSval) up
    # before it read the offer; and a plain segment (the client's FIN) likewise.
    st.receive_frame(_cookie_frame())
    st.receive_frame(_peer(b"", ACK | FIN, seq=1002, tsecr=COOKIE_TS + 64))
    assert lst.accept() is None and st.connections == {}
    assert st.drops["teardown_pending"] == 2
    assert dev.take() == []                     # no RST, no SYN-ACK, nothing
    c = st.counters
    assert c["conns_accepted"] == c["cookie_conns"] == 1
    # the NIC takes it: closed here, accounted
    st.receive_frame(control.TeardownAccepted(1, KEY).frame(US_MAC, US_MAC))
    c = check_accounting(st)
    assert c["conns_closed"] == 1 and c["conns_live"] == 0 and c["teardown_accepted"] == 1
    # afterwards the 4-tuple is free again (a new incarnation through the NIC)
    st.receive_frame(_cookie_frame())
    assert lst.accept() is not None and st.counters["conns_accepted"] == 2


def test_the_old_leak_refused_then_lost(env):
    """The sequence that leaked: offer, crossing cookie frame, NIC refuses / is lost."""
    dev, st, lst = env
    st.receive_frame(_cookie_frame())
    first = _echo_and_close(st, lst, dev)
    st.receive_frame(_cookie_frame())           # (a second TCB here, before the fix)
    second = lst.accept()
    if second is not None:                      # what the old code did: the app closes it
        st.send(second, st.recv(second, 1 << 16))
        st.close(second)
    lost = st.nic_lost()                        # every parked offer resumed by the host
    live = list(st.connections.values())
    for conn in live:
        st.abort(conn)
    c = check_accounting(st)                    # (the overwritten TCB leaked here)
    assert c["conns_accepted"] == c["conns_closed"] == 1 and c["conns_live"] == 0
    assert live == [first] and lost["parked_resumed"] == 1


def test_refused_offer_resumes_and_takes_the_peer_again(env):
    dev, st, lst = env
    st.receive_frame(_cookie_frame())
    conn = _echo_and_close(st, lst, dev)
    st.receive_frame(_peer(b"", ACK | FIN, seq=1002, tsecr=COOKIE_TS + 64))
    assert st.drops["teardown_pending"] == 1
    st.receive_frame(control.TeardownRefused(1, KEY, control.TEARDOWN_REFUSED_DUPLICATE)
                     .frame(US_MAC, US_MAC))
    assert list(st.connections.values()) == [conn] and conn.fin_queued
    assert st.counters["teardown_refused_duplicate"] == 1
    check_accounting(st)


def test_nic_lost_reports_what_the_nic_held(env):
    from acceltcp.host.offload import SPLICE_LOST, SpliceFailed, SpliceLost
    dev, st, lst = env
    # flow 1: accepted by the NIC (it holds it); flow 2: still parked
    st.receive_frame(_cookie_frame())
    _echo_and_close(st, lst, dev)
    st.receive_frame(control.TeardownAccepted(1, KEY).frame(US_MAC, US_MAC))
    other = _peer().replace(b"\x9c\x40\x00\x50", b"\x9c\x41\x00\x50", 1)   # port 40001
    st.receive_frame(control.wrap(other, control.NewConnection(mss=1460,
                                                               ts_base=COOKIE_TS)))
    parked = _echo_and_close(st, lst, dev)
    # an installed splice (as host.offload keeps it) and a pending one
    got = []
    st.offload._spliced[7] = (got.append, b"c" * 12, b"s" * 12)
    lost = st.nic_lost()
    assert lost == {"parked_resumed": 1, "splices_failed": 0, "splices_lost": 1,
                    "splice_ids_lost": [7], "teardown_flows_lost": 1}
    assert [type(r) for r in got] == [SpliceLost] and not isinstance(got[0], SpliceFailed)
    assert got[0].splice_id == 7 and got[0].reason == SPLICE_LOST
    c = st.counters
    assert c["nic_lost"] == 1 and c["teardown_refused_nic_lost"] == 1
    assert c["nic_lost_teardown_flows"] == 1 and c["nic_lost_splices"] == 1
    assert list(st.connections.values()) == [parked] and parked.fin_queued
    assert st.nic_lost() is None                 # once
    check_accounting(st)
