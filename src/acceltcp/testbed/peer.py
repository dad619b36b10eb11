r"""Kernel-side peer programs: plain Python sockets, run inside the peer namespace.

    ip netns exec atcp-peer python -m acceltcp.testbed.peer echo-client 198.18.0.2 7 \
        --bytes 104857600

Each prints one JSON line with its result on stdout and exits 0 on success. They use
only the kernel's TCP (``socket``), so they are the "real Linux peer" of the tests:

  echo-client  send N pseudo-random bytes, read the echo back concurrently, sha256 both
  send         send N bytes, half-close, wait for the server's EOF (bulk into the stack)
  short        N short-lived connections (connect, send SIZE bytes, read SIZE, close),
               C at a time; every one must complete
  serve-bytes  a server: for each connection send N bytes, then close (the stack
               downloads); --count connections, then exit
  duplex       one connection, both ways at once: after an optional head (client: sent
               first; server: --head-lines lines read first) send N bytes of the seed's
               pattern, half-close, and hash everything received until EOF (a spliced
               connection through a proxy on the stack)
  pingpong     --conns persistent connections, each: send a head line, read its echo,
               then for --seconds one --size byte message at a time, each read back
               (echoed) before the next: small messages, one segment each way
  server       a reference server on the kernel stack (asyncio or uvloop): echo, sink,
               or a minimal RESP "PING" responder, until SIGTERM
  hold         open --count idle connections (--concurrency handshakes at a time), print
               how many are established, hold them until a line on stdin (or EOF), then
               check each is still open (one byte echoed on a sample) and close them
"""

import argparse
import hashlib
import json
import os
import random
import signal
import socket
import sys
import threading
import time

CHUNK = 1 << 20


def _pattern(seed, nbytes):
    """The deterministic byte stream of (seed): a 4 MiB random block, repeated."""
    block = random.Random(seed).randbytes(min(nbytes, 4 << 20) or 1)
    return block


def _chunks(seed, nbytes, chunk=CHUNK):
    block = memoryview(_pattern(seed, nbytes))
    left = nbytes
    off = 0
    while left > 0:
        k = min(chunk, left, len(block) - off)
        yield block[off:off + k]
        left -= k
        off = (off + k) % len(block)


def expected_sha256(seed, nbytes):
    h = hashlib.sha256()
    for c in _chunks(seed, nbytes):
        h.update(c)
    return h.hexdigest()


def recv_upto(s, n):
    """Read from socket `s` until `n` bytes or EOF; -> what came."""
    got = bytearray()
    while len(got) < n:
        d = s.recv(65536)
        if not d:
            break
        got += d
    return bytes(got)


def echoed(s, msg):
    """Send `msg` on socket `s` and read as much back: was it echoed exactly?"""
    s.sendall(msg)
    return recv_upto(s, len(msg)) == msg


def _connect(host, port, timeout=10.0):
    s = socket.create_connection((host, port), timeout=timeout)
    s.settimeout(None)
    return s


def echo_client(a):
    s = _connect(a.host, a.port)
    s.settimeout(a.timeout)
    sent_h = hashlib.sha256()
    err = []

    def sender():
        try:
            for c in _chunks(a.seed, a.bytes):
                s.sendall(c)
                sent_h.update(c)
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            err.append(repr(e))

    t0 = time.monotonic()
    th = threading.Thread(target=sender, daemon=True)
    th.start()
    got = 0
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    mv = memoryview(buf)
    try:
        while True:
            n = s.recv_into(buf)
            if not n:
                break
            h.update(mv[:n])
            got += n
    except OSError as e:
        err.append(repr(e))
    th.join(a.timeout)
    el = time.monotonic() - t0
    s.close()
    out = {"sent": a.bytes, "received": got, "sha256_sent": sent_h.hexdigest(),
           "sha256_received": h.hexdigest(), "elapsed_s": el,
           "mb_per_s": 2 * got / 1e6 / max(el, 1e-9), "errors": err}
    print(json.dumps(out))
    return 0 if got == a.bytes and not err and out["sha256_sent"] == out["sha256_received"] \
        else 1


