"""Ephemeral ports (RFC 6056 Algorithm 3) and ISNs (RFC 6528)."""

import pytest

from acceltcp.tcp import states
from acceltcp.wire.tcp import ACK, FIN, SYN

from ..util import NEAR_WRAP, OTHER_IP, PEER_IP, PEER_MAC, US_IP, tcp_frame, tcp_sent


@pytest.fixture
def pstack(stack):
    stack.arp_add(PEER_IP, PEER_MAC)
    stack.arp_add(OTHER_IP, PEER_MAC)
    return stack


def test_ports_are_in_range_and_distinct_per_destination(pstack):
    ports = [pstack.connect(PEER_IP, 80).local_port for _ in range(200)]
    lo, hi = pstack.ephemeral
    assert all(lo <= p <= hi for p in ports)
    assert len(set(ports)) == 200


def test_ports_skip_listeners_and_bound_ports(make_stack):
    stack = make_stack(ephemeral=(5000, 5009))
    stack.arp_add(PEER_IP, PEER_MAC)
    stack.listen(5003)
    stack.bind_port(5006)
    ports = {stack.connect(PEER_IP, 80).local_port for _ in range(8)}
    assert ports == set(range(5000, 5010)) - {5003, 5006}


def test_exhaustion_is_eaddrnotavail_but_other_destinations_still_work(make_stack):
    stack = make_stack(ephemeral=(5000, 5003))
    stack.arp_add(PEER_IP, PEER_MAC)
    for _ in range(4):
        stack.connect(PEER_IP, 80)
    with pytest.raises(OSError) as ei:
        stack.connect(PEER_IP, 80)
    assert ei.value.errno == 99
    stack.connect(PEER_IP, 81)            # a different 4-tuple may reuse the ports


def time_wait_conn(stack, dev, lport=6000):
    """Drive an active close to TIME-WAIT against a hand-played peer."""
    conn = stack.connect(PEER_IP, 80, local_port=lport)
    [syn] = tcp_sent(dev)
    peer_iss = 777
    stack.receive_frame(tcp_frame(SYN | ACK, seq=peer_iss, ack=(syn.tcp.seq + 1) % 2**32,
                                  sport=80, dport=lport))
    stack.close(conn)
    [fin] = [s for s in tcp_sent(dev) if s.tcp.flags & FIN]
    stack.receive_frame(tcp_frame(FIN | ACK, seq=peer_iss + 1, ack=(fin.tcp.seq + 1) % 2**32,
                                  sport=80, dport=lport))
    # The TCB handed its TIME-WAIT to a compact record and closed.
    assert conn.closed and stack.connections == {}
    [tw] = stack.time_wait.values()
    assert tw.state == states.TIME_WAIT and tw.owner.local_port == lport
    return tw


def test_time_wait_4_tuple_is_not_reused(pstack, dev, clock):
    time_wait_conn(pstack, dev)
    with pytest.raises(OSError) as ei:
        pstack.connect(PEER_IP, 80, local_port=6000)
    assert ei.value.errno == 99
    clock.advance(pstack.config.time_wait + 0.01)
    pstack.on_timer()
    assert pstack.time_wait == {}
    pstack.connect(PEER_IP, 80, local_port=6000)


def test_ephemeral_allocation_avoids_time_wait_tuples(make_stack, dev):
    stack = make_stack(ephemeral=(6000, 6001))
    stack.arp_add(PEER_IP, PEER_MAC)
    time_wait_conn(stack, dev, lport=6000)
    assert stack.connect(PEER_IP, 80).local_port == 6001


def test_default_isn_is_keyed_per_tuple_and_advances_with_time(dev, clock):
    from acceltcp.host.stack import HostStack
    stack = HostStack(dev, US_IP, clock, secret=b"k" * 16)
    a = stack._isn(US_IP, 1, PEER_IP, 80, 0.0)
    b = stack._isn(US_IP, 2, PEER_IP, 80, 0.0)
    assert a != b
    assert (stack._isn(US_IP, 1, PEER_IP, 80, 1.0) - a) % 2**32 == 250_000   # 4 µs ticks
    other = HostStack(dev, US_IP, clock, secret=b"j" * 16)
    assert other._isn(US_IP, 1, PEER_IP, 80, 0.0) != a


def test_isn_override_is_used(pstack, dev):
    pstack.connect(PEER_IP, 80)
    [s] = tcp_sent(dev)
    assert s.tcp.seq == NEAR_WRAP
