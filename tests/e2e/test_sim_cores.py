"""N simulated server cores behind one simulated NIC (testbed/simcores.py): the RSS hash
is the Microsoft spec's Toeplitz and symmetric with the 0x6d5a key; every frame of a
connection, the NIC's 0x090A / teardown reports for it included, reaches one core and
always the same; every core's listener accepts; echo is byte-exact over 1-4 cores
without a NIC, with setup offload and with setup + teardown offload, and with loss; a
core's own outgoing connection comes back to it (flow rules); a core's Unlisten does
not remove the NIC's listener while another core listens."""

import asyncio
import socket

import pytest

from acceltcp.apps.echo import EchoServer
from acceltcp.host.aio import open_connection
from acceltcp.io.sim import FaultConfig, SimLoop
from acceltcp.tcp.config import TcpConfig
from acceltcp.testbed.simcores import (
    IP_CLIENT, IP_SERVER, RSS_KEY_MICROSOFT, Steering, Toeplitz, flow_key, make_cores)
from acceltcp.wire import control

SIZE = 64


def _key(src, dst, sport, dport):
    return (socket.inet_aton(src) + socket.inet_aton(dst) + sport.to_bytes(2, "big")
            + dport.to_bytes(2, "big"))


def test_toeplitz_matches_the_rss_specification():
    """The Microsoft RSS verification suite's IPv4 TCP examples."""
    t = Toeplitz(RSS_KEY_MICROSOFT)
    assert t(_key("66.9.149.187", "161.142.100.80", 2794, 1766)) == 0x51CCC178
    assert t(_key("199.92.111.2", "65.69.140.83", 14230, 4739)) == 0xC626B0EA
    assert t(_key("24.19.198.95", "12.22.207.184", 12898, 38024)) == 0x5C2B394A


def test_symmetric_key_hashes_both_directions_alike_and_spreads():
    t = Toeplitz()
    counts = [0] * 4
    table = [i % 4 for i in range(128)]          # Steering's indirection table, 4 cores
    for port in range(32768, 32768 + 4000):
        k = _key(IP_CLIENT, IP_SERVER, port, 7)
        assert t(k) == t(_key(IP_SERVER, IP_CLIENT, 7, port))
        counts[table[t(k) & 127]] += 1
    assert min(counts) > 0.2 * 4000               # every core gets a fair share


def _tap_cores(net):
    """Record, per connection (the peer's 4-tuple), the cores its frames reached:
    plain segments and the NIC's frames about it (0x090A, Teardown* reports)."""
    owners = {}
    kinds = {"tcp": 0, "new_connection": 0, "teardown_report": 0}
    for q in net.steering.queues:
        rx = q._receiver

        def watch(frame, q=q, rx=rx):
            et = (frame[12] << 8) | frame[13]
            key = None
            if et == 0x0800:
                key = flow_key(frame)
                kinds["tcp"] += 1
            elif et == control.ETHERTYPE_NEW_CONNECTION:
                key = flow_key(frame, 14 + 16)
                kinds["new_connection"] += 1
            elif et == control.ETHERTYPE_CONTROL:
                msg = control.decode(frame)
                if hasattr(msg, "key"):
                    key = msg.key
                    kinds["teardown_report"] += 1
            if key is not None:
                owners.setdefault(key, set()).add(q.index)
            rx(frame)
        q.set_receiver(watch)
    return owners, kinds


def _echo(cores, n, *, offload=(), loss=0.0, seed=1, concurrency=64):
    cfg = TcpConfig(time_wait=0.05)
    with SimLoop(seed) as loop:
        net = make_cores(loop, cores, nic=bool(offload), seed=seed, config=cfg,
                         faults_ab=FaultConfig(loss=loss) if loss else None,
                         faults_ba=FaultConfig(loss=loss) if loss else None,
                         bandwidth_bps=1e9, delay=20e-6, queue_limit=8192,
                         server_kwargs={"max_syn_backlog": 4096})
        servers = [EchoServer(s, 7, backlog=n, config=cfg, close_after=SIZE,
                              offload_setup="setup" in offload,
                              offload_teardown="teardown" in offload)
                   for s in net.servers]
        owners, kinds = _tap_cores(net)
        sem = asyncio.Semaphore(concurrency)

        async def client(i):
            async with sem:
                reader, writer = await open_connection(net.client, IP_SERVER, 7)
                msg = bytes((i * 7 + j) & 0xFF for j in range(SIZE))
                writer.write(msg)
                reply = await reader.readexactly(SIZE)
                assert await reader.read() == b""
                writer.close()
                await writer.wait_closed()
                return reply == msg

        async def main():
            return await asyncio.gather(*(client(i) for i in range(n)))

        ok = loop.run(main(), timeout=600)
        loop.run_for(1.0)                        # the last teardowns and TIME-WAITs
        result = {"ok": ok, "accepted": [s.accepted for s in servers],
                  "echoed": [s.bytes_echoed for s in servers], "owners": owners,
                  "kinds": kinds, "steering": net.steering.stats(),
                  "live": [s.counters["conns_live"] for s in net.servers],
                  "offered": [s.counters.get("teardown_offered", 0) for s in net.servers],
                  "handed": [s.counters.get("teardown_accepted", 0) for s in net.servers],
                  "nic": dict(net.nic.dataplane.counters) if net.nic else {}}
        net.close()
    return result


