"""``acceltcp load {echo,kv}``: the apps' load clients as a command (the paper's msg_test).

    acceltcp load echo --sim                                  # 5 simulated seconds
    acceltcp load echo --sim --nic --offload setup,teardown --transactions 20000
    acceltcp load kv --sim --per-conn 0 --duration 2 --json kv.json
    acceltcp load echo --sim --server-cpu fixed:rx=8000 -n 5000  # same result every run
    ip netns exec atcp-peer python -m acceltcp.testbed.peer server echo --port 7 &
    acceltcp load echo 198.18.0.1 7 --duration 10             # the stack as client (root)
    ip netns exec atcp-peer redis-server --bind 0.0.0.0 --protected-mode no --save '' &
    acceltcp load kv 198.18.0.1                               # USR against real Redis

Theory of operation
-------------------
The workload is an application's own load client, unchanged: `apps.echo.EchoLoad`
(``--size``-byte messages echoed back) or `apps.kv.KvLoad` (the Facebook USR workload:
99.8 % GET, 0.2 % SET, 16-byte keys, 2-byte values, every key written first with MSET
batches, every reply checked against what was written). Both keep ``--concurrency``
connections busy, closed loop, each carrying ``--per-conn`` transactions (1: one
transaction per connection, the paper's short-lived case; 0: persistent) and opening the
next connection as one finishes. The client runs on the user-level stack in both modes:

* ``--sim``: everything in one process on a `io.sim.SimLoop` (virtual time). The client
  is stack a of a `testbed.simnet.make_pair`-like pair (`_sim_net`), the server app (`EchoServer`, `KvServer`) runs on
  stack b -- "the host" -- optionally behind the simulated NIC (``--nic``) with the
  listener's ``--offload setup,teardown`` (SYN cookies, teardown; AccelTCP §4.1-4.2).
  The server host is one CPU core in virtual time: `ServerCore` sits between the
  server stack and its device and models it -- a frame arriving while the core is busy
  waits in an RX ring until the CPU time the previous work took has passed on the
  virtual clock. What that work took is ``--server-cpu``'s model (`eval.cost`):
  ``charged`` (the default, for measurements) is the CPU the server's runner measures
  (``time.process_time`` around every frame and timer, application included, the NIC's
  work not, as `eval.echo_sim` does); ``fixed[:rx=NS,tx=NS,timer=NS,conn=NS]`` is a
  fixed price per frame received and sent, per timer entry and per accepted connection,
  so that the run is a pure function of ``--seed`` and the options, whatever else the
  machine is doing (tests). The client and the network cost nothing, so the server is
  the bottleneck (as in the paper's testbed, where many client machines load one server
  core) and transactions per simulated second are what this Python stack sustains on
  one core (charged) or what the model says (fixed): what an offload saves in CPU shows
  up as throughput. ``--server-cpu free``: processing takes no virtual time (the CPU is
  still measured and reported), the rate is the simulated link's (hundreds of thousands
  of transactions per simulated second, each costing real CPU to simulate: bound such
  runs with --transactions or a short --duration). The summary gives the server host's CPU µs and frames per transaction.
* without ``--sim``: the stack is a client on the TAP testbed (`serve.common.tap_host`,
  needs root and ``acceltcp testbed up``) against a server in the peer namespace: the
  kernel's (``python -m acceltcp.testbed.peer server echo --port 7``, ``redis-server``)
  or another stack's. Real time; the summary gives the client stack's CPU per transaction.

`LoadRun` drives a run the same way on either loop: after the kv keyspace is populated
(not measured), it takes a baseline and schedules a report every ``--interval`` seconds
of loop time (simulated seconds in the simulator): transactions and errors in the
interval, the rate, the mean latency. It stops issuing at ``--duration`` or after
``--transactions`` (whichever comes first: both loads issue exactly ``total``
requests), on SIGINT/SIGTERM, or when the load ends by itself; then drains: requests in
flight are answered and counted, connections close, for at most ``DRAIN_S`` seconds --
what is still open after that counts as ``unfinished at the end``. Elapsed time ends at
the later of the stop and the last answer. Connection errors (refused, reset, timeout,
closed before the reply, connect() failures) are counted by kind, never raised; slots
left empty by failed connects are refilled every ``REFILL_S``. Latencies go into a
log-bucketed histogram (0.5 % buckets: bounded memory, percentiles within 0.5 %).

Exit status: 0 when transactions completed without any error, 1 otherwise (the summary
says why), 2 for bad options or a testbed that cannot be set up.
"""

import argparse
import asyncio
import collections
import ipaddress
import json
import math
import os
import signal
import sys
import textwrap
import time

from ..tcp.config import TcpConfig
from .cost import CostModel, parse_cpu_model

__all__ = ["LoadRun", "LatencyHistogram", "ServerCore", "cmd_load", "add_load_parser",
           "DRAIN_S"]

DRAIN_S = 2.0          # after the stop: how long answers and closes may take
REFILL_S = 0.1         # re-open connection slots emptied by connect() failures
POLL_S = 0.002         # checks while populating and draining
POPULATE_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 3.0  # the first connection, alone: ARP resolution
RX_RING = 8192         # frames waiting for the simulated server core

DEFAULT_PORTS = {"echo": 7, "kv": 6379}


