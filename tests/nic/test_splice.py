"""nic.splice: rule table, in-place translation, differential checksums, teardown tracking.

Oracles: `wire.tcp.build_tcp_frame` (the whole expected frame, both checksums recomputed
over the payload), `parse_ipv4`/`parse_tcp(verify_checksum=True)`, scapy (independent
decoder and checksum computation), and four real `TcpConnection`s (client, proxy's two
TCBs, server) that must accept what the NIC relays.
"""

import random

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from acceltcp.nic import splice as sp
from acceltcp.nic.splice import (
    CLOSED, DROP, FIN_C, FIN_S, NONE, RESET, SpliceRule, SpliceSide, SpliceTable, TableFull,
    make_key, reverse_key, splice_rules, translate,
)
from acceltcp.tcp.config import TcpConfig
from acceltcp.tcp.connection import TcpConnection
from acceltcp.tcp.states import CLOSED as S_CLOSED, TIME_WAIT
from acceltcp.wire.checksum import internet_checksum, pseudo_header_sum
from acceltcp.wire.ipv4 import parse_ipv4
from acceltcp.wire.tcp import ACK, FIN, PSH, RST, build_tcp_frame, parse_tcp, tcp_options

M = 0xFFFFFFFF

u32 = st.one_of(
    st.integers(0, M),
    st.integers(2**32 - 70000, M),
    st.integers(0, 70000),
    st.sampled_from([0, 1, 2**31 - 1, 2**31, 2**32 - 2, M]),
)
mac = st.binary(min_size=6, max_size=6)
ip = st.binary(min_size=4, max_size=4)
port = st.integers(0, 0xFFFF)

MAC_C, MAC_PC, MAC_PS, MAC_S = (bytes([2, 0, 0, 0, 0, i]) for i in (1, 2, 3, 4))
IP_C, IP_P, IP_S = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), bytes([10, 0, 1, 3])


# ------------------------------------------------------------------------- helpers

def frame_of(eth_dst, eth_src, src, dst, sport, dport, seq, ack, flags=ACK, window=1000,
             payload=b"", ts=None, sack=(), ident=1, ttl=64, **opts):
    if ts is not None:
        opts["timestamps"] = ts
    if sack:
        opts["sack_blocks"] = sack
    options = tcp_options(**opts)
    return bytearray(build_tcp_frame(eth_dst, eth_src, src, dst, ident, sport, dport, seq,
                                     ack, flags, window, options, payload, ttl))


def parse(frame):
    ip4 = parse_ipv4(bytes(frame[14:]))                     # verifies the IP checksum
    seg = parse_tcp(bytes(frame[34:14 + ip4.total_length]), ip4.src, ip4.dst,
                    verify_checksum=True)
    return ip4, seg


def full_tcp_checksum(frame):
    """Independent: RFC 1071 over pseudo-header + TCP header (field zeroed) + payload."""
    tot = int.from_bytes(frame[16:18], "big")
    seg = bytearray(frame[34:14 + tot])
    seg[16:18] = b"\0\0"
    return internet_checksum(seg, pseudo_header_sum(frame[26:30], frame[30:34], 6,
                                                    len(seg)))


def full_ip_checksum(frame):
    hdr = bytearray(frame[14:34])
    hdr[10:12] = b"\0\0"
    return internet_checksum(hdr)


def pair_rules(key_a, out_a, macs_a, macs_b, dseq, dack, ts_a, ts_b, ws_a=(0, 0),
               ws_b=(0, 0)):
    """rule_a: key_a -> out_a; rule_b: reverse(out_a) -> reverse(key_a), consistent offsets."""
    ra = SpliceRule(key_a, macs_a[0], macs_a[1], out_a[0:4], out_a[4:8],
                    int.from_bytes(out_a[8:10], "big"), int.from_bytes(out_a[10:12], "big"),
                    dseq, dack, ts_a, *ws_a)
    kb, ob = reverse_key(out_a), reverse_key(key_a)
    rb = SpliceRule(kb, macs_b[0], macs_b[1], ob[0:4], ob[4:8],
                    int.from_bytes(ob[8:10], "big"), int.from_bytes(ob[10:12], "big"),
                    -dack, -dseq, ts_b, *ws_b)
    return ra, rb


