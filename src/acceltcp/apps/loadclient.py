"""What the apps' load clients (`apps.echo.EchoLoad`, `apps.kv.KvLoad`) share: the
connection slots and the transaction accounting.

``concurrency`` slots, each a connection running ``per_conn`` transactions (0:
persistent) before it closes and the slot opens a new one. Exactly ``total`` requests are
issued (None: until ``stop()``); ``finished`` once they are answered and every
connection is closed. ``stack.connect`` failures (ephemeral ports exhausted, no route)
are counted in ``errors`` and leave the slot empty: ``refill()`` opens connections again
up to ``concurrency``; ``active`` is how many are open. A subclass opens its own kind of
client in ``_open`` (with ``_connect``), calls ``_issued()`` when a request goes out and
``_answered(client)`` when its reply is complete; ``_can_open()`` says whether slots may
be (re)filled.

A connection's events go to `LoadClient._on_event`, the same for every load: an error
ends the slot, the first request (the subclass's ``_send``) rides on the handshake's ACK,
received bytes go to the subclass's ``_on_data``, and the server's FIN or a close ends the
transaction in flight (counted) and the connection.
"""

import collections

__all__ = ["LoadClient"]


class LoadClient:
    def __init__(self, stack, server_ip, port, *, concurrency, per_conn, total, config,
                 on_progress, progress_every):
        self.stack = stack
        self.server_ip = server_ip
        self.port = port
        self.concurrency = concurrency
        self.per_conn = per_conn
        self.total = total
        self.config = config
        self.on_progress = on_progress
        self.progress_every = progress_every
        self.running = False
        self.issued = 0
        self.transactions = 0
        self.errors = collections.Counter()
        self.connections = 0
        self.latencies = []
        self._clients = {}

    def stop(self):
        self.running = False

    @property
    def finished(self):
        return not self.running and not self._clients

    @property
    def active(self):
        """Connections open (connecting, in a transaction, or closing)."""
        return len(self._clients)

    def refill(self):
        """While slots may be filled, open connections up to ``concurrency`` (slots left
        empty by failed connects). -> how many were opened."""
        opened = 0
        while self._can_open() and len(self._clients) < self.concurrency:
            if not self._open():
                break
            opened += 1
        return opened

    #: Whether a slot is given up at the server's FIN (True) or only once the connection
    #: is closed (False: the slot stays taken while the close completes).
    _finish_at_eof = True

    def _can_open(self):
        return self.running

    def _send(self, client):
        """Send `client`'s next request (and call ``_issued()``)."""
        raise NotImplementedError

    def _on_data(self, client, conn):
        """`conn` has received bytes: read them, account the replies they complete. ->
        False when the event is handled (`client` finished or going on), True to look at
        the end of the stream next."""
        raise NotImplementedError

    def _on_event(self, conn):
        """The stack's event callback for every connection of the load."""
        client = self._clients.get(conn)
        if client is None:
            return
        stack = self.stack
        if conn.error is not None:
            self.errors[conn.error] += 1
            self._finish(client)
            return
        if client.sent_at is None and client.done == 0 and conn.writable:
            if not self.running:                     # opened before the load stopped
                if not conn.fin_queued and not conn.closed:
                    stack.close(conn)
                self._finish(client)
                return
            self._send(client)                       # rides on the handshake's ACK
        if conn.rcvbuf and not self._on_data(client, conn):
            return
        if conn.eof or conn.closed:
            if client.sent_at is not None:
                self.errors["closed before reply"] += 1
                client.sent_at = None
            if not conn.fin_queued and not conn.closed:
                stack.close(conn)
            if conn.closed or self._finish_at_eof:
                self._finish(client)

    def _connect(self, client_class, handler):
        """A new connection with a `client_class(conn, now)` on `handler`; None (and the
        error counted) when the stack cannot open one."""
        stack = self.stack
        try:
            conn = stack.connect(self.server_ip, self.port, config=self.config)
        except OSError as e:
            self.errors[e.strerror or str(e)] += 1
            return None
        self.connections += 1
        client = client_class(conn, stack.clock())
        self._clients[conn] = client
        stack.attach(conn, handler, client)
        return client

    def _issued(self):
        """A request goes out; the last of ``total`` stops the load."""
        self.issued += 1
        if self.total is not None and self.issued >= self.total:
            self.running = False

    def _answered(self, client):
        """`client`'s reply is complete: latency, counts, progress."""
        self.latencies.append(self.stack.clock() - client.sent_at)
        self.transactions += 1
        client.done += 1
        client.sent_at = None
        if self.on_progress is not None and self.transactions % self.progress_every == 0:
            self.on_progress(self)

    def _goes_on(self, client):
        """After a reply: does this connection run another transaction?"""
        return self.running and (self.per_conn == 0 or client.done < self.per_conn)

    def _finish(self, client, reopen=True):
        if self._clients.pop(client.conn, None) is None:
            return
        client.conn = None          # no conn -> owner -> client -> conn cycle left behind
        if reopen and self._can_open():
            self._open()
