"""Teardown and splice offload against Linux TCP on the TAP testbed, with the NIC inline
and as its own process:

* teardown: the echo server closes after a 60 KiB response and hands the rest of each
  connection (unacknowledged data, FIN, retransmissions, TIME-WAIT) to the NIC, under
  5 % loss each way; every Linux client gets its 60 KiB byte-exact and then the FIN;
* splice through the lb: the same, the head an HTTP request the lb parses and balances,
  with the TAP's offloads on;
* splice: Linux client -> the stack's proxy -> Linux server (both in the peer
  namespace), the forwarded first line rewritten (longer), then 50 MiB each way through
  the NIC only, ISNs just below 2**32 so sequence and acknowledgment numbers wrap,
  SACK and timestamps on (the kernel's defaults), with the TAP's checksum/TSO/LRO
  offloads off (MTU frames, full checksums) and on (64 KiB super-frames with partial
  checksums, translated as they are and cut by the kernel on the way out)."""

import json

import pytest

from acceltcp.testbed.peer import expected_sha256

from .conftest import PEER, PEER_IP, STACK_IP, wait_for

NEEDS_ROOT = True
PLACEMENT = pytest.mark.parametrize("placement", ["inline", "process"])
MiB = 1 << 20


@pytest.mark.parametrize("placement", ["inline", "process", "xdp"])
def test_teardown_offload_60k_response_under_5pct_loss(bed, tmp_path, placement):
    size = 60 << 10
    n = 24
    srv = bed.serve("echo", 7, stats=tmp_path / "serve.json",
                    extra=["--nic", placement, "--offload", "setup,teardown",
                           "--close-after", str(size)])
    bed.loss(5, 5)
    r = bed.peer("short", STACK_IP, 7, "--count", n, "--concurrency", n, "--size", size,
                 "--timeout", 60, "--expect-eof", timeout=600)
    assert r["ok"] == n and r["errors"] == 0, r
    bed.run(["nft", "delete", "table", "netdev", "atcp_loss"], check=False)
    st = srv.stop()
    c = st["counters"]
    # every close was offered to the NIC -- at once, or once the rest of the response
    # fitted the windows -- and the NIC took them all
    assert c["teardown_accepted"] == n and c.get("teardown_ineligible", 0) == 0
    nic = st["nic"]
    s = nic["status"]
    assert s["teardowns_done"] + s["teardown_active"] == n     # TIME-WAITs (60 s) may remain
    # the loss reached the NIC's flows: it handled the peers' segments after the
    # handover, retransmissions included
    assert nic["counters"]["teardown_frames"] > 0
    assert c["conns_reset"] == 0 and c["conns_live"] == 0


@pytest.mark.parametrize("placement, tap_offload", [
    ("inline", False), ("process", False), ("inline", True), ("process", True),
    ("xdp", False),             # XDP: the TAP without offloads (docs/xdp.md)
], ids=["inline-no-tap-offload", "process-no-tap-offload", "inline-tap-offload",
        "process-tap-offload", "xdp"])
