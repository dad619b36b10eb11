"""The simulator's experiments: Table 3, Figures 1, 10 (over simulated cores) and 11, and
Table 1 / Figure 14 (the host's CPU by category, measured by the stack's runner).

Setup, for all: `simload.sim_load` -- ``acceltcp load echo --sim``: a closed-loop echo
client (64 connections unless swept) on one simulated stack, the echo server on a second
("the host"), a 10 Gbit/s link, the host one simulated CPU core whose work costs what
``ctx.cpu`` says (measured CPU or the fixed cost model); Figure 10 sweeps the host's
simulated cores (``--cores N``: N stacks behind one NIC, testbed/simcores.py). The client and the network
cost nothing, so the host core is the bottleneck, as in the paper's testbed (four
client machines against one server core): what an offload saves in host CPU shows up as
transactions per second. Short-lived: one transaction per connection, the server closes
after its reply (the paper's §2.1 packet sequence); persistent: one connection carries
them all. Offloads: the simulated AccelTCP NIC in front of the host answers handshakes
with SYN cookies (setup, §4.1) and finishes the server's close (teardown, §4.2).
"""

from .base import Result
from .simload import transactions_per_run

__all__ = ["table3", "fig1", "fig10", "fig11", "table1", "fig14", "CONFIGS"]

# (label, per_conn, offloads): the ablation of Table 3 and Figure 10, in its order.
CONFIGS = (
    ("no offload", 1, ()),
    ("setup", 1, ("setup",)),
    ("setup + teardown", 1, ("setup", "teardown")),
)
PERSISTENT = ("persistent", 0, ())
HOST_OPT = "setup + teardown + host optimizations"
HOST_OPT_WHAT = "lazy TCB creation and opportunistic zero-copy (§5.2)"

PAPER_TABLE3 = {"no offload": (0.89, 1.0), "setup": (1.21, 1.4),
                "setup + teardown": (2.06, 2.3), HOST_OPT: (3.42, 3.8)}


def _cpu_words(ctx):
    return ("its measured CPU charged to virtual time" if ctx.cpu == "charged" else
            "the fixed cost model (eval.cost.CostModel defaults)")


def where(lo, hi, paper_lo, paper_hi):
    """Our range [lo, hi] against the paper's: within, above, below or overlapping."""
    if lo >= paper_lo and hi <= paper_hi:
        return "within"
    if lo > paper_hi:
        return "above"
    if hi < paper_lo:
        return "below"
    return "overlapping"


def _fmt(x, spec=",.0f"):
    return "-" if x is None else format(x, spec)


def _spread(fig):
    """The runs' txn/s as 'min-max' (one run: its value)."""
    lo, hi = fig["tps_runs"][0], fig["tps_runs"][-1]
    return _fmt(lo) if lo == hi else "%s-%s" % (_fmt(lo), _fmt(hi))


def _setup(ctx, what):
    return ("`acceltcp load echo --sim --server-cpu %s`: %s; 64 concurrent connections "
            "and 64 B messages unless swept, %s transactions per run, best of %d "
            "interleaved run(s) per point; the host is one simulated core unless swept, %s."
            % (ctx.cpu, what, format(transactions_per_run(ctx), ","), ctx.repeat,
               _cpu_words(ctx)))


