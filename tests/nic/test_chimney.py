"""nic.chimney through NicDataplane: offload refusals, the data path, uploads, the
host's frames on an offloaded 4-tuple, timers. The peer is a TcpConnection on the wire
port; the host side is played with raw 0x090F frames."""

from dataclasses import fields as dc_fields

import pytest
from hypothesis import given, settings, strategies as hst

from acceltcp.nic.dataplane import HOST, WIRE, NicDataplane
from acceltcp.tcp.config import TcpConfig
from acceltcp.tcp.connection import TcpConnection
from acceltcp.tcp.states import CLOSE_WAIT, CLOSED, ESTABLISHED
from acceltcp.tcp.tcbstate import TcbState, host_export, import_state
from acceltcp.wire import control
from acceltcp.wire.control import (
    ChimneyAccepted, ChimneyData, ChimneyOffload, ChimneyRefused, ChimneySend, ChimneyUpload,
    ChimneyUploadRequest,
)
from acceltcp.wire.tcp import ACK, RST, SYN, build_tcp_frame, parse_tcp

P_IP, H_IP = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
P_MAC, H_MAC, N_MAC = (bytes.fromhex(x) for x in ("020000000001", "020000000002",
                                                  "020000000003"))
KEY = P_IP + H_IP + (40000).to_bytes(2, "big") + (80).to_bytes(2, "big")


class Rig:
    def __init__(self, cfg=None, **nic_kwargs):
        cfg = cfg or TcpConfig()
        self.now = 0.0
        self.nic = NicDataplane(N_MAC, secret=b"s" * 32, **nic_kwargs)
        self.to_peer = []            # frames for the peer (from the host before offload)
        self.host_msgs = []
        self.peer = TcpConnection(cfg, P_IP, 40000, H_IP, 80, 1000, self._peer_out, 0.0)
        self.host = TcpConnection(cfg, H_IP, 80, P_IP, 40000, 5000, self._host_out, 0.0)
        self.peer_frames = []
        self.host.listen()
        self.peer.connect(0.0)
        for _ in range(4):           # handshake directly (before any offload)
            self._direct()

    def _peer_out(self, conn, flags, seq, ack, window, options, payload):
        self.peer_frames.append(build_tcp_frame(N_MAC, P_MAC, P_IP, H_IP, 1, 40000, 80, seq,
                                                ack, flags, window, options, bytes(payload)))

    def _host_out(self, conn, flags, seq, ack, window, options, payload):
        self.to_peer.append(build_tcp_frame(P_MAC, H_MAC, H_IP, P_IP, 1, 80, 40000, seq, ack,
                                            flags, window, options, bytes(payload)))

    def _direct(self):
        frames, self.peer_frames = self.peer_frames, []
        for f in frames:
            self.host.on_segment(parse_tcp(f[34:], P_IP, H_IP), self.now)
        back, self.to_peer = self.to_peer, []
        for f in back:
            self.peer.on_segment(parse_tcp(f[34:], H_IP, P_IP), self.now)

    def offload(self, state=None, flow_id=1):
        state = host_export(self.host) if state is None else state
        blob = control.encode_value(tuple(state))
        out = []
        for total, off, chunk in control.state_chunks(blob):
            out += self.host_frame(ChimneyOffload(flow_id, KEY, P_MAC, N_MAC, total, off,
                                                  chunk).frame(N_MAC, H_MAC))
        return out

    def host_frame(self, frame):
        return self._route(self.nic.process(frame, HOST, self.now))

    def _route(self, outs):
        got = []
        for port, f in outs:
            if port == WIRE:
                self.peer.on_segment(parse_tcp(f[34:], H_IP, P_IP), self.now)
                got.append(("wire", f))
            else:
                m = control.decode(f) if f[12:14] == b"\x09\x0f" else f
                self.host_msgs.append(m)
                got.append(("host", m))
        return got

    def pump(self, rounds=2000):
        for _ in range(rounds):
            if not self.peer_frames:
                return
            frames, self.peer_frames = self.peer_frames, []
            for f in frames:
                self._route(self.nic.process(f, WIRE, self.now))
        raise AssertionError("no quiet")

    def advance(self, dt):
        end = self.now + dt
        while True:
            ds = [d for d in (self.nic.next_deadline(), self.peer.next_deadline())
                  if d is not None and d <= end]
            if not ds:
                break
            self.now = max(self.now, min(ds))
            if (d := self.nic.next_deadline()) is not None and d <= self.now:
                self._route(self.nic.on_timer(self.now))
            if (d := self.peer.next_deadline()) is not None and d <= self.now:
                self.peer.on_timer(self.now)
            self.pump()
        self.now = end

    def msgs(self, cls):
        return [m for m in self.host_msgs if type(m) is cls]

    def received(self):
        return b"".join(m.body for m in self.msgs(ChimneyData))

    def uploaded(self):
        ups = self.msgs(ChimneyUpload)
        blob = b"".join(m.body for m in ups)
        return ups[-1].reason, import_state(control.decode_value(blob), lambda *a: None)


