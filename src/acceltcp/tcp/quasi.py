"""The quasi-TCB: lazy TCB creation for connections born established (AccelTCP §5.2).

Theory of operation
-------------------
A connection whose handshake someone else completed -- the NIC's SYN cookie (a 0x090A
NewConnection frame) or the host's own cookie -- is born ESTABLISHED from one segment,
the client's ACK, often with the request riding on it. Most such connections of a
short-lived workload then see exactly one exchange: the app reads the request, writes
the reply and closes, and with teardown offload the reply and the close go straight to
the NIC (0x090B). Such a connection never needs what a full ``TcpConnection`` builds
at birth: the RTO estimator, the congestion controller, the retransmission, persist and
TIME-WAIT machinery, the reassembly and recovery state and most of the counters.

``QuasiTcb.from_cookie`` builds, instead of a full TCB, a ``QuasiTcb`` holding only
what that first exchange reads: the two sequence spaces' edges, the negotiated
options, the request (``rcvbuf``), the reply (``sndbuf``), the delayed-ACK deadline and
two counters. It does so only when the first segment is the common one (the segment
the full TCB's header prediction would take, data that does not call for an immediate
ACK); otherwise it returns None and the caller builds the full TCB as before.

While quasi, the connection serves: the app's event, more of the request (in-order
segments the full TCB's header prediction would take without sending an ACK at once:
a kernel client sends its request after a bare handshake ACK), ``recv`` (with the
receive-window bookkeeping of a full TCB), ``send`` inside the app's callback (output
is corked there: nothing leaves yet), ``teardown_offer`` and ``handoff`` (the NIC took
it). Everything else first *promotes* it: ``_promote`` fills in every other slot with the
value the full TCB would hold after the same inputs and switches ``__class__`` to
``TcpConnection`` (a ``QuasiTcb`` is a ``TcpConnection`` subclass with no slots of its
own, so the object -- the one the app and the host's tables hold -- stays the same);
the call then runs as the full TCB's. Promotion happens on: any other segment (data
out of order or calling for an ACK now, a FIN, a RST, a SYN, an ACK of something, an
old timestamp: ``data``/``fin``/``rst``/``syn``/``ack``), a timer
(``timer``: the delayed ACK fell due), output (``send``: data to put on the wire,
``ack``: an ACK to send now, e.g. for a window update), ``close``/``shutdown``/
``abort``, a handoff that must notify, TIME-WAIT, and -- the safety net -- a read of
any slot the quasi does not hold (``attr``: ``__getattr__`` runs only for those).
``on_promote(conn, reason)`` (set by the owner) is told each time. A connection
handed to the NIC while quasi is freed without ever becoming a full TCB.

The rule that keeps it honest: a quasi-TCB sends nothing, and a promotion yields
exactly the state the full TCB would have had, so the frames a host sends do not
depend on whether its TCBs are created lazily (the host's differential test).
"""

from .cc import INFINITE_SSTHRESH, initial_window, make_congestion_control
from .connection import (DEFAULT_MSS, HALF, MASK, MAX_WSCALE, OOW_ACK_INTERVAL, TS_MASK,
                         TEARDOWN_WAIT, TcpConnection, TeardownOffer)
from .buffers import joined
from .rto import RtoEstimator
from .states import CLOSED, ESTABLISHED, STATE_NAMES
from ..wire.tcp import ACK, FIN, RST, SYN, TSO_PAYLOAD_MAX

__all__ = ["QuasiTcb", "PROMOTE_REASONS"]

#: Why a quasi-TCB became a full one (``on_promote``'s second argument).
PROMOTE_REASONS = ("data", "fin", "rst", "syn", "ack", "timer", "send", "ack_now", "close",
                   "shutdown", "abort", "handoff", "time_wait", "attr")

_SLOTS = frozenset(TcpConnection.__slots__)
_NO_RTT = 0xFFFFFFFF


def _initial_rto(cfg):
    """RtoEstimator(initial_rto, min_rto, max_rto).rto, without building one."""
    r = cfg.initial_rto
    if r < cfg.min_rto:
        return cfg.min_rto
    if r > cfg.max_rto:
        return cfg.max_rto
    return r


