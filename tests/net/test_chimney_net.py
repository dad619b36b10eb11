"""TCP Chimney partial offload against Linux TCP on the TAP testbed (``serve echo --nic
inline|process --offload chimney``):

* a Linux client sends 20 MiB and reads the echo, under 2 % loss each way (the NIC inline
  and as its own process): the NIC runs
  the accepted connection's data path (the host's own TCB code); the client's FIN
  brings it back to the host, which finishes the echo and closes. Byte-exact.
* 100 MiB each way under 2 % loss with the connection taken back and offered again
  every 50 ms (``--chimney-cycle``): byte-exact through every cycle.
* the NIC process killed while it holds the connection: the host reports it lost and
  resets it; the Linux client sees the reset, nothing hangs.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest


from .conftest import STACK_IP, wait_for

NEEDS_ROOT = True
MiB = 1 << 20


@pytest.mark.parametrize("placement", ["inline", "process"])
def test_chimney_echo_20mib_under_2pct_loss(bed, tmp_path, placement):
    n = 20 * MiB
    srv = bed.serve("echo", 7, stats=tmp_path / "serve.json",
                    extra=["--nic", placement, "--offload", "chimney"])
    bed.echo_duplex_under_loss(n, 3)
    st = srv.stop()
    c = st["counters"]
    assert c["chimney_offered"] == c["chimney_accepted"] == 1, c
    assert c.get("chimney_upload_peer_fin", 0) + c.get("chimney_upload_app_close", 0) == 1
    assert c.get("chimney_lost", 0) == 0 and c["conns_reset"] == 0
    ch = st["nic"]["chimney"]
    assert ch["offloads"] == 1 and ch["uploads"] == 1
    # the NIC did the bulk of the transfer: most bytes each way went through its TCB
    assert ch["bytes_to_host"] > n // 2 and ch["bytes_from_host"] > n // 2
    assert ch["segments_in"] > 4 * ch["data_frames"]            # large chunks to the host


def test_chimney_100mib_each_way_with_cycles_under_2pct_loss(bed, tmp_path):
    n = 100 * MiB
    srv = bed.serve("echo", 7, stats=tmp_path / "serve.json",
                    extra=["--nic", "inline", "--offload", "chimney",
                           "--chimney-cycle", "0.05"])
    bed.echo_duplex_under_loss(n, 4, timeout=600)
    st = srv.stop()
    c = st["counters"]
    ch = st["nic"]["chimney"]
    seen = ({k: v for k, v in c.items() if "chimney" in k or "reset" in k}, ch)
    assert c["chimney_accepted"] >= 5 and c["chimney_upload_host_request"] >= 4, seen
    assert c.get("chimney_lost", 0) == 0 and c["conns_reset"] == 0, seen
    assert ch["offloads"] == c["chimney_accepted"] and ch["uploads"] == ch["offloads"], seen
    # offloaded about half of the time (taken back on one tick, offered on the next)
    assert ch["bytes_to_host"] > n // 4 and ch["bytes_from_host"] > n // 10, seen


# A kernel client that streams to the echo server (64 KiB every 2 ms) and reads the
# echo until an error or the end; prints what it saw.
STREAM = textwrap.dedent("""
    import json, socket, sys, threading, time
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
    err = []
    got = [0]
    def sender():
        try:
            while True:
                s.sendall(bytes(65536))
                time.sleep(0.002)                   # about 32 MiB/s
        except OSError as e:
            err.append(type(e).__name__)
    threading.Thread(target=sender, daemon=True).start()
    try:
        while True:
            d = s.recv(1 << 20)
            if not d:
                break
            got[0] += len(d)
            if got[0] >= (1 << 20) and got[0] - len(d) < (1 << 20):
                print("flowing", flush=True)
    except OSError as e:
        err.append(type(e).__name__)
    print(json.dumps({"received": got[0], "errors": err}), flush=True)
""")


def test_nic_process_killed_while_offloaded_resets_the_connection(bed, tmp_path):
    srv = bed.serve("echo", 7, stats=tmp_path / "serve.json",
                    extra=["--nic", "process", "--offload", "chimney"])
    cl = bed.popen([sys.executable, "-c", STREAM, STACK_IP, "7"], stdin=subprocess.PIPE)
    cl.wait_line(cl.p.stdout, lambda line: line == "flowing", timeout=60)
    st = srv.snapshot()
    assert st["counters"]["chimney_accepted"] == 1
    os.kill(st["nic"]["pid"], signal.SIGKILL)
    st = wait_for(lambda: (s := srv.snapshot())["nic_lost"] == 1 and s, timeout=10)
    assert st, "the host did not notice the NIC's death"
    line = cl.wait_line(cl.p.stdout, lambda line: line.startswith("{"), timeout=60)
    res = json.loads(line)
    assert "ConnectionResetError" in res["errors"], res          # reset, not hung
    st = srv.stop()
    c = st["counters"]
    assert c["chimney_lost"] == 1 and c["nic_lost"] == 1
    assert st["counters"]["conns_live"] == 0
