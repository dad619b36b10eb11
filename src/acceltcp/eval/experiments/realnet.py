"""Real-network experiments: thin calls into the repository's benchmark scripts
(``benchmarks/realnet.py``, ``benchmarks/apps.py``), which create their own network
namespaces and TAP (fixed names: atcp-bench, atcp-apps) and need root. The runner runs
them only when named (``acceltcp eval table2``); their rows are the scripts' JSON as
they write it, and the report compares what the script measures with the paper's claim.

What exists: fig1-real (realnet.py --fig1: persistent vs one connection per transaction
over concurrency, the stack without a NIC), table2 (realnet.py's splice part: host relay vs splice on the NIC inline,
in its own process and in XDP, and the kernel's L3 forward with no proxy, for a bulk
duplex transfer in MTU frames and for 64 B messages -- a ping-pong on persistent
connections, every message its own segment), fig10-real (realnet.py's short-lived 64 B
request/response parts on one and two real cores: the stack with and without the NIC's
setup + teardown offload -- the inline NIC, or XDP with ``--nic xdp`` on one core -- and
kernel asyncio/uvloop servers), table4 (apps.py's kv part: kv per NIC placement, the
same engine with a kernel thread per connection on kernel sockets (kv-threads) and
redis-server under redis-benchmark), table5 (apps.py's lb part: lb vs nginx and haproxy
as kernel proxies under wrk, req/s and latency percentiles); ``--nic`` picks the
placements (python: process and inline; xdp; both); fig12 and fig13
(benchmarks/proxy_sweep.py, namespace atcp-sweep: the lb relaying in the host vs
splicing on the NIC -- inline with python, XDP with xdp, both with both -- over
response size on persistent connections, and over transactions per connection at
64 B). Each has a plot of what its table measures; ``--quick`` shortens the runs (one
each) so that the four of tables 2, 4, 5 and fig10-real take about three minutes.
"""

import importlib
import json
import os
import sys
from pathlib import Path

from .base import Result, Unavailable

__all__ = ["bench_module", "table2", "table2_summary", "fig1_real", "fig1_summary",
           "fig10_real", "table4", "table5",
           "kv_summary", "lb_summary", "fig12", "fig13"]

BENCH_DIR = Path(__file__).resolve().parents[4] / "benchmarks"


def bench_module(name):
    """``benchmarks/<name>.py`` of the source checkout, imported (Unavailable if this is
    an installed package without the checkout)."""
    if not (BENCH_DIR / (name + ".py")).exists():
        raise Unavailable("skipped", "needs the source checkout's benchmarks/%s.py (not "
                                     "found at %s)" % (name, BENCH_DIR))
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    return importlib.import_module(name)


def _need_root():
    if os.geteuid() != 0:
        raise Unavailable("skipped", "needs root (network namespaces, TAP)")


def _run(ctx, module, argv, name):
    _need_root()
    mod = bench_module(module)
    path = ctx.out / ("%s-%s.json" % (name, module))
    rc = mod.main(argv + ["--json", str(path)])
    ctx.advance()
    if rc != 0 or not path.exists():
        raise RuntimeError("benchmarks/%s.py %s: exit %s" % (module, " ".join(argv), rc))
    return json.loads(path.read_text())


def _table(rows):
    columns = []
    for r in rows:
        for k in r:
            if k not in columns:
                columns.append(k)
    return columns, [{k: (json.dumps(v) if isinstance(v, (dict, list)) else v)
                      for k, v in r.items()} for r in rows]


def _summarized(data, rows, summary, note, setup, *info):
    """`rows` of a benchmark's output `data` as a Result: its table, and what
    ``summary(rows, *info)`` makes of them -> (comparison rows, facts, plot)."""
    cols, table = _table(rows)
    comparison, facts, plot = summary(rows, *info)
    return Result(columns=cols, rows=table, comparison=comparison, note=note, plot=plot,
                  samples=[data], facts=facts, setup=setup)


def _ratio(rows, key, num, den, field):
    a = next((r[key] for r in rows if r.get(field) == num), None)
    b = next((r[key] for r in rows if r.get(field) == den), None)
    return a / b if a and b else None


def _fmt_ratio(x):
    return "-" if x is None else "%.2fx" % x


#: the splice part's small-message point (benchmarks/realnet.py --splice-msg)
MSG = 64


def _bars(title, ylabel, labels, series):
    return {"kind": "bar", "title": title, "xlabel": "", "ylabel": ylabel, "x": labels,
            "series": series}


