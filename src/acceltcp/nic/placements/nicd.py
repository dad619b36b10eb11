"""The NIC process of the *process* placement: the dataplane on its own cores.

    python -m acceltcp.nic.placements.nicd --tap-fd 5 --channel-fd 6 --mac 02a7cc000002 \
        [--offload] [--batch 256] [--dataplane '{"listener_capacity": 64}'] \
        [--pcap-fd 7] [--stats-interval 1.0]

Started by `nic.placements.ProcessNicDevice` with the TAP fd and its end of the host-port
socketpair inherited (``pass_fds``); not a command for people.

Theory of operation
-------------------
One asyncio loop, three event sources, each handled in one batch:

* TAP readable: read a batch until EAGAIN (``TapDevice.poll``); every frame goes
  through ``process(frame, WIRE, now, csum_ok)``; frames for the wire are written back at
  once, frames for the host are queued as FRAME records carrying ``csum_ok`` (with
  ``--toe lro``, the batch's frames coalesced first); then the whole queue leaves with
  one sendmsg.
* channel readable: every record of the host's batch; FRAME -> ``process(frame, HOST,
  now)`` (replies for the host queued), SEGMENT -> ``TapDevice.send_segment`` (the
  kernel completes checksum/TSO; with ``--toe csum|tso`` this process does, nic/toe.py,
  each frame through the dataplane's host port), STATS_REQUEST -> a STATS record, PING -> a PONG
  with the same number (the host's watchdog); then one flush.
* the dataplane's deadline (``next_deadline`` / ``on_timer``): a ``loop.call_at``.

A STATS record also goes out every ``--stats-interval`` seconds when anything happened,
so the host keeps recent counters even if this process is killed. The process exits
0 at the channel's EOF (the host closed it) or on SIGTERM, 3 when the host's stream is
garbled or the socket fails; the host SIGKILLs it when it answers nothing within the
host's watchdog deadline (a hung NIC, docs/placements.md). SIGINT is ignored (the host
decides when the NIC stops, a terminal's Ctrl-C reaches the host, which then closes the
channel). When the channel cannot take more (the host is slow), records wait for
writability; beyond the channel's limit frames are dropped and counted, as on a full
ring.

Capture (``--pcap-fd``): the host wrote a pcap global header and passes the file; this
process appends wire frames (both directions, as the TAP carries them) and the control
frames crossing the host port, buffered and written with one ``writev`` per wake-up,
so a killed NIC leaves whole records behind (the host trims a torn tail anyway).
"""

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import struct
import sys
import time

from ...io import nicchannel as nc
from ...io.deadline import DeadlineTimer
from ...io.tap import TapDevice
from ..dataplane import HOST, WIRE, GsoFrame
from ..toe import Lro, segment, toe_set
from .base import is_control_frame, make_dataplane, status_dict

__all__ = ["NicProcess", "InheritedTap", "main"]

_ptime = time.process_time_ns
_REC = struct.Struct("<IIII")
_U32 = struct.Struct("!I")


class InheritedTap(TapDevice):
    """A TapDevice on an fd opened (and configured: vnet header, offloads) by the
    parent process."""

    def __init__(self, fd, mac, *, offload, batch):
        self._inherited = fd
        super().__init__("", mac, offload=offload, batch=batch)

    def _open(self, name):
        os.set_blocking(self._inherited, False)
        return self._inherited


class _PcapAppender:
    """pcap records (nanosecond timestamps, as io.pcap.PcapWriter writes by default)
    appended to an fd whose global header is already there; whole records per flush."""

    def __init__(self, fd, snaplen=262144):
        self.fd = fd
        self.snaplen = snaplen
        self.frames = 0
        self.errors = 0
        self._parts = []

    def add(self, frame, ts):
        n = len(frame)
        incl = n if n <= self.snaplen else self.snaplen
        sec = int(ts)
        self._parts += (_REC.pack(sec, int((ts - sec) * 1e9), incl, n),
                        frame if incl == n else memoryview(frame)[:incl])
        self.frames += 1

    def flush(self):
        parts = self._parts
        if not parts:
            return
        self._parts = []
        step = nc.IOV_MAX
        try:
            for i in range(0, len(parts), step):
                os.writev(self.fd, parts[i:i + step])
        except OSError:
            self.errors += 1


