"""The host's side of TCP Chimney partial offload (``nic.chimney`` is the NIC's).

Theory of operation
-------------------
The host keeps control of every connection; the NIC only runs the data path of an
ESTABLISHED one for a while, with the host's own TCB code (``tcp.tcbstate``). Ownership
is exclusive, as for the other offloads (``host.offload``): from the offer until the
state is back, the host's TCB runs no TCP.

Offload (``offload(conn)``): eligible when ESTABLISHED, open (no FIN queued, not closed
by the app), nothing out of order held, not waiting for a teardown offer, and the next
hop's MAC known. The TCB is *parked* (out of the demux table and the timers: a segment
reaching the host for it is dropped, the peer retransmits to whoever owns the flow),
its output goes nowhere, and its state (``host_export``: without the bytes the app has
not read, which stay here) goes to the NIC in ChimneyOffload chunks. ChimneyRefused ->
the offered state is loaded back (``restore_into``), the TCB unparked: the host does
the work, as if nothing happened. ChimneyAccepted -> the NIC owns the flow.

While offloaded the host's TCB object stays the app's handle. ``send`` appends to its
send buffer, which keeps every byte the peer has not acknowledged (so the app's flow
control is the TCB's own ``snd_buf``); bytes not yet given to the NIC go out as
ChimneySend (``given`` counts those given, from the front of the buffer). ChimneyData
brings received bytes (into the TCB's receive buffer: the app reads them as ever) and
the count of the app's bytes the peer acknowledged (freed from the send buffer). The
app's reads are counted (``recv``) and reported in ChimneySend's ``read`` (an empty one
when a quarter of the receive buffer was read, or all): the NIC delivers at most the
receive buffer's size beyond it, so a slow reader closes the window as on the host.

The app's shutdown stays on the NIC: ChimneySend with CHIMNEY_SEND_FIN after the last
bytes, the NIC's TCB sends our FIN and goes on receiving.

Upload: on the app's close or abort (ChimneyUploadRequest APP_CLOSE; the call is
applied once the state is back), on ``upload(conn)`` (HOST_REQUEST), or
unsolicited from the NIC (the peer's FIN or RST, reordering beyond the NIC's limit, its
retransmission limit). The chunks are collected; the state is loaded into the same
TCB object (``restore_into``: the send buffer stays the host's, whose prefix the
state's must be), the TCB is unparked and does the rest itself: a FIN makes it
CLOSE-WAIT (the app sees the end of the stream), an RST makes it CLOSED with error
"reset" (the app sees the reset), and the pending close is applied.

RFC 5961: the NIC runs the host's own code, so its checks are the host's, not a copy.

NIC loss (``lost``): the connections the NIC held are gone with it (their state lived
there); each is reset (an RST from the host's last known state, which a peer that moved
on answers with a challenge ACK, and that meets no TCB here: an exact RST) and the app
sees ConnectionResetError. Offers not yet answered are loaded back as if refused.
Returned counts name them, none is left hanging.

Policy: ``HostStack.chimney_offload(conn)`` / ``chimney_upload(conn)``, the socket
option TCP_CHIMNEY_OFFLOAD (1: offload now, 0: upload), or ``auto`` (``serve --offload
chimney``): every ESTABLISHED connection an app takes is offered.

Counters (``HostStack.counters``): chimney_offered, chimney_accepted,
chimney_refused_<reason>, chimney_ineligible, chimney_upload_<reason>,
chimney_data_frames, chimney_send_frames, chimney_bad_frames, chimney_lost.
"""

from ..tcp.states import ESTABLISHED
from ..tcp.tcbstate import (
    host_export, import_state, offload_lost, offloaded_acked, offloaded_input, restore_into,
)
from ..wire import control
from ..wire.control import (
    CHIMNEY_MAX_BODY, ChimneyAccepted, ChimneyData, ChimneyOffload, ChimneyRefused,
    ChimneySend, ChimneyUpload, ChimneyUploadRequest,
)
from ..wire.errors import WireError

__all__ = ["ChimneyHost", "OFFERED", "OFFLOADED", "UPLOADING"]

