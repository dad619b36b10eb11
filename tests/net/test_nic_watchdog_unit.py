"""The process NIC's watchdog (nic/placements/process.py ProcessNicDevice + io/nicchannel.py
Heartbeat) without root and without a real NIC process: the test plays the NIC on the
other end of the channel socketpair, a fake process stands for the child, a fake loop
runs the timers and a fake clock is the only time there is -- no outcome depends on
measured time. A NIC that stops answering (kill -STOP) is found at the deadline, not
before, killed with SIGKILL, reaped, and the host takes the TAP over; frames crossing
the channel at that moment are neither lost (those the NIC had written, those the host
had not yet handed to the kernel) nor duplicated (what the kernel took is the NIC's)."""

import os
import signal
import socket
import subprocess

import pytest

from acceltcp.io import nicchannel as nc
from acceltcp.nic.placements import ProcessNicDevice

MAC = bytes.fromhex("02a7cc000002")


class FakeClock:
    def __init__(self, now=100.0):
        self.now = now

    def __call__(self):
        return self.now


class FakeLoop:
    """What the device asks of an asyncio loop, cranked by hand on the fake clock."""

    def __init__(self, clock):
        self.clock = clock
        self.readers = {}
        self.writers = {}
        self.soon = []
        self.timers = []

    def add_reader(self, fd, cb):
        self.readers[fd] = cb

    def remove_reader(self, fd):
        self.readers.pop(fd, None)

    def add_writer(self, fd, cb):
        self.writers[fd] = cb

    def remove_writer(self, fd):
        self.writers.pop(fd, None)

    def call_soon(self, cb, *args):
        self.soon.append((cb, args))

    def call_at(self, when, cb, *args):
        h = _Handle(when, cb, args)
        self.timers.append(h)
        return h

    def run(self, until):
        """Advance the clock to `until`, firing due timers and call_soon callbacks in
        time order (as the real loop would, minus the waiting)."""
        while True:
            while self.soon:
                cb, args = self.soon.pop(0)
                cb(*args)
            due = sorted((h for h in self.timers if not h.cancelled and h.when <= until),
                         key=lambda h: h.when)
            if not due:
                break
            h = due[0]
            self.timers.remove(h)
            self.clock.now = max(self.clock.now, h.when)
            h.cb(*h.args)
        self.clock.now = until
        self.timers = [h for h in self.timers if not h.cancelled]


class _Handle:
    def __init__(self, when, cb, args):
        self.when = when
        self.cb = cb
        self.args = args
        self.cancelled = False

    def cancel(self):
        self.cancelled = True


class FakeProc:
    def __init__(self):
        self.pid = 424242
        self.returncode = None
        self.signals = []

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        if self.returncode is None:
            raise subprocess.TimeoutExpired("nicd", timeout)
        return self.returncode

    def kill(self):
        self.signals.append(signal.SIGKILL)
        self.returncode = -signal.SIGKILL

    def terminate(self):
        self.signals.append(signal.SIGTERM)      # a stopped process does not act on it


class FakeTap:
    def __init__(self):
        self.mac = MAC
        self.name = "fake0"
        self.offload = True
        self.batch = 64
        self.fd, self._w = os.pipe()
        os.set_blocking(self.fd, False)
        self.out = []                # what the host wrote to the TAP itself
        self.inbox = []
        self._rx = None
        self.batch_end = None

    def set_receiver(self, cb):
        self._rx = cb

    def set_batch_end(self, cb):
        self.batch_end = cb

    def poll(self):
        batch, self.inbox = self.inbox, []
        for f in batch:
            self._rx(f, True)
        return len(batch)

    def send(self, frame):
        self.out.append(bytes(frame))

    def send_segment(self, header, payload, gso_size):
        self.out.append((bytes(header), bytes(payload), gso_size))

    def close(self):
        os.close(self.fd)
        os.close(self._w)


class FakeNic:
    """The test's end of the channel: answers PINGs while `alive`."""

    def __init__(self):
        self.ch = None
        self.alive = True
        self.got = []                 # every record it received, in order

    def spawn(self, argv, pass_fds, **kw):
        fd = int(argv[argv.index("--channel-fd") + 1])
        self.ch = nc.NicChannel(socket.socket(fileno=os.dup(fd)), accept=nc.HOST_TO_NIC)
        self.ch.queue_record(nc.HELLO, b'{"pid": 424242, "syn_window": 5000}')
        self.ch.flush()
        self.proc = FakeProc()
        return self.proc

    def serve(self):
        """One wake-up of a live NIC: read everything, answer PINGs."""
        if not self.alive:
            return
        for rec in self.ch.receive():
            self.got.append(rec)
            if rec[0] == nc.PING:
                self.ch.queue_record(nc.PONG, rec[4])
        self.ch.flush()

    def send_frames(self, *frames):
        for f in frames:
            self.ch.queue_frame(f, True)
        self.ch.flush()


@pytest.fixture
def rig():
    clock = FakeClock()
    loop = FakeLoop(clock)
    tap = FakeTap()
    nic = FakeNic()
    dev = ProcessNicDevice(tap, watchdog=1.0, clock=clock, spawn=nic.spawn)
    received = []
    lost = []
    dev.set_receiver(lambda frame, ok: received.append(bytes(frame)))
    dev.on_nic_lost = lambda: lost.append(clock()) or {"parked_resumed": 0}
    entries = []

    def entry():
        entries.append(clock())
        dev.poll()

    dev.attach_runner(loop, entry)
    yield dev, nic, loop, clock, tap, received, lost
    dev.close()
    tap.close()
    if nic.ch is not None:
        nic.ch.close()


