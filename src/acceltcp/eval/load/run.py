"""LoadRun: one load run on either loop (the stop, the drain, the reports), and the
latency histogram. The package docstring (eval/load) has the theory of operation."""

import collections
import math
import sys
import time



DRAIN_S = 2.0          # after the stop: how long answers and closes may take


REFILL_S = 0.1         # re-open connection slots emptied by connect() failures


POLL_S = 0.002         # checks while populating and draining


POPULATE_TIMEOUT_S = 30.0


PROBE_TIMEOUT_S = 3.0  # the first connection, alone: ARP resolution


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


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)
