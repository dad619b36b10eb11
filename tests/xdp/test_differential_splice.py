"""Differential, splice path: the corpus.  Every frame goes through nic/dataplane.py (with a
splice table) and through nic.bpf.c + splice_ctl.py; outputs must be byte-identical, and
counters, handed-over table, splice rules (every field, slots and per-rule state
included), the idle deadline and the StatusReport's splice fields equal
(splice_diff.SplicePair)."""

import pytest

from acceltcp.wire import control
from acceltcp.wire.checksum import internet_checksum, pseudo_header_sum
from acceltcp.wire.control import L4Rule, Listen, SpliceClosed, decode
from acceltcp.wire.tcp import build_tcp_frame, tcp_options

from .diff import HOST_MAC, NIC_MAC, PEER_MAC, fix_checksums
from .splice_diff import (
    CLIENT_IP, HOST, M, PROXY_IP, WIRE, Proxy, SplicePair, u32,
)

T0 = 50.0


@pytest.fixture
def pair(open_xdp):
    def make(capacity=64, **kw):
        return SplicePair(open_xdp, splice_capacity=capacity, **kw)
    return make


def installed(p, px, sid=1, now=T0):
    (port, f), = p.run(px.splice(sid), HOST, now, state=True)
    assert port == HOST and decode(f) == control.SpliceInstalled(sid)
    return f


def tcp_ok(frame):
    """The translated frame's IPv4 and TCP checksums verify (full recomputation)."""
    total = int.from_bytes(frame[16:18], "big")
    if internet_checksum(frame[14:34]) != 0:
        return False
    seg = frame[34:14 + total]
    return internet_checksum(seg, pseudo_header_sum(frame[26:30], frame[30:34], 6,
                                                   len(seg))) == 0


# -- translation ----------------------------------------------------------------------

