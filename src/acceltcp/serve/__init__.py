"""The stack on a real TAP device against real Linux peers (issue 3).

    offload.py   OffloadStack / TsoConnection: checksum offload, TSO and LRO for HostStack
    runner.py    TapRunner (batched asyncio driver) and TapHost (TAP + netns + stack)
    commands.py  `acceltcp serve` and `acceltcp connect`
"""

from .offload import OffloadStack, TsoConnection
from .runner import TapHost, TapRunner

__all__ = ["OffloadStack", "TsoConnection", "TapHost", "TapRunner"]
