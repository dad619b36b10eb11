"""The live XDP placement (`serve --nic xdp`, docs/placements.md, docs/xdp.md) against
Linux TCP in the peer namespace: the namespace's interface is a veth whose root end
carries atcp_wire, the stack's TAP carries atcp_host, frames are redirected between
them, the control side is in serve. Handshakes completed by XDP's cookies (the stack
sees no SYN), the host fallback without timestamps, short-lived and bulk echo
byte-exact, 100,000 forged cookie ACKs dropped in XDP, a request in two segments
through the handed-over table, every app, tables of 8 entries under 1,000 connections
with every teardown fallback counted, the one-line error without the object, and
nothing left behind after serve exits -- by SIGTERM, or SIGKILL and `testbed down` --
nor after failing tests (a pytest session of its own)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from acceltcp.testbed import netns as tb
from acceltcp.testbed.peer import expected_sha256

from .conftest import ACCELTCP, PEER, PEER_IP, STACK_IP, VENV_BIN, wait_for
from .test_nic_setup_segments import TWO_SEGMENTS

NEEDS_ROOT = True
FLOOD = [sys.executable, "-m", "acceltcp.testbed.synflood"]
PORT = 7
MiB = 1 << 20


@pytest.fixture(scope="module", autouse=True)
def xdp_obj(xdp_built):
    """Every test here needs the object (conftest.xdp_built builds it)."""


def _serve(bed, tmp_path, app="echo", port=PORT, offload="setup", extra=()):
    return bed.serve(app, port, stats=tmp_path / ("%s.json" % app),
                     extra=["--nic", "xdp", "--offload", offload] + list(extra))


def _settled(srv, closed):
    st = wait_for(lambda: (s := srv.snapshot())["conns_closed"] >= closed
                  and s["conns_live"] == 0 and s, timeout=20)
    assert st, "connections did not all close"
    return st


def _bpftool_ids(kind):
    r = subprocess.run(["bpftool", "-j", kind, "show"], capture_output=True, text=True)
    return {o["id"] for o in json.loads(r.stdout or "[]")}


def _gone(nic):
    """What the XDP placement of this run made: -> the pieces still there (empty: none).
    Program and map ids are never reused while the kernel runs; the kernel frees them
    after an RCU grace period, so this waits a little."""
    x = nic["xdp"]
    progs, maps = set(x["prog_ids"].values()), set(x["map_ids"].values())

    def left():
        out = []
        out += ["prog %d" % i for i in progs & _bpftool_ids("prog")]
        out += ["map %d" % i for i in maps & _bpftool_ids("map")]
        if os.path.exists(x["pin_dir"]):
            out.append(x["pin_dir"])
        for d, i in ((x["host_port"], x["host_ifindex"]), (x["wire_port"], x["wire_ifindex"])):
            try:                         # the same name may be a later serve's device
                with open("/sys/class/net/%s/ifindex" % d) as f:
                    if int(f.read()) == i:
                        out.append(d)
            except OSError:
                pass
        return out
    wait_for(lambda: not left(), timeout=30, interval=0.2)
    return left()


def test_cookies_short_lived_echo_and_nothing_left(bed, tmp_path):
    """1,000 short-lived 64-byte echo transactions, every handshake answered and
    completed in XDP: the stack sees no SYN, only 0x090A frames; every close handed to
    the XDP NIC's teardown (0x090B), taken by atcp_host itself, and ended there."""
    n = 1000
    srv = _serve(bed, tmp_path, offload="setup,teardown")
    r = bed.peer("short", STACK_IP, PORT, "--count", n, "--concurrency", 16, "--size", 64,
                 "--timeout", 20)
    assert r["ok"] == n and r["errors"] == 0, r
    _settled(srv, n)
    st = srv.stop()
    nic = st["nic"]
    c = nic["counters"]
    assert st["placement"] == nic["placement"] == "xdp" and nic["alive"]
    assert c["syn_cookies_sent"] >= n and c["cookie_ack_ok"] >= n
    assert c["syn_to_host"] == 0 and c["cookie_ack_bad"] == 0 and c["drops"] == 0, c
    assert c["handed_inserted"] == n and c["listens"] == 1
    # every close's handover (a 64-byte response: one frame) was taken in XDP itself
    xc = dict(nic["xdp"]["counters"])
    assert xc.pop("xdp_td_accepted") == n and set(xc.values()) == {0}, xc
    assert nic["xdp"]["handovers_to_tap"] == n and nic["xdp"]["handovers_back"] == 0
    assert nic["xdp"]["clock_ticks"] > 0
    assert st["counters"]["cookie_conns"] == st["conns_accepted"] == n
    assert st["counters"].get("syns_received", 0) == 0
    assert st["tcp"]["bytes_in"] == st["tcp"]["bytes_out"] == n * 64
    assert st["drops"] == {}
    # the host's StatusRequest was answered from the maps' counters
    assert c["status_reports"] >= 1 and nic["status"]["listeners"] == 1
    # the teardown too: every connection handed over and ended on the NIC
    assert st["offloads"]["used"] == ["setup", "teardown"]
    assert st["counters"]["teardown_accepted"] == n and c["refused_teardown"] == 0
    assert nic["status"]["teardowns_done"] + nic["status"]["teardown_active"] == n
    assert c["teardown_frames"] >= n              # the clients' FINs/ACKs, handled in XDP
    # no TAP offloads on this placement: redirects lose partial checksums and GSO
    assert st["offload"] is False and st["device"]["rx_gso_frames"] == 0
    assert _gone(nic) == []


