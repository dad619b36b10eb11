"""Host <-> NIC control frames (AccelTCP Appendix A): codecs only, no state.

Every offload frame is Ethernet II with an otherwise unused EtherType followed by a
*control header*. Frames that carry a TCP segment put the header between the Ethernet
and the IPv4 header (`wrap` / `unwrap`); the others are a standalone header (plus any
Ethernet padding, which decoders ignore).

    0x090A  ETHERTYPE_NEW_CONNECTION   NIC -> host   NewConnection + the client's ACK
    0x090B  ETHERTYPE_TEARDOWN         host -> NIC   Teardown + a TSO segment (all unsent data)
    0x090C  ETHERTYPE_SPLICE           host -> NIC   Splice (two L4 rules)
    0x090D  ETHERTYPE_SPLICE_CLOSED    NIC -> host   SpliceClosed
    0x090E  ETHERTYPE_CONTROL          both ways     Listen, Unlisten, StatusRequest,
            StatusReport, SpliceInstalled, SpliceRefused, TeardownAccepted,
            TeardownRefused, TeardownDone (told apart by the type byte)
    0x090F  ETHERTYPE_CHIMNEY          both ways     TCP Chimney partial offload: a fixed
            header per type followed by a body of the header's `length` bytes
            (ChimneyOffload, ChimneyAccepted, ChimneyRefused, ChimneyData, ChimneySend,
            ChimneyUploadRequest, ChimneyUpload; `decode_chimney`)

Every header starts with the same 4-byte preamble: version (1 byte, VERSION), type
(1 byte, the message's TYPE), header length (2 bytes, the fixed size of that type,
a multiple of 4, so the IPv4 header behind a wrapped header keeps its usual alignment).
Network byte order, fixed size per type, u32 fields on 4-byte and u64 fields on 8-byte
offsets (from the header start). Reserved/padding bytes and unknown flag bits must be
zero. Byte layouts and examples: docs/control-frames.md.

API: each message is a small `__slots__` value class with `encode() -> bytes` (the
control header alone; ValueError on values decode would refuse) and, for standalone
messages, `frame(eth_dst, eth_src) -> bytes` (Ethernet header + encode()).
`decode(frame)` takes a whole Ethernet frame and returns the message (for 0x090A/0x090B
only the header: use `unwrap` to get the segment too); `decode_header(buf)` decodes a bare
control header. Both raise WireError with one of CTL_DROP_REASONS and nothing else.
"""

import struct

from .errors import WireError

__all__ = [
    "VERSION", "ETHERTYPE_NEW_CONNECTION", "ETHERTYPE_TEARDOWN", "ETHERTYPE_SPLICE",
    "ETHERTYPE_SPLICE_CLOSED", "ETHERTYPE_CONTROL", "OFFLOAD_ETHERTYPES", "CTL_DROP_REASONS",
    "WS_NONE", "STATE_ESTABLISHED", "STATE_CLOSE_WAIT",
    "SPLICE_END_FIN", "SPLICE_END_RESET_CLIENT", "SPLICE_END_RESET_SERVER",
    "SPLICE_END_IDLE", "SPLICE_REFUSED_TABLE_FULL", "SPLICE_REFUSED_BAD_RULE",
    "SPLICE_REFUSED_DUPLICATE", "TEARDOWN_REFUSED_TABLE_FULL", "TEARDOWN_REFUSED_BAD_STATE",
    "TEARDOWN_REFUSED_DUPLICATE", "TEARDOWN_END_CLOSED", "TEARDOWN_END_RESET",
    "TEARDOWN_END_RETRIES",
    "NewConnection", "Teardown", "L4Rule", "SpliceSide", "make_key", "splice_rules",
    "Splice", "SpliceClosed", "Listen", "Unlisten",
    "StatusRequest", "StatusReport", "SpliceInstalled", "SpliceRefused", "TeardownAccepted",
    "TeardownRefused", "TeardownDone", "MESSAGES",
    "decode", "decode_header", "wrap", "unwrap", "decode_from_host", "wire_key",
    "ETHERTYPE_CHIMNEY", "CHIMNEY_MESSAGES", "CHIMNEY_MAX_BODY", "CHIMNEY_REFUSED_TABLE_FULL",
    "CHIMNEY_REFUSED_BAD_STATE", "CHIMNEY_REFUSED_DUPLICATE", "UPLOAD_HOST_REQUEST",
    "UPLOAD_APP_CLOSE", "UPLOAD_PEER_FIN", "UPLOAD_PEER_RST", "UPLOAD_REORDER",
    "UPLOAD_TIMEOUT", "UPLOAD_ERROR", "UPLOAD_REASONS", "CHIMNEY_DATA_FIN", "CHIMNEY_SEND_FIN",
    "ChimneyOffload", "ChimneyAccepted", "ChimneyRefused", "ChimneyData", "ChimneySend",
    "ChimneyUploadRequest", "ChimneyUpload", "decode_chimney", "encode_value",
    "decode_value", "state_chunks",
]

VERSION = 1

