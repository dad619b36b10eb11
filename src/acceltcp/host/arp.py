"""Neighbour resolution for one host stack (RFC 826): ``ArpCache``.

Theory of operation
-------------------
``entries`` maps a neighbour's IPv4 address (4 bytes) to an ``ArpEntry`` (MAC, expiry,
static, in use, live); the stack's output path caches the entry on the connection and
checks only ``entry.live`` per frame. ``receive(frame, eth_dst)`` handles an ARP frame
as RFC 826's "Packet Reception" says: an existing entry is updated from any ARP
(merge), the sender is added only when we are the target, a request is answered.
Senders with a multicast MAC or our own address are dropped.

A frame for a next hop without an entry waits (``enqueue``) while a request is retried
every second, three times (RFC 1122 §2.3.2.1); a failed resolution drops what waited
(``drops["arp_unresolved"]``: the TCB's own retransmission recovers). Everything is
bounded: ``PENDING_MAX`` resolutions at once (``arp_pending_full``), ``QUEUE`` frames
per next hop (the oldest go first) and ``QUEUED_MAX`` in all (``arp_queue_overflow``),
``MAX`` entries (``arp_table_full``). An entry expires after ``timeout`` seconds; one
still in use is re-probed by unicast first (Linux's STALE/PROBE, simplified) and removed
if the probe fails. Static entries (``add``) never expire and are never overwritten.

Timers are data: retries and expiries sit in a small heap of ``(deadline, seq, kind,
ip)``, invalidated lazily (an entry or resolution whose deadline moved is skipped);
``next_deadline()`` / ``on_timer(now)`` are driven by the stack's timer loop, and
``on_schedule(deadline)`` tells the stack a deadline was pushed (it wakes its runner if
that is now its earliest).
"""

import collections
import heapq

from ..wire.arp import ARP_REPLY, ARP_REQUEST, ArpPacket, parse_arp
from ..wire.ethernet import BROADCAST_MAC, ETH_HLEN, ETHERTYPE_ARP, ZERO_MAC, ethernet_header
from ..wire.ipv4 import ip_to_str

__all__ = ["ArpCache", "ArpEntry", "ARP_DROP_REASONS", "OUTBOUND_DROP_REASONS"]

#: The drop reasons that count frames the stack failed to SEND (all others count
#: received frames, so frames_in == frames_delivered + inbound drops).
OUTBOUND_DROP_REASONS = (
    "arp_unresolved",         # outbound frame dropped: next hop did not answer ARP
    "arp_queue_overflow",     # outbound frame dropped: too many frames waiting for ARP
    "arp_pending_full",       # outbound frame dropped: too many resolutions in progress
)
#: The drop reasons an ArpCache counts (see host.stack.HOST_DROP_REASONS; it also
#: counts ``not_for_us``).
ARP_DROP_REASONS = (
    "arp_not_for_us",         # ARP whose target is not our address
    "arp_bad_sender",         # ARP with a multicast sender MAC or our own IP as sender
    "arp_table_full",         # no room to learn a new neighbour
) + OUTBOUND_DROP_REASONS

RETRY = 1.0         # RFC 1122 §2.3.2.1: at most one request per second per destination
TRIES = 3
QUEUE = 16          # frames kept per unresolved next hop (oldest dropped first)
QUEUED_MAX = 1024   # frames waiting for ARP, all next hops together (Linux: unres_qlen
                    # per neighbour, the table bounded by gc_thresh3)
PENDING_MAX = 256   # resolutions in progress at once; beyond, the frame is dropped
MAX = 4096          # neighbour entries
_RETRY_KIND = 0
_EXPIRE_KIND = 1
_ZERO_IP = b"\0\0\0\0"


class ArpEntry:
    __slots__ = ("ip", "mac", "expires", "static", "used", "live", "sched")

    def __init__(self, ip, mac, expires, static):
        self.ip = ip
        self.mac = mac
        self.expires = expires
        self.static = static
        self.used = False
        self.live = True
        self.sched = None      # expiry deadline currently in the heap


class _Pending:
    __slots__ = ("ip", "frames", "tries", "deadline")

    def __init__(self, ip):
        self.ip = ip
        self.frames = collections.deque()
        self.tries = 0
        self.deadline = None


