"""NIC teardown engine (AccelTCP §4.2) against a real peer TCB.

The peer is ``tcp.connection.TcpConnection`` (the client of ``tests.tcp.pair.Pair``); the
host side is the pair's server TCB, handed over to the engine with a Teardown message
built from its state. Frames travel in memory on a virtual clock, optionally through a
seeded lossy link; every frame the engine sends is parsed with IPv4 and TCP checksum
verification.
"""

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from acceltcp.nic.teardown import (
    FLOW_ENTRY_BYTES, HOST, INDEX_ENTRY_BYTES, LISTENER, WIRE, TeardownEngine,
)
from acceltcp.nic.timer_wheel import TimerWheel
from acceltcp.tcp.config import TcpConfig
from acceltcp.tcp.seq import seq_ge
from acceltcp.tcp.states import (
    CLOSE_WAIT, CLOSED, CLOSING, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, LAST_ACK, TIME_WAIT,
)
from acceltcp.wire import control
from acceltcp.wire.control import (
    STATE_CLOSE_WAIT, STATE_ESTABLISHED, TEARDOWN_END_CLOSED, TEARDOWN_END_RESET,
    TEARDOWN_END_RETRIES, TEARDOWN_REFUSED_BAD_STATE, TEARDOWN_REFUSED_DUPLICATE,
    TEARDOWN_REFUSED_TABLE_FULL, Teardown, TeardownAccepted, TeardownDone, TeardownRefused,
)
from acceltcp.wire.ipv4 import parse_ipv4
from acceltcp.wire.tcp import (
    ACK, FIN, PSH, RST, SYN, build_tcp_frame, build_tcp_header_partial, parse_tcp,
    tcp_options,
)

from ..tcp.pair import A_IP, B_IP, Pair

MASK = 0xFFFFFFFF
TS_MASK = 0xFFFFFFFE
NIC_MAC = bytes.fromhex("020000000001")     # the NIC's and the host's MAC
PEER_MAC = bytes.fromhex("020000000002")    # the peer (or its router)
CPORT = 40000
SPORT = 80
KEY = A_IP + B_IP + struct.pack("!HH", CPORT, SPORT)   # frames from the peer: frame[26:38]
T0 = 100.0


def payload_of(n, seed=1):
    return random.Random(seed).randbytes(n)


def check_wire(frame, dport=CPORT):
    """An engine frame to the peer: addresses, TTL, DF, both checksums verified."""
    assert frame[0:6] == PEER_MAC and frame[6:12] == NIC_MAC and frame[12:14] == b"\x08\x00"
    ip = parse_ipv4(frame[14:])                     # verifies the header checksum
    assert (ip.src, ip.dst, ip.proto, ip.ttl) == (B_IP, A_IP, 6, 64) and ip.dont_fragment
    assert ip.total_length == len(frame) - 14
    seg = parse_tcp(frame[34:14 + ip.total_length], ip.src, ip.dst)   # verifies the csum
    assert (seg.src_port, seg.dst_port) == (SPORT, dport)
    assert seg.flags & ACK
    return seg


def report(frame):
    assert frame[0:6] == NIC_MAC and frame[6:12] == NIC_MAC and frame[12:14] == b"\x09\x0e"
    return control.decode(frame)


def peer_frame(flags, seq, ack, payload=b"", window=2000, ts=None, sport=CPORT):
    """A frame from the peer as the dataplane would hand it over."""
    opts = tcp_options(timestamps=ts) if ts is not None else b""
    return build_tcp_frame(NIC_MAC, PEER_MAC, A_IP, B_IP, 9, sport, SPORT, seq & MASK,
                           ack & MASK, flags, window, opts, payload)


def deliver(eng, frame, now):
    """What the dataplane does with a peer frame: lookup, verify, on_segment."""
    fid = eng.lookup(frame[26:38])
    assert fid is not None
    ip = parse_ipv4(frame[14:])
    seg = parse_tcp(frame[34:14 + ip.total_length], ip.src, ip.dst)
    return eng.on_segment(fid, frame, seg, now)


# -- an established pair and its handover ----------------------------------------------


def make_pair(cfg=None, request=b"GET / HTTP/1.1\r\n\r\n", peer_fin=False, ts_odd=False):
    """Client a and server b established at T0; a's request (and FIN) received by b."""
    cfg = cfg or TcpConfig()
    p = Pair(cfg, cfg)
    if ts_odd:
        p.a.conn.ts_offset |= 1
        p.b.conn.ts_offset |= 1
    p.now = T0
    p.handshake()
    p.a.conn.send(request, p.now)
    if peer_fin:
        p.a.conn.shutdown(p.now)
    p.pump()
    assert p.b.conn.recv() == request
    assert p.b.conn.state == (CLOSE_WAIT if peer_fin else ESTABLISHED)
    return p


def host_tsval(b, now):
    return (int(now * b.config.ts_hz) + b.ts_offset) & TS_MASK


