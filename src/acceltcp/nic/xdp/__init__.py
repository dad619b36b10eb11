"""The NIC dataplane in XDP/eBPF C (issue 10): nic.bpf.c and the Python that loads and
drives it.  docs/xdp.md describes what exists; nic/dataplane.py is the specification it
is tested against (tests/xdp)."""

from .bpf import XdpUnavailable

__all__ = ["XdpUnavailable"]
