"""The NIC's connection-teardown engine (AccelTCP §4.2). Sans-I/O: the dataplane hands
in control messages, peer segments and ``now``; the engine returns ``[(port, frame)]``.

Theory of operation
-------------------
On close the host hands a connection over with a 0x090B frame: a ``control.Teardown``
header in front of one TSO segment whose TCP header carries SND.UNA (seq), RCV.NXT
(ack) and our receive-window field, and whose payload is everything not yet
acknowledged (up to 64 KiB; its checksum is not trusted -- every frame the engine sends
is built from scratch with full IPv4/TCP checksums). ``accept`` answers the host with
TEARDOWN_ACCEPTED (with ``moderate``: none -- the dataplane reports ``last_accepted``
cumulatively, once per report interval; or TEARDOWN_REFUSED: BAD_STATE, DUPLICATE, TABLE_FULL, checked in
that order; BAD_STATE = not Ethernet/IPv4/TCP, SYN/RST/FIN set or ACK clear, a state
other than ESTABLISHED/CLOSE-WAIT, mss outside [MIN_MSS, MAX_MSS], a field outside its
wire range), cuts the payload into ``msg.mss``-sized frames, puts our FIN on the last
one (or sends it alone) and arms the RTO. From then on the NIC owns the connection:

    ESTABLISHED handover -> FIN-WAIT-1 --ACK of FIN--> FIN-WAIT-2 --FIN--> TIME-WAIT
                                 \\--FIN--> CLOSING --ACK of FIN--> TIME-WAIT
    CLOSE-WAIT handover  -> LAST-ACK --ACK of FIN--> done

Peer segments (``on_segment``; the dataplane found the flow with ``lookup`` and has
already checked the TCP checksum) follow RFC 9293 §3.10.7.4. In TIME-WAIT they go to
``tcp.timewait.verdict``, the pure function the host's TIME-WAIT record uses too (the
rules and the RFCs are in its docstring; tests/tcp/test_timewait_verdict.py runs one
table against both), called with the entry's fields: REMOVE (an RST at RCV.NXT) ends
the flow with TEARDOWN_END_RESET; REOPEN (a new incarnation's SYN, RFC 6191) frees the
entry (TEARDOWN_END_CLOSED) and gives the SYN back, behind the report, as (LISTENER,
frame): the dataplane takes it on to its listener lookup, as Linux does with a
TIME-WAIT SYN (``TCP_TW_SYN``), so a listener offloaded with cookies answers it;
SEND_ACK / CHALLENGE_ACK send our ACK (RESTART: the peer's FIN again, 2MSL restarts;
a challenge ACK only within the RFC 5961 §7 limit, ``challenge_ok``);
UPDATE_TS sets TS.Recent. In the other states:

1. RST (RFC 5961 §3.2): SEG.SEQ == RCV.NXT ends the flow (TEARDOWN_END_RESET);
   otherwise in the receive window (our field << rcv_wscale) -> challenge ACK;
   otherwise ignored.
2. SYN (RFC 5961 §4.2): challenge ACK.
3. PAWS (RFC 7323 §5.3): TSval < TS.Recent -> ACK, drop.
4. Acceptability (§3.10.7.4 "first"): the four cases, against our advertised window;
   a segment at exactly RCV.NXT is taken even at a zero window (its data is not, a FIN
   is -- as Linux). Unacceptable -> ACK, drop. TS.Recent is taken from acceptable segments
   with SEG.SEQ <= RCV.NXT (RFC 7323 §4.3; we ACK at once, so Last.ACK.sent == RCV.NXT).
5. ACK (§3.10.7.4 "fifth"): no ACK bit -> drop; SEG.ACK > SND.MAX -> ACK, drop;
   SEG.ACK < SND.UNA is an old ACK and ignored (no RFC 5961 §5.2 check: MAX.SND.WND is
   not kept).
   SND.UNA < SEG.ACK <= SND.MAX advances SND.UNA, drops the acknowledged bytes from the
   side store, resets retries/backoff and dup-ACK count, re-arms the RTO for the rest
   or, when our FIN is acknowledged, moves the state on (timer: FIN-WAIT-2 timeout /
   2MSL / none). A duplicate ACK (RFC 5681 §2: SEG.ACK == SND.UNA, no data, no SYN/FIN,
   window field unchanged, something outstanding) counts; the 3rd retransmits the
   first unacknowledged segment (fast retransmit, RFC 5681 §3.2; later ones do not). After any
   retransmission, an ACK that advances SND.UNA but not to SND.MAX retransmits the next
   segment at once (the partial ACK of NewReno, RFC 6582 §3.2 step 4): the handed-over
   data is one window, so SND.MAX is always the recovery point, and each further hole
   costs an RTT instead of an RTO.
6. Text (FIN-WAIT-1/2 only; §3.10.7.4 "seventh"): in-order bytes within the window are
   acknowledged and discarded (counted in TeardownDone.bytes_received); old or
   out-of-order data gets an immediate (duplicate) ACK. Data after the peer's FIN is
   ignored.
7. FIN at RCV.NXT ("eighth"): RCV.NXT += 1, ACK; FIN-WAIT-1 -> CLOSING, FIN-WAIT-2 ->
   TIME-WAIT (a segment whose ACK covers our FIN and that carries the peer's FIN goes
   FIN-WAIT-1 -> FIN-WAIT-2 -> TIME-WAIT). Any segment with data or FIN gets an ACK at
   once: the NIC does not delay ACKs.

Timers: one per flow, on the timer bitmap wheel (``TimerWheel``, flow id = table slot):
the RTO in FIN-WAIT-1 / CLOSING / LAST-ACK, the FIN-WAIT-2 timeout, or 2MSL. On RTO
expiry (RFC 6298 §5.4-5.6) the first unacknowledged segment is resent (go-back of one
segment; with our FIN if it is the last) and the timer doubles: msg.rto_us * 2**retries,
capped at 60 s; ``retries`` counts RTO retransmissions since the last progress. The
expiry after msg.max_retries of them sends an RST (<SEQ=SND.UNA, the sequence number
the peer expects from us when it saw nothing more><ACK=RCV.NXT><CTL=RST,ACK>, no
timestamp: RFC 7323 §5.2) and reports TEARDOWN_END_RETRIES. TIME-WAIT lasts
msg.time_wait_ms (0: skip it, report at once); its end reports TEARDOWN_END_CLOSED.
FIN-WAIT-2 waits at most ``fin_timeout`` seconds for the peer's FIN (an orphaned
connection, like Linux's tcp_fin_timeout; not restarted by peer data) and then frees
the entry, reported as TEARDOWN_END_CLOSED (our data and FIN were delivered); later
peer segments reach the host, which answers them with an RST.

Frames we send: Ethernet src = ``self.mac`` (the NIC/host MAC), dst = the peer MAC from
the handover frame's Ethernet dst; IPv4 DF, TTL ``self.ttl``, ident from one engine
counter; TCP ack = RCV.NXT, window = the handed-over field (already scaled, advertised
unchanged: the engine discards what it receives, so its buffer never fills); pure ACKs
carry SEQ = SND.MAX (the peer has seen sequence numbers up to there). With
msg.timestamps every frame but an RST carries NOP,NOP,TS: TSval = max(ts_last, (int(now
* ts_hz) + ts_offset) mod 2**32) with bit 0 cleared (bit 0 marks SYN-cookie TSvals,
docs/nic.md), TSecr = TS.Recent; ts_last is updated to every TSval sent, so TSvals
never decrease. No SACK blocks (we never hold out-of-order data); the peer's SACK
blocks are not used. Control reports go to HOST, to the ``host_mac`` of the latest
``accept`` (one engine-wide value: one host per NIC).

NIC memory (the paper's SRAM/DRAM split)
----------------------------------------
Flow table (SRAM model): ``capacity`` entries of FLOW_ENTRY_BYTES = 64 in one
bytearray, slot index = flow id on the wheel; a free slot is all zero (state 0,
CLOSED). Entry layout (network byte order, struct ``_ENTRY``)::

    off size field
      0  12  key          peer ip | our ip | peer port | our port (frame[26:38] from the peer)
     12   6  peer_mac     Ethernet dst of our frames
     18   1  state        tcp.states number: 5 FIN-WAIT-1, 6 FIN-WAIT-2, 8 CLOSING,
                          9 LAST-ACK, 10 TIME-WAIT (0 = free slot)
     19   1  flags        bit0 timestamps, bit1 SACK-permitted (recorded, unused),
                          bit2 recovering (a retransmission is outstanding)
     20   4  snd_una      SND.UNA
     24   4  snd_max      SND.MAX = sequence number after our FIN
     28   4  rcv_nxt      RCV.NXT
     32   4  rto_us       base RTO in µs (msg.rto_us clamped to [tick, 60 s])
     36   1  retries      RTO retransmissions since the last progress (backoff exponent)
     37   1  max_retries  msg.max_retries
     38   1  dupacks      duplicate ACKs since the last retransmission trigger (0..2)
     39   1  wscale       snd_wscale << 4 | rcv_wscale
     40   2  mss          payload bytes per segment
     42   2  window       our window field (already scaled by rcv_wscale)
     44   2  peer_window  the peer's last window field (duplicate-ACK test)
     46   2  challenge    RFC 5961 §7 in TIME-WAIT: second (int(now) mod 4096) << 4 |
                          challenge ACKs sent in that second (0..10)
     48   4  ts_recent    TS.Recent
     52   4  ts_offset    TSval = NIC clock + ts_offset
     56   4  ts_last      the last TSval sent (never go below)
     60   4  time_wait_ms 2MSL in ms

Flow lookup table: ``_index`` maps the 12-byte key to the slot (one dict for the
engine's lifetime: ``nic.dataplane`` probes it directly), the model of the paper's
hash table: INDEX_ENTRY_BYTES = 16 per flow (key + 32-bit slot), not counted
in ``memory_bytes`` (``index_bytes`` reports it; a real table sized for load adds its
slack on top). Timer wheel: ``wheel.memory_bytes`` (in ``memory_bytes``).

Side store (the paper's DRAM, not in ``memory_bytes``): per slot a small list --
[flow_id (u32, the host's or the one we assigned), unacknowledged payload (bytes,
starting at SND.UNA; acknowledged bytes are cut off the front on every ACK),
handed-over length, retransmits, bytes_received]. The report counters live there too:
they are only read when the TeardownDone report is built. ``stored_bytes`` is the
payload held in it right now.

Counters (``counters`` dict): accepted, refused_table_full, refused_duplicate,
refused_bad, retransmits_rto, retransmits_fast, retransmits_partial, done_closed,
done_reset, done_retries, done_total (their sum), time_wait_entered, time_wait_restarts, fin_wait2_timeouts,
syn_reopen (new incarnations handed to the host), bytes_acked, bytes_received,
frames_sent (to WIRE), reports_sent (to HOST), acks_sent, challenge_acks, rst_sent,
dupacks, paws_drops, unacceptable, drops (total) and ``drop_<reason>`` per reason:
teardown_no_flow (free slot), teardown_key_mismatch (frame[26:38] is not the slot's
key), teardown_rst_outside (RST outside the window), teardown_no_ack (acceptable
segment without ACK), teardown_challenge_limited (a challenge ACK over the RFC 5961 §7
limit, TIME-WAIT). Malformed input never raises: a bad handover is refused
(BAD_STATE), a stray segment is a counted drop.

API beyond the dataplane's contract: ``fin_timeout`` (constructor), ``entry(fid)`` (a
slot as a dict, for tests and status), ``index_bytes``, ``stored_bytes``, ``wheel``.
RFC 5961 §7: in TIME-WAIT, challenge ACKs are limited to CHALLENGE_ACKS_PER_SECOND a
flow (``challenge_ok``; over it: drop_teardown_challenge_limited), as on the host. Not
done: that limit in the other states (each forged in-window RST/SYN gets one ACK, no
amplification); using the peer's SACK blocks; flow control on the
peer's window (the host hands over only what fits it, §4.2).
"""

