"""The stack on a TAP against real Linux TCP (kernel sockets, socat, nc), offloads on
and off: bulk echo, short-lived connections, the stack as client, kernel-side loss."""

import hashlib
import json
import os

import pytest

from acceltcp.testbed.peer import expected_sha256

from .conftest import MiB, PEER, PEER_IP, STACK_IP, wait_for

NEEDS_ROOT = True

OFFLOAD = pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
ETH_MTU_FRAME = 1514


def _check_device(st, offload):
    dev = st["device"]
    if offload:
        # LRO: the kernel handed us super-frames; TSO: we handed it some; the TCP
        # checksums of the kernel's frames were trusted, not recomputed.
        assert dev["rx_gso_frames"] > 0 and dev["rx_max_frame"] > ETH_MTU_FRAME
        assert dev["tx_tso_frames"] > 0 and dev["tx_max_frame"] > ETH_MTU_FRAME
        assert st["csum_trusted"] > 0 and dev["tx_csum_partial"] > 0
    else:
        assert dev["rx_gso_frames"] == dev["tx_tso_frames"] == st["csum_trusted"] == 0
        assert dev["rx_max_frame"] <= ETH_MTU_FRAME and dev["tx_max_frame"] <= ETH_MTU_FRAME
        assert dev["tx_csum_partial"] == 0


@OFFLOAD
def test_kernel_client_echo_100mib_one_connection(bed, tmp_path, offload):
    srv = bed.serve("echo", 7, offload=offload, stats=tmp_path / "serve.json")
    r = bed.peer("echo-client", STACK_IP, 7, "--bytes", 100 * MiB, "--seed", 11)
    assert r["errors"] == []
    assert r["received"] == r["sent"] == 100 * MiB
    # byte-exact, and the same bytes with offloads on and off
    assert r["sha256_sent"] == r["sha256_received"] == expected_sha256(11, 100 * MiB)
    st = wait_for(lambda: (s := srv.snapshot())["conns_closed"] == 1 and s)
    assert st, "the connection did not close"
    st = srv.stop()
    assert st["conns_accepted"] == 1 and st["conns_closed"] == 1 and st["conns_live"] == 0
    assert st["tcp"]["bytes_in"] == st["tcp"]["bytes_out"] == 100 * MiB
    assert st["app_stats"]["bytes_echoed"] == 100 * MiB
    assert st["drops"] == {}
    assert st["bytes_in"] >= 100 * MiB and st["frames_in"] > 0 and st["frames_out"] > 0
    _check_device(st, offload)


@OFFLOAD
def test_2000_short_lived_64b_connections(bed, tmp_path, offload):
    srv = bed.serve("echo", 7, offload=offload, stats=tmp_path / "serve.json")
    r = bed.peer("short", STACK_IP, 7, "--count", 2000, "--concurrency", 32, "--size", 64)
    assert r["ok"] == 2000, r
    assert r["errors"] == 0, r
    st = wait_for(lambda: (s := srv.snapshot())["conns_closed"] == 2000 and s)
    assert st, "not every connection closed"
    st = srv.stop()
    assert st["conns_accepted"] == 2000
    assert st["conns_closed"] == 2000 and st["conns_live"] == 0
    assert st["tcp"]["bytes_in"] == st["tcp"]["bytes_out"] == 2000 * 64
    assert st["drops"] == {}


def test_socat_and_nc_against_the_echo_server(bed, tmp_path):
    srv = bed.serve("echo", 7, stats=tmp_path / "serve.json")
    data = os.urandom(3 * MiB + 7)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    for name, cmd in (
            ("socat", "socat -t 10 -T 30 - TCP:%s:7 < %s > %s"),
            ("nc", "nc -N -w 30 %s 7 < %s > %s")):
        out = tmp_path / ("out-%s.bin" % name)
        bed.run(["bash", "-c", cmd % (STACK_IP, src, out)], timeout=60)
        assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest(), name
    # short-lived connections from a real tool, one process each
    r = bed.run(["bash", "-c", "for i in $(seq 50); do echo ping-$i | socat -t 5 - TCP:%s:7 "
                 "|| exit 1; done" % STACK_IP], timeout=60)
    assert r.stdout.split() == ["ping-%d" % i for i in range(1, 51)]
    st = srv.stop()
    assert st["conns_accepted"] == 52


