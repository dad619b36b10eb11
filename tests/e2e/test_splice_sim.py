"""Splice offload end to end in the simulator (AccelTCP §4.3): a client and a server on
stack a, the proxy on stack b behind the NIC. The proxy reads the request head, forwards
it rewritten (longer), then splices; afterwards both directions move megabytes through
the NIC only. Byte-exact both ways, sequence numbers wrap, SACK and timestamps on,
with and without loss; the closure report's counts equal what the NIC moved."""

import hashlib
import random

import pytest

from acceltcp.apps.proxy import SpliceProxy
from acceltcp.host.offload import SpliceFailed
from acceltcp.testbed.simnet import IP_A, make_pair
from acceltcp.io.sim import FaultConfig, SimLoop
from acceltcp.tcp.config import TcpConfig
from acceltcp.wire import control

HEAD = b"GET /object HTTP/1.1\n"
REWRITTEN = b"GET /object HTTP/1.1\nX-Forwarded-For: 198.18.0.1\n"


class Peer:
    """One end on stack a: sends `first` at once and `out` once it has received
    `start_after` bytes (so that everything in `out` crosses the NIC after the splice);
    hashes what it gets."""

    def __init__(self, stack, conn, first, out, start_after):
        self.stack = stack
        self.conn = conn
        self.out = memoryview(first + out)
        self.sent = 0
        self.limit = len(first)
        self.start_after = start_after
        self.got = hashlib.sha256()
        self.n = 0
        self.done = False
        stack.attach(conn, self.on_event, self)
        self.on_event(conn)

    def on_event(self, conn):
        st = self.stack
        if conn.rcvbuf:
            data = st.recv(conn, 1 << 30)
            self.got.update(data)
            self.n += len(data)
        if self.n >= self.start_after:
            self.limit = len(self.out)
        while self.sent < self.limit and conn.writable and conn.state in (4, 7):
            k = st.send(conn, self.out[self.sent:min(self.limit, self.sent + (1 << 18))])
            if not k:
                break
            self.sent += k
        if self.sent == len(self.out) and not conn.fin_queued and conn.state in (4, 7):
            st.shutdown(conn)
        if conn.eof and conn.fin_queued and not conn.closed and not conn.rcvbuf:
            st.close(conn)
        if conn.closed:
            self.done = True


def _isn_near_wrap(seed):
    """ISNs a few hundred KiB below 2**32 on every connection: seq and ack wrap."""
    rnd = random.Random(seed)
    return lambda *a: (0x100000000 - rnd.randrange(100_000, 600_000))


def _setup(loop, size, faults=None, seed=1, splice=True, nic_kwargs=None, client_waits=True,
           buf=1 << 20, keep=None):
    """Client and server on stack a, the proxy on stack b behind the NIC, the exchange
    started; `keep(frame)`: which frames stack a sends are recorded. -> (net, proxy,
    peers, client data, server data, recorded frames)."""
    cfg = TcpConfig(rcv_buf=buf, snd_buf=buf, time_wait=1.0)
    c_data = random.Random(seed).randbytes(size)
    s_data = random.Random(seed + 1).randbytes(size + 777)
    net = make_pair(loop, config_a=cfg, config_b=cfg, nic_b=True, faults=faults,
                    seed=seed, bandwidth_bps=10e9, delay=20e-6, queue_limit=100000,
                    stack_a={"isn": _isn_near_wrap(seed)},
                    stack_b={"isn": _isn_near_wrap(seed + 7)},
                    nic_kwargs=nic_kwargs)
    a, b = net
    proxy = SpliceProxy(b, 8080, [(IP_A, 80)], splice=splice, config=cfg,
                        rewrite=lambda h: REWRITTEN)
    seen = []
    if keep is not None:
        net.link.a.add_tap(lambda f, t: seen.append(bytes(f)) if keep(f) else None)
    peers = {}
    server_lst = a.listen(80, 16, config=cfg)

    def on_server(lst):
        while (conn := lst.accept()) is not None:
            peers["server"] = Peer(a, conn, b"", s_data, len(REWRITTEN))
    server_lst.on_acceptable = on_server
    conn = a.connect("198.18.0.2", 8080, config=cfg)
    peers["client"] = Peer(a, conn, HEAD, c_data, 1 if client_waits else 0)
    return net, proxy, peers, c_data, s_data, seen


def _all_done(peers, proxy):
    return all(p.done for p in peers.values()) and len(peers) == 2 and proxy.counters["closed"]


def _run(size, seed=1, **kw):
    with SimLoop(seed) as loop:
        net, proxy, peers, c_data, s_data, _ = _setup(loop, size, seed=seed, **kw)
        loop.run_until(lambda: _all_done(peers, proxy), timeout=600)
        loop.run_for(3.0)
        return net, proxy, peers, c_data, s_data


