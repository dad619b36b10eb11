"""Real-network benchmark: the stack on a TAP vs kernel-stack asyncio/uvloop servers.

Run as root, from the repository (it builds benchmarks/rr_client.c with cc):

    .venv/bin/python benchmarks/realnet.py [--bulk-gib 1] [--rr-seconds 5] [--json out.json]

Side by side, in one run, on this machine:

1. bulk receive: a kernel client (plain Python socket, namespace atcp-bench) sends
   --bulk-gib GiB to a discard server: the stack (`acceltcp serve sink`, TAP offloads
   on, then off) and, as the reference, an asyncio and a uvloop server on the kernel
   stack (namespace atcp-bench-ref, reached over a veth). MB/s as the client sees it
   (until the server's close), and host CPU seconds per GiB (all cores, /proc/stat:
   the kernel's share, the client and the server together), plus the server's own CPU.
2. short-lived 64 B request/response transactions/s, one connection per transaction,
   --concurrency connections in flight, from benchmarks/rr_client.c (epoll, one core;
   its own CPU is reported to show it is not the bottleneck), against the stack's echo
   server (offloads on and off) and asyncio/uvloop echo servers on the kernel stack.

3. the same short-lived load against the stack's echo server behind the AccelTCP NIC
   (`--nic inline|process|xdp --offload setup,teardown`, the server closing first): the
   host CPU the stack spends per transaction (its runner's accounting, the NIC's share
   measured apart) against the stack without a NIC; with --cores 1,2 also the stack
   alone and with the inline NIC on two cores (`serve --cores 2`).
4. spliced forwarding: a kernel client and a kernel server (both in atcp-bench) move
   --splice-mib MiB each way through the stack's proxy (`acceltcp serve proxy`, TAP
   offloads off -- MTU frames -- and on -- 64 KiB super-frames), relayed by the host,
   then spliced on the NIC inline, in its own process and in XDP (offloads off only):
   frames/s the NIC translated, Gbit/s, host and NIC CPU; and the same transfer kernel
   to kernel with no proxy (to the reference namespace, routed by the kernel: the L3
   forward), the ceiling. Then small messages (the paper's 64 B column: per-packet
   rather than per-byte costs), TAP offloads off: --splice-msg-conns persistent
   connections through the same proxies to a kernel echo server, each with one
   --splice-msg = 64 byte message in flight (TCP_NODELAY; the reply read before the
   next is sent, so every message is its own segment each way) for
   --splice-msg-seconds, and the same kernel to kernel.
5. with --fig1 CONCS (the paper's Fig. 1): 64 B echo transactions against the stack (TAP
   offloads on, no NIC), persistent connections (rr_client PER_CONN 0) and one
   connection per transaction, over the concurrency values CONCS: transactions/s, the
   stack's CPU and host-port frames per transaction.

Every figure is followed by its ratio to the asyncio kernel-stack server (3: to the
stack without a NIC; 4: to the host relay). The traffic stays inside the two namespaces
this script creates and removes (198.18.0.0/15).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable
NS = "atcp-bench"
REF = "atcp-bench-ref"
STACK_IP = "198.18.0.2"
REF_IP = "198.18.1.2"
GiB = 1 << 30
CHUNK_BYTES = 1 << 20           # the duplex peer's bulk write size
CLK = os.sysconf("SC_CLK_TCK")


def cpu_busy_s():
    """Busy CPU seconds of the whole host so far (all cores)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / CLK


def proc_cpu_s(pid, children=False):
    """utime + stime of process `pid` so far, seconds; with `children` also of its live
    child processes (serve --cores: one stack per child; the NIC process)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    t = (int(fields[11]) + int(fields[12])) / CLK
    if children:
        try:
            with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            kids = []
        for kid in kids:
            try:
                t += proc_cpu_s(kid, False)
            except OSError:             # ended meanwhile
                pass
    return t


def proc_kib(pid, field="VmRSS"):
    """A size field of /proc/PID/status (VmRSS, VmHWM, ...) in KiB; 0 once it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def ns(name, argv):
    return ["ip", "netns", "exec", name] + argv


