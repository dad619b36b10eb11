"""Sender-side SACK scoreboard and RFC 6675 loss-recovery helpers.

Theory of operation
-------------------
The scoreboard holds the SACKed byte ranges above SND.UNA as sorted, disjoint,
non-adjacent ranges in *unwrapped* coordinates (``abs = anchor_abs +
seq_diff(seq, anchor_seq)``, anchor moved to SND.UNA on every ``update``), so
``bisect`` and ``<`` work across the 2**32 wrap.  Each range also carries an
estimate of how many segments it holds (each newly SACKed piece counts
``ceil(new_bytes / SMSS)``), which RFC 6675 §4 ``IsLost`` needs for its
"DupThresh discontiguous SACKed sequences" rule.  Prefix sums of bytes and
segments are rebuilt lazily after a change, so every query is O(log n).

``IsLost`` is monotone (a lower sequence number has a superset of SACKed data
above it), and every octet of a hole sees the same SACKed data above it.  So a
hole is entirely lost or not, all lost holes lie below all non-lost ones, and
``SetPipe`` / ``NextSeg`` reduce to a few bisections instead of a walk over
octets.

Sequence-number conventions (wire semantics)
--------------------------------------------
* ``snd_una`` = HighACK (RFC 6675 §2) = SND.UNA; ``snd_nxt`` = HighData + 1.
* ``high_rxt`` is *exclusive*: one past the last octet retransmitted in this
  recovery (RFC 6675 HighRxt + 1).  Set it to SND.UNA when recovery starts and
  to ``seq_max(high_rxt, seq_add(seq, n))`` after retransmitting ``(seq, n)``.
* SACK blocks are ``(left, right)`` with ``right`` exclusive, as on the wire;
  ``next_seg``/``rescue_seg`` return ``(seq, length)``.

How the connection uses it (RFC 6675 §5)
----------------------------------------
::

    # every ACK (after validating ack against SND.UNA/SND.NXT):
    new_sacked = sb.update(ack, seg.sack_blocks, snd_nxt)   # also drops state < ack
    # RFC 6675 §2: a "duplicate ACK" is one that carries new SACK info
    # (new_sacked > 0) without advancing SND.UNA.
    if not in_recovery and (dupacks >= 3 or sb.is_lost(snd_una)):
        in_recovery = True; recovery_point = snd_nxt            # §5 step (4.1)
        cc.on_enter_recovery(now, flight); high_rxt = snd_una
    if in_recovery:
        if seq_ge(snd_una, recovery_point): in_recovery = False; cc.on_exit_recovery(now)
        else:
            while cc.cwnd - sb.pipe(snd_una, snd_nxt, high_rxt) >= mss:
                seg = sb.next_seg(snd_una, snd_nxt, high_rxt, new_data=can_send_new())
                if seg is None:
                    if not can_send_new(): break
                    send_new_segment()                          # rule (2); snd_nxt advances
                else:
                    seq, n = seg                                # rule (1) or (3)
                    retransmit(seq, n); high_rxt = seq_max(high_rxt, seq_add(seq, n))

``can_send_new()`` means: unsent data queued *and* the peer's window allows it.
On an RTO, RFC 2018 §8 says the SACKed state SHOULD be discarded (the receiver
may have reneged): call ``clear()``; RFC 6675 §5.1 then forbids a new SACK
recovery until SND.UNA reaches the RecoveryPoint (= SND.NXT at the RTO).
"""

from bisect import bisect_left, bisect_right
from itertools import accumulate
from operator import sub

from .seq import seq_diff, seq_ge, seq_gt, seq_le, seq_lt

__all__ = ["Scoreboard"]

_MASK = 0xFFFFFFFF
_HALF = 0x80000000


