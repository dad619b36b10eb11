"""The ``acceltcp`` command: ``demo``, ``bench``, ``load --sim``; on a real TAP (root):
``testbed``, ``serve``, ``connect``, ``load`` (more subcommands join as they land)."""

import argparse
import sys

from .eval.progress import progress_bar


def cmd_demo(args) -> int:
    """N clients against an echo server in the simulator, whose host is one CPU core
    (`acceltcp load --sim`: its measured CPU passes on the virtual clock): persistent vs
    short-lived, and short-lived with the handshakes (SYN cookies, §4.1) and then also
    the closes (§4.2) offloaded to the NIC. The rate is what that one core sustains."""
    from rich.console import Console
    from rich.table import Table

    from .eval.experiments.simload import run_load

    modes = (("persistent", 0, ""), ("short-lived", 1, ""),
             ("+ setup offload", 1, "setup"), ("+ setup + teardown", 1, "setup,teardown"))
    console = Console()
    results = []
    with progress_bar() as progress:
        task = progress.add_task("echo, one host core", total=len(modes))
        for label, per_conn, offload in modes:
            argv = ["echo", "--per-conn", str(per_conn), "-c", str(args.clients),
                    "-n", str(args.transactions), "--size", str(args.size),
                    "--seed", str(args.seed), "--server-cpu", "charged"]
            if offload:
                argv += ["--nic", "--offload", offload]
            try:
                results.append((label, run_load(argv)))
            except ValueError as e:
                console.print("acceltcp demo: %s" % e)
                return 2
            progress.advance(task)
    table = Table(title="%d clients, %d B echo, %s txns per row, one simulated host core"
                        % (args.clients, args.size, format(args.transactions, ",")),
                  title_justify="left")
    for col in ("connections", "core txn/s", "frames/txn", "host µs/txn", "errors"):
        table.add_column(col, justify="right" if col != "connections" else "left")
    for label, s in results:
        sv = s["server"]
        table.add_row(label, f"{s['tps']:,.0f}", f"{sv['frames_per_txn']:.2f}",
                      f"{sv['cpu_us_per_txn']:.1f}", str(s["errors_total"]))
    console.print(table, width=min(console.width, 80))
    (_, p), (_, sh), (_, o), (_, f) = results
    console.print(
        f"core txn/s: transactions per simulated second when the host's measured CPU "
        f"per frame is charged to one core (the client and the link cost nothing).\n"
        f"short-lived costs the host {sh['server']['cpu_us_per_txn'] / p['server']['cpu_us_per_txn']:.2f}x "
        f"the CPU of persistent per transaction "
        f"({sh['server']['frames_per_txn']:.0f} vs {p['server']['frames_per_txn']:.0f} frames); "
        f"the NIC answering the handshakes brings it to "
        f"{o['server']['cpu_us_per_txn'] / p['server']['cpu_us_per_txn']:.2f}x, and the "
        f"closes too to {f['server']['cpu_us_per_txn'] / p['server']['cpu_us_per_txn']:.2f}x "
        f"({f['tps'] / sh['tps']:.2f}x the short-lived rate).", width=min(console.width, 80))
    return 1 if any(s["errors_total"] for _, s in results) else 0


def cmd_bench(args) -> int:
    from .eval.bench import main as bench_main
    return bench_main(args)


