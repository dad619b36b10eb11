"""`acceltcp eval --quick`: the files each experiment writes, the series each plot shows
(read from the JSON, where the runner keeps what it plotted), and what the data must
say because of the mechanism -- frames per transaction fall with each offload, the host
spends less per transaction with setup + teardown offloaded, spliced frames never reach
the host -- never a speed. The simulated server core uses the fixed cost model
(``--cpu fixed``): a run is a pure function of the seed and the options, so nothing
here depends on how fast or loaded this machine is. The real-network experiments are
never run here (they create namespaces); the runner's handling of failures and missing
prerequisites is checked with stand-in experiments."""

import csv
import json

import pytest

from acceltcp.cli import main
from acceltcp.eval.experiments import EXPERIMENTS, select
from acceltcp.eval.experiments.base import Context, Experiment, Result, Unavailable
from acceltcp.eval.experiments.runner import run_experiments
from acceltcp.nic.splice import BYTES_PER_RULE
from acceltcp.nic.teardown import FLOW_ENTRY_BYTES

SIM = [e.name for e in EXPERIMENTS.values() if not e.real_network]
REAL = [e.name for e in EXPERIMENTS.values() if e.real_network]
PLOTTED = ("table3", "fig1", "fig10", "fig11", "nic", "table1", "fig14")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    rc = main(["eval", "--quick", "--cpu", "fixed", "--out", str(out), "--no-progress"])
    docs = {n: json.loads((out / (n + ".json")).read_text()) for n in SIM}
    return rc, out, docs


def series(doc, panel):
    p = doc["plot"]["panels"][panel]
    return p["x"], p["series"]


def test_files_and_report(run):
    rc, out, docs = run
    assert rc == 0
    assert set(docs) == set(SIM) and "table3" in SIM and not set(REAL) & set(SIM)
    report = (out / "report.md").read_text()
    for name, d in docs.items():
        assert d["name"] == name and d["machine"]["cpus"] and d["options"]["cpu"] == "fixed"
        assert "## %s" % name in report
        if name in PLOTTED:
            assert d["status"] == "ok", d.get("reason")
            assert (out / (name + ".png")).stat().st_size > 1000
            assert "![%s](%s.png)" % (name, name) in report
            with open(out / (name + ".csv")) as f:
                rows = list(csv.DictReader(f))
            assert len(rows) == len(d["rows"]) and list(rows[0]) == d["columns"]
            assert d["comparison"] and d["note"] and d["samples"]
    # the real-network experiments are listed as not run, with how to run them
    for name in REAL:
        assert "`acceltcp eval %s`" % name in report


def test_plotted_series(run):
    _, _, docs = run
    x, s = series(docs["table3"], 0)
    assert x == ["no offload", "setup", "setup + teardown",
                 "setup + teardown + host optimizations"] and list(s) == ["ours (txn/s)"]
    x, s = series(docs["table3"], 1)
    assert set(s) == {"ours", "paper"} and s["paper"] == [1.0, 1.4, 2.3, 3.8]
    x, s = series(docs["fig1"], 0)
    assert set(s) == {"persistent", "one connection per request"}
    assert x == [r["concurrency"] for r in docs["fig1"]["rows"]] and len(x) >= 2
    x, s = series(docs["fig11"], 0)
    assert set(s) == {"no offload", "setup + teardown offload"}
    assert x[0] == 64 and x[-1] == 4096
    x, s = series(docs["fig10"], 0)
    assert x == [1, 2, 4]                           # simulated cores (--quick)
    assert list(s) == ["persistent", "no offload", "setup", "setup + teardown",
                       "setup + teardown + host optimizations"]
    x, s = series(docs["fig10"], 1)
    assert x == [1, 2, 4] and len(s) == 2
    for d in docs.values():
        for p in (d.get("plot") or {"panels": []})["panels"]:
            assert all(len(ys) == len(p["x"]) for ys in p["series"].values())