def _check_bytes(peers, c_data, s_data):
    cl, sv = peers["client"], peers["server"]
    assert sv.n == len(REWRITTEN) + len(c_data)
    assert sv.got.digest() == hashlib.sha256(REWRITTEN + c_data).digest()
    assert cl.n == len(s_data)
    assert cl.got.digest() == hashlib.sha256(s_data).digest()


def test_splice_clean_link_counts_exact():
    net, proxy, peers, c_data, s_data = _run(2 << 20)
    _check_bytes(peers, c_data, s_data)
    assert proxy.counters["spliced"] == 1 and proxy.counters["splice_failed"] == 0
    rep = proxy.reports[0]
    assert isinstance(rep, control.SpliceClosed)
    assert rep.reason == control.SPLICE_END_FIN and rep.fin_c and rep.fin_s
    nic = net.nic_b.dataplane
    # what the NIC moved: everything after the head, each way, and nothing else
    assert rep.bytes_c == len(c_data) and rep.bytes_s == len(s_data)
    assert rep.packets_c > 0 and rep.packets_s > 0
    assert nic.counters["splices_installed"] == nic.counters["splices_closed"] == 1
    assert len(nic.splices) == 0
    c = net.b.counters
    assert c["splice_installed"] == 1 and c["splice_closed"] == 1
    # the host saw only the start: a handful of frames, not megabytes
    assert c["bytes_in"] < 200_000


@pytest.mark.parametrize("seed", [3, 4])
def test_splice_lossy_link_byte_exact(seed):
    faults = FaultConfig(loss=0.01, reorder=0.01, duplicate=0.005)
    net, proxy, peers, c_data, s_data = _run(1 << 20, faults=faults, seed=seed)
    _check_bytes(peers, c_data, s_data)
    rep = proxy.reports[0]
    # retransmissions are moved too, so at least the data each way
    assert rep.bytes_c >= len(c_data) * 0.5 and rep.bytes_s >= len(s_data) * 0.5
    assert net.a.counters["fast_retransmits"] + net.a.counters["retransmits"] > 0


def test_splice_refused_when_table_full_relays_in_host():
    net, proxy, peers, c_data, s_data = _run(256 << 10, nic_kwargs={"splice_capacity": 0})
    _check_bytes(peers, c_data, s_data)
    assert proxy.counters["splice_failed"] == 1 and proxy.counters["spliced"] == 0
    assert net.b.counters["splice_failed_table_full"] == 1


def test_host_relay_baseline():
    net, proxy, peers, c_data, s_data = _run(256 << 10, splice=False)
    _check_bytes(peers, c_data, s_data)
    assert net.b.counters.get("splice_requested", 0) == 0


def test_splice_failed_type_is_reported():
    assert "table_full" in repr(SpliceFailed(1, "table_full"))


def test_splice_overload_capacity_8_rules():
    """40 proxied connections at once, room for 4 splices (8 rules) on the NIC: the
    rest is relayed by the host; every byte arrives, the counters add up."""
    n = 40
    size = 64 << 10
    cfg = TcpConfig(rcv_buf=1 << 20, snd_buf=1 << 20, time_wait=1.0)
    with SimLoop(9) as loop:
        net = make_pair(loop, config_a=cfg, config_b=cfg, nic_b=True, seed=9,
                        bandwidth_bps=10e9, delay=20e-6, queue_limit=100000,
                        nic_kwargs={"splice_capacity": 8})
        a, b = net
        proxy = SpliceProxy(b, 8080, [(IP_A, 80)], config=cfg, rewrite=lambda h: REWRITTEN)
        servers, clients = [], []
        lst = a.listen(80, 64, config=cfg)

        def on_server(lst):
            while (conn := lst.accept()) is not None:
                servers.append(Peer(a, conn, b"", bytes(size), len(REWRITTEN)))
        lst.on_acceptable = on_server
        for i in range(n):
            conn = a.connect("198.18.0.2", 8080, config=cfg)
            clients.append(Peer(a, conn, HEAD, bytes([i]) * size, 1))
        loop.run_until(lambda: all(p.done for p in clients + servers)
                       and len(servers) == n, timeout=600)
        loop.run_for(3.0)
    for p in clients:
        assert p.n == size and p.got.digest() == hashlib.sha256(bytes(size)).digest()
    got = sorted(p.got.digest() for p in servers)
    want = sorted(hashlib.sha256(REWRITTEN + bytes([i]) * size).digest() for i in range(n))
    assert got == want
    c = proxy.counters
    assert c["spliced"] > 0 and c["splice_failed"] > 0
    assert c["spliced"] + c["splice_failed"] == n
    assert net.b.counters["splice_failed_table_full"] == c["splice_failed"]
    assert len(net.nic_b.dataplane.splices) == 0


