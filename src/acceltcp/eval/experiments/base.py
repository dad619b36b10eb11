"""What an experiment is and what it hands back (see the package docstring).

An `Experiment` is a name, the paper's figure or table it reproduces, and a ``run``
function taking a `Context` and returning a `Result`. ``run`` raises `Unavailable` when
it cannot measure here (no root, a tool missing, a mechanism not built, no accounting);
the runner writes that into the report and goes on with the next experiment.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

__all__ = ["Experiment", "Context", "Result", "Unavailable", "NIC_CHOICES", "CPU_CHOICES"]

NIC_CHOICES = ("python", "xdp", "both")
CPU_CHOICES = ("charged", "fixed")


class Unavailable(Exception):
    """The experiment cannot run here. ``status``: ``skipped`` (a prerequisite missing:
    root, a tool, a source checkout), ``not built`` (the mechanism does not exist in the
    project), ``not measured`` (the measurement needs something the project lacks)."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Context:
    """What every experiment gets. ``quick``: CI sizes. ``cpu``: the simulated server
    core's model (``acceltcp load --sim --server-cpu``): ``charged`` (its measured CPU:
    what this stack sustains on this machine) or ``fixed`` (the `eval.cost.CostModel`:
    a pure function of the seed, for tests). ``nic``: the NIC placements the real-network
    and NIC experiments use. ``advance()``: one step of the progress bar. ``cache``: sim
    runs shared between experiments of one invocation (same options, same run)."""

    out: Path
    quick: bool = False
    cpu: str = "charged"
    nic: str = "python"
    seed: int = 1
    advance: Callable[[], None] = lambda: None
    cache: dict = field(default_factory=dict)

    @property
    def repeat(self):
        """Runs per point (`simload.points`): one when the run is deterministic or quick."""
        return 1 if self.quick or self.cpu == "fixed" else 3


@dataclass
class Result:
    """``columns``/``rows``: the table (the CSV). ``comparison``: rows of {what, paper,
    ours} for the report. ``note``: one sentence -- where ours differs from the paper's
    and why. ``plot``: ``{"panels": [{"kind": "line"|"bar", "title", "xlabel", "ylabel",
    "x": [...], "series": {label: [y, ...]}, "logx"?}]}`` or None; what the PNG shows,
    kept in the JSON so it can be checked. ``samples``: the raw runs. ``facts``: named
    figures (ratios...) for the report and for tests."""

    columns: list
    rows: list
    comparison: list
    note: str
    plot: dict | None = None
    samples: list = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    setup: str = ""


@dataclass(frozen=True)
class Experiment:
    """``steps(ctx)``: progress-bar total. ``real_network``: creates namespaces/TAPs and
    needs root: run only when named."""

    name: str
    title: str
    paper: str
    run: Callable[[Context], Result]
    steps: Callable[[Context], int] = lambda ctx: 1
    real_network: bool = False
