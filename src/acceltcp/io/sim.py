"""Deterministic simulator: a virtual-time asyncio loop, point-to-point links, faults.

``SimLoop`` is an ordinary ``asyncio`` event loop (a ``SelectorEventLoop`` subclass)
whose selector never sleeps: when the loop would block until the next timer, the
virtual clock jumps straight to that timer.  Futures, tasks, ``asyncio.sleep``,
``wait_for``, queues, streams... run unchanged, deterministically, in virtual time.

``Link`` is a full-duplex point-to-point link between two frame devices (``link.a``,
``link.b``) with serialization at a bandwidth, a tail-drop transmit queue, a
propagation delay and a seeded ``FaultInjector`` per direction.  Everything it does is
a ``loop.call_at`` callback, so the same seed gives the same frames at the same
virtual times, byte for byte.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import selectors
import types
from asyncio import events
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

__all__ = [
    "SimDeadlock",
    "SimUnsupported",
    "SimLoop",
    "FaultConfig",
    "FaultInjector",
    "LinkStats",
    "LinkEnd",
    "Link",
]


# --------------------------------------------------------------------------- loop


class SimDeadlock(RuntimeError):
    """The simulated loop would block forever: nothing is ready and no timer is set."""


class SimUnsupported(RuntimeError):
    """An operation that needs real I/O or threads was attempted on a ``SimLoop``."""


class _SimTimerHandle(events.TimerHandle):
    """A TimerHandle ordered by ``(when, sequence)``: equal-time timers fire FIFO.

    ``asyncio`` keeps timers in a binary heap ordered by ``when`` only, and a heap is
    not stable, so two timers with the same ``when`` may run in either order.  The
    sequence number makes the order total and equal to the scheduling order.
    """

    __slots__ = ("_seq",)

    def __lt__(self, other):
        w = self._when
        o = other._when
        return w < o or (w == o and self._seq < other._seq)

    def __gt__(self, other):
        w = self._when
        o = other._when
        return w > o or (w == o and self._seq > other._seq)

    def __le__(self, other):
        return not self.__gt__(other)

    def __ge__(self, other):
        return not self.__lt__(other)

    __hash__ = events.TimerHandle.__hash__


def _fileobj_to_fd(fileobj) -> int:
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        fd = int(fileobj.fileno())
    if fd < 0:
        raise ValueError(f"invalid file descriptor: {fd}")
    return fd


class _VirtualSelector(selectors.BaseSelector):
    """A selector that never waits: ``select`` advances the loop's virtual clock.

    It only holds the loop's own self-pipe (registered while the loop is being built);
    any later registration is real I/O, which a simulation cannot do deterministically.
    """

    def __init__(self, loop: "SimLoop"):
        self._loop = loop
        self._map: dict[int, selectors.SelectorKey] = {}
        self._accepting = True

    def register(self, fileobj, events, data=None):
        if not self._accepting:
            raise SimUnsupported(
                "SimLoop performs no real I/O: cannot watch file descriptor "
                f"{fileobj!r} (use simulated devices such as io.sim.Link)"
            )
        if not events or events & ~(selectors.EVENT_READ | selectors.EVENT_WRITE):
            raise ValueError(f"invalid events: {events!r}")
        fd = _fileobj_to_fd(fileobj)
        if fd in self._map:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._map[fd] = key
        return key

    def unregister(self, fileobj):
        fd = _fileobj_to_fd(fileobj)
        try:
            return self._map.pop(fd)
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None

    def modify(self, fileobj, events, data=None):
        fd = _fileobj_to_fd(fileobj)
        try:
            key = self._map[fd]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        key = key._replace(events=events, data=data)
        self._map[fd] = key
        return key

    def get_key(self, fileobj):
        fd = _fileobj_to_fd(fileobj)
        try:
            return self._map[fd]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None

    def get_map(self):
        return types.MappingProxyType(self._map)

    def select(self, timeout=None):
        return self._loop._sim_select(timeout)

    def close(self):
        self._map.clear()
        self._loop = None


def _task_order(task):
    name = task.get_name()
    if name.startswith("Task-") and name[5:].isdigit():
        return (0, int(name[5:]), "")
    return (1, 0, name)


class SimLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop on a virtual clock.

    ``time()`` starts at 0.0 (or ``start``) and only moves when the loop has nothing
    ready to run: it then jumps to the earliest scheduled timer.  Timers with the same
    deadline fire in the order they were scheduled.  If nothing is ready and nothing is
    scheduled, running the loop raises ``SimDeadlock`` instead of hanging.

    ``strict`` (default True): an exception escaping a plain callback (``call_soon``,
    ``call_at``, a device receiver...) is re-raised out of ``run_*`` after the current
    iteration instead of being only logged, so that tests fail loudly.  Exceptions
    inside tasks stay in their task, as usual.

    ``rng`` is a ``random.Random(seed)`` that simulated components may share.
    """

    def __init__(self, seed: int = 0, *, start: float = 0.0, strict: bool = True):
        self._now = float(start)
        self._timer_seq = 0
        self._deadline: Optional[float] = None
        self._predicate: Optional[Callable[[], object]] = None
        self._pending_error: Optional[BaseException] = None
        self._link_count = 0
        self.strict = strict
        self.seed = seed
        self.rng = random.Random(seed)
        selector = _VirtualSelector(self)
        super().__init__(selector)
        selector._accepting = False  # only the self-pipe may be registered
        self._clock_resolution = 1e-9
        self._res_limit = self._RES_LIMIT
        self._set_clock(start)

    # -- construction helpers -------------------------------------------------

    @classmethod
    def new(cls, seed: int = 0, **kwargs) -> "SimLoop":
        """A fresh loop (same as the constructor; reads well in ``with`` statements)."""
        return cls(seed, **kwargs)

    def __enter__(self) -> "SimLoop":
        """Install as the current event loop; ``__exit__`` shuts down and restores."""
        local = getattr(asyncio.get_event_loop_policy(), "_local", None)
        self._previous_loop = getattr(local, "_loop", None)  # read without side effects
        asyncio.set_event_loop(self)
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self.shutdown()
        finally:
            previous = getattr(self, "_previous_loop", None)
            self._previous_loop = None
            asyncio.set_event_loop(None if previous is None or previous.is_closed() else previous)

    def shutdown(self, grace: float = 3600.0) -> None:
        """Cancel all tasks, let them unwind (up to ``grace`` virtual s), close the loop."""
        if self.is_closed():
            return
        if self.is_running():
            raise RuntimeError("cannot shut down a running SimLoop")
        try:
            # all_tasks() is a WeakSet (id-ordered): sort for a reproducible unwind
            tasks = sorted((t for t in asyncio.all_tasks(self) if not t.done()),
                           key=_task_order)
            if tasks:
                for t in tasks:
                    t.cancel()
                gathered = asyncio.gather(*tasks, return_exceptions=True)
                try:
                    self.run_until(gathered.done, timeout=grace)
                except SimDeadlock:
                    pass
                if gathered.done():
                    gathered.result()
                else:
                    gathered.cancel()
            self.run_until_complete(self.shutdown_asyncgens())
        except SimDeadlock:
            pass
        finally:
            self._pending_error = None
            self.close()

    # -- the virtual clock ----------------------------------------------------

    def time(self) -> float:
        return self._now

    # asyncio fires the timers whose deadline is < time() + _clock_resolution.  The
    # resolution must stay >= one ulp of the clock, or at very large virtual times
    # ``now + resolution == now`` and a timer due now would never fire.  1 ns is
    # enough below 2**23 s (97 days); past that it grows with the clock.
    _RES_LIMIT = 2.0**23

    def _set_clock(self, t: float) -> None:
        self._now = t = float(t)
        if t >= self._res_limit:
            self._clock_resolution = max(1e-9, math.ulp(t))
            self._res_limit = 2.0 ** (math.frexp(t)[1])  # next power of two

    def call_at(self, when, callback, *args, context=None):
        if when is None:
            raise TypeError("when cannot be None")
        self._check_closed()
        if self._debug:
            self._check_thread()
            self._check_callback(callback, "call_at")
        timer = _SimTimerHandle(when, callback, args, self, context)
        if timer._source_traceback:
            del timer._source_traceback[-1]
        self._timer_seq += 1
        timer._seq = self._timer_seq
        heapq.heappush(self._scheduled, timer)
        timer._scheduled = True
        return timer

    def _sim_select(self, timeout):
        """Called by the selector: 'wait' for ``timeout`` seconds in virtual time."""
        if timeout == 0:
            return []
        scheduled = self._scheduled
        deadline = self._deadline
        if scheduled:
            # _run_once has removed cancelled timers from the head: this is the next
            # event.  Jump exactly to its deadline (not now + timeout, which rounds).
            when = scheduled[0]._when
            if deadline is not None and when > deadline:
                if deadline > self._now:
                    self._set_clock(deadline)
                self.stop()
            elif when > self._now:
                if when < self._res_limit:
                    self._now = float(when)
                else:
                    self._set_clock(when)
            return []
        if deadline is not None:
            if deadline > self._now:
                self._set_clock(deadline)
            self.stop()
            return []
        raise SimDeadlock(
            f"SimLoop would block forever at t={self._now!r}: no callback is ready "
            "and no timer is scheduled (is something awaiting a future nobody resolves?)"
        )

    def _run_once_until(self):
        # Installed as the instance's _run_once by run_until(): the plain path costs
        # nothing extra per iteration.
        asyncio.SelectorEventLoop._run_once(self)
        if self._predicate():
            self.stop()

    def call_exception_handler(self, context):
        if self.strict and "handle" in context and "exception" in context:
            # An exception escaped a plain callback: stop after this iteration and
            # re-raise it from run_forever() (hence run_until_complete(), run_for()...).
            if self._pending_error is None:
                self._pending_error = context["exception"]
            self.stop()
            return
        super().call_exception_handler(context)

    # -- running --------------------------------------------------------------

    def run_forever(self):
        try:
            super().run_forever()
        finally:
            err = self._pending_error
            if err is not None:
                self._pending_error = None
                raise err

    def _run_bounded(self, deadline, predicate) -> None:
        self._deadline = deadline
        self._predicate = predicate
        if predicate is not None:
            self._run_once = self._run_once_until
        try:
            self.run_forever()
        finally:
            self._deadline = None
            self._predicate = None
            self.__dict__.pop("_run_once", None)

    def run_for(self, seconds: float) -> None:
        """Run every callback due up to ``time() + seconds``; leave the clock there."""
        if not seconds >= 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        self._run_bounded(self._now + seconds, None)

    def run_until(self, predicate: Callable[[], object], timeout: Optional[float] = None) -> bool:
        """Run until ``predicate()`` is true (checked after each loop iteration).

        Returns True as soon as it is (the clock stays at that moment), False once
        ``timeout`` virtual seconds have passed (the clock is then at the timeout).
        With ``timeout=None`` it may raise ``SimDeadlock`` if nothing is left to run.
        """
        if predicate():
            return True
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be >= 0, got {timeout!r}")
        deadline = None if timeout is None else self._now + timeout
        self._run_bounded(deadline, predicate)
        return bool(predicate())

    def run(self, awaitable, timeout: Optional[float] = None):
        """Run a coroutine/future to completion and return its result.

        With a (virtual) ``timeout``, raise ``TimeoutError`` after cancelling it.
        """
        fut = asyncio.ensure_future(awaitable, loop=self)
        if timeout is None:
            return self.run_until_complete(fut)
        if not self.run_until(fut.done, timeout):
            fut.cancel()
            try:
                self.run_until(fut.done, timeout=0.0)
            except SimDeadlock:
                pass
            raise TimeoutError(f"not done after {timeout} virtual seconds")
        return fut.result()

    # -- what a simulation cannot do ------------------------------------------

    def run_in_executor(self, executor, func, *args):
        raise SimUnsupported("SimLoop is single-threaded and deterministic: no executors")


