"""Data transfer behaviour: delayed ACK, Nagle, flow control, zero-window probes, RTO,
fast retransmit with NewReno and with SACK."""

import random

import pytest

from acceltcp.tcp.config import TcpConfig
from acceltcp.wire.tcp import ACK, FIN

from .pair import Pair


def established(**kw):
    cfg_a = TcpConfig(**kw)
    cfg_b = TcpConfig(**kw)
    p = Pair(cfg_a, cfg_b)
    p.handshake()
    return p


def test_delayed_ack_is_piggybacked_on_the_reply():
    p = established()
    p.a.conn.send(b"request", p.now)
    p.deliver(p.a)
    assert p.b.take() == []                       # ACK delayed
    assert p.b.conn.t_dack == pytest.approx(p.now + 0.040)
    p.b.conn.send(p.b.conn.recv(), p.now)         # the reply carries the ACK
    reply = p.b.take()
    assert len(reply) == 1 and reply[0].ack == p.a.conn.snd_nxt and reply[0].payload == b"request"
    assert p.b.conn.t_dack is None


def test_delayed_ack_fires_after_timeout():
    p = established()
    p.a.conn.send(b"x", p.now)
    p.deliver(p.a)
    p.advance(0.039)
    assert p.a.conn.snd_una != p.a.conn.snd_nxt
    p.advance(0.002)
    assert p.a.conn.snd_una == p.a.conn.snd_nxt


def test_every_second_full_segment_is_acked_at_once():
    p = established()
    p.a.conn.send(b"x" * (2 * p.a.conn.mss), p.now)
    p.deliver(p.a)
    acks = p.b.take()
    assert len(acks) == 1 and acks[0].ack == p.a.conn.snd_nxt


def test_nagle_holds_small_segments_until_ack():
    p = established()
    p.a.conn.send(b"a", p.now)
    p.a.conn.send(b"b", p.now)
    p.a.conn.send(b"c", p.now)
    assert [bytes(s.payload) for s in p.a.sent] == [b"a"]
    p.pump()
    p.advance(0.05)
    assert p.b.conn.recv() == b"abc"


def test_nodelay_sends_small_segments_at_once():
    p = established(nodelay=True)
    for c in b"abc":
        p.a.conn.send(bytes([c]), p.now)
    assert [bytes(s.payload) for s in p.a.take()] == [b"a", b"b", b"c"]


def test_receive_window_limits_sender_and_zero_window_probe():
    p = established(rcv_buf=8192, snd_buf=65536, nodelay=True)
    data = bytes(range(256)) * 100                 # 25600 bytes
    assert p.a.conn.send(data, p.now) == len(data)
    p.pump()
    p.advance(30)
    # The receiver is full and its app is not reading; the last small piece of window
    # went out on the SWS override timer, then persist probes with exponential backoff.
    assert len(p.b.conn.rcvbuf) >= 8192
    assert p.a.conn.snd_wnd == 0
    probes = p.a.conn.window_probes
    assert 3 <= probes <= 10
    assert p.a.conn.error is None and p.a.conn.retries == 0
    got = bytearray()
    for _ in range(200):
        got += p.b.conn.recv(4096, p.now)          # opens the window (window update)
        p.pump()
        p.advance(0.5)
        if len(got) == len(data):
            break
    assert bytes(got) == data


def test_rto_backs_off_and_recovers():
    p = established(nodelay=True)
    p.a.conn.send(b"lost once", p.now)
    p.a.take()                                     # dropped
    first = p.a.conn.t_rto
    p.now = first
    p.a.conn.on_timer(p.now)
    assert p.a.conn.rto_timeouts == 1 and p.a.conn.rto.rto >= 2 * 0.2
    p.pump()
    p.advance(0.1)
    assert p.b.conn.recv() == b"lost once"
    assert p.a.conn.cc.cwnd >= p.a.conn.mss


def _lossy_transfer(cfg, drop_every, nbytes=400_000):
    p = Pair(cfg, cfg)
    p.handshake()
    rng = random.Random(7)
    data = rng.randbytes(nbytes)
    sent = 0
    got = bytearray()
    count = 0
    for _ in range(20000):
        if sent < len(data):
            sent += p.a.conn.send(data[sent:sent + 65536], p.now)
        segs = p.a.take()
        keep = []
        for s in segs:
            count += 1
            if s.payload and count % drop_every == 0:
                continue
            keep.append(s)
        p.deliver(p.a, keep)
        p.deliver(p.b)
        got += p.b.conn.recv(1 << 20, p.now)
        if len(got) == len(data):
            break
        if not p.a.sent and not p.b.sent:
            p.advance(0.01)
    return p, data, bytes(got)


