"""Robustness figure: the NIC process killed (-9) or hung (-STOP) under load.

Run as root, from the repository:

    .venv/bin/python benchmarks/robust_nicfault.py [--quick] [--json out.json]

`acceltcp serve echo --nic process --offload setup,teardown` in its own namespace
(atcp-rnic, never the tests' or another benchmark's), under a kernel client load
(`acceltcp.testbed.faultload`: short-lived 64 B echo transactions from 8 threads, each
attempt given 0.5 s before a fresh connection is tried, plus one persistent echo
connection checked byte for byte). Side by side, in one run:

1. kill -9 of the NIC process (the channel's EOF: the host takes over at once);
2. kill -STOP for 5 s with the watchdog on (--nic-watchdog 1: the host kills the hung
   NIC and takes over); SIGCONT afterwards finds no process;
3. the same hang with the watchdog off (--nic-watchdog 0: what the code did before it):
   no service until SIGCONT.

Per case: the outage as the client sees it (from the fault to the end of the first
transaction that started after it), the longest wait of the persistent connection for
an echo, the bytes it lost (sent - echoed, and whether every echo was exact), what the
NIC held when it was lost (teardown flows, offers waiting for its answer, splices) and
what was in flight on the channel, and the server's connection accounting (accepted =
closed + live at the end).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from acceltcp.testbed.procs import fetch_stats

NS = "atcp-rnic"
PY = sys.executable
STACK_IP = "198.18.0.2"
PORT = 7
ATTEMPT = 0.5


def _cli(*args, check=True):
    return subprocess.run([PY, "-m", "acceltcp.cli"] + list(args), check=check,
                          capture_output=True, text=True)


class _Server:
    def __init__(self, tmp, watchdog):
        self.stats = os.path.join(tmp, "serve-%s.json" % watchdog)
        self.p = subprocess.Popen(
            [PY, "-m", "acceltcp.cli", "serve", "echo", "--port", str(PORT), "--netns", NS,
             "--nic", "process", "--offload", "setup,teardown", "--nic-watchdog",
             str(watchdog), "--stats-file", self.stats],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.events = []
        while True:
            line = self.p.stderr.readline()
            if not line:
                raise RuntimeError("serve did not start (exit %s)" % self.p.wait())
            if '"event"' in line:
                ev = json.loads(line)
                if ev["event"] == "ready":
                    self.nic_pid = ev["nic_pid"]
                    break

    def snapshot(self, timeout=5.0):
        return fetch_stats(self.p, self.stats, timeout)

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        _, err = self.p.communicate(timeout=30)
        for line in err.splitlines():
            if line.startswith("{") and '"event"' in line:
                self.events.append(json.loads(line))
        with open(self.stats) as f:
            return json.load(f)


def _case(tmp, name, fault, watchdog, duration, hold):
    srv = _Server(tmp, watchdog)
    load = subprocess.Popen(
        ["ip", "netns", "exec", NS, PY, "-m", "acceltcp.testbed.faultload", STACK_IP,
         str(PORT), "--duration", str(duration), "--attempt-timeout", str(ATTEMPT)],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        json.loads(load.stdout.readline())                       # started
        time.sleep(duration * 0.25)
        t_fault = time.monotonic()
        if fault == "kill":
            os.kill(srv.nic_pid, signal.SIGKILL)
            cont = None
        else:
            os.kill(srv.nic_pid, signal.SIGSTOP)
            time.sleep(hold)
            try:
                os.kill(srv.nic_pid, signal.SIGCONT)
                cont = "resumed"
            except ProcessLookupError:
                cont = "gone (killed by the takeover)"
        res = json.loads(load.stdout.readline())
    finally:
        load.wait(30)
    from acceltcp.testbed.faultload import outage
    ok = res["ok"]
    before = [t for t in ok if t < t_fault]
    after = [t for t in ok if t >= t_fault]
    gap = (after[0] - before[-1]) if before and after else None
    # settle: every connection closed on the server
    end = time.monotonic() + 30
    st = srv.snapshot()
    while st["conns_live"] and time.monotonic() < end:
        time.sleep(0.2)
        st = srv.snapshot()
    st = srv.stop()
    c = st["counters"]
    nic = st["nic"]
    take = nic.get("takeover") or {}
    p = res["persistent"]
    t_end = res["t_end"]
    return {
        "case": name, "watchdog_s": watchdog, "fault": fault,
        "hold_s": hold if fault == "stop" else 0, "sigcont": cont,
        "outage_s": outage(res, t_fault),
        "completion_gap_s": gap,
        "transactions_ok": len(ok), "attempts_failed": res["failed"],
        "tps_before": len(before) / max(t_fault - res["t0"], 1e-9),
        "tps_after": len(after) / max(t_end - t_fault, 1e-9),
        "persistent": {"sent": p["sent"], "echoed": p["received"],
                       "bytes_lost": p["sent"] - p["received"], "exact": p["exact"],
                       "error": p["error"], "longest_wait_s": p["gaps_max_s"]},
        "nic_lost": c.get("nic_lost", 0), "lost_reason": nic.get("lost_reason"),
        "nic_exit": nic.get("exit_status"),
        "nic_held": take.get("nic_flows_lost"), "in_flight": take.get("in_flight"),
        "accounting": {"accepted": c["conns_accepted"], "closed": c["conns_closed"],
                       "live": c["conns_live"],
                       "ok": c["conns_accepted"] == c["conns_closed"] + c["conns_live"]
                       - c.get("conns_embryonic", 0),
                       "teardown_refused_duplicate": c.get("teardown_refused_duplicate", 0),
                       "teardown_pending_drops": st["drops"].get("teardown_pending", 0),
                       "internal_error": st["drops"].get("internal_error", 0)},
    }


def run(quick=False):
    """-> {"cases": [...], "setup": {...}}: the three fault cases (module doc)."""
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces, /dev/net/tun)")
    duration = 12.0 if quick else 20.0
    hold = 5.0
    _cli("testbed", "down", "--netns", NS, check=False)
    _cli("testbed", "up", "--netns", NS)
    try:
        with tempfile.TemporaryDirectory(prefix="robust-nicfault-") as tmp:
            cases = [_case(tmp, "kill -9", "kill", 1.0, duration, hold),
                     _case(tmp, "stop 5 s, watchdog 1 s", "stop", 1.0, duration, hold),
                     _case(tmp, "stop 5 s, no watchdog", "stop", 0, duration, hold)]
    finally:
        _cli("testbed", "down", "--netns", NS, check=False)
    return {"setup": {"load": "8 threads of short-lived 64 B echo transactions (0.5 s "
                      "per attempt, then a fresh connection) + 1 persistent 1 KiB echo "
                      "connection", "server": "acceltcp serve echo --nic process "
                      "--offload setup,teardown", "duration_s": duration,
                      "netns": NS},
            "cases": cases}


def _fmt(v, f="%.2f"):
    return "-" if v is None else f % v


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args(argv)
    out = run(a.quick)
    print("NIC process faults under load (%s)" % out["setup"]["load"])
    print("%-24s %9s %9s %10s %10s %8s %9s %13s %11s" % (
        "case", "outage s", "gap s", "persist.", "longest", "lost B", "tps b/a",
        "NIC held td", "accounting"))
    for c in out["cases"]:
        p = c["persistent"]
        held = c["nic_held"] or {}
        acc = c["accounting"]
        print("%-24s %9s %9s %10s %10s %8d %9s %13s %11s" % (
            c["case"], _fmt(c["outage_s"]), _fmt(c["completion_gap_s"]),
            "exact" if p["exact"] and not p["error"] else "BROKEN",
            _fmt(p["longest_wait_s"]), p["bytes_lost"],
            "%.0f/%.0f" % (c["tps_before"], c["tps_after"]),
            "%s+%s parked" % (held.get("teardown_flows_lost", "-"),
                              held.get("parked_resumed", "-")),
            "%d=%d+%d %s" % (acc["accepted"], acc["closed"], acc["live"],
                             "ok" if acc["ok"] else "BAD")))
    base = out["cases"][2]["outage_s"]
    wd = out["cases"][1]["outage_s"]
    if base and wd:
        print("hang outage with the watchdog / without: %.2f s / %.2f s = %.2fx"
              % (wd, base, wd / base))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
