"""`acceltcp load` on the TAP testbed: the stack as the client against kernel servers in
the peer namespace -- the kernel echo server (asyncio) and Redis -- with zero errors and
every kv reply checked; a port nobody listens on gives counted refusals, exit 1, and a
hint, not a crash."""

import json
import shutil
import subprocess

import pytest

from .conftest import ACCELTCP, PEER, PEER_IP

NEEDS_ROOT = True
TAP = "atcpload0"          # apart from the other tests' TAP


def _load(bed, tmp_path, *args, timeout=60):
    path = tmp_path / "load.json"
    r = subprocess.run(ACCELTCP + ["load", *map(str, args), "--netns", bed.name, "--tap", TAP,
                                   "--json", str(path)],
                       capture_output=True, text=True, timeout=timeout)
    return r, (json.loads(path.read_text()) if path.exists() else None)


def test_echo_against_the_kernel_echo_server(bed, tmp_path):
    srv = bed.popen(PEER + ["server", "echo", "--port", "7"])
    srv.wait_line(srv.p.stdout, lambda line: '"ready"' in line)
    r, s = _load(bed, tmp_path, "echo", PEER_IP, 7, "--duration", 2, "--interval", 0.5)
    assert r.returncode == 0, r.stdout + r.stderr
    assert s["transactions"] > 500 and s["errors"] == {} and s["mode"] == "tap"
    assert sum(i["transactions"] for i in s["intervals"]) == s["transactions"]
    assert len(s["intervals"]) == 4 and all(i["transactions"] for i in s["intervals"])
    assert s["connections"] >= s["transactions"]              # one per transaction
    c = s["client"]
    assert c["conns_reset"] == 0 and c["conns_refused"] == 0 and c["cpu_us_per_txn"] > 0
    assert "summary: " in r.stdout and '"event": "ready"' in r.stderr


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
@pytest.mark.parametrize("per_conn", [1, 0], ids=["short-lived", "persistent"])
def test_kv_usr_against_redis(bed, tmp_path, per_conn):
    srv = bed.popen(["redis-server", "--port", "6379", "--bind", "0.0.0.0", "--save", "",
                     "--appendonly", "no", "--protected-mode", "no"])
    srv.wait_line(srv.p.stdout, lambda line: "Ready to accept connections" in line)
    r, s = _load(bed, tmp_path, "kv", PEER_IP, "--duration", 1.5, "--per-conn", per_conn,
                 "--keys", 2000)
    assert r.returncode == 0, r.stdout + r.stderr
    kv = s["kv"]
    assert s["errors"] == {} and s["transactions"] > 500
    assert kv["gets"] + kv["sets"] == s["transactions"] and kv["hits"] == kv["gets"]
    if per_conn == 0:
        assert s["connections"] == 64 + 1                     # + the populate connection


def test_refused_is_counted_not_fatal(bed, tmp_path):
    r, s = _load(bed, tmp_path, "echo", PEER_IP, 9, "--duration", 1)
    assert r.returncode == 1, r.stdout + r.stderr
    assert s["transactions"] == 0 and s["errors"]["refused"] > 100
    assert set(s["errors"]) == {"refused"}
    assert "every connection was refused" in r.stderr and "Traceback" not in r.stderr
