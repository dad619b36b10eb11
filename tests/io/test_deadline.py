"""DeadlineTimer: one call_at, moved earlier only, cleared before the callback runs."""

from acceltcp.io.deadline import DeadlineTimer
from acceltcp.io.sim import SimLoop


def test_earliest_deadline_wins_and_fires_once():
    with SimLoop(1) as loop:
        fired = []
        t = DeadlineTimer(loop, lambda: fired.append((loop.time(), t.when)))
        t.arm(None)
        assert t.when is None
        t.arm(2.0)
        t.arm(3.0)                    # later: the pending call stays
        t.arm(1.0)                    # earlier: moved
        assert t.when == 1.0
        loop.run_for(5.0)
    assert fired == [(1.0, None)]     # once, at 1.0, already cleared when it runs


def test_cancel_and_rearm_from_the_callback():
    with SimLoop(1) as loop:
        fired = []

        def cb():
            fired.append(loop.time())
            if len(fired) < 3:
                t.arm(loop.time() + 1.0)
        t = DeadlineTimer(loop, cb)
        t.arm(1.0)
        loop.run_for(10.0)
        assert fired == [1.0, 2.0, 3.0]
        t.arm(20.0)
        t.cancel()
        assert t.when is None
        loop.run_for(30.0)
    assert fired == [1.0, 2.0, 3.0]
