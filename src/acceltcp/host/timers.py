"""The host stack's connection timers: one heap of absolute deadlines, lazily invalidated.

Theory of operation
-------------------
A TCB has several timers (retransmission, delayed ACK, persist, keepalive, ...) but
reports only its earliest deadline (``conn.next_deadline()``). The heap holds
``(deadline, seq, conn)``; ``conn.owner.armed`` (`host.stack.HostConn`) is the deadline
the connection currently has in it. A connection is pushed only when its new deadline
is earlier than ``armed`` (`push`); a deadline that moves later leaves the entry as it
is. So entries go stale: an entry whose deadline no longer equals ``armed`` (or whose
connection was removed) is skipped when popped (`due`), and the owner re-asks a
connection it gets from `due` for its deadline, which may have moved later since. Stale
heads are dropped after a firing round (`drop_stale`) so that the earliest deadline the
owner reports is not one that fires nothing; when stale entries outnumber live
connections the heap is rebuilt from the live ones (`compact`, in place), amortized
O(1) per removal. ``seq`` keeps equal deadlines in push order and never compares TCBs.

A push that becomes the heap's earliest calls ``earlier(deadline)``, for the owner to
re-arm its driver's single timer.
"""

import heapq

__all__ = ["TimerHeap"]

_INF = float("inf")


class TimerHeap:
    """Deadlines of connections (``conn.owner.armed``), earliest first."""

    __slots__ = ("heap", "_seq", "_earlier")

    def __init__(self, earlier):
        self.heap = []            # (deadline, seq, conn); the same list for good
        self._seq = 0
        self._earlier = earlier

    def push(self, conn, deadline):
        """Arm `conn` for `deadline` (the caller checked it is earlier than ``armed``)."""
        conn.owner.armed = deadline
        h = self.heap
        earliest = h[0][0] if h else _INF
        self._seq += 1
        heapq.heappush(h, (deadline, self._seq, conn))
        if deadline < earliest:
            self._earlier(deadline)

    def due(self, now):
        """Pop the connections armed for a deadline <= `now`, disarmed, in deadline
        order, stale entries skipped. A generator: a connection armed while the caller
        fires the previous ones is taken in the same round if it is due."""
        h = self.heap
        while h and h[0][0] <= now:
            d, _, conn = heapq.heappop(h)
            rec = conn.owner
            if rec.armed != d or rec.removed:
                continue                       # stale entry
            rec.armed = None
            yield conn

    def drop_stale(self):
        """Pop stale entries off the head: the earliest deadline is a live one."""
        h = self.heap
        while h:
            d, _, conn = h[0]
            rec = conn.owner
            if rec.armed == d and not rec.removed:
                break
            heapq.heappop(h)

    def compact(self, conns):
        """Rebuild the heap from `conns` (every armed connection), in place."""
        h = self.heap
        h.clear()
        for conn in conns:
            a = conn.owner.armed
            if a is not None:
                self._seq += 1
                h.append((a, self._seq, conn))
        heapq.heapify(h)
