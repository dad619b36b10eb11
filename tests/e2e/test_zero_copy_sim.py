"""Opportunistic zero-copy end to end: messages echoed between two stacks over a faulty
link (loss, reordering, duplication, corruption) arrive byte-exact while the server
receives requests by reference (``recv`` returns the frame's own bytes) and sends its
replies by reference (the same bytes object in the send buffer, resent from there after
a loss); the client reuses one bytearray for every other message."""

import asyncio
import random

from acceltcp.host.aio import open_connection
from acceltcp.io.sim import FaultConfig, SimLoop
from acceltcp.tcp.config import TcpConfig
from acceltcp.testbed.simnet import make_pair

FAULTS = FaultConfig(loss=0.05, reorder=0.02, duplicate=0.01, corrupt=0.001)
CONNECTIONS, MESSAGES = 4, 150


class KeptEcho:
    """Echoes every read at once; counts reads and writes the stack did by reference."""

    def __init__(self, stack, port):
        self.stack = stack
        self.kept_in = self.kept_out = self.echoed = 0
        listener = stack.listen(port, 64)
        listener.on_acceptable = self._accept

    def _accept(self, listener):
        while listener.accept_queue:
            conn = listener.accept()
            self.stack.attach(conn, self._event)
            self._event(conn)

    def _event(self, conn):
        st = self.stack
        if conn.rcvbuf and not conn.fin_queued:
            held = conn.rcvbuf
            data = st.recv(conn, 1 << 20)
            self.kept_in += data is held
            empty = not conn.sndbuf
            assert st.send(conn, data) == len(data)
            self.kept_out += empty and conn.sndbuf is data
            self.echoed += len(data)
        if conn.eof and not conn.fin_queued and not conn.closed:
            st.close(conn)


async def _client(net, rng):
    reader, writer = await open_connection(net.a, "198.18.0.2", 7)
    reused = bytearray()
    for i in range(MESSAGES):
        msg = rng.randbytes(rng.randint(1, 3000))
        if i % 2:
            reused[:] = msg
            writer.write(reused)
            reused[:] = b"\xee" * len(reused)        # the buffer is the app's again
        else:
            writer.write(msg)
        await writer.drain()
        assert await reader.readexactly(len(msg)) == msg
    writer.close()
    await writer.wait_closed()
    return MESSAGES


def test_messages_echoed_by_reference_arrive_byte_exact_under_faults():
    rng = random.Random(7)
    cfg = TcpConfig(zero_copy=True)
    with SimLoop(3) as loop:
        net = make_pair(loop, config_a=cfg, config_b=cfg, faults=FAULTS, seed=3,
                        bandwidth_bps=1e9, delay=100e-6)
        server = KeptEcho(net.b, 7)

        async def main():
            return await asyncio.gather(*(_client(net, random.Random(rng.random()))
                                          for _ in range(CONNECTIONS)))
        assert loop.run(main(), timeout=600) == [MESSAGES] * CONNECTIONS
        stats = net.b.stats()
        link = net.stats()["link"]
    assert server.echoed > CONNECTIONS * MESSAGES * 1000
    assert server.kept_in > CONNECTIONS * MESSAGES // 4          # requests by reference
    assert server.kept_out > CONNECTIONS * MESSAGES // 4         # replies by reference
    assert link["ba"]["loss"] > 10                               # replies were lost ...
    assert stats["counters"]["retransmits"] > 10                 # ... and resent
