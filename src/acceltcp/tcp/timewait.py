"""TIME-WAIT without a TCB: what is left of a connection for its last 2MSL.

Once both FINs are exchanged, a connection needs only enough state to answer a
retransmitted FIN, ignore or accept an RST, and tell a new incarnation's SYN from an
old duplicate (RFC 9293 §3.10.7.4 TIME-WAIT; RFC 6191; Linux's tcp_minisocks.c). The
host hands the TCB's TIME-WAIT to a ``TimeWait`` record (``TcpConnection.handoff_time_wait``)
and frees the TCB, so a busy server keeps ~100 bytes per closed connection instead of
a full TCB, and reaps them from a FIFO instead of the timer heap.

The rules themselves are one pure function, ``verdict`` (plain ints in, a small int
out), shared with the NIC's teardown engine (``nic.teardown``), whose TIME-WAIT lives
in a 64-byte table entry: the host and the NIC answer every segment alike
(tests/tcp/test_timewait_verdict.py runs one table against both). Each side builds its
own ACK.
"""

import struct

from .states import TIME_WAIT
from ..wire.tcp import ACK as F_ACK, FIN, RST, SYN

MASK = 0xFFFFFFFF
TS_OPTION = struct.Struct("!III")
TS_HEAD = 0x0101080A
TS_MASK = 0xFFFFFFFE       # TSvals keep bit 0 clear (the NIC's cookie mark; tcp.connection)

# -- the verdict: one set of TIME-WAIT rules for the host record and the NIC --------------

# Actions (``v & ACTION``); KEEP, REMOVE and REOPEN are also ``TimeWait.on_segment``'s
# return values.
KEEP = 0           # stay in TIME-WAIT, send nothing (drop the segment)
REMOVE = 1         # an RST at exactly RCV.NXT: end TIME-WAIT now, send nothing
REOPEN = 2         # a SYN of a new incarnation: end TIME-WAIT, treat the SYN as new
SEND_ACK = 3       # stay, send <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>
CHALLENGE_ACK = 4  # stay, send the same ACK as an RFC 5961 challenge (RST/SYN)
ACTION = 7
# Flags or-ed onto the action.
RESTART = 8        # restart the 2MSL timer (with SEND_ACK only: the peer's FIN again)
UPDATE_TS = 16     # TS.Recent = SEG.TSval (RFC 7323 §4.3; with KEEP or SEND_ACK)
PAWS = 32          # the ACK answers a PAWS reject (RFC 7323 §5.3): for counters only

_HALF = 0x80000000

CHALLENGE_ACKS_PER_SECOND = 10     # RFC 5961 §7: challenge ACKs per connection and second


def challenge_budget(now, since, count, limit=CHALLENGE_ACKS_PER_SECOND):
    """RFC 5961 §7 rate limit for challenge ACKs, the one the TCB and the TIME-WAIT
    record both apply: at most `limit` in a one-second window that opens with the
    first challenge after the previous window ended. `since`/`count` are the caller's
    state (window start, challenges sent in it). -> (send, since, count): whether to
    send this one, and the state to keep."""
    if now - since >= 1.0:
        since = now
        count = 0
    if count >= limit:
        return False, since, count
    return True, since, count + 1


def syn_reopens(seq, tsval, rcv_nxt, ts_ok, ts_recent):
    """RFC 6191: is a bare SYN (sequence number `seq`, TSval `tsval` or None) provably
    from a new incarnation of a connection in TIME-WAIT? See ``verdict``."""
    if ts_ok and tsval is not None:
        d = (tsval - ts_recent) & MASK
        if d == 0:                                   # RFC 6191 bullet 2: equal TSval,
            return 0 < ((seq - rcv_nxt) & MASK) <= _HALF  # the sequence number decides
        return d <= _HALF                            # bullet 1: TSval > TS.Recent
    return 0 < ((seq - rcv_nxt) & MASK) <= _HALF      # bullet 4: SEG.SEQ > RCV.NXT