def cli(*args):
    subprocess.run([PY, "-m", "acceltcp.cli"] + list(args), check=True, capture_output=True)


class Server:
    """A server subprocess; `stop()` -> its final JSON (stats file or last stdout line)."""

    def __init__(self, argv, ready_stream, stats=None):
        self.stats = stats
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        stream = self.p.stderr if ready_stream == "stderr" else self.p.stdout
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = stream.readline()
            if '"ready"' in line:
                return
            if not line and self.p.poll() is not None:
                break
        self.p.kill()
        raise RuntimeError("server did not start: %s" % (self.p.stderr.read()[-2000:],))

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            out, err = self.p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            out, err = self.p.communicate()
        if self.stats:
            return json.loads(Path(self.stats).read_text())
        lines = [x for x in out.splitlines() if x.startswith("{")]
        return json.loads(lines[-1]) if lines else {}


def stack_server(app, port, offload, tmp, extra=()):
    stats = os.path.join(tmp, "stack-%s-%d.json" % (app, offload))
    argv = [PY, "-m", "acceltcp.cli", "serve", app, "--port", str(port), "--netns", NS,
            "--stats-file", stats] + ([] if offload else ["--no-offload"]) + list(extra)
    return Server(argv, "stderr", stats)


def kernel_server(app, port, loop, extra=()):
    argv = ns(REF, [PY, "-m", "acceltcp.testbed.peer", "server", app, "--port", str(port),
                    "--loop", loop] + list(extra))
    return Server(argv, "stdout")


def bulk(label, host, port, nbytes, start):
    srv = start()
    time.sleep(0.2)
    c0 = cpu_busy_s()
    s0 = proc_cpu_s(srv.p.pid)
    r = subprocess.run(ns(NS, [PY, "-m", "acceltcp.testbed.peer", "send", host, str(port),
                               "--bytes", str(nbytes), "--timeout", "120"]),
                       capture_output=True, text=True, timeout=600)
    c1 = cpu_busy_s()
    s1 = proc_cpu_s(srv.p.pid)
    st = srv.stop()
    if r.returncode != 0:
        raise RuntimeError("%s: client failed: %s" % (label, r.stderr[-2000:]))
    res = json.loads(r.stdout.strip().splitlines()[-1])
    out = {"label": label, "mb_per_s": res["mb_per_s"], "elapsed_s": res["elapsed_s"],
           "host_cpu_s_per_gib": (c1 - c0) / (nbytes / GiB),
           "client_cpu_s": res["cpu_s"], "server_cpu_s": s1 - s0}
    if "cpu" in st:                       # the stack's stats file
        out["frames_in"] = st["frames_in"]
        out["bytes_per_frame_in"] = st["bytes_in"] / max(st["frames_in"], 1)
        out["received"] = st["app_stats"]["bytes"]
    else:
        out["received"] = st.get("stats", {}).get("bytes")
    if out["received"] != nbytes:
        raise RuntimeError("%s: server received %s of %d bytes" % (label, out["received"],
                                                                    nbytes))
    return out


