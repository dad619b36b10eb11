"""The stack on a real TAP device against real Linux peers (issue 3).

    runner.py    TapRunner (batched asyncio driver) and TapHost (TAP + netns + stack)
    commands.py  `acceltcp serve` and `acceltcp connect`


The host stack itself uses the TAP's checksum offload, TSO and LRO (see HostStack's
``tso`` and ``receive_frame(frame, csum_ok)``).
"""

from .runner import TapHost, TapRunner

__all__ = ["TapHost", "TapRunner"]