@pytest.mark.parametrize("cores", [1, 2, 4])
@pytest.mark.parametrize("offload", [(), ("setup",), ("setup", "teardown")],
                         ids=["no-nic", "setup", "setup+teardown"])
def test_echo_over_cores_is_byte_exact_and_each_connection_has_one_core(cores, offload):
    n = 300
    r = _echo(cores, n, offload=offload)
    assert all(r["ok"]) and len(r["ok"]) == n
    assert sum(r["accepted"]) == n and sum(r["echoed"]) == n * SIZE
    assert all(a > 0 for a in r["accepted"])           # every core's listener accepts
    assert len(r["owners"]) == n                        # every connection seen ...
    assert all(len(c) == 1 for c in r["owners"].values())   # ... by one core only
    per_core = [0] * cores
    for (c,) in r["owners"].values():
        per_core[c] += 1
    assert per_core == r["accepted"]                    # the core that saw it accepted it
    assert r["live"] == [0] * cores
    if "setup" in offload:
        # every 0x090A (the handshake ACK, and the request when it echoes the cookie)
        assert r["kinds"]["new_connection"] == r["nic"]["cookie_ack_ok"] >= n
        assert r["nic"]["syn_cookies_sent"] >= n
    if "teardown" in offload:
        # every core's offers acknowledged to it (the NIC's cumulative, moderated
        # TeardownAccepted split per core), and to no other
        assert r["handed"] == r["offered"] == r["accepted"]
        assert r["kinds"]["teardown_report"] >= 1
    assert r["steering"].get("default", 0) == 0


@pytest.mark.parametrize("offload", [(), ("setup", "teardown")], ids=["no-nic", "offloads"])
def test_echo_over_cores_with_loss(offload):
    r = _echo(3, 150, offload=offload, loss=0.02, seed=5)
    assert all(r["ok"]) and sum(r["accepted"]) == 150
    assert all(len(c) == 1 for c in r["owners"].values())


def test_a_core_s_own_connection_comes_back_to_it():
    """A server core that connects out (a proxy to its backend): the SYN it sends
    installs a flow rule, so the replies reach it whatever the hash says."""
    with SimLoop(3) as loop:
        net = make_cores(loop, 4, nic=True, seed=3)
        EchoServer(net.client, 9, close_after=0)
        got = {}

        async def connect_from(i):
            reader, writer = await open_connection(net.servers[i], IP_CLIENT, 9)
            writer.write(b"core %d" % i)
            got[i] = await reader.readexactly(6)
            writer.close()
            await writer.wait_closed()

        async def main():
            await asyncio.gather(*(connect_from(i) for i in range(4) for _ in range(5)))

        loop.run(main(), timeout=60)
        assert got == {i: b"core %d" % i for i in range(4)}
        assert net.steering.counters["flow_rule"] > 0
        assert len(net.steering.rules) == 20


def test_unlisten_reaches_the_nic_only_with_the_last_core():
    with SimLoop(2) as loop:
        net = make_cores(loop, 2, nic=True, seed=2)
        listeners = [s.listen(80, 16, offload_setup=True) for s in net.servers]
        dp = net.nic.dataplane
        assert len(dp.listeners) == 1                   # one NIC listener for both cores
        net.servers[0].unlisten(listeners[0])
        loop.run_for(0.01)
        assert len(dp.listeners) == 1 and net.steering.counters["unlisten_held"] == 1
        net.servers[1].unlisten(listeners[1])
        loop.run_for(0.01)
        assert len(dp.listeners) == 0


@pytest.mark.parametrize("nic", [False, True], ids=["no-nic", "nic"])
def test_one_core_through_steering_is_the_plain_pair_frame_for_frame(nic):
    """The steering stage adds nothing of its own: one core behind it puts the same
    frames on the link at the same virtual times as `make_pair`'s stack on the device
    directly (same seeds, secrets and link), with loss, setup + teardown offload."""
    from acceltcp.testbed.simnet import make_pair

    def run(build):
        cfg = TcpConfig(time_wait=0.05)
        with SimLoop(9) as loop:
            client, server, link = build(loop, cfg)
            seen = []
            link.capture(lambda frame, ts: seen.append((ts, bytes(frame))))
            EchoServer(server, 7, config=cfg, close_after=SIZE, offload_setup=nic,
                       offload_teardown=nic)

            async def one(i):
                reader, writer = await open_connection(client, IP_SERVER, 7)
                writer.write(bytes([i]) * SIZE)
                assert await reader.readexactly(SIZE) == bytes([i]) * SIZE
                writer.close()
                await writer.wait_closed()

            async def main():
                await asyncio.gather(*(one(i) for i in range(40)))

            loop.run(main(), timeout=60)
            loop.run_for(0.5)
        return seen

    link_kw = dict(bandwidth_bps=1e9, delay=20e-6, queue_limit=8192,
                   faults_ab=FaultConfig(loss=0.03), faults_ba=FaultConfig(loss=0.03))

    def pair(loop, cfg):
        p = make_pair(loop, config_a=cfg, config_b=cfg, seed=9, nic_b=nic, static_arp=True,
                      **link_kw)
        return p.a, p.b, p.link

    def cores(loop, cfg):
        c = make_cores(loop, 1, nic=nic, seed=9, config=cfg, **link_kw)
        return c.client, c.servers[0], c.link

    plain, steered = run(pair), run(cores)
    assert len(plain) > 40 * 5 and steered == plain