import struct

from ..tcp.seq import seq_add, seq_diff, seq_gt, seq_in_window, seq_le, seq_lt
from ..tcp.states import CLOSING, FIN_WAIT_1, FIN_WAIT_2, LAST_ACK, TIME_WAIT
from ..tcp.timewait import (
    ACTION, CHALLENGE_ACK, CHALLENGE_ACKS_PER_SECOND, PAWS, REMOVE, REOPEN, RESTART, SEND_ACK, UPDATE_TS,
    verdict as tw_verdict,
)
from ..wire.control import (
    STATE_CLOSE_WAIT, STATE_ESTABLISHED, TEARDOWN_END_CLOSED, TEARDOWN_END_RESET,
    TEARDOWN_END_RETRIES, TEARDOWN_REFUSED_BAD_STATE, TEARDOWN_REFUSED_DUPLICATE,
    TEARDOWN_REFUSED_TABLE_FULL, TeardownAccepted, TeardownDone, TeardownRefused,
)
from ..wire.errors import WireError
from ..wire.ipv4 import parse_ipv4_fields
from ..wire.tcp import ACK, FIN, PSH, RST, SYN, build_tcp_frame, parse_tcp
from .timer_wheel import TimerWheel

__all__ = ["FLOW_ENTRY_BYTES", "INDEX_ENTRY_BYTES", "LISTENER", "MIN_MSS", "MAX_RTO_US",
           "TeardownEngine", "challenge_ok", "expire"]

