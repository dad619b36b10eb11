"""`acceltcp testbed up/down`: idempotent, and `down` cleans up after a crash."""

import json
import os
import signal
import time

import pytest

from .conftest import ACCELTCP, ROOT_REASON, Proc, _cli, wait_for

NEEDS_ROOT = True


@pytest.fixture
def nsname():
    if os.geteuid() != 0:
        pytest.skip(ROOT_REASON)
    name = "atcp-c%d" % os.getpid()
    procs = []
    yield name, procs
    for p in procs:
        p.stop(signal.SIGKILL)
    _cli("testbed", "down", "--netns", name, "--ref-netns", name + "-ref", check=False)


def _status(name):
    r = _cli("testbed", "status", "--netns", name, "--ref-netns", name + "-ref", check=False)
    return json.loads(r.stdout) if r.returncode == 0 else {}


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_up_down_idempotent_and_cleanup_after_crash(nsname):
    name, procs = nsname
    ref = name + "-ref"
    args = ("--netns", name, "--ref-netns", ref)
    assert "created" in _cli("testbed", "up", *args).stdout
    assert "already there" in _cli("testbed", "up", *args).stdout
    _cli("testbed", "up", "--ref", *args)               # adds the reference namespace
    st = _status(name)
    assert set(st) == {name, ref}
    assert st[ref]["links"]["atcp-ref1"] == ["198.18.1.2/24"]

    # a serve that crashes (SIGKILL) and a peer program left running inside
    srv = Proc(ACCELTCP + ["serve", "echo", "--netns", name])
    procs.append(srv)
    srv.wait_line(srv.p.stderr, lambda line: '"event": "ready"' in line)
    assert _status(name)[name]["links"]["atcp0"] == ["198.18.0.1/24"]
    sleeper = Proc(["ip", "netns", "exec", name, "sleep", "300"])
    procs.append(sleeper)
    assert wait_for(lambda: sleeper.pid in _status(name)[name]["pids"])
    srv.p.send_signal(signal.SIGKILL)
    srv.p.wait(10)
    # the TAP died with its fd: nothing of the crashed stack is left in the namespace
    assert wait_for(lambda: "atcp0" not in _status(name)[name]["links"])
    # and a new serve can take its place at once
    srv2 = Proc(ACCELTCP + ["serve", "echo", "--netns", name])
    procs.append(srv2)
    srv2.wait_line(srv2.p.stderr, lambda line: '"event": "ready"' in line)
    srv2.p.send_signal(signal.SIGKILL)
    srv2.p.wait(10)

    out = _cli("testbed", "down", *args).stdout
    assert name in out and ref in out
    assert _status(name) == {}
    assert not os.path.exists("/run/netns/" + name)
    sleeper.p.wait(10)                     # `down` ended what still ran inside
    assert not _alive(sleeper.pid)
    assert "nothing to remove" in _cli("testbed", "down", *args).stdout


def test_serve_without_testbed_fails_clearly(nsname):
    name, procs = nsname
    t0 = time.monotonic()
    r = _cli("serve", "echo", "--netns", name, check=False, timeout=30)
    assert r.returncode != 0
    assert "does not exist" in r.stderr and "testbed up" in r.stderr
    assert "Traceback" not in r.stderr
    assert time.monotonic() - t0 < 30


def test_down_of_one_testbed_leaves_the_default_reference_alone(nsname, monkeypatch):
    """`testbed down --netns X` removes X and X's own reference namespace (X-ref), never the
    default atcp-ref of another testbed (it used to: the reference name defaulted to
    atcp-ref whatever X was)."""
    from acceltcp.testbed import netns as tb
    name, procs = nsname
    assert tb.ref_name_for(tb.DEFAULT_NS) == tb.REF_NS
    assert tb.ref_name_for(name) == name + "-ref"
    # What `down` would end and remove, without touching a developer's real atcp-ref:
    # every namespace "exists", removal and the process sweep are recorded.
    removed, swept = [], []
    import pyroute2.netns
    monkeypatch.setattr(tb, "exists", lambda ns: True)
    monkeypatch.setattr(tb, "_kill_ns_processes", lambda names: swept.extend(names))
    monkeypatch.setattr(pyroute2.netns, "remove", removed.append)
    assert tb.down(name) == [name, name + "-ref"]
    assert removed == [name, name + "-ref"] and swept == removed
    monkeypatch.undo()

    # and for real: up --ref without --ref-netns makes X-ref; down without it removes both
    _cli("testbed", "up", "--ref", "--netns", name)
    assert set(_status(name)) == {name, name + "-ref"}
    out = _cli("testbed", "down", "--netns", name).stdout
    assert name + "-ref" in out and tb.REF_NS + "," not in out + ","
    assert not os.path.exists("/run/netns/" + name + "-ref")
