"""Keyed stateless SYN cookies (AccelTCP §4.1): round trips, forgeries, time, keys."""

import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from acceltcp.tcp import syncookie
from acceltcp.tcp.syncookie import (
    MSS_TABLE, TS_COOKIE_MARK, CookieOptions, SynCookieJar, mss_class,
)

MASK = 0xFFFFFFFF
SECRET = bytes(range(32))
LIP = bytes([10, 0, 0, 1])
RIP = bytes([10, 0, 0, 2])

u32 = st.one_of(
    st.integers(0, MASK),
    st.integers(MASK - 70000, MASK),
    st.sampled_from([0, 1, 2**31 - 1, 2**31, MASK - 1, MASK]),
)
ips = st.binary(min_size=4, max_size=4)
ports = st.integers(0, 0xFFFF)
times = st.floats(0.0, 1e7, allow_nan=False)
wscales = st.one_of(st.none(), st.integers(0, 14))
tuples = st.tuples(ips, ports, ips, ports)


def _mss_in_class(cls, rng):
    """Some MSS whose class is `cls` (>= its value, < the next one)."""
    lo = MSS_TABLE[cls]
    hi = MSS_TABLE[cls + 1] - 1 if cls + 1 < len(MSS_TABLE) else 65535
    return rng.choice([lo, hi, rng.randint(lo, hi)])


def _ack(jar, tup, client_isn, cookie, now):
    lip, lport, rip, rport = tup
    isn, tsval = cookie
    return jar.check(lip, lport, rip, rport, (client_isn + 1) & MASK, (isn + 1) & MASK, tsval,
                     now)


def test_docstring_example():
    jar = SynCookieJar(SECRET, ts_offset=0)
    isn, tsval = jar.make(LIP, 80, RIP, 40000, 0xFFFFFFF0, 1460, 7, True, 100.25)
    assert (isn, tsval) == (0x2677A0FD, 0x1876F)
    assert isn >> 27 == 4 and isn >> 24 & 7 == 6 and tsval & 0x3F == 0x2F
    opts = jar.check(LIP, 80, RIP, 40000, 0xFFFFFFF1, 0x2677A0FE, 0x1876F, 115.999)
    assert opts == CookieOptions(mss=1460, wscale=7, sack_ok=True)
    assert jar.check(LIP, 80, RIP, 40000, 0xFFFFFFF1, 0x2677A0FE, 0x1876F, 116.0) is None
    assert syncookie.__doc__.count("0x2677A0FD") == 1


def test_mss_classes():
    assert len(MSS_TABLE) == 8 and list(MSS_TABLE) == sorted(MSS_TABLE)
    assert mss_class(535) == -1
    assert mss_class(536) == 0 and mss_class(1199) == 0
    assert mss_class(1460) == 6 and mss_class(8959) == 6
    assert mss_class(8960) == 7 and mss_class(65535) == 7
    jar = SynCookieJar(SECRET)
    assert jar.make(LIP, 80, RIP, 1, 5, 535, None, False, 1.0) is None   # host handles it
    isn, tsval = jar.make(LIP, 80, RIP, 1, 5, None, None, False, 1.0)   # no MSS option: 536
    assert jar.check(LIP, 80, RIP, 1, 6, isn + 1, tsval, 1.0).mss == 536


def test_every_class_wscale_sack_round_trips():
    jar = SynCookieJar(SECRET)
    rng = random.Random(1)
    tup = (LIP, 80, RIP, 50000)
    for cls in range(8):
        for ws in [None] + list(range(15)):
            for sack in (False, True):
                mss = _mss_in_class(cls, rng)
                cisn = rng.randrange(1 << 32)
                now = rng.uniform(0, 1e6)
                cookie = jar.make(LIP, 80, RIP, 50000, cisn, mss, ws, sack, now)
                opts = _ack(jar, tup, cisn, cookie, now + rng.uniform(0, 15.0))
                assert opts == CookieOptions(MSS_TABLE[cls], ws, sack)
                assert opts.mss <= mss


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tup=tuples, cisn=u32, now=times, delay=st.floats(0.0, 14.999), seed=st.integers(0, 2**32),
       ts_hz=st.sampled_from([1, 10, 1000, 1_000_000]))
