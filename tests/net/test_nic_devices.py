"""The inline NIC device (nic/placements/inline.py) driven by serve.runner.TapRunner, without root:
a fake TAP (a pipe for readiness) and a scripted dataplane. What the placements must
guarantee: the NIC handles a whole read batch before the host sees any of it, the wire
frame's checksum verdict travels with the frames it produced, the host's frames and
TSO segments leave in order at the end of the runner's entry, replies to the host come
in a later entry, and the dataplane's own timer is driven by the loop."""

import asyncio
import os

import pytest

from acceltcp.nic.dataplane import HOST, WIRE
from acceltcp.nic.placements import InlineNicDevice, dataplane_kwargs, is_control_frame
from acceltcp.serve.runner import TapRunner

MAC = bytes.fromhex("02a7cc000002")


class FakeTap:
    def __init__(self, batch=64):
        self.mac = MAC
        self.name = "fake0"
        self.offload = True
        self.rx_partial = False        # TapDevice: the metadata of the frame delivered
        self.rx_gso_size = 0
        self.batch = batch
        self.fd, self._w = os.pipe()
        os.set_blocking(self.fd, False)
        self.inbox = []
        self.out = []
        self.log = None
        self._rx = None

    def set_receiver(self, cb):
        self._rx = cb

    def set_batch_end(self, cb):
        pass

    def inject(self, *frames, csum_ok=False):
        self.inbox += [(f, csum_ok) for f in frames]
        os.write(self._w, b"x")

    def poll(self):
        try:
            os.read(self.fd, 4096)
        except BlockingIOError:
            pass
        batch, self.inbox = self.inbox, []
        for f, ok in batch:
            self._rx(f, ok)
        return len(batch)

    def send(self, frame):
        self.out.append(frame)
        self.log.append(("wire", frame))

    def send_segment(self, header, payload, gso_size):
        self.out.append((header, payload, gso_size))
        self.log.append(("wire-segment", header))

    def close(self):
        os.close(self.fd)
        os.close(self._w)


class ScriptedDataplane:
    """From WIRE: the frame to HOST (+ b"!" for "ctl" frames: a reply to the wire too).
    From HOST: b"ask" -> a reply to HOST, anything else to WIRE. Timers: `due` deadlines;
    each firing sends one frame each way."""

    syn_window = 4321

    def __init__(self, log):
        self.log = log
        self.due = []
        self.fired = 0
        self.counters = {}

    def process(self, frame, port, now, csum_ok=False, csum_partial=False, gso_size=0):
        self.log.append(("nic", port, frame, csum_ok))
        if port == WIRE:
            out = [(HOST, frame)]
            if frame.startswith(b"ctl"):
                out.append((WIRE, b"re:" + frame))
            return out
        if frame == b"ask":
            return [(HOST, b"answer")]
        return [(WIRE, frame)]

    def next_deadline(self):
        return min(self.due) if self.due else None

    def on_timer(self, now):
        due = [d for d in self.due if d <= now]
        self.due = [d for d in self.due if d > now]
        self.fired += len(due)
        return [(HOST, b"timer-host"), (WIRE, b"timer-wire")] if due else []


class StubStack:
    """What StackRunner needs from a HostStack; records what it receives."""

    def __init__(self, loop, device, log):
        self.clock = loop.time
        self.device = device
        self.log = log
        self.wakeup = None
        self.got = []
        self.send_on_receive = ()

    def receive_frame(self, frame, csum_ok=False):
        self.log.append(("host", frame, csum_ok))
        self.got.append((frame, csum_ok))
        for item in self.send_on_receive:
            if isinstance(item, tuple):
                self.device.send_segment(*item)
            else:
                self.device.send(item)
        self.send_on_receive = ()

    def next_deadline(self):
        return None

    def on_timer(self):
        pass