class Scoreboard:
    """SACK scoreboard for one connection (RFC 6675 §3-§5).

    ``sacked`` is the total number of SACKed bytes above SND.UNA; ``dsack`` is
    the last D-SACK block seen by ``update`` (RFC 2883 §4), else None.
    """

    __slots__ = ("mss", "dupthresh", "sacked", "dsack", "_limit",
                 "_starts", "_ends", "_segs", "_pre_b", "_pre_s", "_dirty",
                 "_anchor_seq", "_anchor_abs")

    def __init__(self, mss: int, dupthresh: int = 3) -> None:
        if mss <= 0 or dupthresh < 1:
            raise ValueError("bad mss/dupthresh")
        self.mss = mss
        self.dupthresh = dupthresh
        self._limit = None
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._segs: list[int] = []
        self._pre_b: list[int] = [0]
        self._pre_s: list[int] = [0]
        self._dirty = False
        self._anchor_seq = 0
        self._anchor_abs = 0
        self.sacked = 0
        self.dsack = None

    # -- internals -----------------------------------------------------------
    def _abs(self, seq: int) -> int:
        return self._anchor_abs + seq_diff(seq, self._anchor_seq)

    def _seq(self, pos: int) -> int:
        return (self._anchor_seq + (pos - self._anchor_abs)) & _MASK

    def _prefix(self) -> None:
        self._pre_b = list(accumulate(map(sub, self._ends, self._starts), initial=0))
        self._pre_s = list(accumulate(self._segs, initial=0))
        self._dirty = False

    def _lost_from(self, k: int) -> bool:
        """IsLost for an octet in the hole just below range k (RFC 6675 §4)."""
        if self._dirty:
            self._prefix()
        pb = self._pre_b
        ps = self._pre_s
        n = len(self._starts)
        return (ps[n] - ps[k] >= self.dupthresh
                or pb[n] - pb[k] > (self.dupthresh - 1) * self.mss)

    def _sacked_below(self, pos: int) -> int:
        """SACKed bytes at positions < pos."""
        starts = self._starts
        k = bisect_right(starts, pos)
        if not k:
            return 0
        if self._dirty:
            self._prefix()
        tot = self._pre_b[k]
        e = self._ends[k - 1]
        if e > pos:
            tot -= e - pos
        return tot

    def _drop_below(self, base: int) -> None:
        starts = self._starts
        ends = self._ends
        segs = self._segs
        i = bisect_right(ends, base)             # ranges wholly <= base
        if i:
            self.sacked -= sum(e - s for s, e in zip(starts[:i], ends[:i]))
            del starts[:i], ends[:i], segs[:i]
            self._dirty = True
        if starts and starts[0] < base:          # straddles SND.UNA (reneging or odd ACK)
            self.sacked -= base - starts[0]
            starts[0] = base
            rem = -(-(ends[0] - base) // self.mss)
            if segs[0] > rem:
                segs[0] = rem
            self._dirty = True

    # -- API -------------------------------------------------------------------
    def set_limit(self, snd_nxt: int) -> None:
        """Remember SND.NXT: ``update`` rejects blocks reaching beyond it."""
        self._limit = snd_nxt

    def update(self, snd_una: int, blocks, snd_nxt: int | None = None) -> int:
        """Process the cumulative ACK ``snd_una`` and the ACK's SACK ``blocks``.

        Drops state below snd_una; ignores invalid blocks (empty/inverted,
        ending beyond SND.NXT — ``snd_nxt`` here or ``set_limit`` — or wholly
        below snd_una), and a D-SACK first block (RFC 2883 §4: right edge <=
        ACK, or contained in the second block; recorded in ``dsack``); trims
        blocks straddling snd_una.  Returns the number of newly SACKed bytes.
        """
        if not self._starts:
            self._anchor_seq = snd_una
            self._anchor_abs = 0
            base = 0
        else:
            base = self._anchor_abs + seq_diff(snd_una, self._anchor_seq)
            self._anchor_seq = snd_una
            self._anchor_abs = base
            self._drop_below(base)
        self.dsack = None
        if not blocks:
            return 0
        if type(blocks) is not tuple and type(blocks) is not list:
            blocks = tuple(blocks)
        limit = snd_nxt if snd_nxt is not None else self._limit
        mss = self.mss
        starts = self._starts
        ends = self._ends
        segs = self._segs
        newly = 0
        first = True
        for blk in blocks:
            left, right = blk
            if first:
                first = False
                if seq_le(right, snd_una):
                    self.dsack = (left, right)
                    continue
                if len(blocks) > 1:
                    l2, r2 = blocks[1]
                    if seq_ge(left, l2) and seq_le(right, r2) and seq_lt(l2, r2):
                        self.dsack = (left, right)
                        continue
            if ((right - left) & _MASK) >= _HALF or left == right:
                continue                                  # inverted / empty
            if limit is not None and seq_gt(right, limit):
                continue                                  # beyond SND.NXT: bogus
            if seq_le(right, snd_una):
                continue
            s = base + seq_diff(left, snd_una)
            e = base + seq_diff(right, snd_una)
            if s < base:
                s = base
            i = bisect_left(ends, s)
            j = bisect_right(starts, e)
            if i == j:
                starts.insert(i, s)
                ends.insert(i, e)
                segs.insert(i, -(-(e - s) // mss))
                newly += e - s
                self.sacked += e - s
                self._dirty = True
                continue
            ns = s if s < starts[i] else starts[i]
            ne = e if e > ends[j - 1] else ends[j - 1]
            covered = 0
            nseg = 0
            for k in range(i, j):
                covered += ends[k] - starts[k]
                nseg += segs[k]
            add = (ne - ns) - covered
            if add == 0:
                continue                                  # nothing new (j == i + 1)
            nseg += -(-add // mss)
            starts[i] = ns
            ends[i] = ne
            segs[i] = nseg
            if j > i + 1:
                del starts[i + 1:j], ends[i + 1:j], segs[i + 1:j]
            newly += add
            self.sacked += add
            self._dirty = True
        return newly

    def is_sacked(self, seq: int) -> bool:
        """True if octet ``seq`` has been SACKed (and is above SND.UNA)."""
        starts = self._starts
        if not starts:
            return False
        pos = self._abs(seq)
        k = bisect_right(starts, pos) - 1
        return k >= 0 and pos < self._ends[k]

    def sacked_bytes_above(self, seq: int) -> int:
        """SACKed bytes with sequence numbers greater than ``seq``."""
        if not self._starts:
            return 0
        return self.sacked - self._sacked_below(self._abs(seq) + 1)

    def is_lost(self, seq: int) -> bool:
        """RFC 6675 §4 IsLost(SeqNum): DupThresh SACKed segments above seq, or
        more than (DupThresh - 1) * SMSS SACKed bytes above seq.  A SACKed octet
        is never lost."""
        starts = self._starts
        if not starts:
            return False
        pos = self._abs(seq)
        k = bisect_right(starts, pos)
        if k and pos < self._ends[k - 1]:
            return False
        if k == len(starts):
            return False
        return self._lost_from(k)

    def _lost_boundary(self) -> int:
        """Unwrapped position below which every unSACKed octet is lost (the
        start of the highest range k whose lower hole is lost), or the first
        range start if none (then nothing is lost)."""
        starts = self._starts
        lo, hi = 0, len(starts)                  # find last k with _lost_from(k)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._lost_from(mid):
                lo = mid + 1
            else:
                hi = mid
        return starts[lo - 1] if lo else -(1 << 62)

    def pipe(self, snd_una: int, snd_nxt: int, high_rxt: int) -> int:
        """RFC 6675 §4 SetPipe(), in bytes: for each unSACKed octet in
        [snd_una, snd_nxt): +1 if not IsLost, +1 if retransmitted (< high_rxt).
        Without SACK information this is simply the flight size (+ retransmitted
        octets)."""
        span = seq_diff(snd_nxt, snd_una)
        if span <= 0:
            return 0
        hr = seq_diff(high_rxt, snd_una)
        if hr < 0:
            hr = 0
        elif hr > span:
            hr = span
        if not self._starts:
            return span + hr
        u = self._abs(snd_una)
        n = u + span
        h = u + hr
        sb_u = self._sacked_below(u)
        unsacked = span - (self._sacked_below(n) - sb_u)
        pipe = unsacked + (hr - (self._sacked_below(h) - sb_u))
        lb = self._lost_boundary()
        if lb > u:
            if lb > n:
                lb = n
            pipe -= (lb - u) - (self._sacked_below(lb) - sb_u)
        return pipe

    def next_seg(self, snd_una: int, snd_nxt: int, high_rxt: int,
                 new_data: bool = True) -> tuple[int, int] | None:
        """RFC 6675 §4 NextSeg(): ``(seq, length)`` to retransmit, or None.

        (1) the lowest unSACKed octet S2 >= high_rxt below the highest SACKed
            octet with IsLost(S2) -> returned;
        (2) else, if ``new_data`` (unsent data exists and rwnd allows) -> None:
            the caller sends new data at SND.NXT;
        (3) else (``new_data=False``) the lowest unSACKed octet >= high_rxt
            below the highest SACKed octet, lost or not -> returned (SHOULD);
        otherwise None (rule (4), rescue retransmission: see ``rescue_seg``).
        ``0 < length <= SMSS``; the range never runs into SACKed data or past
        SND.NXT.  The default ``new_data=True``
        applies only rule (1); pass False when nothing new can be sent to get
        rule (3) as well.
        """
        starts = self._starts
        if not starts:
            return None
        u = self._abs(snd_una)
        span = seq_diff(snd_nxt, snd_una)
        if span <= 0:
            return None
        n = u + span
        hr = seq_diff(high_rxt, snd_una)
        pos = u + (hr if hr > 0 else 0)
        if pos >= n:
            return None
        ends = self._ends
        k = bisect_right(starts, pos)
        if k and pos < ends[k - 1]:
            pos = ends[k - 1]                    # inside a SACKed range: skip it
        if k >= len(starts):
            return None                          # nothing SACKed above (1.b)
        hole_end = starts[k]
        if hole_end > n:
            hole_end = n
        if pos >= hole_end:
            return None
        if new_data and not self._lost_from(k):
            return None                          # rule (2) before rule (3)
        ln = hole_end - pos
        if ln > self.mss:
            ln = self.mss
        return self._seq(pos), ln

    def rescue_seg(self, snd_una: int, snd_nxt: int) -> tuple[int, int] | None:
        """RFC 6675 §4 NextSeg() rule (4): ``(seq, length)``, length <= SMSS,
        ending at the highest unSACKed octet below snd_nxt; None if all SACKed.
        The caller checks the rule's conditions (no rule 1-3 segment, HighACK >
        RescueRxt or RescueRxt undefined), then sets RescueRxt = RecoveryPoint;
        HighRxt MUST NOT be updated for it."""
        span = seq_diff(snd_nxt, snd_una)
        if span <= 0:
            return None
        u = self._abs(snd_una)
        top = u + span
        starts = self._starts
        ends = self._ends
        k = bisect_left(ends, top)               # first range with end >= top
        if k < len(starts) and starts[k] < top:  # top-1 is SACKed: go below the range
            top = starts[k]
        floor = ends[k - 1] if k and ends[k - 1] > u else u
        if top <= u:
            return None
        lo = top - self.mss
        if lo < floor:
            lo = floor
        return self._seq(lo), top - lo

    def highest_sacked(self) -> int | None:
        """Right edge (exclusive, wire semantics) of the highest SACKed range,
        or None without SACK information."""
        if not self._ends:
            return None
        return self._seq(self._ends[-1])

    def ranges(self) -> list[tuple[int, int]]:
        """SACKed ranges ``(left, right)`` in sequence order."""
        return [(self._seq(s), self._seq(e)) for s, e in zip(self._starts, self._ends)]

    @property
    def has_sack_info(self) -> bool:
        return bool(self._starts)

    def clear(self) -> None:
        """Forget all SACK state (RTO, RFC 2018 §8; connection reuse)."""
        self._starts.clear()
        self._ends.clear()
        self._segs.clear()
        self._pre_b = [0]
        self._pre_s = [0]
        self._dirty = False
        self.sacked = 0
        self.dsack = None

    def set_mss(self, mss: int) -> None:
        if mss <= 0:
            raise ValueError("bad mss")
        self.mss = mss

    def __repr__(self) -> str:
        return f"Scoreboard(sacked={self.sacked}, ranges={self.ranges()})"
