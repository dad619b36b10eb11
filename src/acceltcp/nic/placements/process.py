"""The process placement: the dataplane in a process of its own.

Theory of operation
-------------------
``ProcessNicDevice`` (process): the dataplane runs in a child process (``python -m
acceltcp.nic.placements.nicd``, the "NIC cores") that owns the TAP; the device moves
record batches over an `io.nicchannel` socketpair: ``end_batch`` = one sendmsg for the
whole queue, ``poll`` = one recv for the child's whole batch. The parent keeps its TAP
fd without reading it. When the channel ends (EOF, socket error, a garbled record: the
child died), the device kills and reaps the child, switches to reading and writing the
TAP itself, and calls ``on_nic_lost`` (the stack's ``nic_lost``): from then on it is a
plain TAP and the host does all the work. The child's counters arrive as STATS records,
periodically and on ``request_stats()``; the last ones survive it."""

import asyncio
import json
import select
import socket
import struct
import subprocess
import sys
import time

from ...io import nicchannel as nc
from ...io.deadline import DeadlineTimer
from ..toe import segment, toe_set
from .base import NicStartError, _HostPort, is_control_frame

__all__ = ["ProcessNicDevice"]

_U32 = struct.Struct("!I")


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
    chimney = True          # the Python dataplane runs TCP Chimney (nic.chimney)

    def __init__(self, tap, *, dataplane=None, pcap_fd=None, stats_interval=0.5,
                 start_timeout=15.0, watchdog=1.0, clock=time.monotonic,
                 spawn=subprocess.Popen, toe=()):
        super().__init__(tap)
        self.toe = toe_set(toe)
        if self.toe & {"csum", "tso"}:
            self.offload = True              # the stack uses send_segment
        self.host_tso_segments = 0           # cut here once the NIC is gone (_to_tap)
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
        argv = [sys.executable, "-m", "acceltcp.nic.placements.nicd",
                "--tap-fd", str(tap.fd), "--channel-fd", str(nic_end.fileno()),
                "--mac", tap.mac.hex(), "--batch", str(tap.batch),
                "--dataplane", json.dumps(dataplane or {}),
                "--stats-interval", str(stats_interval)]
        fds = [tap.fd, nic_end.fileno()]
        if tap.offload:
            argv.append("--offload")
        if self.toe:
            argv += ["--toe", ",".join(sorted(self.toe))]
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
                if tap.offload:
                    tap.send_segment(*item)
                else:                           # the stack chose the NIC's TOE: cut here
                    frames = segment(*item)
                    self.host_tso_segments += len(frames)
                    for frame in frames:
                        tap.send(frame)
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
               "stats_bad": self.stats_bad, "ctl_dropped": self.ctl_dropped,
               "chimney": rep.get("chimney"), "toe": sorted(self.toe),
               "host_port": rep.get("host_port"), "lro": rep.get("lro"),
               "host_tso_segments": self.host_tso_segments}
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
