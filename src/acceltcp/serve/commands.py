"""``acceltcp serve`` and ``acceltcp connect``: the stack on a TAP, against real kernels.

    acceltcp testbed up
    acceltcp serve echo --port 7 --stats-file out.json &      # the stack is the server
    ip netns exec atcp-peer socat - TCP:198.18.0.2:7
    acceltcp connect 198.18.0.1 5001 -o data.bin --sha256      # the stack is the client

Both run until done (connect) or SIGINT/SIGTERM (serve), then write the stack's
counters as JSON (``--stats-file``; SIGUSR1 writes them at any time). ``--pcap FILE``
records every frame on the TAP, both directions, as the device carries it (with
offloads on: 64 KiB super-frames, partial checksums on what the stack sends), and with
a NIC also the control frames crossing its host port.
When ready, both print one JSON line ``{"event": "ready", ...}`` on stderr.

``serve --nic inline|process`` puts the AccelTCP NIC dataplane between the TAP and the
stack (docs/placements.md), ``--offload`` picks what the app hands it.
"""

import argparse
import asyncio
import hashlib
import json
import os
import random
import signal
import sys

from .common import (XDP_UNSUPPORTED, app_offload_kwargs, parse_offloads, print_ready,
                     stats_snapshot, tap_host, write_json)

__all__ = ["cmd_serve", "cmd_connect", "add_tap_arguments", "stats_snapshot"]

MiB = 1 << 20


def add_tap_arguments(p):
    """Options shared by serve and connect."""
    from ..testbed import netns as tb
    p.add_argument("--netns", default=tb.DEFAULT_NS,
                   help="peer namespace holding the TAP's kernel end (%(default)s)")
    p.add_argument("--tap", default=tb.TAP_NAME, help="TAP interface name (%(default)s)")
    p.add_argument("--ip", default=tb.STACK_IP, help="the stack's address (%(default)s)")
    p.add_argument("--peer-ip", default=tb.PEER_IP,
                   help="the kernel end's address, /24 (%(default)s)")
    p.add_argument("--no-offload", dest="offload", action="store_false",
                   help="TAP without checksum offload/TSO/LRO: MTU-sized, fully "
                        "checksummed frames both ways")
    p.add_argument("--no-tso", dest="tso", action="store_false",
                   help="keep checksum offload and LRO but send MSS-sized segments")
    p.add_argument("--pcap", metavar="FILE",
                   help="record every frame on the TAP, both ways (with --nic also the "
                        "control frames 0x090A-0x090E crossing the host port)")
    p.add_argument("--stats-file", metavar="FILE",
                   help="write JSON counters here on exit (and on SIGUSR1)")
    p.add_argument("--rcv-buf", type=int, default=1 << 20,
                   help="TCP receive buffer per connection, bytes (%(default)s)")
    p.add_argument("--snd-buf", type=int, default=1 << 20,
                   help="TCP send buffer per connection, bytes (%(default)s)")
    p.add_argument("--batch", type=int, default=256,
                   help="frames read per wake-up at most (%(default)s)")
    p.add_argument("--profile", metavar="FILE",
                   help="run under cProfile and dump the stats to FILE (pstats format)")


def profiled(fn):
    """Run the command under cProfile when --profile FILE is given."""
    def run(args):
        if not getattr(args, "profile", None):
            return fn(args)
        import cProfile
        prof = cProfile.Profile()
        try:
            return prof.runcall(fn, args)
        finally:
            prof.dump_stats(args.profile)
    run.__doc__ = fn.__doc__
    return run


# ---------------------------------------------------------------------- serve
def cmd_serve(args) -> int:
    """The stack serves an application on a TAP in the peer namespace until a signal."""
    if getattr(args, "cores", 1) > 1:
        from .cores import serve_cores
        return serve_cores(args)
    return serve_app(args)


