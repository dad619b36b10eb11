"""Out-of-order receive queue (RFC 9293 §3.10.7.4) with RFC 2018 §4 SACK blocks.

Theory of operation
-------------------
Held data is kept as *blocks*: maximal contiguous byte ranges, sorted, disjoint
and non-adjacent.  Each block owns a list of byte chunks (in order, exactly
covering it), so adding a segment that extends a block is a list append, and
delivery is one ``b"".join``.  Overlaps are resolved on arrival: only the gaps a
new segment fills are copied in ("first copy wins"; RFC 9293 §3.10.7.4 lets the
receiver keep either copy and the bytes must be identical anyway).

Positions are kept as *unwrapped* integers (Python ints, no modulus) so plain
``<`` and ``bisect`` work: ``abs = anchor_abs + seq_diff(seq, anchor_seq)``, and
the anchor is moved to ``rcv_nxt`` on every call.  This is valid because all
held data lies within the receive window, far less than 2**31 from rcv_nxt.

The connection is expected to trim segments to the receive window before
calling ``add`` (RFC 9293 §3.10.7.4); the queue never grows beyond what it is
given.  Typical receive path::

    if seg.seq == rcv_nxt:                       # in order
        deliver(payload); rcv_nxt = seq_add(rcv_nxt, len(payload))
        if reasm:
            data, rcv_nxt = reasm.pop_ready(rcv_nxt); deliver(data)
    else:                                        # after rcv_nxt, in window
        reasm.add(seg.seq, payload, rcv_nxt)     # then send an immediate ACK
    sack = reasm.sack_blocks(3 if timestamps else 4)
"""

from bisect import bisect_left, bisect_right

from .seq import seq_diff

__all__ = ["ReassemblyQueue"]

_MASK = 0xFFFFFFFF
_RECENT_MAX = 64