@st.composite
def option_kw(draw):
    """kwargs for tcp_options: none, TS, TS+SACK, SACK only, or a slow-path layout."""
    kind = draw(st.sampled_from(["none", "ts", "ts_sack", "sack", "syn_like", "unknown"]))
    kw = {}
    if kind in ("ts", "ts_sack", "syn_like", "unknown"):
        kw["timestamps"] = (draw(u32), draw(u32))
    if kind == "ts_sack":
        kw["sack_blocks"] = tuple((draw(u32), draw(u32))
                                  for _ in range(draw(st.integers(0, 3))))
    if kind == "sack":
        kw["sack_blocks"] = tuple((draw(u32), draw(u32))
                                  for _ in range(draw(st.integers(1, 4))))
    if kind == "syn_like":
        kw.update(mss=draw(st.integers(0, 0xFFFF)), wscale=draw(st.integers(0, 14)),
                  sack_permitted=draw(st.booleans()))
    if kind == "unknown":
        kw["unknown"] = ((draw(st.sampled_from([30, 34, 200])),
                          draw(st.binary(max_size=10))),)
        if draw(st.booleans()):
            kw["sack_blocks"] = ((draw(u32), draw(u32)),)
    return kw


@st.composite
def scenarios(draw):
    key_a = draw(ip) + draw(ip) + draw(port).to_bytes(2, "big") + draw(port).to_bytes(2, "big")
    out_a = draw(ip) + draw(ip) + draw(port).to_bytes(2, "big") + draw(port).to_bytes(2, "big")
    assume(key_a != reverse_key(out_a))
    macs_a = (draw(mac), draw(mac))
    macs_b = (draw(mac), draw(mac))
    dseq, dack, ts_a, ts_b = draw(u32), draw(u32), draw(u32), draw(u32)
    ws = st.tuples(st.integers(0, 14), st.integers(0, 14))
    ws_a = draw(st.one_of(st.just((7, 7)), ws))
    ws_b = draw(st.one_of(st.just((7, 7)), ws))
    direction = draw(st.sampled_from("ab"))
    seq, ack = draw(u32), draw(u32)
    flags = draw(st.integers(0, 0xFF))
    window = draw(st.integers(0, 0xFFFF))
    payload = draw(st.one_of(st.binary(max_size=64), st.binary(min_size=1, max_size=1460),
                             st.just(bytes(1460))))
    return dict(key_a=key_a, out_a=out_a, macs_a=macs_a, macs_b=macs_b, dseq=dseq, dack=dack,
                ts_a=ts_a, ts_b=ts_b, ws_a=ws_a, ws_b=ws_b, direction=direction, seq=seq,
                ack=ack, flags=flags, window=window, payload=payload,
                opts=draw(option_kw()), ident=draw(st.integers(0, 0xFFFF)),
                ttl=draw(st.integers(1, 255)), pad=draw(st.sampled_from([0, 0, 6, 30])))


def build_case(s):
    """Install the scenario's splice; return (table, slot, frame, expected_frame, rule)."""
    ra, rb = pair_rules(s["key_a"], s["out_a"], s["macs_a"], s["macs_b"], s["dseq"],
                        s["dack"], s["ts_a"], s["ts_b"], s["ws_a"], s["ws_b"])
    table = SpliceTable(4)
    slot_a, slot_b = table.install(ra, rb)
    rule, other, slot = (ra, rb, slot_a) if s["direction"] == "a" else (rb, ra, slot_b)
    k = rule.key
    frame = frame_of(b"\xaa" * 6, b"\xbb" * 6, k[0:4], k[4:8], int.from_bytes(k[8:10], "big"),
                     int.from_bytes(k[10:12], "big"), s["seq"], s["ack"], s["flags"],
                     s["window"], s["payload"], ident=s["ident"], ttl=s["ttl"], **s["opts"])
    pad = bytes(range(7, 7 + s["pad"]))
    frame += pad
    # expected values, computed independently with plain modular arithmetic
    opts = dict(s["opts"])
    if "timestamps" in opts:
        tsv, tse = opts["timestamps"]
        # TSval rounded down to even (bit 0 is the cookie MARK, splice.py's docstring)
        opts["timestamps"] = ((tsv + rule.ts_shift) % 2**32 & ~1,
                              (tse - other.ts_shift) % 2**32)
    if "sack_blocks" in opts:
        opts["sack_blocks"] = tuple(((l + rule.ack_offset) % 2**32,
                                     (r + rule.ack_offset) % 2**32)
                                    for l, r in opts["sack_blocks"])
    win = s["window"]
    if rule.wscale_in != rule.wscale_out:
        win = min((win << rule.wscale_in) >> rule.wscale_out, 0xFFFF)
    expected = frame_of(rule.eth_dst, rule.eth_src, rule.ip_src, rule.ip_dst, rule.sport,
                        rule.dport, (s["seq"] + rule.seq_offset) % 2**32,
                        (s["ack"] + rule.ack_offset) % 2**32, s["flags"], win, s["payload"],
                        ident=s["ident"], ttl=s["ttl"], **opts) + pad
    return table, slot, frame, expected, rule


