"""`acceltcp eval fig12 fig13 --quick --nic both`: the proxy sweeps on the real network
(benchmarks/proxy_sweep.py, its own namespace atcp-sweep). Checked: the files and the
plotted series, and what splicing guarantees whatever the speeds -- a spliced
connection's later requests and every response byte never reach the host (its lb
parses one request head per connection and relays none; the NIC's closure reports
account for the response bytes), while the host relay moves every response itself --
never a rate or a ratio."""

import csv
import json

import pytest

from acceltcp.cli import main

NEEDS_ROOT = True
PROXIES = ["lb, host relay", "lb + NIC inline, spliced", "lb + NIC xdp, spliced"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, xdp_built):
    out = tmp_path_factory.mktemp("eval-proxy")
    rc = main(["eval", "fig12", "fig13", "--quick", "--nic", "both", "--out", str(out),
               "--no-progress"])
    return rc, out, {n: json.loads((out / (n + ".json")).read_text())
                     for n in ("fig12", "fig13")}


def rows(doc):
    """The script's own rows (the JSON's sample): every field, unrounded."""
    return doc["samples"][0]["rows"]


def test_files_series_and_report(run):
    rc, out, docs = run
    assert rc == 0
    report = (out / "report.md").read_text()
    for name, xs in (("fig12", [64, 4096]), ("fig13", [1, 16])):
        d = docs[name]
        assert d["status"] == "ok", d.get("reason")
        assert "xdp_unavailable" not in d["samples"][0]          # make xdp was run
        assert (out / (name + ".png")).stat().st_size > 1000
        with open(out / (name + ".csv")) as f:
            table = list(csv.DictReader(f))
        assert len(table) == len(d["rows"]) == len(xs) * 3
        assert "## %s" % name in report and "![%s](%s.png)" % (name, name) in report
        assert d["note"] and len(d["comparison"]) == 4
        rps, cpu, ratio = d["plot"]["panels"]
        for p in (rps, cpu, ratio):
            assert p["x"] == xs and all(len(v) == len(xs) for v in p["series"].values())
        assert list(rps["series"]) == PROXIES and list(cpu["series"]) == PROXIES
        assert list(ratio["series"]) == ["req/s, NIC inline", "req/s, NIC xdp"]
        for place, ys in zip(("inline", "xdp"), ratio["series"].values()):
            lb = "lb + NIC %s, spliced" % place
            assert ys == [a / b for a, b in zip(rps["series"][lb],
                                                rps["series"]["lb, host relay"])]
        assert d["facts"]["placements"] == ["inline", "xdp"] and d["facts"]["errors"] == 0
    assert [r["size"] for r in rows(docs["fig12"]) if r["placement"] == "relay"] == [64, 4096]


def test_relay_moves_every_response_through_the_host(run):
    _, _, docs = run
    for name in ("fig12", "fig13"):
        for r in rows(docs[name]):
            if r["placement"] != "relay":
                continue
            assert r["requests"] > 0 and r["errors"] == 0
            assert r["splice_requested"] == 0 and r["nic_resp_bytes_per_req"] == 0
            # every request's head parsed and its response relayed by the host
            assert r["relayed_requests"] >= r["requests"]
            assert r["lb_request_heads"] >= r["requests"]
            assert r["host_resp_bytes_per_req"] >= r["size"]
            # at least request in and out, response in and out
            assert r["host_frames_per_req"] >= 4


def test_spliced_connections_leave_the_host(run):
    _, _, docs = run
    for name in ("fig12", "fig13"):
        by = {(r["placement"], r["size"], r["txns_per_conn"]): r for r in rows(docs[name])}
        for (place, size, k), r in by.items():
            if place == "relay":
                continue
            relay = by["relay", size, k]
            assert r["requests"] > 0 and r["errors"] == 0
            assert r["splice_requested"] > 0 and r["nic_splice_frames"] > r["requests"]
            fallback = r["splice_skipped"] + r["splice_failed"]
            # the host parses a spliced connection's first head only, and relays only
            # the requests of connections whose splice was skipped or failed
            assert r["lb_request_heads"] <= r["lb_connections"] + r["relayed_requests"]
            assert r["relayed_requests"] <= max(k, 1) * fallback
            if fallback == 0:
                assert r["host_resp_bytes_per_req"] == 0
            assert r["host_frames_per_req"] < relay["host_frames_per_req"]
            if name == "fig12":
                # persistent: one splice per client connection, nothing relayed; the
                # host's frames are those of the connections' setup, not per request
                assert k == 0 and fallback == 0 and r["relayed_requests"] == 0
                assert r["splice_requested"] == r["lb_connections"] == r["lb_request_heads"]
                assert r["host_frames_per_req"] * r["requests"] < 40 * r["lb_connections"]
                assert r["nic_resp_bytes_per_req"] > size / 2       # the closure reports
            else:
                assert r["connections"] >= r["requests"] // k
