"""Per-frame cost of spliced frames, XDP beside Python (not a test: figures for the
lead's benchmarks/xdp_cost.py table).  Root, after `make xdp`, from the repository:

    PYTHONPATH=src .venv/bin/python -m tests.xdp.splice_cost [--runs 20000]

XDP: BPF_PROG_TEST_RUN's own duration, median of --runs calls of one run each (the
program rewrites the frame, and test-run does not reset it between repeats).  Python:
NicDataplane.process and bare nic.splice.translate (on a copy) of the same frame, min of
5 timeit repeats.  Pinned to one CPU."""

import argparse
import os
import timeit

from acceltcp.nic import splice as sp
from acceltcp.nic.dataplane import HOST, WIRE, NicDataplane
from acceltcp.nic.xdp import XdpDataplane
from acceltcp.wire.tcp import tcp_options

from .diff import NIC_MAC, SECRET
from .splice_diff import Proxy


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20000)
    args = ap.parse_args(argv)
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    px = Proxy(0xFFFFFF00, 0x10, 0x20, 0xFFFFFFF0)
    kw = dict(secret=SECRET, splice_capacity=4096, teardown_capacity=0)
    nic = NicDataplane(NIC_MAC, **kw)
    x = XdpDataplane(NIC_MAC, **kw)
    try:
        for d in (nic, x):
            d.process(px.splice(1), HOST, 1.0)
        frames = [
            ("1460 B data + TS, client->server", px.from_client(
                0, 0, 0x18, bytes(1460), ts=(1, 2)), WIRE),
            ("64 B data + TS, server->client", px.from_server(
                0, 0, 0x18, bytes(64), ts=(1, 2)), WIRE),
            ("ACK + TS + 3 SACK blocks (Linux layout)", px.from_client(
                0, 0, 0x10, b"", options=tcp_options(
                    timestamps=(1, 2), sack_blocks=((1, 2), (3, 4), (5, 6)))), WIRE),
            ("ACK + SACK, TS, 2 blocks (option walk)", px.from_client(
                0, 0, 0x10, b"", options=b"\x05\x12" + bytes(16) + b"\x08\x0a"
                + bytes(8) + b"\x01" * 4), WIRE),
            ("1460 B data + TS, host port (flush)", px.from_client(
                0, 0, 0x18, bytes(1460), ts=(1, 2)), HOST),
        ]
        print("%-40s %7s %11s %13s %7s" % ("frame", "XDP ns", "Py process", "Py translate",
                                           "Py/XDP"))
        n = 20000
        for name, f, port in frames:
            ns = x.cost(f, 2.0, port=port, runs=args.runs)
            tp = min(timeit.repeat(lambda: nic.process(f, port, 2.0), number=n,
                                   repeat=5)) / n
            slot = nic.splices.lookup(bytes(f[26:38]))
            tt = min(timeit.repeat(lambda: sp.translate(nic.splices, slot, bytearray(f), 2.0),
                                   number=n, repeat=5)) / n
            print("%-40s %7d %8.2f us %10.2f us %6.1fx" % (name, ns, tp * 1e6, tt * 1e6,
                                                         tp * 1e9 / ns))
        other = Proxy(cport=41234).from_client(0, 0, 0x18, bytes(1460), ts=(1, 2))
        print("%-40s %7d" % ("1460 B, no rule: gate + hash miss", x.cost(other, 2.0,
                                                                        runs=args.runs)))
    finally:
        x.close()
    with XdpDataplane(NIC_MAC, **kw) as x2:
        print("%-40s %7d" % ("1460 B, empty table: gate only", x2.cost(other, 2.0,
                                                                      runs=args.runs)))


if __name__ == "__main__":
    main()
