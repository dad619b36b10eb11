"""The live XDP placement (`serve --nic xdp`) beside the stack without a NIC and the NIC
in its own process. Run as root, from the repository, after `make xdp`:

    .venv/bin/python benchmarks/xdp_live.py [--rr-seconds 5] [--repeat 3] [--json out.json]

1. short-lived 64 B echo transactions, one connection each (benchmarks/rr_client.c,
   --concurrency in flight), against `acceltcp serve echo` (TAP offloads off in all
   three: the XDP placement has none), the client closing first: the stack alone
   (every handshake in the stack), `--nic process --offload setup` (handshakes in the
   Python NIC process), `--nic xdp --offload setup` (handshakes in XDP). Transactions/s,
   the stack's CPU per transaction (its runner's accounting), the serve process's whole
   CPU per transaction (TAP reads and writes included), the NIC's Python busy time (the
   NIC process's dataplane; for xdp the control side, clock and control frames), and
   all cores' busy time per transaction (/proc/stat: the kernel's XDP and softirq work,
   the client, everything).
2. the same with the server closing first (echo --close-after 64): the kernel stack with
   an asyncio server (reference namespace), the stack alone, and `--nic xdp --offload
   setup,teardown` (handshakes and teardowns in XDP): the paper's short-lived case.
3. a spoofed SYN flood (testbed/synflood.py flood: --flood-rate SYNs/s with timestamps
   from 198.18.128.0/17, --flood-seconds) at the echo listener: SYN-ACKs/s answered
   (the NIC's syn_cookies_sent over the flood) and the serve process's CPU meanwhile,
   for the NIC process and for XDP. The generator (Python, AF_PACKET) is the limit of
   the offered rate, not XDP (notes/xdp-on-this-kernel.md: 1.3 M/s in-kernel). Beside
   it a legitimate client (rr_client, 4 connections in flight): its txn/s, mean latency
   and the share of its connections that completed, 2 s before the flood and during it.

Uses realnet.py's helpers, in a namespace of its own (atcp-xbench, not realnet's: both
may run at once), created and removed here.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import realnet as rn  # noqa: E402
from acceltcp.testbed.procs import fetch_stats  # noqa: E402

rn.NS, rn.REF = "atcp-xbench", "atcp-xbench-ref"

PLACES = (("stack, no NIC", []),
          ("NIC process, setup", ["--nic", "process", "--offload", "setup"]),
          ("NIC xdp, setup", ["--nic", "xdp", "--offload", "setup"]))
CLOSE_FIRST = ["--close-after", "64"]
# the server closing first: None = the kernel + asyncio reference
SERVER_CLOSES = (("kernel + asyncio", None),
                 ("stack, no NIC", CLOSE_FIRST),
                 ("NIC xdp, setup+teardown", CLOSE_FIRST + ["--nic", "xdp", "--offload",
                                                           "setup,teardown"]))


def rr(label, extra, a, client, tmp):
    kernel = extra is None
    srv = (rn.kernel_server("echo", 7, "asyncio", CLOSE_FIRST) if kernel else
           rn.stack_server("echo", 7, False, tmp, extra))
    time.sleep(0.3)
    c0, s0 = rn.cpu_busy_s(), rn.proc_cpu_s(srv.p.pid)
    r = subprocess.run(rn.ns(rn.NS, [client, rn.REF_IP if kernel else rn.STACK_IP, "7",
                                     str(a.concurrency), str(a.rr_seconds), "64"]),
                       capture_output=True, text=True, timeout=a.rr_seconds + 60)
    c1, s1 = rn.cpu_busy_s(), rn.proc_cpu_s(srv.p.pid)
    time.sleep(0.3)
    st = srv.stop()
    if r.returncode != 0:
        raise RuntimeError("%s: client failed: %s" % (label, r.stderr))
    res = json.loads(r.stdout)
    n = max(res["transactions"], 1)
    if kernel:
        return {"label": label, "tps": res["tps"], "errors": res["errors"],
                "stack_cpu_us_per_txn": None, "serve_cpu_us_per_txn": 1e6 * (s1 - s0) / n,
                "nic_py_cpu_us_per_txn": None, "all_cpu_us_per_txn": 1e6 * (c1 - c0) / n,
                "cookie_conns": 0, "syns_received": 0, "transactions": res["transactions"],
                "client_cpu_pct": res["client_cpu_pct"]}
    nic = st.get("nic") or {}
    return {"label": label, "tps": res["tps"], "errors": res["errors"],
            "stack_cpu_us_per_txn": 1e6 * st["cpu"]["stack_s"] / n,
            "serve_cpu_us_per_txn": 1e6 * (s1 - s0) / n,
            # the NIC's busy time in Python: the process NIC's dataplane, or the XDP
            # placement's control side (its per-frame work is the kernel's: all-CPU)
            "nic_py_cpu_us_per_txn": (1e6 * st["cpu"]["nic_s"] / n if nic else None),
            "all_cpu_us_per_txn": 1e6 * (c1 - c0) / n,
            "cookie_conns": st["counters"].get("cookie_conns", 0),
            "syns_received": st["counters"].get("syns_received", 0),
            "transactions": res["transactions"], "client_cpu_pct": res["client_cpu_pct"]}


def _legit(client, seconds):
    """A legitimate client beside the flood: LEGIT_CONC short-lived 64 B echo
    connections in flight (rr_client) -> its JSON, plus the share of connections opened
    that completed (a connection whose SYN-ACK was lost waits out its SYN RTO)."""
    r = subprocess.run(rn.ns(rn.NS, [client, rn.STACK_IP, "7", str(LEGIT_CONC),
                                     str(seconds), "64"]),
                       capture_output=True, text=True, timeout=seconds + 60)
    if r.returncode != 0:
        raise RuntimeError("legitimate client failed: %s" % r.stderr)
    res = json.loads(r.stdout)
    res["completed_pct"] = 100.0 * res["transactions"] / max(res["connects"], 1)
    return res


def flood(label, extra, a, client, tmp):
    srv = rn.stack_server("echo", 7, False, tmp, extra)
    time.sleep(0.3)
    calm = _legit(client, 2.0)
    st0 = fetch_stats(srv.p, srv.stats)
    s0 = rn.proc_cpu_s(srv.p.pid)
    c0 = rn.cpu_busy_s()
    t0 = time.monotonic()
    gen = subprocess.Popen(rn.ns(rn.NS, [rn.PY, "-m", "acceltcp.testbed.synflood", "flood",
                                         rn.STACK_IP, "7", "--rate", str(a.flood_rate),
                                         "--duration", str(a.flood_seconds)]),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)                     # the flood under way
        legit = _legit(client, max(a.flood_seconds - 1.0, 1.0))
        stdout, _ = gen.communicate(timeout=a.flood_seconds + 60)
    finally:
        if gen.poll() is None:
            gen.kill()
            gen.wait()
    time.sleep(0.5)                         # the last SYN-ACKs
    el = time.monotonic() - t0
    s1 = rn.proc_cpu_s(srv.p.pid)
    c1 = rn.cpu_busy_s()
    st1 = fetch_stats(srv.p, srv.stats)
    srv.stop()
    res = json.loads(stdout.strip().splitlines()[-1])
    n0, n1 = st0["nic"]["counters"], st1["nic"]["counters"]
    # the legitimate client's SYNs are answered from the same counter: taken out
    answered = n1["syn_cookies_sent"] - n0["syn_cookies_sent"] - legit["connects"]
    return {"label": label, "offered_per_s": res["rate"], "sent": res["sent"],
            "synacks_per_s": answered / res["elapsed_s"],
            "answered_pct": 100.0 * answered / max(res["sent"], 1),
            "serve_cpu_pct": 100.0 * (s1 - s0) / el,
            # the NIC's Python busy time (process: its dataplane; xdp: the control side)
            "nic_py_cpu_pct": 100.0 * (st1["cpu"]["nic_s"] - st0["cpu"]["nic_s"]) / el,
            # every core (the flood generator, XDP's softirq work, ...), of 100 % x cpus
            "all_cpu_pct": 100.0 * (c1 - c0) / el,
            "syns_to_stack": st1["counters"].get("syns_received", 0),
            "legit_calm": {k: calm[k] for k in LEGIT_KEYS},
            "legit_flood": {k: legit[k] for k in LEGIT_KEYS}}


LEGIT_CONC = 4
LEGIT_KEYS = ("tps", "mean_latency_us", "completed_pct", "errors", "connects")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rr-seconds", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--flood-rate", type=float, default=200000.0)
    p.add_argument("--flood-seconds", type=float, default=5.0)
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks/xdp_live.py needs root (namespaces, TAP, XDP)", file=sys.stderr)
        return 2
    out = {"rr": [], "rr_close": [], "flood": [], "machine": {"cpus": os.cpu_count(),
                                              "kernel": os.uname().release}}
    rn.cli("testbed", "down", "--netns", rn.NS, "--ref-netns", rn.REF)
    rn.cli("testbed", "up", "--ref", "--netns", rn.NS, "--ref-netns", rn.REF)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            client = rn.build_client(tmp)
            for label, extra in PLACES:
                out["rr"].append(rn.median_run(lambda lb=label, x=extra: rr(
                    lb, x, a, client, tmp), a.repeat, "tps"))
                print(json.dumps(out["rr"][-1]), file=sys.stderr)
            for label, extra in SERVER_CLOSES:
                out["rr_close"].append(rn.median_run(lambda lb=label, x=extra: rr(
                    lb, x, a, client, tmp), a.repeat, "tps"))
                print(json.dumps(out["rr_close"][-1]), file=sys.stderr)
            for label, extra in PLACES[1:]:
                out["flood"].append(flood(label, extra, a, client, tmp))
                print(json.dumps(out["flood"][-1]), file=sys.stderr)
    finally:
        rn.cli("testbed", "down", "--netns", rn.NS, "--ref-netns", rn.REF)
    print("short-lived 64 B echo, %d in flight, %g s, median of %d (TAP offloads off)"
          % (a.concurrency, a.rr_seconds, a.repeat))
    print("%-22s %9s %10s %10s %10s %10s" % ("", "txn/s", "stack us", "serve us",
                                            "NIC-py us", "all-CPU us"))
    for r in out["rr"]:
        npc = r["nic_py_cpu_us_per_txn"]
        print("%-22s %9.0f %10.1f %10.1f %10s %10.1f" % (
            r["label"], r["tps"], r["stack_cpu_us_per_txn"], r["serve_cpu_us_per_txn"],
            "-" if npc is None else "%.1f" % npc, r["all_cpu_us_per_txn"]))
    print("\nthe same, the server closing first (echo --close-after 64)")
    print("%-24s %9s %8s %10s %10s %10s" % ("", "txn/s", "x stack", "stack us", "serve us",
                                           "all-CPU us"))
    base = next(r for r in out["rr_close"] if r["label"] == "stack, no NIC")
    for r in out["rr_close"]:
        su = r["stack_cpu_us_per_txn"]
        print("%-24s %9.0f %8.2f %10s %10.1f %10.1f" % (
            r["label"], r["tps"], r["tps"] / base["tps"], "-" if su is None else "%.1f" % su,
            r["serve_cpu_us_per_txn"], r["all_cpu_us_per_txn"]))
    print("\nspoofed SYN flood (timestamps on), %g s" % a.flood_seconds)
    print("%-22s %10s %12s %10s %10s %10s %10s" % (
        "", "offered/s", "SYN-ACK/s", "answered", "serve CPU", "NIC-py CPU", "all CPU"))
    for r in out["flood"]:
        print("%-22s %10.0f %12.0f %9.1f%% %9.1f%% %9.1f%% %9.1f%%" % (
            r["label"], r["offered_per_s"], r["synacks_per_s"], r["answered_pct"],
            r["serve_cpu_pct"], r["nic_py_cpu_pct"], r["all_cpu_pct"]))
    print("\na legitimate client (%d short-lived connections in flight) before and during"
          " the flood" % LEGIT_CONC)
    print("%-22s %10s %10s %10s %10s %10s %10s" % (
        "", "txn/s", "mean us", "completed", "flood txn/s", "mean us", "completed"))
    for r in out["flood"]:
        c, f = r["legit_calm"], r["legit_flood"]
        print("%-22s %10.0f %10.0f %9.1f%% %11.0f %10.0f %9.1f%%" % (
            r["label"], c["tps"], c["mean_latency_us"], c["completed_pct"], f["tps"],
            f["mean_latency_us"], f["completed_pct"]))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
