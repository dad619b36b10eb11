"""Memory per idle connection: the stack holding 20,000 established, idle connections.

Run as root, from the repository:

    .venv/bin/python benchmarks/robust_idle.py [--count 20000] [--json out.json]

For each placement (host only; NIC inline and NIC process with setup offload) a kernel
client in the namespace atcp-ridle (``peer hold``) opens --count connections to
``acceltcp serve echo`` and holds them idle; the stack's resident set size (VmRSS) is read
before and while they are held: (after - before) / count is what one idle connection
costs the host (its TCB, receive/send buffers as allocated, the table entries, the app's
state). Then one byte is echoed on a sample of 1 % of them, to show they are alive, and
the accounting invariant is checked (accepted = closed + live, no internal error).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import realnet  # noqa: E402  (benchmarks/ is not a package)

NS = "atcp-ridle"
PER_CLIENT = 10000
PY = sys.executable
PLACEMENTS = (("host only", []),
              ("NIC inline, setup offload", ["--nic", "inline", "--offload", "setup"]),
              ("NIC process, setup offload", ["--nic", "process", "--offload", "setup"]))


def one(label, extra, count, tmp):
    stats = os.path.join(tmp, "idle-%d.json" % len(label))
    argv = [PY, "-m", "acceltcp.cli", "serve", "echo", "--port", "7", "--netns", NS,
            "--stats-file", stats, "--backlog", str(count)] + extra
    srv = realnet.Server(argv, "stderr", stats)
    # One client process holds at most PER_CLIENT sockets (its open-files limit).
    shares = [min(PER_CLIENT, count - i) for i in range(0, count, PER_CLIENT)]
    clients = []
    try:
        time.sleep(0.5)
        before = realnet.proc_kib(srv.p.pid)
        for k in shares:
            clients.append(subprocess.Popen(
                realnet.ns(NS, [PY, "-m", "acceltcp.testbed.peer", "hold", realnet.STACK_IP,
                                "7", "--count", str(k)]),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        firsts = [json.loads(c.stdout.readline()) for c in clients]
        time.sleep(1.0)                           # the last handshakes reach the app
        after = realnet.proc_kib(srv.p.pid)
        for c in clients:
            c.stdin.write("done\n")
            c.stdin.flush()
        lasts = [json.loads(c.stdout.readline()) for c in clients]
        for c in clients:
            c.wait(60)
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
                c.wait()
        st = srv.stop()
    first = {"established": sum(f["established"] for f in firsts),
             "seconds": max(f["seconds"] for f in firsts)}
    last = {"sample_alive": sum(x["sample_alive"] for x in lasts),
            "sample": sum(x["sample"] for x in lasts)}
    n = first["established"]
    return {"label": label, "connections": n, "wanted": count,
            "connect_s": first["seconds"], "rss_before_mib": before / 1024,
            "rss_held_mib": after / 1024,
            "bytes_per_conn": (after - before) * 1024 / max(n, 1),
            "sample_alive": "%d/%d" % (last["sample_alive"], last["sample"]),
            "accepted": st.get("conns_accepted"), "closed": st.get("conns_closed"),
            "live": st.get("conns_live"),
            "internal_error": st.get("drops", {}).get("internal_error", 0)}


def run(quick=False, count=None):
    count = count or (2000 if quick else 20000)
    realnet.cli("testbed", "down", "--netns", NS)
    realnet.cli("testbed", "up", "--netns", NS)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return {"count": count,
                    "rows": [one(label, extra, count, tmp) for label, extra in PLACEMENTS]}
    finally:
        realnet.cli("testbed", "down", "--netns", NS)


def report(res):
    print("Idle connections held: %d" % res["count"])
    print("%-28s %8s %10s %10s %12s %8s" % ("placement", "conns", "RSS before", "RSS held",
                                           "bytes/conn", "alive"))
    for r in res["rows"]:
        print("%-28s %8d %8.1f MiB %6.1f MiB %12.0f %8s" % (
            r["label"], r["connections"], r["rss_before_mib"], r["rss_held_mib"],
            r["bytes_per_conn"], r["sample_alive"]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json")
    a = p.parse_args(argv)
    res = run(a.quick, a.count)
    report(res)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
