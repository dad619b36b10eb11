"""Ethernet II header (no VLAN handling: an 802.1Q tag shows up as ethertype 0x8100)."""

import struct

from .errors import WireError

__all__ = [
    "ETH_HLEN", "ETHERTYPE_IPV4", "ETHERTYPE_ARP", "BROADCAST_MAC", "ZERO_MAC",
    "parse_ethernet", "ethernet_header", "mac_from_str", "mac_to_str",
]

ETH_HLEN = 14
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6

_ETH = struct.Struct("!6s6sH")
_HEX = frozenset("0123456789abcdefABCDEF")


def parse_ethernet(frame):
    """-> (dst, src, ethertype); payload is frame[ETH_HLEN:]. Raises WireError("eth_short")."""
    if len(frame) < 14:
        raise WireError("eth_short")
    return _ETH.unpack_from(frame)


def ethernet_header(dst, src, ethertype):
    """14-byte header; dst/src are 6-byte MACs. ValueError if not."""
    if len(dst) != 6 or len(src) != 6:
        raise ValueError("MAC addresses must be 6 bytes")
    try:
        return _ETH.pack(dst, src, ethertype)
    except struct.error as e:
        raise ValueError(str(e)) from None


def mac_from_str(s):
    """'aa:bb:cc:dd:ee:ff' (or '-' separated) -> 6 bytes. ValueError if malformed."""
    parts = s.replace("-", ":").split(":")
    if len(parts) != 6 or not all(1 <= len(p) <= 2 and all(c in _HEX for c in p) for p in parts):
        raise ValueError("bad MAC address %r" % (s,))
    return bytes(int(p, 16) for p in parts)


def mac_to_str(mac):
    """6 bytes -> 'aa:bb:cc:dd:ee:ff'."""
    return bytes(mac).hex(":")
