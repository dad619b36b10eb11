"""TCP codec: options layouts, ours <-> scapy oracle, fast paths, malformed segments."""

import struct

import pytest
from hypothesis import given, settings, strategies as st
from scapy.all import IP, TCP, Ether, Raw, raw

from acceltcp.wire import tcp as T
from acceltcp.wire.checksum import checksum_update16, checksum_update32
from acceltcp.wire.ethernet import ETH_HLEN, ethernet_header, mac_to_str
from acceltcp.wire.ipv4 import ipv4_header, ip_to_str, parse_ipv4
from acceltcp.wire.errors import WireError
from acceltcp.wire.tcp import build_tcp, build_tcp_frame, parse_tcp, tcp_options

from .strategies import (
    OPAQUE_KINDS, ip_addr, mac_addr, option_sets, payloads, tcp_headers, u16, u32, u8)

SETTINGS = settings(max_examples=300, deadline=None)
SRC, DST = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
MAC1, MAC2 = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


# ---- tcp_options: Linux layouts -----------------------------------------------------------

def H(s):
    return bytes.fromhex(s.replace(" ", ""))


def test_layout_linux_syn():
    assert tcp_options(mss=1460, sack_permitted=True, timestamps=(1, 0), wscale=7) == \
        H("020405b4 0402080a 00000001 00000000 01030307")


def test_layout_syn_without_ts():
    assert tcp_options(mss=1460, sack_permitted=True, wscale=7) == H("020405b4 01010402 01030307")
    assert tcp_options(mss=536) == H("02040218")


def test_layout_ts_only_and_empty():
    assert tcp_options() == b""
    assert tcp_options(timestamps=(0xFFFFFFFF, 2)) == H("0101080a ffffffff 00000002")


def test_layout_ts_and_sack_blocks():
    assert tcp_options(timestamps=(5, 6), sack_blocks=((1, 2), (3, 4))) == \
        H("0101080a 00000005 00000006 01010512 00000001 00000002 00000003 00000004")
    assert len(tcp_options(timestamps=(5, 6), sack_blocks=((1, 2),) * 3)) == 40
    assert len(tcp_options(sack_blocks=((1, 2),) * 4)) == 36


def test_layout_unknown_padded_with_eol():
    assert tcp_options(unknown=((30, b"\x01"),)) == H("1e030100")
    assert tcp_options(mss=1, unknown=((200, b""),)) == H("02040001 c8020000")


@pytest.mark.parametrize("kw", [
    dict(timestamps=(1, 2), sack_blocks=((1, 2),) * 4),        # 48 bytes: caller must drop one
    dict(sack_blocks=((1, 2),) * 5),
    dict(mss=1460, timestamps=(1, 2), unknown=((99, b"x" * 23),)),
    dict(mss=70000), dict(wscale=256), dict(timestamps=(2**32, 0)),
    dict(sack_blocks=((-1, 0),)), dict(unknown=((1, b""),)), dict(unknown=((0, b"ab"),)),
])
def test_options_value_error(kw):
    with pytest.raises(ValueError):
        tcp_options(**kw)


# ---- ours -> scapy --------------------------------------------------------------------

def expected_scapy_options(kw):
    out = []
    if "mss" in kw:
        out.append(("MSS", kw["mss"]))
    if kw.get("sack_permitted"):
        out.append(("SAckOK", b""))
    if "timestamps" in kw:
        out.append(("Timestamp", tuple(kw["timestamps"])))
    if "wscale" in kw:
        out.append(("WScale", kw["wscale"]))
    if kw.get("sack_blocks"):
        out.append(("SAck", tuple(x for blk in kw["sack_blocks"] for x in blk)))
    out.extend(kw.get("unknown", ()))
    return out


def _order_free(opts):
    # SACK-perm before TS in our TS layout, after the MSS: compare as multisets of names.
    return sorted(opts, key=repr)


