"""Setup + teardown offload end to end in the simulator (AccelTCP §4.1, §4.2): short-lived
64-byte echo transactions whose handshakes the NIC completes with SYN cookies and whose
teardowns (reply + FIN, retransmissions, the client's FIN, TIME-WAIT) the NIC runs after
the app's close. The server host receives only what an established connection needs:
no SYN, no bare handshake ACK (the first frame is the NIC's 0x090A), nothing of a
connection after the app closed it."""

import asyncio

import pytest

from acceltcp.apps.echo import EchoServer
from acceltcp.host.aio import open_connection
from acceltcp.testbed.simnet import make_pair
from acceltcp.io.sim import FaultConfig, SimLoop
from acceltcp.tcp.config import TcpConfig
from acceltcp.wire.tcp import SYN, parse_tcp

SIZE = 64


def _watch(nic, net):
    """Per 4-tuple: frames the NIC gives the server host, split into before and after
    the host handed the connection over; SYNs given to the host."""
    seen = {"syn": 0, "after_close": 0, "tcp": 0, "new_conn": 0}
    rx = nic._receiver
    offload = net.b.offload

    def watch(frame):
        et = frame[12:14]
        if et == b"\x09\x0a":
            seen["new_conn"] += 1
        elif et == b"\x08\x00" and frame[23] == 6:
            seen["tcp"] += 1
            key = bytes(frame[26:38])
            if key in handed_over:
                seen["after_close"] += 1
            if parse_tcp(frame[34:], frame[26:30], frame[30:34], False).flags & SYN:
                seen["syn"] += 1
        rx(frame)

    # the keys of every connection the host offered to the NIC
    handed_over = set()
    orig = offload.teardown

    def teardown(conn, now):
        ok = orig(conn, now)
        if ok:
            handed_over.add(conn.owner.key)
        return ok
    offload.teardown = teardown
    nic.set_receiver(watch)
    return seen, handed_over