def handover_frame(p, payload, now, *, flow_id=7, max_retries=8, time_wait_ms=60000,
                   ts_last=None, rto_us=None, partial=False):
    """The 0x090B frame the host would send for b: (Teardown, inner frame, data)."""
    b = p.b.conn
    data = bytes(b.sndbuf) + payload               # unacked + unsent host data, then the rest
    wnd = ((b.rcv_adv - b.rcv_nxt) & MASK) >> b.rcv_wscale
    tsv = host_tsval(b, now)
    opts = tcp_options(timestamps=(tsv, b.ts_recent)) if b.ts_ok else b""
    if partial:        # a TSO super-segment with a CHECKSUM_PARTIAL header
        seg_frame = build_tcp_header_partial(
            PEER_MAC, NIC_MAC, B_IP, A_IP, 1, SPORT, CPORT, b.snd_una, b.rcv_nxt, ACK | PSH,
            min(wnd, 0xFFFF), opts, len(data)) + data
    else:              # full frame, then a garbage checksum: the NIC must not care
        seg_frame = build_tcp_frame(PEER_MAC, NIC_MAC, B_IP, A_IP, 1, SPORT, CPORT,
                                    b.snd_una, b.rcv_nxt, ACK | PSH, min(wnd, 0xFFFF), opts,
                                    data)
        seg_frame = seg_frame[:50] + b"\xde\xad" + seg_frame[52:]
    msg = Teardown(mss=b.mss, state=STATE_CLOSE_WAIT if b.state == CLOSE_WAIT
                   else STATE_ESTABLISHED,
                   rto_us=int(b.rto.rto * 1e6) if rto_us is None else rto_us,
                   flow_id=flow_id, snd_wnd=b.snd_wnd, snd_wscale=b.snd_wscale,
                   rcv_wscale=b.rcv_wscale, sack_ok=b.sack_ok, timestamps=b.ts_ok,
                   max_retries=max_retries, ts_recent=b.ts_recent, ts_offset=b.ts_offset,
                   ts_last=tsv if ts_last is None else ts_last, time_wait_ms=time_wait_ms)
    hdr, inner = control.unwrap(control.wrap(seg_frame, msg))
    assert hdr == msg
    return hdr, inner, data


class Sim:
    """The engine and the peer TCB on a virtual clock with a seeded lossy link."""

    def __init__(self, eng, p, loss_to_peer=0.0, loss_to_nic=0.0, seed=0, app_close=True,
                 drop_to_peer=None, ts_floor=None):
        self.eng = eng
        self.peer = p.a.conn
        self.now = p.now
        self.rng = random.Random(seed)
        self.loss_to_peer = loss_to_peer
        self.loss_to_nic = loss_to_nic
        self.drop_to_peer = drop_to_peer          # predicate on parsed segments
        self.app_close = app_close
        self.to_peer = []
        self.to_nic = []
        self.received = bytearray()
        self.reports = []                         # (now, message)
        self.to_host = []                         # non-control frames the engine passed up
        self.orphans = []                         # peer frames after the flow was freed
        self.wire = []                            # (now, segment) of every engine frame
        self.ts_floor = ts_floor                  # every TSval >= the previous one
        self.ident = 0
        self.peer.output = self._peer_out
        self.peer.on_event = self._on_event

    def _peer_out(self, conn, flags, seq, ack, window, options, payload):
        self.ident += 1
        self.to_nic.append(build_tcp_frame(NIC_MAC, PEER_MAC, A_IP, B_IP, self.ident, CPORT,
                                           SPORT, seq, ack, flags, window, options,
                                           bytes(payload)))

    def _on_event(self, conn):
        self.received += conn.recv()
        if self.app_close and conn.eof and not conn.app_closed and conn.state == CLOSE_WAIT:
            conn.close(self.now)

    def feed(self, out):
        for port, frame in out:
            if port == WIRE:
                seg = check_wire(frame)
                if seg.tsval is not None:
                    assert seg.tsval & 1 == 0
                    if self.ts_floor is not None:
                        assert seq_ge(seg.tsval, self.ts_floor)
                    self.ts_floor = seg.tsval
                self.wire.append((self.now, seg))
                if self.drop_to_peer is not None and self.drop_to_peer(seg):
                    continue
                if self.rng.random() >= self.loss_to_peer:
                    self.to_peer.append(frame)
            else:
                assert port == HOST
                if frame[12:14] == b"\x09\x0e":
                    self.reports.append((self.now, report(frame)))
                else:
                    self.to_host.append(frame)

    def deliver_to_peer(self):
        frames, self.to_peer = self.to_peer, []
        for f in frames:
            self.peer.on_segment(check_wire(f), self.now)

    def deliver_to_nic(self):
        frames, self.to_nic = self.to_nic, []
        for f in frames:
            if self.rng.random() < self.loss_to_nic:
                continue
            if self.eng.lookup(f[26:38]) is None:
                self.orphans.append(f)
                continue
            self.feed(deliver(self.eng, f, self.now))

    def pump(self):
        for _ in range(100000):
            if not self.to_peer and not self.to_nic:
                return
            self.deliver_to_peer()
            self.deliver_to_nic()
        raise AssertionError("link did not go quiet")

    def run(self, until=None):
        for _ in range(100000):
            self.pump()
            dl = [d for d in (self.eng.next_deadline(), self.peer.next_deadline())
                  if d is not None]
            if not dl:
                return
            t = max(self.now, min(dl))
            if until is not None and t > until:
                self.now = until
                return
            self.now = t
            d = self.eng.next_deadline()
            if d is not None and d <= t:
                self.feed(self.eng.on_timer(t))
            d = self.peer.next_deadline()
            if d is not None and d <= t:
                self.peer.on_timer(t)
        raise AssertionError("simulation did not end")

    def messages(self, cls):
        return [m for _, m in self.reports if type(m) is cls]


def start(eng, p, payload, *, sim_kw=None, **kw):
    """Hand b over to `eng`; returns (sim, data) with the engine's first frames queued."""
    hdr, inner, data = handover_frame(p, payload, p.now, **kw)
    sim = Sim(eng, p, ts_floor=hdr.ts_last if hdr.timestamps else None, **(sim_kw or {}))
    sim.feed(eng.accept(hdr, inner, NIC_MAC, p.now))
    assert sim.messages(TeardownAccepted) == [TeardownAccepted(hdr.flow_id or 1, KEY)]
    return sim, data


