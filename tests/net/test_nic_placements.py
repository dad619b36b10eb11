"""The NIC dataplane in front of the stack on a real TAP, inline (in the stack's process)
and as its own process (docs/placements.md), against Linux TCP in the peer namespace:
handshakes completed by SYN cookies, the host fallback for clients without timestamps,
forged cookie ACKs, and the host taking over when the NIC process is killed or hangs."""

import collections
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from acceltcp.io.pcap import read_pcap
from acceltcp.testbed.faultload import outage

from ..accounting import check_accounting
from .conftest import STACK_IP, VENV_BIN, wait_for

NEEDS_ROOT = True

PLACEMENT = pytest.mark.parametrize("placement", ["inline", "process"])
PORT = 7
N = 200


def _serve(bed, tmp_path, placement, pcap=False):
    extra = ["--nic", placement, "--offload", "setup"]
    if pcap:
        extra += ["--pcap", str(tmp_path / "serve.pcap")]
    return bed.serve("echo", PORT, stats=tmp_path / "serve.json", extra=extra)


def _short(bed, count, concurrency=16):
    r = bed.peer("short", STACK_IP, PORT, "--count", count, "--concurrency", concurrency,
                 "--size", 64, "--timeout", 20)
    assert r["ok"] == count and r["errors"] == 0, r
    return r


def _settled(srv, closed):
    st = wait_for(lambda: (s := srv.snapshot())["conns_closed"] >= closed
                  and s["conns_live"] == 0 and s)
    assert st, "connections did not all close"
    return st


def _frames(pcap):
    """(ethertype, frame) of every record; the whole file must parse."""
    return [((f[12] << 8) | f[13], f) for _, f in read_pcap(pcap)]


def _tcp_flags(frame):
    return frame[47] if len(frame) >= 54 and frame[12:14] == b"\x08\x00" else None


@PLACEMENT
def test_linux_client_handshakes_complete_on_the_nic(bed, tmp_path, placement):
    srv = _serve(bed, tmp_path, placement, pcap=True)
    _short(bed, N)
    _settled(srv, N)
    st = srv.stop()
    nic = st["nic"]
    c = nic["counters"]
    assert nic["placement"] == placement and nic["alive"] and st["nic_lost"] == 0
    # every handshake answered with a cookie and completed by the NIC ...
    assert c["syn_cookies_sent"] >= N and c["cookie_ack_ok"] >= N
    assert c["syn_to_host"] == 0 and c["cookie_ack_bad"] == 0
    # ... and the host saw only the completed connections, byte-exact echo
    assert st["counters"]["cookie_conns"] == st["conns_accepted"] == N
    assert st["counters"].get("syns_received", 0) == 0
    assert st["app_stats"]["accepted"] == N
    assert st["tcp"]["bytes_in"] == st["tcp"]["bytes_out"] == N * 64
    assert st["drops"] == {}
    # the NIC's CPU is reported apart from the stack's
    assert st["cpu"]["nic_s"] > 0 and st["cpu"]["stack_s"] > 0
    if placement == "process":
        # frames cross the host port in batches, both ways
        assert nic["channel_nic"]["max_send_records"] > 1
        assert nic["channel_host"]["max_send_records"] > 1
        assert nic["channel_host"]["records_in"] >= c["passthrough_host"]
        assert nic["cpu"]["user_s"] > 0
    # the capture has the wire and the host port: Listen, N+ NewConnection frames, the
    # NIC's SYN-ACKs
    frames = _frames(tmp_path / "serve.pcap")
    kinds = collections.Counter(et for et, _ in frames)
    assert kinds[0x090A] == c["cookie_ack_ok"]
    assert any(et == 0x090E and f[15] == 0x10 for et, f in frames), "no Listen frame"
    syn_acks = [f for et, f in frames if _tcp_flags(f) == 0x12]
    assert len(syn_acks) >= N
    assert st["pcap"]["frames"] == len(frames)


@PLACEMENT
def test_clients_without_timestamps_fall_back_to_the_host(bed, tmp_path, placement,
                                                         no_timestamps):
    srv = _serve(bed, tmp_path, placement)
    _short(bed, N)
    _settled(srv, N)
    st = srv.stop()
    c = st["nic"]["counters"]
    assert c["syn_to_host"] >= N
    assert c["syn_cookies_sent"] == 0 and c["cookie_ack_ok"] == 0
    assert st["counters"]["cookie_conns"] == 0
    assert st["conns_accepted"] == st["counters"]["syns_received"] == N
    assert st["tcp"]["bytes_in"] == st["tcp"]["bytes_out"] == N * 64
    assert st["drops"] == {}


FORGE = textwrap.dedent("""
    import random, sys
    from scapy.all import IP, TCP, send
    host, port, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    pkts = []
    for _ in range(n):
        ts = (rng.getrandbits(32), rng.getrandbits(32) | 1)     # TSecr: the cookie bit
        pkts.append(IP(dst=host) / TCP(sport=rng.randint(1024, 65000), dport=port,
                                       flags="A", seq=rng.getrandbits(32),
                                       ack=rng.getrandbits(32), window=502,
                                       options=[("NOP", None), ("NOP", None),
                                                ("Timestamp", ts)]))
    send(pkts, verbose=0)
    print(len(pkts))
""")


