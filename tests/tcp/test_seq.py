"""Sequence arithmetic (RFC 9293 §3.4) around the 2**32 wrap."""

from hypothesis import given, strategies as st

from acceltcp.tcp.seq import (
    SEQ_MOD, seq_add, seq_diff, seq_ge, seq_gt, seq_in_window, seq_le, seq_lt, seq_max, seq_min,
)

seqs = st.one_of(
    st.integers(0, SEQ_MOD - 1),
    st.integers(SEQ_MOD - 5000, SEQ_MOD - 1),   # just below the wrap
    st.integers(0, 5000),                        # just above it
    st.integers((1 << 31) - 5000, (1 << 31) + 5000),
)
dists = st.integers(-(1 << 31) + 1, (1 << 31) - 1)


def test_wrap_examples():
    top = SEQ_MOD - 1
    assert seq_add(top, 1) == 0
    assert seq_add(0, -1) == top
    assert seq_diff(0, top) == 1
    assert seq_diff(top, 0) == -1
    assert seq_lt(top, 0) and seq_gt(0, top)
    assert seq_le(top, top) and seq_ge(top, top) and not seq_lt(top, top)
    assert seq_max(top, 5) == 5 and seq_min(top, 5) == top
    assert seq_in_window(2, top - 1, 10)
    assert not seq_in_window(top - 2, top - 1, 10)
    assert not seq_in_window(top - 1, top - 1, 0)          # size 0 => False
    assert seq_in_window(top - 1, top - 1, 1)
    assert not seq_in_window(0, top - 1, 1)


def test_half_range_edge():
    # exactly 2**31 apart: seq_diff picks +2**31; ordering ambiguous but self-consistent
    assert seq_diff(1 << 31, 0) == 1 << 31
    assert seq_diff(0, 1 << 31) == 1 << 31
    assert not seq_lt(0, 1 << 31) and seq_ge(0, 1 << 31)


@given(seqs, dists)
def test_lt_iff_positive_distance(a, d):
    b = seq_add(a, d)
    assert seq_lt(a, b) == (d > 0)
    assert seq_gt(b, a) == (d > 0)
    assert seq_le(a, b) == (d >= 0)
    assert seq_ge(b, a) == (d >= 0)
    assert seq_diff(b, a) == d
    assert seq_diff(a, b) == -d


@given(seqs, seqs)
def test_consistency(a, b):
    d = seq_diff(a, b)
    assert -(1 << 31) < d <= 1 << 31
    assert seq_add(b, d) == a
    assert seq_lt(a, b) == (not seq_ge(a, b)) == (d < 0)
    assert seq_gt(a, b) == (not seq_le(a, b)) == (d > 0)
    assert seq_max(a, b) in (a, b) and seq_min(a, b) in (a, b)
    if a != b and abs(d) != 1 << 31:
        assert seq_max(a, b) != seq_min(a, b)
        assert seq_lt(seq_min(a, b), seq_max(a, b))


@given(seqs, seqs, st.integers(0, 1 << 30))
def test_in_window_matches_distance(x, left, size):
    off = (x - left) % SEQ_MOD
    assert seq_in_window(x, left, size) == (off < size)
    if size and seq_in_window(x, left, size):
        assert seq_le(left, x) and seq_lt(x, seq_add(left, size))
