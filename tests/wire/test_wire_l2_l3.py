"""Ethernet, ARP and IPv4 codecs, cross-checked against scapy."""

import pytest
from hypothesis import given, settings, strategies as st
from scapy.all import ARP, IP, TCP, Ether, Raw, raw

from acceltcp.wire.arp import ARP_REPLY, ARP_REQUEST, ArpPacket, parse_arp
from acceltcp.wire.errors import WireError
from acceltcp.wire.ethernet import (
    BROADCAST_MAC, ETH_HLEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ethernet_header, mac_from_str,
    mac_to_str, parse_ethernet)
from acceltcp.wire.ipv4 import IPPROTO_TCP, ipv4_header, ip_from_str, ip_to_str, parse_ipv4

from .strategies import ip_addr, mac_addr, u8, u16

SETTINGS = settings(max_examples=300, deadline=None)
ethertypes = st.integers(0x0600, 0xFFFF)     # scapy reads <= 1500 as an 802.3 length


# ---- Ethernet --------------------------------------------------------------------------

@SETTINGS
@given(mac_addr, mac_addr, ethertypes)
def test_ethernet_ours_to_scapy(dst, src, et):
    hdr = ethernet_header(dst, src, et)
    assert len(hdr) == ETH_HLEN
    p = Ether(hdr + b"x" * 46)
    assert (p.dst, p.src, p.type) == (mac_to_str(dst), mac_to_str(src), et)
    assert parse_ethernet(hdr) == (dst, src, et)


@SETTINGS
@given(mac_addr, mac_addr, ethertypes)
def test_ethernet_scapy_to_ours(dst, src, et):
    frame = raw(Ether(dst=mac_to_str(dst), src=mac_to_str(src), type=et) / Raw(b"abc"))
    assert parse_ethernet(frame) == (dst, src, et)
    assert parse_ethernet(memoryview(frame)) == (dst, src, et)


def test_ethernet_constants():
    assert (ETHERTYPE_IPV4, ETHERTYPE_ARP, BROADCAST_MAC) == (0x0800, 0x0806, b"\xff" * 6)


def test_mac_helpers():
    assert mac_from_str("02:00:0a:FF:00:01") == bytes.fromhex("02000aff0001")
    assert mac_from_str("02-00-0a-ff-00-01") == bytes.fromhex("02000aff0001")
    assert mac_to_str(bytes.fromhex("02000aff0001")) == "02:00:0a:ff:00:01"
    for bad in ("", "02:00:0a:ff:00", "02:00:0a:ff:00:01:02", "02:00:0a:ff:00:zz", "0200:0a:ff:00:01:", "+2:00:0a:ff:00:01"):
        with pytest.raises(ValueError):
            mac_from_str(bad)


def test_eth_short():
    with pytest.raises(WireError) as e:
        parse_ethernet(b"\0" * 13)
    assert e.value.reason == "eth_short"


# ---- ARP -------------------------------------------------------------------------------

@SETTINGS
@given(st.sampled_from([ARP_REQUEST, ARP_REPLY]), mac_addr, ip_addr, mac_addr, ip_addr)
def test_arp_ours_to_scapy(op, smac, sip, tmac, tip):
    pkt = ArpPacket(op, smac, sip, tmac, tip).build()
    assert len(pkt) == 28
    a = ARP(pkt)
    assert (a.hwtype, a.ptype, a.hwlen, a.plen, a.op) == (1, 0x0800, 6, 4, op)
    assert (a.hwsrc, a.psrc, a.hwdst, a.pdst) == (
        mac_to_str(smac), ip_to_str(sip), mac_to_str(tmac), ip_to_str(tip))
    assert parse_arp(pkt) == ArpPacket(op, smac, sip, tmac, tip)


@SETTINGS
@given(st.sampled_from([ARP_REQUEST, ARP_REPLY]), mac_addr, ip_addr, mac_addr, ip_addr)
def test_arp_scapy_to_ours(op, smac, sip, tmac, tip):
    frame = raw(Ether(dst="ff:ff:ff:ff:ff:ff", src=mac_to_str(smac)) /
                ARP(op=op, hwsrc=mac_to_str(smac), psrc=ip_to_str(sip),
                    hwdst=mac_to_str(tmac), pdst=ip_to_str(tip)))
    frame += b"\0" * (60 - len(frame))           # Ethernet padding is ignored
    assert parse_ethernet(frame)[2] == ETHERTYPE_ARP
    a = parse_arp(memoryview(frame)[ETH_HLEN:])
    assert (a.op, a.sender_mac, a.sender_ip, a.target_mac, a.target_ip) == (op, smac, sip, tmac, tip)


def test_arp_short():
    with pytest.raises(WireError) as e:
        parse_arp(ArpPacket(1, b"a" * 6, b"b" * 4, b"c" * 6, b"d" * 4).build()[:27])
    assert e.value.reason == "arp_short"


@pytest.mark.parametrize("field", ["hwtype", "ptype", "hwlen", "plen", "op"])
def test_arp_unsupported(field):
    bad = {"hwtype": 6, "ptype": 0x86DD, "hwlen": 8, "plen": 16, "op": 3}[field]
    a = ARP(op=1, hwsrc="02:00:00:00:00:01", psrc="198.18.1.1", pdst="198.18.1.2")
    setattr(a, field, bad)
    with pytest.raises(WireError) as e:
        parse_arp(raw(a) + b"\0" * 40)
    assert e.value.reason == "arp_unsupported"


# ---- IPv4 ------------------------------------------------------------------------------

