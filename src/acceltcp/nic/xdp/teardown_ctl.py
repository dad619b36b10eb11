"""The teardown path's control side (teardown.h).  Not built yet: a Teardown request is
refused (TABLE_FULL), as by a NicDataplane without a teardown table."""

from ...wire import control
from ...wire.control import TeardownRefused
from ..dataplane import HOST
from .parts import Part

__all__ = ["TeardownControl"]


class TeardownControl(Part):
    def __init__(self, dp, capacity=None, report_interval=0.001, **engine_kwargs):
        super().__init__(dp)
        self.capacity = 0

    def control(self, msg, seg_frame, host_mac, now):
        if seg_frame is None:                             # only 0x090B carries a segment
            return None
        dp = self.dp
        dp._count("refused_teardown")
        return [(HOST, TeardownRefused(msg.flow_id, control.wire_key(seg_frame),
                                       control.TEARDOWN_REFUSED_TABLE_FULL)
                 .frame(host_mac, dp.mac))]
