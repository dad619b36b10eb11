"""wire.control: host <-> NIC control frames (AccelTCP Appendix A, docs/control-frames.md)."""

import pytest
from hypothesis import given, settings, strategies as st

from acceltcp.wire.control import (
    CTL_DROP_REASONS, ETHERTYPE_CONTROL, L4Rule, Listen, MESSAGES, NewConnection,
    SPLICE_END_RESET_SERVER, SPLICE_REFUSED_TABLE_FULL, STATE_CLOSE_WAIT,
    STATE_ESTABLISHED, Splice, SpliceClosed, SpliceInstalled, SpliceRefused, StatusReport,
    StatusRequest, TEARDOWN_END_CLOSED, TEARDOWN_REFUSED_TABLE_FULL, Teardown,
    TeardownAccepted, TeardownDone, TeardownRefused, Unlisten, VERSION, decode,
    decode_from_host, decode_header, unwrap, wire_key, wrap,
)
from acceltcp.wire.errors import WireError
from acceltcp.wire.ipv4 import parse_ipv4
from acceltcp.wire.tcp import ACK, PSH, build_tcp_frame, parse_tcp, tcp_options

from .strategies import ip_addr, mac_addr, u16, u32

K1 = bytes([10,0,0,2, 10,0,0,1]) + (40000).to_bytes(2,"big") + (80).to_bytes(2,"big")
K2 = bytes([10,0,1,9, 10,0,1,1]) + (8080).to_bytes(2,"big") + (50000).to_bytes(2,"big")
M1 = bytes.fromhex("020000000001"); M2 = bytes.fromhex("020000000002")
RA = L4Rule(K1, M2, bytes.fromhex("020000000009"), bytes([10,0,1,1]), bytes([10,0,1,9]), 50000, 8080,
            0x11223344, 0xEEDDCCBC, 0x00010000, 7, 9, 0x01020304, 65535)
RB = L4Rule(K2, M1, bytes.fromhex("020000000003"), bytes([10,0,0,1]), bytes([10,0,0,2]), 80, 40000,
            0x11223344, 0xEEDDCCBC, 0xFFFF0000, 9, 7, None, 0)
SAMPLES = {
 "NewConnection": NewConnection(1460, 7, True, True, 0x0001902F, 250),
 "Teardown": Teardown(1448, STATE_CLOSE_WAIT, 200000, 42, 0x00100000, 7, 9, True, True, 8,
                      0xA1B2C3D4, 0x10000000, 0x12345678, 60000),
 "Splice": Splice(0xCAFE0001, RA, RB),
 "SpliceClosed": SpliceClosed(0xCAFE0001, K1, K2, SPLICE_END_RESET_SERVER, True, False, 1500,
                              10, 1000, 20, 2000000),
 "Listen": Listen(bytes([10,0,0,1]), 80, 1460, 7, True, True),
 "Unlisten": Unlisten(bytes([10,0,0,1]), 80),
 "StatusRequest": StatusRequest(7),
 "StatusReport": StatusReport(7, 3, 65536, 4, 131072, 1, 64, 1000, 990, 5, 2, 900, 2, 11),
 "SpliceInstalled": SpliceInstalled(0xCAFE0001),
 "SpliceRefused": SpliceRefused(0xCAFE0002, SPLICE_REFUSED_TABLE_FULL),
 "TeardownAccepted": TeardownAccepted(42, K1),
 "TeardownRefused": TeardownRefused(0, K1, TEARDOWN_REFUSED_TABLE_FULL),
 "TeardownDone": TeardownDone(42, K1, TEARDOWN_END_CLOSED, 1, 1448, 0),
}