ETHERTYPE_NEW_CONNECTION = 0x090A
ETHERTYPE_TEARDOWN = 0x090B
ETHERTYPE_SPLICE = 0x090C
ETHERTYPE_SPLICE_CLOSED = 0x090D
ETHERTYPE_CONTROL = 0x090E
ETHERTYPE_CHIMNEY = 0x090F
OFFLOAD_ETHERTYPES = frozenset(range(0x090A, 0x0910))

#: Every WireError.reason this module raises (drop-counter keys, like DROP_REASONS).
CTL_DROP_REASONS = (
    "ctl_short",          # frame < 14 bytes, or fewer bytes than the preamble / header length
    "ctl_bad_ethertype",  # not an offload EtherType (or, for unwrap, not 0x090A/0x090B)
    "ctl_bad_version",    # version byte != VERSION
    "ctl_bad_type",       # unknown type byte, or a type not carried by this EtherType
    "ctl_bad_length",     # header-length field != the fixed size of the type
    "ctl_bad_field",      # a field outside its range: wscale, enum, flags, nonzero padding
)

WS_NONE = 0xFF                  # wire value of "no Window Scale option" (None in Python)

# TCP states a Teardown may carry (the numbers of tcp.states / RFC 9293 order).
STATE_ESTABLISHED = 4           # the NIC sends our FIN -> FIN-WAIT-1
STATE_CLOSE_WAIT = 7            # the peer's FIN was received; our FIN -> LAST-ACK
_TEARDOWN_STATES = (STATE_ESTABLISHED, STATE_CLOSE_WAIT)

SPLICE_END_FIN = 1              # both FINs sent and acknowledged
SPLICE_END_RESET_CLIENT = 2     # acceptable RST from the client side (rule a's sender)
SPLICE_END_RESET_SERVER = 3     # acceptable RST from the server side (rule b's sender)
SPLICE_END_IDLE = 4             # idle timeout on the NIC

SPLICE_REFUSED_TABLE_FULL = 1
SPLICE_REFUSED_BAD_RULE = 2     # rule inconsistent (offsets not paired, wscale > 14, ...)
SPLICE_REFUSED_DUPLICATE = 3    # a rule with one of these keys is already installed

TEARDOWN_REFUSED_TABLE_FULL = 1
TEARDOWN_REFUSED_BAD_STATE = 2  # header or segment not acceptable (the host keeps the flow)
TEARDOWN_REFUSED_DUPLICATE = 3  # the flow is already closing on the NIC

TEARDOWN_END_CLOSED = 1         # everything incl. FIN acknowledged, TIME-WAIT (if any) done
TEARDOWN_END_RESET = 2          # acceptable RST from the peer
TEARDOWN_END_RETRIES = 3        # retransmission limit reached (the NIC sent an RST)

_F_SACK = 0x01                  # flag byte bits (Listen, NewConnection, Teardown)
_F_TS = 0x02

_PRE = struct.Struct("!BBH")


def _bad(detail):
    raise WireError("ctl_bad_field", detail)


def _ws_in(v, what="wscale"):
    if v == WS_NONE:
        return None
    if v > 14:
        _bad(what)
    return v


def _ws_out(v):
    return WS_NONE if v is None else v


def _shift(v, what):
    if v > 14:
        _bad(what)
    return v


def _enum(v, lo, hi, what):
    if not lo <= v <= hi:
        _bad(what)
    return v


def _zero(*pads):
    if any(pads):
        _bad("reserved")


def _flags(v, allowed):
    if v & ~allowed:
        _bad("flags")
    return v


def _bytes(v, n, what):
    v = bytes(v)
    if len(v) != n:
        raise ValueError("%s must be %d bytes" % (what, n))
    return v


class _Msg:
    """Base: equality/repr over the slots, encode/decode through the per-class Struct."""

    __slots__ = ()
    ETHERTYPE = ETHERTYPE_CONTROL
    TYPE = 0
    CARRIES_SEGMENT = False
    _S = None        # struct.Struct of the whole header, preamble included

    def __eq__(self, other):
        return type(self) is type(other) and all(
            getattr(self, s) == getattr(other, s) for s in self.__slots__)

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join(
            "%s=%r" % (s, getattr(self, s)) for s in self.__slots__))

    def encode(self, check=True):
        """The control header (bytes). ValueError on a value the decoder would refuse
        (``check=False``: only struct's range checks, for values built by this project's
        own code on a hot path)."""
        try:
            b = self._S.pack(VERSION, self.TYPE, self._S.size, *self._raw())
            if check:
                self._build(self._S.unpack(b)[3:])
        except struct.error as e:
            raise ValueError(str(e)) from None
        except WireError as e:
            raise ValueError("%s: %s" % (type(self).__name__, e)) from None
        return b

    def frame(self, eth_dst, eth_src):
        """Ethernet header (this message's EtherType) + encode(); standalone messages only."""
        if self.CARRIES_SEGMENT:
            raise TypeError("%s travels in front of a segment: use wrap()" % type(self).__name__)
        return _bytes(eth_dst, 6, "eth_dst") + _bytes(eth_src, 6, "eth_src") + \
            self.ETHERTYPE.to_bytes(2, "big") + self.encode()


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


