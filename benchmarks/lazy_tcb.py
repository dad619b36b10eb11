"""Lazy TCB creation (AccelTCP §5.2, tcp.quasi): host µs per short-lived transaction,
lazy on vs off, side by side in one run.

Two measurements of the same work:

* ``sim``: ``acceltcp bench``'s echo experiment (eval.echo_sim.run_echo: 64 clients,
  64 B short-lived echo on a simulated 10 Gbit/s link, the server host's CPU measured by
  its runner around every frame and timer it handles, the NIC's work not counted), with
  the server's ``HostStack(lazy_tcb=...)`` on and off, alternating, the median of
  ``--repeat`` runs. On a shared machine its figures scatter by ±10 %.
* ``replay``: the frames the server host received in one such run (0x090A connections,
  the NIC's reports), recorded once and fed again, at their recorded times, into fresh
  server stacks with lazy creation on and off (the stack's frames go nowhere; timers fire
  as the runner would fire them). Only the stack and its echo app run, alternating on
  and off ``--repeat`` times; the figure is the fastest run of each (the least disturbed
  by other processes), so the ratio is stable to about 1 %. (Setup offload modes only:
  without it no connection is born from a cookie, so there is nothing lazy to measure.)

    PYTHONPATH=src python benchmarks/lazy_tcb.py [--transactions 20000] [--repeat 5]
"""

import argparse
import json
import statistics
import sys
import time

from acceltcp.apps.echo import EchoLoad, EchoServer
from acceltcp.host.stack import HostStack
from acceltcp.io.sim import Link, SimLoop
from acceltcp.nic.dataplane import NicDataplane
from acceltcp.tcp.config import TcpConfig
from acceltcp.testbed.simnet import IP_A, IP_B, SimNet, SimNicDevice, make_pair

SECRET = b"lazy-tcb-bench!!"

MODES = {
    "setup + teardown offload": (True, True),
    "setup offload": (True, False),
    "no offload": (False, False),
}


def run(lazy, setup, teardown, transactions, seed, clients=64, size=64, warmup=1000):
    """One echo run (eval.echo_sim.run_echo's experiment) -> (host µs per transaction,
    the server's lazy-TCB counters)."""
    cfg = TcpConfig(time_wait=0.002)
    with SimLoop(seed) as loop:
        net = make_pair(loop, config_a=cfg, config_b=cfg, bandwidth_bps=10e9, delay=10e-6,
                        queue_limit=8192, seed=seed,
                        stack_b={"max_syn_backlog": 8192, "lazy_tcb": lazy},
                        nic_b=setup or teardown)
        EchoServer(net.b, 7, close_after=size, config=cfg, offload_setup=setup,
                   offload_teardown=teardown)
        load = EchoLoad(net.a, "198.18.0.2", 7, concurrency=clients, size=size, per_conn=1,
                        total=warmup + transactions, config=cfg)
        load.start()
        loop.run_until(lambda: load.transactions >= warmup, timeout=3600)
        runner = net.runner_b
        runner.cpu_accounting = True
        runner.reset_cpu()
        n0 = load.transactions
        loop.run_until(lambda: load.transactions >= warmup + transactions, timeout=3600)
        us = runner.cpu_ns / 1e3 / max(load.transactions - n0, 1)
        runner.cpu_accounting = False
        load.stop()
        c = net.b.counters
        lazy_counters = {k: v for k, v in c.items()
                         if k.startswith("tcb_") and v}
        return us, lazy_counters


class _Recorder:
    """The server's device, recording (time, frame) of every frame the stack receives."""

    def __init__(self, device, clock):
        self.device = device
        self.clock = clock
        self.log = []

    def set_receiver(self, callback):
        def receive(frame):
            self.log.append((self.clock(), bytes(frame)))
            callback(frame)
        self.device.set_receiver(receive if callback is not None else None)

    def __getattr__(self, name):
        return getattr(self.device, name)


class _NullNic:
    """A NIC device for the replay: takes the stack's frames and drops them."""

    nic = True
    syn_window = 65535

    def __init__(self, mac):
        self.mac = mac

    def send(self, frame):
        return True


def record(transactions, teardown=True, seed=1, clients=64, size=64):
    """The frames the server host receives in a setup (+ teardown) offload echo run,
    with the time of each: -> (server MAC, [(time, frame)], transactions done)."""
    cfg = TcpConfig(time_wait=0.002)
    with SimLoop(seed) as loop:
        link = Link(loop, bandwidth_bps=10e9, delay=10e-6, queue_limit=8192, seed=seed)
        dev = _Recorder(SimNicDevice(loop, link.b, NicDataplane(link.b.mac, secret=SECRET)),
                        loop.time)
        simnet = SimNet(loop, seed)
        a, _ = simnet.stack(link.a, IP_A, config=cfg, name="a")
        b, _ = simnet.stack(dev, IP_B, config=cfg, name="b", secret=SECRET,
                            max_syn_backlog=8192)
        EchoServer(b, 7, close_after=size, config=cfg, offload_setup=True,
                   offload_teardown=teardown)
        load = EchoLoad(a, IP_B, 7, concurrency=clients, size=size, per_conn=1,
                        total=transactions, config=cfg)
        load.start()
        loop.run_until(lambda: load.finished, timeout=3600)
        loop.run_for(1.0)
        return link.b.mac, dev.log, load.transactions


