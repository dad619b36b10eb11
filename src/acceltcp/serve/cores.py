"""``serve --cores N``: N host stacks, one process per core, on one multi-queue TAP.

Theory of operation
-------------------
The parent opens the TAP with IFF_MULTI_QUEUE and N queues, moves it into the peer
namespace, and forks one child per queue. Each child pins itself to a CPU (k modulo the
CPUs it may use), keeps its queue and closes the others, and serves the app on a stack
of its own -- its tables, its runner and, with ``--nic inline``, its NIC dataplane:
what a one-core serve runs (``commands.serve_app``). The kernel spreads what it sends
into the TAP over the queues by flow hash, the same for both directions of a connection,
and tun steers a flow to the queue our side last sent it on (its automatic flow
steering), so each connection stays with one stack: the kernel's flow hash is the RSS.
Every stack listens on the port; each opens its own connections (the lb's and proxy's
backend ones) from an ephemeral range of its own, so they never collide; each has the
peer as a static ARP neighbour (an ARP reply reaches whichever queue its hash picks).

The parent prints the ready line once every child is ready, forwards SIGTERM, SIGINT
and SIGUSR1, and writes the stats file: every child's snapshot under ``cores``, their
numbers summed at the top level. A child whose parent dies gets SIGTERM
(PR_SET_PDEATHSIG); a child that dies ends the serve (the others are stopped, exit 1).
"""

import ctypes
import json
import os
import select
import signal
import sys
import time

from .common import print_ready, write_json

__all__ = ["serve_cores", "merge_snapshots"]

_SIGS = {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGCHLD}
_PR_SET_PDEATHSIG = 1
EPHEMERAL = (32768, 60999)


def merge_snapshots(snaps):
    """The stats of N stacks as one: numbers summed, dicts merged key by key, anything
    else (names, addresses) from the first."""
    out = {}
    for key in dict.fromkeys(k for s in snaps for k in s):
        vals = [s[key] for s in snaps if key in s]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            out[key] = sum(vals)
        elif all(isinstance(v, dict) for v in vals):
            out[key] = merge_snapshots(vals)
        else:
            out[key] = vals[0]
    return out


def ephemeral_range(k, n, lo=EPHEMERAL[0], hi=EPHEMERAL[1]):
    """Core k's share of the ephemeral ports (n equal, disjoint ranges)."""
    step = (hi - lo + 1) // n
    return lo + k * step, (hi if k == n - 1 else lo + (k + 1) * step - 1)


def _child(args, k, n, tap, ready_w):
    from .commands import serve_app
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[k % len(cpus)]})
    tap.keep_queue(k)
    if args.stats_file:
        args.stats_file = "%s.core%d" % (args.stats_file, k)

    def ready(**info):
        info["core"] = k
        os.write(ready_w, (json.dumps(info) + "\n").encode())

    return serve_app(args, {"tap": tap, "ephemeral": ephemeral_range(k, n)}, ready)


def _open_tap(args, n):
    from ..io.tap import TapDevice
    from ..testbed import netns as tb
    from ..wire.ethernet import mac_from_str
    tap = TapDevice(args.tap, mac_from_str(tb.STACK_MAC), offload=args.offload,
                    multi_queue=True, batch=args.batch)
    try:
        for _ in range(n - 1):
            tap.open_queue()
        tb.attach_tap(tap.name, args.netns, args.peer_ip, tb.PREFIXLEN, tb.PEER_MAC)
    except BaseException:
        tap.close()
        raise
    return tap


def serve_cores(args):
    """The parent of ``serve --cores N`` (module docstring). -> exit code."""
    from ..testbed.netns import TestbedError
    n = args.cores
    if args.nic not in ("none", "inline"):
        print("acceltcp serve: --cores needs --nic none or inline (a queue per stack)",
              file=sys.stderr)
        return 2
    if args.pcap:
        print("acceltcp serve: --cores and --pcap: one capture per queue is not built",
              file=sys.stderr)
        return 2
    try:
        tap = _open_tap(args, n)
    except (TestbedError, OSError) as e:
        print("acceltcp serve %s: %s" % (args.app, e), file=sys.stderr)
        return 2
    ready_r, ready_w = os.pipe()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGS)
    pids = []
    try:
        for k in range(n):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    os.close(ready_r)
                    code = _child(args, k, n, tap, ready_w)
                finally:
                    os._exit(code)
            pids.append(pid)
    finally:
        os.close(ready_w)
        for fd in tap.queues:                # the children hold the queues now
            os.close(fd)
        tap.queues = []
        tap.fd = -1
    try:
        return _parent(args, pids, ready_r)
    finally:
        os.close(ready_r)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _read_ready(ready_r, n, timeout=60.0):
    buf, lines = b"", []
    deadline = time.monotonic() + timeout
    while len(lines) < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([ready_r], [], [], left)[0]:
            return None
        chunk = os.read(ready_r, 4096)
        if not chunk:                        # every child closed it: one failed
            return None
        buf += chunk
        *done, buf = buf.split(b"\n")
        lines += [json.loads(x) for x in done if x]
    return sorted(lines, key=lambda d: d["core"])


def _stop(pids, sig=signal.SIGTERM, timeout=15.0):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    codes = {}
    while len(codes) < len(pids):
        for pid in pids:
            if pid not in codes:
                try:
                    got, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    got, status = pid, 0
                if got:
                    codes[pid] = os.waitstatus_to_exitcode(status)
        if len(codes) < len(pids):
            if time.monotonic() > deadline:
                for pid in pids:
                    if pid not in codes:
                        os.kill(pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.02)
    return codes


def _snapshot_files(args, n):
    return ["%s.core%d" % (args.stats_file, k) for k in range(n)]


def _write_merged(args, n):
    snaps = []
    for path in _snapshot_files(args, n):
        try:
            with open(path) as f:
                snaps.append(json.load(f))
        except (OSError, ValueError):
            pass
    if snaps:
        merged = merge_snapshots(snaps)
        merged["cores"] = snaps
        write_json(args.stats_file, merged)


def _refresh(args, pids):
    """SIGUSR1 to every child; wait (3 s at most) for their stats files to change."""
    files = _snapshot_files(args, len(pids))
    before = [os.stat(p).st_mtime_ns if os.path.exists(p) else 0 for p in files]
    for pid in pids:
        os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        if all(os.path.exists(p) and os.stat(p).st_mtime_ns != b
               for p, b in zip(files, before)):
            break
        time.sleep(0.02)
    _write_merged(args, len(pids))


def _parent(args, pids, ready_r):
    n = len(pids)
    ready = _read_ready(ready_r, n)
    if ready is None:
        _stop(pids)
        print("acceltcp serve: a core did not start", file=sys.stderr)
        return 2
    info = dict(ready[0])
    info.update(pid=os.getpid(), cores=n, core_pids=pids)
    info.pop("core", None)
    print_ready(**info)
    while True:
        sig = signal.sigwait(_SIGS)
        if sig == signal.SIGUSR1:
            if args.stats_file:
                _refresh(args, pids)
            continue
        if sig == signal.SIGCHLD:
            dead = [pid for pid in pids if os.waitpid(pid, os.WNOHANG)[0]]
            if not dead:
                continue
            print("acceltcp serve: a core ended (pid %s): stopping" % dead, file=sys.stderr)
            _stop([p for p in pids if p not in dead])
            if args.stats_file:
                _write_merged(args, n)
            return 1
        codes = _stop(pids)
        if args.stats_file:
            _write_merged(args, n)
        return 0 if all(c == 0 for c in codes.values()) else 1
