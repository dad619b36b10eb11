"""Every drop reason has a targeted test; random bytes never raise anything but WireError."""

import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from scapy.all import ARP, IP, Raw, raw

from acceltcp.wire.arp import parse_arp
from acceltcp.wire.errors import DROP_REASONS, WireError
from acceltcp.wire.ethernet import ETH_HLEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, parse_ethernet
from acceltcp.wire.ipv4 import IPPROTO_TCP, ipv4_header, parse_ipv4
from acceltcp.wire.tcp import ACK, SYN, build_tcp, build_tcp_frame, parse_tcp, tcp_options

from .strategies import option_sets

SRC, DST = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
MAC1, MAC2 = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def seg(options=b"", payload=b"xy", flags=ACK):
    """A checksum-correct TCP segment with raw option bytes (padded by the caller)."""
    return build_tcp(SRC, DST, 1, 2, 3, 4, flags, 5, options, payload)


def with_offset(buf, words):
    b = bytearray(buf)
    b[12] = (words << 4) | (b[12] & 15)
    return bytes(b)


def tcp_raw(header_and_options, payload=b""):
    """Segment with an arbitrary data offset/options, checksum fixed up (bypasses build_tcp)."""
    from acceltcp.wire.checksum import internet_checksum, pseudo_header_sum
    b = bytearray(header_and_options + payload)
    b[16:18] = b"\0\0"
    struct.pack_into("!H", b, 16, internet_checksum(b, pseudo_header_sum(SRC, DST, 6, len(b))))
    return bytes(b)


def _ip_bad(**kw):
    return raw(IP(src="198.18.1.1", dst="198.18.1.2", **kw) / Raw(b"x" * 8))


PAD = b"\0" * 20      # scapy sizes the addresses from hwlen/plen

# reason -> list of (parser, buffer)
CASES = {
    "eth_short": [(parse_ethernet, b""), (parse_ethernet, b"\0" * 13)],
    "arp_short": [(parse_arp, b"\0" * 27)],
    "arp_unsupported": [(parse_arp, raw(ARP(hwtype=6)) + PAD), (parse_arp, raw(ARP(ptype=0x86DD)) + PAD),
                        (parse_arp, raw(ARP(hwlen=8)) + PAD), (parse_arp, raw(ARP(plen=16)) + PAD),
                        (parse_arp, raw(ARP(op=3)) + PAD)],
    "ip_short": [(parse_ipv4, b""), (parse_ipv4, ipv4_header(SRC, DST, 6, 0)[:19])],
    "ip_bad_version": [(parse_ipv4, raw(IP(version=6) / Raw(b"x" * 30)))],
    "ip_bad_ihl": [(parse_ipv4, _ip_bad(ihl=4)), (parse_ipv4, _ip_bad(ihl=0))],
    "ip_options": [(parse_ipv4, _ip_bad(options=b"\x94\x04\x00\x00"))],
    "ip_bad_length": [(parse_ipv4, _ip_bad(len=19)), (parse_ipv4, _ip_bad()[:-1])],
    "ip_bad_checksum": [(parse_ipv4, _ip_bad(chksum=0)), (parse_ipv4, _ip_bad(chksum=0xFFF0))],
    "ip_fragment": [(parse_ipv4, _ip_bad(flags="MF")), (parse_ipv4, _ip_bad(frag=1))],
    "tcp_short": [(parse_tcp, b""), (parse_tcp, seg()[:19])],
    "tcp_bad_offset": [(parse_tcp, with_offset(seg(), 4)), (parse_tcp, with_offset(seg(), 0)),
                       (parse_tcp, with_offset(seg(payload=b""), 6))],
    "tcp_bad_checksum": [(parse_tcp, seg()[:-1] + b"z"), (parse_tcp, seg(payload=b"")[:-2] + b"\0\1")],
    "tcp_option_overrun": [
        (parse_tcp, seg(b"\x01\x01\x01\x02")),                  # kind 2 at the end: no length
        (parse_tcp, seg(b"\x02\x01\x00\x00")),                  # length < 2
        (parse_tcp, seg(b"\x1e\x00\x00\x00")),                  # length 0 (unknown kind)
        (parse_tcp, seg(b"\x08\x0a\x00\x00")),                  # TS length past the end
        (parse_tcp, seg(b"\x01\x01\x1e\x07\x00\x00\x00\x00")),  # unknown option overruns
        (parse_tcp, seg(b"\x01\x01\x08\x0a\x00\x00\x00\x01")),  # TS cut by the offset
    ],
    "tcp_bad_option_length": [
        (parse_tcp, seg(b"\x02\x03\x05\x01")),                  # MSS len 3
        (parse_tcp, seg(b"\x02\x05\x05\xb4\x00\x01\x01\x01")),  # MSS len 5
        (parse_tcp, seg(b"\x03\x04\x07\x00")),                  # WS len 4
        (parse_tcp, seg(b"\x04\x03\x00\x01")),                  # SACK-perm len 3
        (parse_tcp, seg(b"\x05\x02\x01\x01")),                  # SACK with no block
        (parse_tcp, seg(b"\x05\x09" + b"\0" * 7 + b"\x01\x01\x01")),   # SACK len 9
        (parse_tcp, seg(b"\x08\x08" + b"\0" * 6)),              # TS len 8
    ],
}