OFFERED = 1        # offload chunks sent, no answer yet
OFFLOADED = 2      # the NIC runs the data path
UPLOADING = 3      # upload asked for (or arriving): no more ChimneySend

_MASK = 0xFFFFFFFF
_REFUSED = {control.CHIMNEY_REFUSED_TABLE_FULL: "table_full",
            control.CHIMNEY_REFUSED_BAD_STATE: "bad_state",
            control.CHIMNEY_REFUSED_DUPLICATE: "duplicate"}
_UPLOAD = {control.UPLOAD_HOST_REQUEST: "host_request", control.UPLOAD_APP_CLOSE: "app_close",
           control.UPLOAD_PEER_FIN: "peer_fin", control.UPLOAD_PEER_RST: "peer_rst",
           control.UPLOAD_REORDER: "reorder", control.UPLOAD_TIMEOUT: "timeout",
           control.UPLOAD_ERROR: "error"}


def _mute(*args):
    """An offloaded TCB's output: nothing leaves the host for its 4-tuple."""


class _Offloaded:
    __slots__ = ("conn", "flow_id", "key", "phase", "offered", "output", "given", "acked",
                 "delivered", "pre", "read", "read_sent", "chunks", "total", "close",
                 "fin")

    def __init__(self, conn, flow_id, offered, given):
        self.conn = conn
        self.flow_id = flow_id
        self.key = conn.owner.key
        self.phase = OFFERED
        self.offered = offered       # the state sent, until the NIC answers
        self.output = conn.output
        self.given = given           # bytes at the front of conn.sndbuf the NIC has
        self.acked = 0               # the NIC's last `acked` (mod 2**32)
        self.delivered = 0           # receive-stream offset expected next
        self.pre = len(conn.rcvbuf)  # unread bytes from before the offload (read first)
        self.read = 0                # received-stream bytes the app consumed
        self.read_sent = 0           # ... as last told to the NIC (ChimneySend.read)
        self.chunks = None           # upload chunks so far (bytearray)
        self.total = 0
        self.close = None            # "close" / "shutdown" / "abort", once the state is back
        self.fin = 0                 # 1: the app shut down, FIN to send; 2: FIN sent


