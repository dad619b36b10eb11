"""``acceltcp eval [EXPERIMENT ...] [--quick] [--out DIR] [--nic python|xdp|both]
[--cpu charged|fixed]``: the command around `runner.run_experiments`."""

import sys
import time
from pathlib import Path

from ..progress import progress_bar
from . import EXPERIMENTS, select
from .base import CPU_CHOICES, NIC_CHOICES, Context
from .runner import earlier_docs, run_experiments

__all__ = ["cmd_eval", "add_eval_parser"]


def cmd_eval(args) -> int:
    """Run the paper's experiments; write DIR/<name>.{json,csv,png} and DIR/report.md."""
    try:
        chosen = select(args.experiments)
    except KeyError as e:
        print("acceltcp eval: unknown experiment %s (one of: %s)"
              % (e, ", ".join(EXPERIMENTS)), file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print("acceltcp eval: --out %s: %s" % (out, e), file=sys.stderr)
        return 2
    if args.report_only:
        chosen = []
    not_run = [e for e in EXPERIMENTS.values() if e.real_network and e not in chosen]
    # the report keeps what earlier runs wrote into DIR (each marked with its date)
    names = list(EXPERIMENTS)
    earlier = [] if args.fresh_report else earlier_docs(out, names)
    ctx = Context(out=out, quick=args.quick, cpu=args.cpu, nic=args.nic, seed=args.seed)
    t0 = time.perf_counter()
    if args.no_progress or not chosen:
        docs = run_experiments(chosen, ctx, not_run=not_run, earlier=earlier, order=names)
    else:
        with progress_bar() as progress:
            docs = run_experiments(chosen, ctx, progress=progress, not_run=not_run,
                                   earlier=earlier, order=names)
    for d in docs:
        print("%-11s %-12s %6.1f s  %s" % (d["name"], d["status"], d["wall_s"],
                                           d.get("reason", "")))
    print("wrote %s (%.0f s)" % (out / "report.md", time.perf_counter() - t0))
    return 1 if any(d["status"] == "failed" for d in docs) else 0


def add_eval_parser(sub):
    names = ", ".join(("%s (real network)" % e.name) if e.real_network else e.name
                      for e in EXPERIMENTS.values())
    p = sub.add_parser(
        "eval", help="the paper's evaluation: tables and plots, report.md",
        description="Run the paper's evaluation experiments (default: every one that "
                    "needs no real network) and write DIR/<name>.json, .csv, .png and "
                    "DIR/report.md. Experiments: %s. Real-network ones need root and "
                    "run only when named (or with `all`: every experiment, the committed "
                    "report's run). docs/eval.md explains each." % names)
    p.add_argument("experiments", nargs="*", metavar="EXPERIMENT",
                   help="experiments to run, in order (default: all simulator ones; "
                        "all: every experiment)")
    p.add_argument("--quick", action="store_true",
                   help="CI sizes: fewer points and transactions (minutes)")
    p.add_argument("--out", default="eval-out", metavar="DIR",
                   help="output directory (%(default)s)")
    p.add_argument("--nic", choices=NIC_CHOICES, default="python",
                   help="NIC placements: the Python NIC, the XDP dataplane, or both "
                        "(%(default)s)")
    p.add_argument("--cpu", choices=CPU_CHOICES, default="charged",
                   help="the simulated server core: charged (its measured CPU, what this "
                        "stack sustains here) or fixed (a cost model: deterministic) "
                        "(%(default)s)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: rewrite DIR/report.md from the JSON files in DIR")
    p.add_argument("--fresh-report", action="store_true",
                   help="the report shows this run only (default: also the experiments "
                        "earlier runs left in DIR, each marked with its date)")
    p.set_defaults(func=cmd_eval)
    return p