class _Device:
    """A frame device that records what the host sends (the NIC's side, by hand)."""

    mac = bytes.fromhex("020000000002")
    nic = True
    syn_window = 65535

    def __init__(self):
        self.sent = []
        self.rx = None

    def set_receiver(self, cb):
        self.rx = cb

    def send(self, frame):
        self.sent.append(bytes(frame))
        return True


def test_nic_replies_by_id_and_broadcasts_go_where_they_belong():
    """SpliceInstalled / SpliceRefused go to the core that sent that splice id's Splice,
    a StatusReport to the core that asked (both cores may use the same ids: in order),
    an unsolicited StatusReport and an ARP reply to every core, an ARP request and an
    undecodable control frame to core 0 (counted)."""
    from acceltcp.wire.control import (
        L4Rule, Splice, SpliceInstalled, SpliceRefused, StatusReport, StatusRequest)

    dev = _Device()
    steer = Steering(dev, 3)
    got = [[], [], []]
    for q in steer.queues:
        q.set_receiver(got[q.index].append)
    host, nic = dev.mac, bytes.fromhex("020000000003")
    key = _key(IP_CLIENT, IP_SERVER, 40000, 80)
    rule = L4Rule(key, nic, nic, bytes(4), bytes(4), 1, 2)
    steer.queues[2].send(Splice(7, rule, rule).frame(nic, host))
    steer.queues[1].send(Splice(7, rule, rule).frame(nic, host))
    steer.queues[1].send(StatusRequest(1).frame(nic, host))
    steer.queues[0].send(StatusRequest(1).frame(nic, host))
    assert len(dev.sent) == 4                       # all passed on to the NIC
    dev.rx(SpliceInstalled(7).frame(host, nic))
    dev.rx(SpliceRefused(7).frame(host, nic))
    dev.rx(StatusReport(1).frame(host, nic))
    dev.rx(StatusReport(1).frame(host, nic))
    assert [len(g) for g in got] == [1, 2, 1]
    assert type(control.decode(got[2][0])) is SpliceInstalled
    assert type(control.decode(got[1][0])) is SpliceRefused
    assert type(control.decode(got[1][1])) is StatusReport
    dev.rx(StatusReport(0).frame(host, nic))       # unsolicited: every core
    assert [len(g) for g in got] == [2, 3, 2]
    arp = bytes(6) + nic + b"\x08\x06" + bytes.fromhex("0001080006040002") + bytes(20)
    dev.rx(arp)                                     # a reply: every core
    dev.rx(arp[:20] + b"\x00\x01" + arp[22:])       # a request: core 0
    dev.rx(host + nic + b"\x09\x0e" + bytes(8))     # undecodable: core 0, counted
    assert [len(g) for g in got] == [5, 4, 3]
    assert steer.counters["default"] == 2 and steer.counters["broadcast"] == 2


def test_bulk_echo_over_cores_with_the_toe_offloads():
    """Data segments through the cores' queues: TSO super-segments and checksum
    completion on the way out, LRO-coalesced frames on the way in, byte-exact."""
    cfg = TcpConfig(time_wait=0.05)
    with SimLoop(4) as loop:
        net = make_cores(loop, 2, nic=True, seed=4, config=cfg, toe=("csum", "tso", "lro"),
                         bandwidth_bps=1e9, delay=20e-6, queue_limit=8192)
        servers = [EchoServer(s, 7, config=cfg) for s in net.servers]

        async def one(i):
            reader, writer = await open_connection(net.client, IP_SERVER, 7)
            data = bytes((i * 31 + j) & 0xFF for j in range(96 * 1024))
            writer.write(data)
            got = await reader.readexactly(len(data))
            writer.close()
            await writer.wait_closed()
            return got == data

        async def main():
            return await asyncio.gather(*(one(i) for i in range(8)))

        assert all(loop.run(main(), timeout=120))
        assert sum(s.bytes_echoed for s in servers) == 8 * 96 * 1024
        assert all(s.accepted for s in servers)
        # every reply segment went through a core's send_segment to the NIC's TSO
        assert net.nic.host_port["tso_segments"] >= 8 * 96 * 1024 // 1460
