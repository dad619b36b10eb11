"""The host's TIME-WAIT table: 4-tuples still held after their TCB is gone.

Theory of operation
-------------------
A TCB that reaches TIME-WAIT hands the rest of 2MSL to a compact `tcp.timewait.TimeWait`
record (``conn.handoff_time_wait``) and is freed; the host stack keeps the record here,
under the connection's demux key, until it expires, is ended early (a segment that
`tcp.timewait` says ends it) or is reopened by a new incarnation's SYN (RFC 6191). Segments for the 4-tuple reach the record on the stack's slow path
(`segment`); `connect` and ephemeral port selection treat a key held here as in use.

Expiry needs no heap: 2MSL is the same for every connection of one config, so records
of one duration expire in the order they were added. Each duration has a FIFO of
``(expires, record)``; reaping pops its head while due. A record whose 2MSL restarted (a
retransmitted FIN) goes back to the tail when its old entry comes due, so it is reaped
at most one 2MSL late, never early; one ended early is skipped (the dict no longer maps
its key to it).
"""

import collections

from ..tcp import timewait
from ..wire.ipv4 import ip_to_str

__all__ = ["TimeWaitTable"]


class TimeWaitTable:
    """TIME-WAIT records by demux key, reaped from one FIFO per 2MSL duration."""

    __slots__ = ("records", "fifos")

    def __init__(self):
        self.records = {}     # key -> tcp.timewait.TimeWait
        self.fifos = {}       # 2MSL duration -> deque of (expires, TimeWait), expiry order

    def __len__(self):
        return len(self.records)

    def __contains__(self, key):
        return key in self.records

    def get(self, key):
        return self.records.get(key)

    def values(self):
        return self.records.values()

    def pop(self, key):
        """End the record of `key` early (reopened by a new incarnation)."""
        del self.records[key]

    def add(self, key, tw):
        """Hold `tw` (a TimeWait) under `key` -> True if its FIFO was empty (a deadline
        the owner may not have armed for yet)."""
        self.records[key] = tw
        fifo = self.fifos.get(tw.duration)
        if fifo is None:
            fifo = self.fifos[tw.duration] = collections.deque()
        first = not fifo
        fifo.append((tw.expires, tw))
        return first

    def segment(self, key, seg, now):
        """A segment for `key` with no TCB: None if no record holds the key; True if the
        record took it (kept or ended by it); False if it is a new incarnation's SYN
        (RFC 6191): the record is gone and the segment goes on to the listener."""
        tw = self.records.get(key)
        if tw is None:
            return None
        action = tw.on_segment(seg, now)
        if action == timewait.KEEP:
            return True
        del self.records[key]
        return action == timewait.REMOVE

    def reap(self, now):
        """Forget every record whose 2MSL has run out by `now`."""
        tws = self.records
        for fifo in self.fifos.values():
            while fifo and fifo[0][0] <= now:
                expires, tw = fifo.popleft()
                if tws.get(tw.key) is not tw:
                    continue                         # ended early (RST, reopened)
                if tw.expires > expires:
                    fifo.append((tw.expires, tw))    # 2MSL restarted: back to the tail
                    continue
                del tws[tw.key]

    def deadline(self):
        """The earliest FIFO head (possibly a stale one: early, never late), or None."""
        d = None
        for fifo in self.fifos.values():
            if fifo:
                e = fifo[0][0]
                if d is None or e < d:
                    d = e
        return d

    def view(self, local_ip):
        """{(local ip, local port, remote ip, remote port): TimeWait}, addresses as str."""
        lip = ip_to_str(local_ip)
        return {(lip, tw.owner.local_port, ip_to_str(tw.owner.remote_ip), tw.owner.remote_port): tw
                for tw in self.records.values()}
