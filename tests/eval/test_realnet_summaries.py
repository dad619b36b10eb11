"""The real-network experiments' comparison rows (table4, table5) are computed from the
benchmark's rows: each ratio comes from the rows it names, and a placement that did not
run is left out rather than shown as a number."""

import pytest

from acceltcp.eval.experiments.realnet import kv_summary, lb_summary


def _kv(server, rps, test="GET", keepalive=False):
    return {"server": server, "test": test, "keepalive": keepalive, "rps": rps}


def test_kv_ratios_come_from_the_one_connection_per_get_rows():
    rows = [_kv("kv, no NIC", 1000), _kv("kv, no NIC", 9999, keepalive=True),
            _kv("kv, no NIC", 7777, test="SET"), _kv("redis-server (kernel)", 5000),
            _kv("kv + NIC inline, setup+teardown", 800),
            _kv("kv + NIC xdp, setup+teardown", 1500),
            _kv("kv + NIC xdp, setup+teardown", 1, keepalive=True)]
    comparison, facts = kv_summary(rows)
    assert facts["inline_over_no_nic"] == pytest.approx(0.8)
    assert facts["xdp_over_no_nic"] == pytest.approx(1.5)
    assert facts["xdp_over_redis_server"] == pytest.approx(0.3)
    assert "process_over_no_nic" not in facts              # not run: not made up
    assert comparison[0]["ours"] == "inline 0.80x, xdp 1.50x"


def test_lb_ratios_per_connection_mode():
    rows = []
    for close, base in ((False, 100.0), (True, 10.0)):
        rows += [{"proxy": "lb, host relay", "close": close, "rps": base},
                 {"proxy": "nginx proxy (kernel)", "close": close, "rps": 4 * base},
                 {"proxy": "lb + NIC xdp, spliced", "close": close, "rps": 2 * base}]
    comparison, facts = lb_summary(rows)
    assert facts["xdp_persistent_over_relay"] == facts["xdp_close_over_relay"] == 2.0
    assert facts["xdp_close_over_nginx"] == 0.5
    assert comparison[1]["ours"] == "xdp 2.00x; XDP / nginx 0.50x"