def test_table3_offloads_cut_frames_and_host_cpu(run):
    _, _, docs = run
    rows = {r["configuration"]: r for r in docs["table3"]["rows"]}
    ladder = [rows[k] for k in ("no offload", "setup", "setup + teardown")]
    assert all(r["errors"] == 0 for r in ladder)
    frames = [r["frames_per_txn"] for r in ladder]
    assert frames[0] > frames[1] > frames[2]
    # the paper's six frames of a short-lived transaction; the NIC answers SYN and ACK
    assert 5.5 < frames[0] < 6.5 and 3.5 < frames[1] < 4.5
    us = [r["host_us_per_txn"] for r in ladder]
    assert us[0] > us[1] > us[2]
    assert ladder[2]["txn_per_s"] > ladder[0]["txn_per_s"]
    assert rows["persistent (reference)"]["frames_per_txn"] < frames[0]
    # the host optimizations (lazy TCB creation, zero-copy) change CPU, not frames
    host_opt = rows["setup + teardown + host optimizations"]
    assert host_opt["errors"] == 0 and host_opt["status"].startswith("measured")
    assert host_opt["frames_per_txn"] == ladder[2]["frames_per_txn"]


def test_fig1_and_fig11_follow_the_mechanism(run):
    _, _, docs = run
    for r in docs["fig1"]["rows"]:
        assert r["errors"] == 0
        assert r["persistent_frames_per_txn"] < r["short_lived_frames_per_txn"]
        assert r["persistent_host_us_per_txn"] < r["short_lived_host_us_per_txn"]
        assert r["persistent_txn_per_s"] > r["short_lived_txn_per_s"]
    for r in docs["fig11"]["rows"]:
        assert r["errors"] == 0
        assert r["offload_frames_per_txn"] < r["no_offload_frames_per_txn"]
        assert r["offload_host_us_per_txn"] < r["no_offload_host_us_per_txn"]
        assert r["offload_goodput_mbps"] > r["no_offload_goodput_mbps"]
    # fig10's one-core points reuse table3's runs (same options): the same figures
    t3 = {r["configuration"]: r["txn_per_s"] for r in docs["table3"]["rows"]}
    t3["persistent"] = t3["persistent (reference)"]
    ones = [r for r in docs["fig10"]["rows"] if r["cores"] == 1]
    assert len(ones) == 5
    for r in ones:
        assert r["txn_per_s"] == t3[r["configuration"]]


def test_fig10_over_simulated_cores(run):
    """A row per configuration and core count; with the fixed model a saturated core's
    work is the model's, so more cores give more transactions per second, and the
    frames per transaction -- what the offloads change -- stay each configuration's."""
    _, _, docs = run
    d = docs["fig10"]
    rows = d["rows"]
    assert sorted({r["cores"] for r in rows}) == [1, 2, 4]
    by = {(r["configuration"], r["cores"]): r for r in rows}
    labels = {r["configuration"] for r in rows}
    assert len(rows) == len(labels) * 3 == 15
    for label in labels:
        one, two, four = (by[label, n] for n in (1, 2, 4))
        assert one["errors"] == two["errors"] == four["errors"] == 0
        assert four["txn_per_s"] > two["txn_per_s"] > one["txn_per_s"]
        assert two["scaling"] == pytest.approx(two["txn_per_s"] / one["txn_per_s"])
        assert two["frames_per_txn"] == pytest.approx(one["frames_per_txn"], rel=0.05)
    for n in (1, 2, 4):
        assert by["setup + teardown", n]["frames_per_txn"] < \
            by["no offload", n]["frames_per_txn"]
    assert not any(c["ours"].startswith("not built") for c in d["comparison"])
    assert "one server core" not in d["note"] and "1-4 simulated cores" in str(d["comparison"])
    assert any(s["server"]["cores"] == 4 for s in d["samples"])


def test_nic_state_and_splice_keeps_frames_off_the_host(run):
    _, _, docs = run
    f = docs["nic"]["facts"]
    assert f["teardown_flow_bytes"] == FLOW_ENTRY_BYTES
    assert f["splice_rule_bytes"] == BYTES_PER_RULE
    for sp in (f["splice64"], f["splice1460"]):
        assert sp["to_host"] == 0 and sp["to_wire"] == sp["sent"]
        assert sp["spliced"] > 0
    st = f["setup"]
    assert st["syn_cookies_sent"] == st["cookie_ack_ok"] == st["frames"]


