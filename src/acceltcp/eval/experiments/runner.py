"""Runs experiments and writes their files and the report (see the package docstring).

Per experiment: ``<name>.json`` -- {name, title, paper, status, reason?, setup, columns,
rows, comparison, note, plot, facts, samples, wall_s, machine, options}; ``<name>.csv``
(columns x rows; only when there are rows); ``<name>.png`` (only when there is a plot
and matplotlib is importable -- otherwise ``plot_error`` says why). ``report.md`` lists
every experiment run, those of earlier runs whose JSON is in the directory (kept as
they are, marked with their date and options: running some experiments again does not
drop the others from the report), and the real-network ones that were not asked for.
"""

import csv
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

from .base import Unavailable

__all__ = ["run_experiments", "machine_info", "write_report", "earlier_docs"]


def machine_info():
    """Where and with what the experiments ran."""
    try:
        from importlib.metadata import version
        ours = version("acceltcp")
    except Exception:                   # not installed: running from a checkout
        ours = None
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    commit = None
    repo = Path(__file__).resolve().parents[4]
    if (repo / ".git").exists():
        try:
            commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"],
                                    capture_output=True, text=True, timeout=5).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain",
                                    "--untracked-files=no"], capture_output=True, text=True,
                                   timeout=5).stdout.strip()
            commit = (commit + ("-dirty" if dirty else "")) or None
        except (OSError, subprocess.SubprocessError):
            commit = None
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"acceltcp": ours, "commit": commit, "python": sys.version.split()[0],
            "platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
            "loadavg": load, "root": os.geteuid() == 0,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _plot(path, spec):
    """Draw `spec` (base.Result.plot) into `path`; -> None or why it was not drawn."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return "matplotlib missing (%s): pip install matplotlib" % e
    panels = spec["panels"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    for ax, p in zip(axes[0], panels):
        xs = p["x"]
        series = p["series"]
        if p["kind"] == "bar":
            n = max(len(series), 1)
            w = 0.8 / n
            for i, (label, ys) in enumerate(series.items()):
                pos = [j + (i - (n - 1) / 2) * w for j in range(len(xs))]
                ax.bar(pos, [0 if y is None else y for y in ys], w, label=label)
            ax.set_xticks(range(len(xs)))
            ax.set_xticklabels([str(x) for x in xs], rotation=20, ha="right", fontsize=8)
        else:
            for label, ys in series.items():
                ax.plot(xs, ys, marker="o", label=label)
            if all(y is None or y >= 0 for ys in series.values() for y in ys):
                ax.set_ylim(bottom=0)
            if p.get("logx"):
                ax.set_xscale("log", base=2)
                ax.set_xticks(xs)
                ax.set_xticklabels([str(x) for x in xs])
        ax.set_title(p.get("title", ""), fontsize=10)
        ax.set_xlabel(p.get("xlabel", ""))
        ax.set_ylabel(p.get("ylabel", ""))
        ax.grid(True, alpha=0.3)
        if len(series) > 1 or p["kind"] == "line":
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def _csv(path, columns, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})


def _run_one(exp, ctx, machine, options):
    doc = {"name": exp.name, "title": exp.title, "paper": exp.paper,
           "real_network": exp.real_network}
    t0 = time.perf_counter()
    try:
        res = exp.run(ctx)
    except Unavailable as e:
        doc.update(status=e.status, reason=e.reason)
        res = None
    except Exception as e:              # an experiment's failure is reported, not raised
        doc.update(status="failed", reason="%s: %s" % (type(e).__name__, e),
                   traceback=traceback.format_exc())
        res = None
    doc["wall_s"] = time.perf_counter() - t0
    if res is not None:
        doc.update(status="ok", setup=res.setup, columns=res.columns, rows=res.rows,
                   comparison=res.comparison, note=res.note, plot=res.plot,
                   facts=res.facts, samples=res.samples)
        if res.rows:
            _csv(ctx.out / (exp.name + ".csv"), res.columns, res.rows)
        if res.plot:
            try:
                why = _plot(ctx.out / (exp.name + ".png"), res.plot)
            except Exception as e:      # a plot that fails leaves the data written
                why = "%s: %s" % (type(e).__name__, e)
            if why:
                doc["plot_error"] = why
    doc["machine"] = machine
    doc["options"] = options
    with open(ctx.out / (exp.name + ".json"), "w") as f:
        json.dump(doc, f, indent=1, default=str)
        f.write("\n")
    return doc


def earlier_docs(out, names):
    """The ``<name>.json`` an earlier run wrote into `out`, for each of `names` that has
    one (unreadable or foreign files are left out) -> [doc, ...] in the order of
    `names`."""
    docs = []
    for name in names:
        try:
            d = json.loads((Path(out) / (name + ".json")).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(d, dict) and d.get("name") == name and "status" in d:
            docs.append(d)
    return docs


def run_experiments(experiments, ctx, *, progress=None, not_run=(), earlier=(), order=()):
    """Run each experiment in turn; write its files and then ``report.md``. `progress`:
    a rich Progress (one task per experiment) or None. `not_run`: experiments to list in
    the report as not asked for. `earlier`: docs of earlier runs (`earlier_docs`) to keep
    in the report; `order`: experiment names in the report's order (others after, as
    run). -> [json doc, ...] of this run."""
    ctx.out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    options = {"quick": ctx.quick, "cpu": ctx.cpu, "nic": ctx.nic, "seed": ctx.seed,
               "repeat": ctx.repeat}
    docs = []
    t0 = time.perf_counter()
    for exp in experiments:
        if progress is not None:
            task = progress.add_task(exp.name, total=max(exp.steps(ctx), 1))
            ctx.advance = lambda t=task: progress.advance(t)
        else:
            ctx.advance = lambda: None
        docs.append(_run_one(exp, ctx, machine, options))
        if progress is not None:
            progress.update(task, completed=max(exp.steps(ctx), 1))
    ran = {d["name"] for d in docs}
    kept = [d for d in earlier if d["name"] not in ran]
    write_report(ctx.out / "report.md", docs, machine, options,
                 time.perf_counter() - t0,
                 [e for e in not_run if e.name not in {d["name"] for d in kept}],
                 earlier=kept, order=order)
    return docs


def _cell(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, ",.2f") if abs(v) < 1000 else format(v, ",.0f")
    return str(v).replace("|", "\\|")


def _run_line(name, options):
    """The command that runs experiment `name` again with `options`."""
    return "`acceltcp eval %s%s%s%s`" % (
        name, " --quick" if options.get("quick") else "",
        "" if options.get("cpu", "charged") == "charged" else " --cpu " + options["cpu"],
        "" if options.get("nic", "python") == "python" else " --nic " + options["nic"])


def write_report(path, docs, machine, options, wall_s, not_run=(), earlier=(), order=()):
    """``report.md``: per experiment its status, setup, the paper beside ours, the
    sentence on the difference, the plot and the table. `earlier`: docs of earlier runs
    shown too, each with its date and options; `order`: names in the report's order."""
    kept = {id(d) for d in earlier}
    docs = list(docs) + list(earlier)
    if order:
        rank = {n: i for i, n in enumerate(order)}
        docs.sort(key=lambda d: rank.get(d["name"], len(rank)))
    if earlier and len(docs) == len(earlier):     # nothing run: the report rewritten
        L = ["# acceltcp eval: the paper's evaluation, reproduced", "",
             "Rewritten by `acceltcp eval --report-only` from the JSON files in this "
             "directory, %s: each experiment is marked with the date, commit and options "
             "of its run." % machine["date"], ""]
    else:
        L = _header(docs, kept, earlier, machine, options, wall_s)
    L += ["| experiment | status | paper |", "|---|---|---|"]
    _body(L, docs, kept, not_run)
    Path(path).write_text("\n".join(L) + "\n")