def table2_summary(rows):
    """(comparison rows, facts, plot) from realnet.py's splice rows: the bulk transfer
    (MTU frames: the TAP's offloads off) and the 64 B ping-pong, each against the host
    relay of the same pattern; the kernel-to-kernel row is the L3 forward."""
    bulk = [r for r in rows if r.get("pattern", "bulk") == "bulk" and not r.get("tap_offload")]
    small = [r for r in rows if r.get("pattern") == "ping-pong"]
    facts = {}
    for name, part, key in (("bulk", bulk, "gbit_s"), ("64", small, "msgs_per_s")):
        for place in ("inline", "process", "xdp"):
            facts["%s_over_relay_%s" % (place, name)] = _ratio(
                part, key, "NIC %s, spliced" % place, "host relay", "label")
        facts["forward_over_relay_%s" % name] = _ratio(
            part, key, "kernel to kernel, no proxy", "host relay", "label")
    spliced = [r for r in small if "spliced" in r["label"]]
    facts["relay_host_frames_per_msg_64"] = _pick(small, "host_frames_per_msg",
                                                  label="host relay")
    facts["spliced_host_frames_per_msg_64_max"] = max(
        (r["host_frames_per_msg"] for r in spliced), default=None)
    facts["errors_64"] = sum(r.get("errors", 0) for r in small)

    def three(name):
        return "inline %s, own process %s, XDP %s" % tuple(
            _fmt_ratio(facts["%s_over_relay_%s" % (p, name)])
            for p in ("inline", "process", "xdp"))
    comparison = [
        {"what": "splice on the NIC / L7 relay on the host, MTU frames (bulk)",
         "paper": "L3 forward at NIC 40.0 vs L7 proxy 5.3 Gbit/s at 1500 B (7.5x)",
         "ours": three("bulk")},
        {"what": "L3 forward (kernel to kernel, no proxy; the veth keeps its own TSO/GRO) "
                 "/ L7 relay in MTU frames",
         "paper": "7.5x (NIC forward)", "ours": _fmt_ratio(facts["forward_over_relay_bulk"])},
        {"what": "splice on the NIC / L7 relay, 64 B messages (ping-pong, msgs/s)",
         "paper": "NIC forward 28.8 vs L7 proxy 2.1 Gbit/s at 64 B (13.7x)",
         "ours": three("64") if small else "-"},
        {"what": "L3 forward (kernel to kernel) / L7 relay, 64 B messages",
         "paper": "13.7x (NIC forward)", "ours": _fmt_ratio(facts["forward_over_relay_64"])},
        {"what": "host frames per 64 B message: relay / spliced (worst placement)",
         "paper": "-", "ours": "%s / %s" % (
             _num(facts["relay_host_frames_per_msg_64"]),
             _num(facts["spliced_host_frames_per_msg_64_max"]))}]
    labels = [r["label"] for r in bulk]
    plot = {"panels": [
        _bars("bulk, MTU frames (TAP offloads off)", "Gbit/s", labels,
              {"Gbit/s": [r["gbit_s"] for r in bulk]}),
        _bars("%d B messages, ping-pong" % MSG, "messages/s", [r["label"] for r in small],
              {"messages/s": [r["msgs_per_s"] for r in small]})]}
    return comparison, facts, plot


def _num(x):
    return "-" if x is None else "%.3g" % x


def table2(ctx):
    quick = ctx.quick
    data = _run(ctx, "realnet", ["--skip-bulk", "--skip-rr", "--skip-nic", "--repeat",
                                 "1" if quick else "3", "--splice-mib",
                                 "10" if quick else "200", "--splice-msg", str(MSG),
                                 "--splice-msg-seconds", "1.5" if quick else "5"], "table2")
    return _summarized(
        data, data["splice"], table2_summary,
        "Our NIC is software on the same two cores as the host, so splicing "
        "saves the host's relay work but not the machine's CPU; the paper's "
        "NIC has its own 120 cores. Our 64 B point is a ping-pong over "
        "persistent connections from a Python client (one message in flight "
        "per connection, every message its own segment), not a packet "
        "generator: the faster paths are bounded by the client.",
        "benchmarks/realnet.py --skip-bulk --skip-rr --skip-nic: a kernel "
        "client and server in namespace atcp-bench, the stack's proxy on "
        "the TAP relaying, then splicing on the NIC inline / in its "
        "process / in XDP: a duplex bulk transfer (%s MiB each way), then "
        "%d persistent connections each with one %d B message in flight to "
        "a kernel echo server (%s s); the same kernel to kernel (the L3 "
        "forward)." % ("10" if quick else "200", 16, MSG, "1.5" if quick else "5"))


