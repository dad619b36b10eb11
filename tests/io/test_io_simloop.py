"""SimLoop: virtual time, FIFO timers, determinism, deadlock detection, asyncio compat."""

import asyncio
import contextlib
import random
import socket
import warnings

import pytest

from acceltcp.io.sim import SimDeadlock, SimLoop, SimUnsupported


@pytest.fixture
def loop():
    lp = SimLoop()
    yield lp
    lp.shutdown()


def _selects(loop):
    """Record every wait the loop asks of its selector (the timeouts). A SimLoop's
    selector never blocks: each call is one jump of the virtual clock. Counting the
    calls tells whether the loop waited once or stepped, without reading a real clock
    (a wall-time bound fails on a loaded machine)."""
    calls = []
    sel = loop._selector
    real = sel.select

    def select(timeout=None):
        calls.append(timeout)
        return real(timeout)
    sel.select = select
    return calls


# -- virtual time ---------------------------------------------------------------


def test_clock_starts_at_zero_and_is_float(loop):
    assert loop.time() == 0.0
    loop.call_at(2, lambda: None)
    loop.run_for(5)
    assert loop.time() == 5.0 and isinstance(loop.time(), float)


def test_long_sleep_is_instant(loop):
    calls = _selects(loop)
    loop.run_until_complete(asyncio.sleep(1000))
    assert loop.time() == pytest.approx(1000.0, abs=1e-9)
    assert [t for t in calls if t] == [1000.0]          # one jump, no real wait
    # far beyond asyncio's 24 h MAXIMUM_SELECT_TIMEOUT: asyncio caps the wait it asks
    # for, the virtual clock still jumps straight to the timer
    del calls[:]
    loop.run_until_complete(asyncio.sleep(10 * 86400))
    assert loop.time() == pytest.approx(1000.0 + 10 * 86400, abs=1e-6)
    assert [t for t in calls if t] == [86400.0]


def test_timer_fires_at_exact_virtual_time(loop):
    seen = []
    for when in (0.5, 1e-6, 3.25, 1e-6 + 1e-9):
        loop.call_at(when, lambda w=when: seen.append((w, loop.time())))
    loop.run_for(10)
    assert [w for w, _ in seen] == sorted(w for w, _ in seen)
    for w, t in seen:
        assert t == w


def test_huge_virtual_times_do_not_stall():
    # At 2**40 s one ulp is ~0.24 ms, larger than asyncio's 1 ns clock resolution.
    with SimLoop(start=2.0**40) as lp:
        lp.run_until_complete(asyncio.sleep(1.0))
        lp.run_until_complete(asyncio.sleep(0))
        assert lp.time() == 2.0**40 + 1.0


def test_call_later_relative_to_virtual_now(loop):
    loop.run_for(7)
    fired = []
    loop.call_later(3, lambda: fired.append(loop.time()))
    loop.run_for(10)
    assert fired == [10.0]
    assert loop.time() == 17.0


# -- FIFO for equal deadlines ---------------------------------------------------


def test_equal_time_callbacks_run_in_scheduling_order(loop):
    order = []
    rng = random.Random(1)
    expected = []
    for i in range(2000):
        when = rng.choice([1.0, 2.0, 3.0])
        loop.call_at(when, order.append, (when, i))
        expected.append((when, i))
    loop.run_for(5)
    assert order == sorted(expected)  # by time, then by scheduling order


def test_equal_time_fifo_with_cancellations_and_reentry(loop):
    order = []
    handles = [loop.call_at(1.0, order.append, i) for i in range(500)]
    for h in handles[::3]:
        h.cancel()  # enough cancellations to trigger asyncio's heap rebuild

    def later():
        # scheduled later for the same instant: runs after everything already queued
        loop.call_at(1.0, order.append, "re")
        loop.call_later(0, order.append, "now")

    def at_one():
        loop.call_at(1.0, order.append, "from-1.0")  # same instant, scheduled at it

    loop.call_at(0.5, later)
    loop.call_at(1.0, at_one)  # scheduled after the 500
    loop.run_for(2)
    kept = [i for i in range(500) if i % 3]
    assert order == ["now"] + kept + ["re", "from-1.0"]


def test_call_soon_before_timers_of_same_instant(loop):
    order = []

    def first():
        loop.call_soon(order.append, "soon")
        loop.call_at(loop.time(), order.append, "at-now")

    loop.call_at(1.0, first)
    loop.call_at(1.0, order.append, "timer")
    loop.run_for(1)
    assert order == ["timer", "soon", "at-now"]


