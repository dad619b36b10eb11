"""CPU accounting by category: `HostStack.entry_kind` classifies each received frame
before it is processed (setup, teardown, data, nic, l2), `StackRunner.cpu_categories`
charges each entry's CPU to its kind and the application's callbacks to ``app``, and the
categories add up to ``cpu_ns``. Frames are recorded on the server stack's device, each
with the kind the stack gave it just before receiving it; no assertion depends on a
time."""

import pytest

from acceltcp.apps.accept import accept_into
from acceltcp.apps.echo import EchoServer
from acceltcp.host.runner import CPU_KINDS
from acceltcp.io.sim import SimLoop
from acceltcp.tcp import states
from acceltcp.tcp.config import TcpConfig
from acceltcp.testbed.simnet import make_pair
from acceltcp.wire import control
from acceltcp.wire.ethernet import ETHERTYPE_ARP
from acceltcp.wire.tcp import ACK, FIN, RST, SYN

PORT = 7


class Recorder:
    """Between a device and its runner: each frame delivered is recorded with
    ``stack.entry_kind(frame)`` read just before the runner gets it."""

    def __init__(self, device):
        self.device = device
        self.stack = None
        self.seen = []          # (kind, frame)
        self._rx = None
        device.set_receiver(self._deliver)

    def __getattr__(self, name):          # mac, send, nic, syn_window...: the device's
        if name == "device":
            raise AttributeError(name)
        return getattr(self.device, name)

    def set_receiver(self, cb):
        self._rx = cb

    def inject(self, frame):
        """`frame` as if the device had delivered it."""
        self._deliver(frame)

    def _deliver(self, frame):
        if self.stack is not None:
            self.seen.append((self.stack.entry_kind(frame), bytes(frame)))
        if self._rx is not None:
            self._rx(frame)


def _ethertype(frame):
    return (frame[12] << 8) | frame[13]


def _flags(frame):
    return frame[47] if _ethertype(frame) == 0x0800 and len(frame) > 47 else None


def _payload_len(frame):
    total = (frame[16] << 8) | frame[17]
    return total - 20 - (frame[46] >> 4) * 4


@pytest.fixture
def loop():
    with SimLoop() as lp:
        yield lp


def _pair(loop, nic_b=False, static_arp=True, time_wait=1.0):
    """Two stacks; the server's (b's) device wrapped in a Recorder before its runner."""
    from acceltcp.host.runner import StackRunner

    cfg = TcpConfig(time_wait=time_wait)
    net = make_pair(loop, config_a=cfg, config_b=cfg, nic_b=nic_b, static_arp=static_arp)
    b = net.b
    net.runner_b.close()
    rec = Recorder(b.device)
    b.device = rec
    net.runner_b = StackRunner(loop, b, rec)
    rec.stack = b
    return net, rec


def _client(loop, stack, ip, payload=b"x" * 64, close=True):
    """A client connection that sends `payload`; closes once it has the echo back."""
    got = []
    conn = stack.connect(ip, PORT)

    def on_event(c):
        if c.state == states.ESTABLISHED and not got and payload:
            stack.send(c, payload)
            got.append(b"")
        if c.rcvbuf:
            got.append(stack.recv(c, 65536))
        if close and c.eof and not c.app_closed and not c.closed:
            stack.close(c)

    stack.attach(conn, on_event)
    return conn, got


def test_short_lived_echo_frames_by_kind(loop):
    """The SYN and the handshake's ACK (the request on it) are setup, the client's FIN
    (the server in FIN-WAIT: it closed after its reply) teardown; ARP frames l2."""
    net, rec = _pair(loop, static_arp=False)
    EchoServer(net.b, PORT, close_after=64)
    net.runner_b.cpu_categories = True
    conn, got = _client(loop, net.a, net.b.ip)
    loop.run_for(0.5)
    assert b"".join(got) == b"x" * 64 and conn.closed
    kinds = [(k, _flags(f), _ethertype(f), f) for k, f in rec.seen]
    arp = [k for k, _, et, _ in kinds if et == ETHERTYPE_ARP]
    assert arp and set(arp) == {"l2"}
    tcp = [(k, fl, f) for k, fl, et, f in kinds if et == 0x0800]
    assert tcp[0][0] == "setup" and tcp[0][1] & SYN
    # the handshake's ACK, the request riding on it: setup (one entry, one kind)
    assert tcp[1][0] == "setup" and tcp[1][1] & ACK and not tcp[1][1] & SYN
    fins = [k for k, fl, f in tcp if fl & FIN]
    assert fins and set(fins) == {"teardown"}
    assert tcp[-1][0] == "teardown"
    r = net.runner_b
    assert r.entries_by_kind["setup"] == 2 and r.entries_by_kind["data"] == 0
    assert r.entries_by_kind["teardown"] == len(tcp) - 2
    assert r.entries_by_kind["l2"] == len(arp)
    assert sum(r.cpu_by_kind.values()) == r.cpu_ns
    assert sum(r.entries_by_kind.values()) == r.entries
    assert r.cpu_by_kind["app"] > 0          # the echo server's callbacks ran
    assert set(r.cpu_by_kind) == set(CPU_KINDS)