# ---------------------------------------------------------------------- Table 3
def table3(ctx):
    from .simload import points

    rows, samples = [], []
    base = None
    # the offload rows without the host optimizations (lazy TCB creation and zero-copy
    # off), then
    # setup + teardown with them, then persistent
    measured = points(ctx, [{"per_conn": pc, "offload": o, "host_opts": False}
                            for _, pc, o in CONFIGS] +
                      [{"per_conn": 1, "offload": ("setup", "teardown"), "host_opts": True},
                       {"per_conn": 0, "offload": ()}])
    for (label, per_conn, offload), (fig, runs) in zip(CONFIGS, measured):
        samples += runs
        base = base or fig["tps"]
        mtps, speed = PAPER_TABLE3[label]
        rows.append({"configuration": label, "txn_per_s": fig["tps"],
                     "speedup": fig["tps"] / base, "host_us_per_txn": fig["host_us_per_txn"],
                     "frames_per_txn": fig["frames_per_txn"], "errors": fig["errors"],
                     "paper_mtps": mtps, "paper_speedup": speed, "status": "measured",
                     "txn_per_s_runs": _spread(fig)})
    mtps, speed = PAPER_TABLE3[HOST_OPT]
    fig, runs = measured[-2]
    samples += runs
    rows.append({"configuration": HOST_OPT, "txn_per_s": fig["tps"],
                 "speedup": fig["tps"] / base, "host_us_per_txn": fig["host_us_per_txn"],
                 "frames_per_txn": fig["frames_per_txn"], "errors": fig["errors"],
                 "paper_mtps": mtps, "paper_speedup": speed,
                 "status": "measured: " + HOST_OPT_WHAT, "txn_per_s_runs": _spread(fig)})
    fig, runs = measured[-1]
    samples += runs
    rows.append({"configuration": "persistent (reference)", "txn_per_s": fig["tps"],
                 "speedup": fig["tps"] / base, "host_us_per_txn": fig["host_us_per_txn"],
                 "frames_per_txn": fig["frames_per_txn"], "errors": fig["errors"],
                 "paper_mtps": None, "paper_speedup": None, "status": "measured",
                 "txn_per_s_runs": _spread(fig)})
    m = rows[:4]
    comparison = [{"what": "%s: speedup over no offload" % r["configuration"],
                   "paper": "%.1fx (%.2f Mtps)" % (r["paper_speedup"], r["paper_mtps"]),
                   "ours": "%.2fx (%s txn/s%s, %.1f host us/txn, %.2f frames/txn)"
                           % (r["speedup"], _fmt(r["txn_per_s"]),
                              " [runs %s]" % r["txn_per_s_runs"] if ctx.repeat > 1 else "",
                              r["host_us_per_txn"], r["frames_per_txn"])} for r in m]
    facts = {"speedup_setup": m[1]["speedup"], "speedup_setup_teardown": m[2]["speedup"],
             "speedup_host_opt": m[3]["speedup"],
             "frames_per_txn": [r["frames_per_txn"] for r in m],
             "host_us_per_txn": [r["host_us_per_txn"] for r in m]}
    s2, s3 = m[2]["speedup"], m[3]["speedup"]
    note = ("Setup + teardown offload gives %.2fx here, %s the paper's 2.3x, on one Python "
            "core whose absolute rate is ~%.0fx below mTCP's on a Xeon: the frames per "
            "transaction fall as in the paper (6 -> 4 -> ~1), but the per-connection work "
            "that stays on the host (accept, TCB creation and release, the application's "
            "bookkeeping) weighs %s in this stack. Lazy TCB creation and zero-copy add %.2fx "
            "more (%.2fx in all, the paper's host optimizations 3.8x: a Python object "
            "costs about the same to create whatever it holds, and a copy of 64 B is "
            "cheap next to the interpreter's work around it)."
            % (s2, where(s2, s2, 2.3, 2.3), 0.89e6 / m[0]["txn_per_s"]
               if m[0]["txn_per_s"] else 0, "more" if s2 < 2.3 else "less",
               s3 / s2 if s2 else 0, s3))
    plot = {"panels": [
        {"kind": "bar", "title": "64 B short-lived echo, one host core",
         "xlabel": "configuration", "ylabel": "transactions/s",
         "x": [r["configuration"] for r in m],
         "series": {"ours (txn/s)": [r["txn_per_s"] for r in m]}},
        {"kind": "bar", "title": "speedup over no offload", "xlabel": "configuration",
         "ylabel": "x", "x": [r["configuration"] for r in m],
         "series": {"ours": [r["speedup"] for r in m],
                    "paper": [r["paper_speedup"] for r in m]}},
        {"kind": "bar", "title": "host frames per transaction", "xlabel": "configuration",
         "ylabel": "frames/txn", "x": [r["configuration"] for r in m],
         "series": {"ours": [r["frames_per_txn"] for r in m]}},
    ]}
    return Result(columns=list(rows[0]), rows=rows, comparison=comparison, note=note,
                  plot=plot, samples=samples, facts=facts,
                  setup=_setup(ctx, "short-lived 64 B echo, no NIC, then the NIC with "
                                    "setup, then setup + teardown offload (the server's "
                                    "host optimizations off: `--lazy-tcb off "
                                    "--zero-copy off`), then setup + teardown with them "
                                    "on"))


def table3_steps(ctx):
    return (len(CONFIGS) + 1) * ctx.repeat


# ---------------------------------------------------------------------- Figure 1
def _fig1_levels(ctx):
    return (4, 64, 256) if ctx.quick else (1, 4, 16, 64, 256, 1024)