@PLACEMENT
def test_forged_cookie_acks_never_reach_the_host(bed, tmp_path, placement):
    srv = _serve(bed, tmp_path, placement)
    _short(bed, 20)
    before = _settled(srv, 20)
    r = bed.run([str(VENV_BIN / "python"), "-c", FORGE, STACK_IP, str(PORT), str(N), "7"],
                timeout=120)
    assert r.stdout.strip() == str(N)
    st = wait_for(lambda: (s := srv.snapshot())["nic"]["counters"]["cookie_ack_bad"] >= N
                  and s, timeout=15)
    assert st, "the NIC did not see the forged ACKs"
    c = st["nic"]["counters"]
    assert c["cookie_ack_bad"] == N and c["drop_cookie_bad"] == N
    # nothing reached the host: no connection, no RST, no new accept, no TCP frame
    # (the kernel may refresh its ARP entry meanwhile)
    for k in ("conns_accepted", "cookie_conns", "rsts_sent"):
        assert st["counters"][k] == before["counters"][k], k
    tcp_in = [s["counters"]["frames_in"] - s["counters"].get("arp_in", 0)
              for s in (before, st)]
    assert tcp_in[0] == tcp_in[1]
    assert st["app_stats"]["accepted"] == before["app_stats"]["accepted"] == 20
    assert st["drops"] == {}
    # a real client right after is served through the NIC as before
    _short(bed, 20)
    _settled(srv, 40)
    st = srv.stop()
    assert st["counters"]["cookie_conns"] == st["app_stats"]["accepted"] == 40
    assert st["nic"]["counters"]["cookie_ack_bad"] == N


# A kernel client with one long-lived echo connection: it streams 64 KiB chunks (about
# 32 MiB/s) and checks the echo until it reads "stop" on stdin, then sends 8 MiB more,
# half-closes and compares what came back with what it sent.
HELD = textwrap.dedent("""
    import hashlib, json, socket, sys, threading, time
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
    stop = threading.Event()
    sent = hashlib.sha256()
    n_sent = [0]
    def sender():
        i = 0
        extra = 0
        while extra < 128 and n_sent[0] < (1 << 30):
            chunk = i.to_bytes(8, "big") * 8192
            s.sendall(chunk)
            sent.update(chunk)
            n_sent[0] += len(chunk)
            i += 1
            if stop.is_set():
                extra += 1
            else:
                time.sleep(0.002)
        s.shutdown(socket.SHUT_WR)
    def control():
        for line in sys.stdin:
            if line.strip() == "killed":
                marks["at_kill"] = got_n[0]
            elif line.strip() == "stop":
                stop.set()
                return
    marks = {}
    got_n = [0]
    threading.Thread(target=control, daemon=True).start()
    t = threading.Thread(target=sender)
    t.start()
    got = hashlib.sha256()
    flowing = False
    while True:
        d = s.recv(1 << 20)
        if not d:
            break
        got.update(d)
        got_n[0] += len(d)
        if not flowing and got_n[0] >= (1 << 20):
            flowing = True
            print("flowing", flush=True)
    t.join()
    print(json.dumps({"sent": n_sent[0], "received": got_n[0], "at_kill": marks.get("at_kill"),
                      "equal": sent.hexdigest() == got.hexdigest()}), flush=True)
""")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
def test_nic_process_dies_the_host_takes_over(bed, tmp_path, sig):
    """SIGKILL: the NIC dies at once; SIGTERM: it stops in order and exits 0. Either way
    the host notices at the channel's EOF and carries on alone."""
    srv = _serve(bed, tmp_path, "process", pcap=True)
    _short(bed, 100)
    held = bed.popen([str(VENV_BIN / "python"), "-c", HELD, STACK_IP, str(PORT)],
                     stdin=subprocess.PIPE)
    held.wait_line(held.p.stdout, lambda line: line == "flowing")
    st = srv.snapshot()
    nic_pid = st["nic"]["pid"]
    assert st["nic"]["alive"] and st["nic_lost"] == 0
    cookies_before = st["counters"]["cookie_conns"]
    assert cookies_before == 101                         # 100 short ones + the held one

    # the NIC process dies mid-transfer (we started it: serve is our child's child)
    os.kill(nic_pid, sig)
    held.p.stdin.write("killed\n")
    held.p.stdin.flush()
    st = wait_for(lambda: (s := srv.snapshot())["nic_lost"] == 1 and s, timeout=10)
    assert st, "the host did not notice the NIC's death"
    assert not st["nic"]["alive"]
    assert st["nic"]["exit_status"] == (-sig if sig == signal.SIGKILL else 0)
    assert st["counters"]["nic_lost"] == 1

    # the connection the host owns goes on through the TAP, byte-exact
    held.p.stdin.write("stop\n")
    held.p.stdin.flush()
    line = held.wait_line(held.p.stdout, lambda line: line.startswith("{"), timeout=60)
    res = json.loads(line)
    assert res["equal"] and res["received"] == res["sent"], res
    assert res["at_kill"] is not None and res["received"] >= res["at_kill"] + (8 << 20)

    # new connections are the host's own now: SYNs to the host, byte-exact echo
    _short(bed, 100)
    _settled(srv, 201)
    st = srv.stop()
    assert st["nic_lost"] == 1 and st["counters"]["nic_lost"] == 1
    assert st["conns_accepted"] == 201 and st["app_stats"]["accepted"] == 201
    assert st["counters"]["cookie_conns"] == cookies_before
    assert st["counters"]["syns_received"] >= 100
    # the app echoed exactly what the clients sent: no byte lost or delivered twice (the
    # TCBs' bytes_in/bytes_out also count what arrived or left twice: retransmissions
    # after the NIC died with frames in flight)
    assert st["app_stats"]["bytes_echoed"] == 200 * 64 + res["sent"]
    assert st["tcp"]["bytes_out"] >= st["app_stats"]["bytes_echoed"]
    check_accounting(st)
    # the capture goes on in the host after the NIC died, and stays a valid file
    frames = _frames(tmp_path / "serve.pcap")
    syns = [f for et, f in frames if _tcp_flags(f) == 0x02]
    assert len(syns) >= 201
    assert st["pcap"]["frames"] <= len(frames)


