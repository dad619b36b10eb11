"""Lazy TCB creation (AccelTCP §5.2, tcp.quasi) changes nothing on the wire: the same
scenario run with ``HostStack(lazy_tcb="always")`` (every cookie child starts quasi),
``lazy_tcb=True`` (those of listeners offloading teardown to the NIC) and
``lazy_tcb=False`` gives the server host the same frames in and makes it send the same
frames out -- every frame, bytes and
order and time, to the wire and to the NIC (0x090B teardowns included). Scenarios:
short-lived echo with setup offload and with setup + teardown offload, clean and lossy,
the host's own SYN cookies, connections with several transactions, and clients whose
FIN or RST races the server's reply and teardown. The counters say how many connections
stayed quasi-TCBs and why the others were promoted."""

import itertools

import pytest

from acceltcp.apps.echo import EchoLoad, EchoServer
from acceltcp.io.sim import FaultConfig, Link, SimLoop
from acceltcp.nic.dataplane import NicDataplane
from acceltcp.tcp.config import TcpConfig
from acceltcp.tcp.quasi import PROMOTE_REASONS
from acceltcp.testbed.simnet import IP_A, IP_B, SimNet, SimNicDevice

SIZE = 64


class Recorder:
    """A frame device in front of another: logs (time, direction, frame) of every frame
    the stack sends and receives, otherwise the device it wraps."""

    def __init__(self, device, clock):
        self.device = device
        self.clock = clock
        self.log = []

    def send(self, frame):
        self.log.append((self.clock(), "out", bytes(frame)))
        return self.device.send(frame)

    def set_receiver(self, callback):
        if callback is None:
            self.device.set_receiver(None)
            return

        def receive(frame):
            self.log.append((self.clock(), "in", bytes(frame)))
            callback(frame)
        self.device.set_receiver(receive)

    def __getattr__(self, name):           # mac, nic, syn_window, begin/end_batch, ...
        return getattr(self.device, name)


class LineServer:
    """Replies to a request once it is a whole line (the request may come in pieces),
    then closes: a server whose first exchange may need more than the first segment."""

    def __init__(self, stack, port, **listen_kwargs):
        self.stack = stack
        self.listener = stack.listen(port, 4096, **listen_kwargs)
        self.listener.on_acceptable = self._accept
        self.replies = 0

    def _accept(self, listener):
        while listener.accept_queue:
            conn = listener.accept()
            self.stack.attach(conn, self._event)
            if listener.accept_queue:
                self._event(conn)

    def _event(self, conn):
        st = self.stack
        if conn.closed or conn.fin_queued:
            return
        if conn.rcvbuf.endswith(b"\n"):
            data = st.recv(conn, 1 << 20)
            st.send(conn, data.upper())
            self.replies += 1
            st.close(conn)
        elif conn.fin_rcvd or conn.error:
            st.recv(conn, 1 << 20)               # half a request: dropped
            st.close(conn)


