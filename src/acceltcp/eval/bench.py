"""``acceltcp bench``: host CPU per frame and per transaction, and the bulk rate.

Everything runs in the simulator, side by side in one process run, each figure the
median of ``--repeat`` runs. Host CPU is ``time.process_time`` measured by the runner
around every frame and timer the measured stack handles (its application included);
the simulator's own work (links, the client stack) is outside the measurement.
"""

import json
import random
import statistics
import time

from ..apps.bulk import SinkServer, Source
from ..testbed.simnet import make_pair
from ..io.sim import SimLoop
from ..tcp.config import TcpConfig
from ..nic.splice import BYTES_PER_RULE
from ..nic.teardown import FLOW_ENTRY_BYTES
from .echo_sim import run_echo

MiB = 1 << 20
TARGET_US_PER_FRAME = 15.0      # persistent echo, per received data frame
TARGET_SHORT_RATIO = 4.0        # short-lived / persistent, per transaction
TARGET_OFFLOAD_GAIN = 2.3       # no offload / setup+teardown offload, per transaction
TARGET_HOST_OPT_GAIN = 3.8      # ... with the host optimizations (the paper's Table 3)
TARGET_OFFLOAD_VS_PERSISTENT = 1.3


def run_bulk(nbytes: int, seed: int = 1) -> dict:
    """A → B bulk transfer; CPU of the receiving and of the sending host."""
    cfg = TcpConfig(rcv_buf=1 << 20, snd_buf=1 << 20)
    data = random.Random(seed).randbytes(nbytes)
    with SimLoop(seed) as loop:
        net = make_pair(loop, config_a=cfg, config_b=cfg, bandwidth_bps=10e9, delay=20e-6,
                        queue_limit=4096, seed=seed)
        sink = SinkServer(net.b, 9, config=cfg)
        for r in net.runners:
            r.cpu_accounting = True
        t0 = loop.time()
        Source(net.a, "198.18.0.2", 9, data, config=cfg)
        loop.run_until(lambda: sink.bytes >= nbytes, timeout=3600)
        sim = loop.time() - t0
        rx, tx = net.runner_b.cpu_ns / 1e9, net.runner_a.cpu_ns / 1e9
        frames = net.b.counters["frames_in"]
    return {"bytes": nbytes, "sim_s": sim, "rx_cpu_s": rx, "tx_cpu_s": tx,
            "rx_mb_per_cpu_s": nbytes / 1e6 / rx, "tx_mb_per_cpu_s": nbytes / 1e6 / tx,
            "rx_us_per_frame": rx * 1e6 / frames}


def _median(runs, key):
    return statistics.median(getattr(r, key) if not isinstance(r, dict) else r[key]
                             for r in runs)