# ---------------------------------------------------------------------- latencies
class LatencyHistogram:
    """Latencies (seconds) in logarithmic buckets 0.5 % wide: exact count, mean, min and
    max; quantiles within half a bucket. Memory grows with the spread, not the count."""

    SCALE = 200.0                    # buckets per factor e: exp(1/200) = 1.005

    def __init__(self):
        self.buckets = collections.Counter()
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    def add_many(self, values):
        if not values:
            return
        b = self.buckets
        log = math.log
        s = self.SCALE
        for v in values:
            b[int(log(v * 1e9 if v > 1e-9 else 1.0) * s)] += 1
        self.count += len(values)
        self.total += sum(values)
        lo, hi = min(values), max(values)
        if lo < self.min:
            self.min = lo
        if hi > self.max:
            self.max = hi

    @property
    def mean(self):
        return self.total / self.count if self.count else None

    def quantile(self, q):
        """Nearest rank: the smallest latency with at least q of the samples at or
        below it (the bucket's middle, clamped to the extremes seen)."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for k in sorted(self.buckets):
            seen += self.buckets[k]
            if seen >= rank:
                v = math.exp((k + 0.5) / self.SCALE) / 1e9
                return min(max(v, self.min), self.max)
        return self.max


# ---------------------------------------------------------------------- the server core
class ServerCore:
    """The simulated server host as one CPU core in virtual time (``--server-cpu charged``
    or ``fixed``): a frame device between the server stack and its device (link end or
    NIC) -- the stack's device and its `StackRunner`'s. A frame is handed to the runner
    at once when the core is idle; the CPU that work took since the last hand-over (this
    frame, and the timers that ran in between) then keeps the core busy for that long on
    the virtual clock. Frames arriving meanwhile wait, in order, in an RX ring of
    ``ring`` frames (beyond: dropped, counted). Replies leave when the frame's
    processing starts (they are sent from inside it), so a transaction's latency misses
    its last frame's service time; throughput is exact: the core does one second of
    work per virtual second at most.

    What the work took: with ``cost=None`` (charged) the CPU the runner measured
    (``time.process_time``); with a `eval.cost.CostModel` (fixed) the model's price of
    the frames received and sent, the runner's timer entries and the connections
    ``connections()`` (set by `count_connections`) reports -- then the run does not
    depend on how fast the machine is."""

    def __init__(self, loop, device, cost=None, ring=RX_RING):
        self.device = device
        self.loop = loop
        self.cost = cost
        self.ring = ring
        self.runner = None
        self.queue = collections.deque()
        self.busy_until = 0.0
        self.busy_s = 0.0
        self.drops = 0
        self.max_queue = 0
        self.frames_in = 0
        self.frames_out = 0
        self._connections = None
        self._entry = None
        self._cpu_seen = 0
        self._drain_handle = None
        self._send = device.send
        if hasattr(device, "begin_batch"):
            self.begin_batch = device.begin_batch
            self.end_batch = device.end_batch
        device.set_receiver(self._from_device)

    def __getattr__(self, name):        # mac, nic, syn_window...: the device's
        if name.startswith("_") or "device" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["device"], name)

    def attach(self, runner):
        """Charge the work of `runner` (charged: its ``cpu_accounting`` is turned on)."""
        self.runner = runner
        if self.cost is None:
            runner.cpu_accounting = True
        self._cpu_seen = self.cpu_ns

    def count_connections(self, connections):
        """``connections()`` -> the connections accepted so far (the fixed model's
        ``conn`` term)."""
        self._connections = connections
        self._cpu_seen = self.cpu_ns

    @property
    def cpu_ns(self):
        """The CPU the core has done so far: measured (charged) or the model's (fixed)."""
        cost = self.cost
        if cost is None:
            return self.runner.cpu_ns if self.runner is not None else 0
        timers = self.runner.timer_fires if self.runner is not None else 0
        conns = self._connections() if self._connections is not None else 0
        return cost.ns(self.frames_in, self.frames_out, timers, conns)

    def set_receiver(self, callback):       # the runner's frame entry
        self._entry = callback

    def send(self, frame):                  # the stack's frames
        self.frames_out += 1
        return self._send(frame)

    def _from_device(self, frame):
        if self.queue or self.loop.time() < self.busy_until:
            if len(self.queue) >= self.ring:
                self.drops += 1
                return
            self.queue.append(frame)
            if len(self.queue) > self.max_queue:
                self.max_queue = len(self.queue)
            if self._drain_handle is None:
                self._drain_handle = self.loop.call_at(self.busy_until, self._drain)
            return
        self._run(frame)

    def _run(self, frame):
        entry = self._entry
        if entry is not None:
            self.frames_in += 1
            entry(frame)
        cpu = self.cpu_ns
        spent = (cpu - self._cpu_seen) * 1e-9
        self._cpu_seen = cpu
        self.busy_s += spent
        now = self.loop.time()
        self.busy_until = (self.busy_until if self.busy_until > now else now) + spent

    def _drain(self):
        self._drain_handle = None
        q = self.queue
        while q and self.loop.time() >= self.busy_until:
            self._run(q.popleft())
        if q:
            self._drain_handle = self.loop.call_at(self.busy_until, self._drain)

    def close(self):
        if self._drain_handle is not None:
            self._drain_handle.cancel()
            self._drain_handle = None
        self.device.set_receiver(None)