class Teardown(_Msg):
    """0x090B, host -> NIC, in front of a TSO segment with all remaining send data (40 bytes).

    The segment's TCP header gives seq = SND.UNA, ack = RCV.NXT and our receive window
    field (already scaled by rcv_wscale); its payload is everything not yet acknowledged.
    The NIC always appends our FIN after the payload. mss: segment size to cut the TSO
    payload into; state: STATE_ESTABLISHED or STATE_CLOSE_WAIT (peer's FIN received);
    rto_us: current RTO (µs); flow_id: id for the reports, 0 = the NIC assigns one;
    snd_wnd: the peer's window in bytes (SND.WND, already scaled); snd_wscale: the
    peer's shift (0..14, 0 without WS); rcv_wscale: ours; sack_ok / timestamps: options
    in use; max_retries: retransmissions before giving up (RST); ts_recent: TS.Recent;
    ts_offset: our TSval = (NIC TS clock + ts_offset) mod 2**32, bit 0 cleared; ts_last:
    the last TSval the host sent (never go below); time_wait_ms: TIME-WAIT length (2 MSL).
    """

    __slots__ = ("mss", "state", "rto_us", "flow_id", "snd_wnd", "snd_wscale", "rcv_wscale",
                 "sack_ok", "timestamps", "max_retries", "ts_recent", "ts_offset", "ts_last",
                 "time_wait_ms")
    ETHERTYPE = ETHERTYPE_TEARDOWN
    TYPE = 0x02
    CARRIES_SEGMENT = True
    _S = struct.Struct("!BBH" "HH" "I" "I" "I" "BBBB" "I" "I" "I" "I")

    def __init__(self, mss=1460, state=STATE_ESTABLISHED, rto_us=200000, flow_id=0,
                 snd_wnd=0, snd_wscale=0, rcv_wscale=0, sack_ok=False, timestamps=False,
                 max_retries=8, ts_recent=0, ts_offset=0, ts_last=0, time_wait_ms=60000):
        self.mss = mss
        self.state = state
        self.rto_us = rto_us
        self.flow_id = flow_id
        self.snd_wnd = snd_wnd
        self.snd_wscale = snd_wscale
        self.rcv_wscale = rcv_wscale
        self.sack_ok = sack_ok
        self.timestamps = timestamps
        self.max_retries = max_retries
        self.ts_recent = ts_recent
        self.ts_offset = ts_offset
        self.ts_last = ts_last
        self.time_wait_ms = time_wait_ms

    def _raw(self):
        return (self.mss, self.state, self.rto_us, self.flow_id, self.snd_wnd,
                self.snd_wscale, self.rcv_wscale,
                (_F_SACK if self.sack_ok else 0) | (_F_TS if self.timestamps else 0),
                self.max_retries, self.ts_recent, self.ts_offset, self.ts_last,
                self.time_wait_ms)

    @classmethod
    def _build(cls, t):
        (mss, state, rto, fid, wnd, sws, rws, fl, retries, recent, off, last, tw) = t
        if state not in _TEARDOWN_STATES:
            _bad("state")
        _flags(fl, _F_SACK | _F_TS)
        return cls(mss, state, rto, fid, wnd, _shift(sws, "snd_wscale"),
                   _shift(rws, "rcv_wscale"), bool(fl & _F_SACK), bool(fl & _F_TS), retries,
                   recent, off, last, tw)


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


class Listen(_Msg):
    """CONTROL 0x10, host -> NIC: answer SYNs to ip:port with cookies, offering these
    options (16 bytes). ip 0.0.0.0 = any local address; wscale None = no WS option."""

    __slots__ = ("ip", "port", "mss", "wscale", "sack_ok", "timestamps")
    TYPE = 0x10
    _S = struct.Struct("!BBH" "4s" "HH" "BBH")

    def __init__(self, ip, port, mss=1460, wscale=None, sack_ok=False, timestamps=True):
        self.ip = bytes(ip)
        self.port = port
        self.mss = mss
        self.wscale = wscale
        self.sack_ok = sack_ok
        self.timestamps = timestamps

    def _raw(self):
        return (_bytes(self.ip, 4, "ip"), self.port, self.mss, _ws_out(self.wscale),
                (_F_SACK if self.sack_ok else 0) | (_F_TS if self.timestamps else 0), 0)

    @classmethod
    def _build(cls, t):
        ip, port, mss, ws, fl, pad = t
        _flags(fl, _F_SACK | _F_TS)
        _zero(pad)
        return cls(ip, port, mss, _ws_in(ws), bool(fl & _F_SACK), bool(fl & _F_TS))


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


class _IdOnly(_Msg):
    __slots__ = ()
    _S = struct.Struct("!BBH" "I")

    def _raw(self):
        return (getattr(self, self.__slots__[0]),)

    @classmethod
    def _build(cls, t):
        return cls(t[0])


class StatusRequest(_IdOnly):
    """CONTROL 0x12, host -> NIC: ask for a StatusReport echoing request_id (8 bytes)."""

    __slots__ = ("request_id",)
    TYPE = 0x12

    def __init__(self, request_id=0):
        self.request_id = request_id


