"""The NIC's TCP Chimney partial offload engine. Sans-I/O: the dataplane hands in the
host's 0x090F messages, the peer's segments of offloaded flows and ``now``; the engine
returns ``[(port, frame)]``.

Theory of operation
-------------------
Chimney moves an ESTABLISHED connection's data path to the NIC while the host keeps
control of the connection. There is no second TCP here: each offloaded flow is a
``tcp.connection.TcpConnection`` restored from the host's own TCB state
(``tcp.tcbstate``), so the NIC sends, retransmits (RTO, fast retransmit, SACK
recovery), runs congestion control, acknowledges, checks PAWS and the RFC 5961 rules
(challenge ACKs for RSTs and SYNs not at RCV.NXT, ACK validation) with exactly the
host's code and settings. Ownership is exclusive, as for the other offloads: the
host's TCB is frozen from the ChimneyOffload until a ChimneyUpload brings the state
back, and the dataplane drops the host's own segments on an offloaded 4-tuple.

Offload (``offload_chunk``): ChimneyOffload chunks are collected per 4-tuple until
``total`` bytes are in, then decoded and imported. Refused (ChimneyRefused, the host
keeps the connection): DUPLICATE (4-tuple already offloaded), TABLE_FULL (``capacity``
flows), BAD_STATE (does not decode, does not import, not ESTABLISHED, a FIN queued, the
app closed, out-of-order data held, or above ``max_state`` bytes). Accepted: the TCB is
cut to MSS segments here (``tso_max`` 0: the NIC does the segmentation), a
ChimneyAccepted goes to the host, and anything the TCB wants to send goes out.

Stream offsets: the host's send stream is numbered from the first unacknowledged byte
at the offload (SND.UNA then: ``snd_base``); ``acked`` in ChimneyData is
SND.UNA - snd_base (mod 2**32), so the host knows how much the NIC still holds.
ChimneySend bytes are taken only at the next offset (``sbase + len(sndbuf)``); a gap or
a repeat is dropped and counted. The receive stream is numbered from the first byte
the host had not yet read at the offload (the state's ``rcvbuf``).

Receive: in-order bytes accumulate in the TCB's buffer and go to the host in large
chunks (ChimneyData, up to CHIMNEY_MAX_BODY each): at once when ``deliver_chunk``
bytes are waiting, else after ``deliver_delay`` (a flush deadline, like interrupt
moderation). Flow control: at most the TCB's ``rcv_buf`` bytes are delivered beyond
what the app has read (``read``, from ChimneySend); the rest stays in the TCB's
buffer, so its advertised window closes for a slow reader exactly as on the host. A send completion (``acked`` moved, nothing to deliver) rides on the same
deadline, or goes at once when everything sent is acknowledged.

The app's shutdown (ChimneySend with CHIMNEY_SEND_FIN) queues our FIN on the NIC's
TCB: FIN-WAIT-1/2 stay here, the peer may go on sending.

Upload (ChimneyUpload chunks, the flow forgotten first): when the host asks
(ChimneyUploadRequest: UPLOAD_HOST_REQUEST, UPLOAD_APP_CLOSE); when the peer's FIN is
in (UPLOAD_PEER_FIN: the host runs the close, TIME-WAIT included); when the TCB ended (an acceptable RST:
UPLOAD_PEER_RST, state CLOSED with error "reset"; the retransmission limit:
UPLOAD_TIMEOUT, the TCB sent its RST); when the reassembly queue holds more than
``max_ooo_blocks`` blocks or ``max_ooo_bytes`` bytes (UPLOAD_REORDER). Pending
in-order data is delivered first, so the uploaded state's ``rcvbuf`` is empty.

Timers: each flow's next deadline (its TCB's earliest timer, or its flush deadline) is
kept in a heap with lazy deletion; ``next_deadline`` / ``on_timer`` are the dataplane's.
The TCB's deadlines and timestamps are absolute times on the clock it came with: the
NIC's ``now`` must be the host's clock (CLOCK_MONOTONIC in every placement, the
virtual clock in the simulator), or TSvals and timers would jump at each move.

Robustness: the state is the host's, validated on import (shapes, ranges, the 4-tuple);
an exception while a TCB runs anyway (a state no TCB can run) is caught per event:
counted ``tcb_errors``, the flow given back with no state (UPLOAD_ERROR), which the host
resets and reports -- never the dataplane's crash, never a flow silently dropped.

Counters (``counters``): offloads, refused_full, refused_bad, refused_dup, chunks_in,
segments_in, segments_out, bytes_to_host, bytes_from_host, data_frames, send_gaps,
uploads, upload_<reason name>, unknown_flow, tcb_errors.
"""

import heapq

