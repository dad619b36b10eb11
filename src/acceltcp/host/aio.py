"""asyncio streams over a HostStack, shaped like `asyncio.open_connection/start_server`.

Only `asyncio.get_running_loop()` futures are used, so the same app runs on a real
loop and on `io.sim.SimLoop` (virtual time). The reader pulls from the TCB on demand,
so unread data keeps the TCB's receive window closed (natural flow control); the writer
hands data to the TCB and buffers only what does not fit its send buffer, flushing as
space opens (`drain()` waits above 64 KiB of such backlog, like asyncio's transports).
TCB errors surface as ConnectionResetError / TimeoutError / ConnectionRefusedError.
"""

import asyncio
import errno
import os

from ..tcp import states
from ..wire.ipv4 import ip_to_str

__all__ = ["open_connection", "start_server", "StreamReader", "StreamWriter", "Server",
           "connection_error"]

_LIMIT = 2 ** 16
_HIGH_WATER = 64 * 1024
_LOW_WATER = 16 * 1024
_ERRORS = {"reset": (ConnectionResetError, errno.ECONNRESET),
           "refused": (ConnectionRefusedError, errno.ECONNREFUSED),
           "timeout": (TimeoutError, errno.ETIMEDOUT)}


def connection_error(conn):
    """The exception for a failed TCB (None if it has not failed)."""
    err = conn.error
    if err is None:
        return None
    cls, code = _ERRORS.get(err, (ConnectionError, errno.EIO))
    return cls(code, os.strerror(code))


class _Stream:
    """Per-connection state shared by a reader and a writer; the TCB's event handler."""

    __slots__ = ("stack", "conn", "loop", "read_waiter", "drain_waiters", "wbuf", "closing",
                 "close_issued", "eof_pending", "eof_sent", "closed_fut", "open_fut")

    def __init__(self, stack, conn, loop):
        self.stack = stack
        self.conn = conn
        self.loop = loop
        self.read_waiter = None
        self.drain_waiters = []
        self.wbuf = bytearray()
        self.closing = False          # close() called
        self.close_issued = False     # close handed to the TCB
        self.eof_pending = False      # write_eof() called
        self.eof_sent = False
        self.closed_fut = None
        self.open_fut = None
        stack.attach(conn, self.on_event, self)

    def on_event(self, conn):
        w = self.read_waiter
        if w is not None and not w.done() and (conn.readable or conn.closed):
            w.set_result(None)
        f = self.open_fut
        if f is not None and not f.done():
            if conn.error is not None or conn.closed:
                f.set_exception(connection_error(conn) or
                                ConnectionRefusedError(errno.ECONNREFUSED,
                                                       os.strerror(errno.ECONNREFUSED)))
            elif conn.state in states.SYNCHRONIZED:
                f.set_result(None)
        if self.wbuf and (conn.writable or conn.error is not None or conn.closed):
            self.flush()
        elif conn.error is not None or conn.closed:
            self._wake_drain()
            self._finish_close()

    def flush(self):
        conn = self.conn
        buf = self.wbuf
        if buf:
            if conn.error is not None or conn.closed or conn.state not in (
                    states.ESTABLISHED, states.CLOSE_WAIT):
                if conn.error is not None or conn.closed:
                    buf.clear()       # nobody will ever take it
            else:
                try:
                    n = self.stack.send(conn, buf)
                except OSError:
                    n = len(buf)
                    buf.clear()
                if n:
                    del buf[:n]
        if len(buf) <= _LOW_WATER:
            self._wake_drain()
        if not buf:
            if self.closing and not self.close_issued:
                self.close_issued = True
                self.stack.close(conn)
                self._finish_close()
            elif self.eof_pending and not self.eof_sent:
                self.eof_sent = True
                self.stack.shutdown(conn)
        if conn.error is not None or conn.closed:
            self._finish_close()

    def _wake_drain(self):
        ws = self.drain_waiters
        if ws:
            self.drain_waiters = []
            for w in ws:
                if not w.done():
                    w.set_result(None)

    def _finish_close(self):
        f = self.closed_fut
        if (self.close_issued or self.conn.closed) and f is not None and not f.done():
            f.set_result(None)