def test_rst_and_time_wait_segments_are_teardown(loop):
    """A RST is teardown; so is a segment for a TIME-WAIT record (the server closes
    first and holds TIME-WAIT: the client's FIN, sent again, meets the record)."""
    net, rec = _pair(loop, time_wait=5.0)
    EchoServer(net.b, PORT, close_after=64)
    conn, got = _client(loop, net.a, net.b.ip)
    loop.run_for(0.2)
    assert conn.closed and len(net.b.time_wait) == 1
    fin = [f for k, f in rec.seen if _flags(f) & FIN][-1]
    assert net.b.entry_kind(fin) == "teardown"
    before = net.runner_b.frames
    rec.inject(fin)                            # the FIN again, through the runner
    assert rec.seen[-1][0] == "teardown" and net.runner_b.frames == before + 1
    # a RST on an established connection
    c2, _ = _client(loop, net.a, net.b.ip, payload=b"", close=False)
    loop.run_for(0.05)
    assert c2.state == states.ESTABLISHED
    n = len(rec.seen)
    net.a.abort(c2)
    loop.run_for(0.05)
    rst = [(k, f) for k, f in rec.seen[n:] if _flags(f) & RST]
    assert rst and all(k == "teardown" for k, _ in rst)


def test_established_segment_is_data_and_closed_by_app_is_teardown(loop):
    net, rec = _pair(loop)
    EchoServer(net.b, PORT)                  # closes when the client does
    conn, got = _client(loop, net.a, net.b.ip, close=False)
    loop.run_for(0.05)
    data = [f for k, f in rec.seen if _payload_len(f)]
    assert data and net.b.entry_kind(data[0]) == "data"
    # the client closes first: its FIN is teardown, and the server's TCB, once the app
    # closed it (LAST-ACK), makes the final ACK teardown
    net.a.close(conn)
    loop.run_for(0.2)
    assert conn.closed or conn.state == states.TIME_WAIT
    after = [(k, _flags(f)) for k, f in rec.seen if not _payload_len(f)][-2:]
    assert all(k == "teardown" for k, _ in after)


def test_setup_offload_new_connection_and_nic_reports(loop):
    """Behind the NIC with setup + teardown offload: the 0x090A NewConnection is setup,
    the NIC's teardown reports are teardown, and the host sees no SYN."""
    net, rec = _pair(loop, nic_b=True)
    EchoServer(net.b, PORT, close_after=64, offload_setup=True, offload_teardown=True)
    net.runner_b.cpu_categories = True
    for _ in range(3):
        _client(loop, net.a, net.b.ip)
    loop.run_for(0.5)
    ets = [(k, _ethertype(f), f) for k, f in rec.seen]
    newconn = [k for k, et, _ in ets if et == control.ETHERTYPE_NEW_CONNECTION]
    assert newconn == ["setup"] * 3
    reports = [(k, f[15]) for k, et, f in ets if et == control.ETHERTYPE_CONTROL]
    td = {control.TeardownAccepted.TYPE, control.TeardownDone.TYPE,
          control.TeardownRefused.TYPE}
    assert any(t in td for _, t in reports)
    for k, t in reports:
        assert k == ("teardown" if t in td else "nic")
    assert not [f for _, et, f in ets if et == 0x0800 and _flags(f) & SYN]
    r = net.runner_b
    assert r.entries_by_kind["setup"] == 3 and r.entries_by_kind["data"] == 0
    assert sum(r.cpu_by_kind.values()) == r.cpu_ns