@SETTINGS
@given(ip_addr, ip_addr, u8, st.integers(0, 1480), st.integers(0, 2**20), u8, u8, st.booleans())
def test_ipv4_ours_to_scapy(src, dst, proto, plen, ident, ttl, tos, df):
    hdr = ipv4_header(src, dst, proto, plen, ident=ident, ttl=ttl, tos=tos, df=df)
    p = IP(hdr)        # header only: scapy mutates IP when it dissects some payloads (IGMP)
    assert (p.version, p.ihl, p.tos, p.len, p.id, p.ttl, p.proto) == (
        4, 5, tos, 20 + plen, ident & 0xFFFF, ttl, proto)
    assert (p.src, p.dst, int(p.flags), p.frag) == (ip_to_str(src), ip_to_str(dst), 2 * df, 0)
    q = p.copy()
    del q.chksum
    assert raw(q) == hdr                     # scapy's recomputed checksum == ours
    h = parse_ipv4(hdr + b"\xab" * plen)
    assert (h.src, h.dst, h.proto, h.ttl, h.ident, h.tos, h.dont_fragment, h.total_length,
            h.header_length) == (src, dst, proto, ttl, ident & 0xFFFF, tos, df, 20 + plen, 20)


@SETTINGS
@given(ip_addr, ip_addr, u8, st.binary(max_size=100), u16, u8, u8, st.booleans(),
       st.integers(0, 30))
def test_ipv4_scapy_to_ours(src, dst, proto, payload, ident, ttl, tos, df, padding):
    pkt = raw(IP(src=ip_to_str(src), dst=ip_to_str(dst), proto=proto, id=ident, ttl=ttl, tos=tos,
                 flags="DF" if df else 0) / Raw(payload))
    buf = pkt + b"\0" * padding                   # trailing bytes past total_length ignored
    for b in (buf, bytearray(buf), memoryview(buf)):
        h = parse_ipv4(b)
        assert (h.src, h.dst, h.proto, h.ttl, h.ident, h.tos, h.dont_fragment) == (
            src, dst, proto, ttl, ident, tos, df)
        assert h.total_length == len(pkt) and h.header_length == 20
        assert bytes(b[h.header_length:h.total_length]) == payload


def test_ipv4_ethernet_padding():
    frame = raw(Ether() / IP(src="198.18.1.1", dst="198.18.1.2") / TCP())
    frame += b"\0" * (60 - len(frame))
    h = parse_ipv4(frame[ETH_HLEN:])
    assert h.total_length == 40 and h.proto == IPPROTO_TCP


def test_ipv4_no_verify():
    hdr = bytearray(ipv4_header(b"\1\2\3\4", b"\5\6\7\x08", 6, 0))
    hdr[10] ^= 0xFF
    assert parse_ipv4(bytes(hdr), verify_checksum=False).src == b"\1\2\3\4"


def test_ip_helpers():
    assert ip_from_str("198.18.1.1") == b"\xc6\x12\x01\x01"
    assert ip_to_str(b"\xc6\x13\x01\xff") == "198.19.1.255"
    for bad in ("", "10.0.0", "198.18.1.256", "198.18.1.1.2", "a.b.c.d", "0x0a.0.0.1"):
        with pytest.raises(ValueError):
            ip_from_str(bad)


def test_ipv4_header_too_long():
    with pytest.raises(ValueError):
        ipv4_header(b"\0" * 4, b"\0" * 4, 6, 65516)


def _ip(**kw):
    return raw(IP(src="198.18.1.1", dst="198.18.1.2", **kw) / Raw(b"x" * 8))


def _reason(buf):
    with pytest.raises(WireError) as e:
        parse_ipv4(buf)
    return e.value.reason


def _patch(pkt, off, value, fmt="!H"):
    import struct
    b = bytearray(pkt)
    struct.pack_into(fmt, b, off, value)
    return bytes(b)


def test_ipv4_malformed():
    good = _ip()
    assert _reason(good[:19]) == "ip_short"
    assert _reason(b"") == "ip_short"
    assert _reason(raw(IP(version=6) / Raw(b"x" * 30))) == "ip_bad_version"
    assert _reason(_ip(ihl=4)) == "ip_bad_ihl"
    assert _reason(_ip(options=b"\x01\x01\x01\x00")) == "ip_options"
    assert _reason(_ip(len=19)) == "ip_bad_length"
    assert _reason(_ip(len=len(good) + 1)) == "ip_bad_length"
    assert _reason(good[:-1]) == "ip_bad_length"
    assert _reason(_ip(chksum=0x1234)) == "ip_bad_checksum"
    assert _reason(_patch(good, 10, 0)) == "ip_bad_checksum"
    assert _reason(_ip(flags="MF")) == "ip_fragment"
    assert _reason(_ip(frag=100)) == "ip_fragment"
    assert parse_ipv4(_ip(flags="evil")).dont_fragment is False   # reserved bit: ignored


def test_builders_reject_bad_addresses():
    with pytest.raises(ValueError):
        ethernet_header(b"\0" * 5, b"\0" * 6, 0x0800)
    with pytest.raises(ValueError):
        ethernet_header(b"\0" * 6, b"\0" * 6, 0x10000)
    with pytest.raises(ValueError):
        ipv4_header(b"\0" * 3, b"\0" * 4, 6, 0)
    with pytest.raises(ValueError):
        ipv4_header(b"\0" * 4, b"\0" * 4, 6, 0, ttl=256)
    with pytest.raises(ValueError):
        ArpPacket(1, b"\0" * 6, b"\0" * 5, b"\0" * 6, b"\0" * 4).build()
    with pytest.raises(ValueError):
        ArpPacket(70000, b"\0" * 6, b"\0" * 4, b"\0" * 6, b"\0" * 4).build()
