"""A TCB taken over from the NIC's SYN-cookie handshake (AccelTCP §4.1): TSvals keep bit 0
clear, and ``accept_cookie`` settles sequence space and options as nic.dataplane states."""

from acceltcp.nic.dataplane import HOST, WIRE, NicDataplane
from acceltcp.tcp.config import TcpConfig
from acceltcp.tcp.states import CLOSE_WAIT, ESTABLISHED
from acceltcp.wire import control
from acceltcp.wire.tcp import FIN, build_tcp_frame, parse_tcp

from .pair import A_IP, B_IP, NEAR_WRAP, Endpoint, Pair

MAC_A = b"\x02\x00\x00\x00\x00\x01"
MAC_B = b"\x02\x00\x00\x00\x00\x02"


def _frame(seg, src_ip, dst_ip, src_mac, dst_mac):
    from acceltcp.wire.tcp import tcp_options
    opts = tcp_options(mss=seg.mss, wscale=seg.wscale, sack_permitted=seg.sack_permitted,
                       timestamps=(seg.tsval, seg.tsecr) if seg.tsval is not None else None)
    return build_tcp_frame(dst_mac, src_mac, src_ip, dst_ip, 1, seg.src_port, seg.dst_port,
                           seg.seq, seg.ack, seg.flags, seg.window, opts, bytes(seg.payload))


def _parse(frame):
    return parse_tcp(frame[34:], frame[26:30], frame[30:34])


def _cookie_handshake(cfg_a, cfg_b, payload=b"hello", fin=False, now=5.0):
    """Client a connects to b's offloaded port 80 through a NicDataplane; returns
    (client endpoint, server TCB, NewConnection header, server endpoint)."""
    nic = NicDataplane(MAC_B, secret=b"k" * 32)
    assert nic.process(control.Listen(B_IP, 80, cfg_b.mss, cfg_b.wscale, cfg_b.sack,
                                      cfg_b.timestamps).frame(MAC_B, MAC_B), HOST, now) == []
    a = Endpoint("a", cfg_a, A_IP, 40000, B_IP, 80, NEAR_WRAP, now)
    a.conn.connect(now)
    (syn,) = a.take()
    (port, synack), = nic.process(_frame(syn, A_IP, B_IP, MAC_A, MAC_B), WIRE, now)
    assert port == WIRE
    a.conn.on_segment(_parse(synack), now)
    assert a.conn.state == ESTABLISHED
    a.take()                                    # the bare ACK
    a.conn._corked = fin                       # as inside an app callback: data + FIN
    a.conn.send(payload, now)
    if fin:
        a.conn.shutdown(now)
        a.conn._corked = False
        a.conn._output(now)
    (seg,) = a.take()
    assert bool(seg.flags & FIN) == fin
    assert seg.tsecr & 1                        # echoes the cookie TSval
    (port, nc), = nic.process(_frame(seg, A_IP, B_IP, MAC_A, MAC_B), WIRE, now)
    assert port == HOST and nc[12:14] == b"\x09\x0a"
    hdr, inner = control.unwrap(nc)
    b = Endpoint("b", cfg_b, B_IP, 80, A_IP, 40000, 0, now)
    b.conn.accept_cookie(_parse(inner), hdr, now)
    return a, b.conn, hdr, b


def test_accept_cookie_settles_the_contract():
    cfg = TcpConfig()
    a, conn, hdr, b = _cookie_handshake(cfg, cfg)
    assert conn.state == ESTABLISHED and conn.passive
    assert conn.irs == a.conn.iss and conn.rcv_nxt == (a.conn.iss + 1 + 5) & 0xFFFFFFFF
    assert conn.snd_una == conn.snd_nxt == (conn.iss + 1) & 0xFFFFFFFF == a.conn.rcv_nxt
    assert conn.wscale_ok and conn.snd_wscale == cfg.wscale and conn.rcv_wscale == cfg.wscale
    assert conn.sack_ok and conn.ts_ok
    assert conn.mss == min(hdr.mss, cfg.mss) - 12
    assert bytes(conn.rcvbuf) == b"hello"
    assert conn.ts_recent                       # TS.Recent = the ACK's TSval
    conn.send(b"world", 5.5)
    (reply,) = b.take()
    assert reply.tsval & 1 == 0 and ((reply.tsval - hdr.ts_base) & 0xFFFFFFFF) < 0x80000000
    a.conn.on_segment(reply, 5.5)
    assert a.conn.recv() == b"world" and a.conn.paws_drops == 0


def test_accept_cookie_without_ws_and_sack_and_with_fin():
    cfg_a = TcpConfig(wscale=None, sack=False, mss=1200)
    a, conn, hdr, b = _cookie_handshake(cfg_a, TcpConfig(), fin=True)
    assert not conn.wscale_ok and conn.snd_wscale == conn.rcv_wscale == 0
    assert not conn.sack_ok
    assert conn.mss == hdr.mss - 12 <= 1200 - 12
    assert conn.state == CLOSE_WAIT and conn.fin_rcvd and bytes(conn.rcvbuf) == b"hello"


def test_every_tsval_keeps_bit0_clear():
    p = Pair(config_a=TcpConfig(delayed_ack=0), config_b=TcpConfig(delayed_ack=0))
    p.a.conn.ts_offset |= 1
    p.b.conn.ts_offset |= 1
    sent = []
    for ep in (p.a, p.b):
        out = ep._output

        def rec(conn, flags, seq, ack, window, options, payload, out=out, ep=ep):
            out(conn, flags, seq, ack, window, options, payload)
            sent.append(ep.sent[-1])
        ep.conn.output = rec
    p.handshake()
    for i in range(20):
        p.now += 0.0013
        p.a.conn.send(b"x" * 3000, p.now)
        p.pump()
        p.b.conn.recv()
    p.a.conn.close(p.now)
    p.pump()
    p.b.conn.close(p.now)
    p.pump()
    tsvals = [s.tsval for s in sent if s.tsval is not None]
    assert len(tsvals) > 20 and all(t & 1 == 0 for t in tsvals)