# Exact bytes encode() must produce (pinned; see docs/control-frames.md).
GOLDEN = {
    "NewConnection": (
        "0101001005b407030001902f000000fa"),
    "Teardown": (
        "0102002805a8000700030d400000002a0010000007090308a1b2c3d410000000123456780000ea60"),
    "Splice": (
        "01030080cafe00010a0000020a0000019c4000500200000000090200000000020a0001010a000109"
        "c3501f9011223344eeddccbc00010000010203040000ffff070901000a0001090a0001011f90c350"
        "0200000000030200000000010a0000010a00000200509c4011223344eeddccbcffff000000000000"
        "0000000009070000"),
    "SpliceClosed": (
        "01040048cafe00010a0000020a0000019c4000500a0001090a0001011f90c35003010000000005dc"
        "000000000000000a00000000000003e8000000000000001400000000001e8480"),
    "Listen": (
        "011000100a000001005005b407030000"),
    "Unlisten": (
        "0111000c0a00000100500000"),
    "StatusRequest": (
        "0112000800000007"),
    "StatusReport": (
        "011300580000000700000003000100000000000400020000000000010000004000000000000003e8"
        "00000000000003de0000000000000005000000000000000200000000000003840000000000000002"
        "000000000000000b"),
    "SpliceInstalled": (
        "01140008cafe0001"),
    "SpliceRefused": (
        "0115000ccafe000201000000"),
    "TeardownAccepted": (
        "011600140000002a0a0000020a0000019c400050"),
    "TeardownRefused": (
        "01170018000000000a0000020a0000019c40005001000000"),
    "TeardownDone": (
        "011800280000002a0a0000020a0000019c4000500100000100000000000005a80000000000000000"),
}


def test_every_message_has_a_golden():
    assert set(GOLDEN) == {m.__name__ for m in MESSAGES} == set(SAMPLES)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_bytes(name):
    msg = SAMPLES[name]
    b = msg.encode()
    assert b.hex() == GOLDEN[name]
    assert len(b) % 4 == 0 and int.from_bytes(b[2:4], "big") == len(b)
    assert b[0] == VERSION and b[1] == type(msg).TYPE
    assert decode_header(b) == msg
    if not msg.CARRIES_SEGMENT:
        f = msg.frame(M1, M2)
        assert f == M1 + M2 + msg.ETHERTYPE.to_bytes(2, "big") + b
        assert decode(f) == msg
        assert decode(f + bytes(60)) == msg          # Ethernet padding is ignored


def test_listen_defer_accept_is_flag_bit_2():
    # docs/control-frames.md: "The same with defer accept: flags 07"
    msg = Listen(bytes([10, 0, 0, 1]), 80, 1460, 7, True, True, defer_accept=True)
    assert msg.encode().hex() == "011000100a000001005005b407070000"
    assert decode_header(msg.encode()) == msg
    assert decode_header(SAMPLES["Listen"].encode()).defer_accept is False


def test_ethertypes():
    assert {m.__name__: m.ETHERTYPE for m in MESSAGES if m.ETHERTYPE != ETHERTYPE_CONTROL} \
        == {"NewConnection": 0x090A, "Teardown": 0x090B, "Splice": 0x090C,
            "SpliceClosed": 0x090D}
    assert len({m.TYPE for m in MESSAGES}) == len(MESSAGES)


def test_l4rule_from_splice_rule():
    from acceltcp.nic.splice import SpliceRule
    r = SpliceRule(*(getattr(RA, s) for s in L4Rule.__slots__))
    assert L4Rule.from_rule(r) == RA


# --- round trips over the field ranges ----------------------------------------------

u8 = st.integers(0, 0xFF)
u64 = st.integers(0, 2**64 - 1)
ws_opt = st.one_of(st.none(), st.integers(0, 14))
ws = st.integers(0, 14)
key = st.binary(min_size=12, max_size=12)
b = st.booleans()

rules = st.builds(L4Rule, key, mac_addr, mac_addr, ip_addr, ip_addr, u16, u16, u32, u32, u32,
                  ws, ws, st.one_of(st.none(), u32), u32)