class RaceClient:
    """Short-lived clients whose request rides on the handshake's ACK, by variant: the
    whole request, then wait for the reply and close (``normal``); request + FIN in one
    segment (``fin``); the whole request, then a close or a reset after a delay that
    races the server's reply and teardown (``fin_after``, ``rst_after``); half the
    request, then after the delay the rest, a FIN or a RST (``split``, ``split_fin``,
    ``split_rst``: the server's quasi-TCB meets a second segment, or its delayed ACK's
    timer when the delay is the longest)."""

    DELAYS = (0.0, 20e-6, 60e-6, 110e-6, 160e-6, 250e-6, 1e-3, 0.06)
    VARIANTS = ("normal", "fin", "fin_after", "rst_after", "split", "split_fin",
                "split_rst")
    REQUEST = b"q" * (SIZE - 1) + b"\n"

    def __init__(self, loop, stack, n):
        self.loop = loop
        self.stack = stack
        self.n = n
        self.plan = {}
        self.done = 0
        self.kinds = list(itertools.product(self.VARIANTS, self.DELAYS))

    def start(self):
        for i in range(self.n):
            self.loop.call_later(i * 37e-6, self._open, i)

    def _open(self, i):
        conn = self.stack.connect(IP_B, 7)
        self.plan[conn] = self.kinds[i % len(self.kinds)] + (False,)
        self.stack.attach(conn, self._event)

    def _later(self, conn, what):
        if conn.closed or conn.fin_queued:
            return
        if what == "abort":
            self.stack.abort(conn)
        elif what == "close":
            self.stack.close(conn)
        elif conn.writable:
            self.stack.send(conn, self.REQUEST[SIZE // 2:])

    def _event(self, conn):
        kind, delay, sent = self.plan[conn]
        st = self.stack
        if not sent and conn.writable:
            self.plan[conn] = (kind, delay, True)
            split = kind.startswith("split")
            st.send(conn, self.REQUEST[:SIZE // 2] if split else self.REQUEST)
            if kind == "fin":
                st.close(conn)
            elif kind != "normal":
                what = "send" if kind == "split" else \
                    "abort" if kind.endswith("rst") or kind == "rst_after" else "close"
                self.loop.call_later(delay, self._later, conn, what)
        if conn.rcvbuf:
            st.recv(conn, 1 << 20)
        if (conn.eof or conn.error) and not conn.closed and not conn.fin_queued:
            st.close(conn)
        if conn.closed and self.plan[conn][2] is not None:
            self.plan[conn] = (kind, delay, None)
            self.done += 1


def run(scenario, lazy, seed=7):
    """One scenario; -> (the server host's frame log, its counters, its drops)."""
    nic, setup, teardown, loss, client, per_conn = scenario
    cfg = TcpConfig(time_wait=0.5)
    faults = FaultConfig(loss=loss) if loss else None
    with SimLoop(seed) as loop:
        link = Link(loop, bandwidth_bps=1e9, delay=50e-6, queue_limit=8192, seed=seed,
                    faults_ab=faults, faults_ba=faults)
        dev = link.b
        if nic:
            dev = SimNicDevice(loop, link.b, NicDataplane(link.b.mac, secret=b"nic" * 8))
        rec = Recorder(dev, loop.time)
        simnet = SimNet(loop, seed)
        # the race clients send the rest of a split request at once (no Nagle)
        cfg_a = cfg.copy(nodelay=True) if client == "race" else cfg
        a, _ = simnet.stack(link.a, IP_A, config=cfg_a, name="a", strict=True)
        # max_syn_backlog=0 without a NIC: every SYN gets the host's SYN cookie
        b, _ = simnet.stack(rec, IP_B, config=cfg, name="b", strict=True, lazy_tcb=lazy,
                            max_syn_backlog=4096 if nic else 0)
        if client == "echo":
            EchoServer(b, 7, backlog=4096, config=cfg, close_after=SIZE * per_conn,
                       offload_setup=setup, offload_teardown=teardown)
            load = EchoLoad(a, IP_B, 7, concurrency=25, size=SIZE, per_conn=per_conn,
                            total=150, config=cfg)
            load.start()
            assert loop.run_until(lambda: load.finished, timeout=600)
            assert load.transactions == 150 and not load.errors
        else:
            LineServer(b, 7, config=cfg, offload_setup=setup, offload_teardown=teardown)
            race = RaceClient(loop, a, 168)
            race.start()
            assert loop.run_until(lambda: race.done == race.n, timeout=600)
        loop.run_for(60.0)                       # retransmissions and TIME-WAITs end
        assert not b.connections and not b.time_wait
        return rec.log, b.counters, dict(b.drops)


#            nic    setup  teardown loss  client   transactions per connection
SCENARIOS = {
    "setup": (True, True, False, 0.0, "echo", 1),
    "setup_teardown": (True, True, True, 0.0, "echo", 1),
    "setup_lossy": (True, True, False, 0.05, "echo", 1),
    "setup_teardown_lossy": (True, True, True, 0.05, "echo", 1),
    "setup_teardown_3_per_conn": (True, True, True, 0.0, "echo", 3),
    "host_cookies": (False, False, False, 0.0, "echo", 1),
    "host_cookies_lossy": (False, False, False, 0.05, "echo", 1),
    "races_setup_teardown": (True, True, True, 0.0, "race", 1),
    "races_setup_teardown_lossy": (True, True, True, 0.03, "race", 1),
    "races_setup": (True, True, False, 0.02, "race", 1),
}

_LAZY_KEYS = ("tcb_quasi", "tcb_quasi_freed", "tcb_quasi_declined")


def _split(counters):
    lazy = {k: v for k, v in counters.items()
            if k in _LAZY_KEYS or k.startswith("tcb_promoted_")}
    rest = {k: v for k, v in counters.items() if k not in lazy}
    return lazy, rest


def _same(log_a, log_b):
    if log_a != log_b:
        n = min(len(log_a), len(log_b))
        i = next((i for i in range(n) if log_a[i] != log_b[i]), n)
        raise AssertionError("frame %d differs: %r, %r" % (
            i, log_a[i][:2] + (log_a[i][2].hex(),), log_b[i][:2] + (log_b[i][2].hex(),))
            if i < n else "lengths %d, %d" % (len(log_a), len(log_b)))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_same_frames_with_and_without_lazy_tcbs(name):
    scenario = SCENARIOS[name]
    log_on, c_on, drops_on = run(scenario, "always")
    log_off, c_off, drops_off = run(scenario, False)
    log_dflt, c_dflt, drops_dflt = run(scenario, True)
    assert len(log_on) > 300
    _same(log_on, log_off)
    _same(log_dflt, log_off)
    lazy_on, rest_on = _split(c_on)
    lazy_off, rest_off = _split(c_off)
    lazy_dflt, rest_dflt = _split(c_dflt)
    assert rest_on == rest_off == rest_dflt and drops_on == drops_off == drops_dflt
    assert lazy_off["tcb_quasi"] == lazy_off["tcb_quasi_freed"] == 0
    assert not any(k.startswith("tcb_promoted_") for k in lazy_off)
    # the default: quasi-TCBs only where they can end as such (teardown to the NIC)
    assert lazy_dflt == (lazy_on if scenario[2] else lazy_off)
    # Every connection born from a cookie was a quasi-TCB or declined (an unusual first
    # segment); every quasi-TCB was freed as one or promoted once, for a known reason.
    born = lazy_on["tcb_quasi"]
    promoted = {k[len("tcb_promoted_"):]: v for k, v in lazy_on.items()
                if k.startswith("tcb_promoted_")}
    assert set(promoted) <= set(PROMOTE_REASONS)
    assert born + lazy_on.get("tcb_quasi_declined", 0) == \
        c_on["cookie_conns"] + c_on.get("syn_cookie_ack_ok", 0)
    assert born == lazy_on["tcb_quasi_freed"] + sum(promoted.values()) > 0
    nic, setup, teardown, loss, client, per_conn = scenario
    if client == "echo" and not loss:
        if teardown and per_conn == 1:
            # the reply and the close went to the NIC: no connection became a full TCB
            assert born == 150 and promoted == {} and lazy_on["tcb_quasi_freed"] == 150
        elif teardown:
            # the first reply is output of a connection that stays open: a full TCB
            assert promoted == {"send": born}
        else:
            # the host closes it itself (FIN, retransmission, TIME-WAIT): a full TCB
            assert promoted == {"close": born}
    if client == "race":
        assert lazy_on.get("tcb_quasi_declined", 0) > 0     # request + FIN on the ACK
        # a request's FIN or RST, a delayed ACK's timer (the rest of a split request is
        # taken as a quasi-TCB: those connections are still freed as quasi-TCBs)
        assert {"fin", "rst", "timer"} <= set(promoted)
        if teardown:
            # more than the 72 clients that send the whole request on the ACK and no FIN
            assert lazy_on["tcb_quasi_freed"] > 72


@pytest.mark.parametrize("lazy", [True, False])
def test_a_parked_tcb_sends_nothing_while_the_nic_decides(lazy):
    """A NIC that answers teardown offers only every 200 ms (moderated reports) -- longer
    than the delayed ACK a TCB had pending when it was offered: the parked TCB must not
    send that ACK (the connection is the NIC's unless it refuses)."""
    cfg = TcpConfig(time_wait=0.5)
    with SimLoop(3) as loop:
        link = Link(loop, bandwidth_bps=1e9, delay=50e-6, queue_limit=8192, seed=3)
        dev = SimNicDevice(loop, link.b, NicDataplane(link.b.mac, secret=b"nic" * 8,
                                                      report_interval=0.2))
        rec = Recorder(dev, loop.time)
        simnet = SimNet(loop, 3)
        a, _ = simnet.stack(link.a, IP_A, config=cfg, name="a", strict=True)
        b, _ = simnet.stack(rec, IP_B, config=cfg, name="b", strict=True, lazy_tcb=lazy)
        EchoServer(b, 7, backlog=4096, config=cfg, close_after=SIZE, offload_setup=True,
                   offload_teardown=True)
        load = EchoLoad(a, IP_B, 7, concurrency=10, size=SIZE, per_conn=1, total=40,
                        config=cfg)
        load.start()
        assert loop.run_until(lambda: load.finished, timeout=600)
        loop.run_for(5.0)
        c = b.counters
        assert load.transactions == 40 and c["teardown_accepted"] >= 40
        # every TCP frame the host sent went to the NIC as a 0x090B offer
        sent = [f for _, d, f in rec.log if d == "out" and f[12:14] == b"\x08\x00"]
        assert sent == []
        assert c["tcb_quasi_freed"] == (c["teardown_accepted"] if lazy else 0)


def test_reading_stats_does_not_promote_live_quasi_tcbs():
    """Counters and stats of a host with live quasi-TCBs (requests not complete yet)
    read them as they are: no promotion, the same figures as full TCBs give."""
    cfg = TcpConfig(time_wait=0.5)
    figures = {}
    for lazy in (True, False):
        with SimLoop(5) as loop:
            link = Link(loop, bandwidth_bps=1e9, delay=50e-6, seed=5)
            dev = SimNicDevice(loop, link.b, NicDataplane(link.b.mac, secret=b"nic" * 8))
            simnet = SimNet(loop, 5)
            a, _ = simnet.stack(link.a, IP_A, config=cfg, name="a", strict=True)
            b, _ = simnet.stack(dev, IP_B, config=cfg, name="b", strict=True, lazy_tcb=lazy)
            LineServer(b, 7, config=cfg, offload_setup=True, offload_teardown=True)
            conns = [a.connect(IP_B, 7) for _ in range(5)]
            loop.run_for(0.001)
            for conn in conns:
                a.send(conn, b"half a line")         # no newline: the server waits
            loop.run_for(0.005)                      # before the delayed ACK (40 ms)
            st = b.stats()
            c = b.counters
            assert len(st["connections"]) == 5 and c["conns_live"] == 5
            assert c["tcb_quasi"] == (5 if lazy else 0)
            assert not [k for k in c if k.startswith("tcb_promoted_")]
            for k in ("frames_in", "bytes_in"):
                st["counters"].pop(k)
            figures[lazy] = ({k: v for k, v in st["counters"].items()
                              if not k.startswith("tcb_")}, st["tcp"], st["connections"])
    assert figures[True] == figures[False]
