"""Host SYN cookies (Linux tcp_syncookies=1), SYN-RECEIVED expiry, and no ARP work for
the sources of SYNs: what keeps a SYN flood from locking clients out (RFC 4987)."""

import random

import pytest

from acceltcp.tcp import states
from ...accounting import check_accounting
from acceltcp.wire.ipv4 import ip_from_str
from acceltcp.wire.tcp import ACK, RST, SYN, tcp_options

from ..util import (NEAR_WRAP, OTHER_IP, OTHER_MAC, PEER_IP, PEER_MAC, FakeDevice, decode,
                    syn, tcp_frame, tcp_sent)

MASK = 0xFFFFFFFF
CLIENT_TSVAL = 0xFFFFFF00                 # near the wrap too
FLOOD_MAC = bytes.fromhex("02000000f00d")  # the router every spoofed SYN comes through


def full_options(tsval=CLIENT_TSVAL, mss=1460, wscale=9):
    return tcp_options(mss=mss, wscale=wscale, sack_permitted=True, timestamps=(tsval, 0))


@pytest.fixture
def small(make_stack, dev):
    """A stack whose listener on port 80 has a full SYN queue (2 children)."""
    st = make_stack(max_syn_backlog=2)
    st.arp_add(PEER_IP, PEER_MAC)
    lst = st.listen(80, 8)
    for port in (1, 2):
        st.receive_frame(syn(sport=port))
    dev.take()
    return st, lst


def cookie_syn_ack(st, dev, sport=5000, seq=NEAR_WRAP, options=None, **kw):
    st.receive_frame(syn(sport=sport, seq=seq,
                         options=full_options() if options is None else options, **kw))
    [s] = tcp_sent(dev)
    assert s.tcp.flags == SYN | ACK and s.tcp.ack == (seq + 1) & MASK
    return s


def final_ack(seg, seq=NEAR_WRAP, sport=5000, payload=b"", ts=True):
    ts = ts and seg.tsval is not None
    opts = tcp_options(timestamps=(CLIENT_TSVAL + 1, seg.tsval)) if ts else b""
    return tcp_frame(ACK, seq=(seq + 1) & MASK, ack=(seg.seq + 1) & MASK, sport=sport,
                     payload=payload, options=opts)


def test_full_syn_queue_answers_with_a_cookie_syn_ack_and_keeps_no_state(small, dev):
    st, lst = small
    s = cookie_syn_ack(st, dev)
    t = s.tcp
    assert s.eth_dst == PEER_MAC
    assert t.tsval & 1 == 1 and t.tsecr == CLIENT_TSVAL      # the cookie mark, TS echoed
    assert t.mss == 1460 and t.wscale == 7 and t.sack_permitted   # our offer, as _send_syn
    assert len(lst.syn_queue) == 2 and len(st.connections) == 2
    assert st.counters["syn_cookies_sent"] == 1
    assert st.drops["syn_backlog_overflow"] == 0


def test_valid_cookie_ack_makes_an_established_connection_and_data_flows(small, dev):
    st, lst = small
    t = cookie_syn_ack(st, dev).tcp
    st.receive_frame(final_ack(t, payload=b"hello"))
    conn = lst.accept()
    assert conn is not None and conn.state == states.ESTABLISHED
    assert bytes(conn.rcvbuf) == b"hello" and conn.remote_port == 5000
    assert conn.iss == t.seq and conn.irs == NEAR_WRAP
    assert conn.snd_wscale == 9 and conn.rcv_wscale == 7 and conn.sack_ok and conn.ts_ok
    assert conn.mss == 1460 - 12
    c = st.counters
    assert c["syn_cookie_ack_ok"] == 1 and c["conns_accepted"] == 1
    assert c.get("syn_cookie_ack_bad", 0) == 0
    dev.take()
    assert st.send(conn, b"world") == 5
    [out] = tcp_sent(dev)
    assert out.tcp.payload == b"world" and out.tcp.seq == (t.seq + 1) & MASK
    assert out.tcp.tsval & 1 == 0                             # host TSvals: mark clear
    assert 0 < (out.tcp.tsval - t.tsval) & MASK < 1 << 31      # ahead of the cookie TSval
    assert out.tcp.tsecr == CLIENT_TSVAL + 1