class StatusReport(_Msg):
    """CONTROL 0x13, NIC -> host (88 bytes). request_id 0 = unsolicited (periodic).
    Gauges (u32): teardown flows in progress / capacity, splice rules in use / capacity
    (rules: two per splice), listeners / capacity. Counters (u64, since NIC start):
    cookies sent (SYN-ACKs), cookies verified (NewConnection sent), cookie ACKs that
    failed verification, SYNs passed to the host, teardowns finished, splices closed,
    frames the NIC dropped."""

    __slots__ = ("request_id", "teardown_active", "teardown_capacity", "splice_rules",
                 "splice_capacity", "listeners", "listener_capacity", "cookies_sent",
                 "cookies_ok", "cookies_bad", "syn_to_host", "teardowns_done",
                 "splices_closed", "drops")
    TYPE = 0x13
    _S = struct.Struct("!BBH" "IIIIIII" "QQQQQQQ")

    def __init__(self, request_id=0, teardown_active=0, teardown_capacity=0, splice_rules=0,
                 splice_capacity=0, listeners=0, listener_capacity=0, cookies_sent=0,
                 cookies_ok=0, cookies_bad=0, syn_to_host=0, teardowns_done=0,
                 splices_closed=0, drops=0):
        self.request_id = request_id
        self.teardown_active = teardown_active
        self.teardown_capacity = teardown_capacity
        self.splice_rules = splice_rules
        self.splice_capacity = splice_capacity
        self.listeners = listeners
        self.listener_capacity = listener_capacity
        self.cookies_sent = cookies_sent
        self.cookies_ok = cookies_ok
        self.cookies_bad = cookies_bad
        self.syn_to_host = syn_to_host
        self.teardowns_done = teardowns_done
        self.splices_closed = splices_closed
        self.drops = drops

    def _raw(self):
        return tuple(getattr(self, s) for s in self.__slots__)

    @classmethod
    def _build(cls, t):
        return cls(*t)


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


class TeardownAccepted(_Msg):
    """CONTROL 0x16, NIC -> host: the NIC owns the flow now (20 bytes). flow_id: the
    host's, or the one the NIC assigned; key: raw 4-tuple of frames *from the peer*
    (src-ip|dst-ip|sport|dport, as frame[26:38])."""

    __slots__ = ("flow_id", "key")
    TYPE = 0x16
    _S = struct.Struct("!BBH" "I" "12s")

    def __init__(self, flow_id, key):
        self.flow_id = flow_id
        self.key = bytes(key)

    def _raw(self):
        return (self.flow_id, _bytes(self.key, 12, "key"))

    @classmethod
    def _build(cls, t):
        return cls(*t)


class _Refusal:
    """A refusal's layout (24 bytes): flow id, the 4-tuple key, a reason from REASONS =
    (lowest, highest); the lowest is the default (TeardownRefused, ChimneyRefused)."""

    __slots__ = ()
    _S = struct.Struct("!BBH" "I" "12s" "BBH")
    REASONS = (0, 0)

    def __init__(self, flow_id, key, reason=None):
        self.flow_id = flow_id
        self.key = bytes(key)
        self.reason = self.REASONS[0] if reason is None else reason

    def _raw(self):
        return (self.flow_id, _bytes(self.key, 12, "key"), self.reason, 0, 0)

    @classmethod
    def _build(cls, t):
        fid, key, reason, p1, p2 = t
        _enum(reason, *cls.REASONS, "reason")
        _zero(p1, p2)
        return cls(fid, key, reason)


class TeardownRefused(_Refusal, _Msg):
    """CONTROL 0x17, NIC -> host: not taken (the segment was discarded); the host keeps
    the TCB and closes it itself (24 bytes). reason: TEARDOWN_REFUSED_*."""

    __slots__ = ("flow_id", "key", "reason")
    TYPE = 0x17
    REASONS = (TEARDOWN_REFUSED_TABLE_FULL, TEARDOWN_REFUSED_DUPLICATE)


class TeardownDone(_Msg):
    """CONTROL 0x18, NIC -> host: an offloaded teardown finished, its entry is free
    (40 bytes). reason: TEARDOWN_END_*; retransmits: segments the NIC retransmitted;
    bytes_acked: handed-over payload bytes the peer acknowledged; bytes_received: payload
    the peer sent after the handover (acknowledged and discarded)."""

    __slots__ = ("flow_id", "key", "reason", "retransmits", "bytes_acked", "bytes_received")
    TYPE = 0x18
    _S = struct.Struct("!BBH" "I" "12s" "BBH" "QQ")

    def __init__(self, flow_id, key, reason=TEARDOWN_END_CLOSED, retransmits=0, bytes_acked=0,
                 bytes_received=0):
        self.flow_id = flow_id
        self.key = bytes(key)
        self.reason = reason
        self.retransmits = retransmits
        self.bytes_acked = bytes_acked
        self.bytes_received = bytes_received

    def _raw(self):
        return (self.flow_id, _bytes(self.key, 12, "key"), self.reason, 0, self.retransmits,
                self.bytes_acked, self.bytes_received)

    @classmethod
    def _build(cls, t):
        fid, key, reason, pad, rtx, acked, rcvd = t
        _enum(reason, TEARDOWN_END_CLOSED, TEARDOWN_END_RETRIES, "reason")
        _zero(pad)
        return cls(fid, key, reason, rtx, acked, rcvd)