def fig1(ctx):
    from .simload import points

    xs = _fig1_levels(ctx)
    rows, samples = [], []
    measured = points(ctx, [{"per_conn": pc, "concurrency": c} for c in xs for pc in (0, 1)])
    for i, c in enumerate(xs):
        (pers, r1), (short, r2) = measured[2 * i], measured[2 * i + 1]
        samples += r1 + r2
        rows.append({"concurrency": c, "persistent_txn_per_s": pers["tps"],
                     "short_lived_txn_per_s": short["tps"],
                     "persistent_over_short": pers["tps"] / short["tps"]
                     if short["tps"] else None,
                     "persistent_host_us_per_txn": pers["host_us_per_txn"],
                     "short_lived_host_us_per_txn": short["host_us_per_txn"],
                     "persistent_frames_per_txn": pers["frames_per_txn"],
                     "short_lived_frames_per_txn": short["frames_per_txn"],
                     "errors": pers["errors"] + short["errors"]})
    ratios = [r["persistent_over_short"] for r in rows if r["persistent_over_short"]]
    comparison = [
        {"what": "persistent / one connection per request, txn/s",
         "paper": "2.6-3.2x (1-8 cores, mTCP, 16k connections)",
         "ours": "%.2f-%.2fx (concurrency %d-%d, one core)" % (min(ratios), max(ratios),
                                                              xs[0], xs[-1])},
        {"what": "host frames per transaction",
         "paper": "2 persistent, 6 short-lived",
         "ours": "%.2f persistent, %.2f short-lived (concurrency %d)" % (
             rows[-1]["persistent_frames_per_txn"], rows[-1]["short_lived_frames_per_txn"],
             xs[-1])}]
    pos = where(min(ratios), max(ratios), 2.6, 3.2)
    note = ("Ours (%.2f-%.2fx) is %s the paper's 2.6-3.2x; the paper sweeps CPU cores at 16k "
            "connections, ours sweeps connections on one simulated core (fig10 sweeps "
            "simulated cores). Both gaps follow the frames per transaction "
            "(persistent 2, short-lived 6); %s"
            % (min(ratios), max(ratios), pos,
               "ours is wider because each connection's own work (accept, TCB creation and "
               "release) costs this Python stack more, relative to a data frame, than "
               "mTCP." if pos == "above" else
               "ours is narrower because a data frame costs this Python stack more, "
               "relative to a connection's setup, than mTCP." if pos == "below" else
               "the per-connection work weighs about as much as in mTCP."))
    plot = {"panels": [
        {"kind": "line", "title": "64 B echo, one host core", "xlabel": "concurrent connections",
         "ylabel": "transactions/s", "x": list(xs), "logx": True,
         "series": {"persistent": [r["persistent_txn_per_s"] for r in rows],
                    "one connection per request": [r["short_lived_txn_per_s"] for r in rows]}},
        {"kind": "line", "title": "host CPU per transaction", "xlabel": "concurrent connections",
         "ylabel": "host us/txn", "x": list(xs), "logx": True,
         "series": {"persistent": [r["persistent_host_us_per_txn"] for r in rows],
                    "one connection per request": [r["short_lived_host_us_per_txn"]
                                                   for r in rows]}},
    ]}
    return Result(columns=list(rows[0]), rows=rows, comparison=comparison, note=note,
                  plot=plot, samples=samples,
                  facts={"ratio_min": min(ratios), "ratio_max": max(ratios)},
                  setup=_setup(ctx, "64 B echo, persistent vs one connection per request, "
                                    "over the number of concurrent connections %s"
                                    % (list(xs),)))


def fig1_steps(ctx):
    return 2 * len(_fig1_levels(ctx)) * ctx.repeat


# ---------------------------------------------------------------------- Figure 10
# (label, per_conn, offloads, host optimizations): table3's five configurations, in the
# order Figure 10 draws them; at one core the runs are table3's (same options).
FIG10_CONFIGS = (
    (PERSISTENT[0], 0, (), True),
    ("no offload", 1, (), False),
    ("setup", 1, ("setup",), False),
    ("setup + teardown", 1, ("setup", "teardown"), False),
    (HOST_OPT, 1, ("setup", "teardown"), True),
)


def fig10_cores(ctx):
    """The simulated server cores swept (`acceltcp load --sim --cores N`)."""
    return (1, 2, 4) if ctx.quick else (1, 2, 4, 8)


