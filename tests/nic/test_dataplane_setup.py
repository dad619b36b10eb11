"""NIC dataplane, setup slice: SYN cookies on the wire, 0x090A to the host, listeners."""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from acceltcp.nic.dataplane import HOST, LISTENER_ENTRY_BYTES, WIRE, NicDataplane
from acceltcp.tcp.syncookie import MSS_TABLE
from acceltcp.tcp.config import TcpConfig
from acceltcp.tcp.connection import TcpConnection
from acceltcp.tcp.states import ESTABLISHED
from acceltcp.wire import control
from acceltcp.wire.arp import ARP_REQUEST, ArpPacket
from acceltcp.wire.control import (
    Listen, NewConnection, Splice, SpliceRefused, StatusReport, StatusRequest, Teardown,
    TeardownRefused, Unlisten, L4Rule,
)
from acceltcp.wire.ethernet import ethernet_header
from acceltcp.wire.ipv4 import parse_ipv4
from acceltcp.wire.tcp import ACK, FIN, PSH, RST, SYN, build_tcp_frame, parse_tcp, tcp_options

MASK = 0xFFFFFFFF
SECRET = bytes(range(32))
NIC_MAC = bytes.fromhex("020000000001")
PEER_MAC = bytes.fromhex("020000000002")
SRV = bytes([10, 0, 0, 1])
CLI = bytes([10, 0, 0, 2])
CPORT = 40000
T0 = 1000.25


def nic(**kw):
    kw.setdefault("secret", SECRET)
    return NicDataplane(NIC_MAC, **kw)


def listen(n, ip=SRV, port=80, mss=1460, wscale=7, sack_ok=True, timestamps=True,
           defer_accept=False):
    return n.process(Listen(ip, port, mss, wscale, sack_ok, timestamps,
                            defer_accept).frame(NIC_MAC, NIC_MAC), HOST, T0)


def syn(isn=0xFFFFFFF0, dport=80, mss=1460, wscale=7, sack=True, tsval=123456, src=CLI,
        dst=SRV, sport=CPORT):
    opts = tcp_options(mss=mss, wscale=wscale, sack_permitted=sack,
                       timestamps=None if tsval is None else (tsval, 0))
    return build_tcp_frame(NIC_MAC, PEER_MAC, src, dst, 1, sport, dport, isn, 0, SYN, 64240,
                           opts, b"")


def seg_of(frame):
    ip = parse_ipv4(frame[14:])
    return ip, parse_tcp(frame[34:14 + ip.total_length], ip.src, ip.dst)


def handshake(n, isn=0xFFFFFFF0, now=T0, **kw):
    out = n.process(syn(isn, **kw), WIRE, now)
    assert len(out) == 1 and out[0][0] == WIRE
    return seg_of(out[0][1])[1]


def client_ack(synack, isn=0xFFFFFFF0, tsval=123460, payload=b"", flags=ACK, sport=CPORT,
               dport=80, ack=None, tsecr=None):
    return build_tcp_frame(NIC_MAC, PEER_MAC, CLI, SRV, 2, sport, dport, (isn + 1) & MASK,
                           (synack.seq + 1) & MASK if ack is None else ack, flags, 502,
                           tcp_options(timestamps=(tsval, synack.tsval if tsecr is None
                                                   else tsecr)), payload)


# -- SYN -> SYN-ACK ---------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(isn=st.integers(0, MASK), mss=st.one_of(st.none(), st.integers(536, 65535)),
       cws=st.one_of(st.none(), st.integers(0, 14)), csack=st.booleans(),
       lws=st.one_of(st.none(), st.integers(0, 14)), lsack=st.booleans(),
       lmss=st.integers(536, 9000), tsval=st.integers(0, MASK),
       now=st.floats(0, 1e6, allow_nan=False))