# ------------------------------------------------------------------ property tests

@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_translate_equals_full_rebuild(s):
    table, slot, frame, expected, rule = build_case(s)
    ev = translate(table, slot, frame, 1.0)
    assert ev != DROP
    # (a)+(b): byte-identical to a frame built from the expected field values, whose
    # checksums build_tcp_frame computed over header *and* payload.
    assert frame == expected
    # (b) again, against RFC 1071 over the translated bytes themselves
    assert int.from_bytes(frame[24:26], "big") == full_ip_checksum(frame)
    assert int.from_bytes(frame[50:52], "big") == full_tcp_checksum(frame)
    # (c) the codecs accept it, and the decoded fields are the expected ones
    ip4, seg = parse(frame)
    assert (ip4.src, ip4.dst, seg.src_port, seg.dst_port) == \
        (rule.ip_src, rule.ip_dst, rule.sport, rule.dport)
    assert seg.seq == (s["seq"] + rule.seq_offset) % 2**32
    assert seg.ack == (s["ack"] + rule.ack_offset) % 2**32
    assert bytes(seg.payload) == s["payload"]
    assert frame[0:6] == rule.eth_dst and frame[6:12] == rule.eth_src
    assert table.counters(slot) == (1, len(s["payload"]))


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.integers(1, 0xFFFE))
def test_bad_checksum_stays_bad(s, err):
    """Differential update preserves an incoming error: the receiver still drops it."""
    table, slot, frame, expected, _ = build_case(s)
    cs = int.from_bytes(frame[50:52], "big")
    frame[50:52] = ((cs + err) % 0xFFFF).to_bytes(2, "big")
    translate(table, slot, frame, 0.0)
    assert frame[:50] == expected[:50] and frame[52:] == expected[52:]
    with pytest.raises(ValueError):
        parse(frame)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_scapy_oracle(s):
    """An independent decoder and checksum implementation agrees."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    table, slot, frame, _, rule = build_case(s)
    translate(table, slot, frame, 0.0)
    pkt = Ether(bytes(frame))
    assert pkt[IP].src == ".".join(map(str, rule.ip_src))
    assert pkt[TCP].seq == (s["seq"] + rule.seq_offset) % 2**32
    assert pkt[TCP].ack == (s["ack"] + rule.ack_offset) % 2**32
    ts = dict((k, v) for k, v in pkt[TCP].options if k == "Timestamp")
    if "timestamps" in s["opts"]:
        tsv, tse = s["opts"]["timestamps"]
        assert ts["Timestamp"] == ((tsv + rule.ts_shift) % 2**32 & ~1,
                                   (tse + table.rule(slot)["tsecr_shift"]) % 2**32)
    ours_ip, ours_tcp = pkt[IP].chksum, pkt[TCP].chksum
    del pkt[IP].chksum
    del pkt[TCP].chksum
    again = Ether(bytes(pkt))
    assert (again[IP].chksum, again[TCP].chksum) == (ours_ip, ours_tcp)


# -------------------------------------------------------------- wrap-around edges

@pytest.mark.parametrize("delta", [1, 2, 0x10000, 0x7FFFFFFF, 0x80000000, M])
@pytest.mark.parametrize("where", [-2, -1, 0, 1])
def test_wraparound_boundary(delta, where):
    """x + Δ hits 2^32 exactly (x == 2^32 - Δ -> 0): the Figure 8 '>' in one's-complement
    negation, i.e. '>=' in two's complement; every 32-bit field takes the same rule."""
    x = (2**32 - delta + where) % 2**32
    key, out = make_key(IP_C, IP_P, 40000, 8080), make_key(IP_P, IP_S, 50000, 80)
    ra, rb = pair_rules(key, out, (MAC_S, MAC_PS), (MAC_C, MAC_PC), delta, delta, delta,
                        -delta)
    table = SpliceTable(2)
    slot, _ = table.install(ra, rb)
    frame = frame_of(MAC_PC, MAC_C, IP_C, IP_P, 40000, 8080, x, x, ACK | PSH, 100, b"xyz",
                     ts=(x, x), sack=((x, x), (x, 5)))
    translate(table, slot, frame, 0.0)
    _, seg = parse(frame)
    y = (x + delta) % 2**32
    assert (seg.seq, seg.ack, seg.tsval, seg.tsecr) == (y, y, y & ~1, y)
    assert seg.sack_blocks == ((y, y), (y, (5 + delta) % 2**32))