# ---------------------------------------------------------------------- the run
class LoadRun:
    """Drives `load` (an EchoLoad or KvLoad, not started) on `loop` and reports: see the
    module docstring. ``probe()`` -> dict of cumulative counters of the target (server
    CPU ns and frames in the simulator, the client stack's on the TAP), sampled at each
    report. ``out``: where the lines go (None: nowhere). Call `begin()`, run the loop
    until ``completed``, then `summary()`."""

    def __init__(self, loop, load, *, duration=None, transactions=None, interval=1.0,
                 out=sys.stdout, probe=None, per_txn=(), drain=DRAIN_S):
        self.loop = loop
        self.load = load
        self.duration = duration or None
        self.limit = transactions or None
        self.interval = interval
        self.out = out
        self.probe = probe or (lambda: {})
        self.per_txn = tuple(per_txn)        # (probe key, column title, scale)
        self.drain = drain
        self.phase = "idle"
        self.reason = None
        self.completed = False
        self.intervals = []
        self.hist = LatencyHistogram()
        self.extra_errors = collections.Counter()
        self.t0 = self.t_stop = self.t_last = self.t_end = None
        self.populate_s = None
        self.wall_s = None
        self._t_begin = None
        self._wall0 = None
        self._mark = None                    # (time, txns, errors, probe) of the last line
        self._base = None
        self._final = None
        self._handles = {}
        self._future = None
        self._launched = False
        self._n0 = 0
        self.notes = []
        load.on_progress = self._on_txn
        if hasattr(load, "on_populated"):
            load.on_populated = self._on_populated
        load.progress_every = 1

    # ------------------------------------------------------------------ control
    def begin(self, future=False):
        """Start the load; with `future` also return a future done at completion."""
        if future:
            self._future = self.loop.create_future()
        self._t_begin = self.loop.time()
        load = self.load
        if getattr(load, "populated", True) and \
                load.stack.arp_lookup(load.server_ip) is None:
            self._resolve()
        else:
            self._launch()
        return self._future

    def _resolve(self):
        """The server's MAC first, with one connection: the stack queues only a few
        frames per unresolved neighbour, so --concurrency SYNs at once would mostly be
        dropped and wait for their 1 s retransmission. (A kv load resolves it with its
        populate connection.) Whatever the probe meets, the load meets next and counts."""
        self.phase = "resolve"
        load = self.load
        stack = load.stack
        try:
            conn = stack.connect(load.server_ip, load.port, config=load.config)
        except OSError:
            self._launch()
            return

        def on_event(c):
            if self.phase != "resolve":
                return
            if c.error is None and not c.writable:
                return
            if c.error is None and not c.fin_queued and not c.closed:
                stack.close(c)
            self.loop.call_soon(self._launch)
            self.phase = "populate"
        stack.attach(conn, on_event)
        self._later("poll", PROBE_TIMEOUT_S, self._probe_timeout)

    def _probe_timeout(self):
        if self.phase == "resolve":
            self.notes.append("no answer from %s:%d within %.0f s (ARP, handshake): "
                              "starting anyway" % (self.load.server_ip, self.load.port,
                                                   PROBE_TIMEOUT_S))
            sys.stderr.write("acceltcp load: %s\n" % self.notes[-1])
            self._launch()

    def _launch(self):
        if self.phase not in ("idle", "resolve", "populate") or self._launched:
            return
        self._launched = True
        h = self._handles.pop("poll", None)
        if h is not None:
            h.cancel()
        self.phase = "populate"
        self.load.start()
        if getattr(self.load, "populated", True):
            self._start()
        else:
            self._later("poll", POLL_S, self._populate_poll)

    def request_stop(self, reason):
        """Stop issuing (deadline, signal...) and drain; a second request ends at once."""
        if self.phase == "run":
            self._stop(reason)
        elif self.phase in ("resolve", "populate", "drain"):
            self.reason = self.reason or reason
            self._finish()

    def _later(self, name, delay, fn, *args):
        self._at(name, self.loop.time() + delay, fn, *args)

    def _at(self, name, when, fn, *args):
        h = self._handles.pop(name, None)
        if h is not None:
            h.cancel()
        self._handles[name] = self.loop.call_at(when, self._fire, name, fn, args)

    def _fire(self, name, fn, args):
        self._handles.pop(name, None)
        fn(*args)

    def _cancel_all(self):
        for h in self._handles.values():
            h.cancel()
        self._handles.clear()

    def _on_populated(self, load):
        """KvLoad: the keys are written, the transactions' connections open next."""
        if self.phase == "populate":
            h = self._handles.pop("poll", None)
            if h is not None:
                h.cancel()
            self.populate_s = self.loop.time() - self._t_begin
            self._start()

    def _populate_poll(self):
        load = self.load
        if load.populated:                    # (without an on_populated hook)
            self._on_populated(load)
        elif load.finished:
            self.reason = "populate failed"
            self._finish()
        elif self.loop.time() - self._t_begin > POPULATE_TIMEOUT_S:
            self.extra_errors["populate: no answer in %.0f s" % POPULATE_TIMEOUT_S] += 1
            self.reason = "populate failed"
            self._finish()
        else:
            self._later("poll", POLL_S, self._populate_poll)

    def _sample(self):
        return (self.loop.time(), self.load.transactions,
                sum(self.load.errors.values()), self.probe())

    def _start(self):
        self.phase = "run"
        self.t0 = self.loop.time()
        self._wall0 = time.perf_counter()
        del self.load.latencies[:]            # the populate phase is not measured
        self._base = self._mark = self._sample()
        self._n0 = self.load.transactions
        self._schedule_tick(1)
        if self.duration is not None:
            self._at("deadline", self.t0 + self.duration, self._stop, "duration")
        self._later("refill", REFILL_S, self._refill)

    def _schedule_tick(self, k):
        when = self.t0 + k * self.interval
        if self.duration is not None and when >= self.t0 + self.duration - 1e-9:
            return                            # the final line covers the rest
        self._at("tick", when, self._tick, k)

    def _tick(self, k):
        if self.phase != "run":
            return
        self._line(self._sample())
        self._schedule_tick(k + 1)

    def _refill(self):
        if self.phase != "run":
            return
        load = self.load
        if load.finished:                      # stopped by itself (all issued, answered)
            self._stop("transactions" if self.limit is not None else "load ended")
            return
        load.refill()
        self._later("refill", REFILL_S, self._refill)

    def _on_txn(self, load):
        self.t_last = self.loop.time()
        if self.limit is not None and self.phase == "run" and \
                load.transactions - self._n0 >= self.limit:
            self._stop("transactions")

    def _stop(self, reason):
        if self.phase != "run":
            return
        self.phase = "drain"
        self.reason = reason
        self.t_stop = self.loop.time()
        self.load.stop()
        for name in ("tick", "deadline", "refill"):
            h = self._handles.pop(name, None)
            if h is not None:
                h.cancel()
        self._drain_poll()

    def _drain_poll(self):
        if self.phase != "drain":
            return
        if self.load.finished or self.loop.time() >= self.t_stop + self.drain:
            self._finish()
        else:
            self._later("poll", POLL_S, self._drain_poll)

    def _finish(self):
        if self.completed:
            return
        self._cancel_all()
        was_measuring = self.phase in ("run", "drain")
        self.phase = "done"
        load = self.load
        if not load.finished:
            load.stop()
            if was_measuring and load.active:
                self.extra_errors["unfinished at the end"] += load.active
        if was_measuring:
            if self.t_stop is None:
                self.t_stop = self.loop.time()
            t_last = self.t_last if self.t_last is not None and self.t_last > self.t0 else self.t0
            self.t_end = max(self.t_stop, t_last)
            self.wall_s = time.perf_counter() - self._wall0
            final = self._sample()
            self._final = final
            self._line(final, t_to=max(self.t_end, self._mark[0]), final=True)
        self.completed = True
        if self._future is not None and not self._future.done():
            self._future.set_result(None)

    # ------------------------------------------------------------------ report
    def header(self):
        cols = ["%9s" % "time s", "%10s" % "txns", "%11s" % "txn/s", "%7s" % "errors",
                "%10s" % "lat us"]
        cols += ["%12s" % title for _, title, _ in self.per_txn]
        self.say("".join(cols))

    def say(self, text):
        """A line of the report (to ``out``)."""
        if self.out is not None:
            print(text, file=self.out, flush=True)

    def _line(self, sample, t_to=None, final=False):
        t_from, n_from, e_from, p_from = self._mark
        now, n, e, p = sample
        t_to = now if t_to is None else t_to
        lat = self.load.latencies
        chunk = lat[:]
        del lat[:]
        self.hist.add_many(chunk)
        dt = t_to - t_from
        txns = n - n_from
        if final and txns == 0 and e == e_from and dt < 1e-9:
            return                             # nothing left after the last line
        row = {"t": round(t_to - self.t0, 6), "seconds": round(dt, 6), "transactions": txns,
               "tps": txns / dt if dt > 0 else 0.0, "errors": e - e_from,
               "latency_us_mean": 1e6 * sum(chunk) / len(chunk) if chunk else None}
        for key, _title, scale in self.per_txn:
            d = p.get(key, 0) - p_from.get(key, 0)
            row[key + "_per_txn"] = d * scale / txns if txns else None
        self.intervals.append(row)
        self._mark = (t_to, n, e, p)
        cols = ["%9.2f" % row["t"], "%10d" % txns, "%11s" % _int(row["tps"]),
                "%7d" % row["errors"],
                "%10s" % (_int(row["latency_us_mean"]) if chunk else "-")]
        for key, _title, _scale in self.per_txn:
            v = row[key + "_per_txn"]
            cols.append("%12s" % ("-" if v is None else "%.2f" % v))
        self.say("".join(cols))

    def summary(self):
        """The run as a JSON-able dict (None-valued fields when nothing was measured)."""
        load = self.load
        errors = collections.Counter(load.errors)
        errors.update(self.extra_errors)
        measured = self.t_end is not None
        txns = load.transactions - self._n0 if measured else 0
        elapsed = self.t_end - self.t0 if measured else 0.0
        h = self.hist
        out = {"transactions": txns, "elapsed_s": elapsed,
               "tps": txns / elapsed if elapsed > 0 else 0.0,
               "connections": load.connections, "stopped_by": self.reason,
               "errors": dict(sorted(errors.items())), "errors_total": sum(errors.values()),
               "latency_us": {"mean": _us(h.mean), "p50": _us(h.quantile(0.5)),
                              "p99": _us(h.quantile(0.99)), "min": _us(h.min if h.count
                                                                      else None),
                              "max": _us(h.max if h.count else None), "samples": h.count},
               "intervals": self.intervals, "wall_s": self.wall_s,
               "populate_s": self.populate_s, "notes": self.notes}
        if measured:
            p0, p1 = self._base[3], self._final[3]
            out["counters"] = {k: p1[k] - p0.get(k, 0) for k in p1}
        return out


