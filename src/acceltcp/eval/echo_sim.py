"""The echo experiment in the simulator: N clients against an echo server.

One client stack and one server stack on a simulated 10 Gbit/s link. Only the server
("the host" of the paper's figures) has CPU accounting on: its runner measures
``time.process_time`` around every frame and timer it handles, application included.

``setup_offload=True`` (short-lived only) puts a NIC dataplane in front of the server
(``nic.placements.sim.SimNicDevice``) and offloads the echo listener's handshakes to it (SYN
cookies, AccelTCP §4.1); ``teardown_offload=True`` hands each connection to the NIC when
the server closes it (§4.2). The NIC's work is not counted: it is not the host's CPU.
"""

import time
from dataclasses import dataclass

from ..apps.echo import EchoLoad, EchoServer
from ..testbed.simnet import make_pair
from ..io.sim import SimLoop
from ..tcp.config import TcpConfig


@dataclass
class EchoResult:
    mode: str
    transactions: int
    sim_seconds: float
    wall_seconds: float
    host_cpu_ns: int
    host_frames_in: int
    host_frames_out: int
    errors: dict

    @property
    def tps(self) -> float:
        """Transactions per second of simulated time."""
        return self.transactions / self.sim_seconds if self.sim_seconds else 0.0

    @property
    def frames_per_txn(self) -> float:
        return (self.host_frames_in + self.host_frames_out) / max(self.transactions, 1)

    @property
    def cpu_us_per_txn(self) -> float:
        return self.host_cpu_ns / 1e3 / max(self.transactions, 1)

    @property
    def cpu_us_per_frame_in(self) -> float:
        return self.host_cpu_ns / 1e3 / max(self.host_frames_in, 1)


def run_echo(*, persistent: bool, clients: int = 64, transactions: int = 20000,
             size: int = 64, warmup: int = 1000, seed: int = 1, on_progress=None,
             config: TcpConfig | None = None, setup_offload: bool = False,
             teardown_offload: bool = False, lazy_tcb: bool = True,
             zero_copy: bool = True) -> EchoResult:
    """Run one echo experiment; measurement starts after ``warmup`` transactions.
    ``lazy_tcb``, ``zero_copy``: the host optimizations of AccelTCP §5.2 (the server
    stack's lazy TCB creation; the stacks' opportunistic zero-copy, without ``config``)."""
    # 2MSL short enough that TIME-WAIT expiries fall inside the measured window: the
    # host pays for them too.
    cfg = config or TcpConfig(time_wait=0.002, zero_copy=zero_copy)
    with SimLoop(seed) as loop:
        net = make_pair(loop, config_a=cfg, config_b=cfg, bandwidth_bps=10e9, delay=10e-6,
                        queue_limit=8192, seed=seed,
                        stack_b={"max_syn_backlog": 8192, "lazy_tcb": lazy_tcb},
                        nic_b=setup_offload or teardown_offload)
        EchoServer(net.b, 7, close_after=0 if persistent else size, config=cfg,
                   offload_setup=setup_offload, offload_teardown=teardown_offload)
        load = EchoLoad(net.a, "198.18.0.2", 7, concurrency=clients, size=size,
                        per_conn=0 if persistent else 1, total=warmup + transactions,
                        config=cfg, on_progress=on_progress)
        load.start()
        loop.run_until(lambda: load.transactions >= warmup, timeout=3600)
        runner = net.runner_b
        runner.cpu_accounting = True
        runner.reset_cpu()
        c0 = net.b.counters
        t0, w0, n0 = loop.time(), time.perf_counter(), load.transactions
        loop.run_until(lambda: load.transactions >= warmup + transactions, timeout=3600)
        c1 = net.b.counters
        result = EchoResult(
            mode=("persistent" if persistent else "short-lived") +
                 (" + setup offload" if setup_offload else "") +
                 (" + teardown offload" if teardown_offload else "") +
                 ("" if lazy_tcb else ", lazy TCB off") +
                 ("" if cfg.zero_copy else ", zero-copy off"),
            transactions=load.transactions - n0, sim_seconds=loop.time() - t0,
            wall_seconds=time.perf_counter() - w0, host_cpu_ns=runner.cpu_ns,
            host_frames_in=c1["frames_in"] - c0["frames_in"],
            host_frames_out=c1["frames_out"] - c0["frames_out"],
            errors=dict(load.errors))
        runner.cpu_accounting = False
        load.stop()
        return result
