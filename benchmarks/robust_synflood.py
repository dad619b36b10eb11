"""SYN flood: legitimate clients served while spoofed SYNs pour in, host only and behind
each NIC placement.

Run as root, from the repository:

    .venv/bin/python benchmarks/robust_synflood.py [--rate 2000] [--seconds 20] [--json F]

For each placement (host only; ``--nic inline --offload setup``; ``--nic process
--offload setup``) and each kind of SYN (``ts``: Linux-like, MSS + SACK + timestamps +
window scale, which the NIC answers itself; ``bare``: MSS only, as hping3 sends, which the
NIC hands to the host), in the namespace atcp-rsyn:

1. ``acceltcp serve echo`` starts; 20 warm-up echoes; RSS (VmRSS of the serve process,
   and of the NIC process for that placement) is read;
2. ``testbed.synflood flood``: --rate spoofed SYNs a second for --seconds from
   198.18.128.0/17 (no one answers; see that module);
3. 1.5 s in, kernel clients (``synflood clients``) open 20 connections a second, each an
   echo round trip, for --seconds - 5 s: success % and connect() latency p50/p99;
4. then 2,000 forged ACKs guessing at a cookie (random seq/ack; with the flood's kind of
   options: TSecr with the MARK bit, or no timestamps): offered vs accepted (a
   connection made), read from the counters of whoever checks them -- the NIC
   (``cookie_ack_ok``) for marked TSecrs on an offloaded listener, else the host
   (``syn_cookie_ack_ok``);
5. at the end of the flood RSS again.

SYN-ACK/s: SYN-ACKs the server side sent during the flood (host children + their
retransmissions + host cookies + NIC cookies), from the counters, over --seconds.
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
sys.path.insert(0, str(HERE))
import realnet  # noqa: E402  (benchmarks/ is not a package)
from acceltcp.testbed.procs import fetch_stats  # noqa: E402

NS = "atcp-rsyn"
PY = sys.executable
STACK_IP = realnet.STACK_IP
FLOOD = [PY, "-m", "acceltcp.testbed.synflood"]
PLACEMENTS = (("host only", []),
              ("NIC inline, setup", ["--nic", "inline", "--offload", "setup"]),
              ("NIC process, setup", ["--nic", "process", "--offload", "setup"]))
KINDS = ("ts", "bare")
FORGED = 2000


class Serve:
    """``acceltcp serve echo`` with a stats file; SIGUSR1 snapshots."""

    def __init__(self, extra, stats):
        self.stats = Path(stats)
        argv = [PY, "-m", "acceltcp.cli", "serve", "echo", "--port", "7", "--netns", NS,
                "--no-offload", "--stats-file", str(stats)] + list(extra)
        self.p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)
        deadline = time.monotonic() + 30
        self.ready = None
        while time.monotonic() < deadline:
            line = self.p.stderr.readline()
            if '"ready"' in line:
                self.ready = json.loads(line)
                break
            if not line and self.p.poll() is not None:
                break
        if self.ready is None:
            self.p.kill()
            raise RuntimeError("serve did not start: %s" % self.p.stderr.read()[-2000:])
        # nothing reads stderr from here on: send it nowhere rather than fill the pipe
        self.p.stderr.close()

    @property
    def nic_pid(self):
        return self.ready.get("nic_pid")

    def snapshot(self, timeout=5.0):
        return fetch_stats(self.p, self.stats, timeout)

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        return json.loads(self.stats.read_text())


def _ns_json(argv, timeout):
    r = subprocess.run(realnet.ns(NS, argv), capture_output=True, text=True, timeout=timeout)
    lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
    if not lines:
        raise RuntimeError("%s: %s" % (argv[3:5], r.stderr[-2000:]))
    return json.loads(lines[-1])


def _c(st, key):
    return st["counters"].get(key, 0)


def _nic(st, key):
    nic = st.get("nic") or {}
    return (nic.get("counters") or {}).get(key, 0)


def _synacks(st):
    return (_c(st, "syns_received") + _c(st, "syn_cookies_sent") + _c(st, "retransmits")
            + _nic(st, "syn_cookies_sent"))


def one(label, extra, kind, rate, seconds, tmp):
    stats = os.path.join(tmp, "rsyn-%d-%s.json" % (len(label), kind))
    srv = Serve(extra, stats)
    flood = None
    try:
        warm = _ns_json(FLOOD + ["clients", STACK_IP, "7", "--count", "20", "--rate", "0"], 60)
        time.sleep(0.3)
        s0 = srv.snapshot()
        rss0 = realnet.proc_kib(srv.p.pid)
        nrss0 = realnet.proc_kib(srv.nic_pid) if srv.nic_pid else None
        no_ts = ["--no-ts"] if kind == "bare" else []
        flood = subprocess.Popen(realnet.ns(NS, FLOOD + ["flood", STACK_IP, "7", "--rate",
                                                         str(rate), "--duration", str(seconds)]
                                            + no_ts),
                                 stdout=subprocess.PIPE, text=True)
        flood.stdout.readline()                                    # {"event": "start"}
        t0 = time.monotonic()
        time.sleep(1.5)
        n = int(20 * max(seconds - 5.0, 1.0))
        legit = _ns_json(FLOOD + ["clients", STACK_IP, "7", "--count", str(n), "--rate", "20",
                                  "--concurrency", "8", "--timeout", "20"], seconds + 120)
        s1 = srv.snapshot()
        left = seconds - (time.monotonic() - t0)
        forged = None
        if left > 1.5:                              # while the flood (cookie mode) lasts
            forged = _ns_json(FLOOD + ["forge", STACK_IP, "7", "--count", str(FORGED),
                                       "--rate", str(FORGED)] + no_ts, 60)
            time.sleep(0.3)
        s2 = srv.snapshot()
        fres = json.loads(flood.communicate(timeout=seconds + 30)[0].splitlines()[-1])
        rss1 = realnet.proc_kib(srv.p.pid)
        nrss1 = realnet.proc_kib(srv.nic_pid) if srv.nic_pid else None
        s3 = srv.snapshot()
    finally:
        if flood is not None and flood.poll() is None:
            flood.kill()
            flood.wait()
        st = srv.stop()
    nic_checks = kind == "ts" and bool(extra)
    okk, badk = ("cookie_ack_ok", "cookie_ack_bad") if nic_checks else \
        ("syn_cookie_ack_ok", "syn_cookie_ack_bad")
    get = _nic if nic_checks else _c
    return {
        "label": label, "kind": kind, "offered_syn_s": fres["rate"],
        "synack_s": (_synacks(s3) - _synacks(s0)) / fres["elapsed_s"],
        "legit": legit["count"], "legit_ok": legit["ok"],
        "legit_ok_pct": 100.0 * legit["ok"] / max(legit["count"], 1),
        "connect_ms_p50": legit["connect_ms_p50"], "connect_ms_p99": legit["connect_ms_p99"],
        "rss_before_mib": rss0 / 1024, "rss_after_mib": rss1 / 1024,
        "nic_rss_before_mib": None if nrss0 is None else nrss0 / 1024,
        "nic_rss_after_mib": None if nrss1 is None else nrss1 / 1024,
        "forged_checked_by": "NIC" if nic_checks else "host",
        "forged_offered": 0 if forged is None else forged["sent"],
        "forged_accepted": get(s2, okk) - get(s1, okk),
        "forged_rejected": get(s2, badk) - get(s1, badk),
        "host_cookies": _c(st, "syn_cookies_sent"), "nic_cookies": _nic(st, "syn_cookies_sent"),
        "host_cookie_conns": _c(st, "syn_cookie_ack_ok"),
        "syn_recv_expired": _c(st, "syn_recv_expired"),
        "arp_requests": _c(st, "arp_requests_sent"),
        "warmup_ok": warm["ok"],
    }


def run(quick=False, rate=None, seconds=None):
    rate = rate or (1000 if quick else 2000)
    seconds = seconds or (8.0 if quick else 20.0)
    realnet.cli("testbed", "down", "--netns", NS)
    realnet.cli("testbed", "up", "--netns", NS)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = []
            for label, extra in PLACEMENTS:
                for kind in KINDS:
                    rows.append(one(label, extra, kind, rate, seconds, tmp))
                    print("  done: %s / %s" % (label, kind), file=sys.stderr, flush=True)
            return {"rate": rate, "seconds": seconds, "rows": rows}
    finally:
        realnet.cli("testbed", "down", "--netns", NS)


def _ms(x):
    return "-" if x is None else "%.1f" % x


def report(res):
    print("SYN flood: %d spoofed SYN/s for %.0f s from 198.18.128.0/17; legitimate kernel "
          "clients at 20 conn/s; %d forged cookie ACKs" % (res["rate"], res["seconds"],
                                                           FORGED))
    print("%-19s %-4s %8s %8s %9s %7s %7s %15s %13s %15s" % (
        "placement", "SYN", "SYN/s", "SYNACK/s", "legit ok", "p50 ms", "p99 ms",
        "RSS MiB", "NIC RSS MiB", "forged acc/off"))
    for r in res["rows"]:
        nic = "-" if r["nic_rss_before_mib"] is None else "%.1f->%.1f" % (
            r["nic_rss_before_mib"], r["nic_rss_after_mib"])
        print("%-19s %-4s %8.0f %8.0f %8.1f%% %7s %7s %15s %13s %9s (%s)" % (
            r["label"], r["kind"], r["offered_syn_s"], r["synack_s"], r["legit_ok_pct"],
            _ms(r["connect_ms_p50"]), _ms(r["connect_ms_p99"]),
            "%.1f->%.1f" % (r["rss_before_mib"], r["rss_after_mib"]), nic,
            "%d/%d" % (r["forged_accepted"], r["forged_offered"]), r["forged_checked_by"]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=int, default=2000, help="spoofed SYNs per second")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json")
    a = p.parse_args(argv)
    res = run(a.quick, a.rate if not a.quick else None, a.seconds if not a.quick else None)
    report(res)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