def _run(n, loss, seed, *, concurrency=200, nic_kwargs=None, time_wait=2.0):
    cfg = TcpConfig(time_wait=time_wait)
    with SimLoop(seed) as loop:
        net = make_pair(loop, config_a=cfg, config_b=cfg, nic_b=True,
                        faults=FaultConfig(loss=loss) if loss else None, seed=seed,
                        bandwidth_bps=1e9, delay=50e-6, queue_limit=8192,
                        stack_b={"max_syn_backlog": 4096}, nic_kwargs=nic_kwargs)
        EchoServer(net.b, 7, backlog=n, config=cfg, close_after=SIZE, offload_setup=True,
                   offload_teardown=True)
        seen, handed = _watch(net.nic_b, net)
        sem = asyncio.Semaphore(concurrency)

        async def client(i):
            async with sem:
                reader, writer = await open_connection(net.a, "198.18.0.2", 7)
                msg = i.to_bytes(4, "big") * (SIZE // 4)
                writer.write(msg)
                reply = await reader.readexactly(SIZE)
                assert await reader.read() == b""
                writer.close()
                await writer.wait_closed()
                return reply == msg

        async def main():
            return await asyncio.gather(*(client(i) for i in range(n)))

        results = loop.run(main(), timeout=36000)
        loop.run_for(time_wait + 5.0)           # the NIC's TIME-WAITs end
        return net, results, seen, handed


def _check(net, results, seen, handed, n):
    assert results.count(True) == n
    c = net.b.counters
    nic = net.nic_b.dataplane
    td = nic.teardown
    assert seen["syn"] == 0 and c.get("syns_received", 0) == 0
    assert c["cookie_conns"] == n <= seen["new_conn"]
    assert seen["after_close"] == 0                 # nothing after the app's close
    assert c["teardown_accepted"] == n == len(handed)
    # the NIC finished every flow; it told the host so in its moderated StatusReports
    assert td.counters["done_closed"] == n and td.active == 0
    off = net.b.offload
    assert off.status.teardowns_done == n and off.teardown_active == 0
    assert not net.b.connections and not net.b.time_wait
    assert c["conns_reset"] == 0 and net.a.counters["conns_reset"] == 0
    assert c.get("rsts_sent", 0) == 0 and net.b.drops.get("no_connection", 0) == 0
    return c, td


def test_teardown_offload_clean_link():
    n = 1000
    net, results, seen, handed = _run(n, 0.0, 21)
    c, td = _check(net, results, seen, handed, n)
    # per connection one frame: the request as 0x090A (the echo server's listener defers
    # accept: the NIC absorbed the bare handshake ACK), nothing else -- the reply and
    # everything after it are the NIC's
    assert net.nic_b.dataplane.counters["cookie_ack_deferred"] == n
    assert seen["tcp"] + seen["new_conn"] == n
    assert c["frames_in"] == n + c["nic_msgs_in"] + c["arp_in"]
    assert td.counters["retransmits_rto"] == 0


def test_10000_short_lived_setup_and_teardown_offload_under_3pct_loss():
    n = 10000
    # TIME-WAIT long enough to outlast the clients' FIN retransmissions under this loss
    # (2 MSL exists for exactly that), and a NIC sized to hold all of them
    net, results, seen, handed = _run(n, 0.03, 22, concurrency=500, time_wait=15.0,
                                      nic_kwargs={"teardown_capacity": 16384})
    c, td = _check(net, results, seen, handed, n)
    assert net.link.a.stats.loss > 100 and net.link.b.stats.loss > 100
    # the NIC retransmitted lost replies/FINs itself
    assert td.counters["retransmits_rto"] + td.counters["retransmits_fast"] > 0


@pytest.mark.parametrize("report_interval", [0.0, 0.001], ids=["per-flow", "moderated"])
def test_a_new_incarnation_in_the_nics_time_wait_gets_a_cookie_handshake(report_interval):
    """A client reconnects from the same port while the NIC holds the last connection's
    TIME-WAIT: its SYN ends the TIME-WAIT (RFC 6191: newer timestamps) and meets the
    offloaded listener like any SYN -- the NIC answers with a cookie, the host still sees
    no SYN and one 0x090A per connection."""
    cfg = TcpConfig(time_wait=30.0)
    k = 5
    with SimLoop(7) as loop:
        net = make_pair(loop, config_a=cfg, config_b=cfg, nic_b=True, seed=7,
                        nic_kwargs={"report_interval": report_interval})
        EchoServer(net.b, 7, config=cfg, close_after=SIZE, offload_setup=True,
                   offload_teardown=True)
        seen, handed = _watch(net.nic_b, net)

        async def one(i):
            t0 = loop.time()
            reader, writer = await open_connection(net.a, "198.18.0.2", 7, local_port=40000)
            msg = bytes([i]) * SIZE
            writer.write(msg)
            ok = await reader.readexactly(SIZE) == msg
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()
            return ok and loop.time() - t0 < 0.01      # virtual time: no SYN retransmitted

        async def main():
            oks = []
            for i in range(k):
                oks.append(await one(i))
                await asyncio.sleep(0.05)       # well inside the NIC's 30 s TIME-WAIT
            return oks

        results = loop.run(main(), timeout=60)
        loop.run_for(35.0)
    assert results == [True] * k
    c = net.b.counters
    td = net.nic_b.dataplane.teardown
    assert td.counters["syn_reopen"] == k - 1
    assert seen["syn"] == 0 and c.get("syns_received", 0) == 0
    assert c["cookie_conns"] == k and len(handed) == 1      # one 4-tuple, k times
    assert c["teardown_accepted"] == k and td.counters["done_closed"] == k
    assert td.active == 0 and not net.b.connections
    assert c["conns_reset"] == 0 and net.a.counters["conns_reset"] == 0


def test_overload_capacity_8_of_1000_connections_falls_back():
    """Tables of capacity 8: the NIC takes what fits, the host closes the rest itself,
    and the counters account for every connection."""
    n = 1000
    kw = {"teardown_capacity": 8, "listener_capacity": 8, "splice_capacity": 8}
    cfg = TcpConfig(time_wait=2.0)
    with SimLoop(23) as loop:
        net = make_pair(loop, config_a=cfg, config_b=cfg, nic_b=True, seed=23,
                        bandwidth_bps=1e9, delay=50e-6, queue_limit=8192,
                        stack_b={"max_syn_backlog": 4096}, nic_kwargs=kw)
        EchoServer(net.b, 7, backlog=n, config=cfg, close_after=SIZE, offload_setup=True,
                   offload_teardown=True)

        async def client(i):
            reader, writer = await open_connection(net.a, "198.18.0.2", 7)
            writer.write(b"x" * SIZE)
            ok = await reader.readexactly(SIZE) == b"x" * SIZE
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()
            return ok

        async def main():
            return await asyncio.gather(*(client(i) for i in range(n)))

        results = loop.run(main(), timeout=3600)
        loop.run_for(10.0)
    assert results.count(True) == n
    c = net.b.counters
    td = net.nic_b.dataplane.teardown
    offloaded = c.get("teardown_accepted", 0)
    by_host = c.get("teardown_nic_full", 0) + c.get("teardown_refused_table_full", 0)
    assert offloaded > 0 and by_host > 0
    assert td.counters["accepted"] == offloaded
    assert offloaded + by_host + c.get("teardown_ineligible", 0) == n
    assert td.counters["done_closed"] == offloaded and td.active == 0
    assert net.b.offload.status.teardowns_done == offloaded
    assert not net.b.connections and c["conns_reset"] == 0


class BlobServer:
    """Answer each connection's first bytes with `size` bytes and close at once: more
    than one flight on a fresh connection, so the offer has to wait for the window."""

    def __init__(self, stack, port, size, config, on_eof=False):
        self.stack = stack
        self.on_eof = on_eof            # answer only after the client's FIN (CLOSE-WAIT)
        self.data = bytes(range(256)) * (size // 256)
        lst = stack.listen(port, 1024, config=config, offload_setup=True,
                           offload_teardown=True)
        lst.on_acceptable = self.on_acceptable

    def on_acceptable(self, lst):
        while (conn := lst.accept()) is not None:
            self.stack.attach(conn, self.on_event)
            self.on_event(conn)

    def on_event(self, conn):
        if conn.rcvbuf and not conn.app_closed and (conn.fin_rcvd or not self.on_eof):
            self.stack.recv(conn, 1 << 20)
            assert self.stack.send(conn, self.data) == len(self.data)
            self.stack.close(conn)


@pytest.mark.parametrize("loss", [0.0, 0.03])
def test_large_response_is_offered_once_the_rest_fits(loss):
    """200 KiB then close on a fresh connection: the host sends until what is left fits
    the windows, then hands the rest (data + FIN) to the NIC."""
    n, size = 100, 200 << 10
    cfg = TcpConfig(time_wait=2.0, snd_buf=1 << 20, rcv_buf=1 << 20)
    with SimLoop(31) as loop:
        net = make_pair(loop, config_a=cfg, config_b=cfg, nic_b=True, seed=31,
                        faults=FaultConfig(loss=loss) if loss else None,
                        bandwidth_bps=1e9, delay=100e-6, queue_limit=8192)
        srv = BlobServer(net.b, 80, size, cfg)

        async def client(i):
            reader, writer = await open_connection(net.a, "198.18.0.2", 80)
            writer.write(b"GET")
            got = await reader.read(-1)             # everything until the FIN
            writer.close()
            await writer.wait_closed()
            return got == srv.data

        async def main():
            return await asyncio.gather(*(client(i) for i in range(n)))

        results = loop.run(main(), timeout=3600)
        loop.run_for(10.0)
    assert results.count(True) == n
    c = net.b.counters
    td = net.nic_b.dataplane.teardown
    assert c["teardown_deferred"] == n                # none fitted at close time ...
    assert c["teardown_accepted"] == n                # ... every one did later
    assert td.counters["done_closed"] == n and td.active == 0
    assert not net.b.connections and c["conns_reset"] == 0


@pytest.mark.parametrize("strict", [True, False])
def test_close_in_close_wait_with_more_than_fits_is_offered_later(strict):
    """The client sends its request and half-closes; the server answers 200 KiB and closes
    in CLOSE-WAIT with far more unacknowledged than the windows hold, so the teardown
    offer is deferred and retried from later ACKs and timers *in CLOSE-WAIT*. Every byte
    comes back, then the FIN, and nothing raises (a NameError there once left the
    connection without its FIN forever and, in non-strict mode, stopped the stack's
    timers)."""
    size = 200 << 10
    cfg = TcpConfig(time_wait=2.0, snd_buf=1 << 20, rcv_buf=1 << 20)
    with SimLoop(41) as loop:
        net = make_pair(loop, config_a=cfg, config_b=cfg, nic_b=True, seed=41,
                        bandwidth_bps=1e9, delay=100e-6, strict=strict)
        srv = BlobServer(net.b, 80, size, cfg, on_eof=True)

        async def client():
            reader, writer = await open_connection(net.a, "198.18.0.2", 80)
            writer.write(b"GET")
            await asyncio.sleep(0.5)            # the server's ACK first: its FIN then no
            writer.write_eof()                  # longer echoes the cookie TSval
            got = await reader.read(-1)
            writer.close()
            await writer.wait_closed()
            return got

        got = loop.run(client(), timeout=600)
        loop.run_for(10.0)
    c = net.b.counters
    assert got == srv.data
    assert net.b.drops.get("internal_error", 0) == 0
    assert c["teardown_deferred"] == 1 and c["teardown_accepted"] == 1
    assert not net.b.connections and c["conns_reset"] == 0
