"""Fixtures for the real-network tests: a private peer namespace, the stack as a
subprocess (`acceltcp serve` / `acceltcp connect`), kernel peers inside the namespace.

Everything these tests start is ended by pid in fixture teardown, also when a test
fails: `acceltcp serve`/`connect` by SIGTERM first, so that they clean up after
themselves (with `--nic xdp`: programs detached, maps and pins gone, the veth removed),
SIGKILL after a while; whatever a killed one left is then removed as the next serve
would remove it, and the teardown fails if any program, map, pin directory or device
of those processes is still there. The namespace is removed at the end of the session
(`acceltcp testbed down`, which also ends anything left running inside it), checked
the same way. Each session uses its own namespace name, so a developer's `atcp-peer`
testbed is left alone.
"""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from acceltcp.testbed.procs import fetch_stats, wait_line

ROOT_REASON = "tests/net need root (network namespaces, /dev/net/tun)"
VENV_BIN = Path(sys.executable).parent
ACCELTCP = [sys.executable, "-m", "acceltcp.cli"]
PEER = [sys.executable, "-m", "acceltcp.testbed.peer"]
STACK_IP = "198.18.0.2"
PEER_IP = "198.18.0.1"
MiB = 1 << 20


def pytest_collection_modifyitems(config, items):
    """Without root, the tests of modules with ``NEEDS_ROOT = True`` do not run: the first
    one is reported skipped, with the reason and the count, the others deselected, so a
    non-root run shows exactly one line about them."""
    if os.geteuid() == 0:
        return
    rooted = [i for i in items if getattr(i.module, "NEEDS_ROOT", False)
              and "tests/net/" in i.nodeid]
    if not rooted:
        return
    first, rest = rooted[0], rooted[1:]
    first.add_marker(pytest.mark.skip(reason="%s: %d tests not run" % (ROOT_REASON,
                                                                        len(rooted))))
    keep = set(map(id, rest))
    items[:] = [i for i in items if id(i) not in keep]
    config.hook.pytest_deselected(items=rest)


