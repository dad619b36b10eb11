"""TCP Chimney partial offload end to end in the simulator: the server stack (b) sits
behind the specification NIC (nic.dataplane + nic.chimney); its connection's data path
is handed to the NIC and back (offload / upload cycles forced mid-transfer) while bulk
data flows both ways, byte-exact, also under loss."""

import asyncio
import hashlib
import random

import pytest

from acceltcp.host.aio import open_connection, start_server
from acceltcp.io.sim import FaultConfig, SimLoop
from acceltcp.tcp.config import TcpConfig
from acceltcp.testbed.simnet import make_pair

from .duplex import exchange

MiB = 1 << 20
NEAR_WRAP = (1 << 32) - 9000


def run(nbytes, *, loss=0.0, seed=1, cycle=None, nic_kwargs=None, server_extra=None,
        auto=False):
    """`nbytes` each way between a (client) and b (server, behind the NIC). `cycle`:
    seconds between offload <-> upload switches of the server's connection (None: offload
    once, keep it offloaded). -> result dict."""
    rng = random.Random(seed)
    up = rng.randbytes(nbytes)
    down = rng.randbytes(nbytes)
    cfg = TcpConfig()
    got = {"offers": 0, "uploads_asked": 0}
    with SimLoop(seed) as loop:
        net = make_pair(loop, config_a=cfg, config_b=cfg, nic_b=True, seed=seed,
                        faults=FaultConfig(loss=loss) if loss else None,
                        bandwidth_bps=1e9, delay=100e-6, queue_limit=1000,
                        stack_a={"isn": lambda *a: NEAR_WRAP},
                        stack_b={"isn": lambda *a: NEAR_WRAP - 4321},
                        nic_kwargs=nic_kwargs)
        b = net.b
        b.chimney.auto = auto
        done = asyncio.Event()

        async def cycler(conn):
            while auto is False and not done.is_set() and not conn.closed:
                if b.chimney.owns(conn):
                    if b.chimney_upload(conn):
                        got["uploads_asked"] += 1
                elif b.chimney_offload(conn):
                    got["offers"] += 1
                if cycle is None:
                    return
                await asyncio.sleep(cycle)

        async def server(reader, writer):
            conn = writer.get_extra_info("connection")
            got["conn"] = conn
            task = asyncio.ensure_future(cycler(conn))
            if server_extra is not None:
                await server_extra(net, conn, reader, writer)
            got["server"] = await exchange(reader, writer, down)
            writer.close()
            done.set()
            await task

        async def main():
            await start_server(b, server, 5001)
            reader, writer = await open_connection(net.a, "198.18.0.2", 5001)
            got["client"] = await exchange(reader, writer, up)
            writer.close()
            await writer.wait_closed()
            await done.wait()
            await asyncio.sleep(1.0)

        loop.run(main(), timeout=3600)
        got["b"] = dict(b.counters)
        ch = net.nic_b.dataplane.chimney
        got["nic"] = dict(ch.counters) if ch is not None else {}
        got["nic_dp"] = dict(net.nic_b.dataplane.counters)
        got["chimney_left"] = len(b.chimney) if b.chimney is not None else 0
    got["up"] = (len(up), hashlib.sha256(up).hexdigest())
    got["down"] = (len(down), hashlib.sha256(down).hexdigest())
    return got


def check_exact(r):
    assert r["server"] == r["up"]
    assert r["client"] == r["down"]
    assert r["chimney_left"] == 0


def test_offloaded_bulk_both_ways():
    r = run(4 * MiB)
    check_exact(r)
    b, nic = r["b"], r["nic"]
    assert b["chimney_offered"] == b["chimney_accepted"] == 1
    assert nic["offloads"] == 1 and nic["uploads"] == 1
    # the peer's FIN (or the app's close) brought it back; the NIC did the bulk of it
    assert nic["bytes_to_host"] > 3 * MiB and nic["bytes_from_host"] > 3 * MiB
    # received data reaches the host in large chunks, not per segment
    assert nic["segments_in"] > 4 * nic["data_frames"]


@pytest.mark.parametrize("loss,seed", [(0.0, 3), (0.02, 5)])
def test_offload_upload_cycles_under_loss(loss, seed):
    r = run(6 * MiB, loss=loss, seed=seed, cycle=0.003)
    check_exact(r)
    b, nic = r["b"], r["nic"]
    assert b["chimney_accepted"] >= 3 and b["chimney_upload_host_request"] >= 2
    assert nic["offloads"] == b["chimney_accepted"]
    if loss:
        assert r["conn"].retransmits > 0 or nic["segments_out"] > 0


def test_table_full_host_keeps_connection():
    r = run(1 * MiB, nic_kwargs={"chimney_capacity": 0})
    check_exact(r)
    assert r["b"]["chimney_offered"] == 1
    assert r["b"]["chimney_refused_table_full"] == 1
    assert r["b"].get("chimney_accepted", 0) == 0