# ------------------------------------------------------------------ table behaviour

def simple_rules(i=0, **kw):
    c = SpliceSide(MAC_PC, IP_P, 8080, MAC_C, IP_C, 40000 + i, snd_nxt=1000, rcv_nxt=2000, **kw)
    s = SpliceSide(MAC_PS, IP_P, 50000 + i, MAC_S, IP_S, 80, snd_nxt=3000, rcv_nxt=4000, **kw)
    return splice_rules(c, s)


def test_table_full_lookup_remove():
    t = SpliceTable(4)
    assert t.capacity == 4 and len(t) == 0
    assert t.memory_bytes == 4 * sp.BYTES_PER_RULE and sp.BYTES_PER_RULE <= 96
    a0, b0 = t.install(*simple_rules(0))
    a1, b1 = t.install(*simple_rules(1))
    assert len(t) == 4 and len({a0, b0, a1, b1}) == 4
    with pytest.raises(TableFull):
        t.install(*simple_rules(2))
    ra, rb = simple_rules(1)
    assert t.lookup(ra.key) == a1 and t.lookup(bytearray(rb.key)) == b1
    assert t.pair(a1) == b1 and t.pair(b1) == a1
    rep = t.remove(b1)                                       # either slot removes the pair
    assert rep.client_key == ra.key and rep.server_key == rb.key
    assert t.lookup(ra.key) is None and t.lookup(rb.key) is None and len(t) == 2
    with pytest.raises(KeyError):
        t.remove(a1)
    assert t.install(*simple_rules(2))                       # slots are reused
    with pytest.raises(TableFull):
        t.install(*simple_rules(3))


def test_install_rejects_bad_pairs():
    t = SpliceTable(8)
    ra, rb = simple_rules()
    t.install(ra, rb)
    with pytest.raises(ValueError):
        t.install(ra, rb)                                    # already installed
    ra, rb = simple_rules(1)
    rb.ack_offset = (rb.ack_offset + 1) & M
    with pytest.raises(ValueError):
        t.install(ra, rb)                                    # offsets not inverse
    ra, rb = simple_rules(2)
    rb.sport += 1
    with pytest.raises(ValueError):
        t.install(ra, rb)                                    # not a pair
    ra, rb = simple_rules(3)
    ra.wscale_in = 15
    with pytest.raises(ValueError):
        t.install(ra, rb)
    c = SpliceSide(MAC_PC, IP_P, 8080, MAC_C, IP_C, 1, 0, 0, ts_ok=True)
    s = SpliceSide(MAC_PS, IP_P, 9, MAC_S, IP_S, 80, 0, 0, ts_ok=False)
    with pytest.raises(ValueError):
        splice_rules(c, s)
    assert len(t) == 2


def test_drop_untranslatable_frames_untouched():
    t = SpliceTable(2)
    slot, _ = t.install(*simple_rules())
    good = frame_of(MAC_PC, MAC_C, IP_C, IP_P, 40000, 8080, 2000, 1000, payload=b"hi")
    cases = [good[:40]]                                      # truncated
    f = bytearray(good); f[23] = 17; cases.append(f)         # UDP
    f = bytearray(good); f[12:14] = b"\x81\x00"; cases.append(f)   # VLAN tag
    f = bytearray(good); f[20] = 0x20; cases.append(f)       # MF fragment
    f = bytearray(good); f[14] = 0x46; cases.append(f)       # IP options
    f = bytearray(good); f[16:18] = (200).to_bytes(2, "big"); cases.append(f)   # too long
    bad_opt = frame_of(MAC_PC, MAC_C, IP_C, IP_P, 40000, 8080, 2000, 1000,
                       unknown=((30, b"ab"),))
    bad_opt[54 + 1] = 40                                     # option overruns the header
    cases.append(bad_opt)
    bad_ts = frame_of(MAC_PC, MAC_C, IP_C, IP_P, 40000, 8080, 2000, 1000, mss=1460,
                      timestamps=(1, 2))
    bad_ts[54 + 4 + 3] = 9                                   # TS length 9
    cases.append(bad_ts)
    for f in cases:
        before = bytes(f)
        assert translate(t, slot, f, 5.0) == DROP
        assert bytes(f) == before
    assert t.counters(slot) == (0, 0)


def hdr(frame):
    ip4, seg = parse(frame)
    return seg