def fig10(ctx):
    from .simload import points

    xs = fig10_cores(ctx)
    rows, samples = [], []
    kws = [{"per_conn": pc, "offload": o, "host_opts": opts, "cores": n}
           for n in xs for _, pc, o, opts in FIG10_CONFIGS]
    measured = iter(points(ctx, kws))
    tps = {}
    for n in xs:
        for label, _, _, _ in FIG10_CONFIGS:
            fig, runs = next(measured)
            samples += runs
            tps[label, n] = fig["tps"]
            one = tps.get((label, 1))
            rows.append({"configuration": label, "cores": n, "txn_per_s": fig["tps"],
                         "scaling": fig["tps"] / one if one else None,
                         "host_us_per_txn": fig["host_us_per_txn"],
                         "frames_per_txn": fig["frames_per_txn"],
                         "utilization": fig["utilization"], "errors": fig["errors"],
                         "txn_per_s_runs": _spread(fig)})
    best, pers, short = HOST_OPT, PERSISTENT[0], "no offload"
    vs_short = [tps[best, n] / tps[short, n] for n in xs]
    vs_pers = [tps[best, n] / tps[pers, n] for n in xs]
    td_short = [tps["setup + teardown", n] / tps[short, n] for n in xs]
    scaling = {label: tps[label, xs[-1]] / tps[label, 1] for label, *_ in FIG10_CONFIGS}
    span = "%d-%d simulated cores" % (xs[0], xs[-1])

    def rng(v):
        lo, hi = min(v), max(v)
        return "%.2fx" % lo if "%.2f" % lo == "%.2f" % hi else "%.2f-%.2fx" % (lo, hi)

    comparison = [
        {"what": "setup + teardown offload + host optimizations / no offload (short-lived)",
         "paper": "2.2-3.8x vs mTCP (1-8 cores)",
         "ours": "%s (%s; without the host optimizations %s)" % (rng(vs_short), span,
                                                             rng(td_short))},
        {"what": "setup + teardown offload + host optimizations / persistent",
         "paper": "1.13-1.54x for 1-4 cores (lazy TCB creation), 0.78x at 8 cores",
         "ours": "%s (%s)" % (rng(vs_pers), span)},
        {"what": "throughput from 1 to %d cores" % xs[-1],
         "paper": "grows with cores; AccelTCP's 8-core point limited by the NIC "
                  "(22 % below persistent IX)",
         "ours": "%s over the configurations (%d simulated cores behind one "
                 "simulated NIC, RSS; real cores: `acceltcp eval fig10-real`, root)"
                 % (rng(scaling.values()), xs[-1])},
        {"what": HOST_OPT, "paper": "Fig. 10's AccelTCP line includes them",
         "ours": "its own line: " + HOST_OPT_WHAT}]
    ideal = all(abs(v - xs[-1]) < 0.1 * xs[-1] for v in scaling.values())
    opts_gain = [tps[best, n] / tps["setup + teardown", n] for n in xs]
    worst = max(scaling, key=lambda k: abs(scaling[k] - xs[-1]))
    us = {(r["configuration"], r["cores"]): r["host_us_per_txn"] for r in rows}
    why_not = "" if ideal else (
        "; the measured host CPU per transaction moves with the core count -- %s: "
        "%.1f us at one core, %.1f at %d -- where the fixed model (`--cpu fixed`) holds "
        "it constant: the simulated cores' CPU is measured one after the other on one "
        "real core of a shared machine"
        % (worst, us[worst, 1] or 0, us[worst, xs[-1]] or 0, xs[-1]))
    note = ("Every configuration scales %s from 1 to %d simulated cores (%s%s): the cores "
            "share nothing (RSS gives each connection, and the NIC's frames about it, to "
            "one core), %s, and the simulated NIC costs nothing and has no rate limit -- "
            "so the ratios between configurations stay one core's (offloads %s over no "
            "offload) and the paper's 8-core dip, a NIC bottleneck, cannot appear. "
            "Offloaded short-lived connections stay %s persistent ones (%s), where the "
            "paper's lead over persistent needs the per-connection cost to nearly vanish; "
            "%s."
            % ("about linearly" if ideal else
                "sub-linearly" if max(scaling.values()) < 0.9 * xs[-1] else
                "super-linearly" if min(scaling.values()) > 1.1 * xs[-1] else
                "roughly linearly", xs[-1], rng(scaling.values()),
               why_not,
               "the cost model charges each core's own work only" if ctx.cpu == "fixed"
               else "each core's measured CPU is its own", rng(vs_short),
               "below" if max(vs_pers) < 1 else "around" if min(vs_pers) < 1 else "above",
               rng(vs_pers),
               "the fixed cost model prices frames and connections, not what a TCB costs, "
               "so the host optimizations gain nothing under it (%s; `--cpu charged` "
               "measures them)" % rng(opts_gain) if ctx.cpu == "fixed" else
               "the host optimizations add %s" % rng(opts_gain)))
    plot = {"panels": [
        {"kind": "line", "title": "64 B echo transactions over simulated cores",
         "xlabel": "simulated server cores", "ylabel": "transactions/s", "x": list(xs),
         "logx": True,
         "series": {label: [tps[label, n] for n in xs] for label, *_ in FIG10_CONFIGS}},
        {"kind": "line", "title": "ratios", "xlabel": "simulated server cores",
         "ylabel": "x", "x": list(xs), "logx": True,
         "series": {"offloads + host opt. / no offload": vs_short,
                    "offloads + host opt. / persistent": vs_pers}}]}
    return Result(columns=list(rows[0]), rows=rows, comparison=comparison, note=note,
                  plot=plot, samples=samples,
                  facts={"cores": list(xs), "offload_over_short": vs_short,
                         "offload_over_persistent": vs_pers, "scaling": scaling},
                  setup=_setup(ctx, "64 B echo: persistent, short-lived with no offload, "
                                    "setup, setup + teardown (host optimizations off), and "
                                    "setup + teardown with them, over %s (`--cores N`: one "
                                    "stack per core behind one NIC steering by a symmetric "
                                    "Toeplitz RSS hash, testbed/simcores.py)" % span))


