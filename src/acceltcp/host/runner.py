"""Drive a HostStack from an asyncio loop (a real one or io.sim.SimLoop).

The runner is the stack's only driver: it installs itself as the device's receiver,
keeps one `loop.call_at` armed at `stack.next_deadline()` (re-armed after every entry
and, through `stack.wakeup`, whenever an application call moves the deadline earlier),
and optionally accounts the host CPU spent inside the stack entries -- in total, or by
category.

CPU by category (``cpu_categories = True``): before a frame entry runs, the stack says
what it is about (`HostStack.entry_kind`: setup, teardown, data, nic, l2); the entry's
measured CPU goes to that kind, except the part spent in the application's callbacks
(``stack.app_ns``), which goes to ``app`` -- but for the socket calls the application
made from them (``stack.api_ns``): their TCP work goes to ``data`` (send, recv) and
``teardown`` (close, shutdown, abort, a teardown offer to the NIC included). Timer
entries go to ``timers`` (their callbacks' time split the same way). The stack times
the callbacks with ``perf_counter_ns`` (a read costs ~50 ns, ``process_time_ns``'s
~600: at ~10 reads per short-lived transaction the CPU clock would add ~20 % to what it
measures), so an entry's CPU is split in the proportions of its wall time: app = CPU x
app wall / entry wall. The categories add up to ``cpu_ns`` exactly; ``entries_by_kind``
counts the entries of each kind (a timer entry under ``timers``); ``app_api_ns`` is the
socket calls' share of ``data`` + ``teardown`` (what ``app`` would be with them). The
classification runs outside the measured interval; inside it the accounting adds two
``perf_counter_ns`` reads per entry, per application callback and per socket call
from one.

`stack.clock` must be `loop.time` (the runner checks that the two agree at start).
"""

import time
from typing import Protocol, runtime_checkable

__all__ = ["StackRunner", "BatchingDevice", "CPU_KINDS"]

#: The categories of `StackRunner.cpu_by_kind`, in report order.
CPU_KINDS = ("setup", "teardown", "data", "nic", "l2", "timers", "app")


@runtime_checkable
class BatchingDevice(Protocol):
    """A device with a TX ring (the simulated link, the simulator's NIC, a NIC placement
    on a TAP): frames sent between ``begin_batch()`` and ``end_batch()`` are queued and
    handed over together at the end. A bare TAP is not one."""

    def begin_batch(self) -> None: ...
    def end_batch(self) -> None: ...


