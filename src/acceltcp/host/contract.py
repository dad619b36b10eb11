"""The offload contract: what host.offload (NicOffload) and host.chimney (ChimneyHost)
may do to a HostStack.

Theory of operation
-------------------
The offloads take a connection away from the stack's demux table and give it back:
``park`` (out of the table and its timers, segments for its 4-tuple dropped as
``teardown_pending``) / ``unpark`` / ``remove``; ``steer`` (every segment for its
4-tuple goes to the offload's handler) / ``unsteer``; ``deliver`` a segment to a TCB as
the receive path does and ``touch`` it after a call from outside; ``replay`` frames
held back. They send through ``nic_control`` / ``nic_send`` / ``send_raw`` and count in
``slow_counters``. Each is a thin, documented step over the stack's tables and timers,
so that a change to those keeps the offloads working (tests/host/test_offload_contract.py
checks that host.offload uses nothing else). None of these is on the per-frame path.

`OffloadContract` is a part of `host.stack.HostStack` (a base class) and works on its
state: ``_table``, ``_parked``, ``_conns``, ``_arp``, ``_c``, ``_ident``,
``_entry_conn`` and its ``_touch``, ``_replay``, ``_nic_control``, ``_nic_send`` and
``_send_frame``.
"""

from .conns import PARKED

__all__ = ["OffloadContract"]


class OffloadContract:
    """The HostStack calls host.offload and host.chimney use (module docstring)."""

    __slots__ = ()

    @property
    def slow_counters(self):
        """The stack's slow-path ``collections.Counter`` (``counters`` reports it); an
        offload adds its own counts to it."""
        return self._c

    def nic_control(self, msg):
        """Send a host -> NIC control message (a ``wire.control`` message)."""
        self._nic_control(msg)

    def nic_send(self, frame):
        """Send a frame built for the NIC (a control frame, or the 0x090B Teardown frame
        with its segment): counted ``nic_control_sent``, not in frames_out."""
        self._nic_send(frame)

    def send_raw(self, frame):
        """Send a complete Ethernet frame to the device as it is (no ARP, no counting)."""
        self._send_frame(frame)

    def arp_entry(self, ip):
        """The ARP entry (``.mac``, ``.live``) for `ip` (raw 4 bytes), or None."""
        return self._arp.get(ip)

    def next_ident(self):
        """The next IPv4 identification for a frame the stack did not build itself."""
        self._ident = ident = (self._ident + 1) & 0xFFFF
        return ident

    def park(self, conn):
        """Take `conn` out of the table and its timers; segments for its 4-tuple are
        dropped (``teardown_pending``) until ``unpark`` or ``remove``. For a connection
        offered to the NIC, until the NIC answers."""
        rec = conn.owner
        del self._table[rec.key]
        self._parked[rec.key] = conn
        rec.armed = PARKED           # its heap entries are stale, and _touch pushes none

    def unpark(self, conn):
        """Put a parked `conn` back in the table (the caller then calls ``touch``)."""
        self._conns.unpark(conn)

    def remove(self, conn):
        """Forget `conn` for good (parked or not): out of every table, counted closed."""
        self._parked.pop(conn.owner.key, None)
        self._conns.remove(conn)

    def steer(self, conn, handler):
        """Take `conn` out of the table; from now on every segment for its 4-tuple goes
        to ``offload.splice_segment(handler, key, frame, seg)`` (``handler`` is the
        offload's own object) until ``unsteer``. Its timers keep running (``touch``)."""
        self._conns.steer(conn, handler)
        self._touch(conn)

    def unsteer(self, conn, handler, restore=True):
        """End ``steer(conn, handler)`` (if `handler` still has the 4-tuple: -> True);
        with `restore`, a `conn` that is not closed is back in the table."""
        return self._conns.unsteer(conn, handler, restore)

    def deliver(self, conn, seg):
        """Run one received segment through `conn` as the receive path does (its timer
        re-armed once, on return), then ``touch`` it."""
        self._entry_conn = conn
        try:
            conn.on_segment(seg, self.clock())
        finally:
            self._entry_conn = None
        self._touch(conn)

    def touch(self, conn):
        """After a call into `conn` from outside the stack: remove it if it closed, else
        re-arm its timer (and retry a teardown offer that waits)."""
        self._touch(conn)

    def replay(self, frames):
        """Receive frames held back (already verified and counted once) after all."""
        self._replay(frames)

    def in_table(self, conn):
        """Is ``conn`` the demux table's TCB for its 4-tuple (not parked, steered or
        gone)?"""
        return self._table.get(conn.owner.key) is conn
