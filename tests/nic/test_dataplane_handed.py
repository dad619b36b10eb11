"""NIC dataplane, the handed-over flows table (issue 9, defects 3 and 8): a client's later
segments that still echo the cookie TSval reach the host as ordinary segments, a SYN on a
flow the host holds goes to the host (its challenge ACK, rate-limited), forged cookie ACKs
still never create a connection, and the table is fixed-capacity with FIFO eviction."""

import random

import pytest
from hypothesis import given, settings, strategies as st

from acceltcp.host.stack import HostStack
from acceltcp.nic.dataplane import (HANDED_COOKIE, HANDED_ENTRY_BYTES, HANDED_HOST, HOST, WIRE,
                                    NicDataplane)
from acceltcp.tcp.config import TcpConfig
from acceltcp.tcp.connection import TcpConnection
from acceltcp.tcp.timewait import CHALLENGE_ACKS_PER_SECOND
from acceltcp.tcp.states import ESTABLISHED
from acceltcp.wire import control
from acceltcp.wire.control import Teardown
from acceltcp.wire.tcp import ACK, FIN, PSH, RST, SYN, build_tcp_frame, tcp_options

from .test_dataplane_setup import (CLI, CPORT, MASK, NIC_MAC, PEER_MAC, SRV, T0, client_ack,
                                   handshake, listen, nic, seg_of, syn)


def key(sport=CPORT, dport=80, src=CLI, dst=SRV):
    return src + dst + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")


def host_frame(flags, sport=80, dport=CPORT, seq=5, ack=6, payload=b"", src=SRV, dst=CLI):
    """A frame the host sends toward the client (port HOST of the NIC)."""
    return build_tcp_frame(PEER_MAC, NIC_MAC, src, dst, 9, sport, dport, seq, ack, flags, 1000,
                           tcp_options(timestamps=(0x2000, 5)), payload)


def is_new_connection(out):
    return len(out) == 1 and out[0][0] == HOST and out[0][1][12:14] == b"\x09\x0a"


# -- defect 3: the second segment of a request sent before the host's first reply -------


@pytest.mark.parametrize("bare_ack", [True, False], ids=["bare_ack", "ack_lost"])
def test_second_segment_with_cookie_tsecr_reaches_host_in_order(bare_ack):
    n = nic()
    listen(n)
    isn = 0xFFFFFFF0                                     # the client's seq wraps
    s = handshake(n, isn)
    if bare_ack:
        assert is_new_connection(n.process(client_ack(s, isn), WIRE, T0))
    seg1 = client_ack(s, isn, payload=b"GET /", flags=ACK | PSH)
    seg2 = build_tcp_frame(NIC_MAC, PEER_MAC, CLI, SRV, 3, CPORT, 80, (isn + 1 + 5) & MASK,
                           (s.seq + 1) & MASK, ACK | PSH, 502,
                           tcp_options(timestamps=(123461, s.tsval)), b" HTTP/1.1\r\n")
    out1 = n.process(seg1, WIRE, T0 + 0.001)
    assert is_new_connection(out1)                       # seq = ISN + 1: the cookie holds
    assert control.unwrap(out1[0][1])[1] == seg1
    # seq = ISN + 1 + 5: the cookie cannot hold, but the flow was handed over
    assert n.process(seg2, WIRE, T0 + 0.002) == [(HOST, seg2)]
    c = n.counters
    assert c["cookie_ack_ok"] == (2 if bare_ack else 1)
    assert c["handed_ack_to_host"] == 1
    assert c["cookie_ack_bad"] == c["drops"] == 0
    assert c["handed_inserted"] == 1 and len(n.handed) == 1
    assert n.handed.get(key()) == HANDED_COOKIE


def test_later_segments_after_the_hosts_reply_do_not_touch_the_table():
    n = nic()
    listen(n)
    s = handshake(n)
    n.process(client_ack(s), WIRE, T0)
    a = client_ack(s, tsecr=0x2000)                      # echoes a host TSval: bit 0 clear
    assert n.process(a, WIRE, T0) == [(HOST, a)]
    assert n.counters["handed_ack_to_host"] == 0