def assert_closed(sim, data, eng, peer_state=CLOSED, **done):
    assert bytes(sim.received) == data
    assert sim.peer.fin_rcvd and sim.peer.state == peer_state
    assert eng.active == 0 and eng.stored_bytes == 0 and eng.next_deadline() is None
    (d,) = sim.messages(TeardownDone)
    assert d.key == KEY and d.reason == TEARDOWN_END_CLOSED
    assert d.bytes_acked == len(data)
    for k, v in done.items():
        assert getattr(d, k) == v
    return d


# -- table shape -------------------------------------------------------------------------


def test_entry_size_and_memory():
    assert FLOW_ENTRY_BYTES <= 64
    eng = TeardownEngine(NIC_MAC, 1000, tick=0.001, slots=256)
    assert eng.capacity == 1000 and eng.active == 0
    assert eng.memory_bytes == 1000 * FLOW_ENTRY_BYTES + TimerWheel(1000, 256, 0.001).memory_bytes
    assert eng.index_bytes == 1000 * INDEX_ENTRY_BYTES
    assert len(eng._table) == 1000 * FLOW_ENTRY_BYTES
    with pytest.raises(ValueError):
        TeardownEngine(b"\x01" * 5)
    with pytest.raises(ValueError):
        TeardownEngine(NIC_MAC, 0)


# -- the common cases ----------------------------------------------------------------------


