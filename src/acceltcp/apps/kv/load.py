"""`KvLoad`: the kv load client, the Facebook USR workload of the AccelTCP evaluation
(see the `apps.kv` package docstring)."""

import random

from .. import resp
from ..loadclient import LoadClient
from ..resp import ReplyError, ReplyParser, Status, encode_command
from .engine import KV_DEFAULT_PORT
from .server import _READ_MAX

__all__ = ["KvLoad"]

_VALUE_ALPHABET = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_GET = 0
_SET = 1


class _KvClient:
    __slots__ = ("conn", "parser", "done", "sent_at", "op", "key", "value", "opened")

    def __init__(self, conn, now):
        self.conn = conn
        self.parser = ReplyParser()
        self.done = 0
        self.sent_at = None
        self.op = None
        self.key = None
        self.value = None
        self.opened = now


class KvLoad(LoadClient):
    """Clients running the Facebook USR workload against a RESP server.

    ``concurrency`` connections; ``per_conn`` transactions each (1: the paper's one
    transaction per connection -- connect, one request, read the reply, close; 0:
    persistent). A transaction is a GET (probability ``get_ratio``) or a SET of a
    ``value_size``-byte value, on a key drawn uniformly from ``keys`` keys of
    ``key_size`` bytes. With ``populate`` every key is first written over one
    connection (MSET batches), so every GET must hit. Every reply is checked: a GET must
    return a value written to that key (any of them: writes to one key from different
    connections race) -- or nil only for a key never populated -- and a SET ``+OK``;
    anything else counts in ``errors``. Issues exactly ``total`` transactions (None: until
    ``stop()``); ``finished`` once they are all answered and their connections closed.
    Deterministic for a given ``seed`` in the simulator.

    Slots, ``refill()``, ``active`` and the accounting: `apps.loadclient.LoadClient`.
    ``on_populated(load)`` is called once the keys are written, right before the first
    transaction's connections open (a measurement starts there).
    """

    def __init__(self, stack, server_ip, port=KV_DEFAULT_PORT, *, concurrency=64, per_conn=1,
                 total=None, keys=1000, get_ratio=0.998, key_size=16, value_size=2,
                 populate=True, seed=1, config=None, on_progress=None, progress_every=100,
                 on_populated=None):
        if keys < 1:
            raise ValueError("keys must be at least 1")
        width = key_size - 4
        if width < len(str(keys - 1)):
            raise ValueError("key_size %d is too small for %d keys" % (key_size, keys))
        super().__init__(stack, server_ip, port, concurrency=concurrency, per_conn=per_conn,
                         total=total, config=config, on_progress=on_progress,
                         progress_every=progress_every)
        self.get_ratio = get_ratio
        self.value_size = value_size
        self.on_populated = on_populated
        self.rng = random.Random(seed)
        self.keys = [b"usr:%0*d" % (width, i) for i in range(keys)]
        self._get_requests = [encode_command(b"GET", k) for k in self.keys]
        # Values each key may hold: the populated one and every value SET since.
        self._allowed = [set() if populate else {None} for _ in self.keys]
        self._populate = populate
        self._batches = []
        if populate:
            for i in range(0, keys, 500):
                args = [b"MSET"]
                for j in range(i, min(i + 500, keys)):
                    v = self._value()
                    self._allowed[j].add(v)
                    args += (self.keys[j], v)
                self._batches.append(encode_command(*args))
        self.populated = not populate
        self.gets = 0
        self.sets = 0
        self.hits = 0
        self.misses = 0

    def _value(self):
        return bytes(self.rng.choices(_VALUE_ALPHABET, k=self.value_size))

    # ------------------------------------------------------------------ control
    def start(self):
        self.running = True
        if self.populated:
            self._open_all()
        else:
            self._open(populate=True)

    def _can_open(self):
        return self.running and self.populated

    def _open_all(self):
        for _ in range(self.concurrency):
            self._open()

    def _open(self, populate=False):
        if self._connect(_KvClient, self._on_populate if populate else self._on_event) \
                is not None:
            return True
        if populate:
            self.running = False
        return False

    # ------------------------------------------------------------------ populate phase
    def _on_populate(self, conn):
        client = self._clients.get(conn)
        if client is None:
            return
        if conn.error is not None:
            self.errors["populate: " + conn.error] += 1
            self.running = False
            self._finish(client)
            return
        if client.sent_at is None and conn.writable:
            client.sent_at = self.stack.clock()
            self.stack.send(conn, self._batches[0])
        if conn.rcvbuf:
            try:
                replies = client.parser.feed(self.stack.recv(conn, _READ_MAX))
            except resp.ProtocolError:
                replies = [None]
            for r in replies:
                if r != "OK" or not isinstance(r, Status):
                    self.errors["populate: unexpected reply"] += 1
                    self.running = False
                    self.stack.close(conn)
                    self._finish(client)
                    return
                client.done += 1
                if client.done < len(self._batches):
                    self.stack.send(conn, self._batches[client.done])
            if client.done == len(self._batches):
                self.populated = True
                self.stack.close(conn)
                self._finish(client, reopen=False)
                if self.on_populated is not None:
                    self.on_populated(self)
                if self.running:
                    self._open_all()
                return
        if (conn.eof or conn.closed) and not self.populated:
            self.errors["populate: connection closed"] += 1
            self.running = False
            if not conn.closed and not conn.fin_queued:
                self.stack.close(conn)
            self._finish(client)

    # ------------------------------------------------------------------ transactions
    def _send(self, client):
        i = self.rng.randrange(len(self.keys))
        client.key = i
        if self.rng.random() < self.get_ratio:
            client.op = _GET
            req = self._get_requests[i]
        else:
            client.op = _SET
            v = client.value = self._value()
            self._allowed[i].add(v)
            req = encode_command(b"SET", self.keys[i], v)
        client.sent_at = self.stack.clock()
        self._issued()
        self.stack.send(client.conn, req)

    def _on_data(self, client, conn):
        stack = self.stack
        try:
            replies = client.parser.feed(stack.recv(conn, _READ_MAX))
        except resp.ProtocolError:
            self.errors["malformed reply"] += 1
            stack.close(conn)
            self._finish(client)
            return False
        for r in replies:
            if client.sent_at is None:
                self.errors["unsolicited reply"] += 1
                continue
            self._check(client, r)
            if not self._complete(client):
                return False
        return True

    def _check(self, client, r):
        if isinstance(r, ReplyError):
            self.errors["error reply: " + r.code] += 1
        elif client.op == _GET:
            self.gets += 1
            if r is None:
                self.misses += 1
                if None not in self._allowed[client.key]:
                    self.errors["GET nil for a populated key"] += 1
            elif isinstance(r, bytes):
                self.hits += 1
                if r not in self._allowed[client.key]:
                    self.errors["GET wrong value"] += 1
            else:
                self.errors["GET unexpected reply"] += 1
        else:
            self.sets += 1
            if not (isinstance(r, Status) and r == "OK"):
                self.errors["SET unexpected reply"] += 1

    def _complete(self, client):
        """A reply arrived: -> True if the client goes on (persistent, more to do)."""
        self._answered(client)
        if self._goes_on(client):
            self._send(client)
            return True
        conn = client.conn
        if not conn.fin_queued and not conn.closed:
            self.stack.close(conn)
        self._finish(client)
        return False

    def stats(self):
        lat = sorted(self.latencies)

        def pct(q):
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None
        return {"transactions": self.transactions, "gets": self.gets, "sets": self.sets,
                "hits": self.hits, "misses": self.misses, "connections": self.connections,
                "errors": dict(self.errors), "latency_p50": pct(0.5),
                "latency_p99": pct(0.99)}

    def summary(self):
        st = self.stats()
        errs = sum(st["errors"].values())
        p50 = st["latency_p50"]
        return ("kv load: %d transactions (%d GET, %d SET) over %d connections, %d errors%s"
                % (st["transactions"], st["gets"], st["sets"], st["connections"], errs,
                   ", p50 %.1f us" % (p50 * 1e6) if p50 is not None else ""))
