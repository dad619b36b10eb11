"""``benchmarks/chimney_real.py``'s measuring path at a small size, in the session's
namespace: what the mechanism guarantees, never a speed.

* every configuration moves the bytes exactly (the script raises otherwise), each way;
* behind the NIC with the TAP's offloads off, the host port carries MTU frames without
  Chimney and the NIC's large ChimneyData/ChimneySend chunks with it: far fewer frames
  per MiB;
* Chimney runs were offloaded once and uploaded on the client's FIN, the NIC moved most
  of the bytes each way, and the NIC's CPU is measured apart from the host's (inline:
  the accounting; process: the NIC process in /proc); no-Chimney runs were never
  offloaded;
* the report prints a row per configuration and the ratio lines.
"""

import importlib.util
import os
from pathlib import Path

import pytest

NEEDS_ROOT = True
MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location(
        "chimney_real", ROOT / "benchmarks" / "chimney_real.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    return _bench()


def test_chimney_real_benchmark_measuring_path(bed, tmp_path, bench, capsys):
    n = 8 * MiB
    tap = "atcp-cb%d" % (os.getpid() % 100000)      # its own TAP name, as the script's
    keys = ("host", "nic-inline-nooffload", "chimney-inline-nooffload", "chimney-process")
    rows = {k: bench.measure(k, n, netns=bed.name, tap=tap, tmp=tmp_path, timeout=300)
            for k in keys}
    for k, r in rows.items():
        assert r["byte_exact"] and r["mib_each_way"] == 8, (k, r)
        assert r["host_cpu_s"] > 0 and r["host_port_frames"] > 0, (k, r)
        assert r["conns_reset"] == 0 and r["chimney_lost"] == 0, (k, r)
    assert rows["host"]["tap_offload"] and not rows["nic-inline-nooffload"]["tap_offload"]

    plain, inline = rows["nic-inline-nooffload"], rows["chimney-inline-nooffload"]
    # MTU frames (and their ACKs) without Chimney; >= 60 KB chunks at full speed with it
    assert plain["host_port_frames_per_mib"] > 4 * inline["host_port_frames_per_mib"], rows
    assert plain["chimney_accepted"] == 0 and rows["host"]["chimney_accepted"] == 0
    assert plain["nic_cpu_s"] > 0 and rows["host"]["nic_cpu_s"] == 0

    for k in ("chimney-inline-nooffload", "chimney-process"):
        r = rows[k]
        assert r["chimney_accepted"] == 1 and r["chimney_uploads"] == {"peer_fin": 1}, r
        assert r["nic_bytes_to_host"] > n // 2 and r["nic_bytes_from_host"] > n // 2, r
        assert r["nic_cpu_s"] > 0, r

    bench.report(list(rows.values()))
    out = capsys.readouterr().out
    for r in rows.values():
        assert r["label"] in out
    assert "less host CPU per byte than the host does the transfer" in out