class StackRunner:
    """`StackRunner(loop, stack, device)`; `close()` detaches it.

    `cpu_accounting = True` accumulates `time.process_time_ns()` spent in
    `receive_frame` + `on_timer` (app callbacks run from inside them included) into
    `cpu_ns`; `entries` counts the entries measured (frames and timer firings).
    `cpu_categories = True` (which turns `cpu_accounting` on) also splits it into
    `cpu_by_kind` and counts `entries_by_kind` (the module docstring).

    A `BatchingDevice` gets each entry bracketed by `begin_batch()`/`end_batch()`:
    frames the entry sends are queued and handed over when it returns, outside the
    accounting.
    """

    def __init__(self, loop, stack, device=None):
        self.loop = loop
        self.stack = stack
        self.device = device if device is not None else stack.device
        if abs(stack.clock() - loop.time()) > 1e-3:
            raise ValueError("stack.clock must be the loop's clock (loop.time)")
        self.cpu_accounting = False
        self.cpu_ns = 0
        self.entries = 0
        self._by_kind = False
        self.cpu_by_kind = dict.fromkeys(CPU_KINDS, 0)
        self.entries_by_kind = dict.fromkeys(CPU_KINDS, 0)
        self.app_api_ns = 0
        self.frames = 0
        self.timer_fires = 0
        self._handle = None
        self._when = None
        self._in_entry = False
        self._closed = False
        self._batched = isinstance(self.device, BatchingDevice)
        self._attach()
        stack.wakeup = self._wakeup
        self._arm()

    def _attach(self):
        """Route the device's frames into the stack (subclasses: other delivery)."""
        self.device.set_receiver(self._on_frame)

    def _on_frame(self, frame):
        self._in_entry = True
        self.frames += 1
        if self._batched:
            self.device.begin_batch()
        try:
            if self.cpu_accounting:
                if self._by_kind:
                    self._frame_by_kind(frame)
                else:
                    t0 = time.process_time_ns()
                    self.stack.receive_frame(frame)
                    self.cpu_ns += time.process_time_ns() - t0
                self.entries += 1
            else:
                self.stack.receive_frame(frame)
        finally:
            if self._batched:
                self.device.end_batch()
            self._in_entry = False
        self._arm()

    def _on_timer(self):
        self._handle = None
        self._when = None
        if self._closed:
            return
        self._in_entry = True
        self.timer_fires += 1
        if self._batched:
            self.device.begin_batch()
        try:
            if self.cpu_accounting:
                if self._by_kind:
                    self._timer_by_kind()
                else:
                    t0 = time.process_time_ns()
                    self.stack.on_timer()
                    self.cpu_ns += time.process_time_ns() - t0
                self.entries += 1
            else:
                self.stack.on_timer()
        finally:
            if self._batched:
                self.device.end_batch()
            self._in_entry = False
        self._arm()

    def _frame_by_kind(self, frame):
        stack = self.stack
        kind = stack.entry_kind(frame)          # outside the measured interval
        api = stack.api_ns
        a0, d0, x0 = stack.app_ns, api["data"], api["teardown"]
        t0 = time.process_time_ns()
        w0 = time.perf_counter_ns()
        try:
            stack.receive_frame(frame)
        finally:
            w = time.perf_counter_ns() - w0
            dt = time.process_time_ns() - t0
            self.cpu_ns += dt
            self._charge(kind, dt, w, stack.app_ns - a0, api["data"] - d0,
                         api["teardown"] - x0)

    def _timer_by_kind(self):
        stack = self.stack
        api = stack.api_ns
        a0, d0, x0 = stack.app_ns, api["data"], api["teardown"]
        t0 = time.process_time_ns()
        w0 = time.perf_counter_ns()
        try:
            stack.on_timer()
        finally:
            w = time.perf_counter_ns() - w0
            dt = time.process_time_ns() - t0
            self.cpu_ns += dt
            self._charge("timers", dt, w, stack.app_ns - a0, api["data"] - d0,
                         api["teardown"] - x0)

    def _charge(self, kind, dt, wall, app, data, teardown):
        """`dt` CPU ns of one entry of `kind` that took `wall` ns; `app` of those in the
        application's callbacks, of which `data` and `teardown` in its socket calls
        (wall ns, nested inside each other and inside the entry): the CPU split in
        those proportions, clamped so that the categories always add up to `dt`."""
        if app and wall > 0:
            if app > wall:
                app = wall
            teardown = dt * min(teardown, app) // wall
            data = dt * min(data, app) // wall
            app = dt * app // wall
            if teardown > app:
                teardown = app
            if data > app - teardown:
                data = app - teardown
        else:
            app = data = teardown = 0
        by = self.cpu_by_kind
        by[kind] += dt - app
        by["app"] += app - data - teardown
        by["data"] += data
        by["teardown"] += teardown
        self.app_api_ns += data + teardown
        self.entries_by_kind[kind] += 1

    @property
    def cpu_categories(self):
        """Account the CPU by category (module docstring); on turns `cpu_accounting` on
        and the stack's application timing with it."""
        return self._by_kind

    @cpu_categories.setter
    def cpu_categories(self, on):
        self._by_kind = bool(on)
        if on:
            self.cpu_accounting = True
        self.stack.app_timing = bool(on)

    def _wakeup(self):
        if not self._in_entry:
            self._arm()

    def _arm(self):
        """Make sure a call_at is pending at or before stack.next_deadline()."""
        d = self.stack.next_deadline()
        if d is None or self._closed:
            return
        w = self._when
        if w is not None:
            if w <= d:
                return              # an earlier (or equal) wakeup is already pending
            self._handle.cancel()
        self._when = d
        self._handle = self.loop.call_at(d, self._on_timer)

    def reset_cpu(self):
        self.cpu_ns = 0
        self.entries = 0
        self.cpu_by_kind = dict.fromkeys(CPU_KINDS, 0)
        self.entries_by_kind = dict.fromkeys(CPU_KINDS, 0)
        self.app_api_ns = 0

    def close(self):
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            self._when = None
        self._detach()
        if self.stack.wakeup == self._wakeup:
            self.stack.wakeup = None

    def _detach(self):
        self.device.set_receiver(None)