def test_syn_gets_cookie_synack(isn, mss, cws, csack, lws, lsack, lmss, tsval, now):
    n = nic()
    listen(n, mss=lmss, wscale=lws, sack_ok=lsack)
    opts = tcp_options(mss=mss, wscale=cws, sack_permitted=csack, timestamps=(tsval, 0))
    f = build_tcp_frame(NIC_MAC, PEER_MAC, CLI, SRV, 1, CPORT, 80, isn, 0, SYN, 64240, opts,
                        b"")
    out = n.process(f, WIRE, now)
    assert len(out) == 1 and out[0][0] == WIRE
    o = out[0][1]
    assert o[0:6] == PEER_MAC and o[6:12] == NIC_MAC
    ip, s = seg_of(o)                                   # both checksums verified
    assert (ip.src, ip.dst, s.src_port, s.dst_port) == (SRV, CLI, 80, CPORT)
    assert s.flags == SYN | ACK
    assert s.ack == (isn + 1) & MASK
    assert s.mss == lmss
    assert s.sack_permitted == (lsack and csack)
    assert s.wscale == (lws if cws is not None else None)
    assert s.tsecr == tsval and s.tsval & 1
    assert (s.seq, s.tsval) == n.jar.make(SRV, 80, CLI, CPORT, isn, mss, cws, csack, now)
    assert n.counters["syn_cookies_sent"] == 1 and n.counters["passthrough_host"] == 0


def test_syn_without_ts_and_non_listener_go_to_host():
    n = nic()
    listen(n)
    f = syn(tsval=None)
    assert n.process(f, WIRE, T0) == [(HOST, f)]
    f2 = syn(dport=81)
    assert n.process(f2, WIRE, T0) == [(HOST, f2)]
    f3 = syn(dst=bytes([10, 0, 0, 9]))                  # other local ip, no wildcard
    assert n.process(f3, WIRE, T0) == [(HOST, f3)]
    f4 = syn(mss=500)                                   # below the smallest MSS class
    assert n.process(f4, WIRE, T0) == [(HOST, f4)]
    assert n.counters["syn_to_host"] == 2
    assert n.counters["syn_cookies_sent"] == 0


def test_listener_without_timestamps_passes_syns():
    n = nic()
    listen(n, timestamps=False)
    f = syn()
    assert n.process(f, WIRE, T0) == [(HOST, f)]
    assert n.counters["syn_to_host"] == 1


def test_wildcard_listener():
    n = nic()
    listen(n, ip=b"\0\0\0\0", port=8080, mss=1400)
    s = handshake(n, dport=8080, dst=bytes([192, 168, 1, 7]))
    assert s.mss == 1400


# -- cookie ACK -> 0x090A -------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(isn=st.integers(0, MASK), cws=st.one_of(st.none(), st.integers(0, 14)),
       csack=st.booleans(), mss=st.sampled_from(MSS_TABLE), dt=st.floats(0, 14.9),
       payload=st.binary(max_size=100))
def test_cookie_ack_to_host_as_new_connection(isn, cws, csack, mss, dt, payload):
    n = nic()
    listen(n)
    s = handshake(n, isn, mss=mss, wscale=cws, sack=csack)
    flags = ACK | PSH if payload else ACK
    a = client_ack(s, isn, payload=payload, flags=flags)
    out = n.process(a, WIRE, T0 + dt)
    assert len(out) == 1 and out[0][0] == HOST
    o = out[0][1]
    assert o[12:14] == b"\x09\x0a"
    hdr, inner = control.unwrap(o)
    assert inner == a
    assert hdr == NewConnection(mss=mss, wscale=cws, sack_ok=csack, timestamps=True,
                                ts_base=s.tsval)
    assert n.counters["cookie_ack_ok"] == 1 and n.counters["cookie_ack_bad"] == 0


# -- defer accept: the connection goes up with the client's first data ------------------


def test_defer_accept_absorbs_the_bare_ack_and_hands_up_the_request():
    n = nic()
    listen(n, defer_accept=True)
    s = handshake(n)
    assert n.process(client_ack(s), WIRE, T0) == []           # nothing kept for it
    assert n.counters["cookie_ack_deferred"] == 1 and n.counters["cookie_ack_ok"] == 0
    assert len(n.handed) == 0
    # the request: the same ISN + 1, the same cookie TSecr -> the 0x090A, request inside
    req = client_ack(s, tsval=123461, payload=b"GET / HTTP/1.0\r\n\r\n", flags=ACK | PSH)
    out = n.process(req, WIRE, T0 + 0.001)
    assert len(out) == 1 and out[0][0] == HOST
    hdr, inner = control.unwrap(out[0][1])
    assert inner == req and hdr.ts_base == s.tsval
    assert n.counters["cookie_ack_ok"] == 1 and len(n.handed) == 1