def serve_app(args, host_kw=None, on_ready=print_ready) -> int:
    """cmd_serve on one stack: ``host_kw`` more TapHost arguments (serve --cores: the
    TAP queue, the ephemeral range), ``on_ready(**info)`` when it serves."""
    from .apps import APPS

    spec = APPS[args.app]
    try:
        wanted = parse_offloads(args.nic_offload if args.nic_offload is not None else
                                ("setup" if args.nic != "none" else "none"))
    except ValueError as e:
        print("acceltcp serve: --offload: %s" % e, file=sys.stderr)
        return 2
    if wanted and args.nic == "none":
        print("acceltcp serve: --offload %s needs a NIC (--nic inline, process or xdp)"
              % ",".join(wanted), file=sys.stderr)
        return 2
    nic_lacks = {}
    if args.nic == "xdp":
        # The XDP NIC has every offload now (docs/xdp.md); one it lacks would be advisory,
        # so the host keeps that work, as it does when a NIC refuses (docs/offloads.md)
        nic_lacks = {n: "the XDP NIC does not support it (yet)" for n in wanted
                     if n in XDP_UNSUPPORTED}
        wanted = tuple(n for n in wanted if n not in nic_lacks)
    loop, host = tap_host(args, **(host_kw or {}))
    if host is None:
        return 2
    app_kw, unused = app_offload_kwargs(spec, wanted)
    if getattr(args, "no_defer_accept", False) and app_kw.get("offload_setup"):
        app_kw["defer_accept"] = False
    unused.update(nic_lacks)
    for name, why in unused.items():
        print("acceltcp serve: offload %s not used: %s" % (name, why), file=sys.stderr)
    nic = host.nic_stats()
    if nic is not None and nic["ignored_kwargs"]:
        print("acceltcp serve: this NIC dataplane has no %s: ignored"
              % ", ".join(nic["ignored_kwargs"]), file=sys.stderr)
    if args.port is None and spec.port is not None:
        args.port = spec.port
    if args.backlog is None and spec.name != "lb":     # lb: its config file's, else 4096
        args.backlog = 4096
    if "chimney" in wanted and host.stack.chimney is not None:
        host.stack.chimney.auto = True      # every accepted connection's data path: the NIC
        period = getattr(args, "chimney_cycle", None)
        if period:
            def cycle(ch=host.stack.chimney):
                ch.cycle()                  # forced upload / offload cycles (tests)
                loop.call_later(period, cycle)
            loop.call_later(period, cycle)
    try:
        app = spec.build(host.stack, args, app_kw, loop)
    except (OSError, ValueError) as e:
        print("acceltcp serve %s: %s" % (args.app, e), file=sys.stderr)
        host.close()
        loop.close()
        return 2
    args.port = app.listener.port                  # the port it listens on (lb: its config)
    offloads = {"requested": list(wanted) + list(nic_lacks),
                "used": [n for n in wanted if "offload_" + n in app_kw or n == "chimney"],
                "not_used": unused}
    stop = loop.create_future()

    def app_stats():
        return {"command": "serve", "app": args.app, "port": args.port,
                "app_stats": spec.stats(app), "offloads": offloads}

    def dump():
        if args.stats_file:
            write_json(args.stats_file, stats_snapshot(host, app_stats()))

    async def refresh_and_dump():
        await host.refresh()          # a NIC process: its counters as of now
        dump()

    def on_usr1():
        if args.stats_file:
            loop.create_task(refresh_and_dump())

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    loop.add_signal_handler(signal.SIGUSR1, on_usr1)
    ready = dict(app=args.app, ip=host.stack_ip, port=args.port, tap=host.tap.name,
                 netns=host.netns, offload=host.tap.offload, pid=os.getpid(), nic=args.nic,
                 offloads=offloads["used"])
    if args.nic == "process":
        ready["nic_pid"] = host.device.pid
    if args.nic == "xdp":
        ready["xdp_prog_ids"] = host.device.dataplane.prog_ids
        ready["xdp_ports"] = {"host": host.tap.name, "wire": host.veth}
    on_ready(**ready)
    try:
        loop.run_until_complete(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            loop.remove_signal_handler(sig)
        try:
            loop.run_until_complete(host.refresh())
        finally:
            if hasattr(app, "summary"):
                print(app.summary(), file=sys.stderr)
            dump()
            host.close()
            loop.close()
    return 0


# ---------------------------------------------------------------------- connect
class _Input:
    """What the client sends: generated bytes, stdin, or nothing."""

    def __init__(self, loop, args, wake):
        self.digest = hashlib.sha256() if args.sha256 else None
        self.sent = 0
        self.eof = False
        self.pending = b""
        self._gen = None
        self._fd = None
        self._poll_fd = False
        if args.send_bytes is not None:
            self._gen = random.Random(args.seed)
            self._left = args.send_bytes
        elif args.no_stdin:
            self.eof = None                  # never half-close
        else:
            self._fd = sys.stdin.fileno()
            os.set_blocking(self._fd, False)
            try:
                loop.add_reader(self._fd, wake)
                self._poll_fd = True
                self._loop = loop
            except (PermissionError, OSError):
                self._poll_fd = False        # a regular file or /dev/null: always readable

    def read(self, n):
        """-> bytes, b"" at EOF, None if nothing is available now."""
        if self.pending:
            d, self.pending = self.pending, b""
            return d
        if self._gen is not None:
            if self._left <= 0:
                return b""
            k = min(n, self._left)
            self._left -= k
            return self._gen.randbytes(k)
        if self._fd is None:
            return None
        try:
            return os.read(self._fd, n)
        except BlockingIOError:
            return None

    def unread(self, data):
        self.pending = data

    def close(self):
        if self._poll_fd:
            self._loop.remove_reader(self._fd)
            self._poll_fd = False


def cmd_connect(args) -> int:
    """The stack is the client: connect to a kernel server in the peer namespace."""
    loop, host = tap_host(args)
    if host is None:
        return 2
    stack = host.stack
    if args.transactions:
        return _echo_load(loop, host, args)
    done = loop.create_future()
    out = None
    if args.output == "-":
        out = sys.stdout.buffer
    elif args.output:
        out = open(args.output, "wb")
    rdigest = hashlib.sha256() if args.sha256 else None
    state = {"received": 0, "t_open": None, "t_first": None, "t_eof": None, "error": None,
             "shut": False}
    conn = None

    def finish(err=None):
        if not done.done():
            state["error"] = err
            done.set_result(None)

    def pump():
        if conn is None or conn.closed or conn.error is not None:
            return
        if state["shut"] or inp.eof is None:
            return
        while conn.writable:
            d = inp.read(256 * 1024)
            if d is None:
                return
            if not d:
                stack.shutdown(conn)          # half-close: our side is done
                state["shut"] = True
                inp.eof = True
                return
            n = stack.send(conn, d)
            if inp.digest is not None:
                inp.digest.update(d[:n])
            inp.sent += n
            if n < len(d):
                inp.unread(d[n:])
                return

    def on_event(c):
        if c.error is not None:
            finish(c.error)
            return
        if state["t_open"] is None and c.state in (4, 7):        # ESTABLISHED, CLOSE-WAIT
            state["t_open"] = loop.time()
        if c.rcvbuf:
            data = stack.recv(c, 1 << 30)
            if state["t_first"] is None:
                state["t_first"] = loop.time()
            state["received"] += len(data)
            if rdigest is not None:
                rdigest.update(data)
            if out is not None:
                out.write(data)
        pump()
        if c.eof and state["t_eof"] is None:
            state["t_eof"] = loop.time()
            if inp.eof is None or not state["shut"]:
                stack.close(c)                 # the server is done: so are we
            loop.call_later(args.linger, finish)
        if c.closed or c.state == 10:         # TIME-WAIT: our FIN is acknowledged
            if state["t_eof"] is not None:
                finish()

    inp = _Input(loop, args, pump)
    stop_sigs = (signal.SIGINT, signal.SIGTERM)
    for sig in stop_sigs:
        loop.add_signal_handler(sig, lambda: finish("interrupted"))
    t0 = loop.time()
    try:
        conn = stack.connect(args.host, args.port, local_port=args.local_port or None)
    except OSError as e:
        host.close()
        print("acceltcp connect: %s" % e, file=sys.stderr)
        return 2
    stack.attach(conn, on_event)
    print_ready(host=args.host, port=args.port, tap=host.tap.name, netns=host.netns,
                offload=args.offload, pid=os.getpid())
    timer = loop.call_later(args.timeout, finish, "timeout") if args.timeout else None
    try:
        loop.run_until_complete(done)
    finally:
        if timer is not None:
            timer.cancel()
        inp.close()
        for sig in stop_sigs:
            loop.remove_signal_handler(sig)
        if out is not None and out is not sys.stdout.buffer:
            out.close()
        elif out is not None:
            out.flush()
    t_end = state["t_eof"] or loop.time()
    t_start = state["t_open"] or t0
    elapsed = max(t_end - t_start, 1e-9)
    result = {"command": "connect", "host": args.host, "port": args.port,
              "bytes_received": state["received"], "bytes_sent": inp.sent,
              "transfer_s": elapsed, "error": state["error"],
              "mb_per_s": (state["received"] + inp.sent) / 1e6 / elapsed}
    if rdigest is not None:
        result["sha256_received"] = rdigest.hexdigest()
    if inp.digest is not None:
        result["sha256_sent"] = inp.digest.hexdigest()
    snap = stats_snapshot(host, {"result": result})
    if args.stats_file:
        write_json(args.stats_file, snap)
    host.close()
    loop.close()
    if args.sha256:
        print("sha256 %s  %d bytes received" % (result["sha256_received"],
                                                 state["received"]), file=sys.stderr)
    if state["error"] is not None:
        print("acceltcp connect: %s" % state["error"], file=sys.stderr)
        return 1
    return 0


def _echo_load(loop, host, args):
    """``connect --transactions N``: N echo transactions of --size bytes, --concurrency
    at a time, one connection each (short-lived; --persistent: reuse connections)."""
    from ..apps.echo import EchoLoad
    stack = host.stack
    load = EchoLoad(stack, args.host, args.port, concurrency=args.concurrency, size=args.size,
                    per_conn=0 if args.persistent else 1, total=args.transactions)
    done = loop.create_future()

    def check():
        if load.finished or load.transactions >= args.transactions:
            if not done.done():
                done.set_result(None)
            return
        loop.call_later(0.01, check)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: done.done() or done.set_result(None))
    print_ready(host=args.host, port=args.port, tap=host.tap.name, netns=host.netns,
                offload=args.offload, pid=os.getpid())
    t0 = loop.time()
    load.start()
    check()
    timer = loop.call_later(args.timeout, lambda: done.done() or done.set_result(None)) \
        if args.timeout else None
    loop.run_until_complete(done)
    elapsed = loop.time() - t0
    load.stop()
    # let the last closes finish (FIN handshakes), bounded
    end = loop.time() + 2.0
    while stack.counters["conns_live"] and loop.time() < end:
        loop.run_until_complete(asyncio.sleep(0.01))
    if timer is not None:
        timer.cancel()
    result = {"command": "connect", "mode": "echo-load", "transactions": load.transactions,
              "connections": load.connections, "errors": dict(load.errors),
              "elapsed_s": elapsed, "tps": load.transactions / max(elapsed, 1e-9)}
    if args.stats_file:
        write_json(args.stats_file, stats_snapshot(host, {"result": result}))
    host.close()
    loop.close()
    print(json.dumps(result), file=sys.stderr)
    ok = load.transactions >= args.transactions and not load.errors
    return 0 if ok else 1