@pytest.mark.parametrize("kind", ["seq", "ack", "tsecr", "stale"])
def test_forged_marked_ack_on_a_handed_tuple_goes_up_as_a_plain_segment(kind):
    """Never a 0x090A (that takes a valid cookie), never an RST from the NIC: the host
    judges it as it judges any segment of the flow."""
    n = nic(rst_on_bad_cookie=True)
    listen(n)
    s = handshake(n)
    assert is_new_connection(n.process(client_ack(s), WIRE, T0))
    now = T0
    if kind == "seq":
        a = client_ack(s, isn=0x1234)
    elif kind == "ack":
        a = client_ack(s, ack=(s.seq + 999) & MASK)
    elif kind == "tsecr":
        a = client_ack(s, tsecr=s.tsval ^ 0x20)
    else:
        a = client_ack(s)
        now = T0 + 16.0
    assert n.process(a, WIRE, now) == [(HOST, a)]
    c = n.counters
    assert c["handed_ack_to_host"] == 1 and c["cookie_ack_ok"] == 1
    assert c["cookie_ack_bad"] == c["rst_sent"] == 0


@settings(max_examples=100, deadline=None)
@given(ack=st.integers(0, MASK), tsecr=st.integers(0, MASK).map(lambda v: v | 1),
       seq=st.integers(0, MASK), sport=st.integers(1, 65535))
def test_random_cookie_acks_on_other_tuples_still_dropped(ack, tsecr, seq, sport):
    n = nic()
    listen(n)
    s = handshake(n)
    n.process(client_ack(s), WIRE, T0)                   # CPORT is in the table
    sport = sport if sport != CPORT else CPORT + 1
    a = build_tcp_frame(NIC_MAC, PEER_MAC, CLI, SRV, 2, sport, 80, seq, ack, ACK, 502,
                        tcp_options(timestamps=(5, tsecr)), b"")
    out = n.process(a, WIRE, T0)
    assert out == []
    assert n.counters["cookie_ack_bad"] == 1 and n.counters["handed_ack_to_host"] == 0
    assert len(n.handed) == 1


# -- defect 8: a SYN on a flow the host holds -------------------------------------------


def test_syn_on_a_handed_tuple_goes_to_the_host():
    n = nic()
    listen(n)
    s = handshake(n)
    n.process(client_ack(s), WIRE, T0)
    for i in range(50):
        f = syn(isn=random.Random(i).getrandbits(32), tsval=1000 + i)
        assert n.process(f, WIRE, T0 + 1) == [(HOST, f)]
    c = n.counters
    assert c["handed_syn_to_host"] == 50
    assert c["syn_cookies_sent"] == 1 and c["syn_to_host"] == 0
    # another client port is not affected
    assert n.process(syn(sport=CPORT + 1), WIRE, T0)[0][0] == WIRE
    assert c["syn_cookies_sent"] == 2


def test_host_synack_fills_the_table_fin_and_rst_empty_it():
    n = nic()
    listen(n)
    listen(n, port=81, timestamps=False)
    # the host's own handshake (the SYN had no timestamps): its SYN-ACK from port 80
    f = host_frame(SYN | ACK)
    assert n.process(f, HOST, T0) == [(WIRE, f)]
    assert n.handed.get(key()) == HANDED_HOST
    sy = syn()
    assert n.process(sy, WIRE, T0) == [(HOST, sy)]       # no cookie for a host-held flow
    # data and pure ACKs from the host leave the table alone
    for fl in (ACK, ACK | PSH):
        n.process(host_frame(fl, payload=b"x"), HOST, T0)
    assert len(n.handed) == 1
    # the host's FIN removes it: the next incarnation's SYN gets a cookie again
    n.process(host_frame(FIN | ACK), HOST, T0)
    assert len(n.handed) == 0 and n.counters["handed_removed"] == 1
    assert n.process(syn(), WIRE, T0)[0][0] == WIRE
    # an RST too
    n.process(host_frame(SYN | ACK, dport=CPORT + 1), HOST, T0)
    assert key(sport=CPORT + 1) in n.handed
    n.process(host_frame(RST, dport=CPORT + 1), HOST, T0)
    assert len(n.handed) == 0 and n.counters["handed_removed"] == 2
    # SYN-ACKs from a port that is not a listener's (or not a SYN-ACK) add nothing
    n.process(host_frame(SYN | ACK, sport=82), HOST, T0)
    n.process(host_frame(SYN, sport=80), HOST, T0)
    assert len(n.handed) == 0
    # a listener without timestamps: its flows are recorded too
    n.process(host_frame(SYN | ACK, sport=81), HOST, T0)
    assert n.handed.get(key(dport=81)) == HANDED_HOST
    # frames that only look like it (ARP, IP options) are left alone
    g = bytearray(host_frame(FIN | ACK, sport=81))
    g[14] = 0x46
    n.process(bytes(g), HOST, T0)
    assert len(n.handed) == 1
    assert n.counters["handed_inserted"] == 3


