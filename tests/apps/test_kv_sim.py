"""KvServer on the user-level stack, in the simulator: KvLoad's Facebook USR workload
(short-lived and persistent, with the NIC's setup and teardown offloads, under loss),
every reply checked; a malformed request closes only its own connection; replies larger
than the send buffer; requests split across segments; QUIT; the serve helpers."""

import argparse
import asyncio

import pytest

from acceltcp.apps.kv import KvLoad, KvServer, add_kv_arguments, build_kv_server
from acceltcp.apps.resp import ReplyParser, encode_command
from acceltcp.host.aio import open_connection
from acceltcp.testbed.simnet import make_pair
from acceltcp.io.sim import FaultConfig, SimLoop
from acceltcp.tcp.config import TcpConfig

SERVER = "198.18.0.2"


def _net(loop, *, nic=False, loss=0.0, seed=7, server_cfg=None, time_wait=1.0):
    cfg = TcpConfig(time_wait=time_wait)
    return make_pair(loop, config_a=cfg, config_b=server_cfg or cfg, nic_b=nic, seed=seed,
                     faults=FaultConfig(loss=loss) if loss else None, bandwidth_bps=1e9,
                     delay=50e-6, queue_limit=8192, stack_b={"max_syn_backlog": 4096})


def _run_load(net, loop, load):
    load.start()
    loop.run_until(lambda: load.finished, timeout=3600)
    loop.run_for(5.0)                       # the last teardowns finish


@pytest.mark.parametrize("setup,teardown", [(False, False), (True, False), (True, True)],
                         ids=["host-only", "setup-offload", "setup+teardown-offload"])
def test_usr_short_lived_transactions(setup, teardown):
    n = 2000
    with SimLoop(11) as loop:
        net = _net(loop, nic=setup)
        server = KvServer(net.b, 6379, offload_setup=setup, offload_teardown=teardown)
        load = KvLoad(net.a, SERVER, 6379, concurrency=64, per_conn=1, total=n, keys=500,
                      seed=2)
        _run_load(net, loop, load)

        assert load.errors == {}
        assert load.transactions == n and load.gets + load.sets == n
        assert load.sets > 0 and load.hits == load.gets and load.misses == 0
        st = server.stats()
        assert st["commands"] == {"get": load.gets, "set": load.sets, "mset": 1}
        assert st["error_replies"] == 0 and st["conn_errors"] == {}
        assert st["accepted"] == load.connections          # the populate one included
        assert st["connected_clients"] == 0
        assert st["closed_by_client"] == load.connections and st["closed_by_server"] == 0
        assert st["offload_setup"] is setup and st["offload_teardown"] is teardown
        assert not net.b.connections and not net.b.drops
        c = net.b.counters
        assert c["cookie_conns"] == (load.connections if setup else 0)
        if teardown:
            # Closed after the client's FIN (CLOSE-WAIT): every teardown goes to the NIC.
            assert c["teardown_offered"] == load.connections
            assert c.get("teardown_ineligible", 0) == 0
        else:
            assert c.get("teardown_offered", 0) == 0


def test_usr_persistent_connections():
    with SimLoop(12) as loop:
        net = _net(loop)
        server = KvServer(net.b)
        load = KvLoad(net.a, SERVER, concurrency=16, per_conn=0, total=5000, keys=2000,
                      get_ratio=0.9, seed=3)
        _run_load(net, loop, load)
        assert load.errors == {} and load.transactions == 5000
        assert load.connections == 17 and load.hits == load.gets and load.sets > 300
        st = server.stats()
        assert st["accepted"] == 17 and st["commands"]["get"] == load.gets
        assert st["connected_clients"] == 0


def test_usr_under_loss():
    with SimLoop(13) as loop:
        net = _net(loop, loss=0.02)
        KvServer(net.b)
        load = KvLoad(net.a, SERVER, concurrency=32, per_conn=1, total=500, keys=100, seed=4)
        _run_load(net, loop, load)
        assert load.errors == {} and load.transactions == 500
        assert net.link.a.stats.loss > 0 and net.link.b.stats.loss > 0


def test_load_without_populate_accepts_nil_only_for_unwritten_keys():
    with SimLoop(14) as loop:
        net = _net(loop)
        server = KvServer(net.b)
        load = KvLoad(net.a, SERVER, concurrency=8, per_conn=1, total=300, keys=50,
                      get_ratio=0.5, populate=False, seed=5)
        _run_load(net, loop, load)
        assert load.errors == {} and load.misses > 0 and load.hits > 0
        assert "mset" not in server.stats()["commands"]


