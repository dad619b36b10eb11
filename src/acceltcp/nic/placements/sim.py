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

The classic TOE offloads (``toe``: any of "csum", "tso", "lro"; nic/toe.py) sit at the
host port: with "csum" or "tso" the device takes the stack's data segments through
``send_segment(header, payload, gso_size)`` (partial checksum, maybe a super-segment),
completes and cuts them, and runs each resulting frame through the dataplane's host port
like any other; with "lro" the frames the dataplane sends up within ``lro_hold``
seconds of the first (interrupt moderation: a NIC raises one interrupt per batch) are
coalesced before the stack sees them. ``host_port`` counts what crosses the host port
(frames and bytes each way: the "PCIe transfers" the offloads save).

The simulator's counterpart of the inline, process and xdp placements beside it
(docs/placements.md); `testbed.simnet.make_pair(loop, nic_b=True)` builds one.
"""

from ...io.deadline import DeadlineTimer
from ..dataplane import HOST, WIRE
from ..toe import TOE_OFFLOADS, Lro, segment, toe_set

__all__ = ["SimNicDevice", "TOE_OFFLOADS"]


class SimNicDevice:
    """A `NicDataplane` in front of the link end `port` (see the module docstring).
    ``toe``: the TOE offloads the NIC does at its host port (TOE_OFFLOADS); ``lro_hold``:
    how long LRO holds the first frame of a batch for more (seconds)."""

    nic = True
    chimney = True          # the Python dataplane runs TCP Chimney (nic.chimney)

    def __init__(self, loop, port, dataplane, toe=(), lro_hold=20e-6):
        self.toe = toe = toe_set(toe)
        self.offload = bool(toe & {"csum", "tso"})   # the stack uses send_segment
        self.lro = Lro() if "lro" in toe else None
        self._lro_batch = None
        self.lro_hold = lro_hold
        self.host_port = dict.fromkeys(("frames_to_host", "bytes_to_host",
                                        "frames_from_host", "bytes_from_host",
                                        "tso_segments"), 0)
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
                if self.lro is not None:
                    batch = self._lro_batch
                    if batch is None:
                        batch = self._lro_batch = []
                        self.loop.call_later(self.lro_hold, self._lro_flush)
                    batch.append(out)
                else:
                    self._to_host(out)
            else:
                self.port.send(out)

    def _lro_flush(self):
        batch, self._lro_batch = self._lro_batch, None
        for frame in self.lro.coalesce(batch):
            self._to_host(frame)

    def _arm(self):
        """Keep one loop timer at the dataplane's next deadline (RTOs, TIME-WAITs)."""
        self._timer.arm(self.dataplane.next_deadline())

    def _on_timer(self):
        self._deliver(self.dataplane.on_timer(self._time()))
        self._arm()

    def send(self, frame):
        """A frame from the host (port HOST); inside a batch only queued."""
        hp = self.host_port
        hp["frames_from_host"] += 1
        hp["bytes_from_host"] += len(frame)
        return self._queue(frame)

    def send_segment(self, header, payload, gso_size):
        """A data segment with a partial checksum, maybe a super-segment (toe "csum" /
        "tso"): one host-port transfer, completed and cut here (nic/toe.py)."""
        hp = self.host_port
        hp["frames_from_host"] += 1
        hp["bytes_from_host"] += len(header) + len(payload)
        frames = segment(header, payload, gso_size)
        hp["tso_segments"] += len(frames)
        for frame in frames:
            self._queue(frame)
        return True

    def _queue(self, frame):
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
        hp = self.host_port
        hp["frames_to_host"] += 1
        hp["bytes_to_host"] += len(frame)
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