# The dataplane's port numbers (nic.dataplane imports this module: no import back), and
# LISTENER: not a port -- the frame goes on to the dataplane's listener lookup.
WIRE = 0
HOST = 1
LISTENER = 2

FLOW_ENTRY_BYTES = 64
INDEX_ENTRY_BYTES = 16          # hash index: 12-byte key + 32-bit slot
MIN_MSS = 64                    # smaller handover MSS: BAD_STATE (bounds the work per accept)
MAX_MSS = 65535 - 20 - 20 - 12  # one frame's IPv4 total length must fit 16 bits
MAX_RTO_US = 60_000_000         # RFC 6298 §2.5: a maximum of at least 60 s

_ENTRY = struct.Struct("!12s6sBBIIIIBBBBHHHHIIII")
assert _ENTRY.size == FLOW_ENTRY_BYTES
(_KEY, _MAC, _STATE, _FLAGS, _UNA, _MAX, _RNXT, _RTO, _RETRIES, _MAXRET, _DUPS, _WS,
 _MSS, _WIN, _PWIN, _CHAL, _TSR, _TSOFF, _TSLAST, _TW) = range(20)
_ZERO_ENTRY = bytes(FLOW_ENTRY_BYTES)

# side-store list indices
_S_ID, _S_DATA, _S_TOTAL, _S_RTX, _S_RCVD = range(5)

