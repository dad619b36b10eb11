"""What the NIC placements share: the ``NicDevice`` contract, the host-port half of a
device (``_HostPort``), and building a dataplane from options.  docs/placements.md.

The placements, side by side in this package: ``inline`` (the dataplane in the host's
process), ``process`` (in a child process, ``nicd``), ``xdp`` (in the kernel's driver
path, nic/xdp) on a real TAP, and ``sim`` (the simulator's NIC on an io.sim link).

Theory of operation
-------------------
Both devices look like the TAP to the host stack and to `serve.runner.TapRunner`
(``mac``, ``send``, ``send_segment`` + ``offload``, ``set_receiver(cb(frame, csum_ok))``,
``set_batch_end``, ``poll``) plus what a NIC adds: ``nic = True`` (the stack offers
offloads), ``syn_window`` (the window of the NIC's SYN-ACKs), ``begin_batch`` /
``end_batch`` (a TX ring), and ``attach_runner(loop, entry)``: the device registers the
file descriptor(s) it is driven by and calls ``entry`` (the runner's batch entry, which
calls ``poll``) whenever it has frames for the host.

Frames from the host enter the dataplane on port HOST, except data segments the stack
hands to ``send_segment`` (partial checksum, maybe a TSO super-segment): those go to
the TAP as they are, the kernel completing checksum and segmentation through the
virtio-net header. The classic offloads are delegated to the kernel; the dataplane sees
every control frame and every full-checksum frame (SYN, ACK, FIN, RST, ARP). Inside a
runner entry the host's frames and segments are only queued, in order; ``end_batch``
hands the queue to the NIC, outside the runner's CPU accounting.
"""

import inspect
import time
from typing import Protocol, runtime_checkable

from ..dataplane import NicDataplane

__all__ = ["NicDevice", "NicStartError", "dataplane_kwargs", "make_dataplane",
           "is_control_frame", "status_dict", "PLACEMENTS"]

PLACEMENTS = ("none", "inline", "process", "xdp")


@runtime_checkable
class NicDevice(Protocol):
    """What every TAP placement's NIC device is to the stack and to ``TapRunner``
    (docs/placements.md, "The device the stack sees"): a TapDevice's frame API plus the
    NIC's. ``TapRunner`` tells a NIC device from a bare TAP by this contract (isinstance
    checks that the members exist). Process-only extras (``refresh_stats``,
    ``pcap_frames``) are looked up where used."""

    nic: bool                   # True: the stack offers offloads
    placement: str              # "inline", "process", "xdp"
    mac: bytes
    syn_window: int             # the window of the NIC's SYN-ACKs
    nic_cpu_ns: int             # the NIC's share of a runner entry (subtracted)
    on_nic_lost: object         # callable or None: the host takes over

    def fileno(self) -> int: ...
    def send(self, frame) -> bool: ...
    def send_segment(self, header, payload, gso_size) -> bool: ...
    def set_receiver(self, callback) -> None: ...
    def set_batch_end(self, callback) -> None: ...
    def set_capture(self, fn) -> None: ...
    def poll(self) -> int: ...
    def begin_batch(self) -> None: ...
    def end_batch(self) -> None: ...
    def attach_runner(self, loop, entry) -> None: ...
    def detach_runner(self) -> None: ...
    def nic_stats(self) -> dict: ...
    def close(self) -> None: ...


def is_control_frame(frame):
    """An AccelTCP host<->NIC frame (EtherType 0x090A..0x090F)?"""
    return len(frame) >= 14 and frame[12] == 0x09 and 0x0A <= frame[13] <= 0x0F


def dataplane_kwargs(requested, cls=NicDataplane):
    """Split dataplane keyword arguments into (accepted, ignored names): only the
    constructor's *named* parameters count (its ``**cookie_kwargs`` would swallow
    anything), so table capacities it does not know yet are reported, not passed."""
    params = inspect.signature(cls).parameters
    named = {n for n, p in params.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    ok = {k: v for k, v in requested.items() if k in named}
    return ok, sorted(set(requested) - set(ok))


def make_dataplane(mac, requested):
    """-> (NicDataplane, ignored kwarg names)."""
    ok, ignored = dataplane_kwargs(requested)
    return NicDataplane(mac, **ok), ignored


def status_dict(dp):
    rep = dp.status_report()
    return {k: getattr(rep, k) for k in type(rep).__slots__ if k != "request_id"}


class _HostPort:
    """What both placements share: the host-side ring, runner hooks, capture."""

    nic = True
    placement = None

    def __init__(self, tap):
        self.tap = tap
        self.mac = tap.mac
        self.name = tap.name
        self.offload = tap.offload
        self.nic_cpu_ns = 0
        self.nic_lost = 0
        self.on_nic_lost = None
        self._receiver = None
        self._batch_end = None
        self._ring = None
        self._loop = None
        self._entry = None
        self._entry_pending = False
        self._capture = None

    # -- device API
    def fileno(self):
        return self.tap.fd

    def set_receiver(self, callback):
        self._receiver = callback

    def set_batch_end(self, callback):
        self._batch_end = callback

    def set_capture(self, fn):
        """``fn(frame, timestamp)`` for every control frame crossing the host port."""
        self._capture = fn

    def send(self, frame):
        ring = self._ring
        if ring is not None:
            ring.append(frame)
        else:
            self._to_nic((frame,))
        return True

    def send_segment(self, header, payload, gso_size):
        ring = self._ring
        if ring is not None:
            ring.append((header, payload, gso_size))
        else:
            self._to_nic(((header, payload, gso_size),))
        return True

    def begin_batch(self):
        self._ring = []

    def end_batch(self):
        ring = self._ring
        self._ring = None
        if ring:
            self._to_nic(ring)

    # -- runner hooks
    def attach_runner(self, loop, entry):
        self._loop = loop
        self._entry = entry
        loop.add_reader(self.fileno(), entry)
        if self._host_backlog():            # replies to frames sent before the runner
            self._wake_host()

    def _host_backlog(self):
        return False

    def detach_runner(self):
        if self._loop is not None:
            try:
                self._loop.remove_reader(self.fileno())
            except (ValueError, OSError):
                pass
        self._entry = None

    def _wake_host(self):
        """Frames for the host arrived outside a readiness callback: run an entry soon."""
        if not self._entry_pending and self._entry is not None:
            self._entry_pending = True
            self._loop.call_soon(self._run_entry)

    def _run_entry(self):
        self._entry_pending = False
        if self._entry is not None:
            self._entry()

    def _record(self, frame):
        if self._capture is not None and is_control_frame(frame):
            self._capture(frame, time.time())


class NicStartError(RuntimeError):
    pass
