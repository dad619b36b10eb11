"""One TCP connection (a TCB), sans-I/O.

Theory of operation
-------------------
Three kinds of input drive a ``TcpConnection``: arriving segments (``on_segment``),
user calls (``connect``, ``send``, ``recv``, ``shutdown``, ``close``, ``abort``) and
timers (``on_timer``). Its outputs are segments, handed to the ``output`` callback
already split into header fields, and app-visible status changes, announced through
``on_event``. It never reads a clock and never does I/O: ``now`` comes in with every call.

Arrival follows RFC 9293 §3.10.7 step by step. SYN-SENT and LISTEN have their own
procedures; TIME-WAIT has the one set of TIME-WAIT rules (``tcp.timewait.verdict``, shared
with the host's compact TIME-WAIT record and the NIC's teardown engine); every other
state goes through the ordered checks of §3.10.7.4 in ``_rcv_synchronized``: PAWS (RFC
7323 §5.3), sequence acceptability, RST (with the RFC 5961 §3 challenge ACK), SYN (RFC
5961 §4), ACK (with RFC 5961 §5 validation), text, FIN. Each check that changes state does so through ``_to(event)``, which looks the
transition up in ``tcp.fsm`` — the one place where all transitions are written down.
Header prediction takes the common segments with the same result in fewer steps:
``_fast_path`` (ESTABLISHED, and the handshake's last ACK in SYN-RECEIVED) and
``_fast_fin`` (the peer's FIN after ours, FIN-WAIT-1/2); anything unusual falls back
to the full procedure.

Sending: ``_output`` is the only place new data leaves. It sends what
min(SND.WND, cwnd) allows, with Nagle (§3.7.4) and sender-side silly-window avoidance
(§3.8.6.2.1); FIN rides on the last data segment. The send buffer holds everything from
the oldest unacknowledged byte; ``sbase`` is the sequence number of its first byte.

Loss recovery: fast retransmit after ``dupthresh`` duplicate ACKs; NewReno partial-ACK
handling (RFC 6582) when the peer does not do SACK, conservative SACK-based recovery
(RFC 6675) with a scoreboard when it does. An RTO (RFC 6298) backs off the timer, cuts
the window to one segment, forgets SACK state (RFC 2018 §8) and goes back to SND.UNA.

Receiving: in-order data goes to ``rcvbuf``; out-of-order data to a reassembly queue
that also produces SACK blocks. ACKs are delayed (``delayed_ack``) unless two full
segments are pending, a gap exists or is filled, so replies and FINs carry them.
The advertised right edge never moves left (§3.8.6.2.2 receiver SWS avoidance).

Opportunistic zero-copy (AccelTCP §5.2, ``config.zero_copy``): bytes are kept by
reference instead of copied when they cannot change under us -- an in-order segment's
payload (a slice of the received frame, ``bytes``) arriving at an empty ``rcvbuf``
becomes ``rcvbuf`` itself and is what ``recv`` returns; the app's ``bytes`` written to
an empty ``sndbuf`` becomes ``sndbuf``, sliced into the outgoing segments and the
teardown offer. A second append or a partial ``recv``/ACK turns the buffer back into a
``bytearray`` (one copy, as without zero-copy; ``tcp.buffers``). Anything else is
copied at ``send``: a ``bytearray`` or a view of one may change as soon as ``send``
returns, and even a view of ``bytes`` may be released by the app
(``with memoryview(b) as v: send(v)``).

Timers are absolute deadlines kept as attributes: retransmission, delayed ACK, persist
(zero-window probe and SWS override) and TIME-WAIT. ``next_deadline()`` is the earliest.

Connection-setup offload (AccelTCP §4.1): every TSval we send keeps bit 0 clear, the
NIC's SYN-cookie mark, so that only ACKs of the NIC's cookie SYN-ACKs are checked as
cookies. ``accept_cookie`` builds an ESTABLISHED TCB from a handshake the NIC completed
(a 0x090A NewConnection frame; ``nic.dataplane`` states the contract) without any SYN
having been seen here: CLOSED -> LISTEN -> SYN-RECEIVED -> ESTABLISHED through the
ordinary transitions, then the client's ACK (and the data riding on it) is processed as
an ordinary segment.
"""

import struct
from typing import NamedTuple

from . import fsm
from .buffers import joined, without_front
from .cc import make_congestion_control
from .config import TcpConfig
from .reassembly import ReassemblyQueue
from .rto import RtoEstimator
from .scoreboard import Scoreboard
from .tcbstate import export_state, import_state
from .timewait import (
    ACTION as TW_ACTION, CHALLENGE_ACK as TW_CHALLENGE_ACK, KEEP as TW_KEEP, PAWS as TW_PAWS,
    REMOVE as TW_REMOVE, REOPEN as TW_REOPEN, RESTART as TW_RESTART, TimeWait,
    UPDATE_TS as TW_UPDATE_TS, challenge_budget,
    verdict as tw_verdict,
)
from .seq import seq_add, seq_diff, seq_ge, seq_gt, seq_in_window, seq_le, seq_lt
from .states import (
    CLOSED, CLOSE_WAIT, CLOSING, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, LAST_ACK, LISTEN,
    STATE_NAMES, SYN_RECEIVED, SYN_SENT, TIME_WAIT,
)
from ..wire.tcp import ACK, FIN, PSH, RST, SYN, TSO_PAYLOAD_MAX, tcp_options

MASK = 0xFFFFFFFF
HALF = 0x80000000                  # inline modular comparisons: the tcp.seq definitions
SEQ_MOD = 1 << 32
DEFAULT_MSS = 536                  # RFC 9293 §3.7.1: send MSS when the peer sent none
PAWS_IDLE = 24 * 24 * 3600.0       # RFC 7323 §5.5: ts_recent is invalid after 24 days idle
MAX_WSCALE = 14                    # RFC 7323 §2.3
TS_OPTION = struct.Struct("!III")  # NOP, NOP, kind 8, len 10, TSval, TSecr
TS_HEAD = 0x0101080A
TEARDOWN_WAIT = "wait"             # teardown_offer: not yet (too much data in flight)
TS_MASK = 0xFFFFFFFE               # our TSvals keep bit 0 clear: the NIC's SYN-cookie mark
                                   # (docs/nic.md); clearing it keeps them non-decreasing
OOW_ACK_INTERVAL = 0.5             # at most one ACK per this to out-of-window segments
                                   # without data (Linux: tcp_invalid_ratelimit, 500 ms)
TIME_WAIT_TICK = 1.0 / 1024        # TIME-WAIT expiries are rounded up to this tick, so a
                                   # busy server reaps many in one timer run (Linux's
                                   # inet_twsk timers are wheel-slotted the same way)

# States in which the user may queue data, and in which queued data may be sent.
_SEND_OK = frozenset({SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT})
_OUTPUT_STATES = frozenset({ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK})
_RCV_DATA_STATES = frozenset({ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2})
# Entering these changes what the app (or the host's table) can see: established,
# end of input, gone. Moves between the closing states after CLOSE do not.
_NOTIFY_STATES = frozenset({SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT, CLOSED, LISTEN})
# fsm.TRANSITIONS keyed by ``state << 4 | event``: one int-keyed lookup per transition
# instead of building and hashing a tuple (the table itself stays in tcp.fsm).
_NEXT_STATE = {s << 4 | e: new for (s, e), new in fsm.TRANSITIONS.items()}

ERROR_EXCEPTIONS = {
    "reset": ConnectionResetError,
    "refused": ConnectionRefusedError,
    "timeout": TimeoutError,
}



class TeardownOffer(NamedTuple):
    """What ``TcpConnection.teardown_offer`` hands over: the rest of the connection, as
    plain values (the host's offload module turns it into the 0x090B Teardown frame)."""

    state: int          # ESTABLISHED or CLOSE_WAIT (tcp.states)
    seq: int            # SND.UNA: the first byte of `payload`
    ack: int            # RCV.NXT
    window: int         # our receive window field (already shifted by rcv_wscale)
    payload: bytes      # every byte not yet acknowledged
    mss: int
    rto: float          # the current RTO, seconds
    snd_wnd: int        # the peer's window in bytes (scaled)
    snd_wscale: int
    rcv_wscale: int
    sack_ok: bool
    timestamps: bool
    max_retries: int
    ts_recent: int
    ts_offset: int
    ts_last: int        # the TSval we would send now (0 without timestamps)
    time_wait: float    # TIME-WAIT length (2 MSL), seconds

