"""Splice offload (AccelTCP §4.3): the two rules (`L4Rule`) the host computes from its
two proxy connections (`SpliceSide`, `splice_rules`) and sends in a `Splice` (0x090C);
the NIC answers `SpliceInstalled` or `SpliceRefused` and reports `SpliceClosed` (0x090D)
when the spliced connection ends."""

import struct

from .base import (ETHERTYPE_SPLICE, ETHERTYPE_SPLICE_CLOSED, _bad, _bytes, _enum, _flags,
                   _IdOnly, _Msg, _shift, _zero)

__all__ = ["SPLICE_END_FIN", "SPLICE_END_RESET_CLIENT", "SPLICE_END_RESET_SERVER",
           "SPLICE_END_IDLE", "SPLICE_REFUSED_TABLE_FULL", "SPLICE_REFUSED_BAD_RULE",
           "SPLICE_REFUSED_DUPLICATE", "L4Rule", "SpliceSide", "make_key", "splice_rules",
           "Splice", "SpliceClosed", "SpliceInstalled", "SpliceRefused"]

SPLICE_END_FIN = 1              # both FINs sent and acknowledged
SPLICE_END_RESET_CLIENT = 2     # acceptable RST from the client side (rule a's sender)
SPLICE_END_RESET_SERVER = 3     # acceptable RST from the server side (rule b's sender)
SPLICE_END_IDLE = 4             # idle timeout on the NIC

SPLICE_REFUSED_TABLE_FULL = 1
SPLICE_REFUSED_BAD_RULE = 2     # rule inconsistent (offsets not paired, wscale > 14, ...)
SPLICE_REFUSED_DUPLICATE = 3    # a rule with one of these keys is already installed

_RULE = struct.Struct("!12s6s6s4s4sHHIIIIIBBBB")   # 60 bytes
_HH = struct.Struct("!HH")
_RF_LAST_ACK = 0x01


class L4Rule:
    """One direction of a splice: the value the host computes (``splice_rules``, below),
    the NIC's splice table installs (``nic.splice.SpliceRule`` is this class) and a Splice
    message carries two of (60 bytes each on the wire).

    key         raw 12-byte incoming 4-tuple: src-ip|dst-ip|sport|dport
    eth_src/eth_dst, ip_src/ip_dst, sport/dport   what the frame becomes
    seq_offset, ack_offset   ΔSEQ / ΔACK (any int, taken mod 2^32)
    ts_shift    added to TSval (mod 2^32); TSecr gets minus the paired rule's ts_shift
    wscale_in   shift the *sender* applies to the windows it writes (0: WS not in use)
    wscale_out  shift the *receiver* uses to read them (what the proxy announced to it)
    last_ack, last_wnd   optional seed: the sender's latest ACK (incoming space) and its
                window in bytes, for RST validation before its first frame is seen
                (last_ack None = not seeded)
    """

    __slots__ = ("key", "eth_src", "eth_dst", "ip_src", "ip_dst", "sport", "dport",
                 "seq_offset", "ack_offset", "ts_shift", "wscale_in", "wscale_out",
                 "last_ack", "last_wnd")

    def __init__(self, key, eth_src, eth_dst, ip_src, ip_dst, sport, dport, seq_offset=0,
                 ack_offset=0, ts_shift=0, wscale_in=0, wscale_out=0, last_ack=None,
                 last_wnd=0):
        self.key = bytes(key)
        self.eth_src = bytes(eth_src)
        self.eth_dst = bytes(eth_dst)
        self.ip_src = bytes(ip_src)
        self.ip_dst = bytes(ip_dst)
        self.sport = sport
        self.dport = dport
        self.seq_offset = seq_offset & 0xFFFFFFFF
        self.ack_offset = ack_offset & 0xFFFFFFFF
        self.ts_shift = ts_shift & 0xFFFFFFFF
        self.wscale_in = wscale_in
        self.wscale_out = wscale_out
        self.last_ack = last_ack
        self.last_wnd = last_wnd

    __eq__ = _Msg.__eq__
    __ne__ = _Msg.__ne__
    __hash__ = None
    __repr__ = _Msg.__repr__

    @property
    def out_key(self):
        """The 4-tuple a translated frame carries (what frame[26:38] becomes)."""
        return self.ip_src + self.ip_dst + _HH.pack(self.sport, self.dport)

    @classmethod
    def from_rule(cls, r):
        """From any object with these attribute names."""
        return cls(*(getattr(r, s) for s in cls.__slots__))

    def _raw(self):
        for n, what in ((12, "key"), (6, "eth_src"), (6, "eth_dst"), (4, "ip_src"),
                        (4, "ip_dst")):
            _bytes(getattr(self, what), n, what)
        return (self.key, self.eth_dst, self.eth_src, self.ip_src, self.ip_dst, self.sport,
                self.dport, self.seq_offset, self.ack_offset, self.ts_shift,
                0 if self.last_ack is None else self.last_ack, self.last_wnd,
                self.wscale_in, self.wscale_out,
                0 if self.last_ack is None else _RF_LAST_ACK, 0)

    @classmethod
    def _build(cls, t):
        (key, dst, src, ips, ipd, sp, dp, dseq, dack, dts, lack, lwnd, wsi, wso, fl, pad) = t
        _flags(fl, _RF_LAST_ACK)
        _zero(pad)
        if not fl & _RF_LAST_ACK and lack:
            _bad("last_ack")
        return cls(key, src, dst, ips, ipd, sp, dp, dseq, dack, dts,
                   _shift(wsi, "wscale_in"), _shift(wso, "wscale_out"),
                   lack if fl & _RF_LAST_ACK else None, lwnd)