def send(a):
    s = _connect(a.host, a.port)
    s.settimeout(a.timeout)
    h = hashlib.sha256() if a.sha256 else None
    cpu0 = os.times()
    t0 = time.monotonic()
    for c in _chunks(a.seed, a.bytes):
        s.sendall(c)
        if h is not None:
            h.update(c)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    el = time.monotonic() - t0
    cpu1 = os.times()
    s.close()
    out = {"sent": a.bytes, "elapsed_s": el, "mb_per_s": a.bytes / 1e6 / max(el, 1e-9),
           "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)}
    if h is not None:
        out["sha256"] = h.hexdigest()
    print(json.dumps(out))
    return 0


def short(a):
    """`count` transactions, `concurrency` threads, one connection each."""
    msg = bytes(range(256)) * (a.size // 256) + bytes(range(a.size % 256))
    lock = threading.Lock()
    state = {"next": 0, "ok": 0, "errors": []}

    def worker():
        while True:
            with lock:
                if state["next"] >= a.count:
                    return
                state["next"] += 1
            try:
                s = socket.create_connection((a.host, a.port), timeout=a.timeout)
                s.sendall(msg)
                got = recv_upto(s, len(msg))
                extra = s.recv(65536) if a.expect_eof and got == msg else b""
                s.close()
                with lock:
                    if got != msg:
                        state["errors"].append("short reply %d" % len(got))
                    elif extra:
                        state["errors"].append("%d bytes instead of EOF" % len(extra))
                    else:
                        state["ok"] += 1
            except OSError as e:
                with lock:
                    state["errors"].append(repr(e))

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    el = time.monotonic() - t0
    errs = state["errors"]
    print(json.dumps({"count": a.count, "ok": state["ok"], "errors": len(errs),
                      "first_errors": errs[:5], "elapsed_s": el,
                      "tps": state["ok"] / max(el, 1e-9)}))
    return 0 if state["ok"] == a.count else 1


def serve_bytes(a):
    ls = socket.create_server(("0.0.0.0", a.port), backlog=128, reuse_port=False)
    ls.settimeout(a.timeout)
    print(json.dumps({"event": "ready", "port": a.port}), flush=True)
    results = []
    for _ in range(a.count):
        c, addr = ls.accept()
        c.settimeout(a.timeout)
        h = hashlib.sha256()
        t0 = time.monotonic()
        for chunk in _chunks(a.seed, a.bytes):
            c.sendall(chunk)
            h.update(chunk)
        c.shutdown(socket.SHUT_WR)
        while c.recv(65536):                 # until the client closes too
            pass
        c.close()
        results.append({"peer": "%s:%d" % addr, "sent": a.bytes, "sha256": h.hexdigest(),
                        "elapsed_s": time.monotonic() - t0})
    ls.close()
    print(json.dumps({"served": results}))
    return 0


def duplex(a):
    """See the module docstring. Prints sent/received counts, the received sha256 (after
    the head) and, for the server, the head it read."""
    if a.host:
        s = _connect(a.host, a.port, a.timeout)
        if a.head:
            s.sendall(a.head.encode().decode("unicode_escape").encode("latin-1"))
        head = b""
    else:
        ls = socket.create_server(("0.0.0.0", a.port), backlog=8)
        ls.settimeout(a.timeout)
        print(json.dumps({"event": "ready", "port": a.port}), flush=True)
        s, _ = ls.accept()
        ls.close()
        head = b""
        while head.count(b"\n") < a.head_lines:
            d = s.recv(1)
            if not d:
                break
            head += d
    s.settimeout(a.timeout)
    t0 = time.monotonic()
    err = []

    def sender():
        try:
            for chunk in _chunks(a.seed, a.bytes):
                s.sendall(chunk)
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            err.append(repr(e))
    t = threading.Thread(target=sender, daemon=True)
    t.start()
    h = hashlib.sha256()
    n = 0
    try:
        while True:
            d = s.recv(1 << 20)
            if not d:
                break
            h.update(d)
            n += len(d)
    except OSError as e:
        err.append(repr(e))
    t.join(a.timeout)
    s.close()
    print(json.dumps({"sent": a.bytes, "received": n, "sha256": h.hexdigest(),
                      "head": head.decode("latin-1"), "errors": err,
                      "elapsed_s": time.monotonic() - t0}))
    return 0 if not err else 1


def pingpong(a):
    """See the module docstring: one selector loop over --conns connections (against an
    echo server, through a proxy or not). Every reply must equal its message."""
    import selectors
    head = a.head.encode().decode("unicode_escape").encode("latin-1")
    sel = selectors.DefaultSelector()
    rnd = random.Random(a.seed)
    msgs = [rnd.randbytes(a.size) for _ in range(16)]
    conns = []
    for i in range(a.conns):
        s = _connect(a.host, a.port, a.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(head)
        conns.append(s)
    for s in conns:                          # the head's echo, then the messages begin
        s.settimeout(a.timeout)
        got = recv_upto(s, len(head))
        if got != head:
            print(json.dumps({"error": "head echo %r" % got[:80]}))
            return 1
        s.setblocking(False)
    state = {}
    t0 = time.monotonic()
    end = t0 + a.seconds
    for i, s in enumerate(conns):
        m = msgs[i % len(msgs)]
        s.send(m)
        state[s] = [m, bytearray(), i]
        sel.register(s, selectors.EVENT_READ)
    rtts = errors = 0
    lat_sum = 0.0
    sent_at = {s: t0 for s in conns}
    deadline = end + a.timeout
    while sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(1.0):
            s = key.fileobj
            st = state[s]
            try:
                d = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                d = b""
            if not d:
                errors += 1
                sel.unregister(s)
                continue
            st[1] += d
            if len(st[1]) < len(st[0]):
                continue
            now = time.monotonic()
            if bytes(st[1]) != st[0]:
                errors += 1
                sel.unregister(s)
                continue
            rtts += 1
            lat_sum += now - sent_at[s]
            if now >= end:
                sel.unregister(s)
                continue
            st[2] += 1
            st[0] = msgs[st[2] % len(msgs)]
            st[1] = bytearray()
            sent_at[s] = now
            try:
                sent = s.send(st[0])         # a small write into an empty buffer: whole
            except OSError:
                sent = -1
            if sent != len(st[0]):
                errors += 1
                sel.unregister(s)
    el = time.monotonic() - t0
    left = len(sel.get_map())
    for s in conns:
        s.close()
    print(json.dumps({"round_trips": rtts, "elapsed_s": el, "rtt_per_s": rtts / el,
                      "mean_rtt_us": 1e6 * lat_sum / max(rtts, 1), "errors": errors + left,
                      "conns": a.conns, "size": a.size}))
    return 0 if not errors and not left and rtts else 1


# ---------------------------------------------------------------------- reference servers
def server(a):
    import asyncio
    if a.loop == "uvloop":
        import uvloop
        uvloop.install()

    stats = {"bytes": 0, "conns": 0}

    class Echo(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t
            stats["conns"] += 1

        def data_received(self, d):
            self.t.write(d)
            if a.close_after:
                self.left = getattr(self, "left", a.close_after) - len(d)
                if self.left <= 0:
                    self.t.close()              # the server closes first

        def eof_received(self):
            self.t.close()

    class Sink(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t
            stats["conns"] += 1

        def data_received(self, d):
            stats["bytes"] += len(d)

        def eof_received(self):
            self.t.close()

    class Ping(asyncio.Protocol):
        """Minimal RESP: answers +PONG to each PING (inline or multibulk) it sees."""

        def connection_made(self, t):
            self.t = t
            self.buf = b""
            stats["conns"] += 1

        def data_received(self, d):
            self.buf += d
            n = self.buf.upper().count(b"PING")
            if n:
                self.t.write(b"+PONG\r\n" * n)
                self.buf = self.buf[self.buf.upper().rfind(b"PING") + 4:]

        def eof_received(self):
            self.t.close()

    proto = {"echo": Echo, "sink": Sink, "ping": Ping}[a.app]

    async def main():
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        srv = await loop.create_server(proto, "0.0.0.0", a.port, backlog=4096,
                                       reuse_address=True)
        print(json.dumps({"event": "ready", "port": a.port, "loop": a.loop}), flush=True)
        await stop
        srv.close()

    asyncio.run(main())
    t = os.times()
    print(json.dumps({"stats": stats, "cpu_s": t.user + t.system}), flush=True)
    return 0


def hold(a):
    """Idle connections: the server's per-connection memory is read while they are held."""
    import resource
    import selectors
    need = a.count + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:                                  # up to the hard limit we were given
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    sel = selectors.DefaultSelector()
    conns, pending, started = [], 0, 0
    t0 = time.monotonic()
    deadline = t0 + a.timeout
    while (started < a.count or pending) and time.monotonic() < deadline:
        while started < a.count and pending < a.concurrency:
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((a.host, a.port))
            sel.register(s, selectors.EVENT_WRITE)
            started += 1
            pending += 1
        for key, _ in sel.select(0.5):
            s = key.fileobj
            sel.unregister(s)
            pending -= 1
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                conns.append(s)
            else:
                s.close()
    print(json.dumps({"established": len(conns), "wanted": a.count,
                      "seconds": round(time.monotonic() - t0, 3)}), flush=True)
    sys.stdin.readline()
    alive = 0
    for s in conns[::max(1, len(conns) // 100)]:     # a sample still works, one byte echoed
        s.setblocking(True)
        s.settimeout(10)
        try:
            s.sendall(b"x")
            alive += s.recv(1) == b"x"
        except OSError:
            pass
    for s in conns:
        s.close()
    print(json.dumps({"established": len(conns), "sample_alive": alive,
                      "sample": len(conns[::max(1, len(conns) // 100)])}), flush=True)
    return 0 if len(conns) == a.count else 1


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m acceltcp.testbed.peer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("echo-client", "send", "short"):
        q = sub.add_parser(name)
        q.add_argument("host")
        q.add_argument("port", type=int)
        q.add_argument("--timeout", type=float, default=60.0)
        if name != "short":
            q.add_argument("--bytes", type=int, required=True)
            q.add_argument("--seed", type=int, default=1)
        if name == "send":
            q.add_argument("--sha256", action="store_true")
        if name == "short":
            q.add_argument("--count", type=int, default=2000)
            q.add_argument("--concurrency", type=int, default=32)
            q.add_argument("--size", type=int, default=64)
            q.add_argument("--expect-eof", action="store_true",
                           help="after the reply, the server's FIN must follow")
    q = sub.add_parser("serve-bytes")
    q.add_argument("--port", type=int, required=True)
    q.add_argument("--bytes", type=int, required=True)
    q.add_argument("--seed", type=int, default=1)
    q.add_argument("--count", type=int, default=1)
    q.add_argument("--timeout", type=float, default=60.0)
    q = sub.add_parser("duplex")
    q.add_argument("host", nargs="?", help="connect here (client); without it: serve")
    q.add_argument("port", type=int)
    q.add_argument("--bytes", type=int, required=True)
    q.add_argument("--seed", type=int, default=1)
    q.add_argument("--head", default="", help="client: sent first (\\n escapes)")
    q.add_argument("--head-lines", type=int, default=0, help="server: lines read first")
    q.add_argument("--timeout", type=float, default=120.0)
    q = sub.add_parser("pingpong")
    q.add_argument("host")
    q.add_argument("port", type=int)
    q.add_argument("--conns", type=int, default=16)
    q.add_argument("--seconds", type=float, default=3.0)
    q.add_argument("--size", type=int, default=64)
    q.add_argument("--seed", type=int, default=1)
    q.add_argument("--head", default="", help="sent first and read back (\\n escapes)")
    q.add_argument("--timeout", type=float, default=30.0)
    q = sub.add_parser("server")
    q.add_argument("app", choices=("echo", "sink", "ping"))
    q.add_argument("--port", type=int, required=True)
    q.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    q.add_argument("--close-after", type=int, default=0, metavar="BYTES",
                   help="echo: close after echoing this many bytes (0: when the client "
                        "closes)")
    q = sub.add_parser("hold")
    q.add_argument("host")
    q.add_argument("port", type=int)
    q.add_argument("--count", type=int, default=20000)
    q.add_argument("--concurrency", type=int, default=256)
    q.add_argument("--timeout", type=float, default=120.0)
    a = p.parse_args(argv)
    fn = {"echo-client": echo_client, "send": send, "short": short,
          "serve-bytes": serve_bytes, "server": server, "duplex": duplex, "hold": hold,
          "pingpong": pingpong}[a.cmd]
    return fn(a)


if __name__ == "__main__":
    sys.exit(main())
