"""The NIC dataplane in front of a host stack on a real TAP: the inline, process and xdp
placements (the simulator's `nic.simdevice.SimNicDevice` is the fourth). docs/placements.md.

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

``InlineNicDevice`` (inline): the dataplane runs in the host's process. ``poll`` reads
a batch from the TAP and runs every frame through ``process(frame, WIRE, now,
csum_ok)`` first (frames for the wire written back at once, frames for the host
collected), then delivers the collected frames to the stack with the wire frame's
``csum_ok``. The NIC's share (TAP reads and writes, the dataplane) is measured apart in
``nic_cpu_ns``, which the runner subtracts from the stack's. The dataplane's own timer
(``next_deadline`` / ``on_timer``) is a ``loop.call_at`` of the device.

``ProcessNicDevice`` (process): the dataplane runs in a child process
(``python -m acceltcp.serve.nicd``, the "NIC cores") that owns the TAP; the device
moves record batches over an `io.nicchannel` socketpair: ``end_batch`` = one sendmsg
for the whole queue, ``poll`` = one recv for the child's whole batch. The parent keeps
its TAP fd without reading it. When the channel ends (EOF, socket error, a garbled
record: the child died), the device kills and reaps the child, switches to reading and
writing the TAP itself, and calls ``on_nic_lost`` (the stack's ``nic_lost``): from
then on it is a plain TAP and the host does all the work. The child's counters arrive
as STATS records, periodically and on ``request_stats()``; the last ones survive it.

``XdpNicDevice`` (xdp): the dataplane is the XDP one (nic/xdp, docs/xdp.md), in the
kernel's driver path on two devices: atcp_wire on the root end of a veth whose other end
is the peer namespace's interface (testbed/netns.py attach_veth), atcp_host on the TAP;
each redirects to the other. The stack reads and writes the TAP as without a NIC: wire
frames the program hands up (and its 0x090A frames) are redirected into the TAP, the
stack's frames written to the TAP go out on the veth. The control side (XdpDataplane)
lives in this process: the control frames the stack sends (Listen, StatusRequest, ...)
never reach the TAP -- the device gives them to ``XdpDataplane.control_frame`` (the same
frames and answers as atcp_host passing them up, without a round trip through the
kernel to the process they came from), and a loop timer runs ``XdpDataplane.tick`` (the
clock maps, the programs' queued reports, the control side's due timers) every
``clock_interval`` or at the control side's next deadline if that is sooner. Frames the
control side originates for the wire (what XDP cannot send: one frame per frame in, none
on a timer) leave through a packet socket on the veth; those for the host join the
host's queue. The TAP is opened without checksum/TSO
offloads: a partial checksum or a GSO super-frame does not survive a redirect.
"""

import asyncio
import inspect
import json
import select
import socket
import struct
import subprocess
import sys
import time
from typing import Protocol, runtime_checkable

from ..io import nicchannel as nc
from ..io.deadline import DeadlineTimer
from ..nic.dataplane import HOST, WIRE, NicDataplane

__all__ = ["NicDevice", "InlineNicDevice", "ProcessNicDevice", "XdpNicDevice", "NicStartError",
           "dataplane_kwargs", "make_dataplane", "is_control_frame", "PLACEMENTS"]

PLACEMENTS = ("none", "inline", "process", "xdp")

_ptime = time.process_time_ns
_U32 = struct.Struct("!I")


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
    """An AccelTCP host<->NIC frame (EtherType 0x090A..0x090E)?"""
    return len(frame) >= 14 and frame[12] == 0x09 and 0x0A <= frame[13] <= 0x0E


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


class InlineNicDevice(_HostPort):
    """The dataplane in the host's process, between the TAP and the stack (module doc).
    ``clock``: the dataplane's ``now`` (the loop's clock)."""

    placement = "inline"

    def __init__(self, tap, dataplane, clock=time.monotonic, ignored=()):
        super().__init__(tap)
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
            recv = self._receiver
            if recv is not None:
                for frame, ok in rx:
                    recv(frame, ok)
        if (n or rx) and self._batch_end is not None:
            self._batch_end()
        return n + len(rx)

    def _from_wire(self, frame, csum_ok):
        for port, out in self.dataplane.process(frame, WIRE, self._clock(), csum_ok):
            if port == HOST:
                self._rx.append((out, csum_ok))
                if self._capture is not None:
                    self._record(out)
            else:
                self.tap.send(out)

    def _to_nic(self, items):
        t0 = _ptime()
        dp = self.dataplane
        tap = self.tap
        now = self._clock()
        woke = False
        for item in items:
            if item.__class__ is tuple:
                tap.send_segment(*item)
                continue
            self._record(item)
            woke |= self._route(dp.process(item, HOST, now))
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
                "cpu": {"busy_s": self.nic_cpu_ns / 1e9}}

    def close(self):
        if self._timer is not None:
            self._timer.cancel()
        self.detach_runner()
        self.tap.set_receiver(None)