def test_fin_rst_tracking_and_counters():
    t = SpliceTable(4)
    ra, rb = simple_rules()
    a, b = t.install(ra, rb, now=0.0)

    def from_c(seq, ack, flags, payload=b""):
        f = frame_of(MAC_PC, MAC_C, IP_C, IP_P, 40000, 8080, seq, ack, flags, 100, payload)
        return translate(t, a, f, 1.0), hdr(f)

    def from_s(seq, ack, flags, payload=b""):
        f = frame_of(MAC_PS, MAC_S, IP_S, IP_P, 80, 50000, seq, ack, flags, 100, payload)
        return translate(t, b, f, 2.0), hdr(f)

    # client data 2000.. -> server sees 3000..; server data 4000.. -> client sees 1000..
    ev, seg = from_c(2000, 1000, ACK | PSH, b"x" * 10)
    assert ev == NONE and (seg.seq, seg.ack) == (3000, 4000)
    ev, seg = from_s(4000, 3010, ACK | PSH, b"y" * 25)
    assert ev == NONE and (seg.seq, seg.ack) == (1000, 2010)
    assert from_c(2010, 1025, ACK | FIN, b"z" * 5)[0] == FIN_C        # FIN at 3015 (server)
    assert from_c(2010, 1025, ACK | FIN, b"z" * 5)[0] == NONE         # retransmission
    assert from_s(4025, 3015, ACK)[0] == NONE                         # does not cover FIN
    assert from_s(4025, 3016, ACK | FIN)[0] == FIN_S                  # acks it + own FIN
    assert t.state(a) & sp.ST_FIN_ACKED and not t.state(b) & sp.ST_FIN_ACKED
    assert from_c(2016, 1025, ACK)[0] == NONE                         # one short of FIN
    assert from_c(2016, 1026, ACK)[0] == CLOSED
    assert t.counters(a) == (5, 20) and t.counters(b) == (3, 25)
    rep = t.remove(a)
    assert (rep.packets_c, rep.bytes_c, rep.packets_s, rep.bytes_s) == (5, 20, 3, 25)
    assert rep.fin_c and rep.fin_s and not rep.reset

    # RST: in the peer's window -> RESET; blind RST far away -> forwarded, NONE
    a, b = t.install(*simple_rules())
    assert from_s(4000, 3000, ACK)[0] == NONE          # server acks 3000, win 100 << 0
    assert from_c(2000 + 5000, 0, RST)[0] == NONE      # translated seq 8000: outside
    assert not t.state(a) & sp.ST_RST
    assert from_c(2050, 0, RST)[0] == RESET            # 3050 in [3000, 3100)
    assert t.remove(b).reset


def test_rst_at_the_acked_fins_seq_ends_the_splice():
    """A backend that sent its FIN first, the client's FIN acked by it, and the client
    gone: the client's RST answers the held response with that response's ACK -- its
    own FIN's seq, one below the backend's last ACK. Linux in CLOSING takes it
    (tcp_reset_check); so does the NIC, but only once that FIN was acked."""
    t = SpliceTable(4)

    def from_c(seq, ack, flags):
        f = frame_of(MAC_PC, MAC_C, IP_C, IP_P, 40000, 8080, seq, ack, flags, 100)
        return translate(t, a, f, 1.0)

    def from_s(seq, ack, flags):
        f = frame_of(MAC_PS, MAC_S, IP_S, IP_P, 80, 50000, seq, ack, flags, 100)
        return translate(t, b, f, 1.0)

    a, b = t.install(*simple_rules())
    assert from_s(4000, 3000, ACK) == NONE
    assert from_c(1999, 0, RST) == NONE                # one below, no FIN: forwarded
    assert from_c(2000, 1000, ACK | FIN) == FIN_C      # the client's FIN at 3000
    assert from_c(1999, 0, RST) == NONE                # not acked yet: 2999 < 3000
    assert from_s(4000, 3001, ACK | FIN) == FIN_S      # acked (3001), the server's FIN
    assert from_c(1998, 0, RST) == NONE                # two below: forwarded
    assert from_c(2000, 0, RST) == RESET               # its FIN's seq: 3000 = 3001 - 1
    assert t.remove(a).reset


def test_installed_lists_each_splice_once_oldest_first():
    t = SpliceTable(6)
    a0, b0 = t.install(*simple_rules(0), now=2.0)
    a1, b1 = t.install(*simple_rules(1), now=1.0)
    got = t.installed()
    assert [(a["key"], b["key"]) for a, b in got] == [
        (simple_rules(1)[0].key, simple_rules(1)[1].key),
        (simple_rules(0)[0].key, simple_rules(0)[1].key)]
    assert all(not a["from_server"] and b["from_server"] for a, b in got)
    assert len(t.installed(limit=1)) == 1 and SpliceTable(2).installed() == []


