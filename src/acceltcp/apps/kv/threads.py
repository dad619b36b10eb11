"""The kv engine on kernel sockets with one thread per connection: the baseline of the
AccelTCP paper's "kernel threads vs user-level threads" comparison (§5.2, Table 4).

Theory of operation
-------------------
The same `KvEngine` as `KvServer`, served the way a classic threaded server does it:
the kernel's TCP stack, blocking sockets, one OS thread per connection. An accept
thread takes connections from the listening socket and starts a thread for each (at
most ``max_connections`` at once: beyond, a new connection is closed at once and
counted ``refused``). A connection's thread blocks in ``recv``, hands what arrived to
the engine, sends the replies with ``sendall`` and closes when the session is closing
(QUIT, a protocol error) or the client closed its side; a reset or other socket error
ends it too (``conn_errors``). The engine is not thread-safe (one keyspace dict, an
expiry heap, counters), so every call into it holds one lock: the threads run the
engine one at a time, as the cooperative server does by construction, and what the
comparison measures is what the threads add -- the kernel's scheduling and context
switches between them, and the kernel's socket calls -- against `KvServer`'s callbacks
in the user-level stack's loop.

Back-pressure is the kernel's: a client that does not read its replies fills its socket
buffers and blocks only its own thread in ``sendall``. ``query_limit``: a connection
whose unfinished request grows past it is closed (Redis's client-query-buffer-limit).

``close()`` stops accepting, shuts every open connection down and joins the threads.
"""

import collections
import socket
import threading
import time

from .engine import KV_DEFAULT_PORT, KvEngine
from .server import QUERY_LIMIT

__all__ = ["ThreadedKvServer"]

_RECV = 65536


class ThreadedKvServer:
    """``ThreadedKvServer(host, port).start()``; ``address`` is the bound (host, port)
    (port 0: an ephemeral one). ``engine``: share or preload a `KvEngine` (default: a new
    one on ``time.monotonic``)."""

    def __init__(self, host="127.0.0.1", port=KV_DEFAULT_PORT, *, backlog=4096,
                 max_connections=10000, engine=None, query_limit=QUERY_LIMIT):
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.engine = engine if engine is not None else KvEngine(time.monotonic, port=port)
        self.max_connections = max_connections
        self.query_limit = query_limit
        self.lock = threading.Lock()          # around every call into the engine
        self._sock = socket.create_server((host, port), backlog=backlog, reuse_port=False)
        self.address = self._sock.getsockname()[:2]
        self.engine.port = self.address[1]
        self._conns = {}                       # socket -> its thread
        self._conns_lock = threading.Lock()
        self._accept_thread = None
        self._closing = False
        self.accepted = 0
        self.refused = 0                       # over max_connections: closed at once
        self.closed_by_client = 0
        self.closed_by_server = 0              # QUIT or a protocol error
        self.closed_query_limit = 0
        self.conn_errors = collections.Counter()
        self.threads_started = 0

    @property
    def active(self):
        """Connections open now (each with its thread)."""
        with self._conns_lock:
            return len(self._conns)

    def start(self):
        """Start the accept thread; -> self."""
        self._accept_thread = threading.Thread(target=self._accept_loop,
                                               name="kv-accept", daemon=True)
        self._accept_thread.start()
        return self

    def _accept_loop(self):
        while not self._closing:
            try:
                sock, _ = self._sock.accept()
            except OSError:
                if self._closing:
                    return
                continue                       # ECONNABORTED, EMFILE...: keep accepting
            with self._conns_lock:
                if self._closing or len(self._conns) >= self.max_connections:
                    self.refused += 1
                    sock.close()
                    continue
                t = threading.Thread(target=self._serve, args=(sock,), name="kv-conn",
                                     daemon=True)
                try:
                    t.start()        # under the lock: close() joins started threads only
                except RuntimeError:                 # no thread to be had: as over the limit
                    self.refused += 1
                    sock.close()
                    continue
                self.accepted += 1
                self._conns[sock] = t
                self.threads_started += 1

    def _serve(self, sock):
        engine = self.engine
        lock = self.lock
        with lock:
            sess = engine.open_session()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                data = sock.recv(_RECV)
                if not data:
                    self.closed_by_client += 1
                    break
                with lock:
                    reply = engine.process(sess, data)
                    closing = sess.closing
                    held = sess.parser.held
                if reply:
                    sock.sendall(reply)
                if closing:
                    self.closed_by_server += 1
                    break
                if held > self.query_limit:
                    self.closed_query_limit += 1
                    break
        except OSError as e:
            if not self._closing:
                self.conn_errors[type(e).__name__] += 1
        finally:
            with lock:
                engine.close_session(sess)
            with self._conns_lock:
                self._conns.pop(sock, None)
            try:
                sock.close()
            except OSError:
                pass

    def serve_forever(self):
        """Block until ``close()`` (from another thread) or KeyboardInterrupt."""
        if self._accept_thread is None:
            self.start()
        try:
            while self._accept_thread.is_alive():
                self._accept_thread.join(0.5)
        finally:
            self.close()

    def close(self, timeout=10.0):
        """Stop accepting, shut every connection down, join the threads."""
        if self._closing:
            return
        self._closing = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        with self._conns_lock:
            conns = list(self._conns.items())
        for sock, _ in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)     # wakes its thread's recv
            except OSError:
                pass
        for _, t in conns:
            t.join(timeout)
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)

    def stats(self):
        """Engine counters plus the server's: JSON-able, for exit reports."""
        with self.lock:
            st = self.engine.stats()
        st.update(address="%s:%d" % self.address, accepted=self.accepted,
                  refused=self.refused, active=self.active,
                  threads_started=self.threads_started,
                  closed_by_client=self.closed_by_client,
                  closed_by_server=self.closed_by_server,
                  closed_query_limit=self.closed_query_limit,
                  conn_errors=dict(self.conn_errors), max_connections=self.max_connections)
        return st

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


def main(args):
    """``acceltcp kv-threads``: serve until Ctrl-C, then print the counters."""
    import json
    import sys
    srv = ThreadedKvServer(args.host, args.port, backlog=args.backlog,
                           max_connections=args.max_connections)
    print("kv-threads ready on %s:%d" % srv.address, flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.close()
    st = srv.stats()
    print(json.dumps({k: st[k] for k in ("accepted", "refused", "threads_started",
                                         "closed_by_client", "closed_by_server",
                                         "commands_processed", "conn_errors")}),
          file=sys.stderr, flush=True)
    return 0


def add_arguments(parser):
    """``acceltcp kv-threads``'s options."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (%(default)s)")
    parser.add_argument("--port", type=int, default=KV_DEFAULT_PORT,
                        help="TCP port (%(default)s; 0: any free one)")
    parser.add_argument("--backlog", type=int, default=4096, help="listen backlog")
    parser.add_argument("--max-connections", type=int, default=10000,
                        help="connections (threads) at once; beyond, closed at once "
                             "(%(default)s)")
    return parser
