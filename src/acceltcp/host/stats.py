"""What the host stack reports: TCB counter totals and the JSON-able snapshot.

Theory of operation
-------------------
Each TCB counts its own segments, bytes, retransmissions, ... (`TCB_COUNTERS`). A live
TCB's counters are read where they are; a finished TCB's must be kept before it is
freed, and the short-lived connection's path is a hot path, so `ClosedTcbStats.add`
only appends the counter values (one C call, ``operator.attrgetter``) to a pending list,
folded into the totals 256 at a time and whenever they are read. A quasi-TCB
(`tcp.quasi`) reports its few counters itself, without being promoted.

`complete` finishes ``HostStack.counters``; `snapshot` builds ``HostStack.stats()`` from
the stack's public views only.
"""

import collections
import operator

from ..tcp import states
from ..tcp.quasi import QuasiTcb
from ..wire.ethernet import mac_to_str
from ..wire.ipv4 import ip_to_str

__all__ = ["TCB_COUNTERS", "ClosedTcbStats", "complete", "counter_values", "live_total",
           "snapshot"]

#: Per-TCB counters (TcpConnection attributes) folded into the stack totals.
TCB_COUNTERS = ("segs_in", "segs_out", "bytes_in", "bytes_out", "retransmits",
                "fast_retransmits", "rto_timeouts", "dupacks_in", "ooo_segments",
                "paws_drops", "challenge_acks", "unacceptable", "window_probes")
_tcb_counter_values = operator.attrgetter(*TCB_COUNTERS)
_FOLD_BATCH = 256
_ALWAYS = ("conns_opened", "conns_accepted", "conns_closed", "conns_reset", "conns_timeout",
           "conns_refused", "conns_aborted", "rsts_sent")
_CONN_STAT_KEYS = ("retransmits", "fast_retransmits", "rto_timeouts")


def counter_values(conn):
    """The TCB_COUNTERS values of `conn` (a quasi-TCB is not promoted for them)."""
    if conn.__class__ is QuasiTcb:
        return conn.counter_values()
    try:
        return _tcb_counter_values(conn)         # one C call for the 13 attributes
    except AttributeError:                       # a TCB type without some of them
        return tuple(getattr(conn, k, 0) for k in TCB_COUNTERS)


def live_total(tables, name):
    """The sum of counter `name` over the TCBs of `tables` (dicts key -> TCB)."""
    total = 0
    for tbl in tables:
        for conn in tbl.values():
            if conn.__class__ is not QuasiTcb:    # its are 0 (not promoted to read)
                total += getattr(conn, name, 0)
    return total


def complete(counters, closed, live):
    """Fill in `counters` (a dict): the counters every report has (0 if never counted),
    and the TCB retransmission counters summed over closed (`closed`, folded totals)
    and live TCBs (`live`, dicts key -> TCB). -> `counters`."""
    for k in _ALWAYS:
        counters.setdefault(k, 0)
    for k in _CONN_STAT_KEYS:
        counters[k] = closed.get(k, 0) + live_total(live, k)
    return counters


class ClosedTcbStats:
    """Counter totals of removed TCBs, folded in batches."""

    __slots__ = ("totals", "_pending")

    def __init__(self):
        self.totals = collections.Counter()
        self._pending = []

    def add(self, conn):
        """Keep the counters of `conn`, which is being freed (`counter_values`, inline)."""
        if conn.__class__ is QuasiTcb:
            values = conn.counter_values()
        else:
            try:
                values = _tcb_counter_values(conn)
            except AttributeError:
                values = tuple(getattr(conn, k, 0) for k in TCB_COUNTERS)
        pending = self._pending
        pending.append(values)
        if len(pending) >= _FOLD_BATCH:
            self.fold()

    def fold(self):
        """Add the pending counters to `totals` (nonzero totals only) -> `totals`."""
        pending = self._pending
        if pending:
            cs = self.totals
            for k, total in zip(TCB_COUNTERS, map(sum, zip(*pending))):
                if total:
                    cs[k] += total
            pending.clear()
        return self.totals


def snapshot(stack, closed):
    """JSON-able snapshot of `stack` (``HostStack.stats()``); `closed` its ClosedTcbStats."""
    tcp = collections.Counter(closed.fold())
    conns = []
    for (lip, lport, rip, rport), conn in sorted(stack.connections.items()):
        st = dict(conn.stats)
        for k, v in zip(TCB_COUNTERS, counter_values(conn)):
            tcp[k] += v
        conns.append({"local": "%s:%d" % (lip, lport), "remote": "%s:%d" % (rip, rport),
                      "state": states.STATE_NAMES[conn.state], "error": conn.error,
                      "stats": st})
    return {
        "name": stack.name,
        "ip": ip_to_str(stack.ip),
        "mac": mac_to_str(stack.mac),
        "counters": stack.counters,
        "drops": dict(stack.drops),
        "tcp": dict(tcp),
        "listeners": [{"port": l.port, "backlog": l.backlog, "syn_queue": len(l.syn_queue),
                       "accept_queue": len(l.accept_queue)}
                      for l in stack.listeners.values()],
        "connections": conns,
        "arp": {ip: [mac, exp if isinstance(exp, str) else round(exp, 6)]
                for ip, (mac, exp) in stack.arp_table().items()},
    }
