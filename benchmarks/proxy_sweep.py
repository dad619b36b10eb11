"""Proxy sweeps (the AccelTCP paper's Figures 12 and 13): the stack's L7 proxy,
`acceltcp serve lb`, relaying in the host vs splicing on the NIC, over response size
(persistent client connections) and over transactions per connection.

Run as root, from the repository:

    .venv/bin/python benchmarks/proxy_sweep.py [--skip-txns] [--skip-sizes] [--json F]

Setup. The script creates its own namespace (`acceltcp testbed up --netns
atcp-sweep`), holding the TAP's kernel end (198.18.0.1; the stack is 198.18.0.2, on
TAP atcpswp0) and every client and backend, and removes it at the end, also after an
error or Ctrl-C; it shares no name with benchmarks/apps.py (atcp-apps), realnet.py
(atcp-bench) or a developer's testbed (atcp-peer). The helpers are apps.py's
(`apps.use_names` points them here). Two nginx backends (one process each, as in
apps.py) serve one file per size, pseudo-random bytes. The client is
benchmarks/http_client.c (built with cc): CONC connections on one epoll loop, each
sending GET /sN.bin and reading the response by Content-Length; after TXNS responses
it closes the connection and opens a new one (the TXNS-th request says
`Connection: close`), or, with TXNS 0, keeps it for the whole run.

1. sizes (Figure 12): responses of --sizes bytes (64 B .. 16 KiB), persistent
   connections (TXNS 0), --conns connections.
2. txns (Figure 13): --txn-size bytes (64), TXNS = --txns (1, 2, 4, .., 128).

Proxies, side by side at every point (one after the other, so a drift in the machine's
load meets all of them alike): the lb with the host relaying every request (no NIC),
and the lb splicing each client connection after its first request on the NIC inline
and in XDP (`--nic inline|xdp --offload setup,splice`; XDP when its object loads:
`make xdp`, else the reason is recorded). All run with the TAP's checksum/TSO offloads
off (`--no-offload`), as in apps.py. Every run starts a new lb whose backends are a port
pair of its own (the module doc of apps.py: backend TIME-WAITs), fetches the point's
file through it once with curl (byte-exact, or the run fails), runs the client, and
after the run waits (up to 5 s) for the NIC's closure reports of the spliced
connections, so that the lb's byte counters (what the NIC moved, what the host moved)
are complete.

Measured per run: the client's requests/s, connections, errors and CPU; the stack's own
host CPU (`cpu.stack_s`, NIC apart: `cpu.nic_s` is the inline NIC's busy time), the
whole machine's busy CPU (/proc/stat); the lb's counters: request heads it parsed,
splices, responses it relayed, response bytes the host moved and the NIC moved, the
host's frames. Each point runs --repeat times per proxy and keeps the run with the
median rate. Bounded: the client stops after --seconds; every process is ended by pid.
"""

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import apps  # noqa: E402  (benchmarks/apps.py: servers, measurement)
import realnet  # noqa: E402  (benchmarks/realnet.py: testbed, CPU)

from acceltcp.testbed import website  # noqa: E402
from acceltcp.testbed.sigterm import raise_on_sigterm  # noqa: E402

NS = "atcp-sweep"
TAP = "atcpswp0"
LB_PORT = apps.LB_PORT
BACKEND_BASE = 9100            # backend port pairs from here, one per run
SIZES = [64, 256, 1024, 4096, 16384]
TXNS = [1, 2, 4, 8, 16, 32, 64, 128]

RELAY = "lb, host relay"


def proxies(placements):
    """[(label, placement, serve options)]: the relay first."""
    out = [(RELAY, "relay", ["--no-offload"])]
    for place in placements:
        out.append(("lb + NIC %s, spliced" % place, place,
                    ["--no-offload", "--nic", place, "--offload", "setup,splice"]))
    return out


def make_files(www, sizes, seed=13):
    """One file per size, s<N>.bin; -> {size: (name, sha256 hex)}."""
    os.makedirs(www, exist_ok=True)
    rnd = random.Random(seed)
    out = {}
    for n in sorted(set(sizes)):
        data = rnd.randbytes(n)
        name = "s%d.bin" % n
        Path(www, name).write_bytes(data)
        out[n] = (name, hashlib.sha256(data).hexdigest())
    return out


