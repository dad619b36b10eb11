"""The NIC's status (0x090E): `StatusRequest` from the host, `StatusReport` (gauges and
counters) from the NIC, on request or unsolicited."""

import struct

from .base import _IdOnly, _Msg

__all__ = ["StatusRequest", "StatusReport"]


class StatusRequest(_IdOnly):
    """CONTROL 0x12, host -> NIC: ask for a StatusReport echoing request_id (8 bytes)."""

    __slots__ = ("request_id",)
    TYPE = 0x12

    def __init__(self, request_id=0):
        self.request_id = request_id


class StatusReport(_Msg):
    """CONTROL 0x13, NIC -> host (88 bytes). request_id 0 = unsolicited (periodic).
    Gauges (u32): teardown flows in progress / capacity, splice rules in use / capacity
    (rules: two per splice), listeners / capacity. Counters (u64, since NIC start):
    cookies sent (SYN-ACKs), cookies verified (NewConnection sent), cookie ACKs that
    failed verification, SYNs passed to the host, teardowns finished, splices closed,
    frames the NIC dropped."""

    __slots__ = ("request_id", "teardown_active", "teardown_capacity", "splice_rules",
                 "splice_capacity", "listeners", "listener_capacity", "cookies_sent",
                 "cookies_ok", "cookies_bad", "syn_to_host", "teardowns_done",
                 "splices_closed", "drops")
    TYPE = 0x13
    _S = struct.Struct("!BBH" "IIIIIII" "QQQQQQQ")

    def __init__(self, request_id=0, teardown_active=0, teardown_capacity=0, splice_rules=0,
                 splice_capacity=0, listeners=0, listener_capacity=0, cookies_sent=0,
                 cookies_ok=0, cookies_bad=0, syn_to_host=0, teardowns_done=0,
                 splices_closed=0, drops=0):
        self.request_id = request_id
        self.teardown_active = teardown_active
        self.teardown_capacity = teardown_capacity
        self.splice_rules = splice_rules
        self.splice_capacity = splice_capacity
        self.listeners = listeners
        self.listener_capacity = listener_capacity
        self.cookies_sent = cookies_sent
        self.cookies_ok = cookies_ok
        self.cookies_bad = cookies_bad
        self.syn_to_host = syn_to_host
        self.teardowns_done = teardowns_done
        self.splices_closed = splices_closed
        self.drops = drops

    def _raw(self):
        return tuple(getattr(self, s) for s in self.__slots__)

    @classmethod
    def _build(cls, t):
        return cls(*t)
