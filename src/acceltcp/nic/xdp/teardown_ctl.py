"""The teardown path's control side (teardown.h): handovers, the timer wheel, the frames
XDP cannot send, and the reports.

Theory of operation
-------------------
nic/teardown.py (TeardownEngine) is the specification; the work is split as teardown.h's
docstring says.  Here:

* A 0x090B handover that the engine answers with one frame (a payload of at most one
  MSS, reports moderated) is atcp_host's own (teardown_host); it tells this side by a
  TD_EV_NEW event, which mirrors the flow here (``_index``, ``_totals``, the latest
  accepted flow for the moderated report, the host's MAC) and schedules its RTO.
* ``control`` takes every other handover (atcp_host passes it up) exactly as
  ``TeardownEngine.accept`` (its own well-formedness check, then DUPLICATE, TABLE_FULL;
  slot allocation from the same LIFO free list -- in the maps, shared with
  teardown_host -- flow ids, MSS cutting, FIN on the last segment, RTO armed) and writes
  the flow into the maps: the entry (atcp_td_table[slot]), the payload (atcp_td_data,
  2 KiB chunks; a payload the map has no room for is refused TABLE_FULL), then the key
  (atcp_td_index) -- from then on atcp_wire processes the peer's segments.  As
  NicDataplane does, the flow leaves the handed-over table (atcp_handed).
* ``after_frame`` (per frame under test; a live control process calls ``on_timer``
  each tick, which does the same first) reads atcp_td_events (a ring buffer, through
  mmap: no syscall per event) in order: TIMER ->
  ``TimerWheel.schedule`` with the engine's own float expression from the `now` the
  program recorded; SEND -> the frame built from the entry (TSval, ts_last, IPv4 ident
  from atcp_state taken now, in the engine's order); DONE -> the slot, its data and its
  timer are freed (and the TeardownDone report sent unless moderated); FRAME -> the
  copied frame (a SYN that reopened a TIME-WAIT, which the listener sends up) to the
  host.
* ``on_timer`` is the engine's: RTO retransmissions with backoff, the RST after
  max_retries, FIN-WAIT-2 and 2MSL ends -- and the dataplane's report moderation
  (``report_interval``: one cumulative TeardownAccepted and one StatusReport at most
  per interval).
* Lost events: a ring the control process did not drain in time (it shares its core
  with the stack) refuses events (xdp_td_events_lost).  A lost NEW is undone by the
  program; a lost SEND or FRAME is a frame the peer's retransmission makes up for; a
  lost DONE or TIMER leaves the mirror wrong.  So when that counter has grown (looked
  at every LOSS_CHECK), or a NEW names a key the mirror still holds (its flow's DONE
  was lost: the program takes only keys its index does not hold), ``_resync``
  rebuilds the mirror and the wheel from the maps; a flow the maps no longer hold is
  counted done (``events_recovered``).
* ``counters`` has the engine's names (atcp_td_counters summed over CPUs, plus what is
  counted here); ``entry(slot)`` / ``entries()`` the engine's ``entry`` dicts.

The IPv4 ident and an entry's ts_last are read-modify-written here while the program
may update them on another CPU: exact under test (one frame at a time); live, a frame
built here and one built by the program at the same instant can share an ident, and a
TSval may repeat (never decrease below what either wrote last).
"""

import re
import struct
from pathlib import Path

from ...tcp.seq import seq_lt
from ...wire import control
from ...wire.control import (
    STATE_ESTABLISHED, TEARDOWN_END_CLOSED, TEARDOWN_END_RESET, TEARDOWN_END_RETRIES,
    TEARDOWN_REFUSED_BAD_STATE, TEARDOWN_REFUSED_DUPLICATE, TEARDOWN_REFUSED_TABLE_FULL,
    TeardownAccepted, TeardownDone, TeardownRefused,
)
from ...wire.tcp import ACK, FIN, PSH, RST, build_tcp_frame
from ...tcp.states import CLOSING, FIN_WAIT_1, FIN_WAIT_2, LAST_ACK, TIME_WAIT
from ..dataplane import HOST, WIRE
from ..teardown import MAX_RTO_US, TeardownEngine, expire
from ..timer_wheel import TimerWheel
from . import bpf
from .parts import Part

