"""Drive a HostStack on a TapDevice from a real asyncio loop, in batches.

``TapRunner`` is ``host.runner.StackRunner`` for a device that delivers frames in
batches with a checksum verdict: the device reads until EAGAIN on one readiness
callback and hands every frame to ``stack.receive_frame(frame, csum_ok)``; the runner
re-arms the stack's single timer once per batch (not per frame), and accounts the
process CPU time spent in the stack (receive batches and timers, applications
included) when ``cpu_accounting`` is set.

``TapHost`` bundles what a command needs: the TAP (moved into the peer namespace
and configured there), the stack on it, the runner, an optional pcap writer.
"""

import time

from ..host.stack import HostStack
from ..io.tap import TapDevice
from ..tcp.config import TcpConfig

__all__ = ["TapRunner", "TapHost"]


class TapRunner:
    """``TapRunner(loop, stack, device)``: attach the device to the loop and drive the
    stack; ``close()`` detaches."""

    def __init__(self, loop, stack, device):
        self.loop = loop
        self.stack = stack
        self.device = device
        if abs(stack.clock() - loop.time()) > 1e-3:
            raise ValueError("stack.clock must be the loop's clock (loop.time)")
        self.cpu_accounting = False
        self.cpu_ns = 0
        self.batches = 0
        self.timer_fires = 0
        self._handle = None
        self._when = None
        self._in_entry = False
        self._closed = False
        self._t0 = 0
        device.set_receiver(stack.receive_frame)
        device.set_batch_end(self._batch_end)
        stack.wakeup = self._wakeup
        self._poll = device.poll
        loop.add_reader(device.fileno(), self._on_readable)
        self._arm()

    def _on_readable(self):
        self._in_entry = True
        if self.cpu_accounting:
            t0 = time.process_time_ns()
            self._poll()
            self.cpu_ns += time.process_time_ns() - t0
        else:
            self._poll()
        self._in_entry = False
        self._arm()

    def _batch_end(self):
        self.batches += 1

    def _on_timer(self):
        self._handle = None
        self._when = None
        if self._closed:
            return
        self._in_entry = True
        self.timer_fires += 1
        if self.cpu_accounting:
            t0 = time.process_time_ns()
            self.stack.on_timer()
            self.cpu_ns += time.process_time_ns() - t0
        else:
            self.stack.on_timer()
        self._in_entry = False
        self._arm()

    def _wakeup(self):
        if not self._in_entry:
            self._arm()

    def _arm(self):
        d = self.stack.next_deadline()
        if d is None or self._closed:
            return
        w = self._when
        if w is not None:
            if w <= d:
                return
            self._handle.cancel()
        self._when = d
        self._handle = self.loop.call_at(d, self._on_timer)

    def close(self):
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        try:
            self.loop.remove_reader(self.device.fileno())
        except (ValueError, OSError):
            pass
        self.device.set_receiver(None)
        self.device.set_batch_end(None)
        if self.stack.wakeup == self._wakeup:
            self.stack.wakeup = None


class TapHost:
    """A TAP whose kernel end lives in a peer namespace, the stack on it, the runner.

    ``TapHost(loop, netns="atcp-peer", offload=True, ...)``; ``close()`` tears it down
    (the TAP netdev disappears with its fd).
    """

    def __init__(self, loop, *, netns=None, tap_name=None, stack_ip=None, peer_ip=None,
                 prefixlen=None, stack_mac=None, peer_mac=None, offload=True, tso=None,
                 config=None, pcap=None, batch=256, mtu=1500, name="tap"):
        from ..testbed import netns as tb
        from ..wire.ethernet import mac_from_str
        netns = netns or tb.DEFAULT_NS
        tap_name = tap_name or tb.TAP_NAME
        self.netns = netns
        self.stack_ip = stack_ip or tb.STACK_IP
        self.peer_ip = peer_ip or tb.PEER_IP
        prefixlen = prefixlen or tb.PREFIXLEN
        mac = mac_from_str(stack_mac or tb.STACK_MAC)
        if not tb.exists(netns):
            raise tb.TestbedError("network namespace %s does not exist: run `acceltcp testbed "
                                  "up%s` first" % (netns, "" if netns == tb.DEFAULT_NS
                                                   else " --netns " + netns))
        self.device = TapDevice(tap_name, mac, offload=offload, batch=batch)
        try:
            tb.attach_tap(self.device.name, netns, self.peer_ip, prefixlen,
                          peer_mac or tb.PEER_MAC, mtu)
            self.pcap = None
            if pcap:
                from ..io.pcap import PcapWriter
                self.pcap = PcapWriter(pcap)
                self.device.add_tap(self.pcap.write)
            self.config = config if config is not None else TcpConfig()
            self.stack = HostStack(self.device, self.stack_ip, loop.time,
                                   tso=offload if tso is None else tso, config=self.config,
                                   netmask=prefixlen, name=name)
            self.runner = TapRunner(loop, self.stack, self.device)
        except BaseException:
            self.device.close()
            raise
        self.loop = loop
        self.started = time.monotonic()

    def close(self):
        self.runner.close()
        self.device.close()
        if self.pcap is not None:
            self.pcap.close()
