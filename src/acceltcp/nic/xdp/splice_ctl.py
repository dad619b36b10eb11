"""The splice path's control side (splice.h).  Not built yet: a Splice request is refused
(TABLE_FULL), as by a NicDataplane without a splice table."""

from ...wire import control
from ...wire.control import Splice, SpliceRefused
from ..dataplane import HOST
from .parts import Part

__all__ = ["SpliceControl"]


class SpliceControl(Part):
    def __init__(self, dp, capacity=None, idle=300.0):
        super().__init__(dp)
        self.capacity = 0

    def control(self, msg, seg_frame, host_mac, now):
        if type(msg) is not Splice:
            return None
        dp = self.dp
        dp._count("refused_splice")
        dp._count("refused_splice_full")
        return [(HOST, SpliceRefused(msg.splice_id, control.SPLICE_REFUSED_TABLE_FULL)
                 .frame(host_mac, dp.mac))]