def test_established_handover_closes_first_and_holds_time_wait():
    eng = TeardownEngine(NIC_MAC, 16)
    p = make_pair()
    sim, data = start(eng, p, payload_of(20000))
    first = [s for _, s in sim.wire]
    mss = p.b.conn.mss
    assert len(first) == -(-len(data) // mss)
    assert all(len(s.payload) == mss and s.flags == ACK for s in first[:-1])
    assert first[-1].flags == ACK | PSH | FIN
    assert [s.seq for s in first] == [(p.b.conn.snd_una + i * mss) & MASK
                                     for i in range(len(first))]
    assert all(s.ack == p.b.conn.rcv_nxt and s.tsecr == p.b.conn.ts_recent for s in first)
    fid = eng.lookup(KEY)
    assert eng.entry(fid)["state"] == FIN_WAIT_1 and eng.active == 1
    assert eng.stored_bytes == len(data)
    sim.pump()
    # the peer read everything, closed from its callback; we ACKed its FIN
    assert eng.entry(fid)["state"] == TIME_WAIT and sim.peer.state == CLOSED
    t_tw = sim.now
    sim.run()
    d = assert_closed(sim, data, eng, retransmits=0, bytes_received=0, flow_id=7)
    assert sim.reports[-1][0] == pytest.approx(t_tw + 60.0, abs=0.002)
    c = eng.counters
    assert (c["accepted"], c["time_wait_entered"], c["done_closed"], c["done_total"]) == \
        (1, 1, 1, 1)
    assert c["bytes_acked"] == len(data) and c["retransmits_rto"] == 0
    assert c["frames_sent"] == len(sim.wire)
    assert d.retransmits == 0


def test_close_wait_handover_goes_last_ack():
    eng = TeardownEngine(NIC_MAC, 16)
    p = make_pair(peer_fin=True)                  # the peer closed first
    sim, data = start(eng, p, payload_of(5000))
    fid = eng.lookup(KEY)
    assert eng.entry(fid)["state"] == LAST_ACK
    assert sim.wire[0][1].ack == p.b.conn.rcv_nxt     # covers the peer's FIN
    sim.run()
    assert_closed(sim, data, eng, peer_state=CLOSED)  # the peer's TIME-WAIT ran out too
    assert eng.counters["time_wait_entered"] == 0
    assert sim.reports[-1][0] == T0                # done when our FIN was acked


def test_host_data_in_flight_is_resent_from_snd_una():
    eng = TeardownEngine(NIC_MAC, 16)
    p = make_pair()
    b = p.b.conn
    b.send(payload_of(8000, 2), p.now)             # the host sent some itself ...
    segs = p.b.take()
    assert len(segs) >= 4
    p.deliver(p.b, segs[:2])                       # ... two arrived, the rest was lost
    p.deliver(p.a)                                 # the peer's ACK reached the host
    assert b.snd_una != b.iss and b.sndbuf
    acked = (b.snd_una - (b.iss + 1)) & MASK
    sim, data = start(eng, p, payload_of(3000, 3))
    assert data == payload_of(8000, 2)[acked:] + payload_of(3000, 3)
    sim.run()
    assert bytes(sim.received) == payload_of(8000, 2) + payload_of(3000, 3)
    assert sim.peer.fin_rcvd and sim.peer.state == CLOSED and eng.active == 0
    (d,) = sim.messages(TeardownDone)
    assert d.reason == TEARDOWN_END_CLOSED and d.bytes_acked == len(data)


def test_empty_payload_sends_a_bare_fin_and_nic_assigns_flow_ids():
    eng = TeardownEngine(NIC_MAC, 4)
    p = make_pair()
    sim, data = start(eng, p, b"", flow_id=0)
    assert data == b"" and [s.flags for _, s in sim.wire] == [ACK | FIN]
    assert sim.messages(TeardownAccepted)[0].flow_id == 1
    sim.run()
    assert_closed(sim, b"", eng, flow_id=1)


def test_no_timestamps():
    cfg = TcpConfig(timestamps=False)
    eng = TeardownEngine(NIC_MAC, 4)
    p = make_pair(cfg)
    assert not p.b.conn.ts_ok
    sim, data = start(eng, p, payload_of(7000))
    sim.run()
    assert_closed(sim, data, eng)
    assert all(s.tsval is None for _, s in sim.wire)
    assert all(len(s.payload) <= p.b.conn.mss for _, s in sim.wire)


def test_64k_tso_payload_with_partial_checksum():
    eng = TeardownEngine(NIC_MAC, 4)
    p = make_pair()
    n = 65535 - 20 - 32                            # the largest IPv4 TSO payload with TS
    sim, data = start(eng, p, payload_of(n), partial=True)
    segs = [s for _, s in sim.wire]
    mss = p.b.conn.mss
    assert len(segs) == -(-n // mss) and b"".join(bytes(s.payload) for s in segs) == data
    assert [s.flags & (FIN | PSH) for s in segs] == [0] * (len(segs) - 1) + [FIN | PSH]
    sim.run()
    assert_closed(sim, data, eng)


# -- loss ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(30))
def test_60k_response_under_loss_both_ways(seed):
    eng = TeardownEngine(NIC_MAC, 8)
    p = make_pair()
    sim, data = start(eng, p, payload_of(60 * 1024, seed), sim_kw=dict(
        loss_to_peer=0.05, loss_to_nic=0.05, seed=seed))
    sim.run()
    assert bytes(sim.received) == data
    assert sim.peer.fin_rcvd and sim.peer.state == CLOSED
    assert eng.active == 0 and eng.stored_bytes == 0
    (d,) = sim.messages(TeardownDone)
    assert d.reason == TEARDOWN_END_CLOSED and d.bytes_acked == len(data)
    c = eng.counters
    assert d.retransmits == c["retransmits_rto"] + c["retransmits_fast"] + \
        c["retransmits_partial"]


def test_heavy_loss_still_delivers():
    for seed in range(5):
        eng = TeardownEngine(NIC_MAC, 8)
        p = make_pair()
        sim, data = start(eng, p, payload_of(30000, seed), max_retries=30, sim_kw=dict(
            loss_to_peer=0.3, loss_to_nic=0.3, seed=seed))
        sim.run()
        assert bytes(sim.received) == data and sim.peer.fin_rcvd
        assert eng.active == 0
        assert sim.messages(TeardownDone)[0].reason == TEARDOWN_END_CLOSED


def test_rto_backoff_doubles_then_rst_and_retries_report():
    eng = TeardownEngine(NIC_MAC, 4)
    p = make_pair()
    una = p.b.conn.snd_una
    sim, data = start(eng, p, payload_of(10000), max_retries=4, rto_us=200000,
                      sim_kw=dict(loss_to_peer=1.0))          # the peer is gone
    sim.run()
    n0 = -(-len(data) // p.b.conn.mss)
    # (the peer's own retransmissions of its request get pure ACKs: leave them out)
    later = [(t, s) for t, s in sim.wire[n0:] if s.payload or s.flags & (RST | FIN)]
    times = [t for t, _ in later]
    gaps = [b - a for a, b in zip([T0] + times, times)]
    assert gaps == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2], abs=0.0015)
    for _, s in later[:-1]:                        # go-back: the first segment only
        assert s.seq == una and len(s.payload) == p.b.conn.mss and s.flags == ACK
    rst = later[-1][1]
    assert rst.flags == RST | ACK and rst.seq == una and rst.tsval is None
    assert rst.ack == p.b.conn.rcv_nxt
    (d,) = sim.messages(TeardownDone)
    assert (d.reason, d.retransmits, d.bytes_acked) == (TEARDOWN_END_RETRIES, 4, 0)
    assert eng.active == 0 and eng.counters["done_retries"] == 1
    assert eng.counters["retransmits_rto"] == 4 and eng.counters["rst_sent"] == 1


def test_rto_capped_at_60s():
    eng = TeardownEngine(NIC_MAC, 4)
    p = make_pair()
    sim, data = start(eng, p, b"x" * 10, max_retries=4, rto_us=20_000_000,
                      sim_kw=dict(loss_to_peer=1.0))
    sim.run()
    sent = [(t, s) for t, s in sim.wire if s.payload or s.flags & RST]
    times = [t for t, _ in sent]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps == pytest.approx([20, 40, 60, 60, 60], abs=0.002)
    assert [s.flags for _, s in sent[1:-1]] == [ACK | PSH | FIN] * 4   # data + FIN
    assert sent[-1][1].flags == RST | ACK


def test_lost_fin_segment_is_resent_by_rto():
    eng = TeardownEngine(NIC_MAC, 4)
    p = make_pair()
    lost = []

    def drop_first_fin(s):                         # the frame carrying data + FIN, once
        if s.flags & FIN and not lost:
            lost.append(s)
            return True
        return False
    sim, data = start(eng, p, payload_of(3000), sim_kw=dict(drop_to_peer=drop_first_fin))
    sim.run()
    assert_closed(sim, data, eng)
    c = eng.counters
    assert c["retransmits_rto"] == 1 and c["retransmits_fast"] == 0
    (rtx,) = [s for t, s in sim.wire if t > T0 and s.payload]
    assert rtx.flags == ACK | PSH | FIN and rtx.seq == lost[0].seq


def test_three_dup_acks_fast_retransmit():
    eng = TeardownEngine(NIC_MAC, 4)
    p = make_pair()
    una = p.b.conn.snd_una
    lost = []

    def drop_first(s):
        if s.seq == una and s.payload and not lost:
            lost.append(s)
            return True
        return False
    sim, data = start(eng, p, payload_of(10 * p.b.conn.mss), sim_kw=dict(
        drop_to_peer=drop_first, app_close=False))
    sim.pump()                                     # no clock movement at all
    assert sim.now == T0
    c = eng.counters
    assert c["dupacks"] == 9                       # one per out-of-order segment
    # RFC 5681 §3.2: on the 3rd duplicate only, not again for the 6th and 9th
    assert c["retransmits_fast"] == 1 and c["retransmits_rto"] == 0
    assert bytes(sim.received) == data and sim.peer.fin_rcvd
    assert eng.entry(eng.lookup(KEY))["state"] == FIN_WAIT_2
    rtx = [s for _, s in sim.wire[10:]]
    assert all(s.seq == una and bytes(s.payload) == data[:p.b.conn.mss] for s in rtx)


@pytest.mark.parametrize("nseg, fast", [(4, 0), (6, 1)])
def test_partial_ack_after_retransmission_resends_next_hole(nseg, fast):
    """Two holes; the first is repaired by RTO (2 dup ACKs) or fast retransmit (4 dup
    ACKs), the second at once by the partial ACK that follows, without another RTO."""
    eng = TeardownEngine(NIC_MAC, 4)
    p = make_pair()
    mss = p.b.conn.mss
    una = p.b.conn.snd_una
    holes = {una, (una + (nseg - 2) * mss) & MASK}
    seen = set()

    def drop_holes(s):
        if s.seq in holes and s.seq not in seen:
            seen.add(s.seq)
            return True
        return False
    sim, data = start(eng, p, payload_of(nseg * mss), sim_kw=dict(drop_to_peer=drop_holes,
                                                                  app_close=False))
    sim.run(until=T0 + 0.25)
    c = eng.counters
    assert (c["retransmits_rto"], c["retransmits_fast"], c["retransmits_partial"]) == \
        (1 - fast, fast, 1)
    assert bytes(sim.received) == data and sim.peer.fin_rcvd
    assert eng.entry(eng.lookup(KEY))["state"] == FIN_WAIT_2


# -- closing sequences -----------------------------------------------------------------------


def test_simultaneous_close_goes_closing_then_time_wait():
    eng = TeardownEngine(NIC_MAC, 4)
    p = make_pair()
    sim, data = start(eng, p, payload_of(100), sim_kw=dict(app_close=False))
    fid = eng.lookup(KEY)
    held, sim.to_peer = sim.to_peer, []            # our data+FIN still on the way
    sim.peer.shutdown(sim.now)                     # the peer closes at the same time
    assert sim.peer.state == FIN_WAIT_1
    sim.deliver_to_nic()
    assert eng.entry(fid)["state"] == CLOSING
    (ack,) = [s for _, s in sim.wire[-1:]]
    assert ack.flags == ACK and ack.ack == eng.entry(fid)["rcv_nxt"]
    sim.to_peer = held + sim.to_peer
    sim.pump()
    assert sim.peer.state == TIME_WAIT
    assert eng.entry(fid)["state"] == TIME_WAIT
    sim.run()
    assert_closed(sim, data, eng)
    assert eng.counters["time_wait_entered"] == 1


def test_fin_ack_and_fin_in_one_segment_from_fin_wait_1():
    eng = TeardownEngine(NIC_MAC, 4)
    p = make_pair()
    sim, data = start(eng, p, payload_of(10))
    fid = eng.lookup(KEY)
    e = eng.entry(fid)
    f = peer_frame(ACK | FIN, e["rcv_nxt"], e["snd_max"], window=e["peer_window"],
                   ts=(host_tsval(p.a.conn, T0), e["ts_last"]))
    out = deliver(eng, f, T0)
    assert [check_wire(x).flags for _, x in out] == [ACK]
    assert eng.entry(fid)["state"] == TIME_WAIT
    assert check_wire(out[0][1]).ack == (e["rcv_nxt"] + 1) & MASK


def test_time_wait_length_and_retransmitted_fin_restarts_it():
    eng = TeardownEngine(NIC_MAC, 4)
    p = make_pair()
    sim, data = start(eng, p, payload_of(2000), time_wait_ms=60000)
    sim.pump()
    fid = eng.lookup(KEY)
    e = eng.entry(fid)
    assert e["state"] == TIME_WAIT
    assert eng.on_timer(T0 + 30.0) == [] and eng.active == 1
    # the peer did not get our ACK of its FIN (in this story) and sends the FIN again
    a = sim.peer
    fin = peer_frame(ACK | FIN, (a.snd_max - 1) & MASK, a.rcv_nxt, window=e["peer_window"],
                     ts=(host_tsval(a, T0 + 30.0), e["ts_last"]))
    out = deliver(eng, fin, T0 + 30.0)
    (reack,) = [check_wire(f) for _, f in out]
    assert reack.flags == ACK and reack.ack == a.snd_max and reack.seq == e["snd_max"]
    assert eng.counters["time_wait_restarts"] == 1
    assert eng.on_timer(T0 + 60.5) == [] and eng.active == 1      # not the old deadline
    assert eng.on_timer(T0 + 89.99) == [] and eng.active == 1
    (done,) = eng.on_timer(T0 + 90.001)
    assert report(done[1]).reason == TEARDOWN_END_CLOSED and eng.active == 0


def test_time_wait_zero_skips_it():
    eng = TeardownEngine(NIC_MAC, 4)
    p = make_pair()
    sim, data = start(eng, p, payload_of(2000), time_wait_ms=0)
    sim.pump()
    assert eng.active == 0 and eng.counters["time_wait_entered"] == 0
    assert_closed(sim, data, eng)
    assert sim.reports[-1][0] == T0


def test_fin_wait_2_timeout_frees_an_orphan():
    eng = TeardownEngine(NIC_MAC, 4, fin_timeout=5.0)
    p = make_pair()
    sim, data = start(eng, p, payload_of(2000), sim_kw=dict(app_close=False))
    sim.run(until=T0 + 1)                          # the peer's delayed ACK
    assert eng.entry(eng.lookup(KEY))["state"] == FIN_WAIT_2
    sim.run()
    assert eng.active == 0 and eng.counters["fin_wait2_timeouts"] == 1
    (t, d), = [(t, m) for t, m in sim.reports if type(m) is TeardownDone]
    t_fw2 = T0 + sim.peer.config.delayed_ack      # when the peer's ACK of our FIN came
    assert d.reason == TEARDOWN_END_CLOSED and t == pytest.approx(t_fw2 + 5.0, abs=0.002)
    assert d.bytes_acked == len(data)


def test_peer_data_after_handover_is_acked_and_discarded():
    eng = TeardownEngine(NIC_MAC, 4)
    p = make_pair()
    sim, data = start(eng, p, payload_of(1000), sim_kw=dict(app_close=False))
    sim.pump()
    fid = eng.lookup(KEY)
    a = sim.peer
    a.send(b"more data", sim.now)                  # a half-closed peer keeps talking
    sim.pump()
    assert a.snd_una == a.snd_max                  # the NIC acknowledged it
    assert eng.entry(fid)["bytes_received"] == 9
    e = eng.entry(fid)
    n_wire = len(sim.wire)
    ooo = peer_frame(ACK, e["rcv_nxt"] + 100, e["snd_max"], b"zz", window=e["peer_window"],
                     ts=(host_tsval(a, sim.now), e["ts_last"]))
    sim.feed(deliver(eng, ooo, sim.now))           # out of order: duplicate ACK, dropped
    (dup,) = [s for _, s in sim.wire[n_wire:]]
    assert dup.ack == e["rcv_nxt"] and eng.entry(fid)["rcv_nxt"] == e["rcv_nxt"]
    old = peer_frame(ACK, e["rcv_nxt"] - 9, e["snd_max"], b"more data",
                     window=e["peer_window"], ts=(host_tsval(a, sim.now), e["ts_last"]))
    sim.feed(deliver(eng, old, sim.now))           # a duplicate: ACK, counted once
    assert sim.wire[-1][1].ack == e["rcv_nxt"] and eng.entry(fid)["bytes_received"] == 9
    a.close(sim.now)
    sim.run()
    (d,) = sim.messages(TeardownDone)
    assert d.bytes_received == 9 and eng.counters["bytes_received"] == 9
    assert d.reason == TEARDOWN_END_CLOSED and a.state == CLOSED


# -- RST, SYN, PAWS --------------------------------------------------------------------------


def _flow(eng, payload=b"x" * 3000, **kw):
    p = make_pair()
    hdr, inner, data = handover_frame(p, payload, T0, **kw)
    eng.accept(hdr, inner, NIC_MAC, T0)
    fid = eng.lookup(KEY)
    return p, fid, eng.entry(fid)


def test_rst_exact_in_window_and_outside():
    eng = TeardownEngine(NIC_MAC, 4)
    p, fid, e = _flow(eng)
    rnxt = e["rcv_nxt"]
    assert deliver(eng, peer_frame(RST, rnxt + 2**30, 0), T0) == []       # outside
    assert deliver(eng, peer_frame(RST, rnxt - 1, 0), T0) == []
    assert eng.counters["drop_teardown_rst_outside"] == 2
    out = deliver(eng, peer_frame(RST, rnxt + 1000, 0), T0)                # in window
    (ch,) = [check_wire(f) for _, f in out]
    assert ch.flags == ACK and ch.ack == rnxt and ch.seq == e["snd_max"]
    assert eng.counters["challenge_acks"] == 1 and eng.active == 1
    out = deliver(eng, peer_frame(RST | ACK, rnxt, e["snd_una"]), T0 + 0.1)   # exact
    ((port, f),) = out
    d = report(f)
    assert port == HOST and d.reason == TEARDOWN_END_RESET and d.flow_id == 7
    assert eng.active == 0 and eng.counters["done_reset"] == 1
    assert eng.on_timer(T0 + 100) == []            # its timer went with it


def _time_wait_flow(eng):
    p = make_pair()
    sim, data = start(eng, p, b"hello")
    sim.pump()
    fid = eng.lookup(KEY)
    assert eng.entry(fid)["state"] == TIME_WAIT
    return sim, fid, eng.entry(fid)


def test_syn_in_time_wait_new_incarnation_goes_on_to_the_listener():
    eng = TeardownEngine(NIC_MAC, 4)
    sim, fid, e = _time_wait_flow(eng)
    syn = peer_frame(SYN, e["rcv_nxt"] + 50000, 0)                 # no TS: seq decides
    out = deliver(eng, syn, T0 + 1)
    assert [port for port, _ in out] == [HOST, LISTENER]
    assert report(out[0][1]).reason == TEARDOWN_END_CLOSED
    assert out[1][1] is syn                        # unchanged, after the report
    assert eng.active == 0 and eng.counters["syn_reopen"] == 1


def test_syn_in_time_wait_with_timestamps_rfc6191():
    eng = TeardownEngine(NIC_MAC, 4)
    sim, fid, e = _time_wait_flow(eng)
    old_ts = (e["ts_recent"] - 10) & MASK
    new_ts = (e["ts_recent"] + 10) & MASK
    # newer seq, older TSval: not provably new -> challenge ACK
    out = deliver(eng, peer_frame(SYN, e["rcv_nxt"] + 50000, 0, ts=(old_ts, 0)), T0 + 1)
    assert [check_wire(f).flags for _, f in out] == [ACK] and eng.active == 1
    # older seq, newer TSval: new incarnation
    out = deliver(eng, peer_frame(SYN, e["rcv_nxt"] - 50000, 0, ts=(new_ts, 0)), T0 + 1)
    assert [port for port, _ in out] == [HOST, LISTENER] and eng.active == 0


def test_other_syns_get_a_challenge_ack():
    eng = TeardownEngine(NIC_MAC, 4)
    sim, fid, e = _time_wait_flow(eng)
    out = deliver(eng, peer_frame(SYN, e["rcv_nxt"] - 5, 0), T0 + 1)   # old seq, no TS
    (ch,) = [check_wire(f) for _, f in out]
    assert ch.flags == ACK and ch.ack == e["rcv_nxt"] and eng.active == 1
    out = deliver(eng, peer_frame(SYN | ACK, e["rcv_nxt"] + 9, 1), T0 + 1)
    assert [check_wire(f).flags for _, f in out] == [ACK] and eng.active == 1
    eng2 = TeardownEngine(NIC_MAC, 4)
    p, fid2, e2 = _flow(eng2)                       # FIN-WAIT-1
    out = deliver(eng2, peer_frame(SYN, e2["rcv_nxt"] + 50000, 0), T0)
    assert [check_wire(f).flags for _, f in out] == [ACK] and eng2.active == 1
    assert eng2.counters["challenge_acks"] == 1


def test_paws_drops_old_timestamps():
    eng = TeardownEngine(NIC_MAC, 4)
    p, fid, e = _flow(eng, b"x" * 100)
    old = peer_frame(ACK, e["rcv_nxt"], e["snd_max"], window=e["peer_window"],
                     ts=((e["ts_recent"] - 100) & MASK, 0))
    out = deliver(eng, old, T0)
    (a,) = [check_wire(f) for _, f in out]
    assert a.flags == ACK and eng.counters["paws_drops"] == 1
    assert eng.entry(fid)["snd_una"] == e["snd_una"]      # the ACK was not processed


def test_ts_recent_only_from_the_left_window_edge():
    eng = TeardownEngine(NIC_MAC, 4)
    p, fid, e = _flow(eng, b"x" * 100)
    newer = (e["ts_recent"] + 50) & MASK
    ooo = peer_frame(ACK, e["rcv_nxt"] + 10, e["snd_una"], b"abc", window=e["peer_window"],
                     ts=(newer, 0))
    (dup,) = [check_wire(f) for _, f in deliver(eng, ooo, T0)]
    assert dup.ack == e["rcv_nxt"] and dup.tsecr == e["ts_recent"]
    assert eng.entry(fid)["ts_recent"] == e["ts_recent"]   # RFC 7323 §4.3: not past RCV.NXT
    ok = peer_frame(ACK, e["rcv_nxt"], e["snd_una"], b"abc", window=e["peer_window"],
                    ts=(newer, 0))
    (a,) = [check_wire(f) for _, f in deliver(eng, ok, T0)]
    assert eng.entry(fid)["ts_recent"] == newer and a.tsecr == newer
    assert a.ack == (e["rcv_nxt"] + 3) & MASK


def test_ack_of_unsent_data_and_segments_without_ack():
    eng = TeardownEngine(NIC_MAC, 4)
    p, fid, e = _flow(eng, b"x" * 100)
    out = deliver(eng, peer_frame(ACK, e["rcv_nxt"], e["snd_max"] + 10), T0)
    assert [check_wire(f).flags for _, f in out] == [ACK]
    assert eng.entry(fid)["snd_una"] == e["snd_una"]
    assert deliver(eng, peer_frame(PSH, e["rcv_nxt"], 0, b"abc"), T0) == []
    assert eng.entry(fid)["rcv_nxt"] == e["rcv_nxt"]


# -- timestamps ----------------------------------------------------------------------------


def test_tsvals_never_below_ts_last_and_bit0_clear():
    eng = TeardownEngine(NIC_MAC, 4)
    p = make_pair(ts_odd=True)
    ahead = (host_tsval(p.b.conn, T0) + 5000) & MASK        # host's clock was ahead by 5 s
    sim, data = start(eng, p, payload_of(30000), ts_last=ahead, sim_kw=dict(
        loss_to_peer=0.1, loss_to_nic=0.1, seed=3))
    assert sim.wire[0][1].tsval == ahead
    sim.run()
    assert bytes(sim.received) == data and eng.active == 0
    tsvals = [s.tsval for _, s in sim.wire if s.tsval is not None]
    assert len(tsvals) > 20 and all(t & 1 == 0 for t in tsvals)
    assert all(seq_ge(b, a) for a, b in zip(tsvals, tsvals[1:]))
    assert all(seq_ge(t, ahead) for t in tsvals)
    assert sim.peer.paws_drops == 0


def test_tsval_follows_the_clock_with_bit0_cleared():
    eng = TeardownEngine(NIC_MAC, 4)
    p = make_pair(ts_odd=True)
    b = p.b.conn
    behind = (host_tsval(b, T0) - 1000) & MASK
    sim, data = start(eng, p, payload_of(10), ts_last=behind, sim_kw=dict(loss_to_peer=1.0),
                      max_retries=2)
    sim.run()
    for t, s in sim.wire:
        if s.tsval is not None:
            assert s.tsval == (int(t * 1000) + b.ts_offset) & TS_MASK


def test_odd_ts_last_from_host_is_not_undercut():
    eng = TeardownEngine(NIC_MAC, 4)
    p = make_pair()
    ahead = (host_tsval(p.b.conn, T0) + 1001) & MASK       # odd: a broken host
    sim, data = start(eng, p, b"x", ts_last=ahead)
    assert sim.wire[0][1].tsval == (ahead + 1) & MASK


# -- refusals ------------------------------------------------------------------------------


def manual(cport=CPORT, payload=b"abc", flags=ACK, mss=1448, state=STATE_ESTABLISHED,
           flow_id=0, ethertype=b"\x08\x00", proto=6):
    f = build_tcp_frame(PEER_MAC, NIC_MAC, B_IP, A_IP, 1, SPORT, cport, 1000, 2000, flags,
                        500, tcp_options(timestamps=(10, 20)), payload)
    f = f[:12] + ethertype + f[14:23] + bytes([proto]) + f[24:]
    msg = Teardown(mss=mss, state=state, flow_id=flow_id, timestamps=True, ts_last=10)
    return msg, f


def key_of(cport):
    return A_IP + B_IP + struct.pack("!HH", cport, SPORT)


def only_report(out):
    ((port, f),) = out
    assert port == HOST
    return report(f)


def test_table_full_and_duplicate():
    eng = TeardownEngine(NIC_MAC, 2)
    for i, cport in enumerate((1001, 1002)):
        m = only_report(eng.accept(*manual(cport, b"")[:2], NIC_MAC, T0)[:1])
        assert m == TeardownAccepted(i + 1, key_of(cport))
    assert eng.active == 2
    m = only_report(eng.accept(*manual(1003, flow_id=55), NIC_MAC, T0))
    assert m == TeardownRefused(55, key_of(1003), TEARDOWN_REFUSED_TABLE_FULL)
    m = only_report(eng.accept(*manual(1001, flow_id=56), NIC_MAC, T0))
    assert m == TeardownRefused(56, key_of(1001), TEARDOWN_REFUSED_DUPLICATE)
    c = eng.counters
    assert (c["refused_table_full"], c["refused_duplicate"], c["accepted"]) == (1, 1, 2)
    # a reset frees a slot: the next handover fits
    assert report(deliver(eng, peer_frame(RST, 2000, 0, sport=1002), T0)[0][1]).reason == \
        TEARDOWN_END_RESET
    out = eng.accept(*manual(1003, flow_id=57), NIC_MAC, T0)
    assert report(out[0][1]) == TeardownAccepted(57, key_of(1003)) and eng.active == 2


@pytest.mark.parametrize("case", ["short", "not_ipv4", "udp", "syn", "fin", "rst", "no_ack",
                                  "mss0", "mss_small", "state", "wscale", "bad_ip",
                                  "bad_offset", "retries", "garbage_msg"])
def test_malformed_handover_is_refused_bad_state(case):
    eng = TeardownEngine(NIC_MAC, 4)
    msg, f = manual()
    if case == "short":
        f = f[:40]
    elif case == "not_ipv4":
        msg, f = manual(ethertype=b"\x86\xdd")
    elif case == "udp":
        msg, f = manual(proto=17)
    elif case in ("syn", "fin", "rst"):
        msg, f = manual(flags=ACK | {"syn": SYN, "fin": FIN, "rst": RST}[case])
    elif case == "no_ack":
        msg, f = manual(flags=PSH)
    elif case == "mss0":
        msg, f = manual(mss=0)
    elif case == "mss_small":
        msg, f = manual(mss=10)
    elif case == "state":
        msg.state = 5
    elif case == "wscale":
        msg.snd_wscale = 15
    elif case == "bad_ip":
        f = f[:14] + b"\x65" + f[15:]
    elif case == "bad_offset":
        f = f[:46] + b"\xf0" + f[47:]
    elif case == "retries":
        msg.max_retries = 256
    elif case == "garbage_msg":
        msg = object()
    m = only_report(eng.accept(msg, f, NIC_MAC, T0))
    assert type(m) is TeardownRefused and m.reason == TEARDOWN_REFUSED_BAD_STATE
    assert eng.active == 0 and eng.counters["refused_bad"] == 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_handover_never_raises(data):
    eng = TeardownEngine(NIC_MAC, 4)
    msg, f = manual(payload=b"x" * 50)
    f = bytearray(f)
    for _ in range(data.draw(st.integers(0, 6))):
        i = data.draw(st.integers(0, len(f) - 1))
        f[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(f)))
    out = eng.accept(msg, bytes(f[:cut]), NIC_MAC, T0)
    assert out[0][0] == HOST
    m = report(out[0][1])
    assert type(m) in (TeardownAccepted, TeardownRefused)
    for port, fr in out[1:]:
        assert port == WIRE
        ip = parse_ipv4(fr[14:])
        parse_tcp(fr[34:14 + ip.total_length], ip.src, ip.dst)


