"""RFC 6298 retransmission timer."""

import pytest
from hypothesis import given, strategies as st

from acceltcp.tcp.rto import RtoEstimator


def test_initial():
    r = RtoEstimator()
    assert r.rto == 1.0 and r.srtt is None and r.rttvar is None and r.backoffs == 0


def test_first_and_second_sample():
    r = RtoEstimator()
    r.on_rtt_sample(0.5)
    assert r.srtt == 0.5 and r.rttvar == 0.25           # §2.2
    assert r.rto == pytest.approx(0.5 + 4 * 0.25)
    r.on_rtt_sample(0.3)                                 # §2.3: RTTVAR with the old SRTT
    var = 0.75 * 0.25 + 0.25 * abs(0.5 - 0.3)
    srtt = 0.875 * 0.5 + 0.125 * 0.3
    assert r.rttvar == pytest.approx(var)
    assert r.srtt == pytest.approx(srtt)
    assert r.rto == pytest.approx(srtt + 4 * var)


def test_min_and_granularity():
    r = RtoEstimator(min_rto=0.2, granularity=0.001)
    for _ in range(200):
        r.on_rtt_sample(0.001)
    assert r.rto == 0.2                                  # clamped to min_rto (§2.4)
    r = RtoEstimator(min_rto=0.0001, granularity=0.05)
    for _ in range(200):
        r.on_rtt_sample(0.01)
    assert r.rttvar < 0.001
    assert r.rto == pytest.approx(0.01 + 0.05, rel=1e-3)  # G dominates 4*RTTVAR


def test_backoff_and_collapse():
    r = RtoEstimator(max_rto=60.0)
    r.on_rtt_sample(0.1)
    base = r.rto
    assert r.backoff() == pytest.approx(2 * base)
    r.backoff()
    assert r.rto == pytest.approx(4 * base) and r.backoffs == 2
    for _ in range(20):
        r.backoff()
    assert r.rto == 60.0 and r.backoffs == 22            # §5.5 capped
    r.on_rtt_sample(0.1)                                 # new sample: recompute (after §5.7)
    assert r.backoffs == 0 and r.rto < 1.0


def test_backoff_from_initial():
    r = RtoEstimator()
    assert [r.backoff() for _ in range(3)] == [2.0, 4.0, 8.0]


def test_syn_timeout_rule():
    r = RtoEstimator()
    r.backoff()
    r.on_syn_timeout_established()                       # §5.7
    assert r.rto == 3.0 and r.backoffs == 0
    r.on_rtt_sample(0.05)
    assert r.rto < 3.0
    r2 = RtoEstimator()
    r2.on_rtt_sample(0.05)
    before = r2.rto
    r2.on_syn_timeout_established()                      # a sample exists: no-op
    assert r2.rto == before


def test_reset():
    r = RtoEstimator(initial=1.0)
    r.on_rtt_sample(2.0)
    r.backoff()
    r.reset()
    assert r.rto == 1.0 and r.srtt is None and r.backoffs == 0


def test_negative_sample_rejected():
    with pytest.raises(ValueError):
        RtoEstimator().on_rtt_sample(-0.1)


@given(st.lists(st.one_of(st.floats(0, 100), st.just(None)), max_size=60))
def test_rto_always_clamped(events):
    r = RtoEstimator(min_rto=0.2, max_rto=60.0)
    for ev in events:
        if ev is None:
            r.backoff()
        else:
            r.on_rtt_sample(ev)
            assert r.srtt >= 0 and r.rttvar >= 0
        assert 0.2 <= r.rto <= 60.0
