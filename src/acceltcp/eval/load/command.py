"""`acceltcp load`: the options, their checks, and the command."""

import argparse
import ipaddress
import json
import os
import sys
import textwrap

from ..cost import CostModel, parse_cpu_model
from .summary import _exit_status
from .runs import DEFAULT_PORTS, _run_sim, _run_tap


# ---------------------------------------------------------------------- command
def cmd_load(args) -> int:
    """Closed-loop load from the stack: --concurrency connections, --per-conn
    transactions each; transactions/s once a second, a summary at the end."""
    from ...serve.apps import APPS
    from ...serve.common import app_offload_kwargs, parse_offloads

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
                           ("--cores", args.cores != 1),
                           ("--cpu-by-kind", args.cpu_by_kind),
                           ("--server-cpu", args.server_cpu_text is not None),
                           ("--lazy-tcb", args.lazy_tcb != "on"),
                           ("--zero-copy", args.zero_copy != "on")):
            if given:
                err("%s is for --sim (on the TAP the server is whatever listens at HOST; "
                    "`acceltcp serve --nic` runs the stack's own server behind the NIC)" % opt)
    try:
        args.server_cpu, args.cost_model = parse_cpu_model(args.server_cpu_text or "charged")
    except ValueError as e:
        err("--server-cpu: %s" % e)
    if not 1 <= args.cores <= 64:
        err("--cores must be 1..64 (simulated server cores), got %d" % args.cores)
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
  acceltcp load echo --sim --cores 4 --server-cpu fixed -n 20000   4 simulated cores
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
    from ...serve.commands import add_tap_arguments, profiled

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
        s.add_argument("--lazy-tcb", choices=("on", "off"), default="on",
                       help="the server stack's lazy TCB creation (AccelTCP §5.2: a "
                            "connection the NIC set up starts as a quasi-TCB; on by "
                            "default, it matters with teardown offload) (%(default)s)")
        s.add_argument("--zero-copy", choices=("on", "off"), default="on",
                       help="the stacks' opportunistic zero-copy (AccelTCP §5.2: "
                            "payload kept by reference where it cannot change) "
                            "(%(default)s)")
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
        s.add_argument("--cpu-by-kind", action="store_true",
                       help="account the server host's CPU by category (connection "
                            "setup, teardown, data, NIC reports, L2, timers, the "
                            "application): the summary gives each one's us per "
                            "transaction and share (host/runner.py)")
        s.add_argument("--cores", type=int, default=1, metavar="N",
                       help="the server host's simulated cores: N stacks, one per core, "
                            "each with its own tables and its own CPU (--server-cpu), "
                            "behind one NIC that steers connections by an RSS hash of "
                            "the 4-tuple (testbed/simcores.py) (%(default)s)")
        s.add_argument("--link-gbps", type=float, default=10.0, metavar="G",
                       help="simulated link bandwidth (%(default)s Gbit/s)")
        s.add_argument("--link-delay-us", type=float, default=10.0, metavar="US",
                       help="simulated one-way propagation delay (%(default)s us)")
        add_tap_arguments(p.add_argument_group(
            "TAP testbed (without --sim; root, `acceltcp testbed up`)"))
        p.set_defaults(func=profiled(cmd_load), _parser=p)
    return top