def test_splice_with_input_beyond_the_head_larger_than_a_send_buffer():
    """The client sends its head and all its data at once: at nsplice time the proxy's
    receive buffer holds more than the other side's send buffer takes; nsplice relays
    it as room frees up, then splices. Nothing is lost (the bug this pins lost the
    part that did not fit)."""
    net, proxy, peers, c_data, s_data = _run(3 << 20, client_waits=False, buf=256 << 10)
    _check_bytes(peers, c_data, s_data)
    assert proxy.counters["spliced"] == 1
    rep = proxy.reports[0]
    assert 0 < rep.bytes_c < len(c_data)          # part relayed by the host first


def test_a_frame_passed_up_before_the_rule_goes_to_the_nic_not_reset():
    """Where the NIC and the host have separate queues (the XDP NIC), a frame of the
    server the NIC passed up just before its rule was in place can reach the host after
    SpliceInstalled: the host sends it through the NIC, like the frames it held (the
    rule translates it: a duplicate for the client), and never resets the server.
    Emulated here: once the splice is installed, a copy of a server frame the proxy
    received before is given to the proxy's stack again."""
    with SimLoop(1) as loop:
        (_, b), proxy, peers, c_data, s_data, seen = _setup(
            loop, 300_000, keep=lambda f: f[34:36] == (80).to_bytes(2, "big") and len(f) > 66)
        loop.run_until(lambda: b.counters.get("splice_installed") == 1, timeout=60)
        rsts = b.counters.get("rsts_sent", 0)
        b.receive_frame(seen[0])                     # a server frame, passed up "late"
        assert b.counters.get("splice_late_forwarded") == 1 and b.counters.get("rsts_sent", 0) == rsts
        loop.run_until(lambda: _all_done(peers, proxy), timeout=600)
        loop.run_for(3.0)
    _check_bytes(peers, c_data, s_data)
    assert b.counters.get("rsts_sent", 0) == rsts and proxy.counters["spliced"] == 1


def test_a_straggler_after_the_splice_ended_is_dropped_not_reset_or_forwarded():
    """Once the NIC reported the end (0x090D), a frame of the spliced tuples that still
    reaches the host (the XDP NIC passes up what arrives after its rules are gone: a
    duplicate ACK crossing the last ACK) is dropped and counted (drops["splice_late"]):
    forwarded, it would leave the NIC untranslated; reset, it would break the endpoint's
    TIME-WAIT."""
    with SimLoop(1) as loop:
        (_, b), proxy, peers, c_data, s_data, seen = _setup(
            loop, 50_000, seed=3, keep=lambda f: f[36:38] == (8080).to_bytes(2, "big"))
        loop.run_until(lambda: _all_done(peers, proxy), timeout=600)
        before = dict(b.counters)
        b.receive_frame(seen[-1])                    # the client's last frame, once more
        after = b.counters
    _check_bytes(peers, c_data, s_data)
    assert b.drops["splice_late"] == 1
    assert after["frames_out"] == before["frames_out"]
    assert after.get("splice_late_forwarded", 0) == before.get("splice_late_forwarded", 0)


@pytest.mark.parametrize("who", ["client", "server"])
def test_an_rst_while_the_nic_installs_the_splice_ends_it_on_both_sides(who):
    """An endpoint resets while the Splice is on its way to the NIC (the host's TCBs
    are drained, the rules not yet in place): the RST goes the way of the frames the
    host held -- through the NIC once the rules are there, translated to the other
    endpoint, which is reset too, and the NIC ends the splice at once (a reset
    report) -- instead of dying in the host's TCB, which left the other endpoint open
    and the rules on the NIC until their idle timeout. Emulated: the Splice takes 5 ms
    to reach the NIC, and the endpoint aborts as it leaves the host."""
    with SimLoop(5) as loop:
        net, proxy, peers, _, _, _ = _setup(loop, 1 << 20)
        a, b = net
        to_nic = b.nic_control

        def nic_control(msg):
            if isinstance(msg, control.Splice):
                loop.call_later(0.005, to_nic, msg)
                loop.call_soon(a.abort, peers[who].conn)
            else:
                to_nic(msg)
        b.nic_control = nic_control
        assert loop.run_until(lambda: proxy.counters["closed"], timeout=60)
        loop.run_for(1.0)
        other = peers["server" if who == "client" else "client"].conn
        rep = proxy.reports[-1]
        nic = net.nic_b.dataplane
    assert proxy.counters["spliced"] == 1 and isinstance(rep, control.SpliceClosed)
    assert rep.reason == (control.SPLICE_END_RESET_CLIENT if who == "client"
                          else control.SPLICE_END_RESET_SERVER)
    assert other.closed and other.error is not None          # reset through the NIC
    assert len(nic.splices) == 0 and b.counters["splice_closed"] == 1
    assert not b.last_exception
