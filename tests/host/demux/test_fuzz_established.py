"""Well-formed but arbitrary segments at an established connection never raise."""

from hypothesis import given, settings
from hypothesis import strategies as st

from acceltcp.host.stack import OUTBOUND_DROP_REASONS
from acceltcp.wire.tcp import ACK, tcp_options

from acceltcp.host.stack import HostStack

from ..util import (NEAR_WRAP, PEER_IP, PEER_MAC, US_IP, Clock, FakeDevice, syn, tcp_frame,
                    tcp_sent)

PEER_ISS = NEAR_WRAP
u32 = st.one_of(st.integers(0, 2**32 - 1), st.integers(NEAR_WRAP - 70000, NEAR_WRAP + 70000)
                .map(lambda x: x % 2**32))


def established(stack, dev):
    stack.arp_add(PEER_IP, PEER_MAC)
    lst = stack.listen(80, 1024)
    stack.receive_frame(syn(sport=40000, seq=PEER_ISS))
    [synack] = tcp_sent(dev)
    stack.receive_frame(tcp_frame(ACK, seq=(PEER_ISS + 1) % 2**32,
                                  ack=(synack.tcp.seq + 1) % 2**32, sport=40000))
    conn = lst.accept()
    assert conn is not None
    return conn, synack.tcp.seq


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_random_segments_at_an_established_connection(data):
    dev, clock = FakeDevice(), Clock(100.0)
    stack = HostStack(dev, US_IP, clock, isn=lambda *a: NEAR_WRAP - 999, strict=True)
    conn, iss = established(stack, dev)
    stack.send(conn, b"s" * 3000)
    for _ in range(data.draw(st.integers(1, 8))):
        near = data.draw(st.booleans())
        seq = (PEER_ISS + 1 + data.draw(st.integers(-3000, 70000))) % 2**32 if near \
            else data.draw(u32)
        ack = (iss + 1 + data.draw(st.integers(-100, 4000))) % 2**32 if near \
            else data.draw(u32)
        flags = data.draw(st.integers(0, 255)) | (ACK if near else 0)
        opts = data.draw(st.sampled_from([
            b"", tcp_options(timestamps=(data.draw(u32), data.draw(u32))),
            tcp_options(sack_blocks=((data.draw(u32), data.draw(u32)),)),
            tcp_options(mss=data.draw(st.integers(0, 65535)), wscale=3, sack_permitted=True)]))
        payload = data.draw(st.binary(max_size=1500))
        window = data.draw(st.integers(0, 65535))
        stack.receive_frame(tcp_frame(flags, seq=seq, ack=ack, sport=40000, payload=payload,
                                      window=window, options=opts))
        if data.draw(st.booleans()):
            clock.advance(data.draw(st.floats(0, 3)))
            stack.on_timer()
        if not conn.closed and data.draw(st.booleans()):
            stack.recv(conn, 100000)
    inbound = sum(n for r, n in stack.drops.items() if r not in OUTBOUND_DROP_REASONS)
    assert stack.counters["frames_delivered"] + inbound == stack.counters["frames_in"]
    if conn.closed:
        assert all(c is not conn for c in stack.connections.values())
