"""One ``acceltcp load APP --sim`` run in this process, as the command line runs it
(`eval.load`'s own parser and command; its JSON summary read back), memoized per
`Context`: the simulated server host is one core (``--server-cpu``; ``--cores N``: N),
so transactions per simulated second are what that core sustains, and the summary carries the host's CPU
and frames per transaction."""

import argparse
import contextlib
import io
import json
import os
import tempfile

from ..load import add_load_parser

__all__ = ["run_load", "sim_load", "point", "points", "transactions_per_run"]


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
             transactions=None, seed=None, host_opts=True, cores=1):
    """The summary of ``acceltcp load APP --sim`` with these options and ``ctx.cpu`` as
    the server core (``offload``: what the server hands to the simulated NIC; empty: no
    NIC; ``host_opts``: the host optimizations of AccelTCP §5.2, lazy TCB creation and
    opportunistic zero-copy; ``cores``: the server host's simulated
    cores). Memoized in ``ctx.cache``; advances
    the progress bar once per actual run."""
    n = transactions or transactions_per_run(ctx)
    argv = [app, "--per-conn", str(per_conn), "-c", str(concurrency), "-n", str(n),
            "--seed", str(ctx.seed if seed is None else seed), "--server-cpu", ctx.cpu]
    if app == "echo":
        argv += ["--size", str(size)]
    if offload:
        argv += ["--nic", "--offload", ",".join(offload)]
    if not host_opts:
        argv += ["--lazy-tcb", "off", "--zero-copy", "off"]
    if cores != 1:
        argv += ["--cores", str(cores)]
    key = tuple(argv)
    if key not in ctx.cache:
        ctx.cache[key] = run_load(argv)
        ctx.advance()
    return ctx.cache[key]


def points(ctx, kws):
    """One point per options dict in `kws` (`sim_load` keywords), each from
    ``ctx.repeat`` runs with seeds seed, seed+1, ...; the runs interleaved (run i of
    every point before run i+1 of any), so that a change in the machine's load over
    time falls on every point alike. -> [(figures, [summaries])]. The figures are the
    fastest run's: with the measured (charged) CPU, other work on the machine only adds
    CPU time (caches, frequency), so the best of N is the closest to what the core
    sustains; with the fixed model the runs differ by their seed only."""
    runs = [[] for _ in kws]
    for i in range(ctx.repeat):
        for j, kw in enumerate(kws):
            runs[j].append(sim_load(ctx, seed=ctx.seed + i, **kw))
    return [(_figures(r), r) for r in runs]


def point(ctx, **kw):
    """`points` for one options dict."""
    return points(ctx, [kw])[0]


def _figures(runs):
    best = max(runs, key=lambda r: r["tps"])
    sv = best["server"]
    return {"tps": best["tps"], "host_us_per_txn": sv["cpu_us_per_txn"],
            "frames_per_txn": sv["frames_per_txn"], "frames_in": sv["frames_in"],
            "frames_out": sv["frames_out"], "transactions": best["transactions"],
            "utilization": (sv.get("core") or {}).get("utilization"),
            "errors": sum(r["errors_total"] for r in runs), "runs": len(runs),
            "tps_runs": sorted(r["tps"] for r in runs)}
