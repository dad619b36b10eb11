"""PAWS (RFC 7323 §5), RFC 5961 mitigations, and acceptability checks (RFC 9293 §3.10.7.4)."""

from acceltcp.tcp.states import ESTABLISHED, CLOSED
from acceltcp.wire.tcp import ACK, PSH, RST, SYN, build_tcp, parse_tcp, tcp_options

from .pair import Pair, forge


def established():
    p = Pair()
    p.handshake()
    return p


def test_paws_drops_an_old_duplicate():
    p = established()
    p.now = 5.0
    p.a.conn.send(b"new data", p.now)
    p.pump()
    assert p.b.conn.recv() == b"new data"
    # An old duplicate: in-window sequence number, but a timestamp older than ts_recent.
    b = p.b.conn
    old_ts = (b.ts_recent - 1000) & 0xFFFFFFFF
    raw = build_tcp(p.a.conn.local_ip, b.local_ip, 40000, 80, b.rcv_nxt, p.a.conn.rcv_nxt,
                    ACK | PSH, 1000, tcp_options(timestamps=(old_ts, b.ts_recent)), b"OLD")
    p.b.take()
    b.on_segment(parse_tcp(raw, p.a.conn.local_ip, b.local_ip), p.now)
    assert b.paws_drops == 1
    assert b.recv() == b""                        # the data was not accepted
    ack = p.b.take()
    assert len(ack) == 1 and ack[0].flags == ACK  # RFC 7323 §5.3 R1: ACK and drop
    # The same data with a current timestamp is accepted.
    raw = build_tcp(p.a.conn.local_ip, b.local_ip, 40000, 80, b.rcv_nxt, p.a.conn.rcv_nxt,
                    ACK | PSH, 1000, tcp_options(timestamps=((b.ts_recent + 5) & 0xFFFFFFFF,
                                                             b.ts_recent)), b"NEW")
    b.on_segment(parse_tcp(raw, p.a.conn.local_ip, b.local_ip), p.now)
    assert b.recv() == b"NEW"


def test_inexact_in_window_rst_gets_challenge_ack():
    """RFC 5961 §3.2: an RST in the window but not at RCV.NXT → challenge ACK, no reset."""
    p = established()
    b = p.b.conn
    p.b.take()
    b.on_segment(forge(p.a, RST, seq=b.rcv_nxt + 100, ack=0, ts=False), p.now)
    assert b.state == ESTABLISHED
    out = p.b.take()
    assert len(out) == 1 and out[0].flags == ACK
    assert out[0].seq == b.snd_nxt and out[0].ack == b.rcv_nxt
    assert b.challenge_acks == 1


def test_exact_rst_resets():
    p = established()
    b = p.b.conn
    b.on_segment(forge(p.a, RST, seq=b.rcv_nxt, ack=0, ts=False), p.now)
    assert b.state == CLOSED and b.error == "reset"


def test_out_of_window_rst_is_ignored_silently():
    p = established()
    b = p.b.conn
    p.b.take()
    b.on_segment(forge(p.a, RST, seq=b.rcv_nxt + 10_000_000, ack=0, ts=False), p.now)
    assert b.state == ESTABLISHED
    assert p.b.take() == []                       # never answer an RST


def test_syn_in_synchronized_state_gets_challenge_ack():
    """RFC 5961 §4.2: any SYN in a synchronized state → challenge ACK, drop."""
    p = established()
    b = p.b.conn
    p.b.take()
    b.on_segment(forge(p.a, SYN, seq=b.rcv_nxt + 5, ack=0), p.now)
    assert b.state == ESTABLISHED
    out = p.b.take()
    assert [s.flags for s in out] == [ACK] and b.challenge_acks == 1


def test_challenge_acks_are_rate_limited():
    p = established()
    b = p.b.conn
    for i in range(50):
        b.on_segment(forge(p.a, RST, seq=b.rcv_nxt + 1 + i, ack=0, ts=False), p.now)
    assert b.challenge_acks == 10
    p.now += 1.5
    b.on_segment(forge(p.a, RST, seq=b.rcv_nxt + 1, ack=0, ts=False), p.now)
    assert b.challenge_acks == 11


def test_ack_of_unsent_data_is_dropped_with_ack():
    """RFC 9293 §3.10.7.4: SEG.ACK > SND.NXT → send ACK, drop the segment."""
    p = established()
    b = p.b.conn
    p.b.take()
    b.on_segment(forge(p.a, ACK | PSH, ack=b.snd_nxt + 5000, payload=b"data"), p.now)
    assert b.recv() == b""
    assert [s.flags for s in p.b.take()] == [ACK]


def test_ack_too_old_gets_challenge_ack():
    """RFC 5961 §5.2: SEG.ACK < SND.UNA - MAX.SND.WND → challenge ACK."""
    p = established()
    b = p.b.conn
    p.b.take()
    b.on_segment(forge(p.a, ACK | PSH, ack=b.snd_una - b.max_snd_wnd - 10, payload=b"x"),
                 p.now)
    assert b.challenge_acks == 1
    assert b.recv() == b""


def test_unacceptable_segment_is_acked_not_accepted():
    p = established()
    b = p.b.conn
    p.b.take()
    b.on_segment(forge(p.a, ACK, seq=b.rcv_nxt - 5000, payload=b"stale"), p.now)
    assert b.recv() == b"" and b.unacceptable == 1
    assert [s.flags for s in p.b.take()] == [ACK]


def test_data_after_close_is_answered_with_rst():
    """RFC 9293 §3.10.4 / RFC 2525 §2.17: the app will never read it."""
    p = established()
    p.b.conn.close(p.now)
    p.b.take()
    p.a.conn.send(b"too late", p.now)
    p.deliver(p.a)
    assert p.b.conn.state == CLOSED
    assert p.b.take()[-1].flags & RST


def test_close_with_unread_data_aborts():
    p = established()
    p.a.conn.send(b"unread", p.now)
    p.pump()
    p.b.conn.close(p.now)
    assert p.b.conn.state == CLOSED
    p.pump()
    assert p.a.conn.error == "reset"