def check_file(name, digest):
    """curl /name through the lb: byte-exact, or RuntimeError."""
    r = subprocess.run(realnet.ns(NS, ["curl", "-s", "-f", "--max-time", "10", "-o", "-",
                                       "http://%s:%d/%s" % (apps.STACK_IP, LB_PORT, name)]),
                       capture_output=True, timeout=30)
    if r.returncode != 0 or hashlib.sha256(r.stdout).hexdigest() != digest:
        raise RuntimeError("%s through the lb: curl exit %d, %d bytes, not byte-exact"
                           % (name, r.returncode, len(r.stdout)))


def client(exe, name, seconds, conns, txns):
    argv = [exe, apps.STACK_IP, str(LB_PORT), "/" + name, str(conns), str(seconds),
            str(txns)]
    r, _, _ = apps.run_client(argv, seconds + 60)
    lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
    if r.returncode != 0 or not lines:
        raise RuntimeError("http_client failed (%d): %s %s" % (r.returncode, r.stdout[-500:],
                                                                r.stderr[-500:]))
    return json.loads(lines[-1])


def settled(srv, timeout=5.0):
    """The lb's counters once no connection is left on the NIC (its closure reports in),
    or as they are after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        st = srv.snapshot()
        if st["app_stats"].get("on_nic", 0) <= 0 or time.monotonic() >= deadline:
            return st
        time.sleep(0.2)


def one_run(exe, figure, label, place, extra, backends, size, txns, files, a, tmp):
    name, digest = files[size]
    b1, b2 = backends
    srv = apps.StackServer("lb", LB_PORT, extra + [
        "--backend", "%s:%d" % (apps.PEER_IP, b1), "--backend", "%s:%d" % (apps.PEER_IP, b2)],
        tmp, "%s-%s-%d-%d" % (figure, place, size, txns))
    try:
        check_file(name, digest)
        pre = srv.snapshot()
        res, d = apps.measured(srv, lambda: client(exe, name, a.seconds, a.conns, txns))
        post = settled(srv)
    finally:
        final = srv.stop()
    if final.get("nic_lost"):
        raise RuntimeError("%s: the NIC process was lost" % label)
    n = max(res["requests"], 1)
    app = {k: v - pre["app_stats"].get(k, 0) for k, v in post["app_stats"].items()
           if isinstance(v, (int, float)) and not isinstance(v, bool)}
    c = d["counters"]
    host_s = d["host_s"]
    return {
        "figure": figure, "proxy": label, "placement": place, "size": size,
        "txns_per_conn": txns, "requests": res["requests"], "rps": res["rps"],
        "connections": res["connects"], "errors": res["errors"] + res["bad_status"],
        "gbit_s": res["body_bytes"] * 8 / res["elapsed_s"] / 1e9,
        "latency_mean_us": res["latency_mean_us"], "client_cpu_pct": res["client_cpu_pct"],
        "host_cpu_us": 1e6 * host_s / n,
        "nic_cpu_us": 1e6 * d.get("nic_s", 0.0) / n,
        "all_cpu_us": 1e6 * d["all_s"] / n,
        "req_per_host_cpu_s": res["requests"] / host_s if host_s > 0 else None,
        "host_frames_per_req": (c.get("frames_in", 0) + c.get("frames_out", 0)) / n,
        # the lb's own counters, from before the client to after the NIC's reports
        "lb_connections": app.get("connections", 0),
        "lb_request_heads": app.get("requests", 0),
        "relayed_requests": app.get("relayed_requests", 0),
        "splice_requested": app.get("splice_requested", 0),
        "spliced": app.get("spliced", 0),
        "splice_failed": app.get("splice_failed", 0),
        "splice_skipped": app.get("splice_skipped", 0),
        "host_resp_bytes_per_req": app.get("host_bytes_s", 0) / n,
        "nic_resp_bytes_per_req": app.get("nic_bytes_s", 0) / n,
        "on_nic_after": post["app_stats"].get("on_nic", 0),
        "nic_splice_frames": d["nic_counters"].get("splice_frames", 0),
        "rto_timeouts": c.get("rto_timeouts", 0), "conns_reset": c.get("conns_reset", 0),
        "backends": [b1, b2],
    }


def xdp_loads(tmp):
    """None if `serve lb --nic xdp` starts here, else why not (one line)."""
    try:
        srv = apps.StackServer("lb", LB_PORT, ["--no-offload", "--nic", "xdp", "--offload",
                                               "setup,splice", "--backend",
                                               "%s:%d" % (apps.PEER_IP, BACKEND_BASE - 1)],
                               tmp, "xdp-probe")
    except RuntimeError as e:
        lines = [x for x in str(e).splitlines() if x.strip()]
        return (lines[-1] if lines else str(e))[:300]
    srv.stop()
    return None


def points(a):
    out = []
    if not a.skip_sizes:
        out += [("fig12", s, 0) for s in a.sizes]
    if not a.skip_txns:
        out += [("fig13", a.txn_size, t) for t in a.txns]
    return out


def sweep(a, tmp, exe, results):
    www = os.path.join(tmp, "www")
    pts = points(a)
    files = make_files(www, [s for _, s, _ in pts])
    places = list(a.placements)
    if "xdp" in places:
        why = xdp_loads(tmp)
        if why:
            places.remove("xdp")
            results["xdp_unavailable"] = why
            print("  xdp: not loaded: %s" % why, file=sys.stderr, flush=True)
    prox = proxies(places)
    results["proxies"] = [p[0] for p in prox]
    nruns = len(pts) * len(prox) * a.repeat
    pairs = iter([(BACKEND_BASE + 2 * i, BACKEND_BASE + 2 * i + 1) for i in range(nruns)])
    backends = []
    try:
        for k in range(2):                       # nginx 1: even ports, nginx 2: odd ports
            ports = [BACKEND_BASE + 2 * i + k for i in range(nruns)]
            d = os.path.join(tmp, "backend%d" % (k + 1))
            backends.append(apps.KernelServer(
                NS, ["nginx", "-c", website.nginx_conf(d, website.backend_body(ports, www)),
                     "-g", "daemon off;"], "127.0.0.1", BACKEND_BASE + k,
                os.path.join(d, "stdout.log")))
        t0 = time.monotonic()
        for figure, size, txns in pts:
            for label, place, extra in prox:
                row = apps.median_of(
                    lambda f=figure, lb=label, p=place, x=extra, s=size, t=txns: one_run(
                        exe, f, lb, p, x, next(pairs), s, t, files, a, tmp),
                    a.repeat, "rps")
                results["rows"].append(row)
                print("  done: %s %s size %d txns %s: %.0f req/s, host %.1f us/req (%.0f s)"
                      % (figure, label, size, txns or "persistent", row["rps"],
                         row["host_cpu_us"], time.monotonic() - t0), file=sys.stderr,
                      flush=True)
    finally:
        for srv in backends:
            srv.stop()


def ratios(rows):
    """Per point and spliced proxy: its req/s and its host CPU per request against the
    relay's at the same point."""
    out = []
    for r in rows:
        if r["placement"] == "relay":
            continue
        base = next((x for x in rows if x["placement"] == "relay" and x["figure"] ==
                     r["figure"] and x["size"] == r["size"] and
                     x["txns_per_conn"] == r["txns_per_conn"]), None)
        if not base:
            continue
        out.append({"figure": r["figure"], "placement": r["placement"], "size": r["size"],
                    "txns_per_conn": r["txns_per_conn"],
                    "rps_ratio": r["rps"] / base["rps"] if base["rps"] else None,
                    "host_cpu_ratio": base["host_cpu_us"] / r["host_cpu_us"]
                    if r["host_cpu_us"] else None,
                    "all_cpu_ratio": base["all_cpu_us"] / r["all_cpu_us"]
                    if r["all_cpu_us"] else None})
    return out


