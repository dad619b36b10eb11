"""One ``acceltcp load APP --sim`` run in this process, as the command line runs it
(`eval.load`'s own parser and command; its JSON summary read back), memoized per
`Context`: the simulated server host is one core (``--server-cpu``), so transactions per
simulated second are what that core sustains, and the summary carries the host's CPU
and frames per transaction."""

import argparse
import contextlib
import io
import json
import os
import statistics
import tempfile

from ..load import add_load_parser

__all__ = ["run_load", "sim_load", "point", "transactions_per_run"]


def transactions_per_run(ctx):
    """Transactions of each run unless an experiment says otherwise."""
    return 3000 if ctx.quick else 20000


def run_load(argv):
    """``acceltcp load ARGV --sim --quiet`` in this process -> its JSON summary (plus
    ``exit_status`` and ``argv``). ValueError for options the command rejects."""
    parser = argparse.ArgumentParser(prog="acceltcp")
    add_load_parser(parser.add_subparsers(dest="command"))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "summary.json")
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                args = parser.parse_args(["load", *argv, "--sim", "--quiet", "--json", path])
                rc = args.func(args)
        except SystemExit as e:           # argparse: bad options
            raise ValueError("acceltcp load %s: %s" % (" ".join(argv),
                                                       err.getvalue().strip())) from e
        if not os.path.exists(path):
            raise RuntimeError("acceltcp load %s wrote no summary (exit %s): %s"
                               % (" ".join(argv), rc, err.getvalue().strip()))
        with open(path) as f:
            summary = json.load(f)
    if summary.get("stopped_by") == "signal":
        # the load's own SIGINT/SIGTERM handler ended the run: end the caller too
        raise KeyboardInterrupt
    summary["exit_status"] = rc
    summary["argv"] = ["load", *argv, "--sim"]
    return summary


def sim_load(ctx, *, app="echo", per_conn=1, concurrency=64, size=64, offload=(),
             transactions=None, seed=None):
    """The summary of ``acceltcp load APP --sim`` with these options and ``ctx.cpu`` as
    the server core (``offload``: what the server hands to the simulated NIC; empty: no
    NIC). Memoized in ``ctx.cache``; advances the progress bar once per actual run."""
    n = transactions or transactions_per_run(ctx)
    argv = [app, "--per-conn", str(per_conn), "-c", str(concurrency), "-n", str(n),
            "--seed", str(ctx.seed if seed is None else seed), "--server-cpu", ctx.cpu]
    if app == "echo":
        argv += ["--size", str(size)]
    if offload:
        argv += ["--nic", "--offload", ",".join(offload)]
    key = tuple(argv)
    if key not in ctx.cache:
        ctx.cache[key] = run_load(argv)
        ctx.advance()
    return ctx.cache[key]


def point(ctx, **kw):
    """The median (by txn/s) of ``ctx.repeat`` runs with seeds seed, seed+1, ...:
    -> (figures dict, [summaries]). Figures: tps (and every run's, sorted), host µs and
    frames per transaction, core utilization, errors -- of the median run."""
    runs = [sim_load(ctx, seed=ctx.seed + i, **kw) for i in range(ctx.repeat)]
    tps = statistics.median(r["tps"] for r in runs)
    mid = min(runs, key=lambda r: abs(r["tps"] - tps))
    sv = mid["server"]
    fig = {"tps": tps, "host_us_per_txn": sv["cpu_us_per_txn"],
           "frames_per_txn": sv["frames_per_txn"], "frames_in": sv["frames_in"],
           "frames_out": sv["frames_out"], "transactions": mid["transactions"],
           "utilization": (sv.get("core") or {}).get("utilization"),
           "errors": sum(r["errors_total"] for r in runs), "runs": len(runs),
           "tps_runs": sorted(r["tps"] for r in runs)}
    return fig, runs