def _us(seconds):
    return None if seconds is None else seconds * 1e6


def _int(x):
    return "-" if x is None else "{:,.0f}".format(x)


# ---------------------------------------------------------------------- targets
def _loads(args, stack, server_ip, port, config):
    """The app's load client on `stack` (not started)."""
    total = args.transactions or None
    if args.app == "echo":
        from ..apps.echo import EchoLoad
        return EchoLoad(stack, server_ip, port, concurrency=args.concurrency, size=args.size,
                        per_conn=args.per_conn, total=total, config=config)
    from ..apps.kv import KvLoad
    return KvLoad(stack, server_ip, port, concurrency=args.concurrency,
                  per_conn=args.per_conn, total=total, keys=args.keys,
                  get_ratio=args.get_ratio, key_size=args.key_size,
                  value_size=args.value_size, seed=args.seed, config=config)


def _describe(args):
    if args.per_conn == 1:
        per = "1 per connection (short-lived)"
    elif args.per_conn == 0:
        per = "persistent connections"
    else:
        per = "%d per connection" % args.per_conn
    if args.app == "echo":
        what = "%d B messages" % args.size
    else:
        what = "USR workload (%.1f %% GET, %d keys of %d B, %d B values)" % (
            100 * args.get_ratio, args.keys, args.key_size, args.value_size)
    bound = []
    if args.duration:
        bound.append("%g s" % args.duration)
    if args.transactions:
        bound.append("%d transactions" % args.transactions)
    return "%s, %s, %d connections, for %s" % (what, per, args.concurrency,
                                                " or ".join(bound))


def _sim_net(loop, args, cfg):
    """The two stacks on one simulated link, as `testbed.simnet.make_pair` builds them (same
    seeds, secrets and link), except that with a server core (``--server-cpu charged``
    or ``fixed``) the `ServerCore` is the server stack's device, so that it sees every
    frame the stack receives and sends. -> SimpleNamespace(a, b, link, nic_b, runner_b,
    core)."""
    import hashlib
    import types

    from ..testbed.simnet import IP_A, IP_B, SimNet, SimNicDevice
    from ..io.sim import Link
    from ..nic.dataplane import NicDataplane

    sim = SimNet(loop, args.seed)
    link = Link(loop, bandwidth_bps=args.link_gbps * 1e9, delay=args.link_delay_us * 1e-6,
                queue_limit=8192, seed=args.seed)
    nic = None
    device = link.b
    if args.sim_nic:
        secret = hashlib.blake2s(("%s:nic-b" % args.seed).encode(), digest_size=16).digest()
        nic = device = SimNicDevice(loop, link.b, NicDataplane(link.b.mac, secret=secret))
    core = None
    if args.server_cpu != "free":
        core = device = ServerCore(loop, device, cost=args.cost_model)
    a, _ = sim.stack(link.a, IP_A, config=cfg, name="a", strict=True)
    b, runner_b = sim.stack(device, IP_B, config=cfg, name="b", strict=True,
                            max_syn_backlog=max(8192, 2 * args.concurrency))
    a.arp_add(b.ip, b.mac)
    b.arp_add(a.ip, a.mac)
    if core is not None:
        core.attach(runner_b)
    else:
        runner_b.cpu_accounting = True      # measured and reported, not charged
    return types.SimpleNamespace(a=a, b=b, link=link, nic_b=nic, runner_b=runner_b,
                                 core=core)