# -- arbitrary peer segments -------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(
    st.sampled_from([ACK, ACK | FIN, ACK | PSH, RST, RST | ACK, SYN, SYN | ACK, FIN, 0]),
    st.integers(-3000, 3000), st.integers(-5000, 5000), st.integers(0, 3000),
    st.one_of(st.none(), st.integers(-50, 50)), st.integers(0, 0xFFFF),
    st.floats(0, 5)), max_size=12))
def test_arbitrary_peer_segments_never_raise(segs):
    eng = TeardownEngine(NIC_MAC, 4)
    p, fid, e0 = _flow(eng, b"y" * 4000)
    now = T0
    for flags, dseq, dack, plen, dts, window, dt in segs:
        if eng.active == 0:
            break
        now += dt
        e = eng.entry(fid)
        ts = None if dts is None else ((e["ts_recent"] + dts) & MASK, 0)
        f = peer_frame(flags, e["rcv_nxt"] + dseq, e["snd_una"] + dack, b"p" * plen,
                       window=window, ts=ts)
        out = deliver(eng, f, now) + eng.on_timer(now)
        for port, fr in out:
            if port == WIRE:
                s = check_wire(fr)
                assert s.tsval is None or s.tsval & 1 == 0
                assert not s.flags & RST or s.tsval is None     # RFC 7323 §5.2
            elif fr is not f:
                assert type(report(fr)) is TeardownDone
        if eng.active:
            e = eng.entry(fid)
            # SND.UNA only moves forward, within what was sent
            assert 0 <= (e["snd_una"] - e0["snd_una"]) & MASK <= 4001
            assert e["state"] in (FIN_WAIT_1, FIN_WAIT_2, CLOSING, TIME_WAIT)
            assert eng.stored_bytes == e["unacked_bytes"]
    assert eng.active in (0, 1)
    if eng.active == 0:
        assert eng.stored_bytes == 0 and eng.next_deadline() is None
