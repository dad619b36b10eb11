"""Application benchmark (issue 5): kv and lb on the stack against Redis and nginx on the
kernel stack, side by side in one run, driven by the same real clients.

Run as root, from the repository:

    .venv/bin/python benchmarks/apps.py [--repeat 3] [--json out.json]

Setup. The script creates its own two namespaces (`acceltcp testbed up --ref`):
`atcp-apps` holds the TAP's kernel end (198.18.0.1; the stack is 198.18.0.2) and every
client and backend; `atcp-apps-ref` (198.18.1.2, reached from atcp-apps over a veth whose
atcp-apps end is 198.18.1.1) holds the kernel-stack reference servers. The clients
(redis-benchmark, wrk) run in atcp-apps against both, so they are the same programs on
the same kernel; only the server side changes. The namespaces are removed at the end,
also after an error or Ctrl-C. The TAP gets its own name (atcpapp0) so that another
testbed on the machine is left alone.

1. kv. `redis-benchmark -t get|set -n N -c 32 -r 1000 -d 2 --csv`, with `-k 0` (one
   connection per request: connect, request, reply, the client closes) and `-k 1`
   (persistent), against `acceltcp serve kv` (no NIC; NIC process and inline with the
   setup + teardown offloads), `acceltcp kv-threads` (the same kv engine on kernel
   sockets, one kernel thread per connection: kernel threads against the stack's
   user-level, cooperative callbacks) and `redis-server` (no persistence), the last two
   in atcp-apps-ref. --kv-tests picks GET, SET and/or USR.
   1000 keys of 16 bytes and 2-byte values, as the USR workload the AccelTCP paper uses
   (USR is 99.8 % GET: GET is the main figure; SET is reported too). USR is the
   workload itself, 99.8 % GET and 0.2 % SET of random keys with every reply checked,
   from benchmarks/rr_client.c's `usr` mode (epoll, one core; the same workload as
   `acceltcp load kv`), for --kv-seconds per run. Every server is
   started once and populated by a short SET run before the measured runs. Each
   short-lived run starts --settle seconds after the one before: redis-benchmark closes
   first, and the TIME-WAIT ports of the run before become reusable (tcp_tw_reuse) only
   once their last timestamp is over 1 s old; without the pause, the client's connect()
   skips young TIME-WAIT ports and later runs against redis-server come out markedly
   slower. Against redis-server the single-threaded client is near one full core
   anyway (the cli % column): its rates are lower bounds.
2. lb. Two nginx backends (one process each) in atcp-apps serve a SpecWeb-like file set
   (the one of tests/net/test_lb_net.py: 60 files, 30 B .. 5,670 B). `wrk -t1 -c32 -d S
   -s files.lua` requests random files of the set, on persistent connections and with
   `Connection: close` (one connection per request), through: `acceltcp serve lb` with
   the host relaying (no NIC), the same spliced by the NIC (process and inline,
   `--offload setup,splice`), all with the TAP's checksum/TSO offloads off
   (`--no-offload`: splicing translates full-checksum MTU frames, and the relay is
   measured the same way), and two reverse proxies on the kernel stack in atcp-apps-ref:
   nginx (upstream keepalive on by default, --nginx-keepalive) and haproxy (if
   installed; a config generated per run: mode http, round-robin, one thread,
   http-keep-alive for persistent runs, http-server-close for Connection: close ones).
   wrk reports the mean and the 50th, 90th and 99th latency percentiles. The kernel
   proxies reach the same two nginx processes at 198.18.1.1 (the veth end of atcp-apps):
   198.18.0.1 exists only while a stack holds the TAP. Before each measurement a few
   files (smallest, largest, some others) are fetched through the proxy with curl and
   must be byte-exact.

   Every lb run starts a new proxy whose backends are a port pair of its own (the two
   nginx processes listen on one pair per run), so that no run meets the backend
   TIME-WAITs of the runs before it: with `Connection: close` the backends close first
   and hold each backend connection in TIME-WAIT for 60 s. (This benchmark found that
   the stack's per-connection timestamp offsets made about half of the SYNs reusing
   such a 4-tuple fail Linux's PAWS check, each costing a SYN retransmission; the stack
   now keeps one TS offset per address pair, as Linux does, and the RTOs column shows
   whether any remain.)

Profiles: with ATCP_PROFILE_DIR=DIR in the environment every stack server runs under
cProfile (`serve --profile`), one file per server in DIR.

Control rows (--no-controls leaves them out): the NIC process in front with nothing
offloaded (`--nic process --offload none`). Moving the TAP's reads and writes into the
NIC process takes them out of the host's accounting even when nothing is offloaded;
against this row the offloads' own share shows.

Measurement. The client runs --repeat times per figure and the run with the median
rate is kept (all rates are in the JSON). Around every client run: the stack's own CPU
accounting (`cpu.stack_s`, SIGUSR1 stats snapshots: the host's share, application
included, with the NIC's busy time `cpu.nic_s` measured apart), the server's process
CPU (utime + stime from /proc; for the stack the host process, for the NIC process its
own), and the whole machine's busy CPU from /proc/stat (all cores: client, backends,
servers, kernel; anything else running on the machine too, so run it on a quiet
machine). "Host CPU" is the figure AccelTCP reduces: for the stack `cpu.stack_s`, for
redis-server and nginx their process CPU (their kernel TCP work in syscalls included;
softirq work charged to other processes is only in the all-host column). Rates are the
clients' own (redis-benchmark's requests/s; wrk's requests and bytes read over its
duration, headers included).

Targets (issue 5): spliced lb >= 5x the host relay in requests per host-CPU second (the
paper: 11.9x over HAProxy); kv with offload >= 2x kv without on short-lived connections
(the paper's Redis gain: 1.6-2.3x in throughput). Both are evaluated at the end from
the measured figures, in throughput and in host CPU per request.
"""