def test_clients_without_timestamps_go_to_the_host(bed, tmp_path, no_timestamps):
    n = 200
    srv = _serve(bed, tmp_path)
    r = bed.peer("short", STACK_IP, PORT, "--count", n, "--concurrency", 16, "--size", 64,
                 "--timeout", 20)
    assert r["ok"] == n and r["errors"] == 0, r
    _settled(srv, n)
    st = srv.stop()
    c = st["nic"]["counters"]
    assert c["syn_to_host"] >= n and c["syn_cookies_sent"] == 0 and c["cookie_ack_ok"] == 0
    assert st["counters"]["cookie_conns"] == 0
    assert st["conns_accepted"] == st["counters"]["syns_received"] == n
    assert st["tcp"]["bytes_in"] == st["tcp"]["bytes_out"] == n * 64
    assert st["drops"] == {}


def test_20mib_echo_one_connection(bed, tmp_path):
    n = 20 * MiB
    srv = _serve(bed, tmp_path)
    r = bed.peer("echo-client", STACK_IP, PORT, "--bytes", n, "--seed", 5, timeout=240)
    assert r["errors"] == [] and r["received"] == r["sent"] == n
    assert r["sha256_sent"] == r["sha256_received"] == expected_sha256(5, n)
    st = _settled(srv, 1)
    st = srv.stop()
    assert st["counters"]["cookie_conns"] == st["conns_accepted"] == 1
    assert st["app_stats"]["bytes_echoed"] == n
    # MTU-sized frames both ways: the veth and the TAP carry no super-frames here
    # MTU frames both ways; up to the host also a 0x090A around a full-size segment
    # (the request riding on the handshake: 16 bytes of NewConnection header more)
    assert st["device"]["rx_max_frame"] <= 1514 + 16 and st["device"]["tx_max_frame"] <= 1514
    assert st["nic"]["counters"]["passthrough_wire"] > 0


