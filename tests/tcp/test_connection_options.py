"""Option negotiation (RFC 9293 §3.7.1, RFC 7323, RFC 2018) in every on/off combination."""

import itertools

import pytest

from acceltcp.tcp.config import TcpConfig
from acceltcp.wire.tcp import ACK, SYN

from .pair import Pair

COMBOS = list(itertools.product([False, True], repeat=2))


def _pair(a_kwargs, b_kwargs):
    p = Pair(TcpConfig(**a_kwargs), TcpConfig(**b_kwargs))
    p.a.conn.connect(p.now)
    syn = p.a.take()[0]
    p.b.conn.accept_syn(syn, p.now)
    synack = p.b.sent[0]
    p.pump()
    return p, syn, synack


@pytest.mark.parametrize("a_on,b_on", COMBOS)
def test_window_scale(a_on, b_on):
    p, syn, synack = _pair({"wscale": 7 if a_on else None}, {"wscale": 5 if b_on else None})
    assert (syn.wscale is not None) == a_on
    # A SYN,ACK carries WS only in answer to a SYN that had it (RFC 7323 §2.2).
    assert (synack.wscale is not None) == (a_on and b_on)
    both = a_on and b_on
    assert p.a.conn.snd_wscale == (5 if both else 0)
    assert p.a.conn.rcv_wscale == (7 if both else 0)
    assert p.b.conn.snd_wscale == (7 if both else 0)
    assert p.b.conn.rcv_wscale == (5 if both else 0)
    # The SYN's own window field is never scaled.
    assert syn.window == min(p.a.conn.config.rcv_buf, 0xFFFF)
    # After the handshake, the scaled window matches the real buffer on both sides.
    p.a.conn.send(b"x" * 10, p.now)
    seg = p.a.take()[0]
    shift = p.a.conn.rcv_wscale
    expected = min(p.a.conn.config.rcv_buf, 0xFFFF << shift)
    assert expected - (1 << shift) < seg.window << shift <= expected + (1 << shift)


@pytest.mark.parametrize("a_on,b_on", COMBOS)
def test_sack_permitted(a_on, b_on):
    p, syn, synack = _pair({"sack": a_on}, {"sack": b_on})
    assert syn.sack_permitted == a_on
    assert synack.sack_permitted == (a_on and b_on)
    assert p.a.conn.sack_ok == p.b.conn.sack_ok == (a_on and b_on)


@pytest.mark.parametrize("a_on,b_on", COMBOS)
def test_timestamps(a_on, b_on):
    p, syn, synack = _pair({"timestamps": a_on}, {"timestamps": b_on})
    assert (syn.tsval is not None) == a_on
    both = a_on and b_on
    assert (synack.tsval is not None) == both
    if both:
        assert synack.tsecr == syn.tsval          # RFC 7323 §3.2: echo in the SYN,ACK
    assert p.a.conn.ts_ok == p.b.conn.ts_ok == both
    # Every later segment carries TS exactly when negotiated, and the MSS shrinks by 12.
    p.a.conn.send(b"hello", p.now)
    seg = p.a.take()[0]
    assert (seg.tsval is not None) == both
    assert p.a.conn.mss == 1460 - (12 if both else 0)


@pytest.mark.parametrize("all_on", [False, True])
def test_sack_blocks_sent_for_out_of_order_data(all_on):
    cfg = TcpConfig(sack=all_on, timestamps=all_on)
    p = Pair(cfg, cfg)
    p.handshake()
    p.a.conn.config.nodelay = True
    for i in range(4):
        p.a.conn.send(bytes([i]) * 1000, p.now)
    segs = p.a.take()
    assert len(segs) == 4
    p.deliver(p.a, [segs[0], segs[2]])           # segment 1 lost
    acks = p.b.take()
    dup = acks[-1]
    assert dup.ack == segs[1].seq
    if all_on:
        assert dup.sack_blocks == ((segs[2].seq, segs[2].seq + 1000),)
    else:
        assert dup.sack_blocks == ()


def test_mss_option_bounds_segments():
    p = Pair(TcpConfig(mss=1460), TcpConfig(mss=536, timestamps=False))
    p.handshake()
    assert p.a.conn.mss == 536
    p.a.conn.send(b"z" * 5000, p.now)
    assert max(len(s.payload) for s in p.a.take()) == 536


def test_no_mss_option_means_536():
    """RFC 9293 §3.7.1: without an MSS option the send MSS is 536."""
    from .pair import forge
    p = Pair()
    p.b.conn.listen()
    syn = forge(p.a, SYN, seq=p.a.conn.iss, ack=0, ts=False)
    p.b.conn.on_segment(syn, p.now)
    assert p.b.sent[0].flags == SYN | ACK
    assert p.b.conn.mss == 536
    assert ACK