def rr(label, host, port, seconds, conc, client, start, per_conn=1):
    """rr_client against the server `start()` starts: `per_conn` transactions per
    connection (0: each connection for the whole run)."""
    srv = start()
    time.sleep(0.2)
    c0 = cpu_busy_s()
    s0 = proc_cpu_s(srv.p.pid, True)   # with its children: --cores, the NIC process
    r = subprocess.run(ns(NS, [client, host, str(port), str(conc), str(seconds), "64",
                               str(per_conn)]),
                       capture_output=True, text=True, timeout=seconds + 60)
    c1 = cpu_busy_s()
    s1 = proc_cpu_s(srv.p.pid, True)
    time.sleep(0.3)
    srv.stop()
    if r.returncode != 0:
        raise RuntimeError("%s: client failed: %s" % (label, r.stderr))
    res = json.loads(r.stdout)
    stack_us = frames = None
    n = max(res["transactions"], 1)
    if srv.stats and os.path.exists(srv.stats):
        st = json.loads(Path(srv.stats).read_text())
        stack_us = 1e6 * st["cpu"]["stack_s"] / n
        c = st.get("counters") or {}
        if "frames_in" in c:
            frames = (c["frames_in"] + c["frames_out"]) / n
    out = {"label": label, "tps": res["tps"], "errors": res["errors"],
           "stack_cpu_us_per_txn": stack_us, "frames_per_txn": frames,
           "concurrency": conc, "per_conn": per_conn,
           "client_cpu_pct": res["client_cpu_pct"], "mean_latency_us": res["mean_latency_us"],
           "host_cpu_us_per_txn": 1e6 * (c1 - c0) / n,
           "transactions": res["transactions"],
           "server_cpu_pct": 100.0 * (s1 - s0) / res["elapsed_s"]}
    return out


def _duplex(label, nbytes, server_ns, dst_ip, dst_port, proxy=None):
    """One duplex transfer, `nbytes` each way, from a client in atcp-bench to dst_ip:
    dst_port, with a duplex server on 8081 in `server_ns`; `proxy`: a started server to
    stop after the transfer. -> (client result, proxy stats or None). Byte-exact or
    RuntimeError."""
    from acceltcp.testbed.peer import expected_sha256
    srv = Server(ns(server_ns, [PY, "-m", "acceltcp.testbed.peer", "duplex", "8081",
                                "--bytes", str(nbytes), "--seed", "2", "--head-lines", "1",
                                "--timeout", "300"]), "stdout")
    time.sleep(0.2)
    r = subprocess.run(ns(NS, [PY, "-m", "acceltcp.testbed.peer", "duplex", dst_ip,
                               str(dst_port), "--bytes", str(nbytes), "--seed", "1",
                               "--head", "GET / HTTP/1.1\\n", "--timeout", "300"]),
                       capture_output=True, text=True, timeout=900)
    try:
        srv.p.wait(60)                  # the server ends by itself after the transfer
    except subprocess.TimeoutExpired:
        pass
    sv = srv.stop()
    st = proxy.stop() if proxy is not None else None
    res = json.loads(r.stdout.strip().splitlines()[-1])
    if (res["received"] != nbytes or res["sha256"] != expected_sha256(2, nbytes)
            or sv.get("sha256") != expected_sha256(1, nbytes)):
        raise RuntimeError("%s: transfer not byte-exact: %s %s" % (label, res, sv))
    return res, st


def splice(label, nbytes, extra, tmp, offload=False):
    """client -> the stack's proxy -> server, `nbytes` each way; the TAP's offloads off
    (MTU frames) or on (64 KiB super-frames, partial checksums)."""
    proxy = stack_server("proxy", 8080, offload, tmp,
                         ["--backend", "198.18.0.1:8081"] + list(extra))
    res, st = _duplex(label, nbytes, NS, STACK_IP, 8080, proxy)
    el = res["elapsed_s"]
    nic = st.get("nic") or {}
    frames = (nic.get("counters") or {}).get("splice_frames", 0)
    host = st["counters"]["frames_in"] + st["counters"]["frames_out"]
    return {"label": label, "tap_offload": offload, "pattern": "bulk",
            "msg_bytes": CHUNK_BYTES, "elapsed_s": el, "gbit_s": 2 * nbytes * 8 / el / 1e9,
            "msgs_per_s": 2 * nbytes / CHUNK_BYTES / el, "nic_frames": frames,
            "nic_frames_per_s": frames / el, "host_frames": host,
            "host_frames_per_s": host / el, "stack_cpu_s": st["cpu"]["stack_s"],
            "nic_cpu_s": st["cpu"].get("nic_s", 0), "spliced": st["app_stats"]["spliced"]}


