"""The NIC timer bitmap wheel (AccelTCP §4.2) against a simple exact model."""

import heapq
import math
import random
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from acceltcp.nic.timer_wheel import TimerWheel


# -- an exact reference model --------------------------------------------------------

class Model:
    """Timers as (tick, flow) in a heap with lazy deletion; exact rational time.

    A deadline d arms tick T = ceil((d - start) / interval), or the model's current
    tick when that is already past (overdue: due at the next advance); advance(now)
    fires every armed tick <= floor((now - start) / interval), in (tick, id) order."""

    def __init__(self, start, interval):
        self.start = Fraction(start)
        self.interval = Fraction(interval)
        self.cur = 0
        self.heap = []
        self.armed = {}          # flow -> (tick, deadline)

    def tt(self, tick):
        return self.start + tick * self.interval

    def schedule(self, f, d):
        tick = max(math.ceil((Fraction(d) - self.start) / self.interval), self.cur)
        self.armed[f] = (tick, d)
        heapq.heappush(self.heap, (tick, f))
        return tick

    def cancel(self, f):
        return self.armed.pop(f, None) is not None

    def advance(self, now):
        now = Fraction(now)
        if now < self.tt(self.cur):
            return []
        target = math.floor((now - self.start) / self.interval)
        out = []
        while self.heap and self.heap[0][0] <= target:
            tick, f = heapq.heappop(self.heap)
            if self.armed.get(f, (None,))[0] == tick:
                del self.armed[f]
                out.append(f)
        # duplicates (re-armed at the same tick) were popped above: keep the live entries
        self.cur = max(self.cur, target)
        return out

    def earliest(self):
        live = [t for t, _ in self.armed.values()]
        return min(live) if live else None


def _check_views(wheel, model):
    assert len(wheel) == len(model.armed)
    for f in range(wheel.capacity):
        entry = model.armed.get(f)
        assert wheel.armed(f) == (entry is not None)
        if entry is None:
            assert wheel.deadline_of(f) is None
        else:
            assert Fraction(wheel.deadline_of(f)) == model.tt(entry[0])
    nd = wheel.next_deadline()
    first = model.earliest()
    if first is None:
        assert nd is None
    else:
        assert nd is not None
        assert Fraction(nd) <= model.tt(first)                 # never late
        assert Fraction(nd) >= model.tt(model.cur)
        if first <= model.cur + wheel.slots:                    # due within one rotation
            assert Fraction(nd) == model.tt(first)


# Dyadic values only: every float operation below is exact, so the wheel's float
# arithmetic and the model's rationals must agree tick for tick.
intervals = st.sampled_from([0.125, 0.25, 0.5, 1.0, 2.0])
eighths = st.integers(-40, 400).map(lambda k: k / 8)