def test_round_trip_hypothesis(tup, cisn, now, delay, seed, ts_hz):
    rng = random.Random(seed)
    jar = SynCookieJar(rng.randbytes(rng.randint(16, 32)), ts_hz=ts_hz)
    lip, lport, rip, rport = tup
    for cls in range(8):
        for ws in (None, 0, rng.randint(1, 13), 14):
            for sack in (False, True):
                mss = _mss_in_class(cls, rng)
                isn, tsval = jar.make(lip, lport, rip, rport, cisn, mss, ws, sack, now)
                assert 0 <= isn <= MASK and 0 <= tsval <= MASK
                assert tsval & TS_COOKIE_MARK
                assert _ack(jar, tup, cisn, (isn, tsval), now + delay) == \
                    CookieOptions(MSS_TABLE[cls], ws, sack)


@settings(max_examples=200, deadline=None)
@given(now=times, ts_offset=u32, ts_hz=st.sampled_from([1, 1000, 1_000_000]),
       ws=wscales, sack=st.booleans())
def test_tsval_never_ahead_of_the_clock(now, ts_offset, ts_hz, ws, sack):
    jar = SynCookieJar(SECRET, ts_hz=ts_hz, ts_offset=ts_offset)
    _, tsval = jar.make(LIP, 80, RIP, 1, 0, 1460, ws, sack, now)
    clock = (int(now * ts_hz) + ts_offset) & MASK
    assert 1 <= (clock - tsval) & MASK <= 64          # ts-64 .. ts-1
    assert tsval & 1 == 1                              # the cookie mark
    assert (tsval >> 1) & 15 == (15 if ws is None else ws)
    assert bool(tsval & 0x20) == sack
    # a host continuing at even TSvals >= tsecr + 1 stays ahead of it (client PAWS)
    assert ((clock & ~1) - tsval) & MASK < 2**31


def test_normal_segments_are_not_cookies():
    jar = SynCookieJar(SECRET)
    isn, tsval = jar.make(LIP, 80, RIP, 9, 100, 1460, 7, True, 10.0)
    assert jar.check(LIP, 80, RIP, 9, 101, isn + 1, None, 10.0) is None      # no timestamps
    assert jar.check(LIP, 80, RIP, 9, 101, isn + 1, tsval & ~1, 10.0) is None  # mark clear


def test_forged_acks_never_validate():
    """Random ack / tsecr / seq: with a 24-bit hash, thousands of tries give 0 accepts
    (expected 5000 * window/32 * 2**-24 ~ 1.5e-4)."""
    jar = SynCookieJar(SECRET)
    rng = random.Random(2)
    accepted = 0
    for _ in range(5000):
        now = rng.uniform(0, 1e5)
        tsecr = rng.randrange(1 << 32) | 1            # the mark set: a hash is computed
        if jar.check(LIP, 80, RIP, rng.randrange(65536), rng.randrange(1 << 32),
                     rng.randrange(1 << 32), tsecr, now) is not None:
            accepted += 1
    assert accepted == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tup=tuples, cisn=u32, now=times, seed=st.integers(0, 2**32))