def direct(label, nbytes):
    """The same transfer kernel to kernel, no proxy (atcp-bench -> the reference
    namespace over its veth, routed by the kernel: the L3 forward): the ceiling of a
    forwarding path on this machine."""
    res, _ = _duplex(label, nbytes, REF, REF_IP, 8081)
    el = res["elapsed_s"]
    return {"label": label, "tap_offload": None, "pattern": "bulk",
            "msg_bytes": CHUNK_BYTES, "elapsed_s": el, "gbit_s": 2 * nbytes * 8 / el / 1e9,
            "msgs_per_s": 2 * nbytes / CHUNK_BYTES / el, "nic_frames": 0,
            "nic_frames_per_s": 0,
            "host_frames": 0, "host_frames_per_s": 0, "stack_cpu_s": 0, "nic_cpu_s": 0,
            "spliced": 0}


def _pingpong_client(label, host, port, seconds, conns, msg):
    r = subprocess.run(ns(NS, [PY, "-m", "acceltcp.testbed.peer", "pingpong", host,
                               str(port), "--conns", str(conns), "--seconds", str(seconds),
                               "--size", str(msg), "--head", "GET / HTTP/1.1\\n"]),
                       capture_output=True, text=True, timeout=seconds + 120)
    lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
    if r.returncode != 0 or not lines:
        raise RuntimeError("%s: ping-pong client failed (%d): %s %s" % (
            label, r.returncode, r.stdout[-1000:], r.stderr[-1000:]))
    return json.loads(lines[-1])


def _pingpong_row(label, res, msg, offload, st=None):
    el = res["elapsed_s"]
    msgs = 2 * res["round_trips"]
    nic = (st or {}).get("nic") or {}
    frames = (nic.get("counters") or {}).get("splice_frames", 0)
    host = st["counters"]["frames_in"] + st["counters"]["frames_out"] if st else 0
    return {"label": label, "tap_offload": offload, "pattern": "ping-pong",
            "msg_bytes": msg, "elapsed_s": el, "gbit_s": msgs * msg * 8 / el / 1e9,
            "msgs_per_s": msgs / el, "mean_rtt_us": res["mean_rtt_us"],
            "errors": res["errors"], "nic_frames": frames, "nic_frames_per_s": frames / el,
            "host_frames": host, "host_frames_per_s": host / el,
            "host_frames_per_msg": host / max(msgs, 1),
            "stack_cpu_s": st["cpu"]["stack_s"] if st else 0,
            "nic_cpu_s": st["cpu"].get("nic_s", 0) if st else 0,
            "spliced": st["app_stats"]["spliced"] if st else 0}


def pingpong(label, extra, tmp, seconds, conns, msg):
    """--conns persistent connections through the stack's proxy (TAP offloads off) to a
    kernel echo server in atcp-bench, each one `msg`-byte message in flight: small
    segments, one per message each way."""
    echo = Server(ns(NS, [PY, "-m", "acceltcp.testbed.peer", "server", "echo", "--port",
                          "8081", "--loop", "uvloop"]), "stdout")
    try:
        proxy = stack_server("proxy", 8080, False, tmp,
                             ["--backend", "198.18.0.1:8081"] + list(extra))
        try:
            res = _pingpong_client(label, STACK_IP, 8080, seconds, conns, msg)
        finally:
            st = proxy.stop()
    finally:
        echo.stop()
    return _pingpong_row(label, res, msg, False, st)


def pingpong_direct(label, seconds, conns, msg):
    """The same ping-pong kernel to kernel, no proxy (the echo server in the reference
    namespace, routed by the kernel)."""
    echo = kernel_server("echo", 8081, "uvloop")
    try:
        res = _pingpong_client(label, REF_IP, 8081, seconds, conns, msg)
    finally:
        echo.stop()
    return _pingpong_row(label, res, msg, None)


