"""100,000 malformed and mutated frames into `acceltcp serve echo --nic inline|process
--offload setup,teardown`, sent from the TAP's peer end (atcp0 in the test namespace)
with an AF_PACKET socket (acceltcp.testbed.fuzz, acceltcp.testbed.fuzzbed.tap_fuzz):
the server lives, nothing raised, every frame the TAP delivered has exactly one NIC
outcome and every frame the NIC passed up one host outcome, a kernel connection held
across the fuzz and a new one echo byte-exact, and created = closed + live."""

import pytest

from acceltcp.testbed.fuzzbed import tap_checks, tap_fuzz

NEEDS_ROOT = True
N = 100_000


@pytest.fixture
def procs(bed):
    """Processes tap_fuzz started, ended by pid here too if the test fails midway."""
    started = []
    yield started
    from acceltcp.testbed.fuzzbed import _stop
    for p in started:
        _stop(p)


@pytest.mark.parametrize("placement", ["inline", "process"])
def test_fuzz_through_the_tap_placement(bed, tmp_path, procs, placement):
    res = tap_fuzz(bed.name, placement, N, seed=3, stats_file=tmp_path / "serve.json",
                   procs=procs)
    c = tap_checks(res)
    assert c["send_errors"] == 0 and res["sender"]["unsent"] == 0, res["sender"]
    assert c["sent"] == N and res["sender"]["runts_skipped"] > 0
    assert res["fuzz_s"] < 90
    # alive, nothing raised, the NIC process still there
    assert c["alive"] and c["nic_alive"], c
    assert c["internal_error"] == 0
    # every frame that reached the TAP: one NIC outcome (during the fuzz, and overall)
    assert c["queue_drops"] < c["sent"] // 100           # (the TAP queue holds them all)
    assert c["tap_rx"] >= c["sent"] - c["queue_drops"]
    assert c["tap_rx"] - c["sent"] < c["sent"] // 2       # the kernel's answers, no more
    assert c["nic_outcomes"] == c["tap_rx"]
    assert c["nic_outcomes_total"] == c["tap_rx_total"]
    # every frame the host got: delivered or a named drop
    assert c["host_frames_in"] == c["host_accounted"]
    assert c["conns_created"] == c["conns_gone_or_live"]
    # the connection held across the fuzz and a new one: byte-exact
    assert c["held"] == {"before": True, "after": True}
    assert c["echo_after"] == {"ok": True, "eof": True}
    table = c["drop_table"]
    for k in ("nic.drop_offload_ethertype", "nic.drop_cookie_bad", "host.ip_bad_checksum",
              "host.tcp_bad_checksum", "host.tcp_option_overrun", "host.ethertype_unsupported",
              "host.arp_unsupported"):
        assert table.get(k, 0) > 0, k