def test_teardown_takeover_removes_the_entry():
    n = nic()
    listen(n)
    s = handshake(n)
    n.process(client_ack(s), WIRE, T0)
    seg = build_tcp_frame(PEER_MAC, NIC_MAC, SRV, CLI, 1, 80, CPORT, (s.seq + 1) & MASK,
                          (0xFFFFFFF0 + 1) & MASK, ACK, 1000,
                          tcp_options(timestamps=((s.tsval + 1) & ~1, 123460)), b"bye")
    hdr = Teardown(flow_id=7, snd_wnd=64000, timestamps=True, ts_recent=123460,
                   ts_last=(s.tsval + 1) & ~1, time_wait_ms=1000)
    n.process(control.wrap(seg, hdr), HOST, T0)
    assert key() in n._td_index and key() not in n.handed
    assert n.counters["handed_removed"] == 1


# -- table capacity -----------------------------------------------------------------------


def test_capacity_fifo_eviction_counted():
    n = nic(handed_capacity=3)
    assert n.handed.capacity == 3 and n.handed.memory_bytes == 3 * HANDED_ENTRY_BYTES
    listen(n)
    segs = {}
    for i in range(5):
        s = handshake(n, sport=CPORT + i)
        segs[i] = s
        assert is_new_connection(n.process(client_ack(s, sport=CPORT + i), WIRE, T0))
    c = n.counters
    assert c["handed_inserted"] == 5 and c["handed_evicted"] == 2 and len(n.handed) == 3
    assert n.handed.keys() == [key(sport=CPORT + i) for i in (2, 3, 4)]
    # a re-validated cookie refreshes its entry (newest), no new insertion
    n.process(client_ack(segs[2], sport=CPORT + 2), WIRE, T0)
    assert n.handed.keys() == [key(sport=CPORT + i) for i in (3, 4, 2)]
    assert c["handed_inserted"] == 5 and c["handed_evicted"] == 2
    # an evicted flow is back to the old behaviour: its second segment is dropped
    late = client_ack(segs[0], sport=CPORT, isn=0xFFFFFFF0 + 7)
    assert n.process(late, WIRE, T0) == [] and c["cookie_ack_bad"] == 1
    assert n.process(syn(sport=CPORT), WIRE, T0)[0][0] == WIRE


def test_capacity_zero_keeps_nothing():
    n = nic(handed_capacity=0)
    listen(n)
    s = handshake(n)
    assert is_new_connection(n.process(client_ack(s), WIRE, T0))
    n.process(host_frame(SYN | ACK, dport=CPORT + 1), HOST, T0)
    assert len(n.handed) == 0 and n.counters["handed_inserted"] == 0
    with pytest.raises(ValueError):
        nic(handed_capacity=-1)


# -- with the host stack behind the NIC ----------------------------------------------------