def _header(docs, kept, earlier, machine, options, wall_s):
    # the command as it could be typed again: nothing for the default (simulator) set,
    # "all" for every experiment, else the names it ran
    from . import EXPERIMENTS                   # the registry imports this module
    ran = [d["name"] for d in docs if id(d) not in kept]
    if not earlier and set(ran) == set(EXPERIMENTS):
        named = " all"
    elif not earlier and set(ran) == {e.name for e in EXPERIMENTS.values()
                                      if not e.real_network}:
        named = ""
    else:
        named = "".join(" " + n for n in ran)
    L = ["# acceltcp eval: the paper's evaluation, reproduced", "",
         "Generated by `acceltcp eval%s%s%s` in %.0f s on %s (%s CPUs, %s), acceltcp %s%s, "
         "Python %s, %s. Simulated server core: `--server-cpu %s`%s." % (
             named, " --quick" if options["quick"] else "",
             " --nic " + options["nic"] if options.get("nic", "python") != "python" else "",
             wall_s, machine["cpu"] or "?",
             machine["cpus"], machine["platform"], machine["acceltcp"],
             " (%s)" % machine["commit"][:12] if machine["commit"] else "",
             machine["python"], machine["date"], options["cpu"],
             " (measured CPU: absolute rates depend on this machine and its load)"
             if options["cpu"] == "charged" else
             " (a fixed cost model: the runs are deterministic)"), ""]
    if earlier:
        L += ["This run: %s. Kept from earlier runs in this directory, each marked with "
              "its date, commit and options: %s." % (
                  ", ".join(d["name"] for d in docs if id(d) not in kept) or "none",
                  ", ".join(d["name"] for d in docs if id(d) in kept)), ""]
    return L


def _body(L, docs, kept, not_run):
    for d in docs:                      # the reason in full below, its first clause here
        why = (d.get("reason") or "").split(" -- ")[0]
        L.append("| [%s](#%s) | %s | %s |" % (d["name"], d["name"], _cell(d["status"] + (
            ": " + why if why else "")), _cell(d["paper"])))
    for e in not_run:
        L.append("| %s | not run: real network, needs root -- `acceltcp eval %s` | %s |"
                 % (e.name, e.name, _cell(e.paper)))
    for d in docs:
        L += ["", '<a id="%s"></a>' % d["name"], "## %s -- %s" % (d["name"], d["title"]), ""]
        if id(d) in kept:
            m = d.get("machine") or {}
            L += ["*From an earlier run: %s, %s%s, %.0f s.*" % (
                m.get("date", "?"), _run_line(d["name"], d.get("options") or {}),
                " at %s" % m["commit"][:12] if m.get("commit") else "",
                d.get("wall_s") or 0), ""]
        if d["status"] != "ok":
            L.append("**%s**: %s" % (d["status"], d.get("reason", "")))
            continue
        if d.get("setup"):
            L += ["Setup: " + d["setup"], ""]
        L += ["| | paper | ours |", "|---|---|---|"]
        for c in d["comparison"]:
            L.append("| %s | %s | %s |" % (_cell(c["what"]), _cell(c["paper"]),
                                           _cell(c["ours"])))
        L += ["", d["note"], ""]
        if d.get("plot"):
            L.append("![%s](%s.png)" % (d["name"], d["name"]) if not d.get("plot_error")
                     else "(plot not drawn: %s)" % d["plot_error"])
            L.append("")
        if d["rows"]:
            cols = d["columns"]
            L += ["<details><summary>table (%s.csv)</summary>" % d["name"], "",
                  "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            for r in d["rows"]:
                L.append("| " + " | ".join(_cell(r.get(c)) for c in cols) + " |")
            L += ["", "</details>"]