class ChimneyHost:
    """Chimney offload of one HostStack (see the module docstring)."""

    def __init__(self, stack):
        self.stack = stack
        self._c = stack.slow_counters
        self._flow_id = 0
        self._by_conn = {}           # conn -> _Offloaded
        self._by_key = {}            # wire key -> _Offloaded
        #: offload every ESTABLISHED connection an app takes (``HostStack.attach``)
        self.auto = False

    def __len__(self):
        return len(self._by_conn)

    def owns(self, conn):
        """Is ``conn`` offloaded (offered, on the NIC, or coming back)?"""
        return conn in self._by_conn

    # ------------------------------------------------------------------ offload
    def offload(self, conn):
        """Offer ``conn`` to the NIC -> True (parked until the answer), or False: not
        eligible now (the host keeps it, nothing changed)."""
        st = self.stack
        rec = conn.owner
        if conn in self._by_conn or conn.state != ESTABLISHED or conn.fin_queued or \
                conn.app_closed or conn.reasm or conn.error is not None or \
                rec.teardown_wait or not st.in_table(conn):
            self._c["chimney_ineligible"] += 1
            return False
        e = rec.arp
        if e is None or not e.live:
            e = rec.arp = st.arp_entry(rec.nexthop)
        if e is None:
            self._c["chimney_ineligible"] += 1
            return False
        state = host_export(conn)
        blob = control.encode_value(tuple(state))
        self._flow_id = fid = (self._flow_id % 0xFFFFFFFF) + 1
        off = _Offloaded(conn, fid, state, len(conn.sndbuf))
        st.park(conn)
        conn.output = _mute
        self._by_conn[conn] = off
        self._by_key[off.key] = off
        self._c["chimney_offered"] += 1
        for total, offset, chunk in control.state_chunks(blob):
            st.nic_control(ChimneyOffload(fid, off.key, e.mac, st.mac, total, offset, chunk))
        return True

    def auto_offload(self, conn):
        """With ``auto``: an app took ``conn`` (``HostStack.attach``); offload it if it is
        ESTABLISHED (an active open is not yet: it stays the host's)."""
        if conn.state == ESTABLISHED and conn not in self._by_conn:
            self.offload(conn)

    def cycle(self):
        """Upload every offloaded connection and offer every other ESTABLISHED one:
        forced offload/upload cycles (``serve --chimney-cycle``, tests). -> (uploads
        asked, offers made)."""
        ups = [o.conn for o in self._by_conn.values() if o.phase == OFFLOADED]
        for conn in ups:
            self.upload(conn)
        offers = 0
        for conn in list(self.stack.connections.values()):
            if conn not in self._by_conn and conn.state == ESTABLISHED and \
                    self.offload(conn):
                offers += 1
        return len(ups), offers

    def upload(self, conn, reason=control.UPLOAD_HOST_REQUEST):
        """Ask the NIC for ``conn`` back -> True if asked (the state arrives later)."""
        off = self._by_conn.get(conn)
        if off is None or off.phase != OFFLOADED:
            return False
        off.phase = UPLOADING
        self.stack.nic_control(ChimneyUploadRequest(off.flow_id, off.key, reason))
        return True

    # ------------------------------------------------------------------ app calls
    def send(self, conn, data):
        """The app's send on an offloaded connection -> bytes taken."""
        n = conn.send(data, self.stack.clock())
        off = self._by_conn[conn]
        if off.phase == OFFLOADED:
            self._pump(off)
        return n

    def recv(self, conn, maxlen):
        """The app's recv on an offloaded connection; tells the NIC when the app has
        read a useful amount (a quarter of the receive buffer), or everything."""
        before = len(conn.rcvbuf)
        data = conn.recv(maxlen, self.stack.clock())
        off = self._by_conn[conn]
        k = before - len(conn.rcvbuf)
        take = min(k, off.pre)
        off.pre -= take
        off.read += k - take
        if off.phase == OFFLOADED and off.read != off.read_sent and (
                off.read - off.read_sent >= conn.config.rcv_buf >> 2 or
                off.read == off.delivered):
            self._credit(off)
        return data

    def _credit(self, off):
        off.read_sent = off.read
        self.stack.nic_control(ChimneySend(off.flow_id, off.key,
                                           (off.acked + off.given) & _MASK,
                                           off.read & _MASK))
        self._c["chimney_credit_frames"] += 1

    def app_close(self, conn, how):
        """close / shutdown / abort on an offloaded connection: applied once the state
        is back here (asked for now)."""
        off = self._by_conn[conn]
        if how == "shutdown" and off.phase != UPLOADING:
            if not off.fin:                  # the NIC's TCB sends our FIN
                off.fin = 1
                conn.shutdown(self.stack.clock())    # the app's view: no more writes
                if off.phase == OFFLOADED:
                    self._pump(off)
            return
        rank = ("shutdown", "close", "abort")
        if off.close is None or rank.index(how) > rank.index(off.close):
            off.close = how
        if off.phase == OFFLOADED:
            self.upload(conn, control.UPLOAD_APP_CLOSE)

    def _pump(self, off):
        conn = off.conn
        buf = conn.sndbuf
        st = self.stack
        while off.given < len(buf):
            chunk = bytes(buf[off.given:off.given + CHIMNEY_MAX_BODY])
            st.nic_control(ChimneySend(off.flow_id, off.key, (off.acked + off.given) & _MASK,
                                       off.read & _MASK, chunk))
            off.read_sent = off.read
            off.given += len(chunk)
            self._c["chimney_send_frames"] += 1
        if off.fin == 1:
            off.fin = 2
            st.nic_control(ChimneySend(off.flow_id, off.key, (off.acked + off.given) & _MASK,
                                       off.read & _MASK, b"", control.CHIMNEY_SEND_FIN))

    # ------------------------------------------------------------------ NIC frames
    def on_frame(self, frame):
        """A 0x090F frame from the NIC (WireError propagates: a ctl_* drop)."""
        msg = control.decode_chimney(frame)
        off = self._by_key.get(msg.key)
        t = type(msg)
        if off is None or off.flow_id != msg.flow_id or \
                t not in (ChimneyAccepted, ChimneyRefused, ChimneyData, ChimneyUpload):
            self._c["chimney_bad_frames"] += 1
            return
        if t is ChimneyData:
            self._data(off, msg)
        elif t is ChimneyUpload:
            self._upload_chunk(off, msg)
        elif off.phase != OFFERED:
            self._c["chimney_bad_frames"] += 1
        elif t is ChimneyAccepted:
            self._c["chimney_accepted"] += 1
            off.phase = OFFLOADED
            off.offered = None
            if off.close is not None:
                self.upload(off.conn, control.UPLOAD_APP_CLOSE)
            else:
                self._pump(off)
        else:
            self._c["chimney_refused_" + _REFUSED.get(msg.reason, "other")] += 1
            self._back(off, off.offered)

    def _data(self, off, msg):
        self._c["chimney_data_frames"] += 1
        conn = off.conn
        k = (msg.acked - off.acked) & _MASK
        if k > off.given:
            self._c["chimney_bad_frames"] += 1
            return
        if msg.body:
            if msg.offset != off.delivered & _MASK:
                self._c["chimney_bad_frames"] += 1
                return
            off.delivered += len(msg.body)
        off.acked = msg.acked
        off.given -= k
        offloaded_acked(conn, k)
        offloaded_input(conn, msg.body)
        if off.phase == OFFLOADED:
            self._pump(off)

    def _upload_chunk(self, off, msg):
        if msg.offset == 0:
            off.chunks = bytearray()
            off.total = msg.total
            off.phase = UPLOADING
        if off.chunks is None or msg.total != off.total or msg.offset != len(off.chunks):
            self._c["chimney_bad_frames"] += 1
            return
        off.chunks += msg.body
        if len(off.chunks) < off.total:
            return
        self._c["chimney_upload_" + _UPLOAD.get(msg.reason, "other")] += 1
        try:
            state = control.decode_value(off.chunks)
            import_state(state, _mute)                   # validate before touching conn
        except (WireError, ValueError):
            self._c["chimney_bad_frames"] += 1
            self._forget(off)
            self._lost_one(off)
            return
        self._back(off, state)

    def _back(self, off, state):
        """The state is the host's again: load it into the TCB, unpark, apply a close."""
        st = self.stack
        conn = off.conn
        now = st.clock()
        self._forget(off)
        conn.output = off.output
        st.unpark(conn)
        try:
            restore_into(conn, state, now)
        except ValueError:
            self._c["chimney_bad_frames"] += 1
            offload_lost(conn, now)
            st.touch(conn)
            return
        how = off.close
        if how is None and off.fin and not conn.fin_queued:
            how = "shutdown"                  # refused (or lost) before the NIC sent it
        if how is not None and not conn.closed:
            if how == "abort":
                st.abort(conn)
            elif how == "shutdown":
                st.shutdown(conn)
            else:
                st.close(conn)
        st.touch(conn)

    def _forget(self, off):
        self._by_conn.pop(off.conn, None)
        self._by_key.pop(off.key, None)

    def _lost_one(self, off):
        st = self.stack
        conn = off.conn
        conn.output = off.output
        st.unpark(conn)
        offload_lost(conn, st.clock())
        self._c["chimney_lost"] += 1
        st.touch(conn)

    def lost(self):
        """The NIC is gone: what it held is reset, offers not answered come back.
        -> {"chimney_lost": n, "chimney_keys_lost": [wire keys, hex], "chimney_resumed":
        n} (plain JSON values: serve reports it)."""
        lost, resumed = [], 0
        for off in list(self._by_conn.values()):
            if off.phase == OFFERED:
                resumed += 1
                self._c["chimney_refused_nic_lost"] += 1
                self._back(off, off.offered)
            else:
                self._forget(off)
                lost.append(off.key.hex())
                self._lost_one(off)
        return {"chimney_lost": len(lost), "chimney_keys_lost": lost,
                "chimney_resumed": resumed}
