"""Both ways at once over host.aio streams between two simulated stacks: each side sends
its payload in 64 KiB writes and half-closes while it reads the other's to the end."""

import asyncio
import hashlib


async def exchange(reader, writer, payload):
    """Send `payload` and read to EOF at once -> (bytes read, their sha256)."""
    async def pull():
        h = hashlib.sha256()
        n = 0
        while chunk := await reader.read(65536):
            h.update(chunk)
            n += len(chunk)
        return n, h.hexdigest()

    async def push():
        for i in range(0, len(payload), 65536):
            writer.write(payload[i:i + 65536])
            await writer.drain()
        writer.write_eof()

    return (await asyncio.gather(pull(), push()))[0]


def run_duplex(loop, net, up, down, port=5001, server_ip="198.18.0.2"):
    """`up` from net.a to net.b and `down` back, on `loop` -> {"client": (n, sha256) net.a
    read, "server": (n, sha256) net.b read}."""
    from acceltcp.host.aio import open_connection, start_server
    got = {}
    done = asyncio.Event()

    async def server(reader, writer):
        got["server"] = await exchange(reader, writer, down)
        writer.close()
        done.set()

    async def main():
        await start_server(net.b, server, port)
        reader, writer = await open_connection(net.a, server_ip, port)
        got["client"] = await exchange(reader, writer, up)
        writer.close()
        await writer.wait_closed()
        await done.wait()

    loop.run(main(), timeout=3600)
    return got
