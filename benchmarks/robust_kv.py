"""kv under reply amplification: pipelined GETs of a 1 MiB value, before and after the
output back-pressure work, on the TAP testbed.

Run as root, from the repository:

    .venv/bin/python benchmarks/robust_kv.py [--gets 80] [--unread 300] [--before REV]
                                             [--json out.json] [--quick]

For the kv server as of ``--before`` (default: the commit before the back-pressure work;
its ``src/`` is extracted with ``git archive`` to a temporary directory and put first on
the server's PYTHONPATH) and for this tree, side by side in one run, each on its own
``acceltcp serve kv`` (host stack, no NIC) in the namespace atcp-rkv:

1. a kernel client (plain Python socket) SETs a 1 MiB value, then sends --gets GETs of
   it in one write and reads the replies as fast as it can: seconds until all arrived
   (checked byte for byte) and the server's CPU seconds; meanwhile another connection
   PINGs every 10 ms: the round-trip times (p50, p99, max) of the PINGs sent while the
   transfer ran.
2. on a fresh server, a client sends --unread GETs of the 1 MiB value and reads nothing
   for 3 s: the server's peak resident set size (VmHWM) over its size once the value was
   stored, and what the server says it held (``output_peak``; the new tree only).
"""

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import realnet  # noqa: E402  (benchmarks/ is not a package)

NS = "atcp-rkv"
PORT = 6379
PY = sys.executable
VALUE = bytes(range(256)) * 4096                       # 1 MiB
BEFORE = "f1586c1"      # the commit before "apps/kv: output back-pressure ..."


