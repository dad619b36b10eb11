"""The applications ``acceltcp serve`` runs, one entry each: its options, how to build it
on a stack, and its exit counters. ``serve NAME --help`` shows an app's own options next
to the shared TAP and NIC ones.

Offloads: the command decides which offloads are wanted (``--offload``); ``build`` gets
the ones the app lists in ``offloads`` as ``offload_<name>=True`` keyword arguments.
"""

__all__ = ["APPS", "AppSpec"]


class AppSpec:
    """name, one-line help, default port (None: the app decides), add_arguments(parser),
    build(stack, args, kw, loop), stats(app) -> dict, offloads: the offload names the app
    can use."""

    __slots__ = ("name", "help", "port", "add_arguments", "build", "stats", "offloads")

    def __init__(self, name, help, port, add_arguments, build, stats, offloads):
        self.name = name
        self.help = help
        self.port = port
        self.add_arguments = add_arguments
        self.build = build
        self.stats = stats
        self.offloads = offloads


# ------------------------------------------------------------------------ echo / sink
def _echo():
    from ..apps.echo import EchoServer

    def add(p):
        p.add_argument("--close-after", type=int, default=0, metavar="BYTES",
                       help="close a connection after echoing this many bytes (0: when "
                            "the client closes; >0 makes the server close first, which "
                            "is what teardown offload needs)")

    def build(stack, args, kw, loop):
        return EchoServer(stack, args.port, backlog=args.backlog,
                          close_after=args.close_after, **kw)
    return AppSpec("echo", "echo every byte (the paper's msg_server)", 7, add, build,
                   lambda app: {"accepted": app.accepted, "bytes_echoed": app.bytes_echoed},
                   ("setup", "teardown"))


def _sink():
    from ..apps.bulk import SinkServer

    def add(p):
        p.add_argument("--sha256", action="store_true", help="hash what it receives")

    def build(stack, args, kw, loop):
        return SinkServer(stack, args.port, backlog=args.backlog, digest=args.sha256, **kw)

    def stats(app):
        d = {"bytes": app.bytes, "closed": app.closed}
        if app.digest is not None:
            d["sha256"] = app.digest.hexdigest()
        return d
    return AppSpec("sink", "read and discard (count, --sha256)", 9, add, build, stats, ())


# ------------------------------------------------------------------------ kv
def _kv():
    from ..apps import kv

    def add(p):
        kv.add_kv_arguments(p, offload_flags=False)

    def build(stack, args, kw, loop):
        return kv.build_kv_server(stack, args, **kw)
    return AppSpec("kv", "RESP2 key-value server (redis-cli, redis-benchmark)",
                   kv.KV_DEFAULT_PORT, add, build, lambda app: app.stats(),
                   ("setup", "teardown"))


# ------------------------------------------------------------------------ proxy
def _parse_backend(text):
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("backend must be IP:PORT, got %r" % text)
    return host, int(port)


def _proxy():
    import argparse

    from ..apps.proxy import SpliceProxy

    def backend(text):
        try:
            return _parse_backend(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    def add(p):
        p.add_argument("--backend", type=backend, action="append", required=True,
                       metavar="IP:PORT", help="server to forward to (repeat: round robin)")
        p.add_argument("--add-line", metavar="TEXT",
                       help="append this line to the forwarded first line (a rewrite that "
                            "changes the length, so the splice offsets must cover it)")

    def build(stack, args, kw, loop):
        rewrite = None
        if args.add_line:
            extra = args.add_line.encode() + b"\n"

            def rewrite(head):
                return head + extra
        return SpliceProxy(stack, args.port, args.backend, splice=bool(kw.get("offload_splice")),
                           rewrite=rewrite, backlog=args.backlog,
                           offload_setup=bool(kw.get("offload_setup")))

    def stats(app):
        d = dict(app.counters)
        d["nic_bytes_c"] = sum(r.bytes_c for r in app.reports)
        d["nic_bytes_s"] = sum(r.bytes_s for r in app.reports)
        d["reports"] = [{"bytes_c": r.bytes_c, "bytes_s": r.bytes_s,
                         "packets_c": r.packets_c, "packets_s": r.packets_s,
                         "reason": r.reason} for r in app.reports[-16:]]
        return d
    return AppSpec("proxy", "forward each connection's first line to a backend, then "
                   "splice (--offload splice) or relay in the host", 8080, add, build, stats,
                   ("setup", "splice"))


# ------------------------------------------------------------------------ lb
def _lb():
    import sys

    from ..apps import lb

    def build(stack, args, kw, loop):
        kw.setdefault("offload_splice", False)      # --offload decides, not the file
        app = lb.build_lb(stack, args, loop=loop, **kw)
        for w in app.warnings:
            print("acceltcp serve lb: %s" % w, file=sys.stderr)
        return app
    return AppSpec("lb", "HTTP/1.1 layer-7 load balancer that splices (--offload "
                   "splice) after the first request", None, lb.add_lb_arguments, build,
                   lambda app: app.stats(), ("setup", "teardown", "splice"))


APPS = {}
for _make in (_echo, _sink, _kv, _proxy, _lb):
    _spec = _make()
    APPS[_spec.name] = _spec
del _make, _spec