def crank(loop, nic, dev, until, step=0.05):
    """Time passes: the NIC serves (if alive), the host reads whenever its channel has
    data (the loop's reader), timers fire."""
    t = loop.clock.now
    while t < until - 1e-9:
        t = min(until, t + step)
        nic.serve()
        loop.run(t)
        if dev.alive:
            dev.poll()


def test_an_idle_nic_is_probed_and_kept(rig):
    dev, nic, loop, clock, *_ = rig
    crank(loop, nic, dev, 110.0)
    hb = dev.heartbeat
    assert dev.alive and dev.nic_lost == 0
    assert hb.probes >= 10                           # idle: about one per interval
    assert [r[0] for r in nic.got] == [nc.PING] * hb.probes


def test_traffic_is_the_heartbeat(rig):
    dev, nic, loop, clock, _, received, _ = rig
    t = clock.now
    for i in range(100):
        t += 0.1
        nic.send_frames(b"frame%d" % i)
        crank(loop, nic, dev, t)
    assert dev.alive and dev.heartbeat.probes == 0 and len(received) == 100


def test_a_stopped_nic_is_killed_at_the_deadline_and_the_host_takes_over(rig):
    dev, nic, loop, clock, tap, received, lost = rig
    crank(loop, nic, dev, 101.0)
    nic.alive = False                                # kill -STOP
    stopped = clock.now
    hb = dev.heartbeat
    # Not before the deadline: the first probe after the last sign of life goes out
    # within an interval, and only a deadline's silence after it condemns the NIC.
    # (A probe sent in the NIC's last step may have gone unanswered: one step early.)
    crank(loop, nic, dev, stopped + hb.deadline - 0.1)
    assert dev.alive and not lost
    crank(loop, nic, dev, stopped + hb.interval + hb.deadline + 0.1)
    assert not dev.alive and dev.nic_lost == 1 and len(lost) == 1
    assert stopped + hb.deadline - 0.1 < lost[0] <= stopped + hb.interval + hb.deadline + 0.1
    assert dev.lost_reason.startswith("watchdog")
    assert nic.proc.signals == [signal.SIGKILL] and dev.exit_status == -signal.SIGKILL
    assert dev.takeover["hung"] and dev.nic_stats()["takeover"]["hung"]
    # the host reads and writes the TAP itself now
    assert loop.readers.get(tap.fd) is not None
    tap.inbox.append(b"from the wire")
    dev.poll()
    assert received[-1] == b"from the wire"
    dev.send(b"\x00" * 12 + b"\x08\x00" + b"to the wire")
    assert tap.out[-1].endswith(b"to the wire")


def test_a_late_host_does_not_blame_a_live_nic(rig):
    """The host itself stalls for 10 s (the clock jumps): the NIC answered the probe
    meanwhile, and the tick reads that before it judges."""
    dev, nic, loop, clock, *_ = rig
    crank(loop, nic, dev, 100.3)                   # a probe is out ...
    assert dev.heartbeat.probe_at is not None or dev.heartbeat.probes
    nic.serve()                                     # ... and answered, not yet read
    clock.now = 110.3                               # the host wakes 10 s later: every
    loop.run(110.3)                                 # overdue timer fires at once
    crank(loop, nic, dev, 112.0)
    assert dev.alive and dev.nic_lost == 0


def test_frames_in_flight_at_takeover(rig):
    """NIC -> host: whole records the NIC wrote before it stopped are delivered.
    Host -> NIC: what the kernel took is the NIC's (lost with it, never sent twice);
    what the host still held goes to the TAP, whole records only, in order."""
    dev, nic, loop, clock, tap, received, lost = rig
    crank(loop, nic, dev, 100.5)
    nic.alive = False
    nic.send_frames(b"up-1", b"up-2")                # written just before the stop
    # a small socket buffer, so that the host keeps most of what it sends
    for s, opt in ((dev.channel.sock, socket.SO_SNDBUF), (nic.ch.sock, socket.SO_RCVBUF)):
        s.setsockopt(socket.SOL_SOCKET, opt, 4096)
    sent = []
    eth = b"\x02" * 12 + b"\x08\x00"
    for i in range(400):
        frame = eth + b"%05d" % i + b"x" * 700
        sent.append(frame)
        dev.send(frame)
    assert dev.channel.unsent_records > 0             # the kernel is full
    crank(loop, nic, dev, 103.0)
    assert not dev.alive
    # the NIC's two frames came up before anything else
    assert received[:2] == [b"up-1", b"up-2"]
    # what reached the NIC's socket, plus what the host sent itself, is everything it
    # sent, in order, each exactly once (at most one record torn in between)
    nic_side = [r[4] for r in nic.ch.receive() if r[0] == nc.FRAME]
    tap_side = [f for f in tap.out if isinstance(f, bytes) and f.startswith(eth)]
    torn = dev.takeover["in_flight"]["torn_record"]
    assert dev.takeover["in_flight"]["unsent_to_tap"] == len(tap_side) > 0
    assert len(nic_side) + torn + len(tap_side) == len(sent)
    assert nic_side == sent[:len(nic_side)]
    assert tap_side == sent[len(nic_side) + torn:]


def test_no_watchdog():
    tap = FakeTap()
    nic = FakeNic()
    clock = FakeClock()
    dev = ProcessNicDevice(tap, watchdog=0, clock=clock, spawn=nic.spawn)
    loop = FakeLoop(clock)
    dev.attach_runner(loop, dev.poll)
    loop.run(200.0)
    assert dev.heartbeat is None and loop.timers == [] and dev.alive
    assert dev.nic_stats()["watchdog"] is None
    dev.close()
    tap.close()
    nic.ch.close()