F_TS = 0x01
F_SACK = 0x02
F_RECOVER = 0x04

MASK = 0xFFFFFFFF
_TS_OPT = struct.Struct("!III")
_TS_HEAD = 0x0101080A           # NOP, NOP, kind 8, length 10
_PORTS = struct.Struct("!HH")
_DUPTHRESH = 3                  # RFC 5681 §3.2

_STATE_NAMES = {FIN_WAIT_1: "FIN-WAIT-1", FIN_WAIT_2: "FIN-WAIT-2", CLOSING: "CLOSING",
                LAST_ACK: "LAST-ACK", TIME_WAIT: "TIME-WAIT"}

_COUNTERS = ("accepted", "refused_table_full", "refused_duplicate", "refused_bad",
             "retransmits_rto", "retransmits_fast", "retransmits_partial", "done_closed",
             "done_reset", "done_retries", "done_total", "time_wait_entered", "time_wait_restarts",
             "fin_wait2_timeouts", "syn_reopen", "bytes_acked", "bytes_received",
             "frames_sent", "reports_sent", "acks_sent", "challenge_acks", "rst_sent",
             "dupacks", "paws_drops", "unacceptable", "drops")

_DONE_COUNTER = {TEARDOWN_END_CLOSED: "done_closed", TEARDOWN_END_RESET: "done_reset",
                 TEARDOWN_END_RETRIES: "done_retries"}


def _u32(v):
    return type(v) is int and 0 <= v <= MASK


def expire(td, fid, e, c, now, out):
    """Flow `fid`'s timer went off: the rules of ``TeardownEngine.on_timer``, shared with
    the XDP control side (``td``: either; ``e``: the entry as a list, ``c``: the
    counters to count in). The end of TIME-WAIT or of FIN-WAIT-2 frees the flow; an RTO
    (FIN-WAIT-1, CLOSING, LAST-ACK) retransmits the first unacknowledged segment and
    backs off (RFC 6298 §5.4-5.6), or after max_retries sends an RST and gives up."""
    state = e[_STATE]
    if state == TIME_WAIT or state == FIN_WAIT_2:
        if state == FIN_WAIT_2:
            c["fin_wait2_timeouts"] += 1
        td._finish(fid, e, TEARDOWN_END_CLOSED, out)
        return
    if e[_RETRIES] >= e[_MAXRET]:
        c["rst_sent"] += 1
        out.append((WIRE, td._rst(e, now)))
        td._finish(fid, e, TEARDOWN_END_RETRIES, out)
        return
    e[_RETRIES] += 1
    e[_DUPS] = 0
    e[_FLAGS] |= F_RECOVER
    c["retransmits_rto"] += 1
    out.append(td._retransmit(fid, e, now))
    td._arm_rto(fid, e, now)
    td._save(fid, e)


def challenge_ok(e, now):
    """RFC 5961 §7 for a flow in TIME-WAIT: may it send one more challenge ACK now? At
    most CHALLENGE_ACKS_PER_SECOND (as the TCB and the host's TIME-WAIT record,
    ``tcp.timewait.challenge_budget``), counted per whole second of ``now`` in the
    entry's 16-bit ``challenge`` field (second mod 4096 << 4 | count; the XDP program
    does the same with the clock the control side writes). Updates the entry list."""
    sec = int(now) & 0xFFF
    v = e[_CHAL]
    if v >> 4 != sec:
        v = sec << 4
    if v & 15 >= CHALLENGE_ACKS_PER_SECOND:
        return False
    e[_CHAL] = v + 1
    return True