__all__ = ["TeardownControl", "ENGINE_COUNTERS", "DEFAULT_CAPACITY", "CHUNK", "DATA_CHUNKS",
           "EVENTS"]

_HERE = Path(__file__).resolve().parent
_LAYOUT = (_HERE / "atcp_teardown.h").read_text()
#: the engine counters in atcp_td_counters' order (atcp_teardown.h)
ENGINE_COUNTERS = tuple(re.findall(
    r"E\((\w+)\)", _LAYOUT.split("#define ATCP_TD_ENGINE_COUNTERS(E)")[1].split("#define")[0]))
_BASE = tuple(n for n in ENGINE_COUNTERS if not n.startswith("drop_"))

DEFAULT_CAPACITY = 65536        # flows, as NicDataplane's teardown_capacity
CHUNK = 2048                    # atcp_td_data value size (teardown.h TD_CHUNK)
DATA_CHUNKS = 131072            # atcp_td_data max_entries: 256 MiB of payload in flight
EVENTS = 32768                  # atcp_td_events: 64-byte records (2 MiB, ~0.3 s of kv -k0)
LOSS_CHECK = 0.05               # s between looks at xdp_td_events_lost (one syscall)

# struct atcp_td_entry (atcp_teardown.h): the engine's 64-byte entry + the side store
_ENTRY = struct.Struct("=12s6sBBIIIIBBBBHHHHIIII" "IIIII" "B3xI4xQ")
assert _ENTRY.size == 104
(_KEY, _MAC, _STATE, _FLAGS, _UNA, _MAX, _RNXT, _RTO, _RETRIES, _MAXRET, _DUPS, _WS,
 _MSS, _WIN, _PWIN, _CHAL, _TSR, _TSOFF, _TSLAST, _TW, _FID, _TOTAL, _ACKED, _RTX, _RCVD,
 _TOP, _TPARAM, _TNOW) = range(28)
_NAMES = ("key", "peer_mac", "state", "flags", "snd_una", "snd_max", "rcv_nxt", "rto_us",
          "retries", "max_retries", "dupacks", "wscale", "mss", "window", "peer_window",
          "challenge", "ts_recent", "ts_offset", "ts_last", "time_wait_ms")
_STATE_NAMES = {FIN_WAIT_1: "FIN-WAIT-1", FIN_WAIT_2: "FIN-WAIT-2", CLOSING: "CLOSING",
                LAST_ACK: "LAST-ACK", TIME_WAIT: "TIME-WAIT"}

# struct atcp_td_event, atcp_td_clock, atcp_td_frame
_EVENT = struct.Struct("=BBBBIIIIIQ12sI6s2x")
assert _EVENT.size == 56
_CLOCK = struct.Struct("=QIIIIII")
_FRAME_LEN = struct.Struct("=I")
_EV_SEND, _EV_TIMER, _EV_DONE, _EV_FRAME, _EV_NEW = 1, 2, 3, 4, 5
_X_ACCEPT, _X_UP_TX = 0x01, 0x02
_T_RTO, _T_FW2, _T_TW = 1, 2, 3

F_TS = 0x01
F_SACK = 0x02
F_RECOVER = 0x04
MASK = 0xFFFFFFFF
_TS_OPT = struct.Struct("!III")
_TS_HEAD = 0x0101080A
_PORTS = struct.Struct("!HH")
_U32 = struct.Struct("=I")
_PAIR = struct.Struct("=II")           # atcp_td_seq, atcp_td_alloc
_DOUBLE = struct.Struct("=d")
_BITS = struct.Struct("=Q")
_ZERO = _U32.pack(0)
_ZERO_ENTRY = bytes(_ENTRY.size)
_DONE_COUNTER = {TEARDOWN_END_CLOSED: "done_closed", TEARDOWN_END_RESET: "done_reset",
                 TEARDOWN_END_RETRIES: "done_retries"}