def test_defer_accept_hands_up_a_fin_without_data():
    # a client that connects and closes at once: its FIN makes the connection (the host
    # then sees the close, as without deferral)
    n = nic()
    listen(n, defer_accept=True)
    s = handshake(n)
    assert n.process(client_ack(s), WIRE, T0) == []
    fin = client_ack(s, flags=ACK | FIN)
    out = n.process(fin, WIRE, T0)
    assert len(out) == 1 and out[0][0] == HOST and control.unwrap(out[0][1])[1] == fin
    assert n.counters["cookie_ack_ok"] == 1


def test_defer_accept_checks_the_cookie_first():
    # a forged bare ACK is a bad cookie (counted, dropped), never "deferred"
    n = nic()
    listen(n, defer_accept=True)
    s = handshake(n)
    assert n.process(client_ack(s, tsecr=s.tsval ^ 0x20), WIRE, T0) == []
    assert n.counters["cookie_ack_bad"] == 1 and n.counters["cookie_ack_deferred"] == 0


def test_defer_accept_is_per_listener():
    n = nic()
    listen(n, defer_accept=True)
    listen(n, port=81)
    s80, s81 = handshake(n), handshake(n, dport=81)
    assert n.process(client_ack(s80), WIRE, T0) == []
    out = n.process(client_ack(s81, dport=81), WIRE, T0)
    assert len(out) == 1 and out[0][1][12:14] == b"\x09\x0a"


def test_established_traffic_passes():
    n = nic()
    listen(n)
    s = handshake(n)
    a = client_ack(s, tsecr=0x1000)                      # host TSval: bit 0 clear
    assert n.process(a, WIRE, T0) == [(HOST, a)]
    noack = build_tcp_frame(NIC_MAC, PEER_MAC, CLI, SRV, 2, CPORT, 80, 1, 0, RST, 0, b"", b"")
    assert n.process(noack, WIRE, T0) == [(HOST, noack)]
    assert n.counters["cookie_ack_ok"] == n.counters["cookie_ack_bad"] == 0


@pytest.mark.parametrize("kind", ["ack", "tsecr", "sport", "dport_other_listener", "seq",
                                  "stale", "fin_forged"])
def test_forged_cookie_acks_are_dropped(kind):
    n = nic()
    listen(n)
    listen(n, port=81)
    s = handshake(n)
    now = T0
    if kind == "ack":
        a = client_ack(s, ack=(s.seq + 2) & MASK)
    elif kind == "tsecr":
        a = client_ack(s, tsecr=s.tsval ^ 0x20)
    elif kind == "sport":
        a = client_ack(s, sport=CPORT + 1)
    elif kind == "dport_other_listener":
        a = client_ack(s, dport=81)
    elif kind == "seq":
        a = client_ack(s, isn=0x1234)
    elif kind == "stale":
        a = client_ack(s)
        now = T0 + 16.0
    else:
        a = client_ack(s, flags=ACK | FIN, ack=(s.seq + 7) & MASK)
    assert n.process(a, WIRE, now) == []
    assert n.counters["cookie_ack_bad"] == 1
    assert n.counters["drop_cookie_bad"] == 1
    assert n.counters["cookie_ack_ok"] == 0


@settings(max_examples=100, deadline=None)
@given(ack=st.integers(0, MASK), tsecr=st.integers(0, MASK).map(lambda v: v | 1),
       seq=st.integers(0, MASK))
def test_random_cookie_acks_never_reach_host(ack, tsecr, seq):
    n = nic()
    listen(n)
    a = build_tcp_frame(NIC_MAC, PEER_MAC, CLI, SRV, 2, CPORT, 80, seq, ack, ACK, 502,
                        tcp_options(timestamps=(5, tsecr)), b"")
    out = n.process(a, WIRE, T0)
    assert all(p != HOST for p, _ in out)
    assert n.counters["cookie_ack_bad"] == 1