def test_forged_and_tampered_acks_make_no_connection_and_are_reset(small, dev, clock):
    st, lst = small
    t = cookie_syn_ack(st, dev).tcp
    rng = random.Random(9)
    n = 300
    for _ in range(n):
        opts = tcp_options(timestamps=(rng.randrange(1 << 32), rng.randrange(1 << 32) | 1))
        st.receive_frame(tcp_frame(ACK, seq=rng.randrange(1 << 32), ack=rng.randrange(1 << 32),
                                   sport=rng.randrange(1024, 65536), options=opts))
    for _ in range(n):       # and without timestamps (the no-TS cookie check)
        st.receive_frame(tcp_frame(ACK, seq=rng.randrange(1 << 32), ack=rng.randrange(1 << 32),
                                   sport=rng.randrange(1024, 65536)))
    good = final_ack(t)
    bad = [final_ack(t, sport=5001),                            # another 4-tuple
           final_ack(t, seq=NEAR_WRAP + 7),                     # not the client's ISN
           tcp_frame(ACK, seq=(NEAR_WRAP + 1) & MASK, ack=(t.seq + 2) & MASK, sport=5000,
                     options=tcp_options(timestamps=(1, t.tsval))),      # our ISN + 2
           tcp_frame(ACK, seq=(NEAR_WRAP + 1) & MASK, ack=(t.seq + 1) & MASK, sport=5000,
                     options=tcp_options(timestamps=(1, t.tsval ^ 2))),  # options garbled
           tcp_frame(ACK, seq=(NEAR_WRAP + 1) & MASK, ack=(t.seq + 1) & MASK, sport=5000)]
    for f in bad:
        st.receive_frame(f)
    assert lst.accept() is None and len(st.connections) == 2
    assert st.counters["syn_cookie_ack_bad"] == 2 * n + len(bad)
    assert st.counters.get("syn_cookie_ack_ok", 0) == 0
    sent = tcp_sent(dev)
    assert len(sent) == 2 * n + len(bad) and all(s.tcp.flags & RST for s in sent)
    assert st.drops["no_connection"] == 2 * n + len(bad)
    st.receive_frame(good)                                      # the real one still works
    assert lst.accept() is not None


def test_a_stale_cookie_ack_makes_no_connection(small, dev, clock):
    st, lst = small
    t = cookie_syn_ack(st, dev).tcp
    clock.advance(15.0)
    cookie_syn_ack(st, dev, sport=6000)                         # still sending cookies
    clock.advance(2.0)                                          # the first cookie: 17 s old
    st.receive_frame(final_ack(t))
    assert lst.accept() is None and st.counters["syn_cookie_ack_bad"] == 1
    [rst] = tcp_sent(dev)
    assert rst.tcp.flags == RST and rst.tcp.seq == (t.seq + 1) & MASK


def test_acks_are_checked_as_cookies_only_while_cookies_are_sent(small, dev, clock):
    st, lst = small
    t = cookie_syn_ack(st, dev).tcp
    clock.advance(16.5)
    st.receive_frame(final_ack(t))
    assert lst.accept() is None
    assert "syn_cookie_ack_bad" not in st.counters and st.drops["no_connection"] == 1


def test_cookie_without_timestamps_carries_the_mss_class_only(small, dev):
    st, lst = small
    opts = tcp_options(mss=1300, wscale=7, sack_permitted=True)  # no TS: nowhere for WS/SACK
    t = cookie_syn_ack(st, dev, options=opts).tcp
    assert t.tsval is None and t.wscale is None and not t.sack_permitted and t.mss == 1460
    st.receive_frame(final_ack(t, ts=False, payload=b"x"))
    conn = lst.accept()
    assert conn is not None and conn.state == states.ESTABLISHED
    assert conn.mss == 1200                                     # MSS class of 1300
    assert not conn.ts_ok and not conn.wscale_ok and not conn.sack_ok
    assert st.counters["syn_cookie_ack_ok"] == 1


def test_a_syn_with_a_tiny_mss_gets_no_cookie(small, dev):
    st, lst = small
    st.receive_frame(syn(sport=7000, options=tcp_options(mss=500)))
    assert tcp_sent(dev) == [] and st.drops["syn_backlog_overflow"] == 1


def test_cookies_off_drops_as_before(make_stack, dev):
    st = make_stack(max_syn_backlog=1, syn_cookies=False)
    st.arp_add(PEER_IP, PEER_MAC)
    st.listen(80, 8)
    st.receive_frame(syn(sport=1))
    dev.take()
    st.receive_frame(syn(sport=2, options=full_options()))
    assert tcp_sent(dev) == [] and st.drops["syn_backlog_overflow"] == 1