def verdict(flags, seq, ack, plen, tsval, rcv_nxt, snd_nxt, wnd_field, wscale, ts_ok,
            ts_recent):
    """What a connection in TIME-WAIT does with one segment: an action (``& ACTION``:
    KEEP, REMOVE, REOPEN, SEND_ACK, CHALLENGE_ACK) or-ed with RESTART / UPDATE_TS / PAWS.

    Plain values only, so that the host's ``TimeWait`` record and the NIC teardown
    engine's 64-byte table entry (``nic.teardown``) call the same rules: `flags` the TCP
    flags, `seq`/`ack` SEG.SEQ/SEG.ACK, `plen` the payload length, `tsval` SEG.TSval or
    None; the state: RCV.NXT, SND.NXT (after our FIN), our last window field and its
    shift (RCV.WND = wnd_field << wscale, RFC 7323 §2.3), whether timestamps are in use
    and TS.Recent. Pure, no allocation; each owner builds its own ACK.

    The rules, in order (Linux's ``tcp_timewait_state_process``, net/ipv4/tcp_minisocks.c,
    and RFC 9293 §3.10.7.4 for TIME-WAIT):

    1. RST (RFC 5961 §3.2; no PAWS on an RST, RFC 7323 §5.3 R1): SEG.SEQ == RCV.NXT ->
       REMOVE (RFC 9293; Linux with tcp_rfc1337 = 0); inside the *scaled* receive window
       -> CHALLENGE_ACK; otherwise KEEP (dropped).
    2. SYN (RST clear): a bare SYN (no ACK) from a new incarnation -> REOPEN (RFC 6191,
       ``syn_reopens``): with timestamps in use and a TSval on the SYN, TSval > TS.Recent,
       or TSval == TS.Recent and SEG.SEQ > RCV.NXT; without, SEG.SEQ > RCV.NXT. Any
       other SYN, SYN-ACK included -> CHALLENGE_ACK (RFC 5961 §4.2).
    3. PAWS (RFC 7323 §5.3): timestamps in use, SEG.TSval < TS.Recent -> SEND_ACK | PAWS (no
       2MSL restart: it is an old duplicate).
    4. A FIN whose FIN is the peer's (SEG.SEQ + data length == RCV.NXT - 1): our ACK was
       lost, the peer retransmits -> SEND_ACK | RESTART (RFC 9293 §3.10.7.4: "acknowledge it,
       and restart the 2 MSL timeout"). Any other FIN -> SEND_ACK.
    5. Data, or SEG.SEQ != RCV.NXT -> SEND_ACK (the peer sent its FIN at RCV.NXT - 1: nothing
       else belongs to this incarnation's stream; the ACK tells the sender where it is).
    6. A bare segment at RCV.NXT: ACK bit and SEG.ACK > SND.NXT -> SEND_ACK (§3.10.7.4 fifth,
       as the TCB does), else KEEP; either with UPDATE_TS when it has a TSval
       (RFC 7323 §4.3: it is at the left window edge and passed PAWS).

    Where the two earlier copies differed, and what is kept (the host record was
    ``TimeWait.on_segment``, the NIC ``TeardownEngine.on_segment`` in TIME-WAIT):

    - RST window: the host tested the unscaled window field (fixed before this); both
      now shift here, once.
    - SYN-ACK: the host took it through PAWS/sequence checks (a SYN-ACK at RCV.NXT got
      no answer), the NIC challenged it. Challenge (RFC 5961 §4.2: *any* SYN in a
      synchronized state; Linux challenges it too, via its out-of-window ACK).
    - Reopen with equal TSvals: both refused it; RFC 6191 bullet 2 and Linux take it
      when SEG.SEQ > RCV.NXT: now taken. Timestamps in use but none on the SYN: both
      used the sequence number, as Linux does; RFC 6191 bullet 3 would take the SYN
      whatever its sequence number. Kept (conservative): a new connection with a
      smaller ISN gets a challenge ACK, its SYN-SENT answers with an RST at RCV.NXT,
      which REMOVEs the record, and its next SYN gets through (RFC 5961 §4.2, one RTT).
    - 2MSL restart: the NIC restarted on *any* unacceptable FIN (one far ahead of the
      window too), the host on a FIN before RCV.NXT. Now only the peer's FIN itself
      (RFC 9293: "the only thing that can arrive ... is a retransmission of the remote
      FIN"). Linux restarts on every out-of-window non-RST segment with ACK and on a
      bare ACK at RCV.NXT: not followed (a forged segment would keep the record alive).
    - Data, or a bare ACK inside the window but not at RCV.NXT: the host ACKed, the NIC
      (which ran the general four-case acceptability test) dropped it silently. ACK
      (Linux does; 1:1, no amplification).
    - SEG.ACK > SND.NXT on a bare segment at RCV.NXT: the NIC ACKed, the host did not.
      ACK (§3.10.7.4 fifth, as the TCB before the hand-off). The RFC 5961 §5.2 lower
      bound (SND.UNA - MAX.SND.WND) is not checked: neither side keeps MAX.SND.WND.
    - TS.Recent: the NIC updated it from an acceptable segment at or before RCV.NXT,
      the host never did in TIME-WAIT. UPDATE_TS for a bare segment at RCV.NXT (RFC
      7323 §4.3; Linux does the same). The 24-day idle rule (RFC 7323 §5.5) is not
      applied: TS.Recent was taken from the peer's FIN, just before TIME-WAIT began.
    - PAWS: the same on both (ACK, no restart; Linux also restarts 2MSL on it: not
      followed, as above).
    - Challenge-ACK rate limit (RFC 5961 §7, a SHOULD): not part of the verdict (it
      needs per-flow state and a clock); the caller applies it to CHALLENGE_ACK. The
      TCB and the host record use ``challenge_budget`` (CHALLENGE_ACKS_PER_SECOND per
      connection; the record inherits the TCB's budget at the hand-off); the NIC's
      teardown engine allows as many per whole second of its clock, in 16 bits of its
      64-byte entry (``nic.teardown.challenge_ok``, mirrored by the XDP program).
    """
    if flags & RST:
        d = (seq - rcv_nxt) & MASK
        if d == 0:
            return REMOVE
        return CHALLENGE_ACK if d < wnd_field << wscale else KEEP
    if flags & SYN:
        if not flags & F_ACK and syn_reopens(seq, tsval, rcv_nxt, ts_ok, ts_recent):
            return REOPEN
        return CHALLENGE_ACK
    if ts_ok and tsval is not None:
        if ((tsval - ts_recent) & MASK) > _HALF:     # TSval < TS.Recent
            return SEND_ACK | PAWS
        upd = UPDATE_TS
    else:
        upd = 0
    if flags & FIN:
        if (seq + plen + 1 - rcv_nxt) & MASK == 0:
            return SEND_ACK | RESTART
        return SEND_ACK
    if plen or seq != rcv_nxt:
        return SEND_ACK
    if flags & F_ACK and 0 < ((ack - snd_nxt) & MASK) <= _HALF:
        return SEND_ACK | upd
    return KEEP | upd


