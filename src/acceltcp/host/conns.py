"""Where a host's TCBs live: the demux tables, and what moving a TCB between them does.

Theory of operation
-------------------
Every TCB the stack holds is in exactly one table, under its demux key (``conn.key``,
src-ip|dst-ip|sport|dport of its incoming segments):

* `table`: synchronized connections and active opens -- the receive path's one dict
  lookup -- and children born ESTABLISHED from a cookie (``HostConn.embryonic`` set
  until their first event);
* `embryonic`: a listener's children in SYN-RECEIVED (`host.listen`);
* `parked`: connections offered to the NIC's teardown offload, no answer yet
  (``teardown_pending`` drops for their segments; ``HostConn.armed`` = `PARKED`, so none
  of their timers fires);
* `steered`: connections draining into a splice: their segments go to the offload's
  handler (`host.offload`), their timers keep running.

A TIME-WAIT record is not a TCB: `host.timewait`.

The TCB reports app-visible changes through ``conn.on_event`` = `on_event`: a child that
becomes synchronized moves to `table` and its listener's accept queue
(`established`, `host.listen.Listener`'s queues); a closed TCB is removed (`remove`: out of its table and its listener,
counted -- ``conns_closed``, or ``conns_embryonic_closed`` for a child never
established, ``conns_<error>``, its TCB counters to `host.stats`); then the event goes
on to the application's handler. Removal also keeps the timer heap from filling with
stale entries of finished TCBs: it is compacted once they outnumber the live ones
(amortized O(1) per removal).

Application time. With ``app_timing`` on, the time (``time.perf_counter_ns``: a read
costs ~50 ns where ``process_time_ns`` costs ~600) spent in
the application's callbacks -- the connection's handler and the listener's
``on_acceptable`` -- is added to ``app_ns``, so that a runner accounting the host's CPU
by category can tell the application's share from the stack's. The socket calls the
application makes from inside a callback (``send``, ``close``...) run inside it: they
are in ``app_ns``, and the stack (`HostStack.app_timing`) also times them into
``api_ns`` by kind (``data``: send, recv; ``teardown``: close, shutdown, abort), so that
the TCP work they do can be told from the application's own. A callback entered from
inside another one (a ``close`` whose event reaches the handler again) is timed once,
by the outer one; likewise a socket call inside a socket call. Off, the cost is one
attribute test per event.
"""

import itertools
import time

from ..tcp import states
from ..tcp.quasi import QuasiTcb
from ..wire.ipv4 import ip_to_str

__all__ = ["ConnTable", "PARKED"]

# HostConn.armed of a parked TCB (offered to the NIC): earlier than any deadline, so
# the stack never pushes it and every heap entry it has is stale. Its timers must not
# fire: the connection is the NIC's unless it refuses (then `unpark` re-arms).
PARKED = float("-inf")
_SYNCHRONIZED = frozenset(states.SYNCHRONIZED)


