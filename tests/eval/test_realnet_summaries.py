"""The real-network experiments' comparison rows (table2, table4, table5) are computed
from the benchmark's rows: each ratio comes from the rows it names, and a placement or
server that did not run is left out rather than shown as a number."""

import pytest

from acceltcp.eval.experiments.realnet import kv_summary, lb_summary, table2_summary


def _kv(server, rps, test="GET", keepalive=False, cpu=10.0):
    return {"server": server, "test": test, "keepalive": keepalive, "rps": rps,
            "host_cpu_us": cpu}


def test_kv_ratios_come_from_the_one_connection_per_get_rows():
    rows = [_kv("kv, no NIC", 1000), _kv("kv, no NIC", 9999, keepalive=True),
            _kv("kv, no NIC", 7777, test="SET"), _kv("redis-server (kernel)", 5000),
            _kv("kv + NIC inline, setup+teardown", 800),
            _kv("kv + NIC xdp, setup+teardown", 1500),
            _kv("kv + NIC xdp, setup+teardown", 1, keepalive=True)]
    comparison, facts, plot = kv_summary(rows)
    assert facts["inline_over_no_nic"] == pytest.approx(0.8)
    assert facts["xdp_over_no_nic"] == pytest.approx(1.5)
    assert facts["xdp_over_redis_server"] == pytest.approx(0.3)
    assert "process_over_no_nic" not in facts              # not run: not made up
    assert comparison[0]["ours"] == "inline 0.80x, xdp 1.50x"
    # no USR rows: no USR ratios
    assert comparison[1]["ours"] == "-" and "xdp_over_no_nic_usr" not in facts
    # kv-threads did not run: its ratios are absent, not invented
    assert facts["user_level_over_threads_short"] is None
    assert comparison[3]["ours"] == "kv -, redis-server -"


def test_kv_usr_ratios_come_from_the_usr_rows():
    rows = [_kv("kv, no NIC", 1000), _kv("kv, no NIC", 800, test="USR"),
            _kv("kv + NIC xdp, setup+teardown", 1500),
            _kv("kv + NIC xdp, setup+teardown", 1600, test="USR"),
            _kv("kv + NIC xdp, setup+teardown", 9, test="USR", keepalive=True)]
    comparison, facts, plot = kv_summary(rows)
    assert facts["xdp_over_no_nic"] == pytest.approx(1.5)
    assert facts["xdp_over_no_nic_usr"] == pytest.approx(2.0)
    assert comparison[1]["ours"] == "xdp 2.00x"
    usr = plot["panels"][1]
    assert usr["series"]["one connection per transaction"] == [800, 1600]
    assert usr["series"]["persistent"] == [None, 9]


def test_kv_kernel_threads_against_user_level_per_connection_mode():
    rows = [_kv("kv, no NIC", 1000), _kv("kv, no NIC", 4000, keepalive=True),
            _kv("kv-threads (kernel)", 250), _kv("kv-threads (kernel)", 8000, keepalive=True),
            _kv("redis-server (kernel)", 5000), _kv("redis-server (kernel)", 16000,
                                                    keepalive=True)]
    comparison, facts, plot = kv_summary(rows)
    assert facts["user_level_over_threads_short"] == 4.0
    assert facts["user_level_over_threads_persistent"] == 0.5
    assert facts["redis_over_threads_short"] == 20.0
    assert facts["redis_over_threads_persistent"] == 2.0
    assert comparison[3]["ours"] == "kv 4.00x, redis-server 20.00x"
    assert comparison[4]["ours"] == "kv 0.50x, redis-server 2.00x"
    rps = plot["panels"][0]
    assert rps["x"] == ["kv, no NIC", "kv-threads (kernel)", "redis-server (kernel)"]
    assert rps["series"]["one connection per GET"] == [1000, 250, 5000]
    assert rps["series"]["persistent"] == [4000, 8000, 16000]


def _lb(proxy, close, rps, p50=100.0, p99=1000.0):
    return {"proxy": proxy, "close": close, "rps": rps, "latency_p50_us": p50,
            "latency_p99_us": p99}


