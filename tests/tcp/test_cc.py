"""Congestion control: NewReno (RFC 5681/6582/3465) and CUBIC (RFC 9438)."""


import pytest
from hypothesis import given, settings, strategies as st

from acceltcp.tcp.cc import (
    CUBIC_ALPHA, CUBIC_BETA, CUBIC_C, INFINITE_SSTHRESH, CongestionControl, Cubic, NewReno,
    initial_window, make_congestion_control,
)

MSS = 1000


def run_rounds(cc, rounds, now, rtt, per_ack=1, trace=None):
    """ACK-clocked, cwnd-limited sender: each RTT, the whole window is acked in
    ACKs of ``per_ack`` segments spread evenly over the round."""
    for _ in range(rounds):
        if trace is not None:
            trace.append((now, cc.cwnd / MSS))
        flight = cc.cwnd
        step = MSS * per_ack
        nacks = -(-flight // step)
        for i in range(nacks):
            n = step if i < nacks - 1 else flight - step * (nacks - 1)
            cc.on_ack(n, now + rtt * (i + 1) / nacks, rtt, flight)
        now += rtt
    return now


# -- initial window -------------------------------------------------------------

def test_iw10_rfc6928():
    assert initial_window(1460) == 14600
    assert initial_window(1000) == 10000
    assert initial_window(536) == 5360
    assert initial_window(9000) == 18000            # max(2*MSS, 14600) caps it
    assert initial_window(1460, 4) == 4380          # RFC 3390 / RFC 5681 §3.1
    assert initial_window(1000, 4) == 4000
    assert initial_window(2500, 4) == 5000
    assert initial_window(1000, 1) == 1000
    with pytest.raises(ValueError):
        initial_window(1000, 0)
    for cls in (NewReno, Cubic):
        cc = cls(1460)
        assert cc.cwnd == 14600 and cc.ssthresh == INFINITE_SSTHRESH and cc.in_slow_start


def test_factory():
    assert isinstance(make_congestion_control("newreno", MSS), NewReno)
    assert isinstance(make_congestion_control("CUBIC", MSS, 4), Cubic)
    assert make_congestion_control("cubic", 1460, 4).cwnd == 4380
    assert NewReno.name == "newreno" and Cubic.name == "cubic"
    with pytest.raises(ValueError):
        make_congestion_control("bbr", MSS)
    with pytest.raises(NotImplementedError):
        CongestionControl(MSS).on_ack(MSS, 0.0, None, 10 * MSS)


# -- slow start / congestion avoidance --------------------------------------------

@pytest.mark.parametrize("cls", [NewReno, Cubic])
@pytest.mark.parametrize("per_ack", [1, 2])
def test_slow_start_doubles_per_rtt(cls, per_ack):
    cc = cls(MSS)
    trace = []
    run_rounds(cc, 5, 0.0, 0.05, per_ack, trace)
    assert [w for _, w in trace] == [10, 20, 40, 80, 160]
    assert cc.cwnd == 320 * MSS


def test_abc_limit():
    cc = NewReno(MSS)
    cc.on_ack(10 * MSS, 0.0, None, 10 * MSS)        # stretch ACK: L = 2*SMSS (RFC 3465)
    assert cc.cwnd == 12 * MSS


def test_slow_start_stops_at_ssthresh_and_carries_over():
    cc = NewReno(MSS)
    cc.ssthresh = 11 * MSS + 500
    cc.on_ack(2 * MSS, 0.0, None, 10 * MSS)
    assert cc.cwnd == cc.ssthresh and not cc.in_slow_start


def test_newreno_ca_one_mss_per_rtt():
    cc = NewReno(MSS)
    cc.cwnd = 100 * MSS
    cc.on_enter_recovery(0.0, 100 * MSS)
    assert cc.ssthresh == 50 * MSS and cc.cwnd == 50 * MSS       # halves (eq. 4)
    cc.on_exit_recovery(0.1)
    assert cc.cwnd == 50 * MSS
    for per_ack in (1, 2):
        start = cc.cwnd
        run_rounds(cc, 10, 1.0, 0.1, per_ack)
        assert cc.cwnd == start + 10 * MSS


def test_newreno_loss_uses_flightsize_and_floor():
    cc = NewReno(MSS)
    cc.cwnd = 80 * MSS
    cc.on_enter_recovery(0.0, 30 * MSS)              # FlightSize, not cwnd (RFC 5681 §3.1)
    assert cc.ssthresh == 15 * MSS and cc.cwnd == 15 * MSS
    cc.on_enter_recovery(0.0, 3 * MSS)
    assert cc.ssthresh == 2 * MSS                    # max(FlightSize/2, 2*SMSS)


def test_exit_recovery_burst_avoidance():
    cc = NewReno(MSS)
    cc.cwnd = 40 * MSS
    cc.on_enter_recovery(0.0, 40 * MSS)
    cc.on_exit_recovery(0.1, flight=5 * MSS)         # RFC 6582 §3.2 step 3 option 1
    assert cc.cwnd == 6 * MSS
    cc.on_exit_recovery(0.1, flight=30 * MSS)
    assert cc.cwnd == 20 * MSS


@pytest.mark.parametrize("cls", [NewReno, Cubic])
def test_application_limited_no_growth(cls):
    cc = cls(MSS)
    for i in range(100):
        cc.on_ack(MSS, i * 0.01, 0.01, 2 * MSS)      # flight far below cwnd
    assert cc.cwnd == 10 * MSS


# -- RTO / restart / MSS ------------------------------------------------------------

@pytest.mark.parametrize("cls,factor", [(NewReno, 0.5), (Cubic, CUBIC_BETA)])
def test_rto(cls, factor):
    cc = cls(MSS)
    cc.cwnd = 40 * MSS
    cc.on_rto(1.0, 40 * MSS)
    assert cc.cwnd == MSS                            # loss window
    assert cc.ssthresh == round(40 * MSS * factor)
    cc.on_rto(2.0, 40 * MSS)                         # same data times out again: hold ssthresh
    assert cc.ssthresh == round(40 * MSS * factor) and cc.cwnd == MSS
    cc.on_ack(3 * MSS, 3.0, 0.1, 40 * MSS)           # slow start after RTO: L = 1*SMSS
    assert cc.cwnd == 2 * MSS
    cc.on_rto(4.0, 8 * MSS)                          # new data timed out: recompute
    assert cc.ssthresh == max(round(8 * MSS * factor), 2 * MSS)


def test_rto_floor():
    cc = NewReno(MSS)
    cc.on_rto(0.0, MSS)
    assert cc.ssthresh == 2 * MSS and cc.cwnd == MSS


@pytest.mark.parametrize("cls", [NewReno, Cubic])
def test_idle_restart(cls):
    cc = cls(MSS)
    cc.cwnd = 50 * MSS
    cc.ssthresh = 30 * MSS
    cc.on_idle_restart(10.0, 1.0)
    assert cc.cwnd == 10 * MSS and cc.ssthresh == 30 * MSS   # RW = min(IW, cwnd)
    cc.cwnd = 5 * MSS
    cc.on_idle_restart(20.0, 1.0)
    assert cc.cwnd == 5 * MSS


def test_set_mss_and_syn_loss():
    cc = NewReno(536)
    cc.set_mss(1460)
    assert cc.cwnd == 14600                          # IW recomputed before any ACK
    cc.on_ack(1460, 0.0, None, 14600)
    cc.set_mss(1000)
    assert cc.cwnd == (14600 + 1460) * 1000 // 1460  # later: same size in segments
    cc2 = Cubic(536)
    cc2.on_syn_loss()
    cc2.set_mss(1460)
    assert cc2.cwnd == 1460                          # RFC 5681 §3.1: 1 segment after SYN loss


# -- CUBIC -------------------------------------------------------------------------

def cubic_after_loss(w, flight=None, fast_convergence=True):
    cc = Cubic(MSS, fast_convergence=fast_convergence)
    cc.cwnd = w * MSS
    cc.on_enter_recovery(0.0, (flight if flight is not None else w) * MSS)
    cc.on_exit_recovery(0.0)
    return cc


def test_cubic_multiplicative_decrease_and_k():
    cc = cubic_after_loss(100)
    assert cc.cwnd == 70 * MSS and cc.ssthresh == 70 * MSS     # beta_cubic = 0.7
    assert cc.w_max == 100 and cc.cwnd_prior == 100
    cc.on_ack(MSS, 0.0, 0.1, cc.cwnd)                          # first CA ACK starts the epoch
    assert cc.epoch_start == 0.0
    assert cc.k == pytest.approx((100 * (1 - CUBIC_BETA) / CUBIC_C) ** (1 / 3))
    assert cc.k == pytest.approx(75 ** (1 / 3))


def test_cubic_trajectory_follows_w_cubic():
    cc = cubic_after_loss(500)
    k = (500 * 0.3 / 0.4) ** (1 / 3)
    rtt = 0.1
    trace = []
    run_rounds(cc, int(12.0 / rtt), 0.0, rtt, 1, trace)
    assert cc.k == pytest.approx(k)
    for t, w in trace[1:]:
        expect = CUBIC_C * (t - k) ** 3 + 500
        assert w == pytest.approx(expect, abs=0.5), (t, w, expect)
    # concave below W_max, plateau near K, convex beyond
    at = dict((round(t, 1), w) for t, w in trace)
    assert at[round(k, 1)] == pytest.approx(500, abs=2)
    assert at[2.0] - at[1.0] > at[4.0] - at[3.0]     # concave: slowing down
    assert at[11.0] - at[10.0] > at[9.0] - at[8.0]   # convex: speeding up


def test_cubic_target_clamped_to_1_5_cwnd():
    cc = cubic_after_loss(1000)
    cc.on_ack(MSS, 0.0, 0.1, cc.cwnd)
    before = cc.cwnd / MSS
    cc.on_ack(100 * MSS, 1000.0, 0.1, cc.cwnd)       # far in the convex region
    assert cc.cwnd / MSS <= 1.5 * before + 1e-6


def test_cubic_fast_convergence():
    cc = cubic_after_loss(100)
    run_rounds(cc, 10, 0.0, 0.1)
    w = cc.cwnd / MSS
    assert 70 < w < 100
    cc.on_enter_recovery(1.0, cc.cwnd)
    assert cc.w_max == pytest.approx(w * (1 + CUBIC_BETA) / 2, abs=1e-2)   # §4.7: reduced
    assert cc.cwnd_prior == pytest.approx(w, abs=1e-2)
    cc2 = cubic_after_loss(100, fast_convergence=False)
    run_rounds(cc2, 10, 0.0, 0.1)
    w2 = cc2.cwnd / MSS
    cc2.on_enter_recovery(1.0, cc2.cwnd)
    assert cc2.w_max == pytest.approx(w2, abs=1e-2)


def test_cubic_reno_friendly_region():
    cc = cubic_after_loss(20)
    rtt = 0.001                                       # tiny RTT*W: Reno-friendly dominates
    trace = []
    run_rounds(cc, 60, 0.0, rtt, 1, trace)
    # W_est grows by alpha_cubic per RTT until it reaches cwnd_prior, then by 1
    w5 = dict(enumerate(w for _, w in trace))[5]
    assert w5 == pytest.approx(14 + 5 * CUBIC_ALPHA, abs=0.6)
    assert cc.alpha == 1.0
    n_alpha = (20 - 14) / CUBIC_ALPHA
    expect = 20 + (60 - n_alpha)
    assert cc.cwnd / MSS == pytest.approx(expect, abs=2.0)
    assert cc.cwnd / MSS > cc.w_cubic(60 * rtt) + 20  # far above the cubic curve


def test_cubic_after_rto_epoch_k_zero():
    cc = cubic_after_loss(100)
    cc.cwnd = 90 * MSS
    cc.on_rto(0.0, 90 * MSS)
    assert cc.ssthresh == 63 * MSS and cc.cwnd == MSS
    now = run_rounds(cc, 6, 0.0, 0.1)                 # slow start 1,2,4,...,63
    assert cc.ssthresh == 63 * MSS and not cc.in_slow_start
    run_rounds(cc, 1, now, 0.1)
    assert cc.k == 0.0 and cc.w_max == pytest.approx(cc._cwnd_epoch)   # §4.8


def test_cubic_app_limited_time_excluded():
    cc = cubic_after_loss(100)
    cc.on_ack(MSS, 0.0, 0.1, cc.cwnd)
    w0 = cc.cwnd
    for i in range(1, 200):                            # 20 s of app-limited ACKs
        cc.on_ack(MSS, i * 0.1, 0.1, 10 * MSS)
    assert cc.cwnd == w0
    assert cc.epoch_start == pytest.approx(199 * 0.1)  # t did not advance
    cc.on_ack(MSS, 20.0, 0.1, cc.cwnd)
    assert cc.cwnd / MSS < 71                          # no jump to W_cubic(20 s)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([NewReno, Cubic]),
       st.lists(st.tuples(st.sampled_from("aelri"), st.integers(1, 200)), max_size=80))
def test_invariants(cls, events):
    cc = cls(MSS)
    now = 0.0
    for kind, n in events:
        now += 0.01 * n
        if kind == "a":
            cc.on_ack(n * 100, now, 0.05, cc.cwnd)
        elif kind == "e":
            cc.on_enter_recovery(now, n * MSS)
        elif kind == "l":
            cc.on_exit_recovery(now, n * MSS if n % 2 else None)
        elif kind == "r":
            cc.on_rto(now, n * MSS)
        else:
            cc.on_idle_restart(now, 1.0)
        assert isinstance(cc.cwnd, int) and cc.cwnd >= MSS
        assert cc.ssthresh >= 2 * MSS
