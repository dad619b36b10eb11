"""Fuzz through each NIC placement: malformed and mutated frames (acceltcp.testbed.fuzz)
into the simulator's NIC (sim), `acceltcp serve echo --nic inline` and `--nic process`
(both with --offload setup,teardown) on the TAP testbed, sent from the TAP's peer end
with an AF_PACKET socket. Per placement: frames fuzzed, seconds, whether every frame is
accounted for (NIC outcomes == frames in, host delivered + drops == frames in), the
live connections' byte-exact checks, and the drop table (counter -> frames).

Run as root, from the repository:

    .venv/bin/python benchmarks/robust_fuzz.py [--count 100000] [--seed 1]
                                               [--netns atcp-rfuz] [--json out.json]
                                               [--quick] [--sim-only]

The TAP placements use their own namespace (default atcp-rfuz, created and removed
here), so they never collide with the tests' or a developer's testbed.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from acceltcp.testbed.fuzzbed import (drop_table, host_inbound_drops,  # noqa: E402
                                      nic_wire_outcomes, sim_fuzz, tap_checks, tap_fuzz)

NETNS = "atcp-rfuz"


def _sim(count, seed):
    t0 = time.monotonic()
    r = sim_fuzz(count, seed=seed)
    h = r["host"]
    drops = host_inbound_drops(r["host_drops"])
    return {
        "frames": r["injected"], "seconds": round(time.monotonic() - t0, 2),
        "exceptions": r["nic_exceptions"] + (r["host_last_exception"] is not None),
        "internal_error": r["host_drops"].get("internal_error", 0),
        "nic_accounted": sum(nic_wire_outcomes(r["nic"]).values()) == r["wire_in"],
        "host_accounted": h["frames_in"] == h["frames_delivered"] + sum(drops.values()),
        "live_ok": all(r["after_ok"]),
        "teardown_frames": r["teardown_frames_fuzz"], "splice_frames": r["splice_frames_fuzz"],
        "drop_table": drop_table(r["nic"], r["host_drops"]),
    }


def _tap(netns, placement, count, seed):
    with tempfile.TemporaryDirectory() as d:
        t0 = time.monotonic()
        r = tap_fuzz(netns, placement, count, seed=seed,
                     stats_file=os.path.join(d, "serve.json"))
        c = tap_checks(r)
    return {
        "frames": c["sent"], "seconds": round(time.monotonic() - t0, 2),
        "fuzz_seconds": r["fuzz_s"], "reached_nic": c["tap_rx"],
        "queue_drops": c["queue_drops"], "runts_skipped": r["sender"]["runts_skipped"],
        "internal_error": c["internal_error"], "alive": c["alive"] and c["nic_alive"],
        "nic_accounted": c["nic_outcomes"] == c["tap_rx"],
        "host_accounted": c["host_frames_in"] == c["host_accounted"],
        "conns_created_eq_closed_plus_live": c["conns_created"] == c["conns_gone_or_live"],
        "live_ok": c["held"] == {"before": True, "after": True} and c["echo_after"]["ok"],
        "drop_table": c["drop_table"],
    }


def run(quick=False, count=None, seed=1, netns=NETNS, sim_only=False):
    """-> {placement: figures} for sim, inline and process."""
    count = count or (20_000 if quick else 100_000)
    out = {"count": count, "seed": seed, "sim": _sim(count, seed)}
    if sim_only:
        return out
    acceltcp = [sys.executable, "-m", "acceltcp.cli"]
    subprocess.run(acceltcp + ["testbed", "up", "--netns", netns], check=True,
                   capture_output=True)
    try:
        for placement in ("inline", "process"):
            out[placement] = _tap(netns, placement, count, seed)
    finally:
        subprocess.run(acceltcp + ["testbed", "down", "--netns", netns, "--ref-netns",
                                   netns + "-ref"], capture_output=True)
    return out


def _print(res):
    places = [p for p in ("sim", "inline", "process") if p in res]
    print("fuzz frames per placement (seed %d)" % res["seed"])
    print("%-8s %8s %8s %6s %6s %6s %6s %6s" % ("", "frames", "seconds", "exc", "nic=", "host=",
                                                "live", "alive"))
    for p in places:
        r = res[p]
        print("%-8s %8d %8.1f %6d %6s %6s %6s %6s" % (
            p, r["frames"], r["seconds"], r.get("exceptions", r["internal_error"]),
            r["nic_accounted"], r["host_accounted"], r["live_ok"], r.get("alive", "-")))
    keys = sorted(set().union(*(res[p]["drop_table"] for p in places)))
    print("\ndrop table (counter -> frames)")
    print("%-40s" % "counter" + "".join("%10s" % p for p in places))
    for k in keys:
        print("%-40s" % k + "".join("%10d" % res[p]["drop_table"].get(k, 0) for p in places))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--netns", default=NETNS)
    ap.add_argument("--json", default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sim-only", action="store_true")
    a = ap.parse_args()
    if not a.sim_only and os.geteuid() != 0:
        sys.exit("robust_fuzz: the TAP placements need root (or use --sim-only)")
    res = run(a.quick, a.count, a.seed, a.netns, a.sim_only)
    _print(res)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
