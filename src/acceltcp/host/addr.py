"""Addresses and routes of the host stack: parsing what callers give, the next hop, and
the errno errors of the host API.

One `Route` per stack: its own subnet (``ip/netmask``) is on-link, everything else goes
through the gateway (none: unreachable). `martian` names the sources the stack never
answers (RFC 1122 §3.2.1.3: this network, loopback, multicast and class E, the subnet's
broadcast, ourselves).
"""

import os

from ..wire.ethernet import mac_from_str
from ..wire.ipv4 import ip_from_str

__all__ = ["Route", "ZERO_IP", "oserror", "to_ip", "to_mac"]

ZERO_IP = b"\0\0\0\0"
_U32 = 0xFFFFFFFF


def to_ip(ip):
    """'a.b.c.d' or 4 bytes -> 4 bytes (ValueError otherwise)."""
    if isinstance(ip, str):
        return ip_from_str(ip)
    ip = bytes(ip)
    if len(ip) != 4:
        raise ValueError("IPv4 address must be 4 bytes")
    return ip


def to_mac(mac):
    """'aa:bb:..' or 6 bytes -> 6 bytes."""
    if isinstance(mac, str):
        return mac_from_str(mac)
    mac = bytes(mac)
    if len(mac) != 6:
        raise ValueError("MAC address must be 6 bytes")
    return mac


def oserror(code, detail=""):
    """OSError(`code`) with the system's message (and `detail`)."""
    return OSError(code, os.strerror(code) + (": " + detail if detail else ""))


class Route:
    """The routing of a host with address `ip` (4 bytes) on ``ip/netmask``."""

    __slots__ = ("ip", "netmask", "gateway", "_mask", "_net", "_bcast")

    def __init__(self, ip, netmask, gateway):
        if not 0 <= netmask <= 32:
            raise ValueError("netmask is a prefix length 0..32")
        self.ip = ip
        self.netmask = netmask
        self.gateway = gateway
        self._mask = (_U32 << (32 - netmask)) & _U32
        self._net = int.from_bytes(ip, "big") & self._mask
        self._bcast = (self._net | (~self._mask & _U32)).to_bytes(4, "big")

    def nexthop(self, ip):
        """The neighbour to send to for `ip`, or None (no route)."""
        if int.from_bytes(ip, "big") & self._mask == self._net:
            return ip
        return self.gateway

    def nexthop_or_self(self, ip):
        nh = self.nexthop(ip)
        return nh if nh is not None else ip

    def martian(self, src):
        """A source address the stack never answers nor connects to."""
        b0 = src[0]
        return b0 == 0 or b0 >= 224 or b0 == 127 or src == self._bcast or src == self.ip