def test_offload_accept_and_bulk_both_ways():
    r = Rig()
    assert r.host.state == ESTABLISHED
    out = r.offload()
    assert [type(m) for k, m in out if k == "host"] == [ChimneyAccepted]
    assert len(r.nic.chimney) == 1
    data = bytes(range(256)) * 4096                     # 1 MiB peer -> host
    r.peer.send(data[:200000], r.now)
    r.pump()
    sent = 0
    up = bytes(reversed(data))
    got = bytearray()
    while sent < len(up):                               # host -> peer through the NIC
        chunk = up[sent:sent + 60000]
        r.host_frame(ChimneySend(1, KEY, sent, 0, chunk).frame(N_MAC, H_MAC))
        sent += len(chunk)
        r.pump()
        r.advance(0.01)
        got += r.peer.recv(1 << 30, r.now)
        r.pump()
    for _ in range(20):
        r.advance(0.1)
        got += r.peer.recv(1 << 30, r.now)
        r.pump()
    assert r.received() == data[:200000]
    assert got == up
    acked = [m.acked for m in r.msgs(ChimneyData)]
    assert acked == sorted(acked) and acked[-1] == len(up)
    c = r.nic.chimney.counters
    assert c["bytes_to_host"] == 200000 and c["bytes_from_host"] == len(up)
    assert c["data_frames"] < c["segments_in"]          # chunks, not one frame per segment


def test_refusals():
    r = Rig()
    r.offload()
    out = r.offload(flow_id=2)                          # the 4-tuple is offloaded already
    assert [(type(m), m.reason) for k, m in out] == [(ChimneyRefused,
                                                     control.CHIMNEY_REFUSED_DUPLICATE)]
    r2 = Rig(chimney_capacity=1)
    bad = host_export(r2.host)._replace(snd_una=1 << 33)
    out = r2.offload(bad)
    assert out[0][1].reason == control.CHIMNEY_REFUSED_BAD_STATE
    closing = host_export(r2.host)._replace(fin_queued=True)
    assert r2.offload(closing)[0][1].reason == control.CHIMNEY_REFUSED_BAD_STATE
    other = host_export(r2.host)._replace(remote_port=40001)   # does not match the key
    assert r2.offload(other)[0][1].reason == control.CHIMNEY_REFUSED_BAD_STATE
    assert type(r2.offload()[0][1]) is ChimneyAccepted
    r3 = Rig(chimney_capacity=1)
    r3.nic.chimney.flows[b"x" * 12] = r3.nic.chimney.flows.get(KEY)  # fill the table
    assert r3.offload()[0][1].reason == control.CHIMNEY_REFUSED_TABLE_FULL
    c = r2.nic.chimney.counters
    assert c["refused_bad"] == 3 and c["offloads"] == 1


def test_chunk_out_of_order_refused():
    r = Rig()
    state = host_export(r.host)
    blob = control.encode_value(tuple(state))
    f = ChimneyOffload(1, KEY, P_MAC, N_MAC, len(blob), 10, blob[10:]).frame(N_MAC, H_MAC)
    out = r.host_frame(f)
    assert out[0][1].reason == control.CHIMNEY_REFUSED_BAD_STATE
    assert len(r.nic.chimney) == 0


def test_host_segments_on_an_offloaded_tuple_are_dropped():
    r = Rig()
    r.offload()
    r.host.send(b"stale", 0.0)                         # the host's frozen TCB must not talk
    f = r.to_peer.pop()
    assert r.nic.process(f, HOST, r.now) == []
    assert r.nic.counters["drop_chimney_host_segment"] == 1


def test_send_gap_dropped():
    r = Rig()
    r.offload()
    r.host_frame(ChimneySend(1, KEY, 5, 0, b"abc").frame(N_MAC, H_MAC))
    assert r.nic.chimney.counters["send_gaps"] == 1
    r.host_frame(ChimneySend(9, b"y" * 12, 0, 0, b"abc").frame(N_MAC, H_MAC))
    assert r.nic.chimney.counters["unknown_flow"] == 1