def test_tampered_cookies_never_validate(tup, cisn, now, seed):
    """A real cookie with one thing wrong: the tuple, the client's ISN, the ack, the
    option bits of the TSecr, or the secret."""
    rng = random.Random(seed)
    jar = SynCookieJar(SECRET)
    other = SynCookieJar(bytes(32))
    lip, lport, rip, rport = tup
    isn, tsval = jar.make(lip, lport, rip, rport, cisn, 1460, 7, True, now)
    seq, ack = (cisn + 1) & MASK, (isn + 1) & MASK
    flip = lambda b: bytes([b[0] ^ (1 << rng.randrange(8))]) + b[1:]   # noqa: E731
    bad = [
        (flip(lip), lport, rip, rport, seq, ack, tsval),
        (lip, lport ^ 1 << rng.randrange(16), rip, rport, seq, ack, tsval),
        (lip, lport, flip(rip), rport, seq, ack, tsval),
        (lip, lport, rip, rport ^ 1 << rng.randrange(16), seq, ack, tsval),
        (lip, lport, rip, rport, (seq + rng.randint(1, MASK)) & MASK, ack, tsval),
        (lip, lport, rip, rport, seq, (ack ^ 1 << rng.randrange(27)) & MASK, tsval),  # hash/MSS
        (lip, lport, rip, rport, seq, (ack ^ 1 << rng.randrange(27, 32)) & MASK, tsval),
        (lip, lport, rip, rport, seq, ack, tsval ^ 2 << rng.randrange(5)),   # options garbled
        (lip, lport, rip, rport, seq, ack, tsval ^ 1),                       # mark cleared
    ]
    for args in bad:
        assert jar.check(*args, now) is None
    assert other.check(lip, lport, rip, rport, seq, ack, tsval, now) is None
    assert jar.check(lip, lport, rip, rport, seq, ack, tsval, now) is not None
    # the TSval's clock bits are not part of the cookie: a middlebox may not touch the
    # low 6 bits, the rest is free (RFC 7323 leaves TSval opaque to the receiver)
    assert jar.check(lip, lport, rip, rport, seq, ack, tsval ^ 0xFFFFFFC0, now) is not None


def test_forgeries_with_wrong_client_isn_or_tuple_thousands():
    jar = SynCookieJar(SECRET)
    rng = random.Random(3)
    accepted = 0
    for i in range(3000):
        now = 1000.0 + i
        cisn = rng.randrange(1 << 32)
        isn, tsval = jar.make(LIP, 80, RIP, 40000, cisn, 1460, None, False, now)
        wrong_seq = (cisn + 1 + rng.randint(1, MASK)) & MASK
        accepted += jar.check(LIP, 80, RIP, 40000, wrong_seq, isn + 1, tsval, now) is not None
        accepted += jar.check(LIP, 80, RIP, 40001, (cisn + 1) & MASK, isn + 1, tsval,
                              now) is not None
        accepted += jar.check(LIP, 80, RIP, 40000, (cisn + 1) & MASK,
                              (isn + 1 + rng.randint(1, MASK)) & MASK, tsval, now) is not None
    assert accepted == 0


def test_staleness_window():
    jar = SynCookieJar(SECRET, tick=1.0, window=16)
    tup = (LIP, 80, RIP, 1234)
    for t0 in (0.0, 31.5, 63.999, 1e6 + 0.5):
        cookie = jar.make(LIP, 80, RIP, 1234, 77, 1460, 2, False, t0)
        start = float(int(t0))
        assert _ack(jar, tup, 77, cookie, t0) is not None
        assert _ack(jar, tup, 77, cookie, start + 15.999) is not None      # age 15
        assert _ack(jar, tup, 77, cookie, start + 16.0) is None            # age 16
        assert _ack(jar, tup, 77, cookie, start + 31.0) is None
        assert _ack(jar, tup, 77, cookie, start - 1.0) is None             # from the future


def test_counter_alias_32_steps_later_is_rejected():
    """The 5-bit counter repeats every 32 steps; the full counter is in the hash."""
    jar = SynCookieJar(SECRET, tick=1.0, window=16, period=64.0)
    rng = random.Random(4)
    accepted = 0
    for i in range(2000):
        t0 = rng.uniform(0, 1e6)
        cisn = rng.randrange(1 << 32)
        isn, tsval = jar.make(LIP, 80, RIP, 4321, cisn, 1460, 5, True, t0)
        for k in (1, 2, 3):                                  # 32, 64, 96 steps later
            later = t0 + 32 * k + rng.uniform(0, 10)
            accepted += jar.check(LIP, 80, RIP, 4321, cisn + 1, isn + 1, tsval, later) \
                is not None
    assert accepted == 0


