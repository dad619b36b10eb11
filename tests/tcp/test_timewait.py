"""The TIME-WAIT record answers like the TCB it replaces (RFC 9293 §3.10.7.4, RFC 6191)."""

from acceltcp.tcp import timewait
from acceltcp.wire.tcp import ACK, FIN, RST, SYN

from .pair import Pair, forge
from .test_connection_fsm import b_last_ack


def time_wait_record():
    p = b_last_ack()
    fin = p.b.take()
    p.deliver(p.b, fin)                        # a enters TIME-WAIT, ACKs b's FIN
    p.a.take()
    sent = []
    tw = p.a.conn.handoff_time_wait(p.now)
    tw.output = lambda rec, *fields: sent.append(fields)
    return p, tw, fin[0], sent


def test_retransmitted_fin_is_acked_and_restarts_2msl():
    p, tw, fin, sent = time_wait_record()
    first = tw.expires
    assert tw.on_segment(fin, p.now + 10) == timewait.KEEP
    assert len(sent) == 1
    flags, seq, ack, window, opts, payload = sent[0]
    assert flags == ACK and ack == fin.seq + 1 and seq == tw.snd_nxt
    assert tw.expires == p.now + 10 + tw.duration > first


def test_exact_rst_ends_it_and_other_rst_gets_challenge_ack():
    p, tw, fin, sent = time_wait_record()
    assert tw.on_segment(forge(p.b, RST, seq=tw.rcv_nxt + 5, ack=0, ts=False), p.now) \
        == timewait.KEEP
    assert len(sent) == 1
    assert tw.on_segment(forge(p.b, RST, seq=tw.rcv_nxt, ack=0, ts=False), p.now) \
        == timewait.REMOVE


def test_new_syn_reopens_and_old_syn_is_answered():
    p, tw, fin, sent = time_wait_record()
    old = forge(p.b, SYN, seq=tw.rcv_nxt - 100, ack=0, ts=False)
    assert tw.on_segment(old, p.now) == timewait.KEEP and len(sent) == 1
    # With timestamps on, a newer TSval proves a new incarnation (RFC 6191).
    newer = forge(p.b, SYN, seq=tw.rcv_nxt - 100, ack=0, now=p.now + 5.0)
    assert tw.on_segment(newer, p.now + 5.0) == timewait.REOPEN


def test_paws_in_time_wait():
    p, tw, fin, sent = time_wait_record()
    from acceltcp.wire.tcp import build_tcp, parse_tcp, tcp_options
    raw = build_tcp(p.b.conn.local_ip, p.a.conn.local_ip, 80, 40000, tw.rcv_nxt, tw.snd_nxt,
                    ACK | FIN, 100, tcp_options(timestamps=((tw.ts_recent - 50) & 0xFFFFFFFF,
                                                            0)), b"")
    seg = parse_tcp(raw, p.b.conn.local_ip, p.a.conn.local_ip)
    assert tw.on_segment(seg, p.now) == timewait.KEEP
    assert len(sent) == 1
    assert Pair and FIN


def test_rst_window_check_uses_the_scaled_window():
    """RFC 5961 §3.2 in TIME-WAIT: an RST inside RCV.WND = window field << scale draws a
    challenge ACK. With field 512 and scale 7 the window is 65,536 bytes: an RST at
    rcv_nxt + 4,000 is in it (it used to be tested against the unscaled 512)."""
    sent = []
    tw = timewait.TimeWait(None, b"k", lambda rec, *f: sent.append(f), 1000, 0xFFFFF000,
                           512, 7, False, 0, 1000, 0, 0.0, 60.0, 60.0)
    p = b_last_ack()
    inside = forge(p.b, RST, seq=0xFFFFF000 + 4000, ack=0, ts=False)
    assert tw.on_segment(inside, 0.0) == timewait.KEEP and len(sent) == 1
    assert sent[0][0] == ACK and sent[0][2] == 0xFFFFF000      # the challenge ACK
    outside = forge(p.b, RST, seq=0xFFFFF000 + (512 << 7), ack=0, ts=False)
    assert tw.on_segment(outside, 0.0) == timewait.KEEP and len(sent) == 1


def test_handoff_keeps_the_receive_window_scale():
    p, tw, fin, sent = time_wait_record()
    assert tw.wscale == p.a.conn.rcv_wscale
