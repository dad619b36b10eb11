"""``acceltcp eval``: the paper's evaluation, table by table and figure by figure.

Theory of operation
-------------------
Each experiment (`base.Experiment`) is registered here under the paper's name (``table3``,
``fig1``...), with the paper's claim and a ``run(ctx) -> Result`` function. The runner
(`runner.run_experiments`) runs the ones asked for, each under its own progress bar,
and writes for each ``DIR/<name>.json`` (the result, its raw samples, the plotted series,
the machine and version), ``DIR/<name>.csv`` (its table) and ``DIR/<name>.png`` (its
plot, matplotlib's Agg backend), then ``DIR/report.md``: every experiment's table of
the paper's numbers beside ours, one sentence on where and why they differ, and its plot.

An experiment that cannot measure here raises `base.Unavailable` (a prerequisite
missing, the mechanism not built, no accounting for it); one that fails raises anything
else. Either way the runner records it in the JSON and the report and goes on.

Kinds: the simulator's experiments (`sim`, `nicstate`) need neither root nor a network
and, with ``--cpu fixed``, are a pure function of the seed and the options. The
real-network ones (`realnet`: thin calls into ``benchmarks/``) create namespaces and a
TAP and need root: they run only when named.
"""

from . import nicstate, realnet, sim
from .base import Context, Experiment, Result, Unavailable

__all__ = ["EXPERIMENTS", "Context", "Experiment", "Result", "Unavailable", "select"]

_ALL = [
    Experiment("table3", "Table 3: contribution of each offload, one core, 64 B",
               "1.0 / 1.4 / 2.3 / 3.8x (0.89 / 1.21 / 2.06 / 3.42 Mtps)",
               sim.table3, sim.table3_steps),
    Experiment("fig1", "Figure 1: persistent vs one connection per request, 64 B echo",
               "persistent 2.6-3.2x faster", sim.fig1, sim.fig1_steps),
    Experiment("fig10", "Figure 10: 64 B transactions over 1-8 simulated cores, offloads "
               "vs persistent",
               "2.2-3.8x vs mTCP short-lived; +13-54 % vs persistent (1-4 cores)",
               sim.fig10, sim.fig10_steps),
    Experiment("fig11", "Figure 11: short-lived connections over message size",
               "2.5-3.6x, 64 B-4 KiB", sim.fig11, sim.fig11_steps),
    Experiment("nic", "Section 4: NIC state per flow, table capacity, NIC frame rates",
               "26 B per teardown flow, > 256k flows; 8 KB bitmap per 64k flows",
               nicstate.nic, nicstate.nic_steps),
    Experiment("table1", "Table 1: CPU breakdown of a short-lived echo server",
               "60.5 % of CPU in connection setup/teardown", sim.table1, sim.breakdown_steps),
    Experiment("fig14", "Figure 14: Redis CPU breakdown",
               "AccelTCP saves up to 75 % of TCP cycles", sim.fig14, sim.breakdown_steps),
    Experiment("fig1-real", "Figure 1 on the real network",
               "persistent 2.6-3.2x faster", realnet.fig1_real, real_network=True),
    Experiment("table2", "Table 2: L7 proxy vs splice vs L3 forward (real network)",
               "proxy 2.1/5.3, splice 2.3/6.3, NIC forward 28.8/40.0 Gbit/s (64 B/1500 B)",
               realnet.table2, real_network=True),
    Experiment("fig10-real", "Figure 10 on real cores (real network)",
               "2.2-3.8x vs mTCP short-lived", realnet.fig10_real, real_network=True),
    Experiment("fig12", "Figure 12: proxy throughput over message size (real network)",
               "1.4-2.2x", realnet.fig12, real_network=True),
    Experiment("fig13", "Figure 13: proxy over transactions per connection (real network)",
               "1.8x -> 2.4x (1..128)", realnet.fig13, real_network=True),
    Experiment("table4", "Table 4: Redis short-lived, USR workload (real network)",
               "1.6-2.3x", realnet.table4, real_network=True),
    Experiment("table5", "Table 5: L7 LB, SpecWeb-like (real network)",
               "11.9x throughput, 13.6x lower latency", realnet.table5, real_network=True),
]

EXPERIMENTS = {e.name: e for e in _ALL}


def select(names):
    """The experiments to run: `names` in order (KeyError on an unknown one), or, when
    empty, every experiment that needs no real network; ``all`` stands for every
    experiment, the real-network ones after the simulator's (the committed report)."""
    if not names:
        return [e for e in _ALL if not e.real_network]
    if "all" in names:
        names = [e.name for e in _ALL if not e.real_network] + \
            [e.name for e in _ALL if e.real_network]
    out = []
    for n in names:
        if n not in EXPERIMENTS:
            raise KeyError(n)
        if EXPERIMENTS[n] not in out:
            out.append(EXPERIMENTS[n])
    return out