def _cli(*args, check=True, timeout=60):
    r = subprocess.run(ACCELTCP + list(args), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError("acceltcp %s failed (%d): %s%s" % (" ".join(args), r.returncode,
                                                                r.stdout, r.stderr))
    return r


class Proc:
    """A subprocess we started; `stop()` ends it by pid (SIGTERM, then SIGKILL).
    ``stack``: an `acceltcp serve`/`connect` (ended by SIGTERM in fixture teardown)."""

    def __init__(self, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stack=False,
                 **kw):
        self.argv = argv
        self.stack = stack
        self.p = subprocess.Popen(argv, stdout=stdout, stderr=stderr, text=True, **kw)

    @property
    def pid(self):
        return self.p.pid

    def wait_line(self, stream, predicate, timeout=20.0):
        """Read lines of `stream` until predicate(line); -> the line."""
        return wait_line(self.p, stream, predicate, timeout, label=self.argv[:6])

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        if self.p.poll() is None:
            try:
                self.p.send_signal(sig)
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        try:
            out, err = self.p.communicate(timeout=10)
        except subprocess.TimeoutExpired:        # a child of it still holds the pipes
            for f in (self.p.stdout, self.p.stderr):
                if f is not None:
                    f.close()
            out = err = ""
        return self.p.returncode, out, err


BPFFS_ROOTS = ("/sys/fs/bpf", "/run/acceltcp/bpffs")      # nic/xdp/bpf.py bpffs_root


def _bpf_objects(kind):
    """{id: pinned paths} of every BPF `kind` ("prog", "map") the kernel has."""
    if shutil.which("bpftool") is None:
        return {}
    r = subprocess.run(["bpftool", "-j", "-f", kind, "show"], capture_output=True, text=True)
    return {o["id"]: o.get("pinned") or [] for o in json.loads(r.stdout or "[]")}


def _pin_dirs(pids):
    """The bpffs directories of the XDP loads of processes `pids` (atcp-<pid>-<n>)."""
    return sorted(d for pid in pids for root in BPFFS_ROOTS
                  for d in glob.glob(os.path.join(root, "atcp-%d-*" % pid)))


def xdp_held(pids):
    """The XDP programs and maps processes `pids` have pinned now (live serves): ->
    {"prog": ids, "map": ids}."""
    dirs = tuple(d + "/" for d in _pin_dirs(pids))
    return {kind: {i for i, pins in _bpf_objects(kind).items()
                   if any(p.startswith(dirs) for p in pins)} for kind in ("prog", "map")}


def xdp_left(name, pids, held=None):
    """What is still there of the XDP placement of processes `pids` in namespace `name`:
    programs and maps of `held` (ids never come back while the kernel runs), their pin
    directories, the placement's veth and TAP. -> a list (empty: nothing)."""
    from acceltcp.testbed import netns
    out = []
    for kind, ids in (held or {}).items():
        out += ["%s %d" % (kind, i) for i in sorted(ids & set(_bpf_objects(kind)))]
    out += _pin_dirs(pids)
    out += [d for d in netns.xdp_names(name) if os.path.exists("/sys/class/net/" + d)]
    return out


class Testbed:
    """One peer namespace for the session, with helpers to run things inside it."""

    def __init__(self, name):
        self.name = name
        self.procs = []
        self.stack_pids = []             # every serve/connect of the session
        self.stop_timeout = 10.0         # SIGTERM to SIGKILL in end_procs

    def up(self):
        _cli("testbed", "up", "--netns", self.name)

    def end_procs(self):
        """End what was started (module doc): serve/connect by SIGTERM (SIGKILL after
        ``stop_timeout``), the rest by SIGKILL; remove what a killed serve --nic xdp left (its veth,
        its pins: what the next serve in the namespace would remove) -> what is still
        there of them (xdp_left; empty: nothing)."""
        procs, self.procs = self.procs, []
        stacks = [p for p in procs if p.stack]
        live = [p.pid for p in stacks if p.p.poll() is None]
        held = xdp_held(live) if live else None
        for p in procs:
            p.stop(signal.SIGTERM if p.stack else signal.SIGKILL, timeout=self.stop_timeout)
        if not stacks:
            return []
        pids = [p.pid for p in stacks]
        if any(p.p.returncode != 0 for p in stacks):
            from acceltcp.nic.xdp import bpf
            from acceltcp.testbed import netns
            netns.remove_veth(self.name)          # all of ours have ended
            if _pin_dirs(pids):
                bpf.cleanup_stale()
        # the kernel frees programs and maps after an RCU grace period
        wait_for(lambda: not xdp_left(self.name, pids, held), timeout=30, interval=0.2)
        return xdp_left(self.name, pids, held)

    def down(self):
        for p in self.procs:
            p.stop(signal.SIGKILL)
        self.procs = []
        _cli("testbed", "down", "--netns", self.name, "--ref-netns", self.name + "-ref",
             check=False)

    def ns(self, argv):
        return ["ip", "netns", "exec", self.name] + list(argv)

    def run(self, argv, timeout=120, check=True):
        r = subprocess.run(self.ns(argv), capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError("%s failed (%d): %s %s" % (argv, r.returncode, r.stdout,
                                                            r.stderr))
        return r

    def peer(self, *args, timeout=180, check=True):
        """Run a kernel peer program in the namespace; -> its JSON result."""
        r = self.run(PEER + [str(a) for a in args], timeout=timeout, check=check)
        return json.loads(r.stdout.strip().splitlines()[-1])

    def popen(self, argv, **kw):
        p = Proc(self.ns(argv), **kw)
        self.procs.append(p)
        return p

    def serve(self, app="echo", port=7, offload=True, extra=(), stats=None):
        """`acceltcp serve` as a subprocess; -> Server (stop() returns the stats JSON)."""
        argv = ACCELTCP + ["serve", app, "--port", str(port), "--netns", self.name]
        if not offload:
            argv.append("--no-offload")
        if stats is not None:
            argv += ["--stats-file", str(stats)]
        argv += list(extra)
        p = Proc(argv, stack=True)
        self.procs.append(p)
        self.stack_pids.append(p.pid)
        p.wait_line(p.p.stderr, lambda line: '"event": "ready"' in line)
        return Server(self, p, stats)

    def loss(self, percent_in, percent_out=None):
        from acceltcp.testbed import netns as tb
        tb.set_loss(percent_in, percent_out, name=self.name)

    def echo_duplex_under_loss(self, n, seed, percent=2, timeout=300):
        """A Linux client sends `n` pseudo-random bytes (`seed`) to the echo server on
        port 7 and reads the echo at the same time, `percent` % loss each way; the loss
        rule goes afterwards. Checks the echo byte-exact; -> the client's JSON."""
        from acceltcp.testbed.peer import expected_sha256
        self.loss(percent, percent)
        try:
            cl = self.peer("duplex", STACK_IP, 7, "--bytes", n, "--seed", seed,
                           "--timeout", timeout, timeout=timeout + 300)
        finally:
            self.run(["nft", "delete", "table", "netdev", "atcp_loss"], check=False)
        assert cl["errors"] == [], cl
        assert cl["received"] == n and cl["sha256"] == expected_sha256(seed, n), cl
        return cl

    def connect(self, host, port, *args, offload=True, stats=None, timeout=180, stdin=None):
        argv = ACCELTCP + ["connect", host, str(port), "--netns", self.name,
                           "--timeout", str(timeout)]
        if not offload:
            argv.append("--no-offload")
        if stats is not None:
            argv += ["--stats-file", str(stats)]
        argv += [str(a) for a in args]
        f = open(stdin, "rb") if stdin is not None else subprocess.DEVNULL
        try:
            p = Proc(argv, stdin=f, stack=True)
            self.stack_pids.append(p.pid)
        finally:
            if stdin is not None:
                f.close()
        self.procs.append(p)
        try:
            p.p.wait(timeout + 30)
        finally:
            rc, out, err = p.stop(signal.SIGKILL)
        return rc, out, err


class Server:
    def __init__(self, tb, proc, stats):
        self.tb = tb
        self.proc = proc
        self.stats_path = stats

    def snapshot(self, timeout=5.0):
        """SIGUSR1: the server rewrites its stats file; -> the JSON."""
        return fetch_stats(self.proc.p, self.stats_path, timeout)

    def stop(self):
        rc, out, err = self.proc.stop(signal.SIGTERM)
        assert rc == 0, "serve exited %s: %s" % (rc, err[-2000:])
        if self.stats_path is None:
            return None
        return json.loads(self.stats_path.read_text())


def _remove_stale_namespaces():
    """Namespaces of earlier test sessions that were killed before their teardown."""
    import re
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return
    for name in names:
        m = re.fullmatch(r"atcp-[tc](\d+)", name)
        if m and not os.path.exists("/proc/%s" % m.group(1)):
            _cli("testbed", "down", "--netns", name, "--ref-netns", name + "-ref",
                 check=False)


@pytest.fixture(scope="session")
def testbed():
    if os.geteuid() != 0:
        pytest.skip(ROOT_REASON)
    _remove_stale_namespaces()
    tb = Testbed("atcp-t%d" % os.getpid())
    tb.down()                      # a leftover of a crashed run with the same pid
    try:
        tb.up()
        yield tb
    finally:
        tb.down()
    # nothing of the session left: its namespaces, and no pin directory or device of
    # any serve it ran
    from acceltcp.testbed import netns
    left = [ns for ns in (tb.name, tb.name + "-ref") if netns.exists(ns)]
    left += xdp_left(tb.name, tb.stack_pids)
    assert not left, "left after the session: %s" % left


@pytest.fixture
def bed(testbed):
    """The session testbed; processes a test started are ended after it, also when it
    failed (Testbed.end_procs: nothing of an XDP placement may remain), and any loss
    rule is removed."""
    yield testbed
    left = testbed.end_procs()
    testbed.run(["nft", "delete", "table", "netdev", "atcp_loss"], check=False)
    assert not left, "left after the test: %s" % left


@pytest.fixture(scope="session")
def xdp_built():
    """build/xdp/nic.bpf.o of this tree (`make xdp`), for the tests of `--nic xdp`: a
    failure names what is missing (never a skip)."""
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run(["make", "-s", "--no-print-directory", "xdp"], cwd=root,
                       capture_output=True, text=True)
    if r.returncode or not (root / "build/xdp/nic.bpf.o").exists():
        pytest.fail("XDP object not built: %s" % (r.stdout + r.stderr).strip(),
                    pytrace=False)


def wait_for(predicate, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(interval)
    return predicate()


@pytest.fixture
def no_timestamps(bed):
    """tcp_timestamps=0 in the peer namespace for one test; the old value comes back
    afterwards, also when the test fails."""
    key = "net.ipv4.tcp_timestamps"
    old = bed.run(["sysctl", "-n", key]).stdout.strip()
    bed.run(["sysctl", "-w", "%s=0" % key])
    try:
        yield
    finally:
        bed.run(["sysctl", "-w", "%s=%s" % (key, old)], check=False)
    assert bed.run(["sysctl", "-n", key]).stdout.strip() == old