from ..tcp.connection import TcpConnection
from ..tcp.states import ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2
from ..wire import control
from ..wire.control import (
    CHIMNEY_DATA_FIN, CHIMNEY_MAX_BODY, CHIMNEY_SEND_FIN, ChimneyAccepted, ChimneyData, ChimneyRefused,
    ChimneyUpload,
)
from ..wire.tcp import build_tcp_frame

__all__ = ["ChimneyEngine", "ChimneyFlow", "UPLOAD_NAMES"]

HOST = 1
WIRE = 0
_MASK = 0xFFFFFFFF
UPLOAD_NAMES = {control.UPLOAD_HOST_REQUEST: "host_request",
                control.UPLOAD_APP_CLOSE: "app_close", control.UPLOAD_PEER_FIN: "peer_fin",
                control.UPLOAD_PEER_RST: "peer_rst", control.UPLOAD_REORDER: "reorder",
                control.UPLOAD_TIMEOUT: "timeout", control.UPLOAD_ERROR: "error"}
_ON_NIC = frozenset((ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2))   # states the NIC keeps
_COUNTERS = ("offloads", "refused_full", "refused_bad", "refused_dup", "chunks_in",
             "segments_in", "segments_out", "bytes_to_host", "bytes_from_host",
             "data_frames", "send_gaps", "uploads", "unknown_flow", "tcb_errors") + \
    tuple("upload_" + n for n in UPLOAD_NAMES.values())


class ChimneyFlow:
    """One offloaded connection: its TCB and the stream bookkeeping toward the host."""

    __slots__ = ("flow_id", "key", "conn", "peer_mac", "local_mac", "snd_base",
                 "acked_reported", "delivered", "read", "flush_at", "armed", "engine")

    def __init__(self, engine, flow_id, key, peer_mac, local_mac):
        self.engine = engine
        self.flow_id = flow_id
        self.key = key
        self.peer_mac = peer_mac
        self.local_mac = local_mac
        self.conn = None
        self.snd_base = 0
        self.acked_reported = 0
        self.delivered = 0
        self.read = 0                 # received bytes the app consumed (ChimneySend.read)
        self.flush_at = None
        self.armed = None

    def output(self, conn, flags, seq, ack, window, options, payload):
        """The TCB's output: one segment, built with full checksums, to the wire."""
        e = self.engine
        e.ident = (e.ident + 1) & 0xFFFF
        e.out.append((WIRE, build_tcp_frame(
            self.peer_mac, self.local_mac, conn.local_ip, conn.remote_ip, e.ident,
            conn.local_port, conn.remote_port, seq, ack, flags, window, options,
            bytes(payload), e.ttl)))
        e.counters["segments_out"] += 1

    @property
    def acked(self):
        return (self.conn.sbase - self.snd_base) & _MASK


