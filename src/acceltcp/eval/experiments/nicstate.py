"""``nic``: the NIC's state and speed (the paper's §4 text).

State: bytes per entry of each NIC table and what the default tables hold, from the
modules' own constants and ``memory_bytes`` (nic/dataplane.py, nic/teardown.py,
nic/splice.py, nic/timer_wheel.py) -- no estimate. Speed: frames per second the Python
NIC (``NicDataplane.process``, in this process, one core) turns a SYN into a SYN-cookie
SYN-ACK, a cookie ACK into the host's 0x090A frame, and translates a spliced 64 B and
1460 B data segment, each the best of a few timed batches; and, counted not timed, how
many of the spliced frames reached the host (none should). With ``--nic xdp|both`` the
XDP dataplane's per-frame cost comes from ``benchmarks/xdp_cost.py`` (root, BPF test
runs; no device is created).
"""

import time

from .base import Result, Unavailable

__all__ = ["nic", "nic_steps"]

MAC = bytes.fromhex("020000000001")
PEER = bytes.fromhex("020000000002")
SRV = bytes([10, 0, 0, 1])
CLI = bytes([10, 0, 0, 2])
BACK = bytes([10, 0, 1, 3])
NOW = 1000.25


def _rate(fn, frames, batches):
    """Best frames/s of `batches` timed passes over `frames`."""
    best = None
    for _ in range(batches):
        t0 = time.perf_counter()
        for f in frames:
            fn(f)
        dt = time.perf_counter() - t0
        best = dt if best is None or dt < best else best
    return len(frames) / best if best else None


def _setup_rates(n, batches):
    from ...nic.dataplane import HOST, WIRE, NicDataplane
    from ...wire.control import Listen
    from ...wire.tcp import build_tcp_frame, tcp_options

    nic = NicDataplane(MAC, secret=bytes(range(32)))
    nic.process(Listen(SRV, 80, 1460, 7, True, True).frame(MAC, PEER), HOST, NOW)
    syns = [build_tcp_frame(MAC, PEER, CLI, SRV, 1, 1024 + i % 60000, 80, 7777 * i & 0xFFFFFFFF,
                            0, 0x02, 64240, tcp_options(mss=1460, wscale=7, sack_permitted=True,
                                                        timestamps=(123456, 0)), b"")
            for i in range(n)]
    acks = []
    for syn in syns:
        (_, sa), = nic.process(syn, WIRE, NOW)
        isn = int.from_bytes(sa[38:42], "big")
        tsval = int.from_bytes(sa[62:66], "big")
        seq = (int.from_bytes(syn[38:42], "big") + 1) & 0xFFFFFFFF
        acks.append(build_tcp_frame(MAC, PEER, CLI, SRV, 2, int.from_bytes(syn[34:36], "big"),
                                    80, seq, (isn + 1) & 0xFFFFFFFF, 0x10, 502,
                                    tcp_options(timestamps=(123460, tsval)), b""))
    c0 = dict(nic.counters)
    syn_rate = _rate(lambda f: nic.process(f, WIRE, NOW), syns, batches)
    ack_rate = _rate(lambda f: nic.process(f, WIRE, NOW), acks, batches)
    c = nic.counters
    return {"syn_ack_per_s": syn_rate, "cookie_ack_per_s": ack_rate,
            "syn_cookies_sent": c["syn_cookies_sent"] - c0["syn_cookies_sent"],
            "cookie_ack_ok": c["cookie_ack_ok"] - c0["cookie_ack_ok"],
            "frames": n * batches}


