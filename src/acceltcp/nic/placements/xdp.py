"""The xdp placement: the dataplane in the kernel's driver path.

Theory of operation
-------------------
``XdpNicDevice`` (xdp): the dataplane is the XDP one (nic/xdp, docs/xdp.md), in the
kernel's driver path on two devices: atcp_wire on the root end of a veth whose other end
is the peer namespace's interface (testbed/netns.py attach_veth), atcp_host on the TAP;
each redirects to the other. The stack reads and writes the TAP as without a NIC: wire
frames the program hands up (and its 0x090A frames) are redirected into the TAP, the
stack's frames written to the TAP go out on the veth. The control side (XdpDataplane)
lives in this process: the control frames the stack sends (Listen, StatusRequest, ...)
never reach the TAP -- the device gives them to ``XdpDataplane.control_frame`` (the same
frames and answers as atcp_host passing them up, without a round trip through the kernel
to the process they came from) -- except 0x090B teardown handovers of at most a
frame's size: those go to the TAP, where atcp_host takes those it can (teardown.h
teardown_host) and sends the rest back by XDP_TX (TD_X_UP_TX), to the TAP's reader
here, which gives them to the control side.  A loop timer runs ``XdpDataplane.tick`` (the clock
maps, the programs' queued reports, the control side's due timers) every
``clock_interval`` or at the control side's next deadline if that is sooner. Frames the
control side originates for the wire (what XDP cannot send: one frame per frame in, none
on a timer) leave through a packet socket on the veth; those for the host join the
host's queue, which the stack gets after the frames already waiting in the TAP (the order
of one host port: ``poll``). The TAP is opened without checksum/TSO offloads: a partial checksum or a
GSO super-frame does not survive a redirect.

"""

import socket
import time

from ...io.deadline import DeadlineTimer
from ..dataplane import WIRE
from .base import _HostPort, dataplane_kwargs, is_control_frame, status_dict

__all__ = ["XdpNicDevice"]

_ptime = time.process_time_ns


def _queue_len(ifname, default=1000):
    try:
        with open("/sys/class/net/%s/tx_queue_len" % ifname) as f:
            return max(int(f.read()), 1)
    except (OSError, ValueError):
        return default


