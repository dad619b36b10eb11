"""The inline placement: the dataplane in the host's process.

Theory of operation
-------------------
``InlineNicDevice`` (inline): the dataplane runs in the host's process. ``poll`` reads a
batch from the TAP and runs every frame through ``process(frame, WIRE, now, csum_ok)``
first (frames for the wire written back at once, frames for the host collected), then
delivers the collected frames to the stack with the wire frame's ``csum_ok``. The NIC's
share (TAP reads and writes, the dataplane) is measured apart in ``nic_cpu_ns``, which
the runner subtracts from the stack's. The dataplane's own timer (``next_deadline`` /
``on_timer``) is a ``loop.call_at`` of the device.

The classic TOE offloads (``toe``: any of "csum", "tso", "lro"; nic/toe.py), as the
simulator's NIC has them (placements/sim.py): with "csum" or "tso" the stack hands its
data segments to ``send_segment`` (partial checksum, maybe a 64 KiB super-segment) and
the NIC completes and cuts them, each resulting frame through the dataplane's host port
and out to the TAP as a plain frame; with "lro" the frames of one poll batch for the
host are coalesced before the stack sees them.  Without ``toe`` such segments go to the
TAP as they are, for the kernel to complete (the TAP's own offloads, ``tap.offload``).
``host_port`` counts what crosses between the stack and the NIC (frames and bytes each
way: the "PCIe transfers" the offloads save)."""

import time

from ...io.deadline import DeadlineTimer
from ..dataplane import HOST, WIRE, GsoFrame
from ..toe import Lro, segment, toe_set
from .base import _HostPort, status_dict

__all__ = ["InlineNicDevice"]

_ptime = time.process_time_ns


class InlineNicDevice(_HostPort):
    """The dataplane in the host's process, between the TAP and the stack (module doc).
    ``clock``: the dataplane's ``now`` (the loop's clock)."""

    placement = "inline"
    chimney = True          # the Python dataplane runs TCP Chimney (nic.chimney)

    def __init__(self, tap, dataplane, clock=time.monotonic, ignored=(), toe=()):
        super().__init__(tap)
        self.toe = toe = toe_set(toe)
        self._cut = bool(toe & {"csum", "tso"})
        if self._cut:
            self.offload = True              # the stack uses send_segment
        self.lro = Lro() if "lro" in toe else None
        self.host_port = dict.fromkeys(("frames_to_host", "bytes_to_host",
                                        "frames_from_host", "bytes_from_host",
                                        "segments_from_host", "tso_segments"), 0)
        self.dataplane = dataplane
        self.syn_window = dataplane.syn_window
        self.ignored = list(ignored)
        self._clock = clock
        self._rx = []
        self._timer = None            # DeadlineTimer, once attached to a loop
        tap.set_receiver(self._from_wire)
        tap.set_batch_end(None)

    @property
    def stats(self):
        return self.tap.stats

    def poll(self):
        t0 = _ptime()
        n = self.tap.poll()
        self._arm()
        rx = self._rx
        self.nic_cpu_ns += _ptime() - t0
        if rx:
            self._rx = []
            if self.lro is not None:
                t1 = _ptime()
                rx = self.lro.coalesce_flagged(rx)
                self.nic_cpu_ns += _ptime() - t1
            hp = self.host_port
            hp["frames_to_host"] += len(rx)
            recv = self._receiver
            if recv is not None:
                for frame, ok in rx:
                    hp["bytes_to_host"] += len(frame)
                    recv(frame, ok)
        if (n or rx) and self._batch_end is not None:
            self._batch_end()
        return n + len(rx)

    def _from_wire(self, frame, csum_ok):
        tap = self.tap
        for port, out in self.dataplane.process(frame, WIRE, self._clock(), csum_ok,
                                                tap.rx_partial, tap.rx_gso_size):
            if port == HOST:
                self._rx.append((out, csum_ok))
                if self._capture is not None:
                    self._record(out)
            elif out.__class__ is GsoFrame:
                tap.send_partial(out, out.gso_size)
            else:
                tap.send(out)

    def _to_nic(self, items):
        t0 = _ptime()
        dp = self.dataplane
        tap = self.tap
        now = self._clock()
        woke = False
        hp = self.host_port
        hp["frames_from_host"] += len(items)
        for item in items:
            if item.__class__ is tuple:
                hp["bytes_from_host"] += len(item[0]) + len(item[1])
                hp["segments_from_host"] += 1
                if not self._cut:
                    tap.send_segment(*item)
                    continue
                frames = segment(*item)
                hp["tso_segments"] += len(frames)
                for frame in frames:                 # complete: their checksums are done
                    woke |= self._route(dp.process(frame, HOST, now))
                continue
            hp["bytes_from_host"] += len(item)
            self._record(item)
            woke |= self._route(dp.process(item, HOST, now, False, tap.offload))
        self._arm()
        self.nic_cpu_ns += _ptime() - t0
        if woke:
            self._wake_host()

    def _route(self, outs):
        """The dataplane's output for a host frame or a timer: to the TAP, or queued for
        the host (a new runner entry). -> whether anything is for the host."""
        woke = False
        for port, out in outs:
            if port == WIRE:
                if out.__class__ is GsoFrame:
                    self.tap.send_partial(out, out.gso_size)
                else:
                    self.tap.send(out)
            else:
                self._rx.append((out, False))
                self._record(out)
                woke = True
        return woke

    # -- the dataplane's timer
    def _arm(self):
        if self._timer is not None:
            self._timer.arm(self.dataplane.next_deadline())

    def _on_timer(self):
        t0 = _ptime()
        woke = self._route(self.dataplane.on_timer(self._clock()))
        self._arm()
        self.nic_cpu_ns += _ptime() - t0
        if woke:
            self._wake_host()

    def attach_runner(self, loop, entry):
        super().attach_runner(loop, entry)
        self._timer = DeadlineTimer(loop, self._on_timer)
        self._arm()

    def _host_backlog(self):
        return bool(self._rx)

    def nic_stats(self):
        dp = self.dataplane
        return {"placement": self.placement, "alive": True, "lost": 0,
                "counters": dict(dp.counters), "status": status_dict(dp),
                "syn_window": dp.syn_window, "ignored_kwargs": self.ignored,
                "chimney": dict(dp.chimney.counters) if dp.chimney is not None else None,
                "splices": [[{"key": r["key"].hex(), "state": r["state"],
                              "packets": r["packets"], "bytes": r["bytes"],
                              "last_active": r["last_active"]} for r in pair]
                            for pair in dp.splices.installed(16)] if dp.splices else [],
                "toe": sorted(self.toe), "host_port": dict(self.host_port),
                "lro": None if self.lro is None else self.lro.stats(),
                "cpu": {"busy_s": self.nic_cpu_ns / 1e9}}

    def close(self):
        if self._timer is not None:
            self._timer.cancel()
        self.detach_runner()
        self.tap.set_receiver(None)
