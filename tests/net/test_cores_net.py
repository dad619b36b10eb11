"""serve --cores N against Linux clients: one stack per core on one multi-queue TAP, the
kernel's flow hash spreading the connections (serve/cores.py)."""

import csv
import io
import subprocess

import pytest

from .conftest import ACCELTCP, STACK_IP

NEEDS_ROOT = True


def _per_core(st, key):
    return [c[key] for c in st["cores"]]


@pytest.mark.parametrize("nic", ["none", "inline"])
def test_two_cores_share_the_connections(bed, tmp_path, nic):
    """400 short-lived echoes, 16 at a time: both stacks serve some, every one complete;
    with the inline NIC each core's own NIC answers the handshakes of its connections
    and takes their teardowns (a cookie ACK reaches the core whose NIC sent the cookie)."""
    n = 400
    extra = ["--cores", "2", "--close-after", "64"]
    if nic != "none":
        extra += ["--nic", nic, "--offload", "setup,teardown"]
    srv = bed.serve("echo", 7, stats=tmp_path / "echo.json", extra=extra)
    r = bed.peer("short", STACK_IP, 7, "--count", n, "--concurrency", 16, "--size", 64,
                 "--timeout", 30, "--expect-eof")
    assert r["ok"] == n and r["errors"] == 0, r
    st = srv.stop()
    per = _per_core(st, "conns_accepted")
    assert len(per) == 2 and min(per) > 0 and sum(per) == st["conns_accepted"] == n
    assert all(c["cpu"]["stack_s"] > 0 for c in st["cores"])
    c = st["counters"]
    assert c.get("conns_reset", 0) == 0
    if nic != "none":
        assert c["cookie_conns"] == n and c.get("syns_received", 0) == 0
        assert st["nic"]["counters"]["cookie_ack_bad"] == 0
        assert c["teardown_accepted"] == n


def test_redis_benchmark_on_two_cores(bed, tmp_path):
    srv = bed.serve("kv", 6380, stats=tmp_path / "kv.json", extra=["--cores", "2"])
    for keepalive in ("0", "1"):
        r = bed.run(["redis-benchmark", "-h", STACK_IP, "-p", "6380", "-t", "set,get",
                     "-n", "4000", "-c", "16", "-k", keepalive, "--csv"], timeout=120)
        assert "error" not in (r.stdout + r.stderr).lower(), r.stderr[-2000:]
        rows = list(csv.reader(io.StringIO(r.stdout)))
        assert {row[0] for row in rows[1:]} >= {"SET", "GET"}
    st = srv.stop()
    assert st["app_stats"]["commands_processed"] >= 4 * 4000
    assert min(_per_core(st, "conns_accepted")) > 0


def test_cores_refuse_what_has_no_queue_per_stack(bed):
    for extra in (["--nic", "process"], ["--nic", "xdp"]):
        r = subprocess.run(ACCELTCP + ["serve", "echo", "--netns", bed.name, "--cores", "2"]
                           + extra, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "--cores needs --nic none or inline" in r.stderr
