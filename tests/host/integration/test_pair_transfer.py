"""Two real stacks on a faulty simulated link: exact bytes, reaping, counters, stats."""

import json

import pytest

from acceltcp.host.aio import open_connection, start_server
from acceltcp.testbed.simnet import make_pair
from acceltcp.io.sim import FaultConfig, SimLoop
from acceltcp.tcp.config import TcpConfig

NEAR_WRAP = (1 << 32) - 5000


async def echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def run_echo(loop, net, nbytes, clients=1):
    a, b = net
    payload = bytes((i * 31 + 7) % 256 for i in range(nbytes))

    async def client():
        r, w = await open_connection(a, "198.18.0.2", 7)
        w.write(payload)
        w.write_eof()
        got = await r.read()
        w.close()
        await w.wait_closed()
        return got

    async def main():
        import asyncio
        await start_server(b, echo, 7)
        return await asyncio.gather(*(client() for _ in range(clients)))
    results = loop.run(main(), timeout=600)
    assert all(r == payload for r in results)


def pair(loop, faults, seed=1, time_wait=5.0):
    cfg = TcpConfig(time_wait=time_wait)
    return make_pair(loop, faults=faults, seed=seed, config_a=cfg, config_b=cfg,
                     stack_a={"isn": lambda *a: NEAR_WRAP},
                     stack_b={"isn": lambda *a: NEAR_WRAP - 1234})


FAULTS = {
    "loss": FaultConfig(loss=0.03),
    "dup": FaultConfig(duplicate=0.05),
    "reorder": FaultConfig(reorder=0.05),
    "corrupt": FaultConfig(corrupt=0.02),
    "mixed": FaultConfig(loss=0.01, duplicate=0.01, reorder=0.02, corrupt=0.005),
}


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_exact_bytes_under_faults(name):
    with SimLoop(seed=3) as loop:
        net = pair(loop, FAULTS[name])
        run_echo(loop, net, 200_000, clients=2)
        a, b = net
        if name in ("loss", "mixed"):
            assert a.counters["retransmits"] + b.counters["retransmits"] > 0
        if name == "corrupt":
            bad = sum(n for s in (a, b) for r, n in s.drops.items()
                      if r.endswith("checksum") or r.startswith(("ip_", "tcp_", "eth_", "arp_")))
            assert bad > 0
        assert "internal_error" not in a.drops and "internal_error" not in b.drops


def test_tables_empty_after_2msl():
    with SimLoop() as loop:
        net = pair(loop, None, time_wait=5.0)
        run_echo(loop, net, 10_000, clients=3)
        a, b = net
        loop.run_for(1.0)
        # Someone is in TIME-WAIT, held by a compact record: its TCB is already gone.
        assert a.connections == {} and b.connections == {}
        assert a.time_wait or b.time_wait
        loop.run_for(5.0)
        assert a.time_wait == {} and b.time_wait == {}
        assert a.counters["conns_closed"] == 3 and b.counters["conns_closed"] == 3
        assert a.next_deadline() is None or a.next_deadline() > loop.time()


def test_counters_and_stats_are_consistent_and_json_able():
    with SimLoop() as loop:
        net = pair(loop, FaultConfig(loss=0.02), seed=5)
        run_echo(loop, net, 50_000)
        a, b = net
        sa = a.stats()
        json.dumps(sa, allow_nan=False)
        json.dumps(b.stats(), allow_nan=False)
        c = sa["counters"]
        assert c["conns_opened"] == 1 and b.counters["conns_accepted"] == 1
        assert c["frames_out"] == net.link.a.stats.sent_frames
        assert c["frames_in"] == net.link.a.stats.received_frames
        assert sa["tcp"]["bytes_out"] == 50_000


def test_same_seed_same_run():
    def once():
        with SimLoop(seed=9) as loop:
            net = pair(loop, FAULTS["mixed"], seed=9)
            run_echo(loop, net, 100_000)
            return net.a.counters, net.b.counters, dict(net.a.drops), loop.time()
    assert once() == once()