messages = st.one_of(
    st.builds(NewConnection, u16, ws_opt, b, b, u32, u32),
    st.builds(Teardown, u16, st.sampled_from([STATE_ESTABLISHED, STATE_CLOSE_WAIT]), u32, u32,
              u32, ws, ws, b, b, u8, u32, u32, u32, u32),
    st.builds(Splice, u32, rules, rules),
    st.builds(SpliceClosed, u32, key, key, st.integers(1, 4), b, b, u32, u64, u64, u64, u64),
    st.builds(Listen, ip_addr, u16, u16, ws_opt, b, b, b),
    st.builds(Unlisten, ip_addr, u16),
    st.builds(StatusRequest, u32),
    st.builds(StatusReport, *([u32] * 7 + [u64] * 7)),
    st.builds(SpliceInstalled, u32),
    st.builds(SpliceRefused, u32, st.integers(1, 3)),
    st.builds(TeardownAccepted, u32, key),
    st.builds(TeardownRefused, u32, key, st.integers(1, 3)),
    st.builds(TeardownDone, u32, key, st.integers(1, 3), u16, u64, u64),
)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_roundtrip(msg):
    b = msg.encode()
    assert len(b) == type(msg)._S.size
    assert decode_header(b) == msg
    if msg.CARRIES_SEGMENT:
        assert decode(M1 + M2 + msg.ETHERTYPE.to_bytes(2, "big") + b) == msg
    else:
        assert decode(msg.frame(M1, M2)) == msg


@settings(max_examples=200, deadline=None)
@given(st.builds(Teardown, u16, st.sampled_from([STATE_ESTABLISHED, STATE_CLOSE_WAIT]), u32,
                 u32, u32, ws, ws, b, b, u8, u32, u32, u32, u32))
def test_teardown_pack_is_encode(msg):
    """The host's per-connection encoder writes what the message object would."""
    assert Teardown.pack(*(getattr(msg, s) for s in Teardown.__slots__)) == msg.encode()


@pytest.mark.parametrize("bad", [
    NewConnection(wscale=15), Teardown(state=1), Teardown(snd_wscale=15), Listen(b"1234", 1, wscale=20),
    SpliceRefused(1, 9), TeardownDone(1, bytes(12), reason=0), NewConnection(mss=70000),
    Unlisten(b"123", 80), Splice(1, RA, L4Rule(b"short", M1, M2, b"1234", b"1234", 1, 2)),
])
def test_encode_refuses_what_decode_would(bad):
    with pytest.raises(ValueError):
        bad.encode()


# --- wrap / unwrap with a real frame ------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["NewConnection", "Teardown"]), mac_addr, mac_addr, ip_addr, ip_addr,
       u16, u16, u32, u32, u16, st.binary(max_size=3000))
def test_wrap_unwrap(name, dst, src, sip, dip, sport, dport, seq, ack, win, payload):
    hdr = SAMPLES[name]
    eth = build_tcp_frame(dst, src, sip, dip, 1, sport, dport, seq, ack, ACK | PSH, win,
                          tcp_options(timestamps=(5, 6)), payload)
    f = wrap(eth, hdr)
    assert f[12:14] == hdr.ETHERTYPE.to_bytes(2, "big")
    assert f[14:14 + len(hdr.encode())] == hdr.encode()
    assert decode(f) == hdr
    h2, eth2 = unwrap(f)
    assert h2 == hdr and eth2 == eth
    ip = parse_ipv4(eth2[14:])
    seg = parse_tcp(eth2[14 + ip.header_length:ip.total_length + 14], ip.src, ip.dst)
    assert (seg.seq, seg.ack, seg.window, bytes(seg.payload), seg.tsval) == \
        (seq, ack, win, payload, 5)


def test_wrap_refuses():
    eth = build_tcp_frame(M1, M2, b"1234", b"5678", 1, 1, 2, 3, 4, ACK, 5, b"", b"")
    with pytest.raises(ValueError):
        wrap(eth, SAMPLES["Splice"])
    with pytest.raises(ValueError):
        wrap(eth[:12] + b"\x08\x06" + eth[14:], SAMPLES["Teardown"])
    with pytest.raises(TypeError):
        SAMPLES["Teardown"].frame(M1, M2)
    with pytest.raises(WireError) as e:
        unwrap(SAMPLES["Splice"].frame(M1, M2))
    assert e.value.reason == "ctl_bad_ethertype"


# --- malformed input: WireError only, with a listed reason -------------------------

