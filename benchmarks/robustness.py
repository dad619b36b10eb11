"""Robustness figures for the README, in one run: every benchmarks/robust_*.py in turn.

Run as root, from the repository:

    .venv/bin/python benchmarks/robustness.py [--quick] [--only NAME ...] [--out DIR]

  synflood  spoofed SYN flood, host only and behind each NIC placement; forged cookie ACKs
  fuzz      malformed and mutated frames through each NIC placement; the drop table
  nicfault  the NIC process killed (-9) and hung (SIGSTOP 5 s) under load
  kv        80 pipelined 1 MiB GETs and 300 unread GETs, before/after back-pressure
  idle      host memory per idle connection (20,000 held)

Each part runs in its own namespace and prints its own table; with --out, its JSON goes
to DIR/NAME.json and the printed tables to DIR/robustness.txt.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = ("synflood", "fuzz", "nicfault", "kv", "idle")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="+", choices=PARTS)
    p.add_argument("--out", help="directory for the JSON of each part and the tables")
    a = p.parse_args(argv)
    out = Path(a.out) if a.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    text = []
    failed = []
    for name in a.only or PARTS:
        argv = [sys.executable, str(HERE / ("robust_%s.py" % name))]
        if a.quick:
            argv.append("--quick")
        if out:
            argv += ["--json", str(out / ("%s.json" % name))]
        t0 = time.monotonic()
        r = subprocess.run(argv, capture_output=True, text=True)
        head = "== %s (%.0f s)%s" % (name, time.monotonic() - t0,
                                      "" if r.returncode == 0 else " FAILED")
        block = "\n".join([head, r.stdout.rstrip()] +
                          ([r.stderr[-3000:]] if r.returncode else []))
        print(block, flush=True)
        text.append(block)
        if r.returncode:
            failed.append(name)
    if out:
        (out / "robustness.txt").write_text("\n\n".join(text) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
