"""Echo server and load client: the paper's msg_server and msg_test.

Both run on the host stack's event callbacks (``stack.attach``): the stack calls them
from inside frame processing, as an mTCP application on the same core would run after
its stack. So a runner's CPU accounting covers the application's work too.

Short-lived transactions follow the paper's packet sequence (§2.1): the client's request
rides on its handshake ACK, the server answers and closes (response + FIN), the client
closes (FIN-ACK), the server ACKs: six packets, the server in TIME-WAIT.

Memory per connection: the server holds no bytes of its own. It reads only as much as
the connection's send buffer has room for, so a client that writes and never reads
fills the server's send buffer and then its receive buffer (``TcpConfig.snd_buf`` and
``rcv_buf``), after which its window is closed (`tests/apps/test_relay_bounds.py`).
"""

from .accept import accept_into
from .loadclient import LoadClient


class EchoServer:
    """Echo every byte. ``close_after``: bytes after which the server closes (0: when
    the client closes first). ``offload_setup``: the NIC (if any) completes handshakes
    with SYN cookies (AccelTCP §4.1); ``offload_teardown``: connections are handed to
    the NIC on close (§4.2)."""

    def __init__(self, stack, port=7, *, backlog=4096, config=None, close_after=0,
                 offload_setup=False, offload_teardown=False, defer_accept=True):
        self.stack = stack
        self.close_after = close_after
        # an echo client speaks first: the NIC may hand a connection up with its data
        self.listener = stack.listen(port, backlog, config=config,
                                     offload_setup=offload_setup,
                                     offload_teardown=offload_teardown,
                                     defer_accept=defer_accept)
        self.accepted = 0
        self.bytes_echoed = 0
        self._echoed = {}
        self._handler = self._on_event        # bound once, shared by every connection
        accept_into(stack, self.listener, self)

    def on_accept(self, conn):
        self.accepted += 1
        return self._handler, self

    def _on_event(self, conn):
        stack = self.stack
        if conn.rcvbuf:
            space = conn.send_space
            if space:
                data = stack.recv(conn, space)
                stack.send(conn, data)
                n = len(data)
                self.bytes_echoed += n
                if self.close_after:
                    done = self._echoed.get(conn, 0) + n
                    if done >= self.close_after:
                        self._echoed.pop(conn, None)
                        stack.close(conn)
                        return
                    self._echoed[conn] = done
        if conn.eof and not conn.fin_queued and not conn.closed:
            self._echoed.pop(conn, None)
            stack.close(conn)
        elif conn.closed:
            self._echoed.pop(conn, None)

    def close(self):
        self.stack.unlisten(self.listener)


class _Client:
    __slots__ = ("conn", "done", "got", "sent_at", "opened")

    def __init__(self, conn, now):
        self.conn = conn
        self.done = 0          # transactions completed on this connection
        self.got = 0           # bytes of the current reply received
        self.sent_at = None
        self.opened = now


class EchoLoad(LoadClient):
    """``concurrency`` connections, each sending ``size``-byte messages and waiting for
    the echo. ``per_conn``: transactions per connection (1 = short-lived, 0 = persistent).
    Issues exactly ``total`` transactions (None: until ``stop()``): the last request sent
    stops the load, the ones in flight are still answered and counted. Once stopped,
    connections close as their reply arrives (or, not yet used, when they open);
    ``finished`` once all are closed. ``on_progress(load)`` is called every
    ``progress_every`` completed transactions. Slots and accounting:
    `apps.loadclient.LoadClient`."""

    _finish_at_eof = False            # the slot is given up once the close completes

    def __init__(self, stack, server_ip, port=7, *, concurrency=64, size=64, per_conn=0,
                 total=None, config=None, on_progress=None, progress_every=100):
        super().__init__(stack, server_ip, port, concurrency=concurrency, per_conn=per_conn,
                         total=total, config=config, on_progress=on_progress,
                         progress_every=progress_every)
        self.message = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        self.size = size

    def start(self):
        self.running = True
        for _ in range(self.concurrency):
            self._open()

    def _open(self):
        return self._connect(_Client, self._on_event) is not None

    def _send(self, client):
        client.got = 0
        client.sent_at = self.stack.clock()
        self._issued()
        self.stack.send(client.conn, self.message)

    def _on_data(self, client, conn):
        client.got += len(self.stack.recv(conn, 1 << 20))
        if client.got >= self.size and client.sent_at is not None:
            self._complete(client)
        return True

    def _complete(self, client):
        self._answered(client)
        if self.total is not None and self.transactions >= self.total:
            self.running = False
        conn = client.conn
        if self._goes_on(client):
            self._send(client)
        elif not conn.fin_queued:
            # Done with it: the stack finishes the teardown; the next connection opens now.
            self.stack.close(conn)
            self._finish(client)
