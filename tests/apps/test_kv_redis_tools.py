"""The real redis-cli and redis-benchmark (Debian's redis-tools) against KvEngine, served
on kernel sockets by tests/apps/kernel_kv.py: what they send on start (COMMAND DOCS,
CONFIG GET save/appendonly, HELLO 3) and their workloads are understood. The same tools
against KvServer on the user-level stack need the TAP testbed (`acceltcp serve kv`).
Skipped without redis-tools (`make test` installs it as root: system-deps)."""

import re
import shutil
import subprocess

import pytest

from .kernel_kv import KernelKv

REDIS_CLI = shutil.which("redis-cli")
REDIS_BENCHMARK = shutil.which("redis-benchmark")
pytestmark = pytest.mark.skipif(REDIS_CLI is None or REDIS_BENCHMARK is None,
                                reason="redis-tools not installed")


def tool(*argv, stdin=None, timeout=120):
    return subprocess.run(list(argv), input=stdin, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def server():
    with KernelKv() as srv:
        yield srv


def test_redis_cli_commands(server):
    p = str(server.port)

    def cli(*args):
        r = tool(REDIS_CLI, "-p", p, *args)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert cli("SET", "foo", "bar") == "OK\n"
    assert cli("GET", "foo") == "bar\n"
    assert cli("INCRBY", "n", "41") == "41\n"
    assert cli("SET", "t", "v", "EX", "100") == "OK\n"
    assert cli("TTL", "t") == "100\n"
    assert cli("--no-raw", "GET", "nokey") == "(nil)\n"
    assert sorted(cli("KEYS", "*").split()) == ["foo", "n", "t"]
    assert cli("DBSIZE") == "3\n"
    assert cli("--no-raw", "NOPE") == \
        "(error) ERR unknown command 'NOPE', with args beginning with: \n"
    assert "redis_version:7.0.0" in cli("INFO", "server")


def test_redis_cli_reads_commands_from_stdin(server):
    # Not a terminal: it first asks COMMAND DOCS (an empty array here is fine).
    r = tool(REDIS_CLI, "-p", str(server.port),
             stdin="set a 1\nincr a\nget a\nnope\nping\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:3] == ["OK", "2", "2"]
    assert r.stdout.rstrip("\n").endswith("PONG")
    assert server.engine.stats()["commands"]["command"] == 1


def test_redis_cli_resp3_falls_back_to_resp2(server):
    r = tool(REDIS_CLI, "-3", "-p", str(server.port), "PING")
    assert r.returncode == 0 and r.stdout == "PONG\n"
    assert "NOPROTO" in r.stderr


def test_redis_benchmark_workloads(server):
    n = 2000
    tests = ["ping_inline", "ping_mbulk", "set", "get", "incr", "mset"]
    r = tool(REDIS_BENCHMARK, "-p", str(server.port), "-t", ",".join(tests), "-n", str(n),
             "-c", "10", "-r", "1000", "-q")
    assert r.returncode == 0, r.stderr
    assert "WARNING" not in r.stdout + r.stderr     # e.g. "Could not fetch server CONFIG"
    done = re.findall(r"([A-Z_]+(?: \(10 keys\))?): [0-9.]+ requests per second", r.stdout)
    assert done == ["PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "MSET (10 keys)"]
    st = server.engine.stats()
    assert st["error_replies"] == 0 and st["protocol_errors"] == 0
    assert st["commands"]["ping"] == 2 * n
    for name in ("set", "get", "incr", "mset"):
        assert st["commands"][name] == n
    assert st["commands"]["config"] == 2                # CONFIG GET save, appendonly


def test_redis_benchmark_pipelined(server):
    n = 20000
    r = tool(REDIS_BENCHMARK, "-p", str(server.port), "-t", "set,get", "-n", str(n),
             "-c", "8", "-P", "32", "-r", "5000", "-q")
    assert r.returncode == 0, r.stderr
    st = server.engine.stats()
    assert st["commands"]["set"] == n and st["commands"]["get"] == n
    assert st["error_replies"] == 0 and st["protocol_errors"] == 0
    assert st["keyspace_hits"] + st["keyspace_misses"] == n