def test_rst_accepted_before_any_ack_and_with_seed():
    t = SpliceTable(4)
    ra, rb = simple_rules()
    ra.last_ack = rb.last_ack = None                   # no seed: any RST counts
    a, b = t.install(ra, rb)
    f = frame_of(MAC_PC, MAC_C, IP_C, IP_P, 40000, 8080, 12345, 0, RST)
    assert translate(t, a, f, 0.0) == RESET
    t2 = SpliceTable(2)
    a, b = t2.install(*simple_rules(snd_wnd=1000))     # seeded from the TCBs
    f = frame_of(MAC_PC, MAC_C, IP_C, IP_P, 40000, 8080, 12345, 0, RST)
    assert translate(t2, a, f, 0.0) == NONE
    f = frame_of(MAC_PS, MAC_S, IP_S, IP_P, 80, 50000, 4000 + 999, 0, RST)
    assert translate(t2, b, f, 0.0) == RESET           # server seq 4999 -> 1999 < 1000+1000


def test_idle_expiry():
    t = SpliceTable(6)
    a0, b0 = t.install(*simple_rules(0), now=0.0)
    a1, b1 = t.install(*simple_rules(1), now=0.0)
    assert sorted(t.expired(4.0, 4.0)) == [a0, a1]
    assert t.expired(3.9, 4.0) == []
    f = frame_of(MAC_PS, MAC_S, IP_S, IP_P, 80, 50001, 4000, 3000, ACK)
    translate(t, b1, f, 5.0)
    assert t.expired(8.0, 4.0) == [a0]                 # splice 1 active at 5.0
    assert sorted(t.expired(9.0, 4.0)) == [a0, a1]
    t.remove(a0)
    assert t.expired(100.0, 4.0) == [a1]


# --------------------------------------- two connections: frames built by hand

def test_two_connection_scenario_hand_built():
    """C: client ISN near 2^32, proxy consumed a 100-byte request and answered 20 bytes;
    S: proxy sent a rewritten 150-byte request. Translated frames land exactly where each
    endpoint's TCB expects them."""
    c_isn, pc_isn = M - 40, 0x7FFFFFF0
    ps_isn, s_isn = M - 120, 123
    c_rcv_nxt = (c_isn + 1 + 100) & M                 # next client byte (wraps)
    c_snd_nxt = (pc_isn + 1 + 20) & M
    s_snd_nxt = (ps_isn + 1 + 150) & M                # wraps too
    s_rcv_nxt = (s_isn + 1) & M
    c = SpliceSide(MAC_PC, IP_P, 8080, MAC_C, IP_C, 40000, c_snd_nxt, c_rcv_nxt, 65535,
                   True, ts_now=5000, ts_recent=777_000, local_wscale=7, peer_wscale=7)
    s = SpliceSide(MAC_PS, IP_P, 50000, MAC_S, IP_S, 80, s_snd_nxt, s_rcv_nxt, 65535,
                   True, ts_now=M - 3, ts_recent=42, local_wscale=7, peer_wscale=7)
    t = SpliceTable(2)
    a, b = t.install(*splice_rules(c, s))
    # client -> (NIC) -> server: 300 bytes more, TS from the client's clock
    f = frame_of(MAC_PC, MAC_C, IP_C, IP_P, 40000, 8080, c_rcv_nxt, c_snd_nxt, ACK | PSH,
                 512, b"q" * 300, ts=(777_010, 5000))
    assert t.lookup(f[26:38]) == a
    assert translate(t, a, f, 0.0) == NONE
    assert f[0:6] == MAC_S and f[6:12] == MAC_PS
    ip4, seg = parse(f)
    assert (ip4.src, ip4.dst, seg.src_port, seg.dst_port) == (IP_P, IP_S, 50000, 80)
    assert seg.seq == s_snd_nxt                       # the server's RCV.NXT (all acked)
    assert seg.ack == s_rcv_nxt                       # the server's SND.NXT
    assert seg.tsval == (M - 3 + 10) & M              # >= server's ts_recent (PAWS ok)
    assert seg.tsecr == 42                            # the server's own clock again
    # server -> (NIC) -> client: response acks the 300 bytes
    f = frame_of(MAC_PS, MAC_S, IP_S, IP_P, 80, 50000, s_rcv_nxt, (s_snd_nxt + 300) & M,
                 ACK | PSH, 1000, b"r" * 1460, ts=(50, seg.tsval))
    assert t.lookup(f[26:38]) == b
    assert translate(t, b, f, 0.0) == NONE
    assert f[0:6] == MAC_C and f[6:12] == MAC_PC
    ip4, seg = parse(f)
    assert (ip4.src, ip4.dst, seg.src_port, seg.dst_port) == (IP_P, IP_C, 8080, 40000)
    assert seg.seq == c_snd_nxt                       # the client's RCV.NXT
    assert seg.ack == (c_rcv_nxt + 300) & M           # covers the client's 300 bytes
    assert seg.tsval == 5000 + 8                      # proxy-C clock, >= its last (5000)
    assert seg.tsecr == 777_010                       # the client's own TSval echoed
    assert t.counters(a) == (1, 300) and t.counters(b) == (1, 1460)


