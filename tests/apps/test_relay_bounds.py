"""Per-connection memory of the echo server and the host-relay proxy, in the simulator:
a client that writes and never reads (echo), a backend streaming to a client that does
not read (proxy, splice off). Neither app holds bytes of its own: each moves only as
much as the sink's send buffer has room for, so the rest waits in TCBs bounded by their
buffer sizes, and the windows stop the sender. Everything arrives byte-exact once the
slow side reads. (The bounds held before the back-pressure work too; the proxy's relay
did not resume, though: it moved a connection's own data on its events only, so the
client's send space opening never restarted the backend-to-client direction, and the
transfer stalled at what the buffers held.)"""

from acceltcp.apps.echo import EchoServer
from acceltcp.apps.proxy import SpliceProxy
from acceltcp.testbed.simnet import IP_A, IP_B, make_pair
from acceltcp.io.sim import SimLoop
from acceltcp.tcp.config import TcpConfig

# A TCB's receive buffer was seen up to 7.3 KB over its rcv_buf here (the stack's window
# accounting; reported, not the apps' doing): the bounds below allow a few segments more.
SLACK = 16 * 1024


def _net(loop):
    cfg = TcpConfig(time_wait=1.0)
    return make_pair(loop, config_a=cfg, config_b=cfg, bandwidth_bps=1e9, delay=50e-6,
                     queue_limit=8192)


def _pattern(n):
    return (bytes(range(251)) * (n // 251 + 1))[:n]


class _Peer:
    """A connection on the stack's callbacks that sends ``data`` as space allows and
    reads only while ``reading``."""

    def __init__(self, stack, conn, data=b"", *, reading=True, on_data=None):
        self.stack = stack
        self.conn = conn
        self.data = data
        self.off = 0
        self.reading = reading
        self.on_data = on_data
        self.got = bytearray()
        stack.attach(conn, self._on_event, self)

    def _on_event(self, conn):
        if self.reading and conn.rcvbuf:
            self.got += self.stack.recv(conn, 1 << 30)
            if self.on_data is not None:
                self.on_data(self)
        self.pump()

    def pump(self):
        conn = self.conn
        if self.off < len(self.data) and conn.send_space:
            self.off += self.stack.send(conn, memoryview(self.data)[self.off:
                                                                    self.off + conn.send_space])

    def read(self):
        self.reading = True
        self._on_event(self.conn)


def _tcbs_bounded(stack):
    for c in stack.connections.values():
        assert len(c.sndbuf) <= c.config.snd_buf
        assert len(c.rcvbuf) <= c.config.rcv_buf + SLACK


def test_echo_client_that_never_reads():
    size = 8 << 20
    data = _pattern(size)
    with SimLoop(41) as loop:
        net = _net(loop)
        server = EchoServer(net.b, 7)
        client = _Peer(net.a, net.a.connect(IP_B, 7), data, reading=False)
        loop.run_for(1.0)
        # the server echoed what the client's window and its own send buffer take, then
        # stopped reading; the client's sends stopped at its own buffer
        buf = 256 * 1024
        assert server.bytes_echoed <= 2 * buf + SLACK
        assert client.off <= 4 * buf + 2 * SLACK
        _tcbs_bounded(net.b)
        client.read()
        loop.run_until(lambda: len(client.got) >= size, timeout=120)
        assert bytes(client.got) == data and server.bytes_echoed == size


def test_proxy_relay_to_a_client_that_does_not_read():
    size = 8 << 20
    data = _pattern(size)
    with SimLoop(42) as loop:
        net = _net(loop)
        backends = []

        def accept(listener):
            while (conn := listener.accept()) is not None:
                backends.append(_Peer(net.a, conn, data))
        lst = net.a.listen(9000, 16)
        lst.on_acceptable = accept
        proxy = SpliceProxy(net.b, 8000, [(IP_A, 9000)], splice=False)
        client = _Peer(net.a, net.a.connect(IP_B, 8000), b"hello\n", reading=False)
        loop.run_for(1.0)
        (backend,) = backends
        assert backend.got == b"hello\n"
        buf = 256 * 1024
        # the backend stopped at the windows: its and the proxy's buffers, the client's
        assert backend.off <= 5 * buf + 3 * SLACK
        _tcbs_bounded(net.b)
        assert proxy.counters["relayed"] == 0 and proxy.counters["accepted"] == 1
        client.read()
        loop.run_until(lambda: len(client.got) >= size, timeout=120)
        assert len(client.got) == size, "the relay did not resume"
        assert bytes(client.got) == data
