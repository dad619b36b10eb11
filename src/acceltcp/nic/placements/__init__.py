"""The NIC placements side by side (docs/placements.md): where the dataplane runs relative
to the host stack -- ``inline`` (the host's process), ``process`` (a child process,
``nicd``), ``xdp`` (the kernel's driver path) on a real TAP, and ``sim`` (the simulator).
Each is a device the stack sends and receives frames through (``NicDevice``)."""

from .base import (
    PLACEMENTS, NicDevice, NicStartError, dataplane_kwargs, is_control_frame, make_dataplane,
    status_dict,
)
from .inline import InlineNicDevice
from .process import ProcessNicDevice
from .xdp import XdpNicDevice

__all__ = ["NicDevice", "InlineNicDevice", "ProcessNicDevice", "XdpNicDevice", "NicStartError",
           "dataplane_kwargs", "make_dataplane", "is_control_frame", "status_dict",
           "PLACEMENTS"]