@OFFLOAD
def test_stack_client_downloads_100mib_from_kernel_server(bed, tmp_path, offload):
    n = 100 * MiB
    server = bed.popen(PEER + ["serve-bytes", "--port", "5001", "--bytes", str(n),
                               "--seed", "5"])
    server.wait_line(server.p.stdout, lambda line: "ready" in line)
    stats = tmp_path / "connect.json"
    rc, out, err = bed.connect(PEER_IP, 5001, "-n", "--sha256", offload=offload, stats=stats)
    assert rc == 0, err
    st = json.loads(stats.read_text())
    res = st["result"]
    assert res["error"] is None
    assert res["bytes_received"] == n
    assert res["sha256_received"] == expected_sha256(5, n)
    server.p.wait(30)
    served = json.loads(server.p.stdout.read().strip().splitlines()[-1])["served"]
    assert served[0]["sha256"] == res["sha256_received"]
    assert st["conns_opened"] == 1 and st["drops"] == {}
    dev = st["device"]
    if offload:
        assert dev["rx_gso_frames"] > 0 and st["csum_trusted"] > 0
    else:
        assert dev["rx_gso_frames"] == 0 and dev["rx_max_frame"] <= ETH_MTU_FRAME


def test_a_new_stack_process_passes_the_kernels_time_wait(bed, tmp_path):
    """Successive `acceltcp connect` processes from one local port to a kernel server that
    closes first: each SYN meets the server's TIME-WAIT of the one before and must be
    taken at once (RFC 6191: its TSval above the old connection's), not answered by the
    TIME-WAIT's ACK and retransmitted. They number alike because every stack on the
    machine keys its ISNs and TS clocks with one secret (serve/secret.py); a secret per
    process passed each reuse about half of the time."""
    n = 4
    server = bed.popen(PEER + ["serve-bytes", "--port", "5004", "--bytes", "1000",
                               "--count", str(n + 1)])
    server.wait_line(server.p.stdout, lambda line: "ready" in line)
    for i in range(n + 1):
        stats = tmp_path / ("connect%d.json" % i)
        rc, out, err = bed.connect(PEER_IP, 5004, "-n", "--local-port", "40404",
                                   stats=stats)
        assert rc == 0, err
        st = json.loads(stats.read_text())
        assert st["result"]["bytes_received"] == 1000
        assert st["conns_opened"] == 1 and st["retransmits"] == 0, (i, st["counters"])
    server.p.wait(30)
    served = json.loads(server.p.stdout.read().strip().splitlines()[-1])["served"]
    assert [s["peer"] for s in served] == ["%s:40404" % STACK_IP] * (n + 1)


@OFFLOAD
def test_stack_client_pipes_a_file_through_socat_echo(bed, tmp_path, offload):
    """`acceltcp connect` as nc: stdin to a kernel echo server (socat), echo to -o."""
    echo = bed.popen(["socat", "TCP-LISTEN:7777,reuseaddr", "EXEC:cat"])
    assert wait_for(lambda: ":7777" in bed.run(["ss", "-ltn"]).stdout)
    data = os.urandom(5 * MiB + 3)
    src, dst = tmp_path / "in.bin", tmp_path / "out.bin"
    src.write_bytes(data)
    rc, out, err = bed.connect(PEER_IP, 7777, "-o", str(dst), offload=offload, stdin=src,
                               stats=tmp_path / "c.json")
    assert rc == 0, err
    assert dst.read_bytes() == data
    st = json.loads((tmp_path / "c.json").read_text())
    assert st["result"]["bytes_sent"] == st["result"]["bytes_received"] == len(data)
    echo.stop()


@OFFLOAD
def test_20mib_echo_under_2pct_kernel_side_loss(bed, tmp_path, offload):
    from acceltcp.testbed import netns as tb
    srv = bed.serve("echo", 7, offload=offload, stats=tmp_path / "serve.json")
    bed.loss(2)
    r = bed.peer("echo-client", STACK_IP, 7, "--bytes", 20 * MiB, "--seed", 3, timeout=240)
    dropped = tb.loss_counters(bed.name)
    st = srv.stop()
    assert r["errors"] == [] and r["received"] == 20 * MiB
    assert r["sha256_received"] == r["sha256_sent"] == expected_sha256(3, 20 * MiB)
    # the kernel really lost frames both ways ...
    assert dropped.get("rx", 0) > 0 and dropped.get("tx", 0) > 0, dropped
    # ... the stack repaired its own losses with fast retransmits ...
    assert st["fast_retransmits"] > 0 and st["retransmits"] >= st["fast_retransmits"]
    # ... and saw holes in what the kernel sent (reassembly, SACK), which it filled.
    assert st["tcp"].get("ooo_segments", 0) > 0
    assert st["tcp"]["bytes_in"] == 20 * MiB