class NicStartError(RuntimeError):
    pass


class ProcessNicDevice(_HostPort):
    """The dataplane in a child process that owns the TAP (module doc).

    ``dataplane``: NicDataplane kwargs (the child keeps those its constructor names).
    ``pcap_fd``: a file the child appends pcap records to (the parent wrote the global
    header). ``stats_interval``: seconds between the child's unsolicited STATS.
    ``watchdog``: seconds a NIC may stay silent after a probe before the host declares it
    hung, kills it and takes the TAP over (0 or None: no watchdog; ``nc.Heartbeat``).
    ``clock``: the watchdog's time (the loop's clock, CLOCK_MONOTONIC). ``spawn``: how
    the child is started (``subprocess.Popen``'s signature; tests pass a fake)."""

    placement = "process"

    def __init__(self, tap, *, dataplane=None, pcap_fd=None, stats_interval=0.5,
                 start_timeout=15.0, watchdog=1.0, clock=time.monotonic,
                 spawn=subprocess.Popen):
        super().__init__(tap)
        self.alive = True
        self.lost_reason = None
        self.exit_status = None
        self.report = None                 # the child's last STATS document
        self.report_time = None
        self.stats_bad = 0
        self.ctl_dropped = 0
        #: what the takeover found in flight (None while the NIC lives); see _lose
        self.takeover = None
        self._waiters = {}
        self._next_request = 1
        self._writer = False
        self._early = []
        self._clock = clock
        self.heartbeat = nc.Heartbeat(watchdog, now=clock()) if watchdog else None
        self._wd_timer = None
        self._hung = None                  # the watchdog's verdict, acted on in poll()
        host_end, nic_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [sys.executable, "-m", "acceltcp.serve.nicd",
                "--tap-fd", str(tap.fd), "--channel-fd", str(nic_end.fileno()),
                "--mac", tap.mac.hex(), "--batch", str(tap.batch),
                "--dataplane", json.dumps(dataplane or {}),
                "--stats-interval", str(stats_interval)]
        fds = [tap.fd, nic_end.fileno()]
        if tap.offload:
            argv.append("--offload")
        if pcap_fd is not None:
            argv += ["--pcap-fd", str(pcap_fd)]
            fds.append(pcap_fd)
        try:
            self.proc = spawn(argv, pass_fds=fds, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL)
        except BaseException:
            host_end.close()
            nic_end.close()
            raise
        nic_end.close()
        self.pid = self.proc.pid
        self.channel = nc.NicChannel(host_end, accept=nc.NIC_TO_HOST)
        try:
            self.hello = self._wait_hello(start_timeout)
        except BaseException:
            self._reap()
            self.channel.close()
            raise
        self.syn_window = self.hello["syn_window"]
        self.ignored = self.hello.get("ignored_kwargs", [])
        if self.heartbeat is not None:
            self.heartbeat.heard(clock())

    def _wait_hello(self, timeout):
        deadline = time.monotonic() + timeout
        ch = self.channel
        while time.monotonic() < deadline:
            r, _, _ = select.select([ch.fileno()], [], [], 0.05)
            if r:
                recs = ch.receive()
                if recs:
                    kind, _, _, _, body = recs[0]
                    if kind != nc.HELLO:
                        raise NicStartError("NIC process: first record is kind %d, not "
                                            "HELLO" % kind)
                    self._early = recs[1:]
                    try:
                        doc = json.loads(body)
                        int(doc["syn_window"])
                    except (ValueError, TypeError, KeyError) as e:
                        raise NicStartError("NIC process: bad HELLO (%s)" % e) from None
                    return doc
                if ch.error is not None or ch.eof:
                    break
            if self.proc.poll() is not None:
                break
        self._reap()
        raise NicStartError("NIC process did not start (exit status %s%s)" % (
            self.proc.returncode, ", channel: %s" % ch.error if ch.error else ""))

    # -- host -> NIC
    def _to_nic(self, items):
        if not self.alive:
            self._to_tap(items)
            return
        ch = self.channel
        for item in items:
            if item.__class__ is tuple:
                ch.queue_segment(*item)
            else:
                ch.queue_frame(item)
        self._flush()

    def _flush(self):
        try:
            done = self.channel.flush()
        except nc.ChannelClosed as e:
            # What the kernel took is lost with the NIC; what it did not is still
            # queued, and _lose sends it to the TAP (exactly once).
            self._lose("send: %s" % e)
            return
        if not done and not self._writer and self._loop is not None:
            self._writer = True
            self._loop.add_writer(self.channel.fileno(), self._on_writable)
        elif done and self._writer:
            self._writer = False
            self._loop.remove_writer(self.channel.fileno())

    def _on_writable(self):
        self._flush()

    def _to_tap(self, items):
        tap = self.tap
        for item in items:
            if item.__class__ is tuple:
                tap.send_segment(*item)
            elif is_control_frame(item):
                self.ctl_dropped += 1           # no NIC to take it: never to the wire
            else:
                tap.send(item)

    # -- NIC -> host
    def poll(self):
        n = 0
        if self.alive:
            if self._hung is not None:
                self._lose(self._hung, hung=True)
            else:
                ch = self.channel
                recs = ch.receive(self.tap.batch)
                if recs and self.heartbeat is not None:
                    self.heartbeat.heard(self._clock())
                if self._early:
                    recs = self._early + recs
                    self._early = []
                n = self._deliver(recs)
                if ch.eof or ch.error is not None:
                    self._lose("channel %s" % ("error: %s" % ch.error
                                               if ch.error is not None else "EOF"))
                if self.alive:
                    if n and self._batch_end is not None:
                        self._batch_end()
                    return n
        # The host drives the TAP: first what the NIC had passed up before it was lost,
        # then the TAP (whose batch end the TAP reports itself).
        if self._early:
            recs, self._early = self._early, []
            n += self._deliver(recs)
        k = self.tap.poll()
        if n and not k and self._batch_end is not None:
            self._batch_end()
        return n + k

    def _deliver(self, recs):
        recv = self._receiver
        n = 0
        for kind, flags, _, _, body in recs:
            if kind == nc.FRAME:
                n += 1
                if recv is not None:
                    recv(body, flags & nc.CSUM_OK != 0)
            elif kind == nc.STATS:
                self._on_stats(body)
        return n

    def _host_backlog(self):
        return bool(self._early)

    # -- the watchdog
    def _watchdog_tick(self):
        """The heartbeat's timer: read what arrived (a host that was itself late must
        not blame the NIC), then probe or declare the NIC hung; the takeover runs in a
        runner entry (``poll``) like any other frame work."""
        hb = self.heartbeat
        if not self.alive or hb is None:
            return
        ch = self.channel
        recs = ch.receive(self.tap.batch)
        if recs:
            hb.heard(self._clock())
            self._early += recs
        if recs or ch.eof or ch.error is not None:
            self._wake_host()               # the entry delivers them (or sees the EOF)
        act = hb.tick(self._clock())
        if act is hb.PROBE:
            ch.queue_record(nc.PING, _U32.pack(hb.probe_seq))
            if self._ring is None:
                self._flush()
        elif act is hb.EXPIRED and self._hung is None:
            self._hung = "watchdog: no sign of life for %.3g s after a probe" % hb.deadline
            if self._entry is not None:
                self._wake_host()
            else:
                self._lose(self._hung, hung=True)
        self._arm_watchdog()

    def _arm_watchdog(self):
        # At least every interval: records heard in between (poll does not re-arm, to
        # stay off the hot path) may make a probe due earlier than next_tick() said.
        if self._wd_timer is not None and self.alive and self._hung is None:
            hb = self.heartbeat
            self._wd_timer.arm(min(hb.next_tick(), self._clock() + hb.interval))

    def _on_stats(self, body):
        try:
            doc = json.loads(body)
            rid = int(doc.get("request_id", 0))
        except (ValueError, TypeError, AttributeError):
            self.stats_bad += 1
            return
        self.report = doc
        self.report_time = time.monotonic()
        fut = self._waiters.pop(rid, None)
        if fut is not None and not fut.done():
            fut.set_result(doc)

    def request_stats(self):
        """Ask the child for a STATS record now. -> a future of the document (None if
        the NIC is gone)."""
        fut = self._loop.create_future()
        if not self.alive:
            fut.set_result(None)
            return fut
        rid = self._next_request
        self._next_request = rid % 0xFFFFFFFF + 1
        self._waiters[rid] = fut
        self.channel.queue_record(nc.STATS_REQUEST, _U32.pack(rid))
        if self._ring is None:
            self._flush()
        return fut

    async def refresh_stats(self, timeout=1.0):
        """Fresh counters from the child (bounded wait); the last known ones otherwise."""
        if not self.alive or self._loop is None:
            return self.report
        fut = self.request_stats()
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return self.report

    # -- losing the NIC
    def _lose(self, reason, hung=False):
        """The NIC is gone (dead: EOF, send error, garbled stream) or ``hung`` (the
        watchdog): take the TAP over. Frames in flight on the channel:

        * NIC -> host: every whole record the NIC had written is read and delivered
          (before anything read from the TAP afterwards); a torn last one is lost.
        * host -> NIC: records the host had not yet handed to the kernel go to the TAP
          now (control frames dropped, ``ctl_dropped``); those in the socket buffer, and
          a record the kernel took half of, are lost with the NIC -- the NIC never
          acted on them, so nothing is duplicated, and TCP retransmits the data.
        * TAP: frames the NIC had not read stay in the TAP's queue, and the host reads
          them next; frames the NIC was processing are lost (TCP retransmits).
        """
        if not self.alive:
            return
        self.alive = False
        self.nic = False
        self.nic_lost += 1
        self.lost_reason = reason
        if self._wd_timer is not None:
            self._wd_timer.cancel()
        loop = self._loop
        ch = self.channel
        if loop is not None:
            try:
                loop.remove_reader(ch.fileno())
                if self._writer:
                    loop.remove_writer(ch.fileno())
            except (ValueError, OSError):
                pass
            self._writer = False
        drained = 0
        if not ch.eof and ch.error is None:
            recs = ch.receive()
            drained = len(recs)
            self._early += recs
        unsent, torn = ch.take_unsent()
        garbled = isinstance(ch.error, nc.ChannelError)
        ch.close()
        # At EOF the child is exiting (or dead) anyway: give it a moment to finish by
        # itself; a child that garbles the stream or hangs is killed at once.
        self._reap(0.0 if garbled or hung else 1.0)
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()
        tap = self.tap
        tap.set_receiver(self._receiver)
        tap.set_batch_end(self._batch_end)
        if loop is not None and self._entry is not None:
            loop.add_reader(tap.fd, self._entry)
        items = []
        for kind, _, gso, hlen, body in unsent:
            if kind == nc.FRAME:
                items.append(body)
            elif kind == nc.SEGMENT:
                mv = memoryview(body)
                items.append((mv[:hlen], mv[hlen:], gso))
        self._to_tap(items)
        in_flight = {"drained_from_nic": drained, "unsent_to_tap": len(items),
                     "torn_record": torn}
        lost = self.on_nic_lost() if self.on_nic_lost is not None else None
        # "at": CLOCK_MONOTONIC, which every process on the machine shares (the tests
        # compare it with their clients' times)
        self.takeover = {"hung": hung, "at": time.monotonic(), "in_flight": in_flight,
                         "nic_flows_lost": lost if isinstance(lost, dict) else None}
        event = {"event": "nic_lost", "reason": reason, "nic_pid": self.pid,
                 "exit": self.exit_status}
        event.update(self.takeover)
        sys.stderr.write(json.dumps(event) + "\n")
        sys.stderr.flush()
        if self._early:
            self._wake_host()

    def _reap(self, grace=0.0):
        """Wait ``grace`` seconds for the child to exit by itself, then SIGKILL; reaped."""
        p = self.proc
        if p.poll() is None:
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.exit_status = p.returncode

    # -- runner hooks: the channel while the NIC lives, the TAP after
    def fileno(self):
        return self.channel.fileno() if self.alive else self.tap.fd

    def attach_runner(self, loop, entry):
        super().attach_runner(loop, entry)
        if self.heartbeat is not None and self.alive:
            self._wd_timer = DeadlineTimer(loop, self._watchdog_tick)
            self._arm_watchdog()

    def detach_runner(self):
        super().detach_runner()
        if self._wd_timer is not None:
            self._wd_timer.cancel()
            self._wd_timer = None
        if self._writer and self.alive:
            self._loop.remove_writer(self.channel.fileno())
            self._writer = False

    @property
    def stats(self):
        return self

    def as_dict(self):
        """TAP counters: the child's (last report) plus the parent's own (after a
        fallback), so the figures cover the whole run."""
        mine = self.tap.stats.as_dict()
        theirs = (self.report or {}).get("tap") or {}
        out = {}
        for k, v in mine.items():
            t = theirs.get(k, 0)
            out[k] = max(v, t) if k.endswith("_max_frame") else v + t
        return out

    def nic_stats(self):
        rep = self.report or {}
        out = {"placement": self.placement, "alive": self.alive, "lost": self.nic_lost,
               "pid": self.pid, "syn_window": self.syn_window,
               "ignored_kwargs": self.ignored, "counters": rep.get("counters", {}),
               "status": rep.get("status", {}), "cpu": rep.get("cpu", {}),
               "channel_nic": rep.get("channel", {}),
               "channel_host": self.channel.stats.as_dict(),
               "report_age_s": (time.monotonic() - self.report_time
                                if self.report_time is not None else None),
               "stats_bad": self.stats_bad, "ctl_dropped": self.ctl_dropped}
        hb = self.heartbeat
        out["watchdog"] = None if hb is None else {
            "deadline_s": hb.deadline, "interval_s": hb.interval, "probes": hb.probes,
            "expired": hb.expired, "silent_s": self._clock() - hb.heard_at}
        if not self.alive:
            out["lost_reason"] = self.lost_reason
            out["exit_status"] = self.exit_status
            out["takeover"] = self.takeover
        return out

    def pcap_frames(self):
        return (self.report or {}).get("pcap_frames", 0)

    def close(self):
        """End the NIC process: close the channel (it exits at EOF), then SIGTERM and
        SIGKILL if it lingers; always reaped."""
        self.detach_runner()
        if self.alive:
            self.alive = False
            self.channel.close()
            p = self.proc
            try:
                p.wait(3.0)
            except subprocess.TimeoutExpired:
                p.terminate()
                self._reap(2.0)
            self.exit_status = p.returncode
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()


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
        from ..nic.xdp import bpf
        from ..nic.xdp.control import XdpDataplane
        ok, self.ignored = dataplane_kwargs(dataplane or {}, XdpDataplane)
        self.wire = wire
        self.peer = peer
        self._clock = clock
        self.clock_interval = clock_interval
        self._rx = []
        self._timer = None                   # DeadlineTimer, once attached to a loop
        self.clock_ticks = 0
        self.wire_frames = 0                 # sent by the control side on the veth
        self.wire_send_failed = 0
        self._wire_sock = None
        self.dataplane = XdpDataplane(tap.mac, host_ifindex=tap.ifindex,
                                      wire_ifindex=socket.if_nametoindex(wire),
                                      csum_ok=False, **ok)
        self.syn_window = self.dataplane.syn_window
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
        self.tap.set_receiver(callback)

    def set_batch_end(self, callback):
        self._batch_end = callback
        self.tap.set_batch_end(callback)

    def poll(self):
        rx = self._rx
        if rx:                               # the control side's answers first
            self._rx = []
            recv = self._receiver
            if recv is not None:
                for frame in rx:
                    recv(frame, False)
        n = self.tap.poll()
        if rx and not n and self._batch_end is not None:
            self._batch_end()
        return n + len(rx)

    def _to_nic(self, items):
        tap = self.tap
        woke = False
        for item in items:
            if item.__class__ is tuple:
                tap.send_segment(*item)
            elif is_control_frame(item):
                t0 = _ptime()
                self._record(item)
                woke |= self._route(self.dataplane.control_frame(item, self._clock()))
                self.nic_cpu_ns += _ptime() - t0
                self._arm()
            else:
                tap.send(item)                # atcp_host redirects it to the wire
        if woke:
            self._wake_host()

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
                        "wire_frames": self.wire_frames,
                        "wire_send_failed": self.wire_send_failed,
                        "host_port": self.tap.name, "wire_port": self.wire,
                        "host_ifindex": dp.host_ifindex, "wire_ifindex": dp.wire_ifindex,
                        "peer": list(self.peer)}}

    def close(self):
        """Detach the programs (peer stub, wire, host), then unload: pins and maps go."""
        from ..nic.xdp import bpf
        self.detach_runner()
        for dev, ns in reversed(self._attached):
            bpf.detach_xdp(dev, netns=ns)
        self._attached = []
        if self._wire_sock is not None:
            self._wire_sock.close()
            self._wire_sock = None
        self.dataplane.close()