def test_rst_on_bad_cookie_flag():
    n = nic(rst_on_bad_cookie=True)
    listen(n)
    s = handshake(n)
    bad = (s.seq + 99) & MASK
    out = n.process(client_ack(s, ack=bad), WIRE, T0)
    assert len(out) == 1 and out[0][0] == WIRE
    _, r = seg_of(out[0][1])
    assert r.flags == RST and r.seq == bad and (r.src_port, r.dst_port) == (80, CPORT)
    assert n.counters["rst_sent"] == 1


# -- host side: listeners, pass-through, control ----------------------------------------


def test_listen_unlisten():
    n = nic()
    assert listen(n) == []
    assert len(n.listeners) == 1
    assert n.listeners.lookup(SRV, 80).wscale == 7
    listen(n, mss=1400)                                  # update in place
    assert len(n.listeners) == 1 and n.listeners.lookup(SRV, 80).mss == 1400
    assert n.process(Unlisten(SRV, 80).frame(NIC_MAC, NIC_MAC), HOST, T0) == []
    assert len(n.listeners) == 0
    f = syn()
    assert n.process(f, WIRE, T0) == [(HOST, f)]
    n.process(Unlisten(SRV, 80).frame(NIC_MAC, NIC_MAC), HOST, T0)
    assert n.counters["unlisten_unknown"] == 1


def test_listener_table_full():
    n = nic(listener_capacity=3)
    assert n.listeners.memory_bytes == 3 * LISTENER_ENTRY_BYTES
    for p in range(3):
        assert listen(n, port=1000 + p) == []
    assert listen(n, port=2000) == []                    # no ListenRefused exists: dropped
    assert n.counters["listener_table_full"] == 1
    assert len(n.listeners) == 3 and n.listeners.lookup(SRV, 2000) is None
    listen(n, port=1000, mss=1200)                        # updating an entry still works
    assert n.counters["listener_table_full"] == 1
    out = n.process(StatusRequest(7).frame(NIC_MAC, PEER_MAC), HOST, T0)
    assert len(out) == 1 and out[0][0] == HOST and out[0][1][0:6] == PEER_MAC
    rep = control.decode(out[0][1])
    assert isinstance(rep, StatusReport)
    assert (rep.request_id, rep.listeners, rep.listener_capacity) == (7, 3, 3)
    assert rep.drops == 1


def test_host_traffic_goes_to_wire_unchanged():
    n = nic()
    listen(n)
    f = build_tcp_frame(PEER_MAC, NIC_MAC, SRV, CLI, 9, 80, CPORT, 5, 6, ACK | PSH, 100,
                        tcp_options(timestamps=(2, 3)), b"hello")
    arp = ArpPacket(ARP_REQUEST, NIC_MAC, SRV, b"\0" * 6, CLI).build()
    arp_f = ethernet_header(b"\xff" * 6, NIC_MAC, 0x0806) + arp
    for x in (f, arp_f, b"", b"\x01\x02", bytes(100)):
        assert n.process(x, HOST, T0) == [(WIRE, x)]
    assert n.counters["passthrough_wire"] == 5


def test_wire_arp_to_host_and_offload_ethertypes_dropped():
    n = nic()
    arp_f = ethernet_header(b"\xff" * 6, PEER_MAC, 0x0806) + \
        ArpPacket(ARP_REQUEST, PEER_MAC, CLI, b"\0" * 6, SRV).build()
    assert n.process(arp_f, WIRE, T0) == [(HOST, arp_f)]
    forged = control.wrap(client_ack(parse_tcp(
        syn()[34:], CLI, SRV)), NewConnection())
    assert n.process(forged, WIRE, T0) == []
    assert n.counters["drop_offload_ethertype"] == 1


