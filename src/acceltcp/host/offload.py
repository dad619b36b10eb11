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
* the NIC is under its teardown-flow threshold as the host counts it: the NIC's
  ``teardown_active`` gauge of its latest ``StatusReport`` (the host asks for one when
  it starts; a moderating NIC sends one whenever flows finished, at most once per
  report interval) plus the flows offered since, minus any ``TeardownDone`` since,
  against the NIC's capacity. The count can only be too high (a finish not yet
  heard of), so the host never overfills the NIC.

The offer is one 0x090B frame: the ``Teardown`` header in front of a TSO segment with
all unacknowledged data (partial checksum: the NIC rebuilds every frame it sends). The
TCB is *parked* meanwhile: out of the demux table and the timer heap, output cancelled.
``TeardownAccepted(k)`` is cumulative: every offer up to flow id k that was not
refused is the NIC's (a moderating NIC sends one per report interval, not one per
flow) -> ``conn.handoff``: the TCB closes without sending anything and the host forgets
it. ``TeardownRefused`` (always sent at once) -> back into the table and an ordinary
``close``. The NIC answers in the order it got the frames, so no segment of the peer
can reach the host between the offer and the answer except after a refusal, which then
arrived first. After the answer, a segment can still reach the host where the NIC and
the host have separate queues (the XDP NIC: frames it passed up before the flow was
its own wait in the TAP's queue): for ``HANDED_LINGER`` seconds after an acceptance
the host drops segments of that 4-tuple (``drops["teardown_late"]``, ``late``) instead
of resetting them; the peer's retransmission reaches the NIC.  The same race after a
splice is installed: such a frame goes to the NIC like the held frames
(``splice_late``, counted ``splice_late_forwarded``), whose rule translates it.  And
after the splice ended (0x090D): a straggler the NIC passed up once its rules were gone
(an endpoint's duplicate ACK crossing the last ACK) is dropped for ``HANDED_LINGER``
seconds (``drops["splice_late"]``): sent to the NIC it would leave untranslated, reset
it would break the endpoint's TIME-WAIT.

Splice (§4.3, Figure 7). ``nsplice(c, s, callback)`` joins the proxy's connection to
the client (c) and to the server (s):

1. Unread bytes in either receive buffer are relayed to the other side as its send
   buffer allows (the proxy asked for everything from here on to be relayed). Both
   TCBs leave the demux table for
   ``HostStack.steer``: a segment that carries data or FIN is *held* (the raw frame,
   in arrival order) and only its acknowledgment is given to the TCB (payload and FIN
   stripped), so the receive sequence spaces stay frozen while the send sides drain.
   An RST goes to the TCB (a reset fails the splice) until the Splice is sent; from
   then on it is held too: the TCB, behind the held data, cannot judge it, and the NIC
   will translate it for the other endpoint and end the splice.
2. When both receive buffers are empty and both send buffers empty and acknowledged,
   the offsets are fixed
   (``wire.control.splice_rules`` from both TCBs) and a 0x090C ``Splice`` goes to the NIC.
3. ``SpliceInstalled``: both TCBs are handed over (closed here without sending
   anything), the held frames are sent to the NIC's host port, where the rules
   translate them as if they had just arrived; when the NIC reports the end (0x090D)
   ``callback(SpliceClosed)`` gets its counts. ``SpliceRefused`` -- or a TCB that dies,
   or a condition that rules splicing out (timestamps on one side only, an MSS the
   other side cannot take, a FIN already received) -- gives ``callback(SpliceFailed)``:
   both connections are the app's again and the held frames are delivered to them.

Parked 4-tuples. The NIC answers offers in order, but the channel runs both ways: a
peer segment the NIC passed up before it read the offer can reach the host after the
TCB was parked (always possible with a NIC in its own process; a hung NIC makes it
common). Such segments are dropped (``drops["teardown_pending"]``; the peer
retransmits to whoever owns the flow after the answer). They must not make a second
TCB for the 4-tuple: that TCB's own offer is refused as a duplicate and, resumed, it
replaced the first TCB in the table, which then was never closed (accepted - closed
drifted from live).

NIC loss (``lost``): parked TCBs are resumed as if refused, pending splices fail;
installed splices end with ``SpliceLost``; teardown flows the NIC had accepted went
with it (counted).

Counters (in ``HostStack.counters``): teardown_offered, teardown_accepted,
teardown_refused_<reason>, teardown_done_<reason>, teardown_ineligible,
teardown_nic_full, splice_requested, splice_installed, splice_failed_<reason>,
splice_closed, splice_held_frames, splice_late_forwarded, nic_status_reports, nic_msgs_in,
nic_msgs_bad, nic_lost_teardown_flows, nic_lost_splices.
"""

import collections

from ..tcp.connection import TEARDOWN_WAIT, TS_MASK
from ..tcp.states import CLOSE_WAIT, ESTABLISHED
from ..wire import control
from ..wire.control import (
    Splice, SpliceClosed, SpliceInstalled, SpliceRefused, SpliceSide, StatusReport,
    StatusRequest, TeardownAccepted, TeardownDone, TeardownRefused, splice_rules,
)
from ..wire.errors import WireError
from ..wire.tcp import ACK, FIN, PSH, RST, build_tcp_header_partial

__all__ = ["NicOffload", "SpliceFailed", "SpliceLost", "SPLICE_LOST"]

_ET_TEARDOWN = control.ETHERTYPE_TEARDOWN.to_bytes(2, "big")
_SPLICE_REFUSED = {control.SPLICE_REFUSED_TABLE_FULL: "table_full",
                   control.SPLICE_REFUSED_BAD_RULE: "bad_rule",
                   control.SPLICE_REFUSED_DUPLICATE: "duplicate"}

_REFUSED = {control.TEARDOWN_REFUSED_TABLE_FULL: "table_full",
            control.TEARDOWN_REFUSED_BAD_STATE: "bad_state",
            control.TEARDOWN_REFUSED_DUPLICATE: "duplicate"}
_DONE = {control.TEARDOWN_END_CLOSED: "closed", control.TEARDOWN_END_RESET: "reset",
         control.TEARDOWN_END_RETRIES: "retries"}



#: After the NIC accepted a teardown, segments of that 4-tuple still reaching the host
#: (queued before the NIC took the flow) are dropped, not reset, for this long (and at
#: most HANDED_MAX 4-tuples are remembered).
HANDED_LINGER = 1.0
HANDED_MAX = 4096


def _linger(h, key, now):
    """Remember in `h` (key -> until when) that `key` left the host at `now`: for
    HANDED_LINGER seconds, at most HANDED_MAX keys, the oldest forgotten first."""
    h[key] = now + HANDED_LINGER
    h.move_to_end(key)
    while h and (len(h) > HANDED_MAX or next(iter(h.values())) < now):
        h.popitem(last=False)

class SpliceFailed:
    """``nsplice``'s callback argument when the NIC did not take the pair: `reason` (a
    short word: table_full, bad_rule, duplicate, timestamps, mss, state, reset,
    nic_lost), `detail` (text), `relayed_c`/`relayed_s` (what ``nsplice`` relayed from
    each side's receive buffer before it gave up). Both connections are the app's again."""

    __slots__ = ("splice_id", "reason", "detail", "relayed_c", "relayed_s")

    def __init__(self, splice_id, reason, detail="", relayed_c=0, relayed_s=0):
        self.splice_id = splice_id
        self.reason = reason
        self.detail = detail
        self.relayed_c = relayed_c      # bytes nsplice relayed client -> server meanwhile
        self.relayed_s = relayed_s      # and server -> client

    def __repr__(self):
        return "SpliceFailed(%d, %r%s)" % (self.splice_id, self.reason,
                                           ", %r" % self.detail if self.detail else "")


#: SpliceLost.reason: not a wire code (those start at 1)
SPLICE_LOST = 0


class SpliceLost(control.SpliceClosed):
    """``nsplice``'s callback argument when the NIC was lost (died, or hung and was
    killed) while it ran the splice: the spliced connection went with it (its peers see
    a reset or a timeout). A ``SpliceClosed`` with ``reason`` SPLICE_LOST, no counts;
    the keys are the host's (local-side) 4-tuple keys of the two TCBs."""

    __slots__ = ()

    def __init__(self, splice_id, client_key, server_key):
        super().__init__(splice_id, client_key, server_key, reason=SPLICE_LOST)

    def __repr__(self):
        return "SpliceLost(%d)" % self.splice_id


class _Splice:
    __slots__ = ("sid", "c", "s", "callback", "held", "sent", "ts_floor", "relayed")

    def __init__(self, sid, c, s, callback):
        self.sid = sid
        self.c = c
        self.s = s
        self.callback = callback
        self.held = []          # raw frames with data/FIN, in arrival order
        self.sent = False       # the Splice message is out; waiting for the NIC
        self.ts_floor = {}      # conn -> the oldest TSval among its held frames
        self.relayed = {c: 0, s: 0}     # conn -> bytes relayed from its receive buffer


def teardown_header(offer, flow_id):
    """The 0x090B Teardown header (bytes) for a ``TcpConnection.teardown_offer`` (a
    ``TeardownOffer``), with the host's flow id."""
    return control.Teardown.pack(
        offer.mss, control.STATE_ESTABLISHED if offer.state == ESTABLISHED
        else control.STATE_CLOSE_WAIT, int(offer.rto * 1e6), flow_id, offer.snd_wnd,
        offer.snd_wscale, offer.rcv_wscale, offer.sack_ok, offer.timestamps,
        min(offer.max_retries, 255), offer.ts_recent, offer.ts_offset, offer.ts_last,
        int(offer.time_wait * 1000))


class NicOffload:
    """Offload policy and bookkeeping of one HostStack (see the module docstring)."""

    def __init__(self, stack):
        self.stack = stack
        self._c = stack.slow_counters
        #: the NIC's teardown-flow capacity (None until its first StatusReport)
        self.teardown_capacity = None
        #: flows offered and not reported finished (accepted or still pending)
        self.teardown_active = 0
        self.status = None                 # the latest StatusReport
        self._pending = {}                 # flow_id -> parked TcpConnection
        self._order = collections.deque()  # flow ids in offer order (cumulative accepts)
        self._offered_since_report = 0
        self._flow_id = 0
        self._splice_id = 0
        self._splices = {}                 # splice_id -> _Splice (before the NIC took it)
        self._spliced = {}                 # splice_id -> callback (the NIC runs it)
        self._handed = collections.OrderedDict()   # key -> until when: accepted lately
        self.spliced_lately = collections.OrderedDict()    # the same for splices
        self.splice_ended = collections.OrderedDict()     # and for their ends

    def start(self):
        """Ask the NIC for its capacities (the answer arrives as a StatusReport)."""
        self.stack.nic_control(StatusRequest(1))

    # ------------------------------------------------------------------ teardown
    def teardown(self, conn, now):
        """Offer `conn`'s teardown to the NIC. True: parked (the NIC decides) or waiting
        (until what is left to send fits one flight); False: the caller closes it
        itself."""
        cap = self.teardown_capacity
        if cap is not None and self.teardown_active >= cap:
            self._c["teardown_nic_full"] += 1
            return False
        rec = conn.owner
        e = rec.arp
        if e is None or not e.live:
            e = rec.arp = self.stack.arp_entry(rec.nexthop)
        offer = conn.teardown_offer(now) if e is not None else None
        if offer is TEARDOWN_WAIT:
            # Closed for the app; the host sends on, and offers again after every
            # segment or timer (HostStack._touch -> retry) until the rest fits.
            if not rec.teardown_wait:
                rec.teardown_wait = True
                rec.handler = None
                conn.app_closed = True
                self._c["teardown_deferred"] += 1
            return True
        if offer is None:
            self._c["teardown_ineligible"] += 1
            return False
        st = self.stack
        fid = self._flow_id = (self._flow_id % 0xFFFFFFFF) + 1
        payload = offer.payload
        ident = st.next_ident()
        hdr = build_tcp_header_partial(e.mac, st.mac, st.ip, rec.remote_ip, ident,
                                       rec.local_port, rec.remote_port, offer.seq, offer.ack,
                                       ACK | PSH if payload else ACK, offer.window,
                                       b"", len(payload))
        # Park: out of the table (the NIC now answers for this 4-tuple) and the timers;
        # segments for it are dropped until the answer (``HostStack.park``).
        st.park(conn)
        rec.teardown_wait = False                  # offered: parked now
        conn.app_closed = True
        self._pending[fid] = conn
        self._order.append(fid)
        self.teardown_active += 1
        self._offered_since_report += 1
        self._c["teardown_offered"] += 1
        # the 0x090B frame: Ethernet, the Teardown header, then IP/TCP header + payload
        st.nic_send(b"".join((hdr[:12], _ET_TEARDOWN, teardown_header(offer, fid), hdr[14:],
                               payload)))
        return True

    def retry(self, conn):
        """A connection waiting to be offered (``rec.teardown_wait``) after a segment or a
        timer: offer it now, keep waiting, or close it here after all."""
        rec = conn.owner
        now = self.stack.clock()
        if conn.state != ESTABLISHED and conn.state != CLOSE_WAIT:
            rec.teardown_wait = False                  # reset, or the peer went away
            return
        if self.teardown(conn, now):
            return                                     # parked (teardown clears the
                                                       # flag), or still waiting
        rec.teardown_wait = False
        conn.close(now)

    def _teardown_accepted(self, msg):
        """Cumulative: every offer up to msg.flow_id still parked is the NIC's."""
        k = msg.flow_id
        order, pending = self._order, self._pending
        st = self.stack
        now = st.clock()
        n = 0
        while order and (k - order[0]) & 0xFFFFFFFF < 0x80000000:
            conn = pending.pop(order.popleft(), None)
            if conn is not None:                   # else refused earlier
                n += 1
                conn.handoff(now, False)           # the app closed it: no event
                _linger(self._handed, conn.owner.key, now)
                st.remove(conn)
        self._c["teardown_accepted"] += n

    def late(self, key, now):
        """A segment with no TCB for `key`: was the 4-tuple handed to the NIC's teardown
        within HANDED_LINGER? Then it is dropped (``teardown_late``), not reset."""
        until = self._handed.get(key)
        if until is None or until < now:
            return False
        self.stack.drops["teardown_late"] += 1
        return True

    def splice_late(self, key, frame, now):
        """A frame with no TCB for `key`: was the 4-tuple spliced within HANDED_LINGER?
        Then it goes to the NIC as the held frames did (``splice_late_forwarded``): it
        was passed up before the rule was in place, and the rule translates it now."""
        until = self.spliced_lately.get(key)
        if until is None or until < now:
            return False
        self._c["splice_late_forwarded"] += 1
        self.stack.send_raw(frame)
        return True

    def splice_ended_late(self, key, now):
        """A frame with no TCB for `key`: did its splice end within HANDED_LINGER? Then
        it is dropped (``drops["splice_late"]``), not reset."""
        until = self.splice_ended.get(key)
        if until is None or until < now:
            return False
        self.stack.drops["splice_late"] += 1
        return True

    def _teardown_refused(self, msg):
        conn = self._pending.pop(msg.flow_id, None)
        if conn is None:
            self._c["nic_msgs_bad"] += 1
            return
        now = self.stack.clock()
        self.teardown_active -= 1
        self._c["teardown_refused_" + _REFUSED.get(msg.reason, "other")] += 1
        self._resume(conn, now)

    def _resume(self, conn, now):
        st = self.stack
        # Nothing else can hold the key: segments for a parked 4-tuple are dropped, so no
        # second TCB is made for it meanwhile (it used to be, and this overwrote it).
        st.unpark(conn)
        conn.close(now)
        st.touch(conn)

    # ------------------------------------------------------------------ splice
    def nsplice(self, c, s, callback):
        """Start splicing c (to the client) with s (to the server); -> splice id. The
        outcome reaches ``callback`` (see the module docstring)."""
        st = self.stack
        self._splice_id = sid = (self._splice_id % 0xFFFFFFFF) + 1
        sp = _Splice(sid, c, s, callback)
        self._c["splice_requested"] += 1
        why = self._unspliceable(c, s)
        if why is not None:
            self._fail(sp, why[0], why[1], held=False)
            return sid
        for conn in (c, s):
            st.steer(conn, sp)
        self._splices[sid] = sp
        self._check(sp)
        return sid

    @staticmethod
    def _unspliceable(c, s):
        for conn in (c, s):
            if conn.state != ESTABLISHED or conn.fin_queued or conn.app_closed:
                return "state", "both connections must be ESTABLISHED and open"
            if conn.reasm:
                return "state", "out-of-order data held"
        if c.ts_ok != s.ts_ok:
            return "timestamps", "timestamps on one connection only"
        if c.rcv_mss > s.peer_mss or s.rcv_mss > c.peer_mss:
            return "mss", "an endpoint may send segments the other did not agree to"
        return None

    def splice_segment(self, sp, key, frame, seg):
        """A segment for a connection waiting to be spliced (``HostStack.steer``)."""
        st = self.stack
        conn = sp.c if key == sp.c.owner.key else sp.s
        rst = seg.flags & RST
        if sp.sent if rst else seg.payload or seg.flags & FIN:     # held: see the docstring
            sp.held.append(frame)
            self._c["splice_held_frames"] += 1
            if rst:
                # The Splice is out: the RST follows the frames held before it through
                # the NIC, which translates it for the other endpoint (whose own checks
                # judge it) and ends the splice; refused, it is replayed to the TCB after
                # them. The TCB cannot judge it now: its RCV.NXT is behind the held data.
                return
            t = seg.tsval
            if t is not None:
                f = sp.ts_floor.get(conn)
                if f is None or (t - f) & 0xFFFFFFFF >= 0x80000000:
                    sp.ts_floor[conn] = t
            seg.payload = b""
            seg.flags &= ~(FIN | PSH)
        st.deliver(conn, seg)
        self._check(sp)

    def _check(self, sp):
        """Splice once both send sides are drained; give up if a TCB died."""
        if sp.sent:
            return
        c, s = sp.c, sp.s
        if c.closed or s.closed:
            self._fail(sp, "reset", "a connection closed while draining")
            return
        st = self.stack
        now = st.clock()
        for a, b in ((c, s), (s, c)):
            if a.rcvbuf:                 # unread input is relayed as it is, as room allows
                n = b.send_space
                if n:
                    n = b.send(a.recv(n, now), now)
                    sp.relayed[a] += n
                    st.touch(a)
                    st.touch(b)
        for conn in (c, s):
            if conn.rcvbuf or conn.sndbuf or conn.snd_una != conn.snd_max:
                return
        sides = []
        for conn in (c, s):
            rec = conn.owner
            e = st.arp_entry(rec.nexthop)
            if e is None:
                self._fail(sp, "state", "no ARP entry for the next hop")
                return
            cfg = conn.config
            # The TS shift must map the oldest TSval still to be translated -- a held
            # frame's, older than TS.Recent -- to at least what the other peer saw from
            # us (its PAWS, RFC 7323 §5).
            recent = conn.ts_recent
            f = sp.ts_floor.get(conn)
            if f is not None and (recent - f) & 0xFFFFFFFF < 0x80000000:
                recent = f
            sides.append(SpliceSide(
                st.mac, st.ip, rec.local_port, e.mac, rec.remote_ip, rec.remote_port,
                conn.snd_nxt, conn.rcv_nxt, conn.snd_wnd, conn.ts_ok,
                (int(now * cfg.ts_hz) + conn.ts_offset) & TS_MASK, recent,
                conn.rcv_wscale, conn.snd_wscale))
        rule_a, rule_b = splice_rules(*sides)
        sp.sent = True
        st.nic_control(Splice(sp.sid, rule_a, rule_b))

    def _splice_answer(self, msg, installed):
        sp = self._splices.pop(msg.splice_id, None)
        if sp is None:
            self._c["nic_msgs_bad"] += 1
            return
        if not installed:
            self._fail(sp, _SPLICE_REFUSED.get(msg.reason, "refused"), "refused by the NIC")
            return
        st = self.stack
        now = st.clock()
        for conn in (sp.c, sp.s):
            st.unsteer(conn, sp, restore=False)
            conn.owner.handler = None             # the app hears of it by the callback
            conn.handoff(now)
            _linger(self.spliced_lately, conn.owner.key, now)
        self._c["splice_installed"] += 1
        self._spliced[sp.sid] = (sp.callback, sp.c.owner.key, sp.s.owner.key)
        for frame in sp.held:                     # through the new path, in order
            st.send_raw(frame)

    def _fail(self, sp, reason, detail, held=True):
        st = self.stack
        self._splices.pop(sp.sid, None)
        self._c["splice_failed_" + reason] += 1
        replay = []
        if held:
            for conn in (sp.c, sp.s):
                st.unsteer(conn, sp)
            replay, sp.held = sp.held, []
        st.replay(replay)
        sp.callback(SpliceFailed(sp.sid, reason, detail, sp.relayed[sp.c], sp.relayed[sp.s]))

    def _splice_closed(self, msg):
        ent = self._spliced.pop(msg.splice_id, None)
        if ent is None:
            self._c["nic_msgs_bad"] += 1
            return
        self._c["splice_closed"] += 1
        now = self.stack.clock()
        for key in ent[1:]:
            self.spliced_lately.pop(key, None)
            _linger(self.splice_ended, key, now)
        ent[0](msg)

    # ------------------------------------------------------------------ messages
    def on_frame(self, frame):
        """A 0x090D/0x090E frame from the NIC (WireError propagates: a ctl_* drop)."""
        msg = control.decode(frame)
        self._c["nic_msgs_in"] += 1
        t = type(msg)
        if t is TeardownAccepted:
            self._teardown_accepted(msg)
        elif t is TeardownDone:
            self.teardown_active = max(0, self.teardown_active - 1)
            self._c["teardown_done_" + _DONE.get(msg.reason, "other")] += 1
        elif t is TeardownRefused:
            self._teardown_refused(msg)
        elif t is SpliceInstalled:
            self._splice_answer(msg, True)
        elif t is SpliceRefused:
            self._splice_answer(msg, False)
        elif t is SpliceClosed:
            self._splice_closed(msg)
        elif t is StatusReport:
            self._c["nic_status_reports"] += 1
            self.status = msg
            self.teardown_capacity = msg.teardown_capacity
            self.teardown_active = msg.teardown_active + self._offered_since_report
            self._offered_since_report = 0
        else:
            self._c["nic_msgs_bad"] += 1           # a host->NIC type, or not ours
            raise WireError("ctl_unexpected_type")

    def lost(self):
        """The NIC is gone (dead or hung): parked connections are closed by the host after
        all, pending splices fail (``SpliceFailed``, reason nic_lost: the connections
        are the app's again). What the NIC held is gone with it and cannot be
        recovered: teardown flows it had accepted (their peers see no more
        retransmissions, FIN or TIME-WAIT from us: a reset or a timeout) and installed
        splices, whose callbacks get ``SpliceLost`` (a ``SpliceClosed`` with reason
        ``SPLICE_LOST``: the relayed connection is gone, no counts). -> counts:
        ``parked_resumed``, ``splices_failed``, ``splices_lost`` (and their ids,
        ``splice_ids_lost``), ``teardown_flows_lost`` (the NIC's flows as the host counts
        them: accepted and not reported finished; moderated reports make it an upper
        bound)."""
        now = self.stack.clock()
        pending, self._pending = self._pending, {}
        held = max(0, self.teardown_active - len(pending))
        self._order.clear()
        self.teardown_active = 0
        self._offered_since_report = 0
        for conn in pending.values():
            self._c["teardown_refused_nic_lost"] += 1
            self._resume(conn, now)
        splices = list(self._splices.values())
        for sp in splices:
            self._fail(sp, "nic_lost", "the NIC is gone")
        spliced, self._spliced = self._spliced, {}
        self._c["nic_lost_teardown_flows"] += held
        self._c["nic_lost_splices"] += len(spliced)
        for sid, (cb, ckey, skey) in spliced.items():
            cb(SpliceLost(sid, ckey, skey))
        return {"parked_resumed": len(pending), "splices_failed": len(splices),
                "splices_lost": len(spliced), "splice_ids_lost": sorted(spliced),
                "teardown_flows_lost": held}