class ChimneyEngine:
    """The chimney table (``capacity`` flows) and its data path (module docstring)."""

    def __init__(self, mac, capacity=1024, *, ttl=64, deliver_chunk=65536,
                 deliver_delay=0.0005, max_ooo_blocks=8, max_ooo_bytes=1 << 20,
                 max_state=8 << 20):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError("chimney capacity must be an int >= 0")
        if not deliver_delay > 0:
            raise ValueError("deliver_delay must be > 0")
        self.mac = bytes(mac)
        self.capacity = capacity
        self.ttl = ttl
        self.deliver_chunk = deliver_chunk
        self.deliver_delay = deliver_delay
        self.max_ooo_blocks = max_ooo_blocks
        self.max_ooo_bytes = max_ooo_bytes
        self.max_state = max_state
        self.flows = {}               # wire-side key -> ChimneyFlow
        self._pending = {}            # key -> [flow_id, total, bytearray, peer_mac, local_mac]
        self._heap = []
        self._tick = 0
        self.ident = 0
        self.out = []                 # frames the current call emits
        self.host_mac = bytes(6)
        self.counters = dict.fromkeys(_COUNTERS, 0)

    def __len__(self):
        return len(self.flows)

    # -- host messages -----------------------------------------------------------------

    def _to_host(self, msg):
        self.out.append((HOST, msg.frame(self.host_mac, self.mac)))

    def _take(self):
        out, self.out = self.out, []
        return out

    def _refuse(self, fid, key, reason, why):
        self.counters["refused_" + why] += 1
        self._to_host(ChimneyRefused(fid, key, reason))

    def offload_chunk(self, msg, host_mac, now):
        """A ChimneyOffload chunk; the last one imports the TCB (or refuses it)."""
        self.host_mac = host_mac
        self.counters["chunks_in"] += 1
        key = msg.key
        if key in self.flows:
            self._refuse(msg.flow_id, key, control.CHIMNEY_REFUSED_DUPLICATE, "dup")
            return self._take()
        p = self._pending.get(key)
        if msg.offset == 0:
            if msg.total > self.max_state or \
                    (key not in self._pending and len(self._pending) >= self.capacity):
                self._refuse(msg.flow_id, key, control.CHIMNEY_REFUSED_BAD_STATE, "bad")
                return self._take()
            p = self._pending[key] = [msg.flow_id, msg.total, bytearray(), msg.peer_mac,
                                      msg.local_mac]
        if p is None or p[0] != msg.flow_id or p[1] != msg.total or len(p[2]) != msg.offset:
            self._pending.pop(key, None)
            self._refuse(msg.flow_id, key, control.CHIMNEY_REFUSED_BAD_STATE, "bad")
            return self._take()
        p[2] += msg.body
        if len(p[2]) < p[1]:
            return self._take()
        del self._pending[key]
        self._install(key, p, now)
        return self._take()

    def _install(self, key, p, now):
        fid, _total, blob, peer_mac, local_mac = p
        if len(self.flows) >= self.capacity:
            self._refuse(fid, key, control.CHIMNEY_REFUSED_TABLE_FULL, "full")
            return
        flow = ChimneyFlow(self, fid, key, peer_mac, local_mac)
        try:
            conn = TcpConnection.from_state(control.decode_value(blob), flow.output, now)
            ok = conn.state == ESTABLISHED and not conn.fin_queued and \
                not conn.app_closed and not conn.reasm and conn.error is None and \
                conn.t_tw is None and conn.mss > 0 and \
                control.wire_key(_pseudo_frame(conn)) == key
        except Exception:                 # WireError, ValueError; or a state no TCB can be
            ok = False
        if not ok:
            self._refuse(fid, key, control.CHIMNEY_REFUSED_BAD_STATE, "bad")
            return
        conn.tso_max = 0                  # the NIC cuts MSS segments itself
        conn.max_seg = conn.mss
        flow.conn = conn
        flow.snd_base = conn.sbase
        self.flows[key] = flow
        self.counters["offloads"] += 1
        self._to_host(ChimneyAccepted(fid, key))
        self._guarded(flow, self._start, flow, now)

    def _start(self, flow, now):
        if flow.conn.sndbuf:
            flow.conn.send(b"", now)          # resume sending what the host had queued
        self._after(flow, now)

    def _guarded(self, flow, fn, *args):
        """Run one event of ``flow``'s TCB. An exception there (a state the host got
        wrong) is never the dataplane's crash: counted ``tcb_errors``, the flow is given
        back with no state (UPLOAD_ERROR), which the host resets and reports."""
        try:
            fn(*args)
        except Exception:
            self.counters["tcb_errors"] += 1
            if self.flows.get(flow.key) is flow:
                del self.flows[flow.key]
            flow.armed = None
            blob = control.encode_value(())
            self._to_host(ChimneyUpload(flow.flow_id, flow.key, control.UPLOAD_ERROR,
                                        len(blob), 0, blob))
            self.counters["uploads"] += 1
            self.counters["upload_error"] += 1

    def send(self, msg, now):
        """ChimneySend: queue the host's bytes on the flow's TCB (in order only)."""
        flow = self.flows.get(msg.key)
        if flow is None:
            self.counters["unknown_flow"] += 1
            return []
        self._guarded(flow, self._send, flow, msg, now)
        return self._take()

    def _send(self, flow, msg, now):
        conn = flow.conn
        credit = (msg.read - flow.read) & _MASK
        if 0 < credit <= flow.delivered - flow.read:      # the app read more: deliver on
            flow.read += credit
            if conn.rcvbuf:
                self._deliver(flow, now)
        expect = (conn.sbase + len(conn.sndbuf) - flow.snd_base) & _MASK
        if not msg.body and not msg.flags:
            self._after(flow, now)
            return
        if msg.offset != expect or conn.fin_queued:
            self.counters["send_gaps"] += 1
            return
        n = conn.send(msg.body, now) if msg.body else 0
        self.counters["bytes_from_host"] += n
        if n < len(msg.body):
            self.counters["send_gaps"] += 1
        elif msg.flags & CHIMNEY_SEND_FIN:
            conn.shutdown(now)                # our FIN after the data (RFC 9293 §3.10.4)
        self._after(flow, now)

    def upload_request(self, msg, now):
        flow = self.flows.get(msg.key)
        if flow is None:
            self.counters["unknown_flow"] += 1
            return []
        self._guarded(flow, self._upload, flow, msg.reason, now)
        return self._take()

    # -- wire side -----------------------------------------------------------------------

    def lookup(self, key):
        return self.flows.get(key)

    def on_segment(self, flow, seg, now):
        """A peer segment of an offloaded flow (checksum already verified)."""
        self.counters["segments_in"] += 1
        self._guarded(flow, self._segment, flow, seg, now)
        return self._take()

    def _segment(self, flow, seg, now):
        flow.conn.on_segment(seg, now)
        self._after(flow, now)

    # -- timers --------------------------------------------------------------------------

    def next_deadline(self):
        h = self._heap
        while h:
            d, _, key = h[0]
            f = self.flows.get(key)
            if f is not None and f.armed == d:
                return d
            heapq.heappop(h)
        return None

    def on_timer(self, now):
        h = self._heap
        due = []
        while h and h[0][0] <= now:           # each due flow once per call
            d, _, key = heapq.heappop(h)
            f = self.flows.get(key)
            if f is not None and f.armed == d:
                f.armed = None
                due.append(f)
        for f in due:
            if self.flows.get(f.key) is f:
                self._guarded(f, self._timer, f, now)
        return self._take()

    def _timer(self, f, now):
        conn = f.conn
        cd = conn.next_deadline()
        if cd is not None and cd <= now:
            conn.on_timer(now)
        if f.flush_at is not None and f.flush_at <= now:
            f.flush_at = None
            self._deliver(f, now)
        self._after(f, now)

    # -- after every event on a flow -------------------------------------------------------

    def _after(self, flow, now):
        conn = flow.conn
        reason = None
        if conn.closed:
            reason = control.UPLOAD_TIMEOUT if conn.error == "timeout" else \
                control.UPLOAD_PEER_RST
        elif conn.fin_rcvd or conn.state not in _ON_NIC:
            reason = control.UPLOAD_PEER_FIN
        elif conn.reasm and (conn.reasm.nblocks > self.max_ooo_blocks or
                             len(conn.reasm) > self.max_ooo_bytes):
            reason = control.UPLOAD_REORDER
        if reason is not None:
            self._upload(flow, reason, now)
            return
        room = conn.config.rcv_buf - (flow.delivered - flow.read)
        if conn.rcvbuf and len(conn.rcvbuf) >= min(self.deliver_chunk, room) and room > 0:
            self._deliver(flow, now)
        elif flow.acked != flow.acked_reported and not conn.sndbuf:
            self._deliver(flow, now)          # all sent is acknowledged: tell the host now
        if ((conn.rcvbuf and room > 0) or flow.acked != flow.acked_reported) and \
                flow.flush_at is None:
            flow.flush_at = now + self.deliver_delay
        d = conn.next_deadline()
        f = flow.flush_at
        if f is not None and (d is None or f < d):
            d = f
        if d is not None and d != flow.armed:
            self._tick += 1
            heapq.heappush(self._heap, (d, self._tick, flow.key))
        flow.armed = d

    def _deliver(self, flow, now, fin=False):
        """In-order bytes (and the acked count) to the host, in chunks."""
        conn = flow.conn
        flow.flush_at = None
        room = conn.config.rcv_buf - (flow.delivered - flow.read)
        data = conn.recv(room, now) if conn.rcvbuf and room > 0 else b""
        acked = flow.acked
        if not data and acked == flow.acked_reported and not fin:
            return
        flow.acked_reported = acked
        c = self.counters
        off = 0
        while True:
            chunk = data[off:off + CHIMNEY_MAX_BODY]
            last = off + len(chunk) >= len(data)
            self._to_host(ChimneyData(flow.flow_id, flow.key,
                                      CHIMNEY_DATA_FIN if fin and last else 0,
                                      flow.delivered & _MASK, acked, chunk))
            flow.delivered += len(chunk)
            c["data_frames"] += 1
            c["bytes_to_host"] += len(chunk)
            off += len(chunk)
            if last:
                break

    def _upload(self, flow, reason, now):
        """Deliver what is pending, forget the flow, send its state to the host."""
        self._deliver(flow, now)
        del self.flows[flow.key]
        flow.armed = None
        conn = flow.conn
        blob = control.encode_value(tuple(conn.export_state()))
        for total, off, chunk in control.state_chunks(blob):
            self._to_host(ChimneyUpload(flow.flow_id, flow.key, reason, total, off, chunk))
        c = self.counters
        c["uploads"] += 1
        c["upload_" + UPLOAD_NAMES[reason]] += 1

    def upload_all(self, reason, now):
        """Give every flow back (the NIC is being shut down)."""
        for flow in list(self.flows.values()):
            self._guarded(flow, self._upload, flow, reason, now)
        return self._take()


def _pseudo_frame(conn):
    """The 38 bytes ``wire_key`` reads of a frame the host would send on ``conn``."""
    return bytes(26) + conn.local_ip + conn.remote_ip + conn.local_port.to_bytes(2, "big") \
        + conn.remote_port.to_bytes(2, "big")