WRAPS = [
    # (c_snd, c_rcv, s_snd, s_rcv): offsets that wrap seq, ack or both, and ones that do not
    (1000, 5000, 9000, 7000),
    (0xFFFFFF00, 0x10, 0x20, 0xFFFFFFF0),
    (0x10, 0xFFFFFFF0, 0xFFFFFF00, 0x20),
    (0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0),
    (0, 0, 0, 0),
    (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
]


@pytest.mark.parametrize("seqs", WRAPS)
def test_data_both_ways_seq_ack_ts_wrapping(pair, seqs):
    """Data each way with NOP NOP TS (the fast path) and without options, at sequence
    numbers and timestamps on both sides of 2**32; every output verifies."""
    p = pair()
    c_snd, c_rcv, s_snd, s_rcv = seqs
    px = Proxy(c_snd, c_rcv, s_snd, s_rcv, c_ts=(0xFFFFFFF0, 0x10), s_ts=(0x20, 0xFFFFFF00))
    installed(p, px)
    now = T0
    n = 0
    for delta in (0, 1, 0x7F, 0x100, 0x7FFFFFFF, 0x80000000, 0xFFFFFF00, 0xFFFFFFFF):
        for tsv, tse in ((1, 2), (0xFFFFFFFF, 0xFFFFFFFF), (0x80000000, 0x7FFFFFFF),
                         (0xFFFFFFE0, 0x30)):
            for make in (px.from_client, px.from_server):
                for ts in ((tsv, tse), None):
                    now += 0.001
                    f = make(delta, -delta, 0x18, b"x" * (delta % 7), ts=ts)
                    (port, out), = p.run(f, WIRE, now)
                    assert port == WIRE and tcp_ok(out) and out != f
                    n += 1
    p.check_state()
    r = p.xdp.splice.rules()
    assert sum(v["packets"] for v in r.values()) == n


def test_translated_frame_fields(pair):
    """One frame checked field by field against the rules (not only against Python)."""
    p = pair()
    px = Proxy(0xFFFFFF00, 0x10, 0x20, 0xFFFFFFF0)
    installed(p, px)
    f = px.from_client(5, 0, 0x18, b"hello", ts=(0xFFFFFFF0, 0x5))
    (port, out), = p.run(f, WIRE, T0 + 1, state=True)
    a = px.rule_a
    assert out[0:6] == a.eth_dst and out[6:12] == a.eth_src
    assert out[26:38] == a.out_key
    assert u32(out, 38) == (u32(f, 38) + a.seq_offset) & M
    assert u32(out, 42) == (u32(f, 42) + a.ack_offset) & M
    assert u32(out, 58) == (0xFFFFFFF0 + a.ts_shift) & M
    assert u32(out, 62) == (0x5 - px.rule_b.ts_shift) & M
    assert out[66:] == f[66:] and tcp_ok(out)


SACKS = [
    tcp_options(timestamps=(1, 2), sack_blocks=((0xFFFFFFF0, 0x10),)),
    tcp_options(timestamps=(1, 2), sack_blocks=((1, 2), (3, 4), (0xFFFFFFFF, 0))),
    tcp_options(sack_blocks=((1, 2), (3, 4), (5, 6), (7, 8))),
    # TS not first, TS twice, MSS/WS on an established frame, unknown kinds, EOL + junk
    b"\x02\x04\x05\xb4" + b"\x08\x0a" + bytes(range(8)) + b"\x01\x01",
    b"\x08\x0a" + b"\xff" * 8 + b"\x08\x0a" + b"\x00" * 8,
    b"\x01\x03\x03\x07" + b"\x01\x01\x08\x0a" + b"\x80" * 8,
    b"\x1e\x06abcd" + b"\x01\x01\x05\x0a" + b"\xff" * 8 + b"\x00\x00",
    b"\x01\x00\x05\x03\x08\x0a\x00\x00",                      # EOL: the rest is padding
    b"\x05\x0a" + b"\x80\x00\x00\x00" * 2 + b"\x05\x0a" + b"\x7f" * 8
    + b"\x05\x12" + b"\x01" * 16 + b"\x00\x00",
    b"\x01" * 40,
]
BAD_OPTIONS = [
    b"\x08\x08" + bytes(6),            # TS length
    b"\x05\x06" + bytes(6),            # SACK shorter than one block
    b"\x05\x0b" + bytes(10),           # SACK not 2 + 8n
    b"\x01\x01\x01\x02",               # kind without room for a length
    b"\x02\x01\x00\x00",               # length < 2
    b"\x03\x09\x00\x00",               # overrun
    b"\x08\x0a" + bytes(8) + b"\x05\x0a" + bytes(6) + b"\x00" * 4,   # SACK overruns
]


@pytest.mark.parametrize("opts", SACKS + BAD_OPTIONS)
def test_option_layouts(pair, opts):
    """The option walk: SACK edges shifted by ΔACK, TS wherever it is, everything else
    verbatim; a malformed option: dropped untouched (drop_splice_untranslatable)."""
    p = pair()
    px = Proxy(0xFFFFFF00, 0x10, 0x20, 0xFFFFFFF0)
    installed(p, px)
    opts = opts + bytes(-len(opts) % 4)
    for make, port in ((px.from_client, WIRE), (px.from_server, WIRE),
                       (px.from_client, HOST)):
        out = p.run(make(0, 0, 0x10, b"", options=opts), port, T0 + 1, state=True)
        if opts in BAD_OPTIONS:
            assert out == []
        else:
            assert tcp_ok(out[0][1])
    bad = p.nic.counters.get("drop_splice_untranslatable", 0)
    assert bad == (3 if opts in BAD_OPTIONS else 0)


@pytest.mark.parametrize("ws", [(7, 7), (0, 14), (14, 0), (2, 9), (9, 2), (14, 14), (0, 0)])
def test_window_scaling(pair, ws):
    """wscale_in != wscale_out: the window is rescaled (rounded down, clamped to 0xFFFF)
    with a 16-bit differential update; equal shifts leave it."""
    p = pair()
    px = Proxy(c_ws=ws, s_ws=(ws[1], ws[0]))
    installed(p, px)
    for w in (0, 1, 2, 127, 128, 1000, 0x7FFF, 0xFFFF):
        for make in (px.from_client, px.from_server):
            (port, out), = p.run(make(0, 0, 0x10, b"", window=w, ts=(5, 6)), WIRE, T0)
            assert tcp_ok(out)
    p.check_state()


def test_no_timestamps(pair):
    p = pair()
    px = Proxy(ts=False)
    installed(p, px)
    for make in (px.from_client, px.from_server):
        (port, out), = p.run(make(0, 0, 0x18, b"abc"), WIRE, T0, state=True)
        assert tcp_ok(out)


# -- the end of a splice ---------------------------------------------------------------

def closed(frames):
    ends = [decode(f) for port, f in frames if port == HOST]
    assert all(type(m) is SpliceClosed for m in ends)
    return ends


@pytest.mark.parametrize("first", ["client", "server"])
def test_data_fin_each_way_then_closed(pair, first):
    """Data and FIN each way, the FINs acknowledged: the frame carrying the last such ACK
    goes out and the 0x090D report (both FINs, counts, duration) goes to the host."""
    p = pair()
    p.run(Listen(PROXY_IP, 1, 1460, 7, True, True).frame(NIC_MAC, HOST_MAC), HOST, 0.0)
    px = Proxy(0xFFFFFFF0, 0xFFFFFFF8, 0xFFFFFFFA, 0xFFFFFFFC)
    installed(p, px, sid=77, now=T0)
    c, s = px.from_client, px.from_server
    if first == "server":
        c, s = s, c
    now = T0
    assert closed(p.run(c(0, 0, 0x18, b"a" * 100, ts=(1, 2)), WIRE, now := now + 1)) == []
    assert closed(p.run(s(0, 100, 0x18, b"b" * 30, ts=(3, 4)), WIRE, now := now + 1)) == []
    assert closed(p.run(c(100, 30, 0x11, b"", ts=(5, 6)), WIRE, now := now + 1)) == []  # FIN
    assert closed(p.run(s(30, 101, 0x11, b"", ts=(7, 8)), WIRE, now := now + 1)) == []  # FIN+ACK
    p.check_state()
    out = p.run(c(101, 31, 0x10, b"", ts=(9, 10)), WIRE, now := now + 1.5)     # last ACK
    assert [port for port, _ in out] == [WIRE, HOST]
    (m,) = closed(out)
    assert m.splice_id == 77 and m.reason == control.SPLICE_END_FIN
    assert m.fin_c and m.fin_s and m.duration_ms == 5500
    assert (m.client_key, m.server_key) == (px.rule_a.key, px.rule_b.key)
    pc, ps = (3, 2) if first == "client" else (2, 3)
    assert (m.packets_c, m.packets_s) == (pc, ps)
    assert out[1][1][:12] == HOST_MAC + NIC_MAC
    p.check_state()
    # the rules are gone: the next frame on the tuple is an ordinary one (to the host)
    assert p.run(c(101, 31, 0x10, b"", ts=(9, 10)), WIRE, now, state=True) == \
        [(HOST, c(101, 31, 0x10, b"", ts=(9, 10)))]
    assert p.nic.counters["splices_closed"] == 1


@pytest.mark.parametrize("server_tsval", [0x301, 0x302, 0xFFFFFFFF])
def test_a_straggler_after_the_end_goes_to_the_host_not_to_the_cookie_check(
        pair, server_tsval):
    """Every TSval the splice sends has bit 0 (the cookie MARK) clear, as the host's own:
    so a client segment that crosses the last ACK and arrives after the rules are gone
    (a duplicate ACK echoing the server's latest TSval) goes up to the host as an
    ordinary segment on the offloaded listener's port, never as a failed cookie (dropped,
    drop_cookie_bad)."""
    p = pair()
    p.run(Listen(PROXY_IP, 8080, 1460, 7, True, True).frame(NIC_MAC, HOST_MAC), HOST, 0.0)
    px = Proxy(s_ts=(server_tsval, 400))
    installed(p, px)
    c, s = px.from_client, px.from_server
    now = T0
    (_, out), = p.run(s(0, 0, 0x18, b"b" * 30, ts=(server_tsval, 4)), WIRE, now := now + 1)
    echo = u32(out, 58)                                     # what the client got
    assert echo & 1 == 0 and tcp_ok(out)
    p.run(c(0, 30, 0x11, b"", ts=(5, echo)), WIRE, now := now + 1)          # FIN
    (_, out), = p.run(s(30, 1, 0x11, b"", ts=((server_tsval + 1) & M, 6)), WIRE, now := now + 1)
    echo = u32(out, 58)
    assert echo & 1 == 0
    (_, last), (_, end) = p.run(c(1, 31, 0x10, b"", ts=(7, echo)), WIRE, now := now + 1)
    assert closed([(HOST, end)])[0].reason == control.SPLICE_END_FIN
    straggler = c(1, 31, 0x10, b"", ts=(7, echo), ident=2)
    assert p.run(straggler, WIRE, now, state=True) == [(HOST, straggler)]
    assert p.nic.counters["cookie_ack_bad"] == 0 and p.nic.counters["drops"] == 0


@pytest.mark.parametrize("how", ["report_lost", "end_missed"])
def test_an_end_without_a_report_is_reported_by_the_control_side(pair, how):
    """XDP only (the specification has no ring). A splice whose rules say it ended
    (both FINs acknowledged) but whose report never came -- the ring refused it
    (emulated: the record read and thrown away), or no program saw the end (emulated:
    the FIN_ACKED bits written into both rules, as two CPUs acknowledging each other's
    FIN at once leave them) -- is ended and reported by the control side's sweep one
    sweep later: the same SpliceClosed, slots and keys free, counted; never twice."""
    from acceltcp.nic import splice as sp
    from acceltcp.nic.xdp.splice_ctl import RULE
    p = pair()
    px = Proxy()
    installed(p, px, sid=9)
    x, ctl = p.xdp, p.xdp.splice
    c, s = px.from_client, px.from_server
    now = T0
    if how == "report_lost":
        x.process(c(0, 0, 0x11, ts=(1, 2)), WIRE, now := now + 0.1)           # FIN
        records = ctl._reports.records
        ctl._reports.records = lambda: (records(), [])[1]           # the ring lost it
        x.process(s(0, 1, 0x11, ts=(3, 4)), WIRE, now := now + 0.1)     # FIN+ACK
        x.process(c(1, 1, 0x10, ts=(5, 6)), WIRE, now := now + 0.1)           # last ACK
        ctl._reports.records = records
        assert x.counters["splices_closed"] == 1
    else:
        for slot in (0, 1):
            v = list(RULE.unpack(ctl._rules.lookup(slot.to_bytes(4, "little"))))
            v[13] |= sp.ST_FIN | sp.ST_FIN_ACKED
            ctl._rules.update(slot.to_bytes(4, "little"), RULE.pack(*v))
    assert len(ctl.rules()) == (0 if how == "report_lost" else 2)
    ends = []
    for _ in range(3):
        now = max(now + 1.0, x.next_deadline() or now)
        ends += closed(x.on_timer(now))
    (m,) = ends
    assert m.splice_id == 9 and m.reason == control.SPLICE_END_FIN and m.fin_c and m.fin_s
    assert ctl.rules() == {} and x.status_report().splice_rules == 0
    counted = "splice_report_recovered" if how == "report_lost" else "splice_end_missed"
    assert x.counters[counted] == 1 and x.counters["splices_closed"] == 1
    assert len(ctl._free) == ctl.capacity                      # both slots back


def test_fin_not_acknowledged_is_no_end(pair):
    p = pair()
    px = Proxy()
    installed(p, px)
    p.run(px.from_client(0, 0, 0x11, ts=(1, 2)), WIRE, T0)          # FIN from the client
    p.run(px.from_server(0, 0, 0x10, ts=(1, 2)), WIRE, T0)          # ack below the FIN
    p.run(px.from_server(0, 0, 0x11, ts=(1, 2)), WIRE, T0)          # server FIN, still below
    p.run(px.from_client(1, 0, 0x10, ts=(1, 2)), WIRE, T0)          # ack below the FIN
    p.run(px.from_client(1, 1, 0x10, ts=(1, 2)), WIRE, T0)          # client acks it
    assert len(p.nic.splices) == 2
    out = p.run(px.from_server(1, 1, 0x10, ts=(1, 2)), WIRE, T0, state=True)
    assert len(out) == 2 and len(p.nic.splices) == 0


@pytest.mark.parametrize("side", ["client", "server"])
@pytest.mark.parametrize("where", ["in", "edge", "below", "above", "unseeded"])
def test_rst(pair, side, where):
    """An RST inside [peer's last ACK, + its window) ends the splice (reason: who sent
    it); outside it is forwarded and the splice stays (RFC 5961: the endpoint decides).
    Without a seed (last_ack None) and no ACK seen: any RST is accepted."""
    p = pair()
    px = Proxy(c_wnd=1000, s_wnd=2000)
    a, b = px.rule_a, px.rule_b
    if where == "unseeded":
        a = L4Rule.from_rule(a)
        b = L4Rule.from_rule(b)
        a.last_ack = b.last_ack = None
    p.run(px.splice(3, a, b), HOST, T0, state=True)
    make = px.from_client if side == "client" else px.from_server
    # the peer's window in bytes: the seed, scaled by nothing (snd_wnd is in bytes)
    wnd = 2000 if side == "client" else 1000
    delta = {"in": 10, "edge": wnd - 1, "below": -1, "above": wnd, "unseeded": 12345}[where]
    out = p.run(make(delta, 0, 0x04), WIRE, T0 + 2, state=True)
    if where in ("in", "edge", "unseeded"):
        (m,) = closed(out)
        assert m.reason == (control.SPLICE_END_RESET_CLIENT if side == "client"
                            else control.SPLICE_END_RESET_SERVER)
    else:
        assert closed(out) == [] and len(p.nic.splices) == 2


@pytest.mark.parametrize("acked", [False, True])
def test_rst_at_the_fins_seq(pair, acked):
    """The client's FIN, the server's ACK of it (or not), then an RST at that FIN's seq
    (one below the server's last ACK): accepted only once the FIN was acknowledged
    (translate's docstring)."""
    p = pair()
    px = Proxy()
    installed(p, px)
    p.run(px.from_client(0, 0, 0x11, ts=(1, 2)), WIRE, T0)          # FIN at client seq 0
    p.run(px.from_server(0, 1 if acked else 0, 0x10, ts=(1, 2)), WIRE, T0)
    out = p.run(px.from_client(0 if acked else -1, 0, 0x04), WIRE, T0, state=True)
    assert len(closed(out)) == (1 if acked else 0)


def test_rst_after_acks_uses_latest_window(pair):
    p = pair()
    px = Proxy(c_ws=(3, 0), s_ws=(0, 3))
    installed(p, px)
    p.run(px.from_server(0, 50, 0x10, window=100, ts=(1, 2)), WIRE, T0)   # wnd 100 << 3
    out = p.run(px.from_client(50 + 799, 0, 0x04), WIRE, T0, state=True)
    assert len(closed(out)) == 1


# -- the host flush, refusals, handed-over entries ----------------------------------------

def test_host_flush(pair):
    """Frames the host held while installing, written on the host port: translated and
    sent to the wire (splice_flushed), also the FIN/ACK ending the splice."""
    p = pair()
    px = Proxy()
    installed(p, px)
    out = p.run(px.from_client(0, 0, 0x18, b"held", ts=(1, 2)), HOST, T0, state=True)
    assert out[0][0] == WIRE and tcp_ok(out[0][1])
    p.run(px.from_server(0, 4, 0x11, b"", ts=(1, 2)), HOST, T0, state=True)
    p.run(px.from_client(4, 1, 0x11, b"", ts=(1, 2)), HOST, T0, state=True)
    out = p.run(px.from_server(1, 5, 0x10, b"", ts=(1, 2)), HOST, T0 + 3, state=True)
    assert [port for port, _ in out] == [WIRE, HOST]
    assert p.nic.counters["splice_flushed"] == 4
    # the proxy's own frames on the reverse tuples are not rule keys: plain passthrough
    f = build_tcp_frame(PEER_MAC, NIC_MAC, PROXY_IP, CLIENT_IP, 1, 8080,
                        40000, 1, 2, 0x10, 100, b"", b"")
    assert p.run(f, HOST, T0, state=True) == [(WIRE, f)]


def test_refusals(pair):
    p = pair(capacity=4)
    px = Proxy()
    installed(p, px, sid=1)
    # duplicate: either key already installed
    for sid in (2, 3):
        (port, f), = p.run(px.splice(sid), HOST, T0, state=True)
        assert decode(f) == control.SpliceRefused(sid, control.SPLICE_REFUSED_DUPLICATE)
    # bad rules: not a pair, offsets inconsistent, the same key twice
    a, b = px.rule_a, px.rule_b
    bad_pair = L4Rule.from_rule(b)
    bad_pair.sport += 1
    bad_off = L4Rule.from_rule(b)
    bad_off.seq_offset += 1
    for sid, (ra, rb) in enumerate(((a, bad_pair), (a, bad_off), (a, a)), 10):
        (port, f), = p.run(px.splice(sid, ra, rb), HOST, T0, state=True)
        assert decode(f).reason == control.SPLICE_REFUSED_BAD_RULE
    # full: capacity 4 rules = two splices
    px2 = Proxy(cport=40001, pport=8081, pport_s=50081)
    installed(p, px2, sid=20)
    px3 = Proxy(cport=40002, pport=8082, pport_s=50082)
    (port, f), = p.run(px3.splice(21), HOST, T0, state=True)
    assert decode(f).reason == control.SPLICE_REFUSED_TABLE_FULL
    c = p.nic.counters
    assert (c["refused_splice"], c["refused_splice_dup"], c["refused_splice_bad"],
            c["refused_splice_full"]) == (6, 2, 3, 1)
    # after a close the slots are reused (the same slots as NicDataplane's)
    p.run(px.from_client(0, 0, 0x04), WIRE, T0, state=True)
    installed(p, px3, sid=22)
    p.status(T0)


def test_no_table_refuses(pair):
    p = pair(capacity=0)
    (port, f), = p.run(Proxy().splice(5), HOST, T0, state=True)
    assert decode(f).reason == control.SPLICE_REFUSED_TABLE_FULL


def test_capacity_one_is_refused_like_the_table(open_xdp):
    from acceltcp.nic.dataplane import NicDataplane
    with pytest.raises(ValueError):
        NicDataplane(NIC_MAC, splice_capacity=1)
    with pytest.raises(ValueError):
        open_xdp(NIC_MAC, splice_capacity=1)


def test_install_discards_handed_over_entries(pair):
    """The handed-over table's entries for both keys go on install (handed_removed)."""
    p = pair()
    px = Proxy()
    a, b = px.rule_a, px.rule_b
    for key in (a.key, b.key):
        p.run(Listen(key[4:8], int.from_bytes(key[10:12], "big"), 1460, 7, True, True)
              .frame(NIC_MAC, HOST_MAC), HOST, T0)
        # the host's own SYN-ACK from the listener: the flow enters the table (origin HOST)
        f = build_tcp_frame(PEER_MAC, NIC_MAC, key[4:8], key[0:4], 1,
                            int.from_bytes(key[10:12], "big"),
                            int.from_bytes(key[8:10], "big"), 1, 2, 0x12, 100, b"", b"")
        p.run(f, HOST, T0, state=True)
    assert set(p.xdp.handed_entries()) == {a.key, b.key}
    installed(p, px)
    assert p.xdp.handed_entries() == {} and p.nic.counters["handed_removed"] == 2


# -- malformed frames on a spliced tuple ---------------------------------------------------

def mutations(f):
    """Frames carrying the spliced 4-tuple that translate() must refuse (or that the wire
    port's IPv4 checks send up first)."""
    f = bytes(f)
    out = []
    b = bytearray(f)
    b[14] = 0x46                                    # IP options
    out.append(bytes(b))
    out.append(fix_checksums(bytes(b)))
    for frag in (b"\x20\x00", b"\x00\x01", b"\x40\x01"):
        b = bytearray(f)
        b[20:22] = frag
        out.append(fix_checksums(bytes(b)))
    b = bytearray(f)
    b[23] = 17                                      # UDP
    out.append(fix_checksums(bytes(b)))
    b = bytearray(f)
    b[12:14] = b"\x86\xdd"                          # not IPv4 (the key bytes stay)
    out.append(bytes(b))
    for doff in (0, 4, 15):                         # data offset < 20, > the segment
        b = bytearray(f)
        b[46] = doff << 4 | (b[46] & 15)
        out.append(fix_checksums(bytes(b)))
    for total in (40, 39, 24, len(f) - 13, len(f) - 14 + 1):   # IP total length
        b = bytearray(f)
        b[16:18] = total.to_bytes(2, "big")
        out.append(fix_checksums(bytes(b)))
    out.append(f[:38])                              # just the key
    out.append(f[:53])
    out.append(f[:54])
    out.append(f + bytes(20))                       # Ethernet padding: translated
    b = bytearray(f)
    b[24] ^= 0xFF                                   # bad IP checksum (host port: translated)
    out.append(bytes(b))
    b = bytearray(f)
    b[50] ^= 0x55                                   # bad TCP checksum: stays bad by as much
    out.append(bytes(b))
    b = bytearray(f)
    b[24:26] = b"\xff\xff"                          # the -0 encoding of a checksum
    out.append(bytes(b))
    return out


@pytest.mark.parametrize("port", [WIRE, HOST])
def test_malformed_on_spliced_tuple(pair, port):
    p = pair()
    px = Proxy()
    installed(p, px)
    n = 0
    for base in (px.from_client(0, 0, 0x18, b"data", ts=(1, 2)),
                 px.from_server(0, 0, 0x10, b"", options=tcp_options(
                     timestamps=(1, 2), sack_blocks=((1, 2),))),
                 px.from_client(0, 0, 0x10, b"")):
        for f in mutations(base):
            if len(f) >= 14:
                p.run(f, port, T0, state=True)
                n += 1
    assert n > 60 and p.nic.counters.get("drop_splice_untranslatable", 0) > 10


# -- idle sweep and status ------------------------------------------------------------------

def test_idle_sweep(pair):
    """Two splices, one kept busy from either side: the other is removed after `idle`
    seconds with SPLICE_END_IDLE; the sweep runs every min(idle, 1 s) while splices exist
    and stops when none is left."""
    p = pair(splice_idle=5.0)
    busy, idle = Proxy(), Proxy(cport=41000, pport=8090, pport_s=50090)
    installed(p, busy, sid=1, now=10.0)
    installed(p, idle, sid=2, now=10.5)
    p.run(idle.from_client(0, 0, 0x18, b"x", ts=(1, 2)), WIRE, 11.0, state=True)
    now = 10.0
    ends = []
    while now < 40.0:
        d = p.nic.next_deadline()
        assert d == p.xdp.next_deadline()
        if d is None:
            break
        now = d
        if now < 20:
            p.run(busy.from_server(0, 0, 0x10, ts=(1, 2)) if int(now) % 2 else
                  busy.from_client(0, 0, 0x10, ts=(1, 2)), WIRE, now)
        ends += closed(p.timer(now))
        p.check_state()
    assert [(m.splice_id, m.reason) for m in ends] == [
        (2, control.SPLICE_END_IDLE), (1, control.SPLICE_END_IDLE)]
    assert ends[0].packets_c == 1 and ends[0].duration_ms == 5500
    assert p.nic.next_deadline() is None and p.nic.counters["splices_closed"] == 2
    p.status(now)


def test_status_report_bytes(pair):
    p = pair(capacity=8)
    installed(p, Proxy())
    (port, f), = p.status(T0)
    m = decode(f)
    assert (m.splice_rules, m.splice_capacity) == (2, 8)


def test_reset_empties_the_table(pair):
    p = pair()
    px = Proxy()
    installed(p, px)
    p.run(px.from_client(0, 0, 0x18, b"x", ts=(1, 2)), WIRE, T0, state=True)
    p.reset()
    p.check_state()
    assert p.xdp.splice.rules() == {}
    installed(p, px)


@pytest.mark.parametrize("d, acked", [(1, True), (0x80000000, True), (0x80000001, False),
                                      (0, False), (0xFFFFFFFF, False)])
def test_fin_ack_boundary(pair, d, acked):
    """An ACK covers a FIN when ack - fin_ack is in [0, 2**31) (sequence space, RFC 9293
    §3.4): the both-FINs end happens or not at the edges."""
    p = pair()
    px = Proxy()
    installed(p, px)
    p.run(px.from_client(0, 0, 0x11, ts=(1, 2)), WIRE, T0)           # FIN: fin_ack = +1
    p.run(px.from_server(0, 1, 0x11, ts=(1, 2)), WIRE, T0)           # FIN, acks the client's
    out = p.run(px.from_client(1, d, 0x10, ts=(1, 2)), WIRE, T0, state=True)
    assert (len(out) == 2) == acked


def test_live_control_side_without_per_frame_calls(open_xdp):
    """Live, the programs run without before_frame/after_frame around each frame: a
    splice a program ended is reported (and its slots freed) by the next Splice request
    or timer, before the request's own answer; on_timer writes the `now` the programs
    stamp as last activity."""
    x = open_xdp(NIC_MAC, splice_capacity=2, teardown_capacity=0, splice_idle=5.0)
    one, two = Proxy(), Proxy(cport=41000, pport=8090, pport_s=50090)
    assert decode(x.control_frame(one.splice(1), 10.0)[0][1]) == control.SpliceInstalled(1)
    x.on_timer(12.0)                                   # writes now = 12.0
    verdict, out, _ = x._wire.test_run(one.from_client(0, 0, 0x18, b"x", ts=(1, 2)))
    assert out[26:38] == one.rule_a.out_key
    assert x.splice.rules()[one.rule_a.key]["last_active"] == 12.0
    verdict, out, _ = x._wire.test_run(one.from_server(0, 0, 0x04))   # acceptable RST
    assert x.splice.rules() == {}
    res = x.control_frame(two.splice(2), 13.0)         # the table is full until drained
    assert [decode(f) for _, f in res][1:] == [control.SpliceInstalled(2)]
    m = decode(res[0][1])
    assert type(m) is SpliceClosed and m.splice_id == 1 and m.duration_ms == 3000
    assert m.reason == control.SPLICE_END_RESET_SERVER and m.packets_c == 1
    verdict, out, _ = x._wire.test_run(two.from_client(0, 0, 0x04))
    (port, f), = x.on_timer(14.0)                      # the timer drains too
    assert decode(f).splice_id == 2 and x.splice.status()["splice_rules"] == 0