import argparse
import csv
import hashlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import realnet  # noqa: E402  (benchmarks/realnet.py: the shared helpers)
from realnet import PY, cpu_busy_s, median_run, ns, proc_cpu_s  # noqa: E402

from acceltcp.testbed import netns as tb  # noqa: E402
from acceltcp.testbed import website  # noqa: E402
from acceltcp.testbed.sigterm import raise_on_sigterm  # noqa: E402
from acceltcp.testbed.procs import fetch_stats  # noqa: E402

NS = "atcp-apps"
REF = "atcp-apps-ref"
TAP = "atcpapp0"
STACK_IP = tb.STACK_IP          # the stack, on the TAP
PEER_IP = tb.PEER_IP            # atcp-apps's end of the TAP (clients, backends)
REF_IP = tb.REF_IP              # the kernel-stack reference servers
REF_PEER_IP = tb.REF_PEER_IP    # atcp-apps's end of the veth to the reference namespace
KV_PORT = 6379
LB_PORT = 8080
BACKEND_BASE = 8100            # backend port pairs from here, one per lb run
NFILES = 60
KV_KEYS = 1000
KV_THREADS = "kv-threads (kernel)"

#: every process this script starts that is not ended yet (ended on the way out)
_STARTED = []


def use_names(netns, tap):
    """Run this module's helpers (StackServer, KernelServer's probe, run_client,
    _check_files) in namespace `netns` with the stack's TAP `tap` instead of atcp-apps /
    atcpapp0: for another script built on them (benchmarks/proxy_sweep.py), so that its
    runs and this script's never share a namespace."""
    global NS, TAP
    NS, TAP = netns, tap


def end_started():
    """End every process this module started that is still running (on the way out)."""
    for proc in list(_STARTED):
        _end(proc, timeout=5)