MESSAGES = (NewConnection, Teardown, Splice, SpliceClosed, Listen, Unlisten, StatusRequest,
            StatusReport, SpliceInstalled, SpliceRefused, TeardownAccepted, TeardownRefused,
            TeardownDone)
_BY_TYPE = {m.TYPE: m for m in MESSAGES}


def decode_header(buf, ethertype=None):
    """Decode a bare control header at the start of `buf` (trailing bytes ignored).
    With `ethertype`, the type must be one that EtherType carries. Raises WireError."""
    if len(buf) < 4:
        raise WireError("ctl_short", "preamble")
    version, typ, hlen = _PRE.unpack_from(buf)
    if version != VERSION:
        raise WireError("ctl_bad_version", str(version))
    cls = _BY_TYPE.get(typ)
    if cls is None or (ethertype is not None and cls.ETHERTYPE != ethertype):
        raise WireError("ctl_bad_type", "0x%02x" % typ)
    size = cls._S.size
    if hlen != size:
        raise WireError("ctl_bad_length", "%d != %d" % (hlen, size))
    if len(buf) < size:
        raise WireError("ctl_short", cls.__name__)
    return cls._build(cls._S.unpack_from(buf)[3:])


def _ethertype(frame):
    if len(frame) < 14:
        raise WireError("ctl_short", "ethernet")
    et = (frame[12] << 8) | frame[13]
    if et not in OFFLOAD_ETHERTYPES:
        raise WireError("ctl_bad_ethertype", "0x%04x" % et)
    return et


def decode(frame):
    """A whole offload Ethernet frame -> its message (for 0x090A/0x090B: the header only).
    Raises WireError (CTL_DROP_REASONS)."""
    et = _ethertype(frame)
    if et == ETHERTYPE_CHIMNEY:
        return decode_chimney(frame)
    return decode_header(memoryview(frame)[14:], et)


def wrap(ethernet_frame, header, check=True):
    """IPv4 Ethernet frame + NewConnection/Teardown header -> offload frame (EtherType
    replaced, header inserted between Ethernet and IP). ValueError if the frame is not
    IPv4 or the header does not carry a segment (`check`: see ``encode``)."""
    if not header.CARRIES_SEGMENT:
        raise ValueError("%s does not travel in front of a segment" % type(header).__name__)
    if len(ethernet_frame) < 14 or ethernet_frame[12:14] != b"\x08\x00":
        raise ValueError("not an IPv4 Ethernet frame")
    return bytes(ethernet_frame[:12]) + header.ETHERTYPE.to_bytes(2, "big") + \
        header.encode(check) + bytes(ethernet_frame[14:])


def unwrap(frame):
    """Offload frame (0x090A/0x090B) -> (header, the Ethernet frame with EtherType 0x0800
    and the header removed). Raises WireError; the IP/TCP part is not checked here."""
    et = _ethertype(frame)
    if et not in (ETHERTYPE_NEW_CONNECTION, ETHERTYPE_TEARDOWN):
        raise WireError("ctl_bad_ethertype", "0x%04x carries no segment" % et)
    header = decode_header(memoryview(frame)[14:], et)
    return header, bytes(frame[:12]) + b"\x08\x00" + bytes(frame[14 + header._S.size:])


def decode_from_host(frame):
    """A control frame the host sends its NIC -> (message, the segment frame a 0x090B
    Teardown carries, else None), or None if its EtherType is none of the host->NIC
    ones (0x090B, 0x090C, 0x090E, 0x090F). Raises WireError when it does not decode."""
    et = (frame[12] << 8) | frame[13]
    if et == ETHERTYPE_TEARDOWN:
        return unwrap(frame)
    if et == ETHERTYPE_CHIMNEY:
        return decode_chimney(frame), None
    if et == ETHERTYPE_CONTROL or et == ETHERTYPE_SPLICE:
        return decode(frame), None
    return None


def wire_key(frame):
    """The wire-side 4-tuple key (client ip | local ip | client port | local port, as in
    ``frame[26:38]`` of a frame from the client) of a frame the host sends (local ip |
    client ip | local port | client port); 12 zero bytes for a frame too short to have
    one."""
    if len(frame) < 38:
        return bytes(12)
    return (bytes(frame[30:34]) + bytes(frame[26:30]) + bytes(frame[36:38])
            + bytes(frame[34:36]))


# --- TCP Chimney partial offload (0x090F) ----------------------------------------------
#
# The host hands an established connection's whole TCB to the NIC (ChimneyOffload: the
# state value, ``tcp.tcbstate.TcbState``, in the plain-value encoding below, cut into
# chunks); the NIC answers ChimneyAccepted or ChimneyRefused (the host keeps it). While
# offloaded the host gives the NIC bytes to send (ChimneySend, numbered by their offset
# in the stream since the offload) and the NIC gives the host the in-order bytes it
# received (ChimneyData; also the count of the host's bytes the peer acknowledged, so
# the host knows how much the NIC still holds). The state comes back in ChimneyUpload
# (chunks again, with a reason), unsolicited or after a ChimneyUploadRequest.

