"""Congestion control behind a small interface: NewReno (RFC 5681/6582) and CUBIC (RFC 9438).

Contract between the connection and a ``CongestionControl`` (all sizes in bytes,
``now`` in seconds):

* ``cwnd`` / ``ssthresh`` are plain int attributes.  The connection may adjust
  ``cwnd`` itself only inside fast recovery (NewReno inflation/partial-ACK
  deflation, RFC 5681 §3.2 / RFC 6582 §3.2); ``on_exit_recovery`` and ``on_rto``
  reset it.  With SACK it uses RFC 6675 ``pipe`` against an untouched ``cwnd``.
* ``on_ack(acked, now, rtt, flight)``: an ACK advanced SND.UNA by ``acked`` bytes
  *outside* fast recovery (also during the slow start that follows an RTO).
  ``rtt`` is the current SRTT (or None if unknown); ``flight`` is FlightSize
  *before* this ACK, i.e. SND.NXT - old SND.UNA (or pipe + acked with SACK).
  ``flight`` drives cwnd validation: cwnd is not grown when ``2*flight < cwnd``
  (the sender is application/rwnd-limited; RFC 7661 spirit, RFC 9438 §5.8,
  Linux ``tcp_is_cwnd_limited``), so cwnd cannot grow without bound on an idle
  or request/response connection.
* ``on_enter_recovery(now, flight)``: fast retransmit (3 dupacks, or RFC 6675
  ``IsLost(SND.UNA)``).  Sets ssthresh from FlightSize at that moment and
  ``cwnd = ssthresh``.  Do not call it again for losses inside the same recovery
  (RFC 6582 §3.2 step 1 / RFC 6675 §5: one reduction per window).
* ``on_exit_recovery(now, flight=None)``: full ACK (SND.UNA >= recovery point).
  ``cwnd = ssthresh``, or with ``flight`` given RFC 6582 §3.2 step 3 option 1:
  ``min(ssthresh, max(flight, MSS) + MSS)`` (burst avoidance).
* ``on_rto(now, flight)``: retransmission timeout. RFC 5681 §3.1 eq. 4:
  ssthresh from FlightSize (only on the first timeout of a segment: it is held
  while the same data keeps timing out, until an ACK advances SND.UNA), cwnd =
  1 MSS (loss window).
* ``on_idle_restart(now, rto)``: call before sending when nothing was sent for
  more than one RTO (RFC 5681 §4.1): cwnd = min(IW, cwnd).
* ``on_syn_loss()``: the SYN or SYN-ACK was retransmitted; the first window after
  the handshake is 1 MSS (RFC 5681 §3.1, RFC 6928 §2).
* ``set_mss(mss)``: after option negotiation / PMTU change.  Before any ACK the
  IW is recomputed for the new MSS; later cwnd/ssthresh keep their size in
  segments.
"""

__all__ = [
    "INFINITE_SSTHRESH",
    "initial_window",
    "CongestionControl",
    "NewReno",
    "Cubic",
    "make_congestion_control",
]

INFINITE_SSTHRESH = 1 << 31  # "arbitrarily high" initial ssthresh (RFC 5681 §3.1)


def initial_window(mss: int, segments: int = 10) -> int:
    """Initial window in bytes.

    segments == 10 (default): RFC 6928 §2 IW10 = min(10*MSS, max(2*MSS, 14600)).
    segments > 4: the same rule scaled, min(n*MSS, max(2*MSS, n*1460)).
    segments <= 4: RFC 5681 §3.1 (RFC 3390) caps: 2 segments if MSS > 2190,
    3 if MSS > 1095, else 4; further limited to ``segments``.
    """
    if segments < 1:
        raise ValueError("initial window must be >= 1 segment")
    if mss <= 0:
        raise ValueError("mss must be positive")
    if segments <= 4:
        cap = 2 if mss > 2190 else (3 if mss > 1095 else 4)
        return (segments if segments < cap else cap) * mss
    # min(n*MSS, max(2*MSS, n*1460)), without the builtin calls (twice per connection)
    cap = segments * 1460
    if cap < 2 * mss:
        cap = 2 * mss
    iw = segments * mss
    return iw if iw < cap else cap