# ------------------------------------------------------------------------ servers
def _end(p, timeout=15):
    """SIGTERM, then SIGKILL, one process we started; reaped."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
    if p in _STARTED:
        _STARTED.remove(p)


class StackServer(realnet.Server):
    """`acceltcp serve APP` in NS; `sample()` reads its counters (SIGUSR1 snapshot)."""

    def __init__(self, app, port, extra, tmp, tag):
        self.kind = "stack"
        stats = os.path.join(tmp, "%s-%s.json" % (app, tag))
        argv = [PY, "-m", "acceltcp.cli", "serve", app, "--port", str(port), "--netns", NS,
                "--tap", TAP, "--stats-file", stats] + list(extra)
        prof = os.environ.get("ATCP_PROFILE_DIR")
        if prof:                                # cProfile each server: DIR/APP-TAG-NS.prof
            os.makedirs(prof, exist_ok=True)
            argv += ["--profile", os.path.join(prof, "%s-%s-%d.prof" % (
                app, tag, time.monotonic_ns()))]
        super().__init__(argv, "stderr", stats)
        _STARTED.append(self.p)
        self.nic_pid = None
        st = self.snapshot()
        if st.get("placement") == "process":
            self.nic_pid = (st.get("nic") or {}).get("pid")

    def snapshot(self, timeout=10.0):
        """SIGUSR1: the server rewrites its stats file (a NIC process's counters as of
        now); -> the JSON."""
        try:
            return fetch_stats(self.p, self.stats, timeout)
        except TimeoutError as e:
            raise RuntimeError("%s: %s" % (" ".join(self.p.args[4:6]), e)) from None

    def sample(self, after=False):
        def proc():
            d = {"proc_s": proc_cpu_s(self.p.pid)}
            if self.nic_pid:
                d["nic_proc_s"] = proc_cpu_s(self.nic_pid)
            return d
        d = proc() if after else {}
        st = self.snapshot()
        if not after:
            d.update(proc())
        d["stack_s"] = st["cpu"]["stack_s"]
        d["nic_s"] = st["cpu"].get("nic_s", 0.0)
        d["counters"] = st["counters"]
        d["app"] = st["app_stats"]
        d["nic_counters"] = (st.get("nic") or {}).get("counters") or {}
        if st.get("nic_lost"):
            raise RuntimeError("the NIC process was lost: %s" % st.get("nic"))
        return d

    def stop(self):
        st = super().stop()
        if self.p in _STARTED:
            _STARTED.remove(self.p)
        return st


class KernelServer:
    """A kernel-stack server (redis-server, nginx) in namespace `netns`; ready when
    `ip:port` accepts a connection (probed from atcp-apps, where the clients are)."""

    def __init__(self, netns, argv, ip, port, log):
        self.kind = "kernel"
        self.log = log
        with open(log, "wb") as f:
            self.p = subprocess.Popen(ns(netns, argv), stdout=f, stderr=subprocess.STDOUT)
        _STARTED.append(self.p)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if _port_open(ip, port):
                return
            if self.p.poll() is not None:
                break
            time.sleep(0.1)
        _end(self.p)
        raise RuntimeError("%s did not start: %s" % (argv[0], Path(log).read_text()[-2000:]))

    def sample(self, after=False):
        return {"proc_s": proc_cpu_s(self.p.pid)}

    def stop(self):
        _end(self.p)
        return {}


def _port_open(ip, port):
    r = subprocess.run(ns(NS, ["bash", "-c", "exec 3<>/dev/tcp/%s/%d" % (ip, port)]),
                       capture_output=True, timeout=10)
    return r.returncode == 0


def measured(server, client):
    """Run `client()` -> (its result, CPU deltas around it)."""
    b = server.sample()
    c0 = cpu_busy_s()
    res = client()
    c1 = cpu_busy_s()
    a = server.sample(after=True)
    d = {"all_s": c1 - c0, "proc_s": a["proc_s"] - b["proc_s"]}
    if server.kind == "stack":
        d["host_s"] = a["stack_s"] - b["stack_s"]
        d["nic_s"] = a["nic_s"] - b["nic_s"]
        if "nic_proc_s" in a:
            d["nic_proc_s"] = a["nic_proc_s"] - b["nic_proc_s"]
        d["counters"] = _delta(b["counters"], a["counters"])
        d["app"] = _delta(b["app"], a["app"])
        d["nic_counters"] = _delta(b["nic_counters"], a["nic_counters"])
    else:
        d["host_s"] = d["proc_s"]          # the server's process is its host CPU
    return res, d


def _delta(b, a):
    return {k: v - b.get(k, 0) for k, v in a.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def median_of(fn, repeat, key):
    """realnet.median_run (the run with the median `key`, all values in "runs", sorted),
    plus the values in the order the runs were made ("runs_in_order")."""
    order = []

    def run():
        r = fn()
        order.append(r[key])
        return r
    out = median_run(run, repeat, key)
    out["runs_in_order"] = order
    return out


def run_client(argv, timeout):
    """subprocess.run in NS -> (CompletedProcess, wall seconds, the client's CPU seconds)."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    r = subprocess.run(ns(NS, argv), capture_output=True, text=True, timeout=timeout)
    el = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r, el, (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)


def _per_req_us(seconds, n):
    return None if seconds is None else 1e6 * seconds / max(n, 1)


# ------------------------------------------------------------------------ kv
def redis_benchmark(host, test, n, keepalive, conc, timeout):
    argv = ["redis-benchmark", "-h", host, "-p", str(KV_PORT), "-t", test, "-n", str(n),
            "-c", str(conc), "-k", "1" if keepalive else "0", "-r", str(KV_KEYS), "-d", "2",
            "--csv"]
    r, el, cpu = run_client(argv, timeout)
    rows = list(csv.reader(io.StringIO(r.stdout)))
    rates = {row[0]: float(row[1]) for row in rows[1:] if len(row) > 1}
    if r.returncode != 0 or "error" in (r.stdout + r.stderr).lower() or test.upper() not in rates:
        raise RuntimeError("redis-benchmark %s -k %d against %s failed (%d): %s %s"
                           % (test, keepalive, host, r.returncode, r.stdout[-1000:],
                              r.stderr[-1000:]))
    return {"rps": rates[test.upper()], "elapsed_s": el, "client_cpu_s": cpu}


def usr_client(exe, host, keepalive, conc, seconds):
    """rr_client's USR workload (99.8 % GET, 0.2 % SET, replies checked) for `seconds`
    -> the redis_benchmark() shape, plus "requests" (the client's count)."""
    argv = [exe, host, str(KV_PORT), str(conc), str(seconds), "64",
            "0" if keepalive else "1", "usr"]
    r, el, cpu = run_client(argv, timeout=seconds + 60)
    try:
        res = json.loads(r.stdout)
    except ValueError:
        res = {}
    if r.returncode != 0 or not res.get("transactions") or res["errors"] or res["bad_replies"]:
        raise RuntimeError("rr_client usr -k %d against %s failed (%d): %s %s"
                           % (keepalive, host, r.returncode, r.stdout[-1000:],
                              r.stderr[-1000:]))
    return {"rps": res["tps"], "elapsed_s": el, "client_cpu_s": cpu,
            # the server's work covers the transactions drained after the deadline too
            "requests": res["transactions"] + res["drained"], "sets": res["sets"]}


def kv_run(label, server, host, test, n, keepalive, a):
    """One kv client run (`test`: get, set or usr) against `server`, -c a.kv_conc."""
    conc = a.kv_conc
    if not keepalive:
        # redis-benchmark closes first: its side keeps each connection in TIME-WAIT, and
        # tcp_tw_reuse gives such a port to a new connection only once its last
        # timestamp is over 1 s old. Right after a run, connect() has to skip the young
        # ones, which slows the client down at redis-server's rates.
        time.sleep(a.settle)
    if test == "usr":
        res, d = measured(server, lambda: usr_client(a.rr_client, host, keepalive, conc,
                                                     a.kv_seconds))
        n = res["requests"]
    else:
        res, d = measured(server, lambda: redis_benchmark(host, test, n, keepalive, conc,
                                                          timeout=240))
    out = {"server": label, "test": test.upper(), "keepalive": keepalive, "requests": n,
           "rps": res["rps"], "elapsed_s": res["elapsed_s"],
           "client_cpu_pct": 100.0 * res["client_cpu_s"] / res["elapsed_s"],
           "host_cpu_us": _per_req_us(d["host_s"], n),
           "proc_cpu_us": _per_req_us(d["proc_s"], n),
           "nic_cpu_us": _per_req_us(d.get("nic_s"), n) if "nic_s" in d else None,
           "nic_proc_cpu_us": _per_req_us(d.get("nic_proc_s"), n) if "nic_proc_s" in d
           else None,
           "all_cpu_us": _per_req_us(d["all_s"], n)}
    if server.kind == "stack":
        app, c = d["app"], d["counters"]
        bad = app.get("error_replies", 0) + app.get("protocol_errors", 0)
        if bad:
            raise RuntimeError("%s: %d error replies / protocol errors" % (label, bad))
        out["conns_reset"] = c.get("conns_reset", 0)
        out["rto_timeouts"] = c.get("rto_timeouts", 0)
        out["commands"] = app.get("commands_processed")
        # how much of the short-lived load the NIC's offloads actually took
        out["cookie_conns"] = c.get("cookie_conns", 0)
        out["teardown_accepted"] = c.get("teardown_accepted", 0)
        out["frames_in_per_req"] = c.get("frames_in", 0) / n
        out["frames_out_per_req"] = c.get("frames_out", 0) / n
    return out


def kv_section(a, tmp):
    servers = [("kv, no NIC", "stack", [])]
    if a.controls:
        # the NIC process in front, nothing offloaded: what moving the TAP I/O into
        # another process does by itself
        servers.append(("kv + NIC process, no offload", "stack",
                        ["--nic", "process", "--offload", "none"]))
    for place in a.placements:
        servers.append(("kv + NIC %s, setup+teardown" % place, "stack",
                        ["--nic", place, "--offload", "setup,teardown"]))
    # the same kv engine on kernel sockets, a thread per connection (kernel threads
    # against the stack's user-level, cooperative callbacks; the paper's Table 4)
    servers.append((KV_THREADS, "threads", None))
    servers.append(("redis-server (kernel)", "redis", None))
    rows = []
    for label, kind, extra in servers:
        if kind == "stack":
            srv = StackServer("kv", KV_PORT, extra, tmp, _slug(label))
            host = STACK_IP
        elif kind == "threads":
            srv = KernelServer(REF, [PY, "-m", "acceltcp.cli", "kv-threads", "--host", REF_IP,
                                     "--port", str(KV_PORT)],
                               REF_IP, KV_PORT, os.path.join(tmp, "kv-threads.log"))
            host = REF_IP
        else:
            srv = KernelServer(REF, ["redis-server", "--port", str(KV_PORT), "--bind", REF_IP,
                                     "--save", "", "--appendonly", "no",
                                     "--protected-mode", "no", "--daemonize", "no",
                                     "--dir", tmp, "--databases", "1"],
                               REF_IP, KV_PORT, os.path.join(tmp, "redis.log"))
            host = REF_IP
        try:
            # populate the key space (10 SETs per key on average: practically every GET
            # hits) and warm the server up
            redis_benchmark(host, "set", 10 * KV_KEYS, True, a.kv_conc, timeout=120)
            for keepalive in (False, True):
                n = a.kv_persistent if keepalive else a.kv_short
                for test in a.kv_tests:
                    rows.append(median_of(
                        lambda t=test, k=keepalive, nn=n, lb=label, sv=srv, h=host: kv_run(
                            lb, sv, h, t, nn, k, a),
                        a.repeat, "rps"))
                    _progress("kv", rows[-1])
        finally:
            srv.stop()
    return rows


# ------------------------------------------------------------------------ lb
PROXY_BODY = """
    upstream backends {
        server %(b1)s;
        server %(b2)s;
%(keepalive)s
    }
    server {
        listen %(ip)s:%(port)d backlog=4096;
        location / {
            proxy_pass http://backends;
%(ka_headers)s
        }
    }
"""


def _nginx(netns, tmp, name, body, ip, port):
    d = os.path.join(tmp, name)
    return KernelServer(netns, ["nginx", "-c", website.nginx_conf(d, body), "-g",
                                "daemon off;"], ip, port, os.path.join(d, "stdout.log"))


HAPROXY = "haproxy (kernel)"

#: haproxy as the second kernel-stack proxy: HTTP mode (each request parsed), the two
#: backends round-robin, one thread (as the one nginx process), no logging. Persistent
#: runs keep both sides alive (http-keep-alive, idle server connections reused as
#: haproxy does by default); `Connection: close` runs close the server side after each
#: response as the client's side closes (http-server-close).
HAPROXY_CFG = """global
    nbthread 1
    maxconn 4096
    stats timeout 30s

defaults
    mode http
    option %(conn_mode)s
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s

frontend fe
    bind %(ip)s:%(port)d
    default_backend be

backend be
    balance roundrobin
%(servers)s
"""


def _haproxy(netns, tmp, name, backends, ip, port, close):
    """haproxy in the foreground (-db) in `netns`, its config generated in tmp/name."""
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "haproxy.cfg")
    Path(cfg).write_text(HAPROXY_CFG % {
        "conn_mode": "http-server-close" if close else "http-keep-alive",
        "ip": ip, "port": port,
        "servers": "\n".join("    server b%d %s" % (i + 1, b)
                             for i, b in enumerate(backends))})
    r = subprocess.run(["haproxy", "-c", "-q", "-f", cfg], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("haproxy -c %s: %s" % (cfg, (r.stdout + r.stderr)[-2000:]))
    return KernelServer(netns, ["haproxy", "-db", "-f", cfg], ip, port,
                        os.path.join(d, "stdout.log"))


def _haproxy_version(path):
    r = subprocess.run([path, "-v"], capture_output=True, text=True)
    return (r.stdout.splitlines() or ["?"])[0]


WRK_LUA = """
-- random files of the set, uniformly; the results as one JSON line at the end
local paths = {%(paths)s}
local n = #paths
math.randomseed(%(seed)d)
request = function()
  return wrk.format(nil, paths[math.random(n)])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('APPS-JSON {"requests": %%.0f, "bytes": %%.0f, "duration_us": %%.0f, '
    .. '"connect": %%.0f, "read": %%.0f, "write": %%.0f, "status": %%.0f, "timeout": %%.0f, '
    .. '"latency_mean_us": %%.1f, "latency_p50_us": %%.1f, "latency_p90_us": %%.1f, '
    .. '"latency_p99_us": %%.1f}\\n',
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99)))
end
"""


def wrk(script, host, port, seconds, conns, close):
    argv = ["wrk", "-t", "1", "-c", str(conns), "-d", "%ds" % seconds, "--timeout", "5s",
            "-s", script]
    if close:
        argv += ["-H", "Connection: close"]
    r, el, cpu = run_client(argv + ["http://%s:%d/" % (host, port)], seconds + 60)
    lines = [x for x in r.stdout.splitlines() if x.startswith("APPS-JSON ")]
    if r.returncode != 0 or not lines:
        raise RuntimeError("wrk against %s:%d failed (%d): %s %s" % (
            host, port, r.returncode, r.stdout[-1000:], r.stderr[-1000:]))
    out = json.loads(lines[-1][len("APPS-JSON "):])
    out["client_cpu_s"] = cpu
    return out


def lb_run(label, server, script, host, seconds, conns, close):
    res, d = measured(server, lambda: wrk(script, host, LB_PORT, seconds, conns, close))
    n = res["requests"]
    el = res["duration_us"] / 1e6
    errors = sum(res[k] for k in ("connect", "read", "write", "status", "timeout"))
    out = {"proxy": label, "close": close, "requests": n, "rps": n / el,
           "gbit_s": res["bytes"] * 8 / el / 1e9, "bytes_per_resp": res["bytes"] / max(n, 1),
           "errors": errors, "wrk_errors": {k: res[k] for k in ("connect", "read", "write",
                                                                  "status", "timeout")},
           "latency_mean_us": res["latency_mean_us"], "latency_p50_us": res["latency_p50_us"],
           "latency_p90_us": res["latency_p90_us"], "latency_p99_us": res["latency_p99_us"],
           "client_cpu_pct": 100.0 * res["client_cpu_s"] / el,
           "host_cpu_us": _per_req_us(d["host_s"], n),
           "proc_cpu_us": _per_req_us(d["proc_s"], n),
           "nic_cpu_us": _per_req_us(d["nic_s"], n) if "nic_s" in d else None,
           "nic_proc_cpu_us": _per_req_us(d["nic_proc_s"], n) if "nic_proc_s" in d else None,
           "all_cpu_us": _per_req_us(d["all_s"], n),
           "host_cpu_s": d["host_s"], "elapsed_s": el,
           "req_per_host_cpu_s": n / d["host_s"] if d["host_s"] > 0 else float("inf")}
    if server.kind == "stack":
        app = d["app"]
        out["connections"] = app.get("connections", 0)
        out["lb_requests"] = app.get("requests", 0)
        out["splice_requested"] = app.get("splice_requested", 0)
        out["splice_failed"] = app.get("splice_failed", 0)
        out["relayed_requests"] = app.get("relayed_requests", 0)
        out["nic_splice_frames"] = d["nic_counters"].get("splice_frames", 0)
        out["host_frames"] = d["counters"].get("frames_in", 0) + \
            d["counters"].get("frames_out", 0)
        out["rto_timeouts"] = d["counters"].get("rto_timeouts", 0)
        out["conns_reset"] = d["counters"].get("conns_reset", 0)
    return out


def _check_files(host, files):
    """curl a sample of the files through the proxy: byte-exact, or RuntimeError."""
    names = sorted(files, key=lambda x: files[x][0])
    sample = names[:2] + names[-2:] + names[len(names) // 2 - 2:len(names) // 2 + 2]
    for name in sample:
        r = subprocess.run(ns(NS, ["curl", "-s", "-f", "--max-time", "10", "-o", "-",
                                   "http://%s:%d/%s" % (host, LB_PORT, name)]),
                           capture_output=True, timeout=30)
        if r.returncode != 0 or hashlib.sha256(r.stdout).hexdigest() != files[name][1]:
            raise RuntimeError("%s through %s: curl exit %d, %d bytes, not byte-exact"
                               % (name, host, r.returncode, len(r.stdout)))
    return len(sample)


def lb_section(a, tmp):
    www = os.path.join(tmp, "www")
    files = website.make_site(www, NFILES)
    script = os.path.join(tmp, "files.lua")
    Path(script).write_text(WRK_LUA % {
        "paths": ", ".join('"/%s"' % name for name in sorted(files)), "seed": 5})
    proxies = [("lb, host relay", "stack", ["--no-offload"])]
    if a.controls:
        # the NIC process in front, everything relayed by the host: the I/O placement alone
        proxies.append(("lb + NIC process, relay", "stack",
                        ["--no-offload", "--nic", "process", "--offload", "none"]))
    for place in a.placements:
        proxies.append(("lb + NIC %s, spliced" % place, "stack",
                        ["--no-offload", "--nic", place, "--offload", "setup,splice"]))
    proxies.append(("nginx proxy (kernel)", "nginx", None))
    haproxy = shutil.which("haproxy")
    if haproxy:
        proxies.append((HAPROXY, "haproxy", None))
    # One pair of backend ports per run (see the module docstring: TIME-WAIT).
    nruns = len(proxies) * 2 * a.repeat
    pairs = iter([(BACKEND_BASE + 2 * i, BACKEND_BASE + 2 * i + 1) for i in range(nruns)])
    info = {"files": len(files), "mean_file_bytes": sum(s for s, _ in files.values())
            / len(files), "min_file_bytes": min(s for s, _ in files.values()),
            "max_file_bytes": max(s for s, _ in files.values()),
            "nginx_upstream_keepalive": a.nginx_keepalive,
            "haproxy": _haproxy_version(haproxy) if haproxy else None,
            "haproxy_unavailable": None if haproxy else
            "haproxy not found (Debian package haproxy; make system-deps installs it)",
            "backend_ports": [BACKEND_BASE, BACKEND_BASE + 2 * nruns - 1]}
    backends = []
    rows = []
    try:
        for k in range(2):                       # nginx 1: even ports, nginx 2: odd ports
            ports = [BACKEND_BASE + 2 * i + k for i in range(nruns)]
            backends.append(_nginx(NS, tmp, "backend%d" % (k + 1),
                                   website.backend_body(ports, www),
                                   "127.0.0.1", BACKEND_BASE + k))

        def one(label, kind, extra, close):
            b1, b2 = next(pairs)
            if kind == "stack":
                srv = StackServer("lb", LB_PORT, extra + [
                    "--backend", "%s:%d" % (PEER_IP, b1),
                    "--backend", "%s:%d" % (PEER_IP, b2)], tmp, _slug(label))
                host = STACK_IP
            elif kind == "haproxy":
                srv = _haproxy(REF, tmp, "haproxy-%d" % b1, [
                    "%s:%d" % (REF_PEER_IP, b1), "%s:%d" % (REF_PEER_IP, b2)],
                    REF_IP, LB_PORT, close)
                host = REF_IP
            else:
                ka = a.nginx_keepalive
                srv = _nginx(REF, tmp, "proxy", PROXY_BODY % {
                    "b1": "%s:%d" % (REF_PEER_IP, b1), "b2": "%s:%d" % (REF_PEER_IP, b2),
                    "keepalive": "        keepalive %d;" % ka if ka else "",
                    "ka_headers": ('            proxy_http_version 1.1;\n'
                                   '            proxy_set_header Connection "";') if ka
                    else "",
                    "ip": REF_IP, "port": LB_PORT}, REF_IP, LB_PORT)
                host = REF_IP
            try:
                checked = _check_files(host, files)
                r = lb_run(label, srv, script, host, a.lb_seconds, a.lb_conns, close)
            finally:
                st = srv.stop()
            if kind == "stack" and st.get("nic_lost"):
                raise RuntimeError("%s: the NIC process was lost" % label)
            r["files_checked"] = checked
            r["backends"] = [b1, b2]
            return r

        for label, kind, extra in proxies:
            for close in (False, True):
                rows.append(median_of(lambda lb=label, k=kind, x=extra, c=close:
                                       one(lb, k, x, c), a.repeat, "rps"))
                _progress("lb", rows[-1])
    finally:
        for srv in backends:
            srv.stop()
    return rows, info


# ------------------------------------------------------------------------ main
def _slug(label):
    return "".join(ch if ch.isalnum() else "-" for ch in label).strip("-")


def _progress(section, r):
    print("  done: %s %s%s: %.0f req/s" % (
        section, r.get("server") or r.get("proxy"),
        (" %s -k %d" % (r["test"], r["keepalive"])) if section == "kv"
        else (" close" if r["close"] else " persistent"), r["rps"]),
        file=sys.stderr, flush=True)


def _sysctls(netns):
    out = {}
    for key in ("net.ipv4.tcp_tw_reuse", "net.ipv4.ip_local_port_range",
                "net.ipv4.tcp_timestamps"):
        r = subprocess.run(ns(netns, ["sysctl", "-n", key]), capture_output=True, text=True)
        out[key] = " ".join(r.stdout.split())
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3,
                   help="client runs per figure; the run with the median rate is kept (3)")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--kv-short", type=int, default=20000, metavar="N",
                   help="requests per short-lived (-k 0) redis-benchmark run (%(default)s)")
    p.add_argument("--kv-persistent", type=int, default=100000, metavar="N",
                   help="requests per persistent (-k 1) redis-benchmark run (%(default)s)")
    p.add_argument("--kv-conc", type=int, default=32, help="redis-benchmark -c (32)")
    p.add_argument("--kv-tests", default="get,set,usr",
                   help="kv tests, comma-separated: get and set (redis-benchmark), usr "
                        "(rr_client's USR workload) (%(default)s)")
    p.add_argument("--kv-seconds", type=float, default=5.0, metavar="S",
                   help="seconds per USR run (%(default)s)")
    p.add_argument("--settle", type=float, default=2.0, metavar="S",
                   help="pause before each short-lived kv run, seconds (2: the client's "
                        "TIME-WAIT ports of the run before become reusable)")
    p.add_argument("--lb-seconds", type=int, default=5, help="wrk -d, seconds (5)")
    p.add_argument("--lb-conns", type=int, default=32, help="wrk -c (32)")
    p.add_argument("--nginx-keepalive", type=int, default=32, metavar="N",
                   help="upstream keepalive connections of the nginx proxy (0: off; 32)")
    p.add_argument("--placements", default="process,inline,xdp",
                   help="NIC placements to measure, comma-separated (process,inline,xdp)")
    p.add_argument("--no-controls", dest="controls", action="store_false",
                   help="leave out the control rows (NIC process without offloads)")
    p.add_argument("--skip-kv", action="store_true")
    p.add_argument("--skip-lb", action="store_true")
    a = p.parse_args(argv)
    a.placements = [x for x in a.placements.split(",") if x]
    if any(x not in ("process", "inline", "xdp") for x in a.placements):
        p.error("--placements: process, inline and/or xdp")
    a.kv_tests = [x for x in a.kv_tests.split(",") if x]
    if not a.kv_tests or any(x not in ("get", "set", "usr") for x in a.kv_tests):
        p.error("--kv-tests: get, set and/or usr")
    if os.geteuid() != 0:
        print("benchmarks/apps.py needs root (namespaces, TAP)", file=sys.stderr)
        return 2
    restore = raise_on_sigterm()
    try:
        started = time.time()
        results = {"kv": [], "lb": [], "machine": {"cpus": os.cpu_count(),
                                                 "kernel": os.uname().release},
                   "params": {k: v for k, v in vars(a).items() if k != "json"}}
        realnet.cli("testbed", "down", "--netns", NS, "--ref-netns", REF)
        realnet.cli("testbed", "up", "--ref", "--netns", NS, "--ref-netns", REF)
        try:
            results["client_sysctls"] = _sysctls(NS)
            with tempfile.TemporaryDirectory() as tmp:
                a.rr_client = realnet.build_client(tmp)
                if not a.skip_kv:
                    results["kv"] = kv_section(a, tmp)
                if not a.skip_lb:
                    results["lb"], results["lb_info"] = lb_section(a, tmp)
        finally:
            end_started()
            realnet.cli("testbed", "down", "--netns", NS, "--ref-netns", REF)
        results["wall_s"] = time.time() - started
        results["verdicts"] = verdicts(results, a)
        report(results, a)
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=1) + "\n")
        return 0
    finally:
        restore()