class Rig:
    """A client TCB on the wire, the NIC, and a HostStack behind its host port, wired
    synchronously. Frames are delivered when ``pump`` runs; the client's are held in
    ``wire_in`` until then, so a test can let the client send several before any reply."""

    def __init__(self, client_cfg=None, listen_backlog=8):
        self.now = T0
        self.nic = NicDataplane(NIC_MAC, secret=bytes(range(32)))
        self.wire_in = []          # client -> NIC
        self.to_client = []        # NIC -> client (raw frames, also counted)
        self.host_in = []          # NIC -> host
        self.seen_by_host = []     # every frame the NIC gave the host
        rig = self

        class Dev:
            nic = True
            mac = NIC_MAC
            syn_window = 65535

            def send(self, frame):
                for port, out in rig.nic.process(bytes(frame), HOST, rig.now):
                    (rig.to_client if port == WIRE else rig.host_in).append(out)
                return True

            def set_receiver(self, cb):
                pass

        self.stack = HostStack(Dev(), SRV, lambda: self.now, strict=True)
        self.stack.arp_add(CLI, PEER_MAC)
        self.listener = self.stack.listen(80, listen_backlog, config=TcpConfig(),
                                          offload_setup=True)
        self.client = TcpConnection(client_cfg or TcpConfig(nodelay=True), CLI, CPORT, SRV,
                                    80, 0xFFFFFF00, self._client_out, self.now)
        self.client_frames = []    # every frame the client received

    def _client_out(self, conn, flags, seq, ack, window, options, payload):
        self.wire_in.append(build_tcp_frame(NIC_MAC, PEER_MAC, CLI, SRV, 0, CPORT, 80, seq,
                                            ack, flags, window, options, bytes(payload)))

    def pump(self, hold_client=False):
        """Deliver frames until nothing moves (the client's only if not held)."""
        moved = True
        while moved:
            moved = False
            if self.wire_in and not hold_client:
                f = self.wire_in.pop(0)
                for port, out in self.nic.process(f, WIRE, self.now):
                    (self.to_client if port == WIRE else self.host_in).append(out)
                moved = True
            while self.host_in:
                f = self.host_in.pop(0)
                self.seen_by_host.append(f)
                self.stack.receive_frame(f)
                moved = True
            while self.to_client:
                f = self.to_client.pop(0)
                self.client_frames.append(f)
                self.client.on_segment(seg_of(f)[1], self.now)
                moved = True

    def advance(self, dt):
        """Move the clock by dt, firing the host's and the client's timers on the way."""
        end = self.now + dt
        while True:
            ds = [d for d in (self.stack.next_deadline(), self.client.next_deadline())
                  if d is not None and d <= end]
            if not ds:
                break
            self.now = max(self.now, min(ds))
            self.stack.on_timer()
            if self.client.next_deadline() is not None and \
                    self.client.next_deadline() <= self.now:
                self.client.on_timer(self.now)
            self.pump()
        self.now = end
        self.pump()

    def connect(self):
        self.client.connect(self.now)
        self.pump()
        assert self.client.state == ESTABLISHED
        conn = self.listener.accept()
        assert conn is not None and conn.state == ESTABLISHED
        return conn


def _plain_segments_from_client(frames):
    """Payloads of the client's data segments the host got, 0x090A ones unwrapped."""
    out = []
    for f in frames:
        if f[12:14] == b"\x09\x0a":
            f = control.unwrap(f)[1]
        if f[12:14] == b"\x08\x00":
            _, s = seg_of(f)
            if s.payload:
                out.append(bytes(s.payload))
    return out


def test_host_receives_both_segments_of_a_request_sent_before_any_reply():
    r = Rig()
    srv = r.connect()
    r.client.send(b"GET / HTTP/1.1\r\n", r.now)
    r.client.send(b"Host: x\r\n\r\n", r.now)
    assert len(r.wire_in) == 2                           # both out before any reply
    _, s2 = seg_of(r.wire_in[1])
    assert s2.tsecr & 1                                  # still the cookie TSval
    r.pump()
    assert bytes(srv.rcvbuf) == b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    # each segment reached the host once, in order
    assert _plain_segments_from_client(r.seen_by_host) == [b"GET / HTTP/1.1\r\n",
                                                           b"Host: x\r\n\r\n"]
    c = r.nic.counters
    assert c["handed_ack_to_host"] == 1 and c["cookie_ack_bad"] == 0 and c["drops"] == 0
    # the reply goes back at once and nothing is ever retransmitted
    srv.send(b"HTTP/1.1 200 OK\r\n\r\n", r.now)
    r.pump()
    assert bytes(r.client.recv()) == b"HTTP/1.1 200 OK\r\n\r\n"
    r.advance(3.0)
    assert r.client.retransmits == r.client.rto_timeouts == 0
    assert srv.retransmits == 0 and not r.stack.drops