class StreamReader:
    """The reading half: read, readexactly, readuntil, readline, at_eof, async iteration."""

    def __init__(self, stream, limit=_LIMIT):
        self._s = stream
        self._limit = limit
        self._buf = bytearray()

    def _raise_if_failed(self):
        exc = connection_error(self._s.conn)
        if exc is not None:
            raise exc

    def _at_end(self):
        c = self._s.conn
        return c.eof or c.state == states.CLOSED

    async def _wait(self):
        s = self._s
        if s.read_waiter is not None:
            raise RuntimeError("another coroutine is already waiting for incoming data")
        fut = s.read_waiter = s.loop.create_future()
        try:
            await fut
        finally:
            s.read_waiter = None

    async def _fill(self, want):
        """Pull at least one byte (up to `want`) into the buffer; False at EOF."""
        s = self._s
        conn = s.conn
        while True:
            if conn.rcvbuf:
                self._buf += s.stack.recv(conn, max(want, 1))
                return True
            self._raise_if_failed()
            if self._at_end():
                return False
            await self._wait()

    async def read(self, n=-1):
        if n == 0:
            return b""
        if n < 0:
            chunks = []
            if self._buf:
                chunks.append(bytes(self._buf))
                self._buf.clear()
            while True:
                b = await self.read(max(self._limit, 1))
                if not b:
                    return b"".join(chunks)
                chunks.append(b)
        buf = self._buf
        if buf:
            data = bytes(buf[:n])
            del buf[:n]
            return data
        s = self._s
        conn = s.conn
        while True:
            if conn.rcvbuf:
                return s.stack.recv(conn, n)
            self._raise_if_failed()
            if self._at_end():
                return b""
            await self._wait()

    async def readexactly(self, n):
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        buf = self._buf
        while len(buf) < n:
            if not await self._fill(n - len(buf)):
                partial = bytes(buf)
                buf.clear()
                raise asyncio.IncompleteReadError(partial, n)
        data = bytes(buf[:n])
        del buf[:n]
        return data

    async def readuntil(self, separator=b"\n"):
        seplen = len(separator)
        if seplen == 0:
            raise ValueError("Separator should be at least one-byte string")
        buf = self._buf
        start = 0
        while True:
            i = buf.find(separator, start)
            if i >= 0:
                if i + seplen > self._limit:
                    raise asyncio.LimitOverrunError(
                        "Separator is found, but chunk is longer than limit", i)
                data = bytes(buf[:i + seplen])
                del buf[:i + seplen]
                return data
            if len(buf) > self._limit:
                raise asyncio.LimitOverrunError(
                    "Separator is not found, and chunk exceed the limit", len(buf))
            start = max(0, len(buf) - seplen + 1)
            if not await self._fill(self._limit):
                partial = bytes(buf)
                buf.clear()
                raise asyncio.IncompleteReadError(partial, None)

    async def readline(self):
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            return e.partial
        except asyncio.LimitOverrunError as e:
            if self._buf.startswith(b"\n", e.consumed):
                del self._buf[:e.consumed + 1]
            else:
                self._buf.clear()
            raise ValueError(e.args[0])

    def at_eof(self):
        return not self._buf and not self._s.conn.rcvbuf and self._at_end()

    def exception(self):
        return connection_error(self._s.conn)

    def __aiter__(self):
        return self

    async def __anext__(self):
        line = await self.readline()
        if line == b"":
            raise StopAsyncIteration
        return line


class StreamWriter:
    """The writing half: write, writelines, drain, write_eof, close, wait_closed."""

    def __init__(self, stream, reader=None):
        self._s = stream
        self._reader = reader

    def write(self, data):
        s = self._s
        if s.eof_pending:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data or s.closing:
            return
        conn = s.conn
        if conn.error is not None or conn.closed:
            return                                   # drain() reports the error
        if s.wbuf:
            s.wbuf += data
            return
        try:
            n = s.stack.send(conn, data)
        except OSError:
            return
        if n < len(data):
            s.wbuf += memoryview(data)[n:]

    def writelines(self, data):
        for d in data:
            self.write(d)

    async def drain(self):
        s = self._s
        exc = connection_error(s.conn)
        if exc is not None:
            raise exc
        if s.closing:
            await asyncio.sleep(0)
            return
        while len(s.wbuf) > _HIGH_WATER:
            fut = s.loop.create_future()
            s.drain_waiters.append(fut)
            await fut
            exc = connection_error(s.conn)
            if exc is not None:
                raise exc
            if s.conn.closed:
                raise ConnectionResetError(errno.ECONNRESET, "connection closed")

    def can_write_eof(self):
        return True

    def write_eof(self):
        s = self._s
        if s.eof_pending or s.closing:
            return
        s.eof_pending = True
        s.flush()

    def close(self):
        s = self._s
        if s.closing:
            return
        s.closing = True
        if s.closed_fut is None:
            s.closed_fut = s.loop.create_future()
        s.flush()

    def abort(self):
        """Reset the connection (RST), dropping buffered data."""
        s = self._s
        s.wbuf.clear()
        s.closing = True
        s.close_issued = True
        if s.closed_fut is None:
            s.closed_fut = s.loop.create_future()
        s.stack.abort(s.conn)
        s._finish_close()

    def is_closing(self):
        return self._s.closing

    async def wait_closed(self):
        """Until the close is handed to the TCB (unsent data included), as a kernel
        socket's close returns; the FIN handshake and TIME-WAIT go on in the stack."""
        s = self._s
        if s.closed_fut is None:
            s.closed_fut = s.loop.create_future()
            s._finish_close()
        await s.closed_fut

    def get_extra_info(self, name, default=None):
        c = self._s.conn
        if name == "peername":
            return (ip_to_str(c.remote_ip), c.remote_port)
        if name == "sockname":
            return (ip_to_str(c.local_ip), c.local_port)
        if name == "connection":
            return c
        if name == "stack":
            return self._s.stack
        return default

    @property
    def transport(self):
        return self

    def __repr__(self):
        c = self._s.conn
        return "<StreamWriter %s:%d -> %s:%d %s>" % (
            ip_to_str(c.local_ip), c.local_port, ip_to_str(c.remote_ip), c.remote_port,
            states.STATE_NAMES[c.state])