# --------------------------------------------------------------------------- faults

_DEFAULT_REORDER_DELAY = 3 * 1500 * 8 / 1e9  # 3 x a 1500 B frame at 1 Gbit/s = 36 us


@dataclass(frozen=True)
class FaultConfig:
    """Fault rates for one direction of a link; each rate is a probability per frame.

    ``delay_rate`` of the frames get ``extra_delay`` seconds more.  A reordered frame is
    held back ``reorder_delay`` seconds so that later frames overtake it (None: 3x the
    serialization time of a 1500-byte frame on the link it is used on).
    """

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    delay_rate: float = 0.0
    extra_delay: float = 0.0
    reorder_delay: Optional[float] = None

    def __post_init__(self):
        for name in ("loss", "duplicate", "reorder", "corrupt", "delay_rate"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"FaultConfig.{name} must be a probability in [0, 1], got {v!r}")
        if not isinstance(self.extra_delay, (int, float)) or not self.extra_delay >= 0.0:
            raise ValueError(f"FaultConfig.extra_delay must be >= 0, got {self.extra_delay!r}")
        rd = self.reorder_delay
        if rd is not None and (not isinstance(rd, (int, float)) or not rd >= 0.0):
            raise ValueError(f"FaultConfig.reorder_delay must be >= 0 or None, got {rd!r}")

    @property
    def enabled(self) -> bool:
        return bool(self.loss or self.duplicate or self.reorder or self.corrupt or self.delay_rate)