# ----------------------------- two connections: four real TCBs through the NIC

class World:
    """client <-> [proxy NIC: splice table | proxy TCBs pc, ps] <-> server."""

    def __init__(self, client_cfg, proxy_cfg, server_cfg, loss_seed=None):
        self.now = 0.0
        self.q = []
        self.rng = random.Random(loss_seed) if loss_seed is not None else None
        self.table = SpliceTable(8)
        self.events = []
        self.reports = []
        self.spliced = False
        self.macs = {}
        mk = self._mk
        self.client = mk("client", client_cfg, IP_C, 40000, IP_P, 8080, M - 3000, MAC_C, MAC_PC)
        self.pc = mk("pc", proxy_cfg, IP_P, 8080, IP_C, 40000, 0x12345678, MAC_PC, MAC_C)
        self.ps = mk("ps", proxy_cfg, IP_P, 50000, IP_S, 80, M - 100, MAC_PS, MAC_S)
        self.server = mk("server", server_cfg, IP_S, 80, IP_P, 50000, 0xDEADBEEF, MAC_S,
                         MAC_PS)
        self.by_key = {make_key(x.remote_ip, x.local_ip, x.remote_port, x.local_port): x
                       for x in (self.client, self.pc, self.ps, self.server)}
        self.translated = 0
        self.sack_frames = 0

    def _mk(self, name, cfg, lip, lport, rip, rport, iss, lmac, rmac):
        conn = TcpConnection(cfg, lip, lport, rip, rport, iss, self._output, 0.0)
        conn.owner = name
        self.macs[name] = (lmac, rmac)
        return conn

    def _output(self, conn, flags, seq, ack, window, options, payload):
        lmac, rmac = self.macs[conn.owner]
        f = build_tcp_frame(rmac, lmac, conn.local_ip, conn.remote_ip, 0, conn.local_port,
                            conn.remote_port, seq, ack, flags, window, options,
                            bytes(payload))
        self.q.append(f)

    def lossy(self):
        return self.rng is not None and self.spliced and self.rng.random() < 0.03

    def step(self):
        f = bytearray(self.q.pop(0))
        if self.lossy():
            return
        key = bytes(f[26:38])
        slot = self.table.lookup(key)
        if slot is not None:                                   # the NIC relays it
            ev = translate(self.table, slot, f, self.now)
            self.translated += 1
            if f[46] >> 4 > 8:                                 # options beyond TS: SACK
                self.sack_frames += 1
            assert ev != DROP
            if ev:
                self.events.append(ev)
            if ev in (CLOSED, RESET):
                self.reports.append(self.table.remove(slot))
            if self.lossy():
                return
            key = bytes(f[26:38])
        dst = self.by_key[key]
        if self.spliced:
            assert dst in (self.client, self.server), "a spliced frame reached the proxy"
        assert f[0:6] == self.macs[dst.owner][0]
        ip4, seg = parse(f)                                    # checksums verified
        dst.on_segment(seg, self.now)

    def pump(self, limit=200000):
        for _ in range(limit):
            if not self.q:
                return
            self.step()
        raise AssertionError("no quiescence")

    def run(self, dt, until=None):
        end = self.now + dt
        while True:
            self.pump()
            if until is not None and until():
                return True
            conns = (self.client, self.pc, self.ps, self.server)
            ds = [d for d in (c.next_deadline() for c in conns) if d is not None and d <= end]
            if not ds:
                break
            self.now = max(self.now, min(ds))
            for c in conns:
                d = c.next_deadline()
                if d is not None and d <= self.now:
                    c.on_timer(self.now)
        self.now = end
        self.pump()
        return until() if until else True

    def side(self, conn):
        assert conn.snd_una == conn.snd_max and not conn.sndbuf and not conn.rcvbuf
        lmac, rmac = self.macs[conn.owner]
        ts_now = (int(self.now * conn.config.ts_hz) + conn.ts_offset) & M
        return SpliceSide(lmac, conn.local_ip, conn.local_port, rmac, conn.remote_ip,
                          conn.remote_port, conn.snd_nxt, conn.rcv_nxt, conn.snd_wnd,
                          conn.ts_ok, ts_now, conn.ts_recent, conn.rcv_wscale,
                          conn.snd_wscale)


