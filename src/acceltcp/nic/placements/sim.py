"""The simulator's NIC placement: a `NicDataplane` in front of a simulated link end.

`SimNicDevice` is the simulator's NIC: a frame device between a link
end and a host stack that runs `nic.dataplane.NicDataplane.process` on every frame (the
dataplane stays sans-I/O; the device supplies `now` from the loop). Frames from the link
enter on port WIRE: what leaves on HOST goes to the stack's receiver, what leaves on WIRE
back onto the link. Frames the host sends enter on port HOST. The device looks like the
link end to the stack and its runner (`mac`, `send`, `set_receiver`, `begin_batch` /
`end_batch`) plus `nic = True`, so `HostStack` offers setup offload on it. The NIC's work
is not the host's: inside a runner's batch the host's frames are only queued (like TX
descriptors), and run through the dataplane at `end_batch`, outside the runner's CPU
accounting; frames from the wire are processed before the runner's entry starts. Frames
the NIC sends to the host while handling the host's own frames (status reports,
refusals) are delivered by `loop.call_soon`, never re-entering the stack's entry.

The simulator's counterpart of the inline, process and xdp placements beside it
(docs/placements.md); `testbed.simnet.make_pair(loop, nic_b=True)` builds one.
"""

from ...io.deadline import DeadlineTimer
from ..dataplane import HOST, WIRE

__all__ = ["SimNicDevice"]


class SimNicDevice:
    """A `NicDataplane` in front of the link end `port` (see the module docstring)."""

    nic = True

    def __init__(self, loop, port, dataplane):
        self.loop = loop
        self.port = port
        self.dataplane = dataplane
        self.mac = port.mac
        self.syn_window = dataplane.syn_window
        self._time = loop.time
        self._receiver = None
        self._ring = None
        self._timer = DeadlineTimer(loop, self._on_timer)   # the dataplane's timers
        port.set_receiver(self._from_wire)

    def set_receiver(self, callback):
        self._receiver = callback

    def _from_wire(self, frame):
        self._deliver(self.dataplane.process(frame, WIRE, self._time()))
        self._arm()

    def _deliver(self, outs):
        for port, out in outs:
            if port == HOST:
                rx = self._receiver
                if rx is not None:
                    rx(out)
            else:
                self.port.send(out)

    def _arm(self):
        """Keep one loop timer at the dataplane's next deadline (RTOs, TIME-WAITs)."""
        self._timer.arm(self.dataplane.next_deadline())

    def _on_timer(self):
        self._deliver(self.dataplane.on_timer(self._time()))
        self._arm()

    def send(self, frame):
        """A frame from the host (port HOST); inside a batch only queued."""
        ring = self._ring
        if ring is not None:
            ring.append(frame)
            return True
        self._from_host(frame)
        return True

    def _from_host(self, frame):
        for port, out in self.dataplane.process(frame, HOST, self._time()):
            if port == WIRE:
                self.port.send(out)
            else:
                self.loop.call_soon(self._to_host, out)
        self._arm()

    def _to_host(self, frame):
        rx = self._receiver               # looked up now: the stack may attach later
        if rx is not None:
            rx(frame)

    def begin_batch(self):
        self._ring = []
        self.port.begin_batch()

    def end_batch(self):
        ring = self._ring
        self._ring = None
        if ring:
            for frame in ring:
                self._from_host(frame)
        self.port.end_batch()

    def __getattr__(self, name):          # stats, add_tap, capture...: the link end's
        return getattr(self.port, name)