def test_runner_records_failures_and_goes_on(tmp_path):
    def ok(ctx):
        ctx.advance()
        return Result(columns=["a"], rows=[{"a": 1}], comparison=[
            {"what": "w", "paper": "p", "ours": "o"}], note="n.",
            plot={"panels": [{"kind": "line", "x": [1, 2], "series": {"s": [1, 2]}}]})

    def boom(ctx):
        raise RuntimeError("broken on purpose")

    def missing(ctx):
        raise Unavailable("skipped", "needs the tool frob")

    exps = [Experiment("x1", "X1", "-", boom), Experiment("x2", "X2", "-", missing),
            Experiment("x3", "X3", "-", ok)]
    docs = run_experiments(exps, Context(out=tmp_path, cpu="fixed"))
    assert [d["status"] for d in docs] == ["failed", "skipped", "ok"]
    assert "broken on purpose" in docs[0]["reason"] and docs[1]["reason"] == "needs the tool frob"
    assert (tmp_path / "x3.png").exists() and (tmp_path / "x3.csv").exists()
    report = (tmp_path / "report.md").read_text()
    assert "broken on purpose" in report and "needs the tool frob" in report
    assert json.loads((tmp_path / "x1.json").read_text())["status"] == "failed"


def test_selection_and_bad_names(tmp_path, capsys):
    assert [e.name for e in select([])] == SIM
    assert [e.name for e in select(["fig1", "table3", "fig1"])] == ["fig1", "table3"]
    assert main(["eval", "nosuch", "--out", str(tmp_path)]) == 2
    assert "unknown experiment" in capsys.readouterr().err
    assert not any(e.real_network for e in select([]))
    every = [e.name for e in select(["all"])]
    assert sorted(every) == sorted(EXPERIMENTS) and every[:len(SIM)] == SIM
    assert all(e.real_network for e in select(["all"])[len(SIM):])