def test_lb_ratios_per_connection_mode():
    rows = []
    for close, base in ((False, 100.0), (True, 10.0)):
        rows += [_lb("lb, host relay", close, base),
                 _lb("nginx proxy (kernel)", close, 4 * base, p50=300.0),
                 _lb("haproxy (kernel)", close, 5 * base, p50=400.0, p99=2500.0),
                 _lb("lb + NIC xdp, spliced", close, 2 * base)]
    comparison, facts, plot = lb_summary(rows)
    assert facts["xdp_persistent_over_relay"] == facts["xdp_close_over_relay"] == 2.0
    assert facts["xdp_close_over_nginx"] == 0.5
    assert facts["xdp_persistent_over_haproxy"] == 0.4
    assert facts["haproxy_close_over_nginx"] == 1.25
    assert facts["p50_persistent_haproxy_over_xdp"] == 4.0
    assert facts["p99_close_haproxy_over_xdp"] == 2.5
    assert facts["p50_close_nginx_over_xdp"] == 3.0
    assert comparison[2]["ours"] == "xdp 2.00x; XDP / nginx 0.50x, XDP / haproxy 0.40x"
    req, p50, p99 = plot["panels"]
    assert req["x"] == ["lb, host relay", "nginx proxy (kernel)", "haproxy (kernel)",
                        "lb + NIC xdp, spliced"]
    assert req["series"]["Connection: close"] == [10.0, 40.0, 50.0, 20.0]
    assert p99["series"]["persistent"] == [1000.0, 1000.0, 2500.0, 1000.0]


def test_lb_says_when_haproxy_was_not_there():
    rows = [_lb("lb, host relay", c, 1.0) for c in (False, True)]
    comparison, facts, _ = lb_summary(rows, {"haproxy_unavailable": "haproxy not found"})
    assert facts["xdp_persistent_over_haproxy"] is None
    assert comparison[-1]["ours"] == "not measured: haproxy not found"


def _sp(label, pattern, value, frames_per_msg=None, offload=False):
    r = {"label": label, "pattern": pattern, "tap_offload": offload, "errors": 0}
    if pattern == "bulk":
        r["gbit_s"] = value
    else:
        r.update(msgs_per_s=value, host_frames_per_msg=frames_per_msg)
    return r


def test_table2_ratios_per_message_size():
    rows = [_sp("host relay", "bulk", 1.0), _sp("NIC inline, spliced", "bulk", 3.0),
            _sp("host relay", "bulk", 9.0, offload=True),          # offloads on: apart
            _sp("NIC inline, spliced", "bulk", 90.0, offload=True),
            _sp("NIC xdp, spliced", "bulk", 8.0),
            _sp("kernel to kernel, no proxy", "bulk", 10.0, offload=None),
            _sp("host relay", "ping-pong", 1000, 2.0),
            _sp("NIC inline, spliced", "ping-pong", 1500, 0.001),
            _sp("NIC xdp, spliced", "ping-pong", 5000, 0.002),
            _sp("kernel to kernel, no proxy", "ping-pong", 6000, 0.0)]
    rows[5]["tap_offload"] = None
    comparison, facts, plot = table2_summary(rows)
    assert facts["inline_over_relay_bulk"] == 3.0 and facts["xdp_over_relay_bulk"] == 8.0
    assert facts["forward_over_relay_bulk"] == 10.0
    assert facts["inline_over_relay_64"] == 1.5 and facts["xdp_over_relay_64"] == 5.0
    assert facts["process_over_relay_64"] is None                 # not run
    assert facts["forward_over_relay_64"] == 6.0
    assert facts["relay_host_frames_per_msg_64"] == 2.0
    assert facts["spliced_host_frames_per_msg_64_max"] == 0.002
    assert comparison[2]["ours"] == "inline 1.50x, own process -, XDP 5.00x"
    bulk, small = plot["panels"]
    assert bulk["x"] == ["host relay", "NIC inline, spliced", "NIC xdp, spliced",
                         "kernel to kernel, no proxy"]
    assert small["series"]["messages/s"] == [1000, 1500, 5000, 6000]