# ------------------------------------------------------------------------ report
def _find(rows, key, **match):
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def verdicts(results, a):
    """The issue's two targets from the measured rows (the short-lived GET for kv; both
    connection modes for lb), with the control row's ratio where there is one."""
    out = {}
    kv, lb = results["kv"], results["lb"]
    for test in ("GET", "SET", "USR"):
        base = _find(kv, "server", server="kv, no NIC", test=test, keepalive=False)
        ctl = _find(kv, "server", server="kv + NIC process, no offload", test=test,
                    keepalive=False)
        for place in a.placements:
            r = _find(kv, "server", server="kv + NIC %s, setup+teardown" % place, test=test,
                      keepalive=False)
            if base and r:
                v = {"rps_ratio": r["rps"] / base["rps"],
                     "host_cpu_ratio": base["host_cpu_us"] / r["host_cpu_us"],
                     "target": 2.0}
                if ctl and place == "process":
                    v["host_cpu_ratio_vs_control"] = ctl["host_cpu_us"] / r["host_cpu_us"]
                    v["rps_ratio_vs_control"] = r["rps"] / ctl["rps"]
                out["kv_%s_%s" % (place, test)] = v
    for c in (False, True):
        relay = _find(lb, "proxy", proxy="lb, host relay", close=c)
        ctl = _find(lb, "proxy", proxy="lb + NIC process, relay", close=c)
        for place in a.placements:
            r = _find(lb, "proxy", proxy="lb + NIC %s, spliced" % place, close=c)
            if relay and r:
                v = {"per_host_cpu_ratio": r["req_per_host_cpu_s"]
                     / relay["req_per_host_cpu_s"],
                     "rps_ratio": r["rps"] / relay["rps"], "target": 5.0}
                if ctl and place == "process":
                    v["per_host_cpu_ratio_vs_control"] = (r["req_per_host_cpu_s"]
                                                          / ctl["req_per_host_cpu_s"])
                out["lb_%s_%s" % (place, "close" if c else "persistent")] = v
    return out