def test_report_keeps_earlier_runs(tmp_path):
    """Running some experiments into a directory keeps the others' results in the
    report, marked as earlier runs; --report-only rewrites it from the JSON alone;
    --fresh-report shows this run only."""
    def ok(ctx):
        return Result(columns=["a"], rows=[{"a": 1}], comparison=[
            {"what": "w", "paper": "p", "ours": "o"}], note="from the stand-in.")

    def missing(ctx):
        raise Unavailable("skipped", "needs the tool frob")

    run_experiments([Experiment("table3", "T3", "-", ok)], Context(out=tmp_path, cpu="fixed"))
    (tmp_path / "fig1.json").write_text("not json")          # unreadable: left out
    assert main(["eval", "nic", "--cpu", "fixed", "--quick", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "## nic" in report and "## table3" in report and "## fig1 " not in report
    assert report.index("## table3") < report.index("## nic")       # the registry's order
    assert report.count("*From an earlier run") == 1 and "from the stand-in." in report
    assert "This run: nic. Kept from earlier runs in this directory" in report
    (tmp_path / "report.md").unlink()
    assert main(["eval", "--report-only", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert report.count("*From an earlier run") == 2 and "## nic" in report
    assert "Rewritten by `acceltcp eval --report-only`" in report
    assert "`acceltcp eval table5`" in report            # real-network, not in the directory
    assert not (tmp_path / "table1.json").exists()                  # nothing ran
    docs = run_experiments([Experiment("table1", "T1", "-", missing)],
                           Context(out=tmp_path, cpu="fixed"))
    assert docs[0]["status"] == "skipped"
    assert "## table3" not in (tmp_path / "report.md").read_text()   # no earlier= given
    assert main(["eval", "nic", "--cpu", "fixed", "--quick", "--fresh-report", "--out",
                 str(tmp_path), "--no-progress"]) == 0
    assert "## table3" not in (tmp_path / "report.md").read_text()


def test_report_header_names_the_command_that_ran():
    """The header's command runs the same set again: `all`, the default set, or names."""
    from acceltcp.eval.experiments.runner import _header
    machine = {"cpu": "cpu", "cpus": 2, "platform": "p", "acceltcp": "0", "commit": "",
               "python": "3", "date": "d"}

    def command(names):
        line = _header([{"name": n} for n in names], set(), (), machine,
                       {"quick": False, "nic": "both", "cpu": "charged"}, 1.0)[2]
        return line.split("`")[1]

    assert command(list(EXPERIMENTS)) == "acceltcp eval all --nic both"
    assert command(SIM) == "acceltcp eval --nic both"
    assert command(["nic", "table2"]) == "acceltcp eval nic table2 --nic both"


def test_interrupt_ends_the_eval_not_just_one_run():
    """The load's own SIGINT handler ends its run; `run_load` turns that into
    KeyboardInterrupt, so Ctrl-C stops `acceltcp eval`, not only the current point."""
    import os
    import signal
    import threading

    from acceltcp.eval.experiments.simload import run_load

    run_load(["echo", "-n", "10", "--server-cpu", "fixed"])     # imports done
    t = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    t.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_load(["echo", "-n", "10000000", "--server-cpu", "fixed"])
    finally:
        t.cancel()


KINDS = ["setup", "teardown", "data", "nic", "l2", "timers", "app"]


def test_table1_cpu_by_category(run):
    """Table 1: the measured categories, beside the paper's rows. What is deterministic
    is asserted -- the entries of each kind per transaction (the fixed model makes the
    run a function of the seed): the NIC takes the SYN and the handshake (one setup
    entry, the 0x090A, instead of two) and the close; the shares add up to one."""
    _, _, docs = run
    d = docs["table1"]
    f = d["facts"]
    assert f["errors"] == 0
    e0, e1 = f["entries_per_txn"]["no offload"], f["entries_per_txn"]["setup + teardown"]
    assert 1.95 < e0["setup"] < 2.1 and 0.95 < e1["setup"] < 1.1
    assert e1["teardown"] < e0["teardown"] and e0["nic"] == 0 < e1["nic"]
    assert e1["setup"] + e1["teardown"] < e0["setup"] + e0["teardown"]
    for cfg in ("no offload", "setup + teardown"):
        assert sum(f["share"][cfg].values()) == pytest.approx(1.0)
        assert f["us_per_txn"][cfg]["setup"] > 0 and f["us_per_txn"][cfg]["app"] > 0
    rows = d["rows"]
    assert [r["paper_share_pct"] for r in rows[:4]] == [60.5, 29.0, 7.0, 3.5]
    assert [r["ours"] for r in rows[-7:]] == KINDS
    assert rows[0]["no_offload_entries_per_txn"] == pytest.approx(e0["setup"] + e0["teardown"])
    for cfg in ("no_offload", "offload"):
        assert sum(r[cfg + "_share_pct"] for r in rows[-7:]) == pytest.approx(100.0)
        assert sum(r[cfg + "_share_pct"] for r in rows[:5]) == pytest.approx(100.0)
    x, s = series(d, 0)
    assert len(x) == 4 and list(s) == ["paper (mTCP)", "ours, no offload",
                                       "ours, setup + teardown offload"]
    assert s["paper (mTCP)"] == [60.5, 29.0, 7.0, 3.5]
    for panel, kinds in ((1, KINDS), (2, KINDS[:-1])):
        x, s = series(d, panel)
        assert x == kinds and list(s) == ["no offload", "setup + teardown offload"]
    assert "60.5 %" in d["comparison"][0]["paper"] and d["note"]


def test_fig14_kv_cpu_by_category(run):
    """Figure 14: kv's host CPU, the stack's categories vs the application, without and
    with setup + teardown offload; TCP cycles saved is computed from the two."""
    _, _, docs = run
    d = docs["fig14"]
    base, off = d["rows"]
    assert base["configuration"] == "no offload" and off["configuration"] == \
        "setup + teardown"
    assert d["facts"]["errors"] == 0
    for r in (base, off):
        assert r["tcp_share"] + r["app_share"] == pytest.approx(1.0)
        assert r["tcp_us_per_txn"] == pytest.approx(
            sum(r[k + "_us_per_txn"] for k in KINDS[:-1]))
    assert off["frames_per_txn"] < base["frames_per_txn"]
    assert 1.95 < base["setup_entries_per_txn"] < 2.1
    assert 0.95 < off["setup_entries_per_txn"] < 1.1
    assert off["setup_entries_per_txn"] + off["teardown_entries_per_txn"] < \
        base["setup_entries_per_txn"] + base["teardown_entries_per_txn"]
    saved = d["facts"]["tcp_cycles_saved"]
    assert saved == pytest.approx(1 - off["tcp_us_per_txn"] / base["tcp_us_per_txn"])
    x, s = series(d, 0)
    assert x == ["no offload", "setup + teardown"]
    assert list(s) == ["TCP/IP (the stack)", "application"]
    x, s = series(d, 2)
    assert s["paper (up to)"] == [75.0] and s["ours"] == [pytest.approx(100 * saved)]
    assert "75 %" in d["comparison"][0]["paper"]