def test_load_reports_wrong_values():
    """The checks can fail: a server that answers GETs with another value is caught."""
    with SimLoop(15) as loop:
        net = _net(loop)
        server = KvServer(net.b)
        load = KvLoad(net.a, SERVER, concurrency=4, per_conn=1, total=50, keys=10, seed=6)
        load.start()
        loop.run_until(lambda: load.populated, timeout=60)
        for key in list(server.engine.data):
            server.engine.data[key] = b"$2\r\n!!\r\n"
        loop.run_until(lambda: load.finished, timeout=600)
        assert load.errors["GET wrong value"] == load.gets > 0


async def _request(reader, writer, data, n):
    writer.write(data)
    parser = ReplyParser()
    out = []
    while len(out) < n:
        chunk = await reader.read(65536)
        if not chunk:
            break
        out += parser.feed(chunk)
    return out


def test_malformed_request_closes_only_its_connection():
    with SimLoop(16) as loop:
        net = _net(loop)
        server = KvServer(net.b)

        async def main():
            r1, w1 = await open_connection(net.a, SERVER, 6379)
            r2, w2 = await open_connection(net.a, SERVER, 6379)
            batch = b"".join(encode_command("SET", "k%d" % i, "v%d" % i) for i in range(20))
            assert await _request(r1, w1, batch, 20) == ["OK"] * 20
            bad = await _request(r2, w2, b"GET k3\r\nINCR k1\r\n*1\r\n$x\r\nPING\r\n", 4)
            assert await r2.read() == b""                       # closed by the server
            # the pipelined connection goes on
            batch = b"".join(encode_command("GET", "k%d" % i) for i in range(20))
            got = await _request(r1, w1, batch + b"PING\r\n", 21)
            w1.close()
            return bad, got

        bad, got = loop.run(main(), timeout=60)
        assert bad[0] == b"v3" and str(bad[1]).startswith("ERR value is not an integer")
        assert bad[2] == "ERR Protocol error: invalid bulk length" and len(bad) == 3
        assert got == [b"v%d" % i for i in range(20)] + ["PONG"]
        loop.run_for(2.0)
        st = server.stats()
        assert st["protocol_errors"] == 1 and st["closed_by_server"] == 1
        assert st["closed_by_client"] == 1 and st["connected_clients"] == 0
        assert net.a.counters["conns_reset"] == 0 and net.b.counters["conns_reset"] == 0


def test_replies_larger_than_the_send_buffer():
    """Replies wait in the session until the TCB takes them; later requests wait too."""
    big = bytes(range(256)) * 1200                               # 300 KiB
    with SimLoop(17) as loop:
        net = _net(loop, server_cfg=TcpConfig(time_wait=1.0, snd_buf=16384))
        server = KvServer(net.b, config=TcpConfig(time_wait=1.0, snd_buf=16384))

        async def main():
            r, w = await open_connection(net.a, SERVER, 6379)
            assert await _request(r, w, encode_command("SET", "big", big), 1) == ["OK"]
            req = encode_command("GET", "big") * 3 + encode_command("MGET", "big", "x") + \
                b"PING\r\n"
            got = await _request(r, w, req, 5)
            w.close()
            return got

        got = loop.run(main(), timeout=120)
        assert got == [big, big, big, [big, None], "PONG"]
        assert server.stats()["bytes_out"] >= 4 * len(big)


def test_requests_split_across_segments():
    with SimLoop(18) as loop:
        net = _net(loop)
        KvServer(net.b)
        req = encode_command("SET", "k", "x" * 100) + encode_command("GET", "k") + b"PI"

        async def main():
            r, w = await open_connection(net.a, SERVER, 6379)
            parser = ReplyParser()
            for i in range(0, len(req), 7):                   # one segment per piece
                w.write(req[i:i + 7])
                await asyncio.sleep(0.001)
            w.write(b"NG\r\n")
            out = []
            while len(out) < 3:
                out += parser.feed(await r.read(65536))
            w.close()
            return out

        assert loop.run(main(), timeout=60) == ["OK", b"x" * 100, "PONG"]


def test_quit_replies_then_closes():
    with SimLoop(19) as loop:
        net = _net(loop)
        server = KvServer(net.b)

        async def main():
            r, w = await open_connection(net.a, SERVER, 6379)
            got = await _request(r, w, b"PING\r\nQUIT\r\nPING\r\n", 2)
            eof = await r.read()
            w.close()
            return got, eof

        assert loop.run(main(), timeout=60) == (["PONG", "OK"], b"")
        assert server.stats()["closed_by_server"] == 1