def test_every_reason_is_covered_and_documented():
    assert set(CASES) == set(DROP_REASONS)
    assert len(DROP_REASONS) == len(set(DROP_REASONS))
    assert all(r.islower() and " " not in r for r in DROP_REASONS)


def _call(parser, buf):
    if parser is parse_tcp:
        return parse_tcp(buf, SRC, DST)
    return parser(buf)


@pytest.mark.parametrize("reason,parser,buf",
                         [(r, p, b) for r, cases in CASES.items() for p, b in cases])
def test_targeted(reason, parser, buf):
    for kind in (bytes, bytearray, memoryview):
        with pytest.raises(WireError) as e:
            _call(parser, kind(buf))
        assert e.value.reason == reason
        assert e.value.reason in DROP_REASONS


def test_wire_error_shape():
    e = WireError("tcp_short", "12 bytes")
    assert (e.reason, e.detail, str(e)) == ("tcp_short", "12 bytes", "tcp_short: 12 bytes")
    assert isinstance(e, ValueError) and str(WireError("eth_short")) == "eth_short"


def test_options_after_eol_ignored_and_unknown_kept():
    s = parse_tcp(seg(b"\x1e\x03\x07\x00\x02\x01\x00\x00"), SRC, DST)   # junk after EOL
    assert s.unknown_options == ((30, b"\x07"),) and s.mss is None


def test_wscale_clamped_to_14():
    s = parse_tcp(seg(b"\x01\x03\x03\x0f", flags=SYN), SRC, DST)
    assert s.wscale == 14


def test_checksum_not_verified_when_asked():
    bad = seg()[:-1] + b"z"
    assert bytes(parse_tcp(bad, SRC, DST, verify_checksum=False).payload) == b"xz"


# ---- fuzz: nothing but WireError ---------------------------------------------------------

def parse_frame(frame, verify=True):
    """The host's receive path in miniature."""
    dst, src, et = parse_ethernet(frame)
    if et == ETHERTYPE_ARP:
        return parse_arp(frame[ETH_HLEN:])
    if et == ETHERTYPE_IPV4:
        ip = parse_ipv4(frame[ETH_HLEN:], verify)
        if ip.proto == IPPROTO_TCP:
            return parse_tcp(frame[ETH_HLEN + ip.header_length:ETH_HLEN + ip.total_length],
                             ip.src, ip.dst, verify)
    return None


def _no_escape(fn, *args):
    try:
        fn(*args)
    except WireError as e:
        assert e.reason in DROP_REASONS


@FUZZ
@given(st.binary(max_size=120), st.booleans())
def test_random_bytes(data, verify):
    mv = memoryview(data)
    for b in (data, mv):
        _no_escape(parse_ethernet, b)
        _no_escape(parse_arp, b)
        _no_escape(parse_ipv4, b, verify)
        _no_escape(parse_tcp, b, SRC, DST, verify)
        _no_escape(parse_frame, b, verify)


@FUZZ
@given(st.binary(min_size=20, max_size=60), st.binary(max_size=20))
def test_random_tcp_headers_fixed_checksum(header, payload):
    """Random headers/options with a *valid* checksum, so the option parser is reached."""
    _no_escape(parse_tcp, tcp_raw(header, payload), SRC, DST)


@FUZZ
@given(option_sets(opaque_only=False), st.binary(max_size=40), st.data())
def test_mutated_frames(kw, payload, data):
    frame = bytearray(build_tcp_frame(MAC1, MAC2, SRC, DST, 1, 2, 3, 4, 5, SYN | ACK, 6,
                                      tcp_options(**kw), payload))
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    for f in (bytes(frame), bytes(frame[:cut])):
        _no_escape(parse_frame, f, True)
        _no_escape(parse_frame, f, False)
        _no_escape(parse_frame, memoryview(f), False)
        # and the TCP part on its own, mutated but with the checksum fixed up
        if len(f) >= ETH_HLEN + 40:
            _no_escape(parse_tcp, tcp_raw(f[ETH_HLEN + 20:]), SRC, DST)