def test_teardown_and_splice_refused_without_tables():
    n = nic(teardown_capacity=0, splice_capacity=0)
    seg = build_tcp_frame(PEER_MAC, NIC_MAC, SRV, CLI, 1, 80, CPORT, 5, 6, ACK, 100, b"",
                          b"data")
    out = n.process(control.wrap(seg, Teardown(flow_id=42)), HOST, T0)
    assert len(out) == 1 and out[0][0] == HOST
    msg = control.decode(out[0][1])
    assert isinstance(msg, TeardownRefused) and msg.flow_id == 42
    assert msg.key == CLI + SRV + CPORT.to_bytes(2, "big") + (80).to_bytes(2, "big")
    rule = L4Rule(bytes(12), NIC_MAC, PEER_MAC, SRV, CLI, 1, 2)
    out = n.process(Splice(5, rule, rule).frame(NIC_MAC, PEER_MAC), HOST, T0)
    msg = control.decode(out[0][1])
    assert isinstance(msg, SpliceRefused) and msg.splice_id == 5
    assert msg.reason == control.SPLICE_REFUSED_TABLE_FULL
    # with a table, a rule pair that is not a pair is refused as such
    out = nic().process(Splice(6, rule, rule).frame(NIC_MAC, PEER_MAC), HOST, T0)
    msg = control.decode(out[0][1])
    assert isinstance(msg, SpliceRefused) and msg.reason == control.SPLICE_REFUSED_BAD_RULE
    bad = Listen(SRV, 80).frame(NIC_MAC, NIC_MAC)[:-1]    # truncated control frame
    assert n.process(bad, HOST, T0) == []
    assert n.counters["drop_ctl_short"] == 1


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=120), port=st.sampled_from([WIRE, HOST]),
       et=st.sampled_from([None, 0x0800, 0x0806, 0x090A, 0x090B, 0x090C, 0x090E]))
def test_random_bytes_never_raise(data, port, et):
    n = nic()
    listen(n)
    listen(n, ip=b"\0\0\0\0", port=81)
    if et is not None:
        data = data[:12].ljust(12, b"\0") + et.to_bytes(2, "big") + data[12:]
    out = n.process(data, port, T0)
    assert isinstance(out, list)


@settings(max_examples=200, deadline=None)
@given(pos=st.integers(14, 80), byte=st.integers(0, 255))
def test_corrupted_syn_and_ack_never_raise(pos, byte):
    n = nic()
    listen(n)
    s = handshake(n)
    for f in (syn(), client_ack(s)):
        b = bytearray(f)
        if pos < len(b):
            b[pos] = byte
        out = n.process(bytes(b), WIRE, T0)
        assert isinstance(out, list)
        # anything that reaches the host as a new connection carries a verified cookie
        for p, o in out:
            if p == HOST and o[12:14] == b"\x09\x0a":
                _, inner = control.unwrap(o)
                assert inner == bytes(b)


def test_timers_idle():
    n = nic()
    assert n.next_deadline() is None and n.on_timer(T0) == []
    with pytest.raises(ValueError):
        n.process(b"", 2, T0)


# -- end to end with a real client TCB --------------------------------------------------


def test_real_client_establishes_through_nic():
    n = nic()
    listen(n, mss=1460, wscale=7, sack_ok=True)
    frames = []

    def output(conn, flags, seq, ack, window, options, payload):
        frames.append(build_tcp_frame(NIC_MAC, PEER_MAC, conn.local_ip, conn.remote_ip, 0,
                                      conn.local_port, conn.remote_port, seq, ack, flags,
                                      window, options, bytes(payload)))

    now = T0
    client = TcpConnection(TcpConfig(), CLI, CPORT, SRV, 80, MASK - 100, output, now)
    client.connect(now)
    host = []
    for _ in range(10):
        if not frames:
            break
        f = frames.pop(0)
        for p, o in n.process(f, WIRE, now):
            if p == WIRE:
                _, s = seg_of(o)
                now += 0.001
                client.on_segment(s, now)
            else:
                host.append(o)
    assert client.state == ESTABLISHED
    assert client.snd_wscale == 7 and client.sack_ok and client.ts_ok
    assert len(host) == 1 and host[0][12:14] == b"\x09\x0a"
    hdr, inner = control.unwrap(host[0])
    _, a = seg_of(inner)
    assert a.flags & ACK and a.seq == (client.iss + 1) & MASK
    assert hdr.mss == 1460 and hdr.wscale == TcpConfig().wscale and hdr.sack_ok
    assert hdr.timestamps and hdr.ts_base == a.tsecr
    # client data after the handshake: its TSecr still echoes the cookie (no TSval from
    # the host yet), so it is verified again -- the ACK-lost case of §4.1.
    client.send(b"x" * 10, now)
    assert frames
    out = n.process(frames.pop(0), WIRE, now)
    assert out[0][0] == HOST and out[0][1][12:14] == b"\x09\x0a"
