"""The ``acceltcp`` command: ``demo``, ``bench``, ``load --sim``; on a real TAP (root):
``testbed``, ``serve``, ``connect``, ``load`` (more subcommands join as they land)."""

import argparse
import sys

from .eval.progress import progress_bar


def cmd_demo(args) -> int:
    """N clients against an echo server in the simulator: persistent vs short-lived, and
    short-lived with the handshakes offloaded to the NIC (SYN cookies, §4.1)."""
    from rich.console import Console
    from rich.table import Table

    from .eval.echo_sim import run_echo

    console = Console()
    results = []
    with progress_bar() as progress:
        for persistent, offload in ((True, False), (False, False), (False, True)):
            label = ("persistent" if persistent else "short-lived") + \
                (" + setup offload" if offload else "")
            task = progress.add_task(f"echo, {label}", total=args.transactions + args.warmup)
            results.append(run_echo(
                persistent=persistent, clients=args.clients, transactions=args.transactions,
                size=args.size, warmup=args.warmup, seed=args.seed, setup_offload=offload,
                on_progress=lambda load, t=task: progress.update(t, completed=load.transactions)))
    table = Table(title=f"{args.clients} clients, {args.size} B echo, simulated 10 Gbit/s link "
                        f"({args.transactions} transactions each); frames and CPU of the "
                        f"server host")
    for col in ("connections", "txn/s (sim)", "frames/txn", "CPU µs/txn",
                "CPU µs/frame in", "errors"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(r.mode, f"{r.tps:,.0f}", f"{r.frames_per_txn:.2f}",
                      f"{r.cpu_us_per_txn:.1f}", f"{r.cpu_us_per_frame_in:.1f}",
                      str(sum(r.errors.values())))
    console.print(table)
    p, s, o = results
    console.print(f"short-lived costs the host {s.cpu_us_per_txn / p.cpu_us_per_txn:.2f}x the CPU "
                  f"of persistent per transaction ({s.frames_per_txn:.0f} vs "
                  f"{p.frames_per_txn:.0f} frames): the overhead AccelTCP moves to the NIC.")
    console.print(f"with setup offload: {o.cpu_us_per_txn / p.cpu_us_per_txn:.2f}x "
                  f"({o.frames_per_txn:.0f} frames; handshakes answered by the NIC).")
    return 1 if any(r.errors for r in results) else 0


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

    demo = sub.add_parser("demo", help="echo clients vs an echo server in the simulator",
                          description=cmd_demo.__doc__)
    demo.add_argument("--clients", type=int, default=64, help="concurrent connections (64)")
    demo.add_argument("--transactions", type=int, default=20000,
                      help="measured transactions per mode (20000)")
    demo.add_argument("--warmup", type=int, default=1000, help="unmeasured transactions (1000)")
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
