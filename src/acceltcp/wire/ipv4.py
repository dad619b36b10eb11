"""IPv4 header (RFC 791), without options and without fragmentation.

`parse_ipv4(buf)` reads the header at buf[0:]; the payload is
`buf[hdr.header_length:hdr.total_length]` — bytes past total_length (Ethernet
padding up to the 60-byte minimum frame) are ignored. `parse_ipv4_fields(buf)` is the
same parse with the fields returned as a tuple (no object: the host's receive path).
"""

import ipaddress
import socket
import struct

from .errors import WireError

__all__ = [
    "IP_HLEN", "IPPROTO_ICMP", "IPPROTO_TCP", "IPPROTO_UDP",
    "Ipv4Header", "parse_ipv4", "parse_ipv4_fields", "ipv4_header", "ip_from_str",
    "ip_to_str",
]

IP_HLEN = 20
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17

# ver/ihl, tos, total_length, ident, flags/frag_off, ttl, proto, checksum, src, dst
_IP = struct.Struct("!BBHHHBBH4s4s")
# The same 20 bytes as 8+8+4-byte integers: their sum is congruent (mod 0xFFFF) to the
# 16-bit word sum (see wire.checksum), so verification is one unpack + two adds.
_QQI = struct.Struct("!QQI")
_ip_unpack = _IP.unpack_from
_qqi_unpack = _QQI.unpack_from
_from_bytes = int.from_bytes


class Ipv4Header:
    """A parsed IPv4 header; src/dst are 4-byte addresses."""

    __slots__ = ("src", "dst", "proto", "ttl", "ident", "tos", "dont_fragment",
                 "total_length", "header_length")

    def __init__(self, src, dst, proto, ttl=64, ident=0, tos=0, dont_fragment=True,
                 total_length=20, header_length=20):
        self.src = src
        self.dst = dst
        self.proto = proto
        self.ttl = ttl
        self.ident = ident
        self.tos = tos
        self.dont_fragment = dont_fragment
        self.total_length = total_length
        self.header_length = header_length

    def __repr__(self):
        return ("Ipv4Header(%s -> %s, proto=%d, ttl=%d, ident=%d, tos=%d, df=%s, len=%d/%d)"
                % (ip_to_str(self.src), ip_to_str(self.dst), self.proto, self.ttl, self.ident,
                   self.tos, self.dont_fragment, self.header_length, self.total_length))


def parse_ipv4(buf, verify_checksum=True):
    """Parse and validate the IPv4 header at buf[0:]. Raises WireError.

    Checks, in order: ip_short, ip_bad_version, ip_bad_ihl (IHL < 5), ip_options
    (IHL > 5, not handled), ip_bad_length, ip_bad_checksum, ip_fragment (MF or
    offset != 0: no reassembly here; DF and the reserved bit are not checked).
    """
    return Ipv4Header(*parse_ipv4_fields(buf, verify_checksum))


def parse_ipv4_fields(buf, verify_checksum=True):
    """`parse_ipv4` without the object: the same checks, then the Ipv4Header fields as
    a tuple (src, dst, proto, ttl, ident, tos, dont_fragment, total_length,
    header_length)."""
    n = len(buf)
    if n < 20:
        raise WireError("ip_short")
    vihl, tos, total, ident, frag, ttl, proto, _csum, src, dst = _ip_unpack(buf)
    if vihl != 0x45:
        if vihl >> 4 != 4:
            raise WireError("ip_bad_version")
        if vihl < 0x45:
            raise WireError("ip_bad_ihl")
        raise WireError("ip_options")
    if total < 20 or total > n:
        raise WireError("ip_bad_length")
    # RFC 1071: the sum over the header, checksum field included, is -0 (== 0 mod 0xFFFF;
    # never all-zero since the version nibble is 4).
    if verify_checksum:
        a, b, c = _qqi_unpack(buf)
        if (a + b + c) % 0xFFFF:
            raise WireError("ip_bad_checksum")
    if frag & 0x3FFF:
        raise WireError("ip_fragment")
    return src, dst, proto, ttl, ident, tos, frag & 0x4000 != 0, total, 20


def ipv4_header(src, dst, proto, payload_len, ident=0, ttl=64, tos=0, df=True):
    """20-byte header with checksum; total_length = 20 + payload_len; ident is taken mod 2**16.

    ValueError on out-of-range fields or addresses that are not 4 bytes.
    """
    total = 20 + payload_len
    if total > 0xFFFF:
        raise ValueError("IPv4 total length > 65535")
    if len(src) != 4 or len(dst) != 4:
        raise ValueError("IPv4 addresses must be 4 bytes")
    ident &= 0xFFFF
    frag = 0x4000 if df else 0
    s = (0x4500 + tos + total + ident + frag + (ttl << 8) + proto
         + _from_bytes(src, "big") + _from_bytes(dst, "big"))
    try:
        return _IP.pack(0x45, tos, total, ident, frag, ttl, proto, -s % 0xFFFF, src, dst)
    except struct.error as e:
        raise ValueError(str(e)) from None


def ip_from_str(s):
    """'10.0.0.1' -> 4 bytes (strict dotted quad). ValueError if malformed."""
    return ipaddress.IPv4Address(s).packed   # AddressValueError is a ValueError


def ip_to_str(ip):
    """4 bytes -> '10.0.0.1'."""
    return socket.inet_ntoa(bytes(ip))