class TcpConnection:
    __slots__ = (
        "config", "local_ip", "local_port", "remote_ip", "remote_port", "output",
        "on_event", "owner", "key", "state", "error", "closed", "app_closed", "passive",
        # send sequence space (RFC 9293 §3.3.1)
        "iss", "snd_una", "snd_nxt", "snd_max", "snd_wnd", "snd_wl1", "snd_wl2",
        "max_snd_wnd", "sbase", "sndbuf", "fin_queued",
        # receive sequence space
        "irs", "rcv_nxt", "rcv_adv", "rcvbuf", "reasm", "rcv_fin_seq", "fin_rcvd",
        # negotiated options
        "mss", "rcv_mss", "peer_mss", "wscale_ok", "snd_wscale", "rcv_wscale", "sack_ok", "ts_ok",
        "ts_offset", "ts_recent", "ts_recent_time", "last_ack_sent", "max_seg", "tso_max",
        # timers and estimators
        "t_rto", "t_dack", "t_persist", "t_tw", "rto", "retries", "persist_backoff",
        "rtt_seq", "rtt_time", "last_send", "challenge_window", "challenge_count",
        "oow_ack_time",
        # congestion control and recovery
        "cc", "dupacks", "in_recovery", "recover", "high_rxt", "scoreboard",
        # receive-side ACK policy
        "ack_pending", "full_segs",
        # app signalling; output is corked while the app's event callback runs
        "_snd_full", "_notify", "_corked", "_cork_now",
        # counters
        "segs_in", "segs_out", "bytes_in", "bytes_out", "retransmits",
        "fast_retransmits", "rto_timeouts", "dupacks_in", "ooo_segments",
        "paws_drops", "challenge_acks", "unacceptable", "window_probes", "oow_acks_limited",
        # lazy creation (tcp.quasi): called with (conn, reason) when a quasi-TCB becomes full
        "on_promote",
    )

    def __init__(self, config: TcpConfig, local_ip: bytes, local_port: int,
                 remote_ip: bytes, remote_port: int, iss: int, output, now: float):
        self.config = config
        self.local_ip = local_ip
        self.local_port = local_port
        self.remote_ip = remote_ip
        self.remote_port = remote_port
        self.output = output
        self.on_event = None
        self.owner = None
        self.key = None
        self.state = CLOSED
        self.error = None
        self.closed = False
        self.app_closed = False
        self.passive = False

        iss &= MASK
        self.iss = iss
        self.snd_una = self.snd_nxt = self.snd_max = iss
        self.snd_wnd = self.snd_wl1 = self.snd_wl2 = self.max_snd_wnd = 0
        self.sbase = (iss + 1) & MASK         # the SYN takes one sequence number
        self.sndbuf = bytearray()
        self.fin_queued = False

        self.irs = self.rcv_nxt = self.rcv_adv = 0
        self.rcvbuf = bytearray()
        self.reasm = None                     # created at the first out-of-order segment
        self.rcv_fin_seq = None
        self.fin_rcvd = False

        self.peer_mss = DEFAULT_MSS
        self.mss = self.rcv_mss = config.mss if config.mss < DEFAULT_MSS else DEFAULT_MSS
        self.max_seg = self.mss
        self.tso_max = 0                      # set by a host whose device does TSO
        self.snd_wscale = self.rcv_wscale = 0
        self.wscale_ok = self.sack_ok = self.ts_ok = False
        # RFC 7323 §5.4 / RFC 7323 §7.1: a per-connection random-looking TS offset.
        self.ts_offset = (iss * 2654435761 + 0x5BD1E995) & MASK
        self.ts_recent = 0
        self.ts_recent_time = now
        self.last_ack_sent = 0

        self.t_rto = self.t_dack = self.t_persist = self.t_tw = None
        self.rto = RtoEstimator(config.initial_rto, config.min_rto, config.max_rto)
        self.retries = 0
        self.persist_backoff = 0
        self.rtt_seq = None
        self.rtt_time = 0.0
        self.last_send = now
        self.challenge_window = now
        self.challenge_count = 0
        self.oow_ack_time = now - OOW_ACK_INTERVAL

        self.cc = make_congestion_control(config.cc, self.mss, config.initial_window)
        self.dupacks = 0
        self.in_recovery = False
        self.recover = iss
        self.high_rxt = iss
        self.scoreboard = None

        self.ack_pending = False
        self.full_segs = 0
        self._snd_full = False
        self._notify = False
        self._corked = False
        self._cork_now = None

        self.segs_in = self.segs_out = self.bytes_in = self.bytes_out = 0
        self.retransmits = self.fast_retransmits = self.rto_timeouts = 0
        self.dupacks_in = self.ooo_segments = self.paws_drops = 0
        self.challenge_acks = self.unacceptable = self.window_probes = 0
        self.oow_acks_limited = 0
        self.on_promote = None

    def __repr__(self):
        return (f"<TcpConnection {self.local_port}->{self.remote_port} "
                f"{STATE_NAMES[self.state]}>")

    # ------------------------------------------------------------ app-visible status
    @property
    def readable(self) -> bool:
        return bool(self.rcvbuf) or self.fin_rcvd or self.error is not None

    @property
    def eof(self) -> bool:
        return self.fin_rcvd and not self.rcvbuf

    @property
    def writable(self) -> bool:
        return (self.state == ESTABLISHED or self.state == CLOSE_WAIT) and \
            not self.fin_queued and len(self.sndbuf) < self.config.snd_buf

    @property
    def send_space(self) -> int:
        if self.fin_queued or self.state not in _SEND_OK:
            return 0
        space = self.config.snd_buf - len(self.sndbuf)
        return space if space > 0 else 0

    @property
    def unacked(self) -> int:
        """Bytes sent or queued but not yet acknowledged (FIN excluded)."""
        return len(self.sndbuf)

    @property
    def stats(self) -> dict:
        return {
            "state": STATE_NAMES[self.state], "segs_in": self.segs_in,
            "segs_out": self.segs_out, "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out, "retransmits": self.retransmits,
            "fast_retransmits": self.fast_retransmits,
            "rto_timeouts": self.rto_timeouts, "dupacks_in": self.dupacks_in,
            "ooo_segments": self.ooo_segments, "paws_drops": self.paws_drops,
            "challenge_acks": self.challenge_acks, "unacceptable": self.unacceptable,
            "window_probes": self.window_probes, "oow_acks_limited": self.oow_acks_limited,
            "srtt": self.rto.srtt,
            "rto": self.rto.rto, "cwnd": self.cc.cwnd, "ssthresh": self.cc.ssthresh,
            "mss": self.mss, "snd_wscale": self.snd_wscale,
            "rcv_wscale": self.rcv_wscale, "sack": self.sack_ok,
            "timestamps": self.ts_ok, "error": self.error,
        }

    # ------------------------------------------------------------------ user calls
    def listen(self) -> None:
        """Passive OPEN on a bare TCB (the host stack uses ``accept_syn`` instead)."""
        self._to(fsm.APP_LISTEN)

    def connect(self, now: float) -> None:
        """Active OPEN: send a SYN with our options (RFC 9293 §3.10.1)."""
        self._to(fsm.APP_CONNECT)
        self._send_syn(now, SYN)
        self._flush_events()

    def accept_syn(self, seg, now: float) -> None:
        """A listener's SYN: go LISTEN → SYN-RECEIVED and answer with SYN,ACK."""
        if self.state == CLOSED:
            self._to(fsm.APP_LISTEN)
        self._rcv_listen(seg, now)
        self._flush_events()

    def accept_cookie(self, seg, hdr, now: float, syn_window: int = 0xFFFF) -> None:
        """Take over a handshake the NIC completed with a SYN cookie (AccelTCP §4.1).

        ``seg``: the client's ACK (from ``wire.control.unwrap``); ``hdr``: the NIC's
        ``NewConnection`` header, i.e. the client's options decoded from the cookie. Our
        side of the negotiation is this TCB's config: the listener's ``Listen`` offer was
        made from it. ``syn_window``: the (unscaled) window of the NIC's SYN-ACK. The
        contract is the one ``nic.dataplane``'s docstring lists: irs = SEG.SEQ - 1,
        iss = SEG.ACK - 1, options as ``_negotiate`` would have settled them, TS.Recent =
        SEG.TSval and our TSvals >= ``hdr.ts_base`` (the client's PAWS, RFC 7323 §5).
        """
        self._to(fsm.APP_LISTEN)
        self.passive = True
        seq = seg.seq
        ack = seg.ack
        self.irs = (seq - 1) & MASK
        self.rcv_nxt = self.last_ack_sent = seq
        # The NIC offered syn_window in its SYN-ACK: never move that right edge left
        # (RFC 9293 §3.8.6.2.2).
        self.rcv_adv = (seq + syn_window) & MASK
        self._set_options(hdr.mss, hdr.wscale, hdr.sack_ok,
                          seg.tsval if hdr.timestamps else None, now)
        if self.ts_ok:
            # Start our TS clock just past the cookie TSval: (ts_base + 1) & ~1 >= ts_base.
            self.ts_offset = (hdr.ts_base + 1 - int(now * self.config.ts_hz)) & MASK
        self._to(fsm.RCV_SYN)
        self.iss = self.recover = self.high_rxt = (ack - 1) & MASK
        self.snd_una = self.snd_nxt = self.snd_max = self.sbase = ack
        self.snd_wnd = self.max_snd_wnd = seg.window << self.snd_wscale
        self.snd_wl1 = seq
        self.snd_wl2 = ack
        if hdr.rtt_us != 0xFFFFFFFF:
            self.rto.on_rtt_sample(hdr.rtt_us / 1e6)
        self._to(fsm.RCV_ACK_OF_SYN)
        self.on_segment(seg, now)          # payload / FIN of the ACK; announces ESTABLISHED

    def send(self, data, now: float) -> int:
        """Queue data; returns how many bytes were taken (0 when the buffer is full)."""
        if self.error is not None:
            raise ERROR_EXCEPTIONS[self.error](self.error)
        if self.fin_queued or self.state not in _SEND_OK:
            raise BrokenPipeError("connection is closing or not open")
        space = self.config.snd_buf - len(self.sndbuf)
        n = len(data)
        if n > space:
            n = space if space > 0 else 0
            self._snd_full = True
            if n == 0:
                return 0
            data = data[:n]
        self.sndbuf = joined(self.sndbuf, data, self.config.zero_copy)
        if n == space:
            self._snd_full = True                # announce when space opens again
        if self.state == ESTABLISHED or self.state == CLOSE_WAIT:
            self._output(now)
        return n

    def recv(self, maxlen: int = 1 << 30, now: float | None = None) -> bytes:
        """Take up to ``maxlen`` in-order bytes; b"" when none (check ``eof``/``error``)."""
        buf = self.rcvbuf
        if not buf:
            return b""
        if maxlen >= len(buf):
            maxlen = len(buf)
            # a segment's payload kept by reference is handed over as it is
            data = buf if buf.__class__ is bytes else bytes(buf)
        else:
            data = bytes(buf[:maxlen])           # of bytes: that slice, not a copy of it
        self.rcvbuf = without_front(buf, maxlen)
        if self.state in _RCV_DATA_STATES:
            self._maybe_window_update(now if now is not None else self.last_send)
        return data

    def shutdown(self, now: float) -> None:
        """Half-close: a FIN follows the queued data (RFC 9293 §3.10.4 CLOSE)."""
        state = self.state
        if self.fin_queued or state in (CLOSED, TIME_WAIT):
            return
        if state == LISTEN or state == SYN_SENT:
            self._to(fsm.APP_CLOSE)
            self._flush_events()
            return
        self.fin_queued = True
        if state == ESTABLISHED or state == CLOSE_WAIT or state == SYN_RECEIVED:
            self._to(fsm.APP_CLOSE)
        self._output(now)
        self._flush_events()

    def close(self, now: float) -> None:
        """Full close. Unread data makes it an abort (RFC 2525 §2.17), as in Linux."""
        self.app_closed = True
        if self.rcvbuf and self.state != CLOSED:
            self.abort(now)
            return
        self.shutdown(now)

    def abort(self, now: float) -> None:
        """ABORT: RST to a synchronized peer, then CLOSED (RFC 9293 §3.10.5)."""
        state = self.state
        if state == CLOSED:
            return
        if state not in (LISTEN, SYN_SENT, TIME_WAIT):
            self._emit(RST | ACK, self.snd_max, b"", now)
        self.app_closed = True
        self._to(fsm.APP_ABORT)
        self._flush_events()

    def _window_field(self) -> int:
        """The window field we advertise now (RCV.WND >> our shift, at most 0xFFFF)."""
        wnd = (self.rcv_adv - self.rcv_nxt) & MASK
        wnd = 0 if wnd >= 0x80000000 else wnd >> self.rcv_wscale
        return wnd if wnd < 0xFFFF else 0xFFFF

    def handoff_time_wait(self, now: float) -> TimeWait:
        """Hand TIME-WAIT to a compact record (``tcp.timewait``); this TCB is done."""
        cfg = self.config
        tw = TimeWait(self.owner, self.key, self.output, self.snd_max, self.rcv_nxt,
                      self._window_field(), self.rcv_wscale, self.ts_ok,
                      self.ts_offset, cfg.ts_hz, self.ts_recent, self.ts_recent_time,
                      self.t_tw, cfg.time_wait, self.challenge_window, self.challenge_count)
        self._to(fsm.HANDOFF, now)
        self._flush_events()
        return tw

    def teardown_offer(self, now: float):
        """The rest of this connection as a NIC teardown (AccelTCP §4.2).

        Eligible: ESTABLISHED or CLOSE_WAIT, our FIN not yet queued, nothing unread,
        and everything unacknowledged fits the peer's window and the congestion window
        at once (the NIC sends it in one flight), with nothing out of order or in
        recovery. -> a ``TeardownOffer``: what the NIC continues from (seq = SND.UNA,
        all unacknowledged data; the offload module builds the wire message from it);
        ``TEARDOWN_WAIT`` when only the amount of data (or a recovery in progress)
        stands in the way, so that sending on may make it eligible; None when the NIC
        may not take it. With an offer, output corked during the app's callback is
        cancelled, so nothing leaves meanwhile; the caller then calls ``handoff`` (the
        NIC took it) or ``close`` (it did not)."""
        state = self.state
        if (state != ESTABLISHED and state != CLOSE_WAIT) or self.fin_queued \
                or self.rcvbuf or self.snd_una != self.sbase:
            return None
        n = len(self.sndbuf)
        if n > self.snd_wnd or n > self.cc.cwnd or n > TSO_PAYLOAD_MAX or self.reasm \
                or self.in_recovery:
            return TEARDOWN_WAIT
        cfg = self.config
        wnd = (self.rcv_adv - self.rcv_nxt) & MASK
        wnd = 0 if wnd >= HALF else wnd >> self.rcv_wscale      # what we advertise now
        ts = (int(now * cfg.ts_hz) + self.ts_offset) & TS_MASK if self.ts_ok else 0
        self._cork_now = None
        return TeardownOffer(state, self.snd_una, self.rcv_nxt, min(wnd, 0xFFFF),
                             bytes(self.sndbuf), self.mss, self.rto.rto, self.snd_wnd,
                             self.snd_wscale, self.rcv_wscale, self.sack_ok, self.ts_ok,
                             cfg.max_retries, self.ts_recent, self.ts_offset, ts,
                             cfg.time_wait)

    def handoff(self, now: float, notify: bool = True) -> None:
        """The NIC took the connection over (teardown or splice): CLOSED here, without
        sending anything. ``notify=False``: no event (the owner removes it itself)."""
        self._to(fsm.HANDOFF, now)
        if notify:
            self._flush_events()
        else:
            self._notify = False

    def export_state(self):
        """This TCB's whole state as a plain value (``tcp.tcbstate.TcbState``): what a
        TCP Chimney offload or upload carries. The TCB itself is left unchanged."""
        return export_state(self)

    @classmethod
    def from_state(cls, state, output, now: float = 0.0):
        """A TCB restored from ``export_state``'s value, sending through ``output``
        (ValueError when ``state`` is not a valid one)."""
        return import_state(state, output, now)

    # --------------------------------------------------------------------- timers
    def next_deadline(self):
        d = self.t_rto
        t = self.t_dack
        if t is not None and (d is None or t < d):
            d = t
        t = self.t_persist
        if t is not None and (d is None or t < d):
            d = t
        t = self.t_tw
        if t is not None and (d is None or t < d):
            d = t
        return d

    def on_timer(self, now: float) -> None:
        if self.t_tw is not None:
            if now >= self.t_tw:
                self._to(fsm.TIMEOUT_2MSL, now)
                self._flush_events()
            return
        if self.t_rto is not None and now >= self.t_rto:
            self.t_rto = None
            self._on_rto(now)
        if self.t_persist is not None and now >= self.t_persist:
            self.t_persist = None
            self._on_persist(now)
        if self.t_dack is not None and now >= self.t_dack:
            self.t_dack = None
            if self.ack_pending:
                self._send_ack(now)
        self._flush_events()

    def _on_rto(self, now: float) -> None:
        """RFC 6298 §5.4-5.6 with RFC 5681 §3.1 window reduction."""
        if self.snd_una == self.snd_max or self.state == CLOSED:
            return
        if self.snd_wnd == 0 and self.syn_acked and seq_diff(self.snd_max, self.snd_una) <= 1:
            # Only a window probe is out: the persist timer owns it (§3.8.6.1), and a
            # closed window is no reason to give up on the connection.
            if self.t_persist is None:
                self.t_persist = now + self.rto.rto
            return
        self.retries += 1
        state = self.state
        handshaking = state == SYN_SENT or not self.syn_acked
        limit = self.config.syn_retries if handshaking else self.config.max_retries
        if self.retries > limit:
            self._fail("timeout", fsm.TIMEOUT, now, send_rst=not handshaking)
            return
        self.rto.backoff()
        self.rto_timeouts += 1
        self.rtt_seq = None                       # Karn: no samples from retransmissions
        if state == SYN_SENT:
            self._send_syn(now, SYN)
            return
        if not self.syn_acked:                    # SYN-RECEIVED (or closed while in it)
            self._send_syn(now, SYN | ACK)
            return
        self.cc.on_rto(now, seq_diff(self.snd_max, self.snd_una))
        self.in_recovery = False
        self.dupacks = 0
        self.recover = self.snd_max               # RFC 6582 §3.2 step 1 after a timeout
        if self.scoreboard is not None:
            self.scoreboard.clear()               # RFC 2018 §8
        self.snd_nxt = self.snd_una               # go back N, in slow start
        self._output(now)
        if self.t_rto is None:
            self.t_rto = now + self.rto.rto

    def _on_persist(self, now: float) -> None:
        """Zero-window probe, or the SWS override timer (RFC 9293 §3.8.6.1, §3.8.6.2.1)."""
        if self.state not in _OUTPUT_STATES:
            return
        avail = len(self.sndbuf) - seq_diff(self.snd_nxt, self.sbase)
        if avail <= 0:
            return
        if self.snd_wnd == 0:
            # Probe with one byte at SND.UNA (new data if nothing is in flight).
            self.window_probes += 1
            off = seq_diff(self.snd_una, self.sbase)
            self._emit(ACK, self.snd_una, bytes(self.sndbuf[off:off + 1]), now)
            if self.snd_nxt == self.snd_una:
                self.snd_nxt = seq_add(self.snd_nxt, 1)
                if seq_gt(self.snd_nxt, self.snd_max):
                    self.snd_max = self.snd_nxt
            self.persist_backoff += 1
            interval = min(self.rto.rto * (1 << min(self.persist_backoff, 10)), self.config.max_rto)
            self.t_persist = now + interval
        else:
            self._output(now, force=True)

    # ------------------------------------------------------------- segment arrival
    def on_segment(self, seg, now: float) -> None:
        self.segs_in += 1
        state = self.state
        if state == ESTABLISHED or state == SYN_RECEIVED:
            if self._fast_path(seg, now):
                self._flush_events()
                return
        elif state == FIN_WAIT_1 or state == FIN_WAIT_2:
            if self._fast_fin(seg, now):
                self._flush_events()
                return
        if state == SYN_SENT:
            self._rcv_syn_sent(seg, now)
        elif state == LISTEN:
            self._rcv_listen(seg, now)
        elif state == TIME_WAIT:
            self._rcv_time_wait(seg, now)
        elif state != CLOSED:
            self._rcv_synchronized(seg, now)
        self._flush_events()

    def _fast_path(self, seg, now: float) -> bool:
        """Header prediction (Van Jacobson; Linux's tcp_rcv_established fast path).

        The common ESTABLISHED segment — ACK flag only (PSH allowed), exactly at RCV.NXT,
        no SACK blocks, timestamp not older than TS.Recent, nothing in reassembly, not
        in loss recovery, ACK within [SND.UNA, SND.MAX], data within the window — gets
        the same result as the full §3.10.7.4 procedure with far fewer steps. Anything
        else returns False and takes the full procedure.

        The same holds in SYN-RECEIVED for the handshake's last ACK (the first data may
        ride on it) when it acknowledges our SYN and nothing is queued to send yet: the
        full procedure's "fifth, SYN-RECEIVED" step (ESTABLISHED) is done here, and the
        rest is exactly the ESTABLISHED case with nothing newly acknowledged.
        """
        if seg.flags & 0xF7 != ACK or seg.seq != self.rcv_nxt or seg.sack_blocks or \
                self.in_recovery or self.reasm:
            return False
        ack = seg.ack
        acked = (ack - self.snd_una) & MASK
        if acked > ((self.snd_max - self.snd_una) & MASK):
            return False
        handshake = self.state == SYN_RECEIVED
        if handshake and (not acked or self.sndbuf or self.fin_queued):
            return False                                  # no ACK of our SYN, or data queued
        tsval = seg.tsval
        if self.ts_ok:
            if tsval is None or ((tsval - self.ts_recent) & MASK) >= 0x80000000:
                return False
            if seg.seq == self.last_ack_sent:
                self.ts_recent = tsval                    # RFC 7323 §4.3
                self.ts_recent_time = now
        payload = seg.payload
        n = len(payload)
        if n and n > ((self.rcv_adv - self.rcv_nxt) & MASK):
            return False
        if handshake:
            self._ack_of_syn(seg, now)            # RTT sample, SND.UNA = SEG.ACK, timer off
            self._to(fsm.RCV_ACK_OF_SYN)
            acked = 0                             # our SYN was all there was to acknowledge
        wnd = seg.window << self.snd_wscale
        if acked:
            # RTT sample (RFC 7323 §4.2, or Karn's timed segment), free acked data.
            self._sample_rtt(seg.tsecr, ack, now)
            flight = (self.snd_max - self.snd_una) & MASK
            self.snd_una = ack
            if ((ack - self.snd_nxt) & MASK) < 0x80000000:
                self.snd_nxt = ack
            buf = self.sndbuf
            k = (ack - self.sbase) & MASK
            if k >= len(buf):
                k = len(buf)
            self.sndbuf = buf = without_front(buf, k)
            self.sbase = (self.sbase + k) & MASK
            self.retries = 0
            self.dupacks = 0
            self.t_rto = None if ack == self.snd_max else now + self.rto.rto
            self.cc.on_ack(acked, now, self.rto.srtt, flight)
            if self._snd_full and len(buf) < self.config.snd_buf:
                self._snd_full = False
                self._notify = True
        elif not n and wnd == self.snd_wnd and self.snd_una != self.snd_max:
            return False                                  # a duplicate ACK: full path
        self._set_window(seg.seq, ack, wnd, now)   # SEG.SEQ == RCV.NXT: never older
        if n:
            if self.app_closed:
                self.abort(now)
                return True
            self.rcvbuf = joined(self.rcvbuf, payload, self.config.zero_copy)
            self.rcv_nxt = (self.rcv_nxt + n) & MASK
            self.bytes_in += n
            self._notify = True
            self.ack_pending = True
            if n >= self.rcv_mss:
                self.full_segs += 1
            self._ack_policy(now)
        if (acked or wnd) and (self.fin_queued or
                               len(self.sndbuf) > ((self.snd_nxt - self.sbase) & MASK)):
            self._output(now)                             # only if something is unsent
        return True

    def _fast_fin(self, seg, now: float) -> bool:
        """The peer's FIN after ours (FIN-WAIT-1/2): the common end of a connection we
        closed first, by a FIN,ACK (no data) exactly at RCV.NXT that acknowledges all we
        sent, our FIN included, with room for it in the window, no SACK blocks, nothing
        in reassembly, not in loss recovery, timestamp not older than TS.Recent. Gets
        the same result as the full §3.10.7.4 procedure: ACK (our FIN acked: FIN-WAIT-2),
        window update, FIN (TIME-WAIT, ACK sent). Anything else returns False.
        """
        # Modular arithmetic inline, as in _fast_path (this runs once per connection).
        ack = seg.ack
        if seg.flags & 0xF7 != ACK | FIN or seg.seq != self.rcv_nxt or seg.payload or \
                seg.sack_blocks or self.in_recovery or self.reasm or self.fin_rcvd or \
                self.rcv_fin_seq is not None or ack != self.snd_max or not self.fin_queued or \
                ack != (self.sbase + len(self.sndbuf) + 1) & MASK:
            return False                                  # ... or our FIN is not sent yet
        if not 0 < ((self.rcv_adv - self.rcv_nxt) & MASK) <= HALF:
            return False                                  # a zero window: the FIN is dropped
        tsval = seg.tsval
        if self.ts_ok:
            if tsval is None or ((tsval - self.ts_recent) & MASK) >= HALF:
                return False
            if seg.seq == self.last_ack_sent:
                self.ts_recent = tsval                    # RFC 7323 §4.3
                self.ts_recent_time = now
        acked = (ack - self.snd_una) & MASK
        if acked:                                         # FIN-WAIT-1: ours is acked now
            self._sample_rtt(seg.tsecr, ack, now)
            flight = (self.snd_max - self.snd_una) & MASK
            self.snd_una = ack
            if ((self.snd_nxt - ack) & MASK) > HALF:     # seq_lt(snd_nxt, ack)
                self.snd_nxt = ack
            self.sbase = (self.sbase + len(self.sndbuf)) & MASK  # all data acked, FIN too
            self.sndbuf = without_front(self.sndbuf, len(self.sndbuf))
            self.retries = 0
            self.t_rto = None
            self.dupacks = 0
            self.cc.on_ack(acked, now, self.rto.srtt, flight)
            if self._snd_full:                            # the buffer is empty now
                self._snd_full = False
                self._notify = True
            self._to(fsm.RCV_ACK_OF_FIN, now)            # FIN-WAIT-1 -> FIN-WAIT-2
        self._set_window(seg.seq, ack, seg.window << self.snd_wscale, now)
        self.rcv_fin_seq = seg.seq
        self._rcv_fin(now)
        return True

    def _rcv_listen(self, seg, now: float) -> None:
        """RFC 9293 §3.10.7.2."""
        flags = seg.flags
        if flags & RST:
            return
        if flags & ACK:
            self._send_rst_for(seg, now)
            return
        if not flags & SYN:
            return
        self.passive = True
        self.irs = seg.seq
        self.rcv_nxt = self.rcv_adv = (seg.seq + 1) & MASK     # seq_add
        self._negotiate(seg, now)
        self.snd_wnd = seg.window                 # RFC 7323 §2.2: SYN windows are unscaled
        self.max_snd_wnd = self.snd_wnd
        self.snd_wl1 = seg.seq
        self._to(fsm.RCV_SYN)
        self._send_syn(now, SYN | ACK)

    def _rcv_syn_sent(self, seg, now: float) -> None:
        """RFC 9293 §3.10.7.3."""
        flags = seg.flags
        ack_ok = False
        if flags & ACK:
            if seq_le(seg.ack, self.iss) or seq_gt(seg.ack, self.snd_max):
                if not flags & RST:
                    self._send_rst_for(seg, now)
                return
            ack_ok = True
        if flags & RST:
            if ack_ok:                            # RFC 5961 §3.2: only with an acceptable ACK
                self._fail("refused", fsm.RCV_RST, now)
            return
        if not flags & SYN:
            return
        self.irs = seg.seq
        self.rcv_nxt = self.rcv_adv = seq_add(seg.seq, 1)
        self._negotiate(seg, now)
        self.snd_wnd = seg.window
        self.max_snd_wnd = seg.window
        self.snd_wl1 = seg.seq
        self.snd_wl2 = seg.ack
        if ack_ok:
            self._ack_of_syn(seg, now)
            self._to(fsm.RCV_SYN_ACK)
            if seg.payload:
                self._rcv_text(seg.payload, seq_add(seg.seq, 1), now)
            self.ack_pending = True
            self._output(now)
            self._flush_events()                 # the app may answer at once
            if self.ack_pending and self.state != CLOSED:
                self._send_ack(now)
        else:
            self._to(fsm.RCV_SYN)                 # simultaneous open
            self._send_syn(now, SYN | ACK)

    def _rcv_time_wait(self, seg, now: float) -> None:
        """TIME-WAIT: the rules of ``tcp.timewait.verdict``, the same pure function the
        host's TIME-WAIT record and the NIC's teardown engine call, so that a TCB, the
        record that replaces it and the NIC answer every segment alike (RFC 9293
        §3.10.7.4, RFC 5961, RFC 6191, RFC 7323). The answers keep this TCB's own rate
        limits: a challenge ACK within the RFC 5961 §7 budget (``challenge_budget``), an ACK
        to a segment without data, SYN or FIN at most one per OOW_ACK_INTERVAL.
        REOPEN (a new incarnation's SYN, RFC 6191) ends TIME-WAIT and leaves the SYN to
        the owner: a closed TCB takes no segment, its listener does."""
        flags = seg.flags
        plen = len(seg.payload)
        tsval = seg.tsval
        v = tw_verdict(flags, seg.seq, seg.ack, plen, tsval, self.rcv_nxt, self.snd_max,
                       self._window_field(), self.rcv_wscale, self.ts_ok, self.ts_recent)
        if v & TW_UPDATE_TS:
            self.ts_recent = tsval
            self.ts_recent_time = now
        a = v & TW_ACTION
        if a == TW_KEEP:
            return
        if a == TW_REMOVE:
            self._fail(None, fsm.RCV_RST, now)
        elif a == TW_REOPEN:
            self._to(fsm.RCV_NEW_SYN, now)
        elif a == TW_CHALLENGE_ACK:
            self._challenge_ack(now)
        else:                                     # SEND_ACK
            if v & TW_PAWS:
                self.paws_drops += 1
            if v & TW_RESTART:
                self._to(fsm.RCV_FIN, now)        # the peer's FIN again: restart 2MSL
            self._oow_ack(plen + (flags & FIN), now)

    def _rcv_synchronized(self, seg, now: float) -> None:
        """RFC 9293 §3.10.7.4, in order: every state but CLOSED, LISTEN, SYN-SENT and
        TIME-WAIT (``_rcv_time_wait``)."""
        flags = seg.flags
        seq = seg.seq
        payload = seg.payload
        state = self.state

        # A retransmitted SYN in SYN-RECEIVED: answer again (or, for the SYN,ACK of a
        # simultaneous open, drop the SYN and keep the ACK: RFC 9293 Figure 7 line 6).
        if flags & SYN and state == SYN_RECEIVED and seq == self.irs:
            if not flags & ACK:
                self._send_syn(now, SYN | ACK)
                return
            flags &= ~SYN
            seq = seq_add(seq, 1)

        # RFC 7323 §5.3 PAWS, before the sequence number check.
        tsval = seg.tsval
        if self.ts_ok and tsval is not None and not flags & RST:
            if seq_lt(tsval, self.ts_recent) and now - self.ts_recent_time < PAWS_IDLE:
                self.paws_drops += 1
                if flags & SYN:
                    self._challenge_ack(now)      # RFC 5961 §4.2 (as Linux: syn_challenge)
                else:
                    self._oow_ack(len(payload) + (flags & FIN), now)
                return

        # first: sequence number acceptability (§3.10.7.4, the four cases)
        plen = len(payload)
        seglen = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        rcv_nxt = self.rcv_nxt
        wnd = seq_diff(self.rcv_adv, rcv_nxt)
        if wnd < 0:
            wnd = 0
        if seglen == 0:
            ok = seq == rcv_nxt if wnd == 0 else seq_in_window(seq, rcv_nxt, wnd)
        elif wnd == 0:
            # Zero window: no data fits, but ACK and RST of a segment at RCV.NXT count.
            ok = False
            if seq == rcv_nxt:
                ok = True
                payload = b""
                plen = 0
                flags &= ~FIN
                self.ack_pending = True
                self.full_segs = self.config.ack_every
        else:
            ok = seq_in_window(seq, rcv_nxt, wnd) or \
                seq_in_window(seq_add(seq, seglen - 1), rcv_nxt, wnd)
        if not ok:
            self.unacceptable += 1
            if flags & RST:
                return
            if flags & SYN:
                # RFC 5961 §4.2: a SYN, whatever its sequence number, gets the
                # rate-limited challenge ACK (an unlimited ACK would let blind SYNs
                # make us send as many ACKs)
                self._challenge_ack(now)
                return
            self._oow_ack(seglen, now)
            return

        # RFC 7323 §4.3: remember the timestamp of the segment at the window's left edge
        # (not a SYN's: it is only challenged below, RFC 5961 §4.2, as Linux does).
        if tsval is not None and self.ts_ok and not flags & SYN \
                and seq_le(seq, self.last_ack_sent) and seq_ge(tsval, self.ts_recent):
            self.ts_recent = tsval
            self.ts_recent_time = now

        # second: RST (RFC 5961 §3.2: only an exact RCV.NXT match resets)
        if flags & RST:
            if seq == rcv_nxt:
                if state in (CLOSING, LAST_ACK):
                    self._fail(None, fsm.RCV_RST, now)
                elif state == SYN_RECEIVED:
                    # Passive: the listener stays in LISTEN, this child just goes away.
                    self._fail(None if self.passive else "refused", fsm.RCV_RST, now)
                else:
                    self._fail("reset", fsm.RCV_RST, now)
            else:
                self._challenge_ack(now)
            return

        # fourth: SYN in a synchronized state (RFC 5961 §4.2)
        if flags & SYN:
            self._challenge_ack(now)
            return

        # fifth: ACK
        if not flags & ACK:
            return
        ack = seg.ack
        if state == SYN_RECEIVED:
            if seq_gt(ack, self.snd_una) and seq_le(ack, self.snd_max):
                self._ack_of_syn(seg, now)
                self._to(fsm.RCV_ACK_OF_SYN)
                self.snd_wnd = seg.window << self.snd_wscale
                self.snd_wl1 = seq
                self.snd_wl2 = ack
            else:
                self._send_rst_for(seg, now)
                return
        if seq_gt(ack, self.snd_max):
            self._oow_ack(seglen, now)            # acks something not yet sent
            return
        if seq_lt(ack, seq_add(self.snd_una, -self.max_snd_wnd)):
            self._challenge_ack(now)              # RFC 5961 §5.2
            return
        self._rcv_ack(seg, seq, ack, plen, flags, now)
        state = self.state
        if state == CLOSED:
            return

        # seventh: text (URG is not supported: urgent data is delivered inline, RFC 6093)
        if plen:
            if state in _RCV_DATA_STATES:
                self._rcv_text(payload, seq, now)
                if self.state == CLOSED:          # data after close(): aborted
                    return
            # after the peer's FIN, data "should not occur" (§3.10.7.4): ignore it

        # eighth: FIN
        if flags & FIN:
            fin_seq = seq_add(seq, plen)
            if self.rcv_fin_seq is None and seq_ge(fin_seq, self.rcv_nxt) and \
                    seq_le(fin_seq, self.rcv_adv):
                self.rcv_fin_seq = fin_seq
        if self.rcv_fin_seq is not None and not self.fin_rcvd and self.rcv_fin_seq == self.rcv_nxt:
            self._rcv_fin(now)
        elif self.ack_pending:
            self._ack_policy(now)

    def _rcv_ack(self, seg, seq: int, ack: int, plen: int, flags: int, now: float) -> None:
        """ACK processing for synchronized states: §3.10.7.4 fifth check, RFC 5681/6582/6675."""
        acked = seq_diff(ack, self.snd_una)
        old_wnd = self.snd_wnd
        sb = self.scoreboard
        if sb is None and seg.sack_blocks and self.sack_ok:
            sb = self.scoreboard = Scoreboard(self.mss, self.config.dupthresh)
        if sb is not None and (seg.sack_blocks or sb.has_sack_info):
            sb.update(ack if acked > 0 else self.snd_una, seg.sack_blocks, self.snd_max)
        if acked > 0:
            flight = seq_diff(self.snd_max, self.snd_una)
            # RTT sample: timestamps (RFC 7323 §4.2) or one timed segment (Karn, RFC 6298 §3)
            self._sample_rtt(seg.tsecr, ack, now)
            self.snd_una = ack
            if seq_lt(self.snd_nxt, ack):
                self.snd_nxt = ack
            n = seq_diff(ack, self.sbase)
            if n > 0:
                if n > len(self.sndbuf):
                    n = len(self.sndbuf)
                self.sndbuf = without_front(self.sndbuf, n)
                self.sbase = seq_add(self.sbase, n)
            self.retries = 0
            self.t_rto = None if ack == self.snd_max else now + self.rto.rto
            if self.in_recovery:
                if seq_ge(ack, self.recover):
                    self.in_recovery = False      # full ACK: leave recovery
                    self.dupacks = 0
                    self.cc.on_exit_recovery(now)
                elif not self.sack_ok:
                    # RFC 6582 §3.2 step 4: partial ACK
                    self._retransmit(self.snd_una, now)
                    cwnd = self.cc.cwnd - acked
                    if acked >= self.mss:
                        cwnd += self.mss
                    self.cc.cwnd = max(cwnd, self.mss)
            else:
                self.dupacks = 0
                self.cc.on_ack(acked, now, self.rto.srtt, flight)
            if self._snd_full and len(self.sndbuf) < self.config.snd_buf:
                self._snd_full = False
                self._notify = True
            if self.fin_queued and ack == seq_add(self.sbase, 1) and not self.sndbuf:
                self._fin_acked(now)
                if self.state == CLOSED:
                    return
        elif acked == 0 and plen == 0 and not flags & (SYN | FIN) and \
                self.snd_una != self.snd_max and \
                ((seg.window << self.snd_wscale) == old_wnd or seg.sack_blocks):
            self.dupacks += 1                      # RFC 5681 §2 / RFC 6675 §2 duplicate ACK
            self.dupacks_in += 1
            if self.in_recovery and not self.sack_ok:
                self.cc.cwnd += self.mss           # RFC 6582 §3.2 step 3: inflate

        # window update (§3.10.7.4: only from a newer segment)
        if seq_lt(self.snd_wl1, seq) or (self.snd_wl1 == seq and seq_le(self.snd_wl2, ack)):
            self._set_window(seq, ack, seg.window << self.snd_wscale, now)

        if not self.in_recovery and self.snd_una != self.snd_max and \
                seq_gt(self.snd_una, self.recover):
            if self.sack_ok:
                trigger = self.dupacks >= self.config.dupthresh or \
                    (sb is not None and sb.is_lost(self.snd_una))
            else:
                trigger = self.dupacks == self.config.dupthresh
            if trigger:
                self._enter_recovery(now)
        self._output(now)

    def _set_window(self, seq: int, ack: int, wnd: int, now: float) -> None:
        """SND.WND from a segment the caller found new enough (§3.10.7.4); an opening
        window ends zero-window probing, and what the probe left in flight is timed."""
        self.snd_wl1 = seq
        self.snd_wl2 = ack
        self.snd_wnd = wnd
        if wnd > self.max_snd_wnd:
            self.max_snd_wnd = wnd
        if wnd and self.t_persist is not None:
            self.t_persist = None
            self.persist_backoff = 0
            if self.snd_una != self.snd_max and self.t_rto is None:
                self.t_rto = now + self.rto.rto

    def _sample_rtt(self, tsecr, ack: int, now: float) -> None:
        """An ACK of new data: RTT from the echoed timestamp (RFC 7323 §4.2), else from
        the one timed segment, never a retransmitted one (Karn, RFC 6298 §3)."""
        if self.ts_ok and tsecr:
            ticks = (int(now * self.config.ts_hz) + self.ts_offset - tsecr) & MASK
            if ticks < 0x7FFFFFFF:
                self.rto.on_rtt_sample(ticks / self.config.ts_hz)
        elif self.rtt_seq is not None and ((ack - self.rtt_seq) & MASK) < HALF:
            self.rto.on_rtt_sample(now - self.rtt_time)     # seq_ge(ack, rtt_seq)
            self.rtt_seq = None

    def _enter_recovery(self, now: float) -> None:
        """Fast retransmit / fast recovery (RFC 5681 §3.2, RFC 6582 §3.2, RFC 6675 §5)."""
        self.in_recovery = True
        self.recover = self.snd_max
        self.fast_retransmits += 1
        self.rtt_seq = None
        self.cc.on_enter_recovery(now, seq_diff(self.snd_max, self.snd_una))
        end = None
        if self.sack_ok:
            if self.scoreboard is None:           # dup ACKs that carried no SACK blocks
                self.scoreboard = Scoreboard(self.mss, self.config.dupthresh)
            hole = self.scoreboard.next_seg(self.snd_una, self.snd_max, self.snd_una)
            if hole is not None and hole[0] == self.snd_una:
                end = seq_add(self.snd_una, hole[1])
        end = self._retransmit(self.snd_una, now, end)
        if self.sack_ok:
            self.high_rxt = end
        else:
            self.cc.cwnd = self.cc.ssthresh + self.config.dupthresh * self.mss

    def _rcv_text(self, payload, seq: int, now: float) -> None:
        """Seventh check: accept in-window data, in order or into reassembly."""
        rcv_nxt = self.rcv_nxt
        d = seq_diff(rcv_nxt, seq)
        if d > 0:                                  # already have the front part
            payload = payload[d:]
            seq = rcv_nxt
            if not payload:                        # a duplicate: ACK at once (RFC 5681 §4.2)
                self.ack_pending = True
                self.full_segs = self.config.ack_every
                return
        excess = seq_diff(seq_add(seq, len(payload)), self.rcv_adv)
        if excess > 0:                             # beyond what we advertised
            payload = payload[:len(payload) - excess]
            if not payload:
                return
        if self.app_closed:
            # The app will never read this: tell the peer (RFC 9293 §3.10.4, RFC 2525 §2.17).
            self.abort(now)
            return
        n = len(payload)
        if seq == rcv_nxt:
            self.rcvbuf = joined(self.rcvbuf, payload, self.config.zero_copy)
            nxt = seq_add(rcv_nxt, n)
            if self.reasm:
                more, nxt = self.reasm.pop_ready(nxt)
                if more:
                    self.rcvbuf = joined(self.rcvbuf, more, self.config.zero_copy)
                self.full_segs = self.config.ack_every   # a hole was filled: ACK now
            # bytes_in: each byte once, when it joins the in-order stream (a segment held
            # out of order, or received twice, is not counted again)
            self.bytes_in += seq_diff(nxt, rcv_nxt)
            self.rcv_nxt = nxt
            self._notify = True
            if n >= self.rcv_mss:
                self.full_segs += 1
            self.ack_pending = True
        else:
            self.ooo_segments += 1
            if self.reasm is None:
                self.reasm = ReassemblyQueue()
            self.reasm.add(seq, payload, rcv_nxt)
            self.full_segs = self.config.ack_every       # out of order: immediate dup ACK
            self.ack_pending = True

    def _rcv_fin(self, now: float) -> None:
        """Eighth check: the peer's FIN is in sequence."""
        self.fin_rcvd = True
        self.rcv_nxt = (self.rcv_nxt + 1) & MASK
        self._notify = True
        self.ack_pending = True
        state = self.state
        self._to(fsm.RCV_FIN, now)
        if state == ESTABLISHED:
            # Delay the ACK: an app that closes now sends FIN,ACK in one segment.
            self._ack_policy(now)
        else:
            self._send_ack(now)

    def _fin_acked(self, now: float) -> None:
        state = self.state
        if state == FIN_WAIT_1 or state == CLOSING or state == LAST_ACK:
            self._to(fsm.RCV_ACK_OF_FIN, now)

    def _ack_policy(self, now: float) -> None:
        """Delayed ACK (RFC 9293 §3.8.6.3, RFC 5681 §4.2)."""
        if not self.ack_pending:
            return
        delay = self.config.delayed_ack
        if self.full_segs >= self.config.ack_every or delay <= 0:
            self._send_ack(now)
        elif self.t_dack is None:
            self.t_dack = now + delay

    # ------------------------------------------------------------------- handshake
    def _negotiate(self, seg, now: float) -> None:
        """Options from the peer's SYN (RFC 9293 §3.7.1, RFC 7323 §2.2/§3.2, RFC 2018 §2)."""
        self._set_options(seg.mss, seg.wscale, seg.sack_permitted, seg.tsval, now)

    def _set_options(self, peer_mss, peer_wscale, peer_sack, peer_tsval, now: float) -> None:
        """Settle the options from what the peer's SYN carried (``_negotiate``) or what
        the NIC's cookie recorded of it (``accept_cookie``)."""
        cfg = self.config
        if peer_mss:
            self.peer_mss = peer_mss
        # Each option is in use only if both sides sent it; on the active side "we sent
        # it" is our config, on the passive side our SYN,ACK answers only what was offered.
        self.wscale_ok = peer_wscale is not None and cfg.wscale is not None
        if self.wscale_ok:
            self.snd_wscale = min(peer_wscale, MAX_WSCALE)
            self.rcv_wscale = min(cfg.wscale, MAX_WSCALE)
        else:
            self.snd_wscale = self.rcv_wscale = 0
        self.sack_ok = cfg.sack and peer_sack
        self.ts_ok = cfg.timestamps and peer_tsval is not None
        if self.ts_ok:
            self.ts_recent = peer_tsval
            self.ts_recent_time = now
        opt = 12 if self.ts_ok else 0
        mss = self.peer_mss if self.peer_mss < cfg.mss else cfg.mss
        self.mss = self.max_seg = mss - opt if mss - opt > 64 else 64
        t = self.tso_max
        if t > self.mss:                          # TSO: whole multiples of the MSS
            self.max_seg = t - t % self.mss
        self.rcv_mss = cfg.mss - opt if cfg.mss - opt > 64 else 64
        self.cc.set_mss(self.mss)

    def _ack_of_syn(self, seg, now: float) -> None:
        """Our SYN is acknowledged: RTT sample, stop the handshake timer."""
        if self.retries == 0:
            self.rto.on_rtt_sample(now - self.rtt_time)
        else:
            # RFC 6298 §5.7: RTO of 3 s after a lost SYN; RFC 5681 §3.1: window of 1 MSS.
            self.rto.on_syn_timeout_established()
            self.cc.on_syn_loss()
        self.snd_una = ack = seg.ack
        if ((self.snd_nxt - ack) & MASK) > HALF:      # seq_lt(snd_nxt, ack), inline
            self.snd_nxt = ack
        self.retries = 0
        self.t_rto = None
        self.rtt_seq = None
        self._notify = True

    @property
    def syn_acked(self) -> bool:
        return seq_gt(self.snd_una, self.iss)

    def _send_syn(self, now: float, flags: int) -> None:
        cfg = self.config
        tsval = (int(now * cfg.ts_hz) + self.ts_offset) & TS_MASK
        if flags & ACK:                           # SYN,ACK: answer only what was offered
            opts = tcp_options(
                mss=cfg.mss,
                wscale=self.rcv_wscale if self.wscale_ok else None,
                sack_permitted=self.sack_ok,
                timestamps=(tsval, self.ts_recent) if self.ts_ok else None)
        else:
            opts = tcp_options(mss=cfg.mss, wscale=cfg.wscale, sack_permitted=cfg.sack,
                               timestamps=(tsval, 0) if cfg.timestamps else None)
        wnd = cfg.rcv_buf if cfg.rcv_buf < 0xFFFF else 0xFFFF   # SYN windows are unscaled
        self.output(self, flags, self.iss, self.rcv_nxt if flags & ACK else 0, wnd, opts, b"")
        self.segs_out += 1
        if self.snd_nxt == self.iss:
            self.snd_nxt = self.snd_max = (self.iss + 1) & MASK    # seq_add
            self.rtt_time = now
        else:
            self.retransmits += 1
        if flags & ACK:
            self.rcv_adv = (self.rcv_nxt + wnd) & MASK     # seq_add
            self.last_ack_sent = self.rcv_nxt
        self.last_send = now
        self.t_rto = now + self.rto.rto

    # ----------------------------------------------------------------------- output
    def _output(self, now: float, force: bool = False) -> None:
        """Send new data (and the FIN) as the windows allow."""
        if self._corked:
            self._cork_now = now                # sent when the app's callback returns
            return
        if self.in_recovery and self.sack_ok:
            self._sack_output(now)
            return
        buf = self.sndbuf
        if len(buf) <= ((self.snd_nxt - self.sbase) & MASK) and not self.fin_queued:
            return                              # nothing unsent (the common case)
        if self.state not in _OUTPUT_STATES or self.snd_una == self.iss:
            return                              # ... or our SYN is not acked yet
        mss = self.mss
        while True:
            nxt = self.snd_nxt
            off = (nxt - self.sbase) & MASK
            avail = len(buf) - off
            if avail <= 0:
                if avail == 0 and self.fin_queued:
                    self._emit(ACK | FIN, nxt, b"", now)
                    self._advance(nxt, 1, now)
                break
            flight = (nxt - self.snd_una) & MASK
            if flight == 0 and now - self.last_send > self.rto.rto:
                self.cc.on_idle_restart(now, self.rto.rto)  # RFC 5681 §4.1
            wnd = self.cc.cwnd
            if self.snd_wnd < wnd:
                wnd = self.snd_wnd
            usable = wnd - flight
            if usable <= 0:
                if self.snd_wnd == 0 and flight == 0 and self.t_persist is None:
                    self.t_persist = now + self.rto.rto
                break
            n = avail
            if n > usable:
                n = usable
            if n > self.max_seg:
                n = self.max_seg
            if n < mss and not force:
                if n == avail:
                    # Nagle (§3.7.4): one small segment in flight at a time.
                    if flight and not self.config.nodelay and not self.fin_queued:
                        break
                elif n < (self.max_snd_wnd >> 1):
                    # Sender SWS avoidance: wait for a useful window.
                    if flight == 0 and self.t_persist is None:
                        self.t_persist = now + self.rto.rto
                    break
            force = False
            last = n == avail
            flags = ACK | PSH if last else ACK
            fin = last and self.fin_queued
            if fin:
                flags |= FIN
            # one copy of the bytes (slicing a bytearray would copy them twice)
            self._emit(flags, nxt, bytes(buf) if off == 0 and last else
                       bytes(buf[off:off + n]), now)
            if nxt != self.snd_max:             # resending after an RTO rollback
                self.retransmits += 1
            self._advance(nxt, n + 1 if fin else n, now)
            if last:
                break                           # all sent (and the FIN with it, if queued)

    def _advance(self, seq: int, length: int, now: float) -> None:
        # Per segment sent: modular arithmetic inline (seq_add, seq_gt(nxt, snd_max)).
        nxt = (seq + length) & MASK
        self.snd_nxt = nxt
        if ((self.snd_max - nxt) & MASK) >= 0x80000000:
            if self.rtt_seq is None and not self.ts_ok:
                self.rtt_seq = nxt
                self.rtt_time = now
            self.snd_max = nxt
        if self.t_rto is None:
            self.t_rto = now + self.rto.rto

    def _sack_output(self, now: float) -> None:
        """RFC 6675 §5 step (C): send while cwnd - pipe allows, lost data first."""
        sb = self.scoreboard
        mss = self.mss
        buf = self.sndbuf
        while True:
            if self.cc.cwnd - sb.pipe(self.snd_una, self.snd_max, self.high_rxt) < mss:
                break
            nxt = self.snd_nxt
            off = seq_diff(nxt, self.sbase)
            avail = len(buf) - off
            room = self.snd_wnd - seq_diff(nxt, self.snd_una)
            hole = sb.next_seg(self.snd_una, self.snd_max, self.high_rxt,
                               avail > 0 and room > 0)
            if hole is not None:                   # NextSeg rules 1 and 3
                start, n = hole
                end = self._retransmit(start, now, seq_add(start, n))
                if seq_gt(end, self.high_rxt):
                    self.high_rxt = end
                continue
            # NextSeg rule 2: new data, if the receive window has room.
            if avail <= 0 or room <= 0:
                if avail == 0 and self.fin_queued:
                    self._emit(ACK | FIN, nxt, b"", now)
                    self._advance(nxt, 1, now)
                break
            n = min(avail, room, mss)
            fin = n == avail and self.fin_queued
            self._emit(ACK | FIN | PSH if fin else ACK, nxt, bytes(buf[off:off + n]), now)
            self._advance(nxt, n + 1 if fin else n, now)
            if fin:
                break

    def _retransmit(self, seq: int, now: float, end: int | None = None) -> int:
        """Resend one segment starting at ``seq`` (up to ``end``); returns where it ends."""
        off = seq_diff(seq, self.sbase)
        buf = self.sndbuf
        n = len(buf) - off
        if n > self.mss:
            n = self.mss
        if end is not None and seq_diff(end, seq) < n:
            n = seq_diff(end, seq)
        if n < 0:
            n = 0
        flags = ACK
        fin = self.fin_queued and off + n == len(buf) and \
            seq_gt(self.snd_max, seq_add(self.sbase, len(buf)))
        if fin:
            flags |= FIN
        if n == 0 and not fin:
            return seq
        self._emit(flags, seq, bytes(buf[off:off + n]) if n else b"", now)
        self.retransmits += 1
        if self.t_rto is None:
            self.t_rto = now + self.rto.rto
        return seq_add(seq, n + 1 if fin else n)

    def _emit(self, flags: int, seq: int, payload, now: float) -> None:
        """Every non-SYN segment leaves here: options, window, ACK bookkeeping."""
        rcv_nxt = self.rcv_nxt
        cfg = self.config
        opts = b""
        if self.ts_ok and not flags & RST:
            tsval = (int(now * cfg.ts_hz) + self.ts_offset) & TS_MASK
            if self.sack_ok and self.reasm:
                opts = tcp_options(timestamps=(tsval, self.ts_recent),
                                   sack_blocks=self.reasm.sack_blocks(3))
            else:
                opts = TS_OPTION.pack(TS_HEAD, tsval, self.ts_recent)
        elif self.sack_ok and self.reasm and not flags & RST:
            opts = tcp_options(sack_blocks=self.reasm.sack_blocks(4))
        # Receive window (§3.8.6.2.2): offer new space only in useful amounts, never
        # move the right edge left; round up to the scale so it cannot shrink.
        # (Modular arithmetic inline: this runs for every segment we send.)
        space = cfg.rcv_buf - len(self.rcvbuf)
        adv = self.rcv_adv
        wnd = (adv - rcv_nxt) & MASK
        if wnd >= 0x80000000:
            wnd = 0
        if space > wnd:
            grow = space - wnd                    # how far the right edge could move
            if grow >= self.rcv_mss or grow >= (cfg.rcv_buf >> 1) or wnd < self.rcv_mss:
                wnd = space
        shift = self.rcv_wscale
        field = (wnd + (1 << shift) - 1) >> shift
        if field > 0xFFFF:
            field = 0xFFFF
        adv2 = (rcv_nxt + (field << shift)) & MASK
        if ((adv2 - adv) & MASK) < 0x80000000:
            self.rcv_adv = adv2
        self.output(self, flags, seq, rcv_nxt, field, opts, payload)
        self.segs_out += 1
        n = len(payload)
        if n:
            # bytes_out: each byte once, the first time it is sent (the callers advance
            # SND.MAX after this; retransmissions are counted in ``retransmits``)
            new = (seq + n - self.snd_max) & MASK
            if new < 0x80000000:
                self.bytes_out += new if new < n else n
        self.last_send = now
        if flags & ACK:
            self.ack_pending = False
            self.full_segs = 0
            self.t_dack = None
            self.last_ack_sent = rcv_nxt

    def _send_ack(self, now: float) -> None:
        # SND.MAX, not SND.NXT: after an RTO rolls SND.NXT back, the peer has already
        # seen sequence numbers up to SND.MAX and would find an older one unacceptable.
        self._emit(ACK, self.snd_max, b"", now)

    def _oow_ack(self, seglen: int, now: float) -> None:
        """The ACK RFC 9293 §3.10.7.4 sends for an unacceptable segment (or one that
        acks data not yet sent). For one without data, SYN or FIN, at most one per
        OOW_ACK_INTERVAL: two ends that disagree about the sequence space (one of them
        took an injected segment) would otherwise answer each other's ACKs forever, an
        ACK loop (Linux: tcp_oow_rate_limited). A segment with data always gets its ACK
        (loss recovery needs it)."""
        if not seglen:
            if now - self.oow_ack_time < OOW_ACK_INTERVAL:
                self.oow_acks_limited += 1
                return
            self.oow_ack_time = now
        self._send_ack(now)

    def _challenge_ack(self, now: float) -> None:
        """RFC 5961 §3.2/§4.2/§5.2, rate-limited per §7 (``tcp.timewait.challenge_budget``,
        CHALLENGE_ACKS_PER_SECOND: the limit the TIME-WAIT record inherits)."""
        send, self.challenge_window, self.challenge_count = challenge_budget(
            now, self.challenge_window, self.challenge_count)
        if not send:
            return
        self.challenge_acks += 1
        self._send_ack(now)

    def _send_rst_for(self, seg, now: float) -> None:
        """RST answering an unacceptable ACK: <SEQ=SEG.ACK><CTL=RST> (§3.10.7)."""
        self.output(self, RST, seg.ack, 0, 0, b"", b"")
        self.segs_out += 1

    def _maybe_window_update(self, now: float) -> None:
        """After the app read: announce a window that grew usefully (§3.8.6.2.2).

        A peer that is (nearly) blocked hears at once; otherwise the update waits for
        the next segment or the delayed-ACK timer, as Linux's __tcp_cleanup_rbuf does.
        """
        cur = (self.rcv_adv - self.rcv_nxt) & MASK     # seq_diff(rcv_adv, rcv_nxt), inline
        if cur > HALF:
            cur -= SEQ_MOD
        new = self.config.rcv_buf - len(self.rcvbuf)
        if new - cur < self.rcv_mss:
            return
        if cur < 2 * self.rcv_mss:
            self._send_ack(now)
        elif new >= 2 * cur:
            self.ack_pending = True
            if self.t_dack is None:
                self.t_dack = now + (self.config.delayed_ack or 0.0)

    # ---------------------------------------------------------------- transitions
    def _to(self, event: int, now: float = 0.0) -> None:
        new = _NEXT_STATE.get(self.state << 4 | event)
        if new is None:
            raise fsm.IllegalTransition(self.state, event)
        self.state = new
        if new in _NOTIFY_STATES:
            self._notify = True
        if new == TIME_WAIT:                       # (re)start 2MSL
            self.t_rto = self.t_persist = self.t_dack = None
            self.t_tw = -(-(now + self.config.time_wait) // TIME_WAIT_TICK) * TIME_WAIT_TICK
        elif new == CLOSED:
            self.t_rto = self.t_persist = self.t_dack = self.t_tw = None
            self.closed = True

    def _fail(self, error, event: int, now: float, send_rst: bool = False) -> None:
        if send_rst:
            self._emit(RST | ACK, self.snd_max, b"", now)
        self.error = error
        self.sndbuf = b""
        self._to(event, now)

    def _flush_events(self) -> None:
        """Tell the app, with output corked: whatever it writes (and a close) during the
        callback leaves as few segments as possible, e.g. a reply with its FIN."""
        if self._notify:
            self._notify = False
            cb = self.on_event
            if cb is not None:
                self._corked = True
                try:
                    cb(self)
                finally:
                    self._corked = False
                now = self._cork_now
                if now is not None:
                    self._cork_now = None
                    self._output(now)
