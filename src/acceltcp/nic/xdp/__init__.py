"""The NIC dataplane in XDP/eBPF C (issue 10): nic.bpf.c and the Python that builds its
maps and drives it.  docs/xdp.md describes what exists; nic/dataplane.py is the
specification it is tested against (tests/xdp)."""

from .bpf import XdpUnavailable
from .control import XdpDataplane

__all__ = ["XdpDataplane", "XdpUnavailable"]