def _cmd(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def _reply():
    return b"$%d\r\n%s\r\n" % (len(VALUE), VALUE)


def _read_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


# ---------------------------------------------------------------------- clients (in NS)
def client_pipeline(host, gets):
    """SET the value, then `gets` pipelined GETs; -> JSON line: seconds, exact."""
    s = socket.create_connection((host, PORT))
    s.sendall(_cmd("SET", "big", VALUE))
    assert _read_exact(s, 5) == b"+OK\r\n"
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()                               # go
    want = _reply()
    t0 = time.monotonic()
    s.sendall(_cmd("GET", "big") * gets)
    got = _read_exact(s, gets * len(want))
    dt = time.monotonic() - t0
    print(json.dumps({"seconds": dt, "start": t0, "end": t0 + dt, "bytes": len(got),
                      "exact": got == want * gets}), flush=True)
    s.close()


def client_ping(host):
    """PING every 10 ms until stdin says stop; -> JSON line: (start, RTT ms) of each
    (CLOCK_MONOTONIC: one clock for all processes of the machine, namespaces included)."""
    s = socket.create_connection((host, PORT))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    print(json.dumps({"ready": True}), flush=True)
    rtts = []
    while not stop.is_set():
        t0 = time.monotonic()
        s.sendall(b"PING\r\n")
        assert _read_exact(s, 7) == b"+PONG\r\n"
        rtts.append((t0, (time.monotonic() - t0) * 1000))
        time.sleep(0.01)
    print(json.dumps({"rtt_ms": rtts}), flush=True)
    s.close()


def client_unread(host, gets):
    """SET the value, then `gets` GETs, read nothing until stdin says stop."""
    s = socket.create_connection((host, PORT))
    s.sendall(_cmd("SET", "big", VALUE))
    assert _read_exact(s, 5) == b"+OK\r\n"
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    s.sendall(_cmd("GET", "big") * gets)
    print(json.dumps({"sent": True}), flush=True)
    sys.stdin.readline()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()                                          # a reset: nothing more to send


# ---------------------------------------------------------------------- the driver
class _Client:
    def __init__(self, *args):
        self.p = subprocess.Popen(realnet.ns(NS, [PY, str(Path(__file__).resolve())]
                                             + [str(a) for a in args]),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def line(self):
        text = self.p.stdout.readline()
        if not text:
            raise RuntimeError("client ended: %s" % self.p.args)
        return json.loads(text)

    def tell(self, word="go"):
        self.p.stdin.write(word + "\n")
        self.p.stdin.flush()

    def close(self):
        if self.p.poll() is None:
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


@contextlib.contextmanager
def _server(src, tmp, name):
    stats = os.path.join(tmp, name + ".json")
    argv = [PY, "-m", "acceltcp.cli", "serve", "kv", "--port", str(PORT), "--netns", NS,
            "--stats-file", stats]
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = src + (os.pathsep + old if old else "")
    try:
        srv = realnet.Server(argv, "stderr", stats)
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
    box = {}
    try:
        yield srv, box
    finally:
        box["stats"] = srv.stop()


def _pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None


def pipelined(src, tmp, label, gets):
    with _server(src, tmp, label + "-pipe") as (srv, box):
        pipe = _Client("pipeline", realnet.STACK_IP, gets)
        ping = _Client("ping", realnet.STACK_IP)
        try:
            pipe.line()
            ping.line()
            time.sleep(0.3)
            cpu0 = realnet.proc_cpu_s(srv.p.pid)
            pipe.tell()
            res = pipe.line()
            cpu = realnet.proc_cpu_s(srv.p.pid) - cpu0
            ping.tell("stop")
            rtt = [ms for t, ms in ping.line()["rtt_ms"] if res["start"] <= t <= res["end"]]
        finally:
            pipe.close()
            ping.close()
    app = box["stats"].get("app_stats", {})
    return {"seconds": res["seconds"], "exact": res["exact"], "server_cpu_s": cpu,
            "pings": len(rtt), "ping_p50_ms": statistics.median(rtt) if rtt else None,
            "ping_p99_ms": _pct(rtt, 0.99), "ping_max_ms": max(rtt) if rtt else None,
            "output_peak": app.get("output_peak")}


def unread(src, tmp, label, gets, hold=3.0):
    with _server(src, tmp, label + "-unread") as (srv, box):
        c = _Client("unread", realnet.STACK_IP, gets)
        try:
            c.line()
            time.sleep(0.3)
            base = realnet.proc_kib(srv.p.pid, "VmRSS")
            c.tell()
            c.line()
            time.sleep(hold)
            peak = realnet.proc_kib(srv.p.pid, "VmHWM")
            rss = realnet.proc_kib(srv.p.pid, "VmRSS")
            c.tell("stop")
        finally:
            c.close()
    app = box["stats"].get("app_stats", {})
    return {"rss_base_mib": base / 1024, "rss_peak_mib": peak / 1024,
            "rss_held_mib": rss / 1024, "peak_over_base_mib": (peak - base) / 1024,
            "output_peak": app.get("output_peak"), "gets_run": app.get("commands", {})
            .get("get")}


def _extract(rev, tmp):
    dest = os.path.join(tmp, "before")
    os.makedirs(dest)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    return os.path.join(dest, "src")


def run(quick=False, gets=None, unread_gets=None, before=BEFORE):
    gets = gets or (20 if quick else 80)
    unread_gets = unread_gets or (60 if quick else 300)
    realnet.cli("testbed", "down", "--netns", NS)
    realnet.cli("testbed", "up", "--netns", NS)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            trees = [("after", str(ROOT / "src"))]
            if before:
                trees.insert(0, ("before", _extract(before, tmp)))
            rows = []
            for label, src in trees:
                rows.append({"label": label, "pipelined": pipelined(src, tmp, label, gets),
                             "unread": unread(src, tmp, label, unread_gets)})
            return {"gets": gets, "unread_gets": unread_gets, "before": before, "rows": rows}
    finally:
        realnet.cli("testbed", "down", "--netns", NS)


def report(res):
    print("kv, %d pipelined GETs of a 1 MiB value (a kernel client reading as fast as it "
          "can), PINGs every 10 ms on another connection:" % res["gets"])
    print("%-8s %9s %10s %6s %10s %10s %10s" % ("tree", "seconds", "server CPU", "exact",
                                               "PING p50", "p99", "max"))
    # (server CPU: /proc ticks, 10 ms resolution)
    for r in res["rows"]:
        p = r["pipelined"]
        print("%-8s %9.2f %8.2f s %6s %7.2f ms %7.2f ms %7.2f ms" % (
            r["label"], p["seconds"], p["server_cpu_s"], p["exact"], p["ping_p50_ms"],
            p["ping_p99_ms"], p["ping_max_ms"]))
    print("\n%d unread GETs of the 1 MiB value, held 3 s: the server's resident set" %
          res["unread_gets"])
    print("%-8s %12s %12s %12s %14s" % ("tree", "after SET", "peak", "peak - base",
                                        "held (app)"))
    for r in res["rows"]:
        u = r["unread"]
        print("%-8s %8.1f MiB %8.1f MiB %8.1f MiB %14s" % (
            r["label"], u["rss_base_mib"], u["rss_peak_mib"], u["peak_over_base_mib"],
            "-" if u["output_peak"] is None else "%d B" % u["output_peak"]))
    if len(res["rows"]) == 2:
        b, a = (r["pipelined"] for r in res["rows"])
        print("\nbefore/after: transfer time x%.0f, server CPU x%.0f, PING p50 x%.0f "
              "(PINGs during the transfer: %d before, %d after)" % (
                  b["seconds"] / a["seconds"], b["server_cpu_s"] / max(a["server_cpu_s"], 0.01),
                  b["ping_p50_ms"] / a["ping_p50_ms"], b["pings"], a["pings"]))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("pipeline", "ping", "unread"):
        kind, host = argv[0], argv[1]
        if kind == "pipeline":
            client_pipeline(host, int(argv[2]))
        elif kind == "ping":
            client_ping(host)
        else:
            client_unread(host, int(argv[2]))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gets", type=int)
    p.add_argument("--unread", type=int)
    p.add_argument("--before", default=BEFORE,
                   help="git revision of the 'before' server ('' to skip it; %(default)s)")
    p.add_argument("--quick", action="store_true", help="20 and 60 GETs")
    p.add_argument("--json")
    a = p.parse_args(argv)
    res = run(a.quick, a.gets, a.unread, a.before)
    report(res)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