class ReassemblyQueue:
    """Out-of-order segments held beyond RCV.NXT.

    ``nbytes`` is the number of bytes held; ``len(q)`` is the same number and
    ``bool(q)`` tells whether anything is held.  ``nblocks`` is the number of
    contiguous blocks (what SACK can describe).
    """

    __slots__ = ("_starts", "_ends", "_chunks", "_recent", "nbytes",
                 "_anchor_seq", "_anchor_abs")

    def __init__(self) -> None:
        self._starts: list[int] = []        # unwrapped block starts
        self._ends: list[int] = []          # unwrapped block ends (exclusive)
        self._chunks: list[list[bytes]] = []
        self._recent: list[int] = []        # positions of recent arrivals, newest first
        self.nbytes = 0
        self._anchor_seq = 0
        self._anchor_abs = 0

    # -- coordinates -------------------------------------------------------
    def _rebase(self, rcv_nxt: int) -> int:
        """Move the anchor to rcv_nxt; return its unwrapped position."""
        if not self._starts:
            self._anchor_seq = rcv_nxt
            self._anchor_abs = 0
            if self._recent:
                self._recent.clear()
            return 0
        a = self._anchor_abs + seq_diff(rcv_nxt, self._anchor_seq)
        self._anchor_seq = rcv_nxt
        self._anchor_abs = a
        return a

    def _seq(self, pos: int) -> int:
        return (self._anchor_seq + (pos - self._anchor_abs)) & _MASK

    # -- API -----------------------------------------------------------------
    def add(self, seq: int, data, rcv_nxt: int) -> None:
        """Store a segment starting at ``seq`` (normally after rcv_nxt).

        Bytes below rcv_nxt are trimmed, bytes already held are ignored
        (duplicates/overlapping retransmissions), adjacent data is merged.
        ``data`` may be bytes or a memoryview (copied here).
        """
        n = len(data)
        if not n:
            return
        base = self._rebase(rcv_nxt)
        s = base + seq_diff(seq, rcv_nxt)
        e = s + n
        if e <= base:
            return                               # wholly old duplicate
        if type(data) is not bytes:
            data = bytes(data)
        if s < base:
            data = data[base - s:]
            s = base
        starts = self._starts
        ends = self._ends
        recent = self._recent
        if recent and recent[0] == s:
            pass
        else:
            recent.insert(0, s)
            if len(recent) > _RECENT_MAX:
                del recent[_RECENT_MAX:]
        i = bisect_left(ends, s)                 # first block with end >= s
        j = bisect_right(starts, e)              # blocks with start <= e touch [s, e]
        if i == j:
            starts.insert(i, s)
            ends.insert(i, e)
            self._chunks.insert(i, [data])
            self.nbytes += e - s
            return
        chunks = self._chunks
        merged = chunks[i]
        added = 0
        bs = starts[i]
        if s < bs:
            merged.insert(0, data[:bs - s])
            added += bs - s
            starts[i] = s
        for k in range(i, j):
            if k > i:
                merged.extend(chunks[k])
            gs = ends[k]
            ge = starts[k + 1] if k + 1 < j else e
            if ge > gs:
                merged.append(data[gs - s:ge - s])
                added += ge - gs
        last_end = ends[j - 1]
        ends[i] = e if e > last_end else last_end
        if j > i + 1:
            del starts[i + 1:j]
            del ends[i + 1:j]
            del chunks[i + 1:j]
        self.nbytes += added

    def pop_ready(self, rcv_nxt: int) -> tuple[bytes, int]:
        """Return ``(data, new_rcv_nxt)`` for the data now contiguous at rcv_nxt
        (``(b"", rcv_nxt)`` if none).  Anything wholly below rcv_nxt is dropped,
        a block straddling it is trimmed."""
        if not self._starts:
            self._rebase(rcv_nxt)
            return b"", rcv_nxt
        base = self._rebase(rcv_nxt)
        starts = self._starts
        ends = self._ends
        chunks = self._chunks
        while starts and ends[0] <= base:
            self.nbytes -= ends[0] - starts[0]
            del starts[0], ends[0], chunks[0]
        if not starts or starts[0] > base:
            return b"", rcv_nxt
        cl = chunks[0]
        skip = base - starts[0]
        if skip:
            k = 0
            while len(cl[k]) <= skip:
                skip -= len(cl[k])
                k += 1
            cl = cl[k:]
            cl[0] = cl[0][skip:]
        data = cl[0] if len(cl) == 1 else b"".join(cl)
        self.nbytes -= ends[0] - starts[0]
        end = ends[0]
        del starts[0], ends[0], chunks[0]
        return data, (rcv_nxt + (end - base)) & _MASK

    def sack_blocks(self, max_blocks: int) -> list[tuple[int, int]]:
        """Up to ``max_blocks`` SACK blocks ``(left, right)`` (RFC 2018 §4).

        The first block contains the most recently added segment; the others
        follow in order of most recent arrival (i.e. most recently reported as a
        first block), each reported once; remaining slots take the other held
        blocks in sequence order.  Blocks never overlap and never cover data
        below rcv_nxt.  (D-SACK, RFC 2883, is not generated here.)
        """
        starts = self._starts
        if not starts or max_blocks <= 0:
            return []
        ends = self._ends
        nb = len(starts)
        seen: set[int] = set()
        order: list[int] = []
        keep: list[int] = []
        lo = starts[0]
        for pos in self._recent:
            if pos < lo:
                continue
            k = bisect_right(starts, pos) - 1
            if k < 0 or pos >= ends[k] or k in seen:
                continue
            seen.add(k)
            order.append(k)
            keep.append(pos)
        self._recent[:] = keep                   # compact: one entry per block
        if len(order) < max_blocks and len(order) < nb:
            for k in range(nb):
                if k not in seen:
                    order.append(k)
                    if len(order) >= max_blocks:
                        break
        aseq = self._anchor_seq
        aabs = self._anchor_abs
        return [((aseq + (starts[k] - aabs)) & _MASK, (aseq + (ends[k] - aabs)) & _MASK)
                for k in order[:max_blocks]]

    def ranges(self) -> list[tuple[int, int]]:
        """All held blocks as ``(left, right)`` sequence pairs, in sequence order."""
        aseq = self._anchor_seq
        aabs = self._anchor_abs
        return [((aseq + (s - aabs)) & _MASK, (aseq + (e - aabs)) & _MASK)
                for s, e in zip(self._starts, self._ends)]

    def right_edge(self) -> int | None:
        """Sequence number just past the highest held byte, or None if empty."""
        if not self._ends:
            return None
        return self._seq(self._ends[-1])

    @property
    def nblocks(self) -> int:
        return len(self._starts)

    def clear(self) -> None:
        self._starts.clear()
        self._ends.clear()
        self._chunks.clear()
        self._recent.clear()
        self.nbytes = 0

    def __len__(self) -> int:
        return self.nbytes

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __repr__(self) -> str:
        return f"ReassemblyQueue(nbytes={self.nbytes}, blocks={self.ranges()})"