#: fig1-real's concurrency values (full run; --quick: the first and the fourth)
FIG1_CONCS = (1, 4, 16, 64, 256)


def fig1_summary(rows):
    """(comparison rows, facts, plot) from realnet.py's fig1 rows: persistent over one
    connection per transaction at each concurrency."""
    xs = sorted({r["concurrency"] for r in rows})
    by = {(r["per_conn"], r["concurrency"]): r for r in rows}
    pers = [by.get((0, x)) for x in xs]
    short = [by.get((1, x)) for x in xs]
    ratios = [p["tps"] / s["tps"] for p, s in zip(pers, short) if p and s and s["tps"]]
    facts = {"ratio_min": min(ratios, default=None), "ratio_max": max(ratios, default=None),
             "persistent_frames_per_txn": max((p["frames_per_txn"] or 0) for p in pers if p),
             "short_lived_frames_per_txn": min((s["frames_per_txn"] or 0)
                                               for s in short if s),
             "errors": sum(r["errors"] for r in rows)}
    comparison = [
        {"what": "persistent / one connection per transaction, txn/s (the stack, one core)",
         "paper": "2.6-3.2x (mTCP, 1-8 cores)",
         "ours": "%s-%s (concurrency %d-%d)" % (_fmt_ratio(facts["ratio_min"]),
                                                _fmt_ratio(facts["ratio_max"]), xs[0],
                                                xs[-1])},
        {"what": "host-port frames per transaction", "paper": "2 persistent, 6 short-lived",
         "ours": "%s persistent (at most), %s short-lived (at least)" % (
             _num(facts["persistent_frames_per_txn"]),
             _num(facts["short_lived_frames_per_txn"]))}]

    def col(series, key):
        return [r[key] if r else None for r in series]
    plot = {"panels": [
        {"kind": "line", "title": "64 B echo against the stack (real network)",
         "xlabel": "concurrent connections", "ylabel": "transactions/s", "x": xs,
         "logx": True, "series": {"persistent": col(pers, "tps"),
                                  "one connection per request": col(short, "tps")}},
        {"kind": "line", "title": "the stack's CPU per transaction",
         "xlabel": "concurrent connections", "ylabel": "µs", "x": xs, "logx": True,
         "series": {"persistent": col(pers, "stack_cpu_us_per_txn"),
                    "one connection per request": col(short, "stack_cpu_us_per_txn")}}]}
    return comparison, facts, plot


def fig1_real(ctx):
    concs = FIG1_CONCS[:4:3] if ctx.quick else FIG1_CONCS
    data = _run(ctx, "realnet", ["--skip-bulk", "--skip-rr", "--skip-nic", "--skip-splice",
                                 "--repeat", "1" if ctx.quick else "3", "--rr-seconds",
                                 "1.5" if ctx.quick else "5",
                                 "--fig1", ",".join(map(str, concs))], "fig1-real")
    return _summarized(
        data, data["fig1"], fig1_summary,
        "The same sweep as fig1 on the real network: a Linux client "
        "(benchmarks/rr_client.c) against the stack's echo server on its "
        "TAP, one real core for the stack; the client and the kernel's side "
        "of each connection share the machine's two cores with it. A "
        "short-lived transaction is 9 host frames here, not the paper's 6: "
        "the Linux client sends its request after the handshake's ACK and "
        "closes first (SYN, SYN-ACK, ACK, request, reply, FIN, ACK, FIN, "
        "ACK); at one connection in flight the persistent rate is bounded "
        "by the round trip, not by the stack.",
        "benchmarks/realnet.py --fig1 %s: 64 B echo transactions from "
        "rr_client (namespace atcp-bench) against `acceltcp serve echo` (TAP "
        "offloads on, no NIC), persistent connections and one connection "
        "per transaction, %s s per run, %s." % (
            ",".join(map(str, concs)), "1.5" if ctx.quick else "5",
            "one run per point" if ctx.quick else "median of 3"))


