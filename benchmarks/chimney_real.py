"""TCP Chimney on the real network: host CPU per byte with and without the NIC running
the data path, against a Linux kernel peer.

Run as root, from the repository (PYTHONPATH=src, or the installed package):

    python benchmarks/chimney_real.py [--mib 1024] [--configs host,nic-inline,...]
                                      [--repeat 1] [--json out.json]

One bulk transfer per configuration, side by side in one run: a kernel client (the
testbed peer's ``duplex``: plain Python socket, namespace atcp-chim) sends --mib MiB of
a seeded pattern to ``acceltcp serve echo`` and reads the echo back at the same time,
so the stack receives and sends --mib MiB on one connection, both ways at once. The
client hashes what comes back (sha256 against the pattern's: byte-exact or the row
fails). Configurations (``serve echo`` options), each also as KEY-nooffload, the TAP's
offloads off (``--no-offload``: MTU frames between the kernel and the stack or NIC, full
checksums in Python); all twelve run by default:

  host             the stack does the transfer itself, no NIC (TAP offloads on: the
                   kernel's checksum/TSO/GRO through the virtio-net header, so the stack
                   moves up to 64 KiB per frame)
  nic-inline       behind the NIC, no Chimney: --nic inline (the dataplane in the host's
                   process, its CPU accounted apart)
  nic-process      --nic process (the dataplane in a child process)
  chimney-inline   --nic inline --offload chimney: the accepted connection's data path
                   on the NIC (the host's own TCB code) until the client's FIN, which
                   uploads it; the host finishes the echo's tail
  chimney-process  --nic process --offload chimney
  nic-inline-toe-nooffload, nic-process-toe-nooffload
                   --nic inline|process --nic-toe csum,tso,lro --no-offload: the NIC
                   completes the stack's checksums, cuts its 64 KiB super-segments and
                   merges in-order segments for it (LRO); the kernel does none of it

Measured over the transfer (a stats snapshot, SIGUSR1, before and after it):

* host CPU: the stack's own accounting (``cpu.stack_s``: CPU inside the runner's
  entries -- frames, timers, the app -- minus the inline NIC's share), per GiB moved
  (both ways counted). The serve process's whole CPU (/proc: utime + stime) is shown
  too; with the inline NIC it includes the NIC.
* NIC CPU: inline, the NIC's accounted share (``cpu.nic_s``); process, the NIC
  process's CPU from /proc.
* host-port frames per MiB moved: what crossed between the stack and its device
  (``frames_in + frames_out + nic_control_sent``: TAP frames without a NIC; frames,
  TSO super-segments and ChimneyOffload/Send/Upload control frames with one).
* throughput: 2 x MiB over the client's elapsed time (both directions together).

CPU time per process, not machine-wide busy time: other work on the machine adds noise
to the rates, less to the CPU seconds. The traffic stays inside the namespace this
script creates and removes (198.18.0.0/15); every process it starts is ended by pid,
also on failure or SIGTERM.
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

from acceltcp.testbed.procs import fetch_stats
from acceltcp.testbed.sigterm import raise_on_sigterm

PY = sys.executable
NS = "atcp-chim"
TAP = "atcp-chim0"
STACK_IP = "198.18.0.2"
PORT = 7
MiB = 1 << 20
GiB = 1 << 30
CLK = os.sysconf("SC_CLK_TCK")

#: key -> (label, serve options); each also as KEY-nooffload: the TAP's offloads off
_BASE = {
    "host": ("host does the transfer (no NIC)", []),
    "nic-inline": ("NIC inline, no Chimney", ["--nic", "inline"]),
    "nic-process": ("NIC process, no Chimney", ["--nic", "process"]),
    "chimney-inline": ("Chimney, NIC inline", ["--nic", "inline", "--offload", "chimney"]),
    "chimney-process": ("Chimney, NIC process", ["--nic", "process", "--offload", "chimney"]),
}
CONFIGS = {}
for _k, (_label, _extra) in _BASE.items():
    CONFIGS[_k] = (_label + ", TAP offloads on", _extra)
    CONFIGS[_k + "-nooffload"] = (_label + ", TAP offloads off", _extra + ["--no-offload"])
#: the NIC doing the TOE offloads itself (the TAP's off: the kernel does none of them)
for _p in ("inline", "process"):
    CONFIGS["nic-%s-toe-nooffload" % _p] = (
        "NIC %s with its TOE (csum, TSO, LRO), TAP offloads off" % _p,
        ["--nic", _p, "--nic-toe", "csum,tso,lro", "--no-offload"])
DEFAULT_CONFIGS = tuple(_BASE) + tuple(k + "-nooffload" for k in _BASE) + \
    ("nic-inline-toe-nooffload", "nic-process-toe-nooffload")


class BenchError(RuntimeError):
    pass


def proc_cpu_s(pid):
    """utime + stime of process `pid` so far, seconds (None once it is gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK


def ns(name, argv):
    return ["ip", "netns", "exec", name] + list(argv)


def cli(*args, check=True):
    r = subprocess.run([PY, "-m", "acceltcp.cli"] + list(args), capture_output=True,
                       text=True, timeout=120)
    if check and r.returncode != 0:
        raise BenchError("acceltcp %s: %s" % (" ".join(args), r.stderr[-2000:]))
    return r


class Serve:
    """``acceltcp serve echo`` in a namespace; output to files (never a full pipe)."""

    def __init__(self, netns, tap, extra, tmp, tag):
        self.stats = Path(tmp) / ("serve-%s.json" % tag)
        self.err_path = Path(tmp) / ("serve-%s.err" % tag)
        argv = [PY, "-m", "acceltcp.cli", "serve", "echo", "--port", str(PORT),
                "--netns", netns, "--tap", tap, "--stats-file", str(self.stats)] + list(extra)
        self._err = open(self.err_path, "w+")
        self.p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self._err)
        self.ready = self._wait_ready(30)

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.err_path.read_text().splitlines():
                if '"event": "ready"' in line:
                    return json.loads(line)
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise BenchError("serve did not start: %s" % self.err_path.read_text()[-2000:])

    def snapshot(self, timeout=10.0):
        try:
            return fetch_stats(self.p, self.stats, timeout)
        except TimeoutError as e:
            raise BenchError(str(e)) from None

    def stop(self, timeout=30.0):
        """SIGTERM (SIGKILL after `timeout`); -> the final stats JSON."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise BenchError("serve did not end on SIGTERM")
        self._err.close()
        if self.p.returncode != 0:
            raise BenchError("serve exited %s: %s" % (self.p.returncode,
                                                      self.err_path.read_text()[-2000:]))
        return json.loads(self.stats.read_text())

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)
        if not self._err.closed:
            self._err.close()


def _host_port_frames(st):
    return st["frames_in"] + st["frames_out"] + st["counters"].get("nic_control_sent", 0)


def measure(key, nbytes, netns=NS, tap=TAP, tmp=None, seed=3, timeout=900.0):
    """One transfer of `nbytes` each way with configuration `key` against serve echo in
    `netns` (which must exist, with no other serve on `tap`). -> a result dict; raises
    BenchError when the transfer is not byte-exact or anything fails. The serve (and its
    NIC process) are always ended."""
    from acceltcp.testbed.peer import expected_sha256
    label, extra = CONFIGS[key]
    own_tmp = None
    if tmp is None:
        own_tmp = tempfile.TemporaryDirectory()
        tmp = own_tmp.name
    srv = Serve(netns, tap, extra, tmp, key)
    try:
        nic_pid = srv.ready.get("nic_pid")
        time.sleep(0.2)
        s0 = srv.snapshot()
        h0, n0 = proc_cpu_s(srv.p.pid), proc_cpu_s(nic_pid) if nic_pid else None
        r = subprocess.run(ns(netns, [PY, "-m", "acceltcp.testbed.peer", "duplex", STACK_IP,
                                      str(PORT), "--bytes", str(nbytes), "--seed", str(seed),
                                      "--timeout", str(timeout)]),
                           capture_output=True, text=True, timeout=timeout + 60)
        h1, n1 = proc_cpu_s(srv.p.pid), proc_cpu_s(nic_pid) if nic_pid else None
        s1 = srv.snapshot()
        final = srv.stop()
    finally:
        srv.kill()
        if own_tmp is not None:
            own_tmp.cleanup()
    try:
        res = json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise BenchError("%s: client failed (%d): %s" % (key, r.returncode, r.stderr[-2000:]))
    echoed = final["app_stats"]["bytes_echoed"]
    exact = (res["errors"] == [] and res["received"] == nbytes
             and res["sha256"] == expected_sha256(seed, nbytes) and echoed == nbytes)
    if not exact:
        raise BenchError("%s: not byte-exact: client %s, server echoed %s" % (key, res,
                                                                              echoed))
    moved = 2 * nbytes                  # both ways
    gib, mib = moved / GiB, moved / MiB
    host_s = s1["cpu"]["stack_s"] - s0["cpu"]["stack_s"]
    if nic_pid:
        nic_s = n1 - n0
    else:
        nic_s = s1["cpu"].get("nic_s", 0.0) - s0["cpu"].get("nic_s", 0.0)
    c = final["counters"]
    ch = (final.get("nic") or {}).get("chimney") or {}
    el = res["elapsed_s"]
    return {"key": key, "label": label, "mib_each_way": nbytes / MiB, "byte_exact": exact,
            "elapsed_s": el, "mb_per_s": moved / el / 1e6, "gbit_s": moved * 8 / el / 1e9,
            "host_cpu_s": host_s, "host_cpu_s_per_gib": host_s / gib,
            "host_proc_cpu_s_per_gib": (h1 - h0) / gib,
            "nic_cpu_s": nic_s, "nic_cpu_s_per_gib": nic_s / gib,
            "host_port_frames": _host_port_frames(s1) - _host_port_frames(s0),
            "host_port_frames_per_mib": (_host_port_frames(s1) - _host_port_frames(s0)) / mib,
            "tap_offload": final["offload"],
            "chimney_accepted": c.get("chimney_accepted", 0),
            "chimney_uploads": {k[len("chimney_upload_"):]: v for k, v in c.items()
                                if k.startswith("chimney_upload_")},
            "chimney_lost": c.get("chimney_lost", 0),
            "nic_bytes_to_host": ch.get("bytes_to_host", 0),
            "nic_bytes_from_host": ch.get("bytes_from_host", 0),
            "retransmits": c.get("retransmits", 0), "conns_reset": c.get("conns_reset", 0)}


def median_run(fn, repeat):
    runs = sorted((fn() for _ in range(repeat)), key=lambda r: r["host_cpu_s_per_gib"])
    out = runs[len(runs) // 2]
    out["runs_host_cpu_s_per_gib"] = [round(r["host_cpu_s_per_gib"], 3) for r in runs]
    return out


def _base(rows, r):
    """The row of the host doing the transfer with r's TAP offloads (None: not run)."""
    key = "host" + ("" if r["tap_offload"] else "-nooffload")
    return next((x for x in rows if x["key"] == key), None)