class CongestionControl:
    """Base class: shared RFC 5681 machinery (IW, slow start, RTO, restart).

    Subclasses implement ``on_ack`` and ``on_enter_recovery``; see the module
    docstring for the contract.
    """

    name = "base"

    __slots__ = (
        "mss", "cwnd", "ssthresh", "iw_segments",
        "_bytes_acked", "_rto_hold", "_rto_ss", "_pristine",
    )

    def __init__(self, mss: int, initial_window_segments: int = 10) -> None:
        self.mss = mss
        self.iw_segments = initial_window_segments
        self.cwnd = initial_window(mss, initial_window_segments)
        self.ssthresh = INFINITE_SSTHRESH
        self._bytes_acked = 0      # RFC 3465 byte counter for congestion avoidance
        self._rto_hold = False     # ssthresh already set by an RTO for this data
        self._rto_ss = False       # in the slow start that follows an RTO
        self._pristine = True      # no ACK/loss yet: set_mss may recompute IW

    # -- queries ---------------------------------------------------------
    @property
    def in_slow_start(self) -> bool:
        """cwnd < ssthresh (RFC 5681 §3.1)."""
        return self.cwnd < self.ssthresh

    # -- shared pieces ---------------------------------------------------
    def _slow_start(self, acked: int) -> int:
        """Slow start with Appropriate Byte Counting (RFC 3465 §2.2, L = 2*SMSS;
        L = 1*SMSS in the slow start after an RTO, §2.3).  cwnd stops at
        ssthresh; returns the acked bytes left over for congestion avoidance."""
        limit = self.mss if self._rto_ss else 2 * self.mss
        inc = acked if acked < limit else limit
        room = self.ssthresh - self.cwnd
        if inc < room:
            self.cwnd += inc
            return 0
        self.cwnd = self.ssthresh
        self._rto_ss = False
        return acked - room

    def on_ack(self, acked: int, now: float, rtt: float | None, flight: int) -> None:
        raise NotImplementedError

    def on_enter_recovery(self, now: float, flight: int) -> None:
        raise NotImplementedError

    def on_exit_recovery(self, now: float, flight: int | None = None) -> None:
        """Full ACK ends recovery: deflate (RFC 6582 §3.2 step 3, RFC 5681 §3.2 step 6)."""
        ss = self.ssthresh
        if flight is not None:
            mss = self.mss
            alt = (flight if flight > mss else mss) + mss
            if alt < ss:
                ss = alt
        self.cwnd = ss
        self._bytes_acked = 0

    def _rto_ssthresh(self, flight: int) -> int:
        half = flight // 2
        two = 2 * self.mss
        return half if half > two else two

    def on_rto(self, now: float, flight: int) -> None:
        """RFC 5681 §3.1: ssthresh = max(FlightSize/2, 2*SMSS) (held on repeated
        timeouts of the same data, eq. 4 note), cwnd = LW = 1 SMSS."""
        if not self._rto_hold:
            self.ssthresh = self._rto_ssthresh(flight)
            self._rto_hold = True
        self.cwnd = self.mss
        self._bytes_acked = 0
        self._rto_ss = True
        self._pristine = False

    def on_idle_restart(self, now: float, rto: float) -> None:
        """RFC 5681 §4.1: after an idle period longer than RTO (the caller checks
        that), cwnd = RW = min(IW, cwnd).  ssthresh is unchanged."""
        rw = initial_window(self.mss, self.iw_segments)
        if rw < self.cwnd:
            self.cwnd = rw
        self._bytes_acked = 0

    def on_syn_loss(self) -> None:
        """SYN or SYN-ACK was lost: the window after the handshake is 1 MSS
        (RFC 5681 §3.1 / RFC 6928 §2).  Call before any data is sent."""
        self.cwnd = self.mss
        self._pristine = False

    def set_mss(self, mss: int) -> None:
        """Effective send MSS changed (options negotiated, PMTU)."""
        if mss <= 0:
            raise ValueError("mss must be positive")
        old = self.mss
        if mss == old:
            return
        self.mss = mss
        if self._pristine:
            self.cwnd = initial_window(mss, self.iw_segments)
            return
        cwnd = self.cwnd * mss // old
        self.cwnd = cwnd if cwnd > mss else mss
        if self.ssthresh < INFINITE_SSTHRESH:
            ss = self.ssthresh * mss // old
            self.ssthresh = ss if ss > 2 * mss else 2 * mss
        self._bytes_acked = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cwnd={self.cwnd}, ssthresh={self.ssthresh}, mss={self.mss})"


