"""An HTTP/1.1 layer-7 load balancer that splices (the paper's epproxy, HAProxy's role).

Theory of operation
-------------------
One `LoadBalancer` listens on a `HostStack` port and runs on the stack's event
callbacks (``stack.attach``), like the other apps: no threads, no loop of its own. For
every client connection it reads the first request head (`apps.http`), chooses a route
(longest path prefix of the ``[[routes]]``) and a backend, connects to it, forwards the
head -- rewritten if ``rewrite`` says so -- and then, per connection, one of two ways:

* **Splice** (the default; needs a NIC, ``stack.nic``): as soon as the backend
  connection is established, ``stack.nsplice(client, backend, callback)`` hands the
  *rest of the connection* to the NIC, which relays both ways with sequence/ack offsets
  computed from the two TCBs after the forwarded head -- a rewritten head of another
  length included. The host is done with the connection; the callback later brings the
  NIC's `control.SpliceClosed` (bytes and packets moved each way), or
  `host.offload.SpliceFailed` and the host relays after all. With keep-alive every later
  request on that client connection therefore goes to the same backend, unbalanced and
  unrewritten: HAProxy's "tunnel" mode, which is what splicing means. The backend is
  chosen per client connection, from its first request. ``splice_after = "response"``
  relays the first exchange in the host until the response head has gone to the
  client, and splices then: a backend that fails before answering still gets the
  client a 502/504 from the balancer, for the price of the first response segment.
* **Host relay** (a route with ``inspect = true``, ``splice = false``, no NIC, or a
  failed splice): full HTTP/1.1 proxying in the host. Each request is framed (RFC 9112
  §6: Content-Length, chunked, none), balanced and rewritten on its own; each response
  is framed (HEAD, 1xx, 204, 304 without body; Content-Length; chunked; until close)
  and relayed. Requests on one client connection are served one at a time: pipelined
  requests wait, unread, in the TCP receive buffer (serialized, never reordered).
  Backend connections are kept alive per client connection and reused when a later
  request picks the same backend. ``101 Switching Protocols`` turns the pair into a
  byte tunnel. Both connections run with TCP_NODELAY and a head goes out in one send
  with the body bytes that came along (Nagle would hold a small tail behind the peer's
  delayed ACK). Once a connection was relayed, it stays in the host: ``inspect`` is a
  per-flow opt-out of the offload (AccelTCP §1), never undone by a later request.

Splice fallback. Before ``nsplice`` the balancer moves every byte the client has sent
to the backend itself, following the request's framing. If nothing beyond the first
request went along, a `SpliceFailed` continues as host relay of that request, exactly;
if pipelined bytes went too (they were forwarded unparsed), as a byte tunnel to the same
backend. A splice is not attempted (``splice_skipped``) when the backend already
answered or closed, or the client already half-closed, before it could start.

Balancing (``balance``): ``roundrobin`` (smooth weighted round robin, as nginx),
``leastconn`` (fewest active client connections -- spliced ones count until the NIC's
closure report -- per weight, ties in turn), ``urihash`` (rendezvous hashing of the
request path without the query: a path keeps its backend while that backend is up, and
only the paths of a backend that goes down move). Routes may name their own pool.

Failures. Health is passive: a backend that refuses or does not answer the connection
(``timeout_connect``, done by the TCB's SYN retransmissions), or whose fresh connection
closes or resets before a response, is marked down for ``down_time`` seconds, after
which the next pick tries it again. A failed *connection* is retried on another backend
(``retries``), which is safe for any method because the backend received nothing; so is
an idempotent bodiless request on a kept-alive connection that the backend closed as it
was reused (its keep-alive timeout), once, on a new connection. Other requests that
reached a backend are never replayed. With no backend reachable the client
gets ``502 Bad Gateway``, with none up (or configured) ``503 Service Unavailable``, a
backend that does not answer within ``timeout_server`` ``504`` -- always with
``Connection: close`` and the connection closed, never a hang. Once a response has
started, a failing backend can only be reported by resetting the client. After a splice
the NIC owns the connection: a backend that dies then has its RST or FIN relayed to the
client by the NIC, which ends only that connection's in-flight request. Malformed
requests get 400 (505 for HTTP versions other than 1.x, 405 for CONNECT) and the
connection is closed.

Timers. The stack has no application timers, so ``timeout_client`` (a complete request
head, and keep-alive idle time) and ``timeout_server`` (no progress either way while a
request is relayed) need an asyncio loop (``loop=``; the simulator's works): one
periodic sweep, armed only while sessions exist, compares each session's deadline --
setting a deadline is one clock read. Without a loop those two timeouts are not enforced
(``warnings`` says so); connect timeouts are the TCB's and always are.

Counters (`stats`, `summary`): connections, requests, spliced / splice_failed (by
reason) / splice_skipped, relayed requests, tunnels, retries, per backend picks,
requests, failures and downs; responses the balancer itself sent by status; bytes moved
by the NIC (sums of the SpliceClosed reports) and by the host, each direction.
"""

import argparse
import collections
import difflib
import errno
import functools
import hashlib
import math
import sys
import tomllib
from dataclasses import dataclass, field

from ...host.offload import SpliceFailed
from ...tcp.states import CLOSE_WAIT, ESTABLISHED
from ...wire import control
from ...wire.ipv4 import ip_from_str, ip_to_str
from ..http import (BODY_CHUNKED, BODY_CLOSE, BODY_LENGTH, BODY_NONE, ChunkedScanner, HttpError,
                   error_response, head_end, parse_request, parse_response, rewrite_head)
from ..outbuf import OutBuffer
from ..proxy import relay

__all__ = ["LoadBalancer", "LbConfig", "BackendConfig", "RouteConfig", "RewriteConfig",
           "LbConfigError", "load_config", "parse_config", "config_from_args",
           "add_lb_arguments", "build_lb", "BALANCE", "LB_DEFAULT_PORT", "LB_HELP",
           "LB_EPILOG", "main"]

LB_DEFAULT_PORT = 8080
BALANCE = ("roundrobin", "leastconn", "urihash")
_READ_MAX = 1 << 30
_VARIABLES = ("client_ip", "client_port", "lb_ip", "lb_port", "backend")

#: The options group's description, wrapped at 78 columns (any argparse formatter).
LB_HELP = """\
HTTP/1.1 load balancer: reads each client's first request, picks a backend
(roundrobin, leastconn or urihash), forwards the request (optionally with
added, replaced or removed headers) and has the NIC splice the rest of the
connection; routes marked inspect, --no-splice, or a stack without a NIC relay
every request in the host instead, each balanced on its own. Settings come
from a TOML file (--config; the options below override it)."""

#: A configuration example, for a command's epilog (keep its layout:
#: argparse.RawDescriptionHelpFormatter).
LB_EPILOG = """\
load balancer configuration (TOML), for example:

  [lb]
  port = 8080
  balance = "roundrobin"          # | "leastconn" | "urihash"
  splice = true                   # false: relay every request in the host
  splice_after = "request"        # | "response": splice once the response head is in
  rewrite = { add_headers = { "X-Forwarded-For" = "$client_ip" } }

  [[backends]]
  address = "198.18.0.1:8081"     # IPv4:PORT; optional: name, weight
  [[backends]]
  address = "198.18.0.1:8082"

  [[routes]]                      # optional; the longest matching prefix wins
  prefix = "/admin"
  inspect = true                  # relayed and balanced per request in the host

Every key and its default: docs/lb.md. Check a file without running it:
  python -m acceltcp.apps.lb --config FILE
"""


# ---------------------------------------------------------------------- configuration
class LbConfigError(ValueError):
    """A bad configuration; the message names the file (or option) and the key."""


