"""XDP tests: the object is built first (``make -s xdp``: as `make test` does) and every
XdpDataplane a test opens is closed by a finalizer, also when the test fails.  These tests
are never skipped: on a machine without the toolchain or the kernel features they fail with
the one line that names what is missing."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def xdp_obj():
    r = subprocess.run(["make", "-s", "--no-print-directory", "xdp"], cwd=ROOT,
                       capture_output=True, text=True)
    obj = ROOT / "build" / "xdp" / "nic.bpf.o"
    if r.returncode or not obj.exists():
        pytest.fail("XDP object not built: %s" % (r.stdout + r.stderr).strip()
                    .splitlines()[-1:], pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the XDP tests need root (CAP_BPF, CAP_NET_ADMIN)", pytrace=False)
    return str(obj)


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind():
    """After the XDP tests (passed or failed): no pin directory of this process is left in
    the bpffs; one that is is removed, and reported as an error."""
    yield
    from acceltcp.nic.xdp import bpf
    try:
        root = bpf.bpffs_root()
    except bpf.XdpUnavailable:
        return                          # nothing could have been pinned
    mine = [d for d in os.listdir(root) if d.startswith("atcp-%d-" % os.getpid())]
    for d in mine:
        shutil.rmtree(os.path.join(root, d), ignore_errors=True)
    assert not mine, "XDP pins left behind: %s" % mine


@pytest.fixture
def one_cpu():
    """Run the test on one CPU (BPF_PROG_TEST_RUN runs the program on the caller's): the
    kernel's LRU map keeps per-CPU free lists, and a thread that moves between CPUs can
    see an eviction a little below the map's capacity (docs/xdp.md)."""
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(saved)})
    yield
    os.sched_setaffinity(0, saved)


@pytest.fixture
def open_xdp(xdp_obj, request, one_cpu):
    """open_xdp(mac, **kw) -> an XdpDataplane, closed when the test ends."""
    from acceltcp.nic.xdp import XdpDataplane, XdpUnavailable

    def make(mac, **kw):
        try:
            x = XdpDataplane(mac, obj=xdp_obj, **kw)
        except XdpUnavailable as e:
            pytest.fail(str(e), pytrace=False)
        request.addfinalizer(x.close)
        return x
    return make