# What the host computes an nsplice's two rules from (host.offload), in one place with
# the rule itself; the NIC's splice table (nic.splice) installs them.
class SpliceSide:
    """One proxy connection at splice time, from the proxy's point of view (its TCB).

    snd_nxt / rcv_nxt: with everything the proxy sent acknowledged (snd_una == snd_nxt)
    and everything it received read. snd_wnd: the peer's window in bytes. ts_ok: TS in
    use on this connection; ts_now: the TSval the proxy would send now on it (>= any it
    sent); ts_recent: the peer's latest TSval. local_wscale: the shift the proxy announced
    (the peer reads our windows with it); peer_wscale: the peer's shift (0 without WS).
    """

    __slots__ = ("local_mac", "local_ip", "local_port", "remote_mac", "remote_ip",
                 "remote_port", "snd_nxt", "rcv_nxt", "snd_wnd", "ts_ok", "ts_now",
                 "ts_recent", "local_wscale", "peer_wscale")

    def __init__(self, local_mac, local_ip, local_port, remote_mac, remote_ip, remote_port,
                 snd_nxt, rcv_nxt, snd_wnd=0, ts_ok=False, ts_now=0, ts_recent=0,
                 local_wscale=0, peer_wscale=0):
        self.local_mac = local_mac
        self.local_ip = local_ip
        self.local_port = local_port
        self.remote_mac = remote_mac
        self.remote_ip = remote_ip
        self.remote_port = remote_port
        self.snd_nxt = snd_nxt
        self.rcv_nxt = rcv_nxt
        self.snd_wnd = snd_wnd
        self.ts_ok = ts_ok
        self.ts_now = ts_now
        self.ts_recent = ts_recent
        self.local_wscale = local_wscale
        self.peer_wscale = peer_wscale


def make_key(src_ip, dst_ip, sport, dport):
    """The raw 12-byte 4-tuple as it sits at frame[26:38]."""
    return bytes(src_ip) + bytes(dst_ip) + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")


def splice_rules(c, s):
    """(rule_a, rule_b) for splicing client-side connection `c` with server-side `s`
    (both SpliceSide). Raises ValueError if timestamps are in use on one side only."""
    if c.ts_ok != s.ts_ok:
        raise ValueError("timestamps negotiated on one connection only: cannot splice")
    if c.ts_ok:
        # Map each sender's TS clock onto the clock its new peer saw from the proxy; the
        # sender's next TSval (>= ts_recent) then lands >= anything the proxy sent (PAWS).
        ts_a = s.ts_now - c.ts_recent
        ts_b = c.ts_now - s.ts_recent
    else:
        ts_a = ts_b = 0
    rule_a = L4Rule(
        make_key(c.remote_ip, c.local_ip, c.remote_port, c.local_port),
        s.local_mac, s.remote_mac, s.local_ip, s.remote_ip, s.local_port, s.remote_port,
        s.snd_nxt - c.rcv_nxt, s.rcv_nxt - c.snd_nxt, ts_a,
        c.peer_wscale, s.local_wscale, c.snd_nxt, c.snd_wnd)
    rule_b = L4Rule(
        make_key(s.remote_ip, s.local_ip, s.remote_port, s.local_port),
        c.local_mac, c.remote_mac, c.local_ip, c.remote_ip, c.local_port, c.remote_port,
        c.snd_nxt - s.rcv_nxt, c.rcv_nxt - s.snd_nxt, ts_b,
        s.peer_wscale, c.local_wscale, s.snd_nxt, s.snd_wnd)
    return rule_a, rule_b