@dataclass
class BackendConfig:
    """One ``[[backends]]`` entry: ``ip`` (str), ``port``, ``name`` (default
    ``"ip:port"``), ``weight`` (1..1000)."""
    ip: str
    port: int
    name: str = ""
    weight: int = 1

    def __post_init__(self):
        if not self.name:
            self.name = "%s:%d" % (self.ip, self.port)


@dataclass
class RouteConfig:
    """One ``[[routes]]`` entry: requests whose path starts with ``prefix`` are relayed
    in the host (``inspect``) and/or balanced over the named ``backends`` only."""
    prefix: str
    inspect: bool = False
    backends: tuple = ()


@dataclass
class RewriteConfig:
    """Header rewriting of forwarded requests: ``add`` / ``set`` are ``(name, value)``
    pairs (values may use $client_ip, $client_port, $lb_ip, $lb_port, $backend, and $$
    for a dollar sign); ``set`` replaces fields of that name, ``delete`` removes them."""
    add: tuple = ()
    set: tuple = ()
    delete: tuple = ()

    def __bool__(self):
        return bool(self.add or self.set or self.delete)


@dataclass
class LbConfig:
    """The balancer's whole configuration (``[lb]`` keys as attributes, plus backends,
    routes and rewrite). ``source``: where it came from, for messages."""
    port: int = LB_DEFAULT_PORT
    balance: str = "roundrobin"
    splice: bool = True
    splice_after: str = "request"
    backlog: int = 4096
    max_head: int = 16384
    retries: int = 2
    timeout_connect: float = 3.0
    timeout_client: float = 30.0
    timeout_server: float = 30.0
    down_time: float = 10.0
    backends: list = field(default_factory=list)
    routes: list = field(default_factory=list)
    rewrite: RewriteConfig = field(default_factory=RewriteConfig)
    source: str = "<defaults>"

    def describe(self):
        """The effective configuration, as text for a human."""
        out = ["%s:" % self.source]
        for k in ("port", "balance", "splice", "splice_after", "backlog", "max_head", "retries",
                  "timeout_connect", "timeout_client", "timeout_server", "down_time"):
            out.append("  %-16s %s" % (k, getattr(self, k)))
        out.append("  backends:" if self.backends else "  backends: none (every request "
                   "gets 503)")
        for b in self.backends:
            out.append("    %-22s %s:%d weight %d" % (b.name, b.ip, b.port, b.weight))
        for r in self.routes:
            out.append("  route %s:%s%s" % (r.prefix, " inspect (host relay)" if r.inspect
                                            else "", " backends " + ", ".join(r.backends)
                                            if r.backends else ""))
        rw = self.rewrite
        for name, v in rw.add:
            out.append("  add header     %s: %s" % (name, v))
        for name, v in rw.set:
            out.append("  set header     %s: %s" % (name, v))
        for name in rw.delete:
            out.append("  delete header  %s" % name)
        return "\n".join(out)


# [lb] key -> (kind, low, high); kinds: int, num (int or float), bool, choice
_LB_KEYS = {
    "port": ("int", 1, 65535), "balance": ("choice", BALANCE, None),
    "splice": ("bool", None, None), "splice_after": ("choice", ("request", "response"), None),
    "backlog": ("int", 1, 1 << 20),
    "max_head": ("int", 256, 1 << 20), "retries": ("int", 0, 64),
    "timeout_connect": ("num", 0.05, 3600.0), "timeout_client": ("num", 0.01, 86400.0),
    "timeout_server": ("num", 0.01, 86400.0), "down_time": ("num", 0.0, 86400.0),
    "rewrite": ("table", None, None),
}
_TOP_KEYS = ("lb", "backends", "routes")
_BACKEND_KEYS = ("address", "name", "weight")
_ROUTE_KEYS = ("prefix", "inspect", "backends")
_REWRITE_KEYS = ("add_headers", "set_headers", "del_headers")
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                         "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class _Where:
    def __init__(self, source):
        self.source = source

    def fail(self, where, msg):
        raise LbConfigError("%s: %s: %s" % (self.source, where, msg))

    def keys(self, where, table, known):
        if not isinstance(table, dict):
            self.fail(where, "must be a table, not %s" % _kind(table))
        for k in table:
            if k not in known:
                close = difflib.get_close_matches(k, known, 1)
                self.fail(where, "unknown key %r%s (known: %s)" % (
                    k, "; did you mean %r?" % close[0] if close else "", ", ".join(known)))

    def value(self, where, v, kind, lo, hi):
        if kind == "bool":
            if not isinstance(v, bool):
                self.fail(where, "must be true or false, not %r" % (v,))
        elif kind == "choice":
            if v not in lo:
                self.fail(where, "must be one of %s, not %r" % (", ".join(lo), v))
        elif kind == "table":
            if not isinstance(v, dict):
                self.fail(where, "must be a table, not %s" % _kind(v))
        else:
            ok = isinstance(v, int) if kind == "int" else isinstance(v, (int, float))
            if not ok or isinstance(v, bool):
                self.fail(where, "must be %s, not %r" % (
                    "an integer" if kind == "int" else "a number", v))
            if not lo <= v <= hi:
                self.fail(where, "must be in %s..%s, not %r" % (lo, hi, v))
        return v


def _kind(v):
    return {dict: "a table", list: "an array", str: "a string"}.get(type(v), type(v).__name__)


def parse_address(text):
    """``"IPv4:PORT"`` -> (ip, port); ValueError with the reason."""
    if not isinstance(text, str):
        raise ValueError("must be a string \"IPv4:PORT\", not %s" % _kind(text))
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError("%r is not IPv4:PORT" % text)
    try:
        ip_from_str(host)
    except ValueError:
        raise ValueError("%r: %r is not an IPv4 address (the stack has no resolver)"
                         % (text, host)) from None
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError("%r: port %r is not 1..65535" % (text, port))
    return host, int(port)


def _header_name(w, where, name):
    if not name or not set(name) <= _TOKEN_CHARS:
        w.fail(where, "%r is not a valid header name" % (name,))
    return name


def _compile_template(value):
    """A header value with $variables -> tuple of parts: str literals and ("$", name)
    variables. ValueError with the reason."""
    if any(ch in value for ch in "\r\n\0"):
        raise ValueError("a header value cannot contain CR, LF or NUL")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("a header value must be Latin-1 text") from None
    parts = []
    lit = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch != "$":
            lit.append(ch)
            i += 1
            continue
        if value[i + 1:i + 2] == "$":
            lit.append("$")
            i += 2
            continue
        j = i + 1
        while j < len(value) and (value[j].isalnum() or value[j] == "_"):
            j += 1
        name = value[i + 1:j]
        if name not in _VARIABLES:
            raise ValueError("unknown variable $%s (known: %s; $$ for a dollar sign)"
                             % (name, ", ".join("$" + v for v in _VARIABLES)))
        if lit:
            parts.append("".join(lit))
            lit = []
        parts.append(("$", name))
        i = j
    if lit:
        parts.append("".join(lit))
    return tuple(parts)


def _template(w, where, value):
    if not isinstance(value, str):
        w.fail(where, "must be a string, not %s" % _kind(value))
    try:
        _compile_template(value)
    except ValueError as e:
        w.fail(where, str(e))
    return value


def _headers_table(w, where, t):
    if not isinstance(t, dict):
        w.fail(where, "must be a table of header = value, not %s" % _kind(t))
    return tuple((_header_name(w, "%s.%s" % (where, k), k),
                  _template(w, "%s.%s" % (where, k), v)) for k, v in t.items())