def run_event(event, seed=7):
    """The client streams to the server, whose connection is offloaded; then `event`:
    "rst" (the client aborts: an RST reaches the NIC), "nic_lost" (the NIC dies and
    comes back empty; the host is told). -> what each side saw."""
    from acceltcp.nic.dataplane import NicDataplane
    cfg = TcpConfig()
    got = {}
    with SimLoop(seed) as loop:
        net = make_pair(loop, config_a=cfg, config_b=cfg, nic_b=True, seed=seed,
                        bandwidth_bps=1e9, delay=100e-6, queue_limit=1000)
        b = net.b
        server_done = asyncio.Event()

        async def server(reader, writer):
            conn = writer.get_extra_info("connection")
            got["server_conn"] = conn
            assert b.chimney_offload(conn)
            n = 0
            try:
                while chunk := await reader.read(65536):
                    n += len(chunk)
                    writer.write(chunk[:1000])          # some data the other way too
                got["server"] = ("eof", n)
                writer.close()
            except ConnectionError as e:
                got["server"] = (type(e).__name__, n)
            server_done.set()

        async def main():
            await start_server(b, server, 5001)
            reader, writer = await open_connection(net.a, "198.18.0.2", 5001)
            conn = writer.get_extra_info("connection")
            blob = bytes(1 << 20)
            writer.write(blob)
            await asyncio.sleep(0.004)
            assert b.chimney.owns(got["server_conn"])
            got["nic_had"] = len(net.nic_b.dataplane.chimney)
            if event == "rst":
                net.a.abort(conn)
            elif event == "fin":
                writer.write_eof()
                back = 0
                while chunk := await reader.read(65536):
                    back += len(chunk)
                got["client"] = ("eof", back)
            else:
                net.nic_b.dataplane = NicDataplane(net.nic_b.mac, secret=b"x" * 32)
                got["lost"] = b.nic_lost()
                try:
                    for _ in range(200):
                        writer.write(blob[:65536])
                        await writer.drain()
                        await asyncio.sleep(0.001)
                    got["client"] = "no error"
                except ConnectionError as e:
                    got["client"] = type(e).__name__
            await asyncio.wait_for(server_done.wait(), 30)
            await asyncio.sleep(0.5)

        loop.run(main(), timeout=600)
        got["b"] = dict(b.counters)
        got["chimney_left"] = len(b.chimney) if b.chimney is not None else 0
        got["chimney_off"] = b.chimney is None
        got["client_state"] = [c.state for c in net.a.connections.values()]
        ch = net.nic_b.dataplane.chimney
        got["nic"] = dict(ch.counters) if ch is not None else {}
    return got


def test_rst_while_offloaded():
    r = run_event("rst")
    assert r["nic_had"] == 1
    assert r["nic"]["upload_peer_rst"] == 1 and r["b"]["chimney_upload_peer_rst"] == 1
    assert r["server"][0] == "ConnectionResetError" and r["server"][1] > 0
    assert r["chimney_left"] == 0 and r["server_conn"].closed


def test_fin_while_offloaded_comes_back_to_the_host():
    r = run_event("fin")
    assert r["nic_had"] == 1
    assert r["b"]["chimney_upload_peer_fin"] == 1 and r["nic"]["upload_peer_fin"] == 1
    assert r["server"] == ("eof", 1 << 20)
    assert r["client"][0] == "eof" and r["client"][1] > 0
    assert r["server_conn"].closed and r["server_conn"].error is None
    assert r["chimney_left"] == 0


def test_nic_lost_resets_offloaded_connections():
    r = run_event("nic_lost")
    assert r["nic_had"] == 1
    assert r["lost"]["chimney_lost"] == 1 and len(r["lost"]["chimney_keys_lost"]) == 1
    assert r["server"][0] == "ConnectionResetError"
    assert r["client"] == "ConnectionResetError"          # reset, not hung
    assert r["chimney_off"] and r["client_state"] == []      # no NIC: no more offloads
    assert r["b"]["chimney_lost"] == 1


def test_auto_offload_of_accepted_connections():
    """``serve --offload chimney``: every connection the app takes is offered."""
    r = run(2 * MiB, loss=0.01, seed=11, auto=True)
    check_exact(r)
    assert r["b"]["chimney_offered"] == r["b"]["chimney_accepted"] == 1
    # the server's write_eof stays on the NIC (its TCB sends the FIN); the client's
    # FIN brings the connection back: every byte both ways went through the NIC
    assert r["b"]["chimney_upload_peer_fin"] == 1
    assert r["nic"]["bytes_from_host"] == r["nic"]["bytes_to_host"] == 2 * MiB
