"""nic.placements.NicDevice, the contract TapRunner tells a NIC device from a bare TAP by: every
placement's device class has each of its methods, and the TAP has not the NIC's (no
root needed)."""

import inspect

from acceltcp.io.tap import TapDevice
from acceltcp.nic.placements import InlineNicDevice, NicDevice, ProcessNicDevice, XdpNicDevice

METHODS = [n for n, v in vars(NicDevice).items()
           if inspect.isfunction(v) and not n.startswith("_")]


def test_every_placement_keeps_the_contract():
    assert len(METHODS) >= 13 and "attach_runner" in METHODS
    for cls in (InlineNicDevice, ProcessNicDevice, XdpNicDevice):
        missing = [n for n in METHODS if not callable(getattr(cls, n, None))]
        assert missing == [], (cls.__name__, missing)
        assert cls.nic is True and cls.placement in ("inline", "process", "xdp")


def test_a_bare_tap_is_not_a_nic_device():
    assert not all(hasattr(TapDevice, n) for n in METHODS)
    assert not hasattr(TapDevice, "attach_runner")