class TeardownControl(Part):
    """The teardown path (module docstring).  capacity: flows (None: DEFAULT_CAPACITY;
    0: no table, every handover refused TABLE_FULL).  report_interval: the dataplane's
    report moderation (0: per-flow reports).  engine_kwargs: TeardownEngine's tick,
    slots, ts_hz, fin_timeout (ttl is the dataplane's).  accept_in_xdp: atcp_host takes
    the handovers it can (False: every one comes here); up_tx: those it does not take
    leave atcp_host by XDP_TX (a live TAP: back to this process), not XDP_PASS.  events:
    the ring's size in records (a power of two, >= 64)."""

    def __init__(self, dp, capacity=None, report_interval=0.001, *, tick=0.001, slots=1024,
                 ts_hz=1000, fin_timeout=60.0, ttl=None, accept_in_xdp=True, up_tx=False,
                 events=EVENTS):
        super().__init__(dp)
        if capacity is None:
            capacity = DEFAULT_CAPACITY
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError("teardown capacity must be an int >= 0")
        if not fin_timeout > 0:
            raise ValueError("fin_timeout must be > 0")
        if not (isinstance(events, int) and events >= 64 and events & (events - 1) == 0):
            raise ValueError("events must be a power of two >= 64")
        self.events = events
        self.capacity = capacity
        self.report_interval = report_interval
        self.moderate = report_interval > 0
        self.tick = tick
        self.slots = slots
        self.ts_hz = ts_hz
        self.fin_timeout = float(fin_timeout)
        self.xdp_flags = (_X_ACCEPT if accept_in_xdp else 0) | (_X_UP_TX if up_tx else 0)
        self._maps = None
        self._clock = None
        self._init_state()

    def _init_state(self):
        cap = max(self.capacity, 1)
        self.wheel = TimerWheel(cap, self.slots, self.tick, 0.0)
        self._min_rto_us = max(1, int(self.tick * 1e6))
        self._index = {}                 # key -> slot (mirror of atcp_td_index)
        self._totals = {}                # slot -> payload bytes stored
        self._done = 0                   # done_total (for the moderation)
        self._py = dict.fromkeys(_BASE, 0)   # what is counted here (accept, timers)
        self.host_mac = None             # of the latest accept (per-flow reports)
        self.last_accepted = None
        self._report_at = None
        self._reported = (None, 0)
        self._lost_seen = 0              # xdp_td_events_lost at the last look
        self._loss_check_at = 0.0
        self._stale = False              # a NEW named a key the mirror still held

    # -- the Part contract -----------------------------------------------------------

    def premade_maps(self):
        cap = max(self.capacity, 1)
        return {"atcp_td_table": (bpf.BPF_MAP_TYPE_ARRAY, 4, _ENTRY.size, cap,
                                  bpf.BPF_F_MMAPABLE),
                "atcp_td_index": (bpf.BPF_MAP_TYPE_HASH, 12, 4, cap),
                "atcp_td_free": (bpf.BPF_MAP_TYPE_STACK, 0, 4, cap),
                "atcp_td_events": (bpf.BPF_MAP_TYPE_RINGBUF, 0, 0, self.events * 64)}

    def attach(self, maps):
        self._maps = maps
        self._table = maps["atcp_td_table"]
        self._idx = maps["atcp_td_index"]
        self._ev = maps["atcp_td_events"].ring()
        self._data = maps["atcp_td_data"]
        self._frames = maps["atcp_td_frames"]
        self._cnt = maps["atcp_td_counters"]
        self._clk = maps["atcp_td_clock"]
        self._st = maps["atcp_state"]
        self._handed = maps["atcp_handed"]
        self._seq = maps["atcp_td_seq"]
        self._freed = maps["atcp_td_free"]
        self._alloc = maps["atcp_td_alloc"]
        prog = self.dp._loaded.progs["atcp_td_wire"]
        maps["atcp_td_jump"].update(_ZERO, _U32.pack(prog.fd))
        self.before_frame(0.0)

    def before_frame(self, now):
        c = (_BITS.unpack(_DOUBLE.pack(now))[0], int(now * self.ts_hz) & MASK)
        if c != self._clock:
            self._clk.update(_ZERO, _CLOCK.pack(c[0], c[1], 1 if self.moderate else 0,
                                                self._min_rto_us, self.capacity,
                                                self.xdp_flags, int(now) & MASK))
            self._clock = c

    def after_frame(self, now):
        if not self.capacity:
            return []
        out = self._drain(now)
        self._check_loss(now, out)
        self._changed(now)
        return out

    def next_deadline(self):
        if not self.capacity:
            return None
        d = self.wheel.next_deadline()
        if self._maps is not None and self._ev.pending():
            return self.wheel.time          # events waiting (a live port): due now
        t = self._report_at
        if t is not None and (d is None or t < d):
            d = t
        return d

    def on_timer(self, now):
        if not self.capacity:
            return []
        self.before_frame(now)              # a live port: the program's clock, each tick
        out = self._drain(now)
        self._check_loss(now, out)
        for fid in self.wheel.advance(now):
            e = self._load(fid)
            if e is not None:
                expire(self, fid, e, self._py, now, out)
        self._changed(now)
        t = self._report_at
        if t is not None and now >= t:
            self._report(out)
        return out

    def reset(self):
        if self._maps is not None:
            for fid in self._index.values():              # only slots in use are not 0
                self._table.update(_U32.pack(fid), _ZERO_ENTRY)
            self._ev.records()
            for m in (self._idx, self._data, self._cnt, self._seq, self._freed, self._alloc):
                m.clear()
        self._init_state()

    def status(self):
        return {"teardown_active": len(self._index), "teardown_capacity": self.capacity,
                "teardowns_done": self._done}

    # -- the handover (TeardownEngine.accept) -----------------------------------------

    def control(self, msg, seg_frame, host_mac, now):
        if seg_frame is None:                             # only 0x090B carries a segment
            return None
        dp = self.dp
        if not self.capacity:                             # NicDataplane without a table
            dp._count("refused_teardown")
            return [(HOST, TeardownRefused(msg.flow_id, control.wire_key(seg_frame),
                                           TEARDOWN_REFUSED_TABLE_FULL)
                     .frame(host_mac, dp.mac))]
        out = self._drain(now)                            # the free list as it is now
        out += self._accept(msg, seg_frame, host_mac, now)
        if len(seg_frame) >= 38:
            key = control.wire_key(seg_frame)
            if key in self._index:                        # the table owns it now
                self.dp.handed_discard(key)
        return out

    def _accept(self, msg, f, host_mac, now):
        host_mac = bytes(host_mac)
        self.host_mac = host_mac
        c = self._py
        key = bytes(f[30:34]) + bytes(f[26:30]) + bytes(f[36:38]) + bytes(f[34:36]) \
            if len(f) >= 38 else bytes(12)
        flow_id = getattr(msg, "flow_id", 0)
        if not (type(flow_id) is int and 0 <= flow_id <= MASK):
            flow_id = 0
        seg = TeardownEngine._check_handover(None, msg, f)    # the engine's own check
        if seg is None:
            c["refused_bad"] += 1
            return self._refuse(flow_id, key, TEARDOWN_REFUSED_BAD_STATE)
        if key in self._index:
            c["refused_duplicate"] += 1
            return self._refuse(flow_id, key, TEARDOWN_REFUSED_DUPLICATE)
        fid = self._take_slot()
        if fid is None:
            c["refused_table_full"] += 1
            return self._refuse(flow_id, key, TEARDOWN_REFUSED_TABLE_FULL)
        payload = bytes(seg.payload)
        n = len(payload)
        if not self._store(fid, payload):                 # no room for the payload
            self._give_slot(fid)
            c["refused_table_full"] += 1
            return self._refuse(flow_id, key, TEARDOWN_REFUSED_TABLE_FULL)
        if not self._index:
            self.wheel.advance(now)
        if flow_id == 0:                                  # the NIC assigns one
            fresh, last = _PAIR.unpack(self._alloc.lookup(_ZERO))
            flow_id = last % MASK + 1
            self._alloc.update(_ZERO, _PAIR.pack(fresh, flow_id))
        una = seg.seq
        mss = msg.mss
        rto = min(max(msg.rto_us, self._min_rto_us), MAX_RTO_US)
        pwin = msg.snd_wnd >> msg.snd_wscale
        e = [key, bytes(f[0:6]),
             FIN_WAIT_1 if msg.state == STATE_ESTABLISHED else LAST_ACK,
             (F_TS if msg.timestamps else 0) | (F_SACK if msg.sack_ok else 0),
             una, (una + n + 1) & MASK, seg.ack, rto, 0, msg.max_retries, 0,
             msg.snd_wscale << 4 | msg.rcv_wscale, mss, seg.window,
             pwin if pwin < 0xFFFF else 0xFFFF, 0, msg.ts_recent, msg.ts_offset,
             msg.ts_last, msg.time_wait_ms, flow_id, n, 0, 0, 0, 0, 0, 0]
        c["accepted"] += 1
        if self.moderate:
            self.last_accepted = (flow_id, key)
            out = []
        else:
            c["reports_sent"] += 1
            out = [(HOST, TeardownAccepted(flow_id, key).frame(host_mac, self.dp.mac))]
        rnxt = e[_RNXT]
        mv = memoryview(payload)
        seq = una
        for off in range(0, n, mss):
            end = off + mss
            if end >= n:
                out.append((WIRE, self._build(e, ACK | PSH | FIN, seq, rnxt, mv[off:], now)))
            else:
                out.append((WIRE, self._build(e, ACK, seq, rnxt, mv[off:end], now)))
                seq = (seq + mss) & MASK
        if not n:
            out.append((WIRE, self._build(e, ACK | FIN, una, rnxt, b"", now)))
        self._arm(fid, e, _T_RTO, rto, now)
        self._save(fid, e)
        self._idx.update(key, _U32.pack(fid))             # atcp_wire takes it from here
        self._index[key] = fid
        self._totals[fid] = n
        return out

    def _take_slot(self):
        """The free list's next slot (atcp_td_alloc's docstring), or None when full."""
        v = self._freed.pop()
        if v is not None:
            return _U32.unpack(v)[0]
        fresh, last_id = _PAIR.unpack(self._alloc.lookup(_ZERO))
        if fresh >= self.capacity:
            return None
        self._alloc.update(_ZERO, _PAIR.pack(fresh + 1, last_id))
        return fresh

    def _give_slot(self, fid):
        self._freed.update(b"", _U32.pack(fid))

    def _refuse(self, flow_id, key, reason):
        self._py["reports_sent"] += 1
        return [(HOST, TeardownRefused(flow_id, key, reason).frame(self.host_mac, self.dp.mac))]

    # -- the side store -----------------------------------------------------------------

    def _store(self, fid, payload):
        """Write the payload's chunks; False (nothing kept) when the map is full."""
        n = len(payload)
        written = []
        try:
            for i in range(0, n, CHUNK):
                k = _U32.pack(fid << 5 | i // CHUNK)
                self._data.update(k, payload[i:i + CHUNK].ljust(CHUNK, b"\0"))
                written.append(k)
        except bpf.BpfError:
            for k in written:
                self._data.delete(k)
            return False
        return True

    def _payload(self, fid, off, n):
        if not n:
            return b""
        parts = []
        for i in range(off // CHUNK, (off + n - 1) // CHUNK + 1):
            v = self._data.lookup(_U32.pack(fid << 5 | i))
            parts.append(v if v is not None else bytes(CHUNK))
        b = b"".join(parts)
        s = off - (off // CHUNK) * CHUNK
        return b[s:s + n]

    # -- table access --------------------------------------------------------------------

    def _load(self, fid):
        v = self._table.lookup(_U32.pack(fid))
        if v is None:
            return None
        e = list(_ENTRY.unpack(v))
        return e if e[_STATE] else None

    def _save(self, fid, e):
        self._table.update(_U32.pack(fid), _ENTRY.pack(*e))

    def _release(self, fid, key, total, freed=False):
        """What the control side frees of a slot (the program or _finish freed the rest;
        `freed`: the program also freed its data and put it on the free list)."""
        if not freed:
            for i in range((total + CHUNK - 1) // CHUNK):
                self._data.delete(_U32.pack(fid << 5 | i))
            self._give_slot(fid)
        self._index.pop(key, None)
        self._totals.pop(fid, None)
        self.wheel.cancel(fid)
        self._done += 1

    def _finish(self, fid, e, reason, out):
        """TeardownEngine._finish from the control side (timer expiries).  The key's
        delete decides who ends the flow: a program that deleted it a moment ago (a
        segment on another CPU) reports and frees it (td_finish)."""
        if not self._idx.delete(e[_KEY]):
            return
        c = self._py
        c[_DONE_COUNTER[reason]] += 1
        c["done_total"] += 1
        if not (self.moderate and reason == TEARDOWN_END_CLOSED):
            c["reports_sent"] += 1
            out.append((HOST, TeardownDone(
                e[_FID], e[_KEY], reason, e[_RTX], e[_ACKED], e[_RCVD])
                .frame(self.host_mac, self.dp.mac)))
        self._table.update(_U32.pack(fid), _ZERO_ENTRY)
        self._release(fid, e[_KEY], e[_TOTAL])

    def entry(self, fid):
        """Slot `fid` as TeardownEngine.entry's dict (None for a free slot)."""
        e = self._load(fid) if 0 <= fid < self.capacity else None
        if e is None:
            return None
        d = dict(zip(_NAMES, e))
        d["state_name"] = _STATE_NAMES.get(e[_STATE], str(e[_STATE]))
        d.update(flow_id=e[_FID], unacked_bytes=e[_TOTAL] - e[_ACKED],
                 retransmits=e[_RTX], bytes_received=e[_RCVD])
        return d

    def entries(self):
        """{slot: entry(slot)} of every flow in the table."""
        return {fid: self.entry(fid) for fid in sorted(self._index.values())}

    @property
    def active(self):
        return len(self._index)

    @property
    def stored_bytes(self):
        return sum(d["unacked_bytes"] for d in self.entries().values())

    def lookup(self, key):
        """The slot of `key` in atcp_td_index (what the program finds), or None."""
        v = self._idx.lookup(bytes(key))
        return None if v is None else _U32.unpack(v)[0]

    @property
    def counters(self):
        """TeardownEngine.counters' shape: every base name, drop_<reason> when not 0."""
        out = dict(self._py)
        for name, v in zip(ENGINE_COUNTERS, self._cnt.counter_sums()):
            if v or not name.startswith("drop_"):
                out[name] = out.get(name, 0) + v
        return out

    # -- frames out ---------------------------------------------------------------------

    def _next_ident(self):
        ident, frame = _PAIR.unpack(self._seq.lookup(_ZERO))
        ident = (ident + 1) & MASK
        self._seq.update(_ZERO, _PAIR.pack(ident, frame))
        return ident & 0xFFFF

    @property
    def ident(self):
        """The engine's IPv4 ident (atcp_td_seq: apart from the setup path's)."""
        return _PAIR.unpack(self._seq.lookup(_ZERO))[0] & 0xFFFF

    def _build(self, e, flags, seq, ack, payload, now, count=True):
        """TeardownEngine._build with the ack given (the value at the engine's point)."""
        opts = b""
        if e[_FLAGS] & F_TS and not flags & RST:         # RFC 7323 §5.2: no TS on RST
            last = e[_TSLAST]
            ts = (int(now * self.ts_hz) + e[_TSOFF]) & 0xFFFFFFFE
            if seq_lt(ts, last):
                ts = (last + 1) & 0xFFFFFFFE
            e[_TSLAST] = ts
            opts = _TS_OPT.pack(_TS_HEAD, ts, e[_TSR])
        key = e[_KEY]
        pport, oport = _PORTS.unpack_from(key, 8)
        if count:
            self._py["frames_sent"] += 1
        return build_tcp_frame(e[_MAC], self.dp.mac, key[4:8], key[0:4], self._next_ident(),
                               oport, pport, seq, ack, flags, 0 if flags & RST else e[_WIN],
                               opts, payload, self.dp.ttl)

    # the hooks of nic.teardown.expire
    def _rst(self, e, now):
        return self._build(e, RST | ACK, e[_UNA], e[_RNXT], b"", now)

    def _retransmit(self, fid, e, now):
        return self._first_segment(fid, e, now)

    def _arm_rto(self, fid, e, now):
        rto = e[_RTO] << e[_RETRIES]
        self._arm(fid, e, _T_RTO, rto if rto < MAX_RTO_US else MAX_RTO_US, now)

    def _first_segment(self, fid, e, now):
        left = e[_TOTAL] - e[_ACKED]
        mss = e[_MSS]
        e[_RTX] += 1
        if left > mss:
            return (WIRE, self._build(e, ACK, e[_UNA], e[_RNXT],
                                      self._payload(fid, e[_ACKED], mss), now))
        return (WIRE, self._build(e, ACK | PSH | FIN if left else ACK | FIN, e[_UNA],
                                  e[_RNXT], self._payload(fid, e[_ACKED], left), now))

    def _drain(self, now):
        """The program's events, in order (module docstring).  A slot's timer requests
        take effect at the end, the last one only: the wheel's state (a bitmap per tick)
        depends on each flow's last deadline, not on the order they were armed."""
        out = []
        timers = {}
        for raw in self._ev.records():
            kind, flags, op, _, slot, seq, ack, off, n, now_bits, key, _, mac = \
                _EVENT.unpack(raw)
            if kind == _EV_NEW:                       # teardown_host took a handover
                if not self._index:
                    self.wheel.advance(_DOUBLE.unpack(_BITS.pack(now_bits))[0])
                if key in self._index:                # its old flow's DONE was lost
                    self._ended_unseen()
                self._index[key] = slot
                self._totals[slot] = off
                self.host_mac = self.dp.host_mac = mac
                self.last_accepted = (seq, key)
                timers[slot] = self._deadline(op, n, now_bits)
            elif kind == _EV_TIMER:
                if slot not in self._totals:              # ended since (mirror, in order)
                    continue
                timers[slot] = self._deadline(op, n, now_bits)
            elif kind == _EV_SEND:
                e = self._load(slot)
                if e is None:
                    continue
                out.append((WIRE, self._build(e, flags, seq, ack, self._payload(slot, off, n),
                                              now, count=False)))
                self._save(slot, e)
            elif kind == _EV_DONE:
                if self._index.get(key) == slot:
                    timers.pop(slot, None)
                    self._release(slot, key, self._totals.get(slot, 0), freed=True)
                if flags:
                    out.append((HOST, TeardownDone(seq, key, op, ack, off, n)
                                .frame(self.host_mac, self.dp.mac)))
            elif kind == _EV_FRAME:
                # the SYN that reopened a TIME-WAIT, for the host behind the flow's end
                v = self._frames.lookup(_U32.pack(off))
                if v is not None:
                    out.append((HOST, v[4:4 + _FRAME_LEN.unpack_from(v)[0]]))
        schedule = self.wheel.schedule
        for slot, deadline in timers.items():
            schedule(slot, deadline)
        if self._stale:
            self._resync(now)
        return out

    # -- lost events (module docstring) -------------------------------------------------

    def _ended_unseen(self):
        self._done += 1
        self._py["events_recovered"] = self._py.get("events_recovered", 0) + 1
        self._stale = True

    def _check_loss(self, now, out):
        if now < self._loss_check_at:
            return
        self._loss_check_at = now + LOSS_CHECK
        lost = self.dp.xdp_counters()["xdp_td_events_lost"]
        if lost != self._lost_seen:
            self._lost_seen = lost
            out += self._drain(now)
            self._resync(now)

    def _resync(self, now):
        """The mirror and the wheel rebuilt from the maps (after the ring was drained).
        A flow has ended when its slot's entry no longer holds its key (td_finish and
        _finish zero it): an entry, not the index, decides, because the program writes
        a new flow's entry and NEW event before its index key.  Every live slot's timer
        is its entry's recorded request (one that ends meanwhile is released by its DONE)."""
        live = {}                                     # slot -> its entry, read once
        for key, slot in list(self._index.items()):
            e = self._load(slot)
            if e is None or e[_KEY] != key:
                del self._index[key]
                self._ended_unseen()
            else:
                live[slot] = e
        self._stale = False
        for key, v in self._idx.items():              # taken while the ring was full
            if key not in self._index:
                slot = _U32.unpack(v)[0]
                e = self._load(slot)
                if e is not None and e[_KEY] == key:
                    self._index[key] = slot
                    live[slot] = e
        for slot in set(self._totals) - set(live):
            del self._totals[slot]
            self.wheel.cancel(slot)
        for slot, e in live.items():
            self._totals[slot] = e[_TOTAL]
            if e[_TOP]:
                self.wheel.schedule(slot, self._deadline(e[_TOP], e[_TPARAM], e[_TNOW]))

    # -- timers -------------------------------------------------------------------------

    def _deadline(self, op, param, now_bits):
        """The engine's deadline expression for a timer request made at `now`."""
        t = _DOUBLE.unpack(_BITS.pack(now_bits))[0]
        if op == _T_RTO:
            return t + param / 1e6
        if op == _T_FW2:
            return t + self.fin_timeout
        return t + param / 1000.0

    def _arm(self, fid, e, op, param, now):
        """Arm slot `fid`'s timer and record the request in its entry (as the program
        does), so that the wheel can be rebuilt from the maps."""
        e[_TOP] = op
        e[_TPARAM] = param
        e[_TNOW] = _BITS.unpack(_DOUBLE.pack(now))[0]
        self.wheel.schedule(fid, self._deadline(op, param, e[_TNOW]))

    def rebuilt_wheel(self, now):
        """A timer wheel built from the maps alone (each live entry's recorded request),
        as a restarted control process would: the same deadlines as ``wheel`` for every
        timer not yet due at `now` (those already due are overdue: they fire at once)."""
        w = TimerWheel(max(self.capacity, 1), self.slots, self.tick, 0.0)
        w.advance(now)
        for k, v in self._idx.items():
            fid = _U32.unpack(v)[0]
            e = self._load(fid)
            if e is not None and e[_TOP]:
                w.schedule(fid, self._deadline(e[_TOP], e[_TPARAM], e[_TNOW]))
        return w

    # -- report moderation (NicDataplane._td_changed / _td_report) ------------------------

    def _changed(self, now):
        if self._report_at is None and self.moderate and \
                (self.last_accepted, self._done) != self._reported:
            self._report_at = now + self.report_interval

    def _report(self, out):
        dp = self.dp
        self._report_at = None
        last, done = self.last_accepted, self._done
        mac = dp.host_mac or bytes(6)
        if last is not None and last != self._reported[0]:
            out.append((HOST, TeardownAccepted(*last).frame(mac, dp.mac)))
        if done != self._reported[1]:
            dp._count("status_reports")
            out.append((HOST, dp.status_report(0).frame(mac, dp.mac)))
        self._reported = (last, done)