class TimeWait:
    state = TIME_WAIT             # read-only views treat it like a TCB in TIME-WAIT
    closed = False

    __slots__ = ("owner", "key", "output", "snd_nxt", "rcv_nxt", "window", "wscale", "ts_ok",
                 "ts_offset", "ts_hz", "ts_recent", "ts_recent_time", "expires", "duration",
                 "challenge_since", "challenge_count")

    def __init__(self, owner, key, output, snd_nxt, rcv_nxt, window, wscale, ts_ok,
                 ts_offset, ts_hz, ts_recent, ts_recent_time, expires, duration,
                 challenge_since=float("-inf"), challenge_count=0):
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
        self.challenge_since = challenge_since    # RFC 5961 §7 (``challenge_budget``),
        self.challenge_count = challenge_count    # carried over from the TCB

    def __repr__(self):
        return "<TimeWait rcv_nxt=%d expires=%.6f>" % (self.rcv_nxt, self.expires)

    def on_segment(self, seg, now: float) -> int:
        """RFC 9293 §3.10.7.4 in TIME-WAIT (``verdict``; a challenge ACK within the RFC
        5961 §7 budget, ``challenge_budget``); returns KEEP, REMOVE or REOPEN."""
        tsval = seg.tsval
        v = verdict(seg.flags, seg.seq, seg.ack, len(seg.payload), tsval, self.rcv_nxt,
                    self.snd_nxt, self.window, self.wscale, self.ts_ok, self.ts_recent)
        if v & UPDATE_TS:
            self.ts_recent = tsval
            self.ts_recent_time = now
        a = v & ACTION
        if a < SEND_ACK:
            return a                                      # KEEP, REMOVE, REOPEN
        if a == CHALLENGE_ACK:
            send, self.challenge_since, self.challenge_count = challenge_budget(
                now, self.challenge_since, self.challenge_count)
            if not send:
                return KEEP                               # RFC 5961 §7: over the limit
        if v & RESTART:
            self.expires = now + self.duration            # the peer's FIN again
        self._ack(now)
        return KEEP

    def reopens(self, seg, cookie_ack=False) -> bool:
        """RFC 6191 (``syn_reopens``): is `seg` the SYN of a new incarnation?
        ``cookie_ack``: `seg` is the ACK that completed a handshake on the NIC (its SYN
        never reached us): the same test, the SYN's sequence number being SEG.SEQ - 1."""
        return syn_reopens((seg.seq - 1) & MASK if cookie_ack else seg.seq, seg.tsval,
                           self.rcv_nxt, self.ts_ok, self.ts_recent)

    def _ack(self, now: float) -> None:
        opts = b""
        if self.ts_ok:
            opts = TS_OPTION.pack(TS_HEAD, (int(now * self.ts_hz) + self.ts_offset) & TS_MASK,
                                  self.ts_recent)
        self.output(self, F_ACK, self.snd_nxt, self.rcv_nxt, self.window, opts, b"")