def test_cookie_ack_with_a_full_accept_queue_is_dropped_not_reset(make_stack, dev):
    st = make_stack(max_syn_backlog=1)
    st.arp_add(PEER_IP, PEER_MAC)
    lst = st.listen(80, 1)
    st.receive_frame(syn(sport=1))
    st.receive_frame(syn(sport=2, options=full_options()))       # queue full: a cookie
    synacks = {s.tcp.dst_port: s.tcp for s in tcp_sent(dev)}
    st.receive_frame(final_ack(synacks[1], sport=1))             # fills the accept queue
    st.receive_frame(final_ack(synacks[2], sport=2))
    assert st.drops["listen_overflow"] == 1 and tcp_sent(dev) == []
    lst.accept()
    st.receive_frame(final_ack(synacks[2], sport=2, payload=b"again"))   # its retransmission
    conn = lst.accept()
    assert conn is not None and bytes(conn.rcvbuf) == b"again"


def test_offloaded_listener_whose_syns_reach_the_host_uses_host_cookies():
    """A NIC without an entry for the listener (table full) passes SYNs with timestamps
    up; the cookie ACK comes back as a plain frame and the host checks it itself."""
    from ..util import US_IP, Clock
    from acceltcp.host.stack import HostStack

    class FakeNic(FakeDevice):
        nic = True

    dev = FakeNic()
    st = HostStack(dev, US_IP, Clock(50.0), strict=True, max_syn_backlog=1)
    st.arp_add(PEER_IP, PEER_MAC)
    lst = st.listen(80, 8, offload_setup=True)
    st.receive_frame(syn(sport=1))
    dev.take()
    t = cookie_syn_ack(st, dev).tcp
    st.receive_frame(final_ack(t, payload=b"hi"))
    conn = lst.accept()
    assert conn is not None and bytes(conn.rcvbuf) == b"hi"
    assert st.counters["syn_cookie_ack_ok"] == 1 and st.counters["cookie_conns"] == 0


# -- SYN-RECEIVED expiry -------------------------------------------------------------


def run_timers(st, clock, until):
    while True:
        d = st.next_deadline()
        if d is None or d > until:
            break
        clock.now = max(clock.now, d)
        st.on_timer()
    clock.now = until


def test_syn_received_child_gives_up_after_5_syn_ack_retries_silently(lstack_factory, dev,
                                                                      clock):
    st = lstack_factory()
    lst = st.listen(80, 8)
    t0 = clock.now
    st.receive_frame(syn(sport=7))
    dev.take()
    times = []
    for _ in range(200):
        d = st.next_deadline()
        if d is None:
            break
        clock.now = max(clock.now, d)
        st.on_timer()
        times += [clock.now - t0 for s in tcp_sent(dev)]
        if not lst.syn_queue:
            break
    # SYN-ACK at 0 (taken above), retransmitted at 1, 3, 7, 15, 31 s; given up at 63 s
    # without an RST (Linux tcp_synack_retries = 5)
    assert times == pytest.approx([1, 3, 7, 15, 31])
    assert not lst.syn_queue and st.connections == {}
    assert clock.now - t0 == pytest.approx(63)
    c = st.counters
    assert c["syn_recv_expired"] == 1 and c["conns_timeout"] == 1


def test_under_pressure_children_give_up_after_2_retries(make_stack, dev, clock):
    st = make_stack(max_syn_backlog=8)
    st.arp_add(PEER_IP, PEER_MAC)
    lst = st.listen(80, 8)
    for port in range(1, 9):                     # full: more than half full
        st.receive_frame(syn(sport=port))
    dev.take()
    t0 = clock.now
    run_timers(st, clock, t0 + 6.9)
    assert len(lst.syn_queue) == 8
    assert len(tcp_sent(dev)) == 8 * 2           # at +1 s and +3 s
    run_timers(st, clock, t0 + 7.0)
    # given up at 7 s while the queue is more than half full; the rest live on
    assert len(lst.syn_queue) == 4 and st.counters["syn_recv_expired"] == 4
    assert len(tcp_sent(dev)) == 4               # the others' third retransmission
    run_timers(st, clock, t0 + 63.0)
    assert not lst.syn_queue and st.counters["syn_recv_expired"] == 8


