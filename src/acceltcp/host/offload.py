"""The host's side of the NIC offloads: policy, hand-over and accounting (AccelTCP §4).

Theory of operation
-------------------
A ``HostStack`` on a NIC device (``device.nic``) owns one ``NicOffload``. It is the only
part of the host that speaks the control protocol of ``wire.control`` besides the
Listen/Unlisten of setup offload, and it keeps the one rule of the design: a connection
is owned by the host *or* by the NIC, never both, and the host can always do the work
itself.

Teardown (§4.2). ``HostStack.close`` asks ``teardown(conn, now)`` first when the
connection's ``offload_teardown`` flag is set (``TCP_TEARDOWN_OFFLOAD``, or inherited
from its listener). The offer is made only when

* the TCB allows it (``TcpConnection.teardown_offer``: ESTABLISHED/CLOSE_WAIT, nothing
  unread, every unacknowledged byte fits the peer's window and cwnd), no linger, and
* the NIC is under its teardown-flow threshold as the host counts it: flows offered
  minus flows the NIC reported finished (``TeardownDone``), against the capacity of the
  latest ``StatusReport`` (the host asks for one when it starts). The host's count can
  only be too high (a finish it has not heard of yet), so it never overfills the NIC.

The offer is one 0x090B frame: the ``Teardown`` header in front of a TSO segment with
all unacknowledged data (partial checksum: the NIC rebuilds every frame it sends). The
TCB is *parked* meanwhile: out of the demux table and the timer heap, output cancelled.
``TeardownAccepted`` -> ``conn.handoff``: the TCB closes without sending anything and
the host forgets it. ``TeardownRefused`` -> back into the table and an ordinary
``close``. The NIC answers in the order it got the frames, so no segment of the peer
can reach the host between the offer and the answer except after a refusal, which then
arrived first.

NIC loss (``lost``): parked TCBs are resumed as if refused; flows the NIC had accepted
went with it.

Counters (in ``HostStack.counters``): teardown_offered, teardown_accepted,
teardown_refused_<reason>, teardown_done_<reason>, teardown_ineligible,
teardown_nic_full, nic_status_reports, nic_msgs_in, nic_msgs_bad.
"""

from ..wire import control
from ..wire.control import (
    StatusReport, StatusRequest, Teardown, TeardownAccepted, TeardownDone, TeardownRefused,
)
from ..wire.errors import WireError
from ..wire.tcp import ACK, PSH, build_tcp_header_partial

__all__ = ["NicOffload"]

_REFUSED = {control.TEARDOWN_REFUSED_TABLE_FULL: "table_full",
            control.TEARDOWN_REFUSED_BAD_STATE: "bad_state",
            control.TEARDOWN_REFUSED_DUPLICATE: "duplicate"}
_DONE = {control.TEARDOWN_END_CLOSED: "closed", control.TEARDOWN_END_RESET: "reset",
         control.TEARDOWN_END_RETRIES: "retries"}


class NicOffload:
    """Offload policy and bookkeeping of one HostStack (see the module docstring)."""

    def __init__(self, stack):
        self.stack = stack
        self._c = stack._c
        #: the NIC's teardown-flow capacity (None until its first StatusReport)
        self.teardown_capacity = None
        #: flows offered and not reported finished (accepted or still pending)
        self.teardown_active = 0
        self.status = None                 # the latest StatusReport
        self._pending = {}                 # flow_id -> parked TcpConnection
        self._flow_id = 0

    def start(self):
        """Ask the NIC for its capacities (the answer arrives as a StatusReport)."""
        self.stack._nic_control(StatusRequest(1))

    # ------------------------------------------------------------------ teardown
    def teardown(self, conn, now):
        """Offer `conn`'s teardown to the NIC. True: parked, the NIC decides; False: the
        caller closes it itself."""
        cap = self.teardown_capacity
        if cap is not None and self.teardown_active >= cap:
            self._c["teardown_nic_full"] += 1
            return False
        rec = conn.owner
        e = rec.arp
        if e is None or not e.live:
            e = rec.arp = self.stack._arp.get(rec.nexthop)
        offer = conn.teardown_offer(now) if e is not None else None
        if offer is None:
            self._c["teardown_ineligible"] += 1
            return False
        msg, seq, ack, window, payload = offer
        st = self.stack
        fid = self._flow_id = (self._flow_id % 0xFFFFFFFF) + 1
        msg.flow_id = fid
        st._ident = ident = (st._ident + 1) & 0xFFFF
        hdr = build_tcp_header_partial(e.mac, st.mac, st.ip, rec.remote_ip, ident,
                                       rec.local_port, rec.remote_port, seq, ack,
                                       ACK | PSH if payload else ACK, window,
                                       b"", len(payload))
        # Park: out of the table (the NIC now answers for this 4-tuple) and the timers.
        del st._table[rec.key]
        rec.armed = None
        conn.app_closed = True
        self._pending[fid] = conn
        self.teardown_active += 1
        self._c["teardown_offered"] += 1
        st._nic_send(control.wrap(hdr + payload, msg))
        return True

    def _teardown_answer(self, msg, accepted):
        conn = self._pending.pop(msg.flow_id, None)
        if conn is None:
            self._c["nic_msgs_bad"] += 1
            return
        st = self.stack
        now = st.clock()
        if accepted:
            self._c["teardown_accepted"] += 1
            conn.handoff(now)                      # CLOSED; _on_conn_event removes it
            return
        self.teardown_active -= 1
        self._c["teardown_refused_" + _REFUSED.get(msg.reason, "other")] += 1
        self._resume(conn, now)

    def _resume(self, conn, now):
        st = self.stack
        st._table[conn.owner.key] = conn
        conn.close(now)
        st._touch(conn)

    # ------------------------------------------------------------------ messages
    def on_frame(self, frame):
        """A 0x090D/0x090E frame from the NIC (WireError propagates: a ctl_* drop)."""
        msg = control.decode(frame)
        self._c["nic_msgs_in"] += 1
        t = type(msg)
        if t is TeardownAccepted:
            self._teardown_answer(msg, True)
        elif t is TeardownDone:
            self.teardown_active = max(0, self.teardown_active - 1)
            self._c["teardown_done_" + _DONE.get(msg.reason, "other")] += 1
        elif t is TeardownRefused:
            self._teardown_answer(msg, False)
        elif t is StatusReport:
            self._c["nic_status_reports"] += 1
            self.status = msg
            self.teardown_capacity = msg.teardown_capacity
            self.teardown_active = max(msg.teardown_active, len(self._pending))
        else:
            self._c["nic_msgs_bad"] += 1           # a host->NIC type, or not ours
            raise WireError("ctl_unexpected_type")

    def lost(self):
        """The NIC is gone: parked connections are closed by the host after all."""
        now = self.stack.clock()
        pending, self._pending = self._pending, {}
        self.teardown_active = 0
        for conn in pending.values():
            self._c["teardown_refused_nic_lost"] += 1
            self._resume(conn, now)
