"""What the simulated server core's work costs in virtual time (``acceltcp load --sim
--server-cpu MODEL``).

Three models:

* ``charged`` -- the CPU the server's runner *measured* (``time.process_time`` around
  every frame and timer, application included) passes on the virtual clock. What this
  Python stack sustains on one core, for measurements and benchmarks; but the outcome
  of a run (how many transactions per simulated second, even how many frames each
  takes: an ACK delayed or piggybacked depends on when the core gets to it) then
  depends on how fast this machine ran at that moment, so it differs from run to run
  and more on a loaded machine.
* ``fixed`` -- a `CostModel`: fixed nanoseconds per frame the server host receives, per
  frame it sends, per timer entry of its stack and per connection its application
  accepts. The virtual time a run takes, and so the whole run, is then a pure function
  of the seed and the arguments: the model for tests. The NIC's frames cost nothing:
  the NIC is not the host's CPU (what reaches the host from it, data or control frames,
  counts as received).
* ``free`` -- processing takes no virtual time (no server core at all; the link bounds
  the rate). The CPU is still measured and reported, not charged.

``parse_cpu_model("fixed:rx=8000,conn=30000")`` -> ("fixed", CostModel(...)); the
defaults are of the order the charged model measures for this stack on the machine it
was developed on (persistent 64 B echo: one frame in, one out, 15 us; a short-lived one:
six frames and a connection, ~65 us), so that rates under the fixed model look like the
charged ones. Per-frame prices do not capture what a frame does (a NIC's 0x090A frame
carries a whole handshake), hence the per-connection term; the fixed model is for
deterministic runs, figures about this stack's speed come from the charged one.
"""

from dataclasses import dataclass, fields

__all__ = ["CostModel", "CPU_MODELS", "parse_cpu_model"]

CPU_MODELS = ("charged", "fixed", "free")


@dataclass(frozen=True)
class CostModel:
    """Fixed CPU cost, in integer nanoseconds, of the server host's work."""

    rx: int = 10_000        # per frame handed to the stack (from the link or the NIC)
    tx: int = 5_000         # per frame the stack sends
    timer: int = 2_000      # per timer entry of the stack (RTO, delayed ACK, TIME-WAIT)
    conn: int = 20_000      # per connection the server application accepts

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError("%s must be an integer number of ns >= 0, got %r"
                                 % (f.name, v))

    def ns(self, frames_in, frames_out, timers, conns):
        """The CPU time (ns) of that much work."""
        return (frames_in * self.rx + frames_out * self.tx + timers * self.timer +
                conns * self.conn)

    def spec(self):
        """The ``--server-cpu`` text that gives this model."""
        return "fixed:" + ",".join("%s=%d" % (f.name, getattr(self, f.name))
                                   for f in fields(self))


def parse_cpu_model(text):
    """``charged`` | ``free`` | ``fixed[:KEY=NS,...]`` (keys rx, tx, timer, conn; the
    others keep their defaults) -> (kind, CostModel or None). ValueError if malformed."""
    kind, sep, rest = text.partition(":")
    if kind not in CPU_MODELS:
        raise ValueError("unknown CPU model %r (charged, fixed[:rx=NS,tx=NS,timer=NS,"
                         "conn=NS] or free)" % kind)
    if kind != "fixed":
        if sep:
            raise ValueError("%s takes no parameters" % kind)
        return kind, None
    names = {f.name for f in fields(CostModel)}
    kw = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in names:
            raise ValueError("fixed: expected KEY=NS with KEY one of %s, got %r"
                             % (", ".join(sorted(names)), item))
        if key in kw:
            raise ValueError("fixed: %s given twice" % key)
        try:
            kw[key] = int(value)
        except ValueError:
            raise ValueError("fixed: %s must be an integer number of ns, got %r"
                             % (key, value)) from None
    return kind, CostModel(**kw)
