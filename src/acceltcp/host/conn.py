"""A connection's host side: the record the stack keeps on each TCB, and how TCBs are
born.

Theory of operation
-------------------
Per-connection host state lives in a `HostConn` record hung on ``conn.owner``
(``conn.key`` is the demux key, ``frame[26:38]`` of its segments): route and ARP cache,
timer bookkeeping (``armed``, `host.timers`), listener linkage (``parent``,
``embryonic``), the application's event handler (the socket layer or the asyncio face)
and the NIC offload flags. The TCB calls ``conn.on_event`` on app-visible changes; the
stack handles listener bookkeeping and table removal there, then forwards to
``HostConn.handler``.

`TcbFactory` makes the three kinds of TCB, each with its record, never running it (the
stack does that, under its entry protocol) and never filing it in a table:

* `active`: an active open (RFC 9293 §3.10.1), ISN and timestamp offset from the host's
  keyed numbers (`host.ports`);
* `syn_child`: a listener's child from a SYN, to go SYN-RECEIVED through
  ``accept_syn``. Its SYN-ACKs go to the SYN's sender MAC, from a private ARP entry
  outside the neighbour table: a spoofed source costs no ARP resolution (nor a queued
  frame). From ESTABLISHED on, the table;
* `cookie_child`: the child of a handshake completed with a SYN cookie -- the NIC's
  (0x090A) or the host's (`host.listen`) -- ESTABLISHED through ``accept_cookie``, or a
  ``tcp.quasi.QuasiTcb`` under lazy TCB creation (below).

Lazy TCB creation (AccelTCP §5.2, ``lazy_tcb``). A child born from a cookie -- the
NIC's 0x090A or the host's own -- whose first segment is the common one starts as a
``tcp.quasi.QuasiTcb``: only what its first exchange needs (no RTO estimator, congestion
controller, retransmission state). It is promoted in place to the full
``TcpConnection`` when it needs one (a further segment, a timer, output, close); one
whose reply and close go to the NIC's teardown offload is freed without ever being
full. That is the only way a quasi-TCB ends as one, so by default (``lazy_tcb=True``)
only children of a listener that offloads teardown to a NIC start quasi: elsewhere
every one would be promoted, and promotion costs a little more than building the full
TCB at once. ``lazy_tcb="always"``: every cookie child (tests, measurements); False:
none. Promotion yields exactly the full TCB's state, so the frames the stack sends do
not depend on the option (tests/e2e/test_lazy_tcb.py). Counters: ``tcb_quasi`` (born
quasi), ``tcb_quasi_freed`` (removed while quasi), ``tcb_quasi_declined`` (an unusual
first segment: a full TCB at once), ``tcb_promoted_<reason>`` (``tcp.quasi``'s
PROMOTE_REASONS).
"""

from ..tcp.quasi import QuasiTcb
from .arp import ArpEntry

__all__ = ["HostConn", "TcbFactory"]

_U32 = 0xFFFFFFFF


class HostConn:
    """Host-side bookkeeping of one TCB, at ``conn.owner``.

    `handler(conn)` is the application layer's event callback (socket API / asyncio
    face) and `app` its per-connection object; set both with `HostStack.attach`.
    """

    __slots__ = ("key", "remote_ip", "local_port", "remote_port", "nexthop", "arp",
                 "armed", "parent", "embryonic", "removed", "handler", "app", "passive",
                 "offload_teardown", "teardown_wait")

    # No reference back to the TCB: conn -> owner only, so a finished connection is
    # freed by reference counting, without work for the cyclic garbage collector.
    def __init__(self, key, remote_ip, local_port, remote_port, nexthop, passive):
        self.key = key
        self.remote_ip = remote_ip
        self.local_port = local_port
        self.remote_port = remote_port
        self.nexthop = nexthop
        self.arp = None          # cached live host.arp.ArpEntry of nexthop
        self.armed = None        # the deadline this conn currently has in the timer heap
        self.parent = None       # Listener, until the app accepts the child
        self.embryonic = False   # a listener's child not yet established
        self.removed = False
        self.handler = None
        self.app = None
        self.passive = passive
        self.offload_teardown = False   # offer the teardown to the NIC on close (§4.2)
        self.teardown_wait = False      # closed by the app, offered once the rest fits