def build_client(tmp):
    exe = os.path.join(tmp, "rr_client")
    subprocess.run(["cc", "-O2", "-o", exe, str(HERE / "rr_client.c")], check=True)
    return exe


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bulk-gib", type=float, default=1.0)
    p.add_argument("--rr-seconds", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3,
                   help="runs per figure; the run with the median rate is kept (3)")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--skip-bulk", action="store_true")
    p.add_argument("--skip-rr", action="store_true")
    p.add_argument("--skip-nic", action="store_true")
    p.add_argument("--skip-splice", action="store_true")
    p.add_argument("--splice-mib", type=int, default=200)
    p.add_argument("--splice-msg", type=int, default=64, metavar="BYTES",
                   help="the splice part's small-message runs: message size (64; 0: skip)")
    p.add_argument("--splice-msg-seconds", type=float, default=5.0, metavar="S",
                   help="duration of each small-message run (5)")
    p.add_argument("--splice-msg-conns", type=int, default=16, metavar="N",
                   help="persistent connections of the small-message runs (16)")
    p.add_argument("--cores", default="1",
                   help="core counts for the server-closing-first rows, comma-separated "
                        "(serve --cores: the stack alone and with the inline NIC) (1)")
    p.add_argument("--placements", default="inline,process,xdp",
                   help="NIC placements for the server-closing-first rows (one core)")
    p.add_argument("--fig1", default="", metavar="CONCS",
                   help="part 5: persistent vs one connection per transaction over these "
                        "concurrency values, comma-separated (default: not run)")
    a = p.parse_args(argv)
    a.cores = [int(x) for x in a.cores.split(",") if x]
    a.fig1 = [int(x) for x in a.fig1.split(",") if x]
    if os.geteuid() != 0:
        print("benchmarks/realnet.py needs root (namespaces, TAP)", file=sys.stderr)
        return 2
    nbytes = int(a.bulk_gib * GiB)
    results = {"bulk": [], "rr": [], "nic_rr": [], "splice": [], "fig1": [],
               "machine": {"cpus": os.cpu_count(),
                                                 "kernel": os.uname().release}}
    cli("testbed", "down", "--netns", NS, "--ref-netns", REF)
    cli("testbed", "up", "--ref", "--netns", NS, "--ref-netns", REF)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            client = build_client(tmp)
            if not a.skip_bulk:
                for offload in (True, False):
                    label = "stack, TAP offloads %s" % ("on" if offload else "off")
                    results["bulk"].append(median_run(
                        lambda o=offload, lb=label: bulk(
                            lb, STACK_IP, 9, nbytes, lambda: stack_server("sink", 9, o, tmp)),
                        a.repeat, "mb_per_s"))
                    _progress(results["bulk"][-1])
                for loop in ("asyncio", "uvloop"):
                    results["bulk"].append(median_run(
                        lambda lp=loop: bulk("kernel + %s" % lp, REF_IP, 9, nbytes,
                                             lambda: kernel_server("sink", 9, lp)),
                        a.repeat, "mb_per_s"))
                    _progress(results["bulk"][-1])
            if not a.skip_rr:
                for offload in (True, False):
                    label = "stack, TAP offloads %s" % ("on" if offload else "off")
                    results["rr"].append(median_run(
                        lambda o=offload, lb=label: rr(
                            lb, STACK_IP, 7, a.rr_seconds, a.concurrency, client,
                            lambda: stack_server("echo", 7, o, tmp)),
                        a.repeat, "tps"))
                    _progress(results["rr"][-1])
                for loop in ("asyncio", "uvloop"):
                    results["rr"].append(median_run(
                        lambda lp=loop: rr("kernel + %s" % lp, REF_IP, 7, a.rr_seconds,
                                           a.concurrency, client,
                                           lambda: kernel_server("echo", 7, lp)),
                        a.repeat, "tps"))
                    _progress(results["rr"][-1])
            if not a.skip_nic:
                runs = [(c, place) for c in a.cores
                        for place in ["none"] + [x for x in a.placements.split(",") if x]
                        if c == 1 or place in ("none", "inline")]
                for cores, place in runs:
                    extra = ["--close-after", "64"]
                    if place != "none":
                        extra += ["--nic", place, "--offload", "setup,teardown"]
                    if cores > 1:
                        extra += ["--cores", str(cores)]
                    label = "stack" + ("" if cores == 1 else ", %d cores" % cores) + (
                        "" if place == "none" else ", NIC %s, setup+teardown" % place)
                    results["nic_rr"].append(median_run(
                        lambda lb=label, x=extra: rr(
                            lb, STACK_IP, 7, a.rr_seconds, a.concurrency, client,
                            lambda: stack_server("echo", 7, True, tmp, x)),
                        a.repeat, "tps"))
                    _progress(results["nic_rr"][-1])
            if not a.skip_splice:
                nb = a.splice_mib << 20
                for offload in (False, True):
                    for label, extra in (
                            ("host relay", []),
                            ("NIC inline, spliced", ["--nic", "inline", "--offload", "splice"]),
                            ("NIC process, spliced", ["--nic", "process", "--offload",
                                                      "splice"]),
                            # XDP: the TAP has no offloads (a redirect loses them)
                            ("NIC xdp, spliced", None if offload else
                             ["--nic", "xdp", "--offload", "splice"])):
                        if extra is None:
                            continue
                        results["splice"].append(median_run(
                            lambda lb=label, x=extra, o=offload: splice(lb, nb, x, tmp, o),
                            a.repeat, "gbit_s"))
                        _progress(results["splice"][-1])
                results["splice"].append(median_run(
                    lambda: direct("kernel to kernel, no proxy", nb), a.repeat, "gbit_s"))
                _progress(results["splice"][-1])
                m, sec, nc = a.splice_msg, a.splice_msg_seconds, a.splice_msg_conns
                if m:
                    for label, extra in (
                            ("host relay", []),
                            ("NIC inline, spliced", ["--nic", "inline", "--offload", "splice"]),
                            ("NIC process, spliced", ["--nic", "process", "--offload",
                                                      "splice"]),
                            ("NIC xdp, spliced", ["--nic", "xdp", "--offload", "splice"])):
                        results["splice"].append(median_run(
                            lambda lb=label, x=extra: pingpong(lb, x, tmp, sec, nc, m),
                            a.repeat, "gbit_s"))
                        _progress(results["splice"][-1])
                    results["splice"].append(median_run(
                        lambda: pingpong_direct("kernel to kernel, no proxy", sec, nc, m),
                        a.repeat, "gbit_s"))
                    _progress(results["splice"][-1])
            for conc in a.fig1:
                for label, per_conn in (("stack, persistent", 0),
                                        ("stack, one connection per transaction", 1)):
                    results["fig1"].append(median_run(
                        lambda lb=label, c=conc, k=per_conn: rr(
                            lb, STACK_IP, 7, a.rr_seconds, c, client,
                            lambda: stack_server("echo", 7, True, tmp), k),
                        a.repeat, "tps"))
                    _progress(results["fig1"][-1])
    finally:
        cli("testbed", "down", "--netns", NS, "--ref-netns", REF)
    report(results, a)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