def test_serve_helpers_fit_a_parser_that_has_port_already():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=7)        # as `acceltcp serve` has
    add_kv_arguments(parser)
    args = parser.parse_args(["--port", "6380", "--offload-setup", "--offload-teardown"])
    with SimLoop(20) as loop:
        net = _net(loop, nic=True)
        server = build_kv_server(net.b, args)
        st = server.stats()
        assert server.port == 6380 and st["offload_setup"] and st["offload_teardown"]
        assert "kv :6380: 0 connections" in server.summary()
        server.close()
        assert 6380 not in net.b.listeners
    defaults = add_kv_arguments(argparse.ArgumentParser()).parse_args([])
    assert defaults.port == 6379 and not defaults.offload_setup
    bare = add_kv_arguments(argparse.ArgumentParser(), offload_flags=False).parse_args([])
    assert not hasattr(bare, "offload_setup")
    with SimLoop(22) as loop:
        net = _net(loop, nic=True)
        server = build_kv_server(net.b, argparse.Namespace(port=None), offload_teardown=True)
        assert server.port == 6379 and server.listener.offload_teardown
        assert not server.listener.offload_setup


def test_load_without_a_server_fails_clearly():
    with SimLoop(21) as loop:
        net = _net(loop)
        load = KvLoad(net.a, SERVER, 6379, concurrency=4, total=10)
        load.start()
        loop.run_until(lambda: load.finished, timeout=60)
        assert load.errors == {"populate: refused": 1} and load.transactions == 0
        assert "1 errors" in load.summary()


# ---------------------------------------------------------------------- output back-pressure
BIG = 1 << 20


class _RawClient:
    """A client on the stack's callbacks that reads only when told to (``reading``)."""

    def __init__(self, stack, request=b"", *, reading=True, port=6379):
        self.stack = stack
        self.request = request
        self.reading = reading
        self.got = bytearray()
        self.sent = False
        self.conn = stack.connect(SERVER, port)
        stack.attach(self.conn, self._on_event, self)

    def _on_event(self, conn):
        if not self.sent and conn.writable:
            self.sent = True
            if self.request:
                self.send(self.request)
        if self.reading and conn.rcvbuf:
            self.got += self.stack.recv(conn, 1 << 30)

    def send(self, data):
        assert self.stack.send(self.conn, data) == len(data)

    def read(self):
        self.reading = True
        self._on_event(self.conn)


def _server_session(server):
    (conn,) = [c for c in server.stack.connections.values()
               if c.owner.app is not None and c.owner.app.id == 1]
    return conn.owner.app