class ConnTable:
    """The TCBs of one host by demux key.

    `timers` is its `host.timers.TimerHeap`, `arp_entries` its neighbour table (ip ->
    ArpEntry), `closed_stats` its `host.stats.ClosedTcbStats`, `counters` its slow-path
    Counter. `accepted`, `closed` and `quasi_freed` count connections established as a
    listener's child, removed, and removed while quasi.
    """

    __slots__ = ("table", "embryonic", "parked", "steered", "accepted", "closed",
                 "quasi_freed", "app_timing", "app_ns", "api_ns", "_in_app", "_in_api",
                 "_timers", "_arp",
                 "_closed_stats", "_c")

    def __init__(self, timers, arp_entries, closed_stats, counters):
        self.table = {}           # key -> conn (synchronized or actively opened)
        self.embryonic = {}       # key -> conn (listener children in SYN-RECEIVED)
        self.parked = {}          # key -> conn offered to the NIC, no answer yet
        self.steered = {}         # key -> the offload's splice handler
        # per connection: the short-lived connection's path is a hot path too
        self.accepted = self.closed = self.quasi_freed = 0
        self.app_timing = False   # time the app's callbacks into app_ns (module doc)
        self.app_ns = 0
        self.api_ns = {"data": 0, "teardown": 0}
        self._in_app = self._in_api = False
        self._timers = timers
        self._arp = arp_entries
        self._closed_stats = closed_stats
        self._c = counters

    def __len__(self):
        return len(self.table) + len(self.embryonic)

    def in_use(self, key):
        """A TCB holds `key` (TIME-WAIT records are the caller's to check)."""
        return key in self.table or key in self.embryonic

    def on_event(self, conn):
        """The TCB's ``on_event``: table bookkeeping, then the app's handler."""
        rec = conn.owner
        if rec.embryonic and conn.state in _SYNCHRONIZED and not conn.closed:
            self.established(conn, rec)
        if conn.closed and not rec.removed:
            self.remove(conn)
        h = rec.handler
        if h is not None:
            if self.app_timing:
                self.timed(h, conn)
            else:
                h(conn)

    def timed(self, callback, arg):
        """``callback(arg)``, an application callback, its time added to ``app_ns``
        (once: a callback entered from inside another is the outer one's time)."""
        if self._in_app:
            callback(arg)
            return
        self._in_app = True
        t0 = time.perf_counter_ns()
        try:
            callback(arg)
        finally:
            self.app_ns += time.perf_counter_ns() - t0
            self._in_app = False

    def api_call(self, kind, method, *args):
        """``method(*args)``, a socket call of the application: timed into
        ``api_ns[kind]`` when made from inside a timed callback."""
        if not self._in_app or self._in_api:
            return method(*args)
        self._in_api = True
        t0 = time.perf_counter_ns()
        try:
            return method(*args)
        finally:
            self.api_ns[kind] += time.perf_counter_ns() - t0
            self._in_api = False

    def established(self, conn, rec):
        """A listener's child is synchronized: into `table` and the accept queue."""
        lst = rec.parent
        key = rec.key
        if self.embryonic.get(key) is conn:
            del self.embryonic[key]
        self.table[key] = conn
        rec.embryonic = False
        if rec.arp is not None and self._arp.get(rec.nexthop) is not rec.arp:
            rec.arp = None          # the SYN's sender MAC (private entry): the table now
        self.accepted += 1
        if lst is not None:
            rec.offload_teardown = lst.offload_teardown
        if lst is None or lst.closed:
            rec.parent = None
            return
        lst.syn_queue.pop(conn, None)              # to the listener's accept queue
        lst.accept_queue.append(conn)
        cb = lst.on_acceptable
        if cb is not None:
            if self.app_timing:
                self.timed(cb, lst)
            else:
                cb(lst)

    def remove(self, conn):
        """Forget `conn` (closed, or handed to a TIME-WAIT record), counted."""
        rec = conn.owner
        if rec.removed:
            return
        rec.removed = True
        rec.armed = None
        key = rec.key
        tbl = self.embryonic if rec.embryonic else self.table
        if tbl.get(key) is conn:
            del tbl[key]
        lst = rec.parent
        if lst is not None:
            rec.parent = None
            lst.forget(conn)
        # Stale heap entries keep finished TCBs alive until their deadline.
        if len(self._timers.heap) > 64 + 2 * (len(self.table) + len(self.embryonic)):
            self.compact_timers()
        if rec.embryonic:
            # A child that never completed its handshake was never accepted: not a
            # closed connection (accepted + opened == closed + live - embryonic).
            self._c["conns_embryonic_closed"] += 1
        else:
            self.closed += 1
        err = conn.error
        if err is not None:
            self._c["conns_" + err] += 1    # conns_reset / conns_timeout / conns_refused
        if conn.__class__ is QuasiTcb:
            self.quasi_freed += 1                    # gone without becoming a full TCB
        self._closed_stats.add(conn)

    def compact_timers(self):
        """Rebuild the timer heap from every connection that can be armed."""
        steered = self.steered.values()
        waiting = {sp.c for sp in steered} | {sp.s for sp in steered}
        self._timers.compact(itertools.chain(self.table.values(), self.embryonic.values(),
                                             waiting))

    def unpark(self, conn):
        """A parked `conn` back in `table`, to be re-armed."""
        rec = conn.owner
        key = rec.key
        self.parked.pop(key, None)
        self.table[key] = conn
        rec.armed = None

    def steer(self, conn, handler):
        key = conn.owner.key
        del self.table[key]
        self.steered[key] = handler

    def unsteer(self, conn, handler, restore):
        key = conn.owner.key
        if self.steered.get(key) is not handler:
            return False
        del self.steered[key]
        if restore and not conn.closed:
            self.table[key] = conn
        return True

    def local_ports(self):
        """The local ports of every TCB."""
        used = {c.owner.local_port for c in self.table.values()}
        used.update(c.owner.local_port for c in self.embryonic.values())
        return used

    def users(self, port):
        """The TCBs whose local port is `port`."""
        out = [c for c in self.table.values() if c.owner.local_port == port]
        out.extend(c for c in self.embryonic.values() if c.owner.local_port == port)
        return out

    def view(self, local_ip):
        """{(local ip, local port, remote ip, remote port): conn}, addresses as str."""
        out = {}
        lip = ip_to_str(local_ip)
        for tbl in (self.table, self.embryonic):
            for conn in tbl.values():
                r = conn.owner
                out[(lip, r.local_port, ip_to_str(r.remote_ip), r.remote_port)] = conn
        return out