@pytest.mark.parametrize("cc", ["newreno", "cubic"])
@pytest.mark.parametrize("sack", [True, False])
def test_fast_retransmit_recovers_without_rto(cc, sack):
    p, data, got = _lossy_transfer(TcpConfig(cc=cc, sack=sack), drop_every=50)
    assert got == data
    s = p.a.conn.stats
    assert s["fast_retransmits"] > 0
    assert s["retransmits"] >= s["fast_retransmits"]
    assert s["rto_timeouts"] <= s["fast_retransmits"]


def test_sack_recovery_repairs_several_holes_in_one_round():
    cfg = TcpConfig(sack=True, nodelay=True)
    p = Pair(cfg, cfg)
    p.handshake()
    for i in range(10):
        p.a.conn.send(bytes([i]) * 1000, p.now)
    segs = p.a.take()
    assert len(segs) == 10
    lost = {1, 4, 7}
    p.deliver(p.a, [s for i, s in enumerate(segs) if i not in lost])
    p.deliver(p.b)                                 # dup ACKs with SACK blocks
    assert p.a.conn.fast_retransmits == 1
    rtx = [s for s in p.a.take() if s.payload]
    assert sorted(s.seq for s in rtx) == sorted(segs[i].seq for i in lost)
    p.deliver(p.a, rtx)
    p.pump()
    p.advance(0.1)
    assert p.b.conn.recv() == b"".join(bytes([i]) * 1000 for i in range(10))
    assert p.a.conn.rto_timeouts == 0


def test_newreno_partial_ack_retransmits_next_hole():
    cfg = TcpConfig(sack=False, nodelay=True)
    p = Pair(cfg, cfg)
    p.handshake()
    for i in range(10):
        p.a.conn.send(bytes([i]) * 1000, p.now)
    segs = p.a.take()
    p.deliver(p.a, [s for i, s in enumerate(segs) if i not in (1, 4)])
    p.deliver(p.b)
    first = [s for s in p.a.take() if s.payload]
    assert first[0].seq == segs[1].seq             # fast retransmit of the first hole
    p.deliver(p.a, first[:1])
    p.deliver(p.b)                                 # partial ACK → retransmit second hole
    second = [s for s in p.a.take() if s.payload]
    assert second[0].seq == segs[4].seq
    p.deliver(p.a, second)
    p.pump()
    p.advance(0.1)
    assert len(p.b.conn.recv()) == 10000
    assert p.a.conn.rto_timeouts == 0 and not p.a.conn.in_recovery


def test_fin_is_retransmitted():
    p = established()
    p.a.conn.close(p.now)
    assert p.a.take()[0].flags & FIN                # lost
    p.advance(1.0)
    assert p.b.conn.eof
    assert p.a.conn.rto_timeouts >= 1


def test_half_close_keeps_receiving():
    p = established()
    p.a.conn.shutdown(p.now)
    p.pump()
    p.advance(0.1)
    p.b.conn.send(b"still talking", p.now)
    p.pump()
    assert p.a.conn.recv() == b"still talking"
    assert ACK


def test_byte_counters_count_each_byte_once():
    """bytes_out counts a byte the first time it is sent (a retransmission is a
    ``retransmits``), bytes_in when it joins the in-order stream (a duplicate, or a
    segment held out of order and later filled in, is not counted twice), as Linux's
    tcpi_bytes_sent minus retransmissions and tcpi_bytes_received."""
    p = established(nodelay=True)
    p.a.conn.send(b"x" * 3000, p.now)
    segs = p.a.take()
    assert len(segs) == 3 and sum(len(s.payload) for s in segs) == 3000
    assert p.a.conn.bytes_out == 3000
    p.deliver(p.a, [segs[1], segs[2], segs[1]])       # out of order, one twice
    assert p.b.conn.bytes_in == 0 and p.b.conn.ooo_segments >= 2
    p.deliver(p.a, [segs[0], segs[0]])                 # fills the hole, then a duplicate
    assert p.b.conn.bytes_in == 3000
    p.a.take()
    p.now = p.a.conn.t_rto                              # RTO: the first segment again
    p.a.conn.on_timer(p.now)
    assert p.a.conn.retransmits == 1 and p.a.take()[0].payload == segs[0].payload
    assert p.a.conn.bytes_out == 3000
    p.pump()
    assert p.b.conn.bytes_in == 3000 and p.b.conn.recv() == b"x" * 3000