def test_rotation_previous_key_accepted_older_not():
    jar = SynCookieJar(SECRET, tick=1.0, window=16, period=64.0)
    tup = (LIP, 80, RIP, 999)
    # made at counter 127 (generation 1, the last step of it), checked in generation 2
    cookie = jar.make(LIP, 80, RIP, 999, 5, 1460, 0, True, 127.5)
    assert jar.generation == 1
    assert jar.rotate(128.0) == 2
    assert _ack(jar, tup, 5, cookie, 130.0) is not None          # previous key: accepted
    assert jar.generation == 2
    assert _ack(jar, tup, 5, cookie, 142.9) is not None          # age 15
    # under the key before that: two generations old, even where its 5-bit counter
    # aliases back into the window (127 + 32k), it never validates
    rng = random.Random(5)
    accepted = 0
    for _ in range(2000):
        t0 = rng.uniform(0, 64.0) + 64 * rng.randrange(1, 10000)
        cisn = rng.randrange(1 << 32)
        isn, tsval = jar.make(LIP, 80, RIP, 999, cisn, 1460, 0, True, t0)
        later = t0 + 128.0 + rng.uniform(0, 15.0)                 # generation + 2, age < 16
        accepted += jar.check(LIP, 80, RIP, 999, cisn + 1, isn + 1, tsval, later) is not None
    assert accepted == 0


def test_rotation_changes_the_key():
    """Same inputs, same 5-bit counter, one generation apart: different hashes."""
    jar = SynCookieJar(SECRET, tick=1.0, window=16, period=32.0)
    same = 0
    for i in range(200):
        a = jar.make(LIP, 80, RIP, 1000 + i, 1, 1460, None, False, 10.0)[0]
        b = jar.make(LIP, 80, RIP, 1000 + i, 1, 1460, None, False, 42.0)[0]
        assert a >> 24 == b >> 24                                 # counter 10 both times
        same += a == b
    assert same <= 1


def test_time_going_backwards_uses_the_right_key():
    jar = SynCookieJar(SECRET)
    cookie = jar.make(LIP, 80, RIP, 7, 1, 1460, 3, False, 50.0)
    jar.rotate(10_000.0)                                          # cache far ahead
    assert _ack(jar, (LIP, 80, RIP, 7), 1, cookie, 52.0) == CookieOptions(1460, 3, False)
    fresh = SynCookieJar(SECRET)
    assert fresh.make(LIP, 80, RIP, 7, 1, 1460, 3, False, 50.0) == cookie


def test_deterministic_given_the_secret():
    a, b = SynCookieJar(SECRET), SynCookieJar(SECRET)
    c = SynCookieJar(SECRET[::-1])
    args = (LIP, 443, RIP, 33333, 0xDEADBEEF, 1440, 9, True, 12345.678)
    assert a.make(*args) == b.make(*args)
    assert a.ts_offset == b.ts_offset
    assert a.make(*args)[0] != c.make(*args)[0]
    assert SynCookieJar(SECRET, ts_offset=5).ts_offset == 5


def test_check_returns_shared_immutable_values():
    jar = SynCookieJar(SECRET)
    isn, tsval = jar.make(LIP, 80, RIP, 1, 1, 1460, 7, True, 1.0)
    o1 = jar.check(LIP, 80, RIP, 1, 2, isn + 1, tsval, 1.0)
    o2 = jar.check(LIP, 80, RIP, 1, 2, isn + 1, tsval, 2.0)
    assert o1 is o2 and o1.mss == 1460 and o1.wscale == 7 and o1.sack_ok is True
    with pytest.raises(AttributeError):
        o1.mss = 9000


def test_validation():
    for bad in (b"", b"x" * 15, b"x" * 33):
        with pytest.raises(ValueError):
            SynCookieJar(bad)
    with pytest.raises(ValueError):
        SynCookieJar(SECRET, tick=0)
    with pytest.raises(ValueError):
        SynCookieJar(SECRET, tick=float("nan"))
    with pytest.raises(ValueError):
        SynCookieJar(SECRET, window=0)
    with pytest.raises(ValueError):
        SynCookieJar(SECRET, window=33)
    with pytest.raises(ValueError):
        SynCookieJar(SECRET, tick=1.0, period=2.5)               # not whole ticks
    with pytest.raises(ValueError):
        SynCookieJar(SECRET, tick=1.0, window=16, period=8.0)    # window > key period
    with pytest.raises(ValueError):
        SynCookieJar(SECRET, ts_hz=0)
    jar = SynCookieJar(SECRET)
    for ws in (-1, 15, 255):
        with pytest.raises(ValueError):
            jar.make(LIP, 80, RIP, 1, 1, 1460, ws, False, 1.0)
    with pytest.raises(ValueError):
        jar.make(LIP, 80, RIP, 1, 1, -5, None, False, 1.0)
    with pytest.raises(ValueError):
        jar.make(LIP + b"\0", 80, RIP, 1, 1, 1460, None, False, 1.0)
    with pytest.raises(ValueError):
        jar.make(LIP, 70000, RIP, 1, 1, 1460, None, False, 1.0)
    with pytest.raises(ValueError):
        jar.make(LIP, 80, RIP, 1, 1 << 32, 1460, None, False, 1.0)
    with pytest.raises(ValueError):
        jar.check(LIP, 80, b"\0" * 16, 1, 1, 1, 1, 1.0)