def test_splice_50mib_each_way_with_sequence_wrap(bed, tmp_path, placement, tap_offload):
    n = 50 * MiB
    server = bed.popen(PEER + ["duplex", "8081", "--bytes", str(n), "--seed", "2",
                               "--head-lines", "2", "--timeout", "300"])
    server.wait_line(server.p.stdout, lambda line: '"ready"' in line)
    srv = bed.serve("proxy", 8080, offload=tap_offload, stats=tmp_path / "serve.json",
                    extra=["--backend", "%s:8081" % PEER_IP, "--add-line",
                           "X-Spliced-By: acceltcp", "--nic", placement,
                           # the proxy's own handshakes (no setup offload), so both
                           # of its connections start 64 KiB below 2**32: 50 MiB each
                           # way wraps seq and ack in both directions and both rules
                           "--offload", "splice", "--isn", "0xffff0000"])
    cl = bed.peer("duplex", STACK_IP, 8080, "--bytes", n, "--seed", 1, "--head",
                  "GET /object HTTP/1.1\\n", "--timeout", 300, timeout=600)
    server.p.wait(60)
    sv = json.loads(server.p.stdout.read().strip().splitlines()[-1])
    # byte-exact both ways, the rewritten head at the server
    assert cl["errors"] == [] and sv["errors"] == [], (cl, sv, srv.snapshot()["app_stats"])
    assert cl["received"] == n and cl["sha256"] == expected_sha256(2, n)
    assert sv["received"] == n and sv["sha256"] == expected_sha256(1, n)
    assert sv["head"] == "GET /object HTTP/1.1\nX-Spliced-By: acceltcp\n"
    wait_for(lambda: srv.snapshot()["app_stats"]["spliced"] == 1, timeout=30)
    st = srv.stop()
    app = st["app_stats"]
    assert app["spliced"] == 1 and app["splice_failed"] == 0
    rep = app["reports"][0]
    nic = st["nic"]["counters"]
    # what the closure report says the NIC moved is what the NIC translated, and it is
    # (nearly) everything: at most what reached the proxy before the splice was relayed
    # by the host
    assert rep["packets_c"] + rep["packets_s"] == nic["splice_frames"]
    assert rep["bytes_c"] >= n - 4 * MiB and rep["bytes_s"] >= n - 4 * MiB
    assert rep["reason"] == 1                                # both FINs acknowledged
    # the host saw a handful of frames, not 100 MiB
    assert st["counters"]["bytes_in"] < 8 * MiB
    dev = st["device"]
    if tap_offload:
        # super-frames from the kernel, translated whole, cut again by the kernel
        assert dev["rx_gso_frames"] > 100 and dev["tx_tso_frames"] > 100
        assert dev["rx_max_frame"] > 1514
    else:
        assert dev["rx_gso_frames"] == 0 and dev["rx_max_frame"] <= 1514


@PLACEMENT
def test_lb_splice_50mib_each_way_with_tap_offloads(bed, tmp_path, placement):
    """serve lb splices after the request head; then 50 MiB each way through the NIC as
    64 KiB super-frames with partial checksums, seq and ack wrapping."""
    n = 50 * MiB
    head = "POST /up HTTP/1.1\\nHost: backend\\nContent-Length: %d\\n\\n" % n
    server = bed.popen(PEER + ["duplex", "8081", "--bytes", str(n), "--seed", "2",
                               "--head-lines", "4", "--timeout", "300"])
    server.wait_line(server.p.stdout, lambda line: '"ready"' in line)
    srv = bed.serve("lb", 8080, stats=tmp_path / "lb.json",
                    extra=["--backend", "%s:8081" % PEER_IP, "--nic", placement,
                           "--offload", "splice", "--isn", "0xffff0000"])
    cl = bed.peer("duplex", STACK_IP, 8080, "--bytes", n, "--seed", 1, "--head", head,
                  "--timeout", 300, timeout=600)
    server.p.wait(60)
    sv = json.loads(server.p.stdout.read().strip().splitlines()[-1])
    assert cl["errors"] == [] and sv["errors"] == [], (cl, sv, srv.snapshot()["app_stats"])
    assert cl["received"] == n and cl["sha256"] == expected_sha256(2, n)
    assert sv["received"] == n and sv["sha256"] == expected_sha256(1, n)
    assert sv["head"] == "POST /up HTTP/1.1\nHost: backend\nContent-Length: %d\n\n" % n
    wait_for(lambda: srv.snapshot()["app_stats"]["spliced"] == 1, timeout=30)
    st = srv.stop()
    app = st["app_stats"]
    assert app["spliced"] == 1 and app.get("splice_failed", 0) == 0, app
    assert st["nic"]["counters"]["splice_frames"] > 0
    dev = st["device"]
    assert dev["rx_gso_frames"] > 100 and dev["tx_tso_frames"] > 100
    assert st["counters"]["bytes_in"] < 8 * MiB