class NicProcess:
    """The dataplane between an (inherited) TAP and the host port (module doc)."""

    def __init__(self, loop, tap, channel, dataplane, *, pcap=None, stats_interval=0.5,
                 ignored=(), toe=()):
        self.toe = toe_set(toe)
        self._cut = bool(self.toe & {"csum", "tso"})
        self.lro = Lro() if "lro" in self.toe else None
        self._rx = []                      # LRO: this TAP batch's frames for the host
        self.host_port = dict.fromkeys(("frames_to_host", "segments_from_host",
                                        "tso_segments"), 0)
        self.loop = loop
        self.tap = tap
        self.channel = channel
        self.dp = dataplane
        self.pcap = pcap
        self.stats_interval = stats_interval
        self.ignored = list(ignored)
        self.done = loop.create_future()
        self.exit_code = 0
        self.busy_ns = 0
        self.started = time.monotonic()
        self._timer = DeadlineTimer(loop, self._on_timer)   # the dataplane's timers
        self._writer = False
        self._activity = 0
        self._reported = -1
        self._csum_ok = False
        tap.set_receiver(self._from_wire)
        if pcap is not None:
            tap.add_tap(pcap.add)
        loop.add_reader(tap.fd, self._on_tap)
        loop.add_reader(channel.fileno(), self._on_channel)
        self._periodic = loop.call_later(stats_interval, self._on_periodic)

    def hello(self):
        dp = self.dp
        doc = {"pid": os.getpid(), "syn_window": dp.syn_window, "mac": dp.mac.hex(),
               "tap": self.tap.name, "offload": self.tap.offload,
               "ignored_kwargs": self.ignored, "status": status_dict(dp)}
        self.channel.queue_record(nc.HELLO, json.dumps(doc).encode())
        self._flush()

    # -- event handlers
    def _on_tap(self):
        t0 = _ptime()
        self._activity += self.tap.poll()
        if self._rx:
            rx, self._rx = self._rx, []
            for f, ok in self.lro.coalesce_flagged(rx):
                self.channel.queue_frame(f, ok)
                self.host_port["frames_to_host"] += 1
        self._after(t0)

    def _from_wire(self, frame, csum_ok):
        ch = self.channel
        pcap = self.pcap
        tap = self.tap
        for port, out in self.dp.process(frame, WIRE, self.loop.time(), csum_ok,
                                         tap.rx_partial, tap.rx_gso_size):
            if port == HOST:
                if self.lro is not None:
                    self._rx.append((out, csum_ok))
                else:
                    ch.queue_frame(out, csum_ok)
                    self.host_port["frames_to_host"] += 1
                if pcap is not None and is_control_frame(out):
                    pcap.add(out, time.time())
            elif out.__class__ is GsoFrame:
                tap.send_partial(out, out.gso_size)
            else:
                tap.send(out)

    def _on_channel(self):
        t0 = _ptime()
        ch = self.channel
        recs = ch.receive(4 * self.tap.batch)
        dp = self.dp
        tap = self.tap
        pcap = self.pcap
        now = self.loop.time()
        for kind, _, gso, hlen, body in recs:
            if kind == nc.FRAME:
                if pcap is not None and is_control_frame(body):
                    pcap.add(body, time.time())
                for port, out in dp.process(body, HOST, now, False, tap.offload):
                    if port == WIRE:
                        if out.__class__ is GsoFrame:
                            tap.send_partial(out, out.gso_size)
                        else:
                            tap.send(out)
                    else:
                        ch.queue_frame(out)
                        self.host_port["frames_to_host"] += 1
                        if pcap is not None and is_control_frame(out):
                            pcap.add(out, time.time())
            elif kind == nc.SEGMENT:
                mv = memoryview(body)
                if not self._cut:
                    tap.send_segment(mv[:hlen], mv[hlen:], gso)
                    continue
                frames = segment(mv[:hlen], mv[hlen:], gso)      # the NIC's TSO
                self.host_port["segments_from_host"] += 1
                self.host_port["tso_segments"] += len(frames)
                for f in frames:
                    for port, out in dp.process(f, HOST, now):
                        if port == WIRE:
                            tap.send(out)
                        else:
                            ch.queue_frame(out)
                            self.host_port["frames_to_host"] += 1
            elif kind == nc.STATS_REQUEST:
                self._send_stats(_U32.unpack(body)[0])
            elif kind == nc.PING:
                ch.queue_record(nc.PONG, body)          # the host's watchdog: alive
        self._activity += len(recs)
        if ch.error is not None:
            self.stop(3, "channel: %s" % ch.error)
        elif ch.eof:
            self.stop(0)
        self._after(t0)

    def _on_timer(self):
        t0 = _ptime()
        for port, out in self.dp.on_timer(self.loop.time()):
            if port == WIRE:
                self.tap.send(out)
            else:
                self.channel.queue_frame(out)
                self.host_port["frames_to_host"] += 1
                if self.pcap is not None and is_control_frame(out):
                    self.pcap.add(out, time.time())
        self._activity += 1
        self._after(t0)

    def _after(self, t0):
        """End of every wake-up: one flush of the channel and the capture, re-arm."""
        if not self.done.done():
            self._flush()
            self._arm()
        if self.pcap is not None:
            self.pcap.flush()
        self.busy_ns += _ptime() - t0

    def _flush(self):
        try:
            done = self.channel.flush()
        except nc.ChannelClosed as e:
            self.stop(3, str(e))
            return
        fd = self.channel.fileno()
        if not done and not self._writer:
            self._writer = True
            self.loop.add_writer(fd, self._on_writable)
        elif done and self._writer:
            self._writer = False
            self.loop.remove_writer(fd)

    def _on_writable(self):
        if not self.done.done():
            self._flush()

    def _arm(self):
        self._timer.arm(self.dp.next_deadline())

    # -- counters for the host
    def stats_doc(self, request_id=0):
        ru = resource.getrusage(resource.RUSAGE_SELF)
        doc = {"request_id": request_id, "pid": os.getpid(),
               "counters": dict(self.dp.counters), "status": status_dict(self.dp),
               "tap": self.tap.stats.as_dict(), "channel": self.channel.stats.as_dict(),
               "cpu": {"busy_s": self.busy_ns / 1e9, "user_s": ru.ru_utime,
                       "sys_s": ru.ru_stime},
               "uptime_s": time.monotonic() - self.started}
        if self.pcap is not None:
            doc["pcap_frames"] = self.pcap.frames
        ch = self.dp.chimney
        if ch is not None:
            doc["chimney"] = dict(ch.counters)
        doc["host_port"] = dict(self.host_port)
        if self.lro is not None:
            doc["lro"] = self.lro.stats()
        return doc

    def _send_stats(self, request_id):
        self.channel.queue_record(nc.STATS, json.dumps(self.stats_doc(request_id)).encode())
        self._reported = self._activity

    def _on_periodic(self):
        if self.done.done():
            return
        if self._activity != self._reported:
            t0 = _ptime()
            self._send_stats(0)
            self._after(t0)
        self._periodic = self.loop.call_later(self.stats_interval, self._on_periodic)

    # -- stopping
    def stop(self, code=0, why=None):
        if self.done.done():
            return
        self.exit_code = code
        if why:
            sys.stderr.write("acceltcp nicd: %s\n" % why)
        self.done.set_result(code)

    def close(self):
        for fd in (self.tap.fd, self.channel.fileno()):
            try:
                self.loop.remove_reader(fd)
            except (ValueError, OSError):
                pass
        if self._writer:
            self.loop.remove_writer(self.channel.fileno())
        self._timer.cancel()
        self._periodic.cancel()
        if self.pcap is not None:
            self.pcap.flush()
        self.channel.close()
        self.tap.close()


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m acceltcp.nic.placements.nicd",
                                description="the NIC process of `acceltcp serve --nic "
                                            "process` (started by it)")
    p.add_argument("--tap-fd", type=int, required=True)
    p.add_argument("--channel-fd", type=int, required=True)
    p.add_argument("--mac", required=True, help="12 hex digits")
    p.add_argument("--offload", action="store_true", help="the TAP announces offloads")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dataplane", default="{}", help="NicDataplane kwargs as JSON")
    p.add_argument("--pcap-fd", type=int)
    p.add_argument("--stats-interval", type=float, default=0.5)
    p.add_argument("--toe", default="", help="comma list of TOE offloads: csum,tso,lro")
    a = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    mac = bytes.fromhex(a.mac)
    dp, ignored = make_dataplane(mac, json.loads(a.dataplane))
    loop = asyncio.new_event_loop()
    tap = InheritedTap(a.tap_fd, mac, offload=a.offload, batch=a.batch)
    ch = nc.NicChannel(socket.socket(fileno=a.channel_fd), accept=nc.HOST_TO_NIC)
    pcap = _PcapAppender(a.pcap_fd) if a.pcap_fd is not None else None
    nic = NicProcess(loop, tap, ch, dp, pcap=pcap, stats_interval=a.stats_interval,
                     ignored=ignored, toe=[t for t in a.toe.split(",") if t])
    loop.add_signal_handler(signal.SIGTERM, nic.stop)
    try:
        nic.hello()
        code = loop.run_until_complete(nic.done)
    finally:
        nic.close()
        loop.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
