"""The classic TOE offloads in the Python NIC (``serve --nic inline|process --nic-toe
csum,tso,lro --no-offload``: the TAP's kernel does none of them, the NIC all three)
against a Linux peer: 20 MiB each way under 2 % loss each way, byte-exact; the stack
handed the NIC super-segments that it cut (TSO), the NIC merged in-order segments for
the stack (LRO) and saw no bad checksum, and fewer, larger transfers crossed the host
port than frames crossed the wire."""

import json
import os
import signal

import pytest

from acceltcp.serve.runner import TapHost
from acceltcp.testbed.peer import expected_sha256

from .conftest import PEER, STACK_IP, wait_for

NEEDS_ROOT = True
MiB = 1 << 20


@pytest.mark.parametrize("placement", ["inline", "process"])
def test_echo_20mib_each_way_under_2pct_loss_with_the_nics_tso_lro_csum(bed, tmp_path,
                                                                        placement):
    n = 20 * MiB
    srv = bed.serve("echo", 7, stats=tmp_path / "serve.json",
                    extra=["--nic", placement, "--no-offload", "--nic-toe", "csum,tso,lro"])
    bed.echo_duplex_under_loss(n, 5)
    st = srv.stop()
    nic = st["nic"]
    hp, lro = nic["host_port"], nic["lro"]
    assert nic["toe"] == ["csum", "lro", "tso"]
    # TSO: segments the stack handed over, cut by the NIC into more frames than that
    assert hp["segments_from_host"] > 0 and hp["tso_segments"] > hp["segments_from_host"], hp
    # LRO: merges of in-order segments, each of two or more; damaged ones went up alone
    assert lro["merges"] > 0 and lro["merged_frames"] >= 2 * lro["merges"], lro
    assert lro["bad_checksum"] == 0, lro
    # fewer transfers up the host port than frames came in from the wire
    assert hp["frames_to_host"] < st["device"]["rx_frames"], (hp, st["device"])
    # Nothing dropped but, at most, a late duplicate after the close: under loss the
    # server's FIN may be resent in LAST-ACK before the client's ACK of it arrives, and
    # the client's ACK of the second copy then finds no TCB (answered with an RST, as
    # Linux answers a segment for a socket it has freed; seen once in CI).
    drops = dict(st["drops"])
    assert drops.pop("no_connection", 0) <= 2 and drops == {}, st["drops"]


def test_toe_only_in_the_python_placements():
    with pytest.raises(ValueError, match="inline and process"):
        TapHost(None, nic="xdp", nic_toe=("tso",))


def test_nic_process_killed_mid_transfer_the_host_cuts_its_own_segments(bed, tmp_path):
    """The NIC process doing TSO dies in the middle of 20 MiB each way: the host takes the
    TAP over (no kernel offloads on it) and cuts its super-segments itself
    (placements/process.py), the transfer completes byte-exact."""
    n = 20 * MiB
    srv = bed.serve("echo", 7, stats=tmp_path / "serve.json",
                    extra=["--nic", "process", "--no-offload", "--nic-toe", "csum,tso,lro"])
    nic_pid = srv.snapshot()["nic"]["pid"]
    cl = bed.popen(PEER + ["duplex", STACK_IP, "7", "--bytes", str(n), "--seed", "6",
                           "--timeout", "300"])
    assert wait_for(lambda: srv.snapshot()["nic"]["host_port"]["tso_segments"] > 1000,
                    timeout=60)
    os.kill(nic_pid, signal.SIGKILL)
    cl.p.wait(300)
    res = json.loads(cl.p.communicate()[0].strip().splitlines()[-1])
    st = srv.stop()
    assert res["errors"] == [], res
    assert res["received"] == n and res["sha256"] == expected_sha256(6, n)
    assert st["nic_lost"] == 1 and st["counters"].get("conns_reset", 0) == 0, st["counters"]
    # the host cut segments of its own after the NIC was gone
    assert st["nic"]["host_tso_segments"] > 1000, st["nic"]