def fig10_steps(ctx):
    return len(FIG10_CONFIGS) * len(fig10_cores(ctx)) * ctx.repeat


# ---------------------------------------------------------------------- Figure 11
def _fig11_sizes(ctx):
    return (64, 1024, 4096) if ctx.quick else (64, 128, 256, 512, 1024, 2048, 4096)


def fig11(ctx):
    from .simload import points

    xs = _fig11_sizes(ctx)
    rows, samples = [], []
    measured = points(ctx, [{"per_conn": 1, "size": size, "offload": o} for size in xs
                            for o in ((), ("setup", "teardown"))])
    for i, size in enumerate(xs):
        (base, r1), (acc, r2) = measured[2 * i], measured[2 * i + 1]
        samples += r1 + r2
        rows.append({"size": size, "no_offload_txn_per_s": base["tps"],
                     "offload_txn_per_s": acc["tps"],
                     "no_offload_goodput_mbps": base["tps"] * size * 8 / 1e6,
                     "offload_goodput_mbps": acc["tps"] * size * 8 / 1e6,
                     "speedup": acc["tps"] / base["tps"] if base["tps"] else None,
                     "no_offload_frames_per_txn": base["frames_per_txn"],
                     "offload_frames_per_txn": acc["frames_per_txn"],
                     "no_offload_host_us_per_txn": base["host_us_per_txn"],
                     "offload_host_us_per_txn": acc["host_us_per_txn"],
                     "errors": base["errors"] + acc["errors"]})
    sp = [r["speedup"] for r in rows if r["speedup"]]
    comparison = [{"what": "setup + teardown offload / no offload, one core, %d B-%d B"
                           % (xs[0], xs[-1]),
                   "paper": "2.5-3.6x (64 B-4 KiB; > 1 MSS capped at 20 Gbps by software "
                            "TSO on the NIC)",
                   "ours": "%.2f-%.2fx" % (min(sp), max(sp))}]
    falls = sp[-1] < 0.95 * sp[0]
    note = ("Ours (%.2f-%.2fx) is %s the paper's 2.5-3.6x and %s: the host still sends and "
            "receives every data frame of a message above one MSS (this experiment runs "
            "without the simulated NIC's TSO/LRO, nic/toe.py), work the offloads do not "
            "touch, so the gain %s as messages grow; the paper's large messages are "
            "capped by software TSO on its NIC instead."
            % (min(sp), max(sp), where(min(sp), max(sp), 2.5, 3.6),
               "falls with message size" if falls else "holds over message size",
               "is diluted" if falls else "would be diluted"))
    plot = {"panels": [
        {"kind": "line", "title": "short-lived echo goodput, one host core",
         "xlabel": "message size (B)", "ylabel": "goodput (Mbit/s)", "x": list(xs),
         "logx": True,
         "series": {"no offload": [r["no_offload_goodput_mbps"] for r in rows],
                    "setup + teardown offload": [r["offload_goodput_mbps"] for r in rows]}},
        {"kind": "line", "title": "speedup", "xlabel": "message size (B)", "ylabel": "x",
         "x": list(xs), "logx": True, "series": {"offload / no offload": sp}}]}
    return Result(columns=list(rows[0]), rows=rows, comparison=comparison, note=note,
                  plot=plot, samples=samples,
                  facts={"speedup_min": min(sp), "speedup_max": max(sp)},
                  setup=_setup(ctx, "short-lived echo over message sizes %s, no offload "
                                    "vs setup + teardown offload" % (list(xs),)))


def fig11_steps(ctx):
    return 2 * len(_fig11_sizes(ctx)) * ctx.repeat


# ---------------------------------------------------------------------- Table 1, Figure 14
# The host's CPU by category, measured: `acceltcp load APP --sim --cpu-by-kind` (the
# server stack's runner charges each entry's measured CPU to what the entry was about,
# host/runner.py). Ours -> the paper's categories (Table 1's rows; Fig. 14's "TCP/IP"
# is everything but the application).
KINDS = ("setup", "teardown", "data", "nic", "l2", "timers", "app")
TCP_KINDS = KINDS[:-1]
PAPER_TABLE1 = (
    # (the paper's row, its share %, our categories)
    ("connection setup/teardown", 60.5, ("setup", "teardown")),
    ("message delivery", 29.0, ("data",)),
    ("socket/epoll API calls + application logic", 5.6 + 1.4, ("app",)),
    ("timer handling and context switching", 3.5, ("timers",)),
    ("(NIC reports, L2: not a row of the paper's)", None, ("nic", "l2")),
)
BREAKDOWN_CONFIGS = (("no offload", ()), ("setup + teardown", ("setup", "teardown")))


