"""A kernel client load for fault experiments: what a client sees while the server's NIC
is killed or hung (tests/net/test_nic_watchdog.py, benchmarks/robust_nicfault.py).

    ip netns exec atcp-peer python -m acceltcp.testbed.faultload 198.18.0.2 7 \
        --duration 20 [--concurrency 8] [--size 64] [--attempt-timeout 0.5]

Runs inside the peer namespace, for ``--duration`` seconds (or until a line "stop" on
stdin), two kinds of traffic against an echo server:

* short-lived transactions: ``--concurrency`` threads, each in a loop: connect, send
  ``--size`` bytes, read the echo, close. Every attempt has a deadline of
  ``--attempt-timeout`` seconds (connect included), after which it is abandoned (the
  socket closed) and a *fresh* connection is tried at once. So service resumption is
  seen within about one attempt deadline, not after the kernel's SYN retransmission
  backoff (1 s, 3 s, 7 s ...), which a single stuck connect would wait for.
* one persistent connection: request/response of ``--persistent-size`` bytes (a
  counter pattern), every echo checked byte for byte; a read deadline of
  ``--persistent-timeout`` seconds (long: the connection must survive a NIC outage
  through TCP retransmission). At the end it half-closes and reads to EOF.

On exit it prints one JSON line: ``t0`` (time.monotonic() at start; the namespace
shares CLOCK_MONOTONIC with the caller, so a caller's fault time compares directly),
``ok`` (end times of successful transactions, sorted), ``ok_start`` (their start
times), ``failed`` (number of abandoned or failed attempts), ``errors`` (a few of
them), and ``persistent``: ``sent``, ``received``, ``exact`` (every reply equal to its
request and EOF after the last), ``error``, ``gaps_max_s`` (the longest wait for a
reply).
"""

import argparse
import json
import select
import socket
import sys
import threading
import time

__all__ = ["main", "outage"]


def outage(result, fault_time):
    """From a faultload result: seconds from ``fault_time`` to the end of the first
    successful transaction that *started* after it (None if there is none)."""
    ends = [e for s, e in zip(result["ok_start"], result["ok"]) if s >= fault_time]
    return (min(ends) - fault_time) if ends else None


def _short(a, state, lock, stop):
    msg = bytes(range(256)) * (a.size // 256) + bytes(range(a.size % 256))
    while not stop.is_set():
        t0 = time.monotonic()
        deadline = t0 + a.attempt_timeout
        s = None
        try:
            s = socket.create_connection((a.host, a.port), timeout=a.attempt_timeout)
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("reply")
                s.settimeout(left)
                d = s.recv(65536)
                if not d:
                    break
                got += d
            if got != msg:
                raise ValueError("reply of %d bytes" % len(got))
            t1 = time.monotonic()
            with lock:
                state["ok"].append((t0, t1))
        except (OSError, ValueError) as e:
            with lock:
                state["failed"] += 1
                if len(state["errors"]) < 10:
                    state["errors"].append("%.3f %r" % (t0, e))
            # a refused or reset attempt returns at once: do not spin
            if time.monotonic() - t0 < 0.01:
                stop.wait(0.01)
        finally:
            if s is not None:
                s.close()


def _persistent(a, res, stop):
    try:
        s = socket.create_connection((a.host, a.port), timeout=a.persistent_timeout)
    except OSError as e:
        res["error"] = "connect: %r" % e
        return
    s.settimeout(a.persistent_timeout)
    i = 0
    try:
        while not stop.is_set():
            req = (i.to_bytes(8, "big") * (a.persistent_size // 8 + 1))[:a.persistent_size]
            t0 = time.monotonic()
            s.sendall(req)
            res["sent"] += len(req)
            got = b""
            while len(got) < len(req):
                d = s.recv(len(req) - len(got))
                if not d:
                    raise ConnectionError("EOF after %d of %d bytes" % (len(got), len(req)))
                got += d
            res["received"] += len(got)
            res["gaps_max_s"] = max(res["gaps_max_s"], time.monotonic() - t0)
            if got != req:
                res["exact"] = False
            i += 1
            stop.wait(a.persistent_interval)
        s.shutdown(socket.SHUT_WR)
        extra = s.recv(65536)
        if extra:
            res["exact"] = False
            res["error"] = "%d bytes instead of EOF" % len(extra)
    except OSError as e:
        res["exact"] = False
        res["error"] = repr(e)
    finally:
        s.close()


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m acceltcp.testbed.faultload",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--attempt-timeout", type=float, default=0.5)
    p.add_argument("--persistent-size", type=int, default=1024)
    p.add_argument("--persistent-interval", type=float, default=0.01)
    p.add_argument("--persistent-timeout", type=float, default=60.0)
    p.add_argument("--no-persistent", dest="persistent", action="store_false")
    a = p.parse_args(argv)
    state = {"ok": [], "failed": 0, "errors": []}
    pres = {"sent": 0, "received": 0, "exact": True, "error": None, "gaps_max_s": 0.0}
    lock = threading.Lock()
    stop = threading.Event()
    t0 = time.monotonic()
    threads = [threading.Thread(target=_short, args=(a, state, lock, stop), daemon=True)
               for _ in range(a.concurrency)]
    pt = None
    if a.persistent:
        pt = threading.Thread(target=_persistent, args=(a, pres, stop), daemon=True)
        pt.start()
    for t in threads:
        t.start()
    print(json.dumps({"event": "started", "t0": t0}), flush=True)
    end = t0 + a.duration
    stdin = sys.stdin if not sys.stdin.isatty() else None
    while time.monotonic() < end:
        if stdin is not None:
            r, _, _ = select.select([stdin], [], [], min(0.1, max(0.0, end - time.monotonic())))
            if r:
                line = stdin.readline()
                if not line:
                    stdin = None
                elif line.strip() == "stop":
                    break
        else:
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))
    stop.set()
    for t in threads:
        t.join(a.attempt_timeout + 5)
    if pt is not None:
        pt.join(a.persistent_timeout + 5)
    with lock:
        ok = sorted(state["ok"], key=lambda x: x[1])
        out = {"event": "done", "t0": t0, "t_end": time.monotonic(),
               "ok": [e for _, e in ok], "ok_start": [s for s, _ in ok],
               "failed": state["failed"], "errors": state["errors"],
               "persistent": pres if a.persistent else None}
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