class TcbFactory:
    """Makes the TCBs of one host (address `ip`), each with its `HostConn`.

    `output` and `on_event` are the callbacks every TCB gets; `isn(local ip, local port,
    remote ip, remote port, now)` and `ts_offset(remote ip)` the host's keyed numbers;
    `route` its `host.addr.Route`; `counters` its slow-path Counter.
    """

    __slots__ = ("ip", "tcb_class", "lazy_tcb", "tso_max", "_isn", "_ts_offset", "_route",
                 "_output", "_on_event", "_c")

    def __init__(self, ip, tcb_class, lazy_tcb, tso_max, isn, ts_offset, route, output,
                 on_event, counters):
        self.ip = ip
        self.tcb_class = tcb_class
        self.lazy_tcb = lazy_tcb
        self.tso_max = tso_max
        self._isn = isn
        self._ts_offset = ts_offset
        self._route = route
        self._output = output
        self._on_event = on_event
        self._c = counters

    def active(self, cfg, key, rip, lport, rport, nexthop, now):
        """A TCB to open toward (rip, rport) from `lport` (the caller calls connect)."""
        iss = self._isn(self.ip, lport, rip, rport, now) & _U32
        conn = self.tcb_class(cfg, self.ip, lport, rip, rport, iss, self._output, now)
        conn.tso_max = self.tso_max
        conn.ts_offset = self._ts_offset(rip)
        conn.owner = HostConn(key, rip, lport, rport, nexthop, False)
        conn.key = key
        conn.on_event = self._on_event
        return conn

    def syn_child(self, lst, cfg, key, src, seg, eth_src, now):
        """The child of `lst` for SYN `seg` from `src` via MAC `eth_src` (the caller
        calls accept_syn, then sets on_event: LISTEN -> SYN-RECEIVED concerns no one)."""
        lport = seg.dst_port
        rport = seg.src_port
        iss = self._isn(self.ip, lport, src, rport, now) & _U32
        conn = self.tcb_class(cfg, self.ip, lport, src, rport, iss, self._output, now)
        conn.tso_max = self.tso_max
        conn.ts_offset = self._ts_offset(src)
        rec = conn.owner = HostConn(key, src, lport, rport, self._route.nexthop_or_self(src),
                                    True)
        rec.arp = ArpEntry(rec.nexthop, eth_src, None, True)   # the SYN's sender MAC
        conn.key = key
        rec.parent = lst
        rec.embryonic = True
        return conn

    def cookie_child(self, lst, cfg, key, src, seg, hdr, syn_window, now, nic):
        """The child of `lst` for cookie ACK `seg` from `src` (`hdr` the NewConnection
        header): a QuasiTcb (the caller starts it) when lazy creation applies and the ACK
        is the common one, else a full TCB (the caller calls accept_cookie). Lazy: with
        ``lazy_tcb`` "always", or True and `lst` offloads teardown to a NIC (`nic`)."""
        lport = seg.dst_port
        rport = seg.src_port
        conn = None
        lazy = self.lazy_tcb
        if lazy and (lazy == "always" or (lst.offload_teardown and nic)):
            # §5.2: only what the first exchange needs; None if the ACK is unusual
            conn = QuasiTcb.from_cookie(cfg, self.ip, lport, src, rport, self._output, seg,
                                        hdr, now, syn_window)
            if conn is None:
                self._c["tcb_quasi_declined"] += 1
        if conn is None:
            conn = self.tcb_class(cfg, self.ip, lport, src, rport, (seg.ack - 1) & _U32,
                                  self._output, now)
        conn.tso_max = self.tso_max
        rec = conn.owner = HostConn(key, src, lport, rport, self._route.nexthop_or_self(src),
                                    True)
        conn.key = key
        conn.on_event = self._on_event
        # Filed with the established TCBs, not the embryonic ones: the flag only makes its
        # first event (ESTABLISHED, with the data of the ACK) put it on the accept queue,
        # as for a SYN-RECEIVED child.
        rec.parent = lst
        rec.embryonic = True
        return conn
