"""The two kinds of load run: in the simulator (client and server stacks on one SimLoop,
the server behind a ServerCore) and on the TAP testbed (the stack as a client against a
real server)."""

import asyncio
import os
import signal
import sys

from ...host.runner import CPU_KINDS
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
    frame the stack receives and sends. With ``--cores N`` > 1 the server host is N
    stacks behind one NIC (`testbed.simcores`: RSS steering), each on its own
    `ServerCore`. -> SimpleNamespace(a, b (core 0's stack), servers, link, nic_b,
    runners, cores (the ServerCores, or []), steering (or None))."""
    import hashlib
    import types

    from ...testbed.simnet import IP_A, IP_B, SimNet, SimNicDevice
    from ...testbed.simcores import make_cores
    from ...io.sim import Link
    from ...nic.dataplane import NicDataplane

    server_kw = {"max_syn_backlog": max(8192, 2 * args.concurrency),
                 "lazy_tcb": args.lazy_tcb == "on"}
    charged = args.server_cpu != "free"
    if args.cores > 1:
        cores = []

        def wrap(i, queue):
            if not charged:
                return queue
            core = ServerCore(loop, queue, cost=args.cost_model)
            cores.append(core)
            return core

        mc = make_cores(loop, args.cores, nic=args.sim_nic, seed=args.seed, config=cfg,
                        wrap=wrap, server_kwargs=server_kw,
                        bandwidth_bps=args.link_gbps * 1e9,
                        delay=args.link_delay_us * 1e-6, queue_limit=8192)
        for core, runner in zip(cores, mc.runners):
            core.attach(runner)
        if not cores:
            for runner in mc.runners:
                runner.cpu_accounting = True  # measured and reported, not charged
        return types.SimpleNamespace(a=mc.client, b=mc.servers[0], servers=mc.servers,
                                     link=mc.link, nic_b=mc.nic, runners=mc.runners,
                                     cores=cores, steering=mc.steering)
    sim = SimNet(loop, args.seed)
    link = Link(loop, bandwidth_bps=args.link_gbps * 1e9, delay=args.link_delay_us * 1e-6,
                queue_limit=8192, seed=args.seed)
    nic = None
    device = link.b
    if args.sim_nic:
        secret = hashlib.blake2s(("%s:nic-b" % args.seed).encode(), digest_size=16).digest()
        nic = device = SimNicDevice(loop, link.b, NicDataplane(link.b.mac, secret=secret))
    core = None
    if charged:
        core = device = ServerCore(loop, device, cost=args.cost_model)
    a, _ = sim.stack(link.a, IP_A, config=cfg, name="a", strict=True)
    b, runner_b = sim.stack(device, IP_B, config=cfg, name="b", strict=True, **server_kw)
    a.arp_add(b.ip, b.mac)
    b.arp_add(a.ip, a.mac)
    if core is not None:
        core.attach(runner_b)
    else:
        runner_b.cpu_accounting = True      # measured and reported, not charged
    return types.SimpleNamespace(a=a, b=b, servers=[b], link=link, nic_b=nic,
                                 runners=[runner_b], cores=[core] if core else [],
                                 steering=None)


def _app_stats(args, servers):
    """The server app's counters, summed over the cores (kv: one shared engine)."""
    if args.app == "kv":
        st = servers[0].stats()
        for k in ("accepted", "closed_by_client", "closed_by_server",
                  "closed_output_limit", "closed_query_limit", "output_pauses"):
            st[k] = sum(sv.stats()[k] for sv in servers)
        st["output_peak"] = max(sv.output_peak for sv in servers)
        errs = {}
        for sv in servers:
            for k, v in sv.conn_errors.items():
                errs[k] = errs.get(k, 0) + v
        st["conn_errors"] = errs
    else:
        st = {"accepted": sum(sv.accepted for sv in servers),
              "bytes_echoed": sum(sv.bytes_echoed for sv in servers)}
    if len(servers) > 1:
        st["accepted_per_core"] = [sv.accepted for sv in servers]
    return st


def _run_sim(args, offloads):
    """--sim: -> the summary dict."""
    from ...testbed.simnet import IP_B
    from ...io.sim import SimLoop

    cfg = TcpConfig(time_wait=args.time_wait, rcv_buf=args.rcv_buf, snd_buf=args.snd_buf,
                    zero_copy=args.zero_copy == "on")
    port = DEFAULT_PORTS[args.app] if args.port is None else args.port
    backlog = max(4096, 2 * args.concurrency)
    n = args.cores
    with SimLoop(args.seed) as loop:
        net = _sim_net(loop, args, cfg)
        pcap = None
        if args.pcap:
            from ...io.pcap import PcapWriter
            pcap = PcapWriter(args.pcap)
            net.link.capture(pcap)
        cores = net.cores
        runners = net.runners
        if args.cpu_by_kind:
            for r in runners:
                r.cpu_categories = True
        kw = {"offload_" + name: True for name in offloads}
        if args.app == "echo":
            from ...apps.echo import EchoServer
            servers = [EchoServer(b, port, backlog=backlog, config=cfg,
                                  close_after=args.size * args.per_conn, **kw)
                       for b in net.servers]
        else:
            from ...apps.kv import KvServer
            engine = None                   # one store for every core (shared memory)
            servers = []
            for b in net.servers:
                servers.append(KvServer(b, port, backlog=backlog, config=cfg, engine=engine,
                                        **kw))
                engine = servers[0].engine
        server = servers[0]
        for core, sv in zip(cores, servers):
            core.count_connections(lambda sv=sv: sv.accepted)
        load = _loads(args, net.a, IP_B, port, cfg)
        stacks = net.servers

        def probe():
            fin = sum(b.counters["frames_in"] for b in stacks)
            fout = sum(b.counters["frames_out"] for b in stacks)
            p = {"server_cpu_ns": (sum(c.cpu_ns for c in cores) if cores else
                                   sum(r.cpu_ns for r in runners)),
                 "server_frames_in": fin, "server_frames_out": fout,
                 "server_frames": fin + fout}
            if args.cpu_by_kind:
                for k in CPU_KINDS:
                    p["server_cpu_%s_ns" % k] = sum(r.cpu_by_kind[k] for r in runners)
                    p["server_entries_%s" % k] = sum(r.entries_by_kind[k] for r in runners)
            if cores:
                p["server_core_busy_s"] = sum(c.busy_s for c in cores)
                p["server_core_frames_in"] = sum(c.frames_in for c in cores)
                p["server_core_frames_out"] = sum(c.frames_out for c in cores)
                p["server_core_timer_entries"] = sum(r.timer_fires for r in runners)
                p["server_core_connections"] = sum(sv.accepted for sv in servers)
                if n > 1:
                    for i, (c, sv) in enumerate(zip(cores, servers)):
                        p["server_core%d_busy_s" % i] = c.busy_s
                        p["server_core%d_connections" % i] = sv.accepted
            return p

        out = None if args.quiet else sys.stdout
        run = LoadRun(loop, load, duration=args.duration, transactions=args.transactions,
                      interval=args.interval, out=out, probe=probe,
                      per_txn=(("server_cpu_ns", "srv us/txn", 1e-3),))
        place = "behind the simulated NIC (offloads: %s)" % (", ".join(offloads) or "none") \
            if args.sim_nic else "without a NIC"
        ncores = "one core" if n == 1 else "%d cores (RSS)" % n
        cpu = {"charged": "its measured CPU charged to virtual time (%s)" % ncores,
               "fixed": "%s, its CPU a fixed cost model (%s)" % (
                   ncores, args.cost_model.spec() if args.cost_model else ""),
               "free": "its CPU free (virtual time is the network's)%s" % (
                   "" if n == 1 else ", %d cores (RSS)" % n)}[args.server_cpu]
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
            if not net.a.counters["conns_live"] and \
                    not any(b.counters["conns_live"] for b in stacks):
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
            "cores": n,
            "cpu_s": d.get("server_cpu_ns", 0) / 1e9,
            "cpu_us_per_txn": _per(d.get("server_cpu_ns", 0) / 1e3, txns),
            "frames_in": d.get("server_frames_in", 0), "frames_out": d.get("server_frames_out", 0),
            "frames_per_txn": _per(d.get("server_frames", 0), txns),
            "app_stats": _app_stats(args, servers),
        }
        if args.cpu_by_kind:
            summary["server"]["cpu_by_kind"] = _by_kind(d, txns)
        if cores:
            busy = d.get("server_core_busy_s", 0.0)
            drops = sum(c.drops for c in cores)
            summary["server"]["core"] = {
                "busy_s": busy, "utilization": _per(busy, summary["elapsed_s"] * n),
                "rx_ring_drops": drops, "rx_ring_max": max(c.max_queue for c in cores)}
            # the work the cores did in the run, what the fixed model prices
            for k in ("frames_in", "frames_out", "timer_entries", "connections"):
                summary["server"]["core"][k] = d.get("server_core_" + k, 0)
            if n > 1:
                summary["server"]["per_core"] = [{
                    "busy_s": d.get("server_core%d_busy_s" % i, 0.0),
                    "utilization": _per(d.get("server_core%d_busy_s" % i, 0.0),
                                        summary["elapsed_s"]),
                    "connections": d.get("server_core%d_connections" % i, 0),
                    "rx_ring_drops": c.drops} for i, c in enumerate(cores)]
            if drops:
                summary["errors"]["server RX ring overflow (frames)"] = drops
                summary["errors_total"] += drops
        if net.steering is not None:
            summary["server"]["steering"] = net.steering.stats()
        if net.nic_b is not None:
            summary["server"]["nic_counters"] = {k: v for k, v in
                                                 net.nic_b.dataplane.counters.items() if v}
        summary["link"] = {"gbps": args.link_gbps, "delay_us": args.link_delay_us}
        summary["client"] = _client_counters(net.a)
        for core in cores:
            core.close()
        if pcap is not None:
            pcap.close()
    if not args.quiet:
        _print_summary(summary, args)
    return summary


def _by_kind(d, txns):
    """The server's CPU by category from the run's counters: us per transaction, share
    of the measured CPU, entries per transaction (and the totals)."""
    ns = {k: d.get("server_cpu_%s_ns" % k, 0) for k in CPU_KINDS}
    entries = {k: d.get("server_entries_%s" % k, 0) for k in CPU_KINDS}
    total = sum(ns.values())
    return {"us_per_txn": {k: _per(v / 1e3, txns) for k, v in ns.items()},
            "share": {k: v / total if total else None for k, v in ns.items()},
            "entries_per_txn": {k: _per(v, txns) for k, v in entries.items()},
            "cpu_ns": ns, "entries": entries}


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