# -- run_for / run_until --------------------------------------------------------


def test_run_for_runs_everything_up_to_the_deadline_inclusive(loop):
    fired = []
    for t in (0.1, 1.0, 1.0 + 1e-6, 2.0):
        loop.call_at(t, fired.append, t)

    def chain():  # a cascade of call_soon at exactly the deadline must complete
        loop.call_soon(loop.call_soon, fired.append, "cascade")

    loop.call_at(1.0, chain)
    loop.run_for(1.0)
    assert fired == [0.1, 1.0, "cascade"]
    assert loop.time() == 1.0
    loop.run_for(0)
    assert fired == [0.1, 1.0, "cascade"]
    loop.run_for(5)
    assert fired == [0.1, 1.0, "cascade", 1.0 + 1e-6, 2.0]
    assert loop.time() == 6.0


def test_run_for_with_nothing_scheduled_just_advances(loop):
    loop.run_for(3.5)
    assert loop.time() == 3.5
    with pytest.raises(ValueError):
        loop.run_for(-1)


def test_run_until_predicate_and_timeout(loop):
    box = []
    loop.call_at(2.0, box.append, 1)
    loop.call_at(4.0, box.append, 2)
    assert loop.run_until(lambda: len(box) == 1, timeout=10)
    assert loop.time() == 2.0
    assert not loop.run_until(lambda: len(box) == 5, timeout=3)
    assert loop.time() == 5.0 and box == [1, 2]
    assert loop.run_until(lambda: True, timeout=0)  # already true: no time passes
    assert loop.time() == 5.0


def test_run_until_without_timeout_raises_deadlock_when_idle(loop):
    with pytest.raises(SimDeadlock):
        loop.run_until(lambda: False)


def test_run_helper_returns_result_and_times_out(loop):
    async def work(d):
        await asyncio.sleep(d)
        return d * 2

    assert loop.run(work(3)) == 6
    assert loop.time() == 3.0
    with pytest.raises(TimeoutError):
        loop.run(work(100), timeout=5)
    assert loop.time() == 8.0


# -- deadlock -------------------------------------------------------------------


def test_deadlock_raises_instead_of_hanging(loop):
    fut = loop.create_future()
    calls = _selects(loop)
    with pytest.raises(SimDeadlock):
        loop.run_until_complete(fut)
    assert calls == [None]            # raised by the first wait for ever, not after one
    # the loop is still usable afterwards
    loop.call_later(1, fut.set_result, "ok")
    assert loop.run_until_complete(fut) == "ok"


def test_deadlock_between_tasks(loop):
    async def waiter(ev):
        await ev.wait()

    async def main():
        a, b = asyncio.Event(), asyncio.Event()
        await asyncio.gather(waiter(a), waiter(b))

    with pytest.raises(SimDeadlock):
        loop.run_until_complete(main())


def test_run_forever_with_nothing_to_do_is_a_deadlock(loop):
    with pytest.raises(SimDeadlock):
        loop.run_forever()


# -- determinism ----------------------------------------------------------------


def _trace_run(seed):
    """A busy mix of tasks, queues, events and timers driven by the loop's rng."""
    trace = []
    with SimLoop(seed) as lp:
        rng = lp.rng

        async def producer(q, name):
            for i in range(200):
                await asyncio.sleep(rng.expovariate(1000.0))
                await q.put((name, i))
                trace.append((lp.time(), "put", name, i))

        async def consumer(q, done):
            while True:
                item = await q.get()
                trace.append((lp.time(), "get") + item)
                if rng.random() < 0.1:
                    await asyncio.sleep(rng.choice([0, 1e-4, 1e-3]))
                q.task_done()
                if item[1] == 199:
                    done.set()

        def tick(n):
            trace.append((lp.time(), "tick", n))
            if n < 300:
                lp.call_later(rng.choice([1e-4, 2e-4, 5e-4]), tick, n + 1)

        async def main():
            q = asyncio.Queue(maxsize=5)
            dones = [asyncio.Event() for _ in range(3)]
            cons = [asyncio.create_task(consumer(q, dones[0])) for _ in range(3)]
            prods = [asyncio.create_task(producer(q, f"p{k}")) for k in range(3)]
            lp.call_soon(tick, 0)
            await asyncio.gather(*prods)
            await q.join()
            for c in cons:
                c.cancel()
            try:
                async with asyncio.timeout(0.01):
                    await asyncio.Event().wait()
            except TimeoutError:
                trace.append((lp.time(), "timeout"))

        lp.run_until_complete(main())
        lp.run_for(1.0)
    return trace


