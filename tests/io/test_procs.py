"""testbed/procs.py fetch_stats: SIGUSR1 to a serve, its rewritten stats file back."""

import subprocess
import sys

import pytest

from acceltcp.testbed.procs import fetch_stats, wait_line

# a stand-in for `acceltcp serve --stats-file`: rewrites the file on each SIGUSR1
SERVE = r"""
import json, signal, sys, time
n = 0
def usr1(*_):
    global n
    n += 1
    with open(sys.argv[1], "w") as f:
        json.dump({"snapshots": n}, f)
signal.signal(signal.SIGUSR1, usr1)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""
DEAF = r"""
import signal, time
signal.signal(signal.SIGUSR1, signal.SIG_IGN)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def _start(code, *args):
    p = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE)
    wait_line(p, p.stdout, lambda line: line == "ready", timeout=20)
    return p


def test_each_snapshot_is_the_rewritten_file(tmp_path):
    stats = tmp_path / "s.json"
    stats.write_text('{"snapshots": 0}')           # an earlier run's file is not taken
    p = _start(SERVE, str(stats))
    try:
        assert fetch_stats(p, stats) == {"snapshots": 1}
        assert fetch_stats(p, str(stats)) == {"snapshots": 2}
    finally:
        p.kill()
        p.wait()


def test_a_serve_that_writes_nothing_times_out(tmp_path):
    p = _start(DEAF)
    try:
        with pytest.raises(TimeoutError, match="no stats"):
            fetch_stats(p, tmp_path / "never.json", timeout=0.3)
    finally:
        p.kill()
        p.wait()


def test_a_serve_that_ended_is_not_waited_for(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    p.wait()
    with pytest.raises(TimeoutError, match=r"ended \(exit 3\)"):
        fetch_stats(p, tmp_path / "never.json", timeout=30)
