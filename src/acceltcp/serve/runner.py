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

from ..host.runner import StackRunner
from ..host.stack import HostStack
from ..io.tap import TapDevice
from ..tcp.config import TcpConfig

__all__ = ["TapRunner", "TapHost"]


class TapRunner(StackRunner):
    """``TapRunner(loop, stack, device)``: ``StackRunner`` for a TAP. The device reads a
    batch per readiness callback and hands each frame straight to
    ``stack.receive_frame(frame, csum_ok)``; the stack's timer is re-armed once per batch,
    and with ``cpu_accounting`` the whole batch (applications included) is measured.
    ``close()`` detaches."""

    def _attach(self):
        dev = self.device
        self.batches = 0
        dev.set_receiver(self.stack.receive_frame)
        dev.set_batch_end(self._batch_end)
        self._poll = dev.poll
        self.loop.add_reader(dev.fileno(), self._on_readable)

    def _detach(self):
        try:
            self.loop.remove_reader(self.device.fileno())
        except (ValueError, OSError):
            pass
        self.device.set_receiver(None)
        self.device.set_batch_end(None)

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
