"""Bytes an application has produced and its connection's send buffer has not taken yet.

`OutBuffer` is a FIFO of the chunks as they were produced (kept by reference, not
copied) and an offset into the first one. ``send(stack, conn)`` offers the TCB at most
its free send space, as a `memoryview` of the first chunk or, when several small chunks
fit, one join of them; so every byte is copied at most twice on its way into the TCB
(once by a join, once into the send buffer) however the sends are cut, and ``send``
costs O(bytes taken + chunks consumed).

The pattern it replaces, ``out = out[n:]`` after each partial send, copies the whole
rest of the buffer on every send: O(size^2 / send) for a buffer drained by a window at a
time (80 replies of 1 MiB drained 256 KiB at a time: ~10 GB copied).

``size`` (also ``len()``) is what the application still holds: the number its memory
bounds and back-pressure thresholds are stated in. ``offered`` counts the bytes ever
offered to ``stack.send`` (== taken, since no more than the free space is offered): the
operation count the tests use to show that draining is linear.
"""

import collections
import itertools

__all__ = ["OutBuffer"]

_JOIN_MAX = 64 * 1024       # chunks smaller than this are joined into one send


class OutBuffer:
    __slots__ = ("_chunks", "_off", "size", "offered", "peak")

    def __init__(self):
        self._chunks = collections.deque()
        self._off = 0             # bytes of _chunks[0] already sent
        self.size = 0             # bytes held
        self.offered = 0          # bytes offered to stack.send, ever
        self.peak = 0             # the largest `size` seen

    def __len__(self):
        return self.size

    def __bool__(self):
        return self.size > 0

    def append(self, data):
        """Queue ``data`` (bytes-like; kept by reference: do not modify it afterwards)."""
        n = len(data)
        if n:
            self._chunks.append(data)
            self.size += n
            if self.size > self.peak:
                self.peak = self.size

    def clear(self):
        self._chunks.clear()
        self._off = 0
        self.size = 0

    def send(self, stack, conn):
        """Move as much as ``conn``'s send buffer has room for -> bytes taken."""
        chunks = self._chunks
        taken = 0
        while chunks:
            space = conn.send_space
            if space <= 0:
                break
            first = chunks[0]
            off = self._off
            left = len(first) - off
            if left >= space or left >= _JOIN_MAX or len(chunks) == 1:
                piece = first if off == 0 and left <= space else \
                    memoryview(first)[off:off + space]
            else:
                # small chunks: one join, one send (one segment under TCP_NODELAY)
                pieces = [memoryview(first)[off:] if off else first]
                total = left
                for c in itertools.islice(chunks, 1, None):
                    if total + len(c) > space:
                        break
                    pieces.append(c)
                    total += len(c)
                piece = b"".join(pieces) if len(pieces) > 1 else pieces[0]
            offer = len(piece)
            n = stack.send(conn, piece)
            self.offered += offer
            if n:
                self._consume(n)
                taken += n
            if n < offer:
                break
        return taken

    def _consume(self, n):
        """Drop ``n`` sent bytes from the front."""
        chunks = self._chunks
        self.size -= n
        while n:
            left = len(chunks[0]) - self._off
            if n < left:
                self._off += n
                return
            n -= left
            chunks.popleft()
            self._off = 0