def test_a_flooded_listener_keeps_admitting_clients(make_stack, dev, clock):
    """Spoofed SYNs fill the queue and never answer; a client arriving at any time
    completes its handshake (cookie or child), and the queue never grows past its cap."""
    st = make_stack(max_syn_backlog=64)
    st.arp_add(PEER_IP, PEER_MAC)
    lst = st.listen(80, 1024)
    rng = random.Random(10)
    served = 0
    for second in range(30):
        for i in range(50):                      # 50 spoofed SYNs per second
            src = bytes([198, 18, 2, rng.randrange(1, 255)])
            st.receive_frame(syn(sport=rng.randrange(1024, 65536), src_ip=src,
                                 src_mac=FLOOD_MAC, seq=rng.randrange(1 << 32),
                                 options=full_options()))
            if i == 25:
                dev.take()
                st.receive_frame(syn(sport=20000 + second, options=full_options()))
                [s] = [s for s in tcp_sent(dev) if s.tcp.dst_port == 20000 + second]
                st.receive_frame(final_ack(s.tcp, sport=20000 + second))
                served += lst.accept() is not None
            assert len(lst.syn_queue) <= 64
        run_timers(st, clock, clock.now + 1.0)
        dev.take()
    assert served == 30
    check_accounting(st, settled=False)
    assert st.counters["syn_cookies_sent"] > 0
    assert st.counters.get("arp_requests_sent", 0) == 0


@pytest.fixture
def lstack_factory(make_stack):
    def f(**kw):
        st = make_stack(**kw)
        st.arp_add(PEER_IP, PEER_MAC)
        return st
    return f


# -- no ARP work for the sources of SYNs; bounded resolution --------------------------


def test_syn_acks_go_to_the_senders_mac_without_arp(stack, dev, clock):
    lst = stack.listen(80, 8)
    stack.receive_frame(syn(sport=9, src_ip=OTHER_IP, src_mac=OTHER_MAC))
    [s] = decode(dev.take())
    assert s.tcp is not None and s.tcp.flags == SYN | ACK and s.eth_dst == OTHER_MAC
    clock.advance(1.0)
    stack.on_timer()
    [s] = decode(dev.take())                     # the retransmission too
    assert s.tcp is not None and s.tcp.flags == SYN | ACK and s.eth_dst == OTHER_MAC
    assert stack.counters.get("arp_requests_sent", 0) == 0
    # once established, the neighbour table: resolved as for any connection
    stack.receive_frame(tcp_frame(ACK, seq=(NEAR_WRAP + 1) & MASK, ack=(s.tcp.seq + 1) & MASK,
                                  sport=9, src_ip=OTHER_IP, src_mac=OTHER_MAC))
    conn = lst.accept()
    stack.send(conn, b"x")
    [req] = decode(dev.take())
    assert req.arp is not None and req.arp.target_ip == OTHER_IP


def test_spoofed_sources_cause_no_arp_at_all(make_stack, dev):
    st = make_stack(max_syn_backlog=256)
    st.listen(80, 8)
    rng = random.Random(11)
    for _ in range(2000):
        src = ip_from_str("10.%d.%d.%d" % (rng.randrange(256), rng.randrange(256),
                                           rng.randrange(1, 255)))
        st.receive_frame(syn(sport=rng.randrange(1024, 65536), src_ip=src, src_mac=FLOOD_MAC,
                             seq=rng.randrange(1 << 32), options=full_options()))
    sent = decode(dev.take())
    assert len(sent) == 2000 and all(s.tcp and s.eth_dst == FLOOD_MAC for s in sent)
    assert st.counters.get("arp_requests_sent", 0) == 0 and not st.arp.pending


def test_arp_resolutions_in_progress_are_bounded(make_stack, dev, clock):
    st = make_stack(netmask=16)
    for i in range(600):
        st.connect("198.18.%d.%d" % (100 + i // 200, 1 + i % 200), 80)
    c = st.counters
    assert c["arp_requests_sent"] == 256
    assert st.drops["arp_pending_full"] == 600 - 256
    for _ in range(3):                           # the resolutions fail, the room returns
        clock.advance(1.0)
        st.on_timer()
    assert not st.arp.pending and st.arp.queued == 0
    st.connect("198.18.200.1", 80)
    assert st.counters["arp_requests_sent"] == 3 * 256 + 1


def test_frames_waiting_for_arp_are_bounded_in_all(make_stack, dev):
    st = make_stack(netmask=16)
    for i in range(100):                         # 100 next hops x 16 frames = 1600 > 1024
        for port in range(16):
            st.connect("198.18.50.%d" % (i + 1), 1000 + port)
    assert st.arp.queued == 1024
    assert st.drops["arp_queue_overflow"] == 1600 - 1024
    st.receive_frame(_arp_reply_from(ip_from_str("198.18.50.1")))
    assert st.arp.queued == 1024 - 16


def _arp_reply_from(ip):
    from ..util import arp_reply
    return arp_reply(sender_ip=ip, sender_mac=OTHER_MAC)