def _run_sim(args, offloads):
    """--sim: -> the summary dict."""
    from ..testbed.simnet import IP_B
    from ..io.sim import SimLoop

    cfg = TcpConfig(time_wait=args.time_wait, rcv_buf=args.rcv_buf, snd_buf=args.snd_buf)
    port = DEFAULT_PORTS[args.app] if args.port is None else args.port
    backlog = max(4096, 2 * args.concurrency)
    with SimLoop(args.seed) as loop:
        net = _sim_net(loop, args, cfg)
        pcap = None
        if args.pcap:
            from ..io.pcap import PcapWriter
            pcap = PcapWriter(args.pcap)
            net.link.capture(pcap)
        core = net.core
        runner = net.runner_b
        kw = {"offload_" + name: True for name in offloads}
        if args.app == "echo":
            from ..apps.echo import EchoServer
            server = EchoServer(net.b, port, backlog=backlog, config=cfg,
                                close_after=args.size * args.per_conn, **kw)
        else:
            from ..apps.kv import KvServer
            server = KvServer(net.b, port, backlog=backlog, config=cfg, **kw)
        if core is not None:
            core.count_connections(lambda: server.accepted)
        load = _loads(args, net.a, IP_B, port, cfg)
        b = net.b

        def probe():
            c = b.counters
            p = {"server_cpu_ns": runner.cpu_ns if core is None else core.cpu_ns,
                 "server_frames_in": c["frames_in"],
                 "server_frames_out": c["frames_out"],
                 "server_frames": c["frames_in"] + c["frames_out"]}
            if core is not None:
                p["server_core_busy_s"] = core.busy_s
                p["server_core_frames_in"] = core.frames_in
                p["server_core_frames_out"] = core.frames_out
                p["server_core_timer_entries"] = runner.timer_fires
                p["server_core_connections"] = server.accepted
            return p

        out = None if args.quiet else sys.stdout
        run = LoadRun(loop, load, duration=args.duration, transactions=args.transactions,
                      interval=args.interval, out=out, probe=probe,
                      per_txn=(("server_cpu_ns", "srv us/txn", 1e-3),))
        place = "behind the simulated NIC (offloads: %s)" % (", ".join(offloads) or "none") \
            if args.sim_nic else "without a NIC"
        cpu = {"charged": "its measured CPU charged to virtual time (one core)",
               "fixed": "one core, its CPU a fixed cost model (%s)" % (
                   args.cost_model.spec() if args.cost_model else ""),
               "free": "its CPU free (virtual time is the network's)"}[args.server_cpu]
        run.say("acceltcp load %s --sim: %s, in simulated time; server: %s on %s:%d, %s, "
                "%s" % (args.app, _describe(args), type(server).__name__, IP_B, port, place,
                        cpu))
        run.header()
        interrupted = []

        def on_signal(signum, frame):
            interrupted.append(signum)

        old = {}
        try:
            for s in (signal.SIGINT, signal.SIGTERM):
                old[s] = signal.signal(s, on_signal)
        except ValueError:                  # not the main thread: no signal handling
            pass
        try:
            run.begin()
            while not run.completed:
                loop.run_until(lambda: run.completed or interrupted)
                if interrupted:
                    interrupted.clear()
                    run.request_stop("signal")
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        # The last closes (FIN handshakes, TIME-WAITs) before the servers' counters are
        # read; the measured counters were sampled when the run ended.
        for _ in range(100):
            if not net.a.counters["conns_live"] and not net.b.counters["conns_live"]:
                break
            loop.run_for(0.01)
        summary = _common_summary(args, run)
        txns = summary["transactions"]
        d = summary.get("counters", {})
        summary["mode"] = "sim"
        summary["server"] = {
            "app": type(server).__name__, "ip": IP_B, "port": port, "nic": bool(args.sim_nic),
            "offloads": list(offloads), "cpu_model": (
                args.cost_model.spec() if args.cost_model else args.server_cpu),
            "cpu_s": d.get("server_cpu_ns", 0) / 1e9,
            "cpu_us_per_txn": _per(d.get("server_cpu_ns", 0) / 1e3, txns),
            "frames_in": d.get("server_frames_in", 0), "frames_out": d.get("server_frames_out", 0),
            "frames_per_txn": _per(d.get("server_frames", 0), txns),
            "app_stats": (server.stats() if args.app == "kv" else
                          {"accepted": server.accepted, "bytes_echoed": server.bytes_echoed}),
        }
        if core is not None:
            busy = d.get("server_core_busy_s", 0.0)
            summary["server"]["core"] = {
                "busy_s": busy, "utilization": _per(busy, summary["elapsed_s"]),
                "rx_ring_drops": core.drops, "rx_ring_max": core.max_queue}
            # the work the core did in the run, what the fixed model prices
            for k in ("frames_in", "frames_out", "timer_entries", "connections"):
                summary["server"]["core"][k] = d.get("server_core_" + k, 0)
            if core.drops:
                summary["errors"]["server RX ring overflow (frames)"] = core.drops
                summary["errors_total"] += core.drops
        if net.nic_b is not None:
            summary["server"]["nic_counters"] = {k: v for k, v in
                                                 net.nic_b.dataplane.counters.items() if v}
        summary["link"] = {"gbps": args.link_gbps, "delay_us": args.link_delay_us}
        summary["client"] = _client_counters(net.a)
        if core is not None:
            core.close()
        if pcap is not None:
            pcap.close()
    if not args.quiet:
        _print_summary(summary, args)
    return summary