def parse_config(doc, source="<config>"):
    """A TOML document (dict) -> `LbConfig`; `LbConfigError` naming ``source`` and the
    key for anything unknown, missing, mistyped or inconsistent."""
    w = _Where(source)
    w.keys("top level", doc, _TOP_KEYS)
    cfg = LbConfig(source=source)
    lb = doc.get("lb", {})
    w.keys("[lb]", lb, tuple(_LB_KEYS))
    for k, v in lb.items():
        kind, lo, hi = _LB_KEYS[k]
        w.value("[lb] " + k, v, kind, lo, hi)
        if k == "rewrite":
            w.keys("[lb] rewrite", v, _REWRITE_KEYS)
            dels = v.get("del_headers", [])
            if not isinstance(dels, list) or not all(isinstance(x, str) for x in dels):
                w.fail("[lb] rewrite.del_headers", "must be an array of header names")
            cfg.rewrite = RewriteConfig(
                add=_headers_table(w, "[lb] rewrite.add_headers", v.get("add_headers", {})),
                set=_headers_table(w, "[lb] rewrite.set_headers", v.get("set_headers", {})),
                delete=tuple(_header_name(w, "[lb] rewrite.del_headers", x) for x in dels))
        else:
            setattr(cfg, k, float(v) if kind == "num" else v)
    backends = doc.get("backends", [])
    if not isinstance(backends, list):
        w.fail("backends", "must be an array of tables ([[backends]]), not %s"
               % _kind(backends))
    names, addrs = set(), set()
    for i, b in enumerate(backends):
        where = "backends[%d]" % i
        w.keys(where, b, _BACKEND_KEYS)
        if "address" not in b:
            w.fail(where, "missing key 'address' (\"IPv4:PORT\")")
        try:
            ip, port = parse_address(b["address"])
        except ValueError as e:
            w.fail(where + ".address", str(e))
        name = b.get("name", "")
        if not isinstance(name, str):
            w.fail(where + ".name", "must be a string")
        weight = w.value(where + ".weight", b.get("weight", 1), "int", 1, 1000)
        be = BackendConfig(ip, port, name, weight)
        if (ip, port) in addrs:
            w.fail(where + ".address", "duplicate backend address %s:%d" % (ip, port))
        if be.name in names:
            w.fail(where + ".name", "duplicate backend name %r" % be.name)
        names.add(be.name)
        addrs.add((ip, port))
        cfg.backends.append(be)
    routes = doc.get("routes", [])
    if not isinstance(routes, list):
        w.fail("routes", "must be an array of tables ([[routes]]), not %s" % _kind(routes))
    prefixes = set()
    for i, r in enumerate(routes):
        where = "routes[%d]" % i
        w.keys(where, r, _ROUTE_KEYS)
        prefix = r.get("prefix")
        if not isinstance(prefix, str) or not prefix.startswith("/") or not prefix.isascii() \
                or any(ch <= " " or ch == "\x7f" for ch in prefix):
            w.fail(where + ".prefix", "must be a path prefix starting with '/' (visible "
                   "ASCII), not %r" % (prefix,))
        if prefix in prefixes:
            w.fail(where + ".prefix", "duplicate prefix %r" % prefix)
        prefixes.add(prefix)
        inspect = w.value(where + ".inspect", r.get("inspect", False), "bool", None, None)
        pool = r.get("backends", [])
        if not isinstance(pool, list) or not all(isinstance(x, str) for x in pool):
            w.fail(where + ".backends", "must be an array of backend names")
        for x in pool:
            if x not in names:
                w.fail(where + ".backends", "%r is not a backend name (names: %s)"
                       % (x, ", ".join(sorted(names)) or "none"))
        if not inspect and not pool:
            w.fail(where, "neither inspect = true nor backends: the route changes nothing")
        cfg.routes.append(RouteConfig(prefix, inspect, tuple(pool)))
    return cfg