def _legend(text):
    print(textwrap.fill(text, 96, initial_indent="  ", subsequent_indent="  "))


def _target(text):
    print(textwrap.fill(text, 96, initial_indent="  ", subsequent_indent="      "))


def _f(v, fmt="%.1f"):
    return "-" if v is None else fmt % v


def report(results, a):
    kv = results["kv"]
    if kv:
        print("\nkv: -c %d, %d keys, 2 B values (GET, SET: redis-benchmark; USR: rr_client usr, "
              "%g s), median of %d; host CPU = the stack's own accounting (NIC apart) / "
              "redis-server's process CPU" % (a.kv_conc, KV_KEYS, a.kv_seconds, a.repeat))
        print("%-34s %-4s %-3s %9s %7s %7s %9s %7s %7s %9s %9s %9s %6s %6s" % (
            "server", "test", "-k", "req/s", "x noNIC", "x redis", "host us", "/noNIC",
            "x redis", "proc us", "NIC us", "all us", "cli %", "NIC"))
        for r in kv:
            redis = _find(kv, "server", server="redis-server (kernel)", test=r["test"],
                          keepalive=r["keepalive"])
            nonic = _find(kv, "server", server="kv, no NIC", test=r["test"],
                          keepalive=r["keepalive"])
            stack = r["server"].startswith("kv")
            nic_share = ("%.2f" % (r["cookie_conns"] / r["requests"])
                         if r.get("cookie_conns") else "-")
            print("%-34s %-4s %-3d %9.0f %7s %7s %9.1f %7s %7s %9.1f %9s %9.1f %6.0f %6s"
                  % (
                r["server"], r["test"], r["keepalive"], r["rps"],
                _f(r["rps"] / nonic["rps"], "%.2f") if nonic and stack else "-",
                _f(r["rps"] / redis["rps"], "%.2f") if redis else "-",
                r["host_cpu_us"],
                _f(nonic["host_cpu_us"] / r["host_cpu_us"], "%.2f") if nonic and stack
                else "-",
                _f(r["host_cpu_us"] / redis["host_cpu_us"], "%.1f")
                if redis and redis["host_cpu_us"] else "-",
                r["proc_cpu_us"], _f(r["nic_proc_cpu_us"] if r["nic_proc_cpu_us"] is not None
                                     else r["nic_cpu_us"]),
                r["all_cpu_us"], r["client_cpu_pct"], nic_share))
        _legend("req/s x noNIC, x redis: this / kv without NIC's, / redis-server's. host us: "
                "host CPU us per request; /noNIC: kv without NIC's host us / this (the host "
                "CPU saved); x redis: this / redis-server's. proc us: the server process's "
                "CPU; NIC us: the NIC process's CPU (inline: its busy time); all us: the "
                "whole machine's; cli %: the client's CPU, % of one core; NIC: "
                "connections completed by the NIC's SYN cookies per request.")
    lb = results["lb"]
    if lb:
        info = results["lb_info"]
        print("\nlb: wrk -t1 -c%d -d%ds, %d files %d..%d B (mean %.0f B), random; median of "
              "%d; host CPU = the stack's own accounting (NIC apart) / nginx's process CPU"
              % (a.lb_conns, a.lb_seconds, info["files"], info["min_file_bytes"],
                 info["max_file_bytes"], info["mean_file_bytes"], a.repeat))
        print("%-26s %-10s %9s %7s %7s %7s %9s %9s %9s %6s %11s %8s %7s %6s %5s" % (
            "proxy", "conns", "req/s", "x relay", "x nginx", "Gbit/s", "host us", "NIC us",
            "all us", "cli %", "req/host-s", "x relay", "x nginx", "errors", "RTOs"))
        for r in lb:
            relay = _find(lb, "proxy", proxy="lb, host relay", close=r["close"])
            ngx = _find(lb, "proxy", proxy="nginx proxy (kernel)", close=r["close"])
            print(("%-26s %-10s %9.0f %7s %7s %7.3f %9.1f %9s %9.1f %6.0f %11.0f %8s %7s %6d "
                   "%5s") % (
                r["proxy"], "close" if r["close"] else "persistent", r["rps"],
                _f(r["rps"] / relay["rps"], "%.2f") if relay else "-",
                _f(r["rps"] / ngx["rps"], "%.2f") if ngx else "-", r["gbit_s"],
                r["host_cpu_us"], _f(r["nic_proc_cpu_us"] if r["nic_proc_cpu_us"] is not None
                                     else r["nic_cpu_us"]),
                r["all_cpu_us"], r["client_cpu_pct"], r["req_per_host_cpu_s"],
                _f(r["req_per_host_cpu_s"] / relay["req_per_host_cpu_s"], "%.1f")
                if relay else "-",
                _f(r["req_per_host_cpu_s"] / ngx["req_per_host_cpu_s"], "%.2f")
                if ngx else "-", r["errors"], r.get("rto_timeouts", "-")))
        _legend("nginx proxy: %s; it reaches the backends over the veth (%s), the stack "
                "over the TAP (%s). Every run: a new proxy, its own backend ports." % (
                    "upstream keepalive %d" % a.nginx_keepalive if a.nginx_keepalive
                    else "no upstream keepalive", REF_PEER_IP, PEER_IP))
        _legend("req/s x relay, x nginx: this / the host relay's, / nginx's. Gbit/s: bytes "
                "read by wrk (headers included). host us: host CPU us per request; NIC us: "
                "the NIC process's CPU (inline: its busy time); all us: the whole machine's; "
                "cli %: wrk's CPU, % of one core. req/host-s: requests per host CPU second; "
                "x relay, x nginx: that / theirs. RTOs: the stack's retransmission timeouts "
                "during the run.")
    v = results.get("verdicts") or {}
    if v:
        print("\nTargets")
        for k, x in v.items():
            def met(ratio, target=x["target"]):
                return "met" if ratio >= target else "MISSED"
            if k.startswith("kv_"):
                _, place, test = k.split("_")
                ctl = ""
                if "host_cpu_ratio_vs_control" in x:
                    ctl = "; against the NIC process without offloads: %.2fx less, " \
                          "throughput %.2fx" % (x["host_cpu_ratio_vs_control"],
                                                x["rps_ratio_vs_control"])
                _target("kv + NIC %s vs kv without, short-lived %s (target >= %.0fx): "
                      "throughput %.2fx (%s), host CPU per request %.2fx less (%s)%s" % (
                          place, test, x["target"], x["rps_ratio"], met(x["rps_ratio"]),
                          x["host_cpu_ratio"], met(x["host_cpu_ratio"]), ctl))
            else:
                _, place, mode = k.split("_")
                ctl = ""
                if "per_host_cpu_ratio_vs_control" in x:
                    ctl = "; against the NIC process relaying: %.1fx" % (
                        x["per_host_cpu_ratio_vs_control"])
                _target("lb spliced (NIC %s) vs host relay, %s (target >= %.0fx requests per "
                      "host CPU s): %.1fx (%s); throughput %.2fx%s" % (
                          place, mode, x["target"], x["per_host_cpu_ratio"],
                          met(x["per_host_cpu_ratio"]), x["rps_ratio"], ctl))
    print("\nwall time %.0f s; client namespace: %s" % (
        results.get("wall_s", 0), ", ".join("%s=%s" % kv_ for kv_ in
                                           (results.get("client_sysctls") or {}).items())))


if __name__ == "__main__":
    sys.exit(main())
