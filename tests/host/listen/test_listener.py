"""Listeners: SYN queue, accept queue, overflow, children dying before accept."""

import pytest

from acceltcp.tcp import states
from acceltcp.wire.tcp import ACK, RST, SYN

from ..util import NEAR_WRAP, PEER_IP, PEER_MAC, syn, tcp_frame, tcp_sent


@pytest.fixture
def lstack(stack):
    stack.arp_add(PEER_IP, PEER_MAC)
    return stack


def handshake(stack, dev, sport, seq=NEAR_WRAP):
    """SYN from the peer, then the final ACK of the SYN,ACK the stack answered with."""
    stack.receive_frame(syn(sport=sport, seq=seq))
    synack = [s for s in tcp_sent(dev) if s.tcp.flags == SYN | ACK][-1].tcp
    assert synack.ack == (seq + 1) % 2**32
    stack.receive_frame(tcp_frame(ACK, seq=(seq + 1) % 2**32, ack=(synack.seq + 1) % 2**32,
                                  sport=sport))
    return synack


def test_syn_creates_an_embryonic_child_and_answers_syn_ack(lstack, dev):
    lst = lstack.listen(80, 8)
    lstack.receive_frame(syn(sport=5555))
    [s] = tcp_sent(dev)
    assert s.tcp.flags == SYN | ACK and s.tcp.dst_port == 5555
    assert len(lst.syn_queue) == 1 and not lst.accept_queue
    [conn] = lst.syn_queue
    assert conn.state == states.SYN_RECEIVED


def test_final_ack_moves_the_child_to_the_accept_queue(lstack, dev):
    lst = lstack.listen(80, 8)
    seen = []
    lst.on_acceptable = seen.append
    handshake(lstack, dev, 5555)
    assert seen == [lst]
    assert not lst.syn_queue and len(lst.accept_queue) == 1
    conn = lst.accept()
    assert conn.state == states.ESTABLISHED and conn.remote_port == 5555
    assert lst.accept() is None
    assert lstack.counters["conns_accepted"] == 1


def test_retransmitted_syn_reaches_the_child_not_a_new_one(lstack, dev):
    lst = lstack.listen(80, 8)
    lstack.receive_frame(syn(sport=5555))
    lstack.receive_frame(syn(sport=5555))
    assert len(lst.syn_queue) == 1
    assert [s.tcp.flags for s in tcp_sent(dev)] == [SYN | ACK, SYN | ACK]


def test_syn_queue_overflow_drops_syns_without_cookies(make_stack, dev):
    stack = make_stack(max_syn_backlog=2, syn_cookies=False)
    stack.arp_add(PEER_IP, PEER_MAC)
    lst = stack.listen(80, 8)
    for port in (1, 2, 3, 4):
        stack.receive_frame(syn(sport=port))
    assert len(lst.syn_queue) == 2
    assert stack.drops["syn_backlog_overflow"] == 2
    assert len(tcp_sent(dev)) == 2


def test_full_accept_queue_drops_new_syns(lstack, dev):
    lst = lstack.listen(80, 1)
    handshake(lstack, dev, 1)
    lstack.receive_frame(syn(sport=2))
    assert lstack.drops["listen_overflow"] == 1
    assert tcp_sent(dev) == []
    lst.accept()
    handshake(lstack, dev, 2)
    assert len(lst.accept_queue) == 1


def test_full_accept_queue_drops_the_final_ack_and_the_child_retries(lstack, dev, clock):
    lst = lstack.listen(80, 1)
    lstack.receive_frame(syn(sport=1))
    lstack.receive_frame(syn(sport=2))
    synacks = {s.tcp.dst_port: s.tcp for s in tcp_sent(dev)}
    for port in (1, 2):
        lstack.receive_frame(tcp_frame(ACK, seq=(NEAR_WRAP + 1) % 2**32,
                                       ack=(synacks[port].seq + 1) % 2**32, sport=port))
    assert len(lst.accept_queue) == 1 and len(lst.syn_queue) == 1
    assert lstack.drops["listen_overflow"] == 1
    [child] = lst.syn_queue
    assert child.state == states.SYN_RECEIVED
    clock.advance(1.0)
    lstack.on_timer()                 # SYN,ACK retransmission: the handshake is retried
    assert [s.tcp.flags for s in tcp_sent(dev)] == [SYN | ACK]


def test_child_reset_before_accept_is_removed(lstack, dev):
    lst = lstack.listen(80, 8)
    handshake(lstack, dev, 7)
    conn = lst.accept_queue[0]
    lstack.receive_frame(tcp_frame(RST, seq=(NEAR_WRAP + 1) % 2**32, sport=7))
    assert conn.closed and not lst.accept_queue
    assert lstack.connections == {}
    assert lstack.counters["conns_reset"] == 1


def test_embryonic_child_reset_is_removed(lstack, dev):
    lst = lstack.listen(80, 8)
    lstack.receive_frame(syn(sport=7))
    lstack.receive_frame(tcp_frame(RST, seq=(NEAR_WRAP + 1) % 2**32, sport=7))
    assert not lst.syn_queue and lstack.connections == {}


def test_embryonic_child_times_out(lstack, dev, clock):
    lst = lstack.listen(80, 8)
    lstack.receive_frame(syn(sport=7))
    for _ in range(200):
        d = lstack.next_deadline()
        if d is None:
            break
        clock.now = max(clock.now, d)
        lstack.on_timer()
    assert not lst.syn_queue and lstack.connections == {}


def test_unlisten_resets_pending_children(lstack, dev):
    lst = lstack.listen(80, 8)
    handshake(lstack, dev, 1)
    lstack.receive_frame(syn(sport=2))
    dev.take()
    lstack.unlisten(lst)
    assert lstack.connections == {}
    assert 80 not in lstack.listeners
    flags = sorted(s.tcp.flags for s in tcp_sent(dev))
    assert flags == [RST | ACK, RST | ACK]
    lstack.receive_frame(syn(sport=3))
    assert lstack.drops["no_connection"] == 1


def test_listen_twice_on_a_port_is_eaddrinuse(lstack):
    lstack.listen(80)
    with pytest.raises(OSError) as ei:
        lstack.listen(80)
    assert ei.value.errno == 98


def test_listen_on_port_zero_picks_a_free_port(lstack):
    lst = lstack.listen(0)
    lo, hi = lstack.ephemeral
    assert lo <= lst.port <= hi


def test_listen_on_a_foreign_address_is_eaddrnotavail(lstack):
    with pytest.raises(OSError) as ei:
        lstack.listen(80, ip="198.18.1.99")
    assert ei.value.errno == 99