@pytest.fixture
def rig():
    loop = asyncio.new_event_loop()
    log = []
    tap = FakeTap()
    tap.log = log
    dp = ScriptedDataplane(log)
    dev = InlineNicDevice(tap, dp, loop.time)
    stack = StubStack(loop, dev, log)
    runner = TapRunner(loop, stack, dev)
    runner.cpu_accounting = True
    yield loop, tap, dp, dev, stack, runner, log
    runner.close()
    dev.close()
    tap.close()
    loop.close()


def run(loop, seconds=0.05):
    loop.run_until_complete(asyncio.sleep(seconds))


def test_the_nic_handles_the_whole_batch_before_the_host(rig):
    loop, tap, dp, dev, stack, runner, log = rig
    tap.inject(b"a1", b"ctl-2", b"a3", csum_ok=True)
    run(loop)
    kinds = [e[0] for e in log]
    # NIC work (and its wire reply) for all three frames, then the host's three
    assert kinds == ["nic", "nic", "wire", "nic", "host", "host", "host"]
    assert stack.got == [(b"a1", True), (b"ctl-2", True), (b"a3", True)]
    assert tap.out == [b"re:ctl-2"]
    assert runner.batches == 1 and dev.nic_cpu_ns > 0
    tap.inject(b"b1", csum_ok=False)
    run(loop)
    assert stack.got[-1] == (b"b1", False)      # the verdict of the frame it came from


def test_host_frames_leave_in_order_after_the_entry(rig):
    loop, tap, dp, dev, stack, runner, log = rig
    seg = (b"H" * 54, b"payload", 1448)
    stack.send_on_receive = (b"f1", seg, b"f2")
    tap.inject(b"in")
    run(loop)
    i = log.index(("host", b"in", False))
    # nothing went to the NIC or the wire while the stack ran; then, in order: f1
    # through the dataplane, the TSO segment straight to the TAP, f2 through the dataplane
    assert log[i + 1:] == [("nic", HOST, b"f1", False), ("wire", b"f1"),
                           ("wire-segment", seg[0]), ("nic", HOST, b"f2", False),
                           ("wire", b"f2")]
    assert tap.out == [b"f1", seg, b"f2"]


def test_replies_to_the_host_come_in_a_later_entry(rig):
    loop, tap, dp, dev, stack, runner, log = rig
    stack.send_on_receive = (b"ask",)
    tap.inject(b"in")
    loop.run_until_complete(asyncio.sleep(0))
    loop.run_until_complete(asyncio.sleep(0))
    assert stack.got[0] == (b"in", False)
    run(loop)
    assert stack.got[1:] == [(b"answer", False)]
    assert runner.batches == 2
    # outside any entry (an app call from elsewhere): the frame goes to the NIC at once
    dev.send(b"ask")
    assert ("nic", HOST, b"ask", False) == log[-1]
    run(loop)
    assert stack.got[-1] == (b"answer", False)


def test_the_dataplane_timer_is_driven_by_the_loop(rig):
    loop, tap, dp, dev, stack, runner, log = rig
    now = loop.time()
    dp.due = [now + 0.2]
    tap.inject(b"wake")                # any NIC activity re-arms the device's timer
    run(loop, 0.01)
    assert dp.fired == 0               # not early
    run(loop, 0.3)
    assert dp.fired == 1
    assert stack.got[-1] == (b"timer-host", False)
    assert tap.out[-1] == b"timer-wire"
    # an earlier deadline set later still fires first
    dp.due = [loop.time() + 5.0]
    dev.send(b"x")
    dp.due.append(loop.time() + 0.02)
    dev.send(b"y")
    run(loop, 0.1)
    assert dp.fired == 2


def test_helpers():
    assert is_control_frame(bytes(12) + b"\x09\x0a" + bytes(20))
    assert is_control_frame(bytes(12) + b"\x09\x0e")
    assert not is_control_frame(bytes(12) + b"\x08\x00" + bytes(20))
    assert is_control_frame(bytes(12) + b"\x09\x0f")           # chimney
    assert not is_control_frame(bytes(12) + b"\x09\x10")
    ok, ignored = dataplane_kwargs({"listener_capacity": 8, "no_such_table": 3})
    assert ok == {"listener_capacity": 8} and ignored == ["no_such_table"]