def _splice_rates(n, batches, size):
    from ...nic.dataplane import HOST, WIRE, NicDataplane
    from ...wire.control import Splice, SpliceSide, splice_rules
    from ...wire.tcp import build_tcp_frame, tcp_options

    nic = NicDataplane(MAC, secret=bytes(range(32)))
    c = SpliceSide(MAC, SRV, 8080, PEER, CLI, 40000, snd_nxt=1000, rcv_nxt=2000, snd_wnd=1 << 20)
    s = SpliceSide(MAC, SRV, 50000, PEER, BACK, 80, snd_nxt=3000, rcv_nxt=4000,
                   snd_wnd=1 << 20)
    rule_a, rule_b = splice_rules(c, s)
    out = nic.process(Splice(1, rule_a, rule_b).frame(MAC, PEER), HOST, NOW)
    if nic.counters["splices_installed"] != 1:
        raise RuntimeError("the splice was not installed: %r" % (out,))
    payload = bytes(size)
    frames = [build_tcp_frame(MAC, PEER, CLI, SRV, 3, 40000, 8080,
                              (2000 + (i % 1000) * size) & 0xFFFFFFFF, 1000, 0x18, 1000,
                              tcp_options(), payload) for i in range(n)]
    to = {WIRE: 0, HOST: 0}
    for port, _ in nic.process(frames[0], WIRE, NOW):
        to[port] += 1
    c0 = nic.counters["splice_frames"]
    rate = _rate(lambda f: nic.process(f, WIRE, NOW), frames, batches)
    # counted, not timed: where the spliced frames go
    for f in frames:
        for port, _ in nic.process(f, WIRE, NOW):
            to[port] += 1
    return {"frames_per_s": rate, "payload": size,
            "spliced": nic.counters["splice_frames"] - c0,
            "to_wire": to[WIRE], "to_host": to[HOST], "sent": len(frames) + 1}


def _state():
    from ...nic import dataplane as dp, splice as sp, teardown as td
    from ...nic.timer_wheel import TimerWheel

    nic = dp.NicDataplane(MAC, secret=bytes(32))
    t = nic.teardown
    wheel64k = TimerWheel(65536, t.wheel.slots, 0.001, 0.0)
    return [
        {"table": "teardown flow (table + timer wheel)",
         "bytes_per_entry": td.FLOW_ENTRY_BYTES,
         "entries": t.capacity, "table_bytes": t.memory_bytes,
         "paper": "26 B flow state in SRAM; > 256k flows being closed"},
        {"table": "teardown index (hash)", "bytes_per_entry": td.INDEX_ENTRY_BYTES,
         "entries": t.capacity, "table_bytes": t.index_bytes, "paper": "-"},
        {"table": "timer bitmap (one, 64k flows)", "bytes_per_entry": None,
         "entries": 65536, "table_bytes": wheel64k.bitmap_bytes,
         "paper": "8 KB per bitmap for 64k flows"},
        {"table": "splice rule", "bytes_per_entry": sp.BYTES_PER_RULE,
         "entries": nic.splices.capacity, "table_bytes": nic.splices.memory_bytes,
         "paper": "offsets (4 B each) + 4-tuple in the request; size not given"},
        {"table": "listener", "bytes_per_entry": dp.LISTENER_ENTRY_BYTES,
         "entries": nic.listeners.capacity, "table_bytes": nic.listeners.memory_bytes,
         "paper": "-"},
        {"table": "handed-over flow", "bytes_per_entry": dp.HANDED_ENTRY_BYTES,
         "entries": nic.handed.capacity, "table_bytes": nic.handed.memory_bytes,
         "paper": "-"},
    ]


def _xdp(ctx):
    """The XDP dataplane's per-frame cost: benchmarks/xdp_cost.py (root)."""
    import contextlib
    import io
    import json
    import os

    from .realnet import bench_module
    if os.geteuid() != 0:
        raise Unavailable("skipped", "XDP: needs root (BPF test runs)")
    mod = bench_module("xdp_cost")
    path = ctx.out / "nic-xdp_cost.json"
    with contextlib.redirect_stdout(io.StringIO()):       # its own table: in the JSON
        rc = mod.main(["--runs", "2000" if ctx.quick else "20000", "--json", str(path)])
    if rc != 0 or not path.exists():
        raise Unavailable("skipped", "XDP: benchmarks/xdp_cost.py exit %s (XDP objects "
                                     "built? `make xdp`)" % rc)
    return json.loads(path.read_text())


def nic_steps(ctx):
    return 4 + (ctx.nic in ("xdp", "both"))