class TeardownEngine:
    """Fixed-capacity teardown table + timer wheel (see the module docstring).

    mac: the NIC/host MAC (Ethernet source of everything sent). capacity: flows.
    tick / slots: the wheel's interval (s) and bitmap count. ts_hz: the NIC timestamp
    clock (ticks per second). ttl: IPv4 TTL. fin_timeout: the longest FIN-WAIT-2 (s).
    """

    def __init__(self, mac, capacity=4096, *, tick=0.001, slots=1024, ts_hz=1000, ttl=64,
                 fin_timeout=60.0, moderate=False):
        mac = bytes(mac)
        if len(mac) != 6:
            raise ValueError("mac must be 6 bytes")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError("capacity must be an int >= 1")
        if not fin_timeout > 0:
            raise ValueError("fin_timeout must be > 0")
        self.mac = mac
        self.capacity = capacity
        self.ts_hz = ts_hz
        self.ttl = ttl
        self.fin_timeout = float(fin_timeout)
        self.host_mac = None
        #: report moderation: no per-flow TeardownAccepted / TeardownDone(CLOSED); the
        #: caller reports `last_accepted` (cumulatively) and the gauges periodically
        self.moderate = moderate
        self.last_accepted = None            # (flow_id, key) of the latest accept
        self.wheel = TimerWheel(capacity, slots, tick, 0.0)
        self._min_rto_us = max(1, int(tick * 1e6))
        self._table = bytearray(capacity * FLOW_ENTRY_BYTES)
        self._index = {}
        self._side = [None] * capacity
        self._free = list(range(capacity - 1, -1, -1))     # pop() hands out slot 0 first
        self._next_id = 0
        self.ident = 0
        self.stored_bytes = 0
        self.counters = dict.fromkeys(_COUNTERS, 0)

    # -- sizes -------------------------------------------------------------------------

    @property
    def active(self):
        """Flows in the table."""
        return len(self._index)

    @property
    def memory_bytes(self):
        """Flow table + timer wheel (the SRAM model)."""
        return self.capacity * FLOW_ENTRY_BYTES + self.wheel.memory_bytes

    @property
    def index_bytes(self):
        """The flow lookup (hash) table, modelled at INDEX_ENTRY_BYTES per flow."""
        return self.capacity * INDEX_ENTRY_BYTES

    # -- introspection (tests, status) ---------------------------------------------------

    def lookup(self, key):
        """Slot of the flow whose peer frames carry `key` (frame[26:38]), or None."""
        return self._index.get(key if type(key) is bytes else bytes(key))

    def entry(self, fid):
        """The entry of slot `fid` as a dict (None for a free slot); not for the hot path."""
        e = self._load(fid)
        if e is None:
            return None
        names = ("key", "peer_mac", "state", "flags", "snd_una", "snd_max", "rcv_nxt",
                 "rto_us", "retries", "max_retries", "dupacks", "wscale", "mss", "window",
                 "peer_window", "challenge", "ts_recent", "ts_offset", "ts_last",
                 "time_wait_ms")
        d = dict(zip(names, e))
        d["state_name"] = _STATE_NAMES.get(e[_STATE], str(e[_STATE]))
        side = self._side[fid]
        d.update(flow_id=side[_S_ID], unacked_bytes=len(side[_S_DATA]),
                 retransmits=side[_S_RTX], bytes_received=side[_S_RCVD])
        return d

    def next_deadline(self):
        return self.wheel.next_deadline()

    # -- handover ----------------------------------------------------------------------

    def accept(self, msg, seg_frame, host_mac, now, csum_ok=False):
        """A 0x090B handover: `msg` (control.Teardown), `seg_frame` the inner IPv4 frame.
        Returns the report to HOST and, if accepted, the data/FIN frames to WIRE.
        ``csum_ok`` is accepted for symmetry with ``process``: the segment's checksum is
        never verified (it may be partial), every frame is rebuilt."""
        host_mac = bytes(host_mac)
        self.host_mac = host_mac
        c = self.counters
        f = seg_frame
        key = bytes(f[30:34]) + bytes(f[26:30]) + bytes(f[36:38]) + bytes(f[34:36]) \
            if len(f) >= 38 else bytes(12)
        flow_id = getattr(msg, "flow_id", 0)
        if not _u32(flow_id):
            flow_id = 0
        seg = self._check_handover(msg, f)
        if seg is None:
            c["refused_bad"] += 1
            return self._refuse(flow_id, key, TEARDOWN_REFUSED_BAD_STATE)
        index = self._index
        if key in index:
            c["refused_duplicate"] += 1
            return self._refuse(flow_id, key, TEARDOWN_REFUSED_DUPLICATE)
        if not self._free:
            c["refused_table_full"] += 1
            return self._refuse(flow_id, key, TEARDOWN_REFUSED_TABLE_FULL)
        if not index:
            # Nothing armed: bring the wheel's clock to `now` (free), so the timers
            # below are relative to it and not to the last time the table was busy.
            self.wheel.advance(now)
        if flow_id == 0:
            self._next_id = self._next_id % MASK + 1        # 1 .. 2**32-1
            flow_id = self._next_id
        fid = self._free.pop()
        payload = seg.payload
        n = len(payload)
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
             msg.ts_last, msg.time_wait_ms]
        data = bytes(payload)
        self._side[fid] = [flow_id, data, n, 0, 0]
        self.stored_bytes += n
        index[key] = fid
        c["accepted"] += 1
        if self.moderate:
            self.last_accepted = (flow_id, key)
            out = []
        else:
            c["reports_sent"] += 1
            out = [(HOST, TeardownAccepted(flow_id, key).frame(host_mac, self.mac))]
        # TSO: cut the payload into MSS-sized frames; the FIN rides on the last one.
        build = self._build
        mv = memoryview(data)
        seq = una
        for off in range(0, n, mss):
            end = off + mss
            if end >= n:
                out.append((WIRE, build(e, ACK | PSH | FIN, seq, mv[off:], now)))
            else:
                out.append((WIRE, build(e, ACK, seq, mv[off:end], now)))
                seq = (seq + mss) & MASK
        if not n:
            out.append((WIRE, build(e, ACK | FIN, una, b"", now)))
        self.wheel.schedule(fid, now + rto / 1e6)
        self._save(fid, e)
        return out

    def _check_handover(self, msg, f):
        """The parsed segment of a well-formed handover, else None (BAD_STATE)."""
        try:
            if len(f) < 54 or f[12] != 0x08 or f[13] != 0x00:
                return None
            mv = memoryview(f)
            src, dst, proto, _, _, _, _, total, _ = parse_ipv4_fields(mv[14:], False)
            if proto != 6:
                return None
            seg = parse_tcp(mv[34:14 + total], src, dst, False)
            if seg.flags & (SYN | RST | FIN) or not seg.flags & ACK:
                return None             # the NIC adds the FIN; SYN/RST make no sense here
            if msg.state != STATE_ESTABLISHED and msg.state != STATE_CLOSE_WAIT:
                return None
            if not (type(msg.mss) is int and MIN_MSS <= msg.mss <= MAX_MSS):
                return None
            for v in (msg.rto_us, msg.snd_wnd, msg.ts_recent, msg.ts_offset, msg.ts_last,
                      msg.time_wait_ms):
                if not _u32(v):
                    return None
            for v in (msg.snd_wscale, msg.rcv_wscale):
                if type(v) is not int or not 0 <= v <= 14:
                    return None
            if type(msg.max_retries) is not int or not 0 <= msg.max_retries <= 255:
                return None
            if len(seg.payload) >= 0x40000000:
                return None             # cannot happen in IPv4; keeps SND.MAX sane
            return seg
        except (WireError, AttributeError, TypeError, IndexError):
            return None

    def _refuse(self, flow_id, key, reason):
        self.counters["reports_sent"] += 1
        return [(HOST, TeardownRefused(flow_id, key, reason).frame(self.host_mac, self.mac))]

    # -- table access ------------------------------------------------------------------

    def _load(self, fid):
        if type(fid) is not int or not 0 <= fid < self.capacity:
            return None
        e = list(_ENTRY.unpack_from(self._table, fid * FLOW_ENTRY_BYTES))
        return e if e[_STATE] else None

    def _save(self, fid, e):
        _ENTRY.pack_into(self._table, fid * FLOW_ENTRY_BYTES, *e)

    def _free_slot(self, fid, e):
        side = self._side[fid]
        self.stored_bytes -= len(side[_S_DATA])
        self._side[fid] = None
        del self._index[e[_KEY]]
        self.wheel.cancel(fid)
        off = fid * FLOW_ENTRY_BYTES
        self._table[off:off + FLOW_ENTRY_BYTES] = _ZERO_ENTRY
        self._free.append(fid)

    def _finish(self, fid, e, reason, out):
        """Report TeardownDone to HOST and free the slot."""
        side = self._side[fid]
        c = self.counters
        c[_DONE_COUNTER[reason]] += 1
        c["done_total"] += 1
        if self.moderate and reason == TEARDOWN_END_CLOSED:
            self._free_slot(fid, e)
            return out
        c["reports_sent"] += 1
        out.append((HOST, TeardownDone(
            side[_S_ID], e[_KEY], reason, side[_S_RTX],
            side[_S_TOTAL] - len(side[_S_DATA]), side[_S_RCVD]).frame(self.host_mac, self.mac)))
        self._free_slot(fid, e)
        return out

    def _drop(self, reason):
        c = self.counters
        c["drops"] += 1
        k = "drop_" + reason
        c[k] = c.get(k, 0) + 1
        return []

    # -- frames out ----------------------------------------------------------------------

    def _build(self, e, flags, seq, payload, now):
        """One frame to the peer from entry `e` (TSval bookkeeping included)."""
        opts = b""
        if e[_FLAGS] & F_TS and not flags & RST:        # RFC 7323 §5.2: no TS on RST
            # max(ts_last, clock + offset), bit 0 cleared (the SYN-cookie mark); an odd
            # ts_last (not from a well-behaved host) is rounded up, never undercut.
            last = e[_TSLAST]
            ts = (int(now * self.ts_hz) + e[_TSOFF]) & 0xFFFFFFFE
            if seq_lt(ts, last):
                ts = (last + 1) & 0xFFFFFFFE
            e[_TSLAST] = ts
            opts = _TS_OPT.pack(_TS_HEAD, ts, e[_TSR])
        key = e[_KEY]
        pport, oport = _PORTS.unpack_from(key, 8)
        self.ident = ident = (self.ident + 1) & 0xFFFF
        self.counters["frames_sent"] += 1
        return build_tcp_frame(e[_MAC], self.mac, key[4:8], key[0:4], ident, oport, pport,
                               seq, e[_RNXT], flags, 0 if flags & RST else e[_WIN], opts,
                               payload, self.ttl)

    def _ack(self, e, now):
        """<SEQ=SND.MAX><ACK=RCV.NXT><CTL=ACK>."""
        self.counters["acks_sent"] += 1
        return (WIRE, self._build(e, ACK, e[_MAX], b"", now))

    def _first_segment(self, e, side, now):
        """The first unacknowledged segment (with our FIN if it is the last)."""
        data = side[_S_DATA]
        mss = e[_MSS]
        side[_S_RTX] += 1
        if len(data) > mss:
            return (WIRE, self._build(e, ACK, e[_UNA], memoryview(data)[:mss], now))
        return (WIRE, self._build(e, ACK | PSH | FIN if data else ACK | FIN, e[_UNA], data,
                                  now))

    def _arm_rto(self, fid, e, now):
        rto = e[_RTO] << e[_RETRIES]
        self.wheel.schedule(fid, now + (rto if rto < MAX_RTO_US else MAX_RTO_US) / 1e6)

    def _time_wait(self, fid, e, now, out):
        """Enter TIME-WAIT; with time_wait_ms 0 skip it: report and free (returns True)."""
        e[_STATE] = TIME_WAIT
        if not e[_TW]:
            self._finish(fid, e, TEARDOWN_END_CLOSED, out)
            return True
        self.counters["time_wait_entered"] += 1
        self.wheel.schedule(fid, now + e[_TW] / 1000.0)
        return False

    # -- peer segments -----------------------------------------------------------------

    def on_segment(self, fid, frame, seg, now):
        """A segment from the peer for slot `fid` (from ``lookup``); `seg` is `frame`
        parsed, checksum verified by the caller. Returns [(port, frame), ...]."""
        e = self._load(fid)
        if e is None:
            return self._drop("teardown_no_flow")
        if frame[26:38] != e[_KEY]:
            return self._drop("teardown_key_mismatch")
        state = e[_STATE]
        if state == TIME_WAIT:
            return self._time_wait_segment(fid, e, frame, seg, now)
        c = self.counters
        out = []
        flags = seg.flags
        seq = seg.seq
        rnxt = e[_RNXT]
        wnd = e[_WIN] << (e[_WS] & 15)

        # RST: RFC 5961 §3.2.
        if flags & RST:
            if seq == rnxt:
                return self._finish(fid, e, TEARDOWN_END_RESET, out)
            if seq_in_window(seq, rnxt, wnd):
                c["challenge_acks"] += 1
                out.append(self._ack(e, now))
                self._save(fid, e)
                return out
            return self._drop("teardown_rst_outside")

        # SYN: RFC 5961 §4.2 (in TIME-WAIT, a new incarnation: _time_wait_segment).
        if flags & SYN:
            c["challenge_acks"] += 1
            out.append(self._ack(e, now))
            self._save(fid, e)
            return out

        # RFC 7323 §5.3 PAWS.
        tsval = seg.tsval
        ts_on = e[_FLAGS] & F_TS and tsval is not None
        if ts_on and seq_lt(tsval, e[_TSR]):
            c["paws_drops"] += 1
            out.append(self._ack(e, now))
            self._save(fid, e)
            return out

        # RFC 9293 §3.10.7.4 first: sequence number acceptability.
        payload = seg.payload
        plen = len(payload)
        fin = flags & FIN
        seglen = plen + 1 if fin else plen
        if seglen == 0:
            ok = seq == rnxt if wnd == 0 else seq_in_window(seq, rnxt, wnd)
        elif wnd == 0 or seq == rnxt:
            ok = seq == rnxt
        else:
            ok = seq_in_window(seq, rnxt, wnd) or \
                seq_in_window(seq_add(seq, seglen - 1), rnxt, wnd)
        if not ok:
            c["unacceptable"] += 1
            out.append(self._ack(e, now))
            self._save(fid, e)
            return out
        if ts_on and seq_le(seq, rnxt):
            e[_TSR] = tsval                              # RFC 7323 §4.3

        # fifth: ACK.
        if not flags & ACK:
            self._save(fid, e)
            return self._drop("teardown_no_ack")
        ack = seg.ack
        una = e[_UNA]
        smax = e[_MAX]
        if seq_gt(ack, smax):
            out.append(self._ack(e, now))                # acks something not yet sent
            self._save(fid, e)
            return out
        side = self._side[fid]
        if seq_gt(ack, una):
            acked = seq_diff(ack, una)
            data = side[_S_DATA]
            k = acked if acked < len(data) else len(data)
            if k:
                side[_S_DATA] = data[k:]
                self.stored_bytes -= k
                c["bytes_acked"] += k
            e[_UNA] = ack
            e[_RETRIES] = 0
            e[_DUPS] = 0
            if ack == smax:                              # our FIN is acknowledged
                e[_FLAGS] &= ~F_RECOVER
                if state == LAST_ACK:
                    return self._finish(fid, e, TEARDOWN_END_CLOSED, out)
                if state == FIN_WAIT_1:
                    state = e[_STATE] = FIN_WAIT_2
                    self.wheel.schedule(fid, now + self.fin_timeout)
                elif state == CLOSING:
                    if self._time_wait(fid, e, now, out):
                        return out
                    state = TIME_WAIT
            else:
                if e[_FLAGS] & F_RECOVER:                # RFC 6582 §3.2 step 4
                    c["retransmits_partial"] += 1
                    out.append(self._first_segment(e, side, now))
                self._arm_rto(fid, e, now)
        elif ack == una and not plen and not fin and una != smax and \
                seg.window == e[_PWIN]:
            c["dupacks"] += 1                            # RFC 5681 §2
            d = e[_DUPS]
            if d < _DUPTHRESH:
                d += 1
                e[_DUPS] = d
                if d == _DUPTHRESH:                      # RFC 5681 §3.2: on the 3rd only;
                    c["retransmits_fast"] += 1           # further holes: partial ACKs/RTO
                    e[_FLAGS] |= F_RECOVER
                    out.append(self._first_segment(e, side, now))
        e[_PWIN] = seg.window

        # seventh: text. Acknowledged and discarded; after the peer's FIN, ignored.
        need_ack = False
        if plen and (state == FIN_WAIT_1 or state == FIN_WAIT_2):
            need_ack = True
            d = seq_diff(rnxt, seq)
            if 0 <= d < plen:
                n = plen - d
                if n > wnd:
                    n = wnd                              # beyond the advertised window
                rnxt = e[_RNXT] = (rnxt + n) & MASK
                side[_S_RCVD] += n
                c["bytes_received"] += n

        # eighth: FIN.
        if fin:
            need_ack = True
            if (state == FIN_WAIT_1 or state == FIN_WAIT_2) and \
                    seq_add(seq, plen) == rnxt:
                e[_RNXT] = (rnxt + 1) & MASK
                if state == FIN_WAIT_1:
                    e[_STATE] = CLOSING                  # the RTO stays armed
                else:
                    out.append(self._ack(e, now))
                    if not self._time_wait(fid, e, now, out):
                        self._save(fid, e)
                    return out
        if need_ack:
            out.append(self._ack(e, now))
        self._save(fid, e)
        return out

    def _time_wait_segment(self, fid, e, frame, seg, now):
        """A peer segment in TIME-WAIT: ``tcp.timewait.verdict``, the host's rules."""
        flags = seg.flags
        tsval = seg.tsval
        v = tw_verdict(flags, seg.seq, seg.ack, len(seg.payload), tsval, e[_RNXT], e[_MAX],
                       e[_WIN], e[_WS] & 15, e[_FLAGS] & F_TS, e[_TSR])
        a = v & ACTION
        c = self.counters
        if a == REMOVE:
            return self._finish(fid, e, TEARDOWN_END_RESET, [])
        if a == REOPEN:                                  # RFC 6191: on to the listener,
            c["syn_reopen"] += 1                         # behind the report
            out = self._finish(fid, e, TEARDOWN_END_CLOSED, [])
            out.append((LISTENER, frame))
            return out
        if v & UPDATE_TS:
            e[_TSR] = tsval
        if a == CHALLENGE_ACK:
            if not challenge_ok(e, now):                 # RFC 5961 §7: over the limit
                return self._drop("teardown_challenge_limited")
            c["challenge_acks"] += 1
        elif a == SEND_ACK:
            if v & PAWS:
                c["paws_drops"] += 1
            else:
                c["unacceptable"] += 1
            if v & RESTART:                              # the peer's FIN again
                c["time_wait_restarts"] += 1
                self.wheel.schedule(fid, now + e[_TW] / 1000.0)
        else:                                            # KEEP
            if v & UPDATE_TS:
                self._save(fid, e)
            if flags & RST:
                return self._drop("teardown_rst_outside")
            return [] if flags & ACK else self._drop("teardown_no_ack")
        out = [self._ack(e, now)]
        self._save(fid, e)
        return out

    # -- timers --------------------------------------------------------------------------

    def on_timer(self, now):
        """Expire the wheel up to `now`: retransmissions, RSTs and TeardownDone reports."""
        out = []
        for fid in self.wheel.advance(now):
            e = self._load(fid)
            if e is not None:
                expire(self, fid, e, self.counters, now, out)
        return out

    def _rst(self, e, now):
        return self._build(e, RST | ACK, e[_UNA], b"", now)

    def _retransmit(self, fid, e, now):
        return self._first_segment(e, self._side[fid], now)

    def __repr__(self):
        return "TeardownEngine(active=%d/%d, stored=%d B)" % (
            self.active, self.capacity, self.stored_bytes)