def test_nic_control_frame_kinds(loop):
    """Control frames built by hand: a StatusReport (0x090E) and a SpliceClosed (0x090D)
    are nic, a TeardownDone teardown; without a NIC they are l2; an ARP request l2."""
    net, _ = _pair(loop, nic_b=True)
    b = net.b
    mac = b.mac
    frame_td = mac + mac + control.ETHERTYPE_CONTROL.to_bytes(2, "big") + \
        bytes((control.VERSION, control.TeardownDone.TYPE, 0, 0))
    frame_st = mac + mac + control.ETHERTYPE_CONTROL.to_bytes(2, "big") + \
        bytes((control.VERSION, control.StatusReport.TYPE, 0, 0))
    frame_sc = mac + mac + control.ETHERTYPE_SPLICE_CLOSED.to_bytes(2, "big") + \
        bytes((control.VERSION, control.SpliceClosed.TYPE, 0, 0))
    assert b.entry_kind(frame_td) == "teardown"
    assert b.entry_kind(frame_st) == "nic"
    assert b.entry_kind(frame_sc) == "nic"
    arp = b"\xff" * 6 + mac + ETHERTYPE_ARP.to_bytes(2, "big") + bytes(28)
    assert b.entry_kind(arp) == "l2"
    assert b.entry_kind(b"\x00" * 10) == "l2"
    net2, _ = _pair(loop)
    assert net2.b.entry_kind(frame_td) == "l2"       # no NIC: not taken
    assert net2.b.entry_kind(frame_sc) == "l2"


class BusyEcho:
    """Echo, close after the reply, with a fixed amount of work per event."""

    def __init__(self, stack, port):
        self.stack = stack
        accept_into(stack, stack.listen(port), self)

    def on_accept(self, conn):
        return self.on_event, None

    def on_event(self, conn):
        x = 0
        for i in range(20000):
            x += i
        if conn.rcvbuf:
            self.stack.send(conn, self.stack.recv(conn, 65536))
            self.stack.close(conn)


def test_app_time_measured_and_categories_sum(loop):
    """An app whose callback burns CPU: app time > 0, and every category adds up to
    cpu_ns exactly (the runner's own clock reads, both sides)."""
    net, rec = _pair(loop)
    BusyEcho(net.b, PORT)
    r = net.runner_b
    r.cpu_categories = True
    assert r.cpu_accounting and net.b.app_timing
    for _ in range(5):
        _client(loop, net.a, net.b.ip)
    loop.run_for(1.5)                       # TIME-WAIT expiry: timer entries too
    assert r.cpu_by_kind["app"] > 0
    # its recv/send/close: timed as socket calls, their CPU in data and teardown
    assert net.b.api_ns["data"] > 0 and net.b.api_ns["teardown"] > 0
    assert 0 < r.app_api_ns <= r.cpu_by_kind["data"] + r.cpu_by_kind["teardown"]
    assert r.entries_by_kind["timers"] >= 1 and r.entries_by_kind["timers"] == \
        r.timer_fires
    assert sum(r.cpu_by_kind.values()) == r.cpu_ns
    assert sum(r.entries_by_kind.values()) == r.entries == r.frames + r.timer_fires
    assert r.entries_by_kind["setup"] == 10 and r.entries_by_kind["data"] == 0
    r.reset_cpu()
    assert r.cpu_ns == 0 and not any(r.cpu_by_kind.values())
    # off: nothing by category, the stack's app timing off too (its socket calls are
    # the methods again)
    r.cpu_categories = False
    assert not net.b.app_timing and "send" not in vars(net.b)
    _client(loop, net.a, net.b.ip)
    loop.run_for(0.2)
    assert r.cpu_ns > 0 and not any(r.cpu_by_kind.values())


class TickClock:
    """A stand-in for the ``time`` module in host.conns: every read is 1000 ns later."""

    def __init__(self):
        self.now = 0

    def perf_counter_ns(self):
        self.now += 1000
        return self.now


def test_nested_app_callbacks_timed_once(monkeypatch):
    """A callback entered from inside another one, and a socket call inside a socket
    call, are the outer one's time: with a clock that ticks per read, the outer call's
    two reads are the only ones."""
    import acceltcp.host.conns as conns_mod

    conns = conns_mod.ConnTable(None, {}, None, None)
    tick = TickClock()
    monkeypatch.setattr(conns_mod, "time", tick)
    conns.app_timing = True
    calls = []

    def inner(x):
        calls.append(x)

    def outer(x):
        conns.timed(inner, x + 1)
        conns.api_call("teardown", lambda: conns.api_call("data", calls.append, 9))

    conns.timed(outer, 1)
    assert calls == [2, 9]
    # outer: reads 1 and 4 (3000 ns); the teardown call: reads 2 and 3; nothing else
    assert conns.app_ns == 3000 and tick.now == 4000
    assert conns.api_ns == {"data": 0, "teardown": 1000}
    # outside a callback a socket call is not timed
    conns.api_call("data", calls.append, 10)
    assert tick.now == 4000 and calls[-1] == 10
