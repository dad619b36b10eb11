"""Drive a HostStack on a TapDevice from a real asyncio loop, in batches.

``TapRunner`` is ``host.runner.StackRunner`` for a device that delivers frames in
batches with a checksum verdict: the device reads until EAGAIN on one readiness
callback and hands every frame to ``stack.receive_frame(frame, csum_ok)``; the runner
re-arms the stack's single timer once per batch (not per frame), and accounts the
process CPU time spent in the stack (receive batches and timers, applications
included) when ``cpu_accounting`` is set.

``TapHost`` bundles what a command needs: the TAP (moved into the peer namespace
and configured there), the NIC in front of it if any (``nic``: "none", "inline",
"process" or "xdp", see ``nic.placements`` and docs/placements.md), the stack on it, the
runner, an optional pcap writer. With "xdp" the TAP stays in the root namespace and
the peer namespace gets a veth instead (``testbed.netns.attach_veth``), same names and
addresses there.
"""

import fcntl
import os
import struct
import sys
import time

from ..host.runner import StackRunner
from ..host.stack import HostStack
from ..io.tap import TapDevice
from ..tcp.config import TcpConfig
from ..nic.placements import NicDevice
from .secret import machine_secret

#: extra MTU of the xdp placement's TAP (the host port): room for NIC headers
HOST_PORT_HEADROOM = 64

__all__ = ["TapRunner", "TapHost"]


class TapRunner(StackRunner):
    """``TapRunner(loop, stack, device)``: ``StackRunner`` for a TAP, or for a NIC device
    in front of one (``nic.placements``). The device reads a batch per readiness callback and
    hands each frame straight to ``stack.receive_frame(frame, csum_ok)``; the stack's
    timer is re-armed once per batch, and with ``cpu_accounting`` the whole batch
    (applications included) is measured, minus the NIC's own share (``nic_cpu_ns`` of
    an inline NIC). A NIC device (``nic.placements.NicDevice``: ``attach_runner(loop,
    entry)``, ``nic_cpu_ns``, ...) registers its own file descriptors (and changes
    them, as a process NIC does when it falls back to the TAP) and calls ``entry``
    when it has frames for the host; a device with a TX ring
    (``begin_batch``/``end_batch``) gets every entry bracketed, the ring handed over
    after the accounting. ``close()`` detaches."""

    def _attach(self):
        dev = self.device
        self.batches = 0
        dev.set_receiver(self.stack.receive_frame)
        dev.set_batch_end(self._batch_end)
        self._poll = dev.poll
        self._nic = isinstance(dev, NicDevice)
        self._nic_time = self._nic
        if self._nic:
            dev.attach_runner(self.loop, self._on_readable)
        else:
            self.loop.add_reader(dev.fileno(), self._on_readable)

    def _detach(self):
        dev = self.device
        if self._nic:
            dev.detach_runner()
        else:
            try:
                self.loop.remove_reader(dev.fileno())
            except (ValueError, OSError):
                pass
        dev.set_receiver(None)
        dev.set_batch_end(None)

    def _on_readable(self):
        if self._closed:
            return
        self._in_entry = True
        dev = self.device
        batched = self._batched
        if batched:
            dev.begin_batch()
        try:
            if self.cpu_accounting:
                nic0 = dev.nic_cpu_ns if self._nic_time else 0
                t0 = time.process_time_ns()
                self._poll()
                t1 = time.process_time_ns()
                nic = dev.nic_cpu_ns - nic0 if self._nic_time else 0
                self.cpu_ns += t1 - t0 - nic
            else:
                self._poll()
        finally:
            if batched:
                dev.end_batch()
            self._in_entry = False
        self._arm()

    def _batch_end(self):
        self.batches += 1


def _trim_pcap(path, fd):
    """Cut a torn last record off a pcap file (its writer was killed mid-write), so that
    records appended through ``fd`` follow whole ones. -> bytes cut."""
    rec = struct.Struct("<IIII")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        off = 24
        while off + rec.size <= size:
            incl = rec.unpack(os.pread(f.fileno(), rec.size, off))[2]
            if off + rec.size + incl > size:
                break
            off += rec.size + incl
    if off < size:
        os.ftruncate(fd, off)
    return size - off