def test_same_seed_same_trace_different_seed_different_trace():
    t1 = _trace_run(7)
    t2 = _trace_run(7)
    t3 = _trace_run(8)
    assert len(t1) > 1000
    assert t1 == t2
    assert t1 != t3


# -- asyncio compatibility ------------------------------------------------------


def test_asyncio_primitives_run_unchanged(loop):
    async def slow(x, d):
        await asyncio.sleep(d)
        return x

    async def main():
        assert asyncio.get_running_loop() is loop
        results = await asyncio.gather(slow(1, 3), slow(2, 1), slow(3, 2))
        assert results == [1, 2, 3] and loop.time() == 3.0
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(slow(0, 10), timeout=0.5)
        assert loop.time() == 3.5
        done, pending = await asyncio.wait(
            [asyncio.create_task(slow(i, i)) for i in (1, 5)],
            return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1 and len(pending) == 1 and loop.time() == 4.5
        for t in pending:
            t.cancel()
        lock, cond = asyncio.Lock(), asyncio.Condition()
        async with lock:
            pass
        async with cond:
            loop.call_later(1, lambda: asyncio.ensure_future(_notify(cond)))
            await cond.wait()
        sem = asyncio.Semaphore(2)
        async with sem:
            pass
        # streams machinery without a socket
        reader = asyncio.StreamReader()
        loop.call_later(0.25, reader.feed_data, b"hello\nworld")
        loop.call_later(0.5, reader.feed_eof)
        assert await reader.readline() == b"hello\n"
        assert await reader.read() == b"world"
        return loop.time()

    async def _notify(cond):
        async with cond:
            cond.notify_all()

    assert loop.run_until_complete(main()) == pytest.approx(6.0)


def test_asyncio_runner_with_loop_factory():
    async def main():
        await asyncio.sleep(123)
        return asyncio.get_running_loop().time()

    with asyncio.Runner(loop_factory=SimLoop) as runner:
        assert runner.run(main()) == 123.0


def test_async_generators_and_context_vars(loop):
    import contextvars

    var = contextvars.ContextVar("v", default=0)

    async def agen():
        for i in range(3):
            await asyncio.sleep(1)
            yield i

    async def main():
        var.set(5)
        got = [x async for x in agen()]
        seen = []
        loop.call_later(1, lambda: seen.append(var.get()))
        await asyncio.sleep(2)
        return got, seen

    assert loop.run_until_complete(main()) == ([0, 1, 2], [5])


def test_strict_mode_reraises_callback_exceptions(loop):
    def boom():
        raise ZeroDivisionError("in callback")

    loop.call_later(1, boom)
    with pytest.raises(ZeroDivisionError):
        loop.run_for(2)


def test_strict_error_stops_the_iteration_and_loop_stays_usable(loop):
    seen = []

    def boom():
        raise KeyError("x")

    async def main():
        loop.call_later(1, boom)
        loop.call_later(1, seen.append, "same-instant")
        await asyncio.sleep(5)
        return "done"

    task = loop.create_task(main())
    with pytest.raises(KeyError):
        loop.run_until_complete(task)
    assert loop.time() == 1.0 and seen == ["same-instant"]  # the iteration completes
    assert loop.run_until_complete(task) == "done"
    assert loop.time() == 5.0


def test_non_strict_mode_logs_like_asyncio(caplog):
    with SimLoop(strict=False) as lp:
        lp.call_later(1, lambda: 1 / 0)
        lp.run_for(2)
        assert lp.time() == 2.0
    assert "ZeroDivisionError" in caplog.text


def test_real_io_and_threads_are_refused(loop):
    a, b = socket.socketpair()
    try:
        with pytest.raises(SimUnsupported):
            loop.add_reader(a.fileno(), lambda: None)
    finally:
        a.close()
        b.close()
    with pytest.raises(SimUnsupported):
        loop.run_in_executor(None, print)


def test_context_manager_installs_and_cleans_up():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with SimLoop.new(3) as lp:
            assert asyncio.get_event_loop() is lp
            assert lp.seed == 3

            async def forever():
                try:
                    await asyncio.sleep(1e9)
                finally:
                    await asyncio.sleep(1)  # cleanup that takes virtual time

            task = lp.create_task(forever())
            lp.run_for(1)
        assert lp.is_closed()
        assert task.cancelled()
    # closing twice is harmless
    lp.shutdown()
    with contextlib.suppress(RuntimeError):
        lp.close()