class FaultInjector:
    """Applies a ``FaultConfig`` to frames, drawing from a seeded ``random.Random``.

    Per frame, in this order: loss (drop), corruption (1-3 bits flipped in one random
    byte), reordering (held back ``reorder_delay``), extra delay, duplication (a second
    copy delivered right after the first).  Counters: ``frames``, ``lost``,
    ``corrupted``, ``reordered``, ``delayed``, ``duplicated``.
    """

    __slots__ = ("config", "rng", "reorder_delay", "frames", "lost", "corrupted",
                 "reordered", "delayed", "duplicated", "_random")

    def __init__(self, config: FaultConfig, rng: random.Random | int | None = None,
                 reorder_delay: Optional[float] = None):
        if not isinstance(config, FaultConfig):
            raise TypeError(f"expected a FaultConfig, got {type(config).__name__}")
        if rng is None or isinstance(rng, int):
            rng = random.Random(rng or 0)
        self.config = config
        self.rng = rng
        self._random = rng.random
        if config.reorder_delay is not None:
            self.reorder_delay = float(config.reorder_delay)
        elif reorder_delay is not None:
            self.reorder_delay = float(reorder_delay)
        else:
            self.reorder_delay = _DEFAULT_REORDER_DELAY
        self.frames = self.lost = self.corrupted = 0
        self.reordered = self.delayed = self.duplicated = 0

    def corrupt_frame(self, frame: bytes) -> bytes:
        """Return a copy of ``frame`` with 1-3 distinct bits flipped in one random byte."""
        if not frame:
            return frame
        rng = self.rng
        buf = bytearray(frame)
        i = rng.randrange(len(buf))
        mask = 0
        for bit in rng.sample(range(8), rng.randint(1, 3)):
            mask |= 1 << bit
        buf[i] ^= mask
        return bytes(buf)

    def inject(self, frame: bytes, when: float, call_at, deliver) -> None:
        """Schedule ``deliver(frame')`` 0, 1 or 2 times via ``call_at(when', ...)``."""
        c = self.config
        rnd = self._random
        self.frames += 1
        if c.loss and rnd() < c.loss:
            self.lost += 1
            return
        if c.corrupt and rnd() < c.corrupt and frame:
            frame = self.corrupt_frame(frame)
            self.corrupted += 1
        if c.reorder and rnd() < c.reorder:
            when += self.reorder_delay
            self.reordered += 1
        if c.delay_rate and rnd() < c.delay_rate:
            when += c.extra_delay
            self.delayed += 1
        call_at(when, deliver, frame)
        if c.duplicate and rnd() < c.duplicate:
            self.duplicated += 1
            call_at(when, deliver, frame)

    def counters(self) -> dict:
        return {"frames": self.frames, "lost": self.lost, "corrupted": self.corrupted,
                "reordered": self.reordered, "delayed": self.delayed,
                "duplicated": self.duplicated}


