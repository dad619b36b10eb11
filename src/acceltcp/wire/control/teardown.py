"""Teardown offload (AccelTCP §4.2): the host hands a closing connection to the NIC as a
`Teardown` header in front of a segment with all unacknowledged data (0x090B); the NIC
answers `TeardownAccepted` or `TeardownRefused` and reports `TeardownDone` at the end."""

import struct

from .base import (_F_SACK, _F_TS, ETHERTYPE_TEARDOWN, VERSION, _bad, _bytes, _enum, _flags,
                   _FlowKey, _FlowReason, _Msg, _shift, _zero)

__all__ = ["STATE_ESTABLISHED", "STATE_CLOSE_WAIT", "TEARDOWN_REFUSED_TABLE_FULL",
           "TEARDOWN_REFUSED_BAD_STATE", "TEARDOWN_REFUSED_DUPLICATE", "TEARDOWN_END_CLOSED",
           "TEARDOWN_END_RESET", "TEARDOWN_END_RETRIES", "Teardown", "TeardownAccepted",
           "TeardownRefused", "TeardownDone"]

# TCP states a Teardown may carry (the numbers of tcp.states / RFC 9293 order).
STATE_ESTABLISHED = 4           # the NIC sends our FIN -> FIN-WAIT-1
STATE_CLOSE_WAIT = 7            # the peer's FIN was received; our FIN -> LAST-ACK
_TEARDOWN_STATES = (STATE_ESTABLISHED, STATE_CLOSE_WAIT)

TEARDOWN_REFUSED_TABLE_FULL = 1
TEARDOWN_REFUSED_BAD_STATE = 2  # header or segment not acceptable (the host keeps the flow)
TEARDOWN_REFUSED_DUPLICATE = 3  # the flow is already closing on the NIC

TEARDOWN_END_CLOSED = 1         # everything incl. FIN acknowledged, TIME-WAIT (if any) done
TEARDOWN_END_RESET = 2          # acceptable RST from the peer
TEARDOWN_END_RETRIES = 3        # retransmission limit reached (the NIC sent an RST)


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
    def pack(cls, mss, state, rto_us, flow_id, snd_wnd, snd_wscale, rcv_wscale, sack_ok,
             timestamps, max_retries, ts_recent, ts_offset, ts_last, time_wait_ms):
        """``Teardown(...).encode(False)`` without the object: the host's per-connection
        path (host.offload) encodes its offers here."""
        return cls._S.pack(VERSION, cls.TYPE, cls._S.size, mss, state, rto_us, flow_id,
                           snd_wnd, snd_wscale, rcv_wscale,
                           (_F_SACK if sack_ok else 0) | (_F_TS if timestamps else 0),
                           max_retries, ts_recent, ts_offset, ts_last, time_wait_ms)

    @classmethod
    def _build(cls, t):
        (mss, state, rto, fid, wnd, sws, rws, fl, retries, recent, off, last, tw) = t
        if state not in _TEARDOWN_STATES:
            _bad("state")
        _flags(fl, _F_SACK | _F_TS)
        return cls(mss, state, rto, fid, wnd, _shift(sws, "snd_wscale"),
                   _shift(rws, "rcv_wscale"), bool(fl & _F_SACK), bool(fl & _F_TS), retries,
                   recent, off, last, tw)


class TeardownAccepted(_FlowKey, _Msg):
    """CONTROL 0x16, NIC -> host: the NIC owns the flow now (20 bytes). flow_id: the
    host's, or the one the NIC assigned; key: raw 4-tuple of frames *from the peer*
    (src-ip|dst-ip|sport|dport, as frame[26:38])."""

    __slots__ = ("flow_id", "key")
    TYPE = 0x16


class TeardownRefused(_FlowReason, _Msg):
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
