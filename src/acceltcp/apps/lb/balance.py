"""Backends and balancing: a backend's health and counters (`_Backend`), the three
algorithms (``roundrobin``, ``leastconn``, ``urihash``: each ``pick(path, now, exclude)``
-> a backend that is up, or None), a route's pool, and the TcpConfig of backend
connections (`_connect_config`: ``timeout_connect`` as SYN retries)."""

import hashlib
import math

class _Backend:
    __slots__ = ("name", "ip", "port", "weight", "seed", "active", "picks", "requests",
                 "spliced", "connect_failures", "failures", "downs", "down_until")

    def __init__(self, cfg):
        self.name = cfg.name
        self.ip = cfg.ip
        self.port = cfg.port
        self.weight = cfg.weight
        # the rendezvous hash seed: from the address, so that it survives restarts
        self.seed = int.from_bytes(hashlib.blake2b(
            ("%s:%d" % (cfg.ip, cfg.port)).encode(), digest_size=8).digest(), "little")
        self.active = 0              # client connections / relayed requests bound to it
        self.picks = 0
        self.requests = 0            # responses relayed in the host
        self.spliced = 0             # spliced connections the NIC reported closed
        self.connect_failures = 0
        self.failures = 0            # died before answering, or answered garbage
        self.downs = 0
        self.down_until = float("-inf")

    def stats(self, now):
        return {"name": self.name, "address": "%s:%d" % (self.ip, self.port),
                "weight": self.weight, "up": self.down_until <= now, "active": self.active,
                "picks": self.picks, "requests": self.requests, "spliced": self.spliced,
                "connect_failures": self.connect_failures, "failures": self.failures,
                "downs": self.downs}


class _RoundRobin:
    """Smooth weighted round robin (nginx): equal weights alternate strictly."""

    def __init__(self, pool):
        self.pool = pool
        self.cw = [0] * len(pool)

    def pick(self, path, now, exclude):
        best = -1
        total = 0
        cw = self.cw
        for i, be in enumerate(self.pool):
            if be.down_until > now or (exclude and be in exclude):
                continue
            cw[i] += be.weight
            total += be.weight
            if best < 0 or cw[i] > cw[best]:
                best = i
        if best < 0:
            return None
        cw[best] -= total
        return self.pool[best]


class _LeastConn:
    """Fewest active connections per weight; ties go in turn."""

    def __init__(self, pool):
        self.pool = pool
        self.next = 0

    def pick(self, path, now, exclude):
        pool = self.pool
        n = len(pool)
        best = None
        bi = 0
        start = self.next
        for k in range(n):
            i = (start + k) % n
            be = pool[i]
            if be.down_until > now or (exclude and be in exclude):
                continue
            if best is None or be.active * best.weight < best.active * be.weight:
                best = be
                bi = i
        if best is not None:
            self.next = bi + 1
        return best


_M64 = (1 << 64) - 1


def _mix64(z):
    """splitmix64's finalizer: a bijective 64-bit mix."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


class _UriHash:
    """Rendezvous (highest random weight) hashing of the path; weighted by
    -w / ln(u) when weights differ."""

    def __init__(self, pool):
        self.pool = pool
        self.weighted = len({be.weight for be in pool}) > 1

    def pick(self, path, now, exclude):
        h = int.from_bytes(hashlib.blake2b(path, digest_size=8).digest(), "little")
        best = None
        bs = -1.0
        weighted = self.weighted
        for be in self.pool:
            if be.down_until > now or (exclude and be in exclude):
                continue
            x = _mix64(h ^ be.seed)
            s = -be.weight / math.log((x + 0.5) / 18446744073709551616.0) if weighted else x
            if s > bs:
                best = be
                bs = s
        return best


_BALANCERS = {"roundrobin": _RoundRobin, "leastconn": _LeastConn, "urihash": _UriHash}


class _Route:
    __slots__ = ("prefix", "inspect", "balancer")

    def __init__(self, prefix, inspect, balancer):
        self.prefix = prefix
        self.inspect = inspect
        self.balancer = balancer


def _connect_config(base, timeout):
    """``base`` with SYN retries and initial RTO such that an unanswered connect fails
    after ``timeout`` seconds (the RTO doubles: rto * (1 + 2 + 4) for 2 retries)."""
    for retries in (2, 1, 0):
        rto = timeout / ((1 << (retries + 1)) - 1)
        if rto >= base.min_rto:
            break
    return base.copy(syn_retries=retries, initial_rto=max(rto, base.min_rto))
