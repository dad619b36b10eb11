"""CPU by category: what the work of one host-stack entry is about, and the time the
application spends inside it (for a driver that accounts the host's CPU by category,
`host.runner`).

Theory of operation
-------------------
`entry_kind(frame)` reads a frame's bytes and the connection tables *before*
``receive_frame(frame)`` runs (nothing changes) and names the kind of work it will
cause: setup, teardown, data, nic or l2. The runner measures the entry and charges it to
that kind. Inside an entry the application's callbacks run too: with `app_timing` on,
`host.conns` times them (``app_ns``) and the socket calls they make (``send``, ``recv``:
data; ``close``, ``shutdown``, ``abort``: teardown) apart (``api_ns``), so the runner can
split the entry's CPU in those proportions. With it off nothing of this is on any path.

`CpuCategories` is a part of `host.stack.HostStack` (a base class): it reads the
stack's demux tables (``_table``, ``_embryonic``, ``_splicing``, ``_parked``,
``_timewait``, ``_listeners``), ``ip``, ``nic`` and its ``_conns``.
"""

import functools

from ..tcp import states
from ..wire import control
from ..wire.ethernet import ETHERTYPE_ARP, ETHERTYPE_IPV4
from ..wire.ipv4 import IPPROTO_TCP
from ..wire.tcp import FIN, RST, SYN

__all__ = ["CpuCategories"]

#: The NIC's reports to the host (host.offload takes them).
_NIC_REPORTS = frozenset((control.ETHERTYPE_CONTROL, control.ETHERTYPE_SPLICE_CLOSED))
_TEARDOWN_REPORTS = frozenset((control.TeardownAccepted.TYPE, control.TeardownRefused.TYPE,
                               control.TeardownDone.TYPE))
# The socket calls `app_timing` times, and the kind of work each is (host.conns).
_API_KINDS = (("send", "data"), ("recv", "data"), ("close", "teardown"),
              ("shutdown", "teardown"), ("abort", "teardown"))


class CpuCategories:
    """``entry_kind``, ``app_timing``, ``app_ns`` and ``api_ns`` of a HostStack."""

    __slots__ = ()

    #: The kinds `entry_kind` answers.
    ENTRY_KINDS = ("setup", "teardown", "data", "nic", "l2")

    def entry_kind(self, frame):
        """The category of the work `frame` will cause, from its bytes and the
        connection tables, read before ``receive_frame(frame)`` runs (nothing changes):

        * ``setup``: a SYN; a segment of a TCB in SYN-SENT / SYN-RECEIVED, of a
          listener's embryonic child, or of a child born from a cookie not yet reported;
          a segment with no TCB to a listening port (a cookie handshake's ACK); a 0x090A
          NewConnection from the NIC;
        * ``teardown``: a FIN or a RST; a segment of a TCB the app closed or in
          FIN-WAIT-1/2, CLOSING, LAST-ACK, TIME-WAIT; of a TIME-WAIT record, of a
          connection offered to the NIC (parked); a segment for no connection at all (a
          closed one's leftovers, answered with a RST); a NIC teardown report
          (TeardownAccepted / Refused / Done);
        * ``data``: any other segment of a synchronized connection (a splice's too);
        * ``nic``: the NIC's other control frames (0x090D SpliceClosed, 0x090E);
        * ``l2``: ARP, anything not TCP/IPv4 or not for us, a frame too short to read.
        """
        n = len(frame)
        if n < 14:
            return "l2"
        et = (frame[12] << 8) | frame[13]
        if et == ETHERTYPE_IPV4:
            # no IP options (the parser drops them): flags at 47, ports at 34-37
            if n < 54 or frame[14] != 0x45 or frame[23] != IPPROTO_TCP \
                    or bytes(frame[30:34]) != self.ip:
                return "l2"
            flags = frame[47]
            if flags & SYN:
                return "setup"
            if flags & (FIN | RST):
                return "teardown"
            key = bytes(frame[26:38])
            conn = self._table.get(key)
            if conn is not None:
                st = conn.state
                if st == states.ESTABLISHED or st == states.CLOSE_WAIT:
                    if conn.owner.embryonic:
                        return "setup"
                    return "teardown" if conn.app_closed else "data"
                return "setup" if st < states.ESTABLISHED else "teardown"
            if key in self._embryonic:
                return "setup"
            if key in self._splicing:
                return "data"
            if key in self._parked or key in self._timewait.records:
                return "teardown"
            if ((frame[36] << 8) | frame[37]) in self._listeners:
                return "setup"
            return "teardown"
        if et == ETHERTYPE_ARP or not self.nic:
            return "l2"
        if et == control.ETHERTYPE_NEW_CONNECTION:
            return "setup"
        if et == control.ETHERTYPE_CONTROL and n > 15 and frame[15] in _TEARDOWN_REPORTS:
            return "teardown"
        return "nic" if et in _NIC_REPORTS else "l2"

    @property
    def app_timing(self):
        """Time the application's callbacks (``app_ns``; see `host.conns`), and apart
        (``api_ns``) the socket calls it makes from them: ``send``, ``recv``, ``close``,
        ``shutdown``, ``abort`` -- wrapped on this instance while on. A splice's
        callback (``nsplice``) is not timed: its time stays the entry's."""
        return self._conns.app_timing

    @app_timing.setter
    def app_timing(self, on):
        conns = self._conns
        conns.app_timing = bool(on)
        # The socket calls, timed when made from a callback: instance attributes over
        # the methods while on (nothing on any path while off).
        for name, kind in _API_KINDS:
            if on:
                setattr(self, name, functools.partial(conns.api_call, kind,
                                                      getattr(type(self), name).__get__(self)))
            else:
                self.__dict__.pop(name, None)

    @property
    def app_ns(self):
        """Time (perf_counter ns) spent in the application's callbacks while
        ``app_timing`` was on (its socket calls from them included)."""
        return self._conns.app_ns

    @property
    def api_ns(self):
        """Of ``app_ns``, the socket calls by kind: {"data": send + recv, "teardown":
        close + shutdown + abort} (a live dict)."""
        return self._conns.api_ns