def test_upload_on_request_keeps_everything():
    r = Rig()
    r.offload()
    r.host_frame(ChimneySend(1, KEY, 0, 0, b"q" * 50000).frame(N_MAC, H_MAC))
    r.host_frame(ChimneySend(1, KEY, 50000, 0, b"q" * 50000).frame(N_MAC, H_MAC))
    r.host_frame(ChimneyUploadRequest(1, KEY, control.UPLOAD_HOST_REQUEST)
                 .frame(N_MAC, H_MAC))
    reason, tcb = r.uploaded()
    assert reason == control.UPLOAD_HOST_REQUEST and tcb.state == ESTABLISHED
    assert len(r.nic.chimney) == 0 and r.nic.next_deadline() is None
    # every byte the peer has not acknowledged comes back
    assert bytes(tcb.sndbuf) == b"q" * 100000
    assert tcb.snd_nxt != tcb.snd_una                   # some in flight (sent by the NIC)


def test_peer_fin_and_rst_upload():
    r = Rig()
    r.offload()
    r.peer.send(b"last words", r.now)
    r.peer.shutdown(r.now)
    r.pump()
    reason, tcb = r.uploaded()
    assert reason == control.UPLOAD_PEER_FIN and tcb.state == CLOSE_WAIT
    assert r.received() == b"last words" and not tcb.rcvbuf    # delivered before the upload
    r = Rig()
    r.offload()
    # an RST not at RCV.NXT: the host's RFC 5961 rule, run on the NIC -> challenge ACK only
    bad = build_tcp_frame(N_MAC, P_MAC, P_IP, H_IP, 1, 40000, 80,
                          (r.peer.snd_nxt + 10) & 0xFFFFFFFF, 0, RST, 0, b"", b"")
    acks_before = r.peer.segs_in
    r._route(r.nic.process(bad, WIRE, r.now))
    assert r.peer.segs_in == acks_before + 1 and not r.msgs(ChimneyUpload)
    # a SYN on the flow: challenge ACK too (RFC 5961 §4), no upload
    syn = build_tcp_frame(N_MAC, P_MAC, P_IP, H_IP, 1, 40000, 80, 12345, 0, SYN, 1000,
                          b"", b"")
    r._route(r.nic.process(syn, WIRE, r.now + 2))
    assert r.peer.segs_in == acks_before + 2 and not r.msgs(ChimneyUpload)
    r.peer.abort(r.now)
    r.pump()
    reason, tcb = r.uploaded()
    assert reason == control.UPLOAD_PEER_RST and tcb.state == CLOSED and tcb.error == "reset"


def test_reordering_beyond_the_limit_uploads():
    r = Rig(chimney_kwargs={"max_ooo_blocks": 2})
    r.offload()
    r.peer.send(bytes(20000), r.now)
    frames, r.peer_frames = r.peer_frames, []
    for f in frames[1::2]:                              # every other segment: holes
        r._route(r.nic.process(f, WIRE, r.now))
    reason, tcb = r.uploaded()
    assert reason == control.UPLOAD_REORDER and tcb.reasm is not None


def test_retransmission_by_the_nic_timer():
    lost = Rig()
    lost.offload()
    lost.nic.process(ChimneySend(1, KEY, 0, 0, b"z" * 3000).frame(N_MAC, H_MAC), HOST, 0.0)
    d = lost.nic.next_deadline()
    assert d is not None
    out = lost.nic.on_timer(d)                          # RTO: the NIC resends
    wire = [f for p, f in out if p == WIRE]
    assert wire and parse_tcp(wire[0][34:], H_IP, P_IP).flags & ACK
    assert lost.nic.chimney.flows[KEY].conn.rto_timeouts == 1


@pytest.mark.parametrize("n", [0, 1, 70000])
def test_delivery_chunks(n):
    r = Rig()
    r.offload()
    if n:
        r.peer.send(bytes(n), r.now)
        r.pump()
    r.advance(0.01)
    got = r.received()
    assert got == bytes(n)
    assert all(len(m.body) <= control.CHIMNEY_MAX_BODY for m in r.msgs(ChimneyData))


def test_receive_flow_control_by_the_apps_reads():
    r = Rig()
    r.offload()
    rcv_buf = r.host.config.rcv_buf
    data = bytes(range(256)) * 4000                     # ~1 MiB: four receive buffers
    sent = 0

    def step():
        nonlocal sent
        if sent < len(data):
            sent += r.peer.send(data[sent:sent + 65536], r.now)
        r.pump()
        r.advance(0.05)

    for _ in range(40):
        step()
    assert len(r.received()) == rcv_buf                 # no read credit: one buffer only
    nic_tcb = r.nic.chimney.flows[KEY].conn
    assert len(nic_tcb.rcvbuf) > 0 and sent < len(data)  # the rest waits, window closed
    assert r.peer.snd_wnd < r.peer.mss
    for _ in range(200):
        n = len(r.received())
        r.host_frame(ChimneySend(1, KEY, 0, n, b"").frame(N_MAC, H_MAC))   # the app read it
        step()
    assert r.received() == data