def cmd_testbed(args) -> int:
    """Create, inspect or remove the peer network namespace (root)."""
    import json

    from .testbed import netns as tb
    args.ref_netns = args.ref_netns or tb.ref_name_for(args.netns)
    try:
        if args.action == "up":
            created = tb.up(args.netns, ref=args.ref, ref_name=args.ref_netns)
            print("testbed up: %s%s" % (", ".join([args.netns] + ([args.ref_netns] if args.ref
                                                                  else [])),
                                        " (created %s)" % ", ".join(created) if created else
                                        " (already there)"))
        elif args.action == "down":
            removed = tb.down(args.netns, ref_name=args.ref_netns)
            print("testbed down: %s" % (", ".join(removed) if removed else "nothing to remove"))
        elif args.action == "status":
            st = tb.status(args.netns, ref_name=args.ref_netns)
            print(json.dumps(st, indent=1) if st else "testbed: no namespace")
            return 0 if st else 1
        elif args.action == "loss":
            if args.percent is None or args.percent == 0 and not args.out:
                tb.clear_loss(args.netns)
                print("testbed loss: cleared")
            else:
                tb.set_loss(args.percent, args.out, name=args.netns, ifname=args.tap)
                print("testbed loss: %s%% from the stack, %s%% to it" % (
                    args.percent, args.percent if args.out is None else args.out))
    except tb.TestbedError as e:
        print("acceltcp testbed: %s" % e, file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acceltcp",
        description="AccelTCP in Python: a user-level TCP stack whose connection setup, "
                    "teardown and splicing can be offloaded to a (simulated) NIC.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="echo clients vs an echo server on one simulated "
                                       "host core",
                          description=cmd_demo.__doc__)
    demo.add_argument("--clients", type=int, default=64, help="concurrent connections (64)")
    demo.add_argument("--transactions", type=int, default=20000,
                      help="measured transactions per mode (20000)")
    demo.add_argument("--size", type=int, default=64, help="message size in bytes (64)")
    demo.add_argument("--seed", type=int, default=1)
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="host CPU per frame/transaction and bulk rate",
                           description="Host CPU per frame and per transaction for persistent, "
                                       "short-lived and short-lived + setup offload 64 B echo, "
                                       "and the bulk rate, side by side in one run.")
    bench.add_argument("--transactions", type=int, default=20000)
    bench.add_argument("--bulk-mib", type=int, default=50)
    bench.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is kept")
    bench.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    bench.set_defaults(func=cmd_bench)

    from .apps.kv import threads as kv_threads
    kvt = sub.add_parser("kv-threads", help="the kv server on kernel sockets, a thread per "
                                            "connection (the cooperative server's baseline)",
                         description=kv_threads.__doc__.splitlines()[0])
    kv_threads.add_arguments(kvt)
    kvt.set_defaults(func=kv_threads.main)

    from .serve.commands import add_connect_parser, add_serve_parser
    from .testbed.netns import DEFAULT_NS, REF_NS, TAP_NAME
    tbp = sub.add_parser("testbed", help="peer network namespace for real kernels (root)",
                         description="up: create the namespace %s (idempotent); down: end "
                                     "its processes and remove it (also after a crash); "
                                     "status; loss PCT [--out PCT]: random kernel-side TCP "
                                     "loss on the TAP (no PCT: clear)." % DEFAULT_NS)
    tbp.add_argument("action", choices=("up", "down", "status", "loss"))
    tbp.add_argument("percent", nargs="?", type=int, help="loss: %% of frames from the stack")
    tbp.add_argument("--out", type=int, help="loss: %% of frames to the stack (default: same)")
    tbp.add_argument("--netns", default=DEFAULT_NS, help="namespace name (%(default)s)")
    tbp.add_argument("--ref", action="store_true",
                     help="up: also the reference namespace (kernel-stack servers, veth "
                          "198.18.1.0/24) for the benchmarks: %s for %s, NAME-ref for "
                          "any other --netns NAME" % (REF_NS, DEFAULT_NS))
    tbp.add_argument("--ref-netns", default=None, help=argparse.SUPPRESS)
    tbp.add_argument("--tap", default=TAP_NAME, help=argparse.SUPPRESS)
    tbp.set_defaults(func=cmd_testbed)
    add_serve_parser(sub)
    add_connect_parser(sub)
    from .eval.load import add_load_parser
    add_load_parser(sub)
    from .eval.experiments.command import add_eval_parser
    add_eval_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
