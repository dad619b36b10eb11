"""1,000 concurrent short-lived connections (connect, 64 B request, 64 B reply, close)
all complete, and no connection is left in either table after 2MSL."""

import asyncio

from acceltcp.host.aio import open_connection, start_server
from acceltcp.testbed.simnet import make_pair
from acceltcp.io.sim import SimLoop
from acceltcp.tcp.config import TcpConfig

N = 1000
TIME_WAIT = 30.0


def test_thousand_concurrent_short_lived_connections():
    cfg = TcpConfig(time_wait=TIME_WAIT)
    with SimLoop(3) as loop:
        net = make_pair(loop, config_a=cfg, config_b=cfg, bandwidth_bps=1e9, delay=50e-6,
                        queue_limit=4096, stack_b={"max_syn_backlog": 2048})
        served = []

        async def echo(reader, writer):
            data = await reader.readexactly(64)
            writer.write(data)
            await writer.drain()
            served.append(data)
            writer.close()

        async def client(i):
            reader, writer = await open_connection(net.a, "198.18.0.2", 7)
            msg = i.to_bytes(4, "big") * 16
            writer.write(msg)
            reply = await reader.readexactly(64)
            assert await reader.read() == b""         # the server closed
            writer.close()
            await writer.wait_closed()
            return reply == msg

        async def main():
            await start_server(net.b, echo, 7, backlog=N)
            return await asyncio.gather(*(client(i) for i in range(N)))

        results = loop.run(main(), timeout=600)
        assert results.count(True) == N
        assert len(served) == N
        a_counters = net.a.stats()["counters"]
        b_counters = net.b.stats()["counters"]
        assert a_counters["conns_opened"] == N
        assert b_counters["conns_accepted"] == N
        # The server closed first, so it holds TIME-WAIT (as compact records, the TCBs
        # already freed); after 2MSL both sides hold nothing.
        loop.run_for(1.0)                              # the last FIN handshakes finish
        assert len(net.b.time_wait) == N
        assert len(net.a.connections) == len(net.b.connections) == 0
        loop.run_for(TIME_WAIT + 5)
        assert len(net.a.connections) == len(net.b.connections) == 0
        assert len(net.a.time_wait) == len(net.b.time_wait) == 0
        assert a_counters["conns_reset"] == b_counters["conns_reset"] == 0


def test_port_reuse_against_time_wait_does_not_stall():
    """5,000 short-lived connections from 200 client ports to a server that closes first
    (so it holds every 4-tuple in TIME-WAIT): each reuse must pass the server's RFC 6191
    check at once. TSvals toward one peer increase across connections (the TS offset is
    per address pair), so no SYN meets a challenge ACK and waits for its retransmission."""
    from acceltcp.apps.echo import EchoLoad, EchoServer
    from acceltcp.testbed.simnet import make_pair
    from acceltcp.io.sim import SimLoop
    from acceltcp.tcp.config import TcpConfig

    with SimLoop(1) as loop:
        net = make_pair(loop, config_a=TcpConfig(time_wait=0.0001),
                        config_b=TcpConfig(time_wait=60.0), seed=1,
                        stack_a={"ephemeral": (40000, 40199)}, bandwidth_bps=1e9,
                        delay=50e-6)
        EchoServer(net.b, 7, close_after=64, config=TcpConfig(time_wait=60.0))
        load = EchoLoad(net.a, "198.18.0.2", 7, concurrency=64, size=64, per_conn=1,
                        total=5000, config=TcpConfig(time_wait=0.0001))
        load.start()
        t0 = loop.time()
        loop.run_until(lambda: load.transactions >= 5000, timeout=600)
        took = loop.time() - t0
    assert not load.errors and took < 1.0, (took, load.errors)
    c = net.b.counters
    assert c["time_wait_reopened"] >= 4000 and c["conns_reset"] == 0