WATCHDOG = 1.0
ATTEMPT = 0.5        # the load's per-attempt deadline (connect + echo)


def test_nic_process_hung_the_host_takes_over(bed, tmp_path):
    """kill -STOP of the NIC process for 5 s under load (short-lived echo transactions,
    fresh connections tried at least every ATTEMPT s, plus one persistent echo
    connection), with setup and teardown offloaded: the watchdog finds the NIC silent,
    kills it, and the host serves from then on.

    The bound on the outage the client sees: the watchdog's deadline, plus its probe
    interval (the first probe after the NIC's last sign of life), plus one attempt
    deadline (a client attempt stuck in the hang gives up and a fresh one starts: its
    SYN goes out at once, not after the kernel's 1 s, 3 s ... SYN backoff), plus 1 s."""
    srv = bed.serve("echo", PORT, stats=tmp_path / "serve.json",
                    extra=["--nic", "process", "--offload", "setup,teardown",
                           "--nic-watchdog", str(WATCHDOG)])
    st = srv.snapshot()
    nic_pid = st["nic"]["pid"]
    interval = st["nic"]["watchdog"]["interval_s"]
    assert st["nic"]["watchdog"]["deadline_s"] == WATCHDOG
    load = bed.popen([sys.executable, "-m", "acceltcp.testbed.faultload", STACK_IP,
                      str(PORT), "--duration", "14", "--attempt-timeout", str(ATTEMPT)],
                     stdin=subprocess.DEVNULL)
    load.wait_line(load.p.stdout, lambda line: '"started"' in line)
    assert wait_for(lambda: srv.snapshot()["conns_accepted"] >= 50, timeout=20)

    t_stop = time.monotonic()
    os.kill(nic_pid, signal.SIGSTOP)
    st = wait_for(lambda: (s := srv.snapshot())["nic_lost"] == 1 and s, timeout=15)
    assert st, "the host did not notice the hung NIC"
    time.sleep(max(0.0, t_stop + 5.0 - time.monotonic()))
    try:
        os.kill(nic_pid, signal.SIGCONT)
        cont = "alive"
    except ProcessLookupError:
        cont = "gone"                            # the takeover killed and reaped it
    assert cont == "gone"
    res = json.loads(load.wait_line(load.p.stdout, lambda line: '"done"' in line,
                                    timeout=60))

    # service resumed through the host within the bound, as the client measures it
    out = outage(res, t_stop)
    assert out is not None, res["errors"]
    assert out <= WATCHDOG + interval + ATTEMPT + 1.0, (out, res["errors"])
    assert len(res["ok"]) > 100 and max(res["ok"]) > t_stop + 6.0   # and it went on
    # the persistent connection was the host's: it survived, byte for byte
    p = res["persistent"]
    assert p["error"] is None and p["exact"] and p["received"] == p["sent"] > 0, p

    st = wait_for(lambda: (s := srv.snapshot())["conns_live"] == 0 and s, timeout=30)
    assert st, "connections did not all close"
    st = srv.stop()
    nic = st["nic"]
    assert not nic["alive"] and nic["lost_reason"].startswith("watchdog")
    assert nic["exit_status"] == -signal.SIGKILL and nic["takeover"]["hung"]
    # the watchdog fired at its deadline (after the probe that found the NIC silent), and
    # service resumed within 1 s of it: the first transaction to complete after the
    # takeover did so within a second (a client attempt stuck in the hang gives up after
    # ATTEMPT s and a fresh one goes through the host at once)
    at = nic["takeover"]["at"]
    assert t_stop < at <= t_stop + interval + WATCHDOG + 0.5, (at - t_stop)
    resumed = min(e for e in res["ok"] if e > at)
    assert resumed - at <= 1.0, (resumed - at, res["errors"])
    assert st["counters"]["nic_lost"] == 1
    assert st["counters"]["syns_received"] > 0          # the host answers SYNs itself now
    check_accounting(st)