def report(results):
    rows = results["rows"]
    for fig, title in (("fig12", "response size, persistent connections"),
                       ("fig13", "transactions per connection")):
        rs = [r for r in rows if r["figure"] == fig]
        if not rs:
            continue
        print("\n%s: the lb over %s" % (fig, title))
        print("%-26s %6s %5s %9s %7s %8s %8s %8s %9s %9s %6s %5s" % (
            "proxy", "size", "txns", "req/s", "x relay", "host us", "NIC us", "all us",
            "host B/rq", "NIC B/rq", "errors", "RTOs"))
        for r in rs:
            base = next((x for x in rs if x["placement"] == "relay" and x["size"] == r["size"]
                         and x["txns_per_conn"] == r["txns_per_conn"]), None)
            print("%-26s %6d %5s %9.0f %7s %8.1f %8.1f %8.1f %9.1f %9.1f %6d %5d" % (
                r["proxy"], r["size"], r["txns_per_conn"] or "-", r["rps"],
                "%.2f" % (r["rps"] / base["rps"]) if base and base["rps"] else "-",
                r["host_cpu_us"], r["nic_cpu_us"], r["all_cpu_us"],
                r["host_resp_bytes_per_req"], r["nic_resp_bytes_per_req"], r["errors"],
                r["rto_timeouts"]))
    if results.get("xdp_unavailable"):
        print("\nxdp not measured: %s" % results["xdp_unavailable"])
    print("\nwall time %.0f s" % results.get("wall_s", 0))