def test_forged_cookie_acks_are_dropped_in_xdp(bed, tmp_path):
    """100,000 ACKs guessing at a cookie (random seq, ack and TSecr with the MARK bit,
    spoofed sources: testbed.synflood forge, prebuilt frames on an AF_PACKET socket,
    unpaced): every one checked and dropped in XDP, none accepted, not one TCP frame at
    the stack; real clients before and after are served through the cookies."""
    n = 100_000
    srv = _serve(bed, tmp_path)
    r = bed.peer("short", STACK_IP, PORT, "--count", 20, "--concurrency", 4, "--size", 64,
                 "--timeout", 20)
    assert r["ok"] == 20
    before = _settled(srv, 20)
    r = bed.run(FLOOD + ["forge", STACK_IP, str(PORT), "--count", str(n), "--rate", "1e7",
                         "--seed", "7"], timeout=120)
    r = json.loads(r.stdout.strip().splitlines()[-1])
    assert r["sent"] == n and r["ts"], r
    st = wait_for(lambda: (s := srv.snapshot())["nic"]["counters"]["cookie_ack_bad"] >= n
                  and s, timeout=15)
    assert st, "XDP did not see the forged ACKs"
    c, c0 = st["nic"]["counters"], before["nic"]["counters"]
    assert c["cookie_ack_bad"] == c["drop_cookie_bad"] == c["drops"] == n, c
    assert c["cookie_ack_ok"] == c0["cookie_ack_ok"] and c["rst_sent"] == 0
    assert c["passthrough_host"] == c0["passthrough_host"]
    assert c["handed_inserted"] == c0["handed_inserted"]
    for k in ("conns_accepted", "cookie_conns", "rsts_sent"):
        assert st["counters"][k] == before["counters"][k], k
    tcp_in = [s["counters"]["frames_in"] - s["counters"].get("arp_in", 0)
              for s in (before, st)]
    assert tcp_in[0] == tcp_in[1], "a forged ACK reached the stack"
    assert set(st["nic"]["xdp"]["counters"].values()) == {0}, st["nic"]["xdp"]["counters"]
    # a real client right after is served through the cookies as before
    r = bed.peer("short", STACK_IP, PORT, "--count", 20, "--concurrency", 4, "--size", 64,
                 "--timeout", 20)
    assert r["ok"] == 20 and r["errors"] == 0, r
    _settled(srv, 40)
    st = srv.stop()
    assert st["counters"]["cookie_conns"] == st["conns_accepted"] == 40
    assert st["nic"]["counters"]["cookie_ack_bad"] == n


def test_request_in_two_segments_through_the_handed_table(bed, tmp_path):
    n, half = 30, 100
    srv = _serve(bed, tmp_path)
    r = bed.run([str(VENV_BIN / "python"), "-c", TWO_SEGMENTS, STACK_IP, str(PORT), str(n),
                 str(half), str(srv.proc.pid)], timeout=120)
    r = json.loads(r.stdout.strip().splitlines()[-1])
    assert r["errors"] == [] and r["early"] == 0, r
    _settled(srv, n)
    st = srv.stop()
    c = st["nic"]["counters"]
    assert c["cookie_ack_bad"] == 0 and c["drops"] == 0, c
    assert c["handed_ack_to_host"] >= n and st["counters"]["cookie_conns"] == n
    assert st["tcp"]["bytes_in"] == st["tcp"]["bytes_out"] == n * 2 * half
    assert st["tcp"].get("retransmits", 0) == 0
    assert r["conns_retrans"] <= n // 4, r


