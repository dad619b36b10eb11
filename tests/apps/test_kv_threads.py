"""The thread-per-connection kv baseline (apps.kv.threads): the same KvEngine on kernel
sockets over loopback, a thread per connection. Raw RESP as redis-cli and redis-py send
it (arrays of bulk strings, inline commands, pipelines), QUIT and protocol errors that
close one connection only, many concurrent and many short-lived connections byte-exact,
the connection limit, redis-cli itself, and the ``acceltcp kv-threads`` command."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from acceltcp.apps.kv.threads import ThreadedKvServer
from acceltcp.apps.resp import encode_command

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src")


def connect(srv):
    s = socket.create_connection(srv.address, timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_until(sock, end=None):
    """Read until `end` bytes (exactly) or EOF."""
    buf = b""
    while end is None or len(buf) < len(end):
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def until(cond, timeout=10.0):
    t = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > t:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture
def srv():
    with ThreadedKvServer("127.0.0.1", 0) as s:
        yield s


def test_resp_commands_pipelines_and_inline(srv):
    s = connect(srv)
    s.sendall(encode_command("SET", "k", "v"))
    assert read_until(s, end=b"+OK\r\n") == b"+OK\r\n"
    # a pipeline in one write, as redis-py's pipeline() sends it
    s.sendall(encode_command("GET", "k") + encode_command("INCR", "n") +
              encode_command("INCR", "n") + encode_command("GET", "missing"))
    want = b"$1\r\nv\r\n:1\r\n:2\r\n$-1\r\n"
    assert read_until(s, end=want) == want
    s.sendall(b"PING\r\n")                    # inline, as redis-cli in a pipe / telnet
    assert read_until(s, end=b"+PONG\r\n") == b"+PONG\r\n"
    # a request split across writes
    req = encode_command("SET", "big", "x" * 100000)
    for i in range(0, len(req), 7001):
        s.sendall(req[i:i + 7001])
    assert read_until(s, end=b"+OK\r\n") == b"+OK\r\n"
    s.sendall(encode_command("STRLEN", "big") + encode_command("QUIT"))
    got = read_until(s)                       # unknown command error, +OK, then EOF
    assert got.startswith(b"-ERR unknown command") and got.endswith(b"+OK\r\n")
    s.close()
    assert until(lambda: srv.active == 0)
    st = srv.stats()
    assert st["closed_by_server"] == 1 and st["accepted"] == 1 and st["connected_clients"] == 0


def test_protocol_error_closes_that_connection_only(srv):
    a, b = connect(srv), connect(srv)
    a.sendall(b"*1\r\n$x\r\n")
    got = read_until(a)
    assert got.startswith(b"-ERR Protocol error") and got.endswith(b"\r\n")
    b.sendall(encode_command("PING"))
    assert read_until(b, end=b"+PONG\r\n") == b"+PONG\r\n"
    assert srv.stats()["protocol_errors"] == 1
    b.close()
    a.close()


def test_concurrent_clients_byte_exact(srv):
    n, rounds = 40, 30
    errors = []

    def client(i):
        try:
            s = connect(srv)
            for r in range(rounds):
                val = ("%d-%d-" % (i, r)) * (1 + r)
                s.sendall(encode_command("SET", "key:%d" % i, val) +
                          encode_command("GET", "key:%d" % i))
                want = b"+OK\r\n$%d\r\n%s\r\n" % (len(val), val.encode())
                got = read_until(s, end=want)
                if got != want:
                    errors.append((i, r, got[:80]))
                    break
            s.close()
        except OSError as e:
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert until(lambda: srv.active == 0)
    st = srv.stats()
    assert st["accepted"] == st["threads_started"] == n
    assert st["closed_by_client"] == n and st["keys"] == n
    assert st["commands_processed"] == 2 * n * rounds


def test_short_lived_connections(srv):
    n = 300
    for i in range(n):
        s = connect(srv)
        s.sendall(encode_command("SET", "s%d" % i, "v%d" % i) + encode_command("GET", "s%d" % i))
        want = b"+OK\r\n$%d\r\n%s\r\n" % (len("v%d" % i), b"v%d" % i)
        assert read_until(s, end=want) == want
        s.close()
    assert until(lambda: srv.active == 0)
    st = srv.stats()
    assert st["accepted"] == n and st["connected_clients"] == 0 and st["keys"] == n


def test_connection_limit_refuses_beyond_it():
    with ThreadedKvServer("127.0.0.1", 0, max_connections=2) as srv:
        a, b = connect(srv), connect(srv)
        for s in (a, b):
            s.sendall(encode_command("PING"))
            assert read_until(s, end=b"+PONG\r\n") == b"+PONG\r\n"
        c = connect(srv)
        assert read_until(c) == b""               # closed at once
        assert srv.refused == 1 and srv.active == 2
        a.close()
        assert until(lambda: srv.active == 1)
        d = connect(srv)
        d.sendall(encode_command("PING"))
        assert read_until(d, end=b"+PONG\r\n") == b"+PONG\r\n"
        for s in (b, c, d):
            s.close()


def test_close_ends_open_connections_and_threads():
    srv = ThreadedKvServer("127.0.0.1", 0).start()
    socks = [connect(srv) for _ in range(5)]
    for s in socks:
        s.sendall(encode_command("PING"))
        assert read_until(s, end=b"+PONG\r\n") == b"+PONG\r\n"
    srv.close()
    assert srv.active == 0
    for s in socks:
        assert read_until(s) == b""
        s.close()


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-tools not installed")
def test_redis_cli(srv):
    host, port = srv.address

    def cli(*args):
        r = subprocess.run(["redis-cli", "-h", host, "-p", str(port), *args],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert cli("SET", "foo", "bar") == "OK\n"
    assert cli("GET", "foo") == "bar\n"
    assert cli("INCRBY", "c", "5") == "5\n"
    assert cli("DBSIZE") == "2\n"


def test_the_acceltcp_kv_threads_command():
    env = dict(os.environ, PYTHONPATH=os.path.abspath(SRC))
    p = subprocess.Popen([sys.executable, "-m", "acceltcp.cli", "kv-threads", "--port", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = p.stdout.readline()
        assert line.startswith("kv-threads ready on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(encode_command("SET", "a", "1") + encode_command("GET", "a"))
        assert read_until(s, end=b"+OK\r\n$1\r\n1\r\n") == b"+OK\r\n$1\r\n1\r\n"
        s.close()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
        assert p.returncode == 0
        assert '"accepted": 1' in err and '"commands_processed": 2' in err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