def nic(ctx):
    n, batches = (2000, 3) if ctx.quick else (20000, 5)
    state = _state()
    ctx.advance()
    setup = _setup_rates(n, batches)
    ctx.advance()
    sp64 = _splice_rates(n, batches, 64)
    ctx.advance()
    sp1460 = _splice_rates(n, batches, 1460)
    ctx.advance()
    xdp, xdp_why = None, None
    if ctx.nic in ("xdp", "both"):
        try:
            xdp = _xdp(ctx)
        except Unavailable as e:
            xdp_why = e.reason
        ctx.advance()
    rows = [dict(r, kind="state") for r in state]
    speed = [("SYN -> SYN-cookie SYN-ACK", setup["syn_ack_per_s"], "-"),
             ("cookie ACK -> 0x090A to host", setup["cookie_ack_per_s"], "-"),
             ("spliced 64 B segment", sp64["frames_per_s"],
              "L3 forward at NIC 28.8 Gbit/s at 64 B (Table 2)"),
             ("spliced 1460 B segment", sp1460["frames_per_s"],
              "L3 forward at NIC 40 Gbit/s at 1500 B (Table 2)")]
    for what, rate, paper in speed:
        rows.append({"kind": "python NIC frames/s", "table": what, "frames_per_s": rate,
                     "paper": paper})
    if xdp:
        for r in xdp:
            rows.append({"kind": "xdp ns/frame", "table": r.get("frame"),
                         "xdp_ns": r.get("xdp_ns"), "python_ns": r.get("python_ns")})
    columns = []
    for r in rows:
        for k in r:
            if k not in columns:
                columns.append(k)
    comparison = [{"what": r["table"] + " state", "paper": r["paper"],
                   "ours": "%s B/entry, %s entries, %s B" % (
                       r["bytes_per_entry"] if r["bytes_per_entry"] is not None else "-",
                       format(r["entries"], ","), format(r["table_bytes"], ","))}
                  for r in state]
    for what, rate, paper in speed:
        comparison.append({"what": what + " (Python NIC, one core)", "paper": paper,
                           "ours": "%s frames/s" % format(rate or 0, ",.0f")})
    comparison.append({"what": "spliced frames reaching the host", "paper": "0 (zero DMA)",
                       "ours": "%d of %d (64 B), %d of %d (1460 B)" % (
                           sp64["to_host"], sp64["sent"], sp1460["to_host"], sp1460["sent"])})
    if xdp:
        for r in xdp:
            ns = r.get("xdp_ns")
            comparison.append({"what": "%s (XDP, BPF test run)" % r.get("frame"),
                               "paper": "-",
                               "ours": "%s ns/frame (~%s frames/s per core); Python NIC "
                                       "%s ns" % (ns, format(1e9 / ns, ",.0f") if ns else "-",
                                                  r.get("python_ns"))})
    elif ctx.nic in ("xdp", "both"):
        comparison.append({"what": "XDP dataplane per-frame cost", "paper": "-",
                           "ours": xdp_why})
    note = ("Our teardown entry is 64 B (the paper's 26 B -- 4-tuple, state, sequence "
            "numbers, RTO -- plus the peer's MAC, windows, window scales, timestamps and "
            "retransmission counters), so the paper's SRAM would hold fewer of our flows; "
            "the Python NIC's rates are a software "
            "model's on one host core, orders of magnitude below the Agilio's 120 "
            "flow-processing cores, and are not the point: the counts are (the splice "
            "keeps data frames off the host).")
    plot = {"panels": [
        {"kind": "bar", "title": "NIC table state per entry", "xlabel": "table",
         "ylabel": "bytes per entry", "x": [r["table"] for r in state
                                             if r["bytes_per_entry"] is not None],
         "series": {"ours": [r["bytes_per_entry"] for r in state
                             if r["bytes_per_entry"] is not None]}},
        {"kind": "bar", "title": "Python NIC, one core", "xlabel": "frame",
         "ylabel": "frames/s", "x": [s[0] for s in speed],
         "series": {"ours": [s[1] for s in speed]}}]}
    facts = {"splice64": sp64, "splice1460": sp1460, "setup": setup,
             "teardown_flow_bytes": state[0]["bytes_per_entry"],
             "splice_rule_bytes": state[3]["bytes_per_entry"]}
    return Result(columns=columns, rows=rows, comparison=comparison, note=note, plot=plot,
                  samples=[{"setup": setup, "splice64": sp64, "splice1460": sp1460,
                            "xdp": xdp}], facts=facts,
                  setup="NicDataplane in this process: %d distinct SYNs, their cookie ACKs, "
                        "and %d segments of one installed splice (64 B and 1460 B payload), "
                        "best of %d timed passes; table sizes from the modules' constants "
                        "and the default NicDataplane capacities." % (n, n, batches))