# -- cookies without timestamps (the host's, for SYNs the NIC passes up) ----------------


def test_docstring_example_without_timestamps():
    jar = SynCookieJar(SECRET, ts_offset=0)
    isn, tsval = jar.make(LIP, 80, RIP, 40000, 0xFFFFFFF0, 1460, 7, True, 100.25,
                          timestamps=False)
    assert (isn, tsval) == (0x26DB77B1, None)
    assert isn >> 27 == 4 and isn >> 24 & 7 == 6
    opts = jar.check_no_ts(LIP, 80, RIP, 40000, 0xFFFFFFF1, 0x26DB77B2, 115.999)
    assert opts == CookieOptions(mss=1460, wscale=None, sack_ok=False)
    assert jar.check_no_ts(LIP, 80, RIP, 40000, 0xFFFFFFF1, 0x26DB77B2, 116.0) is None
    assert syncookie.__doc__.count("0x26DB77B1") == 1


def test_no_ts_cookie_carries_the_mss_class_only():
    jar = SynCookieJar(SECRET)
    rng = random.Random(6)
    for cls in range(8):
        for ws, sack in ((None, False), (7, True), (14, False)):
            mss = _mss_in_class(cls, rng)
            cisn = rng.randrange(1 << 32)
            now = rng.uniform(0, 1e6)
            isn, tsval = jar.make(LIP, 80, RIP, 50000, cisn, mss, ws, sack, now,
                                  timestamps=False)
            assert tsval is None
            opts = jar.check_no_ts(LIP, 80, RIP, 50000, (cisn + 1) & MASK, (isn + 1) & MASK,
                                   now + rng.uniform(0, 15.0))
            assert opts == CookieOptions(MSS_TABLE[cls], None, False)
    assert jar.make(LIP, 80, RIP, 1, 5, 535, None, False, 1.0, timestamps=False) is None


def test_cookie_kinds_never_verify_as_each_other():
    """A TS cookie's ISN checked without TS, and a no-TS cookie's ISN with any marked
    TSecr: the option field in the hash differs (MARK set vs clear)."""
    jar = SynCookieJar(SECRET)
    rng = random.Random(7)
    accepted = 0
    for _ in range(2000):
        now = rng.uniform(0, 1e5)
        cisn = rng.randrange(1 << 32)
        isn, tsval = jar.make(LIP, 80, RIP, 4000, cisn, 1460, 7, True, now)
        accepted += jar.check_no_ts(LIP, 80, RIP, 4000, cisn + 1, isn + 1, now) is not None
        isn, _ = jar.make(LIP, 80, RIP, 4000, cisn, 1460, None, False, now, timestamps=False)
        tsecr = rng.randrange(1 << 32) | 1
        accepted += jar.check(LIP, 80, RIP, 4000, cisn + 1, isn + 1, tsecr, now) is not None
    assert accepted == 0


def test_forged_no_ts_acks_never_validate():
    jar = SynCookieJar(SECRET)
    rng = random.Random(8)
    accepted = sum(
        jar.check_no_ts(LIP, 80, RIP, rng.randrange(65536), rng.randrange(1 << 32),
                        rng.randrange(1 << 32), rng.uniform(0, 1e5)) is not None
        for _ in range(5000))
    assert accepted == 0