def test_shutdown_stays_on_the_nic_until_the_peers_fin():
    from acceltcp.tcp.states import CLOSE_WAIT as PEER_CLOSE_WAIT, TIME_WAIT
    r = Rig()
    r.offload()
    r.host_frame(ChimneySend(1, KEY, 0, 0, b"bye", control.CHIMNEY_SEND_FIN)
                 .frame(N_MAC, H_MAC))
    r.pump()
    r.advance(0.1)
    assert r.peer.recv(100) == b"bye" and r.peer.state == PEER_CLOSE_WAIT
    assert not r.msgs(ChimneyUpload) and len(r.nic.chimney) == 1
    r.host_frame(ChimneySend(1, KEY, 3, 0, b"more").frame(N_MAC, H_MAC))   # after FIN
    assert r.nic.chimney.counters["send_gaps"] == 1
    r.peer.send(b"answer", r.now)
    r.peer.shutdown(r.now)
    r.pump()
    reason, tcb = r.uploaded()
    assert reason == control.UPLOAD_PEER_FIN and tcb.state == TIME_WAIT
    assert r.received() == b"answer"


def test_chimney_frames_from_the_wire():
    """A peer must not forge chimney messages: dropped from the wire with a chimney table;
    without one 0x090F is not this NIC's (it goes up, as from the XDP NIC, to a host that
    then has no chimney)."""
    forged = ChimneyData(1, KEY, 0, 0, 0, b"evil").frame(N_MAC, P_MAC)
    nic = NicDataplane(N_MAC, secret=b"s" * 32)
    assert nic.process(forged, WIRE, 0.0) == []
    assert nic.counters["drop_offload_ethertype"] == 1
    off = NicDataplane(N_MAC, secret=b"s" * 32, chimney_capacity=0)
    assert off.process(forged, WIRE, 0.0) == [(HOST, forged)]
    # and its host side refuses every offload
    r = Rig(chimney_capacity=0)
    assert r.offload()[0][1].reason == control.CHIMNEY_REFUSED_TABLE_FULL


def test_a_tcb_that_fails_on_the_nic_is_given_back_without_state():
    """A state no TCB can run (here: a timestamp clock of 0 Hz, a division by zero at the
    first RTT sample) is never the dataplane's crash: counted, given back with no state
    (UPLOAD_ERROR); the host then resets the connection."""
    r = Rig()
    st = host_export(r.host)
    cfg = list(st.config)
    cfg[[f.name for f in dc_fields(TcpConfig)].index("ts_hz")] = 0
    assert type(r.offload(st._replace(config=tuple(cfg)))[0][1]) is ChimneyAccepted
    r.host_frame(ChimneySend(1, KEY, 0, 0, b"x" * 100).frame(N_MAC, H_MAC))
    r.pump()
    r.advance(0.1)                                    # the peer's ACK: an RTT sample
    ups = r.msgs(ChimneyUpload)
    assert [u.reason for u in ups] == [control.UPLOAD_ERROR]
    assert control.decode_value(ups[0].body) == ()
    assert r.nic.chimney.counters["tcb_errors"] == 1 and len(r.nic.chimney) == 0



@settings(max_examples=150, deadline=None)
@given(data=hst.data())
def test_mutated_states_never_crash_the_nic(data):
    """Any field of the state replaced by any plain value: refused, run, or given back;
    never an exception out of the dataplane."""
    r = Rig()
    state = host_export(r.host)._asdict()
    plain = hst.one_of(hst.none(), hst.booleans(), hst.integers(-2, 2 ** 33),
                       hst.floats(allow_nan=True), hst.binary(max_size=4),
                       hst.sampled_from(["", "cubic", "reset"]),
                       hst.tuples(hst.integers(0, 5)))
    for _ in range(data.draw(hst.integers(1, 3))):
        name = data.draw(hst.sampled_from(TcbState._fields))
        if name == "config":
            cfg = list(state["config"])
            cfg[data.draw(hst.integers(0, len(cfg) - 1))] = data.draw(plain)
            state["config"] = tuple(cfg)
        else:
            state[name] = data.draw(plain)
    r.offload(TcbState(**state))
    r.peer.send(b"x" * 5000, r.now)
    r.pump()
    r.host_frame(ChimneySend(1, KEY, 0, 0, b"y" * 3000).frame(N_MAC, H_MAC))
    r.pump()
    for _ in range(10):
        r.now += 0.2
        r._route(r.nic.on_timer(r.now))
        r.pump()
    c = r.nic.chimney.counters
    assert c["offloads"] + c["refused_bad"] == 1