def fig10_real(ctx):
    place = "xdp" if ctx.nic == "xdp" else "inline"
    data = _run(ctx, "realnet", ["--skip-bulk", "--skip-splice", "--repeat",
                                 "1" if ctx.quick else "3", "--rr-seconds",
                                 "2" if ctx.quick else "10", "--cores", "1,2",
                                 "--placements", "inline,xdp" if ctx.nic == "both"
                                 else place], "fig10-real")
    rows = data["rr"] + data["nic_rr"]
    cols, table = _table(rows)
    r1 = _ratio(rows, "tps", "stack, NIC %s, setup+teardown" % place, "stack", "label")
    rx = _ratio(rows, "tps", "stack, NIC xdp, setup+teardown", "stack", "label")
    kx = _ratio(rows, "tps", "stack, NIC xdp, setup+teardown", "kernel + asyncio", "label")
    r2 = _ratio(rows, "tps", "stack, 2 cores, NIC inline, setup+teardown", "stack, 2 cores",
                "label")
    s2 = _ratio(rows, "tps", "stack, 2 cores", "stack", "label")
    comparison = [{"what": "setup + teardown offload / no offload, 1 real core",
                   "paper": "2.2-3.8x (1-8 cores)", "ours": "%s (NIC %s)" % (_fmt_ratio(r1),
                                                                               place)}]
    if ctx.nic == "both":
        comparison.append({"what": "the same with the NIC in XDP, 1 real core",
                           "paper": "2.2-3.8x", "ours": "%s (%s of kernel + asyncio)" % (
                               _fmt_ratio(rx), _fmt_ratio(kx))})
    comparison += [
        {"what": "the same on 2 real cores (serve --cores 2, NIC inline)",
         "paper": "2.2-3.8x", "ours": _fmt_ratio(r2)},
        {"what": "2 cores / 1 core, the stack alone", "paper": "near-linear",
         "ours": _fmt_ratio(s2)}]
    stack = [r for r in rows if r.get("stack_cpu_us_per_txn") is not None]
    plot = {"panels": [
        _bars("short-lived 64 B transactions", "txn/s", [r["label"] for r in rows],
              {"txn/s": [r["tps"] for r in rows]}),
        _bars("the stack's own CPU per transaction (NIC apart)", "µs",
              [r["label"] for r in stack],
              {"stack µs/txn": [r["stack_cpu_us_per_txn"] for r in stack]})]}
    return Result(columns=cols, rows=table, comparison=comparison, plot=plot,
                  note="This machine has two cores for everything: the load client, the "
                       "kernel's side of each connection and, inline, the NIC share them "
                       "with the stacks, so a second server core has little room to add; "
                       "the simulated fig10 sweeps 1-8 cores with the client off the "
                       "server's cores.",
                  samples=[data], facts={"offload_over_none": r1, "xdp_over_none": rx,
                                         "xdp_over_kernel_asyncio": kx,
                                         "offload_over_none_2_cores": r2,
                                         "two_cores_over_one": s2,
                                         "errors": sum(r["errors"] for r in rows)},
                  setup="benchmarks/realnet.py --skip-bulk --skip-splice --cores 1,2: "
                        "benchmarks/rr_client.c, short-lived 64 B transactions, against "
                        "the stack (TAP; serve --cores 2 on a multi-queue TAP) and kernel "
                        "asyncio/uvloop servers.")


def _apps(ctx, part, summary, note, setup):
    """One part of benchmarks/apps.py ("kv" or "lb": the other is skipped) as a Result;
    summary(rows, info) -> (comparison rows, facts, plot). Quick: short runs, GET only,
    no control rows."""
    other = "lb" if part == "kv" else "kv"
    places = {"python": "process,inline", "xdp": "xdp"}.get(ctx.nic, "process,inline,xdp")
    # kv: GET from redis-benchmark and the USR workload from rr_client (SET alone is
    # left to benchmarks/apps.py: USR has its 0.2 %)
    size = (["--kv-short", "3000", "--kv-persistent", "10000", "--kv-seconds", "1",
             "--settle", "1.2", "--lb-seconds", "2", "--no-controls"] if ctx.quick else [])
    size += ["--kv-tests", "get,usr"]
    data = _run(ctx, "apps", ["--skip-" + other, "--repeat", "1" if ctx.quick else "3",
                              "--placements", places] + size,
                "table4" if part == "kv" else "table5")
    return _summarized(data, data[part], summary, note, setup, data.get("lb_info") or {})