CHIMNEY_MAX_BODY = 60000        # body bytes per frame (a state is cut into chunks)
CHIMNEY_REFUSED_TABLE_FULL = 1
CHIMNEY_REFUSED_BAD_STATE = 2   # the state does not decode or is not one the NIC runs
CHIMNEY_REFUSED_DUPLICATE = 3   # the 4-tuple is already offloaded (or spliced, tearing down)

UPLOAD_HOST_REQUEST = 1         # ChimneyUploadRequest from the host (also a request reason)
UPLOAD_APP_CLOSE = 2            # the app closes: the host finishes the connection itself
UPLOAD_PEER_FIN = 3             # the peer's FIN arrived (state CLOSE-WAIT or later)
UPLOAD_PEER_RST = 4             # an acceptable RST: state CLOSED, error "reset"
UPLOAD_REORDER = 5              # out-of-order data beyond what the NIC holds
UPLOAD_TIMEOUT = 6              # retransmission limit: the NIC's TCB reset the peer
UPLOAD_ERROR = 7                # the NIC could not run the TCB: no state (the host resets)
UPLOAD_REASONS = (UPLOAD_HOST_REQUEST, UPLOAD_APP_CLOSE, UPLOAD_PEER_FIN, UPLOAD_PEER_RST,
                  UPLOAD_REORDER, UPLOAD_TIMEOUT, UPLOAD_ERROR)
CHIMNEY_DATA_FIN = 0x01         # ChimneyData flags: the peer's FIN follows these bytes
CHIMNEY_SEND_FIN = 0x01         # ChimneySend flags: our FIN follows these bytes (shutdown)


class _ChMsg(_Msg):
    """A 0x090F message: the fixed header (with a u32 `length` as its last field) and
    `body` (bytes) right behind it."""

    __slots__ = ()
    ETHERTYPE = ETHERTYPE_CHIMNEY
    HAS_BODY = False

    def encode(self, check=True):
        b = _Msg.encode(self, check)
        if self.HAS_BODY:
            if len(self.body) > CHIMNEY_MAX_BODY:
                raise ValueError("%s: body above CHIMNEY_MAX_BODY" % type(self).__name__)
            b += bytes(self.body)
        return b


def _body_len(body):
    n = len(body)
    if n > CHIMNEY_MAX_BODY:
        raise ValueError("body above CHIMNEY_MAX_BODY")
    return n


class ChimneyOffload(_ChMsg):
    """0x090F type 0x20, host -> NIC (44 bytes + body): one chunk of an offload.

    flow_id: the host's id for the reports; key: the wire-side 4-tuple (frames from the
    peer, frame[26:38]); peer_mac / local_mac: the Ethernet addresses the NIC's segments
    carry (dst, src); total: length of the encoded state; offset: this chunk's offset in
    it; body: the chunk. The NIC takes the flow when the last chunk is in."""

    __slots__ = ("flow_id", "key", "peer_mac", "local_mac", "total", "offset", "body")
    TYPE = 0x20
    HAS_BODY = True
    _S = struct.Struct("!BBH" "I" "12s" "6s6s" "I" "I" "I")

    def __init__(self, flow_id, key, peer_mac, local_mac, total, offset, body=b""):
        self.flow_id = flow_id
        self.key = bytes(key)
        self.peer_mac = bytes(peer_mac)
        self.local_mac = bytes(local_mac)
        self.total = total
        self.offset = offset
        self.body = bytes(body)

    def _raw(self):
        return (self.flow_id, _bytes(self.key, 12, "key"), _bytes(self.peer_mac, 6, "mac"),
                _bytes(self.local_mac, 6, "mac"), self.total, self.offset,
                _body_len(self.body))

    @classmethod
    def _build(cls, t):
        fid, key, pmac, lmac, total, off, n = t
        if off + n > total:
            _bad("chunk beyond total")
        return cls(fid, key, pmac, lmac, total, off)


class ChimneyAccepted(_ChMsg):
    """0x090F type 0x21, NIC -> host (20 bytes): the NIC runs the connection now."""

    __slots__ = ("flow_id", "key")
    TYPE = 0x21
    _S = struct.Struct("!BBH" "I" "12s")

    def __init__(self, flow_id, key):
        self.flow_id = flow_id
        self.key = bytes(key)

    def _raw(self):
        return (self.flow_id, _bytes(self.key, 12, "key"))

    @classmethod
    def _build(cls, t):
        return cls(*t)


class ChimneyRefused(_Refusal, _ChMsg):
    """0x090F type 0x22, NIC -> host (24 bytes): not taken, the host keeps the TCB
    (it never stopped being the host's). reason: CHIMNEY_REFUSED_*."""

    __slots__ = ("flow_id", "key", "reason")
    TYPE = 0x22
    REASONS = (CHIMNEY_REFUSED_TABLE_FULL, CHIMNEY_REFUSED_DUPLICATE)