# --------------------------------------------------------------------------- link


class LinkStats:
    """Counters of one link end, for the direction leaving it plus what it received.

    ``sent_*``: frames given to ``send()``; ``delivered_*``: frames of this direction
    handed to the far end's receiver (duplicates included); ``received_*``: frames
    handed to this end's receiver.  Drops of this direction: ``queue_full``,
    ``too_big`` (over the MTU), ``loss``, ``no_receiver``.  Faults: ``corrupted``,
    ``duplicated``, ``reordered``, ``delayed``.
    """

    __slots__ = ("_end", "sent_frames", "sent_bytes", "delivered_frames",
                 "delivered_bytes", "queue_full", "too_big", "no_receiver")

    DROP_REASONS = ("queue_full", "too_big", "loss", "no_receiver")
    FAULTS = ("corrupted", "duplicated", "reordered", "delayed")

    def __init__(self, end: "LinkEnd"):
        self._end = end
        self.sent_frames = self.sent_bytes = 0
        self.delivered_frames = self.delivered_bytes = 0
        self.queue_full = self.too_big = self.no_receiver = 0

    def _fault(self, name: str) -> int:
        end = self._end
        inj = end._injector
        return end._fault_base[name] + (0 if inj is None else getattr(inj, name))

    loss = property(lambda self: self._fault("lost"), doc="frames lost by the injector")
    corrupted = property(lambda self: self._fault("corrupted"))
    duplicated = property(lambda self: self._fault("duplicated"))
    reordered = property(lambda self: self._fault("reordered"))
    delayed = property(lambda self: self._fault("delayed"))

    @property
    def received_frames(self) -> int:
        return self._end._peer.stats.delivered_frames

    @property
    def received_bytes(self) -> int:
        return self._end._peer.stats.delivered_bytes

    @property
    def dropped(self) -> int:
        return self.queue_full + self.too_big + self.loss + self.no_receiver

    @property
    def drops(self) -> dict:
        return {r: getattr(self, r) for r in self.DROP_REASONS}

    def as_dict(self) -> dict:
        d = {
            "sent_frames": self.sent_frames, "sent_bytes": self.sent_bytes,
            "delivered_frames": self.delivered_frames, "delivered_bytes": self.delivered_bytes,
            "received_frames": self.received_frames, "received_bytes": self.received_bytes,
        }
        d.update(self.drops)
        for f in self.FAULTS:
            d[f] = getattr(self, f)
        return d

    def __repr__(self) -> str:
        return f"LinkStats({self.as_dict()})"