def _streams(stack, conn, loop, limit):
    s = _Stream(stack, conn, loop)
    reader = StreamReader(s, limit)
    return reader, StreamWriter(s, reader)


async def open_connection(stack, host, port, *, limit=_LIMIT, local_port=None, config=None,
                          **opts):
    """Active open -> (StreamReader, StreamWriter). `opts` override TcpConfig fields
    (nodelay=True, rcv_buf=..., mss=...). Raises ConnectionRefusedError, TimeoutError
    (SYN retries exhausted), OSError (no route, no port)."""
    loop = asyncio.get_running_loop()
    cfg = config if config is not None else stack.config
    if opts:
        cfg = cfg.copy(**opts)
    conn = stack.connect(host, port, config=cfg, local_port=local_port)
    reader, writer = _streams(stack, conn, loop, limit)
    s = writer._s
    s.open_fut = loop.create_future()
    s.on_event(conn)                    # it may have failed synchronously
    try:
        await s.open_fut
    except asyncio.CancelledError:
        stack.abort(conn)
        raise
    finally:
        s.open_fut = None
    return reader, writer


class Server:
    """What `start_server` returns (asyncio.Server-like)."""

    def __init__(self, stack, listener, cb, loop, limit):
        self.stack = stack
        self.listener = listener
        self.port = listener.port
        self._cb = cb
        self._loop = loop
        self._limit = limit
        self._tasks = set()
        self._serving = True
        self._forever = None
        self._closed = loop.create_future()
        listener.on_acceptable = self._on_acceptable
        listener.app = self

    def _on_acceptable(self, listener):
        while self._serving:
            conn = listener.accept()
            if conn is None:
                return
            reader, writer = _streams(self.stack, conn, self._loop, self._limit)
            try:
                res = self._cb(reader, writer)
            except Exception as exc:
                writer.abort()
                self._loop.call_exception_handler({
                    "message": "unhandled exception in client_connected_cb",
                    "exception": exc, "writer": writer})
                continue
            if asyncio.iscoroutine(res):
                task = self._loop.create_task(res)
                self._tasks.add(task)
                task.add_done_callback(lambda t, w=writer: self._task_done(t, w))

    def _task_done(self, task, writer):
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            writer.abort()
            self._loop.call_exception_handler({
                "message": "unhandled exception in client_connected_cb",
                "exception": exc, "writer": writer})

    @property
    def sockets(self):
        return ()

    def is_serving(self):
        return self._serving

    async def start_serving(self):
        return None

    def close(self):
        if not self._serving:
            return
        self._serving = False
        self.listener.on_acceptable = None
        self.stack.unlisten(self.listener)
        if not self._closed.done():
            self._closed.set_result(None)
        f = self._forever
        if f is not None and not f.done():
            f.cancel()

    async def wait_closed(self):
        await asyncio.shield(self._closed)

    async def serve_forever(self):
        if self._forever is not None:
            raise RuntimeError("server is already being awaited on serve_forever()")
        if not self._serving:
            raise RuntimeError("server is closed")
        self._forever = self._loop.create_future()
        try:
            await self._forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._forever = None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.close()
        await self.wait_closed()


async def start_server(stack, client_connected_cb, port, *, backlog=128, config=None,
                       limit=_LIMIT, **opts):
    """Listen on `port`; each accepted connection calls client_connected_cb(reader,
    writer) (a coroutine function is run as a task). -> Server."""
    loop = asyncio.get_running_loop()
    cfg = config
    if opts:
        cfg = (cfg if cfg is not None else stack.config).copy(**opts)
    lst = stack.listen(port, backlog, config=cfg)
    return Server(stack, lst, client_connected_cb, loop, limit)
