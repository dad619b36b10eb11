"""ServerCore: the simulated server host's one CPU core -- an RX ring and the cost model
between the server stack and its device (the package docstring)."""

import collections

from ...host.runner import BatchingDevice

RX_RING = 8192         # frames waiting for the simulated server core


# ---------------------------------------------------------------------- the server core
class ServerCore:
    """The simulated server host as one CPU core in virtual time (``--server-cpu charged``
    or ``fixed``): a frame device between the server stack and its device (link end or
    NIC) -- the stack's device and its `StackRunner`'s. A frame is handed to the runner
    at once when the core is idle; the CPU that work took since the last hand-over (this
    frame, and the timers that ran in between) then keeps the core busy for that long on
    the virtual clock. Frames arriving meanwhile wait, in order, in an RX ring of
    ``ring`` frames (beyond: dropped, counted). Replies leave when the frame's
    processing starts (they are sent from inside it), so a transaction's latency misses
    its last frame's service time; throughput is exact: the core does one second of
    work per virtual second at most.

    What the work took: with ``cost=None`` (charged) the CPU the runner measured
    (``time.process_time``); with a `eval.cost.CostModel` (fixed) the model's price of
    the frames received and sent, the runner's timer entries and the connections
    ``connections()`` (set by `count_connections`) reports -- then the run does not
    depend on how fast the machine is."""

    def __init__(self, loop, device, cost=None, ring=RX_RING):
        self.device = device
        self.loop = loop
        self.cost = cost
        self.ring = ring
        self.runner = None
        self.queue = collections.deque()
        self.busy_until = 0.0
        self.busy_s = 0.0
        self.drops = 0
        self.max_queue = 0
        self.frames_in = 0
        self.frames_out = 0
        self._connections = None
        self._entry = None
        self._cpu_seen = 0
        self._drain_handle = None
        self._send = device.send
        if isinstance(device, BatchingDevice):
            self.begin_batch = device.begin_batch
            self.end_batch = device.end_batch
        device.set_receiver(self._from_device)

    def __getattr__(self, name):        # mac, nic, syn_window...: the device's
        if name.startswith("_") or "device" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["device"], name)

    def attach(self, runner):
        """Charge the work of `runner` (charged: its ``cpu_accounting`` is turned on)."""
        self.runner = runner
        if self.cost is None:
            runner.cpu_accounting = True
        self._cpu_seen = self.cpu_ns

    def count_connections(self, connections):
        """``connections()`` -> the connections accepted so far (the fixed model's
        ``conn`` term)."""
        self._connections = connections
        self._cpu_seen = self.cpu_ns

    @property
    def cpu_ns(self):
        """The CPU the core has done so far: measured (charged) or the model's (fixed)."""
        cost = self.cost
        if cost is None:
            return self.runner.cpu_ns if self.runner is not None else 0
        timers = self.runner.timer_fires if self.runner is not None else 0
        conns = self._connections() if self._connections is not None else 0
        return cost.ns(self.frames_in, self.frames_out, timers, conns)

    @property
    def cpu_by_kind(self):
        """The runner's measured CPU ns by category (`host.runner.CPU_KINDS`; all zero
        unless its ``cpu_categories`` is on): what the core's work was about, measured
        whatever the model charges."""
        r = self.runner
        return dict(r.cpu_by_kind) if r is not None else {}

    @property
    def entries_by_kind(self):
        r = self.runner
        return dict(r.entries_by_kind) if r is not None else {}

    def set_receiver(self, callback):       # the runner's frame entry
        self._entry = callback

    def send(self, frame):                  # the stack's frames
        self.frames_out += 1
        return self._send(frame)

    def _from_device(self, frame):
        if self.queue or self.loop.time() < self.busy_until:
            if len(self.queue) >= self.ring:
                self.drops += 1
                return
            self.queue.append(frame)
            if len(self.queue) > self.max_queue:
                self.max_queue = len(self.queue)
            if self._drain_handle is None:
                self._drain_handle = self.loop.call_at(self.busy_until, self._drain)
            return
        self._run(frame)

    def _run(self, frame):
        entry = self._entry
        if entry is not None:
            self.frames_in += 1
            entry(frame)
        cpu = self.cpu_ns
        spent = (cpu - self._cpu_seen) * 1e-9
        self._cpu_seen = cpu
        self.busy_s += spent
        now = self.loop.time()
        self.busy_until = (self.busy_until if self.busy_until > now else now) + spent

    def _drain(self):
        self._drain_handle = None
        q = self.queue
        while q and self.loop.time() >= self.busy_until:
            self._run(q.popleft())
        if q:
            self._drain_handle = self.loop.call_at(self.busy_until, self._drain)

    def close(self):
        if self._drain_handle is not None:
            self._drain_handle.cancel()
            self._drain_handle = None
        self.device.set_receiver(None)