def median_run(fn, repeat, key):
    runs = sorted((fn() for _ in range(repeat)), key=lambda r: r[key])
    out = runs[len(runs) // 2]
    out["runs"] = [r[key] for r in runs]
    return out


def _progress(r):
    print("  done: %s" % r["label"], file=sys.stderr, flush=True)


def _ref(rows, key):
    for r in rows:
        if r["label"] == "kernel + asyncio":
            return r[key]
    return None


def report(results, a):
    if results["bulk"]:
        print("\nBulk receive, kernel client -> server, %.2f GiB, one connection "
              "(median of %d)" % (a.bulk_gib, a.repeat))
        print("%-26s %10s %8s %14s %9s %12s %14s" % ("server", "MB/s", "x async",
                                                     "host CPU s/GiB", "x async",
                                                     "server CPU s", "B/frame in"))
        ref_mb = _ref(results["bulk"], "mb_per_s")
        ref_cpu = _ref(results["bulk"], "host_cpu_s_per_gib")
        for r in results["bulk"]:
            print("%-26s %10.0f %8.2f %14.2f %9.2f %12.2f %14s" % (
                r["label"], r["mb_per_s"], r["mb_per_s"] / ref_mb, r["host_cpu_s_per_gib"],
                r["host_cpu_s_per_gib"] / ref_cpu, r["server_cpu_s"] or 0,
                "%.0f" % r["bytes_per_frame_in"] if "bytes_per_frame_in" in r else "-"))
    if results["rr"]:
        print("\nShort-lived 64 B request/response, one connection per transaction, "
              "%d concurrent, %.0f s (median of %d)" % (a.concurrency, a.rr_seconds, a.repeat))
        print("%-26s %10s %8s %16s %12s %12s %12s %8s" % (
            "server", "txn/s", "x async", "host CPU us/txn", "server CPU %", "client CPU %",
            "latency us", "errors"))
        ref = _ref(results["rr"], "tps")
        for r in results["rr"]:
            print("%-26s %10.0f %8.2f %16.1f %12.1f %12.1f %12.0f %8d" % (
                r["label"], r["tps"], r["tps"] / ref, r["host_cpu_us_per_txn"],
                r["server_cpu_pct"], r["client_cpu_pct"], r["mean_latency_us"], r["errors"]))
    if results["nic_rr"]:
        print("\nShort-lived 64 B, the server closes first, against the NIC offloads "
              "(median of %d)" % a.repeat)
        print("%-36s %10s %18s %10s %16s %8s" % ("server", "txn/s", "stack CPU us/txn",
                                                "x no NIC", "host CPU us/txn", "errors"))
        ref = results["nic_rr"][0]["stack_cpu_us_per_txn"]
        for r in results["nic_rr"]:
            print("%-36s %10.0f %18.1f %10.2f %16.1f %8d" % (
                r["label"], r["tps"], r["stack_cpu_us_per_txn"],
                ref / r["stack_cpu_us_per_txn"], r["host_cpu_us_per_txn"], r["errors"]))
    if results["splice"]:
        print("\nProxy, %d MiB each way, one connection (median of %d); x host: against "
              "the host relay with the same TAP offloads" % (a.splice_mib, a.repeat))
        print("%-24s %5s %7s %8s %10s %14s %14s %12s %10s" % (
            "relay", "TAP", "msg", "Gbit/s", "x host", "NIC frames/s", "host frames/s",
            "stack CPU s", "NIC CPU s"))
        for r in results["splice"]:
            msg = "bulk" if r["msg_bytes"] == CHUNK_BYTES else "%d B" % r["msg_bytes"]
            if r["tap_offload"] is None:            # the kernel-to-kernel ceiling
                print("%-24s %5s %7s %8.2f" % (r["label"], "-", msg, r["gbit_s"]))
                continue
            ref = next(x["gbit_s"] for x in results["splice"]
                       if x["label"] == "host relay" and x["tap_offload"] == r["tap_offload"]
                       and x["msg_bytes"] == r["msg_bytes"])
            print("%-24s %5s %7s %8.2f %10.2f %14.0f %14.0f %12.2f %10.2f" % (
                r["label"], "on" if r["tap_offload"] else "off", msg, r["gbit_s"],
                r["gbit_s"] / ref, r["nic_frames_per_s"], r["host_frames_per_s"],
                r["stack_cpu_s"], r["nic_cpu_s"]))
    if results["fig1"]:
        print("\n64 B echo against the stack, persistent vs one connection per transaction "
              "(median of %d)" % a.repeat)
        print("%-40s %6s %10s %14s %12s %8s" % ("", "conc", "txn/s", "stack us/txn",
                                              "frames/txn", "errors"))
        for r in results["fig1"]:
            print("%-40s %6d %10.0f %14.1f %12.2f %8d" % (
                r["label"], r["concurrency"], r["tps"], r["stack_cpu_us_per_txn"],
                r["frames_per_txn"], r["errors"]))


if __name__ == "__main__":
    sys.exit(main())