def _mac_bytes(mac) -> bytes:
    if isinstance(mac, str):
        parts = mac.replace("-", ":").split(":")
        if len(parts) != 6:
            raise ValueError(f"bad MAC address {mac!r}")
        mac = bytes(int(p, 16) for p in parts)
    mac = bytes(mac)
    if len(mac) != 6:
        raise ValueError(f"a MAC address is 6 bytes, got {len(mac)}")
    return mac


class LinkEnd:
    """One end of a ``Link``: a frame device.

    ``send(frame)`` transmits towards the other end; the other end's receiver (set with
    ``set_receiver(cb)``) gets ``cb(frame)`` on delivery.  ``add_tap(fn)`` calls
    ``fn(frame, timestamp)`` for every frame given to ``send()`` (before queueing and
    faults, like a capture on the sending interface).
    """

    __slots__ = ("link", "name", "mac", "stats", "_loop", "_time", "_call_at", "_peer",
                 "_receiver", "_taps", "_tx_free", "_backlog", "_queue_limit",
                 "_byte_time", "_delay", "_max_frame", "_injector", "_rng",
                 "_reorder_default", "_peer_deliver", "_fault_base", "_ring")

    def __init__(self, link: "Link", name: str, mac: bytes, loop, byte_time: float,
                 delay: float, queue_limit: Optional[int], max_frame: Optional[int],
                 rng: random.Random, reorder_default: float):
        self.link = link
        self.name = name
        self.mac = mac
        self._loop = loop
        self._time = loop.time
        self._call_at = loop.call_at
        self._peer: LinkEnd = None  # type: ignore[assignment]
        self._peer_deliver = None
        self._receiver = None
        self._taps: tuple = ()
        self._tx_free = float("-inf")  # absolute time the transmitter becomes free
        self._backlog: deque = deque()  # start times of frames waiting to be serialized
        self._queue_limit = queue_limit if queue_limit is not None else float("inf")
        self._byte_time = byte_time
        self._delay = delay
        self._max_frame = max_frame if max_frame is not None else float("inf")
        self._injector: Optional[FaultInjector] = None
        self._rng = rng
        self._reorder_default = reorder_default
        self._fault_base = dict.fromkeys(("lost",) + LinkStats.FAULTS, 0)
        self._ring = None
        self.stats = LinkStats(self)

    # -- device API -----------------------------------------------------------

    @property
    def peer(self) -> "LinkEnd":
        return self._peer

    @property
    def faults(self) -> Optional[FaultInjector]:
        """The fault injector of the direction leaving this end (None: no faults)."""
        return self._injector

    def set_faults(self, config: Optional[FaultConfig]) -> None:
        """Change the faults of the direction leaving this end (None: a clean link).

        The direction's random stream continues, so runs stay reproducible.
        """
        inj = self._injector
        if inj is not None:  # keep the counters cumulative
            for f in self._fault_base:
                self._fault_base[f] += getattr(inj, f)
        if config is None or not config.enabled:
            self._injector = None
        else:
            self._injector = FaultInjector(config, self._rng, self._reorder_default)

    def set_receiver(self, callback: Optional[Callable[[bytes], object]]) -> None:
        self._receiver = callback

    def add_tap(self, fn: Callable[[bytes, float], object]) -> None:
        self._taps = self._taps + (fn,)

    def remove_tap(self, fn) -> None:
        taps = list(self._taps)
        taps.remove(fn)
        self._taps = tuple(taps)

    def begin_batch(self) -> None:
        """Queue frames given to ``send()`` like descriptors in a TX ring ..."""
        self._ring = []

    def end_batch(self) -> None:
        """... and hand them to the link now, in order, at the same virtual time.

        A driver brackets each stack entry with these two calls, so the stack's CPU
        accounting covers writing the ring but not the simulated wire behind it.
        """
        ring = self._ring
        self._ring = None
        if ring:
            for frame in ring:
                self._transmit(frame)

    def send(self, frame) -> bool:
        """Transmit a frame; False if it was dropped at the transmitter (queue, MTU).
        Inside a batch the frame is queued and True returned."""
        ring = self._ring
        if ring is not None:
            ring.append(frame)
            return True
        return self._transmit(frame)

    def _transmit(self, frame) -> bool:
        if type(frame) is not bytes:
            frame = bytes(frame)  # the link holds an immutable snapshot
        now = self._time()
        n = len(frame)
        st = self.stats
        st.sent_frames += 1
        st.sent_bytes += n
        if self._taps:
            for tap in self._taps:
                tap(frame, now)
        if n > self._max_frame:
            st.too_big += 1
            return False
        start = self._tx_free
        if start > now:
            q = self._backlog
            while q and q[0] <= now:
                q.popleft()
            if len(q) >= self._queue_limit:
                st.queue_full += 1
                return False
            q.append(start)
        else:
            start = now
        end = start + n * self._byte_time
        self._tx_free = end
        inj = self._injector
        if inj is None:
            self._call_at(end + self._delay, self._peer_deliver, frame)
        else:
            inj.inject(frame, end + self._delay, self._call_at, self._peer_deliver)
        return True

    # -- delivery (runs on the receiving end) ---------------------------------

    def _deliver(self, frame: bytes) -> None:
        rx = self._receiver
        st = self._peer.stats  # counters of the sending end's direction
        if rx is None:
            st.no_receiver += 1
            return
        st.delivered_frames += 1
        st.delivered_bytes += len(frame)
        rx(frame)

    # -- introspection --------------------------------------------------------

    @property
    def queue_len(self) -> int:
        """Frames waiting for the transmitter now (the one being serialized excluded)."""
        now = self._time()
        q = self._backlog
        while q and q[0] <= now:
            q.popleft()
        return len(q)

    @property
    def tx_free_at(self) -> float:
        """Absolute time at which the transmitter of this end becomes idle."""
        return max(self._tx_free, self._time())

    def __repr__(self) -> str:
        mac = ":".join(f"{b:02x}" for b in self.mac)
        return f"<LinkEnd {self.name} {mac}>"