def _breakdown_run(ctx, app, offload, seed):
    """One ``acceltcp load APP --sim --cpu-by-kind`` run, short-lived (memoized)."""
    from .simload import run_load

    argv = [app, "--per-conn", "1", "-c", "64", "-n", str(transactions_per_run(ctx)),
            "--seed", str(seed), "--server-cpu", ctx.cpu, "--cpu-by-kind"]
    if app == "echo":
        argv += ["--size", "64"]
    if offload:
        argv += ["--nic", "--offload", ",".join(offload)]
    key = tuple(argv)
    if key not in ctx.cache:
        ctx.cache[key] = run_load(argv)
        ctx.advance()
    return ctx.cache[key]


def _breakdown(ctx, app):
    """Per configuration: the categories summed over ``ctx.repeat`` runs (seeds seed,
    seed+1, ...; the runs interleaved) -> [(label, figures, runs)]. Figures: us and
    entries per transaction, shares, by category; txn/s (best run); errors."""
    runs = {label: [] for label, _ in BREAKDOWN_CONFIGS}
    for i in range(ctx.repeat):
        for label, offload in BREAKDOWN_CONFIGS:
            runs[label].append(_breakdown_run(ctx, app, offload, ctx.seed + i))
    out = []
    for label, _ in BREAKDOWN_CONFIGS:
        rs = runs[label]
        txns = sum(r["transactions"] for r in rs)
        ns = {k: sum(r["server"]["cpu_by_kind"]["cpu_ns"][k] for r in rs) for k in KINDS}
        ent = {k: sum(r["server"]["cpu_by_kind"]["entries"][k] for r in rs) for k in KINDS}
        total = sum(ns.values())
        fig = {"us": {k: ns[k] / 1e3 / txns if txns else None for k in KINDS},
               "share": {k: ns[k] / total if total else None for k in KINDS},
               "entries": {k: ent[k] / txns if txns else None for k in KINDS},
               "us_total": total / 1e3 / txns if txns else None,
               "tps": max(r["tps"] for r in rs),
               "frames_per_txn": rs[0]["server"]["frames_per_txn"],
               "errors": sum(r["errors_total"] for r in rs), "transactions": txns}
        fig["us_tcp"] = sum(fig["us"][k] or 0 for k in TCP_KINDS)
        fig["share_tcp"] = sum(fig["share"][k] or 0 for k in TCP_KINDS)
        out.append((label, fig, rs))
    return out


def _pct(x):
    return "-" if x is None else "%.1f %%" % (100 * x)


def _breakdown_setup(ctx, what):
    return ("`acceltcp load %s --sim --per-conn 1 -c 64 --cpu-by-kind --server-cpu %s`, "
            "%s transactions per run, %d run(s) per configuration summed, without a NIC "
            "and behind the simulated NIC with setup + teardown offload. The server "
            "stack's runner measures each entry's CPU (`time.process_time`) and charges it "
            "to what the frame was about before it ran (`HostStack.entry_kind`): setup "
            "(SYN, the handshake's ACK -- the request rides on it --, a 0x090A), teardown "
            "(FIN, RST, a closing TCB's segments, TIME-WAIT, the NIC's teardown reports), "
            "data (other segments), nic and l2; timer entries to timers; the application's "
            "callbacks to app, except the socket calls made from them, whose TCP work goes "
            "to data (send, recv) and teardown (close, and the teardown offer with "
            "offload). Packet I/O of the device is outside the accounting: the simulated "
            "link and NIC cost the host nothing. %s The categories are measured whatever "
            "the core model (%s)."
            % (what, ctx.cpu, format(transactions_per_run(ctx), ","), ctx.repeat,
               "The server is " + ("the echo server, closing after its 64 B reply."
                                   if what == "echo" else
                                   "kv (apps/kv, Redis's protocol) under the USR load "
                                   "(99.8 % GET, 16 B keys, 2 B values), one request per "
                                   "connection, as the paper's Figure 14."),
               _cpu_words(ctx)))


