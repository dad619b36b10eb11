"""The stack on a real TAP device against real Linux peers.

    runner.py    TapRunner (batched asyncio driver) and TapHost (TAP + netns + stack,
                 with or without the NIC in front)
    commands.py  `acceltcp serve` and `acceltcp connect`
    apps.py      the apps `serve` runs (echo, sink, kv, proxy, lb): options, build, stats

The NIC in front of the TAP (inline, its own process, XDP) is a device from
``nic.placements`` (docs/placements.md).

The host stack itself uses the TAP's checksum offload, TSO and LRO (see HostStack's
``tso`` and ``receive_frame(frame, csum_ok)``).
"""

from .runner import TapHost, TapRunner

__all__ = ["TapHost", "TapRunner"]