def _cores(text):
    n = int(text)
    if not 1 <= n <= 64:
        raise argparse.ArgumentTypeError("1..64")
    return n


def _count(text):
    n = int(text)
    if n < 0:
        raise ValueError(text)
    return n


_count.__name__ = "count"          # argparse: "invalid count value"


def _toe_list(text):
    from ..nic.toe import TOE_OFFLOADS, toe_set
    names = tuple(t for t in text.split(",") if t)
    try:
        if names and toe_set(names):
            return names
    except ValueError:
        pass
    raise argparse.ArgumentTypeError("a comma list of %s" % ", ".join(TOE_OFFLOADS))


def _seconds(text):
    v = float(text)
    if not v >= 0 or v == float("inf"):
        raise ValueError(text)
    return v


_seconds.__name__ = "seconds"


def add_serve_parser(sub):
    from .apps import APPS

    top = sub.add_parser("serve", help="run an app on the stack, on a TAP into the peer netns",
                         description=cmd_serve.__doc__ + " Needs root and `acceltcp "
                         "testbed up`. `acceltcp serve APP --help` lists the app's options.")
    apps = top.add_subparsers(dest="app", metavar="APP", required=True)
    for spec in APPS.values():
        p = apps.add_parser(spec.name, help=spec.help, description=spec.help + ".")
        if spec.port is not None:               # (lb: its own, from its config)
            p.add_argument("--port", type=int, default=None,
                           help="TCP port (%d)" % spec.port)
            p.add_argument("--backlog", type=int, default=None, help="accept queue (4096)")
        spec.add_arguments(p)
        _add_serve_options(p)
    return top