class NewReno(CongestionControl):
    """RFC 5681 slow start / congestion avoidance with RFC 6582 recovery hooks.

    Slow start: ABC with L = 2*SMSS (RFC 3465).  Congestion avoidance: byte
    counting (RFC 5681 §3.1 / RFC 3465 §2.1): cwnd += SMSS each time a full cwnd
    of bytes has been acked, i.e. exactly 1 SMSS per RTT whatever the ACK
    pattern (delayed/stretch ACKs).  Loss: ssthresh = max(FlightSize/2, 2*SMSS).
    """

    name = "newreno"
    __slots__ = ()

    def on_ack(self, acked: int, now: float, rtt: float | None, flight: int) -> None:
        if acked <= 0:
            return
        self._pristine = False
        self._rto_hold = False
        if 2 * flight < self.cwnd:        # not cwnd-limited: don't grow (RFC 7661)
            return
        if self.cwnd < self.ssthresh:
            acked = self._slow_start(acked)
            if not acked:
                return
        ba = self._bytes_acked + acked
        if ba >= self.cwnd:
            ba -= self.cwnd
            self.cwnd += self.mss
            if ba >= self.cwnd:           # stretch ACK: at most one SMSS per ACK
                ba = 0
        self._bytes_acked = ba

    def on_enter_recovery(self, now: float, flight: int) -> None:
        """RFC 5681 §3.2 step 2 (eq. 4) / RFC 6582 §3.2 step 2."""
        self.ssthresh = self._rto_ssthresh(flight)
        self.cwnd = self.ssthresh
        self._bytes_acked = 0
        self._rto_ss = False
        self._pristine = False


# RFC 9438 constants (§4.1.1, §4.3, §4.6, §5.1)
CUBIC_C = 0.4
CUBIC_BETA = 0.7
CUBIC_ALPHA = 3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA)


