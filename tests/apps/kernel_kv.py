"""A `KvEngine` on kernel TCP sockets (asyncio, in a thread): lets the real redis-cli and
redis-benchmark talk to the engine without the TAP testbed. Test helper only: the
engine's transport in the project is `KvServer` on the user-level stack."""

import asyncio
import threading
import time

from acceltcp.apps.kv import KvEngine


class _Conn(asyncio.Protocol):
    def __init__(self, engine):
        self.engine = engine
        self.sess = None
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.sess = self.engine.open_session()

    def data_received(self, data):
        reply = self.engine.process(self.sess, data)
        if reply:
            self.transport.write(reply)
        if self.sess.closing:
            self.transport.close()

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.engine.close_session(self.sess)


class KernelKv:
    """``with KernelKv() as srv: srv.port``; the engine runs on the server's thread, so
    read ``srv.engine`` only after the clients are done."""

    def __init__(self, host="127.0.0.1"):
        self.host = host
        self.port = None
        self.loop = asyncio.new_event_loop()
        self.engine = KvEngine(time.monotonic)
        self._server = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self):
        self._thread.start()

        async def start():
            return await self.loop.create_server(lambda: _Conn(self.engine), self.host, 0)

        self._server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        self.engine.port = self.port
        return self

    def __exit__(self, *exc):
        async def stop():
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