@st.composite
def scenarios(draw):
    capacity = draw(st.integers(1, 70))             # crosses byte and 32-bit word edges
    slots = draw(st.integers(1, 9))
    interval = draw(intervals)
    start = draw(st.integers(-16, 16)) * 0.25
    span = slots * interval
    flow = st.integers(0, capacity - 1)
    # offsets from the current time, in units of interval/8: -3 spans .. +6 spans
    offset = st.integers(int(-3 * span * 8 / interval), int(6 * span * 8 / interval))
    op = st.one_of(
        st.tuples(st.just("schedule"), flow, offset),
        st.tuples(st.just("schedule"), flow, offset),
        st.tuples(st.just("cancel"), flow, st.just(0)),
        st.tuples(st.just("advance"), st.just(0),
                  st.integers(-4, int(2 * span * 8 / interval))),
    )
    ops = draw(st.lists(op, max_size=80))
    return capacity, slots, interval, start, ops


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_matches_exact_model(scenario):
    capacity, slots, interval, start, ops = scenario
    wheel = TimerWheel(capacity, slots, interval, start)
    model = Model(start, interval)
    now = start
    deadlines = {}
    for kind, f, k in ops:
        step = k * interval / 8
        if kind == "schedule":
            d = now + step
            got = wheel.schedule(f, d)
            tick = model.schedule(f, d)
            deadlines[f] = d
            assert Fraction(got) == model.tt(tick)
            assert got >= d or tick == model.cur              # rounds up unless overdue
        elif kind == "cancel":
            assert wheel.cancel(f) == model.cancel(f)
        else:
            t = now + step                                     # may go backwards a little
            fired = wheel.advance(t)
            expect = model.advance(t)
            assert fired == expect
            for g in fired:
                assert deadlines[g] <= t                       # never early
            now = max(now, t)
        _check_views(wheel, model)
    # drain: everything still armed fires exactly once, in order
    end = now + 7 * slots * interval
    left = sorted((tick, f) for f, (tick, _) in model.armed.items())
    assert wheel.advance(end) == [f for _, f in left] == model.advance(end)
    assert len(wheel) == 0 and wheel.next_deadline() is None
    assert wheel.advance(end + 100 * slots * interval) == []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    capacity=st.integers(1, 100),
    slots=st.integers(1, 64),
    interval=st.floats(1e-5, 2.0),
    start=st.floats(-1e4, 1e4),
    seed=st.integers(0, 2**32 - 1),
)
def test_arbitrary_floats_never_early_at_most_one_tick_late(capacity, slots, interval, start, seed):
    rng = random.Random(seed)
    wheel = TimerWheel(capacity, slots, interval, start)
    span = slots * interval
    now = start + rng.uniform(0, span)
    wheel.advance(now)
    live = {}                                      # flow -> deadline
    fired_total = {}
    for _ in range(150):
        r = rng.random()
        f = rng.randrange(capacity)
        if r < 0.5:
            d = now + rng.uniform(-span, 5 * span)
            wheel.schedule(f, d)
            live[f] = d
        elif r < 0.6:
            assert wheel.cancel(f) == (f in live)
            live.pop(f, None)
        else:
            now += rng.uniform(0, span / 2)
            fired = wheel.advance(now)
            assert len(fired) == len(set(fired))
            for g in fired:
                d = live.pop(g)                    # KeyError: cancelled / stale timer fired
                assert d <= now                    # never early
                fired_total[g] = fired_total.get(g, 0) + 1
            for g, d in live.items():              # nothing due was left behind: late
                # by at most one tick (plus float noise), past deadlines fire at once
                assert d > now - interval * (1 + 1e-9) - 1e-9 * abs(now)
    now += 6 * span + interval
    rest = wheel.advance(now)
    assert sorted(rest) == sorted(live)
    assert len(wheel) == 0


def test_rounding_and_order():
    w = TimerWheel(64, 4, 1.0)
    assert w.span == 4.0
    assert w.schedule(5, 2.5) == 3.0           # rounds up
    assert w.schedule(3, 3.0) == 3.0           # exact tick stays
    assert w.schedule(40, 2.0000001) == 3.0
    assert w.schedule(1, 1.0) == 1.0
    assert w.next_deadline() == 1.0
    assert w.advance(0.999) == []
    assert w.advance(1.0) == [1]
    assert w.advance(2.9) == []
    assert w.advance(3.0) == [3, 5, 40]        # ascending ids within a tick
    assert w.advance(100.0) == []
    assert w.next_deadline() is None


def test_long_deadlines_use_round_counter():
    w = TimerWheel(8, 4, 0.5)                  # span 2.0
    w.schedule(7, 9.25)                        # tick 19: 4 wraps ahead
    w.schedule(6, 1.5)                         # tick 3, same bitmap (3 % 4 == 19 % 4)
    assert w.deadline_of(7) == 9.5
    assert w.next_deadline() == 1.5
    assert w.advance(1.5) == [6]
    # no bitmap holds a bit due this rotation: a never-late lower bound, the next
    # visit of flow 7's bitmap (tick 7, 3.5 s) + one span
    assert w.next_deadline() == 5.5
    for t in (3.5, 5.5, 7.5):
        assert w.advance(t) == []
        assert w.armed(7) and w.deadline_of(7) == 9.5
    assert w.next_deadline() == 9.5            # now due within one rotation: exact
    assert w.advance(9.4) == []
    assert w.advance(9.5) == [7]