def replay(mac, log, lazy, teardown=True, size=64):
    """Feed `log` into a fresh server stack; -> (CPU ns, the stack's counters)."""
    cfg = TcpConfig(time_wait=0.002)
    now = [log[0][0]]
    stack = HostStack(_NullNic(mac), IP_B, lambda: now[0], config=cfg, secret=SECRET,
                      max_syn_backlog=8192, lazy_tcb=lazy, strict=True)
    EchoServer(stack, 7, close_after=size, config=cfg, offload_setup=True,
               offload_teardown=teardown)
    receive = stack.receive_frame
    deadline = stack.next_deadline
    timer = stack.on_timer
    t0 = time.process_time_ns()
    for t, frame in log:
        d = deadline()
        while d is not None and d <= t:
            now[0] = d
            timer()
            d = deadline()
        now[0] = t
        receive(frame)
    ns = time.process_time_ns() - t0
    return ns, stack.counters


def main_replay(args, mode):
    teardown = MODES[mode][1]
    mac, log, txns = record(args.transactions, teardown)
    on_ = args.lazy_on
    best = {on_: None, False: None}
    counters = {}
    for i in range(args.repeat):
        for lazy in (on_, False) if i % 2 == 0 else (False, on_):
            ns, c = replay(mac, log, lazy, teardown)
            if best[lazy] is None or ns < best[lazy]:
                best[lazy] = ns
            counters[lazy] = c
    assert counters[on_]["frames_out"] == counters[False]["frames_out"]
    on = best[on_] / 1e3 / txns
    off = best[False] / 1e3 / txns
    lazy_c = {k: v for k, v in counters[on_].items() if k.startswith("tcb_") and v}
    print(f"replay, {mode}, {txns} transactions, {len(log)} frames in: "
          f"lazy on {on:.2f} µs/txn, off {off:.2f} µs/txn, off/on {off / on:.3f} "
          f"(fastest of {args.repeat} each)")
    print(f"  counters (lazy on): {lazy_c}")
    return {"lazy_on_us_per_txn": on, "lazy_off_us_per_txn": off, "off_over_on": off / on,
            "frames_in": len(log), "transactions": txns, "lazy_counters": lazy_c}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transactions", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--modes", default=",".join(MODES),
                    help="comma-separated: " + ", ".join(MODES))
    ap.add_argument("--what", choices=("replay", "sim", "both"), default="both")
    ap.add_argument("--on", choices=("default", "always"), default="default",
                    help="lazy on is HostStack(lazy_tcb=True) (default: children of "
                         "listeners offloading teardown) or lazy_tcb='always'")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    args.lazy_on = True if args.on == "default" else "always"
    t0 = time.perf_counter()
    out = {}
    if args.what in ("replay", "both"):
        for mode in args.modes.split(","):
            if MODES[mode][0]:                       # the setup offload modes
                out["replay " + mode] = main_replay(args, mode)
    for mode in args.modes.split(",") if args.what != "replay" else ():
        setup, teardown = MODES[mode]
        on_ = args.lazy_on
        runs = {on_: [], False: []}
        counters = {}
        for i in range(args.repeat):
            for lazy in (on_, False) if i % 2 == 0 else (False, on_):
                us, c = run(lazy, setup, teardown, args.transactions, seed=i + 1)
                runs[lazy].append(us)
                if lazy:
                    counters = c
        on = statistics.median(runs[on_])
        off = statistics.median(runs[False])
        out[mode] = {"lazy_on_us_per_txn": on, "lazy_off_us_per_txn": off,
                     "off_over_on": off / on, "runs_on": runs[on_], "runs_off": runs[False],
                     "lazy_counters_last_run": counters}
        print(f"{mode:26s} lazy on {on:6.2f} µs/txn   off {off:6.2f} µs/txn   "
              f"off/on {off / on:.3f}   (on: {', '.join(f'{x:.1f}' for x in runs[on_])}; "
              f"off: {', '.join(f'{x:.1f}' for x in runs[False])})")
        print(f"{'':26s} counters (lazy on, last run): {counters}")
    out["lazy_on"] = args.lazy_on
    out["transactions"] = args.transactions
    out["repeat"] = args.repeat
    out["wall_s"] = time.perf_counter() - t0
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