def load_config(path):
    """Read and check a TOML file -> `LbConfig` (`LbConfigError` says what and where)."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise LbConfigError("%s: cannot read: %s" % (path, e.strerror or e)) from None
    except tomllib.TOMLDecodeError as e:
        raise LbConfigError("%s: invalid TOML: %s" % (path, e)) from None
    return parse_config(doc, str(path))


def config_from_args(args):
    """`LbConfig` from `add_lb_arguments` options: the --config file (or the defaults),
    then --backend (replaces the file's backends), --balance, --no-splice, --port and
    --backlog on top. Raises `LbConfigError`."""
    path = getattr(args, "config", None)
    backends = getattr(args, "backend", None)
    if path is None and not backends:
        raise LbConfigError("no backends: give --config FILE (with [[backends]]) or "
                            "--backend IP:PORT (repeat it for more)")
    cfg = load_config(path) if path is not None else LbConfig(source="command line")
    if backends:
        cfg.backends = []
        for text in backends:
            try:
                ip, port = parse_address(text)
            except ValueError as e:
                raise LbConfigError("--backend: %s" % e) from None
            if any((b.ip, b.port) == (ip, port) for b in cfg.backends):
                raise LbConfigError("--backend: %s given twice" % text)
            cfg.backends.append(BackendConfig(ip, port))
        names = {b.name for b in cfg.backends}
        for i, r in enumerate(cfg.routes):
            for x in r.backends:
                if x not in names:
                    raise LbConfigError(
                        "%s: routes[%d].backends: %r is not a backend: --backend replaced "
                        "the file's backends (named by address now: %s)"
                        % (cfg.source, i, x, ", ".join(sorted(names))))
    if getattr(args, "balance", None) is not None:
        cfg.balance = args.balance
    if getattr(args, "no_splice", False):
        cfg.splice = False
    for k in ("port", "backlog"):
        v = getattr(args, k, None)
        if v is not None:
            _, lo, hi = _LB_KEYS[k]
            if not lo <= v <= hi:
                raise LbConfigError("--%s: must be in %d..%d, not %d" % (k, lo, hi, v))
            setattr(cfg, k, v)
    return cfg


# ---------------------------------------------------------------------- backends, balancing
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


class _Rewrite:
    """A compiled `RewriteConfig`: ``drop`` (lowercase names) and the added lines,
    rendered once when they use no per-connection variable, once per client connection
    when they use the client's, per request with $backend."""

    def __init__(self, cfg, lb_ip, lb_port):
        self.drop = frozenset(n.lower().encode() for n in cfg.delete) | \
            frozenset(n.lower().encode() for n, _ in cfg.set)
        self.lines = [(n.encode("latin-1"), _compile_template(v)) for n, v in cfg.add + cfg.set]
        used = {p[1] for _, parts in self.lines for p in parts if isinstance(p, tuple)}
        self.per_backend = "backend" in used
        self.lb = {"lb_ip": lb_ip, "lb_port": str(lb_port)}
        self.static = None if used & {"client_ip", "client_port", "backend"} \
            else self.render({})

    def render(self, env):
        env.update(self.lb)
        out = []
        for name, parts in self.lines:
            v = "".join(p if isinstance(p, str) else env[p[1]] for p in parts)
            out.append(b"%s: %s\r\n" % (name, v.encode("latin-1")))
        return b"".join(out)


def _connect_config(base, timeout):
    """``base`` with SYN retries and initial RTO such that an unanswered connect fails
    after ``timeout`` seconds (the RTO doubles: rto * (1 + 2 + 4) for 2 retries)."""
    for retries in (2, 1, 0):
        rto = timeout / ((1 << (retries + 1)) - 1)
        if rto >= base.min_rto:
            break
    return base.copy(syn_retries=retries, initial_rto=max(rto, base.min_rto))


# ---------------------------------------------------------------------- sessions
# client-connection phases
_HEAD, _CONNECT, _PRESPLICE, _SPLICE, _RELAY, _TUNNEL, _CLOSING, _DONE = range(8)
# backend-connection states
_U_CONNECTING, _U_ACTIVE, _U_IDLE, _U_DEAD = range(4)

_IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
_SPLICE_ENDS = {control.SPLICE_END_FIN: "fin", control.SPLICE_END_RESET_CLIENT:
                "reset_client", control.SPLICE_END_RESET_SERVER: "reset_server",
                control.SPLICE_END_IDLE: "idle"}

_COUNTERS = (
    "connections", "requests", "bad_requests", "inspected",
    "splice_requested", "spliced", "splice_failed", "splice_skipped",
    "relayed_requests", "tunnels", "retries", "no_backend",
    "backend_connect_failures", "backend_failures", "backend_aborts", "bad_responses",
    "client_aborts", "local_port_exhausted", "sent_4xx", "sent_5xx",
    "timeouts_client", "timeouts_server", "keepalive_timeouts",
    "nic_bytes_c", "nic_bytes_s", "nic_packets_c", "nic_packets_s",
    "host_bytes_c", "host_bytes_s",
)


class _Upstream:
    """One connection to a backend, on behalf of one client session."""

    __slots__ = ("conn", "be", "sess", "state", "out", "reused", "first")

    def __init__(self, conn, be, sess):
        self.conn = conn
        self.be = be
        self.sess = sess
        self.state = _U_CONNECTING
        self.out = OutBuffer()       # request bytes the send buffer did not take yet
        self.reused = False
        self.first = 0               # bytes queued before the handshake completed


class _Session:
    """One client connection."""

    __slots__ = ("client", "phase", "inbuf", "scan", "req", "req_left", "req_chunks",
                 "req_done", "balancer", "be", "tried", "fwd", "splice", "may_splice", "raw",
                 "splice_pending", "up", "idle", "rbuf", "rscan", "resp", "resp_done", "rleft",
                 "rchunks", "resp_started", "rclean", "cout", "shut", "deadline", "added")

    def __init__(self, client, may_splice):
        self.client = client
        self.phase = _HEAD
        self.inbuf = b""             # client bytes read and not yet used (a head, pipelining)
        self.scan = 0                # where the head-end search resumes
        self.req = None
        self.req_left = 0
        self.req_chunks = None
        self.req_done = True
        self.balancer = None
        self.be = None               # the backend charged with this session (leastconn)
        self.tried = None            # backends whose connect failed for this request
        self.fwd = None              # request body bytes to send after the head
        self.splice = False          # splice once the backend connection is up
        self.splice_pending = False  # splice once the response head is relayed
        self.may_splice = may_splice
        self.raw = False             # bytes beyond the request went to the backend unparsed
        self.up = None
        self.idle = None             # backend -> kept-alive _Upstream
        self.rbuf = b""
        self.rscan = 0
        self.resp = None
        self.resp_done = False
        self.rleft = 0
        self.rchunks = None
        self.resp_started = False
        self.rclean = True           # the backend sent nothing after the response
        self.cout = OutBuffer()      # response bytes the client's send buffer did not take
        self.shut = False
        self.deadline = None
        self.added = None            # rewrite lines rendered for this client


class LoadBalancer:
    """The balancer on ``stack`` (see the module docstring).

    ``config``: an `LbConfig`. ``loop``: an asyncio loop for the client/server timeouts
    (optional). ``tcp_config``: the TcpConfig of client connections (default: the
    stack's); backend connections use it with ``timeout_connect`` applied.
    ``offload_setup`` / ``offload_teardown``: the listener's NIC offloads (SYN cookies,
    teardown; advisory). ``offload_splice``: None follows ``config.splice``; True/False
    overrides it. Splicing needs a NIC; without one requests are relayed in the host.
    ``warnings``: what the operator should know (no NIC, no backends, no loop).
    """

    def __init__(self, stack, config, *, loop=None, tcp_config=None, offload_setup=False,
                 offload_teardown=False, offload_splice=None):
        self.stack = stack
        self.config = cfg = config
        self.loop = loop
        self.splice = bool(cfg.splice if offload_splice is None else offload_splice)
        self.warnings = []
        if self.splice and not stack.nic:
            self.warnings.append("splice: this stack has no NIC; every request is relayed "
                                 "in the host")
        if not cfg.backends:
            self.warnings.append("no backends configured: every request gets 503")
        if loop is None:
            self.warnings.append("no event loop: timeout_client and timeout_server are not "
                                 "enforced")
        self.max_head = cfg.max_head
        self.splice_after_response = cfg.splice_after == "response"
        base = tcp_config if tcp_config is not None else stack.config
        # TCP_NODELAY both ways, as proxies do: the relay writes whole messages (a head
        # with the body bytes that came along in one send), and Nagle would hold a
        # small tail behind a peer's delayed ACK
        client_config = base if base.nodelay else base.copy(nodelay=True)
        self.backend_config = _connect_config(client_config, cfg.timeout_connect)
        self.backends = [_Backend(b) for b in cfg.backends]
        by_name = {be.name: be for be in self.backends}
        make = _BALANCERS[cfg.balance]
        self.balancer = make(self.backends)
        routes = sorted(cfg.routes, key=lambda r: -len(r.prefix))
        self.routes = [_Route(r.prefix.encode(), r.inspect,
                              make([by_name[n] for n in r.backends]) if r.backends else None)
                       for r in routes]
        self.listener = stack.listen(cfg.port, cfg.backlog, config=client_config,
                                     offload_setup=offload_setup,
                                     offload_teardown=offload_teardown)
        self.port = self.listener.port
        self.rewrite = _Rewrite(cfg.rewrite, ip_to_str(stack.ip), self.port) \
            if cfg.rewrite else None
        self.listener.on_acceptable = self._on_acceptable
        self.counters = dict.fromkeys(_COUNTERS, 0)
        self.status_sent = collections.Counter()      # status -> responses the lb made
        self.splice_failures = collections.Counter()  # SpliceFailed reason -> count
        self.splice_ends = collections.Counter()      # how spliced connections ended
        self._sessions = {}            # live sessions not on the NIC (insertion-ordered)
        self._clock = stack.clock
        self._tick_handle = None
        self._tick_every = min(1.0, max(0.05, min(cfg.timeout_client, cfg.timeout_server) / 4))
        self._client_cb = self._on_client
        self._upstream_cb = self._on_upstream

    # ------------------------------------------------------------------ accept, heads
    def _on_acceptable(self, listener):
        st = self.stack
        queue = listener.accept_queue
        handler = self._client_cb
        while queue:
            conn = listener.accept()
            s = _Session(conn, self.splice)
            self.counters["connections"] += 1
            self._sessions[s] = None
            st.attach(conn, handler, s)
            self._wait_request(s)
            if queue:
                self._on_client(conn)
            # else: the stack hands the event that established it to the handler next

    def _on_client(self, conn):
        s = conn.owner.app
        ph = s.phase
        if ph == _SPLICE or ph == _DONE:
            return
        if conn.error is not None or conn.closed:
            self._client_lost(s)
            return
        if ph == _HEAD:
            if s.cout and not self._flush_client(s):
                return
            self._read_head(s)
        elif ph == _RELAY:
            self._relay(s)
        elif ph == _TUNNEL:
            self._tunnel(s)
        elif ph == _CLOSING:
            self._closing(s)
        elif ph == _PRESPLICE:
            self._presplice(s)
        # _CONNECT: what the client sends waits in its receive buffer for the backend

    def _wait_request(self, s):
        s.phase = _HEAD
        self._arm(s, self.config.timeout_client)

    def _read_head(self, s):
        c = s.client
        while True:
            # at most max_head + 1 bytes held: enough to find a head or refuse it; the
            # rest waits in the TCB (its window is the client's back-pressure)
            if c.rcvbuf:
                room = self.max_head + 1 - len(s.inbuf)
                if room > 0:
                    data = self.stack.recv(c, room)
                    s.inbuf = s.inbuf + data if s.inbuf else data
            buf = s.inbuf
            if buf[:1] == b"\r" or buf[:1] == b"\n":
                s.inbuf = buf = buf.lstrip(b"\r\n")  # empty lines before a request: ignored
                s.scan = 0
                if not buf and c.rcvbuf:
                    continue
            break
        end = head_end(buf, s.scan) if buf else -1
        if end < 0:
            if len(buf) > self.max_head:
                self.counters["bad_requests"] += 1
                self._reply_error(s, 400, "request head larger than %d bytes" % self.max_head)
            elif c.eof:
                self._close_client(s)               # the client is done (mid-head or not)
            else:
                s.scan = len(buf) - 2 if len(buf) > 2 else 0
            return
        if end > self.max_head:
            self.counters["bad_requests"] += 1
            self._reply_error(s, 400, "request head larger than %d bytes" % self.max_head)
            return
        head = buf[:end]
        s.inbuf = buf[end:]
        s.scan = 0
        try:
            req = parse_request(head)
        except HttpError as e:
            self.counters["bad_requests"] += 1
            self._reply_error(s, e.status, e.detail)
            return
        self._dispatch(s, req)

    def _dispatch(self, s, req):
        cnt = self.counters
        cnt["requests"] += 1
        s.req = req
        s.resp_started = False
        if req.method == b"CONNECT":
            self._reply_error(s, 405, "CONNECT is not supported")
            return
        path = req.path
        balancer = self.balancer
        inspect = False
        for r in self.routes:                       # longest prefix first
            if path.startswith(r.prefix):
                inspect = r.inspect
                if r.balancer is not None:
                    balancer = r.balancer
                break
        if inspect:
            cnt["inspected"] += 1
            s.may_splice = False
        splice = s.may_splice and self.stack.nic
        body = req.body
        s.req_chunks = ChunkedScanner() if body == BODY_CHUNKED else None
        s.req_left = req.length
        s.req_done = body == BODY_NONE
        s.raw = False
        rest = s.inbuf
        fwd = b""
        if rest and not s.req_done:
            try:
                n = self._track_request(s, rest)
            except HttpError as e:
                cnt["bad_requests"] += 1
                self._reply_error(s, e.status, e.detail)
                return
            fwd = rest[:n]
            rest = rest[n:]
        s.splice_pending = splice and self.splice_after_response
        if s.splice_pending:
            splice = False                          # relay until the response head
        elif splice and rest:
            # pipelined requests go along unparsed: the NIC would relay them anyway
            fwd += rest
            rest = b""
            s.raw = True
        s.inbuf = rest
        s.fwd = fwd
        s.splice = splice
        s.balancer = balancer
        s.tried = None
        be = balancer.pick(path, self._clock(), None)
        if be is None:
            cnt["no_backend"] += 1
            self._reply_error(s, 503, "no backend is available")
            return
        self._open(s, be)

    def _track_request(self, s, data):
        """How many bytes of ``data`` belong to the current request's body."""
        if s.req_done:
            return 0
        ch = s.req_chunks
        if ch is not None:
            n = ch.scan(data)
            if ch.done:
                s.req_done = True
            return n
        left = s.req_left
        if len(data) >= left:
            s.req_left = 0
            s.req_done = True
            return left
        s.req_left = left - len(data)
        return len(data)

    # ------------------------------------------------------------------ backends
    def _forward_head(self, s, be):
        rw = self.rewrite
        req = s.req
        if rw is None:
            return req.head
        add = rw.static
        if add is None:
            if rw.per_backend:
                add = rw.render(self._env(s, be))
            else:
                add = s.added
                if add is None:
                    add = s.added = rw.render(self._env(s, None))
        return rewrite_head(req, add, rw.drop)

    def _env(self, s, be):
        c = s.client
        env = {"client_ip": ip_to_str(c.remote_ip), "client_port": str(c.remote_port)}
        if be is not None:
            env["backend"] = be.name
        return env

    def _open(self, s, be):
        """Send the current request to ``be``: on a kept-alive connection of this
        session, or on a new one."""
        st = self.stack
        s.be = be
        be.active += 1
        be.picks += 1
        head = self._forward_head(s, be)
        data = head + s.fwd if s.fwd else head
        if s.idle:
            up = s.idle.pop(be, None)
            if up is not None:
                if up.conn.state == ESTABLISHED and not up.conn.rcvbuf:
                    up.state = _U_ACTIVE
                    up.reused = True
                    s.up = up
                    s.fwd = None
                    self.counters["host_bytes_c"] += len(data)
                    self._send_up(up, data)
                    if s.splice:
                        s.phase = _PRESPLICE
                        self._presplice(s)
                    else:
                        self._start_relay(s)
                    return
                self._drop_upstream(up)
        try:
            conn = st.connect(be.ip, be.port, config=self.backend_config)
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:      # our ports, not the backend's fault
                self.counters["local_port_exhausted"] += 1
                self._release(s)
                self._reply_error(s, 503, "no local port free to reach a backend")
                return
            self._connect_failed(s, None, e.strerror or str(e))
            return
        up = _Upstream(conn, be, s)
        up.first = len(data)
        s.up = up
        s.phase = _CONNECT
        s.deadline = None                 # the TCB's SYN retries time the connect
        st.attach(conn, self._upstream_cb, up)
        self._send_up(up, data)           # queued: leaves with the handshake's ACK

    def _send_up(self, up, data):
        out = up.out
        if out:
            out.append(data)
            return
        n = self.stack.send(up.conn, data)
        if n < len(data):
            out.append(memoryview(data)[n:] if n else data)

    def _flush_up(self, up):
        out = up.out
        out.send(self.stack, up.conn)
        return not out

    def _on_upstream(self, conn):
        up = conn.owner.app
        state = up.state
        if state == _U_DEAD:
            return
        if state == _U_IDLE:
            if not (conn.rcvbuf or conn.fin_rcvd or conn.closed):
                return                                  # send space opened: nothing to do
            # the server closed a kept-alive connection, or sent something unasked
            s = up.sess
            if s.idle is not None and s.idle.get(up.be) is up:
                del s.idle[up.be]
            self._drop_upstream(up)
            return
        s = up.sess
        ph = s.phase
        if ph == _SPLICE or ph == _DONE:
            return
        if state == _U_CONNECTING:
            if conn.error is not None or conn.closed:
                self._connect_failed(s, up, conn.error or "closed")
                return
            if conn.state != ESTABLISHED and conn.state != CLOSE_WAIT:
                return                                  # still handshaking
            up.state = _U_ACTIVE
            s.fwd = None
            self.counters["host_bytes_c"] += up.first
            if up.out and not self._flush_up(up):
                pass                                    # the rest on the next event
            if s.splice:
                s.phase = _PRESPLICE
                self._presplice(s)
            else:
                self._start_relay(s)
            return
        if ph == _RELAY:
            self._relay(s)
        elif ph == _PRESPLICE:
            self._presplice(s)
        elif ph == _TUNNEL:
            self._tunnel(s)

    def _connect_failed(self, s, up, why):
        cnt = self.counters
        be = s.be
        if up is not None:
            up.state = _U_DEAD
            if not up.conn.closed:
                self.stack.abort(up.conn)
        s.up = None
        self._release(s)
        be.connect_failures += 1
        cnt["backend_connect_failures"] += 1
        self._mark_down(be)
        tried = s.tried = (s.tried or ()) + (be,)
        if len(tried) <= self.config.retries:
            nxt = s.balancer.pick(s.req.path, self._clock(), tried)
            if nxt is not None:
                cnt["retries"] += 1
                self._open(s, nxt)
                return
        self._reply_error(s, 502, "no backend could be reached")

    def _mark_down(self, be):
        now = self._clock()
        if be.down_until <= now:
            be.downs += 1
        be.down_until = now + self.config.down_time

    def _release(self, s):
        be = s.be
        if be is not None:
            be.active -= 1
            s.be = None

    def _drop_upstream(self, up, abort=False):
        up.state = _U_DEAD
        conn = up.conn
        if not conn.closed:
            if abort or up.out:
                self.stack.abort(conn)
            else:
                self.stack.close(conn)            # unread input makes it a reset

    # ------------------------------------------------------------------ splicing
    def _presplice(self, s):
        """Move, ourselves and through the messages' framing, what each side has sent
        to the other; then splice -- or relay in the host when that is no longer
        possible or useful."""
        st = self.stack
        c = s.client
        up = s.up
        b = up.conn
        self._arm(s, self.config.timeout_server)
        if up.out and not self._flush_up(up):
            return
        if s.inbuf:                                 # pipelined requests read with a head
            s.raw = True
            self.counters["host_bytes_c"] += len(s.inbuf)
            self._send_up(up, s.inbuf)
            s.inbuf = b""
        while c.rcvbuf:
            space = b.send_space
            if not space:
                return                              # the backend's next event resumes
            data = st.recv(c, space)
            if not s.raw:
                try:
                    if self._track_request(s, data) < len(data):
                        s.raw = True
                except HttpError:
                    s.raw = True                    # the backend will judge the body
            self.counters["host_bytes_c"] += len(data)
            self._send_up(up, data)
        if up.out:
            return
        if s.resp is not None:                      # splice_after = "response"
            if s.cout and not self._flush_client(s):
                return
            while s.rbuf or b.rcvbuf:
                if s.rbuf:
                    data = s.rbuf
                    s.rbuf = b""
                else:
                    space = c.send_space
                    if not space:
                        return                      # the client's next event resumes
                    data = st.recv(b, space)
                if not s.raw:
                    try:
                        if self._track_response(s, data) < len(data):
                            s.raw = True
                    except HttpError:
                        s.raw = True
                self._to_client(s, data)
            if s.cout:
                return
            if s.resp_done and not (s.req_done and s.req.keep_alive and s.resp.keep_alive):
                # the exchange is over and the connection closes: nothing left to splice
                s.may_splice = False
                s.phase = _RELAY
                self._response_done(s)
                return
        if b.rcvbuf or b.state != ESTABLISHED or c.state != ESTABLISHED or not st.nic:
            # the backend answered or closed, the client half-closed, or the NIC is gone
            self.counters["splice_skipped"] += 1
            s.may_splice = False
            self._splice_fallback(s)
            return
        if s.idle:
            for old in s.idle.values():
                self._drop_upstream(old)
            s.idle = None
        s.phase = _SPLICE
        s.deadline = None
        self._sessions.pop(s, None)
        self.counters["splice_requested"] += 1
        st.nsplice(c, b, functools.partial(self._splice_done, s))

    def _splice_done(self, s, result):
        cnt = self.counters
        if isinstance(result, SpliceFailed):
            cnt["splice_failed"] += 1
            self.splice_failures[result.reason] += 1
            s.may_splice = False
            self._sessions[s] = None
            self._splice_fallback(s)
            return
        cnt["spliced"] += 1
        cnt["nic_bytes_c"] += result.bytes_c
        cnt["nic_bytes_s"] += result.bytes_s
        cnt["nic_packets_c"] += result.packets_c
        cnt["nic_packets_s"] += result.packets_s
        self.splice_ends[_SPLICE_ENDS.get(result.reason, "other")] += 1
        if s.be is not None:
            s.be.spliced += 1
        self._release(s)
        s.phase = _DONE
        s.client = s.up = s.req = s.resp = None

    def _splice_fallback(self, s):
        """Carry on in the host where the splice would have taken over."""
        if s.raw:
            self.counters["tunnels"] += 1
            s.phase = _TUNNEL
            self._tunnel(s)
        elif s.resp is None:
            self._start_relay(s)
        else:
            s.phase = _RELAY
            if s.resp_done:
                self._response_done(s)
            else:
                self._relay(s)

    # ------------------------------------------------------------------ host relay
    def _start_relay(self, s):
        s.phase = _RELAY
        s.rbuf = b""
        s.rscan = 0
        s.resp = None
        s.resp_done = False
        s.rclean = True
        self._relay(s)

    def _relay(self, s):
        c = s.client
        if c.error is not None or c.closed:
            self._client_lost(s)
            return
        self._arm(s, self.config.timeout_server)
        if not s.req_done:
            self._pump_request(s)
            if s.phase != _RELAY:
                return
        self._pump_response(s)

    def _pump_request(self, s):
        st = self.stack
        c = s.client
        up = s.up
        if up.out and not self._flush_up(up):
            return
        b = up.conn
        while c.rcvbuf and not s.req_done:
            space = b.send_space
            if not space:
                break
            if s.req_chunks is None and s.req_left < space:
                space = s.req_left                  # no over-read into the next request
            data = st.recv(c, space)
            try:
                n = self._track_request(s, data)
            except HttpError as e:
                self.counters["bad_requests"] += 1
                self._reply_error(s, e.status, e.detail)
                return
            if n < len(data):
                s.inbuf = data[n:]                  # the next (pipelined) request
                data = data[:n]
            self.counters["host_bytes_c"] += len(data)
            self._send_up(up, data)
        if not s.req_done and c.eof:
            self.counters["client_aborts"] += 1     # the client ended inside its body
            self._abort_session(s)

    def _pump_response(self, s):
        st = self.stack
        c = s.client
        up = s.up
        b = up.conn
        if s.cout and not self._flush_client(s):
            return                                  # the client's next event resumes
        while True:
            resp = s.resp
            if resp is None:                        # a response head
                if s.cout:
                    return                          # (after an interim response) the
                                                    # client's next event resumes
                if b.rcvbuf:
                    room = self.max_head + 1 - len(s.rbuf)
                    if room > 0:
                        data = st.recv(b, room)
                        s.rbuf = s.rbuf + data if s.rbuf else data
                buf = s.rbuf
                end = head_end(buf, s.rscan) if buf else -1
                if end < 0:
                    if len(buf) > self.max_head:
                        self._bad_response(s, "response head too large")
                    elif b.error is not None or b.closed or b.eof:
                        self._backend_failed(s, up)
                    else:
                        s.rscan = len(buf) - 2 if len(buf) > 2 else 0
                    return
                head = buf[:end]
                rest = buf[end:]
                s.rbuf = b""
                s.rscan = 0
                try:
                    resp = parse_response(head, s.req.method)
                except HttpError as e:
                    self._bad_response(s, e.detail)
                    return
                if resp.interim:
                    if resp.status == 101:
                        if not s.req.upgrade:
                            self._bad_response(s, "101 without an Upgrade request")
                            return
                        self._upgrade(s, head + rest)
                        return
                    self._to_client(s, head)        # 100 Continue and friends
                    s.resp_started = True
                    s.rbuf = rest
                    continue
                s.resp_started = True
                s.resp = resp
                s.resp_done = resp.body == BODY_NONE
                s.rleft = resp.length
                s.rchunks = ChunkedScanner(502) if resp.body == BODY_CHUNKED else None
                if s.splice_pending:                # splice_after = "response": now
                    s.splice_pending = False
                    self._to_client(s, head)
                    s.rbuf = rest
                    s.phase = _PRESPLICE
                    self._presplice(s)
                    return
                if rest and not self._response_bytes(s, rest, head):
                    return
                if not rest:
                    self._to_client(s, head)
                if s.resp_done:
                    self._response_done(s)
                    return
                continue
            if b.rcvbuf:
                space = c.send_space
                if not space:
                    return                          # the client's next event resumes
                if not self._response_bytes(s, st.recv(b, space)):
                    return
                continue
            if b.error is not None or b.eof or b.closed:
                if resp.body == BODY_CLOSE and b.error is None:
                    s.resp_done = True
                    self._response_done(s)
                else:
                    self.counters["backend_aborts"] += 1   # cut short: only a reset says so
                    self._abort_session(s)
            return

    def _track_response(self, s, data):
        """How many bytes of ``data`` belong to the current response's body (HttpError
        for a malformed chunked body)."""
        if s.resp_done:
            return 0
        mode = s.resp.body
        if mode == BODY_LENGTH:
            left = s.rleft
            if len(data) >= left:
                s.rleft = 0
                s.resp_done = True
                return left
            s.rleft = left - len(data)
            return len(data)
        if mode == BODY_CHUNKED:
            ch = s.rchunks
            n = ch.scan(data)
            if ch.done:
                s.resp_done = True
            return n
        return len(data)                            # BODY_CLOSE: until the backend's FIN

    def _response_bytes(self, s, data, head=b""):
        """Forward body bytes (after ``head``, in one send); -> False once the response
        ended (or failed)."""
        try:
            n = self._track_response(s, data)
        except HttpError:
            self.counters["bad_responses"] += 1
            self._abort_session(s)
            return False
        if n < len(data):
            s.rclean = False                        # the backend sent more than asked
            data = data[:n]
        self._to_client(s, head + data if head else data)
        if s.resp_done:
            self._response_done(s)
            return False
        return True

    def _response_done(self, s):
        self.counters["relayed_requests"] += 1
        up = s.up
        be = s.be
        req = s.req
        if be is not None:
            be.requests += 1
        self._release(s)
        s.up = None
        keep = req.keep_alive and s.resp.keep_alive and s.req_done
        b = up.conn
        if keep and s.rclean and b.state == ESTABLISHED and not b.rcvbuf and not up.out:
            up.state = _U_IDLE
            idle = s.idle
            if idle is None:
                idle = s.idle = {}
            old = idle.get(up.be)
            if old is not None:
                self._drop_upstream(old)
            idle[up.be] = up
        else:
            self._drop_upstream(up, abort=not s.req_done)
        s.req = s.resp = None
        if not keep:
            self._close_client(s)
            return
        self._wait_request(s)
        if s.inbuf or s.client.rcvbuf or s.client.eof:
            self._read_head(s)

    def _to_client(self, s, data):
        self.counters["host_bytes_s"] += len(data)
        cout = s.cout
        if cout:
            cout.append(data)
            return
        c = s.client
        if c.closed or c.fin_queued:
            return
        n = self.stack.send(c, data)
        if n < len(data):
            cout.append(memoryview(data)[n:] if n else data)

    def _flush_client(self, s):
        cout = s.cout
        cout.send(self.stack, s.client)
        return not cout

    def _upgrade(self, s, head):
        """101 Switching Protocols: from here on bytes, both ways."""
        self._to_client(s, head)
        s.resp_started = True
        self.counters["tunnels"] += 1
        if s.inbuf:
            self.counters["host_bytes_c"] += len(s.inbuf)
            self._send_up(s.up, s.inbuf)
            s.inbuf = b""
        s.phase = _TUNNEL
        self._tunnel(s)

    def _tunnel(self, s):
        st = self.stack
        c = s.client
        up = s.up
        b = up.conn
        self._arm(s, self.config.timeout_server)
        cnt = self.counters
        if s.cout:
            self._flush_client(s)
        if up.out:
            self._flush_up(up)
        if not s.cout:
            cnt["host_bytes_s"] += relay(st, b, c)
        if not up.out:
            cnt["host_bytes_c"] += relay(st, c, b)
        if s.phase != _TUNNEL:
            return
        if c.closed and b.closed:
            up.state = _U_DEAD
            self._release(s)
            self._finish(s)
        elif c.eof and b.eof and not s.cout and not up.out:
            self._drop_upstream(up)
            self._release(s)
            st.close(c)
            self._finish(s)

    # ------------------------------------------------------------------ endings
    def _backend_failed(self, s, up):
        """The backend closed or reset before a (complete) response head."""
        if up.reused and not s.resp_started and not s.rbuf and s.req.body == BODY_NONE \
                and s.req.method in _IDEMPOTENT:
            # a kept-alive connection the backend closed as we reused it (its keep-alive
            # timeout): the request may never have been read, and resending an idempotent
            # one is safe (RFC 9110 §9.2.2); once, on a new connection
            self.counters["retries"] += 1
            s.up = None
            self._drop_upstream(up, abort=True)
            be = s.be
            self._release(s)
            s.fwd = None
            self._open(s, be)
            return
        self.counters["backend_failures"] += 1
        be = s.be
        if be is not None:
            be.failures += 1
            if not up.reused:
                self._mark_down(be)
        self._reply_error(s, 502, "the backend closed the connection without a response")

    def _bad_response(self, s, detail):
        self.counters["bad_responses"] += 1
        if s.be is not None:
            s.be.failures += 1
        self._reply_error(s, 502, "invalid response from the backend")

    def _reply_error(self, s, status, detail):
        """Answer ``status`` ourselves and close; a reset if a response had started."""
        self.status_sent[status] += 1
        self.counters["sent_4xx" if status < 500 else "sent_5xx"] += 1
        up = s.up
        if up is not None:
            s.up = None
            self._drop_upstream(up, abort=True)
        self._release(s)
        if s.resp_started:
            self._abort_session(s)
            return
        req = s.req
        s.req = None
        s.inbuf = b""
        s.phase = _CLOSING
        self._to_client(s, error_response(status, detail,
                                          req is not None and req.method == b"HEAD"))
        self._arm(s, self.config.timeout_client)
        self._closing(s)

    def _close_client(self, s):
        """End the client connection gracefully (FIN after what is queued)."""
        c = s.client
        if c.closed:
            self._finish(s)
            return
        if s.cout or c.rcvbuf or s.inbuf:
            s.phase = _CLOSING
            s.inbuf = b""
            self._arm(s, self.config.timeout_client)
            self._closing(s)
            return
        s.phase = _DONE
        self.stack.close(c)
        self._finish(s)

    def _closing(self, s):
        """Lingering close: send what is queued, FIN, read and drop until the client's
        FIN (RFC 9112 §9.6), so that a reset does not destroy the response."""
        st = self.stack
        c = s.client
        if c.closed or c.error is not None:
            self._finish(s)
            return
        if c.rcvbuf:
            st.recv(c, _READ_MAX)
        if s.cout and not self._flush_client(s):
            return
        if not s.shut:
            s.shut = True
            st.shutdown(c)
        if c.eof and s.phase == _CLOSING:
            s.phase = _DONE
            st.close(c)
            self._finish(s)

    def _client_lost(self, s):
        """The client reset, or its connection ended, under us."""
        if s.phase != _HEAD and s.phase != _CLOSING:
            self.counters["client_aborts"] += 1
        up = s.up
        if up is not None:
            s.up = None
            self._drop_upstream(up, abort=True)
        self._release(s)
        self._finish(s)

    def _abort_session(self, s):
        up = s.up
        if up is not None:
            s.up = None
            self._drop_upstream(up, abort=True)
        self._release(s)
        c = s.client
        s.phase = _DONE
        if not c.closed:
            self.stack.abort(c)
        self._finish(s)

    def _finish(self, s):
        s.phase = _DONE
        self._sessions.pop(s, None)
        s.deadline = None
        idle = s.idle
        if idle:
            s.idle = None
            for up in idle.values():
                self._drop_upstream(up)

    # ------------------------------------------------------------------ timeouts
    def _arm(self, s, timeout):
        s.deadline = self._clock() + timeout
        if self._tick_handle is None and self.loop is not None:
            self._tick_handle = self.loop.call_later(self._tick_every, self._tick)

    def _tick(self):
        self._tick_handle = None
        now = self._clock()
        due = [s for s in self._sessions if s.deadline is not None and s.deadline <= now]
        for s in due:
            if s.phase != _DONE and s.deadline is not None and s.deadline <= now:
                self._expire(s)
        if self._sessions and self.loop is not None:
            self._tick_handle = self.loop.call_later(self._tick_every, self._tick)

    def _expire(self, s):
        cnt = self.counters
        ph = s.phase
        s.deadline = None
        if ph == _HEAD:
            if s.inbuf or s.client.rcvbuf:
                cnt["timeouts_client"] += 1
                self._reply_error(s, 408, "the request head did not arrive in time")
            else:
                cnt["keepalive_timeouts"] += 1
                self._close_client(s)
        elif ph == _RELAY or ph == _PRESPLICE:
            cnt["timeouts_server"] += 1
            self._reply_error(s, 504, "the backend did not answer in time")
        elif ph == _TUNNEL:
            cnt["timeouts_server"] += 1
            self._abort_session(s)
        elif ph == _CLOSING:
            cnt["timeouts_client"] += 1
            self._abort_session(s)

    # ------------------------------------------------------------------ reports
    def stats(self):
        """Counters (JSON-able), for exit reports."""
        now = self._clock()
        d = dict(self.counters)
        d.update(port=self.port, balance=self.config.balance, splice=self.splice,
                 splice_after=self.config.splice_after, nic=bool(self.stack.nic),
                 sessions=len(self._sessions),
                 on_nic=d["splice_requested"] - d["spliced"] - d["splice_failed"],
                 status_sent={str(k): v for k, v in sorted(self.status_sent.items())},
                 splice_failed_reasons=dict(self.splice_failures),
                 splice_ends=dict(self.splice_ends),
                 backends=[be.stats(now) for be in self.backends],
                 offload_setup=self.listener.offload_setup,
                 offload_teardown=self.listener.offload_teardown,
                 warnings=list(self.warnings))
        return d

    def summary(self):
        """A few lines for a human at exit."""
        c = self.counters
        now = self._clock()
        lines = [
            "lb :%d (%s, splice %s): %d connections, %d requests; %d spliced, %d splice "
            "failed%s, %d skipped; %d relayed in the host, %d tunnels" % (
                self.port, self.config.balance, "on" if self.splice else "off",
                c["connections"], c["requests"], c["spliced"], c["splice_failed"],
                " (%s)" % ", ".join("%s %d" % kv for kv in self.splice_failures.items())
                if self.splice_failures else "", c["splice_skipped"],
                c["relayed_requests"], c["tunnels"]),
            "  sent by the lb: %d 4xx, %d 5xx%s; %d bad requests, %d retries, %d backend "
            "connect failures, %d backend failures, %d client aborts, %d timeouts" % (
                c["sent_4xx"], c["sent_5xx"],
                " (%s)" % ", ".join("%d: %d" % kv for kv in sorted(self.status_sent.items()))
                if self.status_sent else "", c["bad_requests"], c["retries"],
                c["backend_connect_failures"], c["backend_failures"], c["client_aborts"],
                c["timeouts_client"] + c["timeouts_server"]),
            "  bytes moved: NIC %d c->s, %d s->c; host %d c->s, %d s->c" % (
                c["nic_bytes_c"], c["nic_bytes_s"], c["host_bytes_c"], c["host_bytes_s"]),
        ]
        for be in self.backends:
            lines.append("  backend %-22s %s: %d picks, %d relayed, %d spliced, %d connect "
                         "failures, %d failures, down %d times" % (
                             be.name, "up" if be.down_until <= now else "DOWN", be.picks,
                             be.requests, be.spliced, be.connect_failures, be.failures,
                             be.downs))
        return "\n".join(lines)

    def close(self):
        """Stop listening and stop the timeout sweep (open connections stay)."""
        self.stack.unlisten(self.listener)
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None


# ---------------------------------------------------------------------- command line
def _add_option(parser, *flags, **kwargs):
    try:
        parser.add_argument(*flags, **kwargs)
    except argparse.ArgumentError:
        pass                   # the command already defines it (serve's --port, --backlog)


def add_lb_arguments(parser, *, epilog=True):
    """The balancer's options on an argparse parser, as a group described by `LB_HELP`
    (those it does not have already: ``acceltcp serve`` has --port and --backlog).
    ``epilog``: give a parser without an epilog `LB_EPILOG`, the configuration example,
    and a formatter that keeps its layout (argparse.RawDescriptionHelpFormatter, if it
    had the default one)."""
    if epilog and parser.epilog is None:
        parser.epilog = LB_EPILOG
        if parser.formatter_class is argparse.HelpFormatter:
            parser.formatter_class = argparse.RawDescriptionHelpFormatter
    g = parser.add_argument_group("load balancer (lb)", LB_HELP)
    _add_option(g, "--config", metavar="FILE",
                help="TOML configuration: [lb] settings, [[backends]], [[routes]] "
                     "(the options below override it)")
    _add_option(g, "--backend", metavar="IP:PORT", action="append",
                help="a backend server; repeat for more (replaces the file's [[backends]])")
    _add_option(g, "--balance", choices=BALANCE,
                help="how a backend is chosen for each client connection (spliced) or "
                     "request (host relay) (file's [lb] balance, else roundrobin)")
    _add_option(g, "--no-splice", action="store_true",
                help="relay every request in the host instead of having the NIC splice "
                     "connections: per-request balancing of keep-alive connections")
    _add_option(g, "--port", type=int, default=None,
                help="listening port (file's [lb] port, else %d)" % LB_DEFAULT_PORT)
    _add_option(g, "--backlog", type=int, default=None, help="accept queue length")
    return parser


def build_lb(stack, args, *, loop=None, tcp_config=None, **overrides):
    """A `LoadBalancer` on ``stack`` from `add_lb_arguments` options; ``overrides``:
    LoadBalancer keyword arguments (offload_setup, offload_teardown, offload_splice).
    Raises `LbConfigError` (bad configuration) and OSError (port in use). Print its
    ``warnings`` at start and ``summary()`` / write ``stats()`` at exit."""
    cfg = config_from_args(args)
    return LoadBalancer(stack, cfg, loop=loop, tcp_config=tcp_config, **overrides)


def main(argv=None):
    """``python -m acceltcp.apps.lb [options]``: check a configuration and print it as
    the balancer would use it (the balancer itself runs under ``acceltcp serve``)."""
    p = argparse.ArgumentParser(
        prog="python -m acceltcp.apps.lb",
        description="Check a load balancer configuration and print it as it would be\n"
                    "used; exit status 2 if it is invalid. The balancer itself runs on\n"
                    "the stack (acceltcp serve lb ...).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_lb_arguments(p)
    args = p.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except LbConfigError as e:
        print("lb: %s" % e, file=sys.stderr)
        return 2
    print(cfg.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