def table1(ctx):
    measured = _breakdown(ctx, "echo")
    samples = [r for _, _, rs in measured for r in rs]
    (_, base, _), (_, off, _) = measured
    def tot(fig, field, ours, scale=1):
        vals = [fig[field][k] for k in ours]
        return None if any(v is None for v in vals) else scale * sum(vals)

    def row(paper_row, paper_share, ours):
        # shares in percent, as the paper's; app is no entry kind (its time is inside
        # the entries of the others): no entries of its own
        entries = "app" not in ours
        return {"paper_category": paper_row, "ours": " + ".join(ours),
                "paper_share_pct": paper_share,
                "no_offload_share_pct": tot(base, "share", ours, 100),
                "no_offload_us_per_txn": tot(base, "us", ours),
                "no_offload_entries_per_txn": tot(base, "entries", ours) if entries else None,
                "offload_share_pct": tot(off, "share", ours, 100),
                "offload_us_per_txn": tot(off, "us", ours),
                "offload_entries_per_txn": tot(off, "entries", ours) if entries else None}

    rows = [row(*r) for r in PAPER_TABLE1]
    rows += [row("", None, (k,)) for k in KINDS]     # each category on its own too
    st = rows[0]
    comparison = [{"what": "%s, share of host CPU (no offload)" % r["paper_category"],
                   "paper": "%.1f %%" % r["paper_share_pct"],
                   "ours": "%.1f %% (%s: %.2f us/txn)" % (r["no_offload_share_pct"] or 0,
                                                          r["ours"],
                                                          r["no_offload_us_per_txn"] or 0)}
                  for r in rows[:4]]
    cut = 1 - st["offload_us_per_txn"] / st["no_offload_us_per_txn"] \
        if st["no_offload_us_per_txn"] else None
    comparison.append({
        "what": "setup + teardown with their offload (the host's part)",
        "paper": "AccelTCP's aim: the NIC takes most of the 60.5 %",
        "ours": "%.2f -> %.2f us/txn (-%s), %.2f -> %.2f entries/txn; share %.1f %% -> "
                "%.1f %%" % (st["no_offload_us_per_txn"], st["offload_us_per_txn"], _pct(cut),
                             st["no_offload_entries_per_txn"], st["offload_entries_per_txn"],
                             st["no_offload_share_pct"] or 0, st["offload_share_pct"] or 0)})
    sd = base["share"]["setup"] + base["share"]["teardown"]
    note = ("Connection setup + teardown take %s of this stack's CPU on a short-lived 64 B "
            "echo (the paper's 60.5 %% on mTCP), %s; message delivery is %s here against "
            "29.0 %%, because the request rides on the handshake's ACK (that entry counts "
            "as setup) and the reply and the close are sent from the application's "
            "callback (their TCP work counted as data and teardown by the socket call), "
            "and the paper's packet I/O and L2-L3 work -- 19.3 %% of its split -- is "
            "either outside our accounting (the simulated device) or inside the kind of "
            "the frame. With setup + teardown offloaded the host's setup + teardown work "
            "falls %s, not to zero: the host still builds a TCB for each 0x090A and "
            "hands each close to the NIC (a Teardown frame, the NIC's report back)."
            % (_pct(sd), "the larger share" if sd > 0.605 else "the smaller share"
               if sd < 0.5 else "about the same", _pct(base["share"]["data"]), _pct(cut)))
    labels = [r["paper_category"].split(" (")[0] if r["paper_category"] else r["ours"]
              for r in rows[:4]]
    plot = {"panels": [
        {"kind": "bar", "title": "short-lived 64 B echo: share of host CPU",
         "xlabel": "category", "ylabel": "% of host CPU", "x": labels,
         "series": {"paper (mTCP)": [r["paper_share_pct"] for r in rows[:4]],
                    "ours, no offload": [r["no_offload_share_pct"] for r in rows[:4]],
                    "ours, setup + teardown offload": [r["offload_share_pct"]
                                                       for r in rows[:4]]}},
        {"kind": "bar", "title": "host CPU per transaction by category",
         "xlabel": "category", "ylabel": "us/txn", "x": list(KINDS),
         "series": {"no offload": [base["us"][k] for k in KINDS],
                    "setup + teardown offload": [off["us"][k] for k in KINDS]}},
        {"kind": "bar", "title": "host entries per transaction by kind",
         "xlabel": "kind", "ylabel": "entries/txn", "x": list(TCP_KINDS),
         "series": {"no offload": [base["entries"][k] for k in TCP_KINDS],
                    "setup + teardown offload": [off["entries"][k] for k in TCP_KINDS]}},
    ]}
    facts = {"setup_teardown_share": sd, "setup_teardown_us_cut": cut,
             "errors": base["errors"] + off["errors"],
             "entries_per_txn": {"no offload": base["entries"],
                                 "setup + teardown": off["entries"]},
             "us_per_txn": {"no offload": base["us"], "setup + teardown": off["us"]},
             "share": {"no offload": base["share"], "setup + teardown": off["share"]}}
    return Result(columns=list(rows[0]), rows=rows, comparison=comparison, note=note,
                  plot=plot, samples=samples, facts=facts,
                  setup=_breakdown_setup(ctx, "echo"))


