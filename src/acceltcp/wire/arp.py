"""ARP for Ethernet/IPv4 only (RFC 826): the 28-byte packet after the Ethernet header."""

import struct

from .errors import WireError

__all__ = ["ARP_REQUEST", "ARP_REPLY", "ARP_LEN", "ArpPacket", "parse_arp"]

ARP_REQUEST = 1
ARP_REPLY = 2
ARP_LEN = 28

# htype, ptype, hlen, plen, op, sha, spa, tha, tpa
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_PREFIX = struct.Struct("!HHBB")


class ArpPacket:
    """One ARP request/reply; MACs are 6 bytes, IPs 4 bytes."""

    __slots__ = ("op", "sender_mac", "sender_ip", "target_mac", "target_ip")

    def __init__(self, op, sender_mac, sender_ip, target_mac, target_ip):
        self.op = op
        self.sender_mac = sender_mac
        self.sender_ip = sender_ip
        self.target_mac = target_mac
        self.target_ip = target_ip

    def build(self):
        """-> the 28-byte ARP packet (prepend ethernet_header(..., ETHERTYPE_ARP)).

        ValueError if a MAC is not 6 bytes, an IP not 4 bytes, or op out of range.
        """
        if len(self.sender_mac) != 6 or len(self.target_mac) != 6 \
                or len(self.sender_ip) != 4 or len(self.target_ip) != 4:
            raise ValueError("ARP: MACs must be 6 bytes, IPs 4 bytes")
        try:
            return _ARP.pack(1, 0x0800, 6, 4, self.op, self.sender_mac, self.sender_ip,
                             self.target_mac, self.target_ip)
        except struct.error as e:
            raise ValueError(str(e)) from None

    def __eq__(self, other):
        if not isinstance(other, ArpPacket):
            return NotImplemented
        return (self.op, self.sender_mac, self.sender_ip, self.target_mac, self.target_ip) == \
            (other.op, other.sender_mac, other.sender_ip, other.target_mac, other.target_ip)

    __hash__ = None

    def __repr__(self):
        return "ArpPacket(op=%d, sender=%s/%s, target=%s/%s)" % (
            self.op, bytes(self.sender_mac).hex(":"), ".".join(map(str, self.sender_ip)),
            bytes(self.target_mac).hex(":"), ".".join(map(str, self.target_ip)))


def parse_arp(buf):
    """Parse the ARP packet at buf[0:28] (trailing padding ignored).

    Raises WireError("arp_short") or WireError("arp_unsupported") (not Ethernet/IPv4,
    or op other than request/reply, e.g. RARP).
    """
    if len(buf) < 28:
        raise WireError("arp_short")
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(buf)
    if htype != 1 or ptype != 0x0800 or hlen != 6 or plen != 4 or (op != 1 and op != 2):
        raise WireError("arp_unsupported")
    return ArpPacket(op, sha, spa, tha, tpa)