CONNECT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.close()
print("ok")
"""


@pytest.mark.parametrize("app", ["sink", "kv", "proxy", "lb"])
def test_every_app_serves_with_xdp(bed, tmp_path, app):
    """echo is above; the others start on the XDP NIC and a Linux connect() completes:
    on a cookie, or through the host for sink (it offloads nothing: no listener in the
    maps, its SYNs go up). proxy and lb get a backend (a kernel echo server) they never
    need here."""
    extra = []
    if app in ("proxy", "lb"):
        bk = bed.popen(PEER + ["server", "echo", "--port", "9009"])
        bk.wait_line(bk.p.stdout, lambda line: "ready" in line)
        extra = ["--backend", "%s:9009" % PEER_IP]
    port = 8080
    offload = "setup,splice" if app in ("proxy", "lb") else "setup"
    srv = _serve(bed, tmp_path, app, port, offload, extra)
    assert bed.run([str(VENV_BIN / "python"), "-c", CONNECT, STACK_IP,
                    str(port)]).stdout.strip() == "ok"
    st = wait_for(lambda: (s := srv.snapshot())["conns_accepted"] >= 1 and s)
    assert st, "no connection"
    st = srv.stop()
    if app == "sink":
        assert st["nic"]["counters"]["passthrough_host"] >= 1 and st["nic"]["status"][
            "listeners"] == 0
        assert st["counters"]["syns_received"] == 1
    else:
        assert st["counters"]["cookie_conns"] == 1
        assert st["counters"].get("syns_received", 0) == 0
    if app in ("proxy", "lb"):
        assert "splice" not in st["offloads"].get("not_used", {})     # the XDP NIC splices


def test_missing_object_is_one_line_and_leaves_nothing(bed):
    env = dict(os.environ, ACCELTCP_XDP_OBJ="/nonexistent/nic.bpf.o")
    r = subprocess.run(ACCELTCP + ["serve", "echo", "--port", "7", "--netns", bed.name,
                                   "--nic", "xdp"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "XDP: /nonexistent/nic.bpf.o not built (make xdp" in \
        lines[0], r.stderr
    host, wire = tb.xdp_names(bed.name)
    assert not os.path.exists("/sys/class/net/" + wire)
    assert not os.path.exists("/sys/class/net/" + host)
    assert "atcp0" not in bed.run(["ip", "-br", "link"]).stdout


def _kill(srv):
    st = srv.snapshot()
    srv.proc.p.kill()
    srv.proc.p.wait(10)
    x = st["nic"]["xdp"]
    assert os.path.exists("/sys/class/net/" + x["wire_port"])
    assert os.path.exists(x["pin_dir"])
    return st["nic"]


def test_killed_serve_is_cleaned_up(bed, tmp_path):
    """SIGKILL: no close() runs. The TAP goes with its fd; the veth (atcp_wire still on
    its root end) and the pins stay. The next serve in the namespace removes them (the
    veth's ifalias names a pid that is gone) and serves; after another SIGKILL,
    `acceltcp testbed down` removes them."""
    srv = _serve(bed, tmp_path)
    nic = _kill(srv)
    srv = _serve(bed, tmp_path)
    assert _gone(nic) == []
    r = bed.peer("short", STACK_IP, PORT, "--count", 10, "--concurrency", 2, "--size", 64,
                 "--timeout", 20)
    assert r["ok"] == 10
    nic = _kill(srv)
    bed.down()
    try:
        assert _gone(nic) == []
    finally:
        bed.up()


FAILING = """
import json, os, signal
from tests.net.conftest import bed, testbed      # noqa: F401 -- the fixtures

def _serve(bed, tmp_path):
    srv = bed.serve("echo", 7, stats=tmp_path / "s.json",
                    extra=["--nic", "xdp", "--offload", "setup,teardown"])
    x = srv.snapshot()["nic"]["xdp"]
    print("XDP " + json.dumps(dict(x, pid=srv.proc.pid, netns=bed.name)), flush=True)
    return srv

def test_fails_with_serve_running(bed, tmp_path):
    _serve(bed, tmp_path)
    assert False, "a failing test"

def test_fails_after_serve_was_killed(bed, tmp_path):
    srv = _serve(bed, tmp_path)
    srv.proc.p.kill()
    srv.proc.p.wait(10)
    assert False, "a failing test"

def test_fails_with_serve_hung(bed, tmp_path):
    bed.stop_timeout = 1.0
    srv = _serve(bed, tmp_path)
    os.kill(srv.proc.pid, signal.SIGSTOP)         # SIGTERM cannot end it now
    raise RuntimeError("a failing test")
"""


def test_nothing_left_after_failing_tests(tmp_path):
    """A pytest session of its own (its own namespace) whose three tests fail with
    serve --nic xdp running, killed, and hung (SIGSTOP: SIGTERM cannot end it): the
    fixtures end the serves and remove what a killed one left; afterwards none of their
    programs, maps, pin directories or devices, nor the session's namespace, is there.
    The session reports the three failures and no teardown error (its own check of the
    same, conftest.Testbed.end_procs, would be one)."""
    root = Path(__file__).resolve().parents[2]
    (tmp_path / "test_failing.py").write_text(FAILING)
    env = dict(os.environ, PYTHONPATH="%s:%s" % (root / "src", root))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                        "--rootdir", str(tmp_path), str(tmp_path / "test_failing.py")],
                       cwd=str(tmp_path), env=env, capture_output=True, text=True,
                       timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "3 failed" in out and "error" not in \
        out.splitlines()[-1], out[-3000:]
    runs = [json.loads(line.split("XDP ", 1)[1]) for line in r.stdout.splitlines()
            if "XDP {" in line]
    assert len(runs) == 3, out[-3000:]
    progs = {i for x in runs for i in x["prog_ids"].values()}
    maps = {i for x in runs for i in x["map_ids"].values()}
    assert wait_for(lambda: not (progs & _bpftool_ids("prog") or maps & _bpftool_ids("map")),
                    timeout=30, interval=0.2), "programs or maps left"
    for x in runs:
        assert not os.path.exists(x["pin_dir"])
        for d in (x["host_port"], x["wire_port"]):
            assert not os.path.exists("/sys/class/net/" + d), d
        assert not tb.exists(x["netns"]) and not tb.exists(x["netns"] + "-ref")


def test_a_live_serve_is_not_disturbed(bed, tmp_path):
    """A second serve --nic xdp in the same namespace while the first runs: refused with
    one line, the first's devices untouched."""
    srv = _serve(bed, tmp_path)
    r = subprocess.run(ACCELTCP + ["serve", "echo", "--port", "8", "--netns", bed.name,
                                   "--nic", "xdp"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "already has an interface" in r.stderr, r.stderr
    r = bed.peer("short", STACK_IP, PORT, "--count", 10, "--concurrency", 2, "--size", 64,
                 "--timeout", 20)
    assert r["ok"] == 10
    st = srv.stop()
    assert _gone(st["nic"]) == []


def test_handovers_xdp_does_not_take_come_back_to_the_control_side(bed, tmp_path):
    """1,470-byte responses, the server closing: each close's 0x090B fits the TAP's MTU,
    so it goes through atcp_host, but its payload is more than one MSS -- two frames --
    so atcp_host sends it back by XDP_TX to the process that wrote it, whose control
    side takes the handover (both segments, the FIN): every transaction complete, every
    handover accounted for."""
    n, size = 100, 1470
    srv = _serve(bed, tmp_path, offload="setup,teardown", extra=["--close-after", str(size)])
    r = bed.peer("short", STACK_IP, PORT, "--count", n, "--concurrency", 8, "--size", size,
                 "--timeout", 30, "--expect-eof")
    assert r["ok"] == n and r["errors"] == 0, r
    st = _settled(srv, n)
    srv.stop()
    c, x = st["counters"], st["nic"]["xdp"]
    assert x["handovers_back"] == x["handovers_to_tap"] == n
    assert x["counters"]["xdp_td_accepted"] == 0 and x["counters"]["xdp_to_control"] == n
    assert c["teardown_accepted"] == n and c["conns_reset"] == 0


def test_capacity_8_tables_under_1000_connections(bed, tmp_path):
    """1,000 short-lived echo transactions, 16 at a time, through XDP's cookies and
    teardown with a listener table, a handed-over table and a teardown flow table of 8
    entries each. The server closes first, so each flow the NIC takes stays in its
    TIME-WAIT (60 s, longer than the test): the teardown table is full after the first
    8. Every connection is served byte-exact; every close the NIC does not take is done
    by the host and counted -- before the offer (the host's own estimate of the NIC's
    table from its StatusReport: teardown_nic_full) or by the NIC's refusal
    (refused_table_full on both sides) -- and the host holds those TIME-WAITs."""
    n, cap = 1000, 8
    srv = _serve(bed, tmp_path, offload="setup,teardown",
                 extra=["--close-after", "64", "--nic-listeners", str(cap),
                        "--nic-handed-flows", str(cap), "--nic-teardown-flows", str(cap)])
    r = bed.peer("short", STACK_IP, PORT, "--count", n, "--concurrency", 16, "--size", 64,
                 "--timeout", 20, "--expect-eof")
    assert r["ok"] == n and r["errors"] == 0, r
    _settled(srv, n)
    st = srv.stop()
    c, nic = st["counters"], st["nic"]
    x, nc, s = nic["xdp"], nic["counters"], nic["status"]
    td = x["teardown_counters"]
    # the tables had the sizes asked for
    assert (s["listener_capacity"], s["teardown_capacity"], x["handed_capacity"]) == \
        (cap, cap, cap) and nic["ignored_kwargs"] == []
    # every connection: a cookie in XDP, served byte-exact, closed
    assert c["cookie_conns"] == st["conns_accepted"] == st["conns_closed"] == n
    assert c.get("syns_received", 0) == 0 and nc["syn_cookies_sent"] == n
    assert st["app_stats"]["bytes_echoed"] == st["tcp"]["bytes_in"] == n * 64
    # the NIC took 8 teardowns and holds them in TIME-WAIT ...
    assert c["teardown_accepted"] == td["accepted"] == s["teardown_active"] == cap
    assert td["time_wait_entered"] == cap and s["teardowns_done"] == 0
    # ... every other close is counted as a fallback and was done by the host
    refused = sum(v for k, v in c.items() if k.startswith("teardown_refused_"))
    assert refused == c.get("teardown_refused_table_full", 0) == td["refused_table_full"]
    assert c["teardown_offered"] == c["teardown_accepted"] + refused
    assert c["teardown_offered"] + c["teardown_nic_full"] + \
        c.get("teardown_ineligible", 0) == n
    assert c["conns_time_wait"] == n - cap
    # the handed-over table: every cookie connection entered it; never more than 8 held
    assert nc["handed_inserted"] >= n and x["handed_entries"] <= cap
    # nothing dropped anywhere
    assert nc["drops"] == 0 and nc["cookie_ack_bad"] == 0 and st["drops"] == {}
    # XDP took the 8 handovers itself; the refused ones came back to the control side
    xc = dict(x["counters"])
    assert xc.pop("xdp_td_accepted") == cap and xc.pop("xdp_to_control") == refused
    assert set(xc.values()) == {0}, x["counters"]
    assert _gone(nic) == []


def test_handed_count_under_teardown_handovers(bed, tmp_path):
    """5,000 short-lived connections, 32 at a time, each handed to XDP's teardown (its
    handed-over entry removed by the program or, for a handover it passes up, by the
    control side -- counted apart, atcp_handed_ctl, never by a read-modify-write of the
    programs' counter): the table (65,536) never fills, so nothing is evicted, the counts
    add up and the IPv4 ident only moves forward."""
    n = 5000
    srv = _serve(bed, tmp_path, offload="setup,teardown")
    r = bed.peer("short", STACK_IP, PORT, "--count", n, "--concurrency", 32, "--size", 64,
                 "--timeout", 20)
    assert r["ok"] == n and r["errors"] == 0, r
    _settled(srv, n)
    st = srv.stop()
    c = st["nic"]["counters"]
    assert st["counters"]["teardown_accepted"] == n
    assert c["handed_evicted"] == 0, c
    assert c["handed_inserted"] - c["handed_removed"] == st["nic"]["xdp"]["handed_entries"]