class TapHost:
    """A TAP whose kernel end lives in a peer namespace, the NIC in front of it (``nic``:
    "none", "inline", "process"; ``dataplane``: NicDataplane kwargs), the stack, the
    runner.

    ``nic_watchdog``: seconds a process NIC may stay silent after a probe before the host
    kills it and takes the TAP over (0: never; docs/placements.md).  ``nic_toe``: the
    inline or process NIC's TOE offloads (any of "csum", "tso", "lro"; nic/toe.py).

    ``TapHost(loop, netns="atcp-peer", offload=True, ...)``; ``close()`` tears it down
    (the TAP netdev disappears with its fd; a NIC process is ended and reaped first).
    ``device`` is what the stack sends through (the TAP itself without a NIC), ``tap``
    the TapDevice.
    """

    def __init__(self, loop, *, netns=None, tap_name=None, stack_ip=None, peer_ip=None,
                 prefixlen=None, stack_mac=None, peer_mac=None, offload=True, tso=None,
                 config=None, pcap=None, batch=256, mtu=1500, name="tap", nic="none",
                 dataplane=None, nic_stats_interval=0.5, isn=None, nic_watchdog=1.0,
                 tap=None, ephemeral=None, nic_toe=()):
        from ..testbed import netns as tb
        from ..wire.ethernet import mac_from_str
        from ..nic import placements as nicmod
        if nic not in nicmod.PLACEMENTS:
            raise ValueError("nic must be one of %s" % (nicmod.PLACEMENTS,))
        if nic_toe and nic not in ("inline", "process"):
            raise ValueError("the NIC's TOE offloads (--nic-toe) are in the inline and "
                             "process placements, not in %r" % (nic,))
        if "tso" in (nic_toe or ()):
            tso = True                           # the NIC cuts the super-segments
        netns = netns or tb.DEFAULT_NS
        tap_name = tap_name or tb.TAP_NAME
        self.netns = netns
        self.placement = nic
        self.stack_ip = stack_ip or tb.STACK_IP
        self.peer_ip = peer_ip or tb.PEER_IP
        prefixlen = prefixlen or tb.PREFIXLEN
        mac = mac_from_str(stack_mac or tb.STACK_MAC)
        if not tb.exists(netns):
            raise tb.TestbedError("network namespace %s does not exist: run `acceltcp testbed "
                                  "up%s` first" % (netns, "" if netns == tb.DEFAULT_NS
                                                   else " --netns " + netns))
        self.veth = None
        if tap is not None:
            # one queue of a multi-queue TAP already in the namespace (serve --cores)
            if nic not in ("none", "inline"):
                raise ValueError("a TAP queue of its own: --nic none or inline only")
            offload = tap.offload
            self.tap = tap
        elif nic == "xdp":
            # no checksum/TSO offloads: a redirect loses them (nic/placements/xdp.py); the TAP in
            # the root namespace, named after the namespace (never two alike)
            offload = tso = False
            tb.xdp_check_free(netns, tap_name)
            xdp_tap, _ = tb.xdp_names(netns)
            self.tap = TapDevice(xdp_tap, mac, offload=False, batch=batch)
        else:
            self.tap = TapDevice(tap_name, mac, offload=offload, batch=batch)
        self.device = self.tap
        self.pcap = None
        self._pcap_file = None
        try:
            if nic == "xdp":
                self.veth = tb.attach_veth(netns, tap_name, self.peer_ip, prefixlen,
                                           peer_mac or tb.PEER_MAC, mtu)[0]
                # the host port carries 0x090A frames: a full-size client segment plus
                # the 16-byte NewConnection header, which a redirect into a TAP of the
                # wire's MTU drops (xdp_ok_fwd_dev: -EMSGSIZE)
                tb.tap_up(self.tap.name, mtu + HOST_PORT_HEADROOM)
            elif tap is None:
                tb.attach_tap(self.tap.name, netns, self.peer_ip, prefixlen,
                              peer_mac or tb.PEER_MAC, mtu)
            if pcap:
                from ..io.pcap import PcapWriter
                self._pcap_file = open(pcap, "wb")
                self.pcap = PcapWriter(self._pcap_file)
                self.pcap.flush()
            if nic == "process":
                pcap_fd = None
                if self.pcap is not None:
                    # The NIC process appends to the same open file (and the host after a
                    # fallback): O_APPEND on the shared file description.
                    pcap_fd = self._pcap_file.fileno()
                    fl = fcntl.fcntl(pcap_fd, fcntl.F_GETFL)
                    fcntl.fcntl(pcap_fd, fcntl.F_SETFL, fl | os.O_APPEND)
                self.device = nicmod.ProcessNicDevice(self.tap, dataplane=dataplane,
                                                      pcap_fd=pcap_fd,
                                                      stats_interval=nic_stats_interval,
                                                      watchdog=nic_watchdog,
                                                      clock=loop.time, toe=nic_toe)
            else:
                if nic == "inline":
                    dp, ignored = nicmod.make_dataplane(mac, dataplane or {})
                    self.device = nicmod.InlineNicDevice(self.tap, dp, loop.time, ignored,
                                                         toe=nic_toe)
                elif nic == "xdp":
                    self.device = nicmod.XdpNicDevice(self.tap, self.veth, (netns, tap_name),
                                                      dataplane=dataplane, clock=loop.time)
                if self.pcap is not None:
                    self.tap.add_tap(self.pcap.write)
                    if self.device is not self.tap:
                        self.device.set_capture(self.pcap.write)
            self.config = config if config is not None else TcpConfig()
            # one secret for every stack on the machine (serve/secret.py): a new
            # process's SYN passes a kernel peer's TIME-WAIT of an earlier one's 4-tuple
            self.stack = HostStack(self.device, self.stack_ip, loop.time,
                                   tso=offload if tso is None else tso, config=self.config,
                                   netmask=prefixlen, name=name, secret=machine_secret(),
                                   isn=None if isn is None else (lambda *a: isn),
                                   **({} if ephemeral is None else {"ephemeral": ephemeral}))
            if tap is not None:
                # ARP replies reach the queue their flow hash picks, not necessarily this
                # stack's: the peer is a known neighbour
                self.stack.arp_add(self.peer_ip, mac_from_str(peer_mac or tb.PEER_MAC))
            if self.device is not self.tap:
                self.device.on_nic_lost = self._on_nic_lost
            self.runner = TapRunner(loop, self.stack, self.device)
        except BaseException:
            self._close_devices()
            raise
        self.loop = loop
        self.started = time.monotonic()

    def _on_nic_lost(self):
        """The NIC process died or hung: the stack takes over, and the capture continues
        here. -> what the stack reports lost with the NIC (``HostStack.nic_lost``)."""
        fn = getattr(self.stack, "nic_lost", None)
        lost = fn() if fn is not None else None
        if self.pcap is not None:
            try:
                self.pcap.flush()
                _trim_pcap(self.pcap.path, self._pcap_file.fileno())
            except OSError as e:
                sys.stderr.write("acceltcp: capture stops after the NIC's loss: %s\n" % e)
                return lost
            self.tap.add_tap(self.pcap.write)
        return lost

    # -- figures for the stats file
    def device_stats(self):
        d = self.device
        return d.stats.as_dict()

    def nic_stats(self):
        """The NIC's counters and state (None without a NIC)."""
        if self.device is self.tap:
            return None
        return self.device.nic_stats()

    async def refresh(self, timeout=1.0):
        """Fetch fresh counters from a NIC process (bounded); no-op otherwise."""
        fn = getattr(self.device, "refresh_stats", None)
        if fn is not None:
            await fn(timeout)

    def pcap_frames(self):
        if self.pcap is None:
            return 0
        n = self.pcap.frames
        fn = getattr(self.device, "pcap_frames", None)
        return n + (fn() if fn is not None else 0)

    def _close_devices(self):
        from ..testbed import netns as tb
        try:
            if self.device is not self.tap:
                self.device.close()
        finally:
            self.tap.close()
            if self.veth is not None:
                tb.remove_veth(self.netns)
                self.veth = None
        if self.pcap is not None:
            self.pcap.close()
            self._pcap_file.close()

    def close(self):
        self.runner.close()
        self._close_devices()
