"""The timer heap: lazy invalidation, wakeup hook, reaping; and the runner that drives it."""

import pytest

from acceltcp.host.runner import StackRunner
from acceltcp.host.stack import HostStack

from ..util import PEER_IP, PEER_MAC, US_IP, FakeDevice, FakeTcb, syn


@pytest.fixture
def fstack(make_stack):
    s = make_stack(tcb_class=FakeTcb)
    s.arp_add(PEER_IP, PEER_MAC)
    s.wakeups = []
    s.wakeup = lambda: s.wakeups.append(s.next_deadline())
    return s


def arm(stack, conn, deadline):
    conn.deadline = deadline
    stack.send(conn, b"")          # any app call re-reads the deadline


def test_pushes_only_when_the_deadline_moves_earlier(fstack):
    c = fstack.connect(PEER_IP, 80)
    arm(fstack, c, 110.0)
    arm(fstack, c, 120.0)
    assert len(fstack._heap) == 1
    arm(fstack, c, 105.0)
    assert len(fstack._heap) == 2
    assert fstack.next_deadline() == 105.0


def test_fires_only_what_is_due(fstack, clock):
    a = fstack.connect(PEER_IP, 80)
    b = fstack.connect(PEER_IP, 81)
    arm(fstack, a, 101.0)
    arm(fstack, b, 102.0)
    clock.now = 101.5
    fstack.on_timer()
    assert a.timer_calls == [101.5] and b.timer_calls == []
    assert fstack.next_deadline() == 102.0


def test_a_deadline_moved_later_is_rearmed_not_fired(fstack, clock):
    c = fstack.connect(PEER_IP, 80)
    arm(fstack, c, 101.0)
    c.deadline = 103.0                 # e.g. an ACK restarted the RTO
    clock.now = 101.0
    fstack.on_timer()
    assert c.timer_calls == []
    assert fstack.next_deadline() == 103.0
    clock.now = 103.0
    fstack.on_timer()
    assert c.timer_calls == [103.0]


def test_stale_entries_are_skipped(fstack, clock):
    c = fstack.connect(PEER_IP, 80)
    arm(fstack, c, 110.0)
    arm(fstack, c, 101.0)              # 110 is now stale
    clock.now = 101.0
    fstack.on_timer()
    assert c.timer_calls == [101.0]
    clock.now = 110.0
    fstack.on_timer()
    assert c.timer_calls == [101.0]
    assert fstack.next_deadline() is None


def test_a_timer_that_stays_due_does_not_loop_forever(fstack, clock):
    c = fstack.connect(PEER_IP, 80)
    c.on_timer = lambda now: c.timer_calls.append(now)     # never clears its deadline
    arm(fstack, c, 101.0)
    clock.now = 102.0
    fstack.on_timer()
    assert c.timer_calls == [102.0]


def test_wakeup_only_when_the_earliest_deadline_moves_earlier(fstack):
    a = fstack.connect(PEER_IP, 80)
    arm(fstack, a, 110.0)
    arm(fstack, a, 105.0)
    b = fstack.connect(PEER_IP, 81)
    arm(fstack, b, 107.0)              # later than the earliest: no wakeup
    assert fstack.wakeups == [110.0, 105.0]


def test_no_wakeup_from_inside_an_entry(fstack, dev):
    fstack.listen(80)
    FakeTcb.accept_syn = lambda self, seg, now: setattr(self, "deadline", 150.0)
    try:
        fstack.receive_frame(syn())
    finally:
        del FakeTcb.accept_syn
    assert fstack.wakeups == []
    assert fstack.next_deadline() == 150.0


def test_closed_connections_leave_the_table_and_the_heap(fstack, clock):
    c = fstack.connect(PEER_IP, 80)
    arm(fstack, c, 101.0)
    c.on_timer = lambda now: c.finish()
    clock.now = 101.0
    fstack.on_timer()
    assert fstack.connections == {}
    assert fstack.next_deadline() is None
    assert fstack.counters["conns_closed"] == 1


def test_heap_is_compacted(fstack, clock):
    conns = [fstack.connect(PEER_IP, 1000 + i) for i in range(10)]
    for k in range(100):
        for c in conns:
            arm(fstack, c, 1000.0 - k)     # always earlier: a push each time
    assert len(fstack._heap) == 1000
    fstack.on_timer()
    assert len(fstack._heap) == 10


def test_arp_retries_share_next_deadline(make_stack, clock):
    stack = make_stack(tcb_class=FakeTcb)
    c = stack.connect(PEER_IP, 80)
    c.output(c, 0x02, 0, 0, 0, b"", b"")   # unresolved: ARP retry in 1 s
    assert stack.next_deadline() == pytest.approx(101.0)


# ---------------------------------------------------------------------- runner
@pytest.fixture
def rstack(loop):
    dev = FakeDevice()
    s = HostStack(dev, US_IP, loop.time, tcb_class=FakeTcb, strict=True)
    s.arp_add(PEER_IP, PEER_MAC)
    return s, StackRunner(loop, s, dev), dev


def test_runner_installs_receiver_and_fires_timers_on_time(loop, rstack):
    stack, runner, dev = rstack
    assert dev.receiver == runner._on_frame
    c = stack.connect(PEER_IP, 80)
    arm(stack, c, 5.0)
    arm(stack, c, 3.0)
    loop.run_for(10)
    assert c.timer_calls == [3.0]
    assert runner.timer_fires == 1


def test_runner_rearms_after_frames(loop, rstack):
    stack, runner, dev = rstack
    stack.listen(80)
    FakeTcb.accept_syn = lambda self, seg, now: setattr(self, "deadline", now + 2.0)
    try:
        dev.receiver(syn())
    finally:
        del FakeTcb.accept_syn
    loop.run_for(3)
    [child] = stack.connections.values()
    assert child.timer_calls == [2.0]


def test_runner_cpu_accounting(loop, rstack):
    stack, runner, dev = rstack
    runner.cpu_accounting = True
    for _ in range(50):
        dev.receiver(syn())
    assert runner.entries == 50 and runner.cpu_ns > 0
    runner.reset_cpu()
    assert runner.cpu_ns == 0


def test_runner_close_detaches(loop, rstack):
    stack, runner, dev = rstack
    runner.close()
    assert dev.receiver is None and stack.wakeup is None


def test_runner_rejects_a_foreign_clock(loop):
    dev = FakeDevice()
    s = HostStack(dev, US_IP, lambda: 1e6)
    with pytest.raises(ValueError):
        StackRunner(loop, s, dev)