def _client_counters(stack):
    c = stack.counters
    out = {k: c.get(k, 0) for k in ("conns_opened", "conns_closed", "conns_reset",
                                    "conns_refused", "conns_timeout", "retransmits",
                                    "rto_timeouts", "frames_in", "frames_out")}
    out["drops"] = {k: v for k, v in stack.drops.items() if v}
    return out


def _per(total, txns):
    return total / txns if txns else None


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def _run_tap(args, offloads):
    """The stack as a client on the TAP testbed: -> summary dict, or None (no testbed)."""
    from ..serve.common import print_ready, stats_snapshot, tap_host, write_json

    loop, host = tap_host(args)
    if host is None:
        return None
    stack = host.stack
    port = DEFAULT_PORTS[args.app] if args.port is None else args.port
    cfg = TcpConfig(time_wait=args.time_wait, rcv_buf=args.rcv_buf, snd_buf=args.snd_buf)
    summary = None
    try:
        load = _loads(args, stack, args.host, port, cfg)
        runner = host.runner

        def probe():
            c = stack.counters
            return {"client_cpu_ns": runner.cpu_ns, "client_frames_in": c["frames_in"],
                    "client_frames_out": c["frames_out"],
                    "client_frames": c["frames_in"] + c["frames_out"]}

        out = None if args.quiet else sys.stdout
        run = LoadRun(loop, load, duration=args.duration, transactions=args.transactions,
                      interval=args.interval, out=out, probe=probe)
        run.say("acceltcp load %s -> %s:%d from %s on %s (netns %s): %s" % (
            args.app, args.host, port, host.stack_ip, host.tap.name, host.netns,
            _describe(args)))
        run.header()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, run.request_stop, "signal")
        print_ready(app=args.app, host=args.host, port=port, tap=host.tap.name, netns=host.netns,
                    offload=args.offload, pid=os.getpid())
        try:
            loop.run_until_complete(run.begin(future=True))
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        # Let the last closes finish (FIN handshakes) so the server sees clean closes.
        end = loop.time() + 1.0
        while stack.counters["conns_live"] and loop.time() < end:
            loop.run_until_complete(asyncio.sleep(0.01))
        summary = _common_summary(args, run)
        txns = summary["transactions"]
        d = summary.get("counters", {})
        summary["mode"] = "tap"
        summary["target"] = {"host": args.host, "port": port}
        summary["client"] = dict(_client_counters(stack), **{
            "ip": host.stack_ip, "tap": host.tap.name, "netns": host.netns,
            "cpu_s": d.get("client_cpu_ns", 0) / 1e9,
            "cpu_us_per_txn": _per(d.get("client_cpu_ns", 0) / 1e3, txns),
            "frames_per_txn": _per(d.get("client_frames", 0), txns)})
        if args.stats_file:
            write_json(args.stats_file, stats_snapshot(host, {"command": "load",
                                                              "result": summary}))
    finally:
        host.close()
        loop.close()
    if not args.quiet:
        _print_summary(summary, args)
    return summary


def _common_summary(args, run):
    s = run.summary()
    s["command"] = "load"
    s["app"] = args.app
    s["options"] = {"per_conn": args.per_conn, "concurrency": args.concurrency,
                    "duration_s": args.duration or None,
                    "transactions": args.transactions or None, "interval_s": args.interval,
                    "time_wait_s": args.time_wait}
    if args.app == "echo":
        s["options"]["size"] = args.size
    else:
        load = run.load
        s["options"].update(keys=args.keys, key_size=args.key_size,
                            value_size=args.value_size, get_ratio=args.get_ratio,
                            seed=args.seed)
        s["kv"] = {"gets": load.gets, "sets": load.sets, "hits": load.hits,
                   "misses": load.misses}
    return s


def _print_summary(s, args):
    lat = s["latency_us"]
    where = ("%.3f s simulated, %.1f s wall" % (s["elapsed_s"], s["wall_s"] or 0.0)
             if s["mode"] == "sim" else "%.3f s" % s["elapsed_s"])
    lines = ["summary: %s transactions in %s: %s txn/s (stopped by %s)" % (
        "{:,}".format(s["transactions"]), where, _int(s["tps"]), s["stopped_by"])]
    lines.append("  connections opened %s; errors: %s" % (
        "{:,}".format(s["connections"]),
        ", ".join("%s %d" % kv for kv in s["errors"].items()) if s["errors"] else "none"))
    if lat["samples"]:
        lines.append("  latency us: mean %s  p50 %s  p99 %s  max %s" % (
            _int(lat["mean"]), _int(lat["p50"]), _int(lat["p99"]), _int(lat["max"])))
    if "kv" in s:
        k = s["kv"]
        lines.append("  kv: %d GET (%d hits, %d misses), %d SET" % (
            k["gets"], k["hits"], k["misses"], k["sets"]))
    if s["mode"] == "sim":
        sv = s["server"]
        lines.append("  server host: %s us CPU/txn, %s frames/txn (%d in, %d out)%s" % (
            _fmt(sv["cpu_us_per_txn"], ".1f"), _fmt(sv["frames_per_txn"], ".2f"),
            sv["frames_in"], sv["frames_out"],
            "; NIC offloads: %s" % ", ".join(sv["offloads"]) if sv["nic"] else ""))
    else:
        c = s["client"]
        lines.append("  client stack: %s us CPU/txn, %s frames/txn; retransmits %d%s" % (
            _fmt(c["cpu_us_per_txn"], ".1f"), _fmt(c["frames_per_txn"], ".2f"),
            c["retransmits"], "; drops: " + ", ".join(
                "%s %d" % kv for kv in sorted(c["drops"].items())) if c["drops"] else ""))
    print("\n".join(lines), flush=True)


def _exit_status(summary):
    return 0 if summary["transactions"] > 0 and not summary["errors_total"] else 1