def _reason(f, *args):
    with pytest.raises(WireError) as e:
        f(*args)
    assert e.value.reason in CTL_DROP_REASONS
    return e.value.reason


def test_reasons():
    good = SAMPLES["Listen"].frame(M1, M2)
    assert _reason(decode, good[:13]) == "ctl_short"
    assert _reason(decode, good[:20]) == "ctl_short"
    assert _reason(decode, good[:17]) == "ctl_short"
    assert _reason(decode, good[:12] + b"\x08\x00" + good[14:]) == "ctl_bad_ethertype"
    assert _reason(decode, good[:14] + b"\x02" + good[15:]) == "ctl_bad_version"
    assert _reason(decode, good[:15] + b"\x7f" + good[16:]) == "ctl_bad_type"
    assert _reason(decode, good[:12] + b"\x09\x0c" + good[14:]) == "ctl_bad_type"
    assert _reason(decode, good[:17] + b"\x14" + good[18:]) == "ctl_bad_length"
    assert _reason(decode, good[:26] + b"\x0f" + good[27:]) == "ctl_bad_field"   # wscale
    assert _reason(decode, good[:27] + b"\x08" + good[28:]) == "ctl_bad_field"   # flags
    assert _reason(decode, good[:28] + b"\x00\x01") == "ctl_bad_field"          # padding
    assert set(CTL_DROP_REASONS).isdisjoint(__import__("acceltcp.wire.errors").wire.errors.DROP_REASONS)


ALL_FRAMES = [wrap(build_tcp_frame(M1, M2, b"1234", b"5678", 1, 1, 2, 3, 4, ACK, 5, b"", b"x"), v)
              if v.CARRIES_SEGMENT else v.frame(M1, M2) for v in SAMPLES.values()]


def _decode_all(f):
    for fn in (decode, unwrap, decode_header):
        try:
            fn(f)
        except WireError as e:
            assert e.reason in CTL_DROP_REASONS


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(ALL_FRAMES), st.integers(0, 200), st.lists(st.tuples(u16, u8), max_size=4))
def test_truncated_and_mutated(frame, cut, flips):
    f = bytearray(frame[:cut] if cut < len(frame) else frame)
    for pos, val in flips:
        if f:
            f[pos % len(f)] = val
    _decode_all(bytes(f))
    _decode_all(bytes(frame[:cut]))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([0x090A, 0x090B, 0x090C, 0x090D, 0x090E]),
       st.sampled_from([b"", b"\x01"]))
def test_random_bytes(body, et, ver):
    _decode_all(body)
    _decode_all(bytes(12) + et.to_bytes(2, "big") + ver + body)


def test_decode_from_host_and_wire_key():
    """What both NIC implementations decode from their host port: 0x090E and 0x090C as a
    message, 0x090B as its header and the segment frame it carries, a NIC->host
    EtherType as None; wire_key turns the host's frame around (client side first)."""
    mac_a, mac_b = b"\x02" * 6, b"\x04" * 6
    listen = SAMPLES["Listen"]
    assert decode_from_host(listen.frame(mac_a, mac_b)) == (listen, None)
    assert decode_from_host(SAMPLES["Splice"].frame(mac_a, mac_b)) == (SAMPLES["Splice"], None)
    seg = build_tcp_frame(mac_a, mac_b, b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", 1,
                          80, 40000, 1, 2, ACK, 100, b"", b"data")
    hdr, inner = decode_from_host(wrap(seg, SAMPLES["Teardown"]))
    assert hdr == SAMPLES["Teardown"] and inner == seg
    assert wire_key(inner) == b"\x0a\x00\x00\x02" + b"\x0a\x00\x00\x01" + \
        (40000).to_bytes(2, "big") + (80).to_bytes(2, "big")
    assert wire_key(inner[:37]) == bytes(12)
    assert decode_from_host(wrap(seg, SAMPLES["NewConnection"])) is None
    assert decode_from_host(seg) is None
    with pytest.raises(WireError):
        decode_from_host(listen.frame(mac_a, mac_b)[:20])