def main(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from .progress import progress_bar

    console = Console()
    t_start = time.perf_counter()
    pers, short, offl, eager, full, bulk = [], [], [], [], [], []
    with progress_bar() as progress:
        task = progress.add_task("bench", total=6 * args.repeat)
        for i in range(args.repeat):
            pers.append(run_echo(persistent=True, transactions=args.transactions, seed=i + 1))
            progress.advance(task)
            # Table 3's rows: without the host optimizations, then with them
            short.append(run_echo(persistent=False, transactions=args.transactions, seed=i + 1,
                                  zero_copy=False))
            progress.advance(task)
            offl.append(run_echo(persistent=False, transactions=args.transactions, seed=i + 1,
                                 setup_offload=True, zero_copy=False))
            progress.advance(task)
            eager.append(run_echo(persistent=False, transactions=args.transactions,
                                  seed=i + 1, setup_offload=True, teardown_offload=True,
                                  lazy_tcb=False, zero_copy=False))
            progress.advance(task)
            full.append(run_echo(persistent=False, transactions=args.transactions, seed=i + 1,
                                 setup_offload=True, teardown_offload=True))
            progress.advance(task)
            bulk.append(run_bulk(args.bulk_mib * MiB, seed=i + 1))
            progress.advance(task)

    p_txn = _median(pers, "cpu_us_per_txn")
    p_frame = _median(pers, "cpu_us_per_frame_in")
    s_txn = _median(short, "cpu_us_per_txn")
    s_frame = _median(short, "cpu_us_per_frame_in")
    ratio = s_txn / p_txn
    o_txn = _median(offl, "cpu_us_per_txn")
    o_frame = _median(offl, "cpu_us_per_frame_in")
    e_txn = _median(eager, "cpu_us_per_txn")
    e_frame = _median(eager, "cpu_us_per_frame_in")
    f_txn = _median(full, "cpu_us_per_txn")
    f_frame = _median(full, "cpu_us_per_frame_in")
    figures = {
        "persistent_us_per_txn": p_txn, "persistent_us_per_frame_in": p_frame,
        "persistent_frames_per_txn": _median(pers, "frames_per_txn"),
        "short_lived_us_per_txn": s_txn, "short_lived_us_per_frame_in": s_frame,
        "short_lived_frames_per_txn": _median(short, "frames_per_txn"),
        "short_over_persistent": ratio,
        "setup_offload_us_per_txn": o_txn, "setup_offload_us_per_frame_in": o_frame,
        "setup_offload_frames_per_txn": _median(offl, "frames_per_txn"),
        "setup_offload_over_short": o_txn / s_txn,
        "setup_teardown_eager_us_per_txn": e_txn,
        "setup_teardown_eager_frames_per_txn": _median(eager, "frames_per_txn"),
        "host_opt_gain": e_txn / f_txn,
        "setup_teardown_us_per_txn": f_txn, "setup_teardown_us_per_frame_in": f_frame,
        "setup_teardown_frames_per_txn": _median(full, "frames_per_txn"),
        "short_over_setup_teardown": s_txn / f_txn,
        "setup_teardown_over_persistent": f_txn / p_txn,
        "teardown_flow_bytes": FLOW_ENTRY_BYTES, "splice_rule_bytes": BYTES_PER_RULE,
        "bulk_mib": args.bulk_mib,
        "bulk_rx_mb_per_cpu_s": _median(bulk, "rx_mb_per_cpu_s"),
        "bulk_tx_mb_per_cpu_s": _median(bulk, "tx_mb_per_cpu_s"),
        "bulk_rx_us_per_frame": _median(bulk, "rx_us_per_frame"),
        "repeat": args.repeat, "transactions": args.transactions,
        "wall_s": time.perf_counter() - t_start,
    }

    table = Table(title=f"host CPU, 64 B echo and {args.bulk_mib} MiB bulk "
                        f"(median of {args.repeat})")
    table.add_column("workload")
    table.add_column("frames / txn", justify="right")
    table.add_column("µs / txn", justify="right")
    table.add_column("µs / frame in", justify="right")
    table.add_column("MB / CPU-s", justify="right")
    table.add_row("echo, persistent", f"{figures['persistent_frames_per_txn']:.2f}",
                  f"{p_txn:.1f}", f"{p_frame:.1f}", "")
    table.add_row("echo, short-lived", f"{figures['short_lived_frames_per_txn']:.2f}",
                  f"{s_txn:.1f}", f"{s_frame:.1f}", "")
    table.add_row("echo, short-lived + setup offload",
                  f"{figures['setup_offload_frames_per_txn']:.2f}", f"{o_txn:.1f}",
                  f"{o_frame:.1f}", "")
    table.add_row("echo, short-lived + setup + teardown offload",
                  f"{figures['setup_teardown_eager_frames_per_txn']:.2f}", f"{e_txn:.1f}",
                  f"{e_frame:.1f}", "")
    table.add_row("  + host optimizations (lazy TCB, zero-copy)",
                  f"{figures['setup_teardown_frames_per_txn']:.2f}", f"{f_txn:.1f}",
                  f"{f_frame:.1f}", "")
    table.add_row("bulk, receiver", "", "", f"{figures['bulk_rx_us_per_frame']:.1f}",
                  f"{figures['bulk_rx_mb_per_cpu_s']:.1f}")
    table.add_row("bulk, sender", "", "", "", f"{figures['bulk_tx_mb_per_cpu_s']:.1f}")
    console.print(table)

    def verdict(ok):
        return "[green]met[/]" if ok else "[red]missed[/]"

    console.print(f"persistent echo: {p_frame:.1f} µs per received data frame "
                  f"(target ≤ {TARGET_US_PER_FRAME:.0f}): {verdict(p_frame <= TARGET_US_PER_FRAME)}")
    console.print(f"short-lived / persistent per transaction: {ratio:.2f}x "
                  f"(target ≤ {TARGET_SHORT_RATIO:.0f}x): {verdict(ratio <= TARGET_SHORT_RATIO)}")
    console.print(f"setup offload / short-lived per transaction: {o_txn / s_txn:.2f}x "
                  f"(the NIC answers the handshakes)")
    gain = s_txn / e_txn
    console.print(f"short-lived, no offload / setup+teardown offload: {gain:.2f}x fewer host µs "
                  f"(target ≥ {TARGET_OFFLOAD_GAIN}x): {verdict(gain >= TARGET_OFFLOAD_GAIN)}")
    gain = s_txn / f_txn
    console.print(f"  with the host optimizations (§5.2, {e_txn / f_txn:.2f}x of it): "
                  f"{gain:.2f}x (target ≥ {TARGET_HOST_OPT_GAIN}x): "
                  f"{verdict(gain >= TARGET_HOST_OPT_GAIN)}")
    rel = f_txn / p_txn
    console.print(f"short-lived with offload and host optimizations / persistent: {rel:.2f}x "
                  f"(target ≤ {TARGET_OFFLOAD_VS_PERSISTENT:.2f}x): "
                  f"{verdict(rel <= TARGET_OFFLOAD_VS_PERSISTENT)}")
    console.print(f"NIC table state: {FLOW_ENTRY_BYTES} B per teardown flow (target ≤ 64): "
                  f"{verdict(FLOW_ENTRY_BYTES <= 64)}; {BYTES_PER_RULE} B per splice rule "
                  f"(target ≤ 96): {verdict(BYTES_PER_RULE <= 96)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0
