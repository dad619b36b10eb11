"""Bulk transfer endpoints on the stack's event callbacks: a discard sink and a source."""

import hashlib

from .accept import accept_into


class SinkServer:
    """Accept connections and read everything (optionally hashing it); close on EOF."""

    def __init__(self, stack, port=9, *, backlog=128, config=None, digest=False):
        self.stack = stack
        self.listener = stack.listen(port, backlog, config=config)
        self.bytes = 0
        self.closed = 0
        self.digest = hashlib.sha256() if digest else None
        accept_into(stack, self.listener, self)

    def on_accept(self, conn):
        return self._on_event, self

    def _on_event(self, conn):
        if conn.rcvbuf:
            data = self.stack.recv(conn, 1 << 30)
            self.bytes += len(data)
            if self.digest is not None:
                self.digest.update(data)
        if conn.eof and not conn.fin_queued and not conn.closed:
            self.stack.close(conn)
            self.closed += 1


class Source:
    """Connect and send ``data`` (bytes-like), then close."""

    def __init__(self, stack, server_ip, port=9, data=b"", *, config=None, chunk=1 << 18):
        self.stack = stack
        self.data = memoryview(data)
        self.sent = 0
        self.chunk = chunk
        self.conn = stack.connect(server_ip, port, config=config)
        stack.attach(self.conn, self._on_event, self)

    def _on_event(self, conn):
        if conn.error is not None:
            return
        while self.sent < len(self.data) and conn.writable:
            n = self.stack.send(conn, self.data[self.sent:self.sent + self.chunk])
            if not n:
                break
            self.sent += n
        if self.sent == len(self.data) and not conn.fin_queued and conn.writable:
            self.stack.close(conn)