class XdpNicDevice(_HostPort):
    """The XDP dataplane on the TAP (host port) and the veth `wire` (wire port), its
    control side here (module doc). ``peer``: (namespace, interface) of the veth's other
    end, which gets the XDP_PASS stub (a veth end receiving XDP_TX'd or redirected frames
    needs a program, notes/xdp-on-this-kernel.md). ``dataplane``: XdpDataplane kwargs
    (those its constructor does not name are reported in ``ignored``)."""

    placement = "xdp"

    def __init__(self, tap, wire, peer, *, dataplane=None, clock=time.monotonic,
                 clock_interval=0.02):
        super().__init__(tap)
        from ..xdp import bpf
        from ..xdp.control import XdpDataplane
        ok, self.ignored = dataplane_kwargs(dataplane or {}, XdpDataplane)
        ok["teardown_kwargs"] = dict(ok.get("teardown_kwargs") or {}, up_tx=True)
        self.wire = wire
        self.peer = peer
        self._clock = clock
        self.clock_interval = clock_interval
        self._rx = []
        # reads that empty the TAP's queue (its length: frames redirected to a TAP wait
        # in a ring of tx_queue_len) before the control side's answers (poll)
        self._drain_batches = -(-_queue_len(tap.name) // max(tap.batch, 1)) + 1
        self._timer = None                   # DeadlineTimer, once attached to a loop
        self.clock_ticks = 0
        self.wire_frames = 0                 # sent by the control side on the veth
        self.wire_send_failed = 0
        self._wire_sock = None
        self.dataplane = XdpDataplane(tap.mac, host_ifindex=tap.ifindex,
                                      wire_ifindex=socket.if_nametoindex(wire),
                                      csum_ok=False, **ok)
        self.syn_window = self.dataplane.syn_window
        td = self.dataplane.teardown
        # handovers through atcp_host (td.xdp_flags & 1: TD_X_ACCEPT): those up to a
        # frame of the TAP's MTU (read at the first), which a larger one could not pass
        self._handover_max = None if td.capacity and td.xdp_flags & 1 else 0
        self.handovers_to_tap = 0
        self.handovers_back = 0
        self.dataplane.set_clock(clock())
        self._attached = []
        try:
            self._wire_sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            self._wire_sock.bind((wire, 0))
            ids = self.dataplane.prog_ids
            for dev, ns, prog in ((peer[1], peer[0], "atcp_pass"), (wire, None, "atcp_wire"),
                                  (tap.name, None, "atcp_host")):
                bpf.attach_xdp(dev, ids[prog], netns=ns)
                self._attached.append((dev, ns))
        except BaseException:
            self.close()
            raise

    @property
    def stats(self):
        return self.tap.stats

    def set_receiver(self, callback):
        self._receiver = callback
        self.tap.set_receiver(callback if self._handover_max == 0 else self._from_tap)

    def _from_tap(self, frame, csum_ok):
        """The TAP's frames: a 0x090B atcp_host did not take, back by XDP_TX, goes to the
        control side; everything else to the stack."""
        if frame[12] == 0x09 and frame[13] == 0x0B:
            self.handovers_back += 1
            if self._control_frame(frame):
                self._wake_host()
            return
        self._receiver(frame, csum_ok)

    def set_batch_end(self, callback):
        self._batch_end = callback
        self.tap.set_batch_end(callback)

    def poll(self):
        rx = self._rx
        if not rx:
            return self.tap.poll()
        # The control side's answers go to the stack after every frame XDP passed up
        # before it answered, as through one host port: those frames wait in the TAP's
        # queue (at most its length), so it is read until empty first. From the answer
        # on, a spliced or handed-over flow's frames no longer come up (XDP owns the
        # 4-tuple), so none of them can overtake an answer. Delivered first, a
        # SpliceInstalled let the stack drop both TCBs while the backend's reply, passed
        # up before the rule existed, still waited in the queue: no TCB, an RST.
        self._rx = []                        # answers made meanwhile: the next round
        tap = self.tap
        n = 0
        for _ in range(self._drain_batches):
            k = tap.poll()
            n += k
            if k < tap.batch:
                break
        recv = self._receiver
        if recv is not None:
            for frame in rx:
                recv(frame, False)
        if self._batch_end is not None:
            self._batch_end()
        return n + len(rx)

    def _to_nic(self, items):
        tap = self.tap
        woke = False
        for item in items:
            if item.__class__ is tuple:
                tap.send_segment(*item)
            elif item[13] == 0x0B and item[12] == 0x09 and len(item) <= (
                    self._handover_max if self._handover_max is not None
                    else self._tap_frame_max()):
                self._record(item)
                self.handovers_to_tap += 1
                tap.send(item)                # atcp_host takes it, or sends it back
            elif is_control_frame(item):
                self._record(item)
                woke |= self._control_frame(item)
            else:
                tap.send(item)                # atcp_host redirects it to the wire
        if woke:
            self._wake_host()

    def _control_frame(self, frame):
        """A control frame through the control side (its time counted as the NIC's);
        -> whether anything is for the host."""
        t0 = _ptime()
        woke = self._route(self.dataplane.control_frame(frame, self._clock()))
        self.nic_cpu_ns += _ptime() - t0
        self._arm()
        return woke

    def _tap_frame_max(self):
        try:
            with open("/sys/class/net/%s/mtu" % self.tap.name) as f:
                self._handover_max = int(f.read()) + 14
        except (OSError, ValueError):
            self._handover_max = 0
        return self._handover_max

    def _route(self, outs):
        """The control side's frames: to the wire on the veth, or queued for the host.
        -> whether anything is for the host."""
        woke = False
        for port, out in outs:
            if port == WIRE:
                try:
                    self._wire_sock.send(out)
                    self.wire_frames += 1
                except OSError:
                    self.wire_send_failed += 1
            else:
                self._rx.append(out)
                self._record(out)
                woke = True
        return woke

    def _host_backlog(self):
        return bool(self._rx)

    # -- the control side's clock and timers
    def _tick(self):
        t0 = _ptime()
        woke = self._route(self.dataplane.tick(self._clock()))
        self.clock_ticks += 1
        self.nic_cpu_ns += _ptime() - t0
        self._arm()
        if woke:
            self._wake_host()

    def _arm(self):
        if self._timer is not None:
            due = self._clock() + self.clock_interval
            d = self.dataplane.next_deadline()
            self._timer.arm(due if d is None or d > due else d)

    def attach_runner(self, loop, entry):
        super().attach_runner(loop, entry)
        if self._timer is None:
            self._timer = DeadlineTimer(loop, self._tick)
            self._tick()

    def detach_runner(self):
        super().detach_runner()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def nic_stats(self):
        dp = self.dataplane
        return {"placement": self.placement, "alive": True, "lost": 0,
                "counters": dict(dp.counters), "status": status_dict(dp),
                "syn_window": dp.syn_window, "ignored_kwargs": self.ignored,
                "cpu": {"busy_s": self.nic_cpu_ns / 1e9},
                "xdp": {"counters": {k: v for k, v in dp.xdp_counters().items()
                                     if k.startswith("xdp_")},
                        "prog_ids": dp.prog_ids, "map_ids": dp.map_ids,
                        "pin_dir": dp.pin_dir, "clock_ticks": self.clock_ticks,
                        "teardown_counters": dp.teardown.counters,
                        "handed_entries": len(dp.handed_entries()),
                        "handed_capacity": dp.handed_capacity,
                        "wire_frames": self.wire_frames,
                        "handovers_to_tap": self.handovers_to_tap,
                        "handovers_back": self.handovers_back,
                        "wire_send_failed": self.wire_send_failed,
                        "host_port": self.tap.name, "wire_port": self.wire,
                        "host_ifindex": dp.host_ifindex, "wire_ifindex": dp.wire_ifindex,
                        "peer": list(self.peer)}}

    def close(self):
        """Detach the programs (peer stub, wire, host), then unload: pins and maps go."""
        from ..xdp import bpf
        self.detach_runner()
        for dev, ns in reversed(self._attached):
            bpf.detach_xdp(dev, netns=ns)
        self._attached = []
        if self._wire_sock is not None:
            self._wire_sock.close()
            self._wire_sock = None
        self.dataplane.close()
