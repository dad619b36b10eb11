"""asyncio streams over the stack, on SimLoop (virtual time)."""

import asyncio

import pytest

from acceltcp.host.aio import open_connection, start_server
from acceltcp.tcp.config import TcpConfig

B = "198.18.0.2"


async def echo(reader, writer):
    while True:
        data = await reader.read(65536)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


def test_echo_round_trip(loop, net):
    a, b = net

    async def main():
        server = await start_server(b, echo, 7)
        reader, writer = await open_connection(a, B, 7)
        assert writer.get_extra_info("peername") == (B, 7)
        assert writer.get_extra_info("sockname")[0] == "198.18.0.1"
        writer.write(b"hello, world")
        await writer.drain()
        assert await reader.readexactly(12) == b"hello, world"
        writer.write_eof()
        assert await reader.read() == b""
        assert reader.at_eof()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
    loop.run(main(), timeout=10)


def test_bulk_echo_with_backpressure(loop, net):
    a, b = net
    payload = bytes(i * 7 % 251 for i in range(1_500_000))

    async def main():
        await start_server(b, echo, 7)
        reader, writer = await open_connection(a, B, 7)

        async def send():
            for i in range(0, len(payload), 100_000):
                writer.write(payload[i:i + 100_000])
                await writer.drain()
            writer.write_eof()
        task = asyncio.ensure_future(send())
        got = await reader.read()
        await task
        return got
    assert loop.run(main(), timeout=60) == payload


def test_readuntil_readline_and_iteration(loop, net):
    a, b = net

    async def lines(reader, writer):
        writer.write(b"one\ntwo\r\nthree")
        writer.close()

    async def main():
        await start_server(b, lines, 7)
        reader, writer = await open_connection(a, B, 7)
        assert await reader.readuntil(b"\n") == b"one\n"
        assert await reader.readline() == b"two\r\n"
        with pytest.raises(asyncio.IncompleteReadError) as ei:
            await reader.readuntil(b"\n")
        assert ei.value.partial == b"three"
        assert await reader.readline() == b""
    loop.run(main(), timeout=10)


def test_async_iteration_over_lines(loop, net):
    a, b = net

    async def lines(reader, writer):
        writer.write(b"a\nb\nc\n")
        writer.close()

    async def main():
        await start_server(b, lines, 7)
        reader, _ = await open_connection(a, B, 7)
        return [line async for line in reader]
    assert loop.run(main(), timeout=10) == [b"a\n", b"b\n", b"c\n"]


def test_readexactly_short_is_incomplete_read(loop, net):
    a, b = net

    async def short(reader, writer):
        writer.write(b"abc")
        writer.close()

    async def main():
        await start_server(b, short, 7)
        reader, _ = await open_connection(a, B, 7)
        with pytest.raises(asyncio.IncompleteReadError) as ei:
            await reader.readexactly(10)
        assert ei.value.partial == b"abc" and ei.value.expected == 10
    loop.run(main(), timeout=10)


def test_limit_overrun(loop, net):
    a, b = net

    async def blob(reader, writer):
        writer.write(b"x" * 200 + b"\n")
        writer.close()

    async def main():
        await start_server(b, blob, 7)
        reader, _ = await open_connection(a, B, 7, limit=100)
        with pytest.raises(ValueError):
            await reader.readline()
    loop.run(main(), timeout=10)


def test_refused(loop, net):
    a, _ = net

    async def main():
        with pytest.raises(ConnectionRefusedError):
            await open_connection(a, B, 9)
    loop.run(main(), timeout=10)


def test_connect_timeout(loop, net):
    a, _ = net

    async def main():
        with pytest.raises(TimeoutError):
            await open_connection(a, "198.18.0.77", 80, syn_retries=1)
    loop.run(main(), timeout=60)


def test_reset_by_peer(loop, net):
    a, b = net

    async def rude(reader, writer):
        await reader.read(1)
        writer.abort()

    async def main():
        await start_server(b, rude, 7)
        reader, writer = await open_connection(a, B, 7)
        writer.write(b"x")
        with pytest.raises(ConnectionResetError):
            await reader.read(10)
        with pytest.raises(ConnectionResetError):
            await writer.drain()
    loop.run(main(), timeout=10)


def test_server_close_stops_accepting_and_ends_serve_forever(loop, net):
    a, b = net

    async def main():
        server = await start_server(b, echo, 7, backlog=4)
        forever = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0.01)
        assert server.is_serving()
        server.close()
        await server.wait_closed()
        with pytest.raises(asyncio.CancelledError):
            await forever
        with pytest.raises(ConnectionRefusedError):
            await open_connection(a, B, 7)
    loop.run(main(), timeout=10)


def test_server_as_context_manager(loop, net):
    a, b = net

    async def main():
        async with await start_server(b, echo, 7):
            r, w = await open_connection(a, B, 7, nodelay=True)
            w.write(b"ping")
            assert await r.readexactly(4) == b"ping"
        assert 7 not in b.listeners
    loop.run(main(), timeout=10)


def test_options_reach_the_connection(loop, net):
    a, b = net

    async def main():
        await start_server(b, echo, 7, nodelay=True)
        _, w = await open_connection(a, B, 7, nodelay=True, rcv_buf=32768)
        conn = w.get_extra_info("connection")
        assert conn.config.nodelay and conn.config.rcv_buf == 32768
        assert a.config == TcpConfig()
    loop.run(main(), timeout=10)


def test_callback_exception_aborts_the_connection(loop, net):
    a, b = net
    seen = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(ctx.get("exception")))

    async def broken(reader, writer):
        raise RuntimeError("app bug")

    async def main():
        await start_server(b, broken, 7)
        reader, _ = await open_connection(a, B, 7)
        with pytest.raises(ConnectionResetError):
            await reader.read(1)
    loop.run(main(), timeout=10)
    assert isinstance(seen[0], RuntimeError)


def test_many_concurrent_clients(loop, net):
    a, b = net

    async def client(i):
        r, w = await open_connection(a, B, 7)
        msg = b"%d" % i * 100
        w.write(msg)
        w.write_eof()
        got = await r.read()
        w.close()
        return got == msg

    async def main():
        await start_server(b, echo, 7, backlog=64)
        return await asyncio.gather(*(client(i) for i in range(50)))
    assert all(loop.run(main(), timeout=30))
