"""The load balancer's configuration: the TOML file (``[lb]``, ``[[backends]]``,
``[[routes]]``), the command-line overrides on top of it, and errors that name the file
and the key (with the nearest known key for a misspelt one). Every key: docs/lb.md."""

import difflib
import tomllib
from dataclasses import dataclass, field

from ...wire.ipv4 import ip_from_str

__all__ = ["LbConfig", "BackendConfig", "RouteConfig", "RewriteConfig", "LbConfigError",
           "load_config", "parse_config", "config_from_args", "parse_address", "BALANCE",
           "LB_DEFAULT_PORT"]

LB_DEFAULT_PORT = 8080
BALANCE = ("roundrobin", "leastconn", "urihash")
_VARIABLES = ("client_ip", "client_port", "lb_ip", "lb_port", "backend")


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