def test_past_deadline_fires_at_next_advance():
    w = TimerWheel(16, 8, 1.0, start=10.0)
    w.advance(15.5)
    assert w.time == 15.0
    assert w.schedule(2, 3.0) == 15.0          # in the past: overdue
    assert w.schedule(1, 15.0) == 15.0         # exactly the current tick: overdue
    w.schedule(0, 16.0)
    assert w.next_deadline() == 15.0
    assert w.advance(15.0) == [1, 2]           # no tick elapsed, still due
    assert w.advance(20.0) == [0]


def test_reschedule_moves_and_cancel():
    w = TimerWheel(32, 8, 1.0)
    w.schedule(9, 2.0)
    w.schedule(9, 20.0)                        # moved: no stale firing at tick 2
    assert w.advance(10.0) == []
    assert w.cancel(9) is True
    assert w.cancel(9) is False
    assert w.advance(30.0) == []
    w.schedule(9, 31.0)
    w.schedule(9, 30.5)                        # moved earlier
    assert w.advance(31.0) == [9]
    assert not w.armed(9)


def test_time_going_backwards_is_a_noop():
    w = TimerWheel(4, 4, 1.0)
    w.advance(10.0)
    w.schedule(0, 5.0)                         # overdue
    assert w.advance(9.0) == []                # earlier than the wheel: nothing fires early
    assert w.armed(0)
    assert w.advance(10.0) == [0]


def test_validation():
    with pytest.raises(ValueError):
        TimerWheel(0, 4, 1.0)
    with pytest.raises(ValueError):
        TimerWheel(8, 0, 1.0)
    with pytest.raises(ValueError):
        TimerWheel(8, 70000, 1.0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            TimerWheel(8, 4, bad)
    with pytest.raises(ValueError):
        TimerWheel(8, 4, 1.0, start=float("nan"))
    with pytest.raises(TypeError):
        TimerWheel(8.0, 4, 1.0)
    with pytest.raises(TypeError):
        TimerWheel(8, True, 1.0)
    w = TimerWheel(8, 4, 1.0)
    for bad in (-1, 8, 1 << 40):
        with pytest.raises(ValueError):
            w.schedule(bad, 1.0)
        with pytest.raises(ValueError):
            w.cancel(bad)
        with pytest.raises(ValueError):
            w.armed(bad)
    w.schedule(3, 2.0)
    for bad in (float("nan"), float("inf"), 1e300):
        with pytest.raises(ValueError):
            w.schedule(3, bad)
        assert w.deadline_of(3) == 2.0         # a refused re-arm keeps the old timer
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ValueError):
            w.advance(bad)


def test_memory_per_bitmap_matches_the_paper():
    w = TimerWheel(65536, 16, 1e-4)
    assert w.bitmap_bytes == 8192              # 8 KB per bitmap for 64k flows
    assert TimerWheel(33, 1, 1.0).bitmap_bytes == 8   # whole 32-bit words
    assert w.memory_bytes == 17 * (8192 + 10) + 6 * 65536


def test_64k_flows_stay_fast():
    cap = 65536
    rng = random.Random(7)
    w = TimerWheel(cap, 512, 1e-3)              # span 0.512 s
    deadline = {}
    for f in range(cap):                        # up to ~6 wraps ahead
        d = rng.uniform(0.0, 3.0)
        w.schedule(f, d)
        deadline[f] = d
    for f in range(0, cap, 3):
        w.cancel(f)
        del deadline[f]
    for f in range(1, cap, 5):
        d = rng.uniform(0.0, 3.0)
        w.schedule(f, d)
        deadline[f] = d
    assert len(w) == len(deadline)
    seen = set()
    now = 0.0
    while now < 3.2:
        now += 0.01
        for f in w.advance(now):
            assert f not in seen and deadline[f] <= now
            seen.add(f)
            if f % 7 == 0 and deadline[f] < 1.0:   # re-arm some, as an RTO would
                d = now + 0.7
                w.schedule(f, d)
                deadline[f] = d
                seen.discard(f)
    assert seen == set(deadline) and len(w) == 0