def open_proxy_world(client_cfg=None, proxy_cfg=None, server_cfg=None, loss_seed=None):
    w = World(client_cfg or TcpConfig(), proxy_cfg or TcpConfig(), server_cfg or TcpConfig(),
              loss_seed)
    w.client.connect(w.now)
    syn = w.q.pop(0)
    _, seg = parse(syn)
    w.pc.accept_syn(seg, w.now)
    w.run(0.1)
    request = b"GET /big HTTP/1.1\r\nHost: s\r\n\r\n"
    w.client.send(request, w.now)
    w.run(0.1)
    assert w.pc.recv() == request
    w.pc.send(b"HTTP/1.1 100 Continue\r\n\r\n", w.now)        # the proxy talks too
    w.ps.connect(w.now)
    syn = w.q.pop(0)
    _, seg = parse(syn)
    w.server.accept_syn(seg, w.now)
    w.run(0.1)
    rewritten = b"GET /big HTTP/1.1\r\nHost: s\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n"
    w.ps.send(rewritten, w.now)
    w.run(1.0)                                                # delayed ACKs fire
    assert w.server.recv() == rewritten
    assert w.client.recv() == b"HTTP/1.1 100 Continue\r\n\r\n"
    # nsplice: offsets from the proxy TCBs; the host drops them
    slots = w.table.install(*splice_rules(w.side(w.pc), w.side(w.ps)), now=w.now)
    w.spliced = True
    return w, slots


@pytest.mark.parametrize("client_ws,loss_seed", [(7, None), (2, None), (None, 11), (7, 5)])
def test_end_to_end_real_tcbs(client_ws, loss_seed):
    cfg_c = TcpConfig(wscale=client_ws, delayed_ack=0.01)
    w, (a, b) = open_proxy_world(cfg_c, TcpConfig(wscale=7), TcpConfig(wscale=9),
                                 loss_seed=loss_seed)
    rng = random.Random(1)
    up = rng.randbytes(60_000)
    down = rng.randbytes(300_000)
    got_c, got_s = bytearray(), bytearray()
    sent_c = sent_s = 0

    def progress():
        nonlocal sent_c, sent_s
        if sent_c < len(up):
            sent_c += w.client.send(up[sent_c:sent_c + 20000], w.now)
        if sent_s < len(down):
            sent_s += w.server.send(down[sent_s:sent_s + 50000], w.now)
        got_c.extend(w.client.recv())
        got_s.extend(w.server.recv())
        return len(got_c) == len(down) and len(got_s) == len(up)

    for _ in range(2000):
        if w.run(0.05, progress):
            break
    assert bytes(got_c) == down and bytes(got_s) == up
    assert w.client.error is None and w.server.error is None
    # orderly close through the NIC
    w.client.shutdown(w.now)
    w.run(0.5)
    assert FIN_C in w.events and w.server.eof
    w.server.close(w.now)
    assert w.run(30.0, lambda: bool(w.reports))
    assert w.events[-1] == CLOSED and FIN_S in w.events
    rep = w.reports[0]
    assert rep.fin_c and rep.fin_s and not rep.reset
    if loss_seed is None:
        assert rep.bytes_c == len(up) and rep.bytes_s == len(down)
    else:                                       # retransmissions pass the NIC again
        assert rep.bytes_c >= len(up) and rep.bytes_s >= len(down)
        assert w.sack_frames > 0                # SACK blocks were translated en route
    assert w.client.state == TIME_WAIT or w.client.state == S_CLOSED
    w.run(5.0)
    assert w.server.state == S_CLOSED and w.server.error is None
    assert len(w.table) == 0
    if loss_seed is None:
        assert w.client.retransmits == 0 and w.server.retransmits == 0
        assert w.client.paws_drops == 0 and w.server.paws_drops == 0


def test_end_to_end_reset():
    w, (a, b) = open_proxy_world()
    w.server.send(b"partial", w.now)
    w.run(0.2)
    assert w.client.recv() == b"partial"
    w.client.abort(w.now)
    w.run(0.2)
    assert w.events == [RESET] and w.reports[0].reset
    assert w.server.error == "reset"
    assert len(w.table) == 0