class QuasiTcb(TcpConnection):
    """A connection holding only what its first exchange needs (module docstring)."""

    __slots__ = ()

    @classmethod
    def from_cookie(cls, config, local_ip, local_port, remote_ip, remote_port, output, seg,
                    hdr, now, syn_window=0xFFFF):
        """The quasi-TCB of a handshake completed with a cookie -- what
        ``TcpConnection(...)`` + ``accept_cookie(seg, hdr, now, syn_window)`` would build,
        events not yet announced (``start``) -- or None when the first segment is not
        the common one (the caller then builds the full TCB)."""
        cfg = config
        payload = seg.payload
        n = len(payload)
        # The segment the full TCB's header prediction takes (ACK, PSH allowed, no
        # SACK blocks, the data inside the NIC's SYN-ACK window), no RTT sample to keep.
        if (seg.flags & 0xF7 != ACK or seg.sack_blocks or n > (syn_window & MASK)
                or hdr.rtt_us != _NO_RTT):
            return None
        # Option negotiation exactly as TcpConnection._set_options.
        peer_mss = hdr.mss if hdr.mss else DEFAULT_MSS
        opt = 0
        tsval = seg.tsval if hdr.timestamps else None
        ts_ok = cfg.timestamps and tsval is not None
        if ts_ok:
            opt = 12
        cmss = cfg.mss
        rcv_mss = cmss - opt if cmss - opt > 64 else 64
        t_dack = None
        if n:
            # RFC 9293 §3.8.6.3 / RFC 5681 §4.2: an ACK due at once is output: full TCB.
            if cfg.delayed_ack <= 0 or (1 if n >= rcv_mss else 0) >= cfg.ack_every:
                return None
            t_dack = now + cfg.delayed_ack
        self = cls.__new__(cls)
        self.config = cfg
        self.local_ip = local_ip
        self.local_port = local_port
        self.remote_ip = remote_ip
        self.remote_port = remote_port
        self.output = output
        self.on_event = self.owner = self.key = self.on_promote = None
        self.state = ESTABLISHED
        self.error = None
        self.closed = self.app_closed = self.fin_queued = self.fin_rcvd = False
        seq = seg.seq
        self.irs = (seq - 1) & MASK
        self.rcv_nxt = (seq + n) & MASK
        self.rcv_adv = (seq + syn_window) & MASK
        # opportunistic zero-copy (tcp.connection): the frame's bytes, kept by reference
        self.rcvbuf = joined(b"", payload, cfg.zero_copy)
        self.sndbuf = bytearray()
        self.snd_una = ack = seg.ack
        self.peer_mss = peer_mss
        m = peer_mss if peer_mss < cmss else cmss
        self.mss = m - opt if m - opt > 64 else 64
        self.rcv_mss = rcv_mss
        self.tso_max = 0
        ws = hdr.wscale
        if ws is not None and cfg.wscale is not None:
            self.wscale_ok = True
            self.snd_wscale = ws if ws < MAX_WSCALE else MAX_WSCALE
            self.rcv_wscale = cfg.wscale if cfg.wscale < MAX_WSCALE else MAX_WSCALE
        else:
            self.wscale_ok = False
            self.snd_wscale = self.rcv_wscale = 0
        self.snd_wnd = self.max_snd_wnd = seg.window << self.snd_wscale
        self.snd_wl1 = seq
        self.sack_ok = cfg.sack and hdr.sack_ok
        self.ts_ok = ts_ok
        self.ts_recent_time = self.last_send = now    # last_send: nothing sent yet
        if ts_ok:
            self.ts_recent = tsval
            # accept_cookie: our TS clock starts just past the cookie TSval
            self.ts_offset = (hdr.ts_base + 1 - int(now * cfg.ts_hz)) & MASK
        else:
            self.ts_recent = 0
            self.ts_offset = (((ack - 1) & MASK) * 2654435761 + 0x5BD1E995) & MASK
        self.t_dack = t_dack
        self.ack_pending = n > 0
        self.full_segs = 1 if n >= rcv_mss else 0
        self._notify = True                   # ESTABLISHED, announced by start()
        self._corked = False
        self._cork_now = None
        self.segs_in = 1
        self.bytes_in = n
        return self

    def start(self):
        """Announce the connection (ESTABLISHED, with its request) to ``on_event``: the
        full TCB's ``accept_cookie`` does this at its end."""
        self._flush_events()

    # ------------------------------------------------------------------ promotion
    def _promote(self, reason):
        """Become the full TCB: every slot not held gets the value a ``TcpConnection``
        would have after the same inputs (a quasi has sent nothing, received one
        segment, had no timer fire)."""
        self.__class__ = TcpConnection
        cfg = self.config
        born = self.last_send                # the birth: a quasi sends nothing
        una = self.snd_una
        self.iss = self.recover = self.high_rxt = (una - 1) & MASK
        self.snd_nxt = self.snd_max = self.sbase = una
        self.last_ack_sent = (self.irs + 1) & MASK     # no ACK sent since the cookie's
        self.snd_wl2 = una                   # every segment taken acked exactly SND.UNA
        self.passive = True
        self.reasm = self.rcv_fin_seq = None
        mss = self.mss
        t = self.tso_max
        self.max_seg = t - t % mss if t > mss else mss
        self.t_rto = self.t_persist = self.t_tw = None
        self.rto = RtoEstimator(cfg.initial_rto, cfg.min_rto, cfg.max_rto)
        self.retries = self.persist_backoff = self.challenge_count = 0
        self.rtt_seq = None
        self.rtt_time = 0.0
        self.challenge_window = born
        self.oow_ack_time = born - OOW_ACK_INTERVAL
        cc = make_congestion_control(cfg.cc, cfg.mss if cfg.mss < DEFAULT_MSS else DEFAULT_MSS,
                                     cfg.initial_window)
        cc.set_mss(mss)
        self.cc = cc
        self.dupacks = 0
        self.in_recovery = False
        self.scoreboard = None
        self._snd_full = False
        self.segs_out = self.bytes_out = self.retransmits = self.fast_retransmits = 0
        self.rto_timeouts = self.dupacks_in = self.ooo_segments = self.paws_drops = 0
        self.challenge_acks = self.unacceptable = self.window_probes = 0
        self.oow_acks_limited = 0
        hook = self.on_promote
        if hook is not None:
            hook(self, reason)

    def __getattr__(self, name):
        # Only for slots this quasi does not hold (set slots never get here).
        if name in _SLOTS and self.__class__ is QuasiTcb:
            self._promote("attr")
            return getattr(self, name)
        raise AttributeError(name)

    # ------------------------------------------------------------------ served quasi
    def next_deadline(self):
        return self.t_dack

    def send(self, data, now: float) -> int:
        # Inside the app's callback output is corked: the bytes only join sndbuf (and
        # may yet leave in a teardown offer). Everything else is the full TCB's.
        if self._corked and self.state == ESTABLISHED and not self.fin_queued:
            n = len(data)
            if n < self.config.snd_buf - len(self.sndbuf):
                self.sndbuf = joined(self.sndbuf, data, self.config.zero_copy)
                self._cork_now = now
                return n
        self._promote("send")
        return TcpConnection.send(self, data, now)

    def _output(self, now: float, force: bool = False) -> None:
        if self._corked:
            self._cork_now = now
            return
        if not self.sndbuf and not self.fin_queued:
            return                           # nothing unsent: the full TCB sends nothing
        self._promote("send")
        TcpConnection._output(self, now, force)

    def _send_ack(self, now: float) -> None:
        self._promote("ack_now")
        TcpConnection._send_ack(self, now)

    def _emit(self, flags: int, seq: int, payload, now: float) -> None:
        self._promote("send")
        TcpConnection._emit(self, flags, seq, payload, now)

    def teardown_offer(self, now: float):
        """``TcpConnection.teardown_offer`` from the quasi's fields (a quasi has nothing
        in flight, out of order or in recovery; its cwnd is still the initial window)."""
        if self.state != ESTABLISHED or self.fin_queued or self.rcvbuf:
            return None
        cfg = self.config
        n = len(self.sndbuf)
        if n > self.snd_wnd or n > initial_window(self.mss, cfg.initial_window) \
                or n > TSO_PAYLOAD_MAX:
            return TEARDOWN_WAIT
        wnd = (self.rcv_adv - self.rcv_nxt) & MASK
        wnd = 0 if wnd >= HALF else wnd >> self.rcv_wscale
        ts = (int(now * cfg.ts_hz) + self.ts_offset) & TS_MASK if self.ts_ok else 0
        self._cork_now = None
        return TeardownOffer(ESTABLISHED, self.snd_una, self.rcv_nxt, min(wnd, 0xFFFF),
                             bytes(self.sndbuf), self.mss, _initial_rto(cfg), self.snd_wnd,
                             self.snd_wscale, self.rcv_wscale, self.sack_ok, self.ts_ok,
                             cfg.max_retries, self.ts_recent, self.ts_offset, ts,
                             cfg.time_wait)

    def handoff(self, now: float, notify: bool = True) -> None:
        if notify or self.state != ESTABLISHED:
            self._promote("handoff")
            TcpConnection.handoff(self, now, notify)
            return
        self.state = CLOSED                  # fsm: ESTABLISHED --HANDOFF--> CLOSED
        self.t_dack = None
        self.closed = True
        self._notify = False

    def counter_values(self):
        """The TCB counters (``host.stats.TCB_COUNTERS`` order) without promoting."""
        return (self.segs_in, 0, self.bytes_in, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)

    @property
    def stats(self) -> dict:
        cfg = self.config
        return {
            "state": STATE_NAMES[self.state], "segs_in": self.segs_in, "segs_out": 0,
            "bytes_in": self.bytes_in, "bytes_out": 0, "retransmits": 0,
            "fast_retransmits": 0, "rto_timeouts": 0, "dupacks_in": 0, "ooo_segments": 0,
            "paws_drops": 0, "challenge_acks": 0, "unacceptable": 0, "window_probes": 0,
            "oow_acks_limited": 0, "srtt": None, "rto": _initial_rto(cfg),
            "cwnd": initial_window(self.mss, cfg.initial_window),
            "ssthresh": INFINITE_SSTHRESH, "mss": self.mss, "snd_wscale": self.snd_wscale,
            "rcv_wscale": self.rcv_wscale, "sack": self.sack_ok, "timestamps": self.ts_ok,
            "error": self.error,
        }

    def on_segment(self, seg, now: float) -> None:
        """More of the request (or a bare ACK) in order, while nothing was sent: taken as
        the full TCB's header prediction takes it. Anything else promotes."""
        if seg.flags & 0xF7 == ACK and self._take(seg, now):
            self._flush_events()
            return
        self._promote_for(seg)
        TcpConnection.on_segment(self, seg, now)

    def _take(self, seg, now: float) -> bool:
        """``TcpConnection._fast_path`` for a quasi (ESTABLISHED, nothing sent, nothing
        queued): checks first, so that False leaves everything as it was."""
        if (self.state != ESTABLISHED or seg.seq != self.rcv_nxt or seg.sack_blocks
                or seg.ack != self.snd_una or self.app_closed or self.sndbuf
                or self.fin_queued):
            return False
        cfg = self.config
        ts_ok = self.ts_ok
        if ts_ok:
            tsval = seg.tsval
            if tsval is None or ((tsval - self.ts_recent) & MASK) >= HALF:
                return False                          # PAWS (RFC 7323 §5) is full work
        payload = seg.payload
        n = len(payload)
        full = self.full_segs
        if n:
            if n > ((self.rcv_adv - self.rcv_nxt) & MASK):
                return False
            if n >= self.rcv_mss:
                full += 1
            if full >= cfg.ack_every or cfg.delayed_ack <= 0:
                return False                          # an ACK is due at once: output
        self.segs_in += 1
        if ts_ok and seg.seq == (self.irs + 1) & MASK:     # = Last.ACK.sent (§4.3)
            self.ts_recent = tsval
            self.ts_recent_time = now
        wnd = seg.window << self.snd_wscale           # _set_window (SND.WL2 = SND.UNA)
        self.snd_wl1 = seg.seq
        self.snd_wnd = wnd
        if wnd > self.max_snd_wnd:
            self.max_snd_wnd = wnd
        if n:
            self.rcvbuf = joined(self.rcvbuf, payload, self.config.zero_copy)
            self.rcv_nxt = (self.rcv_nxt + n) & MASK
            self.bytes_in += n
            self._notify = True
            self.ack_pending = True
            self.full_segs = full
            if self.t_dack is None:
                self.t_dack = now + cfg.delayed_ack
        return True

    # ------------------------------------------------------------------ promoting
    def _promote_for(self, seg):
        flags = seg.flags
        self._promote("rst" if flags & RST else "syn" if flags & SYN else
                      "fin" if flags & FIN else "data" if seg.payload else "ack")

    def on_timer(self, now: float) -> None:
        self._promote("timer")
        TcpConnection.on_timer(self, now)

    def shutdown(self, now: float) -> None:
        self._promote("shutdown")
        TcpConnection.shutdown(self, now)

    def close(self, now: float) -> None:
        self._promote("close")
        TcpConnection.close(self, now)

    def abort(self, now: float) -> None:
        self._promote("abort")
        TcpConnection.abort(self, now)

    def handoff_time_wait(self, now: float):
        self._promote("time_wait")
        return TcpConnection.handoff_time_wait(self, now)

    def __repr__(self):
        return (f"<QuasiTcb {self.local_port}->{self.remote_port} "
                f"{STATE_NAMES[self.state]}>")