def fig14(ctx):
    measured = _breakdown(ctx, "kv")
    samples = [r for _, _, rs in measured for r in rs]
    rows = []
    for label, fig, _ in measured:
        row = {"configuration": label, "txn_per_s": fig["tps"],
               "host_us_per_txn": fig["us_total"], "tcp_us_per_txn": fig["us_tcp"],
               "app_us_per_txn": fig["us"]["app"], "tcp_share": fig["share_tcp"],
               "app_share": fig["share"]["app"], "frames_per_txn": fig["frames_per_txn"],
               "errors": fig["errors"]}
        for k in KINDS:
            row[k + "_us_per_txn"] = fig["us"][k]
        for k in TCP_KINDS:
            row[k + "_entries_per_txn"] = fig["entries"][k]
        rows.append(row)
    base, off = rows
    saved = 1 - off["tcp_us_per_txn"] / base["tcp_us_per_txn"] \
        if base["tcp_us_per_txn"] else None
    comparison = [
        {"what": "TCP cycles saved per transaction by setup + teardown offload",
         "paper": "up to 75 %",
         "ours": "%s (%.2f -> %.2f us/txn of the stack's categories)"
                 % (_pct(saved), base["tcp_us_per_txn"], off["tcp_us_per_txn"])},
        {"what": "TCP/IP share of the host CPU without offload",
         "paper": "over half (mTCP)", "ours": _pct(base["tcp_share"])},
        {"what": "the application's share with the offload",
         "paper": "Redis's session init/destroy then limits the performance",
         "ours": "%s (%.2f us/txn; %s without)" % (_pct(off["app_share"]),
                                                   off["app_us_per_txn"],
                                                   _pct(base["app_share"]))},
        {"what": "transactions/s, one host core",
         "paper": "0.19-0.28 Mtps mTCP, 0.44 Mtps AccelTCP (Table 4)",
         "ours": "%s -> %s txn/s (%s)" % (_fmt(base["txn_per_s"]), _fmt(off["txn_per_s"]),
                                          _cpu_words(ctx))}]
    by_client = measured[0][2][0]["server"]["app_stats"].get("closed_by_client", 0)
    closer = ("the client closes first, so its FIN still reaches the host, whose close "
              "is then an offer to the NIC" if by_client else
              "the host's close is an offer to the NIC")
    ent = [(r["setup_entries_per_txn"] or 0) + (r["teardown_entries_per_txn"] or 0)
           for r in rows]
    note = ("The offload saves %s of the stack's cycles per kv transaction here (the "
            "paper: up to 75 %%): the host's setup + teardown entries per transaction "
            "fall %.2f -> %.2f, their CPU much less -- setup %.1f -> %.1f us (a TCB is "
            "still built for each 0x090A), teardown %.1f -> %.1f us (%s) --: in this "
            "Python stack the per-connection work, not the frames, is the cost, where "
            "mTCP's per-frame work is what the NIC took. The application (apps/kv: "
            "parsing, the reply, the session) takes %s of the CPU with the offload, %s "
            "without."
            % (_pct(saved), ent[0], ent[1], base["setup_us_per_txn"] or 0,
               off["setup_us_per_txn"] or 0, base["teardown_us_per_txn"] or 0,
               off["teardown_us_per_txn"] or 0, closer, _pct(off["app_share"]),
               _pct(base["app_share"])))
    x = [r["configuration"] for r in rows]
    plot = {"panels": [
        {"kind": "bar", "title": "kv (USR, short-lived): host CPU per transaction",
         "xlabel": "configuration", "ylabel": "us/txn", "x": x,
         "series": {"TCP/IP (the stack)": [r["tcp_us_per_txn"] for r in rows],
                    "application": [r["app_us_per_txn"] for r in rows]}},
        {"kind": "bar", "title": "the stack's cycles by category", "xlabel": "category",
         "ylabel": "us/txn", "x": list(TCP_KINDS),
         "series": {label: [r[k + "_us_per_txn"] for k in TCP_KINDS]
                    for label, r in zip(x, rows)}},
        {"kind": "bar", "title": "TCP cycles saved", "xlabel": "", "ylabel": "%",
         "x": ["TCP cycles saved"],
         "series": {"paper (up to)": [75.0], "ours": [100 * (saved or 0)]}},
    ]}
    return Result(columns=list(rows[0]), rows=rows, comparison=comparison, note=note,
                  plot=plot, samples=samples,
                  facts={"tcp_cycles_saved": saved, "tcp_share": base["tcp_share"],
                         "errors": base["errors"] + off["errors"]},
                  setup=_breakdown_setup(ctx, "kv"))


def breakdown_steps(ctx):
    """Progress steps of `table1` and `fig14`: two configurations x ctx.repeat runs."""
    return len(BREAKDOWN_CONFIGS) * ctx.repeat
