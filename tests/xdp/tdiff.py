"""Teardown helpers for the differential tests: a Pair with teardown tables on both NICs,
handovers, peer segments, timers, and the comparison of the teardown state (engine
counters, entries, the timer wheel, moderation, status)."""

from acceltcp.nic.dataplane import HOST, WIRE
from acceltcp.wire.control import STATE_ESTABLISHED, StatusRequest, Teardown, wrap
from acceltcp.wire.tcp import build_tcp_frame, tcp_options

from .diff import CLI, HOST_MAC, NIC_MAC, PEER_MAC, SRV, Pair, norm

__all__ = ["TdPair", "handover", "peer", "CPORT"]

CPORT = 40000


def handover(payload=b"", *, una=1000, rnxt=5000, window=1000, cport=CPORT, sport=80,
             flags=0x10, src=SRV, dst=CLI, opts=b"", **msg):
    """A 0x090B frame as the host sends it: Teardown header + its TSO segment."""
    msg.setdefault("state", STATE_ESTABLISHED)
    seg = build_tcp_frame(PEER_MAC, HOST_MAC, src, dst, 7, sport, cport, una, rnxt, flags,
                          window, opts, payload)
    return wrap(seg, Teardown(**msg), check=False)


def peer(seq, ack, flags=0x10, *, payload=b"", window=500, ts=None, cport=CPORT, sport=80,
         opts=None, src=CLI, dst=SRV):
    """A segment from the peer on the handed-over flow; ts = (tsval, tsecr) or None."""
    if opts is None:
        opts = tcp_options(timestamps=ts) if ts is not None else b""
    return build_tcp_frame(NIC_MAC, PEER_MAC, src, dst, 3, cport, sport, seq & 0xFFFFFFFF,
                           ack & 0xFFFFFFFF, flags, window, opts, payload)


class TdPair(Pair):
    """Pair with a teardown table of `capacity` on both NICs."""

    def __init__(self, open_xdp, capacity=8, **kw):
        kw.setdefault("teardown_capacity", capacity)
        super().__init__(open_xdp, **kw)
        self.capacity = capacity

    def host(self, frame, now, state=True):
        return self.run(frame, HOST, now, state=state)

    def wire(self, frame, now, state=True, csum_ok=False):
        return self.run(frame, WIRE, now, csum_ok=csum_ok, state=state)

    def timer(self, now, state=True):
        a = norm(self.nic.on_timer(now))
        b = norm(self.xdp.on_timer(now))
        assert b == a, "on_timer(%r) differs" % now
        if state:
            self.check_state()
        return a

    def run_timers(self, until, state=True):
        """on_timer at every deadline up to `until` (the spec's next_deadline)."""
        out = []
        while True:
            d = self.nic.next_deadline()
            assert self.xdp.next_deadline() == d
            if d is None or d > until:
                return out
            out += self.timer(d, state)

    def check_state(self):
        super().check_state()
        n, x = self.nic.teardown, self.xdp.teardown
        if n is None:
            assert x.capacity == 0
            return
        assert x.counters == n.counters
        assert x.ident == n.ident
        spec = {fid: n.entry(fid) for fid in range(n.capacity) if n.entry(fid) is not None}
        assert x.entries() == spec
        assert x.active == n.active
        for fid in range(n.capacity):
            assert x.wheel.deadline_of(fid) == n.wheel.deadline_of(fid), fid
            assert x.lookup(n.entry(fid)["key"]) == fid if fid in spec else True
        assert x.wheel.time == n.wheel.time
        rebuilt = x.rebuilt_wheel(n.wheel.time)             # from the maps alone
        assert [rebuilt.deadline_of(f) for f in range(n.capacity)] == \
            [n.wheel.deadline_of(f) for f in range(n.capacity)]
        assert self.xdp.next_deadline() == self.nic.next_deadline()
        assert x.status() == {"teardown_active": n.active, "teardown_capacity": n.capacity,
                              "teardowns_done": n.counters["done_total"]}

    def status(self, now):
        return self.host(StatusRequest(1).frame(NIC_MAC, HOST_MAC), now)