def _big_value():
    return bytes(range(256)) * (BIG // 256)


def test_pipelined_big_gets_to_a_client_that_does_not_read():
    """80 pipelined GETs of a 1 MiB value from a client that does not read: the server
    holds at most its pause threshold plus one reply (it stops running the client's
    requests, the rest wait), serves another client's PINGs at once meanwhile, and when
    the slow client reads it gets all 80 replies byte for byte. Draining is linear: the
    bytes offered to the TCB equal the bytes sent (the old ``out = out[n:]`` offered --
    and copied -- the whole rest on every send: ~quadratic)."""
    value = _big_value()
    with SimLoop(31) as loop:
        net = _net(loop)
        server = KvServer(net.b)
        server.engine.execute("SET", "big", value)
        offered = [0]
        send = net.b.send

        def counting_send(conn, data):
            offered[0] += len(data)
            return send(conn, data)
        net.b.send = counting_send
        slow = _RawClient(net.a, encode_command("GET", "big") * 80, reading=False)
        loop.run_for(0.05)
        sess = _server_session(server)
        peak = 0
        pings = []

        async def pinger():
            r, w = await open_connection(net.a, SERVER, 6379)
            for _ in range(20):
                t = loop.time()
                assert await _request(r, w, b"PING\r\n", 1) == ["PONG"]
                pings.append(loop.time() - t)
                await asyncio.sleep(0.01)
            w.close()

        task = loop.create_task(pinger())
        while not task.done():
            loop.run_for(0.001)
            peak = max(peak, len(sess.out))
        task.result()
        assert max(pings) < 0.005                # a few RTTs of 100 us, in virtual time
        reply = len(value) + len(b"$1048576\r\n\r\n")
        assert peak <= 256 * 1024 + reply        # the default output_pause, one reply
        assert server.engine.bytes_out <= 4 * reply        # not all 80 built at once
        assert server.output_pauses > 0
        slow.read()
        want = b"$%d\r\n%s\r\n" % (len(value), value)
        loop.run_until(lambda: len(slow.got) >= 80 * len(want), timeout=600)
        assert bytes(slow.got) == want * 80
        assert server.engine.commands["get"].calls == 80
        sent = server.engine.bytes_out
        assert sent == 80 * len(want) + 5 + 20 * 7      # + the SET (execute), the PONGs
        assert offered[0] <= sent


def test_unread_gets_keep_memory_bounded():
    """300 unread GETs of 1 MiB: what the session holds (replies produced and not taken
    by the TCB, commands parsed and not run) stays bounded; the old server built all
    300 MiB of replies at once."""
    value = _big_value()
    with SimLoop(32) as loop:
        net = _net(loop)
        server = KvServer(net.b)
        server.engine.execute("SET", "big", value)
        slow = _RawClient(net.a, encode_command("GET", "big") * 300, reading=False)
        loop.run_for(0.05)
        sess = _server_session(server)
        peak = 0
        for _ in range(200):
            loop.run_for(0.005)
            peak = max(peak, len(sess.out))
        reply = len(value) + 13
        assert peak <= 256 * 1024 + reply        # the default output_pause, one reply
        # produced so far: the TCB's send buffer, the client's window, what is held
        assert server.engine.bytes_out <= 3 * reply + 5
        assert server.engine.commands["get"].calls <= 3
        assert peak <= sess.out.peak == server.output_peak <= 256 * 1024 + reply
        net.a.abort(slow.conn)
        loop.run_for(0.1)
        assert sess.released and not sess.out and sess.queued is None
        assert server.stats()["connected_clients"] == 0


def test_output_limit_closes_the_connection():
    """``output_limit`` (Redis's hard client-output-buffer-limit): a connection whose
    unsent replies exceed it is closed, its replies dropped; others go on."""
    value = _big_value()
    with SimLoop(33) as loop:
        net = _net(loop)
        server = KvServer(net.b, output_pause=64 * 1024, output_limit=512 * 1024)
        server.engine.execute("SET", "big", value)
        slow = _RawClient(net.a, encode_command("GET", "big") * 2, reading=False)
        loop.run_for(0.1)

        async def ping():
            r, w = await open_connection(net.a, SERVER, 6379)
            got = await _request(r, w, b"PING\r\n", 1)
            w.close()
            return got

        assert loop.run(ping(), timeout=10) == ["PONG"]
        slow.read()
        loop.run_for(1.0)
        assert slow.conn.eof or slow.conn.closed
        assert len(slow.got) < BIG                   # the reply was cut
        st = server.stats()
        assert st["closed_output_limit"] == 1 and st["connected_clients"] == 0


def test_query_limit_closes_the_connection():
    """A request growing past ``query_limit`` bytes closes its connection (Redis's
    client-query-buffer-limit); a request under it is served."""
    with SimLoop(34) as loop:
        net = _net(loop)
        server = KvServer(net.b, query_limit=100_000)
        ok = _RawClient(net.a, encode_command("SET", "k", b"x" * 90_000))
        big = _RawClient(net.a, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$400000\r\n" + b"y" * 150_000)
        loop.run_for(1.0)
        assert bytes(ok.got) == b"+OK\r\n"
        assert big.got == b"" and (big.conn.eof or big.conn.closed)
        st = server.stats()
        assert st["closed_query_limit"] == 1
        assert server.engine.data[b"k"] == b"$90000\r\n" + b"x" * 90_000 + b"\r\n"


def test_process_limit_holds_back_commands_in_order():
    """The engine's ``limit``: replies stop once they reach it; the parsed rest waits in
    the session, runs first at the next call, and a protocol error is answered only
    after every command before it."""
    from acceltcp.apps.kv import KvEngine, KvSession
    eng = KvEngine(lambda: 0.0)
    eng.execute("SET", "v", "x" * 100)
    sess = KvSession(1)
    data = encode_command("GET", "v") * 3 + b"PING\r\n*1\r\n$x\r\n"
    first = eng.process(sess, data, 50)
    val = b"$100\r\n" + b"x" * 100 + b"\r\n"
    assert first == val and sess.queued is not None and not sess.closing
    assert eng.process(sess, b"", 200) == val * 2
    rest = eng.process(sess, b"", 200)
    assert rest == b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
    assert sess.closing and sess.queued is None
    # without a limit: everything at once, as before
    s2 = KvSession(2)
    assert eng.process(s2, data) == val * 3 + rest
