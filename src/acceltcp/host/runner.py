"""Drive a HostStack from an asyncio loop (a real one or io.sim.SimLoop).

The runner is the stack's only driver: it installs itself as the device's receiver,
keeps one `loop.call_at` armed at `stack.next_deadline()` (re-armed after every entry
and, through `stack.wakeup`, whenever an application call moves the deadline earlier),
and optionally accounts the host CPU spent inside the stack entries.

`stack.clock` must be `loop.time` (the runner checks that the two agree at start).
"""

import time

__all__ = ["StackRunner"]


class StackRunner:
    """`StackRunner(loop, stack, device)`; `close()` detaches it.

    `cpu_accounting = True` accumulates `time.process_time_ns()` spent in
    `receive_frame` + `on_timer` (app callbacks run from inside them included) into
    `cpu_ns`; `entries` counts the entries measured (frames and timer firings).

    A device with `begin_batch()`/`end_batch()` (a TX ring: the simulated link, a TAP
    writing many frames per syscall) gets each entry bracketed by them: frames the
    entry sends are queued and handed over when it returns, outside the accounting.
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
        self.frames = 0
        self.timer_fires = 0
        self._handle = None
        self._when = None
        self._in_entry = False
        self._closed = False
        self._batched = hasattr(self.device, "begin_batch")
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
