"""The two kinds of load run: in the simulator (client and server stacks on one SimLoop,
the server behind a ServerCore) and on the TAP testbed (the stack as a client against a
real server)."""

import asyncio
import os
import signal
import sys

from ...tcp.config import TcpConfig
from .run import LoadRun
from .servercore import ServerCore
from .summary import _describe, _client_counters, _per, _common_summary, _print_summary


DEFAULT_PORTS = {"echo": 7, "kv": 6379}


# ---------------------------------------------------------------------- targets
def _loads(args, stack, server_ip, port, config):
    """The app's load client on `stack` (not started)."""
    total = args.transactions or None
    if args.app == "echo":
        from ...apps.echo import EchoLoad
        return EchoLoad(stack, server_ip, port, concurrency=args.concurrency, size=args.size,
                        per_conn=args.per_conn, total=total, config=config)
    from ...apps.kv import KvLoad
    return KvLoad(stack, server_ip, port, concurrency=args.concurrency,
                  per_conn=args.per_conn, total=total, keys=args.keys,
                  get_ratio=args.get_ratio, key_size=args.key_size,
                  value_size=args.value_size, seed=args.seed, config=config)


def _sim_net(loop, args, cfg):
    """The two stacks on one simulated link, as `testbed.simnet.make_pair` builds them (same
    seeds, secrets and link), except that with a server core (``--server-cpu charged``
    or ``fixed``) the `ServerCore` is the server stack's device, so that it sees every
    frame the stack receives and sends. -> SimpleNamespace(a, b, link, nic_b, runner_b,
    core)."""
    import hashlib
    import types

    from ...testbed.simnet import IP_A, IP_B, SimNet, SimNicDevice
    from ...io.sim import Link
    from ...nic.dataplane import NicDataplane

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
                            max_syn_backlog=max(8192, 2 * args.concurrency),
                            lazy_tcb=args.lazy_tcb == "on")
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
    from ...testbed.simnet import IP_B
    from ...io.sim import SimLoop

    cfg = TcpConfig(time_wait=args.time_wait, rcv_buf=args.rcv_buf, snd_buf=args.snd_buf)
    port = DEFAULT_PORTS[args.app] if args.port is None else args.port
    backlog = max(4096, 2 * args.concurrency)
    with SimLoop(args.seed) as loop:
        net = _sim_net(loop, args, cfg)
        pcap = None
        if args.pcap:
            from ...io.pcap import PcapWriter
            pcap = PcapWriter(args.pcap)
            net.link.capture(pcap)
        core = net.core
        runner = net.runner_b
        kw = {"offload_" + name: True for name in offloads}
        if args.app == "echo":
            from ...apps.echo import EchoServer
            server = EchoServer(net.b, port, backlog=backlog, config=cfg,
                                close_after=args.size * args.per_conn, **kw)
        else:
            from ...apps.kv import KvServer
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


def _run_tap(args, offloads):
    """The stack as a client on the TAP testbed: -> summary dict, or None (no testbed)."""
    from ...serve.common import print_ready, stats_snapshot, tap_host, write_json

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