def test_forged_marked_acks_on_the_handed_tuple_create_nothing():
    r = Rig()
    srv = r.connect()
    rng = random.Random(3)
    cookie_tsval = seg_of(r.client_frames[0])[1].tsval
    before = dict(r.stack.counters)
    for _ in range(20):
        f = build_tcp_frame(NIC_MAC, PEER_MAC, CLI, SRV, 7, CPORT, 80, rng.getrandbits(32),
                            rng.getrandbits(32), ACK, 502,
                            tcp_options(timestamps=(rng.getrandbits(32), cookie_tsval)), b"")
        for port, out in r.nic.process(f, WIRE, r.now):
            assert port == HOST and out == f                 # a plain segment, never 0x090A
            r.stack.receive_frame(out)
    c = r.stack.counters
    assert c["cookie_conns"] == before["cookie_conns"] == 1
    assert c["conns_accepted"] == 1 and len(r.stack.connections) == 1
    assert srv.state == ESTABLISHED and r.nic.counters["cookie_ack_ok"] == 1
    # the host answered per RFC 9293 §3.10.7.4 (unacceptable: an ACK; or §5.2's
    # challenge ACK), never a SYN-ACK, never an RST on its own connection
    sent = [seg_of(f)[1] for f in r.to_client]
    assert sent and all(s.flags == ACK for s in sent)
    r.to_client.clear()
    # the flow ends without the host sending anything (the client's RST): the entry is
    # stale, and a forged ACK on it now meets no TCB -- the host's RST, no connection
    rst = build_tcp_frame(NIC_MAC, PEER_MAC, CLI, SRV, 8, CPORT, 80, srv.rcv_nxt, 0, RST,
                          0, b"", b"")
    r.wire_in.append(rst)
    r.pump()
    assert not r.stack.connections and key() in r.nic.handed
    f = build_tcp_frame(NIC_MAC, PEER_MAC, CLI, SRV, 9, CPORT, 80, 77, 88, ACK, 502,
                        tcp_options(timestamps=(5, cookie_tsval)), b"")
    r.wire_in.append(f)
    r.pump(hold_client=False)
    assert not r.stack.connections and r.stack.counters["cookie_conns"] == 1
    (s,) = [seg_of(x)[1] for x in r.client_frames[-1:]]
    assert s.flags == RST and s.seq == 88


def test_spoofed_syns_on_an_established_flow_get_rate_limited_challenge_acks():
    r = Rig()
    srv = r.connect()
    r.client_frames.clear()
    rng = random.Random(8)
    for _ in range(2000):
        f = syn(isn=rng.getrandbits(32), tsval=rng.getrandbits(32))
        for port, out in r.nic.process(f, WIRE, r.now):
            assert port == HOST
            r.stack.receive_frame(out)
        while r.to_client:
            r.client_frames.append(r.to_client.pop(0))
    c = r.nic.counters
    assert c["handed_syn_to_host"] == 2000 and c["syn_cookies_sent"] == 1
    sent = [seg_of(f)[1] for f in r.client_frames]
    # RFC 5961 §4.2 + §7: challenge ACKs (pure ACKs at RCV.NXT), at most 10 a second
    assert all(s.flags == ACK and s.ack == srv.rcv_nxt for s in sent)
    assert len(sent) == srv.challenge_acks == CHALLENGE_ACKS_PER_SECOND
    assert srv.state == ESTABLISHED and len(r.stack.connections) == 1
    # the connection still works both ways
    r.client.send(b"ping", r.now)
    r.pump()
    assert bytes(srv.rcvbuf) == b"ping"
    srv.send(b"pong", r.now)
    r.pump()
    assert bytes(r.client.recv()) == b"pong"