@SETTINGS
@given(tcp_headers(), option_sets(), payloads, ip_addr, ip_addr, mac_addr, mac_addr, u16, u8)
def test_frame_ours_to_scapy(h, kw, payload, src, dst, mdst, msrc, ident, ttl):
    opts = tcp_options(**kw)
    frame = build_tcp_frame(mdst, msrc, src, dst, ident, h["sport"], h["dport"], h["seq"], h["ack"],
                            h["flags"], h["window"], opts, payload, ttl=ttl)
    assert len(frame) == 54 + len(opts) + len(payload)
    # Headers only: scapy would dissect the payload by port (HTTP, BGP...) and some
    # dissectors rewrite lower layers; the payload is re-attached as Raw below.
    p = Ether(frame[:54 + len(opts)])
    e, ip, t = p[Ether], p[IP], p[TCP]
    assert (e.dst, e.src, e.type) == (mac_to_str(mdst), mac_to_str(msrc), 0x0800)
    assert (ip.ihl, ip.len, ip.id, ip.ttl, ip.proto, int(ip.flags), ip.frag, ip.tos) == (
        5, 40 + len(opts) + len(payload), ident, ttl, 6, 2, 0, 0)
    assert (ip.src, ip.dst) == (ip_to_str(src), ip_to_str(dst))
    assert (t.sport, t.dport, t.seq, t.ack, int(t.flags), t.window, t.urgptr, t.dataofs) == (
        h["sport"], h["dport"], h["seq"], h["ack"], h["flags"], h["window"], 0,
        5 + len(opts) // 4)
    got = [o for o in t.options if o[0] not in ("NOP", "EOL")]
    assert _order_free(got) == _order_free(expected_scapy_options(kw))
    # scapy's recomputed checksums (and every other byte) must equal ours
    q = p.copy()
    q = q / Raw(payload) if payload else q
    del q[IP].chksum
    del q[TCP].chksum
    assert raw(q) == frame
    # build_tcp / ipv4_header / ethernet_header build the same bytes piecewise
    assert frame == (ethernet_header(mdst, msrc, 0x0800)
                     + ipv4_header(src, dst, 6, 20 + len(opts) + len(payload), ident=ident, ttl=ttl)
                     + build_tcp(src, dst, h["sport"], h["dport"], h["seq"], h["ack"], h["flags"],
                                 h["window"], opts, payload))


@SETTINGS
@given(tcp_headers(), option_sets(), payloads, u16)
def test_build_tcp_ours_to_scapy_urgent(h, kw, payload, urgent):
    seg = build_tcp(SRC, DST, h["sport"], h["dport"], h["seq"], h["ack"], h["flags"], h["window"],
                    tcp_options(**kw), payload, urgent=urgent)
    t = TCP(seg[:len(seg) - len(payload)])
    assert t.urgptr == urgent and t.chksum == int.from_bytes(seg[16:18], "big")
    q = IP(src=ip_to_str(SRC), dst=ip_to_str(DST)) / t
    q = q / Raw(payload) if payload else q
    del q[TCP].chksum
    assert raw(q)[20:] == seg


def test_max_size_frame_scapy():
    payload = bytes(range(256)) * 255 + b"\x01" * 215          # 65495: total_length 65535
    frame = build_tcp_frame(MAC1, MAC2, SRC, DST, 1, 2, 3, 2**32 - 1, 0, T.ACK, 5, b"", payload)
    p = Ether(frame[:54])
    assert p[IP].len == 65535
    q = p.copy() / Raw(payload)
    del q[IP].chksum, q[TCP].chksum
    assert raw(q) == frame
    with pytest.raises(ValueError):
        build_tcp_frame(MAC1, MAC2, SRC, DST, 1, 2, 3, 4, 0, T.ACK, 5, b"", payload + b"x")


# ---- ours -> ours ----------------------------------------------------------------------

@SETTINGS
@given(tcp_headers(), option_sets(opaque_only=False, wscale_max=255), payloads,
       st.sampled_from([bytes, bytearray, memoryview]))
def test_roundtrip(h, kw, payload, kind):
    frame = build_tcp_frame(MAC1, MAC2, SRC, DST, 7, h["sport"], h["dport"], h["seq"], h["ack"],
                            h["flags"], h["window"], tcp_options(**kw), payload)
    buf = kind(frame)
    ip = parse_ipv4(buf[ETH_HLEN:])
    s = parse_tcp(buf[ETH_HLEN + 20:ETH_HLEN + ip.total_length], ip.src, ip.dst)
    assert (s.src_port, s.dst_port, s.seq, s.ack, s.flags, s.window, s.urgent) == (
        h["sport"], h["dport"], h["seq"], h["ack"], h["flags"], h["window"], 0)
    assert bytes(s.payload) == payload
    assert s.mss == kw.get("mss")
    assert s.wscale == (None if "wscale" not in kw else min(kw["wscale"], 14))
    assert s.sack_permitted == kw["sack_permitted"]
    assert s.sack_blocks == tuple(kw.get("sack_blocks", ()))
    assert (s.tsval, s.tsecr) == tuple(kw.get("timestamps", (None, None)))
    assert s.unknown_options == tuple(kw.get("unknown", ()))
    assert isinstance(s.sack_blocks, tuple) and isinstance(s.unknown_options, tuple)


def test_payload_type_follows_input():
    seg = build_tcp(SRC, DST, 1, 2, 3, 4, T.ACK, 5, tcp_options(timestamps=(1, 2)), b"data")
    assert isinstance(parse_tcp(memoryview(seg), SRC, DST).payload, memoryview)
    assert parse_tcp(seg, SRC, DST).payload == b"data"


def test_defaults_of_segment():
    s = T.TcpSegment()
    assert (s.mss, s.wscale, s.sack_permitted, s.sack_blocks, s.tsval, s.tsecr,
            s.unknown_options, s.payload) == (None, None, False, (), None, None, (), b"")
    assert "TcpSegment(" in repr(parse_tcp(build_tcp(SRC, DST, 1, 2, 3, 4, T.SYN | T.ACK, 5,
                                                     tcp_options(mss=1, wscale=2,
                                                                 sack_permitted=True,
                                                                 timestamps=(1, 2))),
                                           SRC, DST))


def test_flag_bits():
    assert (T.FIN, T.SYN, T.RST, T.PSH, T.ACK, T.URG, T.ECE, T.CWR) == (
        1, 2, 4, 8, 16, 32, 64, 128)
    assert T.flags_str(T.SYN | T.ACK) == "SA" and T.flags_str(0) == "."


# ---- scapy -> ours ---------------------------------------------------------------------

scapy_option = st.one_of(
    st.tuples(st.just("MSS"), u16),
    st.tuples(st.just("WScale"), u8),
    st.just(("SAckOK", b"")),
    st.tuples(st.just("Timestamp"), st.tuples(u32, u32)),
    st.integers(1, 4).flatmap(lambda n: st.tuples(st.just("SAck"), st.tuples(*[u32] * (2 * n)))),
    st.just(("NOP", None)),
    st.just(("EOL", None)),
    st.tuples(st.sampled_from(OPAQUE_KINDS), st.binary(max_size=12)),
)


def _opt_len(o):
    name, v = o
    return {"MSS": 4, "WScale": 3, "SAckOK": 2, "Timestamp": 10, "NOP": 1, "EOL": 1}.get(
        name, 2 + len(v) * 4 if name == "SAck" else 2 + len(v) if isinstance(name, int) else 0)


def expected_from_scapy(opts):
    e = dict(mss=None, wscale=None, sack_permitted=False, sack_blocks=(), ts=(None, None),
             unknown=())
    for name, v in opts:
        if name == "EOL":
            break
        if name == "MSS":
            e["mss"] = v
        elif name == "WScale":
            e["wscale"] = min(v, 14)
        elif name == "SAckOK":
            e["sack_permitted"] = True
        elif name == "Timestamp":
            e["ts"] = v
        elif name == "SAck":
            e["sack_blocks"] = tuple(zip(v[::2], v[1::2]))
        elif isinstance(name, int):
            e["unknown"] += ((name, v),)
    return e


@SETTINGS
@given(tcp_headers(), st.lists(scapy_option, max_size=10), st.binary(max_size=60), u16,
       st.integers(0, 20))
def test_scapy_to_ours(h, opts, payload, urgent, padding):
    while sum(map(_opt_len, opts)) > 40:
        opts.pop()
    frame = raw(Ether(src=mac_to_str(MAC1), dst=mac_to_str(MAC2)) /
                IP(src="192.0.2.1", dst="198.51.100.7", id=9) /
                TCP(sport=h["sport"], dport=h["dport"], seq=h["seq"], ack=h["ack"],
                    flags=h["flags"], window=h["window"], urgptr=urgent, options=opts) /
                Raw(payload)) + b"\0" * padding
    mv = memoryview(frame)
    ip = parse_ipv4(mv[ETH_HLEN:])
    assert ip.dont_fragment is False and ip.ident == 9
    s = parse_tcp(mv[ETH_HLEN + 20:ETH_HLEN + ip.total_length], ip.src, ip.dst)
    assert (s.src_port, s.dst_port, s.seq, s.ack, s.flags, s.window, s.urgent) == (
        h["sport"], h["dport"], h["seq"], h["ack"], h["flags"], h["window"], urgent)
    assert bytes(s.payload) == payload
    e = expected_from_scapy(opts)
    assert (s.mss, s.wscale, s.sack_permitted, s.sack_blocks, (s.tsval, s.tsecr),
            s.unknown_options) == (e["mss"], e["wscale"], e["sack_permitted"], e["sack_blocks"],
                                   e["ts"], e["unknown"])


@pytest.mark.parametrize("opts", [
    [],                                                                       # fast path 1
    [("NOP", None), ("NOP", None), ("Timestamp", (2**32 - 1, 7))],           # fast path 2
    [("Timestamp", (2**32 - 1, 7)), ("NOP", None), ("NOP", None)],           # same, slow path
    [("NOP", None), ("Timestamp", (2**32 - 1, 7)), ("EOL", None)],
    [("SAckOK", b""), ("Timestamp", (2**32 - 1, 7))],
    [("NOP", None), ("NOP", None), ("Timestamp", (2**32 - 1, 7)), ("NOP", None), ("NOP", None),
     ("SAck", (1, 2))],
])
def test_fast_and_slow_paths_agree(opts):
    seg = raw(IP(src=ip_to_str(SRC), dst=ip_to_str(DST)) /
              TCP(sport=1, dport=2, seq=3, ack=4, flags="PA", options=opts) / Raw(b"xyz"))[20:]
    s = parse_tcp(seg, SRC, DST)
    e = expected_from_scapy(opts)
    assert (s.tsval, s.tsecr) == e["ts"] and s.sack_blocks == e["sack_blocks"]
    assert s.sack_permitted == e["sack_permitted"] and bytes(s.payload) == b"xyz"
    assert (s.src_port, s.dst_port, s.seq, s.ack, s.flags) == (1, 2, 3, 4, T.PSH | T.ACK)


@SETTINGS
@given(u16, u8, st.booleans(), u32, u32, st.sampled_from(["linux", "moved-ws", "no-ws"]))
def test_syn_layout_fast_path_agrees_with_scapy(mss, ws, sack, tsval, tsecr, layout):
    """The 40-byte Linux SYN layout (fast path 3), and the same options laid out so
    that the option loop parses them, give what scapy reads."""
    ts = ("Timestamp", (tsval, tsecr))
    head = [("SAckOK", b""), ts] if sack else [("NOP", None), ("NOP", None), ts]
    if layout == "linux":                     # MSS, SACK-perm|NOP NOP, TS, NOP, WS
        opts = [("MSS", mss)] + head + [("NOP", None), ("WScale", ws)]
    elif layout == "moved-ws":                # the same options, another order: slow path
        opts = [("NOP", None), ("WScale", ws), ("MSS", mss)] + head
    else:                                     # no WS, padded to the same 40 bytes
        opts = [("MSS", mss)] + head + [("NOP", None)] * 4
    seg = raw(IP(src=ip_to_str(SRC), dst=ip_to_str(DST)) /
              TCP(sport=1, dport=2, seq=3, ack=4, flags="S", options=opts) / Raw(b"q"))[20:]
    assert (seg[12] >> 4) * 4 == 40
    s = parse_tcp(seg, SRC, DST)
    e = expected_from_scapy(opts)
    assert (s.mss, s.wscale, s.sack_permitted, s.sack_blocks, (s.tsval, s.tsecr),
            s.unknown_options) == (e["mss"], e["wscale"], e["sack_permitted"], e["sack_blocks"],
                                   e["ts"], e["unknown"])
    assert (s.src_port, s.dst_port, s.seq, s.ack, s.flags, bytes(s.payload)) == \
        (1, 2, 3, 4, T.SYN, b"q")


# ---- incremental checksum on real frames (splice-style rewrite, RFC 1624) ------------------

@SETTINGS
@given(u32, u32, u32, ip_addr, payloads)
def test_incremental_rewrite_verifies(seq, delta, new_ack, new_src, payload):
    frame = bytearray(build_tcp_frame(MAC1, MAC2, SRC, DST, 1, 1000, 2000, seq, 5, T.ACK, 100,
                                      tcp_options(timestamps=(9, 8)), payload))
    t = ETH_HLEN + 20
    tcs = struct.unpack_from("!H", frame, t + 16)[0]
    ics = struct.unpack_from("!H", frame, ETH_HLEN + 10)[0]
    new_seq = (seq + delta) & 0xFFFFFFFF
    tcs = checksum_update32(tcs, seq, new_seq)
    tcs = checksum_update32(tcs, 5, new_ack)
    old_src = int.from_bytes(SRC, "big")
    nsrc = int.from_bytes(new_src, "big")
    tcs = checksum_update32(tcs, old_src, nsrc)          # pseudo-header
    ics = checksum_update32(ics, old_src, nsrc)
    tcs = checksum_update16(tcs, 1000, 4242)              # port rewrite
    struct.pack_into("!II", frame, t + 4, new_seq, new_ack)
    struct.pack_into("!H", frame, t, 4242)
    struct.pack_into("!H", frame, t + 16, tcs)
    frame[ETH_HLEN + 12:ETH_HLEN + 16] = new_src
    struct.pack_into("!H", frame, ETH_HLEN + 10, ics)
    ip = parse_ipv4(frame[ETH_HLEN:])
    s = parse_tcp(bytes(frame[t:]), ip.src, ip.dst)
    assert (s.seq, s.ack, s.src_port) == (new_seq, new_ack, 4242)
    rebuilt = build_tcp_frame(MAC1, MAC2, new_src, DST, 1, 4242, 2000, new_seq, new_ack, T.ACK,
                              100, tcp_options(timestamps=(9, 8)), payload)
    assert bytes(frame) == rebuilt


# ---- builder argument errors -----------------------------------------------------------------

@pytest.mark.parametrize("kw", [
    dict(seq=2**32), dict(ack=-1), dict(sport=65536), dict(flags=256), dict(window=70000),
    dict(options=b"\x01\x01\x01"), dict(options=b"\x01" * 44), dict(ttl=256),
])
def test_builder_value_errors(kw):
    args = dict(eth_dst=MAC1, eth_src=MAC2, src_ip=SRC, dst_ip=DST, ident=0, sport=1, dport=2,
                seq=3, ack=4, flags=T.ACK, window=5, options=b"", payload=b"")
    args.update(kw)
    with pytest.raises(ValueError):
        build_tcp_frame(**args)
    if "ttl" not in kw:
        del args["eth_dst"], args["eth_src"], args["ident"]
        with pytest.raises(ValueError):
            build_tcp(**args)


def test_frame_ident_wraps():
    f = build_tcp_frame(MAC1, MAC2, SRC, DST, 65536 + 5, 1, 2, 3, 4, T.ACK, 5, b"", b"")
    assert parse_ipv4(f[ETH_HLEN:]).ident == 5


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_builders_accept_buffers(kind):
    opts, pl = tcp_options(timestamps=(1, 2)), b"hello world"
    ref = build_tcp_frame(MAC1, MAC2, SRC, DST, 1, 2, 3, 4, 5, T.ACK, 6, opts, pl)
    got = build_tcp_frame(MAC1, MAC2, SRC, DST, 1, 2, 3, 4, 5, T.ACK, 6, kind(opts), kind(pl))
    assert type(got) is bytes and got == ref
    assert build_tcp(SRC, DST, 3, 4, 5, T.ACK, 6, 7, kind(opts), kind(pl)) == \
        build_tcp(SRC, DST, 3, 4, 5, T.ACK, 6, 7, opts, pl)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_sack_layout_fast_path_agrees_with_the_option_walk(n):
    """Linux's NOP NOP TS NOP NOP SACK layout (data offset 11/13/15) is parsed without
    the option walk; the same options in another order (SACK first: the walk) give the
    same segment, and a SACK length that does not fill the header is the walk's."""
    blocks = tuple((10 * k + 1, 10 * k + 5) for k in range(n))
    fast = parse_tcp(build_tcp(SRC, DST, 1, 2, 3, 4, T.ACK, 100,
                               tcp_options(timestamps=(7, 8), sack_blocks=blocks), b"xy"),
                     SRC, DST)
    sack = struct.pack("!BB", 5, 2 + 8 * n) + b"".join(struct.pack("!II", *b) for b in blocks)
    walk = parse_tcp(build_tcp(SRC, DST, 1, 2, 3, 4, T.ACK, 100,
                               b"\x01\x01" + sack + H("0101080a 00000007 00000008"), b"xy"),
                     SRC, DST)
    for seg in (fast, walk):
        assert (seg.sack_blocks, seg.tsval, seg.tsecr, seg.payload) == (blocks, 7, 8, b"xy")
        assert (seg.mss, seg.wscale, seg.sack_permitted, seg.unknown_options) == \
            (None, None, False, ())
    opts = bytearray(tcp_options(timestamps=(7, 8), sack_blocks=blocks))
    opts[15] -= 8                                   # SACK length one block short: the
    short = build_tcp(SRC, DST, 1, 2, 3, 4, T.ACK, 100, bytes(opts), b"")   # walk's
    if n == 1:
        with pytest.raises(WireError, match="tcp_bad_option_length"):
            parse_tcp(short, SRC, DST)
    else:                                           # the last block's first byte: EOL
        assert parse_tcp(short, SRC, DST).sack_blocks == blocks[:-1]