class ArpCache:
    """The neighbour table of a stack with address `ip` and `mac` (module docstring).
    emit(frame): send a complete frame; drops / counters: the stack's Counters;
    on_schedule(deadline): called after a timer is pushed."""

    def __init__(self, mac, ip, clock, timeout, emit, drops, counters, on_schedule):
        self.mac = mac
        self.ip = ip
        self.clock = clock
        self.timeout = timeout
        self.entries = {}          # ip -> ArpEntry
        self.pending = {}          # ip -> _Pending
        self.heap = []             # (deadline, seq, kind, ip)
        self.queued = 0            # frames in all pending queues (<= QUEUED_MAX)
        self._seq = 0
        self._emit = emit
        self.drops = drops
        self.counters = counters
        self._on_schedule = on_schedule

    # -- frames
    def receive(self, frame, eth_dst):
        """An ARP frame -> True if it was for us (delivered), False if dropped."""
        drops = self.drops
        if eth_dst != self.mac and eth_dst != BROADCAST_MAC:
            drops["not_for_us"] += 1
            return False
        p = parse_arp(memoryview(frame)[ETH_HLEN:])
        sip = p.sender_ip
        smac = p.sender_mac
        if smac[0] & 1 or sip == self.ip:
            drops["arp_bad_sender"] += 1
            return False
        now = self.clock()
        # RFC 826 "Packet Reception": update an existing entry from any ARP (merge_flag)...
        merged = False
        if sip != _ZERO_IP:
            e = self.entries.get(sip)
            if e is not None:
                merged = True
                if not e.static:
                    self._learn(sip, smac, now)
        if p.target_ip != self.ip:
            drops["arp_not_for_us"] += 1
            return False
        self.counters["arp_in"] += 1
        # ... and add the sender only when we are the target.
        if not merged and sip != _ZERO_IP:
            if len(self.entries) >= MAX:
                drops["arp_table_full"] += 1
            else:
                self._learn(sip, smac, now)
        if p.op == ARP_REQUEST:
            reply = ArpPacket(ARP_REPLY, self.mac, self.ip, smac, sip).build()
            self.counters["arp_replies_sent"] += 1
            self._emit(ethernet_header(smac, self.mac, ETHERTYPE_ARP) + reply)
        return True

    def enqueue(self, ip, frame):
        """`frame` (its destination MAC still to fill in) waits for `ip` to resolve."""
        # Bounded: PENDING_MAX resolutions, QUEUE frames each, QUEUED_MAX in all. A
        # dropped frame is the TCB's to retransmit.
        p = self.pending.get(ip)
        if p is None:
            if len(self.pending) >= PENDING_MAX:
                self.drops["arp_pending_full"] += 1
                return
            p = self.pending[ip] = _Pending(ip)
            self._request(p, self.clock())
        q = p.frames
        if len(q) >= QUEUE:
            q.popleft()
            self.queued -= 1
            self.drops["arp_queue_overflow"] += 1
        elif self.queued >= QUEUED_MAX:
            self.drops["arp_queue_overflow"] += 1
            return
        q.append(frame)
        self.queued += 1

    def _learn(self, ip, mac, now):
        e = self.entries.get(ip)
        if e is None:
            e = self.entries[ip] = ArpEntry(ip, mac, now + self.timeout, False)
        elif e.static:
            return
        else:
            e.mac = mac
            e.expires = now + self.timeout
        if e.sched is None:
            self._schedule(e.expires, _EXPIRE_KIND, ip)
            e.sched = e.expires
        self._flush(ip, mac)

    def _flush(self, ip, mac):
        """`ip` resolved: send the frames waiting for it."""
        p = self.pending.pop(ip, None)
        if p is not None:
            self.queued -= len(p.frames)
            for frame in p.frames:
                self._emit(mac + frame[6:])

    def _request(self, p, now):
        p.tries += 1
        p.deadline = now + RETRY
        self._schedule(p.deadline, _RETRY_KIND, p.ip)
        e = self.entries.get(p.ip)
        dst = e.mac if e is not None else BROADCAST_MAC    # refresh probes are unicast
        req = ArpPacket(ARP_REQUEST, self.mac, self.ip, ZERO_MAC, p.ip).build()
        self.counters["arp_requests_sent"] += 1
        self._emit(ethernet_header(dst, self.mac, ETHERTYPE_ARP) + req)

    # -- timers
    def _schedule(self, deadline, kind, ip):
        self._seq += 1
        heapq.heappush(self.heap, (deadline, self._seq, kind, ip))
        self._on_schedule(deadline)

    def next_deadline(self):
        h = self.heap
        return h[0][0] if h else None

    def on_timer(self, now):
        h = self.heap
        while h and h[0][0] <= now:
            d, _, kind, ip = heapq.heappop(h)
            if kind == _RETRY_KIND:
                p = self.pending.get(ip)
                if p is None or p.deadline != d:
                    continue
                if p.tries < TRIES:
                    self._request(p, now)
                    continue
                del self.pending[ip]                 # give up
                if p.frames:
                    self.drops["arp_unresolved"] += len(p.frames)
                    self.queued -= len(p.frames)
                e = self.entries.get(ip)
                if e is not None and not e.static:   # failed refresh probe
                    del self.entries[ip]
                    e.live = False
                self.counters["arp_failures"] += 1
            else:
                e = self.entries.get(ip)
                if e is None or e.static or e.sched != d:
                    continue
                e.sched = None
                if e.expires > d:                    # refreshed since: re-arm lazily
                    e.sched = e.expires
                    self._schedule(e.expires, _EXPIRE_KIND, ip)
                elif e.used and ip not in self.pending:
                    e.used = False                   # in use: keep it, re-probe (unicast)
                    p = self.pending[ip] = _Pending(ip)
                    self._request(p, now)
                elif ip not in self.pending:
                    del self.entries[ip]
                    e.live = False

    # -- the table
    def add(self, ip, mac):
        """A static entry (never expires, never overwritten by ARP)."""
        old = self.entries.get(ip)
        if old is not None:
            old.live = False
        e = self.entries[ip] = ArpEntry(ip, mac, None, True)
        self._flush(ip, e.mac)

    def remove(self, ip):
        e = self.entries.pop(ip, None)
        if e is not None:
            e.live = False

    def table(self):
        """{ip str: (mac bytes, 'static' | seconds to expiry)}."""
        now = self.clock()
        return {ip_to_str(ip): (e.mac, "static" if e.static else e.expires - now)
                for ip, e in self.entries.items()}