# ---------------------------------------------------------------------- command
def cmd_load(args) -> int:
    """Closed-loop load from the stack: --concurrency connections, --per-conn
    transactions each; transactions/s once a second, a summary at the end."""
    from ..serve.apps import APPS
    from ..serve.common import app_offload_kwargs, parse_offloads

    err = args._parser.error
    _check_options(args, err)
    offloads = ()
    if args.sim:
        try:
            wanted = parse_offloads(args.nic_offload if args.nic_offload is not None else
                                    ("setup" if args.sim_nic else "none"))
        except ValueError as e:
            err("--offload: %s" % e)
        if wanted and not args.sim_nic:
            err("--offload %s needs the simulated NIC: add --nic" % ",".join(wanted))
        kw, unused = app_offload_kwargs(APPS[args.app], wanted)
        for name, why in unused.items():
            print("acceltcp load: offload %s not used: %s" % (name, why), file=sys.stderr)
        offloads = tuple(n for n in wanted if "offload_" + n in kw)
    if args.time_wait is None:
        args.time_wait = 0.002 if args.sim else 1.0
    summary = _run_sim(args, offloads) if args.sim else _run_tap(args, offloads)
    if summary is None:
        return 2
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
            f.write("\n")
    if not summary["transactions"] and not args.sim:
        where = "%s:%s" % (args.host, summary["target"]["port"])
        if summary["errors"].get("refused"):
            print("acceltcp load: every connection was refused: is a server listening on "
                  "%s in the namespace %s?" % (where, args.netns), file=sys.stderr)
        elif summary["errors"].get("unfinished at the end"):
            print("acceltcp load: no answer from %s: is it an address in the namespace %s "
                  "(%s/24), and up?" % (where, args.netns, args.peer_ip), file=sys.stderr)
    return _exit_status(summary)


def _check_options(args, err):
    """Option errors -> `err(message)` (argparse: usage, message, exit 2)."""
    if args.sim:
        if args.host is not None:
            err("--sim runs the server in the simulator: no HOST/PORT (got %s)" % args.host)
        if args.stats_file:
            err("--stats-file is the TAP stack's counters; with --sim use --json")
    else:
        if args.host is None:
            err("HOST is required (the server, e.g. 198.18.0.1 in the testbed's peer "
                "namespace), or --sim to run the server in the simulator")
        try:
            ipaddress.IPv4Address(args.host)
        except ValueError:
            err("HOST must be an IPv4 address, got %r" % args.host)
        for opt, given in (("--nic", args.sim_nic), ("--offload", args.nic_offload is not None),
                           ("--server-cpu", args.server_cpu_text is not None)):
            if given:
                err("%s is for --sim (on the TAP the server is whatever listens at HOST; "
                    "`acceltcp serve --nic` runs the stack's own server behind the NIC)" % opt)
    try:
        args.server_cpu, args.cost_model = parse_cpu_model(args.server_cpu_text or "charged")
    except ValueError as e:
        err("--server-cpu: %s" % e)
    if args.per_conn < 0:
        err("--per-conn must be >= 0 (1: short-lived, 0: persistent), got %d" % args.per_conn)
    if args.concurrency < 1:
        err("--concurrency must be >= 1, got %d" % args.concurrency)
    if args.duration is not None and args.duration < 0:
        err("--duration must be >= 0 seconds, got %g" % args.duration)
    if args.transactions < 0:
        err("--transactions must be >= 0, got %d" % args.transactions)
    if args.duration is None:
        args.duration = 0.0 if args.transactions else 5.0
    if not args.duration and not args.transactions:
        err("nothing bounds the run: give --duration S > 0 and/or --transactions N > 0")
    if not args.interval > 0:
        err("--interval must be > 0 seconds, got %g" % args.interval)
    if args.time_wait is not None and args.time_wait < 0:
        err("--time-wait must be >= 0 seconds")
    for opt, path in (("--json", args.json), ("--pcap", args.pcap),
                      ("--stats-file", args.stats_file)):
        if path:
            d = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(d) or not os.access(d, os.W_OK):
                err("%s %s: cannot write in %s" % (opt, path, d))
    if not args.link_gbps > 0 or args.link_delay_us < 0:
        err("--link-gbps must be > 0 and --link-delay-us >= 0")
    if args.app == "echo":
        if not 1 <= args.size <= args.snd_buf:
            err("--size must be 1..%d bytes (the send buffer, --snd-buf), got %d"
                % (args.snd_buf, args.size))
    else:
        if not 0.0 <= args.get_ratio <= 1.0:
            err("--get-ratio must be within 0..1, got %g" % args.get_ratio)
        if args.keys < 1:
            err("--keys must be >= 1, got %d" % args.keys)
        if args.value_size < 1:
            err("--value-size must be >= 1, got %d" % args.value_size)
        if not 5 <= args.key_size <= 512:
            err("--key-size must be 5..512 bytes, got %d" % args.key_size)
        if args.key_size - 4 < len(str(args.keys - 1)):
            err("--key-size %d is too short for %d keys (\"usr:\" + %d digits)"
                % (args.key_size, args.keys, len(str(args.keys - 1))))


