"""Retransmission timeout estimator (RFC 6298).

Sample selection is the caller's job:

* Karn's algorithm (RFC 6298 §3): never take a sample from a segment that was
  retransmitted, unless the RTT comes from the TCP Timestamps option.
* With timestamps (RFC 7323 §4.1) every ACK that advances SND.UNA yields a valid
  sample ``now - TSecr`` (retransmissions included), so many samples arrive per
  RTT.  RFC 7323 Appendix G suggests scaling alpha/beta by the expected number of
  samples per RTT; we keep the standard RFC 6298 weights (as Linux does): the
  estimator then tracks the recent path more closely and RTTVAR decays faster,
  which only matters for the min_rto floor we apply anyway.

The RTO returned includes the exponential backoff (§5.5) and is clamped to
[min_rto, max_rto].  ``min_rto`` defaults to 200 ms (Linux) instead of the 1 s
RFC 6298 §2.4 SHOULD; pass ``min_rto=1.0`` for the strict value.
"""

__all__ = ["RtoEstimator"]

_ALPHA = 0.125  # RFC 6298 §2.3
_BETA = 0.25
_K = 4
_1_ALPHA = 1.0 - _ALPHA
_1_BETA = 1.0 - _BETA


class RtoEstimator:
    """SRTT/RTTVAR/RTO state for one connection (all times in seconds).

    ``srtt`` and ``rttvar`` are ``None`` until the first sample.  ``rto`` is a
    plain attribute (read it directly on the hot path); ``backoffs`` counts the
    consecutive ``backoff()`` calls since the last sample, which the connection
    uses for its R1/R2 retry limits (RFC 9293 §3.8.3).
    """

    __slots__ = (
        "initial", "min_rto", "max_rto", "granularity",
        "srtt", "rttvar", "rto", "backoffs", "_base",
    )

    def __init__(self, initial: float = 1.0, min_rto: float = 0.2,
                 max_rto: float = 60.0, granularity: float = 0.001) -> None:
        if not 0 < min_rto <= max_rto:
            raise ValueError("need 0 < min_rto <= max_rto")
        self.initial = initial
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.granularity = granularity
        # reset(), inline (once per connection)
        self.srtt = self.rttvar = None
        self.backoffs = 0
        self._base = self.rto = self._clamp(initial)

    def reset(self) -> None:
        """Forget everything (connection reuse): RTO = initial (RFC 6298 §2.1)."""
        self.srtt = None
        self.rttvar = None
        self.backoffs = 0
        self._base = self._clamp(self.initial)
        self.rto = self._base

    def _clamp(self, v: float) -> float:
        if v < self.min_rto:
            return self.min_rto
        if v > self.max_rto:
            return self.max_rto
        return v

    def on_rtt_sample(self, r: float) -> None:
        """Feed one valid RTT measurement R (RFC 6298 §2.2/§2.3).

        Recomputes RTO from the new SRTT/RTTVAR, which also drops any backoff:
        the backed-off RTO is kept only until a new sample is taken (note after
        RFC 6298 §5.7: "collapsing" RTO after a backoff).
        """
        if r < 0.0:
            raise ValueError("negative RTT sample")
        srtt = self.srtt
        if srtt is None:
            srtt = r
            var = r / 2.0
        else:
            # §2.3: RTTVAR first, with the old SRTT.
            err = srtt - r
            var = _1_BETA * self.rttvar + _BETA * (err if err >= 0.0 else -err)
            srtt = _1_ALPHA * srtt + _ALPHA * r
        self.srtt = srtt
        self.rttvar = var
        kvar = _K * var
        g = self.granularity
        rto = srtt + (kvar if kvar > g else g)
        if rto < self.min_rto:                    # _clamp, inline: once per ACK
            rto = self.min_rto
        elif rto > self.max_rto:
            rto = self.max_rto
        self._base = self.rto = rto
        self.backoffs = 0

    def backoff(self) -> float:
        """Retransmission timer expired: RTO *= 2, capped at max_rto (§5.5). Returns it."""
        self.backoffs += 1
        rto = self.rto * 2.0
        self.rto = rto if rto < self.max_rto else self.max_rto
        return self.rto

    def on_syn_timeout_established(self) -> None:
        """RFC 6298 §5.7: the SYN (or SYN-ACK) timed out and the handshake has now
        completed.  If RTO < 3 s it MUST be re-initialized to 3 s for data
        transfer.  Call it once, on entering ESTABLISHED, if any SYN/SYN-ACK
        retransmission happened.  No-op when a valid sample already exists
        (e.g. from timestamps); a later sample recomputes RTO as usual.
        """
        if self.srtt is not None:
            return
        base = self._base if self._base > 3.0 else 3.0
        self._base = self._clamp(base)
        self.backoffs = 0
        self.rto = self._base

    def __repr__(self) -> str:
        return (f"RtoEstimator(rto={self.rto:.3f}, srtt={self.srtt}, "
                f"rttvar={self.rttvar}, backoffs={self.backoffs})")