def _csv_ints(text):
    try:
        v = [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError("a comma list of integers: %r" % text)
    if not v or any(x < 1 for x in v):
        raise argparse.ArgumentTypeError("positive integers: %r" % text)
    return v


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=_csv_ints, default=SIZES,
                   help="response sizes, bytes, for the size sweep (64,...,16384)")
    p.add_argument("--txns", type=_csv_ints, default=TXNS,
                   help="transactions per connection for the txns sweep (1,2,...,128)")
    p.add_argument("--txn-size", type=int, default=64, help="response size of the txns "
                   "sweep, bytes (64)")
    p.add_argument("--seconds", type=float, default=5.0, help="client run, seconds (5)")
    p.add_argument("--conns", type=int, default=32, help="client connections (32)")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs per point and proxy; the run with the median rate is kept (1)")
    p.add_argument("--placements", default="inline,xdp",
                   help="NIC placements that splice, comma-separated (inline,xdp)")
    p.add_argument("--skip-sizes", action="store_true")
    p.add_argument("--skip-txns", action="store_true")
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
    a.placements = [x for x in a.placements.split(",") if x]
    if any(x not in ("process", "inline", "xdp") for x in a.placements):
        p.error("--placements: process, inline and/or xdp")
    if not 1 <= a.txn_size <= 1 << 20 or any(s > 1 << 20 for s in a.sizes):
        p.error("sizes: 1 B .. 1 MiB")
    if not 0 < a.seconds <= 120 or not 1 <= a.conns <= 1024 or not 1 <= a.repeat <= 9:
        p.error("--seconds 0..120, --conns 1..1024, --repeat 1..9")
    if os.geteuid() != 0:
        print("benchmarks/proxy_sweep.py needs root (namespaces, TAP)", file=sys.stderr)
        return 2
    apps.use_names(NS, TAP)
    restore = raise_on_sigterm()
    try:
        started = time.time()
        results = {"rows": [], "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
                   "params": {k: v for k, v in vars(a).items() if k != "json"}}
        realnet.cli("testbed", "down", "--netns", NS)
        realnet.cli("testbed", "up", "--netns", NS)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                exe = os.path.join(tmp, "http_client")
                subprocess.run(["cc", "-O2", "-o", exe, str(HERE / "http_client.c")], check=True)
                sweep(a, tmp, exe, results)
        finally:
            apps.end_started()
            realnet.cli("testbed", "down", "--netns", NS)
        results["wall_s"] = time.time() - started
        results["ratios"] = ratios(results["rows"])
        report(results)
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=1) + "\n")
        return 0
    finally:
        restore()


if __name__ == "__main__":
    sys.exit(main())