class ChimneyData(_ChMsg):
    """0x090F type 0x23, NIC -> host (36 bytes + body): in-order bytes the NIC received
    and acknowledged. offset: stream offset (mod 2**32, counted from the offload) of the
    body's first byte; acked: how many of the host's bytes (ChimneySend offsets) the peer
    has acknowledged so far (mod 2**32); flags: CHIMNEY_DATA_FIN. An empty body reports
    `acked` alone (a send completion)."""

    __slots__ = ("flow_id", "key", "flags", "offset", "acked", "body")
    TYPE = 0x23
    HAS_BODY = True
    _S = struct.Struct("!BBH" "I" "12s" "BBH" "I" "I" "I")

    def __init__(self, flow_id, key, flags=0, offset=0, acked=0, body=b""):
        self.flow_id = flow_id
        self.key = bytes(key)
        self.flags = flags
        self.offset = offset
        self.acked = acked
        self.body = bytes(body)

    def _raw(self):
        return (self.flow_id, _bytes(self.key, 12, "key"), self.flags, 0, 0, self.offset,
                self.acked, _body_len(self.body))

    @classmethod
    def _build(cls, t):
        fid, key, fl, p1, p2, off, acked, _n = t
        _flags(fl, CHIMNEY_DATA_FIN)
        _zero(p1, p2)
        return cls(fid, key, fl, off, acked)


class ChimneySend(_ChMsg):
    """0x090F type 0x24, host -> NIC (36 bytes + body): bytes for the NIC to send.
    offset: their stream offset (mod 2**32, counted from the offload); the NIC takes
    only the next bytes in order (a repeat or a gap is dropped and counted). read: how
    many of the received bytes (ChimneyData offsets) the app has consumed (mod 2**32):
    the NIC delivers at most the receive buffer's size beyond it, so a slow reader
    closes the TCB's window as it would on the host. An empty body: a credit only.
    flags: CHIMNEY_SEND_FIN, the app shut its sending side down after these bytes (the
    NIC's TCB queues our FIN; the connection stays offloaded until the peer's FIN)."""

    __slots__ = ("flow_id", "key", "flags", "offset", "read", "body")
    TYPE = 0x24
    HAS_BODY = True
    _S = struct.Struct("!BBH" "I" "12s" "BBH" "I" "I" "I")

    def __init__(self, flow_id, key, offset=0, read=0, body=b"", flags=0):
        self.flow_id = flow_id
        self.key = bytes(key)
        self.flags = flags
        self.offset = offset
        self.read = read
        self.body = bytes(body)

    def _raw(self):
        return (self.flow_id, _bytes(self.key, 12, "key"), self.flags, 0, 0, self.offset,
                self.read, _body_len(self.body))

    @classmethod
    def _build(cls, t):
        fid, key, fl, p1, p2, off, read, _n = t
        _flags(fl, CHIMNEY_SEND_FIN)
        _zero(p1, p2)
        return cls(fid, key, off, read, b"", fl)


class ChimneyUploadRequest(_ChMsg):
    """0x090F type 0x25, host -> NIC (24 bytes): give the connection back.
    reason: UPLOAD_HOST_REQUEST or UPLOAD_APP_CLOSE."""

    __slots__ = ("flow_id", "key", "reason")
    TYPE = 0x25
    _S = struct.Struct("!BBH" "I" "12s" "BBH")

    def __init__(self, flow_id, key, reason=UPLOAD_HOST_REQUEST):
        self.flow_id = flow_id
        self.key = bytes(key)
        self.reason = reason

    def _raw(self):
        return (self.flow_id, _bytes(self.key, 12, "key"), self.reason, 0, 0)

    @classmethod
    def _build(cls, t):
        fid, key, reason, p1, p2 = t
        _enum(reason, UPLOAD_HOST_REQUEST, UPLOAD_APP_CLOSE, "reason")
        _zero(p1, p2)
        return cls(fid, key, reason)


class ChimneyUpload(_ChMsg):
    """0x090F type 0x26, NIC -> host (36 bytes + body): one chunk of the state coming
    back (total / offset as in ChimneyOffload). The NIC forgot the flow when it sent
    the first chunk; the host owns it once the last one is in. reason: UPLOAD_*."""

    __slots__ = ("flow_id", "key", "reason", "total", "offset", "body")
    TYPE = 0x26
    HAS_BODY = True
    _S = struct.Struct("!BBH" "I" "12s" "BBH" "I" "I" "I")

    def __init__(self, flow_id, key, reason, total, offset, body=b""):
        self.flow_id = flow_id
        self.key = bytes(key)
        self.reason = reason
        self.total = total
        self.offset = offset
        self.body = bytes(body)

    def _raw(self):
        return (self.flow_id, _bytes(self.key, 12, "key"), self.reason, 0, 0, self.total,
                self.offset, _body_len(self.body))

    @classmethod
    def _build(cls, t):
        fid, key, reason, p1, p2, total, off, n = t
        _enum(reason, UPLOAD_HOST_REQUEST, UPLOAD_ERROR, "reason")
        _zero(p1, p2)
        if off + n > total:
            _bad("chunk beyond total")
        return cls(fid, key, reason, total, off)


CHIMNEY_MESSAGES = (ChimneyOffload, ChimneyAccepted, ChimneyRefused, ChimneyData,
                    ChimneySend, ChimneyUploadRequest, ChimneyUpload)
_CH_BY_TYPE = {m.TYPE: m for m in CHIMNEY_MESSAGES}