def _add_serve_options(p):
    add_tap_arguments(p)
    p.add_argument("--cores", type=_cores, default=1, metavar="N",
                   help="N host stacks, one process per core, on one multi-queue TAP "
                        "(the kernel's flow hash spreads the connections); --nic none "
                        "or inline (%(default)s)")
    p.add_argument("--isn", type=lambda t: int(t, 0) & 0xFFFFFFFF, metavar="N",
                   help="initial sequence number of every connection (testing: a value "
                        "just below 2**32 makes sequence numbers wrap); default RFC 6528")
    g = p.add_argument_group(
        "AccelTCP NIC", "a NIC dataplane between the TAP and the stack (docs/placements.md)")
    g.add_argument("--nic", choices=("none", "inline", "process", "xdp"), default="none",
                   help="none: the stack drives the TAP; inline: the dataplane runs in this "
                        "process in front of the stack; process: in a child process that "
                        "owns the TAP (a host-port channel to the stack; if it dies the "
                        "stack takes the TAP over); xdp: the XDP dataplane in the kernel "
                        "(make xdp), a veth to the namespace, setup offload only, no "
                        "TAP checksum/TSO offloads (docs/xdp.md) (%(default)s)")
    g.add_argument("--offload", dest="nic_offload", metavar="LIST",
                   help="comma list of what the app offloads to the NIC: setup (SYN "
                        "cookies), teardown, splice, chimney (TCP Chimney: the NIC runs "
                        "every accepted connection's data path); or none. Default: setup with a NIC, "
                        "none without. Not the TAP's checksum/TSO offloads (--no-offload). "
                        "An offload the app or the NIC does not support is reported and "
                        "not used")
    g.add_argument("--no-defer-accept", action="store_true",
                   help="with setup offload, the echo, kv and lb servers have the NIC hand a "
                        "connection up with the client's first data (their clients speak "
                        "first; Linux's TCP_DEFER_ACCEPT): one frame less per connection. "
                        "This hands it up with the handshake ACK instead")
    g.add_argument("--nic-toe", type=_toe_list, metavar="LIST",
                   help="--nic inline|process: comma list of the classic TOE offloads the "
                        "NIC does "
                        "at its host port: csum (completes the stack's partial checksums), "
                        "tso (cuts its 64 KiB super-segments), lro (merges in-order "
                        "segments for it); with --no-offload the TAP's kernel does none "
                        "of them (docs/nic.md)")
    g.add_argument("--nic-listeners", type=_count, metavar="N",
                   help="NIC listener table capacity (the dataplane's default if unset)")
    g.add_argument("--nic-handed-flows", type=_count, metavar="N",
                   help="NIC handed-over flows table capacity: cookie-completed "
                        "connections whose next segments go up before the server's "
                        "first reply (the dataplane's default if unset)")
    g.add_argument("--nic-chimney-flows", type=_count, metavar="N",
                   help="NIC chimney (offloaded connection) table capacity")
    g.add_argument("--chimney-cycle", type=float, metavar="SECONDS",
                   help="with --offload chimney: every SECONDS take every offloaded "
                        "connection back and offer the others again (forced cycles, "
                        "for tests)")
    g.add_argument("--nic-teardown-flows", type=_count, metavar="N",
                   help="NIC teardown flow table capacity (if the dataplane has one)")
    g.add_argument("--nic-splice-rules", type=_count, metavar="N",
                   help="NIC splice rule table capacity (if the dataplane has one)")
    g.add_argument("--nic-watchdog", type=_seconds, default=1.0, metavar="SECONDS",
                   help="--nic process: a NIC that answers nothing for this long after "
                        "a probe is taken to be hung, killed, and the stack takes the "
                        "TAP over (0: no watchdog) (%(default)s)")
    p.set_defaults(func=profiled(cmd_serve))


def add_connect_parser(sub):
    p = sub.add_parser("connect", help="the stack as a TCP client (like nc) on a TAP",
                       description=cmd_connect.__doc__ + " Sends stdin (or --send-bytes), "
                       "writes what it receives to -o, exits at the server's EOF.")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write received data here ('-' = stdout; default: discard)")
    p.add_argument("--sha256", action="store_true",
                   help="hash received (and sent) data; print the digest on stderr")
    p.add_argument("--send-bytes", type=int, metavar="N",
                   help="send N pseudo-random bytes (--seed) instead of stdin, then half-close")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("-n", "--no-stdin", action="store_true",
                   help="send nothing and do not half-close")
    p.add_argument("--local-port", type=int, default=0)
    p.add_argument("--timeout", type=float, default=0, help="give up after S seconds (0: never)")
    p.add_argument("--linger", type=float, default=2.0,
                   help="after the server's EOF, wait at most S s for our FIN's ACK")
    p.add_argument("--transactions", type=int, default=0, metavar="N",
                   help="instead: N echo transactions (short-lived connections)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--persistent", action="store_true",
                   help="--transactions over long-lived connections")
    add_tap_arguments(p)
    p.set_defaults(func=profiled(cmd_connect))
    return p

