"""Two host stacks on one simulated link, ready to use (tests, demos, benchmarks).

    loop = SimLoop()
    net = make_pair(loop, faults=FaultConfig(loss=0.01))
    a, b = net                       # HostStack 198.18.0.1 / 198.18.0.2 (RFC 2544 range)
    net.link, net.runner_a, net.runner_b

    net = make_pair(loop, nic_b=True)  # stack b behind a NIC dataplane (setup offload)
    net.nic_b.dataplane.counters

A server host of N cores (N stacks, one IP, behind one NIC with RSS steering):
`testbed.simcores.make_cores`.

The stacks sit on link ends (`io.sim.Link`) or, with `nic_a`/`nic_b`, behind the
simulator's NIC placement, `nic.placements.sim.SimNicDevice` (re-exported here). The module
lives in `testbed/` because a pair joins the host stack and the NIC dataplane, two
packages of one layer that do not import each other (tests/test_layering.py).
"""

import hashlib

from ..host.runner import StackRunner
from ..host.stack import HostStack
from ..io.sim import FaultConfig, Link
from ..nic.dataplane import NicDataplane
from ..nic.placements.sim import SimNicDevice

__all__ = ["SimNet", "SimPair", "SimNicDevice", "make_pair", "IP_A", "IP_B"]

IP_A = "198.18.0.1"
IP_B = "198.18.0.2"


class SimPair:
    """Result of `make_pair`: iterates as (stack_a, stack_b). `nic_a` / `nic_b`: the
    `SimNicDevice` in front of that stack, or None."""

    __slots__ = ("a", "b", "link", "runner_a", "runner_b", "loop", "nic_a", "nic_b")

    def __init__(self, loop, a, b, link, runner_a, runner_b, nic_a=None, nic_b=None):
        self.nic_a = nic_a
        self.nic_b = nic_b
        self.loop = loop
        self.a = a
        self.b = b
        self.link = link
        self.runner_a = runner_a
        self.runner_b = runner_b

    def __iter__(self):
        return iter((self.a, self.b))

    @property
    def runners(self):
        return (self.runner_a, self.runner_b)

    def stats(self):
        return {"a": self.a.stats(), "b": self.b.stats(),
                "link": {"ab": self.link.a.stats.as_dict(), "ba": self.link.b.stats.as_dict()}}

    def close(self):
        self.runner_a.close()
        self.runner_b.close()


class SimNet:
    """Builds stacks on simulated links of one SimLoop; deterministic for a given seed."""

    def __init__(self, loop, seed=0):
        self.loop = loop
        self.seed = seed
        self.pairs = []

    def _secret(self, name):
        return hashlib.blake2s(("%s:%s" % (self.seed, name)).encode(), digest_size=16).digest()

    def stack(self, device, ip, *, config=None, name="", **stack_kwargs):
        """A HostStack + StackRunner on `device` (clock = loop.time). -> (stack, runner)."""
        stack_kwargs.setdefault("secret", self._secret(name or ip))
        stack = HostStack(device, ip, self.loop.time, config=config, name=name, **stack_kwargs)
        return stack, StackRunner(self.loop, stack, device)

    def _nic(self, port, name, nic_kwargs, toe=()):
        kw = dict(nic_kwargs or {})
        kw.setdefault("secret", self._secret(name))
        return SimNicDevice(self.loop, port, NicDataplane(port.mac, **kw), toe=toe)

    def pair(self, *, config_a=None, config_b=None, faults=None, faults_ab=None, faults_ba=None,
             ip_a=IP_A, ip_b=IP_B, static_arp=False, stack_a=None, stack_b=None, strict=True,
             nic_a=False, nic_b=False, nic_kwargs=None, toe=(), **link_kwargs):
        """Two stacks on one `io.sim.Link` (`link_kwargs`: bandwidth_bps, delay,
        queue_limit, seed, mtu...). `faults` applies to both directions unless
        `faults_ab`/`faults_ba` is given. `stack_a`/`stack_b`: extra HostStack kwargs
        (isn=, netmask=, ephemeral=...). `strict`: TCB exceptions propagate (tests).
        `nic_a`/`nic_b`: put a `SimNicDevice` in front of that stack (`nic_kwargs`:
        NicDataplane kwargs; its cookie secret derives from the seed; `toe`: the TOE
        offloads of both NICs, nic/toe.py)."""
        if isinstance(faults, dict):
            faults = FaultConfig(**faults)
        link_kwargs.setdefault("seed", self.seed)
        link = Link(self.loop, faults_ab=faults_ab if faults_ab is not None else faults,
                    faults_ba=faults_ba if faults_ba is not None else faults, **link_kwargs)
        ka = dict(stack_a or {})
        kb = dict(stack_b or {})
        ka.setdefault("strict", strict)
        kb.setdefault("strict", strict)
        dev_a = self._nic(link.a, "nic-a", nic_kwargs, toe) if nic_a else None
        dev_b = self._nic(link.b, "nic-b", nic_kwargs, toe) if nic_b else None
        a, ra = self.stack(dev_a or link.a, ip_a, config=config_a, name="a", **ka)
        b, rb = self.stack(dev_b or link.b, ip_b, config=config_b, name="b", **kb)
        if static_arp:
            a.arp_add(b.ip, b.mac)
            b.arp_add(a.ip, a.mac)
        p = SimPair(self.loop, a, b, link, ra, rb, dev_a, dev_b)
        self.pairs.append(p)
        return p


def make_pair(loop, *, config_a=None, config_b=None, faults=None, seed=0, **kwargs):
    """Two ready stacks (198.18.0.1 on link end a, 198.18.0.2 on b) with runners."""
    return SimNet(loop, seed).pair(config_a=config_a, config_b=config_b, faults=faults,
                                   **kwargs)
