"""Connection setup offload (AccelTCP §4.1): the NIC answers a listener's SYNs with SYN
cookies (`Listen` / `Unlisten`, host -> NIC) and hands each handshake it completed up as
a `NewConnection` header in front of the client's ACK (0x090A)."""

import struct

from .base import (_F_DEFER, _F_SACK, _F_TS, ETHERTYPE_NEW_CONNECTION, _bytes, _flags, _Msg,
                   _ws_in, _ws_out, _zero)

__all__ = ["NewConnection", "Listen", "Unlisten"]


class NewConnection(_Msg):
    """0x090A, NIC -> host, in front of the client's handshake-completing ACK (16 bytes).

    mss: the MSS the client announced (cookie class value); wscale: the client's shift
    0..14 or None (no WS: neither side scales); sack_ok: client sent SACK-permitted;
    timestamps: TS in use; ts_base: the cookie TSval (= the ACK's TSecr) -- the host's
    TSvals on this connection must stay >= it (and keep bit 0 clear); rtt_us: SYN-ACK ->
    ACK time measured by the NIC in microseconds, 0xFFFFFFFF = unknown.
    """

    __slots__ = ("mss", "wscale", "sack_ok", "timestamps", "ts_base", "rtt_us")
    ETHERTYPE = ETHERTYPE_NEW_CONNECTION
    TYPE = 0x01
    CARRIES_SEGMENT = True
    _S = struct.Struct("!BBH" "HBB" "I" "I")

    def __init__(self, mss=1460, wscale=None, sack_ok=False, timestamps=True, ts_base=0,
                 rtt_us=0xFFFFFFFF):
        self.mss = mss
        self.wscale = wscale
        self.sack_ok = sack_ok
        self.timestamps = timestamps
        self.ts_base = ts_base
        self.rtt_us = rtt_us

    def _raw(self):
        return (self.mss, _ws_out(self.wscale),
                (_F_SACK if self.sack_ok else 0) | (_F_TS if self.timestamps else 0),
                self.ts_base, self.rtt_us)

    @classmethod
    def _build(cls, t):
        mss, ws, fl, ts_base, rtt = t
        _flags(fl, _F_SACK | _F_TS)
        return cls(mss, _ws_in(ws), bool(fl & _F_SACK), bool(fl & _F_TS), ts_base, rtt)

class Listen(_Msg):
    """CONTROL 0x10, host -> NIC: answer SYNs to ip:port with cookies, offering these
    options (16 bytes). ip 0.0.0.0 = any local address; wscale None = no WS option.
    defer_accept: the client speaks first (Linux's TCP_DEFER_ACCEPT): the NIC absorbs
    the bare handshake ACK and hands the connection up with the first segment carrying
    data or FIN, which echoes the same cookie."""

    __slots__ = ("ip", "port", "mss", "wscale", "sack_ok", "timestamps", "defer_accept")
    TYPE = 0x10
    _S = struct.Struct("!BBH" "4s" "HH" "BBH")

    def __init__(self, ip, port, mss=1460, wscale=None, sack_ok=False, timestamps=True,
                 defer_accept=False):
        self.ip = bytes(ip)
        self.port = port
        self.mss = mss
        self.wscale = wscale
        self.sack_ok = sack_ok
        self.timestamps = timestamps
        self.defer_accept = defer_accept

    def _raw(self):
        return (_bytes(self.ip, 4, "ip"), self.port, self.mss, _ws_out(self.wscale),
                (_F_SACK if self.sack_ok else 0) | (_F_TS if self.timestamps else 0)
                | (_F_DEFER if self.defer_accept else 0), 0)

    @classmethod
    def _build(cls, t):
        ip, port, mss, ws, fl, pad = t
        _flags(fl, _F_SACK | _F_TS | _F_DEFER)
        _zero(pad)
        return cls(ip, port, mss, _ws_in(ws), bool(fl & _F_SACK), bool(fl & _F_TS),
                   bool(fl & _F_DEFER))


class Unlisten(_Msg):
    """CONTROL 0x11, host -> NIC: stop answering SYNs for ip:port (12 bytes)."""

    __slots__ = ("ip", "port")
    TYPE = 0x11
    _S = struct.Struct("!BBH" "4s" "HH")

    def __init__(self, ip, port):
        self.ip = bytes(ip)
        self.port = port

    def _raw(self):
        return (_bytes(self.ip, 4, "ip"), self.port, 0)

    @classmethod
    def _build(cls, t):
        ip, port, pad = t
        _zero(pad)
        return cls(ip, port)