def report(rows):
    """The table; ``x host``: host CPU per byte of the host doing the transfer with the
    same TAP offloads over this row's."""
    print("%-44s %7s %10s %7s %10s %10s %10s %6s" % (
        "server", "MB/s", "host s/GiB", "x host", "proc s/GiB", "NIC s/GiB", "frames/MiB",
        "exact"))
    for r in rows:
        b = _base(rows, r)
        ratio = b["host_cpu_s_per_gib"] / r["host_cpu_s_per_gib"] if b and \
            r["host_cpu_s_per_gib"] > 0 else float("nan")
        print("%-44s %7.1f %10.2f %7.2f %10.2f %10.2f %10.1f %6s" % (
            r["label"], r["mb_per_s"], r["host_cpu_s_per_gib"], ratio,
            r["host_proc_cpu_s_per_gib"], r["nic_cpu_s_per_gib"],
            r["host_port_frames_per_mib"], r["byte_exact"]))
    for r in rows:
        if not r["key"].startswith("chimney"):
            continue
        for key in ("host", "host-nooffload"):
            b = next((x for x in rows if x["key"] == key), None)
            if b is not None:
                print("%s: %.2fx less host CPU per byte than the %s (target >= 3x)" % (
                    r["label"], b["host_cpu_s_per_gib"] / max(r["host_cpu_s_per_gib"], 1e-9),
                    b["label"]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mib", type=int, default=1024, help="MiB each way (1024)")
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                   help="comma-separated, of: %s" % ", ".join(CONFIGS))
    p.add_argument("--repeat", type=int, default=1,
                   help="runs per configuration; the median host CPU is kept (1)")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds one transfer may take (900)")
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
    keys = [k for k in a.configs.split(",") if k]
    bad = [k for k in keys if k not in CONFIGS]
    if bad:
        p.error("unknown configuration(s): %s" % ", ".join(bad))
    if os.geteuid() != 0:
        print("benchmarks/chimney_real.py needs root (namespaces, TAP)", file=sys.stderr)
        return 2
    restore = raise_on_sigterm(KeyboardInterrupt)
    try:
        nbytes = a.mib * MiB
        rows, failed = [], []
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        cli("testbed", "down", "--netns", NS, check=False)
        cli("testbed", "up", "--netns", NS)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                for key in keys:
                    try:
                        rows.append(median_run(lambda k=key: measure(k, nbytes, tmp=tmp,
                                                                     timeout=a.timeout),
                                               a.repeat))
                        print("  done: %s (%.0f s)" % (key, rows[-1]["elapsed_s"]),
                              file=sys.stderr, flush=True)
                    except (BenchError, subprocess.TimeoutExpired) as e:
                        failed.append({"key": key, "error": str(e)})
                        print("  FAILED: %s: %s" % (key, e), file=sys.stderr, flush=True)
        finally:
            cli("testbed", "down", "--netns", NS, check=False)
        print("\nTCP Chimney on the real network: %d MiB each way (echo), one connection, "
              "%s, %d CPUs, kernel %s" % (a.mib, started, os.cpu_count(), os.uname().release))
        report(rows)
        for f in failed:
            print("FAILED %s: %s" % (f["key"], f["error"]))
        if a.json:
            Path(a.json).write_text(json.dumps({"date": started, "mib_each_way": a.mib,
                                                "rows": rows, "failed": failed,
                                                "cpus": os.cpu_count(),
                                                "kernel": os.uname().release}, indent=1) + "\n")
        return 1 if failed else 0
    finally:
        restore()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:       # SIGINT/SIGTERM: everything was ended already
        print("benchmarks/chimney_real.py: interrupted (%s); namespace and processes "
              "removed" % (e or "SIGINT"), file=sys.stderr)
        sys.exit(130)