def decode_chimney(frame):
    """A whole 0x090F frame -> its message, body included (trailing Ethernet padding
    ignored). Raises WireError (CTL_DROP_REASONS)."""
    if _ethertype(frame) != ETHERTYPE_CHIMNEY:
        raise WireError("ctl_bad_ethertype", "not 0x090f")
    buf = memoryview(frame)[14:]
    if len(buf) < 4:
        raise WireError("ctl_short", "preamble")
    version, typ, hlen = _PRE.unpack_from(buf)
    if version != VERSION:
        raise WireError("ctl_bad_version", str(version))
    cls = _CH_BY_TYPE.get(typ)
    if cls is None:
        raise WireError("ctl_bad_type", "0x%02x" % typ)
    size = cls._S.size
    if hlen != size:
        raise WireError("ctl_bad_length", "%d != %d" % (hlen, size))
    if len(buf) < size:
        raise WireError("ctl_short", cls.__name__)
    t = cls._S.unpack_from(buf)[3:]
    msg = cls._build(t)
    if cls.HAS_BODY:
        n = t[-1]
        if n > CHIMNEY_MAX_BODY:
            raise WireError("ctl_bad_length", "body %d" % n)
        if len(buf) < size + n:
            raise WireError("ctl_short", cls.__name__ + " body")
        msg.body = bytes(buf[size:size + n])
    return msg


def state_chunks(blob):
    """(total, offset, chunk) pieces of an encoded state, CHIMNEY_MAX_BODY at most each
    (one empty piece for an empty blob)."""
    n = len(blob)
    return [(n, off, bytes(blob[off:off + CHIMNEY_MAX_BODY]))
            for off in range(0, max(n, 1), CHIMNEY_MAX_BODY)]


# Plain-value encoding of a chimney state (a tree of tuples over None, bool, int, float,
# str, bytes): one tag byte per value, then its payload (network byte order).
_V_NONE, _V_FALSE, _V_TRUE, _V_INT, _V_FLOAT, _V_BYTES, _V_STR, _V_TUPLE = range(8)
_Q = struct.Struct("!q")
_D = struct.Struct("!d")
_L = struct.Struct("!I")
_MAX_DEPTH = 8


def encode_value(v):
    """A plain value -> bytes (ValueError for anything else, or an int outside i64)."""
    out = bytearray()
    _enc(v, out, 0)
    return bytes(out)


def _enc(v, out, depth):
    if v is None:
        out.append(_V_NONE)
    elif v is True or v is False:
        out.append(_V_TRUE if v else _V_FALSE)
    elif type(v) is int:
        if not -(1 << 63) <= v < (1 << 63):
            raise ValueError("int outside i64")
        out.append(_V_INT)
        out += _Q.pack(v)
    elif type(v) is float:
        out.append(_V_FLOAT)
        out += _D.pack(v)
    elif type(v) is bytes:
        out.append(_V_BYTES)
        out += _L.pack(len(v))
        out += v
    elif type(v) is str:
        b = v.encode("ascii")
        out.append(_V_STR)
        out += _L.pack(len(b))
        out += b
    elif type(v) is tuple:
        if depth >= _MAX_DEPTH:
            raise ValueError("nested too deep")
        out.append(_V_TUPLE)
        out += _L.pack(len(v))
        for x in v:
            _enc(x, out, depth + 1)
    else:
        raise ValueError("not a plain value: %s" % type(v).__name__)


def decode_value(buf):
    """bytes -> the plain value; WireError (ctl_short / ctl_bad_field) when malformed
    (an unknown tag, a truncated value, trailing bytes, nesting deeper than 8)."""
    mv = memoryview(buf)
    v, pos = _dec(mv, 0, 0)
    if pos != len(mv):
        _bad("trailing bytes after the state")
    return v


def _need(mv, pos, n):
    if pos + n > len(mv):
        raise WireError("ctl_short", "state value")


def _dec(mv, pos, depth):
    _need(mv, pos, 1)
    tag = mv[pos]
    pos += 1
    if tag == _V_NONE:
        return None, pos
    if tag == _V_FALSE:
        return False, pos
    if tag == _V_TRUE:
        return True, pos
    if tag == _V_INT:
        _need(mv, pos, 8)
        return _Q.unpack_from(mv, pos)[0], pos + 8
    if tag == _V_FLOAT:
        _need(mv, pos, 8)
        return _D.unpack_from(mv, pos)[0], pos + 8
    if tag == _V_BYTES or tag == _V_STR:
        _need(mv, pos, 4)
        n = _L.unpack_from(mv, pos)[0]
        pos += 4
        _need(mv, pos, n)
        b = bytes(mv[pos:pos + n])
        if tag == _V_STR:
            try:
                return b.decode("ascii"), pos + n
            except UnicodeDecodeError:
                _bad("state string")
        return b, pos + n
    if tag == _V_TUPLE:
        if depth >= _MAX_DEPTH:
            _bad("state nested too deep")
        _need(mv, pos, 4)
        n = _L.unpack_from(mv, pos)[0]
        pos += 4
        if n > len(mv) - pos:             # each item is at least its tag byte
            raise WireError("ctl_short", "state tuple")
        items = []
        for _ in range(n):
            x, pos = _dec(mv, pos, depth + 1)
            items.append(x)
        return tuple(items), pos
    _bad("state tag %d" % tag)