class Splice(_Msg):
    """0x090C, host -> NIC: install two paired rules (128 bytes). splice_id: the host's
    cookie, echoed in SpliceInstalled / SpliceRefused / SpliceClosed. rule_a: frames from
    the client (C -> S), rule_b: frames from the server (S -> C)."""

    __slots__ = ("splice_id", "rule_a", "rule_b")
    ETHERTYPE = ETHERTYPE_SPLICE
    TYPE = 0x03
    _S = struct.Struct("!BBH" "I" "60s" "60s")

    def __init__(self, splice_id, rule_a, rule_b):
        self.splice_id = splice_id
        self.rule_a = rule_a
        self.rule_b = rule_b

    def _raw(self):
        return (self.splice_id, _RULE.pack(*self.rule_a._raw()),
                _RULE.pack(*self.rule_b._raw()))

    @classmethod
    def _build(cls, t):
        sid, a, b = t
        return cls(sid, L4Rule._build(_RULE.unpack(a)), L4Rule._build(_RULE.unpack(b)))


class SpliceClosed(_Msg):
    """0x090D, NIC -> host: a splice ended and its rules are gone (72 bytes).
    client_key / server_key: rule a's / rule b's incoming 4-tuple (remote ip, proxy ip,
    remote port, proxy port); packets/bytes (TCP payload) relayed on the NIC from each
    side; reason: SPLICE_END_*; fin_c / fin_s: a FIN was seen from that side;
    duration_ms: time from install to close."""

    __slots__ = ("splice_id", "client_key", "server_key", "reason", "fin_c", "fin_s",
                 "duration_ms", "packets_c", "bytes_c", "packets_s", "bytes_s")
    ETHERTYPE = ETHERTYPE_SPLICE_CLOSED
    TYPE = 0x04
    _S = struct.Struct("!BBH" "I" "12s" "12s" "BBH" "I" "QQQQ")

    def __init__(self, splice_id, client_key, server_key, reason=SPLICE_END_FIN, fin_c=False,
                 fin_s=False, duration_ms=0, packets_c=0, bytes_c=0, packets_s=0, bytes_s=0):
        self.splice_id = splice_id
        self.client_key = bytes(client_key)
        self.server_key = bytes(server_key)
        self.reason = reason
        self.fin_c = fin_c
        self.fin_s = fin_s
        self.duration_ms = duration_ms
        self.packets_c = packets_c
        self.bytes_c = bytes_c
        self.packets_s = packets_s
        self.bytes_s = bytes_s

    def _raw(self):
        return (self.splice_id, _bytes(self.client_key, 12, "client_key"),
                _bytes(self.server_key, 12, "server_key"), self.reason,
                (1 if self.fin_c else 0) | (2 if self.fin_s else 0), 0,
                self.duration_ms, self.packets_c, self.bytes_c, self.packets_s, self.bytes_s)

    @classmethod
    def _build(cls, t):
        sid, ck, sk, reason, fins, pad, dur, pc, bc, ps, bs = t
        _enum(reason, SPLICE_END_FIN, SPLICE_END_IDLE, "reason")
        _flags(fins, 3)
        _zero(pad)
        return cls(sid, ck, sk, reason, bool(fins & 1), bool(fins & 2), dur, pc, bc, ps,
                   bs)

class SpliceInstalled(_IdOnly):
    """CONTROL 0x14, NIC -> host: both rules of splice_id are active (8 bytes); the host
    may now drop its connection entries (Appendix A race)."""

    __slots__ = ("splice_id",)
    TYPE = 0x14

    def __init__(self, splice_id):
        self.splice_id = splice_id


class SpliceRefused(_Msg):
    """CONTROL 0x15, NIC -> host: splice_id not installed, the host keeps relaying
    (12 bytes). reason: SPLICE_REFUSED_*."""

    __slots__ = ("splice_id", "reason")
    TYPE = 0x15
    _S = struct.Struct("!BBH" "I" "BBH")

    def __init__(self, splice_id, reason=SPLICE_REFUSED_TABLE_FULL):
        self.splice_id = splice_id
        self.reason = reason

    def _raw(self):
        return (self.splice_id, self.reason, 0, 0)

    @classmethod
    def _build(cls, t):
        sid, reason, p1, p2 = t
        _enum(reason, SPLICE_REFUSED_TABLE_FULL, SPLICE_REFUSED_DUPLICATE, "reason")
        _zero(p1, p2)
        return cls(sid, reason)