def _port(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("PORT must be a number, got %r" % text) from None
    if not 0 < n < 65536:
        raise argparse.ArgumentTypeError("PORT must be 1..65535, got %d" % n)
    return n


_EPILOG = {
    "echo": """examples:
  acceltcp load echo --sim                              short-lived 64 B echo, 5 sim. s
  acceltcp load echo --sim --per-conn 0 --transactions 50000     persistent
  acceltcp load echo --sim --nic --offload setup,teardown --json out.json
  ip netns exec atcp-peer python -m acceltcp.testbed.peer server echo --port 7 &
  acceltcp load echo 198.18.0.1 7 --duration 10         against the kernel (root)
""",
    "kv": """examples:
  acceltcp load kv --sim                                USR, one transaction/connection
  acceltcp load kv --sim --nic --offload setup,teardown --per-conn 0
  ip netns exec atcp-peer redis-server --bind 0.0.0.0 --protected-mode no --save '' &
  acceltcp load kv 198.18.0.1 6379 --duration 10        against Redis (root)
""",
}


def add_load_parser(sub):
    from ..serve.commands import add_tap_arguments, profiled

    top = sub.add_parser(
        "load", help="load client (echo, kv): transactions/s each second, a summary",
        description="The apps' load clients on the stack: the paper's msg_test (echo) and "
                    "the Facebook USR workload (kv), in the simulator (--sim, virtual "
                    "time, the server on a second stack) or on the TAP testbed against a "
                    "server in the peer namespace. `acceltcp load APP --help` for the "
                    "options.")
    apps = top.add_subparsers(dest="app", metavar="APP", required=True)
    helps = {"echo": "echo transactions of --size bytes (msg_test; server: an echo server)",
             "kv": "Facebook USR key-value workload: 99.8 % GET, 0.2 % SET, 16 B keys, "
                   "2 B values, replies checked (server: Redis or `acceltcp serve kv`)"}
    for app in ("echo", "kv"):
        p = apps.add_parser(
            app, help=helps[app].replace("%", "%%"), epilog=_EPILOG[app],
            formatter_class=argparse.RawDescriptionHelpFormatter,
            description="\n\n".join(textwrap.fill(t, 79) for t in (
                helps[app] + ". --concurrency connections, closed loop, --per-conn "
                "transactions each (1: one per connection, the paper's short-lived case; "
                "0: persistent).",
                "Prints per interval (default 1 s of loop time: simulated seconds with "
                "--sim) the elapsed time, transactions, transactions/s, errors and mean "
                "latency; then a summary: totals, rate, latency p50/p99, errors by kind; "
                "with --sim the server host's CPU us and frames per transaction, on the "
                "TAP the client stack's.",
                "Exit status 0: transactions and no errors; 1: errors, or nothing done; "
                "2: bad options or no testbed.")))
        p.add_argument("host", nargs="?", metavar="HOST",
                       help="server address in the peer namespace (without --sim), e.g. "
                            "198.18.0.1")
        p.add_argument("port", nargs="?", type=_port, metavar="PORT",
                       help="server port (%d)" % DEFAULT_PORTS[app])
        w = p.add_argument_group("workload")
        if app == "echo":
            w.add_argument("--size", type=int, default=64, metavar="BYTES",
                           help="message size (%(default)s)")
        else:
            w.add_argument("--keys", type=int, default=1000, metavar="N",
                           help="keys, all written (MSET) before the run (%(default)s)")
            w.add_argument("--key-size", type=int, default=16, metavar="BYTES",
                           help="key length; USR keys are < 20 B (%(default)s)")
            w.add_argument("--value-size", type=int, default=2, metavar="BYTES",
                           help="SET value length (%(default)s)")
            w.add_argument("--get-ratio", type=float, default=0.998, metavar="P",
                           help="share of GETs, the rest SETs (%(default)s)")
        w.add_argument("--per-conn", type=int, default=1, metavar="N",
                       help="transactions per connection: 1 short-lived, 0 persistent "
                            "(%(default)s)")
        w.add_argument("-c", "--concurrency", type=int, default=64, metavar="C",
                       help="connections in flight (%(default)s)")
        w.add_argument("--seed", type=int, default=1,
                       help="simulator and workload seed (%(default)s)")
        w.add_argument("--time-wait", type=float, default=None, metavar="S",
                       help="2*MSL of the stack's connections: the client's TIME-WAIT "
                            "holds its ephemeral ports (default 1 s on the TAP; 0.002 s "
                            "with --sim, both stacks, as `acceltcp bench`)")
        r = p.add_argument_group("run and report")
        r.add_argument("-d", "--duration", type=float, default=None, metavar="S",
                       help="stop issuing after S seconds (loop time; default 5, or no "
                            "limit when --transactions is given; 0: no limit)")
        r.add_argument("-n", "--transactions", type=int, default=0, metavar="N",
                       help="stop after N transactions (0: no limit); with --duration, "
                            "whichever comes first")
        r.add_argument("--interval", type=float, default=1.0, metavar="S",
                       help="seconds between report lines (%(default)s)")
        r.add_argument("-q", "--quiet", action="store_true",
                       help="no report lines nor summary on stdout (use --json)")
        r.add_argument("--json", metavar="FILE",
                       help="write the summary (totals, per-interval rows, errors, CPU and "
                            "frame counts) as JSON")
        s = p.add_argument_group("simulator (--sim)")
        s.add_argument("--sim", action="store_true",
                       help="run client and server in the simulator (virtual time); the "
                            "server app runs on a second stack. Both stacks run in this "
                            "process: a simulated second of a saturated server takes a "
                            "few seconds of real time")
        s.add_argument("--nic", dest="sim_nic", action="store_true",
                       help="put the simulated AccelTCP NIC in front of the server")
        s.add_argument("--offload", dest="nic_offload", metavar="LIST",
                       help="what the server offloads to the NIC: setup (SYN cookies), "
                            "teardown, or none; comma list (default with --nic: setup)")
        s.add_argument("--server-cpu", dest="server_cpu_text", metavar="MODEL",
                       help="charged (the default): the server host is one core whose "
                            "measured CPU time passes on the virtual clock, so the rate "
                            "is what it sustains on this machine; fixed[:rx=NS,tx=NS,"
                            "timer=NS,conn=NS]: one core whose work costs fixed ns per "
                            "frame received, frame sent, timer entry and accepted "
                            "connection (defaults %s): the run is a pure function of the "
                            "seed and the options (tests); free: processing takes no "
                            "virtual time, the link bounds the rate"
                            % CostModel().spec().partition(":")[2])
        s.add_argument("--link-gbps", type=float, default=10.0, metavar="G",
                       help="simulated link bandwidth (%(default)s Gbit/s)")
        s.add_argument("--link-delay-us", type=float, default=10.0, metavar="US",
                       help="simulated one-way propagation delay (%(default)s us)")
        add_tap_arguments(p.add_argument_group(
            "TAP testbed (without --sim; root, `acceltcp testbed up`)"))
        p.set_defaults(func=profiled(cmd_load), _parser=p)
    return top