def _pick(rows, key, **match):
    return next((r[key] for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def _over(a, b):
    return a / b if a and b else None


KV_NO_NIC = "kv, no NIC"
KV_THREADS = "kv-threads (kernel)"
REDIS = "redis-server (kernel)"
NGINX = "nginx proxy (kernel)"
HAPROXY = "haproxy (kernel)"
RELAY = "lb, host relay"


def kv_summary(rows, info=None):
    redis = _pick(rows, "rps", server=REDIS, test="GET", keepalive=False)
    ours, facts = {"GET": [], "USR": []}, {}
    for test, suffix in (("GET", ""), ("USR", "_usr")):
        base = _pick(rows, "rps", server=KV_NO_NIC, test=test, keepalive=False)
        for place in ("process", "inline", "xdp"):
            rps = _pick(rows, "rps", server="kv + NIC %s, setup+teardown" % place,
                        test=test, keepalive=False)
            if rps is not None:
                facts[place + "_over_no_nic" + suffix] = _over(rps, base)
                ours[test].append("%s %s" % (place, _fmt_ratio(_over(rps, base))))
    xdp = _pick(rows, "rps", server="kv + NIC xdp, setup+teardown", test="GET",
                keepalive=False)
    facts["xdp_over_redis_server"] = _over(xdp, redis)
    # kernel threads vs user-level: the same engine, a thread per connection on kernel
    # sockets against the stack's cooperative callbacks (no NIC), and redis-server's
    # single-threaded event loop on the same kernel sockets
    threads = {}
    for ka, mode in ((False, "short"), (True, "persistent")):
        t = _pick(rows, "rps", server=KV_THREADS, test="GET", keepalive=ka)
        facts["user_level_over_threads_" + mode] = _over(
            _pick(rows, "rps", server=KV_NO_NIC, test="GET", keepalive=ka), t)
        facts["redis_over_threads_" + mode] = _over(
            _pick(rows, "rps", server=REDIS, test="GET", keepalive=ka), t)
        threads[mode] = "kv %s, redis-server %s" % (
            _fmt_ratio(facts["user_level_over_threads_" + mode]),
            _fmt_ratio(facts["redis_over_threads_" + mode]))
    comparison = [
        {"what": "kv, one connection per GET (redis-benchmark -k 0), setup + teardown "
                 "offload / no NIC",
         "paper": "1.6-2.3x (Redis-AccelTCP vs Redis-mTCP)",
         "ours": ", ".join(ours["GET"]) or "-"},
        {"what": "the same under the USR workload (rr_client usr: 99.8 % GET, 0.2 % SET, "
                 "one connection per transaction)",
         "paper": "1.6-2.3x (the paper's workload)", "ours": ", ".join(ours["USR"]) or "-"},
        {"what": "kv with XDP / redis-server (kernel), one connection per GET",
         "paper": "-", "ours": _fmt_ratio(facts["xdp_over_redis_server"])},
        {"what": "user-level / kernel threads, one connection per GET: kv in the stack "
                 "(cooperative callbacks, no NIC) and redis-server (one event loop) over "
                 "kv-threads (a kernel thread per connection, kernel TCP)",
         "paper": "user-level threads ahead (Redis on mTCP vs the kernel's threads)",
         "ours": threads["short"]},
        {"what": "the same, persistent connections", "paper": "-",
         "ours": threads["persistent"]}]
    servers = []
    for r in rows:
        if r["server"] not in servers:
            servers.append(r["server"])

    def col(key, ka, test="GET"):
        return [_pick(rows, key, server=sv, test=test, keepalive=ka) for sv in servers]
    plot = {"panels": [
        _bars("GET, redis-benchmark", "req/s", servers,
              {"one connection per GET": col("rps", False),
               "persistent": col("rps", True)}),
        _bars("USR workload, rr_client", "transactions/s", servers,
              {"one connection per transaction": col("rps", False, "USR"),
               "persistent": col("rps", True, "USR")}),
        _bars("host CPU per GET (the stack's own; others: process CPU)", "µs", servers,
              {"one connection per GET": col("host_cpu_us", False),
               "persistent": col("host_cpu_us", True)})]}
    return comparison, facts, plot


def lb_summary(rows, info=None):
    ours, facts = {}, {}
    for close in (False, True):
        relay = _pick(rows, "rps", proxy=RELAY, close=close)
        nginx = _pick(rows, "rps", proxy=NGINX, close=close)
        haproxy = _pick(rows, "rps", proxy=HAPROXY, close=close)
        mode = "close" if close else "persistent"
        parts = []
        for place in ("process", "inline", "xdp"):
            rps = _pick(rows, "rps", proxy="lb + NIC %s, spliced" % place, close=close)
            if rps is not None:
                facts["%s_%s_over_relay" % (place, mode)] = _over(rps, relay)
                parts.append("%s %s" % (place, _fmt_ratio(_over(rps, relay))))
        xdp = _pick(rows, "rps", proxy="lb + NIC xdp, spliced", close=close)
        facts["xdp_%s_over_nginx" % mode] = _over(xdp, nginx)
        facts["xdp_%s_over_haproxy" % mode] = _over(xdp, haproxy)
        facts["haproxy_%s_over_nginx" % mode] = _over(haproxy, nginx)
        for q in ("p50", "p99"):
            key = "latency_%s_us" % q
            facts["%s_%s_haproxy_over_xdp" % (q, mode)] = _over(
                _pick(rows, key, proxy=HAPROXY, close=close),
                _pick(rows, key, proxy="lb + NIC xdp, spliced", close=close))
            facts["%s_%s_nginx_over_xdp" % (q, mode)] = _over(
                _pick(rows, key, proxy=NGINX, close=close),
                _pick(rows, key, proxy="lb + NIC xdp, spliced", close=close))
        ours[mode] = "%s; XDP / nginx %s, XDP / haproxy %s" % (
            ", ".join(parts) or "-", _fmt_ratio(_over(xdp, nginx)),
            _fmt_ratio(_over(xdp, haproxy)))
        ours[mode + " latency"] = "p50 %s, p99 %s (haproxy / XDP); p50 %s, p99 %s (nginx / XDP)" % (
            _fmt_ratio(facts["p50_%s_haproxy_over_xdp" % mode]),
            _fmt_ratio(facts["p99_%s_haproxy_over_xdp" % mode]),
            _fmt_ratio(facts["p50_%s_nginx_over_xdp" % mode]),
            _fmt_ratio(facts["p99_%s_nginx_over_xdp" % mode]))
    comparison = [
        {"what": "lb spliced / lb relaying in the host, persistent connections",
         "paper": "11.9x throughput (vs HAProxy on mTCP)", "ours": ours["persistent"]},
        {"what": "latency, persistent connections: kernel proxy / lb with XDP",
         "paper": "13.6x lower latency (vs HAProxy on mTCP)",
         "ours": ours["persistent latency"]},
        {"what": "the same with Connection: close", "paper": "-", "ours": ours["close"]},
        {"what": "latency with Connection: close: kernel proxy / lb with XDP", "paper": "-",
         "ours": ours["close latency"]}]
    if (info or {}).get("haproxy_unavailable"):
        comparison.append({"what": "haproxy", "paper": "-",
                           "ours": "not measured: " + info["haproxy_unavailable"]})
    proxies = []
    for r in rows:
        if r["proxy"] not in proxies:
            proxies.append(r["proxy"])

    def col(key, close):
        return [_pick(rows, key, proxy=p, close=close) for p in proxies]
    plot = {"panels": [
        _bars("wrk, SpecWeb-like files", "req/s", proxies,
              {"persistent": col("rps", False), "Connection: close": col("rps", True)}),
        _bars("latency p50", "µs", proxies,
              {"persistent": col("latency_p50_us", False),
               "Connection: close": col("latency_p50_us", True)}),
        _bars("latency p99", "µs", proxies,
              {"persistent": col("latency_p99_us", False),
               "Connection: close": col("latency_p99_us", True)})]}
    return comparison, facts, plot


def table4(ctx):
    return _apps(ctx, "kv", kv_summary,
                 "Our baseline is redis-server on the kernel stack, not Redis on mTCP; the "
                 "per-connection work left on the host (a TCB per 0x090A, the app's "
                 "bookkeeping) is Python. kv-threads is CPython: its threads take turns "
                 "on the interpreter lock, and each short-lived connection starts one.",
                 "benchmarks/apps.py --skip-lb --kv-tests get,usr: redis-benchmark GET "
                 "and rr_client's USR workload (99.8 %% GET, 0.2 %% SET, 5 s runs) against "
                 "the stack's kv server per NIC placement, against the same kv engine on "
                 "kernel sockets with a thread per connection (`acceltcp kv-threads`) and "
                 "against redis-server%s." % (
                     " (quick: 3,000 short-lived and 10,000 persistent GETs, 1 s USR runs, "
                     "one run each)" if ctx.quick else ""))


def table5(ctx):
    return _apps(ctx, "lb", lb_summary,
                 "Our reference proxies are nginx and haproxy on the kernel stack, not "
                 "HAProxy on mTCP. With Connection: close the host still completes each "
                 "client handshake from a 0x090A and opens the backend connection itself, "
                 "for one response of about a kilobyte.",
                 "benchmarks/apps.py --skip-kv: wrk against the stack's lb, nginx and "
                 "haproxy (mode http, round-robin over the same two nginx backends; "
                 "http-keep-alive, or http-server-close with Connection: close)%s." % (
                     " (quick: 2 s runs, one each)" if ctx.quick else ""))


# ------------------------------------------------------------------ proxy sweeps
#: the sweep's placements per --nic (the inline NIC is the Python one that splices in
#: this process; the process placement relays through a channel and is left out)
_SWEEP_PLACES = {"python": "inline", "xdp": "xdp", "both": "inline,xdp"}

_SWEEP_COLUMNS = ["proxy", "placement", "size", "txns_per_conn", "rps", "rps_ratio",
                  "host_cpu_us", "host_cpu_ratio", "nic_cpu_us", "all_cpu_us", "connections",
                  "requests", "errors", "gbit_s", "latency_mean_us", "client_cpu_pct",
                  "host_frames_per_req", "host_resp_bytes_per_req", "nic_resp_bytes_per_req",
                  "lb_connections", "lb_request_heads", "relayed_requests",
                  "splice_requested", "spliced", "splice_failed", "splice_skipped",
                  "nic_splice_frames", "rto_timeouts"]


def _sweep(ctx, name, argv, xkey, xlabel):
    """benchmarks/proxy_sweep.py for one figure -> (data, rows with the ratios to the
    relay at the same point, xs, plot, {placement: [(x, rps ratio, host CPU ratio)]}).
    The ratio panel shows req/s only: the host CPU ratio reaches the tens and hundreds
    and would flatten it (the host CPU panel shows it, and the table has it)."""
    data = _run(ctx, "proxy_sweep", argv + ["--placements", _SWEEP_PLACES[ctx.nic],
                                            "--seconds", _sweep_run(ctx)[0], "--repeat",
                                            str(_sweep_run(ctx)[1])], name)
    rows = [dict(r) for r in data["rows"]]
    relay = {r[xkey]: r for r in rows if r["placement"] == "relay"}
    for r in rows:
        b = relay.get(r[xkey])
        r["rps_ratio"] = r["rps"] / b["rps"] if b and b["rps"] else None
        r["host_cpu_ratio"] = (b["host_cpu_us"] / r["host_cpu_us"]
                               if b and r["host_cpu_us"] else None)
    xs = sorted(relay)
    labels = []
    for r in rows:
        if r["proxy"] not in labels:
            labels.append(r["proxy"])
    by = {(r["proxy"], r[xkey]): r for r in rows}

    def col(label, key):
        return [by[label, x][key] if (label, x) in by else None for x in xs]
    spliced = [lb for lb in labels if by.get((lb, xs[0]), {}).get("placement") != "relay"]
    ratios = {}
    series = {}
    for lb in spliced:
        place = by[lb, xs[0]]["placement"]
        ratios[place] = [(x, by[lb, x]["rps_ratio"], by[lb, x]["host_cpu_ratio"])
                         for x in xs if (lb, x) in by]
        series["req/s, NIC %s" % place] = col(lb, "rps_ratio")

    logx = all(x > 0 for x in xs)
    plot = {"panels": [
        {"kind": "line", "title": "requests/s", "xlabel": xlabel, "ylabel": "req/s",
         "x": xs, "series": {lb: col(lb, "rps") for lb in labels}, "logx": logx},
        {"kind": "line", "title": "host CPU per request (the stack's own, NIC apart)",
         "xlabel": xlabel, "ylabel": "µs", "x": xs,
         "series": {lb: col(lb, "host_cpu_us") for lb in labels}, "logx": logx},
        {"kind": "line", "title": "spliced / host relay, req/s", "xlabel": xlabel,
         "ylabel": "x (relay = 1)", "x": xs, "series": series, "logx": logx}]}
    return data, rows, xs, plot, ratios


def _sweep_run(ctx):
    """(client seconds, runs per point): quick, one 2 s run; full, the median of three
    3 s runs, made one after the other per point and proxy."""
    return ("2", 1) if ctx.quick else ("3", 3)


def _sweep_setup(ctx):
    sec, n = _sweep_run(ctx)
    return "%s s per run, %s" % (sec, "one run per point" if n == 1 else
                                 "the run with the median req/s of %d per point" % n)


def _span(pairs, i):
    v = [p[i] for p in pairs if p[i] is not None]
    return "-" if not v else "%.2f-%.2fx" % (min(v), max(v))


def _ends(pairs, i):
    v = [p[i] for p in pairs]
    return "-" if not v else "%s -> %s" % (_fmt_ratio(v[0]), _fmt_ratio(v[-1]))


def _facts(rows, ratios, xdp_unavailable):
    spliced = [r for r in rows if r["placement"] != "relay"]
    return {"ratios": {p: [{"x": x, "rps": a, "host_cpu": b} for x, a, b in v]
                       for p, v in ratios.items()},
            "placements": sorted(ratios), "xdp_unavailable": xdp_unavailable,
            "errors": sum(r["errors"] for r in rows),
            "spliced_host_resp_bytes_per_req_max": max(
                (r["host_resp_bytes_per_req"] for r in spliced), default=None)}


_SWEEP_NOTE = (
    "Our NIC is software on the same two cores as the host, the client and the nginx "
    "backends (the inline NIC in the proxy's own process, XDP in the kernel), and our host "
    "proxy is Python, not epproxy on mTCP: where connections are short the machine's two "
    "cores, not the host stack, bound the throughput, and the gain shows in host CPU per "
    "request; where they are long a spliced connection costs the host nothing per "
    "request, so the ratio becomes the NIC's relay speed over the Python relay's, well "
    "above the paper's.")


def fig12(ctx):
    sizes = "64,4096" if ctx.quick else "64,256,1024,4096,16384,65536"
    data, rows, xs, plot, ratios = _sweep(
        ctx, "fig12", ["--skip-txns", "--sizes", sizes], "size", "response size (bytes)")
    comparison = []
    for place, v in ratios.items():
        small = [p for p in v if p[0] <= 4096]
        comparison.append({"what": "spliced (NIC %s) / host relay, req/s, persistent "
                                   "connections" % place,
                           "paper": "1.4-2.2x (epproxy: AccelTCP / mTCP, 64 B-4 KiB)",
                           "ours": "%s (64 B-4 KiB); %s (%d B-%d B)" % (
                               _span(small, 1), _span(v, 1), xs[0], xs[-1])})
        comparison.append({"what": "host CPU per request, relay / spliced (NIC %s)" % place,
                           "paper": "-", "ours": _span(v, 2)})
    return _sweep_result(data, rows, plot, ratios, comparison,
                         "benchmarks/proxy_sweep.py --skip-txns: `acceltcp serve lb` in "
                         "front of two nginx backends (namespace atcp-sweep), the host "
                         "relaying every request vs splicing each connection on the NIC "
                         "after its first request (`--offload setup,splice`); "
                         "benchmarks/http_client.c, 32 persistent connections, GET of a "
                         "file of each size; %s." % _sweep_setup(ctx))


def _sweep_result(data, rows, plot, ratios, comparison, setup):
    if data.get("xdp_unavailable"):
        comparison.append({"what": "NIC xdp", "paper": "-",
                           "ours": "not measured: " + data["xdp_unavailable"]})
    cols, table = _table([{k: r.get(k) for k in _SWEEP_COLUMNS} for r in rows])
    return Result(columns=cols, rows=table, comparison=comparison, note=_SWEEP_NOTE,
                  plot=plot, samples=[data],
                  facts=_facts(rows, ratios, data.get("xdp_unavailable")), setup=setup)


def fig13(ctx):
    txns = "1,16" if ctx.quick else "1,2,4,8,16,32,64,128"
    data, rows, xs, plot, ratios = _sweep(
        ctx, "fig13", ["--skip-sizes", "--txns", txns, "--txn-size", "64"], "txns_per_conn",
        "transactions per connection")
    comparison = []
    for place, v in ratios.items():
        comparison.append({"what": "spliced (NIC %s) / host relay, req/s, %d -> %d "
                                   "transactions per connection, 64 B" % (place, xs[0],
                                                                          xs[-1]),
                           "paper": "1.8x -> 2.4x (1 -> 128)", "ours": _ends(v, 1)})
        comparison.append({"what": "host CPU per request, relay / spliced (NIC %s)" % place,
                           "paper": "-", "ours": _ends(v, 2)})
    return _sweep_result(data, rows, plot, ratios, comparison,
                         "benchmarks/proxy_sweep.py --skip-sizes: as fig12, with 64 B "
                         "responses; the client closes each connection after k "
                         "transactions (the k-th request says `Connection: close`) and "
                         "opens a new one, 32 at a time; %s." % _sweep_setup(ctx))
