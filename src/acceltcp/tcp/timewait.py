"""TIME-WAIT without a TCB: what is left of a connection for its last 2MSL.

Once both FINs are exchanged, a connection needs only enough state to answer a
retransmitted FIN, ignore or accept an RST, and tell a new incarnation's SYN from an
old duplicate (RFC 9293 §3.10.7.4 TIME-WAIT; RFC 6191; Linux's tcp_minisocks.c). The
host hands the TCB's TIME-WAIT to a ``TimeWait`` record (``TcpConnection.handoff_time_wait``)
and frees the TCB, so a busy server keeps ~100 bytes per closed connection instead of
a full TCB, and reaps them from a FIFO instead of the timer heap.
"""

import struct

from .seq import seq_add, seq_diff, seq_gt, seq_lt
from .states import TIME_WAIT
from ..wire.tcp import ACK, FIN, RST, SYN

MASK = 0xFFFFFFFF
TS_OPTION = struct.Struct("!III")
TS_HEAD = 0x0101080A
TS_MASK = 0xFFFFFFFE       # TSvals keep bit 0 clear (the NIC's cookie mark; tcp.connection)

# What the owner does after ``on_segment``.
KEEP = 0          # still in TIME-WAIT
REMOVE = 1        # an acceptable RST ended it
REOPEN = 2        # a SYN from a new incarnation: end it and treat the SYN as new


class TimeWait:
    state = TIME_WAIT             # read-only views treat it like a TCB in TIME-WAIT
    closed = False

    __slots__ = ("owner", "key", "output", "snd_nxt", "rcv_nxt", "window", "wscale", "ts_ok",
                 "ts_offset", "ts_hz", "ts_recent", "ts_recent_time", "expires", "duration")

    def __init__(self, owner, key, output, snd_nxt, rcv_nxt, window, wscale, ts_ok,
                 ts_offset, ts_hz, ts_recent, ts_recent_time, expires, duration):
        self.owner = owner              # the host's per-connection record (addressing)
        self.key = key
        self.output = output            # same contract as TcpConnection.output
        self.snd_nxt = snd_nxt
        self.rcv_nxt = rcv_nxt
        self.window = window            # last advertised window field
        self.wscale = wscale            # its shift (RCV.WND = window << wscale, RFC 7323 §2.3)
        self.ts_ok = ts_ok
        self.ts_offset = ts_offset
        self.ts_hz = ts_hz
        self.ts_recent = ts_recent
        self.ts_recent_time = ts_recent_time
        self.expires = expires
        self.duration = duration

    def __repr__(self):
        return "<TimeWait rcv_nxt=%d expires=%.6f>" % (self.rcv_nxt, self.expires)

    def on_segment(self, seg, now: float) -> int:
        """RFC 9293 §3.10.7.4 in TIME-WAIT; returns KEEP, REMOVE or REOPEN."""
        flags = seg.flags
        if flags & SYN and not flags & (ACK | RST):
            if self.reopens(seg):
                return REOPEN
            self._ack(now)                                # RFC 5961 §4.2 challenge ACK
            return KEEP
        if self.ts_ok and seg.tsval is not None and not flags & RST and \
                seq_lt(seg.tsval, self.ts_recent):
            self._ack(now)                                # RFC 7323 §5.3 PAWS
            return KEEP
        seq = seg.seq
        if flags & RST:
            if seq == self.rcv_nxt:
                return REMOVE
            if 0 <= seq_diff(seq, self.rcv_nxt) < ((self.window << self.wscale) or 1):
                self._ack(now)                            # RFC 5961 §3.2
            return KEEP
        if flags & FIN and seq_diff(seq_add(seq, len(seg.payload)), self.rcv_nxt) < 0:
            # The peer's FIN again: our ACK was lost. ACK it, restart 2MSL.
            self.expires = now + self.duration
            self._ack(now)
            return KEEP
        if seq != self.rcv_nxt or seg.payload:
            self._ack(now)                                # unacceptable: ACK, drop
        return KEEP

    def reopens(self, seg, cookie_ack=False) -> bool:
        """RFC 6191: is this the SYN of a new incarnation, provably newer than the old one
        (timestamps, else the sequence number)? ``cookie_ack``: `seg` is the ACK that
        completed a handshake on the NIC (its SYN never reached us): the same test, the
        SYN's sequence number being SEG.SEQ - 1."""
        if self.ts_ok and seg.tsval is not None:
            return seq_gt(seg.tsval, self.ts_recent)
        return seq_gt((seg.seq - 1) & MASK if cookie_ack else seg.seq, self.rcv_nxt)

    def _ack(self, now: float) -> None:
        opts = b""
        if self.ts_ok:
            opts = TS_OPTION.pack(TS_HEAD, (int(now * self.ts_hz) + self.ts_offset) & TS_MASK,
                                  self.ts_recent)
        self.output(self, ACK, self.snd_nxt, self.rcv_nxt, self.window, opts, b"")