class Cubic(CongestionControl):
    """CUBIC (RFC 9438).  State in segments (floats) like the RFC; cwnd in bytes.

    * Slow start below ssthresh as in NewReno (HyStart++ not implemented, §4.10
      allows RFC 5681 slow start).
    * Congestion avoidance (§4.2-4.5): epoch starts at the first CA ACK;
      K = cbrt((W_max - cwnd_epoch)/C); W_est (Reno-friendly, Figure 4) grows by
      alpha*segments_acked/cwnd, alpha -> 1 once W_est >= cwnd_prior.  If
      W_cubic(t) < W_est, cwnd = W_est; otherwise target = W_cubic(t + RTT)
      clamped to [cwnd, 1.5*cwnd] and cwnd += (target - cwnd)/cwnd per acked
      segment (Linux semantics; the RFC says per ACK, which with delayed ACKs
      would halve the growth rate).
    * t excludes application-limited periods (§4.2, §5.8): the epoch start is
      shifted forward by the time spent not cwnd-limited.
    * Congestion event (§4.6/4.7): fast convergence, cwnd_prior = cwnd,
      ssthresh = max(FlightSize*0.7, 2*MSS), cwnd = ssthresh.
    * Timeout (§4.8): ssthresh as above, cwnd = 1 MSS; the next CA epoch uses
      K = 0 and W_max = cwnd at its start.
    * Spurious-loss undo (§4.9) is not implemented.

    Read-only introspection (segments / seconds): ``w_max``, ``k``,
    ``cwnd_prior``, ``w_est``, ``alpha``, ``epoch_start``.
    """

    name = "cubic"
    __slots__ = (
        "fast_convergence", "w_max", "k", "cwnd_prior", "w_est", "alpha",
        "epoch_start", "_cwnd_epoch", "_frac", "_rtt", "_last_ack", "_rto_epoch",
    )

    def __init__(self, mss: int, initial_window_segments: int = 10,
                 fast_convergence: bool = True) -> None:
        # The base class by name (as in set_mss): one per connection, no super object.
        CongestionControl.__init__(self, mss, initial_window_segments)
        self.fast_convergence = fast_convergence
        self.w_max = None           # segments; None until the first congestion event
        self.k = 0.0
        self.cwnd_prior = None
        self.w_est = 0.0
        self.alpha = CUBIC_ALPHA
        self.epoch_start = None     # t_epoch; None = no CA epoch running
        self._cwnd_epoch = 0.0
        self._frac = 0.0            # fractional bytes of cwnd
        self._rtt = 0.0             # last known SRTT
        self._last_ack = None
        self._rto_epoch = False

    def _cwnd_seg(self) -> float:
        return (self.cwnd + self._frac) / self.mss

    def _start_epoch(self, now: float, cw: float) -> None:
        """§4.2: start a congestion-avoidance stage at cwnd_epoch = cw."""
        self.epoch_start = now
        self._cwnd_epoch = cw
        if self.cwnd_prior is None:            # §4.10: no loss yet
            self.cwnd_prior = cw
        w_max = self.w_max
        if self._rto_epoch or w_max is None or cw >= w_max:
            # §4.8 (after a timeout) / §4.10; also cwnd already above the old
            # plateau: start in the convex region with K = 0.
            self.w_max = cw
            self.k = 0.0
            self._rto_epoch = False
        else:
            self.k = ((w_max - cw) / CUBIC_C) ** (1.0 / 3.0)   # Figure 2
        self.w_est = cw
        self.alpha = 1.0 if cw >= self.cwnd_prior else CUBIC_ALPHA

    def w_cubic(self, t: float) -> float:
        """Figure 1: W_cubic(t) = C*(t-K)^3 + W_max, in segments (t from epoch start)."""
        d = t - self.k
        return CUBIC_C * d * d * d + (self.w_max or 0.0)

    def on_ack(self, acked: int, now: float, rtt: float | None, flight: int) -> None:
        if acked <= 0:
            return
        self._pristine = False
        self._rto_hold = False
        if rtt is not None:
            self._rtt = rtt
        last = self._last_ack
        self._last_ack = now
        if 2 * flight < self.cwnd:
            # Application-limited: no growth, and t must not advance (§4.2, §5.8).
            if self.epoch_start is not None and last is not None:
                self.epoch_start += now - last
            return
        if self.cwnd < self.ssthresh:
            acked = self._slow_start(acked)
            if not acked:
                return
            self._frac = 0.0
        mss = self.mss
        cw = (self.cwnd + self._frac) / mss
        if self.epoch_start is None:
            self._start_epoch(now, cw)
        seg_acked = acked / mss
        t = now - self.epoch_start
        # §4.3 Reno-friendly estimate (Figure 4).
        w_est = self.w_est + self.alpha * seg_acked / cw
        self.w_est = w_est
        if w_est >= self.cwnd_prior:
            self.alpha = 1.0
        k = self.k
        w_max = self.w_max
        d = t - k
        if CUBIC_C * d * d * d + w_max < w_est:
            new = w_est if w_est > cw else cw               # Reno-friendly region
        else:
            d = t + self._rtt - k                            # §4.2 target = W_cubic(t+RTT)
            target = CUBIC_C * d * d * d + w_max
            if target <= cw:
                return
            hi = 1.5 * cw
            if target > hi:
                target = hi
            new = cw + (target - cw) / cw * seg_acked       # §4.4 / §4.5
            if new > target:
                new = target
        nb = new * mss
        c = int(nb)
        self.cwnd = c
        self._frac = nb - c

    def on_enter_recovery(self, now: float, flight: int) -> None:
        """§4.6 multiplicative decrease with §4.7 fast convergence."""
        cw = self._cwnd_seg()
        w_max = self.w_max
        if self.fast_convergence and w_max is not None and cw < w_max:
            self.w_max = cw * (1.0 + CUBIC_BETA) / 2.0
        else:
            self.w_max = cw
        self.cwnd_prior = cw
        ss = flight * 7 // 10               # beta_cubic, exact in integers
        two = 2 * self.mss
        self.ssthresh = ss if ss > two else two
        self.cwnd = self.ssthresh
        self._frac = 0.0
        self.epoch_start = None
        self._rto_epoch = False
        self._rto_ss = False
        self._bytes_acked = 0
        self._pristine = False

    def _rto_ssthresh(self, flight: int) -> int:
        ss = flight * 7 // 10               # beta_cubic, exact in integers
        two = 2 * self.mss
        return ss if ss > two else two

    def on_rto(self, now: float, flight: int) -> None:
        """§4.8: Reno's loss window, ssthresh via beta_cubic; next epoch K = 0."""
        if not self._rto_hold:
            self.cwnd_prior = self._cwnd_seg()
        super().on_rto(now, flight)
        self._frac = 0.0
        self.epoch_start = None
        self._rto_epoch = True

    def on_exit_recovery(self, now: float, flight: int | None = None) -> None:
        super().on_exit_recovery(now, flight)
        self._frac = 0.0

    def on_idle_restart(self, now: float, rto: float) -> None:
        """RFC 5681 §4.1 restart window; the CUBIC epoch restarts too (§5.8)."""
        super().on_idle_restart(now, rto)
        self._frac = 0.0
        self.epoch_start = None
        self._last_ack = None

    def set_mss(self, mss: int) -> None:
        CongestionControl.set_mss(self, mss)
        self._frac = 0.0


_BY_NAME = {"newreno": NewReno, "reno": NewReno, "cubic": Cubic}


def make_congestion_control(name: str, mss: int, iw: int = 10) -> CongestionControl:
    """Factory: ``"newreno"`` or ``"cubic"`` (case-insensitive); ValueError otherwise."""
    cls = _BY_NAME.get(name)                  # the usual spelling: no lower() per TCB
    if cls is None:
        cls = _BY_NAME.get(name.lower())
        if cls is None:
            raise ValueError(f"unknown congestion control {name!r}")
    return cls(mss, iw)