class Link:
    """A full-duplex point-to-point link between ``link.a`` and ``link.b``.

    Each direction: a tail-drop FIFO of ``queue_limit`` frames (None: unbounded) in
    front of a transmitter serializing at ``bandwidth_bps`` (``len*8/bw`` seconds per
    frame), then ``delay`` seconds of propagation, then the direction's fault injector,
    then delivery with ``loop.call_at``.  ``mtu`` (L3 bytes; None: no limit) drops
    frames longer than ``mtu + 14``.  ``seed`` fixes the faults and the generated MACs.
    """

    ETH_HLEN = 14

    def __init__(self, loop, bandwidth_bps: float = 1e9, delay: float = 50e-6,
                 queue_limit: Optional[int] = 256, faults_ab: Optional[FaultConfig] = None,
                 faults_ba: Optional[FaultConfig] = None, seed: int = 0,
                 mtu: Optional[int] = None, *, mac_a=None, mac_b=None):
        if not bandwidth_bps > 0:
            raise ValueError(f"bandwidth_bps must be > 0, got {bandwidth_bps!r}")
        if not delay >= 0:
            raise ValueError(f"delay must be >= 0, got {delay!r}")
        if queue_limit is not None and queue_limit < 0:
            raise ValueError(f"queue_limit must be >= 0 or None, got {queue_limit!r}")
        self.loop = loop
        self.bandwidth_bps = float(bandwidth_bps)
        self.delay = float(delay)
        self.queue_limit = queue_limit
        self.mtu = mtu
        self.seed = seed
        # Links built on the same loop get distinct MACs even with equal seeds.
        index = getattr(loop, "_link_count", 0)
        if hasattr(loop, "_link_count"):
            loop._link_count = index + 1
        mac_rng = random.Random(f"acceltcp.io.sim.Link.mac:{seed}:{index}")
        if mac_a is None:
            mac_a = bytes([0x02]) + mac_rng.randbytes(5)  # locally administered unicast
        if mac_b is None:
            mac_b = mac_a
            while mac_b == mac_a:
                mac_b = bytes([0x02]) + mac_rng.randbytes(5)
        mac_a, mac_b = _mac_bytes(mac_a), _mac_bytes(mac_b)
        master = random.Random(seed)
        rng_ab = random.Random(master.getrandbits(64))
        rng_ba = random.Random(master.getrandbits(64))
        byte_time = 8.0 / self.bandwidth_bps
        reorder_default = 3 * 1500 * byte_time
        max_frame = None if mtu is None else mtu + self.ETH_HLEN
        self.a = LinkEnd(self, "a", mac_a, loop, byte_time, self.delay, queue_limit,
                         max_frame, rng_ab, reorder_default)
        self.b = LinkEnd(self, "b", mac_b, loop, byte_time, self.delay, queue_limit,
                         max_frame, rng_ba, reorder_default)
        self.a._peer, self.b._peer = self.b, self.a
        self.a._peer_deliver = self.b._deliver
        self.b._peer_deliver = self.a._deliver
        self.a.set_faults(faults_ab)
        self.b.set_faults(faults_ba)

    @property
    def ends(self) -> tuple[LinkEnd, LinkEnd]:
        return (self.a, self.b)

    def capture(self, writer) -> Callable[[bytes, float], object]:
        """Tap both directions into ``writer`` (a ``PcapWriter`` or any ``fn(frame, ts)``).

        Returns the tap function (pass it to ``end.remove_tap`` to stop).
        """
        fn = writer.write if hasattr(writer, "write") else writer
        self.a.add_tap(fn)
        self.b.add_tap(fn)
        return fn

    def serialization_time(self, nbytes: int) -> float:
        return nbytes * 8.0 / self.bandwidth_bps

    def __repr__(self) -> str:
        return (f"<Link {self.bandwidth_bps:g} bit/s delay={self.delay:g}s "
                f"queue={self.queue_limit} a={self.a!r} b={self.b!r}>")
