"""Per-frame cost of the teardown path's wire side: XdpDataplane.cost (BPF_PROG_TEST_RUN,
median ns of the program runs) beside the Python NIC's µs per frame for the same frames
(printed; run with -s).  The outcome asserted is only that both NICs agree on each
measured frame and that the measured state is a steady one (the frame leaves the flow as
it found it), never a time."""

import time

from acceltcp.nic.dataplane import WIRE

from .diff import norm
from .tdiff import TdPair, handover, peer

T0 = 1000.25


def _py_us(nic, frame, now, n=3000):
    t = time.perf_counter()
    for _ in range(n):
        nic.process(frame, WIRE, now)
    return (time.perf_counter() - t) / n * 1e6


def test_ack_path_cost(open_xdp):
    p = TdPair(open_xdp, capacity=4, report_interval=0.001)
    p.host(handover(b"c" * 3000, mss=1000, timestamps=True, ts_recent=10), T0)
    p.wire(peer(5000, 2000, ts=(11, 1)), T0 + 0.001)               # SND.UNA advances
    frames = {
        "old ACK (ignored: parse, checksum, lookup, RFC 9293 checks)":
            peer(5000, 1500, ts=(12, 1)),
        "data below RCV.NXT (answered: an ACK built in XDP, XDP_TX)":
            peer(4990, 2000, payload=b"0123456789", ts=(12, 1)),
        "not a teardown flow (lookup miss, to the host)":
            peer(5000, 2000, ts=(12, 1), cport=41234),
    }
    now = T0 + 0.002
    outs = {}
    for name, f in frames.items():                                  # both agree first
        outs[name] = p.wire(f, now)
        again = p.wire(f, now)                              # steady: the same TCP segment
        assert [(q, g[34:]) for q, g in again] == [(q, g[34:]) for q, g in outs[name]]
    rows = []
    for name, f in frames.items():                                  # then XDP alone
        before = p.xdp.teardown.entries()
        ns = p.xdp.cost(f, now, runs=2000)
        p.xdp.teardown.after_frame(now)                             # nothing queued
        assert p.xdp.teardown.entries()[0]["snd_una"] == before[0]["snd_una"]
        us = _py_us(p.nic, f, now)
        rows.append((name, ns, us, norm(outs[name])))
    for name, ns, us, _ in rows:
        print("%-62s XDP %5d ns/frame   Python %6.2f us/frame" % (name, ns, us))
